//! `bitswarm daemon`: many torrents in one session, their state kept in SQLite
//! (`bitswarm-state`), driven through Transmission's RPC (`bitswarm-rpc`), with a watch folder
//! and Prometheus metrics.
//!
//! * [`Daemon::start`] opens the state folder (one process at a time), starts the session,
//!   brings back every torrent in its state (its verified pieces from its resume data, its
//!   settings, its id and place in the queue), then serves the RPC.
//! * Every change is written behind the scenes: records when a torrent is added or its settings
//!   change, resume data every few seconds while a torrent changes, so that a `kill -9` costs at
//!   most the last seconds of progress.

mod backend;
pub mod config;
mod create;
mod metrics;
mod schedule;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bitswarm_metainfo::{InfoHash, Magnet, Metainfo};
use bitswarm_peer::{AddSource, AddTorrent, FileStamp, Resume, Session, TorrentHandle, TorrentSettings};
use bitswarm_state::{Record, Store};
use bitswarm_wire::Bitfield;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{Config, DEFAULT_TOML};

/// The largest .torrent file the daemon reads (a file, a URL, the watch folder, the RPC).
pub const MAX_TORRENT_SIZE: usize = 64 << 20;

/// How often changed torrents' resume data is saved: at most this much progress is fetched
/// again after a `kill -9`.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// The blocklist as last fetched, in the state folder.
pub(crate) const BLOCKLIST_FILE: &str = "blocklist";
/// The most a fetched blocklist may weigh (Transmission users' usual lists, gzipped, are a
/// few MB).
pub(crate) const MAX_BLOCKLIST: usize = 64 << 20;

/// How often the watch folder is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("state: {0}")]
    State(#[from] bitswarm_state::StateError),
    #[error("{0}")]
    Session(#[from] bitswarm_peer::SessionError),
    #[error("cannot listen on {0} (RPC): {1}")]
    Rpc(SocketAddr, std::io::Error),
}

/// Settings a client may change while the daemon runs (kept in the state database; they
/// override the configuration file's).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Runtime {
    pub download_dir: PathBuf,
    /// Where new downloads are written until complete (`incomplete-dir`; None: never set), and
    /// whether it is used (`incomplete-dir-enabled`).
    pub incomplete_dir: Option<PathBuf>,
    pub incomplete_dir_enabled: bool,
    /// Where `blocklist-update` fetches the blocklist (`blocklist-url`), and whether the list
    /// held is in force (`blocklist-enabled`).
    pub blocklist_url: String,
    pub blocklist_enabled: bool,
    pub start_added: bool,
    /// kB/s (Transmission's units), and whether the limits are on.
    pub speed_limit_down: u32,
    pub speed_limit_down_enabled: bool,
    pub speed_limit_up: u32,
    pub speed_limit_up_enabled: bool,
    pub download_queue_size: u32,
    pub download_queue_enabled: bool,
    pub seed_queue_size: u32,
    pub seed_queue_enabled: bool,
    /// A running torrent idle this long no longer counts against the queue sizes
    /// (`queue-stalled-enabled`, `queue-stalled-minutes`).
    pub queue_stalled_enabled: bool,
    pub queue_stalled_minutes: u32,
    pub seed_ratio_limit: f64,
    pub seed_ratio_limited: bool,
    pub idle_seeding_limit: u32,
    pub idle_seeding_limit_enabled: bool,
    pub peer_limit_global: u32,
    pub peer_limit_per_torrent: u32,
    pub encryption: String,
    /// `dht-enabled` as a client set it (None: as the configuration file says).
    pub dht_enabled: Option<bool>,
    /// Transmission's alternative ("turtle") limits in kB/s: while on, they replace the
    /// regular ones (on or off) for every torrent that honors the session's limits.
    pub alt_speed_enabled: bool,
    pub alt_speed_down: u32,
    pub alt_speed_up: u32,
    /// The schedule that turns them on and off (`alt-speed-time-*`, see [`schedule`]).
    pub alt_speed_time_enabled: bool,
    pub alt_speed_time_begin: u32,
    pub alt_speed_time_end: u32,
    pub alt_speed_time_day: u32,
    /// The watch folder as a client set it (`watch-dir`, `watch-dir-enabled`); `None`: the
    /// configuration file's (on when it names one).
    pub watch_dir: Option<PathBuf>,
    pub watch_dir_enabled: Option<bool>,
    /// Local Service Discovery on or off, once a client said (None: as the configuration says).
    pub lpd_enabled: Option<bool>,
    /// The peer port a client set (`peer-port`; the port bound when it asked for 0), kept over
    /// the configuration's and `--port` (None: theirs). A restart that cannot bind it falls
    /// back to the configuration's, with a warning.
    pub peer_port: Option<u16>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::from_config(&Config::default(), PathBuf::new())
    }
}

