//! The lol_html side of the rewriter: the handlers that choose the insertion
//! point, the once-only decision they share, and the sink that collects output.
//!
//! Insertion point: immediately before the first `</body>` end tag that closes a
//! `<body>` element, unless that end tag sits inside `<template>`, `<svg>` or
//! `<math>` (browsers ignore it there, and a script inserted there would not
//! run); otherwise at the end of the document. No insertion at all when a
//! `<script>` carrying the widget's id, a `<frameset>` or a `<plaintext>` comes
//! first.

use crate::csp::PageCsp;
use crate::metrics::SharedMetrics;
use bytes::{Bytes, BytesMut};
use lol_html::errors::RewritingError;
use lol_html::html_content::{ContentType, DocumentEnd, EndTag};
use lol_html::{AsciiCompatibleEncoding, MemorySettings, OutputSink, Selector, send};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Lets tests add handlers (for example one that fails) to the real settings.
pub(super) type SettingsHook =
    fn(send::Settings<'static, 'static>) -> send::Settings<'static, 'static>;

/// Leaves the settings as they are.
pub(super) fn no_hook(
    settings: send::Settings<'static, 'static>,
) -> send::Settings<'static, 'static> {
    settings
}

const HTML_NS: &str = "http://www.w3.org/1999/xhtml";

// Parsed once per process instead of once per response.
// The strings are constants that lol_html's own tests parse, so failing would be a build-time bug.
static STRUCTURE: LazyLock<Selector> =
    LazyLock::new(|| parse_selector("body, template, svg, math, frameset, plaintext"));
static WIDGET: LazyLock<Selector> = LazyLock::new(|| parse_selector("script[id]"));
static META_EQUIV: LazyLock<Selector> = LazyLock::new(|| parse_selector("meta[http-equiv]"));
static NONCED_SCRIPTS: LazyLock<Selector> = LazyLock::new(|| parse_selector("script[nonce]"));

#[allow(clippy::expect_used)]
fn parse_selector(s: &str) -> Selector {
    s.parse().expect("constant selector parses")
}

/// Why a response did not get the snippet, or that it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Injected,
    Skipped(&'static str),
}

/// What the handlers of one response share. Every handler runs synchronously
/// inside `write`/`end` on one thread; the atomics exist only because the
/// `Send` rewriter requires `Send + Sync` captures, so `Relaxed` suffices.
struct Decision {
    /// Set by whichever handler decides first: inserted, or skipped for a reason.
    decided: AtomicBool,
    /// The end tag being handled closed a `<template>`, `<svg>` or `<math>`
    /// implicitly; lol_html calls the inner elements' end-tag handlers before
    /// the `<body>` one, so this is how the body handler learns about it.
    closes_container: AtomicBool,
    /// Open `<template>` elements (as lol_html's element stack sees them).
    templates: AtomicUsize,
    snippet: Arc<str>,
    script_id: Arc<str>,
    fallback: Option<&'static str>,
    metrics: SharedMetrics,
    /// CSP policies and nonces read from the page, when the proxy asked for it.
    page: Option<PageScan>,
}

impl Decision {
    /// Claim the decision; `false` if another handler already made it.
    fn claim(&self, outcome: Outcome) -> bool {
        if self.decided.swap(true, Ordering::Relaxed) {
            return false;
        }
        match outcome {
            Outcome::Injected => self.metrics.inserted(self.fallback),
            Outcome::Skipped(reason) => {
                tracing::debug!(reason, "widget not inserted");
                self.metrics.skipped(reason);
            }
        }
        true
    }

    fn body_end(&self, end: &mut EndTag<'_>) {
        // Always consume the flag: it describes this end tag only.
        let closes_container = self.closes_container.swap(false, Ordering::Relaxed);
        if closes_container
            || self.templates.load(Ordering::Relaxed) > 0
            || self.decided.load(Ordering::Relaxed)
        {
            return;
        }
        // `</html>` also pops the body off lol_html's stack; only a real `</body>` counts.
        if end.name() != "body" {
            return;
        }
        if let Some(snippet) = self.choose() {
            end.before(&snippet, ContentType::Html);
        }
    }

