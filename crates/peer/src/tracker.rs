//! The tracker client: HTTP (BEP 3, 23, 7) and UDP (BEP 15, 41) announces over the tiers of
//! BEP 12, on the wire formats of `bitswarm-tracker-proto`.

use std::net::SocketAddr;
use std::time::Duration;

use bitswarm_metainfo::InfoHash;
use bitswarm_tracker_proto::{Event, PeerId, http, udp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Replies larger than this are refused (a real announce reply is a few kilobytes).
const MAX_REPLY: usize = 1 << 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a fetched file ([`fetch_url`]) may take in all, while it keeps coming.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// UDP retransmission: BEP 15 says 15 s × 2^n; on today's networks (and for a client that
/// must not sit idle) a shorter first wait is the norm.
const UDP_TRIES: [Duration; 3] = [Duration::from_secs(3), Duration::from_secs(6), Duration::from_secs(12)];

/// What we tell the tracker.
#[derive(Debug, Clone)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub numwant: u32,
    /// The address to announce from (the one we listen on, so the tracker hands out the address
    /// peers can reach us at); unspecified: any.
    pub local: std::net::IpAddr,
}

/// What the tracker told us.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub interval: Duration,
    pub min_interval: Option<Duration>,
    pub peers: Vec<SocketAddr>,
    pub seeders: u32,
    pub leechers: u32,
    pub warning: Option<String>,
}

/// One announce to one tracker URL.
pub async fn announce(url: &str, a: &Announce) -> Result<Reply, String> {
    announce_noting(url, a, &mut false).await
}

/// One announce; `reached` is set once the tracker answered anything at all.
async fn announce_noting(url: &str, a: &Announce, reached: &mut bool) -> Result<Reply, String> {
    if url.starts_with("udp://") {
        announce_udp(url, a, reached).await
    } else if url.starts_with("http://") || url.starts_with("https://") {
        tokio::time::timeout(HTTP_TIMEOUT, announce_http(url, a, reached))
            .await
            .map_err(|_| format!("no reply within {HTTP_TIMEOUT:?}"))?
    } else {
        Err("unknown tracker URL scheme".into())
    }
}

/// Why an announce through the [`Gate`] failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// False when the tracker was not tried: its server gave no answer to another torrent's
    /// announce lately.
    pub tried: bool,
    /// When not tried: in how long its server is tried again.
    pub retry_in: Duration,
    /// The tracker itself answered, with an error (a `failure reason`, an HTTP error status, a
    /// reply that does not parse): what Transmission reports as a tracker error.
    pub answered: bool,
}

/// The session's knowledge of which tracker servers answer. Many torrents often name the same
/// tracker: when its server does not answer (refused, no route, no reply), one torrent probes
/// it on a growing backoff and the others wait for news of it instead of each trying it, so a
/// daemon with thousands of torrents on a dead tracker stays idle.
#[derive(Debug, Default)]
pub struct Gate {
    hosts: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Slot>>>,
}

struct Slot {
    state: tokio::sync::watch::Sender<Host>,
    /// Told when the server answers again after failures.
    parked: std::sync::Mutex<Vec<std::sync::Weak<dyn Parked>>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("state", &self.state).finish_non_exhaustive()
    }
}

/// What waits for a tracker server to answer again ([`Gate::park`]).
pub(crate) trait Parked: Send + Sync {
    fn server_back(&self);
}

#[derive(Debug, Clone, Default)]
struct Host {
    /// An announce to it is under way.
    probing: bool,
    /// Consecutive announces that got no answer.
    failures: u32,
    /// Not tried before then.
    retry_at: Option<std::time::Instant>,
    error: String,
}

/// The backoff of a server that does not answer: 15 s, 30 s, 1 min … up to 30 min.
fn host_backoff(failures: u32) -> Duration {
    Duration::from_secs(15u64 << failures.saturating_sub(1).min(7)).min(Duration::from_secs(1800))
}

