//! bitswarm's own methods, named in Transmission's style: making a torrent on the daemon's
//! host (`bitswarm-torrent-create`, followed with `bitswarm-torrent-create-status`), and the
//! tracker the daemon may run besides (`bitswarm-tracker-get`).

use serde::Serialize;
use serde_json::Value;

use crate::backend::{Backend, CreateJob, CreateRequest, CreateState, TrackerServerView};
use crate::coerce::{self, Args, ArgsExt};
use crate::envelope::Reply;
use crate::methods::is_absolute;
use crate::methods::torrent::{is_announce_url, tracker_list};

/// The longest comment or source tag taken (a .torrent's texts, not a place for files).
const MAX_TEXT: usize = 4096;

/// A job as the wire shows it.
#[derive(Serialize)]
struct JobJson<'a> {
    job: u32,
    path: &'a str,
    name: &'a str,
    /// "hashing", "done" or "error".
    status: &'static str,
    hashed: u64,
    total: u64,
    #[serde(rename = "percentDone")]
    percent_done: f64,
    #[serde(rename = "errorString")]
    error_string: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(rename = "hashString", skip_serializing_if = "Option::is_none")]
    hash_string: Option<String>,
    #[serde(rename = "magnetLink", skip_serializing_if = "Option::is_none")]
    magnet_link: Option<&'a str>,
}

fn job_json(j: &CreateJob) -> JobJson<'_> {
    let (status, error, done) = match &j.state {
        CreateState::Hashing => ("hashing", "", None),
        CreateState::Done { torrent, magnet_link } => ("done", "", Some((torrent, magnet_link.as_str()))),
        CreateState::Failed(e) => ("error", e.as_str(), None),
    };
    let percent = if matches!(j.state, CreateState::Done { .. }) {
        1.0
    } else if j.total > 0 {
        (j.hashed.min(j.total) as f64 / j.total as f64 * 1000.0).floor() / 1000.0
    } else {
        0.0
    };
    JobJson {
        job: j.job,
        path: &j.path,
        name: &j.name,
        status,
        hashed: j.hashed,
        total: j.total,
        percent_done: percent,
        error_string: error,
        id: done.map(|(t, _)| t.id),
        hash_string: done.map(|(t, _)| t.info_hash.to_hex()),
        magnet_link: done.map(|(_, m)| m),
    }
}

/// The trackers of a create request: a `trackerList` text (one URL a line, a blank line
/// between tiers), or a list whose items are each a tier (a URL, or a list of URLs).
fn trackers(v: Option<&Value>) -> Result<Vec<Vec<String>>, String> {
    let bad = |u: &str| format!("{u:?} is not an announce URL (http://, https:// or udp:// with a host)");
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => tracker_list(text).ok_or_else(|| {
            let u = text.lines().map(str::trim).find(|l| !l.is_empty() && !is_announce_url(l)).unwrap_or("");
            bad(u)
        }),
        Some(Value::Array(items)) => {
            let mut tiers = Vec::new();
            for item in items {
                let tier: Vec<String> = match item {
                    Value::String(u) => vec![u.trim().to_owned()],
                    Value::Array(urls) => urls.iter().filter_map(Value::as_str).map(|u| u.trim().to_owned()).collect(),
                    _ => return Err("trackers: a list of URLs, or of lists of URLs (tiers)".into()),
                };
                if let Some(u) = tier.iter().find(|u| !is_announce_url(u)) {
                    return Err(bad(u));
                }
                if !tier.is_empty() {
                    tiers.push(tier);
                }
            }
            Ok(tiers)
        }
        Some(_) => Err("trackers: a text of URLs (one a line) or a list".into()),
    }
}

