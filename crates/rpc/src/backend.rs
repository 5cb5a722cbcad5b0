//! The [`Backend`] trait the daemon implements, and the requests it receives.
//!
//! The RPC layer does everything that is protocol: it parses and coerces arguments, resolves
//! `ids` to torrent ids, checks paths are absolute and labels well formed, derives the values
//! Transmission computes from others, and writes every reply. The backend only reads and
//! changes torrents by id.

use std::future::Future;
use std::io;
use std::time::Instant;

use crate::hash::InfoHash;
use crate::view::{Encryption, LimitMode, Priority, SessionStats, SessionView, TorrentView};

/// How long a torrent counts as "recently active", and a removed one as recently removed,
/// for `ids: "recently-active"` (Transmission's `RecentlyActiveSeconds`).
pub const RECENT_SECONDS: u64 = 60;

/// Which heavy parts of a [`TorrentView`] a torrent-get needs, derived from its `fields`.
///
/// Everything else in a view is cheap to copy; these are lists as long as the torrent's files,
/// peers, trackers or pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wants {
    /// `files`, `fileStats`, `priorities`, `wanted`, `primary-mime-type`.
    pub files: bool,
    /// `peers`.
    pub peers: bool,
    /// `trackers`, `trackerStats`, `trackerList`, and `magnetLink` (built from the trackers
    /// unless the view carries [`TorrentView::magnet_link`]).
    pub trackers: bool,
    /// `pieces`.
    pub pieces: bool,
    /// `availability`.
    pub availability: bool,
    /// The texts a listing seldom asks: `downloadDir`, `comment`, `creator`, `source`,
    /// `labels`, `webseeds` (a listing of 10,000 made them all, to drop them).
    pub text: bool,
    /// The dates and time counters: `addedDate`, `activityDate`, `doneDate`, `startDate`,
    /// `secondsDownloading`, `secondsSeeding`, and `isStalled`, which is told from them (each a
    /// lock and a clock read a torrent, which a listing of names and states need not pay).
    pub times: bool,
}

impl Wants {
    /// Nothing heavy.
    pub const NONE: Wants = Wants {
        files: false,
        peers: false,
        trackers: false,
        pieces: false,
        availability: false,
        text: false,
        times: false,
    };

    /// What torrent-get needs to answer these field names (unknown names need nothing).
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = &'a str>) -> Wants {
        let mut w = Wants::NONE;
        for f in fields {
            match f {
                "files" | "fileStats" | "priorities" | "wanted" | "primary-mime-type" => w.files = true,
                "peers" => w.peers = true,
                "trackers" | "trackerStats" | "trackerList" | "magnetLink" => w.trackers = true,
                "downloadDir" | "comment" | "creator" | "source" | "labels" | "webseeds" => w.text = true,
                "pieces" => w.pieces = true,
                "availability" => w.availability = true,
                "addedDate" | "activityDate" | "doneDate" | "startDate" | "secondsDownloading" | "secondsSeeding"
                | "isStalled" => w.times = true,
                _ => {}
            }
        }
        w
    }
}

/// What changed since a moment (see [`Backend::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// State or settings changed, or added.
    pub changed: Vec<u32>,
    /// Figures move (transferring, peers connected, checking, active lately), nothing else.
    pub moving: Vec<u32>,
    /// A torrent was removed.
    pub removed: bool,
}

/// Where a torrent to add comes from (torrent-add's `filename` or `metainfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddSource {
    /// A .torrent file on the daemon's host, as the client wrote the path.
    Path(String),
    /// An `http`, `https`, `ftp` or `sftp` URL to fetch the .torrent from, with the client's
    /// `cookies` (`name1=v1; name2=v2`) to send.
    Url { url: String, cookies: Option<String> },
    /// A magnet link, or a bare info hash (40 hex or 32 base32 characters) as given. The
    /// hash is already checked; `link` is what the client sent.
    Magnet { link: String, info_hash: InfoHash },
    /// The bytes of a .torrent file (decoded from `metainfo`'s base64), not yet parsed.
    Metainfo(Vec<u8>),
}

