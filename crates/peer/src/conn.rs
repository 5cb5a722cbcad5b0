//! One peer connection: the handshake (plaintext, or Message Stream Encryption first), then a
//! reader task that drives the protocol (and asks the picker what to request) and a writer task
//! that batches outgoing messages and serves the blocks the peer asked for. When MSE chose RC4,
//! the reader decrypts in place what it reads and the writer encrypts in place what it gathered;
//! on a plaintext connection neither does anything more.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bitswarm_wire::mse::{
    self, Ciphers, Detected, Established, Initiator, Method, MseError, Progress, Rc4, Responder, Secrets, Select,
};
use bitswarm_wire::{
    Bitfield, BlockRef, ExtendedHandshake, HANDSHAKE_LEN, Handshake, MAX_REQUEST, Message, WireError, decode, encode,
    max_message_len,
    metadata::{METADATA_PIECE, MetadataMessage, UT_METADATA, metadata_piece},
    pex::{self, MAX_PEX_PEERS, PexMessage, UT_PEX},
    piece_header,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use crate::is_local;
use crate::link::{Ctl, Link, PeerKey, PeerStats, Servable};

pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer silent for this long is dropped (keep-alives come every 2 minutes at most).
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(90);
/// A peer that accepts none of our data for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request not answered within this time goes to other peers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests we accept queued from one peer (advertised as `reqq`).
pub const OUR_REQQ: usize = 1024;
/// Assumed `reqq` of a peer that does not say (libtorrent's default).
const DEFAULT_REQQ: usize = 250;
const INITIAL_QUEUE: usize = 32;
/// Our message id for `ut_metadata` (BEP 9), as told in our extension handshake.
const OUR_UT_METADATA: u8 = 3;
/// Our message id for `ut_pex` (BEP 11).
const OUR_UT_PEX: u8 = 1;
/// How often we tell a peer of the peers we joined and left (BEP 11: at most once a minute;
/// libtorrent drops a peer that sends more often).
const PEX_EVERY: Duration = Duration::from_secs(60);
/// Peer exchange messages closer together than this are ignored.
const PEX_MIN_GAP: Duration = Duration::from_secs(20);
/// How often we look for something new to tell (the peer list is under the engine's lock).
const PEX_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Requests we may refuse (BEP 6 `reject`) between two unchokes before the peer is dropped: a
/// peer asks for no more than the queue we advertised (`reqq`) before it sees our choke, twice
/// covers a choke in the middle; more is a peer making us queue rejects it may never read.
const MAX_REJECTS: usize = 2 * OUR_REQQ;
/// Larger peer exchange messages are ignored (50 added and 50 dropped IPv6 peers take 2 KiB).
const MAX_PEX_MESSAGE: usize = 64 << 10;
const READ_BUFFER: usize = 1 << 20;
/// The writer sends what it has gathered once this much is waiting.
const WRITE_BATCH: usize = 256 << 10;

enum Out {
    Bytes(Vec<u8>),
    Block(BlockRef, u64),
}

/// How a connection ended, for the dialer's fallback from MSE to plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The handshake failed or timed out (the peer is not registered).
    HandshakeFailed,
    /// We refused it after the handshake: a second connection to the same peer, a banned
    /// address, or no room.
    Refused,
    /// It ran and closed (or was ourselves); `seed`: the peer had every piece.
    Closed { seed: bool },
}

/// Dials into a connection we opened: the handshake for the link's torrent (plaintext, or MSE
/// offering the crypto_provide bits `mse`), then [`run`].
pub async fn dial<L: Link>(link: Arc<L>, mut stream: TcpStream, addr: SocketAddr, mse: Option<u32>) -> Ended {
    let _ = stream.set_nodelay(true);
    let dht = link.dht_port().is_some();
    let shake = handshake_with(link.info_hash(), link.peer_id(), dht, &mut stream, Begin::Outgoing { mse });
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake).await {
        Ok(Ok(opened)) => run(link, stream, addr, opened, true).await,
        Ok(Err(e)) => {
            debug!("{addr}: handshake: {e}");
            Ended::HandshakeFailed
        }
        Err(_) => {
            debug!("{addr}: handshake timed out");
            Ended::HandshakeFailed
        }
    }
}

