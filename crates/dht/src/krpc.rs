//! KRPC, the DHT's bencoded messages over UDP (BEP 5), with the extensions this crate speaks:
//! `want`/`nodes6` (BEP 32), `sample_infohashes` (BEP 51), scrape bloom filters (BEP 33), the
//! `ip` field (BEP 42) and read-only nodes (BEP 43).
//!
//! [`Message::decode`] turns a datagram into a [`Message`] or a [`DecodeError`] that says what
//! is wrong and, when the datagram was a query with a transaction id, which error to answer with
//! ([`DecodeError::reply`]). [`Message::encode`] writes canonical bencode (sorted keys).
//! Responses carry no method name in KRPC, so a [`Response`] is every field a response may have.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bitswarm_bencode::{Dict, Encoder, Value};

use crate::bloom::Bloom;
use crate::id::{InfoHash, NodeId};

/// Datagrams longer than this are refused unread (a KRPC message fits in one ~1500-byte packet;
/// the margin is for jumbo frames and generous peers).
pub const MAX_PACKET: usize = 8192;
/// Bencode values in one message at most, which bounds the memory a hostile datagram costs.
const MAX_VALUES: usize = 1024;
/// Transaction ids longer than this are refused (everyone uses 2–4 bytes).
const MAX_TID: usize = 32;
/// Tokens longer than this are refused (libtorrent sends 4 bytes, others up to 20).
pub const MAX_TOKEN: usize = 64;

/// KRPC error codes (BEP 5).
pub mod code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    /// Malformed packet, invalid arguments or a bad token.
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `t`: chosen by the querying node, echoed in the answer.
    pub transaction_id: Vec<u8>,
    /// `v`: the sender's client and version, if it says.
    pub version: Option<Vec<u8>>,
    /// `ro` (BEP 43): the sender of a query does not answer queries; keep it out of routing
    /// tables.
    pub read_only: bool,
    /// `ip` (BEP 42): in a response, the address the responder saw the query come from.
    pub ip: Option<SocketAddr>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query(Query),
    Response(Response),
    /// `e`: a code from [`code`] and a message.
    Error {
        code: i64,
        message: String,
    },
}

/// A query: the sender's id, what node families it wants back, and the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: NodeId,
    /// `want` (BEP 32); both false means absent: answer with the family the query came over.
    pub want: Want,
    pub method: Method,
}

/// The `want` list of BEP 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    pub n4: bool,
    pub n6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Ping,
    FindNode {
        target: NodeId,
    },
    /// `noseed` and `scrape` are BEP 33's: leave seeds out of `values`; add bloom filters.
    GetPeers {
        info_hash: InfoHash,
        noseed: bool,
        scrape: bool,
    },
    /// With `implied_port` the peer's port is the UDP source port, not `port` (for peers
    /// behind NAT, and uTP). `seed` is BEP 33's.
    AnnouncePeer {
        info_hash: InfoHash,
        port: u16,
        implied_port: bool,
        token: Vec<u8>,
        seed: bool,
    },
    /// BEP 51.
    SampleInfohashes {
        target: NodeId,
    },
}

impl Method {
    /// The method's name on the wire (`q`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Ping => "ping",
            Method::FindNode { .. } => "find_node",
            Method::GetPeers { .. } => "get_peers",
            Method::AnnouncePeer { .. } => "announce_peer",
            Method::SampleInfohashes { .. } => "sample_infohashes",
        }
    }
}

/// A node's id and address: "compact node info", 26 bytes for IPv4 and 38 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// The fields of a response. Which are present depends on the query answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: NodeId,
    /// `nodes` and `nodes6` together: IPv4 entries are encoded in `nodes`, IPv6 in `nodes6`.
    /// Decoding lists those of `nodes` first.
    pub nodes: Vec<NodeInfo>,
    /// `values`: peers (compact, 6 or 18 bytes each).
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
    /// BEP 51.
    pub samples: Option<Vec<InfoHash>>,
    /// BEP 51: seconds before the same node should be sampled again.
    pub interval: Option<u32>,
    /// BEP 51: how many info-hashes the node stores.
    pub num: Option<u32>,
    /// BEP 33 `BFsd`.
    pub bf_seeds: Option<Box<Bloom>>,
    /// BEP 33 `BFpe`.
    pub bf_peers: Option<Box<Bloom>>,
}

