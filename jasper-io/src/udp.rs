//! Kernel UDP backend: non-blocking sockets, `recvmmsg`/`sendmmsg` batching,
//! kernel receive timestamps (`SO_TIMESTAMPNS`).
//!
//! Forwarded packets are not copied: the `sendmmsg` entries point at the
//! receive buffer, which is why [`UdpBackend::recv_burst`] flushes before it
//! reuses buffers.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use crate::{host_now_ns, Capabilities, IoCounters, OpenError, PacketIo, RxMeta};

/// Receive buffer per packet: a jumbo-frame datagram (9001-byte MTU, as in
/// AWS and GCP VPCs) fits.
pub const BUF_SIZE: usize = 9216;
/// A packet read later than this after the kernel received it counts as
/// queued (`IoCounters::rx_queued_over_1ms`).
const RX_QUEUED_LIMIT_NS: u64 = 1_000_000;
const CTRL_SIZE: usize = 64;
const TX_BATCH: usize = 64;
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
}

/// Kernel UDP sockets (one per local endpoint; sends go out of the first).
pub struct UdpBackend {
    socks: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
    burst: usize,
    rx_bufs: Vec<u8>,
    rx_meta: Vec<RxMeta>,
    rx_len: Vec<usize>,
    rx_count: usize,
    rx_names: Vec<libc::sockaddr_storage>,
    rx_ctrl: Vec<[u8; CTRL_SIZE]>,
    tx: Vec<TxEntry>,
    tx_own: Vec<u8>,
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
    /// buffers of `socket_buffer` bytes and bursts of `burst` packets.
    pub fn bind(
        addrs: &[SocketAddr],
        burst: usize,
        socket_buffer: usize,
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
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(UdpBackend {
            socks,
            addrs: bound,
            burst,
            rx_bufs: vec![0; burst * BUF_SIZE],
            rx_meta: vec![
                RxMeta {
                    src: any,
                    endpoint: 0,
                    host_rx_ns: 0,
                    hw_or_kernel_ts: false
                };
                burst
            ],
            rx_len: vec![0; burst],
            rx_count: 0,
            // SAFETY: plain old data, zero is valid.
            rx_names: vec![unsafe { zeroed() }; burst],
            rx_ctrl: vec![[0; CTRL_SIZE]; burst],
            tx: Vec::with_capacity(burst * 32),
            tx_own: Vec::with_capacity(64 * 1024),
            counters: IoCounters::default(),
        })
    }

