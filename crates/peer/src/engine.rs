//! The torrent's shared state and the tasks around the connections: listening, dialing,
//! rechoking, verifying and writing pieces, and shutting down cleanly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bitswarm_metainfo::Metainfo;
use bitswarm_storage::PieceState;
use bitswarm_wire::mse::{CRYPTO_PLAINTEXT, CRYPTO_RC4};
use bitswarm_wire::{BLOCK_SIZE, Bitfield, BlockRef};
use sha1::{Digest, Sha1};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::choker::{self, Candidate};
use crate::conn::{self, Ctl, PeerStats};
use crate::disk::Disk;
use crate::picker::{PeerKey, Picker};
use crate::rate::{Limiter, RateMeter};
use crate::tracker::{self, Tiers};
use bitswarm_tracker_proto::Event;

/// Peer addresses remembered for dialing.
const MAX_KNOWN: usize = 2000;

/// How long an address whose connection we refused after the handshake is left alone.
const REFUSED_BACKOFF: Duration = Duration::from_secs(60);

/// Received data waiting for verification above which no new pieces are started.
const MAX_PENDING_BYTES: u64 = 24 << 20;

/// Incoming connections in their handshake at once (each lasts 10 s at most): more are closed
/// as they come, so a flood of connections that never finish their handshake costs nothing.
const MAX_HANDSHAKES: usize = 32;

/// A peer that has sent nothing and taken nothing for this long (and been connected as long),
/// and is not waiting for its turn to be unchoked, is useless: when every slot is taken it
/// makes room for a newcomer (libtorrent's peer turnover does the same).
const USELESS_AFTER: Duration = Duration::from_secs(30);

/// Rechoke rounds (10 s each) between two connections closed to make room for dialing.
const TURNOVER_EVERY: u32 = 6;

/// How long an address whose connection we closed as useless is left alone.
const USELESS_BACKOFF: Duration = Duration::from_secs(300);

/// Whether we start with the data or fetch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The data must all be present and correct; it is served.
    Seed,
    /// What is missing is downloaded; what is present and verified is kept.
    Join,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub peer_id: [u8; 20],
    /// Peers to dial (besides those the trackers name).
    pub peers: Vec<SocketAddr>,
    /// Tracker tiers to announce to (BEP 12); empty for none.
    pub trackers: Vec<Vec<String>>,
    /// Peers asked of a tracker per announce.
    pub numwant: u32,
    /// Connections per torrent.
    pub max_peers: usize,
    /// Connections to and from one IP address; 0 for no limit. One by default, as libtorrent
    /// does: a client runs one connection per torrent, and one address cannot take every slot.
    pub max_peers_per_ip: usize,
    /// Regular unchoke slots (one optimistic slot comes on top).
    pub upload_slots: usize,
    /// Upload cap in bytes per second.
    pub max_upload_rate: Option<u64>,
    /// Threads for the startup check of existing data.
    pub check_threads: usize,
    /// A peer that alone sent this many pieces that failed their hash is banned. (A peer whose
    /// blocks are proven bad once the piece passes is banned at once.)
    pub ban_strikes: u32,
    /// How connections we dial start.
    pub outgoing_encryption: Outgoing,
    /// What incoming connections may use.
    pub incoming_encryption: Incoming,
}

/// Message Stream Encryption on the connections we dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outgoing {
    /// The plaintext BitTorrent handshake.
    #[default]
    Plaintext,
    /// An MSE handshake that offers RC4 and plaintext for the stream (the peer chooses); a peer
    /// that fails it is dialed again with the plaintext handshake, and the next time with MSE
    /// again.
    Prefer,
    /// An MSE handshake that offers RC4 only; no fallback.
    Require,
}

impl Outgoing {
    /// The handshakes to dial with, in order: the MSE crypto offered (`None`: the plaintext
    /// handshake), then, for `Prefer`, the plaintext handshake for a peer that failed it.
    pub(crate) fn offers(self) -> &'static [Option<u32>] {
        match self {
            Outgoing::Plaintext => &[None],
            Outgoing::Prefer => &[Some(CRYPTO_RC4 | CRYPTO_PLAINTEXT), None],
            Outgoing::Require => &[Some(CRYPTO_RC4)],
        }
    }
}

/// Message Stream Encryption on the connections peers make to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Incoming {
    /// Plaintext handshakes and MSE; with MSE the stream stays plaintext when the peer offers it
    /// (no RC4 cost on bulk data), RC4 when that is all it offers.
    #[default]
    Any,
    /// MSE with RC4 for the whole stream; plaintext handshakes and plaintext-only offers are
    /// refused.
    Require,
}

impl Config {
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            peer_id: crate::new_peer_id(),
            peers: Vec::new(),
            trackers: Vec::new(),
            numwant: 50,
            max_peers: 60,
            max_peers_per_ip: 1,
            upload_slots: 4,
            max_upload_rate: None,
            check_threads: bitswarm_storage::cores(),
            ban_strikes: 2,
            outgoing_encryption: Outgoing::Plaintext,
            incoming_encryption: Incoming::Any,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("{0}")]
    Incomplete(String),
    #[error("{0}")]
    Disk(String),
    #[error("stopped during the check of the data on disk")]
    Stopped,
}

/// The check of the data already on disk when a torrent starts: how far it has come (bytes),
/// and a switch that stops it.
#[derive(Debug, Default)]
pub struct Check {
    pub done: AtomicU64,
    pub stop: AtomicBool,
}

