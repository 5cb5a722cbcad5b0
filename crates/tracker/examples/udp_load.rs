//! A UDP tracker load generator (BEP 15), for `bench/tracker.sh`.
//!
//! `--threads` OS threads each run `--sockets` sockets (each its own source port, spread over
//! 127.0.0.1–127.0.0.8), and every socket keeps `--window` requests in flight: when a reply
//! comes, the next request goes (replies are read and requests sent in batches, `recvmmsg` and
//! `sendmmsg` on Linux). Threads poll their non-blocking sockets and never sleep (give them a
//! core of their own). The mix is announce-heavy (by default 80% announces, 10% scrapes
//! of 1–5 swarms, 10% connects) over `--swarms` info-hashes that are the same as the ones
//! `bench/tracker.sh` whitelists for opentracker (`hash(i)` below). Announces come from a
//! fixed population of `--peers` peers (a quarter of them seeders), so most are re-announces,
//! as on a real tracker. Prints responses per second and latency percentiles; when a socket
//! hears nothing for 200 ms its window is re-sent and counted as lost.
//!
//! `--fill PEERS` instead announces PEERS distinct peers spread evenly over the `--swarms`
//! swarms (each announced once, `event=started`, 30% of them seeders) and exits: the memory
//! benchmark, and the store every tracker holds before the UDP throughput runs.
//!
//! Usage: udp_load --server 127.0.0.1:6969 [--threads 2] [--sockets 8] [--window 8]
//!        [--duration 6] [--swarms 1000] [--peers 100000] [--print-hashes]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bitswarm_tracker_proto::udp::{AnnounceRequest, Family, Request, Response, ScrapeRequest};
use bitswarm_tracker_proto::{Event, InfoHash, PeerId};
use tokio::net::UdpSocket;

/// The info-hash of swarm `i`: the same function is in `bench/tracker.sh` (for opentracker's
/// whitelist and wrk's script, via `--print-hashes`).
fn hash(i: u32) -> InfoHash {
    let mut h = [0u8; 20];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xB175_3A2B_0000_0001;
    for chunk in h.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    InfoHash(h)
}

