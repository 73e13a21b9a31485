//! Unit tests for the rewriter: insertion point, once-only, charsets, failures,
//! streaming and memory, fixture pages, and a chunking property.

use super::*;
use crate::metrics::Metrics;
use http_body::Body as _;
use http_body_util::StreamBody;
use std::task::Waker;

const SNIPPET: &str = r#"<script type="module" id="operator-chat-panel-script" src="https://w.example/w.js" token="T0k"></script>"#;
const ID: &str = "operator-chat-panel-script";
/// In table-driven cases, where the snippet must land.
const MARK: &str = "@@";

fn plan() -> RewritePlan {
    RewritePlan {
        snippet: SNIPPET.into(),
        script_id: ID.into(),
        encoding: None,
        max_memory: 4 << 20,
        fallback: None,
    }
}

fn plan_with(encoding: Option<&'static encoding_rs::Encoding>) -> RewritePlan {
    RewritePlan { encoding, ..plan() }
}

/// A body that yields `chunks` as data frames, then `tail` (an error or trailers) if given.
fn frames_body(chunks: Vec<Bytes>, tail: Option<Result<Frame<Bytes>, BoxError>>) -> Body {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, BoxError>(Frame::data(c)))
        .chain(tail);
    crate::body::boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

/// Split `input` into pieces of `size` bytes.
fn split(input: &[u8], size: usize) -> Vec<Bytes> {
    split_bytes(&Bytes::copy_from_slice(input), size)
}

/// Split without copying.
fn split_bytes(input: &Bytes, size: usize) -> Vec<Bytes> {
    let size = size.max(1);
    (0..input.len())
        .step_by(size)
        .map(|at| input.slice(at..(at + size).min(input.len())))
        .collect()
}

/// Poll a body whose inner body never waits, collecting data frames (and trailers) until the end
/// or an error.
fn drive(mut body: Body) -> (Vec<Bytes>, Option<http::HeaderMap>, Option<BoxError>) {
    let mut cx = Context::from_waker(Waker::noop());
    let (mut data, mut trailers) = (Vec::new(), None);
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return (data, trailers, None),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => data.push(d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Poll::Ready(Some(Err(e))) => return (data, trailers, Some(e)),
            Poll::Pending => panic!("test bodies never wait"),
        }
    }
}

