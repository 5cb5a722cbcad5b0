//! `bitswarm tracker user ...`, `bitswarm tracker torrent ...` and `bitswarm tracker
//! admin-token`: a private tracker's users and torrents, changed in its state database. A
//! tracker running on the same state folder picks a change up within a fraction of a second;
//! the command waits until it has, so that a disabled user or an old passkey is refused from
//! the next announce on.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bitswarm_tracker::private::db::{Db, DbError, User};
use bitswarm_tracker::private::{tracker_running, wait_loaded};
use bitswarm_tracker::{Config, InfoHash};
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum TrackerCommand {
    /// A private tracker's users (access.mode = "private").
    #[command(subcommand)]
    User(UserCommand),
    /// The torrents a private tracker serves.
    #[command(subcommand)]
    Torrent(TorrentCommand),
    /// Make a new token for the admin JSON API and print it (the previous one stops working;
    /// only its hash is stored).
    AdminToken,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; prints their passkey and announce URLs.
    Add {
        name: String,
        /// The announce URL's start, as clients reach the tracker [default: from the
        /// configuration's http.bind, e.g. http://127.0.0.1:6969/announce].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// List the users with their figures (bytes).
    List {
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Refuse a user's announces from now on.
    Disable { name: String },
    /// Admit a disabled user again.
    Enable { name: String },
    /// Delete a user: their passkey is refused from now on, and their figures are gone.
    Delete { name: String },
    /// Give a user a new passkey (the old one is refused from now on); prints it.
    PasskeyReset {
        name: String,
        /// As for `user add`.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TorrentCommand {
    /// Register a torrent, by its .torrent file (name and size known) or its info-hash.
    Add {
        #[arg(value_name = "FILE.torrent|INFOHASH")]
        what: String,
    },
    /// Unregister a torrent: its announces are refused, its swarm dropped.
    Remove {
        #[arg(value_name = "FILE.torrent|INFOHASH")]
        what: String,
    },
    /// List the registered torrents.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// How long a command waits for a running tracker to pick its change up.
const WAIT: Duration = Duration::from_secs(10);

fn db_failure(e: DbError) -> Failure {
    match e {
        DbError::Sqlite { .. } | DbError::Io(_) => Failure::failed(e.to_string()),
        _ => Failure::usage(e.to_string()),
    }
}

pub fn run(command: TrackerCommand, config: &Config) -> Result<(), Failure> {
    let dir = config.private.state_dir();
    let mut db = Db::open(&dir).map_err(db_failure)?;
    let generation = match command {
        TrackerCommand::User(UserCommand::Add { name, url }) => {
            let (user, g) = db.add_user(&name).map_err(db_failure)?;
            outln!("user {} added", user.name);
            print_passkey(config, &user.passkey, url.as_deref());
            Some(g)
        }
        TrackerCommand::User(UserCommand::List { json }) => {
            let users = db.users().map_err(db_failure)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&users).unwrap_or_default());
            } else {
                print_users(&users);
            }
            None
        }
        TrackerCommand::User(UserCommand::Disable { name }) => {
            let g = db.set_enabled(&name, false).map_err(db_failure)?;
            outln!("user {name} disabled");
            Some(g)
        }
        TrackerCommand::User(UserCommand::Enable { name }) => {
            let g = db.set_enabled(&name, true).map_err(db_failure)?;
            outln!("user {name} enabled");
            Some(g)
        }
        TrackerCommand::User(UserCommand::Delete { name }) => {
            let g = db.delete_user(&name).map_err(db_failure)?;
            outln!("user {name} deleted");
            Some(g)
        }
        TrackerCommand::User(UserCommand::PasskeyReset { name, url }) => {
            let (passkey, g) = db.reset_passkey(&name).map_err(db_failure)?;
            outln!("user {name} has a new passkey (the old one is refused)");
            print_passkey(config, &passkey, url.as_deref());
            Some(g)
        }
        TrackerCommand::Torrent(TorrentCommand::Add { what }) => {
            let (h, name, size) = torrent_of(&what)?;
            let g = db.add_torrent(&h, &name, size).map_err(db_failure)?;
            if name.is_empty() {
                outln!("registered {}", h.to_hex());
            } else {
                outln!("registered {} ({name}, {size} bytes)", h.to_hex());
            }
            Some(g)
        }
        TrackerCommand::Torrent(TorrentCommand::Remove { what }) => {
            let (h, _, _) = torrent_of(&what)?;
            let g = db.remove_torrent(&h).map_err(db_failure)?;
            outln!("unregistered {}", h.to_hex());
            Some(g)
        }
        TrackerCommand::Torrent(TorrentCommand::List { json }) => {
            let torrents = db.torrents().map_err(db_failure)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&torrents).unwrap_or_default());
            } else {
                for t in &torrents {
                    outln!("{}  {:>15}  {}", t.info_hash, t.size, t.name);
                }
                outln!("{} torrents", torrents.len());
            }
            None
        }
        TrackerCommand::AdminToken => {
            let (token, g) = db.new_admin_token().map_err(db_failure)?;
            outln!("admin token (shown once; send it as `Authorization: Bearer TOKEN`):");
            outln!("{token}");
            Some(g)
        }
    };
    if let Some(g) = generation {
        in_force(&db, &dir, g);
    }
    Ok(())
}

