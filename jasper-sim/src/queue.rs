//! The engine's pending events: a calendar queue (a timing wheel of small
//! heaps).
//!
//! Keys are `time << 64 | sequence`: unique, and never below the last key
//! popped (events are scheduled at or after the current time, and the
//! sequence only grows). Time is cut into slots of [`SLOT_NS`]; the
//! [`SLOTS`] slots from the current one on form a wheel of unsorted
//! vectors. Only the current slot is sorted (~150 events at N = 10,000,
//! in L1), once, when the wheel reaches it; the rare event scheduled into
//! it is inserted in order. Scheduling is an append, taking the next event
//! a pop from the end of that sorted slot, and the events popped next are
//! known (to prefetch their state). A binary heap of all 10⁵ pending events walked
//! ~17 levels of a megabyte-sized array per pop, and a radix heap spent
//! ~800 instructions per event moving events between its buckets.
//!
//! Events beyond the wheel wait unsorted too, in buckets one wheel wide
//! (a second, coarser level), moved onto the wheel when it reaches them:
//! a saturated direct-unicast sender schedules copies up to seconds ahead,
//! and an overflow heap of 10⁶ of them was a third of those runs' time.

use std::collections::BTreeMap;

/// Width of a wheel slot: 512 ns.
const SLOT_SHIFT: u32 = 9;
/// Slot width, ns.
#[cfg(test)]
const SLOT_NS: u64 = 1 << SLOT_SHIFT;
/// Slots in the wheel (4.2 ms ahead of the current slot).
const SLOTS: usize = 8192;
const WORDS: usize = SLOTS / 64;
/// Emptied slot buffers kept for reuse: one per slot (and then some), so
/// that a slot filling up takes a buffer instead of allocating one (a
/// saturated direct-unicast sender's overflow bucket, moved onto the
/// wheel, spreads ~2000 events over most of its 8192 slots: allocating and
/// freeing a buffer for each was a tenth of those runs).
const SPARES: usize = SLOTS + 64;
/// How far [`CalendarQueue::upcoming`] looks into the wheel: this many
/// words of its bitmap (64 slots, 32 µs each).
const UPCOMING_WORDS: usize = 4;
/// Largest buffer kept for reuse, in events: the spares hold at most
/// [`SPARES`] × this (a buffer per slot keeping its largest size would hold
/// many times the queue); a larger slot allocates, once per that many
/// events.
const SPARE_CAPACITY: usize = 256;

/// An event and its key `time << 64 | sequence`, held as two words (no
/// 16-byte alignment: 32 bytes with the engine's events, not 48).
struct Item<T> {
    time: u64,
    seq: u64,
    item: T,
}

impl<T> Item<T> {
    fn key(&self) -> u128 {
        (self.time as u128) << 64 | self.seq as u128
    }
}

fn slot_of(time: u64) -> u64 {
    time >> SLOT_SHIFT
}

/// A monotone priority queue of `(u128 key, T)`, smallest key first.
pub(crate) struct CalendarQueue<T> {
    /// Absolute slot (time >> SLOT_SHIFT) of the current slot.
    base: u64,
    /// The current slot's events, largest key first (popped from the end).
    current: Vec<Item<T>>,
    /// Absolute slots `base + 1 .. base + SLOTS`, at `slot % SLOTS`.
    wheel: Vec<Vec<Item<T>>>,
    /// Bit `i` set when `wheel[i]` is non-empty.
    nonempty: [u64; WORDS],
    /// Events beyond the wheel, by coarse slot (`slot / SLOTS`): each
    /// bucket's smallest slot and its events, unsorted.
    overflow: BTreeMap<u64, (u64, Vec<Item<T>>)>,
    /// Emptied slot buffers for slots about to fill (at most [`SPARES`],
    /// each of at most [`SPARE_CAPACITY`] events).
    spare: Vec<Vec<Item<T>>>,
    /// The last key popped.
    last: u128,
    len: usize,
}

