//! Torrents, seeders and leechers for the peer tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

pub const LT_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_peer.py");

/// A multi-file tree: nested folders, an empty file, and sizes that make pieces span files.
pub fn make_tree(root: &Path, seed: u64) {
    random_file(&root.join("a.bin"), 100_003, seed);
    random_file(&root.join("sub/b.bin"), 50_001, seed + 1);
    random_file(&root.join("sub/deeper/c.bin"), 170_000, seed + 2);
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/empty.txt"), b"").unwrap();
    random_file(&root.join("z.bin"), 7, seed + 3);
}

/// Makes a torrent of `path` with `bitswarm torrent create` and returns its info-hash.
pub fn create_torrent(path: &Path, out: &Path, extra: &[&str]) -> String {
    let mut c = bitswarm();
    c.args(["torrent", "create", "-q", "--force", "-o"]).arg(out).arg(path).args(extra);
    let (st, stdout, err) = run(c, Duration::from_secs(60));
    assert!(st.success(), "torrent create: {err}");
    stdout.lines().find_map(|l| l.strip_prefix("info-hash: ")).expect("info-hash line").to_owned()
}

/// Every regular file under `a` is also under `b` with the same bytes, and vice versa.
pub fn assert_same_tree(a: &Path, b: &Path) {
    compare_trees(a, b, false)
}

/// As [`assert_same_tree`], but empty files of `a` may be absent from `b` (Transmission 3 does
/// not create zero-length files).
pub fn assert_same_data(a: &Path, b: &Path) {
    compare_trees(a, b, true)
}

fn compare_trees(a: &Path, b: &Path, skip_empty: bool) {
    let files = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let data = std::fs::read(&p).unwrap();
                    if !(skip_empty && data.is_empty()) {
                        out.push((p.strip_prefix(root).unwrap().to_owned(), data));
                    }
                }
            }
        }
        out.sort();
        out
    };
    let (fa, fb) = (files(a), files(b));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb), "same files under {} and {}", a.display(), b.display());
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{} differs ({} vs {} bytes)", name.display(), x.len(), y.len());
    }
}

/// Reads the port from a `listening on IP:PORT` line.
pub fn listening_port(p: &mut Proc) -> u16 {
    let line = p.wait_line(Duration::from_secs(60), |l| l.starts_with("listening on "));
    line.rsplit(':').next().unwrap().trim().parse().expect("port")
}

/// `bitswarm seed` on an ephemeral loopback port; returns it with its port.
pub fn our_seed(torrent: &Path, dir: &Path, extra: &[&str]) -> (Proc, u16) {
    our_peer("seed", torrent, dir, extra, None)
}

/// `bitswarm join` on an ephemeral loopback port.
pub fn our_join(torrent: &Path, dir: &Path, extra: &[&str]) -> (Proc, u16) {
    our_peer("join", torrent, dir, extra, None)
}

/// The log filter that shows how each connection started and why a handshake failed.
pub const CONN_LOG: &str = "warn,bitswarm_peer::conn=debug";

/// `bitswarm seed` or `join` (`command`) on an ephemeral loopback port, with `BITSWARM_LOG` set
/// to `log` when given. These tests run every client on 127.0.0.1, so the limit of connections
/// per address is off unless `extra` sets it (the demo and the tests of that limit give each
/// peer an address of its own).
pub fn our_peer(command: &str, torrent: &Path, dir: &Path, extra: &[&str], log: Option<&str>) -> (Proc, u16) {
    let mut extra = extra.to_vec();
    if !extra.contains(&"--max-peers-per-ip") {
        extra.extend(["--max-peers-per-ip", "0"]);
    }
    our_peer_on("127.0.0.1", command, torrent, dir, &extra, log)
}

/// [`our_peer`] on address `host` (of 127/8, as another host would be), with the limit of
/// connections per address as `extra` says (one by default).
pub fn our_peer_on(
    host: &str,
    command: &str,
    torrent: &Path,
    dir: &Path,
    extra: &[&str],
    log: Option<&str>,
) -> (Proc, u16) {
    let mut c = bitswarm();
    c.args([command, "--port", "0", "--bind", host, "-d"]).arg(dir).arg(torrent).args(extra);
    if let Some(filter) = log {
        c.env("BITSWARM_LOG", filter);
    }
    let mut p = Proc::spawn(&format!("bitswarm {command}"), c);
    let port = listening_port(&mut p);
    (p, port)
}

