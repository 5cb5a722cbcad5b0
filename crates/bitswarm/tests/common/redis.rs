//! A `redis-server` of a test's own: on a Unix socket in a temporary folder (no TCP port, so
//! nothing to collide with), without persistence, killed when dropped; it can be killed and
//! started again on the same socket (a Redis restart).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one (see [`super::require`]: `None` only when interop tests are skipped on
    /// purpose; a missing `redis-server` fails the test with the install line).
    pub fn start() -> Option<Redis> {
        if !super::require("redis-server") {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("bitswarm-redis-").tempdir().unwrap();
        let mut r = Redis { child: None, socket: dir.path().join("redis.sock"), dir };
        r.up();
        Some(r)
    }

    /// `unix:///…/redis.sock`, for `store.redis_url`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Starts the server (again) and waits until it answers, 10 s at most.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "redis-server runs already");
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: what it held is gone).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pauses the server (SIGSTOP): it keeps its connections and answers none, as a busy Redis
    /// or one behind a link that drops packets.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill runs").success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Sends one command; returns the reply's first line (a bulk reply's text for `INFO`).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}
