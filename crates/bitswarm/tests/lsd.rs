//! Local Service Discovery (BEP 14) with a real client: peers that know nothing of each other
//! but a torrent (no tracker, no DHT, no peer given) find each other by multicast alone.
//!
//! LSD multicasts, so every test here runs in a network namespace of its own, made by the test
//! (`unshare -rn`, nested in the suite's own): the test re-runs itself there with only `lo`,
//! multicast on and a route for 224.0.0.0/4 through it, and refuses to run anywhere else.
//! Nothing can leave the machine, and tests running at once do not hear each other.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::OurDaemon;
use common::swarm::*;
use common::*;

const LT_LSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_lsd.py");
/// Set in the namespace the test made, for the test binary run there.
const IN_NAMESPACE: &str = "BITSWARM_LSD_NAMESPACE";
/// What a scenario may take inside (the suite ends any test after 3 minutes).
const WITHIN: Duration = Duration::from_secs(90);

/// Runs `body` (the test named `test`) inside a network namespace this makes: the test binary
/// runs itself again there, and this checks that it passed.
fn in_own_namespace(test: &str, body: impl FnOnce()) {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        refuse_outside_a_namespace();
        return body();
    }
    let exe = std::env::current_exe().expect("the test binary");
    let setup =
        "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec \"$0\" \"$@\"";
    let mut c = Command::new("unshare");
    c.args(["-rn", "sh", "-c", setup]).arg(exe).args([test, "--exact", "--nocapture", "--test-threads", "1"]);
    c.env(IN_NAMESPACE, "1");
    let (status, out, err) = run(c, Duration::from_secs(150));
    assert!(
        status.success() && out.contains("1 passed"),
        "{test} in a network namespace of its own (unshare -rn; `ip` from iproute2): {status:?}\n{out}\n{err}"
    );
}

/// Multicast must never leave the machine: only `lo` may exist here.
fn refuse_outside_a_namespace() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
    let ifs: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifs, ["lo"], "refusing to multicast: this is not a loopback-only network namespace");
}

/// `bitswarm seed` or `join` on 127.0.0.1 with LSD on (and, as everywhere in the tests, no
/// DHT); BEP 14's groups.
fn our_peer_lsd(command: &str, what: &[&std::ffi::OsStr], dir: &Path, extra: &[&str]) -> Proc {
    let mut c = bitswarm();
    c.env_remove("BITSWARM_NO_LSD").env("BITSWARM_LOG", "warn,bitswarm_peer::lsd=debug");
    c.args([command, "--port", "0", "--bind", "127.0.0.1", "--max-peers-per-ip", "0", "-d"]).arg(dir).args(what);
    c.args(extra);
    Proc::spawn(&format!("bitswarm {command}"), c)
}

/// libtorrent with LSD its only way to find peers (`lt_lsd.py`); returned once listening.
fn lt_lsd(mode: &str, what: &std::ffi::OsStr, dir: &Path) -> (Proc, u16) {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(LT_LSD).arg(mode).arg(what).arg(dir);
    let mut p = Proc::spawn(&format!("libtorrent {mode}"), c);
    let line = p.wait_line(Duration::from_secs(30), |l| l.starts_with("port "));
    let port = line["port ".len()..].trim().parse().expect("a port");
    (p, port)
}

fn info_hash_of(torrent: &Path) -> String {
    let out = bitswarm().args(["torrent", "magnet"]).arg(torrent).output().unwrap();
    let link = String::from_utf8(out.stdout).unwrap();
    let hash = link.trim().strip_prefix("magnet:?xt=urn:btih:").expect("a magnet link");
    hash.split('&').next().unwrap().to_owned()
}

/// Listens on BEP 14's IPv4 group beside the peers (the port is shared, as peers share it).
struct Sniffer(UdpSocket);

impl Sniffer {
    fn new() -> Sniffer {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        let group = Ipv4Addr::new(239, 192, 152, 143);
        s.bind(&SocketAddr::from((group, 6771)).into()).unwrap();
        s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Sniffer(s.into())
    }

