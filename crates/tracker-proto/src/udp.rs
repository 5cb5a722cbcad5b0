//! UDP tracker protocol (BEP 15), every packet in both directions, with BEP 41 option data
//! after an announce request read and kept.
//!
//! Tracker side: [`Request::parse`] and [`Response::encode_into`]. Client side:
//! [`Request::encode`] and [`Response::parse`] (which needs to know the address family the
//! request went over: an announce reply lists 6-byte IPv4 or 18-byte IPv6 peers by that alone).
//!
//! All integers are big-endian. Parsers check lengths before reading and never panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use crate::{Event, InfoHash, PeerId};

/// The magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// Length of a connect request and of a connect response.
pub const CONNECT_LEN: usize = 16;
/// Length of an announce request without BEP 41 options.
pub const ANNOUNCE_LEN: usize = 98;
/// BEP 15: "up to about 74 torrents can be scraped at once".
pub const MAX_SCRAPE_HASHES: usize = 74;

/// Why a packet could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short: {len} bytes, need {need}")]
    Short { len: usize, need: usize },
    #[error("not a connect request: wrong protocol id")]
    BadProtocolId,
    #[error("unknown action {0}")]
    BadAction(u32),
    #[error("unknown event {0}")]
    BadEvent(u32),
    #[error("port 0 is not a valid peer port")]
    BadPort,
    #[error("scrape request lists no info-hash or a partial one")]
    BadScrape,
    #[error("too many info-hashes in one scrape (at most {MAX_SCRAPE_HASHES})")]
    TooManyHashes,
    #[error("body length {0} does not fit the packet type")]
    BadLength(usize),
    /// Seen by a server whose receive buffer the datagram overflowed, not by [`Request::parse`].
    #[error("packet too long: more than {0} bytes")]
    TooLong(usize),
}

impl PacketError {
    /// The transaction id of a packet, when it is long enough to carry one (for error replies).
    pub fn transaction_id_of(packet: &[u8]) -> Option<u32> {
        (packet.len() >= 16).then(|| be32(packet, 12))
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}
#[inline]
fn arr20(b: &[u8], at: usize) -> [u8; 20] {
    let mut a = [0u8; 20];
    a.copy_from_slice(&b[at..at + 20]);
    a
}

/// A BEP 15 announce request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// The `ip` field; 0 (the default: "use the sender's address") is `None`.
    pub ip: Option<Ipv4Addr>,
    pub key: u32,
    /// `num_want`; -1 (the default) and other negative values are `None`.
    pub num_want: Option<u32>,
    pub port: u16,
    /// BEP 41 `URLData` options concatenated (the path and query of the tracker URL), empty
    /// when none were sent.
    pub url_data: Vec<u8>,
}

/// A BEP 15 scrape request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hashes: Vec<InfoHash>,
}

/// A packet from a client to a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Connect { transaction_id: u32 },
    Announce(AnnounceRequest),
    Scrape(ScrapeRequest),
}

impl Request {
    pub fn transaction_id(&self) -> u32 {
        match self {
            Request::Connect { transaction_id } => *transaction_id,
            Request::Announce(a) => a.transaction_id,
            Request::Scrape(s) => s.transaction_id,
        }
    }