    fn recv_socket(&mut self, ep: usize) -> io::Result<usize> {
        let start = self.rx_count;
        let want = (self.burst - start).min(RX_BATCH);
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: iovec is plain old data; zero is valid and every used entry is set below.
        let mut iov: [libc::iovec; RX_BATCH] = unsafe { zeroed() };
        // SAFETY: as above for mmsghdr.
        let mut hdrs: [libc::mmsghdr; RX_BATCH] = unsafe { zeroed() };
        for k in 0..want {
            let i = start + k;
            iov[k] = libc::iovec {
                iov_base: self.rx_bufs[i * BUF_SIZE..].as_mut_ptr() as *mut libc::c_void,
                iov_len: BUF_SIZE,
            };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = &mut self.rx_names[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
            h.msg_control = self.rx_ctrl[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CTRL_SIZE;
        }
        // SAFETY: every header points at live buffers owned by `self` (names,
        // control, data) or by this frame (iov), sized as declared; `want`
        // entries are initialized; the fd is a valid non-blocking socket.
        let n = unsafe {
            libc::recvmmsg(
                self.socks[ep].as_raw_fd(),
                hdrs.as_mut_ptr(),
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
        let mut kept = 0;
        for (k, hdr) in hdrs.iter().enumerate().take(n as usize) {
            let mh = &hdr.msg_hdr;
            if mh.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.rx_truncated += 1;
                continue;
            }
            let i = start + k;
            let ts = kernel_timestamp(mh);
            let dst = start + kept;
            if dst != i {
                self.rx_bufs.copy_within(
                    i * BUF_SIZE..i * BUF_SIZE + hdr.msg_len as usize,
                    dst * BUF_SIZE,
                );
                self.rx_names[dst] = self.rx_names[i];
            }
            self.rx_len[dst] = hdr.msg_len as usize;
            self.rx_meta[dst] = RxMeta {
                src: from_sockaddr(&self.rx_names[dst]),
                endpoint: ep as u8,
                host_rx_ns: ts.unwrap_or(now),
                hw_or_kernel_ts: ts.is_some(),
            };
            if let Some(t) = ts {
                let queued = now.saturating_sub(t);
                self.counters.rx_queue_ns = self.counters.rx_queue_ns.saturating_add(queued);
                self.counters.rx_queued_over_1ms += u64::from(queued > RX_QUEUED_LIMIT_NS);
            }
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += hdr.msg_len as u64;
            kept += 1;
        }
        self.rx_count += kept;
        Ok(kept)
    }

    fn send_batch(&mut self, from: usize, to: usize) -> usize {
        let n = to - from;
        // SAFETY: plain old data, zero is valid; used entries are set below.
        let mut iov: [libc::iovec; TX_BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; TX_BATCH] = unsafe { zeroed() };
        for k in 0..n {
            let e = &mut self.tx[from + k];
            let (ptr, len) = match e.src {
                TxSrc::Rx(i) => (self.rx_bufs[i * BUF_SIZE..].as_ptr(), self.rx_len[i]),
                TxSrc::Own { off, len } => (self.tx_own[off..].as_ptr(), len),
            };
            iov[k] = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = &mut e.dst as *mut _ as *mut libc::c_void;
            h.msg_namelen = e.dst_len;
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
        }
        let mut sent = 0usize;
        let mut retries = 0;
        while sent < n {
            // SAFETY: headers [sent..n] point at live buffers owned by `self`
            // (rx buffers, own tx bytes, destination addresses) or this frame
            // (iov), none of which move during the call; the kernel only reads them.
            let rc = unsafe {
                libc::sendmmsg(
                    self.socks[0].as_raw_fd(),
                    hdrs[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                for h in &hdrs[sent..sent + rc as usize] {
                    self.counters.tx_bytes += h.msg_len as u64;
                }
                sent += rc as usize;
                self.counters.tx_packets += rc as u64;
                retries = 0;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted if retries < TX_RETRIES => {
                    retries += 1;
                    std::thread::yield_now();
                }
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                    // Socket buffer stayed full: drop the rest, counted.
                    self.counters.tx_dropped += (n - sent) as u64;
                    return sent;
                }
                _ => {
                    // The first message failed (e.g. unreachable): drop it, counted.
                    self.counters.tx_dropped += 1;
                    sent += 1;
                }
            }
        }
        sent
    }
}

fn kernel_timestamp(mh: &libc::msghdr) -> Option<u64> {
    // SAFETY: `mh` was filled by recvmmsg with msg_control/msg_controllen
    // describing our control buffer; CMSG_* walk only within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    None
}

impl PacketIo for UdpBackend {
    fn recv_burst(&mut self) -> io::Result<usize> {
        // Queued forwards point into the receive buffers: send them first.
        if !self.tx.is_empty() {
            self.flush()?;
        }
        self.rx_count = 0;
        let mut err = None;
        for ep in 0..self.socks.len() {
            loop {
                match self.recv_socket(ep) {
                    Ok(n) if n == RX_BATCH && self.rx_count < self.burst => continue,
                    Ok(_) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
        }
        match (self.rx_count, err) {
            (0, Some(e)) => Err(e),
            (n, _) => Ok(n),
        }
    }

    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        let len = self.rx_len[i];
        (
            self.rx_meta[i],
            &mut self.rx_bufs[i * BUF_SIZE..i * BUF_SIZE + len],
        )
    }

    fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
        for d in dsts {
            let (dst, dst_len) = to_sockaddr(d);
            self.tx.push(TxEntry {
                src: TxSrc::Rx(i),
                dst,
                dst_len,
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
        });
    }

    fn flush(&mut self) -> io::Result<usize> {
        let total = self.tx.len();
        let mut sent = 0;
        let mut at = 0;
        while at < total {
            let to = (at + TX_BATCH).min(total);
            sent += self.send_batch(at, to);
            at = to;
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

    #[test]
    fn busy_port_error_says_what_to_do() {
        let a = UdpBackend::bind(&[lo()], 8, 1 << 16).unwrap();
        let e = UdpBackend::bind(&a.local_addrs(), 8, 1 << 16).unwrap_err();
        assert!(matches!(e, OpenError::AddrInUse { .. }));
        assert!(e.to_string().contains("already in use"));
    }
}
