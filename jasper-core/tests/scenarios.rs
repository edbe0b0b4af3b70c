//! Deterministic multi-node scenarios: the real sender, proxy and receiver
//! state machines wired by an in-memory network in virtual time (no sockets,
//! no sleeps). Time jumps to the next event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use jasper_core::clock::{ClockStatus, Reading};
use jasper_core::deadline::DeadlinePolicy;
use jasper_core::model::{rng, Dist, SimRng};
use jasper_core::plan::{loopback_inventory, proxies_needed, NodeId, Plan, Role, TreeSpec, SENDER};
use jasper_core::proxy::{ProxyConfig, ProxyCore, Verdict};
use jasper_core::receiver::{Event as RxEvent, Receiver, ReceiverConfig, Release};
use jasper_core::sender::{SenderConfig, SenderCore};
use jasper_core::wire::Repr;

#[allow(clippy::large_enum_variant)]
enum Node {
    Sender(SenderCore),
    Proxy(ProxyCore),
    Receiver(Receiver),
}

#[derive(Debug)]
enum Ev {
    Deliver { to: NodeId, bytes: Vec<u8> },
    Publish,
    Wake(NodeId),
}

/// Decides whether the link `from → to` loses this packet.
type DropRule = Box<dyn FnMut(NodeId, NodeId, &[u8]) -> bool>;

struct Net {
    plan: Plan,
    nodes: Vec<Node>,
    offset: Vec<i64>,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    evs: Vec<Option<Ev>>,
    ctr: u64,
    delay: Dist,
    rng: SimRng,
    drop: DropRule,
    releases: HashMap<NodeId, Vec<Release>>,
    events: HashMap<NodeId, Vec<RxEvent>>,
    published: u64,
    to_publish: u64,
    interval: u64,
    bound: u64,
    /// Per node, the (true) time of its one pending wake-up.
    armed: Vec<Option<u64>>,
}

impl Net {
    fn new(
        receivers: usize,
        spec: TreeSpec,
        sender: SenderConfig,
        seed: u64,
        delay: Dist,
        clock_sigma: f64,
    ) -> Net {
        let inv = loopback_inventory(
            proxies_needed(receivers, false, &spec),
            receivers,
            false,
            10000,
        );
        let plan = Plan::build(&inv, &spec).unwrap();
        let mut r = rng(seed);
        let nodes = plan
            .nodes
            .iter()
            .map(|n| match n.role {
                Role::Sender => Node::Sender(SenderCore::new(sender)),
                Role::Proxy { .. } => Node::Proxy(ProxyCore::new(
                    plan.tables[n.id as usize].clone(),
                    ProxyConfig {
                        // Nothing here asks for retransmissions: keep no store.
                        retransmit: jasper_core::retransmit::RetransmitConfig {
                            buffer_bytes: 0,
                            ..Default::default()
                        },
                        ..ProxyConfig::default()
                    },
                )),
                Role::Receiver { .. } => {
                    Node::Receiver(Receiver::new(n.id, ReceiverConfig::default()))
                }
            })
            .collect();
        use rand::Rng;
        let offset = plan
            .nodes
            .iter()
            .map(|_| (r.random_range(-1.0..1.0) * clock_sigma) as i64)
            .collect();
        Net {
            plan,
            nodes,
            offset,
            now: 1_000_000_000,
            queue: BinaryHeap::new(),
            evs: Vec::new(),
            ctr: 0,
            delay,
            rng: r,
            drop: Box::new(|_, _, _| false),
            releases: HashMap::new(),
            events: HashMap::new(),
            published: 0,
            to_publish: 0,
            interval: 0,
            bound: clock_sigma as u64,
            armed: vec![None; 0],
        }
    }

    fn local(&self, id: NodeId) -> u64 {
        (self.now as i64 + self.offset[id as usize]) as u64
    }
    fn reading(&self, id: NodeId) -> Reading {
        Reading {
            now_ns: self.local(id),
            error_bound_ns: self.bound,
            status: ClockStatus::Synchronized,
        }
    }
    fn at(&mut self, t: u64, ev: Ev) {
        self.ctr += 1;
        self.evs.push(Some(ev));
        self.queue.push(Reverse((t, self.ctr, self.evs.len() - 1)));
    }
    fn send(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        if (self.drop)(from, to, &bytes) {
            return;
        }
        let d = self.delay.sample(&mut self.rng);
        self.at(self.now + d, Ev::Deliver { to, bytes });
    }
    /// Wake a node at its local-clock time `local_t`.
    fn wake_local(&mut self, id: NodeId, local_t: u64) {
        let t = (local_t as i64 - self.offset[id as usize]).max(self.now as i64) as u64;
        let armed = &mut self.armed[id as usize];
        if armed.is_none_or(|a| t < a) {
            *armed = Some(t);
            self.at(t, Ev::Wake(id));
        }
    }

