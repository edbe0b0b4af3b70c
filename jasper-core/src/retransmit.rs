//! The retransmit side of loss recovery: what the publisher and every proxy
//! keep of the data packets they sent, and the limits that keep answering
//! requests from melting the tree.
//!
//! - [`RetransmitStore`]: the last data packets per stream, bounded in bytes
//!   and in age (both configured), found by sequence number. A packet is
//!   kept byte for byte: re-sent unchanged it is exactly a late copy, with
//!   the publisher's tags intact.
//! - [`TokenBucket`]: requests per requester and answer bytes per node are
//!   rate-limited, so a loss burst (or a hostile child) cannot turn into a
//!   retransmission storm.
//!
//! The receiver's side — detecting gaps, when to ask, when to give up — is
//! [`crate::recovery`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::plan::NodeId;
use crate::wire::Packet;

/// `[proxy.retransmit]` / `[sender.retransmit]`: the retransmit store and
/// the answer limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetransmitConfig {
    /// Bytes of data packets kept per stream (0 = keep nothing: requests
    /// are passed upstream).
    pub buffer_bytes: usize,
    /// Packets older than this are dropped from the store, ns.
    pub max_age_ns: u64,
    /// Requests admitted per requester per second (a token bucket).
    pub requests_per_s: u32,
    /// Burst of requests per requester.
    pub request_burst: u32,
    /// Retransmitted bytes per second, all requesters together.
    pub answer_bytes_per_s: u64,
    /// Burst of retransmitted bytes.
    pub answer_burst_bytes: u64,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        RetransmitConfig {
            buffer_bytes: 16 << 20,
            max_age_ns: 1_000_000_000,
            requests_per_s: 20_000,
            request_burst: 2_000,
            answer_bytes_per_s: 200 << 20,
            answer_burst_bytes: 8 << 20,
        }
    }
}

impl RetransmitConfig {
    /// Largest store a config may ask for (per stream).
    pub const MAX_BUFFER_BYTES: usize = 1 << 30;
}

/// A token bucket over caller-supplied time (sans-I/O).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    /// `rate_per_s` tokens per second, at most `burst` saved up (starts full).
    pub fn new(rate_per_s: f64, burst: f64) -> Self {
        TokenBucket {
            rate_per_s,
            burst,
            tokens: burst,
            last_ns: 0,
        }
    }

    /// Take `n` tokens at `now_ns`; false (and nothing taken) when short.
    pub fn take(&mut self, now_ns: u64, n: f64) -> bool {
        if self.last_ns == 0 || now_ns < self.last_ns {
            self.last_ns = now_ns;
        }
        let dt = (now_ns - self.last_ns) as f64 * 1e-9;
        self.tokens = (self.tokens + dt * self.rate_per_s).min(self.burst);
        self.last_ns = now_ns;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    count: u64,
    stored_ns: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct StreamStore {
    stream: u32,
    session: u32,
    /// Sorted by `seq` (packets of one stream never overlap).
    entries: VecDeque<Entry>,
    bytes: usize,
}

/// What a lookup found for a requested range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Packets handed to the callback.
    pub packets: u64,
    /// Requested sequences they cover.
    pub covered: u64,
    /// The smallest range holding every requested sequence not found here
    /// (`first`, `count`), to ask upstream for.
    pub missing: Option<(u64, u64)>,
}

/// Counters of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Packets stored.
    pub stored: u64,
    /// Packets dropped for age or bytes.
    pub evicted: u64,
    /// Packets not stored (larger than the whole store, or too many streams).
    pub not_stored: u64,
}

/// The last data packets per stream, bounded in bytes and age.
#[derive(Debug)]
pub struct RetransmitStore {
    cfg: RetransmitConfig,
    max_streams: usize,
    streams: Vec<StreamStore>,
    free: Vec<Vec<u8>>,
    stats: StoreStats,
}

