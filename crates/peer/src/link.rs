//! What a connection sees of its torrent: the [`Link`] trait, and the vocabulary both sides
//! share (connection keys, orders to a connection, the counters a connection keeps).
//!
//! A connection (`conn.rs`) depends on this module only: it never sees the torrent's state, the
//! session or the other torrents, so it can be driven by anything that implements [`Link`]
//! (rqbit's `PeerConnectionHandler` plays the same part).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use bitswarm_wire::{Bitfield, BlockRef};
use tokio::sync::mpsc;

use crate::signal::Receiver;

/// A connection's number within its torrent (a new one for every connection).
pub type PeerKey = u64;

/// Orders from the torrent to a connection.
#[derive(Debug)]
pub enum Ctl {
    Have(u32),
    /// Endgame: another connection received this block; drop our request for it.
    Cancel(BlockRef),
    Choke,
    Unchoke,
    /// What we want changed (files were chosen): look again at whether we are interested.
    Recheck,
    Close,
}

/// Counters the torrent reads (choker, stats, peer lists) while the connection runs.
pub struct PeerStats {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub peer_interested: AtomicBool,
    /// The peer chokes us.
    pub peer_choking: AtomicBool,
    /// We are interested in the peer.
    pub am_interested: AtomicBool,
    /// Bumped when we choke the peer: queued blocks from before are not served (BEP 3).
    pub choke_gen: AtomicU64,
    /// Blocks the peer cancelled before we sent them.
    pub cancelled: Mutex<Vec<BlockRef>>,
    /// Requests from the peer queued for the writer and not yet served.
    pub queued: AtomicU64,
    /// Pieces the peer has (for its progress, shown in peer lists).
    pub pieces: AtomicU64,
    /// The peer has every piece (told to others in peer exchange).
    pub seed: AtomicBool,
    /// When a block last went either way (for the torrent's choice of useless connections).
    pub last_payload: crate::Stamp,
    /// The client the peer named in its extension handshake (`v`).
    pub client: Mutex<Option<String>>,
    /// The stream is RC4-encrypted (MSE).
    pub encrypted: AtomicBool,
}

impl Default for PeerStats {
    fn default() -> Self {
        PeerStats {
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            peer_interested: AtomicBool::new(false),
            peer_choking: AtomicBool::new(true),
            am_interested: AtomicBool::new(false),
            choke_gen: AtomicU64::new(0),
            cancelled: Mutex::new(Vec::new()),
            queued: AtomicU64::new(0),
            pieces: AtomicU64::new(0),
            seed: AtomicBool::new(false),
            last_payload: crate::Stamp::default(),
            client: Mutex::new(None),
            encrypted: AtomicBool::new(false),
        }
    }
}

/// Whether a request of the peer can be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Servable {
    Yes,
    /// We do not have the piece (yet).
    NotHave,
    /// The request runs past the end of its piece (a protocol error).
    OutOfRange,
}

/// What a connection needs of its torrent. Every method is quick (a lock held briefly) except
/// the `async` ones, which may wait for the disk or a rate limit.
pub trait Link: Send + Sync + 'static {
    // What the torrent is.
    fn info_hash(&self) -> [u8; 20];
    /// Our peer id.
    fn peer_id(&self) -> [u8; 20];
    /// The port we listen on (told in the extension handshake).
    fn listen_port(&self) -> u16;
    fn private(&self) -> bool;
    /// The info dictionary, served to peers that ask for it (BEP 9).
    fn info_bytes(&self) -> &[u8];
    fn piece_count(&self) -> usize;
    /// Resolves (true) when the torrent stops: every connection closes.
    fn stopping(&self) -> Receiver<'_, bool>;
    /// The torrent cannot go on (a piece could not be read, say).
    fn fail(&self, message: String);

    // Membership.
    /// Takes the connection in after its handshake: `None` if the torrent refuses it (already
    /// connected to that peer, banned, no room).
    fn register(
        &self,
        addr: SocketAddr,
        peer_id: [u8; 20],
        outgoing: bool,
        ctl: mpsc::UnboundedSender<Ctl>,
        stats: Arc<PeerStats>,
    ) -> Option<PeerKey>;
    /// The connection ended: what it had and what it had asked for are forgotten.
    fn unregister(&self, key: PeerKey, theirs: &Bitfield, outstanding: &[BlockRef]);
    /// The peer said where it listens (BEP 10 `p`).
    fn set_listen_port(&self, key: PeerKey, port: u16);
    /// The address we dialed turned out to be ourselves.
    fn mark_self(&self, addr: SocketAddr);

    // Peer exchange (BEP 11).
    /// Where the other connected peers listen, with their BEP 11 flags.
    fn pex_peers(&self, except: PeerKey) -> Vec<(SocketAddr, u8)>;
    /// Addresses a peer told us of.
    fn add_pex_peers(&self, addrs: Vec<SocketAddr>);

    // Choking.
    /// Unchokes a newly interested peer at once when a slot is free.
    fn try_unchoke(&self, key: PeerKey) -> bool;
    fn mark_choked(&self, key: PeerKey);

    // Pieces.
    /// The pieces we have.
    fn have(&self) -> Bitfield;
    /// We have every piece.
    fn complete(&self) -> bool;
    fn servable(&self, r: BlockRef) -> Servable;
    /// We want something `theirs` has.
    fn wants_any(&self, theirs: &Bitfield) -> bool;
    /// The peer's pieces changed from `old` to `new` (availability for the picker).
    fn peer_bitfield(&self, old: &Bitfield, new: &Bitfield);
    /// The peer has piece `index` now; true if we want it.
    fn peer_have(&self, index: u32) -> bool;
    /// Up to `want` blocks to ask of a peer that has `theirs`; `asked` is what this connection
    /// has asked for already (for endgame duplicates).
    fn pick(&self, theirs: &Bitfield, asked: &[(BlockRef, Instant)], want: usize, now: Instant) -> Vec<BlockRef>;
    /// Requests that will not be answered go back to be asked of others.
    fn release(&self, blocks: &[BlockRef]);
    /// A block arrived from connection `key` (`asked_here`: that connection had asked for it):
    /// counted, stored, hashed with its piece when that is whole, and cancelled on the other
    /// connections that asked for it too.
    fn block_received(&self, key: PeerKey, index: u32, begin: u32, data: &[u8], asked_here: bool);
    /// The piece for a block the peer asked for (from a cache or the disk).
    fn read_block(&self, r: BlockRef) -> impl Future<Output = std::io::Result<Arc<Vec<u8>>>> + Send;
    /// Waits until `bytes` may be sent (upload rate limits), and counts them as uploaded.
    fn uploading(&self, bytes: u64) -> impl Future<Output = ()> + Send;
    /// Waits until `bytes` more may be read (download rate limits).
    fn downloading(&self, bytes: u64) -> impl Future<Output = ()> + Send;
    /// The most to read at once: small under a download limit, so that the limit holds
    /// evenly rather than in bursts of a whole read buffer.
    fn read_quantum(&self) -> usize;
    /// The UDP port of our DHT node, when this torrent uses the DHT (BEP 5: said in the
    /// handshake's reserved bits and a PORT message).
    fn dht_port(&self) -> Option<u16> {
        None
    }
    /// A peer's PORT message: its DHT node, to ping into the routing table.
    fn dht_node(&self, _addr: SocketAddr) {}
}
