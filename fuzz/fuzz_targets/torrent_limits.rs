#![no_main]
//! The load limits of .torrent files. The first byte is a limit on values: the limited decoder
//! takes exactly the inputs the decoder takes that hold no more values than that, and refuses
//! the others for their count. The rest, parsed as a .torrent, is accepted only if its files can
//! all exist at once: no component over 255 bytes, no path over the length Linux can open, no
//! file where another needs a folder, no path twice.
use bitswarm_bencode::{ErrorKind, Value, decode, decode_limited};
use bitswarm_metainfo::{MAX_COMPONENT, MAX_PATH, MAX_PIECES, Metainfo};
use libfuzzer_sys::fuzz_target;

fn values(v: &Value<'_>) -> usize {
    match v {
        Value::Int(_) | Value::Bytes(_) => 1,
        Value::List(l) => 1 + l.iter().map(values).sum::<usize>(),
        Value::Dict(d) => 1 + d.entries.iter().map(|(_, x)| 1 + values(x)).sum::<usize>(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else { return };
    let max = usize::from(max);
    match (decode(rest), decode_limited(rest, max)) {
        (Ok(v), Ok(w)) => {
            assert!(values(&v) <= max);
            assert_eq!(v, w);
        }
        (Ok(v), Err(e)) => {
            assert!(matches!(e.kind, ErrorKind::TooManyValues(m) if m == max), "{e}");
            assert!(values(&v) > max);
        }
        (Err(e), Ok(_)) => panic!("the limited decoder took what the decoder refused: {e}"),
        (Err(_), Err(_)) => {}
    }
    if let Ok(m) = Metainfo::parse(rest) {
        let i = &m.info;
        assert!(i.pieces.len() <= MAX_PIECES);
        assert!(i.name.len() <= MAX_COMPONENT);
        let files: Vec<&Vec<String>> = i.files.iter().filter(|f| !f.padding).map(|f| &f.path).collect();
        for p in &files {
            assert!(p.iter().all(|c| c.len() <= MAX_COMPONENT));
            if i.multi_file {
                assert!(i.name.len() + p.iter().map(|c| 1 + c.len()).sum::<usize>() <= MAX_PATH);
            }
        }
        for (a, p) in files.iter().enumerate() {
            for q in &files[a + 1..] {
                assert!(!p.starts_with(q) && !q.starts_with(p), "{p:?} and {q:?} cannot both exist");
            }
        }
    }
});
