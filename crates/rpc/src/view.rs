//! What the daemon knows, in the shape the RPC reports it: one [`TorrentView`] per torrent,
//! the [`SessionView`] settings and the [`SessionStats`] counters.
//!
//! These are plain data with Rust types that cannot hold a wrong JSON type: every count, size,
//! rate and date is an integer type (transmission-remote drops a whole `-l` row when one of
//! them arrives as `0.0`), and every value with a fixed range (status, priorities, modes) is an
//! enum. Values that Transmission derives from others (`percentDone`, `uploadRatio`,
//! `flagStr`, `magnetLink`, `trackerList`, a tracker's `host`…) are computed by this crate, so
//! a backend cannot make them disagree.

use std::net::IpAddr;

use crate::hash::InfoHash;

/// Transmission's `tr_torrent_activity` (`status`): clients (Python's `Status`) refuse any
/// other number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Status {
    #[default]
    Stopped = 0,
    QueuedToVerify = 1,
    Verifying = 2,
    QueuedToDownload = 3,
    /// Also a magnet link fetching its metadata.
    Downloading = 4,
    QueuedToSeed = 5,
    Seeding = 6,
}

/// A torrent's error (`error` 1..3 with `errorString`). Sonarr shows a download as "Warning"
/// whenever `errorString` is not empty, so a torrent without one has `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorrentError {
    /// `error` 1: the tracker answered with a warning.
    TrackerWarning(String),
    /// `error` 2: the tracker answered with a failure.
    TrackerError(String),
    /// `error` 3: a local problem (disk full, file unreadable…); the torrent is stopped.
    Local(String),
}

impl TorrentError {
    pub(crate) fn code(&self) -> i64 {
        match self {
            TorrentError::TrackerWarning(_) => 1,
            TorrentError::TrackerError(_) => 2,
            TorrentError::Local(_) => 3,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            TorrentError::TrackerWarning(m) | TorrentError::TrackerError(m) | TorrentError::Local(m) => m,
        }
    }
}

/// A bandwidth or file priority: -1, 0 or 1 on the wire (Python's `Priority` refuses others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(i8)]
pub enum Priority {
    Low = -1,
    #[default]
    Normal = 0,
    High = 1,
}

impl Priority {
    pub(crate) fn from_wire(v: i64) -> Option<Priority> {
        match v {
            -1 => Some(Priority::Low),
            0 => Some(Priority::Normal),
            1 => Some(Priority::High),
            _ => None,
        }
    }
}

/// Which seed ratio or idle limit applies (`seedRatioMode`, `seedIdleMode`): 0, 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum LimitMode {
    /// The session's limit (`seedRatioLimit`/`idle-seeding-limit` of session-get).
    #[default]
    Global = 0,
    /// This torrent's own limit.
    Single = 1,
    /// No limit.
    Unlimited = 2,
}

impl LimitMode {
    pub(crate) fn from_wire(v: i64) -> Option<LimitMode> {
        match v {
            0 => Some(LimitMode::Global),
            1 => Some(LimitMode::Single),
            2 => Some(LimitMode::Unlimited),
            _ => None,
        }
    }
}

/// An estimated time left (`eta`, `etaIdle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eta {
    /// -1: there is nothing to estimate (stopped; seeding without a limit; downloading with
    /// pieces that no connected peer has).
    #[default]
    NotAvailable,
    /// -2: it cannot be estimated yet (no transfer rate; a magnet link without metadata).
    Unknown,
    Seconds(u64),
}

impl Eta {
    pub(crate) fn to_wire(self) -> i64 {
        match self {
            Eta::NotAvailable => -1,
            Eta::Unknown => -2,
            Eta::Seconds(s) => i64::try_from(s).unwrap_or(i64::MAX),
        }
    }
}

/// How many of a torrent's peers came from each source (`peersFrom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeersFrom {
    pub cache: u32,
    pub dht: u32,
    pub incoming: u32,
    pub lpd: u32,
    /// Learned through the extension protocol (`fromLtep`).
    pub ltep: u32,
    pub pex: u32,
    pub tracker: u32,
}

