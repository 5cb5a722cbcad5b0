//! `bitswarm seed` and `bitswarm join`: one torrent, served or downloaded, until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bitswarm_metainfo::{Magnet, Metainfo};
use bitswarm_peer::{
    Check, Config, Engine, EngineError, Incoming, MetadataQuery, Outgoing, Role, Stats, fetch_metadata,
};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::Failure;
use crate::progress::{self, Mode};

/// The port peers listen on unless told otherwise (the classic BitTorrent port).
pub const DEFAULT_PORT: u16 = 6881;
/// Exit status of `join` stopped by SIGINT or SIGTERM before the download completed.
pub const EXIT_INTERRUPTED: u8 = 3;

#[derive(Args, Clone)]
pub struct PeerArgs {
    /// The .torrent file; for `join`, a magnet link also does (quote it in the shell): the
    /// torrent's metadata is then fetched from peers first (BEP 9).
    pub torrent: PathBuf,
    /// The folder that holds (or will hold) the torrent's content.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// TCP port to listen on for peers; 0 picks a free one (printed).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind: std::net::IpAddr,
    /// A peer to connect to directly (with or without trackers); repeatable.
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Do not contact the torrent's trackers.
    #[arg(long)]
    pub no_tracker: bool,
    /// Cap upload speed, in bytes per second (K and M suffixes accepted: 500K, 2M).
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_positive)]
    pub max_upload_rate: Option<u64>,
    /// Most connections at once.
    #[arg(long, default_value_t = 60, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers: u32,
    /// Most connections to and from one IP address; 0 for no limit.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub max_peers_per_ip: u32,
    /// Message Stream Encryption (MSE/PE). `plaintext`: dial with the plaintext handshake;
    /// accept both, and with MSE keep the stream plaintext when the peer offers it (RC4 when it
    /// offers nothing else). `prefer`: dial with MSE offering RC4 or plaintext (the peer
    /// chooses), dialing again in plaintext a peer that fails it; accept as `plaintext` does.
    /// `require`: only MSE with RC4 on the whole stream, both ways.
    #[arg(long, value_enum, default_value_t = Encryption::Plaintext, value_name = "POLICY")]
    pub encryption: Encryption,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encryption {
    Plaintext,
    Prefer,
    Require,
}

impl Encryption {
    /// The engine's policies for the connections we dial and those we accept.
    pub fn policies(self) -> (Outgoing, Incoming) {
        match self {
            Encryption::Plaintext => (Outgoing::Plaintext, Incoming::Any),
            Encryption::Prefer => (Outgoing::Prefer, Incoming::Any),
            Encryption::Require => (Outgoing::Require, Incoming::Require),
        }
    }
}

#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Exit (status 0) once every piece is verified and written, instead of seeding on.
    #[arg(long)]
    pub exit_when_done: bool,
}

pub fn seed(a: PeerArgs) -> Result<(), Failure> {
    run(a, Role::Seed, false)
}

pub fn join(a: JoinArgs) -> Result<(), Failure> {
    run(a.peer, Role::Join, a.exit_when_done)
}

