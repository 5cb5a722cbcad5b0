//! What every torrent of a session shares: the settings, our peer id and listening address,
//! the hashing threads, the rate limits and the count of connections. Torrents reach it through
//! an `Arc<Core>`; it knows nothing of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bitswarm_wire::mse::{CRYPTO_PLAINTEXT, CRYPTO_RC4};

use crate::rate::Limiter;

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

/// How a session behaves. Fields under "may change" are read again each time they are used,
/// so [`crate::Session::set_settings`] takes effect at once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen for peers (port 0: any free port).
    pub listen: SocketAddr,
    pub peer_id: [u8; 20],
    /// Threads for checking data on disk (per torrent being checked).
    pub check_threads: usize,
    // May change:
    /// Connections at once, over every torrent.
    pub max_connections: usize,
    /// Connections of one torrent, unless the torrent says otherwise.
    pub max_peers_per_torrent: usize,
    /// Connections to and from one IP address, per torrent; 0 for no limit. One by default, as
    /// libtorrent does: a client runs one connection per torrent, and one address cannot take
    /// every slot.
    pub max_peers_per_ip: usize,
    /// Regular unchoke slots per torrent (one optimistic slot comes on top).
    pub upload_slots: usize,
    /// Bytes per second over every torrent; 0 for no limit.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// Peers asked of a tracker per announce.
    pub numwant: u32,
    /// A peer that alone sent this many pieces that failed their hash is banned (a peer whose
    /// blocks are proven bad once the piece passes is banned at once).
    pub ban_strikes: u32,
    pub outgoing_encryption: Outgoing,
    pub incoming_encryption: Incoming,
    /// Torrents downloading at once (the others wait their turn in queue order); None: no limit.
    pub max_downloading: Option<usize>,
    /// Torrents seeding at once; None: no limit.
    pub max_seeding: Option<usize>,
    /// Torrents whose data is checked at once.
    pub max_checking: usize,
    /// A running torrent through which no data moved for this long is stalled: its queue slot
    /// no longer counts against [`Settings::max_downloading`] or [`Settings::max_seeding`]
    /// (Transmission's `queue-stalled-minutes`); None: never.
    pub queue_stalled: Option<std::time::Duration>,
    /// Seeding stops at this upload ratio, unless a torrent says otherwise.
    pub seed_ratio: Option<f64>,
    /// Seeding stops after this many minutes without uploading.
    pub seed_idle_minutes: Option<u64>,
    /// Seeding stops after this many minutes of seeding.
    pub seed_time_minutes: Option<u64>,
    /// Local Service Discovery (BEP 14): public torrents are announced on the local network's
    /// multicast groups, and peers announced there are dialed. Off by default here; the
    /// commands turn it on. Without [`Settings::lsd_groups`] it stays off.
    pub lsd: bool,
    // Fixed for the session's life:
    /// The multicast groups (address and port) of Local Service Discovery; none: no LSD at all,
    /// whatever [`Settings::lsd`] says.
    pub lsd_groups: Vec<SocketAddr>,
    /// Run a Mainline DHT node (BEP 5) on UDP at the listening address and port, which public
    /// torrents ask for peers and announce themselves to. Off by default here; the commands
    /// turn it on.
    pub dht: bool,
    /// `HOST:PORT` of the routers the node bootstraps through.
    pub dht_routers: Vec<String>,
    /// The file the routing table is kept in across restarts (read at start, before the
    /// routers are asked).
    pub dht_state: Option<std::path::PathBuf>,
}

impl Settings {
    pub fn new(listen: SocketAddr) -> Settings {
        Settings {
            listen,
            peer_id: crate::new_peer_id(),
            check_threads: bitswarm_storage::cores(),
            max_connections: 500,
            max_peers_per_torrent: 60,
            max_peers_per_ip: 1,
            upload_slots: 4,
            max_upload_rate: 0,
            max_download_rate: 0,
            numwant: 50,
            ban_strikes: 2,
            outgoing_encryption: Outgoing::Plaintext,
            incoming_encryption: Incoming::Any,
            max_downloading: None,
            max_seeding: None,
            max_checking: 2,
            queue_stalled: None,
            seed_ratio: None,
            seed_idle_minutes: None,
            seed_time_minutes: None,
            lsd: false,
            lsd_groups: crate::lsd::default_groups(),
            dht: false,
            dht_routers: crate::dht::DEFAULT_ROUTERS.iter().map(|r| r.to_string()).collect(),
            dht_state: None,
        }
    }
}

