//! The store's behaviour, written once against the store interface ([`Backend`]) and run
//! against every backend: `memory::*` and `redis::*` are the same tests.
//!
//! What only one backend has (the in-memory store's index, its peer-id tags) is tested beside
//! it, in `store.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use bitswarm_tracker_proto::http::Peer;
use bitswarm_tracker_proto::{Event, InfoHash, PeerId};

use crate::backend::{Backend, Job, Op};
use crate::store::{Announce, Families, Outcome, ReplyPeers, SwarmCounts, Totals};

/// The peer timeout every backend is made with here, in seconds.
pub const TIMEOUT: u32 = 100;

/// Makes backends for the tests and moves their clocks.
pub trait Harness: Sync {
    /// A fresh, empty backend with these caps and a peer timeout of [`TIMEOUT`].
    fn backend(&self, max_per_swarm: u32, max_total: u64) -> Backend;
    /// Moves the backend's clock `secs` seconds on.
    fn advance(&self, b: &Backend, secs: u32);
}

/// Runs a test's future on a runtime of two threads (tests that spawn tasks run them in
/// parallel).
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

fn ann(h: u8, addr: &str, left: u64, event: Event) -> Announce {
    Announce {
        info_hash: InfoHash([h; 20]),
        peer_id: PeerId([addr.len() as u8; 20]),
        addr: addr.parse().unwrap(),
        left,
        event,
        numwant: 50,
        families: Families::Both,
    }
}

async fn go(b: &Backend, a: &Announce, out: &mut Vec<Peer>) -> (SwarmCounts, Outcome) {
    b.announce(a, out).await.expect("the store answers")
}

async fn counts(b: &Backend, h: u8) -> SwarmCounts {
    b.scrape(&[InfoHash([h; 20])]).await.unwrap()[0]
}

async fn totals(b: &Backend) -> Totals {
    b.totals().await.unwrap()
}

pub async fn counts_follow_events(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    let mut out: Vec<Peer> = Vec::new();
    let (c, _) = go(&s, &ann(1, "10.0.0.1:1000", 5, Event::Started), &mut out).await;
    assert_eq!(c, SwarmCounts { seeders: 0, leechers: 1, downloaded: 0 });
    assert!(out.is_empty(), "a peer never gets itself back");
    let (c, _) = go(&s, &ann(1, "10.0.0.1:1000", 0, Event::Completed), &mut out).await;
    assert_eq!(c, SwarmCounts { seeders: 1, leechers: 0, downloaded: 1 });
    // A repeated `completed` is not counted twice.
    let (c, _) = go(&s, &ann(1, "10.0.0.1:1000", 0, Event::Completed), &mut out).await;
    assert_eq!(c.downloaded, 1);
    // A peer that turned seeder by a plain announce still counts its `completed` once.
    go(&s, &ann(1, "10.0.0.2:1000", 5, Event::Started), &mut out).await;
    go(&s, &ann(1, "10.0.0.2:1000", 0, Event::None), &mut out).await;
    let (c, _) = go(&s, &ann(1, "10.0.0.2:1000", 0, Event::Completed), &mut out).await;
    assert_eq!((c.seeders, c.downloaded), (2, 2));
    go(&s, &ann(1, "10.0.0.2:1000", 0, Event::Stopped), &mut out).await;
    let (c, _) = go(&s, &ann(1, "10.0.0.1:1000", 0, Event::Stopped), &mut out).await;
    assert_eq!(c, SwarmCounts { seeders: 0, leechers: 0, downloaded: 2 });
    assert_eq!(totals(&s).await.peers, 0);
    assert_eq!(counts(&s, 9).await, SwarmCounts::default());
    // A `stopped` for a swarm nobody announced makes none.
    go(&s, &ann(8, "10.0.0.1:1000", 0, Event::Stopped), &mut out).await;
    assert_eq!(totals(&s).await.swarms, 1);
}

pub async fn peers_are_keyed_by_address_and_port(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    let mut out: Vec<Peer> = Vec::new();
    go(&s, &ann(1, "10.0.0.1:1000", 5, Event::Started), &mut out).await;
    // Same peer id from another address: a different peer, not an overwrite.
    let mut other = ann(1, "10.0.0.2:1000", 5, Event::Started);
    other.peer_id = PeerId([13; 20]);
    go(&s, &other, &mut out).await;
    assert_eq!(counts(&s, 1).await.leechers, 2);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].addr, "10.0.0.1:1000".parse().unwrap());
    // Stopping with someone else's peer id from one's own address removes only oneself.
    let mut stop = ann(1, "10.0.0.2:1000", 5, Event::Stopped);
    stop.peer_id = PeerId([14; 20]);
    go(&s, &stop, &mut out).await;
    assert_eq!(counts(&s, 1).await.leechers, 1);
    // Another port of the same address is another peer.
    go(&s, &ann(1, "10.0.0.1:1001", 5, Event::Started), &mut out).await;
    assert_eq!(counts(&s, 1).await.leechers, 2);
}

