//! The event engine: virtual time, the real `jasper-core` nodes, links,
//! hosts and clocks. Events are keyed by (time, sequence); time jumps to
//! the next one; nothing sleeps or reads the host clock.

use std::rc::Rc;
use std::time::Instant;

use rand::Rng;

use jasper_core::deadline::StepTuner;
use jasper_core::metrics::{Collector, Delivery, ReportOptions};
use jasper_core::model::{ceil, rng, round, LinkFate, SimRng};
use jasper_core::plan::{loopback_inventory, proxies_needed, Fanout, NodeId, Plan, Role, SENDER};
use jasper_core::proxy::{ProxyConfig, ProxyCore, Verdict};
use jasper_core::receiver::Receiver;
use jasper_core::sender::SenderCore;
use jasper_core::wire::{emit_report, Header, Kind};

use crate::checkers::{Checker, Observed};
use crate::clocks::ClockProcess;
use crate::queue::CalendarQueue;
use crate::schemes::{fixed_offset, node_configs, tree_spec, Scheme};
use crate::{SchemeResult, SimParams};

/// Stream kinds (common random numbers).
const CLOCK: u64 = 1;
const HOST: u64 = 2;
const RELEASE: u64 = 3;
const LINK: u64 = 4;
const SLOW: u64 = 5;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of one (kind, key) under `seed`.
pub(crate) fn stream(seed: u64, kind: u64, key: u64) -> SimRng {
    rng(splitmix(
        seed ^ splitmix(kind.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ splitmix(key)),
    ))
}

/// A node's state machine, held inline: the nodes lie in one array, so
/// an event at a node loads its state without first loading a pointer.
enum Node {
    Sender(SenderCore),
    Proxy(ProxyCore),
    Receiver(Receiver),
}

enum Ev {
    Deliver {
        to: NodeId,
        from: NodeId,
        pkt: Rc<[u8]>,
    },
    /// Publisher number k publishes its next message.
    Publish(u32),
    Wake(NodeId),
    Tune,
    ClockStep(NodeId, i64),
    /// The Byzantine injector sends one packet.
    Inject,
    /// A receiver's clock error jumps (a miss or step starts or ends).
    ClockJump(NodeId),
}

struct Sim {
    scheme: Scheme,
    params: SimParams,
    plan: Plan,
    now: u64,
    start: u64,
    /// Pending events, keyed `time << 64 | sequence` (ties in the order
    /// they were scheduled).
    queue: CalendarQueue<Ev>,
    ctr: u64,
    events: u64,
    nodes: Vec<Node>,
    clocks: Vec<ClockProcess>,
    /// Per node: its host's stream (copy and processing costs).
    host_rng: Vec<SimRng>,
    /// Per node: what its every event reads, in one cache line.
    hot: Vec<NodeHot>,
    /// Per node: the role-based key of its streams.
    stream_key: Vec<u64>,
    /// Per node: hops from the publisher.
    hops: Vec<u32>,
    /// Declared clock bound, ns.
    bound: u64,
    /// How far the clock of the node being woken just jumped (during a
    /// jump's wake; 0 otherwise), ns.
    jump_allowance: u64,
    busy: Vec<u64>,
    /// Per host: total time spent sending copies, ns.
    busy_total: Vec<u64>,
    /// Per host: the instant of its last copy and how many copies it sent
    /// at that instant (tells apart copies that enter one link at once).
    last_copy: Vec<(u64, u64)>,
    /// Messages published over all publishers (the next one's index).
    published: u64,
    /// Publisher node ids (the primary first).
    pubs: Vec<NodeId>,
    /// Per publisher: its stream, messages to publish, rate, published.
    pub_stream: Vec<u32>,
    pub_msgs: Vec<u64>,
    pub_rate: Vec<f64>,
    pub_count: Vec<u64>,
    proxy_pos: Vec<Option<usize>>,
    crashed_at: Vec<Option<u64>>,
    /// Last retransmit-request stamp per node.
    request_stamp: Vec<u64>,
    collector: Collector,
    checker: Checker,
    /// Keys and guards (with Byzantine injectors), and the injector's draws.
    trust: Option<crate::byzantine::Trust>,
    byz_rng: SimRng,
    tuner: Option<StepTuner>,
    end_ns: u64,
    /// Reused buffers: a packet a proxy handles, its destinations.
    scratch: Vec<u8>,
    dsts: Vec<NodeId>,
    finished_count: usize,
}

/// What the engine reads of a node on each of its events, in one cache
/// line (a receiver's event visits a random one of 10⁴–10⁵ nodes: six
/// per-node arrays were six lines to load).
#[derive(Clone)]
#[repr(C, align(64))]
struct NodeHot {
    /// Its release jitter and hand-off stream.
    release_rng: SimRng,
    /// The instant its pending wake-up is due (`u64::MAX`: none).
    armed: u64,
    /// The smooth clock error its last wake was scheduled with.
    sched_err: f64,
    /// Its MP index (`u32::MAX`: not a receiver).
    receiver_index: u32,
    /// End-of-session notices seen (receivers).
    eos_seen: u32,
    /// Receivers: 0 running, 1 saw the end of session, 2 drained (counted).
    finished: u8,
}

