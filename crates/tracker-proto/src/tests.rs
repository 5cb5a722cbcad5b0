use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;

use crate::http::{self, AnnounceResponse, Peer, PeerForm, QueryError, ResponseError, ScrapeResponse, ScrapeStats};
use crate::udp::{self, Family, PacketError, Peers, Request, Response};
use crate::{Event, InfoHash, PeerId};

const HASH: [u8; 20] = *b"\x12\x34\x56\x78\x9a\xbc\xde\xf1\x23\x45\x67\x89\xab\xcd\xef\x12\x34\x56\x78\x9a";
const ENCODED_HASH: &str = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A";

fn q(s: &str) -> Result<http::AnnounceRequest, QueryError> {
    http::parse_announce(s.as_bytes())
}

// ---- HTTP queries ----

#[test]
fn parses_a_real_announce() {
    // As aria2 sends it (mixed encoded and literal bytes).
    let s = format!(
        "info_hash={ENCODED_HASH}&peer_id=-aria2-0123456789abc&port=6881&uploaded=10&downloaded=20&left=30\
         &compact=1&key=abcd1234&event=started&numwant=80&supportcrypto=1&no_peer_id=1"
    );
    let r = q(&s).unwrap();
    assert_eq!(r.info_hash, InfoHash(HASH));
    assert_eq!(&r.peer_id.0, b"-aria2-0123456789abc");
    assert_eq!((r.port, r.uploaded, r.downloaded, r.left), (6881, 10, 20, 30));
    assert_eq!(r.event, Event::Started);
    assert!(r.compact && r.no_peer_id);
    assert_eq!(r.numwant, Some(80));
    assert_eq!(r.key.as_deref(), Some(&b"abcd1234"[..]));
    assert_eq!(r.ip, None);
}

#[test]
fn announce_defaults_and_leading_question_mark() {
    let s = format!("?info_hash={ENCODED_HASH}&peer_id=01234567890123456789&port=1&left=0");
    let r = q(&s).unwrap();
    assert_eq!(r.event, Event::None);
    assert!(r.compact);
    assert_eq!(r.numwant, None);
    assert_eq!((r.uploaded, r.downloaded), (0, 0));
}

#[test]
fn announce_errors_are_specific() {
    let base = |extra: &str| format!("info_hash={ENCODED_HASH}&peer_id=01234567890123456789&left=0{extra}");
    assert_eq!(q(&base("")), Err(QueryError::Missing("port")));
    assert_eq!(q(&base("&port=0")), Err(QueryError::BadPort));
    assert_eq!(q(&base("&port=65536")), Err(QueryError::BadPort));
    assert_eq!(q(&base("&port=-1")), Err(QueryError::BadNumber("port")));
    assert_eq!(q(&base("&port=12a")), Err(QueryError::BadNumber("port")));
    assert_eq!(q(&base("&port=")), Err(QueryError::BadNumber("port")));
    assert_eq!(q(&base("&port=99999999999999999999999")), Err(QueryError::BadNumber("port")));
    assert_eq!(q(&base("&port=1&uploaded=1.5")), Err(QueryError::BadNumber("uploaded")));
    assert!(matches!(q(&base("&port=1&event=bogus")), Err(QueryError::BadEvent(e)) if e == "bogus"));
    // BEP 21's partial seeds: a regular announce.
    assert_eq!(q(&base("&port=1&event=paused")).unwrap().event, Event::None);
    assert_eq!(
        q("info_hash=abc&peer_id=01234567890123456789&port=1&left=0"),
        Err(QueryError::BadLength { param: "info_hash", len: 3 })
    );
    assert_eq!(
        q(&format!("info_hash={ENCODED_HASH}&peer_id=0123456789012345678%&port=1&left=0")),
        Err(QueryError::BadEscape("peer_id".into()))
    );
    assert_eq!(
        q(&format!("info_hash={ENCODED_HASH}%00&peer_id=01234567890123456789&port=1&left=0")),
        Err(QueryError::BadLength { param: "info_hash", len: 21 })
    );
    assert_eq!(
        q(&format!("info_hash={ENCODED_HASH}&info_hash={ENCODED_HASH}&peer_id=01234567890123456789&port=1&left=0")),
        Err(QueryError::Duplicate("info_hash"))
    );
    assert_eq!(q("peer_id=01234567890123456789&port=1&left=0"), Err(QueryError::Missing("info_hash")));
    assert_eq!(q(&format!("info_hash={ENCODED_HASH}&port=1&left=0")), Err(QueryError::Missing("peer_id")));
    assert_eq!(
        q(&format!("info_hash={ENCODED_HASH}&peer_id=01234567890123456789&port=1")),
        Err(QueryError::Missing("left"))
    );
    // Messages are plain words for the `failure reason`.
    assert_eq!(QueryError::BadPort.to_string(), "port must be between 1 and 65535");
}

