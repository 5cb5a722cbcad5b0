//! The RPC methods (§4), each turning a request's arguments into backend calls and a reply.

mod bitswarm;
mod session;
mod system;
mod torrent;

use crate::backend::{Backend, QueueMove};
use crate::envelope::{Reply, Request};

/// What the methods need to know about the server they run in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The `X-Transmission-Session-Id`, also reported as session-get's `session-id`.
    pub session_id: &'a str,
    /// Whether failed logins are throttled (session-get's `anti-brute-force-enabled`).
    pub anti_brute_force: bool,
}

/// Runs one request.
pub(crate) async fn call<B: Backend>(backend: &B, ctx: Context<'_>, request: Request) -> Reply {
    let Some(method) = request.method else { return Reply::error("no method name") };
    let args = request.args;
    match method.as_str() {
        "session-get" => session::get(backend, ctx, &args).await,
        "session-set" => session::set(backend, &args).await,
        "session-stats" => session::stats(backend),
        "session-close" => session::close(backend),
        "torrent-get" => torrent::get(backend, &args),
        "torrent-add" => torrent::add(backend, &args).await,
        "torrent-start" => torrent::act(backend, &args, |b, ids| b.start(ids, false)),
        "torrent-start-now" => torrent::act(backend, &args, |b, ids| b.start(ids, true)),
        "torrent-stop" => torrent::act(backend, &args, |b, ids| b.stop(ids)),
        "torrent-verify" => torrent::act(backend, &args, |b, ids| b.verify(ids)),
        "torrent-reannounce" => torrent::act(backend, &args, |b, ids| b.reannounce(ids)),
        "torrent-remove" => torrent::remove(backend, &args).await,
        "torrent-set" => torrent::set(backend, &args),
        "torrent-set-location" => torrent::set_location(backend, &args).await,
        "torrent-rename-path" => torrent::rename_path(backend, &args).await,
        "queue-move-top" => torrent::act(backend, &args, |b, ids| b.queue_move(ids, QueueMove::Top)),
        "queue-move-up" => torrent::act(backend, &args, |b, ids| b.queue_move(ids, QueueMove::Up)),
        "queue-move-down" => torrent::act(backend, &args, |b, ids| b.queue_move(ids, QueueMove::Down)),
        "queue-move-bottom" => torrent::act(backend, &args, |b, ids| b.queue_move(ids, QueueMove::Bottom)),
        "free-space" => system::free_space(&args).await,
        "port-test" => system::port_test(backend).await,
        "blocklist-update" => system::blocklist_update(backend).await,
        "group-get" => system::group_get(),
        "bitswarm-torrent-create" => bitswarm::create(backend, &args).await,
        "bitswarm-torrent-create-status" => bitswarm::create_status(backend, &args),
        "bitswarm-tracker-get" => bitswarm::tracker_get(backend).await,
        _ => Reply::error("method name not recognized"),
    }
}

/// Transmission's `tr_sys_path_is_relative` on POSIX: absolute means starting with `/`.
pub(crate) fn is_absolute(path: &str) -> bool {
    path.starts_with('/')
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
