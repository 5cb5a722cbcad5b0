use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the state store.
///
/// Sources sit behind `Arc` so the error is `Clone`: the writer thread keeps the last one for
/// [`Health`](crate::Health) and hands the same error to every [`flush`](crate::Store::flush)
/// waiting on the failed commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state folder {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: Arc<io::Error> },

    /// Another process (another `bitswarm daemon`, most likely) holds the folder. Two writers
    /// would each believe their own view of the torrents, so the second one is refused.
    #[error("the state folder {} is in use by another process{}", path.display(), holder_note(*holder))]
    Locked { path: PathBuf, holder: Option<u32> },

    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: Arc<io::Error> },

    /// The file is not an SQLite database, or SQLite found its pages inconsistent (at the
    /// check `open` runs, or later).
    #[error(
        "{} is damaged or not an SQLite database ({detail}); move it aside to start with no torrents, \
         or put a backup in its place",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },

    /// An SQLite database, but some other program's.
    #[error("{} is an SQLite database but not bitswarm's state (application_id {application_id:#x})", path.display())]
    Foreign { path: PathBuf, application_id: i64 },

    /// Written by a newer bitswarm: this one cannot know what the newer columns mean.
    #[error("{} has schema version {found}, newer than this bitswarm's {known}", path.display())]
    TooNew { path: PathBuf, found: i64, known: i64 },

    /// SQLite could not switch to its write-ahead log (the folder on a network file system,
    /// most likely), on which the crash safety rests.
    #[error("{} cannot use SQLite's write-ahead log (journal_mode stayed {mode}); put the state folder on a local file system", path.display())]
    NoWal { path: PathBuf, mode: String },

    /// Any other SQLite failure: a full or failing disk, a read-only file system, …
    #[error("state database: {doing}: {source}")]
    Sqlite { doing: &'static str, source: Arc<rusqlite::Error> },

    #[error("a bitfield of {count} pieces is {expected} bytes, got {got}")]
    BitfieldLength { count: u32, expected: usize, got: usize },

    #[error("cannot start the state writer thread: {0}")]
    Spawn(Arc<io::Error>),

    /// The writer thread is gone (it panicked): nothing queued can be committed any more.
    #[error("the state writer thread has stopped")]
    WriterStopped,
}

fn holder_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}
