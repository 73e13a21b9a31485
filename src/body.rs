//! The body type the proxy's layers pass along ([`Body`]), small builders, and
//! [`Gather`], which every response leaves the proxy through.

use bytes::{Buf, BufMut, Bytes};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Error type carried by streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed streaming body. Not `Sync`, because the lol_html rewriter inside an
/// injected body is `Send` only.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of fixed bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Box any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A response body as it leaves for the client: the frames that are ready at
/// once go out as one, so hyper writes them with one `writev`.
///
/// hyper stops asking a body for frames once what it holds passes its buffer
/// cap (`server.max_header_bytes` + 8 KiB: one cap for reading heads and
/// writing bodies), and writes. The rewriter hands out a page read in one
/// piece as the part before `</body>`, the tag and the rest, so a 64 KB page
/// went out in two `writev`s, where the same page not rewritten went out in
/// one; the second cost about 7 µs of system time a page (bench/README.md).
/// Only frames already waiting are taken: nothing is held back for later ones.
pub struct Gather {
    inner: Body,
    /// A frame that ends a gathered run (trailers, an error), sent next.
    /// Boxed: it is rare, and the body is moved whole several times a response.
    held: Option<Box<Result<Frame<Bytes>, BoxError>>>,
    ended: bool,
}

/// At most this many bytes or frames go out as one.
const GATHER_BYTES: usize = 512 * 1024;
const GATHER_FRAMES: usize = 16;

impl Gather {
    pub fn new(inner: Body) -> Self {
        Gather {
            inner,
            held: None,
            ended: false,
        }
    }
}

impl http_body::Body for Gather {
    type Data = Chunks;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunks>, BoxError>>> {
        let this = &mut *self;
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some((*held).map(|f| f.map_data(Chunks::One))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let first = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(other) => return Poll::Ready(Some(Ok(other.map_data(Chunks::One)))),
            },
        };
        let mut out = Chunks::One(first);
        while out.remaining() < GATHER_BYTES
            && out.parts() < GATHER_FRAMES
            && !this.inner.is_end_stream()
        {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    this.ended = true;
                    break;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => out.push(data),
                    Err(other) => {
                        this.held = Some(Box::new(Ok(other)));
                        break;
                    }
                },
                // The bytes before it still go out; the error comes next.
                Poll::Ready(Some(Err(e))) => {
                    this.held = Some(Box::new(Err(e)));
                    break;
                }
            }
        }
        Poll::Ready(Some(Ok(Frame::data(out))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.held, self.ended) {
            (None, false) => self.inner.size_hint(),
            (None, true) => SizeHint::with_exact(0),
            (Some(_), _) => SizeHint::default(),
        }
    }
}

/// One or more byte runs sent as one frame.
pub enum Chunks {
    One(Bytes),
    /// Never holds an empty run; `remaining` is the sum of their lengths.
    Many {
        parts: VecDeque<Bytes>,
        remaining: usize,
    },
}

