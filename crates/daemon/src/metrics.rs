//! `GET /metrics`: the daemon in Prometheus's text format (torrents by state, bytes and rates
//! down and up, connections, hash failures, torrents stopped by an error, RPC requests, the
//! DHT node's table and lookups, and the state database's health).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Daemon;

/// Counts every request the daemon's HTTP server answers.
pub(crate) async fn count_requests(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    d.rpc_requests.fetch_add(1, Ordering::Relaxed);
    next.run(req).await
}

pub(crate) async fn serve(State(d): State<Arc<Daemon>>) -> Response {
    let text = render(&d);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

fn render(d: &Daemon) -> String {
    use bitswarm_peer::State as S;
    let all = d.session().torrents();
    let stats: Vec<_> = all.iter().map(|h| h.stats()).collect();
    type Is = fn(&S) -> bool;
    let states: [(&str, Is); 9] = [
        ("fetching_metadata", |s: &S| matches!(s, S::FetchingMetadata)),
        ("check_queued", |s: &S| matches!(s, S::CheckQueued)),
        ("checking", |s: &S| matches!(s, S::Checking)),
        ("download_queued", |s: &S| matches!(s, S::DownloadQueued)),
        ("downloading", |s: &S| matches!(s, S::Downloading)),
        ("seed_queued", |s: &S| matches!(s, S::SeedQueued)),
        ("seeding", |s: &S| matches!(s, S::Seeding)),
        ("stopped", |s: &S| matches!(s, S::Stopped)),
        ("error", |s: &S| matches!(s, S::Error(_))),
    ];
    let mut o = String::new();
    let _ = writeln!(o, "# HELP bitswarm_torrents Torrents, by state.");
    let _ = writeln!(o, "# TYPE bitswarm_torrents gauge");
    for (name, f) in states {
        let n = stats.iter().filter(|s| f(&s.state)).count();
        let _ = writeln!(o, "bitswarm_torrents{{state=\"{name}\"}} {n}");
    }
    let (down, up) = d.session().transferred();
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    let gauge = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    counter(&mut o, "bitswarm_downloaded_bytes_total", "Payload bytes downloaded since the daemon started.", down);
    counter(&mut o, "bitswarm_uploaded_bytes_total", "Payload bytes uploaded since the daemon started.", up);
    gauge(
        &mut o,
        "bitswarm_download_rate_bytes",
        "Download rate over every torrent, bytes per second.",
        stats.iter().map(|s| s.down_rate).sum(),
    );
    gauge(
        &mut o,
        "bitswarm_upload_rate_bytes",
        "Upload rate over every torrent, bytes per second.",
        stats.iter().map(|s| s.up_rate).sum(),
    );
    gauge(&mut o, "bitswarm_peers", "Connected peers over every torrent.", d.session().connections() as u64);
    counter(
        &mut o,
        "bitswarm_hash_failures_total",
        "Pieces that failed their hash check (torrents in the daemon).",
        stats.iter().map(|s| s.hash_failures).sum(),
    );
    gauge(
        &mut o,
        "bitswarm_disk_errors",
        "Torrents stopped by an error (a disk error, data missing).",
        stats.iter().filter(|s| matches!(s.state, S::Error(_))).count() as u64,
    );
    counter(
        &mut o,
        "bitswarm_rpc_requests_total",
        "HTTP requests to the RPC and /metrics.",
        d.rpc_requests.load(Ordering::Relaxed),
    );
    if let Some(dht) = d.session().dht_stats() {
        gauge(&mut o, "bitswarm_dht_nodes", "Nodes in the DHT routing tables.", dht.nodes as u64);
        gauge(&mut o, "bitswarm_dht_lookups", "DHT lookups of our torrents under way.", dht.lookups as u64);
        gauge(&mut o, "bitswarm_dht_torrents", "Torrents that look for peers on the DHT.", dht.torrents as u64);
        counter(&mut o, "bitswarm_dht_lookups_total", "DHT lookups finished.", dht.lookups_done as u64);
        counter(&mut o, "bitswarm_dht_peers_total", "Peers the DHT gave our torrents.", dht.peers_found as u64);
    }
    let h = d.store.health();
    counter(&mut o, "bitswarm_state_commits_total", "Commits to the state database.", h.commits);
    counter(&mut o, "bitswarm_state_errors_total", "Failed commits to the state database.", h.errors);
    o
}
