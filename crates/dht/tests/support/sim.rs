//! An in-process network of DHT nodes on virtual time: no sockets, datagrams routed by address
//! with a deterministic pseudo-random latency, every node driven through its public API
//! (`handle_packet`, `handle_timeout`, `poll_*`) exactly as a real driver would.
//!
//! Nodes live at 10.x.y.z:6881, one address each. A node that "leaves" is dropped silently:
//! packets to it vanish and its timers stop.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bitswarm_dht::{Config, Dht, Event, NodeId};

pub struct SimNode {
    pub addr: SocketAddr,
    pub dht: Dht,
    pub alive: bool,
}

struct Packet {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Packet {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Packet {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    packets: BinaryHeap<Reverse<Packet>>,
    /// (fire at, node, the deadline it asked for): stale once the node asks for another.
    timers: BinaryHeap<Reverse<(Instant, usize, Instant)>>,
    scheduled: Vec<Option<Instant>>,
    seq: u64,
    rng: u64,
    /// Datagrams sent by all nodes so far.
    pub datagrams: u64,
    /// Events of every node, in order, with the node's index.
    pub events: Vec<(usize, Event)>,
    /// Latency range of one datagram, in milliseconds.
    pub latency_ms: (u64, u64),
}

/// The address of node `i`: 10.0.0.1, 10.0.0.2, … (one IP per node).
pub fn addr_of(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | n)), 6881)
}

impl Sim {
    /// `n` nodes, IPv4 only, each seeded from `seed` and its index; `tune` may adjust each
    /// node's config.
    pub fn new(n: usize, seed: u64, mut tune: impl FnMut(usize, &mut Config)) -> Sim {
        let start = Instant::now();
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = HashMap::with_capacity(n);
        for i in 0..n {
            let mut config = Config { ipv6: false, ..Config::default() };
            tune(i, &mut config);
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let dht = Dht::new(config, s, start).expect("valid config");
            let addr = addr_of(i);
            by_addr.insert(addr, i);
            nodes.push(SimNode { addr, dht, alive: true });
        }
        let mut sim = Sim {
            start,
            now: start,
            nodes,
            by_addr,
            packets: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            scheduled: vec![None; n],
            seq: 0,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            datagrams: 0,
            events: Vec::new(),
            latency_ms: (10, 50),
        };
        for i in 0..n {
            sim.after_io(i);
        }
        sim
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A deterministic pseudo-random number in `0..n`.
    pub fn rand_below(&mut self, n: usize) -> usize {
        (self.next_rand() % n as u64) as usize
    }

    /// A deterministic pseudo-random id.
    pub fn rand_id(&mut self) -> NodeId {
        let mut id = [0u8; 20];
        for c in id.chunks_mut(8) {
            let r = self.next_rand().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        NodeId(id)
    }

    /// Collects what node `i` wants to send and say, and when it wants to wake.
    pub fn after_io(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].dht.poll_transmit() {
            self.datagrams += 1;
            if let Some(&to) = self.by_addr.get(&t.dest) {
                let (lo, hi) = self.latency_ms;
                let delay = lo + self.next_rand() % (hi - lo + 1);
                self.seq += 1;
                let p = Packet {
                    at: self.now + Duration::from_millis(delay),
                    seq: self.seq,
                    to,
                    from: self.nodes[i].addr,
                    bytes: t.bytes,
                };
                self.packets.push(Reverse(p));
            }
        }
        while let Some(e) = self.nodes[i].dht.poll_event() {
            self.events.push((i, e));
        }
        let t = self.nodes[i].dht.poll_timeout();
        if t != self.scheduled[i] {
            self.scheduled[i] = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t.max(self.now), i, t)));
            }
        }
    }

    /// When the next datagram or live timer is due (stale timers are dropped on the way).
    fn next_time(&mut self) -> Option<Instant> {
        while let Some(Reverse((_, i, raw))) = self.timers.peek() {
            if self.scheduled[*i] == Some(*raw) && self.nodes[*i].alive {
                break;
            }
            self.timers.pop();
        }
        let next_timer = self.timers.peek().map(|t| t.0.0);
        let next_packet = self.packets.peek().map(|p| p.0.at);
        match (next_packet, next_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Delivers the next datagram or fires the next timer; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_time() else { return false };
        if self.packets.peek().is_some_and(|p| p.0.at == next) {
            let Reverse(p) = self.packets.pop().expect("peeked");
            self.now = self.now.max(p.at);
            if self.nodes[p.to].alive {
                self.nodes[p.to].dht.handle_packet(self.now, p.from, &p.bytes);
                self.after_io(p.to);
            }
        } else {
            let Reverse((t, i, _)) = self.timers.pop().expect("next_time saw it");
            self.now = self.now.max(t);
            self.scheduled[i] = None;
            self.nodes[i].dht.handle_timeout(self.now);
            self.after_io(i);
        }
        true
    }

    /// Runs until virtual time `t` (events due at `t` included).
    pub fn run_until(&mut self, t: Instant) {
        while let Some(next) = self.next_time() {
            if next > t {
                break;
            }
            self.step();
        }
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `done` holds of the events (checked after each step) or `limit` passes.
    pub fn run_until_event(&mut self, limit: Duration, mut done: impl FnMut(&[(usize, Event)]) -> bool) -> bool {
        let end = self.now + limit;
        let from = self.events.len();
        loop {
            if done(&self.events[from..]) {
                return true;
            }
            match self.next_time() {
                Some(next) if next <= end => {
                    self.step();
                }
                _ => return done(&self.events[from..]),
            }
        }
    }

    /// Lets node `i` act through `f` at the current virtual time, then routes its output.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Dht, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i].dht, now);
        self.after_io(i);
        r
    }

    /// Node `i` leaves silently.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.scheduled[i] = None;
    }

    /// The `k` live nodes closest to `target`, by brute force.
    pub fn true_closest(&self, target: &NodeId, k: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.iter().filter(|n| n.alive).map(|n| n.dht.id()).collect();
        ids.sort_by_key(|id| id.distance(target));
        ids.truncate(k);
        ids
    }

    /// Bootstraps nodes `1..n` from the first `routers` nodes, starting one every `gap`, and
    /// node 0..routers from each other.
    pub fn bootstrap_all(&mut self, routers: usize, gap: Duration) {
        let addrs: Vec<SocketAddr> = (0..routers).map(addr_of).collect();
        for i in 0..self.nodes.len() {
            let others: Vec<SocketAddr> = addrs.iter().copied().filter(|a| *a != addr_of(i)).collect();
            if others.is_empty() {
                continue;
            }
            self.with(i, |d, now| d.bootstrap(now, &others));
            self.run_for(gap);
        }
    }
}
