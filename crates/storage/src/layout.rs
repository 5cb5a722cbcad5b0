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

/// Whether `p` is a relative path of plain components joined by `/`: none empty, `.` or `..`,
/// none with a NUL.
fn plain_path(p: &str) -> bool {
    p.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// `paths` if they can place the files of `info` (see [`Layout::with_paths`]): one a file, each
/// made of plain components; None otherwise.
pub fn usable_paths<'a>(info: &Info, paths: Option<&'a [String]>) -> Option<&'a [String]> {
    paths.filter(|p| p.len() == info.files.len() && p.iter().all(|p| plain_path(p)))
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

    /// [`Layout::new`] with each file's path under `dir` given (a torrent whose files or folders
    /// were renamed: one path a file of `info`, in torrent order, components joined by `/`).
    /// Paths that are not one a file, or not all made of plain components (no empty one, no
    /// `.`, no `..`, no NUL), are ignored: the torrent's own are used, so that nothing read
    /// back from a store can place a file outside `dir`.
    pub fn with_paths(info: &Info, dir: &Path, paths: Option<&[String]>) -> Layout {
        let mut layout = Layout::new(info, dir);
        if let Some(paths) = usable_paths(info, paths) {
            for (f, p) in layout.files.iter_mut().zip(paths) {
                f.path = dir.join(p);
            }
        }
        layout
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

    /// Renamed paths place the files; paths that could leave the folder, or not one a file,
    /// are ignored.
    #[test]
    fn renamed_paths_stay_under_the_folder() {
        let b = bitswarm_metainfo::TorrentBuilder {
            name: "tree".into(),
            piece_length: 16384,
            pieces: vec![[0; 20]],
            files: Some(vec![(vec!["a".into()], 10), (vec!["s".into(), "b".into()], 5)]),
            ..Default::default()
        };
        let m = bitswarm_metainfo::Metainfo::parse(&b.build().0).unwrap();
        let dir = Path::new("/d");
        let paths = |l: Layout| l.files.into_iter().map(|f| f.path).collect::<Vec<_>>();
        let own = vec![PathBuf::from("/d/tree/a"), PathBuf::from("/d/tree/s/b")];
        assert_eq!(paths(Layout::with_paths(&m.info, dir, None)), own);
        let renamed = ["new/a".to_owned(), "new/t/b2".to_owned()];
        assert_eq!(
            paths(Layout::with_paths(&m.info, dir, Some(&renamed))),
            vec![PathBuf::from("/d/new/a"), PathBuf::from("/d/new/t/b2")]
        );
        for bad in [["../a", "b"], ["/etc/a", "b"], ["x//a", "b"], ["x/./a", "b"], ["", "b"], ["a\0", "b"]] {
            let bad = bad.map(str::to_owned);
            assert_eq!(paths(Layout::with_paths(&m.info, dir, Some(&bad))), own, "{bad:?}");
        }
        assert_eq!(paths(Layout::with_paths(&m.info, dir, Some(&renamed[..1]))), own, "one path for two files");
    }

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