/// A torrent-add request, checked: `download_dir` is absolute and the labels well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    pub source: AddSource,
    /// Absolute; `None` for the session's `download-dir`. It may not exist yet (Sonarr asks
    /// for `<download-dir>/<category>`): create it.
    pub download_dir: Option<String>,
    /// `None`: the session's `start-added-torrents` decides.
    pub paused: Option<bool>,
    /// `None`: the session's `peer-limit-per-torrent`.
    pub peer_limit: Option<u32>,
    pub bandwidth_priority: Option<Priority>,
    /// File indices, applied once the metainfo is known; out-of-range ones are ignored.
    pub files_wanted: Vec<u32>,
    pub files_unwanted: Vec<u32>,
    pub priority_high: Vec<u32>,
    pub priority_low: Vec<u32>,
    pub priority_normal: Vec<u32>,
    /// Trimmed, none empty, none containing a comma.
    pub labels: Vec<String>,
    /// bitswarm's `bitswarm-stop-at-metadata` (for a magnet link): fetch the metadata, then
    /// stop before any data, so that the files to fetch are chosen first. Overrides `paused`.
    pub stop_at_metadata: bool,
}

impl AddRequest {
    /// A request with only a source.
    pub fn new(source: AddSource) -> AddRequest {
        AddRequest {
            source,
            download_dir: None,
            paused: None,
            peer_limit: None,
            bandwidth_priority: None,
            files_wanted: Vec::new(),
            files_unwanted: Vec::new(),
            priority_high: Vec::new(),
            priority_low: Vec::new(),
            priority_normal: Vec::new(),
            labels: Vec::new(),
            stop_at_metadata: false,
        }
    }
}

/// A torrent as torrent-add names it (`torrent-added`, `torrent-duplicate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentRef {
    pub id: u32,
    pub info_hash: InfoHash,
    /// A magnet link's `dn`, or its hash when it has none.
    pub name: String,
}

/// What torrent-add did. Both are a success for Transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added(TorrentRef),
    /// The info hash was there already; nothing about that torrent changed.
    Duplicate(TorrentRef),
}

/// Which files torrent-set's `files-*` and `priority-*` keys name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSelection {
    /// An empty list on the wire: every file.
    All,
    /// These indices; out-of-range ones are reported with
    /// [`BackendError::FileIndexOutOfRange`] after the others are applied.
    Indices(Vec<u32>),
}

/// Every torrent-set key (§4.4), each `None` when absent or of an unusable type. Values are
/// checked: priorities and modes are in range, labels trimmed and valid, `tracker_list` parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TorrentSet {
    pub bandwidth_priority: Option<Priority>,
    /// kB/s.
    pub download_limit: Option<u32>,
    pub download_limited: Option<bool>,
    /// kB/s.
    pub upload_limit: Option<u32>,
    pub upload_limited: Option<bool>,
    pub honors_session_limits: Option<bool>,
    pub files_wanted: Option<FileSelection>,
    pub files_unwanted: Option<FileSelection>,
    pub priority_high: Option<FileSelection>,
    pub priority_low: Option<FileSelection>,
    pub priority_normal: Option<FileSelection>,
    pub peer_limit: Option<u32>,
    /// 0-based.
    pub queue_position: Option<u32>,
    pub seed_ratio_limit: Option<f64>,
    pub seed_ratio_mode: Option<LimitMode>,
    /// Minutes.
    pub seed_idle_limit: Option<u32>,
    pub seed_idle_mode: Option<LimitMode>,
    /// Replaces all labels.
    pub labels: Option<Vec<String>>,
    /// Bandwidth group name (may be stored and otherwise ignored).
    pub group: Option<String>,
    /// Replaces the whole announce list: tiers of announce URLs, each checked to be an
    /// `http`, `https` or `udp` URL with a host.
    pub tracker_list: Option<Vec<Vec<String>>>,
    /// Deprecated but used by Flood: each URL appended as a tier of its own.
    pub tracker_add: Option<Vec<String>>,
    /// Deprecated but used by Flood: tracker ids to remove.
    pub tracker_remove: Option<Vec<u32>>,
    /// Deprecated: (tracker id, new announce URL) pairs.
    pub tracker_replace: Option<Vec<(u32, String)>>,
    /// Sent by Python's `change_torrent(location=…)`; Transmission 4.0.6 ignores it. Treat it
    /// as torrent-set-location without moving, or ignore it.
    pub location: Option<String>,
}

