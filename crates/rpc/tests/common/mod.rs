//! Support for the integration tests: an in-memory fake daemon behind the real router on a
//! loopback port, and the real client programs, always bounded in time and killed.
#![allow(dead_code)]

pub mod fake;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bitswarm_rpc::RpcConfig;
use fake::FakeDaemon;

/// How long one client command may take before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// The router serving a fake daemon on 127.0.0.1 and a port the system chose. Dropping it
/// stops the server.
pub struct Server {
    pub addr: SocketAddr,
    pub daemon: Arc<FakeDaemon>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(config: RpcConfig) -> Server {
        let daemon = Arc::new(FakeDaemon::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = bitswarm_rpc::router(Arc::clone(&daemon), config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, service)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Server { addr, daemon, stop: Some(tx), task }
    }

    /// `host:port` as transmission-remote takes it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

pub const INSTALL_REMOTE: &str = "apt-get install -y transmission-cli";
pub const INSTALL_PYTHON: &str = "apt-get install -y python3 python3-venv, and PyPI reachable for \
    crates/rpc/tests/support/venv.sh (run it once before tests that run without network)";

/// True when the interop tests are skipped on purpose (`BITSWARM_SKIP_INTEROP=1`).
pub fn skip_interop() -> bool {
    std::env::var("BITSWARM_SKIP_INTEROP").is_ok_and(|v| v == "1")
}

/// Makes sure a program is installed. Returns false (after saying so) only when interop tests
/// are skipped on purpose; otherwise a missing program fails the test with the install line.
pub fn require(program: &str, install: &str) -> bool {
    if skip_interop() {
        eprintln!("skipping: BITSWARM_SKIP_INTEROP=1");
        return false;
    }
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not installed: `{install}`, or set BITSWARM_SKIP_INTEROP=1 to skip the interop tests explicitly"
    );
    true
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a command to its end, killed after [`COMMAND_TIMEOUT`]. Proxies from the environment
/// are turned off: the server is on loopback.
pub async fn run(mut cmd: tokio::process::Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*");
    let shown = format!("{cmd:?}");
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{shown} did not finish within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// This crate's folder.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A minimal single-file .torrent (bencoded by hand: the fake daemon only reads its name).
pub fn write_torrent(dir: &Path, name: &str) -> PathBuf {
    write_torrent_padded(dir, name, 0)
}

/// The same with a comment of `pad` bytes, to make a large file.
pub fn write_torrent_padded(dir: &Path, name: &str, pad: usize) -> PathBuf {
    let mut b = Vec::new();
    b.extend_from_slice(b"d8:announce30:http://127.0.0.1:6969/announce");
    if pad > 0 {
        b.extend_from_slice(format!("7:comment{pad}:").as_bytes());
        b.extend(std::iter::repeat_n(b'c', pad));
    }
    b.extend_from_slice(b"4:infod6:lengthi300000e4:name");
    b.extend_from_slice(format!("{}:{name}", name.len()).as_bytes());
    b.extend_from_slice(b"12:piece lengthi32768e6:pieces20:");
    b.extend_from_slice(&[0x5a; 20]);
    b.extend_from_slice(b"ee");
    let path = dir.join(format!("{name}.torrent"));
    std::fs::write(&path, b).expect("write the .torrent");
    path
}
