//! Our peers under trouble: a peer that sends corrupt data, a seeder that dies and comes back,
//! a leecher killed or interrupted and started again. Peers dial each other directly on loopback.
//! And what our seeder offers in its extension handshake (peer exchange only on public torrents),
//! and how it speaks the fast extension (BEP 6) to a peer that offers it, and not to one that does
//! not.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(120);
const BAD_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/bad_peer.py");

/// One file of `len` bytes under `src`, its torrent with 16 KiB pieces, and an empty `dst`.
fn setup(t: &Path, len: usize) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let src = t.join("src");
    let dst = t.join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    random_file(&src.join("data.bin"), len, 77);
    let torrent = t.join("data.torrent");
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K"]);
    (src, dst, torrent)
}

/// `support/bad_peer.py` on 127.0.0.2 with `args` after the address; returns it and its port.
fn bad_peer(name: &str, args: &[&std::ffi::OsStr]) -> (Proc, u16) {
    let mut c = Command::new("python3");
    c.arg(BAD_PEER).arg("127.0.0.2").args(args);
    let mut p = Proc::spawn(name, c);
    let port = p.wait_line(T, |l| l.starts_with("port "))[5..].parse().unwrap();
    (p, port)
}

/// Parses `have K of N pieces` (printed at start) into K.
fn have_at_start(p: &mut Proc) -> usize {
    let l = p.wait_line(T, |l| l.starts_with("have ") && l.ends_with(" pieces"));
    l.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Waits until a progress line shows at least `pct` percent.
fn wait_progress(p: &mut Proc, pct: f64) {
    p.wait_line(T, |l| l.split('%').next().and_then(|x| x.parse::<f64>().ok()).is_some_and(|x| x >= pct));
}

fn transfer(p: &mut Proc) -> u64 {
    let l = p.wait_line(T, |l| l.starts_with("transfer: downloaded "));
    l["transfer: downloaded ".len()..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn corrupt_peer_is_banned_and_the_download_completes() {
    let t = tempdir();
    let (src, dst, torrent) = setup(t.path(), 4 << 20);
    // The liar listens on 127.0.0.2 (loopback too), so banning its address spares the honest
    // seeder on 127.0.0.1.
    let (_liar, liar_port) = bad_peer("bad peer", &["256".as_ref()]);
    let (_seed, port) = our_seed(&torrent, &src, &["--max-upload-rate", "1M"]);
    let (mut leech, _) = our_join(
        &torrent,
        &dst,
        &["--exit-when-done", "--peer", &format!("127.0.0.2:{liar_port}"), "--peer", &format!("127.0.0.1:{port}")],
    );
    let status = leech.wait_exit(T);
    let out = leech.output();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("banning 127.0.0.2"), "the liar is banned:\n{out}");
    assert!(!out.contains("banning 127.0.0.1"), "the honest seeder is not:\n{out}");
    assert!(out.contains("1 peers banned"), "{out}");
    assert_same_tree(&src, &dst);
}

#[test]
fn a_peer_stalling_with_a_long_pipeline_does_not_hold_up_the_end() {
    let t = tempdir();
    let (src, dst, torrent) = setup(t.path(), 8 << 20);
    // It answers its first 200 requests at once (so our pipeline to it grows long), then none.
    let data = src.join("data.bin");
    let args = ["512".as_ref(), "--stall-after".as_ref(), "200".as_ref(), data.as_os_str(), "16384".as_ref()];
    let (_staller, staller_port) = bad_peer("stalling peer", &args);
    let (_seed, port) = our_seed(&torrent, &src, &["--max-upload-rate", "2M"]);
    let (mut leech, _) = our_join(
        &torrent,
        &dst,
        &["--exit-when-done", "--peer", &format!("127.0.0.2:{staller_port}"), "--peer", &format!("127.0.0.1:{port}")],
    );
    // The seeder alone needs about 3 s. What the staller holds is asked of the seeder once it
    // has waited 3 s (endgame), not when the requests time out after 20 s.
    let status = leech.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", leech.output());
    assert_same_tree(&src, &dst);
}

#[test]
fn seeder_killed_and_restarted_the_download_completes() {
    let t = tempdir();
    let (src, dst, torrent) = setup(t.path(), 4 << 20);
    let (mut seed, port) = our_seed(&torrent, &src, &["--max-upload-rate", "1M"]);
    let (mut leech, _) = our_join(&torrent, &dst, &["--exit-when-done", "--peer", &format!("127.0.0.1:{port}")]);
    wait_progress(&mut leech, 10.0);
    seed.kill();
    // Back on the same port (the one the OS picked the first time), at full speed.
    let mut c = bitswarm();
    c.args(["seed", "--port", &port.to_string(), "--bind", "127.0.0.1", "-d"]).arg(&src).arg(&torrent);
    let mut seed2 = Proc::spawn("bitswarm seed (restarted)", c);
    listening_port(&mut seed2);
    let status = leech.wait_exit(T);
    assert!(status.success(), "{status:?}\n{}", leech.output());
    assert_same_tree(&src, &dst);
}

#[test]
fn leecher_killed_resumes_with_every_verified_piece() {
    let t = tempdir();
    let (src, dst, torrent) = setup(t.path(), 4 << 20);
    let (_seed, port) = our_seed(&torrent, &src, &["--max-upload-rate", "1M"]);
    let peer = format!("127.0.0.1:{port}");
    let (mut leech, _) = our_join(&torrent, &dst, &["--exit-when-done", "--peer", &peer]);
    wait_progress(&mut leech, 25.0);
    leech.kill();

    let (mut again, _) = our_join(&torrent, &dst, &["--exit-when-done", "--peer", &peer]);
    let kept = have_at_start(&mut again);
    assert!(kept >= 64, "at least the 25% seen verified is kept: {kept} of 256");
    let status = again.wait_exit(T);
    assert!(status.success(), "{status:?}\n{}", again.output());
    let fetched = transfer(&mut again);
    let left = (256 - kept) as u64 * 16384;
    assert!(fetched <= left + 16 * 16384, "fetched {fetched} bytes; only {left} were missing");
    assert_same_tree(&src, &dst);
}

#[test]
fn interrupted_leecher_stops_cleanly_and_resumes() {
    let t = tempdir();
    let (src, dst, torrent) = setup(t.path(), 4 << 20);
    let (_seed, port) = our_seed(&torrent, &src, &["--max-upload-rate", "1M"]);
    let peer = format!("127.0.0.1:{port}");
    let (mut leech, _) = our_join(&torrent, &dst, &["--peer", &peer]);
    wait_progress(&mut leech, 25.0);
    leech.interrupt();
    let status = leech.wait_exit(T);
    assert_eq!(status.code(), Some(3), "stopped before completion: {}", leech.output());
    let line = leech.wait_line(T, |l| l.contains("stopped with "));
    let had: usize = line.split("stopped with ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();

    // Every piece counted when it stopped is on disk and verified at the next start.
    let (mut again, _) = our_join(&torrent, &dst, &["--exit-when-done", "--peer", &peer]);
    let kept = have_at_start(&mut again);
    assert!(kept >= had && kept > 0, "kept {kept}, had {had}");
    assert!(again.wait_exit(T).success(), "{}", again.output());
    assert_same_tree(&src, &dst);
}

#[test]
fn the_download_goes_on_while_every_tracker_is_down() {
    let t = tempdir();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    random_file(&src.join("data.bin"), 2 << 20, 91);
    let torrent = t.path().join("data.torrent");
    // Nothing listens on these: an HTTP tracker refusing connections, a UDP one never answering.
    let dead_http = format!("http://127.0.0.1:{}/announce", free_tcp_port());
    let dead_udp = format!("udp://127.0.0.1:{}/announce", free_port());
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &dead_udp, "-t", &dead_http]);
    let (_seed, port) = our_seed(&torrent, &src, &[]);
    let (mut leech, _) = our_join(&torrent, &dst, &["--exit-when-done", "--peer", &format!("127.0.0.1:{port}")]);
    let status = leech.wait_exit(T);
    assert!(status.success(), "{status:?}\n{}", leech.output());
    assert_same_tree(&src, &dst);
}

#[test]
fn bad_magnet_arguments_get_clear_errors() {
    let t = tempdir();
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let cases: [(&str, String, &str); 4] = [
        ("join", format!("magnet:?xt=urn:btih:{hash}"), "names no tracker and no peer"),
        ("join", "magnet:?dn=x".into(), "no BitTorrent info-hash"),
        ("join", "magnet:?xt=urn:btih:zz".into(), "an info-hash is 40 hex digits"),
        ("seed", format!("magnet:?xt=urn:btih:{hash}"), "seed needs the .torrent file"),
    ];
    for (cmd, link, want) in cases {
        let mut c = bitswarm();
        c.args([cmd, "--port", "0", "--bind", "127.0.0.1", "-d"]).arg(t.path()).arg(&link);
        let (st, out, err) = run(c, Duration::from_secs(30));
        assert_eq!(st.code(), Some(2), "{cmd} {link}: {out}{err}");
        assert!(err.contains(want), "{cmd} {link}: {err}");
    }
}

#[test]
fn a_magnet_download_resumes_and_seeds_with_the_metadata_it_saved() {
    let t = tempdir();
    let (src, dst, torrent) = setup(t.path(), 1 << 20);
    let (mut seed, port) = our_seed(&torrent, &src, &[]);
    let out = bitswarm().args(["torrent", "magnet"]).arg(&torrent).output().unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let hash = magnet.split("btih:").nth(1).unwrap()[..40].to_owned();
    let cache = t.path().join("cache");
    let saved = cache.join("bitswarm/metadata").join(format!("{hash}.torrent"));
    let join = |peer: u16| {
        let mut c = bitswarm();
        c.env("XDG_CACHE_HOME", &cache).args(["join", "--exit-when-done", "--port", "0", "--bind", "127.0.0.1"]);
        c.args(["--peer", &format!("127.0.0.1:{peer}"), "-d"]).arg(&dst).arg(&magnet);
        let (st, out, err) = run(c, T);
        assert!(st.success(), "{st:?}\n{out}{err}");
        (out, err)
    };

    // First run: the metadata comes from the seeder and is saved as a .torrent.
    let (out, _) = join(port);
    assert!(out.contains(" bytes from 127.0.0.1:") && out.contains("metadata: saved to "), "{out}");
    assert_same_tree(&src, &dst);
    let m = bitswarm().args(["torrent", "show"]).arg(&saved).output().unwrap();
    assert!(m.status.success() && String::from_utf8_lossy(&m.stdout).contains(&hash), "{m:?}");

    // A damaged copy is reported and replaced by a fresh fetch.
    std::fs::write(&saved, b"d4:infoi1ee").unwrap();
    let (out, err) = join(port);
    assert!(
        err.contains(&format!("{}: ", saved.display())) && err.contains("fetching the metadata from peers"),
        "{err}"
    );
    assert!(out.contains(" bytes from 127.0.0.1:") && out.contains("metadata: saved to "), "{out}");

    // With the seeder gone, no peer can give the metadata: the saved copy does, and the data
    // on disk is complete.
    seed.kill();
    let (out, _) = join(free_tcp_port());
    assert!(out.contains("(saved by an earlier run)") && !out.contains(" bytes from "), "{out}");
    assert!(out.contains("complete: all "), "{out}");

    // `seed` with the link points at the saved .torrent, which seeds.
    let mut c = bitswarm();
    c.env("XDG_CACHE_HOME", &cache).args(["seed", "--port", "0", "-d"]).arg(&dst).arg(&magnet);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains(&format!("an earlier download saved it as {}", saved.display())), "{err}");
    let (mut again, _) = our_seed(&saved, &dst, &[]);
    assert_eq!(have_at_start(&mut again), 64);
}

