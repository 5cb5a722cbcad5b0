//! The session's Mainline DHT node (BEP 5): one task owns the UDP socket and the I/O-free
//! [`bitswarm_dht::Dht`], and pumps it as quinn's endpoint driver pumps quinn-proto. Torrents
//! talk to it through a channel: they register an info-hash with somewhere to put the peers
//! found ([`Sink`]), and the task looks the info-hash up (and announces us, for a running
//! public torrent) at once and then again on its own schedule, until the registration is
//! dropped. One node serves every torrent of the session, as in libtorrent and rqbit.
//!
//! The schedule is kept in the task, not in a task per torrent: a lookup every 15 minutes, or
//! every minute while the torrent has few peers, and soon again (5 s doubling to 15 minutes)
//! while lookups find nothing, which is the case until the routing table has filled. Those
//! lookups go again at once when the bootstrap completes, or when the first node enters an
//! empty routing table. At most [`MAX_LOOKUPS`] of our lookups run at once; the others wait
//! their turn.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bitswarm_dht::{Config, Dht, Event, InfoHash, LookupId};
use bitswarm_metainfo::Metainfo;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::live::{Live, Source};

/// The usual public routers, for a session that names none of its own.
pub const DEFAULT_ROUTERS: &[&str] =
    &["router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881"];

/// Our lookups under way at once (the node bounds its queries too).
const MAX_LOOKUPS: usize = 8;
/// A lookup of a torrent that has peers enough (BEP 5 peers expire after 30 minutes; libtorrent
/// announces every 15).
const INTERVAL: Duration = Duration::from_secs(15 * 60);
/// A lookup of a torrent with few peers.
const HUNGRY_INTERVAL: Duration = Duration::from_secs(60);
/// After a lookup that found nothing: this, doubling to [`MAX_RETRY`] (as long as a torrent with
/// peers waits: a daemon's thousands of dead torrents cost no more than live ones).
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = INTERVAL;
/// A lookup with no end reported within this is taken as over (the node may drop its oldest
/// lookups under load, without an event).
const LOOKUP_DEADLINE: Duration = Duration::from_secs(120);
/// How often the routing table is written to the state file.
const SAVE_EVERY: Duration = Duration::from_secs(10 * 60);
/// How long resolving the routers' names may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// Fewer connections than this makes a torrent look for peers every minute.
const FEW_PEERS: usize = 10;

/// Where the peers of a lookup go.
pub(crate) trait Sink: Send + Sync {
    /// Takes peers; false when nobody wants them any more (the registration then ends).
    fn add(&self, peers: &[SocketAddr]) -> bool;
    /// Wants more peers soon.
    fn hungry(&self) -> bool;
}

/// A running torrent: peers go where every other source's do.
impl Sink for Weak<Live> {
    fn add(&self, peers: &[SocketAddr]) -> bool {
        let Some(live) = self.upgrade() else { return false };
        live.add_peers(peers.iter().copied(), Source::Dht);
        true
    }
    fn hungry(&self) -> bool {
        self.upgrade().is_some_and(|l| !l.is_complete() && Live::counts_in(&l.state()).0 < FEW_PEERS)
    }
}

/// A magnet link's metadata fetch.
impl Sink for mpsc::UnboundedSender<SocketAddr> {
    fn add(&self, peers: &[SocketAddr]) -> bool {
        peers.iter().all(|p| self.send(*p).is_ok())
    }
    fn hungry(&self) -> bool {
        !self.is_closed()
    }
}

/// What the DHT node is doing, for progress lines and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// The UDP address the node listens on.
    pub addr: Option<SocketAddr>,
    /// Nodes in the routing tables (IPv4 and IPv6).
    pub nodes: usize,
    /// Our lookups under way.
    pub lookups: usize,
    /// Info-hashes registered (running public torrents and metadata fetches).
    pub torrents: usize,
    /// Lookups finished since the start.
    pub lookups_done: usize,
    /// Peers the DHT gave our torrents since the start.
    pub peers_found: usize,
}

