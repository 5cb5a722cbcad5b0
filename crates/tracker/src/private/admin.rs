//! The admin JSON API of a private tracker, on its HTTP address (see the README):
//!
//! | request | does |
//! | --- | --- |
//! | `GET /admin/users` | every user, with their figures |
//! | `POST /admin/users` `{"name": N}` | adds a user; the reply has the passkey |
//! | `POST /admin/users/NAME/disable`, `.../enable` | refuses (admits) the user's announces |
//! | `POST /admin/users/NAME/passkey-reset` | a new passkey; the old one is refused |
//! | `DELETE /admin/users/NAME` | deletes the user: their passkey is refused, their figures gone |
//! | `GET /admin/torrents` | the registered torrents |
//! | `POST /admin/torrents` `{"info_hash": H, "name": N, "size": S}` | registers one (name and size optional) |
//! | `DELETE /admin/torrents/HASH` | unregisters one, dropping its swarm |
//!
//! Every request carries `Authorization: Bearer TOKEN` (`bitswarm tracker admin-token` makes
//! one; the database keeps only its BLAKE2s hash), and only loopback clients are answered
//! unless `private.admin_remote` is true. A change is in force when the reply is sent.
//! Errors are `{"error": "..."}` with a 4xx or 5xx status.

// A handler's early answer is its error: a `Response` by value, as axum hands them around.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bitswarm_tracker_proto::InfoHash;
use serde::Deserialize;

use super::db::{self, DbError};
use crate::Shared;

/// The most bytes of a request body read.
const MAX_BODY: usize = 64 * 1024;

pub fn routes(r: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    r.route("/admin/users", get(list_users).post(add_user))
        .route("/admin/users/{name}", delete(delete_user))
        .route("/admin/users/{name}/{action}", post(user_action))
        .route("/admin/torrents", get(list_torrents).post(add_torrent))
        .route("/admin/torrents/{hash}", delete(remove_torrent))
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response()
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
}

fn db_error(e: DbError) -> Response {
    let status = match &e {
        DbError::NoUser(_) | DbError::NoTorrent(_) => StatusCode::NOT_FOUND,
        DbError::UserExists(_) => StatusCode::CONFLICT,
        DbError::Invalid(_) => StatusCode::BAD_REQUEST,
        DbError::Sqlite { .. } | DbError::Io(_) => {
            tracing::warn!("admin API: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e)
}

/// Checks the client's address and token.
fn authorize(s: &Shared, conn: Option<SocketAddr>, headers: &HeaderMap) -> Result<(), Response> {
    let Some(p) = &s.private else { return Err(error(StatusCode::NOT_FOUND, "not a private tracker")) };
    let local = conn.is_some_and(|a| a.ip().to_canonical().is_loopback());
    if !local && !p.config.admin_remote {
        return Err(error(StatusCode::FORBIDDEN, "the admin API answers loopback clients only (private.admin_remote)"));
    }
    let Some(want) = p.view().admin_token_hash.clone() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "no admin token is set: make one with `bitswarm tracker admin-token`",
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN`"));
    };
    let got = db::token_hash(token);
    // Both are 64 hex digits: compare every byte, whatever differs first.
    let same = got.len() == want.len() && got.bytes().zip(want.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
    if !same {
        return Err(error(StatusCode::UNAUTHORIZED, "wrong admin token"));
    }
    Ok(())
}

fn conn_of(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Runs `f` on the database, then puts the tables in force (dropping the swarms of torrents
/// no longer registered), all before answering.
async fn change<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&mut db::Db) -> Result<T, DbError> + Send + 'static,
) -> Result<T, Response> {
    let sh = s.clone();
    let r = tokio::task::spawn_blocking(move || {
        let p = sh.private.as_ref().ok_or_else(|| DbError::Invalid("not a private tracker".into()))?;
        let out = p.with_db(f)?;
        let dropped = super::put_in_force(&sh)?;
        Ok::<_, DbError>((out, dropped))
    })
    .await;
    match r {
        Ok(Ok((out, dropped))) => {
            if dropped && let Err(e) = s.drop_disallowed().await {
                tracing::warn!("admin API: the swarms of unregistered torrents could not be dropped: {e}");
            }
            Ok(out)
        }
        Ok(Err(e)) => Err(db_error(e)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("the database task failed: {e}"))),
    }
}

/// Runs `f` on the database (a read: nothing to put in force).
async fn query<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&mut db::Db) -> Result<T, DbError> + Send + 'static,
) -> Result<T, Response> {
    let sh = s.clone();
    let r = tokio::task::spawn_blocking(move || match &sh.private {
        Some(p) => p.with_db(f),
        None => Err(DbError::Invalid("not a private tracker".into())),
    })
    .await;
    match r {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(db_error(e)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("the database task failed: {e}"))),
    }
}

async fn read<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot read the body (at most {MAX_BODY} bytes): {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

async fn list_users(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    match query(&s, |db| db.users()).await {
        Ok(users) => json(StatusCode::OK, &serde_json::json!({ "users": users })),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
}

async fn add_user(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    let new: NewUser = match read(req).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    match change(&s, move |db| db.add_user(&new.name)).await {
        Ok((user, _)) => json(StatusCode::CREATED, &serde_json::json!(user)),
        Err(r) => r,
    }
}

async fn user_action(
    State(s): State<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
    req: Request,
) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    let done = match action.as_str() {
        "disable" | "enable" => {
            let on = action == "enable";
            let n = name.clone();
            change(&s, move |db| db.set_enabled(&n, on)).await.map(drop)
        }
        "passkey-reset" => {
            let n = name.clone();
            change(&s, move |db| db.reset_passkey(&n)).await.map(drop)
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no action {action:?}: POST /admin/users/NAME/disable, enable or passkey-reset"),
            );
        }
    };
    if let Err(r) = done {
        return r;
    }
    match query(&s, move |db| db.user(&name)).await {
        Ok(user) => json(StatusCode::OK, &serde_json::json!(user)),
        Err(r) => r,
    }
}

async fn delete_user(State(s): State<Arc<Shared>>, Path(name): Path<String>, req: Request) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    let n = name.clone();
    match change(&s, move |db| db.delete_user(&n)).await {
        Ok(_) => json(StatusCode::OK, &serde_json::json!({ "deleted": name })),
        Err(r) => r,
    }
}

async fn list_torrents(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    match query(&s, |db| db.torrents()).await {
        Ok(t) => json(StatusCode::OK, &serde_json::json!({ "torrents": t })),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTorrent {
    info_hash: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    size: u64,
}

fn parse_hash(h: &str) -> Result<InfoHash, Response> {
    InfoHash::parse(h).map_err(|_| {
        error(StatusCode::BAD_REQUEST, format!("{h:?} is not an info-hash (40 hex digits or 32 base32 characters)"))
    })
}

async fn add_torrent(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    let new: NewTorrent = match read(req).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let h = match parse_hash(&new.info_hash) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match change(&s, move |db| db.add_torrent(&h, &new.name, new.size)).await {
        Ok(_) => json(StatusCode::CREATED, &serde_json::json!({ "info_hash": h.to_hex() })),
        Err(r) => r,
    }
}

async fn remove_torrent(State(s): State<Arc<Shared>>, Path(hash): Path<String>, req: Request) -> Response {
    if let Err(r) = authorize(&s, conn_of(&req), req.headers()) {
        return r;
    }
    let h = match parse_hash(&hash) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match change(&s, move |db| db.remove_torrent(&h)).await {
        Ok(_) => json(StatusCode::OK, &serde_json::json!({ "removed": h.to_hex() })),
        Err(r) => r,
    }
}