pub async fn a_new_peer_id_replaces_the_old_one(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    async fn ids_seen(s: &Backend) -> Vec<u8> {
        let mut out: Vec<Peer> = Vec::new();
        go(s, &ann(1, "10.9.9.9:9", 5, Event::None), &mut out).await;
        out.iter().filter(|p| p.addr.port() == 1000).map(|p| p.peer_id.unwrap().0[0]).collect::<Vec<_>>()
    }
    let mut a = ann(1, "10.0.0.1:1000", 5, Event::Started);
    a.peer_id = PeerId([1; 20]);
    go(&s, &a, &mut Vec::new()).await;
    assert_eq!(ids_seen(&s).await, [1]);
    // A re-announce with another id: the id follows.
    a.event = Event::None;
    a.peer_id = PeerId([2; 20]);
    go(&s, &a, &mut Vec::new()).await;
    assert_eq!(ids_seen(&s).await, [2]);
    // `started` writes the id too.
    a.event = Event::Started;
    a.peer_id = PeerId([3; 20]);
    go(&s, &a, &mut Vec::new()).await;
    assert_eq!(ids_seen(&s).await, [3]);
    // Seeder and completed flags survive id changes, and the id survives flag changes.
    a.event = Event::Completed;
    a.left = 0;
    go(&s, &a, &mut Vec::new()).await;
    assert_eq!(counts(&s, 1).await, SwarmCounts { seeders: 1, leechers: 1, downloaded: 1 });
    assert_eq!(ids_seen(&s).await, [3]);
    a.event = Event::Started;
    a.peer_id = PeerId([4; 20]);
    go(&s, &a, &mut Vec::new()).await;
    a.event = Event::Completed;
    go(&s, &a, &mut Vec::new()).await;
    assert_eq!(counts(&s, 1).await, SwarmCounts { seeders: 1, leechers: 1, downloaded: 1 }, "counted once");
    // A reply without ids carries none.
    let mut reply = ReplyPeers { peers: Vec::new(), with_ids: false };
    s.announce(&ann(1, "10.9.9.8:9", 5, Event::None), &mut reply).await.unwrap();
    assert!(!reply.peers.is_empty() && reply.peers.iter().all(|p| p.peer_id.is_none()));
}

/// Through stops, id changes without `started`, and a partial expiry, every peer a dictionary
/// reply hands out carries its own latest id.
pub async fn peer_ids_stay_with_their_peers(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    let id_of = |port: u16, generation: u8| {
        let mut id = [generation; 20];
        id[..2].copy_from_slice(&port.to_be_bytes());
        PeerId(id)
    };
    let peer = |port: u16, generation: u8, event: Event| {
        let mut a = ann(7, &format!("10.0.{}.{}:{port}", port >> 8, port & 255), 5, event);
        a.peer_id = id_of(port, generation);
        a
    };
    let mut live: HashMap<u16, u8> = HashMap::new();
    for port in 1..=200u16 {
        go(&s, &peer(port, 1, Event::Started), &mut Vec::new()).await;
        live.insert(port, 1);
    }
    for port in (3..=200u16).step_by(3) {
        go(&s, &peer(port, 1, Event::Stopped), &mut Vec::new()).await;
        live.remove(&port);
    }
    for port in (1..=200u16).step_by(7) {
        if let Some(generation) = live.get_mut(&port) {
            go(&s, &peer(port, 2, Event::None), &mut Vec::new()).await;
            *generation = 2;
        }
    }
    // Those whose port is a multiple of 5 go quiet and expire; the others announce again.
    h.advance(&s, TIMEOUT - 10);
    for (&port, &generation) in &live {
        if port % 5 != 0 {
            go(&s, &peer(port, generation, Event::None), &mut Vec::new()).await;
        }
    }
    h.advance(&s, 20);
    s.clean(TIMEOUT).await.unwrap();
    live.retain(|port, _| port % 5 != 0);
    assert_eq!(counts(&s, 7).await, SwarmCounts { seeders: 0, leechers: live.len() as u32, downloaded: 0 });
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let mut asker = ann(7, "10.9.9.9:9", 0, Event::None);
        asker.numwant = 30;
        let mut out: Vec<Peer> = Vec::new();
        go(&s, &asker, &mut out).await;
        assert_eq!(out.len(), 30);
        for p in out {
            let port = p.addr.port();
            assert_eq!(p.peer_id, Some(id_of(port, live[&port])), "peer {}", p.addr);
            seen.insert(port);
        }
    }
    assert!(seen.len() > live.len() / 2, "replies start at random positions");
}

pub async fn seeders_get_only_leechers_and_families_mix(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    let mut out: Vec<Peer> = Vec::new();
    go(&s, &ann(1, "10.0.0.1:1", 0, Event::Started), &mut out).await;
    go(&s, &ann(1, "10.0.0.2:1", 0, Event::Started), &mut out).await;
    go(&s, &ann(1, "[2001:db8::1]:1", 7, Event::Started), &mut out).await;
    out.clear();
    go(&s, &ann(1, "10.0.0.3:1", 0, Event::Started), &mut out).await;
    assert_eq!(out.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(), vec!["[2001:db8::1]:1"]);
    out.clear();
    let mut same = ann(1, "10.0.0.4:1", 9, Event::Started);
    same.families = Families::Same;
    go(&s, &same, &mut out).await;
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|p| p.addr.is_ipv4()));
    // An IPv6 leecher gets its own family first, then IPv4.
    out.clear();
    go(&s, &ann(1, "[2001:db8::2]:1", 9, Event::Started), &mut out).await;
    assert_eq!(out.len(), 5);
    assert_eq!(out[0].addr.to_string(), "[2001:db8::1]:1");
    assert!(out[1..].iter().all(|p| p.addr.is_ipv4()));
    // v4-mapped IPv6 is IPv4.
    out.clear();
    go(&s, &ann(1, "[::ffff:10.0.0.1]:1", 0, Event::None), &mut out).await;
    assert_eq!(totals(&s).await.peers, 6);
}

