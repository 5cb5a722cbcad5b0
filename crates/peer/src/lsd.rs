//! The session's Local Service Discovery (BEP 14): one task that multicasts our public
//! torrents' info-hashes on the local network and listens for other peers' announces, handing
//! the peers heard of to the torrents that have those info-hashes (as [`Source::Lsd`]).
//!
//! Like the DHT node (`dht.rs`), torrents register an info-hash with it and the registration
//! ends when its guard is dropped; private torrents (BEP 27) never register. The messages are
//! `bitswarm_wire::lsd`'s; this module does the sockets and the schedule ([`Schedule`], without
//! I/O): each torrent at most once per [`INTERVAL`], several info-hashes to a packet, and
//! packets at most one per [`PACKET_EVERY`] after a small burst, so a daemon of thousands of
//! torrents does not flood the network (BEP 14: no more than about one announce a minute).
//!
//! LSD can be turned on and off while the session runs: off, the sockets are closed and the
//! registrations kept; on again, every torrent is announced afresh.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitswarm_metainfo::{InfoHash, Metainfo};
use bitswarm_wire::lsd;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::dht::Sink;
use crate::live::{Live, Source};

/// A torrent is announced again after this (BEP 14: every 5 minutes).
pub(crate) const INTERVAL: Duration = Duration::from_secs(5 * 60);
/// After the burst, one packet (to each group) per this.
pub(crate) const PACKET_EVERY: Duration = Duration::from_secs(60);
/// Packets that may go at once (torrents started together are announced at once).
pub(crate) const BURST: u32 = 3;
/// Sockets that could not be opened (no multicast route yet) are tried again after this.
const REOPEN_EVERY: Duration = Duration::from_secs(60);
/// Announces heard and not yet handled; more are dropped.
const HEARD_QUEUE: usize = 256;

/// The default groups: BEP 14's IPv4 and IPv6 ones.
pub fn default_groups() -> Vec<SocketAddr> {
    [lsd::GROUP_V4, lsd::GROUP_V6].iter().map(|g| g.parse().expect("a group address")).collect()
}

/// Checks a group address: a multicast address and a port.
pub fn check_group(a: SocketAddr) -> Result<SocketAddr, String> {
    if !a.ip().is_multicast() {
        return Err(format!("{a}: not a multicast address (BEP 14's are {} and {})", lsd::GROUP_V4, lsd::GROUP_V6));
    }
    if a.port() == 0 {
        return Err(format!("{a}: port 0"));
    }
    Ok(a)
}

/// When each registered torrent is announced, and when the next packet may go: no I/O, the
/// time is handed in.
pub(crate) struct Schedule {
    due: BTreeSet<(Instant, u64)>,
    at: HashMap<u64, Instant>,
    /// Packets that may go now (a token bucket of [`BURST`], one more per [`PACKET_EVERY`]).
    credit: u32,
    next_credit: Instant,
}

impl Schedule {
    pub fn new(now: Instant) -> Schedule {
        Schedule { due: BTreeSet::new(), at: HashMap::new(), credit: BURST, next_credit: now }
    }

    /// Torrent `id` is due at `when`.
    pub fn set(&mut self, id: u64, when: Instant) {
        if let Some(old) = self.at.insert(id, when) {
            self.due.remove(&(old, id));
        }
        self.due.insert((when, id));
    }

    pub fn remove(&mut self, id: u64) {
        if let Some(old) = self.at.remove(&id) {
            self.due.remove(&(old, id));
        }
    }

    /// Every torrent is due now (LSD turned on again, sockets opened).
    pub fn all_now(&mut self, now: Instant) {
        let ids: Vec<u64> = self.at.keys().copied().collect();
        for id in ids {
            self.set(id, now);
        }
    }

    fn refill(&mut self, now: Instant) {
        while self.credit < BURST && now >= self.next_credit {
            self.credit += 1;
            self.next_credit += PACKET_EVERY;
        }
    }

    /// The torrents of the packet to send now (at most `max`, those due longest first), each
    /// then due again after [`INTERVAL`]; empty when nothing is due or the packet must wait.
    pub fn take(&mut self, now: Instant, max: usize) -> Vec<u64> {
        self.refill(now);
        if self.credit == 0 || self.due.first().is_none_or(|(t, _)| *t > now) {
            return Vec::new();
        }
        if self.credit == BURST {
            self.next_credit = now + PACKET_EVERY;
        }
        self.credit -= 1;
        let mut out = Vec::new();
        while out.len() < max.max(1) {
            let Some(&(t, id)) = self.due.first() else { break };
            if t > now {
                break;
            }
            out.push(id);
            self.set(id, now + INTERVAL);
        }
        out
    }

