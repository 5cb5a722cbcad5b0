//! One torrent of a session over its whole life: its metadata (fetched first for a magnet
//! link), the check of its data, its turn in the queue, its runs, and the commands that move it
//! between them. Each torrent has one task, [`drive`], that owns these moves; the rest of the
//! session only sends it commands and reads its state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bitswarm_metainfo::{InfoHash, Magnet, Metainfo};
use bitswarm_storage::PieceState;
use bitswarm_wire::Bitfield;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::core::Core;
use crate::live::{Counters, Live, LiveConfig, PeerInfo, Source, TrackerStatus};
use crate::metadata::{MetadataQuery, fetch_metadata};
use crate::queue::{Kind, Queue};
use crate::rate::RateMeter;

/// Where a torrent is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A magnet link's info dictionary is being fetched from peers.
    FetchingMetadata,
    /// Waiting for its turn to check its data.
    CheckQueued,
    /// Checking the data on disk.
    Checking,
    /// Waiting for a download slot (the queue is full).
    DownloadQueued,
    Downloading,
    /// Every piece is here; waiting for a seeding slot.
    SeedQueued,
    Seeding,
    Stopped,
    /// Stopped by an error, with its reason (a write failed, data missing for a seed).
    Error(String),
}

impl State {
    /// Running, or waiting to run (not stopped, not in error).
    pub fn is_active(&self) -> bool {
        !matches!(self, State::Stopped | State::Error(_))
    }
}

/// The .torrent file or the magnet link a torrent is added from.
#[derive(Debug, Clone)]
pub enum AddSource {
    Metainfo(Arc<Metainfo>),
    Magnet(Magnet),
}

/// A torrent to add to a session.
#[derive(Debug, Clone)]
pub struct AddTorrent {
    pub source: AddSource,
    /// The folder that holds (or will hold) the torrent's content.
    pub dir: PathBuf,
    /// Added stopped.
    pub paused: bool,
    /// The data must all be there already (`bitswarm seed`): it is never written, and a check
    /// that finds pieces missing is an error.
    pub seed_only: bool,
    /// Peers to dial besides those of trackers.
    pub peers: Vec<SocketAddr>,
    /// Announce to no tracker.
    pub no_trackers: bool,
    /// Connections of this torrent; None: the session's default.
    pub max_peers: Option<usize>,
}

impl AddTorrent {
    pub fn new(source: AddSource, dir: PathBuf) -> AddTorrent {
        AddTorrent {
            source,
            dir,
            paused: false,
            seed_only: false,
            peers: Vec::new(),
            no_trackers: false,
            max_peers: None,
        }
    }
}

/// The check of a torrent's data on disk: how far it has come (bytes), and a switch that stops
/// it.
#[derive(Debug, Default)]
pub struct Check {
    pub done: AtomicU64,
    pub stop: std::sync::atomic::AtomicBool,
}

/// A snapshot for displays and the RPC.
#[derive(Debug, Clone)]
pub struct TorrentStats {
    pub state: State,
    pub name: String,
    /// 0 until a magnet link's metadata has come.
    pub total: u64,
    /// Verified bytes on disk.
    pub have: u64,
    pub pieces_have: usize,
    pub pieces: usize,
    /// Payload bytes received and sent, since the torrent was added.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received that were not used (duplicates, failed pieces).
    pub wasted: u64,
    pub corrupt: u64,
    pub hash_failures: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub peers: usize,
    pub banned: usize,
    /// Every piece is verified.
    pub complete: bool,
    /// How long after its run started the last piece was verified.
    pub completed_after: Option<Duration>,
    /// Bytes checked so far while checking.
    pub checked: u64,
    pub added_at: SystemTime,
}

/// What the user asked of a torrent; the driver works towards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Wish {
    run: bool,
    /// Bypasses the queue (`torrent-start-now`).
    force: bool,
    /// Bumped by each request to check the data again.
    verify: u64,
}

pub(crate) struct Torrent {
    pub id: u32,
    pub info_hash: InfoHash,
    core: Arc<Core>,
    queue: Arc<Queue>,
    meta: RwLock<Option<Arc<Metainfo>>>,
    magnet: Option<Magnet>,
    dir: Mutex<PathBuf>,
    seed_only: bool,
    peers: Vec<SocketAddr>,
    no_trackers: bool,
    max_peers: Mutex<Option<usize>>,
    pub added_at: SystemTime,
    wish: watch::Sender<Wish>,
    state: watch::Sender<State>,
    /// The verified pieces as last known (kept while stopped).
    have: Mutex<Option<Bitfield>>,
    live: Mutex<Option<Arc<Live>>>,
    pub counters: Arc<Counters>,
    check: Mutex<Arc<Check>>,
    meters: Mutex<(RateMeter, RateMeter)>,
    /// The data was checked (or trusted) since the torrent was added.
    checked: AtomicBool,
    /// The queue position: lower goes first.
    pub position: AtomicU64,
    /// Taken out of the session: its driver ends once it has stopped.
    retired: AtomicBool,
    /// For a magnet link: the size of the metadata and the peer that gave it.
    pub metadata_from: Mutex<Option<(usize, SocketAddr)>>,
}

