//! The Mainline DHT (BEP 5) as a state machine without I/O, in the manner of quinn-proto: the
//! caller hands it datagrams and the time, and asks it what to send and when to wake.
//!
//! * [`Dht`]: one node. Inputs are [`Dht::handle_packet`] and [`Dht::handle_timeout`]; outputs
//!   are [`Dht::poll_transmit`], [`Dht::poll_event`] and [`Dht::poll_timeout`]. User calls:
//!   [`Dht::bootstrap`], [`Dht::get_peers`], [`Dht::announce`], [`Dht::scrape`],
//!   [`Dht::find_node`], [`Dht::add_node`], and [`Dht::save`] / [`load`] /
//!   [`Dht::import_nodes`] to keep the routing table across restarts.
//! * [`krpc`]: the message codec, usable alone (BEP 5, 32 `want`/`nodes6`, 33 scrape, 42 `ip`,
//!   43 `ro`, 51 `sample_infohashes`). Malformed queries are answered with error 203 (204 for
//!   an unknown method) saying what is wrong.
//! * [`routing`]: k-buckets that split around our id, replacements, node states, one table per
//!   address family. [`bep42`]: ids bound to addresses (crc32c). [`bloom`]: BEP 33 filters.
//!
//! Everything a hostile network can grow is bounded: the routing table (160 buckets of 2k),
//! queries answered per source address (token bucket), our queries per second and in flight,
//! peers stored (torrents × peers, 30-minute expiry), a lookup's candidates and peers reported.
//! Announce tokens are a keyed hash of the querier's address under a secret rotated every five
//! minutes, so they cost no memory. Time is an [`std::time::Instant`] passed in and randomness
//! comes from the seed given to [`Dht::new`], so a simulation replays exactly.
//!
//! A driver with one UDP socket:
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::time::Instant;
//! use bitswarm_dht::{Config, Dht, Event, InfoHash};
//!
//! let socket = UdpSocket::bind("0.0.0.0:6881")?;
//! let config = Config { ipv6: false, ..Config::default() };
//! let mut dht = Dht::with_os_seed(config, Instant::now())?;
//! dht.bootstrap(Instant::now(), &["67.215.246.10:6881".parse()?]);
//! dht.get_peers(Instant::now(), InfoHash([0xAB; 20]));
//! let mut buf = [0u8; 2048];
//! loop {
//!     while let Some(t) = dht.poll_transmit() {
//!         let _ = socket.send_to(&t.bytes, t.dest);
//!     }
//!     while let Some(event) = dht.poll_event() {
//!         if let Event::Peers { peers, .. } = event {
//!             println!("{peers:?}");
//!         }
//!     }
//!     let wake = dht.poll_timeout().unwrap_or_else(Instant::now);
//!     socket.set_read_timeout(Some(wake.saturating_duration_since(Instant::now()).max(std::time::Duration::from_millis(1))))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) => dht.handle_packet(Instant::now(), from, &buf[..n]),
//!         Err(_) => dht.handle_timeout(Instant::now()),
//!     }
//! }
//! # #[allow(unreachable_code)] Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With a dual-stack IPv6 socket, datagrams from IPv4 peers arrive as IPv4-mapped addresses;
//! the node treats them as IPv4, and its [`Transmit::dest`] for IPv4 nodes is a plain IPv4
//! address, which such a socket needs mapped back (`::ffff:a.b.c.d`).
pub mod bep42;
pub mod bloom;
pub mod id;
pub mod krpc;
mod limit;
mod lookup;
mod node;
mod rng;
pub mod routing;
mod store;
mod token;
pub mod vote;

pub use bep42::Bep42;
pub use krpc::NodeInfo;
pub use node::{Config, Dht, Error, Event, LookupId, LookupStats, Saved, Transmit, load, save};

pub use id::{InfoHash, NodeId};
