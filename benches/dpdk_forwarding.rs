//! One proxy's forwarding rate at fanout 10 with H = 0 (10 copies per packet)
//! and H = 2 (30 copies), DPDK backend vs kernel UDP backend, measured back
//! to back in one run, plus the raw `tx_burst` rate of the same vdev (the
//! limit on this machine).
//!
//! - DPDK: 2^20 distinct frames are prepared (and tagged) before any clock
//!   starts. Each row takes them one RX ring (1024 frames) at a time: the
//!   ring is copied into mbufs with the clocks stopped (standing in for the
//!   NIC's DMA, which is not the proxy's CPU work), then the timed part:
//!   receive in bursts of 32 (parsing each frame as `recv_burst` does), the
//!   real proxy state machine and guard, zero-copy replication (a header
//!   mbuf chained to the received one) and transmission in bursts to a
//!   `net_null` port. The proxy reads each frame from memory written up to a
//!   ring (~2 MB of mbufs) earlier.
//! - Kernel: a socket sends the input packets to the proxy's socket; the proxy
//!   receives them with `recvmmsg` and replicates with `sendmmsg` to 10 or 30
//!   loopback sockets.
//!
//! Each row runs with authentication off (insecure) and on (every packet
//! carries the publisher's tags; the proxy runs the guard — source, stream,
//! deadline, tree tag — after the read-only duplicate check, as `ProxyNode`
//! does). Sealing the input packets (the publisher's work) is not timed.
//!
//! Ratios to the raw rate are printed from wall time and from this thread's
//! CPU time (`CLOCK_THREAD_CPUTIME_ID`: on a shared machine wall time
//! also counts the time other work held the CPU; the DPDK rows and the raw
//! rate make no system calls but the two clock reads around each timed
//! ring). Each H also runs once more with
//! authentication on but without replication, splitting a copy's cost into
//! the per-packet work it carries (1/10 of it at H = 0, 1/30 at H = 2) and
//! the replication itself.
//!
//! Run: `cargo bench -p jasper-benches --features dpdk --bench dpdk_forwarding`

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use jasper_core::auth::{Auth, KeyRole, MasterKeys};
use jasper_core::guard::{Guard, GuardRole, Sources, TrustSection};
use jasper_core::plan::{loopback_inventory, Plan, TreeSpec};
use jasper_core::proxy::{ProxyConfig, ProxyCore, Verdict};
use jasper_core::wire::{DataBuilder, Header, Kind};
use jasper_dpdk::{DpdkBackend, Eal, Mempool, Port};
use jasper_io::udp::UdpBackend;
use jasper_io::PacketIo;

const MSGS_PER_PACKET: u16 = 20;
const SECONDS: f64 = 2.0;
/// Packets per DPDK row (prepared before timing).
const DPDK_FRAMES: u64 = 1 << 20;

fn proxy(hedge: u32) -> (ProxyCore, Vec<u32>) {
    // Level 2 of a depth-2 tree with fanout 10: each proxy has 10 children
    // and sends to H+1 sibling groups.
    let spec = TreeSpec {
        depth: Some(2),
        fanout: Some(10),
        hedge,
        spray: false,
        roots: 1,
    };
    let plan = Plan::build(&loopback_inventory(11, 100, false, 20000), &spec).unwrap();
    let me = plan.levels[1][0];
    let core = ProxyCore::new(
        plan.tables[me as usize].clone(),
        ProxyConfig {
            dedup_window: 1 << 20,
            ..ProxyConfig::default()
        },
    );
    let mut dsts = Vec::new();
    core.for_each_destination(0, |d, _| dsts.push(d));
    (core, dsts)
}

const NOW: u64 = 1_800_000_000_000_000_000;

fn keys() -> MasterKeys {
    MasterKeys::from_random(1, &[9u8; 96])
}

/// A data packet of stream 1 (tagged by the publisher's keys when given).
fn payload_with(seq: u64, sealer: Option<&Auth>) -> Vec<u8> {
    let mut buf = vec![0u8; 1600];
    let mut b = DataBuilder::new(&mut buf, 1472).unwrap();
    for _ in 0..MSGS_PER_PACKET {
        b.push(&[0x41; 32]).unwrap();
    }
    let mut h = Header::new(Kind::Data);
    h.seq = seq;
    h.stream = 1;
    h.send_time_ns = NOW;
    h.deadline_ns = NOW + 200_000;
    let mut n = b.finish(&h);
    if let Some(a) = sealer {
        n = a.seal_publisher(&mut buf, n).unwrap();
    }
    buf.truncate(n);
    buf
}

