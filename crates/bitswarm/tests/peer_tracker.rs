//! Our peers finding each other through our tracker: a swarm of one seeder and five leechers in
//! which the leechers trade pieces among themselves, and the announce events (started, completed,
//! stopped) arriving at the tracker over HTTP and UDP, checked by scrape; a leecher that has only
//! a magnet link finding the seeder through the tracker and the metadata from the seeder.

mod common;

use std::time::Duration;

use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(150);

#[test]
fn one_seeder_five_leechers_trade_through_our_tracker() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let src = t.path().join("seed");
    let len = 6 << 20;
    random_file(&src.join("data.bin"), len, 5);
    let torrent = t.path().join("data.torrent");
    let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &tracker.http_url()]);

    // The seeder alone could send 1 MiB/s: five leechers (30 MiB in all) finish in time only
    // by trading among themselves.
    let (mut seed, _) = our_seed(&torrent, &src, &["--max-upload-rate", "1M"]);
    let mut leechers: Vec<Proc> = (0..5)
        .map(|i| {
            let dst = t.path().join(format!("leech{i}"));
            std::fs::create_dir_all(&dst).unwrap();
            our_join(&torrent, &dst, &["--exit-when-done"]).0
        })
        .collect();
    let mut uploaded_by_leechers = 0;
    for (i, l) in leechers.iter_mut().enumerate() {
        let status = l.wait_exit(T);
        assert!(status.success(), "leecher {i}: {status:?}\n{}", l.output());
        let (down, up) = transfer_line(l);
        assert!(down >= len as u64, "leecher {i} downloaded {down}");
        uploaded_by_leechers += up;
        assert_same_tree(&src, &t.path().join(format!("leech{i}")));
    }
    seed.interrupt();
    seed.wait_exit(T);
    let (_, seeder_up) = transfer_line(&mut seed);
    let total = 5 * len as u64;
    assert!(
        uploaded_by_leechers >= total / 4,
        "leechers uploaded {uploaded_by_leechers} of {total} bytes to each other (the seeder sent {seeder_up})"
    );
    // Every leecher announced completed; all have stopped.
    tracker.wait_scrape(&hash, (0, 0, 5), "after everyone stopped");
}

#[test]
fn announce_events_reach_the_tracker_over_udp_and_http() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    for (n, url) in [tracker.udp_url(), tracker.http_url()].into_iter().enumerate() {
        let src = t.path().join(format!("seed{n}"));
        random_file(&src.join("data.bin"), 1 << 20, 9 + n as u64);
        let torrent = t.path().join(format!("data{n}.torrent"));
        let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &url]);

        let (mut seed, _) = our_seed(&torrent, &src, &["--max-upload-rate", "512K"]);
        tracker.wait_scrape(&hash, (1, 0, 0), &format!("{url}: seeder started"));
        let dst = t.path().join(format!("leech{n}"));
        let (mut leech, _) = our_join(&torrent, &dst, &[]);
        tracker.wait_scrape(&hash, (1, 1, 0), &format!("{url}: leecher started"));
        leech.wait_line(T, |l| l.starts_with("complete: "));
        tracker.wait_scrape(&hash, (2, 0, 1), &format!("{url}: leecher completed"));
        leech.interrupt();
        assert!(leech.wait_exit(T).success(), "{}", leech.output());
        tracker.wait_scrape(&hash, (1, 0, 1), &format!("{url}: leecher stopped"));
        seed.interrupt();
        assert!(seed.wait_exit(T).success());
        tracker.wait_scrape(&hash, (0, 0, 1), &format!("{url}: seeder stopped"));
        assert_same_tree(&src, &dst);
    }
}

#[test]
fn a_magnet_link_finds_our_seeder_through_our_udp_tracker() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let src = t.path().join("seed");
    random_file(&src.join("data.bin"), 3 << 20, 11);
    let torrent = t.path().join("data.torrent");
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "32K", "-t", &tracker.udp_url()]);
    let (_seed, _) = our_seed(&torrent, &src, &[]);
    let out = bitswarm().args(["torrent", "magnet"]).arg(&torrent).output().unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // No --peer: the tracker named in the link gives the seeder, the seeder the metadata (BEP 9).
    let dst = t.path().join("leech");
    std::fs::create_dir_all(&dst).unwrap();
    let (mut leech, _) = our_join(std::path::Path::new(&magnet), &dst, &["--exit-when-done"]);
    let status = leech.wait_exit(T);
    let out = leech.output();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("metadata: ") && out.contains(" bytes from 127.0.0.1:"), "{out}");
    assert_same_tree(&src, &dst);
}
