//! Making a torrent on the daemon's host (bitswarm-torrent-create): the path is checked to lie
//! in a folder the configuration allows (`daemon.create_dirs`), its files are hashed on the
//! blocking threads while the job reports how far it got, and the torrent is added seeding its
//! data where it is (resume data vouches for every piece, so it is not hashed twice).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bitswarm_metainfo::{Metainfo, TorrentBuilder, auto_piece_length};
use bitswarm_peer::{AddSource, AddTorrent, FileStamp, Resume};
use bitswarm_rpc::backend::{BackendError, CreateJob, CreateRequest, CreateState, TorrentRef};
use bitswarm_storage::{Layout, WalkedFile, hash_pieces, walk};
use bitswarm_wire::Bitfield;

use crate::Daemon;

/// Torrents made at once; more are refused until one is done (each reads its data whole).
const MAX_RUNNING: usize = 2;
/// Finished jobs kept for their status (the oldest go first).
const MAX_KEPT: usize = 32;

/// The jobs, oldest first.
#[derive(Default)]
pub(crate) struct Jobs {
    next: u32,
    list: VecDeque<Entry>,
}

struct Entry {
    job: CreateJob,
    /// Bytes hashed, moved by the hashing threads.
    hashed: Arc<AtomicU64>,
}

/// What is known before hashing: the files, checked, and where the torrent's data lies.
struct Plan {
    name: String,
    is_dir: bool,
    files: Vec<WalkedFile>,
    total: u64,
    /// The folder that holds the file or folder (the torrent's download folder).
    dir: PathBuf,
    /// Each file's size and modification time before hashing: a file changed meanwhile is
    /// checked again when the torrent is added.
    stamps: Vec<Option<FileStamp>>,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(FileStamp { size: m.len(), mtime_ns: mtime.as_nanos() as i64 })
}

/// Resolves `path` and checks that it, and every file under it (symbolic links followed),
/// lies in one of `allowed`. Blocks (reads the file system).
fn plan(path: &Path, allowed: &[PathBuf]) -> Result<Plan, String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {}", path.display(), io_text(&e)))?;
    let roots: Vec<PathBuf> = allowed.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
    let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    let listed = || allowed.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    if !inside(&real) {
        return Err(format!(
            "{}: not in a folder torrents may be made from ({}; daemon.create_dirs)",
            path.display(),
            listed()
        ));
    }
    let (is_dir, files) = walk(&real).map_err(|e| e.to_string())?;
    for f in &files {
        let target =
            std::fs::canonicalize(&f.disk_path).map_err(|e| format!("{}: {}", f.disk_path.display(), io_text(&e)))?;
        if !inside(&target) {
            return Err(format!(
                "{}: leads to {}, outside the folders torrents may be made from ({}; daemon.create_dirs)",
                f.disk_path.display(),
                target.display(),
                listed()
            ));
        }
    }
    let name = match real.file_name().and_then(|n| n.to_str()) {
        Some(n) => n.to_owned(),
        None => return Err(format!("{}: the name must be UTF-8", path.display())),
    };
    let total: u64 = files.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(format!("{}: no data to share (all files are empty)", path.display()));
    }
    let dir = real.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let stamps = files.iter().map(|f| stamp(&f.disk_path)).collect();
    Ok(Plan { name, is_dir, files, total, dir, stamps })
}

/// An I/O error as `strerror` says it (`No such file or directory`).
fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => BackendError::Io(std::io::Error::from_raw_os_error(code)).to_string(),
        None => e.to_string(),
    }
}

