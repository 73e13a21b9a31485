//! CSP header handling through the public API: real-world policies in,
//! policies out, per mode; never a weaker policy (no `'unsafe-*'`, no
//! wildcard, nothing removed); report-only untouched; and a property test over
//! generated policies.

use chathub_proxy::config::CspMode;
use chathub_proxy::csp::{self, Blocked, CspSettings};
use http::header::{CONTENT_SECURITY_POLICY, HeaderMap, HeaderValue};
use proptest::prelude::*;

const WIDGET: &str = "https://widget.smsbat.com/operator-chat-panel/widget-script.js";
const REPORT_ONLY: &str = "content-security-policy-report-only";

fn settings() -> CspSettings {
    CspSettings::from_parts(WIDGET, &["https://chatapi.smsbat.com".to_owned()])
}

fn headers(lines: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for l in lines {
        h.append(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(l).expect("header"),
        );
    }
    h
}

fn csp_lines(h: &HeaderMap) -> Vec<String> {
    h.get_all(CONTENT_SECURITY_POLICY)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

/// Plan and apply; the resulting policies and the tag's nonce.
fn run(mode: CspMode, lines: &[&str]) -> Result<(Vec<String>, Option<String>), Blocked> {
    let mut h = headers(lines);
    let plan = csp::plan(&h, mode, &settings())?;
    plan.apply(&mut h);
    Ok((csp_lines(&h), plan.nonce().map(str::to_owned)))
}

const CONNECT: &str = "https://widget.smsbat.com wss://widget.smsbat.com https://chatapi.smsbat.com wss://chatapi.smsbat.com";

/// Mode, policy in, policy out (or the refusal), and the nonce the tag gets.
type Case = (
    CspMode,
    &'static str,
    Result<String, Blocked>,
    Option<&'static str>,
);

#[test]
fn policies_in_policies_out() {
    let cases: Vec<Case> = vec![
        // Allowlist policies are amended.
        (CspMode::Auto, "script-src 'self'", Ok("script-src 'self' https://widget.smsbat.com".into()), None),
        (
            CspMode::Auto,
            "default-src 'self'",
            Ok(format!("default-src 'self'; script-src 'self' https://widget.smsbat.com; connect-src 'self' {CONNECT}")),
            None,
        ),
        (
            CspMode::Amend,
            "default-src 'self'; script-src 'self' https://www.google-analytics.com; connect-src 'self' https://api.shop.example; img-src * data:",
            Ok(format!(
                "default-src 'self'; script-src 'self' https://www.google-analytics.com https://widget.smsbat.com; connect-src 'self' https://api.shop.example {CONNECT}; img-src * data:"
            )),
            None,
        ),
        // Google's "strict CSP": the nonce, nothing changed.
        (
            CspMode::Auto,
            "script-src 'nonce-rAnd0m123' 'strict-dynamic' https: 'unsafe-inline'; object-src 'none'; base-uri 'none'",
            Ok("script-src 'nonce-rAnd0m123' 'strict-dynamic' https: 'unsafe-inline'; object-src 'none'; base-uri 'none'".into()),
            Some("rAnd0m123"),
        ),
        (
            CspMode::Nonce,
            "default-src 'self'; script-src 'nonce-abc'",
            Ok(format!("default-src 'self'; script-src 'nonce-abc'; connect-src 'self' {CONNECT}")),
            Some("abc"),
        ),
        // Unfixable: served unchanged (skip reason csp).
        (CspMode::Auto, "script-src 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='", Err(Blocked::HashOnly), None),
        (CspMode::Auto, "default-src 'none'", Err(Blocked::NoScripts), None),
        (CspMode::Amend, "script-src 'nonce-abc' 'strict-dynamic'", Err(Blocked::StrictDynamic), None),
        (CspMode::Nonce, "script-src 'self'", Err(Blocked::NoNonce), None),
        (CspMode::Auto, "script-src *; connect-src 'none'", Err(Blocked::NoConnect), None),
        // Off: untouched whatever it says.
        (CspMode::Off, "script-src 'none'", Ok("script-src 'none'".into()), None),
        // Already allowed: untouched.
        (
            CspMode::Auto,
            "script-src https://widget.smsbat.com; connect-src https: wss:",
            Ok("script-src https://widget.smsbat.com; connect-src https: wss:".into()),
            None,
        ),
    ];
    for (mode, input, expected, nonce) in cases {
        let got = run(mode, &[input]);
        match expected {
            Ok(out) => {
                let (lines, n) = got.unwrap_or_else(|e| panic!("{input}: refused ({e})"));
                assert_eq!(lines, [out], "{mode:?} {input}");
                assert_eq!(n.as_deref(), nonce, "{input}");
            }
            Err(b) => assert_eq!(got.err(), Some(b), "{mode:?} {input}"),
        }
    }
}

#[test]
fn refusal_leaves_the_headers_exactly_as_they_were() {
    let h = headers(&["script-src 'self'", "script-src 'sha256-abc'"]);
    assert_eq!(
        csp::plan(&h, CspMode::Auto, &settings()).err(),
        Some(Blocked::HashOnly)
    );
    // plan() takes the headers by reference: nothing to undo.
    assert_eq!(
        csp_lines(&h),
        ["script-src 'self'", "script-src 'sha256-abc'"]
    );
}

#[test]
fn several_headers_each_amended_in_order() {
    let (lines, _) = run(
        CspMode::Auto,
        &[
            "script-src 'self'",
            "default-src https:; script-src https://cdn.example",
        ],
    )
    .expect("plan");
    assert_eq!(lines[0], "script-src 'self' https://widget.smsbat.com");
    assert!(
        lines[1].starts_with(
            "default-src https:; script-src https://cdn.example https://widget.smsbat.com"
        ),
        "{}",
        lines[1]
    );
}

#[test]
fn report_only_policies_are_never_touched() {
    let mut h = HeaderMap::new();
    h.insert(
        REPORT_ONLY,
        HeaderValue::from_static("script-src 'none'; report-uri /csp"),
    );
    h.append(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("script-src 'self'"),
    );
    let plan = csp::plan(&h, CspMode::Auto, &settings()).expect("plan");
    plan.apply(&mut h);
    assert_eq!(h[REPORT_ONLY], "script-src 'none'; report-uri /csp");
    assert_eq!(
        csp_lines(&h),
        ["script-src 'self' https://widget.smsbat.com"]
    );

    let mut only = HeaderMap::new();
    only.insert(REPORT_ONLY, HeaderValue::from_static("default-src 'none'"));
    let plan = csp::plan(&only, CspMode::Auto, &settings()).expect("plan");
    assert!(!plan.is_amended());
    plan.apply(&mut only);
    assert!(only.get(CONTENT_SECURITY_POLICY).is_none());
}

#[test]
fn emulator_widget_gets_its_http_origin() {
    let s = CspSettings::from_parts(
        "http://127.0.0.1:40123/operator-chat-panel/widget-script.js",
        &[],
    );
    let mut h = headers(&["default-src 'self'"]);
    csp::plan(&h, CspMode::Auto, &s)
        .expect("plan")
        .apply(&mut h);
    assert_eq!(
        csp_lines(&h),
        [
            "default-src 'self'; script-src 'self' http://127.0.0.1:40123; connect-src 'self' http://127.0.0.1:40123 ws://127.0.0.1:40123"
        ]
    );
}

fn source() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "'self'",
        "'none'",
        "'unsafe-inline'",
        "'unsafe-eval'",
        "'strict-dynamic'",
        "'nonce-abc'",
        "'nonce-XyZ'",
        "'sha256-AAAA'",
        "'report-sample'",
        "https:",
        "data:",
        "*",
        "*.example.com",
        "https://cdn.example",
        "https://widget.smsbat.com",
        "http://widget.smsbat.com:8080",
        "wss://chatapi.smsbat.com",
        "blob:",
    ])
}

