//! The gate in front of every state machine.
//!
//! [`Guard::admit`] takes raw bytes and the source address of one received
//! packet and either rejects it — counting why, in [`GuardStats`] — or hands
//! on a parsed, verified [`Repr`]. Nothing behind the guard parses untrusted
//! bytes, and a rejected packet changes no state anywhere (the guard's own
//! replay memory is updated only for packets that passed every check).
//!
//! Checks, in order (cheapest first, tags before anything stateful):
//! 1. parse: header, kind, body structure ([`Repr::parse_bytes`]);
//! 2. kind: what this role accepts (a receiver takes no reports);
//! 3. source: the plan lists the sender's address for that kind (data from
//!    upstreams, reports from report children and their MP's other endpoint);
//! 4. stream: publisher packets only for streams the plan allows;
//! 5. plausibility of publisher packets: deadlines within
//!    `[now − deadline_past_ns, now + deadline_future_ns]` (before the tag:
//!    cheaper, so a flood of large forged packets costs little);
//! 6. tag: the tree tag (proxies) or feed tag (receivers) of publisher
//!    packets, the node tag of reports (keyed by the id the report claims);
//! 7. reports: fresh, and newer than the last one admitted from that child
//!    (a replayed report changes nothing).
//!
//! Data replays need no memory here: the state machines' first-copy dedup
//! turns an authentic replay into a counted duplicate or stale copy.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::auth::{Auth, NodeKeyCache, TagError};
use crate::feed_memo::SharedFeedMemo;
use crate::plan::NodeId;
use crate::wire::{Body, Kind, Repr, WireError};

/// Which checks a node runs: `[trust]` in its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSection {
    /// Key file of this node (TOML written by `jasper keys`; mode 0600).
    /// Required unless `insecure = true`.
    pub key_file: Option<std::path::PathBuf>,
    /// Run without authentication (local experiments only: any host that can
    /// reach the node controls it). Source, stream and plausibility checks
    /// still apply.
    pub insecure: bool,
    /// Streams (publishers) the plan allows.
    pub streams: Vec<u32>,
    /// Refuse packets whose source address the plan does not list.
    pub check_sources: bool,
    /// Oldest acceptable deadline, relative to now, ns (late and recovered
    /// messages still pass; replays of old traffic do not).
    pub deadline_past_ns: u64,
    /// Latest acceptable deadline, relative to now, ns: the deadline ceiling
    /// plus the clocks' disagreement.
    pub deadline_future_ns: u64,
    /// Delay reports stamped further than this from now (either way) are refused, ns.
    pub report_max_age_ns: u64,
    /// An upstream heard before and silent this long is marked dead, ns.
    pub upstream_dead_after_ns: u64,
}

impl Default for TrustSection {
    fn default() -> Self {
        TrustSection {
            key_file: None,
            insecure: false,
            streams: vec![1],
            check_sources: true,
            deadline_past_ns: 1_000_000_000,
            deadline_future_ns: 10_000_000,
            report_max_age_ns: 100_000_000,
            upstream_dead_after_ns: 200_000_000,
        }
    }
}

/// What the guard's owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardRole {
    /// The publisher (takes reports from its roots).
    Sender,
    /// A proxy (publisher packets from upstreams, reports from children).
    Proxy,
    /// A receiver (publisher packets from upstreams).
    Receiver,
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a well-formed packet.
    Malformed(&'static str),
    /// A kind this role does not take.
    UnexpectedKind,
    /// The plan lists no such sender for this kind.
    UnknownSource,
    /// A stream the plan does not allow.
    UnknownStream,
    /// Tag missing, unknown key id, or wrong.
    Tag(TagError),
    /// A report for a node that is not one of this node's children.
    NotAChild,
    /// A report not newer than the last one admitted from that child.
    Replayed,
    /// A report stamped too far from now.
    StaleReport,
    /// A deadline outside the plausible range.
    DeadlineOutOfRange,
}

impl Reject {
    /// Stable counter name.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Malformed(r) => r,
            Reject::UnexpectedKind => "unexpected_kind",
            Reject::UnknownSource => "unknown_source",
            Reject::UnknownStream => "unknown_stream",
            Reject::Tag(t) => t.reason(),
            Reject::NotAChild => "not_a_child",
            Reject::Replayed => "replayed",
            Reject::StaleReport => "stale_report",
            Reject::DeadlineOutOfRange => "deadline_out_of_range",
        }
    }
}

