//! The request path, as one straight line: check the head, find the route,
//! forward, and for eligible HTML pages decode → rewrite → re-encode with the
//! session's token. The outer [`handle`] logs and maps every error to a small
//! synthetic response; [`handle_inner`] reads top to bottom.

use crate::body::{self, Body, BoxError, Gather};
use crate::codec::{self, Coding};
use crate::config::{Config, Route};
use crate::conn::InFlight;
use crate::csp::{self, CspPlan, CspSettings, PageCsp};
use crate::error::ProxyError;
use crate::forwarded;
use crate::inject::{self, Skip};
use crate::metrics::SharedMetrics;
use crate::rewrite::{self, RewritePlan};
use crate::route::{RouteTable, normalize_host};
use crate::server::ServerError;
use crate::session::{self, SessionId};
use crate::snippet::{self, Snippet};
use crate::tag::TagTemplate;
use crate::token::{IssuedToken, PendingToken, TokenSkip, Tokens};
use crate::upstream::Upstream;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::{Instrument, Span, field, info, warn};

/// Everything a request needs, shared by all connections.
pub struct State {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub upstream: Upstream,
    pub metrics: SharedMetrics,
    pub tag: TagTemplate,
    /// The inserted HTML: widget tag, fallback template, helper script.
    pub snippet: Arc<Snippet>,
    /// What the widget needs from a page's Content-Security-Policy.
    pub csp: Arc<CspSettings>,
    pub tokens: Tokens,
    /// The session cookie's two names, `[__Host- (https), plain]`, computed
    /// once instead of per request.
    cookie_names: [String; 2],
}

impl State {
    /// Build the shared state from a validated config.
    pub async fn new(config: Arc<Config>, metrics: SharedMetrics) -> Result<State, ServerError> {
        let tokens = Tokens::new(&config, metrics.clone())
            .map_err(|e| ServerError::Tokens(e.to_string()))?;
        // Organization names are resolved now: an unknown name is a start-up
        // error naming the route; ChatHub being down is not.
        tokens
            .resolve()
            .await
            .map_err(|e| ServerError::Tokens(e.to_string()))?;
        Ok(State {
            tokens,
            cookie_names: session::cookie_names(&config.session),
            routes: RouteTable::new(&config),
            upstream: Upstream::new(&config.upstream).map_err(ServerError::Client)?,
            tag: TagTemplate::new(&config.inject),
            snippet: Arc::new(Snippet::new(&config.inject)),
            csp: Arc::new(CspSettings::new(&config.inject)),
            metrics,
            config,
        })
    }

    /// The session cookie name for the client's scheme.
    fn cookie_name(&self, https: bool) -> &str {
        &self.cookie_names[if https { 0 } else { 1 }]
    }
}

const X_CHATHUB_INJECT: HeaderName = HeaderName::from_static("x-chathub-inject");

/// The service function: never fails, logs one line per request when its body
/// ends. `in_flight` is held until then (the connection parks only without one).
/// The body leaves through [`Gather`], so that frames ready together go out in
/// one write.
pub async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Body>,
    in_flight: InFlight,
) -> Result<Response<Gather>, Infallible> {
    let start = Instant::now();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        host = field::Empty,
        path = %req.uri().path(),
        route = field::Empty,
        upstream = field::Empty,
    );
    let mut matched: Option<Arc<Route>> = None;
    let resp = match handle_inner(&state, peer, req, &span, &mut matched)
        .instrument(span.clone())
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            let _g = span.enter();
            warn!(kind = e.kind(), error = %e, "request failed");
            if e.status().is_server_error() {
                state.metrics.upstream_error(e.kind());
            }
            e.into_response()
        }
    };
    state.metrics.request(
        matched.as_ref().map_or("-", |r| r.name.as_str()),
        resp.status().as_u16(),
    );
    let status = resp.status().as_u16();
    Ok(resp.map(|inner| {
        Gather::new(Body::new(LoggedBody {
            inner,
            span,
            status,
            bytes: 0,
            start,
            outcome: None,
            _in_flight: in_flight,
        }))
    }))
}

