//! The torrent methods (§4.1–4.8).

use serde::Serialize;
use serde_json::Value;

use crate::backend::{
    AddOutcome, AddRequest, AddSource, Backend, BackendError, FileSelection, TorrentRef, TorrentSet, Wants,
};
use crate::coerce::{self, Args, ArgsExt};
use crate::envelope::Reply;
use crate::fields::{Torrents, parse_fields};
use crate::hash::{InfoHash, Magnet};
use crate::ids;
use crate::methods::is_absolute;
use crate::view::{LimitMode, Priority};

/// torrent-get: `fields` is required; unknown fields are left out; `format: "table"` gives
/// rows; `recently-active` adds `removed`; bitswarm's `bitswarm-since` adds `bitswarm-now`
/// (see [`ids::changed_since`]), and with it bitswarm's `bitswarm-moving` (field names) lists
/// the torrents whose figures only moved apart, under `bitswarm-moving` (left out when there
/// are none), with those fields alone. A held request (`bitswarm-wait`) waited before this (see [`crate::hold`]).
pub(crate) fn get<B: Backend>(backend: &B, args: &Args) -> Reply {
    #[derive(Serialize)]
    struct Get<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        removed: Option<Vec<u32>>,
        torrents: Torrents<'a>,
        #[serde(rename = "bitswarm-moving", skip_serializing_if = "Option::is_none")]
        moving: Option<Torrents<'a>>,
        #[serde(rename = "bitswarm-now", skip_serializing_if = "Option::is_none")]
        now: Option<u64>,
    }
    let Some(names) = args.get("fields").and_then(Value::as_array) else {
        return Reply::error_with("no fields specified", &serde_json::json!({"torrents": []}));
    };
    let fields = parse_fields(names.iter().filter_map(Value::as_str));
    let table = args.str_of("format") == Some("table");
    // bitswarm's own `bitswarm-since` (its web page): the reply says when it was made.
    let since = args.get("bitswarm-since").and_then(coerce::int);
    let now = since.map(|_| ids::now_marker());
    let selection = ids::parse(args);
    let moving_fields = match since {
        Some(_) => args.get("bitswarm-moving").and_then(Value::as_array).map(|names| {
            let mut f = parse_fields(names.iter().filter_map(Value::as_str));
            // A row must say whose it is.
            if !f.iter().any(|f| f.name() == "id") {
                f.splice(0..0, parse_fields(["id"]));
            }
            f
        }),
        None => None,
    };
    let (resolved, moving) = match since {
        Some(marker) if selection == ids::Selection::RecentlyActive => {
            let s = ids::changed_since(marker, backend);
            let mut changed = s.changed;
            let moving = if moving_fields.is_some() {
                s.moving
            } else {
                changed.extend(s.moving);
                changed.sort_unstable();
                Vec::new()
            };
            (ids::Resolved { ids: changed, removed: Some(s.removed) }, moving)
        }
        _ => (ids::resolve(&selection, backend), Vec::new()),
    };
    let view = |ids: &[u32], fields: &[crate::fields::Field]| {
        if ids.is_empty() {
            Vec::new()
        } else {
            backend.torrents(ids, Wants::from_fields(fields.iter().map(|f| f.name())))
        }
    };
    let views = view(&resolved.ids, &fields);
    let moving_views = match &moving_fields {
        Some(f) => view(&moving, f),
        None => Vec::new(),
    };
    // With `bitswarm-since`, nothing changed is `[]` also in the table format (not a row of
    // field names alone): what an idle page's poll gets.
    let table_of = |v: &[_]| table && !(since.is_some() && v.is_empty());
    // A torrent in this answer is not in its `removed` (clients apply `removed` after the
    // rows, or before): never so with ids that are not reused, kept so whatever the backend.
    let mut removed = resolved.removed;
    if let Some(r) = removed.as_mut().filter(|r| !r.is_empty()) {
        let shown: std::collections::HashSet<u32> = views.iter().chain(&moving_views).map(|v| v.id).collect();
        r.retain(|id| !shown.contains(id));
    }
    Reply::with(&Get {
        removed,
        torrents: Torrents { views: &views, fields: &fields, table: table_of(&views) },
        // Left out when none moved: an idle page's answer stays as small as it was.
        moving: moving_fields.as_ref().filter(|_| !moving_views.is_empty()).map(|f| Torrents {
            views: &moving_views,
            fields: f,
            table: table_of(&moving_views),
        }),
        now,
    })
}

