//! The proxy core end to end, with injection off: routing, header hygiene,
//! forwarded headers, streaming both ways, upstream failures, WebSocket, SSE,
//! HTTP/2 clients, graceful shutdown and slow clients. Every test puts a real
//! proxy between a real client and a fake origin on loopback sockets.

use crate::support::client::{
    self, BoxError, TestBody, TestClient, connect_from, fetch, fetch_get, get, send,
};
use crate::support::harness::{Proxy, one_route};
use crate::support::origin::{Gate, Origin, Step, matches_pattern, pattern_chunk, refused_addr};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode, Version};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const SITE: &str = "example.test";

/// A request with an explicit `Host` header (HTTP/1 only: the URI's own
/// authority is a placeholder the fixed connector ignores).
fn with_host(method: Method, host: &str, path: &str, body: TestBody) -> Request<TestBody> {
    client::request(method, "placeholder.invalid", path)
        .header(http::header::HOST, host)
        .body(body)
        .expect("request")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("no body frame within 30 s")?
            .expect("body error");
        // Skip trailers, and empty DATA frames (h2 may end a stream with one).
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            return Some(data);
        }
    }
}

/// Read frames until `buf` holds `want`; fails the test after 30 s.
async fn read_until(body: &mut Incoming, buf: &mut String, want: &str) {
    while !buf.contains(want) {
        let data = next_data(body)
            .await
            .unwrap_or_else(|| panic!("body ended before {want:?}; got {buf:?}"));
        buf.push_str(&String::from_utf8_lossy(&data));
    }
}

/// Read frames until `buf` holds at least `n` bytes.
async fn read_at_least(body: &mut Incoming, buf: &mut Vec<u8>, n: usize) {
    while buf.len() < n {
        let data = next_data(body)
            .await
            .unwrap_or_else(|| panic!("body ended after {} bytes, wanted {n}", buf.len()));
        buf.extend_from_slice(&data);
    }
}

