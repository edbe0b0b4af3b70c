//! A reader over fuzzer bytes that never fails: past the end every read
//! yields zeros, so any byte string is a valid (if short) program.

/// Fuzzer bytes, consumed front to back.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Read from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    /// True when every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    /// Little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    /// Low bit of one byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
}
