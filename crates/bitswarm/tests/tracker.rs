//! `bitswarm tracker` as a user runs it: started as a subprocess on port 0 (its printed bound
//! addresses parsed), then used by real BitTorrent programs: aria2 seeds, libtorrent and
//! transmission-cli download through the HTTP tracker, libtorrent through a `udp://` URL.
//! Scrape counts are checked after each event, and a peer that stops announcing expires;
//! libtorrent (HTTP and UDP) and transmission-show (HTTP) scrape the same counts. A
//! libtorrent partial seed's `paused` announces are answered over UDP. A tracker bound to `[::1]`
//! only serves aria2 and libtorrent over both protocols (BEP 7). An access list (allow
//! mode) refuses other torrents over HTTP and UDP and is read again on SIGHUP. The tracker raises
//! its open-files limit, and out of file descriptors it serves on. Prometheus's own parser
//! reads `/metrics`. With one protocol turned off it serves and prints only the other.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bitswarm_metainfo::{InfoHash, Metainfo};
use bitswarm_tracker_proto::Event;
use bitswarm_tracker_proto::http::{self, ScrapeResponse, ScrapeStats};
use bitswarm_tracker_proto::udp;
use common::{Proc, bitswarm, free_port, random_file, require, run, s, tempdir, wait_for};

const T: Duration = Duration::from_secs(60);

type Tracker = common::swarm::OurTracker;

/// Starts `bitswarm tracker` on loopback port 0 with a config file, and reads the addresses it
/// printed.
fn start_tracker(dir: &Path, config: &str) -> Tracker {
    let t = Tracker::start(dir, config);
    assert!(t.proc.seen.iter().any(|l| l.trim() == format!("udp://{}/announce", t.udp)), "{:?}", t.proc.seen);
    t
}

fn http_get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response") + 4;
    assert!(resp.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&resp));
    resp[at..].to_vec()
}

fn scrape(t: &Tracker, h: InfoHash) -> ScrapeStats {
    let body = http_get(t.http, &format!("/scrape?{}", http::scrape_query(&[h])));
    ScrapeResponse::decode(&body).unwrap().get(&h).unwrap()
}

/// Waits until the tracker's scrape of `h` says exactly `want`.
fn wait_scrape(t: &Tracker, h: InfoHash, want: ScrapeStats, what: &str) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let last = scrape(t, h);
        if last == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: waited {T:?} for scrape {want:?}, last saw {last:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stats(complete: u32, incomplete: u32, downloaded: u32) -> ScrapeStats {
    ScrapeStats { complete, downloaded, incomplete }
}

/// A random file and a torrent for it made with mktorrent, announcing to `url`.
fn make_torrent(dir: &Path, url: &str, len: usize, seed: u64) -> (std::path::PathBuf, Vec<u8>, InfoHash) {
    let file = dir.join("seed").join("payload.bin");
    let data = random_file(&file, len, seed);
    let torrent = dir.join("payload.torrent");
    let h = mktorrent(url, &file, &torrent);
    (torrent, data, h)
}

/// Makes `torrent` of `content` (a file or a folder) with mktorrent, announcing to `url`;
/// returns its info-hash.
fn mktorrent(url: &str, content: &Path, torrent: &Path) -> InfoHash {
    let mut c = Command::new("mktorrent");
    c.args(["-a", url, "-l", "15", "-o", &s(torrent), &s(content)]);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "mktorrent: {out}{err}");
    Metainfo::parse(&std::fs::read(torrent).unwrap()).unwrap().info_hash
}

fn aria2_seeder(torrent: &Path, data_dir: &Path, port: u16) -> Proc {
    let mut c = Command::new("aria2c");
    c.args([
        "--seed-ratio=0",
        "--bt-seed-unverified=true",
        "--check-integrity=false",
        "-d",
        &s(data_dir),
        &format!("--listen-port={port}"),
        "--enable-dht=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--console-log-level=warn",
        &s(torrent),
    ]);
    Proc::spawn("aria2c seeder", c)
}

