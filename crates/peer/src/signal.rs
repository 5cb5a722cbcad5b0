//! A value that tasks wait on for changes, kept inline in its owner.
//!
//! Each torrent had four of tokio's `watch` channels (what it is asked to do, its state,
//! whether its run is stopping, whether it is complete). A channel is a heap block of about
//! 350 bytes (its waiters spread over eight `Notify`s), which made 1.4 kB a torrent: 14 MB of
//! a daemon holding 10,000. A [`Watched`] is the value under a lock, a version and one
//! `Notify` (about 50 bytes beside the value), and its [`Receiver`] borrows it instead of
//! holding a reference count: the owner (the torrent, the run) outlives every waiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(crate) struct Watched<T> {
    value: Mutex<T>,
    /// Bumped under the lock with every change.
    version: AtomicU64,
    notify: Notify,
}

impl<T> Watched<T> {
    pub fn new(value: T) -> Watched<T> {
        Watched { value: Mutex::new(value), version: AtomicU64::new(0), notify: Notify::new() }
    }

    /// The value now (do not hold the guard across an await or while changing it).
    pub fn borrow(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the value and wakes every waiter.
    pub fn send_modify(&self, f: impl FnOnce(&mut T)) {
        self.send_if_modified(|v| {
            f(v);
            true
        });
    }

    /// Changes the value; wakes the waiters only if `f` says it changed.
    pub fn send_if_modified(&self, f: impl FnOnce(&mut T) -> bool) -> bool {
        let mut v = self.borrow();
        let changed = f(&mut v);
        if changed {
            self.version.fetch_add(1, Ordering::Release);
        }
        drop(v);
        if changed {
            self.notify.notify_waiters();
        }
        changed
    }

    pub fn send_replace(&self, value: T) -> T {
        let mut old = Some(value);
        self.send_modify(|v| old = Some(std::mem::replace(v, old.take().expect("set above"))));
        old.expect("swapped above")
    }

    /// A waiter that has seen the value as it is now.
    pub fn subscribe(&self) -> Receiver<'_, T> {
        Receiver { watched: self, seen: self.version.load(Ordering::Acquire) }
    }
}

pub(crate) struct Receiver<'a, T> {
    watched: &'a Watched<T>,
    seen: u64,
}

impl<T> Receiver<'_, T> {
    pub fn borrow(&self) -> MutexGuard<'_, T> {
        self.watched.borrow()
    }

    /// The value now, which counts as seen.
    pub fn borrow_and_update(&mut self) -> MutexGuard<'_, T> {
        let v = self.watched.borrow();
        // Read under the lock: the version of the value in hand.
        self.seen = self.watched.version.load(Ordering::Acquire);
        v
    }

    /// The value changed since it was last seen.
    pub fn has_changed(&self) -> bool {
        self.watched.version.load(Ordering::Acquire) != self.seen
    }

    /// Resolves once the value changed since it was last seen (at once if it already has).
    pub async fn changed(&mut self) {
        loop {
            let notified = self.watched.notify.notified();
            tokio::pin!(notified);
            // Registered before the version is read: a change after the read wakes it.
            notified.as_mut().enable();
            let now = self.watched.version.load(Ordering::Acquire);
            if now != self.seen {
                self.seen = now;
                return;
            }
            notified.await;
        }
    }

    /// Resolves once `f` holds for the value (at once if it holds now).
    pub async fn wait_for(&mut self, mut f: impl FnMut(&T) -> bool) {
        loop {
            if f(&self.borrow_and_update()) {
                return;
            }
            self.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_hears_every_change_made_after_it_looked() {
        let w = Arc::new(Watched::new(0u32));
        let mut rx = w.subscribe();
        assert_eq!(*rx.borrow_and_update(), 0);
        w.send_modify(|v| *v = 1);
        // Already changed: resolves at once.
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 1);
        // Nothing new: still waiting.
        assert!(tokio::time::timeout(Duration::from_millis(20), rx.changed()).await.is_err());
        let w2 = w.clone();
        let setter = tokio::spawn(async move {
            for i in 2..=100 {
                w2.send_replace(i);
                tokio::task::yield_now().await;
            }
        });
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v == 100)).await.unwrap();
        setter.await.unwrap();
        assert!(!w.send_if_modified(|_| false));
        assert!(tokio::time::timeout(Duration::from_millis(20), rx.changed()).await.is_err());
    }
}
