//! BEP 11 `ut_pex` messages: peers tell each other which peers they are connected to. A message
//! is a bencoded dictionary of compact address lists: `added` (IPv4, 6 bytes each) with one flag
//! byte per address in `added.f`, `dropped`; the same for IPv6 in `added6`, `added6.f` and
//! `dropped6` (18 bytes each).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bitswarm_bencode::{Encoder, Value};

use crate::WireError;

/// The name of the extension in the BEP 10 handshake.
pub const UT_PEX: &str = "ut_pex";
/// BEP 11: at most 50 added and 50 dropped peers in one message.
pub const MAX_PEX_PEERS: usize = 50;

/// `added.f` flags (BEP 11).
pub mod flags {
    /// Prefers encryption (MSE).
    pub const ENCRYPTION: u8 = 0x01;
    /// A seed (or, from libtorrent, a peer that uploads only).
    pub const SEED: u8 = 0x02;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers the sender connected to since its last message, with their flags.
    pub added: Vec<(SocketAddr, u8)>,
    /// Peers the sender disconnected from since its last message.
    pub dropped: Vec<SocketAddr>,
}

fn compact(addrs: impl Iterator<Item = SocketAddr>, v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs {
        match (a.ip(), v6) {
            (IpAddr::V4(ip), false) => out.extend_from_slice(&ip.octets()),
            (IpAddr::V6(ip), true) => out.extend_from_slice(&ip.octets()),
            _ => continue,
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

fn addrs(bytes: &[u8], v6: bool) -> impl Iterator<Item = SocketAddr> + '_ {
    let len = if v6 { 18 } else { 6 };
    bytes.chunks_exact(len).map(move |c| {
        let port = u16::from_be_bytes([c[len - 2], c[len - 1]]);
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&c[..16]).unwrap_or_default()))
        } else {
            IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        };
        SocketAddr::new(ip, port)
    })
}

impl PexMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        for v6 in [false, true] {
            let mine = || self.added.iter().filter(move |(a, _)| a.is_ipv6() == v6);
            let (key, fkey) = if v6 { ("added6", "added6.f") } else { ("added", "added.f") };
            e.str(key).bytes(&compact(mine().map(|(a, _)| *a), v6));
            e.str(fkey).bytes(&mine().map(|(_, f)| *f).collect::<Vec<u8>>());
        }
        e.str("dropped").bytes(&compact(self.dropped.iter().copied(), false));
        e.str("dropped6").bytes(&compact(self.dropped.iter().copied(), true));
        e.end();
        e.finish()
    }

    /// Parses a `ut_pex` payload. Missing lists are empty; a list whose length is not a multiple
    /// of its address size is an error; flags missing or of the wrong length count as 0 (the
    /// addresses are kept).
    pub fn decode(payload: &[u8]) -> Result<PexMessage, WireError> {
        let bad = |what: &str| WireError::Extended(format!("ut_pex: {what}"));
        let v = bitswarm_bencode::decode(payload).map_err(|e| bad(&e.to_string()))?;
        let d = v.as_dict().ok_or_else(|| bad("not a dictionary"))?;
        let list = |key: &str, v6: bool| -> Result<&[u8], WireError> {
            let b = match d.get(key.as_bytes()) {
                None => return Ok(&[]),
                Some(x) => x.as_bytes().ok_or_else(|| bad(&format!("{key} is not a string")))?,
            };
            let size = if v6 { 18 } else { 6 };
            if b.len() % size != 0 {
                return Err(bad(&format!("{key}: {} bytes, not a multiple of {size}", b.len())));
            }
            Ok(b)
        };
        let mut m = PexMessage::default();
        for v6 in [false, true] {
            let (key, fkey, dkey) =
                if v6 { ("added6", "added6.f", "dropped6") } else { ("added", "added.f", "dropped") };
            let added = list(key, v6)?;
            let n = added.len() / if v6 { 18 } else { 6 };
            let f = d.get(fkey.as_bytes()).and_then(Value::as_bytes).filter(|f| f.len() == n);
            m.added.extend(addrs(added, v6).enumerate().map(|(i, a)| (a, f.map_or(0, |f| f[i]))));
            m.dropped.extend(addrs(list(dkey, v6)?, v6));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_bep11_and_round_trips() {
        let m = PexMessage {
            added: vec![("10.0.0.1:6881".parse().unwrap(), flags::SEED), ("[::1]:80".parse().unwrap(), 0)],
            dropped: vec!["10.0.0.2:1".parse().unwrap()],
        };
        let mut want = b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f1:\x026:added618:".to_vec();
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(b"\x01\x00\x508:added6.f1:\x007:dropped6:\x0a\x00\x00\x02\x00\x018:dropped60:e");
        assert_eq!(m.encode(), want);
        assert_eq!(PexMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn tolerates_missing_parts_and_refuses_broken_lists() {
        // libtorrent's first message: every list present, some empty.
        let m = PexMessage::decode(b"d5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f1:\x017:dropped0:e").unwrap();
        assert_eq!(m.added, vec![("127.0.0.1:6881".parse().unwrap(), flags::ENCRYPTION)]);
        // Flags of the wrong length: the addresses stay, their flags are 0.
        let m = PexMessage::decode(b"d5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f0:e").unwrap();
        assert_eq!(m.added, vec![("127.0.0.1:6881".parse().unwrap(), 0)]);
        assert_eq!(PexMessage::decode(b"de").unwrap(), PexMessage::default());
        for bad in [&b""[..], b"le", b"d5:added5:12345e", b"d7:dropped1:xe", b"d6:added6i1ee", b"d5:added6:123456ejunk"]
        {
            assert!(PexMessage::decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn any_message_round_trips(
            v4 in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>(), any::<u8>()), 0..60),
            v6 in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>(), any::<u8>()), 0..60),
            dropped in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..60),
        ) {
            let mut m = PexMessage::default();
            m.added.extend(v4.iter().map(|(ip, p, f)| (SocketAddr::new(IpAddr::from(*ip), *p), *f)));
            m.added.extend(v6.iter().map(|(ip, p, f)| (SocketAddr::new(IpAddr::from(*ip), *p), *f)));
            m.dropped.extend(dropped.iter().map(|(ip, p)| SocketAddr::new(IpAddr::from(*ip), *p)));
            prop_assert_eq!(PexMessage::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PexMessage::decode(&data);
        }
    }
}
