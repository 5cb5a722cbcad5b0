//! The UDP tracker (BEP 15): blocking worker threads sharing one socket, each receiving
//! packets (in batches on Linux), answering them from the store and sending the replies from
//! reused buffers.
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
use std::time::Duration;

use bitswarm_tracker_proto::udp::{self as wire, PacketError, Request};

use crate::Shared;
use crate::backend::{Job, Op};
use crate::service::{AnnounceRequest, Refusal};
use crate::stats::{Metrics, Proto};
use crate::store::Families;

/// The most peers in a reply over IPv6 (see `handle`).
pub const MAX_V6_PEERS: usize = 67;
/// The most peers in a reply over IPv4, whatever `announce.numwant_max` says: 20 + 200 * 6 =
/// 1220 bytes, within an Ethernet frame (opentracker's limit too).
pub const MAX_V4_PEERS: usize = 200;

/// Stateless connection ids.
pub struct ConnectionIds {
    secret: std::collections::hash_map::RandomState,
    started: crate::clock::Clock,
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
        ConnectionIds { secret: Default::default(), started: crate::clock::Clock::start(), window, windows_back }
    }

    fn epoch(&self) -> u64 {
        // Start at a large epoch so that subtracting windows never underflows.
        self.started.secs() / self.window + 1_000_000
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
    sockets: Vec<UdpSocket>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let shared = shared.clone();
        let stop = stop.clone();
        handles.push(std::thread::Builder::new().name(format!("udp-{i}")).spawn(move || worker(sock, &shared, &stop))?);
    }
    Ok(handles)
}

fn worker(sock: UdpSocket, shared: &Shared, stop: &AtomicBool) {
    #[cfg(target_os = "linux")]
    batched::worker(&sock, shared, stop);
    #[cfg(not(target_os = "linux"))]
    simple_worker(sock, shared, stop);
}

/// One packet per system call each way.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn simple_worker(sock: UdpSocket, shared: &Shared, stop: &AtomicBool) {
    // One byte more than a packet may have, to tell a longer one.
    let mut buf = [0u8; MAX_PACKET + 1];
    let mut out = [Vec::with_capacity(MAX_PACKET)];
    let mut jobs = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                out[0].clear();
                if n > MAX_PACKET {
                    handle_too_long(shared, &buf[..MAX_PACKET], src, &mut out[0]);
                } else {
                    handle(shared, &buf[..n], src, 0, &mut out[0], &mut jobs);
                    finish(shared, &mut jobs, &mut out);
                }
                if !out[0].is_empty()
                    && let Err(e) = sock.send_to(&out[0], src)
                {
                    tracing::debug!("UDP reply to {src} not sent: {e}");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            // ICMP port-unreachable from an earlier reply, and the like: nothing to do.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }
    }
}

/// Reads one packet, the `slot`-th of a batch: answers it into `out` at once (a connect, an
/// error, or nothing for a packet that earns no reply), or starts its reply and adds what the
/// store must do to `jobs`, for [`finish`] to complete.
pub fn handle(shared: &Shared, packet: &[u8], src: SocketAddr, slot: usize, out: &mut Vec<u8>, jobs: &mut Vec<Job>) {
    let m = shared.metrics.of(Proto::Udp);
    let ip = src.ip().to_canonical();
    let req = match Request::parse(packet) {
        Ok(r) => r,
        Err(e) => return refuse(shared, packet, ip, &e, out),
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
            let peer_ip = match a.ip {
                Some(claimed) if shared.config.udp.allow_ip_field => IpAddr::V4(claimed),
                _ => ip,
            };
            let max_peers = if peer_ip.is_ipv4() != ip.is_ipv4() {
                // A claimed IPv4 address over IPv6: the reply's format (the family the request
                // came over) cannot carry the IPv4 peers the store would pick.
                0
            } else if !ip.is_ipv4() {
                // Keep IPv6 replies within the minimum IPv6 MTU (1280 bytes less 48 of headers)
                // so they are never fragmented: 20 + 67 * 18 = 1226 bytes.
                MAX_V6_PEERS
            } else {
                MAX_V4_PEERS
            };
            let ask = AnnounceRequest {
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                addr: SocketAddr::new(peer_ip, a.port),
                left: a.left,
                uploaded: a.uploaded,
                downloaded: a.downloaded,
                event: a.event,
                numwant: a.num_want,
                max_peers,
                families: Families::Same,
                // Read only in private mode: the public fast path does not look at it.
                passkey: if shared.private.is_some() { passkey_of(&a.url_data) } else { None },
            };
            match shared.admit(Proto::Udp, &ask) {
                Ok(announce) => {
                    // The counts are filled in by `finish`; the store appends the peers.
                    wire::write_announce_header(out, a.transaction_id, shared.config.announce.interval, 0, 0);
                    jobs.push(Job { slot, tag: a.transaction_id, op: Op::announce(announce) });
                }
                Err(Refusal(msg)) => wire::write_error(out, a.transaction_id, &msg),
            }
        }
        Request::Scrape(s) => {
            if !shared.conn_ids.check(s.connection_id, ip) {
                Metrics::inc(&m.bad_connection_ids);
                return;
            }
            if shared.private.is_some() {
                // A UDP scrape has no URL data (BEP 41 options are an announce's), so no passkey.
                Metrics::inc(&m.errors);
                return wire::write_error(out, s.transaction_id, PRIVATE_SCRAPE);
            }
            jobs.push(Job { slot, tag: s.transaction_id, op: Op::scrape(s.info_hashes) });
        }
    }
}