/// The methods that only name torrents: start, start-now, stop, verify, reannounce and the
/// queue moves. Nothing selected, nothing called.
pub(crate) fn act<B: Backend>(backend: &B, args: &Args, f: impl FnOnce(&B, &[u32])) -> Reply {
    let resolved = ids::resolve(&ids::parse(args), backend);
    if !resolved.ids.is_empty() {
        f(backend, &resolved.ids);
    }
    Reply::success()
}

fn outcome(r: Result<(), BackendError>) -> Reply {
    match r {
        Ok(()) => Reply::success(),
        Err(e) => Reply::error(e.to_string()),
    }
}

/// torrent-remove, with `delete-local-data` (default false).
pub(crate) async fn remove<B: Backend>(backend: &B, args: &Args) -> Reply {
    let delete = args.bool_of("delete-local-data").unwrap_or(false);
    let resolved = ids::resolve(&ids::parse(args), backend);
    if resolved.ids.is_empty() {
        return Reply::success();
    }
    outcome(backend.remove(&resolved.ids, delete).await)
}

/// Labels as Transmission 4.0 takes them: trimmed, none empty, none with a comma, each once.
fn labels(list: Vec<String>) -> Result<Vec<String>, &'static str> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for l in list {
        let l = l.trim();
        if l.is_empty() {
            return Err("labels cannot be empty");
        }
        if l.contains(',') {
            return Err("labels cannot contain comma (,) character");
        }
        if !out.iter().any(|x| x == l) {
            out.push(l.to_owned());
        }
    }
    Ok(out)
}

/// Whether `url` can be an announce URL: `http`, `https` or `udp`, with a host.
pub(crate) fn is_announce_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    let scheme_ok = ["http", "https", "udp"].iter().any(|s| scheme.eq_ignore_ascii_case(s));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    scheme_ok && !host.is_empty() && !host.starts_with(':') && !url.chars().any(char::is_whitespace)
}

/// `trackerList`: one announce URL a line, a blank line between tiers. Every URL must be an
/// announce URL; a URL given twice is kept once.
pub(crate) fn tracker_list(text: &str) -> Option<Vec<Vec<String>>> {
    let mut tiers: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                tiers.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !is_announce_url(line) {
            return None;
        }
        if seen.insert(line.to_owned()) {
            current.push(line.to_owned());
        }
    }
    if !current.is_empty() {
        tiers.push(current);
    }
    Some(tiers)
}

/// File indices of `files-*`/`priority-*`: `[]` means every file. Indices that cannot be a
/// file's (negative, huge) are reported as out of range, as Transmission does.
fn file_selection(v: Option<&Value>, out_of_range: &mut bool) -> Option<FileSelection> {
    let list = v?.as_array()?;
    if list.is_empty() {
        return Some(FileSelection::All);
    }
    let mut indices = Vec::with_capacity(list.len());
    for i in list.iter().filter_map(coerce::int) {
        match u32::try_from(i) {
            Ok(i) => indices.push(i),
            Err(_) => *out_of_range = true,
        }
    }
    Some(FileSelection::Indices(indices))
}

/// Reads torrent-set's keys, checking what can be checked without the torrent. The error is
/// the result string; nothing has been applied then.
fn parse_set(a: &Args) -> Result<(TorrentSet, bool), &'static str> {
    let mut out_of_range = false;
    let labels = match a.str_list_of("labels") {
        Some(l) => Some(labels(l)?),
        None => None,
    };
    let tracker_list = match a.str_of("trackerList") {
        Some(t) => Some(tracker_list(t).ok_or("Invalid tracker list")?),
        None => None,
    };
    let tracker_replace = a.get("trackerReplace").and_then(Value::as_array).map(|flat| {
        flat.chunks(2)
            .filter_map(|pair| match pair {
                [id, url] => Some((coerce::int_in::<u32>(id)?, url.as_str()?.to_owned())),
                _ => None,
            })
            .filter(|(_, url)| is_announce_url(url))
            .collect()
    });
    let set = TorrentSet {
        bandwidth_priority: a.get("bandwidthPriority").and_then(coerce::int).and_then(Priority::from_wire),
        download_limit: a.int_of("downloadLimit"),
        download_limited: a.bool_of("downloadLimited"),
        upload_limit: a.int_of("uploadLimit"),
        upload_limited: a.bool_of("uploadLimited"),
        honors_session_limits: a.bool_of("honorsSessionLimits"),
        files_wanted: file_selection(a.get("files-wanted"), &mut out_of_range),
        files_unwanted: file_selection(a.get("files-unwanted"), &mut out_of_range),
        priority_high: file_selection(a.get("priority-high"), &mut out_of_range),
        priority_low: file_selection(a.get("priority-low"), &mut out_of_range),
        priority_normal: file_selection(a.get("priority-normal"), &mut out_of_range),
        peer_limit: a.int_of("peer-limit"),
        queue_position: a.int_of("queuePosition"),
        seed_ratio_limit: a.double_of("seedRatioLimit").filter(|r| *r >= 0.0),
        seed_ratio_mode: a.get("seedRatioMode").and_then(coerce::int).and_then(LimitMode::from_wire),
        seed_idle_limit: a.int_of("seedIdleLimit"),
        seed_idle_mode: a.get("seedIdleMode").and_then(coerce::int).and_then(LimitMode::from_wire),
        labels,
        group: a.string_of("group"),
        tracker_list,
        tracker_add: a.str_list_of("trackerAdd").map(|l| l.into_iter().filter(|u| is_announce_url(u)).collect()),
        tracker_remove: a.int_list_of("trackerRemove"),
        tracker_replace,
        location: a.string_of("location").filter(|l| is_absolute(l)),
    };
    Ok((set, out_of_range))
}

