#![no_main]
//! Any bytes as a .torrent file: parsing never panics, and an accepted torrent is consistent
//! (piece count matches the size, paths are safe).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = bitswarm_metainfo::Metainfo::parse(data) {
        let i = &m.info;
        assert_eq!(i.pieces.len() as u64, i.total_length.div_ceil(i.piece_length));
        for f in &i.files {
            assert!(f.path.iter().all(|c| bitswarm_metainfo::unsafe_component(c).is_none()));
        }
        let _ = m.magnet().to_string();
    }
});
