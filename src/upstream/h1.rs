//! The proxy's own HTTP/1.1 exchange for the common request to a plain-`http`
//! upstream: a GET or HEAD with no body and no upgrade. The request head is
//! written and the response read by the task that serves the client, so no
//! connection task, channel or wake-up stands between them.
//!
//! hyper's client connection was about a third of the 2 KB hop's
//! instructions (callgrind: its dispatcher, the channels that carry the
//! request and the response between tasks, and the connection's own task,
//! polled several times a request); this exchange cuts the hop from 46.3 k
//! to 41.4 k instructions (bench/README.md). Everything else (a request
//! body, an upgrade, any other method) still goes through hyper's
//! connection in [`super::pool`], which keeps its connections apart.
//!
//! What is read (RFC 9112): a response head of at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] fields; interim 1xx responses are skipped; the body is
//! framed by `Transfer-Encoding: chunked`, `Content-Length`, or the end of the
//! connection, and HEAD, 204 and 304 have none. A connection is reused only
//! after an HTTP/1.1 response without `Connection: close` whose body ended by
//! its framing with nothing read past it.

use crate::body::BoxError;
use crate::fields::Fields;
use bytes::{Bytes, BytesMut};
use http::header::{self, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Larger response heads are refused (an error, so a 502), as hyper's client
/// refuses heads past its buffer limit.
const MAX_HEAD: usize = 64 * 1024;
/// hyper's default too.
const MAX_HEADERS: usize = 100;
/// Reads go into one buffer of this size, carved up as responses and body
/// pieces are split off it, until less than [`MIN_ROOM`] is left; then a new
/// one. Below glibc's threshold for mapping memory of its own: 512 KiB
/// buffers, allocated per read, were mapped and faulted in anew each time (a
/// 1 MB page took four times the page faults of hyper's client and a
/// quarter more system time; with this, about a hundredth of its faults).
const READ: usize = 64 * 1024;
const MIN_ROOM: usize = 8 * 1024;

/// Whether `req` can take the own exchange: GET or HEAD, no body, no upgrade.
pub fn eligible<B: http_body::Body>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.body().is_end_stream()
        && !req.headers().contains_key(http::header::UPGRADE)
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before the response")]
    ClosedEarly,
    #[error("upstream response head is invalid: {0}")]
    Head(&'static str),
}

impl ExchangeError {
    /// Nothing of a response arrived: a pooled connection that had closed.
    pub fn before_response(&self) -> bool {
        match self {
            ExchangeError::ClosedEarly => true,
            ExchangeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            ExchangeError::Head(_) => false,
        }
    }
}

/// One upstream connection between exchanges.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read past what has been consumed.
    buf: BytesMut,
}

impl Conn {
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// False if the upstream closed it (or sent something unasked) while it
    /// sat idle. Reads only what the runtime already knows is there: no wait.
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Send a request head (from [`encode_head`]; `is_head` for HEAD) and
    /// read the response head. The body comes with the connection inside it.
    pub async fn exchange(
        mut self,
        head: &[u8],
        is_head: bool,
    ) -> Result<Response<Incoming>, ExchangeError> {
        self.io.write_all(head).await?;
        loop {
            if let Some(parsed) = parse_head(&mut self.buf)? {
                let (head, framing) = parsed;
                if head.status.is_informational() {
                    // 100 Continue, 103 Early Hints: the real answer follows.
                    // A 101 without an upgrade asked for is not an answer.
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(ExchangeError::Head("101 without an upgrade"));
                    }
                    continue;
                }
                let framing = if is_head
                    || head.status == StatusCode::NO_CONTENT
                    || head.status == StatusCode::NOT_MODIFIED
                {
                    Framing::Length(0)
                } else {
                    framing
                };
                let reusable = head.keep_alive && !matches!(framing, Framing::Eof);
                let mut resp = Response::new(Incoming {
                    conn: Some(self),
                    framing,
                    reusable,
                    ended: false,
                });
                *resp.status_mut() = head.status;
                *resp.version_mut() = head.version;
                *resp.headers_mut() = head.headers;
                resp.body_mut().end_if_done();
                return Ok(resp);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(ExchangeError::Head("longer than 64 KiB"));
            }
            if std::future::poll_fn(|cx| self.poll_read_more(cx)).await? == 0 {
                return Err(if self.buf.is_empty() {
                    ExchangeError::ClosedEarly
                } else {
                    ExchangeError::Head("connection closed inside it")
                });
            }
        }
    }

    /// Read more into the buffer; `Ok(0)` at the connection's end.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(READ);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// The request line and fields, as hyper writes them.
