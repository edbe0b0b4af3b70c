//! Which queued datagrams leave together as one UDP GSO super-packet.
//!
//! With `UDP_SEGMENT` the kernel takes one buffer (here: one `sendmmsg`
//! entry whose iovecs are the packets) and cuts it into datagrams of the
//! segment size, the last one possibly shorter, all to one destination. The
//! route, the socket's locks and most of the stack are paid once per
//! super-packet instead of once per datagram. A proxy forwarding a burst of
//! k packets to each of its children thus makes one entry per child
//! instead of k.
//!
//! [`Planner::plan`] groups the queued datagrams by destination (groups in
//! the order their destination first appears, datagrams of one destination
//! in their queued order) and cuts each group into batches the kernel
//! accepts: at most [`MAX_SEGMENTS`] datagrams and [`MAX_BYTES`] bytes, every
//! datagram as long as the first except the last, which may be shorter.
//! Pure logic: no sockets.

/// Datagrams per super-packet (the kernel's `UDP_MAX_SEGMENTS` since 5.x).
pub const MAX_SEGMENTS: usize = 64;
/// Bytes per super-packet: below the 65,507-byte UDP payload limit of IPv4.
pub const MAX_BYTES: usize = 65_000;

/// One `sendmmsg` entry: `count` datagrams starting at `order[first]`, each
/// `seg` bytes but the last (`count == 1`: a plain datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub first: usize,
    pub count: usize,
    pub seg: usize,
}

const EMPTY: u32 = u32::MAX;

/// Reusable grouping state (no allocation once it has seen its largest flush).
#[derive(Debug, Default)]
pub struct Planner {
    /// Datagram indices, grouped by destination.
    pub order: Vec<u32>,
    /// The entries to send, in order.
    pub batches: Vec<Batch>,
    slots: Vec<u32>,
    head: Vec<u32>,
    tail: Vec<u32>,
    next: Vec<u32>,
}

impl Planner {
    /// One batch per datagram, in queued order (offload off).
    pub fn singles(&mut self, n: usize) {
        self.order.clear();
        self.order.extend(0..n as u32);
        self.batches.clear();
        self.batches.extend((0..n).map(|i| Batch {
            first: i,
            count: 1,
            seg: 0,
        }));
    }

    /// Replace batches `b..` by one batch per datagram (same order);
    /// returns the index of the first of them.
    pub fn unbatch_from(&mut self, b: usize) -> usize {
        let first = self.batches[b].first;
        self.batches.truncate(b);
        let at = self.batches.len();
        self.batches
            .extend((first..self.order.len()).map(|i| Batch {
                first: i,
                count: 1,
                seg: 0,
            }));
        at
    }

    /// Group `n` datagrams. `key(i)` hashes datagram i's destination,
    /// `same(i, j)` says whether two datagrams go to the same destination
    /// (the key may collide; `same` decides), `len(i)` is its length.
    pub fn plan(
        &mut self,
        n: usize,
        key: impl Fn(usize) -> u64,
        same: impl Fn(usize, usize) -> bool,
        len: impl Fn(usize) -> usize,
    ) {
        let size = (2 * n).next_power_of_two().max(16);
        let mask = size - 1;
        self.slots.clear();
        self.slots.resize(size, EMPTY);
        self.head.clear();
        self.tail.clear();
        self.next.clear();
        self.next.resize(n, EMPTY);
        for i in 0..n {
            let mut s = (mix(key(i)) as usize) & mask;
            loop {
                let g = self.slots[s];
                if g == EMPTY {
                    self.slots[s] = self.head.len() as u32;
                    self.head.push(i as u32);
                    self.tail.push(i as u32);
                    break;
                }
                if same(self.head[g as usize] as usize, i) {
                    let t = self.tail[g as usize] as usize;
                    self.next[t] = i as u32;
                    self.tail[g as usize] = i as u32;
                    break;
                }
                s = (s + 1) & mask;
            }
        }
        self.order.clear();
        self.batches.clear();
        for g in 0..self.head.len() {
            let mut i = self.head[g];
            let mut open: Option<Batch> = None;
            while i != EMPTY {
                let l = len(i as usize);
                let at = self.order.len();
                self.order.push(i);
                open = Some(match open {
                    // Joins while the batch's datagrams so far are all full
                    // size, this one is no longer, and the limits hold.
                    Some(b)
                        if b.count < MAX_SEGMENTS
                            && l <= b.seg
                            && l > 0
                            && (b.count + 1) * b.seg <= MAX_BYTES
                            && len(self.order[at - 1] as usize) == b.seg =>
                    {
                        Batch {
                            count: b.count + 1,
                            ..b
                        }
                    }
                    other => {
                        if let Some(b) = other {
                            self.batches.push(b);
                        }
                        Batch {
                            first: at,
                            count: 1,
                            seg: l,
                        }
                    }
                });
                i = self.next[i as usize];
            }
            if let Some(b) = open {
                self.batches.push(b);
            }
        }
    }
}

