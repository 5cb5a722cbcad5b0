//! Which blocks to request from whom: rarest first with random ties, partly downloaded pieces
//! first, endgame at the tail. No I/O; the connection tasks call it under the torrent's lock.

use std::time::{Duration, Instant};

use bitswarm_wire::{BLOCK_SIZE, Bitfield, BlockRef};

use crate::link::PeerKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Missing,
    /// Requested from this many peers (more than one only in endgame), first at this time.
    Requested(u8, Instant),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<Block>,
    received: usize,
    /// The assembled data.
    data: Vec<u8>,
    /// Who sent each block: blamed if the hash fails.
    senders: Vec<PeerKey>,
}

/// What happened to a received block.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Stored; the piece still misses blocks.
    Stored,
    /// Stored, and it completed the piece: hash and write this data. The piece stays "in
    /// flight" until [`Picker::piece_verified`] or [`Picker::piece_failed`] is called.
    PieceComplete { data: Vec<u8>, senders: Vec<PeerKey> },
    /// Not wanted (already received, piece already complete, or never asked for).
    Unwanted,
}

#[derive(Debug)]
pub struct Picker {
    piece_length: u64,
    total_length: u64,
    have: Bitfield,
    /// How many connected peers have each piece (empty until a peer says what it has: a seed
    /// nobody visits keeps none).
    availability: Vec<u32>,
    /// Ranks each piece at random (see [`Picker::tiebreak`]): ties in availability are broken
    /// by it.
    tiebreak_seed: u64,
    partial: std::collections::HashMap<u32, Partial>,
    /// Pieces whose data is complete and being hashed or written.
    in_flight: Bitfield,
    /// Blocks not requested from anyone yet, across pieces we do not have.
    blocks_missing_unrequested: usize,
    /// Blocks not received yet (requested or not), across pieces we do not have.
    blocks_left: usize,
    /// Piece buffers to reuse: no zeroing, no allocator churn.
    free: Vec<Vec<u8>>,
    /// Pieces with an entry in `partial` (cheaper to test than the map).
    started: Bitfield,
    /// The pieces we lacked at the last rebuild, rarest first (availability, then the random
    /// tiebreak). Rebuilt when availability has changed, at most once per [`ORDER_REFRESH`], so
    /// starting a piece costs no scan of every piece (which, with tens of thousands of pieces,
    /// took most of a download's CPU).
    order: Vec<u32>,
    /// Entries of `order` before this one are had, being verified or started.
    order_skip: usize,
    order_stale: bool,
    order_built: Option<Instant>,
    /// Each piece's priority: 0 not wanted, then low, normal, high (see
    /// [`Picker::set_priorities`]); empty while every piece is normal.
    priority: Vec<u8>,
    /// Wanted pieces we do not have yet.
    wanted_missing: usize,
    /// Bytes: of the wanted pieces, of those missing, and of the pieces we have.
    wanted_bytes: u64,
    wanted_left_bytes: u64,
    have_bytes: u64,
}

/// A piece's priority when nothing else is said.
pub const NORMAL: u8 = 2;

/// How often the rarest-first order may be rebuilt while peers' pieces change.
const ORDER_REFRESH: Duration = Duration::from_secs(1);

/// Blocks still on their way below which endgame asks for any of them again.
const ENDGAME_BLOCKS: usize = 64;
/// In endgame, a block asked of a peer this long ago is asked of others too, however many
/// blocks are left: a slow peer's share of the tail moves to faster ones long before its
/// requests time out.
pub const LATE_REQUEST: Duration = Duration::from_secs(3);

/// Piece buffers kept for reuse: at most this many, and this many bytes.
const FREE_BUFFERS: usize = 16;
const FREE_BYTES: u64 = 32 << 20;

