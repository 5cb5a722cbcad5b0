//! Several `bitswarm tracker` processes on one Redis (`store.backend = "redis"`), with a real
//! `redis-server` of the tests' own on a Unix socket: an aria2 seeder announcing to one
//! instance (HTTP) and a libtorrent leecher announcing to the other (UDP) find each other and
//! the download completes; both instances scrape the same counts; `kill -9` of one instance
//! loses nothing; Redis killed and started again under load: the instance answers with a failure
//! reason (HTTP) and an error packet (UDP) meanwhile, never ends, and serves again by itself;
//! a Redis address that never answers: UDP announces get an error packet at once, never
//! waiting on the connect, and are served once a Redis is there; a Redis that stops answering
//! on its connections: after one response timeout, announces fail at once until it answers.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bitswarm_tracker_proto::http::{self, AnnounceRequest, AnnounceResponse};
use bitswarm_tracker_proto::udp::{self, Request, Response};
use bitswarm_tracker_proto::{Event, InfoHash, PeerId};
use common::redis::Redis;
use common::swarm::{OurTracker, aria2, create_torrent, lt_peer};
use common::udp_client::UdpClient;
use common::{free_port, random_file, require, tempdir, wait_for};

const T: Duration = Duration::from_secs(60);

/// Short intervals (real clients announce again within the test) and Redis at `url`.
fn config(url: &str) -> String {
    format!(
        "[announce]\ninterval = 2\nmin_interval = 1\n[store]\npeer_timeout = 30\ncleaner_interval = 1\n\
         backend = \"redis\"\nredis_url = \"{url}\"\n"
    )
}

fn start(dir: &Path, name: &str, url: &str) -> OurTracker {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = OurTracker::start(&dir, &config(url));
    let line = t.proc.wait_line(T, |l| l.starts_with("store: "));
    assert!(line.contains("Redis at unix://") && line.ends_with("(answering)"), "{line}");
    t
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response") + 4;
    resp[at..].to_vec()
}

/// An HTTP announce of `h` from made-up peer `id` (port 6000 + id).
fn announce(t: &OurTracker, h: InfoHash, id: u8, left: u64, event: Event) -> Result<AnnounceResponse, String> {
    let mut req = AnnounceRequest::new(h, PeerId([id; 20]), 6000 + u16::from(id), left);
    req.event = event;
    AnnounceResponse::decode(&get(t.http, &http::announce_url("/announce", &req))).map_err(|e| e.to_string())
}

/// What this test asks a UDP tracker.
impl UdpClient {
    fn announce(&self, h: InfoHash, port: u16, tid: u32) -> Option<Response> {
        self.ask(&Request::Announce(udp::AnnounceRequest {
            connection_id: self.cid,
            transaction_id: tid,
            info_hash: h,
            peer_id: PeerId([9; 20]),
            downloaded: 0,
            left: 5,
            uploaded: 0,
            event: Event::None,
            ip: None,
            key: 0,
            num_want: Some(10),
            port,
            url_data: Vec::new(),
        }))
    }
}

