//! Deadline estimation: receivers' one-way-delay percentiles, their
//! max-reduction up the tree, and the sender's deadline rule.
//!
//! - [`OwdEstimator`]: sliding-window percentile of one-way delay at a
//!   receiver (window and percentile configurable). The window's samples sit
//!   in a bounded ring (`max_samples`); [`OwdEstimator::estimate`] copies
//!   them and selects the exact percentile (`select_nth_unstable`, O(n) per
//!   call, called once per report interval, not per packet).
//! - [`Reducer`]: a proxy keeps the latest report of each child and forwards
//!   the max (of estimates and clock bounds) upward; reports older than a
//!   staleness limit are ignored, so a dead child does not pin the deadline.
//! - [`DeadlinePolicy`] / [`DeadlineState`]: the sender's rule
//!   `deadline = send_time + estimate + margin (+ clock bound)`, clamped to
//!   `[floor, ceiling]` and never decreasing within a stream (so release order
//!   by deadline is sequence order).
//! - [`QuantileTracker`]: a quantile of the tree's recent reduced reports
//!   over a longer history — with receivers reporting their per-interval
//!   max, a quantile of the per-message max delay (OML) itself rather than
//!   the max of per-receiver window percentiles. The simulator's "ours"
//!   drives the sender's offset with it.
//! - [`StepTuner`]: the CloudEx-style alternative (offset moved in fixed steps
//!   toward a target late ratio), used as a baseline by the simulator.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::plan::NodeId;
use crate::wire::DelayReport;

/// Estimator settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorConfig {
    /// Sliding window, ns.
    pub window_ns: u64,
    /// Percentile in (0, 100].
    pub percentile: f64,
    /// Most samples kept in the window (oldest dropped beyond it).
    pub max_samples: usize,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            window_ns: 10_000_000,
            percentile: 97.0,
            max_samples: 65_536,
        }
    }
}

/// Sliding-window percentile of one-way delay: the samples of the window in
/// a bounded ring (one sample per received packet), the exact percentile by
/// selection when asked (once per report interval). Memory is proportional
/// to the packet rate × window, capped by `max_samples`.
#[derive(Debug, Clone)]
pub struct OwdEstimator {
    cfg: EstimatorConfig,
    samples: VecDeque<(u64, u64)>,
    scratch: Vec<u64>,
    dropped: u64,
}

impl OwdEstimator {
    /// New estimator. `cfg` is assumed validated (see [`crate::config`]).
    pub fn new(cfg: EstimatorConfig) -> Self {
        OwdEstimator {
            cfg,
            samples: VecDeque::new(),
            scratch: Vec::new(),
            dropped: 0,
        }
    }

    fn expire(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(self.cfg.window_ns);
        while self.samples.front().is_some_and(|(t, _)| *t < horizon) {
            self.samples.pop_front();
        }
    }

    /// Record a sample taken at `now_ns`.
    pub fn record(&mut self, now_ns: u64, owd_ns: u64) {
        if self.samples.len() >= self.cfg.max_samples.max(1) {
            self.samples.pop_front();
            self.dropped += 1;
        }
        self.samples.push_back((now_ns, owd_ns));
    }