    /// When [`Schedule::take`] next has something to give.
    pub fn next_wake(&self) -> Option<Instant> {
        let first = self.due.first()?.0;
        Some(if self.credit == 0 { first.max(self.next_credit) } else { first })
    }
}

/// Peers LSD found go to a running torrent as [`Source::Lsd`].
struct LiveSink(Weak<Live>);

impl Sink for LiveSink {
    fn add(&self, peers: &[SocketAddr]) -> bool {
        let Some(live) = self.0.upgrade() else { return false };
        live.add_peers(peers.iter().copied(), Source::Lsd);
        true
    }
    fn hungry(&self) -> bool {
        true
    }
}

enum Command {
    Register {
        id: u64,
        info_hash: [u8; 20],
        announce: Option<u16>,
        sink: Box<dyn Sink>,
    },
    Unregister {
        id: u64,
    },
    Enable(bool),
    /// The session's peer port changed: announces give this one from now on.
    Port(u16),
}

/// What the session holds of its LSD task (it ends when this and every registration are gone).
pub(crate) struct LsdHandle {
    tx: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    enabled: Arc<Mutex<bool>>,
}

/// A torrent's place in LSD: its announces stop, and its peers are no longer wanted, once
/// dropped.
pub(crate) struct Registration {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Unregister { id: self.id });
    }
}

