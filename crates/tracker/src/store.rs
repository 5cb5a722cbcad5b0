//! The in-memory swarm table.
//!
//! * Sharded: the info-hash picks one of `shards` mutexes, so announces on different swarms
//!   almost never wait for each other; nothing global is locked on the announce path (one
//!   atomic counter changes only when a peer is added or removed).
//! * Compact: a peer is 32 bytes (IPv4) or 44 bytes (IPv6) in one allocation per swarm and
//!   family ([`Columns`]), grown in steps of a quarter: 12 (or 24) bytes that announces read
//!   and write (address, flags, last announce), and apart from them its 20-byte peer id, which
//!   only dictionary replies read. Swarms of more than [`INDEX_FROM`] peers add a hash index from
//!   address to position (4 bytes a slot). A swarm with no IPv6 peer pays 8 bytes for the family.
//! * Peers are keyed by the address the tracker saw (or a configured proxy header named) and
//!   the port they announced: a peer id alone can overwrite nobody.
//! * Counts are exact: seeders and leechers are maintained on every change, per swarm and per
//!   shard, so totals are a sum over shards.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use bitswarm_tracker_proto::http::Peer;
use bitswarm_tracker_proto::{Event, InfoHash, PeerId};

use crate::columns::Columns;

/// Swarms with more peers of one family than this get a hash index; below it a linear scan of
/// the dense vector is as fast and costs no memory.
pub const INDEX_FROM: usize = 48;

/// A SipHash keyed once per process with random keys (std's `RandomState`), shared by every
/// table so that each table costs no extra bytes for its hasher. Keys an attacker controls
/// (info-hashes, ports) cannot be steered into collisions without the keys.
#[derive(Clone, Copy, Default)]
pub struct Keyed;

impl BuildHasher for Keyed {
    type Hasher = std::hash::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        STATE.get_or_init(std::collections::hash_map::RandomState::new).build_hasher()
    }
}

/// An address in its compact wire form: 4 or 16 bytes of IP, then the port, big-endian.
pub trait Compact: Copy + Eq + Hash {
    /// Hands this address and `peer_id` to `out`.
    fn give(&self, peer_id: &[u8; 20], out: &mut impl PeerSink);
}
impl Compact for [u8; 6] {
    #[inline]
    fn give(&self, peer_id: &[u8; 20], out: &mut impl PeerSink) {
        out.v4(self, peer_id)
    }
}
impl Compact for [u8; 18] {
    #[inline]
    fn give(&self, peer_id: &[u8; 20], out: &mut impl PeerSink) {
        out.v6(self, peer_id)
    }
}

pub(crate) fn compact4(ip: Ipv4Addr, port: u16) -> [u8; 6] {
    let mut a = [0u8; 6];
    a[..4].copy_from_slice(&ip.octets());
    a[4..].copy_from_slice(&port.to_be_bytes());
    a
}
pub(crate) fn compact6(ip: Ipv6Addr, port: u16) -> [u8; 18] {
    let mut a = [0u8; 18];
    a[..16].copy_from_slice(&ip.octets());
    a[16..].copy_from_slice(&port.to_be_bytes());
    a
}

/// A peer as announces read and write it: 12 bytes for IPv4, 24 for IPv6. Its peer id lives
/// apart (the second column of [`PeerList::peers`]), read only by replies that carry ids, so a
/// reply's peer selection and a re-announce touch 12 bytes a peer, not 32.
#[derive(Clone, Copy)]
struct Entry<A> {
    addr: A,
    /// [`SEEDER`], [`COMPLETED`], and in the bits above them [`id_tag`] of the peer id stored.
    flags: u16,
    last_seen: u32,
}

/// The peer has the whole torrent.
const SEEDER: u16 = 1;
/// The peer's `completed` has been counted in the swarm's `downloaded`.
const COMPLETED: u16 = 2;
/// Where the peer id's tag starts in [`Entry::flags`].
const TAG_SHIFT: u32 = 2;

/// 14 bits of a peer id: a re-announce whose id has the stored tag leaves the id alone (it
/// writes it only when the tag differs or the client says `started`), so a re-announce does not
/// touch the id's cache line. A client that changes its id without `started` (1 in 16,384 of
/// those have the same tag) keeps its old id in dictionary replies until its next `started`.
fn id_tag(id: &[u8; 20]) -> u16 {
    let word = |i: usize| u64::from_le_bytes(id[i..i + 8].try_into().unwrap_or_default());
    let last = u64::from(u32::from_le_bytes([id[16], id[17], id[18], id[19]]));
    let x = word(0) ^ word(8).rotate_left(21) ^ last.rotate_left(42);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - (16 - TAG_SHIFT))) as u16
}

