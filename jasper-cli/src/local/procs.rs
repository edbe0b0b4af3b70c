//! Child processes of a local run: free ports, spawning proxies and
//! receiver groups, stopping and waiting for them, and collecting what they
//! left (delivery records, counters).

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use jasper_core::metrics::Collector;
use serde_json::Value;

use super::LocalArgs;
use crate::chaos::Happened;

pub(super) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot bind loopback UDP sockets")?;
    Ok(socks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect())
}

pub(super) fn ports(args: &LocalArgs, n: usize) -> anyhow::Result<Vec<u16>> {
    if args.base_port == 0 {
        return free_ports(n);
    }
    let mut out = Vec::new();
    for i in 0..n {
        let p = u16::try_from(i)
            .ok()
            .and_then(|i| args.base_port.checked_add(i))
            .context("--base-port too high for this many nodes")?;
        if let Err(e) = UdpSocket::bind(("127.0.0.1", p)) {
            bail!("UDP port {p} on 127.0.0.1 is busy ({e}); choose another --base-port, or omit it to pick free ports");
        }
        out.push(p);
    }
    Ok(out)
}

pub(super) struct Managed {
    pub(super) name: String,
    pub(super) child: Child,
    pub(super) stderr: Arc<Mutex<String>>,
}

pub(super) fn spawn(
    exe: &Path,
    args: &[String],
    name: &str,
    ready: &mpsc::Sender<(String, usize)>,
    expect: usize,
) -> anyhow::Result<Managed> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: a Ctrl-C in the terminal reaches only the
        // orchestrator, which then stops the children in order.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let tx = ready.clone();
    let n = name.to_string();
    std::thread::spawn(move || {
        let mut seen = 0;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ready") {
                seen += 1;
                if seen == expect {
                    let _ = tx.send((n.clone(), seen));
                }
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err = child.stderr.take().context("child stderr")?;
    let buf = stderr.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        if let Ok(mut b) = buf.lock() {
            *b = s;
        }
    });
    Ok(Managed {
        name: name.to_string(),
        child,
        stderr,
    })
}

pub(super) fn terminate(m: &mut Managed) {
    if let Ok(None) = m.child.try_wait() {
        let _ = Command::new("kill")
            .args(["-TERM", &m.child.id().to_string()])
            .status();
    }
}

pub(super) fn wait_all(children: &mut [Managed], timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if children
            .iter_mut()
            .all(|c| matches!(c.child.try_wait(), Ok(Some(_))))
        {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the children left: the receiver processes' delivery records merged
/// into one collector (a process killed before its first snapshot adds
/// nothing; one that died is noted in `happened`), and every node's JSON
/// counters line.
pub(super) fn collect(
    results: &[PathBuf],
    receivers: &mut [Managed],
    proxies: &[Managed],
    happened: &mut Vec<Happened>,
    seconds: f64,
    mps: usize,
    published: u64,
) -> anyhow::Result<(Collector, Vec<Value>)> {
    let mut collector = Collector::new(mps, published as usize);
    for (r, m) in results.iter().zip(receivers.iter_mut()) {
        let bytes = match std::fs::read(r) {
            Ok(b) => b,
            // A receiver process that died keeps what its last snapshot held;
            // without one its MPs' deliveries all count as missing.
            Err(_) if happened.iter().any(|h| h.what.starts_with(&m.name)) => {
                eprintln!("{}: no results (killed before its first snapshot)", m.name);
                continue;
            }
            Err(e) => {
                let err = m.stderr.lock().map(|s| s.clone()).unwrap_or_default();
                if matches!(m.child.try_wait(), Ok(Some(st)) if !st.success())
                    || err.contains("panicked")
                {
                    happened.push(Happened {
                        at_s: seconds,
                        what: format!("{} died: {}", m.name, err.trim()),
                    });
                    continue;
                }
                bail!(
                    "{} wrote no results ({}): {e}: {}",
                    m.name,
                    r.display(),
                    err.trim()
                );
            }
        };
        let c = Collector::from_bytes(&bytes)
            .with_context(|| format!("malformed results in {}", r.display()))?;
        collector.merge(&c);
    }
    let mut nodes = Vec::new();
    for m in proxies.iter().chain(receivers.iter()) {
        let text = m.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                nodes.push(v);
            } else if !line.trim().is_empty() {
                eprintln!("{}: {line}", m.name);
            }
        }
    }
    Ok((collector, nodes))
}
