//! The SQL: connection settings, schema and migrations, the load at open, and one batch's
//! commit. Everything here runs on one connection, first on the opening thread, then on the
//! writer thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitswarm_metainfo::InfoHash;
use rusqlite::types::{FromSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use crate::types::Have;
use crate::writer::Pending;
use crate::{Counters, FileStamp, Loaded, Options, Pieces, Record, Resume, StateError, Stored};

/// `PRAGMA application_id`: "BSWM". Marks the file as ours, so a path that names some other
/// program's SQLite database is refused rather than given our tables.
const APPLICATION_ID: i64 = 0x4253_574d;

/// Each entry takes the schema from version `i` to `i + 1`, in one transaction with the
/// `PRAGMA user_version` that records it. Never edit an entry once released: add one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    //
    // `torrent.key` is an alias of the rowid, so `metainfo` and `resume` hang off it without
    // indexes of their own; only `info_hash` has one. The .torrent bytes and the resume data
    // live in tables of their own because each changes on its own schedule: a queue move
    // rewrites thousands of small `torrent` rows and must not rewrite their .torrent bytes
    // (SQLite rewrites a whole row on update), and a resume save every few seconds must not
    // rewrite either. STRICT tables refuse a value of the wrong type.
    "
    CREATE TABLE torrent (
        key INTEGER PRIMARY KEY,
        info_hash BLOB NOT NULL UNIQUE CHECK (length(info_hash) = 20),
        id INTEGER NOT NULL CHECK (id BETWEEN 0 AND 4294967295),
        name TEXT NOT NULL,
        magnet TEXT,
        -- TEXT when the path is UTF-8 (readable in a sqlite3 shell), else its bytes as a BLOB.
        download_dir ANY NOT NULL,
        added_at INTEGER NOT NULL,
        queue_position INTEGER NOT NULL CHECK (queue_position BETWEEN 0 AND 4294967295),
        labels TEXT NOT NULL, -- a JSON array of strings
        settings TEXT NOT NULL -- the daemon's JSON, opaque here
    ) STRICT;
    CREATE TABLE metainfo (
        torrent INTEGER PRIMARY KEY, -- torrent.key
        bytes BLOB NOT NULL
    ) STRICT;
    CREATE TABLE resume (
        torrent INTEGER PRIMARY KEY, -- torrent.key
        piece_count INTEGER NOT NULL CHECK (piece_count BETWEEN 0 AND 4294967295),
        -- NULL: every piece verified; empty: none; else the BEP 3 bitfield.
        have BLOB,
        files BLOB NOT NULL, -- per file 16 bytes: size u64, mtime ns i64, little-endian
        running INTEGER NOT NULL,
        uploaded INTEGER NOT NULL,
        downloaded INTEGER NOT NULL,
        corrupt INTEGER NOT NULL,
        seconds_downloading INTEGER NOT NULL,
        seconds_seeding INTEGER NOT NULL,
        done_date INTEGER,
        activity_date INTEGER
    ) STRICT;
    CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
    CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT, WITHOUT ROWID;
    ",
];

/// Bytes a page, for new files: see [`connect`].
const PAGE_SIZE: i64 = 8192;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An SQLite error, named [`StateError::Damaged`] when SQLite says the file is not a database
/// or its pages are inconsistent, so the daemon's message says what to do.
pub(crate) fn classify(path: &Path, doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StateError::Damaged { path: path.to_owned(), detail: e.to_string() }
        }
        _ => StateError::Sqlite { doing, source: Arc::new(e) },
    }
}