impl LsdHandle {
    /// Starts the task (on the current runtime) for these groups; sockets open while enabled.
    /// `local` is the session's listening address: a specific address there is the source of
    /// the announces to its family's group (the address peers dial), its interface the one they
    /// leave by and, for IPv6, the one the group is joined on.
    pub fn start(groups: Vec<SocketAddr>, local: SocketAddr, enabled: bool) -> LsdHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let flag = Arc::new(Mutex::new(enabled));
        let cookie = format!("{:08x}", crate::random_u64() as u32).into_bytes();
        tokio::spawn(drive(groups, local, enabled, cookie, rx));
        LsdHandle { tx, next_id: AtomicU64::new(1), enabled: flag }
    }

    pub fn register(&self, info_hash: [u8; 20], announce: Option<u16>, sink: Box<dyn Sink>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Command::Register { id, info_hash, announce, sink });
        Registration { id, tx: self.tx.clone() }
    }

    /// Turns LSD on or off (the sockets open or close).
    pub fn set_enabled(&self, on: bool) {
        let mut e = self.enabled.lock().unwrap_or_else(|p| p.into_inner());
        if *e != on {
            *e = on;
            let _ = self.tx.send(Command::Enable(on));
        }
    }

    /// Announces give `port` from now on (the session's peer port moved).
    pub fn set_port(&self, port: u16) {
        let _ = self.tx.send(Command::Port(port));
    }

    pub fn enabled(&self) -> bool {
        *self.enabled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session's LSD task, when its settings name groups (it runs only while `lsd` is on).
pub(crate) fn start_for(s: &crate::Settings, listen: SocketAddr) -> Option<LsdHandle> {
    (!s.lsd_groups.is_empty()).then(|| LsdHandle::start(s.lsd_groups.clone(), listen, s.lsd))
}

/// A run of `meta` registers here: announces on our listening port while it runs, and the peers
/// heard of; never for a private torrent (BEP 27).
pub(crate) fn register_run(core: &crate::core::Core, meta: &Metainfo, live: &Arc<Live>) -> Option<Registration> {
    let l = core.lsd.as_ref()?;
    if meta.info.private {
        debug!("LSD: {} is private: never announced", meta.info_hash);
        return None;
    }
    Some(l.register(meta.info_hash.0, Some(core.listen_addr().port()), Box::new(LiveSink(Arc::downgrade(live)))))
}

/// A magnet link's metadata fetch listens here (no announce: we have nothing to give yet, and
/// whether the torrent is private is not known). Only while LSD is on.
pub(crate) fn register_fetch(
    core: &crate::core::Core,
    info_hash: InfoHash,
    tx: mpsc::UnboundedSender<SocketAddr>,
) -> Option<Registration> {
    let l = core.lsd.as_ref().filter(|l| l.enabled())?;
    Some(l.register(info_hash.0, None, Box::new(tx)))
}

struct Reg {
    info_hash: [u8; 20],
    announce: Option<u16>,
    sink: Box<dyn Sink>,
}

/// One group's sockets and the task that reads it.
struct Group {
    addr: SocketAddr,
    /// Our announces go out of this one: bound to the session's address when that is a
    /// specific one of the group's family (the source address is the peer address others
    /// dial), else the group's socket (which `reader` reads).
    send: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Driver {
    groups: Vec<SocketAddr>,
    local: SocketAddr,
    cookie: Vec<u8>,
    regs: HashMap<u64, Reg>,
    by_hash: HashMap<[u8; 20], Vec<u64>>,
    schedule: Schedule,
    open: Vec<Group>,
    /// Groups not open while enabled are tried again then.
    reopen_at: Option<Instant>,
    /// Groups whose failure was logged as a warning (later ones go to the debug log).
    warned: Vec<SocketAddr>,
    heard_tx: mpsc::Sender<(SocketAddr, lsd::Announce)>,
}

async fn drive(
    groups: Vec<SocketAddr>,
    local: SocketAddr,
    enabled: bool,
    cookie: Vec<u8>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let (heard_tx, mut heard_rx) = mpsc::channel(HEARD_QUEUE);
    let mut d = Driver {
        groups,
        local,
        cookie,
        regs: HashMap::new(),
        by_hash: HashMap::new(),
        schedule: Schedule::new(Instant::now()),
        open: Vec::new(),
        reopen_at: None,
        warned: Vec::new(),
        heard_tx,
    };
    let mut enabled = enabled;
    if enabled {
        d.open_groups();
    }
    loop {
        if enabled {
            d.send_due().await;
        }
        // Nothing is sent while no group is open (their reopening wakes the loop).
        let sending = enabled && !d.open.is_empty();
        let wake = [sending.then(|| d.schedule.next_wake()).flatten(), d.reopen_at.filter(|_| enabled)]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Register { id, info_hash, announce, sink }) => {
                    if announce.is_some() {
                        d.schedule.set(id, Instant::now());
                    }
                    d.by_hash.entry(info_hash).or_default().push(id);
                    d.regs.insert(id, Reg { info_hash, announce, sink });
                }
                Some(Command::Unregister { id }) => d.unregister(id),
                Some(Command::Enable(on)) if on != enabled => {
                    enabled = on;
                    if on {
                        info!("LSD: on");
                        d.open_groups();
                        d.schedule.all_now(Instant::now());
                    } else {
                        info!("LSD: off");
                        d.open.clear();
                        d.reopen_at = None;
                    }
                }
                Some(Command::Enable(_)) => {}
                Some(Command::Port(port)) => {
                    for r in d.regs.values_mut().filter(|r| r.announce.is_some()) {
                        r.announce = Some(port);
                    }
                    // Announced again at once: peers nearby learn the new port.
                    if enabled {
                        d.schedule.all_now(Instant::now());
                    }
                }
            },
            Some((from, a)) = heard_rx.recv() => {
                if enabled {
                    d.heard(from, a);
                }
            }
            _ = sleep_until(wake) => {
                if enabled && d.reopen_at.is_some_and(|t| t <= Instant::now()) {
                    d.open_groups();
                }
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn unregister(&mut self, id: u64) {
        self.schedule.remove(id);
        if let Some(r) = self.regs.remove(&id)
            && let Some(ids) = self.by_hash.get_mut(&r.info_hash)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_hash.remove(&r.info_hash);
            }
        }
    }

    /// Opens the groups not open yet; those that fail (no multicast route, no IPv6) are
    /// logged and tried again later.
    fn open_groups(&mut self) {
        let mut missing = false;
        for &g in &self.groups {
            if self.open.iter().any(|o| o.addr == g) {
                continue;
            }
            match open(g, self.local) {
                Ok((socket, send)) => {
                    let socket = Arc::new(socket);
                    let send = send.map_or_else(|| socket.clone(), Arc::new);
                    let reader = tokio::spawn(read(socket.clone(), self.cookie.clone(), self.heard_tx.clone()));
                    match send.local_addr() {
                        Ok(from) if !Arc::ptr_eq(&send, &socket) => {
                            info!("LSD: listening on {g}, announcing from {}", from.ip())
                        }
                        _ => info!("LSD: listening on {g}"),
                    }
                    self.open.push(Group { addr: g, send, reader });
                    // Torrents are announced on the group that just opened too.
                    self.schedule.all_now(Instant::now());
                }
                Err(e) => {
                    // IPv6 is often missing, and a machine offline has no multicast route: one
                    // warning for IPv4, not one a minute.
                    if g.is_ipv6() || self.warned.contains(&g) {
                        debug!("LSD: cannot use {g}: {e}");
                    } else {
                        warn!("LSD: cannot use {g}: {e} (tried again every minute)");
                        self.warned.push(g);
                    }
                    missing = true;
                }
            }
        }
        self.reopen_at = missing.then(|| Instant::now() + REOPEN_EVERY);
    }

    /// Sends the packet that is due, if any, to every open group.
    async fn send_due(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let max = self
            .open
            .iter()
            .map(|g| lsd::hashes_per_packet(g.addr, &self.cookie))
            .min()
            .unwrap_or(1)
            .min(lsd::MAX_HASHES);
        let ids = self.schedule.take(Instant::now(), max);
        // Every registration announces the same port (the session's).
        let Some(port) = ids.iter().find_map(|id| self.regs.get(id).and_then(|r| r.announce)) else { return };
        let hashes: Vec<[u8; 20]> = ids.iter().filter_map(|id| self.regs.get(id)).map(|r| r.info_hash).collect();
        for g in &self.open {
            let packet = lsd::format(g.addr, port, &hashes, &self.cookie);
            match g.send.send_to(&packet, g.addr).await {
                Ok(_) => {
                    for h in &hashes {
                        debug!("LSD: announced {} on {}", InfoHash(*h), g.addr);
                    }
                }
                Err(e) => debug!("LSD: send to {}: {e}", g.addr),
            }
        }
    }

    /// An announce heard from `from`: its peer goes to the torrents of ours it names.
    fn heard(&mut self, from: SocketAddr, a: lsd::Announce) {
        let ip = match from.ip().to_canonical() {
            IpAddr::V6(v6) => {
                let scope = if let SocketAddr::V6(f) = from { f.scope_id() } else { 0 };
                SocketAddr::V6(std::net::SocketAddrV6::new(v6, a.port, 0, scope))
            }
            v4 => SocketAddr::new(v4, a.port),
        };
        let mut gone = Vec::new();
        for h in &a.info_hashes {
            for id in self.by_hash.get(h).into_iter().flatten() {
                debug!("LSD: peer {ip} for {}", InfoHash(*h));
                if let Some(r) = self.regs.get(id)
                    && !r.sink.add(&[ip])
                {
                    gone.push(*id);
                }
            }
        }
        for id in gone {
            self.unregister(id);
        }
    }
}