impl Runtime {
    fn from_config(c: &Config, download_dir: PathBuf) -> Runtime {
        let kb = |rate: u64| (rate / 1000) as u32;
        Runtime {
            download_dir,
            incomplete_dir: None,
            incomplete_dir_enabled: false,
            // Transmission's defaults.
            blocklist_url: "http://www.example.com/blocklist".to_owned(),
            blocklist_enabled: false,
            start_added: c.daemon.start_added,
            speed_limit_down: if c.limits.max_download_rate > 0 { kb(c.limits.max_download_rate) } else { 100 },
            speed_limit_down_enabled: c.limits.max_download_rate > 0,
            speed_limit_up: if c.limits.max_upload_rate > 0 { kb(c.limits.max_upload_rate) } else { 100 },
            speed_limit_up_enabled: c.limits.max_upload_rate > 0,
            download_queue_size: if c.queue.max_downloading > 0 { c.queue.max_downloading as u32 } else { 5 },
            download_queue_enabled: c.queue.max_downloading > 0,
            seed_queue_size: if c.queue.max_seeding > 0 { c.queue.max_seeding as u32 } else { 10 },
            seed_queue_enabled: c.queue.max_seeding > 0,
            // Transmission's defaults.
            queue_stalled_enabled: true,
            queue_stalled_minutes: 30,
            seed_ratio_limit: if c.seeding.ratio_limit > 0.0 { c.seeding.ratio_limit } else { 2.0 },
            seed_ratio_limited: c.seeding.ratio_limit > 0.0,
            idle_seeding_limit: if c.seeding.idle_limit_minutes > 0 { c.seeding.idle_limit_minutes as u32 } else { 30 },
            idle_seeding_limit_enabled: c.seeding.idle_limit_minutes > 0,
            peer_limit_global: c.peers.max_connections as u32,
            peer_limit_per_torrent: c.peers.max_per_torrent as u32,
            encryption: c.peers.encryption.clone(),
            dht_enabled: None,
            alt_speed_enabled: false,
            alt_speed_down: 50,
            alt_speed_up: 50,
            // Transmission's defaults: 9:00 to 17:00 every day, off.
            alt_speed_time_enabled: false,
            alt_speed_time_begin: 540,
            alt_speed_time_end: 1020,
            alt_speed_time_day: schedule::ALL_DAYS,
            watch_dir: None,
            watch_dir_enabled: None,
            lpd_enabled: None,
            peer_port: None,
        }
    }

    /// The watch folder in force, if any: a client's choice over the configuration's.
    pub(crate) fn watching(&self, configured: &Path) -> Option<PathBuf> {
        let dir = self.watch_dir.clone().unwrap_or_else(|| configured.to_owned());
        let on = self.watch_dir_enabled.unwrap_or(!configured.as_os_str().is_empty());
        (on && !dir.as_os_str().is_empty()).then_some(dir)
    }

    /// Puts these settings into the session.
    fn apply(&self, session: &Session) {
        session.set_settings(|s| {
            if self.alt_speed_enabled {
                // 0 would mean "no limit" to the session: the slowest it can be is 1 kB/s.
                s.max_download_rate = u64::from(self.alt_speed_down.max(1)) * 1000;
                s.max_upload_rate = u64::from(self.alt_speed_up.max(1)) * 1000;
            } else {
                s.max_download_rate =
                    if self.speed_limit_down_enabled { u64::from(self.speed_limit_down) * 1000 } else { 0 };
                s.max_upload_rate = if self.speed_limit_up_enabled { u64::from(self.speed_limit_up) * 1000 } else { 0 };
            }
            s.max_downloading = self.download_queue_enabled.then_some(self.download_queue_size as usize);
            s.max_seeding = self.seed_queue_enabled.then_some(self.seed_queue_size as usize);
            s.queue_stalled = self
                .queue_stalled_enabled
                .then_some(std::time::Duration::from_secs(u64::from(self.queue_stalled_minutes) * 60));
            s.seed_ratio = self.seed_ratio_limited.then_some(self.seed_ratio_limit);
            s.seed_idle_minutes = self.idle_seeding_limit_enabled.then_some(u64::from(self.idle_seeding_limit));
            s.max_connections = self.peer_limit_global.max(1) as usize;
            s.max_peers_per_torrent = self.peer_limit_per_torrent.max(1) as usize;
            (s.outgoing_encryption, s.incoming_encryption) = config::encryption(&self.encryption);
            if let Some(on) = self.lpd_enabled {
                s.lsd = on;
            }
        });
    }
}

/// The daemon's shared state: the session, the store, and what the RPC needs besides.
pub struct Daemon {
    session: Session,
    store: Store,
    state_dir: PathBuf,
    runtime: Mutex<Runtime>,
    /// Torrents removed lately, and when (torrent-get's `removed`).
    removed: Mutex<VecDeque<(u32, Instant)>>,
    started: Instant,
    /// Cumulative counters as loaded, before this run.
    counters_before: bitswarm_state::Counters,
    /// Data files created this run (Transmission's `filesAdded`).
    files_added: AtomicU64,
    /// Requests the RPC answered.
    pub(crate) rpc_requests: AtomicU64,
    /// Set by session-close or a signal: the daemon stops.
    closing: watch::Sender<bool>,
    /// What was last written of each torrent, so that only what changed is written again.
    saved: Mutex<HashMap<u32, Saved>>,
    /// Moves of completed downloads out of the incomplete folder under way (a shutdown waits
    /// for them: the data and the record of where it is must agree), and the torrents whose
    /// move failed this run (not tried again before a restart).
    moves: Mutex<(tokio::task::JoinSet<()>, std::collections::HashSet<u32>)>,
    /// The blocklist held (fetched by `blocklist-update`, kept in the state folder as
    /// [`BLOCKLIST_FILE`]); in force while `blocklist-enabled`.
    pub(crate) blocklist: Mutex<Option<Arc<bitswarm_peer::Blocklist>>>,
    /// One `blocklist-update` at a time.
    pub(crate) blocklist_update: tokio::sync::Mutex<()>,
    /// This daemon, for the work it starts that outlives a request (making a torrent).
    me: std::sync::Weak<Daemon>,
    /// The folders torrents may be made from (`daemon.create_dirs`).
    create_dirs: Vec<PathBuf>,
    /// Torrents being made, and those made lately.
    jobs: Mutex<create::Jobs>,
    /// The configuration file's watch folder (a client may set another).
    config_watch_dir: PathBuf,
    /// The tracker the daemon runs besides (`[tracker]`).
    tracker: Option<TrackerRun>,
    /// The alt-speed schedule changed: its timer looks again.
    schedule_changed: tokio::sync::Notify,
}