/// Clears the probing mark if the probe is dropped half-way (the torrent stopped).
struct Probe<'a>(&'a tokio::sync::watch::Sender<Host>, bool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.send_modify(|h| h.probing = false);
        }
    }
}

impl Gate {
    fn host(&self, url: &str) -> Option<std::sync::Arc<Slot>> {
        let (scheme, _) = url.split_once("://")?;
        let (host, port, _) = split_url(url, 80).ok()?;
        let key = format!("{}://{}:{port}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let slot = hosts.entry(key).or_insert_with(|| {
            std::sync::Arc::new(Slot {
                state: tokio::sync::watch::channel(Host::default()).0,
                parked: std::sync::Mutex::new(Vec::new()),
            })
        });
        Some(slot.clone())
    }

    /// Announces to `url` unless its server is known not to answer; waits for an announce
    /// already under way to the same server to learn whether it does.
    pub async fn announce(&self, url: &str, a: &Announce) -> Result<Reply, Failure> {
        let tried = |message: String| Failure { message, tried: true, retry_in: Duration::ZERO, answered: false };
        let Some(slot) = self.host(url) else { return announce(url, a).await.map_err(tried) };
        let host = &slot.state;
        let mut rx = host.subscribe();
        loop {
            let h = rx.borrow_and_update().clone();
            if let Some(at) = h.retry_at.filter(|t| *t > std::time::Instant::now()) {
                let retry_in = at.saturating_duration_since(std::time::Instant::now());
                let message = format!("{} (the server is tried again in {} s)", h.error, retry_in.as_secs());
                return Err(Failure { message, tried: false, retry_in, answered: false });
            }
            if h.probing {
                if rx.changed().await.is_err() {
                    return Err(tried("the session is closing".into()));
                }
                continue;
            }
            break;
        }
        host.send_modify(|h| h.probing = true);
        let mut probe = Probe(host, false);
        let mut reached = false;
        let r = announce_noting(url, a, &mut reached).await;
        probe.1 = true;
        let mut recovered = false;
        host.send_modify(|h| {
            h.probing = false;
            if reached || r.is_ok() {
                recovered = h.failures > 0;
                (h.failures, h.retry_at) = (0, None);
            } else {
                h.failures += 1;
                h.retry_at = Some(std::time::Instant::now() + host_backoff(h.failures));
                h.error = r.as_ref().err().cloned().unwrap_or_default();
            }
        });
        if recovered {
            let waiting = std::mem::take(&mut *slot.parked.lock().unwrap_or_else(|p| p.into_inner()));
            for w in waiting.iter().filter_map(std::sync::Weak::upgrade) {
                w.server_back();
            }
        }
        r.map_err(|message| Failure { answered: reached, ..tried(message) })
    }

    /// Whether the server of `url` is known not to answer now (what the tests look at).
    #[cfg(test)]
    fn is_down(&self, url: &str) -> bool {
        self.host(url).is_some_and(|s| {
            let h = s.state.borrow();
            h.probing || h.retry_at.is_some_and(|t| t > std::time::Instant::now())
        })
    }

    /// `who` hears when the server of `url` answers again (after a probe by another torrent);
    /// false when it answers already (there is nothing to wait for).
    pub(crate) fn park(&self, url: &str, who: std::sync::Weak<dyn Parked>) -> bool {
        let Some(slot) = self.host(url) else { return false };
        let mut parked = slot.parked.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock: a recovery clears the failures before it takes the list.
        if slot.state.borrow().failures == 0 {
            return false;
        }
        // Those gone are dropped when the list would grow (not at every push: thousands of
        // torrents park at once).
        if parked.len() == parked.capacity() {
            parked.retain(|w| w.strong_count() > 0);
        }
        parked.push(who);
        true
    }
}

