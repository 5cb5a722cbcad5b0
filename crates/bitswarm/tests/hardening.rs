//! What a hostile peer, a careless user and a loaded machine found, each held off: one address
//! cannot take every slot, useless connections make room, hostile .torrent files are refused in
//! bounded time and memory, a closed or full stdout ends a command cleanly, a finished download
//! holds exactly the torrent's bytes, files that cannot exist together are refused, and a stop
//! during the first check exits as documented.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(120);

/// A file of `len` random bytes under `t/src`, its torrent (16 KiB pieces), and its info-hash.
fn one_file(t: &Path, len: usize, seed: u64) -> (std::path::PathBuf, std::path::PathBuf, [u8; 20]) {
    let src = t.join("src");
    random_file(&src.join("data.bin"), len, seed);
    let torrent = t.join("data.torrent");
    let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "--no-date"]);
    (src, torrent, bitswarm_metainfo::InfoHash::parse(&hash).unwrap().0)
}

/// Dials `to` from `from` with a BitTorrent handshake as `peer_id`. Some(stream) once the peer
/// took us in (its handshake and its first message came), None when it closed the connection.
fn handshake_from(from: &str, to: SocketAddr, info_hash: [u8; 20], peer_id: [u8; 20]) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from.parse().unwrap(), 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&bitswarm_wire::Handshake::new(info_hash, peer_id).encode()).ok()?;
    let mut buf = vec![0u8; bitswarm_wire::HANDSHAKE_LEN + 5];
    s.read_exact(&mut buf).ok()?;
    Some(s)
}

fn peer_id(n: usize) -> [u8; 20] {
    let mut id = *b"-AA0000-000000000000";
    id[8..].copy_from_slice(format!("{n:012}").as_bytes());
    id
}

/// libtorrent leeching into `dst` from `peer`, listening on and dialing from `host`.
fn lt_leecher_on(host: &str, torrent: &Path, dst: &Path, peer: SocketAddr) -> Proc {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(LT_PEER).arg("leech").arg(torrent).arg(dst).arg(peer.to_string());
    c.env("LT_PEER_HOST", host).env("LT_PEER_TIMEOUT", "90");
    Proc::spawn("libtorrent leech", c)
}

/// Sixty connections from one address that finish the handshake and then say nothing used to
/// take every slot of a seeder: a libtorrent leecher on another address got nothing for as long
/// as they stayed. One address now holds one connection.
#[test]
fn interop_one_address_cannot_lock_libtorrent_out() {
    if !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let (src, torrent, info_hash) = one_file(t.path(), 2 << 20, 31);
    let (mut seed, port) = our_peer_on("127.0.0.1", "seed", &torrent, &src, &[], Some(CONN_LOG));
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let held: Vec<TcpStream> = (0..60).filter_map(|i| handshake_from("127.0.0.1", to, info_hash, peer_id(i))).collect();
    assert_eq!(held.len(), 1, "connections the seeder took in from one address");
    let dst = t.path().join("dst");
    let mut lt = lt_leecher_on("127.0.0.2", &torrent, &dst, to);
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&src, &dst);
    // libtorrent came from its own address, as another host would.
    seed.wait_line(T, |l| l.contains("127.0.0.2:") && l.contains("connected (incoming"));
    drop(held);
}

/// With every slot taken by connections that have done nothing for 30 s, a newcomer takes the
/// place of one of them (libtorrent's peer turnover); before that, it is turned away.
#[test]
fn interop_useless_connections_make_room_for_libtorrent() {
    if !require("libtorrent") {
        return;
    }
    let t = tempdir();
    let (src, torrent, info_hash) = one_file(t.path(), 1 << 20, 32);
    let log = "warn,bitswarm_peer=debug";
    let (mut seed, port) = our_peer_on("127.0.0.1", "seed", &torrent, &src, &["--max-peers", "8"], Some(log));
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let held: Vec<TcpStream> = (1..=8)
        .map(|i| handshake_from(&format!("127.0.1.{i}"), to, info_hash, peer_id(i)).expect("a free slot"))
        .collect();
    let filled = Instant::now();
    assert!(handshake_from("127.0.1.9", to, info_hash, peer_id(9)).is_none(), "a ninth peer got in");
    // The connections count as useless once they have been silent for 30 s.
    std::thread::sleep(Duration::from_secs(31).saturating_sub(filled.elapsed()));
    let dst = t.path().join("dst");
    let mut lt = lt_leecher_on("127.0.0.2", &torrent, &dst, to);
    lt.wait_line(T, |l| l == "done");
    assert_same_tree(&src, &dst);
    seed.wait_line(T, |l| l.contains("without use, to make room"));
    drop(held);
}

