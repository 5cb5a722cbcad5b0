//! The store interface: where swarms live, behind the announce service ([`crate::service`]).
//!
//! [`Backend`] is an enum over the backends, not a trait object or a type parameter:
//!
//! * The in-memory store ([`crate::store::Store`]) hands the peers it picks straight to the
//!   reply being written through a generic [`PeerSink`] (a UDP reply's bytes, an HTTP reply's
//!   list), monomorphised per sink. A `dyn` trait cannot take a generic sink; a `&mut dyn
//!   PeerSink` would cost an indirect call per peer handed out.
//! * The in-memory store answers at once and Redis answers after a round trip. The enum's
//!   methods are `async`: on the memory arm the future is ready at its first poll (the UDP
//!   workers poll it once, with no runtime, see [`Backend::run_blocking`]); on the Redis arm it
//!   waits for Redis. A generic `Shared<S: Store>` would carry a type parameter through every
//!   front end for two backends.
//!
//! The cost of the enum on the memory path is one predictable branch per call. Measured with
//! `bench/tracker.sh` (medians of 3 runs, each tracker on one core, ratio to opentracker in the
//! same run) before and after the front ends went through this interface: see the README's
//! tracker section and the commit that made it.
//!
//! Every backend keeps the same behaviour: the conformance suite (`conformance.rs`) runs the
//! same tests against each.

use std::sync::Arc;

use bitswarm_tracker_proto::InfoHash;

use crate::redis_store::RedisStore;
use crate::store::{Announce, Outcome, PeerSink, Store, SwarmCounts, SwarmInfo, Totals};

/// Where swarms live.
pub enum Backend {
    /// This process's sharded tables: the fastest, and the only state of one instance.
    Memory(Store),
    /// A Redis server that several instances share (see [`crate::redis_store`]); boxed, so
    /// that the memory arm stays small.
    Redis(Box<RedisStore>),
}

/// The store could not answer (Redis unreachable, say); the request gets a failure reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub Arc<str>);

impl StoreError {
    pub fn new(msg: impl Into<String>) -> StoreError {
        StoreError(msg.into().into())
    }
}

/// One request of a batch ([`Backend::run`]): the UDP workers turn the packets of one receive
/// into a batch, which a remote backend sends in one round trip.
#[derive(Debug)]
pub struct Job {
    /// The sink (reply) the job's peers go to: an index into the sinks given to [`Backend::run`].
    pub slot: usize,
    /// The caller's own data (the UDP transaction id).
    pub tag: u32,
    pub op: Op,
}

#[derive(Debug)]
pub enum Op {
    Announce { announce: Announce, result: Result<(SwarmCounts, Outcome), StoreError> },
    Scrape { hashes: Vec<InfoHash>, result: Result<Vec<SwarmCounts>, StoreError> },
}

impl Op {
    pub fn announce(announce: Announce) -> Op {
        Op::Announce { announce, result: Err(StoreError::new("not run")) }
    }
    pub fn scrape(hashes: Vec<InfoHash>) -> Op {
        Op::Scrape { hashes, result: Err(StoreError::new("not run")) }
    }
}

/// What the stats page shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub totals: Totals,
    /// The busiest swarms, most peers first.
    pub swarms: Vec<SwarmInfo>,
}

impl Backend {
    /// Records an announce and hands the peers for its reply to `out`; returns the swarm's
    /// counts after it.
    pub async fn announce(&self, a: &Announce, out: &mut impl PeerSink) -> Result<(SwarmCounts, Outcome), StoreError> {
        match self {
            Backend::Memory(s) => Ok(s.announce(a, out)),
            Backend::Redis(r) => r.announce(a, out).await,
        }
    }

    /// The counts of each swarm (zeros for unknown ones), in order.
    pub async fn scrape(&self, hashes: &[InfoHash]) -> Result<Vec<SwarmCounts>, StoreError> {
        match self {
            Backend::Memory(s) => Ok(hashes.iter().map(|h| s.counts(h)).collect()),
            Backend::Redis(r) => r.scrape(hashes).await,
        }
    }

    /// Runs a batch of jobs, each writing its peers to `sinks[job.slot]` and its result into
    /// the job.
    pub async fn run<S: PeerSink>(&self, jobs: &mut [Job], sinks: &mut [S]) {
        match self {
            Backend::Memory(s) => {
                for j in jobs.iter_mut() {
                    match &mut j.op {
                        Op::Announce { announce, result } => *result = Ok(s.announce(announce, &mut sinks[j.slot])),
                        Op::Scrape { hashes, result } => *result = Ok(hashes.iter().map(|h| s.counts(h)).collect()),
                    }
                }
            }
            Backend::Redis(r) => r.run(jobs, sinks).await,
        }
    }

    /// [`Backend::run`] for a caller outside any async runtime (the UDP workers): the memory
    /// store answers without waiting.
    pub fn run_blocking<S: PeerSink>(&self, jobs: &mut [Job], sinks: &mut [S]) {
        match self {
            Backend::Memory(_) => self.blocking(self.run(jobs, sinks)),
            // Over a blocking connection: the round trip is made by this thread itself.
            Backend::Redis(r) => r.run_blocking(jobs, sinks),
        }
    }

    /// Runs one of this backend's futures to its end from a thread outside any async runtime.
    pub fn blocking<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Backend::Memory(_) => block_on_ready(f),
            Backend::Redis(r) => r.block_on(f),
        }
    }

    /// Every swarm's counts (a full scrape).
    pub async fn all_counts(&self) -> Result<Vec<(InfoHash, SwarmCounts)>, StoreError> {
        match self {
            Backend::Memory(s) => Ok(s.all_counts()),
            Backend::Redis(r) => r.all_counts().await,
        }
    }

    /// Drops peers not seen for `timeout` seconds and swarms left empty and idle as long;
    /// returns the peers and swarms dropped.
    pub async fn clean(&self, timeout: u32) -> Result<(u64, u64), StoreError> {
        match self {
            Backend::Memory(s) => Ok(s.clean(timeout)),
            // Redis was given the timeout when it was made.
            Backend::Redis(r) => r.clean().await,
        }
    }

    /// Drops the swarms `keep` says no to, with their peers; returns (peers, swarms) dropped.
    pub async fn retain_swarms(&self, keep: impl Fn(&InfoHash) -> bool) -> Result<(u64, u64), StoreError> {
        match self {
            Backend::Memory(s) => Ok(s.retain_swarms(keep)),
            Backend::Redis(r) => r.retain_swarms(keep).await,
        }
    }

    pub async fn totals(&self) -> Result<Totals, StoreError> {
        match self {
            Backend::Memory(s) => Ok(s.totals()),
            Backend::Redis(r) => r.totals().await,
        }
    }

    /// Totals and the `limit` busiest swarms.
    pub async fn snapshot(&self, limit: usize) -> Result<Snapshot, StoreError> {
        match self {
            Backend::Memory(s) => Ok(Snapshot { totals: s.totals(), swarms: s.top_swarms(limit) }),
            Backend::Redis(r) => r.snapshot(limit).await,
        }
    }

    /// The in-memory store, when that is the backend.
    pub fn memory(&self) -> Option<&Store> {
        match self {
            Backend::Memory(s) => Some(s),
            Backend::Redis(_) => None,
        }
    }

    /// What the backend is, for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Backend::Memory(_) => "in memory".into(),
            Backend::Redis(r) => format!("Redis at {}", r.url()),
        }
    }
}

/// Polls a future that is ready at once (the memory store's) to its end, without a runtime;
/// one that is not ready is polled again after yielding the thread.
fn block_on_ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
