//! Helpers shared by the DPDK tests: pcap files and EAL arguments.
#![allow(dead_code)]

use std::path::Path;

/// EAL arguments for an in-process test: no hugepages, no PCI, a unique prefix.
pub fn eal_args(vdev: &str) -> Vec<String> {
    jasper_dpdk::vdev_eal_args(&format!("jasper-test-{}", std::process::id()), 0, &[vdev])
}

/// Write a pcap (Ethernet link type).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// Read a pcap written by DPDK (either byte order, µs or ns magic).
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let le = matches!(
        &b[0..4],
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]
    );
    let u32_at = |i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut at = 24;
    let mut frames = Vec::new();
    while at + 16 <= b.len() {
        let cap = u32_at(at + 8) as usize;
        at += 16;
        frames.push(b[at..at + cap].to_vec());
        at += cap;
    }
    frames
}

/// An Ethernet/IPv4/UDP frame with a correct checksum.
pub fn udp_frame(
    src: ([u8; 6], [u8; 4], u16),
    dst: ([u8; 6], [u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let r = jasper_dpdk::net::Route {
        src_mac: src.0,
        dst_mac: dst.0,
        src_ip: src.1.into(),
        dst_ip: dst.1.into(),
        src_port: src.2,
        dst_port: dst.2,
    };
    let mut f = vec![0u8; jasper_dpdk::net::HDR_LEN + payload.len()];
    jasper_dpdk::net::write_headers(
        &mut f,
        &r,
        1,
        payload.len(),
        jasper_dpdk::net::sum16(payload),
    );
    f[jasper_dpdk::net::HDR_LEN..].copy_from_slice(payload);
    f
}

/// An ARP request from (`mac`, `ip`) asking who has `target`.
pub fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    jasper_dpdk::net::write_arp(&mut f, 1, mac, ip.into(), None, target.into());
    f
}