/// Everything `torrent-get` can report about one torrent.
///
/// The light part is always filled. The heavy parts (`files`, `peers`, `trackers`, `pieces`,
/// `availability`) are filled only when [`Wants`](crate::Wants) asks for them: a client
/// polling a few columns of 10,000 torrents must not make the daemon list every file and peer.
/// A heavy part left `None` although asked for is reported empty (`[]`, `""`).
///
/// Dates are unix seconds, 0 for never. Sizes are bytes; rates are bytes per second; the
/// per-torrent speed limits are kB/s (1 kB = 1000 bytes), as Transmission's `units` say.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentView {
    /// Session id, from 1, never reused during a run (`id`).
    pub id: u32,
    pub info_hash: InfoHash,
    /// The torrent's name; for a magnet link without metadata its `dn`, or else the hash.
    pub name: String,
    pub status: Status,
    pub error: Option<TorrentError>,

    /// Sum of all file lengths; 0 until a magnet link's metadata arrives (Sonarr treats 0 as
    /// "queued").
    pub total_size: u64,
    /// Bytes of the wanted pieces.
    pub size_when_done: u64,
    /// Wanted bytes still missing, at most `size_when_done`.
    pub left_until_done: u64,
    /// Verified bytes we have.
    pub have_valid: u64,
    /// Bytes of pieces not complete or not yet verified.
    pub have_unchecked: u64,
    /// Bytes that failed their piece's hash check.
    pub corrupt_ever: u64,
    /// Missing wanted bytes that connected peers have.
    pub desired_available: u64,
    /// Payload downloaded, across restarts.
    pub downloaded_ever: u64,
    /// Payload uploaded, across restarts.
    pub uploaded_ever: u64,

    /// Piece data received, B/s.
    pub rate_download: u64,
    /// Piece data sent, B/s.
    pub rate_upload: u64,

    pub peers_connected: u32,
    /// Peers we are downloading from.
    pub peers_sending_to_us: u32,
    /// Peers we are uploading to.
    pub peers_getting_from_us: u32,
    pub webseeds_sending_to_us: u32,
    pub peers_from: PeersFrom,
    /// Most peers this torrent connects to (`peer-limit`, `maxConnectedPeers`).
    pub peer_limit: u32,

    /// 0..1 while a magnet link fetches its metadata; 1 once known.
    pub metadata_percent_complete: f64,
    /// 0..1 while verifying (status 1 or 2), else 0.
    pub recheck_progress: f64,
    /// 0 until the metadata is known.
    pub piece_count: u32,
    /// Bytes; 0 until the metadata is known.
    pub piece_size: u64,
    /// Number of files (`file-count`); 0 until the metadata is known.
    pub file_count: u32,

    pub added_date: i64,
    /// When the download completed; 0 while incomplete.
    pub done_date: i64,
    /// Last start; 0 if never started.
    pub start_date: i64,
    /// Last piece transfer; 0 if never.
    pub activity_date: i64,
    /// Last change to name, trackers or location; 0 if never.
    pub edit_date: i64,
    /// The metainfo's `creation date`; 0 if absent.
    pub date_created: i64,

    /// The absolute directory holding the torrent's top-level file or folder.
    pub download_dir: String,
    pub comment: String,
    /// The metainfo's `created by`.
    pub creator: String,
    /// The info dictionary's `source` tag.
    pub source: String,
    pub is_private: bool,
    pub labels: Vec<String>,
    /// Bandwidth group; `""` for none.
    pub group: String,
    /// 0-based position in the queue, dense over all torrents.
    pub queue_position: u32,
    pub bandwidth_priority: Priority,
    /// kB/s.
    pub download_limit: u32,
    pub download_limited: bool,
    /// kB/s.
    pub upload_limit: u32,
    pub upload_limited: bool,
    pub honors_session_limits: bool,
    pub seed_ratio_limit: f64,
    pub seed_ratio_mode: LimitMode,
    /// Minutes.
    pub seed_idle_limit: u32,
    pub seed_idle_mode: LimitMode,
    /// The seed ratio or idle limit was reached (not "download complete": Sonarr imports and
    /// removes on it).
    pub is_finished: bool,
    /// Running, but nothing moved for longer than `queue-stalled-minutes`.
    pub is_stalled: bool,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    /// Time until done, or while seeding until the ratio limit.
    pub eta: Eta,
    /// While seeding, time until the idle limit.
    pub eta_idle: Eta,
    /// When a manual reannounce becomes allowed; `None` (-1) when the torrent is not running.
    pub manual_announce_time: Option<i64>,
    pub webseeds: Vec<String>,
    /// The daemon's stored copy of the .torrent file.
    pub torrent_file: String,
    /// `magnetLink` as is, when the daemon has one at hand. `None`: this crate builds it from
    /// the hash, the name, the trackers (so [`Wants::trackers`](crate::Wants::trackers) is set
    /// when `magnetLink` is asked for) and the web seeds.
    pub magnet_link: Option<String>,

    /// Filled when [`Wants::files`](crate::Wants::files).
    pub files: Option<Vec<FileView>>,
    /// Filled when [`Wants::peers`](crate::Wants::peers).
    pub peers: Option<Vec<PeerView>>,
    /// Filled when [`Wants::trackers`](crate::Wants::trackers).
    pub trackers: Option<Vec<TrackerView>>,
    /// The pieces we have, piece 0 in the high bit of byte 0, ⌈piece_count/8⌉ bytes. Filled
    /// when [`Wants::pieces`](crate::Wants::pieces).
    pub pieces: Option<Vec<u8>>,
    /// Per piece, how many connected peers have it, or `None` where we have it ourselves.
    /// Filled when [`Wants::availability`](crate::Wants::availability).
    pub availability: Option<Vec<Option<u32>>>,
}