/// A libtorrent leecher (python3-libtorrent) listening on HOST:PORT (HOST 127.0.0.1 unless
/// given). It prints `peer IP:PORT` for each peer it is connected to, `finished` when it holds
/// every piece (at once if SAVE already held them: it seeds), and removes the torrent
/// (announcing `stopped`) once the file `stop` appears, printing `removed`.
const LT_SCRIPT: &str = r#"
import sys, os, time
import libtorrent as lt
torrent, save, port, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
host = sys.argv[5] if len(sys.argv) > 5 else '127.0.0.1'
ses = lt.session({
    'listen_interfaces': '%s:%d' % (host, port), 'enable_dht': False, 'enable_lsd': False,
    'enable_upnp': False, 'enable_natpmp': False, 'allow_multiple_connections_per_ip': True,
    'enable_outgoing_utp': False, 'enable_incoming_utp': False, 'min_announce_interval': 1,
    'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification,
})
h = ses.add_torrent({'ti': lt.torrent_info(torrent), 'save_path': save})
print('listening', flush=True)
seen, finished, removed = set(), False, False
while True:
    for a in ses.pop_alerts():
        if isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert)):
            print('tracker:', a.message(), flush=True)
        elif isinstance(a, lt.tracker_reply_alert):
            print('tracker reply: %d peers' % a.num_peers, flush=True)
    if not removed:
        for p in h.get_peer_info():
            key = '%s:%d' % (p.ip[0], p.ip[1])
            if key not in seen:
                seen.add(key)
                print('peer', key, flush=True)
        if not finished and h.status().is_seeding:
            finished = True
            print('finished', flush=True)
        if finished and os.path.exists(stop):
            ses.remove_torrent(h)
            removed = True
            print('removed', flush=True)
    time.sleep(0.05)
"#;

fn libtorrent_leecher(dir: &Path, torrent: &Path, save: &Path, port: u16, stop: &Path) -> Proc {
    libtorrent_on("127.0.0.1", dir, torrent, save, port, stop)
}

/// [`libtorrent_leecher`] listening on `host` (`[::1]` for IPv6).
fn libtorrent_on(host: &str, dir: &Path, torrent: &Path, save: &Path, port: u16, stop: &Path) -> Proc {
    let script = dir.join("lt_leecher.py");
    std::fs::write(&script, LT_SCRIPT).unwrap();
    std::fs::create_dir_all(save).unwrap();
    let mut c = Command::new("/usr/bin/python3");
    c.args([s(&script), s(torrent), s(save), port.to_string(), s(stop), host.to_owned()]);
    Proc::spawn(&format!("libtorrent on {host}"), c)
}

/// transmission-cli on `save`: it downloads into it, or seeds what it finds there complete.
fn transmission(dir: &Path, torrent: &Path, save: &Path, port: u16) -> Proc {
    let cfg = dir.join("transmission-config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(save).unwrap();
    // Peers only from the tracker: no DHT, local discovery, PEX or uTP.
    std::fs::write(
        cfg.join("settings.json"),
        r#"{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
            "port-forwarding-enabled": false}"#,
    )
    .unwrap();
    let mut c = Command::new("transmission-cli");
    c.args(["-g", &s(&cfg), "-w", &s(save), "-p", &port.to_string(), &s(torrent)]);
    Proc::spawn("transmission-cli", c)
}

/// The body of an HTTP announce of `h` from made-up peer `id` (its port 6000 + `id`).
fn announce_as(t: &Tracker, h: InfoHash, id: u8, left: u64, event: Event) -> Vec<u8> {
    let mut req = http::AnnounceRequest::new(h, bitswarm_tracker_proto::PeerId([id; 20]), 6000 + u16::from(id), left);
    req.event = event;
    http_get(t.http, &http::announce_url("/announce", &req))
}

/// A UDP socket that has sent the tracker at `addr` a connect request (transaction id `tid`),
/// with the reply it read.
fn udp_connect(addr: SocketAddr, tid: u32) -> (std::net::UdpSocket, udp::Response) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.send_to(&udp::Request::Connect { transaction_id: tid }.encode(), addr).unwrap();
    let mut buf = [0; 64];
    let n = sock.recv(&mut buf).expect("a reply to a UDP connect");
    let reply = udp::Response::parse(&buf[..n], udp::Family::V4).unwrap();
    (sock, reply)
}

/// Waits until `path` holds exactly `data`.
fn wait_file(path: &Path, data: &[u8], what: &str) {
    wait_for(T, &format!("{what}: {} complete and identical", path.display()), || {
        std::fs::read(path).ok().filter(|d| d == data).map(|_| ())
    });
}

#[test]
fn tracker_prints_its_addresses_and_stops_on_sigint_and_sigterm() {
    for sig in ["INT", "TERM"] {
        let dir = tempdir();
        let mut t = start_tracker(dir.path(), "");
        let out = t.proc.output();
        assert!(out.contains(&format!("http://{}/announce", t.http)), "{out}");
        assert!(out.contains(&format!("http://{}/metrics", t.http)), "{out}");
        let page = String::from_utf8(http_get(t.http, "/")).unwrap();
        assert!(page.contains("<h1>bitswarm tracker</h1>"), "{page}");
        common::signal(t.proc.child.id(), sig);
        let status = t.proc.wait_exit(T);
        assert!(status.success(), "SIG{sig}: {status:?}: {}", t.proc.output());
        assert!(t.proc.output().contains("stopped"));
    }
}

