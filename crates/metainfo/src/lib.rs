//! BitTorrent metainfo files (BEP 3, 12, 19, 27, 52 hybrids) and magnet links (BEP 9), without I/O.
//!
//! [`Metainfo::parse`] validates everything a peer relies on later (piece count against total
//! size, safe relative paths) so that nothing downstream has to distrust the file again. The
//! info-hash is SHA-1 of the `info` dictionary's bytes exactly as they stand in the file.

mod build;
mod hash;
mod magnet;
mod parse;

pub use build::{TorrentBuilder, auto_piece_length};
pub use hash::{HashParseError, InfoHash};
pub use magnet::{Magnet, MagnetError};
pub use parse::{MAX_COMPONENT, MAX_PATH, MAX_PIECES, MAX_VALUES, MetainfoError};

/// A parsed, validated .torrent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    pub info: Info,
    /// `announce`: the single tracker of BEP 3.
    pub announce: Option<String>,
    /// `announce-list`: tiers of trackers (BEP 12). Empty tiers are dropped.
    pub announce_list: Vec<Vec<String>>,
    /// `url-list`: web seeds (BEP 19).
    pub url_list: Vec<String>,
    pub creation_date: Option<i64>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    /// The .torrent file's bytes as read, shared: the `info` dictionary is a range of them,
    /// and a daemon stores them as they came without keeping a copy of its own.
    raw: std::sync::Arc<[u8]>,
    info_at: std::ops::Range<usize>,
    /// The torrent also carries v2 (BEP 52) fields; it is used as v1.
    pub hybrid: bool,
}

/// The `info` dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The suggested name of the file (single-file) or top folder (multi-file); one safe path
    /// component.
    pub name: String,
    pub piece_length: u64,
    /// One SHA-1 a piece. Parsed from a file, they are the file's own bytes (shared with
    /// [`Metainfo::torrent_bytes`], not copied: 20 bytes a piece is most of a torrent's size).
    pub pieces: Pieces,
    /// The files in torrent order with their offsets in the piece space. A single-file torrent
    /// has one entry whose path is `[name]`.
    pub files: Vec<FileEntry>,
    pub total_length: u64,
    /// Multi-file layout: the files live under a folder called `name`.
    pub multi_file: bool,
    pub private: bool,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components relative to the torrent's root folder (for a single-file torrent: the
    /// name). Each component is non-empty, not `.` or `..`, and has no `/`, `\` or NUL.
    pub path: Vec<String>,
    pub length: u64,
    /// Offset of the file's first byte in the concatenation of all files.
    pub offset: u64,
    /// A BEP 47 padding file (`attr` contains `p`): zeros that are never written to disk.
    pub padding: bool,
}

impl FileEntry {
    /// The path as one `/`-joined string.
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }
}

/// The piece hashes: a list of its own, or a range of the .torrent's bytes.
#[derive(Clone)]
pub struct Pieces(PiecesRepr);

#[derive(Clone)]
enum PiecesRepr {
    Owned(Vec<[u8; 20]>),
    Shared { bytes: std::sync::Arc<[u8]>, at: std::ops::Range<usize> },
}

impl Pieces {
    /// The hashes at `at` in `bytes` (a multiple of 20 long).
    pub(crate) fn shared(bytes: std::sync::Arc<[u8]>, at: std::ops::Range<usize>) -> Pieces {
        debug_assert_eq!(at.len() % 20, 0);
        Pieces(PiecesRepr::Shared { bytes, at })
    }
}

impl std::ops::Deref for Pieces {
    type Target = [[u8; 20]];
    fn deref(&self) -> &[[u8; 20]] {
        match &self.0 {
            PiecesRepr::Owned(v) => v,
            PiecesRepr::Shared { bytes, at } => bytes[at.clone()].as_chunks::<20>().0,
        }
    }
}

impl From<Vec<[u8; 20]>> for Pieces {
    fn from(v: Vec<[u8; 20]>) -> Pieces {
        Pieces(PiecesRepr::Owned(v))
    }
}

impl PartialEq for Pieces {
    fn eq(&self, other: &Pieces) -> bool {
        **self == **other
    }
}

impl Eq for Pieces {}

impl std::fmt::Debug for Pieces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pieces({} hashes)", self.len())
    }
}

impl Info {
    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }
    /// The size of piece `index` (the last one may be shorter).
    pub fn piece_size(&self, index: usize) -> u64 {
        let start = index as u64 * self.piece_length;
        self.piece_length.min(self.total_length - start)
    }
    /// Path of the file on disk relative to the download folder: `name/…` for multi-file
    /// torrents, `name` for single-file ones.
    pub fn relative_path(&self, file: &FileEntry) -> std::path::PathBuf {
        let mut p = std::path::PathBuf::new();
        if self.multi_file {
            p.push(&self.name);
        }
        p.extend(&file.path);
        p
    }
}

impl Metainfo {
    /// Tracker tiers: `announce-list` when present (BEP 12), otherwise `announce` as one tier.
    pub fn trackers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else {
            self.announce.iter().map(|a| vec![a.clone()]).collect()
        }
    }

    /// A magnet link for this torrent with its name and trackers.
    pub fn magnet(&self) -> Magnet {
        Magnet {
            info_hash: self.info_hash,
            name: Some(self.info.name.clone()),
            trackers: self.trackers().into_iter().flatten().collect(),
            peers: Vec::new(),
        }
    }
}

/// Checks one path component from a torrent or a user; `None` if it is safe to use on disk.
pub fn unsafe_component(c: &str) -> Option<&'static str> {
    if c.is_empty() {
        Some("an empty path component")
    } else if c == "." || c == ".." {
        Some("a \".\" or \"..\" path component")
    } else if c.contains('/') || c.contains('\\') {
        Some("a path component containing a slash")
    } else if c.contains('\0') {
        Some("a path component containing a NUL byte")
    } else if c.len() > parse::MAX_COMPONENT {
        Some("a path component longer than 255 bytes (the file system's limit)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
