//! session-get, session-set, session-stats, session-close (§4.12–4.15, §6, §7).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::backend::{Backend, SessionSet};
use crate::coerce::{Args, ArgsExt};
use crate::envelope::Reply;
use crate::fields::Double;
use crate::methods::system::capacity_async;
use crate::methods::{Context, is_absolute};
use crate::view::{Encryption, SessionView, StatsTotals};
use crate::{RPC_VERSION, RPC_VERSION_MINIMUM, RPC_VERSION_SEMVER};

/// Every session-get key of Transmission 4.0.6, in byte order.
pub(crate) const SESSION_KEYS: &[&str] = &[
    "alt-speed-down",
    "alt-speed-enabled",
    "alt-speed-time-begin",
    "alt-speed-time-day",
    "alt-speed-time-enabled",
    "alt-speed-time-end",
    "alt-speed-up",
    "anti-brute-force-enabled",
    "anti-brute-force-threshold",
    "blocklist-enabled",
    "blocklist-size",
    "blocklist-url",
    "cache-size-mb",
    "config-dir",
    "default-trackers",
    "dht-enabled",
    "download-dir",
    "download-dir-free-space",
    "download-queue-enabled",
    "download-queue-size",
    "encryption",
    "idle-seeding-limit",
    "idle-seeding-limit-enabled",
    "incomplete-dir",
    "incomplete-dir-enabled",
    "lpd-enabled",
    "peer-limit-global",
    "peer-limit-per-torrent",
    "peer-port",
    "peer-port-random-on-start",
    "pex-enabled",
    "port-forwarding-enabled",
    "queue-stalled-enabled",
    "queue-stalled-minutes",
    "rename-partial-files",
    "rpc-version",
    "rpc-version-minimum",
    "rpc-version-semver",
    "script-torrent-added-enabled",
    "script-torrent-added-filename",
    "script-torrent-done-enabled",
    "script-torrent-done-filename",
    "script-torrent-done-seeding-enabled",
    "script-torrent-done-seeding-filename",
    "seed-queue-enabled",
    "seed-queue-size",
    "seedRatioLimit",
    "seedRatioLimited",
    "session-id",
    "speed-limit-down",
    "speed-limit-down-enabled",
    "speed-limit-up",
    "speed-limit-up-enabled",
    "start-added-torrents",
    "tcp-enabled",
    "trash-original-torrent-files",
    "units",
    "utp-enabled",
    "version",
];

/// `version` as Sonarr parses it: the first version outside parentheses must be ≥ 4.0 (labels),
/// so ours goes inside them.
pub(crate) fn version() -> String {
    format!("4.0.6 (bitswarm {})", env!("CARGO_PKG_VERSION"))
}

/// Reported as `anti-brute-force-threshold`: about how many failures in a row from one client
/// bring its wait past the 30 s after which attempts are refused (250 ms doubling to 8 s).
const BRUTE_FORCE_THRESHOLD: u32 = 10;