    fn document_end(&self, end: &mut DocumentEnd<'_>) {
        if let Some(snippet) = self.choose() {
            end.append(&snippet, ContentType::Html);
        }
    }
}

impl Decision {
    /// Claim the decision and return what to insert: the plan's snippet, or
    /// under the page's `<meta>` policies the one they allow. `None` when
    /// another handler decided first, or those policies keep the widget out
    /// (skip reason `csp`).
    fn choose(&self) -> Option<Cow<'_, str>> {
        if let Some(verdict) = self.page.as_ref().and_then(PageScan::meta_snippet) {
            return match verdict {
                Ok(s) => self.claim(Outcome::Injected).then_some(Cow::Owned(s)),
                Err(blocked) => {
                    tracing::debug!(
                        reason = blocked.reason(),
                        "the page's <meta> policy blocks the widget"
                    );
                    self.claim(Outcome::Skipped("csp"));
                    None
                }
            };
        }
        self.claim(Outcome::Injected)
            .then_some(Cow::Borrowed(&*self.snippet))
    }
}

/// What the page itself says about CSP before the insertion point: its
/// `<meta http-equiv=Content-Security-Policy>` contents and the nonces of its
/// own scripts. Bounded: past the limits the page is not injected.
struct PageScan {
    csp: Arc<PageCsp>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    metas: Vec<String>,
    nonces: Vec<String>,
    too_much: bool,
}

impl PageScan {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn meta(&self, content: String) {
        let mut seen = self.seen();
        if seen.metas.len() >= crate::csp::MAX_META_POLICIES
            || content.len() > crate::csp::MAX_META_LEN
        {
            seen.too_much = true;
        } else {
            seen.metas.push(content);
        }
    }

    fn nonce(&self, nonce: String) {
        let mut seen = self.seen();
        if seen.nonces.len() < crate::csp::MAX_PAGE_NONCES
            && nonce.len() <= 256
            && !seen.nonces.contains(&nonce)
        {
            seen.nonces.push(nonce);
        }
    }

    /// `None` when the page has no `<meta>` policy: the plan's snippet stands.
    fn meta_snippet(&self) -> Option<Result<String, crate::csp::Blocked>> {
        let seen = self.seen();
        if seen.too_much {
            return Some(Err(crate::csp::Blocked::Meta));
        }
        if seen.metas.is_empty() {
            return None;
        }
        Some(self.csp.meta_snippet(&seen.metas, &seen.nonces))
    }
}

/// Collects what lol_html writes; the body adapter drains it after each call.
/// The mutex is never contended: only the task polling the body touches it.
#[derive(Clone, Default)]
pub(super) struct Sink(Arc<Mutex<BytesMut>>);

impl Sink {
    /// Everything written since the last call, as one buffer.
    pub(super) fn take(&self) -> Bytes {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .split()
            .freeze()
    }
}

#[cfg(test)]
impl Sink {
    /// Bytes allocated for output not yet taken.
    pub(super) fn capacity(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .capacity()
    }
}

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        // lol_html ends the output with an empty chunk; it carries nothing.
        if !chunk.is_empty() {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(chunk);
        }
    }
}

/// One response's lol_html rewriter plus its output sink.
pub(super) struct Engine {
    rewriter: send::HtmlRewriter<'static, Sink>,
    sink: Sink,
    decision: Arc<Decision>,
}

/// How the page's bytes are to be read.
#[derive(Clone, Copy)]
pub(super) struct Charset {
    pub encoding: AsciiCompatibleEncoding,
    /// Follow the first `<meta charset>`; only when the header named none.
    pub from_meta: bool,
}