/// Every writable session-set key, each `None` when absent or of an unusable type. Directories
/// are checked to be absolute; fractional numbers (Flood sends bytes/1024) are truncated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionSet {
    pub alt_speed_down: Option<u32>,
    pub alt_speed_enabled: Option<bool>,
    pub alt_speed_time_begin: Option<u32>,
    pub alt_speed_time_day: Option<u32>,
    pub alt_speed_time_enabled: Option<bool>,
    pub alt_speed_time_end: Option<u32>,
    pub alt_speed_up: Option<u32>,
    pub blocklist_enabled: Option<bool>,
    pub blocklist_url: Option<String>,
    pub cache_size_mb: Option<u32>,
    pub default_trackers: Option<String>,
    pub dht_enabled: Option<bool>,
    pub download_dir: Option<String>,
    pub download_queue_enabled: Option<bool>,
    pub download_queue_size: Option<u32>,
    pub encryption: Option<Encryption>,
    pub idle_seeding_limit: Option<u32>,
    pub idle_seeding_limit_enabled: Option<bool>,
    pub incomplete_dir: Option<String>,
    pub incomplete_dir_enabled: Option<bool>,
    pub lpd_enabled: Option<bool>,
    pub peer_limit_global: Option<u32>,
    pub peer_limit_per_torrent: Option<u32>,
    pub peer_port: Option<u16>,
    pub peer_port_random_on_start: Option<bool>,
    pub pex_enabled: Option<bool>,
    pub port_forwarding_enabled: Option<bool>,
    pub queue_stalled_enabled: Option<bool>,
    pub queue_stalled_minutes: Option<u32>,
    pub rename_partial_files: Option<bool>,
    pub script_torrent_added_enabled: Option<bool>,
    pub script_torrent_added_filename: Option<String>,
    pub script_torrent_done_enabled: Option<bool>,
    pub script_torrent_done_filename: Option<String>,
    pub script_torrent_done_seeding_enabled: Option<bool>,
    pub script_torrent_done_seeding_filename: Option<String>,
    pub seed_queue_enabled: Option<bool>,
    pub seed_queue_size: Option<u32>,
    pub seed_ratio_limit: Option<f64>,
    pub seed_ratio_limited: Option<bool>,
    pub speed_limit_down: Option<u32>,
    pub speed_limit_down_enabled: Option<bool>,
    pub speed_limit_up: Option<u32>,
    pub speed_limit_up_enabled: Option<bool>,
    pub start_added_torrents: Option<bool>,
    pub tcp_enabled: Option<bool>,
    pub trash_original_torrent_files: Option<bool>,
    pub utp_enabled: Option<bool>,
    /// bitswarm's (Transmission's settings.json names): the watch folder, checked absolute.
    pub watch_dir: Option<String>,
    pub watch_dir_enabled: Option<bool>,
}

/// A bitswarm-torrent-create request, checked: `path` is absolute, the trackers are announce
/// URLs, the piece size a power of two from 16 KiB to 64 MiB (`None`: chosen for the size).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    /// The file or folder on the daemon's host to make the torrent of.
    pub path: String,
    /// Tiers of announce URLs.
    pub trackers: Vec<Vec<String>>,
    pub piece_size: Option<u64>,
    pub private: bool,
    pub comment: Option<String>,
    pub source: Option<String>,
}

/// Where a torrent being made is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateState {
    /// Its pieces are being hashed.
    Hashing,
    /// Made and added to the session, seeding its data where it is.
    Done { torrent: TorrentRef, magnet_link: String },
    /// It could not be made: what went wrong, and where.
    Failed(String),
}

/// A torrent being made (bitswarm-torrent-create-status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateJob {
    /// The job's number, from 1.
    pub job: u32,
    pub path: String,
    /// The torrent's name (the file's or the folder's).
    pub name: String,
    /// Bytes hashed so far, of `total`.
    pub hashed: u64,
    pub total: u64,
    pub state: CreateState,
}

/// One swarm of the tracker the daemon runs (bitswarm-tracker-get).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwarmView {
    pub info_hash: InfoHash,
    /// The name of the daemon's torrent with this info hash, if it has one.
    pub name: Option<String>,
    pub seeders: u32,
    pub leechers: u32,
    /// Completed downloads the tracker counted.
    pub completed: u32,
    /// Seconds since its last announce.
    pub idle_secs: u32,
}

/// The tracker the daemon runs: its addresses, totals, request counters and busiest swarms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackerServerView {
    pub announce_urls: Vec<String>,
    pub uptime_secs: u64,
    pub swarms: u64,
    pub seeders: u64,
    pub leechers: u64,
    pub completed: u64,
    /// Announces and scrapes answered since it started (HTTP and UDP).
    pub announces: u64,
    pub scrapes: u64,
    /// The busiest swarms, most peers first.
    pub list: Vec<SwarmView>,
}

/// Where queue-move-* puts the torrents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMove {
    Top,
    Up,
    Down,
    Bottom,
}

