//! The bitswarm peer engine on tokio: a session of many torrents on one port.
//!
//! * [`Session`] owns the listening socket, the hashing threads, the rate and connection limits,
//!   our peer id and the torrents by info-hash; an incoming handshake (plaintext or MSE) goes to
//!   the torrent it names.
//! * Each torrent ([`TorrentHandle`]) lives through explicit states ([`State`]): fetching a
//!   magnet link's metadata, checking its data, queued, downloading, seeding, stopped, or
//!   stopped by an error. One task per torrent drives it; commands (start, stop, verify) only
//!   tell that task what is wanted.
//! * A running torrent (`live.rs`) dials, rechokes and announces; its connections (`conn.rs`)
//!   see it only through the narrow [`link::Link`] trait. Hashing runs on the session's threads,
//!   several pieces at once; disk I/O on blocking threads.
//! * A piece counts only after its SHA-1 matched and it was written; peers that send pieces which
//!   fail their hash are banned after repeated failures.

mod announcer;
mod blocklist;
mod choker;
mod conn;
mod core;
mod dht;
mod disk;
pub(crate) mod link;
mod live;
mod lsd;
mod metadata;
mod picker;
mod queue;
mod rate;
mod session;
mod signal;
mod torrent;
mod tracker;

pub use blocklist::Blocklist;
pub use core::{Incoming, Journal, Outgoing, Settings};
pub use dht::{DEFAULT_ROUTERS, DhtNode, DhtStats, parse_router};
pub use link::PeerKey;
pub use live::{PeerInfo, Source, TrackerStatus};
pub use lsd::{check_group as check_lsd_group, default_groups as default_lsd_groups};
pub use metadata::{MetadataQuery, fetch_metadata};
pub use session::{AddError, QueueMove, Session, SessionError, TorrentHandle};
pub use torrent::{
    AddSource, AddTorrent, Check, FileOp, FilePriority, FileStamp, Limit, Resume, State, Times, TorrentSettings,
    TorrentStats, TrackerProblem, finish_file_op,
};
pub use tracker::{Announce, Reply, Tiers, announce, fetch_url};

/// How we name ourselves in the extension handshake (`v`).
pub(crate) const CLIENT: &str = concat!("bitswarm ", env!("CARGO_PKG_VERSION"));

/// A new random peer id: `-BW0100-` and 12 random bytes (Azureus style).
pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-BW0100-000000000000";
    let r = random_u64() ^ (random_u64() << 1);
    let r2 = random_u64();
    for (i, b) in id[8..].iter_mut().enumerate() {
        let x = if i < 8 { r >> (i * 8) } else { r2 >> ((i - 8) * 8) };
        // Printable, so logs and trackers show something readable.
        *b = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[(x as u8 % 62) as usize];
    }
    id
}

/// A socket about to be bound to `addr`: on IPv6's `::`, it takes IPv4 too (IPV6_V6ONLY off,
/// which is Linux's default but not every system's, nor every Linux's: `bindv6only`).
pub(crate) fn dual_stack(s: &socket2::Socket, addr: std::net::SocketAddr) -> std::io::Result<()> {
    match addr.ip() {
        std::net::IpAddr::V6(a) if a.is_unspecified() => s.set_only_v6(false),
        _ => Ok(()),
    }
}

/// An address on this machine or a local network: loopback, private (RFC 1918, IPv6 unique
/// local), link-local, or shared (carrier-grade NAT).
pub(crate) fn is_local(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(a) => {
            a.is_loopback() || (a.segments()[0] & 0xfe00) == 0xfc00 || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// A moment kept in an atomic (milliseconds after the first one the process stored), for times
/// that connections update and the engine reads without a lock.
#[derive(Default)]
pub(crate) struct Stamp(std::sync::atomic::AtomicU64);

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl Stamp {
    pub fn set(&self, t: std::time::Instant) {
        let ms = t.saturating_duration_since(epoch()).as_millis() as u64;
        self.0.store(ms + 1, std::sync::atomic::Ordering::Relaxed);
    }
    /// None until set.
    pub fn get(&self) -> Option<std::time::Instant> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            ms => Some(epoch() + std::time::Duration::from_millis(ms - 1)),
        }
    }
}

/// A random number from the standard library's randomly keyed hasher (no extra crate).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_local(local.parse().unwrap()), "{local}");
        }
        for global in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_local(global.parse().unwrap()), "{global}");
        }
    }
}
