//! The receiver state machine: duplicate suppression, gap detection, the
//! deadline-ordered hold queue, release, and delay estimation.
//!
//! Call order (quinn style, every input carries `now`):
//! 1. [`Receiver::handle_packet`] for every packet from any endpoint of the MP
//!    (`now` = the node's synchronized clock at arrival).
//! 2. [`Receiver::poll_timeout`] tells when something is due: the earliest
//!    deadline or the next delay report. Sleep/spin until then.
//! 3. [`Receiver::poll_release`] hands every due message to a callback, in
//!    deadline order, with a [`Release`] record; the payload is borrowed and
//!    its buffer recycled after the callback.
//! 4. [`Receiver::poll_report`] yields the delay report for the parent proxy;
//!    [`Receiver::poll_event`] yields gaps and end-of-session notices.
//!
//! # Rules
//! - Hold queue order is `(deadline, stream, seq)`: the deadline-ordered
//!   multicast rule, so several publishers can share one tree.
//! - A message is released when the local clock reaches its deadline, never
//!   before (except on hold-queue overflow, counted as `released_early`).
//! - A message arriving at or after its deadline — or after a message with a
//!   later `(deadline, stream, seq)` was already released — is released at once
//!   and marked late.
//! - Duplicates (hedged copies) are suppressed with a bounded sliding bitmap of
//!   `dedup_window` sequence numbers per stream; sequences that fall below the
//!   window are dropped as stale.
//! - Gaps are detected from data and from heartbeats / end-of-session, which
//!   carry the next sequence number.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::deadline::{EstimatorConfig, OwdEstimator};
use crate::dedup::{Seen, SeqWindow};
use hdrhistogram::Histogram;

use crate::plan::NodeId;
use crate::recovery::{Gaps, Lost, RecoveryConfig, Request};
use crate::wire::{self, Body, ControlOp, DelayReport, Kind, Repr};

/// Receiver settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Duplicate-suppression window per stream, in sequence numbers (power of two).
    pub dedup_window: u64,
    /// Most messages held at once; beyond it the earliest is released early.
    pub max_held: usize,
    /// Most payload bytes held at once; beyond it the earliest is released early.
    pub max_held_bytes: usize,
    /// A sequence further than this beyond the highest seen is refused
    /// (counted as `seq_jump`), never obeyed. At most `dedup_window`, so no
    /// jump can slide the dedup window past messages still to come.
    pub max_seq_jump: u64,
    /// Most streams (publishers) tracked at once; packets of further streams
    /// are refused (`stream_limit`).
    pub max_streams: usize,
    /// A receiver that joins a stream mid-session (or sees a session's first
    /// packet out of order) still accepts this many sequences before the
    /// first one it saw. Below `dedup_window`.
    pub join_reorder: u64,
    /// One-way delay estimator.
    pub estimator: EstimatorConfig,
    /// Interval between delay reports to the parent, ns.
    pub report_interval_ns: u64,
    /// Hold messages until their deadline. `false` releases every message
    /// on arrival (the no-hold baseline; lateness is still recorded).
    pub hold: bool,
    /// Loss recovery: when to ask upstreams for missing sequences, when to
    /// give up (`[receiver.core.recovery]`).
    pub recovery: RecoveryConfig,
    /// Longest a message is held, ns: the publisher's deadline ceiling plus
    /// the clocks' slack. A deadline further ahead (a publisher clock gone
    /// wrong, or a bad policy) is held only this long, released `early`,
    /// and counted (`deadline_beyond_cap`, an alarm).
    pub max_hold_ns: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            dedup_window: 1 << 20,
            max_held: 1 << 20,
            max_held_bytes: 256 << 20,
            max_seq_jump: 1 << 19,
            max_streams: 16,
            join_reorder: 4096,
            estimator: EstimatorConfig::default(),
            report_interval_ns: 1_000_000,
            hold: true,
            recovery: RecoveryConfig::default(),
            // The guard's default `deadline_future_ns`: the 5 ms ceiling
            // plus the clocks' disagreement.
            max_hold_ns: 10_000_000,
        }
    }
}

/// Counters. Every packet and message is accounted for in one of them.
/// (`repr(C)`: the per-packet counters, declared first, share two cache
/// lines.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct ReceiverStats {
    /// Packets handed in.
    pub packets: u64,
    /// Packets dropped as malformed (see `malformed_by_reason`).
    pub malformed: u64,
    /// Malformed packets by reason.
    pub malformed_by_reason: Vec<(String, u64)>,
    /// Packets of kinds a receiver does not expect (reports, requests).
    pub unexpected_kind: u64,
    /// Packets from an older session of a stream.
    pub stale_session: u64,
    /// Packets whose sequence jumped implausibly far ahead.
    pub seq_jump: u64,
    /// Packets of a stream beyond `max_streams`.
    pub stream_limit: u64,
    /// Sessions started (the first of each stream included).
    pub sessions: u64,
    /// Sessions ended by the publisher.
    pub sessions_ended: u64,
    /// New messages accepted.
    pub accepted: u64,
    /// Duplicate copies suppressed.
    pub duplicates: u64,
    /// Copies below the dedup window (already decided).
    pub stale: u64,
    /// Messages released.
    pub released: u64,
    /// Released late (arrived at/after deadline, or out of deadline order).
    pub late: u64,
    /// Of the late, messages that arrived before their deadline but after a
    /// message with a larger (deadline, stream, seq) key was handed over:
    /// late by deadline-ordered multicast's rule (across publishers).
    #[serde(default)]
    pub late_out_of_order: u64,
    /// Released before the deadline because the hold queue was full, or
    /// because the deadline lay beyond `max_hold_ns`.
    pub released_early: u64,
    /// Messages whose deadline lay further ahead than `max_hold_ns` on
    /// arrival: held only that long (an alarm: a publisher's clock or
    /// deadline rule is wrong).
    #[serde(default)]
    pub deadline_beyond_cap: u64,
    /// Sequence numbers found missing (from data or heartbeats).
    pub gaps_detected: u64,
    /// Missing sequences that arrived later (a hedged or reordered copy,
    /// or a retransmission).
    pub gaps_filled: u64,
    /// Of those, arrived after a retransmit request went out.
    pub recovered: u64,
    /// Retransmit requests sent (each goes to every upstream).
    pub recovery_requests: u64,
    /// Sequences given up on (never arrived within `give_up_ns`, fell out of
    /// the dedup window, or belonged to a session that was replaced), each
    /// reported with its range ([`Event::Lost`]).
    pub lost: u64,
    /// Ranges reported lost.
    pub lost_ranges: u64,
    /// Sequences that arrived after they were given up on (counted in
    /// `lost` too: `lost − arrived_after_lost` never arrived).
    pub arrived_after_lost: u64,
    /// Heartbeats seen.
    pub heartbeats: u64,
    /// Samples whose arrival preceded the send time (clock error).
    pub negative_owd: u64,
    /// Per path tag (ascending; the first [`PATH_WINS_MAX`] tags seen), how
    /// many packets delivered a new message first.
    pub path_wins: Vec<(u16, u64)>,
}

