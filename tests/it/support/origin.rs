//! A fake origin server for the integration tests: a hyper 1.x server on
//! `127.0.0.1:0` whose behaviour per path is set with a fluent builder.
//!
//! It records what it received (parsed requests, optionally the raw request
//! heads as they came off the wire), counts accepted connections, and can
//! misbehave on purpose: stream with pauses or until the test releases a
//! [`Gate`], die in the middle of a body, never answer, or close after reading
//! a request.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// The body type the origin answers with.
pub type OriginBody = UnsyncBoxBody<Bytes, io::Error>;

/// Period of the generated test pattern: a prime, so that chunk sizes that are
/// powers of two never line up with it and a shifted or dropped chunk shows.
pub const PATTERN_PERIOD: usize = 65_521;

/// The longest chunk [`pattern_chunk`] hands out.
pub const PATTERN_MAX_CHUNK: usize = 3 * PATTERN_PERIOD;

/// Four periods back to back, so that any window up to three periods long
/// starting anywhere in the first period is one contiguous slice.
static PATTERN: LazyLock<Bytes> = LazyLock::new(|| {
    let one: Vec<u8> = (0..PATTERN_PERIOD)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761);
            (x >> 13) as u8 ^ (i as u8)
        })
        .collect();
    Bytes::from(one.repeat(4))
});

/// `len` bytes (at most [`PATTERN_MAX_CHUNK`]) of the pattern starting at
/// stream offset `offset`.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    assert!(
        len <= PATTERN_MAX_CHUNK,
        "pattern chunks are at most PATTERN_MAX_CHUNK long"
    );
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    PATTERN.slice(start..start + len)
}

/// Whether `data` equals the pattern at stream offset `offset`.
pub fn matches_pattern(offset: u64, data: &[u8]) -> bool {
    let mut pos = offset;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rest.len().min(PATTERN_MAX_CHUNK);
        if pattern_chunk(pos, n)[..] != rest[..n] {
            return false;
        }
        pos += n as u64;
        rest = &rest[n..];
    }
    true
}

/// A point a streaming response waits at until the test lets it pass.
/// Each [`Gate::release`] lets exactly one waiting step through.
#[derive(Clone, Debug)]
pub struct Gate(Arc<Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate(Arc::new(Semaphore::new(0)))
    }

    /// Let one waiting (or the next) step through.
    pub fn release(&self) {
        self.0.add_permits(1);
    }

    /// Let every present and future step through.
    pub fn open(&self) {
        self.0.add_permits(1 << 20);
    }

    async fn wait(&self) {
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }
}

/// One step of a streaming response body.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send these bytes as one frame.
    Data(Bytes),
    /// Pause.
    Sleep(Duration),
    /// Pause until the test releases the gate.
    Wait(Gate),
    /// Abort the body: the connection is cut without a clean end.
    Fail,
}

impl Step {
    /// A data step from anything byte-like.
    pub fn data(b: impl Into<Bytes>) -> Step {
        Step::Data(b.into())
    }
}

#[derive(Clone, Debug)]
enum Reply {
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    Steps {
        status: u16,
        headers: Vec<(String, String)>,
        steps: Arc<Vec<Step>>,
    },
    Echo,
    Hang,
    DropAfterBody,
    WebSocketEcho,
    Large {
        len: u64,
    },
    UploadSink,
}

/// What the origin saw of one request.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`...
    pub version: String,
    /// Every header line in order, duplicates kept, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Which accepted connection (0-based) carried it.
    pub connection: usize,
}

impl Recorded {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }
}

/// What the upload sink has seen so far.
#[derive(Clone, Debug, Default)]
pub struct UploadReport {
    /// Body bytes received so far.
    pub bytes: u64,
    /// When the first body byte arrived.
    pub first_byte_at: Option<Instant>,
    /// When the body ended cleanly.
    pub finished_at: Option<Instant>,
    /// Every byte so far matched [`pattern_chunk`].
    pub intact: bool,
}

#[derive(Default)]
struct Upload {
    bytes: AtomicU64,
    first_byte_at: Mutex<Option<Instant>>,
    finished_at: Mutex<Option<Instant>>,
    corrupt: AtomicBool,
}

#[derive(Default)]
struct Tap {
    buf: Vec<u8>,
    cursor: usize,
    pending: Option<Framing>,
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(usize),
    Chunked,
}