/// Runs a connection whose handshakes are done to its end: registers it with its torrent, then
/// reads and writes until either side closes it.
pub async fn run<L: Link>(link: Arc<L>, stream: TcpStream, addr: SocketAddr, opened: Opened, outgoing: bool) -> Ended {
    let Opened { theirs, pending, ciphers, how } = opened;
    if theirs.peer_id == link.peer_id() {
        debug!("{addr}: that is ourselves");
        if outgoing {
            link.mark_self(addr);
        }
        return Ended::Closed { seed: false };
    }
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(PeerStats::default());
    stats.encrypted.store(ciphers.is_some(), Ordering::Relaxed);
    let Some(key) = link.register(addr, theirs.peer_id, outgoing, ctl_tx, stats.clone()) else {
        debug!("{addr}: already connected, banned, or too many peers");
        return Ended::Refused;
    };
    debug!("{addr}: connected ({}, {how})", if outgoing { "outgoing" } else { "incoming" });
    let (decrypt, encrypt) = match ciphers {
        Some(c) => (Some(c.decrypt), Some(c.encrypt)),
        None => (None, None),
    };
    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    // BEP 6 when both sides offer it (we always do).
    let fast = theirs.supports_fast();
    let writer = Some(tokio::spawn(write_loop(link.clone(), wr, out_rx, stats.clone(), encrypt, fast)));
    let n = link.piece_count();
    let mut c = Conn {
        link: link.clone(),
        key,
        addr,
        out: out_tx,
        stats,
        theirs: Bitfield::new(n),
        am_choking: true,
        am_interested: false,
        peer_choking: true,
        requests: Vec::new(),
        queue_target: INITIAL_QUEUE,
        reqq: DEFAULT_REQQ,
        their_ut_metadata: None,
        metadata_sent: 0,
        fast,
        rejects: 0,
        have_all_none: 0,
        their_ut_pex: None,
        pex_told: HashSet::new(),
        pex_sent_at: None,
        pex_checked_at: None,
        pex_heard_at: None,
        writer,
    };
    c.greet(theirs.supports_extensions());
    // BEP 5: a peer that runs a DHT node hears where ours is.
    if theirs.supports_dht()
        && let Some(port) = c.link.dht_port()
    {
        c.send(&Message::Port(port));
    }
    let result = c.drive(rd, ctl_rx, pending, decrypt).await;
    if let Err(e) = &result {
        debug!("{addr}: closed: {e}");
    }
    let seed = c.theirs.is_full();
    if matches!(result, Err(ConnError::Redundant)) {
        // Let the writer send what is queued first (our last `have`, or the greeting that says
        // we have every piece), so the peer learns that we seed too; for a second at most.
        let writer = c.writer.take();
        drop(std::mem::replace(&mut c.out, mpsc::unbounded_channel().0));
        drop(c);
        if let Some(w) = writer {
            let abort = w.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), w).await.is_err() {
                abort.abort();
            }
        }
    }
    // `Conn`'s drop unregisters it, on this path and on any other (a panic included).
    Ended::Closed { seed }
}