#[test]
fn interop_two_trackers_on_one_redis_aria2_seeds_to_libtorrent_and_kill_9_loses_nothing() {
    if !require("aria2c") || !require("libtorrent") {
        return;
    }
    let Some(redis) = Redis::start() else { return };
    let dir = tempdir();
    let mut a = start(dir.path(), "a", &redis.url());
    let b = start(dir.path(), "b", &redis.url());

    // One payload, a torrent for each tracker (the info dictionary, hence the info-hash, is
    // the same): aria2 announces to a over HTTP, libtorrent to b over UDP.
    let file = dir.path().join("seed").join("payload.bin");
    let data = random_file(&file, 2 << 20, 19);
    let (ta, tb) = (dir.path().join("a.torrent"), dir.path().join("b.torrent"));
    let ha = create_torrent(&file, &ta, &["-t", &a.http_url()]);
    let hb = create_torrent(&file, &tb, &["-t", &b.udp_url()]);
    assert_eq!(ha, hb);
    let h = InfoHash::parse(&ha).unwrap();

    let aria2_port = free_port();
    let _seed = aria2(true, &ta, &dir.path().join("seed"), aria2_port);
    a.wait_scrape(&ha, (1, 0, 0), "aria2 seeding through a");
    b.wait_scrape(&ha, (1, 0, 0), "b sees the seeder that announced to a");

    let leech_dir = dir.path().join("leech");
    let (mut leech, leech_port) = lt_peer("leech", &tb, &leech_dir, &[]);
    leech.wait_line(T, |l| l == "done");
    assert!(std::fs::read(leech_dir.join("payload.bin")).unwrap() == data, "the download differs");
    // libtorrent said `completed` to b and seeds on; a counts it too.
    b.wait_scrape(&ha, (2, 0, 1), "libtorrent completed through b");
    a.wait_scrape(&ha, (2, 0, 1), "a sees what b was told");

    // kill -9 of a: b still serves both peers (a made-up leecher asking b gets them both).
    a.proc.child.kill().unwrap();
    a.proc.child.wait().unwrap();
    let r = announce(&b, h, 1, 5, Event::Started).unwrap();
    let mut ports: Vec<u16> = r.peers.iter().map(|p| p.addr.port()).collect();
    ports.sort();
    let mut want = vec![aria2_port, leech_port];
    want.sort();
    assert_eq!(ports, want, "{r:?}");
    assert_eq!((r.complete, r.incomplete, r.downloaded), (2, 1, Some(1)));
    b.wait_scrape(&ha, (2, 1, 1), "b after a was killed");
}

#[test]
fn redis_restarted_under_load_the_tracker_recovers_by_itself() {
    let Some(mut redis) = Redis::start() else { return };
    let dir = tempdir();
    let mut t = start(dir.path(), "t", &redis.url());
    let h = InfoHash([5; 20]);
    announce(&t, h, 1, 5, Event::Started).unwrap();
    assert_eq!(announce(&t, h, 2, 0, Event::Started).unwrap().peers.len(), 1);

    // Load: UDP announces from several sockets, as fast as they are answered (bounded in
    // time), counting the replies of each kind.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4u16)
        .map(|i| {
            let (stop, ok, failed, server) = (stop.clone(), ok.clone(), failed.clone(), t.udp);
            std::thread::spawn(move || {
                let c = UdpClient::new(server);
                let end = Instant::now() + Duration::from_secs(120);
                let mut tid = 0u32;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    tid += 1;
                    match c.announce(InfoHash([6 + i as u8; 20]), 7000 + (tid % 50) as u16, tid) {
                        Some(Response::Announce(_)) => ok.fetch_add(1, Ordering::Relaxed),
                        Some(Response::Error { message, .. }) => {
                            assert_eq!(message, "tracker storage is unavailable; try again later");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("{other:?}"),
                    };
                }
            })
        })
        .collect();
    wait_for(T, "UDP announces answered", || (ok.load(Ordering::Relaxed) > 200).then_some(()));

    // Redis goes away: announces get a failure reason, the tracker lives on.
    redis.down();
    let reason = wait_for(T, "an HTTP failure reason", || announce(&t, h, 3, 5, Event::None).err());
    assert!(reason.contains("tracker storage is unavailable"), "{reason}");
    wait_for(T, "UDP error packets", || (failed.load(Ordering::Relaxed) > 0).then_some(()));
    assert!(t.proc.child.try_wait().unwrap().is_none(), "the tracker ended: {}", t.proc.output());
    let page = get(t.http, "/metrics");
    assert!(String::from_utf8_lossy(&page).contains("tracker storage is unavailable"));

    // Redis is back (empty: it kept nothing): the tracker serves again without a restart.
    redis.up();
    let before = ok.load(Ordering::Relaxed);
    wait_for(T, "HTTP announces served again", || announce(&t, h, 4, 5, Event::Started).ok());
    wait_for(T, "UDP announces served again", || (ok.load(Ordering::Relaxed) > before + 200).then_some(()));
    let r = announce(&t, h, 5, 0, Event::Started).unwrap();
    assert_eq!((r.complete, r.incomplete), (1, 1), "{r:?}");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.join().unwrap();
    }
    assert!(t.proc.child.try_wait().unwrap().is_none(), "the tracker ended: {}", t.proc.output());
}

