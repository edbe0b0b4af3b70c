//! The DPDK backend of the packet I/O trait.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use jasper_ffi as ffi;
use jasper_io::{host_now_ns, Capabilities, IoCounters, PacketIo, RxMeta};

use crate::eal::{Eal, Port};
use crate::mbuf::{Mbuf, Mempool};
use crate::net::{self, Frame, HeaderTemplate, Route, HDR_LEN};
use crate::DpdkError;

const MAX_BURST: usize = 64;

/// Hasher for the ARP table and the header templates (looked up once per
/// copy): one multiply per address byte, or per `u64` key, instead of
/// SipHash. Keys come from our own configuration and the local L2 segment.
#[derive(Default)]
struct IpHasher(u64);

impl Hasher for IpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        // The high half of the product mixes every input bit: fold it down
        // so the bucket index (low bits) does too.
        let h = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// The template map's key: address and port of an IPv4 destination.
fn dst_key(a: &SocketAddrV4) -> u64 {
    (u32::from(*a.ip()) as u64) << 16 | a.port() as u64
}

/// Header templates kept (destinations forwarded to) before the cache starts
/// over.
const MAX_TEMPLATES: usize = 1 << 16;
/// References one received payload may carry. Each copy in flight holds one
/// (the NIC's TX ring bounds them, 1024 here), the count is 16 bits wide:
/// past this, copies are dropped rather than wrap it.
const MAX_PAYLOAD_REFS: usize = 0xff00;
const TX_RETRIES: u32 = 32;

/// DPDK-specific counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DpdkCounters {
    /// UDP frames for another address or port.
    pub rx_not_for_us: u64,
    /// Frames that are neither IPv4/UDP nor ARP, or malformed.
    pub rx_other: u64,
    /// Multi-segment frames (not supported on receive).
    pub rx_multiseg: u64,
    /// ARP frames received.
    pub arp_rx: u64,
    /// ARP replies sent.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// Copies dropped because the next hop's MAC is unknown (yet).
    pub arp_miss: u64,
    /// Mbuf allocation failures.
    pub alloc_fail: u64,
}

struct RxPkt {
    mbuf: Mbuf,
    meta: RxMeta,
    off: usize,
    len: usize,
    /// The payload's partial checksum, once a forward computed it (reset
    /// when the caller borrows the payload mutably).
    sum: Option<u32>,
}

/// DPDK port as a packet I/O backend (IPv4/UDP, one queue).
///
/// Field order is drop order: mbufs first, then the port, then the pool.
pub struct DpdkBackend {
    rx: Vec<RxPkt>,
    /// Frames staged by [`DpdkBackend::stage`], not yet received (a test
    /// and benchmark stand-in for the port's RX ring).
    staged: VecDeque<Mbuf>,
    tx: Vec<Mbuf>,
    port: Port,
    pool: Mempool,
    /// Small mbufs for the per-copy Ethernet/IPv4/UDP headers.
    hdr_pool: Mempool,
    ip: Ipv4Addr,
    udp_port: u16,
    mac: [u8; 6],
    arp: HashMap<Ipv4Addr, [u8; 6], BuildHasherDefault<IpHasher>>,
    arp_asked: HashMap<Ipv4Addr, Instant>,
    /// Per destination, its precomputed headers (index into `templates`);
    /// emptied whenever an ARP entry changes.
    template_of: HashMap<u64, u32, BuildHasherDefault<IpHasher>>,
    templates: Vec<HeaderTemplate>,
    /// The last destination group forwarded to whose every template was
    /// known, and those templates (also the scratch list of one `forward`:
    /// the templates of the destinations that have one).
    group: Vec<SocketAddr>,
    group_templates: Vec<u32>,
    ip_id: u16,
    burst: usize,
    sent_since_flush: usize,
    io: IoCounters,
    dpdk: DpdkCounters,
}

impl std::fmt::Debug for DpdkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkBackend")
            .field("port", &self.port.id())
            .field("ip", &self.ip)
            .field("udp_port", &self.udp_port)
            .finish()
    }
}