pub async fn numwant_on_big_swarms(h: &impl Harness) {
    let s = h.backend(100_000, 1_000_000);
    let mut out: Vec<Peer> = Vec::new();
    let addr = |i: u32| format!("10.0.{}.{}:{}", i / 256, i % 256, 1000 + i);
    for i in 0..1000u32 {
        go(&s, &ann(2, &addr(i), 1, Event::Started), &mut out).await;
        out.clear();
    }
    assert_eq!(counts(&s, 2).await.leechers, 1000);
    go(&s, &ann(2, "10.0.0.5:1005", 1, Event::None), &mut out).await;
    assert_eq!(out.len(), 50);
    assert!(!out.iter().any(|p| p.addr == "10.0.0.5:1005".parse().unwrap()));
    let mut uniq: Vec<_> = out.iter().map(|p| p.addr).collect();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 50);
    for i in (0..1000u32).step_by(2) {
        go(&s, &ann(2, &addr(i), 1, Event::Stopped), &mut out).await;
    }
    assert_eq!(counts(&s, 2).await.leechers, 500);
    assert_eq!(totals(&s).await.peers, 500);
    // Every remaining peer is still found after the removals.
    for i in (1..1000u32).step_by(2) {
        go(&s, &ann(2, &addr(i), 0, Event::Completed), &mut out).await;
    }
    assert_eq!(counts(&s, 2).await, SwarmCounts { seeders: 500, leechers: 0, downloaded: 500 });
    // A big ask of a seeder among seeders: nobody.
    out.clear();
    let mut asker = ann(2, &addr(1), 0, Event::None);
    asker.numwant = 200;
    go(&s, &asker, &mut out).await;
    assert!(out.is_empty());
}

/// More peers of a swarm expire at once than one announce drops (the Redis store drops up to
/// 256 of each kind per announce): counts stay exact throughout, and once they are gone no
/// reply holds an expired peer.
pub async fn many_peers_expire_at_once(h: &impl Harness) {
    let s = h.backend(100_000, 1_000_000);
    let addr = |i: u32| format!("10.1.{}.{}:{}", i / 256, i % 256, 1000 + i);
    for i in 0..700u32 {
        go(&s, &ann(3, &addr(i), u64::from(i % 2), Event::Started), &mut Vec::new()).await;
    }
    h.advance(&s, TIMEOUT / 2);
    for i in 0..100u32 {
        go(&s, &ann(3, &addr(i), u64::from(i % 2), Event::None), &mut Vec::new()).await;
    }
    h.advance(&s, TIMEOUT / 2 + 2);
    // The in-memory store's cleaner drops them; Redis's drops only idle swarms, and leaves
    // this one's peers to its announces.
    s.clean(TIMEOUT).await.unwrap();
    let live: HashSet<SocketAddr> = (0..100u32).map(|i| addr(i).parse().unwrap()).collect();
    let want = SwarmCounts { seeders: 50, leechers: 51, downloaded: 0 };
    for round in 0..4 {
        let mut out: Vec<Peer> = Vec::new();
        let (c, _) = go(&s, &ann(3, "10.9.9.9:9", 1, Event::None), &mut out).await;
        assert_eq!(c, want, "round {round}");
        assert_eq!(counts(&s, 3).await, want, "round {round}");
        assert_eq!(out.len(), 50);
        if round >= 2 {
            assert!(out.iter().all(|p| live.contains(&p.addr)), "round {round}: an expired peer handed out");
        }
    }
}

pub async fn swarms_can_be_dropped_with_their_peers(h: &impl Harness) {
    let s = h.backend(1000, 3);
    let mut out: Vec<Peer> = Vec::new();
    go(&s, &ann(1, "10.0.0.1:1", 0, Event::Started), &mut out).await;
    go(&s, &ann(1, "10.0.0.2:1", 1, Event::Started), &mut out).await;
    go(&s, &ann(2, "10.0.0.1:1", 1, Event::Started), &mut out).await;
    assert_eq!(s.retain_swarms(|h| *h != InfoHash([1; 20])).await.unwrap(), (2, 1));
    assert_eq!(counts(&s, 1).await, SwarmCounts::default());
    assert_eq!(totals(&s).await, Totals { swarms: 1, seeders: 0, leechers: 1, peers: 1, downloaded: 0 });
    // Room for new peers again: the global count went down too.
    assert_eq!(go(&s, &ann(3, "10.0.0.1:1", 1, Event::Started), &mut out).await.1, Outcome::Ok);
    assert_eq!(go(&s, &ann(3, "10.0.0.2:1", 1, Event::Started), &mut out).await.1, Outcome::Ok);
    assert_eq!(go(&s, &ann(3, "10.0.0.3:1", 1, Event::Started), &mut out).await.1, Outcome::Full);
}

