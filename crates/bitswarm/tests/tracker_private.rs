//! Private mode (`access.mode = "private"`, issue 19 item 2): `bitswarm tracker` with users and
//! registered torrents in its state folder, changed by `bitswarm tracker user|torrent ...` and
//! the admin API while it runs; passkeys over HTTP (`/announce/PASSKEY`) and UDP (BEP 41 URL
//! data); aria2 and libtorrent moving a torrent through it, the users' figures matching what
//! they moved; a disabled passkey refused; the same on the Redis backend.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bitswarm_tracker_proto::http::{self, AnnounceRequest, AnnounceResponse, ScrapeResponse};
use bitswarm_tracker_proto::udp::{self, Request, Response};
use bitswarm_tracker_proto::{Event, InfoHash, PeerId};
use common::redis::Redis;
use common::swarm::{OurTracker, aria2, create_torrent, lt_peer};
use common::udp_client::UdpClient;
use common::{bitswarm, free_port, random_file, require, run, tempdir, wait_for};

const T: Duration = Duration::from_secs(60);

fn config(flush: u32, extra: &str) -> String {
    format!(
        "[announce]\ninterval = 2\nmin_interval = 1\n[store]\npeer_timeout = 30\ncleaner_interval = 1\n{extra}\
         [access]\nmode = \"private\"\n[private]\nflush_interval = {flush}\n"
    )
}

/// `bitswarm tracker --state STATE ARGS...`: (success, stdout, stderr).
fn cli(state: &Path, args: &[&str]) -> (bool, String, String) {
    let mut c = bitswarm();
    c.arg("tracker").arg("--state").arg(state).args(args);
    let (st, out, err) = run(c, T);
    (st.success(), out, err)
}

fn cli_ok(state: &Path, args: &[&str]) -> String {
    let (ok, out, err) = cli(state, args);
    assert!(ok, "bitswarm tracker {args:?} failed: {err}");
    out
}

/// Adds a user; returns their passkey.
fn add_user(state: &Path, name: &str) -> String {
    let out = cli_ok(state, &["user", "add", name]);
    let key = out.lines().find_map(|l| l.strip_prefix("passkey: ")).expect("a passkey line").to_owned();
    assert!(out.contains(&format!("announce URL: http://127.0.0.1:6969/announce/{key}")), "{out}");
    key
}

/// (uploaded, downloaded, completed, enabled) of a user, from `user list --json`.
fn figures(state: &Path, name: &str) -> (u64, u64, u64, bool) {
    let v: serde_json::Value = serde_json::from_str(&cli_ok(state, &["user", "list", "--json"])).unwrap();
    let u = v.as_array().unwrap().iter().find(|u| u["name"] == name).unwrap_or_else(|| panic!("no user {name}: {v}"));
    (
        u["uploaded"].as_u64().unwrap(),
        u["downloaded"].as_u64().unwrap(),
        u["completed"].as_u64().unwrap(),
        u["enabled"].as_bool().unwrap(),
    )
}

/// One HTTP/1.1 request: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response") + 4;
    let status = String::from_utf8_lossy(&resp[9..12]).parse().unwrap();
    (status, resp[at..].to_vec())
}

/// An admin API call with `token`: (status, JSON).
fn admin(t: &OurTracker, method: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    let auth = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
    let (status, body) = request(t.http, method, path, &auth, body);
    (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body))))
}

/// An HTTP announce at `path` (`/announce/PASSKEY`) from made-up peer `id`.
fn announce(
    t: &OurTracker,
    path: &str,
    h: InfoHash,
    id: u8,
    (up, down): (u64, u64),
    event: Event,
) -> Result<AnnounceResponse, String> {
    let mut req = AnnounceRequest::new(h, PeerId([id; 20]), 6000 + u16::from(id), 5);
    req.event = event;
    req.uploaded = up;
    req.downloaded = down;
    let (status, body) = request(t.http, "GET", &http::announce_url(path, &req), "", "");
    assert_eq!(status, 200);
    AnnounceResponse::decode(&body).map_err(|e| e.to_string())
}