/// What an `Engine` needs besides the charset.
pub(super) struct EngineParams<'a> {
    pub snippet: &'a Arc<str>,
    pub script_id: &'a Arc<str>,
    pub max_memory: usize,
    /// The snippet stands in for the widget, for this reason (counted so).
    pub fallback: Option<&'static str>,
    pub metrics: &'a SharedMetrics,
    pub hook: SettingsHook,
    /// Judge the page's own `<meta>` CSP and nonces (see [`crate::csp::PageCsp`]).
    pub csp: Option<Arc<PageCsp>>,
}

impl Engine {
    pub(super) fn new(params: EngineParams<'_>, charset: Charset) -> Self {
        let decision = Arc::new(Decision {
            decided: AtomicBool::new(false),
            closes_container: AtomicBool::new(false),
            templates: AtomicUsize::new(0),
            snippet: params.snippet.clone(),
            script_id: params.script_id.clone(),
            fallback: params.fallback,
            metrics: params.metrics.clone(),
            page: params
                .csp
                .filter(|c| c.inspects_page())
                .map(|csp| PageScan {
                    csp,
                    seen: Mutex::default(),
                }),
        });
        let sink = Sink::default();
        let settings = (params.hook)(page_handlers(
            settings(&decision, params.max_memory, charset),
            &decision,
        ));
        let rewriter = send::HtmlRewriter::new(settings, sink.clone());
        Engine {
            rewriter,
            sink,
            decision,
        }
    }

    /// Feed one piece of the page. After an `Err` the engine must be dropped:
    /// lol_html panics if used again. With graceful bail-out on, every byte fed
    /// so far is in the sink by then.
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), RewritingError> {
        self.rewriter.write(data)
    }

    /// Finish the document (runs the end-of-document fallback).
    pub(super) fn end(self) -> Result<(), RewritingError> {
        self.rewriter.end()
    }

    /// Whether the snippet has been placed or ruled out. From then on the rest
    /// of the page is copied verbatim whether or not lol_html reads it.
    pub(super) fn decided(&self) -> bool {
        self.decision.decided.load(Ordering::Relaxed)
    }

    /// A handle on the output buffer that outlives `end`.
    pub(super) fn sink(&self) -> Sink {
        self.sink.clone()
    }
}