/// One session-get value; `None` for an unknown key.
fn value(key: &str, s: &SessionView, ctx: Context<'_>, free_space: i64) -> Option<Value> {
    let double = |f: f64| serde_json::to_value(Double(f)).unwrap_or(Value::from(0));
    Some(match key {
        "alt-speed-down" => s.alt_speed_down.into(),
        "alt-speed-enabled" => s.alt_speed_enabled.into(),
        "alt-speed-time-begin" => s.alt_speed_time_begin.into(),
        "alt-speed-time-day" => s.alt_speed_time_day.into(),
        "alt-speed-time-enabled" => s.alt_speed_time_enabled.into(),
        "alt-speed-time-end" => s.alt_speed_time_end.into(),
        "alt-speed-up" => s.alt_speed_up.into(),
        "anti-brute-force-enabled" => ctx.anti_brute_force.into(),
        "anti-brute-force-threshold" => BRUTE_FORCE_THRESHOLD.into(),
        "blocklist-enabled" => s.blocklist_enabled.into(),
        "blocklist-size" => s.blocklist_size.into(),
        "blocklist-url" => s.blocklist_url.as_str().into(),
        "cache-size-mb" => s.cache_size_mb.into(),
        "config-dir" => s.config_dir.as_str().into(),
        "default-trackers" => s.default_trackers.as_str().into(),
        "dht-enabled" => s.dht_enabled.into(),
        "download-dir" => s.download_dir.as_str().into(),
        "download-dir-free-space" => free_space.into(),
        "download-queue-enabled" => s.download_queue_enabled.into(),
        "download-queue-size" => s.download_queue_size.into(),
        "encryption" => s.encryption.as_str().into(),
        "idle-seeding-limit" => s.idle_seeding_limit.into(),
        "idle-seeding-limit-enabled" => s.idle_seeding_limit_enabled.into(),
        "incomplete-dir" => s.incomplete_dir.as_str().into(),
        "incomplete-dir-enabled" => s.incomplete_dir_enabled.into(),
        "lpd-enabled" => s.lpd_enabled.into(),
        "peer-limit-global" => s.peer_limit_global.into(),
        "peer-limit-per-torrent" => s.peer_limit_per_torrent.into(),
        "peer-port" => s.peer_port.into(),
        "peer-port-random-on-start" => s.peer_port_random_on_start.into(),
        "pex-enabled" => s.pex_enabled.into(),
        "port-forwarding-enabled" => s.port_forwarding_enabled.into(),
        "queue-stalled-enabled" => s.queue_stalled_enabled.into(),
        "queue-stalled-minutes" => s.queue_stalled_minutes.into(),
        "rename-partial-files" => s.rename_partial_files.into(),
        "rpc-version" => RPC_VERSION.into(),
        "rpc-version-minimum" => RPC_VERSION_MINIMUM.into(),
        "rpc-version-semver" => RPC_VERSION_SEMVER.into(),
        "script-torrent-added-enabled" => s.script_torrent_added_enabled.into(),
        "script-torrent-added-filename" => s.script_torrent_added_filename.as_str().into(),
        "script-torrent-done-enabled" => s.script_torrent_done_enabled.into(),
        "script-torrent-done-filename" => s.script_torrent_done_filename.as_str().into(),
        "script-torrent-done-seeding-enabled" => s.script_torrent_done_seeding_enabled.into(),
        "script-torrent-done-seeding-filename" => s.script_torrent_done_seeding_filename.as_str().into(),
        "seed-queue-enabled" => s.seed_queue_enabled.into(),
        "seed-queue-size" => s.seed_queue_size.into(),
        "seedRatioLimit" => double(s.seed_ratio_limit),
        "seedRatioLimited" => s.seed_ratio_limited.into(),
        "session-id" => ctx.session_id.into(),
        "speed-limit-down" => s.speed_limit_down.into(),
        "speed-limit-down-enabled" => s.speed_limit_down_enabled.into(),
        "speed-limit-up" => s.speed_limit_up.into(),
        "speed-limit-up-enabled" => s.speed_limit_up_enabled.into(),
        "start-added-torrents" => s.start_added_torrents.into(),
        "tcp-enabled" => s.tcp_enabled.into(),
        "trash-original-torrent-files" => s.trash_original_torrent_files.into(),
        "units" => json!({
            "memory-bytes": 1024,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"],
            "size-bytes": 1000,
            "size-units": ["kB", "MB", "GB", "TB"],
            "speed-bytes": 1000,
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"],
        }),
        "utp-enabled" => s.utp_enabled.into(),
        "version" => version().into(),
        // bitswarm's own, given only when named in `fields` (not a Transmission 4.0 key).
        "watch-dir" => s.watch_dir.as_str().into(),
        "watch-dir-enabled" => s.watch_dir_enabled.into(),
        _ => return None,
    })
}

