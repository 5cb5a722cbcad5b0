use bitswarm_bencode::{Dict, Value};

use crate::{FileEntry, Info, InfoHash, Metainfo, unsafe_component};

/// Largest piece length accepted (libtorrent's limit is similar); larger ones are either
/// corrupt or unusable.
pub const MAX_PIECE_LENGTH: u64 = 512 << 20;
/// Total size limit: offsets must fit comfortably in an i64 (a file system limit in practice).
const MAX_TOTAL: u64 = i64::MAX as u64;
/// Bencoded values (integers, strings, lists, dictionaries) a .torrent file may hold: counted
/// before anything is built, so a hostile file cannot make the parser allocate without bound
/// (libtorrent's `max_decode_tokens`). About 500,000 files; a parsed value costs about 40 bytes.
pub const MAX_VALUES: usize = 3_000_000;
/// Pieces a torrent may have (libtorrent's `max_pieces`): 40 MiB of piece hashes.
pub const MAX_PIECES: usize = 0x20_0000;
/// Longest path component, in bytes: what Linux, macOS and Windows file systems allow.
pub const MAX_COMPONENT: usize = 255;
/// Longest relative path of a file (its folders and name, the torrent's name first for a
/// multi-file torrent), in bytes: longer ones cannot be opened on Linux (PATH_MAX) even before
/// the download folder is put in front.
pub const MAX_PATH: usize = 4095;

/// Why a .torrent file was refused: the field concerned and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error("not bencode: {0}")]
    Bencode(#[from] bitswarm_bencode::Error),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    #[error(
        "this is a v2-only torrent (BEP 52): it has no v1 piece hashes, and bitswarm speaks v1 (hybrid torrents work)"
    )]
    V2Only,
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> MetainfoError {
    MetainfoError::Field { field: field.into(), problem: problem.into() }
}

fn missing(name: &str) -> MetainfoError {
    field(name, "missing")
}

fn wrong_type(name: &str, want: &str, got: &Value<'_>) -> MetainfoError {
    field(name, format!("expected {want}, found {}", got.type_name()))
}

fn get_dict<'a, 'b>(d: &'b Dict<'a>, key: &str, name: &str) -> Result<Option<&'b Dict<'a>>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Dict(x)) => Ok(Some(x)),
        Some(v) => Err(wrong_type(name, "a dictionary", v)),
    }
}

fn get_int(d: &Dict<'_>, key: &str, name: &str) -> Result<Option<i64>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Int(i)) => Ok(Some(*i)),
        Some(v) => Err(wrong_type(name, "an integer", v)),
    }
}

fn get_bytes<'a>(d: &Dict<'a>, key: &str, name: &str) -> Result<Option<&'a [u8]>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b)),
        Some(v) => Err(wrong_type(name, "a string", v)),
    }
}

