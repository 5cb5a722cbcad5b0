//! Message Stream Encryption between our own peers, over real sockets on loopback: RC4 both ways
//! when both require it, a plaintext stream after the MSE handshake when the dialer prefers MSE
//! and the other side takes plaintext, and a plaintext dialer refused by a seeder that requires
//! encryption. The bytes that arrive are compared with the original.

mod common;

use std::time::Duration;

use common::swarm::*;
use common::*;

const T: Duration = Duration::from_secs(120);

/// The tree of [`TreeSetup`], its torrent.
fn setup(seed: u64) -> TreeSetup {
    TreeSetup::new(seed, &[])
}

/// Our leecher with `leech_enc` dials our seeder with `seed_enc`; both log their connections.
/// Returns the seeder and leecher after the download completed and the data was checked.
fn transfer(s: &TreeSetup, seed_enc: &str, leech_enc: &str) -> (Proc, Proc) {
    let (seed, port) =
        our_peer("seed", &s.torrent, &s.src, &["--no-tracker", "--encryption", seed_enc], Some(CONN_LOG));
    let peer = format!("127.0.0.1:{port}");
    let args = ["--no-tracker", "--exit-when-done", "--encryption", leech_enc, "--peer", &peer];
    let (mut leech, _) = our_peer("join", &s.torrent, &s.dst, &args, Some(CONN_LOG));
    let status = leech.wait_exit(T);
    assert!(status.success(), "bitswarm join: {status:?}\n{}", leech.output());
    assert_same_tree(&s.src, &s.dst);
    (seed, leech)
}

#[test]
fn rc4_between_our_peers_when_both_require_it() {
    let s = setup(600);
    let (mut seed, mut leech) = transfer(&s, "require", "require");
    assert_connection(&mut leech, "outgoing", "MSE, RC4 stream");
    assert_connection(&mut seed, "incoming", "MSE, RC4 stream");
    assert_eq!(failed_handshakes(&mut leech), Vec::<String>::new());
}

#[test]
fn prefer_dials_mse_and_a_default_seeder_keeps_the_stream_plaintext() {
    let s = setup(610);
    let (mut seed, mut leech) = transfer(&s, "plaintext", "prefer");
    assert_connection(&mut leech, "outgoing", "MSE, plaintext stream");
    assert_connection(&mut seed, "incoming", "MSE, plaintext stream");
    assert_eq!(failed_handshakes(&mut leech), Vec::<String>::new());
}

#[test]
fn a_default_leecher_dials_plaintext_and_a_requiring_dialer_gets_rc4_from_a_default_seeder() {
    let s = setup(620);
    let (mut seed, _leech) = transfer(&s, "plaintext", "plaintext");
    assert_connection(&mut seed, "incoming", "plaintext");
    let s = setup(630);
    let (mut seed, _leech) = transfer(&s, "plaintext", "require");
    assert_connection(&mut seed, "incoming", "MSE, RC4 stream");
}

#[test]
fn a_seeder_that_requires_encryption_refuses_plaintext_handshakes() {
    let s = setup(640);
    let (mut seed, port) =
        our_peer("seed", &s.torrent, &s.src, &["--no-tracker", "--encryption", "require"], Some(CONN_LOG));
    let peer = format!("127.0.0.1:{port}");
    let (_leech, _) = our_peer("join", &s.torrent, &s.dst, &["--no-tracker", "--peer", &peer], Some(CONN_LOG));
    // Refused at debug level, and the seeder goes on serving.
    seed.wait_line(T, |l| l.contains("handshake: plaintext handshake refused: encryption required"));
    assert!(seed.child.try_wait().unwrap().is_none(), "the seeder is still running");
    assert!(seed.seen.iter().all(|l| !l.contains("WARN") && !l.contains("ERROR")), "{}", seed.output());
}
