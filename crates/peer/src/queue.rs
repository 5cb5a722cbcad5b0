//! The session's queue: at most so many torrents downloading and so many seeding at once (the
//! settings say how many; none means no limit), the others waiting their turn in queue order,
//! and at most so many checking their data at once.
//!
//! A running torrent through which no data has moved for [`Settings::queue_stalled`] is
//! stalled (Transmission's `queue-stalled-minutes`, 30 by default there): it runs on, but its
//! slot no longer counts against the limit, so that the next in line starts. Without this a
//! download that no peer serves held its slot for good, and every torrent queued behind it
//! waited. Data moving again makes it count again (the limit may then be exceeded until one
//! ends, as in Transmission).
//!
//! [`Settings::queue_stalled`]: crate::Settings::queue_stalled

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::Stamp;
use crate::core::Core;

/// What a torrent holds a slot for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Download,
    Seed,
}

pub(crate) struct Queue {
    core: Arc<Core>,
    inner: Mutex<Inner>,
    changed: Notify,
    checks: Arc<Semaphore>,
}

/// Every operation is O(log n) in the torrents: a session of 10,000 seeding torrents starts
/// them without looking at all the others for each.
#[derive(Default)]
struct Inner {
    /// Torrents holding a slot, by kind, then id (a waiter looks only at its kind's: the
    /// downloads of a session of 10,000 seeds).
    active: [HashMap<u32, Active>; 2],
    /// Which kind of slot each holds.
    kind_of: HashMap<u32, Kind>,
    /// How many slots of each kind count against the limits (those not taken out of turn).
    held: [usize; 2],
    /// Torrents waiting, by (queue position, id).
    waiting: BTreeSet<(u64, u32, Kind)>,
    /// Where each waiting torrent is in `waiting`.
    waiting_at: HashMap<u32, (u64, Kind)>,
    /// How many of each kind wait.
    waiting_count: [usize; 2],
}

/// A slot held (its kind: [`Inner::kind_of`]).
struct Active {
    /// Taken out of turn: it does not count against the limits.
    forced: bool,
    /// When it was taken.
    since: Instant,
    /// When data last moved through the torrent's run (see [`Slot::watch`]).
    activity: Option<Arc<Stamp>>,
}

impl Active {
    /// When it is (or was) stalled after `stall` without data moving.
    fn stalls_at(&self, stall: Duration) -> Instant {
        let last = self.activity.as_ref().and_then(|a| a.get()).map_or(self.since, |a| a.max(self.since));
        last + stall
    }

    /// Whether it counts against its kind's limit at `now`.
    fn counts(&self, now: Instant, stall: Option<Duration>) -> bool {
        !self.forced && stall.is_none_or(|d| self.stalls_at(d) > now)
    }
}

impl Inner {
    fn slot(&self, id: u32) -> Option<&Active> {
        self.active[*self.kind_of.get(&id)? as usize].get(&id)
    }

    /// Slots of `kind` that count against its limit at `now`.
    fn holding(&self, kind: Kind, now: Instant, stall: Option<Duration>) -> usize {
        match stall {
            None => self.held[kind as usize],
            Some(_) => self.active[kind as usize].values().filter(|a| a.counts(now, stall)).count(),
        }
    }

    /// The next moment a slot of `kind` that counts now stops counting (its torrent stalls).
    fn next_stall(&self, kind: Kind, now: Instant, stall: Duration) -> Option<Instant> {
        self.active[kind as usize].values().filter(|a| a.counts(now, Some(stall))).map(|a| a.stalls_at(stall)).min()
    }

    fn leave_line(&mut self, id: u32) -> bool {
        let Some((pos, kind)) = self.waiting_at.remove(&id) else { return false };
        self.waiting.remove(&(pos, id, kind));
        self.waiting_count[kind as usize] -= 1;
        true
    }

    fn join_line(&mut self, pos: u64, id: u32, kind: Kind) {
        self.leave_line(id);
        self.waiting.insert((pos, id, kind));
        self.waiting_at.insert(id, (pos, kind));
        self.waiting_count[kind as usize] += 1;
    }

    /// Whether a torrent of `kind` waits ahead of (pos, id).
    fn ahead(&self, pos: u64, id: u32, kind: Kind) -> bool {
        self.waiting_count[kind as usize] > 0
            && self.waiting.range(..(pos, id, Kind::Download)).any(|(_, _, k)| *k == kind)
    }

    fn take(&mut self, id: u32, kind: Kind, forced: bool) {
        let activity = self.give_back(id);
        self.active[kind as usize].insert(id, Active { forced, since: Instant::now(), activity });
        self.kind_of.insert(id, kind);
        if !forced {
            self.held[kind as usize] += 1;
        }
    }

    /// Gives the slot back; returns the activity it watched.
    fn give_back(&mut self, id: u32) -> Option<Arc<Stamp>> {
        let kind = self.kind_of.remove(&id)?;
        let a = self.active[kind as usize].remove(&id)?;
        if !a.forced {
            self.held[kind as usize] -= 1;
        }
        a.activity
    }
}

/// A torrent's slot; given back when dropped.
pub(crate) struct Slot {
    queue: Arc<Queue>,
    id: u32,
}

