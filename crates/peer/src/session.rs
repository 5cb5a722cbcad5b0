//! The session: one per process. It owns the listening socket, the hashing threads, the rate
//! limits, the connection limits, our peer id and the torrents by info-hash. An incoming
//! handshake, plaintext or MSE, is routed to the torrent it names.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bitswarm_metainfo::InfoHash;
use bitswarm_wire::mse::req2_digest;
use tokio::net::TcpListener;
use tracing::debug;

use crate::conn;
use crate::core::{Core, Incoming, Settings};
use crate::live::{PeerInfo, Source, TrackerStatus};
use crate::queue::Queue;
use crate::torrent::{AddTorrent, FileOp, State, Torrent, TorrentStats, drive};

/// Where [`Session::queue_move`] moves torrents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMove {
    Top,
    Up,
    Down,
    Bottom,
}

/// Incoming connections in their handshake at once (each lasts 10 s at most): more are closed
/// as they come, so a flood of connections that never finish their handshake costs nothing.
const MAX_HANDSHAKES: usize = 32;
/// Of those, from one address: a peer with several of our torrents dials each at once (the
/// limit of connections per address applies per torrent, once the handshake names it).
const MAX_HANDSHAKES_PER_IP: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot start the hashing threads: {0}")]
    Threads(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The session has this torrent already.
    #[error("already added (torrent {0})")]
    Duplicate(TorrentHandle),
}

/// The torrents and the indexes over them.
#[derive(Default)]
struct Torrents {
    by_id: BTreeMap<u32, Arc<Torrent>>,
    by_hash: HashMap<[u8; 20], u32>,
    /// `HASH('req2', info-hash)` → info-hash, for MSE handshakes.
    by_req2: HashMap<[u8; 20], [u8; 20]>,
}

struct Inner {
    core: Arc<Core>,
    queue: Arc<Queue>,
    torrents: RwLock<Torrents>,
    next_id: AtomicU32,
    /// Incoming connections in their handshake, by address.
    handshaking: Mutex<HashMap<IpAddr, usize>>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One change of the peer port at a time.
    port_change: tokio::sync::Mutex<()>,
}

/// A BitTorrent session: many torrents on one port. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// One torrent of a session. Cheap to clone; it stays usable (reporting its last state) after
/// the torrent is removed.
#[derive(Clone)]
pub struct TorrentHandle {
    t: Arc<Torrent>,
}

impl std::fmt::Debug for TorrentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.t.id, self.t.info_hash)
    }
}

impl std::fmt::Display for TorrentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.t.id, self.t.info_hash)
    }
}