pub fn encode_head<B>(req: &Request<B>) -> Vec<u8> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    keep_alive: bool,
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// At the end of the connection.
    Eof,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

/// A complete response head at the front of `buf` (taken off it), or `None`
/// if more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(Head, Framing)>, ExchangeError> {
    // Uninitialised: httparse writes the fields it finds, and 100 empty ones
    // (3.2 KB) set up for every response cost more than the few it fills.
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ExchangeError::Head("too many fields")),
        Err(_) => return Err(ExchangeError::Head("not HTTP/1.x")),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0))
        .map_err(|_| ExchangeError::Head("bad status code"))?;
    let version = if res.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Names now; values as slices of the head's bytes once it is split off,
    // by their positions in it (no copy). What framing and reuse depend on
    // is noted on the way, rather than looked up in the map afterwards.
    let mut fields = Fields::new(buf);
    let (mut te, mut cl, mut close) = (false, false, false);
    for h in res.headers.iter() {
        let name = header_name(h.name.as_bytes())?;
        if name == TRANSFER_ENCODING {
            te = true;
        } else if name == CONTENT_LENGTH {
            cl = true;
        } else if name == CONNECTION {
            close |= crate::forwarded::connection_closes(h.value);
        }
        fields.push(name, h.value);
    }
    let head_bytes = buf.split_to(len).freeze();
    let mut headers = fields
        .drain_into_map(&head_bytes, 0)
        .ok_or(ExchangeError::Head("bad field value"))?;
    let framing = if te || cl {
        framing(&headers, te)?
    } else {
        Framing::Eof
    };
    // Both framings at once (RFC 9112 §6.3): the transfer coding wins, the
    // length is not passed on, and the connection is not trusted again.
    let smuggled = te && cl;
    if smuggled {
        headers.remove(CONTENT_LENGTH);
    }
    let keep_alive = version == Version::HTTP_11 && !smuggled && !close;
    Ok(Some((
        Head {
            status,
            version,
            headers,
            keep_alive,
        },
        framing,
    )))
}

/// The names an origin sends on nearly every response, lower-case, with the
/// `HeaderName` each stands for (a test holds the two spellings together).
static KNOWN: [(&[u8], HeaderName); 16] = [
    (b"date", header::DATE),
    (b"etag", header::ETAG),
    (b"vary", header::VARY),
    (b"server", header::SERVER),
    (b"expires", header::EXPIRES),
    (b"location", header::LOCATION),
    (b"connection", header::CONNECTION),
    (b"keep-alive", HeaderName::from_static("keep-alive")),
    (b"set-cookie", header::SET_COOKIE),
    (b"content-type", header::CONTENT_TYPE),
    (b"accept-ranges", header::ACCEPT_RANGES),
    (b"cache-control", header::CACHE_CONTROL),
    (b"last-modified", header::LAST_MODIFIED),
    (b"content-length", header::CONTENT_LENGTH),
    (b"content-encoding", header::CONTENT_ENCODING),
    (b"transfer-encoding", header::TRANSFER_ENCODING),
];

/// A field name: the ones an origin sends on nearly every response are
/// matched here, case-insensitively (callgrind: `HeaderName::from_bytes`
/// lower-cases into a scratch buffer and then searches every standard name,
/// about 190 instructions a field); the rest go through it. httparse has
/// checked that `name` is a token, so setting bit 5 of each byte lower-cases
/// letters and changes no other byte a token can hold into a letter, a digit
/// or `-`.
fn header_name(name: &[u8]) -> Result<HeaderName, ExchangeError> {
    for (lower, header) in &KNOWN {
        if lower.len() == name.len() && lower.iter().zip(name).all(|(l, n)| *l == n | 0x20) {
            return Ok(header.clone());
        }
    }
    HeaderName::from_bytes(name).map_err(|_| ExchangeError::Head("bad field name"))
}

