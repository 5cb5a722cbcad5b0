//! `bitswarm daemon` driven as people drive it: through Transmission's RPC with
//! transmission-remote and the Python transmission-rpc client, downloading from and seeding to
//! libtorrent and aria2, surviving `kill -9`, keeping its queue, its limits and its files.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(120);

fn id_of(d: &OurDaemon, hash: &str) -> u64 {
    let all = d.torrents(&["id", "hashString"]);
    all.iter().find(|t| t["hashString"] == hash).unwrap_or_else(|| panic!("{hash} not listed: {all:?}"))["id"]
        .as_u64()
        .unwrap()
}

fn same_file(a: &Path, b: &Path) {
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "{} differs from {}", b.display(), a.display());
}

/// One daemon, one port: three torrents downloaded at once, from two libtorrent seeders (one
/// added by its magnet link) and an aria2 seeder, while it seeds a fourth to a libtorrent
/// leecher; everything through transmission-remote (add, list, files, stop, start, limits,
/// remove with and without data).
#[test]
fn interop_transmission_remote_drives_downloads_and_a_seed_on_one_port() {
    if !require("libtorrent") || !require("aria2c") || !require("transmission-remote") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let url = tracker.http_url();
    let (a, ha) = torrent_of(t.path(), "a.bin", 1_500_000, 1, &url);
    let (b, hb) = torrent_of(t.path(), "b.bin", 1_200_000, 2, &url);
    let (c, hc) = torrent_of(t.path(), "c.bin", 900_000, 3, &url);
    let (d, _) = torrent_of(t.path(), "d.bin", 700_000, 4, &url);
    let src = t.path().join("src");
    let (_lt_a, _) = lt_seeder(&a, &src, "default", T);
    let (_lt_b, _) = lt_seeder(&b, &src, "default", T);
    let _aria = aria2(true, &c, &src, free_tcp_port());
    let mut daemon = OurDaemon::start(t.path(), "", None);
    // d.bin is in the download folder already: the daemon checks it and seeds it.
    std::fs::create_dir_all(&daemon.downloads).unwrap();
    std::fs::copy(src.join("d.bin"), daemon.downloads.join("d.bin")).unwrap();
    let out = daemon.remote(&["-a", a.to_str().unwrap()]);
    assert!(out.contains("success"), "{out}");
    daemon.remote(&["-a", &format!("magnet:?xt=urn:btih:{hb}&dn=b.bin&tr={url}")]);
    daemon.remote(&["-a", c.to_str().unwrap(), "-a", d.to_str().unwrap()]);
    let dl = daemon.downloads.clone();
    let mut lt_d = {
        let mut cmd = std::process::Command::new("/usr/bin/python3");
        cmd.arg(LT_PEER).arg("leech").arg(&d).arg(t.path().join("lt-d"));
        cmd.arg(format!("127.0.0.1:{}", daemon.peer_port));
        Proc::spawn("libtorrent leech d", cmd)
    };
    for h in [&ha, &hb, &hc] {
        let id = id_of(&daemon, h);
        daemon.wait_torrent(id, &["percentDone", "status", "leftUntilDone"], "complete", |v| {
            v["leftUntilDone"] == 0 && v["percentDone"] == 1 && v["status"] == 6
        });
    }
    for name in ["a.bin", "b.bin", "c.bin"] {
        same_file(&src.join(name), &dl.join(name));
    }
    lt_d.wait_line(T, |l| l == "done");
    same_file(&src.join("d.bin"), &t.path().join("lt-d/d.bin"));

    // What transmission-remote shows.
    let list = daemon.remote(&["-l"]);
    for name in ["a.bin", "b.bin", "c.bin", "d.bin"] {
        assert!(list.lines().any(|l| l.contains(name) && l.contains("100%")), "{name} in:\n{list}");
    }
    let ia = id_of(&daemon, &ha).to_string();
    let files = daemon.remote(&["-t", &ia, "-if"]);
    assert!(files.contains("a.bin") && files.contains("1.50 MB"), "{files}");
    let info = daemon.remote(&["-t", &ha, "-i"]);
    assert!(info.contains(&format!("Hash: {ha}")) && info.contains("Percent Done: 100%"), "{info}");

    // Stop, start, limits.
    daemon.remote(&["-t", &ia, "-S"]);
    daemon.wait_torrent(ia.parse().unwrap(), &["status"], "stopped", |v| v["status"] == 0);
    daemon.remote(&["-t", &ia, "-s"]);
    daemon.wait_torrent(ia.parse().unwrap(), &["status"], "seeding again", |v| v["status"] == 6);
    daemon.remote(&["-t", &ia, "-d", "100", "-u", "50"]);
    let v = daemon.torrent(ia.parse().unwrap(), &["downloadLimit", "downloadLimited", "uploadLimit", "uploadLimited"]);
    assert_eq!(
        (&v["downloadLimit"], &v["downloadLimited"], &v["uploadLimit"], &v["uploadLimited"]),
        (&serde_json::json!(100), &serde_json::json!(true), &serde_json::json!(50), &serde_json::json!(true))
    );

    // Removed, with its data kept; removed with its data.
    daemon.remote(&["-t", &ia, "-r"]);
    let ic = id_of(&daemon, &hc).to_string();
    daemon.remote(&["-t", &ic, "--remove-and-delete"]);
    let left: Vec<String> = daemon.torrents(&["name"]).iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(dl.join("a.bin").exists(), "a.bin was kept");
    wait_for(T, "c.bin deleted", || (!dl.join("c.bin").exists()).then_some(()));
    daemon.stop();
}

/// The Python transmission-rpc client (PyPI) adds, lists reading every field it asks for,
/// stops, starts, sets a seed ratio and removes with the data.
#[test]
fn interop_python_transmission_rpc_drives_the_daemon() {
    let Some(python) = transmission_rpc_python() else { return };
    if !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 800_000, 5, &tracker.http_url());
    let (_lt, _) = lt_seeder(&a, &t.path().join("src"), "default", T);
    let daemon = OurDaemon::start(t.path(), "", None);
    let script = r#"
import json, pathlib, sys, time, warnings
import transmission_rpc
from transmission_rpc.torrent import Torrent
warnings.simplefilter("ignore", DeprecationWarning)
port, torrent = int(sys.argv[1]), pathlib.Path(sys.argv[2])
c = transmission_rpc.Client(host="127.0.0.1", port=port, timeout=30)
out, errors = {}, []
t = c.add_torrent(torrent)
out["added"] = t.hash_string
deadline = time.time() + 90
while time.time() < deadline:
    t = c.get_torrent(t.id)
    if t.progress == 100.0:
        break
    time.sleep(0.2)
out["progress"] = t.progress
for name in sorted(dir(Torrent)):
    if not name.startswith("_") and isinstance(getattr(Torrent, name), property):
        try:
            getattr(t, name)
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")
out["files"] = [f.name for f in t.get_files()]
c.stop_torrent(t.id)
time.sleep(0.5)
out["stopped"] = str(c.get_torrent(t.id).status)
c.start_torrent(t.id)
c.change_torrent(t.id, seed_ratio_limit=1.5, seed_ratio_mode=1)
t = c.get_torrent(t.id)
out["ratio_limit"], out["ratio_mode"] = t.seed_ratio_limit, int(t.seed_ratio_mode)
s = c.get_session()
out["version"], out["download_dir"] = s.version, s.download_dir
out["stats_torrents"] = c.session_stats().torrent_count
c.remove_torrent(t.id, delete_data=True)
m = c.add_torrent(sys.argv[3], paused=True)
out["magnet_name"] = m.name
c.remove_torrent(m.id, delete_data=False)
time.sleep(0.5)
out["left"] = len(c.get_torrents())
out["errors"] = errors
print(json.dumps(out))
"#;
    let mut c = std::process::Command::new(python);
    c.arg("-c").arg(script).arg(daemon.rpc.port().to_string()).arg(&a);
    c.arg(format!("magnet:?xt=urn:btih:{}&dn=other", "ab".repeat(20)));
    let (st, out, err) = run(c, Duration::from_secs(150));
    assert!(st.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(v["added"], ha.as_str());
    assert_eq!(v["progress"], 100.0, "{v}");
    assert_eq!(v["files"], serde_json::json!(["a.bin"]));
    assert_eq!(v["stopped"], "stopped", "{v}");
    assert_eq!((&v["ratio_limit"], &v["ratio_mode"]), (&serde_json::json!(1.5), &serde_json::json!(1)));
    assert!(v["version"].as_str().unwrap().starts_with("4.0.6 (bitswarm "), "{v}");
    assert_eq!(v["stats_torrents"], 1);
    assert_eq!(v["magnet_name"], "other", "{v}");
    assert_eq!(v["left"], 0);
    assert!(!daemon.downloads.join("a.bin").exists(), "the data was deleted");
}