impl Response {
    /// A response with only the responder's id (the answer to `ping` and `announce_peer`).
    pub fn new(id: NodeId) -> Self {
        Response {
            id,
            nodes: Vec::new(),
            values: Vec::new(),
            token: None,
            samples: None,
            interval: None,
            num: None,
            bf_seeds: None,
            bf_peers: None,
        }
    }
}

/// Why a datagram is not a KRPC message we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("datagram of {0} bytes is longer than {MAX_PACKET}")]
    TooLong(usize),
    #[error("not bencode: {0}")]
    Bencode(#[from] bitswarm_bencode::Error),
    #[error("the message is a {0}, not a dictionary")]
    NotADictionary(&'static str),
    #[error("missing key `{0}`")]
    Missing(&'static str),
    #[error("`{key}` is a {found}, expected a {expected}")]
    WrongType { key: &'static str, expected: &'static str, found: &'static str },
    #[error("`{key}` is {len} bytes long, expected {expected}")]
    BadLength { key: &'static str, len: usize, expected: &'static str },
    #[error("`{key}` is out of range: {value}")]
    OutOfRange { key: &'static str, value: i64 },
    #[error("unknown message type `y` = {0:?}")]
    UnknownType(String),
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
}

/// A datagram that did not decode, with what is known of it so that a query can be answered
/// with a KRPC error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The transaction id, if the datagram had a readable one.
    pub transaction_id: Option<Vec<u8>>,
    /// Whether the datagram said it was a query (`y` = `q`).
    pub is_query: bool,
    pub kind: ErrorKind,
}

impl DecodeError {
    /// The error to send back, if any: only a query with a transaction id gets one, 204 for an
    /// unknown method and 203 for anything else (BEP 5).
    pub fn reply(&self) -> Option<Message> {
        let tid = self.transaction_id.clone()?;
        if !self.is_query {
            return None;
        }
        let code = match self.kind {
            ErrorKind::UnknownMethod(_) => code::METHOD_UNKNOWN,
            _ => code::PROTOCOL,
        };
        Some(Message::error(tid, code, self.kind.to_string()))
    }
}

type R<T> = Result<T, ErrorKind>;

fn get<'v, 'a>(d: &'v Dict<'a>, key: &'static str) -> R<&'v Value<'a>> {
    d.get(key.as_bytes()).ok_or(ErrorKind::Missing(key))
}

fn bytes<'a>(v: &Value<'a>, key: &'static str) -> R<&'a [u8]> {
    v.as_bytes().ok_or(ErrorKind::WrongType { key, expected: "string", found: v.type_name() })
}

fn int(v: &Value<'_>, key: &'static str) -> R<i64> {
    v.as_int().ok_or(ErrorKind::WrongType { key, expected: "integer", found: v.type_name() })
}

fn opt_flag(d: &Dict<'_>, key: &'static str) -> R<bool> {
    match d.get(key.as_bytes()) {
        None => Ok(false),
        Some(v) => Ok(int(v, key)? != 0),
    }
}

fn id20(v: &Value<'_>, key: &'static str) -> R<[u8; 20]> {
    let b = bytes(v, key)?;
    b.try_into().map_err(|_| ErrorKind::BadLength { key, len: b.len(), expected: "20" })
}

fn dict<'v, 'a>(v: &'v Value<'a>, key: &'static str) -> R<&'v Dict<'a>> {
    v.as_dict().ok_or(ErrorKind::WrongType { key, expected: "dictionary", found: v.type_name() })
}

/// Decodes a compact address: 6 bytes (IPv4 and port) or 18 (IPv6 and port), big-endian.
pub fn decode_compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[4], b[5]])))
        }
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), u16::from_be_bytes([b[16], b[17]])))
        }
        _ => None,
    }
}

/// Appends the compact form of an address (6 or 18 bytes).
pub fn encode_compact_addr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Decodes a run of compact node infos of one family (26 or 38 bytes each).
pub fn decode_compact_nodes(b: &[u8], v6: bool, out: &mut Vec<NodeInfo>) -> Result<(), usize> {
    let size = if v6 { 38 } else { 26 };
    if !b.len().is_multiple_of(size) {
        return Err(b.len());
    }
    for c in b.chunks_exact(size) {
        let mut id = [0u8; 20];
        id.copy_from_slice(&c[..20]);
        // The length was checked: the address always decodes.
        if let Some(addr) = decode_compact_addr(&c[20..]) {
            out.push(NodeInfo { id: NodeId(id), addr });
        }
    }
    Ok(())
}

