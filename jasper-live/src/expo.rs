//! The exposition: every node's snapshot as Prometheus text (format 0.0.4),
//! encoded with `prometheus-client`.
//!
//! Names follow Prometheus conventions: a `jasper_` prefix, base units in
//! the name (`_seconds`, `_bytes`), `_total` on counters (the encoder adds
//! it: the tables below name counters without it). Every series carries
//! `node` and `role` labels. docs/METRICS.md lists every family.
//!
//! Adding a counter is one line in a table below (and one in the docs).

use std::borrow::Cow;
use std::fmt;

use jasper_core::guard::GuardStats;
use jasper_io::IoCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{Figures, Histogram, ProxyFigures, Published, ReceiverFigures, Role, SenderFigures};

/// `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One node as the endpoint shows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Node name (the `node` label).
    pub node: String,
    /// Role (the `role` label).
    pub role: Role,
    /// Its last snapshot.
    pub published: Published,
}

type Get<T> = fn(&T) -> u64;

/// Backend counters of every node: (name without `_total`, help, value).
const IO: &[(&str, &str, Get<IoCounters>)] = &[
    (
        "jasper_rx_packets",
        "Packets received by the backend.",
        |c| c.rx_packets,
    ),
    ("jasper_rx_bytes", "Bytes received by the backend.", |c| {
        c.rx_bytes
    }),
    ("jasper_tx_packets", "Packets transmitted.", |c| {
        c.tx_packets
    }),
    ("jasper_tx_bytes", "Bytes transmitted.", |c| c.tx_bytes),
    (
        "jasper_tx_dropped",
        "Packets dropped at transmit (queue full after retries, send errors).",
        |c| c.tx_dropped,
    ),
    (
        "jasper_rx_errors",
        "Receive errors other than would-block.",
        |c| c.rx_errors,
    ),
    (
        "jasper_rx_truncated",
        "Datagrams larger than the receive buffer (dropped).",
        |c| c.rx_truncated,
    ),
    (
        "jasper_rx_queued_over_1ms",
        "Packets read more than 1 ms after the kernel received them: the node is not keeping up (usually for want of CPU).",
        |c| c.rx_queued_over_1ms,
    ),
    (
        "jasper_tx_offload_batches",
        "UDP GSO super-packets sent (several packets to one destination in one pass through the kernel); over jasper_tx_packets, how well sends batch.",
        |c| c.tx_offload_batches,
    ),
    (
        "jasper_rx_offload_batches",
        "Coalesced arrivals (UDP GRO) split back into packets.",
        |c| c.rx_offload_batches,
    ),
    (
        "jasper_gso_refused",
        "UDP GSO super-packets the kernel or route refused (re-sent as single datagrams; offload then off for that backend).",
        |c| c.gso_refused,
    ),
    (
        "jasper_injected_loss",
        "Packets dropped by the fault injector (test and rehearsal setups only).",
        |c| c.injected_loss,
    ),
];

/// Guard totals besides the refusals: (name, help, value).
const GUARD_TOTALS: &[(&str, &str, Get<GuardStats>)] = &[
    (
        "jasper_guard_admitted",
        "Packets that passed every check of the node's guard.",
        |g| g.admitted,
    ),
    (
        "jasper_guard_feed_tags_remembered",
        "Of the admitted, publisher packets whose feed tag matched a packet already verified (the copy another receiver of this process checked): answered without recomputing the tag.",
        |g| g.feed_tags_remembered,
    ),
];

/// Guard refusals: (`reason` label, `check` label, value). The `check`
/// groups reasons for alerts: authentication, source, plausibility, format.
const GUARD: &[(&str, &str, Get<GuardStats>)] = &[
    ("unauthenticated", "authentication", |g| g.unauthenticated),
    ("unknown_key_id", "authentication", |g| g.unknown_key_id),
    ("bad_tag", "authentication", |g| g.bad_tag),
    ("unknown_source", "source", |g| g.unknown_source),
    ("not_a_child", "source", |g| g.not_a_child),
    ("unknown_stream", "plausibility", |g| g.unknown_stream),
    ("replayed", "plausibility", |g| g.replayed),
    ("stale_report", "plausibility", |g| g.stale_report),
    ("deadline_out_of_range", "plausibility", |g| {
        g.deadline_out_of_range
    }),
    ("malformed", "format", |g| g.malformed),
    ("unexpected_kind", "format", |g| g.unexpected_kind),
];

