//! Our peer against real clients, data both ways: our seeder to libtorrent, aria2 and
//! transmission leechers (each also from a magnet link alone, taking the info dictionary from
//! our seeder); libtorrent and aria2 seeders to our leecher (ours also starting from a
//! magnet link, the info dictionary from libtorrent). The peers dial each other
//! directly on loopback (no tracker), on multi-file torrents with nested folders, an empty file and
//! pieces that span files. The bytes that arrive are compared with the original.
//!
//! Message Stream Encryption: libtorrent forcing RC4 dials our seeder, and seeds to our leecher
//! that requires encryption; libtorrent with its default policy (MSE first on outgoing
//! connections) gets in on its first connection; our leecher that prefers MSE falls back to
//! plaintext with a libtorrent that has encryption off; our seeder requiring encryption dials a
//! transmission-cli that requires it.
//!
//! Peer exchange (BEP 11): libtorrent tells our leecher of a peer it never heard of otherwise,
//! and our seeder tells libtorrent of one.

mod common;

use std::process::Command;
use std::time::Duration;

use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(120);

/// The magnet link of a .torrent file, from `bitswarm torrent magnet`.
fn magnet_of(torrent: &std::path::Path) -> String {
    let out = bitswarm().args(["torrent", "magnet"]).arg(torrent).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(magnet.starts_with("magnet:?xt=urn:btih:"), "{magnet}");
    magnet
}

/// The tree of [`TreeSetup`], its torrent announcing to an unreachable tracker.
fn setup(seed: u64) -> TreeSetup {
    TreeSetup::new(seed, &["-t", "http://127.0.0.1:1/announce"])
}

#[test]
fn interop_our_seeder_to_libtorrent_leecher() {
    if !require("libtorrent") {
        return;
    }
    let s = setup(100);
    let (_seed, port) = our_seed(&s.torrent, &s.src, &["--no-tracker"]);
    let (mut lt, _) = lt_peer("leech", &s.torrent, &s.dst, &[format!("127.0.0.1:{port}")]);
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&s.src, &s.dst);
}

#[test]
fn interop_libtorrent_with_only_a_magnet_link_downloads_from_our_seeder() {
    if !require("libtorrent") {
        return;
    }
    let s = setup(107);
    let (_seed, port) = our_seed(&s.torrent, &s.src, &["--no-tracker"]);
    let magnet = magnet_of(&s.torrent);
    // libtorrent gets the info dictionary from our seeder (BEP 9), then the data.
    let (mut lt, _) = lt_peer("leech", std::path::Path::new(&magnet), &s.dst, &[format!("127.0.0.1:{port}")]);
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&s.src, &s.dst);
}

/// libtorrent seeding the tree's `src`, once its data is checked; and where it listens.
fn libtorrent_seeder(s: &TreeSetup) -> (Proc, String) {
    let (lt, port) = lt_seeder(&s.torrent, &s.src, "default", T);
    (lt, format!("127.0.0.1:{port}"))
}

#[test]
fn interop_libtorrent_seeder_to_our_leecher() {
    if !require("libtorrent") {
        return;
    }
    let s = setup(200);
    let (_lt, peer) = libtorrent_seeder(&s);
    let (mut ours, _) = our_join(&s.torrent, &s.dst, &["--no-tracker", "--exit-when-done", "--peer", &peer]);
    let status = ours.wait_exit(T);
    assert!(status.success(), "bitswarm join: {status:?}\n{}", ours.output());
    assert_same_tree(&s.src, &s.dst);
}