/// Appends the compact node infos of `nodes` whose family is IPv6 (`v6`) or IPv4.
pub fn encode_compact_nodes(nodes: &[NodeInfo], v6: bool, out: &mut Vec<u8>) {
    for n in nodes.iter().filter(|n| n.addr.is_ipv6() == v6) {
        out.extend_from_slice(&n.id.0);
        encode_compact_addr(&n.addr, out);
    }
}

impl Message {
    /// A query from `id`.
    pub fn query(transaction_id: Vec<u8>, id: NodeId, method: Method) -> Self {
        Message {
            transaction_id,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Query(Query { id, want: Want::default(), method }),
        }
    }

    /// A response.
    pub fn response(transaction_id: Vec<u8>, r: Response) -> Self {
        Message { transaction_id, version: None, read_only: false, ip: None, body: Body::Response(r) }
    }

    /// An error (`y` = `e`).
    pub fn error(transaction_id: Vec<u8>, code: i64, message: impl Into<String>) -> Self {
        Message {
            transaction_id,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Error { code, message: message.into() },
        }
    }

    /// Parses one datagram. Never panics; bounded in time and memory by the datagram's size.
    pub fn decode(packet: &[u8]) -> Result<Message, DecodeError> {
        let mut err = DecodeError { transaction_id: None, is_query: false, kind: ErrorKind::Missing("t") };
        if packet.len() > MAX_PACKET {
            err.kind = ErrorKind::TooLong(packet.len());
            return Err(err);
        }
        let v = match bitswarm_bencode::decode_limited(packet, MAX_VALUES) {
            Ok(v) => v,
            Err(e) => {
                err.kind = ErrorKind::Bencode(e);
                return Err(err);
            }
        };
        let Some(d) = v.as_dict() else {
            err.kind = ErrorKind::NotADictionary(v.type_name());
            return Err(err);
        };
        // The transaction id first, so that later errors can be answered.
        match d.get(b"t").map(|t| bytes(t, "t")) {
            Some(Ok(t)) if t.len() <= MAX_TID => err.transaction_id = Some(t.to_vec()),
            Some(Ok(t)) => {
                err.kind = ErrorKind::BadLength { key: "t", len: t.len(), expected: "at most 32" };
                return Err(err);
            }
            Some(Err(e)) => {
                err.kind = e;
                return Err(err);
            }
            None => return Err(err),
        }
        err.is_query = d.get(b"y").and_then(|y| y.as_bytes()) == Some(b"q");
        match Self::decode_dict(d, err.transaction_id.clone().unwrap_or_default()) {
            Ok(m) => Ok(m),
            Err(kind) => {
                err.kind = kind;
                Err(err)
            }
        }
    }

    fn decode_dict(d: &Dict<'_>, transaction_id: Vec<u8>) -> R<Message> {
        let version = d.get(b"v").map(|v| bytes(v, "v").map(<[u8]>::to_vec)).transpose()?;
        let read_only = opt_flag(d, "ro")?;
        let ip = match d.get(b"ip") {
            None => None,
            Some(v) => {
                let b = bytes(v, "ip")?;
                Some(decode_compact_addr(b).ok_or(ErrorKind::BadLength {
                    key: "ip",
                    len: b.len(),
                    expected: "6 or 18",
                })?)
            }
        };
        let y = bytes(get(d, "y")?, "y")?;
        let body = match y {
            b"q" => Body::Query(decode_query(d)?),
            b"r" => Body::Response(decode_response(dict(get(d, "r")?, "r")?)?),
            b"e" => {
                let e = get(d, "e")?;
                let l = e.as_list().ok_or(ErrorKind::WrongType { key: "e", expected: "list", found: e.type_name() })?;
                let code = int(l.first().ok_or(ErrorKind::Missing("e[0]"))?, "e[0]")?;
                let message = match l.get(1) {
                    Some(m) => String::from_utf8_lossy(bytes(m, "e[1]")?).into_owned(),
                    None => String::new(),
                };
                Body::Error { code, message }
            }
            other => return Err(ErrorKind::UnknownType(String::from_utf8_lossy(other).into_owned())),
        };
        Ok(Message { transaction_id, version, read_only, ip, body })
    }

