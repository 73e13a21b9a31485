//! gzip in, gzip out, without compressing the page again.
//!
//! When the upstream sends gzip and the client takes gzip, the rewritten page
//! differs from the upstream's only from the insertion point on (the widget
//! goes before `</body>`, near the end). Decoding the whole page and encoding
//! it again costs more than everything else the proxy does to a page (a third
//! of a 64 KB gzip page's instructions were zlib-rs's level-1 encoder), and
//! trades the upstream's compression level for level 1.
//!
//! So the page is decoded (the rewriter must read it), and the rewriter's
//! output is compared with the decoded input as it comes: while they agree,
//! the upstream's own compressed bits go out as they are. At the first byte
//! where they differ, the stream is cut at the last symbol boundary before it
//! ([`inflate::Inflater::cut_at`]): the deflate block it is in is closed with
//! its own end-of-block code, an empty stored block brings the stream to a
//! byte boundary, and everything from the cut on is encoded again: in stored
//! blocks when it is short (the widget tag and `</body></html>`), at level 1
//! through a pooled zlib-rs stream when it is long (a page lol_html took over
//! early). The trailer's CRC-32 and length are computed for the new content.
//!
//! The page's final block is held until the page ends or the cut falls in it,
//! since its BFINAL bit must be cleared if more blocks follow it; a stored
//! block is held until it ends, since its length is written before its data.
//! What is held is bounded ([`MAX_HELD`]): past it the stream is cut where the
//! confirmed output ends and the rest is encoded again.
//!
//! A second gzip member is cut the same way at the first member's end.

mod inflate;
#[cfg(test)]
mod tests;

use super::decode::{DecodeError, DecodeLimits, Refusal, Refused, Source};
use super::encode::{RawDeflate, stored_block};
use crate::body::{Body, BoxError};
use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use inflate::{Inflater, Status};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use inflate::Corrupt;

/// Decoded bytes per [`Inflater::run`]: the rewriter's input chunk.
const RUN: usize = 16 * 1024;

/// Decoded bytes the prefix check holds for the rewriter. The check reads at
/// most 64 KiB of compressed input (decode.rs's keep budget for a refusal);
/// this holds all of its output for pages that compress up to 6:1, as HTML
/// does, so that they are decoded once. Past it (a repetitive page, a bomb)
/// the check counts only and the body decodes that part again. It was 64 KiB,
/// as in decode_checked, which cost a 1 MB gzip page about a third more CPU.
const HOLD: usize = 384 * 1024;

/// Compressed bytes held back at most (a long final or stored block, or
/// output the rewriter has not yet confirmed); past it the stream is cut.
pub const MAX_HELD: usize = 64 * 1024;

/// Decoded bytes kept at most for a cut that may still come; past it the
/// stream is cut.
const MAX_KEPT: u64 = 512 * 1024;

/// The environment variable that turns splicing off: with
/// `CHATHUB_GZIP_SPLICE=off` gzip pages are decoded and encoded again at
/// level 1, as for the other codings. The switch to flip if a client is ever
/// suspected of reading spliced streams wrongly.
pub const SPLICE_ENV: &str = "CHATHUB_GZIP_SPLICE";

/// Whether gzip pages are spliced (read once per process).
pub fn enabled() -> bool {
    static ON: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| match std::env::var(SPLICE_ENV).ok().as_deref() {
            Some("off") => {
                tracing::info!("{SPLICE_ENV}=off: gzip pages are decoded and encoded again");
                false
            }
            None | Some("" | "on") => true,
            Some(other) => {
                tracing::warn!(
                    value = other,
                    "{SPLICE_ENV}: expected `on` or `off`; using `on`"
                );
                true
            }
        });
    *ON
}

/// A tail at most this long goes out in stored blocks; a longer one is
/// compressed.
const SMALL_TAIL: usize = 8 * 1024;

/// Output is handed out once this much is ready.
const OUT_CHUNK: usize = 16 * 1024;

/// What splicing needs from the rewriter: bytes in, bytes out, synchronously.
pub trait Rewrite: Send + Unpin + 'static {
    /// The next decoded bytes of the page.
    fn push(&mut self, data: Bytes);
    /// The page ended.
    fn end(&mut self);
    /// Rewritten output that is ready, in order.
    fn pop(&mut self) -> Option<Bytes>;
}

