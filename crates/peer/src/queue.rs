//! The session's queue: at most so many torrents downloading and so many seeding at once (the
//! settings say how many; none means no limit), the others waiting their turn in queue order,
//! and at most so many checking their data at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
    /// Torrents holding a slot, by id, and whether the slot was taken out of turn (those do not
    /// count against the limits).
    active: HashMap<u32, (Kind, bool)>,
    /// How many slots of each kind count against the limits (those not taken out of turn).
    held: [usize; 2],
    /// Torrents waiting, by (queue position, id).
    waiting: BTreeSet<(u64, u32, Kind)>,
    /// Where each waiting torrent is in `waiting`.
    waiting_at: HashMap<u32, (u64, Kind)>,
    /// How many of each kind wait.
    waiting_count: [usize; 2],
}

impl Inner {
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
        self.give_back(id);
        self.active.insert(id, (kind, forced));
        if !forced {
            self.held[kind as usize] += 1;
        }
    }

    fn give_back(&mut self, id: u32) {
        if let Some((kind, forced)) = self.active.remove(&id)
            && !forced
        {
            self.held[kind as usize] -= 1;
        }
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

    fn limit(&self, kind: Kind) -> usize {
        let s = self.core.settings();
        match kind {
            Kind::Download => s.max_downloading,
            Kind::Seed => s.max_seeding,
        }
        .unwrap_or(usize::MAX)
    }

    /// Waits for a slot of `kind` for torrent `id`: when fewer than the limit hold one and no
    /// torrent ahead in the queue waits for the same kind; at once when `force`.
    pub async fn acquire(self: &Arc<Self>, id: u32, position: &AtomicU64, kind: Kind, force: bool) -> Slot {
        // Out of the line however this ends (a stop drops the wait).
        let _in_line = InLine { queue: self, id };
        loop {
            let wake = self.changed.notified();
            {
                let limit = self.limit(kind);
                let pos = position.load(Ordering::Relaxed);
                let mut q = self.inner();
                q.leave_line(id);
                let holding = q.held[kind as usize];
                if force || (holding < limit && !q.ahead(pos, id, kind)) {
                    q.take(id, kind, force);
                    return Slot { queue: self.clone(), id };
                }
                q.join_line(pos, id, kind);
            }
            wake.await;
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
        let limit = self.queue.limit(kind);
        let mut q = self.queue.inner();
        let Some(&(mine, forced)) = q.active.get(&self.id) else { return false };
        if mine == kind {
            return true;
        }
        if !forced && q.held[kind as usize] >= limit {
            return false;
        }
        q.take(self.id, kind, forced);
        drop(q);
        self.queue.poke();
        true
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