    fn flush_sender(&mut self) {
        let Node::Sender(s) = &mut self.nodes[0] else {
            unreachable!()
        };
        let mut out = Vec::new();
        while let Some(p) = s.poll_transmit() {
            out.push(p);
        }
        if let Some(t) = s.poll_timeout() {
            self.wake_local(SENDER, t);
        }
        for p in out {
            self.send(SENDER, 1, p);
        }
    }

    /// Publish `messages` every `interval_ns`, then run 20 ms more (timers
    /// re-arm forever, so the run is bounded by time).
    fn run(&mut self, messages: u64, interval_ns: u64) {
        let until = self.now + messages * interval_ns + 20_000_000;
        self.to_publish = messages;
        self.interval = interval_ns;
        self.at(self.now, Ev::Publish);
        self.armed = vec![None; self.nodes.len()];
        for id in 0..self.nodes.len() as u32 {
            self.wake_local(id, self.local(id));
        }
        while let Some(Reverse((t, _, i))) = self.queue.pop() {
            if t > until {
                break;
            }
            self.now = t;
            let ev = self.evs[i].take().unwrap();
            match ev {
                Ev::Publish => {
                    let r = self.reading(SENDER);
                    let Node::Sender(s) = &mut self.nodes[0] else {
                        unreachable!()
                    };
                    let seq = self.published;
                    s.publish(r, &seq.to_be_bytes()).unwrap();
                    self.published += 1;
                    if self.published == self.to_publish {
                        s.end_session(r);
                    } else {
                        self.at(self.now + self.interval, Ev::Publish);
                    }
                    self.flush_sender();
                }
                Ev::Deliver { to, mut bytes } => self.deliver(to, &mut bytes),
                Ev::Wake(id) => {
                    if self.armed[id as usize] == Some(t) {
                        self.armed[id as usize] = None;
                        self.wake(id);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, to: NodeId, bytes: &mut [u8]) {
        let local = self.local(to);
        match &mut self.nodes[to as usize] {
            Node::Sender(s) => {
                s.handle_packet(bytes).unwrap();
            }
            Node::Proxy(p) => {
                let verdict = p.handle_packet(local, bytes);
                if let Some(t) = p.poll_timeout() {
                    self.wake_local(to, t);
                }
                let Node::Proxy(p) = &mut self.nodes[to as usize] else {
                    unreachable!()
                };
                if let Verdict::Forward { key } = verdict {
                    let mut dsts = Vec::new();
                    p.for_each_destination(key, |d, _| dsts.push(d));
                    for d in dsts {
                        self.send(to, d, bytes.to_vec());
                    }
                }
            }
            Node::Receiver(r) => {
                r.handle_packet(local, self.bound, bytes);
                let t = r.poll_timeout();
                if let Some(t) = t {
                    self.wake_local(to, t);
                }
                self.wake(to);
            }
        }
    }

    fn wake(&mut self, id: NodeId) {
        let local = self.local(id);
        match &mut self.nodes[id as usize] {
            Node::Sender(_) => {
                let r = self.reading(SENDER);
                let Node::Sender(s) = &mut self.nodes[0] else {
                    unreachable!()
                };
                s.handle_timeout(r);
                self.flush_sender();
            }
            Node::Proxy(p) => {
                let report = p.poll_report(local);
                let next = p.poll_timeout();
                if let Some((parent, rep)) = report {
                    let mut buf = vec![0u8; 128];
                    let n = jasper_core::wire::emit_report(
                        &jasper_core::wire::Header::new(jasper_core::wire::Kind::DelayReport),
                        &rep,
                        &mut buf,
                    )
                    .unwrap();
                    buf.truncate(n);
                    self.send(id, parent, buf);
                }
                if let Some(t) = next {
                    self.wake_local(id, t);
                }
            }
            Node::Receiver(r) => {
                let out = self.releases.entry(id).or_default();
                r.poll_release(local, |rel, payload| {
                    assert_eq!(
                        payload,
                        rel.seq.to_be_bytes(),
                        "payload belongs to its sequence"
                    );
                    out.push(*rel);
                });
                while let Some(e) = r.poll_event() {
                    self.events.entry(id).or_default().push(e);
                }
                let report = r.poll_report(local);
                let next = r.poll_timeout();
                let parent = self.plan.tables[id as usize].parent.unwrap();
                if let Some(rep) = report {
                    let mut buf = vec![0u8; 128];
                    let n = jasper_core::wire::emit_report(
                        &jasper_core::wire::Header::new(jasper_core::wire::Kind::DelayReport),
                        &rep,
                        &mut buf,
                    )
                    .unwrap();
                    buf.truncate(n);
                    self.send(id, parent, buf);
                }
                if let Some(t) = next {
                    self.wake_local(id, t);
                }
            }
        }
    }

    fn receiver_ids(&self) -> Vec<NodeId> {
        self.plan.endpoints().collect()
    }
    fn receiver(&self, id: NodeId) -> &Receiver {
        match &self.nodes[id as usize] {
            Node::Receiver(r) => r,
            _ => panic!("not a receiver"),
        }
    }
}

fn hedged(depth: u32, fanout: u32, hedge: u32, spray: bool) -> TreeSpec {
    TreeSpec {
        depth: Some(depth),
        fanout: Some(fanout),
        hedge,
        spray,
        roots: 1,
    }
}

fn uniform(a: f64, b: f64) -> Dist {
    Dist::Uniform { a, b }
}

/// A sender whose deadline offset never drops below 500 µs (longer than any
/// path in these scenarios), so no copy can be late.
fn generous() -> SenderConfig {
    SenderConfig {
        deadline: DeadlinePolicy {
            floor_ns: 500_000,
            ..DeadlinePolicy::default()
        },
        ..SenderConfig::default()
    }
}

#[test]
fn exactly_once_in_order_never_before_deadline() {
    for (seed, spray) in [(1u64, false), (2, true)] {
        let mut net = Net::new(
            16,
            hedged(2, 4, 1, spray),
            generous(),
            seed,
            uniform(20_000.0, 120_000.0),
            100.0,
        );
        net.run(2_000, 10_000);
        for id in net.receiver_ids() {
            let rel = &net.releases[&id];
            let seqs: Vec<u64> = rel.iter().map(|r| r.seq).collect();
            assert!(
                seqs.iter().copied().eq(0..2_000),
                "receiver {id}: not exactly once in order: {} released, first {:?}",
                seqs.len(),
                &seqs[..5.min(seqs.len())]
            );
            for r in rel {
                assert!(
                    r.release_ns >= r.deadline_ns,
                    "released before deadline: {r:?}"
                );
                assert!(
                    !r.late,
                    "no copy can be late with a 500 µs offset and ≤ 260 µs paths"
                );
            }
            let st = net.receiver(id).stats();
            assert!(
                st.duplicates >= 1_900,
                "hedged copies suppressed: {}",
                st.duplicates
            );
            assert_eq!(st.released, 2_000);
            let paths: HashSet<u16> = rel.iter().map(|r| r.path).collect();
            if spray {
                assert!(paths.len() > 2, "spraying rotates the upstreams: {paths:?}");
            } else {
                assert_eq!(paths.len(), 2, "both hedged upstreams win sometimes");
            }
        }
    }
}

#[test]
fn late_messages_are_released_at_once() {
    // A 30 µs deadline offset with 20-120 µs per hop: most copies are late.
    let cfg = SenderConfig {
        deadline: DeadlinePolicy {
            initial_offset_ns: 30_000,
            ceiling_ns: 30_000,
            margin_ns: 0,
            ..DeadlinePolicy::default()
        },
        ..SenderConfig::default()
    };
    let mut net = Net::new(
        8,
        hedged(2, 4, 1, false),
        cfg,
        3,
        uniform(20_000.0, 120_000.0),
        0.0,
    );
    net.run(500, 20_000);
    for id in net.receiver_ids() {
        let rel = &net.releases[&id];
        let mut seen: Vec<u64> = rel.iter().map(|r| r.seq).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            500,
            "late messages still delivered exactly once"
        );
        let late = rel.iter().filter(|r| r.late).count();
        assert!(late > 400, "{late}");
        for r in rel.iter().filter(|r| r.late) {
            assert_eq!(r.release_ns, r.arrival_ns, "late is released on arrival");
        }
    }
}

#[test]
fn lost_packets_show_up_as_gaps() {
    let mut net = Net::new(
        8,
        hedged(2, 4, 1, false),
        SenderConfig::default(),
        4,
        uniform(20_000.0, 60_000.0),
        0.0,
    );
    // Drop every copy of sequence 100 and 101 (all paths) and the last data packet.
    net.drop = Box::new(|_, _, b| match Repr::parse_bytes(b) {
        Ok(r) => {
            r.header.kind == jasper_core::wire::Kind::Data
                && [100, 101, 299].contains(&r.header.seq)
        }
        Err(_) => false,
    });
    net.run(300, 10_000);
    for id in net.receiver_ids() {
        let rel = &net.releases[&id];
        assert_eq!(rel.len(), 297);
        let ev = &net.events[&id];
        let reported: HashSet<u64> = ev
            .iter()
            .filter_map(|e| match e {
                RxEvent::Gap { first, count, .. } => Some(*first..*first + *count),
                _ => None,
            })
            .flatten()
            .collect();
        for s in [100, 101, 299] {
            assert!(reported.contains(&s), "gap at {s} reported: {ev:?}");
        }
        // Seq 299 is only learned missing from the end-of-session notice,
        // which is reported once although both hedged copies arrive.
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, RxEvent::EndOfSession { .. }))
                .count(),
            1
        );
        assert!(ev.contains(&RxEvent::EndOfSession {
            stream: 1,
            next_seq: 300
        }));
        // Transient gaps from reordering across hedged paths are filled later.
        let st = net.receiver(id).stats();
        assert_eq!(st.gaps_detected - st.gaps_filled, 3);
    }
}