/// A gzip body whose first bytes passed the prefix check (see
/// [`super::decode_checked`]), waiting for its rewriter.
pub struct Checked {
    upstream: Body,
    inf: Inflater,
    limits: DecodeLimits,
    /// Decoded during the check, not yet given to the rewriter.
    decoded: Vec<Bytes>,
    /// The upstream failed during the check: the body ends with this error.
    failed: Option<BoxError>,
    upstream_done: bool,
}

/// Read the start of a gzip body and decode it, as the prefix check of
/// [`super::decode_checked`] does: invalid data or a limit hit there hands the
/// body back as received, before any header is committed.
pub async fn check(upstream: Body, limits: DecodeLimits) -> Result<Checked, Refused> {
    // The same source as decode_checked's: it keeps what it reads (at most
    // 64 KiB) for a refusal, and says when the upstream paused.
    let mut src = Source::new(upstream, true);
    let mut inf = Inflater::new();
    let mut decoded = Vec::new();
    // Past HOLD decoded bytes the check goes on counting only; the body
    // starts from a copy of the inflater taken there, which decodes the rest
    // again (as decode_checked does), so no more than HOLD is held.
    let mut resume: Option<Inflater> = None;
    let mut failed = None;
    let mut upstream_done = false;
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut src).poll_next(cx) {
            Poll::Pending if src.prefix_done() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => Poll::Ready(Some(r)),
        })
        .await;
        let data = match next {
            None => break, // paused after sending something, or the keep budget spent
            Some(None) => {
                upstream_done = true;
                break;
            }
            Some(Some(Err(e))) => {
                failed = Some(Box::new(DecodeError::Upstream(e)) as BoxError);
                break;
            }
            Some(Some(Ok(data))) => data,
        };
        inf.push(&data);
        if let Some(r) = &mut resume {
            r.push(&data);
        }
        let why = match decode_all(&mut inf, limits, &mut decoded, &mut resume) {
            Ok(()) => continue,
            Err(Stop::Corrupt(e)) => {
                tracing::debug!(reason = "corrupt_encoding", error = %e, "passing compressed page through");
                Refusal::Corrupt
            }
            Err(Stop::Limit(e)) => {
                tracing::debug!(reason = "decompression_limit", error = %e, "passing compressed page through");
                Refusal::Limit
            }
        };
        return Err(Refused {
            body: src.into_original(),
            why,
        });
    }
    // (Another member left undecoded is for the body: it cuts in front of it.)
    if upstream_done && failed.is_none() && !inf.at_member_end() && !inf.has_input_past_member() {
        tracing::debug!(
            reason = "corrupt_encoding",
            "gzip body ends early; passing it through"
        );
        return Err(Refused {
            body: src.into_original(),
            why: Refusal::Corrupt,
        });
    }
    Ok(Checked {
        upstream: src.into_rest(),
        inf: resume.unwrap_or(inf),
        limits,
        decoded,
        failed,
        upstream_done,
    })
}

enum Stop {
    Corrupt(Corrupt),
    Limit(DecodeError),
}

/// Decode everything the inflater has (stopping before a second member's
/// data, which the splicer must cut in front of). Output goes to `out` until
/// it holds [`HOLD`] bytes; then `resume` gets a copy of the inflater as it
/// is there, and the rest is only counted.
fn decode_all(
    inf: &mut Inflater,
    limits: DecodeLimits,
    out: &mut Vec<Bytes>,
    resume: &mut Option<Inflater>,
) -> Result<(), Stop> {
    loop {
        // Only when there is more to decode: a page that ends within HOLD
        // needs no copy.
        if resume.is_none() && inf.out_total() >= HOLD as u64 {
            *resume = Some(inf.clone());
        }
        // A buffer per run, handed on as it is (not copied into a `Bytes`).
        let mut buf = Vec::new();
        let status = inf.run(RUN, &mut buf).map_err(Stop::Corrupt)?;
        limits
            .check(inf.out_total(), inf.in_total())
            .map_err(Stop::Limit)?;
        if resume.is_none() {
            if !buf.is_empty() {
                out.push(Bytes::from(buf));
            }
        } else {
            // Counting only: no cut will be made on this copy.
            inf.release(u64::MAX);
        }
        match status {
            Status::OutputFull => {}
            Status::NeedInput | Status::MemberEnd => return Ok(()),
        }
    }
}