/// A raw HTTP/1.1 exchange that asks the server to close afterwards.
async fn raw(addr: SocketAddr, head: &str) -> (Option<u16>, Vec<u8>) {
    let (bytes, _closed) =
        client::raw_exchange(addr, head.as_bytes(), Duration::from_secs(10)).await;
    (client::status_of(&bytes), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_exact_host_wildcard_and_path_prefix_on_segment_boundaries() {
    let site = Origin::builder().fallback_fixed(200, "site").start().await;
    let app = Origin::builder().fallback_fixed(200, "app").start().await;
    let wild = Origin::builder().fallback_fixed(200, "wild").start().await;
    let proxy = Proxy::with(
        r#"
[[routes]]
name = "site"
hosts = ["example.test"]
upstream = "{site}"
inject = false
[[routes]]
name = "app"
hosts = ["example.test"]
path_prefix = "/app/"
upstream = "{app}"
inject = false
[[routes]]
name = "wild"
hosts = ["*.example.test"]
upstream = "{wild}"
inject = false
[[routes]]
name = "only-wild"
hosts = ["*.only.test"]
upstream = "{wild}"
inject = false
"#,
        &[
            ("site", &site.url()),
            ("app", &app.url()),
            ("wild", &wild.url()),
        ],
    )
    .await;
    let c = client::http1(proxy.addr);
    let cases = [
        ("example.test", "/", Some("site")),
        ("example.test", "/index.html", Some("site")),
        ("example.test", "/app", Some("app")),
        ("example.test", "/app/", Some("app")),
        ("example.test", "/app/deep/page?q=1", Some("app")),
        ("example.test", "/app?x=1", Some("app")),
        // Segment boundaries: `/app` is not a prefix of these.
        ("example.test", "/app2", Some("site")),
        ("example.test", "/apple/x", Some("site")),
        ("example.test", "/ap", Some("site")),
        // Wildcards match any depth of subdomain, and the exact name wins over them.
        ("www.example.test", "/", Some("wild")),
        ("www.example.test", "/app/x", Some("wild")),
        ("a.b.example.test", "/", Some("wild")),
        ("x.only.test", "/", Some("wild")),
        // A wildcard does not match its bare suffix, nor a name merely ending in it.
        ("only.test", "/", None),
        ("notexample.test", "/", None),
    ];
    for (host, path, want) in cases {
        let got = fetch_get(&c, host, path).await;
        match want {
            Some(want) => assert_eq!(
                (got.status, got.text().as_str()),
                (StatusCode::OK, want),
                "{host}{path}"
            ),
            None => assert_eq!(
                got.status,
                StatusCode::MISDIRECTED_REQUEST,
                "{host}{path}: {}",
                got.text()
            ),
        }
    }
    // The prefix is a routing key, not a rewrite: the origin gets the client's path.
    let paths: Vec<String> = app.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.contains(&"/app/deep/page?q=1".to_string()),
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_matching_ignores_case_and_a_port_unless_the_route_names_one() {
    let site = Origin::builder().fallback_fixed(200, "site").start().await;
    let ported = Origin::builder()
        .fallback_fixed(200, "ported")
        .start()
        .await;
    let proxy = Proxy::with(
        r#"
[[routes]]
name = "site"
hosts = ["Example.TEST"]
upstream = "{site}"
inject = false
[[routes]]
name = "ported"
hosts = ["ported.test:8443"]
upstream = "{ported}"
inject = false
"#,
        &[("site", &site.url()), ("ported", &ported.url())],
    )
    .await;
    let c = client::http1(proxy.addr);
    for host in [
        "example.test",
        "EXAMPLE.TEST",
        "ExAmPlE.tEsT:8080",
        "example.test:1",
        "example.test.",
    ] {
        let got = fetch(&c, with_host(Method::GET, host, "/", client::empty())).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (StatusCode::OK, "site"),
            "Host: {host}"
        );
    }
    for (host, want) in [
        ("ported.test:8443", StatusCode::OK),
        ("PORTED.test:8443", StatusCode::OK),
    ] {
        let got = fetch(&c, with_host(Method::GET, host, "/", client::empty())).await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (want, "ported"),
            "Host: {host}"
        );
    }
    for host in ["ported.test", "ported.test:9999"] {
        let got = fetch(&c, with_host(Method::GET, host, "/", client::empty())).await;
        assert_eq!(got.status, StatusCode::MISDIRECTED_REQUEST, "Host: {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_421_with_a_short_body_and_no_origin_is_dialled() {
    let origin = Origin::echo().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::http1(proxy.addr);
    for host in [
        "unknown.test",
        "example.test.evil.test",
        "www.example.test",
        "127.0.0.1",
    ] {
        let got = fetch_get(&c, host, "/").await;
        assert_eq!(got.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(
            !got.body.is_empty() && got.body.len() < 200,
            "421 body should be one short line: {:?}",
            got.text()
        );
    }
    let h2 = client::h2c(proxy.addr);
    assert_eq!(
        fetch_get(&h2, "unknown.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(
        origin.connections(),
        0,
        "an unknown host must never cause a connection to any origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_route_takes_unknown_hosts_but_not_a_missing_host() {
    let site = Origin::builder().fallback_fixed(200, "site").start().await;
    let fallback = Origin::builder()
        .fallback_fixed(200, "fallback")
        .start()
        .await;
    let proxy = Proxy::with(
        r#"
default_route = "fallback"
[[routes]]
name = "site"
hosts = ["example.test"]
upstream = "{site}"
inject = false
[[routes]]
name = "fallback"
hosts = ["fallback.invalid"]
upstream = "{fallback}"
inject = false
"#,
        &[("site", &site.url()), ("fallback", &fallback.url())],
    )
    .await;
    let c = client::http1(proxy.addr);
    assert_eq!(fetch_get(&c, SITE, "/").await.text(), "site");
    let got = fetch_get(&c, "anything.else.test", "/x").await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (StatusCode::OK, "fallback")
    );
    let before = fallback.requests().len();
    let (status, _) = raw(proxy.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, Some(400));
    assert_eq!(
        fallback.requests().len(),
        before,
        "a request without Host must not reach the default route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_duplicate_host_is_400_without_touching_the_origin() {
    let origin = Origin::echo().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let heads = [
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: example.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        // Even two equal values: RFC 9112 §3.2 says more than one Host line is a 400.
        "GET / HTTP/1.1\r\nHost: example.test\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
    ];
    for head in heads {
        let (status, bytes) = raw(proxy.addr, head).await;
        assert_eq!(
            status,
            Some(400),
            "{head:?} got {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(origin.connections(), 0);
    // The same connection setup with one good Host works.
    let (status, _) = raw(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let origin = Origin::builder()
        .fixed_with_headers(
            "/resp",
            200,
            &[
                ("connection", "X-Hop-Resp"),
                ("x-hop-resp", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic realm=x"),
                ("x-keep-resp", "yes"),
            ],
            "ok",
        )
        .record_raw_heads()
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::http1(proxy.addr);

    let req = client::request(Method::GET, SITE, "/echo")
        .header("connection", "keep-alive, X-Hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-keep", "yes")
        .body(client::empty())
        .unwrap();
    let echo = fetch(&c, req).await.echo();
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            !echo.has(gone),
            "{gone} reached the origin: {:?}",
            echo.headers
        );
    }
    for v in echo.all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop"), "connection: {v}");
    }
    assert_eq!(echo.header("x-keep").as_deref(), Some("yes"));
    let head = origin.raw_heads().pop().expect("raw head");
    assert!(!head.to_ascii_lowercase().contains("secret"), "{head}");

    let got = fetch_get(&c, SITE, "/resp").await;
    assert_eq!(got.status, StatusCode::OK);
    for gone in ["x-hop-resp", "keep-alive", "proxy-authenticate"] {
        assert!(
            got.headers.get(gone).is_none(),
            "{gone} reached the client: {:?}",
            got.headers
        );
    }
    for v in got.all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop"), "connection: {v}");
    }
    assert_eq!(got.all("x-keep-resp"), ["yes"]);
}

const TRUSTING: &str = r#"
[server]
trusted_proxies = ["127.0.0.2"]
[[routes]]
name = "site"
hosts = ["example.test"]
upstream = "{origin}"
inject = false
"#;

fn spoofing_request() -> Request<TestBody> {
    client::request(Method::GET, SITE, "/echo")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.test")
        .header("forwarded", "for=1.2.3.4;proto=https;host=public.test")
        .header("x-real-ip", "1.2.3.4")
        .body(client::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let origin = Origin::echo().await;
    let proxy = Proxy::with_origin(TRUSTING, &origin).await;
    let c = client::http1_from(proxy.addr, ip("127.0.0.3"));
    let echo = fetch(&c, spoofing_request()).await.echo();
    assert_eq!(echo.all("x-forwarded-for"), ["127.0.0.3"]);
    assert_eq!(echo.all("x-forwarded-proto"), ["http"]);
    assert_eq!(echo.all("x-forwarded-host"), [SITE]);
    let fwd = echo.all("forwarded").join(", ");
    assert!(
        fwd.contains("for=127.0.0.3") || fwd.contains("for=\"127.0.0.3\""),
        "{fwd}"
    );
    assert!(fwd.contains("proto=http"), "{fwd}");
    for (k, v) in &echo.headers {
        assert!(
            !v.contains("1.2.3.4") && !v.contains("public.test"),
            "spoofed value survived in {k}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_a_trusted_peer_are_kept_and_extended() {
    let origin = Origin::echo().await;
    let proxy = Proxy::with_origin(TRUSTING, &origin).await;
    let c = client::http1_from(proxy.addr, ip("127.0.0.2"));
    let echo = fetch(&c, spoofing_request()).await.echo();
    let xff: Vec<String> = echo
        .all("x-forwarded-for")
        .join(",")
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    assert_eq!(xff, ["1.2.3.4", "127.0.0.2"]);
    assert_eq!(echo.all("x-forwarded-proto"), ["https"]);
    assert_eq!(echo.all("x-forwarded-host"), ["public.test"]);
    let fwd = echo.all("forwarded").join(", ");
    let (a, b) = (fwd.find("1.2.3.4"), fwd.find("127.0.0.2"));
    assert!(
        a.is_some() && b.is_some() && a < b,
        "the trusted hop's Forwarded entries come first, ours last: {fwd}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_preserved_by_default_and_rewritten_with_preserve_host_false() {
    let origin = Origin::echo().await;
    let proxy = Proxy::with_origin(
        r#"
[[routes]]
name = "keep"
hosts = ["keep.test"]
upstream = "{origin}"
inject = false
[[routes]]
name = "rewrite"
hosts = ["rewrite.test"]
upstream = "{origin}"
preserve_host = false
inject = false
"#,
        &origin,
    )
    .await;
    let c = client::http1(proxy.addr);
    let echo = fetch_get(&c, "keep.test", "/").await.echo();
    assert_eq!(echo.all("host"), ["keep.test"]);
    let echo = fetch_get(&c, "rewrite.test", "/").await.echo();
    assert_eq!(echo.all("host"), [origin.addr().to_string()]);
    // The name the client used still travels, in X-Forwarded-Host.
    assert_eq!(echo.all("x-forwarded-host"), ["rewrite.test"]);
}

const BIG: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_streams_to_the_origin_while_the_client_is_still_sending() {
    let origin = Origin::builder().upload_sink("/upload").start().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::http1(proxy.addr);
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(4);
    let req = client::request(Method::POST, SITE, "/upload")
        .body(body.boxed_unsync())
        .unwrap();
    let pending = tokio::spawn(async move { fetch(&c, req).await });

    let mut sent = 0u64;
    while sent < 1024 * 1024 {
        tx.send_data(pattern_chunk(sent, CHUNK))
            .await
            .expect("send");
        sent += CHUNK as u64;
    }
    // Hold the other 99 MB back until the origin has bytes: a proxy that
    // buffered the request body would never pass this point.
    assert!(
        origin.wait_upload_bytes(1, Duration::from_secs(30)).await,
        "the origin saw nothing of the upload while the client was still sending"
    );
    while sent < BIG {
        let n = (BIG - sent).min(CHUNK as u64) as usize;
        tx.send_data(pattern_chunk(sent, n)).await.expect("send");
        sent += n as u64;
    }
    drop(tx);
    let got = tokio::time::timeout(Duration::from_secs(120), pending)
        .await
        .expect("upload did not finish")
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let report: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(report["bytes"], BIG);
    assert_eq!(report["intact"], true, "the upload arrived altered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_download_streams_to_the_client_before_the_origin_finishes() {
    let origin = Origin::builder().large("/big", BIG).start().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::http1(proxy.addr);
    let resp = send(&c, get(SITE, "/big")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    if let Some(len) = resp.headers().get(http::header::CONTENT_LENGTH) {
        assert_eq!(len.to_str().unwrap(), BIG.to_string());
    }
    let mut body = resp.into_body();
    let first = next_data(&mut body).await.expect("first bytes");
    assert!(
        !origin.large_finished(),
        "the first bytes reached the client only after the origin had sent all {BIG} (sent so far: {})",
        origin.large_sent()
    );
    assert!(matches_pattern(0, &first));
    let mut received = first.len() as u64;
    while let Some(data) = next_data(&mut body).await {
        assert!(
            matches_pattern(received, &data),
            "bytes at offset {received} differ from what the origin sent"
        );
        received += data.len() as u64;
    }
    assert_eq!(received, BIG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_gives_502() {
    let dead = refused_addr().await;
    let url = format!("http://{dead}");
    let proxy = Proxy::with(&one_route(SITE), &[("origin", &url)]).await;
    let c = client::http1(proxy.addr);
    let got = tokio::time::timeout(Duration::from_secs(10), fetch_get(&c, SITE, "/"))
        .await
        .expect("no quick answer");
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(got.body.len() < 200, "{}", got.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_upstream_gives_504_after_the_response_timeout() {
    let hole = Origin::black_hole().await;
    let toml = format!(
        "[upstream]\nresponse_timeout = \"500ms\"\n{}",
        one_route(SITE)
    );
    let proxy = Proxy::with_origin(&toml, &hole).await;
    let c = client::http1(proxy.addr);
    let got = tokio::time::timeout(Duration::from_secs(30), fetch_get(&c, SITE, "/"))
        .await
        .expect("no answer at all");
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text());
    assert!(
        hole.connections() >= 1,
        "the proxy never reached the black hole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_body_aborts_the_client_transfer() {
    let origin = Origin::builder()
        .die_mid_body("/with-length", Some(100_000), 1000)
        .die_mid_body("/chunked", None, 1000)
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    for (client, name) in [
        (client::http1(proxy.addr), "http/1.1"),
        (client::h2c(proxy.addr), "h2"),
    ] {
        for path in ["/with-length", "/chunked"] {
            let resp = send(&client, get(SITE, path)).await;
            assert_eq!(resp.status(), StatusCode::OK);
            let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
                .await
                .unwrap_or_else(|_| panic!("{name} {path}: the body neither ended nor failed"));
            match body {
                Err(_) => {}
                Ok(b) => panic!(
                    "{name} {path}: the client saw a clean end after {} bytes; a truncated body must look truncated",
                    b.to_bytes().len()
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_1000_messages_through_the_proxy() {
    let origin = Origin::builder().websocket_echo("/ws").start().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let tcp = connect_from(proxy.addr, None).await.unwrap();
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(format!("ws://{SITE}/ws"), tcp),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..1000 {
        let msg = if i % 2 == 0 {
            Message::text(format!("message {i}"))
        } else {
            Message::binary(pattern_chunk(i, 100 + i as usize))
        };
        ws.send(msg.clone()).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("echo timed out")
            .expect("stream ended")
            .expect("ws error");
        assert_eq!(back, msg, "message {i}");
    }
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_by_one() {
    let gate = Gate::new();
    let events = ["e0", "e1", "e2", "e3", "e4"];
    let origin = Origin::builder()
        .sse_gated("/events", &events, &gate)
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    for c in [client::http1(proxy.addr), client::h2c(proxy.addr)] {
        let req = client::request(Method::GET, SITE, "/events")
            .header("accept", "text/event-stream")
            .body(client::empty())
            .unwrap();
        let resp = send(&c, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let mut seen = String::new();
        for (i, e) in events.iter().enumerate() {
            // The origin cannot send the next event before the gate opens, so
            // seeing this one here means it was not held back.
            read_until(&mut body, &mut seen, &format!("data: {e}\n\n")).await;
            if let Some(next) = events.get(i + 1) {
                assert!(!seen.contains(next));
                gate.release();
            }
        }
        assert!(
            next_data(&mut body).await.is_none(),
            "extra bytes after the last event"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_paused_response_is_let_go_at_once() {
    let gate = Gate::new();
    let origin = Origin::builder()
        .sse_gated("/events", &["e0", "e1"], &gate)
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let mut tcp = client::connect_from(proxy.addr, None).await.unwrap();
    tcp.write_all(format!("GET /events HTTP/1.1\r\nHost: {SITE}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data: e0") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
        )
        .await
        .expect("the first event in time")
        .unwrap();
        assert!(n > 0, "closed before the first event");
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(proxy.metrics.open_connections(), 1);
    // The origin holds the next event until the gate opens; the client goes.
    drop(tcp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.metrics.open_connections() != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        proxy.metrics.open_connections(),
        0,
        "the connection waited for the origin's next event after its client left"
    );
    gate.open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_client_reaches_an_http1_origin() {
    let origin = Origin::echo().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::h2c(proxy.addr);
    let req = client::request(Method::POST, SITE, "/h2?x=1")
        .body(client::full("hello over h2"))
        .unwrap();
    let got = fetch(&c, req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.version, Version::HTTP_2);
    let echo = got.echo();
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(
        (echo.method.as_str(), echo.path.as_str(), echo.body.as_str()),
        ("POST", "/h2?x=1", "hello over h2")
    );
    assert_eq!(echo.all("host"), [SITE]);

    // Many streams on the one connection at once.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c: TestClient = c.clone();
        tasks.push(tokio::spawn(async move {
            fetch_get(&c, SITE, &format!("/s{i}")).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let echo = t.await.unwrap().echo();
        assert_eq!(echo.path, format!("/s{i}"));
    }
}

/// Whether a fresh connection to `addr` still gets an answer.
async fn still_serving(addr: SocketAddr) -> bool {
    let Ok(mut tcp) = connect_from(addr, None).await else {
        return false;
    };
    if tcp
        .write_all(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let (bytes, _) = client::read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    client::status_of(&bytes).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_in_flight_responses_finish_byte_exact() {
    let gate = Gate::new();
    let (part1, part2) = (pattern_chunk(0, 10_000), pattern_chunk(10_000, 150_000));
    let origin = Origin::builder()
        .stream(
            "/slow",
            vec![
                Step::Data(part1.clone()),
                Step::Wait(gate.clone()),
                Step::Data(part2.clone()),
            ],
        )
        .start()
        .await;
    let toml = format!("[server]\ngrace_period = \"30s\"\n{}", one_route(SITE));
    let mut proxy = Proxy::with_origin(&toml, &origin).await;
    let addr = proxy.addr;

    let mut bodies = Vec::new();
    for c in [client::http1(addr), client::h2c(addr)] {
        let resp = send(&c, get(SITE, "/slow")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        read_at_least(&mut body, &mut buf, part1.len()).await;
        bodies.push((body, buf));
    }

    let shutdown = tokio::spawn(proxy.take_running().shutdown());
    // Draining: new connections are no longer served...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while still_serving(addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy kept accepting after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...while the two responses in flight are still waiting on the origin.
    assert!(
        !shutdown.is_finished(),
        "shutdown finished while responses were still in flight"
    );

    gate.open();
    let expected = [part1.as_ref(), part2.as_ref()].concat();
    for (mut body, mut buf) in bodies {
        while let Some(d) = next_data(&mut body).await {
            buf.extend_from_slice(&d);
        }
        assert!(
            buf == expected,
            "in-flight response changed: {} bytes, expected {}",
            buf.len(),
            expected.len()
        );
    }
    let clean = tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown hung")
        .unwrap();
    assert!(
        clean,
        "shutdown reported connections cut at the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_closed_at_the_header_read_timeout() {
    let origin = Origin::echo().await;
    let toml = format!(
        "[server]\nheader_read_timeout = \"1s\"\n{}",
        one_route(SITE)
    );
    let proxy = Proxy::with_origin(&toml, &origin).await;

    let tcp = connect_from(proxy.addr, None).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    // One header line every 200 ms: each read makes progress, but the head is
    // never complete. The deadline is for the whole head, so this must end.
    let trickle = tokio::spawn(async move {
        if wr
            .write_all(b"GET / HTTP/1.1\r\nHost: example.test\r\n")
            .await
            .is_err()
        {
            return;
        }
        for i in 0..150 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr
                .write_all(format!("x-slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read(&mut rd, &mut buf),
        )
        .await
        {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    trickle.abort();
    assert!(
        closed,
        "a slow-header client was still connected after 30 s"
    );
    if !got.is_empty() {
        assert_eq!(
            client::status_of(&got),
            Some(408),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(
        origin.requests().len(),
        0,
        "an incomplete head was forwarded"
    );

    // A client that sends its head at once is served as usual.
    let c = client::http1(proxy.addr);
    assert_eq!(fetch_get(&c, SITE, "/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_never_replayed_to_the_origin() {
    let origin = Origin::builder().drop_after_body("/submit").start().await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::http1(proxy.addr);
    // Warm the proxy's pool so the POST goes out on a reused connection, the
    // case where clients are tempted to retry.
    assert_eq!(fetch_get(&c, SITE, "/warm").await.status, StatusCode::OK);
    let req = client::request(Method::POST, SITE, "/submit")
        .body(
            Full::new(Bytes::from_static(b"order=1"))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap();
    let got = fetch(&c, req).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    // Any retry happens before the proxy answers, so the count is final now.
    assert_eq!(
        origin.count("POST", "/submit"),
        1,
        "the POST reached the origin more than once"
    );

    // A fresh connection, same outcome.
    let c = client::http1(proxy.addr);
    let req = client::request(Method::POST, SITE, "/submit")
        .body(client::full("order=2"))
        .unwrap();
    assert_eq!(fetch(&c, req).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.count("POST", "/submit"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_connect_405_without_touching_the_origin() {
    let origin = Origin::echo().await;
    let toml = format!("server.max_header_bytes = 4096\n{}", one_route(SITE));
    let proxy = Proxy::with_origin(&toml, &origin).await;
    // Names + values + 4 bytes of framing per field are counted; stay just
    // under, then go just over the 4096-byte cap.
    let head = |pad: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: {SITE}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        )
    };
    let fixed =
        "host".len() + SITE.len() + 4 + "x-pad".len() + 4 + "connection".len() + "close".len() + 4;
    let (under, _) = raw(proxy.addr, &head(4096 - fixed)).await;
    assert_eq!(under, Some(200));
    let (over, _) = raw(proxy.addr, &head(4096 - fixed + 1)).await;
    assert_eq!(over, Some(431));
    let seen = origin.connections();
    let (connect, _) = raw(
        proxy.addr,
        &format!("CONNECT {SITE}:443 HTTP/1.1\r\nHost: {SITE}:443\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(connect, Some(405));
    assert_eq!(
        origin.connections(),
        seen,
        "neither the 431 nor the CONNECT may reach the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let origin = Origin::echo().await;
    let toml = format!("server.max_connections = 2\n{}", one_route(SITE));
    let proxy = Proxy::with_origin(&toml, &origin).await;
    // Two idle connections take both slots.
    let a = connect_from(proxy.addr, None).await.expect("a");
    let b = connect_from(proxy.addr, None).await.expect("b");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third is accepted by the kernel (backlog) but not served while the cap holds.
    let third = tokio::spawn({
        let addr = proxy.addr;
        async move {
            raw(
                addr,
                &format!("GET / HTTP/1.1\r\nHost: {SITE}\r\nConnection: close\r\n\r\n"),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past max_connections = 2"
    );
    drop(a);
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot freed")
        .expect("task");
    assert_eq!(status, Some(200));
    drop(b);
}
