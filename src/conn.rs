//! One client connection: HTTP/1.1 or h2c (prior knowledge) on the same port,
//! the idle deadline, graceful shutdown, and parking.
//!
//! HTTP/1.1 requests start on the proxy's own server path ([`h1`]), which
//! serves plain page loads (GET and HEAD without a body or upgrade) in this
//! task. The first request it does not take goes to hyper's connection with
//! the bytes read so far, and hyper serves the connection from there.
//!
//! Parking: hyper keeps about 16 KiB of buffers per HTTP/1 connection for as
//! long as it lives (an 8 KiB read buffer and an 8 KiB header buffer, both
//! allocated up front). A keep-alive connection that has been quiet for
//! [`PARK_AFTER`] between requests gives that state back: hyper hands over the
//! socket and any bytes it read but did not parse ([`http1::Connection::into_parts`]),
//! and the connection goes back to the own path, which holds no buffer while
//! it waits (and counts as parked meanwhile). nginx does the same with its
//! idle keep-alive connections; it is what lets 10,000 of them fit in little
//! memory.
//!
//! A connection is only parked when nothing can be lost: no request in flight
//! (every response body finished), no write the socket refused, no bytes read
//! since the last request was dispatched, and no request body ever carried on
//! it (hyper could still be reading one whose response went out early).

use crate::body::Gather;
use crate::config::Config;
use crate::proxy::{self, State};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod h1;

/// How long an HTTP/1 keep-alive connection must be quiet before it is parked.
/// Long enough that a connection in use (a page and its assets, a load test)
/// sends its next request first and does not pay for a new hyper connection
/// per request; short enough that a burst of new connections does not hold
/// all their buffers at once. The allocator keeps what that peak took: 10,000
/// connections opened in under 2 s left the proxy at 164 MB with 500 ms and
/// at 80 MB with 100 ms (bench/README.md).
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// The HTTP/2 connection preface a prior-knowledge h2c client starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connection settings, built once from the config.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle: Duration,
    /// Bytes of a head the own path reads before leaving it to hyper (the
    /// same cap hyper's buffer has).
    max_buf: usize,
}

impl Builders {
    pub fn new(config: &Config) -> Self {
        let s = &config.server;
        let max_buf = s.max_header_bytes.max(8192) + 8192;
        let mut h1 = http1::Builder::new();
        // Without a timer hyper's header_read_timeout is inert (measured: slowloris
        // connections held forever), so install one explicitly.
        h1.timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_headers(s.max_headers)
            .max_buf_size(max_buf)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(s.h2_max_concurrent_streams)
            .max_header_list_size(s.max_header_bytes as u32)
            .keep_alive_interval(Some(s.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders {
            h1,
            h2,
            header_read_timeout: s.header_read_timeout,
            idle: s.idle_timeout,
            max_buf,
        }
    }
}

/// Serve one accepted connection until it closes, the server shuts down, or it
/// has been idle for `server.idle_timeout`.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    builders: Arc<Builders>,
    mut shutdown: watch::Receiver<bool>,
) {
    let clock = Arc::new(Activity::new());
    let mut io = IdleIo {
        inner: tcp,
        clock: clock.clone(),
        prefix: Bytes::new(),
    };
    let h2 = match tokio::time::timeout(builders.header_read_timeout, sniff(&mut io)).await {
        Ok(Ok(Some(h2))) => h2,
        // Closed, failed or silent before the first request.
        Ok(Ok(None) | Err(_)) | Err(_) => return,
    };
    if h2 {
        let svc = service(state, peer, clock.clone());
        let conn = builders.h2.serve_connection(TokioIo::new(io), svc);
        drive(Box::pin(conn), &clock, &builders, &mut shutdown, false).await;
        return;
    }
    loop {
        // Plain page loads on the proxy's own path (h1.rs); hyper from the
        // first request that path does not take.
        match h1::serve(&mut io, peer, &state, &builders, &mut shutdown).await {
            h1::End::Closed => return,
            h1::End::HandOver(read) => io.prefix = read,
        }
        let svc = service(state.clone(), peer, clock.clone());
        let conn = Box::pin(
            builders
                .h1
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades(),
        );
        let Some(conn) = drive(conn, &clock, &builders, &mut shutdown, true).await else {
            return;
        };
        // Parked: keep the socket and whatever hyper had read, drop the rest,
        // and wait on the own path, which holds no buffer while it waits.
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return; // upgraded meanwhile: the tunnel owns the socket
        };
        let http1::Parts {
            io: parked,
            read_buf,
            ..
        } = parts;
        io = parked.into_inner();
        io.prefix = Bytes::copy_from_slice(&read_buf);
    }
}

