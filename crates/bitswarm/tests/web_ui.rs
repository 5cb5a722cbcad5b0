//! The daemon's web page (issue 18) in a real browser: headless Chromium driven by Selenium
//! (`tests/web/ui_test.py`) adds a torrent by upload, one by magnet link and a file dragged
//! onto the page (Chromium's own drag events), watches both complete from libtorrent seeders,
//! shows a third seeder in a torrent's peers, filters, sorts, stops and starts (by mouse and by
//! keyboard alone), sets a limit and removes with the data, and checks the page at a phone's
//! width and in dark mode; any error in the browser's console fails it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::*;
use common::swarm::*;
use common::*;

const UI_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/ui_test.py");

#[test]
fn interop_web_page_in_chromium_adds_watches_stops_limits_and_removes() {
    if !require("libtorrent") || !require("chromium") || !require("chromedriver") || !require("selenium") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let url = tracker.http_url();
    let src = t.path().join("src");
    random_file(&src.join("upload.bin"), 1_500_000, 11);
    random_file(&src.join("magnet.bin"), 1_100_000, 12);
    let up = t.path().join("upload.bin.torrent");
    create_torrent(&src.join("upload.bin"), &up, &["--piece-size", "16K", "-t", &url]);
    let mt = t.path().join("magnet.bin.torrent");
    let hm = create_torrent(&src.join("magnet.bin"), &mt, &["--piece-size", "16K", "-t", &url]);
    make_tree(&t.path().join("tree"), 13);
    let tree = t.path().join("tree.torrent");
    create_torrent(&t.path().join("tree"), &tree, &["--piece-size", "16K", "-t", &url]);
    // Downloaded slowly (a limit set in the page), to look at its seeder in the details.
    random_file(&src.join("peers.bin"), 3_000_000, 14);
    let pt = t.path().join("peers.bin.torrent");
    create_torrent(&src.join("peers.bin"), &pt, &["--piece-size", "16K", "-t", &url]);
    let (_seed_up, _) = lt_seeder(&up, &src, "default", Duration::from_secs(60));
    let (_seed_m, _) = lt_seeder(&mt, &src, "default", Duration::from_secs(60));
    let (_seed_p, seeder_port) = lt_seeder(&pt, &src, "default", Duration::from_secs(60));
    let mut daemon = OurDaemon::start(t.path(), "", None);
    let page = daemon.proc.wait_line(Duration::from_secs(10), |l| l.starts_with("web page: "));
    assert_eq!(page, format!("web page: http://{}/", daemon.rpc));
    std::fs::create_dir_all(&daemon.downloads).unwrap();

    let mut c = Command::new("/usr/bin/python3");
    c.arg(UI_TEST)
        .arg(format!("http://{}/", daemon.rpc))
        .arg(&up)
        .arg(format!("magnet:?xt=urn:btih:{hm}&dn=magnet.bin&tr={url}"))
        .arg(&daemon.downloads)
        .arg(&tree)
        .arg(&pt)
        .arg(seeder_port.to_string())
        // Chromium's profile and caches in the test's folder, not the user's.
        .env("HOME", t.path())
        .env("XDG_CONFIG_HOME", t.path().join("config"))
        .env("XDG_CACHE_HOME", t.path().join("cache"));
    let mut ui = Proc::spawn("ui_test.py", c);
    let last = ui.wait_line(Duration::from_secs(240), |l| l == "ok" || l.starts_with("FAILED"));
    let status = ui.wait_exit(Duration::from_secs(30));
    let out = ui.output();
    assert!(
        last == "ok" && status.success(),
        "the web page test failed: {status:?}\n{out}\n--- daemon:\n{}",
        daemon.proc.output()
    );
    eprintln!("{out}");
    assert!(!daemon.downloads.join("magnet.bin").exists(), "magnet.bin was deleted");
    assert!(daemon.downloads.join("upload.bin").exists(), "upload.bin was kept");
    daemon.stop();
}

/// Behind a password, the browser sends it for the page and the page's RPC calls alike.
#[test]
fn interop_web_page_behind_a_password() {
    if !require("chromium") || !require("chromedriver") || !require("selenium") {
        return;
    }
    let t = tempdir();
    let hash = password_hash("s3cret");
    let config = format!("[rpc]\nuser = \"me\"\npassword_hash = \"{hash}\"\n");
    let daemon = OurDaemon::start(t.path(), &config, None);
    // Without the password, neither the page nor its script.
    for path in ["/transmission/web/", "/transmission/web/app.js"] {
        let (status, _, _) =
            daemon.http(&format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 401, "{path}");
    }
    let hash_hex = "cd".repeat(20);
    let mut c = Command::new("/usr/bin/python3");
    c.arg(UI_TEST)
        .arg("--auth")
        .arg(format!("http://me:s3cret@{}/", daemon.rpc))
        .arg(format!("magnet:?xt=urn:btih:{hash_hex}&dn=private.bin"))
        .arg(&daemon.downloads)
        .env("HOME", t.path())
        .env("XDG_CONFIG_HOME", t.path().join("config"))
        .env("XDG_CACHE_HOME", t.path().join("cache"));
    let mut ui = Proc::spawn("ui_test.py --auth", c);
    let last = ui.wait_line(Duration::from_secs(120), |l| l == "ok" || l.starts_with("FAILED"));
    let status = ui.wait_exit(Duration::from_secs(30));
    let out = ui.output();
    assert!(last == "ok" && status.success(), "the web page test failed: {status:?}\n{out}");
    eprintln!("{out}");
    let daemon = daemon.with_auth("me", "s3cret");
    let listed = daemon.torrents(&["hashString", "status"]);
    assert_eq!(listed, vec![serde_json::json!({"hashString": hash_hex, "status": 0})]);
}

/// 10,000 torrents: listed within seconds with only the rows in view in the page, sorted and
/// searched quickly, and polled with answers that carry only what changed, also in the minute
/// after they were added (in which the RPC counts them as recently active), the poll held by
/// the daemon while nothing changes.
#[test]
fn interop_web_page_with_10000_torrents() {
    if !require("chromium") || !require("chromedriver") || !require("selenium") {
        return;
    }
    let t = tempdir();
    let daemon = OurDaemon::start(t.path(), "", None);
    let mut c = Command::new("/usr/bin/python3");
    c.arg(UI_TEST)
        .args(["--many", "10000"])
        .arg(format!("http://{}/", daemon.rpc))
        .env("HOME", t.path())
        .env("XDG_CONFIG_HOME", t.path().join("config"))
        .env("XDG_CACHE_HOME", t.path().join("cache"));
    let mut ui = Proc::spawn("ui_test.py --many", c);
    let last = ui.wait_line(Duration::from_secs(150), |l| l == "ok" || l.starts_with("FAILED"));
    let status = ui.wait_exit(Duration::from_secs(30));
    let out = ui.output();
    assert!(last == "ok" && status.success(), "the web page test failed: {status:?}\n{out}");
    eprintln!("{out}");
}
