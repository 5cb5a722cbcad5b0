//! Rate limits, handed the time: a token bucket, and one bucket per source address for
//! incoming queries (a bounded map, so a flood of addresses cannot grow it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket { rate, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (now, if it is).
    pub(crate) fn next_available(&self, now: Instant) -> Instant {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        let have = (self.tokens + dt * self.rate).min(self.burst);
        if have >= 1.0 || self.rate <= 0.0 { now } else { now + Duration::from_secs_f64((1.0 - have) / self.rate) }
    }

    /// When the next token will be there, judged from its last use.
    pub(crate) fn next_token_at(&self) -> Instant {
        self.next_available(self.last)
    }

    /// Whether it has refilled completely, so that forgetting it changes nothing.
    fn is_full(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + dt * self.rate >= self.burst
    }
}

/// One [`TokenBucket`] per source IP address.
#[derive(Debug)]
pub(crate) struct PerIpLimit {
    buckets: HashMap<IpAddr, TokenBucket>,
    max_ips: usize,
    rate: f64,
    burst: f64,
}

impl PerIpLimit {
    pub(crate) fn new(rate: f64, burst: f64, max_ips: usize) -> Self {
        PerIpLimit { buckets: HashMap::new(), max_ips, rate, burst }
    }

    /// Whether a query from `ip` may be answered now.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_ips {
            self.purge(now);
            if self.buckets.len() >= self.max_ips {
                // Every tracked address is sending hard: a flood. New ones wait.
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.entry(ip).or_insert_with(|| TokenBucket::new(rate, burst, now)).try_take(now)
    }

    /// Forgets the addresses whose bucket has refilled.
    pub(crate) fn purge(&mut self, now: Instant) {
        self.buckets.retain(|_, b| !b.is_full(now));
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && !b.try_take(t0));
        assert_eq!(b.next_available(t0), t0 + Duration::from_millis(100));
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_take(later) && b.try_take(later) && !b.try_take(later));
    }

    #[test]
    fn per_ip_limit_is_per_address_and_bounded() {
        let t0 = Instant::now();
        let mut l = PerIpLimit::new(1.0, 3.0, 4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..3).all(|_| l.allow(a, t0)));
        assert!(!l.allow(a, t0));
        assert!(l.allow("10.0.0.2".parse().unwrap(), t0));
        for i in 3..100 {
            l.allow(IpAddr::from([10, 0, 0, i]), t0);
        }
        assert!(l.tracked() <= 4);
        // Once their buckets refill the addresses are forgotten and new ones get in.
        assert!(l.allow("10.9.9.9".parse().unwrap(), t0 + Duration::from_secs(10)));
    }
}