async fn handle_inner(
    state: &State,
    peer: SocketAddr,
    mut req: Request<Body>,
    span: &Span,
    matched: &mut Option<Arc<Route>>,
) -> Result<Response<Body>, ProxyError> {
    let cfg = &state.config;

    // 1. The head: exactly one Host, a bounded size, no CONNECT.
    let host = request_host(&req)?;
    // Split once, here: the route lookup takes the parts.
    let (host_name, host_port) = normalize_host(&host).ok_or(ProxyError::BadHost)?;
    span.record("host", host.as_str());
    check_head_size(req.headers(), cfg.server.max_header_bytes)?;
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let path = req.uri().path().to_owned();

    // 2. The route: config names every upstream we may dial.
    let route = state
        .routes
        .lookup_normalized(&host_name, host_port, &path)
        .ok_or(ProxyError::NoRoute)?
        .clone();
    span.record("route", route.name.as_str());
    span.record("upstream", field::display(&route.upstream));
    *matched = Some(route.clone());

    // 3. The upstream request.
    let upgrade = requested_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    let trusted = cfg.server.is_trusted(peer.ip());
    // Hop-by-hop headers go before the forwarded ones are set, so that
    // `Connection: X-Forwarded-For` cannot delete what the proxy adds. The
    // proxy terminates no TLS: only a trusted proxy in front can say HTTPS.
    forwarded::strip_hop_by_hop(&mut parts.headers);
    let https =
        forwarded::set_forwarded(&mut parts.headers, peer.ip(), trusted, "http", &host) == "https";

    // The token endpoint for long-lived pages is answered here, never upstream.
    if path == cfg.inject.token_path {
        // Boxed here and below: rare or large sub-futures would otherwise be
        // inlined into this function's state machine, which is moved (memcpy)
        // on every request whatever path it takes.
        return Ok(Box::pin(state.tokens.endpoint(&route, &parts, trusted, https)).await);
    }
    // So is the helper script (widget fallback, token refresh): same-origin, so
    // a page's `script-src 'self'` lets it run.
    if state.snippet.helper_enabled() && path == cfg.inject.helper_path {
        return Ok(snippet::helper_response(&parts.method));
    }
    // Over HTTPS only the `__Host-` cookie counts: a plain one could have been
    // planted by a sibling subdomain or over plain HTTP.
    let session_id = session::from_headers(&parts.headers, state.cookie_name(https));
    let identity = crate::operator::identity_for(&route, &parts.headers, trusted);
    // The proxy's own cookie is none of the upstream's business.
    session::strip_from_request(&mut parts.headers, &state.cookie_names);
    if !trusted {
        // An identity header from a client that reached us directly is a
        // forgery as far as the upstream is concerned too.
        if let Some(h) = identity_header(&route) {
            parts.headers.remove(h);
        }
    }

    if let Some(proto) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    set_upstream_host(&mut parts.headers, &route, &host);
    parts.uri = upstream_uri(&route.upstream, std::mem::take(&mut parts.uri))?;
    // An HTTP/2 client's request goes to an HTTP/1 upstream as HTTP/1.1; ALPN
    // still picks h2 where a TLS upstream offers it.
    parts.version = Version::HTTP_11;

    let page =
        match inject::check_request(&parts.method, &path, &parts.headers, &route, &cfg.inject) {
            Ok(()) => {
                // Read before the upstream's copy is narrowed; it also
                // chooses the output coding.
                let client_accept = codec::Accept::of(&parts.headers);
                inject::prepare_upstream_request(&mut parts.headers, &client_accept);
                let (session, is_new) = match session_id {
                    Some(s) => (s, false),
                    None => (session::new_id(), true),
                };
                // Started now, so the mint runs while the upstream answers.
                let pending = state
                    .tokens
                    .start_token_for(route.clone(), session, identity);
                Ok((pending, session, is_new, client_accept))
            }
            Err(skip) => Err(skip),
        };
    let is_head = parts.method == Method::HEAD;

    let mut resp = Box::pin(state.upstream.send(Request::from_parts(parts, body))).await?;

    // 4. Upgrades (WebSocket) become a byte tunnel once both sides agree.
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade).in_current_span());
        }
        return Ok(resp.map(body::boxed));
    }

    // 5. The response: pass through, or decode → rewrite → encode.
    let (mut rparts, rbody) = resp.into_parts();
    // The client's hop has its own version (an HTTP/1.0 upstream must not make
    // an HTTP/1.1 client's response 1.0).
    rparts.version = client_version;
    forwarded::strip_hop_by_hop(&mut rparts.headers);
    let decision = match page {
        Err(skip) => Err(skip),
        // The page's CSP is judged before waiting for the token: a page it
        // blocks goes out unchanged either way.
        Ok((pending, session, is_new, client_accept)) => {
            match inject::check_response(rparts.status, &rparts.headers, &cfg.inject)
                .and_then(|info| Ok((info, judge_csp(&rparts.headers, &route, state)?)))
            {
                Err(skip) => Err(skip),
                Ok((info, csp_plan)) => {
                    match resolve_token(pending, &state.metrics, cfg.token.budget).await {
                        Ok(issued) => Ok((
                            info,
                            Insert::Widget(issued, csp_plan),
                            session,
                            is_new,
                            client_accept,
                        )),
                        // ChatHub slow or down: the configured fallback contact, as the
                        // integration guide recommends, instead of nothing.
                        Err(skip @ (Skip::TokenBudget | Skip::TokenUnavailable))
                            if cfg.inject.fallback_html.is_some() =>
                        {
                            Ok((info, Insert::Fallback(skip), session, is_new, client_accept))
                        }
                        Err(skip) => {
                            // No widget this time, but the session exists: a mint past
                            // the budget fills the cache for its next page.
                            if is_new {
                                set_session_cookie(&mut rparts.headers, cfg, &session, https);
                            }
                            Err(skip)
                        }
                    }
                }
            }
        }
    };
    let (info, insert, session, is_new, client_accept) = match decision {
        Ok(x) => x,
        Err(skip) => {
            state.metrics.skipped(skip.reason());
            mark(&mut rparts.headers, cfg, Err(skip));
            return Ok(Response::from_parts(rparts, body::boxed(rbody)));
        }
    };

    let rbody = body::boxed(rbody);
    let out = codec::choose_output(&client_accept, info.coding);
    let limits = codec::DecodeLimits::from_config(&cfg.inject);
    // gzip in and gzip out: the upstream's compressed bits are kept up to the
    // insertion point (codec::splice) instead of decoding and encoding again.
    let checked = if is_head {
        Ok(Decoded::Plain(body::empty()))
    } else if info.coding == Coding::Gzip && out == Coding::Gzip && codec::splice::enabled() {
        Box::pin(codec::splice::check(rbody, limits))
            .await
            .map(|c| Decoded::Spliced(Box::new(c)))
    } else {
        Box::pin(codec::decode_checked(rbody, info.coding, limits))
            .await
            .map(Decoded::Plain)
    };
    let decoded = match checked {
        Ok(d) => d,
        Err(refused) => {
            // A bomb or a corrupt body caught before the head went out: the
            // page goes out exactly as received.
            let skip = Skip::from(refused.why);
            state.metrics.skipped(skip.reason());
            mark(&mut rparts.headers, cfg, Err(skip));
            return Ok(Response::from_parts(rparts, refused.body));
        }
    };
    inject::rewrite_response_headers(&mut rparts.headers);
    inject::set_output_coding(&mut rparts.headers, out);
    let mut page_csp = None;
    let mut fallback = None;
    let snippet: Arc<str> = match insert {
        Insert::Widget(issued, csp_plan) => {
            mark(&mut rparts.headers, cfg, Ok(()));
            csp_plan.apply(&mut rparts.headers);
            let page = PageCsp::new(
                csp_plan,
                state.csp.clone(),
                state.snippet.clone(),
                issued.token,
                Some(issued.expires_at),
            );
            let snippet = page.header_snippet().into();
            page_csp = Some(Arc::new(page));
            snippet
        }
        Insert::Fallback(skip) => {
            // Counted by the rewriter as `fallback` once the block is in
            // (a page it cannot take is counted as skipped there instead).
            fallback = Some(skip.reason());
            mark(&mut rparts.headers, cfg, Err(skip));
            cfg.inject
                .fallback_html
                .as_deref()
                .unwrap_or_default()
                .into()
        }
    };
    if is_new {
        set_session_cookie(&mut rparts.headers, cfg, &session, https);
    }
    if is_head {
        // No body, so no rewriter to count the page: counted here, under the
        // outcome its headers (and `X-ChatHub-Inject`) show, as GET's would be.
        state.metrics.inserted(fallback);
        return Ok(Response::from_parts(rparts, body::empty()));
    }
    let plan = RewritePlan {
        snippet,
        script_id: cfg.inject.script_id.as_str().into(),
        encoding: info.encoding,
        max_memory: cfg.inject.max_rewriter_memory,
        fallback,
    };
    let metrics = state.metrics.clone();
    let body = match decoded {
        Decoded::Spliced(checked) => checked.into_body(rewrite::driven(plan, page_csp, metrics)),
        Decoded::Plain(decoded) => {
            let rewritten = match page_csp {
                Some(page) => rewrite::rewrite_with_csp(decoded, plan, page, metrics),
                None => rewrite::rewrite(decoded, plan, metrics),
            };
            codec::encode(rewritten, out)
        }
    };
    Ok(Response::from_parts(rparts, body))
}