/// Reads one group's socket; announces (not our own) go to the driver.
async fn read(socket: Arc<UdpSocket>, cookie: Vec<u8>, tx: mpsc::Sender<(SocketAddr, lsd::Announce)>) {
    // One byte more than a message may have: a longer datagram is seen to be too long.
    let mut buf = vec![0u8; lsd::MAX_MESSAGE + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!("LSD recv: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match lsd::parse(&buf[..n]) {
            Ok(a) if a.cookie.as_deref() == Some(&cookie[..]) => {}
            Ok(a) => {
                if tx.try_send((from, a)).is_err() && tx.is_closed() {
                    return;
                }
            }
            Err(e) => debug!("LSD: from {from}: {e}"),
        }
    }
}

/// The sockets of `group`. The first is bound to the group's address and port (so only
/// datagrams sent to the group arrive), shared with other programs on the machine (libtorrent
/// binds it too), with the group joined. When `local` (the session's listening address) is a
/// specific address of the group's family, the second is bound to it and sends our announces:
/// they leave by its interface with it as their source, which is the address others take for
/// our peer's (the kernel's choice could be another address, and `--bind` listens on this one
/// alone). Both have TTL 1 (the local network only) and loop our own packets back to the
/// machine's other programs.
fn open(group: SocketAddr, local: SocketAddr) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let new = || Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP));
    let s = new()?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    // Linux delivers a group's datagrams to a socket bound to the group address; elsewhere
    // sockets bind to every address.
    let bind_ip = if cfg!(target_os = "linux") {
        group.ip()
    } else if group.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    // The session's own address, when it is a specific one of the group's family.
    let own = Some(local).filter(|l| l.is_ipv4() == group.is_ipv4() && !l.ip().is_unspecified());
    let sender = match own {
        Some(l) => {
            let t = new()?;
            t.bind(&SocketAddr::new(l.ip(), 0).into())?;
            Some(t)
        }
        None => None,
    };
    match group.ip() {
        IpAddr::V4(g) => {
            let iface = match own.map(|l| l.ip()) {
                Some(IpAddr::V4(a)) => a,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            s.bind(&SocketAddr::new(bind_ip, group.port()).into())?;
            s.join_multicast_v4(&g, &iface)?;
            for t in std::iter::once(&s).chain(&sender) {
                if !iface.is_unspecified() {
                    t.set_multicast_if_v4(&iface)?;
                }
                t.set_multicast_ttl_v4(1)?;
                t.set_multicast_loop_v4(true)?;
            }
        }
        IpAddr::V6(g) => {
            let index = own.map_or(0, interface_index);
            s.set_only_v6(true)?;
            s.bind(&SocketAddr::new(bind_ip, group.port()).into())?;
            s.join_multicast_v6(&g, index)?;
            for t in std::iter::once(&s).chain(&sender) {
                if index != 0 {
                    t.set_multicast_if_v6(index)?;
                }
                t.set_multicast_hops_v6(1)?;
                t.set_multicast_loop_v6(true)?;
            }
        }
    }
    let tokio = |s: Socket| {
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s.into())
    };
    Ok((tokio(s)?, sender.map(tokio).transpose()?))
}