/// The tracker the daemon runs: what its view needs, and the handle that stops it.
pub(crate) struct TrackerRun {
    pub shared: Arc<bitswarm_tracker::Shared>,
    /// Its announce URLs.
    pub urls: Vec<String>,
    handle: Mutex<Option<bitswarm_tracker::Handle>>,
}

/// What the database holds of a torrent, as fingerprints (a torrent's state moving, its rates
/// or its trackers' answers change nothing there).
#[derive(Debug, Default, Clone, Copy)]
struct Saved {
    record: u64,
    /// The resume data but for its time counters, which move all the time while it runs.
    resume: u64,
    /// Those counters (seconds downloading + seeding) as written.
    seconds: u64,
}

/// So many torrents changing between two saves is a burst of work (see [`give_back_memory`]).
const BURST: usize = 100;

/// Returns the allocator's free memory to the system (glibc keeps it, in every thread's arena).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Time counters alone are written again after this much more (and at every clean stop).
const SECONDS_SLACK: u64 = 300;

fn record_fingerprint(r: &Record) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (r.info_hash.0, r.id, &r.name, r.metainfo.as_deref(), &r.magnet, &r.download_dir).hash(&mut h);
    (r.added_at, r.queue_position, &r.labels, &r.settings).hash(&mut h);
    h.finish()
}

fn resume_fingerprint(r: &bitswarm_state::Resume) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (r.pieces.count(), r.pieces.to_bitfield(), &r.files, r.running).hash(&mut h);
    (r.uploaded, r.downloaded, r.corrupt, r.done_date, r.activity_date).hash(&mut h);
    h.finish()
}

/// A running daemon.
pub struct Running {
    pub daemon: Arc<Daemon>,
    /// Where the RPC (and /metrics) listens.
    pub rpc_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// The announce URLs of the tracker the daemon runs, if it runs one.
    pub fn tracker_urls(&self) -> Vec<String> {
        self.tracker.as_ref().map(|t| t.urls.clone()).unwrap_or_default()
    }

