//! Streaming decoding of a compressed upstream body, bounded against
//! decompression bombs.
//!
//! Two phases. The *prefix check* runs before the proxy commits response headers:
//! it decodes what the upstream has already delivered (until the upstream pauses,
//! at most [`PREFIX_KEEP`] compressed bytes) while keeping a copy of the compressed
//! bytes, so a body that trips a limit or is not valid data can still go out
//! exactly as received. After that the body streams: decoded output is never
//! accumulated, and a limit hit ends the stream with an error, so the client sees
//! an aborted transfer rather than a truncated page that looks complete.

use super::Coding;
use crate::body::{Body, BoxError};
use crate::config::InjectConfig;
use async_compression::tokio::bufread::{
    BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder,
};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::{StreamReader, poll_read_buf};

/// Decoded bytes always allowed before `max_ratio` applies, so a small,
/// highly repetitive page is never mistaken for a bomb.
pub const RATIO_GRACE_BYTES: u64 = 1024 * 1024;

/// Compressed bytes the prefix check keeps for a byte-identical pass-through.
/// The check ends once this much has been read.
pub(super) const PREFIX_KEEP: usize = 64 * 1024;

/// Decoded bytes the prefix check holds for the client instead of decoding
/// them a second time; beyond this it only counts and re-decodes afterwards.
const HOLD: usize = 64 * 1024;

/// Read size for decoded output chunks.
const CHUNK: usize = 16 * 1024;

/// zstd window limit (2^23 = 8 MiB), the most RFC 9659 asks an HTTP decoder to
/// support; larger windows would let one response claim up to 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Bounds on decompression of one response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// At most this many decoded bytes per body.
    pub max_bytes: u64,
    /// Decoded bytes may not exceed this multiple of the compressed bytes read
    /// so far (after the first [`RATIO_GRACE_BYTES`]).
    pub max_ratio: u64,
}

impl DecodeLimits {
    /// The limits `inject.max_decompressed_bytes` and
    /// `inject.max_decompression_ratio` configure.
    pub fn from_config(cfg: &InjectConfig) -> Self {
        DecodeLimits {
            max_bytes: cfg.max_decompressed_bytes,
            max_ratio: cfg.max_decompression_ratio,
        }
    }

    pub(super) fn check(&self, decoded: u64, compressed: u64) -> Result<(), DecodeError> {
        if decoded > self.max_bytes {
            return Err(DecodeError::TooLarge {
                limit: self.max_bytes,
            });
        }
        if decoded > RATIO_GRACE_BYTES.max(compressed.saturating_mul(self.max_ratio)) {
            return Err(DecodeError::Ratio {
                ratio: self.max_ratio,
            });
        }
        Ok(())
    }
}

/// Why a decoded body stream ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body decoded to more than `max_decompressed_bytes`.
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body decoded to more than `max_decompression_ratio` times its size.
    #[error("decoded body exceeds {ratio} times its compressed size")]
    Ratio { ratio: u64 },
    /// The compressed data is not valid for its coding.
    #[error("compressed body is not valid {coding:?} data")]
    Corrupt {
        coding: Coding,
        #[source]
        source: io::Error,
    },
    /// The upstream body itself failed (reset, timeout, truncated framing).
    #[error("upstream body failed")]
    Upstream(#[source] io::Error),
}

/// Why the prefix check refused to decode a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A decompression limit was hit before the headers were committed.
    Limit,
    /// The body is not valid data for its `Content-Encoding`.
    Corrupt,
}

/// A refused body, handed back complete and byte-identical to what the
/// upstream sent (trailers aside), for pass-through with its original headers.
#[derive(Debug)]
pub struct Refused {
    /// The original compressed body.
    pub body: Body,
    /// What the prefix check found.
    pub why: Refusal,
}

/// Decode a body. `Err(original)` hands back the body as received when the
/// prefix check refuses it; see [`decode_checked`].
pub async fn decode(body: Body, coding: Coding, limits: DecodeLimits) -> Result<Body, Body> {
    decode_checked(body, coding, limits)
        .await
        .map_err(|r| r.body)
}

