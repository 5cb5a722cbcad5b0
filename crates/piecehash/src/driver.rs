//! Feeds many messages of any lengths through an `L`-lane SIMD compression kernel.
//!
//! A [`Job`] is a stream of 64-byte blocks to compress into a state: a message's whole blocks
//! (read in place), then, if it ends there, one or two padding blocks built in a small buffer.
//! Each lane runs one job at a time; the kernel compresses the same number of blocks in every
//! lane, as many as the shortest remaining stream of the busy lanes has. A lane whose stream ends
//! moves to its padding or, at its end, takes the next job. Idle lanes (no jobs left) re-read a
//! busy lane's blocks and their results are ignored. When fewer than `drain_below` lanes are
//! still busy, a step of this kernel costs more than another way would take, so the driver
//! returns the remaining jobs, with the state they reached, to be finished that way.

// Only the x86-64 kernels run lanes; elsewhere the `sha1` crate finishes every job.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

/// SHA-1 initial state (FIPS 180-4, 5.3.1).
pub(crate) const H0: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];

/// Padding blocks of a message of `len` bytes that ends with `rest` (its bytes after the last full
/// block): `rest`, `0x80`, zeros and the bit length, big-endian. Returns the buffer and how many of
/// its bytes (64 or 128) are used.
pub(crate) fn padding(rest: &[u8], len: u64) -> ([u8; 128], usize) {
    assert!(rest.len() < 64);
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&len.wrapping_mul(8).to_be_bytes());
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
pub(crate) fn compress_scalar(h: &mut [u32; 5], bytes: &[u8]) {
    let (blocks, rest) = bytes.as_chunks::<64>();
    assert!(rest.is_empty());
    sha1::block_api::compress(h, blocks);
}

/// Blocks to compress into a state: some whole blocks read in place, then maybe padding blocks.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    state: [u32; 5],
    /// Whole blocks (a multiple of 64 bytes) not compressed yet.
    main: &'a [u8],
    tail: [u8; 128],
    tail_pos: usize,
    tail_end: usize,
}

impl<'a> Job<'a> {
    /// A whole message: it ends with its padding.
    pub(crate) fn message(message: &'a [u8]) -> Self {
        Job::resume(H0, message, 0)
    }

    /// The end of a message: `state` after its first `before` bytes (a multiple of 64), then
    /// `rest`, its last bytes, then the padding.
    pub(crate) fn resume(state: [u32; 5], rest: &'a [u8], before: u64) -> Self {
        let full = rest.len() / 64 * 64;
        let (tail, tail_end) = padding(&rest[full..], before + rest.len() as u64);
        Job { state, main: &rest[..full], tail, tail_pos: 0, tail_end }
    }

    /// Whole blocks (`blocks.len()` a multiple of 64) into `state`, with no padding after them.
    pub(crate) fn blocks(state: [u32; 5], blocks: &'a [u8]) -> Self {
        assert!(blocks.len().is_multiple_of(64), "chunks must be whole 64-byte blocks");
        Job { state, main: blocks, tail: [0; 128], tail_pos: 0, tail_end: 0 }
    }

    /// The blocks to compress next: the rest of the whole blocks, or else of the padding.
    fn current(&self) -> &[u8] {
        if self.main.is_empty() { &self.tail[self.tail_pos..self.tail_end] } else { self.main }
    }

    /// Marks `bytes` (at most `current().len()`) as compressed; true when nothing is left.
    fn advance(&mut self, bytes: usize) -> bool {
        if self.main.is_empty() {
            self.tail_pos += bytes;
        } else {
            self.main = &self.main[bytes..];
        }
        self.main.is_empty() && self.tail_pos == self.tail_end
    }

    /// Compresses what is left with the `sha1` crate.
    pub(crate) fn finish_scalar(&self) -> [u32; 5] {
        let mut state = self.state;
        compress_scalar(&mut state, self.main);
        compress_scalar(&mut state, &self.tail[self.tail_pos..self.tail_end]);
        state
    }
}

/// Runs `jobs` and writes the final state of the `i`-th into `out[i]` (`out` has room for them
/// all), with an `L`-lane `kernel`, which compresses, in every lane `l`, the blocks `blocks[l]`
/// (all of the same length, a multiple of 64) into the state `state[0..5][l]`. Once fewer than
/// `drain_below` jobs are left, stops and returns them (with their indices), to be finished
/// another way.
pub(crate) fn run_lanes<'a, const L: usize>(
    jobs: impl IntoIterator<Item = Job<'a>>,
    out: &mut [[u32; 5]],
    drain_below: usize,
    mut kernel: impl FnMut(&mut [[u32; L]; 5], &[&[u8]; L]),
) -> Vec<(usize, Job<'a>)> {
    let mut jobs = jobs.into_iter().enumerate();
    let mut state = [[0u32; L]; 5];
    let mut lanes: [Option<(usize, Job)>; L] = [None; L];
    let column = |state: &[[u32; L]; 5], l: usize| std::array::from_fn(|r| state[r][l]);
    loop {
        for (l, lane) in lanes.iter_mut().enumerate() {
            // Jobs with nothing to compress (empty chunks) never take a lane.
            while lane.is_none()
                && let Some((i, job)) = jobs.next()
            {
                if job.current().is_empty() {
                    out[i] = job.state;
                } else {
                    for (row, h) in state.iter_mut().zip(job.state) {
                        row[l] = h;
                    }
                    *lane = Some((i, job));
                }
            }
        }
        let active = lanes.iter().flatten().count();
        if active == 0 {
            return Vec::new();
        }
        if active < drain_below {
            // A lane is idle only once every job has started: these are the last ones.
            let left = lanes.iter().enumerate().filter_map(|(l, lane)| lane.map(|(i, job)| (l, i, job)));
            return left.map(|(l, i, job)| (i, Job { state: column(&state, l), ..job })).collect();
        }
        let filler = lanes
            .iter()
            .flatten()
            .map(|(_, job)| job.current())
            .min_by_key(|blocks| blocks.len())
            .expect("at least one lane is active");
        let bytes = filler.len();
        let blocks: [&[u8]; L] =
            std::array::from_fn(|l| lanes[l].as_ref().map_or(filler, |(_, job)| &job.current()[..bytes]));
        kernel(&mut state, &blocks);
        for (l, slot) in lanes.iter_mut().enumerate() {
            if let Some((i, job)) = slot
                && job.advance(bytes)
            {
                out[*i] = column(&state, l);
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
            let (_, end) = padding(&vec![0; len % 64], len as u64);
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
                let mut out = vec![[0; 5]; count];
                let left = run_lanes::<4>(
                    messages[..count].iter().map(|m| Job::message(m)),
                    &mut out,
                    drain_below,
                    scalar_kernel,
                );
                assert!(left.len() < drain_below.max(1));
                for (i, job) in left {
                    out[i] = job.finish_scalar();
                }
                let out: Vec<[u8; 20]> = out.into_iter().map(digest).collect();
                assert_eq!(out, expected[..count], "count {count} drain {drain_below}");
            }
        }
    }
}