/// torrent-set: every key present applied to every selected torrent.
pub(crate) fn set<B: Backend>(backend: &B, args: &Args) -> Reply {
    let (set, out_of_range) = match parse_set(args) {
        Ok(s) => s,
        Err(message) => return Reply::error(message),
    };
    let resolved = ids::resolve(&ids::parse(args), backend);
    if resolved.ids.is_empty() {
        return Reply::success();
    }
    match backend.set(&resolved.ids, &set) {
        Ok(()) if out_of_range => Reply::error(BackendError::FileIndexOutOfRange.to_string()),
        r => outcome(r),
    }
}

/// torrent-set-location: `location` required and absolute; `move` defaults to false.
pub(crate) async fn set_location<B: Backend>(backend: &B, args: &Args) -> Reply {
    let Some(location) = args.str_of("location") else { return Reply::error("no location") };
    if !is_absolute(location) {
        return Reply::error("new location path is not absolute");
    }
    let move_data = args.bool_of("move").unwrap_or(false);
    let resolved = ids::resolve(&ids::parse(args), backend);
    if resolved.ids.is_empty() {
        return Reply::success();
    }
    outcome(backend.set_location(&resolved.ids, location, move_data).await)
}

/// torrent-rename-path: exactly one torrent; the reply names it, the old path and the new
/// name, on success and on failure alike.
pub(crate) async fn rename_path<B: Backend>(backend: &B, args: &Args) -> Reply {
    #[derive(Serialize)]
    struct Renamed<'a> {
        id: u32,
        name: &'a str,
        path: &'a str,
    }
    let resolved = ids::resolve(&ids::parse(args), backend);
    let [id] = resolved.ids[..] else { return Reply::error("torrent-rename-path requires 1 torrent") };
    let path = args.str_of("path").unwrap_or("");
    let name = args.str_of("name").unwrap_or("");
    let reply = Renamed { id, name, path };
    // Transmission's checks: a new name that is one path component, and an old path.
    let valid = !path.is_empty() && !name.is_empty() && !name.contains('/') && name != "." && name != "..";
    let result = if valid {
        backend.rename_path(id, path, name).await
    } else {
        Err(BackendError::Other("Invalid argument".into()))
    };
    match result {
        Ok(()) => Reply::with(&reply),
        Err(e) => Reply::error_with(e.to_string(), &reply),
    }
}

/// Whether a `filename` is a URL the daemon should fetch.
fn is_fetchable_url(s: &str) -> bool {
    ["http://", "https://", "ftp://", "sftp://"]
        .iter()
        .any(|p| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)))
}

