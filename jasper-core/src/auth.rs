//! Packet authentication: keys, tags, and the key file format.
//!
//! Layout and rationale: `docs/PROTOCOL.md` ("Authentication") and
//! `docs/SECURITY.md`. In short, three kinds of key exist, and each node
//! holds only the ones its role needs:
//!
//! | key | held by | authenticates |
//! |---|---|---|
//! | `tree` | publisher, proxies | the *tree tag* of every publisher packet: SipHash-2-4-128 over the header (path and hop count zeroed) and the feed tag — what a proxy checks before any state changes |
//! | `feed` | publisher, receivers | the *feed tag*: keyed BLAKE3 over the whole packet (header with path and hop count zeroed, body) — what a receiver checks |
//! | `nodes` (master) | publisher, proxies | derives one *node key* per plan id: keyed BLAKE3 tags on delay reports and retransmit requests a node sends upstream |
//! | `node` | that node only (receivers get just theirs) | its own reports and requests |
//!
//! A receiver therefore holds nothing that makes a proxy accept anything, and
//! its node key speaks only for its own id. Publisher packets carry a 32-byte
//! trailer `feed tag ‖ tree tag`; node packets a 16-byte trailer. The header's
//! key-id byte selects one of up to two key sets, so keys roll over without a
//! gap: nodes accept both sets while the publisher moves to the new one.
//!
//! Tags cover every header field but the path tag and hop count (which each
//! proxy rewrites in place, once per packet, so copies stay zero-copy);
//! changing those two can only distort path statistics, never state.
//!
//! Nothing here reads a clock or a random source: key generation takes its
//! random bytes from the caller.

use std::fmt;

use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::feed_memo::FeedMemo;
use crate::plan::NodeId;
use crate::wire::{self, flags, Kind, HEADER_LEN};

/// Bytes of one tag.
pub const TAG_LEN: usize = 16;
/// Trailer of publisher packets (data, heartbeat, control, retransmit data):
/// feed tag then tree tag.
pub const PUBLISHER_TRAILER: usize = 2 * TAG_LEN;
/// Trailer of node packets (delay reports, retransmit requests).
pub const NODE_TRAILER: usize = TAG_LEN;

const NODE_KEY_CONTEXT: &str = "jasper-rs 2026-11 node key v1";

/// Header bytes excluded from tags (path tag and hop count, rewritten by proxies).
const MUTABLE: core::ops::Range<usize> = 26..29;

/// A 32-byte secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<secret>)")
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut k = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut k).map_err(|e| {
            serde::de::Error::custom(format!("a key is 64 hex digits (32 bytes): {e}"))
        })?;
        Ok(Key(k))
    }
}

/// Which packets a node kind may send and which tags they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// Publisher packets: feed tag + tree tag.
    Publisher,
    /// Node packets: node tag.
    Node,
}

impl TagKind {
    /// The tag scheme of a packet kind.
    pub fn of(kind: Kind) -> TagKind {
        match kind {
            Kind::Data | Kind::RetransmitData | Kind::Heartbeat | Kind::Control => {
                TagKind::Publisher
            }
            Kind::DelayReport | Kind::RetransmitRequest => TagKind::Node,
        }
    }
    /// Trailer length.
    pub fn trailer(self) -> usize {
        match self {
            TagKind::Publisher => PUBLISHER_TRAILER,
            TagKind::Node => NODE_TRAILER,
        }
    }
}

/// One key set as stored in a key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetFile {
    /// Key id carried in every packet (1..=255).
    pub id: u8,
    /// Tree key (publisher and proxies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Key>,
    /// Feed key (publisher and receivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<Key>,
    /// Master of the per-node keys (publisher and proxies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Key>,
    /// This node's own key (derived from `nodes`; receivers get only this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Key>,
    /// A hedged MP's second endpoint's key (it reports for both ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<Key>,
}

