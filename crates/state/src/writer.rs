//! The queue and the writer thread.
//!
//! Callers never touch the disk: a put takes a mutex only long enough to store its value in
//! [`Pending`], maps keyed by torrent and setting, so a flood of puts for one torrent keeps one
//! entry (the latest) and memory stays bounded by the number of torrents. The writer thread
//! takes the whole `Pending` at once (a pointer swap under the mutex) and commits it in one
//! transaction: a batch of 10,000 changes costs one WAL append, not 10,000.
//!
//! Flushes are numbered: `flush` takes ticket `requested + 1`; the writer notes the highest
//! ticket issued when it takes a batch (every change queued before that ticket is in the batch
//! or committed earlier), and once the batch is committed, every flush up to it returns.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::mem;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bitswarm_metainfo::InfoHash;
use rusqlite::Connection;

use crate::db::{self, classify};
use crate::{Counters, Health, Options, Record, Resume, StateError};

/// The longest wait between two attempts while commits keep failing (a full disk): retrying
/// each second would flood the log with one message a second.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Changes waiting for the next commit, coalesced.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) torrents: HashMap<InfoHash, TorrentOp>,
    pub(crate) resumes: HashMap<InfoHash, Resume>,
    /// `None` removes the setting.
    pub(crate) settings: HashMap<String, Option<String>>,
    /// Deltas, added to the stored totals.
    pub(crate) counters: Counters,
}

/// What happens to one torrent's record.
pub(crate) struct TorrentOp {
    /// Delete the stored record, .torrent bytes and resume data before the put (if any): a
    /// torrent removed and added again in one batch starts without its old resume data.
    pub(crate) remove_first: bool,
    /// `None` only when `remove_first`.
    pub(crate) put: Option<Record>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.torrents.is_empty() && self.resumes.is_empty() && self.settings.is_empty() && self.counters.is_zero()
    }

    pub(crate) fn put_torrent(&mut self, record: Record) {
        match self.torrents.entry(record.info_hash) {
            Entry::Occupied(mut e) => e.get_mut().put = Some(record),
            Entry::Vacant(e) => {
                e.insert(TorrentOp { remove_first: false, put: Some(record) });
            }
        }
    }

    pub(crate) fn remove(&mut self, hash: InfoHash) {
        self.torrents.insert(hash, TorrentOp { remove_first: true, put: None });
        self.resumes.remove(&hash);
    }

    /// Puts back a batch whose commit failed, under the changes queued since (`self`), which
    /// are newer and win.
    pub(crate) fn merge_older(&mut self, old: Pending) {
        // Resume data first, while `self.torrents` holds only the newer operations: a torrent
        // removed since the old batch was taken loses its old resume data.
        for (hash, resume) in old.resumes {
            let removed_since = self.torrents.get(&hash).is_some_and(|op| op.remove_first);
            if !removed_since {
                self.resumes.entry(hash).or_insert(resume);
            }
        }
        for (hash, op) in old.torrents {
            match self.torrents.entry(hash) {
                Entry::Vacant(e) => {
                    e.insert(op);
                }
                // A newer put replaces the old one but must still do the old removal.
                Entry::Occupied(mut e) => {
                    let newer = e.get_mut();
                    newer.remove_first |= op.remove_first;
                }
            }
        }
        for (key, value) in old.settings {
            self.settings.entry(key).or_insert(value);
        }
        self.counters = self.counters.saturating_add(old.counters);
    }

    fn len(&self) -> usize {
        self.torrents.len() + self.resumes.len() + self.settings.len()
    }
}

/// What the Store and the writer share.
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The writer waits on it: new work after idling, a flush, the shutdown.
    wake: Condvar,
    /// Flushes wait on it: a batch attempted, or the writer gone.
    done: Condvar,
}

#[derive(Default)]
struct State {
    pending: Pending,
    /// The highest flush ticket issued.
    requested: u64,
    /// The highest ticket whose batch was attempted / committed.
    attempted: u64,
    committed: u64,
    shutdown: bool,
    /// The writer thread has ended.
    stopped: bool,
    health: Health,
}

