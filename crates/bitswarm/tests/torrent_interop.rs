//! Torrent files against real programs: torrents made by mktorrent, transmission-create and
//! libtorrent parse with the info-hash those programs compute; ours load in libtorrent (which
//! finds every piece of the original data) and in transmission-show.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(90);
const LT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_torrent.py");

/// A tree with nested folders, an empty file and files that make pieces span file boundaries.
fn make_tree(root: &Path) {
    random_file(&root.join("big.bin"), 300_001, 11);
    random_file(&root.join("sub/one.bin"), 40_000, 12);
    random_file(&root.join("sub/deeper/two.bin"), 77_777, 13);
    std::fs::write(root.join("sub/empty.txt"), b"").unwrap();
}

/// The folder that holds a torrent's content: the parent of the file or folder it was made from.
fn data_dir(base: &Path, src: &str) -> std::path::PathBuf {
    base.join(src).parent().unwrap().to_owned()
}

fn ours(torrent: &Path) -> serde_json::Value {
    let mut c = bitswarm();
    c.args(["torrent", "show", "--json", &s(torrent)]);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "bitswarm torrent show {}: {err}", torrent.display());
    serde_json::from_str(&out).unwrap()
}

fn our_hash(torrent: &Path) -> String {
    ours(torrent)["info_hash"].as_str().unwrap().to_owned()
}

fn our_verify(torrent: &Path, dir: &Path) {
    let mut c = bitswarm();
    c.args(["torrent", "verify", "-q", &s(torrent), "-d", &s(dir)]);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "verify {}: {out}{err}", torrent.display());
    assert!(out.contains("0 missing, 0 bad"), "{out}");
}

fn transmission_hash(torrent: &Path) -> String {
    let (st, out, err) = run(
        {
            let mut c = Command::new("transmission-show");
            c.arg(torrent);
            c
        },
        T,
    );
    assert!(st.success(), "transmission-show: {err}");
    out.lines().find_map(|l| l.trim().strip_prefix("Hash: ")).expect("transmission-show prints Hash:").to_owned()
}

fn lt(args: &[&str]) -> String {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(LT).args(args);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "libtorrent {args:?}: {err}");
    out
}

#[test]
fn interop_mktorrent_torrents_parse_with_the_same_info_hash() {
    if !require("mktorrent") || !require("transmission-show") || !require("libtorrent") {
        return;
    }
    let t = tempdir();
    make_tree(&t.path().join("tree"));
    for (src, out) in [("tree", "tree.torrent"), ("tree/big.bin", "big.torrent")] {
        let out = t.path().join(out);
        let mut c = Command::new("mktorrent");
        c.args(["-a", "http://127.0.0.1:1/announce", "-l", "15", "-o", &s(&out), &s(&t.path().join(src))]);
        let (st, o, e) = run(c, T);
        assert!(st.success(), "mktorrent: {o}{e}");
        let hash = our_hash(&out);
        assert_eq!(hash, transmission_hash(&out), "{src}");
        assert_eq!(hash, lt(&["hash", &s(&out)]).trim(), "{src}");
        our_verify(&out, &data_dir(t.path(), src));
    }
    let j = ours(&t.path().join("tree.torrent"));
    let paths: Vec<&str> = j["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert!(paths.contains(&"sub/deeper/two.bin") && paths.contains(&"sub/empty.txt"), "{paths:?}");
}

#[test]
fn interop_transmission_create_torrents_parse_with_the_same_info_hash() {
    if !require("transmission-create") || !require("transmission-show") {
        return;
    }
    let t = tempdir();
    make_tree(&t.path().join("tree"));
    for (src, out) in [("tree", "tree.torrent"), ("tree/big.bin", "big.torrent")] {
        let out = t.path().join(out);
        let mut c = Command::new("transmission-create");
        c.args(["-o", &s(&out), "-t", "http://127.0.0.1:1/announce", "-s", "32", "-c", "made by transmission"])
            .arg(t.path().join(src));
        let (st, o, e) = run(c, T);
        assert!(st.success(), "transmission-create: {o}{e}");
        assert_eq!(our_hash(&out), transmission_hash(&out), "{src}");
        our_verify(&out, &data_dir(t.path(), src));
    }
    assert_eq!(ours(&t.path().join("big.torrent"))["comment"], "made by transmission");
}

#[test]
fn interop_libtorrent_created_torrents_parse_v1_and_hybrid() {
    if !require("libtorrent") {
        return;
    }
    let t = tempdir();
    make_tree(&t.path().join("tree"));
    for mode in ["v1", "hybrid"] {
        let out = t.path().join(format!("{mode}.torrent"));
        let lt_hash = lt(&["create", &s(&t.path().join("tree")), &s(&out), mode]);
        let j = ours(&out);
        assert_eq!(j["info_hash"], lt_hash.trim(), "{mode}");
        assert_eq!(j["hybrid"], mode == "hybrid");
        if mode == "hybrid" {
            // BEP 52 hybrids align files to pieces with BEP 47 padding files; the data checks anyway.
            assert!(j["files"].as_array().unwrap().iter().any(|f| f["padding"] == true), "{j}");
        }
        our_verify(&out, t.path());
    }
}

#[test]
fn interop_our_torrents_load_in_libtorrent_and_transmission() {
    if !require("libtorrent") || !require("transmission-show") {
        return;
    }
    let t = tempdir();
    let data = t.path().join("data");
    make_tree(&data.join("tree"));
    for (src, out) in [("tree", "tree.torrent"), ("tree/big.bin", "big.torrent")] {
        let out = t.path().join(out);
        let mut c = bitswarm();
        c.args(["torrent", "create", "-q", "--piece-size", "16K", "-t", "http://127.0.0.1:1/announce", "-o"])
            .arg(&out)
            .arg(data.join(src));
        let (st, stdout, err) = run(c, T);
        assert!(st.success(), "{err}");
        let hash = stdout.lines().find_map(|l| l.strip_prefix("info-hash: ")).unwrap().to_owned();

        assert_eq!(transmission_hash(&out), hash, "{src}");
        let report = lt(&["check", &s(&out), &s(&data_dir(&data, src))]);
        assert!(report.contains(&format!("hash {hash}")), "{report}");
        let (have, of) = report
            .lines()
            .find_map(|l| l.strip_prefix("pieces "))
            .and_then(|l| l.split_once(" of "))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .expect("pieces line");
        assert_eq!(have, of, "libtorrent found every piece of {src}: {report}");
    }
    // transmission-show lists the files of our multi-file torrent.
    let mut c = Command::new("transmission-show");
    c.arg(t.path().join("tree.torrent"));
    let (_, out, _) = run(c, T);
    for f in ["tree/big.bin", "tree/sub/deeper/two.bin", "tree/sub/empty.txt", "tree/sub/one.bin"] {
        assert!(out.contains(f), "transmission-show lists {f}:\n{out}");
    }
}
