//! The core's nodes working together, through the simulator: the real
//! sender, proxy and receiver state machines in a hedged tree, run by
//! [`jasper_sim::run`] in virtual time (no sockets, no sleeps). Besides what
//! each test asserts, every run's checkers hold: each (message, receiver)
//! handed over at most once, in deadline order, never before its deadline
//! on the receiver's own clock and promptly after it, the true-time spread
//! explained by the clocks' actual errors, and every missing message
//! detected by its receiver.
//!
//! The models here are small and exact: uniform per-hop delays and nothing
//! else (no copy or processing cost, no release jitter, no loss), so each
//! test's numbers follow from its model.

use jasper_core::model::{CloudModel, Dist};
use jasper_core::plan::{loopback_inventory, proxies_needed, Plan};
use jasper_sim::{run, Faults, Loss, Scheme, SchemeResult, SimParams};

/// Every hop (publisher → root → level 2 → receiver) takes uniform
/// `[lo_ns, hi_ns]`; nothing else costs anything; clocks are perfect.
fn hops(lo_ns: f64, hi_ns: f64) -> CloudModel {
    CloudModel {
        base_ns: Dist::Uniform { a: lo_ns, b: hi_ns },
        ..CloudModel::zero()
    }
}

/// `receivers` in a depth-2, fanout-4 tree with `hedge` hedged upstreams
/// per node below the root, `messages` at `rate` msg/s.
fn tree(receivers: usize, messages: u64, rate: f64, hedge: u32, spray: bool) -> SimParams {
    SimParams {
        receivers,
        messages,
        rate,
        depth: Some(2),
        fanout: Some(4),
        hedge: Some(hedge),
        spray: Some(spray),
        ..SimParams::default()
    }
}

/// The run, with every checker's invariant held.
fn clean_run(scheme: Scheme, p: &SimParams) -> SchemeResult {
    let r = run(scheme, p).unwrap();
    assert!(
        r.violations.is_empty(),
        "{}: {:?}",
        r.description,
        r.violations
    );
    assert_eq!(
        r.no_end_of_session, 0,
        "every receiver learned where the session ended"
    );
    assert_eq!(r.receiver_stats.len(), p.receivers);
    r
}

#[test]
fn exactly_once_in_order_never_before_deadline() {
    for (seed, spray) in [(1u64, false), (2, true)] {
        // 20-120 µs per hop, so a path takes at most 360 µs; a 400 µs margin
        // on the estimate (and the 500 µs initial offset) leaves no copy late.
        let mut model = hops(20_000.0, 120_000.0);
        // Clocks off by N(0, 25 ns), declaring ±100 ns.
        model.clock.bound_ns = Some(100);
        model.clock.offset_sigma_ns = Some(25.0);
        let p = SimParams {
            seed,
            model,
            margin_ns: Some(400_000),
            ..tree(16, 2_000, 100_000.0, 1, spray)
        };
        let r = clean_run(Scheme::JasperV1, &p);
        assert!(r.clock.max_abs_error_ns > 0, "the clocks are skewed");
        assert_eq!(r.report.missing_total, 0);
        assert_eq!(r.report.duplicates_total, 0);
        assert_eq!(r.report.late_fraction, 0.0, "no copy can be late");
        // Deadlines never decrease within a stream, so deadline order is
        // sequence order: every receiver got 0..2000, each once, in order.
        assert_eq!(r.report.out_of_order_total, 0);
        for (i, t) in r.report.per_receiver.iter().enumerate() {
            assert_eq!((t.delivered, t.late, t.out_of_order), (2_000, 0, 0), "{i}");
        }
        for (i, st) in r.receiver_stats.iter().enumerate() {
            assert_eq!(st.released, 2_000, "receiver {i}");
            assert_eq!(st.late, 0, "receiver {i}");
            assert_eq!(
                st.released_early, 0,
                "receiver {i}: none before its deadline"
            );
            assert!(
                st.duplicates >= 1_900,
                "receiver {i}: hedged copies suppressed: {}",
                st.duplicates
            );
            let paths = st.path_wins.len();
            if spray {
                assert!(
                    paths > 2,
                    "receiver {i}: spraying rotates the upstreams: {st:?}"
                );
            } else {
                assert_eq!(
                    paths, 2,
                    "receiver {i}: both hedged upstreams win sometimes"
                );
            }
        }
    }
}

#[test]
fn late_messages_are_released_at_once() {
    // 2-4 ms per hop: every path (6-12 ms) is longer than any deadline
    // offset (the 5 ms ceiling), so every copy arrives after its deadline.
    let p = SimParams {
        seed: 3,
        model: hops(2_000_000.0, 4_000_000.0),
        ..tree(8, 500, 50_000.0, 1, false)
    };
    let r = clean_run(Scheme::JasperV1, &p);
    assert!(
        r.publisher_offset_ns <= 5_000_000,
        "{}",
        r.publisher_offset_ns
    );
    // Late messages are still handed over exactly once.
    assert_eq!(r.report.missing_total, 0);
    assert_eq!(r.report.duplicates_total, 0);
    assert_eq!(r.report.late_fraction, 1.0);
    for (i, st) in r.receiver_stats.iter().enumerate() {
        assert_eq!((st.released, st.late), (500, 500), "receiver {i}");
    }
    // …and at once: no delivery was held (release − arrival on the
    // receiver's clock is 0 for every one), so with no release jitter each
    // hand-over latency is its arrival latency.
    assert_eq!(r.report.holding_ns.max, 0, "{:?}", r.report.holding_ns);
    assert_eq!(r.report.handover_ns, r.report.owd_ns);
    assert!(r.report.handover_ns.p50 > 6_000_000);
}

