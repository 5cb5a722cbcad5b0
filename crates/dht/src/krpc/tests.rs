use super::*;
use proptest::prelude::*;

fn id(b: u8) -> NodeId {
    NodeId([b; 20])
}

#[test]
fn bep5_examples_decode_and_reencode_byte_for_byte() {
    let examples: [&[u8]; 6] = [
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
    ];
    for ex in examples {
        let m = Message::decode(ex).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(ex)));
        assert_eq!(m.encode(), ex, "{m:?}");
    }
    let m = Message::decode(examples[4]).unwrap();
    let Body::Query(Query { method: Method::AnnouncePeer { port, implied_port, token, .. }, .. }) = m.body else {
        panic!("{m:?}")
    };
    assert_eq!((port, implied_port, &token[..]), (6881, true, &b"aoeusnth"[..]));
}

#[test]
fn get_peers_response_with_values_and_nodes() {
    let mut r = Response::new(id(1));
    r.token = Some(b"tok".to_vec());
    r.values = vec!["1.2.3.4:5".parse().unwrap(), "[2001:db8::1]:6881".parse().unwrap()];
    r.nodes = vec![
        NodeInfo { id: id(2), addr: "10.0.0.1:1000".parse().unwrap() },
        NodeInfo { id: id(3), addr: "[fe80::2]:2000".parse().unwrap() },
    ];
    let mut m = Message::response(vec![0, 1], r);
    m.ip = Some("9.9.9.9:4".parse().unwrap());
    let bytes = m.encode();
    assert_eq!(Message::decode(&bytes).unwrap(), m);
    let raw = bitswarm_bencode::decode(&bytes).unwrap();
    let r = raw.get(b"r").unwrap();
    assert_eq!(r.get(b"nodes").unwrap().as_bytes().unwrap().len(), 26);
    assert_eq!(r.get(b"nodes6").unwrap().as_bytes().unwrap().len(), 38);
    assert_eq!(raw.get(b"ip").unwrap().as_bytes().unwrap(), &[9, 9, 9, 9, 0, 4]);
}

#[test]
fn malformed_queries_say_what_is_wrong_and_get_203() {
    let cases: [(&[u8], &str); 6] = [
        (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", "`id` is 3 bytes long, expected 20"),
        (b"d1:q4:ping1:t2:aa1:y1:qe", "missing key `a`"),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe", "missing key `target`"),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
            "`port` is out of range: 70000",
        ),
        (b"d1:ad2:idi5ee1:q4:ping1:t2:aa1:y1:qe", "`id` is a integer, expected a string"),
        (
            b"d1:ad2:id20:abcdefghij01234567894:wanti4ee1:q4:ping1:t2:aa1:y1:qe",
            "`want` is a integer, expected a list",
        ),
    ];
    for (bytes, msg) in cases {
        let e = Message::decode(bytes).unwrap_err();
        assert_eq!(e.to_string(), msg);
        let reply = e.reply().expect("a query with a tid gets an error");
        assert_eq!(reply.transaction_id, b"aa");
        assert_eq!(reply.body, Body::Error { code: code::PROTOCOL, message: msg.into() });
    }
}

#[test]
fn unknown_method_gets_204_and_responses_never_get_an_error() {
    let e = Message::decode(b"d1:ad2:id20:abcdefghij0123456789e1:q3:put1:t2:aa1:y1:qe").unwrap_err();
    assert_eq!(e.to_string(), "unknown method \"put\"");
    assert!(matches!(e.reply().unwrap().body, Body::Error { code: code::METHOD_UNKNOWN, .. }));
    // A broken response, or a message without a transaction id, is dropped silently.
    let e = Message::decode(b"d1:rd2:id2:xxe1:t2:aa1:y1:re").unwrap_err();
    assert!(e.reply().is_none());
    let e = Message::decode(b"d1:q4:ping1:y1:qe").unwrap_err();
    assert_eq!(e.to_string(), "missing key `t`");
    assert!(e.reply().is_none());
    assert_eq!(Message::decode(b"i5e").unwrap_err().to_string(), "the message is a integer, not a dictionary");
    assert!(Message::decode(b"d1:t2:aa1:y1:ze").unwrap_err().to_string().contains("unknown message type"));
    assert!(Message::decode(&vec![b'x'; MAX_PACKET + 1]).unwrap_err().to_string().contains("longer than"));
}

