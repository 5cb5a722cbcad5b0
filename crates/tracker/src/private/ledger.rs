//! Accounting: what each user moved, from the difference between a peer's announces.
//!
//! A peer is (info-hash, peer id, user): the figures it last reported are its mark. An
//! announce with `started`, or from a peer without a mark (a client restarted with a new peer
//! id, a peer that announces again after it expired, a tracker restart), sets the mark and
//! counts nothing: the client's figures count from its session's start, and what they held
//! before was counted already (or is lost, never counted twice). Otherwise the delta from the
//! mark is counted, unless it is negative (the client restarted its counters without saying
//! `started`) or absurd (faster than `max_rate` since the mark, or a download of more than
//! twice the torrent): such an announce is logged and only moves the mark. `stopped` counts
//! and drops the mark; `completed` counts one completed download, once per mark.
//!
//! Counting only touches memory: the deltas pile up per user and [`Ledger::take`] hands them
//! to the writer thread, which adds them to the database in one transaction.

use std::collections::HashMap;
use std::sync::Mutex;

use bitswarm_tracker_proto::{Event, InfoHash, PeerId};

use super::db::Delta;

/// Locks of the marks table: announces of different swarms rarely meet.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    info_hash: InfoHash,
    peer_id: PeerId,
    user: i64,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    uploaded: u64,
    downloaded: u64,
    /// Seconds (the tracker's clock) of the announce that set it.
    at: u64,
    completed: bool,
}

/// One announce, as accounting sees it.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub user: i64,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub uploaded: u64,
    pub downloaded: u64,
    pub event: Event,
    /// The torrent's size in bytes (0: not known).
    pub size: u64,
    /// Seconds, the tracker's clock.
    pub now: u64,
}

/// What an announce did to the accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The figures are the peer's new baseline; nothing counted (except a `completed`).
    Baseline,
    /// This much was counted.
    Counted(Delta),
    /// Not counted: the figures went down.
    Negative,
    /// Not counted: the figures grew implausibly.
    Absurd,
}

pub struct Ledger {
    marks: Vec<Mutex<HashMap<Key, Mark>>>,
    pending: Mutex<HashMap<i64, Delta>>,
    max_rate: u64,
    /// The most marks a shard holds: past it a new peer gets none (its announces count
    /// nothing until marks expire), so made-up peer ids cannot grow memory without bound.
    shard_cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    pub fn new(max_rate: u64) -> Ledger {
        Ledger::with_cap(max_rate, usize::MAX)
    }

    /// A ledger of at most about `max_marks` peers.
    pub fn with_cap(max_rate: u64, max_marks: usize) -> Ledger {
        Ledger {
            marks: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pending: Mutex::default(),
            max_rate,
            shard_cap: (max_marks / SHARDS).max(1),
        }
    }

    fn shard(&self, k: &Key) -> &Mutex<HashMap<Key, Mark>> {
        let i = (k.info_hash.0[0] ^ k.peer_id.0[19]) as usize % SHARDS;
        &self.marks[i]
    }

    /// Accounts one announce (memory only).
    pub fn record(&self, r: &Report) -> Outcome {
        let key = Key { info_hash: r.info_hash, peer_id: r.peer_id, user: r.user };
        let fresh = Mark { uploaded: r.uploaded, downloaded: r.downloaded, at: r.now, completed: false };
        let mut completed = 0;
        let outcome = {
            let mut marks = lock(self.shard(&key));
            let old = if r.event == Event::Started { None } else { marks.get(&key).copied() };
            let outcome = match old {
                None => {
                    if marks.len() < self.shard_cap || marks.contains_key(&key) {
                        marks.insert(key, fresh);
                    }
                    Outcome::Baseline
                }
                Some(m) => {
                    let outcome = if r.uploaded < m.uploaded || r.downloaded < m.downloaded {
                        Outcome::Negative
                    } else {
                        let (up, down) = (r.uploaded - m.uploaded, r.downloaded - m.downloaded);
                        // A second of slack: two announces within one clock second.
                        let secs = r.now.saturating_sub(m.at).saturating_add(1);
                        let limit = self.max_rate.saturating_mul(secs);
                        let too_big = r.size > 0 && down > r.size.saturating_mul(2);
                        if up > limit || down > limit || too_big {
                            Outcome::Absurd
                        } else {
                            Outcome::Counted(Delta { uploaded: up, downloaded: down, completed: 0 })
                        }
                    };
                    let was_completed = m.completed;
                    marks.insert(key, Mark { completed: was_completed, ..fresh });
                    outcome
                }
            };
            if r.event == Event::Completed
                && let Some(m) = marks.get_mut(&key)
                && !m.completed
            {
                m.completed = true;
                completed = 1;
            }
            if r.event == Event::Stopped {
                marks.remove(&key);
            }
            outcome
        };
        let mut delta = match outcome {
            Outcome::Counted(d) => d,
            _ => Delta::default(),
        };
        delta.completed = completed;
        if delta != Delta::default() {
            lock(&self.pending).entry(r.user).or_default().add(delta);
        }
        match outcome {
            Outcome::Counted(_) => Outcome::Counted(delta),
            o => o,
        }
    }