/// A connection from another address that presents the peer id of a connected peer is refused;
/// the connected one goes on (peer ids are public: trackers hand them out).
#[test]
fn a_peer_id_claimed_from_another_address_displaces_nothing() {
    let t = tempdir();
    let (src, torrent, info_hash) = one_file(t.path(), 256 << 10, 33);
    let (_seed, port) = our_peer_on("127.0.0.1", "seed", &torrent, &src, &[], None);
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    // An id below ours (ours start with "-BW"): the rule for two connections to the same peer
    // would have kept the newer one.
    let id = peer_id(7);
    let mut first = handshake_from("127.0.0.3", to, info_hash, id).expect("the first connection is taken in");
    assert!(handshake_from("127.0.0.4", to, info_hash, id).is_none(), "the impostor was taken in");
    // The first connection is alive: interested, it is unchoked.
    let mut out = Vec::new();
    bitswarm_wire::encode(&bitswarm_wire::Message::Interested, &mut out);
    first.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let unchoked = loop {
        let mut chunk = [0u8; 4096];
        let n = first.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break false;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        let mut seen = false;
        while let Some((m, used)) = bitswarm_wire::decode(&buf[at..], 1 << 20).unwrap() {
            seen |= matches!(m, bitswarm_wire::Message::Unchoke);
            at += used;
        }
        if seen {
            break true;
        }
        buf.drain(..at);
    };
    assert!(unchoked, "the first connection was closed");
}

/// CPU seconds and peak memory (KiB) of the children waited for so far.
fn children_usage() -> (f64, i64) {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime) + secs(u.ru_stime), u.ru_maxrss)
}

/// `torrent show` of FILE: status 2 and one line saying `want`, within a second of CPU and
/// under `max_mib` of memory.
fn refused_quickly(file: &Path, want: &str, max_mib: i64) {
    let (cpu_before, _) = children_usage();
    let mut c = bitswarm();
    c.args(["torrent", "show"]).arg(file);
    let (st, out, err) = run(c, Duration::from_secs(60));
    let (cpu_after, peak_kib) = children_usage();
    assert_eq!(st.code(), Some(2), "{}: {out}{err}", file.display());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(want), "{err}");
    assert!(cpu_after - cpu_before < 1.0, "{}: {:.2} s of CPU", file.display(), cpu_after - cpu_before);
    assert!(peak_kib < max_mib << 10, "{}: {} MiB", file.display(), peak_kib >> 10);
}

/// A .torrent file that never ends (/dev/zero, a FIFO fed from it) is refused at the size cap,
/// and one with a million files while counting its values, before anything is built.
#[test]
fn endless_and_exploding_torrent_files_are_refused_in_bounded_time_and_memory() {
    let t = tempdir();
    let mut big = b"d4:infod5:filesl".to_vec();
    for _ in 0..1_000_000 {
        big.extend_from_slice(b"d6:lengthi1e4:pathl1:xee");
    }
    big.extend_from_slice(b"e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee");
    let million = t.path().join("million.torrent");
    std::fs::write(&million, &big).unwrap();
    drop(big);
    refused_quickly(&million, "more than 3000000 values", 100);
    refused_quickly(Path::new("/dev/zero"), "more than 64.00 MiB (67108864 bytes), the most a .torrent file", 200);
    let fifo = t.path().join("fifo.torrent");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut feeder = Proc::spawn("feeder", {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("cat /dev/zero > {}", fifo.display()));
        c
    });
    refused_quickly(&fifo, "the most a .torrent file may be here", 200);
    feeder.kill();
    // The cap can be raised: then the count of values refuses the million-file torrent.
    let mut c = bitswarm();
    c.args(["torrent", "show", "--max-torrent-size", "1K"]).arg(&million);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("more than 1.00 KiB (1024 bytes)") && err.contains("--max-torrent-size"), "{err}");
}

