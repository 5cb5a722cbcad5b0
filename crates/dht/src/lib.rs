//! The Mainline DHT as a state machine without I/O.
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

pub use bep42::Bep42;
pub use krpc::NodeInfo;
pub use node::{Config, Dht, Error, Event, LookupId, LookupStats, Saved, Transmit, load, save};

pub use id::{InfoHash, NodeId};
