//! The UDP tracker (BEP 15): blocking worker threads sharing one socket, each receiving a
//! packet, answering it from the store and sending the reply; no allocation per packet.
//!
//! Connection ids are stateless: a SipHash, keyed with a random secret made at start, of the
//! client's IP address and a time window. Nothing is stored per client, so a flood of connects
//! costs no memory. Hashing the IP and not the port keeps clients behind NATs that change
//! source ports working; the id still proves the client receives packets at that IP.

use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bitswarm_tracker_proto::udp::{self as wire, PacketError, Request};

use crate::Shared;
use crate::stats::{Metrics, Proto};
use crate::store::{Announce, Families, Outcome, Selected};

/// Stateless connection ids.
pub struct ConnectionIds {
    secret: std::collections::hash_map::RandomState,
    started: Instant,
    window: u64,
    /// How many windows back an id is still accepted.
    windows_back: u64,
}

impl ConnectionIds {
    /// Ids stay valid at least `valid + grace` seconds after they are handed out, and at most
    /// one window (at most 30 s) longer.
    pub fn new(valid: u64, grace: u64) -> Self {
        let window = valid.clamp(1, 30);
        let windows_back = (valid + grace).div_ceil(window);
        ConnectionIds { secret: Default::default(), started: Instant::now(), window, windows_back }
    }

    fn epoch(&self) -> u64 {
        // Start at a large epoch so that subtracting windows never underflows.
        self.started.elapsed().as_secs() / self.window + 1_000_000
    }

    fn hash(&self, ip: IpAddr, epoch: u64) -> u64 {
        let mut h = self.secret.build_hasher();
        match ip.to_canonical() {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write_u64(epoch);
        h.finish()
    }

    pub fn make(&self, ip: IpAddr) -> u64 {
        self.hash(ip, self.epoch())
    }

    pub fn check(&self, id: u64, ip: IpAddr) -> bool {
        let now = self.epoch();
        (0..=self.windows_back).any(|age| self.hash(ip, now - age) == id)
    }
}

/// Starts `threads` workers on clones of `socket`. They stop once `stop` is set (within the
/// socket's read timeout).
pub fn spawn(
    socket: UdpSocket,
    threads: usize,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let sock = socket.try_clone()?;
        let shared = shared.clone();
        let stop = stop.clone();
        handles.push(std::thread::Builder::new().name(format!("udp-{i}")).spawn(move || worker(sock, &shared, &stop))?);
    }
    Ok(handles)
}

fn worker(sock: UdpSocket, shared: &Shared, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    let mut out = Vec::with_capacity(2048);
    let mut peers = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                out.clear();
                handle(shared, &buf[..n], src, &mut out, &mut peers);
                if !out.is_empty() {
                    if let Err(e) = sock.send_to(&out, src) {
                        tracing::debug!("UDP reply to {src} not sent: {e}");
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            // ICMP port-unreachable from an earlier reply, and the like: nothing to do.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }
    }
}

/// Answers one packet into `out` (left empty when no reply is due).
pub fn handle(shared: &Shared, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>, peers: &mut Vec<Selected>) {
    let m = shared.metrics.of(Proto::Udp);
    let ip = src.ip().to_canonical();
    let req = match Request::parse(packet) {
        Ok(r) => r,
        Err(e) => {
            Metrics::inc(&m.errors);
            // Explain only to a client that proved its address with a valid connection id;
            // junk and spoofed packets get nothing.
            if packet.len() >= 16 {
                let cid = u64::from_be_bytes(packet[..8].try_into().unwrap_or_default());
                if !matches!(e, PacketError::BadProtocolId) && shared.conn_ids.check(cid, ip) {
                    let tid = PacketError::transaction_id_of(packet).unwrap_or(0);
                    wire::write_error(out, tid, &e.to_string());
                }
            }
            return;
        }
    };
    match req {
        Request::Connect { transaction_id } => {
            Metrics::inc(&m.connects);
            wire::write_connect_response(out, transaction_id, shared.conn_ids.make(ip));
        }
        Request::Announce(a) => {
            if !shared.conn_ids.check(a.connection_id, ip) {
                Metrics::inc(&m.bad_connection_ids);
                return;
            }
            Metrics::inc(&m.announces);
            let cfg = &shared.config.announce;
            let peer_ip = match a.ip {
                Some(claimed) if shared.config.udp.allow_ip_field => IpAddr::V4(claimed),
                _ => ip,
            };
            let numwant = match a.event {
                bitswarm_tracker_proto::Event::Stopped => 0,
                _ => a.num_want.unwrap_or(cfg.numwant_default).min(cfg.numwant_max) as usize,
            };
            let ann = Announce {
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                addr: SocketAddr::new(peer_ip, a.port),
                left: a.left,
                event: a.event,
                numwant,
                families: Families::Same,
            };
            peers.clear();
            let (counts, outcome) = shared.store.announce(&ann, peers);
            if outcome == Outcome::Full {
                Metrics::inc(&m.peers_refused);
            }
            wire::write_announce_header(out, a.transaction_id, cfg.interval, counts.leechers, counts.seeders);
            // The reply's peer format follows the family the request came over.
            let v4_socket = ip.is_ipv4();
            for p in peers.iter() {
                match (p.addr, v4_socket) {
                    (SocketAddr::V4(a), true) => {
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(&a.port().to_be_bytes());
                    }
                    (SocketAddr::V6(a), false) => {
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(&a.port().to_be_bytes());
                    }
                    _ => {}
                }
            }
        }
        Request::Scrape(s) => {
            if !shared.conn_ids.check(s.connection_id, ip) {
                Metrics::inc(&m.bad_connection_ids);
                return;
            }
            Metrics::inc(&m.scrapes);
            out.extend_from_slice(&wire::ACTION_SCRAPE.to_be_bytes());
            out.extend_from_slice(&s.transaction_id.to_be_bytes());
            for h in &s.info_hashes {
                let c = shared.store.counts(h);
                out.extend_from_slice(&c.seeders.to_be_bytes());
                out.extend_from_slice(&c.downloaded.to_be_bytes());
                out.extend_from_slice(&c.leechers.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_per_address_and_checked() {
        let ids = ConnectionIds::new(120, 60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let id = ids.make(a);
        assert!(ids.check(id, a));
        assert!(!ids.check(id, b));
        assert!(!ids.check(id ^ 1, a));
        // v4-mapped is the same client.
        assert!(ids.check(id, "::ffff:10.0.0.1".parse().unwrap()));
        // Another tracker instance has another secret.
        assert!(!ConnectionIds::new(120, 60).check(id, a));
        assert_eq!((ids.window, ids.windows_back), (30, 6));
    }

    #[test]
    fn old_windows_expire() {
        let ids = ConnectionIds::new(120, 60);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = ids.epoch();
        assert!(ids.check(ids.hash(a, now - 6), a), "within valid + grace");
        assert!(!ids.check(ids.hash(a, now - 7), a), "too old");
    }
}
