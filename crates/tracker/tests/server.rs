//! The tracker started in-process on loopback port 0, spoken to over real sockets with the
//! wire formats of `bitswarm-tracker-proto` (the client side of the same crate).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bitswarm_tracker::store::{Announce, Families};
use bitswarm_tracker::{Config, Handle, SwarmCounts, Tracker};
use bitswarm_tracker_proto::http::{self, AnnounceRequest, AnnounceResponse, ResponseError, ScrapeResponse};
use bitswarm_tracker_proto::udp::{self, Family, Request, Response};
use bitswarm_tracker_proto::{Event, InfoHash, PeerId};

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.http.bind = "127.0.0.1:0".parse().unwrap();
    c.udp.bind = "127.0.0.1:0".parse().unwrap();
    c.udp.threads = 2;
    edit(&mut c);
    c
}

fn start(c: Config) -> (tokio::runtime::Runtime, Handle) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = rt.block_on(Tracker::start(c)).unwrap();
    (rt, h)
}

fn stop(rt: tokio::runtime::Runtime, h: Handle) {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), h.shutdown()).await.expect("shutdown") });
}

/// One GET over an open connection; returns (status line, headers, body).
fn get_on(s: &mut BufReader<TcpStream>, path: &str, extra: &str) -> (String, String, Vec<u8>) {
    get_raw(s, path.as_bytes(), extra)
}