impl<L: Link> Drop for Conn<L> {
    fn drop(&mut self) {
        let outstanding: Vec<BlockRef> = self.requests.iter().map(|(r, _)| *r).collect();
        self.link.unregister(self.key, &self.theirs, &outstanding);
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

/// How the handshake of a connection starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Begin {
    Outgoing { mse: Option<u32> },
}

/// The handshake of a connection a peer opened to us, for whichever of our torrents it names:
/// the plaintext BitTorrent handshake, or MSE first (told apart by the first bytes). `known`
/// says whether an info-hash is one of ours; `mse_lookup` finds the info-hash whose
/// `HASH('req2', info-hash)` a peer sent in the MSE handshake. A plaintext handshake is refused
/// when `require_rc4`. Our handshake, with `peer_id`, goes out once theirs named a torrent we
/// have.
pub(crate) async fn accept(
    stream: &mut TcpStream,
    peer_id: [u8; 20],
    require_rc4: bool,
    known: impl Fn(&[u8; 20]) -> bool,
    dht: impl Fn(&[u8; 20]) -> bool,
    mse_lookup: impl Fn(&[u8; 20]) -> Option<[u8; 20]> + Send + 'static,
) -> Result<Opened, String> {
    let _ = stream.set_nodelay(true);
    let io = |e: std::io::Error| e.to_string();
    let mut first = [0u8; 20];
    stream.read_exact(&mut first).await.map_err(io)?;
    let (mut pending, mut ciphers, how) = match mse::detect(&first) {
        Detected::Plaintext if require_rc4 => return Err("plaintext handshake refused: encryption required".into()),
        Detected::Plaintext | Detected::NeedMore => (first.to_vec(), None, "plaintext"),
        Detected::Encrypted => {
            let select = if require_rc4 { Select::RequireRc4 } else { Select::PreferPlaintext };
            let secrets = Secrets::random().map_err(|e| e.to_string())?;
            let mut side = Responder::with_lookup(Box::new(mse_lookup), select, secrets);
            let e = exchange(stream, &mut side, Vec::new(), &first).await?;
            (e.received, e.ciphers, mse_name(e.method))
        }
    };
    read_handshake(stream, &mut pending, &mut ciphers).await?;
    let theirs =
        Handshake::decode(pending[..HANDSHAKE_LEN].try_into().expect("68 bytes")).map_err(|e| e.to_string())?;
    if !known(&theirs.info_hash) {
        return Err("a torrent we do not have".into());
    }
    pending.drain(..HANDSHAKE_LEN);
    let mut ours = Handshake::new(theirs.info_hash, peer_id).with_dht(dht(&theirs.info_hash)).encode();
    if let Some(c) = &mut ciphers {
        c.encrypt.apply(&mut ours);
    }
    stream.write_all(&ours).await.map_err(io)?;
    Ok(Opened { theirs, pending, ciphers, how })
}

/// Reads the rest of the peer's 68-byte handshake into `pending` (decrypted).
async fn read_handshake(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    ciphers: &mut Option<Ciphers>,
) -> Result<(), String> {
    if pending.len() < HANDSHAKE_LEN {
        let at = pending.len();
        pending.resize(HANDSHAKE_LEN, 0);
        stream.read_exact(&mut pending[at..]).await.map_err(|e| e.to_string())?;
        if let Some(c) = ciphers {
            c.decrypt.apply(&mut pending[at..]);
        }
    }
    Ok(())
}

/// A connection after the handshakes.
pub(crate) struct Opened {
    pub theirs: Handshake,
    /// The peer's stream past its handshake, received already (decrypted).
    pub pending: Vec<u8>,
    /// RC4 both ways for the rest of the connection, when MSE chose it.
    pub ciphers: Option<Ciphers>,
    /// For the log: plaintext, or MSE and the method it chose.
    pub how: &'static str,
}

/// The BitTorrent handshake for `info_hash` on a connection we dialed, inside MSE when `start`
/// says so.
pub(crate) async fn handshake_with(
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    dht: bool,
    stream: &mut TcpStream,
    start: Begin,
) -> Result<Opened, String> {
    let ours = Handshake::new(info_hash, peer_id).with_dht(dht).encode();
    let io = |e: std::io::Error| e.to_string();
    let secrets = || Secrets::random().map_err(|e| e.to_string());
    // The MSE handshake (when there is one) leaves the peer's payload stream: its BitTorrent
    // handshake first.
    let (mut pending, mut ciphers, how) = match start {
        Begin::Outgoing { mse: None } => {
            stream.write_all(&ours).await.map_err(io)?;
            (Vec::new(), None, "plaintext")
        }
        Begin::Outgoing { mse: Some(provide) } => {
            let mut out = Vec::new();
            let mut side = Initiator::new(info_hash, provide, ours.to_vec(), secrets()?, &mut out);
            let e = exchange(stream, &mut side, out, &[]).await?;
            (e.received, e.ciphers, mse_name(e.method))
        }
    };
    read_handshake(stream, &mut pending, &mut ciphers).await?;
    let theirs =
        Handshake::decode(pending[..HANDSHAKE_LEN].try_into().expect("68 bytes")).map_err(|e| e.to_string())?;
    if theirs.info_hash != info_hash {
        return Err("wrong info-hash".into());
    }
    pending.drain(..HANDSHAKE_LEN);
    Ok(Opened { theirs, pending, ciphers, how })
}

fn mse_name(m: Method) -> &'static str {
    match m {
        Method::Plaintext => "MSE, plaintext stream",
        Method::Rc4 => "MSE, RC4 stream",
    }
}

/// Either side of the MSE handshake.
trait MseSide {
    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, MseError>;
}

impl MseSide for Initiator {
    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, MseError> {
        Initiator::receive(self, input, out)
    }
}

impl MseSide for Responder {
    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, MseError> {
        Responder::receive(self, input, out)
    }
}

/// Runs an MSE handshake over the socket: sends `out` (step 1 for an initiator), feeds the
/// state machine `first` and then what arrives, and sends what it answers.
async fn exchange(
    stream: &mut TcpStream,
    side: &mut impl MseSide,
    mut out: Vec<u8>,
    first: &[u8],
) -> Result<Established, String> {
    let mut buf = vec![0u8; 4096];
    let mut len = first.len();
    buf[..len].copy_from_slice(first);
    loop {
        let progress = side.receive(&buf[..len], &mut out).map_err(|e| format!("MSE: {e}"))?;
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
        if let Progress::Done(e) = progress {
            return Ok(*e);
        }
        len = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if len == 0 {
            return Err("MSE: the peer closed the connection".into());
        }
    }
}