/// Decode a body, saying why when the prefix check refuses it.
///
/// Waits for the first body bytes, then decodes whatever the upstream delivers
/// without pausing, up to 64 KiB of compressed bytes. A limit or invalid
/// data found there returns [`Refused`] with the original body. Otherwise the
/// decoded body streams; a limit hit later ends it with [`DecodeError`].
/// An upstream failure always surfaces as a body error, never as a clean end.
pub async fn decode_checked(
    body: Body,
    coding: Coding,
    limits: DecodeLimits,
) -> Result<Body, Refused> {
    let (kind, body) = match coding {
        Coding::Identity => return Ok(body),
        Coding::Gzip => (Kind::Gzip, body),
        Coding::Br => (Kind::Br, body),
        Coding::Zstd => (Kind::Zstd, body),
        Coding::Deflate => sniff_deflate(body).await,
    };
    let mut dec = Decoder::new(kind, Source::new(body, true));
    let mut held = Some(BytesMut::new());
    let mut decoded: u64 = 0;
    let mut buf = BytesMut::with_capacity(CHUNK);

    let end = loop {
        buf.clear();
        buf.reserve(CHUNK);
        let step = poll_fn(|cx| match poll_read_buf(Pin::new(&mut dec), cx, &mut buf) {
            Poll::Pending if dec.source().prefix_done() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => Poll::Ready(Some(r)),
        })
        .await;
        match step {
            None => break PrefixEnd::Paused,
            Some(Ok(0)) => break PrefixEnd::Finished,
            Some(Ok(n)) => {
                decoded += n as u64;
                if let Err(e) = limits.check(decoded, dec.source().raw) {
                    tracing::debug!(reason = "decompression_limit", coding = ?coding, decoded, error = %e, "passing compressed page through");
                    break PrefixEnd::Refused(Refusal::Limit);
                }
                if let Some(h) = &mut held {
                    if h.len() + n <= HOLD {
                        h.extend_from_slice(&buf);
                    } else {
                        // Too much to hold: count only, and decode again later.
                        held = None;
                    }
                }
                // The decoder hands out what it has when its input pauses, so
                // the pause shows here rather than as `Pending`.
                if dec.source().prefix_done() {
                    break PrefixEnd::Paused;
                }
            }
            Some(Err(e)) if dec.source().failed => break PrefixEnd::Upstream(e),
            Some(Err(e)) => {
                tracing::debug!(reason = "corrupt_encoding", coding = ?coding, error = %e, "passing compressed page through");
                break PrefixEnd::Refused(Refusal::Corrupt);
            }
        }
    };

    match (end, held) {
        (PrefixEnd::Refused(why), _) => Err(Refused {
            body: dec.into_source().into_original(),
            why,
        }),
        (PrefixEnd::Upstream(e), held) => {
            // Nothing to pass through cleanly: whatever decoded, then the error.
            let head = held.map(BytesMut::freeze).into_iter().collect();
            let err: BoxError = Box::new(DecodeError::Upstream(e));
            Ok(crate::body::boxed(Replay::new(
                head,
                Some(err),
                crate::body::empty(),
            )))
        }
        (PrefixEnd::Finished, Some(h)) => Ok(crate::body::full(h.freeze())),
        (PrefixEnd::Paused, Some(h)) => {
            dec.source_mut().stop_keeping();
            Ok(crate::body::boxed(Decoded::new(
                dec,
                coding,
                limits,
                decoded,
                h.freeze(),
            )))
        }
        (PrefixEnd::Finished | PrefixEnd::Paused, None) => {
            let original = dec.into_source().into_original();
            let fresh = Decoder::new(kind, Source::new(original, false));
            Ok(crate::body::boxed(Decoded::new(
                fresh,
                coding,
                limits,
                0,
                Bytes::new(),
            )))
        }
    }
}

enum PrefixEnd {
    /// The decoder reached the end of the body.
    Finished,
    /// The upstream paused (or the keep budget filled) with the limits intact.
    Paused,
    Refused(Refusal),
    Upstream(io::Error),
}

