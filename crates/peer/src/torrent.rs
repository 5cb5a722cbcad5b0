//! One torrent of a session over its whole life: its metadata (fetched first for a magnet
//! link), the check of its data, its turn in the queue, its runs, and the commands that move it
//! between them. Each torrent has one task, [`drive`], that owns these moves; the rest of the
//! session only sends it commands and reads its state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::signal::{Receiver, Watched};
use bitswarm_metainfo::{InfoHash, Magnet, Metainfo};
use bitswarm_storage::PieceState;
use bitswarm_wire::Bitfield;
use tracing::{info, warn};

use crate::core::Core;
use crate::live::{Counters, Live, LiveConfig, PeerInfo, Source, TrackerStatus};
use crate::metadata::{MetadataQuery, fetch_metadata_with};
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

/// How much a file is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilePriority {
    /// Not downloaded (nor created, where no wanted piece reaches into it).
    Skip,
    Low,
    #[default]
    Normal,
    High,
}

impl FilePriority {
    fn rank(self) -> u8 {
        match self {
            FilePriority::Skip => 0,
            FilePriority::Low => 1,
            FilePriority::Normal => 2,
            FilePriority::High => 3,
        }
    }
}

/// A seeding limit: the session's, one of the torrent's own, or none.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit<T> {
    #[default]
    Session,
    Own(T),
    Unlimited,
}

impl<T: Copy> Limit<T> {
    /// The limit in force, given the session's.
    pub fn effective(self, session: Option<T>) -> Option<T> {
        match self {
            Limit::Session => session,
            Limit::Own(v) => Some(v),
            Limit::Unlimited => None,
        }
    }
}

/// A torrent's trackers' complaint (see [`TorrentHandle::tracker_problem`](crate::TorrentHandle::tracker_problem)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerProblem {
    /// The tracker answered the last announce with a warning.
    Warning(String),
    /// The torrent's only tracker refused the last announce, and said why.
    Error(String),
}

/// What a user may set on one torrent (kept across restarts by the daemon).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TorrentSettings {
    pub labels: Vec<String>,
    /// Connections of this torrent (None: the session's default).
    pub max_peers: Option<usize>,
    /// Bytes per second of this torrent's own limits, and whether each applies (a limit is
    /// kept while it is off, as clients show it).
    pub upload_limit: u64,
    pub upload_limited: bool,
    pub download_limit: u64,
    pub download_limited: bool,
    /// The session's rate limits apply too.
    pub honors_session_limits: bool,
    /// Each file's priority, in torrent order (empty: every file normal).
    pub files: Vec<FilePriority>,
    /// Stop seeding at this upload ratio (uploaded / size).
    pub seed_ratio: Limit<f64>,
    /// Stop seeding after this many minutes without uploading.
    pub seed_idle_minutes: Limit<u64>,
    /// Stop seeding after this many minutes of seeding.
    pub seed_time_minutes: Limit<u64>,
    /// Transmission's bandwidth priority (-1, 0, 1): kept and reported.
    pub bandwidth_priority: i8,
    /// Tracker tiers that replace the torrent's own (edited by a client); None: the torrent's.
    pub trackers: Option<Vec<Vec<String>>>,
    /// A magnet link added with [`AddTorrent::stop_at_metadata`] whose metadata has not come
    /// yet: kept here so that it holds across a restart (left out of the JSON while false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stop_at_metadata: bool,
    /// The torrent's name as renamed (`torrent-rename-path` of its top file or folder); None:
    /// its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Each file's path under the torrent's folder, components joined by `/`, once a file or
    /// folder was renamed (one per file of the torrent, in its order); None: its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Where the data goes once every wanted piece is in, while it is downloaded elsewhere
    /// (the daemon's incomplete folder, Transmission's `incomplete-dir`); the engine only keeps
    /// it, and moves the data when asked ([`crate::TorrentHandle::move_completed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_dir: Option<PathBuf>,
    /// A move or a rename of its files under way (see [`FileOp`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<FileOp>,
}

/// A move or a rename of a torrent's files under way. It is written in the torrent's settings,
/// and the session's journal ([`crate::Session::set_journal`]) keeps it, before a file is
/// touched, and cleared once it is done: a process that ends in between, `kill -9` included,
/// finishes it at its next start ([`finish_file_op`]) rather than finding some files moved and
/// the others not, and downloading again what it had.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// The data moves from one folder to another (a renamed file or a copy across file systems
    /// that was cut short is moved again: the one at `from` is whole until it is deleted).
    Move { from: PathBuf, to: PathBuf },
    /// A file or folder is renamed, `from` to `to` (both in the torrent's folder); the torrent's
    /// file paths are then `paths`, and its name `name` when that changed.
    Rename { from: PathBuf, to: PathBuf, paths: Vec<String>, name: Option<String> },
}

/// Finishes a move or a rename cut short ([`TorrentSettings::pending`]) before the torrent is
/// added back: returns the folder its data is in then, and clears the pending one in
/// `settings` (when it fails again, the data is moved back where the record says, as far as
/// it can be, and the check at the start finds what is there). Blocking file I/O.
pub fn finish_file_op(
    info: &bitswarm_metainfo::Info,
    dir: &std::path::Path,
    settings: &mut TorrentSettings,
) -> Result<PathBuf, String> {
    let Some(op) = settings.pending.take() else { return Ok(dir.to_owned()) };
    match op {
        FileOp::Move { from, to } => {
            let old = bitswarm_storage::Layout::with_paths(info, &from, settings.paths.as_deref());
            let new = bitswarm_storage::Layout::with_paths(info, &to, settings.paths.as_deref());
            // What it moved goes back on a failure.
            crate::disk::move_files(&old, &new, &from, &to).map_err(|e| e.reason)?;
            Ok(to)
        }
        FileOp::Rename { from, to, paths, name } => {
            match (from.symlink_metadata().is_ok(), to.symlink_metadata().is_ok()) {
                (true, false) => std::fs::rename(&from, &to)
                    .map_err(|e| format!("renaming {} to {}: {e}", from.display(), to.display()))?,
                // Both: the rename was refused (another file had the name), nothing changed.
                (true, true) => return Ok(dir.to_owned()),
                // Renamed already, or a file not made yet (renamed in the list only).
                (false, _) => {}
            }
            settings.paths = Some(paths);
            if name.is_some() {
                settings.name = name;
            }
            Ok(dir.to_owned())
        }
    }
}