    /// Opens the state, starts the session and brings back every torrent, then serves the RPC.
    pub async fn start(config: Config) -> Result<Running, DaemonError> {
        config.check()?;
        let rpc_config = config.rpc_config()?;
        let state_dir = config.state_dir()?;
        let download_dir = config.download_dir()?;
        let (store, loaded, finished) = {
            let dir = state_dir.clone();
            tokio::task::spawn_blocking(move || {
                Store::open(&dir).map(|(store, mut loaded)| {
                    let finished = finish_file_ops(&mut loaded.torrents);
                    (store, loaded, finished)
                })
            })
            .await
            .map_err(|e| DaemonError::Config(config::ConfigError::Invalid(e.to_string())))??
        };
        for p in &loaded.problems {
            warn!("state: {p}");
        }
        // Settings a client changed (kept in the database) over the configuration file's.
        let mut runtime = Runtime::from_config(&config, download_dir);
        if let Some(saved) = loaded.settings.get("runtime").and_then(|t| serde_json::from_str::<Runtime>(t).ok()) {
            runtime = saved;
        }
        let mut settings = config.session_settings();
        settings.dht = runtime.dht_enabled.unwrap_or(settings.dht);
        // LSD kept off by a client never opens its sockets, not even at the start.
        settings.lsd = runtime.lpd_enabled.unwrap_or(settings.lsd);
        let configured = settings.listen;
        if let Some(port) = runtime.peer_port {
            settings.listen.set_port(port);
        }
        let session = match Session::start(settings.clone()).await {
            Err(bitswarm_peer::SessionError::Listen(a, e)) if a != configured => {
                warn!("peers: cannot listen on {a} (the port a client set): {e}; on {configured} instead");
                settings.listen = configured;
                runtime.peer_port = None;
                Session::start(settings).await?
            }
            r => r?,
        };
        runtime.apply(&session);
        let tracker = match config.tracker.enabled {
            true => {
                let c = config.tracker_config()?;
                let t = bitswarm_tracker::Tracker::start(c)
                    .await
                    .map_err(|e| DaemonError::Config(config::ConfigError::Invalid(format!("tracker: {e}"))))?;
                let urls: Vec<String> = [t.http_announce_url(), t.udp_announce_url()].into_iter().flatten().collect();
                for url in &urls {
                    info!("tracker: {url}");
                }
                Some(TrackerRun { shared: t.shared().clone(), urls, handle: Mutex::new(Some(t)) })
            }
            false => None,
        };
        let create_dirs = config.create_dirs()?;
        let daemon = Arc::new_cyclic(|me| Daemon {
            session,
            store,
            state_dir,
            runtime: Mutex::new(runtime),
            removed: Mutex::new(VecDeque::new()),
            started: Instant::now(),
            counters_before: loaded.counters,
            files_added: AtomicU64::new(0),
            rpc_requests: AtomicU64::new(0),
            closing: watch::channel(false).0,
            saved: Mutex::new(HashMap::new()),
            moves: Mutex::new(Default::default()),
            blocklist: Mutex::new(None),
            blocklist_update: tokio::sync::Mutex::new(()),
            me: me.clone(),
            create_dirs,
            jobs: Mutex::new(create::Jobs::default()),
            config_watch_dir: config.daemon.watch_dir.clone(),
            tracker,
            schedule_changed: tokio::sync::Notify::new(),
        });
        daemon.load_blocklist().await;
        let restored = daemon.restore(loaded.torrents);
        info!("{restored} torrents restored from {}", daemon.state_dir.display());
        // Their records as they are now, the move or rename done, written and committed
        // before anything else happens to them (restore took the finished records'
        // fingerprints as written: forgotten, so that they are).
        if !finished.is_empty() {
            let d = daemon.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for id in finished {
                    if let Some(h) = d.session.get(id) {
                        d.saved.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default().record = 0;
                        d.save_record(&h);
                    }
                }
                if let Err(e) = d.store.flush() {
                    warn!("state: the records of the moves and renames finished: {e}");
                }
            })
            .await;
        }
        // A move or a rename of a torrent's files is written down, with its resume data, and
        // waited for, before it starts (see bitswarm_peer::FileOp).
        let me = Arc::downgrade(&daemon);
        daemon.session.set_journal(Arc::new(move |id| {
            let me = me.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    let Some(d) = me.upgrade() else { return Err("the daemon is closing".to_owned()) };
                    if let Some(h) = d.session.get(id) {
                        // Its resume data too, exact now that its run is held: the next start
                        // trusts it where the files' stamps agree, and one written while the
                        // last pieces came may list fewer than are there (a file's time moves
                        // by the clock's tick, not with each write).
                        d.save_resume(&h, true);
                        d.save_record(&h);
                    }
                    d.store.flush().map_err(|e| {
                        warn!("state: a torrent's record before moving its files: {e}");
                        e.to_string()
                    })
                })
                .await
                .map_err(|e| e.to_string())?
            })
        }));
        // Downloads that completed in the incomplete folder and were not moved (a move that
        // failed, or cut short): moved now if they are complete, whatever their state.
        daemon.move_completed(&daemon.session.torrents());

        let listener =
            tokio::net::TcpListener::bind(config.rpc.bind).await.map_err(|e| DaemonError::Rpc(config.rpc.bind, e))?;
        let rpc_addr = listener.local_addr().map_err(|e| DaemonError::Rpc(config.rpc.bind, e))?;
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics::serve))
            .with_state(daemon.clone())
            .merge(bitswarm_rpc::router(daemon.clone(), rpc_config))
            .layer(axum::middleware::from_fn_with_state(daemon.clone(), metrics::count_requests));
        let mut closing = daemon.closing.subscribe();
        let server = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            let stop = async move {
                let _ = closing.wait_for(|c| *c).await;
            };
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(stop).await {
                warn!("RPC server: {e}");
            }
        });
        let tasks = vec![
            tokio::spawn(save_loop(daemon.clone())),
            tokio::spawn(watch_loop(daemon.clone())),
            tokio::spawn(schedule_loop(daemon.clone())),
        ];
        Ok(Running { daemon, rpc_addr, server, tasks })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Resolves when a client asked the daemon to close (session-close).
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Adds every stored torrent back, in its state; returns how many.
    fn restore(&self, stored: Vec<bitswarm_state::Stored>) -> usize {
        let mut n = 0;
        for s in stored {
            let r = &s.record;
            let source = match (&r.metainfo, &r.magnet) {
                (Some(bytes), _) => match Metainfo::parse(bytes) {
                    Ok(m) => AddSource::Metainfo(Arc::new(m)),
                    Err(e) => {
                        warn!("state: torrent {} ({}): its .torrent does not parse: {e}", r.id, r.name);
                        continue;
                    }
                },
                (None, Some(link)) => match Magnet::parse(link) {
                    Ok(m) => AddSource::Magnet(m),
                    Err(e) => {
                        warn!("state: torrent {} ({}): {e}", r.id, r.name);
                        continue;
                    }
                },
                (None, None) => continue,
            };
            let mut add = AddTorrent::new(source, r.download_dir.clone());
            add.id = Some(r.id);
            add.added_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(r.added_at.max(0) as u64));
            add.queue_position = Some(u64::from(r.queue_position));
            add.settings = serde_json::from_str(&r.settings).unwrap_or_default();
            add.settings.labels = r.labels.clone();
            add.paused = !s.resume.as_ref().is_none_or(|x| x.running);
            add.resume = s.resume.as_ref().map(resume_from_state);
            match self.session.add(add) {
                Ok(h) => {
                    n += 1;
                    let saved = Saved {
                        record: record_fingerprint(r),
                        resume: s.resume.as_ref().map_or(0, resume_fingerprint),
                        seconds: s.resume.as_ref().map_or(0, |r| r.seconds_downloading + r.seconds_seeding),
                    };
                    self.saved.lock().unwrap_or_else(|p| p.into_inner()).insert(h.id(), saved);
                }
                Err(e) => warn!("state: torrent {}: {e}", r.id),
            }
        }
        n
    }

    /// Adds a torrent and records it.
    pub(crate) fn add_torrent(
        &self,
        source: AddSource,
        dir: Option<PathBuf>,
        paused: Option<bool>,
        settings: TorrentSettings,
        stop_at_metadata: bool,
    ) -> Result<(TorrentHandle, bool), String> {
        let (default_dir, start_added, incomplete) = {
            let r = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
            (r.download_dir.clone(), r.start_added, r.incomplete_dir.clone().filter(|_| r.incomplete_dir_enabled))
        };
        let dir = dir.unwrap_or(default_dir);
        let mut settings = settings;
        // With an incomplete folder, written there and moved to `dir` once complete (see
        // `move_completed`), unless its data is in `dir` already (a torrent added to seed).
        let dir = match incomplete {
            Some(inc) if inc != dir && !data_in(&source, &dir) => {
                settings.complete_dir = Some(dir);
                inc
            }
            _ => dir,
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut add = AddTorrent::new(source, dir);
        add.paused = paused.unwrap_or(!start_added);
        add.settings = settings;
        add.stop_at_metadata = stop_at_metadata;
        match self.session.add(add) {
            Ok(h) => {
                self.save_record(&h);
                Ok((h, true))
            }
            Err(bitswarm_peer::AddError::Duplicate(h)) => Ok((h, false)),
        }
    }

    /// The torrent's record (what it is, where, its settings), written behind when it changed.
    pub(crate) fn save_record(&self, h: &TorrentHandle) {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        // Removed meanwhile (the save loop took it before): not written back. Looked at, and
        // written, under the lock that `forget` removes the record under.
        if h.is_removed() {
            return;
        }
        // Made under the lock too: a record made before another one (the journal's, just
        // before a move) and written after it would undo it.
        let record = self.record_of(h);
        let fp = record_fingerprint(&record);
        let s = saved.entry(h.id()).or_default();
        if s.record == fp {
            return;
        }
        s.record = fp;
        self.store.put_torrent(record);
    }

    /// The torrent's resume data, written behind when it changed (its time counters alone:
    /// when they moved by [`SECONDS_SLACK`], or at all when `exact`).
    fn save_resume(&self, h: &TorrentHandle, exact: bool) {
        // Made and queued under the lock, as the record is (see save_record): resume data made
        // before the journal's and queued after it would list fewer pieces than the files hold.
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        // Removed meanwhile: no entry made again (the store drops resume data of a torrent
        // it does not hold).
        if h.is_removed() {
            return;
        }
        let Some(r) = h.resume() else { return };
        let r = resume_to_state(&r);
        let (fp, seconds) = (resume_fingerprint(&r), r.seconds_downloading + r.seconds_seeding);
        let s = saved.entry(h.id()).or_default();
        let slack = if exact { 0 } else { SECONDS_SLACK };
        if s.resume == fp && seconds.abs_diff(s.seconds) <= slack {
            return;
        }
        (s.resume, s.seconds) = (fp, seconds);
        self.store.put_resume(h.info_hash(), r);
    }

    fn record_of(&self, h: &TorrentHandle) -> Record {
        let settings = h.settings();
        // The .torrent as it was added, or, for a magnet link whose metadata came, the one
        // made of its info dictionary and trackers (the metainfo holds the bytes it was read
        // from: no copy is kept for this).
        let metainfo = h.metainfo().map(|m| m.torrent_bytes().clone());
        let t = h.times();
        let unix = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs() as i64)
        };
        Record {
            info_hash: h.info_hash(),
            id: h.id(),
            name: h.name(),
            // A magnet link is kept only while it is the torrent's source: once the metadata
            // came, the .torrent holds all it had and more.
            magnet: if metainfo.is_none() { Some(magnet_of(h)) } else { None },
            metainfo,
            download_dir: h.dir(),
            added_at: unix(t.added),
            queue_position: h.queue_position() as u32,
            labels: settings.labels.clone(),
            settings: settings_json(&settings),
        }
    }

    /// The session settings a client changed, kept for the next start.
    pub(crate) fn save_runtime(&self) {
        let r = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).clone();
        r.apply(&self.session);
        if let Ok(text) = serde_json::to_string(&r) {
            self.store.put_setting("runtime", text);
        }
    }

    /// A torrent taken out of the session: its record goes, and it is in torrent-get's
    /// `removed` from now on.
    pub(crate) fn forget(&self, id: u32, info_hash: InfoHash) {
        {
            let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
            saved.remove(&id);
            self.store.remove(info_hash);
        }
        let mut r = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        r.push_back((id, Instant::now()));
        while r.front().is_some_and(|(_, t)| t.elapsed() > Duration::from_secs(bitswarm_rpc::RECENT_SECONDS)) {
            r.pop_front();
        }
        drop(r);
        // A held torrent-get answers with it.
        self.session.bump();
    }

    /// Writes what changed of the torrents that changed since the last look (of all of them
    /// when `last`, the time counters exactly); on the blocking threads (it reads file times).
    /// Returns whether that was a burst of work; starts moving the downloads that completed in
    /// the incomplete folder.
    fn save_changed(&self, last: bool) -> bool {
        let changed = self.session.take_changed();
        let busy = changed.len() >= BURST;
        let all = if last { self.session.torrents() } else { changed };
        if !last {
            self.move_completed(&all);
        }
        for h in all {
            self.save_resume(&h, last);
            // The record too: a magnet link's metadata, a move, a queue change.
            self.save_record(&h);
        }
        busy
    }

    /// Moves those of `torrents` downloaded in the incomplete folder that are complete now to
    /// their download folder, each on a task of its own (once: not while one is under way, not
    /// again this run after one failed).
    fn move_completed(&self, torrents: &[TorrentHandle]) {
        let Some(me) = self.me.upgrade() else { return };
        let mut moves = self.moves.lock().unwrap_or_else(|p| p.into_inner());
        let (tasks, skip) = &mut *moves;
        while tasks.try_join_next().is_some() {}
        for h in torrents {
            if h.with_settings(|s| s.complete_dir.is_none()) || !h.wanted_complete() || !skip.insert(h.id()) {
                continue;
            }
            let (d, h) = (me.clone(), h.clone());
            tasks.spawn(async move {
                let failed = match h.move_completed().await {
                    Some(Ok(to)) => {
                        info!("{}: complete, moved to {}", h.name(), to.display());
                        false
                    }
                    Some(Err(e)) => {
                        warn!("{}: complete, but left where it is: {e}", h.name());
                        true
                    }
                    None => false,
                };
                d.save_record(&h);
                if !failed {
                    d.moves.lock().unwrap_or_else(|p| p.into_inner()).1.remove(&h.id());
                }
            });
        }
    }

    /// Reads the blocklist kept in the state folder, if any (off the async threads), and puts
    /// it in force when it is on.
    async fn load_blocklist(&self) {
        let path = self.state_dir.join(BLOCKLIST_FILE);
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(&p).map(|b| bitswarm_peer::Blocklist::parse(&b)))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match read {
            Ok(Ok(list)) => {
                info!("blocklist: {} rules from {}", list.rules(), path.display());
                *self.blocklist.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(list));
            }
            Ok(Err(e)) => warn!("blocklist {}: {e}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("blocklist {}: {e}", path.display()),
        }
        self.apply_blocklist();
    }

    /// Puts the blocklist held in force, or none, as `blocklist-enabled` says.
    pub(crate) fn apply_blocklist(&self) {
        let on = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).blocklist_enabled;
        let list = self.blocklist.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.session.set_blocklist(list.filter(|_| on));
    }

    /// Waits for the moves under way (see [`Daemon::move_completed`]).
    async fn finish_moves(&self) {
        let mut tasks = std::mem::take(&mut self.moves.lock().unwrap_or_else(|p| p.into_inner()).0);
        if !tasks.is_empty() {
            info!("waiting for {} completed downloads to be moved", tasks.len());
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Stops every torrent (each tells its trackers), saves everything, and waits for the
    /// database.
    async fn shutdown(&self) {
        self.finish_moves().await;
        self.session.shutdown().await;
        let tracker = self.tracker.as_ref().and_then(|t| t.handle.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = tracker {
            t.shutdown().await;
        }
        let _ = self.save_changed(true);
        self.store.add_counters(self.counters_now());
        if let Err(e) = self.store.flush() {
            warn!("state: {e}");
        }
    }

    /// This run's counters (added to the stored ones at the end).
    fn counters_now(&self) -> bitswarm_state::Counters {
        let (down, up) = self.session.transferred();
        bitswarm_state::Counters {
            uploaded: up,
            downloaded: down,
            files_added: self.files_added.load(Ordering::Relaxed),
            seconds_active: self.started.elapsed().as_secs(),
            session_count: 0,
        }
    }
}

impl Running {
    /// Stops the daemon: the RPC stops taking requests, every torrent stops (telling its
    /// trackers), and everything is saved.
    pub async fn shutdown(self) {
        self.daemon.close();
        let _ = self.server.await;
        for t in &self.tasks {
            t.abort();
        }
        self.daemon.shutdown().await;
    }
}

/// Every [`SAVE_EVERY`], what changed goes to the database.
async fn save_loop(d: Arc<Daemon>) {
    let mut was_busy = false;
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let d2 = d.clone();
        let busy = tokio::task::spawn_blocking(move || d2.save_changed(false)).await.unwrap_or(false);
        // A burst of work (thousands of torrents added or checked) just ended: the memory it
        // freed goes back to the system, not kept by the allocator for the next burst.
        if was_busy && !busy {
            tokio::task::spawn_blocking(give_back_memory);
        }
        was_busy = busy;
    }
}

/// Whether some of the torrent's files are in `dir` (for a magnet link, not known: no).
fn data_in(source: &AddSource, dir: &Path) -> bool {
    match source {
        AddSource::Metainfo(m) => m.info.files.iter().any(|f| !f.padding && dir.join(m.info.relative_path(f)).exists()),
        AddSource::Magnet(_) => false,
    }
}

/// Every [`WATCH_EVERY`]: each `*.torrent` in the watch folder in force (a client may change
/// it) is added, then renamed `.added` (`.invalid` when it is not a usable torrent).
async fn watch_loop(d: Arc<Daemon>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        let dir = d.runtime.lock().unwrap_or_else(|p| p.into_inner()).watching(&d.config_watch_dir);
        let Some(dir) = dir else { continue };
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "torrent") || !path.is_file() {
                continue;
            }
            let (result, suffix) = match read_capped(&path)
                .and_then(|b| Metainfo::parse(&b).map_err(|e| format!("{}: {e}", path.display())))
            {
                Ok(m) => {
                    let r =
                        d.add_torrent(AddSource::Metainfo(Arc::new(m)), None, None, TorrentSettings::default(), false);
                    (r.map(|_| ()), "added")
                }
                Err(e) => (Err(e), "invalid"),
            };
            if let Err(e) = &result {
                warn!("watch folder: {e}");
            }
            let mut to = path.clone().into_os_string();
            to.push(format!(".{suffix}"));
            if let Err(e) = std::fs::rename(&path, &to) {
                warn!("watch folder: cannot rename {}: {e}", path.display());
            }
        }
    }
}