struct Conn<L: Link> {
    link: Arc<L>,
    key: PeerKey,
    addr: SocketAddr,
    out: mpsc::UnboundedSender<Out>,
    stats: Arc<PeerStats>,
    theirs: Bitfield,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    /// Blocks we asked this peer for, and when.
    requests: Vec<(BlockRef, Instant)>,
    queue_target: usize,
    /// How many requests the peer accepts at once.
    reqq: usize,
    /// The peer's message id for `ut_metadata`, when it has the extension.
    their_ut_metadata: Option<u8>,
    /// Metadata requests answered for this peer (bounded: a peer needs each piece once).
    metadata_sent: usize,
    /// Both sides speak the fast extension (BEP 6): pieces in `have all`/`have none`, and every
    /// request we do not serve is answered with a `reject`.
    fast: bool,
    /// Requests refused since we last unchoked the peer (see [`MAX_REJECTS`]).
    rejects: usize,
    /// `have all`/`have none` messages received (one is expected; a few are tolerated).
    have_all_none: u32,
    /// Peer exchange (BEP 11): the peer's message id, the addresses we told it of (and not
    /// dropped since), when we last sent, when it last sent. Never on private torrents.
    their_ut_pex: Option<u8>,
    pex_told: HashSet<SocketAddr>,
    pex_sent_at: Option<Instant>,
    pex_checked_at: Option<Instant>,
    pex_heard_at: Option<Instant>,
    /// The writer task; taken out only to let it finish before a redundant connection closes.
    writer: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("closed by the engine")]
    Closed,
    #[error("peer closed the connection")]
    Eof,
    #[error("idle for too long")]
    Idle,
    #[error("the peer stopped taking our data, or the write failed")]
    WriterGone,
    #[error("both sides have every piece")]
    Redundant,
}

impl<L: Link> Conn<L> {
    fn send(&self, m: &Message<'_>) {
        trace!("{} <- {m:?}", self.addr);
        let mut b = Vec::with_capacity(17);
        encode(m, &mut b);
        let _ = self.out.send(Out::Bytes(b));
    }

    /// What we say right after the handshake: extensions, and the pieces we have.
    fn greet(&mut self, extensions: bool) {
        let have = self.link.have();
        if self.fast && have.is_full() {
            self.send(&Message::HaveAll);
        } else if self.fast && have.count() == 0 {
            self.send(&Message::HaveNone);
        } else if have.count() > 0 {
            self.send(&Message::Bitfield(have.as_bytes()));
        }
        if extensions {
            let mut extensions = vec![(UT_METADATA.into(), OUR_UT_METADATA)];
            // BEP 27: peers of a private torrent come from its tracker only.
            if !self.link.private() {
                extensions.push((UT_PEX.into(), OUR_UT_PEX));
            }
            let h = ExtendedHandshake {
                extensions,
                client: Some(crate::CLIENT.into()),
                port: Some(self.link.listen_port()),
                reqq: Some(OUR_REQQ as u32),
                metadata_size: u32::try_from(self.link.info_bytes().len()).ok(),
            };
            self.send(&Message::Extended { id: 0, payload: &h.encode() });
        }
    }

    /// Reads and handles messages until the connection ends. `pending`: what the peer sent after
    /// its handshake that was read already; `decrypt`: RC4 for what is read, when MSE chose it.
    async fn drive(
        &mut self,
        mut rd: tokio::net::tcp::OwnedReadHalf,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        pending: Vec<u8>,
        mut decrypt: Option<Rc4>,
    ) -> Result<(), ConnError> {
        let max = max_message_len(self.theirs.len());
        let mut buf = vec![0u8; READ_BUFFER.max(max as usize + 4).max(pending.len())];
        buf[..pending.len()].copy_from_slice(&pending);
        let mut filled = self.consume(&mut buf, pending.len(), max)?;
        let buf_len = buf.len();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_recv = Instant::now();
        let mut last_keepalive = Instant::now();
        // The torrent outlives its connections; the stop signal borrows this handle of it.
        let link = self.link.clone();
        let mut shutdown = link.stopping();
        loop {
            tokio::select! {
                n = rd.read(&mut buf[filled..filled.saturating_add(self.link.read_quantum()).min(buf_len)]) => {
                    let n = n?;
                    if n == 0 {
                        return Err(ConnError::Eof);
                    }
                    last_recv = Instant::now();
                    if let Some(c) = &mut decrypt {
                        c.apply(&mut buf[filled..filled + n]);
                    }
                    filled = self.consume(&mut buf, filled + n, max)?;
                    // Download rate limits: the next read waits (TCP then slows the peer).
                    self.link.downloading(n as u64).await;
                }
                c = ctl.recv() => match c {
                    None | Some(Ctl::Close) => return Err(ConnError::Closed),
                    Some(c) => self.control(c)?,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now.duration_since(last_recv) > IDLE_TIMEOUT {
                        return Err(ConnError::Idle);
                    }
                    if now.duration_since(last_keepalive) > KEEPALIVE_EVERY {
                        last_keepalive = now;
                        self.send(&Message::KeepAlive);
                    }
                    self.expire_requests(now);
                    self.send_pex(now);
                }
                _ = self.out.closed() => return Err(ConnError::WriterGone),
                // `wait_for` also sees a stop that came before this connection subscribed.
                // (The guard `wait_for` returns is dropped inside: it must not live across an await.)
                () = shutdown.wait_for(|stop| *stop) => return Err(ConnError::Closed),
            }
        }
    }

