//! When each running torrent announces next, on one timer for the whole session.
//!
//! A task a torrent, each asleep until its next announce, cost 1.6 KB a torrent (the task and
//! its future: timers, channels, the state of its loop): 16 MB of a daemon's 96 MB of heap at
//! 10,000 seeding torrents. Here a torrent's place in the schedule is one entry of an ordered
//! map, the state of its announces a few words in its run ([`crate::live::Announcing`]), and
//! a task exists only while an announce is under way. libtorrent and Transmission likewise
//! keep one session timer that walks the torrents due.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::live::Live;

/// A place in the schedule: when, and a number that keeps equal times apart.
pub(crate) type Key = (Instant, u64);

pub(crate) struct Announcer {
    due: Mutex<(BTreeMap<Key, Weak<Live>>, u64)>,
    /// Wakes the timer task when an earlier announce was put in (or the announcer is gone).
    wake: Arc<Notify>,
    started: AtomicBool,
}

impl Announcer {
    pub fn new() -> Arc<Announcer> {
        Arc::new(Announcer {
            due: Mutex::new((BTreeMap::new(), 0)),
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
        })
    }

    /// Puts `live`'s next announce at `at`, in place of the one it had (`key`, updated).
    pub fn schedule(
        self: &Arc<Self>,
        live: &Arc<Live>,
        key: &mut Option<Key>,
        at: Instant,
        rt: &tokio::runtime::Handle,
    ) {
        let earliest = {
            let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(k) = key.take() {
                due.0.remove(&k);
            }
            let k = (at, due.1);
            due.1 += 1;
            due.0.insert(k, Arc::downgrade(live));
            *key = Some(k);
            due.0.first_key_value().is_some_and(|(first, _)| *first == k)
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            rt.spawn(run(Arc::downgrade(self), self.wake.clone()));
        }
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Takes `live` out of the schedule.
    pub fn cancel(&self, key: &mut Option<Key>) {
        if let Some(k) = key.take() {
            self.due.lock().unwrap_or_else(|p| p.into_inner()).0.remove(&k);
        }
    }

    /// Takes out what is due by `now`; returns it and when the next one is due.
    fn take_due(&self, now: Instant) -> (Vec<Weak<Live>>, Option<Instant>) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while let Some(e) = due.0.first_entry() {
            if e.key().0 > now {
                break;
            }
            out.push(e.remove());
        }
        (out, due.0.first_key_value().map(|(k, _)| k.0))
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // The timer task wakes, finds the announcer gone, and ends.
        self.wake.notify_one();
    }
}

/// The timer: starts the announces that are due, then sleeps until the next one (or until an
/// earlier one is put in).
async fn run(announcer: Weak<Announcer>, wake: Arc<Notify>) {
    loop {
        let Some(a) = announcer.upgrade() else { return };
        let (due, next) = a.take_due(Instant::now());
        drop(a);
        for live in due.iter().filter_map(Weak::upgrade) {
            live.announce_due();
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