    /// The percentile over the window ending at `now_ns`; `None` when empty.
    pub fn estimate(&mut self, now_ns: u64) -> Option<u64> {
        self.expire(now_ns);
        if self.samples.is_empty() {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend(self.samples.iter().map(|(_, v)| *v));
        let n = self.scratch.len();
        let rank = ((self.cfg.percentile / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
        Some(*self.scratch.select_nth_unstable(rank).1)
    }

    /// Samples in the current window (as of the last call).
    pub fn samples(&self) -> u64 {
        self.samples.len() as u64
    }
}

/// Max-reduction of children's reports at a proxy.
#[derive(Debug, Clone)]
pub struct Reducer {
    children: Vec<(NodeId, Option<(DelayReport, u64)>)>,
    stale_after_ns: u64,
    ceiling_ns: u64,
    /// Per child (same order): reports clamped to the ceiling, and reduced
    /// maxima this child set while far above its siblings' median.
    flags: Vec<ChildFlags>,
}

/// What a child's reports did to the reduced estimate (for counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildFlags {
    /// The child.
    pub child: NodeId,
    /// Reports above the ceiling (clamped to it).
    pub clamped: u64,
    /// Reductions where this child alone set the max at more than
    /// [`OUTLIER_FACTOR`] × the median of its siblings.
    pub outlier: u64,
}

/// A child whose estimate exceeds this multiple of its siblings' median is
/// named as an outlier.
pub const OUTLIER_FACTOR: u64 = 4;

impl Reducer {
    /// Reduce over these children; reports older than `stale_after_ns` are
    /// ignored, estimates above `ceiling_ns` clamped to it.
    pub fn new(children: &[NodeId], stale_after_ns: u64, ceiling_ns: u64) -> Self {
        Reducer {
            children: children.iter().map(|c| (*c, None)).collect(),
            stale_after_ns,
            ceiling_ns,
            flags: children
                .iter()
                .map(|c| ChildFlags {
                    child: *c,
                    ..ChildFlags::default()
                })
                .collect(),
        }
    }

    /// Per-child counters (clamped and outlier reports).
    pub fn flags(&self) -> &[ChildFlags] {
        &self.flags
    }

    /// Store a child's report. Returns false (and stores nothing) when the
    /// sender is not one of this node's children.
    pub fn handle_report(&mut self, now_ns: u64, from: NodeId, report: DelayReport) -> bool {
        match self.children.iter().position(|(c, _)| *c == from) {
            Some(i) => {
                let mut report = report;
                if report.owd_ns > self.ceiling_ns {
                    report.owd_ns = self.ceiling_ns;
                    self.flags[i].clamped += 1;
                }
                self.children[i].1 = Some((report, now_ns));
                true
            }
            None => false,
        }
    }

    /// The max over fresh reports with data, as a report from `node`.
    /// A child that alone sets the max far above its siblings is counted in
    /// [`Reducer::flags`].
    pub fn reduce(&mut self, now_ns: u64, node: NodeId) -> Option<DelayReport> {
        let mut out: Option<DelayReport> = None;
        let mut owds: Vec<(u64, usize)> = Vec::with_capacity(self.children.len());
        for (i, (_, r)) in self.children.iter().enumerate() {
            let Some((rep, at)) = r else { continue };
            if now_ns.saturating_sub(*at) > self.stale_after_ns || rep.samples == 0 {
                continue;
            }
            let o = out.get_or_insert(DelayReport {
                node,
                receivers: 0,
                owd_ns: 0,
                clock_bound_ns: 0,
                samples: 0,
            });
            o.owd_ns = o.owd_ns.max(rep.owd_ns);
            o.clock_bound_ns = o.clock_bound_ns.max(rep.clock_bound_ns);
            o.receivers = o.receivers.saturating_add(rep.receivers);
            o.samples = o.samples.saturating_add(rep.samples);
            owds.push((rep.owd_ns, i));
        }
        if owds.len() >= 3 {
            owds.sort_unstable();
            let median = owds[(owds.len() - 1) / 2].0;
            let (top, who) = owds[owds.len() - 1];
            let second = owds[owds.len() - 2].0;
            if top > median.saturating_mul(OUTLIER_FACTOR) && top > second.saturating_mul(2) {
                self.flags[who].outlier += 1;
            }
        }
        out
    }

    /// Children with a fresh report.
    pub fn fresh(&self, now_ns: u64) -> usize {
        self.children
            .iter()
            .filter(|(_, r)| matches!(r, Some((_, at)) if now_ns.saturating_sub(*at) <= self.stale_after_ns))
            .count()
    }
}

/// The sender's deadline rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlinePolicy {
    /// Offset used until the first estimate arrives, ns.
    pub initial_offset_ns: u64,
    /// Safety margin added to the estimate, ns.
    pub margin_ns: u64,
    /// Add the worst clock error bound (own and receivers') to the offset.
    pub add_clock_bound: bool,
    /// Smallest offset, ns.
    pub floor_ns: u64,
    /// Largest offset, ns (the ceiling: messages are never held longer).
    pub ceiling_ns: u64,
    /// Track a quantile of the roots' reports over a history instead of
    /// taking the latest report: one scheduling spike in one report
    /// interval then moves the deadline only as far as the quantile says
    /// (`None`: the latest report, Jasper-v1's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked: Option<TrackedDeadline>,
}

/// A deadline from the history of the roots' reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackedDeadline {
    /// History kept, ns.
    pub history_ns: u64,
    /// Quantile of the reported estimates over the history, in millionths
    /// (990000 = p99).
    pub quantile_ppm: u32,
}