/// What happened to one released message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Stream.
    pub stream: u32,
    /// Session.
    pub session: u32,
    /// Sequence.
    pub seq: u64,
    /// Sender send time (synchronized ns).
    pub send_time_ns: u64,
    /// Deadline (synchronized ns).
    pub deadline_ns: u64,
    /// Arrival of the first copy (local synchronized clock).
    pub arrival_ns: u64,
    /// Release (the `now` given to `poll_release`).
    pub release_ns: u64,
    /// Arrived at/after its deadline or out of deadline order.
    pub late: bool,
    /// Released before its deadline (hold-queue overflow).
    pub early: bool,
    /// Path tag of the winning copy.
    pub path: u16,
    /// Hops of the winning copy.
    pub hops: u8,
}

impl Release {
    /// How long the message was held: release − arrival on the local clock
    /// (≈ deadline − arrival when held; 0 when late or not holding).
    pub fn holding_ns(&self) -> u64 {
        self.release_ns.saturating_sub(self.arrival_ns)
    }
    /// Arrival − send time (synchronized clocks; may be skewed by clock error).
    pub fn owd_ns(&self) -> i64 {
        self.arrival_ns as i64 - self.send_time_ns as i64
    }
}

/// Notices for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `count` sequences from `first` are missing on `stream`.
    Gap {
        /// Stream.
        stream: u32,
        /// First missing.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The publisher ended the session; `next_seq` is one past its last message.
    EndOfSession {
        /// Stream.
        stream: u32,
        /// One past the last sequence.
        next_seq: u64,
    },
    /// `count` sequences from `first` are given up on: never recovered.
    Lost {
        /// Stream.
        stream: u32,
        /// Session.
        session: u32,
        /// First lost sequence.
        first: u64,
        /// How many.
        count: u64,
    },
    /// A new session started on `stream`; sequence state was reset.
    NewSession {
        /// Stream.
        stream: u32,
        /// New session id.
        session: u32,
    },
}

#[derive(Debug)]
struct StreamState {
    stream: u32,
    session: u32,
    /// Sequences seen (bounded window); below its base = decided.
    seen: SeqWindow,
    /// First sequence this receiver knows of (gap accounting starts here).
    start: u64,
    /// One past the highest sequence known to exist.
    next_expected: u64,
    /// End of session already reported.
    ended: bool,
}

impl StreamState {
    /// State starting at `start`; up to `reorder` earlier sequences (copies
    /// overtaken by the first one seen) are still accepted.
    fn new(stream: u32, session: u32, window: u64, start: u64, reorder: u64) -> Self {
        StreamState {
            stream,
            session,
            seen: SeqWindow::new(window, start.saturating_sub(reorder)),
            start,
            next_expected: start,
            ended: false,
        }
    }
}

/// A held packet: all its messages share one deadline, so the hold queue
/// keeps packets (one copy, one heap entry) and releases their new messages
/// in sequence order.
#[derive(Debug)]
struct Held {
    /// Template: `seq` is the packet's first sequence.
    rel: Release,
    /// The length-prefixed messages.
    body: Vec<u8>,
    /// Bit i set = message i is new (not a duplicate) and must be released:
    /// messages 0–63 here (a packet of at most 64 messages, the usual one,
    /// is released without following another pointer), the rest in
    /// `keep_more` (word j = messages 64(j + 1) ..).
    keep: u64,
    keep_more: Vec<u64>,
    /// Number of bits set in `keep` and `keep_more`.
    kept: usize,
}

impl Held {
    /// Message `i` is new and must be released.
    fn keeps(&self, i: usize) -> bool {
        let word = match i / 64 {
            0 => self.keep,
            w => self.keep_more.get(w - 1).copied().unwrap_or(0),
        };
        word & (1 << (i % 64)) != 0
    }
}

type Key = (u64, u32, u64);

/// Path tags whose wins a receiver counts: H + 1 proxies feed it, or a
/// whole level when sprayed (1000 proxies at N = 10,000; counting them all
/// cost 4 KB per receiver and a cache miss per accepted packet).
pub const PATH_WINS_MAX: usize = 64;

/// The receiver state machine for one MP (all its endpoints feed it).
///
/// A held packet whose messages are being handed over in several calls.
#[derive(Debug, Clone, Copy)]
struct Partial {
    slot: u32,
    index: usize,
    offset: usize,
    late: bool,
    early: bool,
}

/// Fields in declaration order (`repr(C)`): what every packet and every
/// poll touches comes first, in a few cache lines — a process (or a
/// simulation) with thousands of receivers visits each cold. A release
/// touches the first three lines (the hold queue, the slab, the last key
/// handed over) and the counters.
#[derive(Debug)]
#[repr(C)]
pub struct Receiver {
    now_ns: u64,
    next_report_ns: Option<u64>,
    clock_bound_ns: u64,
    held: usize,
    held_bytes: usize,
    heap: BinaryHeap<Reverse<(Key, u32)>>,
    immediate: VecDeque<u32>,
    slab: Vec<Held>,
    free: Vec<u32>,
    last_released: Option<Key>,
    /// A packet handed over partly ([`Receiver::poll_release_max`]): its
    /// slot, the next message's index and byte offset, and whether its
    /// messages count as late / early. Continued before anything else.
    partial: Option<Partial>,
    /// `immediate` is in key order (sorted since the last push).
    immediate_sorted: bool,
    streams: Vec<StreamState>,
    events: VecDeque<Event>,
    scratch: Vec<u64>,
    gaps: Gaps,
    stats: ReceiverStats,
    estimator: OwdEstimator,
    node: NodeId,
    cfg: ReceiverConfig,
    /// Detection → arrival of recovered (requested) sequences, ns.
    /// Made at the first recovery (16 KB: most receivers of a large
    /// simulation never recover anything).
    recovery_ns: Option<Box<Histogram<u64>>>,
}

impl Receiver {
    /// A receiver for node `node` (reports carry this id).
    pub fn new(node: NodeId, cfg: ReceiverConfig) -> Self {
        let mut cfg = cfg;
        cfg.dedup_window = cfg.dedup_window.max(64).next_power_of_two();
        Receiver {
            node,
            cfg,
            streams: Vec::new(),
            heap: BinaryHeap::new(),
            immediate: VecDeque::new(),
            slab: Vec::new(),
            free: Vec::new(),
            partial: None,
            immediate_sorted: true,
            held: 0,
            held_bytes: 0,
            last_released: None,
            estimator: OwdEstimator::new(cfg.estimator),
            next_report_ns: None,
            clock_bound_ns: 0,
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
            scratch: Vec::new(),
            gaps: Gaps::new(cfg.recovery),
            recovery_ns: None,
            now_ns: 0,
        }
    }

