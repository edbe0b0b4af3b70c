//! # jasper-sim
//!
//! A deterministic discrete-event simulator that runs the real `jasper-core`
//! sender, proxy and receiver state machines — not a re-implementation —
//! over simulated links, hosts and clocks, so designs can be compared at
//! paper scale (1000–10,000 receivers) on the same work and any run
//! reproduced from its seed.
//!
//! - **Time** is virtual: events are keyed by (time, sequence) and time jumps
//!   to the next one; nothing sleeps or reads the host clock.
//! - **Links and hosts** follow [`CloudModel`] (per-hop base + jitter, slow
//!   episodes, loss, duplication, reordering); each host serializes its
//!   per-copy send cost, proxies add their processing cost.
//! - **Clocks**: each node has a fixed offset (drawn from its class), drift,
//!   read noise and optional steps; the error stays within the class bound.
//! - **Faults** ([`Faults`]): stalled proxies (a stretch of messages delayed at
//!   chosen proxies) and crashed proxies, on top of the model's link faults.
//! - **Invariants** ([`Checker`]) are checked on every release: exactly once,
//!   in deadline order, never before the deadline on the receiver's clock;
//!   at the end, the true-time spread of messages no receiver got late is
//!   within the clock bounds, and every missing message was detected by its
//!   receiver.
//!
//! Schemes ([`Scheme`]): direct unicast, CloudEx-style, Jasper-v1-style, ours.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::Instant;

use jasper_core::deadline::{DeadlinePolicy, EstimatorConfig, StepTuner};
use jasper_core::metrics::{Collector, Delivery, FairnessReport, ReportOptions};
use jasper_core::model::{rng, CloudModel, LinkFate, LinkState, SimRng};
use jasper_core::plan::{
    loopback_inventory, proxies_needed, Fanout, NodeId, Plan, Role, TreeSpec, SENDER,
};
use jasper_core::proxy::{ProxyConfig, ProxyCore, Verdict};
use jasper_core::receiver::{Receiver, ReceiverConfig, Release};
use jasper_core::sender::{SenderConfig, SenderCore};
use jasper_core::wire::{emit_report, Header, Kind};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub mod model_file;

/// The schemes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Direct unicast from the sender to every receiver, handed over on arrival.
    Direct,
    /// Direct unicast + hold-and-release with an offset moved by ±5 µs steps
    /// toward a 1% late ratio (CloudEx).
    Cloudex,
    /// Tree (fanout 10, depth round(log10 N)), sibling hedging H=2, deadline =
    /// p97 of a 10 ms window + 25 µs (Jasper v1).
    JasperV1,
    /// Ours: the Jasper-v1 tree with round-robin spraying, deadline = p99 of a
    /// 10 ms window + 25 µs + the clock bound.
    Ours,
}

impl Scheme {
    /// All schemes, in table order.
    pub const ALL: [Scheme; 4] = [
        Scheme::Direct,
        Scheme::Cloudex,
        Scheme::JasperV1,
        Scheme::Ours,
    ];
    /// Name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Direct => "direct",
            Scheme::Cloudex => "cloudex",
            Scheme::JasperV1 => "jasper-v1",
            Scheme::Ours => "ours",
        }
    }
    /// Parse a name.
    pub fn parse(s: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|x| x.name() == s)
    }
    fn uses_tree(self) -> bool {
        matches!(self, Scheme::JasperV1 | Scheme::Ours)
    }
    fn holds(self) -> bool {
        self != Scheme::Direct
    }
}

/// Proxy stall: proxies at these plan positions (index among all proxies,
/// root = 0) delay messages `from_msg..to_msg` by `stall_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Proxy positions.
    pub proxies: Vec<usize>,
    /// First message affected.
    pub from_msg: u64,
    /// One past the last message affected.
    pub to_msg: u64,
    /// Added delay.
    pub stall_ns: u64,
}

/// Faults beyond the model's link faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Stalled proxies.
    pub stalls: Vec<Stall>,
    /// (proxy position, time since start in ns): the proxy drops everything from then on.
    pub crashes: Vec<(usize, u64)>,
    /// (node id, time since start, step ns): the node's clock offset jumps
    /// (kept within its bound).
    pub clock_steps: Vec<(NodeId, u64, i64)>,
}

