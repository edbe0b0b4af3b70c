//! `jasper local`: a whole fair-multicast tree on this machine — publisher
//! (in this process), proxies and receivers (child processes exchanging real
//! UDP packets on loopback) — a synthetic ITCH-like feed, and the fairness report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use jasper_core::config::{NodeConfig, NodeRole};
use jasper_core::metrics::{Collector, FairnessReport, ReportOptions};
use jasper_core::plan::{HostSpec, Inventory, PublisherSpec, ReceiverSpec, TreeSpec};
use jasper_sender::Publisher;
use serde_json::{json, Value};

use crate::attack::{AttackKind, Attacker, Fired, Targets};

mod feed;
mod procs;
mod report;
mod setup;

use crate::chaos::{Failure, Happened};
pub(crate) use feed::Feed;
use procs::{collect, ports, spawn, terminate, wait_all, Managed};
use report::{print_run, to_json};
use setup::{prepare, Setup};

/// Clock choice for a local run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockChoice {
    /// Emulated Huygens-class clocks (σ 50 ns, bound ±200 ns).
    Huygens,
    /// Emulated PTP-class clocks (bound ±5 µs).
    Ptp,
    /// Emulated NTP-class clocks (bound ±500 µs).
    Ntp,
    /// The host clock as is (bound from the kernel; usually unsynchronized here).
    System,
}

/// Link delay model for a local run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DelayModel {
    /// The reference cloud model (20 µs base, lognormal jitter, slow episodes), injected per link.
    Cloud,
    /// No injected delay: loopback as is.
    None,
}

