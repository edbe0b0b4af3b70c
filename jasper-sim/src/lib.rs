//! # jasper-sim
//!
//! A deterministic discrete-event simulator that runs the real `jasper-core`
//! sender, proxy and receiver state machines — not a re-implementation —
//! over simulated links, hosts and clocks, so designs can be compared at
//! paper scale (1000–10,000 receivers, and up to 100,000: memory is linear
//! in the receivers) on the same work and any run reproduced from its seed.
//!
//! - [`engine`]: virtual time (events keyed by (time, sequence); time jumps
//!   to the next one), links and hosts following [`CloudModel`] (per-hop
//!   base + jitter settable per tree level, slow episodes, loss,
//!   duplication, reordering; each host serializes its per-copy send cost,
//!   proxies add their processing cost; receivers hand over after a release
//!   jitter and a per-message hand-off cost). Common random numbers: every
//!   clock and host draws from its own stream keyed by its role, every copy
//!   on a link from a stream of the link and the instant it enters it (links
//!   keep no state), so schemes run from one seed differ only where their
//!   designs do. Pending events wait in a calendar queue.
//! - [`clocks`]: each node's clock error is a process (wander, drift, steps
//!   and tails beyond the declared bound); nothing clamps it.
//! - [`schemes`]: direct unicast, CloudEx-style, Jasper-v1-style, ours.
//! - [`checkers`]: invariants checked on every release and at the end;
//!   clocks breaking their bound are counted and reported, not assumed away.
//! - [`scenarios`]: stalled and crashed proxies, chosen losses, clock
//!   steps, and the random scenarios of the swarm test. The behaviours of
//!   the core's nodes working together (exactly once and in order, late
//!   messages released at once, losses detected as gaps, the deadline
//!   converging, skewed clocks) are tested through this simulator in
//!   `tests/scenarios.rs`.
//! - [`montecarlo`]: the paper's hedging Monte Carlo.

use jasper_core::metrics::{Collector, FairnessReport};
use jasper_core::model::CloudModel;

pub mod byzantine;
pub mod checkers;
pub mod clocks;
pub mod engine;
pub mod model_file;
pub mod montecarlo;
mod queue;
pub mod scenarios;
pub mod schemes;