    /// Reads a client packet. Extra bytes after a connect request are ignored; after an
    /// announce they are BEP 41 options (read leniently: a malformed option ends the list).
    pub fn parse(p: &[u8]) -> Result<Request, PacketError> {
        if p.len() < 16 {
            return Err(PacketError::Short { len: p.len(), need: 16 });
        }
        let connection_id = be64(p, 0);
        let action = be32(p, 8);
        let transaction_id = be32(p, 12);
        match action {
            ACTION_CONNECT => {
                if connection_id != PROTOCOL_ID {
                    return Err(PacketError::BadProtocolId);
                }
                Ok(Request::Connect { transaction_id })
            }
            ACTION_ANNOUNCE => {
                if p.len() < ANNOUNCE_LEN {
                    return Err(PacketError::Short { len: p.len(), need: ANNOUNCE_LEN });
                }
                let event = be32(p, 80);
                let event = Event::from_udp(event).ok_or(PacketError::BadEvent(event))?;
                let ip = be32(p, 84);
                let num_want = be32(p, 92) as i32;
                let port = u16::from_be_bytes([p[96], p[97]]);
                if port == 0 {
                    return Err(PacketError::BadPort);
                }
                Ok(Request::Announce(AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash: InfoHash(arr20(p, 16)),
                    peer_id: PeerId(arr20(p, 36)),
                    downloaded: be64(p, 56),
                    left: be64(p, 64),
                    uploaded: be64(p, 72),
                    event,
                    ip: (ip != 0).then(|| Ipv4Addr::from(ip)),
                    key: be32(p, 88),
                    num_want: u32::try_from(num_want).ok(),
                    port,
                    url_data: parse_options(&p[ANNOUNCE_LEN..]),
                }))
            }
            ACTION_SCRAPE => {
                let body = &p[16..];
                if body.is_empty() || !body.len().is_multiple_of(20) {
                    return Err(PacketError::BadScrape);
                }
                if body.len() / 20 > MAX_SCRAPE_HASHES {
                    return Err(PacketError::TooManyHashes);
                }
                let info_hashes = body.chunks_exact(20).map(|c| InfoHash(arr20(c, 0))).collect();
                Ok(Request::Scrape(ScrapeRequest { connection_id, transaction_id, info_hashes }))
            }
            other => Err(PacketError::BadAction(other)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ANNOUNCE_LEN);
        self.encode_into(&mut out);
        out
    }

    /// Appends the packet to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce(a) => {
                out.extend_from_slice(&a.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash.0);
                out.extend_from_slice(&a.peer_id.0);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                out.extend_from_slice(&a.event.to_udp().to_be_bytes());
                out.extend_from_slice(&a.ip.map_or(0, u32::from).to_be_bytes());
                out.extend_from_slice(&a.key.to_be_bytes());
                let nw: i32 = a.num_want.map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
                out.extend_from_slice(&nw.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
                for chunk in a.url_data.chunks(255) {
                    out.push(2);
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
                if !a.url_data.is_empty() {
                    out.push(0);
                }
            }
            Request::Scrape(s) => {
                out.extend_from_slice(&s.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&s.transaction_id.to_be_bytes());
                for h in &s.info_hashes {
                    out.extend_from_slice(&h.0);
                }
            }
        }
    }
}

/// BEP 41 options: 0 ends the list, 1 is a one-byte no-op, every other type has a length byte;
/// type 2 (`URLData`) payloads are concatenated. A truncated option ends the list.
fn parse_options(mut o: &[u8]) -> Vec<u8> {
    let mut url = Vec::new();
    while let Some((&kind, rest)) = o.split_first() {
        match kind {
            0 => break,
            1 => o = rest,
            _ => {
                let Some((&len, rest)) = rest.split_first() else { break };
                let len = usize::from(len);
                if rest.len() < len {
                    break;
                }
                if kind == 2 {
                    url.extend_from_slice(&rest[..len]);
                }
                o = &rest[len..];
            }
        }
    }
    url
}

/// Peers in an announce reply: the form depends on the address family the request came over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    V4(Vec<SocketAddrV4>),
    V6(Vec<SocketAddrV6>),
}

impl Peers {
    pub fn len(&self) -> usize {
        match self {
            Peers::V4(p) => p.len(),
            Peers::V6(p) => p.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A BEP 15 announce reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub transaction_id: u32,
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: Peers,
}

/// One swarm's counts in a scrape reply (in the order they are on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// A BEP 15 scrape reply: counts in the order the info-hashes were asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeResponse {
    pub transaction_id: u32,
    pub stats: Vec<ScrapeStats>,
}

/// A packet from a tracker to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Connect { transaction_id: u32, connection_id: u64 },
    Announce(AnnounceResponse),
    Scrape(ScrapeResponse),
    Error { transaction_id: u32, message: String },
}