/// Flags of `jasper local`.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Receivers (MPs).
    #[arg(long, default_value_t = 16)]
    pub receivers: usize,
    /// Messages per second (5000 is the rate of the Jasper paper's runs),
    /// over all publishers.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Publishers K, each its own stream (1, 2, …) into the same roots;
    /// receivers hand their messages over in one deadline order. Unless
    /// --publisher-rates says otherwise, publisher k (of K) gets a share
    /// (K − k) / (1 + 2 + … + K) of --rate: each its own rate.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second of each publisher (comma-separated, one per
    /// publisher; overrides --rate).
    #[arg(long, value_delimiter = ',')]
    pub publisher_rates: Vec<u64>,
    /// Seconds of feed.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Message size in bytes (ITCH add-order is 36).
    #[arg(long, default_value_t = 36)]
    pub msg_size: usize,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Headline fairness threshold: a message is fair when every receiver
    /// was handed it within this spread (ns; the paper's 1 µs resolution).
    #[arg(long, default_value_t = jasper_core::metrics::DEFAULT_FAIR_THRESHOLD_NS)]
    pub fair_threshold_ns: u64,
    /// Write an SVG plot of the OWD and DWS distributions.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also run direct unicast and the tree without hold-and-release, and compare.
    #[arg(long)]
    pub compare: bool,
    /// Proxy levels (default 2).
    #[arg(long)]
    pub depth: Option<u32>,
    /// Children per proxy (default: ≈ √receivers).
    #[arg(long)]
    pub fanout: Option<u32>,
    /// Sibling hedging H.
    #[arg(long, default_value_t = 1)]
    pub hedge: u32,
    /// Round-robin packet spraying.
    #[arg(long)]
    pub spray: bool,
    /// Root proxies R: the publisher sends to each, each feeds the whole
    /// level below (1 = a single root, a single point of failure).
    #[arg(long, default_value_t = jasper_core::plan::DEFAULT_ROOTS)]
    pub roots: u32,
    /// Feed every MP through two receiver endpoints.
    #[arg(long)]
    pub receiver_hedging: bool,
    /// Clock class.
    #[arg(long, value_enum, default_value_t = ClockChoice::Huygens)]
    pub clock: ClockChoice,
    /// Link delay model.
    #[arg(long, value_enum, default_value_t = DelayModel::Cloud)]
    pub delay_model: DelayModel,
    /// Loss probability per packet per hop (the model's 1e-5 is off by default).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Logical receivers per receiver process (one process spinning before
    /// deadlines is what a 2-core machine affords).
    #[arg(long, default_value_t = 64)]
    pub receivers_per_process: usize,
    /// Proxies per proxy process, run by one thread parent first (a packet
    /// crosses them in one wake-up). 1 (the default): a process each. At
    /// high rates sharing (e.g. 64: all in one) costs less CPU and
    /// spread; at the default rate it held tighter deadlines that were
    /// missed more often (measured: late 7–12% against 3–4%). A proxy
    /// named by --kill-proxy always runs alone, so killing it kills
    /// nothing else.
    #[arg(long, default_value_t = 1)]
    pub proxies_per_process: usize,
    /// First UDP port (0 = pick free ports).
    #[arg(long, default_value_t = 0)]
    pub base_port: u16,
    /// Poll-loop idle strategy of every node.
    #[arg(long, value_enum, default_value_t = IdleArg::Backoff)]
    pub idle: IdleArg,
    /// Adaptive batching at each publisher: the least time between two data
    /// packets, µs (0 = one packet per publish). Messages coming faster wait,
    /// packed, for at most this long, so the tree carries at most
    /// 1 / gap packets per second per publisher whatever the message rate.
    /// Default: from the tree's size, so that the copies of every packet
    /// the whole local tree sends stay within what this machine carries
    /// (`setup::LOCAL_COPIES_PER_S`), and at least 50 µs.
    #[arg(long)]
    pub packet_gap_us: Option<u64>,
    /// Idle time the backoff strategy keeps polling before it blocks, µs
    /// (default: the config default, `[backend] spin_us`).
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// Tracked deadline: every receiver reports the max one-way delay of
    /// each report interval, and the publisher's offset is this quantile
    /// (0..1) of the roots' reports over --deadline-history-ms, plus the
    /// margin and the clock bound (`[sender.deadline] tracked`). Off: the
    /// latest report's p97 window (Jasper-v1's rule).
    #[arg(long)]
    pub deadline_quantile: Option<f64>,
    /// History of the tracked deadline, ms.
    #[arg(long, default_value_t = 100)]
    pub deadline_history_ms: u64,
    /// Safety margin added to the delay estimate, µs (`[sender.deadline]
    /// margin_ns`; default the config's, 25 µs).
    #[arg(long)]
    pub margin_us: Option<u64>,
    /// Seed (clock offsets, injected delays).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the run directory (configs, results) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Attacks fired a third of the way into the feed (comma-separated, or
    /// `all`): seq-jump-root, new-session-root, end-of-session,
    /// seq-jump-receiver, reports-publisher, reports-root, stream-flood, hold-flood.
    #[arg(long, value_delimiter = ',')]
    pub attack: Vec<String>,
    /// Who attacks: a host without keys, or an MP holding its receiver's keys.
    #[arg(long, value_enum, default_value_t = Attacker::Outsider)]
    pub attacker: Attacker,
    /// The attacker forges source addresses (raw socket; root or
    /// CAP_NET_RAW): every packet seems to come from where the plan expects it.
    #[arg(long)]
    pub spoof: bool,
    /// Scale of the attack floods (1 = 30,000 forged streams and 20,000
    /// 9 KB packets, the sizes that broke earlier versions).
    #[arg(long, default_value_t = 1.0)]
    pub attack_volume: f64,
    /// Kill a proxy mid-run (SIGKILL): NAME@SECONDS, e.g. proxy2@1.5. Repeatable.
    #[arg(long)]
    pub kill_proxy: Vec<String>,
    /// Kill a receiver process (SIGKILL) and optionally restart it:
    /// GROUP@SECONDS[+RESTART_AFTER], e.g. 0@1.5+0.5. Repeatable.
    #[arg(long)]
    pub kill_receivers: Vec<String>,
    /// Kill the publisher at SECONDS and open a new one at once (a new session).
    #[arg(long)]
    pub restart_publisher: Option<f64>,
    /// MoldUDP64 hand-off: MP k re-emits its released feed to
    /// 127.0.0.1:BASEPORT+2k and answers MoldUDP64 re-requests on
    /// 127.0.0.1:BASEPORT+2k+1 (point a feed handler there).
    #[arg(long, value_name = "BASEPORT")]
    pub mold: Option<u16>,
    /// Serve live counters (Prometheus text, GET /metrics): the publisher
    /// on this address, each proxy and each receiver process on the
    /// following ports (port 0: free ports). Prints the addresses and the
    /// `jasper status --plan <run dir>` command that watches them.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
}

/// Idle strategy flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleArg {
    /// Busy-spin.
    Spin,
    /// Yield.
    Yield,
    /// Spin, yield, then sleep.
    Backoff,
}