impl Default for TorrentSettings {
    fn default() -> Self {
        TorrentSettings {
            labels: Vec::new(),
            max_peers: None,
            upload_limit: 100_000,
            upload_limited: false,
            download_limit: 100_000,
            download_limited: false,
            honors_session_limits: true,
            files: Vec::new(),
            seed_ratio: Limit::Session,
            seed_idle_minutes: Limit::Session,
            seed_time_minutes: Limit::Session,
            bandwidth_priority: 0,
            trackers: None,
            stop_at_metadata: false,
            name: None,
            paths: None,
            complete_dir: None,
            pending: None,
        }
    }
}

impl TorrentSettings {
    /// Each piece's priority for the picker: the highest of the files it touches.
    pub(crate) fn piece_priorities(&self, info: &bitswarm_metainfo::Info) -> Vec<u8> {
        let mut p = vec![0u8; info.piece_count()];
        for (i, f) in info.files.iter().enumerate() {
            if f.length == 0 || f.padding {
                continue;
            }
            let rank = self.files.get(i).copied().unwrap_or_default().rank();
            let first = (f.offset / info.piece_length) as usize;
            let last = ((f.offset + f.length - 1) / info.piece_length) as usize;
            for x in &mut p[first..=last] {
                *x = (*x).max(rank);
            }
        }
        // Pieces made only of padding: wanted (they are zeros, had at once in practice).
        if info.files.iter().all(|f| f.padding || f.length == 0) {
            p.fill(crate::picker::NORMAL);
        }
        p
    }

    /// The upload limit in force (0: none of its own).
    pub fn upload_rate(&self) -> u64 {
        if self.upload_limited { self.upload_limit.max(1) } else { 0 }
    }

    /// The download limit in force (0: none of its own).
    pub fn download_rate(&self) -> u64 {
        if self.download_limited { self.download_limit.max(1) } else { 0 }
    }

    /// Whether file `i` is wanted.
    pub fn wanted(&self, i: usize) -> bool {
        self.files.get(i).copied().unwrap_or_default() != FilePriority::Skip
    }
}

/// A file's size and modification time as seen when resume data was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// What a restart needs to come back without checking the data again: the verified pieces and
/// what the files looked like then, and the counters.
#[derive(Debug, Clone)]
pub struct Resume {
    pub have: Bitfield,
    /// Each file in torrent order; None for a file that was not there.
    pub files: Vec<Option<FileStamp>>,
    pub downloaded: u64,
    pub uploaded: u64,
    pub corrupt: u64,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    pub done_at: Option<SystemTime>,
    pub activity_at: Option<SystemTime>,
    /// It was running (or waiting to run).
    pub running: bool,
}

/// When things happened to a torrent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    pub added: Option<SystemTime>,
    /// The last piece came (or the data was found complete).
    pub done: Option<SystemTime>,
    /// Data last went either way.
    pub activity: Option<SystemTime>,
    /// The current run started.
    pub started: Option<SystemTime>,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    /// Since when the current downloading or seeding is counted.
    since: Option<(bool, Instant)>,
}

impl Times {
    /// Counts the time since the last call into downloading or seeding, and starts counting
    /// `now_seeding` (None: neither).
    fn account(&mut self, now_seeding: Option<bool>) {
        let now = Instant::now();
        if let Some((seeding, t)) = self.since.take() {
            let secs = now.duration_since(t).as_secs();
            if seeding {
                self.seconds_seeding += secs;
            } else {
                self.seconds_downloading += secs;
            }
            // Keep the fraction: count whole seconds only.
            let rest = now.duration_since(t) - Duration::from_secs(secs);
            self.since = now_seeding.map(|s| (s, now - rest));
            return;
        }
        self.since = now_seeding.map(|s| (s, now));
    }

    /// How long since the current run started or data last moved, whichever is later
    /// (Transmission's idle time, which tells a stalled torrent); None without a run.
    pub fn idle(&self) -> Option<Duration> {
        let started = self.started?;
        let last = self.activity.map_or(started, |a| a.max(started));
        Some(SystemTime::now().duration_since(last).unwrap_or_default())
    }

    /// The totals up to now.
    pub fn totals(&self) -> (u64, u64) {
        let mut t = *self;
        t.account(t.since.map(|(s, _)| s));
        (t.seconds_downloading, t.seconds_seeding)
    }
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
    pub settings: TorrentSettings,
    /// Resume data from an earlier run: its verified pieces are trusted where the files agree
    /// (see [`Resume`]) instead of checking the data.
    pub resume: Option<Resume>,
    /// The id to give it (the daemon keeps ids across restarts); None: the next free one.
    pub id: Option<u32>,
    pub added_at: Option<SystemTime>,
    /// Its place in the queue (lower goes first); None: last.
    pub queue_position: Option<u64>,
    /// A magnet link: runs until its metadata came, then stops before any data is asked for
    /// (so that the files to fetch can be chosen first). Kept in its settings
    /// ([`TorrentSettings::stop_at_metadata`]) until the metadata comes.
    pub stop_at_metadata: bool,
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
            settings: TorrentSettings::default(),
            resume: None,
            id: None,
            added_at: None,
            queue_position: None,
            stop_at_metadata: false,
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
    /// Bytes of the wanted pieces, and of those still missing.
    pub wanted: u64,
    pub left: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub peers: usize,
    pub banned: usize,
    /// Peers sending to us, peers we send to.
    pub peers_sending: usize,
    pub peers_getting: usize,
    /// Every wanted piece is verified (every piece, unless some files are not wanted).
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
    /// The session is closing: the run ends, but `run` keeps what the user asked, so the
    /// torrent comes back running at the next start.
    halt: bool,
    /// Its files are being moved or renamed: no run meanwhile, whatever `run` says (a start or
    /// a stop asked meanwhile takes effect after). A count: [`Torrent::hold`]'s guards.
    hold: u32,
    /// Bumped by each [`Torrent::hold`].
    holds: u64,
    /// The last of `holds` the driver saw while it ran no step (fetch, check, queue, run):
    /// what a hold waits for before it touches a file. `u64::MAX` once the driver ended.
    parked: u64,
}

