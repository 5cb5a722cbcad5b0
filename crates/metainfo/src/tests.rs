use super::*;
use proptest::prelude::*;

fn single(len: u64, piece: u64) -> TorrentBuilder {
    TorrentBuilder {
        name: "file.bin".into(),
        piece_length: piece,
        pieces: vec![[7u8; 20]; len.div_ceil(piece) as usize],
        length: len,
        trackers: vec![vec!["http://127.0.0.1:6969/announce".into()]],
        ..Default::default()
    }
}

fn err(bytes: &[u8]) -> String {
    Metainfo::parse(bytes).unwrap_err().to_string()
}

/// Replaces the first occurrence of `from` with `to` in a bencoded torrent.
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let i = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    [&bytes[..i], to, &bytes[i + from.len()..]].concat()
}

#[test]
fn single_file_round_trip() {
    let mut b = single(100_000, 32768);
    b.comment = Some("hello".into());
    b.creation_date = Some(1_700_000_000);
    b.created_by = Some("bitswarm".into());
    b.private = true;
    b.web_seeds = vec!["http://example.invalid/file.bin".into()];
    let (bytes, hash) = b.build();
    let m = Metainfo::parse(&bytes).unwrap();
    assert_eq!(m.info_hash, hash);
    assert_eq!(m.info.name, "file.bin");
    assert_eq!(m.info.total_length, 100_000);
    assert_eq!(m.info.piece_count(), 4);
    assert_eq!(m.info.piece_size(3), 100_000 - 3 * 32768);
    assert!(m.info.private && !m.info.multi_file && !m.hybrid);
    assert_eq!(m.trackers(), vec![vec!["http://127.0.0.1:6969/announce".to_string()]]);
    assert_eq!(m.comment.as_deref(), Some("hello"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
    assert_eq!(m.url_list, vec!["http://example.invalid/file.bin".to_string()]);
    assert_eq!(m.info.files[0].path, vec!["file.bin".to_string()]);
    // Canonical: re-encoding the parsed bytes changes nothing.
    assert_eq!(bitswarm_bencode::decode(&bytes).unwrap().encode(), bytes);
}

#[test]
fn multi_file_offsets_and_tiers() {
    let b = TorrentBuilder {
        name: "root".into(),
        piece_length: 16384,
        pieces: vec![[1; 20]; 2],
        files: Some(vec![
            (vec!["a".into()], 10_000),
            (vec!["empty".into()], 0),
            (vec!["sub".into(), "b".into()], 10_000),
        ]),
        trackers: vec![vec!["udp://t1:1".into(), "http://t2/a".into()], vec!["http://t3/a".into()]],
        ..Default::default()
    };
    let (bytes, _) = b.build();
    let m = Metainfo::parse(&bytes).unwrap();
    assert!(m.info.multi_file);
    let offsets: Vec<u64> = m.info.files.iter().map(|f| f.offset).collect();
    assert_eq!(offsets, vec![0, 10_000, 10_000]);
    assert_eq!(m.info.files[2].path_string(), "sub/b");
    assert_eq!(m.info.relative_path(&m.info.files[2]), std::path::PathBuf::from("root/sub/b"));
    assert_eq!(m.announce.as_deref(), Some("udp://t1:1"));
    assert_eq!(m.trackers().len(), 2);
    assert_eq!(m.trackers()[0].len(), 2);
}

#[test]
fn info_hash_covers_raw_bytes_with_unsorted_keys() {
    // `name` before `length`, and an unknown key: a canonical re-encoding would hash differently.
    let info = b"d4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaa3:zzzi1ee";
    let torrent = [&b"d4:info"[..], info, b"e"].concat();
    let m = Metainfo::parse(&torrent).unwrap();
    assert_eq!(m.info_hash, InfoHash::of(info));
    assert_eq!(m.info_bytes(), info);
    assert_ne!(m.info_hash, InfoHash::of(&bitswarm_bencode::decode(info).unwrap().encode()));
}

#[test]
fn refuses_bad_torrents_with_the_field_named() {
    let (good, _) = single(100_000, 32768).build();
    assert!(err(&good[..good.len() - 1]).starts_with("not bencode: unexpected end of data"));
    assert_eq!(err(b"i1e"), "the file: expected a dictionary, found integer");
    assert_eq!(err(b"d8:announce3:urle"), "info: missing");
    assert_eq!(
        err(&patch(&good, b"6:lengthi100000e", b"6:lengthi-10000e")),
        "info.length: must not be negative, found -10000"
    );
    assert!(err(&patch(&good, b"6:pieces80:", b"6:pieces79:")).contains("not bencode"));
    let short = patch(&good, b"6:lengthi100000e", b"6:lengthi999999e");
    assert_eq!(err(&short), "info.pieces: holds 4 piece hashes, but 999999 bytes in pieces of 32768 need 31");
    assert_eq!(
        err(&patch(&good, b"12:piece lengthi32768e", b"12:piece lengthi0e")),
        "info.piece length: must be between 1 and 536870912, found 0"
    );
    assert!(err(&patch(&good, b"4:name8:file.bin", b"4:name8:../x.bin")).contains("unsafe path"),);
    assert!(err(&patch(&good, b"4:name8:file.bin", b"4:name2:..")).contains("unsafe path"));
    assert_eq!(
        err(&patch(&good, b"6:lengthi100000e", b"6:lengthi99999999999999999999e")),
        "not bencode: integer out of range at byte 60"
    );
}

#[test]
fn refuses_pieces_not_multiple_of_20() {
    let info = b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces19:aaaaaaaaaaaaaaaaaaae";
    let t = [&b"d4:info"[..], info, b"e"].concat();
    assert_eq!(err(&t), "info.pieces: length 19 is not a multiple of 20 (one SHA-1 per piece)");
}

fn multi_with_path(path: &[&[u8]]) -> Vec<u8> {
    let mut e = bitswarm_bencode::Encoder::new();
    e.begin_dict().str("info").begin_dict();
    e.str("files").begin_list().begin_dict().str("length").int(5).str("path").begin_list();
    for c in path {
        e.bytes(c);
    }
    e.end().end().end();
    e.str("name").str("root").str("piece length").int(16384).str("pieces").bytes(&[0; 20]);
    e.end().end();
    e.finish()
}

fn multi_with_paths(paths: &[&[&str]]) -> Vec<u8> {
    let mut e = bitswarm_bencode::Encoder::new();
    e.begin_dict().str("info").begin_dict();
    e.str("files").begin_list();
    for p in paths {
        e.begin_dict().str("length").int(5).str("path").begin_list();
        for c in *p {
            e.str(c);
        }
        e.end().end();
    }
    e.end();
    let pieces = (5 * paths.len() as u64).div_ceil(16384) as usize;
    e.str("name").str("root").str("piece length").int(16384).str("pieces").bytes(&vec![0; 20 * pieces]);
    e.end().end();
    e.finish()
}

#[test]
fn refuses_files_that_cannot_exist_together() {
    assert!(Metainfo::parse(&multi_with_paths(&[&["a", "b"], &["a", "c"], &["ab"]])).is_ok());
    assert_eq!(
        err(&multi_with_paths(&[&["x"], &["a"], &["a", "b"]])),
        "info.files[2].path: \"a/b\" needs \"a\" to be a folder, but info.files[1] is a file by that name"
    );
    // The file may come after the files under it, and deeper down.
    assert_eq!(
        err(&multi_with_paths(&[&["a", "b", "c"], &["a", "b"]])),
        "info.files[0].path: \"a/b/c\" needs \"a/b\" to be a folder, but info.files[1] is a file by that name"
    );
    assert_eq!(
        err(&multi_with_paths(&[&["a", "b"], &["c"], &["a", "b"]])),
        "info.files[2].path: \"a/b\" appears twice (also info.files[0])"
    );
}

#[test]
fn refuses_paths_too_long_for_the_file_system() {
    let deep: Vec<&str> = vec!["d"; 3000];
    let e = err(&multi_with_paths(&[&deep]));
    assert!(e.starts_with("info.files[0].path: d/d/d/"), "{e}");
    assert!(
        e.ends_with("is 6004 bytes long with the torrent's name (3000 components); the file system takes at most 4095"),
        "{e}"
    );
    let long = "n".repeat(300);
    let e = err(&multi_with_paths(&[&["ok"], &[&long]]));
    assert!(e.starts_with("info.files[1].path: unsafe path: a path component longer than 255 bytes"), "{e}");
    assert!(e.contains("nnnn…nnnn"), "{e}");
    let (good, _) = single(100_000, 32768).build();
    let long_name = format!("4:name300:{long}");
    let e = err(&patch(&good, b"4:name8:file.bin", long_name.as_bytes()));
    assert!(e.starts_with("info.name: unsafe path: a path component longer than 255 bytes"), "{e}");
    let name_255 = format!("4:name255:{}", "n".repeat(255));
    assert!(Metainfo::parse(&patch(&good, b"4:name8:file.bin", name_255.as_bytes())).is_ok());
}

#[test]
fn refuses_torrents_past_the_load_limits() {
    // A million files: refused while counting, before a tree is built.
    let mut t = b"d4:infod5:filesl".to_vec();
    for _ in 0..1_000_000 {
        t.extend_from_slice(b"d6:lengthi1e4:pathl1:xee");
    }
    t.extend_from_slice(b"e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee");
    let e = err(&t);
    assert!(e.starts_with("not bencode: more than 3000000 values"), "{e}");
    // More pieces than libtorrent loads.
    let n = MAX_PIECES + 1;
    let mut t = format!("d4:infod6:lengthi{}e4:name1:x12:piece lengthi16384e6:pieces{}:", n as u64 * 16384, n * 20)
        .into_bytes();
    t.resize(t.len() + n * 20, b'a');
    t.extend_from_slice(b"ee");
    assert_eq!(err(&t), "info.pieces: 2097153 pieces, more than the 2097152 allowed");
}

#[test]
fn refuses_unsafe_file_paths() {
    assert!(Metainfo::parse(&multi_with_path(&[b"ok", b"fine"])).is_ok());
    for bad in [&[&b".."[..], b"x"][..], &[b"a", b""], &[b"a/b"], &[b"/etc"], &[b"a\0b"], &[b"."], &[]] {
        let e = err(&multi_with_path(bad));
        assert!(e.starts_with("info.files[0].path"), "{e}");
    }
}

#[test]
fn v2_only_refused_hybrid_loads_as_v1() {
    let v2 = b"d4:infod9:file treede12:meta versioni2e4:name1:x12:piece lengthi16384eee";
    assert!(matches!(Metainfo::parse(v2), Err(MetainfoError::V2Only)));
    let hybrid = b"d4:infod9:file treede6:lengthi5e12:meta versioni2e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
    let m = Metainfo::parse(hybrid).unwrap();
    assert!(m.hybrid);
    assert_eq!(m.info.total_length, 5);
}

#[test]
fn padding_files_are_flagged() {
    let mut e = bitswarm_bencode::Encoder::new();
    e.begin_dict().str("info").begin_dict().str("files").begin_list();
    e.begin_dict().str("length").int(5).str("path").begin_list().str("a").end().end();
    e.begin_dict()
        .str("attr")
        .str("p")
        .str("length")
        .int(16379)
        .str("path")
        .begin_list()
        .str(".pad")
        .str("16379")
        .end()
        .end();
    e.begin_dict().str("length").int(5).str("path").begin_list().str("b").end().end();
    e.end().str("name").str("r").str("piece length").int(16384).str("pieces").bytes(&[0; 40]).end().end();
    let m = Metainfo::parse(&e.finish()).unwrap();
    assert_eq!(m.info.files.iter().map(|f| f.padding).collect::<Vec<_>>(), vec![false, true, false]);
    assert_eq!(m.info.files[2].offset, 16384);
}

#[test]
fn piece_length_choice() {
    assert_eq!(auto_piece_length(1), 16 << 10);
    assert_eq!(auto_piece_length(1 << 30), 1 << 20);
    assert_eq!(auto_piece_length(160 << 20), 128 << 10);
    assert_eq!(auto_piece_length(1 << 50), 16 << 20);
    for total in [100u64 << 20, 1 << 30, 3 << 30, 20 << 30] {
        let n = total.div_ceil(auto_piece_length(total));
        assert!((1000..=2000).contains(&n), "{total}: {n} pieces");
    }
}

#[test]
fn magnet_parse_and_build() {
    let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    let m = Magnet::parse(&format!(
        "magnet:?xt=urn:btih:{}&dn=My+File%20x&tr=udp%3A%2F%2Ft%3A1&tr=http://a/b&x.pe=127.0.0.1:6881",
        hex.to_uppercase()
    ))
    .unwrap();
    assert_eq!(m.info_hash.to_hex(), hex);
    assert_eq!(m.name.as_deref(), Some("My File x"));
    assert_eq!(m.trackers, vec!["udp://t:1".to_string(), "http://a/b".to_string()]);
    assert_eq!(m.peers, vec!["127.0.0.1:6881".to_string()]);
    let again = Magnet::parse(&m.to_string()).unwrap();
    assert_eq!(again, m);

    // base32 form of the same hash
    let b32 = data_encoding::BASE32.encode(&m.info_hash.0);
    assert_eq!(Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase())).unwrap().info_hash, m.info_hash);

    assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
    assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoInfoHash));
    assert!(matches!(Magnet::parse("magnet:?xt=urn:btih:1234"), Err(MagnetError::BadInfoHash(_))));
    // 32 base32 characters with padding decode to fewer than 20 bytes: an error, not a panic.
    for padded in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAA====", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="] {
        assert!(InfoHash::parse(padded).is_err(), "{padded}");
        let link = format!("magnet:?xt=urn:btih:{padded}");
        assert!(matches!(Magnet::parse(&link), Err(MagnetError::BadInfoHash(_))), "{link}");
    }
    assert_eq!(Magnet::parse("magnet:?xt=urn:btmh:1220abcd"), Err(MagnetError::V2Only));
    assert!(matches!(Magnet::parse("magnet:?xt=urn:btih:%FF%FE"), Err(MagnetError::BadEncoding(_))));
}

