//! A download that starts from a magnet link: the torrent's info dictionary is asked of peers
//! (BEP 9, `ut_metadata`) before anything else. Peers come from the link (`x.pe`), from the
//! user (`--peer`) and from the link's trackers; several are asked at once, and the first whose
//! bytes hash to the info-hash wins. Each attempt is bounded in time and size; a peer that
//! refuses, lies or stalls only costs its own attempt.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bitswarm_metainfo::InfoHash;
use bitswarm_tracker_proto::Event;
use bitswarm_wire::metadata::{MAX_METADATA, METADATA_PIECE, MetadataMessage, UT_METADATA};
use bitswarm_wire::{ExtendedHandshake, Message, decode, encode};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::Outgoing;
use crate::conn::Begin;
use crate::tracker::{Announce, announce};

/// Our message id for `ut_metadata` on these connections.
const OUR_ID: u8 = 3;
/// One peer's whole attempt: connect, handshakes, every piece.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Peers asked at once.
const PARALLEL: usize = 8;
/// Pause between rounds when no peer had the metadata.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// Trackers are asked for peers at most this often (the peers they gave are asked again each
/// round).
const TRACKER_EVERY: Duration = Duration::from_secs(60);
/// The largest message accepted while fetching (a bitfield of 8 million pieces, or a piece of
/// metadata with its header).
const MAX_MESSAGE: u32 = 1 << 20;

/// Where to look for the info dictionary of `info_hash`.
pub struct MetadataQuery {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    /// Our listening port, told to trackers and peers.
    pub port: u16,
    /// The address peers are dialed from (unspecified: any).
    pub local: std::net::IpAddr,
    pub peers: Vec<SocketAddr>,
    pub trackers: Vec<String>,
    /// How to dial, as the engine does: `Plaintext` with the plaintext handshake, `Prefer` with
    /// MSE offering RC4 or plaintext and then the plaintext handshake for a peer that fails it,
    /// `Require` with MSE and RC4 only.
    pub encryption: Outgoing,
    /// Peers in it are not dialed (the session's blocklist in force).
    pub blocklist: Option<std::sync::Arc<crate::Blocklist>>,
}

/// What the helpers of one round report.
enum Found {
    Peer(SocketAddr),
    TrackerFailed(String, String),
    TrackerDone,
}

/// Fetches the info dictionary; returns its bytes and the peer that gave them. Peers given
/// directly are asked at once, those of trackers as the announces come back. Tries again every
/// few seconds while nobody has it (`progress` hears of each failure); fails at once when there
/// is nowhere to look.
pub async fn fetch_metadata(q: &MetadataQuery, progress: impl Fn(&str)) -> Result<(Vec<u8>, SocketAddr), String> {
    fetch_metadata_with(q, None, progress).await
}

