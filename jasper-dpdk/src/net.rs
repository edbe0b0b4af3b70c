//! Ethernet / IPv4 / UDP / ARP: parsing, header emission, checksums.
//! Pure functions over byte slices (tested without DPDK).

use std::net::Ipv4Addr;

/// Ethernet + IPv4 (no options) + UDP.
pub const HDR_LEN: usize = 14 + 20 + 8;
/// EtherType IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_ARP: u16 = 0x0806;

/// Ones'-complement sum of `data` as big-endian 16-bit words (an odd last
/// byte padded with zero), partially folded: congruent to the plain sum
/// modulo 0xffff and 0 only for all-zero data, so [`fold`] of any sum that
/// includes it is the same.
///
/// RFC 1071 §2: the sum does not depend on byte order, so it adds 32-bit
/// native words into a 64-bit accumulator (8 bytes per step, which the
/// compiler vectorizes) and swaps the bytes of the folded result on
/// little-endian hosts: ~5× fewer operations than one 16-bit word at a time.
pub fn sum16(data: &[u8]) -> u32 {
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes(c.try_into().expect("8-byte chunk"));
        // No overflow: each step adds < 2^33; 2^31 steps would be 16 GiB.
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        let w = u64::from_ne_bytes(last);
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::from_be(acc as u16) as u32
}

/// Fold a partial sum into a checksum.
pub fn fold(s: u32) -> u16 {
    // Two end-around carries suffice for any u32: the first leaves at most
    // 0x1fffe, the second at most 0xffff.
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// A received UDP datagram for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpIn {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address.
    pub src_ip: Ipv4Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination address.
    pub dst_ip: Ipv4Addr,
    /// Destination port.
    pub dst_port: u16,
    /// Payload offset in the frame.
    pub payload_off: usize,
    /// Payload length.
    pub payload_len: usize,
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// UDP over IPv4.
    Udp(UdpIn),
    /// ARP: (operation, sender MAC, sender IP, target IP).
    Arp {
        /// 1 request, 2 reply.
        op: u16,
        /// Sender hardware address.
        sha: [u8; 6],
        /// Sender protocol address.
        spa: Ipv4Addr,
        /// Target protocol address.
        tpa: Ipv4Addr,
    },
    /// Anything else, with a reason for the drop counter.
    Other(&'static str),
}

/// Classify a frame. Never panics.
pub fn parse(f: &[u8]) -> Frame {
    if f.len() < 14 {
        return Frame::Other("runt");
    }
    let et = u16::from_be_bytes([f[12], f[13]]);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&f[6..12]);
    match et {
        ETH_ARP => {
            if f.len() < 42
                || f[14..16] != [0, 1]
                || f[16..18] != [8, 0]
                || f[18] != 6
                || f[19] != 4
            {
                return Frame::Other("bad_arp");
            }
            let mut sha = [0u8; 6];
            sha.copy_from_slice(&f[22..28]);
            Frame::Arp {
                op: u16::from_be_bytes([f[20], f[21]]),
                sha,
                spa: Ipv4Addr::new(f[28], f[29], f[30], f[31]),
                tpa: Ipv4Addr::new(f[38], f[39], f[40], f[41]),
            }
        }
        ETH_IPV4 => {
            let ip = &f[14..];
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return Frame::Other("bad_ipv4");
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ihl < 20 || total < ihl + 8 || total > ip.len() {
                return Frame::Other("bad_ipv4");
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Frame::Other("fragment");
            }
            if ip[9] != 17 {
                return Frame::Other("not_udp");
            }
            let udp = &ip[ihl..total];
            let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
            if ulen < 8 || ulen > udp.len() {
                return Frame::Other("bad_udp");
            }
            Frame::Udp(UdpIn {
                src_mac,
                src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
                src_port: u16::from_be_bytes([udp[0], udp[1]]),
                dst_port: u16::from_be_bytes([udp[2], udp[3]]),
                payload_off: 14 + ihl + 8,
                payload_len: ulen - 8,
            })
        }
        _ => Frame::Other("not_ipv4"),
    }
}

/// Addresses of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Our MAC.
    pub src_mac: [u8; 6],
    /// Next hop MAC.
    pub dst_mac: [u8; 6],
    /// Our IP.
    pub src_ip: Ipv4Addr,
    /// Destination IP.
    pub dst_ip: Ipv4Addr,
    /// Our UDP port.
    pub src_port: u16,
    /// Destination UDP port.
    pub dst_port: u16,
}

