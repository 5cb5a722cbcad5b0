use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::Layout;

/// Bytes read per lane per round: with 8 lanes the buffers stay in the core's L2 cache while
/// SHA-1 reads them again, and system calls stay few.
const CHUNK: usize = 64 << 10;

/// Why a piece could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("{0}: missing")]
    Missing(PathBuf),
    #[error("{0}: shorter than the torrent says")]
    Short(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// The state of a piece's data on disk against its expected hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceState {
    Good,
    Bad,
    Missing,
}

/// A piece's data as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    pub digest: [u8; 20],
    /// Every byte is zero: in a file made to its full size before the data came, a piece that
    /// was never written.
    pub zeros: bool,
}

/// Hashes every piece of `layout` on `threads` threads and calls `f(index, result)` for each
/// (from the worker threads, in no particular order). `done` counts bytes processed. Once
/// `stop` is set, the workers end after the pieces they are reading (a batch each), leaving the
/// rest unvisited.
///
/// Each worker hashes a run of consecutive pieces at once, one per SIMD lane of the multi-buffer
/// SHA-1 (`bitswarm-piecehash`), reading a chunk of every piece per round.
pub fn for_each_piece<F>(layout: &Layout, threads: usize, done: &AtomicU64, stop: &AtomicBool, f: F)
where
    F: Fn(usize, Result<Hashed, PieceError>) + Sync,
{
    let all = 0..layout.piece_count();
    for_pieces_in(layout, std::slice::from_ref(&all), threads, done, stop, f);
}

/// [`for_each_piece`] over the pieces in `ranges` only (ascending, not overlapping).
pub fn for_pieces_in<F>(
    layout: &Layout,
    ranges: &[std::ops::Range<usize>],
    threads: usize,
    done: &AtomicU64,
    stop: &AtomicBool,
    f: F,
) where
    F: Fn(usize, Result<Hashed, PieceError>) + Sync,
{
    let batch = bitswarm_piecehash::best_lanes().max(1);
    // The work: runs of up to `batch` consecutive pieces, taken in turn by the threads.
    let runs: Vec<std::ops::Range<usize>> =
        ranges.iter().flat_map(|r| (r.start..r.end).step_by(batch).map(move |s| s..(s + batch).min(r.end))).collect();
    let next = AtomicUsize::new(0);
    // A thread more for every 4 MiB at most: starting one costs more than hashing a small
    // torrent (many small torrents are checked side by side instead).
    let bytes: u64 = ranges.iter().map(|r| (r.end - r.start) as u64 * layout.piece_length).sum();
    let threads = threads.clamp(1, runs.len().max(1)).min(bytes.div_ceil(4 << 20).max(1) as usize);
    let work = || {
        let lanes = LANES.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        let mut w = Worker { layout, lanes };
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            if at >= runs.len() || stop.load(Ordering::Relaxed) {
                break;
            }
            let run = runs[at].clone();
            for (index, r) in run.clone().zip(w.hash_batch(run)) {
                done.fetch_add(layout.piece_range(index).1, Ordering::Relaxed);
                f(index, r);
            }
        }
        // The buffers wait for the next check (many small torrents are checked one after
        // the other, on whatever threads); the files close.
        for l in &mut w.lanes {
            l.open = None;
        }
        LANES.lock().unwrap_or_else(|p| p.into_inner()).push(w.lanes);
    };
    CHECKS.fetch_add(1, Ordering::AcqRel);
    // One run (a small torrent): on this thread, without starting one.
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    // The last check of a burst frees them: an idle process keeps no read buffers.
    if CHECKS.fetch_sub(1, Ordering::AcqRel) == 1 {
        let idle = std::mem::take(&mut *LANES.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }
}

/// Read buffers between checks: one set for each thread that was hashing at once.
static LANES: std::sync::Mutex<Vec<Vec<Lane>>> = std::sync::Mutex::new(Vec::new());
/// Checks under way.
static CHECKS: AtomicUsize = AtomicUsize::new(0);

/// One piece being read: its read position, a buffer, and the file it last read from.
struct Lane {
    buf: Vec<u8>,
    open: Option<(usize, File)>,
}

struct Worker<'a> {
    layout: &'a Layout,
    lanes: Vec<Lane>,
}

