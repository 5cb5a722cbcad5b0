//! The peers of an announce's reply on Redis: read with plain `GETRANGE`s of the swarm's lists
//! after the batch function has run, from the lists' lengths it reports.
//!
//! Until 2026-12-07 the batch function cut the reply's peers itself. In Redis's Lua every
//! string is hashed byte by byte when it is made: the 300 bytes of 50 peers, brought into Lua
//! and handed back, cost Redis more than all the rest of the announce (5 of 11 us a job,
//! measured). Read by the tracker, the same bytes cost a pipelined `GETRANGE` (about 0.5 us).
//!
//! The read comes after the batch's call, not inside it: another client's command may run in
//! between. At worst a reply then holds a peer that has just left or been moved in its list
//! (a moved peer can come twice; the sink is told each time, as the in-memory store never
//! does, and a client ignores the repeat).

use bitswarm_tracker_proto::InfoHash;
use redis::{Pipeline, Value};

use crate::backend::StoreError;
use crate::store::{Announce, Families, Outcome, PeerSink, SwarmCounts};

/// A swarm's lists in the order of the batch function's reply: IPv4 seeders and leechers,
/// then IPv6 seeders and leechers.
const LISTS: [&str; 4] = ["S4:", "L4:", "S6:", "L6:"];
/// The bytes of an entry of each list.
const WIDTH: [u32; 4] = [6, 6, 18, 18];

/// What an announce asks of its reply's peers.
pub(crate) struct Want {
    info_hash: InfoHash,
    want: u32,
    /// Where the reply's peers start, over the lists' entries.
    rand: u32,
    seeder: bool,
    both: bool,
    with_ids: bool,
    /// The announcer's compact address (6 or 18 bytes): not handed to itself.
    me: [u8; 18],
    me_len: usize,
}

impl Want {
    pub(crate) fn new(a: &Announce, with_ids: bool, rand: u32) -> Want {
        let mut me = [0u8; 18];
        let me_len = match a.addr.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => {
                me[..6].copy_from_slice(&crate::store::compact4(ip, a.addr.port()));
                6
            }
            std::net::IpAddr::V6(ip) => {
                me.copy_from_slice(&crate::store::compact6(ip, a.addr.port()));
                18
            }
        };
        Want {
            info_hash: a.info_hash,
            want: a.numwant.min(10_000) as u32,
            rand,
            seeder: a.left == 0,
            both: a.families == Families::Both,
            with_ids,
            me,
            me_len,
        }
    }

    fn me(&self) -> &[u8] {
        &self.me[..self.me_len]
    }

    fn v4(&self) -> bool {
        self.me_len == 6
    }
}

/// An announce's reply from the batch function: seeders, leechers, downloaded (4 bytes each),
/// the outcome (1: 0 ok, 1 full), the lengths of the four [`LISTS`] (4 each).
pub(crate) const HEAD: usize = 29;

/// The most entries a list is taken to have (far more than any swarm's cap).
const MAX_LIST: u32 = 1 << 26;

pub(crate) struct Head {
    counts: SwarmCounts,
    outcome: Outcome,
    lens: [u32; 4],
}

/// The big-endian `u32` at `b[i..]` (the caller checked the length).
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Head {
    pub(crate) fn parse(v: &[u8]) -> Result<Head, StoreError> {
        if v.len() != HEAD {
            return Err(StoreError::new(format!("Redis: an announce's reply of {} bytes, not {HEAD}", v.len())));
        }
        Ok(Head {
            counts: SwarmCounts { seeders: be32(v, 0), leechers: be32(v, 4), downloaded: be32(v, 8) },
            outcome: if v[12] == 0 { Outcome::Ok } else { Outcome::Full },
            // At most 2^26 entries a list, whatever a reply says: the reads' byte offsets
            // (18 bytes an IPv6 entry, two lists end to end) then stay within a `u32`.
            lens: [13, 17, 21, 25].map(|i| be32(v, i).min(MAX_LIST)),
        })
    }
}

/// A run of entries of one list: the list, its first entry, how many.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    list: usize,
    first: u32,
    n: u32,
}

