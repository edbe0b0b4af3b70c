//! # jasper-live
//!
//! Live counters of a running node, readable from outside while it runs —
//! the operator's view of what the final JSON report shows at exit.
//!
//! ## Contract and call order
//! 1. A node opens an [`Exporter`] from its config ([`Exporter::open`]): off
//!    unless `[metrics] listen` is set. The first exporter for an address
//!    binds it and starts one HTTP thread; every node of the process
//!    configured with that address shares it (each series carries a `node`
//!    label), so 64 receivers in one process serve one endpoint.
//! 2. On the data path the node only calls [`Exporter::released`] per
//!    released message (two histogram increments in the node's own memory:
//!    no lock, no system call, nothing when the endpoint is off).
//! 3. In its housekeeping the run loop asks [`Exporter::due`] with the time
//!    it already read; about every `interval_ms` (100 ms by default) it
//!    answers true and the node hands a [`Snapshot`] of its counters to
//!    [`Exporter::publish`] — one short lock, ten times a second.
//! 4. The HTTP thread answers `GET /metrics` with the latest snapshot of
//!    every node in Prometheus text format ([`expo::render`]). Nothing on the
//!    data path formats text.
//!
//! Dropping the exporter removes the node from the endpoint (a restarted
//! publisher re-registers under the same name).
//!
//! [`scrape`] is the other side: fetch an endpoint and parse the text
//! format (used by `jasper status` and the tests).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use jasper_core::clock::ClockStatus;
use jasper_core::config::{NodeConfig, NodeRole};
use jasper_core::guard::GuardStats;
use jasper_core::liveness::UpstreamState;
use jasper_core::proxy::ProxyStats;
use jasper_core::receiver::{ReceiverStats, Release};
use jasper_core::sender::SenderStats;
use jasper_io::IoCounters;

pub mod expo;
pub mod hist;
pub mod scrape;
mod serve;

pub use hist::Histogram;
pub use serve::{serves, ServeError};

/// One node's counters at one instant: what the run loop copies out.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The node's synchronized clock when the snapshot was taken, ns.
    pub now_ns: u64,
    /// Backend counters.
    pub io: IoCounters,
    /// Guard counters (every refused packet by reason).
    pub guard: GuardStats,
    /// Upstream liveness.
    pub upstreams: Vec<UpstreamState>,
    /// Clock status.
    pub clock_status: ClockStatus,
    /// Clock error bound, ns.
    pub clock_bound_ns: u64,
    /// What only this role counts.
    pub figures: Figures,
}

/// Role-specific counters.
#[derive(Debug, Clone)]
pub enum Figures {
    /// A publisher.
    Sender(SenderFigures),
    /// A proxy.
    Proxy(ProxyFigures),
    /// A receiver.
    Receiver(ReceiverFigures),
}

/// A publisher's counters.
#[derive(Debug, Clone, Default)]
pub struct SenderFigures {
    /// State-machine counters.
    pub stats: SenderStats,
    /// Its stream.
    pub stream: u32,
    /// Current session (changes when the publisher restarts).
    pub session: u32,
    /// Deadline offset it stamps now (send time + offset = deadline), ns.
    pub deadline_offset_ns: u64,
}

/// A proxy's counters.
#[derive(Debug, Clone, Default)]
pub struct ProxyFigures {
    /// State-machine counters.
    pub stats: ProxyStats,
    /// Copies for destinations without an address.
    pub unknown_peer: u64,
}

/// A receiver's counters.
#[derive(Debug, Clone, Default)]
pub struct ReceiverFigures {
    /// State-machine counters.
    pub stats: ReceiverStats,
    /// Messages held now.
    pub held: usize,
    /// Payload bytes held now.
    pub held_bytes: usize,
    /// MoldUDP64 packets emitted.
    pub mold_packets: u64,
}

/// A node's role, as its `role` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publisher.
    Sender,
    /// Proxy.
    Proxy,
    /// Receiver.
    Receiver,
}

