//! `bitswarm seed` and `bitswarm join`: torrents served or downloaded on one session, until
//! stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitswarm_metainfo::{Magnet, Metainfo};
use bitswarm_peer::{AddSource, AddTorrent, Incoming, Outgoing, Session, Settings, TorrentHandle, TorrentStats};
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
    /// The .torrent files (one or more, all on one port); for `join`, magnet links also do
    /// (quote them in the shell): a torrent's metadata is then fetched from peers first (BEP 9).
    #[arg(required = true, value_name = "TORRENT")]
    pub torrents: Vec<PathBuf>,
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
    #[command(flatten)]
    pub dht: DhtArgs,
    #[command(flatten)]
    pub lsd: LsdArgs,
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

/// The DHT switches of `join`, `seed` and `daemon`.
#[derive(Args, Clone, Debug, Default)]
pub struct DhtArgs {
    /// Run no DHT node (BEP 5): peers come from trackers, peer exchange and --peer alone.
    /// Without it, a node runs on UDP at the peer address and port, and public torrents find
    /// peers and announce themselves there (private torrents never do).
    #[arg(long, env = "BITSWARM_NO_DHT", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_dht: bool,
    /// A DHT router to join through, in place of the usual public ones
    /// (router.bittorrent.com:6881, dht.transmissionbt.com:6881, router.utorrent.com:6881);
    /// repeatable.
    #[arg(long = "dht-router", value_name = "HOST:PORT", value_parser = parse_router)]
    pub dht_routers: Vec<String>,
}

/// The Local Service Discovery switch of `join`, `seed` and `daemon`.
#[derive(Args, Clone, Debug, Default)]
pub struct LsdArgs {
    /// No Local Service Discovery (BEP 14). Without it, public torrents are announced by
    /// multicast on the local network (239.192.152.143:6771 and [ff15::efc0:988f]:6771) and
    /// peers announced there are dialed (private torrents never are).
    #[arg(long, env = "BITSWARM_NO_LSD", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_lsd: bool,
}

/// A `--dht-router`: checked, not resolved (the node resolves it when it starts).
fn parse_router(s: &str) -> Result<String, String> {
    bitswarm_peer::parse_router(s).map(|_| s.to_owned())
}

impl DhtArgs {
    /// Puts the switches into session settings. On a fixed port, the routing table is kept in
    /// `$XDG_CACHE_HOME/bitswarm/dht-PORT.dat` (one process a port, so one node a file); on
    /// port 0 it is not kept.
    pub fn apply(&self, s: &mut Settings) {
        s.dht = !self.no_dht;
        if !self.dht_routers.is_empty() {
            s.dht_routers = self.dht_routers.clone();
        }
        if s.dht && s.listen.port() != 0 {
            s.dht_state = cache_dir().map(|d| d.join(format!("dht-{}.dat", s.listen.port())));
        }
    }
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

/// Whether a command serves complete data or downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Seed,
    Join,
}

pub fn seed(a: PeerArgs) -> Result<(), Failure> {
    run(a, Role::Seed, false)
}

pub fn join(a: JoinArgs) -> Result<(), Failure> {
    run(a.peer, Role::Join, a.exit_when_done)
}

/// A torrent on the command line, ready to add.
struct Wanted {
    source: AddSource,
    /// For a magnet link: where its metadata is (or will be) saved, unless it came from there.
    save_to: Option<(PathBuf, Magnet)>,
}

