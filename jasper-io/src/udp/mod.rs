//! Kernel UDP backend: non-blocking sockets, `recvmmsg`/`sendmmsg` batching,
//! kernel receive timestamps (`SO_TIMESTAMPNS`), and segmentation offload:
//! packets queued for one destination leave as one UDP GSO super-packet
//! (`UDP_SEGMENT`, grouped by [`gso::Planner`]) and coalesced arrivals
//! (`UDP_GRO`) are split back into packets here, so a burst costs the kernel
//! one pass through its stack per destination instead of one per packet.
//!
//! Forwarded packets are not copied: the `sendmmsg` entries point at the
//! receive buffer, which is why [`UdpBackend::recv_burst`] flushes before it
//! reuses buffers.

mod gso;

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use crate::{host_now_ns, Capabilities, IoCounters, OpenError, PacketIo, RxMeta};

/// Receive buffer per packet: a jumbo-frame datagram (9001-byte MTU, as in
/// AWS and GCP VPCs) fits.
pub const BUF_SIZE: usize = 9216;
/// Receive buffer per `recvmmsg` entry with segmentation offload on: a
/// coalesced (GRO) arrival is at most one 64 KiB UDP payload.
const GRO_SLOT: usize = 65_536;
/// Most packets one coalesced arrival is split into (the kernel's
/// `UDP_GRO_CNT_MAX`); anything beyond is counted truncated, not kept.
const GRO_SEGMENTS: usize = 64;
/// A packet read later than this after the kernel received it counts as
/// queued (`IoCounters::rx_queued_over_1ms`).
const RX_QUEUED_LIMIT_NS: u64 = 1_000_000;
const CTRL_SIZE: usize = 96;
const TX_BATCH: usize = 64;
/// iovecs per `sendmmsg` call (a super-packet has one per datagram).
const TX_IOV: usize = 256;
const RX_BATCH: usize = 64;
const TX_RETRIES: u32 = 64;

#[derive(Debug, Clone, Copy)]
enum TxSrc {
    Rx(usize),
    Own { off: usize, len: usize },
}

#[derive(Clone, Copy)]
struct TxEntry {
    src: TxSrc,
    dst: libc::sockaddr_storage,
    dst_len: libc::socklen_t,
    /// Hash of the destination, for grouping (`gso::Planner`).
    key: u64,
}

impl TxEntry {
    fn same_dst(&self, o: &TxEntry) -> bool {
        self.key == o.key
            && self.dst_len == o.dst_len
            && addr_bytes(&self.dst) == addr_bytes(&o.dst)
    }
}

/// The address part of a sockaddr (family, port, address; what `to_sockaddr` fills).
fn addr_bytes(ss: &libc::sockaddr_storage) -> [u8; 28] {
    // SAFETY: sockaddr_storage is at least 128 bytes of plain old data.
    let all: &[u8; 128] = unsafe { &*(ss as *const _ as *const [u8; 128]) };
    let mut out = [0; 28];
    out.copy_from_slice(&all[..28]);
    out
}

fn dst_key(a: &SocketAddr) -> u64 {
    match a {
        SocketAddr::V4(v) => u64::from(u32::from(*v.ip())) << 16 | u64::from(v.port()),
        SocketAddr::V6(v) => {
            let ip = u128::from(*v.ip());
            (ip as u64) ^ ((ip >> 64) as u64).rotate_left(29) ^ u64::from(v.port()) << 48
        }
    }
}

/// Where a received packet sits in `rx_bufs`.
#[derive(Debug, Clone, Copy)]
struct RxPkt {
    off: usize,
    len: usize,
}