impl Shared {
    /// A poisoned mutex (a panic while holding it) still guards consistent data here: every
    /// critical section only moves whole values.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to the queue; wakes the writer if the queue was empty (otherwise it is
    /// already waiting for its commit time, and a wake-up per put would be wasted).
    pub(crate) fn enqueue(&self, change: impl FnOnce(&mut Pending)) {
        let mut st = self.lock();
        let was_empty = st.pending.is_empty();
        change(&mut st.pending);
        drop(st);
        if was_empty {
            self.wake.notify_one();
        }
    }

    pub(crate) fn flush(&self) -> Result<(), StateError> {
        let mut st = self.lock();
        st.requested += 1;
        let ticket = st.requested;
        self.wake.notify_one();
        loop {
            if st.attempted >= ticket {
                return if st.committed >= ticket {
                    Ok(())
                } else {
                    Err(st.health.last_error.clone().unwrap_or(StateError::WriterStopped))
                };
            }
            if st.stopped {
                return Err(StateError::WriterStopped);
            }
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.wake.notify_one();
    }

    pub(crate) fn health(&self) -> Health {
        let st = self.lock();
        Health { queued: st.pending.len(), ..st.health.clone() }
    }
}

/// Marks the writer stopped however it ends, a panic included, so no flush waits forever.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.done.notify_all();
    }
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// Held until the connection is closed: see [`crate::lock`].
    pub(crate) lock: File,
    pub(crate) shared: Arc<Shared>,
    /// The counters as stored.
    pub(crate) totals: Counters,
    pub(crate) path: PathBuf,
    pub(crate) options: Options,
}

pub(crate) fn run(w: Writer) {
    let Writer { mut conn, lock, shared, mut totals, path, options } = w;
    let _guard = StopGuard(shared.clone());
    // Capped so that `Instant + delay` cannot overflow; a day is "only when flushed" enough.
    let interval = options.commit_interval.min(Duration::from_secs(86_400));
    // Changes made just after open wait one interval too, so a daemon loading thousands of
    // torrents commits them together.
    let mut last_attempt = Instant::now();
    let mut delay = interval;
    loop {
        let (batch, covers, shutdown) = {
            let mut st = shared.lock();
            loop {
                if st.shutdown || st.requested > st.attempted {
                    break;
                }
                if st.pending.is_empty() {
                    st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                let now = Instant::now();
                let due = last_attempt + delay;
                if now >= due {
                    break;
                }
                st = shared.wake.wait_timeout(st, due - now).map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            (mem::take(&mut st.pending), st.requested, st.shutdown)
        };

        let work = !batch.is_empty();
        let result = if work {
            db::commit(&mut conn, &batch, totals).map_err(classify(&path, "committing"))
        } else {
            Ok(totals)
        };
        last_attempt = Instant::now();
        let failure = {
            let mut st = shared.lock();
            st.attempted = covers;
            match result {
                Ok(new_totals) => {
                    totals = new_totals;
                    st.committed = covers;
                    if work {
                        st.health.commits += 1;
                        st.health.last_commit = Some(SystemTime::now());
                    }
                    delay = interval;
                    None
                }
                Err(e) => {
                    st.pending.merge_older(batch);
                    st.health.errors += 1;
                    st.health.last_error = Some(e.clone());
                    delay = delay.saturating_mul(2).clamp(interval, MAX_BACKOFF.max(interval));
                    Some(e)
                }
            }
        };
        shared.done.notify_all();
        if let (Some(e), Some(hook)) = (&failure, &options.on_error) {
            hook(e);
        }
        if shutdown {
            break;
        }
    }
    // Closing the last connection checkpoints the WAL into the database and deletes it.
    if let Err((_, e)) = conn.close() {
        let e = classify(&path, "closing")(e);
        let mut st = shared.lock();
        st.health.errors += 1;
        st.health.last_error = Some(e.clone());
        drop(st);
        if let Some(hook) = &options.on_error {
            hook(&e);
        }
    }
    drop(lock);
}