/// [`get_on`] with a target of any bytes.
fn get_raw(s: &mut BufReader<TcpStream>, path: &[u8], extra: &str) -> (String, String, Vec<u8>) {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(path);
    request.extend_from_slice(format!(" HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes());
    s.get_mut().write_all(&request).unwrap();
    let mut status = String::new();
    s.read_line(&mut status).unwrap();
    let mut headers = String::new();
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        s.read_line(&mut l).unwrap();
        if l == "\r\n" || l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        headers.push_str(&l);
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (status.trim_end().to_owned(), headers, body)
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let (st, _, body) = get_on(&mut connect(addr), path, "");
    (st, body)
}

fn announce(addr: SocketAddr, r: &AnnounceRequest) -> Result<AnnounceResponse, ResponseError> {
    let (st, body) = get(addr, &format!("/announce?{}", http::announce_query(r)));
    assert_eq!(st, "HTTP/1.1 200 OK");
    AnnounceResponse::decode(&body)
}

fn scrape(addr: SocketAddr, h: InfoHash) -> http::ScrapeStats {
    let (_, body) = get(addr, &format!("/scrape?{}", http::scrape_query(&[h])));
    ScrapeResponse::decode(&body).unwrap().get(&h).unwrap()
}

fn req(h: u8, id: u8, port: u16, left: u64, event: Event) -> AnnounceRequest {
    let mut r = AnnounceRequest::new(InfoHash([h; 20]), PeerId([id; 20]), port, left);
    r.event = event;
    r
}

#[test]
fn http_announce_events_and_scrape_counts() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    let h = InfoHash([1; 20]);
    let r = announce(a, &req(1, 1, 1001, 10, Event::Started)).unwrap();
    assert_eq!((r.complete, r.incomplete, r.downloaded, r.interval, r.min_interval), (0, 1, Some(0), 1800, Some(900)));
    assert!(r.peers.is_empty(), "a peer never gets itself back");
    assert_eq!(scrape(a, h), http::ScrapeStats { complete: 0, downloaded: 0, incomplete: 1 });

    // A second leecher gets the first.
    let r = announce(a, &req(1, 2, 1002, 10, Event::Started)).unwrap();
    assert_eq!(r.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec!["127.0.0.1:1001".parse().unwrap()]);

    let r = announce(a, &req(1, 1, 1001, 0, Event::Completed)).unwrap();
    assert_eq!((r.complete, r.incomplete, r.downloaded), (1, 1, Some(1)));
    assert_eq!(scrape(a, h), http::ScrapeStats { complete: 1, downloaded: 1, incomplete: 1 });

    // A seeder is not sent seeders: make the other peer a seeder too, then ask.
    announce(a, &req(1, 2, 1002, 0, Event::Completed)).unwrap();
    let r = announce(a, &req(1, 1, 1001, 0, Event::None)).unwrap();
    assert!(r.peers.is_empty(), "{r:?}");
    assert_eq!((r.complete, r.incomplete, r.downloaded), (2, 0, Some(2)));

    announce(a, &req(1, 1, 1001, 0, Event::Stopped)).unwrap();
    announce(a, &req(1, 2, 1002, 0, Event::Stopped)).unwrap();
    assert_eq!(scrape(a, h), http::ScrapeStats { complete: 0, downloaded: 2, incomplete: 0 });
    // Unknown hashes give zeros.
    assert_eq!(scrape(a, InfoHash([77; 20])), http::ScrapeStats::default());
    stop(rt, t);
}

/// Raw bytes in a connection's first target (not percent-encoded) are read as the bytes they
/// are; the HTTP parser alone would answer an empty 400 (and opentracker answers a 400 page).
/// Nothing after the first request line is changed, so a body cannot be made into a request.
#[test]
fn http_raw_bytes_in_the_query_are_read_like_escapes() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    let hash: Vec<u8> = (0x80..0x94).collect();
    let target = |raw_id: &[u8], port: u16| {
        let mut target = b"/announce?info_hash=".to_vec();
        target.extend_from_slice(&hash);
        target.extend_from_slice(b"&peer_id=");
        target.extend_from_slice(raw_id);
        target.extend_from_slice(format!("&port={port}&uploaded=0&downloaded=0&left=0&compact=1").as_bytes());
        target
    };
    for (raw_id, port) in [(b"\"<>{}|\\^`#[]\x01\x7f\xff-RW-1", 7001), (b"\"<>{}|\\^`#[]\x01\x7f\xff-RW-2", 7002)] {
        let (st, _, body) = get_raw(&mut connect(a), &target(raw_id, port), "");
        assert_eq!(st, "HTTP/1.1 200 OK");
        AnnounceResponse::decode(&body).expect("an announce reply");
    }
    assert_eq!(scrape(a, InfoHash(hash.clone().try_into().unwrap())).complete, 2);
    // A wrong one is told what is wrong, bencoded.
    let mut s = connect(a);
    let (st, _, body) = get_raw(&mut s, b"/announce?info_hash=\xff\xfe\xfd&peer_id=x", "");
    assert_eq!(st, "HTTP/1.1 200 OK");
    let Err(ResponseError::Failure(msg)) = AnnounceResponse::decode(&body) else { panic!("{body:?}") };
    assert!(msg.contains("info_hash must be exactly 20 bytes"), "{msg}");
    // Later requests on the connection are the parser's alone.
    let (st, _, _) = get_raw(&mut s, &target(b"\xff\xff\xff\xff\xff-RW-3--------", 7003), "");
    assert_eq!(st, "HTTP/1.1 400 Bad Request");

    // A body holding raw bytes and a request of its own: read as the body it is, not escaped
    // into something longer whose tail would be served as a second announce.
    // Escaping its NULs would lengthen it by twice their number: as much as the announce and
    // part of the blank lines before it, which a parser skips.
    let inner = format!("GET /announce?{} HTTP/1.1\r\n\r\n", http::announce_query(&req(44, 1, 1, 0, Event::Started)));
    let mut smuggled = b"X /".to_vec();
    smuggled.extend_from_slice(&vec![0u8; inner.len() / 2 + 10]);
    smuggled.extend_from_slice(b" H\n\n");
    smuggled.extend_from_slice(&b"\r\n".repeat(40));
    smuggled.extend_from_slice(inner.as_bytes());
    let mut s = connect(a);
    let scrape_44 = format!("/scrape?{}", http::scrape_query(&[InfoHash([44; 20])]));
    let head = format!("GET {scrape_44} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", smuggled.len());
    s.get_mut().write_all(&[head.as_bytes(), &smuggled].concat()).unwrap();
    let (st, _, _) = get_on(&mut s, &scrape_44, "");
    assert_eq!(st, "HTTP/1.1 200 OK");
    assert_eq!(scrape(a, InfoHash([44; 20])), http::ScrapeStats::default(), "the announce in the body was not served");
    stop(rt, t);
}

