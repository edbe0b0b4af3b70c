//! Authentication in the simulator, and Byzantine injectors.
//!
//! With [`Byzantine`] set in a scenario's faults, every node runs its real
//! guard with real keys (seeded): the publisher tags every packet, nodes tag
//! their delay reports, and every delivery passes the receiving node's
//! guard first. The injector then sends, at random times, to random nodes:
//! forged packets (untagged or under the attacker's own keys, with hostile
//! sequences, sessions, deadlines and streams), replays of authentic packets
//! captured on the wire, and an insider's packets (valid feed tags and its
//! own report key, from its own address). Forged payloads carry
//! [`FORGED_MARK`]; a receiver that releases one is an invariant violation.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use jasper_core::auth::{Auth, KeyRole, MasterKeys};
use jasper_core::guard::{Guard, GuardRole, GuardStats, Sources, TrustSection};
use jasper_core::model::SimRng as Xoshiro256PlusPlus;
use jasper_core::plan::{NodeId, Plan, Role};
use jasper_core::wire::{
    emit_control, emit_report, Control, ControlOp, DataBuilder, DelayReport, Header, Kind,
};
use rand::{Rng, RngCore};

/// Payload marker of every forged message.
pub const FORGED_MARK: &[u8] = b"FORGED!!";

/// The injector's settings (part of a scenario's faults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Byzantine {
    /// Packets injected over the run.
    pub injections: u32,
    /// The MP (index) whose receiver keys the attacker holds, if any.
    pub insider_mp: Option<u32>,
    /// The attacker forges source addresses (only the tags stand in its way).
    /// With an insider this is the case `docs/SECURITY.md` does not cover.
    pub spoof: bool,
}

/// The simulated address of a node (the guard's source check).
pub fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, (id >> 16) as u8, (id >> 8) as u8, id as u8], 7000))
}

/// The attacker's own address (in no plan).
pub const ATTACKER: NodeId = 0x00FF_FFFF;

/// Keys and guards of every node.
pub(crate) struct Trust {
    pub(crate) guards: Vec<Guard>,
    pub(crate) auths: Vec<Auth>,
    /// The insider's sealer: its real feed and node keys, a made-up tree key.
    insider: Option<(NodeId, Auth)>,
    /// The outsider's keys (valid nowhere).
    outsider: Auth,
    /// Authentic packets seen on the wire, for replays: (from, to, bytes).
    captured: VecDeque<(NodeId, NodeId, Rc<[u8]>)>,
    cfg: Byzantine,
    /// Forged payloads handed to an MP.
    pub(crate) forged_released: u64,
    /// Packets injected.
    pub(crate) injected: u64,
}

fn role_of(plan: &Plan, id: NodeId) -> (KeyRole, GuardRole) {
    match plan.nodes[id as usize].role {
        Role::Sender => (KeyRole::Sender, GuardRole::Sender),
        Role::Proxy { .. } => (KeyRole::Proxy, GuardRole::Proxy),
        Role::Receiver { .. } => (KeyRole::Receiver, GuardRole::Receiver),
    }
}

