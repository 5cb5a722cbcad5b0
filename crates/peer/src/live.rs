//! A torrent while it runs: its pieces on disk, the picker, its connections and the tasks around
//! them (dialing, rechoking, announcing), and a clean stop. [`Live`] is what connections talk to,
//! through [`Link`]; it is made when a torrent starts and dropped when it stops.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bitswarm_metainfo::Metainfo;
use bitswarm_tracker_proto::Event;
use bitswarm_wire::{BLOCK_SIZE, Bitfield, BlockRef};
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::signal::{Receiver, Watched};
use tracing::{debug, info, warn};

use crate::choker::{self, Candidate};
use crate::conn;
use crate::core::{Core, HashJob, Outgoing};
use crate::disk::Disk;
use crate::link::{Ctl, Link, PeerKey, PeerStats, Servable};
use crate::picker::{BlockOutcome, Picker};
use crate::rate::Limiter;
use crate::tracker::{self, Tiers};

/// Peer addresses remembered for dialing.
const MAX_KNOWN: usize = 2000;

/// How long an address whose connection we refused after the handshake is left alone.
const REFUSED_BACKOFF: Duration = Duration::from_secs(60);

/// Received data waiting for verification above which no new pieces are started.
const MAX_PENDING_BYTES: u64 = 24 << 20;

/// A peer that has sent nothing and taken nothing for this long (and been connected as long),
/// and is not waiting for its turn to be unchoked, is useless: when every slot is taken it
/// makes room for a newcomer (libtorrent's peer turnover does the same).
const USELESS_AFTER: Duration = Duration::from_secs(30);

/// Rechoke rounds (10 s each) between two connections closed to make room for dialing.
const TURNOVER_EVERY: u32 = 6;

/// How long an address whose connection we closed as useless is left alone.
const USELESS_BACKOFF: Duration = Duration::from_secs(300);

/// Where we learned of a peer's address (Transmission's `peersFrom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Given by the user (`--peer`, the RPC).
    Given,
    /// A magnet link's `x.pe`.
    Magnet,
    Tracker,
    /// Peer exchange (BEP 11).
    Pex,
    /// The Mainline DHT (BEP 5).
    Dht,
    /// Local Service Discovery (BEP 14).
    Lsd,
    /// The peer dialed us.
    Incoming,
}

/// The counters of a torrent that outlive a run (kept by the torrent, added to while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Payload bytes received and sent.
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    /// Bytes received that were not used (duplicates, failed pieces).
    pub wasted: AtomicU64,
    /// Bytes of pieces that failed their hash.
    pub corrupt: AtomicU64,
    pub hash_failures: AtomicU64,
}

/// What a run needs besides the torrent and its data.
pub(crate) struct LiveConfig {
    /// The torrent's id in the session (its changes are marked under it).
    pub id: u32,
    pub dir: PathBuf,
    /// The files' paths under `dir` when renamed ([`crate::TorrentSettings::paths`]).
    pub paths: Option<Vec<String>>,
    /// Files may be created and written (not for a torrent that is only seeded).
    pub writable: bool,
    /// Every file is there at its size (resume data just said so): none is made or trimmed,
    /// and none opened before a peer asks for data.
    pub files_ready: bool,
    pub trackers: Vec<Vec<String>>,
    pub peers: Vec<(SocketAddr, Source)>,
    pub max_peers: usize,
    /// Bytes per second for this torrent; 0: no limit of its own.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// The session's rate limits apply too.
    pub honors_session_limits: bool,
    /// Each piece's priority (0: not wanted).
    pub priorities: Vec<u8>,
    /// Which files are wanted (the others are not made up front).
    pub wanted_files: Vec<bool>,
}

/// A tracker as the last announce to it left it.
#[derive(Debug, Clone, Default)]
pub struct TrackerStatus {
    pub url: String,
    pub tier: usize,
    pub last_announce: Option<SystemTime>,
    /// The last announce worked.
    pub ok: bool,
    /// When not `ok`: the tracker answered, with an error (else it could not be reached).
    pub refused: bool,
    /// When `ok`: the tracker sent a warning, which is the message.
    pub warned: bool,
    /// What it said: the peer count, or the error.
    pub message: String,
    pub peers: u32,
    pub seeders: u32,
    pub leechers: u32,
    pub next_announce: Option<SystemTime>,
}

pub(crate) struct PeerEntry {
    pub addr: SocketAddr,
    pub peer_id: [u8; 20],
    pub ctl: mpsc::UnboundedSender<Ctl>,
    pub stats: Arc<PeerStats>,
    pub unchoked: bool,
    pub last_rate_total: u64,
    /// Bytes per second from and to the peer over the last rechoke period, and the totals
    /// then.
    pub rates: (u64, u64),
    last_totals: (u64, u64),
    /// Where the peer listens, when it said so (BEP 10 `p`): not to be dialed while connected.
    pub listen: Option<SocketAddr>,
    /// We dialed it (so `addr` is where it listens).
    pub outgoing: bool,
    pub connected_at: Instant,
    pub source: Source,
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

struct Known {
    source: Source,
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

impl Known {
    fn new(source: Source) -> Known {
        Known {
            source,
            failures: 0,
            next_try: None,
            ourselves: false,
            plaintext_next: false,
            early_closes: 0,
            seed_at: None,
        }
    }
}

pub(crate) struct State {
    pub picker: Picker,
    /// Made with the first address or connection: thousands of idle seeds never have one.
    /// Read through [`State`]'s `Deref` (an empty one when there is none yet).
    swarm: Option<Box<Swarm>>,
}

/// A run's peers: those connected, those known, those refused.
#[derive(Default)]
pub(crate) struct Swarm {
    pub peers: HashMap<PeerKey, PeerEntry>,
    next_key: PeerKey,
    connecting: HashSet<SocketAddr>,
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

impl std::ops::Deref for State {
    type Target = Swarm;

