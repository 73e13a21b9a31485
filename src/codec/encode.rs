//! Re-encoding the rewritten page in the coding the client gets, at a fast
//! level, flushed whenever the input pauses so the page keeps streaming.

use super::Coding;
use crate::body::{Body, BoxError};
use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, ZstdEncoder};
use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress, Status};
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame};
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncRead;
use tokio_util::io::{StreamReader, poll_read_buf};

/// Read size for encoded output chunks.
const CHUNK: usize = 16 * 1024;

/// Brotli quality for on-the-fly compression: quality 4 is about as fast as
/// gzip's default with a better ratio; 11 would cost roughly ten times the CPU.
const BROTLI_QUALITY: i32 = 4;

/// Encode a body in `coding` (identity returns it unchanged).
///
/// Every encoder flushes whenever its input returns `Pending`, so every pause
/// of the rewritten page (a slow upstream) sends out what has been compressed
/// so far. An input error ends the output with that error, never with a clean
/// end.
pub fn encode(body: Body, coding: Coding) -> Body {
    // The brotli and zstd encoders read bytes, not frames.
    let bytes = |body| StreamReader::new(Frames { body, ended: false });
    match coding {
        Coding::Identity => body,
        Coding::Gzip => crate::body::boxed(Deflating::new(body, Wrap::Gzip)),
        // HTTP `deflate` is the zlib format (RFC 9110 §8.4.1.2).
        Coding::Deflate => crate::body::boxed(Deflating::new(body, Wrap::Zlib)),
        Coding::Br => crate::body::boxed(Encoded::new(BrotliEncoder::with_quality(
            bytes(body),
            Level::Precise(BROTLI_QUALITY),
        ))),
        Coding::Zstd => crate::body::boxed(Encoded::new(ZstdEncoder::with_quality(
            bytes(body),
            Level::Fastest,
        ))),
    }
}

/// The framings of a deflate stream the proxy sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wrap {
    Gzip,
    Zlib,
    /// No framing: the re-encoded tail of a spliced gzip page.
    Raw,
}

/// Finished deflate streams kept for the next response, per framing. Setting
/// one up costs more than compressing a small page: zlib-rs zeroes about
/// 260 KB of window, hash chains and buffers in `init` (callgrind, 2 KB gzip
/// page: 60 % of the proxy's instructions were that `memset`), while a
/// `reset()` zeroes only the hash heads. Each kept stream holds that memory,
/// hence the small bound.
///
/// Only streams that reached their end come back. zlib-rs 0.6.8's `reset()`
/// leaves level 1's "block open" flag as it was, so a stream dropped in the
/// middle of a block (a client gone, an upstream error) would start its next
/// response without a block header: a corrupt page, which CI caught when a
/// test abandoned a stream that way while another reused it.
static POOL: [Mutex<Vec<Compress>>; 3] = [
    Mutex::new(Vec::new()),
    Mutex::new(Vec::new()),
    Mutex::new(Vec::new()),
];
const POOL_MAX: usize = 4;

fn pool(wrap: Wrap) -> &'static Mutex<Vec<Compress>> {
    &POOL[wrap as usize]
}

fn take_stream(wrap: Wrap) -> Compress {
    let kept = pool(wrap).lock().unwrap_or_else(|p| p.into_inner()).pop();
    kept.unwrap_or_else(|| match wrap {
        Wrap::Gzip => Compress::new_gzip(Compression::fast(), 15),
        Wrap::Zlib => Compress::new(Compression::fast(), true),
        Wrap::Raw => Compress::new(Compression::fast(), false),
    })
}

/// Keep a stream that has written its stream end, ready for the next response.
fn give_back(wrap: Wrap, mut z: Compress) {
    let has_room = || pool(wrap).lock().unwrap_or_else(|p| p.into_inner()).len() < POOL_MAX;
    // A full pool drops the stream without paying for its reset; the reset
    // itself runs outside the lock.
    if !has_room() {
        return;
    }
    z.reset();
    let mut kept = pool(wrap).lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() < POOL_MAX {
        kept.push(z);
    }
}

