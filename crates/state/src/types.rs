use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bitswarm_metainfo::InfoHash;

use crate::StateError;

/// What the daemon knows of a torrent apart from its progress: written on add and whenever one
/// of these fields changes (a rename, a move, a new label, a queue move, new settings).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The key: one record per info-hash.
    pub info_hash: InfoHash,
    /// The session id clients see (Transmission's `id`), kept so it stays the same across
    /// restarts. The store does not check that ids are unique; the daemon hands them out.
    pub id: u32,
    pub name: String,
    /// The .torrent file's bytes; `None` for a magnet link whose metadata has not arrived.
    /// Shared (`Arc`) because the daemon keeps these bytes for serving metadata (BEP 9) and
    /// a record is put again on every label or queue change: a clone must not copy them.
    pub metainfo: Option<Arc<[u8]>>,
    /// The magnet link, when the torrent was added from one.
    pub magnet: Option<String>,
    /// Where the data lives. Stored losslessly even when not UTF-8.
    pub download_dir: PathBuf,
    /// Unix seconds.
    pub added_at: i64,
    pub queue_position: u32,
    pub labels: Vec<String>,
    /// The daemon's own settings for this torrent (JSON: limits, file priorities, seeding
    /// limits…). Opaque here, so the daemon can change its shape without a schema migration.
    pub settings: String,
}

/// Shows the .torrent bytes as their length: a log line must not carry a megabyte.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("info_hash", &self.info_hash)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("metainfo", &self.metainfo.as_ref().map(|m| format!("{} bytes", m.len())))
            .field("magnet", &self.magnet)
            .field("download_dir", &self.download_dir)
            .field("added_at", &self.added_at)
            .field("queue_position", &self.queue_position)
            .field("labels", &self.labels)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A torrent's progress, written every few seconds while it changes. It lets a restart skip
/// re-hashing the data: the daemon trusts [`pieces`](Self::pieces) for each file whose size and
/// modification time still match [`files`](Self::files), as Transmission and libtorrent do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The pieces verified when the file stamps were taken.
    pub pieces: Pieces,
    /// Each file of the torrent, in the torrent's order, as seen when `pieces` was taken.
    pub files: Vec<FileStamp>,
    /// Whether the torrent was started (not paused by the user).
    pub running: bool,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes of pieces that failed their hash.
    pub corrupt: u64,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    /// Unix seconds when it became complete; `None` if it never was.
    pub done_date: Option<i64>,
    /// Unix seconds of the last transfer; `None` if none yet.
    pub activity_date: Option<i64>,
}

/// One file's size and modification time as the daemon saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

impl FileStamp {
    /// A file that did not exist: no real file has this stamp, so it never matches one.
    pub const MISSING: FileStamp = FileStamp { size: 0, mtime_ns: i64::MIN };
}

/// The verified pieces of a torrent.
///
/// Kept in a normal form: every piece verified is stored as "all" without a bitfield, none as
/// "none", so a complete torrent (most torrents of a long-running daemon) costs a few bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Pieces {
    count: u32,
    have: Have,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Have {
    All,
    None,
    /// Some but not all: the BEP 3 bitfield (piece 0 is the high bit of byte 0), spare bits zero.
    Some(Box<[u8]>),
}

impl Pieces {
    pub fn all(count: u32) -> Self {
        Pieces { count, have: Have::All }
    }

    pub fn none(count: u32) -> Self {
        Pieces { count, have: if count == 0 { Have::All } else { Have::None } }
    }

    /// From a BEP 3 bitfield of `count` pieces: `count.div_ceil(8)` bytes, piece 0 the high bit
    /// of byte 0. Spare bits past `count` are ignored (cleared).
    pub fn from_bitfield(count: u32, bitfield: impl Into<Vec<u8>>) -> Result<Self, StateError> {
        let mut bits = bitfield.into();
        let expected = bitfield_len(count);
        if bits.len() != expected {
            return Err(StateError::BitfieldLength { count, expected, got: bits.len() });
        }
        if let Some(last) = bits.last_mut() {
            *last &= last_byte_mask(count);
        }
        let set: u64 = bits.iter().map(|b| u64::from(b.count_ones())).sum();
        let have = if set == u64::from(count) {
            Have::All
        } else if set == 0 {
            Have::None
        } else {
            Have::Some(bits.into_boxed_slice())
        };
        Ok(Pieces { count, have })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_all(&self) -> bool {
        matches!(self.have, Have::All)
    }

    /// How many pieces are verified.
    pub fn verified(&self) -> u32 {
        match &self.have {
            Have::All => self.count,
            Have::None => 0,
            Have::Some(bits) => bits.iter().map(|b| b.count_ones()).sum(),
        }
    }

    /// Whether piece `index` is verified (`false` past the end).
    pub fn has(&self, index: u32) -> bool {
        if index >= self.count {
            return false;
        }
        match &self.have {
            Have::All => true,
            Have::None => false,
            Have::Some(bits) => bits.get((index / 8) as usize).is_some_and(|b| b & (0x80 >> (index % 8)) != 0),
        }
    }

    /// The BEP 3 bitfield, spare bits zero.
    pub fn to_bitfield(&self) -> Vec<u8> {
        let len = bitfield_len(self.count);
        match &self.have {
            Have::All => {
                let mut v = vec![0xff; len];
                if let Some(last) = v.last_mut() {
                    *last = last_byte_mask(self.count);
                }
                v
            }
            Have::None => vec![0; len],
            Have::Some(bits) => bits.to_vec(),
        }
    }

    pub(crate) fn stored(&self) -> &Have {
        &self.have
    }

    /// From the database: `None` when the bitfield's length does not fit the count.
    pub(crate) fn from_stored(count: u32, have: Have) -> Option<Self> {
        match &have {
            Have::Some(bits) if bits.len() != bitfield_len(count) => None,
            _ => Some(Pieces { count, have }),
        }
    }
}

impl fmt::Debug for Pieces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pieces({} of {})", self.verified(), self.count)
    }
}