/// A snapshot for progress displays.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub total: u64,
    /// Verified bytes on disk.
    pub have: u64,
    pub pieces_have: usize,
    pub pieces: usize,
    /// Payload bytes received and sent.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received that were not used (duplicates, failed pieces).
    pub wasted: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub peers: usize,
    pub complete: bool,
    /// How long after the start the last piece was verified (for a download that completed).
    pub completed_after: Option<Duration>,
    pub banned: usize,
    pub hash_failures: u64,
}

pub(crate) struct PeerEntry {
    pub addr: SocketAddr,
    pub peer_id: [u8; 20],
    pub ctl: mpsc::UnboundedSender<Ctl>,
    pub stats: Arc<PeerStats>,
    pub unchoked: bool,
    pub last_rate_total: u64,
    /// Where the peer listens, when it said so (BEP 10 `p`): not to be dialed while connected.
    pub listen: Option<SocketAddr>,
    /// We dialed it (so `addr` is where it listens).
    pub outgoing: bool,
    pub connected_at: Instant,
}

impl PeerEntry {
    /// Whether the connection has been useless for [`USELESS_AFTER`]: no payload either way,
    /// and the peer is not an interested one waiting for us to unchoke it.
    fn useless(&self, now: Instant) -> bool {
        let s = &self.stats;
        let waiting = s.peer_interested.load(Ordering::Relaxed) && !self.unchoked;
        !waiting
            && now.duration_since(self.connected_at) >= USELESS_AFTER
            && s.last_payload.get().is_none_or(|t| now.duration_since(t) >= USELESS_AFTER)
    }
}

#[derive(Default)]
struct Known {
    failures: u32,
    next_try: Option<Instant>,
    /// The address is our own listener (seen through a tracker or an alias).
    ourselves: bool,
    /// With [`Outgoing::Prefer`]: the last MSE handshake failed, dial with the plaintext one.
    plaintext_next: bool,
    /// Connections to it that ended early in a row (see [`redial_after`]).
    early_closes: u32,
    /// When our last connection to it ended with it having every piece: not dialed while we
    /// seed, for [`SEED_MEMORY`] (the address may later be a leecher's).
    seed_at: Option<Instant>,
}

pub(crate) struct State {
    pub picker: Picker,
    pub peers: HashMap<PeerKey, PeerEntry>,
    next_key: PeerKey,
    connecting: HashSet<SocketAddr>,
    /// Incoming connections in their handshake, by address.
    handshaking: HashMap<IpAddr, usize>,
    known: HashMap<SocketAddr, Known>,
    banned: HashSet<IpAddr>,
    strikes: HashMap<IpAddr, u32>,
    /// For pieces that failed with blocks from several peers: each block's sender and a hash of
    /// what it sent. When the piece passes later, senders of blocks that differ are banned.
    suspects: HashMap<u32, Vec<(IpAddr, usize, [u8; 20])>>,
    /// The address of every connection key, kept after it disconnects (its blocks may still
    /// be in partial pieces).
    sender_ips: HashMap<PeerKey, IpAddr>,
    optimistic: Option<PeerKey>,
}

pub(crate) struct Shared {
    pub meta: Arc<Metainfo>,
    pub config: Config,
    pub disk: Arc<Disk>,
    state: Mutex<State>,
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub wasted: AtomicU64,
    pub hash_failures: AtomicU64,
    pub limiter: Option<Limiter>,
    verify_tx: std::sync::mpsc::Sender<VerifyJob>,
    /// Pieces handed to verification that have not finished (for a clean stop).
    pub pending_disk: AtomicUsize,
    pub disk_idle: tokio::sync::Notify,
    /// Woken when the last connection is gone (for a clean stop).
    peers_idle: tokio::sync::Notify,
    pub cache: Mutex<VecDeque<(u32, Arc<Vec<u8>>)>>,
    pub cache_pieces: usize,
    pub shutdown: watch::Sender<bool>,
    complete: watch::Sender<bool>,
    fatal: Mutex<Option<String>>,
    fatal_tx: watch::Sender<bool>,
    pub listen_addr: SocketAddr,
    /// The tracker that answered last (it gets the `stopped` announce).
    tracker: Mutex<Option<String>>,
    /// Whether we started with every piece (then `completed` is never announced).
    started_complete: bool,
    /// When the engine started, and when the last piece was verified.
    started_at: Instant,
    completed_at: Mutex<Option<Instant>>,
    /// `completed` reached a tracker.
    completed_sent: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fail(&self, message: String) {
        warn!("{message}");
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
        self.fatal_tx.send_replace(true);
    }

    /// Registers a connection after its handshake. `None` if we already talk to that peer
    /// (same peer id) or it is banned.
    pub fn register(
        &self,
        addr: SocketAddr,
        peer_id: [u8; 20],
        outgoing: bool,
        ctl: mpsc::UnboundedSender<Ctl>,
        stats: Arc<PeerStats>,
    ) -> Option<PeerKey> {
        let mut st = self.state();
        if *self.shutdown.borrow() || st.banned.contains(&addr.ip()) {
            return None;
        }
        if let Some((&old, p)) = st.peers.iter().find(|(_, p)| p.peer_id == peer_id) {
            if p.addr.ip() != addr.ip() {
                // Another address claims a connected peer's id: peer ids are public (trackers
                // hand them out), so the established connection stays and the newcomer goes.
                return None;
            }
            // Two connections to one peer (both dialed at once): keep the one the peer with
            // the lower id started, as libtorrent does, so both sides keep the same one.
            let ours_first = self.config.peer_id < peer_id;
            if outgoing != ours_first {
                return None;
            }
            if let Some(p) = st.peers.remove(&old) {
                let _ = p.ctl.send(Ctl::Close);
            }
        }
        if !self.room_for(&mut st, addr.ip(), Instant::now()) {
            return None;
        }
        st.next_key += 1;
        let key = st.next_key;
        if st.sender_ips.len() >= 4096 {
            // Forget connections that are gone (their blocks count as from an unknown sender).
            let live: HashSet<PeerKey> = st.peers.keys().copied().collect();
            st.sender_ips.retain(|k, _| live.contains(k));
        }
        st.sender_ips.insert(key, addr.ip());
        st.peers.insert(
            key,
            PeerEntry {
                addr,
                peer_id,
                ctl,
                stats,
                unchoked: false,
                last_rate_total: 0,
                listen: None,
                outgoing,
                connected_at: Instant::now(),
            },
        );
        Some(key)
    }