impl Default for TorrentView {
    /// Transmission's values for a new, stopped torrent with nothing known yet.
    fn default() -> TorrentView {
        TorrentView {
            id: 0,
            info_hash: InfoHash::default(),
            name: String::new(),
            status: Status::Stopped,
            error: None,
            total_size: 0,
            size_when_done: 0,
            left_until_done: 0,
            have_valid: 0,
            have_unchecked: 0,
            corrupt_ever: 0,
            desired_available: 0,
            downloaded_ever: 0,
            uploaded_ever: 0,
            rate_download: 0,
            rate_upload: 0,
            peers_connected: 0,
            peers_sending_to_us: 0,
            peers_getting_from_us: 0,
            webseeds_sending_to_us: 0,
            peers_from: PeersFrom::default(),
            peer_limit: 50,
            metadata_percent_complete: 1.0,
            recheck_progress: 0.0,
            piece_count: 0,
            piece_size: 0,
            file_count: 0,
            added_date: 0,
            done_date: 0,
            start_date: 0,
            activity_date: 0,
            edit_date: 0,
            date_created: 0,
            download_dir: String::new(),
            comment: String::new(),
            creator: String::new(),
            source: String::new(),
            is_private: false,
            labels: Vec::new(),
            group: String::new(),
            queue_position: 0,
            bandwidth_priority: Priority::Normal,
            download_limit: 100,
            download_limited: false,
            upload_limit: 100,
            upload_limited: false,
            honors_session_limits: true,
            seed_ratio_limit: 2.0,
            seed_ratio_mode: LimitMode::Global,
            seed_idle_limit: 30,
            seed_idle_mode: LimitMode::Global,
            is_finished: false,
            is_stalled: false,
            seconds_downloading: 0,
            seconds_seeding: 0,
            eta: Eta::NotAvailable,
            eta_idle: Eta::NotAvailable,
            manual_announce_time: None,
            webseeds: Vec::new(),
            torrent_file: String::new(),
            magnet_link: None,
            files: None,
            peers: None,
            trackers: None,
            pieces: None,
            availability: None,
        }
    }
}

/// One file of a torrent (`files`, `fileStats`, `priorities`, `wanted`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileView {
    /// Path with `/` between components, including the torrent's top folder for a multi-file
    /// torrent (`multi/a.txt`), just the file name for a single-file one.
    pub name: String,
    pub length: u64,
    /// Verified bytes of this file.
    pub bytes_completed: u64,
    pub wanted: bool,
    pub priority: Priority,
}

/// Where we learned of a peer (for `flagStr`'s `H`/`X`/`I` and `peersFrom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerSource {
    /// It connected to us.
    Incoming,
    #[default]
    Tracker,
    Dht,
    Pex,
    Lpd,
    /// Resumed from a previous run's list.
    Cache,
    /// The extension protocol (a peer's `yourip`/`ipv6` handshake fields).
    Ltep,
}

