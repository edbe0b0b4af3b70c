//! Golden test on net_pcap: a Jasper data packet read from a capture is
//! replicated by the real proxy state machine to every child with correct
//! Ethernet/IPv4/UDP headers and checksums; ARP is answered; junk is counted;
//! every mbuf goes back to the pool.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use jasper_core::plan::{loopback_inventory, Plan, TreeSpec};
use jasper_core::proxy::{ProxyConfig, ProxyCore, Verdict};
use jasper_core::wire::{DataBuilder, Header, Kind, Repr};
use jasper_dpdk::net::{checksums_ok, parse, Frame};
use jasper_dpdk::{DpdkBackend, Eal};
use jasper_io::PacketIo;

const US: [u8; 4] = [10, 0, 0, 10];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

#[test]
fn replicates_to_every_child_with_correct_headers() {
    let dir = std::env::temp_dir().join(format!("jasper-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, out) = (dir.join("in.pcap"), dir.join("out.pcap"));

    // A proxy at level 2 of a hedged tree: (H+1)·F = 4 copies.
    let spec = TreeSpec {
        depth: Some(2),
        fanout: Some(2),
        hedge: 1,
        spray: false,
        roots: 1,
    };
    let plan = Plan::build(&loopback_inventory(3, 4, false, 7100), &spec).unwrap();
    let me = plan.levels[1][0];
    let mut core = ProxyCore::new(plan.tables[me as usize].clone(), ProxyConfig::default());
    // Children live at 10.0.1.<id>:7000 behind static ARP entries.
    let child_ip = |id: u32| Ipv4Addr::new(10, 0, 1, id as u8);
    let child_mac = |id: u32| [2, 0, 0, 0, 1, id as u8];

    let mut payload = vec![0u8; 600];
    let mut b = DataBuilder::new(&mut payload, 600).unwrap();
    for i in 0..5u8 {
        b.push(&[i; 50]).unwrap();
    }
    let mut h = Header::new(Kind::Data);
    h.seq = 40;
    h.hops = 1;
    let n = b.finish(&h);
    payload.truncate(n);

    let arp_req = common::arp_request(PEER_MAC, [10, 0, 0, 1], US);
    let data = common::udp_frame(
        (PEER_MAC, [10, 0, 0, 1], 7000),
        ([2, 0, 0, 0, 0, 10], US, 7000),
        &payload,
    );
    let other_port = common::udp_frame(
        (PEER_MAC, [10, 0, 0, 1], 7000),
        ([2, 0, 0, 0, 0, 10], US, 9999),
        &payload,
    );
    common::write_pcap(&inp, &[arp_req, data, other_port, vec![0xde, 0xad]]);

    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        inp.display(),
        out.display()
    );
    let eal = Eal::init(&common::eal_args(&vdev)).unwrap();
    let mut arp = Vec::new();
    let mut dsts = Vec::new();
    core.for_each_destination(40, |d, _| {
        arp.push((child_ip(d), child_mac(d)));
        dsts.push(SocketAddr::from((child_ip(d), 7000)));
    });
    assert_eq!(dsts.len(), 4);
    let mut io = DpdkBackend::open(eal, 0, US.into(), 7000, 1023, 32, &arp).unwrap();
    let mut forwarded = 0;
    for _ in 0..1000 {
        let k = io.recv_burst().unwrap();
        for i in 0..k {
            let (_, buf) = io.rx(i);
            if let Verdict::Forward { key } = core.handle_packet(0, buf) {
                let mut d = Vec::new();
                core.for_each_destination(key, |c, _| {
                    d.push(SocketAddr::from((child_ip(c), 7000)))
                });
                io.forward(i, &d);
                forwarded += 1;
            }
        }
        io.flush().unwrap();
        if forwarded == 1 && io.dpdk_counters().arp_replies == 1 {
            break;
        }
    }
    assert_eq!(forwarded, 1);
    io.recv_burst().unwrap(); // releases the received mbufs
    let c = io.dpdk_counters();
    assert_eq!(c.arp_replies, 1);
    assert_eq!(c.rx_not_for_us, 1);
    assert_eq!(c.rx_other, 1);
    assert_eq!(io.counters().tx_packets, 5, "ARP reply + 4 copies");
    assert_eq!(io.mbufs_in_use(), 0, "every mbuf returned to the pool");
    let our_mac = io.mac();
    drop(io); // closes the port: net_pcap flushes the output file

    let frames = common::read_pcap(&out);
    assert_eq!(frames.len(), 5);
    match parse(&frames[0]) {
        Frame::Arp { op, sha, tpa, .. } => {
            assert_eq!((op, sha, tpa), (2, our_mac, Ipv4Addr::new(10, 0, 0, 1)));
        }
        f => panic!("expected an ARP reply, got {f:?}"),
    }
    let mut seen = Vec::new();
    for f in &frames[1..] {
        assert!(checksums_ok(f), "IPv4 and UDP checksums");
        let Frame::Udp(u) = parse(f) else {
            panic!("not UDP")
        };
        assert_eq!(
            &f[0..6],
            &arp.iter().find(|(ip, _)| *ip == u.dst_ip).unwrap().1
        );
        assert_eq!(&f[6..12], &our_mac);
        assert_eq!(
            (u.src_ip, u.src_port, u.dst_port),
            (Ipv4Addr::from(US), 7000, 7000)
        );
        let p = &f[u.payload_off..u.payload_off + u.payload_len];
        let r = Repr::parse_bytes(p).unwrap();
        assert_eq!(
            (r.header.path, r.header.hops, r.header.seq, r.header.count),
            (me as u16, 2, 40, 5)
        );
        assert_eq!(r.messages().nth(3), Some(&[3u8; 50][..]));
        seen.push(u.dst_ip);
    }
    seen.sort();
    let mut want: Vec<Ipv4Addr> = dsts
        .iter()
        .map(|d| match d {
            SocketAddr::V4(a) => *a.ip(),
            _ => unreachable!(),
        })
        .collect();
    want.sort();
    assert_eq!(seen, want, "one copy per child");
    let _ = std::fs::remove_dir_all(dir);
}

/// Header templates follow the ARP table: a destination whose MAC changes
/// gets the new MAC at once, a destination without one is dropped (counted,
/// an ARP request sent) every time, and forwarding one packet twice (as the
/// fault injector does, one destination at a time) sends the same payload.
#[test]
fn templates_follow_arp_changes_and_repeat_forwards_share_the_payload() {
    let dir = std::env::temp_dir().join(format!("jasper-tmpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, out) = (dir.join("in.pcap"), dir.join("out.pcap"));
    common::write_pcap(&inp, &[]);
    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        inp.display(),
        out.display()
    );
    let eal = Eal::init(&common::eal_args(&vdev)).unwrap();
    let (a, b) = (Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2));
    let (mac1, mac2) = ([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 9]);
    let mut io = DpdkBackend::open(eal, 0, US.into(), 7000, 1023, 32, &[(a, mac1)]).unwrap();
    let group = [
        SocketAddr::from((a, 7001)),
        SocketAddr::from((b, 7001)),
        SocketAddr::from((a, 7002)),
    ];
    let payload: Vec<u8> = (0..301u32).map(|i| i as u8).collect();
    let frame = common::udp_frame(
        (PEER_MAC, [10, 0, 0, 1], 7000),
        ([2, 0, 0, 0, 0, 10], US, 7000),
        &payload,
    );
    for round in 0..3 {
        if round == 2 {
            io.add_arp(a, mac2);
        }
        let i = io.inject(&frame).unwrap();
        io.forward(i, &group);
        if round == 0 {
            // Again, one destination at a time, after changing the payload
            // (once the copies sharing it are sent: zero copy).
            io.flush().unwrap();
            io.rx(i).1[0] ^= 0xff;
            io.forward(i, &group[2..]);
            io.forward(i, &group[..1]);
        }
        io.flush().unwrap();
        io.release_rx();
    }
    let c = io.dpdk_counters();
    assert_eq!(c.arp_miss, 3, "b has no MAC: dropped in every round");
    assert_eq!(c.arp_requests, 1, "asked once (rate-limited)");
    assert_eq!(io.counters().tx_dropped, 3);
    assert_eq!(io.mbufs_in_use(), 0, "every mbuf returned to the pool");
    drop(io);

    let frames = common::read_pcap(&out);
    let mut copies = Vec::new();
    for f in &frames {
        match parse(f) {
            Frame::Udp(u) => {
                assert!(checksums_ok(f), "IPv4 and UDP checksums");
                let mac: [u8; 6] = f[0..6].try_into().unwrap();
                let id = u16::from_be_bytes([f[18], f[19]]);
                let p = f[u.payload_off..u.payload_off + u.payload_len].to_vec();
                copies.push((u.dst_ip, u.dst_port, mac, id, p));
            }
            Frame::Arp { op, tpa, .. } => assert_eq!((op, tpa), (1, b)),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let mut changed = payload.clone();
    changed[0] ^= 0xff;
    let want = [
        (7001, mac1, &payload),
        (7002, mac1, &payload),
        (7002, mac1, &changed),
        (7001, mac1, &changed),
        (7001, mac1, &payload),
        (7002, mac1, &payload),
        (7001, mac2, &payload),
        (7002, mac2, &payload),
    ];
    assert_eq!(copies.len(), want.len());
    for (k, ((ip, port, mac, id, p), (wport, wmac, wp))) in copies.iter().zip(want).enumerate() {
        assert_eq!((*ip, *port, *mac), (a, wport, wmac), "copy {k}");
        assert_eq!(p, wp, "copy {k}");
        assert_eq!(*id, k as u16 + 1, "IP IDs count copies");
    }
    let _ = std::fs::remove_dir_all(dir);
}
