//! Sockets and lifecycle: one accept loop per listener, a cap on open
//! connections, the admin listener, and graceful shutdown on SIGTERM/SIGINT.
//! Each accepted connection is served by [`crate::conn`].

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::conn;
use crate::metrics::{Metrics, SharedMetrics};
use crate::proxy::State;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
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
    let builders = Arc::new(conn::Builders::new(&config));

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
            builders: builders.clone(),
            limit: limit.clone(),
            shutdown: shutdown_rx.clone(),
            tracker: tracker.clone(),
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

struct AcceptCtx {
    state: Arc<State>,
    builders: Arc<conn::Builders>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
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
        let (state, builders, shutdown) = (
            ctx.state.clone(),
            ctx.builders.clone(),
            ctx.shutdown.clone(),
        );
        ctx.tracker.spawn(async move {
            state.metrics.connection_opened();
            conn::serve(tcp, peer, state.clone(), builders, shutdown).await;
            state.metrics.connection_closed();
            drop(permit);
        });
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
