//! Local Service Discovery (BEP 14) messages, without I/O: the `BT-SEARCH` announce a peer
//! multicasts on its local network to say which torrents it takes part in, formatted and
//! parsed.
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: 6881\r\n
//! Infohash: 0123456789abcdef0123456789abcdef01234567\r\n   (one or more)
//! cookie: 5f3a9c01\r\n                                      (optional)
//! \r\n
//! ```
//!
//! [`parse`] takes any bytes from the network: it never panics, looks at no more than
//! [`MAX_MESSAGE`] bytes, and keeps at most [`MAX_HASHES`] info-hashes of a message.

use std::net::SocketAddr;

/// The IPv4 group and port of BEP 14 (organisation-local scope).
pub const GROUP_V4: &str = "239.192.152.143:6771";
/// The IPv6 group and port of BEP 14 (site-local scope).
pub const GROUP_V6: &str = "[ff15::efc0:988f]:6771";
/// BEP 14: a packet carrying several info-hashes should not exceed this (MTU).
pub const MAX_PACKET: usize = 1400;
/// Longest message [`parse`] reads; anything longer is refused whole.
pub const MAX_MESSAGE: usize = 2048;
/// Info-hashes kept from one message (a message of [`MAX_MESSAGE`] bytes has room for about 38).
pub const MAX_HASHES: usize = 40;
/// Longest cookie kept (ours are 8 hex digits; libtorrent's are a hex number).
pub const MAX_COOKIE: usize = 64;

const REQUEST_LINE: &str = "BT-SEARCH * HTTP/1.1";

/// An announce as heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The TCP port the sender listens on for peers (never 0).
    pub port: u16,
    /// The torrents it takes part in (v1 info-hashes, or truncated v2 ones), at most
    /// [`MAX_HASHES`], without duplicates, in the order sent.
    pub info_hashes: Vec<[u8; 20]>,
    /// Its cookie, by which a sender recognises (and ignores) its own announces.
    pub cookie: Option<Vec<u8>>,
}

/// Why a datagram is not an announce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsdError {
    #[error("{0} bytes: longer than the {MAX_MESSAGE} of an announce")]
    TooLong(usize),
    #[error("not a BT-SEARCH request")]
    NotBtSearch,
    #[error("no Port header")]
    NoPort,
    #[error("Port {0:?} is not a port (1-65535)")]
    BadPort(String),
    #[error("no valid Infohash header")]
    NoInfoHash,
}

/// Parses one datagram. Unknown headers are ignored (as BEP 14 asks), and so are info-hashes
/// that are not 40 hex digits; header names are matched without regard to case.
pub fn parse(datagram: &[u8]) -> Result<Announce, LsdError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(LsdError::TooLong(datagram.len()));
    }
    let mut lines = datagram.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    if lines.next().map(trim) != Some(REQUEST_LINE.as_bytes()) {
        return Err(LsdError::NotBtSearch);
    }
    let mut port = None;
    let mut info_hashes: Vec<[u8; 20]> = Vec::new();
    let mut cookie = None;
    for line in lines {
        if line.is_empty() {
            // The end of the headers.
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"port") {
            let text = || String::from_utf8_lossy(value).chars().take(16).collect::<String>();
            let p = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| LsdError::BadPort(text()))?;
            port = Some(p);
        } else if name.eq_ignore_ascii_case(b"infohash") {
            if let Some(h) = hex20(value)
                && info_hashes.len() < MAX_HASHES
                && !info_hashes.contains(&h)
            {
                info_hashes.push(h);
            }
        } else if name.eq_ignore_ascii_case(b"cookie") && !value.is_empty() && value.len() <= MAX_COOKIE {
            cookie = Some(value.to_vec());
        }
    }
    let port = port.ok_or(LsdError::NoPort)?;
    if info_hashes.is_empty() {
        return Err(LsdError::NoInfoHash);
    }
    Ok(Announce { port, info_hashes, cookie })
}

/// The `Host` header's value for a group: `239.192.152.143:6771`, `[ff15::efc0:988f]:6771`.
pub fn host(group: SocketAddr) -> String {
    // SocketAddr's Display brackets IPv6 addresses; the scope id is not the group's business.
    match group {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        a => a.to_string(),
    }
}

/// How many info-hashes fit in one packet to `group` with this cookie, within [`MAX_PACKET`].
pub fn hashes_per_packet(group: SocketAddr, cookie: &[u8]) -> usize {
    let fixed = format(group, 65535, &[], cookie).len();
    (MAX_PACKET.saturating_sub(fixed) / INFOHASH_LINE).max(1)
}

/// `Infohash: ` + 40 hex digits + CRLF.
const INFOHASH_LINE: usize = 10 + 40 + 2;

