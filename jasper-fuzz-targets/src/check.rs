//! Harnesses: each wraps one parser or state machine, feeds it, and asserts
//! its invariants after every call (a violated invariant panics, which AFL
//! records as a crash and the CI test as a failure).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use jasper_core::auth::{Auth, KeyFile, KeyRole, MasterKeys, TagKind};
use jasper_core::config::NodeConfig;
use jasper_core::deadline::Reducer;
use jasper_core::guard::{Guard, GuardRole, Sources, TrustSection};
use jasper_core::plan::{Fanout, ForwardingTable, NodeId};
use jasper_core::proxy::{ProxyConfig, ProxyCore, Verdict};
use jasper_core::receiver::{Event, Receiver, ReceiverConfig, Release};
use jasper_core::wire::{self, Body, DelayReport, Header, Kind, Packet, Repr, HEADER_LEN};

/// Header bytes a proxy rewrites (path tag, hop count); tags exclude them.
const MUTABLE: std::ops::Range<usize> = 26..29;

/// The bytes of a packet that its tags cover (path and hops zeroed).
pub fn covered(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() >= HEADER_LEN {
        v[MUTABLE].fill(0);
    }
    v
}

// ---------------------------------------------------------------- wire

/// Parse `bytes` every way the code does and check the answers agree:
/// `Repr::parse_bytes` never panics; when it accepts, `Packet::new_checked`
/// accepts too, every accessor agrees with the `Repr`, the data messages
/// exactly fill the body, and emitting the `Repr` parses back to the same
/// header and body.
pub fn wire(bytes: &[u8]) {
    let checked = Packet::new_checked(bytes);
    if let Ok(p) = &checked {
        // After new_checked no accessor panics.
        let _ = (p.kind(), p.flags(), p.stream(), p.session(), p.seq());
        let _ = (p.count(), p.path(), p.hops(), p.key_id(), p.send_time_ns());
        let _ = (p.deadline_ns(), p.body().len(), p.auth_tag().len());
        assert!(p.messages().count() <= p.count() as usize);
        assert_eq!(p.auth_tag().len(), p.auth_len());
    }
    let Ok(r) = Repr::parse_bytes(bytes) else {
        return;
    };
    let p = checked.expect("Repr::parse_bytes accepted what Packet::new_checked refused");
    let h = r.header;
    assert_eq!(
        (h.kind, h.flags, h.stream, h.session, h.seq, h.count),
        (
            p.kind(),
            p.flags(),
            p.stream(),
            p.session(),
            p.seq(),
            p.count()
        )
    );
    assert_eq!(
        (h.path, h.hops, h.send_time_ns, h.deadline_ns),
        (p.path(), p.hops(), p.send_time_ns(), p.deadline_ns())
    );
    assert_eq!(r.auth_tag, p.auth_tag());
    assert!(r.auth_tag.len() <= wire::MAX_AUTH_LEN);
    let body_len = r.buffer_len() - HEADER_LEN;
    assert_eq!(HEADER_LEN + body_len + r.auth_tag.len(), bytes.len());
    match r.body {
        Body::Messages(m) => {
            assert!(matches!(h.kind, Kind::Data | Kind::RetransmitData));
            let msgs: Vec<&[u8]> = r.messages().collect();
            assert_eq!(msgs.len(), h.count as usize);
            assert_eq!(
                msgs.iter()
                    .map(|x| x.len() + wire::MSG_LEN_PREFIX)
                    .sum::<usize>(),
                m.len()
            );
            assert_eq!(p.messages().collect::<Vec<_>>(), msgs);
        }
        Body::Empty => assert_eq!(h.kind, Kind::Heartbeat),
        Body::Request(q) => {
            assert_eq!(h.kind, Kind::RetransmitRequest);
            assert!(q.count > 0 && q.count <= wire::MAX_REQUEST_SEQS);
        }
        Body::Report(_) => assert_eq!(h.kind, Kind::DelayReport),
        Body::Control(_) => assert_eq!(h.kind, Kind::Control),
    }
    let mut out = vec![0u8; r.buffer_len()];
    let n = r.emit(&mut out).expect("a parsed packet re-emits");
    assert_eq!(n, out.len());
    let again = Repr::parse_bytes(&out).expect("an emitted packet parses");
    let mut want = h;
    want.flags &= !wire::flags::AUTH;
    assert_eq!(again.header, want);
    assert_eq!(again.body, r.body);
    assert!(again.auth_tag.is_empty());
}