/// A node's key file (TOML, kept out of the shareable node config, mode 0600).
///
/// ```toml
/// node = 7            # the plan id these keys belong to
/// active = 1          # key set used to tag what this node sends
/// [[keyset]]
/// id = 1
/// feed = "…64 hex digits…"
/// node = "…"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Plan id of the node.
    pub node: NodeId,
    /// Plan id of a hedged MP's second endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_node: Option<NodeId>,
    /// Key id used for sending.
    pub active: u8,
    /// One or two key sets (two during a roll-over).
    pub keyset: Vec<KeySetFile>,
}

/// A key-file problem, phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key file: {problem} — {fix}")]
pub struct KeyError {
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

fn key_err<T>(problem: impl Into<String>, fix: impl Into<String>) -> Result<T, KeyError> {
    Err(KeyError {
        problem: problem.into(),
        fix: fix.into(),
    })
}

/// The per-node key of `node`, derived from the `nodes` master key.
pub fn node_key(master: &Key, node: NodeId) -> Key {
    let mut material = [0u8; 36];
    material[..32].copy_from_slice(&master.0);
    material[32..].copy_from_slice(&node.to_be_bytes());
    Key(blake3::derive_key(NODE_KEY_CONTEXT, &material))
}

/// What a node's role needs from the deployment's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Publisher: tree, feed, nodes.
    Sender,
    /// Proxy: tree, nodes (and its own node key).
    Proxy,
    /// Receiver: feed and its own node key only.
    Receiver,
}

/// The deployment's master keys for one key id (`jasper keys` makes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeys {
    /// Key id.
    pub id: u8,
    /// Tree key.
    pub tree: Key,
    /// Feed key.
    pub feed: Key,
    /// Node master key.
    pub nodes: Key,
}

impl MasterKeys {
    /// Keys from 96 random bytes supplied by the caller (the CLI reads the
    /// operating system's random source).
    pub fn from_random(id: u8, random: &[u8; 96]) -> MasterKeys {
        let k = |i: usize| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&random[i * 32..(i + 1) * 32]);
            Key(a)
        };
        MasterKeys {
            id,
            tree: k(0),
            feed: k(1),
            nodes: k(2),
        }
    }

    /// The slice of these keys that `role` may hold, for node `node`.
    pub fn for_node(&self, role: KeyRole, node: NodeId) -> KeySetFile {
        self.for_endpoints(role, node, None)
    }

    /// Like [`MasterKeys::for_node`], for an MP with a second endpoint.
    pub fn for_endpoints(&self, role: KeyRole, node: NodeId, hedge: Option<NodeId>) -> KeySetFile {
        let own = Some(node_key(&self.nodes, node));
        let hedge = hedge.map(|h| node_key(&self.nodes, h));
        match role {
            KeyRole::Sender => KeySetFile {
                id: self.id,
                tree: Some(self.tree.clone()),
                feed: Some(self.feed.clone()),
                nodes: Some(self.nodes.clone()),
                node: own,
                hedge: None,
            },
            KeyRole::Proxy => KeySetFile {
                id: self.id,
                tree: Some(self.tree.clone()),
                feed: None,
                nodes: Some(self.nodes.clone()),
                node: own,
                hedge: None,
            },
            KeyRole::Receiver => KeySetFile {
                id: self.id,
                tree: None,
                feed: Some(self.feed.clone()),
                nodes: None,
                node: own,
                hedge,
            },
        }
    }

    /// A node's whole key file for this key set alone.
    pub fn key_file(&self, role: KeyRole, node: NodeId, hedge: Option<NodeId>) -> KeyFile {
        KeyFile {
            node,
            hedge_node: hedge,
            active: self.id,
            keyset: vec![self.for_endpoints(role, node, hedge)],
        }
    }
}

impl KeyFile {
    /// The master keys behind a publisher's key file (it holds the tree,
    /// feed and node-master keys of every set): what re-planning needs to
    /// give new or renumbered nodes keys that the running ones accept.
    /// `None` when a set lacks one of them (not a publisher's file).
    pub fn masters(&self) -> Option<Vec<MasterKeys>> {
        self.keyset
            .iter()
            .map(|s| {
                Some(MasterKeys {
                    id: s.id,
                    tree: s.tree.clone()?,
                    feed: s.feed.clone()?,
                    nodes: s.nodes.clone()?,
                })
            })
            .collect()
    }

