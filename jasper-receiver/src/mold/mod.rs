//! The MoldUDP64 hand-off to the MP's feed handler.
//!
//! Two jobs, both optional in `[receiver]`:
//! - **Downstream** (`mold_udp`): every released message is re-emitted on a
//!   local UDP socket in MoldUDP64 framing (`emit.rs`).
//! - **Requests** (`mold_request`): a MoldUDP64 request server answers
//!   re-requests from a bounded buffer of what was released (`server.rs`), so
//!   a standard client fills any gap or reordering itself.
//!
//! # Sessions
//! Every publisher stream, in every publisher session, is its own MoldUDP64
//! session, named (10 ASCII characters, no padding needed)
//! `prefix ‖ stream id in decimal ‖ code`, where `prefix` is
//! `[receiver] mold_session` (letters) and `code` is the publisher's session
//! id in base 26 (letters `A`–`Z`, its last digits filling the name), e.g.
//! `J1AAKXBQZP`. A restarted publisher thus starts a new MoldUDP64 session.
//! The MoldUDP64 sequence of a message is its Jasper sequence + 1.
//!
//! # Packets
//! Messages released together and in sequence share a packet (at most
//! 1472 bytes); a message released out of sequence order (a
//! late or recovered one) starts a packet of its own, so the feed handler
//! sees a gap first and may ask for it. Heartbeats (count 0, next sequence)
//! go out per session after `mold_heartbeat_ms` without a packet. End of
//! session (count 0xFFFF, next sequence) goes out once every sequence below
//! the publisher's end was released, or `mold_end_wait_ms` after the end
//! arrived for sequences never released, and is then repeated in place of
//! heartbeats, `mold_end_packets` in all.
//!
//! # Call order
//! [`Mold::new_session`] / [`Mold::end_of_session`] from the receiver's
//! events, [`Mold::release`] for every released message, then
//! [`Mold::poll`] once per loop (flushes packets, serves requests, sends
//! heartbeats and ends); [`Mold::next_timer_ns`] says when `poll` is next due.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use jasper_core::config::ReceiverSection;
use jasper_core::receiver::Release;
use serde::Serialize;

mod emit;
mod server;
mod store;

use emit::{Session, Timing};
use server::Server;
use store::Store;

/// Where packets go (sockets in [`Mold`], a transcript in tests).
pub(crate) trait Wire {
    /// A downstream packet for the feed handler.
    fn feed(&mut self, pkt: &[u8]);
    /// A reply to a requester.
    fn reply(&mut self, pkt: &[u8], to: SocketAddr);
}

/// MoldUDP64 counters (in the receiver's report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MoldStats {
    /// Sessions opened (one per publisher stream and session).
    pub sessions: u64,
    /// Downstream packets sent (data, heartbeats, ends of session).
    pub packets: u64,
    /// Messages sent downstream.
    pub messages: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// End-of-session packets sent (the first and its repeats).
    pub end_packets: u64,
    /// Messages released below their session's highest sequence (late or
    /// recovered): the feed handler saw a gap first.
    pub out_of_order: u64,
    /// Messages released after their session's end went out.
    pub after_end: u64,
    /// Sequences given up as never released (the buffer's reach passed).
    pub skipped: u64,
    /// Messages of a session no longer tracked (older than the two newest
    /// sessions of their stream), dropped.
    pub unrouted: u64,
    /// Request datagrams received.
    pub requests: u64,
    /// Requests answered (at once, or after waiting for a release).
    pub requests_served: u64,
    /// Requests that waited for a sequence not released yet.
    pub requests_deferred: u64,
    /// Requests dropped (the sum of the `refused_*` counters).
    pub requests_refused: u64,
    /// Not a standard request (length, sequence 0, count 0).
    pub refused_malformed: u64,
    /// For a session this receiver does not have.
    pub refused_unknown_session: u64,
    /// For a sequence no longer kept, or never announced.
    pub refused_out_of_range: u64,
    /// Over the requester's reply rate (or all requesters').
    pub refused_rate: u64,
    /// The waiting list was full.
    pub refused_busy: u64,
    /// Waited for a release that did not come in time.
    pub refused_expired: u64,
    /// Messages re-sent in replies.
    pub messages_resent: u64,
    /// Packets the kernel refused to send (the feed handler not reading).
    pub send_errors: u64,
}

impl MoldStats {
    fn refuse(&mut self, which: impl Fn(&mut Self) -> &mut u64) {
        *which(self) += 1;
        self.requests_refused += 1;
    }
}

/// Most sessions kept per stream: the current one and the one it replaced
/// (still ending, still answering requests).
const SESSIONS_PER_STREAM: usize = 2;

/// The session name of `stream` in publisher session `jasper_session`.
pub fn session_name(prefix: &str, stream: u32, jasper_session: u32) -> [u8; 10] {
    let mut name = [b'A'; 10];
    let head = format!("{prefix}{stream}");
    let n = head.len().min(10);
    name[..n].copy_from_slice(&head.as_bytes()[..n]);
    let mut code = jasper_session;
    for c in name[n..].iter_mut().rev() {
        *c = b'A' + (code % 26) as u8;
        code /= 26;
    }
    name
}