fn concat(frames: &[Bytes]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

/// Rewrite `input` fed in `size`-byte frames; returns the output and the metrics.
fn run_with(input: &[u8], size: usize, plan: RewritePlan) -> (Vec<u8>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let (frames, trailers, err) = drive(rewrite(
        frames_body(split(input, size), None),
        plan,
        metrics.clone(),
    ));
    assert!(err.is_none() && trailers.is_none());
    assert!(frames.iter().all(|f| !f.is_empty()), "no empty data frames");
    (concat(&frames), metrics)
}

fn run(input: &[u8], size: usize) -> (Vec<u8>, Arc<Metrics>) {
    run_with(input, size, plan())
}

/// Chunk sizes every table case is fed with: byte by byte, awkward primes, whole.
const SIZES: [usize; 8] = [1, 2, 3, 7, 13, 64, 4096, usize::MAX];

fn injected_count(m: &Metrics) -> u64 {
    m.render()
        .lines()
        .find(|l| {
            l.starts_with("chathub_proxy_inject_total{") && l.contains(r#"outcome="injected""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(hay, needle).count()
}

/// `input` with the snippet inserted at byte `at`.
fn inserted_at(input: &[u8], at: usize) -> Vec<u8> {
    [&input[..at], SNIPPET.as_bytes(), &input[at..]].concat()
}

/// Assert that every chunking of `case` (with `MARK` where the snippet goes, or no
/// `MARK` for "no insertion") gives exactly the expected bytes.
fn check_case(case: &str) {
    let input = case.replacen(MARK, "", 1);
    let expected = case.replacen(MARK, SNIPPET, 1);
    for size in SIZES {
        let (out, m) = run(input.as_bytes(), size);
        assert_eq!(
            String::from_utf8_lossy(&out),
            expected,
            "case {case:?}, chunk size {size}"
        );
        // The fast path and lol_html alone agree on every case.
        fast_path::assert_same_paths(input.as_bytes(), &[size]);
        let want = u64::from(case.contains(MARK));
        assert_eq!(injected_count(&m), want, "case {case:?}, chunk size {size}");
    }
}

// ---------------------------------------------------------------- insertion point

#[test]
fn inserts_immediately_before_body_end_tag() {
    check_case(
        "<!doctype html><html><head><title>t</title></head><body><p>hi</p>@@</body></html>\n",
    );
}

#[test]
fn without_body_end_tag_inserts_at_document_end() {
    check_case("<!doctype html><html><head></head><body><p>hi</p>\n@@");
    check_case("<p>no html, head or body tags at all\n@@");
    check_case("plain text, not even a tag@@");
    check_case("<html><body><p>closed by html only</p></html>\n@@");
    // A `</body>` without a `<body>` start tag closes nothing lol_html knows of.
    check_case("<html><head></head><p>x</p></body></html>@@");
    // A page cut off inside a tag still gets the snippet once, after everything.
    check_case("<html><body><div class=\"unterminated@@");
}

#[test]
fn body_end_tag_in_text_like_places_is_not_the_insertion_point() {
    let cases = [
        "<body><!-- </body> -->@@</body>",
        "<body><!--</body>--><!---->@@</body>",
        "<body><script>var s = \"</body>\";</script>@@</body>",
        "<body><script>if (a</body.length) {}</script>@@</body>",
        "<body><textarea></body></textarea>@@</body>",
        "<body><title></body></title>@@</body>",
        "<body><style>/* </body> */</style>@@</body>",
        "<body><xmp></body></xmp>@@</body>",
        "<body><noscript></body></noscript>@@</body>",
        "<body><iframe></body></iframe>@@</body>",
        "<body><noembed></body></noembed>@@</body>",
        "<body><a href=\"</body>\" title='</body>' data-x=\"<!--\">x</a>@@</body>",
        "<body><iframe srcdoc=\"<body>&lt;/body&gt;</body>\"></iframe>@@</body>",
        "<body><!doctype html></body><!-- </body> -->",
    ];
    // The last case: a bogus doctype in body is skipped, the first real end tag wins.
    for case in &cases[..cases.len() - 1] {
        check_case(case);
    }
    check_case("<body><!doctype html>@@</body><!-- </body> -->");
}

#[test]
fn body_end_tag_inside_template_svg_or_math_is_not_the_insertion_point() {
    // Browsers ignore these `</body>`s; a script inserted there would not run.
    check_case("<body><template><p></body></template><p>x</p></body></html>@@");
    check_case("<body><template><body><p>x</p></body></template>@@</body></html>");
    check_case("<body><svg><style></body></style></svg><p>x</p></body>@@");
    check_case("<body><svg><script>\"</body>\"</script></svg></body>@@");
    check_case("<body><math><mi></body></mi></math></body>@@");
    // Closed containers do not affect the real end tag.
    check_case("<body><template></template><svg><path/></svg><svg/><math></math>@@</body>");
    // HTML inside an SVG integration point is still inside the SVG element.
    check_case("<body><svg><foreignObject><p></body></foreignObject></svg>@@");
}

#[test]
fn insertion_is_once_whatever_the_markup() {
    check_case("<html><body>a<body>b@@</body></body></html>");
    check_case("<html><body>a@@</body>b</body></html>");
    check_case("<html><body>a@@</body></html><body>b</body>");
    check_case("<HTML><BODY BGCOLOR=white><P>Old@@</BODY></HTML>");
    check_case("<html><Body>mixed@@</bOdY ></html>");
    check_case("<html><body>x@@</body\n\tclass=\"odd\"></html>");
}

#[test]
fn snippet_lands_inside_the_last_open_body_of_nested_bodies() {
    check_case("<body><div><body><p>inner@@</body>outer</body>");
}

// ---------------------------------------------------------------- never twice

#[test]
fn page_already_carrying_the_widget_is_left_alone() {
    let page = format!("<html><body><p>x</p>{SNIPPET}</body></html>");
    for size in SIZES {
        let (out, m) = run(page.as_bytes(), size);
        assert_eq!(out, page.as_bytes(), "chunk size {size}");
        assert_eq!(m.skipped_count("already_present"), 1);
        assert_eq!(injected_count(&m), 0);
    }
    // Any script with the id counts, in the head too, in any attribute position.
    check_case(
        r#"<head><SCRIPT src=/x.js class=a ID="operator-chat-panel-script" async></SCRIPT></head><body></body>"#,
    );
    // Other elements with the id are not the widget (and looking at every
    // element's attributes would halve the rewriter's throughput).
    check_case(r#"<body><div id="operator-chat-panel-script"></div>@@</body>"#);
    // A different id, or the id as some other attribute's value, does not.
    check_case(
        r#"<body><div id="operator-chat-panel-script-2" data-id="operator-chat-panel-script">@@</body>"#,
    );
}

#[test]
fn widget_after_the_insertion_point_does_not_prevent_insertion() {
    check_case(&format!("<body><p>x</p>@@</body>{SNIPPET}"));
}

#[test]
fn chained_proxy_does_not_inject_twice() {
    for page in ["<html><body><p>x</p></body></html>", "<p>no body end"] {
        let (once, _) = run(page.as_bytes(), 5);
        let (twice, m) = run(&once, 3);
        assert_eq!(twice, once, "{page}");
        assert_eq!(m.skipped_count("already_present"), 1);
        assert_eq!(occurrences(&twice, SNIPPET.as_bytes()), 1);
    }
}

#[test]
fn frameset_and_plaintext_documents_are_left_alone() {
    for (page, reason) in [
        (
            "<html><head></head><frameset cols=\"50%,50%\"><frame src=a><noframes><body></body></noframes></frameset></html>",
            "frameset",
        ),
        (
            "<html><FRAMESET rows=*><frame src=b></FRAMESET></html>",
            "frameset",
        ),
        ("<html><body><plaintext></body></html>", "plaintext"),
    ] {
        for size in SIZES {
            let (out, m) = run(page.as_bytes(), size);
            assert_eq!(out, page.as_bytes());
            assert_eq!(m.skipped_count(reason), 1, "{page}");
            assert_eq!(injected_count(&m), 0);
        }
    }
    // `<plaintext>` inside SVG is a foreign element, not a mode switch.
    check_case("<body><svg><plaintext/></svg>@@</body>");
}

// ---------------------------------------------------------------- charsets

/// `input` is byte-identical after rewriting except for the snippet before `</body>`.
fn assert_bytes_kept(input: &[u8], plan: RewritePlan) {
    let at = memchr::memmem::rfind(input, b"</body>").unwrap_or(input.len());
    for size in SIZES {
        let (out, _) = run_with(input, size, plan.clone());
        assert_eq!(out, inserted_at(input, at), "chunk size {size}");
    }
}

fn encode(enc: &'static encoding_rs::Encoding, text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = enc.encode(text);
    assert!(!unmappable, "test text must be encodable in {}", enc.name());
    bytes.into_owned()
}

#[test]
fn non_utf8_pages_keep_every_byte() {
    use encoding_rs::*;
    let cases: [(&'static Encoding, &str); 5] = [
        (WINDOWS_1251, "Привет, мир! Ёлка «кавычки» — тире"),
        (SHIFT_JIS, "表示ソフト能力、予約申込"), // 表, ソ, 能 and 申 have 0x5C as second byte
        (EUC_KR, "안녕하세요 세계, 한국어"),
        (WINDOWS_1252, "Café déjà vu — naïve «ß»"),
        (EUC_JP, "日本語のページ"),
    ];
    for (enc, text) in cases {
        let label = enc.name();
        let mut page = format!("<html><head><meta charset=\"{label}\"><title>").into_bytes();
        page.extend(encode(enc, text));
        page.extend_from_slice(b"</title></head><body><p title=\"");
        page.extend(encode(enc, text));
        page.extend_from_slice(b"\">");
        page.extend(encode(enc, text));
        page.extend_from_slice(b"</p></body></html>");
        // Charset from the header, from `<meta>` only, and (wrongly) none at all.
        assert_bytes_kept(&page, plan_with(Some(enc)));
        assert_bytes_kept(&page, plan_with(None));
        assert_bytes_kept(&page, plan_with(Some(UTF_8)));
    }
    assert_bytes_kept(
        &[
            b"<body><p>".as_slice(),
            &[0x80, 0xFF, 0xC3, 0x28, 0xE2, 0x82],
            b"</body>",
        ]
        .concat(),
        plan(),
    );
}

#[test]
fn latin1_label_is_windows_1252_and_keeps_bytes() {
    let enc = encoding_rs::Encoding::for_label(b"iso-8859-1");
    assert_eq!(enc, Some(encoding_rs::WINDOWS_1252));
    assert_bytes_kept(b"<body>\xe9t\xe9 \xa0\xff</body>", plan_with(enc));
}

#[test]
fn non_ascii_snippet_is_written_in_the_page_encoding() {
    let snippet = "<script id=\"operator-chat-panel-script\" data-x=\"ёж\"></script>";
    let page = b"<html><head><meta charset=windows-1251></head><body>\xc0</body></html>";
    let encoded = encode(encoding_rs::WINDOWS_1251, snippet);
    let expected = [&page[..53], &encoded, &page[53..]].concat();
    // From the header, and from `<meta>` when the header names no charset.
    for enc in [Some(encoding_rs::WINDOWS_1251), None] {
        for size in SIZES {
            let plan = RewritePlan {
                snippet: snippet.into(),
                ..plan_with(enc)
            };
            let (out, _) = run_with(page, size, plan);
            assert_eq!(out, expected, "{enc:?} size {size}");
        }
    }
}

#[test]
fn utf16_pages_pass_through_untouched() {
    let text = "<html><body><p>hi</p></body></html>";
    let le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let be: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    let no_bom: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let cases = [
        (&le, None),
        (&be, Some(encoding_rs::UTF_8)),
        (&le, Some(encoding_rs::WINDOWS_1251)),
        (&no_bom, Some(encoding_rs::UTF_16LE)),
        (&no_bom, Some(encoding_rs::UTF_16BE)),
    ];
    for (page, enc) in cases {
        for size in SIZES {
            let (out, m) = run_with(page, size, plan_with(enc));
            assert_eq!(&out, page, "{enc:?} size {size}");
            assert_eq!(m.skipped_count("utf16"), 1);
        }
    }
}

#[test]
fn utf8_bom_overrides_a_utf16_header() {
    let page = b"\xEF\xBB\xBF<body>x</body>";
    for size in SIZES {
        let (out, _) = run_with(page, size, plan_with(Some(encoding_rs::UTF_16LE)));
        assert_eq!(out, inserted_at(page, page.len() - 7));
    }
}

#[test]
fn encodings_lol_html_cannot_read_pass_through() {
    for enc in [encoding_rs::ISO_2022_JP, encoding_rs::REPLACEMENT] {
        let page = b"<body>x</body>";
        let (out, m) = run_with(page, 4, plan_with(Some(enc)));
        assert_eq!(out, page);
        assert_eq!(m.skipped_count("unsupported_charset"), 1);
    }
}

#[test]
fn tiny_and_empty_bodies() {
    let (out, m) = run(b"", 1);
    assert!(out.is_empty());
    assert_eq!(m.skipped_count("empty_body"), 1);
    // Shorter than a byte order mark.
    check_case("x@@");
    check_case("<p@@");
    // Empty frames in between change nothing.
    let metrics = Arc::new(Metrics::new());
    let chunks = vec![
        Bytes::new(),
        Bytes::from_static(b"<"),
        Bytes::new(),
        Bytes::from_static(b"body></body>"),
    ];
    let (frames, _, err) = drive(rewrite(frames_body(chunks, None), plan(), metrics));
    assert!(err.is_none());
    assert_eq!(
        concat(&frames),
        format!("<body>{SNIPPET}</body>").as_bytes()
    );
}

// ---------------------------------------------------------------- failures

/// `page` with 20 MB of `A`s spliced in at `{}`.
fn page_with_20mb(template: &str) -> Bytes {
    let (head, tail) = template.split_once("{}").unwrap_or((template, ""));
    let mut page = head.as_bytes().to_vec();
    page.resize(page.len() + 20_000_000, b'A');
    page.extend_from_slice(tail.as_bytes());
    Bytes::from(page)
}

/// Rewrite `page` fed in `size`-byte frames, comparing the output frame by
/// frame with `expected` (instead of collecting 20 MB twice).
fn check_streamed(page: &Bytes, expected: &[u8], size: usize) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    let mut body = rewrite(
        frames_body(split_bytes(page, size), None),
        plan(),
        metrics.clone(),
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut at = 0;
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        let data = frame
            .ok()
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default();
        assert!(
            expected[at..].starts_with(&data),
            "output differs at {at} (size {size})"
        );
        at += data.len();
    }
    assert_eq!(at, expected.len(), "complete output (size {size})");
    metrics
}

#[test]
fn huge_start_tag_yields_the_complete_original_page() {
    // A 20 MB inline image in a tag that must be fully read (a `<body>`
    // attribute): far more than the 4 MiB limit, so the rewriter bails out.
    let page = page_with_20mb(
        "<!doctype html><html><body style=\"background:url(data:image/png;base64,{})\"><p>after</p></body></html>\n",
    );
    for size in [16 * 1024, 65_536 + 3, 1 << 20] {
        let metrics = check_streamed(&page, &page, size);
        assert_eq!(metrics.rewrite_failure_count("memory_limit"), 1);
        assert_eq!(injected_count(&metrics), 0);
    }
}

#[test]
fn huge_tag_the_rewriter_need_not_read_is_streamed_past() {
    // lol_html's tag scanner skips tags no selector names without buffering
    // them, so a 20 MB inline image passes within the 4 MiB limit and the
    // page still gets the snippet.
    let page = page_with_20mb(
        "<html><body><p>before</p><img alt=x src=\"data:image/png;base64,{}\"><p>after</p></body></html>\n",
    );
    let expected = inserted_at(&page, page.len() - 15);
    for size in [16 * 1024, 1 << 20] {
        let metrics = check_streamed(&page, &expected, size);
        assert_eq!(metrics.rewrite_failure_count("memory_limit"), 0);
        assert_eq!(injected_count(&metrics), 1);
    }
}

#[test]
fn nothing_after_the_insertion_point_is_parsed() {
    // A tail that would exceed the memory limit if lol_html read it (a script
    // tag's attributes are read for the widget check, so it would be buffered).
    let mut page = b"<html><body><p>x</p></body><script>".to_vec();
    page.resize(page.len() + 2_000_000, b'x');
    page.extend_from_slice(b"</script><script id=big src=\"data:text/javascript,");
    page.resize(page.len() + 300_000, b'y');
    page.extend_from_slice(b"\"></script></html>");
    let plan = RewritePlan {
        max_memory: 128 * 1024,
        fallback: None,
        ..plan()
    };
    for size in [10_000, 1 << 20] {
        let (out, m) = run_with(&page, size, plan.clone());
        assert!(out == inserted_at(&page, 20));
        assert_eq!(m.rewrite_failure_count("memory_limit"), 0);
        assert_eq!(injected_count(&m), 1);
    }
}

fn fail_on_div(
    s: lol_html::send::Settings<'static, 'static>,
) -> lol_html::send::Settings<'static, 'static> {
    s.append_element_content_handler(lol_html::element!("div.boom", |_el| Err(
        "handler failed".into()
    )))
}

#[test]
fn handler_error_passes_the_rest_through_unchanged() {
    let page = b"<html><body><p>a</p><div class=boom>b</div><p>c</p></body></html>";
    for size in SIZES {
        let metrics = Arc::new(Metrics::new());
        let body = RewriteBody::with_hook(
            frames_body(split(page, size), None),
            plan(),
            metrics.clone(),
            fail_on_div,
        );
        let (frames, _, err) = drive(body.boxed_unsync());
        assert!(err.is_none());
        assert_eq!(concat(&frames), page, "size {size}");
        assert_eq!(metrics.rewrite_failure_count("rewriter_error"), 1);
        assert_eq!(injected_count(&metrics), 0);
    }
    // After the insertion point, the snippet stays and so does everything after.
    let page = b"<html><body><p>a</p></body><div class=boom>b</div><p>c</p></html>";
    for size in SIZES {
        let metrics = Arc::new(Metrics::new());
        let body = RewriteBody::with_hook(
            frames_body(split(page, size), None),
            plan(),
            metrics.clone(),
            fail_on_div,
        );
        let (frames, _, _) = drive(body.boxed_unsync());
        assert_eq!(concat(&frames), inserted_at(page, 20), "size {size}");
        // Only a write that reaches past `</body>` in one go sees the failing element.
        assert!(metrics.rewrite_failure_count("rewriter_error") <= 1);
    }
}

#[test]
fn upstream_error_is_a_body_error_not_a_clean_end() {
    let page = b"<html><body><p>first part</p><div class=";
    for size in [1, 5, 100] {
        for encoding in [None, Some(encoding_rs::UTF_16LE)] {
            let err: BoxError = "upstream reset".into();
            let body = frames_body(split(page, size), Some(Err(err)));
            let metrics = Arc::new(Metrics::new());
            let (frames, _, err) = drive(rewrite(body, plan_with(encoding), metrics.clone()));
            assert_eq!(
                err.map(|e| e.to_string()).as_deref(),
                Some("upstream reset")
            );
            let out = concat(&frames);
            assert!(
                page.starts_with(&out),
                "only original bytes before the error"
            );
            assert_eq!(injected_count(&metrics), 0);
        }
    }
    // An error before the first byte, and one after a bail-out.
    let (frames, _, err) = drive(rewrite(
        frames_body(vec![], Some(Err("early".into()))),
        plan(),
        Arc::new(Metrics::new()),
    ));
    assert!(frames.is_empty() && err.is_some());
    let body = RewriteBody::with_hook(
        frames_body(
            split(b"<div class=boom></div><p>more", 4),
            Some(Err("late".into())),
        ),
        plan(),
        Arc::new(Metrics::new()),
        fail_on_div,
    );
    let (frames, _, err) = drive(body.boxed_unsync());
    assert_eq!(concat(&frames), b"<div class=boom></div><p>more");
    assert!(err.is_some());
}

#[test]
fn trailers_follow_the_rewritten_data() {
    let mut map = http::HeaderMap::new();
    map.insert("x-checksum", http::HeaderValue::from_static("abc"));
    let page = b"<body>x</body>";
    let body = frames_body(split(page, 3), Some(Ok(Frame::trailers(map.clone()))));
    let (frames, trailers, err) = drive(rewrite(body, plan(), Arc::new(Metrics::new())));
    assert!(err.is_none());
    assert_eq!(concat(&frames), inserted_at(page, 7));
    assert_eq!(trailers, Some(map));
}

#[test]
fn is_end_stream_only_after_everything_is_out() {
    let metrics = Arc::new(Metrics::new());
    let mut body = RewriteBody::new(frames_body(split(b"<p>x", 2), None), plan(), metrics);
    assert!(!http_body::Body::is_end_stream(&body));
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut body).poll_frame(&mut cx) {
        out.extend_from_slice(&f.into_data().unwrap_or_default());
    }
    assert!(http_body::Body::is_end_stream(&body));
    assert_eq!(out, format!("<p>x{SNIPPET}").as_bytes());
}

// ---------------------------------------------------------------- streaming

#[tokio::test]
async fn first_bytes_reach_the_client_before_the_page_ends() {
    let (mut tx, upstream) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
    let mut body = rewrite(
        crate::body::boxed(upstream),
        plan(),
        Arc::new(Metrics::new()),
    );
    let wait = std::time::Duration::from_secs(10);
    tx.send_data(Bytes::from_static(
        b"<html><head><title>slow</title></head><body><p>first</p><di",
    ))
    .await
    .map_err(|_| "send")
    .unwrap();
    // The page is far from finished, yet output is already available.
    let first = tokio::time::timeout(wait, body.frame())
        .await
        .expect("first bytes while upstream is still open");
    let first = first
        .and_then(|f| f.ok())
        .and_then(|f| f.into_data().ok())
        .unwrap_or_default();
    assert_eq!(
        &first[..],
        b"<html><head><title>slow</title></head><body><p>first</p>"
    );
    tx.send_data(Bytes::from_static(b"v>rest</div></body></html>"))
        .await
        .map_err(|_| "send")
        .unwrap();
    drop(tx);
    let rest = tokio::time::timeout(wait, body.collect())
        .await
        .expect("rest")
        .unwrap()
        .to_bytes();
    assert_eq!(
        &rest[..],
        format!("<div>rest</div>{SNIPPET}</body></html>").as_bytes()
    );
}

/// Upstream body that generates `left` bytes of realistic markup on the fly:
/// a head, then rows of `cycle` (which repeats with period `period`) in frames
/// of `frame` bytes that start and end mid-row, then `TAIL`.
struct Generated {
    head: Option<Bytes>,
    cycle: Bytes,
    period: usize,
    frame: usize,
    sent: usize,
    left: usize,
    done: bool,
}

const HEAD: &[u8] = b"<!doctype html><html><head><meta charset=utf-8></head><body><div>";
const TAIL: &[u8] = b"</div></body></html>\n";

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.left == 0 {
            if self.done {
                return Poll::Ready(None);
            }
            self.done = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(TAIL)))));
        }
        let n = self.left.min(self.frame);
        let at = self.sent % self.period;
        self.left -= n;
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(self.cycle.slice(at..at + n)))))
    }
}

fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    statm
        .split_whitespace()
        .nth(1)?
        .parse::<usize>()
        .ok()
        .map(|pages| pages * 4096)
}

/// Stream `total` generated bytes through the rewriter and check the output
/// length, the single snippet, and that memory stays flat.
fn stream_generated(total: usize, fast: bool) {
    // One repeating row of typical markup; frames of 64 KiB - 17 end mid-row.
    let row = format!(
        "<div class=\"row\" id=\"r\"><a href=\"/p?a=1&amp;b=2\">Ссылка</a><img src=/i.png alt=\"x\"><!-- c --><p>{}</p></div>\n",
        "Lorem ipsum dolor sit amet, ñ é ü. ".repeat(20)
    );
    let chunk_len = 64 * 1024 - 17;
    let cycle = Bytes::from(row.repeat(chunk_len / row.len() + 2));
    let upstream = Generated {
        head: Some(Bytes::from_static(HEAD)),
        cycle,
        period: row.len(),
        frame: chunk_len,
        sent: 0,
        left: total,
        done: false,
    };
    let metrics = Arc::new(Metrics::new());
    // A small limit: lol_html must never need more than this for the whole stream.
    let max_memory = 256 * 1024;
    let plan = RewritePlan {
        max_memory,
        fallback: None,
        ..plan()
    };
    let upstream = crate::body::boxed(upstream);
    let mut body = if fast {
        RewriteBody::new(upstream, plan, metrics.clone())
    } else {
        RewriteBody::without_fast_path(upstream, plan, metrics.clone())
    };

    let before = resident_bytes();
    let mut held = 0usize;
    let mut cx = Context::from_waker(Waker::noop());
    let (mut out_len, mut snippets, mut largest) = (0usize, 0usize, 0usize);
    let mut carry: Vec<u8> = Vec::new(); // the end of the previous frame, so a split snippet is still found
    let mut peak_growth = 0usize;
    let mut frames = 0usize;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let data = frame.into_data().unwrap_or_default();
                out_len += data.len();
                largest = largest.max(data.len());
                let window: Vec<u8> = carry
                    .iter()
                    .chain(data[..data.len().min(SNIPPET.len() - 1)].iter())
                    .copied()
                    .collect();
                snippets += occurrences(&window, SNIPPET.as_bytes())
                    + occurrences(&data, SNIPPET.as_bytes());
                carry = data[data.len().saturating_sub(SNIPPET.len() - 1)..].to_vec();
                frames += 1;
                held = held.max(body.held_bytes());
                if frames.is_multiple_of(1024)
                    && let (Some(b), Some(now)) = (before, resident_bytes())
                {
                    peak_growth = peak_growth.max(now.saturating_sub(b));
                }
            }
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(e))) => panic!("unexpected body error: {e}"),
            Poll::Pending => panic!("generated bodies never wait"),
        }
    }
    assert_eq!(out_len, HEAD.len() + total + TAIL.len() + SNIPPET.len());
    assert_eq!(snippets, 1);
    assert_eq!(injected_count(&metrics), 1);
    // lol_html's own accounting stayed under `max_memory` for the whole stream.
    assert_eq!(metrics.rewrite_failure_count("memory_limit"), 0);
    // Output frames are about as big as input frames, and between polls the
    // adapter itself holds less than one frame: nothing accumulates.
    assert!(
        largest <= chunk_len + SNIPPET.len() + 1024,
        "largest output frame {largest}"
    );
    assert!(held <= 2 * chunk_len, "adapter held {held} bytes");
    // Whole-process resident memory (other tests run concurrently, hence the slack)
    // grows by far less than the streamed size; buffering the page would double it.
    // (Only meaningful when the stream dwarfs what other tests allocate.)
    if before.is_some() && total >= 128 << 20 {
        assert!(
            peak_growth < total / 2,
            "resident memory grew by {peak_growth} bytes"
        );
    }
}

