//! `bitswarm torrent …` as a user runs it: create, show, verify, magnet, and bad input.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

fn create(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut c = bitswarm();
    c.args(["torrent", "create"]).args(args);
    run(c, T)
}

fn show_json(torrent: &str) -> serde_json::Value {
    let mut c = bitswarm();
    c.args(["torrent", "show", "--json", torrent]);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn create_show_verify_multi_file_tree() {
    let t = tempdir();
    let root = t.path().join("tree");
    let a = random_file(&root.join("a.bin"), 200_000, 1);
    random_file(&root.join("sub/deeper/b.bin"), 70_001, 2);
    std::fs::write(root.join("sub/empty"), b"").unwrap();
    std::fs::write(root.join(".hidden"), b"x").unwrap();
    let out = t.path().join("tree.torrent");
    let (st, stdout, stderr) = create(&[
        &s(&root),
        "-o",
        &s(&out),
        "-t",
        "http://127.0.0.1:1/announce",
        "-t",
        "udp://127.0.0.1:2,http://127.0.0.1:3/announce",
        "--comment",
        "hello",
        "--piece-size",
        "32K",
        "--private",
        "--web-seed",
        "http://127.0.0.1:4/tree",
    ]);
    assert!(st.success(), "{stderr}");
    let hash = stdout.lines().find_map(|l| l.strip_prefix("info-hash: ")).unwrap().to_owned();
    assert!(stdout.contains(&format!("magnet:?xt=urn:btih:{hash}&dn=tree")), "{stdout}");

    let j = show_json(&s(&out));
    assert_eq!(j["info_hash"], hash.as_str());
    assert_eq!(j["name"], "tree");
    assert_eq!(j["total_size"], 200_000 + 70_001 + 1);
    assert_eq!(j["piece_length"], 32768);
    assert_eq!(j["piece_count"], (270_002u64).div_ceil(32768));
    assert_eq!(j["private"], true);
    assert_eq!(
        j["trackers"],
        serde_json::json!([["http://127.0.0.1:1/announce"], ["udp://127.0.0.1:2", "http://127.0.0.1:3/announce"]])
    );
    assert_eq!(
        j["files"],
        serde_json::json!([
            {"path": ".hidden", "length": 1, "padding": false},
            {"path": "a.bin", "length": 200_000, "padding": false},
            {"path": "sub/deeper/b.bin", "length": 70_001, "padding": false},
            {"path": "sub/empty", "length": 0, "padding": false},
        ])
    );

    let mut c = bitswarm();
    c.args(["torrent", "show", &s(&out)]);
    let (st, text, _) = run(c, T);
    assert!(st.success());
    assert!(text.contains(&hash) && text.contains("comment:      hello") && text.contains("sub/deeper/b.bin"));

    let mut c = bitswarm();
    c.args(["torrent", "magnet", &s(&out)]);
    let (st, magnet, _) = run(c, T);
    assert!(st.success());
    assert!(magnet.trim().starts_with(&format!("magnet:?xt=urn:btih:{hash}")));

    let verify = || {
        let mut c = bitswarm();
        c.args(["torrent", "verify", &s(&out), "-d", &s(t.path())]);
        run(c, T)
    };
    let (st, text, _) = verify();
    assert!(st.success(), "{text}");
    assert!(text.contains("pieces: 9 good, 0 missing, 0 bad (of 9)"), "{text}");

    // Damage one byte in the middle of a.bin, and remove b.bin.
    let mut damaged = a.clone();
    damaged[100_000] ^= 0xff;
    std::fs::write(root.join("a.bin"), damaged).unwrap();
    std::fs::remove_file(root.join("sub/deeper/b.bin")).unwrap();
    let (st, text, err) = verify();
    assert_eq!(st.code(), Some(1), "{text}{err}");
    assert!(text.contains("pieces: 5 good, 3 missing, 1 bad (of 9)"), "{text}");
    assert!(text.contains("b.bin: missing"), "{text}");
    assert!(err.contains("4 of 9 pieces are not good"), "{err}");
}

#[test]
fn create_refuses_to_overwrite_and_defaults_piece_size() {
    let t = tempdir();
    let f = t.path().join("one.bin");
    random_file(&f, 5 << 20, 3);
    let out = t.path().join("one.torrent");
    std::fs::write(&out, b"keep me").unwrap();
    let (st, _, err) = create(&[&s(&f), "-o", &s(&out)]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("already exists (use --force to overwrite)"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let (st, _, err) = create(&[&s(&f), "-o", &s(&out), "--force", "--no-date", "-q"]);
    assert!(st.success(), "{err}");
    assert!(err.is_empty(), "quiet prints nothing on stderr: {err}");
    let j = show_json(&s(&out));
    assert_eq!(j["piece_length"], 16384, "5 MiB: 320 pieces of the 16 KiB minimum");
    assert_eq!(j["files"], serde_json::json!([{"path": "one.bin", "length": 5 << 20, "padding": false}]));
    assert_eq!(j["creation_date"], serde_json::Value::Null);

    // Reproducible: the same input and --no-date give the same bytes.
    let first = std::fs::read(&out).unwrap();
    let (st, _, _) = create(&[&s(&f), "-o", &s(&out), "--force", "--no-date", "-q"]);
    assert!(st.success());
    assert_eq!(std::fs::read(&out).unwrap(), first);
}

#[test]
fn create_rejects_bad_arguments() {
    let t = tempdir();
    let f = t.path().join("x.bin");
    random_file(&f, 1000, 4);
    let o = s(&t.path().join("x.torrent"));
    for (args, want) in [
        (vec![s(&f), "-o".into(), o.clone(), "--piece-size".into(), "1000".into()], "power of two"),
        (vec![s(&f), "-o".into(), o.clone(), "-t".into(), "ftp://x/".into()], "tracker URL starts with"),
        (vec![s(&t.path().join("missing")), "-o".into(), o.clone()], "No such file"),
        (vec![s(&f), "-o".into(), o.clone(), "--web-seed".into(), "nope".into()], "web seed URL"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (st, _, err) = create(&args);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("z"), b"").unwrap();
    let (st, _, err) = create(&[&s(&empty), "-o", &o]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("no data to share"), "{err}");
}

/// Bad .torrent files: one line naming the file and the problem, exit 2, never a panic.
#[test]
fn bad_torrents_get_one_line_errors() {
    let t = tempdir();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", b"d4:infod4:name".to_vec(), "not bencode: unexpected end of data"),
        ("wrong-type", b"d4:infoi3ee".to_vec(), "info: expected a dictionary, found integer"),
        ("negative", b"d4:infod6:lengthi-5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "info.length: must not be negative"),
        ("huge-int", b"d4:infod6:lengthi999999999999999999999999e4:name1:x12:piece lengthi16384e6:pieces0:ee".to_vec(), "integer out of range"),
        ("pieces-19", b"d4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces19:aaaaaaaaaaaaaaaaaaaee".to_vec(), "not a multiple of 20"),
        ("pieces-size", b"d4:infod6:lengthi99999e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "need 7"),
        ("deep", [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat(), "nesting deeper than"),
        ("dotdot", b"d4:infod5:filesld6:lengthi5e4:pathl2:..6:passwdeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "unsafe path"),
        ("absolute", b"d4:infod5:filesld6:lengthi5e4:pathl4:/etc6:passwdeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "unsafe path"),
        ("empty-component", b"d4:infod5:filesld6:lengthi5e4:pathl0:1:aeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "empty path component"),
        ("nul", b"d4:infod5:filesld6:lengthi5e4:pathl3:a\0beee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "NUL"),
        ("v2-only", b"d4:infod9:file treede12:meta versioni2e4:name1:x12:piece lengthi16384eee".to_vec(), "v2-only torrent"),
        ("empty-file", Vec::new(), "unexpected end of data"),
        ("file-and-folder", b"d4:infod5:filesld6:lengthi5e4:pathl1:aeed6:lengthi5e4:pathl1:a1:beee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee".to_vec(), "info.files[1].path: \"a/b\" needs \"a\" to be a folder"),
        ("deep-path", [&b"d4:infod5:filesld6:lengthi5e4:pathl"[..], &b"1:d".repeat(3000), b"eee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"].concat(), "(3000 components); the file system takes at most 4095"),
        ("long-name", [&b"d4:infod6:lengthi5e4:name300:"[..], &[b'n'; 300], b"12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"].concat(), "info.name: unsafe path: a path component longer than 255 bytes"),
    ];
    for (name, bytes, want) in cases {
        let p = t.path().join(format!("{name}.torrent"));
        std::fs::write(&p, bytes).unwrap();
        for cmd in ["show", "verify", "magnet"] {
            let mut c = bitswarm();
            c.args(["torrent", cmd, &s(&p)]);
            let (st, out, err) = run(c, T);
            assert_eq!(st.code(), Some(2), "{name} {cmd}: {out}{err}");
            let line = err.trim();
            assert_eq!(line.lines().count(), 1, "{name} {cmd}: one line: {err}");
            assert!(line.starts_with(&format!("bitswarm: {}: ", p.display())), "{name}: {line}");
            assert!(line.contains(want), "{name} {cmd}: {line}");
            assert!(!line.contains("panicked"), "{name}: {line}");
        }
    }
    let mut c = bitswarm();
    c.args(["torrent", "show", &s(&t.path().join("nonexistent.torrent"))]);
    let (st, _, err) = run(c, T);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("nonexistent.torrent: No such file"), "{err}");
}
