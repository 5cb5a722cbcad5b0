#![no_main]
//! A peer's byte stream: decoding a sequence of messages never panics, consumes what it reports,
//! and every decoded message re-encodes to the bytes it came from. Bitfields, extension
//! handshakes, BEP 9 metadata messages and BEP 11 peer exchange messages are parsed too (a
//! peer exchange message that parses re-encodes to one that parses the same).
use bitswarm_wire::metadata::MetadataMessage;
use bitswarm_wire::pex::PexMessage;
use bitswarm_wire::{Bitfield, ExtendedHandshake, Message, decode, encode, max_message_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max = max_message_len(1000);
    let mut at = 0;
    while let Ok(Some((msg, used))) = decode(&data[at..], max) {
        assert!(used >= 4 && at + used <= data.len());
        let mut again = Vec::new();
        encode(&msg, &mut again);
        assert_eq!(&again[..], &data[at..at + used]);
        match msg {
            Message::Bitfield(b) => {
                let _ = Bitfield::from_bytes(b, 1000);
            }
            Message::Extended { id: 0, payload } => {
                let _ = ExtendedHandshake::decode(payload);
            }
            Message::Extended { payload, .. } => {
                let _ = MetadataMessage::decode(payload);
                if let Ok(m) = PexMessage::decode(payload) {
                    assert_eq!(PexMessage::decode(&m.encode()).as_ref(), Ok(&m));
                }
            }
            _ => {}
        }
        at += used;
    }
});
