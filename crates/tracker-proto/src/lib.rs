//! The BitTorrent tracker wire formats, without I/O, for both ends of the conversation.
//!
//! * [`http`]: announce and scrape query strings (parse on the tracker, build on the client) and
//!   the bencoded replies (encode on the tracker, decode on the client): BEP 3, 7, 23, 48.
//! * [`udp`]: every BEP 15 packet, both ways, with BEP 41 option data tolerated after an
//!   announce request.
//!
//! Everything here is a pure function of its input: parsers return errors for anything short,
//! malformed or out of range and never panic (property-tested and fuzzed).

pub mod http;
pub mod udp;

pub use bitswarm_metainfo::InfoHash;

use std::fmt;

/// A peer's self-chosen 20-byte id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerId(")?;
        for &b in &self.0 {
            if b.is_ascii_graphic() && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str(")")
    }
}

/// The `event` of an announce. `None` is the regular re-announce.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub enum Event {
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

impl Event {
    /// The HTTP parameter value (`None` has none: the parameter is left out).
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }
    /// The BEP 15 number: 0 none, 1 completed, 2 started, 3 stopped.
    pub fn to_udp(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
    /// The event a BEP 15 number stands for. 4 is libtorrent's "paused" (BEP 21: a partial
    /// seed sends it on every announce), a regular announce as far as a swarm is concerned, as
    /// `event=paused` over HTTP.
    pub fn from_udp(v: u32) -> Option<Event> {
        Some(match v {
            0 | 4 => Event::None,
            1 => Event::Completed,
            2 => Event::Started,
            3 => Event::Stopped,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests;