/// `cnt` entries from index `v` on of list `l` (`n1` entries) and list `s` (`n2`) end to end,
/// wrapping around after `n1 + n2` (`cnt` at most that, which is not 0).
fn runs(l: usize, n1: u32, s: usize, n2: u32, mut v: u32, mut cnt: u32, out: &mut Vec<Run>) {
    let n = n1 + n2;
    while cnt > 0 {
        let (list, first, left) = if v < n1 { (l, v, n1 - v) } else { (s, v - n1, n - v) };
        let k = left.min(cnt);
        out.push(Run { list, first, n: k });
        cnt -= k;
        v += k;
        if v >= n {
            v = 0;
        }
    }
}

/// The runs to read for one announce: its family's leechers (and, for a leecher, seeders)
/// from a random place on, one more than it wants when it may be among them; then, when it
/// takes both families and wants more, the other family's. Returns how many runs are its own
/// family's.
fn plan(w: &Want, h: &Head, out: &mut Vec<Run>) -> usize {
    let (mine, theirs) = if w.v4() { (0, 2) } else { (2, 0) };
    let lists = |f: usize| {
        let (n1, n2) = (h.lens[f + 1], if w.seeder { 0 } else { h.lens[f] });
        (n1, n2, n1.saturating_add(n2))
    };
    let before = out.len();
    let mut expected = 0;
    let (n1, n2, n) = lists(mine);
    if w.want > 0 && n > 0 {
        // A leecher's own entry is in its family's leechers.
        let there = u32::from(!w.seeder);
        runs(mine + 1, n1, mine, n2, w.rand % n, (w.want + there).min(n), out);
        expected = w.want.min(n - there);
    }
    let own = out.len() - before;
    let (n1, n2, n) = lists(theirs);
    if w.both && w.want > expected && n > 0 {
        runs(theirs + 1, n1, theirs, n2, w.rand % n, (w.want - expected).min(n), out);
    }
    own
}

fn list_key(prefix: &str, list: usize, h: &InfoHash) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 3 + 20);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(LISTS[list].as_bytes());
    k.extend_from_slice(&h.0);
    k
}

/// An announce's reply with its peers: those of the announcer's family and of the other
/// (compact addresses end to end), and their ids in that order when it asked for them.
pub(crate) struct Answer {
    head: Head,
    /// Whether the announcer's family (`own`) is IPv4.
    v4: bool,
    own: Vec<u8>,
    other: Vec<u8>,
    ids: Vec<[u8; 20]>,
}

/// The reads of a batch's announces: the runs of each, in order.
pub(crate) struct Reads {
    runs: Vec<Run>,
    /// Per announce: its runs, of which its own family's.
    spans: Vec<(usize, usize)>,
}

impl Reads {
    /// The `GETRANGE`s of these announces' peers (an empty pipeline when none wants any).
    pub(crate) fn plan(prefix: &str, wants: &[&Want], heads: &[Head]) -> (Reads, Pipeline) {
        let mut r = Reads { runs: Vec::with_capacity(wants.len() * 2), spans: Vec::with_capacity(wants.len()) };
        let mut pipe = redis::pipe();
        for (w, h) in wants.iter().zip(heads) {
            let first = r.runs.len();
            let own = plan(w, h, &mut r.runs);
            r.spans.push((r.runs.len() - first, own));
            for run in &r.runs[first..] {
                let width = WIDTH[run.list];
                pipe.cmd("GETRANGE")
                    .arg(list_key(prefix, run.list, &w.info_hash))
                    .arg(run.first * width)
                    .arg((run.first + run.n) * width - 1);
            }
        }
        (r, pipe)
    }

    /// The answers, from the pipeline's replies.
    pub(crate) fn read(self, wants: &[&Want], heads: Vec<Head>, values: Vec<Value>) -> Result<Vec<Answer>, StoreError> {
        if values.len() != self.runs.len() {
            return Err(StoreError::new(format!(
                "Redis: {} replies to {} reads of peers",
                values.len(),
                self.runs.len()
            )));
        }
        let mut values = values.into_iter();
        let mut runs = self.runs.iter();
        let mut answers = Vec::with_capacity(wants.len());
        for ((w, head), (n, own)) in wants.iter().zip(heads).zip(self.spans) {
            let own_bytes = w.want.min(512) as usize * w.me_len;
            let mut a =
                Answer { head, v4: w.v4(), own: Vec::with_capacity(own_bytes), other: Vec::new(), ids: Vec::new() };
            let mut left = w.want as usize;
            for k in 0..n {
                let (Some(run), Some(v)) = (runs.next(), values.next()) else { break };
                let bytes = match v {
                    Value::BulkString(b) => b,
                    Value::Nil => Vec::new(),
                    other => return Err(StoreError::new(format!("Redis: a read of peers answered {other:?}"))),
                };
                let (dst, skip) = if k < own { (&mut a.own, Some(w.me())) } else { (&mut a.other, None) };
                for p in bytes.chunks_exact(WIDTH[run.list] as usize) {
                    if left == 0 {
                        break;
                    }
                    if skip == Some(p) {
                        continue;
                    }
                    dst.extend_from_slice(p);
                    left -= 1;
                }
            }
            answers.push(a);
        }
        Ok(answers)
    }
}

