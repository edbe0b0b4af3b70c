//! The paper's fairness metrics, computed the same way everywhere (local
//! runs, the simulator, benchmarks), mergeable across receivers and processes.
//!
//! Definitions (`docs/METRICS.md` is the reference; jasper-notes §3):
//! - **OWD**: arrival of the first copy (receiver's synchronized clock) −
//!   send time (sender's synchronized clock), per (message, receiver).
//! - **OML**: per message, the max OWD over receivers (latency at arrival).
//! - **Hand-over latency**: release to the MP (receiver's synchronized clock)
//!   − send time, per (message, receiver); its per-message max is the
//!   latency the slowest MP lives with (what holding costs).
//! - **DWS**: per message, max − min over receivers of the instant the message
//!   was handed to the MP, in *true* time (the host clock in a local run, the
//!   simulator's clock in a simulation).
//! - **P(F)** (headline): fraction of *published* messages that every
//!   receiver was handed with DWS ≤ a fixed threshold (default
//!   [`DEFAULT_FAIR_THRESHOLD_NS`] = 1 µs, the paper's resolution). A message
//!   some receiver never got is unfair. A second figure, `p_f_bound`, uses
//!   `2 × clock bound` as the threshold (two clocks each within ±b can
//!   disagree by 2b); it is absent when a clock is unsynchronized.
//! - **Holding**: release − arrival on the receiver's clock, per (message,
//!   receiver): ≈ deadline − arrival when held, 0 when late or not holding.
//! - **Late fraction**: (message, receiver) pairs handed over after their
//!   deadline — the first copy arrived at/after the deadline, or after a
//!   later-deadline message was already handed over — / deliveries.
//! - **Missing / duplicates**: per receiver, messages never delivered and
//!   messages delivered more than once.

pub use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::clock::ClockStatus;

/// The headline fairness threshold: DWS ≤ 1 µs (the paper's resolution).
pub const DEFAULT_FAIR_THRESHOLD_NS: u64 = 1_000;

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
    /// Hand-over latency: release − send time on synchronized clocks, ns
    /// (may be negative under clock error).
    pub handover_ns: i64,
    /// Instant handed to the MP, true time, ns.
    pub handed_true_ns: u64,
    /// Deadline − arrival (0 when late), ns.
    pub holding_ns: u64,
    /// Handed over after its deadline: arrived at/after it, or after a
    /// later-deadline message was handed over (the receiver's late flag).
    pub late: bool,
    /// The message's deadline (publisher's synchronized clock), ns.
    pub deadline_ns: u64,
    /// Its stream (publisher).
    pub stream: u32,
    /// Its sequence in that stream.
    pub seq: u64,
}

impl Delivery {
    /// The deadline-order key: (deadline, stream, sequence), the order in
    /// which every receiver must hand messages over whatever their publisher.
    pub fn order_key(&self) -> OrderKey {
        (self.deadline_ns, self.stream, self.seq)
    }
}

