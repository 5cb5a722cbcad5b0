//! The Mainline DHT as a state machine without I/O.
pub mod bep42;
pub mod bloom;
pub mod id;
pub mod krpc;
// Used by the node, which comes next.
#[allow(dead_code)]
mod limit;
#[allow(dead_code)]
pub mod routing;
#[allow(dead_code)]
mod store;
#[allow(dead_code)]
mod token;

pub use id::{InfoHash, NodeId};