/// Whether the ids of an answer's peers are read: it wants them and has peers.
fn reads_ids(w: &Want, a: &Answer) -> bool {
    w.with_ids && !(a.own.is_empty() && a.other.is_empty())
}

/// The `HMGET`s of the ids of the answers' peers, for the announces that want ids (none: no
/// pipeline).
pub(crate) fn ids_pipe(prefix: &str, wants: &[&Want], answers: &[Answer]) -> Option<Pipeline> {
    let mut pipe = redis::pipe();
    for (w, a) in wants.iter().zip(answers) {
        if !reads_ids(w, a) {
            continue;
        }
        let mut key = Vec::with_capacity(prefix.len() + 2 + 20);
        key.extend_from_slice(prefix.as_bytes());
        key.extend_from_slice(b"p:");
        key.extend_from_slice(&w.info_hash.0);
        let c = pipe.cmd("HMGET").arg(key);
        let (own, other) = if a.v4 { (6, 18) } else { (18, 6) };
        for p in a.own.chunks_exact(own).chain(a.other.chunks_exact(other)) {
            c.arg(p);
        }
    }
    (!pipe.is_empty()).then_some(pipe)
}

/// Puts the ids `HMGET` read (see [`ids_pipe`]) into the answers. An entry is a flag, the
/// peer's place in its list, its time (9 bytes) and its id; a peer gone meanwhile has no id.
pub(crate) fn read_ids(wants: &[&Want], answers: &mut [Answer], values: Vec<Value>) -> Result<(), StoreError> {
    let mut values = values.into_iter();
    for (w, a) in wants.iter().zip(answers) {
        if !reads_ids(w, a) {
            continue;
        }
        let Some(Value::Array(entries)) = values.next() else {
            return Err(StoreError::new("Redis: the peers' ids were not read"));
        };
        a.ids = entries
            .into_iter()
            .map(|e| match e {
                Value::BulkString(e) if e.len() >= 29 => e[9..29].try_into().unwrap_or([0; 20]),
                _ => [0; 20],
            })
            .collect();
    }
    Ok(())
}

/// Hands the answer's peers to `out`; its counts and outcome.
pub(crate) fn deliver(a: Answer, out: &mut impl PeerSink) -> (SwarmCounts, Outcome) {
    let mut ids = a.ids.into_iter();
    give(&a.own, a.v4, &mut ids, out);
    give(&a.other, !a.v4, &mut ids, out);
    (a.head.counts, a.head.outcome)
}