/// An eligible page's body once its first bytes were checked.
enum Decoded {
    /// Decoded (or identity): rewritten, then encoded for the client.
    Plain(Body),
    /// gzip to a gzip client: rewritten and spliced into the upstream's stream.
    Spliced(Box<codec::splice::Checked>),
}

/// What goes into an eligible page.
enum Insert {
    /// The widget, and how it gets past the page's CSP.
    Widget(IssuedToken, CspPlan),
    /// No token in time: the fallback contact block, and why.
    Fallback(Skip),
}

/// The page's token: at once if the lookup finished when it started, else
/// waited for at most `budget`; past it the page goes out without the widget
/// while the lookup carries on in its own task and fills the cache.
async fn resolve_token(
    pending: PendingToken,
    metrics: &SharedMetrics,
    budget: std::time::Duration,
) -> Result<IssuedToken, Skip> {
    let looked_up = match pending {
        PendingToken::Ready(result) => result,
        PendingToken::Running(mut handle) => {
            match tokio::time::timeout(budget, &mut handle).await {
                Err(_) => {
                    metrics.token_event("budget_exceeded");
                    return Err(Skip::TokenBudget);
                }
                Ok(Err(_join)) => return Err(Skip::TokenUnavailable),
                Ok(Ok(result)) => result,
            }
        }
    };
    looked_up.map_err(|skip| match skip {
        TokenSkip::NoToken => Skip::NoToken,
        TokenSkip::Operator(r) if r.reason() == "no_identity" => Skip::NoIdentity,
        other => {
            tracing::debug!(reason = other.reason(), "no token for this page");
            Skip::TokenUnavailable
        }
    })
}

