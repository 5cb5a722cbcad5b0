//! `bitswarm tracker`: run the HTTP and UDP tracker until SIGINT or SIGTERM; and the private
//! tracker's users and torrents (`bitswarm tracker user ...`, `bitswarm tracker torrent ...`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitswarm_tracker::config::AccessMode;
use bitswarm_tracker::{Backend, Config, DEFAULT_TOML, Shared, Tracker};
use clap::Args;

use crate::Failure;
pub use crate::tracker_admin::TrackerCommand;

#[derive(Args)]
pub struct TrackerArgs {
    #[command(subcommand)]
    pub command: Option<TrackerCommand>,
    /// HTTP address to serve announce, scrape, stats and metrics on ("off" to turn HTTP off)
    /// [default: 0.0.0.0:6969, or the config file's].
    #[arg(long, value_name = "ADDR|off", value_parser = parse_addr)]
    pub http: Option<Bind>,
    /// UDP address to serve the UDP tracker protocol on ("off" to turn UDP off)
    /// [default: 0.0.0.0:6969, or the config file's].
    #[arg(long, value_name = "ADDR|off", value_parser = parse_addr)]
    pub udp: Option<Bind>,
    /// A TOML configuration file (see --print-config); unknown keys are refused.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Private mode's state folder (its database, tracker.db) [default: the config file's
    /// private.state, else $XDG_DATA_HOME/bitswarm/tracker].
    #[arg(long, global = true, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Print the default configuration, with comments, and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum Bind {
    Off,
    At(SocketAddr),
}

fn parse_addr(s: &str) -> Result<Bind, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Bind::Off);
    }
    s.parse().map(Bind::At).map_err(|_| format!("{s:?} is not an address like 0.0.0.0:6969 or [::]:6969, nor \"off\""))
}

/// The configuration file's settings (the defaults without one), with `--state` applied.
fn load_config(args: &TrackerArgs) -> Result<Config, Failure> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
            Config::from_toml(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None => Config::default(),
    };
    if let Some(dir) = &args.state {
        config.private.state = dir.clone();
    }
    Ok(config)
}

pub fn run(mut args: TrackerArgs) -> Result<(), Failure> {
    if args.print_config {
        crate::out::text(DEFAULT_TOML);
        return Ok(());
    }
    if let Some(command) = args.command.take() {
        if args.http.is_some() || args.udp.is_some() {
            return Err(Failure::usage("--http and --udp are for running the tracker, not for its subcommands"));
        }
        let config = load_config(&args)?;
        return crate::tracker_admin::run(command, &config);
    }
    let mut config = load_config(&args)?;
    match args.http {
        Some(Bind::Off) => config.http.enabled = false,
        Some(Bind::At(a)) => (config.http.enabled, config.http.bind) = (true, a),
        None => {}
    }
    match args.udp {
        Some(Bind::Off) => config.udp.enabled = false,
        Some(Bind::At(a)) => (config.udp.enabled, config.udp.bind) = (true, a),
        None => {}
    }
    // A bad setting or an access list that cannot be read is bad input, found before anything
    // starts.
    let shared = Shared::new(config).map_err(Failure::usage)?;

    // The HTTP and UDP servers run on threads of their own; this runtime only waits for a
    // signal and runs the cleaner.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve(shared))
}

async fn serve(shared: Shared) -> Result<(), Failure> {
    // Handlers first: a signal that comes as soon as the addresses are printed must stop the
    // tracker cleanly, not kill it with the default disposition.
    let mut signals = Signals::install().map_err(|e| Failure::failed(format!("cannot handle signals: {e}")))?;
    let tracker = Tracker::start_with(shared).await.map_err(|e| Failure::failed(e.to_string()))?;
    if let Some(a) = tracker.http_addr {
        outln!("HTTP tracker listening on {a}");
    }
    if let Some(a) = tracker.udp_addr {
        outln!("UDP tracker listening on {a}");
    }
    outln!("announce URLs (put them in your torrents; use this machine's public address for other hosts):");
    for url in [tracker.http_announce_url(), tracker.udp_announce_url()].into_iter().flatten() {
        outln!("  {url}");
    }
    let backend = &tracker.shared().backend;
    match backend {
        Backend::Redis(r) => match r.ping().await {
            Ok(()) => outln!("store: {} (answering)", backend.describe()),
            Err(e) => outln!(
                "store: {} (not answering yet: {e}; announces get a failure reason until it does)",
                backend.describe()
            ),
        },
        Backend::Memory(_) => outln!("store: {}", backend.describe()),
    }
    if let Some(url) = tracker.stats_url() {
        outln!("stats: {url} (HTML), {url}stats (JSON), {url}metrics (Prometheus)");
    }
    let access = &tracker.shared().access;
    match access.mode() {
        AccessMode::Off => {}
        AccessMode::Private => {
            let p = tracker.shared().private.as_ref().expect("private mode has its state");
            let view = p.view();
            outln!(
                "access: private, {} users and {} registered torrents in {} (announce URLs: \
                 `bitswarm tracker user add NAME`)",
                view.users.len(),
                view.torrents.len(),
                p.dir().join(bitswarm_tracker::private::db::FILE).display()
            );
        }
        mode => outln!(
            "access: {} the {} info-hashes in {} (SIGHUP reads it again)",
            if mode == AccessMode::Allow { "serving only" } else { "refusing" },
            access.len(),
            access.path().display()
        ),
    }
    outln!("press Ctrl-C to stop");
    while let Signal::Reload = signals.next().await {
        // SIGHUP also comes when the terminal closes: a failed write to it is no reason to stop.
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = match tracker.reload_access().await {
            Ok(n) if access.mode() == AccessMode::Private => {
                writeln!(out, "state database read again: {n} registered torrents")
            }
            Ok(n) if access.mode() != AccessMode::Off => writeln!(out, "access list read again: {n} info-hashes"),
            Ok(_) => writeln!(out, "no access list to read again (access.mode is off)"),
            Err(e) => {
                tracing::warn!("{e}; the list in force stays");
                Ok(())
            }
        };
    }
    // After SIGHUP the terminal may be gone: writes to it may fail, the stop goes on.
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "stopping");
    if tokio::time::timeout(Duration::from_secs(5), tracker.shutdown()).await.is_err() {
        tracing::warn!("some connections did not close within 5 s; stopping anyway");
    }
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(())
}

/// What a signal asks for.
enum Signal {
    Stop,
    /// SIGHUP: read the access list again.
    Reload,
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), and SIGHUP, listened for from the moment of `install`.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => Signal::Stop,
            _ = self.term.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}