impl Wish {
    /// Whether a run may go on.
    fn runs(&self) -> bool {
        self.run && !self.halt && self.hold == 0
    }
}

pub(crate) struct Torrent {
    pub id: u32,
    pub info_hash: InfoHash,
    core: Arc<Core>,
    queue: Arc<Queue>,
    meta: RwLock<Option<Arc<Metainfo>>>,
    /// Boxed, as the resume data: most torrents have neither.
    magnet: Option<Box<Magnet>>,
    dir: Mutex<PathBuf>,
    /// Held while the files move, are renamed or are deleted: one of those at a time.
    pub(crate) files_lock: tokio::sync::Mutex<()>,
    seed_only: bool,
    peers: Vec<SocketAddr>,
    no_trackers: bool,
    /// Shared with every other torrent while they are the defaults (most torrents' are).
    settings: Mutex<Arc<TorrentSettings>>,
    times: Mutex<Times>,
    /// Resume data to start from, until the first check uses it.
    resume: Mutex<Option<Box<Resume>>>,
    /// Bumped by every change a client may want to hear of (state, settings, pieces).
    generation: AtomicU64,
    /// When the last such change happened.
    changed_at: Mutex<Instant>,
    /// A seeding limit was reached (Transmission's `isFinished`).
    finished: AtomicBool,
    wish: Watched<Wish>,
    state: Watched<State>,
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
    /// Resume data vouched for every piece and every file's size just now: the next run opens
    /// no file until a peer asks for data.
    files_vouched: AtomicBool,
}