/// `kill -9` in the middle of downloads; started again, every torrent comes back in its state
/// with the pieces saved before the kill (nothing checked again), and completes; after a clean
/// stop too.
#[test]
fn after_kill_9_every_torrent_resumes_without_checking_and_completes() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let url = tracker.http_url();
    let (a, ha) = torrent_of(t.path(), "a.bin", 4 << 20, 6, &url);
    let (b, hb) = torrent_of(t.path(), "b.bin", 3 << 20, 7, &url);
    let (s, _) = torrent_of(t.path(), "s.bin", 600_000, 8, &url);
    let src = t.path().join("src");
    // A slow seeder: the downloads take a while.
    let mut seed = bitswarm();
    seed.args(["seed", "--port", "0", "--bind", "127.0.0.2", "--max-upload-rate", "600K", "-d"]).arg(&src);
    seed.arg(&a).arg(&b);
    let mut seeder = Proc::spawn("bitswarm seed", seed);
    listening_port(&mut seeder);
    let log = "warn,bitswarm_peer::torrent=info";
    let mut daemon = OurDaemon::start(t.path(), "", Some(log));
    std::fs::create_dir_all(&daemon.downloads).unwrap();
    std::fs::copy(src.join("s.bin"), daemon.downloads.join("s.bin")).unwrap();
    for f in [&a, &b, &s] {
        daemon.remote(&["-a", f.to_str().unwrap()]);
    }
    let (ia, ib) = (id_of(&daemon, &ha), id_of(&daemon, &hb));
    // A stopped torrent stays stopped.
    let is =
        id_of(&daemon, &bitswarm_metainfo::Metainfo::parse(&std::fs::read(&s).unwrap()).unwrap().info_hash.to_hex());
    daemon.wait_torrent(is, &["status"], "seeding", |v| v["status"] == 6);
    daemon.remote(&["-t", &is.to_string(), "-S"]);
    daemon.wait_torrent(ia, &["haveValid"], "a quarter of a.bin", |v| v["haveValid"].as_u64().unwrap() >= 1 << 20);
    // What is verified now is saved within 2 s.
    let saved_a = daemon.torrent(ia, &["haveValid"])["haveValid"].as_u64().unwrap();
    let saved_b = daemon.torrent(ib, &["haveValid"])["haveValid"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    daemon.proc.kill();

    let mut again = OurDaemon::start(t.path(), "", Some(log));
    // Both come back from their resume data (in either order), with what was saved.
    for _ in 0..2 {
        let line = again.proc.wait_line(T, |l| l.contains("resumed with"));
        assert!(line.contains("nothing checked"), "{line}");
    }
    for (id, saved) in [(ia, saved_a), (ib, saved_b)] {
        let have = again.torrent(id, &["haveValid"])["haveValid"].as_u64().unwrap();
        assert!(have >= saved, "torrent {id}: {have} bytes verified after the restart, {saved} before the kill");
    }
    assert!(!again.proc.output().contains("checked in"), "something was hashed again:\n{}", again.proc.output());
    assert_eq!(again.torrent(is, &["status"])["status"], 0, "the stopped torrent stays stopped");
    for id in [ia, ib] {
        again.wait_torrent(id, &["leftUntilDone"], "complete", |v| v["leftUntilDone"] == 0);
    }
    same_file(&src.join("a.bin"), &again.downloads.join("a.bin"));
    same_file(&src.join("b.bin"), &again.downloads.join("b.bin"));
    again.stop();

    // After a clean stop, the running torrents come back running, the stopped one stopped.
    let mut third = OurDaemon::start(t.path(), "", Some(log));
    for id in [ia, ib] {
        third.wait_torrent(id, &["status"], "seeding after a clean stop", |v| v["status"] == 6);
    }
    assert_eq!(third.torrent(is, &["status"])["status"], 0, "the stopped torrent stays stopped");
    assert!(!third.proc.output().contains("checked in"), "something was hashed again:\n{}", third.proc.output());
    third.stop();
}

/// With one download at a time, a second torrent waits its turn; an unwanted file that no
/// wanted piece reaches into is never fetched nor created; a ratio limit of 0 stops a torrent
/// once it has every piece (`isFinished`).
#[test]
fn the_queue_the_unwanted_files_and_the_seeding_limits_hold() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    // Files of whole pieces: the middle one shares no piece with the others.
    let tree = t.path().join("src/tree");
    random_file(&tree.join("x.bin"), 65_536, 21);
    random_file(&tree.join("y.bin"), 65_536, 22);
    random_file(&tree.join("z.bin"), 50_000, 23);
    let tree_torrent = t.path().join("tree.torrent");
    let ht = create_torrent(&tree, &tree_torrent, &["--piece-size", "16K", "-t", &tracker.http_url()]);
    let (one, h1) = torrent_of(t.path(), "one.bin", 2 << 20, 10, &tracker.http_url());
    let src = t.path().join("src");
    let mut seed = bitswarm();
    seed.args(["seed", "--port", "0", "--bind", "127.0.0.2", "--max-upload-rate", "200K", "-d"]).arg(&src);
    seed.arg(&tree_torrent).arg(&one);
    let mut seeder = Proc::spawn("bitswarm seed", seed);
    listening_port(&mut seeder);
    let daemon = OurDaemon::start(t.path(), "[queue]\nmax_downloading = 1\n", None);
    // one.bin first (10 s at the seeder's rate); a ratio limit of 0 stops it once complete.
    daemon.remote(&["-a", one.to_str().unwrap()]);
    let i1 = id_of(&daemon, &h1);
    daemon.rpc("torrent-set", serde_json::json!({ "ids": i1, "seedRatioLimit": 0, "seedRatioMode": 1 }));
    daemon.wait_torrent(i1, &["status"], "downloading", |v| v["status"] == 4);
    // The tree, added paused: y.bin is not wanted; started, it waits its turn.
    daemon.rpc("torrent-add", serde_json::json!({ "filename": tree_torrent, "paused": true }));
    let it = id_of(&daemon, &ht);
    let files = daemon.torrent(it, &["files"]);
    let y = files["files"].as_array().unwrap().iter().position(|f| f["name"] == "tree/y.bin").unwrap();
    daemon.remote(&["-t", &it.to_string(), "-G", &y.to_string()]);
    daemon.remote(&["-t", &it.to_string(), "-s"]);
    daemon.wait_torrent(it, &["status"], "queued", |v| v["status"] == 3);
    assert_eq!(daemon.torrent(i1, &["status"])["status"], 4, "one download at a time");
    // one.bin done: its ratio limit stops it (isFinished), and the tree's turn comes.
    daemon.wait_torrent(i1, &["status", "isFinished", "leftUntilDone"], "finished", |v| {
        v["leftUntilDone"] == 0 && v["status"] == 0 && v["isFinished"] == true
    });
    let dl = &daemon.downloads;
    same_file(&src.join("one.bin"), &dl.join("one.bin"));
    daemon.wait_torrent(it, &["leftUntilDone"], "the tree done", |v| v["leftUntilDone"] == 0);
    assert!(!dl.join("tree/y.bin").exists(), "the unwanted file was created");
    for f in ["x.bin", "z.bin"] {
        same_file(&tree.join(f), &dl.join("tree").join(f));
    }
    let v = daemon.torrent(it, &["sizeWhenDone", "totalSize", "percentDone", "downloadedEver", "fileStats"]);
    assert_eq!(v["sizeWhenDone"], 65_536 + 50_000, "{v}");
    assert_eq!(v["percentDone"], 1);
    assert!(v["downloadedEver"].as_u64().unwrap() < 2 * 65_536 + 50_000, "y.bin was fetched: {v}");
    assert_eq!(v["fileStats"][y]["bytesCompleted"], 0, "{v}");
    assert_eq!(v["fileStats"][y]["wanted"], false, "{v}");
}

