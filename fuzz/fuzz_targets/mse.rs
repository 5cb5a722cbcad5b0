#![no_main]
//! Both sides of the MSE handshake fed what the input makes of a peer's bytes: neither panics, a
//! side that failed stays failed, and a finished handshake is consistent.
//!
//! The first byte picks the size of the pieces fed and a mode:
//! * raw: the rest of the input, as the peer's first bytes, to a responder and an initiator;
//! * responder: a genuine initiator's steps 1 and 3 (fixed keys) with the input XORed in from
//!   the encrypted part on (RC4 is a stream XOR, so the input edits the decrypted VC,
//!   crypto_provide, PadC, IA and what follows directly);
//! * initiator: likewise a genuine responder's steps 2 and 4 fed to the initiator.
use std::sync::OnceLock;

use bitswarm_wire::mse::{
    CRYPTO_PLAINTEXT, CRYPTO_RC4, Initiator, KEY_LEN, Method, MseError, Progress, Responder, Secrets, Select,
};
use libfuzzer_sys::fuzz_target;

const IH: [u8; 20] = [1; 20];
const PROVIDE: u32 = CRYPTO_PLAINTEXT | CRYPTO_RC4;

fn a_secrets() -> Secrets {
    Secrets::new([0xa5; 20], vec![7; 5], vec![9; 3])
}
fn b_secrets() -> Secrets {
    Secrets::new([0x5a; 20], vec![3; 4], vec![8; 2])
}
fn initiator(out: &mut Vec<u8>) -> Initiator {
    Initiator::new(IH, PROVIDE, vec![19; 68], a_secrets(), out)
}
fn responder(select: Select) -> Responder {
    Responder::new(vec![[2; 20], IH], select, b_secrets())
}

/// A genuine exchange with the secrets above: (what A sends, what B sends).
fn transcripts() -> &'static (Vec<u8>, Vec<u8>) {
    static T: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    T.get_or_init(|| {
        let mut to_b = Vec::new();
        let mut a = initiator(&mut to_b);
        let mut b = responder(Select::RequireRc4);
        let mut to_a = Vec::new();
        assert!(matches!(b.receive(&to_b, &mut to_a), Ok(Progress::NeedMore)));
        let at = to_b.len();
        assert!(matches!(a.receive(&to_a, &mut to_b), Ok(Progress::NeedMore)));
        let at_b = to_a.len();
        assert!(matches!(b.receive(&to_b[at..], &mut to_a), Ok(Progress::Done(_))));
        assert!(matches!(a.receive(&to_a[at_b..], &mut Vec::new()), Ok(Progress::Done(_))));
        (to_b, to_a)
    })
}

/// Feeds `data` in pieces of `chunk`; checks the results.
fn feed(mut receive: impl FnMut(&[u8]) -> Result<Progress, MseError>, data: &[u8], chunk: usize) {
    let mut over = false;
    for piece in data.chunks(chunk) {
        let r = receive(piece);
        match &r {
            Ok(Progress::NeedMore) => assert!(!over),
            _ if over => assert!(matches!(r, Err(MseError::Finished))),
            Ok(Progress::Done(e)) => {
                over = true;
                assert_eq!(e.info_hash, IH);
                assert_eq!(e.ciphers.is_some(), e.method == Method::Rc4);
            }
            Err(_) => over = true,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first >> 2).max(1) * 8;
    let select = if first & 0x80 == 0 { Select::PreferPlaintext } else { Select::RequireRc4 };
    let mut out = Vec::new();
    match first & 3 {
        0 | 3 => {
            let mut b = responder(select);
            feed(|p| b.receive(p, &mut out), rest, chunk);
            let mut a = initiator(&mut out);
            feed(|p| a.receive(p, &mut out), rest, chunk);
        }
        1 => {
            // From the encrypted VC on: after Ya, PadA and the two hashes.
            let mut bytes = transcripts().0.clone();
            edit(&mut bytes, KEY_LEN + 5 + 40, rest);
            let mut b = responder(select);
            feed(|p| b.receive(p, &mut out), &bytes, chunk);
        }
        _ => {
            // From the encrypted VC on: after Yb and PadB.
            let mut bytes = transcripts().1.clone();
            edit(&mut bytes, KEY_LEN + 4, rest);
            let mut a = initiator(&mut out);
            feed(|p| a.receive(p, &mut out), &bytes, chunk);
        }
    }
});

/// XORs `with` into `bytes` from `at` on, extending `bytes` where `with` is longer.
fn edit(bytes: &mut Vec<u8>, at: usize, with: &[u8]) {
    if bytes.len() < at + with.len() {
        bytes.resize(at + with.len(), 0);
    }
    for (b, w) in bytes[at..].iter_mut().zip(with) {
        *b ^= w;
    }
}
