//! Shared support for the integration tests: the binary under test, real programs, child
//! processes that are always ended, and waiting on events with a deadline.
#![allow(dead_code)]

pub mod daemon;
pub mod redis;
pub mod swarm;
pub mod udp_client;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `bitswarm` binary built for these tests.
pub fn bitswarm() -> Command {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitswarm"));
    c.env("NO_COLOR", "1");
    // No DHT node unless a test asks for one (and points it at its own loopback nodes): nothing
    // a test starts may look for the public routers.
    c.env("BITSWARM_NO_DHT", "1");
    // Nor Local Service Discovery: nothing multicasts unless a test asks (inside a network
    // namespace of its own, tests/lsd.rs).
    c.env("BITSWARM_NO_LSD", "1");
    // A cache of its own (made only when used): metadata that one run of a magnet link saved
    // never stands in for the fetch another test checks. A test that wants runs to share one
    // sets XDG_CACHE_HOME again.
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    c.env(
        "XDG_CACHE_HOME",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cache-{}-{n}-{t}", std::process::id())),
    );
    c
}

pub const INSTALL: &str = "apt-get install -y aria2 transmission-cli python3-libtorrent opentracker mktorrent openssl python3-prometheus-client redis-server chromium chromium-driver python3-selenium";

/// True when the interop tests are skipped on purpose (`BITSWARM_SKIP_INTEROP=1`).
pub fn skip_interop() -> bool {
    std::env::var("BITSWARM_SKIP_INTEROP").is_ok_and(|v| v == "1")
}

/// Makes sure a real program is available. Returns false only when interop tests are skipped
/// explicitly; a missing program otherwise fails the test with the install line.
pub fn require(program: &str) -> bool {
    if skip_interop() {
        eprintln!("skipping: BITSWARM_SKIP_INTEROP=1");
        return false;
    }
    // Python modules (Debian's python3-libtorrent, python3-prometheus-client, python3-selenium)
    // are imported.
    let found = if matches!(program, "libtorrent" | "prometheus_client" | "selenium") {
        Command::new("/usr/bin/python3")
            .args(["-c", &format!("import {program}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    } else {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        found,
        "{program} is not installed; install the interop programs with `{INSTALL}` (or `scripts/install-deps`), \
         or set BITSWARM_SKIP_INTEROP=1 to skip interop tests explicitly"
    );
    true
}

/// A child process that is killed and reaped when dropped, whatever happens in the test.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// Lines of stdout and stderr, as they arrive.
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr captured line by line.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        forward(out, tx.clone());
        forward(err, tx);
        Proc { child, name: name.to_owned(), lines: rx, seen: Vec::new() }
    }

    /// Waits until a line of output satisfies `pred` and returns it; panics with everything the
    /// process printed if that does not happen within `timeout` or the process ends first.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let out = self.output();
                    panic!("{}: expected output did not come within {timeout:?}; it printed:\n{out}", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    let out = self.output();
                    panic!("{}: ended ({status:?}) before the expected output; it printed:\n{out}", self.name)
                }
            }
        }
    }

    /// A line printed so far that satisfies `pred`, without waiting.
    pub fn printed(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.iter().find(|l| pred(l)).cloned()
    }

    /// Everything printed so far.
    pub fn output(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// Waits for the process to exit by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let out = self.output();
                panic!("{}: did not exit within {timeout:?}; it printed:\n{out}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (as Ctrl-C would).
    pub fn interrupt(&self) {
        signal(self.child.id(), "INT");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn forward(r: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}

/// Polls `cond` every 20 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 for a program that cannot be told to pick its own (the OS picks
/// it; the port is released just before the program binds it).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// Writes `len` bytes of deterministic pseudo-random data (seeded) to `path`.
pub fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, &data).unwrap();
    data
}

/// Runs a command to completion within `timeout`, returning (status, stdout, stderr).
pub fn run(mut cmd: Command, timeout: Duration) -> (std::process::ExitStatus, String, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, t_out.join().unwrap(), t_err.join().unwrap())
}

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bitswarm-test-").tempdir().unwrap()
}

/// Path of a file under a folder, as a String (for command lines).
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

pub fn path(p: impl Into<PathBuf>) -> PathBuf {
    p.into()
}
