//! The HTTP tracker on axum: `/announce`, `/scrape`, and the stats endpoints.
//!
//! Every tracker reply is status 200 with a bencoded body, errors included (`failure reason`):
//! that is what clients parse. Keep-alive is hyper's default.

use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bitswarm_tracker_proto::http::{
    self as wire, AnnounceResponse, PeerForm, ScrapeResponse, ScrapeStats, encode_failure,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Shared;
use crate::raw_target::EscapeTargets;
use crate::service::{AnnounceRequest, Refusal};
use crate::stats::{self, Metrics, Proto};
use crate::store::{Families, ReplyPeers};

pub fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new()
        .route("/announce", get(announce))
        .route("/scrape", get(scrape))
        .route("/announce/{passkey}", get(announce_passkey))
        .route("/scrape/{passkey}", get(scrape_passkey));
    if shared.private.is_some() {
        r = crate::private::admin::routes(r);
    }
    if shared.config.stats.enabled {
        r = r.route("/", get(stats_html)).route("/stats", get(stats_json)).route("/metrics", get(metrics));
    }
    r.fallback(not_found).with_state(shared)
}

/// Serves HTTP/1.1 on `listener` until `stop` turns true, then lets open connections finish
/// what they are answering (at most a few seconds).
///
/// A connection is closed when it has sent no request headers for `timeouts.header` (the
/// wait between keep-alive requests included), or taken no bytes of its replies for
/// `timeouts.write`: connections that send nothing, trickle a header byte by byte or never read
/// do not pile up and eat file descriptors (`axum::serve` sets no timer, so hyper's header
/// timeout never ran, and has no write timeout).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: Timeouts,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tower_service::Service as _;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeouts.header);
    let mut conns = tokio::task::JoinSet::new();
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // That one connection went away before it was accepted.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of file descriptors, say: say so (once a minute at most) and wait a
                    // little rather than spin.
                    if warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!("HTTP accept: {e}");
                        warned = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        while conns.try_join_next().is_some() {}
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(req)
        });
        let stream = WriteDeadline { io: EscapeTargets::new(stream), limit: timeouts.write, stalled: None };
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let mut stop = stop.clone();
        conns.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    // No new connections from here on (the kernel would otherwise queue them on this socket).
    drop(listener);
    // Connections answering a request finish it; idle ones close at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while conns.join_next().await.is_some() {} }).await;
}

/// How long an HTTP connection may stall; see [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub write: Duration,
}

/// A stream whose writes fail with `TimedOut` once the peer has taken no bytes for `limit`.
/// The timer exists only while a write waits, so a reply the socket takes at once (every
/// announce) costs nothing more.
struct WriteDeadline<S> {
    io: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn guard<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no reply bytes for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.guard(cx, polled)
    }
}

/// The client address in a proxy's header value: the last entry (X-Forwarded-For lists every
/// hop, and the last one is what our proxy saw), as `IP`, `IPv4:port`, `[IPv6]` or
/// `[IPv6]:port`.
fn forwarded_ip(value: &str) -> Option<IpAddr> {
    let last = value.rsplit(',').next()?.trim();
    if let Ok(ip) = last.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = last.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    last.strip_prefix('[')?.strip_suffix(']')?.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

fn reply(body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found: the tracker answers /announce and /scrape\n").into_response()
}

impl Shared {
    /// The address to record for a client: the connection's, or a trusted proxy's header.
    fn client_ip(&self, conn: SocketAddr, headers: &HeaderMap) -> Result<IpAddr, &'static str> {
        let ip = conn.ip().to_canonical();
        let cfg = &self.config.http;
        if cfg.real_ip_header.is_empty() || !cfg.trusted_proxies.iter().any(|p| p.to_canonical() == ip) {
            return Ok(ip);
        }
        // The last line of the header: a client can send the header itself, and proxies such
        // as HAProxy add theirs as a new line after it (nginx appends to the one line).
        let v = headers
            .get_all(cfg.real_ip_header.as_str())
            .iter()
            .next_back()
            .ok_or("the proxy did not pass the client address")?;
        let v = v.to_str().map_err(|_| "the proxy passed an invalid client address")?;
        forwarded_ip(v).map(|ip| ip.to_canonical()).ok_or("the proxy passed an invalid client address")
    }

    /// Answers an announce query (with the passkey of its path, if any); returns the bencoded
    /// body.
    pub async fn http_announce(
        &self,
        conn: SocketAddr,
        headers: &HeaderMap,
        query: &[u8],
        passkey: Option<&str>,
    ) -> Vec<u8> {
        let refuse = |msg: &str| {
            Metrics::inc(&self.metrics.of(Proto::Http).errors);
            encode_failure(msg)
        };
        let req = match wire::parse_announce(query) {
            Ok(r) => r,
            Err(e) => return refuse(&e.to_string()),
        };
        let ip = match self.client_ip(conn, headers) {
            Ok(ip) => ip,
            Err(e) => return refuse(e),
        };
        let ip = match req.ip {
            Some(claimed) if self.config.http.allow_ip_param => claimed.to_canonical(),
            _ => ip,
        };
        let ask = AnnounceRequest {
            info_hash: req.info_hash,
            peer_id: req.peer_id,
            addr: SocketAddr::new(ip, req.port),
            left: req.left,
            uploaded: req.uploaded,
            downloaded: req.downloaded,
            event: req.event,
            numwant: req.numwant,
            max_peers: usize::MAX,
            families: Families::Both,
            passkey,
        };
        let form = PeerForm::of(&req);
        let mut peers = ReplyPeers {
            // A capacity hint only: the service decides how many.
            peers: Vec::with_capacity(req.numwant.unwrap_or(self.config.announce.numwant_default).min(200) as usize),
            with_ids: matches!(form, PeerForm::Dictionary { peer_id: true }),
        };
        let counts = match self.announce(Proto::Http, &ask, &mut peers).await {
            Ok(c) => c,
            // Counted already.
            Err(Refusal(msg)) => return encode_failure(&msg),
        };
        let cfg = &self.config.announce;
        AnnounceResponse {
            interval: cfg.interval,
            min_interval: Some(cfg.min_interval),
            complete: counts.seeders,
            incomplete: counts.leechers,
            downloaded: Some(counts.downloaded),
            peers: peers.peers,
            warning_message: None,
            tracker_id: None,
        }
        .encode(form)
    }

    /// Answers a scrape query (with the passkey of its path, if any); returns the bencoded body.
    pub async fn http_scrape(&self, query: &[u8], passkey: Option<&str>) -> Vec<u8> {
        let req = match wire::parse_scrape(query) {
            Ok(r) => r,
            Err(e) => {
                Metrics::inc(&self.metrics.of(Proto::Http).errors);
                return encode_failure(&e.to_string());
            }
        };
        match self.scrape(Proto::Http, &req.info_hashes, passkey).await {
            Ok(counts) => ScrapeResponse {
                files: counts
                    .into_iter()
                    .map(|(h, c)| {
                        (h, ScrapeStats { complete: c.seeders, downloaded: c.downloaded, incomplete: c.leechers })
                    })
                    .collect(),
            }
            .encode(),
            Err(Refusal(msg)) => encode_failure(&msg),
        }
    }
}

