//! The tracker's request handling with its store: a run of UDP packets (some carrying a valid
//! connection id), HTTP announce and scrape queries (some through a trusted proxy), cleaner
//! runs and stats pages, from a handful of IPv4 and IPv6 clients. Nothing may panic; every UDP
//! reply parses as a reply; every HTTP body decodes (peers or a failure reason); the shards'
//! seeder and leecher counters always equal the sum of their swarms' own counts.
//!
//! Input: operations of 4 header bytes (what, which client, flags, payload length) and a payload.
#![no_main]

use std::net::SocketAddr;

use bitswarm_tracker::{Config, Shared, stats, udp};
use bitswarm_tracker_proto::http::{AnnounceResponse, ResponseError, ScrapeResponse};
use bitswarm_tracker_proto::udp::{Family, Response};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const PROXY: &str = "127.0.0.9:40000";
const CLIENTS: [&str; 6] =
    ["127.0.0.1:6881", "127.0.0.2:51413", "10.1.2.3:6881", "[::1]:6881", "[2001:db8::7]:1", PROXY];
const FORWARDED: [&str; 4] = ["198.51.100.7", "203.0.113.1, 2001:db8::9", "[2001:db8::5]", "not an address"];

fn shared() -> Shared {
    let mut c = Config::default();
    c.store.max_peers_per_swarm = 100;
    c.store.max_peers_total = 300;
    c.store.shards = 4;
    c.http.real_ip_header = "X-Forwarded-For".into();
    c.http.trusted_proxies = vec![PROXY.parse::<SocketAddr>().unwrap().ip()];
    c.udp.allow_ip_field = true;
    c.scrape.full_scrape = true;
    Shared::new(c).expect("the fuzz configuration is valid")
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    let (mut out, mut peers) = (Vec::new(), Vec::new());
    let mut ops = data;
    while ops.len() >= 4 {
        let (head, rest) = ops.split_at(4);
        let (payload, rest) = rest.split_at((head[3] as usize).min(rest.len()));
        ops = rest;
        let src: SocketAddr = CLIENTS[head[1] as usize % CLIENTS.len()].parse().unwrap();
        match head[0] % 5 {
            0 => {
                let mut p = payload.to_vec();
                if head[2] & 1 == 1 && p.len() >= 8 {
                    p[..8].copy_from_slice(&shared.conn_ids.make(src.ip().to_canonical()).to_be_bytes());
                }
                out.clear();
                udp::handle(&shared, &p, src, &mut out, &mut peers);
                if !out.is_empty() {
                    let family = if src.is_ipv4() { Family::V4 } else { Family::V6 };
                    if let Err(e) = Response::parse(&out, family) {
                        panic!("the tracker's UDP reply does not parse: {e}: {out:?}");
                    }
                }
            }
            1 => {
                let mut headers = HeaderMap::new();
                if head[2] & 1 == 1 {
                    let v = FORWARDED[(head[2] >> 1) as usize % FORWARDED.len()];
                    headers.insert("x-forwarded-for", HeaderValue::from_static(v));
                }
                let body = shared.http_announce(src, &headers, payload, None);
                match AnnounceResponse::decode(&body) {
                    Ok(_) | Err(ResponseError::Failure(_)) => {}
                    Err(e) => panic!("the tracker's announce reply does not decode: {e}"),
                }
            }
            2 => {
                let body = shared.http_scrape(payload, None);
                if let Err(e) = ScrapeResponse::decode(&body) {
                    assert!(matches!(e, ResponseError::Failure(_)), "the tracker's scrape reply does not decode: {e}");
                }
            }
            3 => {
                // Now, a second ago or a second ahead: keeps some, drops some or all.
                let cutoff = (shared.store.now() + u32::from(head[2] % 3)).saturating_sub(1);
                shared.store.clean_before(cutoff);
            }
            _ => {
                let _ = stats::json(&shared.store, &shared.metrics, 10);
                let _ = stats::html(&shared.store, &shared.metrics, 10);
                let _ = stats::prometheus(&shared.store, &shared.metrics);
            }
        }
        let t = shared.store.totals();
        let (mut seeders, mut leechers) = (0u64, 0u64);
        for (_, c) in shared.store.all_counts() {
            seeders += u64::from(c.seeders);
            leechers += u64::from(c.leechers);
        }
        assert_eq!((t.seeders, t.leechers), (seeders, leechers), "shard counters against the swarms' counts");
        assert!(t.peers <= 300, "{} peers stored, more than the cap", t.peers);
    }
});
