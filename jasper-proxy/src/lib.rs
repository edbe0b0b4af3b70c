//! # jasper-proxy
//!
//! A proxy node: receives packets in bursts, lets [`jasper_core::proxy::ProxyCore`]
//! decide, forwards each data packet to its hedged fan-out (the backend
//! batches all copies of a burst: one `sendmmsg` or `tx_burst` for many
//! children and packets), reduces children's delay reports and sends the max
//! to its parent. Runs on any [`jasper_io::PacketIo`] backend.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use jasper_core::clock::Clock;
use jasper_core::config::{NodeConfig, NodeRole};
use jasper_core::deadline::ChildFlags;
use jasper_core::guard::{Guard, GuardStats};
use jasper_core::liveness::{Liveness, UpstreamState};
use jasper_core::proxy::{ProxyCore, ProxyStats, Verdict};
use jasper_core::wire::{self, emit_report, Header, Kind};
use jasper_io::clock::NodeClock;
use jasper_io::idle::Idler;
use jasper_io::node::{peer_table, BoxedIo};
use jasper_io::runtime::ParentWatch;
use jasper_io::{host_now_ns, IoCounters, PacketIo};
use serde::Serialize;

mod live;

/// A running proxy.
pub struct ProxyNode {
    core: ProxyCore,
    guard: Guard,
    liveness: Liveness,
    liveness_at: u64,
    io: BoxedIo,
    clock: NodeClock,
    peers: Vec<Option<SocketAddr>>,
    dsts: Vec<SocketAddr>,
    unknown_peer: u64,
    request_stamp: u64,
    /// Packets of the current burst that are not data, handled after the
    /// data's copies have left.
    later: Vec<usize>,
    idler: Idler,
    live: jasper_live::Exporter,
}

impl std::fmt::Debug for ProxyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyNode")
            .field("node", &self.core.node())
            .finish()
    }
}

/// Counters of a proxy, for reports and `--stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    /// Node name.
    pub name: String,
    /// Plan id.
    pub node_id: u32,
    /// State-machine counters.
    pub core: ProxyStats,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Copies dropped at transmit.
    pub tx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Destinations with no address.
    pub unknown_peer: u64,
    /// Copies lost by fault injection.
    pub injected_loss: u64,
    /// Datagrams truncated by the receive buffer (dropped).
    pub rx_truncated: u64,
    /// Packets read more than 1 ms after the kernel received them.
    pub rx_queued_over_1ms: u64,
    /// Time received packets waited in the socket's queue, summed, ns.
    pub rx_queue_ns: u64,
    /// Super-packets sent with segmentation offload (UDP GSO).
    pub tx_offload_batches: u64,
    /// Coalesced arrivals (UDP GRO) split back into packets.
    pub rx_offload_batches: u64,
    /// The guard: every refused packet by reason (authentication, source,
    /// stream, plausibility).
    pub guard: GuardStats,
    /// Packets are authenticated (false only in insecure mode).
    pub authenticated: bool,
    /// Per child: delay reports clamped to the ceiling, and reductions it
    /// alone dominated (outliers).
    pub children: Vec<ChildFlags>,
    /// Retransmission: requests answered, passed up, limited; the store.
    pub retransmit: jasper_core::retransmit::RetransmitStats,
    /// Upstreams (liveness).
    pub upstreams: Vec<UpstreamState>,
    /// Upstreams currently dead.
    pub upstreams_dead: Vec<u32>,
    /// Clock status at the time of the report (synchronized / degraded / unsynchronized).
    pub clock_status: &'static str,
    /// Clock error bound, ns.
    pub clock_bound_ns: u64,
}

impl ProxyNode {
    /// Build from a validated config and an opened backend; loads the
    /// node's keys (an error names the key file and the fix).
    pub fn new(cfg: &NodeConfig, io: BoxedIo) -> Result<Self, String> {
        Ok(ProxyNode {
            core: ProxyCore::new(cfg.table.clone(), cfg.proxy),
            guard: jasper_io::trust::guard(cfg)?,
            liveness: jasper_io::trust::liveness(cfg),
            liveness_at: 0,
            io,
            clock: NodeClock::from_config(&cfg.clock),
            peers: peer_table(cfg),
            dsts: Vec::with_capacity(64),
            unknown_peer: 0,
            request_stamp: 0,
            later: Vec::new(),
            idler: Idler::from_config(&cfg.backend),
            live: jasper_live::Exporter::open(cfg)?,
        })
    }

