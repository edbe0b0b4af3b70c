//! The publisher's state machine: packing, sequencing, stamping send time and
//! deadline, heartbeats, end of session, and taking the tree's delay estimate.
//!
//! Call order: [`SenderCore::publish`] / [`SenderCore::publish_batch`] with
//! the current clock reading; then [`SenderCore::poll_transmit`] until `None`
//! and send each buffer to the root (give it back with
//! [`SenderCore::recycle`]). Call [`SenderCore::handle_timeout`] when
//! [`SenderCore::poll_timeout`] says (linger expiry, heartbeats) and
//! [`SenderCore::handle_packet`] for packets from the root (delay reports).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::clock::{ClockStatus, Reading};
use crate::deadline::{DeadlinePolicy, DeadlineState};
use crate::plan::NodeId;
use crate::retransmit::{RetransmitConfig, RetransmitStats, Retransmitter};
use crate::wire::{
    self, flags, Body, Control, ControlOp, DataBuilder, Header, Kind, Repr, WireError, HEADER_LEN,
    MSG_LEN_PREFIX,
};

/// Publisher settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderConfig {
    /// Stream id (one per publisher sharing a tree).
    pub stream: u32,
    /// Session id; 0 (the default) derives it from the clock at the first
    /// packet — tenths of a second since 2025-01-01 — so a restarted
    /// publisher is always a newer session that every node accepts.
    pub session: u32,
    /// Largest packet, bytes (UDP payload; 1472 for a 1500-byte MTU).
    pub max_packet: usize,
    /// How long a partly filled packet may wait for more messages, ns
    /// (0 = send at once).
    pub linger_ns: u64,
    /// Adaptive batching: the least time between two data packets, ns
    /// (0 = off). A message published at least this long after the last
    /// data packet leaves at once, alone; messages published sooner wait,
    /// packed together, until that instant (or until a packet is full). So
    /// a quiet feed pays nothing, and a fast one pays at most this much
    /// latency while its packet rate stays within 1 / `packet_gap_ns`,
    /// what the tree was sized to carry. The deadline is stamped when the
    /// packet leaves, so hold-and-release covers the wait.
    pub packet_gap_ns: u64,
    /// Heartbeat after this much idle time, ns (0 = never).
    pub heartbeat_interval_ns: u64,
    /// Deadline rule.
    pub deadline: DeadlinePolicy,
    /// What is kept to answer the roots' retransmit requests
    /// (`[sender.retransmit]`).
    pub retransmit: RetransmitConfig,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            stream: 1,
            session: 0,
            max_packet: 1472,
            linger_ns: 0,
            packet_gap_ns: 0,
            heartbeat_interval_ns: 1_000_000,
            deadline: DeadlinePolicy::default(),
            retransmit: RetransmitConfig::default(),
        }
    }
}

/// Publisher counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderStats {
    /// Messages published.
    pub messages: u64,
    /// Data packets sealed.
    pub packets: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Reports received from the root.
    pub reports: u64,
    /// Packets from the tree that were malformed or unexpected.
    pub dropped: u64,
    /// Packets stamped while the clock was not synchronized.
    pub degraded_packets: u64,
    /// Packets not sent because the keys could not tag them.
    pub unsealed: u64,
    /// Retransmit requests handled.
    pub retransmit_requests: u64,
}

/// Errors from publishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// A message that cannot fit in one packet.
    #[error("message of {len} bytes does not fit a {max_packet}-byte packet (limit {limit})")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Configured packet size.
        max_packet: usize,
        /// Largest message.
        limit: usize,
    },
    /// The session was ended.
    #[error("the session has ended")]
    Ended,
}

/// The publisher state machine.
#[derive(Debug)]
pub struct SenderCore {
    cfg: SenderConfig,
    next_seq: u64,
    pending: Vec<u8>,
    pending_len: usize,
    pending_count: u16,
    pending_first: u64,
    pending_since_ns: u64,
    out: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    deadline: DeadlineState,
    last_tx_ns: u64,
    /// When the last data packet was sealed (0: none yet).
    last_data_ns: u64,
    ended: bool,
    announced: bool,
    auth: Option<Auth>,
    stats: SenderStats,
    retx: Retransmitter,
    now_ns: u64,
}