#[test]
fn announce_ip_parameter_is_parsed_or_dropped() {
    let base = format!("info_hash={ENCODED_HASH}&peer_id=01234567890123456789&port=1&left=0");
    assert_eq!(q(&format!("{base}&ip=10.1.2.3")).unwrap().ip, Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
    assert_eq!(q(&format!("{base}&ip=%3A%3A1")).unwrap().ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(q(&format!("{base}&ip=tracker.example")).unwrap().ip, None);
}

#[test]
fn scrape_query_parsing() {
    let r = http::parse_scrape(format!("info_hash={ENCODED_HASH}&info_hash=aaaaaaaaaaaaaaaaaaaa").as_bytes()).unwrap();
    assert_eq!(r.info_hashes, vec![InfoHash(HASH), InfoHash([b'a'; 20])]);
    assert_eq!(http::parse_scrape(b"").unwrap().info_hashes, vec![]);
    assert!(http::parse_scrape(b"info_hash=short").is_err());
    let many = vec!["info_hash=aaaaaaaaaaaaaaaaaaaa"; http::MAX_SCRAPE_HASHES + 1].join("&");
    assert_eq!(http::parse_scrape(many.as_bytes()), Err(QueryError::TooManyHashes));
}

#[test]
fn builds_queries_and_urls() {
    let mut r = http::AnnounceRequest::new(InfoHash(HASH), PeerId(*b"-BS0001-abcdefghijkl"), 6881, 100);
    r.event = Event::Completed;
    r.numwant = Some(10);
    let url = http::announce_url("http://t.example:6969/announce", &r);
    assert_eq!(
        url,
        format!(
            "http://t.example:6969/announce?info_hash={ENCODED_HASH}&peer_id=-BS0001-abcdefghijkl&port=6881\
             &uploaded=0&downloaded=0&left=100&compact=1&event=completed&numwant=10"
        )
    );
    assert!(
        http::announce_url("http://t/announce?passkey=x", &r).starts_with("http://t/announce?passkey=x&info_hash=")
    );
    assert_eq!(http::scrape_url_for("http://t:1/announce"), Some("http://t:1/scrape".into()));
    assert_eq!(http::scrape_url_for("http://t:1/x/announce.php?k=1"), Some("http://t:1/x/scrape.php?k=1".into()));
    assert_eq!(http::scrape_url_for("http://t:1/a"), None);
    assert_eq!(
        http::scrape_url("http://t/announce", &[InfoHash(HASH)]),
        Some(format!("http://t/scrape?info_hash={ENCODED_HASH}"))
    );
}

// ---- HTTP replies ----

fn sample_response() -> AnnounceResponse {
    AnnounceResponse {
        interval: 1800,
        min_interval: Some(900),
        complete: 3,
        incomplete: 4,
        downloaded: Some(5),
        peers: vec![
            Peer { addr: "10.0.0.1:6881".parse().unwrap(), peer_id: Some(PeerId([7; 20])) },
            Peer { addr: "[2001:db8::1]:51413".parse().unwrap(), peer_id: Some(PeerId([8; 20])) },
        ],
        warning_message: None,
        tracker_id: None,
    }
}

#[test]
fn compact_reply_bytes() {
    let mut r = sample_response();
    r.peers.truncate(1);
    let b = r.encode(PeerForm::Compact);
    assert_eq!(
        b,
        b"d8:completei3e10:downloadedi5e10:incompletei4e8:intervali1800e12:min intervali900e5:peers6:\x0a\x00\x00\x01\x1a\xe1e"
    );
}

#[test]
fn replies_round_trip_in_each_form() {
    let r = sample_response();
    let compact = AnnounceResponse::decode(&r.encode(PeerForm::Compact)).unwrap();
    assert_eq!(
        compact.peers.iter().map(|p| p.addr).collect::<Vec<_>>(),
        r.peers.iter().map(|p| p.addr).collect::<Vec<_>>()
    );
    assert!(compact.peers.iter().all(|p| p.peer_id.is_none()));
    assert_eq!((compact.complete, compact.incomplete, compact.downloaded), (3, 4, Some(5)));
    let dict = AnnounceResponse::decode(&r.encode(PeerForm::Dictionary { peer_id: true })).unwrap();
    assert_eq!(dict, r);
    let no_id = AnnounceResponse::decode(&r.encode(PeerForm::Dictionary { peer_id: false })).unwrap();
    assert!(no_id.peers.iter().all(|p| p.peer_id.is_none()));
}

#[test]
fn decodes_failure_warning_and_tracker_id() {
    let f = http::encode_failure("info_hash must be exactly 20 bytes, got 3");
    assert_eq!(f, b"d14:failure reason41:info_hash must be exactly 20 bytes, got 3e");
    assert_eq!(
        AnnounceResponse::decode(&f),
        Err(ResponseError::Failure("info_hash must be exactly 20 bytes, got 3".into()))
    );
    let r = AnnounceResponse::decode(b"d8:intervali60e5:peers0:10:tracker id3:abc15:warning message4:slowe").unwrap();
    assert_eq!(r.tracker_id.as_deref(), Some(&b"abc"[..]));
    assert_eq!(r.warning_message.as_deref(), Some("slow"));
    assert!(matches!(AnnounceResponse::decode(b"d5:peers0:e"), Err(ResponseError::Malformed(_))));
    assert!(matches!(AnnounceResponse::decode(b"d8:intervali60e5:peers5:abcdee"), Err(ResponseError::Malformed(_))));
    // Host names in the dictionary form are skipped, not an error.
    let r = AnnounceResponse::decode(b"d8:intervali60e5:peersld2:ip9:peer.host4:porti1eeee").unwrap();
    assert!(r.peers.is_empty());
}

#[test]
fn scrape_reply_round_trip_and_order() {
    let s = ScrapeResponse {
        files: vec![
            (InfoHash([9; 20]), ScrapeStats { complete: 1, downloaded: 2, incomplete: 3 }),
            (InfoHash([1; 20]), ScrapeStats::default()),
        ],
    };
    let b = s.encode();
    assert!(b.starts_with(b"d5:filesd20:\x01\x01"));
    let d = ScrapeResponse::decode(&b).unwrap();
    assert_eq!(d.get(&InfoHash([9; 20])), Some(ScrapeStats { complete: 1, downloaded: 2, incomplete: 3 }));
    assert_eq!(d.get(&InfoHash([1; 20])), Some(ScrapeStats::default()));
}

// ---- UDP ----

fn announce_packet() -> Vec<u8> {
    Request::Announce(udp::AnnounceRequest {
        connection_id: 0x1122_3344_5566_7788,
        transaction_id: 42,
        info_hash: InfoHash(HASH),
        peer_id: PeerId([3; 20]),
        downloaded: 1,
        left: 2,
        uploaded: 3,
        event: Event::Started,
        ip: None,
        key: 9,
        num_want: None,
        port: 6881,
        url_data: Vec::new(),
    })
    .encode()
}

#[test]
fn udp_connect_bytes() {
    let p = Request::Connect { transaction_id: 0xdead_beef }.encode();
    assert_eq!(p, b"\x00\x00\x04\x17\x27\x10\x19\x80\x00\x00\x00\x00\xde\xad\xbe\xef");
    assert_eq!(Request::parse(&p), Ok(Request::Connect { transaction_id: 0xdead_beef }));
    let mut bad = p.clone();
    bad[0] = 1;
    assert_eq!(Request::parse(&bad), Err(PacketError::BadProtocolId));
    let r = Response::Connect { transaction_id: 5, connection_id: 77 };
    assert_eq!(Response::parse(&r.encode(), Family::V4), Ok(r));
}

#[test]
fn udp_announce_layout() {
    let p = announce_packet();
    assert_eq!(p.len(), udp::ANNOUNCE_LEN);
    assert_eq!(&p[92..96], &(-1i32).to_be_bytes());
    let Request::Announce(a) = Request::parse(&p).unwrap() else { panic!() };
    assert_eq!((a.event, a.port, a.num_want, a.ip), (Event::Started, 6881, None, None));
    // Short packets and bad fields are errors.
    assert_eq!(Request::parse(&p[..97]), Err(PacketError::Short { len: 97, need: 98 }));
    let mut bad = p.clone();
    bad[83] = 9;
    assert_eq!(Request::parse(&bad), Err(PacketError::BadEvent(9)));
    // libtorrent's partial seeds announce "paused" (4, BEP 21): a regular announce.
    let mut paused = p.clone();
    paused[83] = 4;
    let Request::Announce(a) = Request::parse(&paused).unwrap() else { panic!() };
    assert_eq!(a.event, Event::None);
    let mut bad = p.clone();
    bad[96] = 0;
    bad[97] = 0;
    assert_eq!(Request::parse(&bad), Err(PacketError::BadPort));
}

#[test]
fn udp_announce_tolerates_bep41_options() {
    let mut p = announce_packet();
    // NOP, URLData "/ann", URLData "ounce?x=1", an unknown option, EndOfOptions, trailing junk.
    p.extend_from_slice(b"\x01\x02\x04/ann\x02\x09ounce?x=1\x07\x02zz\x00junk");
    let Request::Announce(a) = Request::parse(&p).unwrap() else { panic!() };
    assert_eq!(a.url_data, b"/announce?x=1");
    // A truncated option is tolerated too.
    let mut p2 = announce_packet();
    p2.extend_from_slice(b"\x02\x40/short");
    let Request::Announce(a) = Request::parse(&p2).unwrap() else { panic!() };
    assert!(a.url_data.is_empty());
    // Old clients' two-byte "extensions" field after the announce.
    let mut p3 = announce_packet();
    p3.extend_from_slice(b"\x00\x00");
    assert!(Request::parse(&p3).is_ok());
}

#[test]
fn udp_scrape_and_error() {
    let s = Request::Scrape(udp::ScrapeRequest {
        connection_id: 1,
        transaction_id: 2,
        info_hashes: vec![InfoHash([1; 20]), InfoHash([2; 20])],
    });
    assert_eq!(Request::parse(&s.encode()), Ok(s.clone()));
    let enc = s.encode();
    assert_eq!(Request::parse(&enc[..enc.len() - 1]), Err(PacketError::BadScrape));
    assert_eq!(Request::parse(&enc[..16]), Err(PacketError::BadScrape));
    let r = Response::Scrape(udp::ScrapeResponse {
        transaction_id: 2,
        stats: vec![udp::ScrapeStats { seeders: 1, completed: 2, leechers: 3 }],
    });
    assert_eq!(Response::parse(&r.encode(), Family::V4), Ok(r));
    let e = Response::Error { transaction_id: 3, message: "bad".into() };
    assert_eq!(e.encode(), b"\x00\x00\x00\x03\x00\x00\x00\x03bad");
    assert_eq!(Response::parse(&e.encode(), Family::V6), Ok(e));
    assert_eq!(Request::parse(b"short"), Err(PacketError::Short { len: 5, need: 16 }));
    let mut unknown = Request::Connect { transaction_id: 1 }.encode();
    unknown[11] = 7;
    assert_eq!(Request::parse(&unknown), Err(PacketError::BadAction(7)));
}

#[test]
fn udp_announce_reply_by_family() {
    let v4 = Response::Announce(udp::AnnounceResponse {
        transaction_id: 1,
        interval: 60,
        leechers: 2,
        seeders: 3,
        peers: Peers::V4(vec![SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5)]),
    });
    assert_eq!(v4.encode().len(), 26);
    assert_eq!(Response::parse(&v4.encode(), Family::V4), Ok(v4.clone()));
    assert!(Response::parse(&v4.encode(), Family::V6).is_err());
    let v6 = Response::Announce(udp::AnnounceResponse {
        transaction_id: 1,
        interval: 60,
        leechers: 2,
        seeders: 3,
        peers: Peers::V6(vec![SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5, 0, 0)]),
    });
    assert_eq!(v6.encode().len(), 38);
    assert_eq!(Response::parse(&v6.encode(), Family::V6), Ok(v6));
}

