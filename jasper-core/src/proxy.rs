//! The proxy state machine: decide what to do with each received packet
//! (forward down the hedged fan-out, or reduce a child's delay report), and
//! emit the reduced report upward on a timer.
//!
//! Call order for each received packet:
//! 1. [`ProxyCore::handle_packet`] with the packet buffer (mutable: the path
//!    tag and hop count are rewritten once, in place, so every copy shares
//!    one buffer — zero-copy replication).
//! 2. On [`Verdict::Forward`], send the same bytes to every destination
//!    [`ProxyCore::for_each_destination`] yields (batched by the backend).
//!
//! And on a timer ([`ProxyCore::poll_timeout`]): [`ProxyCore::poll_report`]
//! gives the report for the parent.

use serde::{Deserialize, Serialize};

use std::collections::VecDeque;

use crate::deadline::Reducer;
use crate::dedup::{Seen, SeqWindow};
use crate::plan::{ForwardingTable, NodeId};
use crate::retransmit::{RetransmitConfig, RetransmitStats, Retransmitter, UpRequest};
use crate::wire::{Body, DelayReport, Kind, Packet, Repr};

/// Proxy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Interval between reports to the parent, ns.
    pub report_interval_ns: u64,
    /// A child's report older than this is ignored, ns.
    pub stale_after_ns: u64,
    /// Packets that already went through this many proxies are dropped (loop guard).
    pub max_hops: u8,
    /// Hedged-copy suppression window per stream, in packets' first sequences.
    pub dedup_window: u64,
    /// A packet whose first sequence is further than this beyond the highest
    /// forwarded is refused (`dropped_seq_jump`), never obeyed. At most
    /// `dedup_window`.
    pub max_seq_jump: u64,
    /// Most streams tracked at once.
    pub max_streams: usize,
    /// A child's delay estimate above this is clamped to it (and counted):
    /// the sender's deadline ceiling.
    pub report_ceiling_ns: u64,
    /// What is kept for retransmission and how fast it is re-sent
    /// (`[proxy.retransmit]`).
    pub retransmit: RetransmitConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            report_interval_ns: 1_000_000,
            stale_after_ns: 100_000_000,
            max_hops: 32,
            dedup_window: 1 << 16,
            max_seq_jump: 1 << 15,
            max_streams: 16,
            report_ceiling_ns: 5_000_000,
            retransmit: RetransmitConfig::default(),
        }
    }
}

/// Proxy counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Packets received.
    pub packets_in: u64,
    /// Data-path packets forwarded (each counted once).
    pub forwarded: u64,
    /// Copies the fan-out asked for.
    pub copies_out: u64,
    /// Reports received from children.
    pub reports_in: u64,
    /// Reports sent to the parent.
    pub reports_out: u64,
    /// Dropped: malformed header or body.
    pub dropped_malformed: u64,
    /// Dropped: hop limit reached.
    pub dropped_hop_limit: u64,
    /// Dropped: a report from a node that is not a child.
    pub dropped_stranger: u64,
    /// Dropped: a kind proxies do not handle.
    pub dropped_unsupported: u64,
    /// Retransmit requests handled (answered from the store and/or passed up).
    pub retransmit_requests: u64,
    /// Hedged copies dropped because an earlier copy was already forwarded.
    pub dropped_duplicate: u64,
    /// Dropped: first sequence implausibly far ahead.
    pub dropped_seq_jump: u64,
    /// Dropped: an older session of a stream, or a stream beyond `max_streams`.
    pub dropped_stale_session: u64,
    /// Sessions seen (new streams and restarted publishers).
    pub sessions: u64,
}

/// Per-stream forwarding state.
#[derive(Debug)]
struct StreamSeen {
    stream: u32,
    session: u32,
    /// One past the highest first sequence forwarded.
    next: u64,
    window: SeqWindow,
}

enum Copy {
    First,
    Duplicate,
    Jump,
    StaleSession,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) buffer to every destination for `key`.
    Forward {
        /// Spraying key (the packet's sequence).
        key: u64,
    },
    /// Consumed here (a report was reduced, a request passed upstream).
    Consumed,
    /// A retransmit request this node can answer: call
    /// [`ProxyCore::answer`] to send the packets.
    Answer,
    /// Dropped and counted.
    Dropped(&'static str),
}

