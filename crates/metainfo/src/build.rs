use bitswarm_bencode::Encoder;

use crate::{InfoHash, unsafe_component};

/// Chooses a piece length: a power of two from 16 KiB to 16 MiB giving at most about 2,000
/// pieces (so between about 1,000 and 2,000 whenever the size allows).
pub fn auto_piece_length(total: u64) -> u64 {
    let mut p: u64 = 16 << 10;
    while p < (16 << 20) && total.div_ceil(p) > 2000 {
        p *= 2;
    }
    p
}

/// Everything needed to write a .torrent file; the caller supplies the piece hashes.
#[derive(Debug, Clone, Default)]
pub struct TorrentBuilder {
    pub name: String,
    pub piece_length: u64,
    pub pieces: Vec<[u8; 20]>,
    /// `None` for a single-file torrent (then `length` is used); otherwise the files with their
    /// path components relative to the root folder, in torrent order.
    pub files: Option<Vec<(Vec<String>, u64)>>,
    pub length: u64,
    pub private: bool,
    pub source: Option<String>,
    /// Tracker tiers; the first URL also goes into `announce`.
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl TorrentBuilder {
    /// The canonical bencoded `info` dictionary.
    pub fn info_bytes(&self) -> Vec<u8> {
        debug_assert!(unsafe_component(&self.name).is_none());
        let mut e = Encoder::new();
        e.begin_dict();
        match &self.files {
            Some(files) => {
                e.str("files").begin_list();
                for (path, len) in files {
                    e.begin_dict().str("length").int(*len as i64).str("path").begin_list();
                    for c in path {
                        e.str(c);
                    }
                    e.end().end();
                }
                e.end();
            }
            None => {
                e.str("length").int(self.length as i64);
            }
        }
        e.str("name").str(&self.name);
        e.str("piece length").int(self.piece_length as i64);
        e.str("pieces").bytes(self.pieces.as_flattened());
        if self.private {
            e.str("private").int(1);
        }
        if let Some(s) = &self.source {
            e.str("source").str(s);
        }
        e.end();
        e.finish()
    }

    /// The whole .torrent file and its info-hash.
    pub fn build(&self) -> (Vec<u8>, InfoHash) {
        let info = self.info_bytes();
        let hash = InfoHash::of(&info);
        let mut e = Encoder::new();
        e.begin_dict();
        let first = self.trackers.iter().flatten().next();
        if let Some(url) = first {
            e.str("announce").str(url);
        }
        let all: usize = self.trackers.iter().map(Vec::len).sum();
        if all > 1 {
            e.str("announce-list").begin_list();
            for tier in self.trackers.iter().filter(|t| !t.is_empty()) {
                e.begin_list();
                for url in tier {
                    e.str(url);
                }
                e.end();
            }
            e.end();
        }
        if let Some(c) = &self.comment {
            e.str("comment").str(c);
        }
        if let Some(c) = &self.created_by {
            e.str("created by").str(c);
        }
        if let Some(d) = self.creation_date {
            e.str("creation date").int(d);
        }
        e.str("info").raw(&info);
        if !self.web_seeds.is_empty() {
            e.str("url-list").begin_list();
            for u in &self.web_seeds {
                e.str(u);
            }
            e.end();
        }
        e.end();
        (e.finish(), hash)
    }
}