// ---------------------------------------------------------------- key file

/// Parse a key file for node 7 in every role; an accepted file passes its
/// own check again, round-trips through `to_toml`, and loads into keys
/// that do what the role may and nothing more.
pub fn key_file(text: &str) {
    for role in [KeyRole::Sender, KeyRole::Proxy, KeyRole::Receiver] {
        let Ok(kf) = KeyFile::parse(text, 7, role) else {
            continue;
        };
        kf.check(7, role)
            .expect("an accepted key file checks again");
        assert!(!kf.keyset.is_empty() && kf.keyset.len() <= 2);
        assert!(kf.keyset.iter().all(|k| k.id != 0));
        assert!(kf.keyset.iter().any(|k| k.id == kf.active));
        if role == KeyRole::Receiver {
            assert!(kf
                .keyset
                .iter()
                .all(|k| k.tree.is_none() && k.nodes.is_none()));
        }
        let again = KeyFile::parse(&kf.to_toml(), 7, role).expect("to_toml parses back");
        assert_eq!(again, kf);
        let auth = Auth::new(&kf);
        assert_eq!((auth.node(), auth.active()), (7, kf.active));
        let mut h = Header::new(Kind::Data);
        h.stream = 1;
        let mut buf = vec![0u8; 256];
        let mut b = wire::DataBuilder::new(&mut buf, 200).expect("room");
        b.push(b"key file check").expect("fits");
        let n = b.finish(&h);
        match role {
            KeyRole::Sender => {
                let m = auth
                    .seal_publisher(&mut buf, n)
                    .expect("a sender's keys seal");
                assert_eq!(auth.verify_tree(&buf[..m]), Ok(()));
                assert_eq!(auth.verify_feed(&buf[..m]), Ok(()));
            }
            KeyRole::Proxy => {
                assert!(auth.seal_publisher(&mut buf, n).is_err() || has_feed(&kf));
            }
            KeyRole::Receiver => {
                assert!(
                    auth.seal_publisher(&mut buf, n).is_err(),
                    "a receiver's keys cannot make publisher packets"
                );
                let mut r = vec![0u8; 128];
                let rep = DelayReport {
                    node: 7,
                    receivers: 1,
                    owd_ns: 1,
                    clock_bound_ns: 0,
                    samples: 1,
                };
                let n =
                    wire::emit_report(&Header::new(Kind::DelayReport), &rep, &mut r).expect("room");
                auth.seal_node(&mut r, n, 7)
                    .expect("a receiver speaks for itself");
                assert!(auth.seal_node(&mut r, n, 8).is_err() || kf.hedge_node == Some(8));
            }
        }
    }
}

fn has_feed(kf: &KeyFile) -> bool {
    kf.keyset
        .iter()
        .any(|k| k.id == kf.active && k.feed.is_some())
}

// ---------------------------------------------------------------- node config