/// Publisher counters (labels add `stream`).
const SENDER: &[(&str, &str, Get<SenderFigures>)] = &[
    ("jasper_sender_messages", "Messages published.", |f| {
        f.stats.messages
    }),
    ("jasper_sender_packets", "Data packets sealed.", |f| {
        f.stats.packets
    }),
    ("jasper_sender_heartbeats", "Heartbeats sent.", |f| {
        f.stats.heartbeats
    }),
    (
        "jasper_sender_reports",
        "Delay reports received from the root.",
        |f| f.stats.reports,
    ),
    (
        "jasper_sender_dropped",
        "Packets from the tree that were malformed or unexpected.",
        |f| f.stats.dropped,
    ),
    (
        "jasper_sender_degraded_packets",
        "Packets stamped while the clock was not synchronized (flagged CLOCK_DEGRADED).",
        |f| f.stats.degraded_packets,
    ),
    (
        "jasper_sender_unsealed",
        "Packets not sent because the keys could not tag them.",
        |f| f.stats.unsealed,
    ),
    (
        "jasper_sender_retransmit_requests",
        "Retransmit requests from the roots handled.",
        |f| f.stats.retransmit_requests,
    ),
];

/// Proxy counters.
const PROXY: &[(&str, &str, Get<ProxyFigures>)] = &[
    ("jasper_proxy_packets_in", "Packets received.", |f| {
        f.stats.packets_in
    }),
    (
        "jasper_proxy_forwarded",
        "Data-path packets forwarded (each counted once).",
        |f| f.stats.forwarded,
    ),
    (
        "jasper_proxy_copies_out",
        "Copies the hedged fan-out asked for.",
        |f| f.stats.copies_out,
    ),
    (
        "jasper_proxy_reports_in",
        "Delay reports received from children.",
        |f| f.stats.reports_in,
    ),
    (
        "jasper_proxy_reports_out",
        "Delay reports sent to the parent.",
        |f| f.stats.reports_out,
    ),
    (
        "jasper_proxy_duplicates",
        "Hedged copies dropped because an earlier copy was forwarded (normal with hedging).",
        |f| f.stats.dropped_duplicate,
    ),
    (
        "jasper_proxy_sessions",
        "Sessions seen (new streams and restarted publishers).",
        |f| f.stats.sessions,
    ),
    (
        "jasper_proxy_unknown_peer",
        "Copies for destinations without an address in the config.",
        |f| f.unknown_peer,
    ),
    (
        "jasper_proxy_retransmit_requests",
        "Retransmit requests from children handled (answered from the store and/or passed up).",
        |f| f.stats.retransmit_requests,
    ),
];

/// Proxy drops: `jasper_proxy_dropped_total{reason}`.
const PROXY_DROPS: &[(&str, Get<ProxyFigures>)] = &[
    ("malformed", |f| f.stats.dropped_malformed),
    ("hop_limit", |f| f.stats.dropped_hop_limit),
    ("stranger", |f| f.stats.dropped_stranger),
    ("unsupported", |f| f.stats.dropped_unsupported),
    ("seq_jump", |f| f.stats.dropped_seq_jump),
    ("stale_session", |f| f.stats.dropped_stale_session),
];