/// `s` in an `Arc`: the one shared by every torrent when they are the defaults.
fn shared_settings(s: TorrentSettings) -> Arc<TorrentSettings> {
    static DEFAULT: std::sync::LazyLock<Arc<TorrentSettings>> = std::sync::LazyLock::new(Arc::default);
    if s == **DEFAULT { DEFAULT.clone() } else { Arc::new(s) }
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
        let counters = Counters::default();
        let mut times = Times { added: Some(add.added_at.unwrap_or_else(SystemTime::now)), ..Times::default() };
        if let Some(r) = &add.resume {
            counters.downloaded.store(r.downloaded, Ordering::Relaxed);
            counters.uploaded.store(r.uploaded, Ordering::Relaxed);
            counters.corrupt.store(r.corrupt, Ordering::Relaxed);
            (times.seconds_downloading, times.seconds_seeding) = (r.seconds_downloading, r.seconds_seeding);
            (times.done, times.activity) = (r.done_at, r.activity_at);
        }
        // Asked now, or at an earlier run (kept in the settings); moot once the metadata is in.
        let mut settings = add.settings;
        settings.stop_at_metadata = (settings.stop_at_metadata || add.stop_at_metadata) && meta.is_none();
        Arc::new(Torrent {
            id,
            info_hash,
            core,
            queue,
            meta: RwLock::new(meta),
            magnet: magnet.map(Box::new),
            dir: Mutex::new(add.dir),
            files_lock: tokio::sync::Mutex::new(()),
            seed_only: add.seed_only,
            peers,
            no_trackers: add.no_trackers,
            settings: Mutex::new(shared_settings(settings)),
            times: Mutex::new(times),
            resume: Mutex::new(add.resume.map(Box::new)),
            generation: AtomicU64::new(0),
            changed_at: Mutex::new(Instant::now()),
            finished: AtomicBool::new(false),
            wish: Watched::new(Wish {
                run: !add.paused,
                force: false,
                verify: 0,
                halt: false,
                hold: 0,
                holds: 0,
                parked: 0,
            }),
            state: Watched::new(if add.paused { State::Stopped } else { State::CheckQueued }),
            have: Mutex::new(None),
            live: Mutex::new(None),
            counters: Arc::new(counters),
            check: Mutex::new(Arc::default()),
            meters: Mutex::new((RateMeter::default(), RateMeter::default())),
            checked: AtomicBool::new(false),
            position: AtomicU64::new(add.queue_position.unwrap_or(u64::from(id))),
            retired: AtomicBool::new(false),
            metadata_from: Mutex::new(None),
            files_vouched: AtomicBool::new(false),
        })
    }

    pub fn meta(&self) -> Option<Arc<Metainfo>> {
        self.meta.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn name(&self) -> String {
        if let Some(n) = self.with_settings(|s| s.name.clone()) {
            return n;
        }
        if let Some(m) = &*self.meta.read().unwrap_or_else(|p| p.into_inner()) {
            return m.info.name.clone();
        }
        match self.magnet.as_deref() {
            Some(Magnet { name: Some(n), .. }) => n.clone(),
            _ => self.info_hash.to_hex(),
        }
    }

    pub fn magnet(&self) -> Option<&Magnet> {
        self.magnet.as_deref()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> Receiver<'_, State> {
        self.state.subscribe()
    }

    fn set_state(&self, s: State) {
        let seeding = match s {
            State::Downloading => Some(false),
            State::Seeding => Some(true),
            _ => None,
        };
        let changed = self.state.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
        if changed {
            let mut t = self.times.lock().unwrap_or_else(|p| p.into_inner());
            t.account(seeding);
            if seeding.is_some() {
                t.started.get_or_insert_with(SystemTime::now);
            } else {
                t.started = None;
            }
            drop(t);
            self.changed();
        }
    }

    /// The data must be checked again at the next start (it may have changed under us).
    pub fn recheck(&self) {
        self.checked.store(false, Ordering::Release);
        *self.resume.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A change a client may want to hear of (a queue move).
    pub fn touch(&self) {
        self.changed();
    }

    /// Something a client may want to hear of changed.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.core.mark_changed(self.id);
        *self.changed_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.core.bump();
    }

    /// Goes up with every change (state, settings, verified pieces).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed) + self.live().map_or(0, |l| l.have_generation.load(Ordering::Relaxed))
    }

    /// When the state or settings last changed.
    pub fn changed_at(&self) -> Instant {
        *self.changed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn times(&self) -> Times {
        let mut t = *self.times.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.live()
            && let Some(a) = l.last_activity()
        {
            t.activity = Some(t.activity.map_or(a, |x| x.max(a)));
        }
        t
    }

    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Where its files are under `dir` (renamed ones where they were renamed to).
    pub(crate) fn layout(&self, info: &bitswarm_metainfo::Info, dir: &std::path::Path) -> bitswarm_storage::Layout {
        self.with_settings(|s| bitswarm_storage::Layout::with_paths(info, dir, s.paths.as_deref()))
    }

    /// Each file's path under its folder, components joined by `/` (as renamed).
    pub fn file_paths(&self, info: &bitswarm_metainfo::Info) -> Vec<String> {
        self.with_settings(|s| match bitswarm_storage::usable_paths(info, s.paths.as_deref()) {
            Some(p) => p.to_vec(),
            None => info.files.iter().map(|f| info.relative_path(f).to_string_lossy().into_owned()).collect(),
        })
    }

    pub fn settings(&self) -> TorrentSettings {
        TorrentSettings::clone(&self.settings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the settings without copying them.
    pub fn with_settings<R>(&self, f: impl FnOnce(&TorrentSettings) -> R) -> R {
        f(&self.settings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the torrent's settings; a run takes them at once.
    pub fn set_settings(&self, f: impl FnOnce(&mut TorrentSettings)) -> TorrentSettings {
        let s = {
            let mut shared = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            let mut s = TorrentSettings::clone(&shared);
            f(&mut s);
            // Every file normal is said by no list at all (readers take a missing entry as
            // normal); otherwise one entry a file.
            if s.files.iter().all(|p| *p == FilePriority::Normal) {
                s.files = Vec::new();
            } else if let Some(m) = self.meta() {
                s.files.resize(m.info.files.len(), FilePriority::Normal);
            }
            if s != **shared {
                *shared = shared_settings(s.clone());
            }
            s
        };
        if let Some(l) = self.live() {
            self.apply(&l, &s);
        }
        // A run looks at its seeding limits again.
        self.wake_run();
        self.changed();
        s
    }

    /// Puts settings into a run.
    fn apply(&self, live: &Arc<Live>, s: &TorrentSettings) {
        live.set_trackers(self.trackers(&live.meta));
        live.set_max_peers(s.max_peers.unwrap_or_else(|| self.core.settings().max_peers_per_torrent));
        live.up.set_rate(s.upload_rate());
        live.down.set_rate(s.download_rate());
        live.honors_session_limits.store(s.honors_session_limits, Ordering::Relaxed);
        live.set_priorities(s.piece_priorities(&live.meta.info));
    }

    /// Where the data is, moved there (`move_data`) or found there; a run stops for it and
    /// starts again after.
    pub fn set_dir(&self, dir: PathBuf) {
        *self.dir.lock().unwrap_or_else(|p| p.into_inner()) = dir;
        self.changed();
    }

    /// The resume data now: the verified pieces, the files as they are (their size and
    /// modification time are read: call it off the async threads), the counters.
    pub fn resume(&self) -> Option<Resume> {
        let meta = self.meta()?;
        let have = self.have().unwrap_or_else(|| Bitfield::new(meta.info.piece_count()));
        let layout = self.layout(&meta.info, &self.dir());
        let files = layout
            .files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(&f.path).ok()?;
                let mtime = m.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
                Some(FileStamp { size: m.len(), mtime_ns: mtime.as_nanos() as i64 })
            })
            .collect();
        let t = self.times();
        let (seconds_downloading, seconds_seeding) = t.totals();
        let c = &self.counters;
        Some(Resume {
            have,
            files,
            downloaded: c.downloaded.load(Ordering::Relaxed),
            uploaded: c.uploaded.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            seconds_downloading,
            seconds_seeding,
            done_at: t.done,
            activity_at: t.activity,
            running: self.wish.borrow().run,
        })
    }

    /// Whether the torrent should run (what the user asked last).
    pub fn wants_to_run(&self) -> bool {
        self.wish.borrow().run
    }

    /// Has its record kept on disk by the session's journal, if it has one; waits until it is.
    pub(crate) async fn journal(&self) -> Result<(), String> {
        self.core.journal(self.id).await
    }

    /// Holds its run off (for a move or a rename of its files) until the guard is dropped; what
    /// the user asks meanwhile, start or stop, takes effect then. Resolves once no step of a
    /// run is under way: the driver has seen the hold and stopped (the state alone does not
    /// say so: a driver that had just read a wish to run shows `Stopped` until its next step
    /// begins, and would check or open the files while they move).
    pub async fn hold(self: &Arc<Self>) -> Hold {
        let mut holds = 0;
        self.wish.send_modify(|w| {
            w.hold += 1;
            w.holds += 1;
            holds = w.holds;
        });
        self.wake_run();
        let hold = Hold(self.clone());
        self.wish.subscribe().wait_for(|w| w.parked >= holds).await;
        hold
    }

    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn start(&self, force: bool) {
        self.wish.send_modify(|w| {
            w.run = true;
            w.force |= force;
        });
        self.wake_run();
    }

    pub fn stop(&self) {
        self.wish.send_modify(|w| {
            w.run = false;
            w.force = false;
        });
        self.wake_run();
    }

    pub fn verify(&self) {
        self.wish.send_modify(|w| w.verify += 1);
        self.wake_run();
    }

    /// Ends the run for the session's close, keeping the user's wish to run.
    pub fn halt(&self) {
        self.wish.send_modify(|w| w.halt = true);
        self.wake_run();
    }

    /// The run under way (if any) looks again at what it waits for: the wish, its settings.
    pub(crate) fn wake_run(&self) {
        if let Some(l) = &*self.live.lock().unwrap_or_else(|p| p.into_inner()) {
            l.wake_run();
        }
    }

    /// Stops it for good: its driver ends.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.stop();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
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
            let now = Instant::now();
            (m.0.sample_at(now, downloaded), m.1.sample_at(now, uploaded))
        };
        let meta = self.meta();
        let live = self.live();
        // Under one lock each, without copying the pieces (a listing of 10,000 torrents asks
        // this 10,000 times).
        // `known`: the verified pieces are known (checked, or trusted from resume data).
        let (known, pieces_have, pieces, have_bytes, wanted, left, (peers, banned, peers_sending, peers_getting)) =
            match (&live, &meta) {
                (Some(l), _) => {
                    let st = l.state();
                    let have = st.picker.have();
                    let p = &st.picker;
                    let counts = Live::counts_in(&st);
                    (true, have.count(), have.len(), p.bytes_done(), p.wanted_size(), p.wanted_left(), counts)
                }
                (None, Some(m)) => {
                    let prio = self.settings().piece_priorities(&m.info);
                    let have = self.have.lock().unwrap_or_else(|p| p.into_inner());
                    let size = |i: usize| m.info.piece_size(i);
                    let had = |i: usize| have.as_ref().is_some_and(|h| h.get(i));
                    let (mut h, mut w, mut l) = (0, 0, 0);
                    for (i, p) in prio.iter().enumerate() {
                        h += if had(i) { size(i) } else { 0 };
                        w += if *p > 0 { size(i) } else { 0 };
                        l += if *p > 0 && !had(i) { size(i) } else { 0 };
                    }
                    let (ph, pn) = have.as_ref().map_or((0, m.info.piece_count()), |h| (h.count(), h.len()));
                    (have.is_some(), ph, pn, h, w, l, (0, 0, 0, 0))
                }
                (None, None) => (false, 0, 0, 0, 0, 0, (0, 0, 0, 0)),
            };
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
            wanted,
            left,
            down_rate,
            up_rate,
            peers,
            banned,
            peers_sending,
            peers_getting,
            complete: meta.is_some() && known && left == 0,
            completed_after: live.as_ref().and_then(|l| l.completed_after()),
            checked: self.check.lock().unwrap_or_else(|p| p.into_inner()).done.load(Ordering::Relaxed),
            // Not `times()`, which also asks the run for its last activity.
            added_at: self.times.lock().unwrap_or_else(|p| p.into_inner()).added.unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.live().map(|l| l.peer_list()).unwrap_or_default()
    }

    pub fn tracker_list(&self) -> Vec<TrackerStatus> {
        self.live().map(|l| l.trackers.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }

    /// What the trackers said that a client shows as the torrent's error, as Transmission
    /// decides it: a tracker's refusal when it is the torrent's only tracker (with several,
    /// dead ones among them are too common to mean anything), else a tracker's warning.
    pub fn tracker_problem(&self) -> Option<TrackerProblem> {
        let live = self.live()?;
        let list = live.trackers.lock().unwrap_or_else(|p| p.into_inner());
        if let [t] = list.as_slice()
            && !t.ok
            && t.refused
        {
            return Some(TrackerProblem::Error(t.message.clone()));
        }
        list.iter().find(|t| t.ok && t.warned).map(|t| TrackerProblem::Warning(t.message.clone()))
    }

    /// The trackers to announce to.
    fn trackers(&self, meta: &Metainfo) -> Vec<Vec<String>> {
        if self.no_trackers {
            return Vec::new();
        }
        self.settings().trackers.unwrap_or_else(|| meta.trackers())
    }
}

/// Why a run ended.
enum RunEnd {
    /// A seeding limit was reached.
    Finished,
    /// Stopped by the user, or the session is ending.
    Stopped,
    /// A check was asked for.
    Verify,
    /// Every piece is here, and no seeding slot is free: wait for one.
    Requeue,
    Failed(String),
}

/// Keeps a torrent's run held off while it lives (see [`Torrent::hold`]).
pub(crate) struct Hold(Arc<Torrent>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.wish.send_modify(|w| w.hold -= 1);
        self.0.wake_run();
    }
}