/// Write Ethernet/IPv4/UDP headers for a payload of `payload_len` bytes whose
/// partial ones'-complement sum is `payload_sum` (so the UDP checksum is
/// correct without touching the payload again).
pub fn write_headers(h: &mut [u8], r: &Route, ip_id: u16, payload_len: usize, payload_sum: u32) {
    h[0..6].copy_from_slice(&r.dst_mac);
    h[6..12].copy_from_slice(&r.src_mac);
    h[12..14].copy_from_slice(&ETH_IPV4.to_be_bytes());
    let ip = &mut h[14..34];
    let total = (20 + 8 + payload_len) as u16;
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&r.src_ip.octets());
    ip[16..20].copy_from_slice(&r.dst_ip.octets());
    let c = fold(sum16(ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let ulen = (8 + payload_len) as u16;
    let udp = &mut h[34..42];
    udp[0..2].copy_from_slice(&r.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&r.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&ulen.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let pseudo = sum16(&r.src_ip.octets()) + sum16(&r.dst_ip.octets()) + 17 + ulen as u32;
    let mut c = fold(pseudo + sum16(udp) + payload_sum);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}

/// The Ethernet/IPv4/UDP header of one destination, precomputed: per copy
/// only the lengths, the IP ID and the two checksums change, and those are
/// folded in incrementally (RFC 1624) from partial sums of the fixed fields.
/// Writes exactly what [`write_headers`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderTemplate {
    hdr: [u8; HDR_LEN],
    /// Sum of the IPv4 header with length, ID and checksum zero.
    ip_sum: u32,
    /// Sum of the UDP pseudo-header and header with lengths and checksum zero.
    udp_sum: u32,
}

impl HeaderTemplate {
    /// The template of `r`.
    pub fn new(r: &Route) -> HeaderTemplate {
        let mut hdr = [0u8; HDR_LEN];
        write_headers(&mut hdr, r, 0, 0, 0);
        for i in [16, 17, 18, 19, 24, 25, 38, 39, 40, 41] {
            hdr[i] = 0; // IP total length, ID, checksum; UDP length, checksum
        }
        let ip_sum = sum16(&hdr[14..34]);
        let udp_sum =
            sum16(&r.src_ip.octets()) + sum16(&r.dst_ip.octets()) + 17 + sum16(&hdr[34..42]);
        HeaderTemplate {
            hdr,
            ip_sum,
            udp_sum,
        }
    }

    /// Write the headers for a payload of `payload_len` bytes whose partial
    /// sum is `payload_sum` (as [`write_headers`]).
    #[inline]
    pub fn write(&self, h: &mut [u8; HDR_LEN], ip_id: u16, payload_len: usize, payload_sum: u32) {
        *h = self.hdr;
        let total = (20 + 8 + payload_len) as u16;
        let ulen = (8 + payload_len) as u16;
        h[16..18].copy_from_slice(&total.to_be_bytes());
        h[18..20].copy_from_slice(&ip_id.to_be_bytes());
        let c = fold(self.ip_sum + total as u32 + ip_id as u32);
        h[24..26].copy_from_slice(&c.to_be_bytes());
        h[38..40].copy_from_slice(&ulen.to_be_bytes());
        // The UDP length counts twice: pseudo-header and header.
        let mut c = fold(self.udp_sum + 2 * ulen as u32 + payload_sum);
        if c == 0 {
            c = 0xffff;
        }
        h[40..42].copy_from_slice(&c.to_be_bytes());
    }
}

/// Write a 42-byte ARP frame (request when `target_mac` is `None`).
pub fn write_arp(
    f: &mut [u8],
    op: u16,
    our_mac: [u8; 6],
    our_ip: Ipv4Addr,
    target_mac: Option<[u8; 6]>,
    target_ip: Ipv4Addr,
) {
    let dst = target_mac.unwrap_or([0xff; 6]);
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&our_mac);
    f[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    f[22..28].copy_from_slice(&our_mac);
    f[28..32].copy_from_slice(&our_ip.octets());
    f[32..38].copy_from_slice(&target_mac.unwrap_or([0; 6]));
    f[38..42].copy_from_slice(&target_ip.octets());
}

/// Verify the IPv4 header and UDP checksums of a frame (tests, tools).
pub fn checksums_ok(f: &[u8]) -> bool {
    let Frame::Udp(u) = parse(f) else {
        return false;
    };
    let ip = &f[14..34];
    if fold(sum16(ip)) != 0 {
        return false;
    }
    let udp = &f[34..u.payload_off + u.payload_len];
    let pseudo = sum16(&u.src_ip.octets()) + sum16(&u.dst_ip.octets()) + 17 + udp.len() as u32;
    udp[6..8] == [0, 0] || fold(pseudo + sum16(udp)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_correct_checksums() {
        let payload = b"jasper payload, odd length!";
        let r = Route {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 7000,
            dst_port: 7001,
        };
        let mut f = vec![0u8; HDR_LEN + payload.len()];
        write_headers(&mut f, &r, 7, payload.len(), sum16(payload));
        f[HDR_LEN..].copy_from_slice(payload);
        assert!(checksums_ok(&f));
        let Frame::Udp(u) = parse(&f) else { panic!() };
        assert_eq!(
            (u.src_ip, u.dst_port, u.payload_len),
            (r.src_ip, 7001, payload.len())
        );
        f[HDR_LEN] ^= 1;
        assert!(!checksums_ok(&f));
    }

    /// The plain definition: big-endian 16-bit words, unfolded.
    fn sum16_reference(data: &[u8]) -> u32 {
        let mut s = 0u32;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            s += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        if let [b] = chunks.remainder() {
            s += (*b as u32) << 8;
        }
        s
    }

    /// A small deterministic generator (xorshift) for the property tests.
    fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn fast_sum_folds_like_the_reference() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for n in (0..80).chain([727, 728, 1472, 9000]) {
            for fill in [None, Some(0u8), Some(0xff)] {
                let d = match fill {
                    Some(b) => vec![b; n],
                    None => bytes(&mut seed, n),
                };
                let (fast, slow) = (sum16(&d), sum16_reference(&d));
                assert!(fast <= 0xffff, "folded");
                assert_eq!(fast == 0, slow == 0, "zero only for zero data");
                for extra in [0u32, 1, 0xfffe, 0x1_2345, 0x7fff_0000] {
                    assert_eq!(fold(fast + extra), fold(slow + extra), "n={n} {fill:?}");
                }
            }
        }
    }

    #[test]
    fn template_writes_what_write_headers_writes() {
        let mut seed = 7u64;
        for k in 0..500u32 {
            let b = bytes(&mut seed, 24);
            let r = Route {
                src_mac: b[0..6].try_into().unwrap(),
                dst_mac: b[6..12].try_into().unwrap(),
                src_ip: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
                dst_ip: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
                src_port: u16::from_be_bytes([b[20], b[21]]),
                dst_port: u16::from_be_bytes([b[22], b[23]]),
            };
            let len = [0, 1, 27, 728, 1472, 8972][k as usize % 6];
            let payload = bytes(&mut seed, len);
            let sum = sum16(&payload);
            let id = (k * 7919) as u16;
            let mut want = [0u8; HDR_LEN];
            write_headers(&mut want, &r, id, len, sum);
            let mut got = [0u8; HDR_LEN];
            HeaderTemplate::new(&r).write(&mut got, id, len, sum);
            assert_eq!(got, want, "route {r:?}, id {id}, len {len}");
            let mut f = got.to_vec();
            f.extend_from_slice(&payload);
            assert!(checksums_ok(&f));
        }
    }

    #[test]
    fn arp_and_garbage() {
        let mut f = [0u8; 42];
        write_arp(
            &mut f,
            1,
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 0, 0, 1),
            None,
            Ipv4Addr::new(10, 0, 0, 9),
        );
        assert_eq!(
            parse(&f),
            Frame::Arp {
                op: 1,
                sha: [2, 0, 0, 0, 0, 1],
                spa: Ipv4Addr::new(10, 0, 0, 1),
                tpa: Ipv4Addr::new(10, 0, 0, 9)
            }
        );
        for n in 0..64 {
            let _ = parse(&vec![0x45u8; n]);
        }
        assert_eq!(parse(&[0u8; 10]), Frame::Other("runt"));
    }
}