const REPORT_LEN: usize = 96;

/// How many events ahead the engine prefetches a node's state.
const AHEAD: usize = 3;

impl Sim {
    fn new(scheme: Scheme, params: SimParams) -> Result<Sim, String> {
        let spec = tree_spec(scheme, &params);
        let proxies = proxies_needed(params.receivers, false, &spec);
        let mut inv = loopback_inventory(proxies, params.receivers, false, 1);
        if params.publishers == 0 || params.publishers > 64 {
            return Err(format!("{} publishers: use 1 to 64", params.publishers));
        }
        let first_free = 1 + proxies + params.receivers;
        for k in 1..params.publishers {
            inv.publishers.push(jasper_core::plan::PublisherSpec {
                name: format!("publisher{k}"),
                addr: std::net::SocketAddr::from((
                    [127, 0, 0, 2],
                    1 + ((first_free + k) % 65_535) as u16,
                )),
                stream: jasper_core::plan::PRIMARY_STREAM + k as u32,
            });
        }
        let mut plan = Plan::build(&inv, &spec).map_err(|e| e.to_string())?;
        let pubs: Vec<NodeId> = plan
            .nodes
            .iter()
            .filter(|n| n.role == Role::Sender)
            .map(|n| n.id)
            .collect();
        if !scheme.uses_tree() {
            // Direct unicast: every publisher feeds every receiver; no proxies.
            let eps: Vec<NodeId> = plan.endpoints().collect();
            for &p in &pubs {
                plan.tables[p as usize].fanout = Fanout::Direct {
                    children: eps.clone(),
                };
                plan.tables[p as usize].report_children = eps.clone();
            }
            for e in eps {
                plan.tables[e as usize].parent = Some(SENDER);
                plan.tables[e as usize].upstreams = pubs.clone().into();
                plan.tables[e as usize].report_also = pubs[1..].to_vec();
            }
        }
        // Publisher k's share of the messages and of the rate.
        let kk = pubs.len() as u64;
        let weights = kk * (kk + 1) / 2;
        let mut pub_msgs: Vec<u64> = (0..kk)
            .map(|k| (params.messages * (kk - k) / weights).max(1))
            .collect();
        let assigned: u64 = pub_msgs.iter().sum();
        pub_msgs[0] += params.messages.saturating_sub(assigned);
        let pub_rate: Vec<f64> = (0..kk)
            .map(|k| params.rate * (kk - k) as f64 / weights as f64)
            .collect();
        let pub_stream: Vec<u32> = pubs
            .iter()
            .map(|p| plan.nodes[*p as usize].stream.unwrap_or(1))
            .collect();
        let n = plan.nodes.len();
        let start = 1_700_000_000_000_000_000u64;
        // Common random numbers: every node's clock, host costs and release
        // jitter draw from their own stream keyed by the node's role
        // (sender, proxy position, MP and endpoint), and links from streams
        // keyed by their ends' roles (see `transmit`), so two schemes run
        // from one seed differ only where their designs do.
        let mut stream_key = vec![0u64; n];
        let mut hops = vec![0u32; n];
        for node in &plan.nodes {
            let i = node.id as usize;
            (stream_key[i], hops[i]) = match node.role {
                Role::Sender if node.id == SENDER => (0, 0),
                Role::Sender => ((2 << 40) + node.id as u64, 0),
                Role::Proxy { level } => (0, level),
                Role::Receiver { mp, endpoint } => (
                    1 + 2 * mp as u64 + endpoint as u64,
                    if scheme.uses_tree() {
                        plan.depth + 1
                    } else {
                        1
                    },
                ),
            };
        }
        for (pos, p) in plan.proxies().enumerate() {
            stream_key[p as usize] = (1 << 40) + pos as u64;
        }
        let seed = params.seed;
        let clocks = (0..n)
            .map(|i| {
                ClockProcess::new(
                    &params.model.clock,
                    start,
                    stream(seed, CLOCK, stream_key[i]),
                )
            })
            .collect();
        let host_rng = (0..n).map(|i| stream(seed, HOST, stream_key[i])).collect();
        let bound = params.model.clock.bound_ns();
        let (sender_cfg, recv_cfg) = node_configs(scheme, &params);
        let mut receiver_index = vec![u32::MAX; n];
        let mut proxy_pos = vec![None; n];
        for (i, p) in plan.proxies().enumerate() {
            proxy_pos[p as usize] = Some(i);
        }
        let nodes = plan
            .nodes
            .iter()
            .map(|node| match node.role {
                Role::Sender => Node::Sender(SenderCore::new(jasper_core::sender::SenderConfig {
                    stream: node.stream.unwrap_or(1),
                    ..sender_cfg
                })),
                Role::Proxy { .. } => Node::Proxy(ProxyCore::new(
                    plan.tables[node.id as usize].clone(),
                    ProxyConfig {
                        // A store only when recovery is simulated.
                        retransmit: jasper_core::retransmit::RetransmitConfig {
                            buffer_bytes: if params.recovery { 16 << 20 } else { 0 },
                            ..Default::default()
                        },
                        ..ProxyConfig::default()
                    },
                )),
                Role::Receiver { mp, .. } => {
                    receiver_index[node.id as usize] = mp;
                    Node::Receiver(Receiver::new(node.id, recv_cfg))
                }
            })
            .collect();
        let hot = (0..n)
            .map(|i| NodeHot {
                release_rng: stream(seed, RELEASE, stream_key[i]),
                armed: u64::MAX,
                sched_err: 0.0,
                receiver_index: receiver_index[i],
                eos_seen: 0,
                finished: 0,
            })
            .collect();
        let mut crashed_at = vec![None; n];
        for (pos, at) in &params.faults.crashes {
            if let Some(p) = plan.proxies().nth(*pos) {
                crashed_at[p as usize] = Some(start + at);
            }
        }
        let messages = params.messages;
        let receivers = params.receivers;
        let n_pubs = pubs.len();
        // Runs until every receiver has the end of session and drained, or
        // 10 s (simulated) after the last publish.
        let end_ns = start + (messages as f64 / params.rate * 1e9) as u64 + 10_000_000_000;
        let trust = params
            .faults
            .byzantine
            .clone()
            .map(|b| crate::byzantine::Trust::new(&plan, &plan.tables, seed, b));
        let mut nodes: Vec<Node> = nodes;
        if let Some(t) = &trust {
            for &p in &pubs {
                if let Node::Sender(s) = &mut nodes[p as usize] {
                    s.set_auth(Some(t.auths[p as usize].clone()));
                }
            }
        }
        Ok(Sim {
            trust,
            byz_rng: stream(seed, 0xB7, 1),
            scheme,
            plan,
            now: start,
            start,
            queue: CalendarQueue::new(),
            ctr: 0,
            events: 0,
            nodes,
            clocks,
            host_rng,
            hot,
            stream_key,
            hops,
            jump_allowance: 0,
            busy: vec![0; n],
            busy_total: vec![0; n],
            last_copy: vec![(0, 0); n],
            published: 0,
            pubs,
            pub_stream,
            pub_msgs,
            pub_rate,
            pub_count: vec![0; n_pubs],
            proxy_pos,
            crashed_at,
            request_stamp: vec![0; n],
            collector: Collector::new(receivers, messages as usize),
            checker: Checker::new(receivers, messages as usize, bound),
            bound,
            tuner: (scheme == Scheme::Cloudex).then(|| StepTuner::new(100_000, 5_000, 0.01)),
            params,
            end_ns,
            scratch: Vec::new(),
            dsts: Vec::new(),
            finished_count: 0,
        })
    }

