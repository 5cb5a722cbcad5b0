//! The lock that keeps a second process out of a state folder.
//!
//! SQLite's own locks protect single transactions, not ownership: two daemons on one folder
//! would both run, each overwriting the other's resume data. An advisory `flock` on
//! `state.lock` is held for the Store's whole life instead; the kernel drops it when the
//! process dies, `kill -9` included, so a crash never leaves a stale lock behind (a pid file
//! would).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

use crate::StateError;

/// Takes the lock or says who holds it. The file holds the owner's pid, for the message only.
pub(crate) fn acquire(path: &Path) -> Result<File, StateError> {
    let lock_err = |e| StateError::Lock { path: path.to_owned(), source: Arc::new(e) };
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(StateError::Locked { path: path.parent().unwrap_or(path).to_owned(), holder });
        }
        Err(TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    // Best effort: the pid only improves the message a second process prints.
    let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}