    /// Handles the whole messages in `buf[..filled]`, moves the rest to the front, and returns
    /// its length.
    fn consume(&mut self, buf: &mut [u8], filled: usize, max: u32) -> Result<usize, ConnError> {
        let mut at = 0;
        while let Some((msg, used)) = decode(&buf[at..filled], max)? {
            self.handle(msg)?;
            at += used;
        }
        buf.copy_within(at..filled, 0);
        self.fill_requests();
        Ok(filled - at)
    }

    fn control(&mut self, c: Ctl) -> Result<(), ConnError> {
        match c {
            Ctl::Have(i) => {
                self.send(&Message::Have(i));
                self.check_redundant()?;
                if self.am_interested {
                    self.update_interest();
                }
                // Verification made room: the pipeline may have stalled on backpressure.
                self.fill_requests();
            }
            Ctl::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.stats.choke_gen.fetch_add(1, Ordering::AcqRel);
                    self.send(&Message::Choke);
                }
            }
            Ctl::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.rejects = 0;
                    self.send(&Message::Unchoke);
                }
            }
            Ctl::Cancel(r) => {
                if let Some(pos) = self.requests.iter().position(|(x, _)| *x == r) {
                    self.requests.swap_remove(pos);
                    self.send(&Message::Cancel(r));
                    // A no-op when the block arrived; if the piece failed meanwhile and the block
                    // was asked of us again, it goes back to the picker instead of being lost.
                    self.link.release(&[r]);
                }
            }
            Ctl::Recheck => {
                self.update_interest();
                self.fill_requests();
            }
            Ctl::Close => {}
        }
        Ok(())
    }

    /// Like libtorrent's `close_redundant_connections`: once both sides have every piece there
    /// is nothing left to exchange, and the connection would only hold a slot on each side (and,
    /// for the side that dialed, be dialed again whenever the other closes it).
    fn check_redundant(&self) -> Result<(), ConnError> {
        if self.theirs.is_full() && self.link.complete() {
            return Err(ConnError::Redundant);
        }
        Ok(())
    }

    fn handle(&mut self, msg: Message<'_>) -> Result<(), ConnError> {
        if !matches!(msg, Message::Piece { .. }) {
            trace!("{} -> {msg:?}", self.addr);
        }
        match msg {
            Message::KeepAlive => {}
            Message::Choke => {
                self.peer_choking = true;
                self.stats.peer_choking.store(true, Ordering::Relaxed);
                let asked: Vec<BlockRef> = self.requests.drain(..).map(|(r, _)| r).collect();
                self.link.release(&asked);
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.stats.peer_choking.store(false, Ordering::Relaxed);
            }
            Message::Interested => {
                self.stats.peer_interested.store(true, Ordering::Relaxed);
                if self.am_choking && self.link.try_unchoke(self.key) {
                    self.am_choking = false;
                    self.rejects = 0;
                    self.send(&Message::Unchoke);
                }
            }
            Message::NotInterested => {
                self.stats.peer_interested.store(false, Ordering::Relaxed);
                if !self.am_choking {
                    self.am_choking = true;
                    self.stats.choke_gen.fetch_add(1, Ordering::AcqRel);
                    self.link.mark_choked(self.key);
                    self.send(&Message::Choke);
                }
            }
            Message::Have(i) => {
                if i as usize >= self.theirs.len() {
                    return Err(ConnError::Protocol(format!("have {i}: no such piece")));
                }
                if self.theirs.set(i as usize) {
                    self.stats.seed.store(self.theirs.is_full(), Ordering::Relaxed);
                    self.stats.pieces.fetch_add(1, Ordering::Relaxed);
                    let wanted = self.link.peer_have(i);
                    if !self.am_interested && wanted {
                        self.set_interested(true);
                    }
                    self.check_redundant()?;
                }
            }
            Message::Bitfield(bits) => {
                // BEP 3 wants one bitfield, first. aria2 sends more later; like libtorrent, a
                // later one replaces what we knew.
                let b = Bitfield::from_bytes(bits, self.theirs.len())?;
                self.replace_bitfield(b);
                self.check_redundant()?;
            }
            Message::Request(r) => self.on_request(r)?,
            Message::Piece { index, begin, data } => self.on_piece(index, begin, data),
            Message::Cancel(r) => {
                // Only a request still queued can be cancelled; the list is bounded by the queue.
                if self.stats.queued.load(Ordering::Acquire) > 0 {
                    let mut c = self.stats.cancelled.lock().unwrap_or_else(|p| p.into_inner());
                    if c.len() < OUR_REQQ {
                        c.push(r);
                    }
                }
            }
            Message::Extended { id: 0, payload } => {
                if let Ok(h) = ExtendedHandshake::decode(payload) {
                    if let Some(v) = &h.client {
                        let v: String = v.chars().filter(|c| !c.is_control()).take(64).collect();
                        *self.stats.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                    }
                    if let Some(q) = h.reqq {
                        self.reqq = (q as usize).clamp(1, 4096);
                    }
                    if let Some(port) = h.port {
                        self.link.set_listen_port(self.key, port);
                    }
                    // A later handshake changes only what it names (BEP 10); id 0 turns it off.
                    if let Some((_, id)) = h.extensions.iter().find(|(k, _)| k == UT_METADATA) {
                        self.their_ut_metadata = Some(*id).filter(|&id| id != 0);
                    }
                    if let Some((_, id)) = h.extensions.iter().find(|(k, _)| k == UT_PEX) {
                        self.their_ut_pex = Some(*id).filter(|&id| id != 0 && !self.link.private());
                    }
                }
            }
            Message::Extended { id: OUR_UT_METADATA, payload } => self.on_metadata(payload),
            Message::Extended { id: OUR_UT_PEX, payload } => self.on_pex(payload),
            Message::HaveAll | Message::HaveNone => {
                // BEP 6: only with the extension, once, first. A few more are tolerated; a
                // stream of them (each costs a pass over every piece) ends the connection.
                self.have_all_none += 1;
                if !self.fast || self.have_all_none > 4 {
                    return Err(ConnError::Protocol(format!("unexpected {msg:?}")));
                }
                let n = self.theirs.len();
                let b = if matches!(msg, Message::HaveAll) { Bitfield::full(n) } else { Bitfield::new(n) };
                self.replace_bitfield(b);
                self.check_redundant()?;
            }
            Message::Reject(r) => {
                // BEP 6: a request of ours that will not be served: ask again, here or elsewhere.
                if let Some(pos) = self.requests.iter().position(|(x, _)| *x == r) {
                    self.requests.swap_remove(pos);
                    self.link.release(&[r]);
                }
            }
            // Suggestions and pieces allowed while choked: we pick and wait for unchoke as usual.
            Message::Suggest(_) | Message::AllowedFast(_) => {}
            // BEP 5: the peer's DHT node, at its address.
            Message::Port(port) if port != 0 => self.link.dht_node(SocketAddr::new(self.addr.ip(), port)),
            Message::Port(_) | Message::Extended { .. } | Message::Unknown { .. } => {}
        }
        Ok(())
    }

    /// What the peer has, all at once (a bitfield, or BEP 6's have all or have none).
    fn replace_bitfield(&mut self, b: Bitfield) {
        self.link.peer_bitfield(&self.theirs, &b);
        self.theirs = b;
        self.stats.seed.store(self.theirs.is_full(), Ordering::Relaxed);
        self.stats.pieces.store(self.theirs.count() as u64, Ordering::Relaxed);
        self.update_interest();
    }

    /// A request we will not serve: BEP 6 wants a `reject`; without it the request is dropped.
    /// A peer that keeps asking (see [`MAX_REJECTS`]) is dropped.
    fn refuse(&mut self, r: BlockRef) -> Result<(), ConnError> {
        if self.fast {
            self.rejects += 1;
            if self.rejects > MAX_REJECTS {
                return Err(ConnError::Protocol(format!("{MAX_REJECTS} requests refused since the last unchoke")));
            }
            self.send(&Message::Reject(r));
        }
        Ok(())
    }

    /// A BEP 11 message: peers to dial. Up to [`MAX_PEX_PEERS`] of a message are taken, from a
    /// peer that sends no more than one message per [`PEX_MIN_GAP`]; addresses on a local
    /// network (loopback, private, link-local) only from a peer that is on one itself, as
    /// libtorrent does, so a remote peer cannot make us dial into our own network. Dropped
    /// peers are not forgotten (another peer may still know them).
    fn on_pex(&mut self, payload: &[u8]) {
        if self.link.private() || payload.len() > MAX_PEX_MESSAGE {
            return;
        }
        let now = Instant::now();
        if self.pex_heard_at.is_some_and(|t| now.duration_since(t) < PEX_MIN_GAP) {
            debug!("{}: peer exchange message too soon; ignored", self.addr);
            return;
        }
        self.pex_heard_at = Some(now);
        match PexMessage::decode(payload) {
            Ok(m) => {
                let peers = pex_to_dial(&m.added, self.addr.ip(), self.link.complete());
                debug!("{}: peer exchange: {} added, {} dropped", self.addr, peers.len(), m.dropped.len());
                self.link.add_pex_peers(peers);
            }
            Err(e) => debug!("{}: {e}", self.addr),
        }
    }

    /// Every [`PEX_EVERY`] (the first time as soon as there is something to tell): the peers we
    /// are connected to that this peer has not heard of from us, and those we left.
    fn send_pex(&mut self, now: Instant) {
        let Some(their_id) = self.their_ut_pex else { return };
        if self.pex_sent_at.is_some_and(|t| now.duration_since(t) < PEX_EVERY)
            || self.pex_checked_at.is_some_and(|t| now.duration_since(t) < PEX_CHECK_EVERY)
        {
            return;
        }
        self.pex_checked_at = Some(now);
        let current: HashMap<SocketAddr, u8> = self.link.pex_peers(self.key).into_iter().collect();
        let mut m = PexMessage::default();
        for (a, f) in current.iter().filter(|(a, _)| !self.pex_told.contains(a) && **a != self.addr).take(MAX_PEX_PEERS)
        {
            m.added.push((*a, *f));
        }
        m.dropped = self.pex_told.iter().filter(|a| !current.contains_key(a)).take(MAX_PEX_PEERS).copied().collect();
        if m.added.is_empty() && m.dropped.is_empty() {
            return;
        }
        for a in &m.dropped {
            self.pex_told.remove(a);
        }
        self.pex_told.extend(m.added.iter().map(|(a, _)| *a));
        self.pex_sent_at = Some(now);
        self.send(&Message::Extended { id: their_id, payload: &m.encode() });
    }

    /// A BEP 9 message: a peer that came with a magnet link asks for the info dictionary.
    fn on_metadata(&mut self, payload: &[u8]) {
        let Some(their_id) = self.their_ut_metadata else { return };
        let link = self.link.clone();
        let info = link.info_bytes();
        match MetadataMessage::decode(payload) {
            Ok(MetadataMessage::Request { piece }) => {
                // A peer needs each piece once: past twice that, requests go unanswered (so a
                // flood of them queues nothing).
                self.metadata_sent += 1;
                if self.metadata_sent > 2 * info.len().div_ceil(METADATA_PIECE) + 2 {
                    return;
                }
                let reply = match metadata_piece(info, piece) {
                    Some(data) => MetadataMessage::Data { piece, total_size: info.len() as u32, data },
                    None => MetadataMessage::Reject { piece },
                };
                self.send(&Message::Extended { id: their_id, payload: &reply.encode() });
            }
            // We never ask (we start from a .torrent file): answers are not ours to use.
            Ok(_) => {}
            Err(e) => debug!("{}: {e}", self.addr),
        }
    }

    fn on_request(&mut self, r: BlockRef) -> Result<(), ConnError> {
        let pieces = self.theirs.len();
        if r.index as usize >= pieces || r.length == 0 || r.length > MAX_REQUEST {
            return Err(ConnError::Protocol(format!("bad request {r:?}")));
        }
        if self.am_choking {
            return self.refuse(r); // BEP 3: requests from a choked peer are dropped.
        }
        match self.link.servable(r) {
            Servable::Yes => {}
            Servable::OutOfRange => return Err(ConnError::Protocol(format!("request {r:?} runs past the piece"))),
            Servable::NotHave => return self.refuse(r), // We do not have it (yet).
        }
        if self.stats.queued.load(Ordering::Acquire) >= OUR_REQQ as u64 {
            debug!("{}: more than {OUR_REQQ} requests queued; ignoring {r:?}", self.addr);
            return self.refuse(r);
        }
        self.stats.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.out.send(Out::Block(r, self.stats.choke_gen.load(Ordering::Acquire)));
        Ok(())
    }

    fn on_piece(&mut self, index: u32, begin: u32, data: &[u8]) {
        let len = data.len() as u64;
        self.stats.downloaded.fetch_add(len, Ordering::Relaxed);
        self.stats.last_payload.set(Instant::now());
        let r = BlockRef { index, begin, length: data.len() as u32 };
        let ours = self.requests.iter().position(|(x, _)| *x == r);
        if let Some(pos) = ours {
            self.requests.swap_remove(pos);
            // Slow start: every answered request widens the pipeline, up to what the peer takes.
            self.queue_target = (self.queue_target + 1).min(self.reqq);
        }
        self.link.block_received(self.key, index, begin, data, ours.is_some());
    }

    fn set_interested(&mut self, yes: bool) {
        if yes != self.am_interested {
            self.am_interested = yes;
            self.stats.am_interested.store(yes, Ordering::Relaxed);
            self.send(if yes { &Message::Interested } else { &Message::NotInterested });
        }
    }

    fn update_interest(&mut self) {
        let wants = self.link.wants_any(&self.theirs);
        self.set_interested(wants);
    }

    /// Keeps the pipeline of requests to this peer full.
    fn fill_requests(&mut self) {
        if self.peer_choking || !self.am_interested {
            return;
        }
        let want = self.queue_target.saturating_sub(self.requests.len());
        // Ask in batches: fewer trips to the picker, fewer small writes.
        if want == 0 || (want < 8 && !self.requests.is_empty()) {
            return;
        }
        let picked = self.link.pick(&self.theirs, &self.requests, want, Instant::now());
        if picked.is_empty() {
            if self.requests.is_empty() {
                self.update_interest();
            }
            return;
        }
        let now = Instant::now();
        let mut b = Vec::with_capacity(picked.len() * 17);
        for r in picked {
            encode(&Message::Request(r), &mut b);
            self.requests.push((r, now));
        }
        let _ = self.out.send(Out::Bytes(b));
    }

    /// Requests unanswered for too long go back to the picker, and the pipeline shrinks.
    fn expire_requests(&mut self, now: Instant) {
        let before = self.requests.len();
        let mut expired = Vec::new();
        self.requests.retain(|(r, t)| {
            let keep = now.duration_since(*t) < REQUEST_TIMEOUT;
            if !keep {
                expired.push(*r);
            }
            keep
        });
        if !expired.is_empty() {
            debug!("{}: {} of {before} requests timed out", self.addr, expired.len());
            self.queue_target = (self.queue_target / 2).max(2);
            self.link.release(&expired);
        }
        self.fill_requests();
    }
}

