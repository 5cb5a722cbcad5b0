//! The Mainline DHT with real clients, on loopback alone: magnet links that name nothing but
//! the info-hash (no tracker, no peer) download through the DHT. Each test builds a DHT of its
//! own: a `bitswarm dht` node as the router everybody joins through, every node on its own
//! 127.0.X.1 (a /24 of its own, so that the one-node-per-address rules of the DHTs see
//! separate hosts). Nothing here knows the public routers.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::swarm::*;
use common::*;

const LT_DHT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_dht.py");
const WITHIN: Duration = Duration::from_secs(120);

/// `bitswarm dht` on `host`, a free port, joining through nobody; returns it with its address.
fn our_router(host: &str) -> (Proc, String) {
    let mut c = bitswarm();
    c.args(["dht", "--no-bootstrap", "--status-every", "0", "--port", "0", "--bind", host]);
    let mut p = Proc::spawn("bitswarm dht", c);
    let line = p.wait_line(Duration::from_secs(30), |l| l.starts_with("DHT node on UDP "));
    let addr = line.trim_start_matches("DHT node on UDP ").trim().to_owned();
    (p, addr)
}

/// `bitswarm seed` or `join` on `host`, its DHT node joining through `router` only.
fn our_peer_dht<S: AsRef<std::ffi::OsStr>>(
    command: &str,
    host: &str,
    what: &std::ffi::OsStr,
    dir: &Path,
    router: &str,
    extra: &[S],
) -> Proc {
    let mut c = bitswarm();
    c.env_remove("BITSWARM_NO_DHT");
    c.env("BITSWARM_LOG", "warn,bitswarm_peer::dht=debug");
    c.args([command, "--port", "0", "--bind", host, "--dht-router", router, "-d"]).arg(dir).arg(what).args(extra);
    Proc::spawn(&format!("bitswarm {command}"), c)
}

/// A libtorrent session on `host` whose DHT joins through `router` alone (`lt_dht.py`).
fn lt_dht(mode: &str, what: &std::ffi::OsStr, dir: &Path, host: &str, router: &str) -> Proc {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(LT_DHT).arg(mode).arg(what).arg(dir).args([host, router]);
    let mut p = Proc::spawn(&format!("libtorrent {mode}"), c);
    p.wait_line(Duration::from_secs(30), |l| l.starts_with("port "));
    p
}

fn magnet(info_hash: &str) -> String {
    format!("magnet:?xt=urn:btih:{info_hash}")
}

/// The info-hash of a torrent made by [`TreeSetup`] (no tracker in it).
fn info_hash_of(torrent: &Path) -> String {
    let out = bitswarm().args(["torrent", "magnet"]).arg(torrent).output().unwrap();
    let link = String::from_utf8(out.stdout).unwrap();
    let hash = link.trim().strip_prefix("magnet:?xt=urn:btih:").expect("a magnet link");
    hash.split('&').next().unwrap().to_owned()
}

/// `join` of an info-hash-only magnet link ended by itself (`--exit-when-done`); the metadata
/// came from the seeder at `seeder_host`, found through the DHT.
fn assert_joined_from(join: &mut Proc, seeder_host: &str) {
    let status = join.wait_exit(WITHIN);
    let out = join.output();
    assert!(status.success(), "join: {status:?}\n{out}");
    let line = out.lines().find(|l| l.starts_with("metadata: ")).unwrap_or_else(|| panic!("no metadata line:\n{out}"));
    assert!(line.contains(&format!("from {seeder_host}:")), "{line}");
}