fn directive() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "default-src",
        "script-src",
        "script-src-elem",
        "connect-src",
        "img-src",
        "style-src",
        "object-src",
        "base-uri",
    ]);
    (name, prop::collection::vec(source(), 0..4))
        .prop_map(|(n, s)| format!("{n} {}", s.join(" ")).trim().to_owned())
}

fn policy() -> impl Strategy<Value = String> {
    prop::collection::vec(directive(), 1..5).prop_map(|d| d.join("; "))
}

fn mode() -> impl Strategy<Value = CspMode> {
    prop::sample::select(vec![
        CspMode::Auto,
        CspMode::Nonce,
        CspMode::Amend,
        CspMode::Off,
    ])
}

proptest! {
    /// For any policy and mode: either a refusal with the headers unchanged, or
    /// every original directive still there as written (possibly with origins
    /// appended), no new `'unsafe-*'` keyword or wildcard, and only the widget's
    /// and ChatHub's origins (or copies of default-src) added.
    #[test]
    fn amended_policies_are_never_weaker(p in policy(), m in mode()) {
        let h = headers(&[&p]);
        let Ok(plan) = csp::plan(&h, m, &settings()) else { return Ok(()); };
        let mut out = h.clone();
        plan.apply(&mut out);
        let line = csp_lines(&out).join("");
        let before: Vec<&str> = p.split(';').map(str::trim).filter(|d| !d.is_empty()).collect();
        let after: Vec<&str> = line.split(';').map(str::trim).collect();
        prop_assert!(after.len() >= before.len(), "{} -> {}", p, line);
        for (i, d) in before.iter().enumerate() {
            prop_assert!(after[i].starts_with(d), "{} -> {}", p, line);
            let added: Vec<&str> = after[i][d.len()..].split_ascii_whitespace().collect();
            for a in added {
                prop_assert!(a.contains("smsbat.com"), "{} added to {}", a, d);
            }
        }
        // New directives: a script-src copied whole from default-src (changing
        // nothing), or a connect-src without any keyword but 'self'.
        let default_unsafe = before
            .iter()
            .find(|d| d.split_ascii_whitespace().next() == Some("default-src"))
            .map_or(0, |d| d.matches("'unsafe-").count());
        let mut allowed = p.matches("'unsafe-").count();
        for d in &after[before.len()..] {
            prop_assert!(d.starts_with("script-src ") || d.starts_with("connect-src "), "{}", d);
            if d.starts_with("script-src ") {
                allowed += default_unsafe;
            }
        }
        prop_assert_eq!(line.matches("'unsafe-").count(), allowed, "{} -> {}", p, line);
        prop_assert_eq!(line.matches('*').count(), p.matches('*').count() + after[before.len()..].iter().map(|d| d.matches('*').count()).sum::<usize>(), "{} -> {}", p, line);
        if m == CspMode::Off {
            prop_assert_eq!(line, p);
        }
    }
}

