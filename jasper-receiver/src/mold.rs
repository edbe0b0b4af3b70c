//! MoldUDP64 re-emission for existing feed handlers.
//!
//! Packet: session (10 bytes, ASCII, space padded), sequence number of the
//! first message (u64 BE), message count (u16 BE), then per message a u16 BE
//! length and the bytes. Count 0 = heartbeat (sequence = next expected),
//! 0xFFFF = end of session. Sequence numbers are the Jasper sequence + 1
//! (MoldUDP64 counts from 1). One Jasper stream per Mold session.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const MAX_PACKET: usize = 1472;
const HEADER: usize = 20;

/// Packs released messages into MoldUDP64 packets sent to a local address.
#[derive(Debug)]
pub struct MoldEmitter {
    sock: UdpSocket,
    dst: SocketAddr,
    session: [u8; 10],
    buf: Vec<u8>,
    count: u16,
    first: u64,
    next: u64,
    last_send: Instant,
    packets: u64,
}

impl MoldEmitter {
    /// Emit to `dst` under `session` (≤ 10 ASCII characters).
    pub fn new(dst: SocketAddr, session: &str) -> io::Result<Self> {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse()
        } else {
            "[::]:0".parse()
        }
        .map_err(io::Error::other)?;
        let sock = UdpSocket::bind(bind)?;
        sock.set_nonblocking(true)?;
        let mut s = [b' '; 10];
        for (d, c) in s.iter_mut().zip(session.bytes()) {
            *d = c;
        }
        Ok(MoldEmitter {
            sock,
            dst,
            session: s,
            buf: Vec::with_capacity(MAX_PACKET),
            count: 0,
            first: 0,
            next: 0,
            last_send: Instant::now(),
            packets: 0,
        })
    }

    /// Packets emitted.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    fn header(&self, seq: u64, count: u16) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..10].copy_from_slice(&self.session);
        h[10..18].copy_from_slice(&(seq + 1).to_be_bytes());
        h[18..20].copy_from_slice(&count.to_be_bytes());
        h
    }

    /// Add one released message (Jasper sequence `seq`).
    pub fn push(&mut self, seq: u64, payload: &[u8]) {
        let fits = HEADER + self.buf.len() + 2 + payload.len() <= MAX_PACKET;
        if self.count > 0 && (seq != self.next || !fits || self.count == u16::MAX - 1) {
            self.flush();
        }
        if self.count == 0 {
            self.first = seq;
        }
        self.buf
            .extend_from_slice(&(payload.len().min(u16::MAX as usize) as u16).to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.count += 1;
        self.next = seq + 1;
    }

    fn send(&mut self, header: [u8; HEADER], body_from_buf: bool) {
        let mut pkt = Vec::with_capacity(HEADER + self.buf.len());
        pkt.extend_from_slice(&header);
        if body_from_buf {
            pkt.extend_from_slice(&self.buf);
        }
        // Local hand-off: a full socket buffer means the feed handler is not
        // reading; the packet is dropped like any UDP feed would.
        if self.sock.send_to(&pkt, self.dst).is_ok() {
            self.packets += 1;
        }
        self.last_send = Instant::now();
    }

    /// Send what is packed.
    pub fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        let h = self.header(self.first, self.count);
        self.send(h, true);
        self.buf.clear();
        self.count = 0;
    }

    /// Heartbeat (count 0, next sequence) after a second without traffic.
    pub fn heartbeat_if_idle(&mut self) {
        if self.count == 0 && self.last_send.elapsed() >= Duration::from_secs(1) {
            let h = self.header(self.next, 0);
            self.send(h, false);
        }
    }

    /// End of session (count 0xFFFF).
    pub fn end_of_session(&mut self, next_seq: u64) {
        self.flush();
        let h = self.header(next_seq, u16::MAX);
        self.send(h, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_moldudp64() {
        let feed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut m = MoldEmitter::new(feed.local_addr().unwrap(), "JASPER").unwrap();
        m.push(0, b"ab");
        m.push(1, b"cde");
        m.push(5, b"z"); // a gap starts a new packet
        m.flush();
        m.end_of_session(6);
        let mut buf = [0u8; 2048];
        let n = feed.recv(&mut buf).unwrap();
        assert_eq!(&buf[..10], b"JASPER    ");
        assert_eq!(u64::from_be_bytes(buf[10..18].try_into().unwrap()), 1);
        assert_eq!(u16::from_be_bytes(buf[18..20].try_into().unwrap()), 2);
        assert_eq!(&buf[20..n], b"\x00\x02ab\x00\x03cde");
        let n = feed.recv(&mut buf).unwrap();
        assert_eq!(u64::from_be_bytes(buf[10..18].try_into().unwrap()), 6);
        assert_eq!(&buf[20..n], b"\x00\x01z");
        let n = feed.recv(&mut buf).unwrap();
        assert_eq!(n, 20);
        assert_eq!(u16::from_be_bytes(buf[18..20].try_into().unwrap()), 0xFFFF);
        assert_eq!(u64::from_be_bytes(buf[10..18].try_into().unwrap()), 7);
    }
}