/// Waits for the first connection our peer logged in `direction` (`incoming` or `outgoing`;
/// see [`CONN_LOG`]) and checks how it started (`plaintext`, `MSE, plaintext stream`, `MSE, RC4
/// stream`).
pub fn assert_connection(p: &mut Proc, direction: &str, how: &str) {
    let prefix = format!("connected ({direction}, ");
    let line = p.wait_line(Duration::from_secs(120), |l| l.contains(&prefix));
    assert!(line.ends_with(&format!("{prefix}{how})")), "expected a connection {how}, got: {line}");
}

/// Lines of our connection log (see [`CONN_LOG`]) that tell of a failed handshake.
pub fn failed_handshakes(p: &mut Proc) -> Vec<String> {
    p.output();
    p.seen.iter().filter(|l| l.contains(": handshake")).cloned().collect()
}

/// A libtorrent peer (`lt_peer.py`); returns it with its listening port.
pub fn lt_peer(mode: &str, torrent: &Path, dir: &Path, peers: &[String]) -> (Proc, u16) {
    lt_peer_enc(mode, torrent, dir, peers, "default")
}

/// As [`lt_peer`], with libtorrent's encryption policy `enc`: `default` (libtorrent's own: MSE
/// tried first on outgoing connections, both accepted), `forced` (MSE with RC4 only, both ways)
/// or `disabled` (plaintext only, both ways).
pub fn lt_peer_enc(mode: &str, torrent: &Path, dir: &Path, peers: &[String], enc: &str) -> (Proc, u16) {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(LT_PEER).arg(mode).arg(torrent).arg(dir).arg(format!("--enc={enc}")).args(peers);
    let mut p = Proc::spawn(&format!("libtorrent {mode}"), c);
    let line = p.wait_line(Duration::from_secs(30), |l| l.starts_with("port "));
    (p, line[5..].trim().parse().unwrap())
}

/// A libtorrent seeder of `dir` with encryption policy `enc` (see [`lt_peer_enc`]), returned
/// with its listening port once it has checked the data and seeds (within `within`).
pub fn lt_seeder(torrent: &Path, dir: &Path, enc: &str, within: Duration) -> (Proc, u16) {
    let (mut p, port) = lt_peer_enc("seed", torrent, dir, &[], enc);
    p.wait_line(within, |l| l == "seeding");
    (p, port)
}

/// aria2c seeding `dir` on `port`, or leeching into it and exiting when done.
pub fn aria2(seed: bool, torrent: &Path, dir: &Path, port: u16) -> Proc {
    let mut c = Command::new("aria2c");
    c.arg(format!("--dir={}", dir.display()))
        .arg(format!("--listen-port={port}"))
        .args(["--enable-dht=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--summary-interval=1"])
        .args(["--console-log-level=notice", "--no-conf=true", "--bt-stop-timeout=0"]);
    if seed {
        c.args(["--seed-ratio=0", "--bt-seed-unverified=true", "--check-integrity=false"]);
    } else {
        c.args(["--seed-time=0", "--file-allocation=none"]);
    }
    c.arg(torrent);
    Proc::spawn(if seed { "aria2 seed" } else { "aria2 leech" }, c)
}

/// `bitswarm tracker` on loopback ephemeral ports (HTTP and UDP), with an optional config.
pub struct OurTracker {
    pub proc: Proc,
    pub http: std::net::SocketAddr,
    pub udp: std::net::SocketAddr,
}

impl OurTracker {
    pub fn start(dir: &Path, config: &str) -> OurTracker {
        OurTracker::start_on(dir, config, "127.0.0.1")
    }

    /// [`OurTracker::start`] with HTTP and UDP on `host` (an IP address; IPv6 in brackets).
    pub fn start_on(dir: &Path, config: &str, host: &str) -> OurTracker {
        OurTracker::spawn(dir, config, host, None, &[])
    }

