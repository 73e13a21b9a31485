//! Which responses get the widget, and what changes in their headers. Pure
//! functions over request and response heads; each refusal is a [`Skip`] with a
//! stable reason name for the `X-ChatHub-Inject` header and the metrics.

use crate::codec::{Coding, CodingError, Refusal};
use crate::config::{InjectConfig, Route};
use crate::forwarded;
use http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::sync::LazyLock;

/// Why a response went out without the widget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not GET or HEAD.
    Method,
    /// `Sec-Fetch-Dest` names something other than a document (an `empty`
    /// fetch, a script, an image...).
    NotPageLoad,
    /// `Sec-Fetch-Dest: iframe` or `frame` while `inject.iframes` is off.
    Iframe,
    /// An htmx request (`HX-Request`): the answer is a fragment.
    Htmx,
    /// `X-Requested-With: XMLHttpRequest`: a script asked, not a navigation.
    Xhr,
    /// `Sec-Purpose` / `Purpose` / `X-Moz` say prefetch.
    Prefetch,
    /// The route does not inject.
    RouteOff,
    /// The path is under one of the route's `exclude_paths`.
    ExcludedPath,
    /// Missing, repeated, or not one of `inject.content_types`.
    ContentType,
    /// Status outside `inject.statuses` or in `inject.exclude_statuses`.
    Status,
    /// `Cache-Control: no-transform`.
    NoTransform,
    /// `Content-Disposition: attachment`: a download, not a page.
    Attachment,
    /// A `Content-Encoding` the proxy cannot decode.
    ContentEncoding,
    /// More than one `Content-Encoding` applied (`gzip, br`).
    StackedEncoding,
    /// The compressed body is not valid data for its coding.
    CorruptEncoding,
    /// A UTF-16 charset: the rewriter needs an ASCII-compatible encoding.
    Utf16,
    /// Another charset that is not ASCII-compatible (ISO-2022-JP, replacement).
    Charset,
    /// The page's CSP would block the widget.
    Csp,
    /// The body tripped a decompression limit before headers went out.
    DecompressionLimit,
    /// No token for this session.
    NoToken,
    /// The operator rule needs an identity the request does not carry.
    NoIdentity,
    /// The token did not arrive within the page's budget.
    TokenBudget,
    /// The token service is unavailable.
    TokenUnavailable,
}

impl Skip {
    /// Stable name used in headers, logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Method => "method",
            Skip::NotPageLoad => "not_page_load",
            Skip::Iframe => "iframe",
            Skip::Htmx => "htmx",
            Skip::Xhr => "xhr",
            Skip::Prefetch => "prefetch",
            Skip::RouteOff => "route_off",
            Skip::ExcludedPath => "excluded_path",
            Skip::ContentType => "content_type",
            Skip::Status => "status",
            Skip::NoTransform => "no_transform",
            Skip::Attachment => "attachment",
            Skip::ContentEncoding => "content_encoding",
            Skip::StackedEncoding => "stacked_encoding",
            Skip::CorruptEncoding => "corrupt_encoding",
            Skip::Utf16 => "utf16",
            Skip::Charset => "charset",
            Skip::Csp => "csp",
            Skip::DecompressionLimit => "decompression_limit",
            Skip::NoToken => "no_token",
            Skip::NoIdentity => "no_identity",
            Skip::TokenBudget => "token_budget",
            Skip::TokenUnavailable => "token_unavailable",
        }
    }

    /// Every variant, for metrics that pre-register their label values.
    pub const ALL: [Skip; 23] = [
        Skip::Method,
        Skip::NotPageLoad,
        Skip::Iframe,
        Skip::Htmx,
        Skip::Xhr,
        Skip::Prefetch,
        Skip::RouteOff,
        Skip::ExcludedPath,
        Skip::ContentType,
        Skip::Status,
        Skip::NoTransform,
        Skip::Attachment,
        Skip::ContentEncoding,
        Skip::StackedEncoding,
        Skip::CorruptEncoding,
        Skip::Utf16,
        Skip::Charset,
        Skip::Csp,
        Skip::DecompressionLimit,
        Skip::NoToken,
        Skip::NoIdentity,
        Skip::TokenBudget,
        Skip::TokenUnavailable,
    ];

    /// The `X-ChatHub-Inject` value for this skip, built once per process: a
    /// `format!` per response was about 800 instructions of a 2 KB hop's 36 k
    /// (callgrind). Static bytes, so a clone is a copy, not a count.
    pub fn debug_value(self) -> HeaderValue {
        static VALUES: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
            Skip::ALL
                .iter()
                .map(|s| {
                    let text: &'static str =
                        Box::leak(format!("skipped; reason={}", s.reason()).into_boxed_str());
                    HeaderValue::from_static(text)
                })
                .collect()
        });
        VALUES[self as usize].clone()
    }
}

