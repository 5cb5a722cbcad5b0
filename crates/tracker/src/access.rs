//! Access lists: which info-hashes the tracker serves. `allow` serves only the listed ones (as
//! opentracker's whitelist, for a tracker of its own torrents), `deny` all but the listed ones.
//! The list is a file of info-hashes (40 hex digits or 32 base32 characters), one a line; `#`
//! starts a comment. It can be read again while the tracker runs ([`Access::reload`], on SIGHUP
//! in `bitswarm tracker`); a list that does not parse leaves the old one in force.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bitswarm_tracker_proto::InfoHash;

use crate::config::{AccessConfig, AccessMode};

/// The message a refused announce gets (HTTP `failure reason`, UDP error).
pub const NOT_ALLOWED: &str = "this tracker does not serve that info_hash";

pub struct Access {
    mode: AccessMode,
    path: PathBuf,
    list: RwLock<Arc<HashSet<InfoHash>>>,
    /// Changes whenever `list` does, unique across all `Access` values: each thread keeps the
    /// list it last saw with its generation, so an announce reads one shared word (never
    /// written between reloads) instead of taking the lock.
    generation: AtomicU64,
}

/// The source of generations.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The list this thread last used, and its generation.
    static SEEN: RefCell<(u64, Arc<HashSet<InfoHash>>)> = RefCell::default();
}

/// Parses an access list; an error names the line and what is wrong with it.
pub fn parse_list(text: &str) -> Result<HashSet<InfoHash>, String> {
    let mut set = HashSet::new();
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let h = InfoHash::parse(entry).map_err(|_| {
            format!("line {}: {entry:?} is not an info-hash (40 hex digits or 32 base32 characters)", n + 1)
        })?;
        set.insert(h);
    }
    Ok(set)
}

impl Access {
    /// Reads the list the configuration names (none when the mode is `off`).
    pub fn load(cfg: &AccessConfig) -> Result<Access, String> {
        let access = Access {
            mode: cfg.mode,
            path: cfg.list.clone(),
            list: RwLock::default(),
            generation: AtomicU64::new(GENERATIONS.fetch_add(1, Ordering::Relaxed)),
        };
        if matches!(cfg.mode, AccessMode::Allow | AccessMode::Deny) {
            access.reload()?;
        }
        Ok(access)
    }

    /// Reads the list file again; returns how many info-hashes it holds. On an error the list
    /// in force stays.
    pub fn reload(&self) -> Result<usize, String> {
        match self.mode {
            AccessMode::Off => return Ok(0),
            // The registered torrents come from the state database (see [`Access::replace`]).
            AccessMode::Private => return Ok(self.len()),
            AccessMode::Allow | AccessMode::Deny => {}
        }
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| format!("access list {}: {e}", self.path.display()))?;
        let set = parse_list(&text).map_err(|e| format!("access list {}: {e}", self.path.display()))?;
        let n = set.len();
        self.replace(set);
        Ok(n)
    }

    /// Puts `set` in force (private mode: the registered torrents).
    pub fn replace(&self, set: HashSet<InfoHash>) {
        let old = std::mem::replace(&mut *self.list.write().unwrap_or_else(|p| p.into_inner()), Arc::new(set));
        self.generation.store(GENERATIONS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        drop(old);
    }

    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    /// The list file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Info-hashes in the list in force.
    pub fn len(&self) -> usize {
        self.list.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether announces for `h` are served.
    pub fn allows(&self, h: &InfoHash) -> bool {
        let listed = match self.mode {
            AccessMode::Off => return true,
            _ => self.listed(h),
        };
        listed == matches!(self.mode, AccessMode::Allow | AccessMode::Private)
    }

    fn listed(&self, h: &InfoHash) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            if seen.0 != generation {
                *seen = (generation, self.list.read().unwrap_or_else(|p| p.into_inner()).clone());
            }
            seen.1.contains(h)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_comments_and_errors_name_the_line() {
        let set = parse_list(
            "# allowed torrents\n\n  0123456789abcdef0123456789ABCDEF01234567  # a comment\nAEBAGBAFAYDQQCIKBMGA2DQPCAIREEYU\n",
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&InfoHash::parse("0123456789abcdef0123456789abcdef01234567").unwrap()));
        let bom = format!("\u{feff}{}\n", "01".repeat(20));
        assert_eq!(parse_list(&bom).unwrap().len(), 1);
        let e = parse_list("0123456789abcdef0123456789abcdef01234567\nnot-a-hash\n").unwrap_err();
        assert!(e.starts_with("line 2: \"not-a-hash\""), "{e}");
    }

    #[test]
    fn modes_and_reload() {
        let dir = std::env::temp_dir().join(format!("bitswarm-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("list.txt");
        let (a, b) = (InfoHash([1; 20]), InfoHash([2; 20]));
        std::fs::write(&path, format!("{}\n", a.to_hex())).unwrap();
        let cfg = |mode| AccessConfig { mode, list: path.clone() };
        let allow = Access::load(&cfg(AccessMode::Allow)).unwrap();
        let deny = Access::load(&cfg(AccessMode::Deny)).unwrap();
        let off = Access::load(&AccessConfig { mode: AccessMode::Off, list: PathBuf::new() }).unwrap();
        assert!(allow.allows(&a) && !allow.allows(&b));
        assert!(!deny.allows(&a) && deny.allows(&b));
        // Two lists used by one thread in turn: each answers from its own.
        assert!(allow.allows(&a) && !deny.allows(&a) && allow.allows(&a));
        assert!(off.allows(&a) && off.allows(&b));
        std::fs::write(&path, format!("{}\n{}\n", a.to_hex(), b.to_hex())).unwrap();
        assert_eq!(allow.reload(), Ok(2));
        assert!(allow.allows(&b));
        // A broken list leaves the old one in force.
        std::fs::write(&path, "zz\n").unwrap();
        assert!(allow.reload().unwrap_err().contains("line 1"));
        assert!(allow.allows(&a) && allow.allows(&b));
        std::fs::remove_file(&path).unwrap();
        assert!(Access::load(&cfg(AccessMode::Allow)).is_err());
        let _ = std::fs::remove_dir(&dir);
    }
}