    /// [`OurTracker::start`] with more arguments (`--state DIR`, say) and environment variables.
    pub fn start_with(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> OurTracker {
        OurTracker::spawn_with(dir, config, "127.0.0.1", None, args, env)
    }

    /// [`OurTracker::start`] from a shell that runs `prelude` first (`ulimit -Sn 100`, say);
    /// the shell then execs the tracker, so the process is the tracker itself.
    pub fn start_in_shell(dir: &Path, config: &str, prelude: &str) -> OurTracker {
        OurTracker::spawn(dir, config, "127.0.0.1", Some(prelude), &[])
    }

    fn spawn(dir: &Path, config: &str, host: &str, prelude: Option<&str>, args: &[&str]) -> OurTracker {
        OurTracker::spawn_with(dir, config, host, prelude, args, &[])
    }

    fn spawn_with(
        dir: &Path,
        config: &str,
        host: &str,
        prelude: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> OurTracker {
        let cfg = dir.join("tracker.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut c = bitswarm();
        let bind = format!("{host}:0");
        c.args(["tracker", "--http", &bind, "--udp", &bind, "--config"]).arg(&cfg).args(args);
        c.envs(env.iter().copied());
        if let Some(prelude) = prelude {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(format!("{prelude} && exec \"$0\" \"$@\"")).arg(c.get_program()).args(c.get_args());
            sh.envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))));
            c = sh;
        }
        let mut proc = Proc::spawn("bitswarm tracker", c);
        let addr = |l: String| -> std::net::SocketAddr { l.rsplit(' ').next().unwrap().parse().unwrap() };
        let t = Duration::from_secs(60);
        let http = addr(proc.wait_line(t, |l| l.starts_with("HTTP tracker listening on ")));
        let udp = addr(proc.wait_line(t, |l| l.starts_with("UDP tracker listening on ")));
        // The last start-up line: everything before it has been printed.
        proc.wait_line(t, |l| l == "press Ctrl-C to stop");
        assert_ne!(http.port(), 0);
        OurTracker { proc, http, udp }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/announce", self.http)
    }

    pub fn udp_url(&self) -> String {
        format!("udp://{}/announce", self.udp)
    }

    /// (complete, incomplete, downloaded) from an HTTP scrape of `info_hash` (40 hex).
    pub fn scrape(&self, info_hash: &str) -> (u32, u32, u32) {
        use std::io::{Read, Write};
        let h = bitswarm_metainfo::InfoHash::parse(info_hash).unwrap();
        let q = bitswarm_tracker_proto::http::scrape_query(&[h]);
        let mut s = std::net::TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /scrape?{q} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let at = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let r = bitswarm_tracker_proto::http::ScrapeResponse::decode(&resp[at..]).unwrap();
        let st = r.get(&h).unwrap();
        (st.complete, st.incomplete, st.downloaded)
    }

    /// Waits until the scrape says exactly `want` = (complete, incomplete, downloaded).
    pub fn wait_scrape(&self, info_hash: &str, want: (u32, u32, u32), what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.scrape(info_hash);
            if last == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: waited 60 s for scrape {want:?}, last saw {last:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Parses `transfer: downloaded D bytes, uploaded U bytes` into (D, U).
pub fn transfer_line(p: &mut Proc) -> (u64, u64) {
    let l = p.wait_line(Duration::from_secs(60), |l| l.starts_with("transfer: downloaded "));
    let n: Vec<u64> = l.split(' ').filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

/// A seeded tree under `src/tree` (see [`make_tree`]), its torrent with 16 KiB pieces (which span
/// the files), and an empty `dst`, all in a temporary folder.
pub struct TreeSetup {
    pub dir: tempfile::TempDir,
    pub torrent: PathBuf,
    pub src: PathBuf,
    pub dst: PathBuf,
}

impl TreeSetup {
    /// `create` adds arguments to `torrent create` (trackers, say).
    pub fn new(seed: u64, create: &[&str]) -> TreeSetup {
        let dir = tempdir();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        make_tree(&src.join("tree"), seed);
        let torrent = dir.path().join("tree.torrent");
        let mut args = vec!["--piece-size", "16K"];
        args.extend_from_slice(create);
        create_torrent(&src.join("tree"), &torrent, &args);
        TreeSetup { dir, torrent, src, dst }
    }

    /// transmission-cli downloading into `dst`, listening on `port`, with an encryption flag
    /// (`-et` tolerated, `-ep` preferred, `-er` required); returned once it has started.
    pub fn transmission_leecher(&self, encryption: &str, port: u16) -> Proc {
        self.transmission_leecher_of(self.torrent.as_os_str(), encryption, port)
    }

    /// As [`TreeSetup::transmission_leecher`], given `what`: the torrent file or a magnet link.
    pub fn transmission_leecher_of(&self, what: &std::ffi::OsStr, encryption: &str, port: u16) -> Proc {
        let mut c = Command::new("transmission-cli");
        c.args([encryption, "-M", "-p", &port.to_string(), "-g"])
            .arg(self.dir.path().join("transmission-config"))
            .arg("-w")
            .arg(&self.dst)
            .arg(what);
        let mut tr = Proc::spawn("transmission-cli", c);
        tr.wait_line(Duration::from_secs(60), |l| {
            l.contains("Progress") || l.contains("Port") || l.contains("Transmission")
        });
        tr
    }
}