impl<T> std::fmt::Debug for CalendarQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalendarQueue")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T> CalendarQueue<T> {
    pub(crate) fn new() -> Self {
        CalendarQueue {
            base: 0,
            current: Vec::new(),
            wheel: (0..SLOTS).map(|_| Vec::new()).collect(),
            nonempty: [0; WORDS],
            overflow: BTreeMap::new(),
            spare: Vec::new(),
            last: 0,
            len: 0,
        }
    }

    /// Queue `item` under `key`, which must not be below the last key popped.
    pub(crate) fn push(&mut self, key: u128, item: T) {
        assert!(key >= self.last, "a calendar queue's keys never go back");
        self.len += 1;
        self.place(Item {
            time: (key >> 64) as u64,
            seq: key as u64,
            item,
        });
    }

    /// Keep an emptied buffer for a slot about to fill.
    fn recycle(&mut self, b: Vec<Item<T>>) {
        debug_assert!(b.is_empty());
        if b.capacity() > 0 && b.capacity() <= SPARE_CAPACITY && self.spare.len() < SPARES {
            self.spare.push(b);
        }
    }

    fn place(&mut self, it: Item<T>) {
        let s = slot_of(it.time);
        if s <= self.base {
            // Keys never go back: rarely far from the end.
            let key = it.key();
            let at = self.current.partition_point(|x| x.key() > key);
            self.current.insert(at, it);
        } else if s - self.base < SLOTS as u64 {
            let i = (s % SLOTS as u64) as usize;
            let slot = &mut self.wheel[i];
            if slot.capacity() == 0 {
                if let Some(b) = self.spare.pop() {
                    *slot = b;
                }
            }
            slot.push(it);
            self.nonempty[i / 64] |= 1 << (i % 64);
        } else {
            let b = self
                .overflow
                .entry(s / SLOTS as u64)
                .or_insert_with(|| (s, self.spare.pop().unwrap_or_default()));
            b.0 = b.0.min(s);
            b.1.push(it);
        }
    }

    /// The first non-empty wheel slot after `base`, as an absolute slot.
    fn next_in_wheel(&self) -> Option<u64> {
        let start = ((self.base + 1) % SLOTS as u64) as usize;
        // Words from the one holding `start`, wrapping once around.
        for k in 0..=WORDS {
            let w = (start / 64 + k) % WORDS;
            let mut bits = self.nonempty[w];
            if k == 0 {
                bits &= !0u64 << (start % 64);
            } else if k == WORDS {
                bits &= !(!0u64 << (start % 64));
            }
            if bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                let ahead = (i + SLOTS - start) % SLOTS;
                return Some(self.base + 1 + ahead as u64);
            }
        }
        None
    }

    /// The item with the smallest key.
    pub(crate) fn pop(&mut self) -> Option<(u128, T)> {
        while self.current.is_empty() {
            // Move to the next slot holding anything, wheel or overflow.
            let wheel = self.next_in_wheel();
            let over = self.overflow.first_key_value().map(|(_, b)| b.0);
            let next = match (wheel, over) {
                (None, None) => return None,
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (Some(a), Some(b)) => a.min(b),
            };
            self.base = next;
            let i = (self.base % SLOTS as u64) as usize;
            let mut items = std::mem::take(&mut self.wheel[i]);
            self.nonempty[i / 64] &= !(1 << (i % 64));
            // The wheel now reaches further: take in the buckets it covers
            // whole (their slots lie in `base .. base + SLOTS`; none is
            // below `base`, as `next` is at most the first one's smallest).
            while let Some(e) = self.overflow.first_entry() {
                if e.key() * (SLOTS as u64) > self.base {
                    break;
                }
                let (_, mut bucket) = e.remove();
                for it in bucket.drain(..) {
                    if slot_of(it.time) <= self.base {
                        items.push(it);
                    } else {
                        self.place(it);
                    }
                }
                self.recycle(bucket);
            }
            items.sort_unstable_by_key(|it| std::cmp::Reverse(it.key()));
            let done = std::mem::replace(&mut self.current, items);
            self.recycle(done);
        }
        let it = self.current.pop()?;
        let key = it.key();
        self.last = key;
        self.len -= 1;
        Some((key, it.item))
    }

    /// The next items to pop (at most `n`; for prefetching their state):
    /// the current slot's in order, then those of the next non-empty wheel
    /// slots within [`UPCOMING_WORDS`] × 64 slots, in slot order (unsorted
    /// within a slot). A sparse wheel (direct unicast: ~0.4 events a slot)
    /// rarely holds the next events in the current slot.
    pub(crate) fn upcoming(&self, n: usize) -> impl Iterator<Item = &T> {
        let start = ((self.base + 1) % SLOTS as u64) as usize;
        let mut word = start / 64;
        let mut bits = self.nonempty[word] & (!0u64 << (start % 64));
        let mut words_left = UPCOMING_WORDS;
        let later = std::iter::from_fn(move || loop {
            if bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                return Some(i);
            }
            words_left -= 1;
            if words_left == 0 {
                return None;
            }
            word = (word + 1) % WORDS;
            bits = self.nonempty[word];
        });
        self.current
            .iter()
            .rev()
            .chain(later.flat_map(|i| self.wheel[i].iter()))
            .take(n)
            .map(|it| &it.item)
    }

    /// Items queued.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn upcoming_looks_past_the_current_slot() {
        let mut q = CalendarQueue::new();
        let key = |t: u64, s: u64| (t as u128) << 64 | s as u128;
        let t0 = 1_000 * SLOT_NS;
        // One event a slot, some slots apart, and one beyond the look-ahead.
        for (s, slot) in [0u64, 3, 70, 200, 300 * 64].into_iter().enumerate() {
            q.push(key(t0 + slot * SLOT_NS, s as u64), s);
        }
        assert_eq!(q.pop().map(|(_, v)| v), Some(0));
        assert_eq!(q.upcoming(10).copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(q.upcoming(2).copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(q.pop().map(|(_, v)| v), Some(1));
        assert_eq!(q.upcoming(10).copied().collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn pops_in_key_order_while_pushing_at_or_after_the_last() {
        let mut rng = jasper_core::model::rng(7);
        let mut q = CalendarQueue::new();
        let mut reference = std::collections::BinaryHeap::new();
        let (mut now, mut seq) = (1_700_000_000_000_000_000u64, 0u64);
        let key = |t: u64, s: u64| (t as u128) << 64 | s as u128;
        for _ in 0..100 {
            seq += 1;
            let k = key(now + rng.random_range(0..1_000_000), seq);
            q.push(k, seq);
            reference.push(std::cmp::Reverse((k, seq)));
        }
        let mut popped = 0;
        while let Some((k, v)) = q.pop() {
            let std::cmp::Reverse(want) = reference.pop().unwrap();
            assert_eq!((k, v), want);
            now = (k >> 64) as u64;
            popped += 1;
            // Schedule more: at the same instant, within a slot, within the
            // wheel, beyond it, and far beyond.
            if popped < 50_000 {
                for _ in 0..rng.random_range(0..3) {
                    seq += 1;
                    let t = match rng.random_range(0..5) {
                        0 => now,
                        1 => now + rng.random_range(0..SLOT_NS),
                        2 => now + rng.random_range(0..SLOT_NS * SLOTS as u64),
                        3 => now + rng.random_range(0..4 * SLOT_NS * SLOTS as u64),
                        _ => now + rng.random_range(0..u32::MAX as u64 * 100),
                    };
                    q.push(key(t, seq), seq);
                    reference.push(std::cmp::Reverse((key(t, seq), seq)));
                }
            }
        }
        assert!(reference.is_empty());
        assert_eq!(q.len(), 0);
        assert!(popped > 50_000, "{popped}");
    }
}