async fn announce(State(s): State<Arc<Shared>>, req: Request) -> Response {
    announce_with(s, req, None).await
}

/// `/announce/PASSKEY` (private mode).
async fn announce_passkey(State(s): State<Arc<Shared>>, Path(passkey): Path<String>, req: Request) -> Response {
    announce_with(s, req, Some(&passkey)).await
}

async fn announce_with(s: Arc<Shared>, req: Request, passkey: Option<&str>) -> Response {
    // The request itself, not separate extractors: no copy of the header map per announce.
    let conn = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(a)) => *a,
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    reply(s.http_announce(conn, req.headers(), req.uri().query().unwrap_or("").as_bytes(), passkey).await)
}

async fn scrape(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
    reply(s.http_scrape(uri.query().unwrap_or("").as_bytes(), None).await)
}

/// `/scrape/PASSKEY` (private mode).
async fn scrape_passkey(State(s): State<Arc<Shared>>, Path(passkey): Path<String>, uri: Uri) -> Response {
    reply(s.http_scrape(uri.query().unwrap_or("").as_bytes(), Some(&passkey)).await)
}

/// The stats pages cannot be made while the store does not answer.
fn store_down(e: crate::backend::StoreError) -> Response {
    tracing::warn!("stats: {e}");
    (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", crate::service::STORE_UNAVAILABLE)).into_response()
}

async fn stats_html(State(s): State<Arc<Shared>>) -> Response {
    match s.snapshot().await {
        Ok(snap) => {
            let body = stats::html(&snap, s.uptime(), &s.metrics);
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        }
        Err(e) => store_down(e),
    }
}

async fn stats_json(State(s): State<Arc<Shared>>) -> Response {
    match s.snapshot().await {
        Ok(snap) => {
            let body = stats::json(&snap, s.uptime(), &s.metrics);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => store_down(e),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match s.backend.totals().await {
        Ok(totals) => {
            let body = stats::prometheus(&totals, s.uptime(), &s.metrics);
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
        }
        Err(e) => store_down(e),
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_ip;

    #[test]
    fn forwarded_ip_forms() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
        assert_eq!(forwarded_ip("203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(forwarded_ip("203.0.113.7, 198.51.100.1"), ip("198.51.100.1"));
        assert_eq!(forwarded_ip("10.0.0.1,198.51.100.9:4444"), ip("198.51.100.9"));
        assert_eq!(forwarded_ip("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(forwarded_ip("1.2.3.4, [2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(forwarded_ip("[2001:db8::1]:4444"), ip("2001:db8::1"));
        for bad in ["", "unknown", "198.51.100.1, ", "[198.51.100.1]", "[2001:db8::1", "1.2.3.4:port", "_hidden"] {
            assert_eq!(forwarded_ip(bad), None, "{bad:?}");
        }
    }
}