impl<A> Entry<A> {
    fn new(addr: A, seeder: bool, completed: bool, now: u32, id: &[u8; 20]) -> Self {
        let flags = (u16::from(seeder) * SEEDER) | (u16::from(completed) * COMPLETED) | (id_tag(id) << TAG_SHIFT);
        Entry { addr, flags, last_seen: now }
    }
    fn seeder(&self) -> bool {
        self.flags & SEEDER != 0
    }
}

// The memory figures in the README depend on these (with the peer id's 20 bytes: 32 and 44).
const _: () = assert!(std::mem::size_of::<Entry<[u8; 6]>>() == 12);
const _: () = assert!(std::mem::size_of::<Entry<[u8; 18]>>() == 24);

/// The peers of one swarm and one address family.
struct PeerList<A> {
    /// The entries, and the peer ids at the same positions, in one allocation.
    peers: Columns<Entry<A>>,
    /// Only for swarms of more than [`INDEX_FROM`] peers; most swarms never need one.
    index: Option<Index>,
    seeders: u32,
}

/// The most peers of one family a swarm can hold (positions in an [`Index`] slot have 20 bits).
pub const MAX_LIST: usize = (1 << 20) - 2;

/// An open-addressing index from a peer's address to its position in `entries`.
///
/// A slot is 0 (empty) or `tag << 20 | (position + 1)`, where the home slot and the 12-bit tag
/// are bits of the keyed SipHash of the address (so a client cannot aim collisions); a lookup
/// starts at the home slot, probes linearly, and reads an entry only when the tag matches. The
/// table is kept at most half full and deletions shift later slots back (no tombstones). A
/// lookup reads one slot's cache line and then the entry, which the announce touches anyway: a
/// general hash map added two more cache misses per announce (its header and its key-value
/// bucket) to big swarms. At 4 bytes a slot, the index of a big swarm is smaller than its
/// entries, and both stay in cache longer.
struct Index(Box<[u32]>);

/// The fewest slots an index has (a power of two: the mask depends on it).
const MIN_SLOTS: usize = (2 * INDEX_FROM).next_power_of_two();
const POSITION_BITS: u32 = 20;
const POSITION_MASK: u32 = (1 << POSITION_BITS) - 1;

impl Index {
    fn for_len(len: usize) -> Index {
        let slots = (len * 2).next_power_of_two().max(MIN_SLOTS);
        debug_assert!(slots.is_power_of_two());
        Index(vec![0; slots].into_boxed_slice())
    }

    /// The home slot (low bits) and the tag (the top 12 bits) of `addr`.
    fn hash<A: Compact>(&self, addr: &A) -> (usize, u32) {
        let h = Keyed.hash_one(addr);
        (h as usize & self.mask(), (h >> (64 - (32 - POSITION_BITS))) as u32)
    }

    fn mask(&self) -> usize {
        self.0.len() - 1
    }

    /// Room for `len` entries.
    fn fits(&self, len: usize) -> bool {
        len * 2 <= self.0.len()
    }

    /// The position a slot points at.
    fn position(&self, slot: usize) -> usize {
        ((self.0[slot] & POSITION_MASK) - 1) as usize
    }

    /// The slot of `addr`, if it is in `entries`.
    fn slot<A: Compact>(&self, addr: &A, entries: &[Entry<A>]) -> Option<usize> {
        let (mut i, tag) = self.hash(addr);
        let mask = self.mask();
        loop {
            let s = self.0[i];
            if s == 0 {
                return None;
            }
            if s >> POSITION_BITS == tag && entries.get(self.position(i)).is_some_and(|e| e.addr == *addr) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `addr` (not yet in the index) at `position` (below [`MAX_LIST`]); the caller keeps
    /// the table within [`Index::fits`].
    fn insert<A: Compact>(&mut self, addr: &A, position: usize) {
        debug_assert!(position < MAX_LIST);
        let (mut i, tag) = self.hash(addr);
        let mask = self.mask();
        while self.0[i] != 0 {
            i = (i + 1) & mask;
        }
        self.0[i] = tag << POSITION_BITS | (position as u32 + 1);
    }

    fn set_position(&mut self, slot: usize, position: usize) {
        self.0[slot] = self.0[slot] & !POSITION_MASK | (position as u32 + 1);
    }

    /// Empties `slot`, moving back the slots after it that would no longer be found (a slot's
    /// home comes from hashing its entry's address again: removals are rare next to lookups).
    fn remove<A: Compact>(&mut self, slot: usize, entries: &[Entry<A>]) {
        let mask = self.mask();
        let mut hole = slot;
        let mut j = slot;
        loop {
            j = (j + 1) & mask;
            let s = self.0[j];
            if s == 0 {
                break;
            }
            let Some(e) = entries.get(self.position(j)) else { break };
            let (home, _) = self.hash(&e.addr);
            // The slot at j may fill the hole unless its home lies after the hole (cyclically).
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.0[hole] = s;
                hole = j;
            }
        }
        self.0[hole] = 0;
    }
}

impl<A: Compact> Default for PeerList<A> {
    fn default() -> Self {
        PeerList { peers: Columns::default(), index: None, seeders: 0 }
    }
}

impl<A: Compact> PeerList<A> {
    fn len(&self) -> usize {
        self.peers.len()
    }
    fn leechers(&self) -> u32 {
        self.len() as u32 - self.seeders
    }

