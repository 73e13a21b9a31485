//! The fast path against lol_html: both must give the same bytes and the same
//! outcome, on fixtures, table cases and generated documents.

use super::*;

/// Rewrite with the fast path allowed and with lol_html only; returns both
/// outputs and both metrics.
/// One path's output and metrics.
type PathRun = (Vec<u8>, Arc<Metrics>);

/// A page whose CSP the proxy handles (mode `auto`, no header policy): the
/// rewriter then reads the page's `<meta>` policies and script nonces. Returns
/// the plan with the snippet the proxy would render for it, and the page state.
fn csp_page() -> (RewritePlan, Arc<crate::csp::PageCsp>) {
    use crate::csp::{CspSettings, PageCsp};
    let cfg = crate::config::from_toml_str("").unwrap_or_else(|e| panic!("{e}"));
    let settings = Arc::new(CspSettings::from_parts("https://w.example/w.js", &[]));
    let csp_plan = crate::csp::plan(
        &http::HeaderMap::new(),
        crate::config::CspMode::Auto,
        &settings,
    )
    .unwrap_or_else(|_| panic!("no header policy blocks nothing"));
    let page = PageCsp::new(
        csp_plan,
        settings,
        Arc::new(crate::snippet::Snippet::new(&cfg.inject)),
        crate::secret::Secret::new("T0k"),
        None,
    );
    let plan = RewritePlan {
        snippet: page.header_snippet().into(),
        ..plan()
    };
    (plan, Arc::new(page))
}

fn both_paths_with(
    input: &[u8],
    sizes: &[usize],
    plan: &RewritePlan,
    csp: Option<&Arc<crate::csp::PageCsp>>,
) -> (PathRun, PathRun) {
    let chunks = || {
        let mut chunks = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < input.len() {
            let n = sizes[i % sizes.len()].clamp(1, input.len() - at);
            chunks.push(Bytes::copy_from_slice(&input[at..at + n]));
            at += n;
            i += 1;
        }
        frames_body(chunks, None)
    };
    let run = |fast: bool| {
        let metrics = Arc::new(Metrics::new());
        let mut body = if fast {
            RewriteBody::new(chunks(), plan.clone(), metrics.clone())
        } else {
            RewriteBody::without_fast_path(chunks(), plan.clone(), metrics.clone())
        };
        body.csp = csp.cloned();
        let (frames, _, err) = drive(body.boxed_unsync());
        assert!(err.is_none());
        (concat(&frames), metrics)
    };
    (run(true), run(false))
}

/// The outcome counters both paths must agree on.
fn outcome(m: &Metrics) -> [u64; 6] {
    [
        injected_count(m),
        m.skipped_count("already_present"),
        m.skipped_count("frameset"),
        m.skipped_count("plaintext"),
        m.skipped_count("empty_body"),
        m.skipped_count("csp"),
    ]
}

pub(super) fn assert_same_paths(input: &[u8], sizes: &[usize]) {
    assert_same_paths_with(input, sizes, &plan(), None);
}

/// Both paths, with and without the page CSP scan, give the same bytes and outcome.
fn assert_same_paths_both_modes(input: &[u8], sizes: &[usize]) {
    assert_same_paths(input, sizes);
    let (plan, page) = csp_page();
    assert_same_paths_with(input, sizes, &plan, Some(&page));
    for enc in [encoding_rs::WINDOWS_1251, encoding_rs::UTF_8] {
        let plan = RewritePlan {
            encoding: Some(enc),
            ..plan.clone()
        };
        assert_same_paths_with(input, sizes, &plan, Some(&page));
    }
}