/// The torrent's life: fetch the metadata, check, wait for a turn, run; and again after each
/// command. Ends when the session drops the torrent (its wish channel closes).
pub(crate) async fn drive(t: Arc<Torrent>) {
    /// A hold waits for no driver once it has ended, however it ended.
    struct Ended<'a>(&'a Torrent);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.wish.send_modify(|w| w.parked = u64::MAX);
        }
    }
    let _ended = Ended(&t);
    let mut wish = t.wish.subscribe();
    let mut verified_for = wish.borrow().verify;
    loop {
        let w = *wish.borrow_and_update();
        if !w.runs() {
            if !matches!(t.state(), State::Error(_)) {
                t.set_state(State::Stopped);
            }
            if w.parked < w.holds {
                // No step under way: the holds so far may touch the files (this wakes the
                // driver once more, to find it told).
                t.wish.send_modify(|x| x.parked = x.parked.max(w.holds));
            }
            if t.retired.load(Ordering::Acquire) {
                return;
            }
            wish.changed().await;
            continue;
        }
        // 1. The metadata of a magnet link.
        let meta = match t.meta() {
            Some(m) => m,
            None => {
                t.set_state(State::FetchingMetadata);
                // Boxed, as the other long steps below: the driver of every torrent lives as
                // long as it, and its state machine is as large as its largest step's (with
                // the wait for a command beside it, this one's made every torrent's task cell
                // a size class larger).
                let fetched = Box::pin(async {
                    tokio::select! {
                        r = fetch(&t) => Some(r),
                        () = wish.changed() => None,
                    }
                })
                .await;
                match fetched {
                    Some(Ok(m)) => {
                        *t.meta.write().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
                        // Its name, size and files are known now.
                        t.changed();
                        if t.with_settings(|s| s.stop_at_metadata) {
                            // Cleared (and so saved) with the metadata.
                            t.set_settings(|s| s.stop_at_metadata = false);
                            t.stop();
                            continue;
                        }
                        m
                    }
                    Some(Err(e)) => {
                        t.set_state(State::Error(e));
                        t.stop();
                        continue;
                    }
                    None => continue,
                }
            }
        };
        // 2. The check of the data on disk (once, and again when asked).
        if !t.checked.load(Ordering::Acquire) || w.verify != verified_for {
            // Asked for: every piece is checked, whatever resume data says.
            let full = w.verify != verified_for;
            verified_for = w.verify;
            match Box::pin(check(&t, &meta, &mut wish, full)).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    t.set_state(State::Error(e));
                    t.stop();
                    continue;
                }
                None => continue,
            }
        }
        // 3. A turn in the queue.
        let have = t.have().unwrap_or_else(|| Bitfield::new(meta.info.piece_count()));
        let done = {
            let settings = t.set_settings(|_| {}); // sized to the files now that they are known
            settings.piece_priorities(&meta.info).iter().enumerate().all(|(i, p)| *p == 0 || have.get(i))
        };
        if done {
            t.times.lock().unwrap_or_else(|p| p.into_inner()).done.get_or_insert_with(SystemTime::now);
        }
        let kind = if done { Kind::Seed } else { Kind::Download };
        t.set_state(if kind == Kind::Seed { State::SeedQueued } else { State::DownloadQueued });
        // Boxed: the driver of an idle torrent keeps only what its wait needs.
        let slot = Box::pin(async {
            tokio::select! {
                s = t.queue.acquire(t.id, &t.position, kind, w.force) => Some(s),
                () = wish.changed() => None,
            }
        })
        .await;
        let Some(slot) = slot else { continue };
        // 4. A run (its state says so once it serves peers).
        let cfg = {
            let settings = t.settings();
            LiveConfig {
                id: t.id,
                dir: t.dir(),
                paths: settings.paths.clone(),
                writable: !t.seed_only,
                files_ready: t.files_vouched.swap(false, Ordering::AcqRel),
                trackers: t.trackers(&meta),
                peers: t.peers.iter().map(|a| (*a, Source::Given)).collect(),
                max_peers: settings.max_peers.unwrap_or_else(|| t.core.settings().max_peers_per_torrent),
                max_upload_rate: settings.upload_rate(),
                max_download_rate: settings.download_rate(),
                honors_session_limits: settings.honors_session_limits,
                priorities: settings.piece_priorities(&meta.info),
                wanted_files: (0..meta.info.files.len()).map(|i| settings.wanted(i)).collect(),
            }
        };
        let live = match Box::pin(Live::start(t.core.clone(), meta.clone(), have, cfg, t.counters.clone())).await {
            Ok(l) => l,
            Err(e) => {
                drop(slot);
                t.set_state(State::Error(e));
                t.stop();
                continue;
            }
        };
        *t.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
        slot.watch(live.activity());
        t.set_state(if kind == Kind::Seed { State::Seeding } else { State::Downloading });
        t.changed();
        // Public torrents look for peers on the DHT and announce themselves there, until the run ends.
        let dht = crate::dht::register_run(&t.core, &meta, &live);
        let lsd = crate::lsd::register_run(&t.core, &meta, &live);
        let end = Box::pin(run(&t, &live, &slot, &mut wish, verified_for)).await;
        drop((dht, lsd));
        Box::pin(live.shutdown()).await;
        if let Some(a) = live.last_activity() {
            t.times.lock().unwrap_or_else(|p| p.into_inner()).activity = Some(a);
        }
        *t.have.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.have_now());
        *t.live.lock().unwrap_or_else(|p| p.into_inner()) = None;
        drop(slot);
        match end {
            RunEnd::Stopped | RunEnd::Requeue => {}
            RunEnd::Verify => t.checked.store(false, Ordering::Release),
            RunEnd::Finished => {
                t.finished.store(true, Ordering::Relaxed);
                t.stop();
            }
            RunEnd::Failed(e) => {
                t.set_state(State::Error(e));
                t.stop();
            }
        }
    }
}