/// Text fields: invalid UTF-8 is replaced rather than refused (old clients wrote other encodings).
fn get_text(d: &Dict<'_>, key: &str, name: &str) -> Result<Option<String>, MetainfoError> {
    Ok(get_bytes(d, key, name)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A text field that prefers its `.utf-8` twin when that one is valid UTF-8.
fn get_text_utf8(d: &Dict<'_>, key: &str, name: &str) -> Result<Option<String>, MetainfoError> {
    if let Some(Value::Bytes(b)) = d.get(format!("{key}.utf-8").as_bytes())
        && let Ok(s) = std::str::from_utf8(b)
    {
        return Ok(Some(s.to_owned()));
    }
    get_text(d, key, name)
}

fn non_negative(v: i64, name: &str) -> Result<u64, MetainfoError> {
    u64::try_from(v).map_err(|_| field(name, format!("must not be negative, found {v}")))
}

fn check_component(c: &str, name: &str) -> Result<(), MetainfoError> {
    match unsafe_component(c) {
        None => Ok(()),
        Some(problem) => Err(field(name, format!("unsafe path: {problem} ({:?})", shorten(c)))),
    }
}

impl Metainfo {
    /// The torrent of an info dictionary that came from peers (a magnet link's download, BEP 9),
    /// with `trackers` (the link's `tr`, each its own tier). The bytes are kept as they are, so
    /// the info-hash is theirs; they are validated as a file's would be.
    pub fn from_info_bytes(info: &[u8], trackers: &[String]) -> Result<Metainfo, MetainfoError> {
        Metainfo::parse(&Metainfo::torrent_file_of(info, trackers))
    }

    /// The bytes of a .torrent file made of an info dictionary's bytes (kept as they are) and
    /// `trackers`, each its own tier. Not validated: see [`Metainfo::from_info_bytes`].
    pub fn torrent_file_of(info: &[u8], trackers: &[String]) -> Vec<u8> {
        let mut e = bitswarm_bencode::Encoder::new();
        e.begin_dict();
        if let Some(first) = trackers.first() {
            e.str("announce").str(first);
            e.str("announce-list").begin_list();
            for t in trackers {
                e.begin_list().str(t).end();
            }
            e.end();
        }
        e.str("info").raw(info);
        e.end();
        e.finish()
    }

    /// Parses and validates a .torrent file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let root = bitswarm_bencode::decode_limited(bytes, MAX_VALUES)?;
        let Value::Dict(root) = &root else {
            return Err(wrong_type("the file", "a dictionary", &root));
        };
        let info_dict = get_dict(root, "info", "info")?.ok_or_else(|| missing("info"))?;
        let raw: std::sync::Arc<[u8]> = bytes.into();
        // The decoder borrows: what it found is a slice of `bytes`, which `raw` holds a copy of.
        let span = |part: &[u8]| {
            let start = part.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + part.len()
        };
        // The piece hashes are kept once, as a range of `raw`.
        let (info, hybrid) = parse_info(info_dict, |hashes| crate::Pieces::shared(raw.clone(), span(hashes)))?;

        let announce = get_text(root, "announce", "announce")?.filter(|s| !s.is_empty());
        let mut announce_list = Vec::new();
        match root.get(b"announce-list") {
            None => {}
            Some(Value::List(tiers)) => {
                for (i, tier) in tiers.iter().enumerate() {
                    let name = format!("announce-list[{i}]");
                    let urls = tier.as_list().ok_or_else(|| wrong_type(&name, "a list", tier))?;
                    let mut t = Vec::new();
                    for (j, u) in urls.iter().enumerate() {
                        let name = format!("announce-list[{i}][{j}]");
                        let u = u.as_bytes().ok_or_else(|| wrong_type(&name, "a string", u))?;
                        let u = String::from_utf8_lossy(u).trim().to_owned();
                        if !u.is_empty() && !t.contains(&u) {
                            t.push(u);
                        }
                    }
                    if !t.is_empty() {
                        t.shrink_to_fit();
                        announce_list.push(t);
                    }
                }
            }
            Some(v) => return Err(wrong_type("announce-list", "a list", v)),
        }
        // Kept for the torrent's life (thousands in a daemon): no room to grow.
        announce_list.shrink_to_fit();
        let url_list = match root.get(b"url-list") {
            None => Vec::new(),
            Some(Value::Bytes(b"")) => Vec::new(),
            Some(Value::Bytes(b)) => vec![String::from_utf8_lossy(b).into_owned()],
            Some(Value::List(l)) => l
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    u.as_bytes()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .ok_or_else(|| wrong_type(&format!("url-list[{i}]"), "a string", u))
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(wrong_type("url-list", "a string or a list", v)),
        };

        Ok(Metainfo {
            info_hash: InfoHash::of(info_dict.raw),
            info,
            announce,
            announce_list,
            url_list,
            creation_date: get_int(root, "creation date", "creation date")?,
            comment: get_text_utf8(root, "comment", "comment")?,
            created_by: get_text(root, "created by", "created by")?,
            info_at: span(info_dict.raw),
            raw,
            hybrid,
        })
    }

    /// The `info` dictionary's bytes as found in the file (what the info-hash covers; what
    /// BEP 9 hands to peers that ask for metadata).
    pub fn info_bytes(&self) -> &[u8] {
        &self.raw[self.info_at.clone()]
    }

    /// `nodes` (BEP 5): DHT nodes a trackerless torrent names, as `[host, port]` pairs. Read
    /// leniently (an entry that is not a host and a port from 1 to 65535 is left out): they
    /// are hints, and a bad one must not make the torrent unusable.
    pub fn nodes(&self) -> Vec<(String, u16)> {
        let Ok(Value::Dict(root)) = bitswarm_bencode::decode_limited(&self.raw, MAX_VALUES) else { return Vec::new() };
        let Some(Value::List(l)) = root.get(b"nodes") else { return Vec::new() };
        l.iter()
            .filter_map(|n| {
                let pair = n.as_list()?;
                let [Value::Bytes(host), Value::Int(port)] = pair else { return None };
                let host = std::str::from_utf8(host).ok().filter(|h| !h.is_empty())?;
                let port = u16::try_from(*port).ok().filter(|p| *p > 0)?;
                Some((host.to_owned(), port))
            })
            .take(64)
            .collect()
    }

    /// The .torrent file's bytes as they were parsed.
    pub fn torrent_bytes(&self) -> &std::sync::Arc<[u8]> {
        &self.raw
    }
}

/// Parses a bare `info` dictionary (as received from peers with BEP 9); `pieces` keeps the
/// piece hashes, once they are checked.
pub(crate) fn parse_info(
    d: &Dict<'_>,
    pieces: impl FnOnce(&[u8]) -> crate::Pieces,
) -> Result<(Info, bool), MetainfoError> {
    let meta_version = get_int(d, "meta version", "info.meta version")?;
    let pieces_raw = get_bytes(d, "pieces", "info.pieces")?;
    let hybrid = meta_version == Some(2) || d.get(b"file tree").is_some();
    if pieces_raw.is_none() && hybrid {
        return Err(MetainfoError::V2Only);
    }
    if let Some(v) = meta_version
        && v != 1
        && v != 2
    {
        return Err(field("info.meta version", format!("unknown version {v}")));
    }

    let name = get_text_utf8(d, "name", "info.name")?.ok_or_else(|| missing("info.name"))?;
    check_component(&name, "info.name")?;

    let piece_length = get_int(d, "piece length", "info.piece length")?.ok_or_else(|| missing("info.piece length"))?;
    let piece_length = non_negative(piece_length, "info.piece length")?;
    if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
        return Err(field(
            "info.piece length",
            format!("must be between 1 and {MAX_PIECE_LENGTH}, found {piece_length}"),
        ));
    }

    let pieces_raw = pieces_raw.ok_or_else(|| missing("info.pieces"))?;
    if pieces_raw.len() % 20 != 0 {
        return Err(field(
            "info.pieces",
            format!("length {} is not a multiple of 20 (one SHA-1 per piece)", pieces_raw.len()),
        ));
    }
    if pieces_raw.len() / 20 > MAX_PIECES {
        return Err(field(
            "info.pieces",
            format!("{} pieces, more than the {MAX_PIECES} allowed", pieces_raw.len() / 20),
        ));
    }
    let pieces = pieces(pieces_raw);

    let mut files = Vec::new();
    let multi_file = match (d.get(b"length"), d.get(b"files")) {
        (Some(_), Some(_)) => return Err(field("info", "has both \"length\" and \"files\"")),
        (None, None) => return Err(field("info", "has neither \"length\" nor \"files\"")),
        (Some(len), None) => {
            let len = len.as_int().ok_or_else(|| wrong_type("info.length", "an integer", len))?;
            let length = non_negative(len, "info.length")?;
            files.push(FileEntry { path: vec![name.clone()], length, offset: 0, padding: false });
            false
        }
        (None, Some(list)) => {
            let list = list.as_list().ok_or_else(|| wrong_type("info.files", "a list", list))?;
            if list.is_empty() {
                return Err(field("info.files", "is empty"));
            }
            for (i, f) in list.iter().enumerate() {
                let fname = format!("info.files[{i}]");
                let f = f.as_dict().ok_or_else(|| wrong_type(&fname, "a dictionary", f))?;
                let length = get_int(f, "length", &format!("{fname}.length"))?
                    .ok_or_else(|| missing(&format!("{fname}.length")))?;
                let length = non_negative(length, &format!("{fname}.length"))?;
                let path = file_path(f, &fname)?;
                let attr = get_bytes(f, "attr", &format!("{fname}.attr")).ok().flatten();
                let padding = attr.is_some_and(|a| a.contains(&b'p'));
                files.push(FileEntry { path, length, offset: 0, padding });
            }
            true
        }
    };

    // Kept for the torrent's life (thousands in a daemon): no room to grow (pushed one by one,
    // a single file had room for four).
    files.shrink_to_fit();
    let mut offset: u64 = 0;
    for (i, f) in files.iter_mut().enumerate() {
        f.offset = offset;
        offset = offset
            .checked_add(f.length)
            .filter(|&t| t <= MAX_TOTAL)
            .ok_or_else(|| field(format!("info.files[{i}].length"), "total size is too large"))?;
    }
    let total_length = offset;
    if multi_file {
        check_paths(&name, &files)?;
    }
    if total_length == 0 {
        return Err(field("info", "the torrent holds no data (total size 0)"));
    }
    let expected = total_length.div_ceil(piece_length);
    if pieces.len() as u64 != expected {
        return Err(field(
            "info.pieces",
            format!(
                "holds {} piece hashes, but {total_length} bytes in pieces of {piece_length} need {expected}",
                pieces.len()
            ),
        ));
    }
    let private = match get_int(d, "private", "info.private")? {
        None | Some(0) => false,
        Some(1) => true,
        Some(v) => return Err(field("info.private", format!("must be 0 or 1, found {v}"))),
    };

    let info = Info {
        name,
        piece_length,
        pieces,
        files,
        total_length,
        multi_file,
        private,
        source: get_text(d, "source", "info.source")?,
    };
    Ok((info, hybrid))
}

