//! The real transmission-remote (Debian's transmission-cli, 3.00) against the router and a fake
//! daemon: what it prints, and what the daemon was asked.

mod common;

use bitswarm_rpc::{AddSource, Credentials, FileSelection, RpcConfig, Status};
use common::fake::{Call, HASH1, HASH3};
use common::{INSTALL_REMOTE, Output, Server, TEST_TIMEOUT, require, run, write_torrent, write_torrent_padded};

async fn remote(server: &Server, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("transmission-remote");
    cmd.arg(server.target()).args(args).env_remove("TR_AUTH");
    run(cmd).await
}

/// Runs a command that must succeed, and returns what it printed.
async fn ok(server: &Server, args: &[&str]) -> String {
    let out = remote(server, args).await;
    assert!(out.success, "transmission-remote {args:?} failed:\n{}", out.all());
    out.stdout
}

/// A command that only reports `responded: "success"`.
async fn done(server: &Server, args: &[&str]) {
    let out = ok(server, args).await;
    assert!(out.contains("/transmission/rpc/ responded: \"success\""), "{args:?}: {out}");
}

fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_transmission_remote_lists_and_shows_torrents() {
    if !require("transmission-remote", INSTALL_REMOTE) {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let s = Server::start(RpcConfig::default()).await;

        // -l: a row per torrent with its id, percent, status and name (a row whose integers were
        // written as reals would silently vanish), and the sum line.
        let list = ok(&s, &["-l"]).await;
        assert!(list.lines().next().is_some_and(|h| words(h) == ["ID", "Done", "Have", "ETA", "Up", "Down", "Ratio", "Status", "Name"]), "{list}");
        let row = words(line_with(&list, "sample.bin"));
        assert_eq!((row[0], row[1], row[4], row[5]), ("1", "50%", "2", "min"), "{list}");
        assert!(line_with(&list, "sample.bin").contains("Up & Down"));
        let row = words(line_with(&list, "fake-magnet"));
        assert_eq!((row[0], row[1], row[3]), ("2", "n/a", "Unknown"), "a magnet without metadata: {list}");
        let row = words(line_with(&list, "multi"));
        assert_eq!((row[0], row[1], row[4], row[8], row[9]), ("3", "100%", "Done", "Stopped", "multi"), "{list}");
        assert!(line_with(&list, "Sum:").contains("200.0 kB"), "{list}");
        assert_eq!(list.lines().count(), 5, "{list}");
        // The list asked the daemon for no heavy part.
        assert_eq!(s.daemon.state().wants.last().copied(), Some(bitswarm_rpc::Wants::NONE));

        // -i: the details, including derived values (magnet link, hash, percent).
        let info = ok(&s, &["-t", "1", "-i"]).await;
        for expected in [
            "Name: sample.bin",
            &format!("Hash: {HASH1}"),
            "Magnet: magnet:?xt=urn:btih:b5e8b288a3d56acc9461dd12f8b2cb885abe56f2&dn=sample.bin&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce",
            "Labels: tv-sonarr",
            "State: Up & Down",
            "Location: /data/downloads",
            "Percent Done: 50.0%",
            "ETA: 2 minutes, 1 second (121 seconds)",
            "Have: 150.0 kB (150.0 kB verified)",
            "Peers: connected to 2, uploading to 1, downloading from 1",
            "Public torrent: No",
            "Comment: a comment",
            "Piece Count: 10",
        ] {
            assert!(info.contains(expected), "-i lacks {expected:?}:\n{info}");
        }
        // By hash, in upper case.
        let info = ok(&s, &["-t", &HASH3.to_uppercase(), "-i"]).await;
        assert!(info.contains("Name: multi") && info.contains("State: Stopped"), "{info}");

        // -if: files with their progress, priority and wanted flag.
        let files = ok(&s, &["-t", "3", "-if"]).await;
        assert!(files.contains("multi (2 files):"), "{files}");
        assert_eq!(words(line_with(&files, "multi/a.txt")), ["0:", "100%", "Normal", "Yes", "0.01", "kB", "multi/a.txt"]);
        assert_eq!(words(line_with(&files, "multi/b.bin")), ["1:", "100%", "Low", "Yes", "50.00", "kB", "multi/b.bin"]);

        // -ip: peers, with the flags this crate derives.
        let peers = ok(&s, &["-t", "1", "-ip"]).await;
        assert_eq!(words(line_with(&peers, "10.0.0.2")), ["10.0.0.2", "DE", "50.0", "12.3", "0.0", "Transmission", "4.0.6"]);
        assert_eq!(words(line_with(&peers, "10.0.0.3")), ["10.0.0.3", "dUEX", "50.0", "0.0", "1.0", "qBittorrent", "4.6.2"]);

        // -it: a tracker is printed only when all 24 keys it reads have the right types.
        let trackers = ok(&s, &["-t", "1", "-it"]).await;
        assert!(trackers.contains("Tracker 0: 127.0.0.1:6969"), "{trackers}");
        assert!(trackers.contains("Got a list of 7 peers"), "{trackers}");

        // -ic: the piece bitfield.
        let pieces = ok(&s, &["-t", "1", "-ic"]).await;
        assert_eq!(pieces.trim(), "11111000 00");
        let wants = s.daemon.state().wants.clone();
        assert!(wants.iter().any(|w| w.files) && wants.iter().any(|w| w.peers) && wants.iter().any(|w| w.pieces));
    })
    .await
    .expect("the test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_transmission_remote_session_info_and_stats() {
    if !require("transmission-remote", INSTALL_REMOTE) {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let s = Server::start(RpcConfig::default()).await;
        let info = ok(&s, &["-si"]).await;
        for expected in [
            &format!("Daemon version: 4.0.6 (bitswarm {})", env!("CARGO_PKG_VERSION")),
            "RPC version: 17",
            "RPC minimum version: 14",
            "Configuration directory: /var/lib/bitswarm",
            "Download directory: /tmp",
            "Listenport: 51413",
            "Distributed hash table enabled: Yes",
            "Encryption: preferred",
            // The LIMITS block is printed only when all 14 of its keys have the right types.
            "Peer limit: 200",
            "Upload speed limit: Unlimited (Disabled limit: 100 kB/s; Disabled turtle limit: 50 kB/s)",
            "Autostart added torrents: Yes",
        ] {
            assert!(info.contains(expected), "-si lacks {expected:?}:\n{info}");
        }
        let stats = ok(&s, &["-st"]).await;
        for expected in ["CURRENT SESSION", "Uploaded:   130.0 kB", "Downloaded: 200.0 kB", "(3725 seconds)", "TOTAL", "Started 4 times", "(90000 seconds)"] {
            assert!(stats.contains(expected), "-st lacks {expected:?}:\n{stats}");
        }
        // session-set through remote: -D (no download limit) and -d.
        done(&s, &["-d", "250"]).await;
        assert!(matches!(&s.daemon.take_calls()[..], [Call::SessionSet(set)] if set.speed_limit_down == Some(250) && set.speed_limit_down_enabled == Some(true)));
    })
    .await
    .expect("the test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_transmission_remote_changes_torrents() {
    if !require("transmission-remote", INSTALL_REMOTE) {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let s = Server::start(RpcConfig::default()).await;
        let dir = tempfile::tempdir().expect("tempdir");

        // -a FILE: remote sends the file's bytes as base64 metainfo.
        let file = write_torrent(dir.path(), "added.bin");
        done(&s, &["-a", file.to_str().expect("utf-8 path")]).await;
        let calls = s.daemon.take_calls();
        let [Call::Add(req)] = &calls[..] else { panic!("{calls:?}") };
        assert_eq!(req.source, AddSource::Metainfo(std::fs::read(&file).expect("read")));
        assert_eq!(req.download_dir, None);

        // A .torrent over 1 MiB: remote sends it with `Expect: 100-continue`.
        let big = write_torrent_padded(dir.path(), "big.bin", 1_300_000);
        done(&s, &["-a", big.to_str().expect("utf-8 path")]).await;
        let calls = s.daemon.take_calls();
        let [Call::Add(req)] = &calls[..] else { panic!("{calls:?}") };
        assert_eq!(req.source, AddSource::Metainfo(std::fs::read(&big).expect("read")));

        // -a MAGNET: sent as filename; the daemon gets the link and its hash.
        let magnet = "magnet:?xt=urn:btih:89abcdef0123456789abcdef0123456789abcdef&dn=m2&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce";
        done(&s, &["-a", magnet]).await;
        let calls = s.daemon.take_calls();
        let [Call::Add(req)] = &calls[..] else { panic!("{calls:?}") };
        let AddSource::Magnet { link, info_hash } = &req.source else { panic!("{req:?}") };
        assert_eq!((link.as_str(), info_hash.to_hex().as_str()), (magnet, "89abcdef0123456789abcdef0123456789abcdef"));
        let list = ok(&s, &["-l"]).await;
        assert!(list.contains("added.bin") && list.contains("big.bin") && list.contains(" m2"), "{list}");

        // -S, -s, -v; -t 1-2 gives a list of ids.
        done(&s, &["-t", "1", "-S"]).await;
        assert_eq!(s.daemon.state().torrents[0].status, Status::Stopped);
        done(&s, &["-t", "1", "-s"]).await;
        done(&s, &["-t", "1-2", "-v"]).await;
        done(&s, &["-t", HASH3, "-s"]).await;
        assert_eq!(
            s.daemon.take_calls(),
            [Call::Stop(vec![1]), Call::Start(vec![1], false), Call::Verify(vec![1, 2]), Call::Start(vec![3], false)]
        );

        // -d/-u per torrent: limits in kB/s and the flags that make them apply.
        done(&s, &["-t", "3", "-d", "100", "-u", "50"]).await;
        let calls = s.daemon.take_calls();
        let [Call::Set(ids, set)] = &calls[..] else { panic!("{calls:?}") };
        assert_eq!(ids, &[3]);
        assert_eq!((set.download_limit, set.download_limited, set.upload_limit, set.upload_limited), (Some(100), Some(true), Some(50), Some(true)));
        let info = ok(&s, &["-t", "3", "-i"]).await;
        assert!(info.contains("Download Limit: 100 kB/s") && info.contains("Upload Limit: 50 kB/s"), "{info}");

        // Labels, priority, file selection and ratio, as remote writes them (seedRatioLimit 1.5000).
        done(&s, &["-t", "3", "-Bh", "-sr", "1.5", "-g", "0", "-G", "1", "-L", "a,b"]).await;
        let calls = s.daemon.take_calls();
        let [Call::Set(_, set)] = &calls[..] else { panic!("{calls:?}") };
        assert_eq!(set.seed_ratio_limit, Some(1.5));
        assert_eq!(set.files_wanted, Some(FileSelection::Indices(vec![0])));
        assert_eq!(set.files_unwanted, Some(FileSelection::Indices(vec![1])));
        assert_eq!(set.labels, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(set.bandwidth_priority, Some(bitswarm_rpc::Priority::High));

        // --move: set-location with move.
        done(&s, &["-t", "1", "--move", "/data/elsewhere"]).await;
        assert_eq!(s.daemon.take_calls(), [Call::SetLocation(vec![1], "/data/elsewhere".into(), true)]);
        assert!(ok(&s, &["-t", "1", "-i"]).await.contains("Location: /data/elsewhere"));

        // -r and --remove-and-delete.
        done(&s, &["-t", "2", "-r"]).await;
        done(&s, &["-t", "3", "--remove-and-delete"]).await;
        assert_eq!(s.daemon.take_calls(), [Call::Remove(vec![2], false), Call::Remove(vec![3], true)]);
        let list = ok(&s, &["-l"]).await;
        assert!(!list.contains("fake-magnet") && !list.contains("multi") && list.contains("sample.bin"), "{list}");

        // A relative download directory is refused with Transmission's words.
        let out = remote(&s, &["-w", "relative/dir", "-a", magnet]).await;
        assert!(out.all().contains("download directory path is not absolute"), "{}", out.all());
    })
    .await
    .expect("the test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_transmission_remote_with_a_password() {
    if !require("transmission-remote", INSTALL_REMOTE) {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let config = RpcConfig {
            credentials: Some(
                Credentials::new("alice", bitswarm_rpc::hash_password("s3cret pass")).expect("argon2 hash"),
            ),
            ..RpcConfig::default()
        };
        let s = Server::start(config).await;
        // curl sends the credentials only after a 401 carrying the Basic challenge.
        let list = ok(&s, &["-n", "alice:s3cret pass", "-l"]).await;
        assert!(list.contains("sample.bin"), "{list}");
        done(&s, &["-n", "alice:s3cret pass", "-t", "1", "-S"]).await;
        assert_eq!(s.daemon.take_calls(), [Call::Stop(vec![1])]);

        for wrong in [
            &["-n", "alice:wrong", "-t", "1", "-s"][..],
            &["-n", "bob:s3cret pass", "-t", "1", "-s"],
            &["-t", "1", "-s"],
        ] {
            let out = remote(&s, wrong).await;
            assert!(!out.success, "{wrong:?} succeeded:\n{}", out.all());
            assert!(out.all().contains("401: Unauthorized"), "{wrong:?}:\n{}", out.all());
        }
        assert!(s.daemon.take_calls().is_empty(), "nothing reached the daemon without the password");
    })
    .await
    .expect("the test took too long");
}
