//! The methods end to end below HTTP: a request body in, the reply JSON out, against the fake
//! backend.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::testing::{Fake, HASH1, HASH2, HASH3};
use super::{Context, call};
use crate::backend::{AddSource, FileSelection};
use crate::envelope;
use crate::hash::InfoHash;
use crate::view::{Encryption, FileView, LimitMode, Priority, TorrentView};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn rpc_raw(fake: &Fake, body: &[u8]) -> Value {
    let req = envelope::parse(body).unwrap();
    let tag = req.tag;
    let ctx = Context { session_id: "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL", anti_brute_force: false };
    let reply = rt().block_on(call(fake, ctx, req));
    serde_json::from_slice(&reply.to_json(tag)).unwrap()
}

fn rpc(fake: &Fake, body: Value) -> Value {
    rpc_raw(fake, body.to_string().as_bytes())
}

fn ok(fake: &Fake, method: &str, args: Value) -> Value {
    let r = rpc(fake, json!({"method": method, "arguments": args}));
    assert_eq!(r["result"], "success", "{method} {r}");
    r["arguments"].clone()
}

fn err(fake: &Fake, method: &str, args: Value) -> String {
    let r = rpc(fake, json!({"method": method, "arguments": args}));
    assert!(r["arguments"].is_object(), "arguments are always there: {r}");
    r["result"].as_str().unwrap().to_owned()
}

