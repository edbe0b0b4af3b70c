//! End to end: `jasper local --metrics` serves every node's live counters
//! while the feed runs; a plain HTTP GET reads them, and `jasper status
//! --once --json` shows the tree up, then down once the run is over.
//! Nothing here is timed: every wait polls until the condition holds, with
//! a generous limit well inside the run's 60 s feed, which the test
//! interrupts as soon as it has seen what it needs.

mod common;
use common::{jasper, tmp};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `curl http://addr/metrics`, by hand.
fn get_metrics(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Ok(body.to_string())
}

/// The text format, parsed independently of the crate that writes it:
/// `(name, labels, value)` per sample line.
fn parse(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), HashMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        out.push((name, labels, value));
    }
    out
}

fn value(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    node: &str,
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.get("node").map(String::as_str) == Some(node))
        .map(|(_, _, v)| *v)
}

/// Poll `f` until it returns `Some`, for at most `limit`.
fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_json(args: &[&str]) -> serde_json::Value {
    let out = jasper()
        .args(["status", "--once", "--json", "--interval", "0.3"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a node down is never an error exit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

#[test]
fn local_run_serves_live_counters_and_status_watches_them() {
    let mut child = jasper()
        .args([
            "local",
            "--receivers",
            "4",
            "--receivers-per-process",
            "2",
            "--rate",
            "1000",
            "--duration",
            "60",
            "--delay-model",
            "none",
            "--keep",
            "--metrics",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // The addresses and the run directory, as printed.
    let mut endpoints: Vec<(String, SocketAddr)> = Vec::new();
    let mut dir = None;
    while dir.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("jasper local printed its metrics addresses");
        if let Some(list) = line.strip_prefix("metrics (GET /metrics, Prometheus text): ") {
            for item in list.split(", ") {
                let (who, addr) = item.rsplit_once(' ').unwrap();
                endpoints.push((who.to_string(), addr.parse().unwrap()));
            }
        }
        if let Some(d) = line.strip_prefix("watch it: jasper status --plan ") {
            dir = Some(d.to_string());
        }
    }
    let dir = dir.unwrap();
    let find = |prefix: &str| -> Vec<SocketAddr> {
        endpoints
            .iter()
            .filter(|(w, _)| w.starts_with(prefix))
            .map(|(_, a)| *a)
            .collect()
    };
    assert_eq!(find("receivers").len(), 2, "{endpoints:?}");
    assert_eq!(find("sender").len(), 1);

    // Counters move while the feed runs: every MP released something, and
    // more at a later scrape.
    let receivers = find("receivers");
    let released = |mp: &str, addr: SocketAddr| {
        let text = get_metrics(addr).ok()?;
        value(&parse(&text), "jasper_receiver_released_total", mp)
    };
    let first: Vec<f64> = ["mp0", "mp1", "mp2", "mp3"]
        .iter()
        .enumerate()
        .map(|(i, mp)| {
            eventually(Duration::from_secs(60), &format!("{mp} releasing"), || {
                released(mp, receivers[i / 2]).filter(|v| *v > 0.0)
            })
        })
        .collect();
    eventually(Duration::from_secs(60), "mp0's counter moving", || {
        released("mp0", receivers[0]).filter(|v| *v > first[0])
    });
    let text = get_metrics(receivers[1]).unwrap();
    let samples = parse(&text);
    for mp in ["mp2", "mp3"] {
        for name in [
            "jasper_receiver_late_total",
            "jasper_receiver_gaps_detected_total",
            "jasper_receiver_held_bytes",
            "jasper_receiver_handover_seconds_count",
            "jasper_clock_error_bound_seconds",
            "jasper_rx_packets_total",
            "jasper_snapshot_age_seconds",
        ] {
            assert!(value(&samples, name, mp).is_some(), "{name} for {mp}");
        }
        assert!(samples.iter().any(|(n, l, v)| n == "jasper_clock_status"
            && l.get("node").map(String::as_str) == Some(mp)
            && l.get("status").map(String::as_str) == Some("synchronized")
            && *v == 1.0));
        assert!(samples
            .iter()
            .any(|(n, l, _)| n == "jasper_upstream_state" && l.contains_key("upstream")));
    }
    eprintln!(
        "receivers1 endpoint: {} bytes, {} samples",
        text.len(),
        samples.len()
    );
    let sender = parse(&get_metrics(find("sender")[0]).unwrap());
    assert!(value(&sender, "jasper_sender_messages_total", "sender") > Some(0.0));
    let proxy = parse(&get_metrics(find("proxy0")[0]).unwrap());
    assert!(value(&proxy, "jasper_proxy_forwarded_total", "proxy0") > Some(0.0));

    // `jasper status` sees the whole tree up; an address nobody serves is
    // one more row, down.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let v = status_json(&["--plan", &dir, &closed.to_string()]);
    let nodes = v["nodes"].as_array().unwrap();
    let proxies = endpoints
        .iter()
        .filter(|(w, _)| w.starts_with("proxy"))
        .count();
    assert_eq!(nodes.len(), 1 + proxies + 4 + 1, "{v:#}");
    assert_eq!(
        v["nodes_down"],
        serde_json::json!([format!("endpoint {closed}")]),
        "{v:#}"
    );
    for n in nodes.iter().filter(|n| n["role"] == "receiver") {
        assert_eq!(n["up"], true, "{n:#}");
        assert!(n["released_total"].as_u64() > Some(0), "{n:#}");
        assert_eq!(n["clock_status"], "synchronized");
        assert!(n["parent"].as_str().is_some_and(|p| p.starts_with("proxy")));
    }
    let sender = nodes.iter().find(|n| n["role"] == "sender").unwrap();
    assert!(sender["messages_per_s"].as_f64() > Some(0.0), "{sender:#}");

    // Interrupt the feed: the run ends with its report...
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("interrupted"), "{out}");
    // ...and every node is down, which is still not an error.
    let v = status_json(&["--plan", &dir]);
    assert_eq!(v["nodes_up"], 0, "{v:#}");
    assert_eq!(v["nodes_total"], 1 + proxies + 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_names_metrics_endpoints_and_status_shows_a_stopped_tree_down() {
    let dir = tmp("plan-metrics");
    let inv = tmp("inv-metrics.toml");
    // Two receivers share a host: they get consecutive ports.
    let text = "[sender]\nname = \"pub\"\naddr = \"127.0.0.1:7000\"\n\
                [[proxy]]\nname = \"p0\"\naddr = \"127.0.0.2:7000\"\n\
                [[receiver]]\nname = \"mp0\"\naddr = \"127.0.0.3:7000\"\n\
                [[receiver]]\nname = \"mp1\"\naddr = \"127.0.0.3:7001\"\n";
    std::fs::write(&inv, text).unwrap();
    let plan = |extra: &[&str]| {
        let _ = std::fs::remove_dir_all(&dir);
        let out = jasper()
            .args(["plan", "--roots", "1", "--depth", "1", "--inventory"])
            .arg(&inv)
            .arg("--out")
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    plan(&["--metrics-port", "19100"]);
    let cfg = |n: &str| std::fs::read_to_string(dir.join(format!("{n}.toml"))).unwrap();
    assert!(
        cfg("p0").contains("[metrics]\nlisten = \"127.0.0.2:19100\""),
        "{}",
        cfg("p0")
    );
    assert!(cfg("mp0").contains("listen = \"127.0.0.3:19100\""));
    assert!(cfg("mp1").contains("listen = \"127.0.0.3:19101\""));
    // Nothing runs: every node is down, and that is a view, not an error.
    let v = status_json(&["--plan", dir.to_str().unwrap(), "--timeout-ms", "300"]);
    assert_eq!(
        (v["nodes_total"].as_u64(), v["nodes_up"].as_u64()),
        (Some(4), Some(0)),
        "{v:#}"
    );
    assert_eq!(v["nodes"][0]["name"], "pub");
    assert_eq!(v["nodes"][1]["parent"], "pub");
    assert!(v["nodes"][3]["error"].as_str().is_some(), "{v:#}");
    // Without endpoints in the configs, the error says how to get them.
    plan(&[]);
    let out = jasper()
        .args(["status", "--once", "--plan"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-port"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&inv);
}
