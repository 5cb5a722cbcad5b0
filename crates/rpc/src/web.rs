//! The web page (issue 18): plain HTML, CSS and JavaScript embedded in the binary, served under
//! `/transmission/web/` behind the same checks as the RPC, which it drives with the session-id
//! handshake like any other client.
//!
//! Every asset is answered with a `Content-Security-Policy` that allows only this origin (no
//! inline script or style, nothing from another site), `X-Content-Type-Options: nosniff`, no
//! framing, and an `ETag` so that a browser revalidates cheaply (`Cache-Control: no-cache`: a
//! new binary's page is never hidden behind an old copy). Each also carries the session id, so
//! the page learns it without provoking a 409 (which a browser logs as an error); it is no more
//! exposed than by the 409 that hands it to anyone, since no other site may read the headers.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

/// `(name, bytes, content type)` of every asset; "" is the page itself.
const ASSETS: &[(&str, &[u8], &str)] = &[
    ("", include_bytes!("../web/index.html"), "text/html; charset=utf-8"),
    ("index.html", include_bytes!("../web/index.html"), "text/html; charset=utf-8"),
    ("app.js", include_bytes!("../web/app.js"), "text/javascript; charset=utf-8"),
    ("style.css", include_bytes!("../web/style.css"), "text/css; charset=utf-8"),
    ("icon.svg", include_bytes!("../web/icon.svg"), "image/svg+xml"),
];

/// Only this origin, for everything; no plugins, no framing, forms posted nowhere.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `name` (the path under `/transmission/web/`, query ignored), if there is one.
fn find(name: &str) -> Option<(usize, &'static [u8], &'static str)> {
    let name = name.split(['?', '#']).next().unwrap_or("");
    ASSETS.iter().enumerate().find(|(_, a)| a.0 == name).map(|(i, a)| (i, a.1, a.2))
}

/// A strong validator per asset: FNV-1a of its bytes, made once.
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let h =
                    a.1.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                format!("\"{h:016x}\"")
            })
            .collect()
    })[i]
}

/// The answer to `method` on `/transmission/web/{name}`: the asset (GET, HEAD), 304 when the
/// browser's copy is current, 404 for an unknown name, 405 for other methods.
pub(crate) fn serve(method: &Method, name: &str, headers: &HeaderMap, session_id: &'static str) -> Option<Response> {
    let (i, bytes, content_type) = find(name)?;
    let mut status = StatusCode::OK;
    if method != Method::GET && method != Method::HEAD {
        status = StatusCode::METHOD_NOT_ALLOWED;
    }
    let tag = etag(i);
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if status == StatusCode::OK && fresh {
        status = StatusCode::NOT_MODIFIED;
    }
    let body = if status == StatusCode::OK && method == Method::GET { Body::from(bytes) } else { Body::empty() };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::OK && method == Method::HEAD {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(crate::http::SESSION_ID, HeaderValue::from_static(session_id));
    Some(r)
}