/// Splits `scheme://host:port/rest` into host, port and the rest (with its leading `/`).
fn split_url(url: &str, default_port: u16) -> Result<(String, u16, String), String> {
    let after = url.split_once("://").map(|x| x.1).ok_or("no scheme")?;
    let (authority, rest) = match after.find(['/', '?']) {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or("bad IPv6 host")?;
        (h.to_owned(), p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        None => default_port,
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host, port, rest.to_owned()))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    if addrs.is_empty() { Err(format!("{host} has no address")) } else { Ok(addrs) }
}

fn proto_request(a: &Announce) -> http::AnnounceRequest {
    let mut r = http::AnnounceRequest::new(a.info_hash, PeerId(a.peer_id), a.port, a.left);
    r.uploaded = a.uploaded;
    r.downloaded = a.downloaded;
    r.event = a.event;
    r.numwant = Some(a.numwant);
    r
}

async fn announce_http(url: &str, a: &Announce, reached: &mut bool) -> Result<Reply, String> {
    let mut target = http::announce_url(url, &proto_request(a));
    let mut hops = 0;
    // Set by the first request: whether the tracker is on this machine or a local network. A
    // tracker that is not may not redirect us into one (as libtorrent's SSRF mitigation).
    let mut local_ok = None;
    let body = loop {
        let (raw, local) = http_get(&target, local_ok.unwrap_or(true), a.local, MAX_REPLY, None).await?;
        *reached = true;
        local_ok.get_or_insert(local);
        match http_reply(&raw, MAX_REPLY)? {
            HttpReply::Body(body) => break body,
            HttpReply::Redirect(location) => {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(format!("more than {MAX_REDIRECTS} redirects"));
                }
                target = redirect_target(&target, &location)?;
            }
        }
    };
    let r = http::AnnounceResponse::decode(&body).map_err(|e| e.to_string())?;
    Ok(Reply {
        interval: Duration::from_secs(u64::from(r.interval)),
        min_interval: r.min_interval.map(|m| Duration::from_secs(u64::from(m))),
        peers: r.peers.iter().map(|p| p.addr).collect(),
        seeders: r.complete,
        leechers: r.incomplete,
        warning: r.warning_message,
    })
}

/// Where a redirect from `from` to `location` (an absolute http(s) URL, or a path on the same
/// server) leads. From https, only to https: the announce (and any key in it) would otherwise
/// travel in clear.
fn redirect_target(from: &str, location: &str) -> Result<String, String> {
    let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if let Some(to) = scheme(location).filter(|s| s == "http" || s == "https") {
        if scheme(from).as_deref() == Some("https") && to == "http" {
            return Err(format!("refused a redirect from https to {location:?} (plain http)"));
        }
        let rest = location.split_once("://").map_or("", |x| x.1);
        Ok(format!("{to}://{rest}"))
    } else if location.starts_with('/') && !location.starts_with("//") {
        let scheme_end = from.find("://").ok_or("no scheme")? + 3;
        let origin_end = from[scheme_end..].find(['/', '?']).map_or(from.len(), |i| scheme_end + i);
        Ok(format!("{}{location}", &from[..origin_end]))
    } else {
        Err(format!("redirected to {location:?}: not an http(s) URL"))
    }
}