fn names(v: &Value) -> Vec<&str> {
    v["torrents"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect()
}

#[test]
fn envelope_errors_and_tags() {
    let f = Fake::new();
    assert_eq!(rpc_raw(&f, b"not json"), json!({"arguments": {}, "result": "no method name"}));
    assert_eq!(rpc_raw(&f, b""), json!({"arguments": {}, "result": "no method name"}));
    assert_eq!(
        rpc(&f, json!({"method": "bogus", "tag": 7})),
        json!({"arguments": {}, "result": "method name not recognized", "tag": 7})
    );
    assert_eq!(rpc(&f, json!({"method": "torrent-stop", "tag": "abc"})), json!({"arguments": {}, "result": "success"}));
    // Sonarr's session-get has no arguments; transmission-remote's -st neither.
    let r = rpc(&f, json!({"method": "session-stats", "tag": 1}));
    assert_eq!(r["tag"], 1);
    assert_eq!(r["arguments"]["pausedTorrentCount"], 1);
}

#[test]
fn ids_in_every_form() {
    let f = Fake::new();
    let get = |ids: Option<Value>| {
        let mut args = json!({"fields": ["name"]});
        if let Some(ids) = ids {
            args["ids"] = ids;
        }
        ok(&f, "torrent-get", args)
    };
    assert_eq!(names(&get(None)), ["sample.bin", "fake-magnet", "multi"], "all, by id");
    assert_eq!(names(&get(Some(json!(null)))), ["sample.bin", "fake-magnet", "multi"]);
    assert_eq!(names(&get(Some(json!(3)))), ["multi"]);
    assert_eq!(names(&get(Some(json!(HASH3.to_uppercase())))), ["multi"]);
    let b32 = data_encoding::BASE32_NOPAD.encode(&InfoHash::from_hex(HASH2).unwrap().0);
    assert_eq!(names(&get(Some(json!([3, b32, HASH1, 3, 42, "nothing"])))), ["multi", "fake-magnet", "sample.bin"]);
    assert_eq!(names(&get(Some(json!(format!("magnet:?xt=urn:btih:{HASH1}&dn=x"))))), ["sample.bin"]);
    assert_eq!(names(&get(Some(json!([])))), Vec::<&str>::new());
    assert_eq!(names(&get(Some(json!("2")))), Vec::<&str>::new());
    let recent = get(Some(json!("recently-active")));
    assert_eq!(names(&recent), ["sample.bin", "fake-magnet"]);
    assert_eq!(recent["removed"], json!([9]));
    assert!(get(None).get("removed").is_none());
    // `id` is honoured too.
    let a = ok(&f, "torrent-get", json!({"fields": ["id"], "id": 2}));
    assert_eq!(a["torrents"], json!([{"id": 2}]));
}

/// bitswarm's `bitswarm-since`: a marker this run gave selects what changed since (the
/// backend's `changed_since`); 0, or one from another run, selects every torrent; the reply
/// carries the next marker; without it, nothing differs from Transmission's reply.
#[test]
fn torrent_get_since_a_marker() {
    let f = Fake::new();
    let get = |args: Value| ok(&f, "torrent-get", args);
    let full = get(json!({"fields": ["name"], "bitswarm-since": 0}));
    assert_eq!(names(&full), ["sample.bin", "fake-magnet", "multi"]);
    assert!(full.get("removed").is_none());
    let marker = full["bitswarm-now"].as_u64().unwrap();
    let recent = get(json!({"fields": ["name"], "ids": "recently-active", "bitswarm-since": marker}));
    assert_eq!(names(&recent), ["sample.bin", "fake-magnet"], "the backend's changed_since");
    assert_eq!(recent["removed"], json!([9]));
    assert!(recent["bitswarm-now"].as_u64().unwrap() >= marker);
    for stale in [json!(0), json!(marker - 3_600_000_000), json!(marker + 3_600_000), json!(-5)] {
        let all = get(json!({"fields": ["name"], "ids": "recently-active", "bitswarm-since": stale}));
        assert_eq!(names(&all), ["sample.bin", "fake-magnet", "multi"], "{stale}");
        assert_eq!(all["removed"], json!([9]));
    }
    // Nothing selected: `[]`, also in the table format (without it: the field names alone).
    let none = get(json!({"fields": ["name"], "ids": [], "format": "table", "bitswarm-since": marker}));
    assert_eq!(none["torrents"], json!([]));
    let plain = get(json!({"fields": ["name"], "ids": "recently-active"}));
    assert!(plain.get("bitswarm-now").is_none());
    assert_eq!(names(&plain), ["sample.bin", "fake-magnet"]);
}

/// `removed` against torrents removed while a torrent-get reads (between any two of its reads
/// of the backend), in every form the web page and Transmission's clients ask it: a torrent is
/// never both in the answer's torrents and in its `removed`, a removed one is never among the
/// torrents, and `removed` names only removed ones. And with a backend that names a present
/// torrent as removed (an id used again), the answer still does not list it in both.
#[test]
fn removed_never_names_a_torrent_of_the_answer() {
    let forms = [
        json!({"fields": ["id", "name"], "ids": "recently-active"}),
        json!({"fields": ["id", "name"], "ids": "recently-active", "format": "table"}),
        json!({"fields": ["id", "name"], "ids": "recently-active", "bitswarm-since": "MARKER"}),
        json!({"fields": ["id", "name"], "ids": "recently-active", "bitswarm-since": "MARKER",
            "bitswarm-moving": ["rateDownload"], "format": "table"}),
        json!({"fields": ["id", "name"], "ids": "recently-active", "bitswarm-since": 0}),
    ];
    // The ids of a `torrents` (or `bitswarm-moving`), in either format.
    let ids = |v: &Value| -> Vec<u64> {
        let rows = v.as_array().map_or(&[][..], |a| a.as_slice());
        match rows.first() {
            Some(Value::Array(_)) => rows[1..].iter().map(|r| r[0].as_u64().unwrap()).collect(),
            _ => rows.iter().map(|t| t["id"].as_u64().unwrap()).collect(),
        }
    };
    for at in ["recently_active", "recently_removed", "changes_since", "torrent_ids", "torrents"] {
        for gone in [1, 2] {
            for form in &forms {
                let f = Fake::new();
                let marker =
                    ok(&f, "torrent-get", json!({"fields": ["id"], "bitswarm-since": 0}))["bitswarm-now"].clone();
                let mut args = form.clone();
                if args["bitswarm-since"] == "MARKER" {
                    args["bitswarm-since"] = marker;
                }
                *f.race.lock().unwrap() = Some((at, gone));
                let a = ok(&f, "torrent-get", args);
                let shown: Vec<u64> = ids(&a["torrents"]).into_iter().chain(ids(&a["bitswarm-moving"])).collect();
                let removed: Vec<u64> = a["removed"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
                let what = format!("{gone} removed at {at}, {form}: {a}");
                assert!(shown.iter().all(|id| !removed.contains(id)), "listed and removed: {what}");
                // (A method this form does not call removes nothing.)
                let fired = f.race.lock().unwrap().is_none();
                assert!(!fired || !shown.contains(&u64::from(gone)), "a removed torrent listed: {what}");
                assert!(removed.iter().all(|id| [9, u64::from(gone)].contains(id)), "never removed: {what}");
            }
        }
    }
    // A backend whose `removed` names present torrents (1 listed, 3 not asked for).
    let f = Fake::new();
    f.removed.lock().unwrap().extend([1, 3]);
    let a = ok(&f, "torrent-get", json!({"fields": ["id"], "ids": "recently-active"}));
    assert_eq!(ids(&a["torrents"]), [1, 2]);
    assert_eq!(a["removed"], json!([3, 9]), "the listed one left out of removed");
}

/// bitswarm's `bitswarm-moving`: with `bitswarm-since`, the torrents whose figures alone moved
/// (the backend's `changes_since`) come apart, with those fields alone (and their id); without
/// it, with the others.
#[test]
fn torrent_get_moving_apart() {
    let f = Fake::new();
    let get = |args: Value| ok(&f, "torrent-get", args);
    let marker = get(json!({"fields": ["id"], "bitswarm-since": 0}))["bitswarm-now"].as_u64().unwrap();
    let args = json!({"fields": ["id", "name", "totalSize"], "ids": "recently-active", "bitswarm-since": marker,
        "bitswarm-moving": ["rateDownload", "percentDone"], "format": "table"});
    let a = get(args);
    assert_eq!(a["torrents"][0], json!(["id", "name", "totalSize"]));
    assert_eq!(a["torrents"].as_array().unwrap().len(), 2, "{a}");
    assert_eq!(a["torrents"][1][0], 1);
    assert_eq!(a["bitswarm-moving"][0], json!(["id", "rateDownload", "percentDone"]));
    assert_eq!(a["bitswarm-moving"].as_array().unwrap().len(), 2, "{a}");
    assert_eq!(a["bitswarm-moving"][1][0], 2);
    let together =
        get(json!({"fields": ["id"], "ids": "recently-active", "bitswarm-since": marker, "format": "table"}));
    assert_eq!(together["torrents"], json!([["id"], [1], [2]]));
    assert!(together.get("bitswarm-moving").is_none());
    // A marker not this run's: every torrent, all fields, nothing apart.
    let all = get(json!({"fields": ["id"], "ids": "recently-active", "bitswarm-since": 0,
        "bitswarm-moving": ["rateDownload"]}));
    assert_eq!(all["torrents"].as_array().unwrap().len(), 3, "{all}");
    assert!(all.get("bitswarm-moving").is_none(), "{all}");
}

#[test]
fn torrent_get_fields_formats_and_wants() {
    let f = Fake::new();
    assert_eq!(
        rpc(&f, json!({"method": "torrent-get", "arguments": {}})),
        json!({"arguments": {"torrents": []}, "result": "no fields specified"})
    );
    let a = ok(&f, "torrent-get", json!({"ids": 1, "fields": ["fileCount", "id", "hashString"]}));
    assert_eq!(a, json!({"torrents": [{"hashString": HASH1, "id": 1}]}));
    assert_eq!(*f.last_wants.lock().unwrap(), Some(crate::Wants::NONE));
    let a = ok(&f, "torrent-get", json!({"ids": [1, 2], "fields": ["id", "name", "bogus"], "format": "table"}));
    assert_eq!(a, json!({"torrents": [["id", "name"], [1, "sample.bin"], [2, "fake-magnet"]]}));
    let a = ok(&f, "torrent-get", json!({"ids": [], "fields": ["id"], "format": "table"}));
    assert_eq!(a, json!({"torrents": [["id"]]}));
    let a = ok(&f, "torrent-get", json!({"ids": 1, "fields": []}));
    assert_eq!(a, json!({"torrents": [{}]}));
    f.torrents.lock().unwrap()[0].files =
        Some(vec![FileView { name: "sample.bin".into(), length: 5, ..FileView::default() }]);
    let a = ok(&f, "torrent-get", json!({"ids": 1, "fields": ["files", "name", "priorities", "wanted"]}));
    assert_eq!(a["torrents"][0]["wanted"], json!([0]));
    let w = f.last_wants.lock().unwrap().unwrap();
    assert!(w.files && !w.peers && !w.trackers && !w.pieces);
}

/// A listing poll over 10,000 torrents asks for no heavy part and takes one pass.
#[test]
fn ten_thousand_torrents() {
    let f = Fake::new();
    {
        let mut all = f.torrents.lock().unwrap();
        let proto = all[0].clone();
        all.clear();
        for id in 1..=10_000u32 {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&id.to_be_bytes());
            all.push(TorrentView { id, info_hash: InfoHash(h), name: format!("t{id}"), ..proto.clone() });
        }
    }
    let t = std::time::Instant::now();
    let a = ok(&f, "torrent-get", json!({"fields": ["id", "name", "status", "percentDone", "rateDownload", "eta"]}));
    let elapsed = t.elapsed();
    assert_eq!(a["torrents"].as_array().unwrap().len(), 10_000);
    assert_eq!(a["torrents"][9_999]["name"], "t10000");
    assert_eq!(*f.last_wants.lock().unwrap(), Some(crate::Wants::NONE));
    assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    // By hash, in a list: one lookup table, not a scan per hash.
    let hashes: Vec<String> = (9_000..10_000u32)
        .map(|id| {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&id.to_be_bytes());
            InfoHash(h).to_hex()
        })
        .collect();
    let a = ok(&f, "torrent-get", json!({"ids": hashes, "fields": ["id"]}));
    assert_eq!(a["torrents"].as_array().unwrap().len(), 1_000);
}