    /// True when messages are held to their deadline (false: the no-hold
    /// baseline, released on arrival).
    pub fn holds(&self) -> bool {
        self.cfg.hold
    }

    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Time from gap detection to the arrival of each recovered
    /// (retransmitted) sequence, ns; `None` until something was recovered.
    pub fn recovery_latency(&self) -> Option<&Histogram<u64>> {
        self.recovery_ns.as_deref()
    }

    /// When the next retransmit request is due (or a range is given up).
    pub fn recovery_timeout(&self) -> Option<u64> {
        self.gaps.poll_timeout()
    }

    /// Sequences missing now (detected, neither arrived nor given up).
    pub fn missing(&self) -> u64 {
        self.gaps.missing()
    }

    /// Retransmit requests due at `now_ns` (send each to every upstream);
    /// ranges given up on become [`Event::Lost`].
    pub fn poll_recovery(&mut self, now_ns: u64, mut send: impl FnMut(Request)) {
        let (stats, events) = (&mut self.stats, &mut self.events);
        let mut sent = 0;
        self.gaps.poll(
            now_ns,
            |r| {
                sent += 1;
                send(r)
            },
            |l| Self::lost(stats, events, l),
        );
        if sent > 0 {
            self.stats.recovery_requests += sent;
        }
    }

    fn lost(stats: &mut ReceiverStats, events: &mut VecDeque<Event>, l: Lost) {
        stats.lost += l.count;
        stats.lost_ranges += 1;
        events.push_back(Event::Lost {
            stream: l.stream,
            session: l.session,
            first: l.first,
            count: l.count,
        });
    }

    fn open_gap(&mut self, si: usize, first: u64, end: u64) {
        let (stream, session) = (self.streams[si].stream, self.streams[si].session);
        if let Some(l) = self.gaps.open(self.now_ns, stream, session, first, end) {
            Self::lost(&mut self.stats, &mut self.events, l);
        }
    }

    /// Messages currently held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Payload bytes currently held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// One past the highest sequence known on `stream`.
    pub fn next_expected(&self, stream: u32) -> Option<u64> {
        self.streams
            .iter()
            .find(|s| s.stream == stream)
            .map(|s| s.next_expected)
    }

    /// Feed one received packet. `now_ns` is the local synchronized clock at
    /// arrival (use the kernel/NIC timestamp when available), `clock_bound_ns`
    /// the local clock's current error bound.
    pub fn handle_packet(&mut self, now_ns: u64, clock_bound_ns: u64, bytes: &[u8]) {
        match Repr::parse_bytes(bytes) {
            Ok(r) => self.handle_repr(now_ns, clock_bound_ns, &r),
            Err(e) => {
                self.stats.packets += 1;
                self.count_malformed(e);
            }
        }
    }

    /// True when `bytes` is a data copy whose every message was already
    /// accepted: a read-only check a node may run before authenticating, so
    /// hedged copies cost one tag verification per packet, not per copy.
    pub fn is_duplicate(&self, bytes: &[u8]) -> bool {
        let Ok(p) = wire::Packet::new_checked(bytes) else {
            return false;
        };
        if !matches!(p.kind(), Kind::Data | Kind::RetransmitData) || p.count() == 0 {
            return false;
        }
        let Some(s) = self.streams.iter().find(|s| s.stream == p.stream()) else {
            return false;
        };
        s.session == p.session()
            && (0..p.count() as u64).all(|i| {
                p.seq()
                    .checked_add(i)
                    .is_some_and(|q| s.seen.peek(q) == Seen::Duplicate)
            })
    }

    /// Where this receiver's per-stream state lies, which every packet
    /// reads first: a hint for drivers that prefetch (the simulator visits
    /// a random one of 10⁴–10⁵ receivers per event). Read-only.
    pub fn stream_state_addr(&self) -> *const u8 {
        self.streams.as_ptr().cast()
    }

    /// The next stage of [`Receiver::stream_state_addr`], once this
    /// receiver's own state is in cache: the buffers its next packet or
    /// release reads through (the held-message heap and queue, the free
    /// slot list), each passed to `f`. Read-only hints.
    pub fn buffer_addrs(&self, mut f: impl FnMut(*const u8)) {
        f(self.heap.as_slice().as_ptr().cast());
        f(self.immediate.as_slices().0.as_ptr().cast());
        if let Some(last) = self.free.len().checked_sub(1) {
            f(self.free.as_ptr().wrapping_add(last).cast());
        }
    }

    /// The stage after [`Receiver::buffer_addrs`] (and
    /// [`Receiver::stream_state_addr`]), once those lines are in cache:
    /// the entries the next packet (`stream`, `seq`) or release reads —
    /// the dedup window's word for `seq`, the held entry that goes out
    /// next, the slot the next held packet takes — each passed to `f`.
    /// Read-only hints.
    pub fn entry_addrs(&self, stream: Option<(u32, u64)>, mut f: impl FnMut(*const u8)) {
        if let Some((stream, seq)) = stream {
            if let Some(s) = self.streams.iter().find(|s| s.stream == stream) {
                f(s.seen.word_addr(seq));
            }
        }
        let slab = self.slab.as_ptr();
        let next = self.heap.peek().map(|Reverse((_, slot))| *slot);
        let slots = [
            next,
            self.immediate.front().copied(),
            self.free.last().copied(),
        ];
        for slot in slots.into_iter().flatten() {
            f(slab.wrapping_add(slot as usize).cast());
        }
    }

    /// Count a copy dropped by [`Receiver::is_duplicate`].
    pub fn count_duplicate(&mut self, bytes: &[u8]) {
        let n = wire::Packet::new_checked(bytes).map_or(0, |p| p.count() as u64);
        self.stats.packets += 1;
        self.stats.duplicates += n;
    }

