use super::*;
use proptest::prelude::*;

#[test]
fn handshake_round_trip() {
    let h = Handshake::new([1; 20], [2; 20]);
    assert!(h.supports_extensions() && h.supports_fast());
    let b = h.encode();
    // BEP 10's bit (0x10 in byte 5) and BEP 6's (0x04 in byte 7) of the reserved bytes.
    assert_eq!(&b[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
    assert_eq!(b[0], 19);
    assert_eq!(&b[1..20], PROTOCOL);
    assert_eq!(Handshake::decode(&b).unwrap(), h);
    let mut bad = b;
    bad[3] = b'x';
    assert_eq!(Handshake::decode(&bad), Err(WireError::NotBitTorrent));
}

#[test]
fn messages_round_trip() {
    let block = BlockRef { index: 3, begin: 16384, length: 16384 };
    let data = vec![9u8; 100];
    let msgs = [
        Message::KeepAlive,
        Message::Choke,
        Message::Unchoke,
        Message::Interested,
        Message::NotInterested,
        Message::Have(77),
        Message::Bitfield(&[0xff, 0x80]),
        Message::Request(block),
        Message::Piece { index: 1, begin: 2, data: &data },
        Message::Cancel(block),
        Message::Port(6881),
        Message::Suggest(5),
        Message::HaveAll,
        Message::HaveNone,
        Message::Reject(block),
        Message::AllowedFast(6),
        Message::Extended { id: 0, payload: b"de" },
        Message::Unknown { id: 99, payload: b"xyz" },
    ];
    let mut buf = Vec::new();
    for m in &msgs {
        encode(m, &mut buf);
    }
    let mut at = 0;
    for m in &msgs {
        // Every strict prefix asks for more bytes.
        let (_, used) = decode(&buf[at..], 1 << 20).unwrap().unwrap();
        for cut in 0..used {
            assert_eq!(decode(&buf[at..at + cut], 1 << 20).unwrap(), None);
        }
        let (got, used) = decode(&buf[at..], 1 << 20).unwrap().unwrap();
        assert_eq!(&got, m);
        at += used;
    }
    assert_eq!(at, buf.len());
}

#[test]
fn refuses_bad_lengths_and_oversized_messages() {
    assert_eq!(decode(&[0, 0, 0, 2, 0, 0], 100), Err(WireError::BadLength { id: 0, len: 2 }));
    assert_eq!(decode(&[0, 0, 0, 3, 4, 0, 0], 100), Err(WireError::BadLength { id: 4, len: 3 }));
    assert_eq!(decode(&[0, 0, 0, 4, 7, 0, 0, 0], 100), Err(WireError::BadLength { id: 7, len: 4 }));
    assert_eq!(decode(&[0, 0, 1, 0], 100), Err(WireError::TooLong { len: 256, max: 100 }));
    assert!(matches!(decode(&[0xff, 0xff, 0xff, 0xff], max_message_len(10)), Err(WireError::TooLong { .. })));
    assert_eq!(decode(&[0, 0, 0, 1, 20], 100), Err(WireError::BadLength { id: 20, len: 1 }));
    // BEP 6: have all/none carry nothing, reject is a request's 12 bytes.
    assert_eq!(decode(&[0, 0, 0, 2, 14, 0], 100), Err(WireError::BadLength { id: 14, len: 2 }));
    assert_eq!(decode(&[0, 0, 0, 5, 16, 0, 0, 0, 1], 100), Err(WireError::BadLength { id: 16, len: 5 }));
    // BEP 6's messages as libtorrent sends them.
    assert_eq!(decode(&[0, 0, 0, 1, 14], 100), Ok(Some((Message::HaveAll, 5))));
    assert_eq!(decode(&[0, 0, 0, 5, 17, 0, 0, 0, 9], 100), Ok(Some((Message::AllowedFast(9), 9))));
}

#[test]
fn bitfields() {
    let mut b = Bitfield::new(10);
    assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
    assert_eq!(b.as_bytes(), &[0x80, 0x40]);
    assert_eq!(b.count(), 2);
    assert_eq!(Bitfield::from_bytes(&[0x80, 0x40], 10).unwrap(), b);
    assert_eq!(Bitfield::from_bytes(&[0x80, 0x41], 10), Err(WireError::BitfieldSpareBits));
    assert_eq!(Bitfield::from_bytes(&[0x80], 10), Err(WireError::BitfieldSize { got: 1, want: 2 }));
    assert!(Bitfield::full(10).is_full());
    assert_eq!(Bitfield::full(10).ones().collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    b.clear(0);
    assert_eq!(b.count(), 1);
}

#[test]
fn extended_handshake() {
    let h = ExtendedHandshake {
        extensions: vec![("ut_metadata".into(), 3)],
        client: Some("bitswarm 0.1".into()),
        port: Some(6881),
        reqq: Some(500),
        metadata_size: Some(31_337),
    };
    assert_eq!(ExtendedHandshake::decode(&h.encode()).unwrap(), h);
    // libtorrent-style handshake with fields we ignore
    let lt = b"d12:complete_agoi-1e1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei1234e4:reqqi500e11:upload_onlyi1e1:v18:libtorrent/2.0.8.06:yourip4:\x7f\0\0\x01e";
    let h = ExtendedHandshake::decode(lt).unwrap();
    assert_eq!(h.reqq, Some(500));
    assert_eq!(h.metadata_size, Some(1234));
    assert_eq!(h.client.as_deref(), Some("libtorrent/2.0.8.0"));
    assert!(h.extensions.contains(&("ut_pex".into(), 1)));
    assert!(ExtendedHandshake::decode(b"i1e").is_err());
    assert!(ExtendedHandshake::decode(b"d1:mi5ee").is_ok());
}

proptest! {
    #[test]
    fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut at = 0;
        while let Ok(Some((_, used))) = decode(&data[at..], 200) {
            at += used;
        }
    }

    #[test]
    fn request_round_trip(index in any::<u32>(), begin in any::<u32>(), length in any::<u32>()) {
        let m = Message::Request(BlockRef { index, begin, length });
        let mut buf = Vec::new();
        encode(&m, &mut buf);
        prop_assert_eq!(decode(&buf, 100).unwrap().unwrap(), (m, 17));
    }

    #[test]
    fn bitfield_round_trip(bits in proptest::collection::vec(any::<bool>(), 0..200)) {
        let mut b = Bitfield::new(bits.len());
        for (i, &x) in bits.iter().enumerate() { if x { b.set(i); } }
        let again = Bitfield::from_bytes(b.as_bytes(), bits.len()).unwrap();
        prop_assert_eq!(again.count(), bits.iter().filter(|&&x| x).count());
        prop_assert_eq!(again, b);
    }
}

#[test]
fn the_dht_bit() {
    let h = Handshake::new([1; 20], [2; 20]);
    assert!(!h.supports_dht() && h.supports_fast() && h.supports_extensions());
    let d = h.with_dht(true);
    assert!(d.supports_dht() && d.supports_fast() && d.supports_extensions());
    assert_eq!(Handshake::decode(&d.encode()).unwrap(), d);
    assert_eq!(d.with_dht(false), h);
}
