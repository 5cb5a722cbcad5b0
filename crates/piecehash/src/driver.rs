//! Feeds many messages of any lengths through an `L`-lane SIMD compression kernel.
//!
//! Every message is a stream of 64-byte blocks: its full blocks (read in place), then one or two
//! padding blocks built in a small per-lane buffer. Each lane hashes one message at a time; the
//! kernel compresses the same number of blocks in every lane, as many as the shortest remaining
//! stream of the active lanes has. A lane whose stream ends moves to its message's padding or, at
//! its end, takes the next message. Idle lanes (no messages left) re-read an active lane's blocks
//! and their results are ignored. When fewer than `drain_below` lanes are still active, the SIMD
//! step costs more than SHA-NI would, so the remaining lanes are finished with the `sha1` crate
//! from the state they reached.

/// SHA-1 initial state (FIPS 180-4, 5.3.1).
pub(crate) const H0: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];

/// Padding blocks of a message: the bytes after its last full block, `0x80`, zeros and the bit
/// length, big-endian. Returns the buffer and how many of its bytes (64 or 128) are used.
pub(crate) fn padding(message: &[u8]) -> ([u8; 128], usize) {
    let rest = &message[message.len() / 64 * 64..];
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    let bits = (message.len() as u64).wrapping_mul(8);
    tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
    (tail, end)
}

/// The digest of a final state.
pub(crate) fn digest(h: [u32; 5]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Compresses whole 64-byte blocks with the `sha1` crate (SHA-NI when the CPU has it).
fn compress_scalar(h: &mut [u32; 5], bytes: &[u8]) {
    let (blocks, rest) = bytes.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    sha1::block_api::compress(h, blocks);
}

/// One lane's work: which message, and the part of its block stream not compressed yet.
#[derive(Clone, Copy)]
struct Lane<'a> {
    index: usize,
    /// The message's full blocks still to compress.
    main: &'a [u8],
    tail: [u8; 128],
    tail_pos: usize,
    tail_end: usize,
}

impl<'a> Lane<'a> {
    fn new(index: usize, message: &'a [u8]) -> Self {
        let (tail, tail_end) = padding(message);
        Lane { index, main: &message[..message.len() / 64 * 64], tail, tail_pos: 0, tail_end }
    }

    /// The blocks to compress next: the rest of the message's full blocks, or else of the padding.
    fn current(&self) -> &[u8] {
        if self.main.is_empty() { &self.tail[self.tail_pos..self.tail_end] } else { self.main }
    }

    /// Marks `bytes` (at most `current().len()`) as compressed; true when the stream is done.
    fn advance(&mut self, bytes: usize) -> bool {
        if self.main.is_empty() {
            self.tail_pos += bytes;
            self.tail_pos == self.tail_end
        } else {
            self.main = &self.main[bytes..];
            false
        }
    }
}

/// Hashes `messages` into `out` (same length) with an `L`-lane `kernel`, which compresses, in every
/// lane `l`, the blocks `blocks[l]` (all of the same length, a multiple of 64) into the state
/// `state[0..5][l]`. Lanes still active when fewer than `drain_below` are are finished by SHA-NI.
pub(crate) fn hash_lanes<const L: usize>(
    messages: &[&[u8]],
    out: &mut [[u8; 20]],
    drain_below: usize,
    mut kernel: impl FnMut(&mut [[u32; L]; 5], &[&[u8]; L]),
) {
    assert_eq!(messages.len(), out.len());
    let mut state = [[0u32; L]; 5];
    let mut lanes: [Option<Lane>; L] = [None; L];
    let mut next = 0;
    loop {
        for (l, lane) in lanes.iter_mut().enumerate() {
            if lane.is_none() && next < messages.len() {
                *lane = Some(Lane::new(next, messages[next]));
                for (row, h) in state.iter_mut().zip(H0) {
                    row[l] = h;
                }
                next += 1;
            }
        }
        let active = lanes.iter().flatten().count();
        if active == 0 {
            return;
        }
        if active < drain_below {
            // Lanes are only idle once every message has started: only these remain.
            for (l, lane) in lanes.iter().enumerate() {
                if let Some(lane) = lane {
                    let mut h = [state[0][l], state[1][l], state[2][l], state[3][l], state[4][l]];
                    compress_scalar(&mut h, lane.main);
                    compress_scalar(&mut h, &lane.tail[lane.tail_pos..lane.tail_end]);
                    out[lane.index] = digest(h);
                }
            }
            return;
        }
        let (bytes, filler) = lanes
            .iter()
            .flatten()
            .map(|lane| (lane.current().len(), lane.current()))
            .min_by_key(|&(len, _)| len)
            .expect("at least one lane is active");
        let blocks: [&[u8]; L] =
            std::array::from_fn(|l| lanes[l].as_ref().map_or(filler, |lane| &lane.current()[..bytes]));
        kernel(&mut state, &blocks);
        for (l, slot) in lanes.iter_mut().enumerate() {
            if let Some(lane) = slot
                && lane.advance(bytes)
            {
                out[lane.index] = digest([state[0][l], state[1][l], state[2][l], state[3][l], state[4][l]]);
                *slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::Digest;

    /// A portable scalar kernel, to test the lane bookkeeping on any machine.
    fn scalar_kernel<const L: usize>(state: &mut [[u32; L]; 5], blocks: &[&[u8]; L]) {
        for (l, bytes) in blocks.iter().enumerate() {
            assert_eq!(bytes.len(), blocks[0].len());
            assert!(!bytes.is_empty() && bytes.len() % 64 == 0);
            let mut h = [state[0][l], state[1][l], state[2][l], state[3][l], state[4][l]];
            compress_scalar(&mut h, bytes);
            for (row, v) in state.iter_mut().zip(h) {
                row[l] = v;
            }
        }
    }

    #[test]
    fn padding_lengths() {
        for len in 0..200 {
            let (_, end) = padding(&vec![0; len]);
            assert_eq!(end, if len % 64 < 56 { 64 } else { 128 }, "len {len}");
        }
    }

    #[test]
    fn lanes_and_drain_agree_with_sha1() {
        let lens = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 5000, 3, 64 * 7];
        let data: Vec<u8> = (0..6000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let messages: Vec<&[u8]> = lens.iter().map(|&n| &data[n % 13..n % 13 + n]).collect();
        let expected: Vec<[u8; 20]> = messages.iter().map(|m| sha1::Sha1::digest(m).into()).collect();
        for count in 0..=messages.len() {
            for drain_below in [0, 1, 2, 3, 4] {
                let mut out = vec![[0; 20]; count];
                hash_lanes::<4>(&messages[..count], &mut out, drain_below, scalar_kernel);
                assert_eq!(out, expected[..count], "count {count} drain {drain_below}");
            }
        }
    }
}
