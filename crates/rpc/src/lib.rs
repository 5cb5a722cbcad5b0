//! Transmission's RPC, as Transmission 4.0.x speaks it (rpc-version 17), over a [`Backend`]
//! the daemon implements, so that `bitswarm daemon` can be driven by transmission-remote,
//! the Python `transmission-rpc` client, Sonarr/Radarr, Flood and Transmission's own UIs.
//!
//! The crate is the protocol and nothing else: the HTTP checks (allow-list, basic auth with
//! argon2 hashes and throttled failures, the Host check against DNS rebinding, the 409
//! session-id handshake), the JSON envelope with Transmission's coercions and error strings,
//! torrent selection by `ids` in every form, and each method's arguments and reply. What a
//! torrent is and does stays in the backend, which sees only checked requests and torrent ids.
//! It also serves a web page (`web/`: HTML, CSS and JavaScript embedded in the binary) under
//! `/transmission/web/`, behind the same checks, which is one more client of the RPC.
//!
//! ```no_run
//! # async fn serve<B: bitswarm_rpc::Backend>(backend: std::sync::Arc<B>) -> std::io::Result<()> {
//! use std::net::SocketAddr;
//! let config = bitswarm_rpc::RpcConfig::default();
//! let listen: SocketAddr = "127.0.0.1:9091".parse().unwrap();
//! config.validate(listen).expect("an unprotected RPC on the network");
//! let app = bitswarm_rpc::router(backend, config);
//! let listener = tokio::net::TcpListener::bind(listen).await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```
//!
//! Module map: [`http`] the HTTP checks and the handler, `auth` credential checks at request
//! time, [`config`] who may connect, `envelope` request and reply, `coerce` argument types,
//! `ids` torrent selection, `methods` the methods, `fields` torrent-get's fields, [`view`]
//! and [`backend`] the daemon's side, `web` the web page's assets.

mod auth;
pub mod backend;
mod coerce;
pub mod config;
mod envelope;
mod fields;
pub mod hash;
mod hold;
pub mod http;
mod ids;
mod methods;
mod stream;
pub mod view;
mod web;

pub use backend::{
    AddOutcome, AddRequest, AddSource, Backend, BackendError, Changes, CreateJob, CreateRequest, CreateState,
    FileSelection, QueueMove, RECENT_SECONDS, SessionSet, SwarmView, TorrentRef, TorrentSet, TrackerServerView, Wants,
};
pub use config::{AddressList, ConfigError, Credentials, HostWhitelist, RpcConfig, hash_password, verify_password};
pub use hash::{InfoHash, Magnet};
pub use hold::{MAX_HELD, MAX_HELD_PER_CLIENT, MAX_WAIT_SECS};
pub use http::{MAX_BODY, SESSION_ID_HEADER, router, session_id};
pub use view::{
    Encryption, Eta, FileView, LimitMode, PeerSource, PeerView, PeersFrom, Priority, SessionStats, SessionView,
    StatsTotals, Status, TorrentError, TorrentView, TrackerState, TrackerView,
};

/// The RPC version reported (`rpc-version`): Transmission 4.0's.
pub const RPC_VERSION: i64 = 17;
/// The oldest RPC version whose clients this server still serves (`rpc-version-minimum`).
pub const RPC_VERSION_MINIMUM: i64 = 14;
/// `rpc-version-semver`, Transmission 4.0's.
pub const RPC_VERSION_SEMVER: &str = "5.3.0";