#[test]
fn tracker_serves_one_protocol_when_the_other_is_off() {
    for (http, udp, shown, absent) in [("127.0.0.1:0", "off", "HTTP", "UDP"), ("off", "127.0.0.1:0", "UDP", "HTTP")] {
        let mut c = bitswarm();
        c.args(["tracker", "--http", http, "--udp", udp]);
        let mut p = Proc::spawn("bitswarm tracker", c);
        let line = p.wait_line(T, |l| l.starts_with(&format!("{shown} tracker listening on ")));
        let addr: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
        p.wait_line(T, |l| l == "press Ctrl-C to stop");
        // It answers on the one it serves.
        if shown == "HTTP" {
            let body = http_get(addr, &format!("/scrape?{}", http::scrape_query(&[InfoHash([1; 20])])));
            assert_eq!(ScrapeResponse::decode(&body).unwrap().files.len(), 1);
        } else {
            assert!(matches!(udp_connect(addr, 5).1, udp::Response::Connect { transaction_id: 5, .. }));
        }
        let out = p.output();
        assert!(!out.contains(&format!("{absent} tracker listening")), "{out}");
        assert!(!out.contains(if absent == "UDP" { "udp://" } else { "http://" }), "{out}");
        common::signal(p.child.id(), "TERM");
        assert!(p.wait_exit(T).success(), "{}", p.output());
    }
}

