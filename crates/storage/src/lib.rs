//! Torrent data on disk.
//!
//! * [`Layout`] maps the piece space (all files concatenated) onto files under a folder.
//! * [`walk`] collects the files of a path for `torrent create`, in a stable order.
//! * [`hash_pieces`] hashes pieces on several threads, reading in cache-sized chunks; it serves
//!   `torrent create`, `torrent verify` and the peer's check of existing data.

mod hasher;
mod layout;
mod walk;

pub use hasher::{
    Hashed, PieceError, PieceState, for_each_piece, for_pieces_in, hash_pieces, verify_pieces, verify_pieces_in,
};
pub use layout::{Layout, LayoutFile, Segment, usable_paths};
pub use walk::{WalkError, WalkedFile, walk};

/// Number of worker threads to use for CPU-bound work: every core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
