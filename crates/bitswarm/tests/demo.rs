//! `bitswarm demo` with small sizes: it must verify every leecher's bytes, show trading among
//! the leechers in its table, exit 0, and clean up after itself unless told to keep the folder.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

#[test]
fn demo_runs_a_swarm_and_checks_the_data() {
    let t = tempdir();
    let dir = t.path().join("demo");
    let mut c = bitswarm();
    c.args(["demo", "--size", "8M", "--leechers", "3", "--seeders", "2", "--keep", "--dir"]).arg(&dir);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{out}\n{err}");
    assert!(out.contains("all 3 leechers have every byte, verified against the original"), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("seed ") || l.starts_with("leech ")).collect();
    assert_eq!(rows.iter().filter(|l| l.contains("listening on")).count(), 5, "{out}");
    let table: Vec<&&str> = rows.iter().filter(|l| !l.contains("listening on")).collect();
    assert_eq!(table.len(), 5, "one row per peer:\n{out}");
    let line = out.lines().find(|l| l.starts_with("leechers sent each other ")).expect("trade line");
    assert!(!line.starts_with("leechers sent each other 0 B"), "{line}");
    // Kept, with each leecher's copy identical to the original.
    let original = std::fs::read(dir.join("seed1/demo.bin")).unwrap();
    assert_eq!(original.len(), 8 << 20);
    for i in 1..=3 {
        assert!(std::fs::read(dir.join(format!("leech{i}/demo.bin"))).unwrap() == original, "leech {i}");
    }
}

#[test]
fn demo_removes_its_temporary_folder_and_rejects_bad_arguments() {
    let mut c = bitswarm();
    c.args(["demo", "--size", "2M", "--leechers", "2", "-q"]);
    let (st, out, err) = run(c, T);
    assert!(st.success(), "{out}\n{err}");
    let folder = out.lines().find_map(|l| l.strip_prefix("data: ")).and_then(|l| l.split(" in ").nth(1)).unwrap();
    let root = std::path::Path::new(folder).parent().unwrap().parent().unwrap();
    assert!(!root.exists(), "{} is removed", root.display());

    for args in [&["demo", "--size", "0"][..], &["demo", "--leechers", "0"], &["demo", "--size", "lots"]] {
        let mut c = bitswarm();
        c.args(args);
        let (st, _, err) = run(c, T);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error: invalid value"), "{args:?}: {err}");
    }
}