/// The longest the schedule's timer sleeps: a wall clock set anew (or a machine woken from
/// sleep) is noticed within this.
const SCHEDULE_AT_MOST: Duration = Duration::from_secs(600);

/// The alt-speed schedule: while on, `alt-speed-enabled` is set at each begin and end (and when
/// the schedule itself changes), as Transmission does; a client's toggle in between holds until
/// the next. The timer wakes at the next boundary (or after [`SCHEDULE_AT_MOST`]), not every
/// second.
async fn schedule_loop(d: Arc<Daemon>) {
    // What the schedule last said (None: nothing yet, or it changed since).
    let mut said: Option<bool> = None;
    loop {
        let (enabled, sched) = {
            let r = d.runtime.lock().unwrap_or_else(|p| p.into_inner());
            let s = schedule::Schedule {
                begin: r.alt_speed_time_begin,
                end: r.alt_speed_time_end,
                days: r.alt_speed_time_day,
            };
            (r.alt_speed_time_enabled, s)
        };
        let mut wait = SCHEDULE_AT_MOST;
        if enabled {
            let now = schedule::local_now();
            let on = sched.is_on(now);
            if said != Some(on) {
                said = Some(on);
                let changed = {
                    let mut r = d.runtime.lock().unwrap_or_else(|p| p.into_inner());
                    std::mem::replace(&mut r.alt_speed_enabled, on) != on
                };
                if changed {
                    info!("alt-speed schedule: alternative limits {}", if on { "on" } else { "off" });
                    d.save_runtime();
                }
            }
            if let Some(m) = sched.minutes_to_change(now) {
                let secs = u64::from(m) * 60 - u64::from(now.second.min(59));
                wait = wait.min(Duration::from_secs(secs));
            }
        } else {
            said = None;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = d.schedule_changed.notified() => said = None,
        }
    }
}

