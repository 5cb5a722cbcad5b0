//! Lenient request targets: a client that puts raw bytes in its announce URL (an `info_hash`
//! of 20 unescaped bytes, a `"` in a key) is answered, peers or a bencoded failure reason, not
//! refused with an empty `400 Bad Request` by the HTTP parser, which accepts only the
//! characters a URI may hold (opentracker refuses them too, with a 400 page).
//!
//! [`EscapeTargets`] sits between the socket and hyper and percent-encodes such bytes in the
//! target of a connection's first request line; the query parser decodes them back, so the
//! tracker sees the bytes the client sent. Bytes the URL syntax itself uses (`%`, `&`, a space,
//! line ends) cannot be told apart and still make the request wrong. Only the first request is
//! touched: what follows it may be a body (a `POST`, a `GET` with `Content-Length`), and
//! rewriting a body would change its length under the framing hyper reads, letting bytes of it
//! be taken for a request of their own. A later request on a kept-alive connection must be
//! percent-encoded, as every client does. hyper's limits apply to the escaped line, which can be
//! three times as long as the raw one (a target is at most 64 KiB).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a connection's byte stream is, up to the end of its first request line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the request line (blank lines are skipped, as parsers do).
    LineStart,
    Method,
    Target,
    /// Past the first request's target: nothing more is changed.
    Done,
}

impl State {
    /// The state after `b`, and whether `b` must be escaped.
    #[inline]
    fn step(self, b: u8) -> (State, bool) {
        match self {
            State::LineStart if b == b'\r' || b == b'\n' => (State::LineStart, false),
            State::LineStart => State::Method.step(b),
            State::Method if b == b' ' => (State::Target, false),
            State::Method => (State::Method, false),
            State::Target => match b {
                b' ' | b'\r' | b'\n' => (State::Done, false),
                _ => (State::Target, !uri_byte(b)),
            },
            State::Done => (State::Done, false),
        }
    }
}

/// A byte that may stand raw in a request target: the ASCII that the `http` crate's URI parser
/// takes in a query (0x21, 0x24–0x3B, 0x3D, 0x3F–0x7E; hyper parses targets with it). The
/// others, escaped, are controls, `"`, `#` (which would start a fragment), `<`, `>`, DEL and
/// every byte from 0x80 (raw, they must be UTF-8). Escaping a byte is harmless in any case:
/// the query parser decodes every escape.
#[inline(always)]
fn uri_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E)
}

/// Whether the eight bytes of `x` are all in 0x24–0x7E and none is `<` or `>`: a subset of
/// [`uri_byte`] (it leaves out `!`, which the byte-by-byte loop takes), tested on the whole
/// word at once (the "has less", "has more" and "has zero byte" tests of Bit Twiddling Hacks,
/// exact as yes-or-no answers for these bounds).
#[inline(always)]
fn plain_word(x: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let less = x.wrapping_sub(ONES * 0x24) & !x & HIGH;
    // Adding 127 - 0x7E = 1 to each byte sets the high bit of those above 0x7E.
    let more = (x.wrapping_add(ONES) | x) & HIGH;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    (less | more | zero(x ^ (ONES * u64::from(b'<'))) | zero(x ^ (ONES * u64::from(b'>')))) == 0
}

/// A stream whose reads come with the raw bytes of its first request target percent-encoded
/// (see the module's text); everything after that target, and every write, passes through.
pub struct EscapeTargets<S> {
    io: S,
    state: State,
    /// Escaped bytes not yet handed out (only after a read held a byte to escape).
    pending: Vec<u8>,
    at: usize,
}

impl<S> EscapeTargets<S> {
    pub fn new(io: S) -> Self {
        EscapeTargets { io, state: State::LineStart, pending: Vec::new(), at: 0 }
    }

    /// Runs the state machine over `bytes`; returns where the first byte to escape is, with the
    /// state before it, or `None` with the state after them all. The same steps as
    /// [`State::step`], a stretch at a time.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let n = bytes.len();
        let mut i = 0;
        let mut state = self.state;
        while i < n {
            state = match state {
                State::Done => break,
                State::LineStart => match bytes[i] {
                    b'\r' | b'\n' => {
                        i += 1;
                        State::LineStart
                    }
                    _ => State::Method,
                },
                State::Method => match bytes[i..].iter().position(|&b| b == b' ') {
                    Some(at) => {
                        i += at + 1;
                        State::Target
                    }
                    None => break,
                },
                State::Target => {
                    // Eight bytes at a time while they are all plain, then byte by byte up
                    // to the one that is not.
                    while let Some(word) = bytes.get(i..i + 8)
                        && plain_word(u64::from_le_bytes(word.try_into().unwrap_or_default()))
                    {
                        i += 8;
                    }
                    while i < n && uri_byte(bytes[i]) {
                        i += 1;
                    }
                    if i == n {
                        break;
                    }
                    let (next, escape) = state.step(bytes[i]);
                    if escape {
                        self.state = state;
                        return Some(i);
                    }
                    i += 1;
                    next
                }
            };
        }
        self.state = state;
        None
    }

    /// Appends `bytes`, escaped as needed, to `pending`.
    fn escape_into_pending(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for &b in bytes {
            let (next, escape) = self.state.step(b);
            if escape {
                self.pending.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            } else {
                self.pending.push(b);
            }
            self.state = next;
        }
    }

    /// Hands out as much of `pending` as `buf` takes.
    fn drain_pending(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.pending.len() - self.at);
        buf.put_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        if self.at == self.pending.len() {
            // Once per connection at most: give the memory back.
            self.pending = Vec::new();
            self.at = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EscapeTargets<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Every read after the first request line: kept small, so that it inlines into hyper's
        // reading as the bare socket's does.
        if this.state == State::Done && this.pending.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        this.poll_read_first(cx, buf)
    }
}