/// 2025-01-01T00:00:00Z in ns since the Unix epoch.
const SESSION_EPOCH_NS: u64 = 1_735_689_600_000_000_000;

/// The automatic session id for a publisher starting at `now_ns`: tenths of
/// a second since 2025-01-01 (wraps after 13 years; never 0).
pub fn auto_session(now_ns: u64) -> u32 {
    ((now_ns.saturating_sub(SESSION_EPOCH_NS) / 100_000_000) as u32).max(1)
}

impl SenderCore {
    /// New publisher starting at sequence 0.
    pub fn new(cfg: SenderConfig) -> Self {
        let max = cfg.max_packet.max(HEADER_LEN + MSG_LEN_PREFIX + 1);
        SenderCore {
            cfg: SenderConfig {
                max_packet: max,
                ..cfg
            },
            next_seq: 0,
            pending: vec![0; max],
            pending_len: HEADER_LEN,
            pending_count: 0,
            pending_first: 0,
            pending_since_ns: 0,
            out: VecDeque::new(),
            pool: Vec::new(),
            deadline: DeadlineState::new(cfg.deadline),
            last_tx_ns: 0,
            last_data_ns: 0,
            ended: false,
            announced: false,
            auth: None,
            stats: SenderStats::default(),
            retx: Retransmitter::new(cfg.retransmit, 1, false),
            now_ns: 0,
        }
    }

    /// Tag every packet with these keys from now on.
    pub fn set_auth(&mut self, auth: Option<Auth>) {
        self.auth = auth;
    }

    /// Session id in use (0 until the first packet when automatic).
    pub fn session(&self) -> u32 {
        self.cfg.session
    }

    /// Queue a packet for the root, tagged when keys are set.
    fn enqueue(&mut self, mut buf: Vec<u8>) {
        if let Some(a) = &self.auth {
            let n = buf.len();
            buf.resize(n + crate::auth::PUBLISHER_TRAILER, 0);
            match a.seal_publisher(&mut buf, n) {
                Ok(m) => buf.truncate(m),
                Err(_) => {
                    // Keys without the publisher's part: never send untagged.
                    self.stats.unsealed += 1;
                    return;
                }
            }
        }
        self.retx.store(self.now_ns, &buf);
        self.out.push_back(buf);
    }

    /// Announce the session (its first sequence) once: right after the
    /// first data packet (so it never delays it), or before the first
    /// heartbeat or end of session.
    fn announce(&mut self, now: Reading, first_seq: u64) {
        if self.announced {
            return;
        }
        self.announced = true;
        let mut h = self.header(Kind::Control, now);
        h.seq = first_seq;
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.resize(HEADER_LEN + wire::CONTROL_LEN, 0);
        let _ = wire::emit_control(
            &h,
            Control {
                op: ControlOp::SessionStart,
                arg: first_seq,
            },
            &mut buf,
        );
        self.enqueue(buf);
    }

    /// Counters.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }
    /// The earliest instant (publisher clock, ns) the next data packet may
    /// leave: `packet_gap_ns` after the last one (0: at once). Messages
    /// published before it wait, packed, until then; a feed loop can
    /// publish them at that instant instead, with the same packets.
    pub fn next_data_ns(&self) -> u64 {
        if self.last_data_ns == 0 || self.cfg.packet_gap_ns == 0 {
            0
        } else {
            self.last_data_ns.saturating_add(self.cfg.packet_gap_ns)
        }
    }
    /// Next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// Deadline offset currently applied, ns.
    pub fn offset_ns(&self, own_bound_ns: u64) -> u64 {
        self.deadline.offset_ns(own_bound_ns)
    }
    /// Replace the deadline rule (keeps deadlines monotone).
    pub fn set_deadline_policy(&mut self, policy: DeadlinePolicy) {
        self.deadline.set_policy(policy);
    }
    /// The tree's latest reduced estimate.
    pub fn estimate(&self) -> Option<wire::DelayReport> {
        self.deadline.estimate()
    }
    /// Largest single message.
    pub fn max_message(&self) -> usize {
        (self.cfg.max_packet - HEADER_LEN - MSG_LEN_PREFIX).min(u16::MAX as usize)
    }

