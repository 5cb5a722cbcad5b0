use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn key96(s: &str) -> [u8; KEY_LEN] {
    hex(s).try_into().unwrap()
}

// Known answers computed with Python's arbitrary-precision pow() and hashlib.
const A_KEY: [u8; 20] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20];
const B_KEY: [u8; 20] = [0xff; 20];
const YA: &str = "96e112dab29e8c5272accb9b17b26887ce54a144a4e3b697c7d159b7a817e556b0918db2b4c658e02a87f7e5fb14b18a553e084cbf3dad2d30f16596ccb982d406258c61b30c5c1dae2ddc60bdbd48d79896312aad63238c39e1a633821eb693";
const YB: &str = "fe9aac142f64ad4d5bca7e30bea17d62c709de9e4c5694e2b27e8c6ed82510bb57952fcce38f6a5084b9699ec34b033ed1a0dbd51d70274bff40ae493f0ce2cdbd3cbd6055c9677a7eb70d29f4d8ecfbc2625316a7ae1a0d3d6605f0406bad79";
const S: &str = "3adb0afff0af5a57448d2c9942ba132cd670d27879b5bf7745c8c4fd2ce1bc68e599e1c7ae211b44220a1ce7c6da8dcef2acd5516b5358089caae45e14b3626c7c824c214a4b4bb0b90f4973d99a368cd092d23c1c46fe2f70f0cc81fe510f31";
const IH: [u8; 20] =
    [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119];

#[test]
fn rc4_known_answers() {
    let enc = |key: &[u8], text: &[u8]| {
        let mut b = text.to_vec();
        Rc4::new(key).apply(&mut b);
        b
    };
    assert_eq!(enc(b"Key", b"Plaintext"), hex("bbf316e8d940af0ad3"));
    assert_eq!(enc(b"Wiki", b"pedia"), hex("1021bf0420"));
    assert_eq!(enc(b"Secret", b"Attack at dawn"), hex("45a01f645fc35b383552544b9bf5"));
    // RFC 6229, 40-bit key 0x0102030405: keystream at offsets 0 and 1024 (past the discard).
    let mut c = Rc4::new(&hex("0102030405"));
    let mut ks = [0u8; 16];
    c.apply(&mut ks);
    assert_eq!(ks.to_vec(), hex("b2396305f03dc027ccc3524a0a1118a8"));
    c.discard(1024 - 16);
    let mut ks = [0u8; 16];
    c.apply(&mut ks);
    assert_eq!(ks.to_vec(), hex("30abbcc7c20b01609f23ee2d5f6bb7df"));
    // Applying in pieces is the same as at once.
    let mut whole = vec![7u8; 1000];
    Rc4::new(b"k").apply(&mut whole);
    let mut parts = vec![7u8; 1000];
    let mut c = Rc4::new(b"k");
    for chunk in parts.chunks_mut(37) {
        c.apply(chunk);
    }
    assert_eq!(whole, parts);
}

#[test]
fn dh_known_answers() {
    assert_eq!(public_key(&A_KEY), key96(YA));
    assert_eq!(public_key(&B_KEY), key96(YB));
    assert_eq!(shared_secret(&A_KEY, &key96(YB)).unwrap(), key96(S));
    assert_eq!(shared_secret(&B_KEY, &key96(YA)).unwrap(), key96(S));
    let mut two = [0u8; KEY_LEN];
    two[95] = 2;
    assert_eq!(dh::mod_pow(&two, &[1]).unwrap(), two);
    let mut three = [0u8; KEY_LEN];
    three[95] = 3;
    let mut want = [0u8; KEY_LEN];
    want[95] = 243;
    assert_eq!(dh::mod_pow(&three, &[5]).unwrap(), want);
    assert_eq!(dh::mod_pow(&three, &[0]).unwrap()[95], 1);
    // (P-1)^2 = 1 mod P; P itself is refused as a base.
    let mut pm1 = PRIME;
    pm1[95] -= 1;
    assert_eq!(dh::mod_pow(&pm1, &[2]).unwrap()[..], { [[0u8; 95].as_slice(), &[1]].concat() }[..]);
    assert!(dh::mod_pow(&PRIME, &[2]).is_none());
    assert_eq!(
        hash(&[b"req1", &key96(S)]).to_vec(),
        hex("9d35a05cdc83a373514b8394ab8103c5ce86c021"),
        "HASH('req1', S)"
    );
    assert_eq!(hash(&[b"keyA", &key96(S), &IH]).to_vec(), hex("c2d380e8e983ba18adc2b818cec5895666948932"));
}

