//! Announce tokens without stored state: a keyed hash of the querier's address and the
//! info-hash, under a secret that rotates every 5 minutes; the previous secret is still
//! accepted, so a token is good for 5 to 10 minutes (BEP 5 suggests 10).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::id::InfoHash;

/// How often the secret changes.
pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);
/// Bytes of a token (libtorrent uses 4; 8 make guessing hopeless).
const TOKEN_LEN: usize = 8;

#[derive(Debug)]
pub(crate) struct Tokens {
    current: [u8; 20],
    previous: [u8; 20],
    rotated_at: Instant,
}

impl Tokens {
    pub(crate) fn new(secret: [u8; 20], now: Instant) -> Self {
        Tokens { current: secret, previous: secret, rotated_at: now }
    }

    /// Replaces the secret if it is due; `fresh` is the next secret.
    pub(crate) fn maybe_rotate(&mut self, now: Instant, fresh: impl FnOnce() -> [u8; 20]) {
        if now.saturating_duration_since(self.rotated_at) >= ROTATE_EVERY {
            self.previous = self.current;
            self.current = fresh();
            self.rotated_at = now;
        }
    }

    fn make(secret: &[u8; 20], ip: IpAddr, info_hash: &InfoHash) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.update(info_hash.0);
        let d = h.finalize();
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&d[..TOKEN_LEN]);
        t
    }

    /// The token to hand `ip` in a `get_peers` answer for `info_hash`.
    pub(crate) fn token(&self, ip: IpAddr, info_hash: &InfoHash) -> Vec<u8> {
        Self::make(&self.current, ip, info_hash).to_vec()
    }

    /// Whether `token` is one we gave `ip` for `info_hash` under this or the last secret.
    pub(crate) fn check(&self, token: &[u8], ip: IpAddr, info_hash: &InfoHash) -> bool {
        token == Self::make(&self.current, ip, info_hash) || token == Self::make(&self.previous, ip, info_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_address_and_hash_and_survive_one_rotation() {
        let t0 = Instant::now();
        let mut t = Tokens::new([1; 20], t0);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let h = InfoHash([9; 20]);
        let tok = t.token(ip, &h);
        assert!(t.check(&tok, ip, &h));
        assert!(!t.check(&tok, "1.2.3.5".parse().unwrap(), &h));
        assert!(!t.check(&tok, ip, &InfoHash([8; 20])));
        assert!(!t.check(&tok[..4], ip, &h));
        t.maybe_rotate(t0 + Duration::from_secs(60), || [2; 20]);
        t.maybe_rotate(t0 + ROTATE_EVERY, || [2; 20]);
        assert!(t.check(&tok, ip, &h), "the previous secret still counts");
        t.maybe_rotate(t0 + 2 * ROTATE_EVERY, || [3; 20]);
        assert!(!t.check(&tok, ip, &h), "two rotations later it is stale");
    }
}
