//! The peers others announce to us: bounded in torrents and in peers per torrent, each entry
//! forgotten 30 minutes after its last announce (BEP 5 leaves the time to us; libtorrent uses
//! 30 minutes too).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::bloom::Bloom;
use crate::id::InfoHash;

#[derive(Debug, Clone)]
struct StoredPeer {
    addr: SocketAddr,
    seed: bool,
    at: Instant,
}

/// Announced peers by info-hash. A `BTreeMap` keeps sampling and eviction deterministic.
#[derive(Debug)]
pub(crate) struct PeerStore {
    torrents: BTreeMap<InfoHash, Vec<StoredPeer>>,
    max_torrents: usize,
    max_peers: usize,
    ttl: Duration,
}

impl PeerStore {
    pub(crate) fn new(max_torrents: usize, max_peers: usize, ttl: Duration) -> Self {
        PeerStore { torrents: BTreeMap::new(), max_torrents, max_peers, ttl }
    }

    /// Info-hashes stored.
    pub(crate) fn len(&self) -> usize {
        self.torrents.len()
    }

    /// Records an announce. A full store drops the torrent with the fewest peers for a new one
    /// (libtorrent does the same); a full torrent drops its stalest peer.
    pub(crate) fn announce(&mut self, info_hash: InfoHash, addr: SocketAddr, seed: bool, now: Instant) {
        if self.max_torrents == 0 || self.max_peers == 0 {
            return;
        }
        if !self.torrents.contains_key(&info_hash) && self.torrents.len() >= self.max_torrents {
            let smallest = self.torrents.iter().min_by_key(|(_, p)| p.len()).map(|(h, _)| *h);
            if let Some(h) = smallest {
                self.torrents.remove(&h);
            }
        }
        let peers = self.torrents.entry(info_hash).or_default();
        if let Some(p) = peers.iter_mut().find(|p| p.addr == addr) {
            p.seed = seed;
            p.at = now;
            return;
        }
        if peers.len() >= self.max_peers
            && let Some(i) = peers.iter().enumerate().min_by_key(|(_, p)| p.at).map(|(i, _)| i)
        {
            peers.swap_remove(i);
        }
        peers.push(StoredPeer { addr, seed, at: now });
    }

    /// Up to `max` peers of `info_hash` of the given family (IPv6 or not), starting at
    /// `start` (a random number, so that large swarms are handed out in turns).
    pub(crate) fn get(
        &self,
        info_hash: &InfoHash,
        v6: bool,
        noseed: bool,
        max: usize,
        start: usize,
    ) -> Vec<SocketAddr> {
        let Some(peers) = self.torrents.get(info_hash) else { return Vec::new() };
        let n = peers.len();
        if n == 0 {
            return Vec::new();
        }
        (0..n)
            .map(|i| &peers[(start + i) % n])
            .filter(|p| p.addr.is_ipv6() == v6 && !(noseed && p.seed))
            .take(max)
            .map(|p| p.addr)
            .collect()
    }

    /// BEP 33's filters of the torrent's seeds and of its other peers.
    pub(crate) fn scrape(&self, info_hash: &InfoHash) -> (Bloom, Bloom) {
        let (mut seeds, mut peers) = (Bloom::default(), Bloom::default());
        for p in self.torrents.get(info_hash).into_iter().flatten() {
            if p.seed { &mut seeds } else { &mut peers }.insert(p.addr.ip());
        }
        (seeds, peers)
    }

    /// Up to `n` stored info-hashes from a random point on (BEP 51).
    pub(crate) fn sample(&self, n: usize, random: [u8; 20]) -> Vec<InfoHash> {
        let from = InfoHash(random);
        self.torrents.range(from..).chain(self.torrents.range(..from)).take(n).map(|(h, _)| *h).collect()
    }

    /// Forgets peers that have not announced for the time to live.
    pub(crate) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.torrents.retain(|_, peers| {
            peers.retain(|p| now.saturating_duration_since(p.at) < ttl);
            !peers.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u32, port: u16) -> SocketAddr {
        SocketAddr::new(std::net::Ipv4Addr::from(0x0A00_0000 + i).into(), port)
    }

    #[test]
    fn bounded_in_torrents_and_peers_and_entries_expire() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(3, 4, Duration::from_secs(1800));
        for t in 0..3u8 {
            for i in 0..(t as u32 + 1) {
                s.announce(InfoHash([t; 20]), peer(i, 1), false, t0);
            }
        }
        s.announce(InfoHash([9; 20]), peer(1, 1), false, t0);
        assert_eq!(s.len(), 3);
        assert!(s.get(&InfoHash([0; 20]), false, false, 50, 0).is_empty(), "the smallest torrent made room");
        for i in 0..10 {
            s.announce(InfoHash([2; 20]), peer(100 + i, 1), true, t0 + Duration::from_secs(i as u64));
        }
        let got = s.get(&InfoHash([2; 20]), false, false, 50, 0);
        assert_eq!(got.len(), 4);
        assert!(got.contains(&peer(109, 1)));
        assert!(s.get(&InfoHash([2; 20]), false, true, 50, 0).is_empty(), "noseed leaves out seeds");
        assert!(s.get(&InfoHash([2; 20]), true, false, 50, 0).is_empty(), "no IPv6 peers");
        assert_eq!(s.get(&InfoHash([2; 20]), false, false, 2, 3).len(), 2);
        // A re-announce refreshes instead of duplicating.
        s.announce(InfoHash([1; 20]), peer(0, 1), false, t0 + Duration::from_secs(1700));
        s.expire(t0 + Duration::from_secs(1801));
        assert_eq!(s.get(&InfoHash([1; 20]), false, false, 50, 0), vec![peer(0, 1)]);
        assert!(s.get(&InfoHash([9; 20]), false, false, 50, 0).is_empty());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn scrape_and_sample() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(100, 100, Duration::from_secs(1800));
        for i in 0..20 {
            s.announce(InfoHash([1; 20]), peer(i, 1), i < 5, t0);
        }
        let (seeds, peers) = s.scrape(&InfoHash([1; 20]));
        assert!((seeds.estimate() - 5.0).abs() < 1.0 && (peers.estimate() - 15.0).abs() < 1.5);
        for b in 0..30u8 {
            s.announce(InfoHash([b; 20]), peer(1, 1), false, t0);
        }
        let sample = s.sample(20, [7; 20]);
        assert_eq!(sample.len(), 20);
        assert_eq!(sample[0], InfoHash([7; 20]));
        assert_eq!(s.sample(100, [0; 20]).len(), 30);
    }
}
