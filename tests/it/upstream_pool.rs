//! The proxy's own keep-alive pool for plain-`http` upstreams
//! (`src/upstream/pool.rs`): connections are reused once a response body has
//! ended, never while one is in flight or after it was abandoned, replaced
//! when the upstream closed them while idle, and closed by the proxy after
//! `upstream.pool_idle_timeout`.

use crate::support::client::{self, fetch, fetch_get, send};
use crate::support::harness::{Proxy, one_route};
use crate::support::origin::{Origin, Step};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SITE: &str = "pool.test";

/// How a [`RawOrigin`] treats a connection after each answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// Keeps it open for the next request.
    KeepAlive,
    /// Closes it without saying so, as an upstream does when its keep-alive
    /// timeout passes between two requests.
    CloseSilently,
    /// Answers with `Connection: close` and closes it, as many old backends do.
    CloseSaid,
}

/// A bare HTTP/1.1 origin answering every request head with `ok`. It counts
/// the connections it accepted and those the proxy closed.
struct RawOrigin {
    url: String,
    accepted: Arc<AtomicUsize>,
    closed_by_proxy: Arc<AtomicUsize>,
}

impl RawOrigin {
    async fn start(after: After) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_proxy = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed_by_proxy.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                c.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let close: &[u8] = match after {
                                After::CloseSaid => b"connection: close\r\n",
                                _ => b"",
                            };
                            let answer = [
                                &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"[..],
                                close,
                                b"content-length: 2\r\n\r\nok",
                            ]
                            .concat();
                            if tcp.write_all(&answer).await.is_err() {
                                return;
                            }
                            if after != After::KeepAlive {
                                return; // dropped: closed
                            }
                        }
                    }
                });
            }
        });
        RawOrigin {
            url,
            accepted,
            closed_by_proxy,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_proxy(&self) -> usize {
        self.closed_by_proxy.load(Ordering::SeqCst)
    }
}

async fn proxy_to(raw: &RawOrigin, extra: &str) -> Proxy {
    Proxy::with(
        &format!("{extra}\n{}", one_route(SITE)),
        &[("origin", &raw.url)],
    )
    .await
}

/// Wait up to 5 s for `done`; whether it came is for the caller to assert.
async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_connection_carries_requests_one_after_another() {
    let origin = Origin::builder()
        .fixed("/fixed", 200, "hello")
        .large("/large", 300_000)
        .stream(
            "/chunked",
            vec![Step::data("part one, "), Step::data("part two")],
        )
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    let c = client::http1(proxy.addr);
    for round in 0..5 {
        assert_eq!(fetch_get(&c, SITE, "/fixed").await.text(), "hello");
        assert_eq!(fetch_get(&c, SITE, "/large").await.body.len(), 300_000);
        assert_eq!(
            fetch_get(&c, SITE, "/chunked").await.text(),
            "part one, part two"
        );
        // No body at all: the connection is free as soon as the head is in.
        let head = fetch(
            &c,
            client::request(Method::HEAD, SITE, "/fixed")
                .body(client::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(head.status, StatusCode::OK, "round {round}");
    }
    assert_eq!(
        origin.connections(),
        1,
        "each response ended before the next request: one connection should carry all 20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_body_takes_its_connection_with_it() {
    let origin = Origin::builder()
        .large("/large", 8 << 20)
        .fixed("/small", 200, "small")
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    {
        let c = client::http1(proxy.addr);
        let mut resp = send(&c, client::get(SITE, "/large")).await;
        let first = resp
            .body_mut()
            .frame()
            .await
            .expect("a frame")
            .expect("data");
        assert!(first.is_data());
        // Client and response dropped mid-body.
    }
    // Were the half-read connection pooled, this request would get the rest
    // of the 8 MiB page or wait behind it.
    let c = client::http1(proxy.addr);
    for _ in 0..3 {
        assert_eq!(fetch_get(&c, SITE, "/small").await.text(), "small");
    }
    assert_eq!(origin.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
    let raw = RawOrigin::start(After::CloseSilently).await;
    let proxy = proxy_to(&raw, "").await;
    let c = client::http1(proxy.addr);
    for i in 0..8 {
        let got = fetch_get(&c, SITE, "/").await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {}", got.text());
        assert_eq!(got.text(), "ok");
        // Time for the close to reach the proxy, as between real page views.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raw.accepted(), 8, "each request needed a new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_says_connection_close_gets_a_new_connection_each_time() {
    let raw = RawOrigin::start(After::CloseSaid).await;
    let proxy = proxy_to(&raw, "").await;
    let c = client::http1(proxy.addr);
    // Back to back, with no time for the close to arrive first: the proxy
    // must not lend out a connection the upstream said it would close.
    for i in 0..10 {
        let got = fetch_get(&c, SITE, "/").await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {}", got.text());
        assert_eq!(got.text(), "ok");
    }
    assert_eq!(raw.accepted(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_pool_idle_timeout() {
    let raw = RawOrigin::start(After::KeepAlive).await;
    let proxy = proxy_to(&raw, "upstream.pool_idle_timeout = \"300ms\"").await;
    let c = client::http1(proxy.addr);
    assert_eq!(fetch_get(&c, SITE, "/").await.text(), "ok");
    assert_eq!(raw.closed_by_proxy(), 0);
    assert!(
        eventually(|| raw.closed_by_proxy() == 1).await,
        "the idle upstream connection was never closed"
    );
    assert_eq!(fetch_get(&c, SITE, "/").await.text(), "ok");
    assert_eq!(raw.accepted(), 2, "an expired connection was used again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idle_connections_are_kept_when_the_pool_holds_none() {
    let raw = RawOrigin::start(After::KeepAlive).await;
    let proxy = proxy_to(&raw, "upstream.pool_max_idle_per_host = 0").await;
    let c = client::http1(proxy.addr);
    for _ in 0..3 {
        assert_eq!(fetch_get(&c, SITE, "/").await.text(), "ok");
    }
    assert_eq!(raw.accepted(), 3);
    assert!(
        eventually(|| raw.closed_by_proxy() == 3).await,
        "closed {} of 3",
        raw.closed_by_proxy()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_sending_a_request_body_is_not_lent_to_the_next_request() {
    // The origin answers as soon as a head is in, while client A's upload
    // stalls: A's response ends, but its connection is busy until the upload
    // does. Client B must get a connection of its own, not wait behind A.
    let raw = RawOrigin::start(After::KeepAlive).await;
    let proxy = proxy_to(&raw, "upstream.response_timeout = \"3s\"").await;
    let mut a = client::connect_from(proxy.addr, None)
        .await
        .expect("connect");
    a.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: {SITE}\r\nContent-Length: 1000\r\n\r\nfirst bytes")
            .as_bytes(),
    )
    .await
    .expect("write");
    let head = client::read_head(&mut a, Duration::from_secs(10))
        .await
        .expect("A's response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 2];
    a.read_exact(&mut body).await.expect("A's body");
    assert_eq!(&body, b"ok");

    let b = client::http1(proxy.addr);
    let got = fetch_get(&b, SITE, "/").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(raw.accepted(), 2);
    drop(a);
}
