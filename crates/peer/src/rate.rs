//! Rates and limits.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket shared by every connection's writer: caps upload bytes per second.
pub struct Limiter {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    pub fn new(rate: u64) -> Limiter {
        Limiter { rate: rate.max(1), state: Mutex::new((0.0, Instant::now())) }
    }

    /// Waits until `n` bytes may be sent.
    pub async fn acquire(&self, n: u64) {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let burst = (self.rate as f64 / 10.0).max(n as f64);
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate as f64).min(burst);
                s.1 = now;
                if s.0 >= n as f64 {
                    s.0 -= n as f64;
                    return;
                }
                Duration::from_secs_f64((n as f64 - s.0) / self.rate as f64)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Bytes per second over a sliding window of one-second samples.
#[derive(Debug, Default, Clone)]
pub struct RateMeter {
    samples: std::collections::VecDeque<u64>,
    last_total: u64,
}

impl RateMeter {
    pub const WINDOW: usize = 5;

    /// Records the running total once a second; returns the rate over the window.
    pub fn sample(&mut self, total: u64) -> u64 {
        self.samples.push_back(total.saturating_sub(self.last_total));
        self.last_total = total;
        if self.samples.len() > Self::WINDOW {
            self.samples.pop_front();
        }
        self.rate()
    }
    pub fn rate(&self) -> u64 {
        if self.samples.is_empty() { 0 } else { self.samples.iter().sum::<u64>() / self.samples.len() as u64 }
    }
}
