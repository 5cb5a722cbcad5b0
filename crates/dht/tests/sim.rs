//! A thousand nodes on virtual time: bootstrap from a few, then `find_node` must reach the
//! true closest nodes and `get_peers` must find announced peers, before and after a fifth of
//! the nodes leave without a word.

#[path = "support/sim.rs"]
mod sim;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bitswarm_dht::{Event, InfoHash, LookupId, NodeId};
use sim::Sim;

const N: usize = 1000;
const K: usize = 8;

/// Runs `lookups` find_node lookups from random live nodes; returns (mean overlap with the
/// true k closest, share whose nearest result is the true nearest).
fn check_find_node(sim: &mut Sim, lookups: usize) -> (f64, f64) {
    let mut overlap = 0usize;
    let mut exact_first = 0usize;
    for _ in 0..lookups {
        let from = loop {
            let i = sim.rand_below(N);
            if sim.nodes[i].alive {
                break i;
            }
        };
        let target = sim.rand_id();
        let id = sim.with(from, |d, now| d.find_node(now, target));
        let found = lookup_result(sim, from, id);
        let truth = sim.true_closest(&target, K);
        // The node itself is not in its own result.
        let own = sim.nodes[from].dht.id();
        let truth: Vec<NodeId> = truth.into_iter().filter(|t| *t != own).take(K).collect();
        let got: HashSet<NodeId> = found.iter().copied().collect();
        overlap += truth.iter().filter(|t| got.contains(t)).count();
        if found.first() == truth.first() || truth.is_empty() {
            exact_first += 1;
        }
    }
    (overlap as f64 / lookups as f64, exact_first as f64 / lookups as f64)
}

fn lookup_result(sim: &mut Sim, node: usize, id: LookupId) -> Vec<NodeId> {
    let mut out = None;
    sim.run_until_event(Duration::from_secs(120), |evs| {
        for (i, e) in evs {
            if let Event::LookupDone { lookup, closest, .. } = e
                && *i == node
                && *lookup == id
            {
                out = Some(closest.iter().map(|n| n.id).collect::<Vec<_>>());
                return true;
            }
        }
        false
    });
    out.expect("the lookup ends")
}

fn peers_found(sim: &mut Sim, node: usize, info_hash: InfoHash) -> HashSet<SocketAddr> {
    let id = sim.with(node, |d, now| d.get_peers(now, info_hash));
    let mut peers = HashSet::new();
    sim.run_until_event(Duration::from_secs(120), |evs| {
        for (i, e) in evs {
            match e {
                Event::Peers { lookup, peers: p, .. } if *i == node && *lookup == id => peers.extend(p.iter().copied()),
                Event::LookupDone { lookup, .. } if *i == node && *lookup == id => return true,
                _ => {}
            }
        }
        peers.clear();
        false
    });
    peers
}

#[test]
fn thousand_nodes_find_nodes_and_peers_even_after_a_fifth_leave() {
    let started = std::time::Instant::now();
    let mut sim = Sim::new(N, 42, |_, _| {});
    sim.bootstrap_all(3, Duration::from_millis(20));
    sim.run_for(Duration::from_secs(60));
    let sizes: Vec<usize> = sim.nodes.iter().map(|n| n.dht.routing_table(false).len()).collect();
    let mean_table = sizes.iter().sum::<usize>() as f64 / N as f64;
    eprintln!(
        "bootstrapped {N} nodes in {:?} wall, {} datagrams; table sizes mean {mean_table:.1}, min {}",
        started.elapsed(),
        sim.datagrams,
        sizes.iter().min().unwrap()
    );
    assert!(*sizes.iter().min().unwrap() >= K, "every node knows at least k others");

    let (overlap, first) = check_find_node(&mut sim, 40);
    eprintln!("find_node: {overlap:.2} of the true {K} closest, nearest exact in {:.0}%", first * 100.0);
    assert!(overlap >= 7.5, "{overlap}");
    assert!(first >= 0.95, "{first}");

    // Ten nodes announce one torrent; an eleventh finds them all.
    let info_hash = InfoHash(sim.rand_id().0);
    let announcers: Vec<usize> = (0..10).map(|j| 100 + j * 37).collect();
    for (j, &a) in announcers.iter().enumerate() {
        sim.with(a, |d, now| d.announce(now, info_hash, 7000 + j as u16, false));
    }
    let done = sim.run_until_event(Duration::from_secs(120), |evs| {
        evs.iter().filter(|(_, e)| matches!(e, Event::AnnounceDone { acknowledged, .. } if *acknowledged > 0)).count()
            == announcers.len()
    });
    assert!(done, "every announce was acknowledged");
    let expected: HashSet<SocketAddr> =
        announcers.iter().enumerate().map(|(j, &a)| SocketAddr::new(sim.nodes[a].addr.ip(), 7000 + j as u16)).collect();
    let found = peers_found(&mut sim, 999, info_hash);
    assert_eq!(found, expected);

    // A fifth of the nodes leave silently (not the announcers' peers, which live elsewhere).
    let mut gone = 0;
    while gone < N / 5 {
        let i = sim.rand_below(N);
        if sim.nodes[i].alive && i != 999 {
            sim.kill(i);
            gone += 1;
        }
    }
    let (overlap, first) = check_find_node(&mut sim, 40);
    eprintln!("after 20% left: {overlap:.2} of the true {K} closest, nearest exact in {:.0}%", first * 100.0);
    assert!(overlap >= 7.0, "{overlap}");
    assert!(first >= 0.9, "{first}");
    let found = peers_found(&mut sim, 999, info_hash);
    assert_eq!(found, expected, "the peers are still found");
    eprintln!("total wall time {:?}, {} datagrams", started.elapsed(), sim.datagrams);
}
