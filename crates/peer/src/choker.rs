//! BEP 3's tit-for-tat: a few regular unchoke slots by rate, one optimistic unchoke rotated every
//! 30 s, a rechoke every 10 s. Pure: it decides from a snapshot; the engine applies the result.

use crate::link::PeerKey;

pub const RECHOKE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// The optimistic unchoke rotates every third rechoke (30 s).
pub const OPTIMISTIC_EVERY: u32 = 3;

#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: PeerKey,
    pub interested: bool,
    /// Bytes over the last period: downloaded from the peer while we leech, uploaded to it
    /// while we seed.
    pub rate: u64,
}

/// Returns the set of peers to unchoke: the `slots` fastest interested peers, plus the
/// optimistic one (kept if still interested, else `pick_optimistic` chooses among the rest).
pub fn choose(
    candidates: &[Candidate],
    slots: usize,
    optimistic: Option<PeerKey>,
    rotate: bool,
    random: u64,
) -> (Vec<PeerKey>, Option<PeerKey>) {
    let mut interested: Vec<&Candidate> = candidates.iter().filter(|c| c.interested).collect();
    interested.sort_by(|a, b| b.rate.cmp(&a.rate).then(a.key.cmp(&b.key)));
    let mut unchoke: Vec<PeerKey> = interested.iter().take(slots).map(|c| c.key).collect();
    let rest: Vec<PeerKey> = interested.iter().skip(slots).map(|c| c.key).collect();
    let keep = optimistic.filter(|o| !rotate && rest.contains(o));
    let optimistic = keep.or_else(|| (!rest.is_empty()).then(|| rest[(random % rest.len() as u64) as usize]));
    if let Some(o) = optimistic {
        unchoke.push(o);
    }
    (unchoke, optimistic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: PeerKey, interested: bool, rate: u64) -> Candidate {
        Candidate { key, interested, rate }
    }

    #[test]
    fn fastest_interested_plus_one_optimistic() {
        let cs = [c(1, true, 10), c(2, true, 50), c(3, false, 99), c(4, true, 30), c(5, true, 0), c(6, true, 1)];
        let (u, o) = choose(&cs, 2, None, true, 7);
        assert_eq!(&u[..2], &[2, 4]);
        let o = o.unwrap();
        assert!([1, 5, 6].contains(&o));
        assert_eq!(u.len(), 3);
        // Kept between rotations while it stays interested and outside the regular slots.
        let (u2, o2) = choose(&cs, 2, Some(o), false, 0);
        assert_eq!(o2, Some(o));
        assert!(u2.contains(&o));
        // No optimistic slot when everyone fits.
        let (u3, o3) = choose(&cs[..2], 4, None, true, 0);
        assert_eq!((u3.len(), o3), (2, None));
    }
}