/// Reports kept by a tracked deadline (a bound whatever the history).
const TRACKED_MAX_SAMPLES: usize = 1 << 16;

impl Default for DeadlinePolicy {
    fn default() -> Self {
        DeadlinePolicy {
            initial_offset_ns: 500_000,
            margin_ns: 25_000,
            add_clock_bound: true,
            floor_ns: 0,
            ceiling_ns: 5_000_000,
            tracked: None,
        }
    }
}

/// Deadline computation state at the sender.
#[derive(Debug, Clone)]
pub struct DeadlineState {
    policy: DeadlinePolicy,
    estimate: Option<DelayReport>,
    last_deadline_ns: u64,
    /// Tracked mode: the history and its quantile at the last report.
    tracker: Option<QuantileTracker>,
    tracked_owd_ns: Option<u64>,
}

fn tracker_for(policy: &DeadlinePolicy) -> Option<QuantileTracker> {
    policy.tracked.map(|t| {
        QuantileTracker::new(
            t.history_ns,
            t.quantile_ppm.min(1_000_000) as f64 / 1e6,
            TRACKED_MAX_SAMPLES,
        )
    })
}

impl DeadlineState {
    /// Start with no estimate.
    pub fn new(policy: DeadlinePolicy) -> Self {
        DeadlineState {
            tracker: tracker_for(&policy),
            policy,
            estimate: None,
            last_deadline_ns: 0,
            tracked_owd_ns: None,
        }
    }
    /// Replace the rule (e.g. a tuner moving the offset); the monotonicity
    /// of deadlines is kept across the change.
    pub fn set_policy(&mut self, policy: DeadlinePolicy) {
        if policy.tracked != self.policy.tracked {
            self.tracker = tracker_for(&policy);
            self.tracked_owd_ns = None;
        }
        self.policy = policy;
    }
    /// Take the tree's reduced estimate (from a root proxy's report sent at
    /// `at_ns` on the root's synchronized clock).
    pub fn handle_report(&mut self, at_ns: u64, report: DelayReport) {
        if report.samples > 0 {
            self.estimate = Some(report);
            if let Some(t) = &mut self.tracker {
                t.observe(at_ns, report.owd_ns);
                self.tracked_owd_ns = t.quantile(at_ns);
            }
        }
    }
    /// Current estimate.
    pub fn estimate(&self) -> Option<DelayReport> {
        self.estimate
    }
    /// Current offset (deadline − send time) for a sender clock bound.
    pub fn offset_ns(&self, own_bound_ns: u64) -> u64 {
        let p = &self.policy;
        let raw = match self.estimate {
            None => p.initial_offset_ns,
            Some(e) => {
                let bound = if p.add_clock_bound {
                    own_bound_ns.max(e.clock_bound_ns)
                } else {
                    0
                };
                let owd = match (&self.tracker, self.tracked_owd_ns) {
                    (Some(_), Some(q)) => q,
                    _ => e.owd_ns,
                };
                owd.saturating_add(p.margin_ns).saturating_add(bound)
            }
        };
        raw.clamp(p.floor_ns, p.ceiling_ns.max(p.floor_ns))
    }
    /// Deadline for a packet sent at `send_ns`; never below the previous one.
    pub fn deadline(&mut self, send_ns: u64, own_bound_ns: u64) -> u64 {
        let d = send_ns
            .saturating_add(self.offset_ns(own_bound_ns))
            .max(self.last_deadline_ns);
        self.last_deadline_ns = d;
        d
    }
}

