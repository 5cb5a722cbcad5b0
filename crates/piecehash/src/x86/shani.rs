//! SHA-NI on several messages at once, their instructions interleaved. One message's rounds are a
//! chain of dependent `sha1rnds4` instructions, so a single stream waits on their latency; `N`
//! independent streams fill those waits.

use std::arch::x86_64::*;

/// Proof that the CPU has SHA-NI and SSE4.1: only [`ShaNi::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShaNi(());

impl ShaNi {
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("sha") && is_x86_feature_detected!("sse4.1")).then_some(ShaNi(()))
    }

    /// Compresses `blocks[l]` into lane `l` of `state`. Every slice must have the same length, a
    /// multiple of 64.
    pub(crate) fn compress<const N: usize>(self, state: &mut [[u32; N]; 5], blocks: &[&[u8]; N]) {
        let len = blocks[0].len();
        assert!(len.is_multiple_of(64) && blocks.iter().all(|b| b.len() == len));
        let blocks: [&[[u8; 64]]; N] = std::array::from_fn(|l| blocks[l].as_chunks::<64>().0);
        // SAFETY: `self` exists only if the CPU has the features `compress_blocks` is compiled for.
        unsafe { compress_blocks(state, &blocks) }
    }
}

/// Four rounds in every stream: `sha1rnds4(h0, sha1nexte(h1, wk))`.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn rounds4<const F: i32, const N: usize>(h0: [__m128i; N], h1: [__m128i; N], wk: [__m128i; N]) -> [__m128i; N] {
    std::array::from_fn(|s| _mm_sha1rnds4_epu32::<F>(h0[s], _mm_sha1nexte_epu32(h1[s], wk[s])))
}

/// The next four message words in every stream.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn schedule<const N: usize>(v0: [__m128i; N], v1: [__m128i; N], v2: [__m128i; N], v3: [__m128i; N]) -> [__m128i; N] {
    std::array::from_fn(|s| _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32(v0[s], v1[s]), v2[s]), v3[s]))
}

macro_rules! schedule_rounds4 {
    ($h0:ident, $h1:ident, $w0:expr, $w1:expr, $w2:expr, $w3:expr, $w4:expr, $f:literal) => {
        $w4 = schedule($w0, $w1, $w2, $w3);
        $h1 = rounds4::<$f, N>($h0, $h1, $w4);
    };
}

/// The SHA-NI block function (as in the `sha1` crate), applied to `N` streams in lock-step.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn compress_blocks<const N: usize>(state: &mut [[u32; N]; 5], blocks: &[&[[u8; 64]]; N]) {
    let bswap = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
    let mut abcd: [__m128i; N] = std::array::from_fn(|s| {
        _mm_set_epi32(state[0][s] as i32, state[1][s] as i32, state[2][s] as i32, state[3][s] as i32)
    });
    let mut e: [__m128i; N] = std::array::from_fn(|s| _mm_set_epi32(state[4][s] as i32, 0, 0, 0));
    #[expect(clippy::needless_range_loop, reason = "`i` indexes the inner slices: `blocks[s][i]`")]
    for i in 0..blocks[0].len() {
        let load = |j: usize| -> [__m128i; N] {
            std::array::from_fn(|s| {
                let words: &[u8; 16] = blocks[s][i][16 * j..16 * j + 16].try_into().expect("16 bytes");
                // SAFETY: `words` is 16 readable bytes, the size of the unaligned load.
                _mm_shuffle_epi8(unsafe { _mm_loadu_si128(words.as_ptr().cast()) }, bswap)
            })
        };
        let (mut w0, mut w1, mut w2, mut w3) = (load(0), load(1), load(2), load(3));
        let mut w4;
        let mut h0 = abcd;
        let mut h1: [__m128i; N] = std::array::from_fn(|s| _mm_add_epi32(e[s], w0[s]));

        // Rounds 0..20
        h1 = std::array::from_fn(|s| _mm_sha1rnds4_epu32::<0>(h0[s], h1[s]));
        h0 = rounds4::<0, N>(h1, h0, w1);
        h1 = rounds4::<0, N>(h0, h1, w2);
        h0 = rounds4::<0, N>(h1, h0, w3);
        schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 0);
        // Rounds 20..40
        schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 1);
        schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 1);
        schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 1);
        schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 1);
        schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 1);
        // Rounds 40..60
        schedule_rounds4!(h0, h1, w1, w2, w3, w4, w0, 2);
        schedule_rounds4!(h1, h0, w2, w3, w4, w0, w1, 2);
        schedule_rounds4!(h0, h1, w3, w4, w0, w1, w2, 2);
        schedule_rounds4!(h1, h0, w4, w0, w1, w2, w3, 2);
        schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 2);
        // Rounds 60..80
        schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 3);
        schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 3);
        schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 3);
        schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 3);
        schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 3);

        abcd = std::array::from_fn(|s| _mm_add_epi32(abcd[s], h0[s]));
        e = std::array::from_fn(|s| _mm_sha1nexte_epu32(h1[s], e[s]));
    }
    for s in 0..N {
        state[0][s] = _mm_extract_epi32::<3>(abcd[s]) as u32;
        state[1][s] = _mm_extract_epi32::<2>(abcd[s]) as u32;
        state[2][s] = _mm_extract_epi32::<1>(abcd[s]) as u32;
        state[3][s] = _mm_extract_epi32::<0>(abcd[s]) as u32;
        state[4][s] = _mm_extract_epi32::<3>(e[s]) as u32;
    }
}
