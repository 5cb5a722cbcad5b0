use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use bitswarm_metainfo::InfoHash;

use crate::writer::{self, Shared, Writer};
use crate::{Counters, Health, Loaded, Options, Record, Resume, StateError, db, lock};

/// The database file in the state folder.
pub const DB_FILE: &str = "state.sqlite3";
/// The lock file in the state folder, holding the owner's pid.
pub const LOCK_FILE: &str = "state.lock";

/// The daemon's state folder, open for writing. See the crate documentation.
///
/// Every `put_*` method returns at once: the change is queued, coalesced with earlier changes
/// to the same thing, and committed by the writer thread within about
/// [`Options::commit_interval`], or at once on [`flush`](Self::flush). Dropping the Store
/// commits what is queued and waits for it.
pub struct Store {
    shared: Arc<Shared>,
    writer: Option<thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Store {
    /// [`open_with`](Self::open_with) the default [`Options`].
    pub fn open(dir: &Path) -> Result<(Store, Loaded), StateError> {
        Store::open_with(dir, Options::default())
    }

    /// Creates `dir` if needed, takes its lock (a second process gets
    /// [`StateError::Locked`]), opens or creates `state.sqlite3`, brings its schema up to date,
    /// counts this session and returns everything stored.
    ///
    /// A file that is not a database, or whose pages SQLite finds inconsistent, gives
    /// [`StateError::Damaged`]; one written by a newer bitswarm gives [`StateError::TooNew`].
    pub fn open_with(dir: &Path, options: Options) -> Result<(Store, Loaded), StateError> {
        fs::create_dir_all(dir).map_err(|e| StateError::CreateDir { path: dir.to_owned(), source: Arc::new(e) })?;
        let lock = lock::acquire(&dir.join(LOCK_FILE))?;
        let path = dir.join(DB_FILE);
        let mut conn = db::connect(&path, &options)?;
        let (loaded, totals) = db::prepare(&mut conn, &path)?;
        let shared = Arc::new(Shared::default());
        let w = Writer { conn, lock, shared: shared.clone(), totals, path: path.clone(), options };
        let writer = thread::Builder::new()
            .name("bitswarm-state".into())
            .spawn(move || writer::run(w))
            .map_err(|e| StateError::Spawn(Arc::new(e)))?;
        Ok((Store { shared, writer: Some(writer), path }, loaded))
    }

    /// Adds or replaces a torrent's record. Its resume data, if stored, stays.
    pub fn put_torrent(&self, record: Record) {
        self.shared.enqueue(|p| p.put_torrent(record));
    }

    /// Replaces a torrent's resume data. Only the latest of several puts before a commit is
    /// written. Resume data for a torrent not stored (never put, or removed) is dropped at the
    /// commit.
    pub fn put_resume(&self, info_hash: InfoHash, resume: Resume) {
        self.shared.enqueue(|p| {
            p.resumes.insert(info_hash, resume);
        });
    }

    /// Removes a torrent: its record, .torrent bytes and resume data. A later
    /// [`put_torrent`](Self::put_torrent) adds it afresh.
    pub fn remove(&self, info_hash: InfoHash) {
        self.shared.enqueue(|p| p.remove(info_hash));
    }

    pub fn put_setting(&self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        self.shared.enqueue(|p| {
            p.settings.insert(key, Some(value));
        });
    }

    pub fn remove_setting(&self, key: impl Into<String>) {
        let key = key.into();
        self.shared.enqueue(|p| {
            p.settings.insert(key, None);
        });
    }

    /// Adds `delta` to the session-wide counters (saturating). Deltas queued between two
    /// commits are summed, so the daemon can add every second without growing the queue.
    pub fn add_counters(&self, delta: Counters) {
        self.shared.enqueue(|p| p.counters = p.counters.saturating_add(delta));
    }

    /// Blocks until everything queued before this call is committed, or the commit failed
    /// (the changes stay queued and are retried; [`health`](Self::health) counts the failure).
    pub fn flush(&self) -> Result<(), StateError> {
        self.shared.flush()
    }

    /// Commits what is queued and closes the database, returning the last commit's outcome;
    /// what `drop` does, but with the error.
    pub fn close(self) -> Result<(), StateError> {
        let result = self.flush();
        drop(self);
        result
    }

    /// Commits, failures and the queue, for metrics and logs.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shared.shutdown();
        if let Some(w) = self.writer.take() {
            // A panic on the writer thread already marked it stopped; nothing more to do.
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}
