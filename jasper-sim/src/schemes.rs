//! The schemes compared and how each one is configured: tree shape,
//! hedging, deadline rule and receiver settings. Everything a scheme does
//! differently lives here; the engine runs them all the same way.

use jasper_core::deadline::{DeadlinePolicy, EstimatorConfig, TrackedDeadline};
use jasper_core::plan::TreeSpec;
use jasper_core::receiver::ReceiverConfig;
use jasper_core::sender::SenderConfig;
use serde::{Deserialize, Serialize};

use crate::SimParams;

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
    /// Ours: the tree `jasper plan` builds — the Jasper-v1 tree with hedged
    /// roots ([`jasper_core::plan::DEFAULT_ROOTS`] of them, each fed by the
    /// publisher and each feeding the whole level below) and round-robin
    /// spraying; deadline = p99 of a 10 ms window + 25 µs + the clock bound.
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
    /// Whether the scheme uses the proxy tree (else direct unicast).
    pub fn uses_tree(self) -> bool {
        matches!(self, Scheme::JasperV1 | Scheme::Ours)
    }
    /// Whether receivers hold until the deadline.
    pub fn holds(self) -> bool {
        self != Scheme::Direct
    }
    /// The window percentile of the deadline estimate (tree schemes).
    pub fn default_percentile(self) -> f64 {
        if self == Scheme::Ours {
            99.0
        } else {
            97.0
        }
    }
    /// The safety margin added to the estimate, ns.
    pub fn default_margin_ns(self) -> u64 {
        25_000
    }
}

/// "ours" with a tracked deadline: every receiver reports the max one-way
/// delay it saw in each report interval, the proxies max-reduce, so the
/// root reports the max over the tree of each interval — the per-message
/// max delay (OML) itself. The sender keeps these reports over `history_ns`
/// and sets the offset to their `quantile` + margin + clock bound: the
/// publisher's own rule ([`jasper_core::deadline::TrackedDeadline`] in its
/// [`DeadlinePolicy`]), fed by its report handling as a real publisher's is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tracked {
    /// History kept at the sender, ns.
    pub history_ns: u64,
    /// Quantile of the history (0..=1).
    pub quantile: f64,
}

/// The tree shape of a tree scheme (overrides from `p`).
pub fn tree_spec(scheme: Scheme, p: &SimParams) -> TreeSpec {
    if !scheme.uses_tree() {
        return TreeSpec {
            depth: Some(1),
            fanout: Some(p.receivers.max(1) as u32),
            hedge: 0,
            spray: false,
            roots: 1,
        };
    }
    let spray = scheme == Scheme::Ours;
    let mut s = TreeSpec {
        depth: p.depth,
        fanout: p.fanout,
        hedge: p.hedge.unwrap_or(2),
        spray: p.spray.unwrap_or(spray),
        // Jasper-v1: the paper's single root. Ours: the hedged roots a
        // plan has by default, so the publisher → root hop, whose delay
        // every receiver shares, is hedged like every hop below it.
        roots: p.roots.unwrap_or(if scheme == Scheme::Ours {
            jasper_core::plan::DEFAULT_ROOTS
        } else {
            1
        }),
    };
    if s.depth.is_none() && s.fanout.is_none() {
        // The paper's rule of thumb: fanout 10, depth round(log10 N).
        // Hedging needs siblings below the root: at least two levels.
        let min_depth = if s.hedge > 0 { 2 } else { 1 };
        let d = ((p.receivers as f64).log10().round() as u32).max(min_depth);
        s.depth = Some(d);
        s.fanout = Some(jasper_core::plan::fanout_for_depth(p.receivers, d));
    }
    s
}

/// A deadline offset that never moves.
pub fn fixed_offset(off: u64) -> DeadlinePolicy {
    DeadlinePolicy {
        initial_offset_ns: off,
        margin_ns: 0,
        add_clock_bound: false,
        floor_ns: off,
        ceiling_ns: off,
        tracked: None,
    }
}

