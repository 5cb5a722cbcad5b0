//! `bitswarm daemon`'s session settings that act over time or across restarts: the peer port
//! moved while it runs, the alt-speed schedule, a magnet link's stop-at-metadata kept.

mod common;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::daemon::*;
use common::swarm::*;
use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(120);

fn peer_port(d: &OurDaemon) -> u16 {
    d.rpc("session-get", json!({"fields": ["peer-port"]}))["peer-port"].as_u64().unwrap() as u16
}

fn listens(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)).is_ok()
}

/// transmission-remote -p moves the peer port while the daemon seeds: the old port refuses,
/// the tracker hears the new one (a libtorrent leecher that knows the daemon only from the
/// tracker downloads from it), and a restart keeps it over `--port 0`. A port in use is
/// refused with the reason, the old one kept; port 0 picks a free one.
#[test]
fn interop_the_peer_port_moves_at_run_time_and_is_kept() {
    if !require("libtorrent") || !require("transmission-remote") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 700_000, 21, &tracker.http_url());
    let mut daemon = OurDaemon::start(t.path(), "", None);
    std::fs::create_dir_all(&daemon.downloads).unwrap();
    std::fs::copy(t.path().join("src/a.bin"), daemon.downloads.join("a.bin")).unwrap();
    daemon.remote(&["-a", a.to_str().unwrap()]);
    daemon.wait_torrent(1, &["status", "hashString"], "seeding", |v| v["status"] == 6 && v["hashString"] == ha);
    let first = daemon.peer_port;
    assert_eq!(peer_port(&daemon), first);

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let r = daemon.rpc_reply("session-set", json!({"peer-port": busy}));
    let result = r["result"].as_str().unwrap();
    assert!(result.starts_with(&format!("peer-port {busy}: cannot listen on 127.0.0.1:{busy}")), "{r}");
    assert_eq!(peer_port(&daemon), first, "the old port stays");
    assert!(listens(first));

    daemon.rpc("session-set", json!({"peer-port": 0}));
    let picked = peer_port(&daemon);
    assert!(picked != 0 && picked != first, "{picked}");
    assert!(listens(picked) && !listens(first), "the old port refuses");

    let new = free_tcp_port();
    daemon.remote(&["-p", &new.to_string()]);
    assert_eq!(peer_port(&daemon), new);
    assert!(listens(new) && !listens(picked));
    // Told no peer: libtorrent learns of the daemon from the tracker, which heard the new port.
    let (mut lt, _) = lt_peer("leech", &a, &t.path().join("lt"), &[]);
    lt.wait_line(T, |l| l == "done");
    assert!(std::fs::read(t.path().join("lt/a.bin")).unwrap() == std::fs::read(t.path().join("src/a.bin")).unwrap());

    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    assert_eq!((again.peer_port, peer_port(&again)), (new, new), "kept across a restart, over --port 0");
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn alt_speed(d: &OurDaemon) -> bool {
    d.rpc("session-get", json!({"fields": ["alt-speed-enabled"]}))["alt-speed-enabled"].as_bool().unwrap()
}