    /// Connections to `ip` that the per-address limit still allows.
    fn ip_allows(&self, st: &State, ip: IpAddr) -> bool {
        let limit = self.config.max_peers_per_ip;
        limit == 0 || st.peers.values().filter(|p| p.addr.ip() == ip).count() < limit
    }

    /// Whether a connection from or to `ip` may join: the address is under its limit, and a
    /// slot is free, or made free by closing the connection that has been useless longest.
    fn room_for(&self, st: &mut State, ip: IpAddr, now: Instant) -> bool {
        if !self.ip_allows(st, ip) {
            return false;
        }
        if st.peers.len() < self.config.max_peers {
            return true;
        }
        let Some(victim) = useless_peer(st, now) else { return false };
        self.close_useless(st, victim);
        true
    }

    /// Closes a useless connection to make room, and leaves its address alone for a while.
    fn close_useless(&self, st: &mut State, key: PeerKey) {
        let Some(p) = st.peers.remove(&key) else { return };
        debug!("{}: closed after {USELESS_AFTER:?} without use, to make room", p.addr);
        let _ = p.ctl.send(Ctl::Close);
        for a in [Some(p.addr).filter(|_| p.outgoing), p.listen].into_iter().flatten() {
            if let Some(k) = st.known.get_mut(&a) {
                k.next_try = Some(Instant::now() + USELESS_BACKOFF);
            }
        }
    }