pub async fn caps_refuse_new_peers(h: &impl Harness) {
    let s = h.backend(2, 3);
    let mut out: Vec<Peer> = Vec::new();
    assert_eq!(go(&s, &ann(1, "10.0.0.1:1", 1, Event::Started), &mut out).await.1, Outcome::Ok);
    assert_eq!(go(&s, &ann(1, "10.0.0.2:1", 1, Event::Started), &mut out).await.1, Outcome::Ok);
    let (c, outcome) = go(&s, &ann(1, "10.0.0.3:1", 1, Event::Started), &mut out).await;
    assert_eq!((c.leechers, outcome), (2, Outcome::Full));
    assert_eq!(go(&s, &ann(2, "10.0.0.3:1", 1, Event::Started), &mut out).await.1, Outcome::Ok);
    assert_eq!(go(&s, &ann(3, "10.0.0.3:1", 1, Event::Started), &mut out).await.1, Outcome::Full);
    // A known peer still re-announces.
    assert_eq!(go(&s, &ann(1, "10.0.0.1:1", 0, Event::None), &mut out).await.1, Outcome::Ok);
    // A refused peer on a swarm nobody else is in makes no swarm.
    assert_eq!(totals(&s).await, Totals { swarms: 2, seeders: 1, leechers: 2, peers: 3, downloaded: 0 });
}

pub async fn cleaner_expires_peers_and_empty_swarms(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    let mut out: Vec<Peer> = Vec::new();
    go(&s, &ann(1, "10.0.0.1:1", 1, Event::Started), &mut out).await;
    go(&s, &ann(1, "[::1]:1", 0, Event::Started), &mut out).await;
    go(&s, &ann(2, "10.0.0.1:1", 0, Event::Completed), &mut out).await;
    assert_eq!(s.clean(TIMEOUT).await.unwrap(), (0, 0));
    h.advance(&s, TIMEOUT / 2);
    // Swarm 2's peer stays: it announced again within the timeout.
    go(&s, &ann(2, "10.0.0.1:1", 0, Event::None), &mut out).await;
    h.advance(&s, TIMEOUT / 2 + 2);
    assert_eq!(s.clean(TIMEOUT).await.unwrap(), (2, 1));
    assert_eq!(totals(&s).await, Totals { swarms: 1, seeders: 1, leechers: 0, peers: 1, downloaded: 1 });
    assert_eq!(counts(&s, 1).await, SwarmCounts::default());
    h.advance(&s, TIMEOUT);
    assert_eq!(s.clean(TIMEOUT).await.unwrap(), (1, 1));
    assert_eq!(totals(&s).await, Totals::default());
    assert_eq!(counts(&s, 2).await, SwarmCounts::default(), "the swarm went with its count of downloads");
}

pub async fn batches_answer_each_job(h: &impl Harness) {
    let s = h.backend(1000, 1000);
    go(&s, &ann(1, "10.0.0.1:1", 0, Event::Started), &mut Vec::new()).await;
    let mut jobs = vec![
        Job { slot: 0, tag: 7, op: Op::announce(ann(1, "10.0.0.2:1", 5, Event::Started)) },
        Job { slot: 1, tag: 8, op: Op::scrape(vec![InfoHash([1; 20]), InfoHash([9; 20])]) },
        Job { slot: 2, tag: 9, op: Op::announce(ann(1, "10.0.0.3:1", 0, Event::Completed)) },
    ];
    let mut sinks: Vec<Vec<Peer>> = vec![Vec::new(); 3];
    s.run(&mut jobs, &mut sinks).await;
    let Op::Announce { result: Ok((c, Outcome::Ok)), .. } = &jobs[0].op else { panic!("{:?}", jobs[0]) };
    assert_eq!(*c, SwarmCounts { seeders: 1, leechers: 1, downloaded: 0 });
    assert_eq!(sinks[0].iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(), ["10.0.0.1:1"]);
    // The scrape sees the announce before it in the batch.
    let Op::Scrape { result: Ok(v), .. } = &jobs[1].op else { panic!("{:?}", jobs[1]) };
    assert_eq!(v, &[SwarmCounts { seeders: 1, leechers: 1, downloaded: 0 }, SwarmCounts::default()]);
    assert!(sinks[1].is_empty());
    let Op::Announce { result: Ok((c, _)), .. } = &jobs[2].op else { panic!("{:?}", jobs[2]) };
    assert_eq!(*c, SwarmCounts { seeders: 2, leechers: 1, downloaded: 1 });
    assert_eq!(sinks[2].iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(), ["10.0.0.2:1"]);
    let all: BTreeMap<InfoHash, SwarmCounts> = s.all_counts().await.unwrap().into_iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[&InfoHash([1; 20])], SwarmCounts { seeders: 2, leechers: 1, downloaded: 1 });
    let snap = s.snapshot(10).await.unwrap();
    assert_eq!(snap.totals, Totals { swarms: 1, seeders: 2, leechers: 1, peers: 3, downloaded: 1 });
    assert_eq!(snap.swarms.len(), 1);
    assert_eq!(snap.swarms[0].info_hash, InfoHash([1; 20]).to_hex());
}

