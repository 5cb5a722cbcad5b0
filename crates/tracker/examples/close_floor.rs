//! The floor of the tracker benchmark's `Connection: close` rows: a server that does nothing but
//! accept a connection, read once, write a canned announce reply (50 compact peers, about the
//! size of a real one) and close it. No HTTP parsing, no store, no event loop: only the kernel's
//! work per connection (it reads once: a request split over several reads would be cut short,
//! and wrk writes each in one). What the load generator reaches against it is the most any tracker can
//! show in that row on the same machine, and its CPU per connection is the least any can spend.
//!
//! `cargo run --release -p bitswarm-tracker --example close_floor [THREADS]` prints
//! `listening on 127.0.0.1:PORT` and serves until killed, with THREADS (default 1) threads
//! blocking in `accept` on the one socket.

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let threads: usize = match std::env::args().nth(1) {
        None => 1,
        Some(a) => a.parse().map_err(|_| std::io::Error::other(format!("THREADS must be a number, not {a:?}")))?,
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening on {}", listener.local_addr()?);
    let mut body =
        b"d8:completei12e10:downloadedi3e10:incompletei40e8:intervali1800e12:min intervali900e5:peers300:".to_vec();
    body.extend((0..300u32).map(|i| (i * 7) as u8));
    body.push(b'e');
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    let reply: &'static [u8] = reply.leak();
    let serve = move |l: TcpListener| {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((mut s, _)) = l.accept() else { continue };
            if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                let _ = s.write_all(reply);
            }
        }
    };
    for _ in 1..threads.max(1) {
        let l = listener.try_clone()?;
        std::thread::spawn(move || serve(l));
    }
    serve(listener)
}