/// Every command that prints: a closed stdout ends it quietly (no panic, status as usual), a
/// full one with a one-line error.
#[test]
fn a_closed_or_full_stdout_never_panics() {
    let t = tempdir();
    let tree = t.path().join("src/tree");
    make_tree(&tree, 34);
    let torrent = t.path().join("tree.torrent");
    create_torrent(&tree, &torrent, &["--piece-size", "16K"]);
    let (ts, tt) = (s(&torrent), s(&t.path().join("src")));
    let tree_dir = s(&tree);
    let new_torrent = s(&t.path().join("new.torrent"));
    let commands: Vec<Vec<&str>> = vec![
        vec!["torrent", "show", &ts],
        vec!["torrent", "show", "--json", &ts],
        vec!["torrent", "magnet", &ts],
        vec!["torrent", "verify", "-q", "-d", &tt, &ts],
        vec!["torrent", "create", "-q", "-f", "-o", &new_torrent, &tree_dir],
        vec!["--help"],
    ];
    // A pipe whose reader is gone before the command starts: its first line meets EPIPE, as
    // when `| head -1` has exited (but without the race of when that happens).
    let closed_pipe = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    for args in &commands {
        let out = bitswarm().args(args).stdin(Stdio::null()).stdout(closed_pipe()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?} with stdout closed: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // A full disk.
        let full = bitswarm()
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let (st, err) = (full.status, String::from_utf8_lossy(&full.stderr));
        if args[0] == "--help" {
            continue; // clap prints help itself, and ignores errors doing so
        }
        assert_eq!(st.code(), Some(1), "{args:?} > /dev/full: {err}");
        assert_eq!(err.trim(), "bitswarm: stdout: No space left on device (os error 28)", "{args:?}");
    }
    // A seeder whose stdout is closed stops, as after Ctrl-C.
    let mut c = bitswarm();
    c.args(["seed", "--port", "0", "--bind", "127.0.0.1", "-d", &tt, &ts]);
    c.stdin(Stdio::null()).stdout(closed_pipe()).stderr(Stdio::null());
    let st = run_with_stdout(c, T);
    assert!(st.success(), "{st:?}");
}

/// Runs `cmd` (its stdout set by the caller) to its end within `timeout`.
fn run_with_stdout(mut cmd: Command, timeout: Duration) -> std::process::ExitStatus {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} went on with its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A download over a file longer than the torrent's leaves exactly the torrent's bytes, whether
/// the data was complete at the start or came from a peer; `verify` names a file that is too
/// long.
#[test]
fn a_finished_download_holds_exactly_the_torrents_bytes() {
    let t = tempdir();
    let (src, torrent, _) = one_file(t.path(), 300_000, 35);
    let data = std::fs::read(src.join("data.bin")).unwrap();
    let verify = |dir: &Path| {
        let mut c = bitswarm();
        c.args(["torrent", "verify", "-q", "-d"]).arg(dir).arg(&torrent);
        run(c, T)
    };
    let longer = |dir: &Path, body: &[u8]| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("data.bin"), [body, &[7u8; 1000][..]].concat()).unwrap();
    };
    // Complete already, with 1000 bytes more: verify says so, join cuts them.
    let whole = t.path().join("whole");
    longer(&whole, &data);
    let (st, out, err) = verify(&whole);
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(out.contains("data.bin: 301000 bytes, 1000 more than the torrent's 300000"), "{out}");
    assert!(err.contains("every piece is good, but 1 file(s) are longer than the torrent says"), "{err}");
    let mut c = bitswarm();
    c.args(["join", "--exit-when-done", "--no-tracker", "--port", "0", "--bind", "127.0.0.1", "-d"]);
    c.arg(&whole).arg(&torrent);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{out}{err}");
    assert_eq!(std::fs::read(whole.join("data.bin")).unwrap(), data);
    let (st, out, _) = verify(&whole);
    assert!(st.success() && out.contains("all data is present and correct"), "{out}");
    // Garbage, 1000 bytes longer: downloaded from our seeder, then cut.
    let dst = t.path().join("dst");
    longer(&dst, &vec![1u8; data.len()]);
    let (_seed, port) = our_seed(&torrent, &src, &[]);
    let (mut leech, _) = our_join(&torrent, &dst, &["--exit-when-done", "--peer", &format!("127.0.0.1:{port}")]);
    assert!(leech.wait_exit(T).success(), "{}", leech.output());
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), data);
}