/// The sans-I/O hand-off: sessions and the request server.
#[derive(Debug)]
pub(crate) struct MoldCore {
    prefix: String,
    timing: Timing,
    buffer: (usize, usize),
    sessions: Vec<Session>,
    max_sessions: usize,
    spare: Vec<Store>,
    server: Server,
    stats: MoldStats,
}

impl MoldCore {
    pub(crate) fn new(cfg: &ReceiverSection, now_ns: u64) -> Self {
        MoldCore {
            prefix: cfg.mold_session.clone(),
            timing: Timing {
                heartbeat_ns: cfg.mold_heartbeat_ms.saturating_mul(1_000_000),
                end_wait_ns: cfg.mold_end_wait_ms.saturating_mul(1_000_000),
                end_packets: cfg.mold_end_packets,
                join_reorder: cfg.core.join_reorder,
            },
            buffer: (cfg.mold_buffer_messages, cfg.mold_buffer_bytes),
            sessions: Vec::new(),
            max_sessions: SESSIONS_PER_STREAM * cfg.core.max_streams.max(1),
            spare: Vec::new(),
            server: Server::new(
                cfg.mold_replies_per_s,
                cfg.mold_request_wait_ms.saturating_mul(1_000_000),
                now_ns,
            ),
            stats: MoldStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> &MoldStats {
        &self.stats
    }

    /// The session of `stream` in publisher session `jasper_session`,
    /// opened when it is newer than every one the stream had.
    fn session(&mut self, stream: u32, jasper_session: u32, now_ns: u64) -> Option<usize> {
        if let Some(i) = self
            .sessions
            .iter()
            .position(|s| s.stream == stream && s.jasper_session == jasper_session)
        {
            return Some(i);
        }
        if self
            .sessions
            .iter()
            .any(|s| s.stream == stream && s.jasper_session > jasper_session)
        {
            return None;
        }
        // The stream's current session was replaced without an end: it ends
        // after the wait (held messages of it may still come out).
        for s in self.sessions.iter_mut().filter(|s| s.stream == stream) {
            s.end(None, now_ns);
        }
        let mine = self.sessions.iter().filter(|s| s.stream == stream).count();
        if mine >= SESSIONS_PER_STREAM || self.sessions.len() >= self.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, s)| mine < SESSIONS_PER_STREAM || s.stream == stream)
                .min_by_key(|(_, s)| (!s.ended(), s.jasper_session))
                .map(|(i, _)| i)?;
            let gone = self.sessions.swap_remove(oldest);
            self.spare.push(gone.store);
        }
        let store = match self.spare.pop() {
            Some(mut st) => {
                st.clear();
                st
            }
            None => Store::new(self.buffer.0, self.buffer.1),
        };
        let name = session_name(&self.prefix, stream, jasper_session);
        self.sessions
            .push(Session::new(name, stream, jasper_session, store, now_ns));
        self.stats.sessions += 1;
        Some(self.sessions.len() - 1)
    }

    pub(crate) fn new_session(&mut self, stream: u32, jasper_session: u32, now_ns: u64) {
        let _ = self.session(stream, jasper_session, now_ns);
    }

    /// The publisher ended the current session of `stream`; `next_seq` is
    /// one past its last Jasper sequence.
    pub(crate) fn end_of_session(&mut self, stream: u32, next_seq: u64, now_ns: u64) {
        if let Some(s) = self
            .sessions
            .iter_mut()
            .filter(|s| s.stream == stream)
            .max_by_key(|s| s.jasper_session)
        {
            s.end(Some(next_seq.saturating_add(1)), now_ns);
        }
    }

    pub(crate) fn release(
        &mut self,
        rel: &Release,
        payload: &[u8],
        now_ns: u64,
        wire: &mut dyn Wire,
    ) {
        let Some(i) = self.session(rel.stream, rel.session, now_ns) else {
            self.stats.unrouted += 1;
            return;
        };
        let seq = rel.seq.saturating_add(1);
        self.sessions[i].release(seq, payload, &self.timing, now_ns, wire, &mut self.stats);
    }

    pub(crate) fn request(
        &mut self,
        now_ns: u64,
        from: SocketAddr,
        bytes: &[u8],
        wire: &mut dyn Wire,
    ) {
        self.server
            .handle(now_ns, from, bytes, &self.sessions, wire, &mut self.stats);
    }

    /// Flush, answer waiting requests, heartbeats and ends.
    pub(crate) fn poll(&mut self, now_ns: u64, wire: &mut dyn Wire) {
        for s in &mut self.sessions {
            s.flush(now_ns, wire, &mut self.stats);
        }
        self.server
            .poll(now_ns, &self.sessions, wire, &mut self.stats);
        for s in &mut self.sessions {
            s.poll(&self.timing, now_ns, wire, &mut self.stats);
        }
    }

    pub(crate) fn next_timer_ns(&self) -> Option<u64> {
        self.sessions
            .iter()
            .filter_map(|s| s.next_timer_ns(&self.timing))
            .chain(self.server.next_timer_ns())
            .min()
    }

    /// Every session the publisher ended has sent its end of session, no
    /// request waits, and none came in the last `quiet_ns`.
    pub(crate) fn settled(&self, now_ns: u64, quiet_ns: u64) -> bool {
        self.sessions
            .iter()
            .all(|s| s.ended() || s.end == emit::End::Open)
            && self.server.waiting() == 0
            && self
                .server
                .last_request_ns()
                .is_none_or(|t| now_ns.saturating_sub(t) >= quiet_ns)
    }
}