fn bitfield_len(count: u32) -> usize {
    count.div_ceil(8) as usize
}

/// The bits of the last byte that stand for pieces.
fn last_byte_mask(count: u32) -> u8 {
    match count % 8 {
        0 => 0xff,
        r => 0xffu8 << (8 - r),
    }
}

/// Session-wide totals over every run, as Transmission's `session-stats` `cumulative-stats`
/// reports them. Also the delta type of [`Store::add_counters`](crate::Store::add_counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub uploaded: u64,
    pub downloaded: u64,
    pub files_added: u64,
    pub seconds_active: u64,
    /// How many times the daemon started; [`Store::open`](crate::Store::open) counts itself.
    pub session_count: u64,
}

impl Counters {
    /// Field by field, saturating: a counter stuck at its maximum beats one wrapped to zero.
    pub fn saturating_add(self, other: Counters) -> Counters {
        Counters {
            uploaded: self.uploaded.saturating_add(other.uploaded),
            downloaded: self.downloaded.saturating_add(other.downloaded),
            files_added: self.files_added.saturating_add(other.files_added),
            seconds_active: self.seconds_active.saturating_add(other.seconds_active),
            session_count: self.session_count.saturating_add(other.session_count),
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        *self == Counters::default()
    }

    /// Names in the `counter` table.
    pub(crate) fn fields(&self) -> [(&'static str, u64); 5] {
        [
            ("uploaded", self.uploaded),
            ("downloaded", self.downloaded),
            ("files_added", self.files_added),
            ("seconds_active", self.seconds_active),
            ("session_count", self.session_count),
        ]
    }

    pub(crate) fn set(&mut self, name: &str, value: u64) {
        match name {
            "uploaded" => self.uploaded = value,
            "downloaded" => self.downloaded = value,
            "files_added" => self.files_added = value,
            "seconds_active" => self.seconds_active = value,
            "session_count" => self.session_count = value,
            _ => {} // a counter a newer bitswarm added
        }
    }
}

/// Everything [`Store::open`](crate::Store::open) found.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Ordered by session id.
    pub torrents: Vec<Stored>,
    pub settings: BTreeMap<String, String>,
    /// Including this session in `session_count`.
    pub counters: Counters,
    /// Rows that could not be read and were left out (a torrent) or ignored (its resume data,
    /// so the daemon checks its data again), one line each for the log. Empty unless the file
    /// was edited by hand or written by a buggy version: SQLite itself keeps rows whole.
    pub problems: Vec<String>,
}

/// One torrent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub record: Record,
    /// `None` before the first [`put_resume`](crate::Store::put_resume).
    pub resume: Option<Resume>,
}

/// How the writer is doing, for the daemon's metrics and logs.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Transactions committed since open.
    pub commits: u64,
    pub last_commit: Option<SystemTime>,
    /// Failed commits since open (each is retried, the queued changes kept).
    pub errors: u64,
    pub last_error: Option<StateError>,
    /// Changes waiting for the next commit (records, resume data and settings, each counted
    /// once however often it was put).
    pub queued: usize,
}

/// Called on the writer thread with each failed commit. It may log, count or queue more
/// changes, but must not wait on the store ([`flush`](crate::Store::flush),
/// [`close`](crate::Store::close), dropping the last `Store`): the writer would wait for itself.
pub type ErrorHook = Arc<dyn Fn(&StateError) + Send + Sync>;

/// How [`Store::open_with`](crate::Store::open_with) behaves.
#[derive(Clone)]
pub struct Options {
    /// The least time between two commits that nobody flushed (at most a day). A commit
    /// writes every page it changed, so batching a second of changes keeps the disk quiet;
    /// a `kill -9` loses at most this much. The first change after an idle spell is committed
    /// at once.
    pub commit_interval: Duration,
    /// How long SQLite waits for a lock held by another connection (a `sqlite3` shell reading
    /// the file) before failing.
    pub busy_timeout: Duration,
    pub on_error: Option<ErrorHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options { commit_interval: Duration::from_secs(1), busy_timeout: Duration::from_secs(5), on_error: None }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("commit_interval", &self.commit_interval)
            .field("busy_timeout", &self.busy_timeout)
            .field("on_error", &self.on_error.as_ref().map(|_| "Fn"))
            .finish()
    }
}