#[test]
fn http_errors_are_bencoded_failures_with_status_200() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    let good = http::announce_query(&req(1, 1, 1, 0, Event::None));
    let cases: Vec<(String, &str)> = vec![
        ("/announce".into(), "missing parameter: info_hash"),
        ("/announce?info_hash=abc".into(), "info_hash must be exactly 20 bytes"),
        (good.replace("port=1", "port=0"), "port must be between 1 and 65535"),
        (good.replace("port=1", "port=70000"), "port must be between 1 and 65535"),
        (good.replace("left=0", "left=x"), "left must be a non-negative whole number"),
        (good.replace("left=0", "left=0&event=paused2"), "unknown event"),
        (good.replace("peer_id=", "peer_id=%zz"), "malformed percent-encoding in peer_id"),
        ("/scrape".into(), "full scrape is disabled"),
        ("/scrape?info_hash=%00".into(), "info_hash must be exactly 20 bytes"),
    ];
    for (q, want) in cases {
        let path = if q.starts_with('/') { q.clone() } else { format!("/announce?{q}") };
        let (st, body) = get(a, &path);
        assert_eq!(st, "HTTP/1.1 200 OK", "{path}");
        let err = AnnounceResponse::decode(&body).unwrap_err();
        let ResponseError::Failure(msg) = err else { panic!("{path}: {err:?}") };
        assert!(msg.contains(want), "{path}: {msg:?}");
        assert!(!msg.contains(".rs"), "no source paths in errors: {msg}");
    }
    let (st, _) = get(a, "/nothing-here");
    assert!(st.contains("404"), "{st}");
    // The process is still serving.
    assert!(announce(a, &req(1, 1, 1, 0, Event::None)).is_ok());
    stop(rt, t);
}

#[test]
fn http_keep_alive_and_peer_forms() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    let mut conn = connect(a);
    let mut seen = Vec::new();
    for port in 2000..2005u16 {
        let mut r = req(3, port as u8, port, 5, Event::Started);
        r.compact = false;
        let (st, headers, body) = get_on(&mut conn, &format!("/announce?{}", http::announce_query(&r)), "");
        assert_eq!(st, "HTTP/1.1 200 OK");
        assert!(!headers.to_ascii_lowercase().contains("connection: close"), "{headers}");
        seen.push(AnnounceResponse::decode(&body).unwrap());
    }
    // The dictionary form carries peer ids; no_peer_id leaves them out.
    let last = seen.last().unwrap();
    assert_eq!(last.peers.len(), 4);
    for p in &last.peers {
        assert_eq!(p.peer_id, Some(PeerId([p.addr.port() as u8; 20])));
    }
    let mut r = req(3, 9, 2009, 5, Event::None);
    r.compact = false;
    r.no_peer_id = true;
    let (_, _, body) = get_on(&mut conn, &format!("/announce?{}", http::announce_query(&r)), "");
    assert!(!body.windows(7).any(|w| w == b"peer id"));
    assert_eq!(AnnounceResponse::decode(&body).unwrap().peers.len(), 5);
    // numwant is honoured and capped.
    let mut r = req(3, 10, 2010, 5, Event::None);
    r.numwant = Some(2);
    assert_eq!(announce(a, &r).unwrap().peers.len(), 2);
    // Connection: close is honoured.
    let (_, headers, _) = get_on(&mut conn, "/scrape?info_hash=aaaaaaaaaaaaaaaaaaaa", "Connection: close\r\n");
    assert!(headers.to_ascii_lowercase().contains("connection: close"), "{headers}");
    stop(rt, t);
}

/// Reads until the server closes the connection (or the 10 s read timeout); returns what came
/// and how long the close took from `since`.
fn until_closed(s: &mut TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, since.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, since.elapsed()),
            Err(e) => panic!("the connection stayed open {:?}: {e}", since.elapsed()),
        }
    }
}