/// Read until the bytes so far are, or cannot be, the h2c preface. `None` if
/// the client closed first. What was read is kept as the IO's prefix.
async fn sniff(io: &mut IdleIo) -> io::Result<Option<bool>> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    while n < buf.len() {
        let got = io.inner.read(&mut buf[n..]).await?;
        if got == 0 {
            return Ok(None);
        }
        io.clock.touch();
        n += got;
        if buf[..n] != H2_PREFACE[..n] {
            break;
        }
    }
    io.prefix = Bytes::copy_from_slice(&buf[..n]);
    Ok(Some(buf[..n] == *H2_PREFACE))
}

/// One request's handling, boxed (see [`service`]).
type Handling = Pin<Box<dyn Future<Output = Result<Response<Gather>, Infallible>> + Send>>;

/// The service of one connection: [`proxy::handle`], boxed, with each request
/// counted in flight until its response body (the access-log body, which
/// holds the guard) is dropped.
fn service(
    state: Arc<State>,
    peer: SocketAddr,
    clock: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Gather>,
    Error = Infallible,
    Future = Handling,
> + Clone {
    service_fn(move |req: Request<Incoming>| {
        let guard = InFlight::begin(&clock, !http_body::Body::is_end_stream(req.body()));
        // Boxed: hyper keeps one slot of the service future's size per
        // connection for its whole life, and `handle`'s state machine is
        // several KiB. Boxing makes it a per-request allocation.
        Box::pin(proxy::handle(
            state.clone(),
            peer,
            req.map(crate::body::boxed),
            guard,
        )) as Handling
    })
}

/// Poll a connection until it ends (`None`) or may be parked (`Some`).
async fn drive<C>(
    mut conn: Pin<Box<C>>,
    clock: &Activity,
    builders: &Builders,
    shutdown: &mut watch::Receiver<bool>,
    park: bool,
) -> Option<Pin<Box<C>>>
where
    C: Future<Output = hyper::Result<()>> + Shutdown,
{
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return None;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().shutdown();
            }
            _ = clock.idle_for(builders.idle), if !draining => {
                // No byte either way for `idle`: stop keep-alive. An in-flight
                // response (a quiet SSE stream) still finishes: graceful
                // shutdown waits for it.
                draining = true;
                conn.as_mut().shutdown();
            }
            _ = clock.parkable(PARK_AFTER), if park && !draining => {
                return Some(conn);
            }
        }
    }
}

/// Graceful shutdown, for either protocol.
trait Shutdown {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S> Shutdown for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = Gather>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Shutdown for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = Gather>,
    S::Future: Send + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What one connection has been doing, shared by its socket wrapper, its
/// requests and the task driving it.
struct Activity {
    start: Instant,
    /// Last byte moved either way, in milliseconds since `start`.
    last_ms: AtomicU64,
    /// Requests whose response body has not finished yet.
    in_flight: AtomicUsize,
    /// Bytes were read after the last request was dispatched (a partial head).
    unparsed: AtomicBool,
    /// The socket refused a write that hyper has not retried yet.
    write_blocked: AtomicBool,
    /// A request on this connection carried a body: never park it (see module docs).
    had_body: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            unparsed: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            had_body: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_since(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the connection has been idle for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.quiet_since() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    /// Resolves once the connection has been quiet for `after` with nothing
    /// that parking could lose (see the module docs).
    async fn parkable(&self, after: Duration) {
        loop {
            let deadline = self.quiet_since() + after;
            if Instant::now() >= deadline && self.can_park() {
                return;
            }
            tokio::time::sleep_until(deadline.max(Instant::now() + after).into()).await;
        }
    }

    fn can_park(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && !self.unparsed.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.had_body.load(Ordering::Relaxed)
    }
}

/// One request in flight, until its response body is dropped.
#[must_use]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(clock: &Arc<Activity>, has_body: bool) -> Self {
        clock.in_flight.fetch_add(1, Ordering::Relaxed);
        clock.unparsed.store(false, Ordering::Relaxed);
        if has_body {
            clock.had_body.store(true, Ordering::Relaxed);
        }
        InFlight(clock.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records when it last moved a byte, and first replays
/// `prefix` (bytes read before hyper took over).
struct IdleIo {
    inner: TcpStream,
    clock: Arc<Activity>,
    prefix: Bytes,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.clock.touch();
            self.clock.unparsed.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl IdleIo {
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) => {
                self.clock.write_blocked.store(false, Ordering::Relaxed);
                if *n > 0 {
                    self.clock.touch();
                }
            }
            Poll::Pending => self.clock.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
