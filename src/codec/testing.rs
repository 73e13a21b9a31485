//! Test helpers for the codec: reference compressors (flate2, brotli, zstd
//! crates, independent of async-compression) and scripted upstream bodies.

use super::Coding;
use crate::body::{Body, BoxError};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// The codings that actually compress.
pub const COMPRESSING: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd];

/// A page of roughly `len` bytes, repetitive like real markup but not uniform.
pub fn html(len: usize) -> Vec<u8> {
    let mut out = b"<!doctype html><html><head><title>t</title></head><body>\n".to_vec();
    let mut i = 0u64;
    while out.len() < len {
        // A cheap generator so the text is not one repeated line.
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!(
                "<p class=\"c{}\">item {} of the list: {:x}</p>\n",
                i % 7,
                i % 1000,
                i >> 40
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"</body></html>\n");
    out
}

/// Compress with the reference implementation (zlib format for deflate).
pub fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Identity => data.to_vec(),
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Br => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        Coding::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

/// Raw deflate (no zlib wrapper), as some servers send for `deflate`.
pub fn compress_raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn reader<'a>(coding: Coding, data: &'a [u8]) -> Box<dyn Read + 'a> {
    match coding {
        Coding::Identity => Box::new(data),
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(data)),
        Coding::Br => Box::new(brotli::Decompressor::new(data, 4096)),
        Coding::Zstd => Box::new(zstd::stream::read::Decoder::new(data).unwrap()),
    }
}

/// Decompress a complete body with the reference implementation.
pub fn decompress(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    reader(coding, data).read_to_end(&mut out).unwrap();
    out
}

/// Decompress as much of an incomplete body as the data allows.
pub fn decompress_prefix(coding: Coding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = reader(coding, data);
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// One step of a scripted upstream body.
#[derive(Clone)]
pub enum Step {
    Data(Bytes),
    /// Return `Pending` once (and wake at once): the upstream pauses.
    Pause,
    /// The upstream fails (a reset, a timeout).
    Fail,
}

/// `data` cut into `size`-byte chunks, with a pause after every `pause_every`
/// chunks (0 = never).
pub fn chunked(data: &[u8], size: usize, pause_every: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, c) in data.chunks(size.max(1)).enumerate() {
        steps.push(Step::Data(Bytes::copy_from_slice(c)));
        if pause_every > 0 && (i + 1) % pause_every == 0 {
            steps.push(Step::Pause);
        }
    }
    steps
}

struct Scripted {
    steps: VecDeque<Step>,
    consumed: Arc<AtomicU64>,
}

impl HttpBody for Scripted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.steps.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Data(d)) => {
                this.consumed.fetch_add(d.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Some(Step::Pause) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Fail) => Poll::Ready(Some(Err("upstream connection reset".into()))),
        }
    }
}

/// A body that plays `steps`, and a counter of the data bytes it has yielded.
pub fn scripted(steps: Vec<Step>) -> (Body, Arc<AtomicU64>) {
    let consumed = Arc::new(AtomicU64::new(0));
    (
        crate::body::boxed(Scripted {
            steps: steps.into(),
            consumed: consumed.clone(),
        }),
        consumed,
    )
}

/// What a body delivered: its data, the error it ended with (if any), and its
/// largest frame.
pub struct Collected {
    pub data: Vec<u8>,
    pub error: Option<BoxError>,
    pub max_frame: usize,
}

/// Read a body to its end or its error.
pub async fn collect(mut body: Body) -> Collected {
    let mut c = Collected {
        data: Vec::new(),
        error: None,
        max_frame: 0,
    };
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    c.max_frame = c.max_frame.max(d.len());
                    c.data.extend_from_slice(&d);
                }
            }
            Err(e) => {
                c.error = Some(e);
                break;
            }
        }
    }
    c
}

/// Like [`collect`] but only counts, for bodies too large to keep.
pub async fn drain(mut body: Body) -> (u64, Option<BoxError>, usize) {
    let (mut total, mut max_frame) = (0u64, 0usize);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    max_frame = max_frame.max(d.len());
                    total += d.len() as u64;
                }
            }
            Err(e) => return (total, Some(e), max_frame),
        }
    }
    (total, None, max_frame)
}

/// Peak resident set size of this process, in bytes (Linux only).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A gzip body of `members` concatenated members, each inflating to
/// `member_len` zero bytes: deflate tops out near 1032:1, so 1 GiB takes
/// about 1 MiB.
pub fn gzip_bomb(member_len: usize, members: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; member_len]).unwrap();
    let member = e.finish().unwrap();
    member.repeat(members)
}

/// A zstd body of `frames` concatenated frames of `frame_len` zero bytes each.
pub fn zstd_bomb(frame_len: usize, frames: usize) -> Vec<u8> {
    zstd::encode_all(&vec![0u8; frame_len][..], 19)
        .unwrap()
        .repeat(frames)
}