#[test]
fn tracker_config_is_checked() {
    let dir = tempdir();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[store]\npeer_timeout = 10\ncolour = \"blue\"\n").unwrap();
    let mut c = bitswarm();
    c.args(["tracker", "--config", &s(&cfg)]);
    let (st, out, err) = run(c, T);
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(err.contains("unknown field `colour`"), "{err}");

    let mut c = bitswarm();
    c.args(["tracker", "--print-config"]);
    let (st, out, _) = run(c, T);
    assert!(st.success());
    assert!(out.contains("[store]\n") && out.contains("peer_timeout = 0"), "{out}");
    // What it prints is a valid config file.
    std::fs::write(&cfg, &out).unwrap();
    let mut c = bitswarm();
    c.args(["tracker", "--config", &s(&cfg), "--http", "off", "--udp", "off"]);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("nothing to serve"), "{err}");

    // An access list that is not there.
    std::fs::write(&cfg, "[access]\nmode = \"deny\"\nlist = \"/nonexistent/deny.txt\"\n").unwrap();
    let mut c = bitswarm();
    c.args(["tracker", "--config", &s(&cfg), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("access list /nonexistent/deny.txt: No such file"), "{err}");

    // A raised interval with a hand-set timeout that would drop peers between announces.
    std::fs::write(&cfg, "[announce]\ninterval = 7200\n[store]\npeer_timeout = 3600\n").unwrap();
    let mut c = bitswarm();
    c.args(["tracker", "--config", &s(&cfg), "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("store.peer_timeout (3600 s) must exceed announce.interval (7200 s)"), "{err}");

    let mut c = bitswarm();
    c.args(["tracker", "--http", "nonsense"]);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("is not an address"), "{err}");
}

/// Short intervals so that real clients re-announce within the test; a quiet peer expires
/// after 4 s.
const FAST: &str = "[announce]\ninterval = 2\nmin_interval = 1\n[store]\npeer_timeout = 4\ncleaner_interval = 1\n";

#[test]
fn interop_http_tracker_with_aria2_libtorrent_and_transmission() {
    if !require("aria2c") || !require("libtorrent") || !require("transmission-cli") || !require("mktorrent") {
        return;
    }
    let dir = tempdir();
    let t = start_tracker(dir.path(), FAST);
    let (torrent, data, h) = make_torrent(dir.path(), &format!("http://{}/announce", t.http), 3 << 20, 7);
    assert_eq!(scrape(&t, h), stats(0, 0, 0));

    // started: libtorrent joins with nothing.
    let stop = dir.path().join("stop-libtorrent");
    let lt_dir = dir.path().join("lt");
    let mut lt = libtorrent_leecher(dir.path(), &torrent, &lt_dir, free_port(), &stop);
    lt.wait_line(T, |l| l == "listening");
    wait_scrape(&t, h, stats(0, 1, 0), "libtorrent started");

    // aria2 seeds; it learns of libtorrent from the tracker, and libtorrent downloads.
    let aria2_port = free_port();
    let aria2 = aria2_seeder(&torrent, &dir.path().join("seed"), aria2_port);
    lt.wait_line(T, |l| l == "finished");
    wait_file(&lt_dir.join("payload.bin"), &data, "libtorrent");
    // completed: two seeders, one download.
    wait_scrape(&t, h, stats(2, 0, 1), "libtorrent completed");

    // stopped: libtorrent removes the torrent.
    std::fs::write(&stop, b"").unwrap();
    lt.wait_line(T, |l| l == "removed");
    wait_scrape(&t, h, stats(1, 0, 1), "libtorrent stopped");

    // transmission-cli downloads from aria2, whom it can only know from the tracker.
    let tr_dir = dir.path().join("tr");
    let mut tr = transmission(dir.path(), &torrent, &tr_dir, free_port());
    wait_file(&tr_dir.join("payload.bin"), &data, "transmission");
    wait_scrape(&t, h, stats(2, 0, 2), "transmission completed");

    // Peers that stop announcing (killed, no `stopped`) expire, and the swarm goes with them.
    tr.kill();
    drop(aria2);
    wait_scrape(&t, h, stats(0, 0, 0), "quiet peers expired");
    let json = String::from_utf8(http_get(t.http, "/stats")).unwrap();
    assert!(json.contains("\"swarms\": 0"), "{json}");
    let metrics = String::from_utf8(http_get(t.http, "/metrics")).unwrap();
    assert!(metrics.contains("bitswarm_tracker_peers_expired_total 2"), "{metrics}");
}

/// aria2 speaks to `udp://` trackers only with its DHT on, so the seeder here is
/// transmission-cli: two independent BEP 15 clients meet through our UDP tracker.
#[test]
fn interop_udp_tracker_libtorrent_downloads_from_transmission() {
    if !require("transmission-cli") || !require("libtorrent") || !require("mktorrent") {
        return;
    }
    let dir = tempdir();
    // The default interval: the seeder announces once, so libtorrent can only find it through
    // the peer list of its own UDP announce.
    let t = start_tracker(dir.path(), "");
    let (torrent, data, h) = make_torrent(dir.path(), &format!("udp://{}/announce", t.udp), 2 << 20, 11);

    let seed_port = free_port();
    let _seeder = transmission(dir.path(), &torrent, &dir.path().join("seed"), seed_port);
    wait_scrape(&t, h, stats(1, 0, 0), "transmission seeding over UDP");

    let stop = dir.path().join("stop-libtorrent");
    let lt_dir = dir.path().join("lt");
    let mut lt = libtorrent_leecher(dir.path(), &torrent, &lt_dir, free_port(), &stop);
    lt.wait_line(T, |l| l == format!("peer 127.0.0.1:{seed_port}"));
    lt.wait_line(T, |l| l == "finished");
    wait_file(&lt_dir.join("payload.bin"), &data, "libtorrent over UDP");
    wait_scrape(&t, h, stats(2, 0, 1), "libtorrent completed over UDP");
    std::fs::write(&stop, b"").unwrap();
    wait_scrape(&t, h, stats(1, 0, 1), "libtorrent stopped over UDP");

    let metrics = String::from_utf8(http_get(t.http, "/metrics")).unwrap();
    let count = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    assert!(count("bitswarm_tracker_connects_total{protocol=\"udp\"}") >= 2, "{metrics}");
    assert!(count("bitswarm_tracker_announces_total{protocol=\"udp\"}") >= 3, "{metrics}");
    assert_eq!(count("bitswarm_tracker_announces_total{protocol=\"http\"}"), 0, "{metrics}");
}

/// A libtorrent partial seed (BEP 21): it wants only the first file of TORRENT, fetches it from
/// the peer SEEDER, then announces again at once (its announces now carry `paused`). Prints
/// `finished`, then each announce's event (`announce EVENT`) and the tracker's answer (`reply N`
/// or `tracker: MESSAGE`).
const LT_PARTIAL_SCRIPT: &str = r#"
import sys, time
import libtorrent as lt
torrent, save, seeder = sys.argv[1], sys.argv[2], sys.argv[3]
ses = lt.session({
    'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
    'enable_upnp': False, 'enable_natpmp': False, 'allow_multiple_connections_per_ip': True,
    'enable_outgoing_utp': False, 'enable_incoming_utp': False,
    'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification,
})
ti = lt.torrent_info(torrent)
h = ses.add_torrent({'ti': ti, 'save_path': save, 'file_priorities': [1] + [0] * (ti.num_files() - 1)})
host, port = seeder.rsplit(':', 1)
h.connect_peer((host, int(port)))
finished = False
deadline = time.time() + 90
while time.time() < deadline:
    for a in ses.pop_alerts():
        if isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert)):
            print('tracker:', a.message(), flush=True)
        elif isinstance(a, lt.tracker_reply_alert):
            print('reply %d' % a.num_peers, flush=True)
        elif isinstance(a, lt.tracker_announce_alert):
            print('announce %s' % a.event, flush=True)
    s = h.status()
    if not finished and s.is_finished and not s.is_seeding:
        finished = True
        print('finished', flush=True)
        h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
    time.sleep(0.05)