/// Also: a private torrent (BEP 27) seeded by the same session is never announced on the DHT.
#[test]
fn our_join_downloads_a_magnet_link_from_our_seeder_through_the_dht_alone() {
    let s = TreeSetup::new(71, &[]);
    let private = s.dir.path().join("private.torrent");
    let private_hash = create_torrent(&s.src.join("tree"), &private, &["--piece-size", "16K", "--private"]);
    let (_router, router) = our_router("127.0.11.1");
    let extra = ["-q".as_ref(), private.as_os_str()];
    let mut seed = our_peer_dht("seed", "127.0.12.1", s.torrent.as_os_str(), &s.src, &router, &extra);
    listening_port(&mut seed);
    let public_hash = info_hash_of(&s.torrent);
    let link = magnet(&public_hash);
    let mut join = our_peer_dht("join", "127.0.13.1", link.as_ref(), &s.dst, &router, &["-q", "--exit-when-done"]);
    assert_joined_from(&mut join, "127.0.12.1");
    assert_same_tree(&s.src, &s.dst);
    let out = seed.output();
    assert!(out.contains(&format!("DHT: {public_hash} announced to ")), "{out}");
    assert!(!out.contains(&format!("DHT: {private_hash}")), "the private torrent went to the DHT:\n{out}");
}

/// The same over IPv6 alone (BEP 32: `nodes6`, 18-byte peers): router, seeder and join all on
/// ::1, each node with an IPv6-only socket.
#[test]
fn our_join_downloads_a_magnet_link_through_an_ipv6_dht() {
    let s = TreeSetup::new(78, &[]);
    let (_router, router) = our_router("::1");
    assert!(router.starts_with("[::1]:"), "{router}");
    let mut seed = our_peer_dht("seed", "::1", s.torrent.as_os_str(), &s.src, &router, &["-q"]);
    listening_port(&mut seed);
    let hash = info_hash_of(&s.torrent);
    seed.wait_line(Duration::from_secs(60), |l| l.contains(&format!("DHT: {hash} announced to ")));
    let link = magnet(&hash);
    let mut join = our_peer_dht("join", "::1", link.as_ref(), &s.dst, &router, &["-q", "--exit-when-done"]);
    assert_joined_from(&mut join, "[::1]");
    assert_same_tree(&s.src, &s.dst);
}

/// Dual stack: nodes bound to `::` (one IPv6 socket that takes IPv4 too, for the DHT node and
/// the peer listener alike). A `bitswarm dht` router on `::` is the IPv4 DHT's router at
/// 127.0.0.1 and the IPv6 one's at ::1; a seeder on `::` joins both through it; a `join` on
/// IPv4 alone and one on IPv6 alone each find the seeder through their own family's DHT and
/// download from it. Both dual-stack nodes answer `find_node` asked over either family, and
/// BEP 32's `want`: the router with nodes of both families, the seeder with the IPv4 client.
#[test]
fn a_dual_stack_seeder_serves_ipv4_and_ipv6_clients_through_both_dhts() {
    let s = TreeSetup::new(79, &[]);
    let (_router, router) = our_router("::");
    let router_port: u16 = router.strip_prefix("[::]:").unwrap_or_else(|| panic!("{router}")).parse().unwrap();
    let (router4, router6) = (format!("127.0.0.1:{router_port}"), format!("[::1]:{router_port}"));
    let extra = ["-q", "--dht-router", &router6];
    let mut seed = our_peer_dht("seed", "::", s.torrent.as_os_str(), &s.src, &router4, &extra);
    let port = listening_port(&mut seed);
    let line = seed.wait_line(Duration::from_secs(30), |l| l.contains("DHT node on UDP "));
    let node = line.rsplit_once("DHT node on UDP ").unwrap().1.trim().to_owned();
    let seed_port: u16 = node.strip_prefix("[::]:").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
    let hash = info_hash_of(&s.torrent);
    let link = magnet(&hash);
    let clients = [("127.0.102.1", &router4, s.dst.clone()), ("::1", &router6, s.dir.path().join("dst6"))];
    // The clients keep running (seeding): their nodes stay in the seeder's table.
    let mut joins = Vec::new();
    for (host, router, dst) in &clients {
        let mut join = our_peer_dht("join", host, link.as_ref(), dst, router, &["-q"]);
        join.wait_line(WITHIN, |l| l.starts_with("complete: seeding"));
        let out = join.output();
        let from = out.lines().find(|l| l.starts_with("metadata: ")).unwrap_or_else(|| panic!("no metadata:\n{out}"));
        // The seeder at its address in the client's family.
        let seeder = if host.contains(':') { format!("[::1]:{port}") } else { format!("127.0.0.1:{port}") };
        assert!(from.ends_with(&format!(" from {seeder}")), "{host}: {from}");
        assert_same_tree(&s.src, dst);
        joins.push(join);
    }
    // The IPv4 client's connection came to the seeder's IPv6 socket as ::ffff:127.0.102.1: the
    // seeder takes it as the IPv4 address it is (its PORT message's node too).
    seed.wait_line(WITHIN, |l| l.contains("DHT: node 127.0.102.1:"));
    let out = seed.output();
    assert!(!out.contains("::ffff:"), "{out}");
    for (node, both) in [(router_port, true), (seed_port, false)] {
        for (ours, to) in [("127.0.103.1:0", format!("127.0.0.1:{node}")), ("[::1]:0", format!("[::1]:{node}"))] {
            let nodes = find_node_wanting_both(ours, &to, |nodes| {
                let has = |v6: bool| nodes.iter().any(|n| n.addr.is_ipv6() == v6);
                has(false) && (has(true) || !both)
            });
            let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
            if both {
                assert!(addrs.iter().any(|a| a.starts_with("[::1]:")), "{to}: {addrs:?}");
            } else {
                assert!(addrs.iter().any(|a| a.starts_with("127.0.102.1:")), "{to}: {addrs:?}");
            }
        }
    }
    for mut j in joins {
        j.kill();
    }
}