    fn find(&self, addr: &A) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.slot(addr, self.peers.entries()).map(|s| ix.position(s)),
            None => self.peers.entries().iter().position(|e| e.addr == *addr),
        }
    }

    /// Adds a peer (not in the list yet); the store keeps a list below [`MAX_LIST`].
    fn push(&mut self, e: Entry<A>, id: &[u8; 20]) {
        let len = self.len();
        self.seeders += u32::from(e.seeder());
        self.peers.push(e, id);
        match &mut self.index {
            Some(ix) if ix.fits(len + 1) => ix.insert(&e.addr, len),
            _ if len + 1 > INDEX_FROM => self.rebuild_index(),
            _ => {}
        }
    }

    fn remove(&mut self, i: usize) -> Entry<A> {
        if let Some(ix) = &mut self.index {
            let last = self.peers.len() - 1;
            let removed = ix.slot(&self.peers.entries()[i].addr, self.peers.entries());
            debug_assert!(removed.is_some(), "every entry is in the index");
            if let Some(slot) = removed {
                ix.remove(slot, self.peers.entries());
            }
            if i != last {
                let moved = ix.slot(&self.peers.entries()[last].addr, self.peers.entries());
                debug_assert!(moved.is_some(), "every entry is in the index");
                if let Some(slot) = moved {
                    ix.set_position(slot, i);
                }
            }
        }
        let e = self.peers.swap_remove(i);
        self.seeders -= u32::from(e.seeder());
        if let Some(ix) = &self.index {
            let len = self.len();
            if len < INDEX_FROM / 2 {
                self.index = None;
            } else if len * 8 < ix.0.len() && ix.0.len() > MIN_SLOTS {
                self.rebuild_index();
            }
        }
        e
    }

    fn rebuild_index(&mut self) {
        if self.len() <= INDEX_FROM {
            self.index = None;
            return;
        }
        let mut ix = Index::for_len(self.len());
        for (i, e) in self.peers.entries().iter().enumerate() {
            ix.insert(&e.addr, i);
        }
        self.index = Some(ix);
    }

    /// Drops peers last seen before `cutoff`; returns (seeders, leechers) removed.
    fn expire(&mut self, cutoff: u32) -> (u32, u32) {
        let before = (self.seeders, self.leechers());
        let len = self.len();
        self.peers.retain(|e| e.last_seen >= cutoff);
        let kept = self.len();
        if kept == len {
            return (0, 0);
        }
        self.seeders = self.peers.entries().iter().filter(|e| e.seeder()).count() as u32;
        if self.peers.capacity() > kept * 2 + 4 {
            self.peers.shrink_to(kept + kept / 4);
        }
        self.rebuild_index();
        (before.0 - self.seeders, before.1 - self.leechers())
    }

    /// Hands up to `want` peers to `out`, starting at a random position and wrapping around,
    /// skipping `me` and, when `only_leechers`, seeders; returns how many. Scans at most a
    /// bounded number of entries so a seeder's announce to a huge all-seeder swarm stays cheap.
    fn select(&self, me: Option<&A>, only_leechers: bool, want: usize, rand: u64, out: &mut impl PeerSink) -> usize {
        let n = self.len();
        if n == 0 || want == 0 || (only_leechers && self.leechers() == 0) {
            return 0;
        }
        let start = (rand % n as u64) as usize;
        let mut limit = n.min(want.max(1) * 64 + 4096);
        let mut got = 0;
        let with_ids = out.wants_ids();
        // The loop below reads about `want` entries from `start` on: ask for all their cache
        // lines at once, so the misses overlap instead of coming one line at a time.
        prefetch_from(self.peers.entries(), start, want);
        if with_ids {
            prefetch_from(self.peers.ids(), start, want);
        }
        const NO_ID: [u8; 20] = [0; 20];
        for range in [start..n, 0..start] {
            let (first, len) = (range.start, range.len());
            for (k, e) in self.peers.entries()[range].iter().take(limit).enumerate() {
                if (only_leechers && e.seeder()) || me == Some(&e.addr) {
                    continue;
                }
                let id = if with_ids { &self.peers.ids()[first + k] } else { &NO_ID };
                e.addr.give(id, out);
                got += 1;
                if got == want {
                    return got;
                }
            }
            limit -= len.min(limit);
        }
        got
    }

    fn bytes(&self) -> usize {
        self.peers.capacity() * (std::mem::size_of::<Entry<A>>() + 20)
            + self.index.as_ref().map_or(0, |ix| ix.0.len() * std::mem::size_of::<u32>())
    }
}