    /// Feed one packet a [`crate::guard::Guard`] already parsed and verified
    /// (what nodes do; [`Receiver::handle_packet`] parses itself).
    pub fn handle_repr(&mut self, now_ns: u64, clock_bound_ns: u64, repr: &Repr<'_>) {
        if self.next_report_ns.is_none() {
            self.next_report_ns = Some(now_ns + self.cfg.report_interval_ns);
        }
        self.clock_bound_ns = clock_bound_ns;
        self.now_ns = now_ns;
        let h = repr.header;
        self.stats.packets += 1;
        match (h.kind, &repr.body) {
            (Kind::Data | Kind::RetransmitData, _) => {
                if h.seq.checked_add(h.count as u64).is_none() {
                    self.stats.seq_jump += 1;
                    return;
                }
                let Some(si) = self.stream_index(h.stream, h.session, h.seq) else {
                    return;
                };
                let last = h.seq.saturating_add(h.count as u64);
                if last
                    > self.streams[si]
                        .next_expected
                        .saturating_add(self.cfg.max_seq_jump)
                {
                    self.stats.seq_jump += 1;
                    return;
                }
                let mut keep = std::mem::take(&mut self.scratch);
                keep.clear();
                keep.resize((h.count as usize).div_ceil(64), 0);
                let mut kept = 0;
                for i in 0..h.count as u64 {
                    if self.accept(si, h.seq + i) {
                        keep[(i / 64) as usize] |= 1 << (i % 64);
                        kept += 1;
                    }
                }
                if kept > 0 {
                    if now_ns >= h.send_time_ns {
                        self.estimator.record(now_ns, now_ns - h.send_time_ns);
                    } else {
                        self.stats.negative_owd += 1;
                    }
                    self.path_win(h.path);
                    let Body::Messages(body) = &repr.body else {
                        unreachable!("data packets parse to messages")
                    };
                    self.hold(now_ns, &h, body, &keep, kept);
                }
                self.scratch = keep;
            }
            (Kind::Heartbeat, _) => {
                self.stats.heartbeats += 1;
                if let Some(si) = self.stream_index(h.stream, h.session, h.seq) {
                    self.learn_next(si, h.seq);
                }
            }
            (Kind::Control, Body::Control(c)) => match c.op {
                ControlOp::EndOfSession => {
                    if let Some(si) = self.stream_index(h.stream, h.session, c.arg) {
                        self.learn_next(si, c.arg);
                        if !self.streams[si].ended {
                            self.streams[si].ended = true;
                            self.stats.sessions_ended += 1;
                            self.events.push_back(Event::EndOfSession {
                                stream: h.stream,
                                next_seq: c.arg,
                            });
                        }
                    }
                }
                // The announce carries the session's first sequence, so a
                // lost first packet is still seen as a gap.
                ControlOp::SessionStart => {
                    let _ = self.stream_index(h.stream, h.session, c.arg);
                }
                _ => {}
            },
            _ => self.stats.unexpected_kind += 1,
        }
    }

    fn count_malformed(&mut self, e: wire::WireError) {
        self.stats.malformed += 1;
        let r = e.reason();
        match self
            .stats
            .malformed_by_reason
            .iter_mut()
            .find(|(k, _)| k == r)
        {
            Some((_, n)) => *n += 1,
            None => self.stats.malformed_by_reason.push((r.to_string(), 1)),
        }
    }

    fn path_win(&mut self, path: u16) {
        // Sorted by path: under a sprayed level every proxy of it wins
        // sometimes, and a linear search of 256 entries per accepted
        // packet was a hot spot of large simulations.
        let wins = &mut self.stats.path_wins;
        match wins.binary_search_by_key(&path, |(p, _)| *p) {
            Ok(i) => wins[i].1 += 1,
            Err(i) if wins.len() < PATH_WINS_MAX => wins.insert(i, (path, 1)),
            Err(_) => {}
        }
    }

    fn stream_index(&mut self, stream: u32, session: u32, seq: u64) -> Option<usize> {
        if let Some(i) = self.streams.iter().position(|s| s.stream == stream) {
            let s = &self.streams[i];
            if session == s.session {
                return Some(i);
            }
            if session < s.session {
                self.stats.stale_session += 1;
                return None;
            }
            // A newer session (a restarted publisher): reset sequence state
            // for this stream; what the old one still missed is lost.
            let (stats, events) = (&mut self.stats, &mut self.events);
            self.gaps
                .close_stream(stream, |l| Self::lost(stats, events, l));
            self.streams[i] = StreamState::new(
                stream,
                session,
                self.cfg.dedup_window,
                self.join_point(seq),
                self.cfg.join_reorder,
            );
            self.stats.sessions += 1;
            self.events.push_back(Event::NewSession { stream, session });
            return Some(i);
        }
        if self.streams.len() >= self.cfg.max_streams {
            self.stats.stream_limit += 1;
            return None;
        }
        self.streams.push(StreamState::new(
            stream,
            session,
            self.cfg.dedup_window,
            self.join_point(seq),
            self.cfg.join_reorder,
        ));
        self.stats.sessions += 1;
        self.events.push_back(Event::NewSession { stream, session });
        Some(self.streams.len() - 1)
    }

    /// Where gap accounting starts for a stream first seen at `seq`.
    /// Sessions start at 0: a first sequence within `join_reorder` of it
    /// means the receiver was there from the start and missed the first
    /// packets (gaps); a receiver that (re)starts further into a session
    /// starts at the first sequence it sees — no phantom millions.
    fn join_point(&self, seq: u64) -> u64 {
        if seq <= self.cfg.join_reorder {
            0
        } else {
            seq
        }
    }

    fn learn_next(&mut self, si: usize, next: u64) {
        let s = &mut self.streams[si];
        if next > s.next_expected {
            if next - s.next_expected > self.cfg.max_seq_jump {
                self.stats.seq_jump += 1;
                return;
            }
            let first = s.next_expected;
            self.events.push_back(Event::Gap {
                stream: s.stream,
                first,
                count: next - first,
            });
            self.stats.gaps_detected += next - first;
            s.next_expected = next;
            self.open_gap(si, first, next);
        }
    }

    /// Duplicate suppression and gap tracking for one sequence; true when new.
    fn accept(&mut self, si: usize, seq: u64) -> bool {
        let s = &mut self.streams[si];
        match s.seen.insert(seq) {
            Seen::Stale => {
                self.stats.stale += 1;
                return false;
            }
            Seen::Duplicate => {
                self.stats.duplicates += 1;
                return false;
            }
            Seen::New => {}
        }
        if seq < s.start {
            // Overtaken by the first copy this receiver saw: new, but before
            // the point gap accounting starts.
            self.stats.accepted += 1;
            return true;
        }
        if seq > s.next_expected {
            let (first, stream) = (s.next_expected, s.stream);
            let count = seq - first;
            self.events.push_back(Event::Gap {
                stream,
                first,
                count,
            });
            self.stats.gaps_detected += count;
            s.next_expected = seq.saturating_add(1);
            let base = s.seen.base();
            self.open_gap(si, first, seq);
            // The window may have moved past older missing sequences.
            let (stats, events) = (&mut self.stats, &mut self.events);
            self.gaps
                .below(stream, base, |l| Self::lost(stats, events, l));
        } else if seq < s.next_expected {
            self.stats.gaps_filled += 1;
            let stream = s.stream;
            match self.gaps.fill(self.now_ns, stream, seq) {
                Some(f) if f.requested => {
                    self.stats.recovered += 1;
                    let h = self.recovery_ns.get_or_insert_with(|| {
                        Box::new(Histogram::new(3).expect("3 significant figures is valid"))
                    });
                    let _ = h.record(f.delay_ns.max(1));
                }
                Some(_) => {}
                // Every detected gap is tracked until it fills or is given
                // up on: this one was given up on.
                None => self.stats.arrived_after_lost += 1,
            }
        } else {
            s.next_expected = seq.saturating_add(1);
        }
        self.stats.accepted += 1;
        true
    }