"#;

/// libtorrent's partial seeds (BEP 21: the files they want are complete, others are not) send
/// `paused` with every announce, 4 over UDP: the tracker answers it as a regular announce and
/// counts the peer as incomplete.
#[test]
fn interop_udp_tracker_answers_a_libtorrent_partial_seed() {
    if !require("libtorrent") || !require("mktorrent") {
        return;
    }
    let dir = tempdir();
    let t = start_tracker(dir.path(), "");
    let src = dir.path().join("seed");
    let wanted = random_file(&src.join("multi").join("a.bin"), 1 << 20, 21);
    random_file(&src.join("multi").join("b.bin"), 1 << 20, 22);
    let torrent = dir.path().join("multi.torrent");
    let h = mktorrent(&format!("udp://{}/announce", t.udp), &src.join("multi"), &torrent);

    let (_seeder, port) = common::swarm::lt_seeder(&torrent, &src, "default", T);
    wait_scrape(&t, h, stats(1, 0, 0), "the libtorrent seeder announced over UDP");

    let script = dir.path().join("lt_partial.py");
    std::fs::write(&script, LT_PARTIAL_SCRIPT).unwrap();
    let save = dir.path().join("partial");
    let mut c = Command::new("/usr/bin/python3");
    c.args([s(&script), s(&torrent), s(&save), format!("127.0.0.1:{port}")]);
    let mut partial = Proc::spawn("libtorrent partial seed", c);
    partial.wait_line(T, |l| l == "finished");
    wait_file(&save.join("multi").join("a.bin"), &wanted, "libtorrent's wanted file");
    partial.wait_line(T, |l| l == "announce paused");
    let answer = partial.wait_line(T, |l| l.starts_with("reply ") || l.starts_with("tracker:"));
    assert!(answer.starts_with("reply "), "the tracker refused libtorrent's paused announce: {answer}");
    assert!(partial.printed(|l| l.starts_with("tracker:")).is_none(), "{}", partial.output());
    wait_scrape(&t, h, stats(1, 1, 0), "the partial seed counts as incomplete");
}

/// Both BEP 7 paths with real clients, on a tracker bound to `[::1]` only: over HTTP,
/// libtorrent finds the aria2 seeder in `peers6` and downloads from it; over UDP (BEP 15's IPv6
/// announce, 18-byte peers), a libtorrent leecher finds a libtorrent seeder. Scrape counts are
/// checked after each event. transmission-cli 3.00 is not in it: on a machine without a global
/// IPv6 address it opens its UDP socket for IPv4 only ("Could not connect to tracker").
#[test]
fn interop_ipv6_tracker_over_http_and_udp() {
    if !require("aria2c") || !require("libtorrent") || !require("mktorrent") {
        return;
    }
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback ([::1]) is not available on this machine");
    }
    let dir = tempdir();
    let t = Tracker::start_on(dir.path(), FAST, "[::1]");
    assert!(t.http.is_ipv6() && t.udp.is_ipv6(), "{:?}", t.proc.seen);

    // A libtorrent leecher on [::1] is sent the seeder's address, dials it and downloads; it
    // completes, then stops, and the counts follow.
    let leech = |dir: &Path, torrent: &Path, data: &[u8], h: InfoHash, seed_port: u16, what: &str| {
        let stop = dir.join("stop-libtorrent");
        let mut lt = libtorrent_on("[::1]", dir, torrent, &dir.join("lt"), free_port(), &stop);
        lt.wait_line(T, |l| l == format!("peer ::1:{seed_port}"));
        lt.wait_line(T, |l| l == "finished");
        wait_file(&dir.join("lt").join("payload.bin"), data, what);
        wait_scrape(&t, h, stats(2, 0, 1), &format!("{what}: completed"));
        std::fs::write(&stop, b"").unwrap();
        lt.wait_line(T, |l| l == "removed");
        wait_scrape(&t, h, stats(1, 0, 1), &format!("{what}: stopped"));
    };

    // HTTP: aria2 seeds; libtorrent finds it in `peers6`.
    let http_dir = dir.path().join("http");
    let (torrent, data, h) = make_torrent(&http_dir, &t.http_url(), 2 << 20, 31);
    let aria2_port = free_port();
    let _aria2 = aria2_seeder(&torrent, &http_dir.join("seed"), aria2_port);
    wait_scrape(&t, h, stats(1, 0, 0), "aria2 seeding over IPv6");
    leech(&http_dir, &torrent, &data, h, aria2_port, "libtorrent over IPv6 HTTP");

    // UDP: a libtorrent seeder and a libtorrent leecher meet through the UDP tracker.
    let udp_dir = dir.path().join("udp");
    let (torrent, data, h) = make_torrent(&udp_dir, &t.udp_url(), 2 << 20, 32);
    let seed_port = free_port();
    let never = udp_dir.join("never");
    let mut seeder = libtorrent_on("[::1]", &udp_dir, &torrent, &udp_dir.join("seed"), seed_port, &never);
    seeder.wait_line(T, |l| l == "finished");
    wait_scrape(&t, h, stats(1, 0, 0), "libtorrent seeding over IPv6 UDP");
    leech(&udp_dir, &torrent, &data, h, seed_port, "libtorrent over IPv6 UDP");
}

