//! The Jasper-rs side: our `Publisher` → 1 `ProxyNode` → N `ReceiverNode`s
//! (or, with `direct`, the publisher → N receivers) on kernel UDP over loopback, no injected delay or loss, assembled the way
//! `benches/tree_throughput.rs` does it: the publisher on the calling
//! thread, the proxy on one thread, the N logical receivers on another
//! (`jasper_receiver::run`, as `jasper local` packs MPs into a process).
//! Every node runs the product's defaults (kernel UDP backend with 4 MiB
//! socket buffers, backoff idle unless `--idle` says otherwise, 1472-byte packets, no linger, the adaptive
//! deadline, loss recovery) and, unless turned off, authenticates every
//! packet with keys made for the trial.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_core::clock::ClockClass;
use jasper_core::config::{
    BackendSection, ClockSection, ClockSource, IdleStrategy, NodeConfig, NodeRole, ReceiverSection,
};
use jasper_core::plan::{loopback_inventory, Plan, TreeSpec};
use jasper_core::plan_configs::{node_configs, ConfigOptions};
use jasper_core::receiver::{ReceiverConfig, Release};
use jasper_core::sender::SenderConfig;
use jasper_io::node::open_backend;
use jasper_io::runtime::ParentWatch;
use jasper_proxy::ProxyNode;
use jasper_receiver::ReceiverNode;
use jasper_sender::Publisher;

use crate::common::{
    cpu_seconds, now_ns, run_queue_seconds, sleep_until_due, stamp, Outcome, Pacer, Sink, Trial,
};

/// How the tree is run.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Hold each message until its deadline (false: release on arrival).
    pub hold: bool,
    /// Authenticate every packet (the product's default).
    pub auth: bool,
    /// Declared clock error bound, ns: every node reads the host's
    /// CLOCK_REALTIME (one box, one clock), so its true error is 0.
    pub clock_bound_ns: u64,
    /// Poll-loop idle strategy of every node (the product's default:
    /// backoff).
    pub idle: IdleStrategy,
    /// The publisher sends to the receivers itself (no proxy).
    pub direct: bool,
    /// Run publisher, proxy and receivers in one thread, one duty cycle
    /// after another (as Aeron's side runs its driver and client), instead
    /// of a thread per role.
    pub one_thread: bool,
    /// The deadline's margin over the tree's delay estimate, ns.
    pub margin_ns: u64,
    /// The publisher's adaptive batching: least time between two packets, ns.
    pub packet_gap_ns: u64,
    /// The tracked deadline rule (`[sender.deadline.tracked]`): this
    /// quantile of the roots' reports over 100 ms (None: the latest report).
    pub tracked_quantile: Option<f64>,
}

/// Messages that fill one of our packets (the throughput burst).
pub fn per_packet(size: usize, auth: bool) -> u64 {
    let max = SenderConfig::default().max_packet;
    let trailer = if auth {
        jasper_core::auth::PUBLISHER_TRAILER
    } else {
        0
    };
    let room = max - jasper_core::wire::HEADER_LEN - trailer;
    (room / (size + jasper_core::wire::MSG_LEN_PREFIX)).max(1) as u64
}

