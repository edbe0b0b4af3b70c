//! A publisher joins and leaves a running tree: the operator adds a
//! `[[publisher]]` to the inventory, re-plans with `jasper plan --keep-keys`
//! and reloads the running proxies and receivers (SIGHUP / reload); later
//! removes it the same way. The primary publisher's stream loses and
//! duplicates nothing throughout, and the joining stream arrives whole.
//!
//! Proxies and publishers are the real `jasper node` / `jasper publish`
//! processes; the receivers run in this process (so every hand-over is
//! counted per stream and sequence) and reload as `jasper-receiver` does.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jasper_core::config::NodeRole;

fn inventory(base: u16, with_second: bool) -> String {
    let mut s = format!("[sender]\nname = \"exchange\"\naddr = \"127.0.0.1:{base}\"\n");
    for i in 0..4 {
        s += &format!(
            "[[proxy]]\nname = \"proxy{i}\"\naddr = \"127.0.0.1:{}\"\n",
            base + 1 + i
        );
    }
    for i in 0..4 {
        s += &format!(
            "[[receiver]]\nname = \"mp{i}\"\naddr = \"127.0.0.1:{}\"\n",
            base + 10 + i
        );
    }
    if with_second {
        s += &format!(
            "[[publisher]]\nname = \"shard2\"\naddr = \"127.0.0.1:{}\"\nstream = 2\n",
            base + 20
        );
    }
    s
}

fn plan(dir: &Path, base: u16, with_second: bool, keep: bool) {
    let inv = dir.join(format!("inventory-{with_second}.toml"));
    std::fs::write(&inv, inventory(base, with_second)).unwrap();
    let mut c = common::jasper();
    c.args([
        "plan", "--depth", "2", "--fanout", "2", "--hedge", "1", "--roots", "2",
    ])
    .arg("--inventory")
    .arg(&inv)
    .arg("--out")
    .arg(dir.join("plan"));
    if keep {
        c.arg("--keep-keys");
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hand-overs per (MP, stream, sequence).
type Handed = HashMap<(usize, u32, u64), u32>;

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hup(c: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &c.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "SIGHUP to {}", c.id());
}

fn publish(dir: &Path, name: &str, count: u64, rate: u64) -> Child {
    common::jasper()
        .arg("publish")
        .arg("--config")
        .arg(dir.join("plan").join(format!("{name}.toml")))
        .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_publisher_joins_and_leaves_without_the_others_losing_or_duplicating() {
    let dir = common::tmp("publisher-join");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = 41_000 + (std::process::id() % 500) as u16 * 40;
    plan(&dir, base, false, false);
    let cfg_path = |name: &str| dir.join("plan").join(format!("{name}.toml"));

    // Proxies: real processes (SIGHUP re-reads their config).
    let mut procs = Killed(Vec::new());
    for i in 0..4 {
        procs.0.push(
            common::jasper()
                .arg("node")
                .arg("--config")
                .arg(cfg_path(&format!("proxy{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let proxies: Vec<u32> = procs.0.iter().map(|c| c.id()).collect();

    // Receivers: here, counting every hand-over by (MP, stream, sequence).
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Handed>> = Arc::default();
    let reloads = Arc::new(Mutex::new(Vec::<String>::new()));
    let receivers = {
        let (stop, reload, got, reloads) =
            (stop.clone(), reload.clone(), got.clone(), reloads.clone());
        let paths: Vec<_> = (0..4).map(|i| cfg_path(&format!("mp{i}"))).collect();
        std::thread::spawn(move || {
            let mut nodes: Vec<_> = paths
                .iter()
                .map(|p| {
                    let c = jasper_io::node::load_config(p, NodeRole::Receiver).unwrap();
                    jasper_receiver::ReceiverNode::open(&c, None).unwrap()
                })
                .collect();
            while jasper_receiver::run_until(
                &mut nodes,
                &stop,
                &reload,
                jasper_io::runtime::ParentWatch::new(false),
                |i, rel, _| {
                    *got.lock()
                        .unwrap()
                        .entry((i, rel.stream, rel.seq))
                        .or_default() += 1;
                },
            ) {
                reload.store(false, Ordering::SeqCst);
                for (n, p) in nodes.iter_mut().zip(&paths) {
                    let r = jasper_io::node::load_config(p, NodeRole::Receiver)
                        .and_then(|c| n.reload(&c));
                    reloads.lock().unwrap().push(format!("{}: {r:?}", n.name()));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let reload_all = |procs: &Killed| {
        for c in &procs.0 {
            if proxies.contains(&c.id()) {
                hup(c);
            }
        }
        reload.store(true, Ordering::SeqCst);
        // Every node has re-read its config before anyone relies on it.
        let t = Instant::now();
        while reload.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // The primary publisher: 10,000 messages at 2000/s (5 s).
    let start = Instant::now();
    let mut primary = publish(&dir, "exchange", 10_000, 2_000);

    // At 1 s shard2 joins: re-plan with it, reload, start it.
    std::thread::sleep(Duration::from_millis(1_000));
    plan(&dir, base, true, true);
    reload_all(&procs);
    let mut shard2 = publish(&dir, "shard2", 1_500, 1_000);
    let st = shard2.wait().unwrap();
    assert!(st.success(), "shard2 publish failed");

    // It has left: re-plan without it and reload, while the primary runs on.
    std::thread::sleep(Duration::from_millis(300));
    plan(&dir, base, false, true);
    reload_all(&procs);
    assert!(
        start.elapsed() < Duration::from_millis(4_500),
        "the leave must happen while the primary still publishes (machine too slow?)"
    );

    let st = primary.wait().unwrap();
    assert!(st.success(), "primary publish failed");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::SeqCst);
    receivers.join().unwrap();
    drop(procs);

    let reloads = reloads.lock().unwrap().clone();
    assert_eq!(reloads.len(), 8, "{reloads:?}");
    assert!(reloads.iter().all(|r| r.ends_with("Ok(())")), "{reloads:?}");
    let got = got.lock().unwrap();
    for mp in 0..4 {
        for (stream, count) in [(1u32, 10_000u64), (2, 1_500)] {
            let mut missing = Vec::new();
            for seq in 0..count {
                match got.get(&(mp, stream, seq)).copied().unwrap_or(0) {
                    1 => {}
                    0 => missing.push(seq),
                    n => panic!("mp{mp} stream {stream} seq {seq} handed over {n} times"),
                }
            }
            assert!(
                missing.is_empty(),
                "mp{mp} stream {stream} missed {} messages, first {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
        assert_eq!(
            got.keys().filter(|k| k.0 == mp).count() as u64,
            11_500,
            "mp{mp}: nothing else handed over"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