#[test]
fn torrent_actions_name_resolved_ids() {
    let f = Fake::new();
    ok(&f, "torrent-start", json!({"ids": [HASH3, 1]}));
    ok(&f, "torrent-start-now", json!({"ids": 2}));
    ok(&f, "torrent-stop", json!({"ids": 1}));
    ok(&f, "torrent-verify", json!({}));
    ok(&f, "torrent-reannounce", json!({"ids": [77]}));
    ok(&f, "queue-move-top", json!({"ids": [HASH1]}));
    ok(&f, "queue-move-up", json!({"ids": 1}));
    ok(&f, "queue-move-down", json!({"ids": 1}));
    ok(&f, "queue-move-bottom", json!({"ids": 1}));
    ok(&f, "torrent-remove", json!({"ids": 2, "delete-local-data": true}));
    ok(&f, "torrent-remove", json!({"ids": [HASH1]}));
    assert_eq!(
        f.calls(),
        [
            "start [3, 1] false",
            "start [2] true",
            "stop [1]",
            "verify [1, 2, 3]",
            "queue_move [1] Top",
            "queue_move [1] Up",
            "queue_move [1] Down",
            "queue_move [1] Bottom",
            "remove [2] true",
            "remove [1] false"
        ]
    );
}

#[test]
fn torrent_add() {
    let f = Fake::new();
    assert_eq!(err(&f, "torrent-add", json!({})), "no filename or metainfo specified");
    assert_eq!(err(&f, "torrent-add", json!({"filename": "", "metainfo": ""})), "no filename or metainfo specified");
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=x", "ab".repeat(20));
    assert_eq!(
        err(&f, "torrent-add", json!({"filename": magnet, "download-dir": "rel/dir"})),
        "download directory path is not absolute"
    );
    assert_eq!(
        err(&f, "torrent-add", json!({"filename": magnet, "labels": ["a,b"]})),
        "labels cannot contain comma (,) character"
    );
    assert_eq!(err(&f, "torrent-add", json!({"filename": "magnet:?xt=urn:btih:zz"})), "unrecognized info");
    assert_eq!(err(&f, "torrent-add", json!({"filename": "/no/such/file.torrent"})), "unrecognized info");
    assert_eq!(err(&f, "torrent-add", json!({"metainfo": "!!!"})), "unrecognized info");
    assert_eq!(err(&f, "torrent-add", json!({"metainfo": "eHl6"})), "invalid or corrupt torrent file");
    assert_eq!(
        err(&f, "torrent-add", json!({"filename": "https://x/t.torrent"})),
        "Couldn't fetch torrent: Not Found (404)"
    );

    let a = ok(
        &f,
        "torrent-add",
        json!({"filename": magnet, "paused": true, "labels": [" tv "], "download-dir": "/d",
        "peer-limit": 20.0, "bandwidthPriority": 1, "files-unwanted": [1, "x"]}),
    );
    assert_eq!(a, json!({"torrent-added": {"hashString": "ab".repeat(20), "id": 4, "name": "m"}}));
    let req = f.last_add.lock().unwrap().clone().unwrap();
    assert_eq!(req.labels, ["tv"]);
    assert_eq!(req.paused, Some(true));
    assert_eq!(req.download_dir.as_deref(), Some("/d"));
    assert_eq!(req.peer_limit, Some(20));
    assert_eq!(req.bandwidth_priority, Some(Priority::High));
    assert_eq!(req.files_unwanted, [1]);
    // The same hash, in upper case and bare: a duplicate, still a success.
    let a = ok(&f, "torrent-add", json!({"filename": "AB".repeat(20)}));
    assert_eq!(a["torrent-duplicate"]["id"], 4);
    // metainfo with newlines in its base64 (some clients wrap it), and filename winning over it.
    let a = ok(&f, "torrent-add", json!({"metainfo": "ZDE6\nYWkxZWU="}));
    assert_eq!(a["torrent-added"]["id"], 7);
    assert_eq!(f.last_add.lock().unwrap().as_ref().unwrap().source, AddSource::Metainfo(b"d1:ai1ee".to_vec()));
    ok(&f, "torrent-add", json!({"filename": HASH2, "metainfo": "!!!"}));
    // A magnet link sent as metainfo, and a cookie-carrying URL.
    let m64 = data_encoding::BASE64.encode(format!("magnet:?xt=urn:btih:{HASH3}").as_bytes());
    assert_eq!(ok(&f, "torrent-add", json!({"metainfo": m64}))["torrent-duplicate"]["id"], 3);
    err(&f, "torrent-add", json!({"filename": "HTTP://x/y", "cookies": "a=b"}));
    let src = f.last_add.lock().unwrap().as_ref().unwrap().source.clone();
    assert_eq!(src, AddSource::Url { url: "HTTP://x/y".into(), cookies: Some("a=b".into()) });
    // A local file: its path goes to the backend.
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    assert_eq!(err(&f, "torrent-add", json!({"filename": path})), "Permission denied");
    assert_eq!(f.last_add.lock().unwrap().as_ref().unwrap().source, AddSource::Path(path.to_owned()));
}