#[test]
fn a_long_page_streams_with_flat_memory() {
    stream_generated(128 << 20, true);
    // lol_html is slower in a debug build; a shorter stream still shows its
    // buffers staying under the limit and the adapter holding under a frame.
    stream_generated(24 << 20, false);
}

/// The full 1 GiB run from the brief, on both paths; the lol_html one takes
/// a minute or two in a debug build.
#[test]
#[ignore = "streams 2 x 1 GiB; run with `cargo test --lib rewrite:: -- --ignored`"]
fn a_one_gigabyte_page_streams_with_flat_memory() {
    stream_generated(1 << 30, true);
    stream_generated(1 << 30, false);
}

// ---------------------------------------------------------------- fixture pages

enum Expect {
    /// Before the last `</body>` (any case) in the file.
    BeforeLastBodyEnd,
    /// Before the first `</body>` (any case) in the file.
    BeforeFirstBodyEnd,
    AtEnd,
    Skipped(&'static str),
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn body_end_positions(page: &[u8]) -> Vec<usize> {
    let lower = page.to_ascii_lowercase();
    memchr::memmem::find_iter(&lower, b"</body").collect()
}

#[test]
fn fixture_pages() {
    use Expect::*;
    use encoding_rs::*;
    let cases: [(&str, &[Option<&'static Encoding>], Expect); 13] = [
        ("cms-blog.html", &[None, Some(UTF_8)], BeforeLastBodyEnd),
        ("svg-icons.html", &[None, Some(UTF_8)], BeforeLastBodyEnd),
        ("no-body-end.html", &[None, Some(UTF_8)], AtEnd),
        (
            "windows-1251.html",
            &[None, Some(WINDOWS_1251)],
            BeforeLastBodyEnd,
        ),
        (
            "shift_jis.html",
            &[None, Some(SHIFT_JIS)],
            BeforeLastBodyEnd,
        ),
        ("euc-kr.html", &[None, Some(EUC_KR)], BeforeLastBodyEnd),
        (
            "iso-8859-1.html",
            &[Encoding::for_label(b"iso-8859-1"), None],
            BeforeLastBodyEnd,
        ),
        ("uppercase.html", &[None], BeforeLastBodyEnd),
        ("spa-shell.html", &[None, Some(UTF_8)], BeforeLastBodyEnd),
        ("newsletter.html", &[None], BeforeFirstBodyEnd),
        ("frameset.html", &[None], Skipped("frameset")),
        ("with-widget.html", &[None], Skipped("already_present")),
        (
            "utf16le-bom.html",
            &[None, Some(UTF_16LE)],
            Skipped("utf16"),
        ),
    ];
    for (name, encodings, expect) in cases {
        let page = fixture(name);
        let ends = body_end_positions(&page);
        let expected = match expect {
            BeforeLastBodyEnd => inserted_at(
                &page,
                *ends.last().unwrap_or_else(|| panic!("{name} has </body>")),
            ),
            BeforeFirstBodyEnd => inserted_at(&page, ends[0]),
            AtEnd => inserted_at(&page, page.len()),
            Skipped(_) => page.clone(),
        };
        for &enc in encodings {
            for size in SIZES {
                let (out, m) = run_with(&page, size, plan_with(enc));
                assert!(
                    out == expected,
                    "{name} ({enc:?}, chunk size {size}):\n{}",
                    String::from_utf8_lossy(&out)
                );
                match expect {
                    Skipped(reason) => assert_eq!(m.skipped_count(reason), 1, "{name}"),
                    _ => assert_eq!(injected_count(&m), 1, "{name}"),
                }
            }
        }
    }
}

#[test]
fn fixture_pages_with_unescaped_body_end_in_scripts_keep_them() {
    // The CMS page has `</body>` in comments, scripts, JSON, attributes and a textarea;
    // all of them come through, and the snippet is not next to any of them.
    let page = fixture("cms-blog.html");
    let (out, _) = run(&page, 512);
    assert_eq!(
        body_end_positions(&page).len(),
        body_end_positions(&out).len()
    );
    let at = memchr::memmem::find(&out, SNIPPET.as_bytes()).unwrap_or(0);
    assert_eq!(&out[at + SNIPPET.len()..], b"</body>\n</html>\n");
}

// ---------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of HTML-ish input: tags that matter, constructs that hide `</body>`,
    /// stray syntax, and arbitrary bytes (including >= 0x80 and lone `<`).
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        const FIXED: &[&str] = &[
            "<body>",
            "</body>",
            "</BODY>",
            "<Body class=\"a\">",
            "</body >",
            "</body\n>",
            "<html>",
            "</html>",
            "<head>",
            "</head>",
            "<div>",
            "</div>",
            "<p>",
            "</p>",
            "<br/>",
            "<img src=x>",
            "<!-- ",
            " -->",
            "<!---->",
            "<script>",
            "</script>",
            "<textarea>",
            "</textarea>",
            "<template>",
            "</template>",
            "<svg>",
            "</svg>",
            "<math>",
            "</math>",
            "<style>",
            "</style>",
            "<title>",
            "</title>",
            "<a href=\"</body>\">",
            "</a>",
            "<img alt='</body>'>",
            "<![CDATA[",
            "]]>",
            "<!doctype html>",
            "<select>",
            "<table>",
            "<td>",
            "<noscript>",
            "</noscript>",
            "<iframe>",
            "</iframe>",
            "<foreignObject>",
            "<desc>",
            "\"",
            "'",
            "<",
            ">",
            "</",
            "=",
            "<meta charset=windows-1251>",
            "<meta charset=shift_jis>",
            "<meta http-equiv=content-type content=\"text/html; charset=euc-kr\">",
            "<xmp>",
            "</xmp>",
            "<!",
            "<?php ?>",
            "&lt;/body&gt;",
            "</bo",
            "dy>",
            "\u{0}",
        ];
        prop_oneof![
            3 => proptest::sample::select(FIXED).prop_map(|s| s.as_bytes().to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..10),
            1 => "[a-zA-Z ñéЖ日]{0,10}".prop_map(String::into_bytes),
        ]
    }

    fn document() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(piece(), 0..40).prop_map(|p| p.concat())
    }

    /// Feed `input` in pieces of the given sizes (cycled).
    fn run_sizes(input: &[u8], sizes: &[usize], plan: RewritePlan) -> Vec<u8> {
        let mut chunks = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < input.len() {
            let n = sizes[i % sizes.len()].min(input.len() - at);
            chunks.push(Bytes::copy_from_slice(&input[at..at + n]));
            at += n;
            i += 1;
        }
        let (frames, _, err) = drive(rewrite(
            frames_body(chunks, None),
            plan,
            Arc::new(Metrics::new()),
        ));
        assert!(err.is_none());
        concat(&frames)
    }

    fn without_one_snippet(out: &[u8]) -> Option<Vec<u8>> {
        let at = memchr::memmem::find(out, SNIPPET.as_bytes())?;
        Some([&out[..at], &out[at + SNIPPET.len()..]].concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn output_is_input_plus_exactly_one_snippet(
            doc in document(),
            sizes in proptest::collection::vec(1usize..48, 1..6),
            enc in proptest::sample::select(vec![None, Some(encoding_rs::UTF_8), Some(encoding_rs::WINDOWS_1251), Some(encoding_rs::SHIFT_JIS)]),
        ) {
            let out = run_sizes(&doc, &sizes, plan_with(enc));
            let whole = run_sizes(&doc, &[usize::MAX], plan_with(enc));
            prop_assert_eq!(&out, &whole, "chunking changed the output");
            let passes_through = doc.is_empty() || doc.starts_with(&[0xFF, 0xFE]) || doc.starts_with(&[0xFE, 0xFF]);
            if passes_through {
                prop_assert_eq!(&out, &doc);
            } else {
                prop_assert_eq!(occurrences(&out, SNIPPET.as_bytes()), 1);
                prop_assert_eq!(without_one_snippet(&out), Some(doc.clone()));
            }
        }

        #[test]
        fn widget_already_present_means_no_second_one(
            before in document(),
            after in document(),
            sizes in proptest::collection::vec(1usize..48, 1..6),
        ) {
            let marker = format!("<script id=\"{ID}\"></script>");
            // At the very start, before any possible insertion point: never inserted.
            let doc = [marker.as_bytes(), &after].concat();
            let out = run_sizes(&doc, &sizes, plan());
            prop_assert_eq!(&out, &doc);
            // Anywhere else: at most once, and nothing else changes.
            let doc = [&before[..], marker.as_bytes(), &after].concat();
            let out = run_sizes(&doc, &sizes, plan());
            prop_assert!(occurrences(&out, SNIPPET.as_bytes()) <= 1);
            let rest = without_one_snippet(&out).unwrap_or_else(|| out.clone());
            prop_assert_eq!(rest, doc);
        }
    }
}

// ---------------------------------------------------------------- fast path

/// The fast path against lol_html: table cases, fixtures, the differential property.
mod fast_path;