/// Redis stops answering on the connections made (paused, as a busy Redis or one behind a link
/// that drops packets): the round trip under way fails after the response timeout (2 s), and
/// from then on every announce gets its failure reason (HTTP) or error packet (UDP) at once,
/// where each once waited a timeout of its own behind the others (300 concurrent HTTP
/// announces up to 8 s); once Redis answers again, the tracker serves again by itself.
#[test]
fn redis_that_stops_answering_announces_fail_at_once_until_it_answers_again() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempdir();
    let mut t = start(dir.path(), "t", &redis.url());
    let h = InfoHash([9; 20]);
    announce(&t, h, 1, 5, Event::Started).unwrap();
    let c = UdpClient::new(t.udp);
    assert!(matches!(c.announce(h, 7000, 1), Some(Response::Announce(_))));

    redis.pause();
    let unavailable = |r: Result<AnnounceResponse, String>| match r {
        Err(reason) => assert!(reason.contains("tracker storage is unavailable"), "{reason}"),
        Ok(r) => panic!("announced while Redis is paused: {r:?}"),
    };
    // The first waits out the response timeout.
    unavailable(announce(&t, h, 2, 5, Event::None));
    for id in 3..13u8 {
        let at = Instant::now();
        unavailable(announce(&t, h, id, 5, Event::None));
        match c.announce(h, 7000 + u16::from(id), u32::from(id)) {
            Some(Response::Error { message, .. }) => {
                assert_eq!(message, "tracker storage is unavailable; try again later")
            }
            other => panic!("{other:?}"),
        }
        let took = at.elapsed();
        assert!(took < Duration::from_secs(1), "announce {id} (HTTP, then UDP) answered after {took:?}");
    }
    let page = String::from_utf8_lossy(&get(t.http, "/metrics")).into_owned();
    assert!(page.contains("tracker storage is unavailable"), "{page}");
    t.proc.wait_line(T, |l| l.contains("not answering: no reply within 2 s; asking again every 100 ms"));

    redis.resume();
    wait_for(T, "HTTP announces served again", || announce(&t, h, 20, 5, Event::Started).ok());
    let mut tid = 100;
    wait_for(T, "UDP announces served again", || {
        tid += 1;
        matches!(c.announce(h, 7000, tid), Some(Response::Announce(_))).then_some(())
    });
    assert!(t.proc.child.try_wait().unwrap().is_none(), "the tracker ended: {}", t.proc.output());
}

/// A TCP proxy to Redis whose connections can go silent: those it has made then forward
/// nothing more, either way, and stay open (a NAT or a firewall that forgot them, a host gone
/// without a word), while new ones work.
struct Proxy {
    addr: SocketAddr,
    /// Connections made so far (numbered from 1).
    made: Arc<AtomicU64>,
    /// Connections numbered up to this are silent.
    silent_upto: Arc<AtomicU64>,
}