    /// An incoming connection may start its handshake: not from a banned address, one at its
    /// limit, or while every slot is taken by connections that are of use; and no more
    /// handshakes at once than [`MAX_HANDSHAKES`] (from one address, than it may connect). The
    /// guard counts it until dropped.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeGuard> {
        let mut st = self.state();
        let limit = match self.config.max_peers_per_ip {
            0 => MAX_HANDSHAKES,
            n => n.min(MAX_HANDSHAKES),
        };
        let now = Instant::now();
        let pending = st.handshaking.get(&ip).copied().unwrap_or(0);
        let in_handshakes: usize = st.handshaking.values().sum();
        let full = st.peers.len() >= self.config.max_peers && useless_peer(&st, now).is_none();
        if st.banned.contains(&ip)
            || !self.ip_allows(&st, ip)
            || full
            || pending >= limit
            || in_handshakes >= MAX_HANDSHAKES
        {
            return None;
        }
        *st.handshaking.entry(ip).or_default() += 1;
        Some(HandshakeGuard { shared: self.clone(), ip })
    }

    /// The peer told us its listening port (BEP 10): it counts as connected there.
    pub fn set_listen_port(&self, key: PeerKey, port: u16) {
        if let Some(p) = self.state().peers.get_mut(&key) {
            p.listen = Some(SocketAddr::new(p.addr.ip(), port));
        }
    }

    /// Where the connected peers other than `except` listen, as far as we know (for peer
    /// exchange): the address we dialed, or the port an incoming peer told us; with the BEP 11
    /// flags we know (seed).
    pub fn pex_peers(&self, except: PeerKey) -> Vec<(SocketAddr, u8)> {
        let st = self.state();
        st.peers
            .iter()
            .filter(|(k, _)| **k != except)
            .filter_map(|(_, p)| {
                let a = if p.outgoing { p.addr } else { p.listen? };
                let seed = p.stats.seed.load(Ordering::Relaxed);
                Some((
                    SocketAddr::new(a.ip().to_canonical(), a.port()),
                    if seed { bitswarm_wire::pex::flags::SEED } else { 0 },
                ))
            })
            .collect()
    }

    /// A connection ended: forget it, and what it had.
    pub fn unregister(&self, key: PeerKey, theirs: &Bitfield, outstanding: &[BlockRef]) {
        let mut st = self.state();
        st.peers.remove(&key);
        if st.peers.is_empty() {
            self.peers_idle.notify_waiters();
        }
        st.picker.peer_bitfield(theirs, false);
        for r in outstanding {
            st.picker.release(r);
        }
        if st.optimistic == Some(key) {
            st.optimistic = None;
        }
    }

    /// Unchoke a newly interested peer at once when a regular slot is free.
    pub fn try_unchoke(&self, key: PeerKey) -> bool {
        let mut st = self.state();
        let unchoked = st.peers.values().filter(|p| p.unchoked).count();
        if unchoked > self.config.upload_slots {
            return false;
        }
        match st.peers.get_mut(&key) {
            Some(p) => {
                p.unchoked = true;
                true
            }
            None => false,
        }
    }

    pub fn mark_choked(&self, key: PeerKey) {
        if let Some(p) = self.state().peers.get_mut(&key) {
            p.unchoked = false;
        }
    }

    /// A whole piece arrived: queue it for the hashing threads, which write it if it is good
    /// and tell everyone. `senders` names the peer that sent each block.
    pub fn verify_piece(&self, index: u32, data: Vec<u8>, senders: Vec<PeerKey>) {
        self.pending_disk.fetch_add(1, Ordering::AcqRel);
        let job = VerifyJob { index, data, senders };
        if let Err(e) = self.verify_tx.send(job) {
            // The hashing threads are gone: only when the engine is being torn down.
            self.state().picker.piece_failed(e.0.index);
            self.verified_one();
        }
    }

    fn verified_one(&self) {
        if self.pending_disk.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.disk_idle.notify_waiters();
        }
    }

    /// The download completed: files are cut to the torrent's lengths, then everyone is told.
    fn completed(&self) {
        if let Err(e) = self.disk.trim_files() {
            self.fail(format!("cannot finish the files: {e}"));
            return;
        }
        info!("download complete: all {} pieces verified", self.meta.info.piece_count());
        *self.completed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.complete.send_replace(true);
    }

    fn piece_done(&self, index: u32, data: &[u8]) {
        let records = self.state().suspects.remove(&index);
        // The good data is known now: whoever sent a different block lied.
        let liars: Vec<IpAddr> =
            records.iter().flatten().filter(|(_, b, h)| block_hash(data, *b) != *h).map(|(ip, _, _)| *ip).collect();
        let mut st = self.state();
        for ip in liars {
            self.ban(&mut st, ip);
        }
        if !st.picker.piece_verified(index) {
            return;
        }
        for p in st.peers.values() {
            let _ = p.ctl.send(Ctl::Have(index));
        }
        if st.picker.is_complete() {
            drop(st);
            self.completed();
        }
    }

    fn piece_failed(&self, index: u32, data: &[u8], senders: &[PeerKey]) {
        self.hash_failures.fetch_add(1, Ordering::Relaxed);
        self.wasted.fetch_add(data.len() as u64, Ordering::Relaxed);
        let ips: Vec<Option<IpAddr>> = {
            let mut st = self.state();
            st.picker.piece_failed(index);
            senders.iter().map(|k| st.sender_ips.get(k).copied()).collect()
        };
        let mut distinct: Vec<IpAddr> = ips.iter().flatten().copied().collect();
        distinct.sort();
        distinct.dedup();
        warn!("piece {index} failed its hash check (sent by {distinct:?})");
        if let ([ip], true) = (&distinct[..], ips.iter().all(Option::is_some)) {
            // Every block came from one address: it certainly sent bad data.
            let mut st = self.state();
            let s = st.strikes.entry(*ip).or_default();
            *s += 1;
            if *s >= self.config.ban_strikes {
                self.ban(&mut st, *ip);
            }
        } else {
            // Hash the blocks outside the lock; judged when a good copy arrives.
            let records: Vec<(IpAddr, usize, [u8; 20])> =
                ips.iter().enumerate().filter_map(|(b, ip)| ip.map(|ip| (ip, b, block_hash(data, b)))).collect();
            self.state().suspects.insert(index, records);
        }
    }

    fn ban(&self, st: &mut State, ip: IpAddr) {
        if st.banned.insert(ip) {
            warn!("banning {ip}: it sent data that failed hash checks");
        }
        for p in st.peers.values().filter(|p| p.addr.ip() == ip) {
            let _ = p.ctl.send(Ctl::Close);
        }
    }

    /// Whether connections may start new pieces: not while more received data than this
    /// waits to be hashed and written (it would pile up in memory).
    pub fn may_start_pieces(&self) -> bool {
        let pending = self.pending_disk.load(Ordering::Acquire) as u64;
        pending * self.meta.info.piece_length < MAX_PENDING_BYTES || pending < 2
    }

    /// Reads a block for upload, from the cache of recently read pieces or from disk.
    pub async fn read_block(&self, r: BlockRef) -> std::io::Result<Arc<Vec<u8>>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, d)) = cache.iter().find(|(i, _)| *i == r.index) {
                return Ok(d.clone());
            }
        }
        let disk = self.disk.clone();
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            disk.read_piece(r.index, &mut buf).map(|_| buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        let data = Arc::new(data);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.iter().any(|(i, _)| *i == r.index) {
            if cache.len() >= self.cache_pieces {
                cache.pop_front();
            }
            cache.push_back((r.index, data.clone()));
        }
        Ok(data)
    }

    /// Adds addresses to dial.
    pub fn add_peers(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut st = self.state();
        for a in addrs {
            if a == self.listen_addr || st.known.contains_key(&a) {
                continue;
            }
            if st.known.len() >= MAX_KNOWN {
                // Make room by forgetting an address that failed; otherwise keep what we have.
                let Some(dead) = st.known.iter().find(|(_, k)| k.failures > 0).map(|(a, _)| *a) else { break };
                st.known.remove(&dead);
            }
            st.known.insert(a, Known::default());
        }
    }

    /// The peer's address turned out to be ourselves (same peer id).
    pub fn mark_self(&self, addr: SocketAddr) {
        self.state().known.entry(addr).or_default().ourselves = true;
    }
}

/// The connection that has been useless longest, if any is (see [`PeerEntry::useless`]).
fn useless_peer(st: &State, now: Instant) -> Option<PeerKey> {
    st.peers
        .iter()
        .filter(|(_, p)| p.useless(now))
        .min_by_key(|(_, p)| p.stats.last_payload.get().unwrap_or(p.connected_at))
        .map(|(k, _)| *k)
}