#[test]
fn torrent_set() {
    let f = Fake::new();
    // transmission-remote -Bh -pr 20 -sr 1.5 -g 0 -G 1 -ph 1 -L a,b
    let body = br#"{"arguments":{"bandwidthPriority":1,"files-unwanted":[1],"files-wanted":[0],"ids":1,"labels":["a","b"],"peer-limit":20,"priority-high":[1],"seedRatioLimit":1.5000,"seedRatioMode":1},"method":"torrent-set"}"#;
    assert_eq!(rpc_raw(&f, body)["result"], "success");
    let s = f.last_set.lock().unwrap().take().unwrap();
    assert_eq!(s.bandwidth_priority, Some(Priority::High));
    assert_eq!(s.files_unwanted, Some(FileSelection::Indices(vec![1])));
    assert_eq!(s.priority_high, Some(FileSelection::Indices(vec![1])));
    assert_eq!(s.labels, Some(vec!["a".to_owned(), "b".to_owned()]));
    assert_eq!(s.peer_limit, Some(20));
    assert_eq!(s.seed_ratio_limit, Some(1.5));
    assert_eq!(s.seed_ratio_mode, Some(LimitMode::Single));
    assert_eq!(s.download_limit, None);
    // Sonarr by hash; out-of-range values ignored; an empty list means every file.
    ok(
        &f,
        "torrent-set",
        json!({"ids": [HASH1], "seedRatioLimit": 2, "seedIdleLimit": 30, "seedIdleMode": 7,
        "bandwidthPriority": 5, "files-wanted": [], "downloadLimit": -5, "uploadLimit": 50.9, "uploadLimited": "true"}),
    );
    let s = f.last_set.lock().unwrap().take().unwrap();
    assert_eq!((s.seed_ratio_limit, s.seed_idle_limit, s.seed_idle_mode), (Some(2.0), Some(30), None));
    assert_eq!((s.bandwidth_priority, s.files_wanted), (None, Some(FileSelection::All)));
    assert_eq!((s.download_limit, s.upload_limit, s.upload_limited), (None, Some(50), Some(true)));
    // Checked before anything is applied.
    assert_eq!(err(&f, "torrent-set", json!({"ids": 1, "labels": [""]})), "labels cannot be empty");
    assert_eq!(err(&f, "torrent-set", json!({"ids": 1, "trackerList": "nonsense"})), "Invalid tracker list");
    assert!(f.last_set.lock().unwrap().is_none());
    ok(
        &f,
        "torrent-set",
        json!({"ids": 1, "trackerList": "http://a/announce\n\nudp://b:1/announce\n",
        "trackerAdd": ["http://c/announce", "junk"], "trackerReplace": [0, "http://d/announce", "x", 1]}),
    );
    let s = f.last_set.lock().unwrap().take().unwrap();
    assert_eq!(s.tracker_list, Some(vec![vec!["http://a/announce".to_owned()], vec!["udp://b:1/announce".to_owned()]]));
    assert_eq!(s.tracker_add, Some(vec!["http://c/announce".to_owned()]));
    assert_eq!(s.tracker_replace, Some(vec![(0, "http://d/announce".to_owned())]));
    assert_eq!(err(&f, "torrent-set", json!({"ids": 1, "files-wanted": [0, -1]})), "file index out of range");
    assert_eq!(err(&f, "torrent-set", json!({"ids": 1, "trackerRemove": [4]})), "error setting announce list");
    // Nothing selected: nothing applied, success.
    f.calls();
    ok(&f, "torrent-set", json!({"ids": [], "peer-limit": 3}));
    assert!(f.calls().is_empty());
}