/// One connected peer (`peers`).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub address: IpAddr,
    pub port: u16,
    /// From its peer id or extension handshake (`clientName`).
    pub client_name: String,
    /// 0..1 of the torrent the peer has.
    pub progress: f64,
    /// B/s we receive from it.
    pub rate_to_client: u64,
    /// B/s we send to it.
    pub rate_to_peer: u64,
    pub is_encrypted: bool,
    pub is_incoming: bool,
    pub is_utp: bool,
    /// It chokes us.
    pub client_is_choked: bool,
    /// We are interested in it.
    pub client_is_interested: bool,
    /// We choke it.
    pub peer_is_choked: bool,
    /// It is interested in us.
    pub peer_is_interested: bool,
    /// We are receiving piece data from it.
    pub is_downloading_from: bool,
    /// We are sending piece data to it.
    pub is_uploading_to: bool,
    /// It holds our optimistic unchoke slot.
    pub is_optimistic: bool,
    pub source: PeerSource,
}

/// A tracker's announce or scrape state (`announceState`, `scrapeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TrackerState {
    #[default]
    Inactive = 0,
    Waiting = 1,
    Queued = 2,
    Active = 3,
}

/// One tracker of a torrent (`trackers`, `trackerStats`, `trackerList`). `host` and
/// `sitename` are derived from `announce` by this crate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackerView {
    /// Unique among the torrent's trackers (`trackerRemove` and `trackerReplace` name it).
    pub id: u32,
    /// 0-based tier (BEP 12).
    pub tier: u32,
    pub announce: String,
    /// `""` when no scrape URL can be derived.
    pub scrape: String,
    /// Not the tier's current tracker.
    pub is_backup: bool,
    pub announce_state: TrackerState,
    pub scrape_state: TrackerState,
    pub has_announced: bool,
    pub has_scraped: bool,
    pub last_announce_start_time: i64,
    pub last_announce_time: i64,
    pub next_announce_time: i64,
    pub last_announce_succeeded: bool,
    pub last_announce_timed_out: bool,
    /// `"Success"`, the tracker's failure reason, `""` before the first announce.
    pub last_announce_result: String,
    pub last_announce_peer_count: u32,
    pub last_scrape_start_time: i64,
    pub last_scrape_time: i64,
    pub next_scrape_time: i64,
    pub last_scrape_succeeded: bool,
    pub last_scrape_timed_out: bool,
    pub last_scrape_result: String,
    /// `None` (-1) until the tracker told.
    pub seeder_count: Option<u32>,
    pub leecher_count: Option<u32>,
    pub download_count: Option<u32>,
}

/// The session's peer encryption policy (`encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    Required,
    #[default]
    Preferred,
    Tolerated,
}

impl Encryption {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Encryption::Required => "required",
            Encryption::Preferred => "preferred",
            Encryption::Tolerated => "tolerated",
        }
    }

    /// As Transmission reads `encryption` in session-set: anything but `required` and
    /// `tolerated` is `preferred`.
    pub(crate) fn from_wire(s: &str) -> Encryption {
        match s {
            "required" => Encryption::Required,
            "tolerated" => Encryption::Tolerated,
            _ => Encryption::Preferred,
        }
    }
}