/// Feed `input` to `z` with `flush` until it is all taken and, for a flush or
/// the finish, until the stream has written everything out to `out`. Returns
/// whether the stream ended.
fn compress_into(
    z: &mut Compress,
    input: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut taken = 0;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(CHUNK);
        }
        let before = z.total_in();
        let status = z
            .compress_vec(&input[taken..], out, flush)
            .map_err(io::Error::other)?;
        // `total_in` grows by at most `input.len()`, so this fits.
        taken += (z.total_in() - before) as usize;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(true),
            _ if taken == input.len() && (flush == FlushCompress::None || room_left) => {
                return Ok(false);
            }
            // More input to take, or the flush filled the buffer: again.
            Status::Ok | Status::BufError => {}
        }
    }
}

/// gzip or zlib output at level 1 with a pooled stream, flushed (sync flush)
/// whenever the input pauses so the page keeps streaming, as the
/// async-compression encoders do for brotli and zstd.
struct Deflating {
    body: Body,
    wrap: Wrap,
    /// `None` once the stream has ended (and gone back to the pool) or failed.
    z: Option<Compress>,
    out: Vec<u8>,
    /// Input went in since the last flush.
    unflushed: bool,
    /// The input has ended: only the stream's end is left.
    input_done: bool,
}

impl Deflating {
    fn new(body: Body, wrap: Wrap) -> Self {
        Deflating {
            body,
            wrap,
            z: Some(take_stream(wrap)),
            out: Vec::new(),
            unflushed: false,
            input_done: false,
        }
    }

    /// Feed `input` with `flush` (see [`compress_into`]); whether the stream ended.
    fn run(&mut self, input: &[u8], flush: FlushCompress) -> io::Result<bool> {
        match self.z.as_mut() {
            Some(z) => compress_into(z, input, flush, &mut self.out),
            None => Ok(true),
        }
    }

    fn emit(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        (!self.out.is_empty()).then(|| Ok(Frame::data(Bytes::from(std::mem::take(&mut self.out)))))
    }
}

