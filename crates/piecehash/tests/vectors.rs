//! Known SHA-1 vectors (FIPS 180 examples) through every backend this CPU has.

use bitswarm_piecehash::{Backend, best_lanes, sha1_many, sha1_many_with};

fn hex(d: &[u8; 20]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn vectors() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"abc".to_vec(), "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (b"".to_vec(), "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".to_vec(), "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
                .to_vec(),
            "a49b2446a02c645bf419f995b67091253a04a259",
        ),
        (vec![b'a'; 1_000_000], "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
    ]
}

#[test]
fn known_vectors_every_backend() {
    let vectors = vectors();
    let available = Backend::available();
    assert!(available.contains(&Backend::Sha1Crate));
    for backend in available {
        // Each vector alone, then all together, then repeated enough to fill and refill the lanes.
        for (message, expected) in &vectors {
            assert_eq!(hex(&sha1_many_with(backend, &[message])[0]), *expected, "{backend:?}");
        }
        for repeat in [1, 3, 7] {
            let batch: Vec<&[u8]> = (0..repeat).flat_map(|_| vectors.iter().map(|(m, _)| m.as_slice())).collect();
            let got = sha1_many_with(backend, &batch);
            let auto = sha1_many(&batch);
            for (i, d) in got.iter().enumerate() {
                assert_eq!(hex(d), vectors[i % vectors.len()].1, "{backend:?} message {i} of {}", batch.len());
                assert_eq!(hex(&auto[i]), vectors[i % vectors.len()].1, "auto, message {i} of {}", batch.len());
            }
        }
    }
}

#[test]
fn empty_batch() {
    for backend in Backend::available() {
        assert!(sha1_many_with(backend, &[]).is_empty());
    }
    assert!(sha1_many(&[]).is_empty());
}

#[test]
fn best_lanes_matches_a_backend() {
    let lanes = best_lanes();
    assert!(Backend::available().iter().any(|b| b.lanes() == lanes), "{lanes}");
}

#[test]
#[cfg(target_arch = "x86_64")]
fn detection_agrees_with_std() {
    let sha_ni = std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1");
    assert_eq!(Backend::ShaNi2.is_available(), sha_ni);
    assert_eq!(Backend::ShaNi4.is_available(), sha_ni);
    assert_eq!(Backend::Avx2x8.is_available(), std::arch::is_x86_feature_detected!("avx2"));
    assert_eq!(
        Backend::Avx512x16.is_available(),
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
    );
    assert_eq!(
        Backend::Avx512Vl8.is_available(),
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    );
}
