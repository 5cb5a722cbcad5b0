use crate::WireError;

/// Which pieces a peer has: one bit a piece, high bit first (BEP 3).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: usize,
    ones: usize,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

impl Bitfield {
    pub fn new(len: usize) -> Self {
        Bitfield { bytes: vec![0; len.div_ceil(8)], len, ones: 0 }
    }
    pub fn full(len: usize) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }
    /// Parses a received bitfield for a torrent of `len` pieces: the size must match and the
    /// spare bits must be clear.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Self, WireError> {
        if bytes.len() != len.div_ceil(8) {
            return Err(WireError::BitfieldSize { got: bytes.len(), want: len.div_ceil(8) });
        }
        if !len.is_multiple_of(8) && bytes[bytes.len() - 1] & (0xff >> (len % 8)) != 0 {
            return Err(WireError::BitfieldSpareBits);
        }
        let ones = bytes.iter().map(|b| b.count_ones() as usize).sum();
        Ok(Bitfield { bytes: bytes.to_vec(), len, ones })
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }
    /// Sets bit `i`; returns whether it was newly set. Out-of-range indices are ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[i / 8] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }
    pub fn clear(&mut self, i: usize) {
        if self.get(i) {
            self.bytes[i / 8] &= !(0x80 >> (i % 8));
            self.ones -= 1;
        }
    }
    pub fn count(&self) -> usize {
        self.ones
    }
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}