/// Parse and validate a node config; an accepted config serializes, parses
/// back to the same text, and every state machine it configures starts and
/// survives a packet.
pub fn node_config(text: &str) {
    let Ok(cfg) = NodeConfig::from_toml(text) else {
        return;
    };
    let t1 = cfg.to_toml();
    let back = NodeConfig::from_toml(&t1).expect("a valid config's TOML parses back");
    assert_eq!(back.to_toml(), t1);
    // What a node builds from its config must not panic on a plain packet.
    let mut rx = Receiver::new(cfg.node.id, cfg.receiver.core);
    let mut px = ProxyCore::new(cfg.table.clone(), cfg.proxy);
    let mut tx = jasper_core::sender::SenderCore::new(cfg.sender);
    let mut buf = vec![0u8; 256];
    let mut h = Header::new(Kind::Data);
    h.stream = cfg.sender.stream;
    h.seq = 1 << 40;
    h.deadline_ns = crate::build::NOW0 + 1_000;
    let mut b = wire::DataBuilder::new(&mut buf, 200).expect("room");
    b.push(b"config check").expect("fits");
    let n = b.finish(&h);
    let now = crate::build::NOW0;
    rx.handle_packet(now, 0, &buf[..n]);
    rx.poll_release(now + 2_000, |_, _| {});
    let _ = rx.poll_report(now + 2_000);
    let _ = px.handle_packet(now, &mut buf[..n]);
    let _ = px.poll_report(now + 2_000);
    let reading = jasper_core::clock::Reading {
        now_ns: now,
        error_bound_ns: cfg.clock.bound_ns(),
        status: jasper_core::clock::ClockStatus::Synchronized,
    };
    let _ = tx.publish(reading, b"x");
    tx.handle_timeout(reading);
    while tx.poll_transmit().is_some() {}
}

// ---------------------------------------------------------------- guard

/// Who seals a packet the guard harness builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// Left untagged.
    None,
    /// The publisher, with key set `set` (0, 1: the deployment's sets; 2: a
    /// foreign deployment's set with id 1).
    Publisher(usize),
    /// Node `from` (its own node key of set `set`), whatever the packet claims.
    Node(NodeId, usize),
}

/// The guard in front of a proxy, receiver or publisher, with or without
/// keys. Asserts: every packet lands in exactly one counter; an admitted
/// packet parses, is of a kind the role takes, comes from an address the
/// plan lists, names an allowed stream, has a plausible deadline (or a
/// fresh report newer than the last admitted from that child); with keys,
/// an admitted packet was sealed by a holder of the right key for what it
/// claims (never forged, never an insider speaking for another node); a
/// report is never admitted twice.
#[derive(Debug)]
pub struct GuardCheck {
    guard: Guard,
    role: GuardRole,
    cfg: TrustSection,
    sources: Sources,
    /// Key sets: the deployment's (one or two) and a foreign one.
    masters: Vec<MasterKeys>,
    foreign: MasterKeys,
    held_sets: usize,
    sealers: BTreeMap<(usize, Option<NodeId>), Auth>,
    /// Covered bytes of packets sealed by a rightful key holder.
    legit: BTreeSet<Vec<u8>>,
    last_report: BTreeMap<NodeId, u64>,
    last_request: BTreeMap<NodeId, u64>,
    calls: u64,
}

/// The addresses the guard harness plans: upstream, children 5 and 6 (6 is
/// a hedged MP with two sockets), and a stranger.
pub fn guard_addrs() -> [SocketAddr; 5] {
    let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    [a(1000), a(1005), a(1006), a(1016), a(1099)]
}

impl GuardCheck {
    /// A guard for `role` holding `held_sets` (0 = insecure, 1, or 2 during a
    /// roll-over) of `masters` (two key sets, ids 1 and 2), and `foreign` a
    /// third deployment's keys.
    pub fn new(
        role: GuardRole,
        masters: [MasterKeys; 2],
        foreign: MasterKeys,
        held_sets: usize,
        check_sources: bool,
    ) -> GuardCheck {
        let addrs = guard_addrs();
        let sources = Sources {
            upstream: vec![addrs[0]],
            children: vec![(5, vec![addrs[1]]), (6, vec![addrs[2], addrs[3]])],
            downstream: vec![(5, vec![addrs[1]]), (6, vec![addrs[2], addrs[3]])],
        };
        let cfg = TrustSection {
            insecure: held_sets == 0,
            streams: vec![1, 2],
            check_sources,
            ..TrustSection::default()
        };
        let (krole, node) = match role {
            GuardRole::Sender => (KeyRole::Sender, 0),
            GuardRole::Proxy => (KeyRole::Proxy, 1),
            GuardRole::Receiver => (KeyRole::Receiver, 7),
        };
        let held_sets = held_sets.min(2);
        let auth = (held_sets > 0).then(|| {
            let kf = KeyFile {
                node,
                hedge_node: None,
                active: masters[held_sets - 1].id,
                keyset: masters[..held_sets]
                    .iter()
                    .map(|m| m.for_node(krole, node))
                    .collect(),
            };
            kf.check(node, krole).expect("harness key file");
            Auth::new(&kf)
        });
        GuardCheck {
            guard: Guard::new(role, cfg.clone(), auth, sources.clone()),
            role,
            cfg,
            sources,
            masters: masters.to_vec(),
            foreign,
            held_sets,
            sealers: BTreeMap::new(),
            legit: BTreeSet::new(),
            last_report: BTreeMap::new(),
            last_request: BTreeMap::new(),
            calls: 0,
        }
    }