/// Prefetches the `want` items of `v` from `start` on, wrapping around to its beginning.
fn prefetch_from<T>(v: &[T], start: usize, want: usize) {
    let (tail, head) = v.split_at(start);
    prefetch(&head[..want.min(head.len())]);
    prefetch(&tail[..want.saturating_sub(head.len()).min(tail.len())]);
}

/// Hints the CPU to start loading the cache lines `items` spans (no effect on any result; a
/// no-op where Rust has no stable prefetch instruction).
#[inline]
fn prefetch<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let bytes = std::mem::size_of_val(items);
        if bytes == 0 {
            return;
        }
        let p = items.as_ptr().cast::<i8>();
        // Every 64-byte line from the first byte to the last.
        let mut off = 0;
        while off < bytes + 63 {
            // SAFETY: a prefetch never faults and reads nothing; the address stays within
            // `items` (the offset is capped at its last byte).
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off.min(bytes - 1)))
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

/// One swarm (torrent).
#[derive(Default)]
struct Swarm {
    v4: PeerList<[u8; 6]>,
    v6: Option<Box<PeerList<[u8; 18]>>>,
    /// Completed downloads seen (`event=completed`).
    downloaded: u32,
    /// Seconds since the store started, of the last announce.
    last_activity: u32,
}

impl Swarm {
    fn seeders(&self) -> u32 {
        self.v4.seeders + self.v6.as_ref().map_or(0, |l| l.seeders)
    }
    fn leechers(&self) -> u32 {
        self.v4.leechers() + self.v6.as_ref().map_or(0, |l| l.leechers())
    }
    fn peers(&self) -> usize {
        self.v4.len() + self.v6.as_ref().map_or(0, |l| l.len())
    }
    fn counts(&self) -> SwarmCounts {
        SwarmCounts { seeders: self.seeders(), leechers: self.leechers(), downloaded: self.downloaded }
    }
}

/// Seeders, leechers and completed downloads of one swarm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SwarmCounts {
    pub seeders: u32,
    pub leechers: u32,
    pub downloaded: u32,
}

/// Where [`Store::announce`] puts the peers it picks for a reply: each peer's address in
/// compact form (4 or 16 bytes of IP, then the port, big-endian) and its peer id.
pub trait PeerSink {
    /// Whether the sink uses the peer ids: reading them costs the store a cache line more per
    /// few peers, so sinks that ignore them say so (and get zeros).
    fn wants_ids(&self) -> bool;
    fn v4(&mut self, addr: &[u8; 6], peer_id: &[u8; 20]);
    fn v6(&mut self, addr: &[u8; 18], peer_id: &[u8; 20]);
}

/// Peers with their ids (the tests' sink; replies use [`ReplyPeers`]).
#[cfg(test)]
impl PeerSink for Vec<Peer> {
    fn wants_ids(&self) -> bool {
        true
    }
    fn v4(&mut self, addr: &[u8; 6], peer_id: &[u8; 20]) {
        self.push(Peer { addr: bitswarm_tracker_proto::http::peer_v4(addr), peer_id: Some(PeerId(*peer_id)) });
    }
    fn v6(&mut self, addr: &[u8; 18], peer_id: &[u8; 20]) {
        self.push(Peer { addr: bitswarm_tracker_proto::http::peer_v6(addr), peer_id: Some(PeerId(*peer_id)) });
    }
}

/// Peers for an HTTP reply, with their ids only when `with_ids` (a dictionary reply that
/// carries them).
pub struct ReplyPeers {
    pub peers: Vec<Peer>,
    pub with_ids: bool,
}

impl PeerSink for ReplyPeers {
    fn wants_ids(&self) -> bool {
        self.with_ids
    }
    fn v4(&mut self, addr: &[u8; 6], peer_id: &[u8; 20]) {
        let peer_id = self.with_ids.then_some(PeerId(*peer_id));
        self.peers.push(Peer { addr: bitswarm_tracker_proto::http::peer_v4(addr), peer_id });
    }
    fn v6(&mut self, addr: &[u8; 18], peer_id: &[u8; 20]) {
        let peer_id = self.with_ids.then_some(PeerId(*peer_id));
        self.peers.push(Peer { addr: bitswarm_tracker_proto::http::peer_v6(addr), peer_id });
    }
}

/// The compact addresses appended to a reply being written (a UDP announce reply's peer list:
/// used with [`Families::Same`], so every address has the announcer's family).
impl PeerSink for Vec<u8> {
    fn wants_ids(&self) -> bool {
        false
    }
    #[inline]
    fn v4(&mut self, addr: &[u8; 6], _: &[u8; 20]) {
        self.extend_from_slice(addr);
    }
    #[inline]
    fn v6(&mut self, addr: &[u8; 18], _: &[u8; 20]) {
        self.extend_from_slice(addr);
    }
}