/// The files of a multi-file torrent can all exist at once under `name`: no path is too long
/// for the file system, none appears twice, and none is a file where another one needs a folder
/// (`a` and `a/b`). Padding files are never created and are left out.
fn check_paths(name: &str, files: &[FileEntry]) -> Result<(), MetainfoError> {
    let at = |i: usize| format!("info.files[{i}].path");
    let mut order: Vec<usize> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        if f.padding {
            continue;
        }
        let len = name.len() + f.path.iter().map(|c| 1 + c.len()).sum::<usize>();
        if len > MAX_PATH {
            return Err(field(
                at(i),
                format!(
                    "{} is {len} bytes long with the torrent's name ({} components); \
                     the file system takes at most {MAX_PATH}",
                    shorten(&f.path_string()),
                    f.path.len()
                ),
            ));
        }
        order.push(i);
    }
    // Sorted by components, a path comes right before the paths it is a folder of.
    order.sort_unstable_by(|&a, &b| files[a].path.cmp(&files[b].path));
    for w in order.windows(2) {
        let (a, b) = (&files[w[0]], &files[w[1]]);
        if a.path == b.path {
            let (first, second) = (w[0].min(w[1]), w[0].max(w[1]));
            return Err(field(
                at(second),
                format!("{:?} appears twice (also info.files[{first}])", shorten(&a.path_string())),
            ));
        }
        if b.path.starts_with(&a.path) {
            return Err(field(
                at(w[1]),
                format!(
                    "{:?} needs {:?} to be a folder, but info.files[{}] is a file by that name",
                    shorten(&b.path_string()),
                    shorten(&a.path_string()),
                    w[0]
                ),
            ));
        }
    }
    Ok(())
}

