//! The bloom filters of BEP 33 (DHT scrape): 2048 bits, two bit positions per IP address taken
//! from its SHA-1, so that filters from several nodes can be OR-ed and the union's population
//! estimated.

use std::net::IpAddr;

use sha1::{Digest, Sha1};

/// Bits in a filter.
const M: usize = 256 * 8;

/// A BEP 33 bloom filter over IP addresses (`BFsd` for seeds, `BFpe` for peers).
#[derive(Clone, PartialEq, Eq)]
pub struct Bloom(pub [u8; 256]);

impl Default for Bloom {
    fn default() -> Self {
        Bloom([0; 256])
    }
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bloom(~{:.0})", self.estimate())
    }
}

impl Bloom {
    /// Adds an address: its 4 or 16 bytes in network order are hashed (an IPv4-mapped IPv6
    /// address counts as IPv4).
    pub fn insert(&mut self, ip: IpAddr) {
        let hash = match ip {
            IpAddr::V4(v4) => Sha1::digest(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Sha1::digest(v4.octets()),
                None => Sha1::digest(v6.octets()),
            },
        };
        for idx in [hash[0] as usize | (hash[1] as usize) << 8, hash[2] as usize | (hash[3] as usize) << 8] {
            let idx = idx % M;
            self.0[idx / 8] |= 1 << (idx % 8);
        }
    }

    /// Sets every bit set in `other` (the union of two nodes' filters).
    pub fn union(&mut self, other: &Bloom) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }

    /// The estimated number of distinct addresses inserted, by the formula of BEP 33.
    pub fn estimate(&self) -> f64 {
        let zeros: u32 = self.0.iter().map(|b| b.count_zeros()).sum();
        let c = (zeros as f64).min(M as f64 - 1.0);
        let m = M as f64;
        (c / m).ln() / (2.0 * (1.0 - 1.0 / m).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// BEP 33's test vector (libtorrent checks the same): 192.0.2.0–192.0.2.255 and
    /// 2001:db8::–2001:db8::3e7 give a filter starting f6c3f5ea that estimates to 1224.93.
    #[test]
    fn bep33_test_vector() {
        let mut b = Bloom::default();
        assert!(b.estimate() < 1.0, "the formula caps zero bits at m - 1");
        for i in 0..256u32 {
            b.insert(IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i)));
        }
        for i in 0..1000u128 {
            b.insert(IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | i)));
        }
        assert_eq!(&b.0[..4], &[0xf6, 0xc3, 0xf5, 0xea]);
        assert_eq!(b.0[255], 0xef);
        let e = b.estimate();
        assert!((e - 1224.93).abs() < 0.01, "{e}");
        let mut u = Bloom::default();
        u.union(&b);
        assert_eq!(u, b);
    }
}