fn payload(seq: u64) -> Vec<u8> {
    payload_with(seq, None)
}

/// The proxy's guard: authenticated (tree key) or insecure.
fn guard(auth: bool, upstream: SocketAddr) -> Guard {
    Guard::new(
        GuardRole::Proxy,
        TrustSection {
            insecure: !auth,
            ..TrustSection::default()
        },
        auth.then(|| Auth::new(&keys().key_file(KeyRole::Proxy, 2, None))),
        Sources {
            upstream: vec![upstream],
            children: vec![],
            downstream: vec![],
        },
    )
}

struct Rate {
    packets_in: u64,
    copies_out: u64,
    seconds: f64,
    /// This thread's time on a CPU over the same span (DPDK rows).
    cpu_seconds: Option<f64>,
}

/// This thread's time on a CPU so far (ns): `CLOCK_THREAD_CPUTIME_ID`,
/// exact at every read (unlike `/proc/thread-self/schedstat`, which moves
/// at scheduler ticks). On a shared machine wall time also counts the time
/// other work held the CPU; the DPDK rows and the raw rate run without
/// system calls, so their CPU time is their own work.
fn on_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "CLOCK_THREAD_CPUTIME_ID");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ip(d: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 1, (d >> 8) as u8, d as u8)
}

/// One backend for every row (a closed vdev port cannot be restarted).
fn dpdk_backend(eal: &'static Eal) -> DpdkBackend {
    let (_, dsts) = proxy(2);
    let arp: Vec<_> = dsts
        .iter()
        .map(|d| (ip(*d), [2, 0, 0, 0, (*d >> 8) as u8, *d as u8]))
        .collect();
    DpdkBackend::open(eal, 0, [10, 0, 0, 10].into(), 7000, 16383, 32, &arp).unwrap()
}

/// Frames the NIC has written ahead of the proxy's poll: one RX ring.
const RX_RING: usize = 1024;

/// The publisher's work (packing, tagging) and the frame around it, done
/// before any clock starts: `DPDK_FRAMES` distinct packets (sequences 0..),
/// tagged when `auth`. Every row runs a fresh proxy over them.
fn frames(auth: bool) -> Vec<Vec<u8>> {
    let sealer = auth.then(|| Auth::new(&keys().key_file(KeyRole::Sender, 0, None)));
    let r = jasper_dpdk::net::Route {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: io_mac(),
        src_ip: [10, 0, 0, 1].into(),
        dst_ip: [10, 0, 0, 10].into(),
        src_port: 7000,
        dst_port: 7000,
    };
    (0..DPDK_FRAMES)
        .map(|seq| {
            let p = payload_with(seq, sealer.as_ref());
            let mut f = vec![0u8; jasper_dpdk::net::HDR_LEN + p.len()];
            jasper_dpdk::net::write_headers(&mut f, &r, 1, p.len(), jasper_dpdk::net::sum16(&p));
            f[jasper_dpdk::net::HDR_LEN..].copy_from_slice(&p);
            f
        })
        .collect()
}

/// What `ProxyNode::poll` does with one received packet, without the I/O:
/// the duplicate check, the guard and the state machine; when the packet
/// is to be forwarded, `sel` holds its destinations and the answer is true.
fn route(
    core: &mut ProxyCore,
    g: &mut Guard,
    by_id: &[SocketAddr],
    sel: &mut Vec<SocketAddr>,
    src: SocketAddr,
    buf: &mut [u8],
) -> bool {
    if core.is_duplicate(buf) {
        core.count_duplicate();
        return false;
    }
    if g.admit(NOW, src, buf).is_err() {
        return false;
    }
    let Verdict::Forward { key } = core.handle_admitted(NOW, buf) else {
        return false;
    };
    sel.clear();
    core.for_each_destination(key, |d, _| sel.push(by_id[d as usize]));
    true
}