/// A path for an error message: whole when short, else its start and end.
fn shorten(p: &str) -> String {
    const KEEP: usize = 60;
    if p.len() <= 2 * KEEP + 3 {
        return p.to_owned();
    }
    let head = p.char_indices().take_while(|(i, _)| *i < KEEP).last().map_or(0, |(i, c)| i + c.len_utf8());
    let tail = p.char_indices().rev().take_while(|(i, _)| p.len() - i <= KEEP).last().map_or(p.len(), |(i, _)| i);
    format!("{}…{}", &p[..head], &p[tail..])
}

fn file_path(f: &Dict<'_>, fname: &str) -> Result<Vec<String>, MetainfoError> {
    let key = if matches!(f.get(b"path.utf-8"), Some(Value::List(l)) if l.iter().all(|c| c.as_str().is_some())) {
        "path.utf-8"
    } else {
        "path"
    };
    let name = format!("{fname}.{key}");
    let comps = f.get(key.as_bytes()).ok_or_else(|| missing(&format!("{fname}.path")))?;
    let comps = comps.as_list().ok_or_else(|| wrong_type(&name, "a list", comps))?;
    if comps.is_empty() {
        return Err(field(&name, "is empty"));
    }
    comps
        .iter()
        .map(|c| {
            let c = c.as_bytes().ok_or_else(|| wrong_type(&name, "a list of strings", c))?;
            let c = String::from_utf8_lossy(c).into_owned();
            check_component(&c, &name)?;
            Ok(c)
        })
        .collect()
}