// ---- properties ----

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![Just(Event::None), Just(Event::Started), Just(Event::Completed), Just(Event::Stopped)]
}

fn arb_http_request() -> impl Strategy<Value = http::AnnounceRequest> {
    (
        any::<[u8; 20]>(),
        any::<[u8; 20]>(),
        1u16..,
        any::<(u64, u64, u64)>(),
        arb_event(),
        any::<(bool, bool)>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<IpAddr>()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(|(h, id, port, (up, down, left), event, (compact, no_peer_id), numwant, ip, key, tracker_id)| {
            http::AnnounceRequest {
                info_hash: InfoHash(h),
                peer_id: PeerId(id),
                port,
                uploaded: up,
                downloaded: down,
                left,
                event,
                compact,
                no_peer_id,
                numwant,
                ip,
                key,
                tracker_id,
            }
        })
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    (
        prop_oneof![
            any::<SocketAddrV4>().prop_map(SocketAddr::V4),
            any::<(Ipv6Addr, u16)>()
                .prop_filter("not v4-mapped", |(ip, _)| ip.to_ipv4_mapped().is_none())
                .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))),
        ],
        any::<[u8; 20]>(),
    )
        .prop_map(|(addr, id)| Peer { addr, peer_id: Some(PeerId(id)) })
}