impl<S: AsyncRead + Unpin> EscapeTargets<S> {
    /// A read up to the end of the first request line, or one handing out escaped bytes.
    #[inline(never)]
    fn poll_read_first(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.pending.len() {
            self.drain_pending(buf);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // The common case: nothing to escape, and the bytes stay where they were read.
        let Some(i) = self.scan(&buf.filled()[before..]) else { return Poll::Ready(Ok(())) };
        let tail = buf.filled()[before + i..].to_vec();
        buf.set_filled(before + i);
        self.escape_into_pending(&tail);
        self.drain_pending(buf);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EscapeTargets<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that yields `input` in reads of at most `chunk` bytes.
    struct Chunks<'a> {
        input: &'a [u8],
        chunk: usize,
    }

    impl AsyncRead for Chunks<'_> {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = buf.remaining().min(self.chunk).min(self.input.len());
            buf.put_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Poll::Ready(Ok(()))
        }
    }

    /// All of `input`, delivered in reads of `chunk` bytes, as read through [`EscapeTargets`]
    /// into a buffer of `cap` bytes.
    fn through(input: &[u8], chunk: usize, cap: usize) -> Vec<u8> {
        let mut s = EscapeTargets::new(Chunks { input, chunk });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut out, mut space) = (Vec::new(), vec![0u8; cap]);
        loop {
            let mut buf = ReadBuf::new(&mut space);
            let Poll::Ready(Ok(())) = Pin::new(&mut s).poll_read(&mut cx, &mut buf) else { panic!("a read failed") };
            if buf.filled().is_empty() {
                return out;
            }
            out.extend_from_slice(buf.filled());
        }
    }

    #[test]
    fn raw_bytes_in_the_first_target_are_escaped_and_nothing_else_changes() {
        let input: &[u8] = b"\r\nGET /announce?info_hash=\x01\xff\"<>{|}#^`\\[]&a=%41+b HTTP/1.1\r\nHost: t\r\n\
            User-Agent: \xc3\xa9 \"x\"\r\nContent-Length: 9\r\n\r\n a \x00\xff\r\n\
            GET /x?\x7f\x00 HTTP/1.0\r\n\r\n";
        let want: &[u8] = b"\r\nGET /announce?info_hash=%01%FF%22%3C%3E{|}%23^`\\[]&a=%41+b HTTP/1.1\r\nHost: t\r\n\
            User-Agent: \xc3\xa9 \"x\"\r\nContent-Length: 9\r\n\r\n a \x00\xff\r\n\
            GET /x?\x7f\x00 HTTP/1.0\r\n\r\n";
        for chunk in [1, 2, 3, 7, 16, input.len()] {
            for cap in [1, 2, 5, 64, 4096] {
                assert_eq!(through(input, chunk, cap), want, "reads of {chunk} into {cap}");
            }
        }
    }

    /// Byte by byte with [`State::step`], the definition [`EscapeTargets::scan`] follows.
    fn reference(input: &[u8]) -> Vec<u8> {
        let (mut state, mut out) = (State::LineStart, Vec::new());
        for &b in input {
            let (next, escape) = state.step(b);
            if escape {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            } else {
                out.push(b);
            }
            state = next;
        }
        out
    }

    proptest::proptest! {
        /// Requests of random bytes, delivered and read in random sizes, come out as the
        /// byte-by-byte definition says.
        #[test]
        fn scanning_matches_the_byte_by_byte_definition(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b"GET ".to_vec()),
                    proptest::strategy::Just(b" HTTP/1.1\r\n".to_vec()),
                    proptest::strategy::Just(b"0123456789abcdef0123456789".to_vec()),
                    proptest::strategy::Just(b"\r\n".to_vec()),
                    proptest::strategy::Just(b"\n".to_vec()),
                    proptest::strategy::Just(b"\r".to_vec()),
                    proptest::strategy::Just(b" ".to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                    proptest::strategy::Just(b"/announce?a=b&c=%41".to_vec()),
                ],
                0..40,
            ),
            chunk in 1usize..40,
            cap in 1usize..64,
        ) {
            let input = parts.concat();
            proptest::prop_assert_eq!(through(&input, chunk, cap), reference(&input));
        }
    }

    proptest::proptest! {
        /// The word test says yes exactly when every byte passes the byte test (`!` aside).
        #[test]
        fn plain_words_are_words_of_plain_bytes(word in proptest::array::uniform8(proptest::num::u8::ANY), pick in proptest::collection::vec(0x22u8..0x7f, 8)) {
            for bytes in [word, pick.clone().try_into().unwrap()] {
                let each = bytes.iter().all(|&b| uri_byte(b) && b != b'!');
                proptest::prop_assert_eq!(plain_word(u64::from_le_bytes(bytes)), each, "{:?}", bytes);
            }
        }
    }

    #[test]
    fn clean_requests_pass_unchanged() {
        let input: &[u8] =
            b"GET /announce?info_hash=%01%02&peer_id=-TR3000-abc&port=1&key=a+b HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(through(input, input.len(), 4096), input);
        assert_eq!(through(input, 5, 3), input);
    }
}