pub async fn concurrent_announces_keep_totals_consistent(h: &impl Harness, per_task: usize) {
    let s = Arc::new(h.backend(100_000, 1_000_000));
    let tasks: Vec<_> = (0..4u64)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut out: Vec<Peer> = Vec::new();
                for _ in 0..per_task {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let event = [Event::None, Event::Started, Event::Completed, Event::Stopped][(x % 4) as usize];
                    let a = Announce {
                        info_hash: InfoHash([(x >> 8) as u8 % 16; 20]),
                        peer_id: PeerId([t as u8; 20]),
                        addr: SocketAddr::from(([10, 0, t as u8, (x >> 16) as u8], (x >> 24) as u16 % 8 + 1)),
                        left: (x >> 40) % 2,
                        event,
                        numwant: 10,
                        families: Families::Both,
                    };
                    out.clear();
                    go(&s, &a, &mut out).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let t = totals(&s).await;
    let sum = s.all_counts().await.unwrap().iter().fold(SwarmCounts::default(), |a, (_, c)| SwarmCounts {
        seeders: a.seeders + c.seeders,
        leechers: a.leechers + c.leechers,
        downloaded: a.downloaded + c.downloaded,
    });
    assert_eq!(
        (t.seeders, t.leechers, t.downloaded),
        (u64::from(sum.seeders), u64::from(sum.leechers), u64::from(sum.downloaded))
    );
    assert_eq!(t.peers, t.seeders + t.leechers);
    assert!(t.peers > 0);
}

mod model {
    use proptest::prelude::*;
    use proptest::test_runner::{TestCaseError, TestRunner};

    use super::*;

    #[derive(Debug, Clone)]
    struct Op {
        swarm: u8,
        addr: SocketAddr,
        left: u64,
        event: Event,
        numwant: usize,
        id: u8,
    }

    fn op() -> impl Strategy<Value = Op> {
        let addr = prop_oneof![
            (0u8..4, 1u16..4).prop_map(|(h, p)| SocketAddr::from(([10, 0, 0, h], p))),
            (0u8..3, 1u16..3).prop_map(|(h, p)| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(h)], p))),
        ];
        let event = prop_oneof![Just(Event::None), Just(Event::Started), Just(Event::Completed), Just(Event::Stopped)];
        (0u8..3, addr, prop_oneof![Just(0u64), Just(7u64)], event, 0usize..6, 1u8..4)
            .prop_map(|(swarm, addr, left, event, numwant, id)| Op { swarm, addr, left, event, numwant, id })
    }

    /// Any sequence of announces keeps the counts equal to a plain model, never hands a peer
    /// itself, never hands a seeder a seeder, respects numwant, and hands each peer out with the
    /// id it announced last; then everything expires. `cases` sequences of up to 200.
    pub fn counts_match_a_model(h: &impl Harness, cases: u32) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut runner = TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
        runner
            .run(&proptest::collection::vec(op(), 1..200), |ops| rt.block_on(case(h, ops)))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn case(h: &impl Harness, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let s = h.backend(1000, 1000);
        let mut peers: BTreeMap<(u8, SocketAddr), bool> = BTreeMap::new();
        let mut ids: BTreeMap<(u8, SocketAddr), u8> = BTreeMap::new();
        let mut counted: BTreeSet<(u8, SocketAddr)> = Default::default();
        let mut downloaded = [0u32; 3];
        let mut out: Vec<Peer> = Vec::new();
        for o in &ops {
            let seeder = o.left == 0;
            let key = (o.swarm, o.addr);
            match o.event {
                Event::Stopped => {
                    peers.remove(&key);
                    ids.remove(&key);
                    counted.remove(&key);
                }
                _ => {
                    peers.insert(key, seeder);
                    ids.insert(key, o.id);
                    if o.event == Event::Completed && counted.insert(key) {
                        downloaded[usize::from(o.swarm)] += 1;
                    }
                }
            }
            out.clear();
            let a = Announce {
                info_hash: InfoHash([o.swarm; 20]),
                peer_id: PeerId([o.id; 20]),
                addr: o.addr,
                left: o.left,
                event: o.event,
                numwant: o.numwant,
                families: Families::Both,
            };
            let (c, outcome) = go(&s, &a, &mut out).await;
            prop_assert_eq!(outcome, Outcome::Ok);
            let model = |sw: u8| {
                let mine = peers.iter().filter(|((h, _), _)| *h == sw);
                let seeders = mine.clone().filter(|(_, s)| **s).count() as u32;
                SwarmCounts {
                    seeders,
                    leechers: mine.count() as u32 - seeders,
                    downloaded: downloaded[usize::from(sw)],
                }
            };
            prop_assert_eq!(c, model(o.swarm));
            prop_assert!(out.len() <= o.numwant);
            for p in &out {
                prop_assert!(p.addr != o.addr, "got itself back");
                let theirs = peers.get(&(o.swarm, p.addr)).copied();
                prop_assert!(theirs.is_some(), "a peer that is not in the swarm");
                prop_assert!(!(seeder && theirs == Some(true)), "a seeder got a seeder");
                prop_assert_eq!(p.peer_id, ids.get(&(o.swarm, p.addr)).map(|&i| PeerId([i; 20])));
            }
            let hashes: Vec<InfoHash> = (0..3u8).map(|h| InfoHash([h; 20])).collect();
            let scraped = s.scrape(&hashes).await.unwrap();
            for sw in 0..3u8 {
                prop_assert_eq!(scraped[usize::from(sw)], model(sw));
            }
            let t = totals(&s).await;
            prop_assert_eq!(t.peers, peers.len() as u64);
            prop_assert_eq!(t.seeders, peers.values().filter(|s| **s).count() as u64);
        }
        // Everything expires, and the totals go to zero with it.
        h.advance(&s, TIMEOUT + 1);
        let (gone, _) = s.clean(TIMEOUT).await.unwrap();
        prop_assert_eq!(gone, peers.len() as u64);
        prop_assert_eq!(totals(&s).await, Totals::default());
        Ok(())
    }
}