    /// Canonical bencode of the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::with_buffer(Vec::with_capacity(256));
        e.begin_dict();
        match &self.body {
            Body::Query(q) => {
                e.str("a");
                encode_args(&mut e, q);
            }
            Body::Error { code, message } => {
                e.str("e").begin_list().int(*code).str(message).end();
            }
            Body::Response(_) => {}
        }
        if let Some(ip) = &self.ip {
            let mut b = Vec::with_capacity(18);
            encode_compact_addr(ip, &mut b);
            e.str("ip").bytes(&b);
        }
        if let Body::Query(q) = &self.body {
            e.str("q").str(q.method.name());
        }
        if let Body::Response(r) = &self.body {
            e.str("r");
            encode_response(&mut e, r);
        }
        if self.read_only {
            e.str("ro").int(1);
        }
        e.str("t").bytes(&self.transaction_id);
        if let Some(v) = &self.version {
            e.str("v").bytes(v);
        }
        let y = match self.body {
            Body::Query(_) => "q",
            Body::Response(_) => "r",
            Body::Error { .. } => "e",
        };
        e.str("y").str(y);
        e.end();
        e.finish()
    }
}

fn decode_query(d: &Dict<'_>) -> R<Query> {
    let q = bytes(get(d, "q")?, "q")?;
    let name = match q {
        b"ping" | b"find_node" | b"get_peers" | b"announce_peer" | b"sample_infohashes" => q,
        other => return Err(ErrorKind::UnknownMethod(String::from_utf8_lossy(other).into_owned())),
    };
    let a = dict(get(d, "a")?, "a")?;
    let id = NodeId(id20(get(a, "id")?, "id")?);
    let mut want = Want::default();
    if let Some(w) = a.get(b"want") {
        let l = w.as_list().ok_or(ErrorKind::WrongType { key: "want", expected: "list", found: w.type_name() })?;
        for x in l {
            // Unknown families are ignored, as BEP 32 asks.
            match bytes(x, "want")? {
                b"n4" => want.n4 = true,
                b"n6" => want.n6 = true,
                _ => {}
            }
        }
    }
    let method = match name {
        b"ping" => Method::Ping,
        b"find_node" => Method::FindNode { target: NodeId(id20(get(a, "target")?, "target")?) },
        b"sample_infohashes" => Method::SampleInfohashes { target: NodeId(id20(get(a, "target")?, "target")?) },
        b"get_peers" => Method::GetPeers {
            info_hash: InfoHash(id20(get(a, "info_hash")?, "info_hash")?),
            noseed: opt_flag(a, "noseed")?,
            scrape: opt_flag(a, "scrape")?,
        },
        _ => {
            let implied_port = opt_flag(a, "implied_port")?;
            // With implied_port the port argument is ignored, and some clients send 0 or leave
            // it out.
            let port = match (a.get(b"port"), implied_port) {
                (None, true) => 0,
                (p, _) => {
                    let p = int(p.ok_or(ErrorKind::Missing("port"))?, "port")?;
                    match u16::try_from(p) {
                        Ok(p) if p != 0 || implied_port => p,
                        _ => return Err(ErrorKind::OutOfRange { key: "port", value: p }),
                    }
                }
            };
            let token = bytes(get(a, "token")?, "token")?;
            if token.len() > MAX_TOKEN {
                return Err(ErrorKind::BadLength { key: "token", len: token.len(), expected: "at most 64" });
            }
            Method::AnnouncePeer {
                info_hash: InfoHash(id20(get(a, "info_hash")?, "info_hash")?),
                port,
                implied_port,
                token: token.to_vec(),
                seed: opt_flag(a, "seed")?,
            }
        }
    };
    Ok(Query { id, want, method })
}

fn encode_args(e: &mut Encoder, q: &Query) {
    e.begin_dict();
    e.str("id").bytes(&q.id.0);
    match &q.method {
        Method::Ping => {}
        Method::FindNode { target } | Method::SampleInfohashes { target } => {
            e.str("target").bytes(&target.0);
        }
        Method::GetPeers { info_hash, noseed, scrape } => {
            e.str("info_hash").bytes(&info_hash.0);
            if *noseed {
                e.str("noseed").int(1);
            }
            if *scrape {
                e.str("scrape").int(1);
            }
        }
        Method::AnnouncePeer { info_hash, port, implied_port, token, seed } => {
            if *implied_port {
                e.str("implied_port").int(1);
            }
            e.str("info_hash").bytes(&info_hash.0);
            e.str("port").int(*port as i64);
            if *seed {
                e.str("seed").int(1);
            }
            e.str("token").bytes(token);
        }
    }
    if q.want.n4 || q.want.n6 {
        e.str("want").begin_list();
        if q.want.n4 {
            e.str("n4");
        }
        if q.want.n6 {
            e.str("n6");
        }
        e.end();
    }
    e.end();
}

