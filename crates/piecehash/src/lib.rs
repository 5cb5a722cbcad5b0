//! SHA-1 of many independent messages at once.
//!
//! [`sha1_many`] hashes a batch of messages (torrent pieces) of any lengths. On x86-64 CPUs with
//! AVX-512 it runs 16 messages in the 16 lanes of the vector registers, with AVX2 8; elsewhere,
//! and for batches too small to pay, it hashes one message at a time with the `sha1` crate, which
//! uses the SHA-NI instructions when the CPU has them. [`best_lanes`] tells callers how many
//! messages to batch. [`sha1_many_with`] runs one chosen [`Backend`], for tests and measurements.

#[macro_use]
mod rounds;
mod driver;
#[cfg(target_arch = "x86_64")]
mod x86;

use sha1::Digest;

/// A way to compute SHA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The `sha1` crate, one message at a time (SHA-NI when the CPU has it).
    Sha1Crate,
    /// 8 messages at once in AVX2 registers (x86-64).
    Avx2x8,
    /// 16 messages at once in AVX-512 registers (x86-64 with AVX-512F and AVX-512BW).
    Avx512x16,
}

impl Backend {
    /// Every backend, available here or not.
    pub const ALL: [Backend; 3] = [Backend::Sha1Crate, Backend::Avx2x8, Backend::Avx512x16];

    /// Whether this CPU can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Sha1Crate => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2x8 => x86::cpu().avx2.is_some(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512x16 => x86::cpu().avx512.is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Avx2x8 | Backend::Avx512x16 => false,
        }
    }

    /// How many messages it hashes at once.
    pub fn lanes(self) -> usize {
        match self {
            Backend::Sha1Crate => 1,
            Backend::Avx2x8 => 8,
            Backend::Avx512x16 => 16,
        }
    }

    /// The backends this CPU can run.
    pub fn available() -> Vec<Backend> {
        Backend::ALL.into_iter().filter(|b| b.is_available()).collect()
    }
}

/// The SHA-1 digest of each of `messages`, in order.
pub fn sha1_many(messages: &[&[u8]]) -> Vec<[u8; 20]> {
    let mut out = vec![[0; 20]; messages.len()];
    let (backend, drain_below) = plan(messages.len());
    run(backend, messages, &mut out, drain_below);
    out
}

/// How many messages the fastest way on this CPU hashes at once: batches of this many (or a
/// multiple) make the best use of it.
pub fn best_lanes() -> usize {
    plan(usize::MAX).0.lanes()
}

/// The SHA-1 digest of each of `messages` with `backend` alone: unlike [`sha1_many`], every
/// message goes through the backend's lanes, however few there are.
///
/// # Panics
///
/// If `backend` is not available on this CPU.
pub fn sha1_many_with(backend: Backend, messages: &[&[u8]]) -> Vec<[u8; 20]> {
    assert!(backend.is_available(), "{backend:?} is not available on this CPU");
    let mut out = vec![[0; 20]; messages.len()];
    run(backend, messages, &mut out, 0);
    out
}

/// The backend for a batch of `count` messages, and below how many active lanes it hands the
/// remaining messages to SHA-NI.
fn plan(count: usize) -> (Backend, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = x86::cpu();
        if cpu.avx512.is_some() && count >= AVX512_MIN {
            return (Backend::Avx512x16, AVX512_MIN);
        }
        if cpu.avx2.is_some() && count >= AVX2_MIN {
            return (Backend::Avx2x8, AVX2_MIN);
        }
    }
    let _ = count;
    (Backend::Sha1Crate, 0)
}

/// Fewest messages (active lanes) for which the AVX-512 kernel beats SHA-NI on one core.
const AVX512_MIN: usize = 4;
/// Fewest messages (active lanes) for which the AVX2 kernel beats SHA-NI on one core.
const AVX2_MIN: usize = 4;

fn run(backend: Backend, messages: &[&[u8]], out: &mut [[u8; 20]], drain_below: usize) {
    match backend {
        Backend::Sha1Crate => {
            for (o, m) in out.iter_mut().zip(messages) {
                *o = sha1::Sha1::digest(m).into();
            }
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2x8 => {
            let k = x86::cpu().avx2.expect("AVX2 available");
            driver::hash_lanes::<8>(messages, out, drain_below, |s, b| k.compress(s, b));
        }
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512x16 => {
            let k = x86::cpu().avx512.expect("AVX-512 available");
            driver::hash_lanes::<16>(messages, out, drain_below, |s, b| k.compress(s, b));
        }
        #[cfg(not(target_arch = "x86_64"))]
        Backend::Avx2x8 | Backend::Avx512x16 => unreachable!("x86-64 only"),
    }
}