impl Picker {
    pub fn new(piece_length: u64, total_length: u64, have: Bitfield, seed: u64) -> Picker {
        let n = have.len();
        let mut p = Picker {
            piece_length,
            total_length,
            availability: Vec::new(),
            tiebreak_seed: seed,
            partial: Default::default(),
            in_flight: Bitfield::new(n),
            blocks_missing_unrequested: 0,
            blocks_left: 0,
            free: Vec::new(),
            started: Bitfield::new(n),
            order: Vec::new(),
            order_skip: 0,
            order_stale: true,
            order_built: None,
            priority: Vec::new(),
            wanted_missing: 0,
            wanted_bytes: 0,
            wanted_left_bytes: 0,
            have_bytes: 0,
            have,
        };
        p.recount();
        p
    }

    /// Sets each piece's priority: 0 for a piece no wanted file touches (it is not fetched;
    /// one started is dropped), else 1 low, 2 normal, 3 high (higher first, then rarest).
    pub fn set_priorities(&mut self, priority: Vec<u8>) {
        assert_eq!(priority.len(), self.piece_count(), "one priority per piece");
        self.priority = if priority.iter().all(|&p| p == NORMAL) { Vec::new() } else { priority };
        let dropped: Vec<u32> = self.partial.keys().copied().filter(|&i| !self.wanted(i as usize)).collect();
        for i in dropped {
            if let Some(p) = self.partial.remove(&i) {
                self.started.clear(i as usize);
                self.recycle(p.data);
            }
        }
        self.recount();
        self.order_built = None;
        self.order_skip = 0;
    }

    /// The counts of wanted pieces and blocks, from scratch.
    fn recount(&mut self) {
        let (mut missing, mut left, mut wanted) = (0, 0, 0);
        (self.wanted_bytes, self.wanted_left_bytes, self.have_bytes) = (0, 0, 0);
        for i in 0..self.piece_count() {
            let size = u64::from(self.piece_size(i as u32));
            if self.wanted(i) {
                self.wanted_bytes += size;
            }
            if self.have.get(i) {
                self.have_bytes += size;
                continue;
            }
            if !self.wanted(i) {
                continue;
            }
            wanted += 1;
            self.wanted_left_bytes += size;
            if self.in_flight.get(i) {
                continue;
            }
            match self.partial.get(&(i as u32)) {
                Some(p) => {
                    for b in &p.blocks {
                        match b {
                            Block::Missing => (missing, left) = (missing + 1, left + 1),
                            Block::Requested(..) => left += 1,
                            Block::Received => {}
                        }
                    }
                }
                None => {
                    let c = self.block_count(i as u32);
                    (missing, left) = (missing + c, left + c);
                }
            }
        }
        (self.blocks_missing_unrequested, self.blocks_left, self.wanted_missing) = (missing, left, wanted);
    }

    fn wanted(&self, i: usize) -> bool {
        self.priority(i) > 0
    }

    fn priority(&self, i: usize) -> u8 {
        self.priority.get(i).copied().unwrap_or(NORMAL)
    }

    /// Piece `i`'s random rank: the same for the picker's life, different between pickers (so
    /// that peers holding the same rare pieces start different ones).
    fn tiebreak(&self, i: usize) -> u32 {
        // splitmix64's finaliser over the seed and the index.
        let mut z = self.tiebreak_seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }

    /// Bytes of wanted pieces we do not have yet.
    pub fn wanted_left(&self) -> u64 {
        self.wanted_left_bytes
    }

    /// Bytes of the wanted pieces.
    pub fn wanted_size(&self) -> u64 {
        self.wanted_bytes
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }
    pub fn piece_count(&self) -> usize {
        self.have.len()
    }
    /// Every wanted piece is here (every piece, unless some files are not wanted).
    pub fn is_complete(&self) -> bool {
        self.wanted_missing == 0
    }

    pub fn piece_size(&self, index: u32) -> u32 {
        let start = u64::from(index) * self.piece_length;
        self.piece_length.min(self.total_length - start) as u32
    }
    fn block_count(&self, index: u32) -> usize {
        self.piece_size(index).div_ceil(BLOCK_SIZE) as usize
    }
    fn block_len(&self, index: u32, block: usize) -> u32 {
        let size = self.piece_size(index);
        (size - block as u32 * BLOCK_SIZE).min(BLOCK_SIZE)
    }