/// Counters: every packet handed to the guard lands in exactly one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardStats {
    /// Passed every check.
    pub admitted: u64,
    /// Malformed (header, kind byte, body structure).
    pub malformed: u64,
    /// A kind this role does not take.
    pub unexpected_kind: u64,
    /// Source address not in the plan for that kind.
    pub unknown_source: u64,
    /// Stream not in the plan.
    pub unknown_stream: u64,
    /// No tag where one is required.
    pub unauthenticated: u64,
    /// Key id of no key set held.
    pub unknown_key_id: u64,
    /// Wrong tag (forged, tampered, wrong key) or no key to check it.
    pub bad_tag: u64,
    /// Report for a node that is not a child.
    pub not_a_child: u64,
    /// Replayed (not newer) report.
    pub replayed: u64,
    /// Report stamped too far from now.
    pub stale_report: u64,
    /// Deadline outside the plausible range.
    pub deadline_out_of_range: u64,
    /// Of the admitted, publisher packets whose feed tag matched a packet
    /// already verified (the copy another receiver of this process
    /// checked): see [`crate::feed_memo`].
    #[serde(default)]
    pub feed_tags_remembered: u64,
}

impl GuardStats {
    /// Packets refused, all reasons.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.unexpected_kind
            + self.unknown_source
            + self.unknown_stream
            + self.unauthenticated
            + self.unknown_key_id
            + self.bad_tag
            + self.not_a_child
            + self.replayed
            + self.stale_report
            + self.deadline_out_of_range
    }
    /// Refused for authentication reasons (missing, unknown or bad tag).
    pub fn auth_dropped(&self) -> u64 {
        self.unauthenticated + self.unknown_key_id + self.bad_tag
    }
    fn count(&mut self, r: Reject) {
        let c = match r {
            Reject::Malformed(_) => &mut self.malformed,
            Reject::UnexpectedKind => &mut self.unexpected_kind,
            Reject::UnknownSource => &mut self.unknown_source,
            Reject::UnknownStream => &mut self.unknown_stream,
            Reject::Tag(TagError::Missing) => &mut self.unauthenticated,
            Reject::Tag(TagError::UnknownKey) => &mut self.unknown_key_id,
            Reject::Tag(TagError::NoKey | TagError::Mismatch) => &mut self.bad_tag,
            Reject::NotAChild => &mut self.not_a_child,
            Reject::Replayed => &mut self.replayed,
            Reject::StaleReport => &mut self.stale_report,
            Reject::DeadlineOutOfRange => &mut self.deadline_out_of_range,
        };
        *c += 1;
    }
}

/// Who may send what to this node, from the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Addresses publisher packets may come from (the node's upstreams).
    pub upstream: Vec<SocketAddr>,
    /// Report children: id and the addresses its reports may come from
    /// (a hedged MP reports for both endpoints from either socket).
    pub children: Vec<(NodeId, Vec<SocketAddr>)>,
    /// Nodes this one sends data to (every fan-out destination), with the
    /// addresses their retransmit requests may come from.
    pub downstream: Vec<(NodeId, Vec<SocketAddr>)>,
}

/// The gate (see the module docs).
#[derive(Debug)]
pub struct Guard {
    role: GuardRole,
    cfg: TrustSection,
    auth: Option<Auth>,
    sources: Sources,
    /// Send time of the last report admitted per child (same order as `sources.children`).
    last_report: Vec<u64>,
    /// Send time of the last request admitted per downstream node.
    last_request: Vec<u64>,
    /// Derived node keys of the children (same order as `sources.children`)
    /// and of the downstream nodes.
    child_keys: Vec<NodeKeyCache>,
    down_keys: Vec<NodeKeyCache>,
    stats: GuardStats,
    /// Feed tags already checked, shared with the other receivers of this
    /// process (see [`Guard::share_feed_memo`]).
    feed_memo: Option<SharedFeedMemo>,
}