/// Which families of peers a reply can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    /// Only the announcer's own family (a UDP reply has one peer format).
    Same,
    /// The announcer's family first, then the other (an HTTP reply has `peers` and `peers6`).
    Both,
}

/// An announce as the store sees it, protocol aside.
#[derive(Clone, Copy, Debug)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The peer's address: the IP the tracker saw (or was told by a trusted proxy), the port it
    /// announced.
    pub addr: SocketAddr,
    pub left: u64,
    pub event: Event,
    pub numwant: usize,
    pub families: Families,
}

/// What happened to an announce in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A new peer was not stored because a cap was reached (it still got peers).
    Full,
}

#[repr(align(128))]
struct Shard {
    inner: Mutex<ShardInner>,
}

#[derive(Default)]
struct ShardInner {
    swarms: HashMap<InfoHash, Swarm, Keyed>,
    seeders: u64,
    leechers: u64,
}

/// Totals over the whole store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub swarms: u64,
    pub seeders: u64,
    pub leechers: u64,
    pub peers: u64,
    pub downloaded: u64,
}

/// A swarm's line on the stats page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SwarmInfo {
    pub info_hash: String,
    #[serde(flatten)]
    pub counts: SwarmCounts,
    /// Seconds since its last announce.
    pub idle_secs: u32,
}

/// The sharded swarm table.
pub struct Store {
    shards: Box<[Shard]>,
    mask: usize,
    started: crate::clock::Clock,
    peers: AtomicU64,
    max_per_swarm: usize,
    max_total: u64,
    /// Seconds the tests moved the clock on ([`Store::advance`]).
    #[cfg(test)]
    skew: std::sync::atomic::AtomicU32,
}

