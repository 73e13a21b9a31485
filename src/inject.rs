//! Which responses get the widget, and what changes in their headers. Pure
//! functions over request and response heads; each refusal is a [`Skip`] with a
//! stable reason name for the `X-ChatHub-Inject` header and the metrics.

use crate::codec::{Coding, CodingError, Refusal};
use crate::config::{InjectConfig, Route};
use http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

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
    if let Some(dest) = header_str(headers, "sec-fetch-dest") {
        let dest = dest.trim();
        let framed = dest.eq_ignore_ascii_case("iframe") || dest.eq_ignore_ascii_case("frame");
        if framed && !cfg.iframes {
            return Err(Skip::Iframe);
        }
        if !framed && !dest.eq_ignore_ascii_case("document") {
            return Err(Skip::NotPageLoad);
        }
    }
    if let Some(v) = header_str(headers, "hx-request")
        && !v.trim().eq_ignore_ascii_case("false")
    {
        return Err(Skip::Htmx);
    }
    if header_str(headers, "x-requested-with")
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
    ["sec-purpose", "purpose", "x-moz"].into_iter().any(|name| {
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
pub fn prepare_upstream_request(headers: &mut HeaderMap) {
    for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_RANGE, RANGE] {
        headers.remove(name);
    }
    crate::codec::limit_accept_encoding(headers);
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
    if header_str(headers, CONTENT_DISPOSITION.as_str())
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
/// per-session token.
const DROPPED_ON_REWRITE: [&str; 10] = [
    "etag",
    "last-modified",
    "expires",
    "accept-ranges",
    "cdn-cache-control",
    "surrogate-control",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
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
    headers.remove(CONTENT_LENGTH);
    for name in DROPPED_ON_REWRITE {
        headers.remove(name);
    }
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

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
mod tests {
    use super::*;
    use crate::config::{Config, from_toml_str};

    fn config(extra_inject: &str) -> Config {
        from_toml_str(&format!(
            r#"
            [inject]
            {extra_inject}

            [[routes]]
            name = "site"
            hosts = "example.com"
            upstream = "http://127.0.0.1:8081"
            exclude_paths = ["/api"]

            [[routes]]
            name = "plain"
            hosts = "plain.example.com"
            upstream = "http://127.0.0.1:8082"
            inject = false
            "#
        ))
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn req(
        cfg: &Config,
        method: Method,
        path: &str,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<(), Skip> {
        check_request(&method, path, &headers(pairs), &cfg.routes[0], &cfg.inject)
    }

    #[test]
    fn reasons_are_distinct_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for s in Skip::ALL {
            let r = s.reason();
            assert!(
                r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{r}"
            );
            assert!(seen.insert(r), "duplicate reason {r}");
        }
    }

    #[test]
    fn page_loads_are_eligible() {
        let cfg = config("");
        assert_eq!(req(&cfg, Method::GET, "/", &[]), Ok(()));
        assert_eq!(
            req(&cfg, Method::GET, "/", &[("sec-fetch-dest", "document")]),
            Ok(())
        );
        assert_eq!(
            req(
                &cfg,
                Method::GET,
                "/",
                &[
                    ("sec-fetch-dest", "Document"),
                    ("sec-fetch-mode", "navigate")
                ]
            ),
            Ok(())
        );
        // HEAD gets the headers GET would get.
        assert_eq!(
            req(&cfg, Method::HEAD, "/", &[("sec-fetch-dest", "document")]),
            Ok(())
        );
        assert_eq!(req(&cfg, Method::GET, "/apix", &[]), Ok(()));
        assert_eq!(
            req(&cfg, Method::GET, "/", &[("hx-request", "false")]),
            Ok(())
        );
        assert_eq!(
            req(
                &cfg,
                Method::GET,
                "/",
                &[("x-requested-with", "com.example.app")]
            ),
            Ok(())
        );
        assert_eq!(
            req(&cfg, Method::GET, "/", &[("sec-purpose", "prerendering")]),
            Ok(())
        );
    }

    #[test]
    fn other_methods_are_skipped() {
        let cfg = config("");
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            assert_eq!(req(&cfg, m, "/", &[]), Err(Skip::Method));
        }
    }

    #[test]
    fn route_off_and_excluded_paths_are_skipped() {
        let cfg = config("");
        let route = &cfg.routes[1];
        assert_eq!(
            check_request(&Method::GET, "/", &HeaderMap::new(), route, &cfg.inject),
            Err(Skip::RouteOff)
        );
        assert_eq!(req(&cfg, Method::GET, "/api", &[]), Err(Skip::ExcludedPath));
        assert_eq!(
            req(&cfg, Method::GET, "/api/users", &[]),
            Err(Skip::ExcludedPath)
        );
        // Route and path checks come before method checks.
        assert_eq!(
            req(&cfg, Method::POST, "/api/users", &[]),
            Err(Skip::ExcludedPath)
        );
    }

    #[test]
    fn fetches_that_are_not_documents_are_skipped() {
        let cfg = config("");
        for dest in [
            "empty", "script", "image", "style", "embed", "object", "worker", "",
        ] {
            let h = HeaderValue::from_str(dest).unwrap();
            let mut m = HeaderMap::new();
            m.insert("sec-fetch-dest", h);
            assert_eq!(
                check_request(&Method::GET, "/", &m, &cfg.routes[0], &cfg.inject),
                Err(Skip::NotPageLoad),
                "{dest}"
            );
        }
    }

    #[test]
    fn frames_follow_the_iframes_setting() {
        let off = config("");
        assert_eq!(
            req(&off, Method::GET, "/", &[("sec-fetch-dest", "iframe")]),
            Err(Skip::Iframe)
        );
        assert_eq!(
            req(&off, Method::GET, "/", &[("sec-fetch-dest", "frame")]),
            Err(Skip::Iframe)
        );
        let on = config("iframes = true");
        assert_eq!(
            req(&on, Method::GET, "/", &[("sec-fetch-dest", "iframe")]),
            Ok(())
        );
        assert_eq!(
            req(&on, Method::GET, "/", &[("sec-fetch-dest", "frame")]),
            Ok(())
        );
        assert_eq!(
            req(&on, Method::GET, "/", &[("sec-fetch-dest", "empty")]),
            Err(Skip::NotPageLoad)
        );
    }

    #[test]
    fn fragments_and_scripted_requests_are_skipped() {
        let cfg = config("");
        assert_eq!(
            req(&cfg, Method::GET, "/", &[("hx-request", "true")]),
            Err(Skip::Htmx)
        );
        assert_eq!(
            req(
                &cfg,
                Method::GET,
                "/",
                &[("x-requested-with", "XMLHttpRequest")]
            ),
            Err(Skip::Xhr)
        );
        assert_eq!(
            req(
                &cfg,
                Method::GET,
                "/",
                &[("x-requested-with", "xmlhttprequest")]
            ),
            Err(Skip::Xhr)
        );
    }

    #[test]
    fn prefetches_are_skipped() {
        let cfg = config("");
        for (name, value) in [
            ("sec-purpose", "prefetch"),
            ("sec-purpose", "prefetch;prerender"),
            ("sec-purpose", "prefetch;anonymous-client-ip"),
            ("purpose", "prefetch"),
            ("purpose", "Prefetch"),
            ("x-moz", "prefetch"),
        ] {
            assert_eq!(
                req(
                    &cfg,
                    Method::GET,
                    "/",
                    &[(name, value), ("sec-fetch-dest", "document")]
                ),
                Err(Skip::Prefetch),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn prepare_upstream_request_drops_validators_and_ranges() {
        let mut h = headers(&[
            ("if-none-match", "\"abc\""),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("if-range", "\"abc\""),
            ("range", "bytes=0-99"),
            ("accept-encoding", "gzip, deflate, br, zstd, compress"),
            ("accept", "text/html"),
            ("cookie", "a=b"),
        ]);
        prepare_upstream_request(&mut h);
        for gone in ["if-none-match", "if-modified-since", "if-range", "range"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["accept-encoding"], "gzip, deflate, br, zstd");
        assert_eq!(h["accept"], "text/html");
        assert_eq!(h["cookie"], "a=b");

        let mut none = HeaderMap::new();
        prepare_upstream_request(&mut none);
        assert_eq!(none["accept-encoding"], "identity");
    }

    fn resp(
        cfg: &Config,
        status: u16,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<Page, Skip> {
        check_response(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            &cfg.inject,
        )
    }

    const HTML: (&str, &str) = ("content-type", "text/html; charset=utf-8");

    #[test]
    fn html_responses_are_eligible() {
        let cfg = config("");
        for ct in [
            "text/html",
            "TEXT/HTML",
            "text/html;charset=UTF-8",
            "  text/html ; foo=bar",
            "application/xhtml+xml",
        ] {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_str(ct).unwrap());
            let page = check_response(StatusCode::OK, &h, &cfg.inject);
            assert!(page.is_ok(), "{ct}: {page:?}");
        }
        let page = resp(&cfg, 200, &[HTML]).unwrap();
        assert_eq!(page.coding, Coding::Identity);
        assert_eq!(page.encoding, Some(encoding_rs::UTF_8));
    }

    #[test]
    fn statuses_follow_config() {
        let cfg = config("");
        for ok in [200, 201, 203, 299] {
            assert!(resp(&cfg, ok, &[HTML]).is_ok(), "{ok}");
        }
        for skip in [204, 206, 100, 301, 304, 404, 500, 503] {
            assert_eq!(
                resp(&cfg, skip, &[HTML]).err(),
                Some(Skip::Status),
                "{skip}"
            );
        }
        let errors_too = config(r#"statuses = ["200-299", "404"]"#);
        assert!(resp(&errors_too, 404, &[HTML]).is_ok());
        assert_eq!(resp(&errors_too, 500, &[HTML]).err(), Some(Skip::Status));
    }

    #[test]
    fn other_media_types_are_skipped_without_sniffing() {
        let cfg = config("");
        for ct in [
            "application/json",
            "text/plain",
            "text/css",
            "image/png",
            "text/htmlx",
            "text/html-fragment",
            "",
        ] {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_str(ct).unwrap());
            assert_eq!(
                check_response(StatusCode::OK, &h, &cfg.inject).err(),
                Some(Skip::ContentType),
                "{ct}"
            );
        }
        assert_eq!(resp(&cfg, 200, &[]).err(), Some(Skip::ContentType));
        assert_eq!(
            resp(&cfg, 200, &[HTML, ("content-type", "application/json")]).err(),
            Some(Skip::ContentType)
        );
        let json_too = config(r#"content_types = ["text/html", "application/json"]"#);
        assert!(resp(&json_too, 200, &[("content-type", "Application/JSON")]).is_ok());
    }

    #[test]
    fn no_transform_and_attachments_are_skipped() {
        let cfg = config("");
        assert_eq!(
            resp(
                &cfg,
                200,
                &[HTML, ("cache-control", "public, no-transform")]
            )
            .err(),
            Some(Skip::NoTransform)
        );
        assert_eq!(
            resp(
                &cfg,
                200,
                &[
                    HTML,
                    ("cache-control", "max-age=0"),
                    ("cache-control", "No-Transform")
                ]
            )
            .err(),
            Some(Skip::NoTransform)
        );
        assert!(resp(&cfg, 200, &[HTML, ("cache-control", "no-cache, no-store")]).is_ok());
        assert_eq!(
            resp(
                &cfg,
                200,
                &[
                    HTML,
                    ("content-disposition", "attachment; filename=\"a.html\"")
                ]
            )
            .err(),
            Some(Skip::Attachment)
        );
        assert_eq!(
            resp(&cfg, 200, &[HTML, ("content-disposition", "Attachment")]).err(),
            Some(Skip::Attachment)
        );
        assert!(resp(&cfg, 200, &[HTML, ("content-disposition", "inline")]).is_ok());
    }

    #[test]
    fn codings_are_recognised_or_skipped() {
        let cfg = config("");
        for (ce, c) in [
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Br),
            ("zstd", Coding::Zstd),
            ("identity", Coding::Identity),
        ] {
            let mut h = headers(&[HTML]);
            h.insert("content-encoding", HeaderValue::from_static(ce));
            assert_eq!(
                check_response(StatusCode::OK, &h, &cfg.inject).map(|p| p.coding),
                Ok(c),
                "{ce}"
            );
        }
        assert_eq!(
            resp(&cfg, 200, &[HTML, ("content-encoding", "compress")]).err(),
            Some(Skip::ContentEncoding)
        );
        assert_eq!(
            resp(&cfg, 200, &[HTML, ("content-encoding", "gzip, br")]).err(),
            Some(Skip::StackedEncoding)
        );
    }

    #[test]
    fn charsets_resolve_through_encoding_rs() {
        let cfg = config("");
        let enc = |ct: &'static str| resp(&cfg, 200, &[("content-type", ct)]).map(|p| p.encoding);
        assert_eq!(enc("text/html"), Ok(None));
        assert_eq!(
            enc("text/html; charset=\"Shift_JIS\""),
            Ok(Some(encoding_rs::SHIFT_JIS))
        );
        assert_eq!(
            enc("text/html; charset=windows-1251"),
            Ok(Some(encoding_rs::WINDOWS_1251))
        );
        // latin1 is windows-1252 on the web.
        assert_eq!(
            enc("text/html; charset=ISO-8859-1"),
            Ok(Some(encoding_rs::WINDOWS_1252))
        );
        assert_eq!(enc("text/html; charset=no-such-charset"), Ok(None));
        assert_eq!(enc("text/html; charset=utf-16"), Err(Skip::Utf16));
        assert_eq!(enc("text/html; charset=UTF-16BE"), Err(Skip::Utf16));
        assert_eq!(enc("text/html; charset=utf-16le"), Err(Skip::Utf16));
        assert_eq!(enc("text/html; charset=iso-2022-jp"), Err(Skip::Charset));
    }

    #[test]
    fn rewritten_responses_lose_validators_and_become_private() {
        let mut h = headers(&[
            ("content-type", "text/html; charset=Shift_JIS"),
            ("content-length", "1234"),
            ("etag", "\"v1\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("cache-control", "public, max-age=3600"),
            ("cdn-cache-control", "max-age=60"),
            ("surrogate-control", "max-age=60"),
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ("accept-ranges", "bytes"),
            ("content-digest", "sha-256=:abc=:"),
            ("set-cookie", "a=b"),
            ("content-security-policy", "default-src 'self'"),
        ]);
        rewrite_response_headers(&mut h);
        for gone in [
            "content-length",
            "etag",
            "last-modified",
            "cdn-cache-control",
            "surrogate-control",
            "expires",
            "accept-ranges",
            "content-digest",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(
            h.get_all("cache-control").iter().collect::<Vec<_>>(),
            ["private, no-store"]
        );
        assert_eq!(h["content-type"], "text/html; charset=Shift_JIS");
        assert_eq!(h["set-cookie"], "a=b");
        assert_eq!(h["content-security-policy"], "default-src 'self'");
    }

    #[test]
    fn output_coding_sets_content_encoding_and_vary() {
        let mut h = headers(&[("content-encoding", "br"), ("vary", "Cookie")]);
        set_output_coding(&mut h, Coding::Gzip);
        assert_eq!(h["content-encoding"], "gzip");
        assert_eq!(
            h.get_all("vary").iter().collect::<Vec<_>>(),
            ["Cookie", "Accept-Encoding"]
        );

        set_output_coding(&mut h, Coding::Identity);
        assert!(!h.contains_key("content-encoding"));
        // Not added twice.
        assert_eq!(h.get_all("vary").iter().count(), 2);

        let mut star = headers(&[("vary", "*")]);
        set_output_coding(&mut star, Coding::Zstd);
        assert_eq!(star.get_all("vary").iter().collect::<Vec<_>>(), ["*"]);
        let mut listed = headers(&[("vary", "Origin, accept-encoding")]);
        set_output_coding(&mut listed, Coding::Br);
        assert_eq!(listed.get_all("vary").iter().count(), 1);
    }

    #[test]
    fn refusals_map_to_skips() {
        assert_eq!(Skip::from(CodingError::Unknown), Skip::ContentEncoding);
        assert_eq!(Skip::from(CodingError::Stacked), Skip::StackedEncoding);
        assert_eq!(Skip::from(Refusal::Limit), Skip::DecompressionLimit);
        assert_eq!(Skip::from(Refusal::Corrupt), Skip::CorruptEncoding);
    }
}
