//! The store's behaviour through its public API: round trips, coalescing, removal, counters,
//! the schema version, the lock, damaged files and failing commits.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bitswarm_state::{
    Counters, DB_FILE, FileStamp, Loaded, Options, Pieces, Record, Resume, SCHEMA_VERSION, StateError, Store,
};
use common::{hash, record, resume};

fn open(dir: &Path) -> (Store, Loaded) {
    Store::open(dir).expect("open")
}

/// Nothing is committed unless flushed or dropped.
fn no_timer() -> Options {
    Options { commit_interval: Duration::from_secs(3600), ..Options::default() }
}

fn reopen(dir: &Path) -> Loaded {
    open(dir).1
}

/// The error `open` must give.
fn open_error(dir: &Path) -> StateError {
    match Store::open(dir) {
        Ok((_, loaded)) => panic!("opened with {} torrents; expected an error", loaded.torrents.len()),
        Err(e) => e,
    }
}

#[test]
fn every_field_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    let odd_dir = {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/not-utf8-\xff\xfe/x"))
    };
    #[cfg(not(unix))]
    let odd_dir = PathBuf::from("/data/x");
    let full = Record {
        info_hash: hash(7),
        id: u32::MAX,
        name: "Ubuntu 24.04 «ISO» \"quoted\", with commas".into(),
        metainfo: Some(Arc::from(&b"d4:infod4:name3:abcee"[..])),
        magnet: Some("magnet:?xt=urn:btih:0123&tr=udp%3A%2F%2Fx".into()),
        download_dir: odd_dir,
        added_at: -5,
        queue_position: u32::MAX,
        labels: vec!["a,b".into(), "\"q\"".into(), "ünï\ncode".into(), String::new()],
        settings: r#"{"speed_limit_down":500,"priorities":[1,0,-1]}"#.into(),
    };
    let magnet_only = Record {
        info_hash: hash(8),
        id: 0,
        name: String::new(),
        metainfo: None,
        magnet: Some("magnet:?xt=urn:btih:abc".into()),
        download_dir: PathBuf::from("/plain"),
        added_at: i64::MAX,
        queue_position: 0,
        labels: vec![],
        settings: "{}".into(),
    };
    let bare = Record { info_hash: hash(9), id: 3, magnet: None, ..magnet_only.clone() };
    let partial = Resume {
        pieces: Pieces::from_bitfield(10, vec![0b1010_0000, 0b0100_0000]).unwrap(),
        files: vec![
            FileStamp { size: u64::MAX / 2, mtime_ns: 1_733_000_000_123_456_789 },
            FileStamp::MISSING,
            FileStamp { size: 0, mtime_ns: -1 },
        ],
        running: true,
        uploaded: i64::MAX as u64,
        downloaded: 1,
        corrupt: 2,
        seconds_downloading: 3,
        seconds_seeding: 4,
        done_date: Some(1_733_000_000),
        activity_date: None,
    };
    let complete = Resume { pieces: Pieces::all(1_000_000), files: vec![], running: false, ..partial.clone() };
    let nothing = Resume { pieces: Pieces::none(5), done_date: None, activity_date: Some(9), ..partial.clone() };

    let (store, loaded) = open(dir.path());
    assert!(loaded.torrents.is_empty() && loaded.settings.is_empty() && loaded.problems.is_empty());
    for r in [&full, &magnet_only, &bare] {
        store.put_torrent(r.clone());
    }
    store.put_resume(full.info_hash, partial.clone());
    store.put_resume(magnet_only.info_hash, complete.clone());
    store.put_resume(bare.info_hash, nothing.clone());
    store.put_setting("alt-speed-enabled", "true");
    store.put_setting("download-dir", "/srv/ünï");
    store.flush().unwrap();
    drop(store);

    let loaded = reopen(dir.path());
    assert_eq!(loaded.problems, Vec::<String>::new());
    // Ordered by id.
    let got: Vec<_> = loaded.torrents.iter().map(|s| (s.record.clone(), s.resume.clone().unwrap())).collect();
    assert_eq!(got, vec![(magnet_only, complete), (bare, nothing), (full, partial)]);
    assert_eq!(loaded.settings.get("download-dir").map(String::as_str), Some("/srv/ünï"));
    assert_eq!(loaded.settings.len(), 2);
}