#[test]
fn deadline_estimate_converges_to_tree_delay() {
    // Three hops (sender→root→level2→receiver), each 40..60 µs: OWD 120..180 µs.
    let mut net = Net::new(
        16,
        hedged(2, 4, 1, false),
        SenderConfig::default(),
        5,
        uniform(40_000.0, 60_000.0),
        0.0,
    );
    net.run(5_000, 10_000);
    let Node::Sender(s) = &net.nodes[0] else {
        unreachable!()
    };
    let est = s.estimate().expect("the root reported an estimate");
    // With H=1 each receiver keeps the faster of two copies on the last hop;
    // the p97 of the first-copy OWD lies well inside 120..180 µs.
    assert!((140_000..=182_000).contains(&est.owd_ns), "{est:?}");
    assert_eq!(
        est.receivers, 16,
        "every receiver's report reached the sender"
    );
    let offset = s.offset_ns(0);
    assert_eq!(offset, est.owd_ns + 25_000);
    // After convergence no message is late and holding is small.
    for id in net.receiver_ids() {
        let rel = &net.releases[&id];
        let tail = &rel[rel.len() - 1000..];
        assert!(tail.iter().all(|r| !r.late));
        let mean_hold = tail.iter().map(|r| r.holding_ns()).sum::<u64>() / 1000;
        assert!(mean_hold < 120_000, "holding {mean_hold}");
    }
}

#[test]
fn skewed_clocks_release_within_bound_in_true_time() {
    // Clock offsets up to ±150 ns: release instants (true time) spread ≤ 300 ns.
    let mut net = Net::new(
        16,
        hedged(2, 4, 2, true),
        generous(),
        6,
        uniform(20_000.0, 100_000.0),
        150.0,
    );
    net.run(500, 10_000);
    let mut true_release: HashMap<u64, (u64, u64)> = HashMap::new();
    for id in net.receiver_ids() {
        let off = net.offset[id as usize];
        for r in &net.releases[&id] {
            assert!(!r.late);
            let t = (r.release_ns as i64 - off) as u64;
            let e = true_release.entry(r.seq).or_insert((t, t));
            e.0 = e.0.min(t);
            e.1 = e.1.max(t);
        }
    }
    assert_eq!(true_release.len(), 500);
    for (seq, (lo, hi)) in true_release {
        assert!(hi - lo <= 300, "seq {seq}: spread {} ns", hi - lo);
    }
}
