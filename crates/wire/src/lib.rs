//! The BitTorrent peer wire protocol (BEP 3) as a codec without I/O: the handshake, length-prefixed
//! messages, bitfields, the BEP 10 extension handshake, BEP 9 metadata messages ([`metadata`]),
//! BEP 11 peer exchange messages ([`pex`]), BEP 14 Local Service Discovery announces ([`lsd`]) and
//! Message Stream Encryption ([`mse`]).
//!
//! [`decode`] looks at the front of a receive buffer and returns either a complete message
//! (borrowing block data from the buffer), `None` when more bytes are needed, or an error for a
//! peer that breaks the protocol; it never panics and bounds message sizes.

mod bitfield;
mod extended;
pub mod lsd;
pub mod metadata;
pub mod mse;
pub mod pex;

pub use bitfield::Bitfield;
pub use extended::ExtendedHandshake;

/// The protocol string of the handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// The block size everyone requests (larger requests are refused by many clients).
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest block a peer may request from us.
pub const MAX_REQUEST: u32 = 128 * 1024;
/// Message IDs.
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    /// BEP 6, the fast extension.
    pub const SUGGEST: u8 = 13;
    pub const HAVE_ALL: u8 = 14;
    pub const HAVE_NONE: u8 = 15;
    pub const REJECT: u8 = 16;
    pub const ALLOWED_FAST: u8 = 17;
    pub const EXTENDED: u8 = 20;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("handshake: not the BitTorrent protocol")]
    NotBitTorrent,
    #[error("message of {len} bytes is longer than the limit of {max}")]
    TooLong { len: u32, max: u32 },
    #[error("message {id} has a wrong length ({len} bytes)")]
    BadLength { id: u8, len: u32 },
    #[error("bitfield has {got} bytes, expected {want}")]
    BitfieldSize { got: usize, want: usize },
    #[error("bitfield has spare bits set")]
    BitfieldSpareBits,
    #[error("extension handshake: {0}")]
    Extended(String),
}

/// The 68-byte handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Our handshake: the reserved bits advertise the extension protocol (BEP 10) and the fast
    /// extension (BEP 6).
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        Handshake { reserved, info_hash, peer_id }
    }
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }
    /// BEP 5: the sender runs a DHT node (and will send, or welcomes, a PORT message).
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }
    /// Sets (or clears) the DHT bit of our handshake.
    pub fn with_dht(mut self, dht: bool) -> Self {
        if dht {
            self.reserved[7] |= 0x01;
        } else {
            self.reserved[7] &= !0x01;
        }
        self
    }
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0] = 19;
        b[1..20].copy_from_slice(PROTOCOL);
        b[20..28].copy_from_slice(&self.reserved);
        b[28..48].copy_from_slice(&self.info_hash);
        b[48..68].copy_from_slice(&self.peer_id);
        b
    }
    /// The first 48 bytes (up to the info-hash) are enough to decide whether to go on; this
    /// parses all 68.
    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Result<Self, WireError> {
        if b[0] != 19 || &b[1..20] != PROTOCOL {
            return Err(WireError::NotBitTorrent);
        }
        Ok(Handshake {
            reserved: b[20..28].try_into().expect("8"),
            info_hash: b[28..48].try_into().expect("20"),
            peer_id: b[48..68].try_into().expect("20"),
        })
    }
}

/// A block: piece index, offset in the piece, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

/// A message after the handshake. Block data and payloads borrow from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(&'a [u8]),
    Request(BlockRef),
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    Cancel(BlockRef),
    Port(u16),
    /// BEP 6: "you may want this piece".
    Suggest(u32),
    /// BEP 6: in place of a bitfield, every piece or none.
    HaveAll,
    HaveNone,
    /// BEP 6: this request will not be served.
    Reject(BlockRef),
    /// BEP 6: this piece may be requested while choked.
    AllowedFast(u32),
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    /// A message this codec does not know (ignored by the engine, as BEP 3 asks).
    Unknown {
        id: u8,
        payload: &'a [u8],
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

/// The length of the next frame (4-byte prefix plus body) once the prefix is in `buf`.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| be32(buf) as usize + 4)
}

