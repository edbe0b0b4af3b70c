//! The retransmit buffer of one MoldUDP64 session: the messages it released
//! last, bounded in messages and in payload bytes, found by sequence number.
//!
//! Messages may be stored in any sequence order (a late or recovered message
//! is released after later ones): an index of `messages` slots, slot
//! `seq % messages`, points into a byte ring of `bytes`. A message is gone
//! once its slot is reused or its bytes are overwritten. Nothing is allocated
//! after the ring first fills.

/// One indexed message.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// MoldUDP64 sequence (0 = empty: MoldUDP64 numbers from 1).
    seq: u64,
    /// Absolute ring position of its first byte.
    at: u64,
    /// Its length.
    len: u16,
}

/// Released messages of one session, by sequence.
#[derive(Debug)]
pub(crate) struct Store {
    slots: Vec<Slot>,
    ring: Vec<u8>,
    cap: usize,
    /// Absolute position of the next byte written.
    head: u64,
}

impl Store {
    /// A buffer of `messages` messages and `bytes` payload bytes (the ring
    /// grows to `bytes` as it is written).
    pub(crate) fn new(messages: usize, bytes: usize) -> Self {
        Store {
            slots: vec![Slot::default(); messages.max(1)],
            ring: Vec::new(),
            cap: bytes.max(1),
            head: 0,
        }
    }

    /// Forget everything, keeping the memory (a new session reuses it).
    pub(crate) fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.head = 0;
    }

    /// Capacity in messages.
    pub(crate) fn messages(&self) -> usize {
        self.slots.len()
    }

    /// Keep message `seq`; false (not kept) when it is larger than the ring.
    pub(crate) fn push(&mut self, seq: u64, msg: &[u8]) -> bool {
        let len = msg.len();
        let Ok(len16) = u16::try_from(len) else {
            return false;
        };
        if len > self.cap || seq == 0 {
            return false;
        }
        // Messages never wrap: one that would is written at the ring's start.
        let mut p = (self.head % self.cap as u64) as usize;
        if p + len > self.cap {
            self.head += (self.cap - p) as u64;
            p = 0;
        }
        if self.ring.len() < p + len {
            self.ring.resize(p + len, 0);
        }
        self.ring[p..p + len].copy_from_slice(msg);
        let n = self.slots.len() as u64;
        self.slots[(seq % n) as usize] = Slot {
            seq,
            at: self.head,
            len: len16,
        };
        self.head += len as u64;
        true
    }

    /// Message `seq`, if still kept.
    pub(crate) fn get(&self, seq: u64) -> Option<&[u8]> {
        let s = self.slots[(seq % self.slots.len() as u64) as usize];
        // Intact while nothing was written over it: at most `cap` bytes since.
        if s.seq != seq || seq == 0 || s.at + (self.cap as u64) < self.head {
            return None;
        }
        let p = (s.at % self.cap as u64) as usize;
        self.ring.get(p..p + s.len as usize)
    }

    /// Message `seq` is kept.
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_messages_stored_out_of_order() {
        let mut s = Store::new(16, 1 << 16);
        for seq in [5u64, 9, 6, 7, 8] {
            assert!(s.push(seq, &[seq as u8; 3]));
        }
        for seq in 5..=9u64 {
            assert_eq!(s.get(seq), Some(&[seq as u8; 3][..]));
        }
        assert_eq!(s.get(4), None);
        assert_eq!(s.get(10), None);
        assert_eq!(s.get(0), None);
        // Slot 21 % 16 = 5: the newer message replaces the older.
        s.push(21, b"x");
        assert_eq!(s.get(5), None);
        assert_eq!(s.get(21), Some(&b"x"[..]));
        s.clear();
        assert_eq!(s.get(21), None);
    }

    #[test]
    fn bytes_bound_what_is_kept() {
        // 100 bytes: the ring keeps the newest messages that fit.
        let mut s = Store::new(1024, 100);
        for seq in 1..=30u64 {
            assert!(s.push(seq, &[seq as u8; 10]));
        }
        let kept: Vec<u64> = (1..=30).filter(|q| s.contains(*q)).collect();
        assert_eq!(kept, (21..=30).collect::<Vec<_>>());
        for q in 21..=30u64 {
            assert_eq!(s.get(q), Some(&[q as u8; 10][..]), "seq {q}");
        }
        // A message that would wrap starts again at the front, intact, and
        // what it overwrote is gone.
        assert!(s.push(31, &[31; 15]));
        assert!(s.push(32, &[32; 90]));
        assert_eq!(s.get(32), Some(&[32u8; 90][..]));
        assert_eq!(s.get(31), None);
        assert_eq!(s.get(30), None);
        assert!(!s.push(32, &[0; 101]), "larger than the ring");
        assert!(s.ring.len() <= 100);
    }
}
