//! The proxy's own HTTP/1.1 server side, for the requests nearly every page
//! load is made of: a GET or HEAD with no body, no upgrade, no `Expect` and no
//! `TE`. It reads the head, calls [`proxy::handle`] in the connection's own
//! task, and writes the response head and the body's frames as they come.
//!
//! Why: hyper's server connection (its dispatcher, buffers and per-request
//! service call) was about a quarter of the instructions of a plain hop
//! (bench/README.md). What it does for these requests is small enough to do
//! here; what it does for everything else is not.
//!
//! So anything else is handed to hyper with the bytes read so far
//! ([`End::HandOver`]): a request body, an upgrade, `Expect`, `TE`, HTTP/1.0,
//! another method, a head that does not parse, one too long, or too many
//! fields. hyper reads those bytes first and serves the connection from there,
//! with its own answers (400, 431) for what is malformed.
//!
//! Between requests the connection holds no buffer: an idle keep-alive
//! connection costs its socket and this task only, and counts as parked.

use super::{Builders, IdleIo, InFlight};
use crate::body::{Chunks, Gather};
use crate::fields::{self, Fields};
use crate::forwarded;
use crate::proxy::{self, State};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderName};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// Fields a head may have on this path; more is hyper's (and its `max_headers`).
const MAX_FIELDS: usize = 64;
/// Read buffer reserved for the rest of a head that did not come whole.
const READ_BUF: usize = 8 * 1024;
/// The first read of a request, on the stack (a head is usually a few
/// hundred bytes; a longer one is read on in `READ_BUF` steps).
const FIRST_READ: usize = 4 * 1024;

/// How serving ended.
pub(super) enum End {
    /// The connection is done: closed by either side, timed out, shut down.
    Closed,
    /// hyper takes the connection over; these bytes were read and not served.
    HandOver(Bytes),
}

/// Serve requests on `io` until the connection ends or a request is not one
/// this path takes. `io.prefix` (bytes read before) is read first.
pub(super) async fn serve(
    io: &mut IdleIo,
    peer: SocketAddr,
    state: &Arc<State>,
    builders: &Builders,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&std::mem::take(&mut io.prefix));
    // One idle deadline for the connection's life, moved on by every byte
    // (`Activity::touch`): polled while waiting, never re-armed per request.
    let clock = io.clock.clone();
    let idle = clock.idle_for(builders.idle);
    tokio::pin!(idle);
    loop {
        let head = match next_head(io, &mut buf, state, builders, shutdown, idle.as_mut()).await {
            Next::Head(head) => head,
            Next::Closed => return End::Closed,
            Next::HandOver => return End::HandOver(buf.freeze()),
        };
        let is_head = head.req.method() == Method::HEAD;
        let wants_close = head.close;
        let guard = InFlight::begin(&io.clock, false);
        // Boxed: the handling's state machine is several KiB, and this task
        // lives as long as the connection (idle ones included).
        let resp = match Box::pin(proxy::handle(state.clone(), peer, head.req, guard)).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let keep_alive = !wants_close && !*shutdown.borrow();
        match respond(io, &mut buf, resp, is_head, keep_alive).await {
            Ok(true) => io.clock.touch(),
            Ok(false) | Err(_) => {
                let _ = io.inner.shutdown().await;
                return End::Closed;
            }
        }
    }
}

/// A parsed request head this path serves.
struct Head {
    req: Request<crate::body::Body>,
    /// The client asked to close after this response.
    close: bool,
}

// Returned once a request and taken apart at once: boxing the head would
// add an allocation a request to save a move.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(Head),
    Closed,
    HandOver,
}

/// Read until `buf` starts with a whole head, waiting between requests with
/// no buffer held.
async fn next_head(
    io: &mut IdleIo,
    buf: &mut BytesMut,
    state: &State,
    builders: &Builders,
    shutdown: &mut watch::Receiver<bool>,
    mut idle: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Next {
    let max_buf = builders.max_buf;
    let header_read_timeout = builders.header_read_timeout;
    let mut head_deadline =
        (!buf.is_empty()).then(|| tokio::time::Instant::now() + header_read_timeout);
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Head(head) => return Next::Head(head),
                Parsed::Other => return Next::HandOver,
                Parsed::Partial if buf.len() >= max_buf => return Next::HandOver,
                Parsed::Partial => {}
            }
        }
        let got = match head_deadline {
            None => {
                // Between requests: no buffer, no timer of our own; the idle
                // deadline and shutdown end the wait.
                if *shutdown.borrow() {
                    return Next::Closed;
                }
                *buf = BytesMut::new();
                state.metrics.connection_parked();
                let woke = tokio::select! {
                    biased;
                    r = io.inner.readable() => r.is_ok(),
                    _ = shutdown.changed() => false,
                    _ = idle.as_mut() => false,
                };
                state.metrics.connection_unparked();
                if !woke {
                    return Next::Closed;
                }
                // Read on the stack, kept in a buffer of the head's size: an
                // 8 KiB buffer per request cost more in malloc than the read.
                let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
                let mut first = ReadBuf::uninit(&mut first);
                let read =
                    std::future::poll_fn(|cx| Pin::new(&mut io.inner).poll_read(cx, &mut first));
                match read.now_or_never() {
                    Some(Ok(())) => {
                        buf.extend_from_slice(first.filled());
                        Ok(first.filled().len())
                    }
                    Some(Err(e)) => Err(e),
                    None => continue, // woken for nothing: wait again
                }
            }
            // Part of a head: the whole head within `header_read_timeout`
            // of its first byte.
            Some(deadline) => {
                buf.reserve(READ_BUF);
                match tokio::time::timeout_at(deadline, io.inner.read_buf(buf)).await {
                    Ok(r) => r,
                    Err(_) => return Next::Closed,
                }
            }
        };
        match got {
            Ok(0) | Err(_) => return Next::Closed,
            Ok(_) => {
                io.clock.touch();
                head_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + header_read_timeout);
            }
        }
    }
}

