use bitswarm_bencode::{Encoder, Value};

use crate::WireError;

/// The BEP 10 extension handshake (extended message id 0): the fields bitswarm uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// `m`: extension names and the message ids the sender wants them on.
    pub extensions: Vec<(String, u8)>,
    /// `v`: client name and version.
    pub client: Option<String>,
    /// `p`: the sender's listening port.
    pub port: Option<u16>,
    /// `reqq`: how many outstanding requests the sender accepts.
    pub reqq: Option<u32>,
    /// `metadata_size`: bytes in the torrent's info dictionary (BEP 9), when the sender has it.
    pub metadata_size: Option<u32>,
}

impl ExtendedHandshake {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.begin_dict();
        let mut m = self.extensions.clone();
        m.sort();
        e.str("m").begin_dict();
        for (k, v) in &m {
            e.str(k).int(i64::from(*v));
        }
        e.end();
        if let Some(n) = self.metadata_size {
            e.str("metadata_size").int(i64::from(n));
        }
        if let Some(p) = self.port {
            e.str("p").int(i64::from(p));
        }
        if let Some(q) = self.reqq {
            e.str("reqq").int(i64::from(q));
        }
        if let Some(v) = &self.client {
            e.str("v").str(v);
        }
        e.end();
        e.finish()
    }

    /// Parses a peer's handshake, keeping what is understood and ignoring the rest.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let v = bitswarm_bencode::decode(payload).map_err(|e| WireError::Extended(e.to_string()))?;
        let d = v.as_dict().ok_or_else(|| WireError::Extended("not a dictionary".into()))?;
        let mut h = ExtendedHandshake::default();
        if let Some(Value::Dict(m)) = d.get(b"m") {
            for (k, v) in &m.entries {
                if let (Ok(k), Some(id)) = (std::str::from_utf8(k), v.as_int())
                    && let Ok(id) = u8::try_from(id)
                {
                    h.extensions.push((k.to_owned(), id));
                }
            }
        }
        h.client = d.get(b"v").and_then(Value::as_str).map(str::to_owned);
        h.port = d.get(b"p").and_then(Value::as_int).and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0);
        h.reqq = d.get(b"reqq").and_then(Value::as_int).and_then(|q| u32::try_from(q).ok());
        h.metadata_size = d.get(b"metadata_size").and_then(Value::as_int).and_then(|n| u32::try_from(n).ok());
        Ok(h)
    }
}