impl Torrent {
    pub fn new(core: Arc<Core>, queue: Arc<Queue>, id: u32, add: AddTorrent) -> Arc<Torrent> {
        let (meta, magnet, info_hash) = match add.source {
            AddSource::Metainfo(m) => (Some(m.clone()), None, m.info_hash),
            AddSource::Magnet(m) => (None, Some(m.clone()), m.info_hash),
        };
        let mut peers = add.peers;
        for p in magnet.iter().flat_map(|m| &m.peers) {
            match p.parse() {
                Ok(a) if !peers.contains(&a) => peers.push(a),
                Ok(_) => {}
                Err(_) => warn!("x.pe={p}: not an IP:PORT address; skipped"),
            }
        }
        Arc::new(Torrent {
            id,
            info_hash,
            core,
            queue,
            meta: RwLock::new(meta),
            magnet,
            dir: Mutex::new(add.dir),
            seed_only: add.seed_only,
            peers,
            no_trackers: add.no_trackers,
            max_peers: Mutex::new(add.max_peers),
            added_at: SystemTime::now(),
            wish: watch::channel(Wish { run: !add.paused, force: false, verify: 0 }).0,
            state: watch::channel(if add.paused { State::Stopped } else { State::CheckQueued }).0,
            have: Mutex::new(None),
            live: Mutex::new(None),
            counters: Arc::default(),
            check: Mutex::new(Arc::default()),
            meters: Mutex::new((RateMeter::default(), RateMeter::default())),
            checked: AtomicBool::new(false),
            position: AtomicU64::new(u64::from(id)),
            retired: AtomicBool::new(false),
            metadata_from: Mutex::new(None),
        })
    }