/// A quantile over a sliding history of observations (e.g. the root's
/// reduced reports, one per report interval). Bounded: at most
/// `max_samples` kept; exact quantile by selection when asked.
#[derive(Debug, Clone)]
pub struct QuantileTracker {
    history_ns: u64,
    quantile: f64,
    max_samples: usize,
    samples: VecDeque<(u64, u64)>,
    scratch: Vec<u64>,
}

impl QuantileTracker {
    /// Track quantile `quantile` (0..=1) over the last `history_ns`.
    pub fn new(history_ns: u64, quantile: f64, max_samples: usize) -> Self {
        QuantileTracker {
            history_ns,
            quantile: quantile.clamp(0.0, 1.0),
            max_samples: max_samples.max(1),
            samples: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// Record `value` observed at `now_ns`.
    pub fn observe(&mut self, now_ns: u64, value: u64) {
        if self.samples.len() >= self.max_samples {
            self.samples.pop_front();
        }
        self.samples.push_back((now_ns, value));
    }

    /// The quantile of the history ending at `now_ns`; `None` when empty.
    pub fn quantile(&mut self, now_ns: u64) -> Option<u64> {
        let horizon = now_ns.saturating_sub(self.history_ns);
        while self.samples.front().is_some_and(|(t, _)| *t < horizon) {
            self.samples.pop_front();
        }
        if self.samples.is_empty() {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend(self.samples.iter().map(|(_, v)| *v));
        let n = self.scratch.len();
        let rank = ((self.quantile * n as f64).ceil() as usize).clamp(1, n) - 1;
        Some(*self.scratch.select_nth_unstable(rank).1)
    }

    /// Observations in the history (as of the last call).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the history is empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// CloudEx-style offset tuning: move by `step_ns` toward a target late ratio.
#[derive(Debug, Clone, Copy)]
pub struct StepTuner {
    /// Current offset, ns.
    pub offset_ns: u64,
    /// Step, ns (CloudEx: 5 µs).
    pub step_ns: u64,
    /// Target late ratio (e.g. 0.01).
    pub target_late: f64,
    late: u64,
    total: u64,
}

impl StepTuner {
    /// New tuner.
    pub fn new(initial_ns: u64, step_ns: u64, target_late: f64) -> Self {
        StepTuner {
            offset_ns: initial_ns,
            step_ns,
            target_late,
            late: 0,
            total: 0,
        }
    }
    /// Feed one delivery outcome.
    pub fn observe(&mut self, late: bool) {
        self.total += 1;
        self.late += late as u64;
    }
    /// End of an adjustment period: step up if too many were late, down otherwise.
    pub fn adjust(&mut self) {
        if self.total == 0 {
            return;
        }
        let ratio = self.late as f64 / self.total as f64;
        if ratio > self.target_late {
            self.offset_ns += self.step_ns;
        } else {
            self.offset_ns = self.offset_ns.saturating_sub(self.step_ns);
        }
        self.late = 0;
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_window() {
        let mut e = OwdEstimator::new(EstimatorConfig {
            percentile: 90.0,
            ..Default::default()
        });
        for i in 0..1000u64 {
            e.record(i * 1000, (i % 100 + 1) * 1000);
        }
        let est = e.estimate(1_000_000).unwrap();
        assert_eq!(est, 90_000);
    }

    #[test]
    fn old_samples_expire() {
        let mut e = OwdEstimator::new(EstimatorConfig {
            percentile: 99.0,
            ..Default::default()
        });
        for i in 0..100 {
            e.record(i * 10_000, 500_000);
        }
        // 12 ms later the big samples are gone; new small ones dominate.
        for i in 0..100 {
            e.record(13_000_000 + i * 10_000, 50_000);
        }
        let est = e.estimate(14_000_000).unwrap();
        assert!(est < 60_000, "{est}");
        // Much later with no samples: no estimate.
        assert_eq!(e.estimate(100_000_000), None);
    }

    #[test]
    fn partial_expiry_keeps_recent_slots() {
        let mut e = OwdEstimator::new(EstimatorConfig {
            percentile: 100.0,
            max_samples: 3,
            ..Default::default()
        });
        e.record(0, 900_000);
        e.record(5_000_000, 100_000);
        assert_eq!(e.estimate(9_000_000), Some(900_000));
        // At 10.5 ms the sample from 0 ms expired, the 5 ms one did not.
        assert_eq!(e.estimate(10_500_000), Some(100_000));
        assert_eq!(e.samples(), 1);
        // The ring is bounded.
        for i in 0..10 {
            e.record(11_000_000 + i, i);
        }
        assert_eq!(e.samples(), 3);
        assert_eq!(e.estimate(11_000_010), Some(9));
    }

    #[test]
    fn estimate_converges_to_the_delay_distribution() {
        // Uniform delays 20..120 µs; p97 should settle near 117 µs.
        let mut e = OwdEstimator::new(EstimatorConfig::default());
        let mut x: u64 = 12345;
        let mut t = 0;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let owd = 20_000 + (x >> 33) % 100_000;
            t += 1_000;
            e.record(t, owd);
        }
        let est = e.estimate(t).unwrap();
        assert!((113_000..=121_000).contains(&est), "{est}");
    }

    fn rep(node: NodeId, owd: u64, bound: u64) -> DelayReport {
        DelayReport {
            node,
            receivers: 1,
            owd_ns: owd,
            clock_bound_ns: bound,
            samples: 10,
        }
    }

    #[test]
    fn reducer_takes_max_of_fresh_children() {
        let mut r = Reducer::new(&[10, 11, 12], 50_000_000, 5_000_000);
        assert!(r.handle_report(0, 10, rep(10, 100, 5)));
        assert!(r.handle_report(0, 11, rep(11, 300, 2)));
        assert!(
            !r.handle_report(0, 99, rep(99, 9999, 0)),
            "strangers are refused"
        );
        let out = r.reduce(1, 5).unwrap();
        assert_eq!(
            (out.node, out.owd_ns, out.clock_bound_ns, out.receivers),
            (5, 300, 5, 2)
        );
        // 11 goes stale; 12 reports later.
        r.handle_report(60_000_000, 12, rep(12, 200, 1));
        r.handle_report(60_000_000, 10, rep(10, 100, 5));
        let out = r.reduce(60_000_001, 5).unwrap();
        assert_eq!(out.owd_ns, 200);
        assert_eq!(r.fresh(60_000_001), 2);
    }

    #[test]
    fn reducer_clamps_names_outliers_and_never_overflows() {
        let mut r = Reducer::new(&[1, 2, 3, 4], 50_000_000, 5_000_000);
        for c in 1..=3 {
            r.handle_report(0, c, rep(c, 100_000, 0));
        }
        r.handle_report(0, 4, rep(4, u64::MAX, 0));
        let out = r.reduce(1, 9).unwrap();
        assert_eq!(out.owd_ns, 5_000_000, "clamped to the ceiling");
        let f = r.flags()[3];
        assert_eq!((f.child, f.clamped, f.outlier), (4, 1, 1));
        assert_eq!(r.flags()[0].outlier, 0);
        // Sums saturate instead of overflowing.
        let mut big = rep(1, 1, 0);
        big.receivers = u32::MAX;
        big.samples = u64::MAX;
        r.handle_report(2, 1, big);
        r.handle_report(2, 2, big);
        let out = r.reduce(3, 9).unwrap();
        assert_eq!((out.receivers, out.samples), (u32::MAX, u64::MAX));
    }

    #[test]
    fn deadline_rule_clamps_and_is_monotone() {
        let mut s = DeadlineState::new(DeadlinePolicy {
            initial_offset_ns: 400_000,
            margin_ns: 25_000,
            add_clock_bound: true,
            floor_ns: 10_000,
            ceiling_ns: 1_000_000,
            tracked: None,
        });
        assert_eq!(s.deadline(1_000_000, 100), 1_400_000);
        s.handle_report(0, rep(1, 100_000, 200));
        // estimate + margin + max(bound) = 100_000 + 25_000 + 300.
        assert_eq!(s.offset_ns(300), 125_300);
        // Monotone: an earlier computed deadline is raised to the previous one.
        assert_eq!(s.deadline(1_100_000, 300), 1_400_000);
        assert_eq!(s.deadline(2_000_000, 300), 2_125_300);
        s.handle_report(0, rep(1, 50_000_000, 0));
        assert_eq!(s.offset_ns(0), 1_000_000, "ceiling");
        s.handle_report(
            0,
            DelayReport {
                samples: 0,
                ..rep(1, 1, 0)
            },
        );
        assert_eq!(s.offset_ns(0), 1_000_000, "empty reports are ignored");
    }

    #[test]
    fn a_tracked_deadline_follows_the_quantile_of_the_reports_not_one_spike() {
        let mut s = DeadlineState::new(DeadlinePolicy {
            margin_ns: 0,
            add_clock_bound: false,
            tracked: Some(TrackedDeadline {
                history_ns: 100_000_000,
                quantile_ppm: 900_000,
            }),
            ..DeadlinePolicy::default()
        });
        // One report per ms: 100 µs, with one 2 ms spike.
        for i in 0..50u64 {
            let owd = if i == 25 { 2_000_000 } else { 100_000 };
            s.handle_report(i * 1_000_000, rep(1, owd, 0));
        }
        // The latest report says 100 µs, p90 of the history too: the spike
        // moved nothing after it passed…
        assert_eq!(s.offset_ns(0), 100_000);
        // …while a lasting rise moves the quantile.
        for i in 50..100u64 {
            s.handle_report(i * 1_000_000, rep(1, 300_000, 0));
        }
        assert_eq!(s.offset_ns(0), 300_000);
        // The latest-report rule (Jasper-v1's) jumps with a spike.
        let mut v1 = DeadlineState::new(DeadlinePolicy {
            margin_ns: 0,
            add_clock_bound: false,
            ..DeadlinePolicy::default()
        });
        v1.handle_report(0, rep(1, 2_000_000, 0));
        assert_eq!(v1.offset_ns(0), 2_000_000);
        let mut s2 = s.clone();
        s2.handle_report(100_000_000, rep(1, 2_000_000, 0));
        assert_eq!(s2.offset_ns(0), 300_000, "one spike in the history");
        // As a config file writes it.
        let p: DeadlinePolicy = toml::from_str(
            "margin_ns = 80000\ntracked = { history_ns = 100000000, quantile_ppm = 500000 }",
        )
        .unwrap();
        assert_eq!(
            p.tracked,
            Some(TrackedDeadline {
                history_ns: 100_000_000,
                quantile_ppm: 500_000
            })
        );
        // Switching the mode off takes the latest report again.
        s2.set_policy(DeadlinePolicy {
            margin_ns: 0,
            add_clock_bound: false,
            ..DeadlinePolicy::default()
        });
        assert_eq!(s2.offset_ns(0), 2_000_000);
    }

    #[test]
    fn quantile_tracker_follows_its_history() {
        let mut q = QuantileTracker::new(100_000_000, 0.9, 1000);
        assert_eq!(q.quantile(0), None);
        for i in 0..100u64 {
            q.observe(i * 1_000_000, (i % 10 + 1) * 1_000);
        }
        // Values 1..10 µs, ten of each: the 90th percentile is 9 µs.
        assert_eq!(q.quantile(99_000_000), Some(9_000));
        // 50 ms later half the history expired; what is left still spans 1..10.
        assert_eq!(q.quantile(150_000_000), Some(9_000));
        assert_eq!(q.len(), 50);
        // Bounded.
        let mut b = QuantileTracker::new(u64::MAX, 1.0, 3);
        for v in [5, 1, 2, 3] {
            b.observe(0, v);
        }
        assert_eq!(b.quantile(0), Some(3));
    }

    #[test]
    fn step_tuner_moves_toward_target() {
        let mut t = StepTuner::new(100_000, 5_000, 0.01);
        for _ in 0..100 {
            t.observe(true);
        }
        t.adjust();
        assert_eq!(t.offset_ns, 105_000);
        for _ in 0..100 {
            t.observe(false);
        }
        t.adjust();
        assert_eq!(t.offset_ns, 100_000);
    }
}
