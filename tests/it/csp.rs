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
        h.append(CONTENT_SECURITY_POLICY, HeaderValue::from_str(l).expect("header"));
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

#[test]
fn policies_in_policies_out() {
    // (mode, policy in, policy out or refusal, nonce)
    let cases: Vec<(CspMode, &str, Result<String, Blocked>, Option<&str>)> = vec![
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
    assert_eq!(csp::plan(&h, CspMode::Auto, &settings()).err(), Some(Blocked::HashOnly));
    // plan() takes the headers by reference: nothing to undo.
    assert_eq!(csp_lines(&h), ["script-src 'self'", "script-src 'sha256-abc'"]);
}

#[test]
fn several_headers_each_amended_in_order() {
    let (lines, _) = run(CspMode::Auto, &["script-src 'self'", "default-src https:; script-src https://cdn.example"]).expect("plan");
    assert_eq!(lines[0], "script-src 'self' https://widget.smsbat.com");
    assert!(lines[1].starts_with("default-src https:; script-src https://cdn.example https://widget.smsbat.com"), "{}", lines[1]);
}

#[test]
fn report_only_policies_are_never_touched() {
    let mut h = HeaderMap::new();
    h.insert(REPORT_ONLY, HeaderValue::from_static("script-src 'none'; report-uri /csp"));
    h.append(CONTENT_SECURITY_POLICY, HeaderValue::from_static("script-src 'self'"));
    let plan = csp::plan(&h, CspMode::Auto, &settings()).expect("plan");
    plan.apply(&mut h);
    assert_eq!(h[REPORT_ONLY], "script-src 'none'; report-uri /csp");
    assert_eq!(csp_lines(&h), ["script-src 'self' https://widget.smsbat.com"]);

    let mut only = HeaderMap::new();
    only.insert(REPORT_ONLY, HeaderValue::from_static("default-src 'none'"));
    let plan = csp::plan(&only, CspMode::Auto, &settings()).expect("plan");
    assert!(!plan.is_amended());
    plan.apply(&mut only);
    assert!(only.get(CONTENT_SECURITY_POLICY).is_none());
}

#[test]
fn emulator_widget_gets_its_http_origin() {
    let s = CspSettings::from_parts("http://127.0.0.1:40123/operator-chat-panel/widget-script.js", &[]);
    let mut h = headers(&["default-src 'self'"]);
    csp::plan(&h, CspMode::Auto, &s).expect("plan").apply(&mut h);
    assert_eq!(
        csp_lines(&h),
        ["default-src 'self'; script-src 'self' http://127.0.0.1:40123; connect-src 'self' http://127.0.0.1:40123 ws://127.0.0.1:40123"]
    );
}

fn source() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "'strict-dynamic'", "'nonce-abc'", "'nonce-XyZ'",
        "'sha256-AAAA'", "'report-sample'", "https:", "data:", "*", "*.example.com", "https://cdn.example",
        "https://widget.smsbat.com", "http://widget.smsbat.com:8080", "wss://chatapi.smsbat.com", "blob:",
    ])
}

fn directive() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "default-src", "script-src", "script-src-elem", "connect-src", "img-src", "style-src", "object-src", "base-uri",
    ]);
    (name, prop::collection::vec(source(), 0..4)).prop_map(|(n, s)| format!("{n} {}", s.join(" ")).trim().to_owned())
}

fn policy() -> impl Strategy<Value = String> {
    prop::collection::vec(directive(), 1..5).prop_map(|d| d.join("; "))
}

fn mode() -> impl Strategy<Value = CspMode> {
    prop::sample::select(vec![CspMode::Auto, CspMode::Nonce, CspMode::Amend, CspMode::Off])
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
