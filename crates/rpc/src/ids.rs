//! Torrent selection by `ids` (§3), in every form clients send, resolved to session ids.
//!
//! | `ids` | selects |
//! |---|---|
//! | absent, `null`, an object | every torrent, by id (the reference behaviour, even for torrent-remove) |
//! | integer (or a bool or real, coerced as §2.2) | that id |
//! | `"recently-active"` | torrents active in the last 60 s; the reply adds `removed` |
//! | `"recently-active"` with `bitswarm-since` | bitswarm's own: see [`changed_since`] |
//! | other string | the torrent with that hash: 40 hex, 32 base32 or a magnet link, any case |
//! | list | each int an id, each string a hash, in request order; other items skipped |
//!
//! Transmission 4.0 also takes an integer `id` key, after the list and int forms of `ids` and
//! before its string form. Unknown ids and hashes select nothing, silently; `[]` selects
//! nothing. A torrent named twice is selected once, so a long list repeating one id cannot
//! make a reply grow beyond one copy of each torrent.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::backend::Backend;
use crate::coerce::{self, Args};
use crate::hash::InfoHash;

/// One element of an `ids` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selector {
    Id(i64),
    Hash(InfoHash),
    /// A string that names no hash (`"2"`): selects nothing.
    Nothing,
}

/// What a request's `ids` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    All,
    RecentlyActive,
    List(Vec<Selector>),
}

/// The torrents a request names, as session ids in reply order, and for `recently-active`
/// the ids removed lately.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Resolved {
    pub ids: Vec<u32>,
    pub removed: Option<Vec<u32>>,
}

fn selector(v: &Value) -> Option<Selector> {
    if let Some(n) = coerce::int(v) {
        return Some(Selector::Id(n));
    }
    let s = v.as_str()?;
    Some(InfoHash::parse(s).map_or(Selector::Nothing, Selector::Hash))
}

/// Reads `ids` (and `id`) from a request's arguments.
pub(crate) fn parse(args: &Args) -> Selection {
    let ids = args.get("ids");
    if let Some(list) = ids.and_then(Value::as_array) {
        return Selection::List(list.iter().filter_map(selector).collect());
    }
    if let Some(n) = ids.and_then(coerce::int).or_else(|| args.get("id").and_then(coerce::int)) {
        return Selection::List(vec![Selector::Id(n)]);
    }
    match ids.and_then(Value::as_str) {
        Some("recently-active") => Selection::RecentlyActive,
        Some(s) => Selection::List(vec![InfoHash::parse(s).map_or(Selector::Nothing, Selector::Hash)]),
        None => Selection::All,
    }
}

fn sorted_unique(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Resolves a selection against the backend's torrents.
pub(crate) fn resolve<B: Backend>(selection: &Selection, backend: &B) -> Resolved {
    match selection {
        Selection::All => {
            let ids = backend.torrent_ids().into_iter().map(|(id, _)| id).collect();
            Resolved { ids: sorted_unique(ids), removed: None }
        }
        Selection::RecentlyActive => Resolved {
            ids: sorted_unique(backend.recently_active()),
            removed: Some(sorted_unique(backend.recently_removed())),
        },
        Selection::List(selectors) => {
            if selectors.is_empty() {
                return Resolved::default();
            }
            let known = backend.torrent_ids();
            let by_id: HashSet<u32> = known.iter().map(|(id, _)| *id).collect();
            let by_hash: HashMap<InfoHash, u32> = if selectors.iter().any(|s| matches!(s, Selector::Hash(_))) {
                known.iter().map(|(id, h)| (*h, *id)).collect()
            } else {
                HashMap::new()
            };
            let mut seen = HashSet::new();
            let mut ids = Vec::new();
            for s in selectors {
                let id = match s {
                    Selector::Id(n) => u32::try_from(*n).ok().filter(|id| by_id.contains(id)),
                    Selector::Hash(h) => by_hash.get(h).copied(),
                    Selector::Nothing => None,
                };
                if let Some(id) = id
                    && seen.insert(id)
                {
                    ids.push(id);
                }
            }
            Resolved { ids, removed: None }
        }
    }
}

/// bitswarm's clock for `bitswarm-since` and `bitswarm-now`: milliseconds since the Unix epoch,
/// as the wall clock read once (at the first use) plus the monotonic clock since. A marker
/// from an earlier run of the daemon is then older than this run, and setting the wall clock
/// moves nothing.
struct Clock {
    start: Instant,
    start_ms: u64,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| Clock {
        start: Instant::now(),
        start_ms: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    })
}