/// Opens the file with the settings the store relies on.
pub(crate) fn connect(path: &Path, options: &Options) -> Result<Connection, StateError> {
    let conn = Connection::open(path).map_err(classify(path, "opening the database"))?;
    // Only takes effect on a new file, before its first table (and before WAL). The .torrent
    // of a 1 MiB torrent is about 1,450 bytes: two fit a 4 KiB page with 1,100 bytes left
    // over, five fit 8 KiB. Measured at 10,000 torrents: 836 bytes a torrent beyond its
    // .torrent bytes with 4 KiB pages, 426 with 8 KiB, 285 with 16 KiB; a commit of 100
    // resume saves of random torrents writes 315, 475 and 667 KiB (every page it touches is
    // written whole). 8 KiB keeps a record small without doubling the cost of resume saves.
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(classify(path, "setting the page size"))?;
    conn.busy_timeout(options.busy_timeout).map_err(classify(path, "setting the busy timeout"))?;
    // WAL: a commit appends to the log and readers never block the writer; with
    // synchronous=NORMAL a commit does not wait for fsync (only checkpoints do). A killed
    // process loses nothing committed (the log is in the OS's page cache); a power cut may
    // undo the last commits but never corrupts the file. Resume data is saved again every few
    // seconds anyway, so an fsync per commit would buy little for its cost.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(classify(path, "setting journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::NoWal { path: path.to_owned(), mode });
    }
    for (name, value) in [
        ("synchronous", "NORMAL"),
        // The log is truncated back to this after a checkpoint instead of keeping its largest size.
        ("journal_size_limit", "4194304"),
        // Our schema has no functions in it; refuse any a foreign edit might add.
        ("trusted_schema", "OFF"),
    ] {
        conn.pragma_update(None, name, value).map_err(classify(path, "setting pragmas"))?;
    }
    Ok(conn)
}

/// Checks the file, applies the schema, counts this session and reads everything, in one
/// transaction. Returns what was read and the counters' totals as now stored.
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<(Loaded, Counters), StateError> {
    // The check and the load each read every page: with SQLite's default cache (2 MB) the
    // load read the file again, and its joins more than once (31.6 MB read for a file of
    // 10.8 MB at 10,000 torrents). A cache that holds the whole file for this transaction
    // reads it once; it is given back (SQLite frees the pages over the limit) right after.
    let kib = std::fs::metadata(path).map_or(0, |m| m.len() / 1024);
    let big = -((kib + 1024).min(1 << 30) as i64);
    conn.pragma_update(None, "cache_size", big).map_err(classify(path, "sizing the cache"))?;
    let result = prepare_in(conn, path);
    conn.pragma_update(None, "cache_size", -STEADY_CACHE_KIB).map_err(classify(path, "sizing the cache"))?;
    result
}

/// The page cache after the open. The saves touch a few pages each (the rows of the torrents
/// that changed, and their index pages), read again from the system's cache when they are
/// not here; SQLite's default of 2,000 KiB was a fifth of a 1,000-torrent daemon's heap.
const STEADY_CACHE_KIB: i64 = 256;

fn prepare_in(conn: &mut Connection, path: &Path) -> Result<(Loaded, Counters), StateError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify(path, "starting the open transaction"))?;
    check(&tx, path)?;
    migrate(&tx, path)?;
    let mut loaded = load(&tx, path)?;
    loaded.counters.session_count = loaded.counters.session_count.saturating_add(1);
    write_counters(&tx, &loaded.counters).map_err(classify(path, "counting the session"))?;
    tx.commit().map_err(classify(path, "committing the open transaction"))?;
    let totals = loaded.counters;
    Ok((loaded, totals))
}

/// `PRAGMA quick_check`: every page of every b-tree, the index on `info_hash` included, which
/// the load alone never reads. A damaged index would let a torrent be stored twice; better to
/// say so at start. It costs about a third of the load (16 ms at 10,000 torrents) and grows
/// with the file, like the load.
fn check(tx: &Transaction, path: &Path) -> Result<(), StateError> {
    let err = || classify(path, "checking the file");
    let mut stmt = tx.prepare("PRAGMA quick_check(5)").map_err(err())?;
    let found: Vec<String> =
        stmt.query_map([], |r| r.get(0)).map_err(err())?.collect::<Result<_, _>>().map_err(err())?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(StateError::Damaged { path: path.to_owned(), detail: found.join("; ") })
}