/// A .torrent file's bytes, refused past [`MAX_TORRENT_SIZE`].
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut b = Vec::new();
    f.take(MAX_TORRENT_SIZE as u64 + 1).read_to_end(&mut b).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() > MAX_TORRENT_SIZE {
        return Err(format!("{}: larger than {MAX_TORRENT_SIZE} bytes", path.display()));
    }
    Ok(b)
}

/// The magnet link a torrent without its metadata is kept by: the one it was added from, with
/// its trackers and peers.
fn magnet_of(h: &TorrentHandle) -> String {
    match h.magnet() {
        Some(m) => m.to_string(),
        None => Magnet { info_hash: h.info_hash(), name: Some(h.name()), trackers: Vec::new(), peers: Vec::new() }
            .to_string(),
    }
}

/// Finishes the moves and renames of torrents' files that the last run left under way (ended
/// in the middle, `kill -9` say: see [`bitswarm_peer::FileOp`]), before the torrents are added
/// back, so that none finds some of its files moved and downloads them again. Returns their
/// ids: their records are written again once they are added. Blocking file I/O.
fn finish_file_ops(torrents: &mut [bitswarm_state::Stored]) -> Vec<u32> {
    let mut ids = Vec::new();
    for s in torrents {
        let r = &mut s.record;
        let Ok(mut settings) = serde_json::from_str::<TorrentSettings>(&r.settings) else { continue };
        let Some(op) = settings.pending.clone() else { continue };
        let Some(meta) = r.metainfo.as_deref().and_then(|b| Metainfo::parse(b).ok()) else { continue };
        match bitswarm_peer::finish_file_op(&meta.info, &r.download_dir, &mut settings) {
            Ok(dir) => {
                info!("{}: finished what the last run left under way: {op:?}", r.name);
                r.download_dir = dir;
            }
            Err(e) => warn!("{}: could not finish what the last run left under way ({op:?}): {e}", r.name),
        }
        r.settings = settings_json(&settings);
        ids.push(r.id);
    }
    ids
}