/// `bitswarm tracker` started with a low soft limit on open files (1024 is usual) raises it to
/// the hard limit. With both limits low, a tracker whose file descriptors are all taken by idle
/// HTTP clients says so, answers UDP meanwhile, and serves HTTP again once they have gone.
#[cfg(target_os = "linux")]
#[test]
fn tracker_raises_its_open_files_limit_and_survives_running_out() {
    let limits = |pid: u32| -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| if w == "unlimited" { Some(u64::MAX) } else { w.parse().ok() })
            .collect();
        (v[0], v[1])
    };
    let (_, hard) = limits(std::process::id());
    assert!(hard > 200, "this test needs a hard limit on open files above 200 (it is {hard})");
    let dir = tempdir();
    let t = Tracker::start_in_shell(dir.path(), "", "ulimit -Sn 100");
    let want = if hard == u64::MAX { 1 << 20 } else { hard };
    assert_eq!(limits(t.proc.child.id()), (want, hard), "the soft limit was not raised");
    drop(t);

    // Both limits at 64: a hundred idle clients take every descriptor (they are not closed by
    // the header timeout within the test).
    let mut t = Tracker::start_in_shell(dir.path(), "[http]\nheader_timeout = 300\n", "ulimit -n 64");
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(t.http).unwrap()).collect();
    t.proc.wait_line(T, |l| l.contains("HTTP accept: Too many open files"));
    let (_, reply) = udp_connect(t.udp, 7);
    assert!(matches!(reply, udp::Response::Connect { transaction_id: 7, .. }), "{reply:?}");
    drop(idle);
    assert_eq!(scrape(&t, InfoHash([1; 20])), stats(0, 0, 0));
    assert!(t.proc.child.try_wait().unwrap().is_none(), "the tracker ended");
}

/// Scrapes each TORRENT's first tracker with libtorrent and prints `scrape URL C I D` (complete,
/// incomplete, downloaded as libtorrent parsed them) or `failed URL MESSAGE`. The torrents are
/// added paused: libtorrent never announces, so it is not counted itself. Its SSRF mitigation is
/// off: it refuses any HTTP tracker path but /announce on localhost.
const LT_SCRAPE_SCRIPT: &str = r#"
import sys, time
import libtorrent as lt
ses = lt.session({
    'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
    'enable_upnp': False, 'enable_natpmp': False, 'ssrf_mitigation': False,
    'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification,
})
for path in sys.argv[2:]:
    h = ses.add_torrent({'ti': lt.torrent_info(path), 'save_path': sys.argv[1], 'flags': lt.torrent_flags.paused})
    h.scrape_tracker(0)
    deadline, done = time.time() + 30, False
    while not done and time.time() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.scrape_reply_alert):
                ep = h.trackers()[0]['endpoints'][0]['info_hashes'][0]
                print('scrape', a.tracker_url(), a.complete, a.incomplete, ep['scrape_downloaded'], flush=True)
                done = True
            elif isinstance(a, lt.scrape_failed_alert):
                print('failed', a.tracker_url(), a.error_message(), flush=True)
                done = True
        time.sleep(0.05)
    ses.remove_torrent(h)