#[test]
fn set_location_and_rename() {
    let f = Fake::new();
    assert_eq!(err(&f, "torrent-set-location", json!({"ids": 1})), "no location");
    assert_eq!(
        err(&f, "torrent-set-location", json!({"ids": 1, "location": "x"})),
        "new location path is not absolute"
    );
    ok(&f, "torrent-set-location", json!({"ids": 1, "location": "/new", "move": true}));
    ok(&f, "torrent-set-location", json!({"ids": HASH2, "location": "/new"}));
    assert_eq!(f.calls(), ["set_location [1] /new true", "set_location [2] /new false"]);
    assert_eq!(
        err(&f, "torrent-rename-path", json!({"path": "a", "name": "b"})),
        "torrent-rename-path requires 1 torrent"
    );
    let r = rpc(&f, json!({"method": "torrent-rename-path", "arguments": {"ids": [3], "path": "multi", "name": "b"}}));
    assert_eq!(r, json!({"arguments": {"id": 3, "name": "b", "path": "multi"}, "result": "Operation not supported"}));
    assert_eq!(err(&f, "torrent-rename-path", json!({"ids": 3, "path": "multi", "name": "a/b"})), "Invalid argument");
}

#[test]
fn session_get_reports_every_key_with_its_type() {
    let f = Fake::new();
    f.session.lock().unwrap().download_dir = "/tmp".into();
    let a = ok(&f, "session-get", json!({}));
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys, super::session::SESSION_KEYS);
    assert_eq!(a["rpc-version"], 17);
    assert_eq!(a["rpc-version-minimum"], 14);
    assert_eq!(a["rpc-version-semver"], "5.3.0");
    assert_eq!(a["version"], format!("4.0.6 (bitswarm {})", env!("CARGO_PKG_VERSION")));
    assert_eq!(a["session-id"].as_str().unwrap().len(), 48);
    assert!(a["download-dir-free-space"].as_i64().unwrap() > 0);
    assert_eq!(a["seedRatioLimit"], json!(2));
    assert_eq!(a["encryption"], "preferred");
    assert_eq!(a["units"]["speed-bytes"], 1000);
    let limits = [
        "alt-speed-down",
        "alt-speed-time-begin",
        "alt-speed-time-day",
        "alt-speed-time-end",
        "alt-speed-up",
        "peer-limit-global",
        "speed-limit-down",
        "speed-limit-up",
        "peer-port",
        "cache-size-mb",
        "blocklist-size",
    ];
    for k in limits {
        assert!(a[k].is_u64(), "{k} is an integer");
    }
    let a = ok(&f, "session-get", json!({"fields": ["version", "rpc-version", "bogus"]}));
    assert_eq!(a.as_object().unwrap().len(), 2);
    // No arguments at all (Sonarr, transmission-remote -si): every key.
    let r = rpc(&f, json!({"method": "session-get", "tag": 0}));
    assert_eq!(r["arguments"].as_object().unwrap().len(), super::session::SESSION_KEYS.len());
}