/// One GET of `full` (an http or https URL): the raw reply, and whether the server is on a
/// local network (see [`crate::is_local`]); such a server is refused unless `local_ok`.
/// Fetches `url` (http or https, following up to 5 redirects as announces do) and returns the
/// body, at most `max` bytes; `cookies` go in a `Cookie` header. For a .torrent file named by
/// a URL (Transmission's torrent-add) and a blocklist (64 MiB at most): a connection that
/// sends nothing for [`HTTP_TIMEOUT`] fails, one that keeps sending may take up to
/// [`FETCH_TIMEOUT`] in all. (Until 2026-12-07 all of it had to come within 15 s: a big
/// blocklist on a slow link never came.)
pub async fn fetch_url(url: &str, cookies: Option<&str>, max: usize) -> Result<Vec<u8>, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url}: only http and https URLs are fetched"));
    }
    let unspecified = std::net::IpAddr::from([0, 0, 0, 0]);
    let fetch = async {
        let mut target = url.to_owned();
        let mut local_ok = None;
        for _ in 0..=MAX_REDIRECTS {
            let (raw, local) = http_get(&target, local_ok.unwrap_or(true), unspecified, max, cookies).await?;
            local_ok.get_or_insert(local);
            match http_reply(&raw, max)? {
                HttpReply::Body(body) => return Ok(body),
                HttpReply::Redirect(location) => target = redirect_target(&target, &location)?,
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    };
    // One deadline for it all, redirects included.
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("not all of it came within {FETCH_TIMEOUT:?}"))?
}

