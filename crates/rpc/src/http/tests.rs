//! The HTTP checks, in Transmission's order, driven through the router without sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use tower_service::Service;

use super::*;
use crate::config::{AddressList, Credentials, HostWhitelist, RpcConfig};
use crate::methods::testing::Fake;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(router: &axum::Router, req: Request<Body>) -> Answer {
    let resp = router.clone().call(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    Answer { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

fn request(method: &str, uri: &str) -> axum::http::request::Builder {
    request_to(method, uri, "127.0.0.1:9091")
}

fn request_to(method: &str, uri: &str, host: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri).header(header::HOST, host)
}

fn from(req: axum::http::request::Builder, client: &str, body: &str) -> Request<Body> {
    let mut r = req.body(Body::from(body.to_owned())).unwrap();
    r.extensions_mut().insert(ConnectInfo(client.parse::<SocketAddr>().unwrap()));
    r
}

fn local(req: axum::http::request::Builder, body: &str) -> Request<Body> {
    from(req, "127.0.0.1:50000", body)
}

fn with_id(req: axum::http::request::Builder) -> axum::http::request::Builder {
    req.header("x-transmission-session-id", session_id())
}

fn open_router() -> axum::Router {
    router(Arc::new(Fake::new()), RpcConfig::default())
}

const STATS: &str = r#"{"method":"session-stats","tag":1}"#;

#[test]
fn session_id_is_48_alphanumerics_and_stable() {
    let id = session_id();
    assert_eq!(id.len(), 48);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(id, session_id());
}

#[tokio::test]
async fn conflict_hands_out_the_id_exactly_like_transmission() {
    let r = open_router();
    let a = send(&r, local(request("POST", "/transmission/rpc/"), STATS)).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.headers["x-transmission-session-id"], session_id());
    assert_eq!(a.headers[header::SERVER], "Transmission");
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/html; charset=ISO-8859-1");
    assert_eq!(a.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS], "X-Transmission-Session-Id");
    assert_eq!(a.body.len(), 581, "the transcript's 409 body is 581 bytes with a 48-character id");
    assert!(a.body.starts_with("<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>"));
    assert!(a.body.ends_with(&format!("<p><code>X-Transmission-Session-Id: {}</code></p>", session_id())));
    // A wrong id, Python's "0", and a bodiless GET (Sonarr, Flood) all get the 409.
    let wrong = request("POST", "/transmission/rpc").header("X-Transmission-Session-Id", "0");
    assert_eq!(send(&r, local(wrong, STATS)).await.status, StatusCode::CONFLICT);
    assert_eq!(send(&r, local(request("GET", "/transmission/rpc"), "")).await.status, StatusCode::CONFLICT);
    // GET with the id: 405.
    let a = send(&r, local(with_id(request("GET", "/transmission/rpc")), "")).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.body, "<h1>405: Method Not Allowed</h1>");
}

