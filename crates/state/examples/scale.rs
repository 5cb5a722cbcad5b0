//! The figures in the crate documentation: `cargo run --release -p bitswarm-state --example scale [N] [DIR]`.
//!
//! N torrents (10,000 by default) shaped like 1 MiB single-file torrents: 64 pieces of 16 KiB,
//! so .torrent files of about 1,450 bytes (mostly piece hashes, which do not compress).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitswarm_state::{DB_FILE, FileStamp, InfoHash, Options, Pieces, Record, Resume, Store};

const METAINFO_BYTES: usize = 1_450;

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn record(n: u32, position: u32) -> Record {
    let mut hash = [0u8; 20];
    hash[..4].copy_from_slice(&n.to_be_bytes());
    hash[4..].copy_from_slice(&pseudo_random(u64::from(n) * 2 + 1, 16));
    Record {
        info_hash: InfoHash(hash),
        id: n + 1,
        name: format!("debian-13.{n}-amd64-netinst.iso"),
        metainfo: Some(Arc::from(pseudo_random(u64::from(n) * 2 + 3, METAINFO_BYTES))),
        magnet: None,
        download_dir: PathBuf::from("/srv/torrents/complete"),
        added_at: 1_765_000_000 + i64::from(n),
        queue_position: position,
        labels: vec!["linux".into()],
        settings: r#"{"seed_ratio_limit":2.0}"#.into(),
    }
}

fn resume(pieces: Pieces, generation: u64) -> Resume {
    Resume {
        pieces,
        files: vec![FileStamp { size: 1 << 20, mtime_ns: 1_765_000_000_000_000_000 }],
        running: true,
        uploaded: 5 << 20,
        downloaded: 1 << 20,
        corrupt: 0,
        seconds_downloading: 40,
        seconds_seeding: 86_400 + generation,
        done_date: Some(1_765_000_040),
        activity_date: Some(1_765_086_400),
    }
}

/// Bytes this process handed to write(2) and its kin, log and checkpoints alike (Linux).
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok())
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let t = f();
    println!("{what:<58} {:>9.1} ms", start.elapsed().as_secs_f64() * 1e3);
    t
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let kept = args.next().map(PathBuf::from);
    let temp = tempfile::tempdir().expect("temporary folder");
    let dir = kept.unwrap_or_else(|| temp.path().to_owned());
    let options = || Options { commit_interval: Duration::from_secs(3600), ..Options::default() };

    let (store, _) = Store::open_with(&dir, options()).expect("open");
    let records: Vec<Record> = (0..n).map(|i| record(i, i)).collect();
    let hashes: Vec<InfoHash> = records.iter().map(|r| r.info_hash).collect();
    time(&format!("{n} put_torrent (queue only)"), || {
        for r in records {
            store.put_torrent(r);
        }
    });
    time("  then flush (one transaction)", || store.flush().expect("flush"));

    let half = Pieces::from_bitfield(64, vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).expect("bitfield");
    time(&format!("{n} put_resume, 32 of 64 pieces, + flush"), || {
        for h in &hashes {
            store.put_resume(*h, resume(half.clone(), 0));
        }
        store.flush().expect("flush");
    });
    time(&format!("{n} put_resume, complete, + flush"), || {
        for h in &hashes {
            store.put_resume(*h, resume(Pieces::all(64), 1));
        }
        store.flush().expect("flush");
    });
    let moved: Vec<Record> = (0..n).map(|i| record(i, n - 1 - i)).collect();
    time(&format!("queue reversed: {n} put_torrent, same .torrent, + flush"), || {
        for r in moved {
            store.put_torrent(r);
        }
        store.flush().expect("flush");
    });
    // Steady state: a few torrents active, each saving its resume data every commit.
    // Over enough commits to include their share of checkpoints (one per 1,000 pages logged),
    // after a warm-up that lets the big batches above be checkpointed first.
    for active in [10, 100, 1000] {
        let commits = 300;
        for c in 0..commits / 3 {
            for h in hashes.iter().take(active) {
                store.put_resume(*h, resume(half.clone(), c));
            }
            store.flush().expect("flush");
        }
        let before = written_bytes();
        let start = Instant::now();
        for c in 0..commits {
            for (i, h) in hashes.iter().enumerate().take(active) {
                store.put_resume(*h, resume(half.clone(), 1000 + c * 7 + i as u64));
            }
            store.flush().expect("flush");
        }
        let per_commit = start.elapsed() / commits as u32;
        match (before, written_bytes()) {
            (Some(b), Some(a)) => println!(
                "{:<58} {:>9.2} ms, {:.0} KiB written",
                format!("a commit of {active} resume saves (mean of {commits})"),
                per_commit.as_secs_f64() * 1e3,
                (a - b) as f64 / commits as f64 / 1024.0
            ),
            _ => println!("{active} resume saves a commit: {per_commit:?}"),
        }
    }
    time("close (checkpoint)", || store.close().expect("close"));

    let mut opens = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let (store, loaded) = Store::open(&dir).expect("reopen");
        opens.push(start.elapsed());
        assert_eq!(loaded.torrents.len(), n as usize);
        assert!(loaded.torrents.iter().all(|t| t.resume.is_some()));
        drop(store);
    }
    opens.sort();
    println!(
        "{:<58} {:>9.1} ms (min {:.1}, max {:.1})",
        format!("open with {n} torrents, median of 7"),
        opens[3].as_secs_f64() * 1e3,
        opens[0].as_secs_f64() * 1e3,
        opens[6].as_secs_f64() * 1e3
    );

    let size = std::fs::metadata(dir.join(DB_FILE)).expect("database file").len();
    println!(
        "file {:.2} MiB: {} bytes a torrent, {} of them beyond its {METAINFO_BYTES} .torrent bytes",
        size as f64 / f64::from(1 << 20),
        size / u64::from(n),
        size / u64::from(n) - METAINFO_BYTES as u64
    );
}