impl HttpBody for Deflating {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.z.is_none() {
                return Poll::Ready(this.emit());
            }
            if this.input_done {
                let ended = this.run(&[], FlushCompress::Finish)?;
                if ended && let Some(z) = this.z.take() {
                    give_back(this.wrap, z);
                }
                if let Some(frame) = this.emit() {
                    return Poll::Ready(Some(frame));
                }
                continue;
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => {
                    if this.unflushed {
                        this.unflushed = false;
                        this.run(&[], FlushCompress::Sync)?;
                    }
                    return match this.emit() {
                        Some(frame) => Poll::Ready(Some(frame)),
                        None => Poll::Pending,
                    };
                }
                Poll::Ready(None) => this.input_done = true,
                Poll::Ready(Some(Err(e))) => {
                    // An input error ends the output with that error, never
                    // with a clean end: the stream is not finished, so it is
                    // dropped rather than pooled (see `POOL`).
                    this.z = None;
                    this.out.clear();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        this.run(&data, FlushCompress::None)?;
                        this.unflushed = true;
                        if this.out.len() >= CHUNK {
                            return Poll::Ready(this.emit());
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.z.is_none() && self.out.is_empty()
    }
}

/// Raw deflate at level 1 into a caller's buffer, for the re-encoded tail of
/// a spliced gzip page (`super::splice`), with a pooled stream.
pub(super) struct RawDeflate {
    z: Option<Compress>,
}

impl RawDeflate {
    pub(super) fn new() -> Self {
        RawDeflate {
            z: Some(take_stream(Wrap::Raw)),
        }
    }

    fn run(&mut self, input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
        // Compressing into a Vec with room fails only on misuse of the
        // stream, which this type rules out; the stream is dropped if it does.
        if let Some(z) = self.z.as_mut()
            && compress_into(z, input, flush, out).is_err()
        {
            self.z = None;
        }
    }

    pub(super) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if !input.is_empty() {
            self.run(input, FlushCompress::None, out);
        }
    }

    /// Everything so far out, the stream still open (a sync flush).
    pub(super) fn flush(&mut self, out: &mut Vec<u8>) {
        self.run(&[], FlushCompress::Sync, out);
    }

    /// The final block; the stream goes back to the pool.
    pub(super) fn finish(mut self, out: &mut Vec<u8>) {
        self.run(&[], FlushCompress::Finish, out);
        if let Some(z) = self.z.take() {
            give_back(Wrap::Raw, z);
        }
    }
}

/// `data` as stored deflate blocks at a byte boundary (at most 65,535 bytes
/// each); the last one has BFINAL set if `last`.
pub(super) fn stored_block(data: &[u8], last: bool, out: &mut Vec<u8>) {
    let mut pieces = data.chunks(usize::from(u16::MAX)).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return;
    }
    while let Some(piece) = pieces.next() {
        let len = piece.len() as u16;
        out.push(u8::from(last && pieces.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
}

/// A body's data frames as a byte stream; trailers are dropped, errors kept.
struct Frames {
    body: Body,
    ended: bool,
}

impl Stream for Frames {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.ended {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => this.ended = true,
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(io::Error::other(e))));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
        Poll::Ready(None)
    }
}

/// An encoder's output as a body.
struct Encoded<R> {
    reader: R,
    buf: BytesMut,
    done: bool,
}

impl<R> Encoded<R> {
    fn new(reader: R) -> Self {
        Encoded {
            reader,
            buf: BytesMut::new(),
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> HttpBody for Encoded<R> {
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
        if this.buf.capacity() < CHUNK {
            this.buf.reserve(CHUNK);
        }
        match ready!(poll_read_buf(Pin::new(&mut this.reader), cx, &mut this.buf)) {
            Ok(0) => {
                this.done = true;
                Poll::Ready(None)
            }
            Ok(_) => Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze())))),
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testing::*;
    use crate::codec::{DecodeLimits, decode};
    use std::time::Duration;