impl Session {
    /// Listens, starts the hashing threads, and waits for torrents.
    pub async fn start(settings: Settings) -> Result<Session, SessionError> {
        let listener = bind(settings.listen).map_err(|e| SessionError::Listen(settings.listen, e))?;
        let listen_addr = listener.local_addr().map_err(|e| SessionError::Listen(settings.listen, e))?;
        let dht = crate::dht::start_for(&settings, listen_addr).await;
        let lsd = crate::lsd::start_for(&settings, listen_addr);
        let core = Core::new(settings, listen_addr, dht, lsd).map_err(SessionError::Threads)?;
        let queue = Queue::new(core.clone());
        let inner = Arc::new(Inner {
            core,
            queue,
            torrents: RwLock::new(Torrents::default()),
            next_id: AtomicU32::new(1),
            handshaking: Mutex::new(HashMap::new()),
            accept_task: Mutex::new(None),
            port_change: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(accept_loop(Arc::downgrade(&inner), listener));
        *inner.accept_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(Session { inner })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.core.listen_addr()
    }

    /// Listens for peers on `port` instead (0: any free one), at the same address; returns the
    /// port now listened on. The old listener closes once the new one is bound (connections
    /// made through it stay), and every peer source gives the new port from then on: running
    /// torrents announce again to their trackers (as Transmission does), LSD announces again,
    /// the DHT node moves to the new port (UDP, as at the start) and announces it. When the
    /// port cannot be bound (in use), the error says so and the old listener stays.
    pub async fn set_port(&self, port: u16) -> Result<u16, SessionError> {
        let _one = self.inner.port_change.lock().await;
        let core = &self.inner.core;
        let old = core.listen_addr();
        if port != 0 && port == old.port() {
            return Ok(port);
        }
        let want = SocketAddr::new(old.ip(), port);
        let listener = bind(want).map_err(|e| SessionError::Listen(want, e))?;
        let now = listener.local_addr().map_err(|e| SessionError::Listen(want, e))?;
        let task = tokio::spawn(accept_loop(Arc::downgrade(&self.inner), listener));
        let before = self.inner.accept_task.lock().unwrap_or_else(|p| p.into_inner()).replace(task);
        if let Some(t) = before {
            t.abort();
            // Its listener is dropped (the old port refuses) by the time this returns.
            let _ = t.await;
        }
        core.set_listen_addr(now);
        tracing::info!("peers: listening on {now} (was {old})");
        if let Some(l) = &core.lsd {
            l.set_port(now.port());
        }
        let settings = core.settings().clone();
        core.dht.move_to(&settings, now).await;
        for h in self.torrents() {
            h.reannounce();
        }
        Ok(now.port())
    }

    pub fn peer_id(&self) -> [u8; 20] {
        self.inner.core.peer_id
    }

    pub fn settings(&self) -> Settings {
        self.inner.core.settings().clone()
    }

    /// Changes what may change while the session runs (limits, queue sizes, encryption); the
    /// listening address and the peer id stay.
    pub fn set_settings(&self, f: impl FnOnce(&mut Settings)) -> Settings {
        let s = self.inner.core.update(f);
        self.inner.queue.poke();
        // Runs look at their seeding limits again.
        for t in self.inner.torrents.read().unwrap_or_else(|p| p.into_inner()).by_id.values() {
            t.wake_run();
        }
        s
    }

    /// Adds a torrent; it starts at once unless added paused. A torrent already in the session
    /// is refused with its handle.
    pub fn add(&self, add: AddTorrent) -> Result<TorrentHandle, AddError> {
        let mut ts = self.inner.torrents.write().unwrap_or_else(|p| p.into_inner());
        let hash = match &add.source {
            crate::torrent::AddSource::Metainfo(m) => m.info_hash,
            crate::torrent::AddSource::Magnet(m) => m.info_hash,
        };
        if let Some(id) = ts.by_hash.get(&hash.0) {
            return Err(AddError::Duplicate(TorrentHandle { t: ts.by_id[id].clone() }));
        }
        // An id given (kept across restarts by the daemon) if it is free; the next one else.
        let id = match add.id.filter(|id| *id > 0 && !ts.by_id.contains_key(id)) {
            Some(id) => {
                self.inner.next_id.fetch_max(id + 1, Ordering::Relaxed);
                id
            }
            None => self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let t = Torrent::new(self.inner.core.clone(), self.inner.queue.clone(), id, add);
        ts.by_id.insert(id, t.clone());
        ts.by_hash.insert(hash.0, id);
        ts.by_req2.insert(req2_digest(&hash.0), hash.0);
        drop(ts);
        tokio::spawn(drive(t.clone()));
        self.inner.core.bump();
        Ok(TorrentHandle { t })
    }

    pub fn get(&self, id: u32) -> Option<TorrentHandle> {
        let ts = self.inner.torrents.read().unwrap_or_else(|p| p.into_inner());
        ts.by_id.get(&id).map(|t| TorrentHandle { t: t.clone() })
    }

    /// The torrents of `ids` that exist, in that order, under one look at the table.
    pub fn get_many(&self, ids: &[u32]) -> Vec<TorrentHandle> {
        let ts = self.inner.torrents.read().unwrap_or_else(|p| p.into_inner());
        ids.iter().filter_map(|id| ts.by_id.get(id)).map(|t| TorrentHandle { t: t.clone() }).collect()
    }

    pub fn find(&self, info_hash: &InfoHash) -> Option<TorrentHandle> {
        let ts = self.inner.torrents.read().unwrap_or_else(|p| p.into_inner());
        ts.by_hash.get(&info_hash.0).map(|id| TorrentHandle { t: ts.by_id[id].clone() })
    }

    /// Every torrent, by id.
    /// The torrents whose state, settings or verified pieces changed since the last call
    /// (those since removed left out).
    pub fn take_changed(&self) -> Vec<TorrentHandle> {
        let ids = self.inner.core.take_changed();
        let ts = self.inner.torrents.read().unwrap_or_else(|p| p.into_inner());
        ids.iter().filter_map(|id| ts.by_id.get(id)).map(|t| TorrentHandle { t: t.clone() }).collect()
    }

    /// Bumped whenever a listing of the torrents would look different at once: a torrent's
    /// state or settings changed, one was added or got its first peer, or [`Session::bump`].
    pub fn events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.core.events()
    }

    /// Wakes what waits on [`Session::events`] (a torrent was removed and forgotten).
    pub fn bump(&self) {
        self.inner.core.bump();
    }

    pub fn torrents(&self) -> Vec<TorrentHandle> {
        let ts = self.inner.torrents.read().unwrap_or_else(|p| p.into_inner());
        ts.by_id.values().map(|t| TorrentHandle { t: t.clone() }).collect()
    }

    /// Stops a torrent and takes it out of the session; with `delete_data`, its files and the
    /// folders they made go too.
    pub async fn remove(&self, id: u32, delete_data: bool) -> Option<TorrentHandle> {
        let h = self.detach(id)?;
        h.dispose(delete_data).await;
        Some(h)
    }

    /// The first half of [`Session::remove`], at once: takes the torrent out of the session
    /// (no longer listed, found, or accepting peers) and tells its run to stop for good. Finish
    /// with [`TorrentHandle::dispose`].
    pub fn detach(&self, id: u32) -> Option<TorrentHandle> {
        let t = {
            let mut ts = self.inner.torrents.write().unwrap_or_else(|p| p.into_inner());
            let t = ts.by_id.remove(&id)?;
            ts.by_hash.remove(&t.info_hash.0);
            ts.by_req2.remove(&req2_digest(&t.info_hash.0));
            t
        };
        t.retire();
        Some(TorrentHandle { t })
    }

    /// Stops every torrent (each tells its trackers) and stops listening.
    pub async fn shutdown(&self) {
        if let Some(t) = self.inner.accept_task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        // Every torrent stops at once; each run ends on its own task. They are halted, not
        // stopped: what the user asked (running or not) is what a restart brings back.
        let all = self.torrents();
        for h in &all {
            h.t.halt();
        }
        for h in &all {
            let mut rx = h.t.subscribe();
            rx.wait_for(|s| !s.is_active()).await;
        }
        self.inner.core.dht.stop().await;
    }

    /// The DHT node's counts (None without one).
    pub fn dht_stats(&self) -> Option<crate::DhtStats> {
        self.inner.core.dht.handle().map(|d| d.stats())
    }

    /// Starts or stops the DHT node (with the routers and state file the session started
    /// with); running public torrents look up and announce with it at once. False when it was
    /// asked to start and could not (logged).
    pub async fn set_dht(&self, on: bool) -> bool {
        let core = &self.inner.core;
        if !on {
            core.dht.stop().await;
            return true;
        }
        let settings = core.settings().clone();
        core.dht.start(&settings, core.listen_addr()).await
    }

    /// Whether Local Service Discovery runs (on, and with groups to run on).
    pub fn lsd_enabled(&self) -> bool {
        self.inner.core.lsd.as_ref().is_some_and(|l| l.enabled())
    }

    /// DHT nodes to ping (they enter the routing table if they answer).
    pub fn add_dht_nodes(&self, nodes: Vec<SocketAddr>) {
        if let Some(d) = self.inner.core.dht.handle() {
            d.add_nodes(nodes);
        }
    }

    /// Puts a blocklist in force (None: none): no peer in it is dialed or let in from then on
    /// (Transmission's `blocklist-enabled`), and the connections to those in it are closed.
    pub fn set_blocklist(&self, list: Option<Arc<crate::Blocklist>>) {
        self.inner.core.set_blocklist(list.clone());
        // Addresses the running torrents knew before: forgotten, not dialed (those added from
        // now on are checked as they come), their connections closed.
        if let Some(list) = &list {
            for h in self.torrents() {
                if let Some(l) = h.t.live() {
                    l.forget_blocked(list);
                }
            }
        }
    }

    /// Gives the session what keeps a torrent's record on disk (the daemon's state): a move or
    /// a rename of a torrent's files is written down there ([`crate::FileOp`]) before a file
    /// is touched, so that one cut short, by a `kill -9` say, is finished at the next start.
    pub fn set_journal(&self, journal: crate::Journal) {
        self.inner.core.set_journal(journal);
    }

    /// Puts torrent `id` at `position` in the queue (0 first); the others keep their order.
    pub fn set_queue_position(&self, id: u32, position: usize) {
        let mut all = self.queue_order();
        let Some(at) = all.iter().position(|t| t.id == id) else { return };
        let t = all.remove(at);
        all.insert(position.min(all.len()), t);
        self.renumber(&all);
    }

    /// Every torrent in queue order.
    fn queue_order(&self) -> Vec<Arc<Torrent>> {
        let mut all: Vec<Arc<Torrent>> = {
            let ts = self.inner.torrents.read().unwrap_or_else(|p| p.into_inner());
            ts.by_id.values().cloned().collect()
        };
        all.sort_by_key(|t| (t.position.load(Ordering::Relaxed), t.id));
        all
    }

    /// Positions 0, 1, 2… in the order given.
    fn renumber(&self, all: &[Arc<Torrent>]) {
        for (pos, t) in all.iter().enumerate() {
            if t.position.swap(pos as u64, Ordering::Relaxed) != pos as u64 {
                t.touch();
            }
        }
        self.inner.queue.poke();
    }

    /// Moves torrents in the queue (positions stay dense: 0, 1, 2… in queue order).
    pub fn queue_move(&self, ids: &[u32], to: QueueMove) {
        let mut all = self.queue_order();
        let picked = |t: &Arc<Torrent>| ids.contains(&t.id);
        match to {
            QueueMove::Top | QueueMove::Bottom => {
                let (mut moved, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(picked);
                all = if to == QueueMove::Top {
                    moved.extend(rest);
                    moved
                } else {
                    rest.into_iter().chain(moved).collect()
                };
            }
            QueueMove::Up => {
                for i in 1..all.len() {
                    if picked(&all[i]) && !picked(&all[i - 1]) {
                        all.swap(i, i - 1);
                    }
                }
            }
            QueueMove::Down => {
                for i in (0..all.len().saturating_sub(1)).rev() {
                    if picked(&all[i]) && !picked(&all[i + 1]) {
                        all.swap(i, i + 1);
                    }
                }
            }
        }
        self.renumber(&all);
    }

    /// Payload bytes over every torrent since the session started: (downloaded, uploaded).
    pub fn transferred(&self) -> (u64, u64) {
        (self.inner.core.downloaded.load(Ordering::Relaxed), self.inner.core.uploaded.load(Ordering::Relaxed))
    }

    /// Connections over every torrent.
    pub fn connections(&self) -> usize {
        self.inner.core.connections.load(Ordering::Relaxed)
    }
}

impl TorrentHandle {
    pub fn id(&self) -> u32 {
        self.t.id
    }
    pub fn info_hash(&self) -> InfoHash {
        self.t.info_hash
    }
    pub fn name(&self) -> String {
        self.t.name()
    }
    /// The metainfo; None while a magnet link's metadata is being fetched.
    pub fn metainfo(&self) -> Option<Arc<bitswarm_metainfo::Metainfo>> {
        self.t.meta()
    }
    /// The magnet link the torrent was added from (None when added from a .torrent).
    pub fn magnet(&self) -> Option<bitswarm_metainfo::Magnet> {
        self.t.magnet().cloned()
    }
    pub fn dir(&self) -> std::path::PathBuf {
        self.t.dir()
    }
    pub fn state(&self) -> State {
        self.t.state()
    }
    pub fn stats(&self) -> TorrentStats {
        self.t.stats()
    }
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.t.peer_list()
    }
    pub fn trackers(&self) -> Vec<TrackerStatus> {
        self.t.tracker_list()
    }
    /// The trackers' warning or error a client shows as the torrent's, if any.
    pub fn tracker_problem(&self) -> Option<crate::torrent::TrackerProblem> {
        self.t.tracker_problem()
    }
    /// Starts a stopped torrent (in its turn; `force`: at once, out of the queue).
    pub fn start(&self, force: bool) {
        self.t.start(force);
    }
    /// Stops the torrent (its run closes its connections and tells its trackers).
    pub fn stop(&self) {
        self.t.stop();
    }
    /// Checks its data again.
    pub fn verify(&self) {
        self.t.verify();
    }
    pub fn settings(&self) -> crate::TorrentSettings {
        self.t.settings()
    }
    /// Reads the torrent's settings without copying them.
    pub fn with_settings<R>(&self, f: impl FnOnce(&crate::TorrentSettings) -> R) -> R {
        self.t.with_settings(f)
    }
    /// Changes the torrent's settings (limits, files, seeding limits, labels); a run takes them
    /// at once.
    pub fn set_settings(&self, f: impl FnOnce(&mut crate::TorrentSettings)) -> crate::TorrentSettings {
        self.t.set_settings(f)
    }
    /// Goes up with every change a client may want to hear of (state, settings, pieces).
    pub fn generation(&self) -> u64 {
        self.t.generation()
    }
    /// When the state or settings last changed.
    pub fn changed_at(&self) -> std::time::Instant {
        self.t.changed_at()
    }
    pub fn times(&self) -> crate::Times {
        self.t.times()
    }
    /// A seeding limit was reached (and the torrent stopped for it).
    pub fn finished(&self) -> bool {
        self.t.finished()
    }
    /// Resume data (reads the files' sizes and times: call it off the async threads).
    pub fn resume(&self) -> Option<crate::Resume> {
        self.t.resume()
    }
    /// The torrent should run (or wait its turn); false when stopped by the user or a limit.
    pub fn wants_to_run(&self) -> bool {
        self.t.wants_to_run()
    }
    /// The verified pieces (None until the data has been checked once).
    pub fn have_pieces(&self) -> Option<bitswarm_wire::Bitfield> {
        self.t.have()
    }
    /// Its place in the queue (lower goes first).
    pub fn queue_position(&self) -> u64 {
        self.t.position.load(Ordering::Relaxed)
    }
    /// Moves the data to `dir` (`move_data`), or says it is there already (then it is checked
    /// again); a running torrent stops for it and starts again after. One move, rename or
    /// deletion of a torrent's files at a time: this one waits for one under way.
    pub async fn set_location(&self, dir: std::path::PathBuf, move_data: bool) -> Result<(), String> {
        let h = self.clone();
        to_the_end(async move {
            let _files = h.t.files_lock.lock().await;
            h.relocate(dir, move_data).await
        })
        .await
    }

    /// Whether every wanted piece is in (verified), and the torrent is not being checked.
    pub fn wanted_complete(&self) -> bool {
        self.t.meta().is_some()
            && matches!(self.t.state(), State::Seeding | State::SeedQueued | State::Stopped)
            && self.t.stats().left == 0
    }

    /// Moves a torrent downloaded elsewhere to where its data goes
    /// ([`crate::TorrentSettings::complete_dir`]) once every wanted piece is in, and then
    /// forgets that place; returns it, or the error that kept the data where it was. None when
    /// there is nothing to move (not complete, removed, or moved meanwhile by hand).
    pub async fn move_completed(&self) -> Option<Result<std::path::PathBuf, String>> {
        let h = self.clone();
        to_the_end(async move { Ok(h.move_completed_now().await) }).await.unwrap_or_else(|e| Some(Err(e)))
    }

    async fn move_completed_now(&self) -> Option<Result<std::path::PathBuf, String>> {
        let _files = self.t.files_lock.lock().await;
        let to = self.t.with_settings(|s| s.complete_dir.clone())?;
        if self.t.is_retired() || !self.wanted_complete() {
            return None;
        }
        let result = self.relocate(to.clone(), true).await;
        if result.is_ok() {
            self.t.set_settings(|s| s.complete_dir = None);
        }
        Some(result.map(|()| to))
    }

    /// Runs `work` with the torrent's run held off and ended: what moves or renames its files.
    /// What the user asks meanwhile (a stop, a start) takes effect after, and a running torrent
    /// runs again as it was started. (Until 2026-12-07 the run was stopped, as by the user, and
    /// started again after: a stop asked during a move was undone by that start.)
    async fn with_run_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let _held = self.t.hold().await;
        work.await
    }

    async fn relocate(&self, dir: std::path::PathBuf, move_data: bool) -> Result<(), String> {
        self.with_run_stopped(async {
            let from = self.t.dir();
            let mut result = Ok(());
            if move_data
                && from != dir
                && let Some(meta) = self.t.meta()
            {
                self.t.set_settings(|s| s.pending = Some(FileOp::Move { from: from.clone(), to: dir.clone() }));
                result =
                    self.t.journal().await.map_err(|e| format!("not moved: the move could not be recorded first: {e}"));
                if result.is_ok() {
                    let (old, new) = (self.t.layout(&meta.info, &from), self.t.layout(&meta.info, &dir));
                    let (f, d) = (from.clone(), dir.clone());
                    // Cut short (a disk full, say), it puts back what it moved, so that the
                    // torrent finds its files where it keeps them.
                    let moved = tokio::task::spawn_blocking(move || crate::disk::move_files(&old, &new, &f, &d))
                        .await
                        .unwrap_or_else(|e| Err(crate::disk::MoveFailed { reason: e.to_string(), put_back: false }));
                    result = moved.map_err(|e| {
                        if !e.put_back {
                            // Some files where it does not look for them: what it has is
                            // found by a check.
                            self.t.recheck();
                        }
                        e.reason
                    });
                    abort_for_test("move");
                }
            }
            if result.is_ok() {
                self.t.set_dir(dir);
                if !move_data {
                    self.t.recheck();
                }
            }
            // After the folder: a record written in between names the new one, and finishing
            // the move again finds nothing left to move.
            self.t.set_settings(|s| s.pending = None);
            result
        })
        .await
    }
    /// Each file's path under the torrent's folder, components joined by `/`, as renamed (the
    /// names `torrent-get` shows); empty without metadata.
    pub fn file_paths(&self) -> Vec<String> {
        self.t.meta().map(|m| self.t.file_paths(&m.info)).unwrap_or_default()
    }

    /// Renames a file or a folder of the torrent (Transmission's `torrent-rename-path`): `path`
    /// is one of [`TorrentHandle::file_paths`] or a folder they are in (the torrent's own name
    /// for its top file or folder), `name` its new last component. What is on disk is renamed
    /// (a running torrent stops for it and starts again after; a file not made yet is only
    /// renamed in the list), and the names are kept in the torrent's settings; renaming the
    /// top one renames the torrent. The error says what is wrong.
    pub async fn rename_path(&self, path: &str, name: &str) -> Result<(), String> {
        let (h, path, name) = (self.clone(), path.to_owned(), name.to_owned());
        to_the_end(async move { h.rename_now(&path, &name).await }).await
    }

    async fn rename_now(&self, path: &str, name: &str) -> Result<(), String> {
        let _files = self.t.files_lock.lock().await;
        let meta = self.t.meta().ok_or("the torrent's metadata has not come yet")?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
            return Err(format!("{name:?} is not a file name"));
        }
        if name.len() > 255 {
            return Err(format!("a file name of {} bytes (255 at most)", name.len()));
        }
        let path = path.trim_end_matches('/');
        let mut paths = self.t.file_paths(&meta.info);
        let within = |p: &str, top: &str| p == top || p.strip_prefix(top).is_some_and(|rest| rest.starts_with('/'));
        if path.is_empty() || !paths.iter().any(|p| within(p, path)) {
            return Err(format!("{path:?} is not a file or folder of this torrent"));
        }
        let new = match path.rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/{name}"),
            None => name.to_owned(),
        };
        if new == path {
            return Ok(());
        }
        if paths.iter().any(|p| within(p, &new)) {
            return Err(format!("{new:?} is a file or folder of this torrent already"));
        }
        for p in &mut paths {
            if within(p, path) {
                *p = format!("{new}{}", &p[path.len()..]);
            }
        }
        let name = (!path.contains('/')).then(|| name.to_owned());
        self.with_run_stopped(async {
            let dir = self.t.dir();
            let (from, to) = (dir.join(path), dir.join(&new));
            // Looked at before it is recorded: a rename recorded is one that goes ahead (one
            // finished at the next start takes a file at `to` for the renamed one).
            let taken = to.clone();
            if tokio::task::spawn_blocking(move || taken.symlink_metadata().is_ok()).await.unwrap_or(true) {
                return Err(format!("{} exists already", to.display()));
            }
            let op = FileOp::Rename { from: from.clone(), to: to.clone(), paths: paths.clone(), name: name.clone() };
            self.t.set_settings(|s| s.pending = Some(op));
            if let Err(e) = self.t.journal().await {
                self.t.set_settings(|s| s.pending = None);
                return Err(format!("not renamed: the rename could not be recorded first: {e}"));
            }
            let renamed = tokio::task::spawn_blocking(move || {
                if to.symlink_metadata().is_ok() {
                    return Err(format!("{} exists already", to.display()));
                }
                match std::fs::rename(&from, &to) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(format!("renaming {} to {}: {e}", from.display(), to.display()))
                    }
                    _ => Ok(()),
                }
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            abort_for_test("rename");
            self.t.set_settings(|s| {
                s.pending = None;
                if renamed.is_ok() {
                    s.paths = Some(paths);
                    if name.is_some() {
                        s.name = name;
                    }
                }
            });
            renamed
        })
        .await
    }

    /// Announces to its trackers now (when it runs).
    pub fn reannounce(&self) {
        if let Some(l) = self.t.live() {
            l.reannounce();
        }
    }
    /// Peers to dial.
    pub fn add_peers(&self, peers: &[SocketAddr]) {
        if let Some(l) = self.t.live() {
            l.add_peers(peers.iter().copied(), Source::Given);
        }
    }
    /// Resolves when every piece is verified and written (with the data complete at the
    /// start, at once once checked), or with the error that stopped the torrent.
    pub async fn wait_complete(&self) -> Result<(), String> {
        let mut rx = self.t.subscribe();
        loop {
            let s = rx.borrow_and_update().clone();
            match s {
                State::Error(e) => return Err(e),
                State::Seeding | State::SeedQueued => return Ok(()),
                State::Downloading => {
                    if let Some(l) = self.t.live() {
                        tokio::select! {
                            _ = l.wait_complete() => return Ok(()),
                            () = rx.changed() => {}
                        }
                        continue;
                    }
                }
                _ => {}
            }
            rx.changed().await;
        }
    }
    /// For a magnet link: the size of the metadata and the peer that gave it, once it came.
    pub fn metadata_from(&self) -> Option<(usize, SocketAddr)> {
        *self.t.metadata_from.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Resolves once the torrent has its metadata and its data is checked (it runs or waits
    /// for its turn), or with the error that stopped it, or when it is stopped.
    pub async fn wait_ready(&self) -> Result<(), String> {
        let mut rx = self.t.subscribe();
        rx.wait_for(|s| !matches!(s, State::FetchingMetadata | State::CheckQueued | State::Checking)).await;
        let state = rx.borrow().clone();
        match state {
            State::Error(e) => Err(e),
            State::Stopped => Err("stopped".into()),
            _ => Ok(()),
        }
    }
    /// Resolves once the torrent runs (it takes connections), is stopped or failed; a torrent
    /// that waits for its turn in the queue waits here too.
    pub async fn wait_running(&self) {
        let mut rx = self.t.subscribe();
        rx.wait_for(|s| matches!(s, State::Seeding | State::Downloading) || !s.is_active()).await;
    }
    /// Resolves with the message of the error that stops the torrent.
    pub async fn wait_error(&self) -> String {
        let mut rx = self.t.subscribe();
        loop {
            if let State::Error(e) = rx.borrow_and_update().clone() {
                return e;
            }
            rx.changed().await;
        }
    }
    /// Whether it was taken out of its session ([`Session::detach`], [`Session::remove`]).
    pub fn is_removed(&self) -> bool {
        self.t.is_retired()
    }

    /// The second half of [`Session::remove`], for a torrent [detached](Session::detach):
    /// waits until its run has ended (the trackers told); with `delete_data`, then deletes its
    /// files and the folders they made.
    pub async fn dispose(&self, delete_data: bool) {
        self.stop_and_wait().await;
        let _files = self.t.files_lock.lock().await;
        if delete_data && let Some(meta) = self.t.meta() {
            let layout = self.t.layout(&meta.info, &self.t.dir());
            let dir = self.t.dir();
            let _ = tokio::task::spawn_blocking(move || crate::disk::delete_files(&layout, &dir)).await;
        }
    }

    /// Stops, and waits until the run has ended (connections closed, pieces written, the
    /// trackers told) and no step of another is under way: a hold, taken and let go, resolves
    /// only once the driver has seen it stopped, where a Stopped state alone may come from a
    /// driver about to start a step.
    pub async fn stop_and_wait(&self) {
        self.t.stop();
        drop(self.t.hold().await);
    }
}

/// Runs `work` on a task of its own and waits for it: a caller that goes away (an RPC client
/// that hangs up) does not cut a move or a rename short, half done, its lock and its hold on
/// the run let go while a blocking thread still moves files.
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(work).await.map_err(|e| e.to_string())?
}