/// A loopback plan (publisher → 1 proxy → n receivers) on free ports, and
/// its node configs.
fn configs(n: usize, s: &Setup) -> Result<(Vec<NodeConfig>, Option<std::path::PathBuf>), String> {
    let spec = TreeSpec {
        depth: Some(1),
        fanout: Some(n as u32),
        hedge: 0,
        spray: false,
        roots: 1,
    };
    let proxies = jasper_core::plan::proxies_needed(n, false, &spec);
    let mut inv = loopback_inventory(proxies, n, false, 1);
    let socks: Vec<UdpSocket> = (0..1 + proxies + n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("loopback sockets: {e}"))?;
    let mut ports = socks.iter().filter_map(|s| s.local_addr().ok());
    inv.sender.addr = ports.next().ok_or("no port")?;
    for p in &mut inv.proxies {
        p.addr = ports.next().ok_or("no port")?;
    }
    for r in &mut inv.receivers {
        r.addr = ports.next().ok_or("no port")?;
    }
    drop(socks);
    let plan = Plan::build(&inv, &spec).map_err(|e| format!("plan: {e}"))?;
    let opts = ConfigOptions {
        backend: BackendSection {
            idle: s.idle,
            ..BackendSection::default()
        },
        sender: SenderConfig {
            deadline: jasper_core::deadline::DeadlinePolicy {
                margin_ns: s.margin_ns,
                tracked: s
                    .tracked_quantile
                    .map(|q| jasper_core::deadline::TrackedDeadline {
                        history_ns: 100_000_000,
                        quantile_ppm: (q * 1e6) as u32,
                    }),
                ..Default::default()
            },
            packet_gap_ns: s.packet_gap_ns,
            ..SenderConfig::default()
        },
        receiver: ReceiverSection {
            core: ReceiverConfig {
                hold: s.hold,
                ..ReceiverConfig::default()
            },
            ..ReceiverSection::default()
        },
        direct: s.direct,
        ..ConfigOptions::default()
    };
    let mut cfgs = node_configs(&plan, &opts);
    for c in &mut cfgs {
        // The host clock itself, with the declared bound.
        c.clock = ClockSection {
            source: ClockSource::Emulated,
            class: ClockClass::Huygens,
            offset_ns: 0,
            drift_ppb: 0.0,
            noise_ns: 0.0,
            bound_ns: Some(s.clock_bound_ns),
            seed: 1,
        };
    }
    let mut keys = None;
    if s.auth {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jasper-aeron-peer-keys-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let masters = jasper_io::trust::random_masters(1)?;
        jasper_io::trust::install_keys(&mut cfgs, &dir, &masters, None)?;
        keys = Some(dir);
    }
    Ok((cfgs, keys))
}

