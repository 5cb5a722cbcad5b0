//! The private tracker's SQLite database (`tracker.db` in the state folder): users, registered
//! torrents, the admin token's hash, and a change counter. Opened as the daemon's state is
//! (WAL, `synchronous = NORMAL`, a busy timeout, an `application_id`, migrations under
//! `user_version`), so the command line can change it while a tracker runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitswarm_tracker_proto::InfoHash;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

/// `PRAGMA application_id`: "BSWT", the tracker's database (the daemon's is "BSWM").
const APPLICATION_ID: i64 = 0x4253_5754;

/// Each entry takes the schema from version `i` to `i + 1`. Never edit a released entry.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE user (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        passkey TEXT NOT NULL UNIQUE CHECK (length(passkey) = 32),
        enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        uploaded INTEGER NOT NULL,
        downloaded INTEGER NOT NULL,
        completed INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE torrent (
        info_hash BLOB PRIMARY KEY CHECK (length(info_hash) = 20),
        name TEXT NOT NULL,
        size INTEGER NOT NULL, -- bytes; 0 when added by info-hash alone
        added_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
    "];

/// The database file in a state folder.
pub const FILE: &str = "tracker.db";

/// A passkey: 32 lowercase hex digits (128 random bits).
pub const PASSKEY_LEN: usize = 32;

/// What went wrong, worded for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no user named {0:?}")]
    NoUser(String),
    #[error("a user named {0:?} exists already")]
    UserExists(String),
    #[error("torrent {0} is not registered")]
    NoTorrent(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{0}")]
    Io(String),
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: String,
    pub passkey: String,
    pub enabled: bool,
    pub uploaded: u64,
    pub downloaded: u64,
    pub completed: u64,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    #[serde(skip)]
    pub id: i64,
}

/// A registered torrent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Torrent {
    /// 40 hex digits.
    pub info_hash: String,
    pub name: String,
    pub size: u64,
    pub added_at: i64,
}

/// What a user's announces added since the last write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub uploaded: u64,
    pub downloaded: u64,
    pub completed: u64,
}

impl Delta {
    pub fn add(&mut self, o: Delta) {
        self.uploaded = self.uploaded.saturating_add(o.uploaded);
        self.downloaded = self.downloaded.saturating_add(o.downloaded);
        self.completed = self.completed.saturating_add(o.completed);
    }
}

/// Checks a user name: 1 to 64 characters, no spaces, no control characters, no '/'.
pub fn check_name(name: &str) -> Result<(), DbError> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err(DbError::Invalid("a user name has 1 to 64 characters".into()));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(DbError::Invalid(format!("user name {name:?}: no spaces, control characters or '/'")));
    }
    Ok(())
}

