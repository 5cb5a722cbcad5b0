//! The HTTP surface: Transmission 4.0.6's `handle_request`, check by check (§1.1).
//!
//! | # | check | answer |
//! |---|---|---|
//! | 1 | client address not in the allow-list | 403 |
//! | 2 | a password is required and not given, or wrong | 401 + `WWW-Authenticate: Basic realm="Transmission"` (403 when throttled) |
//! | 3 | no password is required and the `Host` is not allowed | 421 |
//! | 4 | the target is outside `/transmission/`, or is `/transmission/web` | 301 to `/transmission/web/` |
//! | 5 | the target is under `/transmission/web/` | the web page's assets ([`crate::web`]), else 404 |
//! | 6 | `X-Transmission-Session-Id` missing or wrong, whatever the method | 409 with the id |
//! | 7 | the target is `/transmission/stream` (bitswarm's, [`crate::stream`]) | POST: the web page's update stream; other methods: 405 |
//! | 8 | the target starts with `/transmission/rpc` | POST: the RPC; other methods: 405 |
//! | 9 | anything else | 404 |
//!
//! Unlike Transmission, the `Host` check comes before the web page, so that a DNS-rebinding
//! page cannot read it (nor the session id its assets carry). Also unlike Transmission, no CORS
//! headers are sent and OPTIONS is not answered specially: with `Access-Control-Allow-Origin: *`
//! any web page a user visits could read the session id and drive a daemon that has no password.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{Guard, Verdict};
use crate::backend::Backend;
use crate::config::RpcConfig;
use crate::envelope;
use crate::methods::{self, Context};

/// Where Transmission serves everything; clients hard-code it.
const BASE: &str = "/transmission/";
/// The header carrying the session id, as Transmission spells it; matched in any case.
pub const SESSION_ID_HEADER: &str = "X-Transmission-Session-Id";
/// The same name as HTTP/1 writes it (lower case; clients match it in any case).
pub(crate) const SESSION_ID: HeaderName = HeaderName::from_static("x-transmission-session-id");
/// The largest request body: base64 .torrent files of several MB are common.
pub const MAX_BODY: usize = 32 << 20;
/// Bodies being read or handled at once hold at most this many bytes together, so many
/// clients sending large bodies at once cannot exhaust memory; further ones wait.
const BODY_BUDGET_MIB: u32 = 64;
/// A body must arrive within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// This process's session id: 48 random characters from `[0-9A-Za-z]`, made once and kept
/// for the whole run. Transmission rotates it hourly, but Flood re-reads it only every 8 h,
/// and a stable id costs nothing against CSRF (it is unguessable either way).
pub fn session_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(48);
        let mut buf = [0u8; 64];
        while id.len() < 48 {
            random_bytes(&mut buf);
            // 248 = 4 × 62: taking only bytes below it keeps every character equally likely.
            for &b in buf.iter().filter(|&&b| b < 248).take(48 - id.len()) {
                id.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        id
    })
}

/// Fills `buf` from the OS; should that fail, from std's per-process random hash keys (which
/// have fallbacks of their own): a session id is a CSRF token, not a key.
fn random_bytes(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    tracing::warn!("no OS randomness for the RPC session id; using std's hash keys");
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
}

/// What every request of one router shares.
pub(crate) struct Shared<B> {
    backend: Arc<B>,
    config: RpcConfig,
    guard: Guard,
    body_budget: tokio::sync::Semaphore,
    holds: crate::hold::Holds,
}