/// The sockets.
#[derive(Debug)]
struct Sockets {
    feed: UdpSocket,
    feed_to: SocketAddr,
    server: Option<UdpSocket>,
    send_errors: u64,
}

impl Wire for Sockets {
    fn feed(&mut self, pkt: &[u8]) {
        // Local hand-off: a full socket buffer means the feed handler is not
        // reading; the packet is dropped like any UDP feed's, and counted.
        if self.feed.send_to(pkt, self.feed_to).is_err() {
            self.send_errors += 1;
        }
    }
    fn reply(&mut self, pkt: &[u8], to: SocketAddr) {
        let sent = self.server.as_ref().map(|s| s.send_to(pkt, to));
        if !matches!(sent, Some(Ok(_))) {
            self.send_errors += 1;
        }
    }
}

/// Requests read per [`Mold::poll`] (bounds the work of one loop round).
const REQUESTS_PER_POLL: usize = 64;

/// The MoldUDP64 hand-off of one receiver: downstream socket, request
/// server socket, and the sessions.
#[derive(Debug)]
pub struct Mold {
    core: MoldCore,
    io: Sockets,
}

impl Mold {
    /// Open the sockets of `[receiver]`; `None` when `mold_udp` is not set.
    pub fn open(cfg: &ReceiverSection, now_ns: u64) -> io::Result<Option<Mold>> {
        let Some(feed_to) = cfg.mold_udp else {
            return Ok(None);
        };
        let any: SocketAddr = if feed_to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let feed = UdpSocket::bind(any)?;
        feed.set_nonblocking(true)?;
        let server = match cfg.mold_request {
            Some(a) => {
                let s = UdpSocket::bind(a).map_err(|e| {
                    io::Error::new(e.kind(), format!("MoldUDP64 request server on {a}: {e}"))
                })?;
                s.set_nonblocking(true)?;
                Some(s)
            }
            None => None,
        };
        Ok(Some(Mold {
            core: MoldCore::new(cfg, now_ns),
            io: Sockets {
                feed,
                feed_to,
                server,
                send_errors: 0,
            },
        }))
    }

    /// The request server's bound address.
    pub fn request_addr(&self) -> Option<SocketAddr> {
        self.io.server.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// A publisher session started on `stream`.
    pub fn new_session(&mut self, stream: u32, jasper_session: u32, now_ns: u64) {
        self.core.new_session(stream, jasper_session, now_ns);
    }

    /// The publisher ended `stream`'s session; `next_seq` is one past its
    /// last Jasper sequence.
    pub fn end_of_session(&mut self, stream: u32, next_seq: u64, now_ns: u64) {
        self.core.end_of_session(stream, next_seq, now_ns);
    }

    /// A released message.
    pub fn release(&mut self, rel: &Release, payload: &[u8], now_ns: u64) {
        self.core.release(rel, payload, now_ns, &mut self.io);
    }

    /// Flush packed messages, serve requests, send heartbeats and ends;
    /// returns the requests read.
    pub fn poll(&mut self, now_ns: u64) -> usize {
        let mut n = 0;
        let mut buf = [0u8; 64];
        while n < REQUESTS_PER_POLL {
            let Some(sock) = &self.io.server else { break };
            let Ok((len, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            n += 1;
            self.core.request(now_ns, from, &buf[..len], &mut self.io);
        }
        self.core.poll(now_ns, &mut self.io);
        n
    }

    /// Host time when [`Mold::poll`] next has something to send.
    pub fn next_timer_ns(&self) -> Option<u64> {
        self.core.next_timer_ns()
    }

    /// The request socket (the idle loop wakes when a request arrives).
    pub fn wait_fd(&self) -> Option<RawFd> {
        self.io.server.as_ref().map(|s| s.as_raw_fd())
    }

    /// Every ended session sent its end of session, no request waits, and
    /// none came in the last `quiet_ns` (a harness may stop the receiver).
    pub fn settled(&self, now_ns: u64, quiet_ns: u64) -> bool {
        self.core.settled(now_ns, quiet_ns)
    }

    /// Counters.
    pub fn stats(&self) -> MoldStats {
        MoldStats {
            send_errors: self.io.send_errors,
            ..self.core.stats().clone()
        }
    }
}

#[cfg(test)]
mod tests;