fn assert_same_paths_with(
    input: &[u8],
    sizes: &[usize],
    plan: &RewritePlan,
    csp: Option<&Arc<crate::csp::PageCsp>>,
) {
    let ((fast, fm), (slow, sm)) = both_paths_with(input, sizes, plan, csp);
    assert!(
        fast == slow,
        "fast path differs for {:?} (sizes {sizes:?}):\nfast: {:?}\nslow: {:?}",
        String::from_utf8_lossy(input),
        String::from_utf8_lossy(&fast),
        String::from_utf8_lossy(&slow)
    );
    assert_eq!(
        outcome(&fm),
        outcome(&sm),
        "{:?}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn fast_path_matches_lol_html_on_fixtures_and_table_cases() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "html"))
                .filter_map(|p| std::fs::read(p).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(pages.len() >= 10, "fixtures in {dir}");
    pages.extend(
        [
            "<body><script>a<!--b</script>c</body>",
            "<body><script><!--<script></script>--></script>x</body>",
            "<body><textarea></body></textarea></body>",
            "<body><a b\"c=\">\">x</a></body>",
            "<body><p a=>x<style a=>y</style></body>",
            "<body><script a=></body></script>x</body>",
            "<body><title a=></body></title>x</body>",
            "<body><script/>x</script></body>",
            "<body><!-- a --!>b</body>",
            "<body><!--!></body>--></body>",
            "<body><!doctype html \"</body>\"></body>",
            "<body></ </body></3></body>",
            "<html><o:p>x</o:p><body></body>",
            "<body><div><body></div></body>",
            "<body><template></body></template></body>",
            "<body><svg><p></body>",
            // Inline SVG, followed by the fast path.
            "<body><svg viewBox=\"0 0 1 1\"><path d=\"M0 0\"/><g><style>a>b{}</style></g></svg>x</body>",
            "<body><svg><svg><g></svg><g></g></svg></g></body>",
            "<body><div><svg><g></div></g></svg></div></body>",
            "<body><div><svg></div><style></body></style>x</body>",
            "<body><svg><circle/></circle></svg></body>",
            "<body><svg><style></body></style></svg><p>x</p></body>",
            "<body><svg><![CDATA[</body>]]></svg></body>",
            "<body><svg/><p>x</p></body>",
            "<body><svg><font color=x><b></b></font></svg></body>",
            "<body><svg><font><b></b></font></svg></body>",
            "<body><svg><title></body></title></svg></body>",
            "<body><svg><symbol><title>Search &amp; find</title><path/></symbol><desc>d</desc></svg></body>",
            "<body><svg><title><b>x</b></title></svg></body>",
            "<body><svg><title></desc></title></svg></body>",
            "<body><svg><title/><desc/><g></g></svg></body>",
            "<body><svg><title><!-- c --></title></svg><title>a</title></body>",
            "<body><svg><desc/><foreignObject/><text>a < b</text></svg></body>",
            "<body><svg></br></svg></body>",
            "<body><svg><script id=operator-chat-panel-script></script></svg></body>",
            "<body><svg><linearGradient></LINEARGRADIENT><img></svg></body>",
            "</svg><body></svg></body>",
            // Scripts hidden in comments, the way old pages wrote them.
            "<body><script><!--\ndocument.write('</body>');\n//--></script></body>",
            "<body><script><!--<script>'</script>'--></script>x</script></body>",
            "<body><script><!-- <script></script>--></body></script></body>",
            "<body><script><!--></script></body>",
            "<body><script><!---></body></script></body>",
            "<body><script><!---><script></script></body></script></body>",
            "<body><script><!-- a -><script></script></body></script></body>",
            "<body><script><!--<SCRIPT/></SCRIPT\t-></script></body>",
            "<body><script><!--<scriptx></script></body>",
            "<body><template><p>x</p></template><p>y</p></body>",
            "<template><body></body></template></body>",
            "<body><template></body></template></body>",
            "<body><template/><p></body>",
            "<body><svg><template></template></svg></body>",
            // The page CSP scan: `<meta>` policies, nonces, and the charset they are read in.
            "<head><meta http-equiv=Content-Security-Policy content=\"script-src 'nonce-abc'\"></head>\
             <body><script nonce=abc>x</script></body>",
            "<body><script nonce=abc></script><meta http-equiv=content-security-policy \
             content=\"script-src 'self'\"></body>",
            "<meta charset=windows-1251><meta http-equiv=Content-Security-Policy \
             content=\"script-src 'nonce-\u{416}'\"><body><script nonce=\"\u{416}\"></script></body>",
            "<meta http-equiv=content-type content=\"text/html; charset=shift_jis\"><body></body>",
            "<meta charset=bogus><meta charset=utf-16><META CHARSET=koi8-r><body></body>",
            "<body><script NONCE>x</script></body>",
            "<script nonce=abc></script><meta http-equiv=Content-Security-Policy \
             content=\"script-src 'nonce-abc'\"><body></body>",
        ]
        .map(|s| s.as_bytes().to_vec()),
    );
    for page in pages {
        for sizes in [&[usize::MAX][..], &[1], &[2, 3], &[7], &[64, 1]] {
            assert_same_paths_both_modes(&page, sizes);
        }
    }
}

#[test]
fn the_engine_switch_turns_the_fast_path_off_only_when_asked() {
    assert!(!fast_path_from(Some("lol_html")));
    for on in [None, Some(""), Some("fast"), Some("LOL_HTML ")] {
        assert!(fast_path_from(on), "{on:?}");
    }
}

#[test]
fn fast_path_decides_ordinary_pages_without_lol_html() {
    let mut page = String::from(
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>T</title>\
         <script async src=/a.js></script><style>p{x:1}</style></head><body class=home>\
         <header><a href=/><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 24 24\" \
         role=img><title>Example &amp; Co</title><defs><style>.c{fill:#09f}</style></defs><g class=c>\
         <path d=\"M12 2L2 7l10 5 10-5-10-5z\"/><circle cx=\"12\" cy=\"12\" r=\"3\"/></g></svg></a></header>",
    );
    for i in 0..200 {
        page.push_str(&format!(
            "<article id=a{i}><h2><a href=\"/s/{i}?a=1&amp;b=2\" title='x > y'>Story</a></h2>\
             <img src=/i/{i}.jpg alt=\"\"><p>Text &amp; more <em>text</em>.</p><!-- slot -->\
             <button><svg viewBox=\"0 0 8 8\"><use href=\"#heart\"/></svg>Like</button></article>\n"
        ));
    }
    page.push_str(
        "<template id=row><tr><td class=name></td><td><svg><use href=#x /></svg></td></tr></template>\
         <script>var s = '</body>' < 1;</script></body></html>",
    );
    for size in [1, 13, 4096, usize::MAX] {
        let mut scanner = fast::Scanner::new(ID, fast::Watch::default());
        let mut out = Vec::new();
        let mut steps = Vec::new();
        for chunk in split(page.as_bytes(), size) {
            match scanner.feed(chunk, SNIPPET, &mut |b| out.extend_from_slice(&b)) {
                fast::Step::More => {}
                fast::Step::Injected => steps.push("injected"),
                fast::Step::AlreadyPresent => steps.push("already_present"),
                fast::Step::Handoff { .. } => steps.push("handoff"),
            }
            if !steps.is_empty() {
                break;
            }
        }
        assert_eq!(steps, ["injected"], "chunk size {size}");
        // Everything up to the end of `</body>` came out, with the snippet before it.
        let at = page.rfind("</body>").unwrap_or(0);
        let expected = inserted_at(page.as_bytes(), at);
        assert!(
            out.len() >= at + SNIPPET.len() + "</body>".len(),
            "size {size}"
        );
        assert_eq!(out, expected[..out.len()], "size {size}");
    }
}

#[test]
fn fast_path_follows_inline_svg_icons_without_lol_html() {
    // A sprite of symbols with titles, a logo with title, desc, style and text,
    // icon buttons: all followed, and the snippet goes before the real `</body>`.
    let page = fixture("svg-icons.html");
    for size in [1, 7, 4096, usize::MAX] {
        let mut scanner = fast::Scanner::new(ID, fast::Watch::default());
        let mut out = Vec::new();
        let mut step = "more";
        for chunk in split(&page, size) {
            step = match scanner.feed(chunk, SNIPPET, &mut |b| out.extend_from_slice(&b)) {
                fast::Step::More => continue,
                fast::Step::Injected => "injected",
                fast::Step::AlreadyPresent => "already_present",
                fast::Step::Handoff { .. } => "handoff",
            };
            break;
        }
        assert_eq!(step, "injected", "chunk size {size}");
        let at = memchr::memmem::rfind(&page, b"</body>").unwrap_or(0);
        assert_eq!(out, inserted_at(&page, at)[..out.len()], "size {size}");
    }
}

mod differential {
    use super::*;
    use proptest::prelude::*;

    /// Constructs chosen to hit every tokenizer state and every hand-over.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        const FIXED: &[&str] = &[
            "<body>",
            "</body>",
            "</BODY >",
            "</body\t>",
            "</body/>",
            "</body x=\">\">",
            "<body/>",
            "<html>",
            "</html>",
            "<head>",
            "</head>",
            "<div>",
            "</div>",
            "<DIV class=a>",
            "<p>",
            "</p>",
            "<br>",
            "</br>",
            "<img src=x>",
            "<img alt='>'>",
            "<input value=\"a>b\">",
            "<a href=x>",
            "</a>",
            "<a b\"c=\">\">",
            "<a =b>",
            "<a b=>",
            "<a b= >",
            "<a b = 'c'>",
            "<a/b>",
            "<a /=x>",
            "<a b=c/>",
            "<a\rb\x0Cc>",
            "<!-- x -->",
            "<!-->",
            "<!--->",
            "<!---->",
            "<!--!>",
            "<!-- --!>",
            "<!-- <!-- -->",
            "<!--",
            "-->",
            "--!>",
            "--",
            "<!-- a --!-->",
            "<!-",
            "<!x>",
            "<!DOCTYPE html>",
            "<!doctype html public \"a>b\">",
            "<![CDATA[x]]>",
            "<?xml ?>",
            "</>",
            "</ x>",
            "</3>",
            "</",
            "<script>",
            "</script>",
            "<SCRIPT type=x>",
            "</script >",
            "</script\n>",
            "</scripty>",
            "<script/>",
            "<script a=>",
            "<!--<script>",
            "<sCrIpT\t",
            "</SCRIPT/",
            "</script\x0C>",
            "</scr",
            "ipt>",
            "--->",
            "<!--<script>x</script>-->",
            "var s='</body>';",
            "<script id=other>",
            "<script ID='x' id=operator-chat-panel-script>",
            "<style>",
            "</style>",
            "<textarea>",
            "</textarea>",
            "<title>",
            "</title>",
            "<xmp>",
            "</xmp>",
            "<noscript>",
            "</noscript>",
            "<iframe>",
            "</iframe>",
            "<noembed>",
            "</noembed>",
            "<noframes>",
            "</noframes>",
            "<template>",
            "</template>",
            "<svg>",
            "</svg>",
            "<svg/>",
            "<SVG viewBox=\"0 0 24 24\" aria-hidden=true>",
            "</SVG >",
            "<g>",
            "</g>",
            "<g/>",
            "<path d=\"M0 0h24v24H0z\"/>",
            "<circle r=1 />",
            "<use href=#i/>",
            "<linearGradient id=lg>",
            "</lineargradient>",
            "<text>",
            "</text>",
            "<font>",
            "<font color=red>",
            "<b>",
            "</b>",
            "<desc/>",
            "</desc>",
            "<symbol id=s>",
            "<foreignobject/>",
            "<blockquote>",
            "<math>",
            "</math>",
            "<foreignObject>",
            "<desc>",
            "<o:p>",
            "</o:p>",
            "<my-widget>",
            "</my-widget>",
            "<a.b>",
            "<x_y>",
            "<veryveryverylongcustomelementname-abc>",
            "<h1>",
            "</h1>",
            "<",
            ">",
            "\"",
            "'",
            "=",
            "/",
            " ",
            "\n",
            "\r",
            "\t",
            "\x0C",
            "-",
            "!",
            "?",
            "<<",
            "<</",
            "<!<",
            "&lt;",
            "é",
            "\u{0}",
            "<meta charset=utf-8>",
            "<meta charset=\"windows-1251\">",
            "<META Charset=shift_jis>",
            "<meta charset=utf-16>",
            "<meta name=x content=y>",
            "<meta http-equiv=Content-Security-Policy content=\"script-src 'nonce-n1'\">",
            "<meta http-equiv=\"content-security-policy\" content=\"default-src 'self'\">",
            "<meta http-equiv=content-type content=\"text/html; charset=koi8-r\">",
            "<meta http-equiv=refresh content=5>",
            "<script nonce=n1>",
            "<script nonce=n1></script>",
            "<script NONCE=\"n\u{416}\" src=x>",
            "<script nonce>",
        ];
        prop_oneof![
            8 => proptest::sample::select(FIXED).prop_map(|s| s.as_bytes().to_vec()),
            1 => Just(format!("<script id=\"{ID}\"></script>").into_bytes()),
            1 => Just(b"<frameset>".to_vec()),
            1 => Just(b"<plaintext>".to_vec()),
            2 => proptest::collection::vec(any::<u8>(), 0..6),
            2 => "[a-z ]{0,6}".prop_map(String::into_bytes),
        ]
    }

    fn document() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(piece(), 0..48).prop_map(|p| p.concat())
    }

    /// Attribute soup: tags in which quotes, `=`, `/`, spaces and `>` come in
    /// every order, and a `</body>` that only a value can hide. Where such a
    /// tag ends is for lol_html's attribute states alone to say; `piece()`
    /// rarely builds them, as its tags are whole.
    fn soup() -> impl Strategy<Value = Vec<u8>> {
        const NAMES: &[&str] = &["a", "p", "body", "script", "meta", "img"];
        const ATOMS: &[&str] = &[
            " ", "\n", "/", "=", "\"", "'", ">", "a", "b", "x=", "=\"", "\">", "</body>",
        ];
        let tag = (
            proptest::sample::select(NAMES),
            proptest::collection::vec(proptest::sample::select(ATOMS), 0..14),
        )
            .prop_map(|(name, atoms)| format!("<{name}{}", atoms.concat()));
        proptest::collection::vec(tag, 1..6)
            .prop_map(|tags| format!("<body>{}</body>x</body>", tags.concat()).into_bytes())
    }

    /// 2,000 documents by default; `CHATHUB_DIFFERENTIAL_CASES` asks for more
    /// (`scripts/test` runs a million in release mode).
    fn cases() -> u32 {
        std::env::var("CHATHUB_DIFFERENTIAL_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn fast_path_gives_the_same_bytes_as_lol_html(
            doc in document(),
            sizes in proptest::collection::vec(1usize..40, 1..5),
            csp in any::<bool>(),
        ) {
            if csp {
                let (plan, page) = csp_page();
                assert_same_paths_with(&doc, &sizes, &plan, Some(&page));
                assert_same_paths_with(&doc, &[usize::MAX], &plan, Some(&page));
            } else {
                assert_same_paths(&doc, &sizes);
                assert_same_paths(&doc, &[usize::MAX]);
            }
        }

        #[test]
        fn fast_path_ends_tags_where_lol_html_does(
            doc in soup(),
            sizes in proptest::collection::vec(1usize..40, 1..5),
        ) {
            assert_same_paths(&doc, &sizes);
            assert_same_paths(&doc, &[usize::MAX]);
        }
    }

    proptest! {
        // Each case compresses a page of up to 100 KB: a tenth of the
        // documents above, at least 200 and at most 5,000.
        #![proptest_config(ProptestConfig { cases: (cases() / 10).clamp(200, 5000), ..ProptestConfig::default() })]

        /// The gzip splice (crate::codec::splice) around the real rewriter,
        /// both paths: the spliced stream decodes to exactly what the
        /// rewriter gives for the decoded page, whatever the compression
        /// level, flush points and chunking.
        #[test]
        fn spliced_gzip_decodes_to_the_rewritten_page(
            doc in document(),
            filler in 0usize..3,
            level in 0u32..=9,
            flush in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
            chunk in 1usize..300,
            fast in any::<bool>(),
            csp in any::<bool>(),
        ) {
            // Filler in front makes streams of several blocks.
            let mut page: Vec<u8> = (0..filler * 1500)
                .flat_map(|i| format!("<p>filler {i} text {}</p>\n", i * 7919 % 1000).into_bytes())
                .collect();
            page.extend_from_slice(&doc);
            let (plan, page_csp) = if csp {
                let (plan, p) = csp_page();
                (plan, Some(p))
            } else {
                (plan(), None)
            };
            let (want, _) = rewritten(&page, &plan, page_csp.as_ref(), fast);
            let points: Vec<usize> = flush.iter().map(|i| i.index(page.len() + 1)).collect();
            let gz = gzip(&page, level, &points);
            let got = splice(&gz, chunk, &plan, page_csp.as_ref(), fast);
            prop_assert!(got == want, "spliced output differs ({} vs {} bytes)", got.len(), want.len());
        }
    }
}