/// Checks a passkey's form (see [`PASSKEY_LEN`]).
pub fn check_passkey(p: &str) -> Result<(), &'static str> {
    if p.len() == PASSKEY_LEN && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("invalid passkey: a passkey is 32 hex digits (0-9, a-f)")
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, DbError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| DbError::Io(format!("no OS randomness: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The hash an admin token is kept as (BLAKE2s-256, hex): the token is 256 random bits, so a
/// fast hash is enough, and the database never holds the token itself.
pub fn token_hash(token: &str) -> String {
    use blake2::Digest;
    blake2::Blake2s256::digest(token.as_bytes()).iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates `dir` (and its parents) if need be; a folder it creates is for its owner alone
/// (0700: the database holds every passkey).
pub fn create_private_dir(dir: &Path) -> Result<(), DbError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| DbError::Io(format!("cannot create {}: {e}", dir.display())))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One connection to `tracker.db`.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

/// Everything the tracker serves from: users by passkey, torrents, the admin token's hash.
#[derive(Debug, Default)]
pub struct Tables {
    pub users: Vec<User>,
    pub torrents: HashMap<InfoHash, u64>,
    pub admin_token_hash: Option<String>,
    /// The change counter when read.
    pub generation: i64,
}

impl Db {
    /// Opens (creating it and its folder if need be) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE);
        let err = |p: &Path| {
            let p = p.to_owned();
            move |source| DbError::Sqlite { path: p, source }
        };
        let conn = Connection::open(&path).map_err(err(&path))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err(&path))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(err(&path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Io(format!("{}: the file system does not allow WAL mode ({mode})", path.display())));
        }
        for (k, v) in [("synchronous", "NORMAL"), ("journal_size_limit", "4194304"), ("trusted_schema", "OFF")] {
            conn.pragma_update(None, k, v).map_err(err(&path))?;
        }
        let mut db = Db { conn, path };
        db.migrate()?;
        Ok(db)
    }

    fn err(&self) -> impl FnOnce(rusqlite::Error) -> DbError + '_ {
        move |source| DbError::Sqlite { path: self.path.clone(), source }
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        let path = self.path.clone();
        let e = |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e)?;
        let app: i64 = tx.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(e)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(e)?;
        if app == 0 && version == 0 {
            let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(e)?;
            if tables != 0 {
                return Err(DbError::Invalid(format!("{} is not a bitswarm tracker database", path.display())));
            }
            tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(e)?;
        } else if app != APPLICATION_ID {
            return Err(DbError::Invalid(format!("{} is not a bitswarm tracker database", path.display())));
        }
        if version > MIGRATIONS.len() as i64 {
            return Err(DbError::Invalid(format!(
                "{} was written by a newer bitswarm (schema {version}, this one knows {})",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m).map_err(e)?;
            tx.pragma_update(None, "user_version", i as i64 + 1).map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// `PRAGMA data_version`: changes when another connection has committed.
    pub fn data_version(&self) -> Result<i64, DbError> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(self.err())
    }

    fn setting(&self, key: &str) -> Result<Option<String>, DbError> {
        self.conn
            .query_row("SELECT value FROM setting WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// The change counter: every change of users, torrents or the token adds one.
    pub fn generation(&self) -> Result<i64, DbError> {
        Ok(self.setting("generation")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The change counter a running tracker has read last (see [`Db::set_loaded`]).
    pub fn loaded_generation(&self) -> Result<i64, DbError> {
        Ok(self.setting("loaded_generation")?.and_then(|v| v.parse().ok()).unwrap_or(-1))
    }

    /// Records that the running tracker serves from change `generation` on.
    pub fn set_loaded(&self, generation: i64) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO setting (key, value) VALUES ('loaded_generation', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [generation.to_string()],
            )
            .map(drop)
            .map_err(self.err())
    }

    /// Runs `f` in one write transaction that also adds one to the change counter; returns
    /// `f`'s result and the counter after it.
    fn change<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<(T, i64), DbError> {
        let path = self.path.clone();
        let e = move |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e.clone())?;
        let out = f(&tx)?;
        let generation: i64 = tx
            .query_row(
                "INSERT INTO setting (key, value) VALUES ('generation', '1') \
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value",
                [],
                |r| r.get::<_, String>(0),
            )
            .map_err(e.clone())?
            .parse()
            .unwrap_or(0);
        tx.commit().map_err(e)?;
        Ok((out, generation))
    }

    /// Adds a user with a new passkey; returns it and the change counter.
    pub fn add_user(&mut self, name: &str) -> Result<(User, i64), DbError> {
        check_name(name)?;
        let passkey = random_hex(PASSKEY_LEN / 2)?;
        let created_at = now();
        let path = self.path.clone();
        self.change(|tx| {
            let r = tx.execute(
                "INSERT INTO user (name, passkey, enabled, uploaded, downloaded, completed, created_at) \
                 VALUES (?1, ?2, 1, 0, 0, 0, ?3)",
                params![name, passkey, created_at],
            );
            match r {
                Ok(_) => {}
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    return Err(DbError::UserExists(name.to_owned()));
                }
                Err(source) => return Err(DbError::Sqlite { path: path.clone(), source }),
            }
            Ok(User {
                id: tx.last_insert_rowid(),
                name: name.to_owned(),
                passkey: passkey.clone(),
                enabled: true,
                uploaded: 0,
                downloaded: 0,
                completed: 0,
                created_at,
            })
        })
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>, DbError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, name, passkey, enabled, uploaded, downloaded, completed, created_at FROM user ORDER BY name",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    passkey: r.get(2)?,
                    enabled: r.get::<_, i64>(3)? != 0,
                    uploaded: r.get::<_, i64>(4)?.max(0) as u64,
                    downloaded: r.get::<_, i64>(5)?.max(0) as u64,
                    completed: r.get::<_, i64>(6)?.max(0) as u64,
                    created_at: r.get(7)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// One user by name.
    pub fn user(&self, name: &str) -> Result<User, DbError> {
        self.users()?.into_iter().find(|u| u.name == name).ok_or_else(|| DbError::NoUser(name.to_owned()))
    }

    /// Enables or disables a user; returns the change counter.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<i64, DbError> {
        let path = self.path.clone();
        self.change(|tx| {
            let n = tx
                .execute("UPDATE user SET enabled = ?1 WHERE name = ?2", params![i64::from(enabled), name])
                .map_err(|source| DbError::Sqlite { path, source })?;
            if n == 0 { Err(DbError::NoUser(name.to_owned())) } else { Ok(()) }
        })
        .map(|((), g)| g)
    }

    /// Deletes a user (their passkey is refused from then on, their figures are gone); returns
    /// the change counter.
    pub fn delete_user(&mut self, name: &str) -> Result<i64, DbError> {
        let path = self.path.clone();
        self.change(|tx| {
            let n = tx
                .execute("DELETE FROM user WHERE name = ?1", params![name])
                .map_err(|source| DbError::Sqlite { path, source })?;
            if n == 0 { Err(DbError::NoUser(name.to_owned())) } else { Ok(()) }
        })
        .map(|((), g)| g)
    }

    /// Gives a user a new passkey (the old one is refused from then on); returns it and the
    /// change counter.
    pub fn reset_passkey(&mut self, name: &str) -> Result<(String, i64), DbError> {
        let passkey = random_hex(PASSKEY_LEN / 2)?;
        let path = self.path.clone();
        self.change(|tx| {
            let n = tx
                .execute("UPDATE user SET passkey = ?1 WHERE name = ?2", params![passkey, name])
                .map_err(|source| DbError::Sqlite { path, source })?;
            if n == 0 { Err(DbError::NoUser(name.to_owned())) } else { Ok(passkey.clone()) }
        })
    }

    /// Registers a torrent (again: its name and size are updated); returns the change counter.
    pub fn add_torrent(&mut self, info_hash: &InfoHash, name: &str, size: u64) -> Result<i64, DbError> {
        let path = self.path.clone();
        let at = now();
        self.change(|tx| {
            tx.execute(
                "INSERT INTO torrent (info_hash, name, size, added_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (info_hash) DO UPDATE SET name = excluded.name, size = excluded.size",
                params![&info_hash.0[..], name, size.min(i64::MAX as u64) as i64, at],
            )
            .map_err(|source| DbError::Sqlite { path, source })?;
            Ok(())
        })
        .map(|((), g)| g)
    }

    /// Unregisters a torrent; returns the change counter.
    pub fn remove_torrent(&mut self, info_hash: &InfoHash) -> Result<i64, DbError> {
        let path = self.path.clone();
        self.change(|tx| {
            let n = tx
                .execute("DELETE FROM torrent WHERE info_hash = ?1", [&info_hash.0[..]])
                .map_err(|source| DbError::Sqlite { path, source })?;
            if n == 0 { Err(DbError::NoTorrent(info_hash.to_hex())) } else { Ok(()) }
        })
        .map(|((), g)| g)
    }

    /// Every registered torrent, by name.
    pub fn torrents(&self) -> Result<Vec<Torrent>, DbError> {
        let mut st = self
            .conn
            .prepare("SELECT info_hash, name, size, added_at FROM torrent ORDER BY name, info_hash")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                let h: Vec<u8> = r.get(0)?;
                Ok(Torrent {
                    info_hash: h.iter().map(|x| format!("{x:02x}")).collect(),
                    name: r.get(1)?,
                    size: r.get::<_, i64>(2)?.max(0) as u64,
                    added_at: r.get(3)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Makes a new admin token, keeps its hash (the old token stops working) and returns it.
    pub fn new_admin_token(&mut self) -> Result<(String, i64), DbError> {
        let token = random_hex(32)?;
        let hash = token_hash(&token);
        let path = self.path.clone();
        self.change(|tx| {
            tx.execute(
                "INSERT INTO setting (key, value) VALUES ('admin_token_blake2s', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&hash],
            )
            .map_err(|source| DbError::Sqlite { path, source })?;
            Ok(token.clone())
        })
    }

    /// Everything the tracker serves from, read in one transaction.
    pub fn tables(&mut self) -> Result<Tables, DbError> {
        let path = self.path.clone();
        let e = move |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(e.clone())?;
        let users = {
            let mut st = tx.prepare("SELECT id, name, passkey, enabled FROM user").map_err(e.clone())?;
            let rows = st
                .query_map([], |r| {
                    Ok(User {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        passkey: r.get(2)?,
                        enabled: r.get::<_, i64>(3)? != 0,
                        uploaded: 0,
                        downloaded: 0,
                        completed: 0,
                        created_at: 0,
                    })
                })
                .map_err(e.clone())?;
            rows.collect::<Result<Vec<_>, _>>().map_err(e.clone())?
        };
        let mut torrents = HashMap::new();
        {
            let mut st = tx.prepare("SELECT info_hash, size FROM torrent").map_err(e.clone())?;
            let mut rows = st.query([]).map_err(e.clone())?;
            while let Some(r) = rows.next().map_err(e.clone())? {
                let h: Vec<u8> = r.get(0).map_err(e.clone())?;
                let size: i64 = r.get(1).map_err(e.clone())?;
                if let Ok(h) = <[u8; 20]>::try_from(h.as_slice()) {
                    torrents.insert(InfoHash(h), size.max(0) as u64);
                }
            }
        }
        let get = |k: &str| -> Result<Option<String>, DbError> {
            tx.query_row("SELECT value FROM setting WHERE key = ?1", [k], |r| r.get(0)).optional().map_err(e.clone())
        };
        let admin_token_hash = get("admin_token_blake2s")?;
        let generation = get("generation")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        drop(tx);
        Ok(Tables { users, torrents, admin_token_hash, generation })
    }

    /// Adds each user's delta to their figures, in one transaction (a user removed meanwhile is
    /// skipped).
    pub fn apply(&mut self, deltas: &HashMap<i64, Delta>) -> Result<(), DbError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let e = move |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(e.clone())?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE user SET uploaded = min(uploaded + ?2, 9223372036854775807), \
                     downloaded = min(downloaded + ?3, 9223372036854775807), completed = completed + ?4 \
                     WHERE id = ?1",
                )
                .map_err(e.clone())?;
            let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
            for (id, d) in deltas {
                st.execute(params![id, clamp(d.uploaded), clamp(d.downloaded), clamp(d.completed)])
                    .map_err(e.clone())?;
            }
        }
        tx.commit().map_err(e)
    }
}