/// Kernel UDP sockets (one per local endpoint; sends go out of the first).
pub struct UdpBackend {
    socks: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
    burst: usize,
    /// `burst` receive slots of `slot` bytes each.
    rx_bufs: Vec<u8>,
    slot: usize,
    slots_used: usize,
    /// The packets of the current burst (a coalesced slot holds several).
    rx_pkts: Vec<RxPkt>,
    rx_meta: Vec<RxMeta>,
    rx_names: Vec<libc::sockaddr_storage>,
    rx_ctrl: Vec<[u8; CTRL_SIZE]>,
    tx: Vec<TxEntry>,
    tx_own: Vec<u8>,
    /// Send packets for one destination as one GSO super-packet.
    gso: bool,
    planner: gso::Planner,
    counters: IoCounters,
}

impl std::fmt::Debug for UdpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpBackend")
            .field("addrs", &self.addrs)
            .field("burst", &self.burst)
            .finish()
    }
}

fn setsockopt_int(
    sock: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is a valid open socket owned by `sock`; we pass a pointer
    // to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SocketAddr` → `sockaddr_storage`.
pub fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (ss, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// `sockaddr_storage` → `SocketAddr` (unspecified on unknown families).
pub fn from_sockaddr(ss: &libc::sockaddr_storage) -> SocketAddr {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            SocketAddr::V4(SocketAddrV4::new(
                sin.sin_addr.s_addr.to_ne_bytes().into(),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))
        }
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}

impl UdpBackend {
    /// Bind every address (non-blocking, kernel timestamps on), with socket
    /// buffers of `socket_buffer` bytes, bursts of `burst` receive entries,
    /// and segmentation offload on (see [`UdpBackend::bind_with`]).
    pub fn bind(
        addrs: &[SocketAddr],
        burst: usize,
        socket_buffer: usize,
    ) -> Result<Self, OpenError> {
        Self::bind_with(addrs, burst, socket_buffer, true)
    }

    /// [`UdpBackend::bind`], with segmentation offload on or off. On: sends
    /// group each flush's packets by destination into UDP GSO super-packets,
    /// and the sockets accept coalesced arrivals (`UDP_GRO`; receive entries
    /// of 64 KiB instead of 9 KiB). Where the kernel refuses either, the
    /// backend goes on without it (a refused super-packet is re-sent as
    /// single datagrams, and GSO stays off: `IoCounters::gso_refused`).
    pub fn bind_with(
        addrs: &[SocketAddr],
        burst: usize,
        socket_buffer: usize,
        offload: bool,
    ) -> Result<Self, OpenError> {
        let burst = burst.clamp(1, 512);
        let mut socks = Vec::new();
        let mut bound = Vec::new();
        for a in addrs {
            let s = UdpSocket::bind(a).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    OpenError::AddrInUse { addr: *a }
                } else {
                    OpenError::Socket {
                        addr: *a,
                        source: e,
                    }
                }
            })?;
            let sock_err = |e| OpenError::Socket {
                addr: *a,
                source: e,
            };
            s.set_nonblocking(true).map_err(sock_err)?;
            let buf = socket_buffer.min(i32::MAX as usize) as libc::c_int;
            // Best effort: the kernel caps these at net.core.[rw]mem_max.
            let _ = setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, buf);
            let _ = setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_SNDBUF, buf);
            let _ = setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, buf);
            let _ = setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, buf);
            setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).map_err(sock_err)?;
            bound.push(s.local_addr().map_err(sock_err)?);
            socks.push(s);
        }
        // Coalesced arrivals only where every socket takes them (one slot size).
        let gro = offload
            && socks
                .iter()
                .all(|s| setsockopt_int(s, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok());
        if offload && !gro {
            for s in &socks {
                let _ = setsockopt_int(s, libc::SOL_UDP, libc::UDP_GRO, 0);
            }
        }
        let slot = if gro { GRO_SLOT } else { BUF_SIZE };
        let per_slot = if gro { GRO_SEGMENTS } else { 1 };
        Ok(UdpBackend {
            socks,
            addrs: bound,
            burst,
            rx_bufs: vec![0; burst * slot],
            slot,
            slots_used: 0,
            rx_pkts: Vec::with_capacity(burst * per_slot),
            rx_meta: Vec::with_capacity(burst * per_slot),
            // SAFETY: plain old data, zero is valid.
            rx_names: vec![unsafe { zeroed() }; burst],
            rx_ctrl: vec![[0; CTRL_SIZE]; burst],
            tx: Vec::with_capacity(burst * 32),
            tx_own: Vec::with_capacity(64 * 1024),
            gso: offload,
            planner: gso::Planner::default(),
            counters: IoCounters::default(),
        })
    }

    /// Whether sends still use segmentation offload (false once the kernel
    /// refused a super-packet, or when bound without it).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// One `recvmmsg` on endpoint `ep` into the free slots; returns how
    /// many entries the kernel filled (each one packet, or several coalesced).
    fn recv_socket(&mut self, ep: usize) -> io::Result<usize> {
        let start = self.slots_used;
        let want = (self.burst - start).min(RX_BATCH);
        if want == 0 {
            return Ok(0);
        }
        // Only the `want` entries used are initialized (no memset of the rest).
        let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; RX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; RX_BATCH];
        for k in 0..want {
            let i = start + k;
            let v = iov[k].write(libc::iovec {
                iov_base: self.rx_bufs[i * self.slot..].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.slot,
            });
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            let h = &mut m.msg_hdr;
            h.msg_name = &mut self.rx_names[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = v;
            h.msg_iovlen = 1;
            h.msg_control = self.rx_ctrl[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CTRL_SIZE;
            hdrs[k].write(m);
        }
        // SAFETY: the first `want` headers are initialized and point at live
        // buffers owned by `self` (names, control, data) or by this frame
        // (iov), sized as declared; the fd is a valid non-blocking socket.
        let n = unsafe {
            libc::recvmmsg(
                self.socks[ep].as_raw_fd(),
                hdrs.as_mut_ptr() as *mut libc::mmsghdr,
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => {
                    self.counters.rx_errors += 1;
                    Err(e)
                }
            };
        }
        let now = host_now_ns();
        let n = n as usize;
        self.slots_used += n;
        for (k, hdr) in hdrs.iter().enumerate().take(n) {
            // SAFETY: n ≤ want: initialized above, filled in by the kernel.
            let hdr = unsafe { hdr.assume_init_ref() };
            let mh = &hdr.msg_hdr;
            if mh.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.rx_truncated += 1;
                continue;
            }
            let i = start + k;
            let (ts, seg) = control(mh);
            let len = hdr.msg_len as usize;
            let meta = RxMeta {
                src: from_sockaddr(&self.rx_names[i]),
                endpoint: ep as u8,
                host_rx_ns: ts.unwrap_or(now),
                hw_or_kernel_ts: ts.is_some(),
            };
            // A coalesced arrival is `seg`-byte packets, the last maybe shorter.
            let seg = match seg {
                Some(s) if s > 0 && s < len => s,
                _ => len.max(1),
            };
            let mut off = 0;
            let mut parts = 0u64;
            while off < len || (len == 0 && parts == 0) {
                let l = seg.min(len - off);
                if self.rx_pkts.len() == self.rx_pkts.capacity() {
                    // More packets than the kernel coalesces: not kept, counted.
                    self.counters.rx_truncated += 1;
                    break;
                }
                self.rx_pkts.push(RxPkt {
                    off: i * self.slot + off,
                    len: l,
                });
                self.rx_meta.push(meta);
                parts += 1;
                off += l.max(1);
            }
            if let Some(t) = ts {
                let queued = now.saturating_sub(t);
                self.counters.rx_queue_ns = self
                    .counters
                    .rx_queue_ns
                    .saturating_add(queued.saturating_mul(parts));
                if queued > RX_QUEUED_LIMIT_NS {
                    self.counters.rx_queued_over_1ms += parts;
                }
            }
            self.counters.rx_offload_batches += u64::from(parts > 1);
            self.counters.rx_packets += parts;
            self.counters.rx_bytes += len as u64;
        }
        Ok(n)
    }

    /// Send the planned entries `batches[from..]` (one `sendmmsg` entry
    /// each) in calls of at most `TX_BATCH` entries and `TX_IOV` iovecs.
    /// Returns the datagrams sent and, if the kernel refused a super-packet,
    /// the index of that entry (entries before it went out or were counted
    /// dropped; it and those after it did not go out).
    fn send_planned(&mut self, from: usize) -> (usize, Option<usize>) {
        let mut sent_pkts = 0;
        let mut b = from;
        let nb = self.planner.batches.len();
        while b < nb {
            // Only the entries used are initialized (no memset of the rest).
            let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; TX_IOV];
            let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; TX_BATCH];
            // One UDP_SEGMENT control message per entry (u64s: aligned for cmsghdr).
            let mut ctrl = [[0u64; 4]; TX_BATCH];
            let mut segs = [0usize; TX_BATCH];
            let (mut m, mut v) = (0, 0);
            while b + m < nb && m < TX_BATCH && v + self.planner.batches[b + m].count <= TX_IOV {
                let batch = self.planner.batches[b + m];
                let first = self.planner.order[batch.first] as usize;
                for k in 0..batch.count {
                    let e = &self.tx[self.planner.order[batch.first + k] as usize];
                    let (ptr, len) = match e.src {
                        TxSrc::Rx(i) => {
                            let p = self.rx_pkts[i];
                            (self.rx_bufs[p.off..].as_ptr(), p.len)
                        }
                        TxSrc::Own { off, len } => (self.tx_own[off..].as_ptr(), len),
                    };
                    iov[v + k].write(libc::iovec {
                        iov_base: ptr as *mut libc::c_void,
                        iov_len: len,
                    });
                }
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut mm: libc::mmsghdr = unsafe { zeroed() };
                let h = &mut mm.msg_hdr;
                // The kernel only reads the name on send: a shared borrow.
                let e = &self.tx[first];
                h.msg_name = &e.dst as *const _ as *mut libc::c_void;
                h.msg_namelen = e.dst_len;
                h.msg_iov = iov[v].as_mut_ptr();
                h.msg_iovlen = batch.count;
                if batch.count > 1 {
                    let space = gso_control(&mut ctrl[m], batch.seg as u16);
                    h.msg_control = ctrl[m].as_mut_ptr() as *mut libc::c_void;
                    h.msg_controllen = space;
                }
                hdrs[m].write(mm);
                segs[m] = batch.count;
                v += batch.count;
                m += 1;
            }
            let mut done = 0usize;
            let mut retries = 0;
            while done < m {
                // SAFETY: headers [done..m] are initialized, as are the
                // iovecs they name, and point at live buffers owned by `self`
                // (rx buffers, own tx bytes, destination addresses) or this
                // frame (iov, control), none of which move during the call;
                // the kernel only reads them (and writes msg_len).
                let rc = unsafe {
                    libc::sendmmsg(
                        self.socks[0].as_raw_fd(),
                        hdrs[done..].as_mut_ptr() as *mut libc::mmsghdr,
                        (m - done) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if rc > 0 {
                    let rc = rc as usize;
                    for (h, &s) in hdrs[done..done + rc].iter().zip(&segs[done..done + rc]) {
                        // SAFETY: initialized above (rc ≤ m − done).
                        let h = unsafe { h.assume_init_ref() };
                        self.counters.tx_bytes += h.msg_len as u64;
                        self.counters.tx_packets += s as u64;
                        self.counters.tx_offload_batches += u64::from(s > 1);
                        sent_pkts += s;
                    }
                    done += rc;
                    retries = 0;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        if retries < TX_RETRIES =>
                    {
                        retries += 1;
                        std::thread::yield_now();
                    }
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                        // Socket buffer stayed full: drop the rest of this call, counted.
                        self.counters.tx_dropped += segs[done..m].iter().sum::<usize>() as u64;
                        done = m;
                    }
                    _ if segs[done] > 1 && gso_refusal(&e) => {
                        self.counters.gso_refused += 1;
                        return (sent_pkts, Some(b + done));
                    }
                    _ => {
                        // The first entry failed (e.g. unreachable): drop it, counted.
                        self.counters.tx_dropped += segs[done] as u64;
                        done += 1;
                    }
                }
            }
            b += m;
        }
        (sent_pkts, None)
    }
}

