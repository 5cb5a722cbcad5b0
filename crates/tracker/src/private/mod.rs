//! Private mode (`access.mode = "private"`): users with passkeys, registered torrents, and
//! accounting of what each user uploaded and downloaded.
//!
//! * Users, torrents and the admin token's hash live in an SQLite database in the state
//!   folder ([`db`]). The tracker serves from a copy in memory ([`View`]): an announce looks
//!   its passkey up in a hash map and never waits on the disk.
//! * One thread of the tracker ([`run`]) owns the database connection: every 200 ms it asks
//!   SQLite whether another connection committed (`PRAGMA data_version`, which reads shared
//!   memory, not the file) and if so reads the tables again, then records the change counter it
//!   serves from (`loaded_generation`), which `bitswarm tracker user ...` waits for: a change
//!   made on the command line is in force when the command returns. Every
//!   `private.flush_interval` seconds, and when the tracker stops, it adds the accounting's
//!   deltas ([`ledger`]) to the users' figures in one transaction.
//! * The admin JSON API ([`admin`]) changes the database through the same connection and
//!   puts the change in force before it answers.
//! * A file lock (`tracker.lock`) keeps a second tracker off the same state folder, and tells
//!   the command line that a tracker runs.

pub mod admin;
pub mod db;
pub mod ledger;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bitswarm_tracker_proto::InfoHash;

use crate::Shared;
use crate::clock::Clock;
use crate::config::PrivateConfig;
use crate::service::AnnounceRequest;
use db::{Db, DbError};
use ledger::{Ledger, Outcome, Report};

/// How often the tracker looks for changes made by other connections.
pub const POLL: Duration = Duration::from_millis(200);

/// The lock file in the state folder.
pub const LOCK_FILE: &str = "tracker.lock";

/// Refusals.
pub const NO_PASSKEY: &str = "this tracker is private: announce with your announce URL (/announce/PASSKEY)";
pub const UNKNOWN_PASSKEY: &str = "unknown passkey";
pub const DISABLED: &str = "this account is disabled";
pub const NOT_REGISTERED: &str = "this torrent is not registered on this tracker";

/// A user as the announce path sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: i64,
    pub name: Arc<str>,
    pub enabled: bool,
}

/// What the tracker serves from: the database's tables as last read.
#[derive(Debug, Default)]
pub struct View {
    /// By passkey.
    pub users: HashMap<Box<str>, Member>,
    /// Registered torrents and their sizes (0: unknown).
    pub torrents: HashMap<InfoHash, u64>,
    pub admin_token_hash: Option<String>,
    pub generation: i64,
}

pub struct Private {
    view: RwLock<Arc<View>>,
    pub ledger: Ledger,
    db: Mutex<Db>,
    dir: PathBuf,
    pub config: PrivateConfig,
    clock: Clock,
    /// Warnings about figures that were not counted: a client that keeps sending them would
    /// otherwise write a line per announce.
    not_counted: Throttle,
    /// Held while the tracker runs.
    _lock: std::fs::File,
}

