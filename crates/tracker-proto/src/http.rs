//! HTTP tracker protocol (BEP 3 announce, BEP 48 scrape, BEP 23 compact peers, BEP 7 IPv6).
//!
//! Tracker side: [`parse_announce`] and [`parse_scrape`] turn a raw query string into typed,
//! validated requests; [`AnnounceResponse::encode`], [`ScrapeResponse::encode`] and
//! [`encode_failure`] write the bencoded replies.
//!
//! Client side: [`announce_query`] / [`announce_url`] and [`scrape_query`] / [`scrape_url`]
//! build the request (raw 20-byte values percent-encoded by hand); [`AnnounceResponse::decode`]
//! and [`ScrapeResponse::decode`] read the replies, compact or dictionary peer lists alike.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bitswarm_bencode::{Encoder, Value, decode};

use crate::{Event, InfoHash, PeerId};

/// More `info_hash` values than this in one scrape are refused (a URL that long is abuse).
pub const MAX_SCRAPE_HASHES: usize = 256;

/// An announce as a client sends it and the tracker reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The port the peer listens on, 1–65535.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing; 0 means the peer is a seeder.
    pub left: u64,
    pub event: Event,
    /// `compact=1` (BEP 23). Absent means compact: every current client asks for it.
    pub compact: bool,
    /// `no_peer_id=1`: the dictionary form without `peer id`.
    pub no_peer_id: bool,
    /// `numwant`; `None` when absent (the tracker's default applies).
    pub numwant: Option<u32>,
    /// `ip`: the address the client claims. Trackers ignore it unless configured otherwise.
    /// A value that is not an IP address (a host name) is dropped.
    pub ip: Option<IpAddr>,
    /// `key`: an opaque value some clients send to prove identity across address changes.
    pub key: Option<Vec<u8>>,
    /// `trackerid` from a previous reply.
    pub tracker_id: Option<Vec<u8>>,
}

impl AnnounceRequest {
    /// A request with the required fields and everything else at its default (compact, no event).
    pub fn new(info_hash: InfoHash, peer_id: PeerId, port: u16, left: u64) -> Self {
        AnnounceRequest {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event: Event::None,
            compact: true,
            no_peer_id: false,
            numwant: None,
            ip: None,
            key: None,
            tracker_id: None,
        }
    }
}

/// A scrape: the info-hashes asked about. Empty means a full scrape (every swarm).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScrapeRequest {
    pub info_hashes: Vec<InfoHash>,
}

/// Why a query string was refused. The text is what the tracker sends back as `failure reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("missing parameter: {0}")]
    Missing(&'static str),
    #[error("{param} must be exactly 20 bytes, got {len}")]
    BadLength { param: &'static str, len: usize },
    #[error("{0} must be a non-negative whole number")]
    BadNumber(&'static str),
    #[error("port must be between 1 and 65535")]
    BadPort,
    #[error("unknown event {0:?} (expected started, completed, stopped or empty)")]
    BadEvent(String),
    #[error("malformed percent-encoding in {0}")]
    BadEscape(String),
    #[error("{0} given more than once")]
    Duplicate(&'static str),
    #[error("too many info_hash values in one scrape (at most {MAX_SCRAPE_HASHES})")]
    TooManyHashes,
}

/// Percent-decodes `s` (`+` is kept as is: raw binary values use it literally).
pub fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            let hi = hex_val(*s.get(i + 1)?)?;
            let lo = hex_val(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Decodes a percent-encoded value that must come out as exactly 20 bytes, without allocating.
fn decode20(param: &'static str, s: &[u8]) -> Result<[u8; 20], QueryError> {
    let mut out = [0u8; 20];
    let mut n = 0usize;
    let mut i = 0;
    while i < s.len() {
        let b = if s[i] == b'%' {
            let (Some(hi), Some(lo)) = (s.get(i + 1).and_then(|&c| hex_val(c)), s.get(i + 2).and_then(|&c| hex_val(c)))
            else {
                return Err(QueryError::BadEscape(param.to_owned()));
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            s[i - 1]
        };
        if n < 20 {
            out[n] = b;
        }
        n += 1;
    }
    if n != 20 {
        return Err(QueryError::BadLength { param, len: n });
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_u64(param: &'static str, s: &[u8]) -> Result<u64, QueryError> {
    // Numeric fields never need escapes, but a client may still encode a digit; decode first.
    let owned;
    let s = if s.contains(&b'%') {
        owned = percent_decode(s).ok_or_else(|| QueryError::BadEscape(param.to_owned()))?;
        &owned[..]
    } else {
        s
    };
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return Err(QueryError::BadNumber(param));
    }
    let mut v: u64 = 0;
    for &d in s {
        v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))).ok_or(QueryError::BadNumber(param))?;
    }
    Ok(v)
}

fn set_once(slot: &mut Option<[u8; 20]>, param: &'static str, v: &[u8]) -> Result<(), QueryError> {
    match slot.replace(decode20(param, v)?) {
        Some(_) => Err(QueryError::Duplicate(param)),
        None => Ok(()),
    }
}

fn parse_flag(s: &[u8]) -> bool {
    !(s.is_empty() || s == b"0")
}

/// The `key=value` pairs of a query string, raw (still percent-encoded). A leading `?` is skipped.
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let query = query.strip_prefix(b"?").unwrap_or(query);
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &p[p.len()..]),
    })
}