#[test]
fn the_store_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
    shared::<StateError>();
    shared::<Loaded>();
}

#[test]
fn pieces_are_kept_in_normal_form() {
    let all = Pieces::from_bitfield(12, vec![0xff, 0xff]).unwrap(); // spare bits set: ignored
    assert!(all.is_all());
    assert_eq!(all, Pieces::all(12));
    assert_eq!(all.to_bitfield(), vec![0xff, 0xf0]);
    let none = Pieces::from_bitfield(12, vec![0, 0x0f]).unwrap(); // only spare bits set
    assert_eq!(none, Pieces::none(12));
    assert_eq!(none.verified(), 0);
    let some = Pieces::from_bitfield(12, vec![0x80, 0x10]).unwrap();
    assert!(some.has(0) && some.has(11) && !some.has(1) && !some.has(12) && !some.has(u32::MAX));
    assert_eq!((some.verified(), some.count()), (2, 12));
    assert_eq!(some.to_bitfield(), vec![0x80, 0x10]);
    assert!(matches!(
        Pieces::from_bitfield(12, vec![0]),
        Err(StateError::BitfieldLength { count: 12, expected: 2, got: 1 })
    ));
    assert_eq!(Pieces::from_bitfield(0, vec![]).unwrap().count(), 0);
}

#[test]
fn complete_torrents_store_no_bitfield() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store.put_torrent(record(1, 1));
    let r = Resume { pieces: Pieces::all(4_000_000), ..resume(1) };
    store.put_resume(hash(1), r);
    store.close().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let (have_null, count): (bool, i64) =
        conn.query_row("SELECT have IS NULL, piece_count FROM resume", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(have_null);
    assert_eq!(count, 4_000_000);
}

#[test]
fn only_the_latest_put_is_queued_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_with(dir.path(), no_timer()).unwrap();
    for g in 0..10_000 {
        store.put_torrent(record(1, g));
        store.put_resume(hash(1), resume(g));
        store.put_setting("k", g.to_string());
        store.add_counters(Counters { uploaded: 1, ..Counters::default() });
    }
    // One record, one resume, one setting, however many puts.
    assert_eq!(store.health().queued, 3);
    assert_eq!(store.health().commits, 0);
    store.flush().unwrap();
    let h = store.health();
    assert_eq!((h.commits, h.queued, h.errors), (1, 0, 0));
    // A flush with nothing queued commits nothing.
    store.flush().unwrap();
    assert_eq!(store.health().commits, 1);
    drop(store);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.torrents.len(), 1);
    assert_eq!(loaded.torrents[0].record, record(1, 9_999));
    assert_eq!(loaded.torrents[0].resume, Some(resume(9_999)));
    assert_eq!(loaded.settings["k"], "9999");
    assert_eq!(loaded.counters.uploaded, 10_000);
}

#[test]
fn the_writer_commits_on_its_own_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { commit_interval: Duration::from_millis(50), ..Options::default() };
    let (store, _) = Store::open_with(dir.path(), options).unwrap();
    store.put_torrent(record(1, 1));
    let start = Instant::now();
    while store.health().commits == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no commit without a flush");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Read it through another connection while the store is open (WAL readers do not block).
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM torrent", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn dropping_the_store_commits_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_with(dir.path(), no_timer()).unwrap();
    store.put_torrent(record(1, 4));
    store.put_resume(hash(1), resume(4));
    drop(store);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.torrents[0].record, record(1, 4));
    assert_eq!(loaded.torrents[0].resume, Some(resume(4)));
}

#[test]
fn a_new_record_keeps_the_resume_data_and_can_drop_the_metainfo() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store.put_torrent(record(1, 1));
    store.put_resume(hash(1), resume(1));
    store.flush().unwrap();
    let moved = Record { download_dir: "/elsewhere".into(), metainfo: None, ..record(1, 2) };
    store.put_torrent(moved.clone());
    drop(store);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.torrents[0].record, moved);
    assert_eq!(loaded.torrents[0].resume, Some(resume(1)));
}