/// A torrent's settings as kept: only those that differ from the defaults (most torrents keep
/// `{}`), and not the labels, which have their own column. Read back through
/// `#[serde(default)]`, so a key left out is the default.
fn settings_json(s: &TorrentSettings) -> String {
    static DEFAULT: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(|| serde_json::to_value(TorrentSettings::default()).unwrap_or_default());
    let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(s) else { return "{}".into() };
    m.retain(|k, v| k != "labels" && DEFAULT.get(k) != Some(v));
    serde_json::Value::Object(m).to_string()
}

fn unix_time(t: Option<i64>) -> Option<SystemTime> {
    t.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64))
}

fn unix_secs(t: Option<SystemTime>) -> Option<i64> {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64)
}

fn resume_from_state(r: &bitswarm_state::Resume) -> Resume {
    let n = r.pieces.count() as usize;
    let have = if r.pieces.is_all() {
        Bitfield::full(n)
    } else {
        Bitfield::from_bytes(&r.pieces.to_bitfield(), n).unwrap_or_else(|_| Bitfield::new(n))
    };
    Resume {
        have,
        files: r
            .files
            .iter()
            .map(|f| {
                (*f != bitswarm_state::FileStamp::MISSING).then_some(FileStamp { size: f.size, mtime_ns: f.mtime_ns })
            })
            .collect(),
        downloaded: r.downloaded,
        uploaded: r.uploaded,
        corrupt: r.corrupt,
        seconds_downloading: r.seconds_downloading,
        seconds_seeding: r.seconds_seeding,
        done_at: unix_time(r.done_date),
        activity_at: unix_time(r.activity_date),
        running: r.running,
    }
}