impl DpdkBackend {
    /// Start `port` with a pool of `mbufs`, serving `ip:udp_port`.
    pub fn open(
        eal: &Eal,
        port: u16,
        ip: Ipv4Addr,
        udp_port: u16,
        mbufs: u32,
        burst: usize,
        static_arp: &[(Ipv4Addr, [u8; 6])],
    ) -> Result<Self, DpdkError> {
        let pool = Mempool::new(eal, &format!("jasper_p{port}"), mbufs)?;
        let room = (ffi::RTE_PKTMBUF_HEADROOM as usize + 64) as u16;
        let hdr_pool = Mempool::with_data_room(eal, &format!("jasper_h{port}"), mbufs * 2, room)?;
        let p = Port::start(eal, port, &pool)?;
        Ok(DpdkBackend {
            rx: Vec::with_capacity(MAX_BURST),
            staged: VecDeque::new(),
            hdr_pool,
            tx: Vec::with_capacity(4 * MAX_BURST),
            mac: p.mac(),
            port: p,
            pool,
            ip,
            udp_port,
            arp: static_arp.iter().copied().collect(),
            arp_asked: HashMap::new(),
            template_of: HashMap::default(),
            templates: Vec::new(),
            group: Vec::new(),
            group_templates: Vec::new(),
            ip_id: 0,
            burst: burst.clamp(1, MAX_BURST),
            sent_since_flush: 0,
            io: IoCounters::default(),
            dpdk: DpdkCounters::default(),
        })
    }

    /// DPDK-specific counters.
    pub fn dpdk_counters(&self) -> DpdkCounters {
        self.dpdk
    }
    /// Mbufs currently allocated from this backend's pools.
    pub fn mbufs_in_use(&self) -> u32 {
        self.pool.in_use() + self.hdr_pool.in_use()
    }
    /// This port's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
    /// Test and benchmark hook: copy `frame` into an mbuf and classify it as
    /// if the port had received it (appended to the current burst when it is
    /// a UDP packet for us; stamped with the burst's first receive time).
    /// Returns the packet's index for [`PacketIo::rx`].
    pub fn inject(&mut self, frame: &[u8]) -> Option<usize> {
        let mut m = self.pool.alloc()?;
        m.append(frame.len() as u16)?.copy_from_slice(frame);
        match net::parse(m.data()) {
            Frame::Udp(u) if u.dst_ip == self.ip && u.dst_port == self.udp_port => {
                self.rx.push(RxPkt {
                    meta: RxMeta {
                        src: SocketAddr::V4(SocketAddrV4::new(u.src_ip, u.src_port)),
                        endpoint: 0,
                        // One clock read per burst, as `recv_burst` does.
                        host_rx_ns: match self.rx.last() {
                            Some(p) => p.meta.host_rx_ns,
                            None => host_now_ns(),
                        },
                        hw_or_kernel_ts: false,
                    },
                    off: u.payload_off,
                    len: u.payload_len,
                    sum: None,
                    mbuf: m,
                });
                Some(self.rx.len() - 1)
            }
            _ => None,
        }
    }

    /// Release the current burst's mbufs without receiving (pairs with `inject`).
    pub fn release_rx(&mut self) {
        self.rx.clear();
    }

    /// Add or replace an ARP entry.
    pub fn add_arp(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        self.learn(ip, mac);
    }

    /// Record `ip`'s MAC; header templates built from an older one go.
    fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        if self.arp.insert(ip, mac).is_some_and(|old| old != mac) {
            self.forget_templates();
        }
    }

    fn forget_templates(&mut self) {
        self.template_of.clear();
        self.templates.clear();
        self.group.clear();
        self.group_templates.clear();
    }

    fn arp_request(&mut self, ip: Ipv4Addr) {
        if self
            .arp_asked
            .get(&ip)
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.arp_asked.insert(ip, Instant::now());
        let Some(mut m) = self.pool.alloc() else {
            self.dpdk.alloc_fail += 1;
            return;
        };
        if let Some(f) = m.append(42) {
            net::write_arp(f, 1, self.mac, self.ip, None, ip);
            self.tx.push(m);
            self.dpdk.arp_requests += 1;
        }
    }

    fn route(&mut self, dst: SocketAddr) -> Option<Route> {
        let SocketAddr::V4(d) = dst else {
            self.io.tx_dropped += 1;
            return None;
        };
        match self.arp.get(d.ip()) {
            Some(mac) => Some(Route {
                src_mac: self.mac,
                dst_mac: *mac,
                src_ip: self.ip,
                dst_ip: *d.ip(),
                src_port: self.udp_port,
                dst_port: d.port(),
            }),
            None => {
                self.dpdk.arp_miss += 1;
                self.io.tx_dropped += 1;
                self.arp_request(*d.ip());
                None
            }
        }
    }

    fn next_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }
}