/// Reads the command line's torrents: .torrent files, or (for `join`) magnet links, whose
/// metadata comes from an earlier run's saved copy when there is one.
fn wanted(a: &PeerArgs, role: Role) -> Result<Vec<Wanted>, Failure> {
    let mut out = Vec::new();
    for arg in &a.torrents {
        let w = match arg.to_str().filter(|t| t.starts_with("magnet:")) {
            Some(link) if role == Role::Seed => {
                let saved = Magnet::parse(link).ok().and_then(|m| saved_metadata(&m)).filter(|p| p.is_file());
                let hint =
                    saved.map(|p| format!(" (an earlier download saved it as {})", p.display())).unwrap_or_default();
                return Err(Failure::usage(format!("{link}: seed needs the .torrent file, not a magnet link{hint}")));
            }
            Some(link) => {
                let magnet = Magnet::parse(link).map_err(|e| Failure::usage(format!("{link}: {e}")))?;
                let trackers = !a.no_tracker && !magnet.trackers.is_empty();
                if !trackers && magnet.peers.is_empty() && a.peers.is_empty() && a.dht.no_dht && a.lsd.no_lsd {
                    return Err(Failure::usage(format!(
                        "{link}: the magnet link names no tracker and no peer, and the DHT and LSD are off: \
                         give a peer with --peer IP:PORT"
                    )));
                }
                let saved = saved_metadata(&magnet);
                match saved.as_deref().and_then(|p| load_saved(p, &magnet)) {
                    Some(meta) => Wanted { source: AddSource::Metainfo(Arc::new(meta)), save_to: None },
                    None => Wanted { source: AddSource::Magnet(magnet.clone()), save_to: saved.map(|p| (p, magnet)) },
                }
            }
            None => Wanted { source: AddSource::Metainfo(Arc::new(crate::torrent::load(arg)?)), save_to: None },
        };
        out.push(w);
    }
    Ok(out)
}

fn run(a: PeerArgs, role: Role, exit_when_done: bool) -> Result<(), Failure> {
    let mode = Mode::detect(a.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bitswarm_storage::cores())
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    let wanted = wanted(&a, role)?;
    let mut settings = Settings::new(SocketAddr::new(a.bind, a.port));
    settings.max_peers_per_torrent = a.max_peers as usize;
    settings.max_connections = (a.max_peers as usize).saturating_mul(wanted.len()).max(settings.max_connections);
    settings.max_peers_per_ip = a.max_peers_per_ip as usize;
    settings.max_upload_rate = a.max_upload_rate.unwrap_or(0);
    (settings.outgoing_encryption, settings.incoming_encryption) = a.encryption.policies();
    a.dht.apply(&mut settings);
    settings.lsd = !a.lsd.no_lsd;
    rt.block_on(async {
        let session = Session::start(settings).await.map_err(|e| Failure::failed(e.to_string()))?;
        // Registered before anything starts: a stop during the checks is not missed.
        let term = Box::pin(stop_signal());
        let mut handles = Vec::new();
        for w in &wanted {
            let mut add = AddTorrent::new(w.source.clone(), a.dir.clone());
            add.seed_only = role == Role::Seed;
            add.peers = a.peers.clone();
            add.no_trackers = a.no_tracker;
            match session.add(add) {
                Ok(h) => handles.push(h),
                Err(bitswarm_peer::AddError::Duplicate(_)) => {} // named twice
            }
        }
        let outcome = serve(&session, &handles, &wanted, mode, role, exit_when_done, term).await;
        let stats: Vec<TorrentStats> = handles.iter().map(|h| h.stats()).collect();
        session.shutdown().await;
        finish(outcome, &stats, mode, role)
    })
}

/// How `serve` ended.
enum Outcome {
    /// Every torrent is complete, and `--exit-when-done` says to exit.
    Done,
    /// SIGINT, SIGTERM or a closed stdout.
    Stopped,
    /// Stopped by a signal before every torrent was checked.
    StoppedChecking,
    Fatal(String),
}