/// A backend failure. Its `Display` is the exact `result` string clients see, so the
/// variants Transmission has a fixed string for are named here.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// torrent-add: the bytes are neither a torrent nor a magnet link.
    #[error("unrecognized info")]
    UnrecognizedInfo,
    /// torrent-add: parsed, but the torrent cannot be made from it.
    #[error("invalid or corrupt torrent file")]
    CorruptTorrent,
    /// torrent-add of a URL: the fetch failed (`code` is the HTTP status, or 0 when there was
    /// no answer).
    #[error("Couldn't fetch torrent: {reason} ({code})")]
    Fetch { reason: String, code: u16 },
    /// torrent-set: a file index is past the last file (the valid ones are still applied).
    #[error("file index out of range")]
    FileIndexOutOfRange,
    /// torrent-set: `trackerAdd`, `trackerRemove` or `trackerReplace` changed nothing.
    #[error("error setting announce list")]
    AnnounceList,
    /// The backend does not do this (`strerror(EOPNOTSUPP)`, as Transmission would say).
    #[error("Operation not supported")]
    Unsupported,
    /// A system call failed; shown as `strerror` shows it (`No such file or directory`),
    /// without Rust's ` (os error 2)`.
    #[error("{}", strerror(.0))]
    Io(#[from] io::Error),
    /// Anything else, shown as is.
    #[error("{0}")]
    Other(String),
}