/// A piece to hash: when done, `done(data, matched)` runs on the hashing thread (it writes the
/// piece when it matched, and hands the buffer back).
pub(crate) struct HashJob {
    pub data: Vec<u8>,
    pub expected: [u8; 20],
    pub done: Box<dyn FnOnce(Vec<u8>, bool) + Send>,
}

pub(crate) struct Core {
    pub peer_id: [u8; 20],
    /// Where peers reach us; its port may change while the session runs
    /// ([`crate::Session::set_port`]).
    listen_addr: Mutex<SocketAddr>,
    settings: RwLock<Settings>,
    pub up: Limiter,
    pub down: Limiter,
    /// Registered connections, over every torrent.
    pub connections: AtomicUsize,
    /// Payload bytes over every torrent, since the session started.
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    hash_tx: Mutex<std::sync::mpsc::Sender<HashJob>>,
    /// Which tracker servers answer (shared by every torrent's announces).
    pub trackers: crate::tracker::Gate,
    /// The session's DHT node, if it runs one (it may start and stop).
    pub dht: crate::dht::DhtSlot,
    /// The session's Local Service Discovery, if it has groups (on or off as the settings say).
    pub lsd: Option<crate::lsd::LsdHandle>,
    /// When each running torrent announces next.
    pub(crate) announcer: Arc<crate::announcer::Announcer>,
    /// Torrents that changed since the last [`take_changed`](Core::take_changed): what keeps
    /// state looks at these alone, not at every torrent.
    changed: Mutex<std::collections::HashSet<u32>>,
    /// Bumped when a listing would look different at once: a torrent's state or settings
    /// changed, one was added or removed, or one got its first peer (its figures start to
    /// move). What wakes the RPC's held requests.
    events: tokio::sync::watch::Sender<u64>,
    /// Addresses no peer may come from or be dialed at (see [`crate::Session::set_blocklist`]).
    blocklist: RwLock<Option<Arc<crate::Blocklist>>>,
    /// See [`crate::Session::set_journal`].
    journal: RwLock<Option<Journal>>,
}

/// Keeps a torrent's record (its settings, its folder) on disk, and resolves once it is there,
/// or with why it could not; given the torrent's id. See [`crate::Session::set_journal`].
pub type Journal =
    Arc<dyn Fn(u32) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> + Send + Sync>;