#[allow(clippy::large_enum_variant)] // as `Next`
enum Parsed {
    Head(Head),
    Partial,
    /// Not for this path: hyper's.
    Other,
}

/// Parse the head at the start of `buf`; on success it is split off `buf`
/// and the request's fields are slices of it.
fn parse(buf: &mut BytesMut) -> Parsed {
    // Uninitialised: filling 64 empty fields first cost more than parsing.
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let base = buf.as_ptr() as usize;
    let path_at = req.path.map_or(0, |p| p.as_ptr() as usize - base);
    let path_len = req.path.map_or(0, str::len);
    // Names now, values once the head is split off (as ranges of it).
    let mut fields = Fields::new(buf);
    let mut close = false;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Other;
        };
        // A body, an upgrade, an expectation or trailers: hyper's.
        if matches!(
            name,
            header::CONTENT_LENGTH
                | header::TRANSFER_ENCODING
                | header::UPGRADE
                | header::EXPECT
                | header::TE
        ) {
            return Parsed::Other;
        }
        if name == header::CONNECTION && forwarded::connection_closes(h.value) {
            close = true;
        }
        fields.push(name, h.value);
    }
    let head = buf.split_to(len).freeze();
    let build = |fields: &mut Fields| -> Option<Request<crate::body::Body>> {
        let uri = Uri::from_maybe_shared(head.slice(path_at..path_at + path_len)).ok()?;
        // Room for the forwarded fields the proxy adds, so the map does not grow.
        let headers = fields.drain_into_map(&head, 6)?;
        let mut request = Request::new(crate::body::empty());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Some(request)
    };
    match build(&mut fields) {
        Some(req) => Parsed::Head(Head { req, close }),
        None => {
            // hyper answers what the URI or a value is wrong with: it gets
            // the head back in front of what follows it.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Other
        }
    }
}

/// How the body goes out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    /// Exactly this many bytes (none for HEAD, 204, 304).
    Length(u64),
    Chunked,
}

/// Write the response; `Ok(true)` if the connection may serve another request.
async fn respond(
    io: &mut IdleIo,
    buf: &mut BytesMut,
    resp: Response<Gather>,
    is_head: bool,
    mut keep_alive: bool,
) -> std::io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let mut head = Vec::with_capacity(256 + parts.headers.len() * 32);
    let (framing, closes) = encode_head(&parts, &body, is_head, keep_alive, &mut head);
    fields::give_back(parts.headers);
    keep_alive &= !closes;
    let Framing::Length(mut left) = framing else {
        return stream_chunked(io, buf, head, &mut body, keep_alive).await;
    };
    if left == 0 {
        io.inner.write_all(&head).await?;
        return Ok(keep_alive);
    }
    // The head goes out with the first frame when that is ready now (one
    // write for a page read in one piece), alone when it is not (a paused
    // page's head is not held back).
    let mut pending_head = Some(head);
    loop {
        let frame = match next_frame(io, buf, &mut body, &mut pending_head).await? {
            Some(frame) => frame,
            // Ended short of its length: the client must not take it as whole.
            None => return Ok(false),
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers: not on this path (no `TE: trailers`)
        };
        let n = data.remaining() as u64;
        if n > left {
            return Ok(false); // longer than its length: cut, and close
        }
        left -= n;
        match pending_head.take() {
            Some(h) => write_buf(io, &mut Bytes::from(h).chain(&mut data)).await?,
            None => write_buf(io, &mut data).await?,
        }
        if left == 0 {
            return Ok(keep_alive);
        }
    }
}