proptest! {
    #[test]
    fn build_parse_round_trip(
        name in "[a-zA-Z0-9 _.-]{1,20}".prop_filter("safe", |n| unsafe_component(n).is_none()),
        files in proptest::collection::vec(("[a-z]{1,8}", 0u64..100_000), 1..8),
        piece_pow in 14u32..18,
        private in any::<bool>(),
    ) {
        let piece_length = 1u64 << piece_pow;
        let files: Vec<(Vec<String>, u64)> = files.into_iter().enumerate()
            .map(|(i, (n, l))| (vec![format!("d{i}"), n], l)).collect();
        let total: u64 = files.iter().map(|f| f.1).sum();
        prop_assume!(total > 0);
        let b = TorrentBuilder {
            name, piece_length, private,
            pieces: vec![[3; 20]; total.div_ceil(piece_length) as usize],
            files: Some(files.clone()),
            ..Default::default()
        };
        let (bytes, hash) = b.build();
        let m = Metainfo::parse(&bytes).unwrap();
        prop_assert_eq!(m.info_hash, hash);
        prop_assert_eq!(m.info.total_length, total);
        prop_assert_eq!(m.info.private, private);
        let got: Vec<(Vec<String>, u64)> = m.info.files.iter().map(|f| (f.path.clone(), f.length)).collect();
        prop_assert_eq!(got, files);
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::parse(&data);
    }

    #[test]
    fn magnet_never_panics(s in "magnet:\\?[ -~]{0,200}") {
        let _ = Magnet::parse(&s);
    }
}