/// HTTP `deflate` is zlib-wrapped, but some servers send raw deflate. A zlib
/// header is two bytes: method 8, window ≤ 32 KiB, and a multiple of 31.
fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && u16::from_be_bytes([*cmf, *flg]) % 31 == 0
        }
        _ => true,
    }
}

/// Read the first two bytes of a `deflate` body to tell zlib from raw deflate,
/// returning the body with those bytes put back in front.
async fn sniff_deflate(mut body: Body) -> (Kind, Body) {
    let mut head: VecDeque<Bytes> = VecDeque::new();
    let mut first = Vec::with_capacity(2);
    let mut error = None;
    while first.len() < 2 {
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => {
                error = Some(e);
                break;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    first.extend(data.iter().take(2 - first.len()));
                    head.push_back(data);
                }
            }
        }
    }
    let kind = if is_zlib_header(&first) {
        Kind::Zlib
    } else {
        Kind::RawDeflate
    };
    let rest = if error.is_some() {
        crate::body::empty()
    } else {
        body
    };
    (kind, crate::body::boxed(Replay::new(head, error, rest)))
}

/// The upstream body as a byte stream for a decoder: counts what it reads,
/// keeps a copy during the prefix check, and remembers an upstream failure so
/// it is not mistaken for corrupt data.
pub(super) struct Source {
    body: Body,
    /// Copies of every chunk read, while the prefix check may still refuse.
    kept: Option<Vec<Bytes>>,
    kept_len: usize,
    /// Compressed bytes read so far.
    raw: u64,
    /// The last poll of the body returned `Pending`.
    pending: bool,
    /// The keep budget is spent; reads stop until keeping is switched off.
    capped: bool,
    failed: bool,
    ended: bool,
}

impl Source {
    pub(super) fn new(body: Body, keep: bool) -> Self {
        Source {
            body,
            kept: keep.then(Vec::new),
            kept_len: 0,
            raw: 0,
            pending: false,
            capped: false,
            failed: false,
            ended: false,
        }
    }

    /// The prefix check ends when the upstream pauses after sending something,
    /// or when the keep budget is spent.
    pub(super) fn prefix_done(&self) -> bool {
        self.capped || (self.pending && self.raw > 0)
    }

    fn stop_keeping(&mut self) {
        self.kept = None;
        self.kept_len = 0;
        self.capped = false;
    }

    /// The body exactly as the upstream sent it: the kept chunks, then the rest.
    /// The rest of the body, once the prefix is accepted (what was kept is
    /// dropped: the caller decoded it).
    pub(super) fn into_rest(self) -> Body {
        self.body
    }

    pub(super) fn into_original(self) -> Body {
        let head = self.kept.unwrap_or_default().into();
        crate::body::boxed(Replay::new(head, None, self.body))
    }
}