/// Counts an incoming connection in its handshake (see [`Shared::admit`]) until dropped.
pub(crate) struct HandshakeGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        if let Some(n) = st.handshaking.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.handshaking.remove(&self.ip);
            }
        }
    }
}

struct VerifyJob {
    index: u32,
    data: Vec<u8>,
    senders: Vec<PeerKey>,
}

/// A hashing thread: takes every piece waiting (up to the SIMD lanes of the multi-buffer
/// SHA-1), hashes them together, writes the good ones, and reports. Ends with the engine.
fn hash_worker(shared: std::sync::Weak<Shared>, rx: Arc<Mutex<std::sync::mpsc::Receiver<VerifyJob>>>) {
    let lanes = bitswarm_piecehash::best_lanes().max(1);
    loop {
        let jobs = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            let mut jobs = vec![first];
            while jobs.len() < lanes
                && let Ok(j) = rx.try_recv()
            {
                jobs.push(j);
            }
            jobs
        };
        let Some(me) = shared.upgrade() else { return };
        let datas: Vec<&[u8]> = jobs.iter().map(|j| &j.data[..]).collect();
        let digests = bitswarm_piecehash::sha1_many(&datas);
        for (job, digest) in jobs.into_iter().zip(digests) {
            let VerifyJob { index, data, senders } = job;
            if digest != me.meta.info.pieces[index as usize] {
                me.piece_failed(index, &data, &senders);
            } else if let Err(e) = me.disk.write_piece(index, &data) {
                me.state().picker.piece_failed(index);
                me.fail(format!("cannot write piece {index}: {e}"));
            } else {
                me.piece_done(index, &data);
            }
            me.state().picker.recycle(data);
            me.verified_one();
        }
    }
}

/// SHA-1 of block `b` (16 KiB) of a piece's data.
fn block_hash(data: &[u8], b: usize) -> [u8; 20] {
    let start = (b * BLOCK_SIZE as usize).min(data.len());
    let end = (start + BLOCK_SIZE as usize).min(data.len());
    Sha1::digest(&data[start..end]).into()
}

/// A running torrent.
pub struct Engine {
    shared: Arc<Shared>,
    meters: Mutex<(RateMeter, RateMeter)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The announce loop: at a stop it may finish the announce it is making (see `shutdown`).
    announce_task: Option<tokio::task::JoinHandle<()>>,
    complete_rx: watch::Receiver<bool>,
    fatal_rx: watch::Receiver<bool>,
}

