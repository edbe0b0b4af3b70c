//! The paper's fairness metrics, computed the same way everywhere (local
//! runs, the simulator, benchmarks), mergeable across receivers and processes.
//!
//! Definitions (see `docs/METRICS.md` / jasper-notes §3):
//! - **OWD**: arrival of the first copy (receiver's synchronized clock) −
//!   send time (sender's synchronized clock), per (message, receiver).
//! - **OML**: per message, the max OWD over receivers.
//! - **DWS**: per message, max − min over receivers of the instant the message
//!   was handed to the MP, in *true* time (the host clock in a local run, the
//!   simulator's clock in a simulation).
//! - **P(F)**: fraction of messages whose DWS is within the fairness threshold,
//!   `2 × clock bound` (two clocks each within ±b can disagree by 2b). The
//!   threshold is reported alongside.
//! - **Holding**: deadline − arrival, per (message, receiver).
//! - **Late fraction**: late (message, receiver) deliveries / deliveries.
//! - **Missing / duplicates**: per receiver, messages never delivered and
//!   messages delivered more than once.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const MAX_NS: u64 = 3_600_000_000_000;

/// A latency histogram (ns, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static bounds are valid")
}

/// Record a value, clamped into the histogram's range.
#[inline]
pub fn record(h: &mut Histogram<u64>, v: u64) {
    let _ = h.record(v.min(MAX_NS));
}

/// Summary of one distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl Summary {
    /// Summarize a histogram (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean: h.mean(),
            std: h.stdev(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One (message, receiver) delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Receiver index (0-based, dense).
    pub receiver: u32,
    /// Message index (sequence − first sequence).
    pub msg: u64,
    /// OWD on synchronized clocks, ns (may be negative under clock error).
    pub owd_ns: i64,
    /// Instant handed to the MP, true time, ns.
    pub handed_true_ns: u64,
    /// Deadline − arrival (0 when late), ns.
    pub holding_ns: u64,
    /// Arrived at/after deadline or out of order.
    pub late: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct MsgAgg {
    min_handed: u64,
    max_handed: u64,
    max_owd: u64,
    got: u32,
}

/// Per-receiver tallies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverTally {
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Messages delivered more than once.
    pub duplicates: u64,
    /// Messages never delivered.
    pub missing: u64,
    /// Late deliveries.
    pub late: u64,
}

/// Collects deliveries and computes a [`FairnessReport`].
#[derive(Debug, Clone)]
pub struct Collector {
    msgs: Vec<MsgAgg>,
    seen: Vec<Vec<u64>>,
    tally: Vec<ReceiverTally>,
    owd: Histogram<u64>,
    holding: Histogram<u64>,
    deliveries: u64,
    late: u64,
    negative_owd: u64,
}

impl Collector {
    /// For `receivers` receivers and (up to) `messages` messages (grows if needed).
    pub fn new(receivers: usize, messages: usize) -> Self {
        Collector {
            msgs: vec![MsgAgg::default(); messages],
            seen: vec![Vec::new(); receivers],
            tally: vec![ReceiverTally::default(); receivers],
            owd: histogram(),
            holding: histogram(),
            deliveries: 0,
            late: 0,
            negative_owd: 0,
        }
    }

    /// Number of receivers.
    pub fn receivers(&self) -> usize {
        self.tally.len()
    }

    /// Record one delivery.
    pub fn add(&mut self, d: Delivery) {
        let r = d.receiver as usize;
        if r >= self.tally.len() {
            self.tally.resize(r + 1, ReceiverTally::default());
            self.seen.resize(r + 1, Vec::new());
        }
        let m = d.msg as usize;
        let (w, b) = (m / 64, m % 64);
        let seen = &mut self.seen[r];
        if seen.len() <= w {
            seen.resize(w + 1, 0);
        }
        if seen[w] & (1 << b) != 0 {
            self.tally[r].duplicates += 1;
            return;
        }
        seen[w] |= 1 << b;
        if self.msgs.len() <= m {
            self.msgs.resize(m + 1, MsgAgg::default());
        }
        let a = &mut self.msgs[m];
        let owd = if d.owd_ns < 0 {
            self.negative_owd += 1;
            0
        } else {
            d.owd_ns as u64
        };
        if a.got == 0 {
            a.min_handed = d.handed_true_ns;
            a.max_handed = d.handed_true_ns;
        } else {
            a.min_handed = a.min_handed.min(d.handed_true_ns);
            a.max_handed = a.max_handed.max(d.handed_true_ns);
        }
        a.max_owd = a.max_owd.max(owd);
        a.got += 1;
        self.tally[r].delivered += 1;
        self.tally[r].late += d.late as u64;
        self.deliveries += 1;
        self.late += d.late as u64;
        record(&mut self.owd, owd);
        record(&mut self.holding, d.holding_ns);
    }

