//! A local ChatHub EMULATOR (not the real service): the documented API over HTTP
//! with in-memory companies, organizations and operators, HS256 JWTs, switchable
//! faults for tests, and a stand-in widget module.
//!
//! The API follows `shared/chathub-api.md` (E1–E7). Besides it the emulator serves:
//! - `GET /`: a page saying plainly that this is an emulator;
//! - `GET /operator-chat-panel/widget-script.js`: the stand-in widget (CORS `*`);
//! - `POST /api/widget/validate` `{token}`: the widget's check (CORS `*`, no company auth);
//! - `POST /__emulator/fault` `{"fault": "down"|"slow"|"500"|"429"|"expire"|"none", "ms": n,
//!   "retry_after": n}`, `POST /__emulator/token-style` `{"style": "quoted"|"raw"|"object"|
//!   "quoted-as-text"}`, `GET /__emulator/calls`, `POST /__emulator/calls/reset`: control
//!   for tests that drive a separate emulator process. Faults never apply to these.

mod api;
pub mod jwt;
mod seed;

pub use jwt::decode_claims;
pub use seed::{Seed, SeedCompany, SeedError, SeedOperator, SeedOrganization};

use crate::body::{self, Body};
use api::{Shared, WIDGET_SCRIPT, json_response, lock, problem};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Request bodies larger than this get 413; the API's bodies are tiny.
const MAX_BODY: usize = 1024 * 1024;

const INDEX_HTML: &str = include_str!("index.html");
const WIDGET_JS: &str = include_str!("widget.js");

/// A fault the emulator can be switched into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Normal service.
    None,
    /// Every connection's request is dropped unanswered (the connection closes),
    /// except the `/__emulator/` control paths, so that a test can switch back.
    Down,
    /// Every API answer is delayed.
    Slow(Duration),
    /// Every API call answers 500.
    Error500,
    /// Every API call answers 429 with `Retry-After: secs`.
    TooMany {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// Company tokens issued so far are rejected with 401 (forces a re-login);
    /// tokens issued afterwards work. Takes effect when set.
    ExpireCompanyTokens,
}

impl Fault {
    /// The control endpoint's spelling: `{"fault": "slow", "ms": 500}` and so on.
    fn from_control(c: &FaultControl) -> Option<Fault> {
        Some(match c.fault.to_ascii_lowercase().as_str() {
            "none" | "off" | "" => Fault::None,
            "down" => Fault::Down,
            "slow" => Fault::Slow(Duration::from_millis(c.ms.unwrap_or(1000))),
            "500" | "error500" | "error" => Fault::Error500,
            "429" | "toomany" | "too_many" => Fault::TooMany {
                retry_after_secs: c.retry_after.unwrap_or(1),
            },
            "expire" | "expire_company_tokens" => Fault::ExpireCompanyTokens,
            _ => return None,
        })
    }

    fn to_control(self) -> Value {
        match self {
            Fault::None => json!({"fault": "none"}),
            Fault::Down => json!({"fault": "down"}),
            Fault::Slow(d) => json!({"fault": "slow", "ms": d.as_millis() as u64}),
            Fault::Error500 => json!({"fault": "500"}),
            Fault::TooMany { retry_after_secs } => {
                json!({"fault": "429", "retry_after": retry_after_secs})
            }
            Fault::ExpireCompanyTokens => json!({"fault": "expire"}),
        }
    }
}

#[derive(Deserialize)]
struct FaultControl {
    fault: String,
    ms: Option<u64>,
    retry_after: Option<u64>,
}

/// How token bodies (E1, E6) are written, to exercise the client's tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStyle {
    /// `"eyJ..."` with `Content-Type: application/json`.
    Quoted,
    /// `eyJ...` with `Content-Type: text/plain`.
    Raw,
    /// `{"token": "...", "expiration": "..."}`.
    Object,
    /// Quoted JSON but labelled `text/plain` (a lying Content-Type), with a trailing newline.
    QuotedAsText,
}

impl TokenStyle {
    fn from_control(s: &str) -> Option<TokenStyle> {
        Some(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "quoted" => TokenStyle::Quoted,
            "raw" => TokenStyle::Raw,
            "object" => TokenStyle::Object,
            "quoted-as-text" => TokenStyle::QuotedAsText,
            _ => return None,
        })
    }
}