    /// True when we lack some piece in `theirs` (we are interested).
    pub fn wants_any(&self, theirs: &Bitfield) -> bool {
        if theirs.is_full() {
            return !self.is_complete();
        }
        theirs.ones().any(|i| !self.have.get(i) && self.wanted(i))
    }

    /// A peer's bitfield arrived (or a peer with it left: `add = false`).
    pub fn peer_bitfield(&mut self, bits: &Bitfield, add: bool) {
        if self.availability.is_empty() {
            if !add {
                return;
            }
            self.availability = vec![0; self.piece_count()];
        }
        for i in bits.ones() {
            let a = &mut self.availability[i];
            *a = if add { *a + 1 } else { a.saturating_sub(1) };
        }
        self.order_stale = true;
    }
    pub fn peer_have(&mut self, index: u32) {
        if self.availability.is_empty() && (index as usize) < self.piece_count() {
            self.availability = vec![0; self.piece_count()];
        }
        if let Some(a) = self.availability.get_mut(index as usize) {
            *a += 1;
            self.order_stale = true;
        }
    }

    /// Rebuilds the rarest-first order when it is missing, or stale and old enough.
    fn refresh_order(&mut self, now: Instant) {
        let due = match self.order_built {
            None => true,
            Some(t) => self.order_stale && now.saturating_duration_since(t) >= ORDER_REFRESH,
        };
        if !due {
            return;
        }
        let mut order: Vec<u32> =
            (0..self.piece_count()).filter(|&i| !self.have.get(i) && self.wanted(i)).map(|i| i as u32).collect();
        // Each key made once (the tie-break is a hash now, not a lookup), not twice a comparison.
        order.sort_by_cached_key(|&i| {
            let i = i as usize;
            (std::cmp::Reverse(self.priority(i)), self.availability.get(i).copied().unwrap_or(0), self.tiebreak(i))
        });
        self.order = order;
        self.order_skip = 0;
        self.order_stale = false;
        self.order_built = Some(now);
    }

    /// Endgame: every block we lack has been requested from somebody; then a block may be
    /// asked of several peers (the first copy wins, the others are cancelled): any block once
    /// few are left, and before that the ones asked for [`LATE_REQUEST`] or longer. Duplicating
    /// earlier would duplicate whole pipelines of peers that are merely busy.
    pub fn in_endgame(&self) -> bool {
        self.blocks_missing_unrequested == 0 && self.blocks_left > 0
    }

    /// How many peers the block at (`index`, `begin`) is asked of right now.
    pub fn requesters(&self, index: u32, begin: u32) -> u8 {
        match self.partial.get(&index).and_then(|p| p.blocks.get((begin / BLOCK_SIZE) as usize)) {
            Some(Block::Requested(n, _)) => *n,
            _ => 0,
        }
    }