/// Transmission's stalled downloads: with one download at a time and `queue-stalled-minutes`
/// 1, a download that no peer serves holds its turn for a minute, then is stalled (`isStalled`,
/// as the Python transmission-rpc client reads it) and lets the next in line start and finish
/// while it runs on; the setting is kept across a restart. (Before, the next in line waited for
/// good.)
#[test]
fn interop_a_stalled_download_lets_the_next_in_line_start() {
    let Some(python) = transmission_rpc_python() else { return };
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let src = t.path().join("src");
    let (dead, hd) = torrent_of(t.path(), "dead.bin", 100_000, 33, &tracker.http_url());
    std::fs::remove_file(src.join("dead.bin")).unwrap(); // nobody has it
    let (next, hn) = torrent_of(t.path(), "next.bin", 1 << 20, 34, &tracker.http_url());
    let _seeder = our_peer_on("127.0.0.2", "seed", &next, &src, &[], None);
    let mut daemon = OurDaemon::start(t.path(), "[queue]\nmax_downloading = 1\n", None);
    daemon.rpc("session-set", serde_json::json!({ "queue-stalled-enabled": true, "queue-stalled-minutes": 1 }));
    daemon.remote(&["-a", dead.to_str().unwrap()]);
    let id = id_of(&daemon, &hd);
    daemon.wait_torrent(id, &["status"], "downloading", |v| v["status"] == 4);
    daemon.remote(&["-a", next.to_str().unwrap()]);
    let inext = id_of(&daemon, &hn);
    daemon.wait_torrent(inext, &["status"], "queued", |v| v["status"] == 3);
    assert_eq!(daemon.torrent(id, &["isStalled"])["isStalled"], false, "not a minute yet");
    daemon.wait_torrent(inext, &["leftUntilDone"], "the next in line done", |v| v["leftUntilDone"] == 0);
    same_file(&src.join("next.bin"), &daemon.downloads.join("next.bin"));
    let (d, n) = (daemon.torrent(id, &["startDate", "status", "isStalled"]), daemon.torrent(inext, &["startDate"]));
    let waited = n["startDate"].as_u64().unwrap() - d["startDate"].as_u64().unwrap();
    assert!(waited >= 59, "the next one started {waited} s after the stalled one");
    assert_eq!((&d["status"], &d["isStalled"]), (&serde_json::json!(4), &serde_json::json!(true)), "{d}");
    let script = r#"
import json, sys, warnings
import transmission_rpc
warnings.simplefilter("ignore", DeprecationWarning)
c = transmission_rpc.Client(host="127.0.0.1", port=int(sys.argv[1]), timeout=30)
s = c.get_session()
print(json.dumps([c.get_torrent(int(sys.argv[2])).is_stalled, s.queue_stalled_enabled, s.queue_stalled_minutes]))
"#;
    let mut c = std::process::Command::new(&python);
    c.arg("-c").arg(script).arg(daemon.rpc.port().to_string()).arg(id.to_string());
    let (st, out, err) = run(c, Duration::from_secs(60));
    assert!(st.success(), "{out}{err}");
    assert_eq!(out.trim(), "[true, true, 1]", "{err}");
    daemon.stop();
    let again = OurDaemon::start(t.path(), "[queue]\nmax_downloading = 1\n", None);
    let s =
        again.rpc("session-get", serde_json::json!({ "fields": ["queue-stalled-enabled", "queue-stalled-minutes"] }));
    assert_eq!(
        (&s["queue-stalled-enabled"], &s["queue-stalled-minutes"]),
        (&serde_json::json!(true), &serde_json::json!(1)),
        "{s}"
    );
}

/// Transmission's incomplete folder, set with transmission-remote (`--incomplete-dir`): a
/// download is written there, listed with its download folder all along, and moved there once
/// complete, where it seeds on (libtorrent downloads it from the daemon alone); the setting is
/// kept across a restart. (Before, the setting was accepted and ignored.)
#[test]
fn interop_a_download_is_written_in_the_incomplete_folder_and_moved_once_complete() {
    if !require("transmission-remote") || !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 2 << 20, 41, &tracker.http_url());
    let src = t.path().join("src");
    let (mut seeder, _) = our_peer_on("127.0.0.2", "seed", &a, &src, &["--max-upload-rate", "300K"], None);
    let mut daemon = OurDaemon::start(t.path(), "", None);
    let inc = t.path().join("incomplete");
    daemon.remote(&["--incomplete-dir", inc.to_str().unwrap()]);
    let fields = serde_json::json!({ "fields": ["incomplete-dir", "incomplete-dir-enabled"] });
    let s = daemon.rpc("session-get", fields.clone());
    assert_eq!(
        (&s["incomplete-dir"], &s["incomplete-dir-enabled"]),
        (&serde_json::json!(inc), &serde_json::json!(true))
    );
    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    let downloads = serde_json::json!(daemon.downloads);
    // While it comes (7 s at the seeder's rate): in the incomplete folder, listed with its
    // download folder.
    wait_for(T, "the file in the incomplete folder", || inc.join("a.bin").exists().then_some(()));
    let v = daemon.torrent(id, &["downloadDir", "leftUntilDone"]);
    assert_eq!(v["downloadDir"], downloads, "{v}");
    assert!(v["leftUntilDone"].as_u64().unwrap() > 0, "{v}");
    assert!(!daemon.downloads.join("a.bin").exists(), "written in the download folder");
    // Complete: moved, and seeding from there.
    wait_for(T, "moved to the download folder", || {
        (daemon.downloads.join("a.bin").exists() && !inc.join("a.bin").exists()).then_some(())
    });
    daemon.wait_torrent(id, &["status", "leftUntilDone"], "seeding", |v| v["status"] == 6 && v["leftUntilDone"] == 0);
    same_file(&src.join("a.bin"), &daemon.downloads.join("a.bin"));
    assert_eq!(daemon.torrent(id, &["downloadDir"])["downloadDir"], downloads);
    seeder.kill();
    let leech = t.path().join("leech");
    let (mut lt, _) = lt_peer("leech", &a, &leech, &[format!("127.0.0.1:{}", daemon.peer_port)]);
    lt.wait_line(T, |l| l == "done");
    same_file(&src.join("a.bin"), &leech.join("a.bin"));
    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    let s = again.rpc("session-get", fields);
    assert_eq!(
        (&s["incomplete-dir"], &s["incomplete-dir-enabled"]),
        (&serde_json::json!(inc), &serde_json::json!(true))
    );
    again.wait_torrent(id, &["status", "leftUntilDone"], "seeding after a restart", |v| {
        v["status"] == 6 && v["leftUntilDone"] == 0
    });
}