/// How the widget gets past the page's header CSP, or why it cannot (`Skip::Csp`).
fn judge_csp(headers: &HeaderMap, route: &Route, state: &State) -> Result<CspPlan, Skip> {
    csp::plan(headers, route.csp, &state.csp).map_err(|blocked| {
        tracing::debug!(
            reason = blocked.reason(),
            "the page's policy blocks the widget"
        );
        Skip::Csp
    })
}

/// The header a route's `identity` rule reads, if any.
fn identity_header(route: &Route) -> Option<&HeaderName> {
    match &route.chat.as_ref()?.operator {
        crate::config::OperatorRule::Identity { source, .. } => source.header.as_ref(),
        _ => None,
    }
}

fn set_session_cookie(headers: &mut HeaderMap, cfg: &Config, session: &SessionId, https: bool) {
    headers.append(
        header::SET_COOKIE,
        session::set_cookie(&cfg.session, session, https),
    );
}

fn mark(headers: &mut HeaderMap, cfg: &Config, outcome: Result<(), Skip>) {
    if !cfg.inject.debug_header {
        return;
    }
    let v = match outcome {
        Ok(()) => HeaderValue::from_static("injected"),
        Err(skip) => skip.debug_value(),
    };
    headers.insert(X_CHATHUB_INJECT, v);
}

/// The one Host of a request: the URI authority (HTTP/2 `:authority` or an
/// absolute-form target) wins over the header, as RFC 9112 §3.2.2 says.
fn request_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    let host = match req.uri().authority() {
        Some(a) => a.as_str().to_owned(),
        None => first
            .ok_or(ProxyError::MissingHost)?
            .to_str()
            .map_err(|_| ProxyError::BadHost)?
            .to_owned(),
    };
    Ok(host)
}

fn check_head_size(headers: &HeaderMap, max: usize) -> Result<(), ProxyError> {
    // hyper's own buffer cap can be bypassed across reads (hyper #4081), so sum
    // the fields ourselves.
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > max {
        Err(ProxyError::HeadTooLarge)
    } else {
        Ok(())
    }
}

/// The protocol of an HTTP/1.1 Upgrade the proxy will pass on (WebSocket and
/// the like). `h2c` is never forwarded: the upstream hop is ours to choose.
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let proto = headers.get(header::UPGRADE)?;
    (wants && !proto.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| proto.clone())
}

fn set_upstream_host(headers: &mut HeaderMap, route: &Route, client_host: &str) {
    let value = if route.preserve_host {
        HeaderValue::from_str(client_host).ok()
    } else {
        route
            .upstream
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    };
    if let Some(v) = value {
        headers.insert(header::HOST, v);
    }
}

/// The request's URI in absolute form for the route's upstream. The path and
/// query move over as parsed (no copy, no second parse).
fn upstream_uri(base: &Uri, original: Uri) -> Result<Uri, ProxyError> {
    let mut parts = original.into_parts();
    parts.scheme = base.scheme().cloned();
    parts.authority = base.authority().cloned();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).map_err(|_| ProxyError::BadHost)
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let (mut c, mut u) = (
                hyper_util::rt::TokioIo::new(c),
                hyper_util::rt::TokioIo::new(u),
            );
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => warn!(error = %e, "upgrade failed"),
    }
}

/// A response body that counts its bytes and writes the access-log line when it
/// ends, whether cleanly, with an error, or because the client went away.
struct LoggedBody {
    inner: Body,
    span: Span,
    status: u16,
    bytes: u64,
    start: Instant,
    outcome: Option<&'static str>,
    /// Released when hyper drops the body: the request is over.
    _in_flight: InFlight,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.outcome = Some("aborted"),
            Poll::Ready(None) => self.outcome = self.outcome.or(Some("complete")),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .unwrap_or(if http_body::Body::is_end_stream(&self.inner) {
                "complete"
            } else {
                "client_gone"
            });
        info!(
            parent: &self.span,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            outcome,
            "request"
        );
    }
}
