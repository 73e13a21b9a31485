//! Injection through the running proxy: every upstream coding against every
//! client `Accept-Encoding`, every skip reason (read from the debug header),
//! HEAD / 204 / 304 / 206, the headers of rewritten pages, upstream failures,
//! and first bytes of a slow page reaching the client before the origin ends.

use crate::support::client::{self, Got, TestBody};
use crate::support::harness::{Proxy, inject_outcomes};
use crate::support::inject_support::*;
use crate::support::origin::{Gate, Origin, Step};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use std::time::Duration;

const CODINGS: [&str; 5] = ["identity", "gzip", "deflate", "br", "zstd"];

/// Generous guard for "this must happen without the origin finishing".
const GUARD: Duration = Duration::from_secs(20);

fn req(method: Method, host: &str, path: &str, headers: &[(&str, &str)]) -> Request<TestBody> {
    let mut b = client::request(method, host, path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(client::empty()).expect("request")
}

fn header(got: &Got, name: &str) -> Option<String> {
    got.all(name).into_iter().next()
}

fn verdict(got: &Got) -> String {
    header(got, "x-chathub-inject").unwrap_or_else(|| "<no x-chathub-inject>".into())
}

fn coding_of(got: &Got) -> String {
    header(got, "content-encoding").unwrap_or_else(|| "identity".into())
}

fn html_headers(coding: &str) -> Vec<(&str, &str)> {
    let mut h = vec![("content-type", "text/html; charset=utf-8")];
    if coding != "identity" {
        h.push(("content-encoding", coding));
    }
    h
}

/// An origin serving `page` at `/page/{coding}` in each coding.
async fn coded_origin(page: &[u8]) -> Origin {
    let mut b = Origin::builder();
    for coding in CODINGS {
        b = b.fixed_with_headers(
            &format!("/page/{coding}"),
            200,
            &html_headers(coding),
            compress(coding, page),
        );
    }
    b.start().await
}

/// Whether an `Accept-Encoding` list accepts `coding` with q > 0.
fn accepts(accept: Option<&str>, coding: &str) -> bool {
    let Some(list) = accept else {
        return coding == "identity";
    };
    if coding == "identity" {
        return !list
            .split(',')
            .any(|e| e.trim().starts_with("identity;q=0"));
    }
    list.split(',').any(|e| {
        let mut parts = e.split(';');
        parts.next().is_some_and(|t| t.trim() == coding) && !parts.any(|p| p.trim() == "q=0")
    })
}

/// The body of an injected response: exactly one tag carrying the token, and
/// the rest byte-identical to the page.
fn assert_injected(got: &Got, page: &[u8], what: &str) {
    assert_eq!(got.status, 200, "{what}");
    assert_eq!(verdict(got), "injected", "{what}");
    let body = decompress(&coding_of(got), &got.body);
    let (rest, tags) = strip_tags(&body);
    assert_eq!(tags, 1, "{what}: {tags} tags");
    assert!(
        String::from_utf8_lossy(&body).contains(&format!("token=\"{TOKEN}\"")),
        "{what}: token missing"
    );
    assert!(rest == page, "{what}: page changed beyond the tag");
}

#[tokio::test]
async fn every_upstream_coding_reaches_every_client_with_the_widget() {
    let page = page(60_000);
    let origin = coded_origin(&page).await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);
    let clients: [(Option<&str>, &str); 9] = [
        (None, "identity"),
        (Some("gzip"), "gzip"),
        (Some("deflate"), "deflate"),
        (Some("br"), "br"),
        (Some("zstd"), "zstd"),
        (Some("gzip, deflate, br, zstd"), "gzip, deflate, br, zstd"),
        (Some("identity"), "identity"),
        (Some("gzip;q=0, br"), "br"),
        (Some("compress, sdch"), "identity"),
    ];
    for upstream in CODINGS {
        for (accept, sent_upstream) in clients {
            let what = format!("upstream {upstream}, client {accept:?}");
            let mut headers = vec![("sec-fetch-dest", "document")];
            if let Some(a) = accept {
                headers.push(("accept-encoding", a));
            }
            let got = client::fetch(
                &c,
                req(
                    Method::GET,
                    "site.test",
                    &format!("/page/{upstream}"),
                    &headers,
                ),
            )
            .await;
            assert_injected(&got, &page, &what);
            let out = coding_of(&got);
            assert!(accepts(accept, &out), "{what}: answered in {out}");
            if accepts(accept, upstream) {
                assert_eq!(
                    out, upstream,
                    "{what}: an acceptable upstream coding is kept"
                );
            }
            assert!(
                got.all("vary")
                    .iter()
                    .any(|v| v.to_ascii_lowercase().contains("accept-encoding")),
                "{what}: no Vary: Accept-Encoding"
            );
            assert_eq!(
                origin.last_request().all("accept-encoding"),
                [sent_upstream],
                "{what}: Accept-Encoding sent upstream"
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_clients_get_the_same_codings() {
    let page = page(30_000);
    let origin = coded_origin(&page).await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::h2c(proxy.addr);
    for upstream in CODINGS {
        for accept in ["gzip, br", "zstd"] {
            let what = format!("h2: upstream {upstream}, client {accept}");
            let got = client::fetch(
                &c,
                req(
                    Method::GET,
                    "site.test",
                    &format!("/page/{upstream}"),
                    &[("accept-encoding", accept)],
                ),
            )
            .await;
            assert_injected(&got, &page, &what);
            assert!(accepts(Some(accept), &coding_of(&got)), "{what}");
        }
    }
    proxy.shutdown().await;
}

/// One skip case: the request, and the response body the origin sent.
struct Case {
    reason: &'static str,
    host: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn case(reason: &'static str, path: &'static str) -> Case {
    Case {
        reason,
        host: "site.test",
        method: Method::GET,
        path,
        headers: vec![],
    }
}

impl Case {
    fn with(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }
}

#[tokio::test]
async fn every_skip_reason_passes_the_body_through_untouched() {
    let page = page(20_000);
    let bomb = gzip_bomb(16 << 20, 64);
    let utf16: Vec<u8> = [0xFFu8, 0xFE]
        .into_iter()
        .chain(
            "<html><body>hi</body></html>"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes()),
        )
        .collect();
    let stacked = compress("br", &compress("gzip", &page));
    let html = [("content-type", "text/html")];
    let origin = Origin::builder()
        .fixed_with_headers("/page", 200, &html, page.clone())
        .fixed_with_headers("/api/page", 200, &html, page.clone())
        .fixed_with_headers(
            "/json",
            200,
            &[("content-type", "application/json")],
            page.clone(),
        )
        .fixed_with_headers("/untyped", 200, &[], page.clone())
        .fixed_with_headers("/missing", 404, &html, page.clone())
        .fixed_with_headers(
            "/no-transform",
            200,
            &[html[0], ("cache-control", "public, no-transform")],
            page.clone(),
        )
        .fixed_with_headers(
            "/download",
            200,
            &[
                html[0],
                ("content-disposition", "attachment; filename=p.html"),
            ],
            page.clone(),
        )
        .fixed_with_headers(
            "/compress",
            200,
            &[html[0], ("content-encoding", "compress")],
            page.clone(),
        )
        .fixed_with_headers(
            "/stacked",
            200,
            &[html[0], ("content-encoding", "gzip, br")],
            stacked.clone(),
        )
        .fixed_with_headers(
            "/utf16",
            200,
            &[("content-type", "text/html; charset=utf-16")],
            utf16.clone(),
        )
        .fixed_with_headers(
            "/jis",
            200,
            &[("content-type", "text/html; charset=iso-2022-jp")],
            page.clone(),
        )
        .fixed_with_headers(
            "/bomb",
            200,
            &[html[0], ("content-encoding", "gzip")],
            bomb.clone(),
        )
        .fixed_with_headers(
            "/corrupt",
            200,
            &[html[0], ("content-encoding", "gzip")],
            page.clone(),
        )
        .start()
        .await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);

    let cases = [
        Case {
            method: Method::POST,
            ..case("method", "/page")
        },
        case("not_page_load", "/page").with("sec-fetch-dest", "empty"),
        case("not_page_load", "/page").with("sec-fetch-dest", "script"),
        case("iframe", "/page").with("sec-fetch-dest", "iframe"),
        case("htmx", "/page").with("hx-request", "true"),
        case("xhr", "/page").with("x-requested-with", "XMLHttpRequest"),
        case("prefetch", "/page").with("sec-purpose", "prefetch"),
        case("prefetch", "/page").with("purpose", "prefetch"),
        Case {
            host: "plain.test",
            ..case("route_off", "/page")
        },
        case("excluded_path", "/api/page"),
        case("content_type", "/json"),
        case("content_type", "/untyped"),
        case("status", "/missing"),
        case("no_transform", "/no-transform"),
        case("attachment", "/download"),
        case("content_encoding", "/compress"),
        case("stacked_encoding", "/stacked"),
        case("utf16", "/utf16"),
        case("charset", "/jis"),
        case("decompression_limit", "/bomb").with("accept-encoding", "gzip"),
        case("corrupt_encoding", "/corrupt").with("accept-encoding", "gzip"),
    ];
    for k in cases {
        let what = format!("{} {}{} {:?}", k.method, k.host, k.path, k.headers);
        let got = client::fetch(&c, req(k.method.clone(), k.host, k.path, &k.headers)).await;
        assert_eq!(
            verdict(&got),
            format!("skipped; reason={}", k.reason),
            "{what}"
        );
        let sent: &[u8] = match k.path {
            "/utf16" => &utf16,
            "/stacked" => &stacked,
            "/bomb" => &bomb,
            _ => &page,
        };
        assert!(
            got.body == sent,
            "{what}: body changed ({} vs {} bytes)",
            got.body.len(),
            sent.len()
        );
        if k.path == "/bomb" || k.path == "/corrupt" {
            // Passed through as received: still compressed, original length.
            assert_eq!(coding_of(&got), "gzip", "{what}");
            assert_eq!(
                header(&got, "content-length"),
                Some(sent.len().to_string()),
                "{what}"
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn pages_without_a_token_are_skipped() {
    let page = page(5_000);
    let origin = Origin::builder()
        .fixed_with_headers("/page", 200, &[("content-type", "text/html")], page.clone())
        .start()
        .await;
    let toml = PROXY_TOML.replace("dev_token = \"inject-test-token\"", "");
    let proxy = Proxy::with_origin(&toml, &origin).await;
    let got = client::fetch_get(&client::http1(proxy.addr), "site.test", "/page").await;
    assert_eq!(verdict(&got), "skipped; reason=no_token");
    assert!(got.body == page);
    proxy.shutdown().await;
}

#[tokio::test]
async fn frames_are_injected_when_configured() {
    let page = page(5_000);
    let origin = Origin::builder()
        .fixed_with_headers("/page", 200, &[("content-type", "text/html")], page.clone())
        .start()
        .await;
    let toml = PROXY_TOML.replace("debug_header = true", "debug_header = true\niframes = true");
    let proxy = Proxy::with_origin(&toml, &origin).await;
    let got = client::fetch(
        &client::http1(proxy.addr),
        req(
            Method::GET,
            "site.test",
            "/page",
            &[("sec-fetch-dest", "iframe")],
        ),
    )
    .await;
    assert_injected(&got, &page, "iframe with iframes = true");
    proxy.shutdown().await;
}

/// Upstream headers a shared cache or a validator would act on.
const CACHEY: [(&str, &str); 9] = [
    ("content-type", "text/html; charset=Shift_JIS"),
    ("etag", "\"v1\""),
    ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ("cache-control", "public, max-age=3600"),
    ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
    ("accept-ranges", "bytes"),
    ("cdn-cache-control", "max-age=600"),
    ("surrogate-control", "max-age=600"),
    ("vary", "Cookie"),
];

#[tokio::test]
async fn rewritten_pages_are_private_and_carry_no_validators() {
    let page = page(10_000);
    let mut headers = CACHEY.to_vec();
    headers.push(("content-encoding", "gzip"));
    headers.push(("set-cookie", "site=1; Path=/"));
    let origin = Origin::builder()
        .fixed_with_headers("/page", 200, &headers, compress("gzip", &page))
        .start()
        .await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let got = client::fetch(
        &client::http1(proxy.addr),
        req(
            Method::GET,
            "site.test",
            "/page",
            &[("accept-encoding", "br")],
        ),
    )
    .await;
    assert_injected(&got, &page, "cache headers");
    for gone in [
        "content-length",
        "etag",
        "last-modified",
        "expires",
        "accept-ranges",
        "cdn-cache-control",
        "surrogate-control",
    ] {
        assert!(got.all(gone).is_empty(), "{gone} kept: {:?}", got.all(gone));
    }
    assert_eq!(got.all("cache-control"), ["private, no-store"]);
    assert_eq!(
        got.all("content-type"),
        ["text/html; charset=Shift_JIS"],
        "Content-Type is never altered"
    );
    assert_eq!(got.all("content-encoding"), ["br"]);
    // The proxy may add its own session cookie; the site's stays.
    assert!(
        got.all("set-cookie").iter().any(|c| c == "site=1; Path=/"),
        "{:?}",
        got.all("set-cookie")
    );
    let vary = got.all("vary").join(",").to_ascii_lowercase();
    assert!(
        vary.contains("cookie") && vary.contains("accept-encoding"),
        "vary: {vary}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn validators_and_ranges_are_not_forwarded_for_pages() {
    let page = page(10_000);
    let origin = Origin::builder()
        .fixed_with_headers("/page", 200, &CACHEY, page.clone())
        .start()
        .await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);
    let conditional = [
        ("if-none-match", "\"v1\""),
        ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("range", "bytes=0-99"),
        ("if-range", "\"v1\""),
    ];
    let got = client::fetch(&c, req(Method::GET, "site.test", "/page", &conditional)).await;
    assert_injected(&got, &page, "conditional request");
    let seen = origin.last_request();
    for (name, _) in conditional {
        assert!(seen.all(name).is_empty(), "{name} forwarded upstream");
    }
    // A request that is not a page load keeps its validators.
    let xhr = [conditional[0], ("x-requested-with", "XMLHttpRequest")];
    let _ = client::fetch(&c, req(Method::GET, "site.test", "/page", &xhr)).await;
    assert_eq!(origin.last_request().all("if-none-match"), ["\"v1\""]);
    proxy.shutdown().await;
}

/// gzip in, gzip out: the upstream's compressed bytes go out as they are up
/// to the insertion point (src/codec/splice.rs), not a level-1 re-encoding.
#[tokio::test]
async fn a_gzip_page_keeps_the_upstreams_compressed_bytes_up_to_the_widget() {
    let page = page(100_000);
    let gz = compress("gzip", &page);
    let origin = Origin::builder()
        .fixed_with_headers(
            "/page",
            200,
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
            gz.clone(),
        )
        .start()
        .await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);
    let got = client::fetch(
        &c,
        req(
            Method::GET,
            "site.test",
            "/page",
            &[("accept-encoding", "gzip")],
        ),
    )
    .await;
    assert_injected(&got, &page, "gzip");
    assert_eq!(coding_of(&got), "gzip");
    let half = gz.len() / 2;
    assert_eq!(
        got.body[..half],
        gz[..half],
        "the first half is the upstream's own"
    );
    assert!(
        got.body.len() < gz.len() + 1024,
        "{} bytes for an upstream body of {}",
        got.body.len(),
        gz.len()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn head_answers_with_the_headers_get_would_get() {
    let page = page(10_000);
    let mut headers = CACHEY.to_vec();
    headers.push(("content-encoding", "gzip"));
    let origin = Origin::builder()
        .fixed_with_headers("/page", 200, &headers, compress("gzip", &page))
        .start()
        .await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);
    let accept = [("accept-encoding", "gzip, br")];
    let get = client::fetch(&c, req(Method::GET, "site.test", "/page", &accept)).await;
    let head = client::fetch(&c, req(Method::HEAD, "site.test", "/page", &accept)).await;
    assert_injected(&get, &page, "GET");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(origin.last_request().method, "HEAD");
    for name in [
        "x-chathub-inject",
        "content-type",
        "content-encoding",
        "cache-control",
        "vary",
        "etag",
        "last-modified",
        "accept-ranges",
        "content-length",
    ] {
        assert_eq!(
            head.all(name),
            get.all(name),
            "HEAD and GET differ in {name}"
        );
    }
    // Counted as its header says, as GET is: two pages injected, nothing else.
    let outcomes = inject_outcomes(&proxy.metrics.render());
    assert_eq!(
        outcomes,
        [(("injected".to_owned(), String::new()), 2.0)].into(),
        "{outcomes:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn bodyless_and_partial_statuses_pass_through() {
    let page = page(10_000);
    let html = ("content-type", "text/html");
    let origin = Origin::builder()
        .fixed_with_headers("/no-content", 204, &[html], Bytes::new())
        .fixed_with_headers(
            "/not-modified",
            304,
            &[html, ("etag", "\"v1\"")],
            Bytes::new(),
        )
        .fixed_with_headers(
            "/partial",
            206,
            &[html, ("content-range", "bytes 0-99/10000")],
            page[..100].to_vec(),
        )
        .start()
        .await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);

    let got = client::fetch_get(&c, "site.test", "/no-content").await;
    assert_eq!(
        (got.status.as_u16(), verdict(&got)),
        (204, "skipped; reason=status".into())
    );
    assert!(got.body.is_empty());

    let got = client::fetch_get(&c, "site.test", "/not-modified").await;
    assert_eq!(
        (got.status.as_u16(), verdict(&got)),
        (304, "skipped; reason=status".into())
    );
    assert!(got.body.is_empty());
    assert_eq!(got.all("etag"), ["\"v1\""]);

    let got = client::fetch_get(&c, "site.test", "/partial").await;
    assert_eq!(
        (got.status.as_u16(), verdict(&got)),
        (206, "skipped; reason=status".into())
    );
    assert!(got.body[..] == page[..100], "a 206 is never rewritten");
    assert_eq!(got.all("content-range"), ["bytes 0-99/10000"]);
    proxy.shutdown().await;
}

/// The first part of a slow page as the origin sends it (flushed, so it can be
/// decoded on its own), and the rest.
fn slow_parts(coding: &str, head: &[u8], tail: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use std::io::Write;
    match coding {
        "identity" => (head.to_vec(), tail.to_vec()),
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(head).unwrap();
            e.flush().unwrap();
            let first = std::mem::take(e.get_mut());
            e.write_all(tail).unwrap();
            (first, e.finish().unwrap())
        }
        other => panic!("no slow page in {other}"),
    }
}

#[tokio::test]
async fn first_bytes_of_a_slow_page_arrive_before_the_origin_finishes() {
    let head = b"<!doctype html><html><head><title>slow</title></head><body><p>first paragraph</p>"
        .to_vec();
    let tail = b"<p>second paragraph</p></body></html>".to_vec();
    for coding in ["identity", "gzip"] {
        let gate = Gate::new();
        let (first, rest) = slow_parts(coding, &head, &tail);
        let origin = Origin::builder()
            .stream_with_headers(
                "/slow",
                200,
                &html_headers(coding),
                vec![
                    Step::data(first),
                    Step::Wait(gate.clone()),
                    Step::data(rest),
                ],
            )
            .start()
            .await;
        let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
        let c = client::http1(proxy.addr);
        let accept = if coding == "gzip" { "gzip" } else { "identity" };
        let resp = client::send(
            &c,
            req(
                Method::GET,
                "site.test",
                "/slow",
                &[("accept-encoding", accept)],
            ),
        )
        .await;
        let out = resp
            .headers()
            .get("content-encoding")
            .map_or("identity".to_string(), |v| v.to_str().unwrap().to_string());
        assert_eq!(out, coding);
        let mut body = resp.into_body();
        let mut received = Vec::new();
        // The gate is closed: the origin has not finished, yet the head must arrive.
        while !decompress_prefix(&out, &received).starts_with(&head) {
            let frame = tokio::time::timeout(GUARD, body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!("{coding}: first bytes held back until the origin finishes")
                })
                .expect("body ended early")
                .expect("body failed");
            if let Ok(d) = frame.into_data() {
                received.extend_from_slice(&d);
            }
        }
        gate.release();
        let rest = tokio::time::timeout(GUARD, body.collect())
            .await
            .expect("rest")
            .expect("rest failed")
            .to_bytes();
        received.extend_from_slice(&rest);
        let full = decompress(&out, &received);
        let (stripped, tags) = strip_tags(&full);
        assert_eq!(tags, 1, "{coding}");
        assert_eq!(stripped, [head.clone(), tail.clone()].concat(), "{coding}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn an_upstream_failure_mid_page_aborts_the_client_transfer() {
    let page = page(200_000);
    for coding in ["identity", "gzip", "br"] {
        let wire = compress(coding, &page);
        let origin = Origin::builder()
            .stream_with_headers(
                "/dies",
                200,
                &html_headers(coding),
                vec![
                    Step::data(wire[..wire.len() / 2].to_vec()),
                    Step::Sleep(Duration::from_millis(100)),
                    Step::Fail,
                ],
            )
            .start()
            .await;
        let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
        let c = client::http1(proxy.addr);
        let resp = client::send(
            &c,
            req(
                Method::GET,
                "site.test",
                "/dies",
                &[("accept-encoding", coding)],
            ),
        )
        .await;
        let result = tokio::time::timeout(GUARD, resp.into_body().collect())
            .await
            .expect("body hung");
        assert!(
            result.is_err(),
            "{coding}: a page cut by the origin ended cleanly"
        );
        proxy.shutdown().await;
    }
}

/// Issue 3, charsets, through the running proxy: each page comes out
/// byte-identical but for the one tag, whether its charset is named by the
/// header or only by its `<meta>`, identity or gzip; `Content-Type` is never
/// altered; a UTF-16 page passes through untouched.
#[tokio::test]
async fn non_utf8_pages_come_out_byte_identical_but_for_the_tag() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let cases = [
        ("windows-1251.html", "windows-1251"),
        ("shift_jis.html", "Shift_JIS"),
        ("euc-kr.html", "EUC-KR"),
        ("iso-8859-1.html", "ISO-8859-1"),
    ];
    let mut builder = Origin::builder();
    let mut expected = Vec::new();
    for (file, charset) in cases {
        let bytes = std::fs::read(format!("{fixtures}/{file}")).expect("fixture");
        let header_ct = format!("text/html; charset={charset}");
        for (path, ct) in [
            (format!("/h/{file}"), header_ct.as_str()),
            (format!("/m/{file}"), "text/html"),
        ] {
            builder =
                builder.fixed_with_headers(&path, 200, &[("content-type", ct)], bytes.clone());
            expected.push((path, ct.to_owned(), bytes.clone(), "identity"));
        }
        let gz_path = format!("/gz/{file}");
        builder = builder.fixed_with_headers(
            &gz_path,
            200,
            &[
                ("content-type", header_ct.as_str()),
                ("content-encoding", "gzip"),
            ],
            compress("gzip", &bytes),
        );
        expected.push((gz_path, header_ct.clone(), bytes, "gzip"));
    }
    let utf16 = std::fs::read(format!("{fixtures}/utf16le-bom.html")).expect("fixture");
    builder = builder.fixed_with_headers(
        "/utf16",
        200,
        &[("content-type", "text/html")],
        utf16.clone(),
    );
    let origin = builder.start().await;
    let proxy = Proxy::with_origin(PROXY_TOML, &origin).await;
    let c = client::http1(proxy.addr);

    for (path, ct, original, enc) in expected {
        let got = client::fetch(
            &c,
            req(Method::GET, "site.test", &path, &[("accept-encoding", enc)]),
        )
        .await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(
            header(&got, "content-type").as_deref(),
            Some(ct.as_str()),
            "{path}: Content-Type altered"
        );
        let body = if coding_of(&got) == "identity" {
            got.body.to_vec()
        } else {
            decompress(&coding_of(&got), &got.body)
        };
        let (rest, tags) = strip_tags(&body);
        assert_eq!(tags, 1, "{path}: exactly one tag");
        assert!(rest == original, "{path}: bytes outside the tag changed");
    }
    let got = client::fetch_get(&c, "site.test", "/utf16").await;
    assert!(
        got.body == utf16,
        "a UTF-16 page must pass through untouched"
    );
    assert_eq!(strip_tags(&got.body).1, 0);
    proxy.shutdown().await;
}
