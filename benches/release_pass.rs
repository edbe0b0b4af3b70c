//! What one hand-over costs when many logical receivers share a thread
//! ("fast on one box"): K receivers over the in-memory backend are fed the
//! same message, the loop waits until its deadline, then one
//! `jasper_receiver::release_due` pass hands it over at every receiver.
//!
//! Per pass it measures the pass's time divided by the messages handed
//! over (ns per hand-over) and the spread: from the first receiver's
//! hand-over to the last one's, read in the MP's callback. A pass with
//! nothing due yet (right after the receive) is timed too: what a loop
//! pays per receiver when it checks early.
//!
//! The machine is shared: each repetition takes the median over its
//! passes (a preempted pass is an outlier, not a shift), and the figures
//! printed are the median (and best) over the repetitions.
//!
//! Run: `cargo bench -p jasper-benches --bench release_pass`
//! (args: receivers K, passes per repetition, repetitions; default 16 4000 7).

use std::net::SocketAddr;
use std::time::Instant;

use jasper_core::clock::Clock;
use jasper_core::config::NodeConfig;
use jasper_core::sender::{SenderConfig, SenderCore};
use jasper_io::clock::NodeClock;
use jasper_io::mem::{MemBackend, MemHub};
use jasper_io::{host_now_ns, PacketIo};
use jasper_receiver::ReceiverNode;

/// Time from publish to deadline, ns: longer than a receive at every
/// receiver takes, so the message is held (not late) at each.
const OFFSET_NS: u64 = 100_000;

fn config(i: u32, me: SocketAddr, parent: SocketAddr) -> NodeConfig {
    let cfg = NodeConfig::leaf_receiver(&format!("mp{i}"), 10 + i, i, me, (1, parent));
    cfg.validate().unwrap();
    cfg
}

struct Setup {
    nodes: Vec<ReceiverNode>,
    addrs: Vec<SocketAddr>,
    up: MemBackend,
    sender: SenderCore,
    clock: NodeClock,
    _hub: MemHub,
}

impl Setup {
    fn new(k: usize) -> Setup {
        let parent: SocketAddr = "10.1.0.1:1".parse().unwrap();
        let hub = MemHub::new();
        let addrs: Vec<SocketAddr> = (0..k)
            .map(|i| {
                format!("10.2.{}.{}:1", i / 250, 1 + i % 250)
                    .parse()
                    .unwrap()
            })
            .collect();
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                ReceiverNode::with_io(
                    &config(i as u32, *a, parent),
                    Box::new(hub.attach(&[*a], 32)),
                )
                .unwrap()
            })
            .collect();
        let mut scfg = SenderConfig::default();
        scfg.deadline.initial_offset_ns = OFFSET_NS;
        scfg.deadline.floor_ns = 0;
        scfg.deadline.add_clock_bound = false;
        scfg.heartbeat_interval_ns = 0;
        Setup {
            nodes,
            addrs,
            up: hub.attach(&[parent], 1024),
            sender: SenderCore::new(scfg),
            clock: NodeClock::from_config(&Default::default()),
            _hub: hub,
        }
    }

    /// Publish one message to every receiver and receive it there.
    fn feed(&mut self) {
        self.sender
            .publish(self.clock.read(), &[0x41; 32])
            .expect("publish");
        while let Some(p) = self.sender.poll_transmit() {
            for a in &self.addrs {
                self.up.send_to(&p, *a);
            }
        }
        self.up.flush().unwrap();
        for n in &mut self.nodes {
            n.receive().unwrap();
        }
    }

    /// Reports and requests (untimed), and drop what reached the parent.
    fn housekeeping(&mut self) {
        for n in &mut self.nodes {
            n.housekeeping().unwrap();
        }
        while self.up.recv_burst().unwrap_or(0) > 0 {}
    }
}

/// One pass's figures.
#[derive(Default, Clone, Copy)]
struct Pass {
    /// ns per hand-over.
    per_handover: f64,
    /// First → last receiver's hand-over, ns.
    spread: f64,
    /// A pass with nothing due, ns per receiver.
    empty: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One repetition of `passes` passes: the median of each figure.
fn repetition(s: &mut Setup, passes: usize, skipped: &mut usize) -> Pass {
    let k = s.nodes.len();
    let mut per = Vec::with_capacity(passes);
    let mut spread = Vec::with_capacity(passes);
    let mut empty = Vec::with_capacity(passes);
    for _ in 0..passes {
        s.feed();
        // Nothing is due yet: what an early check costs.
        let t = Instant::now();
        let none = jasper_receiver::release_due(&mut s.nodes, &mut |_, _, _| {});
        empty.push(t.elapsed().as_nanos() as f64 / k as f64);
        if none > 0 {
            // The receive took longer than the offset (a preemption, the
            // first packet): that message went out late; not timed.
            *skipped += 1;
            jasper_receiver::release_due(&mut s.nodes, &mut |_, _, _| {});
            s.housekeeping();
            continue;
        }
        let due = s
            .nodes
            .iter()
            .filter_map(|n| n.next_release_host_ns())
            .max()
            .expect("held");
        while host_now_ns() < due {
            std::hint::spin_loop();
        }
        let (mut first, mut last) = (None, None);
        let t = Instant::now();
        let n = jasper_receiver::release_due(&mut s.nodes, &mut |i, _, _| {
            if i == 0 {
                first = Some(Instant::now());
            } else if i == k - 1 {
                last = Some(Instant::now());
            }
        });
        let took = t.elapsed();
        assert_eq!(n, k, "one hand-over per receiver");
        per.push(took.as_nanos() as f64 / n as f64);
        if let (Some(a), Some(b)) = (first, last) {
            spread.push(b.duration_since(a).as_nanos() as f64);
        }
        s.housekeeping();
    }
    for v in [&mut per, &mut spread] {
        if v.is_empty() {
            v.push(f64::NAN);
        }
    }
    Pass {
        per_handover: median(&mut per),
        spread: median(&mut spread),
        empty: median(&mut empty),
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let k = args.first().copied().unwrap_or(16).max(1);
    let passes = args.get(1).copied().unwrap_or(4000).max(1);
    let reps = args.get(2).copied().unwrap_or(7).max(1);
    let mut s = Setup::new(k);
    // Warm up: caches, allocations, the receivers' first packet.
    repetition(&mut s, passes.min(500), &mut 0);
    let mut skipped = 0;
    let runs: Vec<Pass> = (0..reps)
        .map(|_| repetition(&mut s, passes, &mut skipped))
        .collect();
    let fig = |f: fn(&Pass) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        let best = v.iter().copied().fold(f64::MAX, f64::min);
        (median(&mut v), best)
    };
    let (per, per_best) = fig(|p| p.per_handover);
    let (spread, spread_best) = fig(|p| p.spread);
    let (empty, empty_best) = fig(|p| p.empty);
    println!(
        "K = {k} receivers, {passes} passes x {reps} repetitions (median of per-repetition medians; best)"
    );
    println!("ns per hand-over          {per:>9.1}  (best {per_best:.1})");
    println!("spread first->last, ns    {spread:>9.1}  (best {spread_best:.1})");
    println!("nothing due, ns/receiver  {empty:>9.1}  (best {empty_best:.1})");
    println!("passes not timed (the message arrived late somewhere): {skipped}");
}