/// The extension names our seeder offers in its BEP 10 handshake to a peer that dials it.
fn extensions_offered(private: bool) -> Vec<String> {
    use std::io::{Read, Write};
    let t = tempdir();
    let src = t.path().join("src");
    random_file(&src.join("data.bin"), 64 << 10, 21);
    let torrent = t.path().join("data.torrent");
    let extra: &[&str] = if private { &["--private"] } else { &[] };
    let hash = create_torrent(&src.join("data.bin"), &torrent, extra);
    let (_seed, port) = our_seed(&torrent, &src, &["--no-tracker"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let info_hash = bitswarm_metainfo::InfoHash::parse(&hash).unwrap().0;
    s.write_all(&bitswarm_wire::Handshake::new(info_hash, *b"-XX0000-extensions00").encode()).unwrap();
    let mut buf = vec![0u8; bitswarm_wire::HANDSHAKE_LEN];
    s.read_exact(&mut buf).unwrap();
    buf.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the seeder closed the connection before its extension handshake");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Some((msg, used)) = bitswarm_wire::decode(&buf[at..], 1 << 20).unwrap() {
            if let bitswarm_wire::Message::Extended { id: 0, payload } = msg {
                let h = bitswarm_wire::ExtendedHandshake::decode(payload).unwrap();
                return h.extensions.into_iter().map(|(name, _)| name).collect();
            }
            at += used;
        }
        buf.drain(..at);
    }
}