    /// Node `id`'s clock at true time `t` (a reading: noise and tails
    /// included; nothing keeps it within the bound).
    fn local(&mut self, id: NodeId, t: u64) -> u64 {
        let e = self.clocks[id as usize].read_error(t);
        t.saturating_add_signed(e)
    }

    /// True time at which node `id`'s clock reads `local` (its current
    /// smooth error; noise and tails ignored), not before now.
    fn true_time_of(&mut self, id: NodeId, local: u64) -> u64 {
        let smooth = self.clocks[id as usize].smooth_error(self.now);
        self.hot[id as usize].sched_err = smooth;
        local
            .saturating_add_signed(-(round(smooth) as i64))
            .max(self.now)
    }

    fn at(&mut self, t: u64, ev: Ev) {
        // The run stops at `end_ns` (which only comes closer): what is due
        // after it would never run. A saturated sender schedules copies
        // far past it (direct unicast at N = 100,000: 250 ms of sending
        // per message); keeping them would grow with N × messages.
        if t > self.end_ns {
            return;
        }
        self.ctr += 1;
        self.queue.push((t as u128) << 64 | self.ctr as u128, ev);
    }

    fn wake_at(&mut self, id: NodeId, t: u64) {
        // Strictly after now: the inverse clock mapping (drift, noise,
        // rounding) may land a hair early; waking again 1 ns later always
        // makes progress instead of re-arming at the same instant.
        let t = t.max(self.now + 1);
        let armed = &mut self.hot[id as usize].armed;
        if t < *armed {
            *armed = t;
            self.at(t, Ev::Wake(id));
        }
    }

