//! Checkers beside the nodes: what the product promises, checked on every
//! release and at the end of a run; and what the clocks promised, counted.
//!
//! Invariant violations (a bug in the product or the simulator):
//! - every (message, receiver) is handed over at most once;
//! - a holding receiver hands messages over in deadline order, never before
//!   the deadline on its own clock (except on hold-queue overflow), and
//!   promptly: its clock reads at most [`RELEASE_LAG_NS`] past the deadline,
//!   beyond what the clock itself moved (wander, a jump past the deadline,
//!   read noise) since the wake was scheduled;
//! - the true-time spread (DWS) of a message no receiver got late is
//!   explained by the receivers' *actual* clock errors at release, their
//!   release jitter and hand-off, and that lag;
//! - with several publishers (deadline-ordered multicast): every receiver
//!   hands over in (deadline, stream, sequence) order except messages it
//!   flags late, so any two messages no receiver got late reach every
//!   receiver in the same relative order;
//! - every missing message was detected by its receiver (when it learned
//!   where the session ended); with recovery on, every message is handed
//!   over once unless reported lost by range, and nothing is reported lost
//!   while a live node the receiver reaches through live upstreams still
//!   holds it.
//!
//! Clock promises (reported, not violations — clocks do break them):
//! releases whose clock error was beyond the declared bound, and messages
//! whose spread exceeded 2 × bound + hand-off because of them.

use jasper_core::metrics::Collector;
use jasper_core::receiver::Release;
use serde::Serialize;

/// How long after its clock reaches the deadline a receiver may release.
pub const RELEASE_LAG_NS: u64 = 1_000;

#[derive(Debug, Clone, Copy)]
struct MsgCheck {
    late: u32,
    on_time: u32,
    min_err: i64,
    max_err: i64,
    max_extra: u64,
    max_lag: u64,
    outside_bound: bool,
}

impl Default for MsgCheck {
    fn default() -> Self {
        MsgCheck {
            late: 0,
            on_time: 0,
            min_err: i64::MAX,
            max_err: i64::MIN,
            max_extra: 0,
            max_lag: 0,
            outside_bound: false,
        }
    }
}

/// What the clocks did, measured against their declared bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClockPromise {
    /// On-time releases whose receiver's clock error exceeded its bound.
    pub releases_outside_bound: u64,
    /// Messages handed over on time everywhere whose spread exceeded
    /// 2 × bound + hand-off.
    pub messages_beyond_2b: u64,
    /// … of which some receiver's clock was beyond its bound (the clock's
    /// fault, not the product's).
    pub messages_beyond_2b_by_clock: u64,
    /// Largest clock error seen at an on-time release, ns.
    pub max_abs_error_ns: u64,
}

/// Why messages were unfair at the headline threshold (each counted once,
/// in this order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnfairCauses {
    /// Some receiver never got it.
    pub incomplete: u64,
    /// Some receiver got it after its deadline.
    pub late: u64,
    /// On time everywhere, but the spread exceeded the threshold with a
    /// clock outside its bound.
    pub spread_clock: u64,
    /// On time everywhere, clocks within their bound, spread too wide
    /// (clock error within the bound, release jitter, hand-off).
    pub spread_other: u64,
}

/// Invariants checked beside the nodes.
#[derive(Debug)]
pub struct Checker {
    violations: Vec<String>,
    violation_count: u64,
    last_key: Vec<Option<(u64, u32, u64)>>,
    msgs: Vec<MsgCheck>,
    bound: u64,
    promise: ClockPromise,
}

/// One release as the engine saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The receiver's clock error at the release (local − true), ns.
    pub clock_error_ns: i64,
    /// Release jitter + hand-off before this message went out, ns.
    pub extra_ns: u64,
    /// How far past the deadline the receiver's own clock may read because
    /// the clock itself moved since the wake was scheduled (wander, a jump
    /// past the deadline, read noise), ns.
    pub lag_allowance_ns: u64,
}

impl Checker {
    /// For `receivers` receivers, `messages` messages, clocks declaring `bound`.
    pub fn new(receivers: usize, messages: usize, bound: u64) -> Self {
        Checker {
            violations: Vec::new(),
            violation_count: 0,
            last_key: vec![None; receivers],
            msgs: vec![MsgCheck::default(); messages],
            bound,
            promise: ClockPromise::default(),
        }
    }

    /// Record a violation (the first 20 are kept verbatim, all are counted).
    pub fn fail(&mut self, v: String) {
        self.violation_count += 1;
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }

    /// A receiver handed message `msg` (its index over all publishers) over.
    pub fn on_release(&mut self, r: usize, msg: u64, rel: &Release, hold: bool, o: Observed) {
        let Some(m) = self.msgs.get_mut(msg as usize) else {
            self.fail(format!(
                "receiver {r} released unknown message (stream {} sequence {})",
                rel.stream, rel.seq
            ));
            return;
        };
        if rel.late {
            m.late += 1;
            return;
        }
        if !hold {
            return;
        }
        let lag = rel.release_ns.saturating_sub(rel.deadline_ns);
        m.on_time += 1;
        m.min_err = m.min_err.min(o.clock_error_ns);
        m.max_err = m.max_err.max(o.clock_error_ns);
        m.max_extra = m.max_extra.max(o.extra_ns);
        m.max_lag = m.max_lag.max(lag);
        if o.clock_error_ns.unsigned_abs() > self.bound {
            m.outside_bound = true;
            self.promise.releases_outside_bound += 1;
        }
        self.promise.max_abs_error_ns = self
            .promise
            .max_abs_error_ns
            .max(o.clock_error_ns.unsigned_abs());
        if !rel.early && rel.release_ns < rel.deadline_ns {
            self.fail(format!(
                "receiver {r} released seq {} at {} before its deadline {} (local clock)",
                rel.seq, rel.release_ns, rel.deadline_ns
            ));
        }
        if !rel.early && lag > RELEASE_LAG_NS + o.lag_allowance_ns {
            self.fail(format!(
                "receiver {r} released seq {} {lag} ns after its deadline on its own clock (limit {RELEASE_LAG_NS} ns + {} ns the clock moved)",
                rel.seq, o.lag_allowance_ns
            ));
        }
        // Deadline-ordered multicast: (deadline, stream, sequence) across
        // publishers; only a message flagged late may break it.
        let key = (rel.deadline_ns, rel.stream, rel.seq);
        if let Some(last) = self.last_key[r] {
            if key < last {
                self.fail(format!(
                    "receiver {r} released stream {} seq {} out of deadline order (after {:?}) without flagging it late",
                    rel.stream, rel.seq, last
                ));
            }
        }
        self.last_key[r] = Some(key);
    }

    /// End-of-run checks over the collected deliveries.
    pub fn finish(&mut self, collector: &Collector, hold: bool) {
        if !hold {
            return;
        }
        for i in 0..self.msgs.len() {
            let m = self.msgs[i];
            // Same order everywhere: a message no receiver got late went to
            // every receiver after everything with a smaller key it got.
            if m.late == 0 && collector.disordered_at(i as u64) {
                self.fail(format!(
                    "message {i}: no receiver flagged it late, yet one handed it over after a message with a later deadline"
                ));
            }
            if m.late > 0 || m.on_time == 0 {
                continue;
            }
            let Some(dws) = collector.dws_at(i as u64) else {
                continue;
            };
            // Hand-over instant = deadline − error + lag + extra, per
            // receiver, so the spread is bounded by these terms.
            let explained = (m.max_err - m.min_err).max(0) as u64 + m.max_extra + m.max_lag;
            if dws > explained + 1 {
                self.fail(format!(
                    "message {i}: release spread {dws} ns exceeds what the clocks' actual errors ({} .. {} ns), hand-off ({} ns) and lag ({} ns) explain",
                    m.min_err, m.max_err, m.max_extra, m.max_lag
                ));
            }
            if dws > 2 * self.bound + m.max_extra + m.max_lag {
                self.promise.messages_beyond_2b += 1;
                self.promise.messages_beyond_2b_by_clock += m.outside_bound as u64;
            }
        }
    }

    /// Violations kept verbatim.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// All violations counted.
    pub fn violation_count(&self) -> u64 {
        self.violation_count
    }

    /// What the clocks did.
    pub fn clock_promise(&self) -> ClockPromise {
        self.promise
    }

    /// Classify the unfair messages of a holding scheme: `receivers` per
    /// message, DWS within `threshold_ns` is fair.
    pub fn unfair_causes(
        &self,
        collector: &Collector,
        receivers: u32,
        threshold_ns: u64,
    ) -> UnfairCauses {
        let mut c = UnfairCauses::default();
        for (i, m) in self.msgs.iter().enumerate() {
            let dws = collector.dws_at(i as u64).unwrap_or(0);
            if m.late + m.on_time < receivers {
                c.incomplete += 1;
            } else if dws <= threshold_ns {
                continue;
            } else if m.late > 0 {
                c.late += 1;
            } else if m.outside_bound {
                c.spread_clock += 1;
            } else {
                c.spread_other += 1;
            }
        }
        c
    }

    /// Per message: receivers that got it late.
    pub fn late_per_message(&self) -> Vec<u32> {
        self.msgs.iter().map(|m| m.late).collect()
    }

    /// Take the kept violations.
    pub fn into_violations(self) -> Vec<String> {
        self.violations
    }
}