fn arb_udp_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u32>().prop_map(|transaction_id| Request::Connect { transaction_id }),
        (
            any::<(u64, u32, [u8; 20], [u8; 20])>(),
            any::<(u64, u64, u64)>(),
            arb_event(),
            proptest::option::of(any::<Ipv4Addr>().prop_filter("non-zero", |ip| !ip.is_unspecified())),
            any::<u32>(),
            proptest::option::of(0u32..=i32::MAX as u32),
            1u16..,
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|((cid, tid, h, id), (d, l, u), event, ip, key, num_want, port, url_data)| {
                Request::Announce(udp::AnnounceRequest {
                    connection_id: cid,
                    transaction_id: tid,
                    info_hash: InfoHash(h),
                    peer_id: PeerId(id),
                    downloaded: d,
                    left: l,
                    uploaded: u,
                    event,
                    ip,
                    key,
                    num_want,
                    port,
                    url_data,
                })
            }),
        (any::<u64>(), any::<u32>(), proptest::collection::vec(any::<[u8; 20]>(), 1..=udp::MAX_SCRAPE_HASHES))
            .prop_map(|(connection_id, transaction_id, hs)| Request::Scrape(udp::ScrapeRequest {
                connection_id,
                transaction_id,
                info_hashes: hs.into_iter().map(InfoHash).collect(),
            })),
    ]
}

