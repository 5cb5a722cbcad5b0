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
//! percent-encoded, as every client does. hyper's size limits apply to the escaped line (up to
//! three times the raw one; the default limit is about 400 KB).

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

/// A byte that may stand raw in a request target (RFC 3986's unreserved characters, `%` and
/// the delimiters a path and query use). Escaping any other is harmless: the query parser
/// decodes every escape.
#[inline]
fn uri_byte(b: u8) -> bool {
    URI_BYTE[usize::from(b)]
}

/// [`uri_byte`] as comparisons, which the compiler can do for many bytes at once.
#[inline(always)]
fn plain(b: u8) -> bool {
    (b.is_ascii_alphanumeric() || matches!(b, b'%' | b'&' | b'=' | b'-' | b'.' | b'_' | b'~'))
        || matches!(b, b'/' | b'?' | b':' | b'@' | b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';')
}

/// [`uri_byte`] as a table.
const URI_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~%/?&=:@!$'()*+,;";
    let mut k = 0;
    while k < extra.len() {
        t[extra[k] as usize] = true;
        k += 1;
    }
    t
};

/// A stream whose reads come with raw bytes in request targets percent-encoded (see the
/// module's text); writes pass through.
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
                    // Sixteen bytes at a time while they are all plain (vectorized), then
                    // byte by byte up to the one that is not.
                    while let Some(block) = bytes.get(i..i + 16)
                        && block.iter().fold(true, |all, &b| all & plain(b))
                    {
                        i += 16;
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
        if this.at < this.pending.len() {
            this.drain_pending(buf);
            return Poll::Ready(Ok(()));
        }
        if this.state == State::Done {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // The common case: nothing to escape, and the bytes stay where they were read.
        let Some(i) = this.scan(&buf.filled()[before..]) else { return Poll::Ready(Ok(())) };
        let tail = buf.filled()[before + i..].to_vec();
        buf.set_filled(before + i);
        this.escape_into_pending(&tail);
        this.drain_pending(buf);
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
        let want: &[u8] =
            b"\r\nGET /announce?info_hash=%01%FF%22%3C%3E%7B%7C%7D%23%5E%60%5C%5B%5D&a=%41+b HTTP/1.1\r\nHost: t\r\n\
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

    #[test]
    fn the_two_forms_of_uri_byte_agree() {
        for b in 0..=255u8 {
            assert_eq!(plain(b), URI_BYTE[usize::from(b)], "{b:#04x}");
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