#[test]
fn degenerate_public_keys_are_refused() {
    let mut n = [0u8; KEY_LEN];
    for v in [0u8, 1] {
        n[95] = v;
        assert_eq!(shared_secret(&A_KEY, &n), Err(MseError::BadPublicKey));
    }
    n[95] = 2;
    assert!(shared_secret(&A_KEY, &n).is_ok());
    let mut p = PRIME;
    assert_eq!(shared_secret(&A_KEY, &p), Err(MseError::BadPublicKey));
    p[95] -= 1;
    assert_eq!(shared_secret(&A_KEY, &p), Err(MseError::BadPublicKey));
    p[95] -= 1;
    assert!(shared_secret(&A_KEY, &p).is_ok());
    assert_eq!(shared_secret(&A_KEY, &[0xff; KEY_LEN]), Err(MseError::BadPublicKey));
}

#[test]
fn detect_tells_plaintext_from_mse() {
    let hs = crate::Handshake::new(IH, [9; 20]).encode();
    assert_eq!(detect(&hs), Detected::Plaintext);
    assert_eq!(detect(&hs[..20]), Detected::Plaintext);
    assert_eq!(detect(&hs[..5]), Detected::NeedMore);
    assert_eq!(detect(&[]), Detected::NeedMore);
    assert_eq!(detect(&[18]), Detected::Encrypted);
    let mut almost = hs;
    almost[19] = b'X';
    assert_eq!(detect(&almost), Detected::Encrypted);
    assert_eq!(detect(&key96(YA)), Detected::Encrypted);
}

fn pad(n: usize, fill: u8) -> Vec<u8> {
    (0..n).map(|i| fill ^ i as u8).collect()
}

struct Run {
    a: Result<Established, MseError>,
    b: Result<Established, MseError>,
}

/// Runs A against B in memory, delivering at most `chunk` bytes per `receive`. `b_payload` is
/// what B sends right after its step 4 (in the same write, encrypted as the method says).
fn run(
    (a, b): (Secrets, Secrets),
    provide: u32,
    select: Select,
    ia: &[u8],
    b_payload: &[u8],
    chunk: usize,
    served: Vec<[u8; 20]>,
) -> Run {
    let mut to_b = Vec::new();
    let mut init = Initiator::new(IH, provide, ia.to_vec(), a, &mut to_b);
    let mut resp = Responder::new(served, select, b);
    let mut to_a: Vec<u8> = Vec::new();
    let (mut ra, mut rb) = (None, None);
    for _ in 0..100_000 {
        if rb.is_none() && !to_b.is_empty() {
            let n = to_b.len().min(chunk);
            let input: Vec<u8> = to_b.drain(..n).collect();
            match resp.receive(&input, &mut to_a) {
                Ok(Progress::NeedMore) => {}
                Ok(Progress::Done(e)) => {
                    let mut p = b_payload.to_vec();
                    let mut e = *e;
                    if let Some(c) = &mut e.ciphers {
                        c.encrypt.apply(&mut p);
                    }
                    to_a.extend_from_slice(&p);
                    rb = Some(Ok(e));
                }
                Err(e) => rb = Some(Err(e)),
            }
        } else if ra.is_none() && !to_a.is_empty() {
            let n = to_a.len().min(chunk);
            let input: Vec<u8> = to_a.drain(..n).collect();
            match init.receive(&input, &mut to_b) {
                Ok(Progress::NeedMore) => {}
                Ok(Progress::Done(e)) => ra = Some(Ok(*e)),
                Err(e) => ra = Some(Err(e)),
            }
        } else {
            break;
        }
        if matches!(rb, Some(Err(_))) {
            break;
        }
    }
    // Whatever was still in flight after A finished belongs to the payload stream.
    if let Some(Ok(e)) = &mut ra {
        if let Some(c) = &mut e.ciphers {
            c.decrypt.apply(&mut to_a);
        }
        e.received.extend_from_slice(&to_a);
    }
    Run {
        a: ra.unwrap_or(Err(MseError::NoSync("A never finished"))),
        b: rb.unwrap_or(Err(MseError::NoSync("B never finished"))),
    }
}

