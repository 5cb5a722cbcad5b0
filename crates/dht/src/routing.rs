//! The routing table of BEP 5: buckets of `k` nodes over the id space, where only the bucket
//! that holds our own id splits, so that we know many nodes near us and a few far away.
//!
//! Each bucket also keeps up to `k` replacement nodes, which take the place of nodes that stop
//! answering. A node is *good* if it answered one of our queries and was heard from in the last
//! 15 minutes, *bad* after failing to answer [`MAX_FAILS`] queries in a row, *questionable*
//! otherwise. Bad nodes are evicted as soon as someone needs the slot; questionable ones are
//! pinged first (the table says which, the node sends the pings).
//!
//! One table per address family (BEP 32). At most one node per IP address, so one host cannot
//! fill a bucket. Bounded: 160 buckets of `2 * k` entries.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::id::NodeId;
use crate::krpc::NodeInfo;

/// A node unheard of this long is questionable (BEP 5).
pub const QUESTIONABLE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Unanswered queries in a row that make a node bad.
pub const MAX_FAILS: u8 = 2;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
    /// Last response to our query, or query from it once it has answered one of ours.
    pub(crate) last_seen: Instant,
    /// Whether it ever answered one of our queries (otherwise we only heard of it).
    pub(crate) confirmed: bool,
    pub(crate) fails: u8,
    /// Whether its id is valid for its address under BEP 42.
    pub(crate) valid_id: bool,
}

/// A node's state per BEP 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Good,
    Questionable,
    Bad,
}

impl Entry {
    pub(crate) fn state(&self, now: Instant) -> NodeState {
        if self.fails >= MAX_FAILS || (!self.confirmed && self.fails > 0) {
            NodeState::Bad
        } else if self.confirmed && now.saturating_duration_since(self.last_seen) < QUESTIONABLE_AFTER {
            NodeState::Good
        } else {
            NodeState::Questionable
        }
    }
    fn info(&self) -> NodeInfo {
        NodeInfo { id: self.id, addr: self.addr }
    }
}

#[derive(Debug)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: Vec<Entry>,
    /// Last time a node was added to it or one of its nodes answered us.
    last_changed: Instant,
}

/// What [`RoutingTable::heard_from`] did with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Already there: refreshed.
    Updated,
    Added,
    /// Kept as a replacement; the bucket's stalest questionable node should be pinged, so that
    /// it makes room if it is gone.
    Replacement {
        ping: Option<NodeInfo>,
    },
    /// Refused: its address is taken by another id, or its id is ours.
    Refused,
}

/// A routing table for one address family.
#[derive(Debug)]
pub struct RoutingTable {
    own: NodeId,
    k: usize,
    buckets: Vec<Bucket>,
    /// Addresses of the nodes in the buckets (not replacements): one node per IP.
    ips: HashSet<IpAddr>,
    /// BEP 42 `Prefer`: a node with a valid id may take the place of one without.
    prefer_valid_ids: bool,
}

impl RoutingTable {
    pub(crate) fn new(own: NodeId, k: usize, prefer_valid_ids: bool, now: Instant) -> Self {
        RoutingTable {
            own,
            k,
            buckets: vec![Bucket { nodes: Vec::new(), replacements: Vec::new(), last_changed: now }],
            ips: HashSet::new(),
            prefer_valid_ids,
        }
    }