struct Args {
    server: SocketAddr,
    threads: usize,
    sockets: usize,
    window: usize,
    duration: f64,
    swarms: u32,
    peers: u64,
    fill: Option<u64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:6969".parse().unwrap(),
        threads: 2,
        sockets: 8,
        window: 8,
        duration: 6.0,
        swarms: 1000,
        peers: 100_000,
        fill: None,
    };
    let mut print_hashes = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--print-hashes" {
            print_hashes = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--server" => a.server = v.parse().expect("--server ADDR"),
            "--threads" => a.threads = v.parse().unwrap(),
            "--sockets" => a.sockets = v.parse().unwrap(),
            "--window" => a.window = v.parse().unwrap(),
            "--duration" => a.duration = v.parse().unwrap(),
            "--swarms" => a.swarms = v.parse().unwrap(),
            "--peers" => a.peers = v.parse().unwrap(),
            "--fill" => a.fill = Some(v.parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    if print_hashes {
        for i in 0..a.swarms {
            println!("{}", hash(i).to_hex());
        }
        std::process::exit(0);
    }
    a
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Totals {
    responses: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
    announce_peers: AtomicU64,
}

async fn connect(sock: &UdpSocket, tid: u32) -> u64 {
    let mut buf = [0u8; 64];
    loop {
        sock.send(&Request::Connect { transaction_id: tid }.encode()).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
            && let Ok(Response::Connect { connection_id, .. }) = Response::parse(&buf[..n], Family::V4)
        {
            return connection_id;
        }
    }
}

/// The peers a socket announces as: peer `k` is socket `k % sockets`'s, in swarm `k % swarms`,
/// with a port and peer id of its own and a quarter of them seeders, so most announces are
/// re-announces of a peer the tracker knows, as on a real tracker.
struct Population {
    swarms: u32,
    peers: u64,
    sockets: u64,
    socket: u64,
}

impl Population {
    fn pick(&self, rng: &mut Rng) -> u64 {
        let per_socket = (self.peers / self.sockets).max(1);
        self.socket + self.sockets * rng.below(per_socket)
    }
}

fn request(rng: &mut Rng, cid: u64, tid: u32, pop: &Population) -> Request {
    let roll = rng.below(100);
    if roll < 10 {
        Request::Connect { transaction_id: tid }
    } else if roll < 20 {
        let n = 1 + rng.below(5) as u32;
        Request::Scrape(ScrapeRequest {
            connection_id: cid,
            transaction_id: tid,
            info_hashes: (0..n).map(|_| hash(rng.below(u64::from(pop.swarms)) as u32)).collect(),
        })
    } else {
        let k = pop.pick(rng);
        let mut id = [b'-'; 20];
        id[..8].copy_from_slice(&k.to_le_bytes());
        Request::Announce(AnnounceRequest {
            connection_id: cid,
            transaction_id: tid,
            info_hash: hash((k % u64::from(pop.swarms)) as u32),
            peer_id: PeerId(id),
            downloaded: 0,
            left: if k.is_multiple_of(4) { 0 } else { 1 << 20 },
            uploaded: 0,
            event: if rng.below(10) == 0 { Event::Started } else { Event::None },
            ip: None,
            key: 0,
            // Asked for explicitly: trackers differ in their defaults (opentracker: 200).
            num_want: Some(50),
            port: 1024 + ((k / pop.sockets) % 64000) as u16,
            url_data: Vec::new(),
        })
    }
}

/// One request in flight on a socket.
struct Socket {
    sock: std::net::UdpSocket,
    cid: u64,
    rng: Rng,
    pop: Population,
    seq: u32,
    sent_at: Vec<Option<Instant>>,
    last_reply: Instant,
}

const RING: usize = 4096;

impl Socket {
    /// Writes the next request into `out` and notes when it went.
    fn next_request(&mut self, out: &mut Vec<u8>, now: Instant) {
        let tid = self.seq;
        self.seq = self.seq.wrapping_add(1);
        out.clear();
        request(&mut self.rng, self.cid, tid, &self.pop).encode_into(out);
        self.sent_at[tid as usize % RING] = Some(now);
    }

    /// Sends `n` new requests, in one system call where the platform has one for that.
    fn send_next(&mut self, n: usize, outs: &mut [Vec<u8>]) {
        let now = Instant::now();
        for out in &mut outs[..n] {
            self.next_request(out, now);
        }
        batch::send(&self.sock, &outs[..n]);
    }
}

/// Batched datagram I/O on a connected socket: `recvmmsg`/`sendmmsg` on Linux, so that the
/// load generator spends few system calls per request and keeps a fast tracker's queue full
/// (with one `recv` and one `send` per request it was as slow per request as the tracker it
/// measured, and the tracker found its queue nearly empty at every batch).
#[cfg(target_os = "linux")]
mod batch {
    use std::os::fd::AsRawFd;

    /// Receives up to `bufs.len()` datagrams without waiting; their lengths go to `lens`.
    pub fn recv(sock: &std::net::UdpSocket, bufs: &mut [[u8; 2048]], lens: &mut [usize]) -> usize {
        let mut iovs: Vec<libc::iovec> =
            bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        // SAFETY: all-zero is a valid mmsghdr; the iovec pointers are set below.
        let mut hdrs: Vec<libc::mmsghdr> = iovs.iter().map(|_| unsafe { std::mem::zeroed() }).collect();
        for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live iovec and buffer of the declared size.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = n.max(0) as usize;
        for (l, h) in lens.iter_mut().zip(&hdrs[..n]) {
            *l = h.msg_len as usize;
        }
        n
    }

    pub fn send(sock: &std::net::UdpSocket, packets: &[Vec<u8>]) {
        let mut iovs: Vec<libc::iovec> =
            packets.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() }).collect();
        // SAFETY: as in `recv`.
        let mut hdrs: Vec<libc::mmsghdr> = iovs.iter().map(|_| unsafe { std::mem::zeroed() }).collect();
        for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < hdrs.len() {
            // SAFETY: the headers point at live packets; the kernel only reads them.
            let r =
                unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs[sent..].as_mut_ptr(), (hdrs.len() - sent) as u32, 0) };
            // A refused send counts as lost when its reply never comes.
            sent += r.max(1) as usize;
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod batch {
    pub fn recv(sock: &std::net::UdpSocket, bufs: &mut [[u8; 2048]], lens: &mut [usize]) -> usize {
        let mut n = 0;
        while n < bufs.len() {
            match sock.recv(&mut bufs[n]) {
                Ok(len) => lens[n] = len,
                Err(_) => break,
            }
            n += 1;
        }
        n
    }

    pub fn send(sock: &std::net::UdpSocket, packets: &[Vec<u8>]) {
        for p in packets {
            let _ = sock.send(p);
        }
    }
}

