//! # jasper-sender
//!
//! The library an exchange's publisher links. A [`Publisher`] numbers each
//! message, packs messages into packets (configurable size and linger;
//! default: send at once), stamps the send time and the release deadline from
//! the tree's adaptive delay estimate, sends heartbeats when idle and ends the
//! session cleanly.
//!
//! ```no_run
//! use jasper_core::clock::ClockClass;
//! use jasper_sender::{Publisher, PublisherConfig};
//!
//! let cfg = PublisherConfig {
//!     bind: "10.0.0.1:7000".parse().unwrap(),
//!     root: "10.0.0.2:7000".parse().unwrap(),
//!     ..PublisherConfig::default()
//! };
//! let mut publisher = Publisher::open(cfg).expect("bind the publisher socket");
//! // One message...
//! let seq = publisher.publish(b"A\x00\x01...order added...").unwrap();
//! // ...or a batch packed into as few packets as possible.
//! let msgs: [&[u8]; 2] = [b"E...executed", b"X...cancelled"];
//! publisher.publish_batch(&msgs).unwrap();
//! // Call `service` from the idle loop: delay reports, heartbeats, linger.
//! publisher.service();
//! publisher.end_session();
//! # let _ = (seq, ClockClass::Huygens);
//! ```
//!
//! The clock must be synchronized (Huygens, PTP, chrony): the deadline is in
//! synchronized time. When it is not, packets carry the `CLOCK_DEGRADED` flag
//! and [`Publisher::stats`] counts them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;

use jasper_core::auth::Auth;
use jasper_core::clock::Clock;
use jasper_core::config::{ClockSection, NodeConfig};
use jasper_core::guard::{Guard, GuardRole, GuardStats, Sources, TrustSection};
use jasper_core::sender::{SenderConfig, SenderCore, SenderStats};
use jasper_io::clock::NodeClock;
use jasper_io::node::{open_backend, BoxedIo, DpdkOpener};
use jasper_io::udp::UdpBackend;
use jasper_io::{IoCounters, PacketIo};

pub use jasper_core::sender::PublishError;

mod live;

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Local address to send from (and receive delay reports on).
    pub bind: SocketAddr,
    /// The root proxy.
    pub root: SocketAddr,
    /// Packing, heartbeats, deadline rule.
    pub sender: SenderConfig,
    /// Clock.
    pub clock: ClockSection,
    /// Keys (from `jasper keys`); `None` sends unauthenticated packets,
    /// which authenticated trees drop.
    pub keys: Option<jasper_core::auth::KeyFile>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            root: SocketAddr::from(([127, 0, 0, 1], 7001)),
            sender: SenderConfig::default(),
            clock: ClockSection::default(),
            keys: None,
        }
    }
}

/// Errors opening a publisher.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The socket could not be opened.
    #[error("{0}")]
    Io(String),
    /// The node config is not a sender's.
    #[error("config for node {0:?} names no destination with an address (is it a sender config from `jasper plan`?)")]
    NotASender(String),
}

/// Publishes market data into the tree.
pub struct Publisher {
    core: SenderCore,
    guard: Guard,
    io: BoxedIo,
    clock: Box<dyn Clock + Send>,
    dsts: Vec<SocketAddr>,
    live: live::Live,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dsts", &self.dsts)
            .finish()
    }
}

impl Publisher {
    /// Open on kernel UDP.
    pub fn open(cfg: PublisherConfig) -> Result<Self, OpenError> {
        let io =
            UdpBackend::bind(&[cfg.bind], 32, 4 << 20).map_err(|e| OpenError::Io(e.to_string()))?;
        let clock = Box::new(NodeClock::from_config(&cfg.clock));
        let guard = Guard::new(
            GuardRole::Sender,
            TrustSection {
                insecure: cfg.keys.is_none(),
                streams: vec![cfg.sender.stream],
                ..TrustSection::default()
            },
            cfg.keys.as_ref().map(Auth::new),
            Sources {
                upstream: vec![],
                children: vec![(jasper_core::plan::ROOT, vec![cfg.root])],
                downstream: vec![(jasper_core::plan::ROOT, vec![cfg.root])],
            },
        );
        Ok(Self::with_io(Box::new(io), clock, cfg.root, cfg.sender).with_guard(guard))
    }