/// How often a seeding run looks at its seeding limits.
const SEED_LIMITS_EVERY: Duration = Duration::from_secs(5);

/// Waits for what ends a run: a command, an error, a seeding limit reached, or completion when
/// no seeding slot is free (with one free, the run goes on as a seed; and back to a download
/// when more files become wanted).
async fn run(
    t: &Torrent,
    live: &Live,
    slot: &crate::queue::Slot,
    wish: &mut Receiver<'_, Wish>,
    verified_for: u64,
) -> RunEnd {
    // One wake-up for all it waits for (a command, an error, completion, settings): the run
    // of every idle seed lives as long as it, and a wait on each was 700 bytes a torrent.
    let mut done = live.is_complete();
    // Made with the first seeding limit (an interval is a timer on the heap).
    let mut tick: Option<tokio::time::Interval> = None;
    loop {
        let woken = live.run_woken();
        tokio::pin!(woken);
        // Registered before anything is looked at: a change after the look wakes it.
        woken.as_mut().enable();
        if wish.has_changed() {
            let w = *wish.borrow_and_update();
            if !w.runs() {
                return RunEnd::Stopped;
            }
            if w.verify != verified_for {
                return RunEnd::Verify;
            }
        }
        if let Some(m) = live.fatal() {
            return RunEnd::Failed(m);
        }
        let now_done = live.is_complete();
        if now_done != done {
            let kind = if now_done { Kind::Seed } else { Kind::Download };
            if !slot.switch(kind) {
                return RunEnd::Requeue;
            }
            if now_done {
                t.times.lock().unwrap_or_else(|p| p.into_inner()).done = Some(SystemTime::now());
            }
            t.set_state(if now_done { State::Seeding } else { State::Downloading });
            done = now_done;
        }
        // Without a seeding limit, nothing ticks: an idle seed costs no wake-ups.
        let limited = done && t.seed_limits().is_some();
        if !limited {
            tick = None;
        }
        tokio::select! {
            () = &mut woken => {}
            _ = async { tick.get_or_insert_with(|| tokio::time::interval(SEED_LIMITS_EVERY)).tick().await }, if limited => {
                if t.seed_limit_reached(live) {
                    info!("{}: seeding limit reached; stopping", t.name());
                    return RunEnd::Finished;
                }
            }
        }
    }
}