/// One simulation's parameters.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Receivers (MPs).
    pub receivers: usize,
    /// Messages published.
    pub messages: u64,
    /// Messages per second.
    pub rate: f64,
    /// Seed: every random draw derives from it.
    pub seed: u64,
    /// Tree shape overrides (default: the scheme's).
    pub depth: Option<u32>,
    /// Fanout override.
    pub fanout: Option<u32>,
    /// H override.
    pub hedge: Option<u32>,
    /// Spraying override.
    pub spray: Option<bool>,
    /// The cloud.
    pub model: CloudModel,
    /// Extra faults.
    pub faults: Faults,
    /// The headline P(F) threshold: DWS within this is fair, ns.
    pub fair_threshold_ns: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            receivers: 1000,
            messages: 1000,
            rate: 5000.0,
            seed: 1,
            depth: None,
            fanout: None,
            hedge: None,
            spray: None,
            model: CloudModel::default(),
            faults: Faults::default(),
            fair_threshold_ns: jasper_core::metrics::DEFAULT_FAIR_THRESHOLD_NS,
        }
    }
}

/// What one scheme's run produced.
#[derive(Debug)]
pub struct SchemeResult {
    /// Scheme.
    pub scheme: Scheme,
    /// The paper's metrics.
    pub report: FairnessReport,
    /// Deliveries for plots.
    pub collector: Collector,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// Invariant violations (empty = all held).
    pub violations: Vec<String>,
    /// Human-readable configuration.
    pub description: String,
    /// Receivers that never learned the end of the session.
    pub no_end_of_session: u64,
    /// The busiest host's send load: time spent sending copies / the
    /// publishing period. At 1 or more the host cannot keep up with the
    /// feed: its latency grows with the run length (saturated), so it is
    /// not a latency of the scheme.
    pub max_host_load: f64,
}

impl SchemeResult {
    /// Whether some host could not keep up with the feed.
    pub fn saturated(&self) -> bool {
        self.max_host_load >= 1.0
    }
}

impl SchemeResult {
    /// Simulated events per wall-clock second.
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.wall_s.max(1e-9)
    }
}

#[derive(Debug, Clone, Copy)]
struct SimClock {
    offset: i64,
    drift_ppb: f64,
    noise_ns: f64,
    bound: u64,
}

enum Node {
    Sender(Box<SenderCore>),
    Proxy(Box<ProxyCore>),
    Receiver(Box<Receiver>),
}

enum Ev {
    Deliver {
        to: NodeId,
        from: NodeId,
        pkt: Rc<[u8]>,
    },
    Publish,
    Wake(NodeId),
    Tune,
    ClockStep(NodeId, i64),
}

/// Invariants checked beside the nodes.
#[derive(Debug, Default)]
pub struct Checker {
    violations: Vec<String>,
    last_key: Vec<Option<(u64, u64)>>,
    msg_late: Vec<u32>,
    bound: u64,
}

impl Checker {
    fn fail(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }
    fn on_release(&mut self, r: usize, rel: &Release, hold: bool) {
        if rel.seq as usize >= self.msg_late.len() {
            self.fail(format!(
                "receiver {r} released unknown sequence {}",
                rel.seq
            ));
            return;
        }
        if rel.late {
            self.msg_late[rel.seq as usize] += 1;
            return;
        }
        if hold && !rel.early && rel.release_ns < rel.deadline_ns {
            self.fail(format!(
                "receiver {r} released seq {} at {} before its deadline {} (local clock)",
                rel.seq, rel.release_ns, rel.deadline_ns
            ));
        }
        let key = (rel.deadline_ns, rel.seq);
        if hold {
            if let Some(last) = self.last_key[r] {
                if key < last {
                    self.fail(format!(
                        "receiver {r} released seq {} out of deadline order (after {:?})",
                        rel.seq, last
                    ));
                }
            }
            self.last_key[r] = Some(key);
        }
    }
}

struct Sim {
    scheme: Scheme,
    params: SimParams,
    plan: Plan,
    now: u64,
    start: u64,
    /// Pending events: `time << 64 | sequence << 24 | slot` (one integer
    /// compare per heap step; sequence < 2^40, slot < 2^24).
    heap: BinaryHeap<Reverse<u128>>,
    evs: Vec<Option<Ev>>,
    free: Vec<u32>,
    ctr: u64,
    events: u64,
    nodes: Vec<Node>,
    clocks: Vec<SimClock>,
    busy: Vec<u64>,
    /// Per host: total time spent sending copies, ns.
    busy_total: Vec<u64>,
    links: HashMap<u64, LinkState, BuildHasherDefault<LinkHasher>>,
    armed: Vec<Option<u64>>,
    rng: SimRng,
    published: u64,
    receiver_index: Vec<u32>,
    proxy_pos: Vec<Option<usize>>,
    crashed_at: Vec<Option<u64>>,
    collector: Collector,
    checker: Checker,
    tuner: Option<StepTuner>,
    end_ns: u64,
    /// Per receiver: 0 running, 1 saw the end of session, 2 drained (counted).
    finished: Vec<u8>,
    finished_count: usize,
}