    /// Up to `want` blocks to request from a peer that has `theirs`, excluding blocks already
    /// requested from it (`mine`). Partial pieces first, then new pieces rarest first; in
    /// endgame, blocks already requested from others (those asked of the fewest peers, and
    /// longest ago, first).
    /// `new_pieces`: whether new pieces may be started (false while too much received data
    /// waits for verification). `now`: the time, for request ages.
    pub fn pick(
        &mut self,
        theirs: &Bitfield,
        mine: &[BlockRef],
        want: usize,
        new_pieces: bool,
        now: Instant,
    ) -> Vec<BlockRef> {
        let mut out = Vec::new();
        if want == 0 {
            return out;
        }
        // 1. Partial pieces, the most advanced first.
        let mut partials: Vec<(u32, usize)> = self
            .partial
            .iter()
            .filter(|(i, p)| theirs.get(**i as usize) && p.blocks.contains(&Block::Missing))
            .map(|(i, p)| (*i, p.blocks.len() - p.received))
            .collect();
        partials.sort_unstable_by_key(|&(i, left)| (left, i));
        for (index, _) in partials {
            self.take_blocks(index, want, now, &mut out);
            if out.len() >= want {
                return out;
            }
        }
        // 2. New pieces, rarest first with random ties.
        if new_pieces && out.len() < want {
            self.refresh_order(now);
            let mut at = self.order_skip;
            let mut closed_so_far = true;
            while out.len() < want && at < self.order.len() {
                let i = self.order[at] as usize;
                at += 1;
                if self.have.get(i) || self.in_flight.get(i) || self.started.get(i) {
                    if closed_so_far {
                        self.order_skip = at;
                    }
                    continue;
                }
                closed_so_far = false;
                if !theirs.get(i) {
                    continue;
                }
                let index = i as u32;
                let n = self.block_count(index);
                let size = self.piece_size(index) as usize;
                // Every byte is overwritten by a block before the piece completes.
                let mut data = self.free.pop().unwrap_or_default();
                data.resize(size, 0);
                self.partial
                    .insert(index, Partial { blocks: vec![Block::Missing; n], received: 0, data, senders: vec![0; n] });
                self.started.set(i);
                self.take_blocks(index, want, now, &mut out);
            }
        }
        // 3. Endgame: everything is requested; ask this peer too for what it has and we still
        // lack, once few blocks are left or for blocks that are late.
        if out.len() < want && self.in_endgame() {
            let any = self.blocks_left <= ENDGAME_BLOCKS;
            let mut dup: Vec<(u8, Instant, u32, usize)> = Vec::new();
            for (&index, p) in &self.partial {
                if !theirs.get(index as usize) {
                    continue;
                }
                for (b, st) in p.blocks.iter().enumerate() {
                    if let Block::Requested(n, since) = st {
                        if *n >= 3 || !(any || now.saturating_duration_since(*since) >= LATE_REQUEST) {
                            continue;
                        }
                        let r = BlockRef { index, begin: b as u32 * BLOCK_SIZE, length: self.block_len(index, b) };
                        if !mine.contains(&r) && !out.contains(&r) {
                            dup.push((*n, *since, index, b));
                        }
                    }
                }
            }
            dup.sort_unstable();
            for (_, _, index, b) in dup.into_iter().take(want - out.len()) {
                let p = self.partial.get_mut(&index).expect("listed above");
                if let Block::Requested(n, _) = &mut p.blocks[b] {
                    *n += 1;
                }
                out.push(BlockRef { index, begin: b as u32 * BLOCK_SIZE, length: self.block_len(index, b) });
            }
        }
        out
    }

    fn take_blocks(&mut self, index: u32, want: usize, now: Instant, out: &mut Vec<BlockRef>) {
        let lens: Vec<u32> = (0..self.block_count(index)).map(|b| self.block_len(index, b)).collect();
        let p = self.partial.get_mut(&index).expect("partial exists");
        for (b, st) in p.blocks.iter_mut().enumerate() {
            if out.len() >= want {
                break;
            }
            if *st == Block::Missing {
                *st = Block::Requested(1, now);
                self.blocks_missing_unrequested -= 1;
                out.push(BlockRef { index, begin: b as u32 * BLOCK_SIZE, length: lens[b] });
            }
        }
    }

    /// A request to some peer is abandoned (choked, timed out, disconnected, cancelled).
    pub fn release(&mut self, r: &BlockRef) {
        let Some(p) = self.partial.get_mut(&r.index) else { return };
        let b = (r.begin / BLOCK_SIZE) as usize;
        if let Some(Block::Requested(n, _)) = p.blocks.get_mut(b) {
            if *n > 1 {
                *n -= 1;
            } else {
                p.blocks[b] = Block::Missing;
                self.blocks_missing_unrequested += 1;
            }
        }
    }

