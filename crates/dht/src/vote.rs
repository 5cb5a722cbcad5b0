//! Our external address as the nodes that answer us see it (BEP 42's `ip` key), by a vote, in
//! the manner of libtorrent's `ip_voter`: each responder's address counts once (its latest
//! vote), an address is believed once [`FIRST`] responders name it and it leads the runner-up
//! by 3 to 2, and a believed address gives way only to one that [`CHANGE`] responders name with
//! the same lead, counting the votes for the believed address too. A few liars, or one node
//! behind a NAT that rewrites, cannot move it; a real change of address (a new lease) does.

use std::net::IpAddr;

/// Responders that must agree before a first address is believed.
pub const FIRST: usize = 3;
/// Responders that must name another address before a believed one is dropped for it.
pub const CHANGE: usize = 10;
/// Addresses counted at once (the least voted for makes room), and voters kept per address.
const MAX_ADDRS: usize = 8;
const MAX_VOTERS: usize = 64;

/// The vote of one address family.
#[derive(Debug, Default, Clone)]
pub struct Voter {
    believed: Option<IpAddr>,
    /// Each address named, with who named it.
    tally: Vec<(IpAddr, Vec<IpAddr>)>,
}

impl Voter {
    /// The address believed, if any.
    pub fn believed(&self) -> Option<IpAddr> {
        self.believed
    }

    /// `voter` says it sees us at `seen`. Returns the address now believed when this vote
    /// changed it.
    pub fn vote(&mut self, seen: IpAddr, voter: IpAddr) -> Option<IpAddr> {
        if seen.is_unspecified() || seen.is_multicast() {
            return None;
        }
        // A voter's latest vote is its only one.
        for (ip, voters) in &mut self.tally {
            if *ip != seen {
                voters.retain(|v| *v != voter);
            }
        }
        self.tally.retain(|(ip, v)| !v.is_empty() || *ip == seen);
        let i = match self.tally.iter().position(|(ip, _)| *ip == seen) {
            Some(i) => i,
            None => {
                if self.tally.len() >= MAX_ADDRS {
                    let least = self.tally.iter().enumerate().min_by_key(|(_, (_, v))| v.len()).map(|(i, _)| i);
                    if let Some(i) = least {
                        self.tally.swap_remove(i);
                    }
                }
                self.tally.push((seen, Vec::new()));
                self.tally.len() - 1
            }
        };
        let voters = &mut self.tally[i].1;
        if !voters.contains(&voter) && voters.len() < MAX_VOTERS {
            voters.push(voter);
        }
        self.tally.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let (leader, votes) = (self.tally[0].0, self.tally[0].1.len());
        let runner_up = self.tally.get(1).map_or(0, |(_, v)| v.len());
        if Some(leader) == self.believed {
            return None;
        }
        let needed = if self.believed.is_some() { CHANGE } else { FIRST };
        if votes < needed || votes * 2 <= runner_up * 3 {
            return None;
        }
        self.believed = Some(leader);
        // The count starts again around the new address.
        self.tally.clear();
        Some(leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn voter(i: usize) -> IpAddr {
        ip(&format!("203.0.{}.{}", i / 200, 1 + i % 200))
    }

    #[test]
    fn three_responders_that_agree_make_the_first_address() {
        let mut v = Voter::default();
        let me = ip("198.51.100.7");
        assert_eq!(v.vote(me, voter(1)), None);
        assert_eq!(v.vote(me, voter(2)), None);
        assert_eq!(v.believed(), None);
        assert_eq!(v.vote(me, voter(3)), Some(me));
        assert_eq!(v.believed(), Some(me));
        // More votes for it change nothing.
        assert_eq!(v.vote(me, voter(4)), None);
    }

    #[test]
    fn one_responder_counts_once_however_often_it_votes() {
        let mut v = Voter::default();
        let me = ip("198.51.100.7");
        for _ in 0..20 {
            assert_eq!(v.vote(me, voter(1)), None);
        }
        assert_eq!(v.vote(me, voter(2)), None);
        assert_eq!(v.believed(), None);
    }

    #[test]
    fn a_voter_that_changes_its_mind_moves_its_vote() {
        let mut v = Voter::default();
        let (a, b) = (ip("198.51.100.7"), ip("198.51.100.8"));
        v.vote(a, voter(1));
        v.vote(a, voter(2));
        // Voter 2 now says b: a has one vote, not two.
        v.vote(b, voter(2));
        assert_eq!(v.vote(a, voter(3)), None);
        assert_eq!(v.vote(a, voter(4)), Some(a));
    }

    #[test]
    fn a_split_vote_elects_nobody() {
        let mut v = Voter::default();
        let (a, b) = (ip("198.51.100.7"), ip("198.51.100.8"));
        for i in 0..4 {
            v.vote(a, voter(2 * i));
            v.vote(b, voter(2 * i + 1));
        }
        assert_eq!(v.believed(), None, "4 against 4");
        // More than 3:2 wins.
        assert_eq!(v.vote(a, voter(100)), None, "5 against 4");
        assert_eq!(v.vote(a, voter(101)), None, "6 against 4");
        assert_eq!(v.vote(a, voter(102)), Some(a));
    }

    #[test]
    fn a_believed_address_gives_way_only_to_many_responders_with_a_lead() {
        let mut v = Voter::default();
        let (old, new) = (ip("198.51.100.7"), ip("192.0.2.99"));
        for i in 0..3 {
            v.vote(old, voter(i));
        }
        assert_eq!(v.believed(), Some(old));
        // A few liars cannot move it.
        for i in 10..19 {
            assert_eq!(v.vote(new, voter(i)), None);
        }
        // Ten can, while few still vote for the old one...
        assert_eq!(v.vote(new, voter(19)), Some(new));
        assert_eq!(v.believed(), Some(new));
        // ...but not while as many confirm the old one.
        let mut v = Voter::default();
        for i in 0..3 {
            v.vote(old, voter(i));
        }
        for i in 100..108 {
            v.vote(old, voter(i));
        }
        for i in 10..22 {
            v.vote(new, voter(i));
        }
        assert_eq!(v.believed(), Some(old), "12 against 8 is not yet 3:2");
        for i in 22..30 {
            v.vote(new, voter(i));
        }
        assert_eq!(v.believed(), Some(new));
    }

    #[test]
    fn the_tally_is_bounded_whatever_is_voted() {
        let mut v = Voter::default();
        for i in 0..10_000 {
            v.vote(ip(&format!("10.{}.{}.1", i / 250, i % 250)), voter(i % 300));
        }
        assert!(v.tally.len() <= MAX_ADDRS);
        assert!(v.tally.iter().all(|(_, voters)| voters.len() <= MAX_VOTERS));
    }
}