/// The index of the interface that has the IPv6 address `local` (its scope id, for a
/// link-local address with one); 0, the kernel's choice by its routes, if none has it.
fn interface_index(local: SocketAddr) -> u32 {
    match local {
        SocketAddr::V6(l) if l.scope_id() != 0 => l.scope_id(),
        SocketAddr::V6(l) => if_addrs::get_if_addrs()
            .map_err(|e| debug!("LSD: the interfaces: {e}"))
            .ok()
            .and_then(|ifs| ifs.into_iter().find(|i| i.ip() == IpAddr::V6(*l.ip())))
            .and_then(|i| i.index)
            .unwrap_or(0),
        SocketAddr::V4(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrents_go_together_and_packets_are_rate_limited() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        for id in 0..1000 {
            s.set(id, t0);
        }
        // The burst: three packets at once, then one a minute.
        let mut sent: Vec<(Instant, Vec<u64>)> = Vec::new();
        let mut now = t0;
        let end = t0 + Duration::from_secs(3 * 3600);
        while now < end {
            let ids = s.take(now, 25);
            if ids.is_empty() {
                now = s.next_wake().unwrap().max(now + Duration::from_millis(1));
            } else {
                assert!(ids.len() <= 25);
                sent.push((now, ids));
            }
        }
        assert_eq!(sent.iter().filter(|(t, _)| *t == t0).count(), BURST as usize);
        // Over any hour, at most BURST + 60 packets.
        for (i, (t, _)) in sent.iter().enumerate() {
            let within = sent[i..].iter().take_while(|(u, _)| *u < *t + Duration::from_secs(3600)).count();
            assert!(within <= BURST as usize + 60, "{within} packets in an hour");
        }
        // Every torrent was announced, none twice within INTERVAL.
        let mut last: HashMap<u64, Instant> = HashMap::new();
        for (t, ids) in &sent {
            for id in ids {
                if let Some(prev) = last.insert(*id, *t) {
                    assert!(*t - prev >= INTERVAL, "{id} again after {:?}", *t - prev);
                }
            }
        }
        assert_eq!(last.len(), 1000);
    }

    #[test]
    fn a_few_torrents_are_announced_every_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        s.set(1, t0);
        s.set(2, t0);
        assert_eq!(s.take(t0, 25), vec![1, 2]);
        assert!(s.take(t0, 25).is_empty());
        assert_eq!(s.next_wake(), Some(t0 + INTERVAL));
        // One added later goes at once (credit is left), alone.
        let t1 = t0 + Duration::from_secs(10);
        s.set(3, t1);
        assert_eq!(s.take(t1, 25), vec![3]);
        assert_eq!(s.take(t0 + INTERVAL, 25), vec![1, 2]);
        s.remove(3);
        assert_eq!(s.next_wake(), Some(t0 + INTERVAL * 2));
        s.all_now(t0 + INTERVAL + Duration::from_secs(1));
        assert_eq!(s.take(t0 + INTERVAL + Duration::from_secs(1), 1).len(), 1);
    }

    #[test]
    fn groups_must_be_multicast() {
        assert!(default_groups().into_iter().all(|g| check_group(g).is_ok()));
        assert!(check_group("127.0.0.1:6771".parse().unwrap()).is_err());
        assert!(check_group("239.192.152.143:0".parse().unwrap()).is_err());
    }
}