    pub fn meta(&self) -> Option<Arc<Metainfo>> {
        self.meta.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn name(&self) -> String {
        match (self.meta(), &self.magnet) {
            (Some(m), _) => m.info.name.clone(),
            (None, Some(Magnet { name: Some(n), .. })) => n.clone(),
            _ => self.info_hash.to_hex(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    fn set_state(&self, s: State) {
        self.state.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }

    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn start(&self, force: bool) {
        self.wish.send_modify(|w| {
            w.run = true;
            w.force |= force;
        });
    }

    pub fn stop(&self) {
        self.wish.send_modify(|w| {
            w.run = false;
            w.force = false;
        });
    }

    pub fn verify(&self) {
        self.wish.send_modify(|w| w.verify += 1);
    }

    /// Stops it for good: its driver ends.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.stop();
    }

    pub fn set_max_peers(&self, n: Option<usize>) {
        *self.max_peers.lock().unwrap_or_else(|p| p.into_inner()) = n;
        if let Some(l) = self.live() {
            l.set_max_peers(n.unwrap_or_else(|| self.core.settings().max_peers_per_torrent));
        }
    }

    /// The verified pieces (from the run when there is one).
    pub fn have(&self) -> Option<Bitfield> {
        match self.live() {
            Some(l) => Some(l.have_now()),
            None => self.have.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    pub fn stats(&self) -> TorrentStats {
        let c = &self.counters;
        let downloaded = c.downloaded.load(Ordering::Relaxed);
        let uploaded = c.uploaded.load(Ordering::Relaxed);
        let (down_rate, up_rate) = {
            let mut m = self.meters.lock().unwrap_or_else(|p| p.into_inner());
            (m.0.sample(downloaded), m.1.sample(uploaded))
        };
        let meta = self.meta();
        let live = self.live();
        let have = self.have();
        let (pieces_have, pieces) =
            have.as_ref().map_or((0, meta.as_ref().map_or(0, |m| m.info.piece_count())), |h| (h.count(), h.len()));
        let have_bytes = match (&meta, &have) {
            (Some(m), Some(h)) => h.ones().map(|i| m.info.piece_size(i)).sum(),
            _ => 0,
        };
        let (peers, banned) = live.as_ref().map_or((0, 0), |l| l.peer_counts());
        TorrentStats {
            state: self.state(),
            name: self.name(),
            total: meta.as_ref().map_or(0, |m| m.info.total_length),
            have: have_bytes,
            pieces_have,
            pieces,
            downloaded,
            uploaded,
            wasted: c.wasted.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            hash_failures: c.hash_failures.load(Ordering::Relaxed),
            down_rate,
            up_rate,
            peers,
            banned,
            complete: have.as_ref().is_some_and(|h| h.is_full()),
            completed_after: live.as_ref().and_then(|l| l.completed_after()),
            checked: self.check.lock().unwrap_or_else(|p| p.into_inner()).done.load(Ordering::Relaxed),
            added_at: self.added_at,
        }
    }

    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.live().map(|l| l.peer_list()).unwrap_or_default()
    }

    pub fn tracker_list(&self) -> Vec<TrackerStatus> {
        self.live().map(|l| l.trackers.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }

    /// The trackers to announce to.
    fn trackers(&self, meta: &Metainfo) -> Vec<Vec<String>> {
        if self.no_trackers { Vec::new() } else { meta.trackers() }
    }
}

/// Why a run ended.
enum RunEnd {
    /// Stopped by the user, or the session is ending.
    Stopped,
    /// A check was asked for.
    Verify,
    /// Every piece is here, and no seeding slot is free: wait for one.
    Requeue,
    Failed(String),
}

/// The torrent's life: fetch the metadata, check, wait for a turn, run; and again after each
/// command. Ends when the session drops the torrent (its wish channel closes).
pub(crate) async fn drive(t: Arc<Torrent>) {
    let mut wish = t.wish.subscribe();
    let mut verified_for = wish.borrow().verify;
    loop {
        let w = *wish.borrow_and_update();
        if !w.run {
            if !matches!(t.state(), State::Error(_)) {
                t.set_state(State::Stopped);
            }
            if t.retired.load(Ordering::Acquire) {
                return;
            }
            if wish.changed().await.is_err() {
                return;
            }
            continue;
        }
        // 1. The metadata of a magnet link.
        let meta = match t.meta() {
            Some(m) => m,
            None => {
                t.set_state(State::FetchingMetadata);
                tokio::select! {
                    r = fetch(&t) => match r {
                        Ok(m) => {
                            *t.meta.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
                            m
                        }
                        Err(e) => {
                            t.set_state(State::Error(e));
                            t.stop();
                            continue;
                        }
                    },
                    r = wish.changed() => {
                        if r.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        // 2. The check of the data on disk (once, and again when asked).
        if !t.checked.load(Ordering::Acquire) || w.verify != verified_for {
            verified_for = w.verify;
            match check(&t, &meta, &mut wish).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    t.set_state(State::Error(e));
                    t.stop();
                    continue;
                }
                None if wish.has_changed().is_err() => return,
                None => continue,
            }
        }
        // 3. A turn in the queue.
        let have = t.have().unwrap_or_else(|| Bitfield::new(meta.info.piece_count()));
        let kind = if have.is_full() { Kind::Seed } else { Kind::Download };
        t.set_state(if kind == Kind::Seed { State::SeedQueued } else { State::DownloadQueued });
        let slot = tokio::select! {
            s = t.queue.acquire(t.id, &t.position, kind, w.force) => s,
            r = wish.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        // 4. A run.
        t.set_state(if kind == Kind::Seed { State::Seeding } else { State::Downloading });
        let max_peers = t
            .max_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| t.core.settings().max_peers_per_torrent);
        let cfg = LiveConfig {
            dir: t.dir(),
            writable: !t.seed_only,
            trackers: t.trackers(&meta),
            peers: t.peers.iter().map(|a| (*a, Source::Given)).collect(),
            max_peers,
            max_upload_rate: 0,
            max_download_rate: 0,
        };
        let live = match Live::start(t.core.clone(), meta.clone(), have, cfg, t.counters.clone()).await {
            Ok(l) => l,
            Err(e) => {
                drop(slot);
                t.set_state(State::Error(e));
                t.stop();
                continue;
            }
        };
        *t.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
        let end = run(&t, &live, &slot, &mut wish, verified_for).await;
        live.shutdown().await;
        *t.have.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.have_now());
        *t.live.lock().unwrap_or_else(|p| p.into_inner()) = None;
        drop(slot);
        match end {
            RunEnd::Stopped | RunEnd::Requeue => {}
            RunEnd::Verify => t.checked.store(false, Ordering::Release),
            RunEnd::Failed(e) => {
                t.set_state(State::Error(e));
                t.stop();
            }
        }
        if wish.has_changed().is_err() {
            return;
        }
    }
}

/// Waits for what ends a run: a command, an error, or completion when no seeding slot is free
/// (with one free, the run goes on as a seed).
async fn run(
    t: &Torrent,
    live: &Live,
    slot: &crate::queue::Slot,
    wish: &mut watch::Receiver<Wish>,
    verified_for: u64,
) -> RunEnd {
    let mut complete = live.is_complete();
    loop {
        tokio::select! {
            r = wish.changed() => {
                let w = *wish.borrow_and_update();
                if r.is_err() || !w.run {
                    return RunEnd::Stopped;
                }
                if w.verify != verified_for {
                    return RunEnd::Verify;
                }
            }
            m = live.wait_fatal() => return RunEnd::Failed(m),
            _ = live.wait_complete(), if !complete => {
                complete = true;
                if !slot.switch(Kind::Seed) {
                    return RunEnd::Requeue;
                }
                t.set_state(State::Seeding);
            }
        }
    }
}

/// Checks the data on disk when its turn comes. None when a command came first (the check,
/// if it had begun, stops within a batch of pieces).
async fn check(t: &Torrent, meta: &Arc<Metainfo>, wish: &mut watch::Receiver<Wish>) -> Option<Result<(), String>> {
    t.set_state(State::CheckQueued);
    let _permit = tokio::select! {
        p = t.queue.checking() => p,
        _ = wish.changed() => return None,
    };
    t.set_state(State::Checking);
    let c = Arc::new(Check::default());
    *t.check.lock().unwrap_or_else(|p| p.into_inner()) = c.clone();
    let started = Instant::now();
    let layout = bitswarm_storage::Layout::new(&meta.info, &t.dir());
    let (expected, threads) = (meta.clone(), t.core.settings().check_threads);
    let job = {
        let c = c.clone();
        tokio::task::spawn_blocking(move || {
            bitswarm_storage::verify_pieces(&layout, &expected.info.pieces, threads, &c.done, &c.stop)
        })
    };
    tokio::pin!(job);
    let states = tokio::select! {
        r = &mut job => r,
        _ = wish.changed() => {
            c.stop.store(true, Ordering::Release);
            let _ = job.await;
            return None;
        }
    };
    let states = match states {
        Ok(s) => s,
        Err(e) => return Some(Err(format!("the check failed: {e}"))),
    };
    let mut have = Bitfield::new(states.len());
    for (i, s) in states.iter().enumerate() {
        if *s == PieceState::Good {
            have.set(i);
        }
    }
    info!(
        "{}: checked in {:.1} s: {} of {} pieces",
        meta.info.name,
        started.elapsed().as_secs_f64(),
        have.count(),
        have.len()
    );
    if t.seed_only && !have.is_full() {
        return Some(Err(format!(
            "{}: {} of {} pieces are missing or damaged; `bitswarm join` downloads the rest",
            t.dir().display(),
            have.len() - have.count(),
            have.len()
        )));
    }
    *t.have.lock().unwrap_or_else(|p| p.into_inner()) = Some(have);
    t.checked.store(true, Ordering::Release);
    Some(Ok(()))
}

/// The info dictionary of a magnet link, from its peers and trackers, checked against the
/// info-hash.
async fn fetch(t: &Torrent) -> Result<Arc<Metainfo>, String> {
    let magnet = t.magnet.as_ref().ok_or("no metadata and no magnet link")?;
    let s = t.core.settings().clone();
    let q = MetadataQuery {
        info_hash: t.info_hash,
        peer_id: t.core.peer_id,
        port: t.core.listen_addr.port(),
        local: s.listen.ip(),
        peers: t.peers.clone(),
        trackers: if t.no_trackers { Vec::new() } else { magnet.trackers.clone() },
        encryption: s.outgoing_encryption,
    };
    let name = t.name();
    let (info, from) = fetch_metadata(&q, |m| info!("{name}: metadata: {m}")).await?;
    info!("{name}: metadata: {} bytes from {from}", info.len());
    *t.metadata_from.lock().unwrap_or_else(|p| p.into_inner()) = Some((info.len(), from));
    let meta = Metainfo::from_info_bytes(&info, &magnet.trackers).map_err(|e| format!("metadata from {from}: {e}"))?;
    if meta.info_hash != t.info_hash {
        // The bytes hashed right; parsed, they must still be that dictionary and nothing else.
        return Err(format!("metadata from {from} is not one info dictionary"));
    }
    Ok(Arc::new(meta))
}