impl Guard {
    /// A guard for `role`. `auth = None` only runs in insecure mode (the
    /// caller decides, from `[trust] insecure`).
    pub fn new(role: GuardRole, cfg: TrustSection, auth: Option<Auth>, sources: Sources) -> Guard {
        let mut sources = sources;
        sources.upstream.sort_unstable();
        sources.upstream.dedup();
        let n = sources.children.len();
        let d = sources.downstream.len();
        Guard {
            role,
            cfg,
            sources,
            last_report: vec![0; n],
            last_request: vec![0; d],
            child_keys: vec![NodeKeyCache::default(); n],
            down_keys: vec![NodeKeyCache::default(); d],
            stats: GuardStats::default(),
            feed_memo: None,
            auth,
        }
    }

    /// Share `memo` (feed tags already checked) with the other receivers
    /// of this process (receivers that authenticate; other guards ignore
    /// it).
    pub fn share_feed_memo(&mut self, memo: SharedFeedMemo) {
        if self.role == GuardRole::Receiver && self.auth.is_some() {
            self.feed_memo = Some(memo);
        }
    }

    /// The memo of feed tags already checked, once shared.
    pub fn feed_memo(&self) -> Option<&SharedFeedMemo> {
        self.feed_memo.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// Continue the counters of the guard this one replaces (a reload), so
    /// totals never go backwards, and keep the memo it shared.
    pub fn continue_counts(&mut self, old: &Guard) {
        self.stats = old.stats.clone();
        if let Some(m) = &old.feed_memo {
            self.share_feed_memo(m.clone());
        }
    }

    /// True when packets must carry valid tags.
    pub fn authenticating(&self) -> bool {
        self.auth.is_some()
    }

    /// The keys (to tag what this node sends).
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// Check one packet; see the module docs. `now_ns` is this node's
    /// synchronized clock at arrival.
    pub fn admit<'a>(
        &mut self,
        now_ns: u64,
        src: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<Repr<'a>, Reject> {
        match self.check(now_ns, src, bytes) {
            Ok(r) => {
                self.stats.admitted += 1;
                Ok(r)
            }
            Err(e) => {
                self.stats.count(e);
                Err(e)
            }
        }
    }