/// transmission-remote's `--move` and `--find` (torrent-set-location): a seeding torrent's data
/// moves to the new folder and is gone from the old, the torrent lists it as its download
/// folder and seeds on from there (libtorrent downloads it from the daemon alone); `--find`
/// points it at a copy in another folder, which is checked and served; the place is kept across
/// a restart.
#[test]
fn interop_transmission_remote_moves_and_finds_a_torrents_data() {
    if !require("transmission-remote") || !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 1 << 20, 43, &tracker.http_url());
    let src = t.path().join("src");
    let (mut seeder, _) = our_peer_on("127.0.0.2", "seed", &a, &src, &[], None);
    let mut daemon = OurDaemon::start(t.path(), "", None);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    daemon.wait_torrent(id, &["status", "leftUntilDone"], "seeding", |v| v["status"] == 6 && v["leftUntilDone"] == 0);
    seeder.kill();
    let seeds_from = |daemon: &OurDaemon, dir: &Path, what: &str| {
        assert_eq!(daemon.torrent(id, &["downloadDir"])["downloadDir"], serde_json::json!(dir), "{what}");
        daemon.wait_torrent(id, &["status", "leftUntilDone"], what, |v| v["status"] == 6 && v["leftUntilDone"] == 0);
        let leech = t.path().join(format!("leech-{what}"));
        let (mut lt, _) = lt_peer("leech", &a, &leech, &[format!("127.0.0.1:{}", daemon.peer_port)]);
        lt.wait_line(T, |l| l == "done");
        same_file(&src.join("a.bin"), &leech.join("a.bin"));
    };
    let moved = t.path().join("moved");
    daemon.remote(&["-t", &id.to_string(), "--move", moved.to_str().unwrap()]);
    same_file(&src.join("a.bin"), &moved.join("a.bin"));
    assert!(!daemon.downloads.join("a.bin").exists(), "the data stays in the old folder too");
    seeds_from(&daemon, &moved, "moved");
    let found = t.path().join("found");
    std::fs::create_dir_all(&found).unwrap();
    std::fs::copy(moved.join("a.bin"), found.join("a.bin")).unwrap();
    daemon.remote(&["-t", &id.to_string(), "--find", found.to_str().unwrap()]);
    assert!(moved.join("a.bin").exists(), "--find moves nothing");
    std::fs::remove_file(moved.join("a.bin")).unwrap();
    seeds_from(&daemon, &found, "found");
    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    assert_eq!(again.torrent(id, &["downloadDir"])["downloadDir"], serde_json::json!(found));
    again.wait_torrent(id, &["status", "leftUntilDone"], "seeding after a restart", |v| {
        v["status"] == 6 && v["leftUntilDone"] == 0
    });
}

/// A torrent of a folder `tree` (x.bin, 100,000 bytes, and sub/y.bin, 70,000, made from
/// `seed`) under `dir/src`, announcing to `tracker`: (src, tree, the .torrent, its info-hash).
fn tree_torrent(dir: &Path, tracker: &OurTracker, seed: u64) -> (PathBuf, PathBuf, PathBuf, String) {
    let src = dir.join("src");
    let tree = src.join("tree");
    random_file(&tree.join("x.bin"), 100_000, seed);
    random_file(&tree.join("sub/y.bin"), 70_000, seed + 1);
    let torrent = dir.join("tree.torrent");
    let hash = create_torrent(&tree, &torrent, &["--piece-size", "16K", "-t", &tracker.http_url()]);
    (src, tree, torrent, hash)
}

/// `kill -9` in the middle of a move and of a rename: the daemon ends where it hurts most, its
/// files moved and its record not yet told (`BITSWARM_TEST_ABORT_AFTER` makes it abort there).
/// At the next start it finishes what was under way: the torrent is in its new folder under
/// its new names, complete, nothing downloaded again, and libtorrent downloads it from the
/// daemon alone. (Before: the record named the old folder, the files were not there, and the
/// torrent would download them all again.)
#[test]
fn interop_a_move_or_a_rename_cut_short_is_finished_at_the_next_start() {
    let Some(python) = transmission_rpc_python() else { return };
    if !require("transmission-remote") || !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (src, tree, torrent, hash) = tree_torrent(t.path(), &tracker, 61);
    let (mut seeder, _) = our_peer_on("127.0.0.2", "seed", &torrent, &src, &[], None);
    let abort_after = |step| [("BITSWARM_TEST_ABORT_AFTER", step)];
    let mut daemon = OurDaemon::start_with_env(t.path(), "", None, &abort_after("move"));
    daemon.remote(&["-a", torrent.to_str().unwrap()]);
    let id = id_of(&daemon, &hash);
    daemon.wait_torrent(id, &["status", "leftUntilDone"], "seeding", |v| v["status"] == 6 && v["leftUntilDone"] == 0);
    seeder.kill();

    let moved = t.path().join("moved");
    let mut c = std::process::Command::new("transmission-remote");
    c.arg(daemon.rpc.to_string()).args(["-t", &id.to_string(), "--move", moved.to_str().unwrap()]);
    let _ = run(c, Duration::from_secs(60));
    assert!(!daemon.proc.wait_exit(T).success(), "the daemon aborted");
    assert!(moved.join("tree/sub/y.bin").exists() && !daemon.downloads.join("tree").exists(), "the files were moved");

    let mut daemon = OurDaemon::start_with_env(t.path(), "", None, &abort_after("rename"));
    assert_eq!(daemon.torrent(id, &["downloadDir"])["downloadDir"], serde_json::json!(moved));
    daemon.wait_torrent(id, &["status", "leftUntilDone"], "seeding after the move", |v| {
        v["status"] == 6 && v["leftUntilDone"] == 0
    });
    let script = r#"
import sys, transmission_rpc
c = transmission_rpc.Client(host="127.0.0.1", port=int(sys.argv[1]), timeout=30)
try:
    c.rename_torrent_path(int(sys.argv[2]), "tree/sub", "folder")
except Exception as e:
    print(e)
"#;
    let mut c = std::process::Command::new(&python);
    c.arg("-c").arg(script).arg(daemon.rpc.port().to_string()).arg(id.to_string());
    let _ = run(c, Duration::from_secs(60));
    assert!(!daemon.proc.wait_exit(T).success(), "the daemon aborted");
    assert!(moved.join("tree/folder/y.bin").exists(), "the folder was renamed");

    let daemon = OurDaemon::start(t.path(), "", Some("info"));
    let v = daemon.torrent(id, &["downloadDir", "files"]);
    assert_eq!(v["downloadDir"], serde_json::json!(moved), "{v}");
    let mut names: Vec<_> =
        v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["tree/folder/y.bin", "tree/x.bin"], "{v}");
    // Complete with no peer to download from: nothing was fetched again.
    daemon.wait_torrent(id, &["status", "leftUntilDone"], "seeding after the rename", |v| {
        v["status"] == 6 && v["leftUntilDone"] == 0
    });
    let leech = t.path().join("leech");
    let (mut lt, _) = lt_peer("leech", &torrent, &leech, &[format!("127.0.0.1:{}", daemon.peer_port)]);
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&tree, &leech.join("tree"));
    // What was finished is recorded as done: a start after a kill -9 finds nothing to finish.
    // (The records came back with their fingerprints as changed, and stayed as they were.)
    let mut daemon = daemon;
    daemon.proc.kill();
    let mut again = OurDaemon::start(t.path(), "", Some("info"));
    let out = again.proc.output();
    assert!(out.contains("torrents restored") && !out.contains("left under way"), "{out}");
    assert_eq!(again.torrent(id, &["downloadDir"])["downloadDir"], serde_json::json!(moved));
}