struct State {
    routes: HashMap<String, Reply>,
    fallback: Reply,
    record_heads: bool,
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    heads: Mutex<Vec<String>>,
    upload: Upload,
    large_sent: AtomicU64,
    large_done: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// Builds an [`Origin`]; paths without a reply of their own get the fallback
/// (by default an echo of the request).
pub struct OriginBuilder {
    routes: HashMap<String, Reply>,
    fallback: Reply,
    record_heads: bool,
}

fn owned_headers(h: &[(&str, &str)]) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl OriginBuilder {
    fn add(mut self, path: &str, r: Reply) -> Self {
        self.routes.insert(path.to_owned(), r);
        self
    }

    /// A fixed `200 text/plain` reply.
    pub fn fixed(self, path: &str, status: u16, body: impl Into<Bytes>) -> Self {
        self.fixed_with_headers(path, status, &[("content-type", "text/plain")], body)
    }

    /// A fixed reply with these header lines (duplicates allowed, order kept).
    pub fn fixed_with_headers(
        self,
        path: &str,
        status: u16,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Self {
        self.add(
            path,
            Reply::Fixed {
                status,
                headers: owned_headers(headers),
                body: body.into(),
            },
        )
    }

    /// Every path without its own reply answers this.
    pub fn fallback_fixed(mut self, status: u16, body: impl Into<Bytes>) -> Self {
        self.fallback = Reply::Fixed {
            status,
            headers: owned_headers(&[("content-type", "text/plain")]),
            body: body.into(),
        };
        self
    }

    /// A streamed `200` body made of `steps`.
    pub fn stream(self, path: &str, steps: Vec<Step>) -> Self {
        self.stream_with_headers(
            path,
            200,
            &[("content-type", "application/octet-stream")],
            steps,
        )
    }

    /// A streamed body with this status and these headers (a `content-length`
    /// given here is sent as is, whatever the steps add up to).
    pub fn stream_with_headers(
        self,
        path: &str,
        status: u16,
        headers: &[(&str, &str)],
        steps: Vec<Step>,
    ) -> Self {
        self.add(
            path,
            Reply::Steps {
                status,
                headers: owned_headers(headers),
                steps: Arc::new(steps),
            },
        )
    }

    /// Send the head and `sent` bytes of the body, then cut the connection.
    /// With `declared_len` the head carries that `Content-Length`; without it
    /// the body is chunked and the last chunk never comes.
    pub fn die_mid_body(self, path: &str, declared_len: Option<u64>, sent: usize) -> Self {
        let len = declared_len.map(|l| l.to_string());
        let mut headers = vec![("content-type", "application/octet-stream")];
        if let Some(l) = &len {
            headers.push(("content-length", l.as_str()));
        }
        let steps = vec![
            Step::Data(pattern_chunk(0, sent.min(PATTERN_MAX_CHUNK))),
            // Let the bytes reach the socket before the cut.
            Step::Sleep(Duration::from_millis(200)),
            Step::Fail,
        ];
        self.stream_with_headers(path, 200, &headers, steps)
    }

    /// Server-sent events: each event `data: {e}\n\n`, `delay` apart.
    pub fn sse(self, path: &str, events: &[&str], delay: Duration) -> Self {
        let mut steps = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                steps.push(Step::Sleep(delay));
            }
            steps.push(Step::data(format!("data: {e}\n\n")));
        }
        self.stream_with_headers(
            path,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
            steps,
        )
    }