/// Parses an announce query string (the part after `?`). Unknown parameters are ignored;
/// `info_hash`, `peer_id`, `port` and `left` are required, `uploaded` and `downloaded` default
/// to 0.
pub fn parse_announce(query: &[u8]) -> Result<AnnounceRequest, QueryError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut left = None;
    let mut req = AnnounceRequest::new(InfoHash([0; 20]), PeerId([0; 20]), 1, 0);
    for (k, v) in query_pairs(query) {
        match k {
            b"info_hash" => set_once(&mut info_hash, "info_hash", v)?,
            b"peer_id" => set_once(&mut peer_id, "peer_id", v)?,
            b"port" => {
                let p = parse_u64("port", v)?;
                if !(1..=65535).contains(&p) {
                    return Err(QueryError::BadPort);
                }
                port = Some(p as u16);
            }
            b"uploaded" => req.uploaded = parse_u64("uploaded", v)?,
            b"downloaded" => req.downloaded = parse_u64("downloaded", v)?,
            b"left" => left = Some(parse_u64("left", v)?),
            b"event" => {
                req.event = match v {
                    b"started" => Event::Started,
                    b"completed" => Event::Completed,
                    b"stopped" => Event::Stopped,
                    // "empty" is the literal some old clients send for a regular announce;
                    // "paused" (BEP 21) is a regular announce as far as the swarm is concerned.
                    b"" | b"empty" | b"paused" => Event::None,
                    other => {
                        let shown = String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned();
                        return Err(QueryError::BadEvent(shown));
                    }
                }
            }
            b"compact" => req.compact = parse_flag(v),
            b"no_peer_id" => req.no_peer_id = parse_flag(v),
            b"numwant" | b"num_want" => {
                req.numwant = Some(parse_u64("numwant", v)?.min(u64::from(u32::MAX)) as u32);
            }
            b"ip" => {
                req.ip = percent_decode(v)
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.trim_matches(|c| c == '[' || c == ']').parse().ok());
            }
            b"key" => req.key = Some(percent_decode(v).ok_or_else(|| QueryError::BadEscape("key".into()))?),
            b"trackerid" => {
                req.tracker_id = Some(percent_decode(v).ok_or_else(|| QueryError::BadEscape("trackerid".into()))?)
            }
            _ => {}
        }
    }
    req.info_hash = InfoHash(info_hash.ok_or(QueryError::Missing("info_hash"))?);
    req.peer_id = PeerId(peer_id.ok_or(QueryError::Missing("peer_id"))?);
    req.port = port.ok_or(QueryError::Missing("port"))?;
    req.left = left.ok_or(QueryError::Missing("left"))?;
    Ok(req)
}

/// Parses a scrape query string: any number of `info_hash` (none: a full scrape).
pub fn parse_scrape(query: &[u8]) -> Result<ScrapeRequest, QueryError> {
    let mut info_hashes = Vec::new();
    for (k, v) in query_pairs(query) {
        if k == b"info_hash" {
            if info_hashes.len() == MAX_SCRAPE_HASHES {
                return Err(QueryError::TooManyHashes);
            }
            info_hashes.push(InfoHash(decode20("info_hash", v)?));
        }
    }
    Ok(ScrapeRequest { info_hashes })
}

