//! Which responses get the widget, and what changes in their headers. Pure
//! functions over request and response heads; each refusal is a [`Skip`] with a
//! stable reason name for the `X-ChatHub-Inject` header and the metrics.
//!
//! OWNER: inject/codec helper. STUB: the real rules replace these bodies.

use crate::codec::Coding;
use crate::config::{InjectConfig, Route};
use http::{HeaderMap, Method};

/// Why a response went out without the widget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Method,
    NotPageLoad,
    RouteOff,
    ExcludedPath,
    ContentType,
    Status,
    NoTransform,
    Attachment,
    ContentEncoding,
    Utf16,
    Csp,
    DecompressionLimit,
    NoToken,
    NoIdentity,
    TokenBudget,
    TokenUnavailable,
}

impl Skip {
    /// Stable name used in headers, logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Method => "method",
            Skip::NotPageLoad => "not_page_load",
            Skip::RouteOff => "route_off",
            Skip::ExcludedPath => "excluded_path",
            Skip::ContentType => "content_type",
            Skip::Status => "status",
            Skip::NoTransform => "no_transform",
            Skip::Attachment => "attachment",
            Skip::ContentEncoding => "content_encoding",
            Skip::Utf16 => "utf16",
            Skip::Csp => "csp",
            Skip::DecompressionLimit => "decompression_limit",
            Skip::NoToken => "no_token",
            Skip::NoIdentity => "no_identity",
            Skip::TokenBudget => "token_budget",
            Skip::TokenUnavailable => "token_unavailable",
        }
    }
}

/// Request-side eligibility: GET (or HEAD) page loads on routes that inject.
pub fn check_request(method: &Method, path: &str, headers: &HeaderMap, route: &Route, cfg: &InjectConfig) -> Result<(), Skip> {
    let _ = (headers, cfg);
    if !route.inject {
        return Err(Skip::RouteOff);
    }
    if route.is_excluded(path) {
        return Err(Skip::ExcludedPath);
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(Skip::Method);
    }
    Ok(())
}

/// Adjust the headers sent upstream for a request we may inject into: no
/// validators or ranges, and only codings the proxy can decode.
pub fn prepare_upstream_request(headers: &mut HeaderMap) {
    crate::codec::limit_accept_encoding(headers);
}

/// What the rewriter needs to know about an eligible response.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub coding: Coding,
    /// Charset named by `Content-Type`, if any.
    pub encoding: Option<&'static encoding_rs::Encoding>,
}

/// Response-side eligibility.
pub fn check_response(status: http::StatusCode, headers: &HeaderMap, cfg: &InjectConfig) -> Result<Page, Skip> {
    if !cfg.status_eligible(status.as_u16()) {
        return Err(Skip::Status);
    }
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !cfg.content_types.iter().any(|t| *t == media) {
        return Err(Skip::ContentType);
    }
    let coding = crate::codec::response_coding(headers).map_err(|_| Skip::ContentEncoding)?;
    Ok(Page { coding, encoding: None })
}

/// Header changes for a response whose body will be rewritten.
pub fn rewrite_response_headers(headers: &mut HeaderMap) {
    headers.remove(http::header::CONTENT_LENGTH);
}
