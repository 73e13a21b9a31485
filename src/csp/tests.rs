//! Unit tests of `csp`, kept beside it so the module itself reads as code.

use super::*;

const WIDGET: &str = "https://widget.example/operator-chat-panel/widget-script.js";

fn settings() -> CspSettings {
    CspSettings::from_parts(WIDGET, &["https://api.example".to_owned()])
}

fn headers(policies: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for p in policies {
        h.append(CONTENT_SECURITY_POLICY, HeaderValue::from_str(p).unwrap());
    }
    h
}

/// The policies after planning and applying, or the refusal.
fn run(mode: CspMode, policies: &[&str]) -> Result<(Option<String>, Vec<String>), Blocked> {
    let mut h = headers(policies);
    let plan = plan(&h, mode, &settings())?;
    plan.apply(&mut h);
    let out = h
        .get_all(CONTENT_SECURITY_POLICY)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    Ok((plan.nonce().map(str::to_owned), out))
}

#[test]
fn no_policy_needs_nothing() {
    let (nonce, out) = run(CspMode::Auto, &[]).unwrap();
    assert_eq!(nonce, None);
    assert!(out.is_empty());
}

#[test]
fn self_only_gets_the_widget_origin() {
    let (nonce, out) = run(CspMode::Auto, &["script-src 'self'"]).unwrap();
    assert_eq!(nonce, None);
    assert_eq!(out, ["script-src 'self' https://widget.example"]);
}

#[test]
fn default_src_only_gets_new_script_and_connect_directives() {
    let (_, out) = run(CspMode::Amend, &["default-src 'self'; img-src *"]).unwrap();
    assert_eq!(
        out,
        [
            "default-src 'self'; img-src *; script-src 'self' https://widget.example; connect-src 'self' https://widget.example wss://widget.example https://api.example wss://api.example"
        ]
    );
}

#[test]
fn script_src_elem_is_amended_when_present() {
    let (_, out) = run(
        CspMode::Amend,
        &["script-src 'self'; script-src-elem 'self' https://cdn.example"],
    )
    .unwrap();
    assert_eq!(
        out,
        ["script-src 'self'; script-src-elem 'self' https://cdn.example https://widget.example"]
    );
}

#[test]
fn nonce_policies_lend_their_nonce_and_stay_as_they_are() {
    let p = "script-src 'nonce-r4nd0m' 'strict-dynamic'; object-src 'none'; base-uri 'none'";
    let (nonce, out) = run(CspMode::Auto, &[p]).unwrap();
    assert_eq!(nonce.as_deref(), Some("r4nd0m"));
    assert_eq!(out, [p]);
    let (nonce, _) = run(CspMode::Nonce, &[p]).unwrap();
    assert_eq!(nonce.as_deref(), Some("r4nd0m"));
    // Amend cannot help under 'strict-dynamic' (host sources are ignored).
    assert_eq!(run(CspMode::Amend, &[p]), Err(Blocked::StrictDynamic));
}

#[test]
fn nonce_mode_refuses_policies_without_nonces() {
    assert_eq!(
        run(CspMode::Nonce, &["script-src 'self'"]),
        Err(Blocked::NoNonce)
    );
    // No script restriction at all is fine in every mode.
    assert!(run(CspMode::Nonce, &["img-src 'self'"]).is_ok());
}

#[test]
fn unfixable_policies_are_refused() {
    assert_eq!(
        run(CspMode::Auto, &["script-src 'none'"]),
        Err(Blocked::NoScripts)
    );
    assert_eq!(run(CspMode::Auto, &["script-src"]), Err(Blocked::NoScripts));
    assert_eq!(
        run(CspMode::Auto, &["default-src 'none'"]),
        Err(Blocked::NoScripts)
    );
    assert_eq!(
        run(CspMode::Auto, &["script-src 'sha256-AAAA'"]),
        Err(Blocked::HashOnly)
    );
    assert_eq!(
        run(CspMode::Auto, &["script-src 'unsafe-inline'"]),
        Err(Blocked::NoAllowlist)
    );
    assert_eq!(
        run(
            CspMode::Auto,
            &["script-src https://widget.example; connect-src 'none'"]
        ),
        Err(Blocked::NoConnect)
    );
}

#[test]
fn report_only_and_off_are_untouched() {
    let mut h = HeaderMap::new();
    h.insert(
        "content-security-policy-report-only",
        HeaderValue::from_static("script-src 'none'"),
    );
    let p = plan(&h, CspMode::Auto, &settings()).unwrap();
    assert!(!p.is_amended());
    let mut h = headers(&["script-src 'none'"]);
    let p = plan(&h, CspMode::Off, &settings()).unwrap();
    p.apply(&mut h);
    assert_eq!(h[CONTENT_SECURITY_POLICY], "script-src 'none'");
}

