//! BEP 9 `ut_metadata` messages: how peers hand each other a torrent's info dictionary (for
//! magnet links), 16 KiB at a time. A message is a bencoded dictionary, followed by the piece's
//! bytes for `data`.

use bitswarm_bencode::{Encoder, Value};

use crate::WireError;

/// The name of the extension in the BEP 10 handshake.
pub const UT_METADATA: &str = "ut_metadata";
/// Bytes in every metadata piece but the last.
pub const METADATA_PIECE: usize = 16 * 1024;
/// The largest info dictionary accepted from a peer (BEP 9 sets no limit; 64 MiB is far more
/// than any real torrent's, whose pieces' hashes are 20 bytes each).
pub const MAX_METADATA: u32 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMessage<'a> {
    Request { piece: u32 },
    Data { piece: u32, total_size: u32, data: &'a [u8] },
    Reject { piece: u32 },
}

impl<'a> MetadataMessage<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        match *self {
            MetadataMessage::Request { piece } => {
                e.str("msg_type").int(0).str("piece").int(i64::from(piece));
            }
            MetadataMessage::Data { piece, total_size, .. } => {
                e.str("msg_type").int(1).str("piece").int(i64::from(piece));
                e.str("total_size").int(i64::from(total_size));
            }
            MetadataMessage::Reject { piece } => {
                e.str("msg_type").int(2).str("piece").int(i64::from(piece));
            }
        }
        e.end();
        let mut out = e.finish();
        if let MetadataMessage::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Parses a `ut_metadata` payload. Unknown keys are ignored; a missing or out-of-range
    /// `msg_type`, `piece` or `total_size` is an error.
    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let bad = |what: &str| WireError::Extended(format!("ut_metadata: {what}"));
        let (v, used) = bitswarm_bencode::decode_prefix(payload).map_err(|e| bad(&e.to_string()))?;
        let d = v.as_dict().ok_or_else(|| bad("not a dictionary"))?;
        let int = |k: &str| d.get(k.as_bytes()).and_then(Value::as_int).and_then(|x| u32::try_from(x).ok());
        let piece = int("piece").ok_or_else(|| bad("no valid piece number"))?;
        let msg = match int("msg_type") {
            Some(0) => MetadataMessage::Request { piece },
            Some(1) => {
                let total_size = int("total_size").ok_or_else(|| bad("data without a valid total_size"))?;
                MetadataMessage::Data { piece, total_size, data: &payload[used..] }
            }
            Some(2) => MetadataMessage::Reject { piece },
            _ => return Err(bad("unknown msg_type")),
        };
        if !matches!(msg, MetadataMessage::Data { .. }) && used != payload.len() {
            return Err(bad("bytes after a request or reject"));
        }
        Ok(msg)
    }
}

/// The bytes of metadata piece `piece` of `info` (the info dictionary), if there is such a piece.
pub fn metadata_piece(info: &[u8], piece: u32) -> Option<&[u8]> {
    let start = (piece as usize).checked_mul(METADATA_PIECE)?;
    (start < info.len()).then(|| &info[start..info.len().min(start + METADATA_PIECE)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_bep9() {
        let r = MetadataMessage::Request { piece: 0 };
        assert_eq!(r.encode(), b"d8:msg_typei0e5:piecei0ee");
        assert_eq!(MetadataMessage::decode(&r.encode()).unwrap(), r);
        let d = MetadataMessage::Data { piece: 1, total_size: 20000, data: b"xyz" };
        assert_eq!(d.encode(), b"d8:msg_typei1e5:piecei1e10:total_sizei20000eexyz");
        assert_eq!(MetadataMessage::decode(&d.encode()).unwrap(), d);
        let j = MetadataMessage::Reject { piece: 7 };
        assert_eq!(MetadataMessage::decode(&j.encode()).unwrap(), j);
    }

    #[test]
    fn refuses_bad_messages() {
        for bad in [
            &b""[..],
            b"le",
            b"d8:msg_typei0ee",
            b"d8:msg_typei9e5:piecei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"d8:msg_typei0e5:piecei0eejunk",
        ] {
            assert!(MetadataMessage::decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pieces_of_the_info_dictionary() {
        let info = vec![7u8; METADATA_PIECE + 10];
        assert_eq!(metadata_piece(&info, 0).unwrap().len(), METADATA_PIECE);
        assert_eq!(metadata_piece(&info, 1).unwrap().len(), 10);
        assert!(metadata_piece(&info, 2).is_none());
        assert!(metadata_piece(&info, u32::MAX).is_none());
    }
}