/// (deadline, stream, sequence).
pub type OrderKey = (u64, u32, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct MsgAgg {
    min_handed: u64,
    max_handed: u64,
    max_owd: u64,
    max_handover: u64,
    got: u32,
    /// Some receiver handed it over after a message with a larger key.
    disordered: bool,
}

impl MsgAgg {
    fn dws(&self) -> u64 {
        self.max_handed.saturating_sub(self.min_handed)
    }
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
    /// Hand-overs after a message with a larger (deadline, stream,
    /// sequence) key: out of deadline order.
    #[serde(default)]
    pub out_of_order: u64,
    /// … of which the receiver did not flag late: deadline-ordered
    /// multicast broken (should be 0).
    #[serde(default)]
    pub out_of_order_unflagged: u64,
}

/// The messages one receiver was handed, as ranges: the exactly-once
/// check costs 40 bytes per receiver plus 16 per gap or out-of-order run
/// still open, not a bit per (receiver, message) — receivers are handed
/// messages mostly in order, so `last` (the highest range) just grows.
#[derive(Debug, Clone, Default)]
struct SeenSet {
    /// The highest range `[start, end)` (empty until the first message).
    last: (u64, u64),
    /// Disjoint, non-adjacent ranges below `last`, ascending.
    below: Vec<(u64, u64)>,
}

impl SeenSet {
    /// Record `m`; false if it was already there.
    fn insert(&mut self, m: u64) -> bool {
        let (a, b) = self.last;
        if a == b {
            self.last = (m, m + 1);
            return true;
        }
        if m == b {
            self.last.1 = b + 1;
            return true;
        }
        if (a..b).contains(&m) {
            return false;
        }
        if m > b {
            self.below.push(self.last);
            self.last = (m, m + 1);
            return true;
        }
        // Below `last`: the ranges, then `last` as the one above them.
        // The first range ending after `m`: `m` is in it, or before it.
        let i = self.below.partition_point(|r| r.1 <= m);
        if self.below.get(i).is_some_and(|r| r.0 <= m) {
            return false;
        }
        // `m` joins the range ending at it, the one starting after it, both,
        // or neither.
        let joins_before = i > 0 && self.below[i - 1].1 == m;
        let next = self.below.get(i).copied().unwrap_or(self.last);
        let joins_after = next.0 == m + 1;
        let next_is_last = i == self.below.len();
        match (joins_before, joins_after) {
            (true, true) => {
                let start = self.below[i - 1].0;
                if next_is_last {
                    self.below.pop();
                    self.last.0 = start;
                } else {
                    self.below[i].0 = start;
                    self.below.remove(i - 1);
                }
            }
            (true, false) => self.below[i - 1].1 = m + 1,
            (false, true) if next_is_last => self.last.0 = m,
            (false, true) => self.below[i].0 = m,
            (false, false) => self.below.insert(i, (m, m + 1)),
        }
        true
    }
}

/// Collects deliveries and computes a [`FairnessReport`].
#[derive(Debug, Clone)]
pub struct Collector {
    msgs: Vec<MsgAgg>,
    seen: Vec<SeenSet>,
    tally: Vec<ReceiverTally>,
    /// Per receiver: the largest order key handed over so far.
    last_key: Vec<Option<OrderKey>>,
    owd: Histogram<u64>,
    handover: Histogram<u64>,
    holding: Histogram<u64>,
    deliveries: u64,
    late: u64,
    negative_owd: u64,
    /// Largest message index + 1 and receiver index + 1 ever stored: a
    /// number read from a packet never sizes memory beyond these.
    limit_msgs: usize,
    limit_receivers: usize,
    out_of_range: u64,
}

/// Message indexes a collector stores when it was not told how many to expect.
pub const DEFAULT_MESSAGE_LIMIT: usize = 1 << 24;
/// Receiver indexes a collector stores at most.
pub const RECEIVER_LIMIT: usize = 1 << 20;

/// How to score a collection (see [`Collector::report_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// Worst clock error bound among the nodes, ns.
    pub clock_bound_ns: u64,
    /// Worst clock status among the nodes.
    pub clock_status: ClockStatus,
    /// DWS within this counts as fair for the headline P(F), ns.
    pub fair_threshold_ns: u64,
}

impl ReportOptions {
    /// Synchronized clocks with this bound, the default 1 µs threshold.
    pub fn with_bound(clock_bound_ns: u64) -> Self {
        ReportOptions {
            clock_bound_ns,
            clock_status: ClockStatus::Synchronized,
            fair_threshold_ns: DEFAULT_FAIR_THRESHOLD_NS,
        }
    }
}

impl Collector {
    /// For `receivers` receivers and (up to) `messages` messages (grows if needed).
    ///
    /// Deliveries of message indexes ≥ `messages` (or ≥
    /// [`DEFAULT_MESSAGE_LIMIT`] when `messages` is 0) are counted as out of
    /// range and never stored.
    pub fn new(receivers: usize, messages: usize) -> Self {
        Self::with_limit(
            receivers,
            messages,
            if messages == 0 {
                DEFAULT_MESSAGE_LIMIT
            } else {
                messages
            },
        )
    }

    /// Like [`Collector::new`], preallocating `messages` but storing up to
    /// `limit` message indexes.
    pub fn with_limit(receivers: usize, messages: usize, limit: usize) -> Self {
        let receivers = receivers.min(RECEIVER_LIMIT);
        Collector {
            msgs: vec![MsgAgg::default(); messages.min(limit)],
            seen: vec![SeenSet::default(); receivers],
            tally: vec![ReceiverTally::default(); receivers],
            last_key: vec![None; receivers],
            owd: histogram(),
            handover: histogram(),
            holding: histogram(),
            deliveries: 0,
            late: 0,
            negative_owd: 0,
            limit_msgs: limit,
            limit_receivers: RECEIVER_LIMIT.max(receivers),
            out_of_range: 0,
        }
    }

