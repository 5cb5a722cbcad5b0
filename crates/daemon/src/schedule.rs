//! Transmission's schedule of the alternative speed limits (`alt-speed-time-*`): from `begin`
//! to `end` (minutes after local midnight) on the days of a mask (Sunday 1, Monday 2 …
//! Saturday 64). A range whose end is not after its begin runs over midnight into the next day
//! (begin = end: a whole day), and belongs to the day it begins on, as in Transmission.
//!
//! The daemon turns `alt-speed-enabled` on at each begin and off at each end; a client's
//! toggle in between holds until the next of them.

/// Minutes in a day and in a week.
const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;

/// Every day of the week (Transmission's `TR_SCHED_ALL`).
pub(crate) const ALL_DAYS: u32 = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Minutes after local midnight, below 1440.
    pub begin: u32,
    pub end: u32,
    /// Bit `d` for the range that begins on day `d` (0 Sunday … 6 Saturday).
    pub days: u32,
}

/// A moment of local time: the day of the week (0 Sunday) and the minute of that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTime {
    pub weekday: u32,
    pub minute: u32,
    /// Seconds into that minute.
    pub second: u32,
}

impl Schedule {
    /// Whether the alternative limits are on at this minute of the week.
    fn on_at(&self, minute_of_week: u32) -> bool {
        let len = if self.end > self.begin { self.end - self.begin } else { self.end + DAY - self.begin };
        (0..7).filter(|d| self.days & (1 << d) != 0).any(|d| {
            let start = d * DAY + self.begin;
            (minute_of_week + WEEK - start) % WEEK < len
        })
    }

    /// Whether the alternative limits are on at `t`.
    pub fn is_on(&self, t: LocalTime) -> bool {
        self.on_at(minute_of_week(t))
    }

    /// Minutes from the start of `t`'s minute to the next begin or end that changes
    /// [`Schedule::is_on`]; None when nothing ever changes (no day, or every minute on).
    pub fn minutes_to_change(&self, t: LocalTime) -> Option<u32> {
        let now = minute_of_week(t);
        let on = self.on_at(now);
        (1..=WEEK).find(|m| self.on_at((now + m) % WEEK) != on)
    }
}

fn minute_of_week(t: LocalTime) -> u32 {
    (t.weekday % 7) * DAY + t.minute.min(DAY - 1)
}

unsafe extern "C" {
    /// POSIX's, which the libc crate leaves out: reads `TZ` (localtime_r need not).
    fn tzset();
}

/// The local time now, as the C library knows it (the `TZ` variable, else /etc/localtime).
pub(crate) fn local_now() -> LocalTime {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes only the struct given; tzset reads the environment, which
    // the daemon does not change while it runs.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tzset();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    LocalTime {
        weekday: tm.tm_wday.clamp(0, 6) as u32,
        minute: (tm.tm_hour.clamp(0, 23) * 60 + tm.tm_min.clamp(0, 59)) as u32,
        second: tm.tm_sec.clamp(0, 60) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUN: u32 = 0;
    const MON: u32 = 1;
    const FRI: u32 = 5;
    const SAT: u32 = 6;
    const WEEKDAYS: u32 = 62;
    const WEEKEND: u32 = 65;

    fn at(weekday: u32, h: u32, m: u32) -> LocalTime {
        LocalTime { weekday, minute: h * 60 + m, second: 0 }
    }

    #[test]
    fn a_daytime_range_on_every_day() {
        // Transmission's default: 9:00 to 17:00, every day.
        let s = Schedule { begin: 540, end: 1020, days: ALL_DAYS };
        assert!(!s.is_on(at(MON, 8, 59)));
        assert!(s.is_on(at(MON, 9, 0)));
        assert!(s.is_on(at(MON, 16, 59)));
        assert!(!s.is_on(at(MON, 17, 0)));
        assert_eq!(s.minutes_to_change(at(MON, 8, 0)), Some(60));
        assert_eq!(s.minutes_to_change(at(MON, 9, 0)), Some(480));
        assert_eq!(s.minutes_to_change(at(MON, 17, 0)), Some(16 * 60));
        // Saturday 17:00 to Sunday 9:00 crosses the end of the week.
        assert_eq!(s.minutes_to_change(at(SAT, 17, 0)), Some(16 * 60));
    }

    #[test]
    fn a_range_over_midnight_belongs_to_the_day_it_begins_on() {
        // 23:00 to 1:00, Fridays only: on Friday night into Saturday, not Thursday into Friday.
        let s = Schedule { begin: 23 * 60, end: 60, days: 1 << FRI };
        assert!(!s.is_on(at(FRI, 0, 30)));
        assert!(!s.is_on(at(FRI, 22, 59)));
        assert!(s.is_on(at(FRI, 23, 0)));
        assert!(s.is_on(at(SAT, 0, 0)));
        assert!(s.is_on(at(SAT, 0, 59)));
        assert!(!s.is_on(at(SAT, 1, 0)));
        assert!(!s.is_on(at(SAT, 23, 30)));
        assert_eq!(s.minutes_to_change(at(FRI, 23, 0)), Some(120));
        assert_eq!(s.minutes_to_change(at(SAT, 1, 0)), Some(7 * DAY - 120));
        // Saturday night runs into Sunday, over the end of the week.
        let s = Schedule { begin: 23 * 60, end: 60, days: 1 << SAT };
        assert!(s.is_on(at(SUN, 0, 30)));
        assert!(!s.is_on(at(SUN, 23, 30)));
    }

    #[test]
    fn day_masks() {
        let s = Schedule { begin: 540, end: 1020, days: WEEKDAYS };
        for d in MON..=FRI {
            assert!(s.is_on(at(d, 12, 0)), "day {d}");
        }
        assert!(!s.is_on(at(SAT, 12, 0)));
        assert!(!s.is_on(at(SUN, 12, 0)));
        let s = Schedule { days: WEEKEND, ..s };
        assert!(s.is_on(at(SAT, 12, 0)) && s.is_on(at(SUN, 12, 0)) && !s.is_on(at(MON, 12, 0)));
        // No day: never on, nothing to wake for.
        let s = Schedule { days: 0, ..s };
        assert!(!s.is_on(at(SAT, 12, 0)));
        assert_eq!(s.minutes_to_change(at(SAT, 12, 0)), None);
    }

    #[test]
    fn begin_equal_to_end_is_a_whole_day() {
        let s = Schedule { begin: 600, end: 600, days: 1 << MON };
        assert!(!s.is_on(at(MON, 9, 59)));
        assert!(s.is_on(at(MON, 10, 0)));
        assert!(s.is_on(at(2, 9, 59)));
        assert!(!s.is_on(at(2, 10, 0)));
        // Every day, all day: always on, never a change.
        let s = Schedule { days: ALL_DAYS, ..s };
        assert!(s.is_on(at(SAT, 3, 0)));
        assert_eq!(s.minutes_to_change(at(SAT, 3, 0)), None);
    }
}
