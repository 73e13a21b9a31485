//! Streaming HTML rewriting: inserts one snippet before the first `</body>`
//! (or at the end of the document), never twice, and never truncates a page.
//! Pure and synchronous inside a `Body` adapter: no I/O, no tasks.
//!
//! [`rewrite`] wraps the (already decoded) upstream body in [`RewriteBody`],
//! which handles each data frame as it is polled and hands out whatever is
//! ready, so the client gets bytes as soon as upstream sends them:
//!
//! 1. the first bytes are checked for a byte order mark (UTF-16 passes through);
//! 2. the fast path ([`fast`]) scans ordinary markup at memory speed and hands
//!    the page to lol_html ([`engine`]) at the first construct it does not
//!    fully understand (SVG, `<template>`, escaped scripts, ...); both decide
//!    the same insertion point, which a differential property test checks;
//! 3. once the snippet is placed (or ruled out) the rest of the page is copied
//!    without being parsed;
//! 4. on any lol_html error the bytes already fed come out raw (its graceful
//!    bail-out) and the rest of the body passes through untouched.

mod engine;
mod fast;
#[cfg(test)]
mod tests;

use crate::body::{Body, BoxError};
use crate::metrics::SharedMetrics;
use bytes::{Bytes, BytesMut};
use engine::{Charset, Engine, EngineParams, SettingsHook, Sink};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use lol_html::AsciiCompatibleEncoding;
use lol_html::errors::RewritingError;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// What to insert, and how to read the page.
#[derive(Clone, Debug)]
pub struct RewritePlan {
    /// The complete HTML to insert (ASCII).
    pub snippet: Arc<str>,
    /// A `<script>` with this id before the insertion point means "already there".
    pub script_id: Arc<str>,
    /// Charset from `Content-Type`; `None` means "from `<meta>`, else UTF-8".
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// Upper bound for the rewriter's own buffers.
    pub max_memory: usize,
    /// `Some(reason)` when the snippet is the fallback contact block standing
    /// in for the widget: the page is then counted as `fallback` with that
    /// reason once the block goes in, not as `injected`.
    pub fallback: Option<&'static str>,
}

/// Wrap an (already decoded) HTML body so that it comes out with the snippet in it.
pub fn rewrite(body: Body, plan: RewritePlan, metrics: SharedMetrics) -> Body {
    RewriteBody::new(body, plan, metrics).boxed_unsync()
}

/// The rewriter without a body around it, driven by the gzip splicer
/// ([`crate::codec::splice`]), which decodes the page itself. `csp` as for
/// [`rewrite_with_csp`].
pub fn driven(
    plan: RewritePlan,
    csp: Option<Arc<crate::csp::PageCsp>>,
    metrics: SharedMetrics,
) -> Driven {
    let mut rb = RewriteBody::new(crate::body::empty(), plan, metrics);
    rb.csp = csp;
    Driven(rb)
}

/// See [`driven`].
pub struct Driven(RewriteBody);

impl crate::codec::splice::Rewrite for Driven {
    fn push(&mut self, data: Bytes) {
        self.0.on_data(data);
    }

    fn end(&mut self) {
        self.0.on_end();
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.0.queued.pop_front().and_then(|f| f.into_data().ok())
    }
}

/// [`rewrite`] without the fast path: every page goes through lol_html. Only
/// for the benchmark that compares the two.
#[doc(hidden)]
pub fn rewrite_with_lol_html_only(body: Body, plan: RewritePlan, metrics: SharedMetrics) -> Body {
    RewriteBody::build(body, plan, metrics, engine::no_hook, false).boxed_unsync()
}

/// Like [`rewrite`], for a page whose CSP the proxy handles: `plan.snippet`
/// (rendered for the header policies, see [`crate::csp::PageCsp::header_snippet`])
/// is inserted unless the page has `<meta http-equiv=Content-Security-Policy>`
/// policies before the insertion point; then `csp` renders the snippet with
/// a nonce they accept (the header's, or one of the page's own scripts'), or
/// the page is left without it (skip reason `csp`).
pub fn rewrite_with_csp(
    body: Body,
    plan: RewritePlan,
    csp: Arc<crate::csp::PageCsp>,
    metrics: SharedMetrics,
) -> Body {
    let mut rb = RewriteBody::new(body, plan, metrics);
    rb.csp = Some(csp);
    rb.boxed_unsync()
}

/// The environment variable that turns the fast path off: with
/// `CHATHUB_REWRITE_ENGINE=lol_html` every page goes through lol_html, the
/// engine of record. `scripts/test` runs the whole suite both ways; it is also
/// the switch to flip if the fast path is ever suspected of a wrong insertion.
pub const ENGINE_ENV: &str = "CHATHUB_REWRITE_ENGINE";