impl DpdkBackend {
    /// The header template of `d`, built on first use from the ARP table;
    /// `None` (the copy dropped and counted) when `d` is not IPv4 or its
    /// MAC is unknown (an ARP request goes out).
    fn template(&mut self, d: SocketAddr) -> Option<u32> {
        if let SocketAddr::V4(a) = d {
            if let Some(t) = self.template_of.get(&dst_key(&a)) {
                return Some(*t);
            }
        }
        let r = self.route(d)?;
        let SocketAddr::V4(a) = d else { return None };
        let t = self.templates.len() as u32;
        self.templates.push(HeaderTemplate::new(&r));
        self.template_of.insert(dst_key(&a), t);
        Some(t)
    }

    /// Make received packet `i`'s mbuf the payload segment its copies
    /// share (trimmed to the UDP payload; done once per packet, before it
    /// is shared) and return the payload's length and partial checksum.
    fn payload_segment(&mut self, i: usize) -> (usize, u32) {
        let p = &mut self.rx[i];
        if p.off != 0 || p.mbuf.data_len() != p.len {
            debug_assert_eq!(p.mbuf.refcnt(), 1, "trimmed before any copy shares it");
            p.mbuf.adj(p.off as u16);
            p.mbuf.truncate(p.len);
            p.off = 0;
        }
        let sum = match p.sum {
            Some(s) => s,
            None => *p.sum.insert(net::sum16(p.mbuf.data())),
        };
        (p.len, sum)
    }
}

impl DpdkBackend {
    /// Send one burst of queued mbufs (bounded retries, drops counted).
    fn tx_burst(&mut self) -> usize {
        let k = self.tx.len().min(MAX_BURST);
        let mut arr: [*mut ffi::rte_mbuf; MAX_BURST] = [std::ptr::null_mut(); MAX_BURST];
        let mut bytes = 0u64;
        for (slot, m) in arr.iter_mut().zip(self.tx.drain(..k)) {
            bytes += m.pkt_len() as u64;
            *slot = m.into_raw();
        }
        let mut sent = 0usize;
        let mut tries = 0;
        while sent < k && tries < TX_RETRIES {
            // SAFETY: arr[sent..k] are mbufs we own; tx_burst takes
            // ownership of the ones it accepts.
            sent += unsafe {
                ffi::jasper_tx_burst(
                    self.port.id(),
                    0,
                    arr[sent..].as_mut_ptr(),
                    (k - sent) as u16,
                )
            } as usize;
            tries += 1;
        }
        for p in &arr[sent..k] {
            if let Some(nn) = NonNull::new(*p) {
                // SAFETY: not accepted by tx_burst, so still ours: free it.
                drop(unsafe { Mbuf::from_raw(nn) });
            }
        }
        self.io.tx_packets += sent as u64;
        self.io.tx_dropped += (k - sent) as u64;
        self.io.tx_bytes += bytes;
        self.sent_since_flush += sent;
        sent
    }
}

impl DpdkBackend {
    /// Test and benchmark hook: copy `frame` into a fresh mbuf and queue it
    /// as if the port's NIC had written it into the RX ring (nothing is
    /// parsed: that is [`DpdkBackend::recv_staged`]'s work, as it is
    /// `recv_burst`'s). False when the pool is empty.
    pub fn stage(&mut self, frame: &[u8]) -> bool {
        let Some(mut m) = self.pool.alloc() else {
            return false;
        };
        let Some(d) = m.append(frame.len().min(u16::MAX as usize) as u16) else {
            return false;
        };
        d.copy_from_slice(frame);
        self.staged.push_back(m);
        true
    }

    /// Frames staged and not yet received.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// [`PacketIo::recv_burst`] from the frames [`DpdkBackend::stage`]
    /// queued instead of the port: up to a burst of them, classified (and
    /// counted) exactly as received ones.
    pub fn recv_staged(&mut self) -> usize {
        self.rx.clear();
        let n = self.staged.len().min(self.burst);
        if n == 0 {
            return 0;
        }
        let now = host_now_ns();
        for m in self.staged.iter().take(n) {
            m.prefetch(0, 64);
        }
        for _ in 0..n {
            let m = self.staged.pop_front().expect("counted above");
            self.classify(m, now);
        }
        self.rx.len()
    }