/// The tests for one backend: `$harness` is an `Option` of a [`Harness`] (`None`: skipped, and
/// said so by whoever made it), `$scale` how much of the slow tests to run.
macro_rules! conformance {
    ($name:ident, $harness:expr, $cases:expr, $per_task:expr) => {
        mod $name {
            use super::*;

            macro_rules! t {
                ($test:ident) => {
                    #[test]
                    fn $test() {
                        if let Some(h) = $harness {
                            run(super::$test(&h));
                        }
                    }
                };
            }
            t!(counts_follow_events);
            t!(peers_are_keyed_by_address_and_port);
            t!(a_new_peer_id_replaces_the_old_one);
            t!(peer_ids_stay_with_their_peers);
            t!(seeders_get_only_leechers_and_families_mix);
            t!(numwant_on_big_swarms);
            t!(swarms_can_be_dropped_with_their_peers);
            t!(many_peers_expire_at_once);
            t!(caps_refuse_new_peers);
            t!(cleaner_expires_peers_and_empty_swarms);
            t!(batches_answer_each_job);

            #[test]
            fn concurrent_announces_keep_totals_consistent() {
                if let Some(h) = $harness {
                    run(super::concurrent_announces_keep_totals_consistent(&h, $per_task));
                }
            }

            #[test]
            fn counts_match_a_model() {
                if let Some(h) = $harness {
                    super::model::counts_match_a_model(&h, $cases);
                }
            }
        }
    };
}

/// The in-memory store.
pub struct MemoryHarness;

impl Harness for MemoryHarness {
    fn backend(&self, max_per_swarm: u32, max_total: u64) -> Backend {
        Backend::Memory(crate::store::Store::new(4, max_per_swarm, max_total))
    }
    fn advance(&self, b: &Backend, secs: u32) {
        b.memory().unwrap().advance(secs);
    }
}

conformance!(memory, Some(MemoryHarness), 256, 20_000);

/// A `redis-server` of the tests' own, on a Unix socket in a temporary folder (no TCP port),
/// without persistence; killed when dropped.
pub struct RedisServer {
    child: std::process::Child,
    /// `unix:///…/redis.sock`
    pub url: String,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// What installs `redis-server`.
pub const REDIS_INSTALL: &str = "apt-get install -y redis-server";

impl RedisServer {
    /// Starts one and waits (10 s at most) until it answers. `None` when interop tests are
    /// skipped on purpose (`BITSWARM_SKIP_INTEROP=1`); a missing `redis-server` fails the test
    /// with the line that installs it.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_in(tempfile::Builder::new().prefix("bitswarm-redis-").tempdir().unwrap())
    }

    /// [`RedisServer::start`] on `redis.sock` in `dir` (a socket there is replaced).
    pub fn start_in(dir: tempfile::TempDir) -> Option<RedisServer> {
        if interop_skipped() {
            return None;
        }
        let socket = dir.path().join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with `{REDIS_INSTALL}` (or scripts/install-deps), \
                     or set BITSWARM_SKIP_INTEROP=1 to skip the tests that need it"
                )
            });
        let server = RedisServer { child, url: format!("unix://{}", socket.display()), socket, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.command(&["PING"]).is_none() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not answer within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Some(server)
    }

    /// Sends one command and returns the first line of the reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether interop tests are skipped on purpose (`BITSWARM_SKIP_INTEROP=1`; says so).
fn interop_skipped() -> bool {
    let skip = std::env::var("BITSWARM_SKIP_INTEROP").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("skipping: BITSWARM_SKIP_INTEROP=1");
    }
    skip
}

/// Redis: a server per test, emptied for each backend made.
pub struct RedisHarness(RedisServer);

impl RedisHarness {
    pub fn start() -> Option<RedisHarness> {
        RedisServer::start().map(RedisHarness)
    }
}

impl Harness for RedisHarness {
    fn backend(&self, max_per_swarm: u32, max_total: u64) -> Backend {
        assert_eq!(self.0.command(&["FLUSHALL"]).as_deref(), Some("+OK"));
        Backend::Redis(Box::new(
            crate::redis_store::RedisStore::new(&self.0.url, TIMEOUT, max_per_swarm, max_total).unwrap(),
        ))
    }
    fn advance(&self, b: &Backend, secs: u32) {
        match b {
            Backend::Redis(r) => r.advance(secs),
            Backend::Memory(_) => unreachable!("a Redis harness makes Redis backends"),
        }
    }
}

conformance!(redis, RedisHarness::start(), 64, 500);

/// Redis through `EVALSHA` of scripts, as on a Redis without functions (before 7.0).
pub struct RedisScriptsHarness(RedisHarness);

impl Harness for RedisScriptsHarness {
    fn backend(&self, max_per_swarm: u32, max_total: u64) -> Backend {
        let b = self.0.backend(max_per_swarm, max_total);
        if let Backend::Redis(r) = &b {
            r.use_scripts();
        }
        b
    }
    fn advance(&self, b: &Backend, secs: u32) {
        self.0.advance(b, secs)
    }
}

conformance!(redis_scripts, RedisHarness::start().map(RedisScriptsHarness), 16, 100);