async fn http_get(
    full: &str,
    local_ok: bool,
    bind: std::net::IpAddr,
    max: usize,
    cookies: Option<&str>,
) -> Result<(Vec<u8>, bool), String> {
    // What goes into the request line must not end it early or add header lines.
    if let Some(c) = full.chars().find(|c| c.is_ascii_control() || *c == ' ') {
        return Err(format!("the URL {full:?} holds {c:?}"));
    }
    let full = full.split('#').next().unwrap_or(full);
    let tls = full.starts_with("https://");
    let default_port = if tls { 443 } else { 80 };
    let (host, port, path) = split_url(full, default_port)?;
    let addrs = within(resolve(&host, port)).await?;
    let local = addrs.iter().any(|a| crate::is_local(a.ip()));
    if local && !local_ok {
        return Err(format!("refused a redirect from a public tracker to {host}, on a local network"));
    }
    let mut connected = Err("no address".to_owned());
    for addr in &addrs {
        connected = within(async { crate::live::connect_from(bind, *addr).await.map_err(|e| e.to_string()) }).await;
        if connected.is_ok() {
            break;
        }
    }
    let stream: TcpStream = connected.map_err(|e| format!("cannot connect: {e}"))?;
    let path = if path.is_empty() { "/".to_owned() } else { path };
    let host_header = host_header(&host, port, default_port);
    let cookie = match cookies {
        Some(c) if !c.chars().any(|c| c.is_ascii_control()) => format!("Cookie: {c}\r\n"),
        _ => String::new(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: bitswarm/{}\r\nAccept-Encoding: identity\r\n{cookie}Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let raw = if tls {
        exchange(within(tls::connect(&host, stream)).await?, &request, max).await?
    } else {
        exchange(stream, &request, max).await?
    };
    Ok((raw, local))
}

/// The `Host` header's value: the port only when it is not the scheme's, an IPv6 address in
/// brackets.
fn host_header(host: &str, port: u16, default_port: u16) -> String {
    match (port == default_port, host.contains(':')) {
        (true, false) => host.to_owned(),
        (true, true) => format!("[{host}]"),
        (false, false) => format!("{host}:{port}"),
        (false, true) => format!("[{host}]:{port}"),
    }
}

/// Sends `request` and reads the reply until the server closes the connection.
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    within(async {
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        // TLS may hold back the last record until flushed.
        stream.flush().await.map_err(|e| e.to_string())
    })
    .await?;
    let mut raw = Vec::new();
    // The head comes on top of the body's limit.
    let limit = max + 64 * 1024;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match tokio::time::timeout(HTTP_TIMEOUT, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("nothing came for {HTTP_TIMEOUT:?} (after {} bytes)", raw.len())),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            // Many HTTPS servers close the TCP connection without TLS's close_notify. The reply
            // is still checked: a cut-off body fails the chunk or bencode parsing that follows.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Ok(Err(e)) => return Err(e.to_string()),
        };
        if raw.len() + n > limit {
            return Err("reply too large".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Ok(raw)
}

/// `work`, or an error if it takes longer than [`HTTP_TIMEOUT`].
async fn within<T>(work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(HTTP_TIMEOUT, work).await.unwrap_or_else(|_| Err(format!("no answer within {HTTP_TIMEOUT:?}")))
}

/// HTTPS: rustls (with ring) and the system's trusted certificates, as curl finds them
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` name others).
mod tls {
    use std::sync::{Arc, OnceLock};

    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

    /// Made once it works (reading the system's certificates takes milliseconds); a failure
    /// is tried again next time, so certificates installed meanwhile are found.
    fn config() -> Result<Arc<ClientConfig>, String> {
        static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        if let Some(c) = CONFIG.get() {
            return Ok(c.clone());
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _unusable) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(format!(
                "no trusted CA certificates found{why}: install ca-certificates, or point SSL_CERT_FILE at a PEM file"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
    }

    /// The TLS handshake with `host` (a name or an IP address) over `tcp`, the server's
    /// certificate checked against the trusted ones and `host`.
    pub async fn connect(host: &str, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        tokio_rustls::TlsConnector::from(config()?).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))
    }
}

/// An HTTP reply as the tracker client takes it.
#[derive(Debug, PartialEq, Eq)]
enum HttpReply {
    /// Status 200: the body (plain or de-chunked).
    Body(Vec<u8>),
    /// Status 301, 302, 303, 307 or 308: the `Location`.
    Redirect(String),
}

/// Redirects followed per announce (libtorrent follows up to 5 as well).
const MAX_REDIRECTS: usize = 5;

/// Parses an HTTP/1.x reply; other statuses are errors.
fn http_reply(raw: &[u8], max: usize) -> Result<HttpReply, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("truncated HTTP reply")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split("\r\n").next().unwrap_or("");
    let code = status.split(' ').nth(1).unwrap_or("");
    // The header lines, as (name, value); the name as written, the value trimmed.
    let mut headers = head.split("\r\n").skip(1).filter_map(|l| l.split_once(':')).map(|(k, v)| (k, v.trim()));
    if matches!(code, "301" | "302" | "303" | "307" | "308")
        && let Some((_, location)) = headers.clone().find(|(k, _)| k.trim().eq_ignore_ascii_case("location"))
    {
        return Ok(HttpReply::Redirect(location.to_owned()));
    }
    if code != "200" {
        return Err(format!("HTTP {}", status.split_once(' ').map_or(status, |x| x.1)));
    }
    let chunked = headers
        .clone()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    let body = &raw[end + 4..];
    if !chunked {
        if body.len() > max {
            return Err("reply too large".into());
        }
        // A body cut short (the connection lost, a TLS stream ended without its close) is not
        // taken for the whole.
        let length = headers.find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.parse::<usize>());
        if let Some(Ok(n)) = length
            && body.len() < n
        {
            return Err(format!("the reply was cut short: {} of its {n} bytes", body.len()));
        }
        return Ok(HttpReply::Body(body.to_vec()));
    }
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = body.get(at..).ok_or("truncated chunk")?;
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk")? + at;
        let size_text = String::from_utf8_lossy(&body[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size".to_owned())?;
        at = line_end + 2;
        if size == 0 {
            return Ok(HttpReply::Body(out));
        }
        let end = at.checked_add(size).ok_or("bad chunk size")?;
        let chunk = body.get(at..end).ok_or("truncated chunk")?;
        if out.len() + chunk.len() > max {
            return Err("reply too large".into());
        }
        out.extend_from_slice(chunk);
        at = end.checked_add(2).ok_or("bad chunk size")?;
    }
}

async fn announce_udp(url: &str, a: &Announce, reached: &mut bool) -> Result<Reply, String> {
    let (host, port, rest) = split_url(url, 80)?;
    let addr = *resolve(&host, port).await?.first().expect("non-empty");
    let family = if addr.is_ipv4() { udp::Family::V4 } else { udp::Family::V6 };
    let bind: SocketAddr = match a.local {
        ip if !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4() => SocketAddr::new(ip, 0),
        _ if addr.is_ipv4() => "0.0.0.0:0".parse().unwrap(),
        _ => "[::]:0".parse().unwrap(),
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(addr).await.map_err(|e| e.to_string())?;

    let tid = crate::random_u64() as u32;
    let connection_id = match udp_exchange(&sock, &udp::Request::Connect { transaction_id: tid }, family).await? {
        udp::Response::Connect { connection_id, .. } => connection_id,
        other => return Err(format!("unexpected reply to connect: {other:?}")),
    };
    *reached = true;
    let tid = crate::random_u64() as u32;
    let req = udp::Request::Announce(udp::AnnounceRequest {
        connection_id,
        transaction_id: tid,
        info_hash: a.info_hash,
        peer_id: PeerId(a.peer_id),
        downloaded: a.downloaded,
        left: a.left,
        uploaded: a.uploaded,
        event: a.event,
        ip: None,
        // The same key on every announce of a session (BEP 15: it lets the tracker know us after
        // an address change): the random tail of our peer id.
        key: u32::from_le_bytes([a.peer_id[16], a.peer_id[17], a.peer_id[18], a.peer_id[19]]),
        num_want: Some(a.numwant),
        port: a.port,
        // BEP 41: the URL's path and query, for trackers that route by it.
        url_data: if rest.is_empty() || rest == "/" { Vec::new() } else { rest.into_bytes() },
    });
    match udp_exchange(&sock, &req, family).await? {
        udp::Response::Announce(r) => {
            let peers = match r.peers {
                udp::Peers::V4(p) => p.into_iter().map(SocketAddr::V4).collect(),
                udp::Peers::V6(p) => p.into_iter().map(SocketAddr::V6).collect(),
            };
            Ok(Reply {
                interval: Duration::from_secs(u64::from(r.interval)),
                min_interval: None,
                peers,
                seeders: r.seeders,
                leechers: r.leechers,
                warning: None,
            })
        }
        other => Err(format!("unexpected reply to announce: {other:?}")),
    }
}

/// Sends a request and waits for the reply with the same transaction id, retransmitting.
async fn udp_exchange(sock: &UdpSocket, req: &udp::Request, family: udp::Family) -> Result<udp::Response, String> {
    let packet = req.encode();
    let mut buf = vec![0u8; 4096];
    for wait in UDP_TRIES {
        sock.send(&packet).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(n)) => n,
            };
            match udp::Response::parse(&buf[..n], family) {
                Ok(r) if r.transaction_id() == req.transaction_id() => {
                    if let udp::Response::Error { message, .. } = r {
                        return Err(format!("tracker said: {message}"));
                    }
                    return Ok(r);
                }
                _ => continue, // a stray or late packet
            }
        }
    }
    Err("no reply".into())
}

/// Tracker tiers (BEP 12): each tier shuffled once; trackers of a tier are tried in order until
/// one answers, which then moves to the front of its tier; later tiers are tried only when every
/// tracker of the earlier ones failed.
#[derive(Debug, Clone)]
pub struct Tiers {
    tiers: Vec<Vec<String>>,
}

impl Tiers {
    pub fn new(mut tiers: Vec<Vec<String>>) -> Tiers {
        for t in &mut tiers {
            // Fisher-Yates with the engine's random source.
            for i in (1..t.len()).rev() {
                let j = (crate::random_u64() % (i as u64 + 1)) as usize;
                t.swap(i, j);
            }
        }
        tiers.retain(|t| !t.is_empty());
        Tiers { tiers }
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Announces to the first tracker that answers. Returns its URL and reply, or the errors.
    pub async fn announce(&mut self, gate: &Gate, a: &Announce) -> Result<(String, Reply), Vec<(String, Failure)>> {
        let mut errors = Vec::new();
        for tier in &mut self.tiers {
            for i in 0..tier.len() {
                let url = tier[i].clone();
                match gate.announce(&url, a).await {
                    Ok(r) => {
                        let t = tier.remove(i);
                        tier.insert(0, t);
                        return Ok((url, r));
                    }
                    Err(e) => errors.push((url, e)),
                }
            }
        }
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce_of(hash: u8) -> Announce {
        Announce {
            info_hash: InfoHash([hash; 20]),
            peer_id: [1; 20],
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 1,
            event: Event::Started,
            numwant: 50,
            local: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// A reply that keeps coming is read to its end however long it takes in all; one that
    /// stops coming fails after HTTP_TIMEOUT of silence (virtual time).
    #[tokio::test(start_paused = true)]
    async fn a_slow_reply_is_read_while_it_keeps_coming() {
        let (client, mut server) = tokio::io::duplex(1024);
        let serve = tokio::spawn(async move {
            let mut req = [0; 16];
            let _ = server.read(&mut req).await.unwrap();
            for _ in 0..10 {
                server.write_all(b"0123456789").await.unwrap();
                tokio::time::sleep(HTTP_TIMEOUT / 2).await;
            }
        });
        let start = tokio::time::Instant::now();
        let raw = exchange(client, "GET", 1000).await.unwrap();
        assert_eq!(raw, b"0123456789".repeat(10));
        assert!(start.elapsed() > HTTP_TIMEOUT * 4, "it took {:?}", start.elapsed());
        serve.await.unwrap();

        let (client, mut server) = tokio::io::duplex(1024);
        let serve = tokio::spawn(async move {
            let mut req = [0; 16];
            let _ = server.read(&mut req).await.unwrap();
            server.write_all(b"HTTP/1.1 200").await.unwrap();
            tokio::time::sleep(HTTP_TIMEOUT * 2).await;
            drop(server);
        });
        let start = tokio::time::Instant::now();
        let e = exchange(client, "GET", 1000).await.unwrap_err();
        assert!(e.contains("nothing came") && e.contains("after 12 bytes"), "{e}");
        assert!(start.elapsed() >= HTTP_TIMEOUT && start.elapsed() < HTTP_TIMEOUT * 2, "{:?}", start.elapsed());
        serve.await.unwrap();
    }

    /// Many torrents on one dead tracker: one of them tries it, the others are told without
    /// trying until its backoff passes; when it answers again, those waiting hear of it.
    #[tokio::test]
    async fn a_dead_tracker_is_tried_by_one_torrent_at_a_time() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/announce");
        let gate = std::sync::Arc::new(Gate::default());
        let tries = (0..20u8).map(|i| {
            let (gate, url) = (gate.clone(), url.clone());
            tokio::spawn(async move { gate.announce(&url, &announce_of(i)).await })
        });
        let mut tried = 0;
        for t in tries {
            let f = t.await.unwrap().expect_err("nothing listens there");
            if f.tried {
                tried += 1;
            } else {
                assert!(f.retry_in > Duration::ZERO && f.retry_in <= Duration::from_secs(15), "{f:?}");
                assert!(f.message.contains("tried again in"), "{}", f.message);
            }
        }
        assert_eq!(tried, 1, "one announce reached for the server, the others waited for it");
        // Another tracker on the same machine is not affected.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let other = format!("http://127.0.0.1:{closed}/announce");
        assert!(gate.announce(&other, &announce_of(0)).await.unwrap_err().tried);

        // It answers again (any answer counts): a probe due now succeeds, and waiters wake.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = b"d8:intervali1800e5:peers0:e";
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            }
        });
        struct Waiter(std::sync::atomic::AtomicBool);
        impl Parked for Waiter {
            fn server_back(&self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waiter = std::sync::Arc::new(Waiter(false.into()));
        assert!(gate.park(&url, std::sync::Arc::downgrade(&waiter) as std::sync::Weak<dyn Parked>));
        let slot = gate.host(&url).unwrap();
        slot.state.send_modify(|h| h.retry_at = Some(std::time::Instant::now()));
        gate.announce(&url, &announce_of(0)).await.expect("the tracker answers");
        assert!(waiter.0.load(std::sync::atomic::Ordering::SeqCst), "the waiter heard");
        assert!(!gate.is_down(&url));
        assert!(
            !gate.park(&url, std::sync::Arc::downgrade(&waiter) as std::sync::Weak<dyn Parked>),
            "nothing to wait for"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://t.example/announce?x=1", 80).unwrap(),
            ("t.example".into(), 80, "/announce?x=1".into())
        );
        assert_eq!(split_url("udp://127.0.0.1:6969", 80).unwrap(), ("127.0.0.1".into(), 6969, "".into()));
        assert_eq!(split_url("udp://[::1]:6969/announce", 80).unwrap(), ("::1".into(), 6969, "/announce".into()));
        assert!(split_url("http://:80/", 80).is_err());
        assert!(split_url("http://h:x/", 80).is_err());
    }

    #[test]
    fn host_headers() {
        assert_eq!(host_header("tracker.example", 443, 443), "tracker.example");
        assert_eq!(host_header("tracker.example", 6969, 80), "tracker.example:6969");
        assert_eq!(host_header("::1", 80, 80), "[::1]");
        assert_eq!(host_header("2001:db8::1", 6969, 443), "[2001:db8::1]:6969");
    }

    #[test]
    fn http_bodies() {
        let http_body = |raw: &[u8]| match http_reply(raw, MAX_REPLY)? {
            HttpReply::Body(b) => Ok(b),
            HttpReply::Redirect(to) => Err(format!("redirect to {to}")),
        };
        assert_eq!(http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nde").unwrap(), b"de");
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nde").unwrap_err(),
            "the reply was cut short: 2 of its 5 bytes"
        );
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1\r\nx\r\n0\r\n\r\n").unwrap(),
            b"dex"
        );
        assert_eq!(http_body(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err(), "HTTP 404 Not Found");
        assert!(http_body(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        // A body cut right after a chunk's data, and sizes that overflow.
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nde").is_err());
    }

    #[test]
    fn redirects() {
        assert_eq!(
            http_reply(b"HTTP/1.1 301 Moved Permanently\r\nlocation:  https://t.example/a?x=1 \r\n\r\n", MAX_REPLY)
                .unwrap(),
            HttpReply::Redirect("https://t.example/a?x=1".into())
        );
        // A redirect status without a Location is an error like any other.
        assert_eq!(http_reply(b"HTTP/1.1 302 Found\r\n\r\n", MAX_REPLY).unwrap_err(), "HTTP 302 Found");
        assert_eq!(redirect_target("http://a:1/announce?x=1", "/b?y=2").unwrap(), "http://a:1/b?y=2");
        assert_eq!(redirect_target("https://a?x=1", "/b").unwrap(), "https://a/b");
        assert_eq!(redirect_target("http://a/x", "https://b/y").unwrap(), "https://b/y");
        assert_eq!(redirect_target("http://a/x", "HTTPS://b/y").unwrap(), "https://b/y");
        assert!(redirect_target("https://a/x", "http://b/y").unwrap_err().contains("from https"));
        assert!(redirect_target("http://a/x", "udp://b:1").is_err());
        assert!(redirect_target("http://a/x", "//b/y").is_err());
        assert!(redirect_target("http://a/x", "y").is_err());
    }

    #[test]
    fn tiers_shuffle_within_and_keep_order_across() {
        let t = Tiers::new(vec![vec!["a".into(), "b".into(), "c".into()], vec![], vec!["d".into()]]);
        assert_eq!(t.tiers.len(), 2);
        let mut first = t.tiers[0].clone();
        first.sort();
        assert_eq!(first, vec!["a", "b", "c"]);
        assert_eq!(t.tiers[1], vec!["d"]);
    }
}
