//! Held torrent-gets (bitswarm's `bitswarm-wait`): a long poll for the web page.
//!
//! A torrent-get with `ids: "recently-active"`, `bitswarm-since` (a marker this run gave) and
//! `bitswarm-wait: seconds` is answered when there is something to say since the marker, else
//! held until there is, or the wait ends, or the daemon shuts down; then it is answered as
//! any torrent-get. What there is to say, and how soon:
//!
//! | since the marker | answered |
//! |---|---|
//! | a torrent's state or settings changed, one was added or removed | at once, but not sooner than [`CHANGE_GAP`] after the marker |
//! | only figures move (rates, progress, peers) | [`MOVING_EVERY`] after the marker |
//! | nothing | at the end of the wait, `[]` |
//!
//! Waiting costs nothing: the request sleeps until the backend's [`events`](Backend::events)
//! goes up (a change, an add, a removal, a torrent's first peer), never polling. It holds no
//! part of the body budget, so other calls are never delayed by held ones. Held requests are
//! capped per client address ([`MAX_HELD_PER_CLIENT`]) and in all ([`MAX_HELD`]); past the
//! caps, and for a backend without events, the request is answered at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::coerce::{self, Args};
use crate::ids;

/// The longest wait a client may ask for, in seconds (longer asks are cut to this).
pub const MAX_WAIT_SECS: u64 = 60;
/// Held requests from one client address at once (a browser opens at most 6 connections to a
/// server; a page holds one).
pub const MAX_HELD_PER_CLIENT: usize = 4;
/// Held requests at once, from every client.
pub const MAX_HELD: usize = 256;
/// A change is answered no sooner than this after the client's last answer, so that a burst
/// of changes (a bulk add) comes in a few answers, not one each.
pub const CHANGE_GAP: Duration = Duration::from_millis(500);
/// While torrents' figures move, a held request answers this long after the last answer: how
/// often the page's rates and progress refresh.
pub const MOVING_EVERY: Duration = Duration::from_secs(2);
/// After a wake that found nothing to say, the next look is no sooner than this (a storm of
/// events costs a look per this, not one each).
const LOOK_GAP: Duration = Duration::from_millis(100);

/// The held requests (and open update streams, [`crate::stream`]), by client address.
#[derive(Default)]
pub(crate) struct Holds {
    held: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
}

/// One held request's place; given back when dropped (answered, or the client went away).
pub(crate) struct Slot {
    held: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    client: Option<IpAddr>,
}

impl Holds {
    /// A place for a request from `client`, unless the caps are reached.
    pub(crate) fn take(&self, client: Option<IpAddr>) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = held.values().sum();
        let mine = held.get(&client).copied().unwrap_or(0);
        if total >= MAX_HELD || mine >= MAX_HELD_PER_CLIENT {
            return None;
        }
        *held.entry(client).or_default() += 1;
        Some(Slot { held: Arc::clone(&self.held), client })
    }

    /// How many requests are held now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Whether `method` and `args` ask to be held, and for how long.
pub(crate) fn asks(method: Option<&str>, args: &Args) -> Option<(i64, Duration)> {
    if method != Some("torrent-get") || ids::parse(args) != ids::Selection::RecentlyActive {
        return None;
    }
    let since = args.get("bitswarm-since").and_then(coerce::int)?;
    let wait = args.get("bitswarm-wait").and_then(coerce::int)?;
    let wait = u64::try_from(wait).ok().filter(|w| *w > 0)?.min(MAX_WAIT_SECS);
    Some((since, Duration::from_secs(wait)))
}

/// Waits until a torrent-get with `bitswarm-since: marker` has something to say, or `wait`
/// passed, or the backend is closing; at once if the marker is not this run's (the answer
/// is then every torrent), the backend has no events, or the caps are reached.
pub(crate) async fn wait<B: Backend>(backend: &B, holds: &Holds, client: Option<IpAddr>, marker: i64, wait: Duration) {
    let Some(since) = ids::marker_instant(marker) else { return };
    let Some(mut events) = backend.events() else { return };
    let Some(_slot) = holds.take(client) else {
        tracing::debug!(client = ?client, "held torrent-get refused: too many held");
        return;
    };
    until_news(backend, &mut events, since, wait).await;
}

/// Waits until there is something to say since `since` (as the table above says), or `wait`
/// passed, or the backend is closing. False when the backend is closing (or its events
/// ended): nothing more will come.
pub(crate) async fn until_news<B: Backend>(
    backend: &B,
    events: &mut tokio::sync::watch::Receiver<u64>,
    since: Instant,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let closing = backend.closing();
    tokio::pin!(closing);
    loop {
        // Seen before looking: a change while we look wakes the next wait.
        events.borrow_and_update();
        let c = backend.changes_since(since);
        let at = if !c.changed.is_empty() || c.removed {
            Some(since + CHANGE_GAP)
        } else if !c.moving.is_empty() {
            Some(since + MOVING_EVERY)
        } else {
            None
        };
        if let Some(at) = at {
            let at = tokio::time::Instant::from_std(at).min(deadline);
            return tokio::select! {
                () = tokio::time::sleep_until(at) => true,
                () = &mut closing => false,
            };
        }
        tokio::select! {
            r = events.changed() => {
                if r.is_err() {
                    return false;
                }
            }
            () = tokio::time::sleep_until(deadline) => return true,
            () = &mut closing => return false,
        }
        let next = (tokio::time::Instant::now() + LOOK_GAP).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = &mut closing => return false,
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let holds = Holds::default();
        let a: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let b: Option<IpAddr> = Some("127.0.0.2".parse().unwrap());
        let slots: Vec<_> = (0..MAX_HELD_PER_CLIENT).map(|_| holds.take(a).expect("under the cap")).collect();
        assert!(holds.take(a).is_none(), "one client past its cap");
        assert!(holds.take(b).is_some(), "another client is not");
        drop(slots);
        assert_eq!(holds.count(), 0, "slots are given back");
        let many: Vec<_> =
            (0..MAX_HELD).map(|i| holds.take(Some(IpAddr::from([10, 0, (i / 256) as u8, i as u8])))).collect();
        assert!(many.iter().all(Option::is_some));
        assert!(holds.take(b).is_none(), "past the total cap");
    }

    #[test]
    fn what_asks() {
        let args = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let ok = args(serde_json::json!({"ids": "recently-active", "bitswarm-since": 5, "bitswarm-wait": 600}));
        assert_eq!(asks(Some("torrent-get"), &ok), Some((5, Duration::from_secs(MAX_WAIT_SECS))));
        assert_eq!(asks(Some("torrent-set"), &ok), None);
        let no_wait = args(serde_json::json!({"ids": "recently-active", "bitswarm-since": 5}));
        assert_eq!(asks(Some("torrent-get"), &no_wait), None);
        let zero = args(serde_json::json!({"ids": "recently-active", "bitswarm-since": 5, "bitswarm-wait": 0}));
        assert_eq!(asks(Some("torrent-get"), &zero), None);
        let all = args(serde_json::json!({"bitswarm-since": 5, "bitswarm-wait": 10}));
        assert_eq!(asks(Some("torrent-get"), &all), None);
    }
}