#[tokio::test]
async fn rpc_paths_and_other_paths() {
    let r = open_router();
    for uri in ["/transmission/rpc", "/transmission/rpc/", "/transmission/rpc?x=1", "/transmission/rpcfoo"] {
        // The header name in any case; transmission-remote's Content-Type is ignored.
        let req = request("POST", uri)
            .header("X-TRANSMISSION-SESSION-ID", session_id())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let a = send(&r, local(req, STATS)).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert_eq!(a.headers[header::CONTENT_TYPE], "application/json; charset=UTF-8");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["result"], "success");
        assert_eq!(v["tag"], 1);
    }
    for uri in ["/", "/transmission", "/transmission/", "/transmission/web", "/elsewhere"] {
        let a = send(&r, local(request("GET", uri), "")).await;
        assert_eq!(a.status, StatusCode::MOVED_PERMANENTLY, "{uri}");
        assert_eq!(a.headers[header::LOCATION], "/transmission/web/");
    }
    assert_eq!(send(&r, local(request("GET", "/transmission/web/"), "")).await.status, StatusCode::OK);
    assert_eq!(send(&r, local(request("GET", "/transmission/web/nope.js"), "")).await.status, StatusCode::NOT_FOUND);
    // Other paths under the base: the session id first, then 404.
    assert_eq!(send(&r, local(request("GET", "/transmission/x"), "")).await.status, StatusCode::CONFLICT);
    let a = send(&r, local(with_id(request("POST", "/transmission/x")), STATS)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn basic_auth_comes_before_the_session_id() {
    let config = RpcConfig { credentials: Some(Credentials::from_password("user", "pass")), ..RpcConfig::default() };
    let r = router(Arc::new(Fake::new()), config);
    let good = format!("Basic {}", data_encoding::BASE64.encode(b"user:pass"));
    let bad = format!("Basic {}", data_encoding::BASE64.encode(b"user:nope"));
    // No credentials (transmission-remote's first try): 401 with the challenge curl needs.
    let a = send(&r, local(request("POST", "/transmission/rpc/"), STATS)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Basic realm=\"Transmission\"");
    assert_eq!(a.body, "<h1>401: Unauthorized</h1>");
    let a = send(&r, local(request("POST", "/transmission/rpc/").header(header::AUTHORIZATION, &bad), STATS)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Right credentials: then the 409, then the answer.
    let a = send(&r, local(request("POST", "/transmission/rpc/").header(header::AUTHORIZATION, &good), STATS)).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let req = with_id(request("POST", "/transmission/rpc/")).header(header::AUTHORIZATION, &good);
    assert_eq!(send(&r, local(req, STATS)).await.status, StatusCode::OK);
    // With a password, any Host will do (Transmission skips the Host check).
    let req =
        with_id(request_to("POST", "/transmission/rpc/", "my.nas.example:9091")).header(header::AUTHORIZATION, &good);
    assert_eq!(send(&r, local(req, STATS)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn authorization_is_ignored_without_a_password() {
    let r = open_router();
    let req = with_id(request("POST", "/transmission/rpc")).header(header::AUTHORIZATION, "Basic Og==");
    assert_eq!(send(&r, local(req, STATS)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_allow_list_comes_first() {
    let config = RpcConfig {
        allow_list: Some(AddressList::parse("127.0.0.1,192.168.*.*").unwrap()),
        credentials: Some(Credentials::from_password("u", "p")),
        ..RpcConfig::default()
    };
    let r = router(Arc::new(Fake::new()), config);
    let a = send(&r, from(request("POST", "/transmission/rpc"), "10.0.0.1:4000", STATS)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.body, "<h1>403: Forbidden</h1>");
    let a = send(&r, from(request("POST", "/transmission/rpc"), "192.168.3.4:4000", STATS)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(&r, from(request("POST", "/transmission/rpc"), "[::ffff:192.168.3.4]:4000", STATS)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Without the client's address an allow-list cannot pass anyone.
    let no_addr = request("POST", "/transmission/rpc").body(Body::from(STATS)).unwrap();
    assert_eq!(send(&r, no_addr).await.status, StatusCode::FORBIDDEN);
    // Without an allow-list, anyone gets as far as the password.
    let open =
        RpcConfig { allow_list: None, credentials: Some(Credentials::from_password("u", "p")), ..RpcConfig::default() };
    let r = router(Arc::new(Fake::new()), open);
    let a = send(&r, from(request("POST", "/transmission/rpc"), "10.0.0.1:4000", STATS)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn host_check_against_dns_rebinding() {
    let r = open_router();
    let host = |h: &str| with_id(request_to("POST", "/transmission/rpc", h));
    for ok in ["127.0.0.1:9091", "[::1]:9091", "localhost:9091", "localhost", "192.168.1.9"] {
        assert_eq!(send(&r, local(host(ok), STATS)).await.status, StatusCode::OK, "{ok}");
    }
    let a = send(&r, local(host("evil.example:9091"), STATS)).await;
    assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(a.body.starts_with(
        "<h1>421: Misdirected Request</h1><p>Transmission received your request, but the hostname was unrecognized."
    ));
    assert!(a.body.contains("DNS Rebinding"));
    // Before the session id: a rebinding page cannot even learn it.
    let a = send(&r, local(request_to("GET", "/transmission/rpc", "evil.example"), "")).await;
    assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST);
    // Two Host headers (one allowed, one not): refused, whichever a proxy would use.
    let twice = host("127.0.0.1:9091").header(header::HOST, "evil.example");
    assert_eq!(send(&r, local(twice, STATS)).await.status, StatusCode::MISDIRECTED_REQUEST);
    let listed = RpcConfig { host_whitelist: Some(HostWhitelist::parse("*.lan").unwrap()), ..RpcConfig::default() };
    let r = router(Arc::new(Fake::new()), listed);
    assert_eq!(send(&r, local(host("nas.lan:9091"), STATS)).await.status, StatusCode::OK);
    assert_eq!(send(&r, local(host("nas.evil:9091"), STATS)).await.status, StatusCode::MISDIRECTED_REQUEST);
    let off = RpcConfig { host_whitelist: None, ..RpcConfig::default() };
    let r = router(Arc::new(Fake::new()), off);
    assert_eq!(send(&r, local(host("anything.example"), STATS)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn body_limits() {
    let r = open_router();
    let big = with_id(request("POST", "/transmission/rpc")).header(header::CONTENT_LENGTH, (MAX_BODY + 1).to_string());
    assert_eq!(send(&r, local(big, "")).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A body longer than it may be, whatever it declared (or without declaring).
    let huge = "x".repeat(MAX_BODY + 1);
    let a = send(&r, local(with_id(request("POST", "/transmission/rpc")), &huge)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let many = format!("[{}0]", "0,".repeat(crate::envelope::MAX_JSON_VALUES));
    let a = send(&r, local(with_id(request("POST", "/transmission/rpc")), &many)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Garbage within the limits is an RPC error, still HTTP 200.
    let a = send(&r, local(with_id(request("POST", "/transmission/rpc")), "garbage")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, r#"{"arguments":{},"result":"no method name"}"#);
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever the method, target, headers and body, the handler answers with one of its
        /// statuses and never panics.
        #[test]
        fn any_request_gets_an_answer(
            method in proptest::sample::select(&["GET", "POST", "PUT", "OPTIONS", "DELETE", "HEAD"][..]),
            path in prop_oneof![
                Just("/transmission/rpc".to_owned()),
                "/transmission/[a-z/?=]{0,12}",
                "/[a-zA-Z0-9/%?=.]{0,20}",
            ],
            host in proptest::option::of("[a-zA-Z0-9.:\\[\\]-]{0,24}"),
            with_id in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let r = open_router();
            let mut req = Request::builder().method(method).uri(path.as_str());
            if let Some(h) = &host {
                req = req.header(header::HOST, h.as_str());
            }
            if with_id {
                req = with_id_header(req);
            }
            let Ok(mut req) = req.body(Body::from(body)) else { return Ok(()) };
            req.extensions_mut().insert(ConnectInfo("127.0.0.1:1".parse::<SocketAddr>().unwrap()));
            let a = rt().block_on(send(&r, req));
            let expected = [200, 301, 404, 405, 409, 413, 421];
            prop_assert!(expected.contains(&a.status.as_u16()), "{}", a.status);
            prop_assert_eq!(&a.headers[header::SERVER], "Transmission");
        }
    }

    fn with_id_header(req: axum::http::request::Builder) -> axum::http::request::Builder {
        with_id(req)
    }
}

#[tokio::test]
async fn the_web_page_is_served_with_its_types_and_policy() {
    let r = open_router();
    for (uri, content_type, needle) in [
        ("/transmission/web/", "text/html; charset=utf-8", "<script type=\"module\" src=\"app.js\"></script>"),
        ("/transmission/web/index.html", "text/html; charset=utf-8", "<!doctype html>"),
        ("/transmission/web/app.js", "text/javascript; charset=utf-8", "torrent-get"),
        ("/transmission/web/style.css", "text/css; charset=utf-8", "prefers-color-scheme: dark"),
        ("/transmission/web/icon.svg", "image/svg+xml", "<svg"),
        ("/transmission/web/app.js?v=1", "text/javascript; charset=utf-8", "recently-active"),
    ] {
        // No session id needed: a page is read, not changed.
        let a = send(&r, local(request("GET", uri), "")).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert_eq!(a.headers[header::CONTENT_TYPE], content_type, "{uri}");
        assert!(a.body.contains(needle), "{uri}");
        let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe") && !csp.contains("http"), "{csp}");
        assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(a.headers[header::CACHE_CONTROL], "no-cache");
        // The session id rides along, so the page needs no 409.
        assert_eq!(a.headers["x-transmission-session-id"], session_id());
        // Revalidation: the same ETag gets 304 and no body.
        let tag = a.headers[header::ETAG].clone();
        let again = send(&r, local(request("GET", uri).header(header::IF_NONE_MATCH, tag.clone()), "")).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{uri}");
        assert!(again.body.is_empty());
        let other = send(&r, local(request("GET", uri).header(header::IF_NONE_MATCH, "\"x\""), "")).await;
        assert_eq!(other.status, StatusCode::OK, "{uri}");
    }
    // HEAD: the headers without the body; other methods: 405.
    let a = send(&r, local(request("HEAD", "/transmission/web/"), "")).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(a.headers["x-transmission-session-id"], session_id());
    let a = send(&r, local(with_id(request("POST", "/transmission/web/app.js")), "")).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers[header::ALLOW], "GET, HEAD");
    // Nothing else under web/, and no way out of it.
    for uri in
        ["/transmission/web/x", "/transmission/web/../rpc", "/transmission/web//app.js", "/transmission/web/%61pp.js"]
    {
        assert_eq!(send(&r, local(request("GET", uri), "")).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn the_web_page_is_behind_the_same_checks_as_the_rpc() {
    // A password: none, or a wrong one, gets 401, the right one the page.
    let config = RpcConfig { credentials: Some(Credentials::from_password("user", "pass")), ..RpcConfig::default() };
    let r = router(Arc::new(Fake::new()), config);
    let good = format!("Basic {}", data_encoding::BASE64.encode(b"user:pass"));
    let bad = format!("Basic {}", data_encoding::BASE64.encode(b"user:nope"));
    for uri in ["/transmission/web/", "/transmission/web/app.js", "/"] {
        let a = send(&r, local(request("GET", uri), "")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(!a.headers.contains_key("x-transmission-session-id"), "{uri}");
        let a = send(&r, local(request("GET", uri).header(header::AUTHORIZATION, &bad), "")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let a = send(&r, local(request("GET", "/transmission/web/").header(header::AUTHORIZATION, &good), "")).await;
    assert_eq!(a.status, StatusCode::OK);
    // The allow-list: another address gets 403.
    let config = RpcConfig { allow_list: Some(AddressList::parse("127.0.0.1").unwrap()), ..RpcConfig::default() };
    let r = router(Arc::new(Fake::new()), config);
    let a = send(&r, from(request("GET", "/transmission/web/"), "10.0.0.1:4000", "")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&r, local(request("GET", "/transmission/web/"), "")).await.status, StatusCode::OK);
    // Without a password, a rebound Host gets 421 for the page too (and no session id), and
    // for the redirect to it.
    let r = open_router();
    for uri in ["/transmission/web/", "/transmission/web/app.js", "/"] {
        let a = send(&r, local(request_to("GET", uri, "evil.example:9091"), "")).await;
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{uri}");
        assert!(!a.headers.contains_key("x-transmission-session-id"), "{uri}");
    }
    assert_eq!(
        send(&r, local(request_to("GET", "/transmission/web/", "localhost:9091"), "")).await.status,
        StatusCode::OK
    );
}
