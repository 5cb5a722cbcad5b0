#![no_main]
//! Any bytes: decoding never panics, and whatever decodes re-encodes to something that decodes
//! to the same value.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bitswarm_bencode::decode(data) {
        let again = v.encode();
        let w = bitswarm_bencode::decode(&again).expect("canonical output decodes");
        assert_eq!(w.encode(), again);
    }
});