impl Core {
    /// Starts the hashing threads (one per core: they hash several pieces at once with the
    /// multi-buffer SHA-1); they end when the core is dropped.
    pub fn new(
        settings: Settings,
        listen_addr: SocketAddr,
        dht: Option<crate::dht::DhtHandle>,
        lsd: Option<crate::lsd::LsdHandle>,
    ) -> std::io::Result<Arc<Core>> {
        let (hash_tx, hash_rx) = std::sync::mpsc::channel();
        let rx = Arc::new(Mutex::new(hash_rx));
        for i in 0..bitswarm_storage::cores() {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("bitswarm-hash-{i}")).spawn(move || hash_worker(rx))?;
        }
        Ok(Arc::new(Core {
            peer_id: settings.peer_id,
            listen_addr: Mutex::new(listen_addr),
            up: Limiter::new(settings.max_upload_rate),
            down: Limiter::new(settings.max_download_rate),
            settings: RwLock::new(settings),
            connections: AtomicUsize::new(0),
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            hash_tx: Mutex::new(hash_tx),
            trackers: crate::tracker::Gate::default(),
            dht: crate::dht::DhtSlot::new(dht),
            lsd,
            announcer: crate::announcer::Announcer::new(),
            changed: Mutex::new(std::collections::HashSet::new()),
            events: tokio::sync::watch::Sender::new(0),
            blocklist: RwLock::new(None),
            journal: RwLock::new(None),
        }))
    }

    /// Whether a peer at `ip` is blocked (a blocklist in force holds it).
    pub fn blocked(&self, ip: std::net::IpAddr) -> bool {
        self.blocklist.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|b| b.contains(ip))
    }

    /// The blocklist in force, if any.
    pub(crate) fn blocklist(&self) -> Option<Arc<crate::Blocklist>> {
        self.blocklist.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_blocklist(&self, list: Option<Arc<crate::Blocklist>>) {
        *self.blocklist.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    pub(crate) fn set_journal(&self, journal: Journal) {
        *self.journal.write().unwrap_or_else(|p| p.into_inner()) = Some(journal);
    }

    /// Has torrent `id`'s record kept on disk, when there is a journal; waits until it is.
    pub(crate) async fn journal(&self, id: u32) -> Result<(), String> {
        let j = self.journal.read().unwrap_or_else(|p| p.into_inner()).clone();
        match j {
            Some(j) => j(id).await,
            None => Ok(()),
        }
    }

    /// Where peers reach us: what every peer source (trackers, DHT, LSD, the extension
    /// handshake) announces.
    pub fn listen_addr(&self) -> SocketAddr {
        *self.listen_addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session listens on another port now.
    pub(crate) fn set_listen_addr(&self, addr: SocketAddr) {
        *self.listen_addr.lock().unwrap_or_else(|p| p.into_inner()) = addr;
        self.settings.write().unwrap_or_else(|p| p.into_inner()).listen = addr;
    }

    pub fn settings(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what may change; returns the settings now in force.
    pub fn update(&self, f: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let (listen, peer_id, dht) = (s.listen, s.peer_id, s.dht);
        let (routers, state, groups) = (s.dht_routers.clone(), s.dht_state.clone(), s.lsd_groups.clone());
        f(&mut s);
        // Fixed for the session's life.
        (s.listen, s.peer_id, s.dht) = (listen, peer_id, dht);
        (s.dht_routers, s.dht_state, s.lsd_groups) = (routers, state, groups);
        if let Some(l) = &self.lsd {
            l.set_enabled(s.lsd);
        }
        self.up.set_rate(s.max_upload_rate);
        self.down.set_rate(s.max_download_rate);
        let now = s.clone();
        drop(s);
        now
    }

    /// Torrent `id` changed (its state, settings or verified pieces).
    pub fn mark_changed(&self, id: u32) {
        self.changed.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
    }

    /// A listing would look different now (see [`Core::events`]).
    pub fn bump(&self) {
        self.events.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver that sees every [`bump`](Core::bump).
    pub fn events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// The torrents that changed since the last call.
    pub fn take_changed(&self) -> std::collections::HashSet<u32> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Queues a piece for hashing. Err (with the job) when the hashing threads are gone.
    pub fn hash(&self, job: HashJob) -> Result<(), HashJob> {
        self.hash_tx.lock().unwrap_or_else(|p| p.into_inner()).send(job).map_err(|e| e.0)
    }

    pub fn count_connection(&self, up: bool) {
        if up {
            self.connections.fetch_add(1, Ordering::AcqRel);
        } else {
            self.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A hashing thread: takes every piece waiting (up to the SIMD lanes of the multi-buffer
/// SHA-1), hashes them together, and reports each. Ends when the channel closes.
fn hash_worker(rx: Arc<Mutex<std::sync::mpsc::Receiver<HashJob>>>) {
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
        let datas: Vec<&[u8]> = jobs.iter().map(|j| &j.data[..]).collect();
        let digests = bitswarm_piecehash::sha1_many(&datas);
        for (job, digest) in jobs.into_iter().zip(digests) {
            let HashJob { data, expected, done } = job;
            done(data, digest == expected);
        }
    }
}
