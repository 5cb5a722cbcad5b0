//! HTTP basic auth at request time: checking credentials cheaply for clients that know them,
//! and slowly for those that guess.
//!
//! An argon2 check costs tens of milliseconds and 19 MiB on purpose, and most clients send
//! credentials with every request (transmission-remote, Python and web UIs poll). So a header
//! that passed once is remembered, as a keyed BLAKE2s MAC of it (the password is never kept
//! in clear), and later requests with it skip argon2. Checks that do run go one at a time on
//! the blocking pool, so guessing cannot take every core or much memory.
//!
//! Failed logins slow down per client (an IPv6 client per /64, since one host has that many
//! addresses). One client's checks run one after another, so a burst of parallel guesses is
//! no faster than a sequence (and parallel requests of a legitimate client wait only for the
//! first check, then find its header remembered). The wait before the next check doubles with
//! each failure from 250 ms up to 8 s, and an attempt that would wait more than 30 s is
//! refused at once with 403, as Transmission's anti-brute-force answers. The tables of clients
//! are bounded, forgetting the oldest first.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};

use crate::config::Credentials;

/// Wait after the first failure; doubles with each further one.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two checks from one client.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// An attempt that would wait longer than this is refused at once.
pub(crate) const MAX_QUEUE: Duration = Duration::from_secs(30);
/// A client whose last failure is this old starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Clients remembered with failures.
const MAX_CLIENTS: usize = 4096;
/// Authorization headers remembered as good.
const MAX_VERIFIED: usize = 64;

/// What to answer a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on (also when no password is required).
    Allowed,
    /// No `Authorization: Basic …`: 401 at once. transmission-remote's first request always
    /// looks like this (curl sends credentials only after a 401 asks for them), so it is not
    /// counted as a failure.
    Missing,
    /// Wrong credentials: 401, counted.
    Denied,
    /// Too many failures from this client lately: 403.
    Refused,
}

/// The key failures are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// The server was not given the client's address.
    Unknown,
}

impl ClientKey {
    pub(crate) fn of(ip: Option<IpAddr>) -> ClientKey {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(a)) => ClientKey::V4(u32::from(a)),
            Some(IpAddr::V6(a)) => ClientKey::V6((u128::from(a) >> 64) as u64),
            None => ClientKey::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// When the next check from this client may run.
    next_allowed: Instant,
    last_failure: Instant,
}

/// Failure counts per client, bounded. Pure: the caller passes `now`.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    entries: HashMap<ClientKey, Entry>,
}

fn delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16);
    FIRST_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

impl Throttle {
    /// Books a check for `key`: how long to wait before running it, or `None` to refuse it.
    /// Each booking pushes the next one back by the client's delay, so concurrent guesses
    /// queue instead of running together.
    pub(crate) fn reserve(&mut self, key: ClientKey, now: Instant) -> Option<Duration> {
        let Some(e) = self.entries.get_mut(&key) else { return Some(Duration::ZERO) };
        if now.saturating_duration_since(e.last_failure) > FORGET_AFTER {
            self.entries.remove(&key);
            return Some(Duration::ZERO);
        }
        let slot = e.next_allowed.max(now);
        let wait = slot - now;
        if wait > MAX_QUEUE {
            return None;
        }
        e.next_allowed = slot + delay(e.failures);
        Some(wait)
    }

    /// Records a failed check.
    pub(crate) fn failure(&mut self, key: ClientKey, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_CLIENTS {
            self.entries.retain(|_, e| now.saturating_duration_since(e.last_failure) <= FORGET_AFTER);
            if self.entries.len() >= MAX_CLIENTS
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_failure).map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        let e = self.entries.entry(key).or_insert(Entry { failures: 0, next_allowed: now, last_failure: now });
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        e.next_allowed = e.next_allowed.max(now + delay(e.failures));
    }