/// Sends what the reader queues, gathering messages into large writes; serves requested blocks
/// from the piece cache or disk, dropping those cancelled or made stale by a choke.
async fn write_loop<L: Link>(
    link: Arc<L>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    stats: Arc<PeerStats>,
    mut encrypt: Option<Rc4>,
    fast: bool,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH + MAX_REQUEST as usize + 64);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Bytes(b) => buf.extend_from_slice(&b),
                Out::Block(r, generation) => {
                    let last_queued = stats.queued.fetch_sub(1, Ordering::AcqRel) == 1;
                    let cancelled = {
                        let mut c = stats.cancelled.lock().unwrap_or_else(|p| p.into_inner());
                        let hit = c.iter().position(|x| *x == r).map(|pos| c.swap_remove(pos)).is_some();
                        if last_queued {
                            // Nothing is queued any more: older cancels match nothing.
                            c.clear();
                        }
                        hit
                    };
                    if cancelled || stats.choke_gen.load(Ordering::Acquire) != generation {
                        // BEP 6: a cancelled request, or one a choke ended, is answered.
                        if fast {
                            encode(&Message::Reject(r), &mut buf);
                        }
                        continue;
                    }
                    let data = match link.read_block(r).await {
                        Ok(d) => d,
                        Err(e) => {
                            link.fail(format!("cannot read piece {}: {e}", r.index));
                            return;
                        }
                    };
                    link.uploading(u64::from(r.length)).await;
                    let (b, e) = (r.begin as usize, r.begin as usize + r.length as usize);
                    buf.extend_from_slice(&piece_header(r.index, r.begin, r.length));
                    buf.extend_from_slice(&data[b..e]);
                    stats.uploaded.fetch_add(u64::from(r.length), Ordering::Relaxed);
                    stats.last_payload.set(Instant::now());
                }
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if let Some(c) = &mut encrypt {
                c.apply(&mut buf);
            }
            // A peer that stops reading for this long is dropped (the reader sees the writer go).
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&buf)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    debug!("peer stopped reading for {WRITE_TIMEOUT:?}");
                    return;
                }
            }
            buf.clear();
        }
    }
}

