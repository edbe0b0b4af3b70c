//! The MoldUDP64 request server: answers re-requests from what the sessions
//! released. Sans-I/O: requests come in as bytes with their source, replies
//! go to a `Wire`.
//!
//! A request is the standard 20-byte packet: session (10 bytes), first
//! sequence (u64 BE), message count (u16 BE). The reply is one downstream
//! packet unicast to the requester, starting at the requested sequence and
//! holding as many of the requested messages as are kept and fit in
//! `MAX_PACKET` bytes (at least one); the requester asks again for the rest.
//!
//! - A sequence that this receiver has not released yet but knows exists
//!   (a gap it is still filling, or below the publisher's announced end)
//!   waits, in a list of at most [`MAX_WAITING`] requests, for up to the
//!   configured wait, and is answered once released.
//! - Everything else is dropped and counted by reason: malformed, unknown
//!   session, out of range (evicted, or never announced), rate (a token
//!   bucket per requester, and one for all requesters at four times the
//!   rate), busy (waiting list full), expired (waited in vain).
//!
//! Nothing is allocated in proportion to a number read from a packet: a
//! count of 65535 costs what a count of 1 costs.

use std::net::SocketAddr;

use super::emit::{header, Session, HEADER, MAX_PACKET};
use super::{MoldStats, Wire};

/// Requesters whose rate is tracked at once (the least recently seen is
/// forgotten first; the shared bucket still bounds the total).
pub(crate) const MAX_REQUESTERS: usize = 256;
/// Requests waiting for a sequence not released yet.
pub(crate) const MAX_WAITING: usize = 1024;
/// Request packet length.
pub(crate) const REQUEST_LEN: usize = 20;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

impl Bucket {
    fn full(burst: f64, now_ns: u64) -> Self {
        Bucket {
            tokens: burst,
            at_ns: now_ns,
        }
    }

    fn refill(&mut self, rate_per_ns: f64, burst: f64, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.at_ns) as f64;
        self.tokens = (self.tokens + dt * rate_per_ns).min(burst);
        self.at_ns = self.at_ns.max(now_ns);
    }
}

#[derive(Debug)]
struct Requester {
    addr: SocketAddr,
    bucket: Bucket,
    seen_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    from: SocketAddr,
    name: [u8; 10],
    seq: u64,
    count: u16,
    until_ns: u64,
}

/// A parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub name: [u8; 10],
    pub seq: u64,
    pub count: u16,
}

impl Request {
    /// The standard request packet, or `None`.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Request> {
        if bytes.len() != REQUEST_LEN {
            return None;
        }
        let name: [u8; 10] = bytes[..10].try_into().ok()?;
        let seq = u64::from_be_bytes(bytes[10..18].try_into().ok()?);
        let count = u16::from_be_bytes(bytes[18..20].try_into().ok()?);
        // MoldUDP64 numbers from 1, and a request asks for something.
        (seq != 0 && count != 0).then_some(Request { name, seq, count })
    }
}

/// The request server's state.
#[derive(Debug)]
pub(crate) struct Server {
    rate_per_ns: f64,
    burst: f64,
    all: Bucket,
    requesters: Vec<Requester>,
    waiting: Vec<Waiting>,
    wait_ns: u64,
    reply: Vec<u8>,
    last_request_ns: Option<u64>,
}

impl Server {
    /// `replies_per_s` to each requester, requests for unreleased
    /// sequences waiting up to `wait_ns`.
    pub(crate) fn new(replies_per_s: u32, wait_ns: u64, now_ns: u64) -> Self {
        let rate = replies_per_s.max(1) as f64;
        let burst = (rate / 10.0).max(16.0);
        Server {
            rate_per_ns: rate / 1e9,
            burst,
            all: Bucket::full(4.0 * burst, now_ns),
            requesters: Vec::new(),
            waiting: Vec::new(),
            wait_ns,
            reply: Vec::with_capacity(MAX_PACKET),
            last_request_ns: None,
        }
    }

    /// Requests waiting for a release.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Host time of the last request.
    pub(crate) fn last_request_ns(&self) -> Option<u64> {
        self.last_request_ns
    }