    fn check<'a>(
        &mut self,
        now_ns: u64,
        src: SocketAddr,
        bytes: &'a [u8],
    ) -> Result<Repr<'a>, Reject> {
        let repr =
            Repr::parse_bytes(bytes).map_err(|e: WireError| Reject::Malformed(e.reason()))?;
        let h = repr.header;
        match h.kind {
            Kind::Data | Kind::RetransmitData | Kind::Heartbeat | Kind::Control => {
                if self.role == GuardRole::Sender {
                    return Err(Reject::UnexpectedKind);
                }
                if self.cfg.check_sources && self.sources.upstream.binary_search(&src).is_err() {
                    return Err(Reject::UnknownSource);
                }
                if !self.cfg.streams.contains(&h.stream) {
                    return Err(Reject::UnknownStream);
                }
                // Plausibility before the tag: it is cheaper, and touches no state.
                let lo = now_ns.saturating_sub(self.cfg.deadline_past_ns);
                let hi = now_ns.saturating_add(self.cfg.deadline_future_ns);
                if h.deadline_ns < lo || h.deadline_ns > hi {
                    return Err(Reject::DeadlineOutOfRange);
                }
                if let Some(auth) = &self.auth {
                    let r = match (self.role, &self.feed_memo) {
                        (GuardRole::Proxy, _) => auth.verify_tree(bytes),
                        (_, Some(memo)) => {
                            let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
                            let r = auth.verify_feed_memo(bytes, &mut memo);
                            self.stats.feed_tags_remembered += (r == Ok(true)) as u64;
                            r.map(|_| ())
                        }
                        (_, None) => auth.verify_feed(bytes),
                    };
                    r.map_err(Reject::Tag)?;
                }
                Ok(repr)
            }
            Kind::DelayReport => {
                if self.role == GuardRole::Receiver {
                    return Err(Reject::UnexpectedKind);
                }
                let Body::Report(rep) = repr.body else {
                    return Err(Reject::Malformed("bad_body"));
                };
                let Some(ci) = self
                    .sources
                    .children
                    .iter()
                    .position(|(c, _)| *c == rep.node)
                else {
                    return Err(Reject::NotAChild);
                };
                if self.cfg.check_sources && !self.sources.children[ci].1.contains(&src) {
                    return Err(Reject::UnknownSource);
                }
                if let Some(auth) = &self.auth {
                    auth.verify_node_cached(bytes, rep.node, &mut self.child_keys[ci])
                        .map_err(Reject::Tag)?;
                }
                if h.send_time_ns.abs_diff(now_ns) > self.cfg.report_max_age_ns {
                    return Err(Reject::StaleReport);
                }
                if h.send_time_ns <= self.last_report[ci] {
                    return Err(Reject::Replayed);
                }
                self.last_report[ci] = h.send_time_ns;
                Ok(repr)
            }
            // Requests: from a node this one sends data to, tagged with
            // that node's key, fresh and newer than its last one (a replay
            // cannot make this node retransmit again).
            Kind::RetransmitRequest => {
                if self.role == GuardRole::Receiver {
                    return Err(Reject::UnexpectedKind);
                }
                let Body::Request(req) = repr.body else {
                    return Err(Reject::Malformed("bad_body"));
                };
                if !self.cfg.streams.contains(&h.stream) {
                    return Err(Reject::UnknownStream);
                }
                let Some(di) = self
                    .sources
                    .downstream
                    .iter()
                    .position(|(c, _)| *c == req.node)
                else {
                    return Err(Reject::NotAChild);
                };
                if self.cfg.check_sources && !self.sources.downstream[di].1.contains(&src) {
                    return Err(Reject::UnknownSource);
                }
                if let Some(auth) = &self.auth {
                    auth.verify_node_cached(bytes, req.node, &mut self.down_keys[di])
                        .map_err(Reject::Tag)?;
                }
                if h.send_time_ns.abs_diff(now_ns) > self.cfg.report_max_age_ns {
                    return Err(Reject::StaleReport);
                }
                if h.send_time_ns <= self.last_request[di] {
                    return Err(Reject::Replayed);
                }
                self.last_request[di] = h.send_time_ns;
                Ok(repr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeyRole, MasterKeys};
    use crate::feed_memo::FeedMemo;
    use crate::wire::{emit_report, DataBuilder, DelayReport, Header};

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn keys(role: KeyRole, node: NodeId) -> Auth {
        let m = MasterKeys::from_random(1, &[7u8; 96]);
        Auth::new(&m.key_file(role, node, None))
    }

    fn data(seq: u64, deadline: u64, sealer: Option<&Auth>) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let mut b = DataBuilder::new(&mut buf, 200).unwrap();
        b.push(b"m").unwrap();
        let mut h = Header::new(Kind::Data);
        h.stream = 1;
        h.seq = seq;
        h.send_time_ns = NOW;
        h.deadline_ns = deadline;
        let mut n = b.finish(&h);
        if let Some(a) = sealer {
            n = a.seal_publisher(&mut buf, n).unwrap();
        }
        buf.truncate(n);
        buf
    }

    fn report(node: NodeId, at: u64, sealer: &Auth) -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let mut h = Header::new(Kind::DelayReport);
        h.send_time_ns = at;
        let rep = DelayReport {
            node,
            receivers: 1,
            owd_ns: 0,
            clock_bound_ns: 0,
            samples: 10,
        };
        let n = emit_report(&h, &rep, &mut buf).unwrap();
        let n = sealer.seal_node(&mut buf, n, sealer.node()).unwrap();
        buf.truncate(n);
        buf
    }

    fn proxy_guard() -> Guard {
        Guard::new(
            GuardRole::Proxy,
            TrustSection::default(),
            Some(keys(KeyRole::Proxy, 1)),
            Sources {
                upstream: vec![addr(1000)],
                children: vec![(5, vec![addr(1005)]), (6, vec![addr(1006), addr(1016)])],
                downstream: vec![(5, vec![addr(1005)]), (6, vec![addr(1006), addr(1016)])],
            },
        )
    }

    #[test]
    fn authentic_data_from_the_plan_passes() {
        let sender = keys(KeyRole::Sender, 0);
        let mut g = proxy_guard();
        let p = data(0, NOW + 100_000, Some(&sender));
        assert!(g.admit(NOW, addr(1000), &p).is_ok());
        assert_eq!(g.stats().admitted, 1);
    }

    fn receiver_guard(node: NodeId) -> Guard {
        Guard::new(
            GuardRole::Receiver,
            TrustSection::default(),
            Some(keys(KeyRole::Receiver, node)),
            Sources {
                upstream: vec![addr(1000), addr(1001)],
                ..Sources::default()
            },
        )
    }

    #[test]
    fn receivers_check_a_feed_tag_once_per_copy_they_share() {
        let sender = keys(KeyRole::Sender, 0);
        let (mut a, mut b) = (receiver_guard(5), receiver_guard(6));
        let p = data(3, NOW + 100_000, Some(&sender));
        // Not shared: each checks in full.
        assert!(a.admit(NOW, addr(1000), &p).is_ok());
        assert!(b.admit(NOW, addr(1000), &p).is_ok());
        assert_eq!(b.stats().feed_tags_remembered, 0);
        let memo = FeedMemo::shared();
        a.share_feed_memo(memo.clone());
        b.share_feed_memo(memo);
        // A second copy at the same guard (a receiver's duplicate check
        // usually drops it before).
        assert!(a.admit(NOW, addr(1000), &p).is_ok());
        assert!(a.admit(NOW, addr(1001), &p).is_ok());
        assert_eq!(a.stats().feed_tags_remembered, 1);
        let q = data(4, NOW + 100_000, Some(&sender));
        assert!(a.admit(NOW, addr(1000), &q).is_ok());
        assert!(b.admit(NOW, addr(1000), &q).is_ok());
        assert_eq!(b.stats().feed_tags_remembered, 1);
        // A copy with the remembered header and tag but another body is
        // refused by the full check.
        let mut forged = q.clone();
        let body = forged.len() - crate::auth::PUBLISHER_TRAILER - 1;
        forged[body] ^= 0x20;
        assert_eq!(
            b.admit(NOW, addr(1000), &forged).err(),
            Some(Reject::Tag(TagError::Mismatch))
        );
        assert_eq!(b.stats().bad_tag, 1);
        assert_eq!(b.stats().feed_tags_remembered, 1);
        // A proxy keeps no memo.
        let mut px = proxy_guard();
        px.share_feed_memo(FeedMemo::shared());
        assert!(px.feed_memo().is_none());
    }

    #[test]
    fn every_bad_packet_is_refused_and_counted_by_reason() {
        let sender = keys(KeyRole::Sender, 0);
        let insider = keys(KeyRole::Receiver, 5);
        let mut g = proxy_guard();
        let good = data(0, NOW + 100_000, Some(&sender));
        let cases: Vec<(Vec<u8>, SocketAddr, &str)> = vec![
            (good[..good.len() - 3].to_vec(), addr(1000), "bad_body"),
            (data(0, NOW + 100_000, None), addr(1000), "unauthenticated"),
            (good.clone(), addr(1005), "unknown_source"),
            (
                {
                    let mut t = good.clone();
                    t[20] ^= 1;
                    t
                },
                addr(1000),
                "bad_tag",
            ),
            (
                data(0, NOW + 10_000_000_000, Some(&sender)),
                addr(1000),
                "deadline_out_of_range",
            ),
            (
                data(0, NOW - 10_000_000_000, Some(&sender)),
                addr(1000),
                "deadline_out_of_range",
            ),
            (vec![0u8; 10], addr(1000), "truncated"),
            // An insider's report for another node, or from the wrong address.
            (report(6, NOW, &insider), addr(1005), "unknown_source"),
            // ... even from a spoofed source address: its key speaks only for node 5.
            (report(6, NOW, &insider), addr(1006), "bad_tag"),
            (report(5, NOW, &insider), addr(1006), "unknown_source"),
            (report(9, NOW, &insider), addr(1005), "not_a_child"),
        ];
        for (bytes, src, why) in &cases {
            assert_eq!(
                g.admit(NOW, *src, bytes)
                    .map(|_| ())
                    .map_err(|e| e.reason()),
                Err(*why)
            );
        }
        assert_eq!(g.stats().admitted, 0);
        assert_eq!(g.stats().dropped(), cases.len() as u64);
        // Wrong stream (authentic otherwise).
        let mut h = data(0, NOW + 1, None);
        h[8..12].copy_from_slice(&9u32.to_be_bytes());
        let n = h.len();
        h.resize(n + 32, 0);
        let n = sender.seal_publisher(&mut h, n).unwrap();
        assert_eq!(
            g.admit(NOW, addr(1000), &h[..n]).unwrap_err(),
            Reject::UnknownStream
        );
    }

    #[test]
    fn reports_are_admitted_once_and_only_fresh() {
        let child = keys(KeyRole::Receiver, 6);
        let mut g = proxy_guard();
        let r1 = report(6, NOW, &child);
        assert!(
            g.admit(NOW, addr(1016), &r1).is_ok(),
            "either endpoint of the MP"
        );
        assert_eq!(g.admit(NOW, addr(1006), &r1).unwrap_err(), Reject::Replayed);
        let old = report(6, NOW - 1_000_000_000, &child);
        assert_eq!(
            g.admit(NOW, addr(1006), &old).unwrap_err(),
            Reject::StaleReport
        );
        let r2 = report(6, NOW + 1_000, &child);
        assert!(g.admit(NOW, addr(1006), &r2).is_ok());
    }

    fn request(node: NodeId, at: u64, sealer: Option<&Auth>) -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let q = crate::recovery::Request {
            stream: 1,
            session: 0,
            first: 10,
            count: 5,
        };
        let n = crate::retransmit::emit_sealed_request(sealer, node, at, &q, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn retransmit_requests_only_from_fed_nodes_tagged_fresh_and_once() {
        let child = keys(KeyRole::Receiver, 5);
        let stranger = keys(KeyRole::Receiver, 9);
        let mut g = proxy_guard();
        let ok = request(5, NOW, Some(&child));
        assert!(g.admit(NOW, addr(1005), &ok).is_ok());
        // Another node's request, claiming to be node 5.
        let mut forged = request(9, NOW + 4, Some(&stranger));
        forged[crate::wire::HEADER_LEN..crate::wire::HEADER_LEN + 4]
            .copy_from_slice(&5u32.to_be_bytes());
        let cases: Vec<(Vec<u8>, SocketAddr, &str)> = vec![
            (ok.clone(), addr(1005), "replayed"),
            (request(5, NOW + 1, None), addr(1005), "unauthenticated"),
            (
                request(9, NOW + 2, Some(&stranger)),
                addr(1005),
                "not_a_child",
            ),
            (
                request(5, NOW + 3, Some(&child)),
                addr(1006),
                "unknown_source",
            ),
            (forged, addr(1005), "bad_tag"),
            (
                request(5, NOW - 1_000_000_000, Some(&child)),
                addr(1005),
                "stale_report",
            ),
            (ok[..ok.len() - 20].to_vec(), addr(1005), "truncated"),
        ];
        for (bytes, src, why) in cases {
            let e = g.admit(NOW, src, &bytes).unwrap_err();
            assert_eq!(e.reason(), why);
        }
        assert_eq!(g.stats().admitted, 1);
        // A newer request from the same node passes; a receiver takes none.
        assert!(g
            .admit(NOW, addr(1005), &request(5, NOW + 5, Some(&child)))
            .is_ok());
        let mut r = Guard::new(
            GuardRole::Receiver,
            TrustSection::default(),
            Some(keys(KeyRole::Receiver, 7)),
            Sources::default(),
        );
        let e = r.admit(NOW, addr(1005), &ok).unwrap_err();
        assert_eq!(e, Reject::UnexpectedKind);
    }

    #[test]
    fn receivers_take_no_reports_and_check_the_feed_tag() {
        let sender = keys(KeyRole::Sender, 0);
        let me = keys(KeyRole::Receiver, 5);
        let mut g = Guard::new(
            GuardRole::Receiver,
            TrustSection::default(),
            Some(keys(KeyRole::Receiver, 7)),
            Sources {
                upstream: vec![addr(1000)],
                children: vec![],
                downstream: vec![],
            },
        );
        assert!(g
            .admit(NOW, addr(1000), &data(3, NOW + 5, Some(&sender)))
            .is_ok());
        assert_eq!(
            g.admit(NOW, addr(1000), &report(5, NOW, &me)).unwrap_err(),
            Reject::UnexpectedKind
        );
        // The body is covered end to end: a tampered payload fails.
        let mut t = data(3, NOW + 5, Some(&sender));
        t[50] ^= 0x40;
        assert_eq!(
            g.admit(NOW, addr(1000), &t).unwrap_err(),
            Reject::Tag(TagError::Mismatch)
        );
    }
}