#[test]
fn every_policy_is_amended_and_order_kept() {
    let (_, out) = run(
        CspMode::Auto,
        &[
            "script-src 'self', img-src 'self'",
            "img-src https:; script-src https://a.example",
        ],
    )
    .unwrap();
    assert_eq!(
        out,
        [
            "script-src 'self' https://widget.example, img-src 'self'",
            "img-src https:; script-src https://a.example https://widget.example"
        ]
    );
}

#[test]
fn mixed_policies_take_the_nonce_and_amend_the_rest() {
    let (nonce, out) = run(
        CspMode::Auto,
        &[
            "script-src 'nonce-abc' 'strict-dynamic'",
            "script-src 'self'",
        ],
    )
    .unwrap();
    assert_eq!(nonce.as_deref(), Some("abc"));
    assert_eq!(
        out,
        [
            "script-src 'nonce-abc' 'strict-dynamic'",
            "script-src 'self' https://widget.example"
        ]
    );
}

#[test]
fn already_allowed_origins_are_not_added_again() {
    for p in [
        "script-src https://widget.example",
        "script-src https:",
        "script-src *",
        "script-src *.example",
        "script-src widget.example:443",
        "script-src https://widget.example/operator-chat-panel/",
        "script-src http://widget.example",
    ] {
        let (_, out) = run(CspMode::Amend, &[p]).unwrap();
        assert_eq!(out, [p], "{p}");
    }
    // Path or port that does not cover the widget: added.
    for p in [
        "script-src https://widget.example/other/",
        "script-src https://widget.example:8443",
        "script-src *.widget.example",
        "script-src http://other.example",
    ] {
        let (_, out) = run(CspMode::Amend, &[p]).unwrap();
        assert_eq!(out, [format!("{p} https://widget.example")], "{p}");
    }
}

#[test]
fn connect_src_gains_only_what_is_missing() {
    let (_, out) = run(
        CspMode::Auto,
        &["script-src *; connect-src 'self' https://widget.example wss://widget.example"],
    )
    .unwrap();
    assert_eq!(
        out,
        [
            "script-src *; connect-src 'self' https://widget.example wss://widget.example https://api.example wss://api.example"
        ]
    );
}

#[test]
fn never_adds_unsafe_keywords_or_wildcards() {
    for p in [
        "script-src 'self'",
        "default-src 'self'",
        "default-src 'self' https:; script-src 'nonce-x'",
        "script-src 'nonce-x' 'self'; connect-src 'self'",
        "script-src-elem 'self'; default-src 'none'; connect-src https://x.example",
        "default-src 'self' 'unsafe-inline'; script-src 'nonce-x'",
    ] {
        for mode in [CspMode::Auto, CspMode::Amend, CspMode::Nonce] {
            let Ok((_, out)) = run(mode, &[p]) else {
                continue;
            };
            for line in &out {
                assert_eq!(
                    line.matches("'unsafe-").count(),
                    p.matches("'unsafe-").count(),
                    "{p} → {line}"
                );
                assert_eq!(
                    line.matches('*').count(),
                    p.matches('*').count(),
                    "{p} → {line}"
                );
                // Nothing removed: the original text is a prefix, directive by directive.
                assert!(
                    line.starts_with(p.split(';').next().unwrap()),
                    "{p} → {line}"
                );
            }
        }
    }
}

#[test]
fn http_widget_adds_ws_for_connect() {
    let s = CspSettings::from_parts("http://127.0.0.1:8090/w.js", &[]);
    let h = headers(&["default-src 'self'"]);
    let mut out = h.clone();
    plan(&h, CspMode::Auto, &s).unwrap().apply(&mut out);
    assert_eq!(
        out[CONTENT_SECURITY_POLICY],
        "default-src 'self'; script-src 'self' http://127.0.0.1:8090; connect-src 'self' http://127.0.0.1:8090 ws://127.0.0.1:8090"
    );
}

#[test]
fn same_origin_widget_needs_self() {
    let s = CspSettings::from_parts("/widget.js", &[]);
    assert!(plan(&headers(&["script-src 'self'"]), CspMode::Auto, &s).is_ok());
    assert_eq!(
        plan(
            &headers(&["script-src https://cdn.example"]),
            CspMode::Auto,
            &s
        )
        .err(),
        Some(Blocked::SameOrigin)
    );
}

