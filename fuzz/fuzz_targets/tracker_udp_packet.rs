//! UDP tracker packets (BEP 15, BEP 41 options): requests as a tracker reads them, replies as a
//! client reads them. Nothing may panic; a parsed request re-encodes to the same request.
#![no_main]

use bitswarm_tracker_proto::udp::{Family, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::parse(data) {
        assert_eq!(Request::parse(&r.encode()).expect("an encoded request parses"), r);
    }
    for family in [Family::V4, Family::V6] {
        if let Ok(r) = Response::parse(data, family) {
            let _ = Response::parse(&r.encode(), family).expect("an encoded reply parses");
        }
    }
});
