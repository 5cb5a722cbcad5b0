//! Local Service Discovery (BEP 14) with a real client: peers that know nothing of each other
//! but a torrent (no tracker, no DHT, no peer given) find each other by multicast alone.
//!
//! LSD multicasts, so every test here runs in a network namespace of its own, made by the test
//! (`unshare -rn`, nested in the suite's own): the test re-runs itself there with only `lo`,
//! multicast on and a route for 224.0.0.0/4 through it, and refuses to run anywhere else.
//! Nothing can leave the machine, and tests running at once do not hear each other.
//!
//! IPv6 multicast cannot use `lo` (joining a group there fails: no such device), so the IPv6
//! tests make a veth pair inside their namespace, `bsA` (fd00::1) and `bsB` (fd00::2), both
//! ends there: a link from the namespace to itself, with no way out. They have no IPv4 address
//! and no IPv4 multicast route, so BEP 14's IPv4 group cannot be joined there (no such device):
//! whatever is found is found over IPv6.

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
/// The network namespace the test started in (`/proc/self/ns/net`'s link), for the check that
/// the one it runs in is another.
const OUTER_NETNS: &str = "BITSWARM_LSD_OUTER_NETNS";
/// The two ends of the veth pair an IPv6 test made in its namespace.
const VETH: &str = "BITSWARM_LSD_VETH";
/// What a scenario may take inside (the suite ends any test after 3 minutes).
const WITHIN: Duration = Duration::from_secs(90);

/// The namespace of the IPv4 tests: `lo` alone, with multicast on and 224.0.0.0/4 through it.
const SETUP_V4: &str = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo";
/// The namespace of the IPv6 tests: `lo` and a veth pair made there (both ends there), `bsA`
/// with fd00::1 and `bsB` with fd00::2 (no duplicate address detection to wait for). A program
/// that names no interface for its multicast (libtorrent, for IPv6) gets the one of the route:
/// a route of lower metric makes that `bsB`, so it is fd00::2's.
const SETUP_V6: &str = "ip link set lo up && ip link add bsA type veth peer name bsB \
    && ip link set bsA multicast on && ip link set bsB multicast on \
    && ip -6 addr add fd00::1/64 dev bsA nodad && ip -6 addr add fd00::2/64 dev bsB nodad \
    && ip link set bsA up && ip link set bsB up \
    && ip -6 route add multicast ff00::/8 dev bsB table local metric 1";
/// Our side's address in the IPv6 namespace, and the other's (libtorrent's, or our second peer's).
const A6: &str = "fd00::1";
const B6: &str = "fd00::2";

/// Runs `body` (the test named `test`) inside a network namespace this makes (set up by
/// `setup`): the test binary runs itself again there, and this checks that it passed.
fn in_own_namespace(test: &str, setup: &str, body: impl FnOnce()) {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        refuse_outside_a_namespace();
        return body();
    }
    let exe = std::env::current_exe().expect("the test binary");
    let mut c = Command::new("unshare");
    c.args(["-rn", "sh", "-c", &format!("{setup} && exec \"$0\" \"$@\"")]).arg(exe);
    c.args([test, "--exact", "--nocapture", "--test-threads", "1"]);
    c.env(IN_NAMESPACE, "1").env(OUTER_NETNS, netns()).env(VETH, "bsA bsB");
    let (status, out, err) = run(c, Duration::from_secs(150));
    assert!(
        status.success() && out.contains("1 passed"),
        "{test} in a network namespace of its own (unshare -rn; `ip` from iproute2): {status:?}\n{out}\n{err}"
    );
}

/// The network namespace this process is in (`net:[INODE]`).
fn netns() -> String {
    std::fs::read_link("/proc/self/ns/net").expect("/proc/self/ns/net").to_string_lossy().into_owned()
}