/// Both sides agree and the rest of the stream goes through both ways.
fn check_pair(mut a: Established, mut b: Established, want: Method, ia: &[u8], b_payload: &[u8]) {
    assert_eq!(a.method, want);
    assert_eq!(b.method, want);
    assert_eq!(a.info_hash, IH);
    assert_eq!(b.info_hash, IH);
    assert_eq!(b.received, ia, "B got IA");
    assert_eq!(a.received, b_payload, "A got B's first payload");
    assert_eq!(a.ciphers.is_some(), want == Method::Rc4);
    assert_eq!(b.ciphers.is_some(), want == Method::Rc4);
    for round in 0..3u8 {
        let msg: Vec<u8> = (0..100 + round).collect();
        let mut wire = msg.clone();
        if let Some(c) = &mut a.ciphers {
            c.encrypt.apply(&mut wire);
            assert_ne!(wire, msg);
        }
        if let Some(c) = &mut b.ciphers {
            c.decrypt.apply(&mut wire);
        }
        assert_eq!(wire, msg, "A to B");
        let mut wire = msg.clone();
        if let Some(c) = &mut b.ciphers {
            c.encrypt.apply(&mut wire);
        }
        if let Some(c) = &mut a.ciphers {
            c.decrypt.apply(&mut wire);
        }
        assert_eq!(wire, msg, "B to A");
    }
}

#[test]
fn every_provide_select_and_pad_length() {
    let ia = crate::Handshake::new(IH, [7; 20]).encode();
    let b_payload = crate::Handshake::new(IH, [8; 20]).encode();
    let mut runs = 0;
    for provide in [CRYPTO_PLAINTEXT, CRYPTO_RC4, CRYPTO_PLAINTEXT | CRYPTO_RC4] {
        for select in [Select::PreferPlaintext, Select::RequireRc4] {
            for (la, lb, lc, ld) in
                [(0, 0, 0, 0), (512, 512, 512, 512), (1, 511, 0, 17), (300, 0, 512, 0), (0, 2, 1, 512)]
            {
                for chunk in [1, 7, 4096] {
                    if chunk == 1 && la + lb > 600 {
                        continue; // slow and adds nothing over chunk 7
                    }
                    let sa = Secrets::new(A_KEY, pad(la, 0xa5), pad(lc, 0x3c));
                    let sb = Secrets::new(B_KEY, pad(lb, 0x5a), pad(ld, 0xc3));
                    for ia in [&ia[..], &[]] {
                        let r = run((sa.clone(), sb.clone()), provide, select, ia, &b_payload, chunk, vec![IH]);
                        runs += 1;
                        let want = match (select, provide) {
                            (Select::RequireRc4, CRYPTO_PLAINTEXT) => {
                                assert_eq!(r.b.unwrap_err(), MseError::NoCommonMethod(CRYPTO_PLAINTEXT));
                                continue;
                            }
                            (Select::PreferPlaintext, p) if p & CRYPTO_PLAINTEXT != 0 => Method::Plaintext,
                            _ => Method::Rc4,
                        };
                        check_pair(r.a.unwrap(), r.b.unwrap(), want, ia, &b_payload);
                    }
                }
            }
        }
    }
    assert!(runs > 100);
}

#[test]
fn random_secrets_work() {
    let ia = b"hello";
    for _ in 0..4 {
        let r = run(
            (Secrets::random().unwrap(), Secrets::random().unwrap()),
            CRYPTO_RC4,
            Select::PreferPlaintext,
            ia,
            b"world",
            4096,
            vec![IH],
        );
        check_pair(r.a.unwrap(), r.b.unwrap(), Method::Rc4, ia, b"world");
    }
}