#[derive(Default)]
struct Shared {
    nodes: AtomicUsize,
    lookups: AtomicUsize,
    torrents: AtomicUsize,
    lookups_done: AtomicUsize,
    peers_found: AtomicUsize,
}

enum Command {
    Register {
        id: u64,
        info_hash: InfoHash,
        announce: Option<u16>,
        sink: Box<dyn Sink>,
    },
    Unregister {
        id: u64,
    },
    /// Nodes to ping (they enter the routing table if they answer).
    AddNodes(Vec<SocketAddr>),
    /// Routers resolved: bootstrap through them.
    Routers(Vec<SocketAddr>),
    /// The nodes of the routing tables, good ones first.
    Table(oneshot::Sender<Vec<bitswarm_dht::NodeInfo>>),
    /// Save the routing table and end.
    Shutdown(oneshot::Sender<()>),
}

/// What the session holds of its DHT node. The node ends at [`DhtHandle::shutdown`] (saving its
/// table), or without saving once this and every [`Registration`] are dropped.
pub(crate) struct DhtHandle {
    tx: mpsc::UnboundedSender<Command>,
    /// The UDP address the node listens on.
    pub addr: SocketAddr,
    next_id: AtomicUsize,
    shared: Arc<Shared>,
}

/// A torrent's place in the DHT's schedule: lookups stop when it is dropped.
pub(crate) struct Registration {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Unregister { id: self.id });
    }
}

/// How the session's node is set up.
pub(crate) struct DhtOptions {
    /// The UDP address to bind (the peer port, conventionally).
    pub bind: SocketAddr,
    /// `HOST:PORT` of the routers to bootstrap through.
    pub routers: Vec<String>,
    /// Where the routing table is kept across restarts.
    pub state_file: Option<PathBuf>,
}

impl DhtHandle {
    /// Binds the UDP socket (the port asked for; any free one if it is taken) and starts the
    /// node's task on the current runtime.
    pub async fn start(opts: DhtOptions) -> std::io::Result<DhtHandle> {
        let socket = match bind(opts.bind) {
            Ok(s) => s,
            Err(e) if opts.bind.port() != 0 => {
                warn!("DHT: cannot bind {}: {e}; using any free port", opts.bind);
                bind(SocketAddr::new(opts.bind.ip(), 0))?
            }
            Err(e) => return Err(e),
        };
        let local = socket.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::unbounded_channel();
        // The routers are resolved apart from the node, which answers queries meanwhile. A
        // machine that starts offline resolves none: they are tried again (30 s doubling to
        // 10 minutes) until some resolve; the node retries those it cannot reach itself.
        let routers = opts.routers.clone();
        let rtx = tx.downgrade();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(30);
            loop {
                let addrs = resolve(&routers).await;
                let resolved = !addrs.is_empty();
                let Some(tx) = rtx.upgrade() else { return };
                let _ = tx.send(Command::Routers(addrs));
                drop(tx);
                if resolved || routers.is_empty() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(600));
            }
        });
        tokio::spawn(drive(socket, local, opts.state_file, rx, shared.clone()));
        info!("DHT node on UDP {local}");
        Ok(DhtHandle { tx, addr: local, next_id: AtomicUsize::new(1), shared })
    }

    /// Looks `info_hash` up now and then on schedule, its peers going to `sink`; with
    /// `announce`, announces us on that TCP port too. Until the registration is dropped.
    pub fn register(&self, info_hash: InfoHash, announce: Option<u16>, sink: Box<dyn Sink>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let _ = self.tx.send(Command::Register { id, info_hash, announce, sink });
        Registration { id, tx: self.tx.clone() }
    }

    /// Nodes learned elsewhere (a peer's PORT message, the user).
    pub fn add_nodes(&self, nodes: Vec<SocketAddr>) {
        if !nodes.is_empty() {
            let _ = self.tx.send(Command::AddNodes(nodes));
        }
    }

    /// Nodes by name and port (a .torrent's `nodes`): resolved apart from the node, then pinged.
    pub fn add_node_names(&self, nodes: Vec<(String, u16)>) {
        if nodes.is_empty() {
            return;
        }
        let tx = self.tx.downgrade();
        tokio::spawn(async move {
            let names: Vec<String> = nodes
                .iter()
                .map(|(h, p)| if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") })
                .collect();
            let addrs = resolve(&names).await;
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Command::AddNodes(addrs));
            }
        });
    }

    pub fn stats(&self) -> DhtStats {
        let s = &self.shared;
        DhtStats {
            addr: Some(self.addr),
            nodes: s.nodes.load(Ordering::Relaxed),
            lookups: s.lookups.load(Ordering::Relaxed),
            torrents: s.torrents.load(Ordering::Relaxed),
            lookups_done: s.lookups_done.load(Ordering::Relaxed),
            peers_found: s.peers_found.load(Ordering::Relaxed),
        }
    }

    /// Saves the routing table (when there is a state file) and ends the node.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