    /// Server-sent events, each after the first waiting for one `gate.release()`.
    pub fn sse_gated(self, path: &str, events: &[&str], gate: &Gate) -> Self {
        let mut steps = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                steps.push(Step::Wait(gate.clone()));
            }
            steps.push(Step::data(format!("data: {e}\n\n")));
        }
        self.stream_with_headers(
            path,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
            steps,
        )
    }

    /// Answer with a JSON echo of the request (see [`Echo`]).
    pub fn echo(self, path: &str) -> Self {
        self.add(path, Reply::Echo)
    }

    /// Read the request head and never answer.
    pub fn hang(self, path: &str) -> Self {
        self.add(path, Reply::Hang)
    }

    /// Read the whole request, then close the connection without answering.
    pub fn drop_after_body(self, path: &str) -> Self {
        self.add(path, Reply::DropAfterBody)
    }

    /// Complete a WebSocket handshake and echo every text and binary message.
    pub fn websocket_echo(self, path: &str) -> Self {
        self.add(path, Reply::WebSocketEcho)
    }

    /// A generated body of `len` bytes of the test pattern, in 64 KiB frames,
    /// with `Content-Length`.
    pub fn large(self, path: &str, len: u64) -> Self {
        self.add(path, Reply::Large { len })
    }

    /// Swallow any request body, checking it against the test pattern, and
    /// answer `{"bytes": n, "intact": bool}`.
    pub fn upload_sink(self, path: &str) -> Self {
        self.add(path, Reply::UploadSink)
    }

    /// Keep the raw request heads as they came off the wire (costs memory for
    /// every byte read, so off by default).
    pub fn record_raw_heads(mut self) -> Self {
        self.record_heads = true;
        self
    }

    /// Bind `127.0.0.1:0` and start serving.
    pub async fn start(self) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State {
            routes: self.routes,
            fallback: self.fallback,
            record_heads: self.record_heads,
            connections: AtomicUsize::new(0),
            requests: Mutex::default(),
            heads: Mutex::default(),
            upload: Upload::default(),
            large_sent: AtomicU64::new(0),
            large_done: AtomicBool::new(false),
            tasks: Mutex::default(),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let conn_id = st.connections.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let tap = st
                    .record_heads
                    .then(|| Arc::new(Mutex::new(Tap::default())));
                let io = TapStream {
                    inner: tcp,
                    tap: tap.clone(),
                };
                let st2 = st.clone();
                let task = tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st2.clone(), conn_id, tap.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .await;
                });
                st.tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        state.tasks.lock().unwrap().push(accept.abort_handle());
        Origin {
            addr,
            state,
            black_hole: None,
        }
    }
}

/// A running fake origin. Dropping it stops it and cuts its connections.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    black_hole: Option<Arc<BlackHole>>,
}

struct BlackHole {
    connections: AtomicUsize,
    held: Mutex<Vec<TcpStream>>,
    task: AbortHandle,
}

impl Drop for Origin {
    fn drop(&mut self) {
        for t in self.state.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        if let Some(b) = &self.black_hole {
            b.task.abort();
            b.held.lock().unwrap().clear();
        }
    }
}

impl Origin {
    /// Start building an origin.
    pub fn builder() -> OriginBuilder {
        OriginBuilder {
            routes: HashMap::new(),
            fallback: Reply::Echo,
            record_heads: false,
        }
    }

    /// An origin that echoes every request.
    pub async fn echo() -> Origin {
        Origin::builder().start().await
    }

    /// A TCP listener that accepts connections and then holds them forever,
    /// never reading or answering.
    pub async fn black_hole() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind black hole");
        let addr = listener.local_addr().expect("black hole addr");
        let hole = Arc::new_cyclic(|weak: &std::sync::Weak<BlackHole>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let Some(h) = weak.upgrade() else { return };
                    h.connections.fetch_add(1, Ordering::SeqCst);
                    h.held.lock().unwrap().push(tcp);
                }
            });
            BlackHole {
                connections: AtomicUsize::new(0),
                held: Mutex::default(),
                task: task.abort_handle(),
            }
        });
        let mut origin = Origin::builder().start_detached(addr);
        origin.black_hole = Some(hole);
        origin
    }

    /// `http://127.0.0.1:PORT`, the form route `upstream` keys take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        match &self.black_hole {
            Some(b) => b.connections.load(Ordering::SeqCst),
            None => self.state.connections.load(Ordering::SeqCst),
        }
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the origin has seen no request")
    }

    /// How many requests with this method and path (query included) arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// The raw request heads, request line to blank line, in arrival order
    /// (needs [`OriginBuilder::record_raw_heads`]).
    pub fn raw_heads(&self) -> Vec<String> {
        self.state.heads.lock().unwrap().clone()
    }

    /// What the upload sink has received so far.
    pub fn upload(&self) -> UploadReport {
        let u = &self.state.upload;
        UploadReport {
            bytes: u.bytes.load(Ordering::SeqCst),
            first_byte_at: *u.first_byte_at.lock().unwrap(),
            finished_at: *u.finished_at.lock().unwrap(),
            intact: !u.corrupt.load(Ordering::SeqCst),
        }
    }

    /// Wait until the upload sink has at least `min` bytes; false on timeout.
    pub async fn wait_upload_bytes(&self, min: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.state.upload.bytes.load(Ordering::SeqCst) >= min {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Bytes of the large body handed to hyper so far.
    pub fn large_sent(&self) -> u64 {
        self.state.large_sent.load(Ordering::SeqCst)
    }

    /// Whether the large body's last byte has been handed to hyper.
    pub fn large_finished(&self) -> bool {
        self.state.large_done.load(Ordering::SeqCst)
    }
}

impl OriginBuilder {
    /// The bookkeeping of an origin without a server (for the black hole).
    fn start_detached(self, addr: SocketAddr) -> Origin {
        let state = Arc::new(State {
            routes: self.routes,
            fallback: self.fallback,
            record_heads: false,
            connections: AtomicUsize::new(0),
            requests: Mutex::default(),
            heads: Mutex::default(),
            upload: Upload::default(),
            large_sent: AtomicU64::new(0),
            large_done: AtomicBool::new(false),
            tasks: Mutex::default(),
        });
        Origin {
            addr,
            state,
            black_hole: None,
        }
    }
}

/// An address on which nothing listens: connecting to it is refused.
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// The JSON an echo reply carries.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Echo {
    /// The request method.
    pub method: String,
    /// Path and query as the origin received them.
    pub path: String,
    /// The HTTP version of the origin's hop.
    pub version: String,
    /// Every header line in order, duplicates kept, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    /// The body's length in bytes.
    pub body_len: usize,
}