/// Appends `bytes` percent-encoded: RFC 3986 unreserved characters as they are, every other
/// byte as `%XX`.
pub fn percent_encode_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The query string (without `?`) of an announce.
pub fn announce_query(req: &AnnounceRequest) -> String {
    let mut q = String::with_capacity(200);
    q.push_str("info_hash=");
    percent_encode_into(&mut q, &req.info_hash.0);
    q.push_str("&peer_id=");
    percent_encode_into(&mut q, &req.peer_id.0);
    let _ = write!(
        q,
        "&port={}&uploaded={}&downloaded={}&left={}&compact={}",
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        u8::from(req.compact)
    );
    if req.no_peer_id {
        q.push_str("&no_peer_id=1");
    }
    if let Some(e) = req.event.as_str() {
        q.push_str("&event=");
        q.push_str(e);
    }
    if let Some(n) = req.numwant {
        let _ = write!(q, "&numwant={n}");
    }
    if let Some(ip) = req.ip {
        q.push_str("&ip=");
        percent_encode_into(&mut q, ip.to_string().as_bytes());
    }
    if let Some(k) = &req.key {
        q.push_str("&key=");
        percent_encode_into(&mut q, k);
    }
    if let Some(t) = &req.tracker_id {
        q.push_str("&trackerid=");
        percent_encode_into(&mut q, t);
    }
    q
}

/// The query string (without `?`) of a scrape for `hashes` (empty: a full scrape).
pub fn scrape_query(hashes: &[InfoHash]) -> String {
    let mut q = String::with_capacity(hashes.len() * 72);
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            q.push('&');
        }
        q.push_str("info_hash=");
        percent_encode_into(&mut q, &h.0);
    }
    q
}

fn join_query(base: &str, query: &str) -> String {
    if query.is_empty() {
        return base.to_owned();
    }
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    format!("{base}{sep}{query}")
}

/// The full URL of an announce to the tracker at `announce` (which may carry a query already,
/// such as a passkey).
pub fn announce_url(announce: &str, req: &AnnounceRequest) -> String {
    join_query(announce, &announce_query(req))
}

/// The scrape URL belonging to an announce URL, by the BEP 48 convention: the last path
/// segment must start with `announce`, which becomes `scrape`. `None` if the tracker has no
/// scrape URL by that rule.
pub fn scrape_url_for(announce: &str) -> Option<String> {
    let (path, query) = match announce.find('?') {
        Some(i) => (&announce[..i], &announce[i..]),
        None => (announce, ""),
    };
    let slash = path.rfind('/')?;
    let last = &path[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    Some(format!("{}scrape{rest}{query}", &path[..slash + 1]))
}

/// The full scrape URL for `hashes`, given the tracker's announce URL (BEP 48 convention).
pub fn scrape_url(announce: &str, hashes: &[InfoHash]) -> Option<String> {
    Some(join_query(&scrape_url_for(announce)?, &scrape_query(hashes)))
}

/// A peer in an announce reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Known only from the dictionary form with peer ids.
    pub peer_id: Option<PeerId>,
}

/// How a reply lists peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerForm {
    /// BEP 23: IPv4 peers as 6-byte strings in `peers`, IPv6 peers as 18-byte strings in
    /// `peers6` (BEP 7).
    Compact,
    /// BEP 3: a list of `{ip, peer id, port}` dictionaries (both families in `peers`).
    Dictionary { peer_id: bool },
}

impl PeerForm {
    /// The form a request asks for.
    pub fn of(req: &AnnounceRequest) -> PeerForm {
        if req.compact { PeerForm::Compact } else { PeerForm::Dictionary { peer_id: !req.no_peer_id } }
    }
}

/// A successful announce reply.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds the client should wait before announcing again.
    pub interval: u32,
    pub min_interval: Option<u32>,
    /// Seeders in the swarm.
    pub complete: u32,
    /// Leechers in the swarm.
    pub incomplete: u32,
    /// Completed downloads the tracker has seen for the swarm.
    pub downloaded: Option<u32>,
    pub peers: Vec<Peer>,
    pub warning_message: Option<String>,
    pub tracker_id: Option<Vec<u8>>,
}

/// What a client may get back instead of a usable announce or scrape reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The tracker refused the request and said why.
    #[error("tracker said: {0}")]
    Failure(String),
    #[error("tracker reply is not valid bencode: {0}")]
    Bencode(#[from] bitswarm_bencode::Error),
    #[error("tracker reply is malformed: {0}")]
    Malformed(&'static str),
}

/// A bencoded `failure reason` reply.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.begin_dict().str("failure reason").str(reason).end();
    e.finish()
}