/// Receiver counters. Recovery counters (retransmissions) go here too.
const RECEIVER: &[(&str, &str, Get<ReceiverFigures>)] = &[
    (
        "jasper_receiver_packets",
        "Packets handed to the state machine.",
        |f| f.stats.packets,
    ),
    ("jasper_receiver_accepted", "New messages accepted.", |f| {
        f.stats.accepted
    }),
    (
        "jasper_receiver_released",
        "Messages handed to the MP.",
        |f| f.stats.released,
    ),
    (
        "jasper_receiver_late",
        "Messages handed over late: first copy at or after the deadline, or out of deadline order.",
        |f| f.stats.late,
    ),
    (
        "jasper_receiver_late_out_of_order",
        "Of the late, messages that arrived before their deadline but after a later-deadline message was handed over (deadline order across publishers).",
        |f| f.stats.late_out_of_order,
    ),
    (
        "jasper_receiver_deadline_beyond_cap",
        "Messages whose deadline lay beyond max_hold_ns on arrival, held only that long (a publisher clock or deadline rule is wrong).",
        |f| f.stats.deadline_beyond_cap,
    ),
    (
        "jasper_receiver_released_early",
        "Messages released before their deadline because the hold queue was full.",
        |f| f.stats.released_early,
    ),
    (
        "jasper_receiver_duplicates",
        "Duplicate copies suppressed (normal with hedging).",
        |f| f.stats.duplicates,
    ),
    (
        "jasper_receiver_stale",
        "Copies below the dedup window (already decided).",
        |f| f.stats.stale,
    ),
    (
        "jasper_receiver_gaps_detected",
        "Sequence numbers found missing (from data or heartbeats).",
        |f| f.stats.gaps_detected,
    ),
    (
        "jasper_receiver_gaps_filled",
        "Missing sequence numbers that arrived later.",
        |f| f.stats.gaps_filled,
    ),
    (
        "jasper_receiver_recovered",
        "Missing sequence numbers that arrived after a retransmit request.",
        |f| f.stats.recovered,
    ),
    (
        "jasper_receiver_recovery_requests",
        "Retransmit requests sent (each to every upstream).",
        |f| f.stats.recovery_requests,
    ),
    (
        "jasper_receiver_lost",
        "Sequence numbers given up on: never recovered.",
        |f| f.stats.lost,
    ),
    (
        "jasper_receiver_arrived_after_lost",
        "Sequence numbers that arrived after they were given up on.",
        |f| f.stats.arrived_after_lost,
    ),
    (
        "jasper_receiver_lost_ranges",
        "Ranges of sequence numbers given up on.",
        |f| f.stats.lost_ranges,
    ),
    ("jasper_receiver_heartbeats", "Heartbeats seen.", |f| {
        f.stats.heartbeats
    }),
    (
        "jasper_receiver_sessions",
        "Sessions started (the first of each stream included).",
        |f| f.stats.sessions,
    ),
    (
        "jasper_receiver_sessions_ended",
        "Sessions ended by the publisher.",
        |f| f.stats.sessions_ended,
    ),
    (
        "jasper_receiver_negative_owd",
        "Samples whose arrival preceded the send time (clock error).",
        |f| f.stats.negative_owd,
    ),
    (
        "jasper_receiver_mold_packets",
        "MoldUDP64 packets emitted.",
        |f| f.mold_packets,
    ),
];

/// Receiver drops: `jasper_receiver_dropped_total{reason}`.
const RECEIVER_DROPS: &[(&str, Get<ReceiverFigures>)] = &[
    ("malformed", |f| f.stats.malformed),
    ("unexpected_kind", |f| f.stats.unexpected_kind),
    ("stale_session", |f| f.stats.stale_session),
    ("seq_jump", |f| f.stats.seq_jump),
    ("stream_limit", |f| f.stats.stream_limit),
];

/// Receiver gauges (levels, not totals).
const RECEIVER_GAUGES: &[(&str, &str, Get<ReceiverFigures>)] = &[
    ("jasper_receiver_held_messages", "Messages held now.", |f| {
        f.held as u64
    }),
    (
        "jasper_receiver_held_bytes",
        "Payload bytes in the hold queue now.",
        |f| f.held_bytes as u64,
    ),
    (
        "jasper_receiver_gaps_open",
        "Sequence numbers missing now: detected, not (yet) filled, not given up.",
        |f| {
            f.stats
                .gaps_detected
                .saturating_sub(f.stats.gaps_filled)
                .saturating_sub(f.stats.lost)
        },
    ),
];