    /// Parse and check a key file's text for node `node` in `role`.
    pub fn parse(text: &str, node: NodeId, role: KeyRole) -> Result<KeyFile, KeyError> {
        let kf: KeyFile = match toml::from_str(text) {
            Ok(k) => k,
            Err(e) => {
                return key_err(
                    format!("not a valid key file: {}", e.message()),
                    "regenerate it with `jasper keys`",
                )
            }
        };
        kf.check(node, role)?;
        Ok(kf)
    }

    /// Check ids and that the keys `role` needs are present.
    pub fn check(&self, node: NodeId, role: KeyRole) -> Result<(), KeyError> {
        if self.node != node {
            return key_err(
                format!(
                    "these keys belong to node {}, not to node {node}",
                    self.node
                ),
                "install the key file `jasper keys` wrote for this node",
            );
        }
        if self.keyset.is_empty() || self.keyset.len() > 2 {
            return key_err(
                format!(
                    "{} key sets (one, or two during a roll-over)",
                    self.keyset.len()
                ),
                "keep the current set and at most the next one",
            );
        }
        if self.keyset.iter().any(|k| k.id == 0) {
            return key_err(
                "key id 0 is reserved for unauthenticated packets",
                "use ids 1..=255",
            );
        }
        if self.keyset.len() == 2 && self.keyset[0].id == self.keyset[1].id {
            return key_err("two key sets with the same id", "give the new set a new id");
        }
        if !self.keyset.iter().any(|k| k.id == self.active) {
            return key_err(
                format!("active = {} names no key set in the file", self.active),
                "set `active` to the id of one of the [[keyset]] entries",
            );
        }
        for k in &self.keyset {
            let need: &[(&str, bool)] = match role {
                KeyRole::Sender => &[
                    ("tree", k.tree.is_some()),
                    ("feed", k.feed.is_some()),
                    ("nodes", k.nodes.is_some()),
                ],
                KeyRole::Proxy => &[("tree", k.tree.is_some()), ("nodes", k.nodes.is_some())],
                KeyRole::Receiver => &[("feed", k.feed.is_some()), ("node", k.node.is_some())],
            };
            if let Some((name, _)) = need.iter().find(|(_, ok)| !ok) {
                return key_err(
                    format!("key set {} lacks the `{name}` key a {role:?} needs", k.id),
                    "regenerate this node's key file with `jasper keys`",
                );
            }
            if role == KeyRole::Receiver && (k.tree.is_some() || k.nodes.is_some()) {
                return key_err(
                    format!("key set {} gives a receiver the tree or nodes key", k.id),
                    "receivers must hold only `feed` and their own `node` key: regenerate with `jasper keys`",
                );
            }
        }
        Ok(())
    }

    /// TOML text (with a warning header).
    pub fn to_toml(&self) -> String {
        format!(
            "# Jasper-rs keys for node {}. SECRET: mode 0600, readable only by the service user.\n{}",
            self.node,
            toml::to_string(self).unwrap_or_default()
        )
    }
}

/// Why a tag check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    /// No AUTH flag / no trailer of the right size.
    Missing,
    /// The key id names no key set this node holds.
    UnknownKey,
    /// This node holds no key for that tag (e.g. a receiver asked to check a tree tag).
    NoKey,
    /// The tag does not match.
    Mismatch,
}

impl TagError {
    /// Stable counter name.
    pub fn reason(self) -> &'static str {
        match self {
            TagError::Missing => "unauthenticated",
            TagError::UnknownKey => "unknown_key_id",
            TagError::NoKey => "no_key_for_tag",
            TagError::Mismatch => "bad_tag",
        }
    }
}