#[test]
fn peer_exchange_is_offered_except_on_private_torrents() {
    let public = extensions_offered(false);
    assert!(public.iter().any(|e| e == "ut_pex") && public.iter().any(|e| e == "ut_metadata"), "{public:?}");
    // BEP 27: a private torrent's peers come from its tracker only.
    let private = extensions_offered(true);
    assert!(!private.iter().any(|e| e == "ut_pex") && private.iter().any(|e| e == "ut_metadata"), "{private:?}");
}

/// Dials our seeder of a 64 KiB torrent (16 KiB pieces) with a handshake that offers the fast
/// extension or not, sends `then` after its own handshake, and returns the messages it sent
/// until it has sent `until` of them (each re-encoded, as bytes), or until it closed the
/// connection (then the last element is empty).
fn talk_to_our_seeder(fast: bool, then: &[bitswarm_wire::Message<'_>], until: usize) -> Vec<Vec<u8>> {
    use std::io::{Read, Write};
    let t = tempdir();
    let src = t.path().join("src");
    random_file(&src.join("data.bin"), 64 << 10, 22);
    let torrent = t.path().join("data.torrent");
    let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K"]);
    let (_seed, port) = our_seed(&torrent, &src, &["--no-tracker"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let info_hash = bitswarm_metainfo::InfoHash::parse(&hash).unwrap().0;
    let mut ours = bitswarm_wire::Handshake::new(info_hash, *b"-XX0000-fastfastfast");
    if !fast {
        ours.reserved[7] = 0;
    }
    s.write_all(&ours.encode()).unwrap();
    let mut buf = vec![0u8; bitswarm_wire::HANDSHAKE_LEN];
    s.read_exact(&mut buf).unwrap();
    let mut out = Vec::new();
    for m in then {
        bitswarm_wire::encode(m, &mut out);
    }
    s.write_all(&out).unwrap();
    buf.clear();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            got.push(Vec::new());
            return got;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Some((msg, used)) = bitswarm_wire::decode(&buf[at..], 1 << 20).unwrap() {
            let mut again = Vec::new();
            bitswarm_wire::encode(&msg, &mut again);
            got.push(again);
            if got.len() == until {
                return got;
            }
            at += used;
        }
        buf.drain(..at);
    }
}

#[test]
fn the_fast_extension_is_spoken_to_peers_that_offer_it() {
    use bitswarm_wire::{BlockRef, Message};
    let encoded = |m: Message<'_>| {
        let mut v = Vec::new();
        bitswarm_wire::encode(&m, &mut v);
        v
    };
    let block = BlockRef { index: 1, begin: 0, length: 16 << 10 };
    // Offering it: "have all" first, and a request while choked is rejected.
    let got = talk_to_our_seeder(true, &[Message::Request(block)], 3);
    assert_eq!(got[0], encoded(Message::HaveAll), "{got:?}");
    assert!(got[1..].contains(&encoded(Message::Reject(block))), "{got:?}");
    // Not offering it: a bitfield first, and no reject.
    let got = talk_to_our_seeder(false, &[Message::Request(block)], 2);
    assert_eq!(got[0], encoded(Message::Bitfield(&[0xf0])), "{got:?}");
    assert!(!got.contains(&encoded(Message::Reject(block))), "{got:?}");
    // A peer that keeps asking while choked is dropped after a bounded number of rejects.
    let flood = vec![Message::Request(block); 2100];
    let got = talk_to_our_seeder(true, &flood, 3000);
    assert_eq!(got.last(), Some(&Vec::new()), "the connection was closed");
    let rejects = got.iter().filter(|m| **m == encoded(Message::Reject(block))).count();
    assert!(rejects <= 2048, "{rejects} rejects before the close");
    // have all / have none from a peer without the extension is a protocol error.
    let got = talk_to_our_seeder(false, &[Message::HaveAll], 3);
    assert_eq!(got.last(), Some(&Vec::new()), "{got:?}");
}

/// `seed` and `join` take several torrents at once, all on one port: one session routes each
/// incoming handshake to its torrent.
#[test]
fn several_torrents_on_one_port() {
    let t = tempdir();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    let mut torrents = Vec::new();
    for (i, len) in [300_000usize, 1 << 20, 70_000].into_iter().enumerate() {
        random_file(&src.join(format!("f{i}.bin")), len, 90 + i as u64);
        let torrent = t.path().join(format!("f{i}.torrent"));
        create_torrent(&src.join(format!("f{i}.bin")), &torrent, &["--piece-size", "16K"]);
        torrents.push(torrent);
    }
    let names: Vec<&std::ffi::OsStr> = torrents.iter().map(|p| p.as_os_str()).collect();
    let mut c = bitswarm();
    c.args(["seed", "--port", "0", "--bind", "127.0.0.1", "--no-tracker", "-d"]).arg(&src).args(&names);
    let mut seed = Proc::spawn("bitswarm seed", c);
    let port = listening_port(&mut seed);
    assert_eq!(seed.seen.iter().filter(|l| l.starts_with("have ")).count(), 3, "{}", seed.output());
    let mut c = bitswarm();
    c.args(["join", "--exit-when-done", "--port", "0", "--bind", "127.0.0.1", "--no-tracker"])
        .args(["--peer", &format!("127.0.0.1:{port}"), "-d"])
        .arg(&dst)
        .args(&names);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{st:?}\n{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("complete: all ")).count(), 3, "{out}");
    assert_same_tree(&src, &dst);
}