/// RFC 9112 §6.3: chunked if it is the last transfer coding, any other
/// transfer coding to the end of the connection, else `Content-Length`
/// (every value the same), else to the end of the connection.
fn framing(headers: &HeaderMap, te: bool) -> Result<Framing, ExchangeError> {
    if te {
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::Eof,
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("x").split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ExchangeError::Head("bad content-length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| ExchangeError::Head("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Head("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Eof, Framing::Length))
}

/// A response body read straight off its connection. When it has ended, the
/// connection is handed out once by [`Incoming::take_reusable`].
#[derive(Debug)]
pub struct Incoming {
    /// Until the end; after it, only if the connection may carry another
    /// request.
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    ended: bool,
}

impl Incoming {
    /// The connection, once the body has ended by its framing and the
    /// connection may carry another request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        if self.ended { self.conn.take() } else { None }
    }

    /// The body has ended: keep the connection only if it can be reused and
    /// nothing was read past the response (the upstream said more than it
    /// framed).
    fn end(&mut self) {
        self.ended = true;
        let clean = self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if !(self.reusable && clean) {
            self.conn = None;
        }
    }

    /// End a body whose length has run out.
    fn end_if_done(&mut self) {
        if self.framing == Framing::Length(0) {
            self.end();
        }
    }

    /// Read more into the connection's buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.conn.as_mut() {
            Some(conn) => conn.poll_read_more(cx),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn buf(&mut self) -> &mut BytesMut {
        &mut self
            .conn
            .as_mut()
            .expect("the body has its connection until it ends")
            .buf
    }

    /// The next data of a chunked body, or `None` at its end.
    fn poll_chunked(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        loop {
            let Framing::Chunked(state) = self.framing else {
                unreachable!("only called for chunked bodies")
            };
            let progressed = match state {
                Chunk::Size => match line(self.buf()) {
                    Some(l) => {
                        let size = chunk_size(&l)?;
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        true
                    }
                    None if self.buf().len() > 4096 => {
                        return Poll::Ready(Err("chunk-size line too long".into()));
                    }
                    None => false,
                },
                Chunk::Data(left) => {
                    let buf = self.buf();
                    if !buf.is_empty() {
                        let n = left.min(buf.len() as u64) as usize;
                        let data = buf.split_to(n).freeze();
                        let left = left - n as u64;
                        self.framing = Framing::Chunked(if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        });
                        return Poll::Ready(Ok(Some(data)));
                    }
                    false
                }
                Chunk::DataEnd => match line(self.buf()) {
                    Some(l) if l.is_empty() => {
                        self.framing = Framing::Chunked(Chunk::Size);
                        true
                    }
                    Some(_) => return Poll::Ready(Err("chunk data longer than its size".into())),
                    None => false,
                },
                Chunk::Trailers => match line(self.buf()) {
                    // Trailer fields are not passed on (nor does the proxy
                    // pass on hyper's); the empty line ends the body.
                    Some(l) if l.is_empty() => {
                        self.end();
                        return Poll::Ready(Ok(None));
                    }
                    Some(_) => true,
                    None if self.buf().len() > MAX_HEAD => {
                        return Poll::Ready(Err("trailers too long".into()));
                    }
                    None => false,
                },
            };
            if !progressed && ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(
                    "upstream closed the connection inside a chunked body".into()
                ));
            }
        }
    }
}

/// One CRLF- (or LF-) ended line off the front of `buf`, without its end.
fn line(buf: &mut BytesMut) -> Option<BytesMut> {
    let at = memchr::memchr(b'\n', buf)?;
    let mut l = buf.split_to(at + 1);
    l.truncate(at);
    if l.last() == Some(&b'\r') {
        l.truncate(at - 1);
    }
    Some(l)
}

/// A chunk-size line's hexadecimal size (extensions after `;` ignored).
fn chunk_size(l: &[u8]) -> Result<u64, BoxError> {
    let hex = l.split(|&b| b == b';').next().unwrap_or_default();
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err("bad chunk size".into());
    }
    Ok(hex.iter().fold(0u64, |n, &b| {
        n * 16 + u64::from((b as char).to_digit(16).unwrap_or(0))
    }))
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match this.framing {
            Framing::Length(left) => {
                if this.buf().is_empty() && ready!(this.poll_fill(cx))? == 0 {
                    return Poll::Ready(Some(Err(
                        "upstream closed the connection before the body's end".into(),
                    )));
                }
                let buf = this.buf();
                let n = left.min(buf.len() as u64) as usize;
                let data = buf.split_to(n).freeze();
                this.framing = Framing::Length(left - n as u64);
                this.end_if_done();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Framing::Chunked(_) => match ready!(this.poll_chunked(cx)) {
                Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e))),
            },
            Framing::Eof => {
                if this.buf().is_empty() && ready!(this.poll_fill(cx))? == 0 {
                    // Never reusable (see `exchange`): the connection goes.
                    this.end();
                    return Poll::Ready(None);
                }
                let data = this.buf().split().freeze();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            _ if self.ended => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
