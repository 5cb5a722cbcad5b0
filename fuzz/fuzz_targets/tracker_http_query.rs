//! HTTP tracker parsing: announce and scrape query strings (tracker side) and bencoded
//! announce and scrape replies (client side). Nothing may panic, and whatever parses must
//! survive a round trip through the builders.
#![no_main]

use bitswarm_tracker_proto::http::{self, AnnounceResponse, PeerForm, ScrapeResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = http::parse_announce(data) {
        let again = http::parse_announce(http::announce_query(&r).as_bytes()).expect("a built query parses");
        assert_eq!(again, r);
    }
    if let Ok(s) = http::parse_scrape(data) {
        let again = http::parse_scrape(http::scrape_query(&s.info_hashes).as_bytes()).expect("a built query parses");
        assert_eq!(again, s);
    }
    if let Ok(r) = AnnounceResponse::decode(data) {
        let _ = AnnounceResponse::decode(&r.encode(PeerForm::Compact)).expect("an encoded reply decodes");
        let _ = AnnounceResponse::decode(&r.encode(PeerForm::Dictionary { peer_id: true })).expect("an encoded reply decodes");
    }
    if let Ok(s) = ScrapeResponse::decode(data) {
        let _ = ScrapeResponse::decode(&s.encode()).expect("an encoded reply decodes");
    }
});