/// `torrent-rename-path` from the Python transmission-rpc client: a file, a folder and the top
/// folder of a downloaded torrent are renamed on disk and in the file list, the torrent takes
/// its top folder's new name, a restart keeps the names, and libtorrent downloads the torrent
/// (with its own names) from the daemon alone, which reads the renamed files.
/// A path the torrent does not have is refused, saying so. (Before: "unsupported".)
#[test]
fn interop_python_transmission_rpc_renames_files_and_folders() {
    let Some(python) = transmission_rpc_python() else { return };
    if !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (src, tree, torrent, hash) = tree_torrent(t.path(), &tracker, 51);
    let (mut seeder, _) = our_peer_on("127.0.0.2", "seed", &torrent, &src, &[], None);
    let mut daemon = OurDaemon::start(t.path(), "", None);
    daemon.remote(&["-a", torrent.to_str().unwrap()]);
    let id = id_of(&daemon, &hash);
    daemon.wait_torrent(id, &["leftUntilDone"], "downloaded", |v| v["leftUntilDone"] == 0);
    seeder.kill();

    let script = r#"
import json, sys, warnings
import transmission_rpc
warnings.simplefilter("ignore", DeprecationWarning)
c = transmission_rpc.Client(host="127.0.0.1", port=int(sys.argv[1]), timeout=30)
i = int(sys.argv[2])
out = {"renamed": [
    c.rename_torrent_path(i, "tree/sub/y.bin", "why.bin"),
    c.rename_torrent_path(i, "tree/sub", "folder"),
    c.rename_torrent_path(i, "tree", "renamed"),
]}
try:
    c.rename_torrent_path(i, "renamed/nothing", "a")
    out["refused"] = None
except Exception as e:
    out["refused"] = str(e)
t = c.get_torrent(i)
out["name"], out["files"] = t.name, sorted(f.name for f in t.get_files())
print(json.dumps(out))
"#;
    let mut c = std::process::Command::new(&python);
    c.arg("-c").arg(script).arg(daemon.rpc.port().to_string()).arg(id.to_string());
    let (st, out, err) = run(c, Duration::from_secs(60));
    assert!(st.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(
        v["renamed"],
        serde_json::json!([["tree/sub/y.bin", "why.bin"], ["tree/sub", "folder"], ["tree", "renamed"]]),
        "{v}"
    );
    assert!(v["refused"].as_str().is_some_and(|e| e.contains("renamed/nothing")), "{v}");
    assert_eq!(v["name"], "renamed", "{v}");
    assert_eq!(v["files"], serde_json::json!(["renamed/folder/why.bin", "renamed/x.bin"]), "{v}");
    let dl = daemon.downloads.clone();
    same_file(&tree.join("x.bin"), &dl.join("renamed/x.bin"));
    same_file(&tree.join("sub/y.bin"), &dl.join("renamed/folder/why.bin"));
    assert!(!dl.join("tree").exists(), "the old folder is still there");

    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    again.wait_torrent(id, &["status", "leftUntilDone", "name"], "seeding after a restart", |v| {
        v["status"] == 6 && v["leftUntilDone"] == 0 && v["name"] == "renamed"
    });
    let leech = t.path().join("leech");
    let (mut lt, _) = lt_peer("leech", &torrent, &leech, &[format!("127.0.0.1:{}", again.peer_port)]);
    lt.wait_line(T, |l| l == "done");
    same_file(&tree.join("x.bin"), &leech.join("tree/x.bin"));
    same_file(&tree.join("sub/y.bin"), &leech.join("tree/sub/y.bin"));
}

/// An HTTP server on loopback that answers every GET with `body` as it is then.
fn serve(body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> std::net::SocketAddr {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { return };
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = body.lock().unwrap().clone();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = c.write_all(head.as_bytes()).and_then(|()| c.write_all(&body));
        }
    });
    addr
}

/// Transmission's blocklist: transmission-remote's `--blocklist-update` fetches `blocklist-url`
/// (a P2P text list the test serves over HTTP), session-get counts its rules, and with
/// `blocklist-enabled` a seeder at a blocked address that announces is not dialed, and one
/// that dials the daemon is not let in (nothing comes from either), while one at another
/// address serves the download; a leecher connected before its address came into the list is
/// let go when it comes. A list that is no list is refused, saying which line, and the
/// one held stays, also across a restart. (Before: blocklist-update answered 0 rules and
/// nothing was blocked.)
#[test]
fn interop_a_blocklist_keeps_blocked_peers_out() {
    if !require("transmission-remote") {
        return;
    }
    let t = tempdir();
    let list = b"# bitswarm's test list\nannounced:127.0.0.2-127.0.0.2\n127.0.0.4/32\n10.0.0.0/8\n".to_vec();
    let body = std::sync::Arc::new(std::sync::Mutex::new(list));
    let url = format!("http://{}/list.p2p", serve(body.clone()));
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 1 << 20, 61, &tracker.http_url());
    let src = t.path().join("src");
    let mut daemon = OurDaemon::start(t.path(), "", None);
    daemon.rpc("session-set", serde_json::json!({ "blocklist-url": url, "blocklist-enabled": true }));
    daemon.remote(&["--blocklist-update"]);
    let fields = serde_json::json!({ "fields": ["blocklist-size", "blocklist-enabled"] });
    let s = daemon.rpc("session-get", fields.clone());
    assert_eq!((&s["blocklist-size"], &s["blocklist-enabled"]), (&serde_json::json!(3), &serde_json::json!(true)));

    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    daemon.wait_torrent(id, &["status"], "downloading", |v| v["status"] == 4);
    // Two blocked seeders: one announces (the daemon is given it), one dials the daemon.
    let _announced = our_peer_on("127.0.0.2", "seed", &a, &src, &[], None);
    let daemon_addr = format!("127.0.0.1:{}", daemon.peer_port);
    let _dialing = our_peer_on("127.0.0.4", "seed", &a, &src, &["--no-tracker", "--peer", &daemon_addr], None);
    daemon.remote(&["-t", &id.to_string(), "--reannounce"]);
    // Time to be given the first and to be dialed by the second (it dials at once).
    std::thread::sleep(Duration::from_secs(6));
    let v = daemon.torrent(id, &["downloadedEver", "peersConnected"]);
    assert_eq!((&v["downloadedEver"], &v["peersConnected"]), (&serde_json::json!(0), &serde_json::json!(0)), "{v}");

    let _allowed = our_peer_on("127.0.0.3", "seed", &a, &src, &[], None);
    daemon.remote(&["-t", &id.to_string(), "--reannounce"]);
    daemon.wait_torrent(id, &["leftUntilDone"], "downloaded from the other seeder", |v| v["leftUntilDone"] == 0);
    same_file(&src.join("a.bin"), &daemon.downloads.join("a.bin"));
    let peers = daemon.torrent(id, &["peers"]);
    assert!(!peers.to_string().contains("127.0.0.2") && !peers.to_string().contains("127.0.0.4"), "{peers}");

    // A peer connected before its address comes into the list is let go once it does (a
    // leecher the daemon serves at 16 KB/s, a minute's work).
    daemon.remote(&["-t", &id.to_string(), "-u", "16"]);
    let leech = t.path().join("leech");
    let _late = our_peer_on("127.0.0.5", "join", &a, &leech, &["--no-tracker", "--peer", &daemon_addr], None);
    daemon.wait_torrent(id, &["peers"], "the leecher connected", |v| v.to_string().contains("127.0.0.5"));
    body.lock().unwrap().extend_from_slice(b"127.0.0.5/32\n");
    daemon.remote(&["--blocklist-update"]);
    // Well before its download could end (64 s at that rate).
    wait_for(Duration::from_secs(20), "the leecher let go", || {
        (!daemon.torrent(id, &["peers"]).to_string().contains("127.0.0.5")).then_some(())
    });
    let s = daemon.rpc("session-get", fields.clone());
    assert_eq!(s["blocklist-size"], serde_json::json!(4));

    *body.lock().unwrap() = b"<html>not a list</html>\n".to_vec();
    let r = daemon.rpc_reply("blocklist-update", serde_json::json!({}));
    let result = r["result"].as_str().unwrap();
    assert!(result.starts_with("gotNewBlocklist: ") && result.contains("line 1"), "{r}");
    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    let s = again.rpc("session-get", fields);
    assert_eq!((&s["blocklist-size"], &s["blocklist-enabled"]), (&serde_json::json!(4), &serde_json::json!(true)));
}