    /// One duty cycle: a receive burst, forwarding, reports, flush.
    /// Returns the packets handled. Data goes first: the burst's data
    /// packets are checked and their copies sent before the rest of the
    /// burst (children's delay reports, retransmit requests, heartbeats) is
    /// even checked, so a proxy whose children all reported in the same
    /// millisecond does not hold the next packet back for their tags.
    pub fn poll(&mut self) -> io::Result<usize> {
        let n = self.io.recv_burst()?;
        self.later.clear();
        let mut forwarded = false;
        for i in 0..n {
            if wire::peek_kind(self.io.rx(i).1) == Some(Kind::Data) {
                forwarded |= self.handle(i);
            } else {
                self.later.push(i);
            }
        }
        if forwarded && !self.later.is_empty() {
            self.io.flush()?;
        }
        for k in 0..self.later.len() {
            let i = self.later[k];
            self.handle(i);
        }
        self.housekeeping()?;
        Ok(n)
    }

    /// Check packet `i` of the burst and act on it; true when it was
    /// forwarded.
    fn handle(&mut self, i: usize) -> bool {
        let (meta, buf) = self.io.rx(i);
        let now = self.clock.at(meta.host_rx_ns);
        // Hedged duplicates are dropped before authentication (a
        // read-only check): one tag verification per packet, not per copy.
        if self.core.is_duplicate(buf) {
            self.core.count_duplicate();
            return false;
        }
        let ends = match self.guard.admit(now, meta.src, buf) {
            Ok(r) => jasper_core::liveness::ends_session(&r),
            Err(_) => return false,
        };
        self.liveness.heard(now, meta.src, ends);
        match self.core.handle_admitted(now, buf) {
            Verdict::Forward { key } => {
                self.dsts.clear();
                let (peers, dsts, unknown) = (&self.peers, &mut self.dsts, &mut self.unknown_peer);
                self.core.for_each_destination(key, |d, _| {
                    match peers.get(d as usize).copied().flatten() {
                        Some(a) => dsts.push(a),
                        None => *unknown += 1,
                    }
                });
                self.io.forward(i, &self.dsts);
                true
            }
            // Re-send the stored packets, unchanged, to the requester.
            Verdict::Answer => {
                let (peers, io, unknown) = (&self.peers, &mut self.io, &mut self.unknown_peer);
                self.core.answer(now, |bytes, to| {
                    match peers.get(to as usize).copied().flatten() {
                        Some(a) => io.send_to(bytes, a),
                        None => *unknown += 1,
                    }
                });
                false
            }
            _ => false,
        }
    }

    /// After a burst: retransmit requests upstream, liveness and expiry,
    /// metrics, this node's delay report, then everything queued goes out.
    fn housekeeping(&mut self) -> io::Result<()> {
        // What children asked for and this node lacks: ask every upstream.
        while let Some(r) = self.core.poll_upstream_request() {
            // Strictly increasing stamps: upstreams refuse a request not
            // newer than the last one (replays).
            let now = self.clock.now_ns().max(self.request_stamp + 1);
            self.request_stamp = now;
            let mut buf = [0u8; 128];
            if let Some(len) = jasper_core::retransmit::emit_sealed_request(
                self.guard.auth(),
                self.core.node(),
                now,
                &r,
                &mut buf,
            ) {
                for u in self.core.table().upstreams.iter() {
                    if let Some(a) = self.peers.get(*u as usize).copied().flatten() {
                        self.io.send_to(&buf[..len], a);
                    }
                }
            }
        }
        let now = self.clock.now_ns();
        if now.saturating_sub(self.liveness_at) >= 10_000_000 {
            self.liveness_at = now;
            self.liveness.poll(now);
            self.core.expire(now);
        }
        live::tick(self, now);
        if let Some((parent, rep)) = self.core.poll_report(now) {
            let mut buf = [0u8; 128];
            let mut h = Header::new(Kind::DelayReport);
            h.send_time_ns = now;
            let len =
                emit_report(&h, &rep, &mut buf)
                    .ok()
                    .and_then(|len| match self.guard.auth() {
                        Some(a) => a.seal_node(&mut buf, len, self.core.node()).ok(),
                        None => Some(len),
                    });
            // The primary parent, then the other roots (below hedged roots).
            let targets =
                std::iter::once(parent).chain(self.core.table().report_also.iter().copied());
            for t in targets {
                if let (Some(len), Some(addr)) =
                    (len, self.peers.get(t as usize).copied().flatten())
                {
                    self.io.send_to(&buf[..len], addr);
                }
            }
        }
        self.io.flush()?;
        Ok(())
    }

