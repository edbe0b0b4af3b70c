//! `jasper`: the Jasper-rs operator tool.
//!
//! - `jasper local`: a whole fair-multicast tree on this machine and its fairness report.
//! - `jasper plan`: print a tree for an inventory and write one config per node.
//! - `jasper sim`: the simulator (schemes side by side, sweeps).
//! - `jasper node` / `jasper receivers`: run nodes from configs (what `local` starts).
#![forbid(unsafe_code)]

mod local;
mod plot;
mod sim;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use jasper_core::config::{
    BackendKind, BackendSection, DpdkSection, NodeConfig, NodeRole, ReceiverSection,
};
use jasper_core::metrics::{Collector, Delivery};
use jasper_core::plan::{Inventory, Plan, TreeSpec};
use jasper_core::proxy::ProxyConfig;
use jasper_core::sender::SenderConfig;
use jasper_io::node::open_backend;
use jasper_io::runtime::{stop_on_signals, ParentWatch};

/// The Jasper-rs operator tool: fair market-data multicast for the cloud.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a whole fair-multicast tree on this machine and print the fairness report.
    Local(local::LocalArgs),
    /// Print the tree for an inventory and write one config file per node.
    Plan(PlanArgs),
    /// Simulate the schemes at scale under the reference cloud model (deterministic, seeded).
    Sim(sim::SimArgs),
    /// Publish a synthetic ITCH-like feed from a sender config (test a deployed tree).
    Publish {
        /// Sender config written by `jasper plan`.
        #[arg(long)]
        config: PathBuf,
        /// Messages to publish.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Messages per second.
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        /// Heartbeats only for this long first (lets proxies resolve ARP).
        #[arg(long, default_value_t = 0)]
        warmup_ms: u64,
    },
    /// Run one proxy from its config (as `jasper-proxy`).
    Node {
        /// Node config.
        #[arg(long)]
        config: PathBuf,
        /// Exit when the parent process exits.
        #[arg(long)]
        managed: bool,
    },
    /// Run receivers from their configs and write measurement results (used by `local`).
    #[command(hide = true)]
    Receivers {
        /// Receiver configs.
        #[arg(long, required = true)]
        config: Vec<PathBuf>,
        /// Results file (binary, read by `jasper local`).
        #[arg(long)]
        results: PathBuf,
        /// MPs in the whole tree.
        #[arg(long)]
        mps: usize,
        /// Exit when the parent process exits.
        #[arg(long)]
        managed: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    Udp,
    Dpdk,
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// Inventory TOML: `[sender]`, `[[proxy]]`, `[[receiver]]` with name and addr (see README).
    #[arg(long)]
    inventory: PathBuf,
    /// Write one `<name>.toml` per node here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Proxy levels (default: round(log10 receivers)).
    #[arg(long)]
    depth: Option<u32>,
    /// Children per proxy (default ≈ 10).
    #[arg(long)]
    fanout: Option<u32>,
    /// Sibling hedging H.
    #[arg(long, default_value_t = 0)]
    hedge: u32,
    /// Round-robin packet spraying.
    #[arg(long)]
    spray: bool,
    /// Backend written into proxy and receiver configs.
    #[arg(long, value_enum, default_value_t = BackendArg::Udp)]
    backend: BackendArg,
}

fn plan_cmd(a: PlanArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.inventory)
        .with_context(|| format!("cannot read {}", a.inventory.display()))?;
    let inv: Inventory = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid inventory", a.inventory.display()))?;
    let spec = TreeSpec {
        depth: a.depth,
        fanout: a.fanout,
        hedge: a.hedge,
        spray: a.spray,
    };
    let plan =
        Plan::build(&inv, &spec).map_err(|e| anyhow::anyhow!("cannot plan the tree: {e}"))?;
    print!("{}", plan.describe());
    if let Some(dir) = a.out {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let opts = jasper_core::plan_configs::ConfigOptions {
            backend: BackendSection::default(),
            emulated_clock: None,
            faults: None,
            seed: 1,
            sender: SenderConfig::default(),
            receiver: ReceiverSection::default(),
            proxy: ProxyConfig::default(),
            direct: false,
        };
        for mut c in jasper_core::plan_configs::node_configs(&plan, &opts) {
            if matches!(a.backend, BackendArg::Dpdk) && c.node.role != NodeRole::Sender {
                let ip = match c.node.listen[0].ip() {
                    std::net::IpAddr::V4(v4) => v4,
                    std::net::IpAddr::V6(_) => anyhow::bail!(
                        "the DPDK backend speaks IPv4 only; {} has an IPv6 address",
                        c.node.name
                    ),
                };
                c.backend.kind = BackendKind::Dpdk;
                c.backend.dpdk = Some(DpdkSection {
                    eal_args: vec!["-l".into(), "1".into(), "-a".into(), "0000:00:06.0".into()],
                    port: 0,
                    ip,
                    static_arp: vec![],
                    mbufs: 8191,
                });
            }
            let p = dir.join(format!("{}.toml", c.node.name));
            std::fs::write(&p, c.to_toml())
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        println!("configs written to {}", dir.display());
    }
    Ok(())
}