const REPORT_LEN: usize = 96;

/// Hasher for link keys (`from << 32 | to`): one multiply, no DoS concern
/// in a simulator.
#[derive(Default)]
struct LinkHasher(u64);

impl Hasher for LinkHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

fn tree_spec(scheme: Scheme, p: &SimParams) -> TreeSpec {
    let base = match scheme {
        Scheme::JasperV1 => TreeSpec {
            depth: None,
            fanout: None,
            hedge: 2,
            spray: false,
        },
        Scheme::Ours => TreeSpec {
            depth: None,
            fanout: None,
            hedge: 2,
            spray: true,
        },
        Scheme::Direct | Scheme::Cloudex => TreeSpec::default(),
    };
    let mut s = TreeSpec {
        depth: p.depth.or(base.depth),
        fanout: p.fanout.or(base.fanout),
        hedge: p.hedge.unwrap_or(base.hedge),
        spray: p.spray.unwrap_or(base.spray),
    };
    if s.depth.is_none() && s.fanout.is_none() {
        // The paper's rule of thumb: fanout 10, depth round(log10 N).
        // Hedging needs siblings below the root: at least two levels.
        let min_depth = if s.hedge > 0 { 2 } else { 1 };
        let d = ((p.receivers as f64).log10().round() as u32).max(min_depth);
        s.depth = Some(d);
        s.fanout = Some(((p.receivers as f64).powf(1.0 / d as f64).ceil() as u32).max(2));
    }
    s
}

impl Sim {
    fn new(scheme: Scheme, params: SimParams) -> Result<Sim, String> {
        let spec = if scheme.uses_tree() {
            tree_spec(scheme, &params)
        } else {
            TreeSpec {
                depth: Some(1),
                fanout: Some(params.receivers.max(1) as u32),
                hedge: 0,
                spray: false,
            }
        };
        let proxies = proxies_needed(params.receivers, false, &spec);
        let inv = loopback_inventory(proxies, params.receivers, false, 1);
        let mut plan = Plan::build(&inv, &spec).map_err(|e| e.to_string())?;
        if !scheme.uses_tree() {
            // Direct unicast: the sender feeds every receiver; no proxies.
            let eps: Vec<NodeId> = plan.endpoints().collect();
            plan.tables[SENDER as usize].fanout = Fanout::Direct {
                children: eps.clone(),
            };
            plan.tables[SENDER as usize].report_children = eps.clone();
            for e in eps {
                plan.tables[e as usize].parent = Some(SENDER);
            }
        }
        let mut r = rng(params.seed);
        let n = plan.nodes.len();
        let clock_model = &params.model.clock;
        let clocks = (0..n)
            .map(|_| SimClock {
                offset: clock_model.draw_offset(&mut r),
                drift_ppb: clock_model.draw_drift(&mut r),
                noise_ns: clock_model.noise_ns,
                bound: clock_model.bound_ns(),
            })
            .collect();
        let bound = clock_model.bound_ns();
        let sender_cfg = SenderConfig {
            // Direct unicast pays N copies per heartbeat: heartbeat rarely.
            heartbeat_interval_ns: if scheme.uses_tree() {
                1_000_000
            } else {
                100_000_000
            },
            deadline: match scheme {
                Scheme::Direct => DeadlinePolicy::default(),
                Scheme::Cloudex => fixed_offset(100_000),
                Scheme::JasperV1 => DeadlinePolicy {
                    initial_offset_ns: 500_000,
                    margin_ns: 25_000,
                    add_clock_bound: false,
                    floor_ns: 0,
                    ceiling_ns: 5_000_000,
                },
                Scheme::Ours => DeadlinePolicy {
                    initial_offset_ns: 500_000,
                    margin_ns: 25_000,
                    add_clock_bound: true,
                    floor_ns: 0,
                    ceiling_ns: 5_000_000,
                },
            },
            ..SenderConfig::default()
        };
        let recv_cfg = ReceiverConfig {
            dedup_window: 4096,
            max_held: 1 << 20,
            hold: scheme.holds(),
            estimator: EstimatorConfig {
                percentile: if scheme == Scheme::Ours { 99.0 } else { 97.0 },
                ..EstimatorConfig::default()
            },
            ..ReceiverConfig::default()
        };
        let mut receiver_index = vec![u32::MAX; n];
        let mut proxy_pos = vec![None; n];
        for (i, p) in plan.proxies().enumerate() {
            proxy_pos[p as usize] = Some(i);
        }
        let nodes = plan
            .nodes
            .iter()
            .map(|node| match node.role {
                Role::Sender => Node::Sender(Box::new(SenderCore::new(sender_cfg))),
                Role::Proxy { .. } => Node::Proxy(Box::new(ProxyCore::new(
                    plan.tables[node.id as usize].clone(),
                    ProxyConfig::default(),
                ))),
                Role::Receiver { mp, .. } => {
                    receiver_index[node.id as usize] = mp;
                    Node::Receiver(Box::new(Receiver::new(node.id, recv_cfg)))
                }
            })
            .collect();
        let mut crashed_at = vec![None; n];
        let start = 1_700_000_000_000_000_000u64;
        for (pos, at) in &params.faults.crashes {
            if let Some(p) = plan.proxies().nth(*pos) {
                crashed_at[p as usize] = Some(start + at);
            }
        }
        let messages = params.messages;
        let receivers = params.receivers;
        // Runs until every receiver has the end of session and drained, or
        // 10 s (simulated) after the last publish.
        let end_ns = start + (messages as f64 / params.rate * 1e9) as u64 + 10_000_000_000;
        Ok(Sim {
            scheme,
            plan,
            now: start,
            start,
            heap: BinaryHeap::new(),
            evs: Vec::new(),
            free: Vec::new(),
            ctr: 0,
            events: 0,
            nodes,
            clocks,
            busy: vec![0; n],
            busy_total: vec![0; n],
            links: HashMap::default(),
            armed: vec![None; n],
            rng: r,
            published: 0,
            receiver_index,
            proxy_pos,
            crashed_at,
            collector: Collector::new(receivers, messages as usize),
            checker: Checker {
                violations: Vec::new(),
                last_key: vec![None; receivers],
                msg_late: vec![0; messages as usize],
                bound,
            },
            tuner: (scheme == Scheme::Cloudex).then(|| StepTuner::new(100_000, 5_000, 0.01)),
            params,
            end_ns,
            finished: vec![0; n],
            finished_count: 0,
        })
    }