impl Echo {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }

    /// Whether any header `name` was received.
    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

fn full(status: u16, headers: &[(String, String)], body: Bytes) -> Response<OriginBody> {
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("test header name");
        resp.headers_mut()
            .append(name, HeaderValue::from_str(v).expect("test header value"));
    }
    resp
}

fn streamed(
    status: u16,
    headers: &[(String, String)],
    body: Channel<Bytes, io::Error>,
) -> Response<OriginBody> {
    let mut resp = full(status, headers, Bytes::new());
    *resp.body_mut() = body.boxed_unsync();
    resp
}

async fn handle(
    st: Arc<State>,
    conn: usize,
    tap: Option<Arc<Mutex<Tap>>>,
    mut req: Request<Incoming>,
) -> Result<Response<OriginBody>, io::Error> {
    if let Some(tap) = &tap
        && let Some(head) = tap.lock().unwrap().next_head()
    {
        st.heads.lock().unwrap().push(head);
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let recorded = Recorded {
        method: req.method().as_str().to_owned(),
        path: path.clone(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        connection: conn,
    };
    st.requests.lock().unwrap().push(recorded.clone());
    let reply = st
        .routes
        .get(req.uri().path())
        .unwrap_or(&st.fallback)
        .clone();
    match reply {
        Reply::Fixed {
            status,
            headers,
            body,
        } => {
            // Drain the request body so keep-alive works for the next request.
            let _ = req.into_body().collect().await;
            Ok(full(status, &headers, body))
        }
        Reply::Steps {
            status,
            headers,
            steps,
        } => {
            let (tx, body) = Channel::new(1);
            tokio::spawn(run_steps(tx, steps));
            Ok(streamed(status, &headers, body))
        }
        Reply::Echo => {
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            let echo = Echo {
                method: recorded.method,
                path: recorded.path,
                version: recorded.version,
                headers: recorded.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                body_len: body.len(),
            };
            let json = serde_json::to_vec(&echo).map_err(io::Error::other)?;
            Ok(full(
                200,
                &[("content-type".into(), "application/json".into())],
                json.into(),
            ))
        }
        Reply::Hang => std::future::pending().await,
        Reply::DropAfterBody => {
            let _ = req.into_body().collect().await;
            // A service error makes hyper close the connection without a response.
            Err(io::Error::other("closing without an answer, on purpose"))
        }
        Reply::WebSocketEcho => websocket(&mut req),
        Reply::Large { len } => {
            let (tx, body) = Channel::new(1);
            let st2 = st.clone();
            tokio::spawn(send_large(tx, len, st2));
            let headers = vec![
                (
                    "content-type".to_string(),
                    "application/octet-stream".to_string(),
                ),
                ("content-length".to_string(), len.to_string()),
            ];
            Ok(streamed(200, &headers, body))
        }
        Reply::UploadSink => {
            let mut body = req.into_body();
            let up = &st.upload;
            let mut offset = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(io::Error::other)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                {
                    let mut first = up.first_byte_at.lock().unwrap();
                    if first.is_none() {
                        *first = Some(Instant::now());
                    }
                }
                if !matches_pattern(offset, &data) {
                    up.corrupt.store(true, Ordering::SeqCst);
                }
                offset += data.len() as u64;
                up.bytes.store(offset, Ordering::SeqCst);
            }
            *up.finished_at.lock().unwrap() = Some(Instant::now());
            let json = serde_json::json!({ "bytes": offset, "intact": !up.corrupt.load(Ordering::SeqCst) });
            Ok(full(
                200,
                &[("content-type".into(), "application/json".into())],
                json.to_string().into(),
            ))
        }
    }
}

async fn run_steps(mut tx: Sender<Bytes, io::Error>, steps: Arc<Vec<Step>>) {
    for step in steps.iter() {
        match step {
            Step::Data(b) => {
                if tx.send_data(b.clone()).await.is_err() {
                    return;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::Wait(g) => g.wait().await,
            Step::Fail => {
                tx.abort(io::Error::other("origin dies mid-body, on purpose"));
                return;
            }
        }
    }
}

async fn send_large(mut tx: Sender<Bytes, io::Error>, len: u64, st: Arc<State>) {
    const FRAME: usize = 64 * 1024;
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(FRAME as u64) as usize;
        if tx.send_data(pattern_chunk(sent, n)).await.is_err() {
            return;
        }
        sent += n as u64;
        st.large_sent.store(sent, Ordering::SeqCst);
    }
    st.large_done.store(true, Ordering::SeqCst);
}

fn websocket(req: &mut Request<Incoming>) -> Result<Response<OriginBody>, io::Error> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").filter(|_| is_ws) else {
        return Ok(full(
            400,
            &[],
            Bytes::from_static(b"not a websocket handshake"),
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                let _ = ws.close(None).await;
                return;
            }
        }
    });
    let headers = vec![
        ("connection".to_string(), "Upgrade".to_string()),
        ("upgrade".to_string(), "websocket".to_string()),
        ("sec-websocket-accept".to_string(), accept),
    ];
    Ok(full(101, &headers, Bytes::new()))
}