    /// Check reports with this guard and tag what is sent with its keys.
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.core.set_auth(guard.auth().cloned());
        self.guard = guard;
        self
    }

    /// Open from a node config written by `jasper plan` (any backend). The
    /// publisher sends every packet to each destination of its table: the
    /// root proxy normally, every receiver for direct unicast.
    pub fn from_node_config(cfg: &NodeConfig, dpdk: Option<DpdkOpener>) -> Result<Self, OpenError> {
        let mut dsts = Vec::new();
        let mut missing = false;
        cfg.table.fanout.for_each(0, |c, _| match cfg.peer(c) {
            Some(a) => dsts.push(a),
            None => missing = true,
        });
        if dsts.is_empty() || missing {
            return Err(OpenError::NotASender(cfg.node.name.clone()));
        }
        let guard = jasper_io::trust::guard(cfg).map_err(OpenError::Io)?;
        let io = open_backend(cfg, dpdk).map_err(OpenError::Io)?;
        let clock = Box::new(NodeClock::from_config(&cfg.clock));
        let mut p = Self::with_io(io, clock, dsts[0], cfg.sender).with_guard(guard);
        p.dsts = dsts;
        p.live = live::Live::open(cfg).map_err(OpenError::Io)?;
        Ok(p)
    }

    /// Assemble from parts (tests, custom backends and clocks). Unauthenticated
    /// until [`Publisher::with_guard`] gives it keys.
    pub fn with_io(
        io: BoxedIo,
        clock: Box<dyn Clock + Send>,
        root: SocketAddr,
        sender: SenderConfig,
    ) -> Self {
        let guard = Guard::new(
            GuardRole::Sender,
            TrustSection {
                insecure: true,
                streams: vec![sender.stream],
                ..TrustSection::default()
            },
            None,
            Sources {
                upstream: vec![],
                children: vec![(jasper_core::plan::ROOT, vec![root])],
                downstream: vec![(jasper_core::plan::ROOT, vec![root])],
            },
        );
        Publisher {
            core: SenderCore::new(sender),
            guard,
            io,
            clock,
            dsts: vec![root],
            live: live::Live::off(),
        }
    }

    fn transmit(&mut self) {
        while let Some(p) = self.core.poll_transmit() {
            for d in &self.dsts {
                self.io.send_to(&p, *d);
            }
            self.core.recycle(p);
        }
        let _ = self.io.flush();
    }

    /// Publish one message; returns its sequence number.
    pub fn publish(&mut self, msg: &[u8]) -> Result<u64, PublishError> {
        let seq = self.core.publish(self.clock.read(), msg)?;
        self.transmit();
        Ok(seq)
    }

    /// Publish a batch (packed); returns the first sequence number.
    pub fn publish_batch(&mut self, msgs: &[&[u8]]) -> Result<u64, PublishError> {
        let first = self
            .core
            .publish_batch(self.clock.read(), msgs.iter().copied())?;
        self.transmit();
        Ok(first)
    }

    /// Receive delay reports, seal lingering packets, send heartbeats and
    /// delayed packets. Call it from the publisher's idle loop. Returns the
    /// number of packets handled.
    pub fn service(&mut self) -> usize {
        let mut work = 0;
        if let Ok(n) = self.io.recv_burst() {
            let now = self.clock.read().now_ns;
            for i in 0..n {
                let (meta, bytes) = self.io.rx(i);
                let src = meta.src;
                let answer = match self.guard.admit(now, src, bytes) {
                    Ok(r) => self.core.handle_repr(&r),
                    Err(_) => false,
                };
                // A root's retransmit request: the stored packets go back,
                // unchanged, to the address the guard checked.
                if answer {
                    let io = &mut self.io;
                    self.core.answer(now, |b, _| io.send_to(b, src));
                }
            }
            work += n;
        }
        let now = self.clock.read();
        if self.core.poll_timeout().is_some_and(|t| now.now_ns >= t) {
            self.core.handle_timeout(now);
        }
        self.core.expire(now.now_ns);
        live::tick(self, now.now_ns);
        self.transmit();
        work
    }

    /// End the session (sends end-of-session; later publishes fail).
    pub fn end_session(&mut self) {
        self.core.end_session(self.clock.read());
        self.transmit();
    }

    /// Retransmission counters (requests from the roots, packets re-sent, the store).
    pub fn retransmit_stats(&self) -> jasper_core::retransmit::RetransmitStats {
        self.core.retransmit_stats()
    }

    /// Counters.
    pub fn stats(&self) -> &SenderStats {
        self.core.stats()
    }
    /// Refused packets (reports), by reason.
    pub fn guard_stats(&self) -> &GuardStats {
        self.guard.stats()
    }
    /// Session id (fixed at the first packet).
    pub fn session(&self) -> u32 {
        self.core.session()
    }
    /// I/O counters.
    pub fn io_counters(&self) -> IoCounters {
        self.io.counters()
    }
    /// Next host time the backend has delayed work (fault injection).
    pub fn next_timer_ns(&self) -> Option<u64> {
        self.io.next_timer_ns()
    }
    /// How long until the next data packet may leave (the adaptive
    /// batching gap, `[sender] packet_gap_ns`), ns; 0: now. A feed loop
    /// that sleeps this long and then publishes what came meanwhile sends
    /// the same packets as one that publishes each message at once.
    pub fn next_data_in_ns(&self) -> u64 {
        self.core
            .next_data_ns()
            .saturating_sub(self.clock.read().now_ns)
    }
    /// Current deadline offset, ns.
    pub fn offset_ns(&self) -> u64 {
        self.core.offset_ns(self.clock.error_bound_ns())
    }
    /// Next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.core.next_seq()
    }
    /// Local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addrs()[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jasper_core::wire::{Kind, Repr};

    #[test]
    fn publishes_over_udp_to_the_root() {
        let root = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Publisher::open(PublisherConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            root: root.local_addr().unwrap(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.publish(b"one").unwrap(), 0);
        assert_eq!(p.publish_batch(&[b"two", b"three"]).unwrap(), 1);
        p.end_session();
        let mut buf = [0u8; 2048];
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let n = root.recv(&mut buf).unwrap();
            let r = Repr::parse_bytes(&buf[..n]).unwrap();
            kinds.push((r.header.kind, r.header.seq, r.header.count));
        }
        assert_eq!(
            kinds,
            vec![
                (Kind::Data, 0, 1),
                (Kind::Control, 0, 0),
                (Kind::Data, 1, 2),
                (Kind::Control, 3, 0)
            ]
        );
        assert!(matches!(p.publish(b"x"), Err(PublishError::Ended)));
    }
}
