//! `bitswarm daemon` for the tests: started on loopback ephemeral ports with a state folder of
//! its own, and a small Transmission RPC client (the session-id handshake, then JSON).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// A file of `len` random bytes at `dir/src/name`, and its torrent (16 KiB pieces) at
/// `dir/name.torrent` announcing to `tracker`: the torrent's path and info-hash.
pub fn torrent_of(dir: &Path, name: &str, len: usize, seed: u64, tracker: &str) -> (PathBuf, String) {
    random_file(&dir.join("src").join(name), len, seed);
    let torrent = dir.join(format!("{name}.torrent"));
    let hash =
        super::swarm::create_torrent(&dir.join("src").join(name), &torrent, &["--piece-size", "16K", "-t", tracker]);
    (torrent, hash)
}

pub struct OurDaemon {
    pub proc: Proc,
    pub rpc: SocketAddr,
    pub peer_port: u16,
    pub state: PathBuf,
    pub downloads: PathBuf,
    session_id: Mutex<String>,
    auth: Option<(String, String)>,
}

impl OurDaemon {
    /// A daemon with its state under `dir/state` and downloads under `dir/downloads`;
    /// `config` is written to a file given with --config; `log` sets BITSWARM_LOG.
    pub fn start(dir: &Path, config: &str, log: Option<&str>) -> OurDaemon {
        OurDaemon::spawn(dir, config, log, &[], &[])
    }

    /// [`OurDaemon::start`] with these environment variables set (`TZ`…).
    pub fn start_with_env(dir: &Path, config: &str, log: Option<&str>, env: &[(&str, &str)]) -> OurDaemon {
        OurDaemon::spawn(dir, config, log, &[], env)
    }

    /// [`OurDaemon::start`] with its DHT node on, as `config` sets it (the test points it at
    /// its own routers).
    pub fn start_with_dht(dir: &Path, config: &str, log: Option<&str>) -> OurDaemon {
        OurDaemon::spawn(dir, config, log, &["BITSWARM_NO_DHT"], &[])
    }

    /// [`OurDaemon::start`] with Local Service Discovery as `config` says (on by default): only
    /// inside a network namespace of the test's own (tests/lsd.rs).
    pub fn start_with_lsd(dir: &Path, config: &str, log: Option<&str>) -> OurDaemon {
        OurDaemon::spawn(dir, config, log, &["BITSWARM_NO_LSD"], &[])
    }