fn scrape(t: &OurTracker, passkey: &str, h: InfoHash) -> Result<(u32, u32, u32), String> {
    let (_, body) = request(t.http, "GET", &format!("/scrape/{passkey}?{}", http::scrape_query(&[h])), "", "");
    let r = ScrapeResponse::decode(&body).map_err(|e| e.to_string())?;
    let s = r.get(&h).ok_or("no such hash")?;
    Ok((s.complete, s.incomplete, s.downloaded))
}

/// What this test asks a UDP tracker.
impl UdpClient {
    /// An announce whose BEP 41 URL data is `url`; the error message if refused.
    fn announce(&self, h: InfoHash, url: &str, up: u64) -> Result<(), String> {
        let r = self.ask(&Request::Announce(udp::AnnounceRequest {
            connection_id: self.cid,
            transaction_id: 7,
            info_hash: h,
            peer_id: PeerId([9; 20]),
            downloaded: 0,
            left: 5,
            uploaded: up,
            event: Event::None,
            ip: None,
            key: 0,
            num_want: Some(10),
            port: 7009,
            url_data: url.as_bytes().to_vec(),
        }));
        match r {
            Some(Response::Announce(_)) => Ok(()),
            Some(Response::Error { message, .. }) => Err(message),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn private_tracker_passkeys_commands_and_admin_api() {
    let dir = tempdir();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let alice = add_user(&state, "alice");
    let bob = add_user(&state, "bob");
    {
        // The database holds every passkey: its folder is its owner's alone.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let h = InfoHash([3; 20]);
    cli_ok(&state, &["torrent", "add", &h.to_hex()]);

    // Bad input: clear errors, exit status 2.
    for (args, msg) in [
        (&["user", "add", "alice"][..], "a user named \"alice\" exists already"),
        (&["user", "add", "a b"], "no spaces"),
        (&["user", "disable", "nobody"], "no user named \"nobody\""),
        (&["user", "delete", "nobody"], "no user named \"nobody\""),
        (&["torrent", "add", "not-a-hash"], "neither a .torrent file nor an info-hash"),
        (&["torrent", "remove", &InfoHash([4; 20]).to_hex()], "is not registered"),
    ] {
        let (ok, _, err) = cli(&state, args);
        assert!(!ok && err.contains(msg), "{args:?}: {err}");
    }

    // Figures reach the database only at a flush: an hour apart here, and when the tracker stops.
    let t = OurTracker::start_with(dir.path(), &config(3600, ""), &["--state", state_arg], &[]);
    assert!(t.proc.seen.iter().any(|l| l.starts_with("access: private, 2 users and 1 registered torrents")));
    let (a, b) = (format!("/announce/{alice}"), format!("/announce/{bob}"));
    announce(&t, &a, h, 1, (0, 0), Event::Started).unwrap();
    for (path, want) in [
        ("/announce", "this tracker is private: announce with your announce URL"),
        ("/announce/xyz", "invalid passkey: a passkey is 32 hex digits"),
        ("/announce/0123456789ABCDEF0123456789ABCDEF", "invalid passkey"),
        ("/announce/00000000000000000000000000000000", "unknown passkey"),
    ] {
        let e = announce(&t, path, h, 2, (0, 0), Event::Started).unwrap_err();
        assert!(e.contains(want), "{path}: {e}");
    }
    let e = announce(&t, &a, InfoHash([4; 20]), 1, (0, 0), Event::Started).unwrap_err();
    assert_eq!(e, "tracker said: this torrent is not registered on this tracker");

    // Accounting from the difference between announces: `started` is a baseline.
    announce(&t, &b, h, 2, (100, 200), Event::Started).unwrap();
    let r = announce(&t, &b, h, 2, (1100, 2200), Event::None).unwrap();
    assert_eq!(r.peers.len(), 1, "bob gets alice: {r:?}");
    // A negative delta is refused (logged), the next counts from the new figures.
    announce(&t, &b, h, 2, (50, 2200), Event::None).unwrap();
    announce(&t, &b, h, 2, (150, 2200), Event::None).unwrap();

    // UDP: the passkey in the BEP 41 URL data; a scrape cannot carry one.
    let u = UdpClient::new(t.udp);
    u.announce(h, &format!("/announce/{alice}"), 0).unwrap();
    u.announce(h, &format!("/announce/{alice}?x=1"), 0).unwrap();
    let e = u.announce(h, "/announce", 0).unwrap_err();
    assert!(e.starts_with("this tracker is private"), "{e}");
    let Some(Response::Error { message, .. }) =
        u.ask(&Request::Scrape(udp::ScrapeRequest { connection_id: u.cid, transaction_id: 3, info_hashes: vec![h] }))
    else {
        panic!("a UDP scrape is refused")
    };
    assert_eq!(message, "this tracker is private: scrape over HTTP at /scrape/PASSKEY");
    assert_eq!(scrape(&t, &alice, h).unwrap(), (0, 3, 0));
    assert!(scrape(&t, "", h).is_err());
    assert_eq!(scrape(&t, &"0".repeat(32), h).unwrap_err(), "tracker said: unknown passkey");

    // Not on the announce path: nothing written yet.
    assert_eq!(figures(&state, "bob"), (0, 0, 0, true));

    // A disabled user and a reset passkey are refused on their next announce.
    let out = cli_ok(&state, &["user", "disable", "alice"]);
    assert!(out.contains("in force on the running tracker"), "{out}");
    assert_eq!(announce(&t, &a, h, 1, (0, 0), Event::None).unwrap_err(), "tracker said: this account is disabled");
    assert_eq!(u.announce(h, &format!("/announce/{alice}"), 0).unwrap_err(), "this account is disabled");
    let out = cli_ok(&state, &["user", "passkey-reset", "bob"]);
    let bob2 = out.lines().find_map(|l| l.strip_prefix("passkey: ")).unwrap().to_owned();
    assert_ne!(bob, bob2);
    assert_eq!(announce(&t, &b, h, 2, (150, 2200), Event::None).unwrap_err(), "tracker said: unknown passkey");
    let b2 = format!("/announce/{bob2}");
    announce(&t, &b2, h, 2, (250, 2200), Event::None).unwrap();
    cli_ok(&state, &["user", "enable", "alice"]);
    announce(&t, &a, h, 1, (0, 0), Event::None).unwrap();

    // The admin API: a token first.
    let (status, v) = admin(&t, "GET", "/admin/users", "", "");
    assert_eq!(
        (status, v["error"].as_str().unwrap()),
        (403, "no admin token is set: make one with `bitswarm tracker admin-token`")
    );
    let out = cli_ok(&state, &["admin-token"]);
    let token = out.lines().nth(1).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "{out}");
    assert_eq!(admin(&t, "GET", "/admin/users", "", "").0, 401);
    assert_eq!(admin(&t, "GET", "/admin/users", &"0".repeat(64), "").0, 401);
    let (status, v) = admin(&t, "GET", "/admin/users", &token, "");
    assert_eq!((status, v["users"].as_array().unwrap().len()), (200, 2), "{v}");
    let (status, v) = admin(&t, "POST", "/admin/users", &token, "{\"name\": \"carol\"}");
    assert_eq!(status, 201, "{v}");
    let carol = v["passkey"].as_str().unwrap().to_owned();
    let c = format!("/announce/{carol}");
    announce(&t, &c, h, 3, (0, 0), Event::Started).unwrap();
    for (body, want) in [
        ("{\"name\": ", "malformed JSON"),
        ("{\"nam\": \"x\"}", "malformed JSON: unknown field `nam`"),
        ("[1]", "malformed JSON"),
        ("{\"name\": \"\"}", "a user name has 1 to 64 characters"),
    ] {
        let (status, v) = admin(&t, "POST", "/admin/users", &token, body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with(want), "{body}: {v}");
    }
    assert_eq!(admin(&t, "POST", "/admin/users", &token, "{\"name\": \"carol\"}").0, 409);
    assert_eq!(admin(&t, "POST", "/admin/users/nobody/disable", &token, "").0, 404);
    assert_eq!(admin(&t, "POST", "/admin/users/carol/explode", &token, "").0, 404);
    let (status, v) = admin(&t, "POST", "/admin/users/carol/disable", &token, "");
    assert_eq!((status, v["enabled"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(announce(&t, &c, h, 3, (0, 0), Event::None).unwrap_err(), "tracker said: this account is disabled");
    let (status, v) = admin(&t, "POST", "/admin/users/carol/passkey-reset", &token, "");
    assert_eq!(status, 200);
    assert_ne!(v["passkey"].as_str().unwrap(), carol);
    // A deleted user (through the API, or the command line) is refused on their next announce.
    let (status, v) = admin(&t, "POST", "/admin/users", &token, "{\"name\": \"erin\"}");
    assert_eq!(status, 201, "{v}");
    let e = format!("/announce/{}", v["passkey"].as_str().unwrap());
    announce(&t, &e, h, 5, (0, 0), Event::Started).unwrap();
    let (status, v) = admin(&t, "DELETE", "/admin/users/erin", &token, "");
    assert_eq!((status, v["deleted"].as_str()), (200, Some("erin")), "{v}");
    assert_eq!(admin(&t, "DELETE", "/admin/users/erin", &token, "").0, 404);
    assert_eq!(announce(&t, &e, h, 5, (0, 0), Event::None).unwrap_err(), "tracker said: unknown passkey");
    let out = cli_ok(&state, &["user", "add", "dave"]);
    let d = format!("/announce/{}", out.lines().find_map(|l| l.strip_prefix("passkey: ")).unwrap());
    announce(&t, &d, h, 4, (0, 0), Event::Started).unwrap();
    let out = cli_ok(&state, &["user", "delete", "dave"]);
    assert!(out.contains("user dave deleted") && out.contains("in force on the running tracker"), "{out}");
    assert_eq!(announce(&t, &d, h, 4, (0, 0), Event::None).unwrap_err(), "tracker said: unknown passkey");
    // Torrents: one registered through the API is served at once; one removed is refused.
    let h2 = InfoHash([5; 20]);
    let body = format!("{{\"info_hash\": \"{}\", \"name\": \"two\", \"size\": 1000}}", h2.to_hex());
    assert_eq!(admin(&t, "POST", "/admin/torrents", &token, &body).0, 201);
    assert_eq!(admin(&t, "POST", "/admin/torrents", &token, "{\"info_hash\": \"zz\"}").0, 400);
    announce(&t, &a, h2, 1, (0, 0), Event::Started).unwrap();
    let (status, v) = admin(&t, "GET", "/admin/torrents", &token, "");
    assert_eq!((status, v["torrents"].as_array().unwrap().len()), (200, 2), "{v}");
    assert_eq!(admin(&t, "DELETE", &format!("/admin/torrents/{}", h2.to_hex()), &token, "").0, 200);
    assert_eq!(
        announce(&t, &a, h2, 1, (0, 0), Event::None).unwrap_err(),
        "tracker said: this torrent is not registered on this tracker"
    );
    assert_eq!(admin(&t, "DELETE", &format!("/admin/torrents/{}", h2.to_hex()), &token, "").0, 404);

    // SIGHUP reads the database again (as it reads an access list in the other modes).
    common::signal(t.proc.child.id(), "HUP");
    let mut t = t;
    t.proc.wait_line(T, |l| l == "state database read again: 1 registered torrents");

    // Stopping writes what was counted: bob 1000 + 100 + 100 up, 2000 down; alice nothing.
    t.proc.interrupt();
    assert!(t.proc.wait_exit(T).success(), "{}", t.proc.output());
    assert!(!t.proc.output().contains("panicked"));
    assert_eq!(figures(&state, "bob"), (1200, 2000, 0, true));
    assert_eq!(figures(&state, "alice"), (0, 0, 0, true));
    assert!(!figures(&state, "carol").3, "carol is disabled");
}

/// A torrent of 2 MiB in 64 KiB pieces, with a tracker URL per user (the info-hash is the same).
const SIZE: usize = 2 << 20;
const PIECE: u64 = 64 << 10;

#[test]
fn interop_private_aria2_seeds_to_libtorrent_and_their_figures_match() {
    if !require("aria2c") || !require("libtorrent") {
        return;
    }
    let dir = tempdir();
    let state = dir.path().join("state");
    let seeder = add_user(&state, "seeder");
    let leecher = add_user(&state, "leecher");
    let second = add_user(&state, "second");
    let banned = add_user(&state, "banned");
    cli_ok(&state, &["user", "disable", "banned"]);
    let t = OurTracker::start_with(
        dir.path(),
        &config(1, ""),
        &["--state", state.to_str().unwrap()],
        &[("BITSWARM_LOG", "warn,bitswarm_tracker::service=debug")],
    );
    let mut t = t;

    let file = dir.path().join("seed").join("payload.bin");
    let data = random_file(&file, SIZE, 42);
    let torrent = |name: &str, url: String| {
        let p = dir.path().join(format!("{name}.torrent"));
        (p.clone(), create_torrent(&file, &p, &["--piece-size", "64K", "-t", &url]))
    };
    let (ts, hs) = torrent("seeder", format!("http://{}/announce/{seeder}", t.http));
    let (tl, hl) = torrent("leecher", format!("udp://{}/announce/{leecher}", t.udp));
    let (tb, hb) = torrent("banned", format!("http://{}/announce/{banned}", t.http));
    let (t2, h2) = torrent("second", format!("http://{}/announce/{second}", t.http));
    assert!(hs == hl && hl == hb && hb == h2);
    cli_ok(&state, &["torrent", "add", ts.to_str().unwrap()]);
    let h = InfoHash::parse(&hs).unwrap();

    // aria2 seeds over HTTP with its passkey.
    let _seed = aria2(true, &ts, &dir.path().join("seed"), free_port());
    wait_for(T, "aria2 seeding", || (scrape(&t, &leecher, h).ok()? == (1, 0, 0)).then_some(()));

    // A client with a disabled passkey is refused and never joins the swarm.
    let mut banned_client = aria2(false, &tb, &dir.path().join("banned"), free_port());
    t.proc.wait_line(T, |l| {
        l.contains(&format!("refused an announce of {hs}")) && l.ends_with("this account is disabled")
    });
    banned_client.kill();
    assert_eq!(scrape(&t, &leecher, h).unwrap(), (1, 0, 0));

    // libtorrent leeches over UDP (BEP 41 URL data) with its passkey.
    let leech_dir = dir.path().join("leech");
    let (mut leech, _) = lt_peer("leech", &tl, &leech_dir, &[]);
    leech.wait_line(T, |l| l == "done");
    assert!(std::fs::read(leech_dir.join("payload.bin")).unwrap() == data, "the download differs");

    // The figures: what the leecher downloaded (its `completed` announce) and what the seeder
    // uploaded (its next announces, every 2 s), within a piece of the torrent's size.
    let size = SIZE as u64;
    let near = |x: u64| x.abs_diff(size) <= PIECE;
    let (up, down, completed, _) = wait_for(T, "the leecher's download counted", || {
        let f = figures(&state, "leecher");
        (f.2 == 1).then_some(f)
    });
    assert!(near(down) && up <= PIECE, "leecher: uploaded {up}, downloaded {down}, of {size}");
    assert_eq!(completed, 1);
    let (up, down, _, _) = wait_for(T, "the seeder's upload counted", || {
        let f = figures(&state, "seeder");
        near(f.0).then_some(f)
    });
    assert!(near(up) && down == 0, "seeder: uploaded {up}, downloaded {down}, of {size}");

    // aria2 downloads too (HTTP), from the aria2 seeder (libtorrent has left), and exits.
    let second_dir = dir.path().join("second");
    let mut second_client = aria2(false, &t2, &second_dir, free_port());
    assert!(second_client.wait_exit(T).success(), "{}", second_client.output());
    assert!(std::fs::read(second_dir.join("payload.bin")).unwrap() == data, "aria2's download differs");
    // aria2 told to stop at once (--seed-time=0) says `stopped` with its figures, and no
    // `completed`: its download counts, a completed download does not.
    let (up, down, _, _) = wait_for(T, "the second download counted", || {
        let f = figures(&state, "second");
        near(f.1).then_some(f)
    });
    assert!(near(down) && up <= PIECE, "second: uploaded {up}, downloaded {down}, of {size}");
    // The seeder has now uploaded the torrent twice (within a piece each time).
    let (up, down, _, _) = wait_for(T, "the seeder's second upload counted", || {
        let f = figures(&state, "seeder");
        (f.0.abs_diff(2 * size) <= 2 * PIECE).then_some(f)
    });
    assert!(up.abs_diff(2 * size) <= 2 * PIECE && down == 0, "seeder: uploaded {up}, downloaded {down}, of 2 x {size}");
    assert_eq!(figures(&state, "banned"), (0, 0, 0, false));
}

#[test]
fn private_mode_on_redis() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempdir();
    let state = dir.path().join("state");
    let alice = add_user(&state, "alice");
    let bob = add_user(&state, "bob");
    let h = InfoHash([8; 20]);
    cli_ok(&state, &["torrent", "add", &h.to_hex()]);
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    let mut t = OurTracker::start_with(dir.path(), &config(1, &store), &["--state", state.to_str().unwrap()], &[]);
    assert!(t.proc.wait_line(T, |l| l.starts_with("store: ")).ends_with("(answering)"));
    let (a, b) = (format!("/announce/{alice}"), format!("/announce/{bob}"));
    announce(&t, &a, h, 1, (0, 0), Event::Started).unwrap();
    announce(&t, &b, h, 2, (0, 0), Event::Started).unwrap();
    let r = announce(&t, &b, h, 2, (0, 4096), Event::None).unwrap();
    assert_eq!((r.peers.len(), r.incomplete), (1, 2), "{r:?}");
    UdpClient::new(t.udp).announce(h, &format!("/announce/{alice}"), 0).unwrap();
    announce(&t, &a, h, 1, (4096, 0), Event::Stopped).unwrap();
    assert_eq!(scrape(&t, &bob, h).unwrap(), (0, 2, 0));
    wait_for(T, "figures written", || {
        (figures(&state, "bob").1 == 4096 && figures(&state, "alice").0 == 4096).then_some(())
    });
    cli_ok(&state, &["user", "disable", "bob"]);
    assert_eq!(announce(&t, &b, h, 2, (0, 4096), Event::None).unwrap_err(), "tracker said: this account is disabled");
    // Unregistering drops the swarm from Redis too.
    cli_ok(&state, &["torrent", "remove", &h.to_hex()]);
    assert_eq!(
        announce(&t, &a, h, 1, (0, 0), Event::Started).unwrap_err(),
        "tracker said: this torrent is not registered on this tracker"
    );
    wait_for(T, "the swarm dropped", || (scrape(&t, &alice, h).ok()? == (0, 0, 0)).then_some(()));
    t.proc.interrupt();
    assert!(t.proc.wait_exit(T).success(), "{}", t.proc.output());
}