/// Whether the fast path may be used (read once per process).
fn fast_path_enabled() -> bool {
    static FAST: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| fast_path_from(std::env::var(ENGINE_ENV).ok().as_deref()));
    *FAST
}

/// [`ENGINE_ENV`]'s value → whether the fast path is on.
fn fast_path_from(value: Option<&str>) -> bool {
    match value {
        Some("lol_html") => {
            tracing::info!("{ENGINE_ENV}=lol_html: the rewriter's fast path is off");
            false
        }
        None | Some("" | "fast") => true,
        Some(other) => {
            tracing::warn!(
                value = other,
                "{ENGINE_ENV}: expected `fast` or `lol_html`; using `fast`"
            );
            true
        }
    }
}

/// lol_html copies a whole `write` into its buffer when the previous one ended
/// inside a tag, and that copy counts against the memory limit. Feeding it at
/// most this much at a time keeps that copy small whatever the upstream frame size.
const MAX_WRITE: usize = 16 * 1024;

/// Bytes needed to recognise any byte order mark.
const BOM_LEN: usize = 3;

/// Frames a rewritten body has room for from the start.
const QUEUED: usize = 4;

/// An `http_body::Body` that rewrites the inner body as it is polled.
pub struct RewriteBody {
    inner: Body,
    stage: Stage,
    /// Frames ready to hand out, oldest first.
    queued: VecDeque<Frame<Bytes>>,
    metrics: SharedMetrics,
    /// The page's CSP state, for [`rewrite_with_csp`].
    csp: Option<Arc<crate::csp::PageCsp>>,
    /// Whether the fast path may be tried (tests turn it off to compare).
    fast: bool,
}

/// The fast path's state, and what lol_html needs if it takes over.
struct FastStage {
    scanner: fast::Scanner,
    plan: RewritePlan,
    charset: Charset,
}

enum Stage {
    /// Waiting for the first bytes, to look for a byte order mark.
    Sniff {
        head: BytesMut,
        plan: RewritePlan,
        hook: SettingsHook,
    },
    /// Scanning without lol_html (see [`fast`]).
    Fast(Box<FastStage>),
    /// Feeding lol_html.
    Rewrite(Box<Engine>, Sink),
    /// Passing the rest of the body through unchanged (skipped, or bailed out).
    Pass,
    /// Upstream ended (or failed); nothing more to read.
    Done,
}

impl RewriteBody {
    /// Wrap `inner`; nothing happens until the body is polled.
    pub fn new(inner: Body, plan: RewritePlan, metrics: SharedMetrics) -> Self {
        Self::build(inner, plan, metrics, engine::no_hook, fast_path_enabled())
    }

    /// With extra lol_html handlers, and so without the fast path (tests).
    #[cfg(test)]
    fn with_hook(
        inner: Body,
        plan: RewritePlan,
        metrics: SharedMetrics,
        hook: SettingsHook,
    ) -> Self {
        Self::build(inner, plan, metrics, hook, false)
    }

    /// Always through lol_html (tests compare the two paths).
    #[cfg(test)]
    fn without_fast_path(inner: Body, plan: RewritePlan, metrics: SharedMetrics) -> Self {
        Self::build(inner, plan, metrics, engine::no_hook, false)
    }

    fn build(
        inner: Body,
        plan: RewritePlan,
        metrics: SharedMetrics,
        hook: SettingsHook,
        fast: bool,
    ) -> Self {
        RewriteBody {
            inner,
            stage: Stage::Sniff {
                head: BytesMut::new(),
                plan,
                hook,
            },
            // Room for what one read of a page usually becomes (the part
            // before `</body>`, the tag, the rest, the end) without regrowing
            // from empty on every page.
            queued: VecDeque::with_capacity(QUEUED),
            metrics,
            csp: None,
            fast,
        }
    }

    /// Handle one data frame from upstream.
    fn on_data(&mut self, data: Bytes) {
        match &mut self.stage {
            Stage::Sniff { head, .. } => {
                let data = if head.is_empty() && data.len() >= BOM_LEN {
                    data
                } else {
                    head.extend_from_slice(&data);
                    if head.len() < BOM_LEN {
                        return;
                    }
                    head.split().freeze()
                };
                self.start(&data);
                self.feed(data);
            }
            Stage::Fast(..) | Stage::Rewrite(..) => self.feed(data),
            Stage::Pass => self.queue(data),
            Stage::Done => {}
        }
    }