/// Render every node. `host_now_ns` dates the snapshots' ages.
pub fn render(nodes: Vec<NodeView>, host_now_ns: u64) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Views { nodes, host_now_ns }));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    out
}

#[derive(Debug)]
struct Views {
    nodes: Vec<NodeView>,
    host_now_ns: u64,
}

type Labels<'a> = Vec<(&'static str, Cow<'a, str>)>;

enum V<'a> {
    Counter(u64),
    /// A counter of seconds.
    CounterSeconds(f64),
    Gauge(f64),
    /// A gauge that counts (or a 0/1 state).
    Level(u64),
    Histogram(&'a Histogram),
}

/// One family: its descriptor, then one line (or histogram) per series;
/// nothing at all without series.
fn family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    series: impl IntoIterator<Item = (Labels<'a>, V<'a>)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        let mut f = m.encode_family(&labels)?;
        match v {
            V::Counter(x) => f.encode_counter::<NoLabelSet, u64, u64>(&x, None)?,
            V::CounterSeconds(x) => f.encode_counter::<NoLabelSet, f64, u64>(&x, None)?,
            V::Gauge(x) => f.encode_gauge(&x)?,
            V::Level(x) => f.encode_gauge(&x)?,
            V::Histogram(h) => f.encode_histogram::<NoLabelSet>(
                h.sum_ns() as f64 / 1e9,
                h.count(),
                &h.buckets_seconds(),
                None,
            )?,
        }
    }
    Ok(())
}

impl NodeView {
    fn labels<'a>(&'a self, extra: &[(&'static str, Cow<'a, str>)]) -> Labels<'a> {
        let mut l: Labels<'a> = vec![
            ("node", Cow::Borrowed(self.node.as_str())),
            ("role", Cow::Borrowed(self.role.name())),
        ];
        l.extend(extra.iter().cloned());
        l
    }
    /// Each upstream with its `upstream` label value.
    fn upstreams(
        &self,
    ) -> impl Iterator<
        Item = (
            &Self,
            &jasper_core::liveness::UpstreamState,
            Cow<'static, str>,
        ),
    > {
        self.published
            .snapshot
            .upstreams
            .iter()
            .map(move |u| (self, u, Cow::Owned(u.node.to_string())))
    }
    fn sender(&self) -> Option<&SenderFigures> {
        match &self.published.snapshot.figures {
            Figures::Sender(f) => Some(f),
            _ => None,
        }
    }
    fn proxy(&self) -> Option<&ProxyFigures> {
        match &self.published.snapshot.figures {
            Figures::Proxy(f) => Some(f),
            _ => None,
        }
    }
    fn receiver(&self) -> Option<&ReceiverFigures> {
        match &self.published.snapshot.figures {
            Figures::Receiver(f) => Some(f),
            _ => None,
        }
    }
}

/// The state of an upstream: alive (talking), silent (not heard yet, or
/// its session ended: silence expected) or dead (silent past the limit).
pub fn upstream_state(u: &jasper_core::liveness::UpstreamState) -> &'static str {
    if u.dead {
        "dead"
    } else if u.heard && !u.ended {
        "alive"
    } else {
        "silent"
    }
}

const CLOCK_STATES: [&str; 3] = ["synchronized", "degraded", "unsynchronized"];
const UPSTREAM_STATES: [&str; 3] = ["alive", "silent", "dead"];

