#![no_main]
//! Any datagram as a BEP 14 announce: parsing never panics, keeps within its bounds, and what it
//! parsed, formatted again (as many info-hashes as fit in a packet), parses to the same announce.
use bitswarm_wire::lsd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = lsd::parse(data) {
        assert!(a.port != 0 && !a.info_hashes.is_empty() && a.info_hashes.len() <= lsd::MAX_HASHES);
        let group = lsd::GROUP_V4.parse().unwrap();
        let cookie = a.cookie.clone().unwrap_or_default();
        // As we send them: as many as fit in a packet.
        let hashes = &a.info_hashes[..a.info_hashes.len().min(lsd::hashes_per_packet(group, &cookie))];
        let packet = lsd::format(group, a.port, hashes, &cookie);
        let again = lsd::parse(&packet).expect("our announces parse");
        assert_eq!((again.port, &again.info_hashes[..]), (a.port, hashes));
    }
});