    /// Node `id`'s clock at true time `t` (error kept within its bound).
    fn local(&mut self, id: NodeId, t: u64) -> u64 {
        let c = self.clocks[id as usize];
        let mut err = c.offset as f64 + (t - self.start) as f64 * c.drift_ppb / 1e9;
        if c.noise_ns > 0.0 {
            let z: f64 = self.rng.sample(rand_distr::StandardNormal);
            err += z * c.noise_ns;
        }
        let b = c.bound as f64;
        (t as i64 + err.clamp(-b, b).round() as i64) as u64
    }

    /// True time at which node `id`'s clock reads `local` (noise ignored).
    fn true_time_of(&self, id: NodeId, local: u64) -> u64 {
        let c = self.clocks[id as usize];
        let approx = local as i64 - c.offset;
        let drift = (approx.max(self.start as i64) as u64 - self.start) as f64 * c.drift_ppb / 1e9;
        let b = c.bound as f64;
        let err = (c.offset as f64 + drift).clamp(-b, b);
        ((local as i64 - err.round() as i64) as u64).max(self.now)
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.ctr += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.evs[s as usize] = Some(ev);
                s
            }
            None => {
                self.evs.push(Some(ev));
                (self.evs.len() - 1) as u32
            }
        };
        debug_assert!(slot < 1 << 24 && self.ctr < 1 << 40);
        self.heap.push(Reverse(
            (t as u128) << 64 | (self.ctr as u128) << 24 | slot as u128,
        ));
    }

    fn wake_at(&mut self, id: NodeId, t: u64) {
        // Strictly after now: the inverse clock mapping (drift, noise,
        // rounding) may land a hair early; waking again 1 ns later always
        // makes progress instead of re-arming at the same instant.
        let t = t.max(self.now + 1);
        if self.armed[id as usize].is_none_or(|a| t < a) {
            self.armed[id as usize] = Some(t);
            self.at(t, Ev::Wake(id));
        }
    }

    /// Send `pkt` from `from` to every destination, serializing the per-copy
    /// cost on `from`'s host starting no earlier than `ready`.
    fn transmit(&mut self, from: NodeId, ready: u64, pkt: Rc<[u8]>, dsts: &[NodeId]) {
        let mut t = ready.max(self.busy[from as usize]);
        for &to in dsts {
            let cost = self.params.model.copy_cost_ns.sample(&mut self.rng);
            t += cost;
            self.busy_total[from as usize] += cost;
            let link = self
                .links
                .entry((from as u64) << 32 | to as u64)
                .or_default();
            let fate = link.transmit(&self.params.model, t, &mut self.rng);
            if let LinkFate::Delivered {
                delay_ns,
                duplicate_ns,
            } = fate
            {
                self.at(
                    t + delay_ns,
                    Ev::Deliver {
                        to,
                        from,
                        pkt: pkt.clone(),
                    },
                );
                if let Some(d) = duplicate_ns {
                    self.at(
                        t + d,
                        Ev::Deliver {
                            to,
                            from,
                            pkt: pkt.clone(),
                        },
                    );
                }
            }
        }
        self.busy[from as usize] = t;
    }

    fn send_report(&mut self, from: NodeId, to: NodeId, rep: jasper_core::wire::DelayReport) {
        let mut buf = [0u8; REPORT_LEN];
        let mut h = Header::new(Kind::DelayReport);
        h.send_time_ns = self.now;
        if let Ok(n) = emit_report(&h, &rep, &mut buf) {
            self.transmit(from, self.now, Rc::from(&buf[..n]), &[to]);
        }
    }

    fn sender_flush(&mut self) {
        let Node::Sender(s) = &mut self.nodes[SENDER as usize] else {
            return;
        };
        let mut out = Vec::new();
        while let Some(p) = s.poll_transmit() {
            out.push(p);
        }
        let timeout = s.poll_timeout();
        let mut dsts = Vec::new();
        self.plan.tables[SENDER as usize]
            .fanout
            .for_each(0, |c, _| dsts.push(c));
        for p in out {
            let pkt: Rc<[u8]> = Rc::from(p.as_slice());
            self.transmit(SENDER, self.now, pkt, &dsts);
        }
        if let Some(t) = timeout {
            let tt = self.true_time_of(SENDER, t);
            self.wake_at(SENDER, tt);
        }
    }

    fn run(&mut self) {
        self.at(self.now, Ev::Publish);
        for (node, at, step) in self.params.faults.clock_steps.clone() {
            self.at(self.start + at, Ev::ClockStep(node, step));
        }
        if self.tuner.is_some() {
            self.at(self.now + 1_000_000, Ev::Tune);
        }
        while let Some(Reverse(key)) = self.heap.pop() {
            let (t, slot) = ((key >> 64) as u64, (key & 0xFF_FFFF) as u32);
            if t > self.end_ns {
                break;
            }
            self.now = t;
            self.events += 1;
            let Some(ev) = self.evs[slot as usize].take() else {
                continue;
            };
            self.free.push(slot);
            match ev {
                Ev::Publish => self.publish(),
                Ev::Deliver { to, from, pkt } => self.deliver(to, from, pkt),
                Ev::Wake(id) => {
                    if self.armed[id as usize] == Some(t) {
                        self.armed[id as usize] = None;
                        self.wake(id);
                    }
                }
                Ev::ClockStep(node, step) => {
                    // The offset jumps; the clock keeps its promise (bound).
                    if let Some(c) = self.clocks.get_mut(node as usize) {
                        let b = c.bound as i64;
                        c.offset = (c.offset + step).clamp(-b, b);
                    }
                }
                Ev::Tune => {
                    if let Some(tuner) = &mut self.tuner {
                        tuner.adjust();
                        let off = tuner.offset_ns;
                        if let Node::Sender(s) = &mut self.nodes[SENDER as usize] {
                            s.set_deadline_policy(fixed_offset(off));
                        }
                        self.at(self.now + 1_000_000, Ev::Tune);
                    }
                }
            }
        }
    }

    fn publish(&mut self) {
        let now = self.local(SENDER, self.now);
        let reading = jasper_core::clock::Reading {
            now_ns: now,
            error_bound_ns: self.clocks[SENDER as usize].bound,
            status: jasper_core::clock::ClockStatus::Synchronized,
        };
        let seq = self.published;
        let Node::Sender(s) = &mut self.nodes[SENDER as usize] else {
            return;
        };
        let _ = s.publish(reading, &seq.to_be_bytes());
        self.published += 1;
        if self.published == self.params.messages {
            s.end_session(reading);
        } else {
            let next = self.start + (self.published as f64 / self.params.rate * 1e9) as u64;
            self.at(next, Ev::Publish);
        }
        self.sender_flush();
    }

    fn deliver(&mut self, to: NodeId, _from: NodeId, pkt: Rc<[u8]>) {
        let local = self.local(to, self.now);
        match &mut self.nodes[to as usize] {
            Node::Sender(s) => {
                let _ = s.handle_packet(&pkt);
            }
            Node::Proxy(p) => {
                if self.crashed_at[to as usize].is_some_and(|c| self.now >= c) {
                    return;
                }
                let mut buf = pkt.to_vec();
                let verdict = p.handle_packet(local, &mut buf);
                let timeout = p.poll_timeout();
                if let Verdict::Forward { key } = verdict {
                    let mut dsts = Vec::new();
                    p.for_each_destination(key, |d, _| dsts.push(d));
                    let mut ready =
                        self.now + self.params.model.proxy_processing_ns.sample(&mut self.rng);
                    if let Some(pos) = self.proxy_pos[to as usize] {
                        for st in &self.params.faults.stalls {
                            if st.proxies.contains(&pos) && (st.from_msg..st.to_msg).contains(&key)
                            {
                                ready += st.stall_ns;
                            }
                        }
                    }
                    self.transmit(to, ready, Rc::from(buf), &dsts);
                }
                if let Some(t) = timeout {
                    let tt = self.true_time_of(to, t);
                    self.wake_at(to, tt);
                }
            }
            Node::Receiver(r) => {
                let accepted = r.stats().accepted;
                r.handle_packet(local, self.clocks[to as usize].bound, &pkt);
                // A data copy that added nothing (a hedged duplicate) changes
                // no timer: skip the wake-up (most deliveries at H = 2).
                let is_data = pkt.get(5) == Some(&(jasper_core::wire::Kind::Data as u8));
                if !is_data || r.stats().accepted != accepted {
                    self.wake(to);
                }
            }
        }
    }

    fn wake(&mut self, id: NodeId) {
        let local = self.local(id, self.now);
        match &mut self.nodes[id as usize] {
            Node::Sender(s) => {
                let reading = jasper_core::clock::Reading {
                    now_ns: local,
                    error_bound_ns: self.clocks[id as usize].bound,
                    status: jasper_core::clock::ClockStatus::Synchronized,
                };
                s.handle_timeout(reading);
                self.sender_flush();
            }
            Node::Proxy(p) => {
                if self.crashed_at[id as usize].is_some_and(|c| self.now >= c) {
                    return;
                }
                let report = p.poll_report(local);
                let timeout = p.poll_timeout();
                if let Some((parent, rep)) = report {
                    self.send_report(id, parent, rep);
                }
                if let Some(t) = timeout {
                    let tt = self.true_time_of(id, t);
                    self.wake_at(id, tt);
                }
            }
            Node::Receiver(r) => {
                let ri = self.receiver_index[id as usize] as usize;
                let hold = self.scheme.holds();
                let (collector, checker, tuner, now) = (
                    &mut self.collector,
                    &mut self.checker,
                    &mut self.tuner,
                    self.now,
                );
                r.poll_release(local, |rel, _payload| {
                    checker.on_release(ri, rel, hold);
                    if let Some(t) = tuner.as_mut() {
                        t.observe(rel.late);
                    }
                    collector.add(Delivery {
                        receiver: ri as u32,
                        msg: rel.seq,
                        owd_ns: rel.owd_ns(),
                        handover_ns: rel.release_ns as i64 - rel.send_time_ns as i64,
                        handed_true_ns: now,
                        holding_ns: rel.holding_ns(),
                        late: rel.late,
                    });
                });
                let state = &mut self.finished[id as usize];
                while let Some(e) = r.poll_event() {
                    if matches!(e, jasper_core::receiver::Event::EndOfSession { .. }) && *state == 0
                    {
                        *state = 1;
                    }
                }
                if *state == 1 && r.held() == 0 {
                    *state = 2;
                    self.finished_count += 1;
                    if self.finished_count == self.params.receivers {
                        // Everyone has the end of session: data that the
                        // end-of-session notice overtook is still in flight;
                        // give it 50 ms, then stop.
                        self.end_ns = self.end_ns.min(self.now + 50_000_000);
                    }
                }
                let report = r.poll_report(local);
                let next = r.poll_timeout();
                if let (Some(rep), Some(parent)) = (report, self.plan.tables[id as usize].parent) {
                    self.send_report(id, parent, rep);
                }
                if let Some(t) = next {
                    let tt = self.true_time_of(id, t);
                    self.wake_at(id, tt);
                }
            }
        }
    }

    fn finish(mut self, wall: Instant) -> SchemeResult {
        let messages = self.params.messages;
        let report = self.collector.report_with(
            messages,
            ReportOptions {
                fair_threshold_ns: self.params.fair_threshold_ns,
                ..ReportOptions::with_bound(self.checker.bound)
            },
        );
        // Exactly once.
        for (r, t) in report.per_receiver.iter().enumerate() {
            if t.duplicates > 0 {
                self.checker.fail(format!(
                    "receiver {r} was handed {} messages twice",
                    t.duplicates
                ));
            }
        }
        // Spread within the clock bounds when no copy was late (hold schemes).
        if self.scheme.holds() {
            let limit = 2 * self.checker.bound + (8.0 * self.params.model.clock.noise_ns) as u64;
            let bad = self
                .checker
                .msg_late
                .iter()
                .enumerate()
                .filter(|(_, late)| **late == 0)
                .find_map(|(m, _)| {
                    self.collector
                        .dws_at(m as u64)
                        .filter(|w| *w > limit)
                        .map(|w| (m, w))
                });
            if let Some((m, w)) = bad {
                self.checker.fail(format!(
                    "message {m}: no copy was late yet the release spread is {w} ns > {limit} ns"
                ));
            }
        }
        // Every missing message was detected by its receiver (when it learned
        // where the session ended).
        let mut no_eos = 0;
        let mut mismatch = None;
        for node in &self.nodes {
            if let Node::Receiver(r) = node {
                let st = r.stats();
                if r.next_expected(1) != Some(messages) {
                    no_eos += 1;
                    continue;
                }
                let missing = messages.saturating_sub(st.released);
                let detected = st.gaps_detected.saturating_sub(st.gaps_filled);
                if missing != detected && mismatch.is_none() {
                    mismatch = Some(format!(
                        "a receiver misses {missing} messages but detected {detected} as missing"
                    ));
                }
            }
        }
        if let Some(m) = mismatch {
            self.checker.fail(m);
        }
        let spec = if self.scheme.uses_tree() {
            format!(
                "tree depth {} fanout {} hedge {} spray {}",
                self.plan.depth, self.plan.fanout, self.plan.hedge, self.plan.spray
            )
        } else {
            "direct unicast".into()
        };
        SchemeResult {
            scheme: self.scheme,
            description: format!(
                "{}: {spec}, {} receivers, {} messages at {} msg/s, seed {}",
                self.scheme.name(),
                self.params.receivers,
                messages,
                self.params.rate,
                self.params.seed
            ),
            report,
            collector: self.collector,
            events: self.events,
            wall_s: wall.elapsed().as_secs_f64(),
            violations: self.checker.violations,
            no_end_of_session: no_eos,
            max_host_load: {
                let period = (messages as f64 / self.params.rate * 1e9).max(1.0);
                self.busy_total.iter().copied().max().unwrap_or(0) as f64 / period
            },
        }
    }
}