/// Once our leecher has every piece, it and the libtorrent seeder have nothing to exchange: the
/// connection ends as redundant (either side may close it first), and our peer, seeding now,
/// does not dial that seeder again. It used to redial it every 2 s for as long as it ran, and
/// libtorrent closed each connection at once. An absence can only be watched for a while: 8 s,
/// four of the old redials.
#[test]
fn interop_our_finished_leecher_leaves_a_libtorrent_seeder_alone() {
    if !require("libtorrent") {
        return;
    }
    let s = setup(205);
    let (_lt, peer) = libtorrent_seeder(&s);
    let (mut ours, _) = our_peer("join", &s.torrent, &s.dst, &["--no-tracker", "--peer", &peer], Some(CONN_LOG));
    ours.wait_line(T, |l| l.contains("download complete"));
    let closed = ours.wait_line(T, |l| l.contains(&format!("{peer}: closed: ")));
    assert!(
        closed.contains("both sides have every piece") || closed.contains("peer closed the connection"),
        "{closed}"
    );
    let watch_until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < watch_until {
        let dials = ours.output().lines().filter(|l| l.contains(&format!("{peer}: connected (outgoing"))).count();
        assert_eq!(dials, 1, "our seeder dialed the libtorrent seeder again:\n{}", ours.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same_tree(&s.src, &s.dst);
}

/// A libtorrent seeder with encryption policy `lt_enc`, and our leecher given only the magnet
/// link, `--peer` to it and `extra`: the info dictionary comes from libtorrent (BEP 9; the
/// link's tracker is unreachable), then the data.
fn our_magnet_join_from_libtorrent(seed: u64, lt_enc: &str, extra: &[&str]) {
    let s = setup(seed);
    let (_lt, lt_port) = lt_seeder(&s.torrent, &s.src, lt_enc, T);
    let magnet = magnet_of(&s.torrent);
    let peer = format!("127.0.0.1:{lt_port}");
    let mut args = vec!["--exit-when-done", "--peer", &peer];
    args.extend_from_slice(extra);
    let (mut ours, _) = our_join(std::path::Path::new(&magnet), &s.dst, &args);
    let status = ours.wait_exit(T);
    let out = ours.output();
    assert!(status.success(), "bitswarm join: {status:?}\n{out}");
    assert!(out.contains(&format!("bytes from {peer}")), "{out}");
    assert_same_tree(&s.src, &s.dst);
}

#[test]
fn interop_our_leecher_starts_from_a_magnet_link_with_a_libtorrent_seeder() {
    if !require("libtorrent") {
        return;
    }
    our_magnet_join_from_libtorrent(201, "default", &[]);
}

#[test]
fn interop_our_leecher_requiring_encryption_takes_the_metadata_from_libtorrent_forcing_rc4() {
    if !require("libtorrent") {
        return;
    }
    // libtorrent takes only RC4 connections: the metadata fetch must dial with MSE too.
    our_magnet_join_from_libtorrent(202, "forced", &["--encryption", "require"]);
}

#[test]
fn interop_our_leecher_preferring_encryption_takes_the_metadata_from_libtorrent_either_way() {
    if !require("libtorrent") {
        return;
    }
    // `prefer` dials with MSE, so a libtorrent that takes only RC4 gives the metadata...
    our_magnet_join_from_libtorrent(203, "forced", &["--encryption", "prefer"]);
    // ...and falls back to the plaintext handshake with one that refuses MSE.
    our_magnet_join_from_libtorrent(204, "disabled", &["--encryption", "prefer"]);
}

/// aria2 leeching `what` (the torrent file or a magnet link) into the tree's `dst`; once it
/// prints a line containing one of `ready`, our seeder dials it. The data must arrive whole.
fn aria2_leeches_from_our_seeder(s: &TreeSetup, what: &std::path::Path, ready: &[&str]) {
    let port = free_tcp_port();
    let mut aria = aria2(false, what, &s.dst, port);
    aria.wait_line(T, |l| ready.iter().any(|r| l.contains(r)));
    let (_seed, _) = our_seed(&s.torrent, &s.src, &["--no-tracker", "--peer", &format!("127.0.0.1:{port}")]);
    let status = aria.wait_exit(T);
    assert!(status.success(), "aria2c: {status:?}\n{}", aria.output());
    assert_same_tree(&s.src, &s.dst);
}

#[test]
fn interop_our_seeder_to_aria2_leecher() {
    if !require("aria2c") {
        return;
    }
    let s = setup(300);
    // Our seeder dials aria2, which takes incoming connections for the torrent.
    aria2_leeches_from_our_seeder(&s, &s.torrent, &["Seeding is over", "[#", "Download Progress"]);
}

#[test]
fn interop_aria2_with_only_a_magnet_link_downloads_from_our_seeder() {
    if !require("aria2c") {
        return;
    }
    let s = setup(301);
    let magnet = magnet_of(&s.torrent);
    // Our seeder dials aria2, which takes the info dictionary from it (BEP 9), then the data.
    aria2_leeches_from_our_seeder(&s, std::path::Path::new(&magnet), &["[#", "Download Progress", "METADATA"]);
}

#[test]
fn interop_transmission_with_only_a_magnet_link_downloads_from_our_seeder() {
    if !require("transmission-cli") {
        return;
    }
    let s = setup(302);
    let port = free_tcp_port();
    let magnet = magnet_of(&s.torrent);
    let mut tr = s.transmission_leecher_of(magnet.as_ref(), "-et", port);
    // Our seeder dials transmission, which takes the info dictionary from it (BEP 9), then the data.
    let (_seed, _) = our_seed(&s.torrent, &s.src, &["--no-tracker", "--peer", &format!("127.0.0.1:{port}")]);
    tr.wait_line(T, |l| l.contains("State changed from \"Incomplete\" to \"Complete\""));
    assert_same_data(&s.src, &s.dst);
}

#[test]
fn interop_aria2_seeder_to_our_leecher() {
    if !require("aria2c") {
        return;
    }
    let s = setup(400);
    let port = free_tcp_port();
    let mut aria = aria2(true, &s.torrent, &s.src, port);
    aria.wait_line(T, |l| l.contains("SEED") || l.contains("Seeding") || l.contains("[#"));
    let (mut ours, _) =
        our_join(&s.torrent, &s.dst, &["--no-tracker", "--exit-when-done", "--peer", &format!("127.0.0.1:{port}")]);
    let status = ours.wait_exit(T);
    assert!(status.success(), "bitswarm join: {status:?}\n{}\naria2:\n{}", ours.output(), aria.output());
    assert_same_tree(&s.src, &s.dst);
}

#[test]
fn interop_our_seeder_to_transmission_leecher() {
    if !require("transmission-cli") {
        return;
    }
    let s = setup(500);
    let port = free_tcp_port();
    let mut tr = s.transmission_leecher("-et", port);
    let (_seed, _) = our_seed(&s.torrent, &s.src, &["--no-tracker", "--peer", &format!("127.0.0.1:{port}")]);
    // transmission-cli logs this state change once every piece is verified and written.
    tr.wait_line(T, |l| l.contains("State changed from \"Incomplete\" to \"Complete\""));
    assert_same_data(&s.src, &s.dst);
}

/// Our seeder (logging its connections) dialed by a libtorrent leecher with encryption policy
/// `enc`; returns the seeder once the data arrived intact.
fn libtorrent_dials_our_seeder(seed: u64, enc: &str) -> Proc {
    let s = setup(seed);
    let (ours, port) = our_peer("seed", &s.torrent, &s.src, &["--no-tracker"], Some(CONN_LOG));
    let (mut lt, _) = lt_peer_enc("leech", &s.torrent, &s.dst, &[format!("127.0.0.1:{port}")], enc);
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&s.src, &s.dst);
    ours
}

/// Our leecher with `--encryption ours_enc` dials a libtorrent seeder with policy `lt_enc`;
/// returns it once it completed with the data intact.
fn our_leecher_dials_libtorrent(seed: u64, lt_enc: &str, ours_enc: &str) -> Proc {
    let s = setup(seed);
    let (mut lt, lt_port) = lt_seeder(&s.torrent, &s.src, lt_enc, T);
    let peer = format!("127.0.0.1:{lt_port}");
    let args = ["--no-tracker", "--exit-when-done", "--encryption", ours_enc, "--peer", &peer];
    let (mut ours, _) = our_peer("join", &s.torrent, &s.dst, &args, Some(CONN_LOG));
    let status = ours.wait_exit(T);
    assert!(status.success(), "bitswarm join: {status:?}\n{}\nlibtorrent:\n{}", ours.output(), lt.output());
    assert_same_tree(&s.src, &s.dst);
    ours
}

#[test]
fn interop_libtorrent_forcing_rc4_dials_our_seeder() {
    if !require("libtorrent") {
        return;
    }
    let mut ours = libtorrent_dials_our_seeder(700, "forced");
    assert_connection(&mut ours, "incoming", "MSE, RC4 stream");
    assert_eq!(failed_handshakes(&mut ours), Vec::<String>::new());
}

#[test]
fn interop_default_libtorrent_gets_in_on_its_first_connection() {
    if !require("libtorrent") {
        return;
    }
    // libtorrent tries MSE first on outgoing connections and offers both methods: we keep the
    // stream plaintext. Nothing was dropped before that connection (lines arrive in order).
    let mut ours = libtorrent_dials_our_seeder(710, "default");
    assert_connection(&mut ours, "incoming", "MSE, plaintext stream");
    assert_eq!(failed_handshakes(&mut ours), Vec::<String>::new());
}

#[test]
fn interop_libtorrent_forcing_rc4_seeds_to_our_leecher_requiring_encryption() {
    if !require("libtorrent") {
        return;
    }
    let mut ours = our_leecher_dials_libtorrent(720, "forced", "require");
    assert_connection(&mut ours, "outgoing", "MSE, RC4 stream");
    assert_eq!(failed_handshakes(&mut ours), Vec::<String>::new());
}

#[test]
fn interop_our_leecher_preferring_mse_falls_back_to_plaintext_with_libtorrent() {
    if !require("libtorrent") {
        return;
    }
    let mut ours = our_leecher_dials_libtorrent(730, "disabled", "prefer");
    assert_connection(&mut ours, "outgoing", "plaintext");
    let failed = failed_handshakes(&mut ours);
    assert!(!failed.is_empty(), "the MSE attempt failed first:\n{}", ours.output());
}

#[test]
fn interop_our_seeder_requiring_encryption_to_transmission_requiring_it() {
    if !require("transmission-cli") {
        return;
    }
    let s = setup(740);
    let port = free_tcp_port();
    let mut tr = s.transmission_leecher("-er", port);
    let peer = format!("127.0.0.1:{port}");
    let args = ["--no-tracker", "--encryption", "require", "--peer", &peer];
    let (mut ours, _) = our_peer("seed", &s.torrent, &s.src, &args, Some(CONN_LOG));
    tr.wait_line(T, |l| l.contains("State changed from \"Incomplete\" to \"Complete\""));
    assert_same_data(&s.src, &s.dst);
    assert_connection(&mut ours, "outgoing", "MSE, RC4 stream");
}

/// A file of `len` bytes and its torrent (32 KiB pieces, no tracker) in a fresh folder; returns
/// the folder, the file's folder and the torrent.
fn pex_setup(seed: u64, len: usize) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempdir();
    let src = t.path().join("src");
    random_file(&src.join("data.bin"), len, seed);
    let torrent = t.path().join("data.torrent");
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "32K"]);
    (t, src, torrent)
}

