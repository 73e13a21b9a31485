//! Sockets and lifecycle: one accept loop per listener, HTTP/1.1 and h2c on the
//! same port, a cap on open connections, header-read and idle deadlines, the
//! admin listener, and graceful shutdown on SIGTERM/SIGINT.

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::metrics::{Metrics, SharedMetrics};
use crate::proxy::{self, State};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot build the upstream client: {0}")]
    Client(#[source] io::Error),
    #[error("cannot start the token service: {0}")]
    Tokens(String),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] io::Error),
}

/// A running proxy: its bound addresses and the handle to stop it.
pub struct Running {
    /// Proxy listeners, in config order (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// Admin listener, if enabled.
    pub admin: Option<SocketAddr>,
    pub metrics: SharedMetrics,
    /// The proxy's shared state (route table, clients, token service).
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    admin_stop: watch::Sender<bool>,
    tracker: TaskTracker,
    admin_state: Arc<AdminState>,
    grace: Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests finish within the grace period,
    /// then drop whatever is left. Returns whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin_state.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        self.tracker.close();
        let clean = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        if !clean {
            warn!(
                grace_ms = self.grace.as_millis() as u64,
                "grace period over; closing remaining connections"
            );
        }
        let _ = self.admin_stop.send(true);
        clean
    }
}

/// Bind every listener and start serving. Returns once the sockets are bound.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let metrics: SharedMetrics = Arc::new(Metrics::new());
    let config = Arc::new(config);
    let state = Arc::new(State::new(config.clone(), metrics.clone()).await?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(config.server.max_connections));
    let builder = Arc::new(conn_builder(&config));

    let mut addrs = Vec::new();
    for addr in &config.server.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: *addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: *addr,
            source,
        })?;
        addrs.push(local);
        let ctx = AcceptCtx {
            state: state.clone(),
            builder: builder.clone(),
            limit: limit.clone(),
            shutdown: shutdown_rx.clone(),
            tracker: tracker.clone(),
            idle: config.server.idle_timeout,
        };
        tracker.spawn(accept_loop(listener, ctx));
        info!(addr = %local, "proxy listening");
    }

    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: AtomicBool::new(true),
    });
    let admin = match config.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            // The admin server is not tracked: it must keep answering /readyz
            // with 503 while the proxy drains.
            tokio::spawn(admin_loop(listener, admin_state.clone(), admin_stop_rx));
            info!(addr = %local, "admin listening");
            Some(local)
        }
        None => None,
    };

    Ok(Running {
        addrs,
        admin,
        metrics,
        state,
        shutdown,
        admin_stop,
        tracker,
        admin_state,
        grace: config.server.grace_period,
    })
}

/// Start, wait for SIGTERM or SIGINT, shut down gracefully.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let running = start(config).await?;
    wait_for_signal().await?;
    info!("shutdown signal received; draining");
    let clean = running.shutdown().await;
    info!(clean, "stopped");
    Ok(())
}

async fn wait_for_signal() -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

fn conn_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let s = &config.server;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper's header_read_timeout is inert (measured: slowloris
    // connections held forever), so install one explicitly.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .max_headers(s.max_headers)
        .max_buf_size(s.max_header_bytes.max(8192) + 8192)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(s.h2_max_concurrent_streams)
        .max_header_list_size(s.max_header_bytes as u32)
        .keep_alive_interval(Some(s.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

struct AcceptCtx {
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
    idle: Duration,
}

async fn accept_loop(listener: TcpListener, mut ctx: AcceptCtx) {
    loop {
        // Take a slot before accepting: past the cap, clients wait in the backlog
        // instead of costing memory here.
        let permit = tokio::select! {
            p = ctx.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = ctx.shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ctx.shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let (state, builder, shutdown, idle) = (
            ctx.state.clone(),
            ctx.builder.clone(),
            ctx.shutdown.clone(),
            ctx.idle,
        );
        ctx.tracker.spawn(async move {
            state.metrics.connection_opened();
            serve_conn(tcp, peer, state.clone(), builder, shutdown, idle).await;
            state.metrics.connection_closed();
            drop(permit);
        });
    }
}

async fn serve_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
    idle: Duration,
) {
    let clock = Arc::new(Activity::new());
    let io = IdleIo {
        inner: tcp,
        clock: clock.clone(),
    };
    let svc = service_fn(move |req| proxy::handle(state.clone(), peer, req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = clock.idle_for(idle), if !draining => {
                // No byte either way for `idle`: stop keep-alive. An in-flight
                // response (a quiet SSE stream) still finishes: graceful
                // shutdown waits for it.
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Last I/O time of one connection, in milliseconds since it opened.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once the connection has been idle for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A socket that records when it last moved a byte.
struct IdleIo {
    inner: TcpStream,
    clock: Arc<Activity>,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.clock.touch();
        }
        r
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
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

async fn admin_loop(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            // Stops only after the proxy has drained, so /readyz says 503 meanwhile.
            _ = stop.changed() => return,
        };
        let st = state.clone();
        let conn = builder
            .serve_connection(
                TokioIo::new(tcp),
                service_fn(move |req| admin::handle(st.clone(), req)),
            )
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
