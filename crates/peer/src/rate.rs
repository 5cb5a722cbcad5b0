//! Rates and limits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A token bucket shared by every connection's writer (or reader): caps bytes per second. The
/// rate can change while it is in use; 0 means no limit.
pub struct Limiter {
    rate: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    pub fn new(rate: u64) -> Limiter {
        Limiter { rate: AtomicU64::new(rate), state: Mutex::new((0.0, Instant::now())) }
    }

    /// Bytes per second; 0 for no limit.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Waits until `n` bytes may go.
    pub async fn acquire(&self, n: u64) {
        loop {
            let rate = self.rate();
            if rate == 0 {
                return;
            }
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                // Half a second of credit: a task that the machine's load kept from running
                // that long still gets its rate (a smaller bucket loses what it could not take
                // in time), and no more than that goes at once.
                let burst = (rate as f64 / 2.0).max(n as f64);
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate as f64).min(burst);
                s.1 = now;
                if s.0 >= n as f64 {
                    s.0 -= n as f64;
                    return;
                }
                Duration::from_secs_f64((n as f64 - s.0) / rate as f64)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Bytes per second over the last few seconds, from running totals sampled at any pace.
///
/// Two samples, no history: the rate is taken from the older one, which is between half a
/// window and a window old while sampling keeps pace (older when samples are sparser). A list
/// of every sample grew with the pace of whoever asked (a client polling 10,000 torrents
/// every second kept five samples of each) and cost an allocation a torrent.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateMeter {
    /// (when, running total): the sample the rate is taken from, and the newest kept one.
    older: Option<(Instant, u64)>,
    newer: Option<(Instant, u64)>,
}

impl RateMeter {
    pub const WINDOW: Duration = Duration::from_secs(5);

    /// Records the running total at `now`; returns the rate over the window.
    pub fn sample_at(&mut self, now: Instant, total: u64) -> u64 {
        match self.newer {
            None => {
                self.older = Some((now, total));
                self.newer = Some((now, total));
            }
            Some((t, _)) if now.saturating_duration_since(t) >= Self::WINDOW / 2 => {
                self.older = self.newer;
                self.newer = Some((now, total));
            }
            Some(_) => {}
        }
        let (t0, first) = self.older.unwrap_or((now, total));
        let secs = now.saturating_duration_since(t0).as_secs_f64();
        if secs <= 0.0 { 0 } else { (total.saturating_sub(first) as f64 / secs) as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_does_not_depend_on_the_sampling_pace() {
        let t = Instant::now();
        let (mut fast, mut slow) = (RateMeter::default(), RateMeter::default());
        // 1 MB/s for 10 s, sampled every 100 ms and every second.
        let mut last = (0, 0);
        for i in 0..=100u64 {
            let now = t + Duration::from_millis(100 * i);
            last.0 = fast.sample_at(now, i * 100_000);
            if i % 10 == 0 {
                last.1 = slow.sample_at(now, i * 100_000);
            }
        }
        assert_eq!(last, (1_000_000, 1_000_000));
        assert_eq!(RateMeter::default().sample_at(t, 5), 0);
    }

    #[test]
    fn an_old_burst_leaves_the_window() {
        let t = Instant::now();
        let mut m = RateMeter::default();
        m.sample_at(t, 0);
        // 1 MB in the first second, then nothing.
        assert_eq!(m.sample_at(t + Duration::from_secs(1), 1_000_000), 1_000_000);
        let mut rate = u64::MAX;
        for i in 2..=12u64 {
            rate = m.sample_at(t + Duration::from_secs(i), 1_000_000);
        }
        assert_eq!(rate, 0);
    }
}