/// Multicast must never leave the machine: only `lo` may exist here, or besides it only the
/// veth pair the test made, with both ends here (a link from this namespace to itself), in a
/// namespace that is not the one the test started in. `tests/support/lt_lsd.py` checks the same.
fn refuse_outside_a_namespace() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
    let mut ifs: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    if ifs == ["lo"] {
        return;
    }
    let list = format!("{ifs:?}");
    let refuse = |why: &str| -> ! { panic!("refusing to multicast: {why} (interfaces here: {list})") };
    let made: Vec<String> = std::env::var(VETH).unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    if made.len() != 2 || std::env::var(OUTER_NETNS).ok().is_none_or(|outer| outer == netns()) {
        refuse("this is not a network namespace the test made");
    }
    let mut expected: Vec<&str> = made.iter().map(String::as_str).chain(["lo"]).collect();
    expected.sort();
    ifs.sort();
    if ifs != expected {
        refuse("interfaces other than lo and the test's veth pair");
    }
    let out = Command::new("ip").args(["-j", "-d", "link", "show"]).output().expect("ip (iproute2)");
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("ip -j link's JSON");
    for (a, b) in [(&made[0], &made[1]), (&made[1], &made[0])] {
        let l = links.iter().find(|l| l["ifname"] == **a).unwrap_or_else(|| refuse("a veth end is missing"));
        if l["linkinfo"]["info_kind"] != "veth" || l["link"] != **b || l.get("link_netnsid").is_some() {
            refuse(&format!("{a} is not a veth whose other end ({b}) is in this namespace: {l}"));
        }
    }
}

/// `bitswarm seed` or `join` on 127.0.0.1 with LSD on (and, as everywhere in the tests, no
/// DHT); BEP 14's groups.
fn our_peer_lsd(command: &str, what: &[&std::ffi::OsStr], dir: &Path, extra: &[&str]) -> Proc {
    our_peer_lsd_on("127.0.0.1", command, what, dir, extra)
}

/// The same bound to `bind`.
fn our_peer_lsd_on(bind: &str, command: &str, what: &[&std::ffi::OsStr], dir: &Path, extra: &[&str]) -> Proc {
    let mut c = bitswarm();
    c.env_remove("BITSWARM_NO_LSD").env("BITSWARM_LOG", "warn,bitswarm_peer::lsd=debug");
    c.args([command, "--port", "0", "--bind", bind, "--max-peers-per-ip", "0", "-d"]).arg(dir).args(what);
    c.args(extra);
    Proc::spawn(&format!("bitswarm {command} on {bind}"), c)
}

/// libtorrent with LSD its only way to find peers (`lt_lsd.py`); returned once listening.
fn lt_lsd(mode: &str, what: &std::ffi::OsStr, dir: &Path) -> (Proc, u16) {
    lt_lsd_on("127.0.0.1", mode, what, dir)
}