/// One fresh proxy over `frames`, RX_RING frames at a time: each ring is
/// first staged into mbufs with the clocks stopped (the NIC's DMA, not the
/// proxy's work), then received in bursts of 32 (`recv_staged`: the frame
/// parsing `recv_burst` does), run through the duplicate check, the guard
/// and the state machine as `ProxyNode` does, and replicated, with the
/// clocks running. The proxy reads each frame from memory written up to a
/// ring (~2 MB of mbufs) earlier, as it would after a NIC's DMA.
///
/// With `replicate` false, everything but `forward` and `flush` runs (the
/// copies are counted, not made): the per-packet work that each copy's cost
/// also carries, 1/10 of it at H = 0 and 1/30 at H = 2.
fn dpdk_rate(
    io: &mut DpdkBackend,
    frames: &[Vec<u8>],
    hedge: u32,
    auth: bool,
    replicate: bool,
) -> Rate {
    let (mut core, dsts) = proxy(hedge);
    let mut g = guard(auth, SocketAddr::from(([10, 0, 0, 1], 7000)));
    let mut by_id = vec![SocketAddr::from(([0, 0, 0, 0], 0)); 256];
    for d in &dsts {
        by_id[*d as usize] = SocketAddr::from((ip(*d), 7000));
    }
    let (mut packets, mut copies) = (0u64, 0u64);
    let mut sel = Vec::with_capacity(32);
    let (mut wall, mut cpu_ns) = (Duration::ZERO, 0u64);
    for ring in frames.chunks(RX_RING) {
        for f in ring {
            assert!(io.stage(f), "mbufs for one ring");
        }
        let cpu_start = on_cpu_ns();
        let start = Instant::now();
        loop {
            let n = io.recv_staged();
            if n == 0 {
                break;
            }
            packets += n as u64;
            for i in 0..n {
                let (meta, buf) = io.rx(i);
                if !route(&mut core, &mut g, &by_id, &mut sel, meta.src, buf) {
                    continue;
                }
                if replicate {
                    io.forward(i, &sel);
                } else {
                    copies += sel.len() as u64;
                }
            }
            if replicate {
                copies += io.flush().unwrap() as u64;
            }
        }
        wall += start.elapsed();
        cpu_ns += on_cpu_ns() - cpu_start;
    }
    io.release_rx();
    assert_eq!(packets, frames.len() as u64, "every frame received");
    assert_eq!(g.stats().admitted, packets, "every packet passed the guard");
    assert_eq!(io.mbufs_in_use(), 0, "no mbuf leak");
    Rate {
        packets_in: packets,
        copies_out: copies,
        seconds: wall.as_secs_f64(),
        cpu_seconds: Some(cpu_ns as f64 / 1e9),
    }
}

/// The injected frames' destination MAC (not checked by the backend).
fn io_mac() -> [u8; 6] {
    [2, 0, 0, 0, 0, 10]
}

fn kernel_rate(hedge: u32, auth: bool) -> Rate {
    let (mut core, dsts) = proxy(hedge);
    let sealer = auth.then(|| Auth::new(&keys().key_file(KeyRole::Sender, 0, None)));
    let sinks: Vec<UdpSocket> = dsts
        .iter()
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut by_id = vec![SocketAddr::from(([0, 0, 0, 0], 0)); 256];
    for (d, s) in dsts.iter().zip(&sinks) {
        by_id[*d as usize] = s.local_addr().unwrap();
    }
    let mut io = UdpBackend::bind(&["127.0.0.1:0".parse().unwrap()], 32, 8 << 20).unwrap();
    let me = io.local_addrs()[0];
    let mut src = UdpBackend::bind(&["127.0.0.1:0".parse().unwrap()], 32, 8 << 20).unwrap();
    let mut g = guard(auth, src.local_addrs()[0]);
    let mut timed = Duration::ZERO;
    let (mut seq, mut copies, mut inp) = (0u64, 0u64, 0u64);
    let mut sel = Vec::with_capacity(32);
    let mut drain = [0u8; 2048];
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(32);
    while timed.as_secs_f64() < SECONDS {
        batch.clear();
        for _ in 0..32 {
            batch.push(payload_with(seq, sealer.as_ref()));
            seq += 1;
        }
        let t0 = Instant::now();
        for p in &batch {
            src.send_to(p, me);
        }
        src.flush().unwrap();
        let n = io.recv_burst().unwrap();
        inp += n as u64;
        for i in 0..n {
            let (meta, buf) = io.rx(i);
            if route(&mut core, &mut g, &by_id, &mut sel, meta.src, buf) {
                io.forward(i, &sel);
            }
        }
        copies += io.flush().unwrap() as u64;
        // Keep the sinks' buffers from filling (the kernel would drop).
        timed += t0.elapsed();
        for s in &sinks {
            s.set_nonblocking(true).unwrap();
            while s.recv(&mut drain).is_ok() {}
        }
    }
    Rate {
        packets_in: inp,
        copies_out: copies,
        seconds: timed.as_secs_f64(),
        cpu_seconds: None,
    }
}