    /// Fold in another collector whose receiver indices are disjoint from
    /// this one's (e.g. another process's receivers).
    pub fn merge(&mut self, other: &Collector) {
        if other.msgs.len() > self.msgs.len() {
            self.msgs.resize(other.msgs.len(), MsgAgg::default());
        }
        for (a, b) in self.msgs.iter_mut().zip(&other.msgs) {
            if b.got == 0 {
                continue;
            }
            if a.got == 0 {
                *a = *b;
            } else {
                a.min_handed = a.min_handed.min(b.min_handed);
                a.max_handed = a.max_handed.max(b.max_handed);
                a.max_owd = a.max_owd.max(b.max_owd);
                a.got += b.got;
            }
        }
        if other.tally.len() > self.tally.len() {
            self.tally
                .resize(other.tally.len(), ReceiverTally::default());
            self.seen.resize(other.tally.len(), Vec::new());
        }
        for (i, t) in other.tally.iter().enumerate() {
            if t.delivered + t.duplicates > 0 {
                self.tally[i].delivered += t.delivered;
                self.tally[i].duplicates += t.duplicates;
                self.tally[i].late += t.late;
            }
        }
        let _ = self.owd.add(&other.owd);
        let _ = self.holding.add(&other.holding);
        self.deliveries += other.deliveries;
        self.late += other.late;
        self.negative_owd += other.negative_owd;
    }

    /// Compute the report for `messages` published messages and a clock
    /// error bound of `clock_bound_ns` (worst node).
    pub fn report(&self, messages: u64, clock_bound_ns: u64) -> FairnessReport {
        let threshold = 2 * clock_bound_ns;
        let mut dws = histogram();
        let mut oml = histogram();
        let mut fair = 0u64;
        let mut with_any = 0u64;
        for a in self.msgs.iter().take(messages as usize) {
            if a.got == 0 {
                continue;
            }
            with_any += 1;
            let w = a.max_handed - a.min_handed;
            record(&mut dws, w);
            record(&mut oml, a.max_owd);
            fair += (w <= threshold) as u64;
        }
        let receivers = self.tally.len() as u64;
        let per_receiver: Vec<ReceiverTally> = self
            .tally
            .iter()
            .map(|t| ReceiverTally {
                missing: messages.saturating_sub(t.delivered),
                ..t.clone()
            })
            .collect();
        let missing_total = per_receiver.iter().map(|t| t.missing).sum();
        let duplicates_total = per_receiver.iter().map(|t| t.duplicates).sum();
        let d = Summary::of(&dws);
        let o = Summary::of(&oml);
        FairnessReport {
            messages_published: messages,
            receivers,
            deliveries: self.deliveries,
            missing_total,
            duplicates_total,
            late_fraction: if self.deliveries == 0 {
                0.0
            } else {
                self.late as f64 / self.deliveries as f64
            },
            clock_bound_ns,
            fairness_threshold_ns: threshold,
            p_f: if with_any == 0 {
                0.0
            } else {
                fair as f64 / with_any as f64
            },
            dws_ns_p50: d.p50,
            dws_ns_p99: d.p99,
            dws_ns_max: d.max,
            oml_ns_p50: o.p50,
            oml_ns_p99: o.p99,
            owd_ns: Summary::of(&self.owd),
            oml_ns: o,
            dws_ns: d,
            holding_ns: Summary::of(&self.holding),
            negative_owd: self.negative_owd,
            per_receiver,
        }
    }

    /// The OWD histogram (for plots).
    pub fn owd_histogram(&self) -> &Histogram<u64> {
        &self.owd
    }

    /// DWS of message `msg` (`None` when nobody got it).
    pub fn dws_at(&self, msg: u64) -> Option<u64> {
        self.msgs
            .get(msg as usize)
            .filter(|a| a.got > 0)
            .map(|a| a.max_handed - a.min_handed)
    }

