//! In-memory backend: nodes in one process exchange packets through a shared
//! hub (tests of runners and wrappers without sockets).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::{host_now_ns, Capabilities, IoCounters, PacketIo, RxMeta};

type Queues = HashMap<SocketAddr, VecDeque<(SocketAddr, Vec<u8>)>>;

/// The shared medium.
#[derive(Debug, Clone, Default)]
pub struct MemHub {
    queues: Arc<Mutex<Queues>>,
}

impl MemHub {
    /// New empty hub.
    pub fn new() -> Self {
        Self::default()
    }
    /// A backend listening on `addrs`.
    pub fn attach(&self, addrs: &[SocketAddr], burst: usize) -> MemBackend {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for a in addrs {
            q.entry(*a).or_default();
        }
        MemBackend {
            hub: self.clone(),
            addrs: addrs.to_vec(),
            burst: burst.max(1),
            rx: Vec::new(),
            tx: Vec::new(),
            counters: IoCounters::default(),
        }
    }
}

/// One node's view of the hub.
#[derive(Debug)]
pub struct MemBackend {
    hub: MemHub,
    addrs: Vec<SocketAddr>,
    burst: usize,
    rx: Vec<(RxMeta, Vec<u8>)>,
    tx: Vec<(Vec<u8>, SocketAddr)>,
    counters: IoCounters,
}

impl PacketIo for MemBackend {
    fn recv_burst(&mut self) -> io::Result<usize> {
        self.flush()?;
        self.rx.clear();
        let now = host_now_ns();
        let mut q = self.hub.queues.lock().unwrap_or_else(|p| p.into_inner());
        for (ep, a) in self.addrs.iter().enumerate() {
            let Some(queue) = q.get_mut(a) else { continue };
            while self.rx.len() < self.burst {
                let Some((src, bytes)) = queue.pop_front() else {
                    break;
                };
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += bytes.len() as u64;
                self.rx.push((
                    RxMeta {
                        src,
                        endpoint: ep as u8,
                        host_rx_ns: now,
                        hw_or_kernel_ts: false,
                    },
                    bytes,
                ));
            }
        }
        Ok(self.rx.len())
    }
    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        let (m, b) = &mut self.rx[i];
        (*m, b.as_mut_slice())
    }
    fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
        for d in dsts {
            let bytes = self.rx[i].1.clone();
            self.tx.push((bytes, *d));
        }
    }
    fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
        self.tx.push((bytes.to_vec(), dst));
    }
    fn flush(&mut self) -> io::Result<usize> {
        let n = self.tx.len();
        if n == 0 {
            return Ok(0);
        }
        let src = self.addrs[0];
        let mut q = self.hub.queues.lock().unwrap_or_else(|p| p.into_inner());
        for (bytes, dst) in self.tx.drain(..) {
            match q.get_mut(&dst) {
                Some(queue) => {
                    self.counters.tx_packets += 1;
                    self.counters.tx_bytes += bytes.len() as u64;
                    queue.push_back((src, bytes));
                }
                None => self.counters.tx_dropped += 1,
            }
        }
        Ok(n)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            zero_copy_replication: false,
            rx_timestamps: false,
            max_burst: self.burst,
            name: "mem",
        }
    }
    fn counters(&self) -> IoCounters {
        self.counters
    }
    fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }
}