/// Which scheme a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Tree + hedging + hold-and-release.
    Jasper,
    /// Tree + hedging, released on arrival.
    TreeNoHold,
    /// Direct unicast from the sender, released on arrival.
    Direct,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Jasper => "jasper",
            Variant::TreeNoHold => "tree-no-hold",
            Variant::Direct => "direct-unicast",
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct RunResult {
    variant: Variant,
    report: FairnessReport,
    throughput: f64,
    seconds: f64,
    interrupted: bool,
    collector: Collector,
    nodes: Vec<Value>,
    description: String,
    attacks: Vec<Fired>,
    happened: Vec<Happened>,
    names: Vec<String>,
}

fn tree_spec(args: &LocalArgs) -> TreeSpec {
    let endpoints = args.receivers * if args.receiver_hedging { 2 } else { 1 };
    let depth = args.depth.unwrap_or(2);
    let fanout = args
        .fanout
        .unwrap_or_else(|| ((endpoints as f64).powf(1.0 / depth as f64).ceil() as u32).max(2));
    TreeSpec {
        depth: Some(depth),
        fanout: Some(fanout),
        hedge: args.hedge,
        spray: args.spray,
        roots: args.roots,
    }
}

fn inventory(args: &LocalArgs, spec: &TreeSpec) -> anyhow::Result<Inventory> {
    let proxies = jasper_core::plan::proxies_needed(args.receivers, args.receiver_hedging, spec);
    let extra = args.publishers.saturating_sub(1);
    let n = 1 + proxies + args.receivers * if args.receiver_hedging { 2 } else { 1 } + extra;
    let ports = ports(args, n)?;
    let mut it = ports
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let mut next = || it.next().expect("enough ports");
    let sender = HostSpec {
        name: "sender".into(),
        addr: next(),
    };
    let proxies = (0..proxies)
        .map(|i| HostSpec {
            name: format!("proxy{i}"),
            addr: next(),
        })
        .collect();
    let mut receivers: Vec<ReceiverSpec> = (0..args.receivers)
        .map(|i| ReceiverSpec {
            name: format!("mp{i}"),
            addr: next(),
            hedge_addr: None,
        })
        .collect();
    if args.receiver_hedging {
        for r in &mut receivers {
            r.hedge_addr = Some(next());
        }
    }
    let publishers = (1..=extra)
        .map(|k| PublisherSpec {
            name: format!("publisher{k}"),
            addr: next(),
            stream: jasper_core::plan::PRIMARY_STREAM + k as u32,
        })
        .collect();
    Ok(Inventory {
        sender,
        proxies,
        receivers,
        publishers,
    })
}

/// Messages per second of each publisher.
fn publisher_rates(args: &LocalArgs) -> anyhow::Result<Vec<u64>> {
    anyhow::ensure!(
        (1..=64).contains(&args.publishers),
        "--publishers must be within 1..=64"
    );
    if !args.publisher_rates.is_empty() {
        anyhow::ensure!(
            args.publisher_rates.len() == args.publishers,
            "--publisher-rates lists {} rates for {} publishers: give one per publisher",
            args.publisher_rates.len(),
            args.publishers
        );
        anyhow::ensure!(
            args.publisher_rates.iter().all(|r| *r >= 1),
            "--publisher-rates: every rate must be at least 1 message per second"
        );
        return Ok(args.publisher_rates.clone());
    }
    let k = args.publishers as u64;
    let weights = k * (k + 1) / 2;
    Ok((0..k)
        .map(|i| (args.rate * (k - i) / weights).max(1))
        .collect())
}

/// Proxy processes: the plan's proxies in order (parents first), at most
/// `--proxies-per-process` to a process; a proxy `--kill-proxy` names
/// runs alone.
fn proxy_groups<'a>(
    paths: &'a [(&'a NodeConfig, PathBuf)],
    args: &LocalArgs,
) -> Vec<Vec<&'a (&'a NodeConfig, PathBuf)>> {
    let killed = |name: &str| {
        args.kill_proxy
            .iter()
            .any(|k| k.split('@').next() == Some(name))
    };
    let mut groups: Vec<Vec<_>> = Vec::new();
    let mut shared: Vec<_> = Vec::new();
    for e in paths.iter().filter(|(c, _)| c.node.role == NodeRole::Proxy) {
        if killed(&e.0.node.name) {
            groups.push(vec![e]);
        } else {
            shared.push(e);
        }
    }
    groups.extend(
        shared
            .chunks(args.proxies_per_process.max(1))
            .map(|g| g.to_vec()),
    );
    groups
}