    /// Records a successful check: the client starts afresh.
    pub(crate) fn success(&mut self, key: ClientKey) {
        self.entries.remove(&key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Splits `Authorization: Basic base64(user:pass)` (scheme in any case) at the first `:`.
pub(crate) fn parse_basic(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let scheme = header.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let b64: Vec<u8> = header[6..].iter().copied().filter(|c| !c.is_ascii_whitespace()).collect();
    let decoded = data_encoding::BASE64.decode(&b64).or_else(|_| data_encoding::BASE64_NOPAD.decode(&b64)).ok()?;
    let colon = decoded.iter().position(|&c| c == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// The credential check for one router.
pub(crate) struct Guard {
    credentials: Option<Arc<Credentials>>,
    mac_key: [u8; 32],
    verified: Mutex<HashSet<[u8; 32]>>,
    throttle: Mutex<Throttle>,
    /// One lock per client with a check under way: its checks run one at a time. Weak, so a
    /// client's entry goes away with its last waiting request.
    turns: Mutex<HashMap<ClientKey, Weak<tokio::sync::Mutex<()>>>>,
    /// argon2 checks run one at a time.
    checking: tokio::sync::Semaphore,
}

impl Guard {
    pub(crate) fn new(credentials: Option<Credentials>) -> Guard {
        let mut mac_key = [0u8; 32];
        if getrandom::fill(&mut mac_key).is_err() {
            // Without randomness the cache could be keyed predictably: do without it.
            tracing::warn!("no OS randomness for the RPC credential cache; every request will run argon2");
        }
        Guard {
            credentials: credentials.map(Arc::new),
            mac_key,
            verified: Mutex::new(HashSet::new()),
            throttle: Mutex::new(Throttle::default()),
            turns: Mutex::new(HashMap::new()),
            checking: tokio::sync::Semaphore::new(1),
        }
    }

    pub(crate) fn required(&self) -> bool {
        self.credentials.is_some()
    }

    fn mac(&self, header: &[u8]) -> Option<[u8; 32]> {
        if self.mac_key == [0u8; 32] {
            return None;
        }
        let mut m = <Blake2sMac256 as KeyInit>::new_from_slice(&self.mac_key).ok()?;
        Mac::update(&mut m, header);
        Some(m.finalize().into_bytes().into())
    }

    /// Checks a request's `Authorization` header.
    pub(crate) async fn check(&self, header: Option<&[u8]>, client: Option<IpAddr>) -> Verdict {
        let Some(credentials) = &self.credentials else { return Verdict::Allowed };
        let Some(header) = header.filter(|h| h.len() >= 6 && h[..6].eq_ignore_ascii_case(b"basic ")) else {
            return Verdict::Missing;
        };
        let tag = self.mac(header);
        if let Some(tag) = tag
            && lock(&self.verified).contains(&tag)
        {
            return Verdict::Allowed;
        }
        let key = ClientKey::of(client);
        let turn = self.turn(key);
        let Ok(_turn) = tokio::time::timeout(MAX_QUEUE, turn.lock()).await else {
            tracing::warn!(client = ?client, "RPC login refused: too many attempts at once");
            return Verdict::Refused;
        };
        // The check this one waited for may have been of the same header.
        if let Some(tag) = tag
            && lock(&self.verified).contains(&tag)
        {
            return Verdict::Allowed;
        }
        let Some(wait) = lock(&self.throttle).reserve(key, Instant::now()) else {
            tracing::warn!(client = ?client, "RPC login refused: too many failed attempts");
            return Verdict::Refused;
        };
        tokio::time::sleep(wait).await;
        let ok = match parse_basic(header) {
            Some((user, pass)) => self.verify(credentials, user, pass).await,
            None => false,
        };
        if ok {
            lock(&self.throttle).success(key);
            if let Some(tag) = tag {
                let mut v = lock(&self.verified);
                if v.len() >= MAX_VERIFIED {
                    v.clear();
                }
                v.insert(tag);
            }
            Verdict::Allowed
        } else {
            lock(&self.throttle).failure(key, Instant::now());
            tracing::warn!(client = ?client, "RPC login failed");
            Verdict::Denied
        }
    }

    /// The lock that orders `key`'s checks.
    fn turn(&self, key: ClientKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = lock(&self.turns);
        if let Some(t) = turns.get(&key).and_then(Weak::upgrade) {
            return t;
        }
        if turns.len() >= MAX_CLIENTS {
            turns.retain(|_, t| t.strong_count() > 0);
        }
        let t = Arc::new(tokio::sync::Mutex::new(()));
        // Past the bound (that many clients checking at once), the newcomer is not remembered:
        // its checks are then not ordered, but still throttled and serialized by `checking`.
        if turns.len() < MAX_CLIENTS {
            turns.insert(key, Arc::downgrade(&t));
        }
        t
    }

    async fn verify(&self, credentials: &Arc<Credentials>, user: Vec<u8>, pass: Vec<u8>) -> bool {
        let Ok(_permit) = self.checking.acquire().await else { return false };
        let credentials = Arc::clone(credentials);
        tokio::task::spawn_blocking(move || credentials.matches(&user, &pass)).await.unwrap_or(false)
    }
}

/// A poisoned lock only means another request panicked mid-update of a cache or counter;
/// the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header() {
        let h = format!("Basic {}", data_encoding::BASE64.encode(b"user:pa:ss"));
        assert_eq!(parse_basic(h.as_bytes()), Some((b"user".to_vec(), b"pa:ss".to_vec())));
        let h = format!("bAsIc {}", data_encoding::BASE64.encode(b":"));
        assert_eq!(parse_basic(h.as_bytes()), Some((vec![], vec![])));
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic dXNlcg=="), None); // "user", no colon
        assert_eq!(parse_basic(b"Basi"), None);
    }

    #[test]
    fn client_keys() {
        let k = |s: &str| ClientKey::of(Some(s.parse().unwrap()));
        assert_eq!(k("10.0.0.1"), k("::ffff:10.0.0.1"));
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:2"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        assert_eq!(ClientKey::of(None), ClientKey::Unknown);
    }

    #[test]
    fn failures_slow_down_then_refuse() {
        let mut t = Throttle::default();
        let key = ClientKey::V4(1);
        let t0 = Instant::now();
        assert_eq!(t.reserve(key, t0), Some(Duration::ZERO));
        t.failure(key, t0);
        // The next check waits the first delay; one booked at once after it waits twice that.
        assert_eq!(t.reserve(key, t0), Some(FIRST_DELAY));
        assert_eq!(t.reserve(key, t0), Some(FIRST_DELAY * 2));
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(1);
            t.failure(key, now);
        }
        // Concurrent attempts queue until the queue is MAX_QUEUE long, then are refused.
        let mut refused = false;
        for _ in 0..20 {
            match t.reserve(key, now) {
                Some(w) => assert!(w <= MAX_QUEUE),
                None => refused = true,
            }
        }
        assert!(refused);
        // Another client is not affected; a success starts afresh; old failures are forgotten.
        assert_eq!(t.reserve(ClientKey::V4(2), now), Some(Duration::ZERO));
        t.success(key);
        assert_eq!(t.reserve(key, now), Some(Duration::ZERO));
        t.failure(key, now);
        assert_eq!(t.reserve(key, now + FORGET_AFTER + Duration::from_secs(1)), Some(Duration::ZERO));
    }

    #[test]
    fn the_client_table_is_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 * 2) {
            t.failure(ClientKey::V4(i), now + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(t.len(), MAX_CLIENTS);
    }

    #[tokio::test]
    async fn guard_caches_good_credentials_and_slows_bad_ones() {
        let g = Guard::new(Some(Credentials::from_password("u", "p")));
        let good = format!("Basic {}", data_encoding::BASE64.encode(b"u:p"));
        let bad = format!("Basic {}", data_encoding::BASE64.encode(b"u:x"));
        let ip = Some("127.0.0.1".parse().unwrap());
        assert_eq!(g.check(None, ip).await, Verdict::Missing);
        assert_eq!(g.check(Some(b"Digest x"), ip).await, Verdict::Missing);
        assert_eq!(g.check(Some(good.as_bytes()), ip).await, Verdict::Allowed);
        let t = Instant::now();
        assert_eq!(g.check(Some(good.as_bytes()), ip).await, Verdict::Allowed);
        assert!(t.elapsed() < Duration::from_millis(5), "a known header skips argon2");
        assert_eq!(g.check(Some(bad.as_bytes()), ip).await, Verdict::Denied);
        let t = Instant::now();
        assert_eq!(g.check(Some(bad.as_bytes()), ip).await, Verdict::Denied);
        assert!(t.elapsed() >= FIRST_DELAY, "the second failure waited");
        // A burst of parallel guesses runs one after another, each waiting longer.
        let g = Arc::new(Guard::new(Some(Credentials::from_password("u", "p"))));
        let other = Some("10.9.9.9".parse().unwrap());
        let t = Instant::now();
        let burst: Vec<_> = (0..3)
            .map(|_| {
                let (g, bad) = (Arc::clone(&g), bad.clone());
                tokio::spawn(async move { g.check(Some(bad.as_bytes()), other).await })
            })
            .collect();
        for b in burst {
            assert_eq!(b.await.unwrap(), Verdict::Denied);
        }
        assert!(t.elapsed() >= FIRST_DELAY * 3, "250 ms then 500 ms between the three: {:?}", t.elapsed());
        let open = Guard::new(None);
        assert_eq!(open.check(Some(bad.as_bytes()), ip).await, Verdict::Allowed);
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        /// Any header bytes parse to credentials or to nothing, without panicking.
        #[test]
        fn any_authorization_header(header in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = super::parse_basic(&header);
            let mut basic = b"Basic ".to_vec();
            basic.extend_from_slice(&header);
            let _ = super::parse_basic(&basic);
        }
    }
}
