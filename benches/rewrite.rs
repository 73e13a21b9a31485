//! Rewriter throughput (MB/s) on realistic pages: generated blog-like pages of
//! 2 KB, 64 KB and 1 MB ending in `</body></html>`, plus the fixture pages under
//! `tests/fixtures/`. Each page is measured three ways, all fed in 16 KiB frames:
//!
//! * `copy`: appending the frames to a buffer, the floor any streaming proxy pays;
//! * `lol_html_bare`: lol_html with no handlers at all, copying its output the
//!   same way (what the parser alone costs);
//! * `rewrite`: [`chathub_proxy::rewrite::rewrite`] end to end, i.e. the body
//!   adapter, the fast path (handing over to lol_html where it must), the
//!   insertion and the metrics, per response;
//! * `rewrite_lol_html`: the same with the fast path off, every page through
//!   lol_html with our handlers.

use bytes::Bytes;
use chathub_proxy::body::{self, BoxError};
use chathub_proxy::metrics::Metrics;
use chathub_proxy::rewrite::{self, RewritePlan};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body::{Body as _, Frame};
use http_body_util::StreamBody;
use std::fmt::Write;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

const FRAME: usize = 16 * 1024;
const SNIPPET: &str = r#"<script type="module" id="operator-chat-panel-script" src="https://widget.example/w.js" token="eyJhbGciOi.e30.sig"></script>"#;

/// A blog-like page of about `size` bytes: head with styles and scripts, a nav,
/// then articles (paragraphs, links, images, lists, comments, inline scripts)
/// until the size is reached, then a footer and `</body></html>`.
fn page(size: usize) -> Vec<u8> {
    let mut s = String::with_capacity(size + 2048);
    s.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Example news</title>\n",
        "<link rel=\"stylesheet\" href=\"/assets/site.3f9a.css\">\n<script async src=\"/assets/analytics.js\"></script>\n",
        "<style>.card{display:flex;gap:8px}.nav a{color:#333}</style>\n</head>\n",
        "<body class=\"home\">\n<header class=\"nav\"><a href=\"/\">Home</a> <a href=\"/world\">World</a> <a href=\"/tech\">Tech</a></header>\n<main>\n",
    ));
    let mut i = 0;
    while s.len() + 600 < size {
        let _ = write!(
            s,
            concat!(
                "<article class=\"card\" id=\"a{i}\" data-id=\"{i}\"><h2><a href=\"/story/{i}?ref=home&amp;pos={i}\">Story number {i} about something</a></h2>\n",
                "<img src=\"/img/{i}.jpg\" alt=\"Picture {i}\" width=\"320\" height=\"180\" loading=\"lazy\">\n",
                "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ",
                "Ut enim ad <em>minim</em> veniam, quis nostrud exercitation.</p>\n",
                "<ul><li>One</li><li>Two</li></ul><!-- ad slot {i} --></article>\n"
            ),
            i = i
        );
        if i % 8 == 7 {
            s.push_str("<script>window.dataLayer=window.dataLayer||[];dataLayer.push({event:'view',html:'</body>'});</script>\n");
        }
        i += 1;
    }
    s.push_str("</main>\n<footer><p>&copy; 2026 Example</p></footer>\n</body>\n</html>\n");
    s.into_bytes()
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut pages: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "html"))
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    pages.sort();
    pages
}

fn frames(page: &Bytes) -> Vec<Bytes> {
    (0..page.len())
        .step_by(FRAME)
        .map(|at| page.slice(at..(at + FRAME).min(page.len())))
        .collect()
}

fn plan() -> RewritePlan {
    RewritePlan {
        snippet: SNIPPET.into(),
        script_id: "operator-chat-panel-script".into(),
        encoding: None,
        max_memory: 4 << 20,
        fallback: None,
    }
}

/// Rewrite one page end to end; returns the output length.
fn rewrite_once(page: &Bytes, metrics: &Arc<Metrics>, fast: bool) -> usize {
    let input = StreamBody::new(futures_util::stream::iter(
        frames(page)
            .into_iter()
            .map(|f| Ok::<_, BoxError>(Frame::data(f))),
    ));
    let input = body::boxed(input);
    let mut out = if fast {
        rewrite::rewrite(input, plan(), metrics.clone())
    } else {
        rewrite::rewrite_with_lol_html_only(input, plan(), metrics.clone())
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut len = 0;
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut out).poll_frame(&mut cx) {
        len += frame.into_data().map_or(0, |d| black_box(d).len());
    }
    len
}

/// lol_html with no handlers, output copied like the adapter copies it.
fn bare_once(page: &Bytes) -> usize {
    let mut out = Vec::with_capacity(page.len());
    let mut rw =
        lol_html::send::HtmlRewriter::new(lol_html::send::Settings::new_send(), |c: &[u8]| {
            out.extend_from_slice(c)
        });
    for f in frames(page) {
        if rw.write(&f).is_err() {
            return 0;
        }
    }
    let _ = rw.end();
    black_box(out).len()
}

/// The floor: copy every frame into an output buffer.
fn copy_once(page: &Bytes) -> usize {
    let mut len = 0;
    for f in frames(page) {
        let out = Bytes::copy_from_slice(&f);
        len += black_box(out).len();
    }
    len
}

fn bench(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let mut inputs: Vec<(String, Vec<u8>)> = [(2, "gen-2KB"), (64, "gen-64KB"), (1024, "gen-1MB")]
        .iter()
        .map(|&(kb, n)| (n.to_owned(), page(kb * 1024)))
        .collect();
    inputs.extend(fixtures());
    for (name, page) in inputs {
        let page = Bytes::from(page);
        // Check the case does what it claims before timing it.
        assert!(copy_once(&page) == page.len() && bare_once(&page) == page.len());
        let rewritten = rewrite_once(&page, &metrics, true);
        assert!(
            rewritten == page.len() || rewritten == page.len() + SNIPPET.len(),
            "{name}"
        );
        assert_eq!(rewritten, rewrite_once(&page, &metrics, false), "{name}");
        let mut group = c.benchmark_group(format!("rewrite/{name}"));
        group.throughput(Throughput::Bytes(page.len() as u64));
        if page.len() > 256 * 1024 {
            group.sample_size(30);
        }
        group.bench_function(BenchmarkId::from_parameter("copy"), |b| {
            b.iter(|| copy_once(black_box(&page)))
        });
        group.bench_function(BenchmarkId::from_parameter("lol_html_bare"), |b| {
            b.iter(|| bare_once(black_box(&page)))
        });
        group.bench_function(BenchmarkId::from_parameter("rewrite"), |b| {
            b.iter(|| rewrite_once(black_box(&page), &metrics, true))
        });
        group.bench_function(BenchmarkId::from_parameter("rewrite_lol_html"), |b| {
            b.iter(|| rewrite_once(black_box(&page), &metrics, false))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
