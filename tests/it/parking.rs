//! Parking idle keep-alive connections (src/conn.rs): a connection quiet
//! between requests holds no buffer (the own server path) or gives up its
//! hyper state (after a request hyper served), and waits on the bare socket.
//! Each test shows the connection parked (or not) through the
//! `parked_connections` gauge, and that the client never notices.

use crate::support::client::{self, connect_from};
use crate::support::harness::{Proxy, one_route};
use crate::support::origin::Origin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SITE: &str = "park.test";
/// Longer than `conn::PARK_AFTER` with room for a busy CI machine.
const WAIT: Duration = Duration::from_secs(10);

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {SITE}\r\n\r\n")
}

/// Read one response with a Content-Length body; returns status and body.
async fn response(tcp: &mut TcpStream) -> (u16, Vec<u8>) {
    let head = client::read_head(tcp, WAIT)
        .await
        .expect("a whole response head in time");
    let status = client::status_of(head.as_bytes()).expect("status");
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("length"))
        .expect("content-length");
    let mut body = vec![0u8; len];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut body))
        .await
        .expect("body in time")
        .expect("body");
    (status, body)
}

/// Wait until the gauge reads `want`; false if it never does within `WAIT`.
async fn parked(proxy: &Proxy, want: i64) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if proxy.metrics.parked_connections() == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn start() -> (Origin, Proxy) {
    let origin = Origin::builder()
        .fixed("/a", 200, "first")
        .fixed("/b", 200, "second")
        .start()
        .await;
    let proxy = Proxy::with_origin(&one_route(SITE), &origin).await;
    (origin, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_parked_and_serves_the_next_request() {
    let (_origin, proxy) = start().await;
    let mut tcp = connect_from(proxy.addr, None).await.expect("connect");
    tcp.write_all(get("/a").as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"first".to_vec()));
    assert!(
        parked(&proxy, 1).await,
        "the idle connection was never parked"
    );

    // The same socket, served again after the wait.
    tcp.write_all(get("/b").as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"second".to_vec()));
    assert!(
        parked(&proxy, 1).await,
        "parked again after the second request"
    );

    // Two requests in one write (pipelined) after parking: both answered, in order.
    tcp.write_all(format!("{}{}", get("/a"), get("/b")).as_bytes())
        .await
        .expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"first".to_vec()));
    assert_eq!(response(&mut tcp).await, (200, b"second".to_vec()));
    drop(tcp);
    assert!(
        parked(&proxy, 0).await,
        "a closed parked connection is let go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_not_lost_to_parking() {
    let (_origin, proxy) = start().await;
    let mut tcp = connect_from(proxy.addr, None).await.expect("connect");
    tcp.write_all(get("/a").as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"first".to_vec()));
    assert!(parked(&proxy, 1).await);
    // Wake it with half a head, then pause well past the parking delay.
    let next = get("/b");
    let (part, rest) = next.split_at(10);
    tcp.write_all(part.as_bytes()).await.expect("write");
    assert!(parked(&proxy, 0).await, "bytes arrived: no longer parked");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        proxy.metrics.parked_connections(),
        0,
        "parked while hyper held half a request head"
    );
    tcp.write_all(rest.as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"second".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_carried_a_request_body_is_never_parked() {
    let (_origin, proxy) = start().await;
    let mut tcp = connect_from(proxy.addr, None).await.expect("connect");
    let post = format!("POST /a HTTP/1.1\r\nHost: {SITE}\r\nContent-Length: 3\r\n\r\nabc");
    tcp.write_all(post.as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.metrics.parked_connections(), 0);
    tcp.write_all(get("/b").as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"second".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_close_at_the_idle_timeout_and_at_shutdown() {
    let origin = Origin::builder().fixed("/a", 200, "first").start().await;
    let toml = format!("server.idle_timeout = \"2s\"\n{}", one_route(SITE));
    let proxy = Proxy::with_origin(&toml, &origin).await;
    let mut idle = connect_from(proxy.addr, None).await.expect("connect");
    idle.write_all(get("/a").as_bytes()).await.expect("write");
    assert_eq!(response(&mut idle).await.0, 200);
    assert!(parked(&proxy, 1).await);
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a parked connection outlived the idle timeout: {closed:?}"
    );
    assert!(parked(&proxy, 0).await);

    let mut held = connect_from(proxy.addr, None).await.expect("connect");
    held.write_all(get("/a").as_bytes()).await.expect("write");
    assert_eq!(response(&mut held).await.0, 200);
    assert!(parked(&proxy, 1).await);
    let started = tokio::time::Instant::now();
    assert!(
        proxy.shutdown().await,
        "shutdown waited on a parked connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "parked connections end at once"
    );
    let closed = tokio::time::timeout(WAIT, held.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_hyper_served_is_parked_and_back_on_the_own_path() {
    let (_origin, proxy) = start().await;
    let mut tcp = connect_from(proxy.addr, None).await.expect("connect");
    // Not a GET or HEAD: hyper's connection serves it (conn/h1.rs hands over).
    let delete = format!("DELETE /a HTTP/1.1\r\nHost: {SITE}\r\n\r\n");
    tcp.write_all(delete.as_bytes()).await.expect("write");
    assert_eq!(response(&mut tcp).await.0, 200);
    assert!(
        parked(&proxy, 1).await,
        "hyper's idle connection was never parked"
    );
    // Two pipelined GETs on the same socket, now on the own path.
    tcp.write_all(format!("{}{}", get("/b"), get("/a")).as_bytes())
        .await
        .expect("write");
    assert_eq!(response(&mut tcp).await, (200, b"second".to_vec()));
    assert_eq!(response(&mut tcp).await, (200, b"first".to_vec()));
}