/// Through the running proxy (needs the CSP wiring in `proxy.rs`).
mod through_the_proxy {
    use crate::support::client::{self, Got};
    use crate::support::harness::Proxy;
    use crate::support::origin::Origin;
    use http::Method;

    const TOML: &str = r#"
[inject]
widget_url = "https://widget.example/operator-chat-panel/widget-script.js"
dev_token = "csp-test-token"
debug_header = true
refresh_helper = true
fallback_html = "<p>Call us</p>"

[[routes]]
name = "site"
hosts = ["site.test"]
upstream = "{origin}"
csp = "{mode}"
"#;

    const PAGE: &str =
        "<!doctype html><html><head><title>t</title></head><body><p>page</p></body></html>";

    async fn serve(mode: &str, headers: &[(&str, &str)], body: &str) -> (Proxy, Origin) {
        let mut all = vec![("content-type", "text/html; charset=utf-8")];
        all.extend_from_slice(headers);
        let origin = Origin::builder()
            .fixed_with_headers("/", 200, &all, body.to_owned())
            .start()
            .await;
        let proxy = Proxy::with(TOML, &[("origin", &origin.url()), ("mode", mode)]).await;
        (proxy, origin)
    }

    async fn get(proxy: &Proxy, method: Method, path: &str) -> Got {
        let c = client::http1(proxy.addr);
        let req = client::request(method, "site.test", path)
            .header("sec-fetch-dest", "document")
            .body(client::empty())
            .expect("request");
        client::fetch(&c, req).await
    }

    fn one(got: &Got, name: &str) -> String {
        got.all(name).join(" | ")
    }