/// Now, as a `bitswarm-now` marker. Read before the torrents are: a change after it is
/// in the next answer.
pub(crate) fn now_marker() -> u64 {
    let c = clock();
    c.start_ms + c.start.elapsed().as_millis() as u64
}

/// How far back of a client's marker changes are sent again: a change stamped just before the
/// state it stamps was visible to that listing is not lost.
const SLACK: Duration = Duration::from_secs(1);

/// The instant a `bitswarm-since` marker names, if this run gave it (not 0, not from an
/// earlier run, not from the future).
pub(crate) fn marker_instant(marker: i64) -> Option<Instant> {
    let c = clock();
    u64::try_from(marker)
        .ok()
        .filter(|m| *m >= c.start_ms && *m <= now_marker())
        .and_then(|m| c.start.checked_add(Duration::from_millis(m - c.start_ms)))
}

/// What [`changed_since`] selects: every field of the `changed`, fewer of the `moving`.
pub(crate) struct Since {
    /// State or settings changed since the marker (or every torrent, for a marker this run did
    /// not give).
    pub changed: Vec<u32>,
    /// Only their figures move (see [`Backend::changes_since`]).
    pub moving: Vec<u32>,
    pub removed: Vec<u32>,
}

/// `recently-active` for a client that sent `bitswarm-since: marker` (the `bitswarm-now` of
/// its last answer, or 0): the torrents changed since then, less [`SLACK`], and the busy ones
/// ([`Backend::changes_since`]), so that a client polling every few seconds gets a bulk add
/// once instead of for a whole minute. A marker this run did not give (0, from an earlier run,
/// from the future) gets every torrent. `removed` is as for `recently-active`. Transmission's
/// clients do not send it, and get Transmission's `recently-active`.
pub(crate) fn changed_since<B: Backend>(marker: i64, backend: &B) -> Since {
    let c = clock();
    let removed = sorted_unique(backend.recently_removed());
    match marker_instant(marker).map(|t| t.checked_sub(SLACK).unwrap_or(c.start)) {
        Some(t) => {
            let ch = backend.changes_since(t);
            let changed = sorted_unique(ch.changed);
            let mut moving = sorted_unique(ch.moving);
            moving.retain(|id| changed.binary_search(id).is_err());
            Since { changed, moving, removed }
        }
        None => Since {
            changed: sorted_unique(backend.torrent_ids().into_iter().map(|(id, _)| id).collect()),
            moving: Vec::new(),
            removed,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Args {
        v.as_object().cloned().unwrap_or_default()
    }

    const H1: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn forms() {
        let h1 = InfoHash::from_hex(H1).unwrap();
        assert_eq!(parse(&args(json!({}))), Selection::All);
        assert_eq!(parse(&args(json!({"ids": null}))), Selection::All);
        assert_eq!(parse(&args(json!({"ids": {"a": 1}}))), Selection::All);
        assert_eq!(parse(&args(json!({"ids": 5}))), Selection::List(vec![Selector::Id(5)]));
        assert_eq!(parse(&args(json!({"id": 2}))), Selection::List(vec![Selector::Id(2)]));
        // The list form of ids wins over id.
        assert_eq!(parse(&args(json!({"ids": [], "id": 2}))), Selection::List(vec![]));
        assert_eq!(parse(&args(json!({"ids": "recently-active"}))), Selection::RecentlyActive);
        assert_eq!(parse(&args(json!({"ids": H1.to_uppercase()}))), Selection::List(vec![Selector::Hash(h1)]));
        assert_eq!(parse(&args(json!({"ids": "2"}))), Selection::List(vec![Selector::Nothing]));
        let magnet = format!("magnet:?xt=urn:btih:{H1}&dn=x");
        assert_eq!(parse(&args(json!({"ids": [1, magnet, {"x": 1}, null]}))).clone(), {
            Selection::List(vec![Selector::Id(1), Selector::Hash(h1)])
        });
    }
}