/// Decodes the message at the front of `buf`. `max_len` bounds the body length (use
/// [`max_message_len`] for a torrent). Returns the message and the bytes it used.
pub fn decode(buf: &[u8], max_len: u32) -> Result<Option<(Message<'_>, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be32(buf);
    if len > max_len {
        return Err(WireError::TooLong { len, max: max_len });
    }
    let total = len as usize + 4;
    if buf.len() < total {
        return Ok(None);
    }
    if len == 0 {
        return Ok(Some((Message::KeepAlive, 4)));
    }
    let id = buf[4];
    let body = &buf[5..total];
    let want = |n: usize| if body.len() == n { Ok(()) } else { Err(WireError::BadLength { id, len }) };
    let msg = match id {
        id::CHOKE => want(0).map(|_| Message::Choke)?,
        id::UNCHOKE => want(0).map(|_| Message::Unchoke)?,
        id::INTERESTED => want(0).map(|_| Message::Interested)?,
        id::NOT_INTERESTED => want(0).map(|_| Message::NotInterested)?,
        id::HAVE => want(4).map(|_| Message::Have(be32(body)))?,
        id::BITFIELD => Message::Bitfield(body),
        id::REQUEST | id::CANCEL | id::REJECT => {
            want(12)?;
            let b = BlockRef { index: be32(body), begin: be32(&body[4..]), length: be32(&body[8..]) };
            match id {
                id::REQUEST => Message::Request(b),
                id::CANCEL => Message::Cancel(b),
                _ => Message::Reject(b),
            }
        }
        id::SUGGEST => want(4).map(|_| Message::Suggest(be32(body)))?,
        id::ALLOWED_FAST => want(4).map(|_| Message::AllowedFast(be32(body)))?,
        id::HAVE_ALL => want(0).map(|_| Message::HaveAll)?,
        id::HAVE_NONE => want(0).map(|_| Message::HaveNone)?,
        id::PIECE => {
            if body.len() < 8 {
                return Err(WireError::BadLength { id, len });
            }
            Message::Piece { index: be32(body), begin: be32(&body[4..]), data: &body[8..] }
        }
        id::PORT => want(2).map(|_| Message::Port(u16::from_be_bytes([body[0], body[1]])))?,
        id::EXTENDED => {
            if body.is_empty() {
                return Err(WireError::BadLength { id, len });
            }
            Message::Extended { id: body[0], payload: &body[1..] }
        }
        _ => Message::Unknown { id, payload: body },
    };
    Ok(Some((msg, total)))
}

/// The largest message body a peer of this torrent may send: a block of up to
/// [`MAX_REQUEST`] bytes, or the bitfield, whichever is larger (plus headers).
pub fn max_message_len(piece_count: usize) -> u32 {
    let bitfield = piece_count.div_ceil(8) as u32 + 1;
    bitfield.max(MAX_REQUEST + 9)
}

/// The 13-byte header of a `piece` message carrying `len` bytes.
pub fn piece_header(index: u32, begin: u32, len: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..4].copy_from_slice(&(len + 9).to_be_bytes());
    h[4] = id::PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

/// Appends the encoding of `msg` to `out`.
pub fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    fn header(out: &mut Vec<u8>, len: usize, id: u8) {
        out.extend_from_slice(&(len as u32 + 1).to_be_bytes());
        out.push(id);
    }
    // The messages that carry one piece index, and those that carry one block.
    fn with_index(out: &mut Vec<u8>, id: u8, i: u32) {
        header(out, 4, id);
        out.extend_from_slice(&i.to_be_bytes());
    }
    fn with_block(out: &mut Vec<u8>, id: u8, b: &BlockRef) {
        header(out, 12, id);
        out.extend_from_slice(&b.index.to_be_bytes());
        out.extend_from_slice(&b.begin.to_be_bytes());
        out.extend_from_slice(&b.length.to_be_bytes());
    }
    match msg {
        Message::KeepAlive => out.extend_from_slice(&[0, 0, 0, 0]),
        Message::Choke => header(out, 0, id::CHOKE),
        Message::Unchoke => header(out, 0, id::UNCHOKE),
        Message::Interested => header(out, 0, id::INTERESTED),
        Message::NotInterested => header(out, 0, id::NOT_INTERESTED),
        Message::Have(i) => with_index(out, id::HAVE, *i),
        Message::Suggest(i) => with_index(out, id::SUGGEST, *i),
        Message::AllowedFast(i) => with_index(out, id::ALLOWED_FAST, *i),
        Message::HaveAll => header(out, 0, id::HAVE_ALL),
        Message::HaveNone => header(out, 0, id::HAVE_NONE),
        Message::Bitfield(b) => {
            header(out, b.len(), id::BITFIELD);
            out.extend_from_slice(b);
        }
        Message::Request(b) => with_block(out, id::REQUEST, b),
        Message::Cancel(b) => with_block(out, id::CANCEL, b),
        Message::Reject(b) => with_block(out, id::REJECT, b),
        Message::Piece { index, begin, data } => {
            out.extend_from_slice(&piece_header(*index, *begin, data.len() as u32));
            out.extend_from_slice(data);
        }
        Message::Port(p) => {
            header(out, 2, id::PORT);
            out.extend_from_slice(&p.to_be_bytes());
        }
        Message::Extended { id: ext, payload } => {
            header(out, payload.len() + 1, id::EXTENDED);
            out.push(*ext);
            out.extend_from_slice(payload);
        }
        Message::Unknown { id, payload } => {
            header(out, payload.len(), *id);
            out.extend_from_slice(payload);
        }
    }
}

#[cfg(test)]
mod tests;
