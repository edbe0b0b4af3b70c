//! # jasper-io
//!
//! Packet I/O behind one burst-oriented trait, [`PacketIo`], so proxies and
//! receivers run unchanged on any backend:
//!
//! | backend | where |
//! |---|---|
//! | [`udp::UdpBackend`] | kernel UDP sockets, `recvmmsg`/`sendmmsg` batching, kernel receive timestamps |
//! | [`mem::MemBackend`] | in-process queues (tests) |
//! | `jasper_dpdk::DpdkBackend` | DPDK poll-mode drivers, zero-copy replication (crate `jasper-dpdk`) |
//! | [`fault::Faulty`] | wraps any backend: per-link delay from the cloud model, loss, duplication, reordering |
//!
//! Plus the clocks drivers read ([`clock`]) and the idle strategies every
//! poll loop uses ([`idle`]).
//!
//! ## Contract and call order
//! 1. [`PacketIo::recv_burst`] receives up to a burst of packets into
//!    backend-owned buffers and returns how many. The buffers of the previous
//!    burst are released first (after transmitting anything that still
//!    references them).
//! 2. [`PacketIo::rx`] gives packet `i` of the current burst, mutable (a proxy
//!    rewrites its header in place).
//! 3. [`PacketIo::forward`] queues packet `i` to many destinations; backends
//!    that can (DPDK) replicate without copying the payload.
//!    [`PacketIo::send_to`] queues bytes from caller memory.
//! 4. [`PacketIo::flush`] transmits everything queued, in as few system calls
//!    or `tx_burst` calls as possible. Partial sends are retried a bounded
//!    number of times, then counted as drops.
//!
//! `unsafe` in this crate is limited to the socket system calls of
//! [`udp`] and the clock query of [`clock`], each with a `// SAFETY:` comment.

use std::io;
use std::net::SocketAddr;

pub mod clock;
pub mod fault;
pub mod idle;
pub mod mem;
pub mod node;
pub mod runtime;
pub mod trust;
pub mod udp;

/// Metadata of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Source address.
    pub src: SocketAddr,
    /// Which local endpoint received it (index into `local_addrs`).
    pub endpoint: u8,
    /// Host CLOCK_REALTIME at reception, ns (kernel or NIC timestamp when
    /// available, otherwise read right after the burst).
    pub host_rx_ns: u64,
    /// True when `host_rx_ns` came from the kernel/NIC.
    pub hw_or_kernel_ts: bool,
}

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `forward` replicates without copying the payload.
    pub zero_copy_replication: bool,
    /// Receive timestamps come from the kernel or NIC.
    pub rx_timestamps: bool,
    /// Largest burst.
    pub max_burst: usize,
    /// Human-readable backend name.
    pub name: &'static str,
}

/// I/O counters (data-path problems are counters, not log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets dropped at transmit (queue full after retries, send errors).
    pub tx_dropped: u64,
    /// Receive errors other than "would block".
    pub rx_errors: u64,
    /// Datagrams truncated because they exceeded the buffer.
    pub rx_truncated: u64,
    /// Packets dropped by the fault injector (loss).
    pub injected_loss: u64,
    /// Packets read more than 1 ms after the kernel received them (they
    /// waited in the socket's queue: the node is not keeping up, usually
    /// for want of CPU). Only backends with kernel receive timestamps.
    pub rx_queued_over_1ms: u64,
    /// Sum over received packets of the time each waited in the socket's
    /// queue (read − kernel receive time), ns; over `rx_packets` it is the
    /// mean queueing delay.
    pub rx_queue_ns: u64,
    /// Copies added by the fault injector (duplication).
    pub injected_duplicates: u64,
    /// Super-packets sent with segmentation offload (UDP GSO: several
    /// packets to one destination in one pass through the kernel).
    pub tx_offload_batches: u64,
    /// Arrivals that carried several packets (UDP GRO), split back here.
    pub rx_offload_batches: u64,
    /// Super-packets the kernel refused (re-sent as single datagrams;
    /// segmentation offload then stays off for this backend).
    pub gso_refused: u64,
}

/// The burst-oriented packet I/O trait every backend implements.
pub trait PacketIo {
    /// Receive a burst; returns how many packets are available via [`PacketIo::rx`].
    fn recv_burst(&mut self) -> io::Result<usize>;
    /// Packet `i` of the current burst.
    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]);
    /// Queue packet `i` of the current burst to every destination.
    fn forward(&mut self, i: usize, dsts: &[SocketAddr]);
    /// Queue bytes from caller memory to one destination.
    fn send_to(&mut self, bytes: &[u8], dst: SocketAddr);
    /// Transmit everything queued; returns packets sent.
    fn flush(&mut self) -> io::Result<usize>;
    /// Earliest host time (CLOCK_REALTIME ns) at which `flush` has work that
    /// is not due yet (delayed packets in the fault injector).
    fn next_timer_ns(&self) -> Option<u64> {
        None
    }
    /// File descriptors that become readable when packets arrive (kernel
    /// backends), so idle loops can block in `ppoll` instead of spinning.
    /// Empty for polling-only backends (DPDK).
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
    /// Capabilities.
    fn capabilities(&self) -> Capabilities;
    /// Counters.
    fn counters(&self) -> IoCounters;
    /// Local endpoints.
    fn local_addrs(&self) -> Vec<SocketAddr>;
}

impl<T: PacketIo + ?Sized> PacketIo for Box<T> {
    fn recv_burst(&mut self) -> io::Result<usize> {
        (**self).recv_burst()
    }
    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        (**self).rx(i)
    }
    fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
        (**self).forward(i, dsts)
    }
    fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
        (**self).send_to(bytes, dst)
    }
    fn flush(&mut self) -> io::Result<usize> {
        (**self).flush()
    }
    fn next_timer_ns(&self) -> Option<u64> {
        (**self).next_timer_ns()
    }
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        (**self).wait_fds()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn counters(&self) -> IoCounters {
        (**self).counters()
    }
    fn local_addrs(&self) -> Vec<SocketAddr> {
        (**self).local_addrs()
    }
}

/// Errors opening a backend, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The address is taken.
    #[error("cannot bind {addr}: address already in use — another process (maybe an earlier run) holds the port; stop it or choose other ports")]
    AddrInUse {
        /// Address.
        addr: SocketAddr,
    },
    /// Any other socket error.
    #[error("cannot open UDP socket on {addr}: {source}")]
    Socket {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: io::Error,
    },
}

/// Host CLOCK_REALTIME in ns (the ground truth of local runs).
pub fn host_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