/// The C library's message for an I/O error, as Transmission shows errors; the error's own
/// text when it carries no errno.
pub(crate) fn strerror(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else { return e.to_string() };
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: buf is writable for its whole length, which is what we pass; strerror_r (the
    // XSI one the libc crate binds) writes a NUL-terminated string into it or fails.
    let rc = unsafe { libc::strerror_r(code, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return e.to_string();
    }
    // SAFETY: on success buf holds a NUL-terminated string within its length.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// The daemon, as the RPC sees it. Every method names torrents by their session ids, which
/// the RPC layer resolves from whatever the client sent (ids, hashes, magnet links,
/// `recently-active`) using [`torrent_ids`](Backend::torrent_ids); ids that no longer exist
/// when a method runs are skipped silently, as Transmission does.
///
/// The slow methods return `impl Future + Send` (an implementation may write `async fn`), so a
/// generic `B: Backend` works in axum handlers. The others are called on the async runtime and
/// must not block: read a snapshot, or hand the change to the session and return.
///
/// Designed to be cheap at 10,000 torrents: listing polls call `torrent_ids` and `torrents`
/// with [`Wants::NONE`], which copy a small fixed part of each torrent.
pub trait Backend: Send + Sync + 'static {
    /// Every torrent as (id, info hash), in any order. Called once per request that names
    /// torrents, to resolve `ids`; keep it a copy of a small table.
    fn torrent_ids(&self) -> Vec<(u32, InfoHash)>;

    /// Ids of torrents that changed within the last [`RECENT_SECONDS`]: transferred piece
    /// data, were added, started, stopped, verified, set, moved, renamed, re-queued, or got
    /// their metadata. Transmission's web client polls with this.
    fn recently_active(&self) -> Vec<u32>;

    /// Ids of torrents removed within the last [`RECENT_SECONDS`] (torrent-get's `removed`).
    /// As in Transmission, a torrent is in it from the moment it is gone from
    /// [`torrent_ids`](Backend::torrent_ids) (not once it has stopped, nor only if the
    /// torrent-remove's client waited for the answer), and an id is never given again while
    /// it may be in it. (torrent-get reads this before the torrents, and leaves out of it any
    /// torrent of its answer.)
    fn recently_removed(&self) -> Vec<u32>;

    /// What a client that last listed at `since` needs: the torrents whose state or settings
    /// changed at or after `since` (an add included), and those whose figures move without a
    /// change (transferring, or did within [`RECENT_SECONDS`], peers connected, checking).
    /// torrent-get's `recently-active` with bitswarm's `bitswarm-since` (the web page's poll:
    /// a bulk add is then sent once, not for a minute). By default, every recently active one.
    fn changed_since(&self, since: Instant) -> Vec<u32> {
        let _ = since;
        self.recently_active()
    }

    /// [`changed_since`](Backend::changed_since) told apart: the torrents whose state or
    /// settings changed at or after `since` (every field is sent), those whose figures only
    /// move (a client may ask for fewer fields of them), and whether one was removed at or
    /// after `since`. By default, all changed and none removed.
    fn changes_since(&self, since: Instant) -> Changes {
        Changes { changed: self.changed_since(since), moving: Vec::new(), removed: false }
    }

    /// A receiver whose value goes up whenever [`changes_since`](Backend::changes_since) of an
    /// earlier instant may say more than it did, save for figures that only move (a torrent
    /// beginning to move counts): what wakes a held torrent-get (`bitswarm-wait`). `None`: a
    /// held torrent-get answers at once.
    fn events(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Resolves once the daemon begins shutting down: held requests answer then, so that the
    /// server can stop. By default, never.
    fn closing(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Views of these torrents, in this order, skipping ids that no longer exist. Fill the
    /// heavy parts only where `wants` asks.
    fn torrents(&self, ids: &[u32], wants: Wants) -> Vec<TorrentView>;

    /// Adds a torrent, or reports the existing one with the same info hash as
    /// [`AddOutcome::Duplicate`] without changing it. A magnet link's torrent must be
    /// addressable by its hash at once (Sonarr sends torrent-set by hash right after).
    fn add(&self, request: AddRequest) -> impl Future<Output = Result<AddOutcome, BackendError>> + Send;

    /// Starts the stopped ones among these torrents, in queue order. With `bypass_queue`
    /// (torrent-start-now) they start at once; otherwise they may wait in the queue.
    fn start(&self, ids: &[u32], bypass_queue: bool);

    /// Stops these torrents (running, queued or verifying); status becomes 0 soon after.
    fn stop(&self, ids: &[u32]);

    /// Queues a recheck of these torrents' data.
    fn verify(&self, ids: &[u32]);

    /// Announces now to the trackers of those that are running and allowed to announce
    /// manually; ignores the others.
    fn reannounce(&self, ids: &[u32]);

    /// Removes these torrents; with `delete_data` also their own files and folders (nothing
    /// else in the download directory).
    fn remove(&self, ids: &[u32], delete_data: bool) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Applies the keys present in `set` to each of these torrents.
    fn set(&self, ids: &[u32], set: &TorrentSet) -> Result<(), BackendError>;

    /// Points these torrents at `location` (absolute). With `move_data` the data is moved
    /// there; without, it is looked for there. May finish in the background.
    fn set_location(
        &self,
        ids: &[u32],
        location: &str,
        move_data: bool,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Renames `path` (relative to the download directory, starting with the torrent's name)
    /// of torrent `id` to `name` (one path component, not `.` or `..`, checked). Renaming the
    /// top-level path renames the torrent. The default does not support it.
    fn rename_path(&self, id: u32, path: &str, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send {
        let _ = (id, path, name);
        async { Err(BackendError::Unsupported) }
    }

    /// blocklist-update: fetches `blocklist-url`, keeps the list and puts it in force when
    /// `blocklist-enabled`; returns its rules. The default holds no blocklist: no rules.
    fn blocklist_update(&self) -> impl Future<Output = Result<u64, BackendError>> + Send {
        async { Ok(0) }
    }

    /// Moves these torrents in the queue (positions stay 0-based and dense).
    fn queue_move(&self, ids: &[u32], to: QueueMove);

    /// The session's current settings.
    fn session(&self) -> SessionView;

    /// Applies the keys present in `set`.
    fn session_set(&self, set: &SessionSet) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Speeds and transfer totals.
    fn session_stats(&self) -> SessionStats;

    /// Begins shutting the daemon down. Must return at once: the reply to session-close is
    /// written after this returns, so stop the server gracefully (in-flight replies finish).
    fn session_close(&self);

    /// bitswarm-torrent-create: checks the request (the path must lie in a folder the daemon
    /// allows torrents to be made from), then hashes it off the async threads and, once made,
    /// adds the torrent seeding its data where it is. Returns the job at once, hashing. The
    /// default does not support it.
    fn create_torrent(&self, request: CreateRequest) -> impl Future<Output = Result<CreateJob, BackendError>> + Send {
        let _ = request;
        async { Err(BackendError::Unsupported) }
    }

    /// The torrents being made, and those made lately, by job number.
    fn create_jobs(&self) -> Vec<CreateJob> {
        Vec::new()
    }

    /// The tracker the daemon runs besides, if it runs one.
    fn tracker(&self) -> impl Future<Output = Result<Option<TrackerServerView>, BackendError>> + Send {
        async { Ok(None) }
    }

    /// Whether the peer port is reachable from the Internet. The default says it cannot tell
    /// (the reply is then an error, not a guess).
    fn port_test(&self) -> impl Future<Output = Result<bool, BackendError>> + Send {
        async { Err(BackendError::Other("bitswarm does not test its port from outside".to_owned())) }
    }
}