/// A connection that sends nothing, one that trickles a header and never ends it, and an idle
/// keep-alive connection are all closed after `http.header_timeout`; a request in time is served.
#[test]
fn http_connections_that_send_no_request_are_closed() {
    let (rt, t) = start(config(|c| c.http.header_timeout = 1));
    let a = t.http_addr.unwrap();
    let start = Instant::now();
    let mut silent = connect(a).into_inner();
    let mut trickle = connect(a).into_inner();
    trickle.write_all(b"GET /announce?info_hash=").unwrap();
    let mut idle = connect(a);
    let r = req(5, 1, 3000, 5, Event::Started);
    let (st, _, _) = get_on(&mut idle, &format!("/announce?{}", http::announce_query(&r)), "");
    assert_eq!(st, "HTTP/1.1 200 OK");
    let idle_since = Instant::now();
    let (got, took) = until_closed(&mut silent, start);
    assert!(got.is_empty() && took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let (_, took) = until_closed(&mut trickle, start);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let (got, took) = until_closed(idle.get_mut(), idle_since);
    assert!(got.is_empty() && took < Duration::from_secs(5), "{took:?}: {}", String::from_utf8_lossy(&got));
    // A fresh connection is served as ever.
    assert_eq!(announce(a, &req(5, 2, 3001, 5, Event::Started)).unwrap().peers.len(), 1);
    stop(rt, t);
}

/// A client that asks and never reads what it asked for is dropped after `http.write_timeout`,
/// instead of holding its connection and the replies queued for it for ever.
#[test]
fn http_clients_that_never_read_are_closed() {
    let (rt, t) = start(config(|c| {
        c.http.write_timeout = 1;
        c.http.header_timeout = 3600;
        c.stats.max_swarms_listed = 100_000;
    }));
    // 20,000 swarms make each /stats reply megabytes: a few fill the socket buffers.
    for i in 0..20_000u32 {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        let a = Announce {
            info_hash: InfoHash(h),
            peer_id: PeerId([1; 20]),
            addr: "127.0.0.1:5000".parse().unwrap(),
            left: 1,
            event: Event::Started,
            numwant: 0,
            families: Families::Same,
        };
        t.shared().backend.memory().unwrap().announce(&a, &mut Vec::<u8>::new());
    }
    let a = t.http_addr.unwrap();
    let one = get(a, "/stats").1.len();
    assert!(one > 1_000_000, "{one}");
    let asks = 64;
    let mut s = connect(a).into_inner();
    s.write_all(&b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n".repeat(asks)).unwrap();
    // Not reading, for longer than the write timeout (a test of a timeout has to let it pass).
    std::thread::sleep(Duration::from_secs(3));
    let reading = Instant::now();
    let (got, took) = until_closed(&mut s, reading);
    assert!(
        got.len() < asks * one / 2,
        "the tracker wrote {} of {} bytes: it kept the connection",
        got.len(),
        asks * one
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The tracker serves on.
    assert_eq!(announce(a, &req(5, 2, 3001, 5, Event::Started)).unwrap().peers.len(), 0);
    stop(rt, t);
}

#[test]
fn http_ipv6_peers_in_peers6() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        panic!("IPv6 loopback is not available on this machine");
    };
    drop(probe);
    let (rt, t) = start(config(|c| c.http.bind = "[::]:0".parse().unwrap()));
    let port = t.http_addr.unwrap().port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    announce(v6, &req(4, 1, 3001, 5, Event::Started)).unwrap();
    let (_, body) = get(v4, &format!("/announce?{}", http::announce_query(&req(4, 2, 3002, 5, Event::Started))));
    assert!(body.windows(7).any(|w| w == b"6:peers"), "IPv6 peer in peers6");
    let r = AnnounceResponse::decode(&body).unwrap();
    assert_eq!(r.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec!["[::1]:3001".parse().unwrap()]);
    let r = announce(v6, &req(4, 1, 3001, 5, Event::None)).unwrap();
    assert_eq!(r.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec!["127.0.0.1:3002".parse().unwrap()]);
    stop(rt, t);
}

#[test]
fn http_client_address_from_trusted_proxy_only_and_ip_param_ignored() {
    let (rt, t) = start(config(|c| {
        c.http.real_ip_header = "X-Forwarded-For".into();
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    }));
    let a = t.http_addr.unwrap();
    let mut r = req(5, 1, 4001, 5, Event::Started);
    r.ip = Some("10.9.9.9".parse().unwrap());
    let q = format!("/announce?{}", http::announce_query(&r));
    let (st, _, _) = get_on(&mut connect(a), &q, "X-Forwarded-For: 203.0.113.7, 198.51.100.1\r\n");
    assert_eq!(st, "HTTP/1.1 200 OK");
    let r2 = announce_with(a, &req(5, 2, 4002, 5, Event::Started), "X-Forwarded-For: 198.51.100.2\r\n");
    assert_eq!(
        r2.peers.iter().map(|p| p.addr).collect::<Vec<_>>(),
        vec!["198.51.100.1:4001".parse().unwrap()],
        "the last X-Forwarded-For entry, not the ip parameter"
    );
    // A client's own header line comes first and the proxy adds its line after it (HAProxy):
    // the last line counts, so a client cannot pose as another address. An IPv4 entry may
    // carry the client's port.
    announce_with(
        a,
        &req(5, 3, 4003, 5, Event::Started),
        "X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 198.51.100.3\r\n",
    );
    announce_with(a, &req(5, 4, 4004, 5, Event::Started), "X-Forwarded-For: 10.1.1.1, 198.51.100.4:5555\r\n");
    let r5 = announce_with(a, &req(5, 5, 4005, 5, Event::Started), "X-Forwarded-For: 198.51.100.5\r\n");
    let mut got = r5.peers.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["198.51.100.1:4001", "198.51.100.2:4002", "198.51.100.3:4003", "198.51.100.4:4004"]);
    // From the trusted proxy without the header: a failure, not the proxy's own address.
    let (_, _, body) = get_on(&mut connect(a), &q, "");
    assert!(matches!(AnnounceResponse::decode(&body), Err(ResponseError::Failure(m)) if m.contains("proxy")));
    stop(rt, t);

    // Not a trusted proxy: the header is ignored.
    let (rt, t) = start(config(|c| {
        c.http.real_ip_header = "X-Real-IP".into();
        c.http.trusted_proxies = vec!["10.0.0.1".parse().unwrap()];
    }));
    let a = t.http_addr.unwrap();
    announce_with(a, &req(6, 1, 4001, 5, Event::Started), "X-Real-IP: 203.0.113.9\r\n");
    let r = announce(a, &req(6, 2, 4002, 5, Event::Started)).unwrap();
    assert_eq!(r.peers.iter().map(|p| p.addr).collect::<Vec<_>>(), vec!["127.0.0.1:4001".parse().unwrap()]);
    stop(rt, t);
}