#[test]
fn lost_packets_show_up_as_gaps() {
    // The root forwards no copy of 100, 101 and the last message, 299: all
    // copies on every path are lost. 299 is learned missing only from the
    // end-of-session notice.
    let lost = [100, 101, 299];
    let p = SimParams {
        seed: 4,
        model: hops(20_000.0, 60_000.0),
        faults: Faults {
            losses: vec![
                Loss {
                    proxies: vec![0],
                    from_msg: 100,
                    to_msg: 102,
                },
                Loss {
                    proxies: vec![0],
                    from_msg: 299,
                    to_msg: 300,
                },
            ],
            ..Faults::default()
        },
        ..tree(8, 300, 100_000.0, 1, false)
    };
    // The checkers' "every missing message detected" holds (clean_run), and
    // every receiver learned that the session ended at 300.
    let r = clean_run(Scheme::JasperV1, &p);
    // Nobody got the lost ones and everybody got the rest, so each
    // receiver misses exactly 100, 101 and 299.
    for m in 0..300 {
        assert_eq!(
            r.collector.dws_at(m).is_none(),
            lost.contains(&m),
            "message {m}"
        );
    }
    assert_eq!(r.report.messages_incomplete, 3);
    for (i, st) in r.receiver_stats.iter().enumerate() {
        assert_eq!(r.report.per_receiver[i].missing, 3, "receiver {i}");
        assert_eq!(r.report.per_receiver[i].duplicates, 0, "receiver {i}");
        assert_eq!(st.released, 297, "receiver {i}");
        // Transient gaps from reordering across hedged paths were filled
        // later; exactly the three lost messages remain detected as gaps.
        assert_eq!(st.gaps_detected - st.gaps_filled, 3, "receiver {i}: {st:?}");
        // The end of session is reported once although both hedged copies
        // of the notice arrive.
        assert_eq!(st.sessions_ended, 1, "receiver {i}");
    }
}

#[test]
fn deadline_estimate_converges_to_tree_delay() {
    // Three hops (publisher → root → level 2 → receiver), each 40-60 µs:
    // one-way delay 120-180 µs. Jasper-v1's rule: p97 of a 10 ms window,
    // max-reduced up the tree, + 25 µs (perfect clocks: no bound added).
    let p = SimParams {
        seed: 5,
        model: hops(40_000.0, 60_000.0),
        ..tree(16, 5_000, 100_000.0, 1, false)
    };
    let r = clean_run(Scheme::JasperV1, &p);
    let est = r.publisher_estimate.expect("the root reported an estimate");
    // With H=1 each receiver keeps the faster of two copies on the last
    // hop; the p97 of the first-copy delay lies well inside 120-180 µs.
    assert!((140_000..=182_000).contains(&est.owd_ns), "{est:?}");
    assert_eq!(
        est.receivers, 16,
        "every receiver's report reached the publisher"
    );
    assert_eq!(r.publisher_offset_ns, est.owd_ns + 25_000);
    // After convergence (the last 1000 messages) nothing is late, and every
    // hand-over happens by the converged deadline (≤ 182 + 25 µs after the
    // send; no release jitter): no delivery of them was held more than
    // 207 − 120 = 87 µs, the initial 500 µs offset long gone.
    for m in 4_000..5_000u64 {
        assert_eq!(r.late_per_message[m as usize], 0, "message {m}");
        let handover = r.collector.handover_max_at(m).unwrap();
        assert!(
            handover <= 207_000,
            "message {m}: handed over {handover} ns after the send"
        );
    }
    let hold = r.report.holding_ns.mean;
    assert!(
        hold < 120_000.0,
        "mean holding {hold} ns (warm-up included)"
    );
}

#[test]
fn skewed_clocks_release_within_bound_in_true_time() {
    // Clocks declaring ±150 ns, and every node's clock stepped by exactly
    // +150 or −150 ns (alternating by node) at the start: each receiver
    // releases at the deadline on its own clock, so the release instants
    // (true time) of a message spread by 2 × 150 ns, and no more.
    let bound = 150i64;
    let mut model = hops(20_000.0, 100_000.0);
    model.clock.bound_ns = Some(bound as u64);
    model.clock.offset_sigma_ns = Some(0.0);
    // A 300 µs margin covers the longest path: nothing can be late.
    let mut p = SimParams {
        seed: 6,
        model,
        margin_ns: Some(300_000),
        ..tree(16, 500, 100_000.0, 2, true)
    };
    let spec = jasper_sim::schemes::tree_spec(Scheme::Ours, &p);
    let inv = loopback_inventory(
        proxies_needed(p.receivers, false, &spec),
        p.receivers,
        false,
        1,
    );
    let plan = Plan::build(&inv, &spec).unwrap();
    p.faults.clock_steps = plan
        .nodes
        .iter()
        .map(|n| (n.id, 0, if n.id % 2 == 0 { bound } else { -bound }))
        .collect();
    let r = clean_run(Scheme::Ours, &p);
    assert_eq!(r.clock.max_abs_error_ns, bound as u64, "{:?}", r.clock);
    assert_eq!(r.clock.releases_outside_bound, 0, "{:?}", r.clock);
    assert_eq!(r.clock.messages_beyond_2b, 0, "{:?}", r.clock);
    assert_eq!(r.report.missing_total, 0);
    assert_eq!(r.report.late_fraction, 0.0);
    // Every message: spread at most 2 × bound in true time, and the clocks
    // really are apart (both signs among the receivers).
    assert!(
        r.report.dws_ns_max <= 2 * bound as u64,
        "{:?}",
        r.report.dws_ns
    );
    assert!(
        r.report.dws_ns.p50 >= 2 * bound as u64 - 2,
        "{:?}",
        r.report.dws_ns
    );
}
