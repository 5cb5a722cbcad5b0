//! Bencode (BEP 3), without I/O.
//!
//! * [`decode`] parses a complete buffer into a borrowed [`Value`] tree. Every dictionary keeps the
//!   raw bytes it was parsed from ([`Dict::raw`]), which is what an info-hash is computed over:
//!   real torrents carry unsorted keys and unknown fields, and re-encoding would change the hash.
//! * Decoding is strict where ambiguity could hurt (integers, duplicate keys, trailing data, nesting
//!   depth) and lenient where real files differ (dictionary key order is accepted as found).
//! * [`Encoder`] writes canonical bencode straight into a `Vec<u8>`; [`Value::encode`] re-encodes
//!   a decoded tree with sorted keys.
//!
//! Errors carry the byte offset at which the input stopped making sense.

use std::fmt;

/// Nesting deeper than this is refused: no real torrent or tracker reply comes close, and it
/// bounds the recursion of the decoder.
pub const MAX_DEPTH: usize = 64;

/// What went wrong, and where (a byte offset into the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct Error {
    pub offset: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unexpected end of data")]
    Eof,
    #[error("unexpected byte {0:?} where a value should start")]
    UnexpectedByte(char),
    #[error("invalid integer")]
    BadInteger,
    #[error("integer out of range")]
    IntegerOverflow,
    #[error("invalid string length")]
    BadLength,
    #[error("string length runs past the end of the data")]
    LengthPastEnd,
    #[error("dictionary key is not a string")]
    KeyNotString,
    #[error("duplicate dictionary key {0:?}")]
    DuplicateKey(String),
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("trailing data after the value")]
    TrailingData,
    #[error("more than {0} values (integers, strings, lists and dictionaries)")]
    TooManyValues(usize),
}

/// A decoded value borrowing from the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A decoded dictionary: its entries in the order found, and the exact bytes it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dict<'a> {
    pub entries: Vec<(&'a [u8], Value<'a>)>,
    /// The bytes of this dictionary exactly as they stand in the input, `d` to `e` inclusive.
    pub raw: &'a [u8],
}

impl<'a> Dict<'a> {
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> Value<'a> {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// The value as UTF-8 text, if it is a string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Shortcut for `self.as_dict()?.get(key)`.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.as_dict().and_then(|d| d.get(key))
    }
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }
    /// Canonical bencode of this value (dictionary keys sorted).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.value(self);
        e.finish()
    }
}

/// Decodes exactly one value spanning the whole buffer.
pub fn decode(input: &[u8]) -> Result<Value<'_>, Error> {
    let (v, end) = decode_prefix(input)?;
    if end != input.len() {
        return Err(Error { offset: end, kind: ErrorKind::TrailingData });
    }
    Ok(v)
}

/// [`decode`] for input that may be hostile and large (a .torrent file): a first pass counts the
/// values without allocating anything, and input holding more than `max_values` of them is
/// refused before a tree is built. A tree costs about 40 bytes a value, so this bounds memory
/// (libtorrent's `max_decode_tokens` does the same).
pub fn decode_limited(input: &[u8], max_values: usize) -> Result<Value<'_>, Error> {
    count_values(input, max_values)?;
    decode(input)
}

/// Walks the first value of `input` far enough to count its values, stopping at the first one
/// past `max`. Only the structure is checked here (lengths, nesting); [`decode`] checks the rest.
fn count_values(input: &[u8], max: usize) -> Result<usize, Error> {
    let mut pos = 0usize;
    let mut depth = 0usize;
    let mut count = 0usize;
    let eof = |offset| Error { offset, kind: ErrorKind::Eof };
    loop {
        let b = *input.get(pos).ok_or(eof(pos))?;
        if b == b'e' && depth > 0 {
            depth -= 1;
            pos += 1;
        } else {
            count += 1;
            if count > max {
                return Err(Error { offset: pos, kind: ErrorKind::TooManyValues(max) });
            }
            match b {
                b'i' => {
                    let end = input[pos..].iter().position(|&c| c == b'e').ok_or(eof(input.len()))?;
                    pos += end + 1;
                }
                b'0'..=b'9' => {
                    let colon = input[pos..].iter().take(21).position(|&c| c == b':');
                    let len = colon.and_then(|c| {
                        std::str::from_utf8(&input[pos..pos + c]).ok()?.parse::<usize>().ok().map(|l| (c, l))
                    });
                    let Some((c, len)) = len else {
                        return Err(Error { offset: pos, kind: ErrorKind::BadLength });
                    };
                    pos = pos
                        .checked_add(c + 1 + len)
                        .filter(|&p| p <= input.len())
                        .ok_or(Error { offset: pos, kind: ErrorKind::LengthPastEnd })?;
                }
                b'l' | b'd' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Error { offset: pos, kind: ErrorKind::TooDeep });
                    }
                    pos += 1;
                    continue;
                }
                other => return Err(Error { offset: pos, kind: ErrorKind::UnexpectedByte(other as char) }),
            }
        }
        if depth == 0 {
            return Ok(count);
        }
    }
}