fn announce_with(a: SocketAddr, r: &AnnounceRequest, header: &str) -> AnnounceResponse {
    let (_, _, body) = get_on(&mut connect(a), &format!("/announce?{}", http::announce_query(r)), header);
    AnnounceResponse::decode(&body).unwrap()
}

/// One scrape of several swarms: each is listed once, an unknown one with zeros.
#[test]
fn http_scrape_of_several_swarms() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    announce(a, &req(14, 1, 1, 0, Event::Started)).unwrap();
    announce(a, &req(14, 2, 2, 5, Event::Started)).unwrap();
    announce(a, &req(15, 1, 1, 5, Event::Started)).unwrap();
    let hashes = [InfoHash([14; 20]), InfoHash([15; 20]), InfoHash([16; 20]), InfoHash([14; 20])];
    let (_, body) = get(a, &format!("/scrape?{}", http::scrape_query(&hashes)));
    let s = ScrapeResponse::decode(&body).unwrap();
    assert_eq!(s.files.len(), 3, "{s:?}");
    let counts = |h: u8| s.get(&InfoHash([h; 20])).map(|c| (c.complete, c.incomplete, c.downloaded));
    assert_eq!((counts(14), counts(15), counts(16)), (Some((1, 1, 0)), Some((0, 1, 0)), Some((0, 0, 0))));
    stop(rt, t);
}

#[test]
fn full_scrape_when_configured() {
    let (rt, t) = start(config(|c| c.scrape.full_scrape = true));
    let a = t.http_addr.unwrap();
    announce(a, &req(7, 1, 1, 5, Event::Started)).unwrap();
    announce(a, &req(8, 1, 1, 0, Event::Started)).unwrap();
    let (_, body) = get(a, "/scrape");
    let s = ScrapeResponse::decode(&body).unwrap();
    assert_eq!(s.files.len(), 2);
    assert_eq!(s.get(&InfoHash([8; 20])).unwrap().complete, 1);
    stop(rt, t);
}

// ---- UDP ----

struct UdpClient {
    sock: UdpSocket,
    family: Family,
}

impl UdpClient {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind(if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).unwrap();
        sock.connect(server).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        UdpClient { sock, family: if server.is_ipv4() { Family::V4 } else { Family::V6 } }
    }
    fn send(&self, p: &[u8]) {
        self.sock.send(p).unwrap();
    }
    fn recv(&self) -> Response {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).expect("a reply");
        Response::parse(&buf[..n], self.family).unwrap()
    }
    fn connect_id(&self, tid: u32) -> u64 {
        self.send(&Request::Connect { transaction_id: tid }.encode());
        match self.recv() {
            Response::Connect { transaction_id, connection_id } => {
                assert_eq!(transaction_id, tid);
                connection_id
            }
            other => panic!("{other:?}"),
        }
    }
}

fn udp_announce(cid: u64, tid: u32, h: u8, id: u8, port: u16, left: u64, event: Event) -> udp::AnnounceRequest {
    udp::AnnounceRequest {
        connection_id: cid,
        transaction_id: tid,
        info_hash: InfoHash([h; 20]),
        peer_id: PeerId([id; 20]),
        downloaded: 0,
        left,
        uploaded: 0,
        event,
        ip: None,
        key: 0,
        num_want: None,
        port,
        url_data: Vec::new(),
    }
}