/// Which peers of a peer exchange message from `from` to dial: at most [`MAX_PEX_PEERS`], with a
/// port, not multicast or broadcast, on a local network only when `from` is on one itself, and
/// no seeds when `seeding` (a seed has no use for another).
fn pex_to_dial(added: &[(SocketAddr, u8)], from: IpAddr, seeding: bool) -> Vec<SocketAddr> {
    let from_local = is_local(from);
    let usable = |a: &SocketAddr, f: u8| {
        let ip = a.ip().to_canonical();
        a.port() != 0
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && ip != IpAddr::V4(Ipv4Addr::BROADCAST)
            && (from_local || !is_local(ip))
            && !(seeding && f & pex::flags::SEED != 0)
    };
    added.iter().filter(|(a, f)| usable(a, *f)).map(|(a, _)| *a).take(MAX_PEX_PEERS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_exchanged_peers_are_dialed() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let added = [
            (a("8.8.8.8:6881"), 0),
            (a("9.9.9.9:6881"), pex::flags::SEED),
            (a("192.168.1.5:6881"), 0),
            (a("8.8.4.4:0"), 0),
            (a("224.0.0.1:6881"), 0),
            (a("255.255.255.255:6881"), 0),
        ];
        let remote: IpAddr = "1.2.3.4".parse().unwrap();
        let local: IpAddr = "192.168.1.2".parse().unwrap();
        assert_eq!(pex_to_dial(&added, remote, false), [a("8.8.8.8:6881"), a("9.9.9.9:6881")]);
        assert_eq!(pex_to_dial(&added, remote, true), [a("8.8.8.8:6881")]);
        assert_eq!(pex_to_dial(&added, local, false), [a("8.8.8.8:6881"), a("9.9.9.9:6881"), a("192.168.1.5:6881")]);
        let many: Vec<(SocketAddr, u8)> = (0..200).map(|i| (SocketAddr::from(([8, 8, 0, i as u8], 1)), 0)).collect();
        assert_eq!(pex_to_dial(&many, remote, false).len(), MAX_PEX_PEERS);
    }
}
