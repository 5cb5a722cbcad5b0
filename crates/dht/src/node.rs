//! The DHT node: a state machine handed packets and the time, in the manner of quinn-proto.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::bep42::{self, Bep42};
use crate::bloom::Bloom;
use crate::id::{InfoHash, NodeId};
use crate::krpc::{self, Body, Message, Method, NodeInfo, Query, Response};
use crate::limit::{PerIpLimit, TokenBucket};
use crate::lookup::Traversal;
use crate::rng::Rng;
use crate::routing::{Inserted, RoutingTable};
use crate::store::PeerStore;
use crate::token::Tokens;

/// Settings of a node. [`Config::default`] is what the public DHT expects.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bucket size, and how many nodes a lookup ends with (BEP 5: 8).
    pub k: usize,
    /// Queries a lookup keeps in flight (Kademlia's alpha).
    pub alpha: usize,
    /// How long a query may go unanswered before it counts as failed.
    pub query_timeout: Duration,
    /// Take part in the IPv4 DHT.
    pub ipv4: bool,
    /// Take part in the IPv6 DHT (BEP 32): a separate routing table, `nodes6`.
    pub ipv6: bool,
    /// BEP 43: send `ro=1`, answer no queries (for hosts that cannot receive unsolicited
    /// packets, or do not want to serve).
    pub read_only: bool,
    /// BEP 42 policy.
    pub bep42: Bep42,
    /// Our id; random (or derived from our external address under BEP 42) if `None`. Keep the
    /// id across restarts ([`Dht::id`], [`Dht::save`]) so that others' tables stay right.
    pub node_id: Option<NodeId>,
    /// `v` sent in our messages (client and version), if any.
    pub version: Option<Vec<u8>>,
    /// Our queries in flight at most (lookups wait, pings are dropped beyond it).
    pub max_outstanding: usize,
    /// Our queries per second at most, and the burst allowed.
    pub queries_per_sec: f64,
    pub query_burst: f64,
    /// Queries answered per second per source address, and the burst allowed; beyond that
    /// queries are dropped unanswered.
    pub per_ip_rate: f64,
    pub per_ip_burst: f64,
    /// Source addresses rate-limited at once (the map is bounded).
    pub max_tracked_ips: usize,
    /// Info-hashes stored for others at most.
    pub max_torrents: usize,
    /// Peers stored per info-hash at most.
    pub max_peers_per_torrent: usize,
    /// How long an announced peer is kept.
    pub peer_ttl: Duration,
    /// Peers in one `get_peers` answer at most (50 fit a 1500-byte packet even in IPv6).
    pub max_values: usize,
    /// BEP 51: info-hashes per `sample_infohashes` answer, and the `interval` we ask for.
    pub max_samples: usize,
    pub sample_interval: u32,
    /// A bucket unchanged this long is refreshed with a lookup (BEP 5: 15 minutes).
    pub refresh_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 8,
            alpha: 3,
            query_timeout: Duration::from_secs(2),
            ipv4: true,
            ipv6: true,
            read_only: false,
            bep42: Bep42::Prefer,
            node_id: None,
            version: None,
            max_outstanding: 256,
            queries_per_sec: 250.0,
            query_burst: 50.0,
            per_ip_rate: 10.0,
            per_ip_burst: 40.0,
            max_tracked_ips: 4096,
            max_torrents: 2000,
            max_peers_per_torrent: 500,
            peer_ttl: Duration::from_secs(30 * 60),
            max_values: 50,
            max_samples: 20,
            sample_interval: 6 * 3600,
            refresh_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// A configuration that cannot work, or no randomness to seed from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(&'static str),
    #[error("no randomness from the OS: {0}")]
    Random(String),
}

impl Config {
    /// Checks the fields against each other.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m| Err(Error::Config(m));
        if !(1..=64).contains(&self.k) {
            return bad("k must be 1 to 64");
        }
        if self.alpha == 0 {
            return bad("alpha must be at least 1");
        }
        if !self.ipv4 && !self.ipv6 {
            return bad("at least one of ipv4 and ipv6");
        }
        if self.query_timeout.is_zero() {
            return bad("query_timeout must be positive");
        }
        if self.max_outstanding < self.alpha {
            return bad("max_outstanding must be at least alpha");
        }
        if !(self.queries_per_sec > 0.0 && self.query_burst >= 1.0) {
            return bad("queries_per_sec must be positive and query_burst at least 1");
        }
        if !(self.per_ip_rate > 0.0 && self.per_ip_burst >= 1.0) {
            return bad("per_ip_rate must be positive and per_ip_burst at least 1");
        }
        if self.max_tracked_ips == 0 {
            return bad("max_tracked_ips must be positive");
        }
        Ok(())
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Names a lookup started by [`Dht::get_peers`], [`Dht::announce`], [`Dht::find_node`] or
/// [`Dht::scrape`]; its events carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// What a lookup cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Queries sent (announces not counted).
    pub queries: u32,
    pub responses: u32,
    pub timeouts: u32,
    /// KRPC errors received.
    pub errors: u32,
    /// Round trips on the longest chain of queries: 1 if the nodes of our own table were
    /// enough, one more per hop through nodes they named.
    pub rounds: u32,
    pub elapsed: Duration,
}

