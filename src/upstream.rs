//! The pooled clients that carry requests to upstreams, with a connect deadline
//! (→ 502) and a response-head deadline (→ 504). Bodies are not timed here: SSE
//! and long-polls may stay quiet for as long as they like. Plain `http`
//! upstreams go through the proxy's own HTTP/1.1 pool ([`pool`]), where a
//! GET or HEAD without a body is exchanged by the proxy's own code ([`h1`]);
//! `https` ones through hyper-util's client (TLS, ALPN h2).

mod h1;
mod pool;

pub use pool::PooledBody as UpstreamBody;

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use http::uri::Scheme;
use http::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A cheap-to-clone handle on the connection pool.
#[derive(Clone)]
pub struct Upstream {
    client: HyperClient<HttpsConnector<HttpConnector>, Body>,
    http: pool::Pool,
    response_timeout: std::time::Duration,
}

impl Upstream {
    /// Build the client: http and https (rustls, native roots), HTTP/1.1 with
    /// ALPN h2 where the upstream offers it, idle connections reaped by a timer.
    pub fn new(cfg: &UpstreamConfig) -> std::io::Result<Self> {
        crate::init_crypto();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = if cfg.extra_roots.is_empty() {
            hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?
        } else {
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(cfg)?)
        };
        let https = https
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // Retries only requests that were never written to a pooled
            // connection that turned out closed: nothing reached the upstream.
            .retry_canceled_requests(true)
            .set_host(false)
            .build(https);
        Ok(Upstream {
            client,
            http: pool::Pool::new(cfg),
            response_timeout: cfg.response_timeout,
        })
    }

    /// Send one request and wait for the response head within the deadline.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<UpstreamBody>, ProxyError> {
        let deadline = self.response_timeout;
        if req.uri().scheme() == Some(&Scheme::HTTP) {
            return match tokio::time::timeout(deadline, self.http.send(req)).await {
                Err(_) => Err(ProxyError::UpstreamTimeout),
                Ok(Err(pool::PoolError::Connect(e))) => Err(ProxyError::UpstreamConnect(e)),
                Ok(Err(pool::PoolError::Request(e))) => Err(ProxyError::Upstream(e.into())),
                Ok(Err(pool::PoolError::Exchange(e))) => Err(ProxyError::Upstream(e.into())),
                Ok(Ok(resp)) => Ok(resp),
            };
        }
        match tokio::time::timeout(deadline, self.client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamConnect(e.into())),
            Ok(Err(e)) => Err(ProxyError::Upstream(e.into())),
            Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::unpooled)),
        }
    }
}

/// TLS for `https` upstreams with `upstream.ca_file`: the system's roots (as
/// without it, where there are any) and the file's certificates.
fn tls_config(cfg: &UpstreamConfig) -> std::io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped, as hyper-rustls does; the
    // file's own certificates are enough for the upstreams that need them.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for cert in &cfg.extra_roots {
        roots.add(cert.clone()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("upstream.ca_file: a certificate is not usable as a root: {e}"),
            )
        })?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}
