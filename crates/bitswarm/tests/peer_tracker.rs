//! Our peers finding each other through our tracker: a swarm of one seeder and five leechers in
//! which the leechers trade pieces among themselves, and the announce events (started, completed,
//! stopped) arriving at the tracker over HTTP and UDP, checked by scrape; a leecher that has only
//! a magnet link finding the seeder through the tracker and the metadata from the seeder; an
//! `https://` tracker (ours behind a TLS proxy); a tracker URL that redirects.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(150);

#[test]
fn one_seeder_five_leechers_trade_through_our_tracker() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let src = t.path().join("seed");
    let len = 6 << 20;
    random_file(&src.join("data.bin"), len, 5);
    let torrent = t.path().join("data.torrent");
    let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &tracker.http_url()]);

    // The seeder alone could send 1 MiB/s: five leechers (30 MiB in all) finish in time only
    // by trading among themselves. Each peer on an address of its own, as on different hosts,
    // with the default limit of one connection per address.
    let (mut seed, _) = our_peer_on("127.0.0.2", "seed", &torrent, &src, &["--max-upload-rate", "1M"], None);
    let mut leechers: Vec<Proc> = (0..5)
        .map(|i| {
            let dst = t.path().join(format!("leech{i}"));
            std::fs::create_dir_all(&dst).unwrap();
            our_peer_on(&format!("127.0.0.{}", 3 + i), "join", &torrent, &dst, &["--exit-when-done"], None).0
        })
        .collect();
    let mut uploaded_by_leechers = 0;
    for (i, l) in leechers.iter_mut().enumerate() {
        let status = l.wait_exit(T);
        assert!(status.success(), "leecher {i}: {status:?}\n{}", l.output());
        let (down, up) = transfer_line(l);
        assert!(down >= len as u64, "leecher {i} downloaded {down}");
        uploaded_by_leechers += up;
        assert_same_tree(&src, &t.path().join(format!("leech{i}")));
    }
    seed.interrupt();
    seed.wait_exit(T);
    let (_, seeder_up) = transfer_line(&mut seed);
    let total = 5 * len as u64;
    assert!(
        uploaded_by_leechers >= total / 4,
        "leechers uploaded {uploaded_by_leechers} of {total} bytes to each other (the seeder sent {seeder_up})"
    );
    // Every leecher announced completed; all have stopped.
    tracker.wait_scrape(&hash, (0, 0, 5), "after everyone stopped");
}

#[test]
fn announce_events_reach_the_tracker_over_udp_and_http() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    for (n, url) in [tracker.udp_url(), tracker.http_url()].into_iter().enumerate() {
        let src = t.path().join(format!("seed{n}"));
        random_file(&src.join("data.bin"), 1 << 20, 9 + n as u64);
        let torrent = t.path().join(format!("data{n}.torrent"));
        let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &url]);

        let (mut seed, _) = our_seed(&torrent, &src, &["--max-upload-rate", "512K"]);
        tracker.wait_scrape(&hash, (1, 0, 0), &format!("{url}: seeder started"));
        let dst = t.path().join(format!("leech{n}"));
        let (mut leech, _) = our_join(&torrent, &dst, &[]);
        tracker.wait_scrape(&hash, (1, 1, 0), &format!("{url}: leecher started"));
        leech.wait_line(T, |l| l.starts_with("complete: "));
        tracker.wait_scrape(&hash, (2, 0, 1), &format!("{url}: leecher completed"));
        leech.interrupt();
        assert!(leech.wait_exit(T).success(), "{}", leech.output());
        tracker.wait_scrape(&hash, (1, 0, 1), &format!("{url}: leecher stopped"));
        seed.interrupt();
        assert!(seed.wait_exit(T).success());
        tracker.wait_scrape(&hash, (0, 0, 1), &format!("{url}: seeder stopped"));
        assert_same_tree(&src, &dst);
    }
}

#[test]
fn a_magnet_link_finds_our_seeder_through_our_udp_tracker() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let src = t.path().join("seed");
    random_file(&src.join("data.bin"), 3 << 20, 11);
    let torrent = t.path().join("data.torrent");
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "32K", "-t", &tracker.udp_url()]);
    let (_seed, _) = our_seed(&torrent, &src, &[]);
    let out = bitswarm().args(["torrent", "magnet"]).arg(&torrent).output().unwrap();
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // No --peer: the tracker named in the link gives the seeder, the seeder the metadata (BEP 9).
    let dst = t.path().join("leech");
    std::fs::create_dir_all(&dst).unwrap();
    let (mut leech, _) = our_join(std::path::Path::new(&magnet), &dst, &["--exit-when-done"]);
    let status = leech.wait_exit(T);
    let out = leech.output();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("metadata: ") && out.contains(" bytes from 127.0.0.1:"), "{out}");
    assert_same_tree(&src, &dst);
}

const TLS_PROXY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tls_proxy.py");

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    let (status, _, err) = run(c, Duration::from_secs(60));
    assert!(status.success(), "openssl {args:?}: {err}");
}

/// Makes in `dir` a certificate authority `CA.pem` and, when `server` is given, a server
/// certificate `SERVER.pem` (key `SERVER.key`) that it signed for 127.0.0.1 and localhost.
fn make_certs(dir: &Path, ca: &str, server: Option<&str>) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let subject = format!("/CN={ca}");
    openssl(
        dir,
        &[&["req", "-x509"], &ec[..], &["-keyout", &ca_key, "-out", &ca_pem, "-days", "2", "-subj", &subject]].concat(),
    );
    let Some(server) = server else { return };
    let (pem, key, csr) = (format!("{server}.pem"), format!("{server}.key"), format!("{server}.csr"));
    openssl(dir, &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]].concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            "server.ext",
        ],
    );
}