    /// Run until `stop` is set (or the managing parent exits).
    pub fn run(&mut self, stop: &AtomicBool, watch: ParentWatch) -> io::Result<()> {
        self.run_until(stop, &AtomicBool::new(false), watch)
            .map(|_| ())
    }

    /// Run until `stop` or `reload` is set (or the managing parent exits);
    /// returns true when `reload` ended the run (the caller reloads the
    /// config with [`ProxyNode::reload`] and runs again).
    pub fn run_until(
        &mut self,
        stop: &AtomicBool,
        reload: &AtomicBool,
        watch: ParentWatch,
    ) -> io::Result<bool> {
        let mut rounds = 0u32;
        let fds = self.io.wait_fds();
        while !stop.load(Ordering::Relaxed) {
            if reload.load(Ordering::Relaxed) {
                return Ok(true);
            }
            let n = self.poll()?;
            let wake = self
                .next_wake_host_ns()
                .map(|t| t.saturating_sub(host_now_ns()));
            self.idler.idle(n, wake, &fds);
            rounds = rounds.wrapping_add(1);
            if rounds % 4096 == 0 && watch.parent_gone() {
                break;
            }
        }
        Ok(false)
    }

    /// Host time of this node's next timer (a delayed packet due to leave,
    /// a report or expiry due), if any.
    pub fn next_wake_host_ns(&self) -> Option<u64> {
        self.io
            .next_timer_ns()
            .into_iter()
            .chain(self.core.poll_timeout().map(|t| self.clock.host_time_of(t)))
            .min()
    }

    /// Run as a service until `stop`: on every SIGHUP re-read `config` and
    /// take it in place ([`ProxyNode::reload`]); a config that cannot be
    /// taken is reported and the running one kept.
    pub fn serve(
        &mut self,
        config: &std::path::Path,
        stop: &AtomicBool,
        watch: ParentWatch,
    ) -> io::Result<()> {
        let reload = jasper_io::runtime::reload_on_sighup();
        while self.run_until(stop, &reload, watch)? {
            reload.store(false, Ordering::SeqCst);
            let name = format!("node {}", self.core.node());
            match jasper_io::node::load_config(config, NodeRole::Proxy)
                .and_then(|c| self.reload(&c))
            {
                Ok(()) => eprintln!("{name}: reloaded {}", config.display()),
                Err(e) => eprintln!("{name}: reload refused, running on: {e}"),
            }
        }
        Ok(())
    }

    /// Take a re-read config without a restart: the new forwarding table,
    /// source allowlists, peers and keys. Per-stream dedup state and the
    /// retransmit store carry over, so no message is forwarded twice or
    /// dropped across the reload. The node id and listen addresses must not
    /// change (that needs a restart); other sections are read at start only.
    pub fn reload(&mut self, cfg: &NodeConfig) -> Result<(), String> {
        if cfg.node.role != NodeRole::Proxy {
            return Err(format!("{:?} is not a proxy config", cfg.node.name));
        }
        let here = self.io.local_addrs();
        if let Some(a) = cfg.node.listen.iter().find(|a| !here.contains(a)) {
            return Err(format!(
                "listen address {a} is new: addresses change only with a restart"
            ));
        }
        let mut guard = jasper_io::trust::guard(cfg)?;
        self.core.set_table(cfg.table.clone())?;
        guard.continue_counts(&self.guard);
        self.guard = guard;
        self.liveness = jasper_io::trust::liveness(cfg);
        self.peers = peer_table(cfg);
        Ok(())
    }

    /// Counters.
    pub fn report(&self, name: &str) -> ProxyReport {
        let c: IoCounters = self.io.counters();
        ProxyReport {
            name: name.to_string(),
            node_id: self.core.node(),
            core: self.core.stats().clone(),
            rx_packets: c.rx_packets,
            tx_packets: c.tx_packets,
            tx_dropped: c.tx_dropped,
            rx_errors: c.rx_errors,
            rx_truncated: c.rx_truncated,
            rx_queued_over_1ms: c.rx_queued_over_1ms,
            rx_queue_ns: c.rx_queue_ns,
            tx_offload_batches: c.tx_offload_batches,
            rx_offload_batches: c.rx_offload_batches,
            guard: self.guard.stats().clone(),
            authenticated: self.guard.authenticating(),
            children: self.core.child_flags().to_vec(),
            retransmit: self.core.retransmit_stats(),
            upstreams: self.liveness.states().to_vec(),
            upstreams_dead: self.liveness.dead(),
            unknown_peer: self.unknown_peer,
            injected_loss: c.injected_loss,
            clock_status: self.clock.status().name(),
            clock_bound_ns: self.clock.error_bound_ns(),
        }
    }