impl From<CodingError> for Skip {
    fn from(e: CodingError) -> Self {
        match e {
            CodingError::Unknown => Skip::ContentEncoding,
            CodingError::Stacked => Skip::StackedEncoding,
        }
    }
}

impl From<Refusal> for Skip {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Limit => Skip::DecompressionLimit,
            Refusal::Corrupt => Skip::CorruptEncoding,
        }
    }
}

/// Request-side eligibility: GET page loads on routes that inject. HEAD is
/// eligible too, so it answers with the headers GET would get (the proxy sends
/// no body for it).
pub fn check_request(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    route: &Route,
    cfg: &InjectConfig,
) -> Result<(), Skip> {
    if !route.inject {
        return Err(Skip::RouteOff);
    }
    if route.is_excluded(path) {
        return Err(Skip::ExcludedPath);
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(Skip::Method);
    }
    // Browsers send Sec-Fetch-Dest on every request; without it (old browsers,
    // curl) the request is taken as a page load.
    if let Some(dest) = header_str(headers, &SEC_FETCH_DEST) {
        let dest = dest.trim();
        let framed = dest.eq_ignore_ascii_case("iframe") || dest.eq_ignore_ascii_case("frame");
        if framed && !cfg.iframes {
            return Err(Skip::Iframe);
        }
        if !framed && !dest.eq_ignore_ascii_case("document") {
            return Err(Skip::NotPageLoad);
        }
    }
    if let Some(v) = header_str(headers, &HX_REQUEST)
        && !v.trim().eq_ignore_ascii_case("false")
    {
        return Err(Skip::Htmx);
    }
    if header_str(headers, &X_REQUESTED_WITH)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("xmlhttprequest"))
    {
        return Err(Skip::Xhr);
    }
    if is_prefetch(headers) {
        return Err(Skip::Prefetch);
    }
    Ok(())
}

/// `Sec-Purpose: prefetch` (also `prefetch;prerender`, a structured-field
/// token with parameters), the legacy `Purpose: prefetch`, and Firefox's
/// `X-Moz: prefetch`.
fn is_prefetch(headers: &HeaderMap) -> bool {
    [&SEC_PURPOSE, &PURPOSE, &X_MOZ].into_iter().any(|name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',').any(|item| {
                    item.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("prefetch"))
                })
            })
    })
}

/// Adjust the headers sent upstream for a request we may inject into:
/// validators and ranges go, so the upstream answers with a full 200 (a 304
/// would keep a stale token in the browser; a 206 cannot be rewritten), and
/// `Accept-Encoding` names only codings the proxy can decode.
pub fn prepare_upstream_request(headers: &mut HeaderMap, accept: &crate::codec::Accept) {
    for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_RANGE, RANGE] {
        headers.remove(name);
    }
    crate::codec::limit_accept_encoding(headers, accept);
}

/// What the rewriter needs to know about an eligible response.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    /// The upstream body's content coding.
    pub coding: Coding,
    /// Charset named by `Content-Type`, if any; always ASCII-compatible.
    pub encoding: Option<&'static encoding_rs::Encoding>,
}

