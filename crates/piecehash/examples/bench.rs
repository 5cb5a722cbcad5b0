//! Single-threaded SHA-1 throughput of each backend, in GB/s (10^9 bytes per second) on one core.
//!
//! `cargo run --release -p bitswarm-piecehash --example bench` measures 16 messages of 16 KiB,
//! 256 KiB and 1 MiB; with `lanes` it measures batches of 1..=16 messages of 256 KiB instead (to choose the
//! thresholds below which SHA-NI wins). Each figure is the median of 5 samples; a sample hashes
//! the batch repeatedly for at least 0.2 s. Rates are per second of this thread's CPU time (from
//! Linux's `/proc/thread-self/schedstat`), so that time-sharing the core with other processes does
//! not count; where that file is missing, per second of wall time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitswarm_piecehash::{Backend, sha1_many, sha1_many_with};

const SAMPLES: usize = 5;

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Nanoseconds this thread has run on a CPU, if Linux tells.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Median GB/s of `f` hashing `bytes` bytes per call.
fn measure(bytes: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut rates: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            let cpu_start = cpu_ns();
            let mut calls = 0u32;
            while start.elapsed() < Duration::from_millis(200) {
                f();
                calls += 1;
            }
            let secs = match (cpu_start, cpu_ns()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                _ => start.elapsed().as_secs_f64(),
            };
            (bytes as f64 * f64::from(calls)) / secs / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[SAMPLES / 2]
}

fn main() {
    let lanes_mode = std::env::args().nth(1).as_deref() == Some("lanes");
    let backends = Backend::available();
    if lanes_mode {
        let len = 256 << 10;
        let buf = data(16 * len);
        let messages: Vec<&[u8]> = buf.chunks(len).collect();
        print!("{:>8}", "messages");
        for b in &backends {
            print!(" {:>12}", format!("{b:?}"));
        }
        println!(" {:>12}", "sha1_many");
        for n in 1..=16 {
            let batch = &messages[..n];
            print!("{n:>8}");
            for &b in &backends {
                print!(" {:>12.2}", measure(n * len, || drop(black_box(sha1_many_with(b, black_box(batch))))));
            }
            println!(" {:>12.2}", measure(n * len, || drop(black_box(sha1_many(black_box(batch))))));
        }
        return;
    }
    println!("GB/s on one core, median of {SAMPLES}");
    for len in [16 << 10, 256 << 10, 1 << 20] {
        let buf = data(16 * len);
        let messages: Vec<&[u8]> = buf.chunks(len).collect();
        println!("16 messages of {} KiB:", len >> 10);
        for &b in &backends {
            let rate = measure(16 * len, || drop(black_box(sha1_many_with(b, black_box(&messages)))));
            println!("  {:<12} {rate:6.2}", format!("{b:?}"));
        }
        let rate = measure(16 * len, || drop(black_box(sha1_many(black_box(&messages)))));
        println!("  {:<12} {rate:6.2}", "sha1_many");
    }
}