    #[tokio::test]
    async fn hash_only_page_goes_out_unchanged_with_reason_csp() {
        let policy = "script-src 'sha256-abc'";
        let (proxy, _o) = serve("auto", &[("content-security-policy", policy)], PAGE).await;
        let got = get(&proxy, Method::GET, "/").await;
        assert_eq!(one(&got, "x-chathub-inject"), "skipped; reason=csp");
        assert_eq!(one(&got, "content-security-policy"), policy);
        assert_eq!(got.text(), PAGE);
        assert_eq!(proxy.metrics.skipped_count("csp"), 1);
    }

    #[tokio::test]
    async fn self_policy_is_amended_and_the_page_gets_tag_and_helper() {
        let (proxy, _o) = serve(
            "auto",
            &[("content-security-policy", "default-src 'self'")],
            PAGE,
        )
        .await;
        for method in [Method::HEAD, Method::GET] {
            let got = get(&proxy, method.clone(), "/").await;
            assert_eq!(one(&got, "x-chathub-inject"), "injected", "{method}");
            assert_eq!(
                one(&got, "content-security-policy"),
                "default-src 'self'; script-src 'self' https://widget.example; connect-src 'self' https://widget.example wss://widget.example",
                "{method}"
            );
        }
        let body = get(&proxy, Method::GET, "/").await.text();
        assert!(
            body.contains(r#"<template id="chathub-fallback"><p>Call us</p></template>"#),
            "{body}"
        );
        assert!(
            body.contains(r#"<script defer src="/__chathub/refresh.js" id="chathub-proxy-helper""#),
            "{body}"
        );
        assert!(
            body.contains(r#" token="csp-test-token"></script></body>"#),
            "{body}"
        );
        assert!(!body.contains("nonce"), "{body}");
    }

    #[tokio::test]
    async fn nonce_policy_lends_its_nonce_to_tag_and_helper() {
        let policy = "script-src 'nonce-Zm9v' 'strict-dynamic'; object-src 'none'";
        let (proxy, _o) = serve("auto", &[("content-security-policy", policy)], PAGE).await;
        let got = get(&proxy, Method::GET, "/").await;
        assert_eq!(one(&got, "content-security-policy"), policy);
        let body = got.text();
        assert_eq!(body.matches(r#"nonce="Zm9v""#).count(), 2, "{body}");
    }

    #[tokio::test]
    async fn meta_policy_without_nonce_leaves_the_body_alone() {
        let page = r#"<html><head><meta http-equiv="Content-Security-Policy" content="script-src 'self'"></head><body>x</body></html>"#;
        let (proxy, _o) = serve("auto", &[], page).await;
        let got = get(&proxy, Method::GET, "/").await;
        assert_eq!(got.text(), page);
        assert_eq!(proxy.metrics.skipped_count("csp"), 1);
    }

    #[tokio::test]
    async fn report_only_is_untouched_and_off_ignores_the_policy() {
        let (proxy, _o) = serve(
            "auto",
            &[("content-security-policy-report-only", "script-src 'none'")],
            PAGE,
        )
        .await;
        let got = get(&proxy, Method::GET, "/").await;
        assert_eq!(one(&got, "x-chathub-inject"), "injected");
        assert_eq!(
            one(&got, "content-security-policy-report-only"),
            "script-src 'none'"
        );
        assert!(got.all("content-security-policy").is_empty());

        let (proxy, _o) = serve(
            "off",
            &[("content-security-policy", "script-src 'none'")],
            PAGE,
        )
        .await;
        let got = get(&proxy, Method::GET, "/").await;
        assert_eq!(one(&got, "x-chathub-inject"), "injected");
        assert_eq!(one(&got, "content-security-policy"), "script-src 'none'");
    }

    #[tokio::test]
    async fn the_helper_script_is_served_by_the_proxy() {
        let (proxy, origin) = serve("auto", &[], PAGE).await;
        let got = get(&proxy, Method::GET, "/__chathub/refresh.js").await;
        assert_eq!(got.status, 200);
        assert_eq!(one(&got, "content-type"), "text/javascript; charset=utf-8");
        assert_eq!(
            got.body.as_ref(),
            chathub_proxy::snippet::HELPER_JS.as_bytes()
        );
        assert_eq!(origin.requests().len(), 0, "never forwarded upstream");
    }
}
