//! Interop across processes and network namespaces: a DPDK proxy
//! (net_af_packet on a veth, its own namespace) receives from a kernel-UDP
//! publisher in another namespace and forwards to kernel-UDP receivers in a
//! third, which must accept every payload through the ordinary kernel stack
//! (so MACs from ARP, IPv4 and UDP checksums must be right).
//!
//! Needs root and iproute2 (CI runs as root); built with `--features dpdk`.
#![cfg(feature = "dpdk")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jasper_core::config::{BackendKind, DpdkSection, NodeRole};
use jasper_core::metrics::Collector;
use jasper_core::plan::{HostSpec, Inventory, Plan, ReceiverSpec, TreeSpec};
use jasper_core::plan_configs::{node_configs, ConfigOptions};

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_ready(child: &mut Child, lines: usize) {
    let out = child.stdout.take().unwrap();
    let mut r = BufReader::new(out);
    for _ in 0..lines {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(l.starts_with("ready"), "unexpected start-up output {l:?}");
    }
}

/// Run a tree whose proxies all run on DPDK (one namespace and process
/// each), with a kernel publisher and kernel receivers; check every payload
/// arrived exactly once.
fn run_tree(tag: &str, spec: TreeSpec, proxies: usize, mps: usize) {
    let id = std::process::id() % 10_000;
    let ns = |x: &str| format!("j{tag}{x}{id}");
    let (h, s, r) = (ns("h"), ns("s"), ns("r"));
    let pns: Vec<String> = (0..proxies).map(|i| ns(&format!("p{i}"))).collect();
    let mut all = vec![h.clone(), s.clone(), r.clone()];
    all.extend(pns.iter().cloned());
    let _ns = Namespaces(all.clone());
    for n in &all {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    ip(&["-n", &h, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &h, "link", "set", "br0", "up"]);
    let mut links: Vec<(String, String)> = vec![
        (s.clone(), format!("v{tag}s{id}")),
        (r.clone(), format!("v{tag}r{id}")),
    ];
    for (i, n) in pns.iter().enumerate() {
        links.push((n.clone(), format!("v{tag}p{i}{id}")));
    }
    for (n, a) in &links {
        let b = format!("{a}h");
        ip(&["link", "add", a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", a, "netns", n]);
        ip(&["link", "set", &b, "netns", &h]);
        ip(&["-n", &h, "link", "set", &b, "master", "br0"]);
        ip(&["-n", &h, "link", "set", &b, "up"]);
        ip(&["-n", n, "link", "set", a, "up"]);
    }
    ip(&["-n", &s, "addr", "add", "10.77.0.2/24", "dev", &links[0].1]);
    ip(&["-n", &r, "addr", "add", "10.77.0.3/24", "dev", &links[1].1]);

    let inv = Inventory {
        sender: HostSpec {
            name: "pub".into(),
            addr: "10.77.0.2:7000".parse().unwrap(),
        },
        proxies: (0..proxies)
            .map(|i| HostSpec {
                name: format!("dpdk{i}"),
                addr: format!("10.77.0.{}:7000", 10 + i).parse().unwrap(),
            })
            .collect(),
        receivers: (0..mps)
            .map(|i| ReceiverSpec {
                name: format!("mp{i}"),
                addr: format!("10.77.0.3:{}", 7001 + i).parse().unwrap(),
                hedge_addr: None,
            })
            .collect(),
        publishers: Vec::new(),
    };
    let plan = Plan::build(&inv, &spec).unwrap();
    let opts = ConfigOptions::default();
    let dir = std::env::temp_dir().join(format!("jasper-netns-{tag}{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut receivers = Vec::new();
    let mut proxy_cfgs = Vec::new();
    // Authenticated end to end: the DPDK proxies verify tree tags.
    let mut cfgs = node_configs(&plan, &opts);
    let masters = jasper_io::trust::random_masters(1).unwrap();
    jasper_io::trust::install_keys(&mut cfgs, &dir.join("keys"), &masters, None).unwrap();
    for mut c in cfgs {
        if c.node.role == NodeRole::Proxy {
            let i: usize = c.node.name.trim_start_matches("dpdk").parse().unwrap();
            c.backend.kind = BackendKind::Dpdk;
            c.backend.dpdk = Some(DpdkSection {
                eal_args: jasper_dpdk::vdev_eal_args(
                    &format!("jn{tag}{i}{id}"),
                    0,
                    &[&format!("net_af_packet0,iface={}", links[2 + i].1)],
                ),
                port: 0,
                ip: format!("10.77.0.{}", 10 + i).parse().unwrap(),
                static_arp: vec![],
                mbufs: 8191,
            });
        }
        let path = dir.join(format!("{}.toml", c.node.name));
        std::fs::write(&path, c.to_toml()).unwrap();
        match c.node.role {
            NodeRole::Receiver => receivers.push(path),
            NodeRole::Proxy => proxy_cfgs.push(path),
            NodeRole::Sender => {}
        }
    }
    let exe = env!("CARGO_BIN_EXE_jasper");
    let mut proxies_running = Vec::new();
    for (i, cfg) in proxy_cfgs.iter().enumerate() {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &pns[i], exe, "node", "--config"])
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(&mut child, 1);
        proxies_running.push(child);
    }
    let results = dir.join("results.bin");
    let mut rx = Command::new("ip");
    rx.args([
        "netns",
        "exec",
        &r,
        exe,
        "receivers",
        "--mps",
        &mps.to_string(),
        "--results",
    ])
    .arg(&results);
    for c in &receivers {
        rx.arg("--config").arg(c);
    }
    let mut rx = rx
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut rx, mps);
    let publ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &s,
            exe,
            "publish",
            "--count",
            "2000",
            "--rate",
            "4000",
            "--warmup-ms",
            "300",
            "--config",
        ])
        .arg(dir.join("pub.toml"))
        .output()
        .unwrap();
    assert!(
        publ.status.success(),
        "{}",
        String::from_utf8_lossy(&publ.stderr)
    );
    let until = Instant::now() + Duration::from_secs(15);
    while rx.try_wait().unwrap().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &rx.id().to_string()])
        .status();
    let rx_out = rx.wait_with_output().unwrap();
    let mut proxy_stats = String::new();
    for p in proxies_running {
        let _ = Command::new("kill")
            .args(["-TERM", &p.id().to_string()])
            .status();
        proxy_stats += &String::from_utf8_lossy(&p.wait_with_output().unwrap().stderr);
    }
    let c = Collector::from_bytes(&std::fs::read(&results).unwrap_or_else(|e| {
        panic!(
            "no results ({e}); receivers said: {}",
            String::from_utf8_lossy(&rx_out.stderr)
        )
    }))
    .unwrap();
    let rep = c.report(2000, 0);
    assert_eq!(rep.receivers, mps as u64);
    assert_eq!(
        rep.missing_total,
        0,
        "proxies: {proxy_stats}\nreceivers: {}",
        String::from_utf8_lossy(&rx_out.stderr)
    );
    assert_eq!(rep.duplicates_total, 0);
    assert_eq!(
        proxy_stats.matches("\"copies_out\"").count(),
        proxies,
        "{proxy_stats}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dpdk_proxy_interoperates_with_kernel_hosts() {
    run_tree(
        "a",
        TreeSpec {
            depth: Some(1),
            roots: 1,
            ..TreeSpec::default()
        },
        1,
        4,
    );
}

#[test]
fn hedged_tree_of_dpdk_proxies_delivers_everything_once() {
    // Root + 2 level-2 proxies, H = 1: every receiver gets 2 copies.
    run_tree(
        "b",
        TreeSpec {
            depth: Some(2),
            fanout: Some(2),
            hedge: 1,
            spray: true,
            roots: 1,
        },
        3,
        4,
    );
}