    /// `unset`: the variables of [`bitswarm`] that turn things off, taken away.
    fn spawn(dir: &Path, config: &str, log: Option<&str>, unset: &[&str], env: &[(&str, &str)]) -> OurDaemon {
        let state = dir.join("state");
        let downloads = dir.join("downloads");
        let cfg = dir.join("daemon.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut c = bitswarm();
        c.args(["daemon", "--port", "0", "--bind", "127.0.0.1", "--rpc", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--state")
            .arg(&state)
            .arg("--download-dir")
            .arg(&downloads);
        if let Some(l) = log {
            c.env("BITSWARM_LOG", l);
        }
        for v in unset {
            c.env_remove(v);
        }
        c.envs(env.iter().copied());
        let mut proc = Proc::spawn("bitswarm daemon", c);
        let t = Duration::from_secs(60);
        let peers = proc.wait_line(t, |l| l.starts_with("peers listening on "));
        let peer_port = peers.rsplit(':').next().unwrap().parse().unwrap();
        let rpc = proc.wait_line(t, |l| l.starts_with("RPC: http://"));
        let rpc: SocketAddr = rpc["RPC: http://".len()..].split('/').next().unwrap().parse().unwrap();
        OurDaemon { proc, rpc, peer_port, state, downloads, session_id: Mutex::new(String::new()), auth: None }
    }

    /// Calls with this user and password from now on.
    pub fn with_auth(mut self, user: &str, password: &str) -> OurDaemon {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// transmission-remote against this daemon (as typed: `-l`, `-t 1 -S`…); its output.
    pub fn remote(&self, args: &[&str]) -> String {
        let mut c = Command::new("transmission-remote");
        c.arg(self.rpc.to_string());
        if let Some((u, p)) = &self.auth {
            c.args(["-n", &format!("{u}:{p}")]);
        }
        c.args(args);
        let (st, out, err) = run(c, Duration::from_secs(60));
        assert!(st.success(), "transmission-remote {args:?}: {st:?}\n{out}{err}");
        out
    }

    /// One raw HTTP request; (status, headers, body).
    pub fn http(&self, request: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(self.rpc).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }

    /// A Transmission RPC call: its `arguments` (the result must be "success").
    pub fn rpc(&self, method: &str, arguments: serde_json::Value) -> serde_json::Value {
        let v = self.rpc_reply(method, arguments);
        assert_eq!(v["result"], "success", "{method}: {v}");
        v["arguments"].clone()
    }

    /// A Transmission RPC call: the whole reply (`result`, `arguments`).
    pub fn rpc_reply(&self, method: &str, arguments: serde_json::Value) -> serde_json::Value {
        let body = serde_json::json!({ "method": method, "arguments": arguments }).to_string();
        for _ in 0..3 {
            let sid = self.session_id.lock().unwrap().clone();
            let auth = match &self.auth {
                Some((u, p)) => format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}"))),
                None => String::new(),
            };
            let req = format!(
                "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
                 X-Transmission-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let (status, head, text) = self.http(&req);
            if status == 409 {
                let id = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-transmission-session-id").then(|| v.trim().to_owned())
                    })
                    .expect("a 409 carries the session id");
                *self.session_id.lock().unwrap() = id;
                continue;
            }
            assert_eq!(status, 200, "{method}: {head}\n{text}");
            return serde_json::from_str(&text).unwrap();
        }
        panic!("{method}: no session id after three tries");
    }

    /// The session id the daemon handed out (after a first call).
    pub fn session_id(&self) -> String {
        self.session_id.lock().unwrap().clone()
    }

    /// torrent-get of these fields for every torrent.
    pub fn torrents(&self, fields: &[&str]) -> Vec<serde_json::Value> {
        let v = self.rpc("torrent-get", serde_json::json!({ "fields": fields }));
        v["torrents"].as_array().unwrap().clone()
    }

    /// torrent-get of one torrent by id.
    pub fn torrent(&self, id: u64, fields: &[&str]) -> serde_json::Value {
        let v = self.rpc("torrent-get", serde_json::json!({ "ids": id, "fields": fields }));
        v["torrents"][0].clone()
    }

    /// Waits until `pred` holds for torrent `id`'s fields, or fails naming `what`.
    pub fn wait_torrent(&self, id: u64, fields: &[&str], what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let mut last = serde_json::Value::Null;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(Duration::from_secs(120), what, || {
                last = self.torrent(id, fields);
                pred(&last).then_some(())
            })
        }));
        if r.is_err() {
            panic!("{what}: torrent {id} last seen as {last}");
        }
    }

    /// Stops it with SIGTERM and waits for it to exit 0.
    pub fn stop(&mut self) {
        self.proc.interrupt();
        let st = self.proc.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "daemon exit: {st:?}\n{}", self.proc.output());
    }
}

/// Base64 (standard alphabet, padded) for basic auth.
/// What `bitswarm daemon --hash-password` prints for `password` (the config's `password_hash`).
pub fn password_hash(password: &str) -> String {
    let mut c = bitswarm();
    c.args(["daemon", "--hash-password"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The python of the virtualenv that holds PyPI's transmission-rpc (made by
/// `crates/rpc/tests/support/venv.sh`, which scripts/install-deps runs).
pub fn transmission_rpc_python() -> Option<String> {
    if skip_interop() {
        eprintln!("skipping: BITSWARM_SKIP_INTEROP=1");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rpc/tests/support/venv.sh");
    let out = Command::new("sh").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "the transmission-rpc virtualenv cannot be made: {}; run scripts/install-deps (it needs PyPI) first",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
}