/// `find_node` with BEP 32's `want` n4 and n6, sent from `ours` to the node at `to` until its
/// answer's nodes satisfy `enough` (they fill as the node learns others); panics after
/// [`WITHIN`] with the last answer.
fn find_node_wanting_both(
    ours: &str,
    to: &str,
    enough: impl Fn(&[bitswarm_dht::NodeInfo]) -> bool,
) -> Vec<bitswarm_dht::NodeInfo> {
    use bitswarm_dht::krpc::{Body, Message, Method, Want};
    let sock = std::net::UdpSocket::bind(ours).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let target = bitswarm_dht::NodeId([0; 20]);
    let mut q = Message::query(b"w1".to_vec(), bitswarm_dht::NodeId([7; 20]), Method::FindNode { target });
    if let Body::Query(q) = &mut q.body {
        q.want = Want { n4: true, n6: true };
    }
    let deadline = std::time::Instant::now() + WITHIN;
    let mut last = None;
    loop {
        assert!(std::time::Instant::now() < deadline, "no answer to `want` from {to} as expected; the last: {last:?}");
        sock.send_to(&q.encode(), to).unwrap();
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = Message::decode(&buf[..n]);
            if let Ok(Message { body: Body::Response(r), .. }) = &m
                && enough(&r.nodes)
            {
                return r.nodes.clone();
            }
            last = Some(m);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn interop_our_join_downloads_a_magnet_link_from_a_libtorrent_seeder_through_the_dht_alone() {
    if !require("libtorrent") {
        return;
    }
    let s = TreeSetup::new(72, &[]);
    let (_router, router) = our_router("127.0.21.1");
    let mut seed = lt_dht("seed", s.torrent.as_os_str(), &s.src, "127.0.22.1", &router);
    seed.wait_line(Duration::from_secs(60), |l| l == "seeding");
    let link = magnet(&info_hash_of(&s.torrent));
    let mut join = our_peer_dht("join", "127.0.23.1", link.as_ref(), &s.dst, &router, &["-q", "--exit-when-done"]);
    assert_joined_from(&mut join, "127.0.22.1");
    assert_same_tree(&s.src, &s.dst);
}

#[test]
fn interop_libtorrent_downloads_a_magnet_link_from_our_seeder_through_the_dht_alone() {
    if !require("libtorrent") {
        return;
    }
    let s = TreeSetup::new(73, &[]);
    let (_router, router) = our_router("127.0.31.1");
    let mut seed = our_peer_dht("seed", "127.0.32.1", s.torrent.as_os_str(), &s.src, &router, &["-q"]);
    listening_port(&mut seed);
    let link = magnet(&info_hash_of(&s.torrent));
    let mut leech = lt_dht("leech", link.as_ref(), &s.dst, "127.0.33.1", &router);
    leech.wait_line(WITHIN, |l| l == "done");
    assert_same_tree(&s.src, &s.dst);
    // BEP 5 on the peer connection: we set the DHT bit, libtorrent sent its node's port.
    let port = seed.wait_line(Duration::from_secs(30), |l| l.contains("from a peer's PORT message"));
    assert!(port.contains("node 127.0.33.1:"), "{port}");
}

#[test]
fn interop_aria2_downloads_a_magnet_link_from_our_seeder_through_the_dht_alone() {
    if !require("aria2c") {
        return;
    }
    let s = TreeSetup::new(74, &[]);
    let (_router, router) = our_router("127.0.41.1");
    let mut seed = our_peer_dht("seed", "127.0.42.1", s.torrent.as_os_str(), &s.src, &router, &["-q"]);
    listening_port(&mut seed);
    let link = magnet(&info_hash_of(&s.torrent));
    // aria2 listens on every address (on loopback alone in the tests' namespace); it joins
    // through our router only, and keeps its routing table in the test's folder.
    let mut c = Command::new("aria2c");
    c.arg(format!("--dir={}", s.dst.display()))
        .arg(format!("--listen-port={}", free_port()))
        .arg(format!("--dht-listen-port={}", free_port()))
        .arg(format!("--dht-entry-point={router}"))
        .arg(format!("--dht-file-path={}", s.dir.path().join("aria2-dht.dat").display()))
        .args(["--no-conf=true", "--enable-dht=true", "--enable-dht6=false", "--disable-ipv6=true"])
        .args(["--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-time=0"])
        .args(["--bt-stop-timeout=100", "--summary-interval=0", "--console-log-level=warn"])
        .arg(&link);
    let mut aria = Proc::spawn("aria2 leech", c);
    let status = aria.wait_exit(WITHIN);
    assert!(status.success(), "aria2: {status:?}\n{}", aria.output());
    assert_same_tree(&s.src, &s.dst);
}

/// The daemon: a bare info-hash added over the RPC downloads through the DHT; `/metrics` shows
/// the node; the routing table is saved in the state folder and read at the next start.
#[test]
fn the_daemon_downloads_an_info_hash_through_the_dht_and_keeps_its_routing_table() {
    if !require("transmission-remote") {
        return;
    }
    let s = TreeSetup::new(75, &[]);
    let (_router, router) = our_router("127.0.51.1");
    let mut seed = our_peer_dht("seed", "127.0.52.1", s.torrent.as_os_str(), &s.src, &router, &["-q"]);
    listening_port(&mut seed);
    let config = format!("[dht]\nrouters = [\"{router}\"]\n");
    let log = Some("warn,bitswarm_peer::dht=debug");
    let mut d = common::daemon::OurDaemon::start_with_dht(s.dir.path(), &config, log);
    let hash = info_hash_of(&s.torrent);
    let added = d.rpc("torrent-add", serde_json::json!({ "filename": magnet(&hash) }));
    let id = added["torrent-added"]["id"].as_u64().expect("an id");
    d.wait_torrent(id, &["percentDone"], "the download", |t| t["percentDone"] == 1.0);
    assert_same_tree(&s.src, &d.downloads);
    let (_, _, metrics) = d.http("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(metrics.contains("bitswarm_dht_nodes "), "{metrics}");
    let lookups = metrics.lines().find(|l| l.starts_with("bitswarm_dht_lookups_total ")).expect("lookups");
    assert_ne!(lookups, "bitswarm_dht_lookups_total 0", "{metrics}");
    let session = d.rpc("session-get", serde_json::json!({ "fields": ["dht-enabled"] }));
    assert_eq!(session["dht-enabled"], true, "{session}");
    d.stop();
    let table = std::fs::read(d.state.join("dht.dat")).expect("the routing table saved in the state folder");
    assert!(table.starts_with(b"d2:id20:"), "{table:?}");
    // Read back at the next start, before the routers are asked.
    let mut again = common::daemon::OurDaemon::start_with_dht(s.dir.path(), &config, log);
    again.proc.wait_line(Duration::from_secs(30), |l| l.contains("nodes from the state file"));
    again.stop();
}

/// `session-set dht-enabled` starts and stops the daemon's node while it runs; session-get
/// shows it, and it is kept across a restart over the configuration file's `enabled`. A
/// torrent seeding while the node was off announces on the node started later: a `join`
/// finds it through the DHT alone.
#[test]
fn the_daemon_starts_and_stops_its_dht_node_through_the_rpc() {
    let s = TreeSetup::new(77, &[]);
    let (_router, router) = our_router("127.0.81.1");
    let config = format!("[dht]\nenabled = false\nrouters = [\"{router}\"]\n");
    let log = Some("warn,bitswarm_peer::dht=debug");
    let dht_enabled = |d: &common::daemon::OurDaemon| {
        d.rpc("session-get", serde_json::json!({ "fields": ["dht-enabled"] }))["dht-enabled"].clone()
    };
    let mut d = common::daemon::OurDaemon::start_with_dht(s.dir.path(), &config, log);
    assert_eq!(dht_enabled(&d), false);
    let args = serde_json::json!({ "filename": s.torrent, "download-dir": s.src });
    let id = d.rpc("torrent-add", args)["torrent-added"]["id"].as_u64().expect("an id");
    d.wait_torrent(id, &["percentDone", "status"], "seeding", |t| t["percentDone"] == 1.0 && t["status"] == 6);
    d.rpc("session-set", serde_json::json!({ "dht-enabled": true }));
    assert_eq!(dht_enabled(&d), true);
    let hash = info_hash_of(&s.torrent);
    d.proc.wait_line(Duration::from_secs(60), |l| l.contains(&format!("DHT: {hash} announced to ")));
    let link = magnet(&hash);
    let mut join = our_peer_dht("join", "127.0.83.1", link.as_ref(), &s.dst, &router, &["-q", "--exit-when-done"]);
    assert_joined_from(&mut join, "127.0.0.1");
    assert_same_tree(&s.src, &s.dst);
    // Off at once, and still off after a restart (the configuration says off too).
    d.rpc("session-set", serde_json::json!({ "dht-enabled": false }));
    assert_eq!(dht_enabled(&d), false);
    d.proc.wait_line(Duration::from_secs(30), |l| l.contains("DHT node on UDP ") && l.ends_with(" stopped"));
    d.stop();
    let mut d = common::daemon::OurDaemon::start_with_dht(s.dir.path(), &config, log);
    assert_eq!(dht_enabled(&d), false);
    // On, kept across a restart over the configuration's `enabled = false`.
    d.rpc("session-set", serde_json::json!({ "dht-enabled": true }));
    d.stop();
    let mut d = common::daemon::OurDaemon::start_with_dht(s.dir.path(), &config, log);
    assert_eq!(dht_enabled(&d), true);
    d.stop();
}

/// A bad `--dht-router` is a usage error that says what is wrong, before anything starts.
#[test]
fn a_bad_dht_router_is_refused_with_a_reason() {
    let dir = tempdir();
    for (command, router, reason) in [
        ("join", "router.example", "HOST:PORT"),
        ("seed", "router.example:70000", "is not a port"),
        ("daemon", "bad host:6881", "is not a host name or IP address"),
        ("dht", "127.0.0.1:0", "port 0"),
    ] {
        let mut c = bitswarm();
        c.args([command, "--dht-router", router]);
        if command != "dht" && command != "daemon" {
            c.arg(dir.path().join("x.torrent"));
        }
        let (st, _, err) = run(c, Duration::from_secs(30));
        assert_eq!(st.code(), Some(2), "{command} --dht-router {router}: {err}");
        assert!(err.contains(reason), "{command} --dht-router {router}: {err}");
    }
}

/// Datagrams that are not KRPC (or not well-formed KRPC) get an error or nothing, never a
/// crash: the node answers a ping after them.
#[test]
fn our_node_survives_malformed_krpc_and_still_answers() {
    let (mut node, addr) = our_router("127.0.61.1");
    let s = std::net::UdpSocket::bind("127.0.62.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let junk: [&[u8]; 7] = [
        b"",
        b"garbage",
        b"d1:y1:qe",
        b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q9:get_peers1:t2:aa1:y1:qe",
        b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes7:shortere1:t2:zz1:y1:re",
        b"li1ei2ei3e",
    ];
    for j in junk {
        s.send_to(j, &addr).unwrap();
    }
    let ping = b"d1:ad2:id20:bbbbbbbbbbbbbbbbbbbbe1:q4:ping1:t2:pi1:y1:qe";
    s.send_to(ping, &addr).unwrap();
    let mut buf = [0u8; 1500];
    let answer = loop {
        let (n, _) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("no answer to the ping: {e}\n{}", node.output()));
        let m = buf[..n].to_vec();
        // Errors (203) for the malformed queries may come first.
        if m.windows(7).any(|w| w == b"1:t2:pi") {
            break m;
        }
    };
    assert!(answer.windows(6).any(|w| w == b"1:y1:r"), "{}", String::from_utf8_lossy(&answer));
    assert!(node.child.try_wait().unwrap().is_none(), "the node ended:\n{}", node.output());
}

/// `bitswarm dht --routing-table` lists the nodes it knows: a node that joined through it.
#[test]
fn our_node_lists_its_routing_table() {
    let mut c = bitswarm();
    c.args(["dht", "--no-bootstrap", "--status-every", "1", "--routing-table", "--port", "0", "--bind", "127.0.71.1"]);
    let mut a = Proc::spawn("bitswarm dht A", c);
    let line = a.wait_line(Duration::from_secs(30), |l| l.starts_with("DHT node on UDP "));
    let addr = line.trim_start_matches("DHT node on UDP ").trim().to_owned();
    let mut c = bitswarm();
    c.args(["dht", "--status-every", "0", "--port", "0", "--bind", "127.0.72.1", "--dht-router", &addr]);
    let mut b = Proc::spawn("bitswarm dht B", c);
    let line = b.wait_line(Duration::from_secs(30), |l| l.starts_with("DHT node on UDP "));
    let b_addr = line.trim_start_matches("DHT node on UDP ").trim().to_owned();
    let listed = a.wait_line(Duration::from_secs(30), |l| l.starts_with("node ") && l.ends_with(&b_addr));
    let id = listed.split(' ').nth(1).unwrap();
    assert_eq!(id.len(), 40, "{listed}");
}

/// `seed` on a fixed port keeps its node's routing table in the cache folder, and reads it at
/// its next start.
#[test]
fn seed_on_a_fixed_port_keeps_its_routing_table() {
    let s = TreeSetup::new(76, &[]);
    let (_router, router) = our_router("127.0.91.1");
    let cache = s.dir.path().join("cache");
    let port = free_port().to_string();
    let start = || {
        let mut c = bitswarm();
        c.env_remove("BITSWARM_NO_DHT")
            .env("XDG_CACHE_HOME", &cache)
            .env("BITSWARM_LOG", "warn,bitswarm_peer::dht=debug");
        c.args(["seed", "-q", "--port", &port, "--bind", "127.0.92.1", "--dht-router", &router, "-d"])
            .arg(&s.src)
            .arg(&s.torrent);
        let mut p = Proc::spawn("bitswarm seed", c);
        listening_port(&mut p);
        p
    };
    let mut seed = start();
    seed.wait_line(Duration::from_secs(30), |l| l.contains("announced to"));
    seed.interrupt();
    assert!(seed.wait_exit(Duration::from_secs(30)).success(), "{}", seed.output());
    let table = std::fs::read(cache.join(format!("bitswarm/dht-{port}.dat"))).expect("the routing table kept");
    assert!(table.starts_with(b"d2:id20:"), "{table:?}");
    let mut again = start();
    again.wait_line(Duration::from_secs(30), |l| l.contains("nodes from the state file"));
}
