//! Piece-level reads and writes over a torrent's files. Blocking: call from blocking threads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use bitswarm_storage::Layout;

pub struct Disk {
    layout: Layout,
    /// Files opened on first use: read-only until a write needs them writable.
    files: Vec<OnceLock<File>>,
    /// One writer per file at a time: ext4 serialises buffered writes to a file on its inode
    /// lock, where a second writer spins in the kernel; here it sleeps instead.
    write_locks: Vec<Mutex<()>>,
    writable: bool,
    create_lock: Mutex<()>,
}

impl Disk {
    /// `writable`: files are opened for writing and created (with their folders) when missing.
    /// Paths come from a validated torrent: every component is safe, so they stay under `dir`.
    pub fn new(layout: Layout, writable: bool) -> Disk {
        let files = layout.files.iter().map(|_| OnceLock::new()).collect();
        let write_locks = layout.files.iter().map(|_| Mutex::new(())).collect();
        Disk { layout, files, write_locks, writable, create_lock: Mutex::new(()) }
    }

    /// Creates every (non-padding) file that `wanted` says and that does not exist yet, empty
    /// ones included, so a finished download has exactly the torrent's files. An unwanted file
    /// is made only if a wanted piece reaches into it.
    pub fn create_all(&self, wanted: impl Fn(usize) -> bool) -> io::Result<()> {
        for i in 0..self.files.len() {
            if !self.layout.files[i].padding && wanted(i) {
                self.file(i)?;
            }
        }
        Ok(())
    }

    fn file(&self, i: usize) -> io::Result<&File> {
        if let Some(f) = self.files[i].get() {
            return Ok(f);
        }
        let _g = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = self.files[i].get() {
            return Ok(f);
        }
        let path = &self.layout.files[i].path;
        let named = |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
        let f = if self.writable {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| named(parent, e))?;
            }
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
        } else {
            File::open(path)
        }
        .map_err(|e| named(path, e))?;
        Ok(self.files[i].get_or_init(|| f))
    }

    /// Cuts every file that is longer than the torrent says down to its length, so a finished
    /// download holds exactly the torrent's bytes (a file that was there before may have had
    /// more).
    pub fn trim_files(&self) -> io::Result<()> {
        for (i, lf) in self.layout.files.iter().enumerate() {
            if lf.padding {
                continue;
            }
            let f = self.file(i)?;
            let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", lf.path.display()));
            if f.metadata().map_err(named)?.len() > lf.length {
                f.set_len(lf.length).map_err(named)?;
            }
        }
        Ok(())
    }

    /// Writes a whole verified piece.
    pub fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        let (offset, len) = self.layout.piece_range(index as usize);
        debug_assert_eq!(len as usize, data.len());
        let mut at = 0usize;
        for seg in self.layout.segments(offset, len) {
            let chunk = &data[at..at + seg.len as usize];
            at += seg.len as usize;
            if self.layout.files[seg.file].padding {
                continue;
            }
            let f = self.file(seg.file)?;
            let _one_writer = self.write_locks[seg.file].lock().unwrap_or_else(|p| p.into_inner());
            f.write_all_at(chunk, seg.file_offset).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", self.layout.files[seg.file].path.display()))
            })?;
        }
        Ok(())
    }

    /// Reads a whole piece into `buf` (resized to the piece's length).
    pub fn read_piece(&self, index: u32, buf: &mut Vec<u8>) -> io::Result<()> {
        let (offset, len) = self.layout.piece_range(index as usize);
        buf.resize(len as usize, 0);
        let mut at = 0usize;
        for seg in self.layout.segments(offset, len) {
            let chunk = &mut buf[at..at + seg.len as usize];
            at += seg.len as usize;
            if self.layout.files[seg.file].padding {
                chunk.fill(0);
                continue;
            }
            let f = self.file(seg.file)?;
            f.read_exact_at(chunk, seg.file_offset).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", self.layout.files[seg.file].path.display()))
            })?;
        }
        Ok(())
    }
}

/// Deletes a torrent's files under `dir` (the folder that holds its content), then the folders
/// they were in, those that are left empty, up to `dir` itself (which stays). Files that are
/// not there are skipped; errors are logged, not returned (what can go, goes).
pub fn delete_files(layout: &Layout, dir: &Path) {
    let mut folders = std::collections::BTreeSet::new();
    for f in layout.files.iter().filter(|f| !f.padding) {
        match std::fs::remove_file(&f.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: cannot delete: {e}", f.path.display()),
        }
        let mut p = f.path.parent();
        while let Some(folder) = p.filter(|p| p.starts_with(dir) && *p != dir) {
            folders.insert(folder.to_path_buf());
            p = folder.parent();
        }
    }
    // Deepest first; a folder that still holds something stays.
    for folder in folders.iter().rev() {
        let _ = std::fs::remove_dir(folder);
    }
}

/// Why a move failed, and whether the files it had moved were put back.
#[derive(Debug)]
pub struct MoveFailed {
    pub reason: String,
    /// Every file moved before the failure is back where it was (else some are at `to`).
    pub put_back: bool,
}

/// Moves a torrent's files from `old` (its layout under the folder `from`) to `new` (under
/// `to`): renamed where both are on one file system, else copied and then deleted. Files that
/// are not there are skipped; the folders left empty under `from` go. On an error the files
/// moved so far are moved back (only those: a file at `to` it did not move is left alone), a
/// copy cut short is removed (its original is whole until the copy is done), and the error
/// names the file.
pub fn move_files(old: &Layout, new: &Layout, from: &Path, to: &Path) -> Result<(), MoveFailed> {
    std::fs::create_dir_all(to).map_err(|e| MoveFailed { reason: format!("{}: {e}", to.display()), put_back: true })?;
    let mut moved: Vec<(&Path, &Path)> = Vec::new();
    for (a, b) in old.files.iter().zip(&new.files).filter(|(a, _)| !a.padding) {
        if !a.path.exists() {
            continue;
        }
        if let Err(reason) = move_file(&a.path, &b.path) {
            let put_back = moved.iter().rev().all(|(a, b)| move_file(b, a).is_ok());
            return Err(MoveFailed { reason, put_back });
        }
        moved.push((&a.path, &b.path));
    }
    delete_files(old, from);
    Ok(())
}

/// Moves one file: a rename, or across file systems a copy (removed if cut short) and then
/// the original deleted.
fn move_file(a: &Path, b: &Path) -> Result<(), String> {
    if let Some(parent) = b.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    if std::fs::rename(a, b).is_ok() {
        return Ok(());
    }
    if let Err(e) = std::fs::copy(a, b) {
        let _ = std::fs::remove_file(b);
        return Err(format!("{}: {e}", b.display()));
    }
    std::fs::remove_file(a).map_err(|e| format!("{}: {e}", a.display()))
}