/// The session's node, when its settings ask for one: on UDP at the listening address and
/// port. A node that cannot start is logged, and the session goes on without it.
pub(crate) async fn start_for(s: &crate::Settings, listen: SocketAddr) -> Option<DhtHandle> {
    if !s.dht {
        return None;
    }
    let opts = DhtOptions { bind: listen, routers: s.dht_routers.clone(), state_file: s.dht_state.clone() };
    match DhtHandle::start(opts).await {
        Ok(d) => Some(d),
        Err(e) => {
            warn!("DHT: cannot start on UDP {listen}: {e}");
            None
        }
    }
}

/// A DHT node alone, without torrents (`bitswarm dht`): it answers queries, keeps its routing
/// table, and can be the router others join through.
pub struct DhtNode {
    handle: DhtHandle,
}

impl DhtNode {
    /// Binds `bind` (UDP) and joins through `routers` (none: it waits to be found).
    pub async fn start(
        bind: SocketAddr,
        routers: Vec<String>,
        state_file: Option<PathBuf>,
    ) -> std::io::Result<DhtNode> {
        Ok(DhtNode { handle: DhtHandle::start(DhtOptions { bind, routers, state_file }).await? })
    }
    pub fn stats(&self) -> DhtStats {
        self.handle.stats()
    }
    /// Nodes to ping (they enter the routing table if they answer).
    pub fn add_nodes(&self, nodes: Vec<SocketAddr>) {
        self.handle.add_nodes(nodes);
    }
    /// Saves the routing table (with a state file) and ends the node.
    pub async fn shutdown(&self) {
        self.handle.shutdown().await;
    }
    /// The nodes of the routing tables (id and address), good ones first.
    pub async fn routing_table(&self) -> Vec<(bitswarm_dht::NodeId, SocketAddr)> {
        let (tx, rx) = oneshot::channel();
        if self.handle.tx.send(Command::Table(tx)).is_err() {
            return Vec::new();
        }
        rx.await.map(|v| v.into_iter().map(|n| (n.id, n.addr)).collect()).unwrap_or_default()
    }
}

