//! HTTP/1 framing checks in front of actix-http's dispatcher.
//!
//! actix-http answers an over-long request line, too many header bytes or a
//! malformed head with an empty 400/431 of its own (no JSON, no 414), and it
//! answers requests pipelined behind one that asked to close the connection.
//! [`Guarded`] sits between the socket (or TLS stream) and the dispatcher and
//! hands the dispatcher one vetted request head at a time:
//!
//! - a head that passes is released with its `Content-Length` body;
//! - a head that fails is replaced by [`REJECTED_REQUEST`] (which asks to
//!   close) and the connection's [`Verdict`] records why; the API answers that
//!   request with the JSON error of [`Rejection::error`];
//! - after a head that asks to close (`Connection: close`, or HTTP/1.0
//!   without keep-alive), and after a rejection, further input is discarded,
//!   so nothing pipelined behind it is answered;
//! - after a chunked body or an upgrade the rest of the connection passes
//!   unvetted (the API has no such requests; actix-http frames them).
//!
//! Writes pass straight through.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_web::http::{StatusCode, Uri};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Error;

/// The longest request line answered (`414 URI too long` beyond).
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// The longest request target (the `http` crate's limit for a URI).
const MAX_URI: usize = 65_533;
/// The most bytes a request head may have (`431` beyond; below actix-http's
/// own 128 KiB buffer limit).
pub const MAX_HEAD: usize = 96 * 1024;
/// The most header fields a request may have (`431` beyond), as actix-http.
const MAX_HEADERS: usize = 96;
/// How much is read from the client at once.
const READ_CHUNK: usize = 8 * 1024;

/// The path of the request that stands in for a rejected head.
pub const REJECTED_PATH: &str = "/__css/rejected";
/// The request that stands in for a rejected head.
const REJECTED_REQUEST: &[u8] =
    b"GET /__css/rejected HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// Why a request head was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UriTooLong,
    HeadTooLarge,
    Malformed(&'static str),
}

impl Rejection {
    /// The answer the client gets.
    pub fn error(self) -> Error {
        match self {
            Rejection::UriTooLong => Error::new(
                StatusCode::URI_TOO_LONG,
                "UriTooLong",
                format!("URI too long: the request line exceeds {MAX_REQUEST_LINE} bytes"),
            ),
            Rejection::HeadTooLarge => Error::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "HeadersTooLarge",
                format!(
                    "Request header fields too large: at most {MAX_HEADERS} fields \
                     and {MAX_HEAD} bytes"
                ),
            ),
            Rejection::Malformed(what) => Error::new(
                StatusCode::BAD_REQUEST,
                "MalformedRequest",
                format!("Malformed request: {what}"),
            ),
        }
    }
}

/// What a connection's guard decided, readable by its requests (it is put in
/// the connection data).
#[derive(Debug, Clone, Default)]
pub struct Verdict(Rc<Cell<Option<Rejection>>>);

impl Verdict {
    pub fn rejection(&self) -> Option<Rejection> {
        self.0.get()
    }
}

/// What to do with the next input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Collect and vet a request head.
    Head,
    /// Pass on this many body bytes, then vet the next head (or discard).
    Body { left: u64, then_close: bool },
    /// Pass everything on unvetted.
    Through,
    /// The connection is closing: drop what arrives.
    Discard,
}

/// What the bytes collected so far make of a head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Incomplete,
    Rejected(Rejection),
    /// A head of `len` bytes, and the mode for what follows it.
    Complete {
        len: usize,
        next: Mode,
    },
}

/// A client connection whose request heads are vetted before the dispatcher
/// reads them. See the module documentation.
pub struct Guarded<T> {
    io: T,
    /// Read from the client, not yet vetted.
    input: BytesMut,
    /// Vetted, not yet read by the dispatcher.
    vetted: BytesMut,
    mode: Mode,
    eof: bool,
    verdict: Verdict,
}