fn run_once(args: &LocalArgs, variant: Variant, stop: &AtomicBool) -> anyhow::Result<RunResult> {
    anyhow::ensure!(args.receivers >= 1, "--receivers must be at least 1");
    anyhow::ensure!(args.rate >= 1, "--rate must be at least 1");
    anyhow::ensure!(
        args.duration > 0.0 && args.duration.is_finite(),
        "--duration must be a positive number of seconds"
    );
    anyhow::ensure!(
        (11..=1400).contains(&args.msg_size),
        "--msg-size must be within 11..=1400 bytes"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.loss),
        "--loss is a probability in [0, 1]"
    );
    let rates = publisher_rates(args)?;
    anyhow::ensure!(
        rates.len() == 1 || variant != Variant::Direct,
        "--compare runs direct unicast from one publisher: drop --compare or use --publishers 1"
    );
    let mut failures: Vec<Failure> = Vec::new();
    for k in &args.kill_proxy {
        failures.push(crate::chaos::parse_kill_proxy(k)?);
    }
    for k in &args.kill_receivers {
        failures.push(crate::chaos::parse_kill_receivers(k)?);
    }
    if let Some(at_s) = args.restart_publisher {
        failures.push(Failure::RestartPublisher { at_s });
    }
    failures.sort_by(|a, b| a.at_s().total_cmp(&b.at_s()));
    let named: Vec<AttackKind> = args
        .attack
        .iter()
        .filter(|a| *a != "all")
        .map(|a| {
            <AttackKind as ValueEnum>::from_str(a, true)
                .map_err(|_| anyhow::anyhow!("--attack {a:?}: unknown attack (see --help)"))
        })
        .collect::<anyhow::Result<_>>()?;
    let attacks: Vec<AttackKind> = if args.attack.iter().any(|a| a == "all") {
        AttackKind::all()
    } else {
        named
    };
    for f in &failures {
        if f.at_s() >= args.duration {
            bail!(
                "a failure at {:.2} s would come after the feed ends ({} s): schedule it within --duration",
                f.at_s(),
                args.duration
            );
        }
    }
    let Setup {
        plan,
        cfgs,
        files,
        dir,
        description,
        clock_bound,
        clock_status,
        metrics,
    } = prepare(args, variant)?;
    let paths: Vec<(&NodeConfig, PathBuf)> = cfgs.iter().zip(files).collect();
    let exe = std::env::current_exe().context("cannot find the jasper executable")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut proxies = Vec::new();
    let mut receivers = Vec::new();
    let mut expected = 0;
    for group in proxy_groups(&paths, args) {
        let mut a = vec!["proxies".to_string(), "--managed".into()];
        for (_, p) in &group {
            a.push("--config".into());
            a.push(p.display().to_string());
        }
        let name = group
            .iter()
            .map(|(c, _)| c.node.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        proxies.push(spawn(&exe, &a, &name, &ready_tx, group.len())?);
        expected += 1;
    }
    let rcfgs: Vec<&(&NodeConfig, PathBuf)> = paths
        .iter()
        .filter(|(c, _)| c.node.role == NodeRole::Receiver)
        .collect();
    let groups: Vec<Vec<PathBuf>> = rcfgs
        .chunks(args.receivers_per_process.max(1))
        .map(|g| g.iter().map(|(_, p)| p.clone()).collect())
        .collect();
    let totals: Vec<u64> = rates
        .iter()
        .map(|r| (*r as f64 * args.duration).round().max(1.0) as u64)
        .collect();
    let total: u64 = totals.iter().sum();
    let mut results = Vec::new();
    // Receiver process `g`, attempt `k` (restarts write their own results).
    let spawn_group = |g: usize, k: usize| -> anyhow::Result<(Managed, PathBuf)> {
        let res = dir.join(format!("results-{g}-{k}.bin"));
        let mut a = vec![
            "receivers".to_string(),
            "--managed".into(),
            "--results".into(),
            res.display().to_string(),
            "--mps".into(),
            plan.mps.to_string(),
            "--max-messages".into(),
            total.to_string(),
        ];
        // A receiver process this run kills keeps what it delivered until
        // its last snapshot (five a second); the others write at exit.
        if !args.kill_receivers.is_empty() {
            a.push("--snapshot-ms".into());
            a.push("200".into());
        }
        for p in &groups[g] {
            a.push("--config".into());
            a.push(p.display().to_string());
        }
        let m = spawn(
            &exe,
            &a,
            &format!("receivers{g}"),
            &ready_tx,
            groups[g].len(),
        )?;
        Ok((m, res))
    };
    for g in 0..groups.len() {
        let (m, res) = spawn_group(g, 0)?;
        receivers.push(m);
        results.push(res);
        expected += 1;
    }
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready < expected {
        match ready_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(_) => ready += 1,
            Err(_) => {
                let mut failed = None;
                for m in proxies.iter_mut().chain(receivers.iter_mut()) {
                    if let Ok(Some(status)) = m.child.try_wait() {
                        std::thread::sleep(Duration::from_millis(50));
                        let err = m.stderr.lock().map(|s| s.clone()).unwrap_or_default();
                        failed = Some(format!(
                            "{} exited during start-up ({status}): {}",
                            m.name,
                            err.trim()
                        ));
                        break;
                    }
                }
                let timed_out = Instant::now() > deadline;
                if failed.is_some() || timed_out {
                    for m in proxies.iter_mut().chain(receivers.iter_mut()) {
                        terminate(m);
                    }
                    bail!(failed.unwrap_or_else(|| "nodes did not become ready within 20 s".into()));
                }
            }
        }
    }

    // The publisher runs here.
    let sender_cfgs: Vec<&NodeConfig> = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Sender)
        .collect();
    let sender_cfg = *sender_cfgs.first().context("no sender in the plan")?;
    anyhow::ensure!(
        sender_cfgs.len() == rates.len(),
        "the plan has {} publishers for {} rates",
        sender_cfgs.len(),
        rates.len()
    );
    let mut publisher = Publisher::from_node_config(sender_cfg, None)
        .map_err(|e| anyhow::anyhow!("publisher: {e}"))?;
    // Further publishers (streams 2, 3, …), driven from this thread too.
    let mut others: Vec<Publisher> = sender_cfgs[1..]
        .iter()
        .map(|c| {
            Publisher::from_node_config(c, None)
                .map_err(|e| anyhow::anyhow!("publisher {}: {e}", c.node.name))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut counts = vec![0u64; rates.len()];
    crate::status::announce(&metrics, &dir);
    let root_cfg = cfgs.iter().find(|c| c.node.id == jasper_core::plan::ROOT);
    let mut attack_at =
        (!attacks.is_empty() && variant == Variant::Jasper).then_some(args.duration / 3.0);
    let mut fired: Vec<Fired> = Vec::new();
    let mut attack_thread: Option<std::thread::JoinHandle<anyhow::Result<Vec<Fired>>>> = None;
    let mut happened: Vec<Happened> = Vec::new();
    let mut pending_failures: std::collections::VecDeque<Failure> = if variant == Variant::Jasper {
        failures.into()
    } else {
        Default::default()
    };
    let mut restarts: Vec<(f64, usize)> = Vec::new();
    let mut sessions = Vec::new();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} msgs",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(variant.name());
    let mut feed = Feed {
        size: args.msg_size,
        order_ref: 0,
        x: 0x9E37_79B9_7F4A_7C15 ^ args.seed,
    };
    let mut msgs: Vec<Vec<u8>> = (0..256)
        .map(|_| Vec::with_capacity(args.msg_size))
        .collect();
    let start = Instant::now();
    let start_host_ns = jasper_io::host_now_ns();
    // How long each message waited between its due instant and the
    // publish call that packed it (what OML and hand-over latency, which
    // start at the packet's send time, do not show).
    let mut feed_wait = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .context("histogram")?;
    let mut published = 0u64;
    let mut interrupted = false;
    let mut last_bar = Instant::now();
    while published < total {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let elapsed = start.elapsed().as_secs_f64();
        if sessions.last() != Some(&publisher.session()) && publisher.session() != 0 {
            sessions.push(publisher.session());
        }
        while pending_failures
            .front()
            .is_some_and(|f| f.at_s() <= elapsed)
        {
            let Some(f) = pending_failures.pop_front() else {
                break;
            };
            match f {
                Failure::KillProxy { name, .. } => {
                    let m = proxies
                        .iter_mut()
                        .find(|m| m.name == name)
                        .with_context(|| format!("--kill-proxy: no proxy named {name:?}"))?;
                    let _ = m.child.kill();
                    happened.push(Happened {
                        at_s: elapsed,
                        what: format!("{name} killed (SIGKILL)"),
                    });
                }
                Failure::KillReceivers {
                    group, restart_s, ..
                } => {
                    let m = receivers.get_mut(group).with_context(|| {
                        format!("--kill-receivers: no receiver process {group}")
                    })?;
                    let _ = m.child.kill();
                    happened.push(Happened {
                        at_s: elapsed,
                        what: format!(
                            "receivers{group} killed (SIGKILL): its {} MPs get nothing until it restarts",
                            groups[group].len()
                        ),
                    });
                    if let Some(r) = restart_s {
                        restarts.push((elapsed + r, group));
                    }
                }
                Failure::RestartPublisher { .. } => {
                    let old = publisher.session();
                    // What the old publisher already sent is on the wire
                    // (the delay injector holds it): let it leave, then die
                    // without an end of session.
                    let flush_until = Instant::now() + Duration::from_millis(50);
                    while publisher.next_timer_ns().is_some() && Instant::now() < flush_until {
                        publisher.service();
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    drop(publisher);
                    publisher = Publisher::from_node_config(sender_cfg, None)
                        .map_err(|e| anyhow::anyhow!("publisher restart: {e}"))?;
                    happened.push(Happened {
                        at_s: elapsed,
                        what: format!("publisher killed and restarted (session {old} ends without end-of-session; a new session starts)"),
                    });
                }
            }
        }
        if let Some(i) = restarts.iter().position(|(t, _)| *t <= elapsed) {
            let (_, g) = restarts.remove(i);
            let (m, res) = spawn_group(g, results.len())?;
            receivers.push(m);
            results.push(res);
            happened.push(Happened {
                at_s: elapsed,
                what: format!("receivers{g} restarted"),
            });
        }
        if attack_at.is_some_and(|t| elapsed >= t) {
            attack_at = None;
            let targets = Targets {
                publisher: publisher.local_addr(),
                root: root_cfg.map(|c| c.node.listen[0]).context("no root")?,
                root_children: root_cfg
                    .map(|c| {
                        c.table
                            .report_children
                            .iter()
                            .filter_map(|id| Some((*id, c.peer(*id)?)))
                            .collect()
                    })
                    .unwrap_or_default(),
                victim: rcfgs
                    .last()
                    .map(|(c, _)| c.node.listen[0])
                    .context("no receiver")?,
                victim_parent: rcfgs
                    .last()
                    .and_then(|(c, _)| c.peer(*c.table.upstreams.first()?))
                    .context("no receiver parent")?,
                receivers: rcfgs
                    .iter()
                    .flat_map(|(c, _)| c.node.listen.clone())
                    .collect(),
                stream: sender_cfg.sender.stream,
                session: publisher.session(),
                next_seq: publisher.next_seq(),
                now_ns: jasper_io::host_now_ns(),
                volume: args.attack_volume.clamp(0.0, 10.0),
            };
            let insider = rcfgs.first().and_then(|(c, _)| c.trust.key_file.clone());
            // The attacker is another host: its own thread, so the feed keeps its pace.
            let (kinds, who, spoof) = (attacks.clone(), args.attacker, args.spoof);
            attack_thread = Some(std::thread::spawn(move || {
                kinds
                    .iter()
                    .map(|k| crate::attack::fire(*k, who, spoof, insider.as_deref(), &targets))
                    .collect::<anyhow::Result<Vec<Fired>>>()
            }));
        }
        // Each publisher at its own rate; the feed numbers messages across
        // publishers (the index every receiver reports them by).
        let mut k = 0;
        for (j, p) in std::iter::once(&mut publisher)
            .chain(others.iter_mut())
            .enumerate()
        {
            let due = ((elapsed * rates[j] as f64) as u64 + 1).min(totals[j]);
            // While the batching gap holds the next packet back, messages
            // due would only wait in the publisher, packed: they are
            // published when it may leave (the same packets, without a
            // wake-up per message), each stamped with its due instant.
            let n = if p.next_data_in_ns() > 0 {
                0
            } else {
                due.saturating_sub(counts[j]).min(msgs.len() as u64) as usize
            };
            if n > 0 {
                let now = jasper_io::host_now_ns();
                for (i, m) in msgs.iter_mut().take(n).enumerate() {
                    let c = counts[j] + i as u64;
                    let due_ns = start_host_ns + (c as f64 * 1e9 / rates[j] as f64) as u64;
                    feed.fill(m, due_ns);
                    feed_wait.saturating_record(now.saturating_sub(due_ns));
                }
                let refs: Vec<&[u8]> = msgs[..n].iter().map(|m| m.as_slice()).collect();
                p.publish_batch(&refs)
                    .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
                counts[j] += n as u64;
                k += n;
            }
            p.service();
        }
        published = counts.iter().sum();
        if last_bar.elapsed() > Duration::from_millis(50) {
            bar.set_position(published);
            last_bar = Instant::now();
        }
        if k == 0 {
            // Sleep until the next message is due (message c at c / rate)
            // and its publisher may send, or a delayed packet must leave,
            // whichever is first.
            let now_s = start.elapsed().as_secs_f64();
            let mut wait = std::iter::once(&publisher)
                .chain(others.iter())
                .enumerate()
                .filter(|(j, _)| counts[*j] < totals[*j])
                .map(|(j, p)| {
                    (counts[j] as f64 / rates[j] as f64 - now_s)
                        .max(p.next_data_in_ns() as f64 / 1e9)
                })
                .fold(f64::INFINITY, f64::min);
            for p in std::iter::once(&publisher).chain(others.iter()) {
                if let Some(t) = p.next_timer_ns() {
                    wait = wait.min(t.saturating_sub(jasper_io::host_now_ns()) as f64 / 1e9);
                }
            }
            // Sleep to the instant, not short of it and then yield: on a
            // machine with fewer cores than busy processes a yield hands
            // the core to another process for its whole time slice
            // (measured: the feed loop runnable but not running 2.5 s of
            // every 3, messages waiting milliseconds for their packet).
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            } else {
                std::thread::yield_now();
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.set_position(published);
    bar.finish_and_clear();
    publisher.end_session();
    for p in &mut others {
        p.end_session();
    }

    // Keep the publisher serviced (its delayed packets leave on time) until
    // the attacker is done.
    while attack_thread.as_ref().is_some_and(|t| !t.is_finished()) {
        publisher.service();
        others.iter_mut().for_each(|p| {
            p.service();
        });
        std::thread::sleep(Duration::from_micros(200));
    }
    if let Some(t) = attack_thread.take() {
        fired = t
            .join()
            .map_err(|_| anyhow::anyhow!("the attack thread panicked"))??;
    }
    let reports = publisher.stats().reports;
    let deadline_offset_ns = publisher.offset_ns();
    let publisher_guard = publisher.guard_stats().clone();
    let publisher_retransmit = publisher.retransmit_stats();
    // Drain: receivers exit on their own once the end of session arrived and
    // everything held was released; keep the publisher's delayed packets flowing.
    let drain_until = Instant::now() + Duration::from_millis(3_000);
    while Instant::now() < drain_until {
        publisher.service();
        others.iter_mut().for_each(|p| {
            p.service();
        });
        if receivers
            .iter_mut()
            .all(|c| matches!(c.child.try_wait(), Ok(Some(_))))
        {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for m in receivers.iter_mut() {
        terminate(m);
    }
    if !wait_all(&mut receivers, Duration::from_secs(10)) {
        for m in receivers.iter_mut() {
            let _ = m.child.kill();
        }
    }
    for m in proxies.iter_mut() {
        terminate(m);
    }
    if !wait_all(&mut proxies, Duration::from_secs(5)) {
        for m in proxies.iter_mut() {
            let _ = m.child.kill();
        }
    }
    std::thread::sleep(Duration::from_millis(20));

    let (collector, mut nodes) = collect(
        &results,
        &mut receivers,
        &proxies,
        &mut happened,
        seconds,
        plan.mps as usize,
        published,
    )?;
    nodes.push(json!({
        "name": "sender",
        "core": serde_json::to_value(publisher.stats())?,
        "retransmit": serde_json::to_value(&publisher_retransmit)?,
        "reports": reports,
        "deadline_offset_ns": deadline_offset_ns,
        "guard": serde_json::to_value(&publisher_guard)?,
        "sessions": sessions,
        "tx_packets": publisher.io_counters().tx_packets,
        "tx_dropped": publisher.io_counters().tx_dropped,
        "stream": sender_cfg.sender.stream,
        "published": counts[0],
        "rate": rates[0],
        "packet_gap_ns": sender_cfg.sender.packet_gap_ns,
        "feed_wait_ns": [
            feed_wait.value_at_quantile(0.5),
            feed_wait.value_at_quantile(0.99),
            feed_wait.max(),
        ],
    }));
    for (j, (p, c)) in others.iter().zip(&sender_cfgs[1..]).enumerate() {
        nodes.push(json!({
            "name": c.node.name,
            "core": serde_json::to_value(p.stats())?,
            "retransmit": serde_json::to_value(p.retransmit_stats())?,
            "reports": p.stats().reports,
            "deadline_offset_ns": p.offset_ns(),
            "guard": serde_json::to_value(p.guard_stats())?,
            "sessions": [p.session()],
            "tx_packets": p.io_counters().tx_packets,
            "tx_dropped": p.io_counters().tx_dropped,
            "stream": c.sender.stream,
            "published": counts[j + 1],
            "rate": rates[j + 1],
        }));
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("run directory kept: {}", dir.display());
    }
    let report = collector.report_with(
        published,
        ReportOptions {
            clock_bound_ns: clock_bound,
            clock_status,
            fair_threshold_ns: args.fair_threshold_ns,
        },
    );
    Ok(RunResult {
        variant,
        throughput: published as f64 / seconds.max(1e-9),
        seconds,
        interrupted,
        report,
        collector,
        nodes,
        description,
        attacks: fired,
        happened,
        names: plan.nodes.iter().map(|n| n.name.clone()).collect(),
    })
}

/// Entry point of `jasper local`.
pub fn main(args: LocalArgs) -> anyhow::Result<()> {
    let stop = jasper_io::runtime::stop_on_signals();
    let variants: &[Variant] = if args.compare {
        &[Variant::Jasper, Variant::TreeNoHold, Variant::Direct]
    } else {
        &[Variant::Jasper]
    };
    let mut runs = Vec::new();
    for v in variants {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = run_once(&args, *v, &stop)?;
        print_run(&r);
        runs.push(r);
    }
    if runs.len() > 1 {
        println!("\n== side by side (µs)");
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8}",
            "scheme",
            "OML p50",
            "OML p99",
            "HOmax p50",
            "HOmax p99",
            "DWS p50",
            "DWS p99",
            "P(F)",
            "P(F)@2b",
            "late",
            "missing"
        );
        for r in &runs {
            let x = &r.report;
            println!(
                "{:<16} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7.1}% {:>8} {:>8.3}% {:>8}",
                r.variant.name(),
                x.oml_ns_p50 as f64 / 1e3,
                x.oml_ns_p99 as f64 / 1e3,
                x.handover_max_ns_p50 as f64 / 1e3,
                x.handover_max_ns_p99 as f64 / 1e3,
                x.dws_ns_p50 as f64 / 1e3,
                x.dws_ns_p99 as f64 / 1e3,
                x.p_f * 100.0,
                x.p_f_bound
                    .map_or("n/a".into(), |p| format!("{:.1}%", p * 100.0)),
                x.late_fraction * 100.0,
                x.missing_total
            );
        }
        println!(
            "P(F): share of published messages every MP was handed within {} ns of each other (true time); HOmax: per-message max of release − send",
            args.fair_threshold_ns
        );
    }
    if let Some(path) = &args.json {
        let first = runs.first().context("no run completed")?;
        let mut v = to_json(first)?;
        if runs.len() > 1 {
            let mut cmp = serde_json::Map::new();
            for r in &runs {
                cmp.insert(r.variant.name().into(), to_json(r)?);
            }
            v.as_object_mut()
                .context("object")?
                .insert("compare".into(), Value::Object(cmp));
        }
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        let series: Vec<(&str, &Collector, u64)> = runs
            .iter()
            .map(|r| (r.variant.name(), &r.collector, r.report.messages_published))
            .collect();
        crate::plot::cdf_svg(path, &series)?;
        println!("plot written to {}", path.display());
    }
    if runs.iter().any(|r| r.interrupted) {
        println!("interrupted: the report covers the messages published before Ctrl-C");
    }
    Ok(())
}