impl Worker<'_> {
    fn hash_batch(&mut self, pieces: std::ops::Range<usize>) -> Vec<Result<Hashed, PieceError>> {
        let n = pieces.len();
        while self.lanes.len() < n {
            self.lanes.push(Lane { buf: vec![0; CHUNK], open: None });
        }
        let ranges: Vec<(u64, u64)> = pieces.clone().map(|i| self.layout.piece_range(i)).collect();
        let mut errors: Vec<Option<PieceError>> = (0..n).map(|_| None).collect();
        let longest = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let mut hasher = bitswarm_piecehash::Sha1Lanes::new(n);
        let mut tails: Vec<Vec<u8>> = vec![Vec::new(); n];
        // Until a lane reads a byte that is not zero (at once, for real data).
        let mut zeros = vec![true; n];
        let mut pos = 0u64;
        loop {
            let last = pos + CHUNK as u64 >= longest;
            let mut lens = vec![0usize; n];
            for (i, lane) in self.lanes[..n].iter_mut().enumerate() {
                let (start, len) = ranges[i];
                let want = len.saturating_sub(pos).min(CHUNK as u64) as usize;
                if want == 0 || errors[i].is_some() {
                    continue;
                }
                match read_range(self.layout, lane, start + pos, want) {
                    Ok(()) => {
                        lens[i] = want;
                        zeros[i] = zeros[i] && lane.buf[..want].iter().all(|&b| b == 0);
                    }
                    Err(e) => errors[i] = Some(e),
                }
            }
            if last {
                // A lane that ended in an earlier round gives its kept tail now.
                let chunks: Vec<&[u8]> =
                    (0..n).map(|i| if lens[i] > 0 { &self.lanes[i].buf[..lens[i]] } else { &tails[i][..] }).collect();
                let digests = hasher.finalize(&chunks);
                return digests
                    .into_iter()
                    .zip(errors)
                    .zip(zeros)
                    .map(|((digest, e), zeros)| match e {
                        Some(e) => Err(e),
                        None => Ok(Hashed { digest, zeros }),
                    })
                    .collect();
            }
            // Only whole 64-byte blocks may go through `update`: a lane whose (shorter, last)
            // piece ends mid-block in this round keeps the rest for `finalize`.
            for i in 0..n {
                let whole = lens[i] / 64 * 64;
                if whole < lens[i] {
                    tails[i] = self.lanes[i].buf[whole..lens[i]].to_vec();
                    lens[i] = whole;
                }
            }
            let chunks: Vec<&[u8]> = (0..n).map(|i| &self.lanes[i].buf[..lens[i]]).collect();
            hasher.update(&chunks);
            pos += CHUNK as u64;
        }
    }
}

/// Reads `len` bytes at `offset` of the piece space into the lane's buffer.
fn read_range(layout: &Layout, lane: &mut Lane, offset: u64, len: usize) -> Result<(), PieceError> {
    let mut at = 0usize;
    for seg in layout.segments(offset, len as u64) {
        let lf = &layout.files[seg.file];
        let dst = &mut lane.buf[at..at + seg.len as usize];
        at += seg.len as usize;
        if lf.padding {
            dst.fill(0);
            continue;
        }
        if lane.open.as_ref().is_none_or(|(i, _)| *i != seg.file) {
            lane.open = None;
            let f = File::open(&lf.path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => PieceError::Missing(lf.path.clone()),
                _ => PieceError::Io(lf.path.clone(), e),
            })?;
            lane.open = Some((seg.file, f));
        }
        let file = &lane.open.as_ref().expect("opened above").1;
        let mut done = 0usize;
        while done < dst.len() {
            match file.read_at(&mut dst[done..], seg.file_offset + done as u64) {
                Ok(0) => return Err(PieceError::Short(lf.path.clone())),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PieceError::Io(lf.path.clone(), e)),
            }
        }
    }
    Ok(())
}