/// A chunked body (length unknown up front): each frame as one chunk. The
/// last chunk goes out with the last data when the body's end is already
/// known then (a rewritten page read in one piece: one write, not two).
async fn stream_chunked(
    io: &mut IdleIo,
    buf: &mut BytesMut,
    head: Vec<u8>,
    body: &mut Gather,
    keep_alive: bool,
) -> std::io::Result<bool> {
    let mut pending_head = Some(head);
    let mut ahead = None;
    loop {
        let frame = match ahead.take() {
            Some(frame) => Some(frame),
            None => next_frame(io, buf, body, &mut pending_head).await?,
        };
        let mut out = pending_head.take().unwrap_or_default();
        let Some(frame) = frame else {
            out.extend_from_slice(b"0\r\n\r\n");
            write_buf(io, &mut Bytes::from(out)).await?;
            return Ok(keep_alive);
        };
        // Trailers (not on this path) and empty frames write nothing; an
        // unsent head waits for the next frame.
        let data = match frame.into_data() {
            Ok(data) if data.has_remaining() => data,
            _ => {
                pending_head = (!out.is_empty()).then_some(out);
                continue;
            }
        };
        hex_line(&mut out, data.remaining());
        // Is the body done? Only what is ready now is looked at.
        let ended = match body.frame().now_or_never() {
            Some(None) => true,
            Some(Some(next)) => {
                ahead = Some(next.map_err(std::io::Error::other)?);
                false
            }
            None => false,
        };
        let tail: &'static [u8] = if ended { b"\r\n0\r\n\r\n" } else { b"\r\n" };
        write_buf(io, &mut Bytes::from(out).chain(data).chain(tail)).await?;
        if ended {
            return Ok(keep_alive);
        }
    }
}

/// The body's next frame. When it is not ready at once, `head` (if still
/// unsent) goes out first, alone, and the client is watched meanwhile: a client that closes ends
/// the response (its upstream is let go); bytes it sends (a pipelined
/// request) are kept for later.
async fn next_frame(
    io: &mut IdleIo,
    buf: &mut BytesMut,
    body: &mut Gather,
    head: &mut Option<Vec<u8>>,
) -> std::io::Result<Option<http_body::Frame<Chunks>>> {
    if let Some(ready) = body.frame().now_or_never() {
        return ready.transpose().map_err(std::io::Error::other);
    }
    if let Some(head) = head.take() {
        io.inner.write_all(&head).await?;
    }
    // Bytes already held (a pipelined request) are enough to go on with.
    let mut watching = buf.is_empty();
    loop {
        tokio::select! {
            biased;
            frame = body.frame() => {
                return frame.transpose().map_err(std::io::Error::other);
            }
            r = io.inner.readable(), if watching => {
                r?;
                buf.reserve(READ_BUF);
                match io.inner.read_buf(buf).now_or_never() {
                    Some(Ok(0)) => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(_)) => watching = false,
                    None => {}
                }
            }
        }
    }
}

/// A chunk-size line: the size in hex and CRLF.
fn hex_line(dst: &mut Vec<u8>, n: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        dst.push(DIGITS[(n >> (4 * i)) & 0xf]);
    }
    dst.extend_from_slice(b"\r\n");
}

async fn write_buf(io: &mut IdleIo, data: &mut impl Buf) -> std::io::Result<()> {
    // Activity is noted once a response, when it ends (`serve`): the idle
    // deadline is only read between requests.
    io.inner.write_all_buf(data).await
}

/// The response head as hyper's server writes it for these requests, and
/// how the body is framed:
/// - `content-length` from the header, else from a body of known size;
///   chunked otherwise;
/// - no body for HEAD, 1xx, 204 and 304; a HEAD keeps the length it was
///   given, an empty body of another response is `content-length: 0` where
///   a length may be sent at all (not 1xx, 204, 304);
/// - `connection: close` when the connection ends after this response;
/// - `date` unless the response has one.
///
/// Also says whether the response itself closes the connection. One pass over the fields, noting what the framing needs, rather than a
/// hashed lookup per rule.
fn encode_head(
    parts: &http::response::Parts,
    body: &Gather,
    is_head: bool,
    keep_alive: bool,
    dst: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodyless = is_head || no_length || status == StatusCode::NOT_MODIFIED;
    let empty = body.is_end_stream();
    // The given length is passed on unless nothing may carry one, or the
    // body is empty (and this is not a HEAD, whose length is the page's).
    let keep_length = !no_length && (!empty || is_head);
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let (mut given, mut saw_date, mut saw_close) = (None, false, false);
    for (name, value) in parts.headers.iter() {
        match *name {
            // Hop-by-hop (the proxy strips it); the framing is ours.
            header::TRANSFER_ENCODING => continue,
            header::CONTENT_LENGTH => {
                if given.is_none() {
                    given = std::str::from_utf8(value.as_bytes())
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok());
                }
                if !keep_length {
                    continue;
                }
            }
            header::DATE => saw_date = true,
            header::CONNECTION => saw_close |= forwarded::connection_closes(value.as_bytes()),
            _ => {}
        }
        line(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if empty {
        if !bodyless {
            line(dst, b"content-length", b"0");
        }
        Framing::Length(0)
    } else if bodyless {
        Framing::Length(0)
    } else if let Some(n) = given {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        line(dst, b"content-length", n.to_string().as_bytes());
        Framing::Length(n)
    } else {
        line(dst, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if !keep_alive && !saw_close {
        line(dst, b"connection", b"close");
    }
    if !saw_date {
        dst.extend_from_slice(b"date: ");
        date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    // A response that says `connection: close` ends the connection.
    (framing, saw_close)
}

fn line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Today's `date` value, formatted once a second per thread.
fn date(dst: &mut Vec<u8>) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (
                secs,
                httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)),
            );
        }
        dst.put_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
#[path = "h1/tests.rs"]
mod tests;