/// A running emulator. Clones share one server; it stops on [`Emulator::shutdown`]
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct Emulator {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// Dropping it (with the last clone) also stops the server.
    stop: watch::Sender<bool>,
}

impl Emulator {
    /// Start on `addr` (use port 0 in tests). Fails if the seed contradicts
    /// itself (duplicate ids) or the address cannot be bound.
    pub async fn start(addr: SocketAddr, seed: Seed) -> std::io::Result<Emulator> {
        seed.check()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&seed));
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        let organizations: usize = seed.companies.iter().map(|c| c.organizations.len()).sum();
        info!(
            %addr,
            companies = seed.companies.len(),
            organizations,
            "ChatHub EMULATOR listening: a local stand-in for tests and demos, NOT the real ChatHub service"
        );
        Ok(Emulator {
            addr,
            inner: Arc::new(Inner { shared, stop }),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// URL of the stand-in widget module.
    pub fn widget_url(&self) -> String {
        format!("http://{}{WIDGET_SCRIPT}", self.addr)
    }

    /// Switch to a fault (or back to [`Fault::None`]).
    pub fn set_fault(&self, fault: Fault) {
        apply_fault(&self.inner.shared, fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *lock(&self.inner.shared.fault)
    }

    /// Choose how E1 and E6 write token bodies.
    pub fn set_token_style(&self, style: TokenStyle) {
        *lock(&self.inner.shared.style) = style;
    }

    /// Lifetime (`exp`) of company tokens issued from now on; one hour by default.
    pub fn set_company_token_ttl(&self, ttl: Duration) {
        *lock(&self.inner.shared.company_ttl) = ttl;
    }

    /// How many times an endpoint was called, by path (e.g. `/api/operator/get-token`),
    /// faulted calls included.
    pub fn calls(&self, path: &str) -> u64 {
        lock(&self.inner.shared.calls)
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Set every call counter back to zero.
    pub fn reset_calls(&self) {
        lock(&self.inner.shared.calls).clear();
    }

    /// The operators of one organization as the emulator now holds them,
    /// operators added through synchronize and every status included.
    pub fn operators(&self, organization_id: i64) -> Vec<SeedOperator> {
        self.inner.shared.operators(organization_id)
    }

    /// Change an operator's status behind the client's back; false if unknown.
    pub fn set_operator_status(&self, operator_id: i64, status: i64) -> bool {
        self.inner.shared.set_operator_status(operator_id, status)
    }

    /// Sign an operator token directly, skipping E6's checks, so that tests can
    /// hold expired or long-lived tokens. `None` if the operator is unknown.
    pub fn mint_operator_token(
        &self,
        operator_id: i64,
        expires_at: OffsetDateTime,
    ) -> Option<String> {
        self.inner
            .shared
            .mint_operator_token(operator_id, expires_at)
    }

    /// Stop serving: the listener closes and open connections finish their
    /// current request.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }
}

fn apply_fault(shared: &Shared, fault: Fault) {
    if fault == Fault::ExpireCompanyTokens {
        shared.revoke_company_tokens();
    }
    *lock(&shared.fault) = fault;
    info!(fault = ?fault, "ChatHub EMULATOR fault set");
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Usually out of file descriptors; back off instead of spinning.
                    warn!(error = %e, "ChatHub EMULATOR accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(error = %e, "ChatHub EMULATOR connection ended with an error");
                },
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    info!("ChatHub EMULATOR stopped");
}

/// Returned by the service to make hyper drop the connection unanswered.
#[derive(Debug, thiserror::Error)]
#[error("emulated outage: connection closed without an answer")]
struct EmulatedOutage;

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, EmulatedOutage> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/__emulator/") {
        return Ok(control(&shared, rest, req).await);
    }
    shared.count(&path);
    let fault = *lock(&shared.fault);
    if fault == Fault::Down {
        return Err(EmulatedOutage);
    }
    let browser_facing =
        path.starts_with("/api/widget/") || path.starts_with("/operator-chat-panel/");
    let mut resp = if req.method() == Method::OPTIONS && browser_facing {
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else if path.starts_with("/api/") {
        api_call(&shared, fault, req).await
    } else {
        page(&path)
    };
    if browser_facing {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    Ok(resp)
}

async fn api_call(shared: &Shared, fault: Fault, req: Request<Incoming>) -> Response<Body> {
    match fault {
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Error500 => {
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "Emulated server error");
        }
        Fault::TooMany { retry_after_secs } => {
            let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return r;
        }
        Fault::None | Fault::Down | Fault::ExpireCompanyTokens => {}
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or cut short",
            );
        }
    };
    shared.api(
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        &bytes,
    )
}

