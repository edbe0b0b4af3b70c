//! The endpoint: one TCP listener and one thread per address, shared by
//! every node of the process configured with it, answering `GET /metrics`
//! (HTTP/1.1, one request per connection, bounded reads and timeouts).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::{expo, Slot};

/// The endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bind failed.
    #[error("cannot serve metrics on {addr}: {source} — {fix}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
        /// What to do.
        fix: &'static str,
    },
}

/// The nodes one endpoint serves.
#[derive(Debug)]
pub(crate) struct Board {
    asked: SocketAddr,
    local: SocketAddr,
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// Every endpoint this process opened (they live as long as the process).
static BOARDS: Mutex<Vec<Arc<Board>>> = Mutex::new(Vec::new());

/// This process already serves an endpoint on `addr`.
pub fn serves(addr: SocketAddr) -> bool {
    addr.port() != 0
        && BOARDS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|b| b.asked == addr || b.local == addr)
}

/// The endpoint for `addr`: the one already open, or a new one.
pub(crate) fn board(addr: SocketAddr) -> Result<Arc<Board>, ServeError> {
    let mut boards = BOARDS.lock().unwrap_or_else(PoisonError::into_inner);
    if addr.port() != 0 {
        if let Some(b) = boards.iter().find(|b| b.asked == addr || b.local == addr) {
            return Ok(b.clone());
        }
    }
    let listener = TcpListener::bind(addr).map_err(|source| ServeError::Bind {
        addr,
        fix: match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process (maybe an earlier run) holds the port; stop it or choose another [metrics] listen"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "the address is not on this host; use one of its own addresses in [metrics] listen (127.0.0.1 keeps it local)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; choose a port above 1024 in [metrics] listen"
            }
            _ => "check [metrics] listen in the node's config",
        },
        source,
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    let b = Arc::new(Board {
        asked: addr,
        local,
        slots: Mutex::new(Vec::new()),
    });
    let served = b.clone();
    std::thread::Builder::new()
        .name(format!("metrics {local}"))
        .spawn(move || accept_loop(listener, &served))
        .map_err(|source| ServeError::Bind {
            addr,
            source,
            fix: "the process cannot start a thread; check its limits (ulimit -u)",
        })?;
    boards.push(b.clone());
    Ok(b)
}

impl Board {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Add a node; one with the same name (an earlier incarnation) is replaced.
    pub(crate) fn attach(&self, slot: Arc<Slot>) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        s.retain(|x| x.node != slot.node);
        s.push(slot);
    }

    /// Remove exactly this node (not a newer one with its name).
    pub(crate) fn detach(&self, slot: &Arc<Slot>) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|x| !Arc::ptr_eq(x, slot));
    }

    /// The text of `GET /metrics`: copies of the snapshots, encoded outside
    /// every node's lock.
    pub(crate) fn render(&self) -> String {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let nodes: Vec<expo::NodeView> = slots
            .iter()
            .filter_map(|s| {
                let p = s
                    .data
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()?;
                Some(expo::NodeView {
                    node: s.node.clone(),
                    role: s.role,
                    published: p,
                })
            })
            .collect();
        expo::render(nodes, jasper_io::host_now_ns())
    }
}

fn accept_loop(listener: TcpListener, board: &Board) {
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                let _ = answer(s, board);
            }
            // Out of descriptors or similar: do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Largest request read (request line and headers).
const MAX_REQUEST: usize = 8192;

fn answer(mut s: TcpStream, board: &Board) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > MAX_REQUEST {
            respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )?;
            // Read what the client still sends (bounded) so closing does
            // not reset the connection before it reads the answer.
            s.shutdown(std::net::Shutdown::Write)?;
            let _ = std::io::copy(&mut (&mut s).take(1 << 20), &mut std::io::sink());
            return Ok(());
        }
    }
    let line = String::from_utf8_lossy(req.split(|b| *b == b'\n').next().unwrap_or(&[]));
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => respond(&mut s, "200 OK", expo::CONTENT_TYPE, &board.render()),
        ("GET", "/") => respond(
            &mut s,
            "200 OK",
            "text/plain; charset=utf-8",
            "Jasper-rs node: counters at /metrics (Prometheus text format)\n",
        ),
        ("GET", _) => respond(&mut s, "404 Not Found", "text/plain", "try /metrics\n"),
        _ => respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n"),
    }
}

fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_metrics_and_refuses_the_rest() {
        let b = board("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = b.local_addr();
        let ok = get(a, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(get(a, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(a, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(get(a, &huge).starts_with("HTTP/1.1 431"));
        // A client that connects and says nothing does not block the next
        // one for longer than the read timeout.
        let _idle = TcpStream::connect(a).unwrap();
        assert!(get(a, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }
}