/// The source of a torrent-add: `filename` (resolved as Transmission does: a URL scheme, then
/// an existing local file, then a magnet link or bare hash) when not empty, else `metainfo`.
fn add_source(args: &Args) -> Result<AddSource, BackendError> {
    if let Some(filename) = args.str_of("filename").filter(|f| !f.is_empty()) {
        if is_fetchable_url(filename) {
            return Ok(AddSource::Url { url: filename.to_owned(), cookies: args.string_of("cookies") });
        }
        if std::path::Path::new(filename).is_file() {
            return Ok(AddSource::Path(filename.to_owned()));
        }
        let info_hash = Magnet::parse(filename)
            .map(|m| m.info_hash)
            .or_else(|| InfoHash::from_hex(filename))
            .or_else(|| InfoHash::from_base32(filename))
            .ok_or(BackendError::UnrecognizedInfo)?;
        return Ok(AddSource::Magnet { link: filename.to_owned(), info_hash });
    }
    let text = args.str_of("metainfo").unwrap_or("");
    let compact: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = data_encoding::BASE64
        .decode(&compact)
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(&compact))
        .map_err(|_| BackendError::UnrecognizedInfo)?;
    if bytes.is_empty() {
        return Err(BackendError::UnrecognizedInfo);
    }
    // Transmission also takes a magnet link sent as base64 metainfo.
    if bytes.starts_with(b"magnet:")
        && let Some(m) = std::str::from_utf8(&bytes).ok().and_then(Magnet::parse)
    {
        return Ok(AddSource::Magnet { link: String::from_utf8_lossy(&bytes).into_owned(), info_hash: m.info_hash });
    }
    Ok(AddSource::Metainfo(bytes))
}

/// torrent-add: replies `torrent-added` or `torrent-duplicate` (both a success) with the
/// torrent's id, hash and name.
pub(crate) async fn add<B: Backend>(backend: &B, args: &Args) -> Reply {
    #[derive(Serialize)]
    struct Named<'a> {
        #[serde(rename = "hashString")]
        hash_string: String,
        id: u32,
        name: &'a str,
    }
    fn named(t: &TorrentRef) -> Named<'_> {
        Named { hash_string: t.info_hash.to_hex(), id: t.id, name: &t.name }
    }
    #[derive(Serialize)]
    enum Added<'a> {
        #[serde(rename = "torrent-added")]
        Added(Named<'a>),
        #[serde(rename = "torrent-duplicate")]
        Duplicate(Named<'a>),
    }
    let filename = args.str_of("filename").unwrap_or("");
    let metainfo = args.str_of("metainfo").unwrap_or("");
    if filename.is_empty() && metainfo.is_empty() {
        return Reply::error("no filename or metainfo specified");
    }
    let download_dir = args.string_of("download-dir");
    if download_dir.as_deref().is_some_and(|d| !is_absolute(d)) {
        return Reply::error("download directory path is not absolute");
    }
    let labels = match args.str_list_of("labels").map(labels).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(message) => return Reply::error(message),
    };
    let source = match add_source(args) {
        Ok(s) => s,
        Err(e) => return Reply::error(e.to_string()),
    };
    let list = |key: &str| args.int_list_of::<u32>(key).unwrap_or_default();
    let request = AddRequest {
        source,
        download_dir,
        paused: args.bool_of("paused"),
        peer_limit: args.int_of("peer-limit"),
        bandwidth_priority: args.get("bandwidthPriority").and_then(coerce::int).and_then(Priority::from_wire),
        files_wanted: list("files-wanted"),
        files_unwanted: list("files-unwanted"),
        priority_high: list("priority-high"),
        priority_low: list("priority-low"),
        priority_normal: list("priority-normal"),
        labels,
        stop_at_metadata: args.bool_of("bitswarm-stop-at-metadata").unwrap_or(false),
    };
    match backend.add(request).await {
        Ok(AddOutcome::Added(t)) => Reply::with(&Added::Added(named(&t))),
        Ok(AddOutcome::Duplicate(t)) => Reply::with(&Added::Duplicate(named(&t))),
        Err(e) => Reply::error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules() {
        assert_eq!(labels(vec![" a ".into(), "b".into(), "a".into()]), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(labels(vec![" ".into()]), Err("labels cannot be empty"));
        assert_eq!(labels(vec!["a,b".into()]), Err("labels cannot contain comma (,) character"));
    }

    #[test]
    fn tracker_lists() {
        let t = tracker_list("http://a/announce\nudp://b:80\n\n\nhttps://c/x\nhttp://a/announce\n").unwrap();
        assert_eq!(
            t,
            vec![vec!["http://a/announce".to_owned(), "udp://b:80".to_owned()], vec!["https://c/x".to_owned()]]
        );
        assert_eq!(tracker_list(""), Some(vec![]));
        assert_eq!(tracker_list("not a url"), None);
        assert_eq!(tracker_list("ftp://a/x"), None);
        assert_eq!(tracker_list("http:///x"), None);
    }
}