/// Hands compact addresses of one family, end to end, with their ids, to `out`.
fn give(addrs: &[u8], v4: bool, ids: &mut impl Iterator<Item = [u8; 20]>, out: &mut impl PeerSink) {
    if v4 {
        for p in addrs.chunks_exact(6) {
            let id = ids.next().unwrap_or([0; 20]);
            if let Ok(p) = <&[u8; 6]>::try_from(p) {
                out.v4(p, &id);
            }
        }
    } else {
        for p in addrs.chunks_exact(18) {
            let id = ids.next().unwrap_or([0; 20]);
            if let Ok(p) = <&[u8; 18]>::try_from(p) {
                out.v6(p, &id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(v4: bool, seeder: bool, both: bool, want: u32, rand: u32) -> Want {
        let mut me = [0u8; 18];
        me[..6].copy_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1]);
        Want {
            info_hash: InfoHash([7; 20]),
            want,
            rand,
            seeder,
            both,
            with_ids: false,
            me,
            me_len: if v4 { 6 } else { 18 },
        }
    }

    fn head(lens: [u32; 4]) -> Head {
        Head { counts: SwarmCounts { seeders: 0, leechers: 0, downloaded: 0 }, outcome: Outcome::Ok, lens }
    }

    fn planned(w: &Want, lens: [u32; 4]) -> (Vec<Run>, usize) {
        let mut v = Vec::new();
        let own = plan(w, &head(lens), &mut v);
        (v, own)
    }

    #[test]
    fn a_seeder_reads_only_leechers_and_a_leecher_one_more_than_it_wants() {
        // 10 IPv4 leechers, 5 seeders: a seeder wanting 4 from index 7 of the leechers.
        let (v, own) = planned(&want(true, true, false, 4, 7), [5, 10, 0, 0]);
        assert_eq!(v, [Run { list: 1, first: 7, n: 3 }, Run { list: 1, first: 0, n: 1 }]);
        assert_eq!(own, 2);
        // A leecher: leechers then seeders (15 in all), from index 8, 5 entries (it may be one).
        let (v, _) = planned(&want(true, false, false, 4, 8), [5, 10, 0, 0]);
        assert_eq!(v, [Run { list: 1, first: 8, n: 2 }, Run { list: 0, first: 0, n: 3 }]);
        // Wrapping after the seeders back to the leechers.
        let (v, _) = planned(&want(true, false, false, 4, 13), [5, 10, 0, 0]);
        assert_eq!(v, [Run { list: 0, first: 3, n: 2 }, Run { list: 1, first: 0, n: 3 }]);
    }

    #[test]
    fn a_small_swarm_is_read_once_whole_and_the_other_family_makes_up_the_rest() {
        // 3 IPv4 leechers (the announcer among them), 4 IPv6 leechers; wants 50 of both.
        let (v, own) = planned(&want(true, false, true, 50, 1), [0, 3, 0, 4]);
        let r = |list, first, n| Run { list, first, n };
        assert_eq!(v, [r(1, 1, 2), r(1, 0, 1), r(3, 1, 3), r(3, 0, 1)]);
        assert_eq!(own, 2);
        // Nothing to read: an empty swarm, or no peers wanted.
        assert!(planned(&want(true, false, true, 50, 1), [0, 0, 0, 0]).0.is_empty());
        assert!(planned(&want(true, false, true, 0, 1), [5, 5, 5, 5]).0.is_empty());
        // An IPv6 announcer reads its own family first.
        let (v, own) = planned(&want(false, true, true, 2, 0), [0, 9, 0, 9]);
        assert_eq!((v, own), (vec![Run { list: 3, first: 0, n: 2 }], 1));
    }

    #[test]
    fn the_reads_skip_the_announcer_and_stop_at_what_it_wants() {
        let w = want(true, false, false, 2, 0);
        let (reads, pipe) = Reads::plan("bs:", &[&w], &[head([0, 3, 0, 0])]);
        assert_eq!(pipe.len(), 1);
        let me = w.me().to_vec();
        let bytes = [me.clone(), vec![1, 1, 1, 1, 0, 1], vec![2, 2, 2, 2, 0, 2]].concat();
        let answers = reads.read(&[&w], vec![head([0, 3, 0, 0])], vec![Value::BulkString(bytes)]).unwrap();
        assert_eq!(answers[0].own, [[1, 1, 1, 1, 0, 1], [2, 2, 2, 2, 0, 2]].concat());
        // A reply of the wrong shape is an error, not a panic.
        let (reads, _) = Reads::plan("bs:", &[&w], &[head([0, 3, 0, 0])]);
        assert!(reads.read(&[&w], vec![head([0, 3, 0, 0])], vec![Value::Int(3)]).is_err());
        let (reads, _) = Reads::plan("bs:", &[&w], &[head([0, 3, 0, 0])]);
        assert!(reads.read(&[&w], vec![head([0, 3, 0, 0])], vec![]).is_err());
        assert!(Head::parse(&[0; 25]).is_err());
        // Lengths past any swarm's size are cut, so that no offset overflows.
        let h = Head::parse(&[0xff; HEAD]).unwrap();
        assert_eq!(h.lens, [MAX_LIST; 4]);
        let (reads, pipe) = Reads::plan("bs:", &[&want(false, false, true, 200, u32::MAX)], &[h]);
        assert_eq!(pipe.len(), reads.runs.len());
    }
}