#[test]
fn udp_connect_announce_scrape() {
    let (rt, t) = start(config(|_| {}));
    let c = UdpClient::new(t.udp_addr.unwrap());
    let cid = c.connect_id(7);
    c.send(&Request::Announce(udp_announce(cid, 8, 9, 1, 5001, 10, Event::Started)).encode());
    let Response::Announce(r) = c.recv() else { panic!() };
    assert_eq!((r.transaction_id, r.interval, r.leechers, r.seeders, r.peers.len()), (8, 1800, 1, 0, 0));

    // A second peer, with BEP 41 URL data after the announce.
    let mut second = udp_announce(cid, 9, 9, 2, 5002, 0, Event::Started);
    second.url_data = b"/announce?passkey=x".to_vec();
    c.send(&Request::Announce(second).encode());
    let Response::Announce(r) = c.recv() else { panic!() };
    assert_eq!((r.leechers, r.seeders), (1, 1));
    assert_eq!(r.peers, udp::Peers::V4(vec!["127.0.0.1:5001".parse().unwrap()]));

    c.send(&Request::Announce(udp_announce(cid, 10, 9, 1, 5001, 0, Event::Completed)).encode());
    c.recv();
    c.send(
        &Request::Scrape(udp::ScrapeRequest {
            connection_id: cid,
            transaction_id: 11,
            info_hashes: vec![InfoHash([9; 20]), InfoHash([0x42; 20])],
        })
        .encode(),
    );
    let Response::Scrape(s) = c.recv() else { panic!() };
    assert_eq!(s.transaction_id, 11);
    // Longer than any request may be (140 hashes, 2,816 bytes): said so, not misread.
    let long = udp::ScrapeRequest { connection_id: cid, transaction_id: 13, info_hashes: vec![InfoHash([9; 20]); 140] };
    c.send(&Request::Scrape(long).encode());
    assert_eq!(
        c.recv(),
        Response::Error { transaction_id: 13, message: "packet too long: more than 2048 bytes".into() }
    );
    assert_eq!(s.stats, vec![udp::ScrapeStats { seeders: 2, completed: 1, leechers: 0 }, udp::ScrapeStats::default()]);
    // Both protocols share the swarm.
    assert_eq!(t.counts(&InfoHash([9; 20])), SwarmCounts { seeders: 2, leechers: 0, downloaded: 1 });
    c.send(&Request::Announce(udp_announce(cid, 12, 9, 1, 5001, 0, Event::Stopped)).encode());
    let Response::Announce(r) = c.recv() else { panic!() };
    assert_eq!((r.seeders, r.peers.len()), (1, 0));
    stop(rt, t);
}

#[test]
fn udp_bad_connection_ids_and_junk_get_no_reply_and_hurt_nothing() {
    let (rt, t) = start(config(|_| {}));
    let c = UdpClient::new(t.udp_addr.unwrap());
    // Garbage of every length, a wrong connection id, a bad protocol id: no reply to any. The
    // connect sent last is answered first, which shows nothing came back before it.
    for n in 0..120 {
        c.send(&vec![0xA5; n]);
    }
    c.send(&Request::Announce(udp_announce(12345, 1, 9, 1, 5001, 10, Event::Started)).encode());
    c.send(
        &Request::Scrape(udp::ScrapeRequest {
            connection_id: 1,
            transaction_id: 2,
            info_hashes: vec![InfoHash([1; 20])],
        })
        .encode(),
    );
    let mut bad = Request::Connect { transaction_id: 3 }.encode();
    bad[0] = 9;
    c.send(&bad);
    let cid = c.connect_id(99);
    // With a valid connection id a malformed request gets an error that says why.
    let mut p = Request::Announce(udp_announce(cid, 4, 9, 1, 5001, 10, Event::Started)).encode();
    p[83] = 7;
    c.send(&p);
    match c.recv() {
        Response::Error { transaction_id: 4, message } => assert_eq!(message, "unknown event 7"),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.totals().peers, 0);
    let m = &t.shared().metrics;
    assert_eq!(m.total(bitswarm_tracker::stats::Proto::Udp, |c| &c.bad_connection_ids), 2);
    stop(rt, t);
}