/// Response-side eligibility. The media type comes from `Content-Type` only
/// (a missing one is never sniffed), compared case-insensitively.
pub fn check_response(
    status: StatusCode,
    headers: &HeaderMap,
    cfg: &InjectConfig,
) -> Result<Page, Skip> {
    if !cfg.status_eligible(status.as_u16()) {
        return Err(Skip::Status);
    }
    // Two Content-Type lines are ambiguous; a browser may pick either.
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let ct = match (types.next(), types.next()) {
        (Some(v), None) => v.to_str().map_err(|_| Skip::ContentType)?,
        _ => return Err(Skip::ContentType),
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !cfg
        .content_types
        .iter()
        .any(|t| t.eq_ignore_ascii_case(media))
    {
        return Err(Skip::ContentType);
    }
    if has_directive(headers, &CACHE_CONTROL, "no-transform") {
        return Err(Skip::NoTransform);
    }
    if header_str(headers, &CONTENT_DISPOSITION)
        .and_then(|v| v.split(';').next())
        .is_some_and(|d| d.trim().eq_ignore_ascii_case("attachment"))
    {
        return Err(Skip::Attachment);
    }
    let coding = crate::codec::response_coding(headers)?;
    let encoding = charset(parts)?;
    Ok(Page { coding, encoding })
}

/// The charset parameter of a `Content-Type`, as encoding_rs resolves its
/// label. An unknown label counts as none, as browsers treat it.
fn charset<'a>(
    params: impl Iterator<Item = &'a str>,
) -> Result<Option<&'static encoding_rs::Encoding>, Skip> {
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let label = value.trim().trim_matches('"');
        let Some(enc) = encoding_rs::Encoding::for_label(label.as_bytes()) else {
            return Ok(None);
        };
        if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
            return Err(Skip::Utf16);
        }
        if !enc.is_ascii_compatible() {
            return Err(Skip::Charset);
        }
        return Ok(Some(enc));
    }
    Ok(None)
}

/// Cache-related headers a rewritten response must not carry: they describe
/// the upstream's bytes or would let a shared cache keep a page holding a
/// per-session token. (Names, not strings: a `&str` is parsed on every use.)
const DROPPED_ON_REWRITE: [HeaderName; 11] = [
    CONTENT_LENGTH,
    HeaderName::from_static("etag"),
    HeaderName::from_static("last-modified"),
    HeaderName::from_static("expires"),
    HeaderName::from_static("accept-ranges"),
    HeaderName::from_static("cdn-cache-control"),
    HeaderName::from_static("surrogate-control"),
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// Header changes for a response whose body will be rewritten (also for the
/// HEAD answer to an eligible page, so it matches the GET).
///
/// - `Content-Length` goes: the body changes length and streams.
/// - `ETag` is removed rather than weakened: validators are never forwarded
///   upstream for these pages, so a weak tag could never be used, and removing
///   it keeps browsers from even trying to revalidate a token-bearing page.
/// - `Last-Modified`, `Expires`, `Accept-Ranges`, `CDN-Cache-Control`,
///   `Surrogate-Control` and body digests go.
/// - `Cache-Control` becomes `private, no-store`: the page carries a
///   per-session secret.
/// - `Content-Type` is never altered.
pub fn rewrite_response_headers(headers: &mut HeaderMap) {
    // One pass over the names present, then only those removed: a removal
    // hashes its name, and most of these are absent from most pages.
    let found = forwarded::present(headers, &DROPPED_ON_REWRITE);
    forwarded::remove_found(headers, &DROPPED_ON_REWRITE, found);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
}

/// Set `Content-Encoding` for the coding the rewritten body goes out in, and
/// add `Accept-Encoding` to `Vary`: the choice depends on the request's
/// `Accept-Encoding` whatever it turned out to be, identity included.
pub fn set_output_coding(headers: &mut HeaderMap, coding: Coding) {
    match coding.as_header() {
        Some(token) => {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        None => {
            headers.remove(CONTENT_ENCODING);
        }
    }
    let varies = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("accept-encoding")
        });
    if !varies {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Request headers that decide eligibility, as names: a `&str` name is
/// parsed on every lookup.
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
const HX_REQUEST: HeaderName = HeaderName::from_static("hx-request");
const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
const SEC_PURPOSE: HeaderName = HeaderName::from_static("sec-purpose");
const PURPOSE: HeaderName = HeaderName::from_static("purpose");
const X_MOZ: HeaderName = HeaderName::from_static("x-moz");

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether any line of a comma-separated header holds `directive` (by name,
/// ignoring any `=value`).
fn has_directive(headers: &HeaderMap, name: &HeaderName, directive: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            d.split('=')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(directive))
        })
}

#[cfg(test)]
mod tests;
