//! # jasper-receiver
//!
//! What an MP runs: receives the hedged copies on one or two endpoints,
//! deduplicates, holds each message until its deadline on the node's clock,
//! and hands it to the MP's application at that instant:
//!
//! - through a Rust callback ([`ReceiverNode::release`] / [`run`]), or
//! - re-emitted on a local UDP socket in MoldUDP64 framing ([`mold::MoldEmitter`]),
//!   so existing feed handlers consume it unchanged.
//!
//! Release precision: the run loop sleeps (per the idle strategy) until
//! `spin_ns` before the earliest deadline, then spins on the clock and
//! releases at the deadline. The receiver reports its delay percentile to its
//! parent proxy every millisecond.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use jasper_core::config::NodeConfig;
//! use jasper_receiver::{run, ReceiverNode};
//! use jasper_io::runtime::ParentWatch;
//!
//! let cfg = NodeConfig::from_toml(&std::fs::read_to_string("mp1.toml").unwrap()).unwrap();
//! let mut nodes = vec![ReceiverNode::open(&cfg, None).unwrap()];
//! let stop = AtomicBool::new(false);
//! run(&mut nodes, &stop, ParentWatch::new(false), |_node, rel, payload, _host_ns| {
//!     // Called at the deadline, in deadline order; `rel.late` marks late messages.
//!     println!("seq {} ({} bytes) late={}", rel.seq, payload.len(), rel.late);
//! });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use jasper_core::clock::Clock;
use jasper_core::config::{IdleStrategy, NodeConfig};
use jasper_core::guard::{Guard, GuardStats};
use jasper_core::liveness::{Liveness, UpstreamState};
use jasper_core::receiver::{Event, Receiver, ReceiverStats, Release};
use jasper_core::wire::{emit_report, Header, Kind};
use jasper_io::clock::NodeClock;
use jasper_io::idle::Idler;
use jasper_io::node::{open_backend, peer_table, BoxedIo, DpdkOpener};
use jasper_io::runtime::ParentWatch;
use jasper_io::{host_now_ns, IoCounters, PacketIo};
use serde::Serialize;

mod live;
pub mod mold;

pub use jasper_core::receiver::Release as Released;

/// One MP's receiver (one or two endpoints feeding one state machine).
pub struct ReceiverNode {
    name: String,
    id: jasper_core::plan::NodeId,
    mp: Option<u32>,
    core: Receiver,
    guard: Guard,
    liveness: Liveness,
    io: BoxedIo,
    clock: NodeClock,
    parent: Option<SocketAddr>,
    /// The hedge endpoint's id and its parent's address (receiver hedging).
    hedge: Option<(jasper_core::plan::NodeId, SocketAddr)>,
    mold: Option<mold::MoldEmitter>,
    spin_ns: u64,
    idle: (IdleStrategy, u64),
    ended: bool,
    ended_at: Option<std::time::Instant>,
    exit_after_session: bool,
    liveness_at: u64,
    gaps: Vec<Event>,
    live: jasper_live::Exporter,
}

/// How often upstream liveness is checked, ns.
const LIVENESS_EVERY_NS: u64 = 10_000_000;

impl std::fmt::Debug for ReceiverNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverNode")
            .field("name", &self.name)
            .finish()
    }
}

/// Counters of a receiver.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverReport {
    /// Node name.
    pub name: String,
    /// Plan id.
    pub node_id: u32,
    /// State-machine counters.
    pub core: ReceiverStats,
    /// Packets received by the backend.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit drops (reports).
    pub tx_dropped: u64,
    /// MoldUDP64 packets emitted.
    pub mold_packets: u64,
    /// Datagrams truncated by the receive buffer (dropped).
    pub rx_truncated: u64,
    /// The guard: every refused packet by reason.
    pub guard: GuardStats,
    /// Packets are authenticated (false only in insecure mode).
    pub authenticated: bool,
    /// Upstreams (liveness).
    pub upstreams: Vec<UpstreamState>,
    /// Upstreams currently dead.
    pub upstreams_dead: Vec<u32>,
    /// Messages held now, and their payload bytes.
    pub held: usize,
    /// Payload bytes held now.
    pub held_bytes: usize,
    /// Clock status at the time of the report (synchronized / degraded / unsynchronized).
    pub clock_status: &'static str,
    /// Clock error bound, ns.
    pub clock_bound_ns: u64,
}

