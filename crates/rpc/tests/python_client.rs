//! The Python client transmission-rpc 7.x (from PyPI, in a virtualenv under target/) against
//! the router and a fake daemon.

mod common;

use bitswarm_rpc::{AddSource, Credentials, LimitMode, RpcConfig};
use common::fake::{Call, HASH1};
use common::{INSTALL_PYTHON, Server, TEST_TIMEOUT, crate_dir, require, run, write_torrent};
use serde_json::Value;

/// The venv's python, made by `tests/support/venv.sh` if needed.
async fn venv_python() -> String {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg(crate_dir().join("tests/support/venv.sh"));
    let out = run(cmd).await;
    assert!(
        out.success,
        "could not make the transmission-rpc virtualenv ({INSTALL_PYTHON}), or set BITSWARM_SKIP_INTEROP=1:\n{}",
        out.all()
    );
    out.stdout.trim().to_owned()
}

async fn client(server: &Server, torrent: &std::path::Path, auth: Option<(&str, &str)>) -> Value {
    let python = venv_python().await;
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(crate_dir().join("tests/support/client.py")).arg(server.addr.port().to_string()).arg(torrent);
    if let Some((user, pass)) = auth {
        cmd.args([user, pass]);
    }
    let out = run(cmd).await;
    assert!(out.success, "client.py failed:\n{}", out.all());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("client.py printed no JSON ({e}):\n{}", out.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_transmission_rpc() {
    if !require("python3", INSTALL_PYTHON) {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let s = Server::start(RpcConfig::default()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let torrent = write_torrent(dir.path(), "py.bin");
        let out = client(&s, &torrent, None).await;

        // Every property of every object could be read: all 75 fields parsed.
        assert_eq!(out["errors"], Value::Array(vec![]), "{out:#}");
        assert_eq!(out["rpc_version"], 17);
        assert_eq!(out["fields_requested"], 75);
        assert!(out["torrent_properties_read"].as_u64().is_some_and(|n| n >= 70), "{out:#}");
        assert_eq!(out["semver"], "5.3.0");
        assert_eq!(out["server_version"], format!("4.0.6 (bitswarm {})", env!("CARGO_PKG_VERSION")));

        let t = &out["torrents"];
        assert_eq!(t.as_array().map(Vec::len), Some(3), "{out:#}");
        assert_eq!(t[0]["name"], "sample.bin");
        assert_eq!(t[0]["hash"], HASH1);
        assert_eq!(t[0]["status"], "downloading");
        assert_eq!(t[0]["progress"], 50.0);
        assert_eq!(t[0]["eta"], 121.0);
        assert_eq!(t[0]["labels"], serde_json::json!(["tv-sonarr"]));
        assert_eq!(t[0]["files"], serde_json::json!([["sample.bin", 300000, 150000, true, 1]]));
        assert_eq!(t[0]["peers"], 2);
        assert_eq!(t[0]["trackers"], serde_json::json!(["http://127.0.0.1:6969/announce"]));
        assert_eq!(t[0]["tracker_hosts"], serde_json::json!(["127.0.0.1:6969"]));
        assert_eq!(t[0]["tracker_list"], serde_json::json!(["http://127.0.0.1:6969/announce"]));
        assert_eq!(t[1]["name"], "fake-magnet");
        assert_eq!(t[1]["eta"], Value::Null, "eta -2 is 'unknown'");
        assert_eq!(t[2]["status"], "stopped");
        assert_eq!(t[2]["ratio"], 2.0);
        assert_eq!(t[2]["files"][1], serde_json::json!(["multi/b.bin", 50000, 50000, true, -1]));

        assert_eq!(out["session"]["download_dir"], "/tmp");
        assert_eq!(out["session"]["peer_port"], 51413);
        assert_eq!(out["stats"], serde_json::json!({"torrents": 3, "active": 2, "uploaded": 130012, "sessions": 4}));

        // add_torrent(Path) sends base64 metainfo with paused and labels; the same bytes again
        // are a duplicate; a magnet string goes as filename.
        assert_eq!(out["added"]["id"], 4);
        assert_eq!(out["added"]["name"], "py.bin");
        assert_eq!(out["duplicate_id"], 4);
        assert_eq!(out["magnet"], serde_json::json!({"id": 5, "name": "m2"}));
        assert_eq!(out["changed"], serde_json::json!({"seed_ratio_limit": 1.5, "mode": 1}));
        assert_eq!(out["recent"]["active"], serde_json::json!([1]));
        assert_eq!(out["recent"]["removed"], serde_json::json!([]));
        assert!(out["free_space"].as_i64().is_some_and(|n| n > 0), "{out:#}");
        assert_eq!(out["blocklist"], 0);
        assert_eq!(out["left"], serde_json::json!([1, 2, 3]));
        assert!(out["port_test"].as_str().is_some_and(|e| e.contains("Couldn't test port")), "{out:#}");

        let calls = s.daemon.take_calls();
        let adds: Vec<&bitswarm_rpc::AddRequest> =
            calls.iter().filter_map(|c| if let Call::Add(r) = c { Some(r) } else { None }).collect();
        assert_eq!(adds.len(), 3);
        assert_eq!(adds[0].source, AddSource::Metainfo(std::fs::read(&torrent).expect("read")));
        assert_eq!((adds[0].paused, adds[0].labels.as_slice()), (Some(true), &["tv-sonarr".to_owned()][..]));
        assert!(matches!(adds[2].source, AddSource::Magnet { .. }));
        let rest: Vec<&Call> = calls.iter().filter(|c| !matches!(c, Call::Add(_))).collect();
        assert!(matches!(rest[0], Call::Start(ids, false) if ids == &[4]), "{rest:?}");
        assert!(matches!(rest[1], Call::Start(ids, true) if ids == &[4]), "{rest:?}");
        assert!(matches!(rest[2], Call::Stop(ids) if ids == &[4]), "{rest:?}");
        assert!(
            matches!(rest[3], Call::Set(ids, set) if ids == &[4] && set.seed_ratio_limit == Some(1.5) && set.seed_ratio_mode == Some(LimitMode::Single)),
            "{rest:?}"
        );
        assert!(matches!(rest[4], Call::QueueMove(ids, bitswarm_rpc::QueueMove::Top) if ids == &[5]), "{rest:?}");
        assert!(matches!(rest[5], Call::Remove(ids, false) if ids == &[5]), "{rest:?}");
        assert!(matches!(rest[6], Call::Remove(ids, true) if ids == &[4]), "{rest:?}");
    })
    .await
    .expect("the test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_transmission_rpc_with_a_password() {
    if !require("python3", INSTALL_PYTHON) {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let config = RpcConfig { credentials: Some(Credentials::from_password("py", "thon")), ..RpcConfig::default() };
        let s = Server::start(config).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let torrent = write_torrent(dir.path(), "py.bin");
        let out = client(&s, &torrent, Some(("py", "thon"))).await;
        assert_eq!(out["errors"], Value::Array(vec![]), "{out:#}");
        assert_eq!(out["left"], serde_json::json!([1, 2, 3]));
    })
    .await
    .expect("the test took too long");
}
