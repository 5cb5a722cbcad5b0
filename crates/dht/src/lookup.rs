//! One iterative lookup over one address family: the candidates found so far, sorted by XOR
//! distance to the target, and which of them have been asked. The node decides when to send;
//! this only answers "whom next" and "are we done".
//!
//! The rule (Kademlia's, as libtorrent applies it): keep at most `alpha` queries in flight, always
//! to the closest candidate not yet asked, and stop once the `k` closest candidates that
//! answered have no closer candidate left unasked.

use std::net::SocketAddr;

use crate::id::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Fresh,
    InFlight,
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Unknown for a bootstrap router until it answers.
    pub(crate) id: Option<NodeId>,
    pub(crate) addr: SocketAddr,
    dist: [u8; 20],
    pub(crate) state: State,
    /// Hops from our own table: 0 for the nodes we started with.
    pub(crate) depth: u32,
    pub(crate) token: Option<Vec<u8>>,
    /// A bootstrap router: asked, but never part of the result.
    pub(crate) router: bool,
}

#[derive(Debug)]
pub(crate) struct Traversal {
    pub(crate) target: NodeId,
    pub(crate) v6: bool,
    pub(crate) cands: Vec<Candidate>,
    pub(crate) in_flight: usize,
    max_cands: usize,
}

impl Traversal {
    pub(crate) fn new(target: NodeId, v6: bool, max_cands: usize) -> Self {
        Traversal { target, v6, cands: Vec::new(), in_flight: 0, max_cands }
    }

    /// Adds a candidate unless its address or id is already there. Past `max_cands` the
    /// farthest candidates not in flight are dropped (they would never be asked).
    pub(crate) fn add(&mut self, id: Option<NodeId>, addr: SocketAddr, depth: u32, router: bool) {
        if self.cands.iter().any(|c| c.addr == addr || (id.is_some() && c.id == id)) {
            return;
        }
        let dist = id.map_or([0xFF; 20], |id| id.distance(&self.target));
        let at = self.cands.partition_point(|c| c.dist <= dist);
        if at >= self.max_cands {
            return;
        }
        self.cands.insert(at, Candidate { id, addr, dist, state: State::Fresh, depth, token: None, router });
        while self.cands.len() > self.max_cands {
            match self.cands.iter().rposition(|c| c.state != State::InFlight) {
                Some(i) => {
                    self.cands.remove(i);
                }
                None => break,
            }
        }
    }

    /// The closest candidate to ask next, if one may be asked now.
    pub(crate) fn next_to_query(&self, k: usize, alpha: usize) -> Option<usize> {
        if self.in_flight >= alpha {
            return None;
        }
        let mut answered = 0;
        for (i, c) in self.cands.iter().enumerate() {
            if answered >= k {
                break;
            }
            match c.state {
                State::Responded if !c.router => answered += 1,
                State::Fresh => return Some(i),
                _ => {}
            }
        }
        None
    }

    pub(crate) fn mark_in_flight(&mut self, i: usize) {
        self.cands[i].state = State::InFlight;
        self.in_flight += 1;
    }

    fn in_flight_at(&self, addr: SocketAddr) -> Option<usize> {
        self.cands.iter().position(|c| c.addr == addr && c.state == State::InFlight)
    }

    /// `addr` answered as `id`: returns its depth, or `None` if we were not waiting for it.
    pub(crate) fn responded(&mut self, addr: SocketAddr, id: NodeId, token: Option<Vec<u8>>) -> Option<u32> {
        let i = self.in_flight_at(addr)?;
        self.in_flight -= 1;
        let mut c = self.cands.remove(i);
        c.state = State::Responded;
        c.token = token;
        if c.id != Some(id) {
            // A router (or a node that changed its id): place it where its real id belongs.
            c.id = Some(id);
            c.dist = id.distance(&self.target);
        }
        let depth = c.depth;
        let at = self.cands.partition_point(|x| x.dist <= c.dist);
        self.cands.insert(at, c);
        Some(depth)
    }

    /// `addr` did not answer (timeout or error).
    pub(crate) fn failed(&mut self, addr: SocketAddr) -> bool {
        match self.in_flight_at(addr) {
            Some(i) => {
                self.in_flight -= 1;
                self.cands[i].state = State::Failed;
                true
            }
            None => false,
        }
    }

    pub(crate) fn is_finished(&self, k: usize) -> bool {
        self.in_flight == 0 && self.next_to_query(k, usize::MAX).is_none()
    }

    /// The `k` closest candidates that answered (routers left out).
    pub(crate) fn closest_responded(&self, k: usize) -> impl Iterator<Item = &Candidate> {
        self.cands.iter().filter(|c| c.state == State::Responded && !c.router).take(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 1))
    }

    fn id(b: u8) -> NodeId {
        let mut x = [0u8; 20];
        x[0] = b;
        NodeId(x)
    }

    #[test]
    fn asks_closest_first_alpha_at_a_time_and_stops_when_k_closest_answered() {
        let mut t = Traversal::new(NodeId([0; 20]), false, 16);
        for i in [8u8, 1, 5, 3] {
            t.add(Some(id(i)), a(i), 0, false);
        }
        t.add(Some(id(3)), a(99), 0, false); // same id: ignored
        t.add(None, a(200), 0, true);
        assert_eq!(t.cands.len(), 5);
        let order: Vec<u8> = (0..3)
            .map(|_| {
                let i = t.next_to_query(2, 3).unwrap();
                t.mark_in_flight(i);
                t.cands[i].id.unwrap().0[0]
            })
            .collect();
        assert_eq!(order, [1, 3, 5]);
        assert_eq!(t.next_to_query(2, 3), None, "alpha in flight");
        assert_eq!(t.responded(a(3), id(3), Some(b"t".to_vec())), Some(0));
        t.add(Some(id(2)), a(2), 1, false);
        // id 2 is closer than 5, 8: asked next.
        let i = t.next_to_query(2, 3).unwrap();
        assert_eq!(t.cands[i].id, Some(id(2)));
        t.mark_in_flight(i);
        t.failed(a(1));
        t.responded(a(2), id(2), None);
        assert!(!t.is_finished(2), "5 still in flight");
        t.responded(a(5), id(5), None);
        // 2 and 3 answered and nothing closer is unasked: done though 8 and the router wait.
        assert!(t.is_finished(2));
        let best: Vec<_> = t.closest_responded(2).map(|c| c.id.unwrap().0[0]).collect();
        assert_eq!(best, [2, 3]);
    }

    #[test]
    fn routers_are_asked_when_nothing_else_is_left_and_resorted_by_their_id() {
        let mut t = Traversal::new(NodeId([0; 20]), false, 4);
        t.add(None, a(200), 0, true);
        let i = t.next_to_query(8, 3).unwrap();
        t.mark_in_flight(i);
        assert_eq!(t.responded(a(200), id(7), None), Some(0));
        for i in 1..10 {
            t.add(Some(id(i)), a(i), 1, false);
        }
        assert_eq!(t.cands.len(), 4, "bounded");
        assert_eq!(t.cands[0].id, Some(id(1)));
        assert!(t.closest_responded(8).next().is_none(), "routers are not results");
    }
}