    /// The guard's counters.
    pub fn stats(&self) -> &jasper_core::guard::GuardStats {
        self.guard.stats()
    }

    fn master(&self, set: usize) -> &MasterKeys {
        match set {
            0 | 1 => &self.masters[set],
            _ => &self.foreign,
        }
    }

    /// Seal `bytes` as `signer` (when the packet has a header), remembering
    /// packets sealed by a rightful holder: the publisher's keys on
    /// publisher packets, node `n`'s key on a report that claims `n`.
    pub fn seal(&mut self, signer: Signer, mut bytes: Vec<u8>) -> Vec<u8> {
        let (set, from) = match signer {
            Signer::None => return bytes,
            Signer::Publisher(s) => (s.min(2), None),
            Signer::Node(n, s) => (s.min(2), Some(n)),
        };
        if bytes.len() < HEADER_LEN {
            return bytes;
        }
        let m = self.master(set).clone();
        let auth = self
            .sealers
            .entry((set, from))
            .or_insert_with(|| match from {
                None => Auth::new(&m.key_file(KeyRole::Sender, 0, None)),
                Some(n) => Auth::new(&m.key_file(KeyRole::Receiver, n, None)),
            });
        let n = bytes.len();
        bytes.resize(n + jasper_core::auth::PUBLISHER_TRAILER, 0);
        let sealed = match from {
            None => auth.seal_publisher(&mut bytes, n),
            Some(f) => auth.seal_node(&mut bytes, n, f),
        };
        let Ok(len) = sealed else {
            bytes.truncate(n);
            return bytes;
        };
        bytes.truncate(len);
        let rightful_set = set < self.held_sets;
        let rightful = match (Repr::parse_bytes(&bytes), from) {
            (Ok(r), None) => TagKind::of(r.header.kind) == TagKind::Publisher,
            (
                Ok(Repr {
                    body: Body::Report(rep),
                    ..
                }),
                Some(f),
            ) => rep.node == f,
            _ => false,
        };
        if rightful_set && rightful {
            self.legit.insert(self.authenticated_part(&bytes));
        }
        bytes
    }

    /// The bytes this guard's tag check binds: a proxy checks the tree tag
    /// (header and feed tag; the body is bound only through the feed tag,
    /// which receivers check), a receiver the feed tag (header and body),
    /// every node packet its whole node tag.
    fn authenticated_part(&self, bytes: &[u8]) -> Vec<u8> {
        let c = covered(bytes);
        let publisher = Repr::parse_bytes(bytes)
            .is_ok_and(|r| TagKind::of(r.header.kind) == TagKind::Publisher);
        let t = jasper_core::auth::TAG_LEN;
        if !publisher || c.len() < HEADER_LEN + 2 * t {
            return c;
        }
        match self.role {
            GuardRole::Proxy => {
                let mut v = c[..HEADER_LEN].to_vec();
                v.extend_from_slice(&c[c.len() - 2 * t..]);
                v
            }
            _ => c[..c.len() - t].to_vec(),
        }
    }

