//! A BEP 15 client of one UDP tracker, for the tests that ask it directly (each adds the
//! announce it needs in its own `impl UdpClient`).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bitswarm_tracker_proto::udp::{Family, Request, Response};

pub struct UdpClient {
    sock: UdpSocket,
    server: SocketAddr,
    /// The connection id of the connect exchange made by [`UdpClient::new`].
    pub cid: u64,
}

impl UdpClient {
    /// Connects (BEP 15's connect exchange); panics without a reply within 5 s.
    pub fn new(server: SocketAddr) -> UdpClient {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut c = UdpClient { sock, server, cid: 0 };
        let Some(Response::Connect { connection_id, .. }) = c.ask(&Request::Connect { transaction_id: 1 }) else {
            panic!("no connect reply")
        };
        c.cid = connection_id;
        c
    }

    /// Sends `r` and reads one reply (None after 5 s, or for a reply that does not parse).
    pub fn ask(&self, r: &Request) -> Option<Response> {
        self.sock.send_to(&r.encode(), self.server).unwrap();
        let mut buf = [0u8; 2048];
        let n = self.sock.recv(&mut buf).ok()?;
        Response::parse(&buf[..n], Family::V4).ok()
    }
}