#[test]
fn helper_permission_follows_self_and_nonce() {
    let s = settings();
    let p = plan(&headers(&["script-src 'self'"]), CspMode::Auto, &s).unwrap();
    assert!(p.helper_allowed());
    let p = plan(
        &headers(&["script-src https://cdn.example"]),
        CspMode::Auto,
        &s,
    )
    .unwrap();
    assert!(!p.helper_allowed());
    let p = plan(
        &headers(&["script-src 'nonce-a' 'strict-dynamic'"]),
        CspMode::Auto,
        &s,
    )
    .unwrap();
    assert!(p.helper_allowed());
}

#[test]
fn unreadable_header_is_refused() {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_bytes(b"script-src \xff").unwrap(),
    );
    assert_eq!(
        plan(&h, CspMode::Auto, &settings()).err(),
        Some(Blocked::Unreadable)
    );
    assert!(plan(&h, CspMode::Off, &settings()).is_ok());
}

#[test]
fn duplicate_directives_follow_the_first() {
    let (_, out) = run(CspMode::Auto, &["script-src 'self'; script-src *"]).unwrap();
    assert_eq!(
        out,
        ["script-src 'self' https://widget.example; script-src *"]
    );
}

#[test]
fn keywords_are_case_insensitive_nonces_are_not() {
    let (nonce, _) = run(CspMode::Auto, &["SCRIPT-SRC 'NONCE-AbC' 'Strict-Dynamic'"]).unwrap();
    assert_eq!(nonce.as_deref(), Some("AbC"));
}