/// The address family of the socket a request went over, which decides how an announce reply
/// lists peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Response {
    pub fn transaction_id(&self) -> u32 {
        match self {
            Response::Connect { transaction_id, .. } | Response::Error { transaction_id, .. } => *transaction_id,
            Response::Announce(a) => a.transaction_id,
            Response::Scrape(s) => s.transaction_id,
        }
    }

    /// Reads a tracker packet. `family` is that of the socket the request was sent over.
    pub fn parse(p: &[u8], family: Family) -> Result<Response, PacketError> {
        if p.len() < 8 {
            return Err(PacketError::Short { len: p.len(), need: 8 });
        }
        let action = be32(p, 0);
        let transaction_id = be32(p, 4);
        let body = &p[8..];
        match action {
            ACTION_CONNECT => {
                if p.len() < CONNECT_LEN {
                    return Err(PacketError::Short { len: p.len(), need: CONNECT_LEN });
                }
                Ok(Response::Connect { transaction_id, connection_id: be64(p, 8) })
            }
            ACTION_ANNOUNCE => {
                if p.len() < 20 {
                    return Err(PacketError::Short { len: p.len(), need: 20 });
                }
                let list = &p[20..];
                let peers = match family {
                    Family::V4 => {
                        if !list.len().is_multiple_of(6) {
                            return Err(PacketError::BadLength(list.len()));
                        }
                        Peers::V4(
                            list.chunks_exact(6)
                                .map(|c| {
                                    SocketAddrV4::new(
                                        Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                                        u16::from_be_bytes([c[4], c[5]]),
                                    )
                                })
                                .collect(),
                        )
                    }
                    Family::V6 => {
                        if !list.len().is_multiple_of(18) {
                            return Err(PacketError::BadLength(list.len()));
                        }
                        Peers::V6(
                            list.chunks_exact(18)
                                .map(|c| {
                                    let mut ip = [0u8; 16];
                                    ip.copy_from_slice(&c[..16]);
                                    SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_be_bytes([c[16], c[17]]), 0, 0)
                                })
                                .collect(),
                        )
                    }
                };
                Ok(Response::Announce(AnnounceResponse {
                    transaction_id,
                    interval: be32(p, 8),
                    leechers: be32(p, 12),
                    seeders: be32(p, 16),
                    peers,
                }))
            }
            ACTION_SCRAPE => {
                if !body.len().is_multiple_of(12) {
                    return Err(PacketError::BadLength(body.len()));
                }
                let stats = body
                    .chunks_exact(12)
                    .map(|c| ScrapeStats { seeders: be32(c, 0), completed: be32(c, 4), leechers: be32(c, 8) })
                    .collect();
                Ok(Response::Scrape(ScrapeResponse { transaction_id, stats }))
            }
            ACTION_ERROR => Ok(Response::Error { transaction_id, message: String::from_utf8_lossy(body).into_owned() }),
            other => Err(PacketError::BadAction(other)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Appends the packet to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Response::Connect { transaction_id, connection_id } => {
                write_connect_response(out, *transaction_id, *connection_id);
            }
            Response::Announce(a) => {
                write_announce_header(out, a.transaction_id, a.interval, a.leechers, a.seeders);
                match &a.peers {
                    Peers::V4(v) => {
                        for p in v {
                            out.extend_from_slice(&p.ip().octets());
                            out.extend_from_slice(&p.port().to_be_bytes());
                        }
                    }
                    Peers::V6(v) => {
                        for p in v {
                            out.extend_from_slice(&p.ip().octets());
                            out.extend_from_slice(&p.port().to_be_bytes());
                        }
                    }
                }
            }
            Response::Scrape(s) => {
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&s.transaction_id.to_be_bytes());
                for st in &s.stats {
                    out.extend_from_slice(&st.seeders.to_be_bytes());
                    out.extend_from_slice(&st.completed.to_be_bytes());
                    out.extend_from_slice(&st.leechers.to_be_bytes());
                }
            }
            Response::Error { transaction_id, message } => {
                write_error(out, *transaction_id, message);
            }
        }
    }
}

/// Writes a connect response (the allocation-free path for a server).
pub fn write_connect_response(out: &mut Vec<u8>, transaction_id: u32, connection_id: u64) {
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&connection_id.to_be_bytes());
}

/// Writes the 20-byte head of an announce response; compact peers (6 or 18 bytes each) follow.
pub fn write_announce_header(out: &mut Vec<u8>, transaction_id: u32, interval: u32, leechers: u32, seeders: u32) {
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
}

/// Writes an error response.
pub fn write_error(out: &mut Vec<u8>, transaction_id: u32, message: &str) {
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}
