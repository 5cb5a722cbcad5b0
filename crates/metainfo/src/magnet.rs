use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::InfoHash;

/// A magnet link (BEP 9): `magnet:?xt=urn:btih:…&dn=…&tr=…&x.pe=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// `dn`: display name.
    pub name: Option<String>,
    /// `tr`: tracker URLs, in order.
    pub trackers: Vec<String>,
    /// `x.pe`: peer addresses (`host:port`).
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link: it must start with \"magnet:?\"")]
    NotMagnet,
    #[error("parameter {0:?} is not valid percent-encoded UTF-8")]
    BadEncoding(String),
    #[error("no BitTorrent info-hash: the link needs xt=urn:btih:<40 hex or 32 base32 characters>")]
    NoInfoHash,
    #[error("xt=urn:btih:{0}: an info-hash is 40 hex digits or 32 base32 characters")]
    BadInfoHash(String),
    #[error("the link has only a v2 (btmh) info-hash; bitswarm speaks v1 (btih)")]
    V2Only,
    #[error("two different btih info-hashes in one link")]
    Conflicting,
}

impl Magnet {
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        let query = s.trim().strip_prefix("magnet:?").ok_or(MagnetError::NotMagnet)?;
        let mut hash = None;
        let mut v2 = false;
        let mut name = None;
        let mut trackers = Vec::new();
        let mut peers = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            // `+` means space in query strings; real links use it in `dn`.
            let v = v.replace('+', " ");
            let v =
                percent_decode_str(&v).decode_utf8().map_err(|_| MagnetError::BadEncoding(k.to_owned()))?.into_owned();
            // `xt.1`, `tr.2`… are numbered variants of the same keys.
            let base = k.split('.').next().unwrap_or(k);
            match (base, k) {
                ("xt", _) => {
                    if let Some(h) = v.strip_prefix("urn:btih:") {
                        let h = InfoHash::parse(h).map_err(|_| MagnetError::BadInfoHash(h.to_owned()))?;
                        if hash.is_some_and(|old| old != h) {
                            return Err(MagnetError::Conflicting);
                        }
                        hash = Some(h);
                    } else if v.starts_with("urn:btmh:") {
                        v2 = true;
                    }
                }
                ("dn", _) => name = Some(v),
                ("tr", _) if !v.is_empty() && !trackers.contains(&v) => trackers.push(v),
                (_, "x.pe") => peers.push(v),
                _ => {}
            }
        }
        let info_hash = match hash {
            Some(h) => h,
            None if v2 => return Err(MagnetError::V2Only),
            None => return Err(MagnetError::NoInfoHash),
        };
        Ok(Magnet { info_hash, name, trackers, peers })
    }
}

/// Characters escaped in parameter values: everything but unreserved ones (RFC 3986).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "magnet:?xt=urn:btih:{}", self.info_hash)?;
        if let Some(n) = &self.name {
            write!(f, "&dn={}", utf8_percent_encode(n, VALUE))?;
        }
        for t in &self.trackers {
            write!(f, "&tr={}", utf8_percent_encode(t, VALUE))?;
        }
        for p in &self.peers {
            write!(f, "&x.pe={}", utf8_percent_encode(p, VALUE))?;
        }
        Ok(())
    }
}