    /// Hand one packet to the guard and check the verdict.
    pub fn admit(&mut self, now: u64, src: SocketAddr, bytes: &[u8]) {
        let before = self.guard.stats().clone();
        let res = self.guard.admit(now, src, bytes);
        self.calls += 1;
        let after = self.guard.stats();
        assert_eq!(
            after.admitted + after.dropped(),
            self.calls,
            "every packet lands in exactly one counter"
        );
        let Ok(repr) = res else {
            assert_eq!(after.admitted, before.admitted);
            return;
        };
        assert_eq!(after.admitted, before.admitted + 1);
        assert_eq!(Repr::parse_bytes(bytes).as_ref(), Ok(&repr));
        let h = repr.header;
        let auth = self.held_sets > 0;
        match h.kind {
            Kind::Data | Kind::RetransmitData | Kind::Heartbeat | Kind::Control => {
                assert_ne!(self.role, GuardRole::Sender, "a publisher takes no data");
                if self.cfg.check_sources {
                    assert!(self.sources.upstream.contains(&src), "unlisted source");
                }
                assert!(self.cfg.streams.contains(&h.stream), "unlisted stream");
                assert!(
                    h.deadline_ns >= now.saturating_sub(self.cfg.deadline_past_ns)
                        && h.deadline_ns <= now.saturating_add(self.cfg.deadline_future_ns),
                    "implausible deadline admitted"
                );
            }
            Kind::DelayReport => {
                assert_ne!(
                    self.role,
                    GuardRole::Receiver,
                    "a receiver takes no reports"
                );
                let Body::Report(rep) = repr.body else {
                    panic!("a report without a report body")
                };
                let child = self
                    .sources
                    .children
                    .iter()
                    .find(|(c, _)| *c == rep.node)
                    .expect("a report from a child");
                if self.cfg.check_sources {
                    assert!(child.1.contains(&src), "report from an unlisted source");
                }
                assert!(h.send_time_ns.abs_diff(now) <= self.cfg.report_max_age_ns);
                let last = self.last_report.entry(rep.node).or_insert(0);
                assert!(h.send_time_ns > *last, "a report admitted twice");
                *last = h.send_time_ns;
            }
            Kind::RetransmitRequest => {
                assert_ne!(
                    self.role,
                    GuardRole::Receiver,
                    "a receiver takes no requests"
                );
                let Body::Request(q) = repr.body else {
                    panic!("a request without a request body")
                };
                let node = self
                    .sources
                    .downstream
                    .iter()
                    .find(|(c, _)| *c == q.node)
                    .expect("a request from a node this one feeds");
                if self.cfg.check_sources {
                    assert!(node.1.contains(&src), "request from an unlisted source");
                }
                assert!(h.send_time_ns.abs_diff(now) <= self.cfg.report_max_age_ns);
                let last = self.last_request.entry(q.node).or_insert(0);
                assert!(h.send_time_ns > *last, "a request admitted twice");
                *last = h.send_time_ns;
            }
        }
        if auth {
            assert!(
                self.legit.contains(&self.authenticated_part(bytes)),
                "admitted a packet no rightful key holder sealed"
            );
        }
    }
}

// ---------------------------------------------------------------- receiver

type MsgKey = (u32, u32, u64);

/// The receiver state machine. Asserts: no message is released twice; with
/// holding on, no message is released before its deadline unless marked
/// early (hold-queue overflow) or late; on-time releases come in
/// non-decreasing deadline order; every released payload is one that
/// arrived for that (stream, session, seq); held messages and bytes never
/// exceed the caps; counters agree with what was handed out; and a final
/// release at the end of time empties the queue and releases exactly what
/// was accepted.
#[derive(Debug)]
pub struct ReceiverCheck {
    rx: Receiver,
    cfg: ReceiverConfig,
    released: BTreeSet<MsgKey>,
    offered: BTreeMap<MsgKey, Vec<Vec<u8>>>,
    last_on_time_deadline: u64,
    handed_out: u64,
    node: NodeId,
}

