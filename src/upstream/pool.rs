//! Keep-alive HTTP/1.1 connections to plain-`http` upstreams, driven in the
//! proxy's own tasks.
//!
//! hyper-util's pooled client costs a request about 10,000 instructions on the
//! 2 KB bench page, a fifth of the whole hop: a SipHash of the pool key on
//! checkout and again on return, a large request future built and then moved
//! into a box, and a task spawned per response to wait for the connection to
//! be ready again (bench/README.md, "What profiling found"). Here a connection
//! is leased with its response body and handed back when that body ends, so
//! nothing waits in a task of its own, and the pool is keyed by a short string
//! with foldhash. hyper-util still carries `https` upstreams (TLS, ALPN h2).
//!
//! A GET or HEAD with no body and no upgrade (nearly every page load) does not
//! use hyper's connection at all: [`h1`] writes its head and reads the
//! response in the proxy's own task, on connections pooled apart from
//! hyper's.
//!
//! What hyper-util gave and this keeps: idle connections expire after
//! `upstream.pool_idle_timeout`, at most `pool_max_idle_per_host` wait per
//! upstream, a connect deadline, and a request that was never written to a
//! pooled connection found closed is sent again on another (nothing reached
//! the upstream, so even a POST is safe); once written, never again.

use super::h1;
use crate::body::{Body, BoxError};
use crate::config::UpstreamConfig;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why a request got no response from the pool.
#[derive(Debug)]
pub enum PoolError {
    /// No TCP connection (refused, unresolvable, or past the deadline).
    Connect(BoxError),
    /// The connection failed while sending or before the response head.
    Request(hyper::Error),
    /// The same, on the proxy's own exchange.
    Exchange(h1::ExchangeError),
}

type Sender = http1::SendRequest<Body>;
type Idle<C> = HashMap<Arc<str>, Vec<(C, Instant)>, foldhash::fast::RandomState>;

/// A cheap-to-clone handle on the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Idle connections per `host:port`, the most recently used last.
    idle: Mutex<Idle<Sender>>,
    /// The same for the own exchange's connections.
    idle_own: Mutex<Idle<h1::Conn>>,
    idle_timeout: Duration,
    max_idle: usize,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(cfg: &UpstreamConfig) -> Pool {
        let inner = Arc::new(Inner {
            idle: Mutex::new(Idle::default()),
            idle_own: Mutex::new(Idle::default()),
            idle_timeout: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle_per_host,
            connect_timeout: cfg.connect_timeout,
        });
        // Idle connections hold a socket on both sides: close the expired ones
        // even when no request comes to take them. The reaper ends with the pool.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&inner)));
        }
        Pool { inner }
    }

    /// Send `req` (absolute URI, `http` scheme) on a pooled or new connection.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<PooledBody>, PoolError> {
        // The upstream gets the origin form, as from any client.
        let origin_form = req
            .uri()
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        let uri = std::mem::replace(req.uri_mut(), origin_form);
        // Keyed by the authority as configured: no allocation per request.
        let key = uri
            .authority()
            .ok_or_else(|| PoolError::Connect("upstream URI has no authority".into()))?
            .as_str();
        if h1::eligible(&req) {
            return self.exchange(req, &uri, key).await;
        }
        loop {
            let (key, mut sender, reused) = match self.checkout(key) {
                Some((key, sender)) => (key, sender, true),
                None => (Arc::from(key), self.connect(&uri).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // A 101 hands the connection to the upgrade: never pooled.
                    let lease = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
                        pool: Arc::downgrade(&self.inner),
                        key,
                        sender,
                    });
                    return Ok(resp.map(|body| PooledBody::new(body, lease)));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the pooled connection had closed under us.
                    Some(r) if reused => req = r,
                    _ => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
    }

    /// [`send`](Self::send) for a request [`h1::eligible`] takes.
    async fn exchange(
        &self,
        req: Request<Body>,
        uri: &Uri,
        key: &str,
    ) -> Result<Response<PooledBody>, PoolError> {
        // Encoded before any wait: the request's body type is not `Sync`,
        // so the future may not hold a reference to it.
        let head = h1::encode_head(&req);
        let is_head = req.method() == http::Method::HEAD;
        crate::fields::give_back(req.into_parts().0.headers);
        loop {
            let (key, conn, reused) = match self.checkout_own(key) {
                Some((key, conn)) => (key, conn, true),
                None => (
                    Arc::from(key),
                    h1::Conn::new(self.connect_tcp(uri).await?),
                    false,
                ),
            };
            match conn.exchange(&head, is_head).await {
                Ok(resp) => {
                    let home = (Arc::downgrade(&self.inner), key);
                    return Ok(resp.map(|body| PooledBody::own(body, home)));
                }
                // A pooled connection the upstream had closed: nothing of a
                // response came, and a GET or HEAD may be sent again.
                Err(e) if reused && e.before_response() => continue,
                Err(e) => return Err(PoolError::Exchange(e)),
            }
        }
    }

    fn checkout_own(&self, key: &str) -> Option<(Arc<str>, h1::Conn)> {
        take_idle(
            &self.inner.idle_own,
            key,
            self.inner.idle_timeout,
            h1::Conn::is_open,
        )
    }

    /// The most recently used idle connection to `key` that is still open.
    /// Only free connections are in the list (see [`Lease::give_back`]), so
    /// this never waits: a wait here could queue one client's request behind
    /// another's slow upload.
    fn checkout(&self, key: &str) -> Option<(Arc<str>, Sender)> {
        take_idle(
            &self.inner.idle,
            key,
            self.inner.idle_timeout,
            Sender::is_ready,
        )
    }

    async fn connect(&self, uri: &Uri) -> Result<Sender, PoolError> {
        let stream = self.connect_tcp(uri).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_tcp(&self, uri: &Uri) -> Result<TcpStream, PoolError> {
        let host = uri.host().unwrap_or_default();
        // `[::1]` in a URI, `::1` to the resolver.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(
            self.inner.connect_timeout,
            TcpStream::connect((host, port)),
        )
        .await
        {
            Err(_) => return Err(PoolError::Connect("connect timed out".into())),
            Ok(Err(e)) => return Err(PoolError::Connect(e.into())),
            Ok(Ok(s)) => s,
        };
        // Heads and small bodies go out at once, not after Nagle's wait.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Inner {
    fn put(&self, key: Arc<str>, sender: Sender) {
        put(&self.idle, self.max_idle, key, sender);
    }

    fn put_own(&self, key: Arc<str>, conn: h1::Conn) {
        put(&self.idle_own, self.max_idle, key, conn);
    }
}