fn compact_v4(out: &mut Vec<u8>, a: &SocketAddrV4) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn compact_v6(out: &mut Vec<u8>, a: &SocketAddrV6) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn int(v: u32) -> i64 {
    i64::from(v)
}

impl AnnounceResponse {
    pub fn encode(&self, form: PeerForm) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.peers.len() * 8);
        self.encode_into(form, &mut out);
        out
    }

    /// Appends the bencoded reply to `out` (keys in canonical order).
    pub fn encode_into(&self, form: PeerForm, out: &mut Vec<u8>) {
        let mut e = Encoder::with_buffer(std::mem::take(out));
        e.begin_dict();
        e.str("complete").int(int(self.complete));
        if let Some(d) = self.downloaded {
            e.str("downloaded").int(int(d));
        }
        e.str("incomplete").int(int(self.incomplete));
        e.str("interval").int(int(self.interval));
        if let Some(m) = self.min_interval {
            e.str("min interval").int(int(m));
        }
        match form {
            PeerForm::Compact => {
                let mut v4 = Vec::with_capacity(self.peers.len() * 6);
                let mut v6 = Vec::new();
                for p in &self.peers {
                    match p.addr {
                        SocketAddr::V4(a) => compact_v4(&mut v4, &a),
                        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                            Some(ip4) => compact_v4(&mut v4, &SocketAddrV4::new(ip4, a.port())),
                            None => compact_v6(&mut v6, &a),
                        },
                    }
                }
                e.str("peers").bytes(&v4);
                if !v6.is_empty() {
                    e.str("peers6").bytes(&v6);
                }
            }
            PeerForm::Dictionary { peer_id } => {
                e.str("peers").begin_list();
                for p in &self.peers {
                    e.begin_dict();
                    e.str("ip").str(&p.addr.ip().to_canonical().to_string());
                    if peer_id {
                        e.str("peer id").bytes(&p.peer_id.unwrap_or_default().0);
                    }
                    e.str("port").int(i64::from(p.addr.port()));
                    e.end();
                }
                e.end();
            }
        }
        if let Some(t) = &self.tracker_id {
            e.str("tracker id").bytes(t);
        }
        if let Some(w) = &self.warning_message {
            e.str("warning message").str(w);
        }
        e.end();
        *out = e.finish();
    }

    /// Reads an announce reply: compact (`peers` string, `peers6` string) or dictionary
    /// (`peers` list) peer lists; `failure reason` becomes [`ResponseError::Failure`]. Peers
    /// given by host name in the dictionary form are skipped.
    pub fn decode(bytes: &[u8]) -> Result<AnnounceResponse, ResponseError> {
        let v = decode(bytes)?;
        let d = v.as_dict().ok_or(ResponseError::Malformed("not a dictionary"))?;
        if let Some(f) = d.get(b"failure reason") {
            return Err(ResponseError::Failure(String::from_utf8_lossy(f.as_bytes().unwrap_or(b"")).into_owned()));
        }
        let num = |key: &[u8]| -> Result<Option<u32>, ResponseError> {
            match d.get(key) {
                None => Ok(None),
                Some(v) => {
                    let i = v.as_int().ok_or(ResponseError::Malformed("a count is not an integer"))?;
                    Ok(Some(i.clamp(0, i64::from(u32::MAX)) as u32))
                }
            }
        };
        let mut r = AnnounceResponse {
            interval: num(b"interval")?.ok_or(ResponseError::Malformed("no interval"))?,
            min_interval: num(b"min interval")?,
            complete: num(b"complete")?.unwrap_or(0),
            incomplete: num(b"incomplete")?.unwrap_or(0),
            downloaded: num(b"downloaded")?,
            peers: Vec::new(),
            warning_message: d
                .get(b"warning message")
                .and_then(Value::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into()),
            tracker_id: d.get(b"tracker id").and_then(Value::as_bytes).map(<[u8]>::to_vec),
        };
        match d.get(b"peers") {
            None => {}
            Some(Value::Bytes(b)) => {
                if b.len() % 6 != 0 {
                    return Err(ResponseError::Malformed("compact peers length is not a multiple of 6"));
                }
                r.peers.extend(b.chunks_exact(6).map(|c| Peer { addr: peer_v4(c), peer_id: None }));
            }
            Some(Value::List(l)) => {
                for p in l {
                    let pd = p.as_dict().ok_or(ResponseError::Malformed("a peer is not a dictionary"))?;
                    let port = pd
                        .get(b"port")
                        .and_then(Value::as_int)
                        .ok_or(ResponseError::Malformed("a peer has no port"))?;
                    let port =
                        u16::try_from(port).map_err(|_| ResponseError::Malformed("a peer port is out of range"))?;
                    let ip =
                        pd.get(b"ip").and_then(Value::as_str).ok_or(ResponseError::Malformed("a peer has no ip"))?;
                    let Ok(ip) = ip.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() else { continue };
                    let peer_id = match pd.get(b"peer id").and_then(Value::as_bytes) {
                        Some(id) => Some(PeerId(
                            id.try_into().map_err(|_| ResponseError::Malformed("a peer id is not 20 bytes"))?,
                        )),
                        None => None,
                    };
                    r.peers.push(Peer { addr: SocketAddr::new(ip, port), peer_id });
                }
            }
            Some(_) => return Err(ResponseError::Malformed("peers is neither a string nor a list")),
        }
        match d.get(b"peers6") {
            None => {}
            Some(Value::Bytes(b)) => {
                if b.len() % 18 != 0 {
                    return Err(ResponseError::Malformed("compact peers6 length is not a multiple of 18"));
                }
                r.peers.extend(b.chunks_exact(18).map(|c| Peer { addr: peer_v6(c), peer_id: None }));
            }
            Some(_) => return Err(ResponseError::Malformed("peers6 is not a string")),
        }
        Ok(r)
    }
}

