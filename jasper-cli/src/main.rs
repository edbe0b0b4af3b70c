//! `jasper`: the Jasper-rs operator tool.
//!
//! - `jasper local`: a whole fair-multicast tree on this machine and its fairness report.
//! - `jasper plan`: print a tree for an inventory and write one config per node.
//! - `jasper keys`: create and roll over the nodes' keys.
//! - `jasper sim`: the simulator (schemes side by side, sweeps).
//! - `jasper status`: every node's live counters, as a tree that refreshes in place.
//! - `jasper node` / `jasper receivers`: run nodes from configs (what `local` starts).
#![forbid(unsafe_code)]

mod attack;
mod chaos;
mod keys;
mod local;
mod plan_out;
mod plot;
mod sim;
mod status;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use jasper_core::config::{NodeConfig, NodeRole};
use jasper_core::metrics::{Collector, Delivery};
use jasper_core::plan::{Plan, TreeSpec};
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
    /// Create, roll over (`--add`, `--activate`) and retire the nodes' keys.
    Keys(keys::KeysArgs),
    /// Simulate the schemes at scale under the reference cloud model (deterministic, seeded).
    Sim(sim::SimArgs),
    /// Watch a running tree: every node's live counters (up/down, rates, drops, late share, clocks, dead upstreams).
    Status(status::StatusArgs),
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
    /// Run several proxies from their configs in one thread (used by `local`).
    #[command(hide = true)]
    Proxies {
        /// Proxy configs, parents before children.
        #[arg(long, required = true)]
        config: Vec<PathBuf>,
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
        /// Messages the feed will publish: anything numbered beyond is
        /// counted as out of range, never stored.
        #[arg(long, default_value_t = 10_000_000)]
        max_messages: u64,
        /// Also write the results every this many ms, so a process killed
        /// mid-run keeps what it delivered until then (0: only at exit;
        /// a snapshot serializes every message's record, so it is not free).
        #[arg(long, default_value_t = 0)]
        snapshot_ms: u64,
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

/// Clock source of `jasper plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClockArg {
    /// The kernel's clock state (adjtimex), as chrony/ntpd/phc2sys keep it.
    Kernel,
    /// A PTP hardware clock (/dev/ptpN).
    Phc,
    /// AWS ClockBound's shared-memory segment.
    Clockbound,
}

fn clock_section(a: &PlanArgs) -> jasper_core::config::ClockSection {
    use jasper_core::config::{
        ClockBoundSettings, ClockSection, ClockSource, KernelClockSettings, PhcSettings,
    };
    let source = match a.clock {
        ClockArg::Kernel => {
            let mut s = KernelClockSettings::default();
            if let Some(d) = a.clock_degraded_above_ns {
                s.degraded_above_ns = d;
            }
            ClockSource::Kernel(s)
        }
        ClockArg::Phc => {
            let mut s = PhcSettings {
                device: a.phc_device.clone(),
                ..PhcSettings::default()
            };
            if let Some(d) = a.clock_degraded_above_ns {
                s.degraded_above_ns = d;
            }
            ClockSource::Phc(s)
        }
        ClockArg::Clockbound => {
            let mut s = ClockBoundSettings {
                path: a.clockbound_path.clone(),
                ..ClockBoundSettings::default()
            };
            if let Some(d) = a.clock_degraded_above_ns {
                s.degraded_above_ns = d;
            }
            ClockSource::Clockbound(s)
        }
    };
    ClockSection {
        source,
        ..ClockSection::default()
    }
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// Inventory TOML: `[sender]`, `[[proxy]]`, `[[receiver]]` with name and addr, and
    /// per node `host` (management address) and `dpdk = { lcores, pci }` (deploy/inventory.example.toml).
    #[arg(long)]
    inventory: PathBuf,
    /// Write one `<name>.toml` per node here, and keys under `keys/`.
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
    /// Root proxies R (the first R proxies of the inventory): the publisher
    /// sends to each and each feeds the whole level below.
    #[arg(long, default_value_t = jasper_core::plan::DEFAULT_ROOTS)]
    roots: u32,
    /// Backend written into proxy and receiver configs (dpdk: each node's `dpdk` settings from the inventory).
    #[arg(long, value_enum, default_value_t = BackendArg::Udp)]
    backend: BackendArg,
    /// Also write `<out>/hosts.yml`, the Ansible inventory deploy/ansible/site.yml runs on.
    #[arg(long, requires = "out")]
    ansible: bool,
    /// Replace keys already in `<out>/keys` (otherwise refused).
    #[arg(long, conflicts_with = "keep_keys")]
    force: bool,
    /// Re-plan a running tree: keep the keys already in `<out>/keys` (read
    /// from the [sender]'s key file) and write every node's file from them,
    /// so added, removed or renumbered nodes and the running ones accept
    /// each other. Install the new configs and keys, then reload (SIGHUP).
    #[arg(long, requires = "out")]
    keep_keys: bool,
    /// MoldUDP64 hand-off in every receiver config: MP k re-emits to
    /// 127.0.0.1:BASEPORT+2k and answers re-requests on 127.0.0.1:BASEPORT+2k+1.
    #[arg(long, value_name = "BASEPORT")]
    mold: Option<u16>,
    /// Give every node a metrics endpoint (`[metrics] listen`) on its own
    /// address's IP at this TCP port; nodes sharing an IP take the
    /// following ports. `jasper status --plan <out>` then finds them.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Clock source written into every node's `[clock]`: `kernel` (chrony /
    /// ntpd / phc2sys through adjtimex), `phc` (a PTP hardware clock such
    /// as the AWS ENA PHC; --phc-device), `clockbound` (AWS ClockBound's
    /// segment; --clockbound-path). Edit `[clock]` per node for the rest
    /// (thresholds, accuracy).
    #[arg(long, value_enum, default_value_t = ClockArg::Kernel)]
    clock: ClockArg,
    /// PTP hardware clock device (with --clock phc).
    #[arg(long, default_value = "/dev/ptp0")]
    phc_device: String,
    /// ClockBound shared-memory segment (with --clock clockbound).
    #[arg(long, default_value = "/var/run/clockbound/shm0")]
    clockbound_path: String,
    /// Status "degraded" while a node's clock error bound exceeds this, ns
    /// (every source; 1 ms by default).
    #[arg(long)]
    clock_degraded_above_ns: Option<u64>,
    /// Plan around these nodes (dead or retired proxies, departed MPs):
    /// names from the inventory, comma separated or repeated. The tree is
    /// rebuilt without them; install the new configs and restart the nodes.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
}