fn migrate(tx: &Transaction, path: &Path) -> Result<(), StateError> {
    let err = || classify(path, "reading the schema version");
    let app: i64 = tx.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(err())?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err())?;
    if app != APPLICATION_ID {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(err())?;
        if app != 0 || version != 0 || tables != 0 {
            return Err(StateError::Foreign { path: path.to_owned(), application_id: app });
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(classify(path, "marking the file"))?;
    }
    if version > SCHEMA_VERSION {
        return Err(StateError::TooNew { path: path.to_owned(), found: version, known: SCHEMA_VERSION });
    }
    for step in &MIGRATIONS[version.max(0) as usize..] {
        tx.execute_batch(step).map_err(classify(path, "migrating the schema"))?;
    }
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(classify(path, "migrating the schema"))?;
    }
    Ok(())
}

/// Column order of [`load`]'s query.
const LOAD: &str = "
    SELECT t.info_hash, t.id, t.name, m.bytes, t.magnet, t.download_dir, t.added_at, t.queue_position,
           t.labels, t.settings,
           r.torrent, r.piece_count, r.have, r.files, r.running, r.uploaded, r.downloaded, r.corrupt,
           r.seconds_downloading, r.seconds_seeding, r.done_date, r.activity_date
    FROM torrent t
    LEFT JOIN metainfo m ON m.torrent = t.key
    LEFT JOIN resume r ON r.torrent = t.key";

fn load(tx: &Transaction, path: &Path) -> Result<Loaded, StateError> {
    let err = || classify(path, "loading the torrents");
    let mut loaded = Loaded::default();
    let mut stmt = tx.prepare(LOAD).map_err(err())?;
    let mut rows = stmt.query([]).map_err(err())?;
    while let Some(row) = rows.next().map_err(err())? {
        let record = match read_record(row) {
            Ok(r) => r,
            Err(why) => {
                let hash = match row.get_ref(0) {
                    Ok(ValueRef::Blob(b)) => hex(b),
                    _ => "?".into(),
                };
                loaded.problems.push(format!("torrent {hash} left out: {why}"));
                continue;
            }
        };
        let resume = match row.get_ref(10) {
            Ok(ValueRef::Null) => None,
            _ => match read_resume(row) {
                Ok(r) => Some(r),
                Err(why) => {
                    loaded.problems.push(format!("torrent {}: resume data ignored: {why}", record.info_hash));
                    None
                }
            },
        };
        loaded.torrents.push(Stored { record, resume });
    }
    drop(rows);
    drop(stmt);
    loaded.torrents.sort_by_key(|s| s.record.id);

    let mut stmt = tx.prepare("SELECT key, value FROM setting").map_err(classify(path, "loading settings"))?;
    let mut rows = stmt.query([]).map_err(classify(path, "loading settings"))?;
    while let Some(row) = rows.next().map_err(classify(path, "loading settings"))? {
        match (field::<String>(row, 0), field::<String>(row, 1)) {
            (Ok(k), Ok(v)) => {
                loaded.settings.insert(k, v);
            }
            (k, v) => loaded.problems.push(format!("a setting left out: {}", k.and(v).err().unwrap_or_default())),
        }
    }
    drop(rows);
    drop(stmt);

    let mut stmt = tx.prepare("SELECT name, value FROM counter").map_err(classify(path, "loading counters"))?;
    let mut rows = stmt.query([]).map_err(classify(path, "loading counters"))?;
    while let Some(row) = rows.next().map_err(classify(path, "loading counters"))? {
        if let (Ok(name), Ok(value)) = (field::<String>(row, 0), field::<i64>(row, 1)) {
            loaded.counters.set(&name, unsigned(value));
        }
    }
    Ok(loaded)
}

/// A column as `T`, or why not (for [`Loaded::problems`]).
fn field<T: FromSql>(row: &Row, idx: usize) -> Result<T, String> {
    row.get(idx).map_err(|e| e.to_string())
}