/// The non-API resources: the emulator's own page and the widget module.
fn page(path: &str) -> Response<Body> {
    let (status, content_type, text) = match path {
        "/" | "/index.html" => (StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        WIDGET_SCRIPT => (StatusCode::OK, "text/javascript; charset=utf-8", WIDGET_JS),
        "/healthz" => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok (ChatHub EMULATOR)\n",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found (ChatHub EMULATOR)\n",
        ),
    };
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The widget is re-read on every load so that an emulator restart is seen at once.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/__emulator/…`: fault, token style and counters for out-of-process tests.
async fn control(shared: &Shared, rest: &str, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let bytes = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
    };
    match (method, rest) {
        (Method::GET, "fault") => json_response(StatusCode::OK, &lock(&shared.fault).to_control()),
        (Method::POST, "fault") => {
            let fault = serde_json::from_slice::<FaultControl>(&bytes)
                .ok()
                .and_then(|c| Fault::from_control(&c));
            match fault {
                Some(f) => {
                    apply_fault(shared, f);
                    json_response(StatusCode::OK, &f.to_control())
                }
                None => problem(
                    StatusCode::BAD_REQUEST,
                    r#"expected {"fault": "down"|"slow"|"500"|"429"|"expire"|"none", "ms": n, "retry_after": n}"#,
                ),
            }
        }
        (Method::POST, "token-style") => {
            #[derive(Deserialize)]
            struct Style {
                style: String,
            }
            match serde_json::from_slice::<Style>(&bytes)
                .ok()
                .and_then(|s| TokenStyle::from_control(&s.style))
            {
                Some(s) => {
                    *lock(&shared.style) = s;
                    json_response(StatusCode::OK, &json!({"style": format!("{s:?}")}))
                }
                None => problem(
                    StatusCode::BAD_REQUEST,
                    r#"expected {"style": "quoted"|"raw"|"object"|"quoted-as-text"}"#,
                ),
            }
        }
        (Method::GET, "calls") => {
            let calls = lock(&shared.calls);
            let map: serde_json::Map<String, Value> = api::COUNTED
                .iter()
                .map(|p| ((*p).to_owned(), json!(calls.get(p).copied().unwrap_or(0))))
                .collect();
            json_response(StatusCode::OK, &Value::Object(map))
        }
        (Method::POST, "calls/reset") => {
            lock(&shared.calls).clear();
            json_response(StatusCode::OK, &json!({}))
        }
        _ => problem(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_spellings_round_trip() {
        for f in [
            Fault::None,
            Fault::Down,
            Fault::Slow(Duration::from_millis(250)),
            Fault::Error500,
            Fault::TooMany {
                retry_after_secs: 7,
            },
            Fault::ExpireCompanyTokens,
        ] {
            let c: FaultControl = serde_json::from_value(f.to_control()).unwrap();
            assert_eq!(Fault::from_control(&c), Some(f));
        }
        let bad = FaultControl {
            fault: "melt".into(),
            ms: None,
            retry_after: None,
        };
        assert_eq!(Fault::from_control(&bad), None);
        assert_eq!(
            TokenStyle::from_control("quoted_as_text"),
            Some(TokenStyle::QuotedAsText)
        );
    }

    #[test]
    fn assets_say_emulator() {
        assert!(INDEX_HTML.contains("EMULATOR"));
        assert!(WIDGET_JS.contains("ChatHub EMULATOR"));
        assert!(WIDGET_JS.contains("operator-chat-panel-script"));
    }
}