impl Checked {
    /// The spliced body, rewritten by `rw`.
    pub fn into_body<R: Rewrite>(self, rw: R) -> Body {
        let mut s = Spliced {
            upstream: self.upstream,
            inf: self.inf,
            limits: self.limits,
            rw,
            phase: Phase::Splicing,
            decoded: VecDeque::new(),
            decoded_from: 0,
            confirmed: 0,
            emitted: 0,
            out: Vec::new(),
            crc: crc32fast::Hasher::new(),
            out_len: 0,
            failed: self.failed,
            upstream_done: self.upstream_done,
            done: false,
        };
        for chunk in self.decoded {
            s.give(chunk);
        }
        s.after_input();
        // Input the check only counted (past HOLD) is decoded again now.
        if let Err(e) = s.on_data(&[]) {
            s.failed = Some(e);
        }
        crate::body::boxed(s)
    }
}

enum Phase {
    /// Output still equals input: the upstream's bits go out.
    Splicing,
    /// Cut: output is encoded again.
    Tail(Tail),
}

/// The encoder of everything after the cut (the stream is byte-aligned there).
enum Tail {
    /// Short so far: kept for stored blocks.
    Small(Vec<u8>),
    Deflate(RawDeflate),
}

struct Spliced<R> {
    upstream: Body,
    inf: Inflater,
    limits: DecodeLimits,
    rw: R,
    phase: Phase,
    /// Decoded chunks from uncompressed offset `decoded_from` on: for the
    /// comparison and for re-encoding from a cut.
    decoded: VecDeque<Bytes>,
    decoded_from: u64,
    /// Output before this offset equals the input.
    confirmed: u64,
    /// Compressed input before this byte is in `out` (or was sent).
    emitted: u64,
    out: Vec<u8>,
    /// CRC-32 and length of the output's uncompressed content so far.
    crc: crc32fast::Hasher,
    out_len: u64,
    failed: Option<BoxError>,
    upstream_done: bool,
    done: bool,
}

impl<R: Rewrite> Spliced<R> {
    /// Give decoded bytes to the rewriter and take what it has ready.
    fn give(&mut self, chunk: Bytes) {
        if matches!(self.phase, Phase::Splicing) {
            self.decoded.push_back(chunk.clone());
        }
        self.rw.push(chunk);
        self.drain_rewriter();
    }

    fn drain_rewriter(&mut self) {
        while let Some(frame) = self.rw.pop() {
            self.output(frame);
        }
    }

