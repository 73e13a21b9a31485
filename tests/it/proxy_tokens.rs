//! Per-session operator tokens through the running proxy: a real client, the
//! proxy, a fake origin, and the ChatHub emulator as the token source. The
//! session cookie and its attributes, the cookie kept from the upstream,
//! tokens per session and per organization, fail-open when ChatHub is down,
//! slow, failing or rate limiting (with the breaker and the fallback block),
//! the cold-mint budget, the token endpoint, replicas sharing tokens through
//! Redis, no secret in TRACE logs, and the identity rule behind a trusted proxy.
//!
//! `tokens.rs` tests the token layer on its own; these go through HTTP.

use crate::support;
use crate::support::client::{self, Got, TestClient, fetch, http1, http1_from};
use crate::support::harness::{Proxy, inject_outcomes};
use crate::support::secrets::Captured;
use crate::support::tokens_support::*;
use chathub_proxy::emulator::Fault;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// A token page: 200, the widget tag once, and otherwise the origin's page
/// byte for byte. Returns the token.
fn injected(got: &Got) -> String {
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(inject_header(got), "injected");
    let token = must_token(got);
    let body = without_helper(&got.body);
    let (rest, tags) = crate::support::inject_support::strip_tags(&body);
    assert_eq!(tags, 1);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        PAGE,
        "the page around the tag is intact"
    );
    token
}