/// A Redis that lost the Lua code (`FUNCTION FLUSH`, `SCRIPT FLUSH`: what a restart without
/// data does) is given it again, and the request that found it missing is answered.
#[test]
fn redis_gets_the_code_again_when_it_lost_it() {
    let Some(h) = RedisHarness::start() else { return };
    for scripts in [false, true] {
        let s = h.backend(1000, 1000);
        if let Backend::Redis(r) = &s
            && scripts
        {
            r.use_scripts();
        }
        run(async {
            for (i, flush) in [None, Some("FUNCTION"), Some("SCRIPT")].into_iter().enumerate() {
                if let Some(what) = flush {
                    assert_eq!(h.0.command(&[what, "FLUSH"]).as_deref(), Some("+OK"));
                }
                let a = ann(7, &format!("10.0.0.{}:1", i + 1), 5, Event::Started);
                let (counts, _) = s.announce(&a, &mut Vec::<Peer>::new()).await.unwrap();
                assert_eq!(counts.leechers, i as u32 + 1, "scripts: {scripts}, after {flush:?}");
            }
        });
    }
}

/// A swarm written by the Redis store's earlier layout (a sorted set and a hash of flag and
/// peer id, nothing else) is dropped on its first announce, with its share of the totals, and
/// fills again; nothing fails. Until then a scrape reports it empty.
#[test]
fn redis_swarms_of_the_earlier_layout_are_dropped_on_their_first_announce() {
    let Some(h) = RedisHarness::start() else { return };
    let s = h.backend(1000, 1000);
    // Info-hash "aaaa…", the peer 65.65.65.65:16705 ("AAAAAA" compact): printable keys.
    let hash = InfoHash([b'a'; 20]);
    let key = |kind: &str| format!("bs:{kind}{}", "a".repeat(20));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let c = |args: &[&str]| assert!(h.0.command(args).is_some_and(|r| !r.starts_with('-')), "{args:?}");
    c(&["ZADD", &key("4:"), &now, "AAAAAA"]);
    c(&["HSET", &key("p:"), "AAAAAA", &format!("-{}", "x".repeat(20))]);
    c(&["HSET", "bs:totals", "l", "1"]);
    c(&["ZADD", "bs:swarms", &now, &"a".repeat(20)]);
    run(async {
        // A scrape tells it from no swarm only after its first announce.
        assert_eq!(s.scrape(&[hash]).await.unwrap()[0], SwarmCounts::default());
        let mut a = ann(b'a', "65.65.65.65:16705", 5, Event::None);
        a.info_hash = hash;
        let (counts, _) = s.announce(&a, &mut Vec::<Peer>::new()).await.unwrap();
        assert_eq!(counts, SwarmCounts { seeders: 0, leechers: 1, downloaded: 0 });
        let mut b = ann(b'a', "10.0.0.2:1", 5, Event::Started);
        b.info_hash = hash;
        let mut out: Vec<Peer> = Vec::new();
        let (counts, _) = s.announce(&b, &mut out).await.unwrap();
        assert_eq!(counts.leechers, 2);
        assert_eq!(out.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(), ["65.65.65.65:16705"]);
        assert_eq!(totals(&s).await, Totals { swarms: 1, seeders: 0, leechers: 2, peers: 2, downloaded: 0 });
    });
}

/// A swarm bigger than one prune step (1,024 fields of its hash) whose peers mostly expire at
/// once: the announces after its mark finish the prune a step each, then counts, totals and
/// replies hold only the live peers, and the next prune waits for the next peer to go stale.
#[test]
fn redis_a_big_swarm_is_pruned_over_several_announces() {
    let Some(h) = RedisHarness::start() else { return };
    let s = h.backend(100_000, 1_000_000);
    let addr = |i: u32| format!("10.2.{}.{}:{}", i / 256, i % 256, 1000 + i);
    run(async {
        for i in 0..3000u32 {
            go(&s, &ann(4, &addr(i), u64::from(i % 3), Event::Started), &mut Vec::new()).await;
        }
        h.advance(&s, TIMEOUT / 2);
        for i in 0..300u32 {
            go(&s, &ann(4, &addr(i), u64::from(i % 3), Event::None), &mut Vec::new()).await;
        }
        h.advance(&s, TIMEOUT / 2 + 2);
        let live: HashSet<SocketAddr> = (0..300u32).map(|i| addr(i).parse().unwrap()).collect();
        let want = SwarmCounts { seeders: 100, leechers: 201, downloaded: 0 };
        let mut steps = 0;
        loop {
            let (c, _) = go(&s, &ann(4, "10.9.9.9:9", 1, Event::None), &mut Vec::new()).await;
            steps += 1;
            if c == want {
                break;
            }
            assert!(steps < 20, "still {c:?} after {steps} announces");
        }
        assert!(steps > 1, "one step pruned a swarm of 3,000");
        assert_eq!(totals(&s).await, Totals { swarms: 1, seeders: 100, leechers: 201, peers: 301, downloaded: 0 });
        for _ in 0..10 {
            let mut out: Vec<Peer> = Vec::new();
            let (c, _) = go(&s, &ann(4, "10.9.9.9:9", 1, Event::None), &mut out).await;
            assert_eq!(c, want);
            assert_eq!(out.len(), 50);
            assert!(out.iter().all(|p| live.contains(&p.addr)), "an expired peer handed out");
        }
    });
}