impl Torrent {
    /// The seeding limits in force (ratio, idle minutes, seeding minutes); None without any.
    fn seed_limits(&self) -> Option<(Option<f64>, Option<u64>, Option<u64>)> {
        let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.core.settings();
        let limits = (
            s.seed_ratio.effective(g.seed_ratio),
            s.seed_idle_minutes.effective(g.seed_idle_minutes),
            s.seed_time_minutes.effective(g.seed_time_minutes),
        );
        (limits.0.is_some() || limits.1.is_some() || limits.2.is_some()).then_some(limits)
    }

    /// Whether a seeding limit (ratio, idle time, seeding time) is reached.
    fn seed_limit_reached(&self, live: &Live) -> bool {
        let Some((ratio, idle, time)) = self.seed_limits() else { return false };
        let size = live.meta.info.total_length.max(1);
        let uploaded = self.counters.uploaded.load(Ordering::Relaxed);
        if ratio.is_some_and(|r| uploaded as f64 / size as f64 >= r) {
            return true;
        }
        let times = self.times();
        let now = SystemTime::now();
        let since = |t: Option<SystemTime>| t.and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
        let last = times.activity.max(times.done).max(times.started);
        if idle.is_some_and(|m| since(last) >= Duration::from_secs(m * 60)) {
            return true;
        }
        time.is_some_and(|m| since(times.done.max(times.started)) >= Duration::from_secs(m * 60))
    }
}

/// Resume data of at most this many files is checked against the files (a stat each) on the
/// torrent's own task.
const INLINE_TRUST_FILES: usize = 8;

