use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sha1::{Digest, Sha1};

use crate::Layout;

/// Bytes read per system call: small enough that the buffer stays in the core's L2 cache while
/// SHA-1 reads it again, large enough that calls are few.
const CHUNK: usize = 128 << 10;
/// Pieces handed to a worker at a time: contiguous runs keep file handles and read-ahead useful.
const BATCH_BYTES: u64 = 4 << 20;

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

/// Hashes every piece of `layout` on `threads` threads and calls `f(index, result)` for each
/// (from the worker threads, in no particular order). `done` counts bytes processed.
pub fn for_each_piece<F>(layout: &Layout, threads: usize, done: &AtomicU64, f: F)
where
    F: Fn(usize, Result<[u8; 20], PieceError>) + Sync,
{
    let count = layout.piece_count();
    let batch = (BATCH_BYTES / layout.piece_length).max(1) as usize;
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, count.div_ceil(batch).max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut w = Worker { layout, open: None, buf: vec![0; CHUNK] };
                loop {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    if start >= count {
                        break;
                    }
                    for index in start..(start + batch).min(count) {
                        let r = w.hash(index);
                        done.fetch_add(layout.piece_range(index).1, Ordering::Relaxed);
                        f(index, r);
                    }
                }
            });
        }
    });
}

struct Worker<'a> {
    layout: &'a Layout,
    open: Option<(usize, File)>,
    buf: Vec<u8>,
}

impl Worker<'_> {
    fn hash(&mut self, index: usize) -> Result<[u8; 20], PieceError> {
        let (offset, len) = self.layout.piece_range(index);
        let mut h = Sha1::new();
        for seg in self.layout.segments(offset, len) {
            let lf = &self.layout.files[seg.file];
            if lf.padding {
                let zeros = [0u8; 4096];
                let mut left = seg.len as usize;
                while left > 0 {
                    let n = left.min(zeros.len());
                    h.update(&zeros[..n]);
                    left -= n;
                }
                continue;
            }
            if self.open.as_ref().is_none_or(|(i, _)| *i != seg.file) {
                self.open = None;
                let f = File::open(&lf.path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => PieceError::Missing(lf.path.clone()),
                    _ => PieceError::Io(lf.path.clone(), e),
                })?;
                self.open = Some((seg.file, f));
            }
            let file = &self.open.as_ref().expect("opened above").1;
            let mut pos = seg.file_offset;
            let end = seg.file_offset + seg.len;
            while pos < end {
                let want = ((end - pos) as usize).min(self.buf.len());
                let n = match file.read_at(&mut self.buf[..want], pos) {
                    Ok(0) => return Err(PieceError::Short(lf.path.clone())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(PieceError::Io(lf.path.clone(), e)),
                };
                h.update(&self.buf[..n]);
                pos += n as u64;
            }
        }
        Ok(h.finalize().into())
    }
}

/// Hashes every piece for a new torrent; the first read failure is an error.
pub fn hash_pieces(layout: &Layout, threads: usize, done: &AtomicU64) -> Result<Vec<[u8; 20]>, PieceError> {
    let hashes = Mutex::new(vec![[0u8; 20]; layout.piece_count()]);
    let failure = Mutex::new(None);
    for_each_piece(layout, threads, done, |i, r| match r {
        Ok(h) => hashes.lock().unwrap_or_else(|p| p.into_inner())[i] = h,
        Err(e) => {
            failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(hashes.into_inner().unwrap_or_else(|p| p.into_inner())),
    }
}

/// Checks the data against `expected` piece hashes.
pub fn verify_pieces(layout: &Layout, expected: &[[u8; 20]], threads: usize, done: &AtomicU64) -> Vec<PieceState> {
    let out: Vec<std::sync::atomic::AtomicU8> =
        (0..layout.piece_count()).map(|_| std::sync::atomic::AtomicU8::new(0)).collect();
    for_each_piece(layout, threads, done, |i, r| {
        let state = match r {
            Ok(h) if h == expected[i] => 1,
            Ok(_) => 2,
            Err(_) => 3,
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
        Sha1::digest(b).into()
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
        let s = verify_pieces(&layout, &want, 2, &done);
        use PieceState::*;
        assert_eq!(s, vec![Good, Bad, Good, Good, Good, Missing, Missing]);
        std::fs::remove_file(&files[0].0).unwrap();
        let s = verify_pieces(&layout, &want, 2, &done);
        assert_eq!(&s[..3], &[Missing, Missing, Missing]);
        assert!(matches!(hash_pieces(&layout, 2, &done), Err(PieceError::Missing(_))));
    }
}
