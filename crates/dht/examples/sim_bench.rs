//! How many messages and round trips a `get_peers` lookup costs in a simulated network.
//!
//!     cargo run --release -p bitswarm-dht --example sim_bench [-- NODES [LOOKUPS [SEED]]]
//!
//! Builds NODES nodes (default 10,000) on virtual time, bootstraps them from three, lets the
//! network settle for a minute of virtual time, announces a few torrents, then runs LOOKUPS
//! `get_peers` lookups (default 500) from random nodes for random and announced info-hashes,
//! one at a time, and prints median and p99 of queries, responses and rounds beside log2(N).

#[path = "../tests/support/sim.rs"]
mod sim;

use std::time::{Duration, Instant};

use bitswarm_dht::{Event, InfoHash, LookupStats};

fn percentile(v: &mut [u32], p: f64) -> u32 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let lookups: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500);
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);

    let wall = Instant::now();
    let mut sim = sim::Sim::new(n, seed, |_, _| {});
    sim.bootstrap_all(3, Duration::from_millis(2));
    sim.run_for(Duration::from_secs(60));
    let sizes: Vec<usize> = sim.nodes.iter().map(|x| x.dht.routing_table(false).len()).collect();
    println!(
        "{n} nodes bootstrapped in {:.1} s wall ({} datagrams, {:.0} per node); routing tables: mean {:.1}, min {}",
        wall.elapsed().as_secs_f64(),
        sim.datagrams,
        sim.datagrams as f64 / n as f64,
        sizes.iter().sum::<usize>() as f64 / n as f64,
        sizes.iter().min().unwrap_or(&0)
    );

    // A few torrents with peers, so that some lookups find values.
    let torrents: Vec<InfoHash> = (0..5).map(|_| InfoHash(sim.rand_id().0)).collect();
    for (j, h) in torrents.iter().enumerate() {
        for p in 0..5 {
            let node = sim.rand_below(n);
            sim.with(node, |d, now| d.announce(now, *h, 6000 + (j * 10 + p) as u16, false));
        }
    }
    sim.run_for(Duration::from_secs(30));

    let mut stats: Vec<LookupStats> = Vec::new();
    let mut found_peers = 0usize;
    let mut with_values = 0usize;
    let t = Instant::now();
    for l in 0..lookups {
        let node = sim.rand_below(n);
        let h = if l % 5 == 0 { torrents[l / 5 % torrents.len()] } else { InfoHash(sim.rand_id().0) };
        let id = sim.with(node, |d, now| d.get_peers(now, h));
        let mut peers = 0;
        let mut done = None;
        sim.run_until_event(Duration::from_secs(120), |evs| {
            peers = 0;
            for (i, e) in evs {
                match e {
                    Event::Peers { lookup, peers: p, .. } if *i == node && *lookup == id => peers += p.len(),
                    Event::LookupDone { lookup, stats, .. } if *i == node && *lookup == id => {
                        done = Some(*stats);
                        return true;
                    }
                    _ => {}
                }
            }
            false
        });
        let s = done.expect("every lookup ends");
        if l % 5 == 0 {
            with_values += 1;
            found_peers += peers;
        }
        stats.push(s);
    }
    let mut q: Vec<u32> = stats.iter().map(|s| s.queries).collect();
    let mut m: Vec<u32> = stats.iter().map(|s| s.queries + s.responses).collect();
    let mut r: Vec<u32> = stats.iter().map(|s| s.rounds).collect();
    let mut ms: Vec<u32> = stats.iter().map(|s| s.elapsed.as_millis() as u32).collect();
    let timeouts: u32 = stats.iter().map(|s| s.timeouts).sum();
    println!(
        "{lookups} get_peers lookups in {:.1} s wall; log2(N) = {:.1}",
        t.elapsed().as_secs_f64(),
        (n as f64).log2()
    );
    println!("  queries sent        median {:>4}  p99 {:>4}", percentile(&mut q, 0.5), percentile(&mut q, 0.99));
    println!("  queries + responses median {:>4}  p99 {:>4}", percentile(&mut m, 0.5), percentile(&mut m, 0.99));
    println!("  rounds              median {:>4}  p99 {:>4}", percentile(&mut r, 0.5), percentile(&mut r, 0.99));
    println!(
        "  virtual time (ms)   median {:>4}  p99 {:>4}  (one-way latency {}-{} ms)",
        percentile(&mut ms, 0.5),
        percentile(&mut ms, 0.99),
        sim.latency_ms.0,
        sim.latency_ms.1
    );
    println!(
        "  timeouts {timeouts}; lookups for announced torrents: {with_values}, {:.1} peers each (5 announced)",
        found_peers as f64 / with_values.max(1) as f64
    );
}
