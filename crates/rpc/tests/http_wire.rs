//! The bytes on the wire, on a real socket: the 409 header line clients parse, keep-alive
//! across the handshake (as Python's requests does it), `Expect: 100-continue`, large bodies.

mod common;

use std::time::Duration;

use bitswarm_rpc::RpcConfig;
use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

/// One HTTP/1.1 response: the head as text and the body.
struct Response {
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn status(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// Header lines as sent, without the status line.
    fn header_lines(&self) -> Vec<&str> {
        self.head.lines().skip(1).collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.header_lines().into_iter().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (Content-Length framed) from a connection that may carry more.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Response {
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let r = Response { head, body: Vec::new() };
                let len: usize = r.header("content-length").map_or(0, |v| v.parse().expect("a length"));
                while buf.len() < end + 4 + len {
                    let mut chunk = [0u8; 65536];
                    let n = conn.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "connection closed mid-body");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Response { body, ..r };
            }
            let mut chunk = [0u8; 65536];
            let n = conn.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a response; got {:?}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no response in time")
}

fn post(id: Option<&str>, body: &str) -> Vec<u8> {
    let id = id.map(|i| format!("X-Transmission-Session-Id: {i}\r\n")).unwrap_or_default();
    format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{id}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_on_one_keep_alive_connection() {
    let s = Server::start(RpcConfig::default()).await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let mut buf = Vec::new();
    let body = r#"{"method": "session-get", "arguments": {"fields": ["version"]}}"#;

    conn.write_all(&post(Some("0"), body)).await.expect("write");
    let r = read_response(&mut conn, &mut buf).await;
    assert_eq!(r.status(), "HTTP/1.1 409 Conflict");
    // transmission-remote looks for "X-Transmission-Session-Id: " (any case) and reads the id up
    // to the first whitespace: one space after the colon, the id, then CRLF.
    let line = r
        .header_lines()
        .into_iter()
        .find(|l| l.to_ascii_lowercase().starts_with("x-transmission-session-id: "))
        .expect("the session id header");
    let id = &line["x-transmission-session-id: ".len()..];
    assert_eq!(id.len(), 48);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(r.header("server"), Some("Transmission"));
    assert_eq!(r.body.len(), 581);

    conn.write_all(&post(Some(id), body)).await.expect("write");
    let r = read_response(&mut conn, &mut buf).await;
    assert_eq!(r.status(), "HTTP/1.1 200 OK");
    assert_eq!(r.header("content-type"), Some("application/json; charset=UTF-8"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["arguments"]["version"], format!("4.0.6 (bitswarm {})", env!("CARGO_PKG_VERSION")));

    // Sonarr's and Flood's probe: a bodiless GET.
    conn.write_all(b"GET /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n")
        .await
        .expect("write");
    let r = read_response(&mut conn, &mut buf).await;
    assert_eq!(r.status(), "HTTP/1.1 409 Conflict");
    let get = format!("GET /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Transmission-Session-Id: {id}\r\n\r\n");
    conn.write_all(get.as_bytes()).await.expect("write");
    let r = read_response(&mut conn, &mut buf).await;
    assert_eq!(r.status(), "HTTP/1.1 405 Method Not Allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_and_a_large_body() {
    let s = Server::start(RpcConfig::default()).await;
    let id = bitswarm_rpc::session_id();
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let mut buf = Vec::new();
    // A torrent-add of a 3 MB .torrent, base64: about 4 MB of body.
    let metainfo = data_encoding::BASE64.encode(&vec![b'd'; 3_000_000]);
    let body = format!(r#"{{"method":"torrent-add","arguments":{{"metainfo":"{metainfo}"}},"tag":8}}"#);
    let head = format!(
        "POST /transmission/rpc/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Transmission-Session-Id: {id}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let cont = tokio::time::timeout(STEP, async {
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut c = [0u8; 256];
            let n = conn.read(&mut c).await.expect("read");
            assert!(n > 0);
            got.extend_from_slice(&c[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    })
    .await
    .expect("100 Continue in time");
    assert!(cont.starts_with("HTTP/1.1 100 Continue\r\n"), "{cont}");
    conn.write_all(body.as_bytes()).await.expect("write");
    let r = read_response(&mut conn, &mut buf).await;
    assert_eq!(r.status(), "HTTP/1.1 200 OK");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    // The fake daemon finds no name in these bytes: the error reaches the client, tag echoed.
    assert_eq!(v, serde_json::json!({"arguments": {}, "result": "invalid or corrupt torrent file", "tag": 8}));
    let calls = s.daemon.take_calls();
    assert!(
        matches!(&calls[..], [common::fake::Call::Add(r)] if r.source == bitswarm_rpc::AddSource::Metainfo(vec![b'd'; 3_000_000]))
    );
}
