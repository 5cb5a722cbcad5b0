//! 8 lanes in AVX2 registers: one 32-bit element per message.

use std::arch::x86_64::*;

use crate::rounds::K;

/// Proof that the CPU has AVX2: only [`Avx2::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    pub(crate) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }

    /// Compresses `blocks[l]` into lane `l` of `state`. Every slice must have the same length, a
    /// multiple of 64.
    pub(crate) fn compress(self, state: &mut [[u32; 8]; 5], blocks: &[&[u8]; 8]) {
        let len = blocks[0].len();
        assert!(len.is_multiple_of(64) && blocks.iter().all(|b| b.len() == len));
        let blocks: [&[[u8; 64]]; 8] = std::array::from_fn(|l| blocks[l].as_chunks::<64>().0);
        // SAFETY: `self` exists only if the CPU has AVX2, the feature that `compress_blocks` is
        // compiled for.
        unsafe { compress_blocks(state, &blocks) }
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn add(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn xor(a: __m256i, b: __m256i) -> __m256i {
    _mm256_xor_si256(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn rol1(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<1>(x), _mm256_srli_epi32::<31>(x))
}

#[inline]
#[target_feature(enable = "avx2")]
fn rol5(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<5>(x), _mm256_srli_epi32::<27>(x))
}

#[inline]
#[target_feature(enable = "avx2")]
fn rol30(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<30>(x), _mm256_srli_epi32::<2>(x))
}

/// `(b & c) | (!b & d)`, as `d ^ (b & (c ^ d))`.
#[inline]
#[target_feature(enable = "avx2")]
fn ch(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    xor(d, _mm256_and_si256(b, xor(c, d)))
}

#[inline]
#[target_feature(enable = "avx2")]
fn parity(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    xor(xor(b, c), d)
}

/// `(b & c) | (b & d) | (c & d)`, as `(b & c) | (d & (b | c))`.
#[inline]
#[target_feature(enable = "avx2")]
fn maj(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_and_si256(b, c), _mm256_and_si256(d, _mm256_or_si256(b, c)))
}

/// `W[t] = rol1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16])`.
#[inline]
#[target_feature(enable = "avx2")]
fn schedule(w3: __m256i, w8: __m256i, w14: __m256i, w16: __m256i) -> __m256i {
    rol1(xor(xor(w3, w8), xor(w14, w16)))
}

/// Transposes an 8x8 matrix of 32-bit words given as rows.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    // 4x4 transposes inside each 128-bit lane, per group of four rows: s[4g + m] holds, in
    // 128-bit lane k, word 4k + m of rows 4g..4g+4.
    let mut s = [_mm256_setzero_si256(); 8];
    for g in 0..2 {
        let [r0, r1, r2, r3] = [r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]];
        let a = _mm256_unpacklo_epi32(r0, r1);
        let b = _mm256_unpackhi_epi32(r0, r1);
        let c = _mm256_unpacklo_epi32(r2, r3);
        let d = _mm256_unpackhi_epi32(r2, r3);
        s[4 * g] = _mm256_unpacklo_epi64(a, c);
        s[4 * g + 1] = _mm256_unpackhi_epi64(a, c);
        s[4 * g + 2] = _mm256_unpacklo_epi64(b, d);
        s[4 * g + 3] = _mm256_unpackhi_epi64(b, d);
    }
    let mut w = [_mm256_setzero_si256(); 8];
    for m in 0..4 {
        w[m] = _mm256_permute2x128_si256::<0x20>(s[m], s[4 + m]);
        w[4 + m] = _mm256_permute2x128_si256::<0x31>(s[m], s[4 + m]);
    }
    w
}

/// Reads block `i` of every lane and returns its 16 big-endian words, word `j` of lane `l` in
/// element `l` of vector `j`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_transposed(blocks: &[&[[u8; 64]]; 8], i: usize) -> [__m256i; 16] {
    // Reverses the bytes of each 32-bit word.
    let bswap =
        _mm256_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203, 0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
    let mut lo = [_mm256_setzero_si256(); 8];
    let mut hi = [_mm256_setzero_si256(); 8];
    for l in 0..8 {
        let block: &[u8; 64] = &blocks[l][i];
        // SAFETY: `block` is 64 readable bytes; each unaligned load reads 32 of them.
        let (x, y) =
            unsafe { (_mm256_loadu_si256(block.as_ptr().cast()), _mm256_loadu_si256(block[32..].as_ptr().cast())) };
        lo[l] = _mm256_shuffle_epi8(x, bswap);
        hi[l] = _mm256_shuffle_epi8(y, bswap);
    }
    let [w0, w1, w2, w3, w4, w5, w6, w7] = transpose8(lo);
    let [w8, w9, w10, w11, w12, w13, w14, w15] = transpose8(hi);
    [w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15]
}

#[target_feature(enable = "avx2")]
fn compress_blocks(state: &mut [[u32; 8]; 5], blocks: &[&[[u8; 64]]; 8]) {
    // SAFETY (each load and store): a `[u32; 8]` is 32 readable and writable bytes, the size of
    // the unaligned access.
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