/// The proxy state machine.
#[derive(Debug)]
pub struct ProxyCore {
    table: ForwardingTable,
    cfg: ProxyConfig,
    path_tag: u16,
    reducer: Reducer,
    next_report_ns: Option<u64>,
    stats: ProxyStats,
    /// First sequences forwarded, per stream.
    seen_data: Vec<StreamSeen>,
    /// Recently forwarded heartbeats and control packets (kind, stream, seq, send time).
    seen_other: VecDeque<(u8, u32, u64, u64)>,
    retx: Retransmitter,
}

impl ProxyCore {
    /// Proxy for the node this table belongs to.
    pub fn new(table: ForwardingTable, cfg: ProxyConfig) -> Self {
        let reducer = Reducer::new(
            &table.report_children,
            cfg.stale_after_ns,
            cfg.report_ceiling_ns,
        );
        ProxyCore {
            // A proxy's id is its path tag: plans and configs keep proxy
            // ids within 16 bits (`plan::MAX_PROXY_ID`); anything else
            // would show as tag 65535, which no plan assigns.
            path_tag: u16::try_from(table.node).unwrap_or(u16::MAX),
            table,
            cfg,
            reducer,
            next_report_ns: None,
            stats: ProxyStats::default(),
            seen_data: Vec::new(),
            seen_other: VecDeque::new(),
            retx: Retransmitter::new(cfg.retransmit, cfg.max_streams, true),
        }
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.table.node
    }

    /// Take a new forwarding table (a re-plan) for this same node, keeping
    /// everything that makes forwarding exactly-once: per-stream dedup
    /// state and the retransmit store. Children keep their estimates when
    /// the report children stay the same.
    pub fn set_table(&mut self, table: ForwardingTable) -> Result<(), String> {
        if table.node != self.table.node {
            return Err(format!(
                "the new table is for node {}, this proxy is node {}",
                table.node, self.table.node
            ));
        }
        if table.report_children != self.table.report_children {
            self.reducer = Reducer::new(
                &table.report_children,
                self.cfg.stale_after_ns,
                self.cfg.report_ceiling_ns,
            );
        }
        self.table = table;
        Ok(())
    }
    /// Forwarding table.
    pub fn table(&self) -> &ForwardingTable {
        &self.table
    }
    /// Counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
    /// Per child: reports clamped to the ceiling, and reductions where it
    /// alone set the max far above its siblings (named, not silent).
    pub fn child_flags(&self) -> &[crate::deadline::ChildFlags] {
        self.reducer.flags()
    }

    /// Decide about one packet; rewrites path tag and hop count in place
    /// for packets to forward.
    pub fn handle_packet(&mut self, now_ns: u64, buf: &mut [u8]) -> Verdict {
        self.handle(now_ns, buf, false)
    }

    /// Like [`ProxyCore::handle_packet`] for a packet a
    /// [`crate::guard::Guard`] already admitted (its body was validated
    /// there; only the header is read again).
    pub fn handle_admitted(&mut self, now_ns: u64, buf: &mut [u8]) -> Verdict {
        self.handle(now_ns, buf, true)
    }