/// `bitswarm COMMAND` (seed or join) trusting only the certificates in `ca`.
fn peer_trusting(command: &str, ca: &Path, torrent: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let mut c = bitswarm();
    c.args([command, "--port", "0", "--bind", "127.0.0.1", "-d"]).arg(dir).arg(torrent).args(extra);
    c.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    Proc::spawn(&format!("bitswarm {command}"), c)
}

/// An `https://` tracker: ours behind a TLS proxy (OpenSSL) with a certificate for 127.0.0.1
/// from a test CA. A seeder and a leecher that trust the CA announce through it (every event
/// arrives, counted by scrape) and the leecher finds the seeder there; a peer that trusts
/// another CA refuses the certificate and says why.
#[test]
fn announces_go_through_an_https_tracker() {
    if !require("openssl") {
        return;
    }
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    make_certs(t.path(), "test-ca", Some("server"));
    make_certs(t.path(), "other-ca", None);
    let mut c = Command::new("/usr/bin/python3");
    c.arg(TLS_PROXY).arg(t.path().join("server.pem")).arg(t.path().join("server.key")).arg(tracker.http.to_string());
    let mut proxy = Proc::spawn("tls proxy", c);
    let port = proxy.wait_line(T, |l| l.starts_with("port ")).trim_start_matches("port ").trim().to_owned();
    let url = format!("https://127.0.0.1:{port}/announce");

    let src = t.path().join("seed");
    random_file(&src.join("data.bin"), 1 << 20, 12);
    let torrent = t.path().join("data.torrent");
    let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &url]);
    let ca = t.path().join("test-ca.pem");
    let mut seed = peer_trusting("seed", &ca, &torrent, &src, &[]);
    tracker.wait_scrape(&hash, (1, 0, 0), "seeder started over https");
    let dst = t.path().join("leech");
    let mut leech = peer_trusting("join", &ca, &torrent, &dst, &[]);
    leech.wait_line(T, |l| l.starts_with("complete: "));
    tracker.wait_scrape(&hash, (2, 0, 1), "leecher completed over https");
    assert_same_tree(&src, &dst);
    leech.interrupt();
    assert!(leech.wait_exit(T).success(), "{}", leech.output());
    tracker.wait_scrape(&hash, (1, 0, 1), "leecher stopped over https");

    let other = t.path().join("other");
    let mut refused = peer_trusting("join", &t.path().join("other-ca.pem"), &torrent, &other, &[]);
    let line = refused.wait_line(T, |l| l.contains(&format!("tracker {url}: ")));
    assert!(line.contains("invalid peer certificate: UnknownIssuer"), "{line}");
    proxy.wait_line(T, |l| l.starts_with("handshake failed: "));
    refused.interrupt();
    refused.wait_exit(T);
    seed.interrupt();
    assert!(seed.wait_exit(T).success(), "{}", seed.output());
    tracker.wait_scrape(&hash, (0, 0, 1), "seeder stopped over https");
}

const REDIRECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/redirect.py");

/// `support/redirect.py`: every GET gets `status` and `Location: BASE + path`; returns it and
/// its port.
fn redirect_server(status: u16, base: &str) -> (Proc, u16) {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(REDIRECT).arg(status.to_string()).arg(base);
    let mut p = Proc::spawn("redirect server", c);
    let port = p.wait_line(T, |l| l.starts_with("port ")).trim_start_matches("port ").trim().parse().unwrap();
    (p, port)
}

/// A tracker URL that answers with a redirect to our tracker: announces follow it (every event
/// counted by scrape, the leecher finds the seeder). One that redirects to itself ends with an
/// error after a bounded number of hops.
#[test]
fn announces_follow_redirects() {
    let t = tempdir();
    let tracker = OurTracker::start(t.path(), "");
    let (_moved, port) = redirect_server(307, &format!("http://{}", tracker.http));
    let src = t.path().join("seed");
    random_file(&src.join("data.bin"), 256 << 10, 13);
    let torrent = t.path().join("data.torrent");
    let url = format!("http://127.0.0.1:{port}/announce");
    let hash = create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "16K", "-t", &url]);
    let (mut seed, _) = our_seed(&torrent, &src, &[]);
    tracker.wait_scrape(&hash, (1, 0, 0), "seeder started through a redirect");
    let dst = t.path().join("leech");
    let (mut leech, _) = our_join(&torrent, &dst, &["--exit-when-done"]);
    assert!(leech.wait_exit(T).success(), "{}", leech.output());
    assert_same_tree(&src, &dst);
    tracker.wait_scrape(&hash, (1, 0, 1), "leecher completed and stopped through a redirect");
    seed.interrupt();
    assert!(seed.wait_exit(T).success(), "{}", seed.output());
    tracker.wait_scrape(&hash, (0, 0, 1), "seeder stopped through a redirect");

    let (_looping, port) = redirect_server(302, "");
    let url = format!("http://127.0.0.1:{port}/announce");
    let torrent = t.path().join("loop.torrent");
    create_torrent(&src.join("data.bin"), &torrent, &["--piece-size", "32K", "-t", &url]);
    let (mut seed, _) = our_seed(&torrent, &src, &[]);
    seed.wait_line(T, |l| l.contains(&format!("tracker {url}: more than 5 redirects")));
}