/// The session's node, which may start and stop while the session runs (Transmission's
/// `dht-enabled`). Torrents register with the slot, not with a node: their registrations move
/// to each node that starts, and end (their lookups with them) when it stops.
#[derive(Default)]
pub(crate) struct DhtSlot {
    inner: Arc<std::sync::Mutex<SlotInner>>,
    /// One start or stop at a time.
    toggle: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotInner {
    handle: Option<Arc<DhtHandle>>,
    next: u64,
    wants: HashMap<u64, Want>,
}

/// A registration kept by the slot: what to ask of each node that runs.
struct Want {
    info_hash: InfoHash,
    announce: Option<u16>,
    sink: Arc<dyn Sink>,
    /// With the node running now.
    reg: Option<Registration>,
}

/// One sink shared by the registrations with successive nodes.
struct SharedSink(Arc<dyn Sink>);

impl Sink for SharedSink {
    fn add(&self, peers: &[SocketAddr]) -> bool {
        self.0.add(peers)
    }
    fn hungry(&self) -> bool {
        self.0.hungry()
    }
}

/// A torrent's place with the slot: its lookups, with whichever node runs, stop when it is
/// dropped.
pub(crate) struct SlotRegistration {
    id: u64,
    inner: Weak<std::sync::Mutex<SlotInner>>,
}

impl Drop for SlotRegistration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let want = inner.lock().unwrap_or_else(|p| p.into_inner()).wants.remove(&self.id);
            drop(want);
        }
    }
}