fn plan_cmd(a: PlanArgs) -> anyhow::Result<()> {
    let mut file = plan_out::read_inventory(&a.inventory)?;
    plan_out::exclude(&mut file.inventory, &a.exclude)?;
    let inv = &file.inventory;
    let spec = TreeSpec {
        depth: a.depth,
        fanout: a.fanout,
        hedge: a.hedge,
        spray: a.spray,
        roots: a.roots,
    };
    let plan = Plan::build(inv, &spec).map_err(|e| anyhow::anyhow!("cannot plan the tree: {e}"))?;
    let dpdk = matches!(a.backend, BackendArg::Dpdk);
    if dpdk {
        plan_out::check_dpdk(&file)?;
    }
    print!("{}", plan.describe());
    if let Some(dir) = a.out.clone() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let opts = jasper_core::plan_configs::ConfigOptions::default();
        let kept = if a.keep_keys {
            Some(crate::keys::masters_in(&dir, &inv.sender.name)?)
        } else {
            crate::keys::refuse_existing_keys(&dir, a.force)?;
            None
        };
        let mut cfgs = jasper_core::plan_configs::node_configs(&plan, &opts);
        plan_out::check_names(&cfgs)?;
        let clock = clock_section(&a);
        for c in &mut cfgs {
            c.clock = clock.clone();
        }
        println!("clock source of every node: {:?}", a.clock);
        if dpdk {
            for c in &mut cfgs {
                plan_out::make_dpdk(c, &file)?;
            }
        }
        if let Some(base) = a.mold {
            jasper_core::plan_configs::set_mold_ports(&mut cfgs, [127, 0, 0, 1].into(), base)
                .map_err(|e| anyhow::anyhow!("--mold: {e}"))?;
            println!(
                "MoldUDP64 hand-off: MP k re-emits to 127.0.0.1:{base}+2k and answers re-requests on 127.0.0.1:{base}+2k+1"
            );
        }
        if let Some(port) = a.metrics_port {
            status::assign_plan(&mut cfgs, port)?;
            if matches!(a.backend, BackendArg::Dpdk) {
                println!("metrics endpoints are TCP on the kernel's stack: on DPDK nodes set [metrics] listen to the host's management address (DPDK owns the data-plane address)");
            }
        }
        // Keys: one file per node under <out>/keys (mode 0600), never inside
        // the shareable configs; each config names its file relative to itself.
        let (sets, active) = match kept {
            Some(k) => k,
            None => {
                let m = jasper_io::trust::random_masters(1).map_err(anyhow::Error::msg)?;
                let id = m.id;
                (vec![m], id)
            }
        };
        jasper_io::trust::install_key_sets(&mut cfgs, &dir.join("keys"), &sets, active, Some(&dir))
            .map_err(anyhow::Error::msg)?;
        println!(
            "keys {} {} (mode 0600): install each node's file with its config; never share them",
            if a.keep_keys {
                "kept (every node's file rewritten from the running tree's keys) in"
            } else {
                "written to"
            },
            dir.join("keys").display()
        );
        for c in &cfgs {
            let p = dir.join(format!("{}.toml", c.node.name));
            std::fs::write(&p, c.to_toml())
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        println!("configs written to {}", dir.display());
        if a.ansible {
            let hosts =
                plan_out::hosts_yml(&plan, &cfgs, &file, if dpdk { "dpdk" } else { "udp" })?;
            let p = dir.join("hosts.yml");
            std::fs::write(&p, hosts).with_context(|| format!("cannot write {}", p.display()))?;
            println!(
                "Ansible inventory written to {} (ansible-playbook -i {} deploy/ansible/site.yml)",
                p.display(),
                p.display()
            );
        }
    }
    Ok(())
}