impl<T> Guarded<T> {
    pub fn new(io: T) -> Guarded<T> {
        Guarded {
            io,
            input: BytesMut::new(),
            vetted: BytesMut::new(),
            mode: Mode::Head,
            eof: false,
            verdict: Verdict::default(),
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict.clone()
    }

    /// Moves what can be decided from `input` to `vetted`.
    fn advance(&mut self) {
        while !self.input.is_empty() && self.vetted.is_empty() {
            match self.mode {
                Mode::Through => self.vetted = self.input.split(),
                Mode::Discard => self.input.clear(),
                Mode::Body { left, then_close } => {
                    let n = self
                        .input
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.vetted = self.input.split_to(n);
                    let left = left - n as u64;
                    self.mode = match (left, then_close) {
                        (0, true) => Mode::Discard,
                        (0, false) => Mode::Head,
                        _ => Mode::Body { left, then_close },
                    };
                }
                Mode::Head => match inspect(&self.input) {
                    Head::Incomplete => return,
                    Head::Rejected(why) => {
                        self.verdict.0.set(Some(why));
                        self.input.clear();
                        self.vetted.extend_from_slice(REJECTED_REQUEST);
                        self.mode = Mode::Discard;
                    }
                    Head::Complete { len, next } => {
                        self.vetted = self.input.split_to(len);
                        self.mode = next;
                    }
                },
            }
        }
    }
}

/// Vets the head at the start of `buf`.
fn inspect(buf: &[u8]) -> Head {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let line = memchr::memchr(b'\n', &buf[start..]).unwrap_or(buf.len() - start);
    if line > MAX_REQUEST_LINE {
        return Head::Rejected(Rejection::UriTooLong);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(_) if buf.len() > MAX_HEAD => return Head::Rejected(Rejection::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Head::Incomplete,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Head::Rejected(Rejection::HeadTooLarge)
        }
        Err(e) => return Head::Rejected(Rejection::Malformed(parse_error(e))),
    };
    if req.path.is_some_and(|p| p.len() > MAX_URI) {
        return Head::Rejected(Rejection::UriTooLong);
    }
    match next_mode(&req) {
        Ok(next) => Head::Complete { len, next },
        Err(why) => Head::Rejected(why),
    }
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::Token | httparse::Error::Status => "invalid request line",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// What the framing fields of a head say.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    hosts: usize,
    encodings: usize,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl Fields {
    /// Reads the fields actix-http frames a request by, refusing what it
    /// would refuse (with an empty 400 of its own).
    fn of(headers: &[httparse::Header]) -> Result<Fields, &'static str> {
        let mut f = Fields::default();
        for field in headers {
            let (name, value) = (field.name, field.value.trim_ascii());
            if name.eq_ignore_ascii_case("content-length") {
                if f.length.is_some() {
                    return Err("multiple Content-Length");
                }
                let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
                let n = std::str::from_utf8(value).ok().filter(|_| digits);
                f.length = Some(
                    n.and_then(|n| n.parse().ok())
                        .ok_or("invalid Content-Length")?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                f.encodings += 1;
                f.chunked = value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case("host") {
                f.hosts += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    f.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
        }
        Ok(f)
    }
}

/// What follows a parsed head: its body, and whether the connection closes.
fn next_mode(req: &httparse::Request) -> Result<Mode, Rejection> {
    let method = req.method.unwrap_or_default();
    if actix_web::http::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(Rejection::Malformed("invalid method"));
    }
    if req.path.unwrap_or_default().parse::<Uri>().is_err() {
        return Err(Rejection::Malformed("invalid request target"));
    }
    let f = Fields::of(req.headers).map_err(Rejection::Malformed)?;
    let http10 = req.version == Some(0);
    let refused = [
        (f.hosts > 1, "multiple Host headers"),
        (f.hosts == 0 && !http10, "missing Host header"),
        (f.encodings > 1, "multiple Transfer-Encoding"),
        (
            f.encodings == 1 && (http10 || !f.chunked),
            "Transfer-Encoding other than chunked",
        ),
        (
            f.chunked && f.length.is_some(),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            http10 && method == "POST" && f.length.is_none(),
            "HTTP/1.0 POST without Content-Length",
        ),
    ];
    if let Some((_, why)) = refused.into_iter().find(|(refuse, _)| *refuse) {
        return Err(Rejection::Malformed(why));
    }
    let then_close = f.close || (http10 && !f.keep_alive);
    let upgrade = (f.upgrade && !f.close) || method == "CONNECT";
    Ok(match f.length {
        _ if f.chunked || upgrade => Mode::Through,
        Some(left) if left > 0 => Mode::Body { left, then_close },
        _ if then_close => Mode::Discard,
        _ => Mode::Head,
    })
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            this.advance();
            if !this.vetted.is_empty() {
                let n = this.vetted.len().min(buf.remaining());
                buf.put_slice(&this.vetted.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // An incomplete head is never answered.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            match read.filled() {
                [] => this.eof = true,
                bytes => this.input.extend_from_slice(bytes),
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// What the dispatcher reads when the client sends `sent` and closes.
    async fn through(sent: &[u8]) -> (Vec<u8>, Option<Rejection>) {
        let (mut client, server) = tokio::io::duplex(sent.len() + 1);
        client.write_all(sent).await.unwrap();
        drop(client);
        let mut guarded = Guarded::new(server);
        let verdict = guarded.verdict();
        let mut out = Vec::new();
        guarded.read_to_end(&mut out).await.unwrap();
        (out, verdict.rejection())
    }

    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn keep_alive_requests_pass_in_order_with_their_bodies() {
        let post = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let sent = [GET, &post[..], GET].concat();
        assert_eq!(through(&sent).await, (sent.clone(), None));
    }

    #[tokio::test]
    async fn nothing_after_a_request_that_asks_to_close_is_passed() {
        let close = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n";
        let (out, why) = through(&[&close[..], GET].concat()).await;
        assert_eq!((out, why), (close.to_vec(), None));
        let old = b"GET /a HTTP/1.0\r\n\r\n";
        assert_eq!(through(&[&old[..], GET].concat()).await.0, old.to_vec());
        let kept = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        let sent = [&kept[..], GET].concat();
        assert_eq!(through(&sent).await.0, sent);
        let body =
            b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(through(&[&body[..], GET].concat()).await.0, body.to_vec());
    }

    #[tokio::test]
    async fn a_long_request_line_becomes_the_rejected_request() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        let (out, why) = through(&[GET, long.as_bytes(), GET].concat()).await;
        assert_eq!(out, [GET, REJECTED_REQUEST].concat());
        assert_eq!(why, Some(Rejection::UriTooLong));
        // Decided before the line ends.
        let (out, why) = through(&long.as_bytes()[..MAX_REQUEST_LINE + 2]).await;
        assert_eq!(
            (out, why),
            (REJECTED_REQUEST.to_vec(), Some(Rejection::UriTooLong))
        );
        let fits = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE - 20)
        );
        assert_eq!(through(fits.as_bytes()).await.1, None);
    }

    #[tokio::test]
    async fn large_or_malformed_heads_are_rejected() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(MAX_HEAD));
        assert_eq!(
            through(big.as_bytes()).await.1,
            Some(Rejection::HeadTooLarge)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            through(many.as_bytes()).await.1,
            Some(Rejection::HeadTooLarge)
        );
        for (head, what) in [
            (&b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"[..], "invalid header name"),
            (b"GET / HTTP/9.9\r\n\r\n", "unsupported HTTP version"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n", "invalid Content-Length"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "multiple Content-Length",
            ),
            (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target"),
            (b"GET / HTTP/1.1\r\n\r\n", "missing Host header"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n", "multiple Host headers"),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "Transfer-Encoding other than chunked",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (b"POST / HTTP/1.0\r\n\r\n", "HTTP/1.0 POST without Content-Length"),
        ] {
            let (out, why) = through(head).await;
            assert_eq!(out, REJECTED_REQUEST, "{}", String::from_utf8_lossy(head));
            assert_eq!(why, Some(Rejection::Malformed(what)));
        }
    }

    #[tokio::test]
    async fn chunked_bodies_and_upgrades_pass_unvetted() {
        let chunked =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let sent = [&chunked[..], b"junk that is not HTTP"].concat();
        assert_eq!(through(&sent).await, (sent.clone(), None));
        let upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: y\r\n\r\n";
        let sent = [&upgrade[..], b"\x00\x01 not HTTP"].concat();
        assert_eq!(through(&sent).await, (sent.clone(), None));
    }

    #[tokio::test]
    async fn an_incomplete_head_is_held_back() {
        assert_eq!(
            through(b"GET / HTTP/1.1\r\nHost:").await,
            (Vec::new(), None)
        );
    }
}