impl DhtSlot {
    pub fn new(handle: Option<DhtHandle>) -> DhtSlot {
        let slot = DhtSlot::default();
        slot.lock().handle = handle.map(Arc::new);
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node running now.
    pub fn handle(&self) -> Option<Arc<DhtHandle>> {
        self.lock().handle.clone()
    }

    /// Registers with the node running now and with every node started later, until dropped.
    fn register(&self, info_hash: InfoHash, announce: Option<u16>, sink: Arc<dyn Sink>) -> SlotRegistration {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        let reg = inner.handle.as_ref().map(|h| h.register(info_hash, announce, Box::new(SharedSink(sink.clone()))));
        inner.wants.insert(id, Want { info_hash, announce, sink, reg });
        SlotRegistration { id, inner: Arc::downgrade(&self.inner) }
    }

    /// Starts a node with `s`'s routers and state file on `listen` unless one runs; the
    /// registered torrents go to it at once. False if it could not start (logged).
    pub async fn start(&self, s: &crate::Settings, listen: SocketAddr) -> bool {
        let _one = self.toggle.lock().await;
        if self.handle().is_some() {
            return true;
        }
        let opts = DhtOptions { bind: listen, routers: s.dht_routers.clone(), state_file: s.dht_state.clone() };
        let h = match DhtHandle::start(opts).await {
            Ok(h) => Arc::new(h),
            Err(e) => {
                warn!("DHT: cannot start on UDP {listen}: {e}");
                return false;
            }
        };
        let mut inner = self.lock();
        for w in inner.wants.values_mut() {
            w.reg = Some(h.register(w.info_hash, w.announce, Box::new(SharedSink(w.sink.clone()))));
        }
        inner.handle = Some(h);
        true
    }

    /// The peer port moved to `listen`'s: torrents announce that port from now on, and a
    /// running node moves to it (UDP on the peer port, as at the start; its routing table
    /// goes along through the state file, when there is one). False if the node could not
    /// start again (logged).
    pub async fn move_to(&self, s: &crate::Settings, listen: SocketAddr) -> bool {
        let running = {
            let mut inner = self.lock();
            for w in inner.wants.values_mut() {
                if w.announce.is_some() {
                    w.announce = Some(listen.port());
                }
            }
            inner.handle.is_some()
        };
        if !running {
            return true;
        }
        self.stop().await;
        self.start(s, listen).await
    }

    /// Stops the node (its routing table saved); the registrations wait for the next.
    pub async fn stop(&self) {
        let _one = self.toggle.lock().await;
        let (h, regs) = {
            let mut inner = self.lock();
            let regs: Vec<Registration> = inner.wants.values_mut().filter_map(|w| w.reg.take()).collect();
            (inner.handle.take(), regs)
        };
        drop(regs);
        if let Some(h) = h {
            h.shutdown().await;
            info!("DHT node on UDP {} stopped", h.addr);
        }
    }
}

/// A run of `meta` registers here: lookups and announces on our listening port while it runs
/// (with whichever node runs), unless the torrent is private (BEP 27: private torrents get peers
/// from their trackers only).
pub(crate) fn register_run(core: &crate::core::Core, meta: &Metainfo, live: &Arc<Live>) -> Option<SlotRegistration> {
    if meta.info.private {
        return None;
    }
    if let Some(d) = core.dht.handle() {
        d.add_node_names(meta.nodes());
    }
    let sink: Arc<dyn Sink> = Arc::new(Arc::downgrade(live));
    Some(core.dht.register(meta.info_hash, Some(core.listen_addr().port()), sink))
}

/// The UDP port of our DHT node for connections of `meta`'s torrent (None: no node, or a
/// private torrent, whose peers never hear of the DHT).
pub(crate) fn port_for(core: &crate::core::Core, meta: &Metainfo) -> Option<u16> {
    if meta.info.private {
        return None;
    }
    core.dht.handle().map(|d| d.addr.port())
}

/// A peer of `meta`'s torrent sent a PORT message: its DHT node is pinged, and enters the
/// routing table if it answers (not for private torrents).
pub(crate) fn node_from_peer(core: &crate::core::Core, meta: &Metainfo, addr: SocketAddr) {
    if let Some(d) = core.dht.handle().filter(|_| !meta.info.private) {
        debug!("DHT: node {addr} from a peer's PORT message");
        d.add_nodes(vec![addr]);
    }
}

/// A magnet link's metadata fetch registers here (with whichever node runs): lookups (no
/// announce: we have nothing to give yet) whose peers go to `tx`.
pub(crate) fn register_fetch(
    core: &crate::core::Core,
    info_hash: InfoHash,
    tx: mpsc::UnboundedSender<SocketAddr>,
) -> Option<SlotRegistration> {
    core.dht.handle()?;
    let sink: Arc<dyn Sink> = Arc::new(tx);
    Some(core.dht.register(info_hash, None, sink))
}

/// The node's socket; on `::`, dual-stack (the IPv4 DHT too) whatever the system's default.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    crate::dual_stack(&s, addr)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Parses `HOST:PORT` (a name, an IPv4 address, or `[IPv6]:PORT`) without resolving it: the
/// error says what is wrong.
pub fn parse_router(s: &str) -> Result<(String, u16), String> {
    let zero = || Err(format!("{s:?}: port 0 is not a port to send to"));
    if let Ok(a) = s.parse::<SocketAddr>() {
        return if a.port() == 0 { zero() } else { Ok((a.ip().to_string(), a.port())) };
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: a DHT router is HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: {port:?} is not a port (1-65535)"))?;
    if port == 0 {
        return zero();
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(format!("{s:?}: {host:?} is not a host name or IP address"));
    }
    Ok((host.to_owned(), port))
}

/// Resolves the routers; those that do not resolve are logged and left out.
async fn resolve(routers: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for r in routers {
        if let Ok(a) = r.parse::<SocketAddr>() {
            out.push(a);
            continue;
        }
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(r.as_str())).await {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(e)) => warn!("DHT router {r}: {e}"),
            Err(_) => warn!("DHT router {r}: not resolved within {RESOLVE_TIMEOUT:?}"),
        }
    }
    out
}

/// A registered info-hash.
struct Reg {
    info_hash: InfoHash,
    announce: Option<u16>,
    sink: Box<dyn Sink>,
    /// When the next lookup is due (None while one runs); in [`Driver::due`] too.
    next: Option<Instant>,
    /// The lookup under way.
    lookup: Option<LookupId>,
    /// Lookups in a row that found nothing.
    failures: u32,
    /// Peers the lookup under way found.
    found: usize,
}