/// Spread a destination key over the table (Fibonacci hashing).
fn mix(k: u64) -> u64 {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dst: &[u64], len: &[usize]) -> Planner {
        let mut p = Planner::default();
        p.plan(
            dst.len(),
            |i| dst[i] % 3,
            |i, j| dst[i] == dst[j],
            |i| len[i],
        );
        p
    }

    fn sent(p: &Planner) -> Vec<Vec<u32>> {
        p.batches
            .iter()
            .map(|b| p.order[b.first..b.first + b.count].to_vec())
            .collect()
    }

    #[test]
    fn a_burst_to_each_child_becomes_one_entry_per_child() {
        // Packets 0..4 each forwarded to children 10, 11, 12 (colliding keys).
        let mut dst = Vec::new();
        for _ in 0..4 {
            dst.extend([10, 11, 12]);
        }
        let p = run(&dst, &[1400; 12]);
        assert_eq!(
            sent(&p),
            vec![vec![0, 3, 6, 9], vec![1, 4, 7, 10], vec![2, 5, 8, 11]]
        );
        assert!(p.batches.iter().all(|b| b.seg == 1400));
    }

    #[test]
    fn only_the_last_segment_may_be_shorter() {
        // To one destination: 100 100 60 100 100 100 → [100 100 60] [100 100 100].
        let p = run(&[7; 6], &[100, 100, 60, 100, 100, 100]);
        assert_eq!(sent(&p), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        // A longer one after shorter ones starts a new entry.
        let p = run(&[7; 3], &[60, 100, 100]);
        assert_eq!(sent(&p), vec![vec![0], vec![1, 2]]);
        assert_eq!(p.batches[1].seg, 100);
    }

    #[test]
    fn limits_of_the_kernel_hold() {
        let p = run(&[1; 200], &[100; 200]);
        assert!(p.batches.iter().all(|b| b.count <= MAX_SEGMENTS));
        assert_eq!(p.batches.iter().map(|b| b.count).sum::<usize>(), 200);
        let p = run(&[1; 100], &[9000; 100]);
        assert!(p
            .batches
            .iter()
            .all(|b| b.count * b.seg <= MAX_BYTES && b.count == 7 || b.first == 98));
        // Every datagram once, each destination's in queued order.
        let mut all: Vec<u32> = p.order.clone();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(p.order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unbatching_keeps_what_was_sent_and_splits_the_rest() {
        let mut p = run(&[1, 2, 1, 2, 1, 2], &[50; 6]);
        assert_eq!(sent(&p), vec![vec![0, 2, 4], vec![1, 3, 5]]);
        let from = p.unbatch_from(1);
        assert_eq!(from, 1);
        assert_eq!(sent(&p), vec![vec![0, 2, 4], vec![1], vec![3], vec![5]]);
    }

    #[test]
    fn singles_keep_the_queue_as_is() {
        let mut p = Planner::default();
        p.singles(3);
        assert_eq!(sent(&p), vec![vec![0], vec![1], vec![2]]);
    }
}