    /// Upstream has no more data (end of body, or trailers follow).
    fn on_end(&mut self) {
        if let Stage::Sniff { head, .. } = &mut self.stage {
            let head = head.split().freeze();
            if head.is_empty() {
                // Nothing to put a widget into.
                self.metrics.skipped("empty_body");
                self.stage = Stage::Done;
                return;
            }
            self.start(&head);
            self.feed(head);
        }
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Rewrite(engine, sink) => {
                if let Err(e) = engine.end() {
                    self.bail_out(&e);
                }
                self.queue(sink.take());
            }
            Stage::Fast(mut f) => {
                // No `</body>`: the snippet goes at the end, as lol_html's fallback does.
                let queued = &mut self.queued;
                f.scanner
                    .finish(&f.plan.snippet, &mut |b| queued.push_back(Frame::data(b)));
                self.metrics.inserted(f.plan.fallback);
            }
            _ => {}
        }
    }

    /// Choose how to read the page from its first bytes, and leave `Sniff`.
    fn start(&mut self, first: &[u8]) {
        let Stage::Sniff { plan, hook, .. } = std::mem::replace(&mut self.stage, Stage::Pass)
        else {
            return;
        };
        let charset = match charset(first, plan.encoding) {
            Ok(charset) => charset,
            Err(reason) => {
                tracing::debug!(reason, "page encoding not rewritable; passing through");
                self.metrics.skipped(reason);
                return; // stays `Pass`
            }
        };
        // The fast path writes no text of its own but the snippet: it needs
        // one that reads the same in every ASCII-compatible encoding. A page
        // CSP scan makes it hand over at `<meta http-equiv>` and nonced scripts.
        let fast = self.fast && plan.snippet.is_ascii() && plan.script_id.is_ascii();
        if fast {
            let csp = self.csp.as_ref().is_some_and(|c| c.inspects_page());
            let watch = fast::Watch {
                csp,
                meta_charset: csp && charset.from_meta,
            };
            let scanner = fast::Scanner::new(&plan.script_id, watch);
            self.stage = Stage::Fast(Box::new(FastStage {
                scanner,
                plan,
                charset,
            }));
            return;
        }
        let engine = self.engine(&plan, charset, hook);
        let sink = engine.sink();
        self.stage = Stage::Rewrite(Box::new(engine), sink);
    }

    fn engine(&self, plan: &RewritePlan, charset: Charset, hook: SettingsHook) -> Engine {
        let params = EngineParams {
            snippet: &plan.snippet,
            script_id: &plan.script_id,
            max_memory: plan.max_memory,
            fallback: plan.fallback,
            metrics: &self.metrics,
            hook,
            csp: self.csp.clone(),
        };
        Engine::new(params, charset)
    }

    /// Run `data` through the fast path; returns what lol_html must still read
    /// if the fast path handed the page over.
    fn feed_fast(&mut self, data: Bytes) -> Option<Bytes> {
        let Stage::Fast(f) = &mut self.stage else {
            return Some(data);
        };
        let queued = &mut self.queued;
        let step = f.scanner.feed(data, &f.plan.snippet, &mut |b| {
            queued.push_back(Frame::data(b))
        });
        let fallback = f.plan.fallback;
        let (replay, rest) = match step {
            fast::Step::More => return None,
            fast::Step::Injected => {
                self.metrics.inserted(fallback);
                self.stage = Stage::Pass;
                return None;
            }
            fast::Step::AlreadyPresent => {
                tracing::debug!(reason = "already_present", "widget not inserted");
                self.metrics.skipped("already_present");
                self.stage = Stage::Pass;
                return None;
            }
            fast::Step::Handoff { replay, rest } => (replay, rest),
        };
        let Stage::Fast(f) = std::mem::replace(&mut self.stage, Stage::Pass) else {
            return None; // unreachable: matched above
        };
        // A `<meta charset>` the fast path read already fixed the encoding,
        // as lol_html would have done (once per page).
        let charset = match f.scanner.meta_charset() {
            Some(encoding) => Charset {
                encoding,
                from_meta: false,
            },
            None => f.charset,
        };
        let mut engine = self.engine(&f.plan, charset, engine::no_hook);
        let sink = engine.sink();
        // Bring lol_html to where the fast path stopped: one start tag per open
        // element. Those bytes were already sent, so their output is dropped.
        if let Err(e) = engine.write(&replay) {
            // A replay is at most a few KiB of short tags; if lol_html still
            // fails, the page goes on unchanged.
            self.bail_out(&e);
            let _ = sink.take();
            return Some(rest);
        }
        let replayed = sink.take();
        debug_assert_eq!(
            replayed,
            &replay[..],
            "lol_html emits complete tags at once"
        );
        tracing::trace!(
            depth = replay.len(),
            "fast path handed the page to lol_html"
        );
        self.stage = Stage::Rewrite(Box::new(engine), sink);
        Some(rest)
    }

    /// Run `data` through the rewriter (or pass it on, if not rewriting).
    fn feed(&mut self, data: Bytes) {
        let data = match self.stage {
            Stage::Fast(_) => match self.feed_fast(data) {
                Some(rest) => rest,
                None => return,
            },
            _ => data,
        };
        let Stage::Rewrite(engine, sink) = &mut self.stage else {
            self.queue(data);
            return;
        };
        let mut at = 0;
        while at < data.len() {
            let end = (at + MAX_WRITE).min(data.len());
            if let Err(e) = engine.write(&data[at..end]) {
                // lol_html has flushed every byte fed so far (including this
                // piece) raw into the sink; what is left of the frame goes as is.
                let out = sink.take();
                self.stage = Stage::Pass;
                self.bail_out(&e);
                self.queue(out);
                self.queue(data.slice(end..));
                return;
            }
            at = end;
            if engine.decided() {
                // Past the insertion point lol_html would only copy bytes, so
                // stop parsing: `end` flushes what it holds (an unfinished tag
                // comes out verbatim) and the rest of the page passes through.
                self.finish_early(data.slice(end..));
                return;
            }
        }
        let out = sink.take();
        self.queue(out);
    }

    /// Retire the rewriter once the decision is made; `rest` follows raw.
    fn finish_early(&mut self, rest: Bytes) {
        if let Stage::Rewrite(engine, sink) = std::mem::replace(&mut self.stage, Stage::Pass) {
            if let Err(e) = engine.end() {
                self.bail_out(&e);
            }
            self.queue(sink.take());
        }
        self.queue(rest);
    }

    fn bail_out(&self, e: &RewritingError) {
        let reason = match e {
            RewritingError::MemoryLimitExceeded(_) => "memory_limit",
            _ => "rewriter_error",
        };
        tracing::warn!(reason, error = %e, "html rewriter bailed out; the rest of the page passes through unchanged");
        self.metrics.rewrite_failure(reason);
    }

    fn queue(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.queued.push_back(Frame::data(data));
        }
    }
}

