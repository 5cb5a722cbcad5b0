//! `bitswarm daemon`: many torrents in one process until SIGINT or SIGTERM, driven through
//! Transmission's RPC, its state kept in an SQLite database.

use std::net::SocketAddr;
use std::path::PathBuf;

use bitswarm_daemon::{Config, DEFAULT_TOML, Daemon};
use clap::Args;

use crate::Failure;

#[derive(Args)]
pub struct DaemonArgs {
    /// A TOML configuration file (see --print-config); unknown keys are refused.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the default configuration, with comments, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The state folder (torrents, settings, resume data) [default: $XDG_DATA_HOME/bitswarm].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Where torrents are downloaded unless added with a folder of their own [default: ~/Downloads].
    #[arg(long, value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// A folder watched for .torrent files (each is added, then renamed .added).
    #[arg(long, value_name = "DIR")]
    pub watch_dir: Option<PathBuf>,
    /// The TCP port for peers (0: a free one, printed) [default: 51413].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// The address to listen on for peers [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    pub bind: Option<std::net::IpAddr>,
    /// The address of the RPC and /metrics (port 0: a free one, printed) [default: 127.0.0.1:9091].
    #[arg(long, value_name = "ADDR")]
    pub rpc: Option<SocketAddr>,
    #[command(flatten)]
    pub dht: crate::peer::DhtArgs,
    #[command(flatten)]
    pub lsd: crate::peer::LsdArgs,
    /// Read a password from stdin, print its hash (for rpc.password_hash), and exit.
    #[arg(long)]
    pub hash_password: bool,
}

pub fn run(a: DaemonArgs) -> Result<(), Failure> {
    if a.print_config {
        crate::out::text(DEFAULT_TOML);
        return Ok(());
    }
    if a.hash_password {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| Failure::failed(format!("stdin: {e}")))?;
        let password = line.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(Failure::usage("an empty password: give one on stdin"));
        }
        outln!("{}", bitswarm_rpc::hash_password(password));
        return Ok(());
    }
    let mut config = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
            Config::from_toml(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None => Config::default(),
    };
    if let Some(d) = a.state {
        config.daemon.state_dir = absolute(d)?;
    }
    if let Some(d) = a.download_dir {
        config.daemon.download_dir = absolute(d)?;
    }
    if let Some(d) = a.watch_dir {
        config.daemon.watch_dir = absolute(d)?;
    }
    if let Some(p) = a.port {
        config.peers.port = p;
    }
    if let Some(b) = a.bind {
        config.peers.bind = b;
    }
    if let Some(r) = a.rpc {
        config.rpc.bind = r;
    }
    if a.dht.no_dht {
        config.dht.enabled = false;
    }
    if !a.dht.dht_routers.is_empty() {
        config.dht.routers = a.dht.dht_routers.clone();
    }
    if a.lsd.no_lsd {
        // No groups: no LSD for the daemon's life, whatever the RPC asks.
        config.lsd.enabled = false;
        config.lsd.groups.clear();
    }
    config.check().map_err(|e| Failure::usage(e.to_string()))?;
    few_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(bitswarm_storage::cores())
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        // Registered first: a signal during the start is not missed.
        let stop = crate::peer::stop_signal();
        let running = Daemon::start(config).await.map_err(|e| Failure::failed(e.to_string()))?;
        let d = running.daemon.clone();
        outln!("peers listening on {}", d.session().listen_addr());
        outln!("RPC: http://{}/transmission/rpc", running.rpc_addr);
        outln!("metrics: http://{}/metrics", running.rpc_addr);
        outln!("web page: http://{}/", running.rpc_addr);
        for url in d.tracker_urls() {
            outln!("tracker: {url}");
        }
        outln!("{} torrents; press Ctrl-C to stop", d.session().torrents().len());
        tokio::select! {
            () = stop => {}
            () = d.closed() => {}
        }
        outln!("stopping: telling the trackers, saving the state");
        running.shutdown().await;
        Ok(())
    })
}

/// Folders given on the command line are taken from the working folder.
fn absolute(p: PathBuf) -> Result<PathBuf, Failure> {
    std::path::absolute(&p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))
}

/// Caps glibc's malloc arenas at two. By default every thread that allocates may get its own
/// (up to eight a core), and each keeps the memory freed into it: a daemon's threads (runtime
/// workers, blocking pool, hashing) held 2 MB more at 1,000 torrents and 8 MB more at 10,000
/// than with two. Two arenas keep the runtime's two kinds of threads off each other's lock.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