fn settings(
    decision: &Arc<Decision>,
    max_memory: usize,
    charset: Charset,
) -> send::Settings<'static, 'static> {
    let memory = MemorySettings::new()
        // Counted against the limit, so keep it a small share of it.
        .with_preallocated_parsing_buffer_size((max_memory / 4).min(8 * 1024))
        .with_max_allowed_memory_usage(max_memory)
        .with_graceful_bail_out_on_memory_limit_exceeded(true);

    // One handler for the structural elements: each selector costs lol_html
    // work on every start tag, so they share one list and one closure.
    let d = decision.clone();
    let structure = move |el: &mut send::Element<'_, '_>| {
        if d.decided.load(Ordering::Relaxed) {
            return Ok(());
        }
        match el.tag_name().as_str() {
            "body" => {
                let d = d.clone();
                // `<body>` always has content, so this cannot fail; if it did,
                // the document-end fallback still inserts the snippet.
                let _ = el.on_end_tag(Box::new(move |end: &mut EndTag<'_>| {
                    d.body_end(end);
                    Ok(())
                }));
            }
            name @ ("template" | "svg" | "math") => {
                let is_template = name == "template";
                let d2 = d.clone();
                let registered = el.on_end_tag(Box::new(move |end: &mut EndTag<'_>| {
                    if is_template {
                        // lol_html pops each template exactly once; never underflow anyway.
                        let _ =
                            d2.templates
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                    n.checked_sub(1)
                                });
                    }
                    if end.name() == "body" {
                        d2.closes_container.store(true, Ordering::Relaxed);
                    }
                    Ok(())
                }));
                // Self-closing `<svg/>` has no end tag (registration fails) and no content.
                if registered.is_ok() && is_template {
                    d.templates.fetch_add(1, Ordering::Relaxed);
                }
            }
            // `<plaintext>` in SVG or MathML is an ordinary foreign element.
            "frameset" if el.namespace_uri() == HTML_NS => {
                d.claim(Outcome::Skipped("frameset"));
            }
            "plaintext" if el.namespace_uri() == HTML_NS => {
                d.claim(Outcome::Skipped("plaintext"));
            }
            _ => {}
        }
        Ok(())
    };

    // Only `<script>` elements are looked at for the widget's id: the widget
    // is a script, and matching `[id]` on every element halves lol_html's
    // throughput (it must then lex the attributes of every start tag).
    let d = decision.clone();
    let widget = move |el: &mut send::Element<'_, '_>| {
        if !d.decided.load(Ordering::Relaxed)
            && el.get_attribute("id").as_deref() == Some(&*d.script_id)
        {
            d.claim(Outcome::Skipped("already_present"));
        }
        Ok(())
    };

    let d = decision.clone();
    let end = move |end: &mut DocumentEnd<'_>| {
        d.document_end(end);
        Ok(())
    };

    // The page's charset only changes how lol_html encodes inserted text, and
    // every ASCII-compatible encoding writes ASCII the same way: following
    // `<meta charset>` (one more selector on every start tag) is only worth it
    // when the snippet, or a nonce the page supplies, may not be ASCII.
    let follow_meta =
        charset.from_meta && (!decision.snippet.is_ascii() || decision.page.is_some());

    send::Settings::new_send()
        .with_encoding(charset.encoding)
        .with_adjust_charset_on_meta_tag(follow_meta)
        // Strict mode turns some odd-but-real markup into an error that is never
        // bailed out of gracefully (truncating the page); we only insert one tag.
        .with_strict(false)
        .with_memory_settings(memory)
        .with_graceful_bail_out_on_content_handler_error(true)
        .append_element_content_handler((
            Cow::Borrowed(&*STRUCTURE),
            send::ElementContentHandlers::default().element(structure),
        ))
        .append_element_content_handler((
            Cow::Borrowed(&*WIDGET),
            send::ElementContentHandlers::default().element(widget),
        ))
        .append_document_content_handler(send::DocumentContentHandlers::default().end(end))
}

/// The handlers that read the page's `<meta>` CSP and script nonces, added
/// only when the proxy asked for them. Both stop once the snippet is placed.
fn page_handlers(
    settings: send::Settings<'static, 'static>,
    decision: &Arc<Decision>,
) -> send::Settings<'static, 'static> {
    if decision.page.is_none() {
        return settings;
    }
    let d = decision.clone();
    let meta = move |el: &mut send::Element<'_, '_>| {
        // Inside <template> a <meta> does nothing; outside HTML it is not a meta.
        if let Some(page) = &d.page
            && !d.decided.load(Ordering::Relaxed)
            && d.templates.load(Ordering::Relaxed) == 0
            && el.namespace_uri() == HTML_NS
            && el
                .get_attribute("http-equiv")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("content-security-policy"))
            && let Some(content) = el.get_attribute("content")
        {
            page.meta(content);
        }
        Ok(())
    };
    let d = decision.clone();
    let nonced = move |el: &mut send::Element<'_, '_>| {
        if let Some(page) = &d.page
            && !d.decided.load(Ordering::Relaxed)
            && el.namespace_uri() == HTML_NS
            && let Some(nonce) = el.get_attribute("nonce")
            && !nonce.is_empty()
        {
            page.nonce(nonce);
        }
        Ok(())
    };
    settings
        .append_element_content_handler((
            Cow::Borrowed(&*META_EQUIV),
            send::ElementContentHandlers::default().element(meta),
        ))
        .append_element_content_handler((
            Cow::Borrowed(&*NONCED_SCRIPTS),
            send::ElementContentHandlers::default().element(nonced),
        ))
}