#[cfg(test)]
impl RewriteBody {
    /// Bytes this adapter holds besides lol_html's own (limited) buffers:
    /// frames not yet handed out plus the output buffer's capacity.
    fn held_bytes(&self) -> usize {
        let queued: usize = self
            .queued
            .iter()
            .filter_map(|f| f.data_ref())
            .map(Bytes::len)
            .sum();
        let sink = match &self.stage {
            Stage::Rewrite(_, sink) => sink.capacity(),
            Stage::Fast(f) => f.scanner.pending_len(),
            _ => 0,
        };
        queued + sink
    }
}

/// The encoding to rewrite with, or the skip reason. A byte order mark wins
/// over the header (as in browsers); lol_html only reads ASCII-compatible ones.
fn charset(
    first: &[u8],
    header: Option<&'static encoding_rs::Encoding>,
) -> Result<Charset, &'static str> {
    if first.starts_with(&[0xFF, 0xFE]) || first.starts_with(&[0xFE, 0xFF]) {
        return Err("utf16");
    }
    if first.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Ok(Charset {
            encoding: AsciiCompatibleEncoding::utf_8(),
            from_meta: false,
        });
    }
    match header {
        None => Ok(Charset {
            encoding: AsciiCompatibleEncoding::utf_8(),
            from_meta: true,
        }),
        Some(enc) => match AsciiCompatibleEncoding::new(enc) {
            Some(encoding) => Ok(Charset {
                encoding,
                from_meta: false,
            }),
            None if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE => Err("utf16"),
            None => Err("unsupported_charset"),
        },
    }
}

impl http_body::Body for RewriteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.queued.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            match this.stage {
                Stage::Done => return Poll::Ready(None),
                // Nothing left to rewrite: hand frames (and errors) straight through.
                Stage::Pass => return Pin::new(&mut this.inner).poll_frame(cx),
                Stage::Sniff { .. } | Stage::Fast(..) | Stage::Rewrite(..) => {}
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.on_data(data),
                    Err(trailers) => {
                        this.on_end();
                        this.queued.push_back(trailers);
                        // Anything after trailers (there should be nothing) passes through.
                        this.stage = Stage::Pass;
                    }
                },
                // Upstream died mid-body: the client must see an error, not a
                // clean (truncated) end. The rewriter's held-back bytes are dropped.
                Some(Err(e)) => {
                    this.stage = Stage::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.on_end(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.queued.is_empty() && matches!(self.stage, Stage::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes by the snippet, or not at all; say nothing exact.
        SizeHint::default()
    }
}