pub use checkers::{Checker, ClockPromise, UnfairCauses};
pub use engine::run;
pub use scenarios::{random_scenario, Faults, Loss, Stall};
pub use schemes::Scheme;

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
    /// Root proxies R (`None`: the scheme's — jasper-v1 1, the paper's
    /// single root; ours [`jasper_core::plan::DEFAULT_ROOTS`], as planned).
    pub roots: Option<u32>,
    /// Loss recovery: stores at the publisher and proxies, receivers ask
    /// for what they miss (off by default: the paper's schemes do not).
    pub recovery: bool,
    /// The cloud.
    pub model: CloudModel,
    /// Extra faults.
    pub faults: Faults,
    /// The headline P(F) threshold: DWS within this is fair, ns.
    pub fair_threshold_ns: u64,
    /// Deadline estimate percentile override (tree schemes).
    pub percentile: Option<f64>,
    /// Deadline margin override, ns (tree schemes).
    pub margin_ns: Option<u64>,
    /// "ours" with a tracked deadline (see [`schemes::Tracked`]).
    pub tracked: Option<schemes::Tracked>,
    /// Publishers K, each its own stream into the same roots; publisher k
    /// (of K) publishes a share (K − k) / (1 + … + K) of the messages at
    /// that share of the rate, so each has its own rate.
    pub publishers: usize,
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
            roots: None,
            recovery: false,
            model: CloudModel::default(),
            faults: Faults::default(),
            fair_threshold_ns: jasper_core::metrics::DEFAULT_FAIR_THRESHOLD_NS,
            percentile: None,
            margin_ns: None,
            tracked: None,
            publishers: 1,
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
    /// Invariant violations (empty = all held; the first 20 verbatim).
    pub violations: Vec<String>,
    /// Invariant violations counted.
    pub violation_count: u64,
    /// What the clocks did against their declared bound.
    pub clock: ClockPromise,
    /// Why messages were unfair (holding schemes).
    pub unfair: UnfairCauses,
    /// Per message: receivers that got it after its deadline.
    pub late_per_message: Vec<u32>,
    /// Human-readable configuration.
    pub description: String,
    /// Receivers that never learned the end of the session.
    pub no_end_of_session: u64,
    /// The busiest host's send load: time spent sending copies / the
    /// publishing period. At 1 or more the host cannot keep up with the
    /// feed: its latency grows with the run length (saturated), so it is
    /// not a latency of the scheme.
    pub max_host_load: f64,
    /// With Byzantine injectors: packets injected, and every node's guard
    /// counters summed.
    pub guard: Option<(u64, jasper_core::guard::GuardStats)>,
    /// Per receiver (by MP index, like the collector's): the real
    /// receiver's own counters at the end of the run — hedged copies
    /// suppressed, which paths won, gaps detected and filled, sessions
    /// ended — so tests can check the core's behaviour through the
    /// simulator.
    pub receiver_stats: Vec<jasper_core::receiver::ReceiverStats>,
    /// The primary publisher's last reduced delay estimate from the tree
    /// (`None`: no report reached it).
    pub publisher_estimate: Option<jasper_core::wire::DelayReport>,
    /// The primary publisher's deadline offset (deadline − send time) at
    /// the end of the run, ns.
    pub publisher_offset_ns: u64,
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

    fn attacked(b: byzantine::Byzantine) -> SimParams {
        SimParams {
            faults: Faults {
                byzantine: Some(b),
                ..Faults::default()
            },
            hedge: Some(1),
            ..small(60)
        }
    }

    #[test]
    fn retransmission_recovers_what_loss_takes_exactly_once() {
        let lossy = |recovery| SimParams {
            messages: 2_000,
            hedge: Some(0),
            roots: Some(2),
            recovery,
            model: jasper_core::model::CloudModel {
                loss: 0.02,
                ..jasper_core::model::CloudModel::default()
            },
            ..small(30)
        };
        let without = run(Scheme::Ours, &lossy(false)).unwrap();
        assert!(
            without.report.missing_total > 0,
            "2% loss per link loses messages"
        );
        let with = run(Scheme::Ours, &lossy(true)).unwrap();
        assert!(with.violations.is_empty(), "{:?}", with.violations);
        assert_eq!(with.report.missing_total, 0, "{}", with.description);
        assert_eq!(with.report.duplicates_total, 0);
    }

    #[test]
    fn byzantine_injectors_change_nothing_the_keys_cover() {
        for (insider_mp, spoof) in [(None, false), (None, true), (Some(0), false)] {
            let p = attacked(byzantine::Byzantine {
                injections: 2_000,
                insider_mp,
                spoof,
            });
            for s in [Scheme::JasperV1, Scheme::Ours] {
                let r = run(s, &p).unwrap();
                assert!(
                    r.violations.is_empty(),
                    "{s:?} {insider_mp:?} {spoof}: {:?}",
                    r.violations
                );
                assert_eq!(r.report.missing_total, 0);
                let (injected, g) = r.guard.clone().unwrap();
                assert_eq!(injected, 2_000);
                // Replays of authentic packets pass the guard and die as
                // duplicates; everything forged is refused by a guard.
                assert!(g.dropped() > 1_000, "{g:?}");
                if spoof {
                    assert!(g.unauthenticated + g.bad_tag > 0, "{g:?}");
                } else {
                    assert!(g.unknown_source > 0, "{g:?}");
                }
            }
        }
    }

    #[test]
    fn an_insider_forging_sources_is_the_uncovered_case_and_shows() {
        // docs/SECURITY.md: with the feed key and a forged parent address an
        // insider can feed other receivers. The simulator reports it.
        let p = attacked(byzantine::Byzantine {
            injections: 4_000,
            insider_mp: Some(0),
            spoof: true,
        });
        let r = run(Scheme::Ours, &p).unwrap();
        assert!(r.violation_count > 0, "{:?}", r.violations);
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("forged") || v.contains("unknown message")),
            "{:?}",
            r.violations
        );
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

    fn uniform_hops(unit: f64) -> CloudModel {
        let mut m = CloudModel::zero();
        let u = jasper_core::model::Dist::Uniform { a: 0.0, b: unit };
        m.levels = vec![
            jasper_core::model::LevelModel {
                base_ns: Some(u.clone()),
                jitter_ns: None,
            };
            3
        ];
        m
    }

    #[test]
    fn tree_runs_match_the_hedging_monte_carlo() {
        // Uniform[0, 100 µs] hops, depth 2, fanout 10: the simulated tree's
        // mean first-copy delay equals the Monte Carlo of the same shape
        // (hedged below level 2 only).
        let unit = 100_000.0;
        for hedge in [0u32, 2] {
            let p = SimParams {
                model: uniform_hops(unit),
                depth: Some(2),
                fanout: Some(10),
                hedge: Some(hedge),
                spray: Some(false),
                messages: 300,
                ..small(100)
            };
            let r = run(Scheme::JasperV1, &p).unwrap();
            assert!(r.violations.is_empty(), "{:?}", r.violations);
            let sim = r.report.owd_ns.mean / unit;
            let mc = montecarlo::HedgingMc {
                sizes: vec![1, 10, 100],
                hedge: hedge as usize,
                hedged_from: 3,
                levels: vec![jasper_core::model::Dist::Uniform { a: 0.0, b: unit }],
                trials: 2000,
                seed: 1,
            }
            .mean_first_copy_ns()
                / unit;
            assert!(
                (sim - mc).abs() < 0.06,
                "H={hedge}: sim {sim} vs Monte Carlo {mc}"
            );
        }
    }

    #[test]
    fn schemes_share_their_random_numbers() {
        // jasper-v1 and ours differ here only in the deadline rule: same
        // tree (one root, no spraying), same links, same clocks, so every
        // arrival is the same.
        let p = SimParams {
            spray: Some(false),
            roots: Some(1),
            percentile: Some(97.0),
            ..small(100)
        };
        let a = run(Scheme::JasperV1, &p).unwrap();
        let b = run(Scheme::Ours, &p).unwrap();
        assert_eq!(a.report.owd_ns, b.report.owd_ns);
        assert_eq!(a.report.oml_ns, b.report.oml_ns);
        assert_ne!(a.report.holding_ns, b.report.holding_ns);
    }

    #[test]
    fn release_jitter_and_hand_off_make_the_spread() {
        // Perfect clocks and links, but each hand-over starts up to 1 µs
        // late: the spread is that jitter, never more, and it is explained.
        let mut m = CloudModel::zero();
        m.release_jitter_ns = jasper_core::model::Dist::Uniform { a: 0.0, b: 1_000.0 };
        m.handoff_ns = jasper_core::model::Dist::Constant { ns: 100.0 };
        let r = run(
            Scheme::JasperV1,
            &SimParams {
                model: m,
                ..small(50)
            },
        )
        .unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.report.dws_ns_p50 > 500, "{}", r.report.dws_ns_p50);
        assert!(
            r.report.dws_ns_max <= 1_000 + 100,
            "{}",
            r.report.dws_ns_max
        );
        assert!(r.report.p_f > 0.9);
        assert_eq!(r.clock, ClockPromise::default());
    }

    #[test]
    fn clocks_beyond_their_bound_are_reported_not_assumed_away() {
        // Frequent steps of 2-3 × the bound: the run reports the releases
        // and messages the clocks spoiled, and no invariant fails.
        let mut m = CloudModel::default();
        m.clock.step_rate_per_s = 20.0;
        m.clock.step_max_bounds = 3.0;
        let r = run(
            Scheme::Ours,
            &SimParams {
                model: m.clone(),
                ..small(100)
            },
        )
        .unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.clock.releases_outside_bound > 0, "{:?}", r.clock);
        assert!(r.clock.messages_beyond_2b_by_clock > 0, "{:?}", r.clock);
        assert!(r.clock.max_abs_error_ns > 200);
        // The headline counts them as unfair.
        m.clock.step_rate_per_s = 0.0;
        m.clock.tail_prob = 0.0;
        let clean = run(
            Scheme::Ours,
            &SimParams {
                model: m,
                ..small(100)
            },
        )
        .unwrap();
        assert!(
            clean.report.p_f > r.report.p_f,
            "{} vs {}",
            clean.report.p_f,
            r.report.p_f
        );
        assert_eq!(clean.clock.messages_beyond_2b_by_clock, 0);
    }

    #[test]
    fn tracked_deadline_runs_clean_and_follows_its_margin() {
        let tracked = |margin_ns| SimParams {
            margin_ns: Some(margin_ns),
            tracked: Some(schemes::Tracked {
                history_ns: 100_000_000,
                quantile: 0.5,
            }),
            messages: 400,
            ..small(100)
        };
        let lo = run(Scheme::Ours, &tracked(20_000)).unwrap();
        let hi = run(Scheme::Ours, &tracked(120_000)).unwrap();
        assert!(lo.violations.is_empty(), "{:?}", lo.violations);
        assert!(hi.violations.is_empty(), "{:?}", hi.violations);
        // More margin: later hand-over, fewer late deliveries.
        assert!(hi.report.handover_max_ns_p50 > lo.report.handover_max_ns_p50 + 50_000);
        assert!(hi.report.late_fraction < lo.report.late_fraction);
    }
}