/// session-get: every key, or those named in `fields` (unknown names ignored).
pub(crate) async fn get<B: Backend>(backend: &B, ctx: Context<'_>, args: &Args) -> Reply {
    let requested: Vec<&str> = match args.get("fields").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_str).collect(),
        None => SESSION_KEYS.to_vec(),
    };
    let session = backend.session();
    // statvfs only when asked: it is the one key that costs a system call.
    let free_space = if requested.contains(&"download-dir-free-space") {
        capacity_async(session.download_dir.clone())
            .await
            .map_or(-1, |(free, _)| i64::try_from(free).unwrap_or(i64::MAX))
    } else {
        -1
    };
    let mut out = Map::new();
    for key in requested {
        if let Some(v) = value(key, &session, ctx, free_space) {
            out.insert(key.to_owned(), v);
        }
    }
    Reply::with(&out)
}

/// Reads session-set's writable keys. Read-only keys (`version`, `units`, `session-id`…)
/// and unknown ones are ignored.
fn parse_set(a: &Args) -> SessionSet {
    SessionSet {
        alt_speed_down: a.int_of("alt-speed-down"),
        alt_speed_enabled: a.bool_of("alt-speed-enabled"),
        alt_speed_time_begin: a.int_of("alt-speed-time-begin"),
        alt_speed_time_day: a.int_of("alt-speed-time-day"),
        alt_speed_time_enabled: a.bool_of("alt-speed-time-enabled"),
        alt_speed_time_end: a.int_of("alt-speed-time-end"),
        alt_speed_up: a.int_of("alt-speed-up"),
        blocklist_enabled: a.bool_of("blocklist-enabled"),
        blocklist_url: a.string_of("blocklist-url"),
        cache_size_mb: a.int_of("cache-size-mb"),
        default_trackers: a.string_of("default-trackers"),
        dht_enabled: a.bool_of("dht-enabled"),
        download_dir: a.string_of("download-dir"),
        download_queue_enabled: a.bool_of("download-queue-enabled"),
        download_queue_size: a.int_of("download-queue-size"),
        encryption: a.str_of("encryption").map(Encryption::from_wire),
        idle_seeding_limit: a.int_of("idle-seeding-limit"),
        idle_seeding_limit_enabled: a.bool_of("idle-seeding-limit-enabled"),
        incomplete_dir: a.string_of("incomplete-dir"),
        incomplete_dir_enabled: a.bool_of("incomplete-dir-enabled"),
        lpd_enabled: a.bool_of("lpd-enabled"),
        peer_limit_global: a.int_of("peer-limit-global"),
        peer_limit_per_torrent: a.int_of("peer-limit-per-torrent"),
        peer_port: a.int_of("peer-port"),
        peer_port_random_on_start: a.bool_of("peer-port-random-on-start"),
        pex_enabled: a.bool_of("pex-enabled"),
        port_forwarding_enabled: a.bool_of("port-forwarding-enabled"),
        queue_stalled_enabled: a.bool_of("queue-stalled-enabled"),
        queue_stalled_minutes: a.int_of("queue-stalled-minutes"),
        rename_partial_files: a.bool_of("rename-partial-files"),
        script_torrent_added_enabled: a.bool_of("script-torrent-added-enabled"),
        script_torrent_added_filename: a.string_of("script-torrent-added-filename"),
        script_torrent_done_enabled: a.bool_of("script-torrent-done-enabled"),
        script_torrent_done_filename: a.string_of("script-torrent-done-filename"),
        script_torrent_done_seeding_enabled: a.bool_of("script-torrent-done-seeding-enabled"),
        script_torrent_done_seeding_filename: a.string_of("script-torrent-done-seeding-filename"),
        seed_queue_enabled: a.bool_of("seed-queue-enabled"),
        seed_queue_size: a.int_of("seed-queue-size"),
        seed_ratio_limit: a.double_of("seedRatioLimit").filter(|r| *r >= 0.0),
        seed_ratio_limited: a.bool_of("seedRatioLimited"),
        speed_limit_down: a.int_of("speed-limit-down"),
        speed_limit_down_enabled: a.bool_of("speed-limit-down-enabled"),
        speed_limit_up: a.int_of("speed-limit-up"),
        speed_limit_up_enabled: a.bool_of("speed-limit-up-enabled"),
        start_added_torrents: a.bool_of("start-added-torrents"),
        tcp_enabled: a.bool_of("tcp-enabled"),
        trash_original_torrent_files: a.bool_of("trash-original-torrent-files"),
        utp_enabled: a.bool_of("utp-enabled"),
        watch_dir: a.string_of("watch-dir"),
        watch_dir_enabled: a.bool_of("watch-dir-enabled"),
    }
}