#[test]
fn udp_over_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine");
    }
    let (rt, t) = start(config(|c| c.udp.bind = "[::1]:0".parse().unwrap()));
    let c = UdpClient::new(t.udp_addr.unwrap());
    let cid = c.connect_id(1);
    c.send(&Request::Announce(udp_announce(cid, 2, 5, 1, 6001, 10, Event::Started)).encode());
    c.recv();
    c.send(&Request::Announce(udp_announce(cid, 3, 5, 2, 6002, 10, Event::Started)).encode());
    let Response::Announce(r) = c.recv() else { panic!() };
    assert_eq!(r.peers, udp::Peers::V6(vec!["[::1]:6001".parse().unwrap()]));
    // Replies stay within the minimum IPv6 MTU: at most 67 peers however many are asked for.
    assert_eq!(peers_given_to_a_big_ask(&c, cid, 5, 100), bitswarm_tracker::udp::MAX_V6_PEERS);
    stop(rt, t);
}

/// Announces `want + 1` peers to swarm `h`, then one more asking for `want`: the peers it got.
fn peers_given_to_a_big_ask(c: &UdpClient, cid: u64, h: u8, want: u16) -> usize {
    for port in 7000..=7000 + want {
        c.send(&Request::Announce(udp_announce(cid, 4, h, 3, port, 10, Event::Started)).encode());
        c.recv();
    }
    let mut big = udp_announce(cid, 5, h, 4, 6003, 10, Event::Started);
    big.num_want = Some(want.into());
    c.send(&Request::Announce(big).encode());
    let Response::Announce(r) = c.recv() else { panic!() };
    r.peers.len()
}

#[test]
fn udp_ipv4_replies_stay_within_one_frame_whatever_numwant_max_says() {
    let (rt, t) = start(config(|c| c.announce.numwant_max = 1000));
    let c = UdpClient::new(t.udp_addr.unwrap());
    let cid = c.connect_id(1);
    assert_eq!(peers_given_to_a_big_ask(&c, cid, 4, 1000), bitswarm_tracker::udp::MAX_V4_PEERS);
    stop(rt, t);
}

/// The `ip` an announce claims is where the peer is stored only when the configuration says
/// so (HTTP `allow_ip_param`, UDP `allow_ip_field`); otherwise the sender's address is.
#[test]
fn claimed_addresses_are_honoured_only_when_configured() {
    for honour in [false, true] {
        let (rt, t) = start(config(|c| {
            c.http.allow_ip_param = honour;
            c.udp.allow_ip_field = honour;
        }));
        let (stored_http, stored_udp) =
            if honour { ("10.1.2.3:4001", "10.4.5.6:5001") } else { ("127.0.0.1:4001", "127.0.0.1:5001") };
        let a = t.http_addr.unwrap();
        let mut r = req(12, 1, 4001, 5, Event::Started);
        r.ip = Some("10.1.2.3".parse().unwrap());
        announce(a, &r).unwrap();
        let got = announce(a, &req(12, 2, 4002, 5, Event::Started)).unwrap();
        assert_eq!(
            got.peers.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(),
            [stored_http],
            "HTTP, honour {honour}"
        );

        let c = UdpClient::new(t.udp_addr.unwrap());
        let cid = c.connect_id(1);
        let mut claimed = udp_announce(cid, 2, 13, 1, 5001, 5, Event::Started);
        claimed.ip = Some("10.4.5.6".parse().unwrap());
        c.send(&Request::Announce(claimed).encode());
        c.recv();
        c.send(&Request::Announce(udp_announce(cid, 3, 13, 2, 5002, 5, Event::Started)).encode());
        let Response::Announce(r) = c.recv() else { panic!() };
        assert_eq!(r.peers, udp::Peers::V4(vec![stored_udp.parse().unwrap()]), "UDP, honour {honour}");
        stop(rt, t);
    }
}

#[test]
fn udp_claimed_ipv4_over_ipv6_is_stored_but_its_peers_are_not_sent_as_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is not available on this machine");
    }
    let (rt, t) = start(config(|c| {
        c.udp.bind = "[::1]:0".parse().unwrap();
        c.udp.allow_ip_field = true;
    }));
    let c = UdpClient::new(t.udp_addr.unwrap());
    let cid = c.connect_id(1);
    for (tid, id, ip) in [(2, 1, "10.0.0.1"), (3, 2, "10.0.0.2")] {
        let mut a = udp_announce(cid, tid, 6, id, 6001, 10, Event::Started);
        a.ip = Some(ip.parse().unwrap());
        c.send(&Request::Announce(a).encode());
        let Response::Announce(r) = c.recv() else { panic!() };
        // The IPv6 reply's 18-byte format cannot carry the IPv4 peers.
        assert_eq!((r.transaction_id, r.peers.len()), (tid, 0));
    }
    assert_eq!(t.counts(&InfoHash([6; 20])).leechers, 2);
    stop(rt, t);
}