    /// Send `pkt` from `from` to every destination, serializing the per-copy
    /// cost on `from`'s host starting no earlier than `ready`.
    fn transmit(&mut self, from: NodeId, ready: u64, pkt: Rc<[u8]>, dsts: &[NodeId]) {
        let mut t = ready.max(self.busy[from as usize]);
        for &to in dsts {
            let cost = self
                .params
                .model
                .copy_cost_ns
                .sample(&mut self.host_rng[from as usize]);
            t += cost;
            self.busy_total[from as usize] += cost;
            // A link keeps no state: each copy's fate is drawn from a
            // stream of the link and the instant the copy enters it, and
            // the link's slow episodes from a stream of the link alone.
            // Memory stays linear in the nodes however many pairs a sprayed
            // level makes talk, and two schemes sending the same copy over
            // the same link at the same instant see the same fate.
            let (kf, kt) = (self.stream_key[from as usize], self.stream_key[to as usize]);
            let link = kf.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ kt;
            let tie = &mut self.last_copy[from as usize];
            *tie = if tie.0 == t { (t, tie.1 + 1) } else { (t, 0) };
            let seed = self.params.seed;
            let mut rng = stream(seed, LINK, link ^ splitmix(splitmix(t) ^ tie.1));
            let level = self.hops[from as usize].max(self.hops[to as usize]).max(1) as usize - 1;
            let (model, start) = (&self.params.model, self.start);
            let fate = model.fate_at_level(level, &mut rng, |_| {
                model.slow_at(start, t, &mut stream(seed, SLOW, link))
            });
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
        let mut buf = [0u8; REPORT_LEN + jasper_core::auth::NODE_TRAILER];
        let mut h = Header::new(Kind::DelayReport);
        h.send_time_ns = self.now;
        if let Ok(n) = emit_report(&h, &rep, &mut buf[..REPORT_LEN]) {
            let n = match &self.trust {
                Some(t) => match t.auths[from as usize].seal_node(&mut buf, n, from) {
                    Ok(n) => n,
                    Err(_) => return,
                },
                None => n,
            };
            self.transmit(from, self.now, Rc::from(&buf[..n]), &[to]);
        }
    }

    /// A retransmit request from `from` to each of its upstreams.
    fn send_request(&mut self, from: NodeId, q: &jasper_core::recovery::Request) {
        let mut buf = [0u8; 128];
        let auth = self.trust.as_ref().map(|t| &t.auths[from as usize]);
        // Strictly increasing stamps per requester (upstreams refuse replays).
        let stamp = self.now.max(self.request_stamp[from as usize] + 1);
        self.request_stamp[from as usize] = stamp;
        if let Some(n) =
            jasper_core::retransmit::emit_sealed_request(auth, from, stamp, q, &mut buf)
        {
            let ups = self.plan.tables[from as usize].upstreams.clone();
            self.transmit(from, self.now, Rc::from(&buf[..n]), &ups);
        }
    }

    /// Receiver `id` gave up on `first .. first + count`: no live node it
    /// can reach through live upstreams may still hold any of it (then
    /// recovery failed where it should have succeeded).
    fn check_lost(&mut self, id: NodeId, stream: u32, session: u32, first: u64, count: u64) {
        let alive = |s: &Sim, n: NodeId| s.crashed_at[n as usize].is_none_or(|c| s.now < c);
        let mut seen = vec![false; self.nodes.len()];
        let mut todo: Vec<NodeId> = self.plan.tables[id as usize].upstreams.to_vec();
        while let Some(n) = todo.pop() {
            if std::mem::replace(&mut seen[n as usize], true) || !alive(self, n) {
                continue;
            }
            let held = match &self.nodes[n as usize] {
                Node::Sender(s) => s.stored(stream, session, first, count),
                Node::Proxy(p) => p.stored(stream, session, first, count),
                Node::Receiver(_) => 0,
            };
            if held > 0 {
                let ri = self.hot[id as usize].receiver_index;
                self.checker.fail(format!(
                    "receiver {ri} reported {first}..{} lost while live node {n}, reachable through live upstreams, held {held} of them",
                    first + count
                ));
                return;
            }
            todo.extend_from_slice(&self.plan.tables[n as usize].upstreams);
        }
    }

    /// What a proxy's children asked for and it lacks goes to its upstreams.
    fn pass_requests_up(&mut self, id: NodeId) {
        let mut up = Vec::new();
        if let Node::Proxy(p) = &mut self.nodes[id as usize] {
            while let Some(q) = p.poll_upstream_request() {
                up.push(q);
            }
        }
        for q in up {
            self.send_request(id, &q);
        }
    }

    fn sender_flush(&mut self, id: NodeId) {
        let Node::Sender(s) = &mut self.nodes[id as usize] else {
            return;
        };
        let mut out = Vec::new();
        while let Some(p) = s.poll_transmit() {
            out.push(p);
        }
        let timeout = s.poll_timeout();
        let mut dsts = Vec::new();
        self.plan.tables[id as usize]
            .fanout
            .for_each(0, |c, _| dsts.push(c));
        for p in out {
            let pkt: Rc<[u8]> = Rc::from(p.as_slice());
            self.transmit(id, self.now, pkt, &dsts);
        }
        if let Some(t) = timeout {
            let tt = self.true_time_of(id, t);
            self.wake_at(id, tt);
        }
    }

    fn run(&mut self) {
        for k in 0..self.pubs.len() {
            self.at(self.now, Ev::Publish(k as u32));
        }
        for (node, at, step) in self.params.faults.clock_steps.clone() {
            self.at(self.start + at, Ev::ClockStep(node, step));
        }
        if self.tuner.is_some() {
            self.at(self.now + 1_000_000, Ev::Tune);
        }
        if let Some(b) = self.params.faults.byzantine.clone() {
            let period = (self.params.messages as f64 / self.params.rate * 1e9) as u64;
            for _ in 0..b.injections {
                let at = self.start + self.byz_rng.random_range(0..period.max(1));
                self.at(at, Ev::Inject);
            }
        }
        for id in 0..self.nodes.len() {
            if matches!(self.nodes[id], Node::Receiver(_)) {
                let next = self.clocks[id].next_change(self.now);
                if next <= self.end_ns {
                    self.at(next, Ev::ClockJump(id as NodeId));
                }
            }
        }
        while let Some((key, ev)) = self.queue.pop() {
            let t = (key >> 64) as u64;
            if t > self.end_ns {
                break;
            }
            // The next events visit nodes cold (a random one of 10⁴–10⁵
            // receivers): ask for their state ahead, so the loads overlap
            // this event's work instead of stalling theirs. Two stages: the
            // node's own state `AHEAD` events on, what it points to (loaded
            // by then) one event on. Each is asked for once.
            {
                let mut upcoming = self.queue.upcoming(AHEAD);
                if let Some(next) = upcoming.next() {
                    self.prefetch_inner(next);
                }
                if let Some(after) = upcoming.next() {
                    self.prefetch_middle(after);
                }
                if let Some(later) = upcoming.next() {
                    self.prefetch_outer(later);
                }
            }
            self.now = t;
            self.events += 1;
            match ev {
                Ev::Publish(k) => self.publish(k as usize),
                Ev::Inject => self.inject(),
                Ev::Deliver { to, from, pkt } => self.deliver(to, from, pkt),
                Ev::Wake(id) => {
                    if self.hot[id as usize].armed == t {
                        self.hot[id as usize].armed = u64::MAX;
                        self.wake(id);
                    }
                }
                Ev::ClockJump(id) => {
                    let i = id as usize;
                    let before = self.clocks[i].smooth_error(t.saturating_sub(1));
                    self.clocks[i].advance(t);
                    let after = self.clocks[i].smooth_error(t);
                    // A spinning receiver sees the jump at once: wake it.
                    self.jump_allowance = ceil((after - before).abs()) as u64;
                    self.wake(id);
                    self.jump_allowance = 0;
                    let next = self.clocks[i].next_change(t);
                    if next <= self.end_ns {
                        self.at(next, Ev::ClockJump(id));
                    }
                }
                Ev::ClockStep(node, step) => {
                    // The offset jumps and stays, whatever the bound.
                    if let Some(c) = self.clocks.get_mut(node as usize) {
                        c.inject_step(step);
                    }
                }
                Ev::Tune => {
                    if let Some(tuner) = &mut self.tuner {
                        tuner.adjust();
                        let off = tuner.offset_ns;
                        for &p in &self.pubs {
                            if let Node::Sender(s) = &mut self.nodes[p as usize] {
                                s.set_deadline_policy(fixed_offset(off));
                            }
                        }
                        self.at(self.now + 1_000_000, Ev::Tune);
                    }
                }
            }
        }
    }

    /// Start loading what an event reads first: the node's state, the
    /// packet and the engine's per-node entries (a hint; no effect on
    /// results).
    fn prefetch_outer(&self, ev: &Ev) {
        let (Ev::Deliver { to: id, .. } | Ev::Wake(id) | Ev::ClockJump(id)) = *ev else {
            return;
        };
        if let Ev::Deliver { pkt, .. } = ev {
            prefetch_ptr(pkt.as_ptr());
        }
        let i = id as usize;
        // Not even which kind of node it is is read here: that would wait
        // for the very line asked for.
        prefetch_bytes(&self.nodes[i]);
        // What a clock reading touches: its first three lines.
        let clock = (&self.clocks[i] as *const ClockProcess).cast::<u8>();
        for line in 0..3 {
            prefetch_ptr(clock.wrapping_add(64 * line));
        }
        prefetch(&self.host_rng[i]);
        prefetch(&self.hot[i]);
        // (The engine's small per-node arrays stay in L2.)
    }

    /// The last stage of the prefetches, once the middle stage's lines
    /// are in cache: the entries a receiver's next packet or release reads
    /// (its dedup window word, the held entries it takes or fills).
    fn prefetch_inner(&self, ev: &Ev) {
        let (to, pkt) = match ev {
            Ev::Deliver { to, pkt, .. } => (*to, Some(pkt)),
            Ev::Wake(id) => (*id, None),
            _ => return,
        };
        if let Some(Node::Receiver(r)) = self.nodes.get(to as usize) {
            let data = pkt.and_then(|p| jasper_core::wire::Packet::new_checked(&p[..]).ok());
            r.entry_addrs(data.map(|p| (p.stream(), p.seq())), prefetch_ptr);
            // The collector's entries for the receiver, if it hands over
            // now: at a wake, or at a delivery without holding.
            if pkt.is_none() || !self.scheme.holds() {
                let ri = self.hot[to as usize].receiver_index as usize;
                self.collector.receiver_addrs(ri, prefetch_ptr);
            }
        }
    }

    /// The second stage of [`Sim::prefetch_outer`], once the node's state
    /// is in cache: what a receiver's state points to and a data packet
    /// reads (its stream entries; the probes of the binary search for the
    /// path that won; its held-message buffers).
    fn prefetch_middle(&self, ev: &Ev) {
        let to = match *ev {
            Ev::Deliver { to, .. } => to,
            Ev::Wake(id) => {
                if let Some(Node::Receiver(r)) = self.nodes.get(id as usize) {
                    r.buffer_addrs(prefetch_ptr);
                }
                return;
            }
            _ => return,
        };

        if let Some(Node::Receiver(r)) = self.nodes.get(to as usize) {
            prefetch_ptr(r.stream_state_addr());
            r.buffer_addrs(prefetch_ptr);
            let wins = &r.stats().path_wins;
            let (p, n) = (wins.as_ptr(), wins.len());
            // The first four levels' probes (the last ones fall within a
            // few lines of them); a short list is a line or two.
            if n <= 8 {
                prefetch_ptr(p.cast());
            } else {
                for k in 1..16 {
                    prefetch_ptr(p.wrapping_add(n * k / 16).cast());
                }
            }
        }
    }

    /// Publisher number `k` publishes; the payload is the message's index
    /// over all publishers (what the collector and checkers key on).
    fn publish(&mut self, k: usize) {
        let id = self.pubs[k];
        let now = self.local(id, self.now);
        let reading = jasper_core::clock::Reading {
            now_ns: now,
            error_bound_ns: self.bound,
            status: jasper_core::clock::ClockStatus::Synchronized,
        };
        let index = self.published;
        let Node::Sender(s) = &mut self.nodes[id as usize] else {
            return;
        };
        let _ = s.publish(reading, &index.to_be_bytes());
        self.published += 1;
        self.pub_count[k] += 1;
        if self.pub_count[k] == self.pub_msgs[k] {
            s.end_session(reading);
        } else {
            let next = self.start + (self.pub_count[k] as f64 / self.pub_rate[k] * 1e9) as u64;
            self.at(next, Ev::Publish(k as u32));
        }
        self.sender_flush(id);
    }

    /// One packet from the Byzantine injector, delivered at once.
    fn inject(&mut self) {
        let Some(t) = &mut self.trust else { return };
        let (next_seq, session) = match &self.nodes[SENDER as usize] {
            Node::Sender(s) => (s.next_seq(), s.session()),
            _ => (0, 0),
        };
        if let Some((from, to, pkt)) = t.forge(
            &self.plan,
            &self.plan.tables,
            self.now,
            next_seq,
            session,
            &mut self.byz_rng,
        ) {
            self.at(self.now, Ev::Deliver { to, from, pkt });
        }
    }

    fn deliver(&mut self, to: NodeId, from: NodeId, pkt: Rc<[u8]>) {
        let local = self.local(to, self.now);
        if let Some(t) = &mut self.trust {
            // The node's guard first: nothing it refuses touches any state.
            if t.guards[to as usize]
                .admit(local, crate::byzantine::addr(from), &pkt)
                .is_err()
            {
                return;
            }
            if from != crate::byzantine::ATTACKER {
                t.capture(from, to, &pkt, &mut self.byz_rng);
            }
        }
        match &mut self.nodes[to as usize] {
            Node::Sender(s) => {
                // A root's retransmit request: the stored packets go back to it.
                let mut answers: Vec<Rc<[u8]>> = Vec::new();
                if let Ok(r) = jasper_core::wire::Repr::parse_bytes(&pkt) {
                    if s.handle_repr(&r) {
                        s.answer(local, |b, _| answers.push(Rc::from(b)));
                    }
                }
                for a in answers {
                    self.transmit(to, self.now, a, &[from]);
                }
            }
            Node::Proxy(p) => {
                if self.crashed_at[to as usize].is_some_and(|c| self.now >= c) {
                    return;
                }
                // The proxy rewrites the copy it forwards: into a scratch
                // buffer (most copies a hedging proxy gets are dropped as
                // duplicates; they need no packet of their own).
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                buf.extend_from_slice(&pkt);
                let verdict = p.handle_packet(local, &mut buf);
                let timeout = p.poll_timeout();
                // A loss fault: this proxy forwards no copy (`Faults::losses`).
                let lost = matches!(verdict, Verdict::Forward { key }
                    if self.proxy_pos[to as usize].is_some_and(|pos| self.params.faults.loses(pos, key)));
                if let (Verdict::Forward { key }, false) = (verdict, lost) {
                    let mut dsts = std::mem::take(&mut self.dsts);
                    dsts.clear();
                    p.for_each_destination(key, |d, _| dsts.push(d));
                    let mut ready = self.now
                        + self
                            .params
                            .model
                            .proxy_processing_ns
                            .sample(&mut self.host_rng[to as usize]);
                    if let Some(pos) = self.proxy_pos[to as usize] {
                        for st in &self.params.faults.stalls {
                            if st.proxies.contains(&pos) && (st.from_msg..st.to_msg).contains(&key)
                            {
                                ready += st.stall_ns;
                            }
                        }
                    }
                    self.transmit(to, ready, Rc::from(&buf[..]), &dsts);
                    self.dsts = dsts;
                } else if verdict == Verdict::Answer {
                    let mut answers: Vec<(Rc<[u8]>, NodeId)> = Vec::new();
                    p.answer(local, |b, dst| answers.push((Rc::from(b), dst)));
                    for (a, dst) in answers {
                        self.transmit(to, self.now, a, &[dst]);
                    }
                }
                self.scratch = buf;
                self.pass_requests_up(to);
                let Node::Proxy(_) = &self.nodes[to as usize] else {
                    unreachable!("still a proxy")
                };
                if let Some(t) = timeout {
                    let tt = self.true_time_of(to, t);
                    self.wake_at(to, tt);
                }
            }
            Node::Receiver(r) => {
                let accepted = r.stats().accepted;
                r.handle_packet(local, self.bound, &pkt);
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
                    error_bound_ns: self.bound,
                    status: jasper_core::clock::ClockStatus::Synchronized,
                };
                s.handle_timeout(reading);
                self.sender_flush(id);
            }
            Node::Proxy(p) => {
                if self.crashed_at[id as usize].is_some_and(|c| self.now >= c) {
                    return;
                }
                let report = p.poll_report(local);
                let timeout = p.poll_timeout();
                if let Some((parent, rep)) = report {
                    self.send_report(id, parent, rep);
                    for k in 0..self.plan.tables[id as usize].report_also.len() {
                        let also = self.plan.tables[id as usize].report_also[k];
                        self.send_report(id, also, rep);
                    }
                }
                if let Some(t) = timeout {
                    let tt = self.true_time_of(id, t);
                    self.wake_at(id, tt);
                }
            }
            Node::Receiver(r) => {
                let ri = self.hot[id as usize].receiver_index as usize;
                let hold = self.scheme.holds();
                let clock_error_ns = local as i64 - self.now as i64;
                // How far past the deadline its own clock may legitimately
                // read at this wake: the clock moved since the wake was
                // scheduled (wander, a jump) or reads with noise.
                let moved = (self.clocks[id as usize].smooth_error(self.now)
                    - self.hot[id as usize].sched_err)
                    .abs();
                let lag_allowance_ns = self.jump_allowance
                    + ceil(moved + 8.0 * self.clocks[id as usize].noise_ns()) as u64;
                let model = &self.params.model;
                let rr = &mut self.hot[id as usize].release_rng;
                let (collector, checker, tuner, now) = (
                    &mut self.collector,
                    &mut self.checker,
                    &mut self.tuner,
                    self.now,
                );
                // The hand-over starts after the spin/wake error and each
                // message costs a hand-off: one after another.
                let mut extra: Option<u64> = None;
                let mut forged = 0u64;
                r.poll_release(local, |rel, payload| {
                    if crate::byzantine::is_forged(payload) {
                        forged += 1;
                    }
                    let e = match extra {
                        None => model.release_jitter_ns.sample(rr),
                        Some(e) => e + model.handoff_ns.sample(rr),
                    };
                    extra = Some(e);
                    // The payload is the message's index over all publishers.
                    let msg = payload
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(u64::MAX, u64::from_be_bytes);
                    checker.on_release(
                        ri,
                        msg,
                        rel,
                        hold,
                        Observed {
                            clock_error_ns,
                            extra_ns: e,
                            lag_allowance_ns,
                        },
                    );
                    if let Some(t) = tuner.as_mut() {
                        t.observe(rel.late);
                    }
                    collector.add(Delivery {
                        receiver: ri as u32,
                        msg,
                        owd_ns: rel.owd_ns(),
                        handover_ns: (rel.release_ns + e) as i64 - rel.send_time_ns as i64,
                        handed_true_ns: now + e,
                        holding_ns: rel.holding_ns(),
                        late: rel.late,
                        deadline_ns: rel.deadline_ns,
                        stream: rel.stream,
                        seq: rel.seq,
                    });
                });
                if let Some(t) = &mut self.trust {
                    t.forged_released += forged;
                }
                let NodeHot {
                    finished: state,
                    eos_seen: eos,
                    ..
                } = &mut self.hot[id as usize];
                let publishers = self.pubs.len() as u32;
                let mut lost = Vec::new();
                while let Some(e) = r.poll_event() {
                    match e {
                        // Every publisher's end of session (one per stream).
                        jasper_core::receiver::Event::EndOfSession { .. } if *state == 0 => {
                            *eos += 1;
                            if *eos >= publishers {
                                *state = 1;
                            }
                        }
                        jasper_core::receiver::Event::Lost {
                            stream,
                            session,
                            first,
                            count,
                        } => lost.push((stream, session, first, count)),
                        _ => {}
                    }
                }
                // Drained: nothing held, and (with recovery) no gap still
                // being asked for.
                if *state == 1 && r.held() == 0 && (!self.params.recovery || r.missing() == 0) {
                    *state = 2;
                    self.finished_count += 1;
                    if self.finished_count == self.params.receivers {
                        // Everyone has the end of session: data that the
                        // end-of-session notice overtook is still in flight;
                        // give it 50 ms, then stop.
                        self.end_ns = self.end_ns.min(self.now + 50_000_000);
                    }
                }
                let mut requests = Vec::new();
                r.poll_recovery(local, |q| requests.push(q));
                while let Some(e) = r.poll_event() {
                    if let jasper_core::receiver::Event::Lost {
                        stream,
                        session,
                        first,
                        count,
                    } = e
                    {
                        lost.push((stream, session, first, count));
                    }
                }
                let recovery_at = r.recovery_timeout();
                let report = r.poll_report(local);
                let next = r.poll_timeout();
                for q in requests {
                    self.send_request(id, &q);
                }
                for (stream, session, first, count) in lost {
                    self.check_lost(id, stream, session, first, count);
                }
                if let Some(t) = recovery_at {
                    let tt = self.true_time_of(id, t);
                    self.wake_at(id, tt);
                }
                // (The forwarding table, a cache line of its own, only when
                // a report is due.)
                if let Some((rep, parent)) =
                    report.and_then(|rep| Some((rep, self.plan.tables[id as usize].parent?)))
                {
                    self.send_report(id, parent, rep);
                    for k in 0..self.plan.tables[id as usize].report_also.len() {
                        let also = self.plan.tables[id as usize].report_also[k];
                        self.send_report(id, also, rep);
                    }
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
                ..ReportOptions::with_bound(self.bound)
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
        // Spread explained by the actual clock errors (hold schemes).
        self.checker.finish(&self.collector, self.scheme.holds());
        let unfair = if self.scheme.holds() {
            self.checker.unfair_causes(
                &self.collector,
                self.params.receivers as u32,
                self.params.fair_threshold_ns,
            )
        } else {
            Default::default()
        };
        // Every missing message was detected by its receiver (when it learned
        // where the session ended).
        let mut no_eos = 0;
        let mut mismatch = None;
        for node in &self.nodes {
            if let Node::Receiver(r) = node {
                let st = r.stats();
                let ended = self
                    .pub_stream
                    .iter()
                    .zip(&self.pub_msgs)
                    .all(|(s, n)| r.next_expected(*s) == Some(*n));
                if !ended {
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
                // With recovery: every message is handed over once unless
                // reported lost (by range) or still being asked for.
                let reported = st.lost - st.arrived_after_lost + r.missing();
                if self.params.recovery && missing != reported && mismatch.is_none() {
                    mismatch = Some(format!(
                        "a receiver misses {missing} messages but reported {} lost ({} still asked for)",
                        st.lost - st.arrived_after_lost,
                        r.missing()
                    ));
                }
            }
        }
        if let Some(m) = mismatch {
            self.checker.fail(m);
        }
        if let Some(t) = &self.trust {
            if t.forged_released > 0 {
                self.checker.fail(format!(
                    "{} forged messages handed to MPs ({} packets injected)",
                    t.forged_released, t.injected
                ));
            }
        }
        let spec = if self.scheme.uses_tree() {
            format!(
                "tree depth {} fanout {} hedge {} spray {} roots {}",
                self.plan.depth,
                self.plan.fanout,
                self.plan.hedge,
                self.plan.spray,
                self.plan.roots
            )
        } else {
            "direct unicast".into()
        };
        // The nodes' own counters and the publisher's deadline state.
        let mut receiver_stats = vec![Default::default(); self.params.receivers];
        for (id, node) in self.nodes.iter().enumerate() {
            let slot = receiver_stats.get_mut(self.hot[id].receiver_index as usize);
            if let (Node::Receiver(r), Some(s)) = (node, slot) {
                *s = r.stats().clone();
            }
        }
        let (publisher_estimate, publisher_offset_ns) = match &self.nodes[self.pubs[0] as usize] {
            Node::Sender(s) => (s.estimate(), s.offset_ns(self.bound)),
            _ => (None, 0),
        };
        SchemeResult {
            receiver_stats,
            publisher_estimate,
            publisher_offset_ns,
            scheme: self.scheme,
            description: format!(
                "{}: {spec}, {} receivers, {} messages at {} msg/s{}, seed {}",
                self.scheme.name(),
                self.params.receivers,
                messages,
                self.params.rate,
                if self.pubs.len() > 1 {
                    format!(
                        " from {} publishers (rates {:?} msg/s)",
                        self.pubs.len(),
                        self.pub_rate.iter().map(|r| r.round()).collect::<Vec<_>>()
                    )
                } else {
                    String::new()
                },
                self.params.seed
            ),
            report,
            collector: self.collector,
            events: self.events,
            wall_s: wall.elapsed().as_secs_f64(),
            violation_count: self.checker.violation_count(),
            clock: self.checker.clock_promise(),
            unfair,
            late_per_message: self.checker.late_per_message(),
            violations: self.checker.into_violations(),
            no_end_of_session: no_eos,
            guard: self.trust.as_ref().map(|t| (t.injected, t.totals())),
            max_host_load: {
                let period = (messages as f64 / self.params.rate * 1e9).max(1.0);
                self.busy_total.iter().copied().max().unwrap_or(0) as f64 / period
            },
        }
    }
}

/// Hint the CPU to load the cache line holding `p` (no effect on results).
#[inline(always)]
fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and
    // cannot fault, whatever the address.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch_ptr`] the line holding `x`.
#[inline(always)]
fn prefetch<T>(x: &T) {
    prefetch_ptr((x as *const T).cast());
}

/// [`prefetch_ptr`] every cache line of `x`.
#[inline(always)]
fn prefetch_bytes<T>(x: &T) {
    let p = (x as *const T).cast::<u8>();
    let first = p as usize & !63;
    let end = p as usize + std::mem::size_of::<T>();
    for line in (first..end).step_by(64) {
        prefetch_ptr(p.wrapping_add(line.wrapping_sub(p as usize)));
    }
}

/// Run one scheme. Errors are shape problems (the plan's message).
pub fn run(scheme: Scheme, params: &SimParams) -> Result<SchemeResult, String> {
    let wall = Instant::now();
    let mut sim = Sim::new(scheme, params.clone())?;
    sim.run();
    Ok(sim.finish(wall))
}
