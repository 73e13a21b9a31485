//! Clients for the integration tests: the hyper-util legacy client over HTTP/1
//! or HTTP/2 with prior knowledge, always dialling one fixed address (so URIs
//! can carry the virtual host) and optionally from a chosen loopback source
//! address; plus raw TCP helpers for requests hyper would refuse to write.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Error type of test request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type the test clients send.
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A pooled client that always connects to one address.
pub type TestClient = Client<FixedConnector, TestBody>;

/// Connects every request to `target`, whatever its URI says, optionally
/// binding the local end to `source` first (any 127.x.y.z works on Linux).
#[derive(Clone, Debug)]
pub struct FixedConnector {
    target: SocketAddr,
    source: Option<IpAddr>,
}

impl tower_service::Service<Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (target, source) = (self.target, self.source);
        Box::pin(async move { connect_from(target, source).await.map(TokioIo::new) })
    }
}

/// Open a TCP connection to `target`, from `source` if given.
pub async fn connect_from(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    // The proxy is the system under test: never paper over its failures.
    b.retry_canceled_requests(false);
    b
}

/// An HTTP/1.1 client to `target`.
pub fn http1(target: SocketAddr) -> TestClient {
    builder().build(FixedConnector {
        target,
        source: None,
    })
}

/// An HTTP/1.1 client to `target` whose connections come from `source`.
pub fn http1_from(target: SocketAddr, source: IpAddr) -> TestClient {
    builder().build(FixedConnector {
        target,
        source: Some(source),
    })
}

/// An HTTP/2 client with prior knowledge (h2c) to `target`.
pub fn h2c(target: SocketAddr) -> TestClient {
    builder().http2_only(true).build(FixedConnector {
        target,
        source: None,
    })
}

/// A body of fixed bytes.
pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A request to `http://{host}{path}`. Over HTTP/1 the client derives `Host`
/// from this, over HTTP/2 `:authority`.
pub fn request(method: Method, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
}

/// `GET http://{host}{path}` with no body.
pub fn get(host: &str, path: &str) -> Request<TestBody> {
    request(Method::GET, host, path)
        .body(empty())
        .expect("request")
}

/// Send, failing the test if no response head comes within 30 s.
pub async fn send(client: &TestClient, req: Request<TestBody>) -> Response<Incoming> {
    tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("no response head within 30 s")
        .expect("request failed")
}

/// A response read to its end.
#[derive(Debug)]
pub struct Got {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The client hop's HTTP version.
    pub version: http::Version,
    /// The whole body.
    pub body: Bytes,
}

impl Got {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as a fake-origin echo.
    pub fn echo(&self) -> super::origin::Echo {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Every value of response header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// Send and read the whole body (30 s limit for each).
pub async fn fetch(client: &TestClient, req: Request<TestBody>) -> Got {
    let resp = send(client, req).await;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("body not complete within 30 s")
        .expect("body failed")
        .to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body,
    }
}

/// `GET http://{host}{path}`, read to the end.
pub async fn fetch_get(client: &TestClient, host: &str, path: &str) -> Got {
    fetch(client, get(host, path)).await
}

/// Write `bytes` on a fresh connection and read until the server closes it
/// or `wait` passes. Returns what was read and whether the server closed.
pub async fn raw_exchange(target: SocketAddr, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut tcp = connect_from(target, None).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    read_until_closed(&mut tcp, wait).await
}

/// Read until EOF (or a reset) or until `wait` passes. Returns the bytes and
/// whether the peer closed.
pub async fn read_until_closed(tcp: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read one HTTP/1 response head (up to the blank line) from a raw stream.
pub async fn read_head(tcp: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + wait;
    while !out.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut byte)).await {
            Ok(Ok(1)) => out.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The status code of a raw HTTP/1 response.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(raw.get(..raw.len().min(64))?).ok()?;
    let mut parts = text.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// The body of a raw HTTP/1 response (everything after the blank line).
pub fn body_of(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[i + 4..],
        None => &[],
    }
}