impl RetransmitStore {
    /// A store keeping up to `cfg.buffer_bytes` per stream, for at most
    /// `max_streams` streams.
    pub fn new(cfg: RetransmitConfig, max_streams: usize) -> Self {
        RetransmitStore {
            cfg,
            max_streams: max_streams.max(1),
            streams: Vec::new(),
            free: Vec::new(),
            stats: StoreStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Bytes held, all streams.
    pub fn bytes(&self) -> usize {
        self.streams.iter().map(|s| s.bytes).sum()
    }

    /// Keep a copy of a data packet (already validated) sent at `now_ns`.
    /// Other kinds and empty packets are ignored.
    pub fn store(&mut self, now_ns: u64, bytes: &[u8]) {
        if self.cfg.buffer_bytes == 0 {
            return;
        }
        let Ok(p) = Packet::new_checked(bytes) else {
            return;
        };
        if p.kind() != crate::wire::Kind::Data || p.count() == 0 {
            return;
        }
        if bytes.len() > self.cfg.buffer_bytes {
            self.stats.not_stored += 1;
            return;
        }
        let (stream, session, seq, count) = (p.stream(), p.session(), p.seq(), p.count() as u64);
        let i = match self.streams.iter().position(|s| s.stream == stream) {
            Some(i) if self.streams[i].session > session => return,
            Some(i) => {
                if self.streams[i].session < session {
                    // A restarted publisher: the old session's packets go.
                    let s = &mut self.streams[i];
                    self.stats.evicted += s.entries.len() as u64;
                    self.free.extend(s.entries.drain(..).map(|e| e.bytes));
                    s.bytes = 0;
                    s.session = session;
                }
                i
            }
            None if self.streams.len() >= self.max_streams => {
                self.stats.not_stored += 1;
                return;
            }
            None => {
                self.streams.push(StreamStore {
                    stream,
                    session,
                    entries: VecDeque::new(),
                    bytes: 0,
                });
                self.streams.len() - 1
            }
        };
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        let entry = Entry {
            seq,
            count,
            stored_ns: now_ns,
            bytes: buf,
        };
        let s = &mut self.streams[i];
        // The usual case: the next packet in order goes at the back.
        if s.entries.back().is_none_or(|e| e.seq < seq) {
            s.bytes += entry.bytes.len();
            s.entries.push_back(entry);
            self.stats.stored += 1;
            self.evict(i, now_ns);
            return;
        }
        // Packets arrive almost in order: find the place from the back.
        let at = s
            .entries
            .iter()
            .rposition(|e| e.seq < seq)
            .map_or(0, |k| k + 1);
        if s.entries.get(at).is_some_and(|e| e.seq == seq) {
            self.free.push(entry.bytes);
            return;
        }
        s.bytes += entry.bytes.len();
        s.entries.insert(at, entry);
        self.stats.stored += 1;
        self.evict(i, now_ns);
    }

    fn evict(&mut self, i: usize, now_ns: u64) {
        let cfg = self.cfg;
        let s = &mut self.streams[i];
        while let Some(e) = s.entries.front() {
            let old = now_ns.saturating_sub(e.stored_ns) > cfg.max_age_ns;
            if !old && s.bytes <= cfg.buffer_bytes {
                break;
            }
            let e = s.entries.pop_front().expect("front exists");
            s.bytes -= e.bytes.len();
            self.stats.evicted += 1;
            if self.free.len() < 1024 {
                self.free.push(e.bytes);
            }
        }
    }

    /// Drop what is too old at `now_ns` (call now and then when idle).
    pub fn expire(&mut self, now_ns: u64) {
        for i in 0..self.streams.len() {
            self.evict(i, now_ns);
        }
    }

    /// Call `f` with every stored packet of `stream`/`session` holding a
    /// sequence in `first .. first + count`, in sequence order. Work is
    /// bounded by what is stored, never by `count`.
    pub fn lookup(
        &self,
        stream: u32,
        session: u32,
        first: u64,
        count: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Coverage {
        let end = first.saturating_add(count);
        let mut cov = Coverage::default();
        let mut next = first;
        let mut missing: Option<(u64, u64)> = None;
        let mut gap = |a: u64, b: u64| {
            if a < b {
                missing = Some(match missing {
                    None => (a, b),
                    Some((x, _)) => (x, b),
                });
            }
        };
        if let Some(s) = self
            .streams
            .iter()
            .find(|s| s.stream == stream && s.session == session)
        {
            // First packet that may hold `first`: the last one starting at or before it.
            let start = s
                .entries
                .partition_point(|e| e.seq <= first)
                .saturating_sub(1);
            for e in s.entries.iter().skip(start) {
                if e.seq >= end {
                    break;
                }
                let e_end = e.seq.saturating_add(e.count);
                if e_end <= next {
                    continue;
                }
                gap(next, e.seq.max(next));
                f(&e.bytes);
                cov.packets += 1;
                cov.covered += e_end.min(end) - e.seq.max(next);
                next = e_end;
                if next >= end {
                    break;
                }
            }
        }
        gap(next, end);
        cov.missing = missing.map(|(a, b)| (a, b - a));
        cov
    }
}

/// Counters of a retransmitter (publisher or proxy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetransmitStats {
    /// Requests admitted.
    pub requests_in: u64,
    /// Requests refused by the per-requester rate limit.
    pub requests_limited: u64,
    /// Packets re-sent.
    pub packets_resent: u64,
    /// Bytes re-sent.
    pub bytes_resent: u64,
    /// Packets not re-sent because the answer byte rate was spent.
    pub answer_limited: u64,
    /// Requests passed upstream for sequences not held here.
    pub requests_up: u64,
    /// Upstream requests not sent because the same range was just asked for.
    pub requests_suppressed: u64,
    /// Sequences asked for that nobody above can have (the publisher's
    /// store no longer holds them).
    pub unavailable: u64,
    /// The store.
    pub store: StoreStats,
}

/// A request to pass upstream (the same record a receiver sends).
pub type UpRequest = crate::recovery::Request;

/// Emit `r` as node `node`'s retransmit request stamped `now_ns`, tagged
/// with the node key when `auth` is given. Returns the length.
pub fn emit_sealed_request(
    auth: Option<&crate::auth::Auth>,
    node: NodeId,
    now_ns: u64,
    r: &UpRequest,
    buf: &mut [u8],
) -> Option<usize> {
    let mut h = crate::wire::Header::new(crate::wire::Kind::RetransmitRequest);
    h.stream = r.stream;
    h.session = r.session;
    h.seq = r.first;
    h.send_time_ns = now_ns;
    let body = crate::wire::RetransmitRequest {
        node,
        count: r.count,
    };
    let len = crate::wire::emit_request(&h, &body, buf).ok()?;
    match auth {
        Some(a) => a.seal_node(buf, len, node).ok(),
        None => Some(len),
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    stream: u32,
    session: u32,
    first: u64,
    count: u64,
    to: NodeId,
}

/// Store + limits + upstream forwarding: what the publisher and each proxy
/// run to answer retransmit requests from the nodes they feed.
#[derive(Debug)]
pub struct Retransmitter {
    cfg: RetransmitConfig,
    store: RetransmitStore,
    answer_bucket: TokenBucket,
    requesters: Vec<(NodeId, TokenBucket)>,
    pending: Option<Pending>,
    /// Ranges recently asked upstream, with when (suppression).
    asked: VecDeque<(UpRequest, u64)>,
    out: VecDeque<UpRequest>,
    has_upstream: bool,
    stats: RetransmitStats,
}

/// Requesters tracked for rate limiting (the guard admits only plan nodes;
/// this bounds memory for unguarded use too).
const MAX_REQUESTERS: usize = 4096;
/// The same range is asked upstream at most once per this interval, ns:
/// the requesters repeat their requests themselves.
const SUPPRESS_NS: u64 = 500_000;
/// Upstream requests remembered for suppression, and queued.
const MAX_ASKED: usize = 256;

impl Retransmitter {
    /// `has_upstream`: a proxy passes what it lacks upstream; the publisher
    /// has nobody to ask.
    pub fn new(cfg: RetransmitConfig, max_streams: usize, has_upstream: bool) -> Self {
        Retransmitter {
            cfg,
            store: RetransmitStore::new(cfg, max_streams),
            answer_bucket: TokenBucket::new(
                cfg.answer_bytes_per_s as f64,
                cfg.answer_burst_bytes as f64,
            ),
            requesters: Vec::new(),
            pending: None,
            asked: VecDeque::new(),
            out: VecDeque::new(),
            has_upstream,
            stats: RetransmitStats::default(),
        }
    }

    /// Counters (the store's included).
    pub fn stats(&self) -> RetransmitStats {
        RetransmitStats {
            store: self.store.stats().clone(),
            ..self.stats.clone()
        }
    }

    /// Bytes in the store.
    pub fn stored_bytes(&self) -> usize {
        self.store.bytes()
    }

    /// Keep a copy of a data packet just sent.
    pub fn store(&mut self, now_ns: u64, bytes: &[u8]) {
        self.store.store(now_ns, bytes);
    }

    /// How many of `first .. first + count` of `stream`/`session` the store
    /// holds now (the simulator's "lost while still held" check).
    pub fn holds(&self, stream: u32, session: u32, first: u64, count: u64) -> u64 {
        self.store
            .lookup(stream, session, first, count, |_| {})
            .covered
    }

    /// Drop what aged out (call when idle).
    pub fn expire(&mut self, now_ns: u64) {
        self.store.expire(now_ns);
    }

    /// Node `from` asks for `first .. first + count` of `stream`/`session`.
    /// Returns true when [`Retransmitter::answer`] has packets to send;
    /// what is not held here is queued for [`Retransmitter::poll_upstream`].
    pub fn request(
        &mut self,
        now_ns: u64,
        from: NodeId,
        stream: u32,
        session: u32,
        first: u64,
        count: u64,
    ) -> bool {
        let cfg = self.cfg;
        let bucket = match self.requesters.iter().position(|(n, _)| *n == from) {
            Some(i) => &mut self.requesters[i].1,
            None => {
                if self.requesters.len() >= MAX_REQUESTERS {
                    self.requesters.remove(0);
                }
                self.requesters.push((
                    from,
                    TokenBucket::new(cfg.requests_per_s as f64, cfg.request_burst as f64),
                ));
                &mut self.requesters.last_mut().expect("just pushed").1
            }
        };
        if !bucket.take(now_ns, 1.0) {
            self.stats.requests_limited += 1;
            return false;
        }
        self.stats.requests_in += 1;
        let cov = self.store.lookup(stream, session, first, count, |_| {});
        if let Some((a, n)) = cov.missing {
            if self.has_upstream {
                self.ask_up(
                    now_ns,
                    UpRequest {
                        stream,
                        session,
                        first: a,
                        count: n.min(crate::wire::MAX_REQUEST_SEQS as u64) as u32,
                    },
                );
            } else {
                self.stats.unavailable += n;
            }
        }
        self.pending = (cov.packets > 0).then_some(Pending {
            stream,
            session,
            first,
            count,
            to: from,
        });
        self.pending.is_some()
    }

    fn ask_up(&mut self, now_ns: u64, r: UpRequest) {
        let window = SUPPRESS_NS;
        while self
            .asked
            .front()
            .is_some_and(|(_, t)| now_ns.saturating_sub(*t) > window)
        {
            self.asked.pop_front();
        }
        let end = r.first + r.count as u64;
        let covered = self.asked.iter().any(|(a, _)| {
            a.stream == r.stream
                && a.session == r.session
                && a.first <= r.first
                && end <= a.first + a.count as u64
        });
        if covered {
            self.stats.requests_suppressed += 1;
            return;
        }
        if self.asked.len() >= MAX_ASKED {
            self.asked.pop_front();
        }
        self.asked.push_back((r, now_ns));
        if self.out.len() < MAX_ASKED {
            self.out.push_back(r);
            self.stats.requests_up += 1;
        }
    }

    /// Send the answer to the last request: `f(packet, to)` per packet,
    /// within the answer byte rate.
    pub fn answer(&mut self, now_ns: u64, mut f: impl FnMut(&[u8], NodeId)) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let (bucket, stats) = (&mut self.answer_bucket, &mut self.stats);
        self.store
            .lookup(p.stream, p.session, p.first, p.count, |b| {
                if bucket.take(now_ns, b.len() as f64) {
                    stats.packets_resent += 1;
                    stats.bytes_resent += b.len() as u64;
                    f(b, p.to);
                } else {
                    stats.answer_limited += 1;
                }
            });
    }

    /// The next request to send to every upstream.
    pub fn poll_upstream(&mut self) -> Option<UpRequest> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DataBuilder, Header, Kind};

    fn pkt(session: u32, seq: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut b = DataBuilder::new(&mut buf, 512).unwrap();
        for _ in 0..n {
            b.push(b"msg").unwrap();
        }
        let mut h = Header::new(Kind::Data);
        h.stream = 1;
        h.session = session;
        h.seq = seq;
        let len = b.finish(&h);
        buf.truncate(len);
        buf
    }

    #[test]
    fn finds_covering_packets_and_names_what_is_missing() {
        let mut s = RetransmitStore::new(RetransmitConfig::default(), 4);
        // Packets 0..2, 2..5, then (out of order) 8..10 before 5..8 never comes.
        s.store(1, &pkt(1, 0, 2));
        s.store(2, &pkt(1, 8, 2));
        s.store(3, &pkt(1, 2, 3));
        let mut got = Vec::new();
        let c = s.lookup(1, 1, 1, 9, |b| got.push(Packet::new_unchecked(b).seq()));
        assert_eq!(got, vec![0, 2, 8]);
        assert_eq!(c.covered, 1 + 3 + 2);
        assert_eq!(c.missing, Some((5, 3)));
        // Nothing of another session or stream; a huge count costs nothing.
        let c = s.lookup(1, 2, 0, u64::MAX, |_| panic!("wrong session"));
        assert_eq!(c.missing, Some((0, u64::MAX)));
        let c = s.lookup(1, 1, 100, 1 << 40, |_| panic!("nothing there"));
        assert_eq!((c.packets, c.missing), (0, Some((100, 1 << 40))));
        // A duplicate store is ignored.
        s.store(4, &pkt(1, 2, 3));
        assert_eq!(s.stats().stored, 3);
    }

    #[test]
    fn returns_exactly_the_bytes_stored_in_order_or_not() {
        let mut s = RetransmitStore::new(RetransmitConfig::default(), 4);
        // In order (appended), then one late packet (inserted before them).
        let sent: Vec<Vec<u8>> = [(10, 2), (12, 1), (13, 3), (7, 3)]
            .iter()
            .map(|&(seq, n)| {
                let mut p = pkt(1, seq, n);
                let last = p.len() - 1;
                p[last] = seq as u8; // distinct bytes per packet
                p
            })
            .collect();
        for p in &sent {
            s.store(5, p);
        }
        let mut got = Vec::new();
        let c = s.lookup(1, 1, 7, 9, |b| got.push(b.to_vec()));
        assert_eq!(
            got,
            vec![
                sent[3].clone(),
                sent[0].clone(),
                sent[1].clone(),
                sent[2].clone()
            ]
        );
        assert_eq!((c.covered, c.missing), (9, None));
        assert_eq!(s.stats().stored, 4);
    }

    #[test]
    fn bounded_by_bytes_and_age_and_reset_by_a_new_session() {
        let one = pkt(1, 0, 1).len();
        let cfg = RetransmitConfig {
            buffer_bytes: one * 3,
            max_age_ns: 1_000,
            ..RetransmitConfig::default()
        };
        let mut s = RetransmitStore::new(cfg, 1);
        for q in 0..5 {
            s.store(10, &pkt(1, q, 1));
        }
        assert_eq!(s.bytes(), one * 3);
        assert_eq!(s.lookup(1, 1, 0, 5, |_| {}).missing, Some((0, 2)));
        s.expire(2_000);
        assert_eq!(s.bytes(), 0);
        s.store(3_000, &pkt(1, 7, 1));
        s.store(3_000, &pkt(2, 0, 1));
        assert_eq!(s.lookup(1, 1, 7, 1, |_| {}).covered, 0, "old session gone");
        assert_eq!(s.lookup(1, 2, 0, 1, |_| {}).covered, 1);
        // A second stream does not fit in a one-stream store.
        let mut other = pkt(2, 0, 1);
        other[8..12].copy_from_slice(&9u32.to_be_bytes());
        s.store(3_000, &other);
        assert_eq!(s.stats().not_stored, 1);
    }

    #[test]
    fn answers_what_it_holds_passes_the_rest_up_once_and_limits_requesters() {
        let cfg = RetransmitConfig {
            request_burst: 2,
            requests_per_s: 1,
            ..RetransmitConfig::default()
        };
        let mut r = Retransmitter::new(cfg, 4, true);
        r.store(1, &pkt(1, 0, 2));
        r.store(1, &pkt(1, 4, 2));
        assert!(r.request(10, 9, 1, 1, 0, 6));
        let mut sent = Vec::new();
        r.answer(10, |b, to| sent.push((Packet::new_unchecked(b).seq(), to)));
        assert_eq!(sent, vec![(0, 9), (4, 9)]);
        let up = r.poll_upstream().unwrap();
        assert_eq!((up.first, up.count), (2, 2));
        assert!(r.poll_upstream().is_none());
        // The same hole asked again right away is not passed up twice.
        assert!(!r.request(20, 9, 1, 1, 2, 2));
        assert!(r.poll_upstream().is_none());
        assert_eq!(r.stats().requests_suppressed, 1);
        // The third request within the burst is refused.
        assert!(!r.request(30, 9, 1, 1, 0, 1));
        assert_eq!(r.stats().requests_limited, 1);
        // The publisher has nobody to ask: counted as unavailable.
        let mut p = Retransmitter::new(RetransmitConfig::default(), 4, false);
        assert!(!p.request(10, 1, 1, 1, 0, 5));
        assert!(p.poll_upstream().is_none());
        assert_eq!(p.stats().unavailable, 5);
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let mut b = TokenBucket::new(1000.0, 2.0);
        assert!(b.take(1_000_000, 1.0));
        assert!(b.take(1_000_000, 1.0));
        assert!(!b.take(1_000_000, 1.0));
        assert!(b.take(2_000_000, 1.0), "one token per ms");
        assert!(!b.take(2_000_000, 1.0));
    }
}