fn fixed_offset(off: u64) -> DeadlinePolicy {
    DeadlinePolicy {
        initial_offset_ns: off,
        margin_ns: 0,
        add_clock_bound: false,
        floor_ns: off,
        ceiling_ns: off,
    }
}

/// Run one scheme. Errors are shape problems (the plan's message).
pub fn run(scheme: Scheme, params: &SimParams) -> Result<SchemeResult, String> {
    let wall = Instant::now();
    let mut sim = Sim::new(scheme, params.clone())?;
    sim.run();
    Ok(sim.finish(wall))
}

/// Draw a random fault scenario from `seed` (for swarm testing).
pub fn random_scenario(seed: u64) -> SimParams {
    let mut r = rng(seed ^ 0x5EED_5EED);
    let receivers = r.random_range(4..=120);
    let messages = r.random_range(50..=300);
    let mut model = CloudModel {
        loss: [0.0, 1e-4, 1e-3, 1e-2][r.random_range(0..4)],
        duplicate: [0.0, 1e-3, 1e-2][r.random_range(0..3)],
        reorder: [0.0, 1e-2, 5e-2][r.random_range(0..3)],
        slow_rate_per_s: [0.0, 0.1, 20.0][r.random_range(0..3)],
        ..CloudModel::default()
    };
    model.clock.class = [
        jasper_core::clock::ClockClass::Huygens,
        jasper_core::clock::ClockClass::Ptp,
        jasper_core::clock::ClockClass::Ntp,
    ][r.random_range(0..3)];
    model.clock.drift_ppb = [0.0, 100.0][r.random_range(0..2)];
    let mut faults = Faults::default();
    if r.random_bool(0.3) {
        faults.stalls.push(Stall {
            proxies: vec![r.random_range(0..3)],
            from_msg: r.random_range(0..messages),
            to_msg: messages,
            stall_ns: 300_000,
        });
    }
    if r.random_bool(0.2) {
        faults
            .crashes
            .push((r.random_range(1..4), r.random_range(0..20_000_000)));
    }
    if r.random_bool(0.3) {
        // A node's clock steps by up to its bound mid-run.
        let node = r.random_range(1..(receivers as u32 + 4));
        let b = model.clock.bound_ns() as i64;
        faults
            .clock_steps
            .push((node, r.random_range(0..20_000_000), r.random_range(-b..=b)));
    }
    // Level 2 has ceil(R / F) ≈ √R proxies; H must leave room for siblings.
    let fanout = ((receivers as f64).sqrt().ceil() as u32).max(2);
    let level2 = (receivers as u32).div_ceil(fanout);
    let hedge = r.random_range(0..=2).min(level2.saturating_sub(1));
    SimParams {
        receivers,
        messages,
        rate: [2000.0, 5000.0, 20000.0][r.random_range(0..3)],
        seed,
        depth: Some(2),
        fanout: Some(fanout),
        hedge: Some(hedge),
        spray: Some(r.random_bool(0.5)),
        model,
        faults,
        fair_threshold_ns: jasper_core::metrics::DEFAULT_FAIR_THRESHOLD_NS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(receivers: usize) -> SimParams {
        SimParams {
            receivers,
            messages: 200,
            ..SimParams::default()
        }
    }

    #[test]
    fn all_schemes_run_clean_at_small_scale() {
        for s in Scheme::ALL {
            let r = run(s, &small(100)).unwrap();
            assert!(r.violations.is_empty(), "{:?}: {:?}", s, r.violations);
            assert_eq!(r.report.messages_published, 200);
            assert!(
                r.report.missing_total <= 2 * 100,
                "{s:?}: {}",
                r.report.missing_total
            );
        }
    }

    #[test]
    fn same_seed_same_result() {
        let a = run(Scheme::Ours, &small(50)).unwrap();
        let b = run(Scheme::Ours, &small(50)).unwrap();
        assert_eq!(a.report, b.report);
        assert_eq!(a.events, b.events);
        let c = run(
            Scheme::Ours,
            &SimParams {
                seed: 2,
                ..small(50)
            },
        )
        .unwrap();
        assert_ne!(a.report, c.report);
    }

    #[test]
    fn fanout_one_without_depth_is_an_error_not_a_hang() {
        let p = SimParams {
            fanout: Some(1),
            ..small(100)
        };
        for s in [Scheme::JasperV1, Scheme::Ours] {
            let e = run(s, &p).unwrap_err();
            assert!(e.contains("fanout 1") && e.contains("at least 2"), "{e}");
        }
    }

    #[test]
    fn zero_cost_model_is_exact() {
        // No delay, no jitter, no costs, perfect clocks: every receiver gets
        // every message at once, DWS is 0 and nothing is late.
        let p = SimParams {
            model: CloudModel::zero(),
            ..small(20)
        };
        let r = run(Scheme::JasperV1, &p).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.report.missing_total, 0);
        assert_eq!(r.report.dws_ns_max, 0);
        assert_eq!(r.report.late_fraction, 0.0);
        assert_eq!(r.report.oml_ns_p99, 0);
    }

    #[test]
    fn direct_unicast_last_receiver_waits_for_all_copies() {
        // Constant 20 µs links, 2.5 µs per copy: receiver k gets it after
        // 20 + 2.5(k+1) µs (1000 msg/s, so the sender never queues).
        let mut m = CloudModel::zero();
        m.base_ns = jasper_core::model::Dist::Constant { ns: 20_000.0 };
        m.copy_cost_ns = jasper_core::model::Dist::Constant { ns: 2_500.0 };
        let p = SimParams {
            model: m,
            rate: 1000.0,
            ..small(100)
        };
        let r = run(Scheme::Direct, &p).unwrap();
        let oml = r.report.oml_ns.max;
        assert!((269_000..=271_000).contains(&oml), "{oml}");
        let dws = r.report.dws_ns.max;
        assert!((247_000..=248_000).contains(&dws), "{dws}");
    }
}
