//! The `bitswarm` command: a thin layer of argument parsing and progress display over the
//! library crates.

mod progress;
mod torrent;
mod tracker;

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
}

#[derive(Subcommand)]
enum Command {
    /// Make, inspect and check .torrent files.
    #[command(subcommand)]
    Torrent(torrent::TorrentCommand),
    /// Run a BitTorrent tracker (HTTP and UDP announce and scrape, stats, metrics).
    Tracker(tracker::TrackerArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Torrent(c) => torrent::run(c),
        Command::Tracker(a) => tracker::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("bitswarm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