/// session-set: the directories must be absolute (checked before anything is applied).
pub(crate) async fn set<B: Backend>(backend: &B, args: &Args) -> Reply {
    let set = parse_set(args);
    if set.download_dir.as_deref().is_some_and(|d| !is_absolute(d)) {
        return Reply::error("download directory path is not absolute");
    }
    if set.incomplete_dir.as_deref().is_some_and(|d| !is_absolute(d)) {
        return Reply::error("incomplete torrents directory path is not absolute");
    }
    if set.watch_dir.as_deref().is_some_and(|d| !d.is_empty() && !is_absolute(d)) {
        return Reply::error("watch directory path is not absolute");
    }
    for (key, v) in [("alt-speed-time-begin", set.alt_speed_time_begin), ("alt-speed-time-end", set.alt_speed_time_end)]
    {
        if let Some(v) = v.filter(|m| *m >= 24 * 60) {
            return Reply::error(format!("{key} {v}: minutes after midnight, 0 to 1439"));
        }
    }
    if let Some(d) = set.alt_speed_time_day.filter(|d| *d > 127) {
        return Reply::error(format!("alt-speed-time-day {d}: days as bits, Sunday 1 to Saturday 64 (all: 127)"));
    }
    match backend.session_set(&set).await {
        Ok(()) => Reply::success(),
        Err(e) => Reply::error(e.to_string()),
    }
}

#[derive(Serialize)]
struct StatsJson {
    #[serde(rename = "downloadedBytes")]
    downloaded_bytes: u64,
    #[serde(rename = "filesAdded")]
    files_added: u64,
    #[serde(rename = "secondsActive")]
    seconds_active: u64,
    #[serde(rename = "sessionCount")]
    session_count: u64,
    #[serde(rename = "uploadedBytes")]
    uploaded_bytes: u64,
}

impl From<StatsTotals> for StatsJson {
    fn from(t: StatsTotals) -> StatsJson {
        StatsJson {
            downloaded_bytes: t.downloaded_bytes,
            files_added: t.files_added,
            seconds_active: t.seconds_active,
            session_count: t.session_count,
            uploaded_bytes: t.uploaded_bytes,
        }
    }
}

/// session-stats. Speeds are written as integers (4.0 keeps them as whole reals).
pub(crate) fn stats<B: Backend>(backend: &B) -> Reply {
    #[derive(Serialize)]
    struct Stats {
        #[serde(rename = "activeTorrentCount")]
        active: u32,
        #[serde(rename = "cumulative-stats")]
        cumulative: StatsJson,
        #[serde(rename = "current-stats")]
        current: StatsJson,
        #[serde(rename = "downloadSpeed")]
        download_speed: u64,
        #[serde(rename = "pausedTorrentCount")]
        paused: u32,
        #[serde(rename = "torrentCount")]
        count: u32,
        #[serde(rename = "uploadSpeed")]
        upload_speed: u64,
    }
    let s = backend.session_stats();
    let active = s.active_torrent_count.min(s.torrent_count);
    Reply::with(&Stats {
        active,
        cumulative: s.cumulative.into(),
        current: s.current.into(),
        download_speed: s.download_speed,
        paused: s.torrent_count - active,
        count: s.torrent_count,
        upload_speed: s.upload_speed,
    })
}

/// session-close: tells the backend to shut down; the reply is still written (the backend
/// must let in-flight replies finish).
pub(crate) fn close<B: Backend>(backend: &B) -> Reply {
    backend.session_close();
    Reply::success()
}