    /// Queue the new messages of a packet for release.
    fn hold(&mut self, now_ns: u64, h: &wire::Header, body: &[u8], keep: &[u64], kept: usize) {
        let key: Key = (h.deadline_ns, h.stream, h.seq);
        let behind = self.last_released.is_some_and(|l| key < l);
        let late = now_ns >= h.deadline_ns || behind;
        if behind && now_ns < h.deadline_ns {
            self.stats.late_out_of_order += kept as u64;
        }
        let rel = Release {
            stream: h.stream,
            session: h.session,
            seq: h.seq,
            send_time_ns: h.send_time_ns,
            deadline_ns: h.deadline_ns,
            arrival_ns: now_ns,
            release_ns: 0,
            late,
            early: false,
            path: h.path,
            hops: h.hops,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                let e = &mut self.slab[i as usize];
                e.rel = rel;
                e.body.clear();
                e.body.extend_from_slice(body);
                e.keep = keep.first().copied().unwrap_or(0);
                e.keep_more.clear();
                e.keep_more.extend_from_slice(keep.get(1..).unwrap_or(&[]));
                e.kept = kept;
                i
            }
            None => {
                self.slab.push(Held {
                    rel,
                    body: body.to_vec(),
                    keep: keep.first().copied().unwrap_or(0),
                    keep_more: keep.get(1..).map_or_else(Vec::new, <[u64]>::to_vec),
                    kept,
                });
                (self.slab.len() - 1) as u32
            }
        };
        if late || !self.cfg.hold {
            self.immediate.push_back(slot);
            self.immediate_sorted = false;
            return;
        }
        let bytes = body.len();
        if kept > self.cfg.max_held || bytes > self.cfg.max_held_bytes {
            // Larger than the whole queue: it cannot be held at all.
            self.slab[slot as usize].rel.early = true;
            self.immediate.push_back(slot);
            self.immediate_sorted = false;
            return;
        }
        while self.held + kept > self.cfg.max_held
            || self.held_bytes + bytes > self.cfg.max_held_bytes
        {
            let Some(Reverse((_, early))) = self.heap.pop() else {
                break;
            };
            let e = &mut self.slab[early as usize];
            e.rel.early = true;
            self.held -= e.kept;
            self.held_bytes -= e.body.len();
            self.immediate.push_back(early);
            self.immediate_sorted = false;
        }
        // Never held past the cap: a deadline beyond it goes out at the cap.
        let cap = now_ns.saturating_add(self.cfg.max_hold_ns);
        let key = if key.0 > cap {
            self.stats.deadline_beyond_cap += kept as u64;
            (cap, key.1, key.2)
        } else {
            key
        };
        self.heap.push(Reverse((key, slot)));
        self.held += kept;
        self.held_bytes += bytes;
    }

    /// Read what the next release reads — the earliest held entry and one
    /// byte of every cache line of its messages — so that a release right
    /// after finds them in cache: a driver calls this while it waits for
    /// the deadline, which otherwise leaves the lines to be fetched one
    /// receiver after another during the hand-over pass. The reads change
    /// nothing; pass the result to `std::hint::black_box` so they stay.
    pub fn warm_release(&self) -> u64 {
        let Some(Reverse((_, slot))) = self.heap.peek() else {
            return 0;
        };
        let e = &self.slab[*slot as usize];
        e.body.chunks(64).fold(e.keep ^ e.rel.seq, |acc, line| {
            acc.wrapping_add(u64::from(line[0]))
        })
    }

    /// Hand the kept messages of one held packet to `f`; returns how many.
    /// Hand over the kept messages of the partly released packet, from
    /// its cursor, at most `max`; frees the slot when its last message went
    /// out (the partial is cleared) or moves the cursor. Returns how many.
    fn release_partial(
        &mut self,
        now_ns: u64,
        max: usize,
        f: &mut impl FnMut(&Release, &[u8]),
    ) -> usize {
        let Some(mut p) = self.partial.take() else {
            return 0;
        };
        let e = &mut self.slab[p.slot as usize];
        e.rel.release_ns = now_ns;
        let mut rel = e.rel;
        let body = e.body.as_slice();
        let mut n = 0;
        let mut done = true;
        while body.len() >= p.offset + wire::MSG_LEN_PREFIX {
            let rest = &body[p.offset..];
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let Some(msg) = rest.get(wire::MSG_LEN_PREFIX..wire::MSG_LEN_PREFIX + len) else {
                break;
            };
            if e.keeps(p.index) {
                if n == max {
                    done = false;
                    break;
                }
                rel.seq = e.rel.seq + p.index as u64;
                f(&rel, msg);
                n += 1;
            }
            p.offset += wire::MSG_LEN_PREFIX + len;
            p.index += 1;
        }
        self.stats.late += if p.late { n as u64 } else { 0 };
        self.stats.released_early += if p.early { n as u64 } else { 0 };
        if done {
            self.free.push(p.slot);
        } else {
            self.partial = Some(p);
        }
        n
    }

    /// When the driver must next call `poll_release` / `poll_report`.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.immediate.is_empty() || self.partial.is_some() {
            return Some(0);
        }
        let d = self.heap.peek().map(|Reverse(((d, _, _), _))| *d);
        // Retransmit requests have their own timer (`recovery_timeout`):
        // drivers that do not recover never wake for them.
        [d, self.next_report_ns].into_iter().flatten().min()
    }

    /// Earliest held deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.immediate.is_empty() || self.partial.is_some() {
            return Some(0);
        }
        self.heap.peek().map(|Reverse(((d, _, _), _))| *d)
    }

    /// Release every message due at `now_ns`, calling `f(record,
    /// payload)`, in `(deadline, stream, sequence)` order across the due
    /// held messages and those to go out at once (late, recovered, or
    /// pushed out early), so a late message never overtakes held ones that
    /// are already due. Returns how many.
    pub fn poll_release(&mut self, now_ns: u64, f: impl FnMut(&Release, &[u8])) -> usize {
        self.poll_release_max(now_ns, usize::MAX, f)
    }

    /// Like [`Receiver::poll_release`], handing over at most `max`
    /// messages; the rest of what is due stays, in order, for the next
    /// call (a packet may be left partly handed over: the next call
    /// continues it first). Receivers sharing a thread release round by
    /// round, `max` = 1, so a packet of many messages due at all of them
    /// reaches each MP message by message, interleaved, instead of whole
    /// packet after whole packet: the spread of one message across MPs no
    /// longer grows with how many messages its packet carries.
    pub fn poll_release_max(
        &mut self,
        now_ns: u64,
        max: usize,
        mut f: impl FnMut(&Release, &[u8]),
    ) -> usize {
        // Nothing due (a receiver checked early, or one of many sharing a
        // pass): two reads of the first lines, no sorting, no counters.
        if self.partial.is_none()
            && self.immediate.is_empty()
            && self
                .heap
                .peek()
                .is_none_or(|Reverse(((d, _, _), _))| *d > now_ns)
        {
            return 0;
        }
        let mut n = self.release_partial(now_ns, max, &mut f);
        let key_of = |e: &Held| (e.rel.deadline_ns, e.rel.stream, e.rel.seq);
        // Sorted once after what was pushed, not at every call: a pass
        // releasing one message a call would otherwise sort per message.
        if !self.immediate_sorted && self.immediate.len() > 1 {
            let slab = &self.slab;
            self.immediate
                .make_contiguous()
                .sort_by_key(|s| key_of(&slab[*s as usize]));
        }
        self.immediate_sorted = true;
        while n < max && self.partial.is_none() {
            let due = self
                .heap
                .peek()
                .map(|Reverse((key, slot))| (*key, *slot))
                .filter(|(key, _)| key.0 <= now_ns);
            let now_first = self
                .immediate
                .front()
                .map(|s| (key_of(&self.slab[*s as usize]), *s));
            let take_immediate = match (now_first, due) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((a, _)), Some((b, _))) => a <= b,
            };
            if take_immediate {
                let slot = self.immediate.pop_front().expect("front exists");
                let e = &self.slab[slot as usize];
                let (late, early) = (e.rel.late, e.rel.early);
                // Handed over, late or early: whatever arrives later with a
                // smaller key is late (deadline-ordered multicast's rule).
                let k = key_of(e);
                self.last_released = Some(self.last_released.map_or(k, |l| l.max(k)));
                self.partial = Some(Partial {
                    slot,
                    index: 0,
                    offset: 0,
                    late,
                    early,
                });
                n += self.release_partial(now_ns, max - n, &mut f);
            } else {
                let (_, slot) = due.expect("due exists");
                self.heap.pop();
                let e = &mut self.slab[slot as usize];
                self.held -= e.kept;
                self.held_bytes -= e.body.len();
                // Capped (deadline beyond `max_hold_ns`): out before its
                // deadline, so early; the order moves to its real key.
                let capped = e.rel.deadline_ns > now_ns;
                e.rel.early |= capped;
                let key = key_of(e);
                self.last_released = Some(self.last_released.map_or(key, |l| l.max(key)));
                self.partial = Some(Partial {
                    slot,
                    index: 0,
                    offset: 0,
                    late: false,
                    early: capped,
                });
                n += self.release_partial(now_ns, max - n, &mut f);
            }
        }
        self.stats.released += n as u64;
        n
    }

    /// The delay report for the parent, when one is due.
    pub fn poll_report(&mut self, now_ns: u64) -> Option<DelayReport> {
        let due = self.next_report_ns?;
        if now_ns < due {
            return None;
        }
        self.next_report_ns = Some(now_ns + self.cfg.report_interval_ns);
        let owd = self.estimator.estimate(now_ns)?;
        Some(DelayReport {
            node: self.node,
            receivers: 1,
            owd_ns: owd,
            clock_bound_ns: self.clock_bound_ns,
            samples: self.estimator.samples(),
        })
    }

    /// Current delay estimate.
    pub fn estimate(&mut self, now_ns: u64) -> Option<u64> {
        self.estimator.estimate(now_ns)
    }

    /// Next notice (gap, end of session, new session).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_control, emit_empty, Control, DataBuilder, Header};

    fn data(seq: u64, n: u16, deadline: u64, path: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let mut h = Header::new(Kind::Data);
        h.seq = seq;
        h.send_time_ns = 1_000;
        h.deadline_ns = deadline;
        h.path = path;
        h.stream = 1;
        let mut b = DataBuilder::new(&mut buf, 2048).unwrap();
        for i in 0..n {
            b.push(&(seq + i as u64).to_be_bytes()).unwrap();
        }
        let len = b.finish(&h);
        buf.truncate(len);
        buf
    }

    fn drain(r: &mut Receiver, now: u64) -> Vec<Release> {
        let mut out = Vec::new();
        r.poll_release(now, |rel, p| {
            assert_eq!(p, &rel.seq.to_be_bytes());
            out.push(*rel)
        });
        out
    }

    #[test]
    fn holds_until_deadline_then_releases_in_order() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        r.handle_packet(100, 0, &data(0, 3, 5_000, 1));
        r.handle_packet(200, 0, &data(3, 2, 6_000, 1));
        assert_eq!(r.poll_timeout(), Some(5_000).min(r.poll_timeout()));
        assert!(drain(&mut r, 4_999).is_empty());
        let a = drain(&mut r, 5_000);
        assert_eq!(a.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(a.iter().all(|x| !x.late && x.release_ns >= x.deadline_ns));
        assert_eq!(a[0].holding_ns(), 4_900);
        let b = drain(&mut r, 7_000);
        assert_eq!(b.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(r.stats().released, 5);
    }

    #[test]
    fn warming_the_next_release_changes_nothing() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        assert_eq!(r.warm_release(), 0, "nothing held, nothing read");
        r.handle_packet(100, 0, &data(0, 3, 5_000, 1));
        r.handle_packet(200, 0, &data(3, 2, 6_000, 1));
        let before = (r.held(), r.next_deadline(), r.stats().clone());
        for _ in 0..3 {
            std::hint::black_box(r.warm_release());
        }
        assert_eq!((r.held(), r.next_deadline(), r.stats().clone()), before);
        let out = drain(&mut r, 5_000);
        assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn release_max_hands_over_message_by_message_in_the_same_order() {
        // Two receivers with the same packets: one drains at once, the
        // other one message a call; the sequences, flags and counters agree.
        let feed = |r: &mut Receiver| {
            r.handle_packet(100, 0, &data(0, 5, 5_000, 1));
            r.handle_packet(200, 0, &data(3, 6, 5_000, 1)); // keeps 5..9
            r.handle_packet(300, 0, &data(9, 2, 6_000, 1));
        };
        let (mut whole, mut step) = (
            Receiver::new(9, ReceiverConfig::default()),
            Receiver::new(9, ReceiverConfig::default()),
        );
        feed(&mut whole);
        feed(&mut step);
        let want = drain(&mut whole, 7_000);
        assert_eq!(want.len(), 11);
        let mut got = Vec::new();
        assert_eq!(step.poll_release_max(4_999, 1, |_, _| panic!("early")), 0);
        loop {
            let mut one = Vec::new();
            let n = step.poll_release_max(7_000, 1, |rel, p| {
                assert_eq!(p, &rel.seq.to_be_bytes());
                one.push(*rel)
            });
            assert_eq!(n, one.len());
            assert!(n <= 1);
            if n == 0 {
                break;
            }
            // Mid-packet (the first packet after one message), the rest
            // is due at once; anything left is due.
            if got.is_empty() {
                assert_eq!(step.next_deadline(), Some(0));
            }
            if got.len() < 10 {
                assert!(step.next_deadline().is_some_and(|d| d <= 7_000));
            }
            got.extend(one);
        }
        assert_eq!(got, want);
        assert_eq!(step.stats(), whole.stats());
        assert_eq!((step.held(), step.next_deadline()), (0, None));
        // Slots were freed: the next packets reuse them.
        step.handle_packet(400, 0, &data(11, 3, 8_000, 1));
        assert_eq!(step.poll_release_max(8_000, 2, |_, _| {}), 2);
        assert_eq!(step.poll_release_max(8_000, 2, |_, _| {}), 1);
        assert_eq!(step.stats().released, 14);
    }

    #[test]
    fn packets_of_more_than_64_messages_release_only_their_new_ones() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        // Twice, so the second round reuses the freed slab slots.
        for (base, dl) in [(0u64, 5_000u64), (1_000, 50_000)] {
            // Ten messages first, then a packet of 150 overlapping them:
            // it keeps 140, across three words of its bitmap.
            r.handle_packet(100, 0, &data(base + 60, 10, dl, 1));
            r.handle_packet(200, 0, &data(base, 150, dl + 1_000, 1));
            assert!(drain(&mut r, dl - 1).is_empty());
            let out = drain(&mut r, dl + 1_000);
            let seqs: Vec<u64> = out.iter().map(|x| x.seq - base).collect();
            let want: Vec<u64> = (60..70).chain(0..60).chain(70..150).collect();
            assert_eq!(seqs, want);
            assert!(out.iter().all(|x| !x.late && !x.early));
        }
        assert_eq!(r.stats().released, 300);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn hedged_copies_are_deduplicated_and_first_path_wins() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        r.handle_packet(100, 0, &data(0, 4, 5_000, 7));
        r.handle_packet(150, 0, &data(0, 4, 5_000, 8));
        r.handle_packet(160, 0, &data(2, 4, 5_000, 9)); // overlaps: 2,3 dup; 4,5 new
        let out = drain(&mut r, 5_000);
        assert_eq!(out.len(), 6);
        assert_eq!(r.stats().duplicates, 6);
        assert_eq!(out[0].path, 7);
        assert_eq!(out[5].path, 9);
        assert_eq!(r.stats().path_wins, vec![(7, 1), (9, 1)]);
    }

    #[test]
    fn late_messages_are_released_at_once_and_marked() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        r.handle_packet(6_000, 0, &data(0, 1, 5_000, 1));
        let out = drain(&mut r, 6_000);
        assert_eq!(out.len(), 1);
        assert!(out[0].late);
        assert_eq!(out[0].holding_ns(), 0);
        // Out of deadline order: seq 2 (deadline 9000) released, then seq 1
        // (deadline 8000) arrives before its deadline: late by the DOM rule.
        r.handle_packet(6_100, 0, &data(2, 1, 9_000, 1));
        assert_eq!(drain(&mut r, 9_000).len(), 1);
        r.handle_packet(7_000, 0, &data(1, 1, 8_000, 1));
        let out = drain(&mut r, 7_000);
        assert_eq!(out.len(), 1);
        assert!(out[0].late);
        assert_eq!(r.stats().late, 2);
    }

    #[test]
    fn gaps_from_data_heartbeats_and_end_of_session() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        r.handle_packet(100, 0, &data(0, 2, 5_000, 1));
        r.handle_packet(100, 0, &data(5, 1, 5_000, 1));
        assert_eq!(
            r.poll_event(),
            Some(Event::NewSession {
                stream: 1,
                session: 0
            })
        );
        assert_eq!(
            r.poll_event(),
            Some(Event::Gap {
                stream: 1,
                first: 2,
                count: 3
            })
        );
        r.handle_packet(100, 0, &data(3, 1, 5_000, 1));
        assert_eq!(r.stats().gaps_filled, 1);
        let mut buf = [0u8; 128];
        let mut h = Header::new(Kind::Heartbeat);
        h.stream = 1;
        h.seq = 10;
        let n = emit_empty(&h, &mut buf).unwrap();
        r.handle_packet(200, 0, &buf[..n]);
        assert_eq!(
            r.poll_event(),
            Some(Event::Gap {
                stream: 1,
                first: 6,
                count: 4
            })
        );
        let mut h = Header::new(Kind::Control);
        h.stream = 1;
        let n = emit_control(
            &h,
            Control {
                op: ControlOp::EndOfSession,
                arg: 12,
            },
            &mut buf,
        )
        .unwrap();
        r.handle_packet(300, 0, &buf[..n]);
        assert!(matches!(
            r.poll_event(),
            Some(Event::Gap {
                first: 10,
                count: 2,
                ..
            })
        ));
        assert_eq!(
            r.poll_event(),
            Some(Event::EndOfSession {
                stream: 1,
                next_seq: 12
            })
        );
        assert_eq!(r.stats().gaps_detected, 9);
    }

    #[test]
    fn dedup_memory_is_bounded_and_old_copies_are_stale() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                dedup_window: 128,
                ..Default::default()
            },
        );
        for s in 0..1000u64 {
            r.handle_packet(100, 0, &data(s, 1, 200, 1));
        }
        drain(&mut r, 1_000);
        r.handle_packet(100, 0, &data(999, 1, 200, 1));
        r.handle_packet(100, 0, &data(5, 1, 200, 1));
        assert_eq!(r.stats().duplicates, 1);
        assert_eq!(r.stats().stale, 1);
        assert_eq!(r.stats().released, 1000);
    }

    #[test]
    fn malformed_and_hostile_input_is_counted_not_fatal() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        r.handle_packet(0, 0, b"garbage");
        r.handle_packet(0, 0, &data(0, 1, 10, 1));
        r.handle_packet(0, 0, &data(u64::MAX - 2, 1, 10, 1)); // absurd jump
        r.handle_packet(0, 0, &data(u64::MAX - 1, 2, 10, 1)); // sequence overflow
        drain(&mut r, 10);
        let mut d = data(0, 2, 10, 1);
        d.truncate(d.len() - 1);
        r.handle_packet(0, 0, &d);
        assert_eq!(r.stats().malformed, 2);
        assert_eq!(r.stats().seq_jump, 2);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn late_joiner_starts_at_first_sequence_seen() {
        let mut r = Receiver::new(9, ReceiverConfig::default());
        r.handle_packet(0, 0, &data(u64::MAX - 10, 2, 10, 1));
        r.handle_packet(0, 0, &data(u64::MAX - 8, 2, 10, 1));
        assert_eq!(drain(&mut r, 10).len(), 4);
        assert_eq!(r.stats().gaps_detected, 0);
    }

    #[test]
    fn without_hold_messages_go_out_on_arrival() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                hold: false,
                ..Default::default()
            },
        );
        r.handle_packet(100, 0, &data(0, 2, 5_000, 1));
        r.handle_packet(6_000, 0, &data(2, 1, 5_000, 1));
        let out = drain(&mut r, 100);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter().map(|x| x.late).collect::<Vec<_>>(),
            vec![false, false, true]
        );
    }

    #[test]
    fn hold_overflow_releases_earliest_early() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                max_held: 2,
                ..Default::default()
            },
        );
        for s in 0..3 {
            r.handle_packet(0, 0, &data(s, 1, 1_000 + s, 1));
        }
        let out = drain(&mut r, 10);
        assert_eq!(out.len(), 1);
        assert!(out[0].early && out[0].seq == 0);
        assert_eq!(r.held(), 2);
    }

    #[test]
    fn a_message_behind_one_already_handed_over_is_late_across_streams() {
        // Deadline-ordered multicast: after stream 1's (1000, 1, 0) went
        // out (early: the queue was full), stream 2's (900, 2, 0) arrives
        // before its own deadline yet behind in the order: late at once.
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                max_held: 2,
                ..Default::default()
            },
        );
        for s in 0..3 {
            r.handle_packet(0, 0, &data(s, 1, 1_000 + s, 1));
        }
        let out = drain(&mut r, 10);
        assert!(out.len() == 1 && out[0].early);
        let mut other = vec![0u8; 2048];
        let mut h = Header::new(Kind::Data);
        (h.seq, h.send_time_ns, h.deadline_ns, h.path, h.stream) = (0, 1_000, 900, 1, 2);
        let mut b = DataBuilder::new(&mut other, 2048).unwrap();
        b.push(&0u64.to_be_bytes()).unwrap();
        let len = b.finish(&h);
        other.truncate(len);
        r.handle_packet(10, 0, &other);
        let out = drain(&mut r, 10);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].stream, out[0].seq), (2, 0));
        assert!(out[0].late && !out[0].early);
        assert_eq!(r.stats().late_out_of_order, 1);
        // The held stream-1 messages still go out in order, on time.
        let out = drain(&mut r, 2_000);
        assert_eq!(
            out.iter().map(|x| (x.seq, x.late)).collect::<Vec<_>>(),
            [(1, false), (2, false)]
        );
    }

    #[test]
    fn a_deadline_beyond_the_hold_cap_is_held_only_that_long_and_raises_the_alarm() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                max_hold_ns: 10_000,
                ..Default::default()
            },
        );
        // Arrives at 1000 with a deadline 1 s ahead: held until 11_000.
        r.handle_packet(1_000, 0, &data(0, 2, 1_000_000_000, 1));
        r.handle_packet(1_000, 0, &data(2, 1, 5_000, 1));
        assert_eq!(r.stats().deadline_beyond_cap, 2);
        let out = drain(&mut r, 5_000);
        assert_eq!(
            out.iter().map(|x| (x.seq, x.early)).collect::<Vec<_>>(),
            [(2, false)]
        );
        assert!(drain(&mut r, 10_999).is_empty());
        let out = drain(&mut r, 11_000);
        assert_eq!(
            out.iter().map(|x| (x.seq, x.early)).collect::<Vec<_>>(),
            [(0, true), (1, true)]
        );
        assert_eq!(r.stats().released_early, 2);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn reports_carry_the_percentile() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                report_interval_ns: 1_000,
                ..Default::default()
            },
        );
        for s in 0..100u64 {
            r.handle_packet(1_000 + 50_000 + s * 10, 200, &data(s, 1, 1_000_000, 1));
        }
        let rep = r.poll_report(60_000).unwrap();
        assert_eq!(rep.node, 9);
        assert!((49_000..=51_500).contains(&rep.owd_ns), "{rep:?}");
        assert_eq!(rep.clock_bound_ns, 200);
        assert!(r.poll_report(60_001).is_none());
    }
    #[test]
    fn hold_is_bounded_in_bytes_even_for_one_large_packet() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                max_held: 4,
                max_held_bytes: 65_536,
                ..ReceiverConfig::default()
            },
        );
        // One packet with more messages than the whole queue: out at once, early.
        r.handle_packet(100, 0, &data(0, 10, 1_000_000, 1));
        assert_eq!(r.held(), 0);
        let out = drain(&mut r, 100);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|x| x.early));
        // Bytes: big messages evict the earliest held ones.
        let big = |seq: u64| {
            let mut buf = vec![0u8; 40_000];
            let mut h = Header::new(Kind::Data);
            h.stream = 1;
            h.seq = seq;
            h.deadline_ns = 1_000_000 + seq;
            let mut b = DataBuilder::new(&mut buf, 40_000).unwrap();
            b.push(&[7u8; 30_000]).unwrap();
            let n = b.finish(&h);
            buf.truncate(n);
            buf
        };
        r.handle_packet(200, 0, &big(10));
        r.handle_packet(200, 0, &big(11));
        r.handle_packet(200, 0, &big(12));
        assert!(r.held_bytes() <= 65_536, "{}", r.held_bytes());
        assert_eq!(r.held(), 2);
        assert_eq!(r.stats().released_early, 10);
    }

    #[test]
    fn replays_jumps_and_strangers_change_nothing() {
        let mut r = Receiver::new(
            9,
            ReceiverConfig {
                max_streams: 2,
                ..ReceiverConfig::default()
            },
        );
        let p = data(100_000, 2, 5_000, 1);
        r.handle_packet(100, 0, &p);
        assert!(r.is_duplicate(&p), "a replay is recognised before any work");
        r.handle_packet(150, 0, &p);
        assert_eq!(r.stats().duplicates, 2);
        // A jump beyond max_seq_jump is refused, and the next real packet is fine.
        r.handle_packet(160, 0, &data(100_002 + (1 << 22), 1, 5_000, 1));
        assert_eq!(r.stats().seq_jump, 1);
        r.handle_packet(170, 0, &data(100_002, 1, 5_000, 1));
        let out = drain(&mut r, 5_000);
        assert_eq!(
            out.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![100_000, 100_001, 100_002]
        );
        // Joined mid-stream at 100,000: no phantom gap back to 0.
        assert_eq!(r.stats().gaps_detected, 0);
        // Streams are bounded.
        for st in 2..10u32 {
            let mut q = data(0, 1, 5_000, 1);
            q[8..12].copy_from_slice(&st.to_be_bytes());
            r.handle_packet(200, 0, &q);
        }
        assert_eq!(r.stats().stream_limit, 7);
        // A restarted publisher (newer session) is followed from where it starts.
        let mut q = data(0, 1, 9_000, 1);
        q[12..16].copy_from_slice(&7u32.to_be_bytes());
        r.handle_packet(300, 0, &q);
        assert_eq!(drain(&mut r, 9_000).len(), 2, "{:?}", r.stats());
        assert_eq!(r.stats().sessions, 3);
    }
}
