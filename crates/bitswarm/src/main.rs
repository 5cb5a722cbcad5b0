//! The `bitswarm` command: a thin layer of argument parsing and progress display over the
//! library crates.

#[macro_use]
mod out;

mod daemon;
mod demo;
mod dht;
mod peer;
mod progress;
mod torrent;
mod tracker;
mod tracker_admin;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when the command ran but its verdict is negative (for example `torrent verify`
/// found missing or bad pieces) or the work failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a bad command line or unusable input (clap uses it too).
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "bitswarm", version, about = "A BitTorrent tracker and peer in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The largest .torrent file to read (K, M, G suffixes accepted); a larger one is refused.
    #[arg(long, global = true, value_name = "BYTES", value_parser = units::parse_positive,
          default_value_t = torrent::DEFAULT_MAX_TORRENT_SIZE, hide_default_value = true)]
    max_torrent_size: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Make, inspect and check .torrent files.
    #[command(subcommand)]
    Torrent(torrent::TorrentCommand),
    /// Serve a torrent's data, already complete under DIR, until stopped.
    Seed(peer::PeerArgs),
    /// Download a torrent into DIR, verifying every piece, then seed until stopped.
    Join(peer::JoinArgs),
    /// Run a whole swarm on this machine: a tracker, seeders and leechers, then check the data.
    Demo(demo::DemoArgs),
    /// Run a BitTorrent tracker (HTTP and UDP announce and scrape, stats, metrics).
    Tracker(tracker::TrackerArgs),
    /// Run many torrents until stopped, driven through Transmission's RPC (transmission-remote,
    /// Sonarr, Flood…), their state kept across restarts.
    Daemon(daemon::DaemonArgs),
    /// Run a Mainline DHT node alone (no torrents) until stopped: a router for a DHT of one's own.
    Dht(dht::DhtArgs),
}

/// An error to print as `bitswarm: MESSAGE` with a chosen exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure { code: EXIT_USAGE, message: message.into() }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Failure { code: EXIT_FAILURE, message: message.into() }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::failed(format!("{e:#}"))
    }
}

/// Logs go to stderr; `BITSWARM_LOG` (or `RUST_LOG`) sets the filter, `warn` by default.
fn init_logging() {
    let filter = std::env::var("BITSWARM_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    torrent::MAX_TORRENT_SIZE.store(cli.max_torrent_size, std::sync::atomic::Ordering::Relaxed);
    if !matches!(cli.command, Command::Torrent(_)) {
        raise_open_files_limit();
    }
    let result = match cli.command {
        Command::Torrent(c) => torrent::run(c),
        Command::Seed(a) => peer::seed(a),
        Command::Join(a) => peer::join(a),
        Command::Demo(a) => demo::run(a),
        Command::Tracker(a) => tracker::run(a),
        Command::Daemon(a) => daemon::run(a),
        Command::Dht(a) => dht::run(a),
    };
    // Output that could not be written is a failure of its own (a closed pipe is not: the
    // reader went away on purpose).
    let result = result.and_then(|()| out::error().map_or(Ok(()), |e| Err(Failure::failed(e))));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            errln!("bitswarm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Raises the soft limit on open files to the hard one for the commands that serve: the
/// tracker holds a socket per HTTP client (kept alive between announces), a peer one per
/// connection and per open file, and the usual soft limit (1024) is far below what the system
/// allows (systemd's hard limit is 524288). Where it cannot be raised, the old one stays: a
/// tracker at its limit still serves, refusing connections for a moment (logged).
#[cfg(unix)]
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    // An unlimited hard limit: Linux still refuses more than fs.nr_open (1048576 by default).
    let want = if lim.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { lim.rlim_max };
    if lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::debug!("open files limit stays {}: {}", lim.rlim_cur, std::io::Error::last_os_error());
    }
}

#[cfg(not(unix))]
fn raise_open_files_limit() {}
