use super::*;
use crate::krpc::Want;
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn new_node(config: Config) -> (Dht, Instant) {
    let now = Instant::now();
    (Dht::new(config, [7; 32], now).unwrap(), now)
}

fn drain(d: &mut Dht) -> Vec<Transmit> {
    std::iter::from_fn(|| d.poll_transmit()).collect()
}

fn events(d: &mut Dht) -> Vec<Event> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

/// Sends `method` from `from` and returns the decoded answer, if any.
fn ask(d: &mut Dht, now: Instant, from: SocketAddr, id: NodeId, method: Method) -> Option<Message> {
    d.handle_packet(now, from, &Message::query(b"qq".to_vec(), id, method).encode());
    // Answers only: a stranger also gets pinged, to be confirmed for the routing table.
    let out: Vec<Message> = drain(d)
        .into_iter()
        .filter(|t| t.dest == from)
        .map(|t| Message::decode(&t.bytes).unwrap())
        .filter(|m| !matches!(m.body, Body::Query(_)))
        .collect();
    assert!(out.len() <= 1, "{out:?}");
    out.into_iter().next()
}

fn response(m: Option<Message>) -> Response {
    match m.map(|m| m.body) {
        Some(Body::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn peer_id(b: u8) -> NodeId {
    NodeId([b; 20])
}

#[test]
fn answers_ping_with_our_id_and_the_address_it_saw() {
    let (mut d, now) = new_node(Config::default());
    let from = addr("203.0.113.5:6881");
    let m = ask(&mut d, now, from, peer_id(1), Method::Ping).unwrap();
    assert_eq!(m.transaction_id, b"qq");
    assert_eq!(m.ip, Some(from));
    assert_eq!(response(Some(m)).id, d.id());
    // It is now in the table, unconfirmed, and gets pinged to be confirmed.
    assert_eq!(d.routing_table(false).len(), 1);
}

#[test]
fn malformed_queries_get_errors_that_say_why_and_garbage_gets_nothing() {
    let (mut d, now) = new_node(Config::default());
    let from = addr("203.0.113.5:6881");
    d.handle_packet(now, from, b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe");
    let out = drain(&mut d);
    let m = Message::decode(&out[0].bytes).unwrap();
    assert_eq!(m.body, Body::Error { code: krpc::code::PROTOCOL, message: "`id` is 3 bytes long, expected 20".into() });
    d.handle_packet(now, from, b"d1:ad2:id20:abcdefghij0123456789e1:q3:put1:t2:aa1:y1:qe");
    let m = Message::decode(&drain(&mut d)[0].bytes).unwrap();
    assert!(matches!(m.body, Body::Error { code: krpc::code::METHOD_UNKNOWN, .. }));
    for junk in [&b""[..], b"garbage", b"d1:t2:aae", b"le"] {
        d.handle_packet(now, from, junk);
        assert!(drain(&mut d).is_empty());
    }
}

#[test]
fn tokens_announces_values_scrape_and_samples() {
    let (mut d, now) = new_node(Config::default());
    let h = InfoHash([0x33; 20]);
    let a = addr("203.0.113.5:6881");
    let get = Method::GetPeers { info_hash: h, noseed: false, scrape: false };
    let r = response(ask(&mut d, now, a, peer_id(1), get.clone()));
    let token = r.token.expect("get_peers hands out a token");
    assert!(r.values.is_empty());

    // A wrong token, or the right one from another address, is refused with 203.
    let announce = |token: Vec<u8>, port, implied_port| Method::AnnouncePeer {
        info_hash: h,
        port,
        implied_port,
        token,
        seed: false,
    };
    let m = ask(&mut d, now, addr("203.0.113.6:6881"), peer_id(2), announce(token.clone(), 1000, false)).unwrap();
    assert_eq!(m.body, Body::Error { code: krpc::code::PROTOCOL, message: "invalid token".into() });
    assert_eq!(d.stored_torrents(), 0);

    response(ask(&mut d, now, a, peer_id(1), announce(token.clone(), 1000, false)));
    // implied_port: the source port counts.
    let b = addr("198.51.100.7:4444");
    let tb = response(ask(&mut d, now, b, peer_id(3), get.clone())).token.unwrap();
    response(ask(&mut d, now, b, peer_id(3), announce(tb, 0, true)));
    assert_eq!(d.stored_torrents(), 1);

    let r = response(ask(&mut d, now, addr("192.0.2.1:1"), peer_id(4), get));
    let mut values = r.values.clone();
    values.sort();
    assert_eq!(values, vec![addr("198.51.100.7:4444"), addr("203.0.113.5:1000")]);

    let r = response(ask(
        &mut d,
        now,
        addr("192.0.2.1:1"),
        peer_id(4),
        Method::GetPeers { info_hash: h, noseed: false, scrape: true },
    ));
    assert!((r.bf_peers.unwrap().estimate() - 2.0).abs() < 0.6);
    assert!(r.bf_seeds.unwrap().estimate() < 1.0);

    let r =
        response(ask(&mut d, now, addr("192.0.2.1:1"), peer_id(4), Method::SampleInfohashes { target: peer_id(9) }));
    assert_eq!(r.samples, Some(vec![h]));
    assert_eq!((r.num, r.interval), (Some(1), Some(6 * 3600)));
}

#[test]
fn want_selects_node_families() {
    let (mut d, now) = new_node(Config::default());
    d.import_nodes(
        now,
        &[
            NodeInfo { id: peer_id(0x10), addr: addr("203.0.113.10:1") },
            NodeInfo { id: peer_id(0x11), addr: addr("[2001:db8::11]:1") },
        ],
    );
    // Imported nodes are unconfirmed: not handed out until they answer. Confirm them.
    for t in drain(&mut d) {
        let _ = t;
    }
    let confirm = |d: &mut Dht, id: NodeId, a: SocketAddr| {
        d.add_node(now, a);
        let q = drain(d).into_iter().find(|t| t.dest == a).expect("a ping");
        let tid = Message::decode(&q.bytes).unwrap().transaction_id;
        d.handle_packet(now, a, &Message::response(tid, Response::new(id)).encode());
    };
    confirm(&mut d, peer_id(0x10), addr("203.0.113.10:1"));
    confirm(&mut d, peer_id(0x11), addr("[2001:db8::11]:1"));
    let mut q = Query { id: peer_id(1), want: Want::default(), method: Method::FindNode { target: peer_id(0x12) } };
    let from = addr("192.0.2.1:1");
    let ask_want = |d: &mut Dht, q: &Query| {
        let m = Message {
            transaction_id: b"w".to_vec(),
            version: None,
            read_only: true,
            ip: None,
            body: Body::Query(q.clone()),
        };
        d.handle_packet(now, from, &m.encode());
        let t = drain(d).into_iter().find(|t| t.dest == from).unwrap();
        response(Some(Message::decode(&t.bytes).unwrap())).nodes.len()
    };
    assert_eq!(ask_want(&mut d, &q), 1, "no want: the family of the query");
    q.want = Want { n4: true, n6: true };
    assert_eq!(ask_want(&mut d, &q), 2);
    q.want = Want { n4: false, n6: true };
    assert_eq!(ask_want(&mut d, &q), 1);
}

#[test]
fn read_only_nodes_are_answered_but_not_kept_and_read_only_mode_answers_nothing() {
    let (mut d, now) = new_node(Config::default());
    let m = Message { read_only: true, ..Message::query(b"r".to_vec(), peer_id(1), Method::Ping) };
    d.handle_packet(now, addr("203.0.113.5:6881"), &m.encode());
    assert_eq!(drain(&mut d).len(), 1);
    assert!(d.routing_table(false).is_empty());

    let (mut ro, now) = new_node(Config { read_only: true, ..Config::default() });
    assert!(ask(&mut ro, now, addr("203.0.113.5:6881"), peer_id(1), Method::Ping).is_none());
    ro.add_node(now, addr("203.0.113.9:1"));
    let q = Message::decode(&drain(&mut ro)[0].bytes).unwrap();
    assert!(q.read_only, "our queries say ro=1");
}

#[test]
fn queries_from_one_address_are_rate_limited() {
    let (mut d, now) = new_node(Config { per_ip_rate: 5.0, per_ip_burst: 10.0, ..Config::default() });
    let from = addr("203.0.113.5:6881");
    let answered = (0..100).filter(|_| ask(&mut d, now, from, peer_id(1), Method::Ping).is_some()).count();
    assert_eq!(answered, 10);
    // Another address is not affected; the first is served again a second later.
    assert!(ask(&mut d, now, addr("203.0.113.6:6881"), peer_id(2), Method::Ping).is_some());
    let later = now + Duration::from_secs(1);
    assert_eq!((0..100).filter(|_| ask(&mut d, later, from, peer_id(1), Method::Ping).is_some()).count(), 5);
}

/// A get_peers lookup against one fake node that answers with a token, a peer and a closer
/// node, which never answers: peers reported, the silent node timed out, then the announce.
#[test]
fn lookup_collects_peers_times_out_silent_nodes_and_announces_with_tokens() {
    let (mut d, t0) = new_node(Config::default());
    let h = InfoHash([0x80; 20]);
    let n1 = NodeInfo { id: NodeId([0x81; 20]), addr: addr("203.0.113.1:1000") };
    let n2 = NodeInfo { id: NodeId([0x80; 20]), addr: addr("203.0.113.2:1000") };
    d.import_nodes(t0, &[n1]);
    drain(&mut d);
    let lid = d.announce(t0, h, 6881, false);
    let out = drain(&mut d);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dest, n1.addr);
    let q = Message::decode(&out[0].bytes).unwrap();
    assert!(
        matches!(&q.body, Body::Query(Query { method: Method::GetPeers { info_hash, .. }, .. }) if *info_hash == h)
    );

    let mut r = Response::new(n1.id);
    r.token = Some(b"tok1".to_vec());
    r.values = vec![addr("198.51.100.1:51413")];
    r.nodes = vec![n2];
    // A spoofed answer from another address changes nothing.
    d.handle_packet(t0, addr("203.0.113.66:1000"), &Message::response(q.transaction_id.clone(), r.clone()).encode());
    assert!(events(&mut d).is_empty());
    d.handle_packet(t0, n1.addr, &Message::response(q.transaction_id, r).encode());
    assert_eq!(
        events(&mut d),
        vec![Event::Peers { lookup: lid, info_hash: h, peers: vec![addr("198.51.100.1:51413")] }]
    );
    let out = drain(&mut d);
    assert_eq!(out.iter().map(|t| t.dest).collect::<Vec<_>>(), vec![n2.addr]);

    // n2 never answers.
    let deadline = d.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(2));
    d.handle_timeout(deadline);
    let ev = events(&mut d);
    let Some(Event::LookupDone { lookup, closest, stats, .. }) = ev.first() else { panic!("{ev:?}") };
    assert_eq!(*lookup, lid);
    assert_eq!(closest, &vec![n1]);
    assert_eq!((stats.queries, stats.responses, stats.timeouts, stats.rounds), (2, 1, 1, 2));

    let out = drain(&mut d);
    assert_eq!(out.len(), 1);
    let a = Message::decode(&out[0].bytes).unwrap();
    let Body::Query(Query { method: Method::AnnouncePeer { token, port, .. }, .. }) = &a.body else { panic!("{a:?}") };
    assert_eq!((&token[..], *port), (&b"tok1"[..], 6881));
    d.handle_packet(deadline, n1.addr, &Message::response(a.transaction_id, Response::new(n1.id)).encode());
    assert_eq!(events(&mut d), vec![Event::AnnounceDone { lookup: lid, info_hash: h, acknowledged: 1 }]);
    assert_eq!(d.active_lookups(), 0);
}

#[test]
fn bootstrap_is_retried_while_nobody_answers() {
    let (mut d, t0) = new_node(Config::default());
    let router = addr("203.0.113.200:6881");
    d.bootstrap(t0, &[router]);
    assert_eq!(drain(&mut d)[0].dest, router);
    let t1 = t0 + Duration::from_secs(2);
    d.handle_timeout(t1);
    assert_eq!(events(&mut d), vec![Event::Bootstrapped { nodes: 0 }]);
    assert!(d.poll_timeout().unwrap() <= t1 + Duration::from_secs(10));
    let t2 = t1 + Duration::from_secs(10);
    d.handle_timeout(t2);
    let retry = drain(&mut d).into_iter().find(|t| t.dest == router).expect("tried again");
    let q = Message::decode(&retry.bytes).unwrap();
    // The router answers this time, naming a node; the router itself stays out of the table.
    let mut r = Response::new(NodeId([1; 20]));
    r.nodes = vec![NodeInfo { id: NodeId([2; 20]), addr: addr("203.0.113.2:1") }];
    d.handle_packet(t2, router, &Message::response(q.transaction_id, r).encode());
    assert!(d.routing_table(false).is_empty());
    assert!(drain(&mut d).iter().any(|t| t.dest == addr("203.0.113.2:1")));
}

#[test]
fn external_address_votes_move_our_id_under_bep42() {
    let (mut d, t0) = new_node(Config::default());
    let me = addr("198.51.100.77:6881");
    let old = d.id();
    assert!(!bep42::is_valid_id(&old, me.ip()));
    for i in 1..=3u8 {
        let n = addr(&format!("203.0.113.{i}:1000"));
        d.add_node(t0, n);
        let q = drain(&mut d).into_iter().find(|t| t.dest == n).unwrap();
        let tid = Message::decode(&q.bytes).unwrap().transaction_id;
        let mut m = Message::response(tid, Response::new(NodeId([i; 20])));
        m.ip = Some(me);
        d.handle_packet(t0, n, &m.encode());
    }
    let ev = events(&mut d);
    let Some(Event::ExternalAddress { ip, new_id: Some(id) }) = ev.first() else { panic!("{ev:?}") };
    assert_eq!(*ip, me.ip());
    assert_eq!(*id, d.id());
    assert!(bep42::is_valid_id(&d.id(), me.ip()));
    assert_eq!(d.routing_table(false).len(), 3, "the table was rebuilt around the new id");
    assert_eq!(d.external_ip(), Some(me.ip()));
}

#[test]
fn enforce_keeps_nodes_with_invalid_ids_out_of_the_table() {
    let (mut d, now) = new_node(Config { bep42: Bep42::Enforce, ..Config::default() });
    ask(&mut d, now, addr("203.0.113.5:6881"), peer_id(1), Method::Ping).unwrap();
    assert!(d.routing_table(false).is_empty());
    let valid = bep42::node_id_for_ip("203.0.113.5".parse().unwrap(), [3; 20]);
    ask(&mut d, now, addr("203.0.113.5:6881"), valid, Method::Ping).unwrap();
    assert_eq!(d.routing_table(false).len(), 1);
}

#[test]
fn save_and_load_round_trip_and_load_says_what_is_wrong() {
    let (mut d, now) = new_node(Config::default());
    let nodes = [
        NodeInfo { id: peer_id(1), addr: addr("203.0.113.1:1") },
        NodeInfo { id: peer_id(2), addr: addr("[2001:db8::2]:2") },
    ];
    d.import_nodes(now, &nodes);
    let saved = load(&d.save(now)).unwrap();
    assert_eq!(saved, Saved { id: d.id(), nodes: nodes.to_vec() });
    assert_eq!(load(b"d2:id3:abc5:nodes0:6:nodes60:e").unwrap_err().to_string(), "`id` is 3 bytes long, expected 20");
    assert_eq!(load(b"de").unwrap_err().to_string(), "missing key `id`");
    assert!(load(b"junk").is_err());
}

#[test]
fn config_is_validated_and_the_send_budget_is_kept() {
    let now = Instant::now();
    assert_eq!(
        Dht::new(Config { ipv4: false, ipv6: false, ..Config::default() }, [0; 32], now).unwrap_err(),
        Error::Config("at least one of ipv4 and ipv6")
    );
    let (mut d, now) = new_node(Config { queries_per_sec: 1.0, query_burst: 2.0, ..Config::default() });
    for i in 1..=5u8 {
        d.add_node(now, addr(&format!("203.0.113.{i}:1")));
    }
    assert_eq!(drain(&mut d).len(), 2);
    assert_eq!(d.poll_timeout(), Some(now + Duration::from_secs(1)));
    d.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(drain(&mut d).len(), 1);
}

proptest! {
    #[test]
    fn handle_packet_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), port in 1u16..) {
        let (mut d, now) = new_node(Config::default());
        d.handle_packet(now, SocketAddr::from(([203, 0, 113, 1], port)), &bytes);
        drain(&mut d);
        d.handle_timeout(now + Duration::from_secs(3));
    }

    #[test]
    fn mutated_queries_never_panic(which in 0usize..5, at in any::<usize>(), b in any::<u8>()) {
        let (mut d, now) = new_node(Config::default());
        let h = InfoHash([1; 20]);
        let methods = [
            Method::Ping,
            Method::FindNode { target: peer_id(2) },
            Method::GetPeers { info_hash: h, noseed: true, scrape: true },
            Method::AnnouncePeer { info_hash: h, port: 1, implied_port: true, token: vec![1; 8], seed: true },
            Method::SampleInfohashes { target: peer_id(3) },
        ];
        let mut bytes = Message::query(b"ab".to_vec(), peer_id(1), methods[which].clone()).encode();
        let i = at % bytes.len();
        bytes[i] = b;
        d.handle_packet(now, SocketAddr::from(([203, 0, 113, 1], 1)), &bytes);
        for t in drain(&mut d) {
            prop_assert!(Message::decode(&t.bytes).is_ok());
        }
    }
}

/// However many lookups a user starts, at most MAX_LOOKUPS are under way; the oldest end early
/// with their LookupDone.
#[test]
fn lookups_are_bounded() {
    let (mut d, now) = new_node(Config::default());
    d.add_node(now, addr("10.0.0.1:6881"));
    for i in 0..(MAX_LOOKUPS + 40) {
        d.get_peers(now, InfoHash([(i % 251) as u8; 20]));
    }
    assert!(d.active_lookups() <= MAX_LOOKUPS, "{}", d.active_lookups());
    let done = events(&mut d).iter().filter(|e| matches!(e, Event::LookupDone { .. })).count();
    assert!(done >= 40, "{done} lookups ended to make room");
}
