//! Progress for long work: a bar on a terminal, plain periodic lines otherwise, nothing with -q.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines,
    Quiet,
}

impl Mode {
    /// A bar when stderr is a terminal, otherwise lines; `quiet` silences both.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// Interval between plain progress lines.
pub const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// Runs `work` while showing how far `done` has come towards `total` bytes.
pub fn track_bytes<T>(mode: Mode, label: &str, total: u64, done: &AtomicU64, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let stop = AtomicU64::new(0);
    let result = std::thread::scope(|s| {
        let drawer = s.spawn(|| {
            let bar = (mode == Mode::Bar).then(|| work_bar(label, total));
            let mut last_line = Instant::now();
            while stop.load(Ordering::Acquire) == 0 {
                std::thread::park_timeout(Duration::from_millis(100));
                let d = done.load(Ordering::Relaxed).min(total);
                if let Some(b) = &bar {
                    b.set_position(d);
                } else if mode == Mode::Lines && last_line.elapsed() >= LINE_INTERVAL {
                    last_line = Instant::now();
                    errln!("{label}: {}", fraction(d, total, started.elapsed()));
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        let r = work();
        stop.store(1, Ordering::Release);
        drawer.thread().unpark();
        r
    });
    if mode != Mode::Quiet {
        let d = done.load(Ordering::Relaxed).min(total);
        errln!("{label}: {}", fraction(d, total, started.elapsed()));
    }
    result
}

/// Awaits `work` while showing how far it has come: `progress()` says (done, total) bytes, the
/// total may grow as the work learns more.
pub async fn track_async<T>(
    mode: Mode,
    label: &str,
    progress: impl Fn() -> (u64, u64),
    work: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let bar = (mode == Mode::Bar).then(|| work_bar(label, 0));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_line = Instant::now();
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                let (d, total) = progress();
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(d.min(total));
                } else if mode == Mode::Lines && last_line.elapsed() >= LINE_INTERVAL {
                    last_line = Instant::now();
                    errln!("{label}: {}", fraction(d.min(total), total, started.elapsed()));
                }
            }
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if mode != Mode::Quiet {
        let (d, total) = progress();
        errln!("{label}: {}", fraction(d.min(total), total, started.elapsed()));
    }
    result
}

/// The bar of a piece of work: its label, bytes done of `total`, rate and time left.
fn work_bar(label: &str, total: u64) -> ProgressBar {
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_message(label.to_owned());
    b
}

fn fraction(done: u64, total: u64, elapsed: Duration) -> String {
    let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{pct:.0}% ({} of {}) in {:.2} s, {}/s",
        HumanBytes(done),
        HumanBytes(total),
        elapsed.as_secs_f64(),
        HumanBytes(rate as u64)
    )
}
