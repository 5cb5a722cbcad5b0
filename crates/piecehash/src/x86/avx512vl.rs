//! 8 lanes in 256-bit registers with AVX-512 instructions (AVX-512VL): `vprold` and `vpternlogd`
//! as in the 512-bit kernel. Zen 4 executes each 512-bit operation as two 256-bit halves, so the
//! 512-bit kernel gains nothing from its width there, and this one measured faster (README).

use std::arch::x86_64::*;

use super::avx2::load_transposed;
use crate::rounds::K;

/// Proof that the CPU has AVX2, AVX-512F and AVX-512VL: only [`Avx512Vl::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Vl(());

impl Avx512Vl {
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl"))
        .then_some(Avx512Vl(()))
    }

    /// Compresses `blocks[l]` into lane `l` of `state`. Every slice must have the same length, a
    /// multiple of 64.
    pub(crate) fn compress(self, state: &mut [[u32; 8]; 5], blocks: &[&[u8]; 8]) {
        let len = blocks[0].len();
        assert!(len.is_multiple_of(64) && blocks.iter().all(|b| b.len() == len));
        let blocks: [&[[u8; 64]]; 8] = std::array::from_fn(|l| blocks[l].as_chunks::<64>().0);
        // SAFETY: `self` exists only if the CPU has the features `compress_blocks` is compiled for.
        unsafe { compress_blocks(state, &blocks) }
    }
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn add(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn rol5(x: __m256i) -> __m256i {
    _mm256_rol_epi32::<5>(x)
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn rol30(x: __m256i) -> __m256i {
    _mm256_rol_epi32::<30>(x)
}

/// `(b & c) | (!b & d)`: `b ? c : d` bitwise.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn ch(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_ternarylogic_epi32::<0xCA>(b, c, d)
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn parity(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_ternarylogic_epi32::<0x96>(b, c, d)
}

#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn maj(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_ternarylogic_epi32::<0xE8>(b, c, d)
}

/// `W[t] = rol1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16])`.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn schedule(w3: __m256i, w8: __m256i, w14: __m256i, w16: __m256i) -> __m256i {
    let x = _mm256_ternarylogic_epi32::<0x96>(w3, w8, w14);
    _mm256_rol_epi32::<1>(_mm256_xor_si256(x, w16))
}

#[target_feature(enable = "avx2,avx512f,avx512vl")]
fn compress_blocks(state: &mut [[u32; 8]; 5], blocks: &[&[[u8; 64]]; 8]) {
    // SAFETY (each load and store): a `[u32; 8]` is 32 readable and writable bytes, the size
    // of the unaligned access.
    let [mut a, mut b, mut c, mut d, mut e] =
        state.each_ref().map(|row| unsafe { _mm256_loadu_si256(row.as_ptr().cast()) });
    let k = K.map(|k| _mm256_set1_epi32(k as i32));
    for i in 0..blocks[0].len() {
        let mut w = load_transposed(blocks, i);
        let (a0, b0, c0, d0, e0) = (a, b, c, d, e);
        sha1_rounds!(w, a, b, c, d, e, [k[0], k[1], k[2], k[3]]);
        a = add(a, a0);
        b = add(b, b0);
        c = add(c, c0);
        d = add(d, d0);
        e = add(e, e0);
    }
    for (row, v) in state.iter_mut().zip([a, b, c, d, e]) {
        // SAFETY: as above.
        unsafe { _mm256_storeu_si256(row.as_mut_ptr().cast(), v) };
    }
}