/// The body minus what the proxy inserts before the widget tag when
/// `inject.fallback_html` or `inject.refresh_helper` is set: the fallback
/// `<template>` and the helper `<script>`.
fn without_helper(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let start = text
        .find(r#"<template id="chathub-fallback">"#)
        .or_else(|| text.find(r#"<script defer src="/__chathub/refresh.js""#));
    match (start, text.find(r#"<script type="module""#)) {
        (Some(s), Some(e)) if s < e => format!("{}{}", &text[..s], &text[e..]).into_bytes(),
        _ => body.to_vec(),
    }
}

/// A page served without the widget: 200, the origin's bytes exactly, the
/// skip reason in the debug header. Returns the reason.
fn served_as_is(got: &Got) -> String {
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.body,
        PAGE.as_bytes(),
        "the page is served complete and unchanged"
    );
    assert!(tag_token(&got.body).is_none());
    skip_reason(got).unwrap_or_else(|| panic!("no skip reason: {:?}", inject_header(got)))
}

// 1. First and second page of a session.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_page_sets_the_cookie_and_a_valid_token_the_second_reuses_both() {
    let emu = emulator().await;
    let origin = html_origin().await;
    // A generous budget: this test is about the session, not about timing.
    let spec = ProxySpec {
        token: "budget = \"5s\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);

    let first = load(&c, None).await;
    let token = injected(&first);
    assert_valid(&emu, &token, 21).await;
    assert_eq!(operator_and_org(&token), (21, 6));
    let cookie = session_cookie(&first).expect("the first page sets the session cookie");
    assert_eq!(set_cookies(&first).len(), 1);
    // Plain HTTP: the plain name, no Secure (browsers refuse __Host- without it).
    assert_eq!(cookie.name, COOKIE);
    assert!(chathub_proxy::session::SessionId::parse(cookie.value.as_bytes()).is_some());
    assert!(cookie.has("HttpOnly"), "{cookie:?}");
    assert_eq!(cookie.attr("SameSite").as_deref(), Some("Lax"));
    assert_eq!(cookie.attr("Path").as_deref(), Some("/"));
    let max_age: u64 = cookie
        .attr("Max-Age")
        .and_then(|v| v.parse().ok())
        .expect("Max-Age");
    assert!(max_age > 0);
    assert!(!cookie.has("Domain"), "{cookie:?}");
    assert!(!cookie.has("Secure"), "{cookie:?}");
    assert_eq!(emu.calls(GET_TOKEN), 1);

    // The second page of the session: same token, no new cookie, no mint.
    for path in ["/", "/other"] {
        let again = fetch(
            &c,
            page_request("site.test", path, Some(&cookie.pair()), &[]),
        )
        .await;
        assert_eq!(injected(&again), token, "{path}");
        assert!(
            again.all("set-cookie").is_empty(),
            "{path}: {:?}",
            again.all("set-cookie")
        );
    }
    assert_eq!(
        emu.calls(GET_TOKEN),
        1,
        "the session's token comes from the cache"
    );

    // A malformed cookie is no session: a new one is set.
    let bad = load(&c, Some("chathub_sid=not-a-session")).await;
    assert_ne!(injected(&bad), token);
    let fresh = session_cookie(&bad).expect("a new session");
    assert_ne!(fresh.value, cookie.value);
    assert_eq!(emu.calls(GET_TOKEN), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_behind_a_trusted_proxy_gets_the_host_prefixed_secure_cookie() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let spec = ProxySpec {
        server: "trusted_proxies = [\"127.0.0.2\"]".into(),
        token: "budget = \"5s\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let https = [("x-forwarded-proto", "https")];
    let trusted = http1_from(proxy.addr, ip("127.0.0.2"));

    let first = fetch(&trusted, page_request("site.test", "/", None, &https)).await;
    let token = injected(&first);
    let cookie = session_cookie(&first).expect("cookie");
    assert_eq!(cookie.name, HOST_COOKIE);
    assert!(cookie.has("Secure"), "{cookie:?}");
    assert!(cookie.has("HttpOnly") && cookie.attr("SameSite").as_deref() == Some("Lax"));
    assert_eq!(cookie.attr("Path").as_deref(), Some("/"));
    assert!(cookie.has("Max-Age") && !cookie.has("Domain"), "{cookie:?}");

    let again = fetch(
        &trusted,
        page_request("site.test", "/", Some(&cookie.pair()), &https),
    )
    .await;
    assert_eq!(injected(&again), token);
    assert!(again.all("set-cookie").is_empty());
    // Over HTTPS the plain name does not count (a sibling subdomain or plain
    // HTTP could have planted it): a new session.
    let plain = format!("{COOKIE}={}", cookie.value);
    let planted = fetch(
        &trusted,
        page_request("site.test", "/", Some(&plain), &https),
    )
    .await;
    assert_ne!(injected(&planted), token);
    assert_eq!(
        session_cookie(&planted).map(|c| c.name).as_deref(),
        Some(HOST_COOKIE)
    );
    assert_eq!(emu.calls(GET_TOKEN), 2);

    // The same header from a peer that is not trusted says nothing.
    let untrusted = http1_from(proxy.addr, ip("127.0.0.3"));
    let got = fetch(&untrusted, page_request("site.test", "/", None, &https)).await;
    injected(&got);
    let cookie = session_cookie(&got).expect("cookie");
    assert_eq!(cookie.name, COOKIE);
    assert!(!cookie.has("Secure"));
}

// 2. The proxy's cookie stays between the browser and the proxy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_never_reaches_the_upstream() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let spec = ProxySpec {
        token: "budget = \"5s\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);
    let first = load(&c, None).await;
    let token = injected(&first);
    let sid = session_cookie(&first).expect("cookie").value;

    // Two Cookie lines, ours in both spellings among the site's own cookies.
    let line1 = format!("a=1; {COOKIE}={sid}; theirs=\"x; y\"; b=2");
    let line2 = format!("{HOST_COOKIE}={sid};c=3;  d=4");
    let theirs = ["a=1; theirs=\"x; y\"; b=2", "c=3;  d=4"];
    let req = |path: &str| {
        client::request(http::Method::GET, "site.test", path)
            .header("cookie", &line1)
            .header("cookie", &line2)
            .body(client::empty())
            .expect("request")
    };

    // A page: the session is read (same token), the cookie is not forwarded.
    let page = fetch(&c, req("/")).await;
    assert_eq!(injected(&page), token);
    let seen = origin.last_request();
    assert_eq!(seen.path, "/");
    assert_eq!(
        seen.all("cookie"),
        theirs,
        "other cookies byte for byte, in order"
    );

    // Non-HTML requests: JSON, and the echo that shows what the origin got.
    let json = fetch(&c, req("/data.json")).await;
    assert_eq!(json.body, r#"{"ok":true}"#.as_bytes());
    assert_eq!(origin.last_request().all("cookie"), theirs);
    let echo = fetch(&c, req("/echo")).await.echo();
    assert_eq!(echo.all("cookie"), theirs);
    assert!(
        !echo.headers.iter().any(|(_, v)| v.contains(&sid)),
        "{echo:?}"
    );

    // Only our cookie: no Cookie header at all upstream.
    let alone = client::request(http::Method::GET, "site.test", "/echo")
        .header("cookie", format!("{COOKIE}={sid}"))
        .body(client::empty())
        .expect("request");
    assert!(!fetch(&c, alone).await.echo().has("cookie"));
    // The token endpoint is the proxy's own: never forwarded.
    let ep = fetch(
        &c,
        page_request(
            "site.test",
            "/api/chathub/token",
            Some(&format!("{COOKIE}={sid}")),
            &[],
        ),
    )
    .await;
    assert_eq!(ep.status, 200);
    assert_eq!(origin.count("GET", "/api/chathub/token"), 0);
    assert!(
        origin
            .requests()
            .iter()
            .all(|r| r.all("cookie").iter().all(|v| !v.contains(&sid)))
    );
}

// 3. Tokens per session and per organization.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_their_own_tokens_and_each_organization_its_own() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let routes = support_route()
        + &route(
            "sales",
            "sales.test",
            "\"Sales\"",
            r#"{ rule = "first-active" }"#,
        );
    let spec = ProxySpec {
        token: "budget = \"5s\"".into(),
        routes,
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);

    let a = load(&c, None).await;
    let b = load(&c, None).await;
    let (ta, tb) = (injected(&a), injected(&b));
    let (ca, cb) = (
        session_cookie(&a).expect("a").pair(),
        session_cookie(&b).expect("b").pair(),
    );
    assert_ne!(ca, cb);
    assert_ne!(ta, tb, "two sessions, two tokens");
    assert_eq!(operator_and_org(&ta), (21, 6));
    assert_eq!(operator_and_org(&tb), (21, 6));

    // Session A on the Sales site: Sales' token (Alex, 31, organization 7).
    let sales = fetch(&c, page_request("sales.test", "/", Some(&ca), &[])).await;
    let ts = injected(&sales);
    assert!(
        sales.all("set-cookie").is_empty(),
        "the session carries over"
    );
    assert_eq!(operator_and_org(&ts), (31, 7));
    assert_valid(&emu, &ts, 31).await;
    // Back on the first site: its token again, from the cache.
    let back = fetch(&c, page_request("site.test", "/other", Some(&ca), &[])).await;
    assert_eq!(injected(&back), ta);
    let again = fetch(&c, page_request("sales.test", "/other", Some(&ca), &[])).await;
    assert_eq!(injected(&again), ts);
    assert_eq!(emu.calls(GET_TOKEN), 3);
}

// 4. Fail-open.

/// ChatHub fails in `fault`'s way while pages keep loading, through two
/// proxies: one plain, one with `inject.fallback_html`. Pages come out
/// complete with status 200 and no tag (or the fallback block), the breaker
/// opens and stops the calls, a cached session keeps its widget, and once
/// ChatHub recovers the widget comes back by itself.
async fn fail_open(fault: Fault) {
    let emu = emulator().await;
    let origin = html_origin().await;
    let slow = matches!(fault, Fault::Slow(_));
    // Slow: the page's budget runs out long before ChatHub answers, and the
    // account's timeout turns the slowness into failures the breaker counts.
    let budget = if slow { "150ms" } else { "5s" };
    let spec = ProxySpec {
        token: format!("budget = \"{budget}\"\nbreaker_failures = 2\nbreaker_open_for = \"500ms\""),
        account: if slow {
            "request_timeout = \"1s\"".into()
        } else {
            String::new()
        },
        routes: route(
            "support",
            "site.test",
            "6",
            r#"{ rule = "fixed", id = 21 }"#,
        ),
        ..Default::default()
    };
    let with_fallback = ProxySpec {
        inject: format!("fallback_html = '{FALLBACK}'"),
        ..spec.clone()
    };
    let plain = Proxy::start(spec.config(&emu, &origin)).await;
    let fb = Proxy::start(with_fallback.config(&emu, &origin)).await;
    let (pc, fc) = (http1(plain.addr), http1(fb.addr));
    let admin = plain.admin.expect("admin listener");

    // A session served while ChatHub is well.
    let warm = fresh_session();
    let warm_token = injected(&load(&pc, Some(&warm)).await);
    injected(&load(&fc, Some(&warm)).await);

    emu.set_fault(fault);
    let allowed: &[&str] = if slow {
        &["token_budget", "token_unavailable"]
    } else {
        &["token_unavailable"]
    };
    let fallback_page = page_with(FALLBACK);
    for _ in 0..4 {
        let reason = served_as_is(&load(&pc, None).await);
        assert!(allowed.contains(&reason.as_str()), "{fault:?}: {reason}");
        let got = load(&fc, None).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.text(),
            fallback_page,
            "{fault:?}: the fallback block instead of the widget"
        );
        let reason = skip_reason(&got).unwrap_or_default();
        assert!(allowed.contains(&reason.as_str()), "{fault:?}: {reason}");
    }
    // Each fallback page is counted once, as `fallback` with the reason: not
    // also as `injected`, nor as `skipped`.
    let outcomes = inject_outcomes(&fb.metrics.render());
    let fallbacks: f64 = allowed
        .iter()
        .filter_map(|r| outcomes.get(&("fallback".to_owned(), (*r).to_owned())))
        .sum();
    assert_eq!(fallbacks, 4.0, "{fault:?}: {outcomes:?}");
    assert_eq!(
        outcomes.get(&("injected".to_owned(), String::new())),
        Some(&1.0),
        "{fault:?}: only the warm page got the widget: {outcomes:?}"
    );
    assert!(
        !outcomes.keys().any(|(o, _)| o == "skipped"),
        "{fault:?}: {outcomes:?}"
    );
    // The cached session is not affected.
    assert_eq!(injected(&load(&pc, Some(&warm)).await), warm_token);

    // The breaker opens (Slow: once the timed-out mints have reported)...
    let open = poll(Duration::from_secs(10), || async {
        (metric(&admin_metrics(admin).await, "chathub_proxy_breaker_open") == Some(1.0))
            .then_some(())
    })
    .await;
    assert!(
        open.is_some(),
        "{fault:?}: breaker never opened:\n{}",
        admin_metrics(admin).await
    );
    // ...and ChatHub stops getting calls while pages keep being served.
    let before = api_calls(&emu);
    let refused = plain.metrics.token_event_count("breaker_open");
    for _ in 0..20 {
        let reason = served_as_is(&load(&pc, None).await);
        assert!(allowed.contains(&reason.as_str()), "{fault:?}: {reason}");
    }
    // At most a half-open trial or two get through, not one call per page.
    let during = api_calls(&emu) - before;
    assert!(
        during <= 2,
        "{fault:?}: {during} ChatHub calls for 20 pages with the breaker open"
    );
    assert!(plain.metrics.token_event_count("breaker_open") >= refused + 18);

    // ChatHub recovers: after breaker_open_for a trial closes the breaker and
    // the widget is back without anyone doing anything.
    emu.set_fault(Fault::None);
    for (name, c) in [("plain", &pc), ("fallback", &fc)] {
        let back = fresh_session();
        let token = poll(Duration::from_secs(10), || async {
            tag_token(&load(c, Some(&back)).await.body)
        })
        .await
        .unwrap_or_else(|| panic!("{fault:?}: {name} proxy never injected again"));
        assert_valid(&emu, &token, 21).await;
    }
    let closed = poll(Duration::from_secs(5), || async {
        (metric(&admin_metrics(admin).await, "chathub_proxy_breaker_open") == Some(0.0))
            .then_some(())
    })
    .await;
    assert!(closed.is_some(), "{fault:?}: breaker still open");
    injected(&load(&pc, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_chathub_is_down() {
    fail_open(Fault::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_chathub_is_slow() {
    fail_open(Fault::Slow(Duration::from_secs(2))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_chathub_answers_500() {
    fail_open(Fault::Error500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_chathub_rate_limits() {
    fail_open(Fault::TooMany {
        retry_after_secs: 1,
    })
    .await;
}

// 5. The cold-mint budget.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_mint_past_the_budget_fills_the_cache_for_the_next_page() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let spec = ProxySpec {
        token: "budget = \"100ms\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);
    emu.set_fault(Fault::Slow(Duration::from_millis(400)));
    // A returning visitor whose token is not cached (the first-visit case,
    // where the cookie has to come with the skipped page, is the next test).
    let session = fresh_session();
    let first = load(&c, Some(&session)).await;
    assert_eq!(served_as_is(&first), "token_budget");
    assert!(proxy.metrics.token_event_count("budget_exceeded") >= 1);
    // The mint carries on in the background; a page a moment later has it.
    let token = poll(Duration::from_secs(10), || async {
        tag_token(&load(&c, Some(&session)).await.body)
    })
    .await
    .expect("the background mint never reached the cache");
    emu.set_fault(Fault::None);
    assert_valid(&emu, &token, 21).await;
    assert_eq!(injected(&load(&c, Some(&session)).await), token);
    assert_eq!(
        emu.calls(GET_TOKEN),
        1,
        "pages waiting for the same mint share it"
    );
}

/// Regression: a first page whose token missed the budget went out without
/// the session cookie, so the next page started another session and another
/// mint, and with ChatHub slower than the budget no visitor ever got the
/// widget while every page cost a get-token call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_page_past_the_budget_still_sets_the_session_cookie() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let spec = ProxySpec {
        token: "budget = \"100ms\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);
    emu.set_fault(Fault::Slow(Duration::from_millis(400)));
    let first = load(&c, None).await;
    assert_eq!(served_as_is(&first), "token_budget");
    let cookie = session_cookie(&first)
        .expect("the page skipped for the token budget must still set the session cookie");
    let token = poll(Duration::from_secs(10), || async {
        tag_token(&load(&c, Some(&cookie.pair())).await.body)
    })
    .await
    .expect("the background mint never reached the cache");
    emu.set_fault(Fault::None);
    assert_valid(&emu, &token, 21).await;
    assert_eq!(emu.calls(GET_TOKEN), 1);
}

// 6. The token endpoint.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_answers_the_widget_token_manager() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let spec = ProxySpec {
        token: "budget = \"5s\"".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);
    let page = load(&c, None).await;
    let token = injected(&page);
    let cookie = session_cookie(&page).expect("cookie").pair();
    // A cross-origin caller announces itself; it must get no CORS grant.
    let cors = [
        ("origin", "https://evil.example"),
        ("sec-fetch-mode", "cors"),
    ];

    let got = fetch(
        &c,
        page_request("site.test", "/api/chathub/token", Some(&cookie), &cors),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.headers["cache-control"], "no-store");
    assert!(
        got.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let cors_headers: Vec<_> = got
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors_headers.is_empty(), "{cors_headers:?}");
    assert!(got.all("set-cookie").is_empty());
    // What WidgetTokenManager reads: data.token and new Date(data.expiresAt).
    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON");
    assert_eq!(body["token"], token.as_str(), "the page's token");
    let expires = body["expiresAt"].as_str().expect("expiresAt is a string");
    let at = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("expiresAt {expires:?} is not RFC 3339: {e}"));
    let exp = claims(&token)["exp"].as_i64().expect("exp");
    assert_eq!(
        at.unix_timestamp(),
        exp,
        "expiresAt is the token's own expiry"
    );
    assert!(at > time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    assert_eq!(
        emu.calls(GET_TOKEN),
        1,
        "the endpoint serves the cached token"
    );

    // Without the session cookie (or with only other cookies): 401.
    for cookie in [None, Some("a=1; other=2")] {
        let got = fetch(
            &c,
            page_request("site.test", "/api/chathub/token", cookie, &cors),
        )
        .await;
        assert_eq!(got.status, 401, "{cookie:?}");
        assert_eq!(got.headers["cache-control"], "no-store");
        assert!(
            got.headers
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-"))
        );
        assert!(!got.text().contains(&token));
    }
    // The CORS preflight is not answered with a grant either.
    let preflight = client::request(http::Method::OPTIONS, "site.test", "/api/chathub/token")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .body(client::empty())
        .expect("request");
    let got = fetch(&c, preflight).await;
    assert!(
        got.headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        got.headers
    );
    assert_eq!(
        origin.count("GET", "/api/chathub/token") + origin.count("OPTIONS", "/api/chathub/token"),
        0
    );
}

// 7. Replicas sharing tokens through Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_give_a_session_one_token_minted_once() {
    require_redis().await;
    let emu = emulator().await;
    let origin = html_origin().await;
    let spec = ProxySpec {
        token: "budget = \"5s\"".into(),
        tail: redis_section("redis://127.0.0.1:6379", &unique_prefix("replicas")),
        ..Default::default()
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Proxy::start(spec.config(&emu, &origin)).await);
    }
    let clients: Vec<TestClient> = replicas.iter().map(|p| http1(p.addr)).collect();

    // Ten sessions, each loading a page on all three replicas at once.
    let sessions: Vec<String> = (0..10).map(|_| fresh_session()).collect();
    let mut tasks = Vec::new();
    for s in &sessions {
        for c in &clients {
            let (c, s) = (c.clone(), s.clone());
            tasks.push(tokio::spawn(
                async move { injected(&load(&c, Some(&s)).await) },
            ));
        }
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("page task"));
    }
    for (i, per_session) in tokens.chunks(3).enumerate() {
        assert!(
            per_session.iter().all(|t| *t == per_session[0]),
            "session {i}: replicas disagree"
        );
    }
    let distinct: HashSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), 10);
    assert_eq!(
        emu.calls(GET_TOKEN),
        10,
        "one mint per session across the replicas"
    );

    // A new visitor: the cookie set by one replica works on the others, in turn.
    let first = load(&clients[0], None).await;
    let token = injected(&first);
    let cookie = session_cookie(&first).expect("cookie").pair();
    for c in clients.iter().chain(clients.iter()) {
        let got = load(c, Some(&cookie)).await;
        assert_eq!(injected(&got), token);
        assert!(got.all("set-cookie").is_empty());
    }
    assert_valid(&emu, &token, 21).await;
    assert_eq!(emu.calls(GET_TOKEN), 11);
    let shared_hits: u64 = replicas
        .iter()
        .map(|p| p.metrics.token_event_count("shared_hit"))
        .sum();
    assert!(shared_hits >= 20 + 2, "{shared_hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_serving_tokens_from_their_own_cache_when_redis_is_down() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let spec = ProxySpec {
        token: "budget = \"5s\"".into(),
        tail: redis_section(&url, &unique_prefix("redis-down")),
        ..Default::default()
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Proxy::start(spec.config(&emu, &origin)).await);
    }
    let clients: Vec<TestClient> = replicas.iter().map(|p| http1(p.addr)).collect();
    let session = fresh_session();
    let mut first = Vec::new();
    for c in &clients {
        let token = injected(&load(c, Some(&session)).await);
        assert_valid(&emu, &token, 21).await;
        first.push(token);
    }
    // Nothing shared: each replica minted its own, and serves it again from
    // its local cache.
    assert_eq!(emu.calls(GET_TOKEN), 3);
    for (c, token) in clients.iter().zip(&first) {
        assert_eq!(&injected(&load(c, Some(&session)).await), token);
    }
    assert_eq!(emu.calls(GET_TOKEN), 3);
    for p in &replicas {
        assert!(p.metrics.token_event_count("redis_error") >= 1);
    }
}

// 9. The identity rule behind a trusted proxy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_header_is_believed_only_from_a_trusted_proxy() {
    let emu = emulator().await;
    let origin = html_origin().await;
    let rule = r#"{ rule = "identity", header = "X-Forwarded-User", map = { "alice@example.com" = 22, "bob@example.com" = 21 } }"#;
    let spec = ProxySpec {
        server: "trusted_proxies = [\"127.0.0.2\"]".into(),
        token: "budget = \"5s\"".into(),
        routes: route("staff", "site.test", "6", rule),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let trusted = http1_from(proxy.addr, ip("127.0.0.2"));
    let untrusted = http1_from(proxy.addr, ip("127.0.0.3"));
    let alice = [("x-forwarded-user", "alice@example.com")];
    let session = fresh_session();

    // From the auth proxy in front: Alice's operator (Omar, 22).
    let got = fetch(
        &trusted,
        page_request("site.test", "/", Some(&session), &alice),
    )
    .await;
    let token = injected(&got);
    assert_eq!(operator_and_org(&token), (22, 6));
    assert_valid(&emu, &token, 22).await;
    let bob = fetch(
        &trusted,
        page_request(
            "site.test",
            "/",
            None,
            &[("x-forwarded-user", "bob@example.com")],
        ),
    )
    .await;
    assert_eq!(operator_and_org(&injected(&bob)).0, 21);
    let calls = emu.calls(GET_TOKEN);
    assert_eq!(calls, 2);

    // From anywhere else the header is the client's own claim: ignored, even
    // with a session that holds Alice's token.
    for cookie in [None, Some(session.as_str())] {
        let got = fetch(&untrusted, page_request("site.test", "/", cookie, &alice)).await;
        assert_eq!(served_as_is(&got), "no_identity", "{cookie:?}");
        assert!(!got.text().contains(&token));
    }
    // A trusted peer that sends no identity: no widget either.
    let got = fetch(
        &trusted,
        page_request("site.test", "/", Some(&session), &[]),
    )
    .await;
    assert_eq!(served_as_is(&got), "no_identity");
    assert_eq!(emu.calls(GET_TOKEN), calls, "a skip mints nothing");
    // The token endpoint applies the same rule.
    let ep = fetch(
        &untrusted,
        page_request("site.test", "/api/chathub/token", Some(&session), &alice),
    )
    .await;
    assert_eq!(ep.status, 401, "{}", ep.text());
    assert!(!ep.text().contains(&token));
    let ep = fetch(
        &trusted,
        page_request("site.test", "/api/chathub/token", Some(&session), &alice),
    )
    .await;
    assert_eq!(ep.status, 200);
    assert!(ep.text().contains(&token));
}

// 8. No secret in the logs, at TRACE.

/// Env var that makes [`secrets_scenario`] run (in the child process only).

#[test]
fn no_token_password_or_session_id_in_trace_logs_of_the_proxy_path() {
    // tracing caches each call site's interest process-wide, so a capturing
    // subscriber next to other tests running in parallel would miss events.
    // The scenario runs alone in a child process of this test binary, with a
    // global subscriber writing to a file (as tokens.rs does).
    let Captured { logs, secrets, .. } =
        support::secrets::run_child("proxy_tokens::secrets_scenario");
    // The capture works, and saw the request path, the mints, the failures.
    for expected in [
        "minted an operator token",
        "circuit breaker open",
        "redis unavailable",
        "path=/api/chathub/token",
        "TRACE",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    assert!(secrets.len() >= 15, "{secrets:?}");
    for s in secrets.iter().map(String::as_str) {
        assert!(s.len() >= 16, "too short to search for: {s:?}");
        if let Some(line) = logs.lines().find(|l| l.contains(s)) {
            panic!("a secret reached the logs:\n{line}");
        }
    }
}

/// The body of [`no_token_password_or_session_id_in_trace_logs_of_the_proxy_path`];
/// does nothing unless started by it.
#[test]
#[ignore = "run in a child process by no_token_password_or_session_id_in_trace_logs_of_the_proxy_path"]
fn secrets_scenario() {
    // Everything at TRACE, the proxy's dependencies included; the emulator is
    // the far side and may say what it likes.
    support::secrets::child("trace,chathub_proxy::emulator=off", secrets_scenario_body);
}

async fn secrets_scenario_body() -> Vec<String> {
    let password = format!("canary-password-{:x}", rand::random::<u64>());
    let mut seed = chathub_proxy::emulator::Seed::demo();
    seed.companies[0].password = password.clone();
    let emu = emulator_with(seed).await;
    let origin = html_origin().await;
    let identity =
        r#"{ rule = "identity", header = "X-Forwarded-User", by_name = true, provision = true }"#;
    let routes = support_route()
        + &route(
            "sales",
            "sales.test",
            "\"Sales\"",
            r#"{ rule = "first-active" }"#,
        )
        + &route("staff", "staff.test", "6", identity);
    let redis_pw = format!("canary-redis-{:x}", rand::random::<u64>());
    let spec = ProxySpec {
        server: "trusted_proxies = [\"127.0.0.2\"]".into(),
        token: "budget = \"5s\"\nbreaker_failures = 2\nbreaker_open_for = \"300ms\"".into(),
        tail: redis_section(
            &format!("redis://:{redis_pw}@127.0.0.1:{}", closed_port()),
            &unique_prefix("secrets"),
        ),
        routes,
        password: password.clone(),
        ..Default::default()
    };
    let proxy = Proxy::start(spec.config(&emu, &origin)).await;
    let c = http1(proxy.addr);
    let trusted = http1_from(proxy.addr, ip("127.0.0.2"));
    let mut secrets = vec![password, redis_pw];
    let keep = |token: &str, secrets: &mut Vec<String>| {
        secrets.push(token.to_owned());
        // The signature alone identifies the token too.
        secrets.push(token.rsplit('.').next().unwrap_or_default().to_owned());
    };

    // New sessions on each site, their second pages, and the token endpoint.
    for (client, host, extra) in [
        (&c, "site.test", &[][..]),
        (&c, "sales.test", &[][..]),
        (
            &trusted,
            "staff.test",
            &[("x-forwarded-user", "Canary Person")][..],
        ),
        (&trusted, "site.test", &[("x-forwarded-proto", "https")][..]),
    ] {
        let first = fetch(client, page_request(host, "/", None, extra)).await;
        let token = must_token(&first);
        keep(&token, &mut secrets);
        let cookie = session_cookie(&first).expect("cookie");
        secrets.push(cookie.value.clone());
        let again = fetch(
            client,
            page_request(host, "/other", Some(&cookie.pair()), extra),
        )
        .await;
        assert_eq!(must_token(&again), token);
        let ep = fetch(
            client,
            page_request(host, "/api/chathub/token", Some(&cookie.pair()), extra),
        )
        .await;
        assert_eq!(ep.status, 200, "{}", ep.text());
        // The cookie on a request that is no page, passed through to the origin.
        let echo = fetch(
            client,
            page_request(
                host,
                "/echo",
                Some(&format!("a=1; {}", cookie.pair())),
                extra,
            ),
        )
        .await;
        assert_eq!(echo.status, 200);
    }
    let ep = fetch(
        &c,
        page_request("site.test", "/api/chathub/token", None, &[]),
    )
    .await;
    assert_eq!(ep.status, 401);

    // Failures, the breaker and a skipped page with a session cookie log too.
    emu.set_fault(Fault::Error500);
    for _ in 0..4 {
        let s = fresh_session();
        secrets.push(
            s.split_once('=')
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default(),
        );
        let got = load(&c, Some(&s)).await;
        assert_eq!(got.status, 200);
    }
    emu.set_fault(Fault::None);
    secrets
}