#[test]
fn interop_libtorrent_tells_our_leecher_of_a_peer() {
    if !require("libtorrent") {
        return;
    }
    let (t, src, torrent) = pex_setup(800, 2 << 20);
    // Our seeder S, slow enough that the libtorrent leecher H is still there when ours joins
    // (H needs 16 s at least; once it has everything it closes its connection to S, and with
    // one peer left it sends no peer exchange).
    let (mut seeder, s_port) =
        our_peer("seed", &torrent, &src, &["--no-tracker", "--max-upload-rate", "128K"], Some(CONN_LOG));
    let (_lt, h_port) = lt_peer("leech", &torrent, &t.path().join("lt"), &[format!("127.0.0.1:{s_port}")]);
    seeder.wait_line(T, |l| l.contains("connected (incoming"));
    // Ours knows only H; H's peer exchange message names S.
    let peer = format!("127.0.0.1:{h_port}");
    let args = ["--no-tracker", "--exit-when-done", "--peer", &peer];
    let dst = t.path().join("dst");
    let (mut ours, _) = our_peer("join", &torrent, &dst, &args, Some(CONN_LOG));
    ours.wait_line(T, |l| l.contains(&format!("127.0.0.1:{h_port}: peer exchange: ")));
    // H tells both of ours of each other: ours dials S, or S dials ours first (S dials nobody
    // it was not told of). Either way one of ours acted on libtorrent's message.
    wait_for(T, "a connection between S and ours made from H's peer exchange", || {
        ours.printed(|l| l.contains(&format!("127.0.0.1:{s_port}: connected (outgoing")))
            .or_else(|| seeder.printed(|l| l.contains("connected (outgoing")))
    });
    let status = ours.wait_exit(T);
    assert!(status.success(), "bitswarm join: {status:?}\n{}", ours.output());
    assert_same_tree(&src, &dst);
}