"#;

/// Real clients' scrape parsers read our replies: libtorrent over HTTP and UDP, and
/// transmission-show over HTTP (it has no UDP scrape), all see the counts the tracker holds.
#[test]
fn interop_libtorrent_and_transmission_scrape_the_counts() {
    if !require("libtorrent") || !require("transmission-cli") || !require("mktorrent") {
        return;
    }
    let dir = tempdir();
    let t = start_tracker(dir.path(), "");
    let (http_torrent, _, h) = make_torrent(dir.path(), &t.http_url(), 100_000, 41);
    let udp_torrent = dir.path().join("udp.torrent");
    assert_eq!(mktorrent(&t.udp_url(), &dir.path().join("seed").join("payload.bin"), &udp_torrent), h);
    // Three leechers, and two peers that completed: 2 seeders, 3 leechers, 2 downloads.
    for (id, left, event) in [(1, 5, Event::Started), (2, 5, Event::Started), (3, 5, Event::None)]
        .into_iter()
        .chain([(4, 0, Event::Completed), (5, 0, Event::Completed)])
    {
        let body = announce_as(&t, h, id, left, event);
        assert!(http::AnnounceResponse::decode(&body).is_ok(), "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(scrape(&t, h), stats(2, 3, 2));

    let script = dir.path().join("lt_scrape.py");
    std::fs::write(&script, LT_SCRAPE_SCRIPT).unwrap();
    let mut c = Command::new("/usr/bin/python3");
    c.arg(&script).arg(dir.path().join("none")).args([&http_torrent, &udp_torrent]);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [format!("scrape {} 2 3 2", t.http_url()), format!("scrape {} 2 3 2", t.udp_url())],
        "{err}"
    );

    let mut c = Command::new("transmission-show");
    c.arg("--scrape").arg(&http_torrent);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("... 2 seeders, 3 leechers"), "{out}{err}");
}

/// Prints each sample of the Prometheus text on stdin as `NAME{LABELS} TYPE VALUE`, parsed by the
/// Prometheus project's own Python client (which refuses malformed text).
const PROM_SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        labels = ','.join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print('%s{%s} %s %s' % (s.name, labels, f.type, int(s.value)))
"#;