impl Queue {
    pub fn new(core: Arc<Core>) -> Arc<Queue> {
        let checks = Arc::new(Semaphore::new(core.settings().max_checking.max(1)));
        Arc::new(Queue { core, inner: Mutex::new(Inner::default()), changed: Notify::new(), checks })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long without data moving makes a running torrent stalled; None: never.
    fn stall(&self) -> Option<Duration> {
        self.core.settings().queue_stalled
    }

    fn limit(&self, kind: Kind) -> usize {
        let s = self.core.settings();
        match kind {
            Kind::Download => s.max_downloading,
            Kind::Seed => s.max_seeding,
        }
        .unwrap_or(usize::MAX)
    }

    /// Waits for a slot of `kind` for torrent `id`: when fewer than the limit hold one (a
    /// stalled torrent's does not count) and no torrent ahead in the queue waits for the same
    /// kind; at once when `force`.
    pub async fn acquire(self: &Arc<Self>, id: u32, position: &AtomicU64, kind: Kind, force: bool) -> Slot {
        // Out of the line however this ends (a stop drops the wait).
        let _in_line = InLine { queue: self, id };
        loop {
            let wake = self.changed.notified();
            let look_again = {
                let (limit, stall) = (self.limit(kind), self.stall());
                let pos = position.load(Ordering::Relaxed);
                let now = Instant::now();
                let mut q = self.inner();
                q.leave_line(id);
                let holding = if limit == usize::MAX { 0 } else { q.holding(kind, now, stall) };
                if force || (holding < limit && !q.ahead(pos, id, kind)) {
                    q.take(id, kind, force);
                    // Slots freed by stalls have no drop to tell the others: the next in line
                    // is told when there is room left after this one.
                    let room =
                        stall.is_some() && q.waiting_count[kind as usize] > 0 && q.holding(kind, now, stall) < limit;
                    drop(q);
                    if room {
                        self.poke();
                    }
                    return Slot { queue: self.clone(), id };
                }
                q.join_line(pos, id, kind);
                stall.and_then(|d| q.next_stall(kind, now, d))
            };
            match look_again {
                // The moment a torrent holding a slot stalls, unless data moves through it by then.
                Some(at) => {
                    tokio::select! {
                        () = wake => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => wake.await,
            }
        }
    }

    /// Lets waiting torrents look again (a limit or a position changed).
    pub fn poke(&self) {
        self.changed.notify_waiters();
    }

    /// A permit to check a torrent's data.
    pub async fn checking(&self) -> OwnedSemaphorePermit {
        self.checks.clone().acquire_owned().await.expect("the semaphore is never closed")
    }
}

impl Slot {
    /// Turns the slot into one of `kind` (a download that completed becomes a seed) if that
    /// kind has room; false (and the slot unchanged) if not.
    pub fn switch(&self, kind: Kind) -> bool {
        let (limit, stall) = (self.queue.limit(kind), self.queue.stall());
        let mut q = self.queue.inner();
        let Some(&mine) = q.kind_of.get(&self.id) else { return false };
        let forced = q.slot(self.id).is_some_and(|a| a.forced);
        if mine == kind {
            return true;
        }
        if !forced && limit != usize::MAX && q.holding(kind, Instant::now(), stall) >= limit {
            return false;
        }
        q.take(self.id, kind, forced);
        drop(q);
        self.queue.poke();
        true
    }

    /// Watches when data moves through the torrent's run, which tells when it is stalled.
    pub fn watch(&self, activity: Arc<Stamp>) {
        let mut q = self.queue.inner();
        if let Some(&kind) = q.kind_of.get(&self.id)
            && let Some(a) = q.active[kind as usize].get_mut(&self.id)
        {
            a.activity = Some(activity);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.inner().give_back(self.id);
        self.queue.poke();
    }
}

/// A torrent's place among those waiting; left when dropped.
struct InLine<'a> {
    queue: &'a Queue,
    id: u32,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let removed = self.queue.inner().leave_line(self.id);
        if removed {
            self.queue.poke();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot counts until its torrent has been idle for the stalled time, since the slot was
    /// taken or data last moved, whichever is later; a forced one never counts.
    #[test]
    fn a_slot_stops_counting_once_its_torrent_is_stalled() {
        let mut q = Inner::default();
        let stall = Some(Duration::from_secs(60));
        q.take(1, Kind::Download, false);
        q.take(2, Kind::Download, true);
        let since = q.slot(1).unwrap().since;
        let activity = Arc::new(Stamp::default());
        q.active[0].get_mut(&1).unwrap().activity = Some(activity.clone());
        let at = |secs: u64| since + Duration::from_secs(secs);
        assert_eq!(q.holding(Kind::Download, at(59), stall), 1);
        assert_eq!(q.holding(Kind::Download, at(60), stall), 0, "idle for the stalled time");
        assert_eq!(q.holding(Kind::Download, at(60), None), 1, "stalls off");
        assert_eq!(q.holding(Kind::Seed, at(0), stall), 0);
        assert_eq!(q.next_stall(Kind::Download, at(0), Duration::from_secs(60)), Some(at(60)));
        // Data moved at 50 s: it counts until 110 s (a stamp keeps milliseconds).
        activity.set(at(50));
        assert_eq!(q.holding(Kind::Download, at(100), stall), 1);
        let next = q.next_stall(Kind::Download, at(100), Duration::from_secs(60)).unwrap();
        assert!(at(110) - next < Duration::from_millis(1), "{:?}", at(110) - next);
        assert_eq!(q.holding(Kind::Download, at(110), stall), 0);
        assert_eq!(q.next_stall(Kind::Download, at(110), Duration::from_secs(60)), None);
        // A switch to seeding starts it afresh and keeps what it watches.
        q.take(1, Kind::Seed, false);
        assert!(q.slot(1).unwrap().activity.is_some());
        assert_eq!(q.held, [0, 1]);
    }
}