    /// The deltas counted since the last call, per user id.
    pub fn take(&self) -> HashMap<i64, Delta> {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Puts back deltas that could not be written, to be written with the next ones.
    pub fn put_back(&self, deltas: HashMap<i64, Delta>) {
        let mut p = lock(&self.pending);
        for (user, d) in deltas {
            p.entry(user).or_default().add(d);
        }
    }

    /// Forgets the marks set before `cutoff` (seconds): peers that stopped announcing.
    /// Returns how many went.
    pub fn expire(&self, cutoff: u64) -> usize {
        let mut n = 0;
        for s in &self.marks {
            let mut m = lock(s);
            let before = m.len();
            m.retain(|_, v| v.at >= cutoff);
            n += before - m.len();
        }
        n
    }

    /// Forgets the marks of peers of users no longer known (removed, or with a new passkey:
    /// their next announce starts afresh).
    pub fn retain_users(&self, keep: impl Fn(i64) -> bool) {
        for s in &self.marks {
            lock(s).retain(|k, _| keep(k.user));
        }
    }

    /// Peers with a mark.
    pub fn len(&self) -> usize {
        self.marks.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn report(peer: u8, up: u64, down: u64, event: Event, now: u64) -> Report {
        Report {
            user: 1,
            info_hash: InfoHash([7; 20]),
            peer_id: PeerId([peer; 20]),
            uploaded: up,
            downloaded: down,
            event,
            size: 100 * MIB,
            now,
        }
    }

    fn counted(up: u64, down: u64) -> Outcome {
        Outcome::Counted(Delta { uploaded: up, downloaded: down, completed: 0 })
    }

    #[test]
    fn started_is_a_baseline_and_deltas_count_once() {
        let l = Ledger::new(1 << 30);
        // A client that had moved data before (another session) starts: nothing counted.
        assert_eq!(l.record(&report(1, 5 * MIB, 7 * MIB, Event::Started, 0)), Outcome::Baseline);
        assert_eq!(l.record(&report(1, 6 * MIB, 9 * MIB, Event::None, 10)), counted(MIB, 2 * MIB));
        // The same figures again: nothing more.
        assert_eq!(l.record(&report(1, 6 * MIB, 9 * MIB, Event::None, 20)), counted(0, 0));
        // `started` again with the same figures (a re-announce of a client): no double count.
        assert_eq!(l.record(&report(1, 6 * MIB, 9 * MIB, Event::Started, 30)), Outcome::Baseline);
        assert_eq!(l.record(&report(1, 6 * MIB, 10 * MIB, Event::None, 40)), counted(0, MIB));
        let d = l.take();
        assert_eq!(d[&1], Delta { uploaded: MIB, downloaded: 3 * MIB, completed: 0 });
        assert!(l.take().is_empty(), "taken once");
    }

    #[test]
    fn a_restarted_client_and_an_expired_peer_start_afresh() {
        let l = Ledger::new(1 << 30);
        l.record(&report(1, 0, 0, Event::Started, 0));
        l.record(&report(1, MIB, 0, Event::None, 10));
        // Restart with a new peer id, counters from zero, no `started` (some clients): a
        // baseline, then deltas.
        assert_eq!(l.record(&report(2, 0, 0, Event::None, 20)), Outcome::Baseline);
        assert_eq!(l.record(&report(2, MIB, 0, Event::None, 30)), counted(MIB, 0));
        // Peer 1 expires, then announces again with its old session's figures: a baseline.
        assert_eq!(l.expire(25), 1);
        assert_eq!(l.record(&report(1, 3 * MIB, 0, Event::None, 40)), Outcome::Baseline);
        assert_eq!(l.take()[&1].uploaded, 2 * MIB);
    }

    #[test]
    fn negative_and_absurd_deltas_are_refused_and_move_the_mark() {
        let l = Ledger::new(10 * MIB);
        l.record(&report(1, 50 * MIB, 50 * MIB, Event::Started, 0));
        // Counters went down without `started`.
        assert_eq!(l.record(&report(1, 10 * MIB, 60 * MIB, Event::None, 10)), Outcome::Negative);
        assert_eq!(l.record(&report(1, 11 * MIB, 61 * MIB, Event::None, 20)), counted(MIB, MIB));
        // 10 MiB/s at most: 200 MiB in 10 s is refused, 100 MiB is not.
        assert_eq!(l.record(&report(1, 211 * MIB, 61 * MIB, Event::None, 30)), Outcome::Absurd);
        assert_eq!(l.record(&report(1, 311 * MIB, 61 * MIB, Event::None, 40)), counted(100 * MIB, 0));
        // More than twice the torrent downloaded at once, however slowly.
        assert_eq!(l.record(&report(1, 311 * MIB, 300 * MIB, Event::None, 10_000)), Outcome::Absurd);
        // A figure that wrapped (u64::MAX) is absurd too.
        assert_eq!(l.record(&report(1, u64::MAX, 300 * MIB, Event::None, 10_010)), Outcome::Absurd);
        assert_eq!(l.take()[&1], Delta { uploaded: 101 * MIB, downloaded: MIB, completed: 0 });
    }

    #[test]
    fn completed_counts_once_and_stopped_ends_the_peer() {
        let l = Ledger::new(1 << 30);
        l.record(&report(1, 0, 0, Event::Started, 0));
        let o = l.record(&report(1, 0, 100 * MIB, Event::Completed, 10));
        assert_eq!(o, Outcome::Counted(Delta { uploaded: 0, downloaded: 100 * MIB, completed: 1 }));
        // A client that says `completed` twice.
        assert_eq!(l.record(&report(1, 0, 100 * MIB, Event::Completed, 11)), counted(0, 0));
        assert_eq!(l.record(&report(1, 7, 100 * MIB, Event::Stopped, 12)), counted(7, 0));
        assert!(l.is_empty());
        // Announcing again after `stopped` without `started`: a baseline.
        assert_eq!(l.record(&report(1, 9, 100 * MIB, Event::None, 13)), Outcome::Baseline);
        assert_eq!(l.take()[&1], Delta { uploaded: 7, downloaded: 100 * MIB, completed: 1 });
    }

    #[test]
    fn marks_are_capped() {
        let l = Ledger::with_cap(1 << 30, SHARDS);
        // One shard (the same info-hash and last peer id byte) holds one mark.
        let mut a = report(1, 0, 0, Event::Started, 0);
        let mut b = a;
        b.peer_id.0[0] = 2;
        l.record(&a);
        l.record(&b);
        assert_eq!(l.len(), 1);
        (a.uploaded, a.event, b.uploaded, b.event) = (10, Event::None, 10, Event::None);
        assert_eq!(l.record(&a), counted(10, 0));
        assert_eq!(l.record(&b), Outcome::Baseline, "no room: counts nothing");
        // `started` again for a peer with a mark keeps it.
        a.event = Event::Started;
        l.record(&a);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn users_are_apart_and_deltas_batch_per_user() {
        let l = Ledger::new(1 << 30);
        // Two users behind one peer id (two passkeys in one client): two marks.
        let mut a = report(1, 0, 0, Event::Started, 0);
        let mut b = a;
        b.user = 2;
        l.record(&a);
        l.record(&b);
        for i in 1..=100u64 {
            a.uploaded = i * 1000;
            a.event = Event::None;
            a.now = i;
            l.record(&a);
        }
        b.downloaded = 5;
        b.event = Event::None;
        l.record(&b);
        let d = l.take();
        assert_eq!((d[&1].uploaded, d[&2].downloaded), (100_000, 5));
        l.put_back(d);
        l.put_back(HashMap::from([(1, Delta { uploaded: 1, downloaded: 0, completed: 0 })]));
        assert_eq!(l.take()[&1].uploaded, 100_001);
        l.retain_users(|u| u == 2);
        assert_eq!(l.len(), 1);
    }
}