impl ReceiverNode {
    /// Open the configured backend and build the node.
    pub fn open(cfg: &NodeConfig, dpdk: Option<DpdkOpener>) -> Result<Self, String> {
        let io = open_backend(cfg, dpdk)?;
        Self::with_io(cfg, io)
    }

    /// Build on an opened backend.
    pub fn with_io(cfg: &NodeConfig, io: BoxedIo) -> Result<Self, String> {
        let peers = peer_table(cfg);
        let mold = match cfg.receiver.mold_udp {
            Some(dst) => Some(
                mold::MoldEmitter::new(dst, &cfg.receiver.mold_session)
                    .map_err(|e| format!("MoldUDP64 socket for {dst}: {e}"))?,
            ),
            None => None,
        };
        Ok(ReceiverNode {
            name: cfg.node.name.clone(),
            id: cfg.node.id,
            mp: cfg.node.mp,
            core: Receiver::new(cfg.node.id, cfg.receiver.core),
            guard: jasper_io::trust::guard(cfg)?,
            liveness: jasper_io::trust::liveness(cfg),
            io,
            clock: NodeClock::from_config(&cfg.clock),
            parent: cfg
                .table
                .parent
                .and_then(|p| peers.get(p as usize).copied().flatten()),
            hedge: cfg
                .node
                .hedge
                .and_then(|h| Some((h.id, peers.get(h.parent as usize).copied().flatten()?))),
            mold,
            spin_ns: cfg.receiver.spin_ns,
            idle: (cfg.backend.idle, cfg.backend.max_sleep_us),
            ended: false,
            ended_at: None,
            exit_after_session: false,
            liveness_at: 0,
            gaps: Vec::new(),
            live: jasper_live::Exporter::open(cfg)?,
        })
    }