/// One thread's sockets, each keeping `window` requests in flight until `deadline`: the
/// thread polls its non-blocking sockets in turn and never sleeps, so no reply has to wake it
/// (on loopback the waking would be charged to the tracker that sends the reply).
fn run_thread(a: &Args, t: usize, start: Instant, deadline: Instant, totals: &Totals) -> Vec<u32> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut socks: Vec<Socket> = (0..a.sockets)
        .map(|s| {
            let idx = t * a.sockets + s;
            let ip = format!("127.0.0.{}", 1 + idx % 8);
            let sock = std::net::UdpSocket::bind((ip.as_str(), 0)).unwrap();
            sock.connect(a.server).unwrap();
            let cid = rt.block_on(async {
                let s = UdpSocket::from_std({
                    sock.set_nonblocking(true).unwrap();
                    sock.try_clone().unwrap()
                })
                .unwrap();
                connect(&s, 0).await
            });
            Socket {
                sock,
                cid,
                rng: Rng(0x2545_F491_4F6C_DD1D ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                pop: Population {
                    swarms: a.swarms,
                    peers: a.peers,
                    sockets: (a.threads * a.sockets) as u64,
                    socket: idx as u64,
                },
                seq: 1,
                sent_at: vec![None; RING],
                last_reply: start,
            }
        })
        .collect();
    drop(rt);
    while Instant::now() < start {
        std::hint::spin_loop();
    }
    let mut latencies = Vec::with_capacity(1 << 16);
    let batch = a.window.max(1);
    let mut outs: Vec<Vec<u8>> = (0..batch).map(|_| Vec::with_capacity(512)).collect();
    let mut bufs = vec![[0u8; 2048]; batch];
    let mut lens = vec![0usize; batch];
    for s in socks.iter_mut() {
        s.last_reply = Instant::now();
        s.send_next(batch, &mut outs);
    }
    let mut now = Instant::now();
    while now < deadline {
        for s in socks.iter_mut() {
            loop {
                let n = batch::recv(&s.sock, &mut bufs, &mut lens);
                if n == 0 {
                    break;
                }
                now = Instant::now();
                s.last_reply = now;
                for (buf, &len) in bufs.iter().zip(&lens).take(n) {
                    match Response::parse(&buf[..len], Family::V4) {
                        Ok(r) => {
                            let tid = r.transaction_id();
                            if let Some(t) = s.sent_at[tid as usize % RING].take() {
                                latencies.push(now.duration_since(t).as_micros().min(u128::from(u32::MAX)) as u32);
                            }
                            match r {
                                Response::Connect { connection_id, .. } => s.cid = connection_id,
                                Response::Announce(a) => {
                                    totals.announce_peers.fetch_add(a.peers.len() as u64, Ordering::Relaxed);
                                }
                                Response::Error { .. } => {
                                    totals.errors.fetch_add(1, Ordering::Relaxed);
                                }
                                Response::Scrape(_) => {}
                            }
                            totals.responses.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            totals.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // A new request for every reply.
                s.send_next(n, &mut outs);
            }
        }
        now = Instant::now();
        for s in socks.iter_mut() {
            if now.duration_since(s.last_reply) > Duration::from_millis(200) {
                // Lost requests (or replies): refill the window.
                totals.lost.fetch_add(a.window as u64, Ordering::Relaxed);
                s.last_reply = now;
                s.send_next(batch, &mut outs);
            }
        }
    }
    latencies
}

/// Announces `peers` distinct peers, spread evenly over the swarms, each once.
async fn fill(a: Arc<Args>, peers: u64) {
    let per_swarm = peers.div_ceil(u64::from(a.swarms.max(1)));
    assert!(per_swarm <= 50_000, "--fill puts {per_swarm} peers in a swarm; at most 50,000 fit (one port each)");
    let sockets = a.sockets.max(1);
    let per_socket = peers.div_ceil(sockets as u64);
    let mut tasks = Vec::new();
    for s in 0..sockets {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let ip = format!("127.0.0.{}", 1 + s % 8);
            let sock = UdpSocket::bind((ip.as_str(), 0)).await.unwrap();
            sock.connect(a.server).await.unwrap();
            let cid = connect(&sock, 0).await;
            let first = s as u64 * per_socket;
            let last = (first + per_socket).min(peers);
            let mut buf = [0u8; 2048];
            let mut next = first;
            let mut inflight = std::collections::HashMap::new();
            while next < last || !inflight.is_empty() {
                while next < last && inflight.len() < 32 {
                    inflight.insert(next as u32, next);
                    sock.send(&fill_request(cid, next, per_swarm).encode()).await.unwrap();
                    next += 1;
                }
                match tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        if n >= 8 {
                            let tid = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                            inflight.remove(&tid);
                        }
                    }
                    _ => {
                        for &p in inflight.values() {
                            sock.send(&fill_request(cid, p, per_swarm).encode()).await.unwrap();
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Peer `p`: swarm p / per_swarm, a distinct port per peer in it.
fn fill_request(cid: u64, p: u64, per_swarm: u64) -> Request {
    let k = p % per_swarm;
    let mut id = [b'-'; 20];
    id[..8].copy_from_slice(&p.to_le_bytes());
    Request::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: p as u32,
        info_hash: hash((p / per_swarm) as u32),
        peer_id: PeerId(id),
        downloaded: 0,
        left: if k % 10 < 3 { 0 } else { 1000 },
        uploaded: 0,
        event: Event::Started,
        ip: None,
        key: 0,
        num_want: Some(0),
        port: 10_000 + k as u16,
        url_data: Vec::new(),
    })
}

fn main() {
    let a = Arc::new(parse_args());
    if let Some(peers) = a.fill {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let t = Instant::now();
        rt.block_on(fill(a.clone(), peers));
        println!("filled {peers} peers over {} swarms in {:.1} s", a.swarms, t.elapsed().as_secs_f64());
        return;
    }
    let totals = Arc::new(Totals::default());
    // Connect every socket first, then measure from a common start.
    let start = Instant::now() + Duration::from_millis(300);
    let deadline = start + Duration::from_secs_f64(a.duration);
    let mut threads = Vec::new();
    for t in 0..a.threads {
        let (a, totals) = (a.clone(), totals.clone());
        threads.push(std::thread::spawn(move || run_thread(&a, t, start, deadline, &totals)));
    }
    let mut lat: Vec<u32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let secs = a.duration;
    let responses = totals.responses.load(Ordering::Relaxed);
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0);
    println!(
        "responses/s: {:.0}  p50: {} us  p99: {} us  lost: {}  errors: {}  peers/announce: {:.1}",
        responses as f64 / secs,
        pct(0.50),
        pct(0.99),
        totals.lost.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed),
        totals.announce_peers.load(Ordering::Relaxed) as f64 / (responses as f64 * 0.8).max(1.0),
    );
}