impl Trust {
    pub(crate) fn new(
        plan: &Plan,
        tables: &[jasper_core::plan::ForwardingTable],
        seed: u64,
        cfg: Byzantine,
    ) -> Trust {
        let mut r = [0u8; 96];
        let mut g = jasper_core::model::rng(seed ^ 0xB12A_17E5);
        g.fill_bytes(&mut r);
        let masters = MasterKeys::from_random(1, &r);
        let n = plan.nodes.len();
        // Who sends to whom, over every spraying rotation (the scheme may
        // have rewired the plan's tables, e.g. direct unicast).
        let mut ups: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        for (id, t) in tables.iter().enumerate() {
            let rotations = match &t.fanout {
                jasper_core::plan::Fanout::Hedged { slots, .. } => slots.len().max(1) as u64,
                _ => 1,
            };
            for key in 0..rotations {
                t.fanout
                    .for_each(key, |c, _| ups[c as usize].push(id as NodeId));
            }
        }
        let mut auths = Vec::with_capacity(n);
        let mut guards = Vec::with_capacity(n);
        for id in 0..n as NodeId {
            let (kr, gr) = role_of(plan, id);
            let auth = Auth::new(&masters.key_file(kr, id, None));
            let t = &tables[id as usize];
            let sources = Sources {
                upstream: ups[id as usize].iter().map(|u| addr(*u)).collect(),
                children: t
                    .report_children
                    .iter()
                    .map(|c| (*c, vec![addr(*c)]))
                    .collect(),
                // Whoever this node feeds may ask it for retransmissions.
                downstream: (0..n as NodeId)
                    .filter(|c| ups[*c as usize].contains(&id))
                    .map(|c| (c, vec![addr(c)]))
                    .collect(),
            };
            guards.push(Guard::new(
                gr,
                TrustSection {
                    streams: vec![1],
                    // Simulated clocks may miss their bound by far more
                    // than real ones: keep plausibility wide.
                    deadline_past_ns: 10_000_000_000,
                    deadline_future_ns: 1_000_000_000,
                    report_max_age_ns: 1_000_000_000,
                    ..TrustSection::default()
                },
                Some(auth.clone()),
                sources,
            ));
            auths.push(auth);
        }
        let fake = MasterKeys::from_random(1, &[0x5a; 96]);
        let insider = cfg.insider_mp.and_then(|mp| {
            let id = *plan.endpoints_of(mp).first()?;
            let mut kf = masters.key_file(KeyRole::Receiver, id, None);
            for k in &mut kf.keyset {
                k.tree = fake.for_node(KeyRole::Sender, 0).tree;
            }
            Some((id, Auth::new(&kf)))
        });
        Trust {
            guards,
            auths,
            insider,
            outsider: Auth::new(&fake.key_file(KeyRole::Sender, 0, None)),
            captured: VecDeque::new(),
            cfg,
            forged_released: 0,
            injected: 0,
        }
    }

    /// Remember an authentic packet (now and then) for later replays.
    pub(crate) fn capture(
        &mut self,
        from: NodeId,
        to: NodeId,
        pkt: &Rc<[u8]>,
        rng: &mut Xoshiro256PlusPlus,
    ) {
        if rng.random_range(0..16u32) == 0 {
            if self.captured.len() >= 256 {
                self.captured.pop_front();
            }
            self.captured.push_back((from, to, pkt.clone()));
        }
    }

    /// The guard counters of every node, summed.
    pub(crate) fn totals(&self) -> GuardStats {
        let mut t = GuardStats::default();
        for g in &self.guards {
            let s = g.stats();
            t.admitted += s.admitted;
            t.malformed += s.malformed;
            t.unexpected_kind += s.unexpected_kind;
            t.unknown_source += s.unknown_source;
            t.unknown_stream += s.unknown_stream;
            t.unauthenticated += s.unauthenticated;
            t.unknown_key_id += s.unknown_key_id;
            t.bad_tag += s.bad_tag;
            t.not_a_child += s.not_a_child;
            t.replayed += s.replayed;
            t.stale_report += s.stale_report;
            t.deadline_out_of_range += s.deadline_out_of_range;
        }
        t
    }

