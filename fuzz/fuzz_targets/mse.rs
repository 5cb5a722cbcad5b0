#![no_main]
//! A peer's first bytes, cut into pieces of a size the input chooses, fed to both sides of the
//! MSE handshake: neither panics, and a side that failed stays failed.
use bitswarm_wire::mse::{CRYPTO_PLAINTEXT, CRYPTO_RC4, Initiator, MseError, Progress, Responder, Secrets, Select};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first).max(1) * 4;
    let secrets = || Secrets::new([0x5a; 20], vec![1; usize::from(first) % 8], vec![]);
    let select = if first & 1 == 0 { Select::PreferPlaintext } else { Select::RequireRc4 };
    let mut out = Vec::new();
    let mut b = Responder::new(vec![[1; 20], [2; 20]], select, secrets());
    let mut a = Initiator::new([1; 20], CRYPTO_PLAINTEXT | CRYPTO_RC4, vec![19; 68], secrets(), &mut out);
    let (mut a_over, mut b_over) = (false, false);
    for piece in rest.chunks(chunk) {
        for (over, r) in [(&mut b_over, b.receive(piece, &mut out)), (&mut a_over, a.receive(piece, &mut out))] {
            match r {
                Ok(Progress::NeedMore) => assert!(!*over),
                Ok(Progress::Done(_)) | Err(_) => {
                    if *over {
                        assert!(matches!(r, Err(MseError::Finished)));
                    }
                    *over = true;
                }
            }
        }
        out.clear();
    }
});