impl Role {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Proxy => "proxy",
            Role::Receiver => "receiver",
        }
    }
}

impl From<NodeRole> for Role {
    fn from(r: NodeRole) -> Role {
        match r {
            NodeRole::Sender => Role::Sender,
            NodeRole::Proxy => Role::Proxy,
            NodeRole::Receiver => Role::Receiver,
        }
    }
}

/// What the endpoint serves for one node: its last snapshot and latencies.
#[derive(Debug, Clone)]
pub struct Published {
    /// The counters.
    pub snapshot: Snapshot,
    /// Release − send time of every released message (receivers).
    pub handover: Histogram,
    /// First-copy arrival − send time (receivers).
    pub owd: Histogram,
    /// Host time of the copy, ns (the endpoint shows its age: a stuck run
    /// loop keeps answering with an ageing snapshot).
    pub host_ns: u64,
}

/// One node's place on an endpoint.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) node: String,
    pub(crate) role: Role,
    pub(crate) data: Mutex<Option<Published>>,
}

/// The node side: decides when to copy, keeps the latency histograms.
#[derive(Debug)]
pub struct Exporter {
    on: Option<On>,
}

#[derive(Debug)]
struct On {
    slot: Arc<Slot>,
    board: Arc<serve::Board>,
    interval_ns: u64,
    last_ns: u64,
    handover: Histogram,
    owd: Histogram,
}

impl Exporter {
    /// No endpoint: every call is a branch that does nothing.
    pub fn off() -> Exporter {
        Exporter { on: None }
    }

    /// From a node config: off unless `[metrics] listen` is set; otherwise
    /// serves (or joins) that address. The error says what to change.
    pub fn open(cfg: &NodeConfig) -> Result<Exporter, String> {
        match cfg.metrics.listen {
            None => Ok(Exporter::off()),
            Some(addr) => Exporter::serve(
                addr,
                &cfg.node.name,
                cfg.node.role.into(),
                cfg.metrics.interval_ms,
            )
            .map_err(|e| e.to_string()),
        }
    }

    /// Serve this node on `addr` (port 0: any free port, see
    /// [`Exporter::local_addr`]), copying its counters every `interval_ms`.
    pub fn serve(
        addr: SocketAddr,
        node: &str,
        role: Role,
        interval_ms: u64,
    ) -> Result<Exporter, ServeError> {
        let board = serve::board(addr)?;
        let slot = Arc::new(Slot {
            node: node.to_string(),
            role,
            data: Mutex::new(None),
        });
        board.attach(slot.clone());
        Ok(Exporter {
            on: Some(On {
                slot,
                board,
                interval_ns: interval_ms.max(1) * 1_000_000,
                last_ns: 0,
                handover: Histogram::default(),
                owd: Histogram::default(),
            }),
        })
    }