/// Reads and checks bitswarm-torrent-create's arguments; the error is the result string.
fn parse_create(a: &Args) -> Result<CreateRequest, String> {
    let path = a.str_of("path").map(str::trim).unwrap_or("");
    if path.is_empty() {
        return Err("no path: the file or folder on the daemon's host to make the torrent of".into());
    }
    if !is_absolute(path) {
        return Err(format!("{path}: the path is not absolute"));
    }
    let piece_size = match a.get("piece-size") {
        None | Some(Value::Null) => None,
        Some(v) => match coerce::int(v) {
            Some(0) => None,
            Some(n) if n > 0 && (n as u64).is_power_of_two() && ((16 << 10)..=(64 << 20)).contains(&n) => {
                Some(n as u64)
            }
            _ => return Err("piece-size: a power of two from 16 KiB to 64 MiB in bytes, or 0 to choose".into()),
        },
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match a.str_of(key).map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) if s.len() > MAX_TEXT => Err(format!("{key}: longer than {MAX_TEXT} bytes")),
            s => Ok(s.map(str::to_owned)),
        }
    };
    Ok(CreateRequest {
        path: path.to_owned(),
        trackers: trackers(a.get("trackers"))?,
        piece_size,
        private: a.bool_of("private").unwrap_or(false),
        comment: text("comment")?,
        source: text("source")?,
    })
}

/// bitswarm-torrent-create: `{"job": {…}}`, hashing; follow it with
/// bitswarm-torrent-create-status.
pub(crate) async fn create<B: Backend>(backend: &B, args: &Args) -> Reply {
    #[derive(Serialize)]
    struct Out<'a> {
        job: JobJson<'a>,
    }
    let request = match parse_create(args) {
        Ok(r) => r,
        Err(e) => return Reply::error(e),
    };
    match backend.create_torrent(request).await {
        Ok(job) => Reply::with(&Out { job: job_json(&job) }),
        Err(e) => Reply::error(e.to_string()),
    }
}

/// bitswarm-torrent-create-status: `{"jobs": […]}`, every job, or the one `job` names.
pub(crate) fn create_status<B: Backend>(backend: &B, args: &Args) -> Reply {
    #[derive(Serialize)]
    struct Out<'a> {
        jobs: Vec<JobJson<'a>>,
    }
    let only: Option<u32> = args.int_of("job");
    let jobs = backend.create_jobs();
    let list = jobs.iter().filter(|j| only.is_none_or(|n| n == j.job)).map(job_json).collect();
    Reply::with(&Out { jobs: list })
}

/// bitswarm-tracker-get: `{"enabled": false}`, or the tracker's addresses, totals, request
/// counters and busiest swarms.
pub(crate) async fn tracker_get<B: Backend>(backend: &B) -> Reply {
    #[derive(Serialize)]
    struct Swarm {
        #[serde(rename = "hashString")]
        hash_string: String,
        name: String,
        seeders: u32,
        leechers: u32,
        completed: u32,
        #[serde(rename = "idleSeconds")]
        idle_seconds: u32,
    }
    #[derive(Serialize)]
    struct Out {
        enabled: bool,
        #[serde(rename = "announceUrls", skip_serializing_if = "Vec::is_empty")]
        announce_urls: Vec<String>,
        #[serde(rename = "uptimeSeconds")]
        uptime_seconds: u64,
        swarms: u64,
        seeders: u64,
        leechers: u64,
        completed: u64,
        announces: u64,
        scrapes: u64,
        #[serde(rename = "swarmList")]
        swarm_list: Vec<Swarm>,
    }
    let t: TrackerServerView = match backend.tracker().await {
        Ok(Some(t)) => t,
        Ok(None) => TrackerServerView::default(),
        Err(e) => return Reply::error(e.to_string()),
    };
    let enabled = !t.announce_urls.is_empty();
    Reply::with(&Out {
        enabled,
        announce_urls: t.announce_urls,
        uptime_seconds: t.uptime_secs,
        swarms: t.swarms,
        seeders: t.seeders,
        leechers: t.leechers,
        completed: t.completed,
        announces: t.announces,
        scrapes: t.scrapes,
        swarm_list: t
            .list
            .into_iter()
            .map(|s| Swarm {
                hash_string: s.info_hash.to_hex(),
                name: s.name.unwrap_or_default(),
                seeders: s.seeders,
                leechers: s.leechers,
                completed: s.completed,
                idle_seconds: s.idle_secs,
            })
            .collect(),
    })
}
