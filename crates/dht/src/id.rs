//! 160-bit node ids and the XOR metric of Kademlia (BEP 5).

use std::fmt;

pub use bitswarm_metainfo::InfoHash;

/// A node's 160-bit id. Lookups for an info-hash use the same key space ([`NodeId::from`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// The XOR distance to `other`, comparable as a big-endian number (`Ord` on the bytes).
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }

    /// How many leading bits the two ids share (160 for equal ids).
    pub fn common_prefix(&self, other: &NodeId) -> usize {
        for i in 0..20 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// Bit `i` counted from the most significant bit of byte 0.
    pub fn bit(&self, i: usize) -> bool {
        self.0[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// A copy of `self` with the first `prefix_len` bits kept, bit `prefix_len` flipped, and the
    /// rest taken from `random`: an id that shares exactly `prefix_len` bits with `self`, which is
    /// how a bucket picks a refresh target inside its own range.
    pub fn random_with_prefix(&self, prefix_len: usize, random: [u8; 20]) -> NodeId {
        if prefix_len >= 160 {
            return *self;
        }
        let mut out = random;
        for i in 0..prefix_len {
            let (byte, mask) = (i / 8, 0x80u8 >> (i % 8));
            out[byte] = (out[byte] & !mask) | (self.0[byte] & mask);
        }
        let (byte, mask) = (prefix_len / 8, 0x80u8 >> (prefix_len % 8));
        out[byte] = (out[byte] & !mask) | (!self.0[byte] & mask);
        NodeId(out)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> Self {
        NodeId(h.0)
    }
}

impl From<NodeId> for InfoHash {
    fn from(id: NodeId) -> Self {
        InfoHash(id.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_distance() {
        let a = NodeId([0; 20]);
        let mut b = [0; 20];
        b[1] = 0b0010_0000;
        let b = NodeId(b);
        assert_eq!(a.common_prefix(&b), 10);
        assert_eq!(a.common_prefix(&a), 160);
        assert_eq!(a.distance(&b), b.0);
        assert!(b.bit(10) && !b.bit(9));
    }

    #[test]
    fn random_with_prefix_shares_exactly_that_many_bits() {
        let me = NodeId([0xA5; 20]);
        for len in [0, 1, 7, 8, 9, 100, 159] {
            let id = me.random_with_prefix(len, [0x3C; 20]);
            assert_eq!(me.common_prefix(&id), len, "prefix {len}");
        }
        assert_eq!(me.random_with_prefix(160, [0; 20]), me);
    }
}