    /// DWS values per message (for plots), in message order.
    pub fn dws_values(&self, messages: u64) -> Vec<u64> {
        self.msgs
            .iter()
            .take(messages as usize)
            .filter(|a| a.got > 0)
            .map(|a| a.max_handed - a.min_handed)
            .collect()
    }

    /// Serialize (for shipping a process's results to the orchestrator).
    pub fn to_bytes(&self) -> Vec<u8> {
        use hdrhistogram::serialization::{Serializer, V2Serializer};
        let mut out = Vec::new();
        let put = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        put(&mut out, self.msgs.len() as u64);
        for a in &self.msgs {
            put(&mut out, a.min_handed);
            put(&mut out, a.max_handed);
            put(&mut out, a.max_owd);
            put(&mut out, a.got as u64);
        }
        put(&mut out, self.tally.len() as u64);
        for t in &self.tally {
            put(&mut out, t.delivered);
            put(&mut out, t.duplicates);
            put(&mut out, t.late);
        }
        put(&mut out, self.deliveries);
        put(&mut out, self.late);
        put(&mut out, self.negative_owd);
        for h in [&self.owd, &self.holding] {
            let mut buf = Vec::new();
            let _ = V2Serializer::new().serialize(h, &mut buf);
            put(&mut out, buf.len() as u64);
            out.extend_from_slice(&buf);
        }
        out
    }

    /// Inverse of [`Collector::to_bytes`]; `None` on malformed input.
    pub fn from_bytes(b: &[u8]) -> Option<Collector> {
        use hdrhistogram::serialization::Deserializer;
        let mut at = 0usize;
        fn get_at(b: &[u8], at: &mut usize) -> Option<u64> {
            let v = u64::from_le_bytes(b.get(*at..*at + 8)?.try_into().ok()?);
            *at += 8;
            Some(v)
        }
        macro_rules! get {
            ($b:expr) => {
                get_at($b, &mut at)
            };
        }
        let n = get!(b)? as usize;
        if n > b.len() / 32 {
            return None;
        }
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            msgs.push(MsgAgg {
                min_handed: get!(b)?,
                max_handed: get!(b)?,
                max_owd: get!(b)?,
                got: get!(b)? as u32,
            });
        }
        let r = get!(b)? as usize;
        if r > b.len() / 24 {
            return None;
        }
        let mut tally = Vec::with_capacity(r);
        for _ in 0..r {
            tally.push(ReceiverTally {
                delivered: get!(b)?,
                duplicates: get!(b)?,
                missing: 0,
                late: get!(b)?,
            });
        }
        let deliveries = get!(b)?;
        let late = get!(b)?;
        let negative_owd = get!(b)?;
        let mut hs = Vec::new();
        for _ in 0..2 {
            let len = get!(b)? as usize;
            let slice = b.get(at..at.checked_add(len)?)?;
            at += len;
            let h: Histogram<u64> = Deserializer::new().deserialize(&mut &slice[..]).ok()?;
            hs.push(h);
        }
        let holding = hs.pop()?;
        let owd = hs.pop()?;
        Some(Collector {
            msgs,
            seen: vec![Vec::new(); r],
            tally,
            owd,
            holding,
            deliveries,
            late,
            negative_owd,
        })
    }
}

/// The fairness report. The flat keys at the top are a stable interface
/// (`jasper local --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessReport {
    /// Messages the publisher sent.
    pub messages_published: u64,
    /// Receivers (MPs).
    pub receivers: u64,
    /// (message, receiver) deliveries.
    pub deliveries: u64,
    /// Sum over receivers of messages never delivered.
    pub missing_total: u64,
    /// Sum over receivers of messages delivered more than once.
    pub duplicates_total: u64,
    /// Late deliveries / deliveries.
    pub late_fraction: f64,
    /// Worst clock error bound, ns.
    pub clock_bound_ns: u64,
    /// DWS within this counts as fair (2 × clock bound), ns.
    pub fairness_threshold_ns: u64,
    /// Fraction of messages with DWS within the threshold.
    pub p_f: f64,
    /// DWS median, ns.
    pub dws_ns_p50: u64,
    /// DWS p99, ns.
    pub dws_ns_p99: u64,
    /// DWS max, ns.
    pub dws_ns_max: u64,
    /// OML median, ns.
    pub oml_ns_p50: u64,
    /// OML p99, ns.
    pub oml_ns_p99: u64,
    /// OWD distribution.
    pub owd_ns: Summary,
    /// OML distribution.
    pub oml_ns: Summary,
    /// DWS distribution.
    pub dws_ns: Summary,
    /// Holding-time distribution.
    pub holding_ns: Summary,
    /// Deliveries whose synchronized-clock OWD was negative (clock error).
    pub negative_owd: u64,
    /// Per receiver.
    pub per_receiver: Vec<ReceiverTally>,
}