/// A torrent's download limit holds within 10% over 10 s.
#[test]
fn a_download_limit_holds_within_ten_percent() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 12 << 20, 11, &tracker.http_url());
    let src = t.path().join("src");
    let mut seed = bitswarm();
    seed.args(["seed", "--port", "0", "--bind", "127.0.0.2", "-d"]).arg(&src).arg(&a);
    let mut seeder = Proc::spawn("bitswarm seed", seed);
    listening_port(&mut seeder);
    let daemon = OurDaemon::start(t.path(), "", None);
    // transmission-remote's `--start-paused` is a session-set sent after the torrent-add of the
    // same command line: the torrent started at once, and 12 MiB over loopback could be in
    // before the limit. So: added stopped, then the limit, then the start (in calls of their
    // own: it also sends torrent-start before the torrent-set of one command line).
    daemon.remote(&["--start-paused"]);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    assert_eq!(daemon.torrent(id, &["status"])["status"], 0, "added stopped");
    daemon.remote(&["-t", &id.to_string(), "-d", "400"]);
    assert_eq!(daemon.torrent(id, &["downloadLimit"])["downloadLimit"], 400);
    daemon.remote(&["-t", &id.to_string(), "-s"]);
    daemon.wait_torrent(id, &["downloadedEver"], "a start", |v| v["downloadedEver"].as_u64().unwrap() > 400_000);
    // Each reading is taken some time between the request and the answer (a loaded machine
    // answers late): the bytes between two readings came in over at least the time from the
    // first answer to the second request, and at most from the first request to the second
    // answer. Within 10% means some time in that range gives a rate within 10%.
    let at = |d: &OurDaemon| {
        let asked = Instant::now();
        let bytes = d.torrent(id, &["downloadedEver"])["downloadedEver"].as_u64().unwrap();
        (asked, Instant::now(), bytes)
    };
    let (asked0, answered0, b0) = at(&daemon);
    std::thread::sleep(Duration::from_secs(10));
    let (asked1, answered1, b1) = at(&daemon);
    let bytes = (b1 - b0) as f64;
    let (shortest, longest) = (asked1 - answered0, answered1 - asked0);
    let (fastest, slowest) = (bytes / shortest.as_secs_f64(), bytes / longest.as_secs_f64());
    assert!(
        fastest >= 360_000.0 && slowest <= 440_000.0,
        "{slowest:.0}-{fastest:.0} B/s over {:.1}-{:.1} s against 400 kB/s ({b0} then {b1} bytes): {}",
        shortest.as_secs_f64(),
        longest.as_secs_f64(),
        daemon.torrent(id, &["status", "leftUntilDone", "rateDownload", "peersConnected", "downloadLimit"])
    );
}

/// The RPC refuses a request without the session id (409, which hands it out), a wrong
/// password (401), and a Host header that names another site (421, DNS rebinding).
#[test]
fn the_rpc_refuses_requests_without_session_id_password_or_honest_host() {
    let t = tempdir();
    let daemon = OurDaemon::start(t.path(), "", None);
    let post = |host: &str, sid: &str, auth: &str| {
        let body = r#"{"method":"session-get"}"#;
        format!(
            "POST /transmission/rpc HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}X-Transmission-Session-Id: {sid}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, head, _) = daemon.http(&post("127.0.0.1", "", ""));
    assert_eq!(status, 409, "{head}");
    let sid = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("x-transmission-session-id")))
        .unwrap()
        .1
        .trim()
        .to_owned();
    assert_eq!(daemon.http(&post("127.0.0.1", &sid, "")).0, 200);
    assert_eq!(daemon.http(&post("localhost", &sid, "")).0, 200);
    let (status, _, body) = daemon.http(&post("evil.example.com", &sid, ""));
    assert_eq!(status, 421, "{body}");
    drop(daemon);

    // With a password.
    let hash = password_hash("s3cret");
    assert!(hash.starts_with("$argon2"), "{hash}");
    let t2 = tempdir();
    let config = format!("[rpc]\nuser = \"me\"\npassword_hash = \"{hash}\"\n");
    let daemon = OurDaemon::start(t2.path(), &config, None);
    let wrong = format!("Authorization: Basic {}\r\n", base64("me:wrong"));
    assert_eq!(daemon.http(&post("127.0.0.1", "", &wrong)).0, 401);
    let daemon = daemon.with_auth("me", "s3cret");
    assert_eq!(daemon.rpc("session-get", serde_json::json!({}))["rpc-version"], 17);
    // The config file holds the hash, never the password.
    assert!(!std::fs::read_to_string(t2.path().join("daemon.toml")).unwrap().contains("s3cret"));
}

/// A .torrent dropped into the watch folder is added, then renamed `.added`; /metrics counts
/// it in Prometheus's format.
#[test]
fn the_watch_folder_and_the_metrics() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 100_000, 12, &tracker.http_url());
    let watch = t.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let config = format!("[daemon]\nwatch_dir = \"{}\"\nstart_added = false\n", watch.display());
    let daemon = OurDaemon::start(t.path(), &config, None);
    std::fs::copy(&a, watch.join("a.torrent")).unwrap();
    std::fs::write(watch.join("junk.torrent"), b"not a torrent").unwrap();
    wait_for(T, "the watch folder read", || {
        (watch.join("a.torrent.added").exists() && watch.join("junk.torrent.invalid").exists()).then_some(())
    });
    let id = id_of(&daemon, &ha);
    assert_eq!(daemon.torrent(id, &["status"])["status"], 0, "added stopped (start_added = false)");
    let (status, _, body) = daemon.http("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("bitswarm_torrents{state=\"stopped\"} 1"), "{body}");
    assert!(body.contains("# TYPE bitswarm_rpc_requests_total counter"), "{body}");
}

/// torrent-add of an http URL: the daemon fetches the .torrent (here from Python's http.server)
/// and adds it, with the labels asked for.
#[test]
fn a_torrent_added_by_its_url() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 50_000, 13, &tracker.http_url());
    let mut web = std::process::Command::new("python3");
    web.args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"]).arg(t.path());
    let mut web = Proc::spawn("http.server", web);
    let line = web.wait_line(T, |l| l.starts_with("Serving HTTP on 127.0.0.1 port "));
    let port: u16 = line.split(' ').nth(5).unwrap().parse().unwrap();
    let daemon = OurDaemon::start(t.path(), "", None);
    let url = format!("http://127.0.0.1:{port}/{}", a.file_name().unwrap().to_str().unwrap());
    let added = daemon.rpc("torrent-add", serde_json::json!({ "filename": url, "paused": true, "labels": ["tv"] }));
    assert_eq!(added["torrent-added"]["hashString"], ha.as_str(), "{added}");
    let id = id_of(&daemon, &ha);
    assert_eq!(daemon.torrent(id, &["labels"])["labels"], serde_json::json!(["tv"]));
    // The same again is a duplicate, and a URL that is not there an error that says so.
    let again = daemon.rpc("torrent-add", serde_json::json!({ "filename": url }));
    assert_eq!(again["torrent-duplicate"]["id"], id);
    let missing = format!("http://127.0.0.1:{port}/nothing.torrent");
    let r = daemon.rpc_reply("torrent-add", serde_json::json!({ "filename": missing }));
    let text = r["result"].as_str().unwrap();
    assert!(text.contains("Couldn't fetch torrent: HTTP 404"), "{text}");
}