fn load(path: &PathBuf, role: NodeRole) -> anyhow::Result<NodeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let cfg = NodeConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    anyhow::ensure!(
        cfg.node.role == role,
        "{} is a {:?} config, expected {:?}",
        path.display(),
        cfg.node.role,
        role
    );
    Ok(cfg)
}

fn node_cmd(config: PathBuf, managed: bool) -> anyhow::Result<()> {
    let cfg = load(&config, NodeRole::Proxy)?;
    let io = open_backend(&cfg, jasper_proxy::dpdk_opener()).map_err(anyhow::Error::msg)?;
    let mut node = jasper_proxy::ProxyNode::new(&cfg, io);
    jasper_io::runtime::warn_if_unsynchronized(&cfg.node.name, node.clock());
    println!("ready {}", cfg.node.name);
    let stop = stop_on_signals();
    node.run(&stop, ParentWatch::new(managed))?;
    eprintln!("{}", serde_json::to_string(&node.report(&cfg.node.name))?);
    Ok(())
}

fn publish_cmd(config: PathBuf, count: u64, rate: u64, warmup_ms: u64) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let cfg = load(&config, NodeRole::Sender)?;
    anyhow::ensure!(rate > 0, "--rate must be positive");
    let mut p = jasper_sender::Publisher::from_node_config(&cfg, jasper_proxy::dpdk_opener())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(warmup_ms) {
        p.service();
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut feed = local::Feed {
        size: 36,
        order_ref: 0,
        x: 0x9E37_79B9_7F4A_7C15,
    };
    let mut msg = Vec::with_capacity(36);
    let start = Instant::now();
    for i in 0..count {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        while start.elapsed() < due {
            p.service();
            std::hint::spin_loop();
        }
        feed.fill(&mut msg, jasper_io::host_now_ns());
        p.publish(&msg)
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    p.end_session();
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(100) {
        p.service();
        std::thread::sleep(Duration::from_micros(200));
    }
    println!(
        "published {count} messages in {:.3} s; {}",
        start.elapsed().as_secs_f64(),
        serde_json::to_string(p.stats())?
    );
    Ok(())
}

fn receivers_cmd(
    config: Vec<PathBuf>,
    results: PathBuf,
    mps: usize,
    managed: bool,
) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    let mut index = Vec::new();
    for p in &config {
        let cfg = load(p, NodeRole::Receiver)?;
        index.push(cfg.node.mp.unwrap_or(cfg.node.id) as u32);
        nodes.push(
            jasper_receiver::ReceiverNode::open(&cfg, jasper_proxy::dpdk_opener())
                .map_err(anyhow::Error::msg)?,
        );
    }
    for n in &nodes {
        jasper_io::runtime::warn_if_unsynchronized(n.name(), n.clock());
        println!("ready {}", n.name());
    }
    let stop = stop_on_signals();
    let mut collector = Collector::new(mps, 0);
    jasper_receiver::run(
        &mut nodes,
        &stop,
        ParentWatch::new(managed),
        |i, rel, _payload, host| {
            collector.add(Delivery {
                receiver: index[i],
                msg: rel.seq,
                owd_ns: rel.owd_ns(),
                handover_ns: rel.release_ns as i64 - rel.send_time_ns as i64,
                handed_true_ns: host,
                holding_ns: rel.holding_ns(),
                late: rel.late,
            });
        },
    );
    let tmp = results.with_extension("tmp");
    std::fs::write(&tmp, collector.to_bytes())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &results)
        .with_context(|| format!("cannot write {}", results.display()))?;
    for n in &nodes {
        eprintln!("{}", serde_json::to_string(&n.report())?);
    }
    Ok(())
}

fn real_main() -> anyhow::Result<()> {
    jasper_io::runtime::precise_sleep();
    match Cli::parse().cmd {
        Cmd::Local(a) => local::main(a),
        Cmd::Plan(a) => plan_cmd(a),
        Cmd::Sim(a) => sim::main(a),
        Cmd::Node { config, managed } => node_cmd(config, managed),
        Cmd::Publish {
            config,
            count,
            rate,
            warmup_ms,
        } => publish_cmd(config, count, rate, warmup_ms),
        Cmd::Receivers {
            config,
            results,
            mps,
            managed,
        } => receivers_cmd(config, results, mps, managed),
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
