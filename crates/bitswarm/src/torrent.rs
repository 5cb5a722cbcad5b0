//! `bitswarm torrent …`: create, show, verify, magnet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

use bitswarm_metainfo::{Metainfo, TorrentBuilder, auto_piece_length};
use bitswarm_storage::{Layout, PieceState, cores, hash_pieces, verify_pieces, walk};
use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use crate::Failure;
use crate::progress::{self, Mode};

#[derive(Subcommand)]
pub enum TorrentCommand {
    /// Make a .torrent file from a file or a folder.
    Create(CreateArgs),
    /// Print what a .torrent file holds.
    Show(ShowArgs),
    /// Check data on disk against a .torrent file's piece hashes.
    Verify(VerifyArgs),
    /// Print a .torrent file's magnet link.
    Magnet(MagnetArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The file or folder to share. Folders are walked in sorted order; hidden files are
    /// included, symbolic links followed, empty files kept.
    pub path: PathBuf,
    /// Where to write the torrent [default: NAME.torrent in the current folder].
    #[arg(short, long, value_name = "OUT.torrent")]
    pub output: Option<PathBuf>,
    /// Tracker announce URL (http, https or udp). Each -t makes a tier of its own; give several
    /// URLs separated by commas in one -t to put them in the same tier.
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Mark the torrent private (BEP 27): peers only from its trackers.
    #[arg(long)]
    pub private: bool,
    /// Piece size in bytes, a power of two from 16 KiB to 64 MiB; K and M suffixes accepted
    /// (256K, 1M) [default: chosen for about 1,000-2,000 pieces].
    #[arg(long, value_name = "BYTES", value_parser = parse_piece_size)]
    pub piece_size: Option<u64>,
    /// A comment stored in the torrent.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// A web seed URL (BEP 19); repeatable.
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// A `source` tag inside the info dictionary (changes the info-hash; used by private trackers).
    #[arg(long, value_name = "TEXT")]
    pub source: Option<String>,
    /// Leave out the creation date (for reproducible output).
    #[arg(long)]
    pub no_date: bool,
    /// Overwrite OUT if it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Hashing threads [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    pub file: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    pub file: PathBuf,
    /// The folder that holds the torrent's content (the file, or the top folder NAME).
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// Hashing threads [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct MagnetArgs {
    pub file: PathBuf,
}

pub fn run(cmd: TorrentCommand) -> Result<(), Failure> {
    match cmd {
        TorrentCommand::Create(a) => create(a),
        TorrentCommand::Show(a) => show(a),
        TorrentCommand::Verify(a) => verify(a),
        TorrentCommand::Magnet(a) => {
            let m = load(&a.file)?;
            outln!("{}", m.magnet());
            Ok(())
        }
    }
}

fn parse_piece_size(s: &str) -> Result<u64, String> {
    let n = crate::units::parse_bytes(s)?;
    if !n.is_power_of_two() || !((16 << 10)..=(64 << 20)).contains(&n) {
        return Err(format!("{s}: the piece size must be a power of two from 16K to 64M"));
    }
    Ok(n)
}

/// The largest .torrent file read unless `--max-torrent-size` says otherwise: room for the most
/// pieces a torrent may have (2,097,152, 40 MiB of hashes) and its files.
pub const DEFAULT_MAX_TORRENT_SIZE: u64 = 64 << 20;

/// `--max-torrent-size`, set once by `main`.
pub static MAX_TORRENT_SIZE: AtomicU64 = AtomicU64::new(DEFAULT_MAX_TORRENT_SIZE);

/// Reads and parses a .torrent file; errors name the file. At most `--max-torrent-size` bytes
/// are read (a file that never ends, such as /dev/zero or a FIFO, is refused at the cap), and
/// parsing is bounded too (see `Metainfo::parse`).
pub fn load(path: &Path) -> Result<Metainfo, Failure> {
    let bytes = read_torrent_file(path)?;
    Metainfo::parse(&bytes).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// The bytes of a .torrent file, refused past the cap.
pub fn read_torrent_file(path: &Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let max = MAX_TORRENT_SIZE.load(std::sync::atomic::Ordering::Relaxed);
    let fail = |e: std::io::Error| Failure::usage(format!("{}: {e}", path.display()));
    let f = std::fs::File::open(path).map_err(fail)?;
    let hint = f.metadata().map_or(0, |m| m.len()).min(max) as usize;
    let mut bytes = Vec::with_capacity(hint + 1);
    f.take(max + 1).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 > max {
        return Err(Failure::usage(format!(
            "{}: more than {} ({max} bytes), the most a .torrent file may be here; \
             --max-torrent-size raises the limit",
            path.display(),
            HumanBytes(max)
        )));
    }
    Ok(bytes)
}

fn check_tracker_url(u: &str) -> Result<(), Failure> {
    let ok = ["http://", "https://", "udp://"].iter().any(|p| u.len() > p.len() && u.starts_with(p));
    if ok {
        Ok(())
    } else {
        Err(Failure::usage(format!("{u:?}: a tracker URL starts with http://, https:// or udp://")))
    }
}

fn create(a: CreateArgs) -> Result<(), Failure> {
    let mut tiers = Vec::new();
    for t in &a.trackers {
        let tier: Vec<String> = t.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
        for u in &tier {
            check_tracker_url(u)?;
        }
        if !tier.is_empty() {
            tiers.push(tier);
        }
    }
    for u in &a.web_seeds {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(Failure::usage(format!("{u:?}: a web seed URL starts with http:// or https://")));
        }
    }

    let out_for = |name: &str| a.output.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.torrent")));
    let spec = Spec {
        trackers: tiers,
        private: a.private,
        piece_size: a.piece_size,
        comment: a.comment,
        web_seeds: a.web_seeds,
        source: a.source,
        date: !a.no_date,
        threads: a.threads.unwrap_or_else(cores),
    };
    let force = a.force;
    let built = build(&a.path, spec, Mode::detect(a.quiet), |name| {
        let out = out_for(name);
        // Refuse before hashing, not after.
        if !force && out.exists() {
            return Err(Failure::usage(format!("{}: already exists (use --force to overwrite)", out.display())));
        }
        Ok(())
    })?;
    let out = out_for(&built.meta.info.name);
    write_output(&out, &built.bytes, a.force)?;
    let m = &built.meta;
    outln!("info-hash: {}", m.info_hash);
    outln!("magnet: {}", m.magnet());
    outln!(
        "wrote {}: {} in {} file(s), {} pieces of {}",
        out.display(),
        HumanBytes(m.info.total_length),
        m.info.files.len(),
        m.info.piece_count(),
        HumanBytes(m.info.piece_length)
    );
    Ok(())
}

/// What a new torrent should say besides its files.
pub struct Spec {
    pub trackers: Vec<Vec<String>>,
    pub private: bool,
    pub piece_size: Option<u64>,
    pub comment: Option<String>,
    pub web_seeds: Vec<String>,
    pub source: Option<String>,
    pub date: bool,
    pub threads: usize,
}

pub struct Built {
    pub bytes: Vec<u8>,
    pub meta: Metainfo,
}

/// Walks `path`, hashes it on `spec.threads` threads with progress, and builds the torrent.
/// `check(name)` runs once the name is known, before the hashing.
pub fn build(
    path: &Path,
    spec: Spec,
    mode: Mode,
    check: impl FnOnce(&str) -> Result<(), Failure>,
) -> Result<Built, Failure> {
    let (is_dir, files) = walk(path).map_err(|e| Failure::usage(e.to_string()))?;
    let name = if is_dir { walk_name(path)? } else { files[0].components[0].clone() };
    let total: u64 = files.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(Failure::usage(format!("{}: no data to share (all files are empty)", path.display())));
    }
    check(&name)?;
    let piece_length = spec.piece_size.unwrap_or_else(|| auto_piece_length(total));
    let layout = Layout::from_files(files.iter().map(|f| (f.disk_path.clone(), f.length)), piece_length);
    let done = AtomicU64::new(0);
    let pieces = progress::track_bytes(mode, "hashing", total, &done, || hash_pieces(&layout, spec.threads, &done))
        .map_err(|e| Failure::failed(format!("{e} (did the data change while hashing?)")))?;
    let builder = TorrentBuilder {
        name,
        piece_length,
        pieces,
        files: is_dir.then(|| files.iter().map(|f| (f.components.clone(), f.length)).collect()),
        length: total,
        private: spec.private,
        source: spec.source,
        trackers: spec.trackers,
        web_seeds: spec.web_seeds,
        comment: spec.comment,
        created_by: Some(concat!("bitswarm ", env!("CARGO_PKG_VERSION")).to_owned()),
        creation_date: spec.date.then(unix_now),
    };
    let (bytes, _) = builder.build();
    let meta = Metainfo::parse(&bytes).map_err(|e| Failure::failed(format!("internal error: {e}")))?;
    Ok(Built { bytes, meta })
}