/// The same listening on `ip` alone (its LSD on that family's group alone).
fn lt_lsd_on(ip: &str, mode: &str, what: &std::ffi::OsStr, dir: &Path) -> (Proc, u16) {
    let mut c = Command::new("/usr/bin/python3");
    let listen = if ip.contains(':') { format!("[{ip}]:0") } else { format!("{ip}:0") };
    c.arg(LT_LSD).arg(mode).arg(what).arg(dir).env("LT_LSD_LISTEN", listen);
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

/// An announce heard, and who sent it.
struct Heard {
    announce: bitswarm_wire::lsd::Announce,
    from: SocketAddr,
    raw: Vec<u8>,
}

impl std::ops::Deref for Heard {
    type Target = bitswarm_wire::lsd::Announce;
    fn deref(&self) -> &Self::Target {
        &self.announce
    }
}

/// Listens on one of BEP 14's groups beside the peers (the port is shared, as peers share it).
struct Sniffer(UdpSocket);

impl Sniffer {
    /// On the IPv4 group, on `lo`.
    fn new() -> Sniffer {
        Sniffer::on(bitswarm_wire::lsd::GROUP_V4)
    }

    /// On `group`: IPv4's joined on `lo`, IPv6's on the interface of the route (with every
    /// group joined by anyone on the machine heard too, Linux's default).
    fn on(group: &str) -> Sniffer {
        use socket2::{Domain, Protocol, Socket, Type};
        let group: SocketAddr = group.parse().unwrap();
        let s = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        if group.is_ipv6() {
            s.set_only_v6(true).unwrap();
        }
        s.bind(&group.into()).unwrap();
        match group.ip() {
            std::net::IpAddr::V4(g) => s.join_multicast_v4(&g, &Ipv4Addr::LOCALHOST).unwrap(),
            std::net::IpAddr::V6(g) => s.join_multicast_v6(&g, 0).unwrap(),
        }
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Sniffer(s.into())
    }

    fn recv(&self, buf: &mut [u8]) -> Option<Heard> {
        let (n, from) = self.0.recv_from(buf).ok()?;
        let announce = bitswarm_wire::lsd::parse(&buf[..n]).ok()?;
        Some(Heard { announce, from, raw: buf[..n].to_vec() })
    }

    /// Every announce that has arrived, without waiting (multicast to the machine itself is
    /// delivered before the sender's call returns).
    fn drain(&self, mut each: impl FnMut(&Heard)) {
        self.0.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = self.0.recv_from(&mut buf) {
            if let Ok(announce) = bitswarm_wire::lsd::parse(&buf[..n]) {
                each(&Heard { announce, from, raw: buf[..n].to_vec() });
            }
        }
        self.0.set_nonblocking(false).unwrap();
    }

    /// Announces heard until one satisfies `done` (each is handed to `each` first); panics
    /// after `within`.
    fn until(&self, within: Duration, mut each: impl FnMut(&Heard), done: impl Fn(&Heard) -> bool) {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Some(h) = self.recv(&mut buf) else { continue };
            each(&h);
            if done(&h) {
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
    in_own_namespace("interop_our_join_finds_a_libtorrent_seeder_by_lsd_alone", SETUP_V4, || {
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
    in_own_namespace("interop_libtorrent_finds_our_seeder_by_lsd_alone", SETUP_V4, || {
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
    in_own_namespace("a_private_torrent_is_never_announced_on_lsd", SETUP_V4, || {
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

/// The IPv4 group could not be joined (the IPv6 namespace has no IPv4 multicast route): what
/// `p` found, it found over IPv6.
fn assert_no_ipv4_lsd(out: &str) {
    let v4 = format!("LSD: cannot use {}: ", bitswarm_wire::lsd::GROUP_V4);
    assert!(out.contains(&v4), "the IPv4 group was usable: {out}");
    assert!(out.contains(&format!("LSD: listening on {}, announcing from ", bitswarm_wire::lsd::GROUP_V6)), "{out}");
}

/// (a) over IPv6 alone: a libtorrent seeder on fd00::2 and our `join` on fd00::1 of an
/// info-hash-only magnet link; the metadata and the data come from libtorrent, found by IPv6 LSD.
#[test]
fn interop_our_join_finds_a_libtorrent_seeder_by_ipv6_lsd_alone() {
    if !require("libtorrent") {
        return;
    }
    in_own_namespace("interop_our_join_finds_a_libtorrent_seeder_by_ipv6_lsd_alone", SETUP_V6, || {
        let s = TreeSetup::new(85, &[]);
        let (mut seed, lt_port) = lt_lsd_on(B6, "seed", s.torrent.as_os_str(), &s.src);
        seed.wait_line(Duration::from_secs(60), |l| l == "seeding");
        let link = format!("magnet:?xt=urn:btih:{}", info_hash_of(&s.torrent));
        let mut join = our_peer_lsd_on(A6, "join", &[link.as_ref()], &s.dst, &["-q", "--exit-when-done"]);
        let status = join.wait_exit(WITHIN);
        let out = join.output();
        assert!(status.success(), "join: {status:?}\n{out}\nlibtorrent:\n{}", seed.output());
        let line = out.lines().find(|l| l.starts_with("metadata: ")).unwrap_or_else(|| panic!("no metadata:\n{out}"));
        assert!(line.ends_with(&format!("from [{B6}]:{lt_port}")), "{line}");
        assert!(out.contains(&format!("LSD: peer [{B6}]:{lt_port} for ")), "{out}");
        assert_no_ipv4_lsd(&out);
        assert_same_tree(&s.src, &s.dst);
    });
}

/// (b) over IPv6 alone: our seeder on fd00::1 and a libtorrent leecher of the magnet link on
/// fd00::2; libtorrent dials the source address of our announce, which is our listening one.
#[test]
fn interop_libtorrent_finds_our_seeder_by_ipv6_lsd_alone() {
    if !require("libtorrent") {
        return;
    }
    in_own_namespace("interop_libtorrent_finds_our_seeder_by_ipv6_lsd_alone", SETUP_V6, || {
        let s = TreeSetup::new(86, &[]);
        let link = format!("magnet:?xt=urn:btih:{}", info_hash_of(&s.torrent));
        let sniffer = Sniffer::on(bitswarm_wire::lsd::GROUP_V6);
        let (mut leech, lt_port) = lt_lsd_on(B6, "leech", link.as_ref(), &s.dst);
        // libtorrent's LSD is up (it announces from the socket it listens on) before our
        // seeder's first announce, which it must hear.
        sniffer.until(WITHIN, |_| {}, |a| a.port == lt_port);
        let mut seed = our_peer_lsd_on(A6, "seed", &[s.torrent.as_os_str()], &s.src, &["-q"]);
        let port = listening_port(&mut seed);
        leech.wait_line(WITHIN, |l| l == "done");
        assert_same_tree(&s.src, &s.dst);
        assert!(leech.printed(|l| l == format!("peer [{A6}]:{port}")).is_some(), "{}", leech.output());
        assert_no_ipv4_lsd(&seed.output());
    });
}

/// Ours to ours over IPv6 alone, with a sniffer on the IPv6 group: our seeder (fd00::1) of a
/// private and a public torrent announces the public one alone, in a well-formed announce from
/// its listening address (Host the IPv6 group, Port its port, its cookie); our `join` (fd00::2)
/// of the public one's info-hash-only magnet link downloads it from that address.
#[test]
fn our_join_finds_our_seeder_by_ipv6_lsd_and_private_torrents_are_never_announced() {
    in_own_namespace(
        "our_join_finds_our_seeder_by_ipv6_lsd_and_private_torrents_are_never_announced",
        SETUP_V6,
        || {
            let s = TreeSetup::new(87, &[]);
            let private = s.dir.path().join("private.torrent");
            let private_hash = create_torrent(&s.src.join("tree"), &private, &["--piece-size", "16K", "--private"]);
            let public_hash = info_hash_of(&s.torrent);
            let sniffer = Sniffer::on(bitswarm_wire::lsd::GROUP_V6);
            // The joiner listens first: the seeder's first announce is at its start.
            let link = format!("magnet:?xt=urn:btih:{public_hash}");
            let mut join = our_peer_lsd_on(B6, "join", &[link.as_ref()], &s.dst, &["-q", "--exit-when-done"]);
            join.wait_line(WITHIN, |l| l.contains(&format!("LSD: listening on {}", bitswarm_wire::lsd::GROUP_V6)));
            let mut seed = our_peer_lsd_on(A6, "seed", &[private.as_os_str(), s.torrent.as_os_str()], &s.src, &["-q"]);
            let port = listening_port(&mut seed);
            seed.wait_line(WITHIN, |l| l.contains(&format!("LSD: {private_hash} is private: never announced")));
            let mut heard = Vec::new();
            let mut ours = None;
            let public = |a: &Heard| a.port == port && a.info_hashes.iter().any(|h| hex(h) == public_hash);
            let mut each = |a: &Heard| {
                heard.extend(a.info_hashes.iter().map(hex));
                if public(a) {
                    ours.get_or_insert((a.from, String::from_utf8_lossy(&a.raw).into_owned(), a.cookie.clone()));
                }
            };
            sniffer.until(WITHIN, &mut each, public);
            sniffer.drain(each);
            assert!(!heard.contains(&private_hash), "the private torrent was announced: {heard:?}");
            let status = join.wait_exit(WITHIN);
            let out = join.output();
            assert!(status.success(), "join: {status:?}\n{out}\nseeder:\n{}", seed.output());
            assert!(out.contains(&format!("LSD: peer [{A6}]:{port} for {public_hash}")), "{out}");
            assert_no_ipv4_lsd(&out);
            assert_same_tree(&s.src, &s.dst);
            // The announce as sent, and from where.
            let (from, raw, cookie) = ours.expect("our announce");
            assert_eq!(from.ip().to_string(), A6, "{raw:?}");
            assert!(raw.starts_with("BT-SEARCH * HTTP/1.1\r\nHost: [ff15::efc0:988f]:6771\r\n"), "{raw:?}");
            assert!(raw.contains(&format!("\r\nPort: {port}\r\n")), "{raw:?}");
            assert!(raw.contains(&format!("\r\nInfohash: {public_hash}\r\n")), "{raw:?}");
            assert!(cookie.is_some_and(|c| c.len() == 8), "{raw:?}");
            assert!(raw.ends_with("\r\n\r\n\r\n"), "{raw:?}");
        },
    );
}

/// The daemon: LSD on by default, `lpd-enabled` in session-get; session-set turns it off (kept
/// across a restart) and on again, when every torrent is announced afresh; a new peer port is
/// announced at once.
#[test]
fn interop_the_daemon_turns_lsd_on_and_off_over_the_rpc() {
    if !require("libtorrent") {
        return;
    }
    in_own_namespace("interop_the_daemon_turns_lsd_on_and_off_over_the_rpc", SETUP_V4, || {
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
            move |a: &Heard| a.port == port && a.info_hashes.iter().any(|h| hex(h) == hash)
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