/// Run one trial on Jasper-rs.
pub fn run(t: &Trial, s: &Setup) -> Result<Outcome, String> {
    let (cfgs, keys) = configs(t.n, s)?;
    let result = run_tree(t, &cfgs, s.one_thread);
    if let Some(dir) = keys {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn run_tree(t: &Trial, cfgs: &[NodeConfig], one_thread: bool) -> Result<Outcome, String> {
    if one_thread {
        return run_one_thread(t, cfgs);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The proxy's thread (none in the direct plan).
    let proxy = match proxy_of(cfgs)? {
        Some(mut proxy_node) => {
            let pstop = stop.clone();
            Some(std::thread::spawn(move || {
                jasper_io::runtime::precise_sleep();
                let r = proxy_node.run(&pstop, ParentWatch::new(false));
                let rep = proxy_node.report("proxy");
                (
                    r.map_err(|e| e.to_string()),
                    rep.tx_dropped,
                    rep.rx_truncated,
                )
            }))
        }
        None => None,
    };
    let mut nodes = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Receiver)
        .map(|c| ReceiverNode::open(c, None))
        .collect::<Result<Vec<_>, _>>()?;
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..t.n).map(|_| AtomicU64::new(0)).collect());
    let (rstop, rprogress) = (stop.clone(), progress.clone());
    let mut sink = Sink::new(t);
    let receivers = std::thread::spawn(move || {
        jasper_io::runtime::precise_sleep();
        jasper_receiver::run(
            &mut nodes,
            &rstop,
            ParentWatch::new(false),
            |i, rel, payload| {
                // No end of a pass to time a throughput trial's hand-overs
                // at here: every hand-over is timed.
                if sink.deliver(i, payload, now_ns(), rel.late) {
                    rprogress[i].fetch_add(1, Ordering::Relaxed);
                }
            },
        );
        let gaps: u64 = nodes.iter().map(|n| n.report().core.gaps_detected).sum();
        (sink, gaps)
    });
    jasper_io::runtime::precise_sleep();
    let scfg = config_of(cfgs, NodeRole::Sender)?;
    let mut publisher = Publisher::from_node_config(scfg, None).map_err(|e| e.to_string())?;
    // Let both threads reach their loops.
    std::thread::sleep(Duration::from_millis(50));

    let mut feed = Feed::start(t);
    let total = feed.total;
    let complete = |p: &[AtomicU64]| p.iter().all(|c| c.load(Ordering::Relaxed) >= total);
    let mut failed = None;
    while feed.published < feed.total && Instant::now() <= feed.deadline {
        match feed.publish_due(&mut publisher) {
            Ok(0) => {
                publisher.service();
                sleep_until_due(&feed.pacer, feed.published);
            }
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Serve the tree (reports, retransmit requests) until every receiver
    // has every message or the trial's time is up.
    while failed.is_none() && Instant::now() <= feed.deadline && !complete(&progress) {
        publisher.service();
        std::thread::sleep(Duration::from_micros(200));
    }
    let spent = feed.spent();
    let tx_dropped = publisher.io_counters().tx_dropped;
    publisher.end_session();
    stop.store(true, Ordering::SeqCst);
    let (prun, proxy_dropped, proxy_truncated) = match proxy {
        Some(p) => p.join().map_err(|_| "proxy thread panicked")?,
        None => (Ok(()), 0, 0),
    };
    let (sink, gaps) = receivers.join().map_err(|_| "receiver thread panicked")?;
    prun?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(feed.outcome(
        &sink,
        spent,
        format!(
            "publisher tx drops {tx_dropped}, proxy tx drops {proxy_dropped}, proxy rx truncated {proxy_truncated}, receiver gaps {gaps}"
        ),
    ))
}

/// The same tree stepped from one thread: each duty cycle publishes what is
/// due, services the publisher (which sends what its batching held), polls
/// the proxy, then receives at every receiver, releases at all of them and
/// does their housekeeping (`jasper_receiver::duty_cycle`). With nothing to do it sleeps until the
/// next message or the spin stretch before the next release, whichever
/// comes first, when that is far enough away; otherwise it polls again.
fn run_one_thread(t: &Trial, cfgs: &[NodeConfig]) -> Result<Outcome, String> {
    let mut proxy = proxy_of(cfgs)?;
    let mut nodes = cfgs
        .iter()
        .filter(|c| c.node.role == NodeRole::Receiver)
        .map(|c| ReceiverNode::open(c, None))
        .collect::<Result<Vec<_>, _>>()?;
    jasper_receiver::share_feed_memo(&mut nodes);
    let scfg = config_of(cfgs, NodeRole::Sender)?;
    let mut publisher = Publisher::from_node_config(scfg, None).map_err(|e| e.to_string())?;
    jasper_io::runtime::precise_sleep();
    let mut sink = Sink::new(t);
    let mut feed = Feed::start(t);
    let mut failed = None;
    loop {
        let mut work = 0;
        match feed.publish_due(&mut publisher) {
            Ok(k) => work += k,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        publisher.service();
        if let Some(p) = proxy.as_mut() {
            work += p.poll().map_err(|e| format!("proxy: {e}"))?;
        }
        work += jasper_receiver::duty_cycle(&mut nodes, &mut hand_to(&mut sink));
        sink.end_pass();
        if Instant::now() > feed.deadline || sink.complete() {
            break;
        }
        match jasper_receiver::next_wake(&mut nodes) {
            jasper_receiver::Wake::Release => {
                jasper_receiver::release_due(&mut nodes, &mut hand_to(&mut sink));
                sink.end_pass();
            }
            jasper_receiver::Wake::In(release_in) if work == 0 => {
                let publish_in =
                    (feed.published < feed.total).then(|| feed.pacer.wait(feed.published));
                let wait = [release_in.map(Duration::from_nanos), publish_in]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(Duration::from_micros(200));
                if wait > Duration::from_micros(30) {
                    std::thread::sleep(wait - Duration::from_micros(20));
                }
            }
            jasper_receiver::Wake::In(_) => {}
        }
    }
    let spent = feed.spent();
    let tx_dropped = publisher.io_counters().tx_dropped;
    publisher.end_session();
    if let Some(e) = failed {
        return Err(e);
    }
    let gaps: u64 = nodes.iter().map(|n| n.report().core.gaps_detected).sum();
    let proxy = match proxy.map(|p| p.report("proxy")) {
        Some(p) => format!(
            "proxy tx drops {}, proxy rx truncated {}, proxy {} packets out in {} super-packets",
            p.tx_dropped, p.rx_truncated, p.tx_packets, p.tx_offload_batches
        ),
        None => "no proxy".to_string(),
    };
    Ok(feed.outcome(
        &sink,
        spent,
        format!(
            "one thread; publisher tx drops {tx_dropped}, {proxy}, receiver gaps {gaps}, receivers {} coalesced arrivals",
            nodes.iter().map(|n| n.report().rx_offload_batches).sum::<u64>()
        ),
    ))
}

/// The plan's proxy, opened (None in the direct plan).
fn proxy_of(cfgs: &[NodeConfig]) -> Result<Option<ProxyNode>, String> {
    match cfgs.iter().find(|c| c.node.role == NodeRole::Proxy) {
        Some(cfg) => Ok(Some(ProxyNode::new(cfg, open_backend(cfg, None)?)?)),
        None => Ok(None),
    }
}

/// The plan's (first) node of `role`.
fn config_of(cfgs: &[NodeConfig], role: NodeRole) -> Result<&NodeConfig, String> {
    cfgs.iter()
        .find(|c| c.node.role == role)
        .ok_or_else(|| format!("no {role:?} in the plan"))
}

/// The application's side of a hand-over: record it in the trial's sink.
fn hand_to(sink: &mut Sink) -> impl FnMut(usize, &Release, &[u8]) + '_ {
    |i, rel, payload| {
        let at = sink.now();
        sink.deliver(i, payload, at, rel.late);
    }
}

/// One trial's feed and accounting, the same for both shapes: the pacer,
/// the messages being stamped, the deadline, and where CPU and wall time
/// started.
struct Feed {
    total: u64,
    msgs: Vec<Vec<u8>>,
    published: u64,
    pacer: Pacer,
    cpu0: f64,
    rq0: f64,
    wall0: Instant,
    deadline: Instant,
    deadline_ns: u64,
}

/// CPU, run-queue and wall seconds a trial took.
struct Spent {
    cpu_s: f64,
    run_queue_s: f64,
    wall_s: f64,
}

impl Feed {
    fn start(t: &Trial) -> Feed {
        let pacer = Pacer::start(t);
        let deadline = pacer.end() + t.slack;
        let (cpu0, rq0, wall0) = (cpu_seconds(), run_queue_seconds(), Instant::now());
        Feed {
            total: t.total(),
            msgs: vec![vec![0x41u8; t.size]; t.burst.max(1) as usize],
            published: 0,
            pacer,
            cpu0,
            rq0,
            wall0,
            deadline,
            deadline_ns: now_ns() + (deadline - Instant::now()).as_nanos() as u64,
        }
    }

    /// Publish every message the pacer says is due, in packets of at most
    /// the trial's burst (one message per publish in the latency trials, as
    /// Aeron's side offers them), stamping each as it goes; returns how
    /// many. All that is due goes out now: a loop that came round late
    /// catches up instead of falling further behind.
    fn publish_due(&mut self, publisher: &mut Publisher) -> Result<usize, String> {
        let mut done = 0;
        loop {
            let k = self.pacer.ready(self.published).min(self.msgs.len() as u64) as usize;
            if k == 0 {
                return Ok(done);
            }
            for (j, m) in self.msgs.iter_mut().take(k).enumerate() {
                stamp(m, self.published + j as u64, now_ns());
            }
            let r = if k == 1 {
                publisher.publish(&self.msgs[0]).map(|_| ())
            } else {
                let batch: Vec<&[u8]> = self.msgs[..k].iter().map(Vec::as_slice).collect();
                publisher.publish_batch(&batch).map(|_| ())
            };
            r.map_err(|e| format!("publish: {e}"))?;
            self.published += k as u64;
            done += k;
        }
    }

    /// Time spent since the start.
    fn spent(&self) -> Spent {
        Spent {
            cpu_s: cpu_seconds() - self.cpu0,
            run_queue_s: run_queue_seconds() - self.rq0,
            wall_s: self.wall0.elapsed().as_secs_f64(),
        }
    }

    /// The trial's outcome from what the receivers were handed.
    fn outcome(&self, sink: &Sink, spent: Spent, note: String) -> Outcome {
        let mut out = Outcome::from_sink(sink, self.published, self.total, self.deadline_ns);
        out.cpu_s = spent.cpu_s;
        out.run_queue_s = spent.run_queue_s;
        out.wall_s = spent.wall_s;
        out.note = note;
        out
    }
}
