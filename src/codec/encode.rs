//! Re-encoding the rewritten page in the coding the client gets, at a fast
//! level, flushed whenever the input pauses so the page keeps streaming.

use super::Coding;
use crate::body::{Body, BoxError};
use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame};
use std::io;
use std::pin::Pin;
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
/// The async-compression bufread encoders flush whenever their input returns
/// `Pending`, so every pause of the rewritten page (a slow upstream) sends out
/// what has been compressed so far. An input error ends the output with that
/// error, never with a clean end.
pub fn encode(body: Body, coding: Coding) -> Body {
    let r = StreamReader::new(Frames { body, ended: false });
    match coding {
        Coding::Identity => r.into_inner().body,
        Coding::Gzip => {
            crate::body::boxed(Encoded::new(GzipEncoder::with_quality(r, Level::Fastest)))
        }
        // HTTP `deflate` is the zlib format (RFC 9110 §8.4.1.2).
        Coding::Deflate => {
            crate::body::boxed(Encoded::new(ZlibEncoder::with_quality(r, Level::Fastest)))
        }
        Coding::Br => crate::body::boxed(Encoded::new(BrotliEncoder::with_quality(
            r,
            Level::Precise(BROTLI_QUALITY),
        ))),
        Coding::Zstd => {
            crate::body::boxed(Encoded::new(ZstdEncoder::with_quality(r, Level::Fastest)))
        }
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
