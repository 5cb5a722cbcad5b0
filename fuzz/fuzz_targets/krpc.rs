//! KRPC datagrams (BEP 5 and the extensions bitswarm-dht speaks). Decoding never panics and
//! whatever decodes re-encodes to a message that decodes the same. The same bytes are then fed
//! to a DHT node twice: as an unsolicited datagram, and, if they decode as a response or an
//! error, under the transaction id of a lookup query the node is waiting on, from the node it
//! asked, so that the lookup and routing code sees hostile answers too. Nothing may panic and
//! everything the node sends must decode.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bitswarm_dht::krpc::{Body, Message, NodeInfo};
use bitswarm_dht::{Config, Dht, InfoHash, NodeId};
use libfuzzer_sys::fuzz_target;

fn drain(d: &mut Dht) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(t) = d.poll_transmit() {
        assert!(Message::decode(&t.bytes).is_ok(), "the node sent something it cannot read");
        out.push(t.bytes);
    }
    while d.poll_event().is_some() {}
    out
}

fuzz_target!(|data: &[u8]| {
    let decoded = Message::decode(data);
    if let Ok(m) = &decoded {
        assert_eq!(&Message::decode(&m.encode()).expect("an encoded message decodes"), m);
    } else if let Err(e) = &decoded {
        let _ = e.to_string();
        if let Some(reply) = e.reply() {
            assert!(Message::decode(&reply.encode()).is_ok());
        }
    }

    let now = Instant::now();
    let mut d = Dht::new(Config::default(), [3; 32], now).expect("default config");
    let stranger: SocketAddr = "203.0.113.9:6881".parse().unwrap();
    d.handle_packet(now, stranger, data);
    drain(&mut d);

    // A lookup waiting on one node; answer it with the fuzzed message.
    let node: SocketAddr = "198.51.100.1:1000".parse().unwrap();
    d.import_nodes(now, &[NodeInfo { id: NodeId([0x42; 20]), addr: node }]);
    drain(&mut d);
    d.announce(now, InfoHash([0x41; 20]), 6881, false);
    let sent = drain(&mut d);
    if let (Some(q), Ok(mut m)) = (sent.first(), decoded) {
        if matches!(m.body, Body::Response(_) | Body::Error { .. }) {
            m.transaction_id = Message::decode(q).expect("checked in drain").transaction_id;
            d.handle_packet(now, node, &m.encode());
            drain(&mut d);
        }
    }
    d.handle_timeout(now + Duration::from_secs(3));
    drain(&mut d);
});