pub(crate) fn rand_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(Keyed.hash_one(std::thread::current().id()) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

impl Store {
    pub fn new(shards: usize, max_per_swarm: u32, max_total: u64) -> Store {
        let shards = shards.max(1).next_power_of_two();
        Store {
            shards: (0..shards).map(|_| Shard { inner: Mutex::new(ShardInner::default()) }).collect(),
            mask: shards - 1,
            started: crate::clock::Clock::start(),
            peers: AtomicU64::new(0),
            // A list's positions have 20 bits (config validation says so first).
            max_per_swarm: (max_per_swarm as usize).min(MAX_LIST),
            max_total,
            #[cfg(test)]
            skew: Default::default(),
        }
    }

    /// Seconds since the store was made: the clock of `last_seen`.
    pub fn now(&self) -> u32 {
        #[cfg(test)]
        return self.started.secs() as u32 + self.skew.load(Ordering::Relaxed);
        #[cfg(not(test))]
        return self.started.secs() as u32;
    }

    /// Moves the store's clock `secs` on (the conformance tests' expiry).
    #[cfg(test)]
    pub fn advance(&self, secs: u32) {
        self.skew.fetch_add(secs, Ordering::Relaxed);
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    fn shard(&self, h: &InfoHash) -> MutexGuard<'_, ShardInner> {
        // Info-hashes are SHA-1 output: their first bytes are as good as any hash.
        let i = usize::from(u16::from_le_bytes([h.0[0], h.0[1]])) & self.mask;
        // A poisoned lock only means another thread panicked mid-update; the counts it guards
        // are plain integers, so carry on rather than take the tracker down.
        self.shards[i].inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an announce and appends the peers to hand back to `out`. Returns the swarm's
    /// counts after the announce.
    pub fn announce(&self, a: &Announce, out: &mut impl PeerSink) -> (SwarmCounts, Outcome) {
        let now = self.now();
        let seeder = a.left == 0;
        let mut shard = self.shard(&a.info_hash);
        let sh = &mut *shard;
        if a.event == Event::Stopped {
            let counts = match sh.swarms.get_mut(&a.info_hash) {
                Some(sw) => {
                    sw.last_activity = now;
                    if let Some(was_seeder) = remove_peer(sw, a.addr) {
                        self.peers.fetch_sub(1, Ordering::Relaxed);
                        if was_seeder { sh.seeders -= 1 } else { sh.leechers -= 1 }
                    }
                    sw.counts()
                }
                None => SwarmCounts::default(),
            };
            return (counts, Outcome::Ok);
        }
        let sw = sh.swarms.entry(a.info_hash).or_default();
        sw.last_activity = now;
        let mut outcome = Outcome::Ok;
        let ip = a.addr.ip().to_canonical();
        let completing = a.event == Event::Completed;
        let updated = match ip {
            IpAddr::V4(ip4) => {
                let key = compact4(ip4, a.addr.port());
                upsert(&mut sw.v4, key, a, seeder, now)
            }
            IpAddr::V6(ip6) => {
                let key = compact6(ip6, a.addr.port());
                upsert(sw.v6.get_or_insert_with(Default::default), key, a, seeder, now)
            }
        };
        match updated {
            Some((was_seeder, count_completion)) => {
                if was_seeder != seeder {
                    if seeder {
                        sh.seeders += 1;
                        sh.leechers -= 1;
                    } else {
                        sh.seeders -= 1;
                        sh.leechers += 1;
                    }
                }
                // Counted once per peer, however it became a seeder first (some clients send a
                // plain announce with left=0 before their `completed`).
                if count_completion {
                    sw.downloaded = sw.downloaded.saturating_add(1);
                }
            }
            None => {
                let total = self.peers.load(Ordering::Relaxed);
                if sw.peers() >= self.max_per_swarm || total >= self.max_total {
                    outcome = Outcome::Full;
                } else {
                    insert_peer(sw, a.addr.port(), ip, a.peer_id, seeder, completing, now);
                    self.peers.fetch_add(1, Ordering::Relaxed);
                    if seeder {
                        sh.seeders += 1
                    } else {
                        sh.leechers += 1
                    }
                    if completing {
                        sw.downloaded = sw.downloaded.saturating_add(1);
                    }
                }
            }
        }
        select(sw, a, ip, seeder, out);
        let counts = sw.counts();
        if sw.peers() == 0 && outcome == Outcome::Full && sw.downloaded == 0 {
            // Do not keep a swarm that only exists because a refused peer asked about it.
            sh.swarms.remove(&a.info_hash);
        }
        (counts, outcome)
    }

    /// The counts of one swarm (zeros for an unknown one).
    pub fn counts(&self, h: &InfoHash) -> SwarmCounts {
        self.shard(h).swarms.get(h).map(Swarm::counts).unwrap_or_default()
    }

    /// Every swarm's counts (a full scrape).
    pub fn all_counts(&self) -> Vec<(InfoHash, SwarmCounts)> {
        let mut v = Vec::new();
        for s in self.shards.iter() {
            let g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            v.extend(g.swarms.iter().map(|(h, sw)| (*h, sw.counts())));
        }
        v
    }

    /// Drops peers not seen for `timeout` seconds and swarms left empty and idle as long.
    /// Returns the number of peers and swarms removed.
    pub fn clean(&self, timeout: u32) -> (u64, u64) {
        self.clean_before(self.now().saturating_sub(timeout))
    }

    /// Drops peers last seen before `cutoff` (seconds on [`Store::now`]'s clock) and empty
    /// swarms idle since before it.
    pub fn clean_before(&self, cutoff: u32) -> (u64, u64) {
        let (mut peers, mut swarms) = (0u64, 0u64);
        for s in self.shards.iter() {
            let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            let sh = &mut *g;
            let (mut ds, mut dl) = (0u64, 0u64);
            let before = sh.swarms.len();
            sh.swarms.retain(|_, sw| {
                let (s4, l4) = sw.v4.expire(cutoff);
                let (s6, l6) = match &mut sw.v6 {
                    Some(l) => l.expire(cutoff),
                    None => (0, 0),
                };
                if sw.v6.as_ref().is_some_and(|l| l.len() == 0) {
                    sw.v6 = None;
                }
                ds += u64::from(s4 + s6);
                dl += u64::from(l4 + l6);
                sw.peers() > 0 || sw.last_activity >= cutoff
            });
            sh.seeders -= ds;
            sh.leechers -= dl;
            if sh.swarms.capacity() > sh.swarms.len() * 4 + 64 {
                sh.swarms.shrink_to_fit();
            }
            swarms += (before - sh.swarms.len()) as u64;
            peers += ds + dl;
            drop(g);
        }
        self.peers.fetch_sub(peers, Ordering::Relaxed);
        (peers, swarms)
    }

    /// Drops the swarms `keep` says no to, with their peers; returns (peers, swarms) dropped.
    pub fn retain_swarms(&self, keep: impl Fn(&InfoHash) -> bool) -> (u64, u64) {
        let (mut peers, mut swarms) = (0u64, 0u64);
        for s in self.shards.iter() {
            let mut g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            let sh = &mut *g;
            let (mut ds, mut dl) = (0u64, 0u64);
            sh.swarms.retain(|h, sw| {
                let kept = keep(h);
                if !kept {
                    ds += u64::from(sw.seeders());
                    dl += u64::from(sw.leechers());
                    swarms += 1;
                }
                kept
            });
            sh.seeders -= ds;
            sh.leechers -= dl;
            peers += ds + dl;
        }
        self.peers.fetch_sub(peers, Ordering::Relaxed);
        (peers, swarms)
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.shards.iter() {
            let g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            t.swarms += g.swarms.len() as u64;
            t.seeders += g.seeders;
            t.leechers += g.leechers;
            t.downloaded += g.swarms.values().map(|s| u64::from(s.downloaded)).sum::<u64>();
        }
        t.peers = t.seeders + t.leechers;
        t
    }

    /// The `limit` busiest swarms (most peers first).
    pub fn top_swarms(&self, limit: usize) -> Vec<SwarmInfo> {
        let now = self.now();
        let mut v: Vec<(InfoHash, SwarmCounts, u32)> = Vec::new();
        for s in self.shards.iter() {
            let g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            v.extend(g.swarms.iter().map(|(h, sw)| (*h, sw.counts(), sw.last_activity)));
        }
        let key = |c: &SwarmCounts| std::cmp::Reverse(u64::from(c.seeders) + u64::from(c.leechers));
        if v.len() > limit {
            v.select_nth_unstable_by_key(limit, |x| key(&x.1));
            v.truncate(limit);
        }
        v.sort_by_key(|x| (key(&x.1), x.0));
        v.into_iter()
            .map(|(h, counts, last)| SwarmInfo { info_hash: h.to_hex(), counts, idle_secs: now.saturating_sub(last) })
            .collect()
    }

    /// Bytes the peer and swarm tables hold (capacity, not just length): an estimate of the
    /// heap the store uses, for the stats page.
    pub fn heap_bytes(&self) -> usize {
        let mut b = 0;
        for s in self.shards.iter() {
            let g = s.inner.lock().unwrap_or_else(|p| p.into_inner());
            b += g.swarms.capacity() * (std::mem::size_of::<(InfoHash, Swarm)>() + 1);
            for sw in g.swarms.values() {
                b += sw.v4.bytes();
                if let Some(l) = &sw.v6 {
                    b += std::mem::size_of::<PeerList<[u8; 18]>>() + l.bytes();
                }
            }
        }
        b
    }
}

/// Updates an existing peer; returns whether it was a seeder and whether this announce's
/// `completed` is to be counted (the first from this peer). `None`: not there, to be inserted.
fn upsert<A: Compact>(list: &mut PeerList<A>, key: A, a: &Announce, seeder: bool, now: u32) -> Option<(bool, bool)> {
    let i = list.find(&key)?;
    let (entries, ids) = list.peers.both_mut();
    let e = &mut entries[i];
    let was = e.seeder();
    e.last_seen = now;
    let tag = id_tag(&a.peer_id.0);
    if e.flags >> TAG_SHIFT != tag || a.event == Event::Started {
        e.flags = e.flags & (SEEDER | COMPLETED) | tag << TAG_SHIFT;
        ids[i] = a.peer_id.0;
    }
    let completing = a.event == Event::Completed;
    let count = completing && e.flags & COMPLETED == 0;
    if completing {
        e.flags |= COMPLETED;
    }
    if was != seeder {
        e.flags ^= SEEDER;
        if seeder {
            list.seeders += 1;
        } else {
            list.seeders -= 1;
        }
    }
    Some((was, count))
}

fn insert_peer(sw: &mut Swarm, port: u16, ip: IpAddr, peer_id: PeerId, seeder: bool, completed: bool, now: u32) {
    match ip {
        IpAddr::V4(ip4) => {
            sw.v4.push(Entry::new(compact4(ip4, port), seeder, completed, now, &peer_id.0), &peer_id.0);
        }
        IpAddr::V6(ip6) => {
            let l = sw.v6.get_or_insert_with(Default::default);
            l.push(Entry::new(compact6(ip6, port), seeder, completed, now, &peer_id.0), &peer_id.0);
        }
    }
}

/// Removes a peer; returns whether it was a seeder.
fn remove_peer(sw: &mut Swarm, addr: SocketAddr) -> Option<bool> {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip4) => {
            let key = compact4(ip4, addr.port());
            let i = sw.v4.find(&key)?;
            Some(sw.v4.remove(i).seeder())
        }
        IpAddr::V6(ip6) => {
            let key = compact6(ip6, addr.port());
            let l = sw.v6.as_mut()?;
            let i = l.find(&key)?;
            let e = l.remove(i);
            if l.len() == 0 {
                sw.v6 = None;
            }
            Some(e.seeder())
        }
    }
}

