//! 16 lanes in AVX-512 registers: one 32-bit element per message. `vprold` rotates and
//! `vpternlogd` computes each round function in one instruction.

use std::arch::x86_64::*;

use crate::rounds::K;

/// Proof that the CPU has AVX-512F and AVX-512BW: only [`Avx512::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")).then_some(Avx512(()))
    }

    /// Compresses `blocks[l]` into lane `l` of `state`. Every slice must have the same length, a
    /// multiple of 64.
    pub(crate) fn compress(self, state: &mut [[u32; 16]; 5], blocks: &[&[u8]; 16]) {
        let len = blocks[0].len();
        assert!(len.is_multiple_of(64) && blocks.iter().all(|b| b.len() == len));
        let blocks: [&[[u8; 64]]; 16] = std::array::from_fn(|l| blocks[l].as_chunks::<64>().0);
        // SAFETY: `self` exists only if the CPU has AVX-512F and AVX-512BW, the features that
        // `compress_blocks` is compiled for.
        unsafe { compress_blocks(state, &blocks) }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn add(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn rol5(x: __m512i) -> __m512i {
    _mm512_rol_epi32::<5>(x)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn rol30(x: __m512i) -> __m512i {
    _mm512_rol_epi32::<30>(x)
}

/// `(b & c) | (!b & d)`: `b ? c : d` bitwise.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn ch(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0xCA>(b, c, d)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn parity(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0x96>(b, c, d)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn maj(b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0xE8>(b, c, d)
}

/// `W[t] = rol1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16])`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn schedule(w3: __m512i, w8: __m512i, w14: __m512i, w16: __m512i) -> __m512i {
    let x = _mm512_ternarylogic_epi32::<0x96>(w3, w8, w14);
    _mm512_rol_epi32::<1>(_mm512_xor_si512(x, w16))
}

/// Reads block `i` of every lane and returns its 16 big-endian words, word `j` of lane `l` in
/// element `l` of vector `j`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn load_transposed(blocks: &[&[[u8; 64]]; 16], i: usize) -> [__m512i; 16] {
    // Reverses the bytes of each 32-bit word.
    let bswap = _mm512_set_epi64(
        0x0c0d_0e0f_0809_0a0b,
        0x0405_0607_0001_0203,
        0x0c0d_0e0f_0809_0a0b,
        0x0405_0607_0001_0203,
        0x0c0d_0e0f_0809_0a0b,
        0x0405_0607_0001_0203,
        0x0c0d_0e0f_0809_0a0b,
        0x0405_0607_0001_0203,
    );
    let r: [__m512i; 16] = std::array::from_fn(|l| {
        let block: &[u8; 64] = &blocks[l][i];
        // SAFETY: `block` is 64 readable bytes, the size of the unaligned load.
        let row = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
        _mm512_shuffle_epi8(row, bswap)
    });
    // 4x4 transposes of 32-bit words inside each 128-bit lane, per group of four rows: s[4g + m]
    // holds, in 128-bit lane k, word 4k + m of rows 4g..4g+4.
    let mut s = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let [r0, r1, r2, r3] = [r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]];
        let a = _mm512_unpacklo_epi32(r0, r1);
        let b = _mm512_unpackhi_epi32(r0, r1);
        let c = _mm512_unpacklo_epi32(r2, r3);
        let d = _mm512_unpackhi_epi32(r2, r3);
        s[4 * g] = _mm512_unpacklo_epi64(a, c);
        s[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
        s[4 * g + 2] = _mm512_unpacklo_epi64(b, d);
        s[4 * g + 3] = _mm512_unpackhi_epi64(b, d);
    }
    // 4x4 transposes of 128-bit lanes across the groups: word 4k + m gathers 128-bit lane k of
    // s[m], s[4 + m], s[8 + m], s[12 + m].
    let mut w = [_mm512_setzero_si512(); 16];
    for m in 0..4 {
        let [g0, g1, g2, g3] = [s[m], s[4 + m], s[8 + m], s[12 + m]];
        let u0 = _mm512_shuffle_i32x4::<0x44>(g0, g1);
        let u1 = _mm512_shuffle_i32x4::<0xEE>(g0, g1);
        let u2 = _mm512_shuffle_i32x4::<0x44>(g2, g3);
        let u3 = _mm512_shuffle_i32x4::<0xEE>(g2, g3);
        w[m] = _mm512_shuffle_i32x4::<0x88>(u0, u2);
        w[4 + m] = _mm512_shuffle_i32x4::<0xDD>(u0, u2);
        w[8 + m] = _mm512_shuffle_i32x4::<0x88>(u1, u3);
        w[12 + m] = _mm512_shuffle_i32x4::<0xDD>(u1, u3);
    }
    w
}

#[target_feature(enable = "avx512f,avx512bw")]
fn compress_blocks(state: &mut [[u32; 16]; 5], blocks: &[&[[u8; 64]]; 16]) {
    // SAFETY (each load and store): a `[u32; 16]` is 64 readable and writable bytes, the size of
    // the unaligned access.
    let [mut a, mut b, mut c, mut d, mut e] =
        state.each_ref().map(|row| unsafe { _mm512_loadu_si512(row.as_ptr().cast()) });
    let k = K.map(|k| _mm512_set1_epi32(k as i32));
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
        unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), v) };
    }
}