#[derive(Debug, Clone)]
struct SetKeys {
    id: u8,
    tree: Option<(u64, u64)>,
    feed: Option<blake3::Hasher>,
    /// The feed key itself: what a [`FeedMemo`] entry is checked against
    /// (a [`Key`]: `Debug` never prints it).
    feed_key: Option<Key>,
    nodes: Option<Key>,
    /// Keys this node sends node packets with, by the id they speak for.
    own: Vec<(NodeId, blake3::Hasher)>,
}

/// One node's derived key, kept between its packets by
/// [`Auth::verify_node_cached`] (for the key set id and node it was
/// derived for).
#[derive(Debug, Clone, Default)]
pub struct NodeKeyCache(Option<(u8, NodeId, blake3::Hasher)>);

/// A node's loaded keys, ready to tag and check packets.
#[derive(Debug, Clone)]
pub struct Auth {
    node: NodeId,
    active: u8,
    sets: Vec<SetKeys>,
}

fn sip_key(k: &Key) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&k.0[0..8]);
    b.copy_from_slice(&k.0[8..16]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// The header with the mutable bytes zeroed.
#[inline]
fn covered_header(bytes: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    h[MUTABLE].fill(0);
    h
}

#[inline]
fn tree_tag(key: (u64, u64), header: &[u8; HEADER_LEN], feed_tag: &[u8]) -> [u8; TAG_LEN] {
    let mut s = SipHasher24::new_with_keys(key.0, key.1);
    std::hash::Hasher::write(&mut s, header);
    std::hash::Hasher::write(&mut s, feed_tag);
    s.finish128().as_bytes()
}

#[inline]
fn blake_tag(keyed: &blake3::Hasher, header: &[u8; HEADER_LEN], body: &[u8]) -> [u8; TAG_LEN] {
    let mut h = keyed.clone();
    h.update(header);
    h.update(body);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// Constant-time comparison of two tags.
#[inline]
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the trailer sits in a packet and its key id, or why it does not.
fn trailer(bytes: &[u8], want: TagKind) -> Result<(u8, usize), TagError> {
    let p = wire::Packet::new_checked(bytes).map_err(|_| TagError::Missing)?;
    if p.flags() & flags::AUTH == 0 || p.auth_len() != want.trailer() {
        return Err(TagError::Missing);
    }
    Ok((p.key_id(), bytes.len() - want.trailer()))
}

impl Auth {
    /// Load a checked key file.
    pub fn new(file: &KeyFile) -> Auth {
        let sets = file
            .keyset
            .iter()
            .map(|k| {
                let own_key = k
                    .node
                    .clone()
                    .or_else(|| k.nodes.as_ref().map(|m| node_key(m, file.node)));
                let mut own: Vec<(NodeId, blake3::Hasher)> = own_key
                    .map(|n| (file.node, blake3::Hasher::new_keyed(&n.0)))
                    .into_iter()
                    .collect();
                if let (Some(h), Some(key)) = (file.hedge_node, &k.hedge) {
                    own.push((h, blake3::Hasher::new_keyed(&key.0)));
                }
                SetKeys {
                    id: k.id,
                    tree: k.tree.as_ref().map(sip_key),
                    feed: k.feed.as_ref().map(|f| blake3::Hasher::new_keyed(&f.0)),
                    feed_key: k.feed.clone(),
                    nodes: k.nodes.clone(),
                    own,
                }
            })
            .collect();
        Auth {
            node: file.node,
            active: file.active,
            sets,
        }
    }

    /// Node these keys belong to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Key id used for sending.
    pub fn active(&self) -> u8 {
        self.active
    }

    fn set(&self, id: u8) -> Option<&SetKeys> {
        self.sets.iter().find(|s| s.id == id)
    }

    fn prepare(
        buf: &mut [u8],
        len: usize,
        kind: TagKind,
        id: u8,
    ) -> Result<usize, wire::WireError> {
        let total = len + kind.trailer();
        if buf.len() < total || len < HEADER_LEN {
            return Err(wire::WireError::BufferTooSmall {
                have: buf.len(),
                need: total,
            });
        }
        let mut p = wire::Packet::new_unchecked(&mut buf[..total]);
        p.set_flags(p.flags() | flags::AUTH);
        p.set_auth(kind.trailer() as u8, id);
        Ok(total)
    }

    /// Tag a publisher packet emitted in `buf[..len]` (without a trailer);
    /// `buf` must have room for [`PUBLISHER_TRAILER`] more bytes. Returns the
    /// new length.
    pub fn seal_publisher(&self, buf: &mut [u8], len: usize) -> Result<usize, wire::WireError> {
        let set = self
            .set(self.active)
            .ok_or(wire::WireError::BadAuthLen(0))?;
        let (Some(tree), Some(feed)) = (set.tree, set.feed.as_ref()) else {
            return Err(wire::WireError::BadAuthLen(0));
        };
        let total = Self::prepare(buf, len, TagKind::Publisher, self.active)?;
        let header = covered_header(buf);
        let ft = blake_tag(feed, &header, &buf[HEADER_LEN..len]);
        let tt = tree_tag(tree, &header, &ft);
        buf[len..len + TAG_LEN].copy_from_slice(&ft);
        buf[len + TAG_LEN..total].copy_from_slice(&tt);
        Ok(total)
    }

    /// Tag a node packet (delay report, retransmit request) this node sends
    /// as node `from` (its own id, or its second endpoint's).
    pub fn seal_node(
        &self,
        buf: &mut [u8],
        len: usize,
        from: NodeId,
    ) -> Result<usize, wire::WireError> {
        let set = self
            .set(self.active)
            .ok_or(wire::WireError::BadAuthLen(0))?;
        let Some((_, node)) = set.own.iter().find(|(id, _)| *id == from) else {
            return Err(wire::WireError::BadAuthLen(0));
        };
        let total = Self::prepare(buf, len, TagKind::Node, self.active)?;
        let header = covered_header(buf);
        let t = blake_tag(node, &header, &buf[HEADER_LEN..len]);
        buf[len..total].copy_from_slice(&t);
        Ok(total)
    }

    /// Check the tree tag of a publisher packet (what proxies do).
    pub fn verify_tree(&self, bytes: &[u8]) -> Result<(), TagError> {
        let (id, at) = trailer(bytes, TagKind::Publisher)?;
        let set = self.set(id).ok_or(TagError::UnknownKey)?;
        let tree = set.tree.ok_or(TagError::NoKey)?;
        let header = covered_header(bytes);
        let want = tree_tag(tree, &header, &bytes[at..at + TAG_LEN]);
        if tags_equal(&want, &bytes[at + TAG_LEN..]) {
            Ok(())
        } else {
            Err(TagError::Mismatch)
        }
    }

    /// Check the feed tag of a publisher packet (what receivers do).
    pub fn verify_feed(&self, bytes: &[u8]) -> Result<(), TagError> {
        self.feed_check(bytes, None).map(|_| ())
    }

    /// [`Auth::verify_feed`], answered from `memo` when these covered
    /// bytes verified under the same key before (then `Ok(true)`); a packet
    /// that verifies in full is remembered.
    pub fn verify_feed_memo(&self, bytes: &[u8], memo: &mut FeedMemo) -> Result<bool, TagError> {
        self.feed_check(bytes, Some(memo))
    }

    fn feed_check(&self, bytes: &[u8], memo: Option<&mut FeedMemo>) -> Result<bool, TagError> {
        let (id, at) = trailer(bytes, TagKind::Publisher)?;
        let set = self.set(id).ok_or(TagError::UnknownKey)?;
        let (Some(feed), Some(key)) = (set.feed.as_ref(), set.feed_key.as_ref()) else {
            return Err(TagError::NoKey);
        };
        let header = covered_header(bytes);
        let covered = &bytes[HEADER_LEN..at + TAG_LEN];
        if let Some(m) = memo.as_deref() {
            if m.seen(&key.0, &header, covered) {
                return Ok(true);
            }
        }
        let want = blake_tag(feed, &header, &bytes[HEADER_LEN..at]);
        if !tags_equal(&want, &bytes[at..at + TAG_LEN]) {
            return Err(TagError::Mismatch);
        }
        if let Some(m) = memo {
            m.remember(&key.0, &header, covered);
        }
        Ok(false)
    }

    /// Check a node packet claimed to come from `from` (its key is derived
    /// from the `nodes` master; only publishers and proxies can do this).
    pub fn verify_node(&self, bytes: &[u8], from: NodeId) -> Result<(), TagError> {
        self.verify_node_cached(bytes, from, &mut NodeKeyCache::default())
    }

    /// [`Auth::verify_node`] keeping `from`'s derived key in `cache` (one
    /// per sender the caller knows, e.g. per child): the derivation is
    /// done once per key set, not once per packet.
    pub fn verify_node_cached(
        &self,
        bytes: &[u8],
        from: NodeId,
        cache: &mut NodeKeyCache,
    ) -> Result<(), TagError> {
        let (id, at) = trailer(bytes, TagKind::Node)?;
        let set = self.set(id).ok_or(TagError::UnknownKey)?;
        let master = set.nodes.as_ref().ok_or(TagError::NoKey)?;
        let key = match &mut cache.0 {
            Some((i, n, k)) if *i == id && *n == from => k,
            slot => {
                &slot
                    .insert((
                        id,
                        from,
                        blake3::Hasher::new_keyed(&node_key(master, from).0),
                    ))
                    .2
            }
        };
        let header = covered_header(bytes);
        let want = blake_tag(key, &header, &bytes[HEADER_LEN..at]);
        if tags_equal(&want, &bytes[at..]) {
            Ok(())
        } else {
            Err(TagError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_report, DataBuilder, DelayReport, Header, Repr};

    fn masters(id: u8, seed: u8) -> MasterKeys {
        let mut r = [0u8; 96];
        for (i, b) in r.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        MasterKeys::from_random(id, &r)
    }

    fn auth(m: &MasterKeys, role: KeyRole, node: NodeId) -> Auth {
        let f = m.key_file(role, node, None);
        f.check(node, role).unwrap();
        Auth::new(&f)
    }

    fn data_packet(sender: &Auth) -> Vec<u8> {
        data_packet_seq(sender, 42)
    }

    fn data_packet_seq(sender: &Auth, seq: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut b = DataBuilder::new(&mut buf, 400).unwrap();
        b.push(b"hello").unwrap();
        let mut h = Header::new(Kind::Data);
        h.seq = seq;
        h.deadline_ns = 1_000;
        let n = b.finish(&h);
        let n = sender.seal_publisher(&mut buf, n).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn publisher_tags_verify_for_their_holders_only() {
        let m = masters(1, 1);
        let sender = auth(&m, KeyRole::Sender, 0);
        let proxy = auth(&m, KeyRole::Proxy, 1);
        let rx = auth(&m, KeyRole::Receiver, 9);
        let p = data_packet(&sender);
        assert!(Repr::parse_bytes(&p).is_ok());
        assert_eq!(proxy.verify_tree(&p), Ok(()));
        assert_eq!(rx.verify_feed(&p), Ok(()));
        // A receiver cannot check (or make) tree tags; a proxy has no feed key.
        assert_eq!(rx.verify_tree(&p), Err(TagError::NoKey));
        assert_eq!(proxy.verify_feed(&p), Err(TagError::NoKey));
        assert!(rx.seal_publisher(&mut [0u8; 256], 60).is_err());
    }

    #[test]
    fn path_and_hops_may_change_nothing_else_may() {
        let m = masters(1, 2);
        let sender = auth(&m, KeyRole::Sender, 0);
        let proxy = auth(&m, KeyRole::Proxy, 1);
        let rx = auth(&m, KeyRole::Receiver, 9);
        let p = data_packet(&sender);
        let mut q = p.clone();
        let mut v = wire::Packet::new_checked(&mut q[..]).unwrap();
        v.set_path(77);
        v.set_hops(3);
        assert_eq!(proxy.verify_tree(&q), Ok(()));
        assert_eq!(rx.verify_feed(&q), Ok(()));
        for i in 0..p.len() {
            if MUTABLE.contains(&i) {
                continue;
            }
            let mut t = p.clone();
            t[i] ^= 0x01;
            let tree = proxy.verify_tree(&t);
            let feed = rx.verify_feed(&t);
            if i < p.len() - TAG_LEN {
                assert!(feed.is_err(), "feed tag missed a flip at byte {i}");
            }
            if i < HEADER_LEN || i >= p.len() - PUBLISHER_TRAILER {
                assert!(tree.is_err(), "tree tag missed a flip at byte {i}");
            }
        }
        // Truncated or stripped.
        assert!(proxy.verify_tree(&p[..p.len() - 1]).is_err());
        assert_eq!(rx.verify_feed(&p[..p.len() - 32]), Err(TagError::Missing));
    }

    #[test]
    fn a_remembered_feed_tag_accepts_only_the_same_bytes_under_the_same_key() {
        let m = masters(1, 7);
        let sender = auth(&m, KeyRole::Sender, 0);
        let (rx, rx2) = (
            auth(&m, KeyRole::Receiver, 9),
            auth(&m, KeyRole::Receiver, 10),
        );
        let mut memo = FeedMemo::new();
        let p = data_packet(&sender);
        assert_eq!(rx.verify_feed_memo(&p, &mut memo), Ok(false));
        // Another receiver with the same feed key, and a copy whose path and
        // hop count a proxy rewrote: answered from the memo.
        assert_eq!(rx2.verify_feed_memo(&p, &mut memo), Ok(true));
        let mut q = p.clone();
        let mut v = wire::Packet::new_checked(&mut q[..]).unwrap();
        v.set_path(5);
        v.set_hops(2);
        assert_eq!(rx.verify_feed_memo(&q, &mut memo), Ok(true));
        // Any other byte flipped (the tree tag aside, which receivers do not
        // check) misses the memo and fails the full check.
        for i in (0..p.len() - TAG_LEN).filter(|i| !MUTABLE.contains(i)) {
            let mut t = p.clone();
            t[i] ^= 0x01;
            assert!(
                rx.verify_feed_memo(&t, &mut memo).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        assert_eq!(rx.verify_feed_memo(&p, &mut memo), Ok(true));
        // A receiver of another deployment (another feed key, same key id)
        // sharing the memo is not answered from it.
        let stranger = auth(&masters(1, 8), KeyRole::Receiver, 9);
        assert_eq!(
            stranger.verify_feed_memo(&p, &mut memo),
            Err(TagError::Mismatch)
        );
        // A truncated copy (a prefix of remembered bytes) is no match.
        assert!(rx.verify_feed_memo(&p[..p.len() - 1], &mut memo).is_err());
        // Fixed memory: once another packet took its slot, the first is
        // checked in full again.
        let o = data_packet_seq(&sender, 42 + FeedMemo::SLOTS as u64);
        assert_eq!(rx.verify_feed_memo(&o, &mut memo), Ok(false));
        assert_eq!(rx.verify_feed_memo(&p, &mut memo), Ok(false));
        // Neither prints the feed key it holds.
        let shown = format!("{rx:?} {memo:?}");
        assert!(!shown.contains(&format!("{:?}", m.feed.0)), "{shown}");
    }

    #[test]
    fn wrong_keys_and_rotation() {
        let old = masters(1, 3);
        let new = masters(2, 4);
        let other = masters(1, 5);
        let sender_old = auth(&old, KeyRole::Sender, 0);
        let p = data_packet(&sender_old);
        // Wrong deployment, same key id.
        assert_eq!(
            auth(&other, KeyRole::Proxy, 1).verify_tree(&p),
            Err(TagError::Mismatch)
        );
        // Unknown key id.
        assert_eq!(
            auth(&new, KeyRole::Proxy, 1).verify_tree(&p),
            Err(TagError::UnknownKey)
        );
        // During a roll-over a node holds both sets and accepts both.
        let both = KeyFile {
            node: 1,
            hedge_node: None,
            active: 2,
            keyset: vec![
                old.for_node(KeyRole::Proxy, 1),
                new.for_node(KeyRole::Proxy, 1),
            ],
        };
        both.check(1, KeyRole::Proxy).unwrap();
        let rolling = Auth::new(&both);
        assert_eq!(rolling.verify_tree(&p), Ok(()));
        assert_eq!(
            rolling.verify_tree(&data_packet(&auth(&new, KeyRole::Sender, 0))),
            Ok(())
        );
    }

    #[test]
    fn node_tags_speak_for_one_id() {
        let m = masters(1, 6);
        let rx = auth(&m, KeyRole::Receiver, 9);
        let proxy = auth(&m, KeyRole::Proxy, 1);
        let mut buf = [0u8; 128];
        let rep = DelayReport {
            node: 9,
            receivers: 1,
            owd_ns: 5,
            clock_bound_ns: 0,
            samples: 1,
        };
        let n = emit_report(&Header::new(Kind::DelayReport), &rep, &mut buf).unwrap();
        let n = rx.seal_node(&mut buf, n, 9).unwrap();
        assert!(
            rx.seal_node(&mut buf.clone(), n - 16, 10).is_err(),
            "speaks only for itself"
        );
        assert_eq!(proxy.verify_node(&buf[..n], 9), Ok(()));
        assert_eq!(proxy.verify_node(&buf[..n], 10), Err(TagError::Mismatch));
        // A receiver cannot check other nodes' tags.
        assert_eq!(rx.verify_node(&buf[..n], 9), Err(TagError::NoKey));
        // A cached key answers for the node and key set it was derived for
        // only: one cache moved between ids re-derives.
        let mut cache = NodeKeyCache::default();
        assert_eq!(proxy.verify_node_cached(&buf[..n], 9, &mut cache), Ok(()));
        assert_eq!(proxy.verify_node_cached(&buf[..n], 9, &mut cache), Ok(()));
        assert_eq!(
            proxy.verify_node_cached(&buf[..n], 10, &mut cache),
            Err(TagError::Mismatch)
        );
        assert_eq!(proxy.verify_node_cached(&buf[..n], 9, &mut cache), Ok(()));
        let mut tampered = buf;
        tampered[HEADER_LEN] ^= 1;
        assert_eq!(
            proxy.verify_node_cached(&tampered[..n], 9, &mut cache),
            Err(TagError::Mismatch)
        );
    }

    #[test]
    fn key_files_are_checked_for_the_role() {
        let m = masters(1, 7);
        let mut f = m.key_file(KeyRole::Receiver, 9, None);
        let text = f.to_toml();
        assert_eq!(KeyFile::parse(&text, 9, KeyRole::Receiver).unwrap(), f);
        assert!(KeyFile::parse(&text, 8, KeyRole::Receiver)
            .unwrap_err()
            .problem
            .contains("belong to node 9"));
        assert!(KeyFile::parse(&text, 9, KeyRole::Proxy)
            .unwrap_err()
            .problem
            .contains("`tree`"));
        f.keyset[0].tree = Some(m.tree.clone());
        assert!(
            f.check(9, KeyRole::Receiver).is_err(),
            "receivers never hold the tree key"
        );
        f.keyset[0].tree = None;
        f.active = 3;
        assert!(f.check(9, KeyRole::Receiver).is_err());
        assert!(KeyFile::parse(
            "node = 1\nactive = 1\n[[keyset]]\nid = 1\nfeed = \"zz\"",
            1,
            KeyRole::Receiver
        )
        .is_err());
        assert!(!format!("{:?}", m.tree).contains(&hex::encode(m.tree.0)));
    }
}