struct Driver {
    dht: Dht,
    socket: UdpSocket,
    /// A dual-stack IPv6 socket: IPv4 destinations go out IPv4-mapped.
    mapped: bool,
    regs: HashMap<u64, Reg>,
    /// The registrations' next lookups in time order: what is due is found without walking
    /// every registration (a daemon has thousands).
    due: BTreeSet<(Instant, u64)>,
    /// Our lookups under way: whose, and when they started.
    lookups: HashMap<LookupId, (u64, Instant)>,
    /// Lookups that found nothing while the routing table grew go again soon, not after the
    /// backoff: the table was empty when the first ran (a bootstrap that found nobody).
    table_at_start: HashMap<LookupId, usize>,
    shared: Arc<Shared>,
    state_file: Option<PathBuf>,
    /// The id changed: the state file is written at the next turn of the loop.
    save_soon: bool,
}

async fn drive(
    socket: UdpSocket,
    local: SocketAddr,
    state_file: Option<PathBuf>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let (v4, v6) = match local.ip() {
        IpAddr::V4(_) => (true, false),
        // Dual-stack when bound to every address.
        IpAddr::V6(a) => (a.is_unspecified(), true),
    };
    let mut config = Config { ipv4: v4, ipv6: v6, version: Some(b"BW\x01\x00".to_vec()), ..Config::default() };
    let saved = match state_file.clone() {
        Some(p) => tokio::task::spawn_blocking(move || std::fs::read(&p).ok()).await.ok().flatten(),
        None => None,
    };
    let saved = saved.and_then(|b| match bitswarm_dht::load(&b) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("DHT state: {e:?}; starting afresh");
            None
        }
    });
    if let Some(s) = &saved {
        config.node_id = Some(s.id);
    }
    let mut dht = match Dht::with_os_seed(config, Instant::now().into_std()) {
        Ok(d) => d,
        Err(e) => return warn!("DHT: {e}"),
    };
    if let Some(s) = &saved {
        dht.import_nodes(Instant::now().into_std(), &s.nodes);
        debug!("DHT: {} nodes from the state file", s.nodes.len());
    }
    let mut d = Driver {
        dht,
        socket,
        mapped: matches!(local.ip(), IpAddr::V6(a) if a.is_unspecified()),
        regs: HashMap::new(),
        due: BTreeSet::new(),
        lookups: HashMap::new(),
        table_at_start: HashMap::new(),
        shared,
        state_file,
        save_soon: false,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_save = Instant::now();
    loop {
        d.flush().await;
        let now = Instant::now();
        d.start_due(now);
        d.flush().await;
        d.publish();
        if now.duration_since(last_save) >= SAVE_EVERY || std::mem::take(&mut d.save_soon) {
            last_save = now;
            d.save().await;
        }
        let wake = [d.dht.poll_timeout().map(Instant::from_std), d.next_due(), Some(last_save + SAVE_EVERY)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(60));
        tokio::select! {
            r = d.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => d.dht.handle_packet(Instant::now().into_std(), from, &buf[..n]),
                // ICMP errors of earlier sends (port unreachable) come back here: not fatal.
                // (A pause, so that an error that repeats cannot spin the loop.)
                Err(e) => {
                    debug!("DHT recv: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Shutdown(done)) => {
                    d.save().await;
                    let _ = done.send(());
                    return;
                }
                Some(c) => d.command(c),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now().into_std();
        if d.dht.poll_timeout().is_some_and(|t| t <= now) {
            d.dht.handle_timeout(now);
        }
    }
}

impl Driver {
    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Register { id, info_hash, announce, sink } => {
                let r = Reg { info_hash, announce, sink, next: None, lookup: None, failures: 0, found: 0 };
                self.regs.insert(id, r);
                self.set_next(id, Some(now));
            }
            Command::Unregister { id } => self.unregister(id),
            Command::Table(reply) => {
                let _ = reply.send(self.dht.export_nodes(now.into_std()));
            }
            Command::AddNodes(nodes) => {
                for n in nodes {
                    self.dht.add_node(now.into_std(), n);
                }
            }
            Command::Routers(routers) => {
                if routers.is_empty() {
                    debug!("DHT: no routers");
                }
                self.dht.bootstrap(now.into_std(), &routers);
            }
            // Handled by the loop.
            Command::Shutdown(_) => {}
        }
    }

    /// Sends what the node has to send, and hands on what it has to tell.
    async fn flush(&mut self) {
        while let Some(t) = self.dht.poll_transmit() {
            let dest = match t.dest {
                SocketAddr::V4(a) if self.mapped => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
                d => d,
            };
            if let Err(e) = self.socket.send_to(&t.bytes, dest).await {
                debug!("DHT send to {dest}: {e}");
            }
        }
        let now = Instant::now();
        while let Some(ev) = self.dht.poll_event() {
            match ev {
                Event::Peers { lookup, peers, .. } => {
                    let Some(&(id, _)) = self.lookups.get(&lookup) else { continue };
                    let Some(r) = self.regs.get_mut(&id) else { continue };
                    r.found += peers.len();
                    self.shared.peers_found.fetch_add(peers.len(), Ordering::Relaxed);
                    if !r.sink.add(&peers) {
                        self.unregister(id);
                    }
                }
                Event::LookupDone { lookup, .. } => {
                    // An announce goes on to its announces; it ends with AnnounceDone.
                    let announcing = self
                        .lookups
                        .get(&lookup)
                        .and_then(|(id, _)| self.regs.get(id))
                        .is_some_and(|r| r.announce.is_some());
                    if !announcing {
                        self.finish(lookup, false, now);
                    }
                }
                Event::AnnounceDone { lookup, info_hash, acknowledged } => {
                    debug!("DHT: {info_hash} announced to {acknowledged} nodes");
                    self.finish(lookup, acknowledged > 0, now);
                }
                Event::Bootstrapped { nodes } => {
                    info!("DHT: bootstrapped, {nodes} nodes");
                    if nodes > 0 {
                        self.retry_failed(now);
                    }
                }
                Event::ExternalAddress { ip, new_id: None } => debug!("DHT: our external address is {ip}"),
                // BEP 42: an id that fits the address the other nodes see; kept at once, so
                // that the next start comes back with it.
                Event::ExternalAddress { ip, new_id: Some(id) } => {
                    info!("DHT: our external address is {ip}; node id now {id} (BEP 42)");
                    self.save_soon = true;
                }
                Event::Scrape { .. } => {}
            }
        }
    }

    /// A lookup ended (`announced`: some node took our announce): when the next is due. One that
    /// found no peer and announced nowhere is tried again soon, as the swarm or the routing
    /// table may only be forming.
    fn finish(&mut self, lookup: LookupId, announced: bool, now: Instant) {
        let Some((id, _)) = self.lookups.remove(&lookup) else { return };
        let table_then = self.table_at_start.remove(&lookup).unwrap_or(0);
        let table_now = self.table_len();
        let Some(r) = self.regs.get_mut(&id) else { return };
        self.shared.lookups_done.fetch_add(1, Ordering::Relaxed);
        r.lookup = None;
        let useful = announced || r.found > 0;
        r.failures = if useful { 0 } else { r.failures + 1 };
        let after = if !useful && table_then == 0 && table_now > 0 {
            Duration::from_secs(1)
        } else if !useful {
            FIRST_RETRY.saturating_mul(1 << r.failures.min(10).saturating_sub(1)).min(MAX_RETRY)
        } else if r.sink.hungry() {
            HUNGRY_INTERVAL
        } else {
            INTERVAL
        };
        self.set_next(id, Some(now + after));
    }

    /// Lookups that found nothing, for want of nodes perhaps, go again now.
    fn retry_failed(&mut self, now: Instant) {
        let waiting: Vec<u64> =
            self.regs.iter().filter(|(_, r)| r.failures > 0 && r.lookup.is_none()).map(|(id, _)| *id).collect();
        for id in waiting {
            self.set_next(id, Some(now));
        }
    }

    /// Puts registration `id`'s next lookup at `at` (None: none scheduled).
    fn set_next(&mut self, id: u64, at: Option<Instant>) {
        let Some(r) = self.regs.get_mut(&id) else { return };
        if let Some(old) = r.next.take() {
            self.due.remove(&(old, id));
        }
        if let Some(t) = at {
            r.next = Some(t);
            self.due.insert((t, id));
        }
    }

    fn unregister(&mut self, id: u64) {
        self.set_next(id, None);
        if let Some(l) = self.regs.remove(&id).and_then(|r| r.lookup) {
            self.lookups.remove(&l);
            self.table_at_start.remove(&l);
        }
    }

    /// Starts the lookups that are due, as many as may run.
    fn start_due(&mut self, now: Instant) {
        // Lookups the node never ended (dropped under load) count as over.
        let stale: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|(_, (_, t))| now.duration_since(*t) > LOOKUP_DEADLINE)
            .map(|(l, _)| *l)
            .collect();
        for l in stale {
            self.finish(l, false, now);
        }
        while self.lookups.len() < MAX_LOOKUPS {
            let Some(&(t, id)) = self.due.first() else { break };
            if t > now {
                break;
            }
            self.set_next(id, None);
            let Some(r) = self.regs.get_mut(&id) else { continue };
            let at = now.into_std();
            let l = match r.announce {
                Some(port) => self.dht.announce(at, r.info_hash, port, false),
                None => self.dht.get_peers(at, r.info_hash),
            };
            r.found = 0;
            r.lookup = Some(l);
            self.lookups.insert(l, (id, now));
            let table = self.table_len();
            self.table_at_start.insert(l, table);
        }
    }

    /// When the next registered lookup is due.
    fn next_due(&self) -> Option<Instant> {
        if self.lookups.len() >= MAX_LOOKUPS {
            // The first to end makes room (its event wakes the loop), or the deadline does.
            return self.lookups.values().map(|(_, t)| *t + LOOKUP_DEADLINE).min();
        }
        self.due.first().map(|(t, _)| *t)
    }

    fn table_len(&self) -> usize {
        self.dht.routing_table(false).len() + self.dht.routing_table(true).len()
    }

    fn publish(&mut self) {
        let nodes = self.table_len();
        let s = self.shared.clone();
        if s.nodes.swap(nodes, Ordering::Relaxed) == 0 && nodes > 0 {
            // The first node of an empty table (a node that found us, after a bootstrap that
            // found nobody).
            self.retry_failed(Instant::now());
        }
        s.lookups.store(self.lookups.len(), Ordering::Relaxed);
        s.torrents.store(self.regs.len(), Ordering::Relaxed);
    }

    /// Writes the routing table to the state file (off the async threads; a new file renamed
    /// over the old, so a crash leaves one or the other).
    async fn save(&self) {
        let Some(path) = self.state_file.clone() else { return };
        let bytes = self.dht.save(Instant::now().into_std());
        let r = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        match r {
            Ok(Ok(())) => debug!("DHT: routing table saved"),
            Ok(Err(e)) => warn!("DHT: cannot save the routing table: {e}"),
            Err(e) => warn!("DHT: cannot save the routing table: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routers_parse_or_say_why() {
        assert_eq!(parse_router("router.bittorrent.com:6881").unwrap(), ("router.bittorrent.com".into(), 6881));
        assert_eq!(parse_router("127.0.1.1:7000").unwrap(), ("127.0.1.1".into(), 7000));
        assert_eq!(parse_router("[::1]:7000").unwrap(), ("::1".into(), 7000));
        for bad in
            ["router", "router:", "router:x", "router:70000", ":6881", "a..b:1", "host:0", "bad host:1", "1.2.3.4:0"]
        {
            assert!(parse_router(bad).is_err(), "{bad}");
        }
    }
}
