//! Info hashes as RPC clients write them: 40 hex digits in either case, 32 base32 characters,
//! or inside a magnet link (`xt=urn:btih:…`), the forms Transmission 4.0's magnet parser takes
//! wherever a torrent is named by a string (`ids`, `torrent-add`'s `filename`).

use std::fmt;

/// A BitTorrent v1 info hash (the SHA-1 of the info dictionary).
///
/// Shown (`Display`, `hashString`) as 40 lower-case hex digits: Sonarr compares hashes in lower
/// case, Flood sends them in upper case, and Transmission always answers in lower case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// Lower-case hex, as `hashString` and magnet links carry it.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// 40 hex digits, either case.
    pub fn from_hex(s: &str) -> Option<InfoHash> {
        if s.len() != 40 {
            return None;
        }
        let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(s.as_bytes()).ok()?;
        Some(InfoHash(bytes.try_into().ok()?))
    }

    /// 32 base32 characters (RFC 4648 alphabet, either case), the older magnet link form.
    pub fn from_base32(s: &str) -> Option<InfoHash> {
        if s.len() != 32 {
            return None;
        }
        let upper = s.to_ascii_uppercase();
        let bytes = data_encoding::BASE32_NOPAD.decode(upper.as_bytes()).ok()?;
        Some(InfoHash(bytes.try_into().ok()?))
    }

    /// A hash written any way Transmission 4.0 accepts one: hex, base32, or a magnet link.
    pub fn parse(s: &str) -> Option<InfoHash> {
        InfoHash::from_hex(s).or_else(|| InfoHash::from_base32(s)).or_else(|| Magnet::parse(s).map(|m| m.info_hash))
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

/// What this crate needs from a magnet link: its v1 info hash and display name. The daemon
/// parses the rest (trackers, peers, web seeds) itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// `dn`, percent-decoded, if present.
    pub name: Option<String>,
}

impl Magnet {
    /// Parses `magnet:?xt=urn:btih:<hash>&…` (the scheme in either case; `xt`, `xt.1`, … as
    /// BEP 9 allows several; values percent-decoded). `None` when no `xt` names a v1 hash.
    pub fn parse(s: &str) -> Option<Magnet> {
        let rest = strip_prefix_ignore_case(s, "magnet:")?;
        let query = rest.strip_prefix('?').unwrap_or(rest);
        let mut info_hash = None;
        let mut name = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "xt" || key.starts_with("xt.") {
                let value = decode_component(value);
                if info_hash.is_none()
                    && let Some(h) = strip_prefix_ignore_case(&value, "urn:btih:")
                {
                    info_hash = InfoHash::from_hex(h).or_else(|| InfoHash::from_base32(h));
                }
            } else if key == "dn" && name.is_none() {
                name = Some(decode_component(value));
            }
        }
        Some(Magnet { info_hash: info_hash?, name })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// A query value: `+` is a space, `%XX` a byte; bytes that are not UTF-8 become U+FFFD.
fn decode_component(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn hex_either_case_shown_lower() {
        let h = InfoHash::from_hex(HEX).unwrap();
        assert_eq!(InfoHash::from_hex(&HEX.to_uppercase()), Some(h));
        assert_eq!(h.to_string(), HEX);
        assert_eq!(InfoHash::from_hex(&HEX[..39]), None);
        assert_eq!(InfoHash::from_hex("g123456789abcdef0123456789abcdef01234567"), None);
        // 40 bytes that are not all ASCII must not panic on slicing.
        assert_eq!(InfoHash::from_hex("ééééééééééééééééééééé"), None);
    }

    #[test]
    fn base32_either_case() {
        let h = InfoHash::from_hex(HEX).unwrap();
        let b32 = data_encoding::BASE32_NOPAD.encode(&h.0);
        assert_eq!(b32.len(), 32);
        assert_eq!(InfoHash::from_base32(&b32), Some(h));
        assert_eq!(InfoHash::from_base32(&b32.to_lowercase()), Some(h));
        assert_eq!(InfoHash::parse(&b32), Some(h));
    }

    #[test]
    fn magnet_links() {
        let h = InfoHash::from_hex(HEX).unwrap();
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=fake+magnet%21&tr=http%3A%2F%2Fx")).unwrap();
        assert_eq!(m, Magnet { info_hash: h, name: Some("fake magnet!".into()) });
        let upper = format!("MAGNET:?xt=URN:BTIH:{}", HEX.to_uppercase());
        assert_eq!(Magnet::parse(&upper).map(|m| m.info_hash), Some(h));
        // A v2-only link names no v1 hash; a hybrid one does in one of its xt.
        assert_eq!(Magnet::parse("magnet:?xt=urn:btmh:1220aa"), None);
        let hybrid = format!("magnet:?xt.1=urn:btmh:1220aa&xt.2=urn:btih:{HEX}");
        assert_eq!(Magnet::parse(&hybrid).map(|m| m.info_hash), Some(h));
        assert_eq!(Magnet::parse("magnet:"), None);
        assert_eq!(Magnet::parse("magnet:?xt=urn:btih:zz"), None);
        assert_eq!(InfoHash::parse("2"), None);
        assert_eq!(InfoHash::parse("é"), None);
    }
}