/// Checks the data on disk when its turn comes. None when a command came first (the check,
/// if it had begun, stops within a batch of pieces).
async fn check(
    t: &Torrent,
    meta: &Arc<Metainfo>,
    wish: &mut Receiver<'_, Wish>,
    full: bool,
) -> Option<Result<(), String>> {
    let n = meta.info.piece_count();
    let layout = t.layout(&meta.info, &t.dir());
    // Resume data, when it fits this torrent, spares the check of what it vouches for.
    let resume = t.resume.lock().unwrap_or_else(|p| p.into_inner()).take();
    let resume = resume.filter(|r| !full && r.have.len() == n && r.files.len() == meta.info.files.len());
    let (trusted, ranges) = match resume {
        // A stat a file: for a few files cheaper here than a hop to a blocking thread (a
        // restart of 10,000 torrents spent most of its time waking those threads).
        Some(r) if r.files.len() <= INLINE_TRUST_FILES => trust(&layout, &r),
        Some(r) => {
            let l = layout.clone();
            match tokio::task::spawn_blocking(move || trust(&l, &r)).await {
                Ok(x) => x,
                Err(e) => return Some(Err(format!("the check failed: {e}"))),
            }
        }
        None => (Bitfield::new(n), std::iter::once(0..n).collect()),
    };
    if ranges.is_empty() {
        let count = trusted.count();
        // Complete, with every file as recorded: the run need not look at the files.
        t.files_vouched.store(trusted.is_full(), Ordering::Release);
        let r = t.checked_as(trusted);
        // Said once the pieces are known to the torrent (what reads the log may ask for them).
        info!("{}: resumed with {count} of {n} pieces, nothing checked", meta.info.name);
        return Some(r);
    }
    t.set_state(State::CheckQueued);
    let _permit = tokio::select! {
        p = t.queue.checking() => p,
        _ = wish.changed() => return None,
    };
    t.set_state(State::Checking);
    let c = Arc::new(Check::default());
    *t.check.lock().unwrap_or_else(|p| p.into_inner()) = c.clone();
    let started = Instant::now();
    let (expected, threads) = (meta.clone(), t.core.settings().check_threads);
    let job = {
        let c = c.clone();
        tokio::task::spawn_blocking(move || {
            bitswarm_storage::verify_pieces_in(&layout, &expected.info.pieces, &ranges, threads, &c.done, &c.stop)
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
    let mut have = trusted;
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
    Some(t.checked_as(have))
}

impl Torrent {
    /// The check found `have`: a seed-only torrent must have everything.
    fn checked_as(&self, have: Bitfield) -> Result<(), String> {
        if self.seed_only && !have.is_full() {
            return Err(format!(
                "{}: {} of {} pieces are missing or damaged; `bitswarm join` downloads the rest",
                self.dir().display(),
                have.len() - have.count(),
                have.len()
            ));
        }
        *self.have.lock().unwrap_or_else(|p| p.into_inner()) = Some(have);
        self.checked.store(true, Ordering::Release);
        self.changed();
        Ok(())
    }
}

/// What resume data vouches for, given the files as they are now: the pieces to trust, and the
/// pieces to check again (ascending ranges).
///
/// * A complete torrent's files do not change under us: a file whose size or modification
///   time is not what was recorded has its pieces checked again; the others are trusted.
/// * An incomplete torrent's files change under our own writes after the last save (so their
///   times move): its recorded pieces are trusted where every file they lie in is there and
///   long enough to hold them; pieces written after the last save are fetched again.
fn trust(layout: &bitswarm_storage::Layout, r: &Resume) -> (Bitfield, Vec<std::ops::Range<usize>>) {
    let stamps: Vec<Option<FileStamp>> = layout
        .files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(&f.path).ok()?;
            let mtime = m.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
            Some(FileStamp { size: m.len(), mtime_ns: mtime.as_nanos() as i64 })
        })
        .collect();
    let mut have = r.have.clone();
    let mut recheck = Bitfield::new(have.len());
    if r.have.is_full() {
        for (i, f) in layout.files.iter().enumerate() {
            if f.padding || f.length == 0 || stamps[i] == r.files[i] {
                continue;
            }
            let first = (f.offset / layout.piece_length) as usize;
            let last = ((f.offset + f.length - 1) / layout.piece_length) as usize;
            for p in first..=last {
                have.clear(p);
                recheck.set(p);
            }
        }
    } else {
        let held: Vec<usize> = have.ones().collect();
        for p in held {
            let (offset, len) = layout.piece_range(p);
            let whole = layout.segments(offset, len).all(|seg| {
                layout.files[seg.file].padding || stamps[seg.file].is_some_and(|s| s.size >= seg.file_offset + seg.len)
            });
            if !whole {
                have.clear(p);
            }
        }
    }
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for p in recheck.ones() {
        match ranges.last_mut() {
            Some(r) if r.end == p => r.end = p + 1,
            _ => ranges.push(p..p + 1),
        }
    }
    (have, ranges)
}

/// The info dictionary of a magnet link, from its peers and trackers, checked against the
/// info-hash.
async fn fetch(t: &Torrent) -> Result<Arc<Metainfo>, String> {
    let magnet = t.magnet.as_ref().ok_or("no metadata and no magnet link")?;
    let s = t.core.settings().clone();
    let q = MetadataQuery {
        info_hash: t.info_hash,
        peer_id: t.core.peer_id,
        port: t.core.listen_addr().port(),
        local: s.listen.ip(),
        peers: t.peers.clone(),
        trackers: if t.no_trackers { Vec::new() } else { magnet.trackers.clone() },
        encryption: s.outgoing_encryption,
        blocklist: t.core.blocklist(),
    };
    let name = t.name();
    // The DHT is asked too (whether the torrent is private is not known before its metadata).
    // And peers that Local Service Discovery hears of: both go to the one receiver.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let dht = crate::dht::register_fetch(&t.core, t.info_hash, tx.clone());
    let lsd = crate::lsd::register_fetch(&t.core, t.info_hash, tx);
    let rx = (dht.is_some() || lsd.is_some()).then_some(rx);
    let fetched = fetch_metadata_with(&q, rx, |m| info!("{name}: metadata: {m}")).await;
    drop((dht, lsd));
    let (info, from) = fetched?;
    info!("{name}: metadata: {} bytes from {from}", info.len());
    *t.metadata_from.lock().unwrap_or_else(|p| p.into_inner()) = Some((info.len(), from));
    let meta = Metainfo::from_info_bytes(&info, &magnet.trackers).map_err(|e| format!("metadata from {from}: {e}"))?;
    if meta.info_hash != t.info_hash {
        // The bytes hashed right; parsed, they must still be that dictionary and nothing else.
        return Err(format!("metadata from {from} is not one info dictionary"));
    }
    Ok(Arc::new(meta))
}

#[cfg(test)]
mod file_op_tests {
    use super::*;

    /// A torrent `t` of two files, `a` (10 bytes) and `d/b` (20).
    fn info() -> bitswarm_metainfo::Info {
        let b = bitswarm_metainfo::TorrentBuilder {
            name: "t".into(),
            piece_length: 16384,
            pieces: vec![[7; 20]],
            files: Some(vec![(vec!["a".into()], 10), (vec!["d".into(), "b".into()], 20)]),
            ..Default::default()
        };
        bitswarm_metainfo::Metainfo::parse(&b.build().0).unwrap().info
    }

    /// A move cut short after its first file: the rest is moved, and the folder is the new one;
    /// a move cut short before or after every file ends the same way.
    #[test]
    fn a_move_cut_short_is_finished() {
        for moved_before in 0..=2 {
            let dir = tempfile::tempdir().unwrap();
            let (from, to) = (dir.path().join("from"), dir.path().join("to"));
            let files = ["t/a", "t/d/b"];
            for (i, f) in files.iter().enumerate() {
                let at = if i < moved_before { &to } else { &from };
                std::fs::create_dir_all(at.join(f).parent().unwrap()).unwrap();
                std::fs::write(at.join(f), f.as_bytes()).unwrap();
            }
            let mut s = TorrentSettings {
                pending: Some(FileOp::Move { from: from.clone(), to: to.clone() }),
                ..TorrentSettings::default()
            };
            assert_eq!(finish_file_op(&info(), &from, &mut s).unwrap(), to);
            assert_eq!(s.pending, None);
            for f in files {
                assert_eq!(std::fs::read(to.join(f)).unwrap(), f.as_bytes(), "{moved_before}: {f}");
                assert!(!from.join(f).exists());
            }
        }
    }

    /// A move that fails part-way (here a file where a folder must go) puts back what it moved
    /// and says why; the record's folder is kept.
    #[test]
    fn a_move_that_fails_part_way_puts_back_what_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        for f in ["t/a", "t/d/b"] {
            std::fs::create_dir_all(from.join(f).parent().unwrap()).unwrap();
            std::fs::write(from.join(f), f.as_bytes()).unwrap();
        }
        std::fs::create_dir_all(to.join("t")).unwrap();
        std::fs::write(to.join("t/d"), b"in the way").unwrap();
        let mut s = TorrentSettings {
            pending: Some(FileOp::Move { from: from.clone(), to: to.clone() }),
            ..TorrentSettings::default()
        };
        let e = finish_file_op(&info(), &from, &mut s).unwrap_err();
        assert!(e.contains("t/d"), "{e}");
        assert_eq!(s.pending, None);
        for f in ["t/a", "t/d/b"] {
            assert_eq!(std::fs::read(from.join(f)).unwrap(), f.as_bytes(), "{f} is back");
        }
        assert!(!to.join("t/a").exists());
    }

    /// A rename cut short before the rename is made, or after: the names are the new ones and
    /// the folder is renamed; one refused because the name was taken changes nothing.
    #[test]
    fn a_rename_cut_short_is_finished() {
        let paths = vec!["t/a".to_owned(), "t/e/b".to_owned()];
        for (renamed, taken) in [(false, false), (true, false), (false, true)] {
            let dir = tempfile::tempdir().unwrap();
            let (from, to) = (dir.path().join("t/d"), dir.path().join("t/e"));
            std::fs::create_dir_all(if renamed { &to } else { &from }).unwrap();
            if taken {
                std::fs::create_dir_all(&to).unwrap();
            }
            let op = FileOp::Rename { from: from.clone(), to: to.clone(), paths: paths.clone(), name: None };
            let mut s = TorrentSettings { pending: Some(op), ..TorrentSettings::default() };
            assert_eq!(finish_file_op(&info(), dir.path(), &mut s).unwrap(), dir.path());
            assert_eq!(s.pending, None);
            if taken {
                assert_eq!(s.paths, None, "nothing renamed");
                assert!(from.exists());
            } else {
                assert_eq!(s.paths.as_ref(), Some(&paths));
                assert!(to.exists() && !from.exists());
            }
        }
    }
}