    fn deref(&self) -> &Swarm {
        static EMPTY: std::sync::LazyLock<Swarm> = std::sync::LazyLock::new(Swarm::default);
        self.swarm.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for State {
    fn deref_mut(&mut self) -> &mut Swarm {
        self.swarm.get_or_insert_with(Box::default)
    }
}

/// A peer as a peer list shows it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub client: Option<String>,
    pub outgoing: bool,
    pub encrypted: bool,
    /// The fraction of the pieces it has.
    pub progress: f64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes per second from and to the peer lately.
    pub down_rate: u64,
    pub up_rate: u64,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub source: Source,
}

pub(crate) struct Live {
    /// Ourselves, for the jobs handed to the hashing threads.
    me: Weak<Live>,
    pub core: Arc<Core>,
    pub meta: Arc<Metainfo>,
    pub disk: Arc<Disk>,
    state: Mutex<State>,
    pub counters: Arc<Counters>,
    pub up: Limiter,
    pub down: Limiter,
    pub honors_session_limits: AtomicBool,
    max_peers: AtomicUsize,
    /// When data last went either way.
    activity: Arc<crate::Stamp>,
    /// Pieces handed to verification that have not finished (for a clean stop).
    pending_disk: AtomicUsize,
    disk_idle: Notify,
    /// Woken when the last connection is gone (for a clean stop).
    peers_idle: Notify,
    /// What only a run with peers needs, made with the first address or peer: a torrent that
    /// never has any (thousands of idle seeds) has none.
    net: std::sync::OnceLock<Box<Net>>,
    runtime: tokio::runtime::Handle,
    stop: Watched<bool>,
    /// Every piece is verified and written.
    complete: Watched<bool>,
    fatal: Mutex<Option<String>>,
    /// Woken when the run's waiter must look again: an error, completion, a command to its
    /// torrent, a change of settings.
    run_wake: Notify,
    /// The tracker that answered last (it gets the `stopped` announce).
    tracker: Mutex<Option<String>>,
    pub trackers: Mutex<Vec<TrackerStatus>>,
    /// Bumped with every verified piece (the resume data is saved when it moved).
    pub have_generation: AtomicU64,
    torrent_id: u32,
    /// Whether we started with every piece (then `completed` is never announced).
    pub started_complete: bool,
    started_at: Instant,
    completed_at: Mutex<Option<Instant>>,
    /// `completed` reached a tracker.
    completed_sent: AtomicBool,
    /// The announces between two of them (None: no trackers).
    announcing: Mutex<Option<Announcing>>,
    /// Bumped when the trackers change: an announce under way to the old ones puts nothing back.
    announce_generation: AtomicU64,
}

/// The part of a run that only peers need (see [`Live::net`]).
#[derive(Default)]
struct Net {
    /// Woken when there may be someone to dial (new addresses, a slot freed).
    dial_wake: Notify,
    /// Woken when the first connection arrives (rechoking sleeps while there is none).
    choke_wake: Notify,
    /// The dialing and rechoking tasks start with the first address or peer.
    dialer_started: AtomicBool,
    choker_started: AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Pieces read lately for peers, the latest last.
    cache: Mutex<VecDeque<(u32, Arc<Vec<u8>>)>>,
}

/// The state of a run's announces while none is under way; the session's
/// [`Announcer`](crate::announcer::Announcer) says when the next is due.
pub(crate) struct Announcing {
    /// The tracker tiers (None while an announce has them).
    tiers: Option<Tiers>,
    event: Event,
    failures: u32,
    completed_sent: bool,
    /// Its place in the session's schedule.
    key: Option<crate::announcer::Key>,
    /// The announce under way.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Asked for again (torrent-reannounce) while one was under way.
    again: bool,
    /// Told the tracker gate to say when the server answers again.
    parked: bool,
}

impl Live {
    /// Starts a run over data whose verified pieces are `have`: makes the files (when
    /// writable), then dials, rechokes and announces until [`Live::shutdown`].
    pub async fn start(
        core: Arc<Core>,
        meta: Arc<Metainfo>,
        have: Bitfield,
        cfg: LiveConfig,
        counters: Arc<Counters>,
    ) -> Result<Arc<Live>, String> {
        let layout = bitswarm_storage::Layout::with_paths(&meta.info, &cfg.dir, cfg.paths.as_deref());
        let disk = Arc::new(Disk::new(layout, cfg.writable));
        let all_there = have.is_full();
        let mut picker = Picker::new(meta.info.piece_length, meta.info.total_length, have, crate::random_u64());
        picker.set_priorities(cfg.priorities.clone());
        let complete_now = picker.is_complete();
        if cfg.writable && !(cfg.files_ready && all_there) {
            let d = disk.clone();
            let wanted = cfg.wanted_files.clone();
            tokio::task::spawn_blocking(move || {
                d.create_all(|i| wanted.get(i).copied().unwrap_or(true))
                    .map_err(|e| format!("cannot create the files: {e}"))?;
                if all_there {
                    d.trim_files().map_err(|e| format!("cannot finish the files: {e}"))?;
                }
                Ok::<(), String>(())
            })
            .await
            .map_err(|e| e.to_string())??;
        }
        let live = Arc::new_cyclic(|me| Live {
            me: me.clone(),
            core,
            disk,
            state: Mutex::new(State { picker, swarm: None }),
            counters,
            up: Limiter::new(cfg.max_upload_rate),
            down: Limiter::new(cfg.max_download_rate),
            honors_session_limits: AtomicBool::new(cfg.honors_session_limits),
            max_peers: AtomicUsize::new(cfg.max_peers.max(1)),
            activity: Arc::default(),
            pending_disk: AtomicUsize::new(0),
            disk_idle: Notify::new(),
            peers_idle: Notify::new(),
            net: std::sync::OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            stop: Watched::new(false),
            complete: Watched::new(complete_now),
            fatal: Mutex::new(None),
            run_wake: Notify::new(),
            tracker: Mutex::new(None),
            trackers: Mutex::new(Vec::new()),
            have_generation: AtomicU64::new(0),
            torrent_id: cfg.id,
            started_complete: complete_now,
            started_at: Instant::now(),
            completed_at: Mutex::new(None),
            completed_sent: AtomicBool::new(false),
            announcing: Mutex::new(None),
            announce_generation: AtomicU64::new(0),
            meta,
        });
        for (a, source) in &cfg.peers {
            live.add_peers([*a], *source);
        }
        live.set_trackers(cfg.trackers.clone());
        Ok(live)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn net(&self) -> &Net {
        self.net.get_or_init(Box::default)
    }

    /// Starts the dialing task if it has not started, and wakes it.
    fn wake_dialer(&self) {
        let net = self.net();
        self.start_once(net, &net.dialer_started, dial_loop);
        net.dial_wake.notify_one();
    }

    /// Starts the rechoking task if it has not started, and wakes it.
    fn wake_choker(&self) {
        let net = self.net();
        self.start_once(net, &net.choker_started, choke_loop);
        net.choke_wake.notify_one();
    }

    fn start_once<F: std::future::Future<Output = ()> + Send + 'static>(
        &self,
        net: &Net,
        started: &AtomicBool,
        task: fn(Arc<Live>) -> F,
    ) {
        if started.load(Ordering::Acquire) || *self.stop.borrow() {
            return;
        }
        let mut tasks = net.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Again under the lock: a shutdown sets `stop` before it takes the tasks to end them.
        if *self.stop.borrow() || started.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            tasks.push(self.runtime.spawn(task(me)));
        }
    }

