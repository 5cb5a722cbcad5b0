//! The announce service: the one path every front end takes.
//!
//! HTTP (`http.rs`) and UDP (`udp.rs`) only read their wire format and decide the client's
//! address (the connection's, or what a trusted proxy or an allowed `ip` field says). The rest
//! happens here, once: who may announce ([`Shared::admit`]: the access list, and the place for
//! private mode's passkeys), how many peers a reply gets (numwant, clamped to the configuration
//! and to what the reply format carries), the counters, and the call to the store
//! ([`crate::backend::Backend`]).
//!
//! A request that the store cannot answer (Redis unreachable) is refused with
//! [`STORE_UNAVAILABLE`], which the front ends send as a failure reason (HTTP) or an error
//! packet (UDP).

use std::net::SocketAddr;

use bitswarm_tracker_proto::{Event, InfoHash, PeerId};

use crate::Shared;
use crate::backend::{Job, Op, Snapshot, StoreError};
use crate::stats::{Metrics, Proto};
use crate::store::{Announce, Families, Outcome, PeerSink, SwarmCounts};

/// What a client is told when the store cannot answer.
pub const STORE_UNAVAILABLE: &str = "tracker storage is unavailable; try again later";

/// An announce as the front ends hand it over.
#[derive(Clone, Copy, Debug)]
pub struct AnnounceRequest<'a> {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The peer's address: the IP the front end decided on (never one a client claims unless
    /// the configuration allows it), the port announced.
    pub addr: SocketAddr,
    pub left: u64,
    /// The client's totals (private mode accounts them).
    pub uploaded: u64,
    pub downloaded: u64,
    pub event: Event,
    /// What the client asked for (`None`: the configured default).
    pub numwant: Option<u32>,
    /// The most peers the reply format carries (a UDP reply must fit a datagram).
    pub max_peers: usize,
    pub families: Families,
    /// The passkey of the announce URL's path (`/announce/PASSKEY`), for private mode; a
    /// public tracker refuses one.
    pub passkey: Option<&'a str>,
}

/// Why a request was refused: the text for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl From<StoreError> for Refusal {
    /// Logs the store's error (once every 10 s at most: an unreachable store fails every
    /// request) and refuses with [`STORE_UNAVAILABLE`].
    fn from(e: StoreError) -> Refusal {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CLOCK: std::sync::OnceLock<crate::clock::Clock> = std::sync::OnceLock::new();
        static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
        let now = CLOCK.get_or_init(crate::clock::Clock::start).secs();
        let last = LAST.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last + 10)
            && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!("tracker store: {e}; requests are refused until it answers");
        }
        Refusal(STORE_UNAVAILABLE.to_owned())
    }
}

impl Shared {
    /// Decides whether an announce is served, and shapes it for the store; counts it.
    pub fn admit(&self, proto: Proto, r: &AnnounceRequest<'_>) -> Result<Announce, Refusal> {
        let m = self.metrics.of(proto);
        match &self.private {
            None => {
                if r.passkey.is_some() {
                    Metrics::inc(&m.errors);
                    return Err(Refusal("this tracker is public: announce at /announce".into()));
                }
                if !self.access.allows(&r.info_hash) {
                    Metrics::inc(&m.errors);
                    return Err(Refusal(crate::access::NOT_ALLOWED.into()));
                }
            }
            // The passkey, the torrent's registration, then the accounting.
            Some(p) => {
                if let Err(msg) = p.admit(r) {
                    tracing::debug!("private: refused an announce of {} from {}: {msg}", r.info_hash.to_hex(), r.addr);
                    Metrics::inc(&m.errors);
                    return Err(Refusal(msg.into()));
                }
            }
        }
        Metrics::inc(&m.announces);
        let cfg = &self.config.announce;
        let numwant = match r.event {
            Event::Stopped => 0,
            _ => (r.numwant.unwrap_or(cfg.numwant_default).min(cfg.numwant_max) as usize).min(r.max_peers),
        };
        Ok(Announce {
            info_hash: r.info_hash,
            peer_id: r.peer_id,
            addr: r.addr,
            left: r.left,
            event: r.event,
            numwant,
            families: r.families,
        })
    }

    /// One announce, admitted and stored: the swarm's counts after it, its peers in `out`.
    pub async fn announce(
        &self,
        proto: Proto,
        r: &AnnounceRequest<'_>,
        out: &mut impl PeerSink,
    ) -> Result<SwarmCounts, Refusal> {
        let a = self.admit(proto, r)?;
        let result = self.backend.announce(&a, out).await;
        self.announced(proto, result)
    }