/// The schedule turns the alternative limits on at its begin and off at its end, over local
/// midnight and on the day of its mask; a toggle in between holds until the next boundary.
/// The daemon's `TZ` is chosen so that its local midnight comes a few seconds after it starts.
#[test]
fn the_alt_speed_schedule_turns_the_alternative_limits_on_and_off() {
    let t = tempdir();
    // Local time is UTC + `off` (POSIX's sign is the other way round): 23:59:00 local falls
    // on a whole minute a few seconds from now.
    let start = unix_ms() / 1000 + 8;
    let mut off = (86_400 - 60 - (start % 86_400) as i64).rem_euclid(86_400);
    if off >= 43_200 {
        off -= 86_400;
    }
    let tz = format!(
        "BSW{}{}:{:02}:{:02}",
        if off > 0 { "-" } else { "+" },
        off.abs() / 3600,
        off.abs() / 60 % 60,
        off.abs() % 60
    );
    let mut daemon = OurDaemon::start_with_env(t.path(), "", Some("bitswarm_daemon=info"), &[("TZ", &tz)]);
    // The first whole minute at least 2 s ahead (23:59 if the daemon started in time).
    let mut begin_at = start;
    while begin_at * 1000 < unix_ms() + 2000 {
        begin_at += 60;
    }
    let local = |utc: u64| (utc as i64 + off) as u64;
    let minute = (local(begin_at) % 86_400 / 60) as u32;
    let weekday = ((local(begin_at) / 86_400 + 4) % 7) as u32; // 1970-01-01 was a Thursday
    let end = (minute + 1) % 1440;
    let day = 1u32 << weekday;
    daemon.rpc(
        "session-set",
        json!({"alt-speed-time-begin": minute, "alt-speed-time-end": end, "alt-speed-time-day": day,
               "alt-speed-time-enabled": true, "alt-speed-enabled": false}),
    );
    let keys = ["alt-speed-time-enabled", "alt-speed-time-begin", "alt-speed-time-end", "alt-speed-time-day"];
    let s = daemon.rpc("session-get", json!({ "fields": keys }));
    assert_eq!(
        s,
        json!({"alt-speed-time-enabled": true, "alt-speed-time-begin": minute, "alt-speed-time-end": end, "alt-speed-time-day": day})
    );
    assert!(!alt_speed(&daemon), "off before the begin");

    // On at the begin, not before.
    wait_for(Duration::from_secs(90), "the alternative limits on at the begin", || alt_speed(&daemon).then_some(()));
    assert!(unix_ms() >= begin_at * 1000, "on before the begin");
    let end_at = begin_at + 60;
    // Turned off by hand: it holds until the end.
    daemon.rpc("session-set", json!({"alt-speed-enabled": false}));
    while unix_ms() < (begin_at + 20) * 1000 {
        assert!(!alt_speed(&daemon), "a toggle holds until the next boundary");
        std::thread::sleep(Duration::from_millis(50));
    }
    // On by hand again: the end turns it off.
    daemon.rpc("session-set", json!({"alt-speed-enabled": true}));
    wait_for(Duration::from_secs(90), "the alternative limits off at the end", || (!alt_speed(&daemon)).then_some(()));
    assert!(unix_ms() >= end_at * 1000, "off before the end");
    daemon.proc.wait_line(T, |l| l.contains("alt-speed schedule: alternative limits off"));

    daemon.stop();
    let again = OurDaemon::start_with_env(t.path(), "", None, &[("TZ", &tz)]);
    assert_eq!(again.rpc("session-get", json!({ "fields": keys })), s, "kept across a restart");
}

/// A magnet link added with bitswarm-stop-at-metadata, its metadata not yet come when the daemon
/// stops: started again, it still stops once the metadata comes, nothing of its data fetched.
#[test]
fn interop_stop_at_metadata_holds_across_a_restart() {
    if !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let url = tracker.http_url();
    let (a, ha) = torrent_of(t.path(), "a.bin", 600_000, 22, &url);
    let mut daemon = OurDaemon::start(t.path(), "", None);
    let added = daemon.rpc(
        "torrent-add",
        json!({"filename": format!("magnet:?xt=urn:btih:{ha}&dn=a.bin&tr={url}"), "bitswarm-stop-at-metadata": true}),
    );
    let id = added["torrent-added"]["id"].as_u64().unwrap();
    assert_eq!(daemon.torrent(id, &["metadataPercentComplete"])["metadataPercentComplete"], 0);
    daemon.stop();

    let (_lt, _) = lt_seeder(&a, &t.path().join("src"), "default", T);
    let again = OurDaemon::start(t.path(), "", None);
    again.wait_torrent(id, &["metadataPercentComplete", "status", "errorString"], "its metadata, then stopped", |v| {
        v["metadataPercentComplete"] == 1 && v["status"] == 0
    });
    let v = again.torrent(id, &["haveValid", "downloadedEver", "error", "totalSize"]);
    assert_eq!((&v["haveValid"], &v["downloadedEver"], &v["error"]), (&json!(0), &json!(0), &json!(0)), "{v}");
    assert_eq!(v["totalSize"], 600_000);
    assert!(!again.downloads.join("a.bin").exists(), "no data fetched");
}