/// Fill `buf` with one `UDP_SEGMENT` control message; returns its length.
fn gso_control(buf: &mut [u64; 4], seg: u16) -> usize {
    // SAFETY: CMSG_SPACE of a u16 (24 bytes) fits the 32-byte, 8-aligned
    // buffer; the msghdr built here describes exactly that buffer, so
    // CMSG_FIRSTHDR returns its start and CMSG_DATA points inside it.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        let mut mh: libc::msghdr = zeroed();
        mh.msg_control = buf.as_mut_ptr() as *mut libc::c_void;
        mh.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
        space
    }
}

/// Errors with which a kernel, a route or a device refuses segmentation
/// offload (rather than the datagram itself).
fn gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT | libc::EMSGSIZE)
    )
}

/// The kernel receive timestamp and, for a coalesced arrival, its segment
/// size, from a received message's control data.
fn control(mh: &libc::msghdr) -> (Option<u64>, Option<usize>) {
    let (mut ts, mut seg) = (None, None);
    // SAFETY: `mh` was filled by recvmmsg with msg_control/msg_controllen
    // describing our control buffer; CMSG_* walk only within it, and each
    // payload is read unaligned at the size its type declares.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let t: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    ts = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
                }
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let s: libc::c_int =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    seg = usize::try_from(s).ok();
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    (ts, seg)
}