#[test]
fn want_ro_and_bep33_51_fields() {
    let mut m = Message::query(
        b"xy".to_vec(),
        id(4),
        Method::GetPeers { info_hash: InfoHash([5; 20]), noseed: true, scrape: true },
    );
    m.read_only = true;
    if let Body::Query(q) = &mut m.body {
        q.want = Want { n4: true, n6: true };
    }
    let b = m.encode();
    assert!(b.windows(16).any(|w| w == b"4:wantl2:n42:n6e"));
    assert!(b.windows(7).any(|w| w == b"2:roi1e"));
    assert_eq!(Message::decode(&b).unwrap(), m);

    let mut r = Response::new(id(6));
    r.samples = Some(vec![InfoHash([7; 20]), InfoHash([8; 20])]);
    r.interval = Some(21600);
    r.num = Some(2);
    let mut bf = Bloom::default();
    bf.insert("1.2.3.4".parse().unwrap());
    r.bf_seeds = Some(Box::new(bf.clone()));
    r.bf_peers = Some(Box::new(Bloom::default()));
    let m = Message::response(b"t".to_vec(), r);
    assert_eq!(Message::decode(&m.encode()).unwrap(), m);
}

fn arb_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 20]>().prop_map(NodeId)
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(ip.into()), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(ip.into()), p)),
    ]
}

fn arb_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Ping),
        arb_id().prop_map(|target| Method::FindNode { target }),
        arb_id().prop_map(|target| Method::SampleInfohashes { target }),
        (any::<[u8; 20]>(), any::<bool>(), any::<bool>()).prop_map(|(h, noseed, scrape)| Method::GetPeers {
            info_hash: InfoHash(h),
            noseed,
            scrape
        }),
        (
            any::<[u8; 20]>(),
            1..=u16::MAX,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..MAX_TOKEN),
            any::<bool>()
        )
            .prop_map(|(h, port, implied_port, token, seed)| Method::AnnouncePeer {
                info_hash: InfoHash(h),
                port,
                implied_port,
                token,
                seed
            }),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    (
        arb_id(),
        proptest::collection::vec((arb_id(), arb_addr()).prop_map(|(id, addr)| NodeInfo { id, addr }), 0..10),
        proptest::collection::vec(arb_addr(), 0..10),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..MAX_TOKEN)),
        proptest::option::of(proptest::collection::vec(any::<[u8; 20]>().prop_map(InfoHash), 0..5)),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<[u8; 32]>()),
    )
        .prop_map(|(id, mut nodes, values, token, samples, interval, num, bf)| {
            // Decoding lists `nodes` (IPv4) before `nodes6`.
            nodes.sort_by_key(|n| n.addr.is_ipv6());
            let bloom = bf.map(|b| {
                let mut full = [0u8; 256];
                full[..32].copy_from_slice(&b);
                Box::new(Bloom(full))
            });
            Response { id, nodes, values, token, samples, interval, num, bf_seeds: bloom.clone(), bf_peers: bloom }
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let body = prop_oneof![
        (arb_id(), arb_method(), any::<(bool, bool)>()).prop_map(|(id, method, (n4, n6))| Body::Query(Query {
            id,
            want: Want { n4, n6 },
            method
        })),
        arb_response().prop_map(Body::Response),
        (any::<i64>(), ".{0,20}").prop_map(|(code, message)| Body::Error { code, message }),
    ];
    (
        proptest::collection::vec(any::<u8>(), 0..=MAX_TID),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        any::<bool>(),
        proptest::option::of(arb_addr()),
        body,
    )
        .prop_map(|(transaction_id, version, read_only, ip, body)| Message {
            transaction_id,
            version,
            read_only,
            ip,
            body,
        })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(m in arb_message()) {
        let bytes = m.encode();
        prop_assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Err(e) = Message::decode(&bytes) {
            let _ = e.to_string();
            let _ = e.reply();
        }
    }

    /// Mutating one byte of a valid message: still no panic, and whatever decodes re-encodes
    /// to something that decodes the same.
    #[test]
    fn mutated_messages_never_panic(m in arb_message(), at in any::<usize>(), b in any::<u8>()) {
        let mut bytes = m.encode();
        let i = at % bytes.len();
        bytes[i] = b;
        if let Ok(d) = Message::decode(&bytes) {
            prop_assert_eq!(Message::decode(&d.encode()).unwrap(), d);
        }
    }
}