/// After a change: when a tracker runs on `dir`, waits until it serves from it.
fn in_force(db: &Db, dir: &Path, generation: i64) {
    if !tracker_running(dir) {
        return;
    }
    match wait_loaded(db, dir, generation, WAIT) {
        Ok(true) => outln!("in force on the running tracker"),
        Ok(false) => errln!(
            "bitswarm: warning: the tracker running on {} has not picked the change up within {} s",
            dir.display(),
            WAIT.as_secs()
        ),
        Err(e) => errln!("bitswarm: warning: cannot tell whether the running tracker picked the change up: {e}"),
    }
}

/// A torrent named on the command line: an existing .torrent file, else an info-hash.
fn torrent_of(what: &str) -> Result<(InfoHash, String, u64), Failure> {
    let path = Path::new(what);
    if path.is_file() {
        let m = crate::torrent::load(path)?;
        let h = InfoHash(m.info_hash.0);
        return Ok((h, m.info.name.clone(), m.info.total_length));
    }
    match InfoHash::parse(what) {
        Ok(h) => Ok((h, String::new(), 0)),
        Err(_) => Err(Failure::usage(format!(
            "{what:?} is neither a .torrent file nor an info-hash (40 hex digits or 32 base32 characters)"
        ))),
    }
}

fn host_of(bind: SocketAddr) -> String {
    let ip = bind.ip();
    if ip.is_unspecified() {
        // A client on another host needs this machine's public name: say so with --url.
        return format!("127.0.0.1:{}", bind.port());
    }
    bind.to_string()
}

fn print_passkey(config: &Config, passkey: &str, url: Option<&str>) {
    outln!("passkey: {passkey}");
    match url {
        Some(u) => outln!("announce URL: {}/{passkey}", u.trim_end_matches('/')),
        None => {
            if config.http.enabled {
                outln!("announce URL: http://{}/announce/{passkey}", host_of(config.http.bind));
            }
            if config.udp.enabled {
                outln!("announce URL: udp://{}/announce/{passkey}", host_of(config.udp.bind));
            }
        }
    }
}

fn print_users(users: &[User]) {
    outln!("{:<20} {:<8} {:>16} {:>16} {:>9}  PASSKEY", "NAME", "ENABLED", "UPLOADED", "DOWNLOADED", "COMPLETED");
    for u in users {
        outln!(
            "{:<20} {:<8} {:>16} {:>16} {:>9}  {}",
            u.name,
            if u.enabled { "yes" } else { "no" },
            u.uploaded,
            u.downloaded,
            u.completed,
            u.passkey
        );
    }
}