/// The sender's and receivers' configuration of a scheme.
pub fn node_configs(scheme: Scheme, p: &SimParams) -> (SenderConfig, ReceiverConfig) {
    let margin_ns = p.margin_ns.unwrap_or(scheme.default_margin_ns());
    let sender = SenderConfig {
        // Direct unicast pays N copies per heartbeat: heartbeat rarely.
        heartbeat_interval_ns: if scheme.uses_tree() {
            1_000_000
        } else {
            100_000_000
        },
        deadline: match scheme {
            Scheme::Direct => DeadlinePolicy::default(),
            Scheme::Cloudex => fixed_offset(100_000),
            Scheme::JasperV1 | Scheme::Ours => DeadlinePolicy {
                initial_offset_ns: 500_000,
                margin_ns,
                add_clock_bound: scheme == Scheme::Ours,
                floor_ns: 0,
                ceiling_ns: 5_000_000,
                // "ours" tracked: the quantile of the roots' reports over
                // the history, kept by the publisher's deadline state.
                tracked: match (scheme, p.tracked) {
                    (Scheme::Ours, Some(t)) => Some(TrackedDeadline {
                        history_ns: t.history_ns,
                        quantile_ppm: (t.quantile.clamp(0.0, 1.0) * 1e6).round() as u32,
                    }),
                    _ => None,
                },
            },
        },
        // A store only when recovery is simulated.
        retransmit: jasper_core::retransmit::RetransmitConfig {
            buffer_bytes: if p.recovery { 16 << 20 } else { 0 },
            ..Default::default()
        },
        ..SenderConfig::default()
    };
    let tracked = scheme == Scheme::Ours && p.tracked.is_some();
    let defaults = ReceiverConfig::default();
    let receiver = ReceiverConfig {
        // Direct unicast: every receiver's report reaches the sender, whose
        // deadline no receiver holds to (direct) or which never moves with
        // them (cloudex's offset follows the late ratio): report rarely, as
        // the sender heartbeats rarely. N reports per millisecond were most
        // of those runs' events.
        report_interval_ns: if scheme.uses_tree() {
            defaults.report_interval_ns
        } else {
            100_000_000
        },
        dedup_window: 4096,
        max_held: 1 << 20,
        hold: scheme.holds(),
        estimator: if tracked {
            // The max of each report interval.
            EstimatorConfig {
                window_ns: defaults.report_interval_ns,
                percentile: 100.0,
                ..EstimatorConfig::default()
            }
        } else {
            EstimatorConfig {
                percentile: p.percentile.unwrap_or(scheme.default_percentile()),
                ..EstimatorConfig::default()
            }
        },
        recovery: jasper_core::recovery::RecoveryConfig {
            enabled: p.recovery,
            ..defaults.recovery
        },
        ..defaults
    };
    (sender, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_has_the_planned_hedged_roots_and_jasper_v1_the_papers_one() {
        let p = SimParams::default();
        assert_eq!(tree_spec(Scheme::JasperV1, &p).roots, 1);
        assert_eq!(
            tree_spec(Scheme::Ours, &p).roots,
            jasper_core::plan::DEFAULT_ROOTS
        );
        const { assert!(jasper_core::plan::DEFAULT_ROOTS > 1) };
        // `--roots` sets both.
        let one = SimParams {
            roots: Some(1),
            ..SimParams::default()
        };
        assert_eq!(tree_spec(Scheme::Ours, &one).roots, 1);
    }

    #[test]
    fn tree_schemes_pick_fanout_10_up_to_a_hundred_thousand() {
        for (n, depth) in [(100, 2), (1_000, 3), (10_000, 4), (100_000, 5)] {
            let p = SimParams {
                receivers: n,
                ..SimParams::default()
            };
            for s in [Scheme::JasperV1, Scheme::Ours] {
                let t = tree_spec(s, &p);
                assert_eq!((t.depth, t.fanout), (Some(depth), Some(10)), "{s:?} N={n}");
            }
        }
    }

    #[test]
    fn tracked_ours_runs_the_publishers_own_tracked_deadline() {
        let p = SimParams {
            margin_ns: Some(80_000),
            tracked: Some(Tracked {
                history_ns: 100_000_000,
                quantile: 0.5,
            }),
            ..SimParams::default()
        };
        let (sender, receiver) = node_configs(Scheme::Ours, &p);
        let d = sender.deadline;
        assert_eq!(
            d.tracked,
            Some(TrackedDeadline {
                history_ns: 100_000_000,
                quantile_ppm: 500_000
            })
        );
        assert_eq!((d.margin_ns, d.add_clock_bound), (80_000, true));
        // Receivers report each interval's max delay.
        assert_eq!(receiver.estimator.percentile, 100.0);
        // Only "ours" tracks.
        let (v1, _) = node_configs(Scheme::JasperV1, &p);
        assert_eq!(v1.deadline.tracked, None);
    }
}
