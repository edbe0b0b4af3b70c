//! The synthetic feed a local run publishes.

/// A synthetic ITCH 5.0-like "add order" feed (big-endian fields).
pub(crate) struct Feed {
    pub(crate) size: usize,
    pub(crate) order_ref: u64,
    pub(crate) x: u64,
}

impl Feed {
    pub(crate) fn fill(&mut self, buf: &mut Vec<u8>, ts_ns: u64) {
        buf.clear();
        self.order_ref += 1;
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let midnight = ts_ns % 86_400_000_000_000;
        buf.push(b'A');
        buf.extend_from_slice(&((self.x % 8000) as u16 + 1).to_be_bytes()); // stock locate
        buf.extend_from_slice(&0u16.to_be_bytes()); // tracking number
        buf.extend_from_slice(&midnight.to_be_bytes()[2..]); // 6-byte timestamp
        buf.extend_from_slice(&self.order_ref.to_be_bytes());
        buf.push(if self.x & 1 == 0 { b'B' } else { b'S' });
        buf.extend_from_slice(&(((self.x >> 8) % 1000) as u32 * 100).to_be_bytes()); // shares
        buf.extend_from_slice(b"JASPR   ");
        buf.extend_from_slice(&(((self.x >> 20) % 1_000_000) as u32).to_be_bytes()); // price
        buf.resize(self.size, 0);
    }
}