fn load(path: &std::path::Path, role: NodeRole) -> anyhow::Result<NodeConfig> {
    jasper_io::node::load_config(path, role).map_err(anyhow::Error::msg)
}

fn node_cmd(config: PathBuf, managed: bool) -> anyhow::Result<()> {
    let cfg = load(&config, NodeRole::Proxy)?;
    let io = open_backend(&cfg, jasper_proxy::dpdk_opener()).map_err(anyhow::Error::msg)?;
    let mut node = jasper_proxy::ProxyNode::new(&cfg, io).map_err(anyhow::Error::msg)?;
    jasper_io::runtime::warn_if_unsynchronized(&cfg.node.name, node.clock());
    jasper_io::runtime::warn_if_insecure(&cfg.node.name, node.report(&cfg.node.name).authenticated);
    println!("ready {}", cfg.node.name);
    let stop = stop_on_signals();
    node.serve(&config, &stop, ParentWatch::new(managed))?;
    eprintln!("{}", serde_json::to_string(&node.report(&cfg.node.name))?);
    Ok(())
}

fn proxies_cmd(config: Vec<PathBuf>, managed: bool) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for p in &config {
        let cfg = load(p, NodeRole::Proxy)?;
        let io = open_backend(&cfg, jasper_proxy::dpdk_opener()).map_err(anyhow::Error::msg)?;
        let node = jasper_proxy::ProxyNode::new(&cfg, io).map_err(anyhow::Error::msg)?;
        jasper_io::runtime::warn_if_unsynchronized(&cfg.node.name, node.clock());
        jasper_io::runtime::warn_if_insecure(
            &cfg.node.name,
            node.report(&cfg.node.name).authenticated,
        );
        names.push(cfg.node.name.clone());
        nodes.push(node);
    }
    for n in &names {
        println!("ready {n}");
    }
    let stop = stop_on_signals();
    jasper_proxy::run_group(&mut nodes, &stop, ParentWatch::new(managed))?;
    for (n, name) in nodes.iter().zip(&names) {
        eprintln!("{}", serde_json::to_string(&n.report(name))?);
    }
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
    // SIGTERM/SIGINT/SIGHUP: stop publishing and end the session cleanly.
    let stop = stop_on_signals();
    jasper_io::runtime::stop_on_hangup(&stop);
    let start = Instant::now();
    let mut published = 0;
    for i in 0..count {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        while start.elapsed() < due && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            p.service();
            std::hint::spin_loop();
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        feed.fill(&mut msg, jasper_io::host_now_ns());
        p.publish(&msg)
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        published += 1;
    }
    p.end_session();
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(100) {
        p.service();
        std::thread::sleep(Duration::from_micros(200));
    }
    let stopped = if published < count {
        " (stopped by a signal)"
    } else {
        ""
    };
    println!(
        "published {published} messages in {:.3} s{stopped}; {}",
        start.elapsed().as_secs_f64(),
        serde_json::to_string(p.stats())?
    );
    Ok(())
}

/// One hand-over as `jasper receivers` records it at the hand-over; the
/// fairness bookkeeping waits for the end of the pass.
struct Handed {
    mp: usize,
    /// True instant of the hand-over.
    host_ns: u64,
    rel: jasper_core::receiver::Release,
    /// Feed index the payload carries.
    msg: Option<u64>,
    forged: bool,
}

/// The feed's message number, from the ITCH-like payload's order reference
/// (global across publisher restarts), or `None` for anything else.
fn feed_index(payload: &[u8]) -> Option<u64> {
    let r = u64::from_be_bytes(payload.get(11..19)?.try_into().ok()?);
    r.checked_sub(1)
}