/// What the node has to tell its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Peers for a `get_peers`/`announce` lookup, as they arrive (each peer once per lookup).
    Peers { lookup: LookupId, info_hash: InfoHash, peers: Vec<SocketAddr> },
    /// A lookup's search is over: the closest nodes that answered, nearest first.
    LookupDone { lookup: LookupId, target: NodeId, closest: Vec<NodeInfo>, stats: LookupStats },
    /// A [`Dht::scrape`] is over: BEP 33 estimates of the swarm.
    Scrape { lookup: LookupId, info_hash: InfoHash, seeds: f64, peers: f64 },
    /// The announces after an [`Dht::announce`] lookup are answered or timed out.
    AnnounceDone { lookup: LookupId, info_hash: InfoHash, acknowledged: usize },
    /// The bootstrap lookup is over; `nodes` in the routing tables. If none, it is retried.
    Bootstrapped { nodes: usize },
    /// Enough nodes agree on our external address (BEP 42). Under BEP 42 an id that did not
    /// fit it was replaced: `new_id` (persist it).
    ExternalAddress { ip: IpAddr, new_id: Option<NodeId> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FindNode,
    GetPeers {
        announce: Option<(u16, bool)>,
        scrape: bool,
    },
    Bootstrap,
    /// A bucket refresh: no events.
    Refresh,
}

#[derive(Debug)]
enum Phase {
    Searching,
    Announcing { pending: usize, acknowledged: usize },
}

#[derive(Debug)]
struct Lookup {
    kind: Kind,
    target: NodeId,
    traversals: Vec<Traversal>,
    started: Instant,
    stats: LookupStats,
    peers_seen: HashSet<SocketAddr>,
    scrape: Option<(Bloom, Bloom)>,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Ping,
    Lookup { lookup: u64, traversal: usize },
    Announce { lookup: u64 },
}

#[derive(Debug)]
struct Outstanding {
    addr: SocketAddr,
    id: Option<NodeId>,
    purpose: Purpose,
}

/// Most peers a lookup remembers having reported (to report each once).
const MAX_PEERS_SEEN: usize = 2000;
/// Housekeeping period: refreshes, pings of questionable nodes, token rotation.
const TICK: Duration = Duration::from_secs(5);
/// Expiry of stored peers and of idle rate-limit entries.
const SWEEP: Duration = Duration::from_secs(60);
/// Pings waiting for sending budget at most.
const MAX_PENDING_PINGS: usize = 64;
/// Bootstrap routers remembered at most.
const MAX_ROUTERS: usize = 32;
/// Lookups under way at most (user lookups included); the oldest makes room.
pub const MAX_LOOKUPS: usize = 256;
/// Internal (refresh) lookups at once at most.
const MAX_INTERNAL_LOOKUPS: usize = 8;

/// A Mainline DHT node without I/O.
///
/// Drive it with one UDP socket (dual-stack for IPv6): feed each datagram to
/// [`handle_packet`](Dht::handle_packet), send what [`poll_transmit`](Dht::poll_transmit) gives,
/// read [`poll_event`](Dht::poll_event), and call [`handle_timeout`](Dht::handle_timeout) when
/// the time [`poll_timeout`](Dht::poll_timeout) names has come. All time comes from the caller,
/// so a simulation can run it on virtual time; all randomness from the seed given to
/// [`Dht::new`].
#[derive(Debug)]
pub struct Dht {
    config: Config,
    id: NodeId,
    rng: Rng,
    /// IPv4 and IPv6 tables (BEP 32).
    tables: [RoutingTable; 2],
    tokens: Tokens,
    store: PeerStore,
    outstanding: BTreeMap<u32, Outstanding>,
    /// Deadlines in sending order (one timeout for all queries keeps them sorted).
    deadlines: VecDeque<(Instant, u32)>,
    lookups: BTreeMap<u64, Lookup>,
    next_lookup: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    send_budget: TokenBucket,
    /// Whether something waits for sending budget.
    starved: bool,
    ip_limit: PerIpLimit,
    pending_pings: VecDeque<(SocketAddr, Option<NodeId>)>,
    routers: Vec<SocketAddr>,
    bootstrap: Option<u64>,
    next_bootstrap: Option<Instant>,
    bootstrap_backoff: Duration,
    next_tick: Instant,
    next_sweep: Instant,
    external_ip: Option<IpAddr>,
    /// BEP 42: what responders say our address is, IPv4 and IPv6 apart.
    votes: [crate::vote::Voter; 2],
}

