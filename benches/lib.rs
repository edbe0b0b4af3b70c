//! Shared helpers of the Jasper-rs benchmarks (see the `[[bench]]` targets).
#![forbid(unsafe_code)]

use std::net::UdpSocket;

use jasper_core::config::NodeConfig;
use jasper_core::plan::{loopback_inventory, Plan, TreeSpec};
use jasper_core::plan_configs::{node_configs, ConfigOptions};

/// A loopback plan on free ports, and its node configs; with `auth`, fresh
/// keys are written to a temporary directory and every node authenticates.
pub fn loopback_tree(
    receivers: usize,
    spec: TreeSpec,
    opts: &ConfigOptions,
    auth: bool,
) -> (Plan, Vec<NodeConfig>) {
    let proxies = jasper_core::plan::proxies_needed(receivers, false, &spec);
    let mut inv = loopback_inventory(proxies, receivers, false, 1);
    let n = 1 + proxies + receivers;
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("loopback socket"))
        .collect();
    let mut ports = socks.iter().map(|s| s.local_addr().expect("addr"));
    inv.sender.addr = ports.next().expect("port");
    for p in &mut inv.proxies {
        p.addr = ports.next().expect("port");
    }
    for r in &mut inv.receivers {
        r.addr = ports.next().expect("port");
    }
    drop(socks);
    let plan = Plan::build(&inv, &spec).expect("plan");
    let mut cfgs = node_configs(&plan, opts);
    if auth {
        let dir = std::env::temp_dir().join(format!("jasper-bench-keys-{}", std::process::id()));
        let masters = jasper_io::trust::random_masters(1).expect("random keys");
        jasper_io::trust::install_keys(&mut cfgs, &dir, &masters, None).expect("write keys");
    }
    (plan, cfgs)
}