    fn append(&mut self, now: Reading, msg: &[u8]) -> Result<u64, PublishError> {
        if self.ended {
            return Err(PublishError::Ended);
        }
        if msg.len() > self.max_message() {
            return Err(PublishError::TooLarge {
                len: msg.len(),
                max_packet: self.cfg.max_packet,
                limit: self.max_message(),
            });
        }
        if self.pending_len + MSG_LEN_PREFIX + msg.len() > self.cfg.max_packet
            || self.pending_count == u16::MAX
        {
            self.seal(now);
        }
        if self.pending_count == 0 {
            self.pending_first = self.next_seq;
            self.pending_since_ns = now.now_ns;
        }
        let at = self.pending_len;
        self.pending[at..at + 2].copy_from_slice(&(msg.len() as u16).to_be_bytes());
        self.pending[at + 2..at + 2 + msg.len()].copy_from_slice(msg);
        self.pending_len += MSG_LEN_PREFIX + msg.len();
        self.pending_count += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.messages += 1;
        Ok(seq)
    }

    /// Publish one message; returns its sequence number. With `linger_ns` = 0
    /// the packet is sealed at once.
    pub fn publish(&mut self, now: Reading, msg: &[u8]) -> Result<u64, PublishError> {
        let seq = self.append(now, msg)?;
        self.seal_if_due(now);
        Ok(seq)
    }