/// `/metrics` as Prometheus reads it: the reference parser takes the whole page, and the counts
/// it reads are those of the requests made (UDP-only counters have only a `udp` series).
#[test]
fn metrics_parse_with_the_prometheus_client() {
    if !require("prometheus_client") {
        return;
    }
    let dir = tempdir();
    let t = start_tracker(dir.path(), "");
    let h = InfoHash([3; 20]);
    for id in 1..=3 {
        announce_as(&t, h, id, 5, Event::Started);
    }
    assert_eq!(scrape(&t, h), stats(0, 3, 0));
    let (sock, _) = udp_connect(t.udp, 1);
    // A scrape with a connection id the tracker never gave: no reply, but counted.
    let bad_scrape: Vec<u8> = [&12345u64.to_be_bytes()[..], &2u32.to_be_bytes(), &9u32.to_be_bytes(), &h.0].concat();
    sock.send_to(&bad_scrape, t.udp).unwrap();
    // The bad packet is counted once the tracker has read it: wait for it.
    let metrics = wait_for(T, "the bad connection id counted", || {
        let m = String::from_utf8(http_get(t.http, "/metrics")).unwrap();
        m.contains("bitswarm_tracker_bad_connection_ids_total{protocol=\"udp\"} 1").then_some(m)
    });

    let script = dir.path().join("prom.py");
    std::fs::write(&script, PROM_SCRIPT).unwrap();
    let mut c = Command::new("/usr/bin/python3");
    c.arg(&script).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    c.stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let parsed = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{metrics}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<&str> = parsed.lines().collect();
    for want in [
        r#"bitswarm_tracker_announces_total{protocol="http"} counter 3"#,
        r#"bitswarm_tracker_announces_total{protocol="udp"} counter 0"#,
        r#"bitswarm_tracker_scrapes_total{protocol="http"} counter 1"#,
        r#"bitswarm_tracker_connects_total{protocol="udp"} counter 1"#,
        r#"bitswarm_tracker_bad_connection_ids_total{protocol="udp"} counter 1"#,
        r#"bitswarm_tracker_swarms{} gauge 1"#,
        r#"bitswarm_tracker_leechers{} gauge 3"#,
        r#"bitswarm_tracker_peers{} gauge 3"#,
    ] {
        assert!(samples.contains(&want), "{want} not among what Prometheus read:\n{parsed}");
    }
    assert!(!parsed.contains(r#"connects_total{protocol="http"}"#), "{parsed}");
    assert!(!parsed.contains(r#"bad_connection_ids_total{protocol="http"}"#), "{parsed}");
}

/// The `failure reason` of an HTTP announce of `h` from a made-up peer.
fn announce_failure(t: &Tracker, h: InfoHash) -> Option<String> {
    let body = announce_as(t, h, 7, 0, Event::None);
    let v = bitswarm_bencode::decode(&body).unwrap();
    v.get(b"failure reason").and_then(|r| r.as_str()).map(str::to_owned)
}

#[test]
fn access_list_refuses_other_torrents_and_is_read_again_on_sighup() {
    let t = tempdir();
    let (a_dir, b_dir) = (t.path().join("a"), t.path().join("b"));
    let list = t.path().join("allowed.txt");
    // The tracker's ports come first: the torrents name them.
    let cfg = format!("[access]\nmode = \"allow\"\nlist = \"{}\"\n", s(&list));
    std::fs::write(&list, "# nothing yet\n").unwrap();
    let mut tr = start_tracker(t.path(), &cfg);
    tr.proc.wait_line(T, |l| l.starts_with("access: serving only the 0 info-hashes in "));
    // Torrents made by bitswarm itself: this test needs no other program.
    let torrent = |dir: &Path, url: &str, seed: u64| {
        let file = dir.join("seed").join("payload.bin");
        random_file(&file, 64 << 10, seed);
        let torrent = dir.join("payload.torrent");
        let hash = common::swarm::create_torrent(&file, &torrent, &["-t", url]);
        (torrent, InfoHash::parse(&hash).unwrap())
    };
    let (a_torrent, a) = torrent(&a_dir, &format!("http://{}/announce", tr.http), 31);
    let (b_torrent, b) = torrent(&b_dir, &format!("udp://{}/announce", tr.udp), 32);
    std::fs::write(&list, format!("{}  # torrent a\n", a.to_hex())).unwrap();
    common::signal(tr.proc.child.id(), "HUP");
    tr.proc.wait_line(T, |l| l == "access list read again: 1 info-hashes");

    // a is served over HTTP; b is refused over HTTP and UDP (our seeder logs the UDP error).
    let seed = |torrent: &Path, dir: &Path| {
        let mut c = bitswarm();
        c.args(["seed", "--port", "0", "--bind", "127.0.0.1", "-d"]).arg(dir.join("seed")).arg(torrent);
        Proc::spawn("bitswarm seed", c)
    };
    let _seed_a = seed(&a_torrent, &a_dir);
    wait_scrape(&tr, a, stats(1, 0, 0), "seeder of a allowed");
    let mut seed_b = seed(&b_torrent, &b_dir);
    seed_b.wait_line(T, |l| l.contains("this tracker does not serve that info_hash"));
    assert_eq!(announce_failure(&tr, b).as_deref(), Some("this tracker does not serve that info_hash"));
    assert_eq!(scrape(&tr, b), stats(0, 0, 0));

    // b added and the list read again: the seeder of b gets in on its next try.
    std::fs::write(&list, format!("{}\n{}\n", a.to_hex(), b.to_hex())).unwrap();
    common::signal(tr.proc.child.id(), "HUP");
    tr.proc.wait_line(T, |l| l == "access list read again: 2 info-hashes");
    wait_scrape(&tr, b, stats(1, 0, 0), "seeder of b allowed after SIGHUP");

    // A list without a: its swarm goes at once (peers and all), and a is refused.
    std::fs::write(&list, format!("{}\n", b.to_hex())).unwrap();
    common::signal(tr.proc.child.id(), "HUP");
    // (The line "access list read again: 1 info-hashes" was printed once already: wait on the
    // outcome instead.)
    wait_scrape(&tr, a, stats(0, 0, 0), "the swarm of a dropped at the reload");
    assert_eq!(announce_failure(&tr, a).as_deref(), Some("this tracker does not serve that info_hash"));
    let page = String::from_utf8(http_get(tr.http, "/stats")).unwrap();
    assert!(!page.contains(&a.to_hex()) && page.contains(&b.to_hex()), "{page}");

    // A list that does not parse is reported and the one in force stays.
    std::fs::write(&list, "not an info-hash\n").unwrap();
    common::signal(tr.proc.child.id(), "HUP");
    let line = tr.proc.wait_line(T, |l| l.contains("the list in force stays"));
    assert!(line.contains("line 1"), "{line}");
    assert_eq!(announce_failure(&tr, b), None);
}