impl ReceiverCheck {
    /// A receiver for node 9 with `cfg`.
    pub fn new(cfg: ReceiverConfig) -> ReceiverCheck {
        ReceiverCheck {
            rx: Receiver::new(9, cfg),
            cfg,
            released: BTreeSet::new(),
            offered: BTreeMap::new(),
            last_on_time_deadline: 0,
            handed_out: 0,
            node: 9,
        }
    }

    /// The receiver under test.
    pub fn receiver(&self) -> &Receiver {
        &self.rx
    }

    /// Feed one packet at `now`.
    pub fn packet(&mut self, now: u64, bytes: &[u8]) {
        if let Ok(r) = Repr::parse_bytes(bytes) {
            if matches!(r.header.kind, Kind::Data | Kind::RetransmitData) {
                let h = r.header;
                for (i, m) in r.messages().enumerate() {
                    let k = (h.stream, h.session, h.seq.wrapping_add(i as u64));
                    let v = self.offered.entry(k).or_default();
                    if !v.iter().any(|x| x == m) {
                        v.push(m.to_vec());
                    }
                }
            }
        }
        self.rx.handle_packet(now, 200, bytes);
        self.check_caps();
    }

    fn check_caps(&self) {
        assert!(
            self.rx.held() <= self.cfg.max_held,
            "held {} messages, cap {}",
            self.rx.held(),
            self.cfg.max_held
        );
        assert!(
            self.rx.held_bytes() <= self.cfg.max_held_bytes,
            "held {} bytes, cap {}",
            self.rx.held_bytes(),
            self.cfg.max_held_bytes
        );
    }

    /// `poll_release` at `now`, checking every release.
    pub fn release(&mut self, now: u64) -> usize {
        let mut out: Vec<(Release, Vec<u8>)> = Vec::new();
        let n = self.rx.poll_release(now, |r, m| out.push((*r, m.to_vec())));
        assert_eq!(n, out.len(), "poll_release counts what it hands out");
        for (r, m) in out {
            let k = (r.stream, r.session, r.seq);
            assert!(self.released.insert(k), "released {k:?} twice");
            assert_eq!(r.release_ns, now);
            assert!(r.arrival_ns <= now, "released before it arrived");
            if self.cfg.hold && !r.late && !r.early {
                assert!(
                    now >= r.deadline_ns,
                    "released {k:?} at {now}, before its deadline {}",
                    r.deadline_ns
                );
                assert!(
                    r.deadline_ns >= self.last_on_time_deadline,
                    "on-time releases out of deadline order"
                );
                self.last_on_time_deadline = r.deadline_ns;
            }
            let ok = self.offered.get(&k).is_some_and(|v| v.contains(&m));
            assert!(ok, "released a payload that never arrived for {k:?}");
        }
        self.handed_out += n as u64;
        assert_eq!(self.rx.stats().released, self.handed_out);
        self.check_caps();
        n
    }

    /// Drain the events and check them.
    pub fn events(&mut self) {
        while let Some(e) = self.rx.poll_event() {
            match e {
                Event::Gap { count, first, .. } => {
                    assert!(count > 0, "an empty gap");
                    assert!(
                        count <= self.cfg.max_seq_jump.max(self.cfg.dedup_window),
                        "a gap of {count} from {first}: beyond any allowed jump"
                    );
                }
                Event::Lost { count, .. } => assert!(count > 0, "an empty lost range"),
                Event::EndOfSession { .. } | Event::NewSession { .. } => {}
            }
        }
    }

    /// `poll_report` at `now`.
    pub fn report(&mut self, now: u64) {
        if let Some(r) = self.rx.poll_report(now) {
            assert_eq!(r.node, self.node);
            assert_eq!(r.receivers, 1);
            assert!(r.samples > 0);
        }
    }

    /// Release everything still held and check the totals; returns the
    /// final counters.
    pub fn finish(mut self) -> jasper_core::receiver::ReceiverStats {
        self.events();
        self.release(u64::MAX);
        assert_eq!(self.rx.held(), 0, "messages left after the end of time");
        assert_eq!(self.rx.held_bytes(), 0, "bytes left after the end of time");
        let s = self.rx.stats();
        assert_eq!(s.accepted, s.released, "accepted messages not all released");
        assert!(s.late <= s.released && s.released_early <= s.released);
        s.clone()
    }
}