fn read_record(row: &Row) -> Result<Record, String> {
    let info_hash = match row.get_ref(0).map_err(|e| e.to_string())? {
        ValueRef::Blob(b) => InfoHash(b.try_into().map_err(|_| format!("info-hash of {} bytes", b.len()))?),
        other => return Err(format!("info-hash is {:?}", other.data_type())),
    };
    let labels: String = field(row, 8)?;
    Ok(Record {
        info_hash,
        id: field(row, 1)?,
        name: field(row, 2)?,
        metainfo: field(row, 3)?,
        magnet: field(row, 4)?,
        download_dir: match row.get_ref(5).map_err(|e| e.to_string())? {
            ValueRef::Text(b) | ValueRef::Blob(b) => path_from_bytes(b),
            other => return Err(format!("download_dir is {:?}", other.data_type())),
        },
        added_at: field(row, 6)?,
        queue_position: field(row, 7)?,
        labels: serde_json::from_str(&labels).map_err(|e| format!("labels {labels:?}: {e}"))?,
        settings: field(row, 9)?,
    })
}

fn read_resume(row: &Row) -> Result<Resume, String> {
    let count: u32 = field(row, 11)?;
    let have = match row.get_ref(12).map_err(|e| e.to_string())? {
        ValueRef::Null => Have::All,
        ValueRef::Blob([]) => Have::None,
        ValueRef::Blob(b) => Have::Some(b.into()),
        other => return Err(format!("bitfield is {:?}", other.data_type())),
    };
    let pieces = Pieces::from_stored(count, have).ok_or("bitfield length does not fit the piece count")?;
    let files = match row.get_ref(13).map_err(|e| e.to_string())? {
        ValueRef::Blob(b) if b.len().is_multiple_of(16) => decode_files(b),
        _ => return Err("file stamps are not a multiple of 16 bytes".into()),
    };
    Ok(Resume {
        pieces,
        files,
        running: field(row, 14)?,
        uploaded: unsigned(field(row, 15)?),
        downloaded: unsigned(field(row, 16)?),
        corrupt: unsigned(field(row, 17)?),
        seconds_downloading: unsigned(field(row, 18)?),
        seconds_seeding: unsigned(field(row, 19)?),
        done_date: field(row, 20)?,
        activity_date: field(row, 21)?,
    })
}

/// Commits one batch in one transaction and returns the counters' new totals. On error the
/// transaction rolls back whole (the caller queues the batch again).
pub(crate) fn commit(conn: &mut Connection, batch: &Pending, totals: Counters) -> rusqlite::Result<Counters> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (hash, op) in &batch.torrents {
        if op.remove_first {
            remove(&tx, hash)?;
        }
        if let Some(record) = &op.put {
            put_record(&tx, record)?;
        }
    }
    // After the records, so a torrent added in this batch takes its resume data.
    for (hash, resume) in &batch.resumes {
        put_resume(&tx, hash, resume)?;
    }
    for (key, value) in &batch.settings {
        match value {
            Some(v) => tx
                .prepare_cached(
                    "INSERT INTO setting (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, v])?,
            None => tx.prepare_cached("DELETE FROM setting WHERE key = ?1")?.execute([key])?,
        };
    }
    let totals = totals.saturating_add(batch.counters);
    if !batch.counters.is_zero() {
        write_counters(&tx, &totals)?;
    }
    tx.commit()?;
    Ok(totals)
}

fn write_counters(tx: &Transaction, totals: &Counters) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO counter (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )?;
    for (name, value) in totals.fields() {
        stmt.execute(params![name, signed(value)])?;
    }
    Ok(())
}

fn remove(tx: &Transaction, hash: &InfoHash) -> rusqlite::Result<()> {
    let key: Option<i64> = tx
        .prepare_cached("DELETE FROM torrent WHERE info_hash = ?1 RETURNING key")?
        .query_row([&hash.0[..]], |r| r.get(0))
        .optional()?;
    if let Some(key) = key {
        tx.prepare_cached("DELETE FROM metainfo WHERE torrent = ?1")?.execute([key])?;
        tx.prepare_cached("DELETE FROM resume WHERE torrent = ?1")?.execute([key])?;
    }
    Ok(())
}