    /// The node's clock (status and bound are shown at start-up and in reports).
    pub fn clock(&self) -> &NodeClock {
        &self.clock
    }

    /// The backend (for counters and addresses).
    pub fn io(&self) -> &dyn PacketIo {
        &*self.io
    }
}

/// Drive several proxies from one thread until `stop` (or the managing
/// parent exits): each duty cycle polls every node once, in order, then the
/// loop idles (the first node's `[backend]` idle strategy) until a packet
/// reaches any of their sockets or the earliest of their timers is due.
///
/// What a machine with fewer cores than proxies affords: proxies listed
/// parent first, a packet the first forwards over loopback is already in
/// its children's sockets when they are polled, so a packet crosses the
/// whole group in one wake-up instead of one per process. Nodes keep their
/// own sockets, keys, tables and counters; only the thread is shared.
pub fn run_group(nodes: &mut [ProxyNode], stop: &AtomicBool, watch: ParentWatch) -> io::Result<()> {
    let Some(first) = nodes.first() else {
        return Ok(());
    };
    let mut idler = first.idler.clone();
    let fds: Vec<_> = nodes.iter().flat_map(|n| n.io.wait_fds()).collect();
    let mut rounds = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut work = 0;
        for n in nodes.iter_mut() {
            work += n.poll()?;
        }
        let now = host_now_ns();
        let wake = nodes
            .iter()
            .filter_map(|n| n.next_wake_host_ns())
            .min()
            .map(|t| t.saturating_sub(now));
        idler.idle(work, wake, &fds);
        rounds = rounds.wrapping_add(1);
        if rounds % 4096 == 0 && watch.parent_gone() {
            break;
        }
    }
    Ok(())
}

