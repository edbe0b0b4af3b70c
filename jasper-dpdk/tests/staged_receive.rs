//! Frames staged with `DpdkBackend::stage` (the benchmark's stand-in for
//! the NIC's DMA) are received by `recv_staged` exactly as `recv_burst`
//! receives the same frames from the port: the same packets and payloads,
//! the same counters, ARP answered, one burst at a time, no mbuf kept.

mod common;

use std::net::SocketAddr;

use jasper_dpdk::net::{parse, Frame};
use jasper_dpdk::{DpdkBackend, Eal};
use jasper_io::PacketIo;

const US: [u8; 4] = [10, 0, 0, 10];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 10];

/// (source, payload) of every packet in the current burst.
fn burst(io: &mut DpdkBackend, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let (meta, buf) = io.rx(i);
            (meta.src, buf.to_vec())
        })
        .collect()
}

#[test]
fn staged_frames_are_received_like_frames_from_the_port() {
    let dir = std::env::temp_dir().join(format!("jasper-staged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, out) = (dir.join("in.pcap"), dir.join("out.pcap"));

    let for_us = common::udp_frame(
        (PEER_MAC, [10, 0, 0, 1], 7001),
        (OUR_MAC, US, 7000),
        b"jasper data",
    );
    let other_port = common::udp_frame(
        (PEER_MAC, [10, 0, 0, 1], 7001),
        (OUR_MAC, US, 9999),
        b"not ours",
    );
    let arp_req = common::arp_request(PEER_MAC, [10, 0, 0, 1], US);
    let junk = vec![0xeeu8; 60];
    let frames = vec![for_us.clone(), arp_req, other_port, junk];
    common::write_pcap(&inp, &frames);
    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        inp.display(),
        out.display()
    );
    let eal = Eal::init(&common::eal_args(&vdev)).unwrap();
    let mut io = DpdkBackend::open(eal, 0, US.into(), 7000, 1023, 32, &[]).unwrap();

    // Staged: nothing is parsed until received.
    for f in &frames {
        assert!(io.stage(f));
    }
    assert_eq!(io.staged(), 4);
    assert_eq!(io.counters().rx_packets, 0);
    let n = io.recv_staged();
    assert_eq!(io.staged(), 0);
    let staged = burst(&mut io, n);
    let staged_counters = (io.counters(), io.dpdk_counters());
    io.flush().unwrap();

    // The same frames from the port.
    let mut n = 0;
    for _ in 0..1000 {
        n = io.recv_burst().unwrap();
        if n > 0 {
            break;
        }
    }
    let received = burst(&mut io, n);
    io.flush().unwrap();

    let from = SocketAddr::from(([10, 0, 0, 1], 7001));
    assert_eq!(staged, vec![(from, b"jasper data".to_vec())]);
    assert_eq!(received, staged, "the same packets and payloads");
    let (io_c, dpdk_c) = staged_counters;
    assert_eq!(io_c.rx_packets, 4);
    assert_eq!(
        (
            dpdk_c.arp_rx,
            dpdk_c.arp_replies,
            dpdk_c.rx_not_for_us,
            dpdk_c.rx_other
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(io.counters().rx_packets, 8, "both counted alike");
    let d = io.dpdk_counters();
    assert_eq!(
        (d.arp_rx, d.arp_replies, d.rx_not_for_us, d.rx_other),
        (2, 2, 2, 2)
    );

    // More than a burst: received a burst at a time.
    for _ in 0..40 {
        assert!(io.stage(&for_us));
    }
    assert_eq!(io.recv_staged(), 32);
    assert_eq!(io.recv_staged(), 8);
    assert_eq!(io.recv_staged(), 0);
    io.release_rx();
    assert_eq!(io.mbufs_in_use(), 0, "every mbuf returned to the pool");
    drop(io);

    // Both ARP requests were answered.
    let replies = common::read_pcap(&out)
        .iter()
        .filter(|f| matches!(parse(f), Frame::Arp { op: 2, .. }))
        .count();
    assert_eq!(replies, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