    pub fn set_max_peers(&self, n: usize) {
        self.max_peers.store(n.max(1), Ordering::Relaxed);
        self.wake_dialer();
    }

    fn max_peers(&self) -> usize {
        self.max_peers.load(Ordering::Relaxed)
    }

    /// Resolves when every piece is verified and written.
    pub async fn wait_complete(&self) {
        let mut rx = self.complete.subscribe();
        rx.wait_for(|c| *c).await;
    }

    pub fn is_complete(&self) -> bool {
        *self.complete.borrow()
    }

    /// Sets each piece's priority (0: not wanted); completion follows.
    pub fn set_priorities(&self, priorities: Vec<u8>) {
        let done = {
            let mut st = self.state();
            st.picker.set_priorities(priorities);
            st.picker.is_complete()
        };
        if self.complete.send_if_modified(|c| std::mem::replace(c, done) != done) {
            self.wake_run();
        }
        // Peers may have something we want now, or nothing.
        let st = self.state();
        for p in st.peers.values() {
            let _ = p.ctl.send(Ctl::Recheck);
        }
    }

    /// Announces to these tiers from now on (starting with `started` again when they changed;
    /// none: no announces).
    pub fn set_trackers(self: &Arc<Self>, tiers: Vec<Vec<String>>) {
        let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut status = self.trackers.lock().unwrap_or_else(|p| p.into_inner());
            let same = status
                .iter()
                .map(|t| (t.tier, &t.url))
                .eq(tiers.iter().enumerate().flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u))));
            if same && (announcing.is_some() || tiers.is_empty()) {
                return;
            }
            // Sized exactly: collected from a flat_map, it had room for four (416 bytes a
            // torrent with one tracker).
            let mut list = Vec::with_capacity(tiers.iter().map(Vec::len).sum());
            list.extend(tiers.iter().enumerate().flat_map(|(tier, urls)| {
                urls.iter().map(move |u| TrackerStatus { url: u.clone(), tier, ..Default::default() })
            }));
            *status = list;
        }
        self.announce_generation.fetch_add(1, Ordering::AcqRel);
        if let Some(mut old) = announcing.take() {
            self.core.announcer.cancel(&mut old.key);
            if let Some(t) = old.task.take() {
                t.abort();
            }
        }
        if tiers.is_empty() || *self.stop.borrow() {
            return;
        }
        let mut a = Announcing {
            tiers: Some(Tiers::new(tiers)),
            event: Event::Started,
            failures: 0,
            completed_sent: self.started_complete,
            key: None,
            task: None,
            again: false,
            parked: false,
        };
        self.core.announcer.schedule(self, &mut a.key, tokio::time::Instant::now(), &self.runtime);
        *announcing = Some(a);
    }

    /// The session's timer says this run's next announce is due.
    pub(crate) fn announce_due(self: &Arc<Self>) {
        let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = announcing.as_mut() else { return };
        a.key = None;
        if *self.stop.borrow() {
            return;
        }
        if a.task.is_some() {
            a.again = true;
            return;
        }
        let Some(tiers) = a.tiers.take() else { return };
        let generation = self.announce_generation.load(Ordering::Acquire);
        a.task = Some(self.runtime.spawn(announce_once(self.clone(), tiers, a.event, generation)));
    }

    /// The download completed: `completed` goes to the tracker now, unless an announce is under
    /// way (it looks when it ends) or a failed event waits out its backoff.
    fn announce_completed(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = announcing.as_mut() else { return };
        if a.completed_sent || a.event != Event::None || a.task.is_some() || *self.stop.borrow() {
            return;
        }
        a.event = Event::Completed;
        self.core.announcer.schedule(&me, &mut a.key, tokio::time::Instant::now(), &self.runtime);
    }

    /// Announces now rather than at the tracker's next interval.
    pub fn reannounce(self: &Arc<Self>) {
        let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = announcing.as_mut() else { return };
        if a.task.is_some() {
            a.again = true;
            return;
        }
        self.core.announcer.schedule(self, &mut a.key, tokio::time::Instant::now(), &self.runtime);
    }

    /// What marks when data last went either way (the queue watches it, see
    /// [`crate::queue::Slot::watch`]).
    pub(crate) fn activity(&self) -> Arc<crate::Stamp> {
        self.activity.clone()
    }

    /// When data last went either way.
    pub fn last_activity(&self) -> Option<SystemTime> {
        let at = self.activity.get()?;
        SystemTime::now().checked_sub(at.elapsed())
    }

    /// Resolves with a message when the run cannot go on (a write failed, say).
    /// The error that ends the run, once there is one.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resolves at the next [`Live::wake_run`] (enable it before looking at what it guards).
    pub fn run_woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.run_wake.notified()
    }

    pub fn wake_run(&self) {
        self.run_wake.notify_waiters();
    }

    /// How long after the start the last piece was verified.
    pub fn completed_after(&self) -> Option<Duration> {
        self.completed_at.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.duration_since(self.started_at))
    }

    /// The pieces we have now.
    pub fn have_now(&self) -> Bitfield {
        self.state().picker.have().clone()
    }

    pub fn peer_list(&self) -> Vec<PeerInfo> {
        let st = self.state();
        let n = st.picker.piece_count().max(1) as f64;
        st.peers
            .values()
            .map(|p| {
                let s = &p.stats;
                PeerInfo {
                    addr: p.addr,
                    client: s.client.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    outgoing: p.outgoing,
                    encrypted: s.encrypted.load(Ordering::Relaxed),
                    progress: s.pieces.load(Ordering::Relaxed) as f64 / n,
                    downloaded: s.downloaded.load(Ordering::Relaxed),
                    uploaded: s.uploaded.load(Ordering::Relaxed),
                    down_rate: p.rates.0,
                    up_rate: p.rates.1,
                    am_choking: !p.unchoked,
                    am_interested: s.am_interested.load(Ordering::Relaxed),
                    peer_choking: s.peer_choking.load(Ordering::Relaxed),
                    peer_interested: s.peer_interested.load(Ordering::Relaxed),
                    source: p.source,
                }
            })
            .collect()
    }

    /// Connections, banned addresses, peers sending to us (they unchoke us and we are
    /// interested), peers we send to (we unchoke them and they are interested).
    pub(crate) fn counts_in(st: &State) -> (usize, usize, usize, usize) {
        let sending = st
            .peers
            .values()
            .filter(|p| !p.stats.peer_choking.load(Ordering::Relaxed) && p.stats.am_interested.load(Ordering::Relaxed))
            .count();
        let getting =
            st.peers.values().filter(|p| p.unchoked && p.stats.peer_interested.load(Ordering::Relaxed)).count();
        (st.peers.len(), st.banned.len(), sending, getting)
    }

    /// The addresses it knows to dial.
    #[cfg(test)]
    pub(crate) fn known_addrs(&self) -> Vec<SocketAddr> {
        self.state().known.keys().copied().collect()
    }

    /// Forgets the addresses to dial that `list` holds (it has just come in force), and closes
    /// the connections to them, as Transmission does.
    pub(crate) fn forget_blocked(&self, list: &crate::Blocklist) {
        let mut st = self.state();
        st.known.retain(|a, _| !list.contains(a.ip()));
        for p in st.peers.values().filter(|p| list.contains(p.addr.ip())) {
            let _ = p.ctl.send(Ctl::Close);
        }
    }

    /// Adds addresses to dial, remembering where each came from.
    pub fn add_peers(&self, addrs: impl IntoIterator<Item = SocketAddr>, source: Source) {
        let mut st = self.state();
        let mut added = false;
        for a in addrs {
            if a == self.core.listen_addr() || st.known.contains_key(&a) || self.core.blocked(a.ip()) {
                continue;
            }
            if st.known.len() >= MAX_KNOWN {
                // Make room by forgetting an address that failed; otherwise keep what we have.
                let Some(dead) = st.known.iter().find(|(_, k)| k.failures > 0).map(|(a, _)| *a) else { break };
                st.known.remove(&dead);
            }
            st.known.insert(a, Known::new(source));
            added = true;
        }
        drop(st);
        if added {
            self.wake_dialer();
        }
    }

    fn fail_now(&self, message: String) {
        warn!("{}: {message}", self.meta.info.name);
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
        self.wake_run();
    }

    /// Connections to `ip` that the per-address limit still allows.
    fn ip_allows(&self, st: &State, ip: IpAddr) -> bool {
        let limit = self.core.settings().max_peers_per_ip;
        limit == 0 || st.peers.values().filter(|p| p.addr.ip() == ip).count() < limit
    }

    /// Whether a connection from or to `ip` may join: the address is under its limit, and a
    /// slot is free (in the torrent and in the session), or made free by closing the
    /// connection that has been useless longest.
    fn room_for(&self, st: &mut State, ip: IpAddr, now: Instant) -> bool {
        if !self.ip_allows(st, ip) {
            return false;
        }
        let global = self.core.connections.load(Ordering::Acquire) < self.core.settings().max_connections;
        if st.peers.len() < self.max_peers() && global {
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
        self.core.count_connection(false);
        let _ = p.ctl.send(Ctl::Close);
        for a in [Some(p.addr).filter(|_| p.outgoing), p.listen].into_iter().flatten() {
            if let Some(k) = st.known.get_mut(&a) {
                k.next_try = Some(Instant::now() + USELESS_BACKOFF);
            }
        }
    }

    /// Hands a whole piece to the hashing threads, which write it if it is good and tell
    /// everyone. `senders` names the connection that sent each block.
    fn verify_piece(&self, index: u32, data: Vec<u8>, senders: Vec<PeerKey>) {
        self.pending_disk.fetch_add(1, Ordering::AcqRel);
        let me = self.me.clone();
        let job = HashJob {
            data,
            expected: self.meta.info.pieces[index as usize],
            done: Box::new(move |data, good| {
                if let Some(me) = me.upgrade() {
                    me.checked(index, data, senders, good);
                }
            }),
        };
        if let Err(job) = self.core.hash(job) {
            // The hashing threads are gone: only when the session is being torn down.
            self.state().picker.piece_failed(index);
            self.state().picker.recycle(job.data);
            self.verified_one();
        }
    }

    /// On a hashing thread: a piece was hashed; a good one is written, then counted.
    fn checked(&self, index: u32, data: Vec<u8>, senders: Vec<PeerKey>, good: bool) {
        if !good {
            self.piece_failed(index, &data, &senders);
        } else if let Err(e) = self.disk.write_piece(index, &data) {
            self.state().picker.piece_failed(index);
            self.fail_now(format!("cannot write piece {index}: {e}"));
        } else {
            self.piece_done(index, &data);
        }
        self.state().picker.recycle(data);
        self.verified_one();
    }

    fn verified_one(&self) {
        if self.pending_disk.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.disk_idle.notify_waiters();
        }
    }

    /// The download completed: files are cut to the torrent's lengths (once every piece is
    /// here), then everyone is told.
    fn completed(&self) {
        if self.state().picker.have().is_full()
            && let Err(e) = self.disk.trim_files()
        {
            self.fail_now(format!("cannot finish the files: {e}"));
            return;
        }
        info!("{}: download complete: all {} pieces verified", self.meta.info.name, self.meta.info.piece_count());
        *self.completed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.complete.send_replace(true);
        self.wake_run();
        self.announce_completed();
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
        self.have_generation.fetch_add(1, Ordering::Relaxed);
        self.core.mark_changed(self.torrent_id);
        for p in st.peers.values() {
            let _ = p.ctl.send(Ctl::Have(index));
        }
        if st.picker.is_complete() {
            drop(st);
            self.completed();
        }
    }

    fn piece_failed(&self, index: u32, data: &[u8], senders: &[PeerKey]) {
        self.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
        self.counters.corrupt.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.counters.wasted.fetch_add(data.len() as u64, Ordering::Relaxed);
        let ips: Vec<Option<IpAddr>> = {
            let mut st = self.state();
            st.picker.piece_failed(index);
            senders.iter().map(|k| st.sender_ips.get(k).copied()).collect()
        };
        let mut distinct: Vec<IpAddr> = ips.iter().flatten().copied().collect();
        distinct.sort();
        distinct.dedup();
        warn!("{}: piece {index} failed its hash check (sent by {distinct:?})", self.meta.info.name);
        if let ([ip], true) = (&distinct[..], ips.iter().all(Option::is_some)) {
            // Every block came from one address: it certainly sent bad data.
            let strikes = self.core.settings().ban_strikes;
            let mut st = self.state();
            let s = st.strikes.entry(*ip).or_default();
            *s += 1;
            if *s >= strikes {
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
    fn may_start_pieces(&self) -> bool {
        let pending = self.pending_disk.load(Ordering::Acquire) as u64;
        pending * self.meta.info.piece_length < MAX_PENDING_BYTES || pending < 2
    }

    /// Stops: closes every connection and waits for pieces being verified or written, so the
    /// files hold only whole pieces that the next start will find; then tells the tracker.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Some(net) = self.net.get() {
            for t in net.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                t.abort();
            }
        }
        // Close every connection and wait for them to end (no new ones register once
        // stopping), so that no piece is handed to the hashing threads after the wait below.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let idle = self.peers_idle.notified();
            {
                let st = self.state();
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
            let idle = self.disk_idle.notified();
            if self.pending_disk.load(Ordering::Acquire) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), idle).await;
        }
        // An announce the loop is making (`completed`, say) ends first: cut off, it could still
        // reach the tracker after our `stopped` and bring us back to life there.
        let task = {
            let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
            announcing.as_mut().and_then(|a| {
                self.core.announcer.cancel(&mut a.key);
                a.task.take()
            })
        };
        if let Some(mut t) = task
            && tokio::time::timeout(STOPPED_TIMEOUT, &mut t).await.is_err()
        {
            t.abort();
        }
        let url = self.tracker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(url) = url {
            // A download that completed just before the stop still counts as one.
            let mut events = vec![Event::Stopped];
            if !self.started_complete && self.is_complete() && !self.completed_sent.load(Ordering::Acquire) {
                events.insert(0, Event::Completed);
            }
            for event in events {
                let a = self.announce_state(event);
                match tokio::time::timeout(STOPPED_TIMEOUT, tracker::announce(&url, &a)).await {
                    Ok(Ok(_)) => info!("announced {event:?} to {url}"),
                    Ok(Err(e)) => warn!("{url}: {event:?} announce failed: {e}"),
                    Err(_) => warn!("{url}: no answer to the {event:?} announce within {STOPPED_TIMEOUT:?}"),
                }
            }
        }
    }

    fn announce_state(&self, event: Event) -> tracker::Announce {
        let left = self.state().picker.wanted_left();
        let s = self.core.settings();
        tracker::Announce {
            info_hash: self.meta.info_hash,
            peer_id: self.core.peer_id,
            port: self.core.listen_addr().port(),
            uploaded: self.counters.uploaded.load(Ordering::Relaxed),
            downloaded: self.counters.downloaded.load(Ordering::Relaxed),
            left,
            event,
            numwant: s.numwant,
            local: s.listen.ip(),
        }
    }

    /// The connection that would be refused or accepted for `ip`, before its handshake is
    /// finished: not banned, and room for it (see [`Live::room_for`]), without closing anything.
    pub fn may_accept(&self, ip: IpAddr) -> bool {
        let st = self.state();
        let full = st.peers.len() >= self.max_peers() && useless_peer(&st, Instant::now()).is_none();
        !st.banned.contains(&ip) && self.ip_allows(&st, ip) && !full
    }
}