fn page(plan: CspPlan) -> PageCsp {
    let cfg = crate::config::from_toml_str(&format!(
        "[inject]\nwidget_url = \"{WIDGET}\"\nrefresh_helper = true"
    ))
    .unwrap();
    PageCsp::new(
        plan,
        Arc::new(settings()),
        Arc::new(Snippet::new(&cfg.inject)),
        Secret::new("tok"),
        None,
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn meta_policy_takes_a_page_nonce_it_accepts() {
    let p = page(plan(&HeaderMap::new(), CspMode::Auto, &settings()).unwrap());
    let meta = s(&["script-src &#39;nonce-good&#39; 'strict-dynamic'"]);
    let html = p.meta_snippet(&meta, &s(&["bad", "good"])).unwrap();
    assert!(html.contains(r#"token="tok" nonce="good""#), "{html}");
    assert_eq!(p.meta_snippet(&meta, &s(&["bad"])), Err(Blocked::Meta));
    assert_eq!(p.meta_snippet(&meta, &[]), Err(Blocked::Meta));
}

#[test]
fn meta_policy_without_nonces_blocks_unless_it_allows_the_origin() {
    let p = page(plan(&HeaderMap::new(), CspMode::Auto, &settings()).unwrap());
    assert_eq!(
        p.meta_snippet(&s(&["script-src 'self'"]), &s(&["x"])),
        Err(Blocked::Meta)
    );
    let html = p
        .meta_snippet(&s(&["script-src 'self' https://widget.example"]), &[])
        .unwrap();
    assert!(!html.contains("nonce"), "{html}");
    // The helper is same-origin: 'self' lets it run.
    assert!(html.contains("chathub-proxy-helper"), "{html}");
    // Meta connect-src that shuts ChatHub out: no widget.
    assert_eq!(
        p.meta_snippet(&s(&["script-src *; connect-src 'self'"]), &[]),
        Err(Blocked::Meta)
    );
}

#[test]
fn meta_policy_must_accept_the_header_nonce() {
    let h = headers(&["script-src 'nonce-hdr' 'strict-dynamic'"]);
    let p = page(plan(&h, CspMode::Auto, &settings()).unwrap());
    assert!(p.header_snippet().contains(r#"nonce="hdr""#));
    assert!(p.meta_snippet(&s(&["script-src 'nonce-hdr'"]), &[]).is_ok());
    assert_eq!(
        p.meta_snippet(&s(&["script-src 'nonce-other'"]), &s(&["other"])),
        Err(Blocked::Meta)
    );
}

#[test]
fn too_many_or_too_long_metas_are_refused() {
    let p = page(plan(&HeaderMap::new(), CspMode::Auto, &settings()).unwrap());
    let many = vec!["img-src *".to_owned(); MAX_META_POLICIES + 1];
    assert_eq!(p.meta_snippet(&many, &[]), Err(Blocked::Meta));
    let long = vec!["img-src ".to_owned() + &"a".repeat(MAX_META_LEN)];
    assert_eq!(p.meta_snippet(&long, &[]), Err(Blocked::Meta));
    assert!(p.meta_snippet(&s(&["img-src *"]), &[]).is_ok());
}

#[test]
fn off_mode_does_not_inspect_pages() {
    let p = page(plan(&HeaderMap::new(), CspMode::Off, &settings()).unwrap());
    assert!(!p.inspects_page());
    assert!(format!("{p:?}").contains("<redacted>"));
    assert!(!format!("{p:?}").contains("tok\""));
}

/// Run `html` through the rewriter with `page`'s CSP state.
async fn rewrite_page(html: &str, page: PageCsp) -> (String, Arc<crate::metrics::Metrics>) {
    use http_body_util::BodyExt;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let plan = crate::rewrite::RewritePlan {
        snippet: page.header_snippet().into(),
        script_id: "operator-chat-panel-script".into(),
        encoding: None,
        max_memory: 1 << 20,
        fallback: None,
    };
    let body = crate::rewrite::rewrite_with_csp(
        crate::body::full(html.to_owned()),
        plan,
        Arc::new(page),
        metrics.clone(),
    );
    let out = body.collect().await.unwrap().to_bytes();
    (String::from_utf8(out.to_vec()).unwrap(), metrics)
}

fn auto_page() -> PageCsp {
    page(plan(&HeaderMap::new(), CspMode::Auto, &settings()).unwrap())
}

#[tokio::test]
async fn rewriter_uses_the_nonce_of_the_pages_own_script_for_a_meta_policy() {
    let html = r#"<html><head><meta http-equiv="Content-Security-Policy" content="script-src 'nonce-pg1' 'strict-dynamic'"><script nonce="pg1" src="/app.js"></script></head><body><p>x</p></body></html>"#;
    let (out, m) = rewrite_page(html, auto_page()).await;
    assert!(
        out.contains(r#"token="tok" nonce="pg1"></script></body>"#),
        "{out}"
    );
    assert!(out.contains(r#"id="chathub-proxy-helper""#), "{out}");
    assert_eq!(m.skipped_count("csp"), 0);
}

#[tokio::test]
async fn rewriter_leaves_a_page_alone_when_its_meta_policy_blocks_the_widget() {
    for html in [
        r#"<html><head><META HTTP-EQUIV="content-security-policy" CONTENT="script-src 'self'"></head><body><p>x</p></body></html>"#,
        r#"<html><head><meta http-equiv="Content-Security-Policy" content="script-src &#39;nonce-a&#39;"><script nonce="b"></script></head><body>x</body></html>"#,
        r#"<html><head><meta http-equiv="Content-Security-Policy" content="script-src 'sha256-abc'"></head><body>no body end"#,
    ] {
        let (out, m) = rewrite_page(html, auto_page()).await;
        assert_eq!(out, html);
        assert_eq!(m.skipped_count("csp"), 1, "{html}");
    }
}

#[tokio::test]
async fn rewriter_without_meta_policy_inserts_the_header_snippet() {
    let html = r#"<html><head><meta http-equiv="refresh" content="60"><template><meta http-equiv="Content-Security-Policy" content="script-src 'none'"></template></head><body>x</body></html>"#;
    let p = auto_page();
    let expected = p.header_snippet();
    let (out, m) = rewrite_page(html, p).await;
    assert_eq!(out, html.replace("</body>", &format!("{expected}</body>")));
    assert_eq!(m.skipped_count("csp"), 0);
}

#[tokio::test]
async fn rewriter_in_off_mode_ignores_meta_policies() {
    let html = r#"<head><meta http-equiv="Content-Security-Policy" content="script-src 'none'"></head><body>x</body>"#;
    let p = page(plan(&HeaderMap::new(), CspMode::Off, &settings()).unwrap());
    let (out, _) = rewrite_page(html, p).await;
    assert!(out.contains(r#"token="tok"></script></body>"#), "{out}");
}

#[tokio::test]
async fn meta_after_the_insertion_point_does_not_count() {
    let html =
        r#"<body>x</body><meta http-equiv="Content-Security-Policy" content="script-src 'none'">"#;
    let (out, m) = rewrite_page(html, auto_page()).await;
    assert!(out.contains(r#"token="tok""#), "{out}");
    assert_eq!(m.skipped_count("csp"), 0);
}

#[test]
fn entities_decode() {
    assert_eq!(
        decode_entities("a &#39;b&apos; &amp;&#x41;&quot;"),
        "a 'b' &A\""
    );
    assert_eq!(decode_entities("&bogus; & &#xZZ;"), "&bogus; & &#xZZ;");
    assert_eq!(decode_entities("plain"), "plain");
}

#[test]
fn parsing_never_panics_on_odd_input() {
    let s = settings();
    for p in [
        "",
        ";;;",
        " , ,",
        "script-src 'nonce-'",
        "script-src :",
        "script-src ://",
        "script-src *.",
        "script-src a:b:c",
        "script-src https://*:*/",
        "script-src 'ñ'",
    ] {
        let _ = plan(&headers(&[p]), CspMode::Auto, &s);
    }
}