/// The torrent name for a folder: its own name (resolving `.` and the like).
fn walk_name(p: &Path) -> Result<String, Failure> {
    let c = std::fs::canonicalize(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?;
    c.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| Failure::usage(format!("{}: the folder needs a UTF-8 name", p.display())))
}

pub fn write_output(out: &Path, bytes: &[u8], force: bool) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::failed(format!("{}: {e}", out.display()));
    if force {
        // Write beside it and rename, so a failure never leaves half a torrent.
        let tmp = out.with_extension("torrent.part");
        std::fs::write(&tmp, bytes).map_err(fail)?;
        std::fs::rename(&tmp, out).map_err(fail)
    } else {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::usage(format!("{}: already exists (use --force to overwrite)", out.display()))
            } else {
                fail(e)
            }
        })?;
        f.write_all(bytes).map_err(fail)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn show(a: ShowArgs) -> Result<(), Failure> {
    let m = load(&a.file)?;
    let i = &m.info;
    if a.json {
        let files: Vec<_> = i
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.path_string(), "length": f.length, "padding": f.padding}))
            .collect();
        let v = serde_json::json!({
            "info_hash": m.info_hash.to_hex(),
            "name": i.name,
            "total_size": i.total_length,
            "piece_length": i.piece_length,
            "piece_count": i.piece_count(),
            "private": i.private,
            "multi_file": i.multi_file,
            "hybrid": m.hybrid,
            "trackers": m.trackers(),
            "web_seeds": m.url_list,
            "creation_date": m.creation_date,
            "comment": m.comment,
            "created_by": m.created_by,
            "source": i.source,
            "magnet": m.magnet().to_string(),
            "files": files,
        });
        outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    outln!("name:         {}", i.name);
    outln!("info-hash:    {}", m.info_hash);
    outln!("size:         {} ({} bytes)", HumanBytes(i.total_length), i.total_length);
    outln!("pieces:       {} of {}", i.piece_count(), HumanBytes(i.piece_length));
    outln!("private:      {}", if i.private { "yes" } else { "no" });
    if m.hybrid {
        outln!("format:       hybrid v1/v2 (used as v1)");
    }
    if let Some(d) = m.creation_date {
        outln!("created:      {} (unix time {d})", format_date(d));
    }
    if let Some(c) = &m.created_by {
        outln!("created by:   {c}");
    }
    if let Some(c) = &m.comment {
        outln!("comment:      {c}");
    }
    if let Some(s) = &i.source {
        outln!("source:       {s}");
    }
    let tiers = m.trackers();
    if tiers.is_empty() {
        outln!("trackers:     none");
    }
    for (n, tier) in tiers.iter().enumerate() {
        outln!("tier {n}:       {}", tier.join(" "));
    }
    for u in &m.url_list {
        outln!("web seed:     {u}");
    }
    outln!("files:        {}", i.files.len());
    for f in &i.files {
        let pad = if f.padding { " (padding)" } else { "" };
        outln!("  {:>12}  {}{pad}", f.length, f.path_string());
    }
    Ok(())
}