    /// One received frame: a UDP packet for us joins the burst; ARP is
    /// answered and learnt; anything else is counted and freed.
    fn classify(&mut self, mbuf: Mbuf, now: u64) {
        if mbuf.segments() > 1 {
            self.dpdk.rx_multiseg += 1;
            return;
        }
        self.io.rx_packets += 1;
        self.io.rx_bytes += mbuf.pkt_len() as u64;
        match net::parse(mbuf.data()) {
            Frame::Udp(u) if u.dst_ip == self.ip && u.dst_port == self.udp_port => {
                // The rest of the packet (the first line was just parsed):
                // in flight while the burst's other frames are classified.
                mbuf.prefetch(64, (u.payload_off + u.payload_len).saturating_sub(64));
                self.arp.entry(u.src_ip).or_insert(u.src_mac);
                self.rx.push(RxPkt {
                    meta: RxMeta {
                        src: SocketAddr::V4(SocketAddrV4::new(u.src_ip, u.src_port)),
                        endpoint: 0,
                        host_rx_ns: now,
                        hw_or_kernel_ts: false,
                    },
                    off: u.payload_off,
                    len: u.payload_len,
                    sum: None,
                    mbuf,
                });
            }
            Frame::Udp(_) => self.dpdk.rx_not_for_us += 1,
            Frame::Arp { op, sha, spa, tpa } => {
                self.dpdk.arp_rx += 1;
                self.learn(spa, sha);
                if op == 1 && tpa == self.ip {
                    match self.pool.alloc() {
                        Some(mut m) => {
                            if let Some(f) = m.append(42) {
                                net::write_arp(f, 2, self.mac, self.ip, Some(sha), spa);
                                self.tx.push(m);
                                self.dpdk.arp_replies += 1;
                            }
                        }
                        None => self.dpdk.alloc_fail += 1,
                    }
                }
            }
            Frame::Other(_) => self.dpdk.rx_other += 1,
        }
    }
}

/// Prefetch the first line of a just received mbuf's data (its headers).
///
/// # Safety
/// `m` must be a valid mbuf.
#[inline]
unsafe fn prefetch_headers(m: NonNull<ffi::rte_mbuf>) {
    // SAFETY: the caller's mbuf is valid; borrowed, not owned, so the
    // temporary `Mbuf` must not be dropped.
    let m = std::mem::ManuallyDrop::new(unsafe { Mbuf::from_raw(m) });
    m.prefetch(0, 64);
}

impl PacketIo for DpdkBackend {
    fn recv_burst(&mut self) -> io::Result<usize> {
        self.rx.clear();
        let mut arr: [*mut ffi::rte_mbuf; MAX_BURST] = [std::ptr::null_mut(); MAX_BURST];
        // SAFETY: the port is started; `arr` has room for `burst` pointers.
        let n =
            unsafe { ffi::jasper_rx_burst(self.port.id(), 0, arr.as_mut_ptr(), self.burst as u16) }
                as usize;
        let now = host_now_ns();
        for p in arr.iter().take(n) {
            if let Some(nn) = NonNull::new(*p) {
                // SAFETY: rx_burst filled arr[..n] with valid mbufs.
                unsafe { prefetch_headers(nn) };
            }
        }
        for p in arr.iter().take(n) {
            let Some(nn) = NonNull::new(*p) else { continue };
            // SAFETY: rx_burst handed us ownership of this mbuf.
            let mbuf = unsafe { Mbuf::from_raw(nn) };
            self.classify(mbuf, now);
        }
        Ok(self.rx.len())
    }

    fn rx(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        let p = &mut self.rx[i];
        let (off, len) = (p.off, p.len);
        p.sum = None; // the caller may change the payload
        (p.meta, &mut p.mbuf.data_mut()[off..off + len])
    }