/// A list's string shrinks with its swarm (`SETRANGE` never shortens one): a swarm of 3,000
/// peers of which most stop, then most of the rest expire, keeps lists of at most twice what
/// its peers' entries need plus 511 bytes (or under 1 KB), and replies still hand out every
/// live peer and no other.
#[test]
fn redis_lists_shrink_when_their_swarm_does() {
    let Some(h) = RedisHarness::start() else { return };
    let s = h.backend(100_000, 1_000_000);
    let addr = |i: u32| format!("10.3.{}.{}:{}", i / 256, i % 256, 1000 + i);
    let strlen = |list: &str| -> usize {
        let key = format!("bs:{list}:{}", "\u{4}".repeat(20));
        let r = h.0.command(&["STRLEN", &key]).expect("Redis answers");
        r.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("STRLEN {list}: {r}"))
    };
    // Every peer of the swarm but the observer (a leecher), and the counts.
    async fn everyone(s: &Backend) -> (SwarmCounts, HashSet<SocketAddr>) {
        let mut a = ann(4, "10.9.9.9:9", 1, Event::None);
        a.numwant = 5000;
        let mut out: Vec<Peer> = Vec::new();
        let (c, _) = go(s, &a, &mut out).await;
        let all: HashSet<SocketAddr> = out.iter().map(|p| p.addr).collect();
        assert_eq!(all.len(), out.len(), "a peer handed out twice");
        (c, all)
    }
    let fits = |list: &str, entries: u32| {
        let (len, used) = (strlen(list), entries as usize * 6);
        assert!(len >= used, "{list}: {len} bytes for {entries} entries");
        assert!(len <= (2 * used + 511).max(1023), "{list}: {len} bytes for {entries} entries");
    };
    run(async {
        // i % 3 == 0 seeds.
        for i in 0..3000u32 {
            go(&s, &ann(4, &addr(i), u64::from(i % 3), Event::Started), &mut Vec::new()).await;
        }
        assert_eq!((strlen("S4"), strlen("L4")), (6000, 12000));
        // Two thirds stop.
        for i in 1000..3000u32 {
            go(&s, &ann(4, &addr(i), u64::from(i % 3), Event::Stopped), &mut Vec::new()).await;
        }
        let (c, all) = everyone(&s).await;
        assert_eq!(c, SwarmCounts { seeders: 334, leechers: 667, downloaded: 0 });
        assert_eq!(all, (0..1000u32).map(|i| addr(i).parse().unwrap()).collect());
        fits("S4", c.seeders);
        fits("L4", c.leechers);
        assert!(strlen("S4") < 6000 && strlen("L4") < 12000);

        // All but 30 (and the observer) expire: the prune takes them out.
        h.advance(&s, TIMEOUT / 2);
        for i in 0..30u32 {
            go(&s, &ann(4, &addr(i), u64::from(i % 3), Event::None), &mut Vec::new()).await;
        }
        everyone(&s).await;
        h.advance(&s, TIMEOUT / 2 + 2);
        let want = SwarmCounts { seeders: 10, leechers: 21, downloaded: 0 };
        let mut steps = 0;
        let all = loop {
            let (c, all) = everyone(&s).await;
            steps += 1;
            if c == want {
                break all;
            }
            assert!(steps < 20, "still {c:?} after {steps} announces");
        };
        assert_eq!(all, (0..30u32).map(|i| addr(i).parse().unwrap()).collect());
        fits("S4", want.seeders);
        fits("L4", want.leechers);
        assert_eq!(totals(&s).await, Totals { swarms: 1, seeders: 10, leechers: 21, peers: 31, downloaded: 0 });
    });
}

/// The UDP workers' blocking path never waits on a connect. Redis's address here takes
/// connections and never answers them (a Unix socket listened on and never accepted from: the
/// redis crate's handshake, `CLIENT SETINFO`, waits the whole connect timeout, 1 s, as a
/// connect to a TCP address that drops packets does): every batch fails at once, with the
/// reason once an attempt failed, and once a real Redis is there, batches succeed again by
/// themselves.
#[test]
fn redis_blocking_batches_never_wait_on_a_connect() {
    if interop_skipped() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("bitswarm-redis-").tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let url = format!("unix://{}", socket.display());
    let s = crate::redis_store::RedisStore::new(&url, TIMEOUT, 1000, 1000).unwrap();
    let batch = || {
        let a = ann(5, "10.0.0.1:1", 5, Event::None);
        let mut jobs = vec![Job { slot: 0, tag: 0, op: Op::announce(a) }];
        let mut sinks = vec![Vec::<Peer>::new()];
        let at = std::time::Instant::now();
        s.run_blocking(&mut jobs, &mut sinks);
        let took = at.elapsed();
        match &jobs[0].op {
            Op::Announce { result, .. } => (result.clone(), took),
            Op::Scrape { .. } => unreachable!(),
        }
    };
    // Across more than two attempts (1 s each, then 100 ms before the next).
    let start = std::time::Instant::now();
    let mut reasons = BTreeSet::new();
    while start.elapsed() < std::time::Duration::from_millis(2500) {
        let (r, took) = batch();
        let e = r.expect_err("nothing answers");
        assert!(took < std::time::Duration::from_millis(200), "a batch waited {took:?} ({e})");
        reasons.insert(e.0.to_string());
        // A batch now and then, as packets come.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(reasons.iter().any(|r| r.starts_with("Redis: cannot connect: ")), "{reasons:?}");
    drop(silent);
    let Some(_redis) = RedisServer::start_in(dir) else { return };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (r, took) = batch();
        assert!(took < std::time::Duration::from_millis(2000), "a batch took {took:?}");
        match r {
            Ok((c, _)) => {
                assert_eq!(c.leechers, 1);
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "still failing after 10 s: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
