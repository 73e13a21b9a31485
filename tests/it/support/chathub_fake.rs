//! A raw stand-in for the external ChatHub service, for the tolerance cases the
//! project's emulator does not produce (BOMs, lying content types, problem+json,
//! unknown fields, `valid` instead of `isValid`...). A test gives it a function
//! from request to canned reply; it records every request and counts calls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// How many earlier requests hit the same path (0 for the first).
    pub nth: usize,
}

impl Seen {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A canned answer.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Option<Duration>,
    hang_up: bool,
}

impl Reply {
    /// A status with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            hang_up: false,
        }
    }

    /// A body with `Content-Type: application/json; charset=utf-8`.
    pub fn json(status: u16, body: impl AsRef<[u8]>) -> Reply {
        Reply::with(status, "application/json; charset=utf-8", body)
    }

    /// A body with any content type (which the client must ignore).
    pub fn with(status: u16, content_type: &str, body: impl AsRef<[u8]>) -> Reply {
        Reply::status(status)
            .header("content-type", content_type)
            .body(body)
    }

    /// Replace the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Reply {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Add a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Wait before answering.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }

    /// Close the connection without answering (a network error for the client).
    pub fn hang_up() -> Reply {
        Reply {
            hang_up: true,
            ..Reply::status(500)
        }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A running fake on 127.0.0.1:0; stops accepting when dropped.
pub struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Fake {
    /// Serve `handler` on 127.0.0.1:0.
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move { answer(req, &*handler, &log).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Fake { addr, seen, task }
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests hit `path` (without query).
    pub fn calls(&self, path: &str) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    /// Every request to `path`, in order.
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hang up")
    }
}

impl std::error::Error for HangUp {}

async fn answer(
    req: Request<Incoming>,
    handler: &Handler,
    log: &Mutex<Vec<Seen>>,
) -> Result<Response<Full<Bytes>>, HangUp> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = {
        let mut log = log.lock().expect("lock");
        let path = parts.uri.path().to_string();
        let nth = log.iter().filter(|s| s.path == path).count();
        let seen = Seen {
            method: parts.method.to_string(),
            path,
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
            nth,
        };
        log.push(seen.clone());
        seen
    };
    let reply = handler(&seen);
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    if reply.hang_up {
        // An error from the service makes hyper drop the connection unanswered.
        return Err(HangUp);
    }
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    Ok(resp
        .body(Full::new(Bytes::from(reply.body)))
        .expect("response"))
}