    /// One frame of rewritten output.
    fn output(&mut self, frame: Bytes) {
        if let Phase::Tail(_) = self.phase {
            self.tail_write(&frame);
            return;
        }
        let mut off = 0;
        while off < frame.len() {
            let rest = &frame[off..];
            let Some(input) = self.input_at(self.confirmed) else {
                let at = self.confirmed;
                self.cut(at, rest);
                return;
            };
            let n = rest.len().min(input.len());
            // The fast path hands out slices of its input: usually the same
            // memory, else compared whole before looking for the difference.
            let same = if std::ptr::eq(rest.as_ptr(), input.as_ptr()) || rest[..n] == input[..n] {
                n
            } else {
                rest[..n]
                    .iter()
                    .zip(&input[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(n)
            };
            self.crc.update(&rest[..same]);
            self.out_len += same as u64;
            self.confirmed += same as u64;
            off += same;
            if same < n {
                let at = self.confirmed;
                self.cut(at, &frame[off..]);
                return;
            }
        }
    }

    /// The decoded input from uncompressed offset `at` to the end of its chunk.
    fn input_at(&self, at: u64) -> Option<&[u8]> {
        let mut start = self.decoded_from;
        for c in &self.decoded {
            let end = start + c.len() as u64;
            if at < end {
                return Some(&c[(at - start) as usize..]);
            }
            start = end;
        }
        None
    }

    /// Cut the stream so that output from uncompressed offset `x` on is
    /// `diverged` followed by whatever the rewriter gives next.
    fn cut(&mut self, x: u64, diverged: &[u8]) {
        let c = self.inf.cut_at(x);
        let full = c.bit / 8;
        let from = self.out.len();
        self.out
            .extend_from_slice(self.inf.input_bytes(self.emitted, full));
        let mut w = BitWriter::default();
        if !c.bit.is_multiple_of(8) {
            let last = self.inf.input_bytes(full, full + 1)[0];
            w.put(
                u64::from(last) & ((1 << (c.bit % 8)) - 1),
                (c.bit % 8) as u32,
            );
        }
        // More blocks follow the cut: the final block, if kept, is final no
        // longer. Its header is in the whole bytes copied above: a cut inside
        // a block is at least one symbol past its header (10 bits or more),
        // and a cut at the header keeps none of the block.
        if let Some(h) = self.inf.last_block_header
            && h < c.bit
        {
            debug_assert!(
                h >= self.emitted * 8 && h / 8 < full,
                "the final block header is held"
            );
            self.out[from + (h / 8 - self.emitted) as usize] &= !(1 << (h % 8));
        }
        if let Some((code, len)) = c.eob {
            w.put(code, len);
        }
        // An empty stored block: three bits, then a byte boundary, 0000 FFFF.
        w.put(0, 3);
        w.flush_into(&mut self.out);
        self.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
        tracing::trace!(at = x, cut = c.out, "gzip splice cut");

        // The tail starts at the cut: input up to `x`, then the output.
        let mut tail = Vec::with_capacity(diverged.len() + (x - c.out) as usize);
        let mut start = self.decoded_from;
        for chunk in &self.decoded {
            let end = start + chunk.len() as u64;
            let a = c.out.max(start).min(end);
            let b = x.max(start).min(end);
            tail.extend_from_slice(&chunk[(a - start) as usize..(b - start) as usize]);
            start = end;
        }
        self.phase = Phase::Tail(Tail::Small(Vec::new()));
        self.decoded.clear();
        self.inf.stop_tracking();
        self.emitted = u64::MAX;
        self.tail_encode(&tail);
        self.tail_write(diverged);
    }

    /// Rewritten output after the divergence: counted, then encoded.
    fn tail_write(&mut self, data: &[u8]) {
        self.crc.update(data);
        self.out_len += data.len() as u64;
        self.tail_encode(data);
    }

    fn tail_encode(&mut self, data: &[u8]) {
        let Phase::Tail(tail) = &mut self.phase else {
            return;
        };
        match tail {
            Tail::Small(buf) if buf.len() + data.len() <= SMALL_TAIL => buf.extend_from_slice(data),
            Tail::Small(buf) => {
                let mut z = RawDeflate::new();
                z.write(buf, &mut self.out);
                z.write(data, &mut self.out);
                *tail = Tail::Deflate(z);
            }
            Tail::Deflate(z) => z.write(data, &mut self.out),
        }
    }

    /// After new input was decoded and rewritten: send what is safe to send,
    /// cut if too much is held, drop what no cut can reach.
    fn after_input(&mut self) {
        if !matches!(self.phase, Phase::Splicing) {
            return;
        }
        let limit = self.inf.emit_limit(self.confirmed) / 8;
        if limit > self.emitted {
            self.out
                .extend_from_slice(self.inf.input_bytes(self.emitted, limit));
            self.emitted = limit;
            self.inf.release(limit);
        }
        if self.inf.held() > MAX_HELD || self.inf.out_total() - self.decoded_from > MAX_KEPT {
            let at = self.confirmed;
            self.cut(at, &[]);
            return;
        }
        // Decoded bytes before both the comparison and the oldest possible cut.
        let keep_from = self.confirmed.min(self.inf.oldest_cut_out());
        while let Some(front) = self.decoded.front() {
            let end = self.decoded_from + front.len() as u64;
            if end > keep_from {
                break;
            }
            self.decoded_from = end;
            self.decoded.pop_front();
        }
    }

    /// New compressed bytes from the upstream.
    fn on_data(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.inf.push(data);
        loop {
            if self.inf.has_input_past_member() && matches!(self.phase, Phase::Splicing) {
                // Another member follows: cut at the end of this one.
                let at = self.confirmed;
                self.cut(at, &[]);
            }
            let mut buf = Vec::new();
            let status = self.inf.run(RUN, &mut buf).map_err(corrupt)?;
            self.limits
                .check(self.inf.out_total(), self.inf.in_total())
                .map_err(BoxError::from)?;
            if !buf.is_empty() {
                self.give(Bytes::from(buf));
            }
            if !matches!(self.phase, Phase::Splicing) {
                self.inf.release(u64::MAX);
            }
            self.after_input();
            match status {
                Status::OutputFull => {}
                Status::MemberEnd if self.inf.has_input_past_member() => {}
                Status::NeedInput | Status::MemberEnd => return Ok(()),
            }
        }
    }

    /// The upstream paused: send what can be sent.
    fn on_pause(&mut self) {
        match &mut self.phase {
            Phase::Splicing => {
                // The rewriter may have confirmed output inside the last run:
                // settle a checkpoint there so its bits can go.
                self.inf.settle(self.confirmed);
                self.after_input();
            }
            Phase::Tail(Tail::Small(buf)) if !buf.is_empty() => {
                stored_block(buf, false, &mut self.out);
                buf.clear();
            }
            Phase::Tail(Tail::Small(_)) => {}
            Phase::Tail(Tail::Deflate(z)) => z.flush(&mut self.out),
        }
    }

    /// The upstream ended: finish the stream with the trailer.
    fn on_end(&mut self) -> Result<(), BoxError> {
        if self.inf.has_input_past_member() {
            // Members the prefix check left undecoded.
            self.on_data(&[])?;
        }
        if !self.inf.at_member_end() {
            return Err(corrupt(Corrupt("gzip body ends early")));
        }
        self.rw.end();
        self.drain_rewriter();
        if matches!(self.phase, Phase::Splicing) && self.confirmed < self.inf.out_total() {
            // The rewriter gave back less than it read: that is the page now.
            let at = self.confirmed;
            self.cut(at, &[]);
        }
        match std::mem::replace(&mut self.phase, Phase::Tail(Tail::Small(Vec::new()))) {
            Phase::Splicing => {
                let end = self.inf.deflate_end.unwrap_or(0).div_ceil(8);
                self.out
                    .extend_from_slice(self.inf.input_bytes(self.emitted, end));
            }
            Phase::Tail(Tail::Small(buf)) => stored_block(&buf, true, &mut self.out),
            Phase::Tail(Tail::Deflate(z)) => z.finish(&mut self.out),
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
            .extend_from_slice(&(self.out_len as u32).to_le_bytes());
        Ok(())
    }

    fn take_out(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.out)))
    }
}