/// The RPC server for `backend`, guarded as `config` says.
///
/// It answers every path (as Transmission does: redirects, 404s), so mount it at the root.
/// The allow-list and the failed-login throttle need the client's address: serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`, or insert
/// `ConnectInfo<SocketAddr>` into each request. Without it, an enabled allow-list refuses
/// every request.
pub fn router<B: Backend>(backend: Arc<B>, config: RpcConfig) -> axum::Router {
    // Made now rather than on the first request.
    let _ = session_id();
    let shared = Arc::new(Shared {
        backend,
        guard: Guard::new(config.credentials.clone()),
        config,
        body_budget: tokio::sync::Semaphore::new(BODY_BUDGET_MIB as usize),
        holds: crate::hold::Holds::default(),
    });
    axum::Router::new().fallback(handle::<B>).with_state(shared)
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// Transmission's `send_simple_response`: `<h1>CODE: Reason</h1>` and optional text, as HTML.
fn simple(status: StatusCode, text: &str) -> Response {
    let body = format!("<h1>{}: {}</h1>{text}", status.as_u16(), reason(status));
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("Transmission"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=ISO-8859-1"));
    r
}

/// The 409 that hands out the session id, byte for byte as Transmission's (transmission-remote
/// reads the header as `X-Transmission-Session-Id: <id>` up to whitespace; Sonarr and Flood
/// probe with a bodiless GET and expect exactly this).
fn conflict() -> Response {
    let id = session_id();
    let text = format!(
        "<p>Your request had an invalid session-id header.</p><p>To fix this, follow these steps:<ol><li> When \
         reading a response, get its {SESSION_ID_HEADER} header and remember it<li> Add the updated header to your \
         outgoing requests<li> When you get this 409 error message, resend your request with the updated \
         header</ol></p><p>This requirement has been added to help prevent <a \
         href=\"https://en.wikipedia.org/wiki/Cross-site_request_forgery\">CSRF</a> attacks.</p><p><code>\
         {SESSION_ID_HEADER}: {id}</code></p>"
    );
    let mut r = simple(StatusCode::CONFLICT, &text);
    let h = r.headers_mut();
    h.insert(SESSION_ID, HeaderValue::from_static(id));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(SESSION_ID_HEADER));
    r
}

fn unauthorized() -> Response {
    let mut r = simple(StatusCode::UNAUTHORIZED, "");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Transmission\""));
    r
}

const MISDIRECTED: &str = "<p>Transmission received your request, but the hostname was unrecognized.</p><p>To fix \
    this, choose one of the following options:<ul><li>Enable password authentication, then any hostname is \
    allowed.</li><li>Add the hostname you want to use to the whitelist in settings.</li></ul></p><p>If you're \
    editing settings.json, see the 'rpc-host-whitelist' and 'rpc-host-whitelist-enabled' entries.</p><p>This \
    requirement has been added to help prevent <a href=\"https://en.wikipedia.org/wiki/DNS_rebinding\">DNS \
    Rebinding</a> attacks.</p>";

