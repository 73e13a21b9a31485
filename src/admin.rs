//! The admin listener: `/healthz` (the process is up), `/readyz` (it accepts
//! traffic; 503 while draining) and `/metrics` (Prometheus text). It listens on
//! its own address so it never shadows a path of the proxied site.

use crate::body::{self, Body};
use crate::metrics::SharedMetrics;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared state the admin endpoints read.
pub struct AdminState {
    pub metrics: SharedMetrics,
    /// Cleared when shutdown starts, so load balancers stop sending traffic.
    pub ready: AtomicBool,
}

/// Answer one admin request.
pub async fn handle(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (status, ctype, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if state.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ready\n".to_owned())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_owned(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    Ok(resp)
}