fn corrupt(e: Corrupt) -> BoxError {
    Box::new(DecodeError::Corrupt {
        coding: super::Coding::Gzip,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// Bits written LSB first, as deflate packs them.
#[derive(Default)]
struct BitWriter {
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, bits: u64, n: u32) {
        self.acc |= bits << self.n;
        self.n += n;
    }

    /// Out with the bits, padded with zeros to a byte boundary.
    fn flush_into(self, out: &mut Vec<u8>) {
        let bytes = self.n.div_ceil(8) as usize;
        out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

impl<R: Rewrite> HttpBody for Spliced<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.take_out().map(|b| Ok(Frame::data(b))));
            }
            if this.out.len() >= OUT_CHUNK {
                return Poll::Ready(this.take_out().map(|b| Ok(Frame::data(b))));
            }
            if let Some(e) = this.failed.take() {
                this.done = true;
                this.out.clear();
                return Poll::Ready(Some(Err(e)));
            }
            let step = if this.upstream_done {
                Poll::Ready(None)
            } else {
                Pin::new(&mut this.upstream).poll_frame(cx)
            };
            let result = match step {
                Poll::Pending => {
                    this.on_pause();
                    return match this.take_out() {
                        Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                        None => Poll::Pending,
                    };
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.on_end()
                }
                Poll::Ready(Some(Err(e))) => Err(e),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => this.on_data(&data),
                    _ => Ok(()),
                },
            };
            if let Err(e) = result {
                // Never a clean end after an error: what is held is dropped.
                this.done = true;
                this.out.clear();
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
