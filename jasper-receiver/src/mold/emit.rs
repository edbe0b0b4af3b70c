//! One MoldUDP64 session (one publisher stream in one publisher session):
//! packs released messages into downstream packets, keeps them for
//! re-requests, sends heartbeats, and ends the session once everything of it
//! is out. Sans-I/O: packets go to a `Wire`, time comes in as `now_ns`.

use super::store::Store;
use super::{MoldStats, Wire};

/// Largest downstream packet: a 1500-byte MTU less IP and UDP headers.
pub(crate) const MAX_PACKET: usize = 1472;
/// Downstream header: session, sequence, count.
pub(crate) const HEADER: usize = 20;
/// Message count of an end-of-session packet.
pub(crate) const END_COUNT: u16 = 0xFFFF;

/// Write a downstream header.
pub(crate) fn header(buf: &mut [u8], name: &[u8; 10], seq: u64, count: u16) {
    buf[..10].copy_from_slice(name);
    buf[10..18].copy_from_slice(&seq.to_be_bytes());
    buf[18..20].copy_from_slice(&count.to_be_bytes());
}

/// Where the session's end stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Running.
    Open,
    /// The publisher ended it (`next` = one past its last MoldUDP64
    /// sequence) or a newer session replaced it (`next` unknown): the end
    /// goes out once every sequence below `next` is released, or at
    /// `since_ns` + the end wait for sequences never released.
    Waiting { next: Option<u64>, since_ns: u64 },
    /// End of session sent; `left` more go out in place of heartbeats.
    Sent { next: u64, left: u32 },
}

/// Timing and sizes shared by every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub heartbeat_ns: u64,
    pub end_wait_ns: u64,
    pub end_packets: u32,
    /// A session whose first released sequence is at most this + 1 started
    /// at 1 (the receiver's `join_reorder`): earlier ones are gaps.
    pub join_reorder: u64,
}

/// One MoldUDP64 session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) name: [u8; 10],
    pub(crate) stream: u32,
    pub(crate) jasper_session: u32,
    pub(crate) store: Store,
    /// Header room + message blocks of the packet being packed.
    pkt: Vec<u8>,
    count: u16,
    /// Sequence of the packet's first message.
    first: u64,
    /// Lowest sequence not released yet (`None` before the first release).
    contig: Option<u64>,
    /// One past the highest sequence released (1 before any).
    next: u64,
    pub(crate) end: End,
    last_sent_ns: u64,
}

impl Session {
    pub(crate) fn new(
        name: [u8; 10],
        stream: u32,
        jasper_session: u32,
        store: Store,
        now_ns: u64,
    ) -> Self {
        Session {
            name,
            stream,
            jasper_session,
            store,
            pkt: vec![0; HEADER],
            count: 0,
            first: 0,
            contig: None,
            next: 1,
            end: End::Open,
            last_sent_ns: now_ns,
        }
    }

    /// Lowest sequence not released yet.
    pub(crate) fn contig(&self) -> u64 {
        self.contig.unwrap_or(1)
    }

    /// One past the highest sequence known to exist: released, or announced
    /// by the publisher's end of session.
    pub(crate) fn known_end(&self) -> u64 {
        match self.end {
            End::Waiting { next: Some(n), .. } | End::Sent { next: n, .. } => n.max(self.next),
            _ => self.next,
        }
    }

    /// End of session went out.
    pub(crate) fn ended(&self) -> bool {
        matches!(self.end, End::Sent { .. })
    }

