//! The state of `bitswarm daemon`: its torrents, their resume data, its settings and counters,
//! in one embedded SQLite database that survives restarts and `kill -9`.
//!
//! The crate knows nothing of the engine: it stores what it is given and hands it all back at
//! [`Store::open`].
//!
//! # Why it is built this way
//!
//! * **One row per torrent, written when it changes.** rqbit rewrites a whole `session.json`
//!   on every add (2.1 GB written for 5,000 adds); here an add, a label or a resume save writes
//!   that torrent's rows only.
//! * **Puts never block on the disk.** They store the change in a coalescing queue under a
//!   mutex held for a map insert; one writer thread commits the queue in one transaction at
//!   most once per [`Options::commit_interval`] (1 s), or at once on [`Store::flush`]. Only
//!   the latest resume data or record of a torrent is kept, so a flood of puts holds one
//!   entry per torrent, and memory is bounded by the number of torrents.
//! * **WAL and `synchronous=NORMAL`.** A commit appends to the log without waiting for fsync.
//!   A killed process loses only what was not committed yet (at most one interval) and never
//!   leaves a half-written row: SQLite commits a transaction whole or not at all. A power cut
//!   or a kernel crash can also undo the last commits (those not yet checkpointed), never the
//!   file's consistency: an fsync per commit would cost more than the seconds of progress it
//!   protects. So [`Store::flush`] means committed, safe from a crash of the process, not
//!   necessarily on the disk's platters.
//! * **Failures are reported, not fatal.** A failed commit (a full disk) keeps its changes
//!   queued, is retried with a backoff up to a minute, is counted in [`Store::health`], handed
//!   to [`Options::on_error`], and returned by the [`Store::flush`] that waited for it.
//! * **One owner.** A `flock` on `state.lock` refuses a second process ([`StateError::Locked`]);
//!   the kernel releases it when the owner dies, so a crash leaves no stale lock.
//! * **Checked at open.** `PRAGMA quick_check` reads every page, indexes included (the load
//!   alone would not notice a damaged index on `info_hash`, which would let a torrent be stored
//!   twice); a damaged or foreign file is an error that says what to do, never a panic. The
//!   check and the load run in one transaction with a page cache the size of the file, so the
//!   file is read once (10.8 MB at 10,000 torrents, 31.6 MB with the default 2 MB cache).
//! * **Versioned schema.** `PRAGMA user_version` counts the migrations applied; `open`
//!   applies the missing ones in the same transaction and refuses a file from a newer bitswarm
//!   ([`StateError::TooNew`]). `PRAGMA application_id` marks the file as ours.
//! * **Small.** The .torrent bytes and the resume data sit in tables of their own, keyed by the
//!   torrent's rowid, so a queue move that re-puts thousands of records does not rewrite their
//!   .torrent bytes; a complete torrent's bitfield is stored as "all" ([`Pieces`]); file
//!   stamps are 16 bytes a file.
//!
//! # Use
//!
//! ```
//! use bitswarm_state::{Counters, InfoHash, Pieces, Record, Resume, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let (store, loaded) = Store::open(dir.path())?;
//! assert!(loaded.torrents.is_empty());
//! assert_eq!(loaded.counters.session_count, 1);
//!
//! let info_hash = InfoHash([7; 20]);
//! store.put_torrent(Record {
//!     info_hash,
//!     id: 1,
//!     name: "debian.iso".into(),
//!     metainfo: None, // from a magnet link, metadata not here yet
//!     magnet: Some("magnet:?xt=urn:btih:0707070707070707070707070707070707070707".into()),
//!     download_dir: "/srv/torrents".into(),
//!     added_at: 1_765_000_000,
//!     queue_position: 0,
//!     labels: vec!["linux".into()],
//!     settings: "{}".into(),
//! });
//! store.put_resume(info_hash, Resume {
//!     pieces: Pieces::from_bitfield(10, vec![0b1100_0000, 0])?,
//!     files: vec![],
//!     running: true,
//!     uploaded: 0,
//!     downloaded: 2 << 20,
//!     corrupt: 0,
//!     seconds_downloading: 3,
//!     seconds_seeding: 0,
//!     done_date: None,
//!     activity_date: Some(1_765_000_003),
//! });
//! store.add_counters(Counters { downloaded: 2 << 20, ..Counters::default() });
//! store.close()?; // or drop it: both commit what is queued
//!
//! let (_store, loaded) = Store::open(dir.path())?;
//! assert_eq!(loaded.torrents[0].resume.as_ref().map(|r| r.pieces.verified()), Some(2));
//! assert_eq!(loaded.counters.session_count, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Figures
//!
//! `cargo run --release -p bitswarm-state --example scale`: 10,000 torrents shaped like 1 MiB
//! torrents (.torrent files of 1,450 bytes), on 2 shared cores and ext4 on a virtual disk,
//! three runs (2026-12-06):
//!
//! | what | time |
//! | --- | --- |
//! | 10,000 `put_torrent` (queueing only) | 4–7 ms |
//! | then `flush`: one transaction, 14 MB of .torrent bytes | 130–136 ms |
//! | 10,000 `put_resume` + `flush` (half the pieces / complete) | 43–56 / 32–43 ms |
//! | queue reversed: 10,000 `put_torrent`, .torrent bytes unchanged, + `flush` | 92–139 ms |
//! | a commit of 10 / 100 / 1,000 resume saves of random torrents | 0.2 / 1.2–1.5 / 4.4–4.7 ms |
//! | `open` of the 10,000 (median of 7 opens), `quick_check` 12–17 ms of it | 38–51 ms |
//!
//! The file is 17.9 MiB: 1,876 bytes a torrent, its 1,450 .torrent bytes and 426 more (the
//! record's row 134, the `info_hash` index 30, the resume row 67, and 190 in the .torrent
//! table, 178 of them space left over in pages that fit four or five .torrent files).
//! A commit writes each page it changed whole, 8 KiB, to the log and later once more at a
//! checkpoint: 10 / 100 / 1,000 resume saves of random torrents write 65–73 / 455–527 /
//! 710–717 KiB a commit, checkpoints included. `open` grows with the .torrent bytes it reads
//! (about 200 ms at 50,000 such torrents).
//!
//! # Layout of the folder
//!
//! `state.sqlite3` (and while open its `-wal` and `-shm` companions), `state.lock`. Inspect it
//! with `sqlite3 state.sqlite3` while the daemon runs (WAL readers do not block it).

mod db;
mod error;
mod lock;
mod store;
mod types;
mod writer;

pub use bitswarm_metainfo::InfoHash;
pub use db::SCHEMA_VERSION;
pub use error::StateError;
pub use store::{DB_FILE, LOCK_FILE, Store};
pub use types::{Counters, ErrorHook, FileStamp, Health, Loaded, Options, Pieces, Record, Resume, Stored};