fn decode_response(r: &Dict<'_>) -> R<Response> {
    let mut out = Response::new(NodeId(id20(get(r, "id")?, "id")?));
    for (key, v6) in [("nodes", false), ("nodes6", true)] {
        if let Some(v) = r.get(key.as_bytes()) {
            decode_compact_nodes(bytes(v, key)?, v6, &mut out.nodes).map_err(|len| ErrorKind::BadLength {
                key,
                len,
                expected: if v6 { "a multiple of 38" } else { "a multiple of 26" },
            })?;
        }
    }
    if let Some(v) = r.get(b"values") {
        let l = v.as_list().ok_or(ErrorKind::WrongType { key: "values", expected: "list", found: v.type_name() })?;
        for x in l {
            let b = bytes(x, "values")?;
            let addr = decode_compact_addr(b).ok_or(ErrorKind::BadLength {
                key: "values",
                len: b.len(),
                expected: "6 or 18",
            })?;
            out.values.push(addr);
        }
    }
    if let Some(v) = r.get(b"token") {
        let t = bytes(v, "token")?;
        if t.len() > MAX_TOKEN {
            return Err(ErrorKind::BadLength { key: "token", len: t.len(), expected: "at most 64" });
        }
        out.token = Some(t.to_vec());
    }
    if let Some(v) = r.get(b"samples") {
        let b = bytes(v, "samples")?;
        if !b.len().is_multiple_of(20) {
            return Err(ErrorKind::BadLength { key: "samples", len: b.len(), expected: "a multiple of 20" });
        }
        out.samples = Some(
            b.chunks_exact(20)
                .map(|c| {
                    let mut h = [0u8; 20];
                    h.copy_from_slice(c);
                    InfoHash(h)
                })
                .collect(),
        );
    }
    for (key, slot) in [("interval", &mut out.interval), ("num", &mut out.num)] {
        if let Some(v) = r.get(key.as_bytes()) {
            let i = int(v, key)?;
            *slot = Some(u32::try_from(i).map_err(|_| ErrorKind::OutOfRange { key, value: i })?);
        }
    }
    for (key, slot) in [("BFsd", &mut out.bf_seeds), ("BFpe", &mut out.bf_peers)] {
        if let Some(v) = r.get(key.as_bytes()) {
            let b = bytes(v, key)?;
            let arr: [u8; 256] =
                b.try_into().map_err(|_| ErrorKind::BadLength { key, len: b.len(), expected: "256" })?;
            *slot = Some(Box::new(Bloom(arr)));
        }
    }
    Ok(out)
}

fn encode_response(e: &mut Encoder, r: &Response) {
    e.begin_dict();
    if let Some(b) = &r.bf_peers {
        e.str("BFpe").bytes(&b.0);
    }
    if let Some(b) = &r.bf_seeds {
        e.str("BFsd").bytes(&b.0);
    }
    e.str("id").bytes(&r.id.0);
    if let Some(i) = r.interval {
        e.str("interval").int(i as i64);
    }
    let mut buf = Vec::new();
    for (key, v6) in [("nodes", false), ("nodes6", true)] {
        if r.nodes.iter().any(|n| n.addr.is_ipv6() == v6) {
            buf.clear();
            encode_compact_nodes(&r.nodes, v6, &mut buf);
            e.str(key).bytes(&buf);
        }
    }
    if let Some(n) = r.num {
        e.str("num").int(n as i64);
    }
    if let Some(s) = &r.samples {
        buf.clear();
        for h in s {
            buf.extend_from_slice(&h.0);
        }
        e.str("samples").bytes(&buf);
    }
    if let Some(t) = &r.token {
        e.str("token").bytes(t);
    }
    if !r.values.is_empty() {
        e.str("values").begin_list();
        for v in &r.values {
            buf.clear();
            encode_compact_addr(v, &mut buf);
            e.bytes(&buf);
        }
        e.end();
    }
    e.end();
}

#[cfg(test)]
mod tests;