#[test]
fn remove_deletes_the_record_and_its_resume_data() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_with(dir.path(), no_timer()).unwrap();
    for n in 0..4 {
        store.put_torrent(record(n, 1));
        store.put_resume(hash(n), resume(1));
    }
    store.flush().unwrap();

    // Removed in a later batch.
    store.remove(hash(0));
    // Removed and added again in one batch: no old resume data.
    store.remove(hash(1));
    store.put_torrent(record(1, 2));
    // Put and removed in one batch, the resume data too.
    store.put_torrent(record(2, 2));
    store.put_resume(hash(2), resume(2));
    store.remove(hash(2));
    // Resume data after the removal (a save tick racing it) is dropped, as is resume data for
    // a torrent never put.
    store.remove(hash(3));
    store.put_resume(hash(3), resume(3));
    store.put_resume(hash(99), resume(3));
    store.flush().unwrap();
    drop(store);

    let loaded = reopen(dir.path());
    assert_eq!(loaded.torrents.len(), 1);
    assert_eq!(loaded.torrents[0].record, record(1, 2));
    assert_eq!(loaded.torrents[0].resume, None);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    for table in ["metainfo", "resume"] {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap();
        assert_eq!(n, if table == "metainfo" { 1 } else { 0 }, "{table}");
    }
}

#[test]
fn settings_are_replaced_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store.put_setting("a", "1");
    store.put_setting("b", "2");
    store.flush().unwrap();
    store.put_setting("a", "3");
    store.remove_setting("b");
    store.remove_setting("never-set");
    drop(store);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.settings.into_iter().collect::<Vec<_>>(), vec![("a".to_string(), "3".to_string())]);
}

#[test]
fn counters_add_up_across_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = open(dir.path());
    assert_eq!(loaded.counters, Counters { session_count: 1, ..Counters::default() });
    let delta = Counters { uploaded: 10, downloaded: 20, files_added: 1, seconds_active: 30, session_count: 0 };
    store.add_counters(delta);
    store.add_counters(delta);
    drop(store);
    let (store, loaded) = open(dir.path());
    assert_eq!(
        loaded.counters,
        Counters { uploaded: 20, downloaded: 40, files_added: 2, seconds_active: 60, session_count: 2 }
    );
    // Saturating, and clamped to SQLite's i64 when stored.
    store.add_counters(Counters { uploaded: u64::MAX, ..Counters::default() });
    drop(store);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.counters.uploaded, i64::MAX as u64);
    assert_eq!(loaded.counters.session_count, 3);
}

#[test]
fn the_schema_version_is_recorded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let path = dir.path().join(DB_FILE);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(page_size, 8192);
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    drop(conn);
    match open_error(dir.path()) {
        e @ StateError::TooNew { found, known, .. } => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("CREATE TABLE songs (title TEXT)").unwrap();
    drop(conn);
    assert!(matches!(open_error(dir.path()), StateError::Foreign { .. }));
}