    /// Our id, around which the table is built.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Nodes in the buckets (replacements not counted).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of buckets (the table splits as it learns nodes near our id).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Nodes by state: (good, questionable, bad).
    pub fn counts(&self, now: Instant) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in self.buckets.iter().flat_map(|b| &b.nodes) {
            match e.state(now) {
                NodeState::Good => c.0 += 1,
                NodeState::Questionable => c.1 += 1,
                NodeState::Bad => c.2 += 1,
            }
        }
        c
    }

    fn bucket_index(&self, id: &NodeId) -> usize {
        self.own.common_prefix(id).min(self.buckets.len() - 1)
    }

    /// Records that `id` at `addr` answered our query (`responded`) or sent us one.
    pub(crate) fn heard_from(
        &mut self,
        id: NodeId,
        addr: SocketAddr,
        responded: bool,
        valid_id: bool,
        now: Instant,
    ) -> Inserted {
        if id == self.own {
            return Inserted::Refused;
        }
        let refresh = |e: &mut Entry| {
            if e.addr != addr {
                // Same id from another address: keep the one we know (an id is cheap to claim).
                return false;
            }
            if responded {
                e.confirmed = true;
                e.fails = 0;
            }
            if e.confirmed {
                e.last_seen = now;
            }
            true
        };
        let mut confirmed = responded;
        loop {
            let bi = self.bucket_index(&id);
            let b = &mut self.buckets[bi];
            if let Some(e) = b.nodes.iter_mut().find(|e| e.id == id) {
                if !refresh(e) {
                    return Inserted::Refused;
                }
                if responded {
                    b.last_changed = now;
                }
                return Inserted::Updated;
            }
            if let Some(i) = b.replacements.iter().position(|e| e.id == id) {
                if b.replacements[i].addr != addr {
                    return Inserted::Refused;
                }
                // Taken out and inserted afresh below: it may have earned a slot (or a split).
                confirmed |= b.replacements.remove(i).confirmed;
            }
            if self.ips.contains(&addr.ip()) {
                return Inserted::Refused;
            }
            let entry = Entry { id, addr, last_seen: now, confirmed, fails: 0, valid_id };
            let b = &self.buckets[bi];
            let splittable = b.nodes.len() >= self.k
                && !b.nodes.iter().any(|e| e.state(now) == NodeState::Bad)
                && bi == self.buckets.len() - 1
                && self.buckets.len() < 160;
            // A full last bucket of live nodes splits for a node that answered us, then we
            // try again.
            if splittable && confirmed {
                self.split();
                continue;
            }
            return self.place(bi, entry, splittable, now);
        }
    }

    /// Puts a node (not in the table) into bucket `bi`, or its replacements.
    fn place(&mut self, bi: usize, entry: Entry, splittable: bool, now: Instant) -> Inserted {
        let k = self.k;
        let prefer = self.prefer_valid_ids;
        let b = &mut self.buckets[bi];
        if self.ips.contains(&entry.addr.ip()) {
            return Inserted::Refused;
        }
        if b.nodes.len() < k {
            self.ips.insert(entry.addr.ip());
            b.nodes.push(entry);
            b.last_changed = now;
            return Inserted::Added;
        }
        // Only a node that has answered us may push another out.
        if entry.confirmed {
            let victim = b
                .nodes
                .iter()
                .position(|e| e.state(now) == NodeState::Bad)
                .or_else(|| if prefer && entry.valid_id { b.nodes.iter().position(|e| !e.valid_id) } else { None });
            if let Some(i) = victim {
                let old = std::mem::replace(&mut b.nodes[i], entry);
                self.ips.remove(&old.addr.ip());
                self.ips.insert(b.nodes[i].addr.ip());
                b.last_changed = now;
                return Inserted::Added;
            }
        }
        // Keep it as a replacement; the newest replace the oldest, confirmed ones first.
        if b.replacements.len() >= k {
            let drop = b
                .replacements
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (e.confirmed, e.last_seen))
                .map(|(i, _)| i)
                .unwrap_or(0);
            b.replacements.remove(drop);
        }
        b.replacements.push(entry);
        // A stranger that would split the bucket if it answered: ask it. Otherwise the
        // bucket's stalest questionable node, which makes room if it is gone.
        let newcomer = b.replacements.last().filter(|e| splittable && !e.confirmed).map(Entry::info);
        let ping = newcomer.or_else(|| {
            b.nodes
                .iter()
                .filter(|e| e.state(now) == NodeState::Questionable)
                .min_by_key(|e| e.last_seen)
                .map(Entry::info)
        });
        Inserted::Replacement { ping }
    }

    fn split(&mut self) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let last = self.buckets.last_mut().expect("a table has a bucket");
        let deeper = |e: &Entry| own.common_prefix(&e.id) > depth;
        let (near, far): (Vec<_>, Vec<_>) = last.nodes.drain(..).partition(deeper);
        last.nodes = far;
        let (near_r, far_r): (Vec<_>, Vec<_>) = last.replacements.drain(..).partition(deeper);
        last.replacements = far_r;
        let last_changed = last.last_changed;
        self.buckets.push(Bucket { nodes: near, replacements: near_r, last_changed });
    }

    /// A query to `id` at `addr` went unanswered. A bad node gives its slot to the best
    /// replacement.
    pub(crate) fn failed(&mut self, id: &NodeId, addr: SocketAddr, now: Instant) {
        let bi = self.bucket_index(id);
        let b = &mut self.buckets[bi];
        if let Some(i) = b.replacements.iter().position(|e| e.id == *id && e.addr == addr) {
            b.replacements[i].fails = b.replacements[i].fails.saturating_add(1);
            if b.replacements[i].state(now) == NodeState::Bad {
                b.replacements.remove(i);
            }
            return;
        }
        let Some(i) = b.nodes.iter().position(|e| e.id == *id && e.addr == addr) else { return };
        b.nodes[i].fails = b.nodes[i].fails.saturating_add(1);
        if b.nodes[i].state(now) != NodeState::Bad {
            return;
        }
        // Promote the best replacement whose address is free: confirmed first, then freshest.
        let mut best: Option<usize> = None;
        for (j, r) in b.replacements.iter().enumerate() {
            if r.state(now) == NodeState::Bad || self.ips.contains(&r.addr.ip()) {
                continue;
            }
            if best.is_none_or(|bj| {
                let o = &b.replacements[bj];
                (r.confirmed, r.last_seen) > (o.confirmed, o.last_seen)
            }) {
                best = Some(j);
            }
        }
        if let Some(j) = best {
            let r = b.replacements.remove(j);
            self.ips.insert(r.addr.ip());
            let old = std::mem::replace(&mut b.nodes[i], r);
            self.ips.remove(&old.addr.ip());
        } else if !b.nodes[i].confirmed {
            // Never heard back from it: it is no use to keep.
            let old = b.nodes.remove(i);
            self.ips.remove(&old.addr.ip());
        }
    }

    /// The `n` nodes closest to `target` that have answered us and are not bad: what we
    /// answer `find_node` and `get_peers` with, and what a lookup starts from.
    pub(crate) fn closest(&self, target: &NodeId, n: usize, now: Instant) -> Vec<NodeInfo> {
        self.closest_filtered(target, n, now, true)
    }

    /// As [`Self::closest`], with nodes never confirmed too when `confirmed_only` is false
    /// (to start lookups right after importing a saved table).
    pub(crate) fn closest_filtered(
        &self,
        target: &NodeId,
        n: usize,
        now: Instant,
        confirmed_only: bool,
    ) -> Vec<NodeInfo> {
        let mut all: Vec<(&Entry, [u8; 20])> = self
            .buckets
            .iter()
            .flat_map(|b| &b.nodes)
            .filter(|e| (e.confirmed || !confirmed_only) && e.state(now) != NodeState::Bad)
            .map(|e| (e, e.id.distance(target)))
            .collect();
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by(n - 1, |a, b| a.1.cmp(&b.1));
            all.truncate(n);
        }
        all.sort_unstable_by_key(|a| a.1);
        all.into_iter().take(n).map(|(e, _)| e.info()).collect()
    }

    /// For each bucket unchanged for `after`, a random id in its range to look up (BEP 5's
    /// refresh). `random` supplies the bits; the bucket's `last_changed` is reset so that it is
    /// not returned again until the next interval.
    pub(crate) fn refresh_targets(
        &mut self,
        now: Instant,
        after: Duration,
        mut random: impl FnMut() -> [u8; 20],
    ) -> Vec<NodeId> {
        let last = self.buckets.len() - 1;
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if now.saturating_duration_since(b.last_changed) >= after {
                b.last_changed = now;
                let target = if i == last {
                    // The last bucket holds every id sharing at least `i` bits with ours.
                    let mut t = self.own;
                    let r = NodeId(random()).random_with_prefix(0, random());
                    for bit in i..160 {
                        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
                        t.0[byte] = (t.0[byte] & !mask) | (r.0[byte] & mask);
                    }
                    t
                } else {
                    self.own.random_with_prefix(i, random())
                };
                out.push(target);
            }
        }
        out
    }

    /// A random id in the range of each bucket with fewer than `k` nodes, the last bucket
    /// (the one around our id) left out: targets for filling the table after bootstrap.
    pub(crate) fn sparse_bucket_targets(&self, mut random: impl FnMut() -> [u8; 20]) -> Vec<NodeId> {
        let last = self.buckets.len() - 1;
        (0..last)
            .filter(|&i| self.buckets[i].nodes.len() < self.k)
            .map(|i| self.own.random_with_prefix(i, random()))
            .collect()
    }

    /// Per bucket, its questionable node heard from longest ago: the ones to ping.
    pub(crate) fn stale_nodes(&self, now: Instant) -> Vec<NodeInfo> {
        self.buckets
            .iter()
            .filter_map(|b| {
                b.nodes
                    .iter()
                    .filter(|e| e.state(now) == NodeState::Questionable)
                    .min_by_key(|e| e.last_seen)
                    .map(Entry::info)
            })
            .collect()
    }

    /// Every node in the buckets, good ones first (for saving the table).
    pub fn nodes(&self, now: Instant) -> Vec<NodeInfo> {
        let mut v: Vec<&Entry> = self.buckets.iter().flat_map(|b| &b.nodes).collect();
        v.sort_by_key(|e| e.state(now) as u8);
        v.into_iter().map(Entry::info).collect()
    }

    /// Whether `id` at `addr` is in the table (not counting replacements).
    pub fn contains(&self, id: &NodeId, addr: SocketAddr) -> bool {
        self.buckets[self.bucket_index(id)].nodes.iter().any(|e| e.id == *id && e.addr == addr)
    }

    /// The state of the node `id`, if it is in the table.
    pub fn state_of(&self, id: &NodeId, now: Instant) -> Option<NodeState> {
        self.buckets[self.bucket_index(id)].nodes.iter().find(|e| e.id == *id).map(|e| e.state(now))
    }

    /// Every entry, buckets and replacements, for rebuilding the table under a new id.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = Entry> {
        self.buckets.into_iter().flat_map(|b| b.nodes.into_iter().chain(b.replacements))
    }

    /// Re-inserts an entry kept from another table, preserving what we knew of it.
    pub(crate) fn reinsert(&mut self, e: Entry, now: Instant) {
        let (confirmed, last_seen, fails) = (e.confirmed, e.last_seen, e.fails);
        if !matches!(self.heard_from(e.id, e.addr, confirmed, e.valid_id, now), Inserted::Refused) {
            let bi = self.bucket_index(&e.id);
            let b = &mut self.buckets[bi];
            if let Some(x) = b.nodes.iter_mut().chain(b.replacements.iter_mut()).find(|x| x.id == e.id) {
                x.last_seen = last_seen;
                x.fails = fails;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)), 6881)
    }

    fn id_with_first_byte(b: u8, rest: u8) -> NodeId {
        let mut id = [rest; 20];
        id[0] = b;
        NodeId(id)
    }

    #[test]
    fn only_the_bucket_with_our_id_splits_and_the_table_is_bounded() {
        let now = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 8, false, now);
        // 256 ids spread evenly over the space: the far half fills one bucket of 8 (the rest
        // become replacements), the quarter nearer another, and so on.
        for i in 0..256u32 {
            t.heard_from(id_with_first_byte(i as u8, 0x55), addr(i), true, true, now);
        }
        assert!(t.bucket_count() >= 5, "{}", t.bucket_count());
        assert!(t.len() <= 8 * t.bucket_count());
        let b0 = &t.buckets[0];
        assert_eq!(b0.nodes.len(), 8);
        assert_eq!(b0.replacements.len(), 8);
        assert!(b0.nodes.iter().all(|e| e.id.0[0] >= 0x80));
        // Thousands more never grow it past 160 buckets of 2k.
        for i in 0..5000u32 {
            let mut id = [0u8; 20];
            id[..4].copy_from_slice(&(i.wrapping_mul(2654435761)).to_be_bytes());
            t.heard_from(NodeId(id), addr(1000 + i), true, true, now);
        }
        assert!(t.bucket_count() <= 160);
        assert!(t.buckets.iter().all(|b| b.nodes.len() <= 8 && b.replacements.len() <= 8));
    }

    #[test]
    fn bad_nodes_give_way_to_replacements_and_questionable_ones_are_pinged() {
        let t0 = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 2, false, t0);
        // Force a bucket that cannot split: ids with the first bit set go to bucket 0 once the
        // table has split for a node near us.
        t.heard_from(id_with_first_byte(0x01, 1), addr(1), true, true, t0);
        t.heard_from(id_with_first_byte(0x02, 1), addr(2), true, true, t0);
        t.heard_from(id_with_first_byte(0x03, 1), addr(3), true, true, t0);
        assert!(t.bucket_count() > 1);
        let a = id_with_first_byte(0x80, 1);
        let b = id_with_first_byte(0x81, 1);
        let c = id_with_first_byte(0x82, 1);
        assert_eq!(t.heard_from(a, addr(10), true, true, t0), Inserted::Added);
        assert_eq!(t.heard_from(b, addr(11), true, true, t0), Inserted::Added);
        // Full of good nodes: the newcomer waits as a replacement, nothing to ping yet.
        assert_eq!(t.heard_from(c, addr(12), true, true, t0), Inserted::Replacement { ping: None });
        // 15 minutes later both are questionable: the older one should be pinged.
        let t1 = t0 + QUESTIONABLE_AFTER + Duration::from_secs(1);
        t.heard_from(b, addr(11), true, true, t0 + Duration::from_secs(5));
        assert_eq!(t.state_of(&a, t1), Some(NodeState::Questionable));
        // Hearing from the replacement again asks for a ping of the stalest questionable node.
        assert_eq!(
            t.heard_from(c, addr(12), true, true, t1),
            Inserted::Replacement { ping: Some(NodeInfo { id: a, addr: addr(10) }) }
        );
        t.failed(&a, addr(10), t1);
        assert!(t.contains(&a, addr(10)), "one failure is not enough");
        t.failed(&a, addr(10), t1);
        assert!(!t.contains(&a, addr(10)));
        assert!(t.contains(&c, addr(12)), "the replacement took the slot");
    }

    #[test]
    fn one_node_per_ip_and_not_ourselves_and_ids_stick_to_addresses() {
        let now = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 8, false, now);
        assert_eq!(t.heard_from(own, addr(1), true, true, now), Inserted::Refused);
        let a = id_with_first_byte(0x80, 1);
        assert_eq!(t.heard_from(a, addr(1), true, true, now), Inserted::Added);
        assert_eq!(t.heard_from(id_with_first_byte(0x90, 1), addr(1), true, true, now), Inserted::Refused);
        assert_eq!(t.heard_from(a, addr(2), true, true, now), Inserted::Refused);
        assert_eq!(t.heard_from(a, addr(1), false, true, now), Inserted::Updated);
    }

    #[test]
    fn unconfirmed_nodes_are_not_handed_out_and_go_at_the_first_failure() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]), 8, false, now);
        let a = id_with_first_byte(0x80, 1);
        assert_eq!(t.heard_from(a, addr(1), false, true, now), Inserted::Added);
        assert!(t.closest(&a, 8, now).is_empty());
        assert_eq!(t.closest_filtered(&a, 8, now, false).len(), 1);
        assert_eq!(t.state_of(&a, now), Some(NodeState::Questionable));
        t.failed(&a, addr(1), now);
        assert!(t.is_empty());
    }

    #[test]
    fn prefer_valid_ids_evicts_invalid_ones_from_a_full_bucket() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]), 1, true, now);
        t.heard_from(id_with_first_byte(0x01, 1), addr(1), true, true, now);
        t.heard_from(id_with_first_byte(0x02, 1), addr(2), true, true, now);
        let bad = id_with_first_byte(0x80, 1);
        let good = id_with_first_byte(0x81, 1);
        assert_eq!(t.heard_from(bad, addr(3), true, false, now), Inserted::Added);
        assert_eq!(t.heard_from(good, addr(4), true, true, now), Inserted::Added);
        assert!(t.contains(&good, addr(4)) && !t.contains(&bad, addr(3)));
    }

    #[test]
    fn closest_is_sorted_by_distance_and_refresh_targets_land_in_their_buckets() {
        let now = Instant::now();
        let own = NodeId([0; 20]);
        let mut t = RoutingTable::new(own, 8, false, now);
        for i in 0..200u32 {
            let mut id = [0u8; 20];
            id[..4].copy_from_slice(&(i.wrapping_mul(2654435761)).to_be_bytes());
            t.heard_from(NodeId(id), addr(i), true, true, now);
        }
        let target = NodeId([0x42; 20]);
        let c = t.closest(&target, 8, now);
        assert_eq!(c.len(), 8);
        assert!(c.windows(2).all(|w| w[0].id.distance(&target) < w[1].id.distance(&target)));
        let all = t.nodes(now);
        let best = all.iter().map(|n| n.id.distance(&target)).min().unwrap();
        assert_eq!(c[0].id.distance(&target), best);

        let later = now + Duration::from_secs(901);
        let mut n = 0u8;
        let targets = t.refresh_targets(later, Duration::from_secs(900), || {
            n = n.wrapping_add(1);
            [n; 20]
        });
        assert_eq!(targets.len(), t.bucket_count());
        for (i, target) in targets.iter().enumerate() {
            assert_eq!(t.bucket_index(target), i);
        }
        assert!(t.refresh_targets(later, Duration::from_secs(900), || [0; 20]).is_empty());
    }
}