    #[tokio::test]
    async fn every_coding_round_trips_through_a_reference_decoder() {
        for page in [Vec::new(), html(1000), html(400 * 1024)] {
            for coding in COMPRESSING {
                for (size, pause_every) in [(1000, 0), (3000, 1), (64 * 1024, 2)] {
                    let (body, _) = scripted(chunked(&page, size, pause_every));
                    let got = collect(encode(body, coding)).await;
                    assert!(got.error.is_none(), "{coding:?}: {:?}", got.error);
                    assert!(
                        decompress(coding, &got.data) == page,
                        "{coding:?} size {size}: round trip differs"
                    );
                    if page.len() > 100_000 {
                        assert!(
                            got.data.len() * 3 < page.len(),
                            "{coding:?}: hardly compressed"
                        );
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn encode_then_decode_is_the_identity() {
        let page = html(200_000);
        let limits = DecodeLimits {
            max_bytes: 1 << 30,
            max_ratio: 100,
        };
        for coding in [
            Coding::Identity,
            Coding::Gzip,
            Coding::Deflate,
            Coding::Br,
            Coding::Zstd,
        ] {
            let (body, _) = scripted(chunked(&page, 5000, 3));
            let decoded = decode(encode(body, coding), coding, limits)
                .await
                .expect("refused");
            let got = collect(decoded).await;
            assert!(got.error.is_none(), "{coding:?}");
            assert!(got.data == page, "{coding:?}");
        }
    }

    /// gzip and deflate streams are pooled and reset between responses. The
    /// response after one that was abandoned or failed, between flushes or in
    /// the middle of a deflate block, must still get a whole, correct stream.
    /// (A stream left with a block open and then reset wrote no block header
    /// for the next page: the bug that CI caught.)
    #[tokio::test]
    async fn pooled_streams_start_clean_after_an_abandoned_or_failed_response() {
        use http_body_util::BodyExt;
        let page = html(100_000);
        for coding in [Coding::Gzip, Coding::Deflate] {
            for round in 0..12 {
                let len = 50_000 + round * 1000;
                // Even rounds flush after every chunk, so the page stops
                // between blocks; odd rounds never pause, so it stops with a
                // block open.
                let pause_every = if round % 2 == 0 { 1 } else { 0 };
                let mut steps = chunked(&html(len * (1 + round % 2 * 3)), 4096, pause_every);
                let (body, _) = if round % 4 < 2 {
                    // Abandoned after its first frame: a client gone.
                    scripted(steps)
                } else {
                    // Ended by an input error.
                    steps.push(Step::Fail);
                    scripted(steps)
                };
                let mut out = encode(body, coding);
                let first = out.frame().await;
                assert!(matches!(first, Some(Ok(_))), "{coding:?} round {round}");
                if round % 4 >= 2 {
                    assert!(collect(out).await.error.is_some());
                } else {
                    drop(out);
                }
                // Then a whole page through whichever stream the pool hands out.
                let (body, _) = scripted(chunked(&page, 3000, 2));
                let got = collect(encode(body, coding)).await;
                assert!(got.error.is_none(), "{coding:?}: {:?}", got.error);
                assert!(
                    decompress(coding, &got.data) == page,
                    "{coding:?} round {round}: a reused stream changed the output"
                );
            }
        }
    }

    #[tokio::test]
    async fn identity_passes_the_body_through() {
        let (body, _) = scripted(vec![Step::Data(Bytes::from_static(b"<p>hi</p>"))]);
        let got = collect(encode(body, Coding::Identity)).await;
        assert_eq!(got.data, b"<p>hi</p>");
    }

    #[tokio::test]
    async fn input_errors_end_the_output_with_an_error() {
        for coding in [
            Coding::Identity,
            Coding::Gzip,
            Coding::Deflate,
            Coding::Br,
            Coding::Zstd,
        ] {
            let mut steps = chunked(&html(50_000), 4096, 2);
            steps.push(Step::Fail);
            let (body, _) = scripted(steps);
            let got = collect(encode(body, coding)).await;
            assert!(
                got.error.is_some(),
                "{coding:?}: clean end after an input error"
            );
        }
    }

    #[tokio::test]
    async fn first_bytes_go_out_before_the_input_ends() {
        use http_body_util::BodyExt;
        let head = b"<!doctype html><html><head><title>slow</title></head><body><p>first paragraph"
            .to_vec();
        let tail = b"</p><p>second</p></body></html>".to_vec();
        for coding in COMPRESSING {
            let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
            let mut out = encode(crate::body::boxed(rx), coding);
            tx.send_data(Bytes::from(head.clone())).await.unwrap();
            // The input now pauses with the sender open: what was written so
            // far must come out, decodable, without waiting for the end.
            let mut sent = Vec::new();
            while decompress_prefix(coding, &sent) != head {
                let frame = tokio::time::timeout(Duration::from_secs(20), out.frame())
                    .await
                    .unwrap_or_else(|_| panic!("{coding:?}: no output while the input paused"));
                let data = frame
                    .expect("ended early")
                    .expect("error")
                    .into_data()
                    .unwrap();
                sent.extend_from_slice(&data);
            }
            tx.send_data(Bytes::from(tail.clone())).await.unwrap();
            drop(tx);
            let rest = collect(out).await;
            assert!(rest.error.is_none());
            sent.extend_from_slice(&rest.data);
            assert_eq!(
                decompress(coding, &sent),
                [head.clone(), tail.clone()].concat(),
                "{coding:?}"
            );
        }
    }
}