impl Engine {
    /// Checks existing data (counting progress in `checked`), then starts listening and
    /// trading. `Role::Seed` requires every piece to be present and correct.
    pub async fn start(
        meta: Arc<Metainfo>,
        dir: PathBuf,
        role: Role,
        config: Config,
        check: Arc<Check>,
    ) -> Result<Engine, EngineError> {
        let started_at = Instant::now();
        let disk = Arc::new(Disk::new(&meta.info, &dir, role == Role::Join));
        let have = {
            let disk = disk.clone();
            let meta = meta.clone();
            let threads = config.check_threads;
            let check = check.clone();
            tokio::task::spawn_blocking(move || {
                let states = bitswarm_storage::verify_pieces(
                    disk.layout(),
                    &meta.info.pieces,
                    threads,
                    &check.done,
                    &check.stop,
                );
                let mut have = Bitfield::new(states.len());
                for (i, s) in states.iter().enumerate() {
                    if *s == PieceState::Good {
                        have.set(i);
                    }
                }
                have
            })
            .await
            .map_err(|e| EngineError::Disk(e.to_string()))?
        };
        if check.stop.load(Ordering::Acquire) {
            return Err(EngineError::Stopped);
        }
        if role == Role::Seed && !have.is_full() {
            return Err(EngineError::Incomplete(format!(
                "{}: {} of {} pieces are missing or damaged; `bitswarm join` downloads the rest",
                dir.display(),
                have.len() - have.count(),
                have.len()
            )));
        }
        if role == Role::Join {
            let d = disk.clone();
            let complete = have.is_full();
            tokio::task::spawn_blocking(move || {
                d.create_all().map_err(|e| format!("cannot create the files: {e}"))?;
                if complete {
                    d.trim_files().map_err(|e| format!("cannot finish the files: {e}"))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| EngineError::Disk(e.to_string()))?
            .map_err(EngineError::Disk)?;
        }

        let listener = bind(config.listen).map_err(|e| EngineError::Listen(config.listen, e))?;
        let listen_addr = listener.local_addr().map_err(|e| EngineError::Listen(config.listen, e))?;
        let complete_now = have.is_full();
        let picker = Picker::new(meta.info.piece_length, meta.info.total_length, have, crate::random_u64());
        let (shutdown, _) = watch::channel(false);
        let (complete, complete_rx) = watch::channel(complete_now);
        let (fatal_tx, fatal_rx) = watch::channel(false);
        let cache_pieces = ((32u64 << 20) / meta.info.piece_length).clamp(2, 64) as usize;
        let (verify_tx, verify_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            config: config.clone(),
            disk,
            state: Mutex::new(State {
                picker,
                peers: HashMap::new(),
                next_key: 0,
                connecting: HashSet::new(),
                handshaking: HashMap::new(),
                known: HashMap::new(),
                banned: HashSet::new(),
                strikes: HashMap::new(),
                suspects: HashMap::new(),
                sender_ips: HashMap::new(),
                optimistic: None,
            }),
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            wasted: AtomicU64::new(0),
            hash_failures: AtomicU64::new(0),
            limiter: config.max_upload_rate.map(Limiter::new),
            verify_tx,
            pending_disk: AtomicUsize::new(0),
            disk_idle: tokio::sync::Notify::new(),
            peers_idle: tokio::sync::Notify::new(),
            cache: Mutex::new(VecDeque::new()),
            cache_pieces,
            shutdown,
            complete,
            fatal: Mutex::new(None),
            fatal_tx,
            listen_addr,
            tracker: Mutex::new(None),
            started_complete: complete_now,
            completed_sent: std::sync::atomic::AtomicBool::new(false),
            started_at,
            completed_at: Mutex::new(None),
            meta,
        });
        shared.add_peers(config.peers.iter().copied());
        let verify_rx = Arc::new(Mutex::new(verify_rx));
        for i in 0..bitswarm_storage::cores() {
            let (weak, rx) = (Arc::downgrade(&shared), verify_rx.clone());
            std::thread::Builder::new()
                .name(format!("bitswarm-hash-{i}"))
                .spawn(move || hash_worker(weak, rx))
                .map_err(|e| EngineError::Disk(format!("cannot start a hashing thread: {e}")))?;
        }
        let tasks = vec![
            tokio::spawn(accept_loop(shared.clone(), listener)),
            tokio::spawn(dial_loop(shared.clone())),
            tokio::spawn(choke_loop(shared.clone())),
        ];
        let announce_task = (!config.trackers.is_empty())
            .then(|| tokio::spawn(announce_loop(shared.clone(), Tiers::new(config.trackers.clone()))));
        Ok(Engine {
            shared,
            meters: Mutex::new((RateMeter::default(), RateMeter::default())),
            tasks,
            announce_task,
            complete_rx,
            fatal_rx,
        })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen_addr
    }
    pub fn peer_id(&self) -> [u8; 20] {
        self.shared.config.peer_id
    }
    pub fn info_hash(&self) -> [u8; 20] {
        self.shared.meta.info_hash.0
    }
    pub fn metainfo(&self) -> &Arc<Metainfo> {
        &self.shared.meta
    }

    /// Adds peers to dial (from a tracker, for example).
    pub fn add_peers(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.shared.add_peers(addrs);
    }

    pub fn is_complete(&self) -> bool {
        *self.complete_rx.borrow()
    }

    /// Whether every piece was there at the start (nothing was downloaded).
    pub fn started_complete(&self) -> bool {
        self.shared.started_complete
    }

    /// Resolves when every piece is verified and written.
    pub async fn wait_complete(&self) {
        let mut rx = self.complete_rx.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Resolves with a message when the download cannot go on (for example a write failed).
    pub async fn wait_fatal(&self) -> String {
        let mut rx = self.fatal_rx.clone();
        let _ = rx.wait_for(|c| *c).await;
        self.shared.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
    }

    /// A snapshot. Rates are over the last few seconds, whatever the pace of the calls.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let downloaded = s.downloaded.load(Ordering::Relaxed);
        let uploaded = s.uploaded.load(Ordering::Relaxed);
        let (down_rate, up_rate) = {
            let mut m = self.meters.lock().unwrap_or_else(|p| p.into_inner());
            (m.0.sample(downloaded), m.1.sample(uploaded))
        };
        let st = s.state();
        Stats {
            total: s.meta.info.total_length,
            have: st.picker.bytes_done(),
            pieces_have: st.picker.have().count(),
            pieces: st.picker.piece_count(),
            downloaded,
            uploaded,
            wasted: s.wasted.load(Ordering::Relaxed),
            down_rate,
            up_rate,
            peers: st.peers.len(),
            complete: st.picker.is_complete(),
            completed_after: s
                .completed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|t| t.duration_since(s.started_at)),
            banned: st.banned.len(),
            hash_failures: s.hash_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops: closes every connection and waits for pieces being verified or written, so the
    /// files hold only whole pieces that the next start will find.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
        // Close every connection and wait for them to end (no new ones register once stopping),
        // so that no piece is handed to the hashing threads after the wait below.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let idle = self.shared.peers_idle.notified();
            {
                let st = self.shared.state();
                if st.peers.is_empty() {
                    break;
                }
                for p in st.peers.values() {
                    let _ = p.ctl.send(Ctl::Close);
                }
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                warn!("connections still open after 5 s; stopping anyway");
                break;
            }
        }
        loop {
            let idle = self.shared.disk_idle.notified();
            if self.shared.pending_disk.load(Ordering::Acquire) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), idle).await;
        }
        // Tell the tracker we are gone, briefly: a tracker that does not answer must not hold
        // up the stop.
        // An announce the loop is making (`completed`, say) ends first: cut off, it could still
        // reach the tracker after our `stopped` and bring us back to life there.
        if let Some(mut t) = self.announce_task.take()
            && tokio::time::timeout(STOPPED_TIMEOUT, &mut t).await.is_err()
        {
            t.abort();
        }
        let url = self.shared.tracker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(url) = url {
            // A download that completed just before the stop still counts as one.
            let mut events = vec![Event::Stopped];
            let s = &self.shared;
            if !s.started_complete && self.is_complete() && !s.completed_sent.load(Ordering::Acquire) {
                events.insert(0, Event::Completed);
            }
            for event in events {
                let a = self.shared.announce_state(event);
                match tokio::time::timeout(STOPPED_TIMEOUT, tracker::announce(&url, &a)).await {
                    Ok(Ok(_)) => info!("announced {event:?} to {url}"),
                    Ok(Err(e)) => warn!("{url}: {event:?} announce failed: {e}"),
                    Err(_) => warn!("{url}: no answer to the {event:?} announce within {STOPPED_TIMEOUT:?}"),
                }
            }
        }
    }
}