/// [`fetch_metadata`], with peers that come from the DHT and LSD as well (asked as they come, and
/// remembered for the later rounds).
pub(crate) async fn fetch_metadata_with(
    q: &MetadataQuery,
    mut dht: Option<tokio::sync::mpsc::UnboundedReceiver<SocketAddr>>,
    progress: impl Fn(&str),
) -> Result<(Vec<u8>, SocketAddr), String> {
    if q.peers.is_empty() && q.trackers.is_empty() && dht.is_none() {
        return Err(
            "the magnet link names no tracker and no peer, and the DHT and LSD are off: nowhere to look for its \
                    metadata"
                .into(),
        );
    }
    // Peers of the DHT arrive between rounds too; pending until one does (or without a DHT).
    async fn from_dht(dht: &mut Option<tokio::sync::mpsc::UnboundedReceiver<SocketAddr>>) -> SocketAddr {
        match dht {
            Some(rx) => match rx.recv().await {
                Some(a) => a,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
    let mut learned: Vec<SocketAddr> = Vec::new();
    let mut last_announce: Option<tokio::time::Instant> = None;
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Peers given directly, and those trackers gave in earlier rounds, are queued at once:
        // the loop below ends when nothing is queued, running or pending.
        let mut seen = HashSet::new();
        let mut queue: std::collections::VecDeque<SocketAddr> =
            q.peers.iter().chain(&learned).copied().filter(|p| seen.insert(*p)).collect();
        let announce_now = last_announce.is_none_or(|t| t.elapsed() >= TRACKER_EVERY);
        let trackers: &[String] = if announce_now { &q.trackers } else { &[] };
        if announce_now {
            last_announce = Some(tokio::time::Instant::now());
        }
        let mut trackers_pending = trackers.len();
        // Owned by this round: dropped (and aborted) with it.
        let mut announces = JoinSet::new();
        for url in trackers {
            let (tx, url) = (tx.clone(), url.clone());
            let a = Announce {
                info_hash: q.info_hash,
                peer_id: q.peer_id,
                port: q.port,
                uploaded: 0,
                downloaded: 0,
                left: 1,
                event: Event::None,
                numwant: 50,
                local: q.local,
            };
            announces.spawn(async move {
                match announce(&url, &a).await {
                    Ok(r) => r.peers.into_iter().for_each(|p| drop(tx.send(Found::Peer(p)))),
                    Err(e) => drop(tx.send(Found::TrackerFailed(url, e))),
                }
                let _ = tx.send(Found::TrackerDone);
            });
        }
        drop(tx);
        let mut set = JoinSet::new();
        loop {
            while set.len() < PARALLEL
                && let Some(addr) = queue.pop_front()
            {
                if q.blocklist.as_ref().is_some_and(|b| b.contains(addr.ip())) {
                    continue;
                }
                // As the engine dials, the fallback of `prefer` within the same attempt.
                let mse = q.encryption.offers();
                let (ih, id, port, local) = (q.info_hash, q.peer_id, q.port, q.local);
                set.spawn(async move {
                    let r = tokio::time::timeout(ATTEMPT_TIMEOUT, from_peer(addr, local, ih, id, port, mse)).await;
                    (addr, r.unwrap_or_else(|_| Err(format!("no metadata within {ATTEMPT_TIMEOUT:?}"))))
                });
            }
            if set.is_empty() && queue.is_empty() && trackers_pending == 0 {
                break;
            }
            tokio::select! {
                Some(found) = rx.recv() => match found {
                    Found::Peer(a) => {
                        if seen.insert(a) {
                            queue.push_back(a);
                            if !q.peers.contains(&a) && !learned.contains(&a) {
                                learned.push(a);
                            }
                        }
                    }
                    Found::TrackerFailed(url, e) => progress(&format!("tracker {url}: {e}")),
                    Found::TrackerDone => trackers_pending -= 1,
                },
                a = from_dht(&mut dht) => {
                    if seen.insert(a) {
                        queue.push_back(a);
                        if !q.peers.contains(&a) && !learned.contains(&a) {
                            learned.push(a);
                        }
                    }
                }
                Some(done) = set.join_next(), if !set.is_empty() => {
                    if let Ok((addr, result)) = done {
                        match result {
                            Ok(info) => return Ok((info, addr)),
                            Err(e) => progress(&format!("{addr}: {e}")),
                        }
                    }
                }
                // A tracker task that ended without saying so, and nothing else to wait for.
                else => break,
            }
        }
        progress(&format!("no peer gave the metadata (asked {}); trying again in {RETRY_EVERY:?}", seen.len()));
        // A new peer from the DHT starts the next round at once.
        tokio::select! {
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            a = from_dht(&mut dht) => {
                if !q.peers.contains(&a) && !learned.contains(&a) {
                    learned.push(a);
                }
            }
        }
    }
}

/// One peer: the handshakes, then every piece of the metadata, checked against the info-hash.
async fn from_peer(
    addr: SocketAddr,
    local: std::net::IpAddr,
    info_hash: InfoHash,
    peer_id: [u8; 20],
    port: u16,
    offers: &[Option<u32>],
) -> Result<Vec<u8>, String> {
    // Each MSE offer in turn (None: the plaintext handshake), over a new connection each.
    let mut failed = Vec::new();
    let mut open = None;
    for &mse in offers {
        let mut s = match tokio::time::timeout(CONNECT_TIMEOUT, crate::live::connect_from(local, addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                failed.push(format!("connect: {e}"));
                break;
            }
            Err(_) => {
                failed.push("connect timed out".into());
                break;
            }
        };
        let _ = s.set_nodelay(true);
        let start = Begin::Outgoing { mse };
        let shake = crate::conn::handshake_with(info_hash.0, peer_id, false, &mut s, start);
        let what = if mse.is_some() { "MSE handshake" } else { "handshake" };
        match tokio::time::timeout(crate::conn::HANDSHAKE_TIMEOUT, shake).await {
            Ok(Ok(opened)) => {
                open = Some((s, opened));
                break;
            }
            Ok(Err(e)) => failed.push(format!("{what}: {e}")),
            Err(_) => failed.push(format!("{what}: timed out")),
        }
    }
    let Some((mut s, opened)) = open else {
        return Err(failed.join("; "));
    };
    if !opened.theirs.supports_extensions() {
        return Err("no extension protocol (BEP 10), so no metadata exchange".into());
    }
    // Both directions go through RC4 when MSE chose it.
    let mut ciphers = opened.ciphers;
    let ours = ExtendedHandshake {
        extensions: vec![(UT_METADATA.into(), OUR_ID)],
        client: Some(crate::CLIENT.into()),
        port: Some(port),
        ..Default::default()
    };
    let mut out = Vec::new();
    // BEP 6: with the fast extension on both sides, the first message says what we have.
    if opened.theirs.supports_fast() {
        encode(&Message::HaveNone, &mut out);
    }
    encode(&Message::Extended { id: 0, payload: &ours.encode() }, &mut out);
    if let Some(c) = &mut ciphers {
        c.encrypt.apply(&mut out);
    }
    s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;

    let mut buf: Vec<u8> = opened.pending;
    // Set by their extension handshake: their id for ut_metadata, the size, the pieces.
    let mut fetch: Option<(u8, Vec<u8>, Vec<bool>)> = None;
    loop {
        while let Some((msg, used)) = decode(&buf, MAX_MESSAGE).map_err(|e| e.to_string())? {
            match msg {
                Message::Extended { id: 0, payload } if fetch.is_none() => {
                    let h = ExtendedHandshake::decode(payload).map_err(|e| e.to_string())?;
                    let their_id = h
                        .extensions
                        .iter()
                        .find(|(k, id)| k == UT_METADATA && *id != 0)
                        .map(|(_, id)| *id)
                        .ok_or("the peer does not offer ut_metadata")?;
                    let size = h.metadata_size.ok_or("the peer does not say the metadata's size")?;
                    if size == 0 || size > MAX_METADATA {
                        return Err(format!("metadata_size {size} is out of range"));
                    }
                    let pieces = (size as usize).div_ceil(METADATA_PIECE);
                    let mut req = Vec::new();
                    for piece in 0..pieces as u32 {
                        let m = MetadataMessage::Request { piece }.encode();
                        encode(&Message::Extended { id: their_id, payload: &m }, &mut req);
                    }
                    if let Some(c) = &mut ciphers {
                        c.encrypt.apply(&mut req);
                    }
                    s.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
                    fetch = Some((their_id, vec![0; size as usize], vec![false; pieces]));
                }
                Message::Extended { id: OUR_ID, payload } => {
                    if let Some((_, info, got)) = fetch.as_mut()
                        && let Some(done) = take_piece(payload, info, got, info_hash)?
                    {
                        return Ok(done);
                    }
                }
                _ => {}
            }
            buf.drain(..used);
        }
        let mut chunk = [0u8; 32 * 1024];
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed the connection".into());
        }
        if let Some(c) = &mut ciphers {
            c.decrypt.apply(&mut chunk[..n]);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Stores one `ut_metadata` answer; returns the whole dictionary once every piece is in and it
/// hashes to the info-hash.
fn take_piece(
    payload: &[u8],
    info: &mut Vec<u8>,
    got: &mut [bool],
    info_hash: InfoHash,
) -> Result<Option<Vec<u8>>, String> {
    match MetadataMessage::decode(payload).map_err(|e| e.to_string())? {
        MetadataMessage::Data { piece, total_size, data } => {
            if total_size as usize != info.len() || piece as usize >= got.len() {
                return Err(format!("metadata piece {piece} does not fit what the peer announced"));
            }
            let start = piece as usize * METADATA_PIECE;
            let want = info.len().saturating_sub(start).min(METADATA_PIECE);
            if data.len() != want {
                return Err(format!("metadata piece {piece} does not fit what the peer announced"));
            }
            info[start..start + want].copy_from_slice(data);
            got[piece as usize] = true;
            if !got.iter().all(|&g| g) {
                return Ok(None);
            }
            if InfoHash(Sha1::digest(&info[..]).into()) != info_hash {
                return Err("the metadata does not hash to the info-hash".into());
            }
            Ok(Some(std::mem::take(info)))
        }
        MetadataMessage::Reject { piece } => Err(format!("refused metadata piece {piece}")),
        // We have nothing to give yet.
        MetadataMessage::Request { .. } => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(piece: u32, total: usize, bytes: &[u8]) -> Vec<u8> {
        MetadataMessage::Data { piece, total_size: total as u32, data: bytes }.encode()
    }

    #[test]
    fn pieces_are_checked_and_the_whole_is_hashed() {
        let dict: Vec<u8> = (0..METADATA_PIECE + 100).map(|i| i as u8).collect();
        let hash = InfoHash(Sha1::digest(&dict).into());
        let fresh = || (vec![0u8; dict.len()], vec![false; 2]);

        let (mut info, mut got) = fresh();
        let (a, b) = dict.split_at(METADATA_PIECE);
        assert_eq!(take_piece(&data(1, dict.len(), b), &mut info, &mut got, hash), Ok(None));
        assert_eq!(take_piece(&data(0, dict.len(), a), &mut info, &mut got, hash), Ok(Some(dict.clone())));

        let (mut info, mut got) = fresh();
        assert!(take_piece(&data(0, dict.len() + 1, a), &mut info, &mut got, hash).is_err(), "other total size");
        assert!(take_piece(&data(1, dict.len(), a), &mut info, &mut got, hash).is_err(), "wrong piece length");
        assert!(take_piece(&data(2, dict.len(), b), &mut info, &mut got, hash).is_err(), "no such piece");
        let reject = MetadataMessage::Reject { piece: 0 }.encode();
        assert!(take_piece(&reject, &mut info, &mut got, hash).is_err());
        assert!(take_piece(b"junk", &mut info, &mut got, hash).is_err());

        let (mut info, mut got) = fresh();
        let mut wrong = a.to_vec();
        wrong[0] ^= 1;
        assert_eq!(take_piece(&data(0, dict.len(), &wrong), &mut info, &mut got, hash), Ok(None));
        let e = take_piece(&data(1, dict.len(), b), &mut info, &mut got, hash).unwrap_err();
        assert!(e.contains("does not hash"), "{e}");
    }
}