fn write_results(collector: &Collector, results: &std::path::Path) -> anyhow::Result<()> {
    let tmp = results.with_extension("tmp");
    std::fs::write(&tmp, collector.to_bytes())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, results).with_context(|| format!("cannot write {}", results.display()))
}

/// Peak resident memory of this process, bytes (Linux `VmHWM`).
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn receivers_cmd(
    config: Vec<PathBuf>,
    results: PathBuf,
    mps: usize,
    max_messages: u64,
    snapshot_ms: u64,
    managed: bool,
) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    let mut index = Vec::new();
    for p in &config {
        let cfg = load(p, NodeRole::Receiver)?;
        index.push(cfg.node.mp.unwrap_or(cfg.node.id) as u32);
        let mut node = jasper_receiver::ReceiverNode::open(&cfg, jasper_proxy::dpdk_opener())
            .map_err(anyhow::Error::msg)?;
        node.set_exit_after_session(true);
        nodes.push(node);
    }
    for n in &nodes {
        jasper_io::runtime::warn_if_unsynchronized(n.name(), n.clock());
        jasper_io::runtime::warn_if_insecure(n.name(), n.report().authenticated);
        println!("ready {}", n.name());
    }
    let stop = stop_on_signals();
    let mut collector = Collector::new(mps, 0);
    let mut forged = vec![0u64; nodes.len()];
    let mut out_of_range = vec![0u64; nodes.len()];
    let mut last_snapshot = std::time::Instant::now();
    // A hand-over is recorded in two steps: at the hand-over, its true
    // instant and what the payload says (the pass read the clock once,
    // before the first receiver's); after the pass, the fairness
    // bookkeeping, which would otherwise run between two MPs' hand-overs
    // of the same message and widen the spread it measures.
    let handed = std::cell::RefCell::new(Vec::<Handed>::with_capacity(4096));
    jasper_receiver::run_until_passes(
        &mut nodes,
        &stop,
        &std::sync::atomic::AtomicBool::new(false),
        ParentWatch::new(managed),
        |i, rel, payload| {
            let host_ns = jasper_io::host_now_ns();
            handed.borrow_mut().push(Handed {
                mp: i,
                host_ns,
                rel: *rel,
                msg: feed_index(payload),
                forged: crate::attack::is_forged(payload),
            });
        },
        || {
            for h in handed.borrow_mut().drain(..) {
                let (i, rel) = (h.mp, h.rel);
                if h.forged {
                    forged[i] += 1;
                    continue;
                }
                // Bounded: a number taken from a packet never sizes memory.
                let Some(msg) = h.msg.filter(|m| *m < max_messages) else {
                    out_of_range[i] += 1;
                    continue;
                };
                collector.add(Delivery {
                    receiver: index[i],
                    msg,
                    owd_ns: rel.owd_ns(),
                    handover_ns: rel.release_ns as i64 - rel.send_time_ns as i64,
                    handed_true_ns: h.host_ns,
                    holding_ns: rel.holding_ns(),
                    late: rel.late,
                    deadline_ns: rel.deadline_ns,
                    stream: rel.stream,
                    seq: rel.seq,
                });
            }
            // Snapshots when asked for: a receiver process that is killed
            // keeps what it delivered until then.
            if snapshot_ms > 0
                && last_snapshot.elapsed() > std::time::Duration::from_millis(snapshot_ms)
            {
                last_snapshot = std::time::Instant::now();
                let _ = write_results(&collector, &results);
            }
        },
    );
    write_results(&collector, &results)?;
    let rss = peak_rss_bytes();
    for (i, n) in nodes.iter().enumerate() {
        let mut v = serde_json::to_value(n.report())?;
        if let Some(o) = v.as_object_mut() {
            o.insert("forged_deliveries".into(), forged[i].into());
            o.insert("out_of_range_deliveries".into(), out_of_range[i].into());
            o.insert("process_peak_rss_bytes".into(), rss.into());
        }
        eprintln!("{}", serde_json::to_string(&v)?);
    }
    Ok(())
}

fn real_main() -> anyhow::Result<()> {
    jasper_io::runtime::precise_sleep();
    match Cli::parse().cmd {
        Cmd::Local(a) => local::main(a),
        Cmd::Plan(a) => plan_cmd(a),
        Cmd::Keys(a) => keys::main(a),
        Cmd::Sim(a) => sim::main(a),
        Cmd::Status(a) => status::main(a),
        Cmd::Node { config, managed } => node_cmd(config, managed),
        Cmd::Proxies { config, managed } => proxies_cmd(config, managed),
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
            max_messages,
            snapshot_ms,
            managed,
        } => receivers_cmd(config, results, mps, max_messages, snapshot_ms, managed),
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
