//! Records and resume data derived from a torrent number and a generation, so a test can tell
//! from any loaded row which put it came from and whether all its fields came from that put.

#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::sync::Arc;

use bitswarm_state::{FileStamp, InfoHash, Pieces, Record, Resume};

pub fn hash(n: u32) -> InfoHash {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[19] = 0xa5;
    InfoHash(h)
}

/// A .torrent-sized blob whose every byte depends on `n` and `generation`.
pub fn metainfo(n: u32, generation: u64, len: usize) -> Arc<[u8]> {
    let seed = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation;
    (0..len).map(|i| (seed.wrapping_add(i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8).collect()
}

pub fn record(n: u32, generation: u64) -> Record {
    Record {
        info_hash: hash(n),
        id: n + 1,
        name: format!("torrent {n} generation {generation}"),
        metainfo: Some(metainfo(n, generation, 1000 + (generation as usize * 7919) % 20_000)),
        magnet: Some(format!("magnet:?xt=urn:btih:{}&dn=g{generation}", hash(n))),
        download_dir: PathBuf::from(format!("/data/{n}/{generation}")),
        added_at: 1_700_000_000 + generation as i64,
        queue_position: generation as u32,
        labels: vec![format!("g{generation}"), "tv".into()],
        settings: format!(r#"{{"generation":{generation},"ratio":2.0}}"#),
    }
}

/// Which generation a record came from, if every field agrees; `None` if they disagree.
pub fn record_generation(n: u32, r: &Record) -> Option<u64> {
    let generation = r.queue_position as u64;
    (*r == record(n, generation)).then_some(generation)
}

/// Which generation each part of a record says it is from, for a failure message.
pub fn describe(n: u32, r: &Record) -> String {
    let metainfo = match &r.metainfo {
        Some(m) => (0..=r.queue_position as u64 + 1000)
            .find(|&g| **m == *metainfo(n, g, m.len()))
            .map_or("from no generation".to_string(), |g| format!("from generation {g}")),
        None => "absent".into(),
    };
    format!("{r:?}, its .torrent bytes {metainfo}")
}

pub fn resume(generation: u64) -> Resume {
    let count = 100;
    let bits: Vec<u8> =
        (0..13u32).map(|i| (generation as u8).wrapping_add(i as u8) & if i == 12 { 0xf0 } else { 0xff }).collect();
    Resume {
        pieces: Pieces::from_bitfield(count, bits).expect("13 bytes for 100 pieces"),
        files: vec![FileStamp { size: generation, mtime_ns: generation as i64 * 1_000_000_007 }, FileStamp::MISSING],
        running: generation.is_multiple_of(2),
        uploaded: generation * 3,
        downloaded: generation * 5,
        corrupt: generation,
        seconds_downloading: generation * 7,
        seconds_seeding: generation * 11,
        done_date: generation.is_multiple_of(3).then_some(generation as i64),
        activity_date: Some(generation as i64 + 1),
    }
}

pub fn resume_generation(r: &Resume) -> Option<u64> {
    let generation = r.corrupt;
    (*r == resume(generation)).then_some(generation)
}