impl Collector for Views {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let e = &mut enc;
        let nodes = &self.nodes;
        let version = Cow::Borrowed(env!("CARGO_PKG_VERSION"));
        family(
            e,
            "jasper_build_info",
            "Always 1; the labels say which node runs which version.",
            MetricType::Gauge,
            nodes
                .iter()
                .map(|n| (n.labels(&[("version", version.clone())]), V::Level(1))),
        )?;
        family(
            e,
            "jasper_snapshot_age_seconds",
            "Age of the counters served: grows when the node's run loop stalls.",
            MetricType::Gauge,
            nodes.iter().map(|n| {
                let age = self.host_now_ns.saturating_sub(n.published.host_ns) as f64 / 1e9;
                (n.labels(&[]), V::Gauge(age))
            }),
        )?;
        for (name, help, get) in IO {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                nodes
                    .iter()
                    .map(|n| (n.labels(&[]), V::Counter(get(&n.published.snapshot.io)))),
            )?;
        }
        family(
            e,
            "jasper_rx_queue_seconds",
            "Time received packets waited in the socket's queue before the node read them, summed (over jasper_rx_packets_total: the mean queueing delay).",
            MetricType::Counter,
            nodes.iter().map(|n| {
                (
                    n.labels(&[]),
                    V::CounterSeconds(n.published.snapshot.io.rx_queue_ns as f64 / 1e9),
                )
            }),
        )?;
        for (name, help, get) in GUARD_TOTALS {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                nodes
                    .iter()
                    .map(|n| (n.labels(&[]), V::Counter(get(&n.published.snapshot.guard)))),
            )?;
        }
        family(
            e,
            "jasper_guard_dropped",
            "Packets the guard refused, by reason; `check` groups the reasons (authentication, source, plausibility, format).",
            MetricType::Counter,
            nodes.iter().flat_map(|n| {
                GUARD.iter().map(move |(reason, check, get)| {
                    (
                        n.labels(&[
                            ("reason", Cow::Borrowed(*reason)),
                            ("check", Cow::Borrowed(*check)),
                        ]),
                        V::Counter(get(&n.published.snapshot.guard)),
                    )
                })
            }),
        )?;
        family(
            e,
            "jasper_clock_status",
            "1 for the clock's current status (synchronized, degraded, unsynchronized), 0 for the others.",
            MetricType::Gauge,
            nodes.iter().flat_map(|n| {
                let now = n.published.snapshot.clock_status.name();
                CLOCK_STATES.iter().map(move |s| {
                    (
                        n.labels(&[("status", Cow::Borrowed(*s))]),
                        V::Level(u64::from(*s == now)),
                    )
                })
            }),
        )?;
        family(
            e,
            "jasper_clock_error_bound_seconds",
            "The clock's declared error bound.",
            MetricType::Gauge,
            nodes.iter().map(|n| {
                (
                    n.labels(&[]),
                    V::Gauge(n.published.snapshot.clock_bound_ns as f64 / 1e9),
                )
            }),
        )?;
        let ups = NodeView::upstreams;
        family(
            e,
            "jasper_upstream_state",
            "1 for each upstream's current state (alive, silent: not heard yet or its session ended, dead: silent past the limit), 0 for the others; `upstream` is its plan id.",
            MetricType::Gauge,
            nodes.iter().flat_map(ups).flat_map(|(n, u, id)| {
                let now = upstream_state(u);
                UPSTREAM_STATES.iter().map(move |s| {
                    (
                        n.labels(&[("upstream", id.clone()), ("state", Cow::Borrowed(*s))]),
                        V::Level(u64::from(*s == now)),
                    )
                })
            }),
        )?;
        family(
            e,
            "jasper_upstream_deaths",
            "Times the upstream was marked dead.",
            MetricType::Counter,
            nodes
                .iter()
                .flat_map(ups)
                .map(|(n, u, id)| (n.labels(&[("upstream", id)]), V::Counter(u.deaths))),
        )?;
        family(
            e,
            "jasper_upstream_silence_seconds",
            "Time since the upstream's last authentic packet, at the snapshot (upstreams heard at least once).",
            MetricType::Gauge,
            nodes.iter().flat_map(ups).filter(|(_, u, _)| u.heard).map(|(n, u, id)| {
                let s = n.published.snapshot.now_ns.saturating_sub(u.last_ns) as f64 / 1e9;
                (n.labels(&[("upstream", id)]), V::Gauge(s))
            }),
        )?;

        // Publishers.
        let stream = |f: &SenderFigures| Cow::Owned(f.stream.to_string());
        for (name, help, get) in SENDER {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                nodes.iter().filter_map(|n| {
                    let f = n.sender()?;
                    Some((n.labels(&[("stream", stream(f))]), V::Counter(get(f))))
                }),
            )?;
        }
        family(
            e,
            "jasper_sender_deadline_offset_seconds",
            "Offset the publisher adds to the send time to stamp each deadline (its current hold budget).",
            MetricType::Gauge,
            nodes.iter().filter_map(|n| {
                let f = n.sender()?;
                Some((
                    n.labels(&[("stream", stream(f))]),
                    V::Gauge(f.deadline_offset_ns as f64 / 1e9),
                ))
            }),
        )?;
        family(
            e,
            "jasper_sender_session",
            "Current session id (changes when the publisher restarts).",
            MetricType::Gauge,
            nodes.iter().filter_map(|n| {
                let f = n.sender()?;
                Some((
                    n.labels(&[("stream", stream(f))]),
                    V::Level(u64::from(f.session)),
                ))
            }),
        )?;

        // Proxies.
        for (name, help, get) in PROXY {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                nodes
                    .iter()
                    .filter_map(|n| Some((n.labels(&[]), V::Counter(get(n.proxy()?))))),
            )?;
        }
        family(
            e,
            "jasper_proxy_dropped",
            "Packets the proxy's state machine dropped, by reason.",
            MetricType::Counter,
            nodes
                .iter()
                .filter_map(|n| n.proxy().map(|f| (n, f)))
                .flat_map(|(n, f)| {
                    PROXY_DROPS.iter().map(move |(reason, get)| {
                        (
                            n.labels(&[("reason", Cow::Borrowed(*reason))]),
                            V::Counter(get(f)),
                        )
                    })
                }),
        )?;

        // Receivers.
        for (name, help, get) in RECEIVER {
            family(
                e,
                name,
                help,
                MetricType::Counter,
                nodes
                    .iter()
                    .filter_map(|n| Some((n.labels(&[]), V::Counter(get(n.receiver()?))))),
            )?;
        }
        family(
            e,
            "jasper_receiver_dropped",
            "Packets the receiver's state machine dropped, by reason.",
            MetricType::Counter,
            nodes
                .iter()
                .filter_map(|n| n.receiver().map(|f| (n, f)))
                .flat_map(|(n, f)| {
                    RECEIVER_DROPS.iter().map(move |(reason, get)| {
                        (
                            n.labels(&[("reason", Cow::Borrowed(*reason))]),
                            V::Counter(get(f)),
                        )
                    })
                }),
        )?;
        for (name, help, get) in RECEIVER_GAUGES {
            family(
                e,
                name,
                help,
                MetricType::Gauge,
                nodes
                    .iter()
                    .filter_map(|n| Some((n.labels(&[]), V::Level(get(n.receiver()?))))),
            )?;
        }
        family(
            e,
            "jasper_receiver_handover_seconds",
            "Hand-over latency: release to the MP − send time (synchronized clocks), per message.",
            MetricType::Histogram,
            nodes
                .iter()
                .filter(|n| n.receiver().is_some())
                .map(|n| (n.labels(&[]), V::Histogram(&n.published.handover))),
        )?;
        family(
            e,
            "jasper_receiver_owd_seconds",
            "One-way delay: arrival of the first copy − send time (synchronized clocks), per message.",
            MetricType::Histogram,
            nodes
                .iter()
                .filter(|n| n.receiver().is_some())
                .map(|n| (n.labels(&[]), V::Histogram(&n.published.owd))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{ProxyFigures, SenderFigures, Snapshot};

    pub(crate) fn view(node: &str, role: Role, snapshot: Snapshot) -> NodeView {
        let mut handover = Histogram::default();
        handover.observe(300_000);
        NodeView {
            node: node.into(),
            role,
            published: Published {
                snapshot,
                handover,
                owd: Histogram::default(),
                host_ns: 1_000_000_000,
            },
        }
    }

    /// One node of each role.
    pub(crate) fn tree() -> Vec<NodeView> {
        let r = crate::tests::receiver_snapshot();
        let mut s = r.clone();
        s.figures = Figures::Sender(SenderFigures {
            stream: 1,
            session: 77,
            deadline_offset_ns: 250_000,
            ..Default::default()
        });
        let mut p = r.clone();
        p.figures = Figures::Proxy(ProxyFigures::default());
        vec![
            view("sender", Role::Sender, s),
            view("proxy0", Role::Proxy, p),
            view("mp0", Role::Receiver, r),
        ]
    }

    #[test]
    fn exposition_names_units_and_labels() {
        let text = render(tree(), 1_500_000_000);
        for line in [
            "jasper_receiver_released_total{node=\"mp0\",role=\"receiver\"} 10",
            "jasper_receiver_late_total{node=\"mp0\",role=\"receiver\"} 1",
            "jasper_receiver_gaps_open{node=\"mp0\",role=\"receiver\"} 2",
            "jasper_receiver_held_bytes{node=\"mp0\",role=\"receiver\"} 72",
            "jasper_guard_dropped_total{node=\"proxy0\",role=\"proxy\",reason=\"bad_tag\",check=\"authentication\"} 2",
            "jasper_clock_status{node=\"mp0\",role=\"receiver\",status=\"degraded\"} 1",
            "jasper_clock_status{node=\"mp0\",role=\"receiver\",status=\"synchronized\"} 0",
            "jasper_clock_error_bound_seconds{node=\"mp0\",role=\"receiver\"} 2e-7",
            "jasper_upstream_state{node=\"mp0\",role=\"receiver\",upstream=\"3\",state=\"dead\"} 1",
            "jasper_upstream_silence_seconds{node=\"mp0\",role=\"receiver\",upstream=\"3\"} 1.0",
            "jasper_sender_session{node=\"sender\",role=\"sender\",stream=\"1\"} 77",
            "jasper_sender_deadline_offset_seconds{node=\"sender\",role=\"sender\",stream=\"1\"} 0.00025",
            "jasper_rx_packets_total{node=\"sender\",role=\"sender\"} 7",
            "jasper_snapshot_age_seconds{node=\"mp0\",role=\"receiver\"} 0.5",
            "jasper_receiver_handover_seconds_bucket{node=\"mp0\",role=\"receiver\",le=\"0.0002\"} 0",
            "jasper_receiver_handover_seconds_bucket{node=\"mp0\",role=\"receiver\",le=\"0.0005\"} 1",
            "jasper_receiver_handover_seconds_bucket{node=\"mp0\",role=\"receiver\",le=\"+Inf\"} 1",
            "jasper_receiver_handover_seconds_count{node=\"mp0\",role=\"receiver\"} 1",
            "# TYPE jasper_receiver_handover_seconds histogram",
            "# TYPE jasper_receiver_released_total counter",
            "# TYPE jasper_clock_status gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in\n{text}"
            );
        }
        // One descriptor per family, each with its help; receivers' families
        // only for receivers.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a family described twice");
        assert_eq!(text.lines().filter(|l| l.starts_with("# HELP ")).count(), n);
        assert!(!text.contains("jasper_receiver_released_total{node=\"proxy0\""));
        let samples = crate::scrape::parse(&text).unwrap();
        assert!(samples.iter().all(|s| s.name.starts_with("jasper_")));
        assert!(samples
            .iter()
            .all(|s| s.label("node").is_some() && s.label("role").is_some()));
        // Nothing at all for no nodes.
        assert_eq!(render(Vec::new(), 0), "");
    }

    /// Every number a role's stats struct counts is exported: a counter
    /// added to the core without a line in the tables above fails here.
    #[test]
    fn every_core_counter_is_exported() {
        const MARK: u64 = 424_242;
        fn each_field<T: serde::Serialize + serde::de::DeserializeOwned + Default>(
            mut check: impl FnMut(&str, T),
        ) {
            let v = serde_json::to_value(T::default()).unwrap();
            for (k, x) in v.as_object().unwrap() {
                if !x.is_u64() {
                    continue;
                }
                let mut o = v.clone();
                o[k] = MARK.into();
                check(k, serde_json::from_value(o).unwrap());
            }
        }
        let shows = |fig: Figures, guard: GuardStats, what: &str| {
            let mut s = crate::tests::receiver_snapshot();
            s.figures = fig;
            s.guard = guard;
            let text = render(vec![view("n", Role::Proxy, s)], 1_000_000_000);
            assert!(
                text.lines().any(|l| l.ends_with(&format!(" {MARK}"))),
                "{what} is not exported: add a line to the tables in expo.rs"
            );
        };
        each_field(|k, stats| {
            shows(
                Figures::Receiver(ReceiverFigures {
                    stats,
                    ..Default::default()
                }),
                GuardStats::default(),
                &format!("ReceiverStats::{k}"),
            )
        });
        each_field(|k, stats| {
            shows(
                Figures::Proxy(ProxyFigures {
                    stats,
                    ..Default::default()
                }),
                GuardStats::default(),
                &format!("ProxyStats::{k}"),
            )
        });
        each_field(|k, stats| {
            shows(
                Figures::Sender(SenderFigures {
                    stats,
                    ..Default::default()
                }),
                GuardStats::default(),
                &format!("SenderStats::{k}"),
            )
        });
        each_field(|k, guard| {
            shows(
                Figures::Proxy(ProxyFigures::default()),
                guard,
                &format!("GuardStats::{k}"),
            )
        });
    }
}