    /// Deliveries refused because their message or receiver index was
    /// beyond the limits.
    pub fn out_of_range(&self) -> u64 {
        self.out_of_range
    }

    /// Number of receivers.
    pub fn receivers(&self) -> usize {
        self.tally.len()
    }

    /// Where [`Collector::add`] reads receiver `r`'s own entries, each
    /// passed to `f`: a hint for drivers that prefetch (a simulation hands
    /// messages to a random one of 10⁴–10⁵ receivers). Read-only.
    pub fn receiver_addrs(&self, r: usize, mut f: impl FnMut(*const u8)) {
        if r < self.tally.len() {
            f(self.seen.as_ptr().wrapping_add(r).cast());
            f(self.tally.as_ptr().wrapping_add(r).cast());
            f(self.last_key.as_ptr().wrapping_add(r).cast());
        }
    }

    /// Record one delivery.
    pub fn add(&mut self, d: Delivery) {
        let r = d.receiver as usize;
        if r >= self.limit_receivers || d.msg >= self.limit_msgs as u64 {
            self.out_of_range += 1;
            return;
        }
        if r >= self.tally.len() {
            self.tally.resize(r + 1, ReceiverTally::default());
            self.seen.resize(r + 1, SeenSet::default());
            self.last_key.resize(r + 1, None);
        }
        let m = d.msg as usize;
        if !self.seen[r].insert(d.msg) {
            self.tally[r].duplicates += 1;
            return;
        }
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
        let handover = d.handover_ns.max(0) as u64;
        if a.got == 0 {
            a.min_handed = d.handed_true_ns;
            a.max_handed = d.handed_true_ns;
        } else {
            a.min_handed = a.min_handed.min(d.handed_true_ns);
            a.max_handed = a.max_handed.max(d.handed_true_ns);
        }
        a.max_owd = a.max_owd.max(owd);
        a.max_handover = a.max_handover.max(handover);
        a.got = a.got.saturating_add(1);
        // Deadline order, as this receiver's MP saw it: the deliveries of one
        // receiver arrive here in hand-over order.
        let key = d.order_key();
        match self.last_key[r] {
            Some(last) if key < last => {
                a.disordered = true;
                self.tally[r].out_of_order += 1;
                self.tally[r].out_of_order_unflagged += !d.late as u64;
            }
            _ => self.last_key[r] = Some(key),
        }
        self.tally[r].delivered += 1;
        self.tally[r].late += d.late as u64;
        self.deliveries += 1;
        self.late += d.late as u64;
        record(&mut self.owd, owd);
        record(&mut self.handover, handover);
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
                a.max_handover = a.max_handover.max(b.max_handover);
                a.got = a.got.saturating_add(b.got);
                a.disordered |= b.disordered;
            }
        }
        if other.tally.len() > self.tally.len() {
            self.tally
                .resize(other.tally.len(), ReceiverTally::default());
            self.seen.resize(other.tally.len(), SeenSet::default());
            self.last_key.resize(other.tally.len(), None);
        }
        for (i, t) in other.tally.iter().enumerate() {
            // Counts from another process are input: saturate, never wrap.
            let s = &mut self.tally[i];
            s.delivered = s.delivered.saturating_add(t.delivered);
            s.duplicates = s.duplicates.saturating_add(t.duplicates);
            s.late = s.late.saturating_add(t.late);
            s.out_of_order = s.out_of_order.saturating_add(t.out_of_order);
            s.out_of_order_unflagged = s
                .out_of_order_unflagged
                .saturating_add(t.out_of_order_unflagged);
        }
        let _ = self.owd.add(&other.owd);
        let _ = self.handover.add(&other.handover);
        let _ = self.holding.add(&other.holding);
        self.deliveries = self.deliveries.saturating_add(other.deliveries);
        self.late = self.late.saturating_add(other.late);
        self.negative_owd = self.negative_owd.saturating_add(other.negative_owd);
    }

    /// The report for `messages` published messages, synchronized clocks
    /// with error bound `clock_bound_ns` (worst node) and the default 1 µs
    /// fairness threshold.
    pub fn report(&self, messages: u64, clock_bound_ns: u64) -> FairnessReport {
        self.report_with(messages, ReportOptions::with_bound(clock_bound_ns))
    }

    /// The report for `messages` published messages.
    pub fn report_with(&self, messages: u64, o: ReportOptions) -> FairnessReport {
        let bound_threshold = o.clock_bound_ns.saturating_mul(2);
        let receivers = self.tally.len() as u64;
        let mut dws = histogram();
        let mut oml = histogram();
        let mut hml = histogram();
        let (mut fair, mut fair_bound, mut incomplete) = (0u64, 0u64, 0u64);
        let mut same_order = 0u64;
        for i in 0..messages {
            let a = self.msgs.get(i as usize).copied().unwrap_or_default();
            let complete = receivers > 0 && a.got as u64 >= receivers;
            incomplete += !complete as u64;
            if a.got == 0 {
                continue;
            }
            let w = a.dws();
            record(&mut dws, w);
            record(&mut oml, a.max_owd);
            record(&mut hml, a.max_handover);
            fair += (complete && w <= o.fair_threshold_ns) as u64;
            same_order += (complete && !a.disordered) as u64;
            fair_bound += (complete && w <= bound_threshold) as u64;
        }
        let per_receiver: Vec<ReceiverTally> = self
            .tally
            .iter()
            .map(|t| ReceiverTally {
                missing: messages.saturating_sub(t.delivered),
                ..t.clone()
            })
            .collect();
        let missing_total = per_receiver
            .iter()
            .fold(0u64, |s, t| s.saturating_add(t.missing));
        let duplicates_total = per_receiver
            .iter()
            .fold(0u64, |s, t| s.saturating_add(t.duplicates));
        let share = |k: u64| {
            if messages == 0 {
                0.0
            } else {
                k as f64 / messages as f64
            }
        };
        let out_of_order_total = per_receiver
            .iter()
            .fold(0u64, |s, t| s.saturating_add(t.out_of_order));
        let out_of_order_unflagged_total = per_receiver
            .iter()
            .fold(0u64, |s, t| s.saturating_add(t.out_of_order_unflagged));
        let in_order = |delivered: u64, ooo: u64| {
            if delivered == 0 {
                1.0
            } else {
                delivered.saturating_sub(ooo) as f64 / delivered as f64
            }
        };
        let d = Summary::of(&dws);
        let om = Summary::of(&oml);
        let ho = Summary::of(&self.handover);
        let hm = Summary::of(&hml);
        FairnessReport {
            messages_published: messages,
            receivers,
            deliveries: self.deliveries,
            missing_total,
            duplicates_total,
            messages_incomplete: incomplete,
            late_fraction: if self.deliveries == 0 {
                0.0
            } else {
                self.late as f64 / self.deliveries as f64
            },
            clock_bound_ns: o.clock_bound_ns,
            clock_status: o.clock_status,
            fairness_threshold_ns: o.fair_threshold_ns,
            p_f: share(fair),
            bound_threshold_ns: bound_threshold,
            p_f_bound: (o.clock_status != ClockStatus::Unsynchronized).then(|| share(fair_bound)),
            dws_ns_p50: d.p50,
            dws_ns_p99: d.p99,
            dws_ns_max: d.max,
            oml_ns_p50: om.p50,
            oml_ns_p99: om.p99,
            handover_ns_p50: ho.p50,
            handover_ns_p99: ho.p99,
            handover_ns_max: ho.max,
            handover_max_ns_p50: hm.p50,
            handover_max_ns_p99: hm.p99,
            owd_ns: Summary::of(&self.owd),
            oml_ns: om,
            handover_ns: ho,
            handover_max_ns: hm,
            dws_ns: d,
            holding_ns: Summary::of(&self.holding),
            negative_owd: self.negative_owd,
            out_of_order_total,
            out_of_order_unflagged_total,
            in_order_fraction: in_order(self.deliveries, out_of_order_total),
            in_order_fraction_min: per_receiver
                .iter()
                .map(|t| in_order(t.delivered, t.out_of_order))
                .fold(1.0, f64::min),
            same_order_fraction: share(same_order),
            per_receiver,
        }
    }

    /// The OWD histogram (for plots).
    pub fn owd_histogram(&self) -> &Histogram<u64> {
        &self.owd
    }

    /// The hand-over latency histogram, per delivery (for plots).
    pub fn handover_histogram(&self) -> &Histogram<u64> {
        &self.handover
    }

    /// DWS of message `msg` (`None` when nobody got it).
    pub fn dws_at(&self, msg: u64) -> Option<u64> {
        self.msgs
            .get(msg as usize)
            .filter(|a| a.got > 0)
            .map(MsgAgg::dws)
    }

    /// The largest hand-over latency (release − send) of message `msg` over
    /// the receivers that got it (`None` when nobody got it), ns.
    pub fn handover_max_at(&self, msg: u64) -> Option<u64> {
        self.msgs
            .get(msg as usize)
            .filter(|a| a.got > 0)
            .map(|a| a.max_handover)
    }

    /// Whether some receiver handed message `msg` over after a message with
    /// a larger (deadline, stream, sequence) key.
    pub fn disordered_at(&self, msg: u64) -> bool {
        self.msgs.get(msg as usize).is_some_and(|a| a.disordered)
    }

    /// DWS values per message (for plots), in message order.
    pub fn dws_values(&self, messages: u64) -> Vec<u64> {
        self.msgs
            .iter()
            .take(messages as usize)
            .filter(|a| a.got > 0)
            .map(MsgAgg::dws)
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
            put(&mut out, a.max_handover);
            put(&mut out, a.got as u64 | (a.disordered as u64) << 32);
        }
        put(&mut out, self.tally.len() as u64);
        for t in &self.tally {
            put(&mut out, t.delivered);
            put(&mut out, t.duplicates);
            put(&mut out, t.late);
            put(&mut out, t.out_of_order);
            put(&mut out, t.out_of_order_unflagged);
        }
        put(&mut out, self.deliveries);
        put(&mut out, self.late);
        put(&mut out, self.negative_owd);
        for h in [&self.owd, &self.handover, &self.holding] {
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
        if n > b.len() / 40 {
            return None;
        }
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            let (min_handed, max_handed, max_owd, max_handover) =
                (get!(b)?, get!(b)?, get!(b)?, get!(b)?);
            let got = get!(b)?;
            if got >> 33 != 0 {
                return None;
            }
            let a = MsgAgg {
                min_handed,
                max_handed,
                max_owd,
                max_handover,
                got: got as u32,
                disordered: got >> 32 != 0,
            };
            if a.min_handed > a.max_handed {
                return None;
            }
            msgs.push(a);
        }
        let r = get!(b)? as usize;
        if r > RECEIVER_LIMIT {
            return None;
        }
        if r > b.len() / 40 {
            return None;
        }
        let mut tally = Vec::with_capacity(r);
        for _ in 0..r {
            tally.push(ReceiverTally {
                delivered: get!(b)?,
                duplicates: get!(b)?,
                missing: 0,
                late: get!(b)?,
                out_of_order: get!(b)?,
                out_of_order_unflagged: get!(b)?,
            });
        }
        let deliveries = get!(b)?;
        let late = get!(b)?;
        let negative_owd = get!(b)?;
        let mut hs = Vec::new();
        for _ in 0..3 {
            let len = get!(b)? as usize;
            let slice = b.get(at..at.checked_add(len)?)?;
            at += len;
            let h: Histogram<u64> = Deserializer::new().deserialize(&mut &slice[..]).ok()?;
            hs.push(h);
        }
        let holding = hs.pop()?;
        let handover = hs.pop()?;
        let owd = hs.pop()?;
        Some(Collector {
            msgs,
            seen: vec![SeenSet::default(); r],
            last_key: vec![None; r],
            tally,
            owd,
            handover,
            holding,
            deliveries,
            late,
            negative_owd,
            limit_msgs: DEFAULT_MESSAGE_LIMIT,
            limit_receivers: RECEIVER_LIMIT,
            out_of_range: 0,
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
    /// Published messages that at least one receiver never got.
    pub messages_incomplete: u64,
    /// Deliveries handed over after their deadline / deliveries.
    pub late_fraction: f64,
    /// Worst clock error bound, ns.
    pub clock_bound_ns: u64,
    /// Worst clock status among the nodes.
    pub clock_status: ClockStatus,
    /// The headline fairness threshold: DWS within this is fair, ns.
    pub fairness_threshold_ns: u64,
    /// P(F), the headline: share of published messages handed to every
    /// receiver with DWS ≤ `fairness_threshold_ns`.
    pub p_f: f64,
    /// 2 × clock bound, ns: the threshold of `p_f_bound`.
    pub bound_threshold_ns: u64,
    /// Share of published messages handed to every receiver with DWS ≤
    /// `bound_threshold_ns`; `None` when a clock is unsynchronized (its
    /// bound means nothing).
    pub p_f_bound: Option<f64>,
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
    /// Hand-over latency (release − send) median over deliveries, ns.
    pub handover_ns_p50: u64,
    /// Hand-over latency p99 over deliveries, ns.
    pub handover_ns_p99: u64,
    /// Hand-over latency max, ns.
    pub handover_ns_max: u64,
    /// Per-message max hand-over latency, median over messages, ns.
    pub handover_max_ns_p50: u64,
    /// Per-message max hand-over latency, p99 over messages, ns.
    pub handover_max_ns_p99: u64,
    /// OWD distribution.
    pub owd_ns: Summary,
    /// OML distribution.
    pub oml_ns: Summary,
    /// Hand-over latency distribution (per delivery).
    pub handover_ns: Summary,
    /// Per-message max hand-over latency distribution.
    pub handover_max_ns: Summary,
    /// DWS distribution.
    pub dws_ns: Summary,
    /// Holding-time distribution.
    pub holding_ns: Summary,
    /// Deliveries whose synchronized-clock OWD was negative (clock error).
    pub negative_owd: u64,
    /// Hand-overs after a message with a larger (deadline, stream,
    /// sequence) key, summed over receivers (deadline-ordered multicast's
    /// order violations; each is also late).
    #[serde(default)]
    pub out_of_order_total: u64,
    /// … of which the receiver did not flag late: the deadline-ordered
    /// multicast promise broken (0 unless a bug).
    #[serde(default)]
    pub out_of_order_unflagged_total: u64,
    /// Hand-overs in deadline order / hand-overs, over all receivers.
    #[serde(default)]
    pub in_order_fraction: f64,
    /// The same, at the worst receiver.
    #[serde(default)]
    pub in_order_fraction_min: f64,
    /// Share of published messages that every receiver got and handed
    /// over in deadline order: any two such messages went to every MP in
    /// the same relative order (what a fair sequencer downstream needs).
    #[serde(default)]
    pub same_order_fraction: f64,
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
        row(&mut s, "hand-over", &self.handover_ns);
        row(&mut s, "HO max", &self.handover_max_ns);
        row(&mut s, "DWS", &self.dws_ns);
        row(&mut s, "holding", &self.holding_ns);
        let _ = writeln!(
            s,
            "  P(F) {:.2}% of {} published (DWS ≤ {:.3} µs at every receiver; {} messages some receiver lacks)   late {:.4}%",
            self.p_f * 100.0,
            self.messages_published,
            us(self.fairness_threshold_ns),
            self.messages_incomplete,
            self.late_fraction * 100.0
        );
        match self.p_f_bound {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  within 2 × clock bound ({:.3} µs): {:.2}%   clocks {}",
                    us(self.bound_threshold_ns),
                    p * 100.0,
                    self.clock_status.name()
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  within 2 × clock bound: n/a — clocks unsynchronized (bound {:.3} µs means nothing); only the {:.3} µs figure holds",
                    us(self.clock_bound_ns),
                    us(self.fairness_threshold_ns)
                );
            }
        }
        let _ = writeln!(
            s,
            "  order: {:.4}% of hand-overs in deadline order (worst receiver {:.4}%, {} out of order, {} of them not flagged late); {:.2}% of published messages handed to every receiver in the same order",
            self.in_order_fraction * 100.0,
            self.in_order_fraction_min * 100.0,
            self.out_of_order_total,
            self.out_of_order_unflagged_total,
            self.same_order_fraction * 100.0
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

    #[test]
    fn seen_sets_match_a_set_in_any_order() {
        let mut rng = crate::model::rng(3);
        use rand::Rng;
        for round in 0..200 {
            let n = rng.random_range(1..200u64);
            let mut s = SeenSet::default();
            let mut reference = std::collections::BTreeSet::new();
            for _ in 0..n * 2 {
                // Mostly in order, sometimes back or ahead, sometimes again.
                let m = match rng.random_range(0..4) {
                    0 => rng.random_range(0..n),
                    _ => reference.last().map_or(0, |l| l + 1).min(n),
                };
                assert_eq!(s.insert(m), reference.insert(m), "round {round} m {m}");
                // Ranges stay sorted, disjoint and non-adjacent.
                let all: Vec<(u64, u64)> = s.below.iter().copied().chain([s.last]).collect();
                assert!(all.windows(2).all(|w| w[0].1 < w[1].0), "{all:?}");
                let count: u64 = all.iter().map(|r| r.1 - r.0).sum();
                assert_eq!(count, reference.len() as u64);
            }
        }
    }

    fn d(r: u32, m: u64, owd: i64, t: u64, late: bool) -> Delivery {
        Delivery {
            receiver: r,
            msg: m,
            owd_ns: owd,
            handover_ns: owd + 1000,
            handed_true_ns: t,
            holding_ns: 1000,
            late,
            deadline_ns: m * 1000,
            stream: 1,
            seq: m,
        }
    }

    #[test]
    fn dws_oml_pf_and_missing() {
        let mut c = Collector::new(3, 3);
        // Message 0: handed at 1000, 1100, 1300 -> DWS 300; OML 90.
        c.add(d(0, 0, 50, 1000, false));
        c.add(d(1, 0, 90, 1100, false));
        c.add(d(2, 0, 70, 1300, true));
        // Message 1: only two receivers, identical instants -> DWS 0, but
        // receiver 2 never got it: unfair.
        c.add(d(0, 1, 10, 5000, false));
        c.add(d(1, 1, 20, 5000, false));
        c.add(d(1, 1, 20, 5000, false)); // duplicate delivery
                                         // Message 2: nobody got it (published, so it counts: unfair).
        let r = c.report(3, 100);
        assert_eq!(r.missing_total, 4);
        assert_eq!(r.duplicates_total, 1);
        assert_eq!(r.per_receiver[2].missing, 2);
        assert_eq!(r.messages_incomplete, 2);
        assert_eq!(r.dws_ns_max, 300);
        // Headline: 1 µs threshold, over all 3 published: only message 0.
        assert_eq!(r.fairness_threshold_ns, 1000);
        assert!((r.p_f - 1.0 / 3.0).abs() < 1e-9, "{}", r.p_f);
        // Second figure: 2 × 100 ns; message 0's 300 ns spread fails it.
        assert_eq!(r.bound_threshold_ns, 200);
        assert_eq!(r.p_f_bound, Some(0.0));
        assert!((r.late_fraction - 0.2).abs() < 1e-9);
        assert_eq!(r.oml_ns.max, 90);
        // Hand-over latency: per delivery and its per-message max.
        assert_eq!(r.handover_ns_max, 1090);
        assert_eq!(r.handover_max_ns.count, 2);
        assert_eq!(r.handover_max_ns.max, 1090);
        assert_eq!(r.handover_max_ns_p50, 1020);
    }

    #[test]
    fn a_worse_clock_never_scores_better_on_the_headline() {
        // The same deliveries scored with a tight and a loose clock bound:
        // the headline P(F) is the same; only the second figure moves.
        let mut c = Collector::new(2, 2);
        c.add(d(0, 0, 10, 1000, false));
        c.add(d(1, 0, 10, 1500, false)); // DWS 500 ns
        c.add(d(0, 1, 10, 9000, false));
        c.add(d(1, 1, 10, 12_000, false)); // DWS 3 µs
        let tight = c.report(2, 200);
        let loose = c.report(2, 500_000);
        assert_eq!(tight.p_f, 0.5);
        assert_eq!(loose.p_f, 0.5);
        assert_eq!(tight.p_f_bound, Some(0.0));
        assert_eq!(loose.p_f_bound, Some(1.0));
        // Unsynchronized: no bound-relative figure at all.
        let unsync = c.report_with(
            2,
            ReportOptions {
                clock_bound_ns: 16_000_000_000,
                clock_status: ClockStatus::Unsynchronized,
                fair_threshold_ns: DEFAULT_FAIR_THRESHOLD_NS,
            },
        );
        assert_eq!(unsync.p_f, 0.5);
        assert_eq!(unsync.p_f_bound, None);
        assert!(unsync.render().contains("unsynchronized"));
        // A configurable threshold.
        let lax = c.report_with(
            2,
            ReportOptions {
                fair_threshold_ns: 5_000,
                ..ReportOptions::with_bound(200)
            },
        );
        assert_eq!(lax.p_f, 1.0);
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

    #[test]
    fn merging_hostile_counts_saturates_instead_of_overflowing() {
        // Another process's results are input: huge counts must not wrap
        // (a debug build would panic) and bad spreads are refused.
        let mut a = Collector::new(1, 1);
        a.add(d(0, 0, 10, 1000, true));
        let mut bytes = a.to_bytes();
        // Overwrite the deliveries/late totals with u64::MAX and merge twice.
        let msgs_end = 8 + 40;
        let tally_end = msgs_end + 8 + 40;
        bytes[tally_end..tally_end + 16].copy_from_slice(&[0xFF; 16]);
        bytes[msgs_end + 8..msgs_end + 32].copy_from_slice(&[0xFF; 24]);
        let hostile = Collector::from_bytes(&bytes).unwrap();
        let mut c = Collector::new(1, 1);
        c.merge(&hostile);
        c.merge(&hostile);
        let r = c.report(1, 100);
        assert_eq!(r.deliveries, u64::MAX);
        assert_eq!(r.per_receiver[0].delivered, u64::MAX);
        assert_eq!(r.missing_total, 0);
        // min > max is malformed.
        let mut bad = a.to_bytes();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Collector::from_bytes(&bad).is_none());
    }
    #[test]
    fn deadline_order_across_streams_is_scored_per_receiver_and_across_receivers() {
        // Three messages of two streams; keys (deadline, stream, seq):
        // m0 (100, 2, 0) < m1 (200, 1, 0) < m2 (200, 2, 1).
        let key = [(100u64, 2u32, 0u64), (200, 1, 0), (200, 2, 1)];
        let dl = |r: u32, m: usize, t: u64, late: bool| Delivery {
            deadline_ns: key[m].0,
            stream: key[m].1,
            seq: key[m].2,
            ..d(r, m as u64, 10, t, late)
        };
        let mut c = Collector::new(2, 3);
        // Receiver 0 in order; receiver 1 hands m1 over before m0 (m0 late).
        for x in [dl(0, 0, 1, false), dl(0, 1, 2, false), dl(0, 2, 3, false)] {
            c.add(x);
        }
        for x in [dl(1, 1, 2, false), dl(1, 0, 3, true), dl(1, 2, 4, false)] {
            c.add(x);
        }
        let r = c.report(3, 100);
        assert_eq!(r.out_of_order_total, 1);
        assert_eq!(r.out_of_order_unflagged_total, 0, "m0 was flagged late");
        assert_eq!(r.per_receiver[0].out_of_order, 0);
        assert_eq!(r.per_receiver[1].out_of_order, 1);
        assert!((r.in_order_fraction - 5.0 / 6.0).abs() < 1e-9);
        assert!((r.in_order_fraction_min - 2.0 / 3.0).abs() < 1e-9);
        // m0 was out of order at receiver 1: m1 and m2 remain in one order.
        assert!((r.same_order_fraction - 2.0 / 3.0).abs() < 1e-9);
        // The flag survives the trip between processes.
        let back = Collector::from_bytes(&c.to_bytes()).unwrap();
        assert_eq!(back.report(3, 100), r);
        // A message some receiver lacks is not "in the same order".
        let mut c = Collector::new(2, 3);
        for m in 0..3 {
            c.add(dl(0, m, m as u64, false));
        }
        for m in [0, 2] {
            c.add(dl(1, m, m as u64, false));
        }
        assert!((c.report(3, 100).same_order_fraction - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn numbers_from_packets_never_size_the_collector() {
        let mut c = Collector::new(2, 100);
        for (receiver, msg) in [(0u32, 1u64 << 40), (1, 100), (u32::MAX, 5)] {
            c.add(Delivery {
                receiver,
                msg,
                owd_ns: 1,
                handover_ns: 1,
                handed_true_ns: 1,
                holding_ns: 0,
                late: false,
                deadline_ns: 0,
                stream: 1,
                seq: msg,
            });
        }
        assert_eq!(c.out_of_range(), 3);
        assert_eq!(c.receivers(), 2);
    }
}