/// The most recently used idle connection to `key` younger than `timeout`
/// that `usable` accepts; the older and unusable ones met on the way go.
fn take_idle<C>(
    idle: &Mutex<Idle<C>>,
    key: &str,
    timeout: Duration,
    usable: impl Fn(&C) -> bool,
) -> Option<(Arc<str>, C)> {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    let key = Arc::clone(idle.get_key_value(key)?.0);
    let list = idle.get_mut(&*key)?;
    while let Some((conn, since)) = list.pop() {
        if since.elapsed() < timeout && usable(&conn) {
            return Some((key, conn));
        }
    }
    None
}

/// Drop the idle connections older than `timeout` or no longer `open`.
fn expire<C>(idle: &Mutex<Idle<C>>, timeout: Duration, open: impl Fn(&C) -> bool) {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    for list in idle.values_mut() {
        list.retain(|(c, since)| since.elapsed() < timeout && open(c));
    }
    idle.retain(|_, list| !list.is_empty());
}

fn put<C>(idle: &Mutex<Idle<C>>, max: usize, key: Arc<str>, conn: C) {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    let list = idle.entry(key).or_default();
    if list.len() < max {
        list.push((conn, Instant::now()));
    }
}

async fn reap(pool: Weak<Inner>) {
    let every = {
        let Some(p) = pool.upgrade() else { return };
        (p.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(5))
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(p) = pool.upgrade() else { return };
        expire(&p.idle, p.idle_timeout, |s| !s.is_closed());
        expire(&p.idle_own, p.idle_timeout, h1::Conn::is_open);
    }
}

/// A pooled connection out with one response; back to the pool when its body
/// has ended, dropped (and so closed) if the body was abandoned or failed.
struct Lease {
    pool: Weak<Inner>,
    key: Arc<str>,
    sender: Sender,
}

impl Lease {
    /// Back to the pool once the connection is free for the next request.
    /// Its task has usually seen the end of the response before the body's
    /// reader has, so it is free now; otherwise (the request body still
    /// going out, say) a small task waits for it, as hyper-util's pool does.
    fn give_back(self) {
        let Lease {
            pool,
            key,
            mut sender,
        } = self;
        let Some(p) = pool.upgrade() else { return };
        if sender.is_closed() || p.max_idle == 0 {
            return;
        }
        if sender.is_ready() {
            p.put(key, sender);
            return;
        }
        // The waiting task holds the pool weakly: it must not outlive it.
        drop(p);
        // Dropped outside the runtime (at shutdown): the connection just closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if sender.ready().await.is_ok()
                    && let Some(p) = pool.upgrade()
                {
                    p.put(key, sender);
                }
            });
        }
    }
}

/// An upstream response body that gives its connection back when it ends.
pub struct PooledBody {
    inner: Source,
    lease: Option<Lease>,
}

enum Source {
    Hyper(Incoming),
    /// The own exchange's body, and the pool and key its connection goes
    /// back to (taken when it does).
    Own(h1::Incoming, Option<(Weak<Inner>, Arc<str>)>),
}

impl PooledBody {
    /// A body whose connection belongs to someone else (hyper-util's pool).
    pub fn unpooled(inner: Incoming) -> PooledBody {
        PooledBody {
            inner: Source::Hyper(inner),
            lease: None,
        }
    }

    fn new(inner: Incoming, lease: Option<Lease>) -> PooledBody {
        let mut body = PooledBody {
            inner: Source::Hyper(inner),
            lease,
        };
        body.release_if_ended();
        body
    }

    fn own(inner: h1::Incoming, home: (Weak<Inner>, Arc<str>)) -> PooledBody {
        let mut body = PooledBody {
            inner: Source::Own(inner, Some(home)),
            lease: None,
        };
        body.release_if_ended();
        body
    }

    /// A reader may stop at `is_end_stream()` without polling for the end
    /// (hyper does with a known length), so that counts as ended too.
    fn release_if_ended(&mut self) {
        match &mut self.inner {
            Source::Hyper(inner) => {
                if inner.is_end_stream()
                    && let Some(lease) = self.lease.take()
                {
                    lease.give_back();
                }
            }
            Source::Own(inner, home) => {
                if inner.is_end_stream()
                    && let Some(conn) = inner.take_reusable()
                    && let Some((pool, key)) = home.take()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.put_own(key, conn);
                }
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Source::Hyper(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Source::Own(inner, _) => Pin::new(inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = this.lease.take() {
                    lease.give_back();
                }
                this.release_if_ended();
            }
            Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Ready(Some(Ok(_))) => this.release_if_ended(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Hyper(inner) => inner.is_end_stream(),
            Source::Own(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Hyper(inner) => inner.size_hint(),
            Source::Own(inner, _) => inner.size_hint(),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        self.release_if_ended();
    }
}
