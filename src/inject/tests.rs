//! Unit tests of `inject`, kept beside it so the module itself reads as code.

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

/// `debug_value` indexes a table built from `ALL` by the variant's number, so
/// `ALL` must list the variants in declaration order.
#[test]
fn each_skip_has_its_own_debug_value() {
    for s in Skip::ALL {
        assert_eq!(
            s.debug_value(),
            format!("skipped; reason={}", s.reason()).as_str(),
            "{s:?}"
        );
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
    let accept = crate::codec::Accept::of(&h);
    prepare_upstream_request(&mut h, &accept);
    for gone in ["if-none-match", "if-modified-since", "if-range", "range"] {
        assert!(!h.contains_key(gone), "{gone}");
    }
    assert_eq!(h["accept-encoding"], "gzip, deflate, br, zstd");
    assert_eq!(h["accept"], "text/html");
    assert_eq!(h["cookie"], "a=b");

    let mut none = HeaderMap::new();
    prepare_upstream_request(&mut none, &crate::codec::Accept::default());
    assert_eq!(none["accept-encoding"], "identity");
}

fn resp(cfg: &Config, status: u16, pairs: &[(&'static str, &'static str)]) -> Result<Page, Skip> {
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