/// A TCP stream that copies what it reads into a [`Tap`] when recording.
struct TapStream {
    inner: TcpStream,
    tap: Option<Arc<Mutex<Tap>>>,
}

impl AsyncRead for TapStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(tap)) = (&res, &self.tap) {
            tap.lock()
                .unwrap()
                .buf
                .extend_from_slice(&buf.filled()[before..]);
        }
        res
    }
}

impl AsyncWrite for TapStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Tap {
    /// The head of the request hyper has just parsed: skip the previous
    /// request's body (complete by now, as hyper reads it before the next
    /// head), then take everything up to the blank line.
    fn next_head(&mut self) -> Option<String> {
        if let Some(f) = self.pending.take() {
            self.cursor = skip_body(&self.buf, self.cursor, f)?;
        }
        // Stray CRLFs between requests are allowed (RFC 9112 §2.2).
        while self.buf[self.cursor..].starts_with(b"\r\n") {
            self.cursor += 2;
        }
        let rest = &self.buf[self.cursor..];
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.cursor += end;
        self.pending = Some(framing_of(&head));
        Some(head)
    }
}

fn framing_of(head: &str) -> Framing {
    let mut len = 0usize;
    for line in head.split("\r\n").skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        {
            return Framing::Chunked;
        }
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().unwrap_or(0);
        }
    }
    Framing::Length(len)
}

/// Where the body starting at `at` ends, or `None` if it is not all here.
fn skip_body(buf: &[u8], at: usize, framing: Framing) -> Option<usize> {
    match framing {
        Framing::Length(n) => (at + n <= buf.len()).then_some(at + n),
        Framing::Chunked => {
            let mut pos = at;
            loop {
                let line_end = pos + buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
                let line = std::str::from_utf8(&buf[pos..line_end]).ok()?;
                let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
                pos = line_end + 2;
                if size == 0 {
                    // Trailer lines, then the blank line.
                    loop {
                        let end = pos + buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
                        let blank = end == pos;
                        pos = end + 2;
                        if blank {
                            return Some(pos);
                        }
                    }
                }
                pos += size + 2;
            }
        }
    }
}