/// Ends the process at once (as `kill -9` would) after the files of a move or a rename were
/// moved and before it is recorded as done, when the environment variable
/// `BITSWARM_TEST_ABORT_AFTER` names that step (`move`, `rename`): for the tests of what such
/// an end leaves.
fn abort_for_test(step: &str) {
    if std::env::var_os("BITSWARM_TEST_ABORT_AFTER").is_some_and(|s| s == step) {
        eprintln!("BITSWARM_TEST_ABORT_AFTER={step}: aborting");
        std::process::abort();
    }
}

/// The peer listener; on `::`, dual-stack (IPv4 peers too) whatever the system's default.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    crate::dual_stack(&s, addr)?;
    // As std's TcpListener::bind does on Unix.
    #[cfg(unix)]
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Counts an incoming connection in its handshake until dropped.
struct HandshakeGuard {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        let mut h = self.inner.handshaking.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = h.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                h.remove(&self.ip);
            }
        }
    }
}

impl Inner {
    /// An incoming connection may start its handshake: no more than [`MAX_HANDSHAKES`] at once,
    /// and [`MAX_HANDSHAKES_PER_IP`] from one address (unless the limit of connections per
    /// address is off). The guard counts it until dropped.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakeGuard> {
        if self.core.blocked(ip) {
            return None;
        }
        let per_ip = match self.core.settings().max_peers_per_ip {
            0 => MAX_HANDSHAKES,
            _ => MAX_HANDSHAKES_PER_IP,
        };
        let mut h = self.handshaking.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = h.values().sum();
        let mine = h.get(&ip).copied().unwrap_or(0);
        if total >= MAX_HANDSHAKES || mine >= per_ip {
            return None;
        }
        *h.entry(ip).or_default() += 1;
        Some(HandshakeGuard { inner: self.clone(), ip })
    }

    fn torrent(&self, info_hash: &[u8; 20]) -> Option<Arc<Torrent>> {
        let ts = self.torrents.read().unwrap_or_else(|p| p.into_inner());
        ts.by_hash.get(info_hash).map(|id| ts.by_id[id].clone())
    }

    /// An incoming connection from `addr`: the handshake names a torrent, which takes it in
    /// if it runs and has room.
    async fn incoming(self: Arc<Self>, mut stream: tokio::net::TcpStream, addr: SocketAddr, guard: HandshakeGuard) {
        let require = self.core.settings().incoming_encryption == Incoming::Require;
        let known = |ih: &[u8; 20]| self.torrent(ih).and_then(|t| t.live()).is_some_and(|l| l.may_accept(addr.ip()));
        let lookup = {
            let weak = Arc::downgrade(&self);
            move |req2: &[u8; 20]| {
                let inner = weak.upgrade()?;
                let ts = inner.torrents.read().unwrap_or_else(|p| p.into_inner());
                ts.by_req2.get(req2).copied()
            }
        };
        let dht = |ih: &[u8; 20]| {
            self.torrent(ih).and_then(|t| t.live()).is_some_and(|l| crate::link::Link::dht_port(&*l).is_some())
        };
        let shake = conn::accept(&mut stream, self.core.peer_id, require, known, dht, lookup);
        let opened = match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, shake).await {
            Ok(Ok(o)) => o,
            // Logged with the connections' target, where `BITSWARM_LOG=bitswarm_peer::conn=debug`
            // shows how each connection started.
            Ok(Err(e)) => return debug!(target: "bitswarm_peer::conn", "{addr}: handshake: {e}"),
            Err(_) => return debug!(target: "bitswarm_peer::conn", "{addr}: handshake timed out"),
        };
        drop(guard);
        let Some(live) = self.torrent(&opened.theirs.info_hash).and_then(|t| t.live()) else { return };
        conn::run(live, stream, addr, opened, false).await;
    }
}

