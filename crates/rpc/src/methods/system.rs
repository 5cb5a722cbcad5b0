//! free-space, port-test, blocklist-update and group-get.

use std::ffi::CString;
use std::io;

use serde::Serialize;

use crate::backend::{Backend, strerror};
use crate::coerce::{Args, ArgsExt};
use crate::envelope::Reply;
use crate::methods::is_absolute;

/// Free and total bytes of the file system holding `path` (`statvfs`; free as an
/// unprivileged user sees it, `f_bavail`, as Transmission reports it).
pub(crate) fn capacity(path: &str) -> io::Result<(u64, u64)> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c is a NUL-terminated path and st points to writable space for one statvfs,
    // which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised st.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (c_ulong, fsblkcnt_t); all fit in u64.
    #[allow(clippy::useless_conversion)]
    let (frsize, avail, blocks) = (u64::from(st.f_frsize), u64::from(st.f_bavail), u64::from(st.f_blocks));
    Ok((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

/// [`capacity`] off the async threads: a hung network mount must not stall the server.
pub(crate) async fn capacity_async(path: String) -> io::Result<(u64, u64)> {
    tokio::task::spawn_blocking(move || capacity(&path)).await.unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
}

#[derive(Serialize)]
struct FreeSpace<'a> {
    path: &'a str,
    #[serde(rename = "size-bytes")]
    size_bytes: i64,
    total_size: i64,
}

/// free-space: `{"path": <echo>, "size-bytes": free, "total_size": total}`; on a failed
/// `statvfs` the error text, with -1 for both sizes.
pub(crate) async fn free_space(args: &Args) -> Reply {
    let Some(path) = args.str_of("path") else { return Reply::error("directory path argument is missing") };
    if !is_absolute(path) {
        return Reply::error("directory path is not absolute");
    }
    match capacity_async(path.to_owned()).await {
        Ok((free, total)) => Reply::with(&FreeSpace {
            path,
            size_bytes: i64::try_from(free).unwrap_or(i64::MAX),
            total_size: i64::try_from(total).unwrap_or(i64::MAX),
        }),
        Err(e) => Reply::error_with(strerror(&e), &FreeSpace { path, size_bytes: -1, total_size: -1 }),
    }
}

/// port-test: the backend's answer, or Transmission's `Couldn't test port: …` error.
pub(crate) async fn port_test<B: Backend>(backend: &B) -> Reply {
    #[derive(Serialize)]
    struct PortTest {
        #[serde(rename = "port-is-open")]
        port_is_open: bool,
    }
    match backend.port_test().await {
        Ok(open) => Reply::with(&PortTest { port_is_open: open }),
        Err(e) => Reply::error(format!("Couldn't test port: {e}")),
    }
}

/// blocklist-update: the backend fetches `blocklist-url` and keeps the list; its rules, or
/// Transmission's `gotNewBlocklist: …` error.
pub(crate) async fn blocklist_update<B: Backend>(backend: &B) -> Reply {
    match backend.blocklist_update().await {
        Ok(n) => Reply::with(&serde_json::json!({"blocklist-size": n})),
        Err(e) => Reply::error(format!("gotNewBlocklist: {e}")),
    }
}

/// group-get: bitswarm has no bandwidth groups.
pub(crate) fn group_get() -> Reply {
    Reply::with(&serde_json::json!({"group": []}))
}
