//! Feed tags already checked: the covered bytes of recent publisher packets
//! whose feed tag verified, and the key that verified each.
//!
//! A receiver checks a keyed-BLAKE3 feed tag over every packet it admits
//! (about 1 µs for a full 1.4 KB packet here; hedged copies of a packet it
//! already accepted are dropped before, by the duplicate check). When a
//! process hosts several MPs (`jasper local`, a receiver host serving a
//! group), the same packet reaches each of them. A tag check is a function
//! of the key and the covered bytes alone, so a copy whose covered bytes
//! (header with the proxy-rewritten bytes zeroed, body, feed tag) equal
//! those of a packet that verified under the same key verifies too:
//! comparing 1.4 KB costs tens of ns. Nothing is ever accepted
//! that a full check would refuse; a miss falls through to the full check.
//!
//! Memory is fixed: [`FeedMemo::SLOTS`] entries of at most one packet each,
//! chosen by sequence number (a receive burst of one receiver, then the same
//! burst at the next, must all still be there). Everything kept is bytes the
//! feed carried in the clear.

use std::sync::{Arc, Mutex};

use crate::wire::{Packet, HEADER_LEN};

/// A memo shared by the receivers of one process (a [`crate::guard::Guard`]
/// per receiver holds a handle). The lock is taken once per publisher packet
/// and never contended across threads in practice: one thread drives a
/// group's receivers.
pub type SharedFeedMemo = Arc<Mutex<FeedMemo>>;

/// One remembered packet. No `Debug`: it holds the feed key.
#[derive(Default, Clone)]
struct Entry {
    key: [u8; 32],
    /// Covered header, then the body and feed tag as they arrived.
    bytes: Vec<u8>,
}

impl Entry {
    fn matches(&self, key: &[u8; 32], header: &[u8; HEADER_LEN], rest: &[u8]) -> bool {
        self.bytes.len() == HEADER_LEN + rest.len()
            && self.bytes[..HEADER_LEN] == header[..]
            && self.bytes[HEADER_LEN..] == *rest
            && self.key == *key
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct FeedMemo {
    /// Entry `seq % SLOTS` (bytes allocated on first use).
    entries: Vec<Entry>,
}

impl std::fmt::Debug for FeedMemo {
    // The entries hold the feed key: only counts are printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.entries.iter().filter(|e| !e.bytes.is_empty()).count();
        f.debug_struct("FeedMemo")
            .field("remembered", &used)
            .finish()
    }
}

impl Default for FeedMemo {
    fn default() -> FeedMemo {
        FeedMemo {
            entries: vec![Entry::default(); Self::SLOTS],
        }
    }
}

impl FeedMemo {
    /// Packets remembered: more than a receive burst, so that the next
    /// receiver of a group, reading the same burst, finds every packet.
    pub const SLOTS: usize = 256;

    /// An empty memo.
    pub fn new() -> FeedMemo {
        FeedMemo::default()
    }

    fn slot(header: &[u8; HEADER_LEN]) -> usize {
        (Packet::new_unchecked(&header[..]).seq() % Self::SLOTS as u64) as usize
    }

    /// An empty memo to share.
    pub fn shared() -> SharedFeedMemo {
        Arc::new(Mutex::new(FeedMemo::new()))
    }

    /// True when these covered bytes verified under `key` before. `header`
    /// is the covered header; `rest` the body and feed tag.
    pub(crate) fn seen(&self, key: &[u8; 32], header: &[u8; HEADER_LEN], rest: &[u8]) -> bool {
        self.entries[Self::slot(header)].matches(key, header, rest)
    }

    /// Remember covered bytes that verified under `key`.
    pub(crate) fn remember(&mut self, key: &[u8; 32], header: &[u8; HEADER_LEN], rest: &[u8]) {
        let e = &mut self.entries[Self::slot(header)];
        e.key = *key;
        e.bytes.clear();
        e.bytes.extend_from_slice(header);
        e.bytes.extend_from_slice(rest);
    }
}
