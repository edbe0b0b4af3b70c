//! The reading side: fetch an endpoint (`GET /metrics`, HTTP/1.1) and parse
//! the Prometheus text format into samples.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why a scrape failed (the node is then shown down).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, sending or reading failed (refused, timed out, reset).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The endpoint answered something other than 200 and a body.
    #[error("bad answer: {0}")]
    Http(String),
    /// The body is not the text format.
    #[error("{0}")]
    Parse(#[from] ParseError),
}

/// Largest body read (a receiver process with 64 MPs answers ~0.5 MB).
const MAX_BODY: u64 = 64 << 20;

/// `GET /metrics` from `addr`; the whole exchange within `timeout`.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<String, ScrapeError> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    let left = |start: Instant| {
        timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    s.set_write_timeout(Some(left(start)?))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut body_len: Option<(usize, usize)> = None; // (header end, content length)
    loop {
        s.set_read_timeout(Some(left(start)?))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() as u64 > MAX_BODY {
            return Err(ScrapeError::Http(format!(
                "answer larger than {MAX_BODY} bytes"
            )));
        }
        if body_len.is_none() {
            body_len =
                header_end(&raw).map(|h| (h, content_length(&raw[..h]).unwrap_or(usize::MAX)));
        }
        if let Some((h, len)) = body_len {
            if raw.len() >= h.saturating_add(len) {
                break;
            }
        }
    }
    let h = header_end(&raw).ok_or_else(|| ScrapeError::Http("no HTTP header".into()))?;
    let head = String::from_utf8_lossy(&raw[..h]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Http(status.trim().to_string()));
    }
    let end = match content_length(&raw[..h]) {
        Some(len) => (h + len).min(raw.len()),
        None => raw.len(),
    };
    String::from_utf8(raw[h..end].to_vec())
        .map_err(|_| ScrapeError::Http("body is not UTF-8".into()))
}

fn header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_total`, `_bucket`, ... as written).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not the text format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Parse the text format (comments and `# HELP`/`# TYPE` lines skipped;
/// timestamps ignored).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |problem: &str| ParseError {
            line: i + 1,
            problem: problem.to_string(),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                rest = rest.trim_start_matches([' ', ',']);
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or_else(|| err("label without '='"))?;
                let key = rest[..eq].trim().to_string();
                rest = rest[eq + 1..]
                    .trim_start()
                    .strip_prefix('"')
                    .ok_or_else(|| err("label value not quoted"))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(err("unterminated label value")),
                        },
                        Some((j, '"')) => break j,
                        Some((_, c)) => value.push(c),
                        None => return Err(err("unterminated label value")),
                    }
                };
                labels.push((key, value));
                rest = &rest[end + 1..];
            }
        }
        let v = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| err("no value"))?;
        let value = match v {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => v.parse().map_err(|_| err("value is not a number"))?,
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let t = "# HELP a_total x\n# TYPE a_total counter\na_total{node=\"mp0\",role=\"receiver\"} 12\n\
                 b 1.5e-3 1700000000\nc_bucket{le=\"+Inf\",v=\"q\\\"u\\\\o\\nte\"} +Inf\nd NaN\n";
        let s = parse(t).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].label("node"), Some("mp0"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].value, 1.5e-3);
        assert_eq!(s[2].label("v"), Some("q\"u\\o\nte"));
        assert!(s[2].value.is_infinite() && s[3].value.is_nan());
        assert_eq!(parse("x{a=b} 1").unwrap_err().line, 1);
        assert!(parse("ok 1\nbad{a=\"1\"}\n").unwrap_err().line == 2);
    }

    #[test]
    fn a_closed_port_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            fetch(a, Duration::from_millis(500)),
            Err(ScrapeError::Io(_))
        ));
    }
}