/// What a private tracker answers a UDP scrape.
pub const PRIVATE_SCRAPE: &str = "this tracker is private: scrape over HTTP at /scrape/PASSKEY";

/// The passkey of a BEP 41 URL path `/announce/PASSKEY` (a query after it is ignored).
pub fn passkey_of(url_data: &[u8]) -> Option<&str> {
    let path = url_data.split(|&b| b == b'?').next()?;
    let key = path.strip_prefix(b"/announce/")?;
    std::str::from_utf8(key).ok()
}

/// Where the leecher and seeder counts of an announce reply are (after the action, transaction
/// id and interval).
const COUNTS_AT: usize = 12;

/// Runs the store's part of a batch ([`handle`]) and completes its replies in `outs`.
pub fn finish(shared: &Shared, jobs: &mut Vec<Job>, outs: &mut [Vec<u8>]) {
    if jobs.is_empty() {
        return;
    }
    shared.run_batch(Proto::Udp, jobs, outs);
    for j in jobs.drain(..) {
        let out = &mut outs[j.slot];
        match j.op {
            Op::Announce { result: Ok((counts, _)), .. } => {
                if let Some(c) = out.get_mut(COUNTS_AT..COUNTS_AT + 8) {
                    c[..4].copy_from_slice(&counts.leechers.to_be_bytes());
                    c[4..].copy_from_slice(&counts.seeders.to_be_bytes());
                }
            }
            Op::Scrape { result: Ok(counts), .. } => {
                out.extend_from_slice(&wire::ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&j.tag.to_be_bytes());
                for c in counts {
                    out.extend_from_slice(&c.seeders.to_be_bytes());
                    out.extend_from_slice(&c.downloaded.to_be_bytes());
                    out.extend_from_slice(&c.leechers.to_be_bytes());
                }
            }
            Op::Announce { result: Err(e), .. } | Op::Scrape { result: Err(e), .. } => {
                out.clear();
                wire::write_error(out, j.tag, &e.0);
            }
        }
    }
}

/// The most bytes of a packet read: a scrape of the most info-hashes takes 1,496, an announce
/// 98 plus its BEP 41 options. A longer datagram gets [`PacketError::TooLong`].
pub const MAX_PACKET: usize = 2048;

/// Counts a packet that could not be read and explains why into `out`, but only to a client
/// that proved its address with a valid connection id: junk and spoofed packets get nothing.
/// `packet` may be the first [`MAX_PACKET`] bytes of a longer one.
fn refuse(shared: &Shared, packet: &[u8], ip: IpAddr, e: &PacketError, out: &mut Vec<u8>) {
    Metrics::inc(&shared.metrics.of(Proto::Udp).errors);
    if packet.len() >= 16 {
        let cid = u64::from_be_bytes(packet[..8].try_into().unwrap_or_default());
        if !matches!(e, PacketError::BadProtocolId) && shared.conn_ids.check(cid, ip) {
            let tid = PacketError::transaction_id_of(packet).unwrap_or(0);
            wire::write_error(out, tid, &e.to_string());
        }
    }
}

/// Answers a datagram longer than [`MAX_PACKET`], of which `head` is the start.
fn handle_too_long(shared: &Shared, head: &[u8], src: SocketAddr, out: &mut Vec<u8>) {
    refuse(shared, head, src.ip().to_canonical(), &PacketError::TooLong(MAX_PACKET), out);
}