    /// Make [`run`] return once this node's session ended and drained
    /// (test harnesses). By default a receiver is a service: an end of
    /// session ends the session, never the process.
    pub fn set_exit_after_session(&mut self, on: bool) {
        self.exit_after_session = on;
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// MP index from the plan.
    pub fn mp(&self) -> Option<u32> {
        self.mp
    }

    /// Receive one burst into the state machine; returns packets handled.
    pub fn receive(&mut self) -> io::Result<usize> {
        let n = self.io.recv_burst()?;
        let bound = self.clock.error_bound_ns();
        for i in 0..n {
            let (meta, bytes) = self.io.rx(i);
            let at = self.clock.at(meta.host_rx_ns);
            // Hedged copies of what was already accepted: dropped before the
            // tag check (read-only), counted as duplicates.
            if self.core.is_duplicate(bytes) {
                self.core.count_duplicate(bytes);
                continue;
            }
            // Nothing reaches the state machine unless the guard admits it.
            if let Ok(repr) = self.guard.admit(at, meta.src, bytes) {
                self.liveness
                    .heard(at, meta.src, jasper_core::liveness::ends_session(&repr));
                self.core.handle_repr(at, bound, &repr);
            }
        }
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::EndOfSession { next_seq, .. } => {
                    self.ended = true;
                    self.ended_at = Some(std::time::Instant::now());
                    if let Some(m) = &mut self.mold {
                        m.end_of_session(next_seq);
                    }
                }
                // A restarted publisher: the node serves the new session.
                Event::NewSession { .. } => {
                    self.ended = false;
                    self.ended_at = None;
                }
                Event::Gap { .. } if self.gaps.len() < 1024 => self.gaps.push(e),
                _ => {}
            }
        }
        Ok(n)
    }

    /// Release every due message: `on(record, payload, host_release_ns)`.
    pub fn release(&mut self, on: &mut dyn FnMut(&Release, &[u8], u64)) -> usize {
        let now = self.clock.now_ns();
        let (mold, live) = (&mut self.mold, &mut self.live);
        self.core.poll_release(now, |rel, payload| {
            let host = host_now_ns();
            live.released(rel);
            if let Some(m) = mold.as_mut() {
                m.push(rel.seq, payload);
            }
            on(rel, payload, host)
        })
    }

    /// Reports to the parent, MoldUDP64 flush/heartbeat, transmit.
    pub fn housekeeping(&mut self) -> io::Result<()> {
        let now = self.clock.now_ns();
        if now.saturating_sub(self.liveness_at) >= LIVENESS_EVERY_NS {
            self.liveness_at = now;
            self.liveness.poll(now);
        }
        live::tick(self, now);
        if let Some(rep) = self.core.poll_report(now) {
            let mut h = Header::new(Kind::DelayReport);
            h.send_time_ns = now;
            let mut buf = [0u8; 128];
            if let Some(parent) = self.parent {
                if let Some(len) = self.emit_report(&h, &rep, self.id, &mut buf) {
                    self.io.send_to(&buf[..len], parent);
                }
            }
            // A hedged MP also reports, as its second endpoint, to that
            // endpoint's parent (a proxy only counts its own children).
            if let Some((id, parent)) = self.hedge {
                let rep = jasper_core::wire::DelayReport { node: id, ..rep };
                if let Some(len) = self.emit_report(&h, &rep, id, &mut buf) {
                    self.io.send_to(&buf[..len], parent);
                }
            }
        }
        if let Some(m) = &mut self.mold {
            m.flush();
            m.heartbeat_if_idle();
        }
        self.io.flush()?;
        Ok(())
    }

    /// A delay report speaking for node `as_node`, tagged with its key.
    fn emit_report(
        &self,
        h: &Header,
        rep: &jasper_core::wire::DelayReport,
        as_node: jasper_core::plan::NodeId,
        buf: &mut [u8],
    ) -> Option<usize> {
        let len = emit_report(h, rep, buf).ok()?;
        match self.guard.auth() {
            Some(a) => a.seal_node(buf, len, as_node).ok(),
            None => Some(len),
        }
    }

    /// Host time of the earliest held deadline.
    pub fn next_release_host_ns(&self) -> Option<u64> {
        self.core
            .next_deadline()
            .map(|d| self.clock.host_time_of(d))
    }

    /// The session ended, nothing is held, and every sequence arrived — or
    /// 200 ms passed since the end-of-session notice (which can overtake
    /// the last data packets) for the missing ones to show up.
    pub fn finished(&self) -> bool {
        let st = self.core.stats();
        let complete = st.gaps_detected == st.gaps_filled;
        let grace_over = self
            .ended_at
            .is_some_and(|t| t.elapsed() >= std::time::Duration::from_millis(200));
        self.ended && self.core.held() == 0 && (complete || grace_over)
    }

    /// Gaps seen (first 1024).
    pub fn gaps(&self) -> &[Event] {
        &self.gaps
    }

    /// Counters.
    pub fn report(&self) -> ReceiverReport {
        let c: IoCounters = self.io.counters();
        ReceiverReport {
            name: self.name.clone(),
            node_id: self.id,
            core: self.core.stats().clone(),
            rx_packets: c.rx_packets,
            rx_errors: c.rx_errors,
            tx_dropped: c.tx_dropped,
            mold_packets: self.mold.as_ref().map_or(0, |m| m.packets()),
            rx_truncated: c.rx_truncated,
            guard: self.guard.stats().clone(),
            authenticated: self.guard.authenticating(),
            upstreams: self.liveness.states().to_vec(),
            upstreams_dead: self.liveness.dead(),
            held: self.core.held(),
            held_bytes: self.core.held_bytes(),
            clock_status: self.clock.status().name(),
            clock_bound_ns: self.clock.error_bound_ns(),
        }
    }

    /// The node's clock.
    pub fn clock(&self) -> &NodeClock {
        &self.clock
    }

    /// The clock's error bound.
    pub fn clock_bound_ns(&self) -> u64 {
        self.clock.error_bound_ns()
    }

    /// Local endpoints.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.io.local_addrs()
    }
}