#[test]
fn session_set_and_stats() {
    let f = Fake::new();
    // Flood's fractional kB/s, strings for bools, an int ratio, read-only keys ignored.
    ok(
        &f,
        "session-set",
        json!({"speed-limit-up": 97.65, "speed-limit-up-enabled": "true", "seedRatioLimit": 2,
        "encryption": "whatever", "peer-port": 70000, "version": "x", "download-dir": "/dl", "dht-enabled": 1}),
    );
    let s = f.last_session_set.lock().unwrap().take().unwrap();
    assert_eq!((s.speed_limit_up, s.speed_limit_up_enabled, s.seed_ratio_limit), (Some(97), Some(true), Some(2.0)));
    assert_eq!(
        (s.encryption, s.peer_port, s.download_dir.as_deref()),
        (Some(Encryption::Preferred), None, Some("/dl"))
    );
    assert_eq!(s.dht_enabled, Some(true));
    assert_eq!(err(&f, "session-set", json!({"download-dir": "dl"})), "download directory path is not absolute");
    assert_eq!(
        err(&f, "session-set", json!({"incomplete-dir": "x"})),
        "incomplete torrents directory path is not absolute"
    );
    let a = ok(&f, "session-stats", json!({}));
    assert_eq!(
        a,
        json!({"activeTorrentCount": 2, "torrentCount": 3, "pausedTorrentCount": 1, "downloadSpeed": 1000, "uploadSpeed": 0,
            "current-stats": {"uploadedBytes": 0, "downloadedBytes": 0, "filesAdded": 0, "sessionCount": 0, "secondsActive": 0},
            "cumulative-stats": {"uploadedBytes": 0, "downloadedBytes": 0, "filesAdded": 0, "sessionCount": 0, "secondsActive": 0}})
    );
    ok(&f, "session-close", json!({}));
    assert_eq!(f.calls(), ["close"]);
}

#[test]
fn free_space_port_test_and_the_rest() {
    let f = Fake::new();
    assert_eq!(err(&f, "free-space", json!({})), "directory path argument is missing");
    assert_eq!(err(&f, "free-space", json!({"path": "tmp"})), "directory path is not absolute");
    let a = ok(&f, "free-space", json!({"path": "/tmp"}));
    assert_eq!(a["path"], "/tmp");
    assert!(
        a["size-bytes"].as_i64().unwrap() > 0 && a["total_size"].as_i64().unwrap() >= a["size-bytes"].as_i64().unwrap()
    );
    let r = rpc(&f, json!({"method": "free-space", "arguments": {"path": "/no/such/dir"}}));
    assert_eq!(
        r,
        json!({"arguments": {"path": "/no/such/dir", "size-bytes": -1, "total_size": -1}, "result": "No such file or directory"})
    );
    let r = rpc(&f, json!({"method": "free-space", "arguments": {"path": "/tmp\u{0}x"}}));
    assert_eq!(r["result"], "Invalid argument");
    assert!(err(&f, "port-test", json!({})).starts_with("Couldn't test port: "));
    assert_eq!(ok(&f, "blocklist-update", json!({})), json!({"blocklist-size": 0}));
    assert_eq!(ok(&f, "group-get", json!({})), json!({"group": []}));
}