    fn handle(&mut self, now_ns: u64, buf: &mut [u8], validated: bool) -> Verdict {
        self.stats.packets_in += 1;
        if self.next_report_ns.is_none() {
            self.next_report_ns = Some(now_ns + self.cfg.report_interval_ns);
        }
        // Full structural validation (unless the guard did it): a packet
        // with a malformed body is never forwarded.
        let checked = if validated {
            Packet::new_checked(&*buf).map(|p| p.kind())
        } else {
            Repr::parse_bytes(buf).map(|r| r.header.kind)
        };
        let kind = match checked {
            Ok(k) => k,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                return Verdict::Dropped(e.reason());
            }
        };
        match kind {
            Kind::Data | Kind::RetransmitData | Kind::Heartbeat | Kind::Control => {
                let mut p = Packet::new_unchecked(&mut *buf);
                if p.hops() >= self.cfg.max_hops {
                    self.stats.dropped_hop_limit += 1;
                    return Verdict::Dropped("hop_limit");
                }
                // Every node keeps only the first of its hedged copies.
                match self.first_copy(kind, p.stream(), p.session(), p.seq(), p.send_time_ns()) {
                    Copy::First => {}
                    Copy::Duplicate => {
                        self.stats.dropped_duplicate += 1;
                        return Verdict::Dropped("duplicate");
                    }
                    Copy::Jump => {
                        self.stats.dropped_seq_jump += 1;
                        return Verdict::Dropped("seq_jump");
                    }
                    Copy::StaleSession => {
                        self.stats.dropped_stale_session += 1;
                        return Verdict::Dropped("stale_session");
                    }
                }
                p.set_path(self.path_tag);
                p.set_hops(p.hops() + 1);
                let key = p.seq();
                self.stats.forwarded += 1;
                self.stats.copies_out += self.table.fanout.copies_for(key) as u64;
                if kind == Kind::Data {
                    self.retx.store(now_ns, buf);
                }
                Verdict::Forward { key }
            }
            Kind::DelayReport => match Repr::parse_bytes(buf) {
                Ok(Repr {
                    body: Body::Report(rep),
                    ..
                }) => {
                    if self.reducer.handle_report(now_ns, rep.node, rep) {
                        self.stats.reports_in += 1;
                        Verdict::Consumed
                    } else {
                        self.stats.dropped_stranger += 1;
                        Verdict::Dropped("report_from_stranger")
                    }
                }
                _ => {
                    self.stats.dropped_malformed += 1;
                    Verdict::Dropped("bad_body")
                }
            },
            Kind::RetransmitRequest => match Repr::parse_bytes(buf) {
                Ok(Repr {
                    header: h,
                    body: Body::Request(q),
                    ..
                }) => {
                    self.stats.retransmit_requests += 1;
                    let answer = self.retx.request(
                        now_ns,
                        q.node,
                        h.stream,
                        h.session,
                        h.seq,
                        q.count as u64,
                    );
                    if answer {
                        Verdict::Answer
                    } else {
                        Verdict::Consumed
                    }
                }
                _ => {
                    self.stats.dropped_malformed += 1;
                    Verdict::Dropped("bad_body")
                }
            },
        }
    }

    /// True when `bytes` is a data copy of a packet already forwarded: a
    /// read-only check a node may run before authenticating, so hedged
    /// duplicates cost no tag verification.
    pub fn is_duplicate(&self, bytes: &[u8]) -> bool {
        let Ok(p) = Packet::new_checked(bytes) else {
            return false;
        };
        if !matches!(p.kind(), Kind::Data | Kind::RetransmitData) {
            return false;
        }
        self.seen_data
            .iter()
            .find(|s| s.stream == p.stream())
            .is_some_and(|s| s.session == p.session() && s.window.peek(p.seq()) != Seen::New)
    }

    /// Count a copy dropped by [`ProxyCore::is_duplicate`].
    pub fn count_duplicate(&mut self) {
        self.stats.packets_in += 1;
        self.stats.dropped_duplicate += 1;
    }

    fn first_copy(
        &mut self,
        kind: Kind,
        stream: u32,
        session: u32,
        seq: u64,
        send_time: u64,
    ) -> Copy {
        if matches!(kind, Kind::Data | Kind::RetransmitData) {
            let fresh = |cfg: &ProxyConfig| StreamSeen {
                stream,
                session,
                next: seq,
                // Copies overtaken by the first one seen are still new.
                window: SeqWindow::new(cfg.dedup_window, seq.saturating_sub(cfg.dedup_window / 2)),
            };
            let i = match self.seen_data.iter().position(|s| s.stream == stream) {
                Some(i) if self.seen_data[i].session > session => return Copy::StaleSession,
                Some(i) if self.seen_data[i].session == session => i,
                Some(i) => {
                    // A restarted publisher: a new session starts where it starts.
                    self.seen_data[i] = fresh(&self.cfg);
                    self.stats.sessions += 1;
                    i
                }
                None if self.seen_data.len() >= self.cfg.max_streams => return Copy::StaleSession,
                None => {
                    self.seen_data.push(fresh(&self.cfg));
                    self.stats.sessions += 1;
                    self.seen_data.len() - 1
                }
            };
            let st = &mut self.seen_data[i];
            if seq > st.next.saturating_add(self.cfg.max_seq_jump) {
                return Copy::Jump;
            }
            if st.window.insert(seq) != Seen::New {
                return Copy::Duplicate;
            }
            st.next = st.next.max(seq.saturating_add(1));
            return Copy::First;
        }
        let id = (kind as u8, stream, seq, send_time);
        if self.seen_other.contains(&id) {
            return Copy::Duplicate;
        }
        if self.seen_other.len() >= 64 {
            self.seen_other.pop_front();
        }
        self.seen_other.push_back(id);
        Copy::First
    }

    /// Send the answer to the retransmit request just handled
    /// ([`Verdict::Answer`]): `f(packet, requester)` per stored packet,
    /// unchanged, within the answer rate.
    pub fn answer(&mut self, now_ns: u64, f: impl FnMut(&[u8], NodeId)) {
        self.retx.answer(now_ns, f);
    }

    /// A retransmit request to send to every upstream (ranges a child asked
    /// for that this node does not hold).
    pub fn poll_upstream_request(&mut self) -> Option<UpRequest> {
        self.retx.poll_upstream()
    }

    /// Retransmission counters.
    pub fn retransmit_stats(&self) -> RetransmitStats {
        self.retx.stats()
    }

    /// How many of `first .. first + count` of `stream`/`session` this
    /// proxy's retransmit store holds now.
    pub fn stored(&self, stream: u32, session: u32, first: u64, count: u64) -> u64 {
        self.retx.holds(stream, session, first, count)
    }

    /// Drop stored packets past their age (call when idle).
    pub fn expire(&mut self, now_ns: u64) {
        self.retx.expire(now_ns);
    }

    /// Every destination for a packet with spraying key `key`.
    #[inline]
    pub fn for_each_destination(&self, key: u64, f: impl FnMut(NodeId, bool)) {
        self.table.fanout.for_each(key, f)
    }

    /// When `poll_report` is next due.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_report_ns
    }

    /// The reduced report for the parent, when due and when there is data.
    pub fn poll_report(&mut self, now_ns: u64) -> Option<(NodeId, DelayReport)> {
        let due = self.next_report_ns?;
        if now_ns < due {
            return None;
        }
        self.next_report_ns = Some(now_ns + self.cfg.report_interval_ns);
        let parent = self.table.parent?;
        let rep = self.reducer.reduce(now_ns, self.table.node)?;
        self.stats.reports_out += 1;
        Some((parent, rep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{loopback_inventory, Plan, TreeSpec};
    use crate::wire::{emit_report, DataBuilder, Header};

    fn plan() -> Plan {
        let spec = TreeSpec {
            depth: Some(2),
            fanout: Some(4),
            hedge: 1,
            spray: false,
            roots: 1,
        };
        Plan::build(&loopback_inventory(5, 16, false, 30000), &spec).unwrap()
    }

    /// A one-message data packet with first sequence `seq`.
    fn data(seq: u64, hops: u8) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let mut b = DataBuilder::new(&mut buf, 256).unwrap();
        b.push(b"m").unwrap();
        let mut h = Header::new(Kind::Data);
        h.seq = seq;
        h.hops = hops;
        let n = b.finish(&h);
        buf.truncate(n);
        buf
    }

    #[test]
    fn forwards_with_hedging_and_rewrites_path() {
        let p = plan();
        let px = p.levels[1][0];
        let mut core = ProxyCore::new(p.tables[px as usize].clone(), ProxyConfig::default());
        let mut buf = data(5, 1);
        let v = core.handle_packet(0, &mut buf);
        assert_eq!(v, Verdict::Forward { key: 5 });
        let r = Repr::parse_bytes(&buf).unwrap();
        assert_eq!((r.header.path, r.header.hops), (px as u16, 2));
        let mut dsts = Vec::new();
        core.for_each_destination(5, |d, hedged| dsts.push((d, hedged)));
        assert_eq!(dsts.len(), 8, "(H+1)·F copies");
        assert_eq!(dsts.iter().filter(|d| d.1).count(), 4);
        assert_eq!(core.stats().copies_out, 8);
    }

    #[test]
    fn forwards_only_the_first_hedged_copy() {
        let p = plan();
        let px = p.levels[1][0];
        let mut core = ProxyCore::new(p.tables[px as usize].clone(), ProxyConfig::default());
        let mut buf = data(9, 0);
        let copy = buf.clone();
        assert!(matches!(
            core.handle_packet(0, &mut buf),
            Verdict::Forward { .. }
        ));
        let mut again = copy;
        assert_eq!(
            core.handle_packet(0, &mut again),
            Verdict::Dropped("duplicate")
        );
        // Heartbeats: identical copies dropped, the next one forwarded.
        let mut hb = Header::new(Kind::Heartbeat);
        hb.seq = 10;
        hb.send_time_ns = 5;
        let mut x = [0u8; 64];
        let m = crate::wire::emit_empty(&hb, &mut x).unwrap();
        let y = x;
        assert!(matches!(
            core.handle_packet(0, &mut x[..m]),
            Verdict::Forward { .. }
        ));
        assert_eq!(
            core.handle_packet(0, &mut { y }[..m]),
            Verdict::Dropped("duplicate")
        );
        hb.send_time_ns = 6;
        let m = crate::wire::emit_empty(&hb, &mut x).unwrap();
        assert!(matches!(
            core.handle_packet(0, &mut x[..m]),
            Verdict::Forward { .. }
        ));
        assert_eq!(core.stats().dropped_duplicate, 2);
    }

    #[test]
    fn drops_are_counted() {
        let p = plan();
        let mut core = ProxyCore::new(p.tables[1].clone(), ProxyConfig::default());
        assert_eq!(
            core.handle_packet(0, &mut [1, 2, 3]),
            Verdict::Dropped("truncated")
        );
        let mut buf = [0u8; 128];
        let mut h = Header::new(Kind::Heartbeat);
        h.hops = 32;
        let n = crate::wire::emit_empty(&h, &mut buf).unwrap();
        assert_eq!(
            core.handle_packet(0, &mut buf[..n]),
            Verdict::Dropped("hop_limit")
        );
        // A request without its body is malformed.
        let n = crate::wire::emit_empty(&Header::new(Kind::RetransmitRequest), &mut buf).unwrap();
        assert_eq!(
            core.handle_packet(0, &mut buf[..n]),
            Verdict::Dropped("bad_body")
        );
        assert_eq!(core.stats().dropped_malformed, 2);
    }

    #[test]
    fn reduces_children_reports_to_parent() {
        let p = plan();
        let px = p.levels[1][2];
        let t = p.tables[px as usize].clone();
        let mut core = ProxyCore::new(t.clone(), ProxyConfig::default());
        let mut buf = [0u8; 128];
        for (i, c) in t.report_children.iter().enumerate() {
            let rep = DelayReport {
                node: *c,
                receivers: 1,
                owd_ns: 10_000 * (i as u64 + 1),
                clock_bound_ns: 200,
                samples: 5,
            };
            let n = emit_report(&Header::new(Kind::DelayReport), &rep, &mut buf).unwrap();
            assert_eq!(core.handle_packet(0, &mut buf[..n]), Verdict::Consumed);
        }
        let stranger = DelayReport {
            node: 999,
            receivers: 1,
            owd_ns: 1,
            clock_bound_ns: 0,
            samples: 1,
        };
        let n = emit_report(&Header::new(Kind::DelayReport), &stranger, &mut buf).unwrap();
        assert_eq!(
            core.handle_packet(0, &mut buf[..n]),
            Verdict::Dropped("report_from_stranger")
        );
        assert!(core.poll_report(10).is_none(), "not due yet");
        let (parent, rep) = core.poll_report(2_000_000).unwrap();
        assert_eq!(parent, t.parent.unwrap());
        assert_eq!(rep.owd_ns, 40_000);
        assert_eq!(rep.receivers, 4);
        assert_eq!(rep.node, px);
    }
}