    /// One datagram from `from`.
    pub(crate) fn handle(
        &mut self,
        now_ns: u64,
        from: SocketAddr,
        bytes: &[u8],
        sessions: &[Session],
        wire: &mut dyn Wire,
        stats: &mut MoldStats,
    ) {
        stats.requests += 1;
        self.last_request_ns = Some(now_ns);
        let Some(req) = Request::parse(bytes) else {
            stats.refuse(|s| &mut s.refused_malformed);
            return;
        };
        let Some(s) = sessions.iter().find(|s| s.name == req.name) else {
            stats.refuse(|s| &mut s.refused_unknown_session);
            return;
        };
        if s.store.contains(req.seq) {
            self.answer(now_ns, from, &req, s, wire, stats);
        } else if req.seq >= s.contig() && req.seq < s.known_end() {
            // Not released yet, but it exists: answer once it is.
            if self.waiting.len() >= MAX_WAITING || self.wait_ns == 0 {
                stats.refuse(|s| &mut s.refused_busy);
                return;
            }
            stats.requests_deferred += 1;
            self.waiting.push(Waiting {
                from,
                name: req.name,
                seq: req.seq,
                count: req.count,
                until_ns: now_ns.saturating_add(self.wait_ns),
            });
        } else {
            stats.refuse(|s| &mut s.refused_out_of_range);
        }
    }

    /// Answer waiting requests whose first sequence is now released; drop
    /// those that waited too long.
    pub(crate) fn poll(
        &mut self,
        now_ns: u64,
        sessions: &[Session],
        wire: &mut dyn Wire,
        stats: &mut MoldStats,
    ) {
        let mut i = 0;
        while i < self.waiting.len() {
            let w = self.waiting[i];
            let s = sessions.iter().find(|s| s.name == w.name);
            if let Some(s) = s.filter(|s| s.store.contains(w.seq)) {
                self.waiting.swap_remove(i);
                let req = Request {
                    name: w.name,
                    seq: w.seq,
                    count: w.count,
                };
                self.answer(now_ns, w.from, &req, s, wire, stats);
            } else if s.is_none() || now_ns >= w.until_ns {
                self.waiting.swap_remove(i);
                stats.refuse(|s| &mut s.refused_expired);
            } else {
                i += 1;
            }
        }
    }

    /// When a waiting request expires.
    pub(crate) fn next_timer_ns(&self) -> Option<u64> {
        self.waiting.iter().map(|w| w.until_ns).min()
    }

    fn allow(&mut self, now_ns: u64, from: SocketAddr) -> bool {
        let (rate, burst) = (self.rate_per_ns, self.burst);
        self.all.refill(4.0 * rate, 4.0 * burst, now_ns);
        let i = match self.requesters.iter().position(|r| r.addr == from) {
            Some(i) => i,
            None if self.requesters.len() < MAX_REQUESTERS => {
                self.requesters.push(Requester {
                    addr: from,
                    bucket: Bucket::full(burst, now_ns),
                    seen_ns: now_ns,
                });
                self.requesters.len() - 1
            }
            None => {
                let (i, _) = self
                    .requesters
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| r.seen_ns)
                    .expect("the table is full, so not empty");
                self.requesters[i] = Requester {
                    addr: from,
                    bucket: Bucket::full(burst, now_ns),
                    seen_ns: now_ns,
                };
                i
            }
        };
        let r = &mut self.requesters[i];
        r.seen_ns = now_ns;
        r.bucket.refill(rate, burst, now_ns);
        if r.bucket.tokens < 1.0 || self.all.tokens < 1.0 {
            return false;
        }
        r.bucket.tokens -= 1.0;
        self.all.tokens -= 1.0;
        true
    }

    fn answer(
        &mut self,
        now_ns: u64,
        to: SocketAddr,
        req: &Request,
        s: &Session,
        wire: &mut dyn Wire,
        stats: &mut MoldStats,
    ) {
        if !self.allow(now_ns, to) {
            stats.refuse(|s| &mut s.refused_rate);
            return;
        }
        let pkt = &mut self.reply;
        pkt.clear();
        pkt.resize(HEADER, 0);
        let mut k: u16 = 0;
        while k < req.count && k < u16::MAX - 1 {
            let Some(msg) = req.seq.checked_add(k as u64).and_then(|q| s.store.get(q)) else {
                break;
            };
            if k > 0 && pkt.len() + 2 + msg.len() > MAX_PACKET {
                break;
            }
            pkt.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            pkt.extend_from_slice(msg);
            k += 1;
        }
        header(pkt, &s.name, req.seq, k);
        wire.reply(pkt, to);
        stats.requests_served += 1;
        stats.messages_resent += k as u64;
    }
}
