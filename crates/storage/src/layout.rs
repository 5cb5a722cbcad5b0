use std::path::{Path, PathBuf};

use bitswarm_metainfo::Info;

/// One file of a torrent as placed on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutFile {
    pub path: PathBuf,
    /// Offset of the file's first byte in the piece space.
    pub offset: u64,
    pub length: u64,
    /// A padding file (BEP 47): reads as zeros, never touches the disk.
    pub padding: bool,
}

/// The files of a torrent, in torrent order, and the piece geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub files: Vec<LayoutFile>,
    pub piece_length: u64,
    pub total_length: u64,
}

/// A run of bytes inside one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file: usize,
    pub file_offset: u64,
    pub len: u64,
}

impl Layout {
    /// The layout of `info` with its data under `dir` (the folder that holds the torrent's
    /// content: the file itself for single-file torrents, the top folder for multi-file ones).
    pub fn new(info: &Info, dir: &Path) -> Layout {
        let files = info
            .files
            .iter()
            .map(|f| LayoutFile {
                path: dir.join(info.relative_path(f)),
                offset: f.offset,
                length: f.length,
                padding: f.padding,
            })
            .collect();
        Layout { files, piece_length: info.piece_length, total_length: info.total_length }
    }

    /// A layout over explicit files, concatenated in the order given.
    pub fn from_files(files: impl IntoIterator<Item = (PathBuf, u64)>, piece_length: u64) -> Layout {
        let mut offset = 0;
        let files = files
            .into_iter()
            .map(|(path, length)| {
                let f = LayoutFile { path, offset, length, padding: false };
                offset += length;
                f
            })
            .collect();
        Layout { files, piece_length, total_length: offset }
    }

    pub fn piece_count(&self) -> usize {
        self.total_length.div_ceil(self.piece_length) as usize
    }

    /// Byte range `(offset, len)` of piece `index` in the piece space.
    pub fn piece_range(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * self.piece_length;
        (start, self.piece_length.min(self.total_length.saturating_sub(start)))
    }

    /// The file segments covering `len` bytes from `offset`, skipping empty files.
    pub fn segments(&self, offset: u64, len: u64) -> impl Iterator<Item = Segment> + '_ {
        // First file whose end lies beyond `offset`.
        let first = self.files.partition_point(|f| f.offset + f.length <= offset);
        let end = offset + len;
        self.files[first..]
            .iter()
            .enumerate()
            .take_while(move |(_, f)| f.offset < end)
            .filter(|(_, f)| f.length > 0)
            .map(move |(i, f)| {
                let start = offset.max(f.offset);
                let stop = end.min(f.offset + f.length);
                Segment { file: first + i, file_offset: start - f.offset, len: stop - start }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_span_files_and_skip_empty_ones() {
        let l = Layout::from_files([("a".into(), 10), ("e".into(), 0), ("b".into(), 5), ("c".into(), 20)], 8);
        assert_eq!(l.piece_count(), 5);
        assert_eq!(l.piece_range(4), (32, 3));
        let s: Vec<_> = l.segments(8, 8).collect();
        assert_eq!(
            s,
            vec![
                Segment { file: 0, file_offset: 8, len: 2 },
                Segment { file: 2, file_offset: 0, len: 5 },
                Segment { file: 3, file_offset: 0, len: 1 },
            ]
        );
        let s: Vec<_> = l.segments(32, 3).collect();
        assert_eq!(s, vec![Segment { file: 3, file_offset: 17, len: 3 }]);
        assert_eq!(l.segments(0, 35).map(|s| s.len).sum::<u64>(), 35);
    }
}