/// A client edits a torrent's trackers (Flood's trackerAdd and trackerRemove, trackerList):
/// the edits are listed, announced to, and kept across a restart.
#[test]
fn trackers_are_edited_and_kept() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    std::fs::create_dir_all(t.path().join("other")).unwrap();
    let other = OurTracker::start(&t.path().join("other"), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 40_000, 14, &tracker.http_url());
    let mut daemon = OurDaemon::start(t.path(), "", None);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    let urls = |d: &OurDaemon| -> Vec<String> {
        let v = d.torrent(id, &["trackers"]);
        v["trackers"].as_array().unwrap().iter().map(|t| t["announce"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(urls(&daemon), [tracker.http_url()]);
    daemon.rpc("torrent-set", serde_json::json!({ "ids": id, "trackerAdd": [other.http_url()] }));
    assert_eq!(urls(&daemon), [tracker.http_url(), other.http_url()]);
    let r = daemon.rpc_reply("torrent-set", serde_json::json!({ "ids": id, "trackerAdd": [other.http_url()] }));
    assert_eq!(r["result"], "error setting announce list", "{r}");
    daemon.rpc("torrent-set", serde_json::json!({ "ids": id, "trackerRemove": [0] }));
    assert_eq!(urls(&daemon), [other.http_url()]);
    // The tracker left hears of the torrent (a leecher: its data is not here), at once when
    // asked.
    daemon.rpc("torrent-reannounce", serde_json::json!({ "ids": id }));
    other.wait_scrape(&ha, (0, 1, 0), "the tracker left announced to");
    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    assert_eq!(urls(&again), [other.http_url()], "kept across a restart");
}

/// A magnet link whose metadata has not come yet is kept whole across a restart: its trackers
/// and name, not only its info-hash.
#[test]
fn a_magnet_link_without_metadata_keeps_its_trackers_across_a_restart() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let url = tracker.http_url();
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=kept&tr={}", url.replace(':', "%3A").replace('/', "%2F"));
    let mut daemon = OurDaemon::start(t.path(), "", None);
    daemon.remote(&["-a", &magnet]);
    let id = id_of(&daemon, hash);
    let seen = |d: &OurDaemon| {
        let v = d.torrent(id, &["trackers", "name"]);
        let urls: Vec<String> =
            v["trackers"].as_array().unwrap().iter().map(|t| t["announce"].as_str().unwrap().to_owned()).collect();
        (v["name"].as_str().unwrap().to_owned(), urls)
    };
    assert_eq!(seen(&daemon), ("kept".to_owned(), vec![url.clone()]));
    daemon.stop();
    let again = OurDaemon::start(t.path(), "", None);
    assert_eq!(seen(&again), ("kept".to_owned(), vec![url]), "kept across a restart");
}

/// A torrent's only tracker refuses it: the torrent shows Transmission's tracker error (`error`
/// 2, with what the tracker said), which Sonarr and Radarr read to spot a torrent a private
/// tracker no longer knows; once the tracker serves it again, the error clears.
#[test]
fn a_tracker_refusal_is_the_torrents_error_until_it_serves_it_again() {
    let t = tempdir();
    let list = t.path().join("allowed.txt");
    std::fs::write(&list, "# nothing yet\n").unwrap();
    let cfg = format!("[access]\nmode = \"allow\"\nlist = \"{}\"\n", list.display());
    let mut tracker = OurTracker::start(t.path(), &cfg);
    let (a, ha) = torrent_of(t.path(), "a.bin", 40_000, 15, &tracker.http_url());
    let daemon = OurDaemon::start(t.path(), "", None);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    let fields = ["error", "errorString"];
    daemon.wait_torrent(id, &fields, "the tracker's refusal shown", |v| {
        v["error"] == 2 && v["errorString"].as_str().is_some_and(|s| s.contains("does not serve"))
    });
    std::fs::write(&list, format!("{ha}\n")).unwrap();
    common::signal(tracker.proc.child.id(), "HUP");
    tracker.proc.wait_line(T, |l| l == "access list read again: 1 info-hashes");
    daemon.rpc("torrent-reannounce", serde_json::json!({ "ids": id }));
    daemon.wait_torrent(id, &fields, "the error cleared", |v| v["error"] == 0 && v["errorString"] == "");
}

/// A torrent-get held for `wait` seconds (`bitswarm-wait`) since `since`, on a connection of its
/// own: how long it took, and its reply.
fn held_get(rpc: std::net::SocketAddr, sid: &str, since: u64, wait: u64) -> (Duration, serde_json::Value) {
    let body = serde_json::json!({"method": "torrent-get", "arguments": {
        "fields": ["id", "status"], "ids": "recently-active", "bitswarm-since": since, "bitswarm-wait": wait,
    }})
    .to_string();
    let req = format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         X-Transmission-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(rpc).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, text) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{text}");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["result"], "success", "{v}");
    (start.elapsed(), v["arguments"].clone())
}

/// Four held torrent-gets from this client (the most it may hold): each waits `wait` seconds
/// since `since`; returns once the daemon holds all four (a fifth is answered at once, not
/// held), with their threads.
fn hold_four<'s, 'd: 's>(
    s: &'s std::thread::Scope<'s, '_>,
    rpc: std::net::SocketAddr,
    sid: &'d str,
    since: u64,
    wait: u64,
) -> Vec<std::thread::ScopedJoinHandle<'s, (Duration, serde_json::Value)>> {
    let mut held = Vec::new();
    wait_for(T, "four requests held", || {
        // One refused while a probe held a place ends at once: another takes its place.
        held.retain(|h: &std::thread::ScopedJoinHandle<'s, _>| !h.is_finished());
        while held.len() < 4 {
            held.push(s.spawn(move || held_get(rpc, sid, since, wait)));
        }
        // Held for 1 s while fewer than four are; answered at once when four are.
        (held_get(rpc, sid, since, 1).0 < Duration::from_millis(500) && held.iter().all(|h| !h.is_finished()))
            .then_some(())
    });
    held
}

/// The web page's held torrent-get (`bitswarm-wait`): nothing changed, it answers `[]` when its
/// wait ends; at most four are held for one client (a fifth answers at once); a change (a
/// torrent started by another client) answers those held at once; and so does a shutdown.
#[test]
fn a_held_torrent_get_answers_on_a_change_or_at_its_end_and_is_capped() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 100_000, 21, &tracker.http_url());
    let mut daemon = OurDaemon::start(t.path(), "[daemon]\nstart_added = false\n", None);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    let id = id_of(&daemon, &ha);
    let sid = daemon.session_id();
    let first = daemon.rpc("torrent-get", serde_json::json!({"fields": ["id"], "bitswarm-since": 0}));
    // Nothing changes: held to its end (2 s). Its answer may list what changed a second before
    // the marker (changes are sent again for a second); what follows it does not.
    let settle = |since: u64| {
        let (took, reply) = held_get(daemon.rpc, &sid, since, 2);
        assert!(took >= Duration::from_millis(1900), "answered after {took:?}: {reply}");
        reply["bitswarm-now"].as_u64().unwrap()
    };
    let since = settle(first["bitswarm-now"].as_u64().unwrap());
    let (took, idle) = held_get(daemon.rpc, &sid, since, 1);
    assert!(took >= Duration::from_millis(900), "answered after {took:?}: {idle}");
    assert_eq!(idle["torrents"], serde_json::json!([]), "{idle}");

    // Four held for 60 s; the torrent started by another client: all four answered with it.
    std::thread::scope(|s| {
        let held = hold_four(s, daemon.rpc, &sid, since, 60);
        daemon.remote(&["-t", &id.to_string(), "-s"]);
        for h in held {
            let (took, changed) = h.join().unwrap();
            assert!(took < Duration::from_secs(50), "answered after {took:?}");
            assert_eq!(changed["torrents"][0]["id"], id, "{changed}");
            assert_ne!(changed["torrents"][0]["status"], 0, "{changed}");
        }
    });
    daemon.remote(&["-t", &id.to_string(), "-S"]);
    daemon.wait_torrent(id, &["status"], "stopped", |t| t["status"] == 0);

    // Four held for 60 s while a client closes the session: answered, and the daemon exits.
    let now = daemon.rpc("torrent-get", serde_json::json!({"fields": ["id"], "bitswarm-since": 0}));
    let since = settle(now["bitswarm-now"].as_u64().unwrap());
    std::thread::scope(|s| {
        let held = hold_four(s, daemon.rpc, &sid, since, 60);
        daemon.rpc("session-close", serde_json::json!({}));
        for h in held {
            let (took, idle) = h.join().unwrap();
            assert!(took < Duration::from_secs(50), "answered after {took:?}");
            assert_eq!(idle["torrents"], serde_json::json!([]), "{idle}");
        }
    });
    let status = daemon.proc.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "daemon exit: {status:?}\n{}", daemon.proc.output());
}

/// The web page's update stream (`POST /transmission/stream`), read as a browser reads it: the
/// response's status, then its lines (JSON), one at a time, as they come.
struct Stream {
    reader: std::io::BufReader<std::net::TcpStream>,
    status: u16,
    pending: Vec<u8>,
    /// The body had a length (not a stream): all of it is in `pending`.
    whole: bool,
}