    /// One injected packet: (from as seen by the target, target, bytes).
    pub(crate) fn forge(
        &mut self,
        plan: &Plan,
        tables: &[jasper_core::plan::ForwardingTable],
        now_ns: u64,
        next_seq: u64,
        session: u32,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Option<(NodeId, NodeId, Rc<[u8]>)> {
        self.injected += 1;
        let n = plan.nodes.len() as NodeId;
        let to = rng.random_range(0..n);
        let spoofed_from = |rng: &mut Xoshiro256PlusPlus| {
            let kids = &tables[to as usize].report_children;
            let pool: Vec<NodeId> = tables
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    let mut hit = false;
                    t.fanout.for_each(0, |c, _| hit |= c == to);
                    hit
                })
                .map(|(i, _)| i as NodeId)
                .chain(kids.iter().copied())
                .collect();
            if pool.is_empty() {
                ATTACKER
            } else {
                pool[rng.random_range(0..pool.len())]
            }
        };
        match rng.random_range(0..5u32) {
            // Replay of an authentic packet, from where it came.
            0 => {
                let i = rng.random_range(0..self.captured.len().max(1));
                let (from, orig_to, pkt) = self.captured.get(i)?.clone();
                let to = if rng.random_bool(0.5) { orig_to } else { to };
                Some((from, to, pkt))
            }
            // An insider's report for another id (or its own, elsewhere).
            1 if self.insider.is_some() => {
                let (me, auth) = self.insider.as_ref()?;
                let claim = if rng.random_bool(0.5) {
                    *me
                } else {
                    rng.random_range(0..n)
                };
                let mut buf = vec![0u8; 128];
                let mut h = Header::new(Kind::DelayReport);
                h.send_time_ns = now_ns;
                let len = emit_report(
                    &h,
                    &DelayReport {
                        node: claim,
                        receivers: 1,
                        owd_ns: if rng.random_bool(0.5) {
                            0
                        } else {
                            u64::MAX / 2
                        },
                        clock_bound_ns: 0,
                        samples: 1_000,
                    },
                    &mut buf,
                )
                .ok()?;
                let len = auth.seal_node(&mut buf, len, *me).ok()?;
                buf.truncate(len);
                let from = if self.cfg.spoof {
                    spoofed_from(rng)
                } else {
                    *me
                };
                Some((from, to, Rc::from(buf)))
            }
            // Forged publisher packets with hostile headers.
            _ => {
                let mut h = Header::new(Kind::Data);
                h.stream = if rng.random_bool(0.8) {
                    1
                } else {
                    rng.random_range(2..100_000)
                };
                h.session = if rng.random_bool(0.7) {
                    session
                } else {
                    session.wrapping_add(rng.random_range(1..1000))
                };
                h.seq = match rng.random_range(0..4u32) {
                    0 => next_seq,
                    1 => next_seq + (1 << 22),
                    2 => next_seq + (1 << 40),
                    _ => rng.random_range(0..next_seq.max(1)),
                };
                h.send_time_ns = now_ns;
                h.deadline_ns = match rng.random_range(0..3u32) {
                    0 => now_ns + 100_000,
                    1 => now_ns + 3_600_000_000_000,
                    _ => now_ns.saturating_sub(1_000_000),
                };
                let mut buf = vec![0u8; 512];
                let len = if rng.random_bool(0.2) {
                    h.kind = Kind::Control;
                    emit_control(
                        &h,
                        Control {
                            op: ControlOp::EndOfSession,
                            arg: h.seq,
                        },
                        &mut buf,
                    )
                    .ok()?
                } else {
                    let mut b = DataBuilder::new(&mut buf, 400).ok()?;
                    let mut m = FORGED_MARK.to_vec();
                    m.resize(36, b'!');
                    b.push(&m).ok()?;
                    b.finish(&h)
                };
                let (sealer, from) = match (&self.insider, rng.random_range(0..3u32)) {
                    (Some((me, a)), 0) => (
                        Some(a),
                        if self.cfg.spoof {
                            spoofed_from(rng)
                        } else {
                            *me
                        },
                    ),
                    (_, 1) => (
                        Some(&self.outsider),
                        if self.cfg.spoof {
                            spoofed_from(rng)
                        } else {
                            ATTACKER
                        },
                    ),
                    _ => (
                        None,
                        if self.cfg.spoof {
                            spoofed_from(rng)
                        } else {
                            ATTACKER
                        },
                    ),
                };
                let len = match sealer {
                    Some(a) => a.seal_publisher(&mut buf, len).ok()?,
                    None => len,
                };
                buf.truncate(len);
                Some((from, to, Rc::from(buf)))
            }
        }
    }
}

/// Does a released payload carry the forgery mark?
pub fn is_forged(payload: &[u8]) -> bool {
    payload.windows(FORGED_MARK.len()).any(|w| w == FORGED_MARK)
}