    /// Every announce that has arrived, without waiting (multicast to the machine itself is
    /// delivered before the sender's call returns).
    fn drain(&self, mut each: impl FnMut(&bitswarm_wire::lsd::Announce)) {
        self.0.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.0.recv(&mut buf) {
            if let Ok(a) = bitswarm_wire::lsd::parse(&buf[..n]) {
                each(&a);
            }
        }
        self.0.set_nonblocking(false).unwrap();
    }

    /// Announces heard until one satisfies `done` (each is handed to `each` first); panics
    /// after `within`.
    fn until(
        &self,
        within: Duration,
        mut each: impl FnMut(&bitswarm_wire::lsd::Announce),
        done: impl Fn(&bitswarm_wire::lsd::Announce) -> bool,
    ) {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(n) = self.0.recv(&mut buf) else { continue };
            let Ok(a) = bitswarm_wire::lsd::parse(&buf[..n]) else { continue };
            each(&a);
            if done(&a) {
                return;
            }
        }
        panic!("no such LSD announce within {within:?}");
    }
}

fn hex(h: &[u8; 20]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// (a) A libtorrent seeder and our `join` of an info-hash-only magnet link: the metadata and
/// the data come from libtorrent, found by LSD alone.
#[test]
fn interop_our_join_finds_a_libtorrent_seeder_by_lsd_alone() {
    if !require("libtorrent") {
        return;
    }
    in_own_namespace("interop_our_join_finds_a_libtorrent_seeder_by_lsd_alone", || {
        let s = TreeSetup::new(81, &[]);
        let (mut seed, lt_port) = lt_lsd("seed", s.torrent.as_os_str(), &s.src);
        seed.wait_line(Duration::from_secs(60), |l| l == "seeding");
        let link = format!("magnet:?xt=urn:btih:{}", info_hash_of(&s.torrent));
        let mut join = our_peer_lsd("join", &[link.as_ref()], &s.dst, &["-q", "--exit-when-done"]);
        let status = join.wait_exit(WITHIN);
        let out = join.output();
        assert!(status.success(), "join: {status:?}\n{out}\nlibtorrent:\n{}", seed.output());
        let line = out.lines().find(|l| l.starts_with("metadata: ")).unwrap_or_else(|| panic!("no metadata:\n{out}"));
        assert!(line.ends_with(&format!("from 127.0.0.1:{lt_port}")), "{line}");
        assert!(out.contains(&format!("LSD: peer 127.0.0.1:{lt_port} for ")), "{out}");
        assert_same_tree(&s.src, &s.dst);
    });
}

/// (b) Our seeder and a libtorrent leecher of the magnet link, found by LSD alone.
#[test]
fn interop_libtorrent_finds_our_seeder_by_lsd_alone() {
    if !require("libtorrent") {
        return;
    }
    in_own_namespace("interop_libtorrent_finds_our_seeder_by_lsd_alone", || {
        let s = TreeSetup::new(82, &[]);
        let link = format!("magnet:?xt=urn:btih:{}", info_hash_of(&s.torrent));
        let (mut leech, _) = lt_lsd("leech", link.as_ref(), &s.dst);
        let mut seed = our_peer_lsd("seed", &[s.torrent.as_os_str()], &s.src, &["-q"]);
        let port = listening_port(&mut seed);
        leech.wait_line(WITHIN, |l| l == "done");
        assert_same_tree(&s.src, &s.dst);
        // libtorrent dialed us, at the port our announce named.
        assert!(leech.printed(|l| l == format!("peer 127.0.0.1:{port}")).is_some(), "{}", leech.output());
    });
}

/// (c) A private torrent (BEP 27) is never announced: our seeder of a private and a public
/// torrent multicasts the public one's info-hash alone. Checked once the seeder has announced
/// the public one and passed over the private one (its run started without a registration).
#[test]
fn a_private_torrent_is_never_announced_on_lsd() {
    in_own_namespace("a_private_torrent_is_never_announced_on_lsd", || {
        let s = TreeSetup::new(83, &[]);
        let private = s.dir.path().join("private.torrent");
        let private_hash = create_torrent(&s.src.join("tree"), &private, &["--piece-size", "16K", "--private"]);
        let public_hash = info_hash_of(&s.torrent);
        let sniffer = Sniffer::new();
        let mut seed = our_peer_lsd("seed", &[private.as_os_str(), s.torrent.as_os_str()], &s.src, &["-q"]);
        seed.wait_line(WITHIN, |l| l.contains(&format!("LSD: {private_hash} is private: never announced")));
        seed.wait_line(WITHIN, |l| l.contains(&format!("LSD: announced {public_hash}")));
        let mut heard = Vec::new();
        sniffer.until(
            WITHIN,
            |a| heard.extend(a.info_hashes.iter().map(hex)),
            |a| a.info_hashes.iter().any(|h| hex(h) == public_hash),
        );
        sniffer.drain(|a| heard.extend(a.info_hashes.iter().map(hex)));
        assert!(!heard.contains(&private_hash), "the private torrent was announced: {heard:?}");
    });
}

/// The daemon: LSD on by default, `lpd-enabled` in session-get; session-set turns it off (kept
/// across a restart) and on again, when every torrent is announced afresh; a new peer port is
/// announced at once.
#[test]
fn interop_the_daemon_turns_lsd_on_and_off_over_the_rpc() {
    if !require("libtorrent") {
        return;
    }
    in_own_namespace("interop_the_daemon_turns_lsd_on_and_off_over_the_rpc", || {
        let s = TreeSetup::new(84, &[]);
        let hash = info_hash_of(&s.torrent);
        let sniffer = Sniffer::new();
        let start = || OurDaemon::start_with_lsd(s.dir.path(), "", Some("warn,bitswarm_peer::lsd=debug"));
        let lpd = |d: &OurDaemon| {
            d.rpc("session-get", serde_json::json!({ "fields": ["lpd-enabled"] }))["lpd-enabled"].clone()
        };
        // Its own announces: those that name its peer port (libtorrent announces the torrent too).
        let ours = |d: &OurDaemon| {
            let (port, hash) = (d.peer_port, hash.clone());
            move |a: &bitswarm_wire::lsd::Announce| a.port == port && a.info_hashes.iter().any(|h| hex(h) == hash)
        };
        let mut d = start();
        assert_eq!(lpd(&d), true);
        // A libtorrent seeder of the torrent; the daemon downloads it, its peer found by LSD.
        let (_seed, lt_port) = lt_lsd("seed", s.torrent.as_os_str(), &s.src);
        let added = d.rpc("torrent-add", serde_json::json!({ "filename": common::s(&s.torrent) }));
        let id = added["torrent-added"]["id"].as_u64().expect("an id");
        d.wait_torrent(id, &["percentDone"], "the download", |t| t["percentDone"] == 1.0);
        assert_same_tree(&s.src, &d.downloads);
        let heard = format!("LSD: peer 127.0.0.1:{lt_port} for {hash}");
        d.proc.wait_line(Duration::from_secs(30), |l| l.contains(&heard));
        sniffer.until(WITHIN, |_| {}, ours(&d));
        // Off, and still off after a restart.
        d.rpc("session-set", serde_json::json!({ "lpd-enabled": false }));
        assert_eq!(lpd(&d), false);
        d.stop();
        let d = start();
        assert_eq!(lpd(&d), false);
        // On again: the torrent is announced at once.
        d.rpc("session-set", serde_json::json!({ "lpd-enabled": true }));
        assert_eq!(lpd(&d), true);
        sniffer.until(WITHIN, |_| {}, ours(&d));
        // The peer port moved: announced again at once, with the new port.
        let moved = free_tcp_port();
        d.rpc("session-set", serde_json::json!({ "peer-port": moved }));
        let hash = hash.clone();
        sniffer.until(WITHIN, |_| {}, move |a| a.port == moved && a.info_hashes.iter().any(|h| hex(h) == hash));
    });
}

/// `--no-lsd` wins over what the RPC asks: the daemon has no LSD for its life.
#[test]
fn no_lsd_is_off_for_the_daemons_life() {
    let dir = tempdir();
    let d = OurDaemon::start(dir.path(), "", None);
    let get = || d.rpc("session-get", serde_json::json!({ "fields": ["lpd-enabled"] }))["lpd-enabled"].clone();
    assert_eq!(get(), false);
    d.rpc("session-set", serde_json::json!({ "lpd-enabled": true }));
    assert_eq!(get(), false);
}