fn fam(v6: bool) -> usize {
    v6 as usize
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl Dht {
    /// A node. `seed` drives every random choice (ids, transaction ids, token secrets):
    /// the same seed and inputs replay the same run. Use [`Dht::with_os_seed`] outside tests.
    pub fn new(config: Config, seed: [u8; 32], now: Instant) -> Result<Dht, Error> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let id = config.node_id.unwrap_or_else(|| NodeId(rng.bytes()));
        let prefer = config.bep42 != Bep42::Off;
        let tables = [RoutingTable::new(id, config.k, prefer, now), RoutingTable::new(id, config.k, prefer, now)];
        let tokens = Tokens::new(rng.bytes(), now);
        Ok(Dht {
            id,
            tables,
            tokens,
            store: PeerStore::new(config.max_torrents, config.max_peers_per_torrent, config.peer_ttl),
            outstanding: BTreeMap::new(),
            deadlines: VecDeque::new(),
            lookups: BTreeMap::new(),
            next_lookup: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            send_budget: TokenBucket::new(config.queries_per_sec, config.query_burst, now),
            starved: false,
            ip_limit: PerIpLimit::new(config.per_ip_rate, config.per_ip_burst, config.max_tracked_ips),
            pending_pings: VecDeque::new(),
            routers: Vec::new(),
            bootstrap: None,
            next_bootstrap: None,
            bootstrap_backoff: Duration::from_secs(10),
            next_tick: now + TICK,
            next_sweep: now + SWEEP,
            external_ip: None,
            votes: Default::default(),
            rng,
            config,
        })
    }

    /// [`Dht::new`] seeded from the operating system.
    pub fn with_os_seed(config: Config, now: Instant) -> Result<Dht, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        Dht::new(config, seed, now)
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Our external address, once enough nodes agree on it (BEP 42's `ip` field).
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.external_ip
    }

    /// The IPv4 (`v6` false) or IPv6 routing table.
    pub fn routing_table(&self, v6: bool) -> &RoutingTable {
        &self.tables[fam(v6)]
    }

    /// Info-hashes we store peers for, on behalf of others.
    pub fn stored_torrents(&self) -> usize {
        self.store.len()
    }

    /// Lookups running.
    pub fn active_lookups(&self) -> usize {
        self.lookups.len()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Dht::handle_timeout`] should be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&(_, tid)) = self.deadlines.front() {
            if self.outstanding.contains_key(&tid) {
                break;
            }
            self.deadlines.pop_front();
        }
        let mut t = self.next_tick.min(self.next_sweep);
        if let Some(&(d, _)) = self.deadlines.front() {
            t = t.min(d);
        }
        if let Some(b) = self.next_bootstrap {
            t = t.min(b);
        }
        if self.starved {
            // Waiting for sending budget: wake when there is some.
            t = t.min(self.send_budget.next_token_at());
        }
        Some(t)
    }

    fn enabled(&self, addr: &SocketAddr) -> bool {
        if addr.is_ipv6() { self.config.ipv6 } else { self.config.ipv4 }
    }

    // ----------------------------------------------------------------- user calls

    /// Joins the DHT through `routers` (addresses only, like router.bittorrent.com:6881):
    /// looks up our own id. Routers are asked but never enter the routing table. If the table
    /// is still empty afterwards, bootstrap is retried with backoff (10 s doubling to 5 min).
    pub fn bootstrap(&mut self, now: Instant, routers: &[SocketAddr]) {
        for r in routers.iter().map(|r| canonical(*r)) {
            if !self.routers.contains(&r) && self.routers.len() < MAX_ROUTERS && self.enabled(&r) {
                self.routers.push(r);
            }
        }
        self.start_bootstrap(now);
    }

    fn start_bootstrap(&mut self, now: Instant) {
        if let Some(b) = self.bootstrap
            && self.lookups.contains_key(&b)
        {
            return;
        }
        self.next_bootstrap = None;
        let id = self.start_lookup(now, self.id, Kind::Bootstrap);
        self.bootstrap = Some(id.0);
        self.drive(now);
    }

    /// Looks for peers of `info_hash`: [`Event::Peers`] as they come, then
    /// [`Event::LookupDone`].
    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) -> LookupId {
        let id = self.start_lookup(now, info_hash.into(), Kind::GetPeers { announce: None, scrape: false });
        self.drive(now);
        id
    }

    /// [`Dht::get_peers`], then announces us as a peer on `port` (or, with `implied_port`, on
    /// the port our DHT packets come from) to the closest nodes that gave a token; ends with
    /// [`Event::AnnounceDone`].
    pub fn announce(&mut self, now: Instant, info_hash: InfoHash, port: u16, implied_port: bool) -> LookupId {
        let kind = Kind::GetPeers { announce: Some((port, implied_port)), scrape: false };
        let id = self.start_lookup(now, info_hash.into(), kind);
        self.drive(now);
        id
    }

    /// [`Dht::get_peers`] asking for BEP 33 bloom filters too; ends with [`Event::Scrape`]
    /// before [`Event::LookupDone`].
    pub fn scrape(&mut self, now: Instant, info_hash: InfoHash) -> LookupId {
        let id = self.start_lookup(now, info_hash.into(), Kind::GetPeers { announce: None, scrape: true });
        self.drive(now);
        id
    }

    /// Looks for the nodes closest to `target`; ends with [`Event::LookupDone`].
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> LookupId {
        let id = self.start_lookup(now, target, Kind::FindNode);
        self.drive(now);
        id
    }

    /// Pings `addr`; if it answers it enters the routing table (for nodes learned elsewhere,
    /// such as the PORT message of the peer protocol).
    pub fn add_node(&mut self, now: Instant, addr: SocketAddr) {
        let addr = canonical(addr);
        if self.enabled(&addr) && self.pending_pings.len() < MAX_PENDING_PINGS {
            self.pending_pings.push_back((addr, None));
            self.drive(now);
        }
    }

    /// Every node of both tables, good ones first (to save across restarts).
    pub fn export_nodes(&self, now: Instant) -> Vec<NodeInfo> {
        let mut v = self.tables[0].nodes(now);
        v.extend(self.tables[1].nodes(now));
        v
    }

    /// Puts saved nodes in the routing tables as unconfirmed: lookups may use them at once,
    /// and they are pinged in turn; the first failure removes them.
    pub fn import_nodes(&mut self, now: Instant, nodes: &[NodeInfo]) {
        for n in nodes {
            let addr = canonical(n.addr);
            if self.acceptable(&n.id, &addr) {
                let valid = bep42::is_valid_id(&n.id, addr.ip());
                self.tables[fam(addr.is_ipv6())].heard_from(n.id, addr, false, valid, now);
            }
        }
    }

    /// Our id and the nodes of both tables in a compact bencoded form, for [`load`].
    pub fn save(&self, now: Instant) -> Vec<u8> {
        save(&self.id, &self.export_nodes(now))
    }

    // ----------------------------------------------------------------- input

    /// Handles one datagram from `from`.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        let from = canonical(from);
        if !self.enabled(&from) || from.port() == 0 {
            return;
        }
        match Message::decode(packet) {
            Err(e) => {
                // Only queries get an error back, and only within the sender's rate.
                if !self.config.read_only
                    && let Some(reply) = e.reply()
                    && self.ip_limit.allow(from.ip(), now)
                {
                    self.send(from, reply);
                }
            }
            Ok(m) => {
                let tid = m.transaction_id;
                match m.body {
                    Body::Query(q) => self.on_query(now, from, tid, m.read_only, q),
                    Body::Response(r) => self.on_response(now, from, &tid, m.ip, r),
                    Body::Error { .. } => self.on_error(now, from, &tid),
                }
            }
        }
        self.drive(now);
    }

    /// Does what is due at `now`: query timeouts, refreshes, pings, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, tid)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(o) = self.outstanding.remove(&tid) {
                self.on_failure(now, o, true);
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            self.store.expire(now);
            self.ip_limit.purge(now);
        }
        if self.next_bootstrap.is_some_and(|b| now >= b) {
            self.start_bootstrap(now);
        }
        self.drive(now);
    }

    fn tick(&mut self, now: Instant) {
        let rng = &mut self.rng;
        self.tokens.maybe_rotate(now, || rng.bytes());
        for f in 0..2 {
            if self.tables[f].is_empty() {
                continue;
            }
            let rng = &mut self.rng;
            let targets = self.tables[f].refresh_targets(now, self.config.refresh_interval, || rng.bytes());
            for t in targets {
                let internal = self.lookups.values().filter(|l| l.kind == Kind::Refresh).count();
                if internal < MAX_INTERNAL_LOOKUPS {
                    self.start_lookup(now, t, Kind::Refresh);
                }
            }
            for n in self.tables[f].stale_nodes(now) {
                let busy = self.outstanding.values().any(|o| o.addr == n.addr);
                if !busy && self.pending_pings.len() < MAX_PENDING_PINGS {
                    self.pending_pings.push_back((n.addr, Some(n.id)));
                }
            }
        }
    }

    // ----------------------------------------------------------------- queries to us

    fn on_query(&mut self, now: Instant, from: SocketAddr, tid: Vec<u8>, read_only: bool, q: Query) {
        if self.config.read_only || !self.ip_limit.allow(from.ip(), now) {
            return;
        }
        let v6 = from.is_ipv6();
        // BEP 43: a read-only node is answered but not put in the table.
        if !read_only && self.acceptable(&q.id, &from) {
            let valid = bep42::is_valid_id(&q.id, from.ip());
            match self.tables[fam(v6)].heard_from(q.id, from, false, valid, now) {
                // A stranger took a free slot: ask it something so that it is confirmed (and
                // handed out to others) without waiting for the next round of pings.
                Inserted::Added => self.queue_ping(from, Some(q.id)),
                Inserted::Replacement { ping: Some(n) } => self.queue_ping(n.addr, Some(n.id)),
                _ => {}
            }
        }
        let mut r = Response::new(self.id);
        let nodes_for = |dht: &Self, target: &NodeId, r: &mut Response| {
            let (n4, n6) = if q.want.n4 || q.want.n6 { (q.want.n4, q.want.n6) } else { (!v6, v6) };
            for (wanted, f) in [(n4, 0), (n6, 1)] {
                if wanted {
                    r.nodes.extend(dht.tables[f].closest(target, dht.config.k, now));
                }
            }
        };
        match q.method {
            Method::Ping => {}
            Method::FindNode { target } => nodes_for(self, &target, &mut r),
            Method::GetPeers { info_hash, noseed, scrape } => {
                r.token = Some(self.tokens.token(from.ip(), &info_hash));
                let start = self.rng.below(1 << 16);
                r.values = self.store.get(&info_hash, v6, noseed, self.config.max_values, start);
                nodes_for(self, &info_hash.into(), &mut r);
                if scrape {
                    let (seeds, peers) = self.store.scrape(&info_hash);
                    r.bf_seeds = Some(Box::new(seeds));
                    r.bf_peers = Some(Box::new(peers));
                }
            }
            Method::AnnouncePeer { info_hash, port, implied_port, token, seed } => {
                if !self.tokens.check(&token, from.ip(), &info_hash) {
                    self.send(from, Message::error(tid, krpc::code::PROTOCOL, "invalid token"));
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                self.store.announce(info_hash, SocketAddr::new(from.ip(), port), seed, now);
            }
            Method::SampleInfohashes { target } => {
                let random = self.rng.bytes();
                r.samples = Some(self.store.sample(self.config.max_samples, random));
                r.num = Some(self.store.len() as u32);
                r.interval = Some(self.config.sample_interval);
                nodes_for(self, &target, &mut r);
            }
        }
        let mut m = Message::response(tid, r);
        m.ip = Some(from);
        self.send(from, m);
    }

    // ----------------------------------------------------------------- answers to us

    fn take_outstanding(&mut self, from: SocketAddr, tid: &[u8]) -> Option<Outstanding> {
        let key = u32::from_be_bytes(tid.try_into().ok()?);
        // A spoofed answer must come from the address we asked.
        if self.outstanding.get(&key)?.addr != from {
            return None;
        }
        self.outstanding.remove(&key)
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, tid: &[u8], ip: Option<SocketAddr>, r: Response) {
        let Some(o) = self.take_outstanding(from, tid) else { return };
        if let Some(seen) = ip {
            self.vote(now, seen.ip(), from.ip());
        }
        let v6 = from.is_ipv6();
        if let Some(expected) = o.id
            && expected != r.id
        {
            // The node at that address changed its id (restarted): the old entry is stale.
            self.tables[fam(v6)].failed(&expected, from, now);
        }
        if !self.routers.contains(&from) && self.acceptable(&r.id, &from) {
            let valid = bep42::is_valid_id(&r.id, from.ip());
            if let Inserted::Replacement { ping: Some(n) } =
                self.tables[fam(v6)].heard_from(r.id, from, true, valid, now)
            {
                self.queue_ping(n.addr, Some(n.id));
            }
        }
        match o.purpose {
            Purpose::Ping => {}
            Purpose::Announce { lookup } => self.announce_answered(lookup, true),
            Purpose::Lookup { lookup, traversal } => {
                let own = self.id;
                let enforce = self.config.bep42 == Bep42::Enforce;
                let Some(l) = self.lookups.get_mut(&lookup) else { return };
                l.stats.responses += 1;
                let Some(t) = l.traversals.get_mut(traversal) else { return };
                let Some(depth) = t.responded(from, r.id, r.token) else { return };
                for n in &r.nodes {
                    let ok = n.addr.is_ipv6() == t.v6
                        && n.addr.port() != 0
                        && !n.addr.ip().is_unspecified()
                        && !n.addr.ip().is_multicast()
                        && n.id != own
                        && (!enforce || bep42::is_valid_id(&n.id, n.addr.ip()));
                    if ok {
                        t.add(Some(n.id), n.addr, depth + 1, false);
                    }
                }
                if let Kind::GetPeers { scrape, .. } = l.kind {
                    let mut fresh = Vec::new();
                    for p in r.values {
                        if p.port() != 0 && l.peers_seen.len() < MAX_PEERS_SEEN && l.peers_seen.insert(p) {
                            fresh.push(p);
                        }
                    }
                    if !fresh.is_empty() {
                        let ev = Event::Peers { lookup: LookupId(lookup), info_hash: l.target.into(), peers: fresh };
                        self.events.push_back(ev);
                    }
                    if scrape && let Some((seeds, peers)) = &mut l.scrape {
                        if let Some(b) = &r.bf_seeds {
                            seeds.union(b);
                        }
                        if let Some(b) = &r.bf_peers {
                            peers.union(b);
                        }
                    }
                }
            }
        }
    }

    fn on_error(&mut self, now: Instant, from: SocketAddr, tid: &[u8]) {
        if let Some(o) = self.take_outstanding(from, tid) {
            // It answered, so it is not gone; the query simply did not work.
            self.on_failure(now, o, false);
        }
    }

    /// A query went unanswered (`timeout`) or got an error.
    fn on_failure(&mut self, now: Instant, o: Outstanding, timeout: bool) {
        if timeout && let Some(id) = o.id {
            self.tables[fam(o.addr.is_ipv6())].failed(&id, o.addr, now);
        }
        match o.purpose {
            Purpose::Ping => {}
            Purpose::Announce { lookup } => self.announce_answered(lookup, false),
            Purpose::Lookup { lookup, traversal } => {
                if let Some(l) = self.lookups.get_mut(&lookup) {
                    if timeout {
                        l.stats.timeouts += 1;
                    } else {
                        l.stats.errors += 1;
                    }
                    if let Some(t) = l.traversals.get_mut(traversal) {
                        t.failed(o.addr);
                    }
                }
            }
        }
    }

    /// Whether a node may enter our table or a lookup.
    fn acceptable(&self, id: &NodeId, addr: &SocketAddr) -> bool {
        *id != self.id
            && self.enabled(addr)
            && addr.port() != 0
            && !addr.ip().is_unspecified()
            && !addr.ip().is_multicast()
            && (self.config.bep42 != Bep42::Enforce || bep42::is_valid_id(id, addr.ip()))
    }

    /// BEP 42: responders tell us the address they see ([`crate::vote`]). Once they agree on
    /// one of our own family (IPv4 when we take part in the IPv4 DHT), under BEP 42 we move to
    /// an id that fits it.
    fn vote(&mut self, now: Instant, seen: IpAddr, voter: IpAddr) {
        let seen = match seen {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(seen, IpAddr::V4),
            v4 => v4,
        };
        // A responder of one family sees our address in that family.
        if seen.is_ipv4() != voter.is_ipv4() {
            return;
        }
        let Some(ip) = self.votes[fam(seen.is_ipv6())].vote(seen, voter) else { return };
        let own_family = ip.is_ipv4() || !self.config.ipv4;
        if !own_family {
            return;
        }
        self.external_ip = Some(ip);
        let new_id = if self.config.bep42 != Bep42::Off && !bep42::is_valid_id(&self.id, ip) {
            let id = bep42::node_id_for_ip(ip, self.rng.bytes());
            self.change_id(id, now);
            Some(id)
        } else {
            None
        };
        self.events.push_back(Event::ExternalAddress { ip, new_id });
    }

    fn change_id(&mut self, id: NodeId, now: Instant) {
        self.id = id;
        let prefer = self.config.bep42 != Bep42::Off;
        for f in 0..2 {
            let old = std::mem::replace(&mut self.tables[f], RoutingTable::new(id, self.config.k, prefer, now));
            for e in old.into_entries() {
                self.tables[f].reinsert(e, now);
            }
        }
    }

    // ----------------------------------------------------------------- lookups

    fn start_lookup(&mut self, now: Instant, target: NodeId, kind: Kind) -> LookupId {
        // Bounded: past MAX_LOOKUPS, the oldest still searching ends now with what it found
        // (its events as usual), or else the oldest announcing is dropped.
        if self.lookups.len() >= MAX_LOOKUPS {
            let searching = self.lookups.iter().find(|(_, l)| matches!(l.phase, Phase::Searching)).map(|(id, _)| *id);
            match searching {
                Some(oldest) => self.finish_lookup(now, oldest),
                None => {
                    self.lookups.pop_first();
                }
            }
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        let k = self.config.k;
        let max_cands = k * 6;
        let mut traversals = Vec::new();
        for v6 in [false, true] {
            if !(if v6 { self.config.ipv6 } else { self.config.ipv4 }) {
                continue;
            }
            let mut t = Traversal::new(target, v6, max_cands);
            for n in self.tables[fam(v6)].closest_filtered(&target, 2 * k, now, false) {
                t.add(Some(n.id), n.addr, 0, false);
            }
            // Routers when bootstrapping, or when the table cannot carry the lookup alone.
            if kind == Kind::Bootstrap || t.cands.len() < k {
                for r in self.routers.iter().filter(|r| r.is_ipv6() == v6) {
                    t.add(None, *r, 0, true);
                }
            }
            if !t.cands.is_empty() {
                traversals.push(t);
            }
        }
        let scrape = matches!(kind, Kind::GetPeers { scrape: true, .. }).then(Default::default);
        let lookup = Lookup {
            kind,
            target,
            traversals,
            started: now,
            stats: LookupStats::default(),
            peers_seen: HashSet::new(),
            scrape,
            phase: Phase::Searching,
        };
        self.lookups.insert(id, lookup);
        LookupId(id)
    }

    /// Sends what lookups and pings may send now, and finishes lookups that are done.
    fn drive(&mut self, now: Instant) {
        self.starved = false;
        let (k, alpha) = (self.config.k, self.config.alpha);
        let ids: Vec<u64> = self.lookups.keys().copied().collect();
        for lid in ids {
            while let Some(l) = self.lookups.get_mut(&lid) {
                if !matches!(l.phase, Phase::Searching) {
                    break;
                }
                let pick =
                    l.traversals.iter().enumerate().find_map(|(ti, t)| t.next_to_query(k, alpha).map(|ci| (ti, ci)));
                let Some((ti, ci)) = pick else {
                    if l.traversals.iter().all(|t| t.is_finished(k)) {
                        self.finish_lookup(now, lid);
                    }
                    break;
                };
                if !self.may_send(now) {
                    break;
                }
                let l = self.lookups.get_mut(&lid).expect("looked up above");
                let t = &mut l.traversals[ti];
                t.mark_in_flight(ci);
                let c = &t.cands[ci];
                let (addr, node, depth) = (c.addr, c.id, c.depth);
                l.stats.queries += 1;
                l.stats.rounds = l.stats.rounds.max(depth + 1);
                let method = match l.kind {
                    Kind::GetPeers { scrape, .. } => {
                        Method::GetPeers { info_hash: l.target.into(), noseed: false, scrape }
                    }
                    _ => Method::FindNode { target: l.target },
                };
                self.query(now, addr, node, method, Purpose::Lookup { lookup: lid, traversal: ti });
            }
        }
        while !self.pending_pings.is_empty() && self.may_send(now) {
            let Some((addr, id)) = self.pending_pings.pop_front() else { break };
            self.query(now, addr, id, Method::Ping, Purpose::Ping);
        }
    }

    /// Takes sending budget for one query, or notes that we wait for it.
    fn may_send(&mut self, now: Instant) -> bool {
        if self.outstanding.len() >= self.config.max_outstanding {
            // A response or a timeout frees a slot and drives again.
            return false;
        }
        if self.send_budget.try_take(now) {
            true
        } else {
            self.starved = true;
            false
        }
    }

    fn queue_ping(&mut self, addr: SocketAddr, id: Option<NodeId>) {
        if self.pending_pings.len() < MAX_PENDING_PINGS && !self.pending_pings.iter().any(|p| p.0 == addr) {
            self.pending_pings.push_back((addr, id));
        }
    }

    fn query(&mut self, now: Instant, addr: SocketAddr, id: Option<NodeId>, method: Method, purpose: Purpose) {
        let mut tid = self.rng.next_u64() as u32;
        while self.outstanding.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        let mut m = Message::query(tid.to_be_bytes().to_vec(), self.id, method);
        m.read_only = self.config.read_only;
        self.outstanding.insert(tid, Outstanding { addr, id, purpose });
        self.deadlines.push_back((now + self.config.query_timeout, tid));
        self.send(addr, m);
    }

    fn send(&mut self, dest: SocketAddr, mut m: Message) {
        m.version.clone_from(&self.config.version);
        self.transmits.push_back(Transmit { dest, bytes: m.encode() });
    }

    fn finish_lookup(&mut self, now: Instant, lid: u64) {
        let k = self.config.k;
        let Some(l) = self.lookups.get_mut(&lid) else { return };
        l.stats.elapsed = now.saturating_duration_since(l.started);
        let mut closest: Vec<NodeInfo> = l
            .traversals
            .iter()
            .flat_map(|t| t.closest_responded(k))
            .filter_map(|c| Some(NodeInfo { id: c.id?, addr: c.addr }))
            .collect();
        let target = l.target;
        closest.sort_by_key(|n| n.id.distance(&target));
        let (lookup, stats, kind) = (LookupId(lid), l.stats, l.kind);
        let scrape = l.scrape.as_ref().map(|(seeds, peers)| (seeds.estimate(), peers.estimate()));
        match kind {
            Kind::Refresh => {}
            Kind::Bootstrap => {
                let nodes = self.tables[0].len() + self.tables[1].len();
                if nodes == 0 && !self.routers.is_empty() {
                    self.next_bootstrap = Some(now + self.bootstrap_backoff);
                    self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(Duration::from_secs(300));
                } else {
                    self.bootstrap_backoff = Duration::from_secs(10);
                }
                self.events.push_back(Event::Bootstrapped { nodes });
                // Looking up our own id filled the buckets near us; fill the far ones too.
                for f in 0..2 {
                    let rng = &mut self.rng;
                    let targets = self.tables[f].sparse_bucket_targets(|| rng.bytes());
                    for t in targets.into_iter().take(MAX_INTERNAL_LOOKUPS) {
                        self.start_lookup(now, t, Kind::Refresh);
                    }
                }
            }
            Kind::FindNode | Kind::GetPeers { .. } => {
                if let Some((seeds, peers)) = scrape {
                    self.events.push_back(Event::Scrape { lookup, info_hash: target.into(), seeds, peers });
                }
                self.events.push_back(Event::LookupDone { lookup, target, closest, stats });
            }
        }
        let Kind::GetPeers { announce: Some((port, implied_port)), .. } = kind else {
            self.lookups.remove(&lid);
            return;
        };
        let Some(l) = self.lookups.get_mut(&lid) else { return };
        // Announce to the k closest of each family that gave us a token.
        let to: Vec<(SocketAddr, NodeId, Vec<u8>)> = l
            .traversals
            .iter()
            .flat_map(|t| t.closest_responded(k))
            .filter_map(|c| Some((c.addr, c.id?, c.token.clone()?)))
            .collect();
        l.phase = Phase::Announcing { pending: to.len(), acknowledged: 0 };
        if to.is_empty() {
            self.announce_answered(lid, false);
            return;
        }
        for (addr, id, token) in to {
            let method = Method::AnnouncePeer { info_hash: target.into(), port, implied_port, token, seed: false };
            // Announces bypass the per-second budget: at most 2k per lookup, and the lookup
            // that earned them was within it.
            self.query(now, addr, Some(id), method, Purpose::Announce { lookup: lid });
        }
    }

    /// One announce was answered (`ok`) or failed; the last one ends the lookup. Called with
    /// nothing pending when there was nobody to announce to.
    fn announce_answered(&mut self, lid: u64, ok: bool) {
        let Some(l) = self.lookups.get_mut(&lid) else { return };
        let Phase::Announcing { pending, acknowledged } = &mut l.phase else { return };
        *pending = pending.saturating_sub(1);
        *acknowledged += ok as usize;
        if *pending == 0 {
            let ev =
                Event::AnnounceDone { lookup: LookupId(lid), info_hash: l.target.into(), acknowledged: *acknowledged };
            self.events.push_back(ev);
            self.lookups.remove(&lid);
        }
    }
}

/// The saved form of a node: `d2:id20:…5:nodes…6:nodes6…e` (compact node infos).
pub fn save(id: &NodeId, nodes: &[NodeInfo]) -> Vec<u8> {
    let mut e = bitswarm_bencode::Encoder::new();
    e.begin_dict();
    e.str("id").bytes(&id.0);
    let mut buf = Vec::new();
    krpc::encode_compact_nodes(nodes, false, &mut buf);
    e.str("nodes").bytes(&buf);
    buf.clear();
    krpc::encode_compact_nodes(nodes, true, &mut buf);
    e.str("nodes6").bytes(&buf);
    e.end();
    e.finish()
}

/// A node's id and nodes as [`Dht::save`] wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub id: NodeId,
    pub nodes: Vec<NodeInfo>,
}

/// Reads what [`Dht::save`] wrote. Start the node with `Config::node_id = Some(saved.id)`
/// and hand the nodes to [`Dht::import_nodes`].
pub fn load(bytes: &[u8]) -> Result<Saved, krpc::ErrorKind> {
    use krpc::ErrorKind as E;
    let v = bitswarm_bencode::decode_limited(bytes, 16)?;
    let d = v.as_dict().ok_or(E::NotADictionary(v.type_name()))?;
    let field = |key: &'static str| -> Result<&[u8], E> {
        let x = d.get(key.as_bytes()).ok_or(E::Missing(key))?;
        x.as_bytes().ok_or(E::WrongType { key, expected: "string", found: x.type_name() })
    };
    let id = field("id")?;
    let id = NodeId(id.try_into().map_err(|_| E::BadLength { key: "id", len: id.len(), expected: "20" })?);
    let mut nodes = Vec::new();
    for (key, v6) in [("nodes", false), ("nodes6", true)] {
        let b = field(key)?;
        krpc::decode_compact_nodes(b, v6, &mut nodes).map_err(|len| E::BadLength {
            key,
            len,
            expected: if v6 { "a multiple of 38" } else { "a multiple of 26" },
        })?;
    }
    Ok(Saved { id, nodes })
}

#[cfg(test)]
mod tests;