/// A 6-byte compact IPv4 peer. `c` must be 6 bytes long.
pub fn peer_v4(c: &[u8]) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(c[0], c[1], c[2], c[3]).into(), u16::from_be_bytes([c[4], c[5]]))
}

/// An 18-byte compact IPv6 peer. `c` must be 18 bytes long.
pub fn peer_v6(c: &[u8]) -> SocketAddr {
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&c[..16]);
    SocketAddr::new(Ipv6Addr::from(ip).into(), u16::from_be_bytes([c[16], c[17]]))
}

/// One swarm's counts in a scrape reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads seen.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// A scrape reply: the `files` dictionary.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScrapeResponse {
    pub files: Vec<(InfoHash, ScrapeStats)>,
}

impl ScrapeResponse {
    /// The bencoded reply. Files are written in info-hash order (canonical bencode); a hash
    /// listed twice is written once.
    pub fn encode(&self) -> Vec<u8> {
        let mut files: Vec<&(InfoHash, ScrapeStats)> = self.files.iter().collect();
        files.sort_by_key(|a| a.0);
        files.dedup_by(|a, b| a.0 == b.0);
        let mut e = Encoder::with_buffer(Vec::with_capacity(16 + files.len() * 80));
        e.begin_dict().str("files").begin_dict();
        for (h, s) in files {
            e.bytes(&h.0).begin_dict();
            e.str("complete").int(int(s.complete));
            e.str("downloaded").int(int(s.downloaded));
            e.str("incomplete").int(int(s.incomplete));
            e.end();
        }
        e.end().end();
        e.finish()
    }

    /// Reads a scrape reply. Entries whose key is not 20 bytes are skipped.
    pub fn decode(bytes: &[u8]) -> Result<ScrapeResponse, ResponseError> {
        let v = decode(bytes)?;
        let d = v.as_dict().ok_or(ResponseError::Malformed("not a dictionary"))?;
        if let Some(f) = d.get(b"failure reason") {
            return Err(ResponseError::Failure(String::from_utf8_lossy(f.as_bytes().unwrap_or(b"")).into_owned()));
        }
        let files = d.get(b"files").and_then(Value::as_dict).ok_or(ResponseError::Malformed("no files dictionary"))?;
        let mut out = ScrapeResponse::default();
        for (k, v) in &files.entries {
            let Ok(h) = <[u8; 20]>::try_from(*k) else { continue };
            let f = v.as_dict().ok_or(ResponseError::Malformed("a file entry is not a dictionary"))?;
            let n = |key: &[u8]| f.get(key).and_then(Value::as_int).unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32;
            out.files.push((
                InfoHash(h),
                ScrapeStats { complete: n(b"complete"), downloaded: n(b"downloaded"), incomplete: n(b"incomplete") },
            ));
        }
        Ok(out)
    }

    /// The counts for one info-hash, if present.
    pub fn get(&self, h: &InfoHash) -> Option<ScrapeStats> {
        self.files.iter().find(|(k, _)| k == h).map(|(_, s)| *s)
    }
}