/// Linux: up to [`batched::BATCH`] packets per system call each way (`recvmmsg` returning as
/// soon as one packet is there, `sendmmsg` for the replies). Under load this halves the cost
/// per packet; idle, it waits like `recv_from`.
#[cfg(target_os = "linux")]
mod batched {
    use std::mem::MaybeUninit;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{MAX_PACKET as BUF, Shared, finish, handle, handle_too_long};

    pub const BATCH: usize = 32;
    /// The batch when the store is remote (Redis): a batch is one round trip, whose fixed cost
    /// (thread wake-ups, the call of the Lua function) a bigger batch shares out further.
    pub const REMOTE_BATCH: usize = 64;

    fn to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in for AF_INET; sockaddr_storage is large
                // and aligned enough for it.
                let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
            }
            _ => None,
        }
    }

    pub fn worker(sock: &UdpSocket, shared: &Shared, stop: &AtomicBool) {
        let fd = sock.as_raw_fd();
        let batch = if shared.backend.memory().is_some() { BATCH } else { REMOTE_BATCH };
        let mut bufs = vec![[0u8; BUF]; batch];
        let mut outs: Vec<Vec<u8>> = (0..batch).map(|_| Vec::with_capacity(BUF)).collect();
        // SAFETY: all-zero bytes are valid values of these plain C structs.
        let mut addrs: Vec<libc::sockaddr_storage> =
            (0..batch).map(|_| unsafe { MaybeUninit::zeroed().assume_init() }).collect();
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(batch);
        let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(batch);
        let mut send_hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(batch);
        let mut send_iovs: Vec<libc::iovec> = Vec::with_capacity(batch);
        let mut jobs = Vec::with_capacity(batch);
        let addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        while !stop.load(Ordering::Relaxed) {
            iovs.clear();
            hdrs.clear();
            for (b, a) in bufs.iter_mut().zip(addrs.iter_mut()) {
                iovs.push(libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: BUF });
                // SAFETY: zeroed msghdr is valid; the fields that matter are set below.
                let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
                h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = addr_len;
                hdrs.push(h);
            }
            for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header points at a live buffer, iovec and address of this
            // function, sized as declared; the kernel writes at most that much.
            let n = unsafe {
                libc::recvmmsg(fd, hdrs.as_mut_ptr(), batch as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
            };
            if n <= 0 {
                // Timeout (the socket's read timeout lets us see `stop`), EINTR, or an ICMP
                // error from an earlier reply: nothing to do.
                continue;
            }
            let n = n as usize;
            send_hdrs.clear();
            send_iovs.clear();
            for i in 0..n {
                let out = &mut outs[i];
                out.clear();
                let len = (hdrs[i].msg_len as usize).min(BUF);
                let Some(src) = to_std(&addrs[i]) else { continue };
                if hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    handle_too_long(shared, &bufs[i][..len], src, out);
                } else {
                    handle(shared, &bufs[i][..len], src, i, out, &mut jobs);
                }
            }
            // The store's part of the whole batch at once (one round trip to a remote store).
            finish(shared, &mut jobs, &mut outs);
            for i in 0..n {
                if outs[i].is_empty() {
                    continue;
                }
                send_iovs.push(libc::iovec { iov_base: outs[i].as_mut_ptr().cast(), iov_len: outs[i].len() });
                // SAFETY: zeroed mmsghdr is valid; name and iov are set below.
                let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
                h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = hdrs[i].msg_hdr.msg_namelen;
                send_hdrs.push(h);
            }
            for (h, iov) in send_hdrs.iter_mut().zip(send_iovs.iter_mut()) {
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
            let mut sent = 0;
            while sent < send_hdrs.len() {
                // SAFETY: the headers point at live reply buffers and addresses.
                let r = unsafe {
                    libc::sendmmsg(fd, send_hdrs[sent..].as_mut_ptr(), (send_hdrs.len() - sent) as libc::c_uint, 0)
                };
                if r <= 0 {
                    // The first remaining reply failed (its client went away, say): skip it.
                    sent += 1;
                } else {
                    sent += r as usize;
                }
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
    fn passkeys_of_bep_41_url_data() {
        assert_eq!(passkey_of(b"/announce/abc"), Some("abc"));
        assert_eq!(passkey_of(b"/announce/abc?x=1&y"), Some("abc"));
        assert_eq!(passkey_of(b"/announce/"), Some(""));
        assert_eq!(passkey_of(b"/announce"), None);
        assert_eq!(passkey_of(b""), None);
        assert_eq!(passkey_of(b"/abc/announce"), None);
        assert_eq!(passkey_of(b"/announce/\xff"), None);
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