#[test]
fn the_responder_picks_the_torrent_by_its_hash() {
    let other = [3u8; 20];
    let sa = || Secrets::new(A_KEY, vec![], vec![]);
    let sb = || Secrets::new(B_KEY, vec![], vec![]);
    let r = run((sa(), sb()), CRYPTO_RC4, Select::PreferPlaintext, b"x", b"", 4096, vec![other, IH]);
    assert_eq!(r.b.unwrap().info_hash, IH);
    let r = run((sa(), sb()), CRYPTO_RC4, Select::PreferPlaintext, b"x", b"", 4096, vec![other]);
    assert_eq!(r.b.unwrap_err(), MseError::UnknownInfoHash);
}

/// A responder for many torrents finds the initiator's through a map of `HASH('req2', ih)`.
#[test]
fn the_responder_finds_the_torrent_through_a_lookup() {
    let (s1, s3) = transcript(0);
    let map: std::collections::HashMap<[u8; 20], [u8; 20]> =
        [[3u8; 20], IH].iter().map(|ih| (req2_digest(ih), *ih)).collect();
    let secrets = || Secrets::new(B_KEY, vec![], vec![]);
    let mut r = Responder::with_lookup(Box::new(move |d| map.get(d).copied()), Select::PreferPlaintext, secrets());
    let mut out = Vec::new();
    match r.receive(&[s1.clone(), s3.clone()].concat(), &mut out) {
        Ok(Progress::Done(e)) => assert_eq!(e.info_hash, IH),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut r = Responder::with_lookup(Box::new(|_| None), Select::PreferPlaintext, secrets());
    assert_eq!(r.receive(&[s1, s3].concat(), &mut Vec::new()).map(|_| ()), Err(MseError::UnknownInfoHash));
}

/// Step 1 and 3 of a real initiator, for tampering.
fn transcript(pad_a: usize) -> (Vec<u8>, Vec<u8>) {
    let mut step1 = Vec::new();
    let mut init =
        Initiator::new(IH, CRYPTO_RC4, b"ia".to_vec(), Secrets::new(A_KEY, pad(pad_a, 1), vec![]), &mut step1);
    let mut step3 = Vec::new();
    assert!(matches!(init.receive(&key96(YB), &mut step3), Ok(Progress::NeedMore)));
    (step1, step3)
}

fn responder() -> Responder {
    Responder::new(vec![IH], Select::PreferPlaintext, Secrets::new(B_KEY, vec![], vec![]))
}

#[test]
fn the_responder_bounds_the_sync_scan() {
    // PadA of 512 bytes is the most: the hash is found.
    let (s1, s3) = transcript(512);
    let mut out = Vec::new();
    let mut r = responder();
    assert!(matches!(r.receive(&[s1, s3].concat(), &mut out), Ok(Progress::Done(_))));
    // More than 512 bytes of PadA: refused once the bound is passed, before the rest arrives.
    let mut s1 = transcript(0).0;
    s1.extend_from_slice(&[0u8; 600]);
    let mut r = responder();
    let mut out = Vec::new();
    assert!(matches!(r.receive(&s1[..KEY_LEN + 531], &mut out), Ok(Progress::NeedMore)));
    assert_eq!(out.len(), KEY_LEN, "Yb (empty PadB) went out after Ya");
    assert_eq!(r.receive(&s1[KEY_LEN + 531..], &mut out).unwrap_err(), MseError::NoSync("HASH('req1', S)"));
    assert_eq!(r.receive(b"more", &mut out).unwrap_err(), MseError::Finished);
}

#[test]
fn the_initiator_bounds_the_sync_scan() {
    let mut out = Vec::new();
    let mut init = Initiator::new(IH, CRYPTO_RC4, vec![], Secrets::new(A_KEY, vec![], vec![]), &mut out);
    let mut junk = key96(YB).to_vec();
    junk.extend_from_slice(&[0x55; 519]);
    assert!(matches!(init.receive(&junk, &mut out), Ok(Progress::NeedMore)));
    assert_eq!(init.receive(&[0x55], &mut out).unwrap_err(), MseError::NoSync("ENCRYPT(VC)"));
}

#[test]
fn tampered_handshakes_fail() {
    let (s1, s3) = transcript(10);
    let at = s1.len();
    let whole = [s1, s3].concat();
    // The encrypted VC, the provide field, len(PadC): flip a bit in each.
    for (i, flip, want) in [(at + 40, 4, MseError::BadVc), (at + 51, 2, MseError::NoCommonMethod(0))] {
        let mut t = whole.clone();
        t[i] ^= flip;
        assert_eq!(responder().receive(&t, &mut Vec::new()).unwrap_err(), want);
    }
    let mut t = whole.clone();
    t[at + 52] ^= 0x80; // len(PadC) high byte: 32768+ bytes
    assert!(matches!(responder().receive(&t, &mut Vec::new()).unwrap_err(), MseError::BadPad(_)));
    // The obfuscated info-hash.
    let mut t = whole.clone();
    t[at + 20] ^= 1;
    assert_eq!(responder().receive(&t, &mut Vec::new()).unwrap_err(), MseError::UnknownInfoHash);
    // A zero public key.
    let mut t = whole;
    t[..KEY_LEN].fill(0);
    assert_eq!(responder().receive(&t, &mut Vec::new()).unwrap_err(), MseError::BadPublicKey);
}

#[test]
fn the_initiator_refuses_a_method_it_did_not_provide() {
    // A responder that selects plaintext although only RC4 was provided: forge step 4.
    let mut out = Vec::new();
    let mut init = Initiator::new(IH, CRYPTO_RC4, vec![], Secrets::new(A_KEY, vec![], vec![]), &mut out);
    let s = key96(S);
    let mut step4 = VC.to_vec();
    step4.extend_from_slice(&CRYPTO_PLAINTEXT.to_be_bytes());
    step4.extend_from_slice(&[0, 0]);
    cipher(b"keyB", &s, &IH).apply(&mut step4);
    let input = [key96(YB).to_vec(), step4].concat();
    assert_eq!(
        init.receive(&input, &mut out).unwrap_err(),
        MseError::BadSelect { selected: CRYPTO_PLAINTEXT, provided: CRYPTO_RC4 }
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Arbitrary bytes, in arbitrary pieces, never panic the responder: it wants more or fails,
    /// and once failed it stays failed.
    #[test]
    fn responder_survives_junk(data in proptest::collection::vec(any::<u8>(), 0..1500), cuts in proptest::collection::vec(1usize..300, 1..10)) {
        let mut r = responder();
        let mut out = Vec::new();
        let mut at = 0;
        let mut failed = false;
        for c in cuts.iter().cycle() {
            if at >= data.len() { break; }
            let end = (at + c).min(data.len());
            match r.receive(&data[at..end], &mut out) {
                Ok(Progress::NeedMore) => prop_assert!(!failed),
                Ok(Progress::Done(_)) => prop_assert!(false, "junk completed a handshake"),
                Err(_) => failed = true,
            }
            at = end;
        }
    }

    #[test]
    fn initiator_survives_junk(data in proptest::collection::vec(any::<u8>(), 0..1500), cut in 1usize..700) {
        let mut out = Vec::new();
        let mut init = Initiator::new(IH, CRYPTO_RC4 | CRYPTO_PLAINTEXT, vec![1, 2], Secrets::new(A_KEY, vec![], vec![]), &mut out);
        for piece in data.chunks(cut) {
            if init.receive(piece, &mut out).is_err() { break; }
        }
    }

    /// A real handshake cut short anywhere leaves the responder waiting, not failed; the rest
    /// completes it.
    #[test]
    fn truncated_handshakes_wait(pad_a in 0usize..=512, cut in 0usize..2000) {
        let (s1, s3) = transcript(pad_a);
        let whole = [s1, s3].concat();
        let cut = cut.min(whole.len() - 1);
        let mut r = responder();
        let mut out = Vec::new();
        prop_assert!(matches!(r.receive(&whole[..cut], &mut out), Ok(Progress::NeedMore)));
        let done = r.receive(&whole[cut..], &mut out);
        prop_assert!(matches!(done, Ok(Progress::Done(_))), "{done:?}");
    }

    /// DH agreement for random private keys: (2^a)^b = (2^b)^a.
    #[test]
    fn dh_agrees(a in any::<[u8; 20]>(), b in any::<[u8; 20]>()) {
        let (ya, yb) = (public_key(&a), public_key(&b));
        prop_assume!(dh::valid_public(&ya) && dh::valid_public(&yb));
        prop_assert_eq!(shared_secret(&a, &yb).unwrap(), shared_secret(&b, &ya).unwrap());
    }
}