/// Decodes one value at the start of the buffer and returns it with the offset just past it.
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), Error> {
    let mut p = Parser { buf: input, pos: 0 };
    let v = p.value(0)?;
    Ok((v, p.pos))
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, kind: ErrorKind) -> Result<T, Error> {
        Err(Error { offset: self.pos, kind })
    }

    fn peek(&self) -> Result<u8, Error> {
        match self.buf.get(self.pos) {
            Some(&b) => Ok(b),
            None => self.err(ErrorKind::Eof),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        if depth >= MAX_DEPTH {
            return self.err(ErrorKind::TooDeep);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let v = self.integer(b'e')?;
                Ok(Value::Int(v))
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                let start = self.pos;
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                let mut sorted = true;
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return self.err(ErrorKind::KeyNotString);
                    }
                    let key_pos = self.pos;
                    let key = self.bytes()?;
                    if let Some((last, _)) = entries.last() {
                        if *last == key {
                            return Err(dup(key_pos, key));
                        }
                        sorted &= *last < key;
                    }
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                }
                self.pos += 1;
                if !sorted {
                    // Unsorted keys are accepted as found, but a duplicate is still ambiguous.
                    let mut keys: Vec<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
                    keys.sort_unstable();
                    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                        return Err(dup(start, w[0]));
                    }
                }
                Ok(Value::Dict(Dict { entries, raw: &self.buf[start..self.pos] }))
            }
            other => self.err(ErrorKind::UnexpectedByte(other as char)),
        }
    }

    /// Parses a decimal integer terminated by `end`; the cursor is on its first byte.
    fn integer(&mut self, end: u8) -> Result<i64, Error> {
        let start = self.pos;
        // A sign and 19 digits cover i64: look no further than that for the terminator.
        let rest = &self.buf[start..self.buf.len().min(start + 21)];
        let Some(len) = rest.iter().position(|&b| b == end) else {
            // Point at the first byte that cannot belong to an integer, or the end.
            let bad = rest.iter().position(|b| !(b.is_ascii_digit() || *b == b'-'));
            if bad.is_none() && rest.len() == 21 {
                return Err(Error { offset: start, kind: ErrorKind::IntegerOverflow });
            }
            return match bad {
                Some(i) => Err(Error { offset: start + i, kind: ErrorKind::BadInteger }),
                None => Err(Error { offset: self.buf.len(), kind: ErrorKind::Eof }),
            };
        };
        let digits = &rest[..len];
        let (neg, body) = match digits.split_first() {
            Some((b'-', body)) => (true, body),
            _ => (false, digits),
        };
        let leading_zero = body.len() > 1 && body[0] == b'0';
        let negative_zero = neg && body == b"0";
        let canonical = !body.is_empty() && body.iter().all(u8::is_ascii_digit) && !leading_zero && !negative_zero;
        if !canonical {
            return self.err(ErrorKind::BadInteger);
        }
        let mut v: i64 = 0;
        for &d in body {
            let digit = i64::from(d - b'0');
            v = v
                .checked_mul(10)
                .and_then(|v| if neg { v.checked_sub(digit) } else { v.checked_add(digit) })
                .ok_or(Error { offset: start, kind: ErrorKind::IntegerOverflow })?;
        }
        self.pos = start + len + 1;
        Ok(v)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let start = self.pos;
        let len = self.integer(b':').map_err(|e| match e.kind {
            ErrorKind::Eof => e,
            _ => Error { offset: start, kind: ErrorKind::BadLength },
        })?;
        let len = usize::try_from(len).map_err(|_| Error { offset: start, kind: ErrorKind::BadLength })?;
        if self.buf.len() - self.pos < len {
            return Err(Error { offset: start, kind: ErrorKind::LengthPastEnd });
        }
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }
}

fn dup(offset: usize, key: &[u8]) -> Error {
    Error { offset, kind: ErrorKind::DuplicateKey(String::from_utf8_lossy(key).into_owned()) }
}

/// Writes bencode into a buffer. Dictionary keys must be written in sorted order for canonical
/// output; [`Encoder::value`] sorts them for decoded trees, hand-written callers order them.
#[derive(Default, Debug)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends to an existing buffer.
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Self { buf }
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.buf.push(b'i');
        push_decimal(&mut self.buf, v);
        self.buf.push(b'e');
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        push_decimal(&mut self.buf, v.len() as i64);
        self.buf.push(b':');
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn begin_list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        self
    }
    pub fn begin_dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        self
    }
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        self
    }
    /// Appends bytes that are already bencoded (for example a raw `info` dictionary).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn value(&mut self, v: &Value<'_>) -> &mut Self {
        match v {
            Value::Int(i) => self.int(*i),
            Value::Bytes(b) => self.bytes(b),
            Value::List(l) => {
                self.begin_list();
                for x in l {
                    self.value(x);
                }
                self.end()
            }
            Value::Dict(d) => {
                let mut entries: Vec<_> = d.entries.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                self.begin_dict();
                for (k, x) in entries {
                    self.bytes(k);
                    self.value(x);
                }
                self.end()
            }
        }
    }
}

fn push_decimal(buf: &mut Vec<u8>, v: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        buf.push(b'-');
    }
    buf.extend_from_slice(&tmp[i..]);
}

impl fmt::Display for Value<'_> {
    /// A short human-readable rendering (strings shown as text when printable), for debugging.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) if !s.chars().any(char::is_control) => write!(f, "{s:?}"),
                _ => write!(f, "<{} bytes>", b.len()),
            },
            Value::List(l) => {
                f.write_str("[")?;
                for (i, x) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Value::Dict(d) => {
                f.write_str("{")?;
                for (i, (k, x)) in d.entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {x}", String::from_utf8_lossy(k))?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests;
