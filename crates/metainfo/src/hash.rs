use std::fmt;
use std::str::FromStr;

/// A v1 info-hash: SHA-1 of the bencoded `info` dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an info-hash is 40 hex digits or 32 base32 characters, got {0:?}")]
pub struct HashParseError(pub String);

impl InfoHash {
    pub fn of(info_bytes: &[u8]) -> Self {
        use sha1::Digest;
        InfoHash(sha1::Sha1::digest(info_bytes).into())
    }
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(40);
        for b in self.0 {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
        }
        s
    }
    /// Parses 40 hex digits or 32 base32 characters (either case).
    pub fn parse(s: &str) -> Result<Self, HashParseError> {
        let err = || HashParseError(s.chars().take(64).collect());
        let mut out = [0u8; 20];
        match s.len() {
            40 => {
                let b = s.as_bytes();
                for (i, o) in out.iter_mut().enumerate() {
                    let hi = (b[2 * i] as char).to_digit(16).ok_or_else(err)?;
                    let lo = (b[2 * i + 1] as char).to_digit(16).ok_or_else(err)?;
                    *o = (hi * 16 + lo) as u8;
                }
            }
            32 => {
                let upper = s.to_ascii_uppercase();
                // Padding ("=") would decode to fewer than 20 bytes.
                let v = data_encoding::BASE32.decode(upper.as_bytes()).map_err(|_| err())?;
                if v.len() != out.len() {
                    return Err(err());
                }
                out.copy_from_slice(&v);
            }
            _ => return Err(err()),
        }
        Ok(InfoHash(out))
    }
}

impl FromStr for InfoHash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
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