    /// Stores a received block. `from` is blamed if the piece fails its hash.
    pub fn block_received(&mut self, index: u32, begin: u32, data: &[u8], from: PeerKey) -> BlockOutcome {
        if !begin.is_multiple_of(BLOCK_SIZE) || index as usize >= self.piece_count() {
            return BlockOutcome::Unwanted;
        }
        let b = (begin / BLOCK_SIZE) as usize;
        if data.is_empty() || b >= self.block_count(index) || data.len() as u32 != self.block_len(index, b) {
            return BlockOutcome::Unwanted;
        }
        let Some(p) = self.partial.get_mut(&index) else { return BlockOutcome::Unwanted };
        match p.blocks[b] {
            Block::Received => return BlockOutcome::Unwanted,
            Block::Missing => self.blocks_missing_unrequested -= 1,
            Block::Requested(..) => {}
        }
        p.blocks[b] = Block::Received;
        p.received += 1;
        self.blocks_left -= 1;
        p.data[begin as usize..begin as usize + data.len()].copy_from_slice(data);
        p.senders[b] = from;
        if p.received < p.blocks.len() {
            return BlockOutcome::Stored;
        }
        let p = self.partial.remove(&index).expect("present");
        self.started.clear(index as usize);
        self.in_flight.set(index as usize);
        BlockOutcome::PieceComplete { data: p.data, senders: p.senders }
    }