/// The DPDK opener when built with `--features dpdk`.
pub fn dpdk_opener() -> Option<jasper_io::node::DpdkOpener> {
    #[cfg(feature = "dpdk")]
    {
        Some(jasper_dpdk::open_backend)
    }
    #[cfg(not(feature = "dpdk"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::config::{NodeRole, NodeSection, Peer};
    use jasper_core::plan::{loopback_inventory, Plan, TreeSpec};
    use jasper_core::wire::{DataBuilder, Repr};
    use jasper_io::mem::MemHub;

    #[test]
    fn forwards_to_hedged_fanout_over_a_backend() {
        let plan = small_tree(1, 42000);
        let id = plan.levels[1][0];
        let node = &plan.nodes[id as usize];
        let cfg = NodeConfig::with_defaults(
            NodeSection {
                id,
                name: node.name.clone(),
                role: NodeRole::Proxy,
                listen: vec![node.addr],
                mp: None,
                hedge: None,
            },
            plan.tables[id as usize].clone(),
            plan.nodes
                .iter()
                .map(|n| Peer {
                    id: n.id,
                    addr: n.addr,
                    mp: None,
                })
                .collect(),
        );
        cfg.validate().unwrap();
        let hub = MemHub::new();
        let mut proxy = ProxyNode::new(&cfg, Box::new(hub.attach(&[node.addr], 32))).unwrap();
        let receivers: Vec<_> = plan
            .endpoints()
            .map(|e| (e, hub.attach(&[plan.nodes[e as usize].addr], 32)))
            .collect();
        let mut src = hub.attach(&[plan.nodes[1].addr], 32);
        let mut buf = [0u8; 256];
        let mut b = DataBuilder::new(&mut buf, 256).unwrap();
        b.push(b"msg").unwrap();
        let mut h = Header::new(Kind::Data);
        h.stream = 1;
        h.deadline_ns = host_now_ns() + 1_000_000;
        let n = b.finish(&h);
        // Refused first: a source that is not an upstream, then a stream the
        // plan does not list.
        let mut stranger = hub.attach(&["10.9.9.9:9".parse().unwrap()], 32);
        stranger.send_to(&buf[..n], node.addr);
        stranger.flush().unwrap();
        let mut other = buf;
        other[8..12].copy_from_slice(&2u32.to_be_bytes());
        src.send_to(&other[..n], node.addr);
        src.send_to(&buf[..n], node.addr);
        src.flush().unwrap();
        assert_eq!(proxy.poll().unwrap(), 3);
        let g = proxy.report("p").guard;
        assert_eq!((g.unknown_source, g.unknown_stream, g.admitted), (1, 1, 1));
        let mut got = 0;
        for (_, mut r) in receivers {
            let k = r.recv_burst().unwrap();
            for i in 0..k {
                let (_, p) = r.rx(i);
                assert_eq!(Repr::parse_bytes(p).unwrap().header.path, id as u16);
            }
            got += k;
        }
        assert_eq!(got, 4, "(H+1)·F = 2·2 copies");
        assert_eq!(proxy.report("p").core.copies_out, 4);
    }

    fn proxy_cfg(plan: &Plan, id: u32) -> NodeConfig {
        let node = &plan.nodes[id as usize];
        let mut cfg = NodeConfig::with_defaults(
            NodeSection {
                id,
                name: node.name.clone(),
                role: NodeRole::Proxy,
                listen: vec![node.addr],
                mp: None,
                hedge: None,
            },
            plan.tables[id as usize].clone(),
            plan.nodes
                .iter()
                .map(|n| Peer {
                    id: n.id,
                    addr: n.addr,
                    mp: None,
                })
                .collect(),
        );
        cfg.trust.insecure = true;
        cfg
    }

    /// Root → two level-2 proxies → four receivers on loopback ports from
    /// `port`, with sibling hedging `hedge`.
    fn small_tree(hedge: u32, port: u16) -> Plan {
        let spec = TreeSpec {
            depth: Some(2),
            fanout: Some(2),
            hedge,
            spray: false,
            roots: 1,
        };
        Plan::build(&loopback_inventory(3, 4, false, port), &spec).unwrap()
    }

    /// A one-message data packet of stream 1, due in 1 ms.
    fn data_packet(seq: u64) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut b = DataBuilder::new(&mut buf, 256).unwrap();
        b.push(b"msg").unwrap();
        let mut h = Header::new(Kind::Data);
        h.stream = 1;
        h.seq = seq;
        h.deadline_ns = host_now_ns() + 1_000_000;
        let n = b.finish(&h);
        buf[..n].to_vec()
    }

    #[test]
    fn a_reload_takes_the_new_table_and_forwards_nothing_twice() {
        let hedged = small_tree(1, 42100);
        let plain = small_tree(0, 42100);
        let id = hedged.levels[1][0];
        let hub = MemHub::new();
        let me = hedged.nodes[id as usize].addr;
        let mut proxy =
            ProxyNode::new(&proxy_cfg(&hedged, id), Box::new(hub.attach(&[me], 32))).unwrap();
        let mut receivers: Vec<_> = hedged
            .endpoints()
            .map(|e| hub.attach(&[hedged.nodes[e as usize].addr], 32))
            .collect();
        let mut src = hub.attach(&[hedged.nodes[1].addr], 32);
        let mut copies = |proxy: &mut ProxyNode, seq: u64| {
            src.send_to(&data_packet(seq), me);
            src.flush().unwrap();
            proxy.poll().unwrap();
            receivers
                .iter_mut()
                .map(|r| r.recv_burst().unwrap())
                .sum::<usize>()
        };
        assert_eq!(copies(&mut proxy, 0), 4, "H = 1: (H+1)·F copies");
        // A re-plan without hedging, taken in place.
        proxy.reload(&proxy_cfg(&plain, id)).unwrap();
        assert_eq!(
            copies(&mut proxy, 0),
            0,
            "a copy forwarded before the reload stays a duplicate"
        );
        assert_eq!(copies(&mut proxy, 1), 2, "H = 0 now: F copies");
        // Another node's config, or a new listen address, is refused.
        let other = plain.levels[1][1];
        assert!(proxy.reload(&proxy_cfg(&plain, other)).is_err());
        let mut moved = proxy_cfg(&plain, id);
        moved.node.listen = vec!["127.0.0.1:1".parse().unwrap()];
        assert!(proxy.reload(&moved).is_err());
        assert_eq!(copies(&mut proxy, 2), 2);
    }

    /// A backend that logs which packets were read and how many sends
    /// each flush carried, in order.
    struct Recording {
        inner: Box<dyn PacketIo + Send>,
        queued: usize,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl PacketIo for Recording {
        fn recv_burst(&mut self) -> io::Result<usize> {
            self.inner.recv_burst()
        }
        fn rx(&mut self, i: usize) -> (jasper_io::RxMeta, &mut [u8]) {
            self.log.lock().unwrap().push(format!("read {i}"));
            self.inner.rx(i)
        }
        fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
            self.queued += dsts.len();
            self.inner.forward(i, dsts)
        }
        fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
            self.queued += 1;
            self.inner.send_to(bytes, dst)
        }
        fn flush(&mut self) -> io::Result<usize> {
            self.log
                .lock()
                .unwrap()
                .push(format!("flush {}", self.queued));
            self.queued = 0;
            self.inner.flush()
        }
        fn capabilities(&self) -> jasper_io::Capabilities {
            self.inner.capabilities()
        }
        fn counters(&self) -> IoCounters {
            self.inner.counters()
        }
        fn local_addrs(&self) -> Vec<SocketAddr> {
            self.inner.local_addrs()
        }
    }

    #[test]
    fn data_copies_leave_before_the_bursts_reports_are_checked() {
        let plan = small_tree(0, 42300);
        let id = plan.levels[1][0];
        let me = plan.nodes[id as usize].addr;
        let hub = MemHub::new();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let io = Recording {
            inner: Box::new(hub.attach(&[me], 32)),
            queued: 0,
            log: log.clone(),
        };
        let mut proxy = ProxyNode::new(&proxy_cfg(&plan, id), Box::new(io)).unwrap();
        // A child's delay report arrives first, then a data packet.
        let child = plan.tables[id as usize].report_children[0];
        let mut kid = hub.attach(&[plan.nodes[child as usize].addr], 32);
        let mut h = Header::new(Kind::DelayReport);
        h.send_time_ns = host_now_ns();
        let rep = jasper_core::wire::DelayReport {
            node: child,
            receivers: 1,
            owd_ns: 50_000,
            clock_bound_ns: 0,
            samples: 100,
        };
        let mut buf = [0u8; 256];
        let n = emit_report(&h, &rep, &mut buf).unwrap();
        kid.send_to(&buf[..n], me);
        kid.flush().unwrap();
        let mut src = hub.attach(&[plan.nodes[1].addr], 32);
        src.send_to(&data_packet(0), me);
        src.flush().unwrap();
        assert_eq!(proxy.poll().unwrap(), 2);
        let log = log.lock().unwrap().clone();
        // Packet 0 (the report) is read again only after the flush that
        // sent the data's two copies.
        let first_flush = log.iter().position(|e| e.starts_with("flush")).unwrap();
        assert_eq!(log[first_flush], "flush 2", "{log:?}");
        assert!(
            log[first_flush..].contains(&"read 0".to_string()),
            "{log:?}"
        );
        let r = proxy.report("p");
        assert_eq!(
            (r.core.reports_in, r.core.copies_out),
            (1, 2),
            "and the report was taken after"
        );
    }

    #[test]
    fn proxies_sharing_a_thread_carry_a_packet_through_the_tree() {
        // All three proxies driven by one `run_group` thread.
        let plan = small_tree(0, 42200);
        let hub = MemHub::new();
        let ids: Vec<u32> = plan.levels.iter().flatten().copied().collect();
        assert_eq!(ids.len(), 3);
        let mut nodes: Vec<ProxyNode> = ids
            .iter()
            .map(|&id| {
                let me = plan.nodes[id as usize].addr;
                ProxyNode::new(&proxy_cfg(&plan, id), Box::new(hub.attach(&[me], 32))).unwrap()
            })
            .collect();
        let mut receivers: Vec<_> = plan
            .endpoints()
            .map(|e| hub.attach(&[plan.nodes[e as usize].addr], 32))
            .collect();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let group = std::thread::spawn(move || {
            run_group(&mut nodes, &s, ParentWatch::new(false)).unwrap();
            nodes
                .iter()
                .map(|n| n.report("p").core.copies_out)
                .collect::<Vec<_>>()
        });
        let mut src = hub.attach(&[plan.nodes[jasper_core::plan::SENDER as usize].addr], 32);
        src.send_to(&data_packet(0), plan.nodes[ids[0] as usize].addr);
        src.flush().unwrap();
        let mut got = vec![0; receivers.len()];
        for _ in 0..5_000 {
            for (g, r) in got.iter_mut().zip(&mut receivers) {
                *g += r.recv_burst().unwrap();
            }
            if got.iter().all(|&g| g == 1) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        stop.store(true, Ordering::SeqCst);
        let copies = group.join().unwrap();
        assert_eq!(got, vec![1; 4], "every receiver, once");
        assert_eq!(
            copies,
            vec![2, 2, 2],
            "the root to both, each level-2 proxy to its two"
        );
    }
}
