#![no_main]
//! Any text as a magnet link: parsing never panics, and a parsed link survives a round trip.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(m) = bitswarm_metainfo::Magnet::parse(s)
    {
        let again = bitswarm_metainfo::Magnet::parse(&m.to_string()).expect("our links parse");
        assert_eq!(again.info_hash, m.info_hash);
    }
});
