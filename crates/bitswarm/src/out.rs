//! Lines on stdout and stderr that never panic (`outln!` does when stdout is closed or full).
//!
//! * A closed stdout (the reader went away: `bitswarm torrent show X | head -1`) drops the rest
//!   of the output quietly, as Unix tools end on SIGPIPE; [`closed`] resolves, and the commands
//!   that run until stopped take it as a stop.
//! * Any other error (`> /dev/full`) drops the rest too, and `main` ends with a one-line error
//!   (see [`error`]).
//! * stderr has nowhere else to report to: its errors are ignored.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static FAILED: AtomicBool = AtomicBool::new(false);
static ERROR: Mutex<Option<String>> = Mutex::new(None);
static CLOSED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A line on stdout, like `outln!`.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::line(format_args!("")) };
    ($($t:tt)*) => { $crate::out::line(format_args!($($t)*)) };
}

/// A line on stderr, like `errln!`.
#[macro_export]
macro_rules! errln {
    () => { $crate::out::err_line(format_args!("")) };
    ($($t:tt)*) => { $crate::out::err_line(format_args!($($t)*)) };
}

/// Text on stdout as it is (a file's contents, say), like `print!`.
pub fn text(t: &str) {
    line_of(format_args!("{t}"), false);
}

pub fn line(args: std::fmt::Arguments<'_>) {
    line_of(args, true);
}

fn line_of(args: std::fmt::Arguments<'_>, newline: bool) {
    if FAILED.load(Ordering::Acquire) {
        return;
    }
    let mut o = std::io::stdout().lock();
    let end: &[u8] = if newline { b"\n" } else { b"" };
    if let Err(e) = o.write_fmt(args).and_then(|()| o.write_all(end)).and_then(|()| o.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            ERROR.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| format!("stdout: {e}"));
        }
        FAILED.store(true, Ordering::Release);
        CLOSED.notify_waiters();
    }
}

pub fn err_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.write_all(b"\n"));
}

/// Resolves once stdout cannot be written to (closed, or failing).
pub async fn closed() {
    loop {
        let wait = CLOSED.notified();
        if FAILED.load(Ordering::Acquire) {
            return;
        }
        wait.await;
    }
}

/// What went wrong writing stdout, other than its reader going away.
pub fn error() -> Option<String> {
    ERROR.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
