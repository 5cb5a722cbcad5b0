//! `bitswarm demo`: a whole swarm on this machine. A tracker, seeders and leechers run in this
//! process on loopback ephemeral ports, on the same code as `tracker`, `torrent create`, `seed`
//! and `join`; every leecher's data is compared with the original at the end.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bitswarm_peer::{AddSource, AddTorrent, Session, Settings, TorrentHandle, TorrentStats};
use clap::Args;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use crate::Failure;
use crate::progress::{LINE_INTERVAL, Mode};
use crate::torrent::{self, Spec};

#[derive(Args)]
pub struct DemoArgs {
    /// Bytes of random data to share (K, M, G suffixes accepted).
    #[arg(long, default_value = "256M", value_parser = crate::units::parse_positive)]
    pub size: u64,
    /// Leechers that start empty.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub leechers: u32,
    /// Seeders that start with all the data.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub seeders: u32,
    /// Work in this folder (created if needed) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the folder afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Give up if the leechers are not done after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
    /// No progress bars or lines, only the result.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Seed,
    Join,
}

/// A peer of the swarm: a session of its own (on an address of its own) with the one torrent.
struct Peer {
    name: String,
    role: Role,
    dir: PathBuf,
    session: Session,
    torrent: TorrentHandle,
    bar: Option<ProgressBar>,
    done_after: Option<Duration>,
}

pub fn run(a: DemoArgs) -> Result<(), Failure> {
    let mode = Mode::detect(a.quiet);
    let (root, _temp) = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Failure::failed(format!("{}: {e}", d.display())))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("bitswarm-demo-")
                .tempdir()
                .map_err(|e| Failure::failed(format!("cannot make a temporary folder: {e}")))?;
            (t.path().to_owned(), Some(t))
        }
    };
    let result = demo(&a, &root, mode);
    if a.keep {
        // TempDir would remove it on drop: keep it on purpose.
        if let Some(t) = _temp {
            let _ = t.keep();
        }
        outln!("kept {}", root.display());
    }
    result
}