/// Packets per second of wall time and, when known, of CPU time.
fn raw_tx_rate(eal: &'static Eal) -> (f64, Option<f64>) {
    let pool = Mempool::new(eal, "raw_tx", 8191).unwrap();
    let port = Port::start(eal, 1, &pool).unwrap();
    let len = jasper_dpdk::net::HDR_LEN + payload(0).len();
    let cpu_start = on_cpu_ns();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs_f64(SECONDS) {
        let mut arr: [*mut jasper_ffi::rte_mbuf; 32] = [std::ptr::null_mut(); 32];
        let mut k = 0;
        for slot in arr.iter_mut() {
            let Some(mut m) = pool.alloc() else { break };
            m.append(len as u16);
            *slot = m.into_raw();
            k += 1;
        }
        // SAFETY: arr[..k] are valid mbufs we own; tx_burst takes the ones it sends.
        let n = unsafe { jasper_ffi::jasper_tx_burst(port.id(), 0, arr.as_mut_ptr(), k as u16) }
            as usize;
        for p in &arr[n..k] {
            // SAFETY: not sent, still ours.
            drop(unsafe { jasper_dpdk::Mbuf::from_raw(std::ptr::NonNull::new(*p).unwrap()) });
        }
        sent += n as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = (on_cpu_ns() - cpu_start) as f64 / 1e9;
    (sent as f64 / seconds, Some(sent as f64 / cpu))
}

fn main() {
    let args = jasper_dpdk::vdev_eal_args(
        &format!("jasper-bench-{}", std::process::id()),
        0,
        &["net_null0", "net_null1"],
    );
    let eal = Eal::init(&args).expect("EAL");
    let mut io = dpdk_backend(eal);
    // `--profile N`: only the DPDK row H = 0 with authentication on, N
    // times (for `perf record`).
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--profile") {
        let times = argv.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(4);
        let f = frames(true);
        for _ in 0..times {
            let r = dpdk_rate(&mut io, &f, 0, true, true);
            println!(
                "H=0 auth on: {:.1} ns/copy of CPU time",
                1e9 * r.cpu_seconds.unwrap() / r.copies_out as f64
            );
        }
        return;
    }
    println!("one proxy, fanout 10, {MSGS_PER_PACKET} × 32-byte messages per packet ({} bytes), {SECONDS} s per kernel row, {DPDK_FRAMES} packets per DPDK row", payload(0).len());
    println!(
        "DPDK rows: {DPDK_FRAMES} distinct frames prepared and tagged before any clock; each \
         RX ring of {RX_RING} is copied into mbufs with the clocks stopped (standing in for the \
         NIC's DMA: the proxy then reads frames written up to a ring earlier), then timed: \
         receive in bursts of 32 (frame parsing), duplicate check, guard (auth on: tree tag \
         verified on every packet), state machine with its retransmit store (a copy of every \
         packet), destination list, replication and tx_burst; a fresh proxy per row"
    );
    // Results by [hedge][auth]; the same frames serve every DPDK row of one
    // authentication setting (a fresh proxy each time).
    let mut dpdk: [[Option<Rate>; 2]; 2] = Default::default();
    let mut kernel: [[Option<Rate>; 2]; 2] = Default::default();
    let mut bare: [Option<Rate>; 2] = Default::default();
    for auth in [false, true] {
        let f = frames(auth);
        if !auth {
            // Warm-up, not reported: the pools' and the store's memory
            // touched once, as in a proxy that has been running.
            dpdk_rate(&mut io, &f[..1 << 16], 0, false, true);
        }
        for (h, hedge) in [0, 2].into_iter().enumerate() {
            dpdk[h][auth as usize] = Some(dpdk_rate(&mut io, &f, hedge, auth, true));
            kernel[h][auth as usize] = Some(kernel_rate(hedge, auth));
            if auth {
                // The same row without replication.
                bare[h] = Some(dpdk_rate(&mut io, &f, hedge, true, false));
            }
        }
    }
    println!(
        "{:<8} {:>3} {:>5} {:>16} {:>16} {:>16} {:>12}",
        "backend", "H", "auth", "packets in/s", "copies out/s", "msgs out/s", "ns/copy"
    );
    let mut rows = Vec::new();
    for (h, hedge) in [0u32, 2].into_iter().enumerate() {
        let mut per = Vec::new();
        for auth in [false, true] {
            let d = dpdk[h][auth as usize].take().unwrap();
            let k = kernel[h][auth as usize].take().unwrap();
            for (name, r) in [("dpdk", &d), ("kernel", &k)] {
                let out = r.copies_out as f64 / r.seconds;
                println!(
                    "{:<8} {:>3} {:>5} {:>16.0} {:>16.0} {:>16.0} {:>12.1}",
                    name,
                    hedge,
                    if auth { "on" } else { "off" },
                    r.packets_in as f64 / r.seconds,
                    out,
                    out * MSGS_PER_PACKET as f64,
                    1e9 / out
                );
            }
            per.push((d, k));
        }
        let rate = |r: &Rate| r.copies_out as f64 / r.seconds;
        println!(
            "H={hedge}: authentication costs DPDK {:+.1}% ns/copy, kernel {:+.1}% ns/copy",
            100.0 * (rate(&per[0].0) / rate(&per[1].0) - 1.0),
            100.0 * (rate(&per[0].1) / rate(&per[1].1) - 1.0)
        );
        rows.push((hedge, per, bare[h].take().unwrap()));
    }
    let (raw, raw_cpu) = raw_tx_rate(eal);
    println!(
        "raw tx_burst on net_null (alloc + send {}-byte frames): {:.0} packets/s ({:.1} ns/packet)",
        jasper_dpdk::net::HDR_LEN + payload(0).len(),
        raw,
        1e9 / raw
    );
    let rate = |r: &Rate| r.copies_out as f64 / r.seconds;
    let cpu_ns = |r: &Rate| Some(1e9 * r.cpu_seconds? / r.copies_out as f64);
    for (h, per, bare) in &rows {
        let (off, on) = (&per[0].0, &per[1].0);
        println!(
            "H={h}: DPDK/kernel = {:.1}×, DPDK/raw vdev = {:.0}% (auth off), {:.0}% (auth on)",
            rate(off) / rate(&per[0].1),
            100.0 * rate(off) / raw,
            100.0 * rate(on) / raw
        );
        // On-CPU time: robust to other work on the machine.
        let (Some(raw_cpu), Some(off_ns), Some(on_ns), Some(share)) =
            (raw_cpu, cpu_ns(off), cpu_ns(on), cpu_ns(bare))
        else {
            continue;
        };
        let raw_ns = 1e9 / raw_cpu;
        println!(
            "H={h}, this thread's CPU time: DPDK {off_ns:.1} ns/copy (auth off), {on_ns:.1} (auth on), \
             raw {raw_ns:.1} ns/packet: DPDK/raw vdev = {:.0}% (auth off), {:.0}% (auth on)",
            100.0 * raw_ns / off_ns,
            100.0 * raw_ns / on_ns,
        );
        // Auth on: ns/copy = per-packet share + replication (forward + flush).
        println!(
            "H={h}, auth on, CPU time: {on_ns:.1} ns/copy = {share:.1} per-packet work without \
             replication (receive, duplicate check, guard, state machine, destination list; \
             {:.0} ns/packet) + {:.1} replication (raw tx_burst {raw_ns:.1})",
            share * (bare.copies_out / bare.packets_in) as f64,
            on_ns - share,
        );
    }
}