impl PacketIo for UdpBackend {
    fn recv_burst(&mut self) -> io::Result<usize> {
        // Queued forwards point into the receive buffers: send them first.
        if !self.tx.is_empty() {
            self.flush()?;
        }
        self.slots_used = 0;
        self.rx_pkts.clear();
        self.rx_meta.clear();
        let mut err = None;
        for ep in 0..self.socks.len() {
            loop {
                match self.recv_socket(ep) {
                    Ok(n) if n == RX_BATCH && self.slots_used < self.burst => continue,
                    Ok(_) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
        }
        match (self.rx_pkts.len(), err) {
            (0, Some(e)) => Err(e),
            (n, _) => Ok(n),
        }
    }

    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        let p = self.rx_pkts[i];
        (self.rx_meta[i], &mut self.rx_bufs[p.off..p.off + p.len])
    }

    fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
        for d in dsts {
            let (dst, dst_len) = to_sockaddr(d);
            self.tx.push(TxEntry {
                src: TxSrc::Rx(i),
                dst,
                dst_len,
                key: dst_key(d),
            });
        }
    }

    fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
        let off = self.tx_own.len();
        self.tx_own.extend_from_slice(bytes);
        let (d, dst_len) = to_sockaddr(&dst);
        self.tx.push(TxEntry {
            src: TxSrc::Own {
                off,
                len: bytes.len(),
            },
            dst: d,
            dst_len,
            key: dst_key(&dst),
        });
    }

    fn flush(&mut self) -> io::Result<usize> {
        let total = self.tx.len();
        if total == 0 {
            return Ok(0);
        }
        if self.gso && total > 1 {
            let tx = &self.tx;
            let len = |i: usize| match tx[i].src {
                TxSrc::Rx(r) => self.rx_pkts[r].len,
                TxSrc::Own { len, .. } => len,
            };
            self.planner
                .plan(total, |i| tx[i].key, |i, j| tx[i].same_dst(&tx[j]), len);
        } else {
            self.planner.singles(total);
        }
        let (mut sent, refused) = self.send_planned(0);
        if let Some(b) = refused {
            // The kernel or the route will not segment: the refused entry
            // and the rest go out as single datagrams, and offload stays off.
            self.gso = false;
            let from = self.planner.unbatch_from(b);
            sent += self.send_planned(from).0;
        }
        self.tx.clear();
        self.tx_own.clear();
        Ok(sent)
    }

    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.socks.iter().map(|s| s.as_raw_fd()).collect()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            zero_copy_replication: false,
            rx_timestamps: true,
            max_burst: self.burst,
            name: "udp",
        }
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }

    fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn recv_all(b: &mut UdpBackend, want: usize) -> Vec<(RxMeta, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let n = b.recv_burst().unwrap();
            for i in 0..n {
                let (m, p) = b.rx(i);
                out.push((m, p.to_vec()));
            }
            if out.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        out
    }

    #[test]
    fn time_in_the_socket_queue_is_counted() {
        let mut a = UdpBackend::bind(&[lo()], 32, 1 << 20).unwrap();
        let mut b = UdpBackend::bind(&[lo()], 32, 1 << 20).unwrap();
        let to = b.local_addrs()[0];
        a.send_to(b"waits", to);
        a.flush().unwrap();
        // Read at once: it waited less than 1 ms... or not, on a busy
        // machine; only the lower bounds below are certain.
        let first = recv_all(&mut b, 1);
        assert_eq!(first.len(), 1);
        assert!(
            first[0].0.hw_or_kernel_ts,
            "loopback gives kernel timestamps"
        );
        let before = b.counters();
        a.send_to(b"waits longer", to);
        a.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert_eq!(recv_all(&mut b, 1).len(), 1);
        let after = b.counters();
        assert_eq!(after.rx_queued_over_1ms, before.rx_queued_over_1ms + 1);
        assert!(after.rx_queue_ns - before.rx_queue_ns >= 3_000_000);
    }

    #[test]
    fn burst_send_forward_and_receive_with_timestamps() {
        let mut a = UdpBackend::bind(&[lo()], 32, 1 << 20).unwrap();
        let mut b = UdpBackend::bind(&[lo(), lo()], 32, 1 << 20).unwrap();
        let mut c = UdpBackend::bind(&[lo()], 32, 1 << 20).unwrap();
        let bd = b.local_addrs();
        for i in 0..100u8 {
            a.send_to(&[i; 10], bd[(i % 2) as usize]);
        }
        assert_eq!(a.flush().unwrap(), 100);
        let got = recv_all(&mut b, 100);
        assert_eq!(got.len(), 100);
        assert!(got
            .iter()
            .all(|(m, _)| m.hw_or_kernel_ts && m.src == a.local_addrs()[0]));
        assert_eq!(got.iter().filter(|(m, _)| m.endpoint == 1).count(), 50);
        // Forward a received packet (rewritten in place) to two destinations.
        a.send_to(b"hello", bd[0]);
        a.flush().unwrap();
        let cd = c.local_addrs()[0];
        loop {
            if b.recv_burst().unwrap() > 0 {
                let (_, p) = b.rx(0);
                p[0] = b'j';
                b.forward(0, &[cd, cd]);
                b.flush().unwrap();
                break;
            }
        }
        let got = recv_all(&mut c, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"jello");
        assert_eq!(c.counters().rx_packets, 2);
    }

    /// Packet `i` of a test burst: `len` bytes saying which it is.
    fn pkt(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|k| (i * 7 + k) as u8).collect()
    }

    #[test]
    fn a_burst_to_one_destination_leaves_as_one_super_packet_and_arrives_whole() {
        let mut a = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        let mut b = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        let to = b.local_addrs()[0];
        // 20 full packets and a shorter last one, as a publisher's burst.
        let want: Vec<Vec<u8>> = (0..21)
            .map(|i| pkt(i, if i < 20 { 1000 } else { 300 }))
            .collect();
        for p in &want {
            a.send_to(p, to);
        }
        assert_eq!(a.flush().unwrap(), 21);
        let c = a.counters();
        assert_eq!(
            (c.tx_packets, c.tx_offload_batches, c.gso_refused),
            (21, 1, 0)
        );
        assert_eq!(c.tx_bytes, 20 * 1000 + 300);
        let got = recv_all(&mut b, 21);
        let bytes: Vec<Vec<u8>> = got.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(bytes, want, "every packet, whole and in order");
        assert!(got
            .iter()
            .all(|(m, _)| m.src == a.local_addrs()[0] && m.hw_or_kernel_ts));
        let c = b.counters();
        assert_eq!(c.rx_packets, 21);
        assert!(
            c.rx_offload_batches >= 1,
            "loopback hands the super-packet over coalesced"
        );
    }

    #[test]
    fn a_receiver_without_offload_gets_the_same_packets() {
        let mut a = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        let mut b = UdpBackend::bind_with(&[lo()], 32, 4 << 20, false).unwrap();
        let to = b.local_addrs()[0];
        let want: Vec<Vec<u8>> = (0..10).map(|i| pkt(i, 1200)).collect();
        for p in &want {
            a.send_to(p, to);
        }
        a.flush().unwrap();
        assert_eq!(a.counters().tx_offload_batches, 1);
        let got: Vec<Vec<u8>> = recv_all(&mut b, 10).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, want);
        assert_eq!(b.counters().rx_offload_batches, 0, "the kernel split it");
    }

    #[test]
    fn packets_of_a_coalesced_arrival_forward_to_every_child_in_order() {
        let mut a = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        let mut b = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        let mut kids: Vec<UdpBackend> = (0..3)
            .map(|_| UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap())
            .collect();
        let dsts: Vec<SocketAddr> = kids.iter().map(|k| k.local_addrs()[0]).collect();
        let want: Vec<Vec<u8>> = (0..12).map(|i| pkt(i, 900)).collect();
        for p in &want {
            a.send_to(p, b.local_addrs()[0]);
        }
        a.flush().unwrap();
        let mut seen = 0;
        for _ in 0..10_000 {
            let n = b.recv_burst().unwrap();
            for i in 0..n {
                b.forward(i, &dsts);
            }
            seen += n;
            b.flush().unwrap();
            if seen == 12 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        assert_eq!(seen, 12);
        assert_eq!(b.counters().tx_packets, 36);
        for k in &mut kids {
            let got: Vec<Vec<u8>> = recv_all(k, 12).into_iter().map(|(_, p)| p).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_refused_super_packet_goes_out_as_single_datagrams() {
        let mut a = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        let mut b = UdpBackend::bind(&[lo()], 32, 4 << 20).unwrap();
        // Without UDP checksums the kernel refuses segmentation (EINVAL).
        setsockopt_int(&a.socks[0], libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
        let to = b.local_addrs()[0];
        let want: Vec<Vec<u8>> = (0..8).map(|i| pkt(i, 500)).collect();
        for p in &want {
            a.send_to(p, to);
        }
        assert_eq!(a.flush().unwrap(), 8);
        let c = a.counters();
        assert_eq!((c.gso_refused, c.tx_packets, c.tx_dropped), (1, 8, 0));
        assert!(!a.gso(), "offload stays off after a refusal");
        let got: Vec<Vec<u8>> = recv_all(&mut b, 8).into_iter().map(|(_, p)| p).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn busy_port_error_says_what_to_do() {
        let a = UdpBackend::bind(&[lo()], 8, 1 << 16).unwrap();
        let e = UdpBackend::bind(&a.local_addrs(), 8, 1 << 16).unwrap_err();
        assert!(matches!(e, OpenError::AddrInUse { .. }));
        assert!(e.to_string().contains("already in use"));
    }
}