    /// Publish a batch packed into as few packets as possible; returns the
    /// first sequence number. The batch is validated before anything is
    /// published, so an error publishes nothing.
    pub fn publish_batch<'m>(
        &mut self,
        now: Reading,
        msgs: impl IntoIterator<Item = &'m [u8]> + Clone,
    ) -> Result<u64, PublishError> {
        if self.ended {
            return Err(PublishError::Ended);
        }
        if let Some(m) = msgs
            .clone()
            .into_iter()
            .find(|m| m.len() > self.max_message())
        {
            return Err(PublishError::TooLarge {
                len: m.len(),
                max_packet: self.cfg.max_packet,
                limit: self.max_message(),
            });
        }
        let first = self.next_seq;
        for m in msgs {
            self.append(now, m)?;
        }
        self.seal_if_due(now);
        Ok(first)
    }

    /// When the pending packet is to leave: after its linger and at least
    /// `packet_gap_ns` after the last data packet (None: nothing pending).
    fn seal_due_ns(&self) -> Option<u64> {
        (self.pending_count > 0).then(|| {
            let gap = if self.last_data_ns == 0 {
                0
            } else {
                self.last_data_ns.saturating_add(self.cfg.packet_gap_ns)
            };
            self.pending_since_ns
                .saturating_add(self.cfg.linger_ns)
                .max(gap)
        })
    }

    fn seal_if_due(&mut self, now: Reading) {
        if self.seal_due_ns().is_some_and(|due| now.now_ns >= due) {
            self.seal(now);
        }
    }

    /// Seal the pending packet (if any) with send time and deadline from `now`.
    pub fn flush(&mut self, now: Reading) {
        self.seal(now);
    }

    fn header(&mut self, kind: Kind, now: Reading) -> Header {
        if self.cfg.session == 0 {
            self.cfg.session = auto_session(now.now_ns);
        }
        self.now_ns = self.now_ns.max(now.now_ns);
        let mut h = Header::new(kind);
        h.stream = self.cfg.stream;
        h.session = self.cfg.session;
        h.send_time_ns = now.now_ns;
        h.deadline_ns = self.deadline.deadline(now.now_ns, now.error_bound_ns);
        if now.status != ClockStatus::Synchronized {
            h.flags |= flags::CLOCK_DEGRADED;
        }
        h
    }

    fn seal(&mut self, now: Reading) {
        if self.pending_count == 0 {
            return;
        }
        let mut h = self.header(Kind::Data, now);
        h.seq = self.pending_first;
        h.count = self.pending_count;
        if h.flags & flags::CLOCK_DEGRADED != 0 {
            self.stats.degraded_packets += 1;
        }
        let _ = h.emit(&mut self.pending);
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&self.pending[..self.pending_len]);
        self.enqueue(buf);
        self.announce(now, self.pending_first);
        self.pending_len = HEADER_LEN;
        self.pending_count = 0;
        self.last_tx_ns = now.now_ns;
        self.last_data_ns = now.now_ns;
        self.stats.packets += 1;
    }

    /// Next packet to send to the root.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Give a sent buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 1024 {
            self.pool.push(buf);
        }
    }

    /// When `handle_timeout` is next needed.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.ended {
            return None;
        }
        let linger = self.seal_due_ns();
        let hb = (self.cfg.heartbeat_interval_ns > 0)
            .then(|| self.last_tx_ns + self.cfg.heartbeat_interval_ns);
        match (linger, hb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Seal lingering packets and emit a heartbeat when idle.
    pub fn handle_timeout(&mut self, now: Reading) {
        if self.ended {
            return;
        }
        self.seal_if_due(now);
        if self.cfg.heartbeat_interval_ns > 0
            && now.now_ns >= self.last_tx_ns + self.cfg.heartbeat_interval_ns
        {
            self.announce(now, self.next_seq);
            let mut h = self.header(Kind::Heartbeat, now);
            h.seq = self.next_seq;
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.resize(HEADER_LEN, 0);
            let _ = wire::emit_empty(&h, &mut buf);
            self.enqueue(buf);
            self.last_tx_ns = now.now_ns;
            self.stats.heartbeats += 1;
        }
    }

    /// End the session: seal what is pending and emit an end-of-session
    /// control packet carrying the next sequence. Later publishes fail.
    pub fn end_session(&mut self, now: Reading) {
        if self.ended {
            return;
        }
        self.seal(now);
        self.announce(now, self.next_seq);
        let mut h = self.header(Kind::Control, now);
        h.seq = self.next_seq;
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.resize(HEADER_LEN + wire::CONTROL_LEN, 0);
        let _ = wire::emit_control(
            &h,
            Control {
                op: ControlOp::EndOfSession,
                arg: self.next_seq,
            },
            &mut buf,
        );
        self.enqueue(buf);
        self.ended = true;
    }

    /// A packet from the tree (the root's delay report).
    pub fn handle_packet(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let r = Repr::parse_bytes(bytes).inspect_err(|_| self.stats.dropped += 1)?;
        self.handle_repr(&r);
        Ok(())
    }

    /// A packet a [`crate::guard::Guard`] already parsed and verified.
    /// Returns true for a retransmit request with something to re-send:
    /// call [`SenderCore::answer`] then.
    pub fn handle_repr(&mut self, r: &Repr<'_>) -> bool {
        match r.body {
            Body::Report(rep) => {
                self.stats.reports += 1;
                self.deadline.handle_report(r.header.send_time_ns, rep);
                false
            }
            Body::Request(q) if r.header.stream == self.cfg.stream => {
                self.stats.retransmit_requests += 1;
                let h = r.header;
                self.retx.request(
                    self.now_ns,
                    q.node,
                    h.stream,
                    h.session,
                    h.seq,
                    q.count as u64,
                )
            }
            _ => {
                self.stats.dropped += 1;
                false
            }
        }
    }

    /// Re-send what the last retransmit request asked for and the store
    /// still holds: `f(packet, requester)` per packet, unchanged.
    pub fn answer(&mut self, now_ns: u64, f: impl FnMut(&[u8], NodeId)) {
        self.retx.answer(now_ns, f);
    }

    /// Retransmission counters (requests, re-sent packets, the store).
    pub fn retransmit_stats(&self) -> RetransmitStats {
        self.retx.stats()
    }

    /// How many of `first .. first + count` of `stream`/`session` the
    /// retransmit store holds now.
    pub fn stored(&self, stream: u32, session: u32, first: u64, count: u64) -> u64 {
        self.retx.holds(stream, session, first, count)
    }

    /// Drop stored packets past their age (call when idle).
    pub fn expire(&mut self, now_ns: u64) {
        self.retx.expire(now_ns);
    }
}