/// Hashes the plan's files and builds the torrent. Blocks.
fn build(plan: &Plan, r: &CreateRequest, hashed: &AtomicU64) -> Result<Metainfo, String> {
    let piece_length = r.piece_size.unwrap_or_else(|| auto_piece_length(plan.total));
    let layout = Layout::from_files(plan.files.iter().map(|f| (f.disk_path.clone(), f.length)), piece_length);
    // Half the cores: the peers keep theirs.
    let threads = (bitswarm_storage::cores() / 2).max(1);
    let pieces =
        hash_pieces(&layout, threads, hashed).map_err(|e| format!("{e} (did the data change while hashing?)"))?;
    let builder = TorrentBuilder {
        name: plan.name.clone(),
        piece_length,
        pieces,
        files: plan.is_dir.then(|| plan.files.iter().map(|f| (f.components.clone(), f.length)).collect()),
        length: plan.total,
        private: r.private,
        source: r.source.clone(),
        trackers: r.trackers.clone(),
        web_seeds: Vec::new(),
        comment: r.comment.clone(),
        created_by: Some(concat!("bitswarm ", env!("CARGO_PKG_VERSION")).to_owned()),
        creation_date: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs() as i64),
    };
    let (bytes, _) = builder.build();
    Metainfo::parse(&bytes).map_err(|e| format!("{}: {e}", plan.name))
}