impl Stream {
    fn open(rpc: std::net::SocketAddr, sid: &str, fields: &[&str], moving: &[&str]) -> Stream {
        let body = serde_json::json!({"method": "torrent-get", "arguments": {
            "fields": fields, "format": "table", "bitswarm-moving": moving,
        }})
        .to_string();
        let req = format!(
            "POST /transmission/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             X-Transmission-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = std::net::TcpStream::connect(rpc).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut status = 0;
        let mut length = None;
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            if status == 0 {
                status = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut pending = Vec::new();
        // Not chunked: the whole body now, and no more.
        if let Some(n) = length {
            pending.resize(n, 0);
            std::io::Read::read_exact(&mut reader, &mut pending).unwrap();
        }
        Stream { reader, status, pending, whole: length.is_some() }
    }

    /// The next line, skipping the empty ones; `None` once the stream ended.
    fn next(&mut self) -> Option<serde_json::Value> {
        use std::io::{BufRead, Read};
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                if line.len() > 1 {
                    return Some(serde_json::from_slice(&line).unwrap());
                }
                continue;
            }
            if self.whole {
                return None;
            }
            // A chunk: its size in hex, the bytes, CRLF; size 0 ends the response.
            let mut size = String::new();
            self.reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The update stream: its first line lists every torrent; a change by another client comes as
/// a line of that torrent alone, a removal as its id; a client may hold four streams (a fifth
/// is answered `{"poll":true}` and ends: the page polls instead); every stream ends when the
/// daemon shuts down.
#[test]
fn the_update_stream_says_what_changed_and_ends_with_the_daemon() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (a, ha) = torrent_of(t.path(), "a.bin", 100_000, 31, &tracker.http_url());
    let (b, hb) = torrent_of(t.path(), "b.bin", 100_000, 32, &tracker.http_url());
    let mut daemon = OurDaemon::start(t.path(), "[daemon]\nstart_added = false\n", None);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    daemon.remote(&["-a", b.to_str().unwrap()]);
    let (ia, ib) = (id_of(&daemon, &ha), id_of(&daemon, &hb));
    let sid = daemon.session_id();
    let open = || Stream::open(daemon.rpc, &sid, &["id", "name", "status"], &["id", "rateDownload"]);

    let mut s = open();
    assert_eq!(s.status, 200);
    let first = s.next().unwrap();
    assert_eq!(first["full"], true, "{first}");
    assert_eq!(first["keys"], serde_json::json!(["id", "name", "status"]), "{first}");
    let rows = first["torrents"].as_array().unwrap();
    let mut names: Vec<_> = rows.iter().map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap())).collect();
    names.sort();
    assert_eq!(names, vec![(ia, "a.bin"), (ib, "b.bin")], "{first}");

    // Started by another client: a line with that torrent alone (a line may first repeat
    // nothing the stream already sent: a row unchanged is left out).
    daemon.remote(&["-t", &ia.to_string(), "-s"]);
    let line = s.next().unwrap();
    let rows = line["torrents"].as_array().unwrap_or_else(|| panic!("{line}"));
    assert_eq!(rows.len(), 1, "{line}");
    assert_eq!(rows[0][0], ia, "{line}");
    assert_ne!(rows[0][2], 0, "{line}");
    // Removed by another client: its id.
    daemon.remote(&["-t", &ib.to_string(), "-r"]);
    let line = loop {
        let l = s.next().unwrap();
        if l.get("removed").is_some() {
            break l;
        }
        let rows = l["torrents"].as_array().map_or(&[][..], |r| &r[..]);
        assert!(rows.iter().all(|r| r[0] == ia), "{l}");
    };
    assert_eq!(line["removed"], serde_json::json!([ib]), "{line}");

    // Four streams for this client at most: the fifth is refused.
    let mut more: Vec<Stream> = (0..3).map(|_| open()).collect();
    assert!(more.iter().all(|m| m.status == 200));
    for m in &mut more {
        assert_eq!(m.next().unwrap()["full"], true);
    }
    let mut fifth = open();
    assert_eq!(fifth.status, 200);
    assert_eq!(fifth.next(), Some(serde_json::json!({"poll": true})));
    assert_eq!(fifth.next(), None, "the refusal ends there");
    drop(more);
    // Their places are given back once the daemon sees them gone (their connections closed):
    // a stream opens again.
    wait_for(T, "a stream again", || (open().next().unwrap()["full"] == true).then_some(()));

    // The session closed: every stream ends, and the daemon exits.
    daemon.rpc("session-close", serde_json::json!({}));
    while s.next().is_some() {}
    let status = daemon.proc.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "daemon exit: {status:?}\n{}", daemon.proc.output());
}

/// torrent-get of `recently-active` (with `bitswarm-since` when given): the ids of its
/// torrents and of its `removed`, after checking that no torrent is in both.
fn listed_and_removed(daemon: &OurDaemon, since: Option<u64>) -> (Vec<u64>, Vec<u64>) {
    let mut args = serde_json::json!({"fields": ["id"], "ids": "recently-active"});
    if let Some(s) = since {
        args["bitswarm-since"] = s.into();
    }
    let v = daemon.rpc("torrent-get", args);
    let ids = |k: &str| -> Vec<u64> {
        let list = v[k].as_array().unwrap_or_else(|| panic!("no {k}: {v}"));
        list.iter().map(|t| t["id"].as_u64().or(t.as_u64()).unwrap()).collect()
    };
    let (listed, removed) = (ids("torrents"), ids("removed"));
    assert!(listed.iter().all(|id| !removed.contains(id)), "a torrent listed and removed at once: {v}");
    (listed, removed)
}

/// torrent-remove of two running torrents whose tracker never answers (so that stopping each
/// takes seconds: the `stopped` announce waits its time out), by a client that goes away once
/// the first has left the list: both are removed all the same, both are in `removed` (with and
/// without `bitswarm-since`) and never at once in an answer's torrents, and neither comes back
/// after a restart. Transmission removes a torrent whatever the client does meanwhile, and puts
/// it in `removed` as it leaves the list.
#[test]
fn a_removal_completes_and_is_reported_even_when_the_client_goes_away() {
    let t = tempdir();
    // Accepts connections (the kernel does) and never answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/announce", silent.local_addr().unwrap());
    let (a, ha) = torrent_of(t.path(), "a.bin", 100_000, 31, &url);
    let (b, hb) = torrent_of(t.path(), "b.bin", 100_000, 32, &url);
    let mut daemon = OurDaemon::start(t.path(), "", None);
    daemon.remote(&["-a", a.to_str().unwrap()]);
    daemon.remote(&["-a", b.to_str().unwrap()]);
    let (x, y) = (id_of(&daemon, &ha), id_of(&daemon, &hb));
    for id in [x, y] {
        daemon.wait_torrent(id, &["status"], "downloading", |v| v["status"] == 4);
    }
    let marker = daemon.rpc("torrent-get", serde_json::json!({"fields": ["id"], "bitswarm-since": 0}))["bitswarm-now"]
        .as_u64()
        .unwrap();
    let sid = daemon.session_id();
    let body = serde_json::json!({"method": "torrent-remove", "arguments": {"ids": [x, y], "delete-local-data": true}})
        .to_string();
    let mut s = std::net::TcpStream::connect(daemon.rpc).unwrap();
    let req = format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Transmission-Session-Id: {sid}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    wait_for(T, "the first torrent out of the list", || {
        (!listed_and_removed(&daemon, None).0.contains(&x)).then_some(())
    });
    // The client gives up on the answer.
    drop(s);
    // Both out of the list and in `removed` (at once: both leave together, before the first
    // has stopped); the torrent-remove's client is gone, and nothing else asks for it.
    let (listed, removed) = listed_and_removed(&daemon, None);
    assert!(removed.contains(&x) && removed.contains(&y) && !listed.contains(&y), "{listed:?} removed {removed:?}");
    let (_, removed) = listed_and_removed(&daemon, Some(marker));
    assert!(removed.contains(&x) && removed.contains(&y), "since the marker: removed {removed:?}");
    let left: Vec<_> = daemon.torrents(&["id"]).iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert!(!left.contains(&x) && !left.contains(&y), "still there: {left:?}");

    daemon.stop();
    let daemon = OurDaemon::start(t.path(), "", None);
    let back = daemon.torrents(&["id", "hashString"]);
    assert!(back.iter().all(|t| t["hashString"] != ha && t["hashString"] != hb), "back after a restart: {back:?}");
    drop(silent);
}