/// Hashes every piece for a new torrent; the first read failure is an error.
pub fn hash_pieces(layout: &Layout, threads: usize, done: &AtomicU64) -> Result<Vec<[u8; 20]>, PieceError> {
    let hashes = Mutex::new(vec![[0u8; 20]; layout.piece_count()]);
    let failure = Mutex::new(None);
    for_each_piece(layout, threads, done, &AtomicBool::new(false), |i, r| match r {
        Ok(h) => hashes.lock().unwrap_or_else(|p| p.into_inner())[i] = h.digest,
        Err(e) => {
            failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(hashes.into_inner().unwrap_or_else(|p| p.into_inner())),
    }
}

/// Checks the data against `expected` piece hashes. A piece that cannot be read whole, or whose
/// bytes are all zeros and do not match (never written into a file made to its full size), is
/// missing; one whose bytes differ otherwise is bad. Once `stop` is set the check ends soon,
/// and the pieces it did not reach are missing.
pub fn verify_pieces(
    layout: &Layout,
    expected: &[[u8; 20]],
    threads: usize,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Vec<PieceState> {
    let all = 0..layout.piece_count();
    verify_pieces_in(layout, expected, std::slice::from_ref(&all), threads, done, stop)
}

/// [`verify_pieces`] of the pieces in `ranges` (ascending, not overlapping); the others are
/// reported missing.
pub fn verify_pieces_in(
    layout: &Layout,
    expected: &[[u8; 20]],
    ranges: &[std::ops::Range<usize>],
    threads: usize,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Vec<PieceState> {
    let out: Vec<std::sync::atomic::AtomicU8> =
        (0..layout.piece_count()).map(|_| std::sync::atomic::AtomicU8::new(0)).collect();
    for_pieces_in(layout, ranges, threads, done, stop, |i, r| {
        let state = match r {
            Ok(h) if h.digest == expected[i] => 1,
            Ok(h) if !h.zeros => 2,
            Ok(_) | Err(_) => 3,
        };
        out[i].store(state, Ordering::Relaxed);
    });
    out.iter()
        .map(|s| match s.load(Ordering::Relaxed) {
            1 => PieceState::Good,
            2 => PieceState::Bad,
            _ => PieceState::Missing,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1(b: &[u8]) -> [u8; 20] {
        use sha1::Digest;
        sha1::Sha1::digest(b).into()
    }

    #[test]
    fn batches_with_a_short_last_piece() {
        let t = tempfile::tempdir().unwrap();
        // Pieces of 256 KiB (four 64 KiB rounds); lengths that end the last piece mid-block in
        // each round, on a block boundary, and on a round boundary.
        for len in [1usize, 63, 64, 65_537, 262_144 * 3 + 100_001, 262_144 * 9 + 131_072, 262_144 * 10 - 1] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect();
            let p = t.path().join("f");
            std::fs::write(&p, &data).unwrap();
            let layout = Layout::from_files([(p, len as u64)], 262_144);
            let want: Vec<[u8; 20]> = data.chunks(262_144).map(sha1).collect();
            assert_eq!(hash_pieces(&layout, 2, &AtomicU64::new(0)).unwrap(), want, "length {len}");
        }
    }

    #[test]
    fn hashes_across_files_and_reports_damage() {
        let t = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let cuts = [0usize, 33_333, 33_333, 70_001, 100_000];
        let mut files = Vec::new();
        for (i, w) in cuts.windows(2).enumerate() {
            let p = t.path().join(format!("f{i}"));
            std::fs::write(&p, &data[w[0]..w[1]]).unwrap();
            files.push((p, (w[1] - w[0]) as u64));
        }
        let layout = Layout::from_files(files.clone(), 16384);
        let want: Vec<[u8; 20]> = data.chunks(16384).map(sha1).collect();
        let done = AtomicU64::new(0);
        for threads in [1, 2, 5] {
            assert_eq!(hash_pieces(&layout, threads, &done).unwrap(), want);
        }
        assert_eq!(done.load(Ordering::Relaxed), 3 * 100_000);

        // Damage: flip a byte in piece 1, truncate the last file, remove nothing yet.
        let mut f1 = std::fs::read(&files[0].0).unwrap();
        f1[20_000] ^= 1;
        std::fs::write(&files[0].0, f1).unwrap();
        std::fs::write(&files[3].0, &data[70_001..90_000]).unwrap();
        let no = AtomicBool::new(false);
        let s = verify_pieces(&layout, &want, 2, &done, &no);
        use PieceState::*;
        assert_eq!(s, vec![Good, Bad, Good, Good, Good, Missing, Missing]);
        // Zeros where a piece should be: never written (a file made to its full size first).
        // Zeros over part of a piece are damage.
        let mut f2 = std::fs::read(&files[2].0).unwrap();
        f2[..36_000].fill(0);
        std::fs::write(&files[2].0, f2).unwrap();
        let s = verify_pieces(&layout, &want, 2, &done, &no);
        assert_eq!(s, vec![Good, Bad, Bad, Missing, Bad, Missing, Missing]);
        // Some pieces only.
        let some = verify_pieces_in(&layout, &want, &[0..1, 3..5], 2, &done, &no);
        assert_eq!(some, vec![Good, Missing, Missing, Missing, Bad, Missing, Missing]);
        // A stopped check visits nothing more.
        let s = verify_pieces(&layout, &want, 2, &done, &AtomicBool::new(true));
        assert_eq!(s, vec![Missing; 7]);
        std::fs::remove_file(&files[0].0).unwrap();
        let s = verify_pieces(&layout, &want, 2, &done, &no);
        assert_eq!(&s[..3], &[Missing, Missing, Missing]);
        assert!(matches!(hash_pieces(&layout, 2, &done), Err(PieceError::Missing(_))));
    }
}