    /// Hand out released message `seq` (MoldUDP64 numbering) live and keep it.
    pub(crate) fn release(
        &mut self,
        seq: u64,
        msg: &[u8],
        t: &Timing,
        now_ns: u64,
        wire: &mut dyn Wire,
        stats: &mut MoldStats,
    ) {
        if self.ended() {
            stats.after_end += 1;
        }
        if seq < self.next {
            stats.out_of_order += 1;
        }
        self.store.push(seq, msg);
        let mut c = *self
            .contig
            .get_or_insert(if seq <= t.join_reorder + 1 { 1 } else { seq });
        // A sequence held back longer than the buffer reaches is given up:
        // the index would no longer show it released.
        let reach = self.store.messages() as u64;
        if seq >= c.saturating_add(reach) {
            let to = seq + 1 - reach;
            stats.skipped += to - c;
            c = to;
        }
        while self.store.contains(c) {
            c += 1;
        }
        self.contig = Some(c);
        let len = msg.len().min(u16::MAX as usize);
        let fits = self.pkt.len() + 2 + len <= MAX_PACKET;
        if self.count > 0
            && (seq != self.first + self.count as u64 || !fits || self.count == END_COUNT - 1)
        {
            self.flush(now_ns, wire, stats);
        }
        if self.count == 0 {
            self.first = seq;
        }
        self.pkt.extend_from_slice(&(len as u16).to_be_bytes());
        self.pkt.extend_from_slice(&msg[..len]);
        self.count += 1;
        self.next = self.next.max(seq + 1);
        stats.messages += 1;
    }

    /// Send what is packed.
    pub(crate) fn flush(&mut self, now_ns: u64, wire: &mut dyn Wire, stats: &mut MoldStats) {
        if self.count == 0 {
            return;
        }
        header(&mut self.pkt, &self.name, self.first, self.count);
        wire.feed(&self.pkt);
        stats.packets += 1;
        self.pkt.truncate(HEADER);
        self.count = 0;
        self.last_sent_ns = now_ns;
    }

    fn send_empty(&mut self, seq: u64, count: u16, now_ns: u64, wire: &mut dyn Wire) {
        let mut h = [0u8; HEADER];
        header(&mut h, &self.name, seq, count);
        wire.feed(&h);
        self.last_sent_ns = now_ns;
    }

    /// The publisher ended the session: `next` is one past its last
    /// sequence (MoldUDP64 numbering), or unknown when a newer session
    /// replaced this one.
    pub(crate) fn end(&mut self, next: Option<u64>, now_ns: u64) {
        match &mut self.end {
            End::Open => {
                self.end = End::Waiting {
                    next,
                    since_ns: now_ns,
                }
            }
            End::Waiting { next: n, .. } if n.is_none() => *n = next,
            _ => {}
        }
    }

    /// Flush, then end of session, its repeats, or a heartbeat when due.
    pub(crate) fn poll(
        &mut self,
        t: &Timing,
        now_ns: u64,
        wire: &mut dyn Wire,
        stats: &mut MoldStats,
    ) {
        self.flush(now_ns, wire, stats);
        let idle = now_ns.saturating_sub(self.last_sent_ns) >= t.heartbeat_ns;
        match self.end {
            End::Waiting { next, since_ns } => {
                let all_out = next.is_some_and(|n| self.contig() >= n);
                if all_out || now_ns >= since_ns.saturating_add(t.end_wait_ns) {
                    let n = next.unwrap_or(0).max(self.next);
                    self.send_empty(n, END_COUNT, now_ns, wire);
                    stats.packets += 1;
                    stats.end_packets += 1;
                    self.end = End::Sent {
                        next: n,
                        left: t.end_packets.saturating_sub(1),
                    };
                } else if idle {
                    self.heartbeat(now_ns, wire, stats);
                }
            }
            End::Sent { next, left } if left > 0 && idle => {
                self.send_empty(next, END_COUNT, now_ns, wire);
                stats.packets += 1;
                stats.end_packets += 1;
                self.end = End::Sent {
                    next,
                    left: left - 1,
                };
            }
            End::Sent { .. } => {}
            End::Open if idle => self.heartbeat(now_ns, wire, stats),
            End::Open => {}
        }
    }

    fn heartbeat(&mut self, now_ns: u64, wire: &mut dyn Wire, stats: &mut MoldStats) {
        self.send_empty(self.next, 0, now_ns, wire);
        stats.packets += 1;
        stats.heartbeats += 1;
    }

    /// When [`Session::poll`] next has something to send.
    pub(crate) fn next_timer_ns(&self, t: &Timing) -> Option<u64> {
        let beat = self.last_sent_ns.saturating_add(t.heartbeat_ns);
        match self.end {
            End::Open => Some(beat),
            End::Waiting { since_ns, .. } => Some(beat.min(since_ns.saturating_add(t.end_wait_ns))),
            End::Sent { left, .. } if left > 0 => Some(beat),
            End::Sent { .. } => None,
        }
    }
}