// ---------------------------------------------------------------- proxy

/// The forwarding table the proxy harness uses: node 1 under the publisher
/// (0), children 5, 6, 7.
pub fn proxy_table() -> ForwardingTable {
    ForwardingTable {
        node: 1,
        parent: Some(0),
        upstreams: [0].into(),
        report_children: vec![5, 6, 7],
        report_also: vec![],
        fanout: Fanout::Direct {
            children: vec![5, 6, 7],
        },
    }
}

/// The proxy state machine as a node drives it (read-only duplicate check,
/// then `handle_packet`). Asserts: a forwarded packet parsed with a
/// well-formed body before and after the rewrite, differs from what came
/// in only in path tag (= this node) and hop count (+1, below the limit);
/// a data copy (stream, session, seq) is never forwarded twice, and never
/// after `is_duplicate` said it was one; dropped packets are left
/// untouched; every packet is counted once; reduced reports stay within
/// the ceiling.
#[derive(Debug)]
pub struct ProxyCheck {
    core: ProxyCore,
    cfg: ProxyConfig,
    forwarded: BTreeSet<MsgKey>,
    consumed: u64,
}

impl ProxyCheck {
    /// A proxy with [`proxy_table`] and `cfg`.
    pub fn new(cfg: ProxyConfig) -> ProxyCheck {
        ProxyCheck {
            core: ProxyCore::new(proxy_table(), cfg),
            cfg,
            forwarded: BTreeSet::new(),
            consumed: 0,
        }
    }

    /// Feed one packet at `now`.
    pub fn packet(&mut self, now: u64, bytes: &[u8]) {
        let orig = bytes.to_vec();
        let dup = self.core.is_duplicate(bytes);
        let mut buf = orig.clone();
        let v = self.core.handle_packet(now, &mut buf);
        match v {
            Verdict::Forward { key } => {
                assert!(!dup, "forwarded a copy is_duplicate called a duplicate");
                let before = Repr::parse_bytes(&orig).expect("forwarded a malformed packet");
                let after = Repr::parse_bytes(&buf).expect("the rewrite broke the packet");
                let h = before.header;
                assert!(matches!(
                    h.kind,
                    Kind::Data | Kind::RetransmitData | Kind::Heartbeat | Kind::Control
                ));
                assert_eq!(key, h.seq);
                assert!(h.hops < self.cfg.max_hops);
                assert_eq!((after.header.path, after.header.hops), (1, h.hops + 1));
                assert_eq!(
                    covered(&orig),
                    covered(&buf),
                    "rewrote more than path and hops"
                );
                if matches!(h.kind, Kind::Data | Kind::RetransmitData) {
                    let k = (h.stream, h.session, h.seq);
                    assert!(self.forwarded.insert(k), "forwarded {k:?} twice");
                }
            }
            Verdict::Consumed | Verdict::Answer => {
                assert_eq!(buf, orig);
                let r = Repr::parse_bytes(&orig).expect("consumed a malformed packet");
                match r.body {
                    Body::Report(rep) => {
                        assert_eq!(v, Verdict::Consumed);
                        assert!(proxy_table().report_children.contains(&rep.node));
                        self.consumed += 1;
                    }
                    Body::Request(_) => {
                        // Every answered packet is one this proxy forwarded.
                        let fwd = &self.forwarded;
                        self.core.answer(now, |b, _| {
                            let h = Repr::parse_bytes(b)
                                .expect("answered a malformed packet")
                                .header;
                            assert!(
                                fwd.contains(&(h.stream, h.session, h.seq)),
                                "answered a packet never forwarded"
                            );
                        });
                        while self.core.poll_upstream_request().is_some() {}
                    }
                    _ => panic!("consumed something that is neither a report nor a request"),
                }
            }
            Verdict::Dropped(_) => assert_eq!(buf, orig, "a dropped packet was rewritten"),
        }
        let s = self.core.stats();
        assert_eq!(s.reports_in, self.consumed);
        let dropped = s.dropped_malformed
            + s.dropped_hop_limit
            + s.dropped_stranger
            + s.dropped_unsupported
            + s.dropped_duplicate
            + s.dropped_seq_jump
            + s.dropped_stale_session;
        assert_eq!(
            s.forwarded + s.reports_in + s.retransmit_requests + dropped,
            s.packets_in,
            "every packet counted once"
        );
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &jasper_core::proxy::ProxyStats {
        self.core.stats()
    }

    /// `poll_report` at `now`.
    pub fn report(&mut self, now: u64) {
        if let Some((parent, rep)) = self.core.poll_report(now) {
            assert_eq!(parent, 0);
            assert_eq!(rep.node, 1);
            assert!(
                rep.owd_ns <= self.cfg.report_ceiling_ns,
                "report above the ceiling"
            );
        }
    }
}

// ---------------------------------------------------------------- reducer

/// The report reducer against a model: the reduced estimate is the max of
/// the fresh children's (clamped) estimates, clock bounds likewise, counts
/// summed without overflow; strangers change nothing; clamps are counted.
#[derive(Debug)]
pub struct ReducerCheck {
    reducer: Reducer,
    children: Vec<NodeId>,
    stale_after_ns: u64,
    ceiling_ns: u64,
    model: BTreeMap<NodeId, (DelayReport, u64)>,
    clamped: BTreeMap<NodeId, u64>,
}

impl ReducerCheck {
    /// Reducer over `children` (distinct ids, as a plan gives).
    pub fn new(children: &[NodeId], stale_after_ns: u64, ceiling_ns: u64) -> ReducerCheck {
        ReducerCheck {
            reducer: Reducer::new(children, stale_after_ns, ceiling_ns),
            children: children.to_vec(),
            stale_after_ns,
            ceiling_ns,
            model: BTreeMap::new(),
            clamped: BTreeMap::new(),
        }
    }