#[test]
fn from_info_bytes_keeps_the_hash_and_takes_the_trackers() {
    let (bytes, hash) = single(100_000, 32768).build();
    let m = Metainfo::parse(&bytes).unwrap();
    assert_eq!(m.info_hash, hash);
    let trackers = vec!["udp://t.example:6969/announce".to_string(), "http://u.example/announce".to_string()];
    let again = Metainfo::from_info_bytes(m.info_bytes(), &trackers).unwrap();
    assert_eq!(again.info_hash, m.info_hash);
    assert_eq!(again.info, m.info);
    assert_eq!(again.trackers(), vec![vec![trackers[0].clone()], vec![trackers[1].clone()]]);
    assert!(Metainfo::from_info_bytes(b"d4:name1:xe", &[]).is_err(), "an incomplete info dictionary is refused");
    assert!(Metainfo::from_info_bytes(b"i1e", &[]).is_err());
}

#[test]
fn dht_nodes_are_read_leniently() {
    let (bytes, _) = single(100_000, 32768).build();
    assert!(Metainfo::parse(&bytes).unwrap().nodes().is_empty());
    // `nodes` goes before `info` (keys in order): good pairs kept, bad entries left out.
    let nodes = b"5:nodesll9:127.0.0.1i6881eel4:hosti0eel1:xel1:hi70000eel10:router.exai1eee";
    let with = patch(&bytes, b"4:info", &[&nodes[..], b"4:info"].concat());
    let m = Metainfo::parse(&with).unwrap();
    assert_eq!(m.nodes(), vec![("127.0.0.1".to_owned(), 6881), ("router.exa".to_owned(), 1)]);
    assert_eq!(m.info_hash, Metainfo::parse(&bytes).unwrap().info_hash);
}