impl Daemon {
    fn set_job(&self, job: u32, state: CreateState) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = jobs.list.iter_mut().find(|e| e.job.job == job) {
            e.job.hashed = e.hashed.load(Ordering::Relaxed);
            e.job.state = state;
        }
    }

    /// Checks the request, then makes the torrent in the background; returns its job.
    pub(crate) async fn create_torrent(&self, r: CreateRequest) -> Result<CreateJob, BackendError> {
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let running = jobs.list.iter().filter(|e| e.job.state == CreateState::Hashing).count();
            if running >= MAX_RUNNING {
                return Err(BackendError::Other(format!(
                    "{running} torrents are being made already: try again when one is done"
                )));
            }
        }
        let me = self.me.upgrade().ok_or_else(|| BackendError::Other("the daemon is stopping".into()))?;
        let allowed = self.create_dirs.clone();
        let path = PathBuf::from(&r.path);
        let plan = tokio::task::spawn_blocking(move || plan(&path, &allowed))
            .await
            .map_err(|e| BackendError::Other(e.to_string()))?
            .map_err(BackendError::Other)?;
        let hashed = Arc::new(AtomicU64::new(0));
        let job = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            // Again: others may have started while this one's files were looked at.
            if jobs.list.iter().filter(|e| e.job.state == CreateState::Hashing).count() >= MAX_RUNNING {
                return Err(BackendError::Other(format!(
                    "{MAX_RUNNING} torrents are being made already: try again when one is done"
                )));
            }
            jobs.next += 1;
            let job = CreateJob {
                job: jobs.next,
                path: r.path.clone(),
                name: plan.name.clone(),
                hashed: 0,
                total: plan.total,
                state: CreateState::Hashing,
            };
            jobs.list.push_back(Entry { job: job.clone(), hashed: hashed.clone() });
            while jobs.list.len() > MAX_KEPT {
                match jobs.list.iter().position(|e| e.job.state != CreateState::Hashing) {
                    Some(i) => drop(jobs.list.remove(i)),
                    None => break,
                }
            }
            job
        };
        let id = job.job;
        tokio::spawn(async move {
            let h2 = hashed.clone();
            let built = tokio::task::spawn_blocking(move || {
                let meta = build(&plan, &r, &h2)?;
                Ok::<_, String>((meta, plan))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            let state = match built {
                Ok((meta, plan)) => match me.add_created(meta, plan) {
                    Ok(s) => s,
                    Err(e) => CreateState::Failed(e),
                },
                Err(e) => CreateState::Failed(e),
            };
            if let CreateState::Failed(e) = &state {
                tracing::warn!("torrent-create: {e}");
            }
            me.set_job(id, state);
        });
        Ok(job)
    }

    /// Adds a torrent just made, seeding the data it was made of.
    fn add_created(&self, meta: Metainfo, plan: Plan) -> Result<CreateState, String> {
        let magnet_link = meta.magnet().to_string();
        let pieces = meta.info.piece_count();
        let mut add = AddTorrent::new(AddSource::Metainfo(Arc::new(meta)), plan.dir);
        add.resume = Some(Resume {
            have: Bitfield::full(pieces),
            files: plan.stamps,
            downloaded: 0,
            uploaded: 0,
            corrupt: 0,
            seconds_downloading: 0,
            seconds_seeding: 0,
            done_at: Some(SystemTime::now()),
            activity_at: None,
            running: true,
        });
        let h = match self.session.add(add) {
            Ok(h) => {
                self.save_record(&h);
                h
            }
            // Made before: that torrent it is.
            Err(bitswarm_peer::AddError::Duplicate(h)) => h,
        };
        let torrent = TorrentRef { id: h.id(), info_hash: bitswarm_rpc::InfoHash(h.info_hash().0), name: h.name() };
        tracing::info!("torrent-create: {} made, seeding from {}", torrent.name, h.dir().display());
        Ok(CreateState::Done { torrent, magnet_link })
    }

    /// Every job, with how far each got.
    pub(crate) fn create_jobs(&self) -> Vec<CreateJob> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.list
            .iter()
            .map(|e| {
                let mut j = e.job.clone();
                if j.state == CreateState::Hashing {
                    j.hashed = e.hashed.load(Ordering::Relaxed);
                }
                j
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_refuses_paths_outside_the_allowed_folders_and_links_out_of_them() {
        let t = tempfile::tempdir().unwrap();
        let allowed = t.path().join("share");
        std::fs::create_dir_all(allowed.join("album/cd1")).unwrap();
        std::fs::write(allowed.join("album/cd1/a.flac"), b"abc").unwrap();
        std::fs::write(allowed.join("album/b.txt"), b"de").unwrap();
        std::fs::write(t.path().join("secret"), b"x").unwrap();
        let ok = plan(&allowed.join("album"), std::slice::from_ref(&allowed)).unwrap();
        assert_eq!((ok.name.as_str(), ok.is_dir, ok.total, ok.files.len()), ("album", true, 5, 2));
        assert_eq!(ok.dir, std::fs::canonicalize(&allowed).unwrap());
        // Outside, also through `..`.
        let e = plan(&t.path().join("secret"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.contains("not in a folder torrents may be made from"), "{e}");
        let e = plan(&allowed.join("../secret"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.contains("not in a folder torrents may be made from"), "{e}");
        let e = plan(Path::new("/etc"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.starts_with("/etc: not in a folder"), "{e}");
        // A link inside that leads out: refused, naming it.
        std::os::unix::fs::symlink(t.path().join("secret"), allowed.join("album/link")).unwrap();
        let e = plan(&allowed.join("album"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.contains("album/link: leads to") && e.contains("outside"), "{e}");
        // A link to the outside given as the path itself.
        std::os::unix::fs::symlink(t.path().join("secret"), allowed.join("direct")).unwrap();
        let e = plan(&allowed.join("direct"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.contains("not in a folder"), "{e}");
        // Missing, and empty.
        let e = plan(&allowed.join("nothing"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.ends_with("nothing: No such file or directory"), "{e}");
        std::fs::write(allowed.join("empty"), b"").unwrap();
        let e = plan(&allowed.join("empty"), std::slice::from_ref(&allowed)).err().unwrap();
        assert!(e.contains("no data to share"), "{e}");
    }

    #[test]
    fn build_hashes_and_counts() {
        let t = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(t.path().join("f.bin"), &data).unwrap();
        let p = plan(&t.path().join("f.bin"), &[t.path().to_owned()]).unwrap();
        let r = CreateRequest {
            path: String::new(),
            trackers: vec![vec!["http://127.0.0.1:1/announce".into()]],
            piece_size: Some(16 << 10),
            private: true,
            comment: Some("c".into()),
            source: None,
        };
        let hashed = AtomicU64::new(0);
        let m = build(&p, &r, &hashed).unwrap();
        assert_eq!(hashed.load(Ordering::Relaxed), 100_000);
        assert_eq!((m.info.name.as_str(), m.info.total_length, m.info.piece_count()), ("f.bin", 100_000, 7));
        assert!(m.info.private);
        assert_eq!(m.comment.as_deref(), Some("c"));
        // The pieces are those of the data where it is.
        let layout = Layout::new(&m.info, &p.dir);
        let states = bitswarm_storage::verify_pieces(
            &layout,
            &m.info.pieces,
            1,
            &AtomicU64::new(0),
            &std::sync::atomic::AtomicBool::new(false),
        );
        assert!(states.iter().all(|s| *s == bitswarm_storage::PieceState::Good), "{states:?}");
    }
}