impl Proxy {
    fn start(to: &Path) -> Proxy {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (made, silent_upto) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (to, count, silent) = (to.to_owned(), made.clone(), silent_upto.clone());
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(client) = c else { return };
                let Ok(server) = std::os::unix::net::UnixStream::connect(&to) else { continue };
                let number = count.fetch_add(1, Ordering::SeqCst) + 1;
                let pipe = |mut from: Box<dyn Read + Send>, mut into: Box<dyn Write + Send>| {
                    let silent = silent.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            // Silent: what comes is read and dropped, the connection kept.
                            let forward = number > silent.load(Ordering::SeqCst);
                            if n == 0 || (forward && into.write_all(&buf[..n]).is_err()) {
                                return;
                            }
                        }
                    });
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(Box::new(client), Box::new(server));
                pipe(Box::new(s2), Box::new(c2));
            }
        });
        Proxy { addr, made, silent_upto }
    }

    /// Every connection made so far goes silent.
    fn silence(&self) {
        self.silent_upto.store(self.made.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Redis's connections die without a word (they stay open and carry nothing, as after a NAT
/// forgot them): the round trips on them time out, the tracker asks a new connection, which
/// answers, and serves again on it, over HTTP and UDP, within seconds. (Its async connection
/// once timed out on every request until TCP gave up, some 15 minutes: the connection manager
/// makes a new connection on an error, not on a timeout.)
#[test]
fn redis_connections_that_die_silently_are_replaced() {
    let Some(redis) = Redis::start() else { return };
    let proxy = Proxy::start(&redis.socket);
    let dir = tempdir();
    let t = OurTracker::start(dir.path(), &config(&format!("redis://{}", proxy.addr)));
    let h = InfoHash([10; 20]);
    wait_for(T, "HTTP announces served", || announce(&t, h, 1, 5, Event::Started).ok());
    let c = UdpClient::new(t.udp);
    let mut tid = 0;
    let udp_ok = |tid: &mut u32| {
        *tid += 1;
        matches!(c.announce(h, 7000, *tid), Some(Response::Announce(_)))
    };
    wait_for(T, "UDP announces served", || udp_ok(&mut tid).then_some(()));

    proxy.silence();
    let at = Instant::now();
    let r = wait_for(T, "HTTP announces served again", || announce(&t, h, 2, 5, Event::Started).ok());
    assert_eq!(r.incomplete, 3, "{r:?}");
    wait_for(T, "UDP announces served again", || udp_ok(&mut tid).then_some(()));
    let took = at.elapsed();
    assert!(took < Duration::from_secs(20), "served again after {took:?}");
}

/// Redis's address takes connections and never answers them: a Unix socket listened on and
/// never accepted from, where the redis crate's handshake (`CLIENT SETINFO`) waits the whole
/// connect timeout (1 s), as a connect to a TCP address that drops packets does. The UDP
/// workers answer every announce at once with an error packet (they once waited on the
/// connect themselves, every 100 ms, and answered next to nothing), and serve announces again
/// by themselves once a real Redis is at that address.
#[test]
fn redis_that_never_answers_udp_announces_get_error_packets_at_once() {
    let Some(mut redis) = Redis::start() else { return };
    redis.down();
    let _ = std::fs::remove_file(&redis.socket);
    let silent = std::os::unix::net::UnixListener::bind(&redis.socket).unwrap();
    let dir = tempdir();
    let mut t = OurTracker::start(dir.path(), &config(&redis.url()));
    let line = t.proc.wait_line(T, |l| l.starts_with("store: "));
    assert!(line.contains("not answering yet"), "{line}");

    // Across more than two connect attempts (1 s each, then 100 ms before the next).
    let c = UdpClient::new(t.udp);
    let h = InfoHash([7; 20]);
    let start = Instant::now();
    let mut tid = 0u32;
    while start.elapsed() < Duration::from_millis(2500) {
        tid += 1;
        let at = Instant::now();
        match c.announce(h, 7000, tid) {
            Some(Response::Error { message, .. }) => {
                assert_eq!(message, "tracker storage is unavailable; try again later")
            }
            other => panic!("{other:?}"),
        }
        let took = at.elapsed();
        assert!(took < Duration::from_millis(500), "announce {tid} answered after {took:?}");
    }

    // A Redis at that address: the tracker serves again without a restart.
    drop(silent);
    redis.up();
    let r = wait_for(T, "UDP announces served again", || {
        tid += 1;
        match c.announce(h, 7000, tid) {
            Some(Response::Announce(r)) => Some(r),
            _ => None,
        }
    });
    assert_eq!((r.seeders, r.leechers), (0, 1), "{r:?}");
    assert!(t.proc.child.try_wait().unwrap().is_none(), "the tracker ended: {}", t.proc.output());
}