const METHODS: &[&str] = &[
    "session-get",
    "session-set",
    "session-stats",
    "torrent-get",
    "torrent-add",
    "torrent-start",
    "torrent-start-now",
    "torrent-stop",
    "torrent-verify",
    "torrent-reannounce",
    "torrent-remove",
    "torrent-set",
    "torrent-set-location",
    "torrent-rename-path",
    "queue-move-top",
    "queue-move-up",
    "queue-move-down",
    "queue-move-bottom",
    "free-space",
    "port-test",
    "blocklist-update",
    "group-get",
    "bogus",
];

const KEYS: &[&str] = &[
    "ids",
    "id",
    "fields",
    "format",
    "filename",
    "metainfo",
    "download-dir",
    "labels",
    "paused",
    "location",
    "move",
    "path",
    "name",
    "files-wanted",
    "priority-high",
    "trackerList",
    "trackerReplace",
    "seedRatioLimit",
    "peer-limit",
    "speed-limit-up",
    "encryption",
    "delete-local-data",
    "cookies",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![Just(HASH1.to_owned()), Just("recently-active".to_owned()), Just("/tmp".to_owned()), ".{0,12}"]
            .prop_map(Value::from),
        proptest::sample::select(KEYS).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(proptest::sample::select(KEYS).prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever the request, the reply is a well-formed envelope and nothing panics.
    #[test]
    fn any_request_gets_an_envelope(method in proptest::sample::select(METHODS), args in arb_json(), tag in arb_json()) {
        let f = Fake::new();
        let r = rpc(&f, json!({"method": method, "arguments": args, "tag": tag}));
        prop_assert!(r["arguments"].is_object());
        prop_assert!(r["result"].is_string());
        prop_assert_eq!(r.get("tag").is_some(), tag.is_i64() || tag.is_boolean());
    }

    /// Arbitrary bytes too.
    #[test]
    fn any_body_gets_an_envelope(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let f = Fake::new();
        let r = rpc_raw(&f, &body);
        prop_assert!(r["arguments"].is_object());
    }
}

#[test]
fn torrent_create_checks_its_arguments_and_reports_jobs() {
    let f = Fake::new();
    let a = ok(
        &f,
        "bitswarm-torrent-create",
        json!({"path": "/allowed/data", "trackers": "http://t/announce\nudp://u:1/announce\n\nhttps://x/announce",
               "piece-size": 32768, "private": true, "comment": " hi ", "source": ""}),
    );
    assert_eq!(a["job"]["job"], 1);
    assert_eq!(a["job"]["status"], "hashing");
    assert_eq!(a["job"]["name"], "data");
    let r = f.last_create.lock().unwrap().clone().unwrap();
    assert_eq!(r.trackers, vec![vec!["http://t/announce", "udp://u:1/announce"], vec!["https://x/announce"]]);
    assert_eq!((r.piece_size, r.private, r.comment.as_deref(), r.source), (Some(32768), true, Some("hi"), None));
    // Tiers as a list; piece size 0 or absent: chosen by the daemon.
    ok(
        &f,
        "bitswarm-torrent-create",
        json!({"path": "/allowed/x", "trackers": ["http://a/announce", ["udp://b:1", "udp://c:2"]], "piece-size": 0}),
    );
    let r = f.last_create.lock().unwrap().clone().unwrap();
    assert_eq!(r.trackers, vec![vec!["http://a/announce"], vec!["udp://b:1", "udp://c:2"]]);
    assert_eq!(r.piece_size, None);
    // Refused before the backend sees them.
    *f.last_create.lock().unwrap() = None;
    assert!(err(&f, "bitswarm-torrent-create", json!({})).starts_with("no path"));
    assert_eq!(err(&f, "bitswarm-torrent-create", json!({"path": "data"})), "data: the path is not absolute");
    let e = err(&f, "bitswarm-torrent-create", json!({"path": "/allowed/x", "trackers": "ftp://t/announce"}));
    assert!(e.contains("\"ftp://t/announce\" is not an announce URL"), "{e}");
    let e = err(&f, "bitswarm-torrent-create", json!({"path": "/allowed/x", "trackers": [["http://a/", "nope"]]}));
    assert!(e.contains("\"nope\""), "{e}");
    for size in [1000, 8192, 128 << 20, -1] {
        let e = err(&f, "bitswarm-torrent-create", json!({"path": "/allowed/x", "piece-size": size}));
        assert!(e.starts_with("piece-size: a power of two"), "{size}: {e}");
    }
    let e = err(&f, "bitswarm-torrent-create", json!({"path": "/allowed/x", "comment": "c".repeat(5000)}));
    assert!(e.starts_with("comment: longer than"), "{e}");
    assert!(f.last_create.lock().unwrap().is_none());
    // The backend's refusal is the result string.
    let e = err(&f, "bitswarm-torrent-create", json!({"path": "/etc"}));
    assert_eq!(e, "/etc: not in a folder torrents may be made from");

    let a = ok(&f, "bitswarm-torrent-create-status", json!({}));
    let jobs = a["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs[0]["status"], "hashing");
    assert_eq!(jobs[0]["percentDone"], json!(0.5));
    assert!(jobs[0].get("magnetLink").is_none());
    assert_eq!(jobs[1]["status"], "done");
    assert_eq!(jobs[1]["percentDone"], json!(1.0));
    assert_eq!(jobs[1]["id"], 4);
    assert_eq!(jobs[1]["hashString"], "04".repeat(20));
    assert!(jobs[1]["magnetLink"].as_str().unwrap().starts_with("magnet:?xt=urn:btih:0404"));
    assert_eq!(jobs[2]["status"], "error");
    assert_eq!(jobs[2]["errorString"], "/allowed/3: No such file or directory");
    let a = ok(&f, "bitswarm-torrent-create-status", json!({"job": 2}));
    assert_eq!(a["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(a["jobs"][0]["job"], 2);
}

#[test]
fn tracker_get_says_whether_one_runs() {
    let f = Fake::new();
    let a = ok(&f, "bitswarm-tracker-get", json!({}));
    assert_eq!(a["enabled"], false);
    assert_eq!(a["swarmList"], json!([]));
    *f.tracker.lock().unwrap() = true;
    let a = ok(&f, "bitswarm-tracker-get", json!({}));
    assert_eq!(a["enabled"], true);
    assert_eq!(a["announceUrls"], json!(["http://127.0.0.1:6969/announce"]));
    assert_eq!((a["swarms"].as_u64(), a["announces"].as_u64()), (Some(1), Some(9)));
    assert_eq!(
        a["swarmList"],
        json!([{"hashString": HASH1, "name": "sample.bin", "seeders": 1, "leechers": 2, "completed": 3, "idleSeconds": 0}])
    );
}

#[test]
fn watch_dir_is_ours_and_given_only_when_asked() {
    let f = Fake::new();
    f.session.lock().unwrap().watch_dir = "/w".into();
    let a = ok(&f, "session-get", json!({}));
    assert!(a.get("watch-dir").is_none());
    let a = ok(&f, "session-get", json!({"fields": ["watch-dir", "watch-dir-enabled"]}));
    assert_eq!(a, json!({"watch-dir": "/w", "watch-dir-enabled": false}));
    ok(&f, "session-set", json!({"watch-dir": "/x", "watch-dir-enabled": true, "alt-speed-enabled": true}));
    let s = f.last_session_set.lock().unwrap().clone().unwrap();
    assert_eq!(
        (s.watch_dir.as_deref(), s.watch_dir_enabled, s.alt_speed_enabled),
        (Some("/x"), Some(true), Some(true))
    );
    assert_eq!(err(&f, "session-set", json!({"watch-dir": "rel"})), "watch directory path is not absolute");
    assert_eq!(
        err(&f, "session-set", json!({"alt-speed-time-end": 1440})),
        "alt-speed-time-end 1440: minutes after midnight, 0 to 1439"
    );
    assert!(err(&f, "session-set", json!({"alt-speed-time-day": 128})).starts_with("alt-speed-time-day 128: "));
    ok(&f, "session-set", json!({"alt-speed-time-begin": 1439, "alt-speed-time-end": 0, "alt-speed-time-day": 65}));
}

#[test]
fn torrent_add_passes_stop_at_metadata() {
    let f = Fake::new();
    let link = format!("magnet:?xt=urn:btih:{}", "ab".repeat(20));
    ok(&f, "torrent-add", json!({"filename": link, "bitswarm-stop-at-metadata": true}));
    assert!(f.last_add.lock().unwrap().as_ref().unwrap().stop_at_metadata);
    ok(&f, "torrent-add", json!({"filename": link}));
    assert!(!f.last_add.lock().unwrap().as_ref().unwrap().stop_at_metadata);
}