/// Waits for the checks (showing their progress), says what each torrent has, then shows the
/// transfer until it is done (`--exit-when-done`), a torrent fails, or a stop.
async fn serve(
    session: &Session,
    handles: &[TorrentHandle],
    wanted: &[Wanted],
    mode: Mode,
    role: Role,
    exit_when_done: bool,
    mut term: Pin<Box<impl Future<Output = ()>>>,
) -> Outcome {
    // 1. Metadata and checks.
    let ready = async {
        let mut saved = vec![false; handles.len()];
        for (i, h) in handles.iter().enumerate() {
            let r = h.wait_ready().await;
            if let (Some((n, from)), Some((path, magnet))) = (h.metadata_from(), &wanted[i].save_to) {
                outln!("metadata: {n} bytes from {from}");
                if let Some(meta) = h.metainfo()
                    && !saved[i]
                {
                    saved[i] = true;
                    save_metadata(path, &meta, magnet);
                }
            }
            r?;
        }
        Ok::<(), String>(())
    };
    let checked = progress::track_async(mode, "checking", || checking(handles), ready);
    let r = tokio::select! {
        r = checked => r,
        () = &mut term => return Outcome::StoppedChecking,
    };
    if let Err(e) = r {
        return Outcome::Fatal(e);
    }
    // Then each takes connections (no queue here: at once), before we say we listen.
    for h in handles {
        h.wait_running().await;
    }
    for h in handles {
        let s = h.stats();
        outln!("{}: {} ({})", s.name, h.info_hash(), HumanBytes(s.total));
        outln!("have {} of {} pieces", s.pieces_have, s.pieces);
    }
    outln!("listening on {}", session.listen_addr());

    // 2. The transfer.
    let started = Instant::now();
    let total: u64 = handles.iter().map(|h| h.stats().total).sum();
    let bar = (mode == Mode::Bar).then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("[{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_line = Instant::now();
    // Torrents complete at the start (with their data on disk) are done already.
    let mut done: Vec<bool> = handles.iter().map(|h| h.stats().complete).collect();
    let several = handles.len() > 1;
    let outcome = loop {
        if exit_when_done && done.iter().all(|d| *d) {
            break Outcome::Done;
        }
        let next = handles.iter().enumerate().find(|(i, _)| !done[*i]).map(|(i, h)| (i, h.clone()));
        let completion = async {
            match &next {
                Some((i, h)) => (*i, h.wait_complete().await),
                None => std::future::pending().await,
            }
        };
        let errors = async {
            let waits: Vec<_> = handles.iter().map(|h| Box::pin(h.wait_error())).collect();
            futures_select_first(waits).await
        };
        tokio::select! {
            _ = tick.tick() => {
                let s = sum(handles);
                if let Some(b) = &bar {
                    b.set_position(s.have);
                    b.set_message(status(&s, session.dht_stats()));
                } else if mode == Mode::Lines && last_line.elapsed() >= progress::LINE_INTERVAL {
                    last_line = Instant::now();
                    errln!("{:.1}% {} of {} {}", pct(&s), HumanBytes(s.have), HumanBytes(s.total), status(&s, session.dht_stats()));
                }
            }
            (i, r) = completion => {
                if let Err(e) = r {
                    break Outcome::Fatal(e);
                }
                done[i] = true;
                if mode != Mode::Quiet {
                    let secs = started.elapsed().as_secs_f64();
                    errln!("download complete in {secs:.1} s{}", if several { format!(" ({})", handles[i].name()) } else { String::new() });
                }
                if !exit_when_done {
                    match several {
                        false => outln!("complete: seeding until stopped (Ctrl-C)"),
                        true => outln!("complete: {}: seeding until stopped (Ctrl-C)", handles[i].name()),
                    }
                }
            }
            e = errors => break Outcome::Fatal(e),
            () = &mut term => break Outcome::Stopped,
        }
    };
    let _ = role;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    outcome
}

/// The first of several futures to end.
async fn futures_select_first<F: Future<Output = String> + Unpin>(mut fs: Vec<F>) -> String {
    if fs.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for f in fs.iter_mut() {
            if let std::task::Poll::Ready(v) = Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Bytes checked and to check, over the torrents (for the progress of the checks).
fn checking(handles: &[TorrentHandle]) -> (u64, u64) {
    handles.iter().map(|h| h.stats()).fold((0, 0), |(d, t), s| (d + s.checked.min(s.total), t + s.total))
}

/// The torrents' stats added up.
fn sum(handles: &[TorrentHandle]) -> TorrentStats {
    sum_stats(&handles.iter().map(|h| h.stats()).collect::<Vec<_>>())
}

/// The last lines and the exit status.
fn finish(outcome: Outcome, stats: &[TorrentStats], mode: Mode, role: Role) -> Result<(), Failure> {
    if matches!(outcome, Outcome::StoppedChecking) {
        return match role {
            Role::Seed => Ok(()),
            Role::Join => Err(Failure {
                code: EXIT_INTERRUPTED,
                message: "stopped during the check of the data on disk; run the same command again to resume".into(),
            }),
        };
    }
    let s = if stats.is_empty() { None } else { Some(sum_stats(stats)) };
    if let Some(s) = &s {
        if mode != Mode::Quiet {
            errln!("{}", summary(s));
        }
        outln!("transfer: downloaded {} bytes, uploaded {} bytes", s.downloaded, s.uploaded);
    }
    let complete = stats.iter().all(|s| s.complete);
    match outcome {
        Outcome::Done => {
            for st in stats {
                outln!("complete: all {} pieces verified", st.pieces);
            }
            Ok(())
        }
        Outcome::Stopped if complete || role == Role::Seed => Ok(()),
        Outcome::Stopped => {
            let (have, all) = stats.iter().fold((0, 0), |(h, a), s| (h + s.pieces_have, a + s.pieces));
            Err(Failure {
                code: EXIT_INTERRUPTED,
                message: format!("stopped with {have} of {all} pieces; run the same command again to resume"),
            })
        }
        Outcome::Fatal(m) => Err(Failure::failed(m)),
        Outcome::StoppedChecking => unreachable!("returned above"),
    }
}

fn sum_stats(all: &[TorrentStats]) -> TorrentStats {
    let mut s = all[0].clone();
    for x in &all[1..] {
        s.total += x.total;
        s.have += x.have;
        s.pieces_have += x.pieces_have;
        s.pieces += x.pieces;
        s.downloaded += x.downloaded;
        s.uploaded += x.uploaded;
        s.down_rate += x.down_rate;
        s.up_rate += x.up_rate;
        s.peers += x.peers;
        s.banned += x.banned;
        s.hash_failures += x.hash_failures;
        s.complete &= x.complete;
    }
    s
}

/// Where a magnet link's metadata is kept once fetched, so that the download resumes (and the
/// data can be seeded) without asking peers for it again: `$XDG_CACHE_HOME/bitswarm/metadata/
/// <info-hash>.torrent`, or under `~/.cache`. None without either variable (as an absolute path).
fn saved_metadata(magnet: &Magnet) -> Option<PathBuf> {
    Some(cache_dir()?.join("metadata").join(format!("{}.torrent", magnet.info_hash)))
}

/// `$XDG_CACHE_HOME/bitswarm` (`~/.cache/bitswarm` without the variable).
fn cache_dir() -> Option<PathBuf> {
    // Relative values are ignored, as the XDG base directory specification says.
    let var = |k| std::env::var_os(k).map(PathBuf::from).filter(|p| p.is_absolute());
    let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("bitswarm"))
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
    match Metainfo::parse(&bytes).and_then(|m| Metainfo::from_info_bytes(m.info_bytes(), &magnet.trackers)) {
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
    let bytes = Metainfo::torrent_file_of(meta.info_bytes(), &magnet.trackers);
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

/// Resolves on SIGINT or SIGTERM, or once stdout is closed (a closed pipe ends a Unix tool).
/// Both listeners are registered before it returns, so no signal from then on is missed;
/// without them (no signal support) only stdout ends it.
pub fn stop_signal() -> impl Future<Output = ()> {
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

fn pct(s: &TorrentStats) -> f64 {
    if s.total == 0 { 100.0 } else { s.have as f64 * 100.0 / s.total as f64 }
}

fn status(s: &TorrentStats, dht: Option<bitswarm_peer::DhtStats>) -> String {
    let eta = match (s.total - s.have).checked_div(s.down_rate) {
        _ if s.complete => "done".to_owned(),
        Some(secs) => format!("eta {secs}s"),
        None => "eta -".to_owned(),
    };
    let dht = dht.map(|d| format!(" dht {} nodes", d.nodes)).unwrap_or_default();
    format!("down {}/s up {}/s peers {} {eta}{dht}", HumanBytes(s.down_rate), HumanBytes(s.up_rate), s.peers)
}

fn summary(s: &TorrentStats) -> String {
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