/// One path's output for `input` in one piece.
fn rewritten(
    input: &[u8],
    plan: &RewritePlan,
    csp: Option<&Arc<crate::csp::PageCsp>>,
    fast: bool,
) -> PathRun {
    let metrics = Arc::new(Metrics::new());
    let body = frames_body(vec![Bytes::copy_from_slice(input)], None);
    let mut rb = RewriteBody::build(body, plan.clone(), metrics.clone(), engine::no_hook, fast);
    rb.csp = csp.cloned();
    let (frames, _, err) = drive(rb.boxed_unsync());
    assert!(err.is_none());
    (concat(&frames), metrics)
}

/// gzip with a sync flush at each of `points`.
fn gzip(data: &[u8], level: u32, points: &[usize]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    let mut points = points.to_vec();
    points.sort_unstable();
    let mut at = 0;
    for p in points {
        e.write_all(&data[at..p]).unwrap_or_else(|e| panic!("{e}"));
        e.flush().unwrap_or_else(|e| panic!("{e}"));
        at = p;
    }
    e.write_all(&data[at..]).unwrap_or_else(|e| panic!("{e}"));
    e.finish().unwrap_or_else(|e| panic!("{e}"))
}

/// `gz` in `chunk`-byte frames through the splice around the rewriter,
/// decoded again with flate2.
fn splice(
    gz: &[u8],
    chunk: usize,
    plan: &RewritePlan,
    csp: Option<&Arc<crate::csp::PageCsp>>,
    fast: bool,
) -> Vec<u8> {
    use std::io::Read;
    let body = frames_body(split(gz, chunk), None);
    let metrics = Arc::new(Metrics::new());
    let mut rb = RewriteBody::build(
        crate::body::empty(),
        plan.clone(),
        metrics,
        engine::no_hook,
        fast,
    );
    rb.csp = csp.cloned();
    let limits = crate::codec::DecodeLimits {
        max_bytes: u64::MAX,
        max_ratio: u64::MAX,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = rt.block_on(async {
        let Ok(checked) = crate::codec::splice::check(body, limits).await else {
            panic!("the prefix check refused valid gzip");
        };
        let (frames, _, err) = drive(checked.into_body(Driven(rb)));
        assert!(err.is_none(), "{err:?}");
        concat(&frames)
    });
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&out[..])
        .read_to_end(&mut plain)
        .unwrap_or_else(|e| panic!("spliced stream does not decode: {e}"));
    plain
}

#[test]
fn fast_path_takes_every_fixture_page_to_its_end_but_the_frameset() {
    // The fixtures are shaped like real sites (old Japanese and Russian pages
    // hiding scripts in comments, a CMS page with SVG icons, a sprite): none
    // of them needs lol_html but the frameset document, which lol_html decides.
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "html") {
            continue;
        }
        let page = std::fs::read(&path).unwrap_or_default();
        let mut scanner = fast::Scanner::new(ID, fast::Watch::default());
        let handed_over = matches!(
            scanner.feed(Bytes::from(page), SNIPPET, &mut |_| {}),
            fast::Step::Handoff { .. }
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(handed_over, name == "frameset.html", "{name}");
        seen += 1;
    }
    assert!(seen >= 13, "fixtures in {dir}");
}