impl FairnessReport {
    /// A human-readable table.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let us = |v: u64| v as f64 / 1000.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "messages {}  receivers {}  deliveries {}  missing {}  duplicates {}",
            self.messages_published,
            self.receivers,
            self.deliveries,
            self.missing_total,
            self.duplicates_total
        );
        let row = |s: &mut String, name: &str, m: &Summary| {
            let _ = writeln!(
                s,
                "  {name:<9} p50 {:>9.1} µs  p99 {:>9.1} µs  p99.9 {:>9.1} µs  max {:>9.1} µs  mean {:>9.1} µs",
                us(m.p50),
                us(m.p99),
                us(m.p999),
                us(m.max),
                m.mean / 1000.0
            );
        };
        row(&mut s, "OWD", &self.owd_ns);
        row(&mut s, "OML", &self.oml_ns);
        row(&mut s, "DWS", &self.dws_ns);
        row(&mut s, "holding", &self.holding_ns);
        let _ = writeln!(
            s,
            "  P(F) {:.2}% (DWS ≤ {:.3} µs = 2 × clock bound)   late {:.4}%",
            self.p_f * 100.0,
            us(self.fairness_threshold_ns),
            self.late_fraction * 100.0
        );
        let worst = self
            .per_receiver
            .iter()
            .enumerate()
            .filter(|(_, t)| t.missing > 0 || t.duplicates > 0);
        for (i, t) in worst.take(10) {
            let _ = writeln!(
                s,
                "  receiver {i}: delivered {} missing {} duplicates {} late {}",
                t.delivered, t.missing, t.duplicates, t.late
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(r: u32, m: u64, owd: i64, t: u64, late: bool) -> Delivery {
        Delivery {
            receiver: r,
            msg: m,
            owd_ns: owd,
            handed_true_ns: t,
            holding_ns: 1000,
            late,
        }
    }

    #[test]
    fn dws_oml_pf_and_missing() {
        let mut c = Collector::new(3, 2);
        // Message 0: handed at 1000, 1100, 1300 -> DWS 300; OML 90.
        c.add(d(0, 0, 50, 1000, false));
        c.add(d(1, 0, 90, 1100, false));
        c.add(d(2, 0, 70, 1300, true));
        // Message 1: only two receivers, identical instants -> DWS 0.
        c.add(d(0, 1, 10, 5000, false));
        c.add(d(1, 1, 20, 5000, false));
        c.add(d(1, 1, 20, 5000, false)); // duplicate delivery
        let r = c.report(2, 100);
        assert_eq!(r.missing_total, 1);
        assert_eq!(r.duplicates_total, 1);
        assert_eq!(r.per_receiver[2].missing, 1);
        assert_eq!(r.dws_ns_max, 300);
        assert_eq!(r.fairness_threshold_ns, 200);
        assert!((r.p_f - 0.5).abs() < 1e-9);
        assert!((r.late_fraction - 0.2).abs() < 1e-9);
        assert_eq!(r.oml_ns.max, 90);
    }

    #[test]
    fn merge_equals_single_collection_and_round_trips() {
        let all: Vec<Delivery> = (0..4)
            .flat_map(|r| {
                (0..50).map(move |m| {
                    d(
                        r,
                        m,
                        (m * 10 + r as u64) as i64,
                        1_000 * m + r as u64 * 7,
                        m % 7 == 0,
                    )
                })
            })
            .collect();
        let mut one = Collector::new(4, 50);
        all.iter().for_each(|x| one.add(*x));
        let mut a = Collector::new(4, 50);
        let mut b = Collector::new(4, 50);
        all.iter()
            .filter(|x| x.receiver < 2)
            .for_each(|x| a.add(*x));
        all.iter()
            .filter(|x| x.receiver >= 2)
            .for_each(|x| b.add(*x));
        let b = Collector::from_bytes(&b.to_bytes()).unwrap();
        a.merge(&b);
        assert_eq!(a.report(50, 10), one.report(50, 10));
        assert!(Collector::from_bytes(b"short").is_none());
    }
}