#[test]
fn peers_expire_and_caps_hold() {
    let (rt, t) = start(config(|c| {
        (c.announce.interval, c.announce.min_interval) = (1, 1);
        c.store.peer_timeout = 2;
        c.store.cleaner_interval = 1;
        c.store.max_peers_per_swarm = 2;
    }));
    let a = t.http_addr.unwrap();
    let h = InfoHash([10; 20]);
    announce(a, &req(10, 1, 1, 5, Event::Started)).unwrap();
    announce(a, &req(10, 2, 2, 5, Event::Started)).unwrap();
    let r = announce(a, &req(10, 3, 3, 5, Event::Started)).unwrap();
    assert_eq!((r.incomplete, r.peers.len()), (2, 2), "the third peer gets peers but is not stored");
    assert_eq!(scrape(a, h).incomplete, 2);
    let start = Instant::now();
    while t.totals().swarms > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "peers did not expire");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(scrape(a, h), http::ScrapeStats::default());
    let (_, metrics) = get(a, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("bitswarm_tracker_peers_expired_total 2"), "{metrics}");
    assert!(metrics.contains("bitswarm_tracker_peers_refused_total{protocol=\"http\"} 1"), "{metrics}");
    assert!(metrics.contains("bitswarm_tracker_swarms 0"), "{metrics}");
    stop(rt, t);
}

#[test]
fn a_busy_port_is_an_error_not_a_shared_socket() {
    let (rt, t) = start(config(|c| c.http.threads = 2));
    let taken = t.http_addr.unwrap();
    let err = rt.block_on(Tracker::start(config(|c| {
        c.http.bind = taken;
        c.http.threads = 2;
    })));
    let err = err.err().expect("a second tracker on the same port must fail");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    // Both listeners of the first one serve.
    for _ in 0..20 {
        assert!(announce(taken, &req(1, 1, 1, 0, Event::None)).is_ok());
    }
    stop(rt, t);
}

#[test]
fn stats_page_json_and_metrics_list_swarms() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    announce(a, &req(0xab, 1, 1, 0, Event::Started)).unwrap();
    announce(a, &req(0xab, 2, 2, 5, Event::Started)).unwrap();
    announce(a, &req(0xcd, 1, 1, 5, Event::Started)).unwrap();
    let (_, html) = get(a, "/");
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains(&format!("<tr><td>{}</td><td>1</td><td>1</td><td>0</td>", "ab".repeat(20))), "{html}");
    assert!(html.contains("2 swarms, 3 peers (1 seeders, 2 leechers)"), "{html}");
    let (_, json) = get(a, "/stats");
    let j: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(j["totals"]["swarms"], 2);
    assert_eq!(j["totals"]["peers"], 3);
    assert_eq!(j["requests"]["http_announces"], 3);
    assert_eq!(j["swarms"][0]["info_hash"], "ab".repeat(20), "busiest first");
    assert_eq!(j["swarms"][0]["seeders"], 1);
    let (_, m) = get(a, "/metrics");
    let m = String::from_utf8(m).unwrap();
    for line in [
        "bitswarm_tracker_announces_total{protocol=\"http\"} 3",
        "bitswarm_tracker_swarms 2",
        "bitswarm_tracker_seeders 1",
        "bitswarm_tracker_leechers 2",
        "# TYPE bitswarm_tracker_peers gauge",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing from\n{m}");
    }
    stop(rt, t);

    // Off by configuration.
    let (rt, t) = start(config(|c| c.stats.enabled = false));
    assert!(get(t.http_addr.unwrap(), "/stats").0.contains("404"));
    stop(rt, t);
}

#[test]
fn dropping_the_handle_stops_the_tracker() {
    let (rt, t) = start(config(|_| {}));
    let a = t.http_addr.unwrap();
    assert!(announce(a, &req(1, 1, 1, 0, Event::None)).is_ok());
    drop(t);
    let start = Instant::now();
    while TcpStream::connect(a).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(10), "still listening after the handle was dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rt);
}