    /// Zero-copy replication: each copy is one fresh header mbuf (42 bytes
    /// from the destination's template) chained to the received mbuf itself,
    /// which carries one reference per copy (as DPDK's `ipv4_multicast`
    /// example does); a chunk of up to 64 copies costs one bulk allocation
    /// and one reference-count update.
    fn forward(&mut self, i: usize, dsts: &[SocketAddr]) {
        if dsts.is_empty() {
            return;
        }
        let (len, sum) = self.payload_segment(i);
        // The proxy sends most packets to the same group of destinations:
        // one comparison of the list instead of one lookup per copy.
        if self.group.as_slice() != dsts {
            if self.templates.len() + dsts.len() > MAX_TEMPLATES {
                self.forget_templates();
            }
            self.group_templates.clear();
            let mut all = true;
            for d in dsts {
                match self.template(*d) {
                    Some(t) => self.group_templates.push(t),
                    None => all = false,
                }
            }
            self.group.clear();
            if all {
                self.group.extend_from_slice(dsts);
            }
        }
        // The templates of the copies to send (unresolved ones left out).
        let group_templates = std::mem::take(&mut self.group_templates);
        // In a local: a 16-bit store then a wider load of the field stalled
        // store forwarding once per copy.
        let mut ip_id = self.ip_id;
        for tmpl in group_templates.chunks(MAX_BURST) {
            let k = tmpl.len();
            let mut hdrs: [*mut ffi::rte_mbuf; MAX_BURST] = [std::ptr::null_mut(); MAX_BURST];
            if !self.hdr_pool.alloc_raw_bulk(&mut hdrs[..k]) {
                self.dpdk.alloc_fail += 1;
                self.io.tx_dropped += k as u64;
                continue;
            }
            let payload = &self.rx[i].mbuf;
            if payload.refcnt() as usize + k > MAX_PAYLOAD_REFS {
                for h in &hdrs[..k] {
                    // SAFETY: allocated above, not handed out: ours to free.
                    drop(unsafe { Mbuf::from_raw(NonNull::new_unchecked(*h)) });
                }
                self.io.tx_dropped += k as u64;
                continue;
            }
            // SAFETY: the k references go to the k chains built below, each
            // freed once (by the driver after sending, or by `tx_burst`).
            unsafe { payload.add_refs(k as u16) };
            let tail = payload.as_raw();
            for (h, t) in hdrs[..k].iter().zip(tmpl) {
                ip_id = ip_id.wrapping_add(1);
                // SAFETY: `h` is a fresh, exclusively owned mbuf from the
                // header pool: reset (data_off = headroom, one segment, no
                // data), with room for HDR_LEN bytes after data_off (its data
                // room is headroom + 64). Writing the header there and
                // chaining it to `tail` (single segment, `len` bytes, one of
                // the references added above) is what rte_pktmbuf_append +
                // rte_pktmbuf_chain would do.
                unsafe {
                    let m = *h;
                    let hdr = ((*m).buf_addr as *mut u8).add((*m).data_off as usize)
                        as *mut [u8; HDR_LEN];
                    self.templates[*t as usize].write(&mut *hdr, ip_id, len, sum);
                    (*m).data_len = HDR_LEN as u16;
                    (*m).pkt_len = (HDR_LEN + len) as u32;
                    (*m).nb_segs = 2;
                    (*m).next = tail;
                    self.tx.push(Mbuf::from_raw(NonNull::new_unchecked(m)));
                }
            }
            // Transmit as soon as a burst is ready: few mbufs in flight keeps
            // the mempool's per-core cache warm.
            while self.tx.len() >= MAX_BURST {
                self.tx_burst();
            }
        }
        self.ip_id = ip_id;
        self.group_templates = group_templates;
    }

    fn send_to(&mut self, bytes: &[u8], dst: SocketAddr) {
        let Some(route) = self.route(dst) else { return };
        let id = self.next_id();
        let Some(mut m) = self.pool.alloc() else {
            self.dpdk.alloc_fail += 1;
            self.io.tx_dropped += 1;
            return;
        };
        let Some(f) = m.append((HDR_LEN + bytes.len()).min(u16::MAX as usize) as u16) else {
            self.io.tx_dropped += 1;
            return;
        };
        net::write_headers(f, &route, id, bytes.len(), net::sum16(bytes));
        f[HDR_LEN..].copy_from_slice(bytes);
        self.tx.push(m);
    }

    fn flush(&mut self) -> io::Result<usize> {
        while !self.tx.is_empty() {
            self.tx_burst();
        }
        Ok(std::mem::take(&mut self.sent_since_flush))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            zero_copy_replication: true,
            rx_timestamps: false,
            max_burst: self.burst,
            name: "dpdk",
        }
    }

    fn counters(&self) -> IoCounters {
        self.io
    }

    fn local_addrs(&self) -> Vec<SocketAddr> {
        vec![SocketAddr::V4(SocketAddrV4::new(self.ip, self.udp_port))]
    }
}