/// Pack messages into a standalone data packet (tests, tools).
pub fn pack(header: &Header, msgs: &[&[u8]], buf: &mut [u8]) -> Result<usize, WireError> {
    let n = buf.len();
    let mut b = DataBuilder::new(buf, n)?;
    for m in msgs {
        if !b.push(m)? {
            return Err(WireError::BufferTooSmall {
                have: n,
                need: n + m.len(),
            });
        }
    }
    Ok(b.finish(header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_report, DelayReport};

    /// Next packet, skipping the session announce.
    fn tx(s: &mut SenderCore) -> Option<Vec<u8>> {
        let p = s.poll_transmit()?;
        let r = Repr::parse_bytes(&p).unwrap();
        if let Body::Control(Control {
            op: ControlOp::SessionStart,
            ..
        }) = r.body
        {
            return s.poll_transmit();
        }
        Some(p)
    }

    #[test]
    fn announces_an_automatic_session_and_tags_every_packet() {
        use crate::auth::{KeyRole, MasterKeys};
        let m = MasterKeys::from_random(1, &[3u8; 96]);
        let mut s = SenderCore::new(SenderConfig::default());
        s.set_auth(Some(Auth::new(&m.key_file(KeyRole::Sender, 0, None))));
        let t0 = SESSION_EPOCH_NS + 12_345_600_000_000;
        s.publish(now(t0), b"a").unwrap();
        s.end_session(now(t0 + 1));
        let proxy = Auth::new(&m.key_file(KeyRole::Proxy, 1, None));
        let mut kinds = Vec::new();
        while let Some(p) = s.poll_transmit() {
            proxy.verify_tree(&p).unwrap();
            let r = Repr::parse_bytes(&p).unwrap();
            assert_eq!(r.header.session, 123_456);
            kinds.push(match r.body {
                Body::Control(c) => format!("{:?}({})", c.op, c.arg),
                _ => format!("data({})", r.header.seq),
            });
        }
        assert_eq!(kinds, ["data(0)", "SessionStart(0)", "EndOfSession(1)"]);
        // A restart a tenth of a second later is a newer session.
        assert!(auto_session(t0 + 100_000_000) > auto_session(t0));
    }

    fn now(t: u64) -> Reading {
        Reading {
            now_ns: t,
            error_bound_ns: 100,
            status: ClockStatus::Synchronized,
        }
    }

    #[test]
    fn send_at_once_by_default() {
        let mut s = SenderCore::new(SenderConfig::default());
        assert_eq!(s.publish(now(10), b"a").unwrap(), 0);
        assert_eq!(s.publish(now(20), b"b").unwrap(), 1);
        let p = tx(&mut s).unwrap();
        let r = Repr::parse_bytes(&p).unwrap();
        assert_eq!(
            (r.header.seq, r.header.count, r.header.send_time_ns),
            (0, 1, 10)
        );
        assert_eq!(r.header.deadline_ns, 10 + 500_000);
        assert!(tx(&mut s).is_some());
        assert!(tx(&mut s).is_none());
    }

    #[test]
    fn batches_pack_and_split_at_packet_size() {
        let mut s = SenderCore::new(SenderConfig {
            max_packet: 200,
            ..Default::default()
        });
        let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 40]).collect();
        let first = s
            .publish_batch(now(5), msgs.iter().map(|m| m.as_slice()))
            .unwrap();
        assert_eq!(first, 0);
        let mut seqs = Vec::new();
        while let Some(p) = tx(&mut s) {
            assert!(p.len() <= 200);
            let r = Repr::parse_bytes(&p).unwrap();
            for (i, m) in r.messages().enumerate() {
                assert_eq!(m, msgs[(r.header.seq + i as u64) as usize].as_slice());
                seqs.push(r.header.seq + i as u64);
            }
        }
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        assert!(matches!(
            s.publish_batch(now(6), [&[0u8; 300][..]]),
            Err(PublishError::TooLarge { .. })
        ));
        assert_eq!(s.next_seq(), 10, "a failed batch publishes nothing");
    }

    #[test]
    fn linger_and_heartbeat() {
        let mut s = SenderCore::new(SenderConfig {
            linger_ns: 1_000,
            heartbeat_interval_ns: 10_000,
            ..Default::default()
        });
        s.publish(now(100), b"x").unwrap();
        s.publish(now(200), b"y").unwrap();
        assert!(tx(&mut s).is_none());
        assert_eq!(s.poll_timeout(), Some(1_100));
        s.handle_timeout(now(1_100));
        let r = Repr::parse_bytes(&tx(&mut s).unwrap()).unwrap().header;
        assert_eq!((r.count, r.send_time_ns), (2, 1_100));
        assert_eq!(s.poll_timeout(), Some(11_100));
        s.handle_timeout(now(11_100));
        let p = tx(&mut s).unwrap();
        let h = Repr::parse_bytes(&p).unwrap().header;
        assert_eq!((h.kind, h.seq), (Kind::Heartbeat, 2));
    }

    #[test]
    fn packet_gap_packs_what_comes_faster_and_leaves_a_quiet_feed_alone() {
        let mut s = SenderCore::new(SenderConfig {
            packet_gap_ns: 1_000,
            heartbeat_interval_ns: 0,
            ..Default::default()
        });
        assert_eq!(s.next_data_ns(), 0, "nothing sent yet: at once");
        // The first message leaves at once, alone.
        s.publish(now(100), b"a").unwrap();
        let h = Repr::parse_bytes(&tx(&mut s).unwrap()).unwrap().header;
        assert_eq!((h.seq, h.count, h.send_time_ns), (0, 1, 100));
        assert_eq!(s.next_data_ns(), 1_100, "the next one a gap later");
        // Two more within the gap wait, packed, until 100 + 1000.
        s.publish(now(150), b"b").unwrap();
        s.publish_batch(now(170), [&b"c"[..]]).unwrap();
        assert!(tx(&mut s).is_none());
        assert_eq!(s.poll_timeout(), Some(1_100));
        s.handle_timeout(now(1_099));
        assert!(tx(&mut s).is_none(), "not before the gap has passed");
        s.handle_timeout(now(1_100));
        let pkt = tx(&mut s).unwrap();
        let r = Repr::parse_bytes(&pkt).unwrap();
        assert_eq!(
            (r.header.seq, r.header.count, r.header.send_time_ns),
            (1, 2, 1_100)
        );
        // The deadline is stamped when the packet leaves.
        assert!(r.header.deadline_ns >= 1_100 + s.offset_ns(0) - 1);
        // A message a whole gap after the last packet leaves at once.
        s.publish(now(2_100), b"d").unwrap();
        let h = Repr::parse_bytes(&tx(&mut s).unwrap()).unwrap().header;
        assert_eq!((h.seq, h.count, h.send_time_ns), (3, 1, 2_100));
        // A full packet leaves at once whatever the gap.
        let big = vec![7u8; 1000];
        s.publish(now(2_200), &big).unwrap();
        assert!(tx(&mut s).is_none());
        s.publish(now(2_300), &big).unwrap();
        let h = Repr::parse_bytes(&tx(&mut s).unwrap()).unwrap().header;
        assert_eq!((h.seq, h.count, h.send_time_ns), (4, 1, 2_300));
        assert!(tx(&mut s).is_none(), "the second waits for the gap");
        assert_eq!(s.poll_timeout(), Some(3_300));
    }

    #[test]
    fn adopts_the_trees_estimate_and_ends_session() {
        let mut s = SenderCore::new(SenderConfig::default());
        let mut buf = [0u8; 128];
        let n = emit_report(
            &Header::new(Kind::DelayReport),
            &DelayReport {
                node: 1,
                receivers: 16,
                owd_ns: 80_000,
                clock_bound_ns: 200,
                samples: 100,
            },
            &mut buf,
        )
        .unwrap();
        s.handle_packet(&buf[..n]).unwrap();
        assert_eq!(s.offset_ns(100), 80_000 + 25_000 + 200);
        s.publish(
            Reading {
                status: ClockStatus::Unsynchronized,
                ..now(1_000)
            },
            b"z",
        )
        .unwrap();
        let h = Repr::parse_bytes(&tx(&mut s).unwrap()).unwrap().header;
        assert_eq!(h.deadline_ns, 1_000 + 105_200);
        assert_ne!(h.flags & flags::CLOCK_DEGRADED, 0);
        s.end_session(now(2_000));
        let p = tx(&mut s).unwrap();
        let r = Repr::parse_bytes(&p).unwrap();
        assert_eq!(
            r.body,
            Body::Control(Control {
                op: ControlOp::EndOfSession,
                arg: 1
            })
        );
        assert_eq!(s.publish(now(3_000), b"late"), Err(PublishError::Ended));
        assert!(s.handle_packet(b"junk").is_err());
        assert_eq!(s.stats().dropped, 1);
    }
}