/// Takes the state folder's lock file; fails when a tracker holds it.
fn take_lock(dir: &Path) -> Result<std::fs::File, String> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(format!("another bitswarm tracker uses the state folder {} (it holds {LOCK_FILE})", dir.display()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Whether a tracker runs on the state folder `dir` (holds its lock).
pub fn tracker_running(dir: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().read(true).open(dir.join(LOCK_FILE)) else { return false };
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

/// After a change that took the database to `generation`: when a tracker runs on `dir`,
/// waits (up to `timeout`) until it serves from that change. Returns false if it did not.
pub fn wait_loaded(db: &Db, dir: &Path, generation: i64, timeout: Duration) -> Result<bool, DbError> {
    let deadline = Instant::now() + timeout;
    while tracker_running(dir) {
        if db.loaded_generation()? >= generation {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// Lets one warning through per [`Throttle::EVERY`] seconds and counts the others.
#[derive(Default)]
struct Throttle {
    /// The second of the last warning let through, plus one (0: none yet).
    last: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const EVERY: u64 = 10;

    /// At second `now`: `Some(warnings held back since the last one)` when this one may be
    /// written, else `None` (and it is counted).
    fn admit(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now + 1 >= last + Self::EVERY)
            && self.last.compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Private {
    /// Opens the state folder's database and reads it; accounting follows at most `max_peers`
    /// peers at once (`store.max_peers_total`).
    pub fn open(cfg: &PrivateConfig, max_peers: u64) -> Result<Private, String> {
        let dir = cfg.state_dir();
        db::create_private_dir(&dir).map_err(|e| e.to_string())?;
        let lock = take_lock(&dir)?;
        let db = Db::open(&dir).map_err(|e| e.to_string())?;
        let p = Private {
            view: RwLock::default(),
            ledger: Ledger::with_cap(cfg.max_rate, usize::try_from(max_peers).unwrap_or(usize::MAX)),
            db: Mutex::new(db),
            dir,
            config: cfg.clone(),
            clock: Clock::start(),
            not_counted: Throttle::default(),
            _lock: lock,
        };
        p.reload().map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// The state folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tables as last read.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the database connection (blocking: not from async code).
    pub fn with_db<T>(&self, f: impl FnOnce(&mut Db) -> T) -> T {
        f(&mut self.db())
    }

    /// Reads the tables again and puts them in force; records the change counter served.
    pub fn reload(&self) -> Result<(), DbError> {
        let mut db = self.db();
        let t = db.tables()?;
        let mut users = HashMap::with_capacity(t.users.len());
        for u in t.users {
            users.insert(u.passkey.into_boxed_str(), Member { id: u.id, name: u.name.into(), enabled: u.enabled });
        }
        let view = View { users, torrents: t.torrents, admin_token_hash: t.admin_token_hash, generation: t.generation };
        let ids: HashSet<i64> = view.users.values().map(|m| m.id).collect();
        let generation = view.generation;
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        self.ledger.retain_users(|u| ids.contains(&u));
        db.set_loaded(generation)?;
        Ok(())
    }

    /// The user a passkey names, if it is known and enabled.
    pub fn member(&self, passkey: Option<&str>) -> Result<Member, &'static str> {
        let passkey = passkey.ok_or(NO_PASSKEY)?;
        db::check_passkey(passkey)?;
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        match view.users.get(passkey) {
            None => Err(UNKNOWN_PASSKEY),
            Some(m) if !m.enabled => Err(DISABLED),
            Some(m) => Ok(m.clone()),
        }
    }

    /// Admits an announce (a known, enabled passkey; a registered torrent) and accounts it.
    pub fn admit(&self, r: &AnnounceRequest<'_>) -> Result<(), &'static str> {
        let passkey = r.passkey.ok_or(NO_PASSKEY)?;
        db::check_passkey(passkey)?;
        let (user, size) = {
            let view = self.view.read().unwrap_or_else(|p| p.into_inner());
            let m = match view.users.get(passkey) {
                None => return Err(UNKNOWN_PASSKEY),
                Some(m) if !m.enabled => return Err(DISABLED),
                Some(m) => m.clone(),
            };
            let Some(&size) = view.torrents.get(&r.info_hash) else { return Err(NOT_REGISTERED) };
            (m, size)
        };
        let report = Report {
            user: user.id,
            info_hash: r.info_hash,
            peer_id: r.peer_id,
            uploaded: r.uploaded,
            downloaded: r.downloaded,
            event: r.event,
            size,
            now: self.clock.secs(),
        };
        let outcome = self.ledger.record(&report);
        if matches!(outcome, Outcome::Negative | Outcome::Absurd)
            && let Some(more) = self.not_counted.admit(report.now)
        {
            let more = if more > 0 { format!(" ({more} more like it since the last shown)") } else { String::new() };
            if outcome == Outcome::Negative {
                tracing::warn!(
                    "private: not counted: {} reported lower figures than before without `started` on {} \
                     (uploaded {}, downloaded {}){more}",
                    user.name,
                    r.info_hash.to_hex(),
                    r.uploaded,
                    r.downloaded
                );
            } else {
                tracing::warn!(
                    "private: not counted: {} reported implausible growth on {} (uploaded {}, downloaded {}, \
                     torrent of {size} bytes, private.max_rate {} B/s){more}",
                    user.name,
                    r.info_hash.to_hex(),
                    r.uploaded,
                    r.downloaded,
                    self.config.max_rate
                );
            }
        }
        Ok(())
    }

    /// Writes the deltas counted so far (kept for the next try if the write fails).
    pub fn flush(&self) -> Result<(), DbError> {
        let deltas = self.ledger.take();
        if deltas.is_empty() {
            return Ok(());
        }
        let r = self.db().apply(&deltas);
        if r.is_err() {
            self.ledger.put_back(deltas);
        }
        r
    }
}

/// Puts the database's tables in force for `shared`: the view, the access list of registered
/// torrents; returns whether torrents were unregistered (their swarms are to be dropped).
pub fn put_in_force(shared: &Shared) -> Result<bool, DbError> {
    let Some(p) = &shared.private else { return Ok(false) };
    let old = p.view();
    p.reload()?;
    let view = p.view();
    shared.access.replace(view.torrents.keys().copied().collect());
    Ok(old.torrents.keys().any(|h| !view.torrents.contains_key(h)))
}

/// The database thread: picks up changes made by other connections, writes the accounting
/// every `private.flush_interval` seconds and once more when `stop` is set.
pub fn run(shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let Some(p) = shared.private.as_ref() else { return };
    let flush_every = Duration::from_secs(u64::from(p.config.flush_interval));
    let expire_every = Duration::from_secs(60);
    let mut last_flush = Instant::now();
    let mut last_expire = Instant::now();
    let mut version = p.with_db(|db| db.data_version()).ok();
    let mut warned: Option<Instant> = None;
    let mut warn = |what: &str, e: &DbError| {
        if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
            tracing::warn!("private: {what}: {e}");
            warned = Some(Instant::now());
        }
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        match p.with_db(|db| db.data_version()) {
            Ok(v) if Some(v) != version => {
                version = Some(v);
                match put_in_force(&shared) {
                    Ok(true) => {
                        if let Err(e) = shared.backend.blocking(shared.drop_disallowed()) {
                            tracing::warn!("private: the swarms of unregistered torrents could not be dropped: {e}");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => warn("reading the database", &e),
                }
            }
            Ok(_) => {}
            Err(e) => warn("reading the database", &e),
        }
        if last_flush.elapsed() >= flush_every {
            last_flush = Instant::now();
            if let Err(e) = p.flush() {
                warn("writing the accounting (kept for the next try)", &e);
            }
        }
        if last_expire.elapsed() >= expire_every {
            last_expire = Instant::now();
            let cutoff = p.clock.secs().saturating_sub(u64::from(shared.config.peer_timeout()));
            p.ledger.expire(cutoff);
        }
    }
    if let Err(e) = p.flush() {
        tracing::warn!("private: the last accounting could not be written: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bitswarm_tracker_proto::{Event, PeerId};

    use super::*;

    #[test]
    fn warnings_about_uncounted_figures_are_rate_limited() {
        let t = Throttle::default();
        assert_eq!(t.admit(100), Some(0), "the first one is written");
        assert_eq!(t.admit(100), None);
        assert_eq!(t.admit(105), None);
        assert_eq!(t.admit(109), None);
        assert_eq!(t.admit(110), Some(3), "then one every 10 s, with the count of those held back");
        assert_eq!(t.admit(110), None);
        assert_eq!(t.admit(200), Some(1));
        assert_eq!(t.admit(0), None, "a clock read before the last one lets nothing through");
    }
    use crate::store::Families;

    fn config(dir: &Path) -> PrivateConfig {
        PrivateConfig { state: dir.to_owned(), flush_interval: 1, max_rate: 1 << 30, admin_remote: false }
    }

    fn req(
        passkey: Option<&str>,
        h: InfoHash,
        (uploaded, downloaded): (u64, u64),
        event: Event,
    ) -> AnnounceRequest<'_> {
        AnnounceRequest {
            info_hash: h,
            peer_id: PeerId([1; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], 6881)),
            left: 0,
            uploaded,
            downloaded,
            event,
            numwant: None,
            max_peers: 50,
            families: Families::Both,
            passkey,
        }
    }

    #[test]
    fn passkeys_torrents_and_changes_made_by_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = Db::open(dir.path()).unwrap();
        let (alice, _) = cli.add_user("alice").unwrap();
        assert!(db::check_passkey(&alice.passkey).is_ok());
        let h = InfoHash([1; 20]);
        cli.add_torrent(&h, "one", 1000).unwrap();
        let p = Private::open(&config(dir.path()), 1000).unwrap();
        assert!(tracker_running(dir.path()));
        let e = Private::open(&config(dir.path()), 1000).err().unwrap();
        assert!(e.contains("another bitswarm tracker uses the state folder"), "{e}");

        let key = alice.passkey.as_str();
        assert_eq!(p.admit(&req(Some(key), h, (0, 0), Event::Started)), Ok(()));
        assert_eq!(p.admit(&req(None, h, (0, 0), Event::Started)), Err(NO_PASSKEY));
        for bad in ["", "abc", &key.to_uppercase(), &format!("{key}0"), &format!("{}g", &key[..31]), "é"] {
            assert!(p.admit(&req(Some(bad), h, (0, 0), Event::None)).unwrap_err().starts_with("invalid passkey"));
        }
        assert_eq!(p.admit(&req(Some(&"0".repeat(32)), h, (0, 0), Event::None)), Err(UNKNOWN_PASSKEY));
        assert_eq!(p.admit(&req(Some(key), InfoHash([2; 20]), (0, 0), Event::None)), Err(NOT_REGISTERED));

        // Another connection (the command line) disables alice: SQLite's data_version moves,
        // and a reload puts the change in force and records it for the command to see.
        let v = p.with_db(|db| db.data_version()).unwrap();
        let g = cli.set_enabled("alice", false).unwrap();
        assert_ne!(p.with_db(|db| db.data_version()).unwrap(), v);
        assert!(cli.loaded_generation().unwrap() < g);
        p.reload().unwrap();
        assert_eq!(cli.loaded_generation().unwrap(), g);
        assert_eq!(p.admit(&req(Some(key), h, (0, 0), Event::None)), Err(DISABLED));
        assert_eq!(p.member(Some(key)).unwrap_err(), DISABLED);
        cli.set_enabled("alice", true).unwrap();
        let (new_key, _) = cli.reset_passkey("alice").unwrap();
        p.reload().unwrap();
        assert_eq!(p.admit(&req(Some(key), h, (0, 0), Event::None)), Err(UNKNOWN_PASSKEY));
        assert_eq!(p.member(Some(&new_key)).unwrap().name.as_ref(), "alice");
        drop(p);
        assert!(!tracker_running(dir.path()), "the lock goes with the tracker");
    }

    #[test]
    fn a_deleted_user_is_refused_and_their_pending_figures_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = Db::open(dir.path()).unwrap();
        let (alice, _) = cli.add_user("alice").unwrap();
        cli.add_user("bob").unwrap();
        let h = InfoHash([1; 20]);
        cli.add_torrent(&h, "one", 1 << 20).unwrap();
        let p = Private::open(&config(dir.path()), 1000).unwrap();
        let key = Some(alice.passkey.as_str());
        p.admit(&req(key, h, (0, 0), Event::Started)).unwrap();
        p.admit(&req(key, h, (500, 0), Event::None)).unwrap();
        let g = cli.delete_user("alice").unwrap();
        assert!(matches!(cli.delete_user("alice"), Err(DbError::NoUser(_))), "deleted once");
        assert!(matches!(cli.delete_user("carol"), Err(DbError::NoUser(_))));
        p.reload().unwrap();
        assert_eq!(cli.loaded_generation().unwrap(), g);
        assert_eq!(p.admit(&req(key, h, (600, 0), Event::None)), Err(UNKNOWN_PASSKEY));
        // What alice moved before is written nowhere, and nobody else's figures change.
        p.flush().unwrap();
        let users = cli.users().unwrap();
        assert_eq!(users.iter().map(|u| (u.name.as_str(), u.uploaded)).collect::<Vec<_>>(), [("bob", 0)]);
        // The name can be taken again, with a new passkey and no figures.
        let (again, _) = cli.add_user("alice").unwrap();
        assert_ne!(again.passkey, alice.passkey);
        assert_eq!(again.uploaded, 0);
    }

    #[test]
    fn accounting_is_batched_in_memory_and_written_at_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = Db::open(dir.path()).unwrap();
        let (alice, _) = cli.add_user("alice").unwrap();
        let (bob, _) = cli.add_user("bob").unwrap();
        let h = InfoHash([1; 20]);
        cli.add_torrent(&h, "one", 1 << 20).unwrap();
        let p = Private::open(&config(dir.path()), 1000).unwrap();
        let (a, b) = (Some(alice.passkey.as_str()), Some(bob.passkey.as_str()));
        p.admit(&req(a, h, (0, 0), Event::Started)).unwrap();
        p.admit(&req(b, h, (0, 0), Event::Started)).unwrap();
        for i in 1..=10 {
            p.admit(&req(a, h, (i * 100, 0), Event::None)).unwrap();
            p.admit(&req(b, h, (0, i * 100), Event::None)).unwrap();
        }
        p.admit(&req(b, h, (0, 1000), Event::Completed)).unwrap();
        // Nothing reached the disk yet.
        assert!(cli.users().unwrap().iter().all(|u| u.uploaded + u.downloaded == 0));
        p.flush().unwrap();
        let users = cli.users().unwrap();
        let fig =
            |n: &str| users.iter().find(|u| u.name == n).map(|u| (u.uploaded, u.downloaded, u.completed)).unwrap();
        assert_eq!((fig("alice"), fig("bob")), ((1000, 0, 0), (0, 1000, 1)));
        // A second flush with nothing new changes nothing; new deltas add up.
        p.flush().unwrap();
        p.admit(&req(a, h, (1500, 0), Event::Stopped)).unwrap();
        p.flush().unwrap();
        assert_eq!(cli.user("alice").unwrap().uploaded, 1500);
        // A user disabled between an announce and the flush: what they moved before counts.
        p.admit(&req(b, h, (0, 1100), Event::None)).unwrap();
        cli.set_enabled("bob", false).unwrap();
        p.flush().unwrap();
        assert_eq!(cli.user("bob").unwrap().downloaded, 1100);
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = rusqlite::Connection::open(dir.path().join(db::FILE)).unwrap();
            c.execute_batch("CREATE TABLE other (x INTEGER);").unwrap();
        }
        let e = Db::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is not a bitswarm tracker database"), "{e}");
    }
}