async fn handle<B: Backend>(State(shared): State<Arc<Shared<B>>>, request: Request) -> Response {
    let client: Option<IpAddr> = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let config = &shared.config;

    if let Some(list) = &config.allow_list
        && !client.is_some_and(|ip| list.allows(ip))
    {
        tracing::warn!(client = ?client, "RPC request refused: address not in the allow-list");
        return simple(StatusCode::FORBIDDEN, "");
    }

    let authorization = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match shared.guard.check(authorization, client).await {
        Verdict::Allowed => {}
        Verdict::Missing | Verdict::Denied => return unauthorized(),
        Verdict::Refused => return simple(StatusCode::FORBIDDEN, ""),
    }

    if !shared.guard.required()
        && let Some(hosts) = &config.host_whitelist
    {
        // Exactly one Host (or, without one, the authority of an absolute-form target): with
        // two, a proxy in front might route by the other.
        let mut hosts_sent = request.headers().get_all(header::HOST).iter();
        let host = match (hosts_sent.next(), hosts_sent.next()) {
            (Some(h), None) => h.to_str().ok(),
            (None, _) => request.uri().authority().map(|a| a.as_str()),
            (Some(_), Some(_)) => None,
        };
        if !hosts.allows(host) {
            tracing::warn!(client = ?client, host = ?host, "RPC request refused: Host not in the host whitelist");
            return simple(StatusCode::MISDIRECTED_REQUEST, MISDIRECTED);
        }
    }

    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let loc = target.strip_prefix(BASE).unwrap_or("");
    if loc.is_empty() || loc == "web" || loc.starts_with("web?") {
        let mut r = simple(StatusCode::MOVED_PERMANENTLY, "");
        r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/transmission/web/"));
        return r;
    }
    if let Some(name) = loc.strip_prefix("web/") {
        return crate::web::serve(request.method(), name, request.headers(), session_id())
            .unwrap_or_else(|| simple(StatusCode::NOT_FOUND, ""));
    }

    let id_ok = request.headers().get(SESSION_ID).is_some_and(|v| v.as_bytes() == session_id().as_bytes());
    if !id_ok {
        return conflict();
    }

    if loc == "stream" {
        if request.method() != Method::POST {
            return simple(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        return stream(&shared, client, request).await;
    }
    if !loc.starts_with("rpc") {
        return simple(StatusCode::NOT_FOUND, "");
    }
    if request.method() != Method::POST {
        return simple(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    rpc(&shared, client, request).await
}

/// Reads the body within the memory budget and parses it; with the budget's permit, to be
/// held while the request runs.
async fn read<B: Backend>(
    shared: &Shared<B>,
    request: Request,
) -> Result<(envelope::Request, tokio::sync::SemaphorePermit<'_>), Response> {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(simple(StatusCode::PAYLOAD_TOO_LARGE, ""));
    }
    // A MiB of budget per MiB declared; a body of unknown length may be as large as allowed.
    let mib = declared.map_or(MAX_BODY as u64 >> 20, |n| n.div_ceil(1 << 20)).clamp(1, u64::from(BODY_BUDGET_MIB));
    let body = request.into_body();
    let read = async {
        let permit = shared.body_budget.acquire_many(mib as u32).await.ok()?;
        let bytes = axum::body::to_bytes(body, MAX_BODY).await;
        Some((bytes, permit))
    };
    let (bytes, permit) = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Some((Ok(bytes), permit))) => (bytes, permit),
        Ok(Some((Err(e), _))) if is_too_long(&e) => return Err(simple(StatusCode::PAYLOAD_TOO_LARGE, "")),
        // The client went away or sent a malformed chunked body.
        Ok(Some((Err(_), _))) => return Err(simple(StatusCode::BAD_REQUEST, "")),
        Ok(None) => return Err(simple(StatusCode::SERVICE_UNAVAILABLE, "")),
        Err(_) => return Err(simple(StatusCode::REQUEST_TIMEOUT, "")),
    };
    match envelope::parse(&bytes) {
        Ok(p) => Ok((p, permit)),
        Err(e) => Err(simple(StatusCode::PAYLOAD_TOO_LARGE, &format!("<p>{e}</p>"))),
    }
}

/// The web page's update stream ([`crate::stream`]): its request is a torrent-get.
async fn stream<B: Backend>(shared: &Arc<Shared<B>>, client: Option<IpAddr>, request: Request) -> Response {
    let gzip = crate::stream::accepts_gzip(request.headers().get(header::ACCEPT_ENCODING).map(HeaderValue::as_bytes));
    let parsed = match read(shared, request).await {
        Ok((parsed, _permit)) => parsed,
        Err(r) => return r,
    };
    if parsed.method.as_deref() != Some("torrent-get") {
        return simple(StatusCode::BAD_REQUEST, "<p>the stream's request is a torrent-get</p>");
    }
    let body = match crate::stream::open(Arc::clone(&shared.backend), &shared.holds, client, parsed.args, gzip) {
        Some(lines) => Body::from_stream(lines),
        None => {
            tracing::debug!(client = ?client, "update stream refused: too many held, or no events");
            return json(Body::from("{\"poll\":true}\n"));
        }
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("Transmission"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // nginx and its kind pass each line on at once rather than buffer the response.
    h.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    r
}

/// A JSON answer.
fn json(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("Transmission"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

/// Reads the body within the memory budget and runs the request.
async fn rpc<B: Backend>(shared: &Shared<B>, client: Option<IpAddr>, request: Request) -> Response {
    let (parsed, permit) = match read(shared, request).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A held torrent-get (bitswarm-wait) waits holding none of the body budget.
    if let Some((since, wait)) = crate::hold::asks(parsed.method.as_deref(), &parsed.args) {
        drop(permit);
        crate::hold::wait(shared.backend.as_ref(), &shared.holds, client, since, wait).await;
    }
    let tag = parsed.tag;
    let method = parsed.method.clone();
    let ctx = Context { session_id: session_id(), anti_brute_force: shared.guard.required() };
    let reply = methods::call(shared.backend.as_ref(), ctx, parsed).await;
    tracing::debug!(method = method.as_deref().unwrap_or(""), result = reply.result_str(), "RPC");
    json(Body::from(reply.to_json(tag)))
}

/// Whether reading a body failed because it was longer than [`MAX_BODY`].
fn is_too_long(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests;