/// The session settings that session-get reports and the daemon decides. The constants
/// (`rpc-version`, `units`, `version`, `session-id`…) and `download-dir-free-space` are
/// filled by this crate.
///
/// Speed limits are kB/s (1000 bytes); times of day are minutes after midnight.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    /// Absolute default download directory.
    pub download_dir: String,
    pub incomplete_dir: String,
    pub incomplete_dir_enabled: bool,
    /// The daemon's state directory (Flood looks for `<config-dir>/torrents/<hash>.torrent`).
    pub config_dir: String,
    pub peer_port: u16,
    pub peer_port_random_on_start: bool,
    pub port_forwarding_enabled: bool,
    pub peer_limit_global: u32,
    pub peer_limit_per_torrent: u32,
    pub speed_limit_down: u32,
    pub speed_limit_down_enabled: bool,
    pub speed_limit_up: u32,
    pub speed_limit_up_enabled: bool,
    pub alt_speed_down: u32,
    pub alt_speed_up: u32,
    pub alt_speed_enabled: bool,
    pub alt_speed_time_enabled: bool,
    pub alt_speed_time_begin: u32,
    pub alt_speed_time_end: u32,
    /// Days the schedule applies: Sunday = 1 … Saturday = 64.
    pub alt_speed_time_day: u32,
    pub download_queue_enabled: bool,
    pub download_queue_size: u32,
    pub seed_queue_enabled: bool,
    pub seed_queue_size: u32,
    pub queue_stalled_enabled: bool,
    pub queue_stalled_minutes: u32,
    pub seed_ratio_limit: f64,
    pub seed_ratio_limited: bool,
    /// Minutes.
    pub idle_seeding_limit: u32,
    pub idle_seeding_limit_enabled: bool,
    pub encryption: Encryption,
    pub start_added_torrents: bool,
    pub trash_original_torrent_files: bool,
    /// Incomplete files carry a `.part` suffix.
    pub rename_partial_files: bool,
    pub dht_enabled: bool,
    pub pex_enabled: bool,
    pub lpd_enabled: bool,
    pub utp_enabled: bool,
    pub tcp_enabled: bool,
    pub cache_size_mb: u32,
    pub blocklist_enabled: bool,
    pub blocklist_url: String,
    /// The rules of the blocklist held (in force or not).
    pub blocklist_size: u64,
    /// Trackers added to every public torrent, one URL a line, a blank line between tiers.
    pub default_trackers: String,
    pub script_torrent_added_enabled: bool,
    pub script_torrent_added_filename: String,
    pub script_torrent_done_enabled: bool,
    pub script_torrent_done_filename: String,
    pub script_torrent_done_seeding_enabled: bool,
    pub script_torrent_done_seeding_filename: String,
    /// The folder watched for .torrent files (bitswarm's key, settings.json's name).
    pub watch_dir: String,
    pub watch_dir_enabled: bool,
}

impl Default for SessionView {
    /// Transmission 4.0's defaults, with every optional protocol off and empty directories.
    fn default() -> SessionView {
        SessionView {
            download_dir: String::new(),
            incomplete_dir: String::new(),
            incomplete_dir_enabled: false,
            config_dir: String::new(),
            peer_port: 51413,
            peer_port_random_on_start: false,
            port_forwarding_enabled: false,
            peer_limit_global: 200,
            peer_limit_per_torrent: 50,
            speed_limit_down: 100,
            speed_limit_down_enabled: false,
            speed_limit_up: 100,
            speed_limit_up_enabled: false,
            alt_speed_down: 50,
            alt_speed_up: 50,
            alt_speed_enabled: false,
            alt_speed_time_enabled: false,
            alt_speed_time_begin: 540,
            alt_speed_time_end: 1020,
            alt_speed_time_day: 127,
            download_queue_enabled: true,
            download_queue_size: 5,
            seed_queue_enabled: false,
            seed_queue_size: 10,
            queue_stalled_enabled: true,
            queue_stalled_minutes: 30,
            seed_ratio_limit: 2.0,
            seed_ratio_limited: false,
            idle_seeding_limit: 30,
            idle_seeding_limit_enabled: false,
            encryption: Encryption::Preferred,
            start_added_torrents: true,
            trash_original_torrent_files: false,
            rename_partial_files: false,
            dht_enabled: false,
            pex_enabled: false,
            lpd_enabled: false,
            utp_enabled: false,
            tcp_enabled: true,
            cache_size_mb: 4,
            blocklist_enabled: false,
            blocklist_url: "http://www.example.com/blocklist".to_owned(),
            blocklist_size: 0,
            default_trackers: String::new(),
            script_torrent_added_enabled: false,
            script_torrent_added_filename: String::new(),
            script_torrent_done_enabled: false,
            script_torrent_done_filename: String::new(),
            script_torrent_done_seeding_enabled: false,
            script_torrent_done_seeding_filename: String::new(),
            watch_dir: String::new(),
            watch_dir_enabled: false,
        }
    }
}

/// Transfer totals over a period (`current-stats`, `cumulative-stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsTotals {
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    /// Data files created on disk.
    pub files_added: u64,
    /// 1 for the current run; the number of daemon runs for the cumulative totals.
    pub session_count: u64,
    pub seconds_active: u64,
}

/// What session-stats reports. `pausedTorrentCount` is derived here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Torrents that are not stopped.
    pub active_torrent_count: u32,
    pub torrent_count: u32,
    /// Piece data, B/s.
    pub download_speed: u64,
    pub upload_speed: u64,
    /// This run.
    pub current: StatsTotals,
    /// All runs.
    pub cumulative: StatsTotals,
}
