//! Every backend against the `sha1` crate on random batches of random lengths.

use bitswarm_piecehash::{Backend, Sha1Lanes, sha1_many, sha1_many_with};
use proptest::prelude::*;
use sha1::{Digest, Sha1};

/// Lengths 0..=5000, half of them within a few bytes of a block boundary or of the padding
/// boundary (55/56 bytes into a block).
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        0..=5000usize,
        (0..=78usize, prop::sample::select(vec![0, 1, 54, 55, 56, 57, 62, 63])).prop_map(|(m, off)| m * 64 + off),
    ]
}

/// Pseudo-random bytes, cheaper to make than proptest's own in a debug build.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn check(lengths: &[usize], seed: u64, offset: usize) {
    let total: usize = lengths.iter().sum();
    let data = bytes(seed, total + offset);
    let mut messages = Vec::new();
    let mut at = offset;
    for &len in lengths {
        messages.push(&data[at..at + len]);
        at += len;
    }
    let expected: Vec<[u8; 20]> = messages.iter().map(|m| Sha1::digest(m).into()).collect();
    for backend in Backend::available() {
        assert_eq!(sha1_many_with(backend, &messages), expected, "{backend:?} lengths {lengths:?}");
    }
    assert_eq!(sha1_many(&messages), expected, "auto, lengths {lengths:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_lengths(lengths in prop::collection::vec(length(), 0..=40), seed: u64, offset in 0..64usize) {
        check(&lengths, seed, offset);
    }

    /// Torrent pieces: equal lengths but the last.
    #[test]
    fn equal_lengths_but_last(count in 1..=40usize, len in length(), last in length(), seed: u64) {
        let mut lengths = vec![len; count];
        lengths[count - 1] = last.min(len);
        check(&lengths, seed, 0);
    }
}

/// Feeds `messages` to `lanes` in chunks of `blocks[round % len][i] * 64` bytes (capped to what is
/// left), then finalizes with the rest.
fn chunked(mut lanes: Sha1Lanes, messages: &[&[u8]], blocks: &[Vec<usize>]) -> Vec<[u8; 20]> {
    let mut at = vec![0; messages.len()];
    for round in blocks {
        let chunks: Vec<&[u8]> = messages
            .iter()
            .zip(&mut at)
            .enumerate()
            .map(|(i, (m, at))| {
                let n = (round.get(i).copied().unwrap_or(1) * 64).min((m.len() - *at) / 64 * 64);
                *at += n;
                &m[*at - n..*at]
            })
            .collect();
        lanes.update(&chunks);
    }
    let last: Vec<&[u8]> = messages.iter().zip(&at).map(|(m, &at)| &m[at..]).collect();
    lanes.finalize(&last)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn lanes_in_chunks(
        lengths in prop::collection::vec(length(), 0..=20),
        blocks in prop::collection::vec(prop::collection::vec(0..6usize, 0..=20), 0..8),
        seed: u64,
    ) {
        let total: usize = lengths.iter().sum();
        let data = bytes(seed, total);
        let mut messages = Vec::new();
        let mut at = 0;
        for &len in &lengths {
            messages.push(&data[at..at + len]);
            at += len;
        }
        let expected: Vec<[u8; 20]> = messages.iter().map(|m| Sha1::digest(m).into()).collect();
        for backend in Backend::available() {
            let lanes = Sha1Lanes::with_backend(backend, messages.len());
            assert_eq!(chunked(lanes, &messages, &blocks), expected, "{backend:?} lengths {lengths:?}");
        }
        assert_eq!(chunked(Sha1Lanes::new(messages.len()), &messages, &blocks), expected, "auto, lengths {lengths:?}");
    }
}

#[test]
fn every_small_length_in_every_lane_count() {
    // 0..=200 covers each padding case over three blocks; counts 1..=33 cover partly filled,
    // full and refilled lanes for 8 and 16 lanes.
    for count in 1..=33 {
        let lengths: Vec<usize> = (0..=200).map(|i| (i * 7 + count) % 201).collect();
        for chunk in lengths.chunks(count) {
            check(chunk, count as u64, count % 5);
        }
    }
}
