//! The Mainline DHT as a state machine without I/O.
pub mod bep42;
pub mod bloom;
pub mod id;
pub mod krpc;

pub use id::{InfoHash, NodeId};