/// A disk error names its path: a file where a folder must go, a disk that is full.
#[test]
fn disk_errors_name_the_path() {
    let setup = TreeSetup::new(36, &[]);
    let (_seed, port) = our_seed(&setup.torrent, &setup.src, &[]);
    let peer = format!("127.0.0.1:{port}");
    let join = |dst: &Path| {
        let mut c = bitswarm();
        c.args(["join", "--exit-when-done", "--no-tracker", "--port", "0", "--bind", "127.0.0.1", "--peer", &peer]);
        c.arg("-d").arg(dst).arg(&setup.torrent);
        run(c, T)
    };
    // `sub` must be a folder; a file is there.
    let blocked = setup.dst.join("blocked");
    std::fs::create_dir_all(blocked.join("tree")).unwrap();
    std::fs::write(blocked.join("tree/sub"), b"in the way").unwrap();
    let (st, out, err) = join(&blocked);
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(err.contains(&format!("{}: File exists", blocked.join("tree/sub").display())), "{err}");
    // a.bin on a full disk (/dev/full takes no bytes).
    let full = setup.dst.join("full");
    std::fs::create_dir_all(full.join("tree")).unwrap();
    std::os::unix::fs::symlink("/dev/full", full.join("tree/a.bin")).unwrap();
    let (st, out, err) = join(&full);
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(err.contains(&format!("{}: No space left on device", full.join("tree/a.bin").display())), "{err}");
}

/// SIGTERM or SIGINT while the data on disk is being checked ends the check at once, and the
/// command exits as a stop does: 0 for `seed`, 3 for `join`.
#[test]
fn a_stop_during_the_first_check_exits_as_documented() {
    let t = tempdir();
    // 32 GiB of holes take many seconds to hash (the piece hashes are made up).
    let len: u64 = 32 << 30;
    let piece: u64 = 16 << 20;
    let dir = t.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join("big.bin")).unwrap().set_len(len).unwrap();
    let mut e = bitswarm_bencode::Encoder::new();
    e.begin_dict().str("info").begin_dict();
    e.str("length").int(len as i64).str("name").str("big.bin").str("piece length").int(piece as i64);
    e.str("pieces").bytes(&vec![1u8; (len / piece) as usize * 20]);
    e.end().end();
    let torrent = t.path().join("big.torrent");
    std::fs::write(&torrent, e.finish()).unwrap();
    for (command, sig, code) in [("seed", "TERM", 0), ("join", "INT", 3)] {
        let mut c = bitswarm();
        c.args([command, "--no-tracker", "--port", "0", "--bind", "127.0.0.1", "-d"]).arg(&dir).arg(&torrent);
        let mut p = Proc::spawn(command, c);
        p.wait_line(T, |l| l.starts_with("checking: "));
        signal(p.child.id(), sig);
        let stopped = Instant::now();
        let st = p.wait_exit(Duration::from_secs(30));
        assert_eq!(st.code(), Some(code), "{command}: {st:?}\n{}", p.output());
        assert!(stopped.elapsed() < Duration::from_secs(10), "{command} took {:?} to stop", stopped.elapsed());
        if command == "join" {
            assert!(p.output().contains("stopped during the check of the data on disk"), "{}", p.output());
        }
    }
}

/// `--max-peers 0` would serve no one: refused. `verify` calls pieces that were never written
/// (zeros in a file made to its full size) missing, not bad.
#[test]
fn small_ones_max_peers_zero_and_never_written_pieces() {
    let t = tempdir();
    let (_, torrent, _) = one_file(t.path(), 100_000, 37);
    let mut c = bitswarm();
    c.args(["seed", "--max-peers", "0", "-d", "."]).arg(&torrent);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("--max-peers") && err.contains("0 is not in 1.."), "{err}");
    let zeros = t.path().join("zeros");
    std::fs::create_dir_all(&zeros).unwrap();
    std::fs::File::create(zeros.join("data.bin")).unwrap().set_len(100_000).unwrap();
    let mut c = bitswarm();
    c.args(["torrent", "verify", "-q", "-d"]).arg(&zeros).arg(&torrent);
    let (st, out, _) = run(c, T);
    assert_eq!(st.code(), Some(1));
    assert!(out.contains("pieces: 0 good, 7 missing, 0 bad (of 7)"), "{out}");
}
