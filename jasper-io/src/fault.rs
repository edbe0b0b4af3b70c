//! The delay/loss-injecting wrapper (there is no `tc netem` on our
//! machines): wraps any backend and applies, per destination link, the
//! reference cloud model's one-way delay (base + lognormal jitter + slow
//! episodes), loss, duplication and reordering — all seeded.
//!
//! Delayed packets are copied into a timer queue and handed to the inner
//! backend by [`PacketIo::flush`] once due; [`PacketIo::next_timer_ns`] tells
//! the poll loop when. Packets with zero delay pass straight through (and keep
//! the inner backend's zero-copy replication). Host send costs are not
//! modelled here: in a real run they are real.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;

use jasper_core::model::{rng, CloudModel, LinkFate, LinkState, SimRng};

use crate::{host_now_ns, Capabilities, IoCounters, PacketIo, RxMeta};

/// Fault-injecting wrapper.
#[derive(Debug)]
pub struct Faulty<B> {
    inner: B,
    model: CloudModel,
    rng: SimRng,
    links: HashMap<SocketAddr, LinkState>,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    store: Vec<(Vec<u8>, SocketAddr)>,
    free: Vec<usize>,
    ctr: u64,
    loss: u64,
    dups: u64,
    /// The packet being forwarded (reused: no allocation per copy).
    scratch: Vec<u8>,
}

impl<B: PacketIo> Faulty<B> {
    /// Wrap `inner` with `model`, seeded.
    pub fn new(inner: B, model: CloudModel, seed: u64) -> Self {
        Faulty {
            inner,
            model,
            rng: rng(seed),
            links: HashMap::new(),
            heap: BinaryHeap::new(),
            store: Vec::new(),
            free: Vec::new(),
            ctr: 0,
            loss: 0,
            dups: 0,
            scratch: Vec::new(),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn schedule(&mut self, due: u64, bytes: &[u8], dst: SocketAddr) {
        let slot = match self.free.pop() {
            Some(s) => {
                let e = &mut self.store[s];
                e.0.clear();
                e.0.extend_from_slice(bytes);
                e.1 = dst;
                s
            }
            None => {
                self.store.push((bytes.to_vec(), dst));
                self.store.len() - 1
            }
        };
        self.ctr += 1;
        self.heap.push(Reverse((due, self.ctr, slot)));
    }

    /// Decide the fate of one copy: `Some(())` when it passes straight
    /// through (no delay), `None` when it was lost or queued for later.
    fn route(&mut self, now: u64, bytes: &[u8], dst: SocketAddr) -> Option<()> {
        let fate = self
            .links
            .entry(dst)
            .or_default()
            .transmit(&self.model, now, &mut self.rng);
        match fate {
            LinkFate::Lost => {
                self.loss += 1;
                None
            }
            LinkFate::Delivered {
                delay_ns,
                duplicate_ns,
            } => {
                if let Some(d) = duplicate_ns {
                    self.dups += 1;
                    self.schedule(now + d, bytes, dst);
                }
                if delay_ns == 0 {
                    return Some(());
                }
                self.schedule(now + delay_ns, bytes, dst);
                None
            }
        }
    }
}

impl<B: PacketIo> PacketIo for Faulty<B> {
    fn recv_burst(&mut self) -> io::Result<usize> {
        self.inner.recv_burst()
    }
    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        self.inner.rx(i)
    }
    fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
        let now = host_now_ns();
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        bytes.extend_from_slice(self.inner.rx(i).1);
        for d in dsts {
            if self.route(now, &bytes, *d).is_some() {
                self.inner.forward(i, std::slice::from_ref(d));
            }
        }
        self.scratch = bytes;
    }
    fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
        let now = host_now_ns();
        if self.route(now, bytes, dst).is_some() {
            self.inner.send_to(bytes, dst);
        }
    }
    fn flush(&mut self) -> io::Result<usize> {
        let now = host_now_ns();
        while let Some(Reverse((due, _, slot))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            let (bytes, dst) = &self.store[slot];
            self.inner.send_to(bytes, *dst);
            self.free.push(slot);
        }
        self.inner.flush()
    }
    fn next_timer_ns(&self) -> Option<u64> {
        let mine = self.heap.peek().map(|Reverse((d, _, _))| *d);
        match (mine, self.inner.next_timer_ns()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.inner.wait_fds()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "faulty",
            ..self.inner.capabilities()
        }
    }
    fn counters(&self) -> IoCounters {
        IoCounters {
            injected_loss: self.loss,
            injected_duplicates: self.dups,
            ..self.inner.counters()
        }
    }
    fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.local_addrs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemHub;
    use jasper_core::model::Dist;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    #[test]
    fn delays_then_delivers_and_counts_loss() {
        let hub = MemHub::new();
        let model = CloudModel {
            base_ns: Dist::Constant { ns: 2_000_000.0 },
            jitter_ns: Dist::ZERO,
            slow_rate_per_s: 0.0,
            loss: 0.5,
            ..CloudModel::default()
        };
        let mut a = Faulty::new(hub.attach(&[addr(1)], 32), model, 9);
        let mut b = hub.attach(&[addr(2)], 1024);
        for i in 0..200u8 {
            a.send_to(&[i], addr(2));
        }
        a.flush().unwrap();
        assert_eq!(b.recv_burst().unwrap(), 0, "nothing before the delay");
        assert!(a.next_timer_ns().unwrap() > host_now_ns() + 1_000_000);
        while a.next_timer_ns().is_some() {
            std::thread::yield_now();
            a.flush().unwrap();
        }
        let n = b.recv_burst().unwrap();
        let lost = a.counters().injected_loss as usize;
        assert_eq!(n + lost, 200);
        assert!((60..140).contains(&lost), "{lost}");
        // Order is preserved for equal delays.
        let mut last = None;
        for i in 0..n {
            let v = b.rx(i).1[0];
            assert!(last.is_none_or(|l| v > l));
            last = Some(v);
        }
    }

    #[test]
    fn zero_model_passes_through_and_duplicates_are_added() {
        let hub = MemHub::new();
        let model = CloudModel {
            duplicate: 1.0,
            ..CloudModel::zero()
        };
        let mut a = Faulty::new(hub.attach(&[addr(1)], 32), model, 1);
        let mut b = hub.attach(&[addr(2)], 32);
        a.send_to(b"x", addr(2));
        a.flush().unwrap();
        assert_eq!(b.recv_burst().unwrap(), 2);
        assert_eq!(a.counters().injected_duplicates, 1);
    }
}