    /// Counts what the store did with an announce.
    fn announced(
        &self,
        proto: Proto,
        result: Result<(SwarmCounts, Outcome), StoreError>,
    ) -> Result<SwarmCounts, Refusal> {
        let m = self.metrics.of(proto);
        match result {
            Ok((counts, outcome)) => {
                if outcome == Outcome::Full {
                    Metrics::inc(&m.peers_refused);
                }
                Ok(counts)
            }
            Err(e) => {
                Metrics::inc(&m.errors);
                Err(e.into())
            }
        }
    }

    /// A scrape of `hashes` (empty: every swarm, if the configuration allows a full scrape).
    /// Swarms the access list shuts out are reported empty (or left out of a full scrape). A
    /// private tracker answers only a known, enabled `passkey`, and a public one none.
    pub async fn scrape(
        &self,
        proto: Proto,
        hashes: &[InfoHash],
        passkey: Option<&str>,
    ) -> Result<Vec<(InfoHash, SwarmCounts)>, Refusal> {
        let m = self.metrics.of(proto);
        let checked = match &self.private {
            None if passkey.is_some() => Err("this tracker is public: scrape at /scrape"),
            None => Ok(()),
            Some(p) => p.member(passkey).map(drop),
        };
        if let Err(msg) = checked {
            Metrics::inc(&m.errors);
            return Err(Refusal(msg.into()));
        }
        let result = if hashes.is_empty() {
            if !self.config.scrape.full_scrape {
                Metrics::inc(&m.errors);
                return Err(Refusal("full scrape is disabled: name the info_hash values to scrape".into()));
            }
            self.backend.all_counts().await.map(|all| all.into_iter().filter(|(h, _)| self.access.allows(h)).collect())
        } else {
            self.backend.scrape(hashes).await.map(|counts| self.scraped(hashes, counts))
        };
        match result {
            Ok(v) => {
                Metrics::inc(&m.scrapes);
                Ok(v)
            }
            Err(e) => {
                Metrics::inc(&m.errors);
                Err(e.into())
            }
        }
    }

    /// Pairs scrape counts with their hashes, emptying those the access list shuts out (after
    /// a reload).
    fn scraped(&self, hashes: &[InfoHash], counts: Vec<SwarmCounts>) -> Vec<(InfoHash, SwarmCounts)> {
        hashes
            .iter()
            .zip(counts)
            .map(|(h, c)| (*h, if self.access.allows(h) { c } else { SwarmCounts::default() }))
            .collect()
    }

    /// Runs a batch of admitted jobs (see [`Shared::admit`]; scrapes need no admission) from a
    /// thread outside any async runtime, then counts them and empties the scrape counts of
    /// swarms the access list shuts out. A job's result says what to answer.
    pub fn run_batch<S: PeerSink>(&self, proto: Proto, jobs: &mut [Job], sinks: &mut [S]) {
        if jobs.is_empty() {
            return;
        }
        self.backend.run_blocking(jobs, sinks);
        let m = self.metrics.of(proto);
        for j in jobs.iter_mut() {
            match &mut j.op {
                Op::Announce { result, .. } => {
                    if let Err(e) = self.announced(proto, result.clone()) {
                        *result = Err(StoreError::new(e.0));
                    }
                }
                Op::Scrape { hashes, result } => match result {
                    Ok(counts) => {
                        Metrics::inc(&m.scrapes);
                        for (h, c) in hashes.iter().zip(counts.iter_mut()) {
                            if !self.access.allows(h) {
                                *c = SwarmCounts::default();
                            }
                        }
                    }
                    Err(e) => {
                        Metrics::inc(&m.errors);
                        *result = Err(StoreError::new(Refusal::from(e.clone()).0));
                    }
                },
            }
        }
    }

    /// Expires peers and swarms (the background cleaner's tick), counting what went.
    pub async fn clean(&self) {
        match self.backend.clean(self.config.peer_timeout()).await {
            Ok((peers, swarms)) => {
                use std::sync::atomic::Ordering::Relaxed;
                self.metrics.peers_expired.fetch_add(peers, Relaxed);
                self.metrics.swarms_expired.fetch_add(swarms, Relaxed);
                if peers + swarms > 0 {
                    tracing::debug!("cleaner: dropped {peers} peers and {swarms} swarms");
                }
            }
            Err(e) => tracing::warn!("cleaner: {e}"),
        }
    }

    /// Drops the swarms the access list no longer allows, with their peers.
    pub async fn drop_disallowed(&self) -> Result<(u64, u64), StoreError> {
        self.backend.retain_swarms(|h| self.access.allows(h)).await
    }

    /// What the stats page shows.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.backend.snapshot(self.config.stats.max_swarms_listed).await
    }
}