/// An announce of `info_hashes` (all of them: the caller keeps a packet within
/// [`hashes_per_packet`]) for peers on TCP `port`, to `group`.
pub fn format(group: SocketAddr, port: u16, info_hashes: &[[u8; 20]], cookie: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + info_hashes.len() * INFOHASH_LINE);
    out.extend_from_slice(REQUEST_LINE.as_bytes());
    out.extend_from_slice(format!("\r\nHost: {}\r\nPort: {port}\r\n", host(group)).as_bytes());
    for h in info_hashes {
        out.extend_from_slice(b"Infohash: ");
        for b in h {
            out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        out.extend_from_slice(b"\r\n");
    }
    if !cookie.is_empty() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(cookie);
        out.extend_from_slice(b"\r\n");
    }
    // The blank line that ends the headers, and the empty body's line that BEP 14 shows.
    out.extend_from_slice(b"\r\n\r\n");
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// 40 hex digits (either case) as 20 bytes.
fn hex20(s: &[u8]) -> Option<[u8; 20]> {
    if s.len() != 40 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 20];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4() -> SocketAddr {
        GROUP_V4.parse().unwrap()
    }

    #[test]
    fn format_is_bep14s() {
        let m = format(v4(), 6881, &[[0xab; 20]], b"c00k1e");
        let text = std::str::from_utf8(&m).unwrap();
        assert_eq!(
            text,
            "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n\
             Infohash: abababababababababababababababababababab\r\ncookie: c00k1e\r\n\r\n\r\n"
        );
        let v6 = format(GROUP_V6.parse().unwrap(), 1, &[[0; 20]], b"");
        assert!(v6.starts_with(b"BT-SEARCH * HTTP/1.1\r\nHost: [ff15::efc0:988f]:6771\r\n"));
    }

    #[test]
    fn round_trip_with_several_hashes_within_the_mtu() {
        let cookie = b"0123abcd";
        let n = hashes_per_packet(GROUP_V6.parse().unwrap(), cookie);
        assert!(n >= 20, "{n}");
        let hashes: Vec<[u8; 20]> = (0..n as u8).map(|i| [i; 20]).collect();
        for group in [v4(), GROUP_V6.parse().unwrap()] {
            let m = format(group, 65535, &hashes, cookie);
            assert!(m.len() <= MAX_PACKET, "{}", m.len());
            let a = parse(&m).unwrap();
            assert_eq!(a, Announce { port: 65535, info_hashes: hashes.clone(), cookie: Some(cookie.to_vec()) });
        }
    }

    /// libtorrent 2.0's announce, as sniffed (`lsd.cpp`): a cookie in hex, the two CRLFs.
    #[test]
    fn parses_libtorrents_announce() {
        let m = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 20000\r\n\
                  Infohash: 8E1AA2BDFE9F01AAB7C5CC0E4C0C6D4FF1E7A3C5\r\ncookie: 3e1a08e8\r\n\r\n\r\n";
        let a = parse(m).unwrap();
        assert_eq!(a.port, 20000);
        assert_eq!(a.info_hashes[0][..2], [0x8e, 0x1a]);
        assert_eq!(a.cookie.as_deref(), Some(&b"3e1a08e8"[..]));
    }

    #[test]
    fn bare_newlines_case_and_unknown_headers() {
        let m = b"BT-SEARCH * HTTP/1.1\nhost: x\nX-Other: y\nPORT:  7 \ninfohash: 0000000000000000000000000000000000000001\n";
        let a = parse(m).unwrap();
        assert_eq!((a.port, a.info_hashes.len(), a.cookie), (7, 1, None));
    }

    #[test]
    fn refusals_say_why() {
        let ih = "Infohash: 0000000000000000000000000000000000000001\r\n";
        assert_eq!(parse(b"M-SEARCH * HTTP/1.1\r\n\r\n"), Err(LsdError::NotBtSearch));
        assert_eq!(parse(b""), Err(LsdError::NotBtSearch));
        assert_eq!(parse(format!("BT-SEARCH * HTTP/1.1\r\n{ih}\r\n").as_bytes()), Err(LsdError::NoPort));
        for bad in ["0", "65536", "-1", "", "12a", "999999999999"] {
            let m = format!("BT-SEARCH * HTTP/1.1\r\nPort: {bad}\r\n{ih}\r\n");
            assert!(matches!(parse(m.as_bytes()), Err(LsdError::BadPort(_))), "{bad}");
        }
        let m = "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: xyz\r\nInfohash: 00\r\n\r\n";
        assert_eq!(parse(m.as_bytes()), Err(LsdError::NoInfoHash));
        // Headers after the blank line are the body's, not headers.
        let m = format!("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n{ih}");
        assert_eq!(parse(m.as_bytes()), Err(LsdError::NoInfoHash));
        assert_eq!(parse(&vec![b'a'; MAX_MESSAGE + 1]), Err(LsdError::TooLong(MAX_MESSAGE + 1)));
    }

    #[test]
    fn hashes_are_bounded_and_deduplicated() {
        let mut m = String::from("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n");
        for i in 0..(MAX_HASHES + 5) {
            m.push_str(&format!("Infohash: {i:040x}\r\nInfohash: {i:040x}\r\n"));
        }
        // Within MAX_MESSAGE only because the lines are short enough: cut the message there.
        let bytes = &m.as_bytes()[..m.len().min(MAX_MESSAGE)];
        let a = parse(bytes).unwrap();
        assert!(a.info_hashes.len() <= MAX_HASHES);
        let mut sorted = a.info_hashes.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), a.info_hashes.len());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            if let Ok(a) = parse(&data) {
                prop_assert!(a.port != 0 && !a.info_hashes.is_empty() && a.info_hashes.len() <= MAX_HASHES);
            }
        }

        /// Mutations of a valid announce: cut, bytes flipped, lines doubled.
        #[test]
        fn mangled_announces_never_panic(
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8),
            port in 1u16..,
            hashes in proptest::collection::vec(any::<[u8; 20]>(), 1..30),
        ) {
            let mut m = format(v4(), port, &hashes, b"abc");
            let whole = parse(&m).unwrap();
            prop_assert_eq!(whole.port, port);
            prop_assert_eq!(whole.info_hashes.len(), {
                let mut h = hashes.clone(); h.sort(); h.dedup(); h.len()
            });
            for (at, b) in flips {
                if let Some(x) = m.get_mut(at) { *x = b; }
            }
            m.truncate(cut.max(1));
            let _ = parse(&m);
        }
    }
}