/// The alert rules and the docs name only what the exposition serves.
#[cfg(test)]
mod names {
    use super::*;

    /// Family names, and the series names they write.
    fn served() -> (Vec<String>, Vec<String>) {
        let text = render(tests::tree(), 1_000_000_000);
        let mut families = Vec::new();
        let mut series = Vec::new();
        for l in text.lines() {
            let mut w = l.split(' ');
            if let (Some("#"), Some("TYPE"), Some(name), Some(ty)) =
                (w.next(), w.next(), w.next(), w.next())
            {
                families.push(name.to_string());
                series.push(name.to_string());
                if ty == "histogram" {
                    for s in ["_bucket", "_sum", "_count"] {
                        series.push(format!("{name}{s}"));
                    }
                }
            }
        }
        (families, series)
    }

    fn repo_file(rel: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn jasper_names(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("jasper_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            // Not part of a longer word, nor a Rust path (`jasper_core::`).
            let before = rest[..i].chars().last();
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !tail[end..].starts_with("::")
            {
                out.push(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn alert_rules_read_only_served_metrics() {
        let (_, series) = served();
        let rules = repo_file("deploy/prometheus/jasper-alerts.yml");
        // Comments may name metrics still to come; rules and their texts may not.
        let body: String = rules
            .lines()
            .map(|l| l.split(" #").next().unwrap_or(""))
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let used = jasper_names(&body);
        assert!(used.len() > 10, "{used:?}");
        for n in used {
            assert!(
                series.contains(&n),
                "the alert rules read {n}, which no node serves"
            );
        }
        // Every alert says which metric it reads.
        let mut reads = 0;
        for l in rules.lines() {
            if l.trim_start().starts_with("- alert:") {
                assert!(reads > 0, "no `# Reads:` comment before {l}");
                reads = 0;
            }
            if l.contains("# Reads:") {
                reads += 1;
            }
        }
    }

    #[test]
    fn every_family_is_documented() {
        let (families, series) = served();
        let doc = repo_file("docs/METRICS.md");
        for f in &families {
            assert!(
                doc.contains(&format!("`{f}`")),
                "docs/METRICS.md does not list `{f}`"
            );
        }
        for n in jasper_names(&doc) {
            assert!(
                series.contains(&n),
                "docs/METRICS.md names {n}, which no node serves"
            );
        }
    }

    /// With promtool installed (deploy/prometheus/check.sh installs it),
    /// the rules are also checked and their unit tests run.
    #[test]
    fn promtool_accepts_the_rules_when_installed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
        let Ok(out) = std::process::Command::new("promtool")
            .current_dir(&dir)
            .args(["check", "rules", "jasper-alerts.yml"])
            .output()
        else {
            eprintln!("promtool not installed: run deploy/prometheus/check.sh to check the rules");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = std::process::Command::new("promtool")
            .current_dir(&dir)
            .args(["test", "rules", "jasper-alerts.test.yml"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