#[test]
fn a_second_open_of_the_folder_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    match open_error(dir.path()) {
        e @ StateError::Locked { holder, .. } => {
            assert_eq!(holder, Some(std::process::id()));
            assert!(e.to_string().contains("in use by another process"), "{e}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    drop(open(dir.path()));
}

#[test]
fn a_file_that_is_not_a_database_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 10_000]).unwrap();
    match open_error(dir.path()) {
        e @ StateError::Damaged { .. } => assert!(e.to_string().contains("damaged"), "{e}"),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn damaged_pages_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    for n in 0..500 {
        store.put_torrent(record(n, 1));
        store.put_resume(hash(n), resume(1));
    }
    store.close().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 200_000, "{}", bytes.len());
    // Overwrite pages in the middle: b-tree pages of the tables the load reads.
    for b in &mut bytes[40_960..200_000] {
        *b = 0xa7;
    }
    std::fs::write(&path, bytes).unwrap();
    match open_error(dir.path()) {
        e @ StateError::Damaged { .. } => assert!(e.to_string().contains("damaged"), "{e}"),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn a_damaged_index_that_the_load_never_reads_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    for n in 0..50 {
        store.put_torrent(record(n, 1));
    }
    store.close().unwrap();
    let path = dir.path().join(DB_FILE);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (root, page_size): (i64, i64) = conn
        .query_row(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_schema WHERE name = 'sqlite_autoindex_torrent_1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(conn);
    // 50 entries of 21 bytes: the index is its root page alone. Scramble its cells.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = ((root - 1) * page_size) as usize;
    for b in &mut bytes[page + 100..page + page_size as usize] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    match open_error(dir.path()) {
        e @ StateError::Damaged { .. } => assert!(e.to_string().contains("damaged"), "{e}"),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn rows_edited_by_hand_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    for n in 0..3 {
        store.put_torrent(record(n, 1));
        store.put_resume(hash(n), resume(1));
    }
    store.close().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE torrent SET labels = 'not json' WHERE id = 1", []).unwrap();
    conn.execute("UPDATE resume SET have = x'01' WHERE torrent = (SELECT key FROM torrent WHERE id = 2)", []).unwrap();
    drop(conn);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
    assert_eq!(loaded.torrents.len(), 2);
    assert_eq!(loaded.torrents[0].record, record(1, 1));
    assert_eq!(loaded.torrents[0].resume, None);
    assert_eq!(loaded.torrents[1].resume, Some(resume(1)));
}

#[test]
fn a_failing_commit_is_reported_kept_and_retried_and_puts_do_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let failures = Arc::new(AtomicU64::new(0));
    let seen = failures.clone();
    let options = Options {
        commit_interval: Duration::from_millis(20),
        busy_timeout: Duration::from_secs(1),
        on_error: Some(Arc::new(move |_e: &StateError| {
            seen.fetch_add(1, Ordering::SeqCst);
        })),
    };
    let (store, _) = Store::open_with(dir.path(), options).unwrap();
    store.put_torrent(record(1, 1));
    store.flush().unwrap();

    // Another connection holds the write lock: the writer's commits fail (SQLITE_BUSY) as they
    // would on a failing disk.
    let blocker = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    store.put_torrent(record(1, 2));
    store.put_resume(hash(1), resume(2));
    let err = store.flush().unwrap_err();
    assert!(matches!(err, StateError::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("locked"), "{err}");
    // The writer is backing off or stuck for a second in its busy timeout again: puts still
    // return at once.
    let records: Vec<Record> = (3..1_000).map(|g| record(1, g)).collect();
    let start = Instant::now();
    for r in records {
        store.put_torrent(r);
        std::thread::sleep(Duration::from_micros(100));
    }
    assert!(start.elapsed() < Duration::from_millis(700), "puts waited {:?}", start.elapsed());
    let h = store.health();
    assert!(h.errors >= 1 && h.last_error.is_some(), "{h:?}");
    assert!(failures.load(Ordering::SeqCst) >= 1);

    blocker.execute_batch("ROLLBACK").unwrap();
    store.flush().unwrap();
    drop(store);
    let loaded = reopen(dir.path());
    assert_eq!(loaded.torrents[0].record, record(1, 999));
    assert_eq!(loaded.torrents[0].resume, Some(resume(2)));
}

/// The figures in the crate documentation come from `cargo run --release --example scale`;
/// this checks the same shape with bounds loose enough for a debug build on a busy machine.
#[test]
fn ten_thousand_torrents_are_written_and_loaded_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open_with(dir.path(), no_timer()).unwrap();
    let start = Instant::now();
    for n in 0..10_000 {
        store.put_torrent(Record { metainfo: Some(common::metainfo(n, 1, 1_500)), ..record(n, 1) });
    }
    let queued = start.elapsed();
    store.flush().unwrap();
    let written = start.elapsed();
    drop(store);
    let start = Instant::now();
    let (store, loaded) = open(dir.path());
    let opened = start.elapsed();
    assert_eq!(loaded.torrents.len(), 10_000);
    eprintln!("10,000 puts {queued:?}, + flush {written:?}; open {opened:?}");
    assert!(written < Duration::from_secs(5), "{written:?}");
    assert!(opened < Duration::from_secs(2), "{opened:?}");
    drop(store);
}