/// A UTC date from unix seconds (civil-from-days; no time-zone database needed).
fn format_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn verify(a: VerifyArgs) -> Result<(), Failure> {
    let m = load(&a.file)?;
    let layout = Layout::new(&m.info, &a.dir);
    let done = AtomicU64::new(0);
    let threads = a.threads.unwrap_or_else(cores);
    let states = progress::track_bytes(Mode::detect(a.quiet), "checking", m.info.total_length, &done, || {
        verify_pieces(&layout, &m.info.pieces, threads, &done, &AtomicBool::new(false))
    });
    let count = |s| states.iter().filter(|&&x| x == s).count();
    let (good, missing, bad) = (count(PieceState::Good), count(PieceState::Missing), count(PieceState::Bad));
    outln!("pieces: {good} good, {missing} missing, {bad} bad (of {})", states.len());
    // Files longer than the torrent says hold bytes that no piece covers.
    let too_long: Vec<(&Path, u64, u64)> = layout
        .files
        .iter()
        .filter(|f| !f.padding)
        .filter_map(|f| Some((f.path.as_path(), std::fs::metadata(&f.path).ok()?.len(), f.length)))
        .filter(|(_, len, want)| len > want)
        .collect();
    for (path, len, want) in &too_long {
        outln!("  {}: {len} bytes, {} more than the torrent's {want}", path.display(), len - want);
    }
    if good == states.len() && too_long.is_empty() {
        outln!("all data is present and correct");
        return Ok(());
    }
    // Name the files that hold missing or bad pieces.
    let mut shown = 0;
    for f in layout.files.iter().filter(|f| !f.padding && f.length > 0) {
        let first = (f.offset / layout.piece_length) as usize;
        let last = ((f.offset + f.length - 1) / layout.piece_length) as usize;
        let broken = (first..=last).filter(|&p| states[p] != PieceState::Good).count();
        if broken > 0 {
            if shown == 10 {
                outln!("  …");
                break;
            }
            let what = if !f.path.exists() { "missing" } else { "incomplete or damaged" };
            outln!("  {}: {what} ({broken} of {} pieces not good)", f.path.display(), last - first + 1);
            shown += 1;
        }
    }
    if good == states.len() {
        return Err(Failure::failed(format!(
            "{}: every piece is good, but {} file(s) are longer than the torrent says",
            a.file.display(),
            too_long.len()
        )));
    }
    Err(Failure::failed(format!("{}: {} of {} pieces are not good", a.file.display(), missing + bad, states.len())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::format_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::format_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(super::format_date(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn piece_sizes() {
        assert_eq!(super::parse_piece_size("256K"), Ok(256 << 10));
        assert_eq!(super::parse_piece_size("1m"), Ok(1 << 20));
        assert_eq!(super::parse_piece_size("32768"), Ok(32768));
        assert!(super::parse_piece_size("1000").is_err());
        assert!(super::parse_piece_size("8K").is_err());
        assert!(super::parse_piece_size("x").is_err());
    }
}