fn select(sw: &Swarm, a: &Announce, ip: IpAddr, seeder: bool, out: &mut impl PeerSink) {
    let want = a.numwant;
    let r = rand_u64();
    let (me4, me6) = match ip {
        IpAddr::V4(ip4) => (Some(compact4(ip4, a.addr.port())), None),
        IpAddr::V6(ip6) => (None, Some(compact6(ip6, a.addr.port()))),
    };
    let v6 = |out: &mut _, want: usize| sw.v6.as_ref().map_or(0, |l| l.select(me6.as_ref(), seeder, want, r, out));
    match (ip.is_ipv4(), a.families) {
        (true, Families::Same) => {
            sw.v4.select(me4.as_ref(), seeder, want, r, out);
        }
        (false, Families::Same) => {
            v6(out, want);
        }
        (true, Families::Both) => {
            let got = sw.v4.select(me4.as_ref(), seeder, want, r, out);
            v6(out, want - got);
        }
        (false, Families::Both) => {
            let got = v6(out, want);
            sw.v4.select(me4.as_ref(), seeder, want - got, r, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids the conformance tests change between have different tags, so every change
    /// is written (a change that keeps the tag is not, by design).
    #[test]
    fn the_conformance_ids_have_different_tags() {
        let tags: std::collections::HashSet<u16> = (1..=4u8).map(|i| id_tag(&[i; 20])).collect();
        assert_eq!(tags.len(), 4);
    }

    #[test]
    fn every_byte_of_a_peer_id_moves_its_tag() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut same = [0u32; 20];
        for _ in 0..64 {
            let mut id = [0u8; 20];
            for b in id.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            for (b, same) in same.iter_mut().enumerate() {
                let mut other = id;
                other[b] ^= 0x5a;
                *same += u32::from(id_tag(&id) == id_tag(&other));
            }
        }
        // 14 bits: about 1 in 16,384 changes keeps the tag; a byte left out of it keeps all 64.
        assert!(same.iter().all(|&n| n <= 1), "ids whose tag a change of byte b kept: {same:?}");
    }

    mod index {
        use std::collections::BTreeSet;

        use proptest::prelude::*;

        use super::*;

        fn entry(addr: [u8; 6]) -> Entry<[u8; 6]> {
            Entry::new(addr, addr[5] & 1 == 0, false, 0, &[0; 20])
        }

        proptest! {
            /// Through growth past INDEX_FROM, removals (swap-removes, backward shifts),
            /// shrinking and dropping the index, every peer in the list is found at its own
            /// position and no other address is found. The first half of the operations adds
            /// mostly, the second half removes mostly, so the list grows and empties again.
            #[test]
            fn finds_exactly_the_peers_present(ops in proptest::collection::vec((0u8..10, 0u16..400), 1..4000)) {
                let mut list: PeerList<[u8; 6]> = PeerList::default();
                let mut model: BTreeSet<u16> = BTreeSet::new();
                let addr = |k: u16| compact4(Ipv4Addr::new(10, 0, (k >> 8) as u8, k as u8), 6881);
                let half = ops.len() / 2;
                for (n, (r, k)) in ops.into_iter().enumerate() {
                    let add = if n < half { r < 8 } else { r < 2 };
                    let a = addr(k);
                    match (add, list.find(&a)) {
                        (true, None) => list.push(entry(a), &[k as u8; 20]),
                        (false, Some(i)) => {
                            prop_assert_eq!(list.remove(i).addr, a);
                        }
                        _ => {}
                    }
                    if add { model.insert(k); } else { model.remove(&k); }
                    prop_assert_eq!(list.len(), model.len());
                    if list.len() > INDEX_FROM {
                        prop_assert!(list.index.is_some());
                    } else if list.len() < INDEX_FROM / 2 {
                        prop_assert!(list.index.is_none());
                    }
                    for k in [k, k ^ 1, k.wrapping_add(7) % 400] {
                        let found = list.find(&addr(k));
                        prop_assert_eq!(found.is_some(), model.contains(&k));
                        if let Some(i) = found {
                            prop_assert_eq!(list.peers.entries()[i].addr, addr(k));
                            prop_assert_eq!(list.peers.ids()[i], [k as u8; 20], "the id moved with its entry");
                        }
                    }
                    prop_assert_eq!(list.seeders as usize, list.peers.entries().iter().filter(|e| e.seeder()).count());
                    prop_assert_eq!(list.peers.ids().len(), list.len());
                }
                for (i, e) in list.peers.entries().iter().enumerate() {
                    prop_assert_eq!(list.find(&e.addr), Some(i));
                }
            }
        }

        /// The index is made past INDEX_FROM peers, grows, shrinks as the list empties, and goes
        /// below INDEX_FROM / 2; every peer is found throughout.
        #[test]
        fn the_index_grows_shrinks_and_goes() {
            let mut list: PeerList<[u8; 6]> = PeerList::default();
            let addr = |k: u16| compact4(Ipv4Addr::new(10, 1, (k >> 8) as u8, k as u8), 1);
            let check = |list: &PeerList<[u8; 6]>| {
                for (i, e) in list.peers.entries().iter().enumerate() {
                    assert_eq!(list.find(&e.addr), Some(i));
                }
            };
            for k in 0..1000 {
                list.push(entry(addr(k)), &[0; 20]);
            }
            check(&list);
            let grown = list.index.as_ref().map(|ix| ix.0.len()).unwrap();
            assert!(grown >= 2000, "{grown} slots for 1000 peers");
            let mut shrunk = false;
            for k in (0..1000).rev() {
                let i = list.find(&addr(k)).unwrap();
                list.remove(i);
                shrunk |= list.index.as_ref().is_some_and(|ix| ix.0.len() < grown);
                if k % 50 == 0 {
                    check(&list);
                }
            }
            assert!(shrunk, "the index shrank as peers left");
            assert!(list.index.is_none() && list.peers.entries().is_empty());
        }
    }
}
