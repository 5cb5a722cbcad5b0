//! The bitswarm peer engine on tokio: one torrent, seeded or downloaded, over many connections.
//!
//! * [`Engine::start`] checks the data already under the folder (on every core), listens, dials
//!   the peers it is given or learns of, and trades pieces until [`Engine::shutdown`].
//! * Connections run as tasks (a reader that drives the protocol and a writer that batches
//!   messages and serves blocks); hashing and disk I/O run on blocking threads.
//! * A piece counts only after its SHA-1 matched and it was written; peers that send pieces which
//!   fail their hash are banned after repeated failures.

mod choker;
mod conn;
mod disk;
mod engine;
mod metadata;
mod picker;
mod rate;
mod tracker;

pub use engine::{Config, Engine, EngineError, Incoming, Outgoing, Role, Stats};
pub use metadata::{MetadataQuery, fetch_metadata};
pub use picker::PeerKey;
pub use tracker::{Announce, Reply, Tiers, announce};

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

/// A random number from the standard library's randomly keyed hasher (no extra crate).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}