fn demo(a: &DemoArgs, root: &Path, mode: Mode) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bitswarm_storage::cores())
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;

    // 1. The tracker, on loopback ephemeral ports.
    let mut tconf = bitswarm_tracker::Config::default();
    tconf.http.bind = "127.0.0.1:0".parse().expect("address");
    tconf.udp.bind = "127.0.0.1:0".parse().expect("address");
    let tracker = rt
        .block_on(bitswarm_tracker::Tracker::start(tconf))
        .map_err(|e| Failure::failed(format!("cannot start the tracker: {e}")))?;
    let announce = tracker.http_announce_url().ok_or_else(|| Failure::failed("the tracker has no HTTP address"))?;
    outln!("tracker: {announce} (stats at {})", tracker.stats_url().unwrap_or_default());

    // 2. Random data for the first seeder; the others share it through hard links.
    let seed0 = root.join("seed1");
    let data = seed0.join("demo.bin");
    write_random(&data, a.size, mode)?;
    outln!("data: {} of random bytes in {}", HumanBytes(a.size), data.display());

    // 3. The torrent, made as `torrent create` makes it.
    let spec = Spec {
        trackers: vec![vec![announce.clone()]],
        private: false,
        piece_size: None,
        comment: Some("bitswarm demo".into()),
        web_seeds: Vec::new(),
        source: None,
        date: true,
        threads: bitswarm_storage::cores(),
    };
    let built = torrent::build(&data, spec, mode, |_| Ok(()))?;
    let torrent_path = root.join("demo.torrent");
    torrent::write_output(&torrent_path, &built.bytes, true)?;
    let meta = Arc::new(built.meta);
    outln!(
        "torrent: {} ({}, {} pieces of {})",
        torrent_path.display(),
        meta.info_hash,
        meta.info.piece_count(),
        HumanBytes(meta.info.piece_length)
    );

    // 4. Seeders, then leechers, as `seed` and `join` start them.
    let multi = (mode == Mode::Bar).then(MultiProgress::new);
    let mut peers: Vec<Peer> = Vec::new();
    let started = Instant::now();
    for i in 1..=a.seeders {
        let dir = root.join(format!("seed{i}"));
        if i > 1 {
            std::fs::create_dir_all(&dir).map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
            std::fs::hard_link(&data, dir.join("demo.bin"))
                .or_else(|_| std::fs::copy(&data, dir.join("demo.bin")).map(|_| ()))
                .map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
        }
        peers.push(start_peer(&rt, &meta, format!("seed {i}"), Role::Seed, dir, &announce, multi.as_ref())?);
    }
    for i in 1..=a.leechers {
        let dir = root.join(format!("leech{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
        peers.push(start_peer(&rt, &meta, format!("leech {i}"), Role::Join, dir, &announce, multi.as_ref())?);
    }
    for p in &peers {
        outln!("{}: listening on {}", p.name, p.session.listen_addr());
    }

    // 5. Until every leecher has every piece.
    let deadline = started + Duration::from_secs(a.timeout);
    let mut last_line = Instant::now();
    let outcome = loop {
        let stats: Vec<TorrentStats> = peers.iter().map(|p| p.torrent.stats()).collect();
        for (p, s) in peers.iter_mut().zip(&stats) {
            if p.done_after.is_none() && p.role == Role::Join {
                p.done_after = s.completed_after;
            }
            if let Some(b) = &p.bar {
                b.set_position(s.have);
                b.set_message(format!(
                    "down {:>10}/s up {:>10}/s peers {}",
                    HumanBytes(s.down_rate),
                    HumanBytes(s.up_rate),
                    s.peers
                ));
            }
        }
        if mode == Mode::Lines && last_line.elapsed() >= LINE_INTERVAL {
            last_line = Instant::now();
            let parts: Vec<String> = peers
                .iter()
                .zip(&stats)
                .filter(|(p, _)| p.role == Role::Join)
                .map(|(p, s)| format!("{} {:.0}%", p.name, s.have as f64 * 100.0 / s.total as f64))
                .collect();
            errln!("{}", parts.join(", "));
        }
        if peers.iter().filter(|p| p.role == Role::Join).all(|p| p.done_after.is_some()) {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(Failure::failed(format!("the leechers were not done after {} s", a.timeout)));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let finals: Vec<TorrentStats> = peers.iter().map(|p| p.torrent.stats()).collect();
    for p in &peers {
        if let Some(b) = &p.bar {
            b.finish_and_clear();
        }
    }
    let infos: Vec<(String, Role, PathBuf, Option<Duration>)> =
        peers.iter().map(|p| (p.name.clone(), p.role, p.dir.clone(), p.done_after)).collect();
    rt.block_on(async {
        for p in peers {
            p.session.shutdown().await;
        }
        tracker.shutdown().await;
    });
    outcome?;

    // 6. Byte for byte against the original.
    for (name, role, dir, _) in &infos {
        if *role == Role::Join {
            same_bytes(&data, &dir.join("demo.bin")).map_err(|e| Failure::failed(format!("{name}: {e}")))?;
        }
    }

    // 7. The table.
    outln!();
    outln!("{:<9} {:>8} {:>12} {:>12} {:>12}", "peer", "time", "throughput", "downloaded", "uploaded");
    for ((name, role, _, done), s) in infos.iter().zip(&finals) {
        let (time, rate) = match (role, done) {
            (Role::Join, Some(d)) => (
                format!("{:.2} s", d.as_secs_f64()),
                format!("{}/s", HumanBytes((a.size as f64 / d.as_secs_f64()) as u64)),
            ),
            _ => ("-".into(), "-".into()),
        };
        let (down, up) = (HumanBytes(s.downloaded).to_string(), HumanBytes(s.uploaded).to_string());
        outln!("{name:<9} {time:>8} {rate:>12} {down:>12} {up:>12}");
    }
    let leech_down: u64 = infos.iter().zip(&finals).filter(|(i, _)| i.1 == Role::Join).map(|(_, s)| s.downloaded).sum();
    let leech_up: u64 = infos.iter().zip(&finals).filter(|(i, _)| i.1 == Role::Join).map(|(_, s)| s.uploaded).sum();
    outln!();
    outln!(
        "all {} leechers have every byte, verified against the original, in {:.2} s",
        a.leechers,
        elapsed.as_secs_f64()
    );
    let share = if leech_down == 0 { 0.0 } else { leech_up as f64 * 100.0 / leech_down as f64 };
    outln!(
        "leechers sent each other {} ({share:.0}% of what they downloaded); the seeders sent the rest",
        HumanBytes(leech_up)
    );
    if a.leechers > 1 && leech_up == 0 {
        return Err(Failure::failed("the leechers did not trade any pieces with each other"));
    }
    Ok(())
}

fn start_peer(
    rt: &tokio::runtime::Runtime,
    meta: &Arc<bitswarm_metainfo::Metainfo>,
    name: String,
    role: Role,
    dir: PathBuf,
    announce: &str,
    multi: Option<&MultiProgress>,
) -> Result<Peer, Failure> {
    // Each peer on an address of its own (all of 127/8 is this machine), as peers on different
    // hosts are: a peer takes one connection from an address.
    static NEXT_HOST: AtomicU32 = AtomicU32::new(2);
    let [_, a, b, c] = NEXT_HOST.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let _ = announce; // the torrent announces to the demo's tracker
    let settings = Settings::new(SocketAddr::from(([127, a, b, c], 0)));
    let (session, torrent) = rt
        .block_on(async {
            let session = Session::start(settings).await.map_err(|e| e.to_string())?;
            let mut add = AddTorrent::new(AddSource::Metainfo(meta.clone()), dir.clone());
            add.seed_only = role == Role::Seed;
            let torrent = session.add(add).map_err(|e| e.to_string())?;
            torrent.wait_ready().await?;
            Ok::<_, String>((session, torrent))
        })
        .map_err(|e| Failure::failed(format!("{name}: {e}")))?;
    let bar = multi.map(|m| {
        let b = m.add(ProgressBar::new(meta.info.total_length));
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_prefix(name.clone());
        b
    });
    Ok(Peer { name, role, dir, session, torrent, bar, done_after: None })
}

/// Writes `len` pseudo-random bytes (xorshift, seeded from the clock).
fn write_random(path: &Path, len: u64, mode: Mode) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::failed(format!("{}: {e}", path.display()));
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(fail)?;
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(fail)?);
    let mut x: u64 =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    let show = mode != Mode::Quiet && std::io::stderr().is_terminal() && len > (64 << 20);
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).map_err(fail)?;
        left -= n as u64;
        if show && left.is_multiple_of(64 << 20) {
            let _ = write!(std::io::stderr(), "\rwriting data: {}%", (len - left) * 100 / len);
        }
    }
    if show {
        errln!();
    }
    f.flush().map_err(fail)
}

/// Compares two files chunk by chunk; the error says where they differ.
fn same_bytes(a: &Path, b: &Path) -> Result<(), String> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (la, lb) = (fa.metadata().map_err(|e| e.to_string())?.len(), fb.metadata().map_err(|e| e.to_string())?.len());
    if la != lb {
        return Err(format!("{} has {lb} bytes, the original {la}", b.display()));
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = fa.read(&mut ba).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        fb.read_exact(&mut bb[..n]).map_err(|e| e.to_string())?;
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y).unwrap_or(0);
            return Err(format!("{} differs from the original at byte {}", b.display(), at + i as u64));
        }
        at += n as u64;
    }
}
