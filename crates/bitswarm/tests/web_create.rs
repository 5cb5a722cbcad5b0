//! The daemon's web page beyond the list (issue 18, items 3, 5 and 6), in headless Chromium
//! driven by Selenium (`tests/web/create_test.py`): a torrent made on the daemon's machine and
//! seeded, its magnet link copied and fetched by libtorrent, the swarm shown by the tracker the
//! daemon runs; the files to fetch chosen before a torrent starts; the alternative speed
//! limits, the watch folder and a torrent's seeding limits set in the page and kept across a
//! restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::*;
use common::swarm::*;
use common::*;

const CREATE_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/create_test.py");

/// Runs create_test.py with these arguments; fails the test with its output unless it says ok.
fn page_test(dir: &std::path::Path, daemon: &mut OurDaemon, args: &[&std::ffi::OsStr], within: Duration) {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(CREATE_TEST)
        .args(args)
        // Chromium's profile and caches in the test's folder, not the user's.
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"));
    let mut ui = Proc::spawn("create_test.py", c);
    let last = ui.wait_line(within, |l| l == "ok" || l.starts_with("FAILED"));
    let status = ui.wait_exit(Duration::from_secs(30));
    let out = ui.output();
    assert!(
        last == "ok" && status.success(),
        "the web page test failed: {status:?}\n{out}\n--- daemon:\n{}",
        daemon.proc.output()
    );
    eprintln!("{out}");
}

#[test]
fn interop_web_page_creates_a_torrent_that_libtorrent_fetches_and_shows_the_daemons_tracker() {
    if !require("libtorrent") || !require("chromium") || !require("chromedriver") || !require("selenium") {
        return;
    }
    let t = tempdir();
    let config = "[tracker]\nenabled = true\nhttp = \"127.0.0.1:0\"\nudp = \"off\"\n";
    let mut daemon = OurDaemon::start(t.path(), config, None);
    let line = daemon.proc.wait_line(Duration::from_secs(10), |l| l.starts_with("tracker: "));
    assert!(line.starts_with("tracker: http://127.0.0.1:") && line.ends_with("/announce"), "{line}");
    let share = daemon.downloads.join("share");
    random_file(&share.join("a.bin"), 300_000, 21);
    random_file(&share.join("sub/b.bin"), 200_000, 22);
    let leech = t.path().join("leech");
    std::fs::create_dir_all(&leech).unwrap();
    let url = format!("http://{}/", daemon.rpc);
    let port = daemon.peer_port.to_string();
    page_test(
        t.path(),
        &mut daemon,
        &["create".as_ref(), url.as_ref(), share.as_os_str(), LT_PEER.as_ref(), leech.as_os_str(), port.as_ref()],
        Duration::from_secs(200),
    );
    assert_same_tree(&share, &leech.join("share"));
    daemon.stop();
}

#[test]
fn interop_web_page_chooses_files_before_adding_and_keeps_settings_across_a_restart() {
    if !require("libtorrent") || !require("chromium") || !require("chromedriver") || !require("selenium") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let src = t.path().join("src");
    // Each file a whole number of pieces: the unticked one shares no piece with the others.
    let tree = src.join("tree");
    random_file(&tree.join("a/one.bin"), 65536, 31);
    random_file(&tree.join("a/two.bin"), 49152, 32);
    random_file(&tree.join("b/three.bin"), 32768, 33);
    let torrent = t.path().join("tree.torrent");
    create_torrent(&tree, &torrent, &["--piece-size", "16K", "-t", &tracker.http_url()]);
    let (_seeder, _) = lt_seeder(&torrent, &src, "default", Duration::from_secs(60));
    let pick = src.join("pick");
    random_file(&pick.join("x.bin"), 32768, 35);
    random_file(&pick.join("y.bin"), 16384, 36);
    let pick_torrent = t.path().join("pick.torrent");
    let pick_hash = create_torrent(&pick, &pick_torrent, &["--piece-size", "16K", "-t", &tracker.http_url()]);
    let magnet = format!("magnet:?xt=urn:btih:{pick_hash}&dn=pick&tr={}", tracker.http_url());
    let (_seeder2, _) = lt_seeder(&pick_torrent, &src, "default", Duration::from_secs(60));
    let mut daemon = OurDaemon::start(t.path(), "", None);
    let url = format!("http://{}/", daemon.rpc);
    page_test(
        t.path(),
        &mut daemon,
        &["choose".as_ref(), url.as_ref(), torrent.as_os_str(), "two.bin".as_ref(), magnet.as_ref(), "y.bin".as_ref()],
        Duration::from_secs(200),
    );
    let got = daemon.downloads.join("tree");
    for f in ["a/one.bin", "b/three.bin"] {
        assert!(std::fs::read(tree.join(f)).unwrap() == std::fs::read(got.join(f)).unwrap(), "{f} differs");
    }
    assert!(!got.join("a/two.bin").exists(), "the unticked file was not written");
    let got = daemon.downloads.join("pick");
    assert!(std::fs::read(pick.join("x.bin")).unwrap() == std::fs::read(got.join("x.bin")).unwrap(), "x.bin differs");
    assert!(!got.join("y.bin").exists(), "the file unticked once the metadata came was not written");

    let watch = t.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    page_test(
        t.path(),
        &mut daemon,
        &["settings".as_ref(), url.as_ref(), watch.as_os_str(), "tree".as_ref()],
        Duration::from_secs(90),
    );
    daemon.stop();
    let mut daemon = OurDaemon::start(t.path(), "", None);
    let url = format!("http://{}/", daemon.rpc);
    page_test(
        t.path(),
        &mut daemon,
        &["settings-after".as_ref(), url.as_ref(), watch.as_os_str(), "tree".as_ref()],
        Duration::from_secs(90),
    );
    // The watch folder set in the page is watched after the restart.
    random_file(&src.join("watched.bin"), 20_000, 34);
    let watched = t.path().join("watched.bin.torrent");
    create_torrent(&src.join("watched.bin"), &watched, &["--piece-size", "16K"]);
    std::fs::copy(&watched, watch.join("watched.bin.torrent")).unwrap();
    wait_for(Duration::from_secs(30), "the watched torrent added", || {
        let names = daemon.torrents(&["name"]);
        (watch.join("watched.bin.torrent.added").exists() && names.iter().any(|n| n["name"] == "watched.bin"))
            .then_some(())
    });
    daemon.stop();
}
