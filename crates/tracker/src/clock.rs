//! Whole seconds since a start, cheap enough to read on every packet.
//!
//! On Linux this is the coarse monotonic clock: the kernel updates it every tick and the vDSO
//! hands it out without reading the time-stamp counter, so a read costs a few nanoseconds
//! (the UDP path reads it twice per announce: the connection id's window and the peer's last
//! announce). Its resolution, a tick (1–10 ms), is far below the second the tracker counts in.
//! Elsewhere it is `std::time::Instant`.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    #[cfg(target_os = "linux")]
    start: Duration,
    #[cfg(not(target_os = "linux"))]
    start: std::time::Instant,
}

#[cfg(target_os = "linux")]
fn coarse() -> Duration {
    // SAFETY: all-zero bytes are a valid timespec (whatever padding the target adds).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC_COARSE exists since
    // Linux 2.6.32 and cannot fail with a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Clock {
    pub fn start() -> Clock {
        #[cfg(target_os = "linux")]
        return Clock { start: coarse() };
        #[cfg(not(target_os = "linux"))]
        return Clock { start: std::time::Instant::now() };
    }

    /// Time since [`Clock::start`].
    pub fn elapsed(&self) -> Duration {
        #[cfg(target_os = "linux")]
        return coarse().saturating_sub(self.start);
        #[cfg(not(target_os = "linux"))]
        return self.start.elapsed();
    }

    /// Whole seconds since [`Clock::start`].
    pub fn secs(&self) -> u64 {
        self.elapsed().as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_with_real_time() {
        // The coarse clock may lag the fine one by up to a tick (at most 10 ms at HZ=100) at
        // each reading; fine readings taken on both sides of each coarse one bound it however
        // long the thread is switched out in between.
        const TICK: Duration = Duration::from_millis(20);
        let before_start = std::time::Instant::now();
        let c = Clock::start();
        let after_start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        let before_read = std::time::Instant::now();
        let e = c.elapsed();
        let after_read = std::time::Instant::now();
        let (least, most) = (before_read - after_start, after_read - before_start);
        assert!(e + TICK >= least, "{e:?} behind {least:?}");
        assert!(e <= most + TICK, "{e:?} ahead of {most:?}");
    }
}