async fn accept_loop(inner: std::sync::Weak<Inner>, listener: TcpListener) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // An IPv4 peer of a dual-stack listener (`::`) comes as ::ffff:a.b.c.d: it is the IPv4
        // address for every limit, ban and list, as when we dial it.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let Some(inner) = inner.upgrade() else { return };
        let Some(guard) = inner.admit(addr.ip()) else { continue };
        tokio::spawn(inner.clone().incoming(stream, addr, guard));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download no peer serves: one piece of 16 KiB, no tracker.
    fn unserved(session: &Session, dir: &std::path::Path, name: &str) -> TorrentHandle {
        let b = bitswarm_metainfo::TorrentBuilder {
            name: name.into(),
            piece_length: 16384,
            pieces: vec![[7; 20]],
            length: 16384,
            ..Default::default()
        };
        let meta = bitswarm_metainfo::Metainfo::parse(&b.build().0).unwrap();
        let mut add = AddTorrent::new(crate::torrent::AddSource::Metainfo(Arc::new(meta)), dir.to_owned());
        add.no_trackers = true;
        session.add(add).unwrap()
    }

    /// A session on loopback, Local Service Discovery off, and a folder for its data.
    async fn quiet_session() -> (Session, tempfile::TempDir) {
        let mut s = Settings::new("127.0.0.1:0".parse().unwrap());
        s.lsd_groups = Vec::new();
        (Session::start(s).await.unwrap(), tempfile::tempdir().unwrap())
    }

    async fn reaches(h: &TorrentHandle, want: State) {
        let mut rx = h.t.subscribe();
        let wait = rx.wait_for(|s| *s == want);
        tokio::time::timeout(Duration::from_secs(20), wait).await.expect("the state comes in time");
    }

    /// With one download at a time, a download through which nothing moves for the stalled time
    /// frees its turn: the next in line starts (not before), and the stalled one runs on.
    #[tokio::test]
    async fn a_stalled_download_lets_the_next_in_line_start() {
        const STALL: Duration = Duration::from_secs(3);
        for stall in [Some(STALL), None] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = Settings::new("127.0.0.1:0".parse().unwrap());
            s.max_downloading = Some(1);
            s.queue_stalled = stall;
            s.lsd_groups = Vec::new();
            let session = Session::start(s).await.unwrap();
            let a = unserved(&session, dir.path(), "a");
            reaches(&a, State::Downloading).await;
            let b = unserved(&session, dir.path(), "b");
            match stall {
                Some(_) => {
                    reaches(&b, State::Downloading).await;
                    assert_eq!(a.state(), State::Downloading, "the stalled one runs on");
                    // Its slot was taken before its run started, which is quick here.
                    let (ta, tb) = (a.times().started.unwrap(), b.times().started.unwrap());
                    let waited = tb.duration_since(ta).unwrap_or_default();
                    assert!(waited >= STALL - Duration::from_secs(1), "the next started {waited:?} after");
                }
                None => {
                    // Never stalled: the second waits as long as the first runs.
                    reaches(&b, State::DownloadQueued).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    assert_eq!(b.state(), State::DownloadQueued);
                }
            }
            session.shutdown().await;
        }
    }

    /// A blocklist put in force makes the running torrents forget the addresses in it that they
    /// knew, and they take none in it from then on; addresses outside it stay.
    #[tokio::test]
    async fn a_blocklist_in_force_forgets_the_blocked_addresses_known() {
        let (session, dir) = quiet_session().await;
        let h = unserved(&session, dir.path(), "a");
        reaches(&h, State::Downloading).await;
        // Port 1: nothing listens, the dials fail and the addresses stay known.
        let (blocked, free): (SocketAddr, SocketAddr) =
            ("127.0.0.9:1".parse().unwrap(), "127.0.0.10:1".parse().unwrap());
        h.add_peers(&[blocked, free]);
        let live = h.t.live().unwrap();
        let mut known = live.known_addrs();
        known.sort();
        assert_eq!(known, [blocked, free]);
        session.set_blocklist(Some(Arc::new(crate::Blocklist::parse(b"127.0.0.9/32").unwrap())));
        assert_eq!(live.known_addrs(), [free]);
        h.add_peers(&["127.0.0.9:2".parse().unwrap()]);
        assert_eq!(live.known_addrs(), [free], "a blocked address is not taken");
        session.set_blocklist(None);
        h.add_peers(&[blocked]);
        assert_eq!(live.known_addrs().len(), 2, "without the list it is taken again");
        session.shutdown().await;
    }

    /// A move whose caller goes away once it has begun (an RPC client that hangs up) is carried
    /// out all the same, and the torrent runs again after it.
    #[tokio::test]
    async fn a_move_whose_caller_goes_away_ends_all_the_same() {
        let (session, dir) = quiet_session().await;
        let h = unserved(&session, dir.path(), "a");
        reaches(&h, State::Downloading).await;
        let to = dir.path().join("elsewhere");
        // Polled once, then dropped.
        let mut call = Box::pin(h.set_location(to.clone(), true));
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the move did not end at its first poll");
        drop(call);
        let moved = async {
            while h.dir() != to {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), moved).await.expect("the move ends");
        reaches(&h, State::Downloading).await;
        session.shutdown().await;
    }

    /// A move or a rename holds the run off: the run ends for it, and after it the torrent runs
    /// again as it ran, unless a stop was asked meanwhile; a start asked meanwhile waits for it.
    #[tokio::test]
    async fn a_stop_or_a_start_asked_during_a_move_holds_after_it() {
        let (session, dir) = quiet_session().await;
        let h = unserved(&session, dir.path(), "a");
        reaches(&h, State::Downloading).await;
        // Nothing asked: it runs again.
        h.with_run_stopped(async { assert_eq!(h.state(), State::Stopped, "no run during the work") }).await;
        reaches(&h, State::Downloading).await;
        // A stop asked meanwhile holds.
        h.with_run_stopped(async { h.stop() }).await;
        reaches(&h, State::Stopped).await;
        assert!(!h.wants_to_run());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.state(), State::Stopped, "the stop asked during the move holds");
        // A start asked meanwhile waits for the work's end.
        h.with_run_stopped(async {
            h.start(false);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(h.state(), State::Stopped, "no run before the work ends");
        })
        .await;
        reaches(&h, State::Downloading).await;
        session.shutdown().await;
    }

    #[tokio::test]
    async fn the_peer_port_moves_and_an_unusable_one_keeps_the_old() {
        let session = Session::start(Settings::new("127.0.0.1:0".parse().unwrap())).await.unwrap();
        let first = session.listen_addr();
        tokio::net::TcpStream::connect(first).await.expect("the first port listens");
        let port = session.set_port(0).await.unwrap();
        assert_ne!(port, first.port());
        assert_eq!(session.listen_addr().port(), port);
        assert_eq!(session.settings().listen.port(), port);
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("the new port listens");
        assert!(tokio::net::TcpStream::connect(first).await.is_err(), "the old port refuses");
        // The same port again: nothing changes.
        assert_eq!(session.set_port(port).await.unwrap(), port);

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let e = session.set_port(busy).await.unwrap_err();
        assert!(e.to_string().contains(&busy.to_string()), "{e}");
        assert_eq!(session.listen_addr().port(), port, "the old listener stays");
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("and still listens");
        session.shutdown().await;
    }

    #[tokio::test]
    async fn the_dht_node_moves_with_the_peer_port() {
        let mut s = Settings::new("127.0.0.1:0".parse().unwrap());
        s.dht = true;
        s.dht_routers = Vec::new();
        s.lsd_groups = Vec::new();
        let session = Session::start(s).await.unwrap();
        let udp = |s: &Session| s.dht_stats().and_then(|d| d.addr).map(|a| a.port());
        assert_eq!(udp(&session), Some(session.listen_addr().port()));
        // A port free for TCP and UDP both.
        let port = loop {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let p = t.local_addr().unwrap().port();
            if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
                break p;
            }
        };
        assert_eq!(session.set_port(port).await.unwrap(), port);
        assert_eq!(udp(&session), Some(port), "the DHT node runs on the new port");
        session.shutdown().await;
    }
}