impl Link for Live {
    fn info_hash(&self) -> [u8; 20] {
        self.meta.info_hash.0
    }
    fn peer_id(&self) -> [u8; 20] {
        self.core.peer_id
    }
    fn listen_port(&self) -> u16 {
        self.core.listen_addr().port()
    }
    fn private(&self) -> bool {
        self.meta.info.private
    }
    fn info_bytes(&self) -> &[u8] {
        self.meta.info_bytes()
    }
    fn piece_count(&self) -> usize {
        self.meta.info.piece_count()
    }
    fn stopping(&self) -> Receiver<'_, bool> {
        self.stop.subscribe()
    }
    fn fail(&self, message: String) {
        self.fail_now(message);
    }

    fn register(
        &self,
        addr: SocketAddr,
        peer_id: [u8; 20],
        outgoing: bool,
        ctl: mpsc::UnboundedSender<Ctl>,
        stats: Arc<PeerStats>,
    ) -> Option<PeerKey> {
        let mut st = self.state();
        // Blocked too: a connection under way when a blocklist came in force.
        if *self.stop.borrow() || st.banned.contains(&addr.ip()) || self.core.blocked(addr.ip()) {
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
            let ours_first = self.core.peer_id < peer_id;
            if outgoing != ours_first {
                return None;
            }
            if let Some(p) = st.peers.remove(&old) {
                self.core.count_connection(false);
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
        let source = if outgoing { st.known.get(&addr).map_or(Source::Given, |k| k.source) } else { Source::Incoming };
        st.peers.insert(
            key,
            PeerEntry {
                addr,
                peer_id,
                ctl,
                stats,
                unchoked: false,
                last_rate_total: 0,
                rates: (0, 0),
                last_totals: (0, 0),
                listen: None,
                outgoing,
                connected_at: Instant::now(),
                source,
            },
        );
        self.core.count_connection(true);
        if st.peers.len() == 1 {
            self.wake_choker();
            // Its figures start to move: a client's held listing hears of it.
            self.core.bump();
        }
        Some(key)
    }

    fn unregister(&self, key: PeerKey, theirs: &Bitfield, outstanding: &[BlockRef]) {
        let mut st = self.state();
        if st.peers.remove(&key).is_some() {
            self.core.count_connection(false);
        }
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
        drop(st);
        self.wake_dialer();
    }

    fn set_listen_port(&self, key: PeerKey, port: u16) {
        if let Some(p) = self.state().peers.get_mut(&key) {
            p.listen = Some(SocketAddr::new(p.addr.ip(), port));
        }
    }

    fn mark_self(&self, addr: SocketAddr) {
        if let Some(k) = self.state().known.get_mut(&addr) {
            k.ourselves = true;
        }
    }

    fn pex_peers(&self, except: PeerKey) -> Vec<(SocketAddr, u8)> {
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

    fn add_pex_peers(&self, addrs: Vec<SocketAddr>) {
        self.add_peers(addrs, Source::Pex);
    }
    fn dht_port(&self) -> Option<u16> {
        crate::dht::port_for(&self.core, &self.meta)
    }
    fn dht_node(&self, addr: SocketAddr) {
        crate::dht::node_from_peer(&self.core, &self.meta, addr);
    }

    fn try_unchoke(&self, key: PeerKey) -> bool {
        let slots = self.core.settings().upload_slots;
        let mut st = self.state();
        let unchoked = st.peers.values().filter(|p| p.unchoked).count();
        if unchoked > slots {
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

    fn mark_choked(&self, key: PeerKey) {
        if let Some(p) = self.state().peers.get_mut(&key) {
            p.unchoked = false;
        }
    }

    fn have(&self) -> Bitfield {
        self.state().picker.have().clone()
    }

    fn complete(&self) -> bool {
        self.state().picker.is_complete()
    }

    fn servable(&self, r: BlockRef) -> Servable {
        let st = self.state();
        let size = st.picker.piece_size(r.index);
        if u64::from(r.begin) + u64::from(r.length) > u64::from(size) {
            Servable::OutOfRange
        } else if !st.picker.have().get(r.index as usize) {
            Servable::NotHave
        } else {
            Servable::Yes
        }
    }

    fn wants_any(&self, theirs: &Bitfield) -> bool {
        self.state().picker.wants_any(theirs)
    }

    fn peer_bitfield(&self, old: &Bitfield, new: &Bitfield) {
        let mut st = self.state();
        st.picker.peer_bitfield(old, false);
        st.picker.peer_bitfield(new, true);
    }

    fn peer_have(&self, index: u32) -> bool {
        let mut st = self.state();
        st.picker.peer_have(index);
        !st.picker.have().get(index as usize)
    }

    fn pick(&self, theirs: &Bitfield, asked: &[(BlockRef, Instant)], want: usize, now: Instant) -> Vec<BlockRef> {
        let new_pieces = self.may_start_pieces();
        let mut st = self.state();
        // What this peer already has of ours matters only for endgame duplicates.
        let mine: Vec<BlockRef> =
            if st.picker.in_endgame() { asked.iter().map(|(r, _)| *r).collect() } else { Vec::new() };
        st.picker.pick(theirs, &mine, want, new_pieces, now)
    }

    fn release(&self, blocks: &[BlockRef]) {
        let mut st = self.state();
        for r in blocks {
            st.picker.release(r);
        }
    }

    fn block_received(&self, key: PeerKey, index: u32, begin: u32, data: &[u8], asked_here: bool) {
        let len = data.len() as u64;
        self.counters.downloaded.fetch_add(len, Ordering::Relaxed);
        self.core.downloaded.fetch_add(len, Ordering::Relaxed);
        self.activity.set(Instant::now());
        let r = BlockRef { index, begin, length: data.len() as u32 };
        let mut st = self.state();
        // Asked of others too (endgame duplicates, or asked again after our request to this
        // peer timed out): they are told to cancel it.
        let asked = st.picker.requesters(index, begin);
        let duplicated = asked > 1 || (asked == 1 && !asked_here);
        match st.picker.block_received(index, begin, data, key) {
            BlockOutcome::Stored => {}
            BlockOutcome::PieceComplete { data, senders } => {
                drop(st);
                self.verify_piece(index, data, senders);
                st = self.state();
            }
            BlockOutcome::Unwanted => {
                self.counters.wasted.fetch_add(len, Ordering::Relaxed);
            }
        }
        if duplicated {
            for (k, p) in st.peers.iter() {
                if *k != key {
                    let _ = p.ctl.send(Ctl::Cancel(r));
                }
            }
        }
    }

    async fn read_block(&self, r: BlockRef) -> std::io::Result<Arc<Vec<u8>>> {
        {
            let cache = self.net().cache.lock().unwrap_or_else(|p| p.into_inner());
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
        let mut cache = self.net().cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.iter().any(|(i, _)| *i == r.index) {
            let cache_pieces = ((32u64 << 20) / self.meta.info.piece_length).clamp(2, 64) as usize;
            if cache.len() >= cache_pieces {
                cache.pop_front();
            }
            cache.push_back((r.index, data.clone()));
        }
        Ok(data)
    }

    async fn uploading(&self, bytes: u64) {
        self.up.acquire(bytes).await;
        if self.honors_session_limits.load(Ordering::Relaxed) {
            self.core.up.acquire(bytes).await;
        }
        self.counters.uploaded.fetch_add(bytes, Ordering::Relaxed);
        self.core.uploaded.fetch_add(bytes, Ordering::Relaxed);
        self.activity.set(Instant::now());
    }

    fn read_quantum(&self) -> usize {
        let session = if self.honors_session_limits.load(Ordering::Relaxed) { self.core.down.rate() } else { 0 };
        match [self.down.rate(), session].into_iter().filter(|r| *r > 0).min() {
            // A twentieth of a second's worth, but never less than a whole block message.
            Some(rate) => (rate / 20).max(2 * BLOCK_SIZE as u64) as usize,
            None => usize::MAX,
        }
    }

    async fn downloading(&self, bytes: u64) {
        self.down.acquire(bytes).await;
        if self.honors_session_limits.load(Ordering::Relaxed) {
            self.core.down.acquire(bytes).await;
        }
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

/// SHA-1 of block `b` (16 KiB) of a piece's data.
fn block_hash(data: &[u8], b: usize) -> [u8; 20] {
    let start = (b * BLOCK_SIZE as usize).min(data.len());
    let end = (start + BLOCK_SIZE as usize).min(data.len());
    Sha1::digest(&data[start..end]).into()
}

/// A torrent whose trackers were not tried (their servers are down) tries them itself this
/// long at most after their next try is due, unless it hears before that they answer again.
const PARKED_SPREAD: Duration = Duration::from_secs(1800);

/// How long a stop waits for the tracker to acknowledge `stopped`.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(3);

/// Bounds on the tracker's interval: no hammering, no silence longer than an hour.
const MIN_REANNOUNCE: Duration = Duration::from_secs(30);
const MAX_REANNOUNCE: Duration = Duration::from_secs(3600);

/// One announce of a run, from the session's timer (`started` first, then at the tracker's
/// interval, `completed` when the download completes; backing off while every tracker fails,
/// the download going on with the peers it has); then puts the next in the schedule.
async fn announce_once(live: Arc<Live>, mut tiers: Tiers, event: Event, generation: u64) {
    let a = live.announce_state(event);
    let result = tiers.announce(&live.core.trackers, &a).await;
    let now = SystemTime::now();
    let mut announcing = live.announcing.lock().unwrap_or_else(|p| p.into_inner());
    // The trackers changed meanwhile: the new ones have their own schedule.
    if live.announce_generation.load(Ordering::Acquire) != generation {
        return;
    }
    let Some(st) = announcing.as_mut() else { return };
    st.task = None;
    // Set when no tracker was even tried (their servers are down, as another torrent found):
    // this one waits to hear they are back.
    let mut parked: Option<String> = None;
    let wait = match result {
        Ok((url, reply)) => {
            info!("{url}: {} peers ({} seeders, {} leechers)", reply.peers.len(), reply.seeders, reply.leechers);
            if let Some(w) = &reply.warning {
                warn!("{url}: {w}");
            }
            live.add_peers(reply.peers.iter().copied(), Source::Tracker);
            st.failures = 0;
            if event == Event::Completed {
                st.completed_sent = true;
                live.completed_sent.store(true, Ordering::Release);
            }
            st.event = Event::None;
            let wait = reply.interval.max(reply.min_interval.unwrap_or_default()).clamp(MIN_REANNOUNCE, MAX_REANNOUNCE);
            live.tracker_result(&url, now, Ok(&reply), now + wait);
            *live.tracker.lock().unwrap_or_else(|p| p.into_inner()) = Some(url);
            wait
        }
        Err(errors) => {
            st.failures += 1;
            // 15 s, 30 s, 1 min … up to 10 min; the event is sent again next time.
            let mut wait =
                Duration::from_secs(15u64 << st.failures.min(6).saturating_sub(1)).min(Duration::from_secs(600));
            if errors.iter().all(|(_, f)| !f.tried) {
                // After the server's next try, at a random moment: one torrent of those
                // waiting tries it then, the others are told without trying.
                parked = errors.first().map(|(url, _)| url.clone());
                let soonest = errors.iter().map(|(_, f)| f.retry_in).min().unwrap_or_default();
                wait = soonest + Duration::from_millis(crate::random_u64() % PARKED_SPREAD.as_millis() as u64);
            }
            for (url, f) in &errors {
                if f.tried {
                    warn!("tracker {url}: {}", f.message);
                } else {
                    debug!("tracker {url}: {}", f.message);
                }
                live.tracker_result(url, now, Err(f), now + wait);
            }
            wait
        }
    };
    st.tiers = Some(tiers);
    if *live.stop.borrow() {
        return;
    }
    let mut at = tokio::time::Instant::now() + wait;
    // Asked for while this one was under way (torrent-reannounce): at once.
    if std::mem::take(&mut st.again) {
        at = tokio::time::Instant::now();
    }
    // The download completed meanwhile; a pending (failed) event waits out its backoff instead.
    if st.event == Event::None && !st.completed_sent && live.is_complete() {
        st.event = Event::Completed;
        at = tokio::time::Instant::now();
    }
    if let Some(url) = parked
        && !st.parked
    {
        // The gate tells it when the server answers again (see `server_back`).
        st.parked = live.core.trackers.park(&url, Arc::downgrade(&live) as Weak<dyn tracker::Parked>);
        if !st.parked {
            // It answers already (another torrent's probe got through just now).
            at = at.min(recovery_time());
        }
    }
    live.core.announcer.schedule(&live, &mut st.key, at, &live.runtime);
}

/// When a run that waited on a tracker server announces once the server answers again: within
/// 30 s, at random (thousands of torrents may have waited on the same server).
fn recovery_time() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(crate::random_u64() % 30_000)
}

impl tracker::Parked for Live {
    /// The tracker server this run waited on answers again: its announce comes within 30 s
    /// (spread out: thousands of torrents may have waited on it).
    fn server_back(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let mut announcing = self.announcing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(a) = announcing.as_mut() else { return };
        a.parked = false;
        if a.task.is_some() || *self.stop.borrow() {
            return;
        }
        let at = recovery_time();
        if a.key.is_some_and(|k| k.0 <= at) {
            return;
        }
        self.core.announcer.schedule(&me, &mut a.key, at, &self.runtime);
    }
}

impl Live {
    fn tracker_result(
        &self,
        url: &str,
        at: SystemTime,
        r: Result<&tracker::Reply, &tracker::Failure>,
        next: SystemTime,
    ) {
        let mut trackers = self.trackers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trackers.iter_mut().find(|t| t.url == url) {
            t.last_announce = Some(at);
            t.next_announce = Some(next);
            match r {
                Ok(reply) => {
                    (t.ok, t.refused, t.warned) = (true, false, reply.warning.is_some());
                    t.peers = reply.peers.len() as u32;
                    t.seeders = reply.seeders;
                    t.leechers = reply.leechers;
                    t.message = match &reply.warning {
                        Some(w) => w.clone(),
                        None => "Success".into(),
                    };
                }
                Err(f) => {
                    (t.ok, t.refused, t.warned) = (false, f.answered, false);
                    t.message = f.message.clone();
                }
            }
        }
    }
}

/// A connection that lasted this long was a working one: if it drops, dial again soon.
const STABLE_CONNECTION: Duration = Duration::from_secs(60);
/// The longest wait before dialing again a peer whose connections keep ending early.
const MAX_REDIAL_WAIT: Duration = Duration::from_secs(300);
/// How long a seeding peer leaves alone an address it found seeding.
const SEED_MEMORY: Duration = Duration::from_secs(30 * 60);
/// Between two passes over the addresses to dial, while some are waiting.
const DIAL_EVERY: Duration = Duration::from_millis(250);

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

/// Dials known peers while there is room, with backoff for those that fail. Sleeps while
/// nothing is due: until the next address's wait ends, or until woken (new addresses, a freed
/// slot), so an idle torrent costs nothing. Ends when the run's tasks are aborted.
async fn dial_loop(live: Arc<Live>) {
    loop {
        let (to_dial, next_due) = live.dial_pass(Instant::now());
        for addr in to_dial {
            tokio::spawn(dial(live.clone(), addr));
        }
        // A wake while we dialed left a permit: this returns at once then.
        let wake = live.net().dial_wake.notified();
        match next_due {
            Some(t) => {
                let at = t.max(Instant::now() + DIAL_EVERY);
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = wake => tokio::time::sleep(DIAL_EVERY).await,
                }
            }
            None => {
                wake.await;
                tokio::time::sleep(DIAL_EVERY).await;
            }
        }
    }
}

impl Live {
    /// The addresses to dial now (marked as being dialed), and when the next one is due.
    fn dial_pass(&self, now: Instant) -> (Vec<SocketAddr>, Option<Instant>) {
        let s = self.core.settings();
        let (per_ip, global_room) =
            (s.max_peers_per_ip, s.max_connections.saturating_sub(self.core.connections.load(Ordering::Acquire)));
        drop(s);
        let mut st = self.state();
        let connected: HashSet<SocketAddr> =
            st.peers.values().flat_map(|p| [Some(p.addr), p.listen]).flatten().collect();
        let room = self.max_peers().saturating_sub(st.peers.len() + st.connecting.len()).min(global_room);
        // Connections and dials per address, against the per-address limit.
        let mut at_ip: HashMap<IpAddr, usize> = HashMap::new();
        for ip in st.peers.values().map(|p| p.addr.ip()).chain(st.connecting.iter().map(|a| a.ip())) {
            *at_ip.entry(ip).or_default() += 1;
        }
        let seeding = st.picker.is_complete();
        let st = &mut *st;
        let mut picked: Vec<SocketAddr> = Vec::new();
        let mut next_due: Option<Instant> = None;
        for (a, k) in &st.known {
            // Ourselves, or a seed while we seed: nothing to exchange.
            let pointless = k.ourselves || (seeding && k.seed_at.is_some_and(|t| now.duration_since(t) < SEED_MEMORY));
            if pointless || connected.contains(a) || st.banned.contains(&a.ip()) || st.connecting.contains(a) {
                continue;
            }
            if let Some(t) = k.next_try.filter(|t| *t > now) {
                next_due = Some(next_due.map_or(t, |d| d.min(t)));
                continue;
            }
            let n = at_ip.get(&a.ip()).copied().unwrap_or(0);
            if picked.len() < room && (per_ip == 0 || n < per_ip) {
                *at_ip.entry(a.ip()).or_default() += 1;
                picked.push(*a);
            } else if picked.len() < room {
                // Waits for the address's other connection to end (which wakes us).
            }
        }
        for a in &picked {
            st.connecting.insert(*a);
        }
        (picked, next_due)
    }
}

/// One dial, with the encryption the settings ask for, and what its end means for the next.
async fn dial(live: Arc<Live>, addr: SocketAddr) {
    let (policy, local) = {
        let s = live.core.settings();
        (s.outgoing_encryption, s.listen.ip())
    };
    // The fallback is the next dial's (`plaintext_next`), not this one's.
    let offers = policy.offers();
    let fall_back = live.state().known.get(&addr).is_some_and(|k| k.plaintext_next);
    let mse = if fall_back { *offers.last().unwrap_or(&None) } else { offers[0] };
    let result = tokio::time::timeout(Duration::from_secs(10), connect_from(local, addr)).await;
    let ok = matches!(result, Ok(Ok(_)));
    {
        let mut st = live.state();
        st.connecting.remove(&addr);
        if let Some(k) = st.known.get_mut(&addr) {
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
    }
    match result {
        Ok(Ok(stream)) => {
            let started = Instant::now();
            let ended = conn::dial(live.clone(), stream, addr, mse).await;
            let now = Instant::now();
            let mut st = live.state();
            let Some(k) = st.known.get_mut(&addr) else { return };
            match ended {
                conn::Ended::Closed { seed } => {
                    k.seed_at = seed.then_some(now);
                    // Not sooner than a wait set while it ran (closed as useless).
                    k.next_try = k.next_try.max(Some(now + redial_after(k, started.elapsed())));
                }
                conn::Ended::Refused => k.next_try = Some(now + REFUSED_BACKOFF),
                conn::Ended::HandshakeFailed => {
                    k.next_try = Some(now + redial_after(k, Duration::ZERO));
                    if policy == Outgoing::Prefer {
                        // Like libtorrent: a peer that fails the MSE handshake is tried again at
                        // once in plaintext; one that fails that gets MSE next time.
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
    live.wake_dialer();
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

/// Every 10 s while there are connections: unchoke the fastest interested peers plus one
/// optimistic, choke the rest; and make room for dialing when every slot is taken by useless
/// connections (peer turnover). Sleeps while there is no connection.
async fn choke_loop(live: Arc<Live>) {
    let mut round: u32 = 0;
    loop {
        let wake = live.net().choke_wake.notified();
        if live.state().peers.is_empty() {
            wake.await;
        }
        tokio::time::sleep(choker::RECHOKE_EVERY).await;
        live.rechoke(round);
        round = round.wrapping_add(1);
    }
}

impl Live {
    fn rechoke(&self, round: u32) {
        let slots = self.core.settings().upload_slots;
        let mut st = self.state();
        if st.peers.is_empty() {
            return;
        }
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
                let totals = (p.stats.downloaded.load(Ordering::Relaxed), p.stats.uploaded.load(Ordering::Relaxed));
                let secs = choker::RECHOKE_EVERY.as_secs().max(1);
                p.rates =
                    (totals.0.saturating_sub(p.last_totals.0) / secs, totals.1.saturating_sub(p.last_totals.1) / secs);
                p.last_totals = totals;
                Candidate { key: *k, interested: p.stats.peer_interested.load(Ordering::Relaxed), rate }
            })
            .collect();
        // Peer turnover: with every slot taken while addresses wait to be dialed, the connection
        // that has been useless longest makes room (one a minute).
        let now = Instant::now();
        if round.is_multiple_of(TURNOVER_EVERY)
            && st.peers.len() >= self.max_peers()
            && st.known.iter().any(|(a, k)| {
                k.next_try.is_none_or(|t| t <= now) && !k.ourselves && !st.banned.contains(&a.ip()) && {
                    let connected = st.peers.values().any(|p| p.addr == *a || p.listen == Some(*a));
                    !connected && self.ip_allows(&st, a.ip())
                }
            })
            && let Some(victim) = useless_peer(&st, now)
        {
            self.close_useless(&mut st, victim);
        }
        let rotate = round.is_multiple_of(choker::OPTIMISTIC_EVERY);
        let (unchoke, optimistic) = choker::choose(&candidates, slots, st.optimistic, rotate, crate::random_u64());
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
        let mut k = Known::new(Source::Tracker);
        let early = Duration::from_secs(1);
        let waits: Vec<u64> = (0..10).map(|_| redial_after(&mut k, early).as_secs()).collect();
        assert_eq!(waits, [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // A connection that worked for a while resets it.
        assert_eq!(redial_after(&mut k, STABLE_CONNECTION), Duration::from_secs(2));
        assert_eq!(redial_after(&mut k, early), Duration::from_secs(4));
    }
}