    /// The endpoint's address, when on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.on.as_ref().map(|o| o.board.local_addr())
    }

    /// True about every interval (and on the first call): time to
    /// [`Exporter::publish`]. `now_ns` is any clock the loop already read;
    /// a clock that steps back makes it due at once.
    #[inline]
    pub fn due(&mut self, now_ns: u64) -> bool {
        match &mut self.on {
            Some(o) if now_ns.wrapping_sub(o.last_ns) >= o.interval_ns => {
                o.last_ns = now_ns;
                true
            }
            _ => false,
        }
    }

    /// A message was released (receivers): hand-over and one-way-delay
    /// histograms, in the node's own memory.
    #[inline]
    pub fn released(&mut self, rel: &Release) {
        if let Some(o) = &mut self.on {
            o.handover
                .observe(rel.release_ns.saturating_sub(rel.send_time_ns));
            o.owd
                .observe(rel.arrival_ns.saturating_sub(rel.send_time_ns));
        }
    }

    /// Hand the endpoint a new snapshot (one short lock).
    pub fn publish(&mut self, snapshot: Snapshot) {
        if let Some(o) = &self.on {
            let p = Published {
                snapshot,
                handover: o.handover.clone(),
                owd: o.owd.clone(),
                host_ns: jasper_io::host_now_ns(),
            };
            *o.slot.data.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(o) = &self.on {
            o.board.detach(&o.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn receiver_snapshot() -> Snapshot {
        Snapshot {
            now_ns: 10_000_000_000,
            io: IoCounters {
                rx_packets: 7,
                ..Default::default()
            },
            guard: GuardStats {
                admitted: 5,
                bad_tag: 2,
                ..Default::default()
            },
            upstreams: vec![UpstreamState {
                node: 3,
                heard: true,
                dead: true,
                deaths: 1,
                last_ns: 9_000_000_000,
                ended: false,
            }],
            clock_status: ClockStatus::Degraded,
            clock_bound_ns: 200,
            figures: Figures::Receiver(ReceiverFigures {
                stats: ReceiverStats {
                    released: 10,
                    late: 1,
                    gaps_detected: 3,
                    gaps_filled: 1,
                    ..Default::default()
                },
                held: 2,
                held_bytes: 72,
                mold_packets: 0,
            }),
        }
    }

    #[test]
    fn due_every_interval_and_after_a_step_back() {
        let mut e = Exporter::serve("127.0.0.1:0".parse().unwrap(), "n", Role::Proxy, 100).unwrap();
        assert!(e.due(1_000_000_000));
        assert!(!e.due(1_050_000_000));
        assert!(e.due(1_100_000_000));
        assert!(
            e.due(5),
            "a clock that stepped back does not stall the copies"
        );
        let mut off = Exporter::off();
        assert!(!off.due(u64::MAX));
        assert!(off.local_addr().is_none());
    }

    #[test]
    fn serves_published_counters_and_forgets_dropped_nodes() {
        let mut a =
            Exporter::serve("127.0.0.1:0".parse().unwrap(), "mp0", Role::Receiver, 100).unwrap();
        let addr = a.local_addr().unwrap();
        // A second node on the same address shares the endpoint.
        let mut b = Exporter::serve(addr, "mp1", Role::Receiver, 100).unwrap();
        assert_eq!(b.local_addr(), Some(addr));
        let rel = Release {
            stream: 1,
            session: 1,
            seq: 0,
            send_time_ns: 1_000,
            deadline_ns: 300_000,
            arrival_ns: 41_000,
            release_ns: 301_000,
            late: false,
            early: false,
            path: 0,
            hops: 2,
        };
        a.released(&rel);
        a.publish(receiver_snapshot());
        b.publish(receiver_snapshot());
        let timeout = std::time::Duration::from_secs(5);
        let text = scrape::fetch(addr, timeout).unwrap();
        let s = scrape::parse(&text).unwrap();
        let get = |name: &str, node: &str| {
            s.iter()
                .find(|x| x.name == name && x.label("node") == Some(node))
                .map(|x| x.value)
        };
        assert_eq!(get("jasper_receiver_released_total", "mp0"), Some(10.0));
        assert_eq!(get("jasper_receiver_released_total", "mp1"), Some(10.0));
        assert_eq!(
            get("jasper_receiver_handover_seconds_count", "mp0"),
            Some(1.0)
        );
        assert_eq!(
            get("jasper_receiver_handover_seconds_count", "mp1"),
            Some(0.0)
        );
        drop(b);
        let s = scrape::parse(&scrape::fetch(addr, timeout).unwrap()).unwrap();
        assert!(s.iter().all(|x| x.label("node") != Some("mp1")));
        assert!(s.iter().any(|x| x.label("node") == Some("mp0")));
    }

    #[test]
    fn a_busy_address_is_an_error_with_the_fix() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Not ours: the registry has no board for it, so it must bind.
        let e = Exporter::serve(addr, "n", Role::Proxy, 100).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("[metrics] listen"),
            "{msg}"
        );
    }
}