fn run(mut a: PeerArgs, role: Role, exit_when_done: bool) -> Result<(), Failure> {
    let mode = Mode::detect(a.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bitswarm_storage::cores())
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    let mut peers = a.peers.clone();
    let meta = match a.torrent.to_str().filter(|t| t.starts_with("magnet:")) {
        Some(link) if role == Role::Seed => {
            let saved = Magnet::parse(link).ok().and_then(|m| saved_metadata(&m)).filter(|p| p.is_file());
            let hint = saved.map(|p| format!(" (an earlier download saved it as {})", p.display())).unwrap_or_default();
            return Err(Failure::usage(format!("{link}: seed needs the .torrent file, not a magnet link{hint}")));
        }
        Some(link) => {
            let magnet = Magnet::parse(link).map_err(|e| Failure::usage(format!("{link}: {e}")))?;
            if a.port == 0 {
                // Trackers are told our port while the metadata is fetched: pick it now.
                let l = std::net::TcpListener::bind((a.bind, 0))
                    .map_err(|e| Failure::failed(format!("cannot listen on {}: {e}", a.bind)))?;
                a.port = l.local_addr().map_err(|e| Failure::failed(e.to_string()))?.port();
            }
            for p in &magnet.peers {
                match p.parse::<SocketAddr>() {
                    Ok(addr) => peers.push(addr),
                    Err(_) => errln!("x.pe={p}: not an IP:PORT address; skipped"),
                }
            }
            let saved = saved_metadata(&magnet);
            match saved.as_deref().and_then(|p| load_saved(p, &magnet)) {
                Some(meta) => Arc::new(meta),
                None => {
                    let meta = rt.block_on(metadata(&magnet, &peers, &a, mode))?;
                    if let Some(p) = &saved {
                        save_metadata(p, &meta, &magnet);
                    }
                    Arc::new(meta)
                }
            }
        }
        None => Arc::new(crate::torrent::load(&a.torrent)?),
    };
    let mut config = Config::new(SocketAddr::new(a.bind, a.port));
    config.peers = peers;
    if !a.no_tracker {
        config.trackers = meta.trackers();
    }
    config.max_upload_rate = a.max_upload_rate;
    config.max_peers = a.max_peers as usize;
    config.max_peers_per_ip = a.max_peers_per_ip as usize;
    (config.outgoing_encryption, config.incoming_encryption) = a.encryption.policies();

    // A stop during the check ends it (within one batch of pieces) and the command as a stop
    // after it would: the listeners are in place before the check starts.
    let mut term = {
        let _in = rt.enter();
        Box::pin(stop_signal())
    };
    let check = Arc::new(Check::default());
    let total = meta.info.total_length;
    let started = progress::track_bytes(mode, "checking", total, &check.done, || {
        rt.block_on(async {
            let start = Engine::start(meta.clone(), a.dir.clone(), role, config, check.clone());
            tokio::pin!(start);
            tokio::select! {
                r = &mut start => r,
                () = &mut term => {
                    check.stop.store(true, Ordering::Release);
                    // The check may have ended just before: then the engine stops at once.
                    match start.await {
                        Ok(engine) => {
                            engine.shutdown().await;
                            Err(EngineError::Stopped)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        })
    });
    let engine = match started {
        Ok(e) => e,
        Err(EngineError::Stopped) if role == Role::Seed => return Ok(()),
        Err(EngineError::Stopped) => {
            return Err(Failure {
                code: EXIT_INTERRUPTED,
                message: "stopped during the check of the data on disk; run the same command again to resume".into(),
            });
        }
        Err(EngineError::Incomplete(m)) => return Err(Failure::failed(m)),
        Err(e) => return Err(Failure::failed(e.to_string())),
    };
    outln!("{}: {} ({})", meta.info.name, meta.info_hash, HumanBytes(total));
    let s = engine.stats();
    outln!("have {} of {} pieces", s.pieces_have, s.pieces);
    outln!("listening on {}", engine.listen_addr());
    let _ = std::io::Write::flush(&mut std::io::stdout());

    let outcome = rt.block_on(drive(&engine, mode, exit_when_done, term));
    let stats = engine.stats();
    rt.block_on(engine.shutdown());
    if mode != Mode::Quiet {
        errln!("{}", summary(&stats));
    }
    outln!("transfer: downloaded {} bytes, uploaded {} bytes", stats.downloaded, stats.uploaded);
    match outcome {
        Outcome::Done => {
            outln!("complete: all {} pieces verified", stats.pieces);
            Ok(())
        }
        Outcome::Stopped if stats.complete || role == Role::Seed => Ok(()),
        Outcome::Stopped => Err(Failure {
            code: EXIT_INTERRUPTED,
            message: format!(
                "stopped with {} of {} pieces; run the same command again to resume",
                stats.pieces_have, stats.pieces
            ),
        }),
        Outcome::Fatal(m) => Err(Failure::failed(m)),
    }
}

/// Where a magnet link's metadata is kept once fetched, so that the download resumes (and the
/// data can be seeded) without asking peers for it again: `$XDG_CACHE_HOME/bitswarm/metadata/
/// <info-hash>.torrent`, or under `~/.cache`. None without either variable (as an absolute path).
fn saved_metadata(magnet: &Magnet) -> Option<PathBuf> {
    // Relative values are ignored, as the XDG base directory specification says.
    let var = |k| std::env::var_os(k).map(PathBuf::from).filter(|p| p.is_absolute());
    let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("bitswarm").join("metadata").join(format!("{}.torrent", magnet.info_hash)))
}

/// The metadata an earlier run saved at `path`, with the link's trackers; None (after saying
/// why, unless there is simply no such file) when it is missing, unreadable or not the link's.
fn load_saved(path: &std::path::Path, magnet: &Magnet) -> Option<Metainfo> {
    let bytes = match crate::torrent::read_torrent_file(path).map_err(|f| f.message) {
        Ok(b) => b,
        Err(_) if !path.exists() => return None,
        Err(e) => {
            errln!("{e}; fetching the metadata from peers");
            return None;
        }
    };
    match Metainfo::parse(&bytes).and_then(|m| Metainfo::from_info_bytes(&m.info_bytes, &magnet.trackers)) {
        Ok(m) if m.info_hash == magnet.info_hash => {
            outln!("metadata: from {} (saved by an earlier run)", path.display());
            Some(m)
        }
        Ok(m) => {
            errln!(
                "{}: holds torrent {}, not {}; fetching the metadata from peers",
                path.display(),
                m.info_hash,
                magnet.info_hash
            );
            None
        }
        Err(e) => {
            errln!("{}: {e}; fetching the metadata from peers", path.display());
            None
        }
    }
}

/// Saves fetched metadata as a .torrent (with the link's trackers) at `path`, written whole
/// under another name first and then renamed. A failure is reported, not fatal.
fn save_metadata(path: &std::path::Path, meta: &Metainfo, magnet: &Magnet) {
    let bytes = Metainfo::torrent_file_of(&meta.info_bytes, &magnet.trackers);
    let tmp = path.with_extension(format!("torrent.{}.tmp", std::process::id()));
    let r = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, &bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    match r {
        Ok(()) => outln!("metadata: saved to {}", path.display()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            errln!("{}: cannot save the metadata: {e}", path.display());
        }
    }
}

/// The metadata of a magnet link, from peers; SIGINT or SIGTERM stop the wait.
async fn metadata(magnet: &Magnet, peers: &[SocketAddr], a: &PeerArgs, mode: Mode) -> Result<Metainfo, Failure> {
    let q = MetadataQuery {
        info_hash: magnet.info_hash,
        peer_id: bitswarm_peer::new_peer_id(),
        port: a.port,
        local: a.bind,
        peers: peers.to_vec(),
        trackers: if a.no_tracker { Vec::new() } else { magnet.trackers.clone() },
        encryption: a.encryption.policies().0,
    };
    let say = |m: &str| {
        if mode != Mode::Quiet {
            errln!("metadata: {m}");
        }
    };
    let stop = stop_signal();
    let (info, from) = tokio::select! {
        r = fetch_metadata(&q, say) => r.map_err(Failure::usage)?,
        _ = stop => {
            return Err(Failure { code: EXIT_INTERRUPTED, message: "stopped before any peer gave the torrent's metadata".into() });
        }
    };
    outln!("metadata: {} bytes from {from}", info.len());
    let meta = Metainfo::from_info_bytes(&info, &magnet.trackers)
        .map_err(|e| Failure::failed(format!("metadata from {from}: {e}")))?;
    if meta.info_hash != magnet.info_hash {
        // The bytes hashed right; parsed, they must still be that dictionary and nothing else.
        return Err(Failure::failed(format!("metadata from {from} is not one info dictionary")));
    }
    Ok(meta)
}

/// Resolves on SIGINT or SIGTERM, or once stdout is closed (a closed pipe ends a Unix tool).
/// Both listeners are registered before it returns, so no signal from then on is missed;
/// without them (no signal support) only stdout ends it.
fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sigterm, sigint) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
    async move {
        let signals = async {
            match (sigterm, sigint) {
                (Some(mut t), Some(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = i.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signals => {}
            () = crate::out::closed() => {}
        }
    }
}

enum Outcome {
    /// Complete, and told to exit when done.
    Done,
    /// SIGINT or SIGTERM.
    Stopped,
    Fatal(String),
}

/// `term`: resolves on a stop (SIGINT, SIGTERM, stdout closed); its listeners exist for the
/// whole loop, so no signal falls between two iterations.
async fn drive(
    engine: &Engine,
    mode: Mode,
    exit_when_done: bool,
    mut term: Pin<Box<impl Future<Output = ()>>>,
) -> Outcome {
    let started = Instant::now();
    let bar = (mode == Mode::Bar).then(|| {
        let b = ProgressBar::new(engine.metainfo().info.total_length);
        b.set_style(
            ProgressStyle::with_template("[{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_line = Instant::now();
    // Not `is_complete()`: a download may have completed already, between the start and here.
    let mut announced_complete = engine.started_complete();
    let outcome = loop {
        // `join --exit-when-done` of data that was complete on disk from the start is done too.
        if exit_when_done && announced_complete {
            break Outcome::Done;
        }
        tokio::select! {
            _ = tick.tick() => {
                let s = engine.stats();
                if let Some(b) = &bar {
                    b.set_position(s.have);
                    b.set_message(status(&s));
                } else if mode == Mode::Lines && last_line.elapsed() >= progress::LINE_INTERVAL {
                    last_line = Instant::now();
                    errln!("{:.1}% {} of {} {}", pct(&s), HumanBytes(s.have), HumanBytes(s.total), status(&s));
                }
            }
            _ = engine.wait_complete(), if !announced_complete => {
                announced_complete = true;
                if mode != Mode::Quiet {
                    let secs = started.elapsed().as_secs_f64();
                    errln!("download complete in {secs:.1} s");
                }
                if exit_when_done {
                    break Outcome::Done;
                }
                outln!("complete: seeding until stopped (Ctrl-C)");
            }
            m = engine.wait_fatal() => break Outcome::Fatal(m),
            _ = &mut term => break Outcome::Stopped,
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    outcome
}

fn pct(s: &Stats) -> f64 {
    if s.total == 0 { 100.0 } else { s.have as f64 * 100.0 / s.total as f64 }
}

fn status(s: &Stats) -> String {
    let eta = match (s.total - s.have).checked_div(s.down_rate) {
        _ if s.complete => "done".to_owned(),
        Some(secs) => format!("eta {secs}s"),
        None => "eta -".to_owned(),
    };
    format!("down {}/s up {}/s peers {} {eta}", HumanBytes(s.down_rate), HumanBytes(s.up_rate), s.peers)
}

fn summary(s: &Stats) -> String {
    let mut line = format!(
        "have {} of {} pieces; downloaded {}, uploaded {}",
        s.pieces_have,
        s.pieces,
        HumanBytes(s.downloaded),
        HumanBytes(s.uploaded)
    );
    if s.hash_failures > 0 || s.banned > 0 {
        line += &format!("; {} pieces failed their hash, {} peers banned", s.hash_failures, s.banned);
    }
    line
}