/// How long a stop waits for the tracker to acknowledge `stopped`.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(3);

impl Shared {
    fn announce_state(&self, event: Event) -> tracker::Announce {
        let have = self.state().picker.bytes_done();
        tracker::Announce {
            info_hash: self.meta.info_hash,
            peer_id: self.config.peer_id,
            port: self.listen_addr.port(),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            downloaded: self.downloaded.load(Ordering::Relaxed),
            left: self.meta.info.total_length - have,
            event,
            numwant: self.config.numwant,
            local: self.config.listen.ip(),
        }
    }
}

/// Announces `started`, then again at the tracker's interval, `completed` when the download
/// completes; backs off while every tracker fails (the download goes on with the peers it has).
async fn announce_loop(shared: Arc<Shared>, mut tiers: Tiers) {
    let mut event = Event::Started;
    let mut failures: u32 = 0;
    let mut complete = shared.complete.subscribe();
    let mut stop = shared.shutdown.subscribe();
    let mut completed_sent = shared.started_complete;
    loop {
        if *stop.borrow() {
            return;
        }
        let a = shared.announce_state(event);
        let wait = match tiers.announce(&a).await {
            Ok((url, reply)) => {
                info!("{url}: {} peers ({} seeders, {} leechers)", reply.peers.len(), reply.seeders, reply.leechers);
                if let Some(w) = &reply.warning {
                    warn!("{url}: {w}");
                }
                shared.add_peers(reply.peers.iter().copied());
                *shared.tracker.lock().unwrap_or_else(|p| p.into_inner()) = Some(url);
                failures = 0;
                if event == Event::Completed {
                    completed_sent = true;
                    shared.completed_sent.store(true, Ordering::Release);
                }
                event = Event::None;
                reply.interval.max(reply.min_interval.unwrap_or_default()).clamp(MIN_REANNOUNCE, MAX_REANNOUNCE)
            }
            Err(errors) => {
                for (url, e) in &errors {
                    warn!("tracker {url}: {e}");
                }
                failures += 1;
                // 15 s, 30 s, 1 min … up to 10 min; the event is sent again next time.
                Duration::from_secs(15u64 << failures.min(6).saturating_sub(1)).min(Duration::from_secs(600))
            }
        };
        tokio::select! {
            biased;
            // The stop sends the last events itself.
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
            // Wakes at once when the download completes; a pending (failed) event waits out
            // its backoff instead.
            _ = complete.wait_for(|c| *c), if !completed_sent && event == Event::None => {
                event = Event::Completed;
            }
        }
    }
}

/// Bounds on the tracker's interval: no hammering, no silence longer than an hour.
const MIN_REANNOUNCE: Duration = Duration::from_secs(30);
const MAX_REANNOUNCE: Duration = Duration::from_secs(3600);

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(guard) = shared.admit(addr.ip()) else { continue };
        tokio::spawn(conn::run(shared.clone(), stream, addr, conn::Start::Incoming(guard)));
    }
}

/// A connection that lasted this long was a working one: if it drops, dial again soon.
const STABLE_CONNECTION: Duration = Duration::from_secs(60);
/// The longest wait before dialing again a peer whose connections keep ending early.
const MAX_REDIAL_WAIT: Duration = Duration::from_secs(300);
/// How long a seeding peer leaves alone an address it found seeding.
const SEED_MEMORY: Duration = Duration::from_secs(30 * 60);

/// How long to wait before dialing a peer again after a connection to it that lasted `lasted`
/// ended: 2 s after a stable one; after one that ended early (the peer closes on us: it is
/// full, or it has nothing for us; or the handshake failed), twice as long as the time before,
/// up to five minutes. A peer that closed every connection at once used to be dialed every 2 s
/// for as long as we ran.
fn redial_after(k: &mut Known, lasted: Duration) -> Duration {
    if lasted >= STABLE_CONNECTION {
        k.early_closes = 0;
        return Duration::from_secs(2);
    }
    k.early_closes = k.early_closes.saturating_add(1);
    (Duration::from_secs(2) * (1u32 << k.early_closes.min(8))).min(MAX_REDIAL_WAIT)
}