proptest! {
    #[test]
    fn http_announce_round_trip(r in arb_http_request()) {
        let q = http::announce_query(&r);
        prop_assert_eq!(http::parse_announce(q.as_bytes()).unwrap(), r);
    }

    #[test]
    fn http_scrape_round_trip(hs in proptest::collection::vec(any::<[u8; 20]>(), 0..20)) {
        let hs: Vec<InfoHash> = hs.into_iter().map(InfoHash).collect();
        let q = http::scrape_query(&hs);
        prop_assert_eq!(http::parse_scrape(q.as_bytes()).unwrap().info_hashes, hs);
    }

    #[test]
    fn percent_encoding_round_trip(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut s = String::new();
        http::percent_encode_into(&mut s, &b);
        prop_assert_eq!(http::percent_decode(s.as_bytes()).unwrap(), b);
    }

    #[test]
    fn http_parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = http::parse_announce(&b);
        let _ = http::parse_scrape(&b);
        let _ = AnnounceResponse::decode(&b);
        let _ = ScrapeResponse::decode(&b);
    }

    #[test]
    fn http_parser_never_panics_on_near_valid_queries(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("info_hash=".to_string()), Just("peer_id=".to_string()), Just("port=".to_string()),
                Just("left=".to_string()), Just("event=".to_string()), Just("&".to_string()), Just("%".to_string()),
                Just("%4".to_string()), Just("=".to_string()), "[0-9a-z%]{0,24}",
            ],
            0..24,
        )
    ) {
        let s: String = parts.concat();
        let _ = http::parse_announce(s.as_bytes());
        let _ = http::parse_scrape(s.as_bytes());
    }

    #[test]
    fn http_reply_round_trip(
        peers in proptest::collection::vec(arb_peer(), 0..30),
        counts in any::<(u32, u32, u32, u32)>(),
        min_interval in proptest::option::of(any::<u32>()),
    ) {
        let r = AnnounceResponse {
            interval: counts.0, min_interval, complete: counts.1, incomplete: counts.2, downloaded: Some(counts.3),
            peers, warning_message: None, tracker_id: None,
        };
        prop_assert_eq!(AnnounceResponse::decode(&r.encode(PeerForm::Dictionary { peer_id: true })).unwrap(), r.clone());
        let compact = AnnounceResponse::decode(&r.encode(PeerForm::Compact)).unwrap();
        let mut want: Vec<SocketAddr> = r.peers.iter().map(|p| p.addr).collect();
        let mut got: Vec<SocketAddr> = compact.peers.iter().map(|p| p.addr).collect();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn udp_request_round_trip(r in arb_udp_request()) {
        prop_assert_eq!(Request::parse(&r.encode()).unwrap(), r);
    }

    #[test]
    fn udp_response_round_trip(
        tid in any::<u32>(),
        counts in any::<(u32, u32, u32)>(),
        v4 in proptest::collection::vec(any::<SocketAddrV4>(), 0..50),
        v6 in proptest::collection::vec(any::<(Ipv6Addr, u16)>(), 0..50),
        stats in proptest::collection::vec(any::<(u32, u32, u32)>(), 0..74),
        msg in ".{0,40}",
        cid in any::<u64>(),
    ) {
        let v6: Vec<SocketAddrV6> = v6.into_iter().map(|(ip, p)| SocketAddrV6::new(ip, p, 0, 0)).collect();
        let cases = [
            (Response::Connect { transaction_id: tid, connection_id: cid }, Family::V4),
            (Response::Announce(udp::AnnounceResponse { transaction_id: tid, interval: counts.0, leechers: counts.1, seeders: counts.2, peers: Peers::V4(v4) }), Family::V4),
            (Response::Announce(udp::AnnounceResponse { transaction_id: tid, interval: counts.0, leechers: counts.1, seeders: counts.2, peers: Peers::V6(v6) }), Family::V6),
            (Response::Scrape(udp::ScrapeResponse { transaction_id: tid, stats: stats.into_iter().map(|(s, c, l)| udp::ScrapeStats { seeders: s, completed: c, leechers: l }).collect() }), Family::V4),
            (Response::Error { transaction_id: tid, message: msg }, Family::V4),
        ];
        for (r, fam) in cases {
            prop_assert_eq!(Response::parse(&r.encode(), fam).unwrap(), r);
        }
    }

    #[test]
    fn udp_parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Request::parse(&b);
        let _ = Response::parse(&b, Family::V4);
        let _ = Response::parse(&b, Family::V6);
        let _ = PacketError::transaction_id_of(&b);
    }

    #[test]
    fn udp_parser_never_panics_on_mutated_packets(
        r in arb_udp_request(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let mut p = r.encode();
        let i = flip.0.index(p.len());
        p[i] ^= flip.1;
        let _ = Request::parse(&p);
        let n = cut.index(p.len() + 1);
        let _ = Request::parse(&p[..n]);
    }
}