impl Chunks {
    fn parts(&self) -> usize {
        match self {
            Chunks::One(_) => 1,
            Chunks::Many { parts, .. } => parts.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match self {
            Chunks::One(first) if first.is_empty() => *first = data,
            Chunks::One(first) => {
                let first = std::mem::take(first);
                let remaining = first.len() + data.len();
                // A rewritten page read in one piece is three runs (before
                // `</body>`, the tag, the rest): room for four from the start.
                let mut parts = VecDeque::with_capacity(4);
                parts.push_back(first);
                parts.push_back(data);
                *self = Chunks::Many { parts, remaining };
            }
            Chunks::Many { parts, remaining } => {
                *remaining += data.len();
                parts.push_back(data);
            }
        }
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        match self {
            Chunks::One(b) => b.len(),
            Chunks::Many { remaining, .. } => *remaining,
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            Chunks::One(b) => b,
            Chunks::Many { parts, .. } => parts.front().map_or(&[], |b| b),
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        match self {
            Chunks::One(b) => b.advance(cnt),
            Chunks::Many { parts, remaining } => {
                assert!(cnt <= *remaining, "advance past the end of the frame");
                *remaining -= cnt;
                while let Some(front) = parts.front_mut() {
                    if cnt < front.len() {
                        front.advance(cnt);
                        return;
                    }
                    cnt -= front.len();
                    parts.pop_front();
                }
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        match self {
            Chunks::One(b) => b.chunks_vectored(dst),
            Chunks::Many { parts, .. } => {
                let mut n = 0;
                for (slot, part) in dst.iter_mut().zip(parts) {
                    *slot = IoSlice::new(part);
                    n += 1;
                }
                n
            }
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match self {
            Chunks::One(b) => b.copy_to_bytes(len),
            // A run that covers `len` is split, not copied.
            Chunks::Many { parts, remaining } if parts.front().is_some_and(|f| f.len() >= len) => {
                *remaining -= len;
                let front = parts.front_mut().expect("checked above");
                let out = front.split_to(len);
                if front.is_empty() {
                    parts.pop_front();
                }
                out
            }
            Chunks::Many { .. } => {
                let mut out = bytes::BytesMut::with_capacity(len);
                out.put((&mut *self).take(len));
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http_body::Body as _;
    use http_body_util::{StreamBody, channel::Channel};
    use std::task::Waker;

    type Polled = Poll<Option<Result<Frame<Chunks>, BoxError>>>;

    fn ready(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> Body {
        boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    fn poll(g: &mut Gather) -> Polled {
        Pin::new(g).poll_frame(&mut Context::from_waker(Waker::noop()))
    }

    fn next_data(g: &mut Gather) -> Chunks {
        match poll(g) {
            Poll::Ready(Some(Ok(frame))) => {
                frame.into_data().unwrap_or_else(|_| panic!("trailers"))
            }
            _ => panic!("no data frame ready"),
        }
    }

    /// Every byte of `c`, read the way hyper's vectored write reads it.
    fn drain(mut c: Chunks) -> String {
        let mut out = Vec::new();
        while c.has_remaining() {
            let mut io = [IoSlice::new(&[]); 2];
            let n = c.chunks_vectored(&mut io);
            assert!(n > 0);
            let first = io[0].len();
            out.extend_from_slice(&io[0]);
            c.advance(first);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn frames_ready_together_leave_as_one() {
        let mut g = Gather::new(ready(vec![
            data("<p>page"),
            data(""),
            data("<script></script>"),
            data("</body></html>"),
        ]));
        let out = next_data(&mut g);
        assert_eq!(out.parts(), 3);
        assert_eq!(out.remaining(), 38);
        let mut io = [IoSlice::new(&[]); 8];
        assert_eq!(out.chunks_vectored(&mut io), 3);
        assert_eq!(&*io[1], b"<script></script>");
        assert_eq!(drain(out), "<p>page<script></script></body></html>");
        // The end was seen while gathering.
        assert!(g.is_end_stream());
        assert_eq!(g.size_hint().exact(), Some(0));
        assert!(matches!(poll(&mut g), Poll::Ready(None)));
    }

    #[test]
    fn nothing_waits_for_a_frame_not_there_yet() {
        let (mut tx, rx) = Channel::<Bytes, BoxError>::new(4);
        let mut g = Gather::new(boxed(rx));
        assert!(matches!(poll(&mut g), Poll::Pending));
        tx.try_send(Frame::data(Bytes::from_static(b"first")))
            .unwrap();
        assert_eq!(drain(next_data(&mut g)), "first");
        assert!(!g.is_end_stream());
        assert!(matches!(poll(&mut g), Poll::Pending));
        tx.try_send(Frame::data(Bytes::from_static(b"second")))
            .unwrap();
        drop(tx);
        assert_eq!(drain(next_data(&mut g)), "second");
        assert!(matches!(poll(&mut g), Poll::Ready(None)));
    }

    #[test]
    fn trailers_and_errors_end_a_run_and_come_next() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "1".parse().unwrap());
        let mut g = Gather::new(ready(vec![
            data("a"),
            data("b"),
            Ok(Frame::trailers(trailers)),
        ]));
        assert_eq!(drain(next_data(&mut g)), "ab");
        assert!(!g.is_end_stream());
        match poll(&mut g) {
            Poll::Ready(Some(Ok(f))) => assert!(
                f.trailers_ref()
                    .is_some_and(|t| t.contains_key("x-checksum"))
            ),
            _ => panic!("trailers expected"),
        }

        // An upstream that fails mid-page: the bytes before still go out,
        // then the error, so the client sees a broken body, not a short one.
        let mut g = Gather::new(ready(vec![
            data("a"),
            data("b"),
            Err("reset".into()),
            data("c"),
        ]));
        assert_eq!(drain(next_data(&mut g)), "ab");
        assert!(matches!(poll(&mut g), Poll::Ready(Some(Err(_)))));
    }

    #[test]
    fn a_run_is_bounded() {
        let many = (0..GATHER_FRAMES + 4).map(|_| data("x")).collect();
        let mut g = Gather::new(ready(many));
        assert_eq!(next_data(&mut g).parts(), GATHER_FRAMES);
        assert_eq!(next_data(&mut g).parts(), 4);
    }

    #[test]
    fn partial_advances_and_copies_across_runs() {
        let mut c = Chunks::One(Bytes::from_static(b"abc"));
        c.push(Bytes::new());
        c.push(Bytes::from_static(b"defg"));
        c.push(Bytes::from_static(b"hi"));
        c.advance(2);
        assert_eq!(c.chunk(), b"c");
        assert_eq!(c.copy_to_bytes(1), "c"); // the first run, split
        assert_eq!(c.copy_to_bytes(5), "defgh"); // across two runs, copied
        assert_eq!(c.remaining(), 1);
        assert_eq!(drain(c), "i");
    }

    /// A socket end that counts the writes made to it (a `writev` is one).
    struct CountingIo {
        inner: tokio::io::DuplexStream,
        writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl tokio::io::AsyncRead for CountingIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for CountingIo {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            // All of it or nothing, as a socket with room takes a writev.
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &all))?;
            assert_eq!(n, all.len(), "the test's pipe is large enough for the page");
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Serve one GET with hyper's HTTP/1 server, its buffer cap as the proxy
    /// sets it by default (32 KiB of head + 8 KiB), answering with `body`;
    /// the writes the response took.
    async fn writes_for<B>(body: impl FnOnce() -> B + Send + 'static) -> usize
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let io = CountingIo {
            inner: server,
            writes: writes.clone(),
        };
        let body = std::sync::Mutex::new(Some(body));
        let svc = hyper::service::service_fn(move |_req| {
            let body = body.lock().unwrap().take().expect("one request")();
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(32 * 1024 + 8192)
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
        let served = tokio::spawn(conn);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        served.await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&response);
        // Chunked: the runs may be framed apart.
        assert!(text.contains("<script></script>"), "{text}");
        assert!(text.ends_with("</body></html>\r\n0\r\n\r\n"), "{text}");
        writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the rewriter hands out for a 64 KB page read in one piece.
    fn page_frames() -> Vec<Result<Frame<Bytes>, BoxError>> {
        let before = format!("<html><body>{}", "x".repeat(64 * 1024));
        vec![
            Ok(Frame::data(Bytes::from(before))),
            data("<script></script>"),
            data("</body></html>"),
        ]
    }

    #[tokio::test]
    async fn a_page_split_around_the_tag_leaves_in_one_write() {
        // As the body was before Gather: the part before the tag passes the
        // buffer cap, hyper writes it, then the tag and the rest.
        assert_eq!(writes_for(|| ready(page_frames())).await, 2);
        assert_eq!(writes_for(|| Gather::new(ready(page_frames()))).await, 1);
    }
}