fn resume_to_state(r: &Resume) -> bitswarm_state::Resume {
    let n = r.have.len() as u32;
    let pieces = if r.have.is_full() {
        bitswarm_state::Pieces::all(n)
    } else {
        bitswarm_state::Pieces::from_bitfield(n, r.have.as_bytes().to_vec()).unwrap_or(bitswarm_state::Pieces::none(n))
    };
    bitswarm_state::Resume {
        pieces,
        files: r
            .files
            .iter()
            .map(|f| match f {
                Some(s) => bitswarm_state::FileStamp { size: s.size, mtime_ns: s.mtime_ns },
                None => bitswarm_state::FileStamp::MISSING,
            })
            .collect(),
        running: r.running,
        uploaded: r.uploaded,
        downloaded: r.downloaded,
        corrupt: r.corrupt,
        seconds_downloading: r.seconds_downloading,
        seconds_seeding: r.seconds_seeding,
        done_date: unix_secs(r.done_at),
        activity_date: unix_secs(r.activity_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn alt_speed_limits_replace_the_regular_ones_while_on_and_the_watch_folder_is_chosen() {
        let mut s = bitswarm_peer::Settings::new("127.0.0.1:0".parse().unwrap());
        s.dht = false;
        let session = Session::start(s).await.unwrap();
        let rates = |s: &Session| (s.settings().max_download_rate, s.settings().max_upload_rate);
        let mut r = Runtime {
            speed_limit_down: 500,
            speed_limit_down_enabled: true,
            alt_speed_down: 30,
            alt_speed_up: 0,
            ..Runtime::default()
        };
        r.apply(&session);
        assert_eq!(rates(&session), (500_000, 0));
        r.alt_speed_enabled = true;
        r.apply(&session);
        assert_eq!(rates(&session), (30_000, 1000));
        r.alt_speed_enabled = false;
        r.apply(&session);
        assert_eq!(rates(&session), (500_000, 0));
        session.shutdown().await;

        // The configuration's folder until a client sets one or turns it off.
        assert_eq!(r.watching(Path::new("/w")), Some(PathBuf::from("/w")));
        assert_eq!(r.watching(Path::new("")), None);
        r.watch_dir_enabled = Some(false);
        assert_eq!(r.watching(Path::new("/w")), None);
        r.watch_dir = Some("/x".into());
        r.watch_dir_enabled = Some(true);
        assert_eq!(r.watching(Path::new("/w")), Some(PathBuf::from("/x")));
        assert_eq!(r.watching(Path::new("")), Some(PathBuf::from("/x")));
    }

    #[test]
    fn settings_are_kept_as_what_differs_from_the_defaults() {
        assert_eq!(settings_json(&TorrentSettings::default()), "{}");
        let labelled = TorrentSettings { labels: vec!["tv".into()], ..TorrentSettings::default() };
        assert_eq!(settings_json(&labelled), "{}", "labels have their own column");
        let s = TorrentSettings {
            upload_limit: 7,
            upload_limited: true,
            files: vec![bitswarm_peer::FilePriority::High, bitswarm_peer::FilePriority::Skip],
            ..TorrentSettings::default()
        };
        let text = settings_json(&s);
        assert!(!text.contains("download_limit"), "{text}");
        assert_eq!(serde_json::from_str::<TorrentSettings>(&text).unwrap(), s);
    }
}