/// Dials known peers while there is room, with exponential backoff for those that fail.
async fn dial_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let to_dial: Vec<SocketAddr> = {
            let mut st = shared.state();
            let connected: HashSet<SocketAddr> =
                st.peers.values().flat_map(|p| [Some(p.addr), p.listen]).flatten().collect();
            let room = shared.config.max_peers.saturating_sub(st.peers.len() + st.connecting.len());
            let per_ip = shared.config.max_peers_per_ip;
            // Connections and dials per address, against the per-address limit.
            let mut at_ip: HashMap<IpAddr, usize> = HashMap::new();
            for ip in st.peers.values().map(|p| p.addr.ip()).chain(st.connecting.iter().map(|a| a.ip())) {
                *at_ip.entry(ip).or_default() += 1;
            }
            let seeding = st.picker.is_complete();
            let st = &mut *st;
            let mut picked: Vec<SocketAddr> = Vec::new();
            for (a, k) in &st.known {
                if picked.len() >= room {
                    break;
                }
                // Ourselves, or a seed while we seed: nothing to exchange.
                let pointless =
                    k.ourselves || (seeding && k.seed_at.is_some_and(|t| now.duration_since(t) < SEED_MEMORY));
                let n = at_ip.entry(a.ip()).or_default();
                if !pointless
                    && (per_ip == 0 || *n < per_ip)
                    && !connected.contains(a)
                    && !st.banned.contains(&a.ip())
                    && !st.connecting.contains(a)
                    && k.next_try.is_none_or(|t| t <= now)
                {
                    *n += 1;
                    picked.push(*a);
                }
            }
            for a in &picked {
                st.connecting.insert(*a);
            }
            picked
        };
        for addr in to_dial {
            let shared = shared.clone();
            // The fallback is the next dial's (`plaintext_next`), not this one's.
            let offers = shared.config.outgoing_encryption.offers();
            let fall_back = shared.state().known.get(&addr).is_some_and(|k| k.plaintext_next);
            let mse = if fall_back { *offers.last().unwrap_or(&None) } else { offers[0] };
            tokio::spawn(async move {
                let result =
                    tokio::time::timeout(Duration::from_secs(10), connect_from(shared.config.listen.ip(), addr)).await;
                let ok = matches!(result, Ok(Ok(_)));
                {
                    let mut st = shared.state();
                    st.connecting.remove(&addr);
                    let k = st.known.entry(addr).or_default();
                    if ok {
                        k.failures = 0;
                        // Not again while it runs; when it ends, see below.
                        k.next_try = Some(Instant::now() + Duration::from_secs(2));
                    } else {
                        k.failures += 1;
                        let backoff = Duration::from_secs((1u64 << k.failures.min(4)).min(15));
                        k.next_try = Some(Instant::now() + backoff);
                    }
                }
                match result {
                    Ok(Ok(stream)) => {
                        let started = Instant::now();
                        let ended = conn::run(shared.clone(), stream, addr, conn::Start::Outgoing { mse }).await;
                        let now = Instant::now();
                        let mut st = shared.state();
                        let k = st.known.entry(addr).or_default();
                        match ended {
                            conn::Ended::Closed { seed } => {
                                k.seed_at = seed.then_some(now);
                                // Not sooner than a wait set while it ran (closed as useless).
                                k.next_try = k.next_try.max(Some(now + redial_after(k, started.elapsed())));
                            }
                            conn::Ended::Refused => k.next_try = Some(now + REFUSED_BACKOFF),
                            conn::Ended::HandshakeFailed => {
                                k.next_try = Some(now + redial_after(k, Duration::ZERO));
                                if shared.config.outgoing_encryption == Outgoing::Prefer {
                                    // Like libtorrent: a peer that fails the MSE handshake is
                                    // tried again at once in plaintext; one that fails that gets
                                    // MSE next time.
                                    k.plaintext_next = mse.is_some();
                                    if mse.is_some() {
                                        k.next_try = Some(now);
                                    }
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => debug!("dial {addr}: {e}"),
                    Err(_) => debug!("dial {addr}: timed out"),
                }
            });
        }
    }
}

/// Dials `to` from `local` (the address we listen on), so that peers see one address of ours
/// whichever way a connection goes; from any address when we listen on all of them.
pub(crate) async fn connect_from(local: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    if local.is_unspecified() || local.is_ipv4() != to.is_ipv4() {
        return TcpStream::connect(to).await;
    }
    let socket = if to.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(to).await
}

/// Every 10 s: unchoke the fastest interested peers plus one optimistic, choke the rest.
async fn choke_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(choker::RECHOKE_EVERY);
    let mut round: u32 = 0;
    loop {
        tick.tick().await;
        let mut st = shared.state();
        let seeding = st.picker.is_complete();
        let candidates: Vec<Candidate> = st
            .peers
            .iter_mut()
            .map(|(k, p)| {
                let total = if seeding {
                    p.stats.uploaded.load(Ordering::Relaxed)
                } else {
                    p.stats.downloaded.load(Ordering::Relaxed)
                };
                let rate = total.saturating_sub(p.last_rate_total);
                p.last_rate_total = total;
                Candidate { key: *k, interested: p.stats.peer_interested.load(Ordering::Relaxed), rate }
            })
            .collect();
        // Peer turnover: with every slot taken while addresses wait to be dialed, the connection
        // that has been useless longest makes room (one a minute).
        let now = Instant::now();
        if round.is_multiple_of(TURNOVER_EVERY)
            && st.peers.len() >= shared.config.max_peers
            && st.known.iter().any(|(a, k)| {
                k.next_try.is_none_or(|t| t <= now) && !k.ourselves && !st.banned.contains(&a.ip()) && {
                    let connected = st.peers.values().any(|p| p.addr == *a || p.listen == Some(*a));
                    !connected && shared.ip_allows(&st, a.ip())
                }
            })
            && let Some(victim) = useless_peer(&st, now)
        {
            shared.close_useless(&mut st, victim);
        }
        let rotate = round.is_multiple_of(choker::OPTIMISTIC_EVERY);
        round += 1;
        let (unchoke, optimistic) =
            choker::choose(&candidates, shared.config.upload_slots, st.optimistic, rotate, crate::random_u64());
        st.optimistic = optimistic;
        for (k, p) in st.peers.iter_mut() {
            let want = unchoke.contains(k);
            if want != p.unchoked {
                p.unchoked = want;
                let _ = p.ctl.send(if want { Ctl::Unchoke } else { Ctl::Choke });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_back_off_while_connections_end_early() {
        let mut k = Known::default();
        let early = Duration::from_secs(1);
        let waits: Vec<u64> = (0..10).map(|_| redial_after(&mut k, early).as_secs()).collect();
        assert_eq!(waits, [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // A connection that worked for a while resets it.
        assert_eq!(redial_after(&mut k, STABLE_CONNECTION), Duration::from_secs(2));
        assert_eq!(redial_after(&mut k, early), Duration::from_secs(4));
    }
}