/// Drive several receivers (logical MPs sharing a process) until `stop`,
/// the parent exits, or every one saw the end of session and drained.
/// `on(node_index, record, payload, host_release_ns)` is called at release.
pub fn run(
    nodes: &mut [ReceiverNode],
    stop: &AtomicBool,
    watch: ParentWatch,
    mut on: impl FnMut(usize, &Release, &[u8], u64),
) {
    let Some(first) = nodes.first() else { return };
    let spin_ns = nodes.iter().map(|n| n.spin_ns).max().unwrap_or(0);
    let mut idler = Idler::new(first.idle.0, first.idle.1);
    let mut rounds = 0u32;
    let fds: Vec<_> = nodes.iter().flat_map(|n| n.io.wait_fds()).collect();
    loop {
        if stop.load(Ordering::Relaxed) || (rounds % 4096 == 0 && watch.parent_gone()) {
            break;
        }
        rounds = rounds.wrapping_add(1);
        let mut work = 0;
        for (i, n) in nodes.iter_mut().enumerate() {
            work += n.receive().unwrap_or(0);
            work += n.release(&mut |r, p, h| on(i, r, p, h));
            let _ = n.housekeeping();
        }
        if nodes.iter().all(|n| n.exit_after_session && n.finished()) {
            break;
        }
        let next = nodes.iter().filter_map(|n| n.next_release_host_ns()).min();
        let timers = nodes.iter().filter_map(|n| n.io.next_timer_ns()).min();
        let now = host_now_ns();
        if let Some(due) = next {
            if due <= now + spin_ns {
                // The last stretch: spin on the clock, then release exactly.
                while host_now_ns() < due {
                    std::hint::spin_loop();
                }
                for (i, n) in nodes.iter_mut().enumerate() {
                    n.release(&mut |r, p, h| on(i, r, p, h));
                }
                continue;
            }
        }
        let wake = next
            .map(|d| d.saturating_sub(spin_ns))
            .into_iter()
            .chain(timers)
            .min()
            .map(|t| t.saturating_sub(now));
        idler.idle(work, wake, &fds);
    }
    for n in nodes.iter_mut() {
        let _ = n.housekeeping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::config::{NodeRole, NodeSection, Peer};
    use jasper_core::plan::{Fanout, ForwardingTable};
    use jasper_core::sender::{SenderConfig, SenderCore};
    use jasper_io::mem::MemHub;

    #[test]
    fn releases_at_the_deadline_over_a_backend() {
        let me: SocketAddr = "10.1.0.2:1".parse().unwrap();
        let parent: SocketAddr = "10.1.0.1:1".parse().unwrap();
        let cfg = NodeConfig::with_defaults(
            NodeSection {
                id: 5,
                name: "mp".into(),
                role: NodeRole::Receiver,
                listen: vec![me],
                mp: Some(0),
                hedge: None,
            },
            ForwardingTable {
                node: 5,
                parent: Some(1),
                upstreams: vec![1],
                report_children: vec![],
                fanout: Fanout::None,
            },
            vec![Peer {
                id: 1,
                addr: parent,
                mp: None,
            }],
        );
        let mut cfg = cfg;
        cfg.receiver.core.report_interval_ns = 100_000;
        cfg.validate().unwrap();
        let hub = MemHub::new();
        let mut node = ReceiverNode::with_io(&cfg, Box::new(hub.attach(&[me], 32))).unwrap();
        node.set_exit_after_session(true);
        let mut up = hub.attach(&[parent], 32);
        let mut s = SenderCore::new(SenderConfig::default());
        let clock = NodeClock::from_config(&Default::default());
        for i in 0..3u8 {
            s.publish(clock.read(), &[i]).unwrap();
        }
        s.end_session(clock.read());
        while let Some(p) = s.poll_transmit() {
            up.send_to(&p, me);
        }
        up.flush().unwrap();
        let stop = AtomicBool::new(false);
        let mut got = Vec::new();
        run(
            std::slice::from_mut(&mut node),
            &stop,
            ParentWatch::new(false),
            |_, r, p, host| {
                got.push((r.seq, p.to_vec(), host, r.deadline_ns));
            },
        );
        assert_eq!(got.len(), 3);
        for (i, (seq, p, host, deadline)) in got.iter().enumerate() {
            assert_eq!((*seq, p.as_slice()), (i as u64, &[i as u8][..]));
            assert!(host >= deadline, "released before the deadline");
        }
        assert!(node.finished());
        // A delay report went to the parent.
        assert!(up.recv_burst().unwrap() >= 1);
    }
}