/// A peer that only listens (`support/bad_peer.py` with `--choked`): it claims the first PIECES
/// pieces (its second argument) but keeps every peer choked, never dials, and prints the client
/// prefix of each peer that dials it.
const LISTENER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/bad_peer.py");

#[test]
fn interop_our_seeder_tells_libtorrent_of_a_peer() {
    if !require("libtorrent") {
        return;
    }
    let (t, src, torrent) = pex_setup(810, 4 << 20);
    // P only listens, so the one way libtorrent can reach it is an address from our seeder H,
    // which dialed P (and so knows where P listens). P claims all but the last of the 128
    // pieces (a seed would have nothing to exchange with H, which closes such connections), and
    // serves nothing: libtorrent gets the data from H alone.
    let mut c = Command::new("python3");
    c.arg(LISTENER).arg("127.0.0.2").arg("127").arg("--choked");
    let mut p = Proc::spawn("listening peer", c);
    let p_port: u16 = p.wait_line(T, |l| l.starts_with("port "))[5..].parse().unwrap();
    let p_addr = format!("127.0.0.2:{p_port}");
    let args = ["--no-tracker", "--max-upload-rate", "512K", "--peer", &p_addr];
    let (_h, h_port) = our_peer("seed", &torrent, &src, &args, None);
    p.wait_line(T, |l| l.starts_with("handshake from -BW"));
    // libtorrent knows only H; H's peer exchange message names P.
    let dst = t.path().join("dst");
    let (mut lt, _) = lt_peer("leech", &torrent, &dst, &[format!("127.0.0.1:{h_port}")]);
    p.wait_line(T, |l| l.starts_with("handshake from -LT"));
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&src, &dst);
}