fn put_record(tx: &Transaction, r: &Record) -> rusqlite::Result<()> {
    // Serialising a list of strings cannot fail.
    let labels = serde_json::to_string(&r.labels).unwrap_or_else(|_| "[]".into());
    let key: i64 = tx
        .prepare_cached(
            "INSERT INTO torrent (info_hash, id, name, magnet, download_dir, added_at, queue_position, labels, settings)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (info_hash) DO UPDATE SET
                id = excluded.id, name = excluded.name, magnet = excluded.magnet,
                download_dir = excluded.download_dir, added_at = excluded.added_at,
                queue_position = excluded.queue_position, labels = excluded.labels, settings = excluded.settings
             RETURNING key",
        )?
        .query_row(
            params![
                &r.info_hash.0[..],
                r.id,
                r.name,
                r.magnet,
                path_value(&r.download_dir),
                r.added_at,
                r.queue_position,
                labels,
                r.settings
            ],
            |row| row.get(0),
        )?;
    match &r.metainfo {
        // The WHERE skips the write when the bytes are unchanged, the usual case: comparing
        // reads the old blob, which is much cheaper than writing it again.
        Some(bytes) => tx
            .prepare_cached(
                "INSERT INTO metainfo (torrent, bytes) VALUES (?1, ?2)
                 ON CONFLICT (torrent) DO UPDATE SET bytes = excluded.bytes WHERE bytes IS NOT excluded.bytes",
            )?
            .execute(params![key, &bytes[..]])?,
        None => tx.prepare_cached("DELETE FROM metainfo WHERE torrent = ?1")?.execute([key])?,
    };
    Ok(())
}

/// Written only for a torrent that is stored: resume data for a torrent removed meanwhile
/// (the daemon's save tick racing a removal) is dropped, not kept as an orphan.
fn put_resume(tx: &Transaction, hash: &InfoHash, r: &Resume) -> rusqlite::Result<()> {
    let have: Option<&[u8]> = match r.pieces.stored() {
        Have::All => None,
        Have::None => Some(&[]),
        Have::Some(bits) => Some(bits),
    };
    tx.prepare_cached(
        "INSERT INTO resume (torrent, piece_count, have, files, running, uploaded, downloaded, corrupt,
                             seconds_downloading, seconds_seeding, done_date, activity_date)
         SELECT key, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 FROM torrent WHERE info_hash = ?1
         ON CONFLICT (torrent) DO UPDATE SET
            piece_count = excluded.piece_count, have = excluded.have, files = excluded.files,
            running = excluded.running, uploaded = excluded.uploaded, downloaded = excluded.downloaded,
            corrupt = excluded.corrupt, seconds_downloading = excluded.seconds_downloading,
            seconds_seeding = excluded.seconds_seeding, done_date = excluded.done_date,
            activity_date = excluded.activity_date",
    )?
    .execute(params![
        &hash.0[..],
        r.pieces.count(),
        have,
        encode_files(&r.files),
        r.running,
        signed(r.uploaded),
        signed(r.downloaded),
        signed(r.corrupt),
        signed(r.seconds_downloading),
        signed(r.seconds_seeding),
        r.done_date,
        r.activity_date
    ])?;
    Ok(())
}

fn encode_files(files: &[FileStamp]) -> Vec<u8> {
    let mut out = Vec::with_capacity(files.len() * 16);
    for f in files {
        out.extend_from_slice(&f.size.to_le_bytes());
        out.extend_from_slice(&f.mtime_ns.to_le_bytes());
    }
    out
}

fn decode_files(b: &[u8]) -> Vec<FileStamp> {
    b.chunks_exact(16)
        .map(|c| {
            let (size, mtime) = c.split_at(8);
            FileStamp {
                size: u64::from_le_bytes(size.try_into().unwrap_or_default()),
                mtime_ns: i64::from_le_bytes(mtime.try_into().unwrap_or_default()),
            }
        })
        .collect()
}

/// SQLite integers are i64: a counter past i64::MAX (8 EiB) is stored as i64::MAX.
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

enum PathValue<'a> {
    Text(&'a str),
    Bytes(Vec<u8>),
}

impl rusqlite::ToSql for PathValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            PathValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            PathValue::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn path_value(p: &Path) -> PathValue<'_> {
    match p.to_str() {
        Some(s) => PathValue::Text(s),
        None => PathValue::Bytes(path_bytes(p)),
    }
}

#[cfg(unix)]
fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn path_from_bytes(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
