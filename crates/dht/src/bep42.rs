//! BEP 42, node ids tied to the node's IP address: the first 21 bits of an id are a CRC-32C of
//! the masked address and 3 random bits kept in the id's last byte. A Sybil attacker then needs
//! many addresses, not just many ids, to surround a key.
//!
//! Local addresses (private, loopback, link-local) are exempt, as in libtorrent: such a node
//! cannot know the address others see.

use std::net::IpAddr;

use crate::id::NodeId;

/// How strictly [BEP 42](https://www.bittorrent.org/beps/bep_0042.html) ids are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bep42 {
    /// Ignore it: our id stays what it is, others' ids are not checked.
    Off,
    /// Derive our id from our external address once we learn it, and when a bucket is full let
    /// a node with a valid id take the place of one without.
    #[default]
    Prefer,
    /// As `Prefer`, and nodes whose id does not match their address never enter the routing
    /// table or a lookup's candidates.
    Enforce,
}

/// CRC-32C (Castagnoli), reflected, as BEP 42 specifies.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The CRC that the first 21 bits of an id for `ip` must match, given the id's 3 random bits.
fn prefix_crc(ip: IpAddr, r: u8) -> u32 {
    let r = (r & 7) as u64;
    match ip {
        IpAddr::V4(v4) => {
            let x = (u32::from(v4) & 0x030f_3fff) | ((r as u32) << 29);
            crc32c(&x.to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let hi = (u128::from(v6) >> 64) as u64;
            let x = (hi & 0x0103_070f_1f3f_7fff) | (r << 61);
            crc32c(&x.to_be_bytes())
        }
    }
}

/// An id valid for `ip` under BEP 42; `random` fills the bits the BEP leaves free (its last
/// byte's low 3 bits are the `r` of the formula).
pub fn node_id_for_ip(ip: IpAddr, random: [u8; 20]) -> NodeId {
    let mut id = random;
    let crc = prefix_crc(ip, id[19]);
    id[0] = (crc >> 24) as u8;
    id[1] = (crc >> 16) as u8;
    id[2] = ((crc >> 8) as u8 & 0xf8) | (id[2] & 0x07);
    NodeId(id)
}

/// Whether `id` is a valid BEP 42 id for a node at `ip`. Local addresses always pass.
pub fn is_valid_id(id: &NodeId, ip: IpAddr) -> bool {
    if is_local(ip) {
        return true;
    }
    let crc = prefix_crc(ip, id.0[19]);
    id.0[0] == (crc >> 24) as u8 && id.0[1] == (crc >> 16) as u8 && (id.0[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
}

/// Private, loopback, link-local or unspecified addresses, which BEP 42 exempts.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6.to_ipv4_mapped().is_some_and(|v4| is_local(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// The five examples of BEP 42: address, random byte, the id's first three bytes (of which
    /// 21 bits are fixed by the address).
    #[test]
    fn bep42_test_vectors() {
        let cases: [(&str, u8, [u8; 3]); 5] = [
            ("124.31.75.21", 1, [0x5f, 0xbf, 0xbf]),
            ("21.75.31.124", 86, [0x5a, 0x3c, 0xe9]),
            ("65.23.51.170", 22, [0xa5, 0xd4, 0x32]),
            ("84.124.73.14", 65, [0x1b, 0x03, 0x21]),
            ("43.213.53.83", 90, [0xe5, 0x6f, 0x6c]),
        ];
        for (ip, r, prefix) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let mut random = [0x11u8; 20];
            random[19] = r;
            random[2] = prefix[2] & 7;
            let id = node_id_for_ip(ip, random);
            assert_eq!(&id.0[..3], &prefix, "{ip}");
            assert_eq!(id.0[19], r);
            assert!(is_valid_id(&id, ip));
            let mut wrong = id;
            wrong.0[0] ^= 1;
            assert!(!is_valid_id(&wrong, ip));
            // Another r gives another prefix: the id's last byte is part of the check.
            let mut other = id;
            other.0[19] ^= 1;
            assert!(!is_valid_id(&other, ip));
        }
    }

    #[test]
    fn ipv6_ids_check_and_local_addresses_are_exempt() {
        let ip: IpAddr = "2001:db8:1234::1".parse().unwrap();
        let id = node_id_for_ip(ip, [7; 20]);
        assert!(is_valid_id(&id, ip));
        assert!(!is_valid_id(&NodeId([0; 20]), ip));
        for local in ["10.1.2.3", "192.168.0.1", "127.0.0.1", "fe80::1", "fd00::5", "::1"] {
            assert!(is_valid_id(&NodeId([0; 20]), local.parse().unwrap()), "{local}");
        }
        assert!(!is_local("8.8.8.8".parse().unwrap()));
    }
}