impl Stream for Source {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.pending = false;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.kept.is_some() && this.kept_len >= PREFIX_KEEP {
            // Stop before `kept` grows further: a stream that decodes to nothing
            // (metadata, skippable frames) must not pull unbounded input into
            // memory. The prefix check sees `capped` and ends; the wake is only
            // a safety net for any other poller.
            this.capped = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => {
                    this.pending = true;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.failed = true;
                    this.ended = true;
                    return Poll::Ready(Some(Err(io::Error::other(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry nothing the decoder needs.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.raw += data.len() as u64;
                    if let Some(kept) = &mut this.kept {
                        this.kept_len += data.len();
                        kept.push(data.clone());
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Gzip,
    Zlib,
    RawDeflate,
    Br,
    Zstd,
}

type Reader = StreamReader<Source, Bytes>;

/// One decoder per coding, kept concrete so the [`Source`] can be taken back.
enum Decoder {
    Gzip(GzipDecoder<Reader>),
    Zlib(ZlibDecoder<Reader>),
    RawDeflate(DeflateDecoder<Reader>),
    Br(BrotliDecoder<Reader>),
    Zstd(ZstdDecoder<Reader>),
}

macro_rules! each {
    ($dec:expr, $d:ident => $e:expr) => {
        match $dec {
            Decoder::Gzip($d) => $e,
            Decoder::Zlib($d) => $e,
            Decoder::RawDeflate($d) => $e,
            Decoder::Br($d) => $e,
            Decoder::Zstd($d) => $e,
        }
    };
}

impl Decoder {
    fn new(kind: Kind, source: Source) -> Self {
        let r = StreamReader::new(source);
        match kind {
            Kind::Gzip => {
                let mut d = GzipDecoder::new(r);
                // Concatenated members are one valid gzip body.
                d.multiple_members(true);
                Decoder::Gzip(d)
            }
            Kind::Zlib => Decoder::Zlib(ZlibDecoder::new(r)),
            Kind::RawDeflate => Decoder::RawDeflate(DeflateDecoder::new(r)),
            Kind::Br => Decoder::Br(BrotliDecoder::new(r)),
            Kind::Zstd => {
                let params = [async_compression::zstd::DParameter::window_log_max(
                    ZSTD_WINDOW_LOG_MAX,
                )];
                let mut d = ZstdDecoder::with_params(r, &params);
                // A zstd body may be several frames in a row.
                d.multiple_members(true);
                Decoder::Zstd(d)
            }
        }
    }

    fn source(&self) -> &Source {
        each!(self, d => d.get_ref().get_ref())
    }

    fn source_mut(&mut self) -> &mut Source {
        each!(self, d => d.get_mut().get_mut())
    }

    fn into_source(self) -> Source {
        each!(self, d => d.into_inner().into_inner())
    }
}

impl AsyncRead for Decoder {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), d => Pin::new(d).poll_read(cx, buf))
    }
}

/// The decoded body after the prefix check: held bytes first, then decoded
/// chunks as they come, each checked against the limits before it goes out.
struct Decoded {
    dec: Decoder,
    coding: Coding,
    limits: DecodeLimits,
    decoded: u64,
    head: Option<Bytes>,
    buf: BytesMut,
    done: bool,
}

impl Decoded {
    fn new(dec: Decoder, coding: Coding, limits: DecodeLimits, decoded: u64, head: Bytes) -> Self {
        Decoded {
            dec,
            coding,
            limits,
            decoded,
            head: Some(head).filter(|h| !h.is_empty()),
            buf: BytesMut::new(),
            done: false,
        }
    }
}

impl HttpBody for Decoded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if this.buf.capacity() < CHUNK {
            this.buf.reserve(CHUNK);
        }
        let res = ready!(poll_read_buf(Pin::new(&mut this.dec), cx, &mut this.buf));
        let n = match res {
            Ok(0) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Ok(n) => n,
            Err(e) => {
                this.done = true;
                let err = if this.dec.source().failed {
                    DecodeError::Upstream(e)
                } else {
                    DecodeError::Corrupt {
                        coding: this.coding,
                        source: e,
                    }
                };
                tracing::warn!(coding = ?this.coding, error = %err, "decoded page aborted");
                return Poll::Ready(Some(Err(Box::new(err))));
            }
        };
        this.decoded += n as u64;
        if let Err(err) = this.limits.check(this.decoded, this.dec.source().raw) {
            this.done = true;
            tracing::warn!(reason = "decompression_limit", coding = ?this.coding, decoded = this.decoded, error = %err, "decoded page aborted");
            return Poll::Ready(Some(Err(Box::new(err))));
        }
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Chunks already read from a body put back in front of it, optionally
/// followed by an error that was read with them (and then nothing else).
struct Replay {
    head: VecDeque<Bytes>,
    error: Option<BoxError>,
    rest: Body,
}

impl Replay {
    fn new(head: VecDeque<Bytes>, error: Option<BoxError>, rest: Body) -> Self {
        Replay { head, error, rest }
    }
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(err) = this.error.take() {
            return Poll::Ready(Some(Err(err)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.error.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.error.is_some() {
            return SizeHint::default();
        }
        // Exact when the rest is exact, so a pass-through keeps its framing.
        let head: u64 = self.head.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(head));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(head));
        }
        hint
    }
}

#[cfg(test)]
mod tests;