    /// Gives back a piece buffer for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        let kept = self.free.len() as u64 * self.piece_length;
        if self.free.len() < FREE_BUFFERS
            && kept + self.piece_length <= FREE_BYTES
            && buf.capacity() as u64 >= self.piece_length
        {
            self.free.push(buf);
        }
    }

    /// The piece's hash matched and its data is on disk. Returns false if it was already had.
    pub fn piece_verified(&mut self, index: u32) -> bool {
        self.in_flight.clear(index as usize);
        let new = self.have.set(index as usize);
        if new {
            let size = u64::from(self.piece_size(index));
            self.have_bytes += size;
            if self.wanted(index as usize) {
                self.wanted_missing -= 1;
                self.wanted_left_bytes -= size;
            }
        }
        if self.is_complete() {
            self.free = Vec::new(); // nothing more to assemble
        }
        new
    }

    /// The piece's hash did not match: its blocks are wanted again.
    pub fn piece_failed(&mut self, index: u32) {
        self.in_flight.clear(index as usize);
        if !self.wanted(index as usize) {
            return;
        }
        // Wanted again: the order's skipped prefix may hold it.
        self.order_skip = 0;
        self.blocks_missing_unrequested += self.block_count(index);
        self.blocks_left += self.block_count(index);
    }

    /// Bytes we have verified.
    pub fn bytes_done(&self) -> u64 {
        self.have_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: u64 = 4 * BLOCK_SIZE as u64;

    fn pick(p: &mut Picker, theirs: &Bitfield, mine: &[BlockRef], want: usize, new: bool) -> Vec<BlockRef> {
        p.pick(theirs, mine, want, new, Instant::now())
    }

    fn picker(pieces: usize) -> Picker {
        Picker::new(PL, PL * pieces as u64 - 1000, Bitfield::new(pieces), 42)
    }

    #[test]
    fn rarest_first_then_partials_first() {
        let mut p = picker(4);
        let all = Bitfield::full(4);
        let mut only1 = Bitfield::new(4);
        only1.set(1);
        p.peer_bitfield(&all, true);
        p.peer_bitfield(&all, true);
        p.peer_bitfield(&only1, true);
        // Piece 1 is most common (3), the others have 2: a rarer one is chosen first.
        let r = pick(&mut p, &all, &[], 2, true);
        assert_eq!(r.len(), 2);
        assert_ne!(r[0].index, 1);
        assert_eq!((r[0].begin, r[1].begin), (0, BLOCK_SIZE));
        // The next pick finishes that partial piece before starting another.
        let r2 = pick(&mut p, &all, &r, 3, true);
        assert_eq!(r2.iter().filter(|b| b.index == r[0].index).count(), 2);
        assert_ne!(r2[2].index, r[0].index);
    }

    #[test]
    fn last_piece_is_short_and_completion_flows() {
        let mut p = picker(2);
        let all = Bitfield::full(2);
        let mut got = Vec::new();
        loop {
            let r = pick(&mut p, &all, &got, 100, true);
            if r.is_empty() {
                break;
            }
            got.extend(r);
        }
        assert_eq!(got.len(), 8);
        let last = got.iter().max_by_key(|b| (b.index, b.begin)).unwrap();
        assert_eq!(last.length, BLOCK_SIZE - 1000);
        assert!(p.in_endgame());
        let mut completed = Vec::new();
        for b in &got {
            match p.block_received(b.index, b.begin, &vec![1; b.length as usize], 7) {
                BlockOutcome::PieceComplete { data, senders } => {
                    assert_eq!(data.len() as u32, p.piece_size(b.index));
                    assert!(senders.iter().all(|&s| s == 7));
                    completed.push(b.index);
                }
                BlockOutcome::Stored => {}
                BlockOutcome::Unwanted => panic!("wanted"),
            }
        }
        assert_eq!(completed.len(), 2);
        // A duplicate is unwanted.
        assert_eq!(p.block_received(0, 0, &[1; BLOCK_SIZE as usize], 8), BlockOutcome::Unwanted);
        assert!(p.piece_verified(0));
        p.piece_failed(1);
        assert!(!p.is_complete());
        let again = pick(&mut p, &all, &[], 100, true);
        assert_eq!(again.len(), 4, "a failed piece is fetched again");
        assert!(again.iter().all(|b| b.index == 1));
    }

    #[test]
    fn endgame_duplicates_and_release() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let a = pick(&mut p, &all, &[], 100, true);
        assert_eq!(a.len(), 4);
        assert!(p.in_endgame());
        // Another peer gets the same blocks in endgame, never twice the same from one peer,
        // and no block is asked of more than three.
        let b = pick(&mut p, &all, &[], 100, true);
        assert_eq!(b, a);
        assert!(pick(&mut p, &all, &b, 100, true).is_empty());
        let c = pick(&mut p, &all, &[], 100, true);
        assert_eq!(c, a);
        assert!(pick(&mut p, &all, &[], 100, true).is_empty(), "three copies at most");
        // Released by one peer: still requested from the other, so not missing.
        for r in &a {
            p.release(r);
        }
        assert!(p.in_endgame());
        for r in &b {
            p.release(r);
        }
        for r in &c {
            p.release(r);
        }
        assert!(!p.in_endgame());
        assert_eq!(pick(&mut p, &all, &[], 100, true).len(), 4);
    }

    #[test]
    fn a_slow_peers_tail_goes_to_others_once_late_however_long() {
        // 40 pieces of 4 blocks, all asked of one (slow) peer: 160 blocks on their way.
        let mut p = picker(40);
        let all = Bitfield::full(40);
        let t0 = Instant::now();
        let slow = p.pick(&all, &[], 1000, true, t0);
        assert_eq!(slow.len(), 160);
        assert!(p.in_endgame());
        // Too many left to duplicate them all, and none late yet.
        assert!(p.pick(&all, &[], 100, true, t0 + Duration::from_secs(1)).is_empty());
        // Late: another peer is asked for them, up to what it wants.
        let late = t0 + LATE_REQUEST;
        let fast = p.pick(&all, &[], 100, true, late);
        assert_eq!(fast.len(), 100);
        assert!(fast.iter().all(|r| slow.contains(r)));
        assert_eq!(p.requesters(fast[0].index, fast[0].begin), 2);
        // The next peer gets the blocks asked of one peer only before any third copy.
        let third = p.pick(&all, &[], 100, true, late);
        assert_eq!(third.len(), 100);
        assert_eq!(third.iter().filter(|r| !fast.contains(r)).count(), 60);
    }

    #[test]
    fn rarest_first_order_follows_availability_at_most_once_a_second() {
        let mut p = picker(3);
        let all = Bitfield::full(3);
        p.peer_bitfield(&all, true);
        for _ in 0..3 {
            p.peer_have(0);
            p.peer_have(1);
        }
        let t0 = Instant::now();
        // Piece 2 is the rarest (1 peer against 4).
        assert_eq!(p.pick(&all, &[], 1, true, t0)[0].index, 2);
        // Piece 0 becomes the rarest (4 against 13 and 10)...
        for _ in 0..9 {
            p.peer_have(1);
            p.peer_have(2);
        }
        // ...which the order learns only once a second has passed.
        p.pick(&all, &[], 1, true, t0 + ORDER_REFRESH / 2);
        assert_eq!(p.order_built, Some(t0));
        let later = p.pick(&all, &[], 4, true, t0 + ORDER_REFRESH);
        assert_eq!(p.order_built, Some(t0 + ORDER_REFRESH));
        // The rest of the started piece 2 first, then the now rarest piece 0.
        assert_eq!(later.iter().map(|b| b.index).collect::<Vec<_>>(), vec![2, 2, 0, 0]);
    }

    #[test]
    fn no_new_pieces_under_backpressure() {
        let mut p = picker(3);
        let all = Bitfield::full(3);
        let a = pick(&mut p, &all, &[], 2, true);
        assert_eq!(a.len(), 2);
        // Only the rest of the started piece, nothing new.
        let b = pick(&mut p, &all, &a, 10, false);
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|x| x.index == a[0].index));
    }

    #[test]
    fn unwanted_pieces_are_not_fetched_and_high_ones_go_first() {
        let mut p = picker(4);
        let all = Bitfield::full(4);
        p.peer_bitfield(&all, true);
        // Piece 1 started, then made unwanted: dropped; piece 3 high.
        let first = pick(&mut p, &all, &[], 1, true);
        let started = first[0].index;
        let mut prio = vec![NORMAL; 4];
        prio[started as usize] = 0;
        let high = (0..4u32).find(|&i| i != started).unwrap();
        prio[high as usize] = 3;
        p.set_priorities(prio);
        assert_eq!(p.block_received(started, 0, &vec![1; BLOCK_SIZE as usize], 1), BlockOutcome::Unwanted);
        let mut only_started = Bitfield::new(4);
        only_started.set(started as usize);
        assert!(!p.wants_any(&only_started), "nothing wanted from a peer with only the unwanted piece");
        let next = pick(&mut p, &all, &[], 1, true);
        assert_eq!(next[0].index, high, "the high piece first");
        // Every wanted piece, then complete without the unwanted one.
        let mut got = next;
        loop {
            let r = pick(&mut p, &all, &got, 100, true);
            if r.is_empty() {
                break;
            }
            got.extend(r);
        }
        assert!(got.iter().all(|b| b.index != started));
        for b in &got {
            if let BlockOutcome::PieceComplete { .. } =
                p.block_received(b.index, b.begin, &vec![1; b.length as usize], 2)
            {
                assert!(p.piece_verified(b.index));
            }
        }
        assert!(p.is_complete() && !p.have().is_full());
        assert_eq!(p.wanted_left(), 0);
    }

    #[test]
    fn rejects_bad_blocks() {
        let mut p = picker(2);
        assert_eq!(p.block_received(0, 0, &[0; 10], 1), BlockOutcome::Unwanted, "not requested piece");
        pick(&mut p, &Bitfield::full(2), &[], 1, true);
        let idx = (0..2).find(|&i| p.partial.contains_key(&i)).unwrap();
        assert_eq!(p.block_received(idx, 5, &[0; 10], 1), BlockOutcome::Unwanted, "unaligned");
        assert_eq!(p.block_received(idx, 0, &[0; 10], 1), BlockOutcome::Unwanted, "wrong length");
        assert_eq!(p.block_received(idx, 99 * BLOCK_SIZE, &[0; 10], 1), BlockOutcome::Unwanted, "out of range");
        assert_eq!(p.block_received(9, 0, &[0; 10], 1), BlockOutcome::Unwanted, "no such piece");
        // An empty block past the piece's end (its expected length would be 0).
        assert_eq!(p.block_received(idx, 16 * BLOCK_SIZE, &[], 1), BlockOutcome::Unwanted, "empty, out of range");
        assert_eq!(p.block_received(idx, 0, &[], 1), BlockOutcome::Unwanted, "empty");
    }
}