    /// A report from `from` at `now`.
    pub fn report(&mut self, now: u64, from: NodeId, rep: DelayReport) {
        let ok = self.reducer.handle_report(now, from, rep);
        assert_eq!(ok, self.children.contains(&from));
        if ok {
            let mut r = rep;
            if r.owd_ns > self.ceiling_ns {
                r.owd_ns = self.ceiling_ns;
                *self.clamped.entry(from).or_insert(0) += 1;
            }
            self.model.insert(from, (r, now));
        }
        for f in self.reducer.flags() {
            assert_eq!(
                f.clamped,
                self.clamped.get(&f.child).copied().unwrap_or(0),
                "clamp counter of child {}",
                f.child
            );
        }
    }

    /// Reduce at `now` and compare with the model.
    pub fn reduce(&mut self, now: u64) {
        let got = self.reducer.reduce(now, 1);
        let mut want: Option<DelayReport> = None;
        let mut fresh = 0;
        for c in &self.children {
            let Some((r, at)) = self.model.get(c) else {
                continue;
            };
            if now.saturating_sub(*at) > self.stale_after_ns {
                continue;
            }
            fresh += 1;
            if r.samples == 0 {
                continue;
            }
            let w = want.get_or_insert(DelayReport {
                node: 1,
                receivers: 0,
                owd_ns: 0,
                clock_bound_ns: 0,
                samples: 0,
            });
            w.owd_ns = w.owd_ns.max(r.owd_ns);
            w.clock_bound_ns = w.clock_bound_ns.max(r.clock_bound_ns);
            w.receivers = w.receivers.saturating_add(r.receivers);
            w.samples = w.samples.saturating_add(r.samples);
        }
        assert_eq!(got, want);
        assert_eq!(self.reducer.fresh(now), fresh);
        if let Some(g) = got {
            assert!(g.owd_ns <= self.ceiling_ns);
            assert_eq!(g.node, 1);
        }
    }
}
