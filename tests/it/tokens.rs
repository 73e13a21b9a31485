//! The token layer against the ChatHub emulator over real HTTP: single flight,
//! refresh ahead of expiry, the safety margin, per-organization tokens, every
//! operator rule, the circuit breaker, tokens shared through Redis, the token
//! endpoint, and no secret in the logs.

use crate::support;
use crate::support::harness::{config, substitute};
use crate::support::secrets::Captured;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chathub_proxy::config::{Config, Route};
use chathub_proxy::emulator::{Emulator, Fault, Seed};
use chathub_proxy::metrics::{Metrics, SharedMetrics};
use chathub_proxy::session::{self, SessionId};
use chathub_proxy::token::{IssuedToken, PendingToken, TokenSkip, Tokens};
use http::header::{self, HeaderValue};
use http_body_util::BodyExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GET_TOKEN: &str = "/api/operator/get-token";
const SYNCHRONIZE: &str = "/api/operator/synchronize";
const OPERATORS: &str = "/api/operator";

/// The demo company's password, in a file the config points at.
fn password_file() -> String {
    let path = std::env::temp_dir().join(format!("chathub-proxy-tokens-{}.pw", std::process::id()));
    if !path.exists() {
        std::fs::write(&path, "demo-password").unwrap();
    }
    path.display().to_string()
}

async fn emulator() -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), Seed::demo())
        .await
        .unwrap()
}

/// `[token]` settings, then one route per `(name, organization, operator rule)`.
fn cfg(emu: &Emulator, token: &str, extra: &str, routes: &[(&str, &str, &str)]) -> Config {
    let mut toml = substitute(
        r#"
[token]
{token}

[accounts.main]
base_url = "{emu}"
login = "demo"
password_file = "{pw}"
request_timeout = "5s"

{extra}
"#,
        &[
            ("token", token),
            ("emu", &emu.url()),
            ("pw", &password_file()),
            ("extra", extra),
        ],
    );
    for (name, org, rule) in routes {
        toml.push_str(&format!(
            r#"
[[routes]]
name = "{name}"
hosts = ["{name}.test"]
upstream = "http://127.0.0.1:9"
account = "main"
organization = {org}
operator = {rule}
"#
        ));
    }
    config(&toml)
}

fn tokens(cfg: &Config) -> (Tokens, SharedMetrics) {
    let metrics: SharedMetrics = Arc::new(Metrics::new());
    (Tokens::new(cfg, metrics.clone()).unwrap(), metrics)
}

fn route(cfg: &Config, name: &str) -> Arc<Route> {
    cfg.routes.iter().find(|r| r.name == name).unwrap().clone()
}

/// The emulator's JWT claims (it signs HS256 with `operator_id` and `organization_id`).
fn claims(t: &IssuedToken) -> serde_json::Value {
    let payload = t.token.expose().split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn operator_of(t: &IssuedToken) -> i64 {
    claims(t)["operator_id"].as_i64().unwrap()
}

/// A page's token lookup on a task of its own, as the proxy runs one that has
/// to wait: for many lookups at once.
fn spawn_lookup(
    tokens: &Tokens,
    route: Arc<Route>,
    session: SessionId,
    identity: Option<String>,
) -> tokio::task::JoinHandle<Result<IssuedToken, TokenSkip>> {
    let tokens = tokens.clone();
    tokio::spawn(async move { tokens.token_for(&route, &session, identity).await })
}

/// Wait (bounded) until `f` holds; false if it never did.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

const FIRST_ACTIVE: &str = r#"{ rule = "first-active" }"#;

/// A warm hit is answered on the spot (no task, no join); a cold lookup runs
/// on a task of its own and finishes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_token_is_ready_at_once_and_a_cold_one_runs_on_its_own_task() {
    let emu = emulator().await;
    let cfg = cfg(&emu, "", "", &[("support", "6", FIRST_ACTIVE)]);
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    let s = session::new_id();
    // ChatHub answers after a pause: without one, a fast emulator and a
    // runtime whose other worker drives the sockets could let all of a
    // mint's calls complete inside the first poll (two CI runs saw it).
    emu.set_fault(Fault::Slow(Duration::from_millis(20)));
    let cold = match tokens.start_token_for(r.clone(), s, None) {
        PendingToken::Running(handle) => handle.await.unwrap().unwrap(),
        PendingToken::Ready(r) => panic!(
            "a cold lookup that calls ChatHub cannot finish on its first poll: {}",
            match r {
                Ok(_) => "a token".to_owned(),
                Err(e) => format!("{e:?}"),
            }
        ),
    };
    emu.set_fault(Fault::None);
    assert_eq!(metrics.token_event_count("mint"), 1);
    match tokens.start_token_for(r.clone(), s, None) {
        PendingToken::Ready(Ok(warm)) => assert_eq!(warm.token.expose(), cold.token.expose()),
        PendingToken::Ready(Err(e)) => panic!("warm lookup failed: {e}"),
        PendingToken::Running(_) => panic!("a warm lookup should not need a task"),
    }
    assert_eq!(metrics.token_event_count("hit"), 1);
    assert_eq!(emu.calls(GET_TOKEN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_page_loads_of_one_session_mint_once() {
    let emu = emulator().await;
    let cfg = cfg(&emu, "", "", &[("support", "6", FIRST_ACTIVE)]);
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    let s = session::new_id();
    let handles: Vec<_> = (0..1000)
        .map(|_| spawn_lookup(&tokens, r.clone(), s, None))
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        seen.insert(h.await.unwrap().unwrap().token.expose().to_owned());
    }
    assert_eq!(seen.len(), 1, "every page got the same token");
    assert_eq!(emu.calls(GET_TOKEN), 1);
    assert_eq!(
        emu.calls(OPERATORS),
        1,
        "the operator list is fetched once too"
    );
    assert_eq!(metrics.token_event_count("mint"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sessions_mint_once_each() {
    let emu = emulator().await;
    let cfg = cfg(
        &emu,
        "",
        "",
        &[("support", "6", r#"{ rule = "fixed", id = 22 }"#)],
    );
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    let sessions: Vec<SessionId> = (0..500).map(|_| session::new_id()).collect();
    // Each session asks twice at once, then once more later.
    let handles: Vec<_> = sessions
        .iter()
        .chain(sessions.iter())
        .map(|s| spawn_lookup(&tokens, r.clone(), *s, None))
        .collect();
    let mut per_session: HashMap<usize, HashSet<String>> = HashMap::new();
    for (i, h) in handles.into_iter().enumerate() {
        let t = h.await.unwrap().unwrap();
        assert_eq!(operator_of(&t), 22);
        per_session
            .entry(i % 500)
            .or_default()
            .insert(t.token.expose().to_owned());
    }
    assert!(per_session.values().all(|s| s.len() == 1));
    for s in &sessions[..10] {
        tokens.token_for(&r, s, None).await.unwrap();
    }
    assert_eq!(emu.calls(GET_TOKEN), 500);
    assert_eq!(metrics.token_event_count("mint"), 500);
    assert!(metrics.token_event_count("hit") >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_in_the_background_ahead_of_expiry() {
    let emu = emulator().await;
    let token = "lifetime = \"8s\"\nrefresh_ahead = \"6s\"\nsafety_margin = \"1s\"";
    let cfg = cfg(&emu, token, "", &[("support", "6", FIRST_ACTIVE)]);
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    let s = session::new_id();
    let first = tokens.token_for(&r, &s, None).await.unwrap();
    assert_eq!(emu.calls(GET_TOKEN), 1);
    // Wait until less than refresh_ahead is left (expiry is whole seconds, so
    // at most 8 s away; 6 s must be reached within ~2 s).
    let due = first.expires_at - time::Duration::seconds(6) + time::Duration::milliseconds(100);
    let wait = (due - time::OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
    // Due for refresh: the cached token is still served at once...
    let again = tokens.token_for(&r, &s, None).await.unwrap();
    assert_eq!(again.token, first.token);
    // ...and exactly one refresh runs in the background, however many hits.
    for _ in 0..20 {
        tokens.token_for(&r, &s, None).await.unwrap();
    }
    assert!(eventually(|| metrics.token_event_count("refresh") == 1).await);
    assert_eq!(emu.calls(GET_TOKEN), 2);
    let fresh = tokens.token_for(&r, &s, None).await.unwrap();
    assert_ne!(fresh.token, first.token);
    assert!(fresh.expires_at > first.expires_at);
    assert_eq!(
        emu.calls(GET_TOKEN),
        2,
        "the refreshed token is served from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_hands_out_a_token_inside_the_safety_margin() {
    let emu = emulator().await;
    // No refresh ahead: only the margin forces a new token.
    let token = "lifetime = \"5s\"\nrefresh_ahead = \"0s\"\nsafety_margin = \"2s\"";
    let cfg = cfg(&emu, token, "", &[("support", "6", FIRST_ACTIVE)]);
    let (tokens, _) = tokens(&cfg);
    let r = route(&cfg, "support");
    let s = session::new_id();
    let first = tokens.token_for(&r, &s, None).await.unwrap();
    let margin_at =
        first.expires_at - time::Duration::seconds(2) + time::Duration::milliseconds(50);
    let wait = (margin_at - time::OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
    let second = tokens.token_for(&r, &s, None).await.unwrap();
    assert_ne!(second.token, first.token);
    assert!(second.expires_at - time::OffsetDateTime::now_utc() > time::Duration::seconds(2));
    assert_eq!(emu.calls(GET_TOKEN), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_another_organization_gets_that_organizations_token() {
    let emu = emulator().await;
    let cfg = cfg(
        &emu,
        "",
        "",
        &[
            ("support", "6", FIRST_ACTIVE),
            ("sales", "\"Sales\"", FIRST_ACTIVE),
        ],
    );
    let (tokens, _) = tokens(&cfg);
    tokens.resolve().await.unwrap();
    let s = session::new_id();
    let support = tokens
        .token_for(&route(&cfg, "support"), &s, None)
        .await
        .unwrap();
    let sales = tokens
        .token_for(&route(&cfg, "sales"), &s, None)
        .await
        .unwrap();
    assert_eq!(
        (
            operator_of(&support),
            claims(&support)["organization_id"].as_i64()
        ),
        (21, Some(6))
    );
    assert_eq!(
        (
            operator_of(&sales),
            claims(&sales)["organization_id"].as_i64()
        ),
        (31, Some(7))
    );
    assert_eq!(emu.calls(GET_TOKEN), 2);
    // Back on the first site: its token again, from the cache.
    let back = tokens
        .token_for(&route(&cfg, "support"), &s, None)
        .await
        .unwrap();
    assert_eq!(back.token, support.token);
    assert_eq!(emu.calls(GET_TOKEN), 2);
}

#[tokio::test]
async fn unknown_organization_names_fail_resolution_naming_the_route() {
    let emu = emulator().await;
    let cfg = cfg(&emu, "", "", &[("ghost", "\"No Such Org\"", FIRST_ACTIVE)]);
    let (tokens, _) = tokens(&cfg);
    let err = tokens.resolve().await.unwrap_err().to_string();
    assert!(
        err.contains("ghost") && err.contains("No Such Org"),
        "{err}"
    );
    let skip = tokens
        .token_for(&route(&cfg, "ghost"), &session::new_id(), None)
        .await
        .unwrap_err();
    assert_eq!(skip.reason(), "unknown_organization");
    assert_eq!(emu.calls(GET_TOKEN), 0);
}

#[tokio::test]
async fn fixed_and_first_active_rules() {
    let emu = emulator().await;
    let cfg = cfg(
        &emu,
        "",
        "",
        &[
            ("fixed", "6", r#"{ rule = "fixed", id = 22 }"#),
            ("first", "\"customer support\"", FIRST_ACTIVE),
        ],
    );
    let (tokens, _) = tokens(&cfg);
    let s = session::new_id();
    assert_eq!(
        operator_of(
            &tokens
                .token_for(&route(&cfg, "fixed"), &s, None)
                .await
                .unwrap()
        ),
        22
    );
    assert_eq!(
        operator_of(
            &tokens
                .token_for(&route(&cfg, "first"), &s, None)
                .await
                .unwrap()
        ),
        21
    );
    // Jane goes inactive; once the list is refetched, Omar is first.
    emu.set_operator_status(21, 1);
    let fresh = tokens_again(&cfg);
    assert_eq!(
        operator_of(
            &fresh
                .token_for(&route(&cfg, "first"), &s, None)
                .await
                .unwrap()
        ),
        22
    );
}

fn tokens_again(cfg: &Config) -> Tokens {
    tokens(cfg).0
}

#[tokio::test]
async fn spread_is_stable_per_session_and_uses_every_active_operator() {
    let emu = emulator().await;
    let cfg = cfg(&emu, "", "", &[("support", "6", r#"{ rule = "spread" }"#)]);
    let (tokens, _) = tokens(&cfg);
    let other = tokens_again(&cfg);
    let r = route(&cfg, "support");
    let mut used = HashSet::new();
    for _ in 0..40 {
        let s = session::new_id();
        let a = operator_of(&tokens.token_for(&r, &s, None).await.unwrap());
        // Another replica puts the session on the same operator.
        let b = operator_of(&other.token_for(&r, &s, None).await.unwrap());
        assert_eq!(a, b);
        assert!(a == 21 || a == 22, "Ines (23) is inactive, got {a}");
        used.insert(a);
    }
    assert_eq!(used.len(), 2);
}

const IDENTITY: &str = r#"{ rule = "identity", header = "x-user", map = { boss = 32 } }"#;
const IDENTITY_PROVISION: &str =
    r#"{ rule = "identity", header = "x-user", by_name = true, provision = true }"#;

#[tokio::test]
async fn identity_rule_maps_matches_names_and_skips_without_identity() {
    let emu = emulator().await;
    let by_name =
        r#"{ rule = "identity", header = "x-user", by_name = true, map = { boss = 32 } }"#;
    let cfg = cfg(
        &emu,
        "",
        "",
        &[("mapped", "6", IDENTITY), ("named", "6", by_name)],
    );
    let (tokens, _) = tokens(&cfg);
    let s = session::new_id();
    let mapped = route(&cfg, "mapped");
    let named = route(&cfg, "named");
    assert_eq!(
        operator_of(
            &tokens
                .token_for(&mapped, &s, Some("boss".into()))
                .await
                .unwrap()
        ),
        32
    );
    assert_eq!(
        operator_of(
            &tokens
                .token_for(&named, &s, Some("Omar".into()))
                .await
                .unwrap()
        ),
        22
    );
    let skip = |r: Result<IssuedToken, TokenSkip>| r.unwrap_err().reason();
    let calls = emu.calls(GET_TOKEN);
    assert_eq!(
        skip(tokens.token_for(&mapped, &s, None).await),
        "no_identity"
    );
    assert_eq!(
        skip(tokens.token_for(&named, &s, None).await),
        "no_identity"
    );
    // The map alone (by_name off by default when a map is given).
    assert_eq!(
        skip(tokens.token_for(&mapped, &s, Some("Omar".into())).await),
        "unknown_operator"
    );
    assert_eq!(
        skip(tokens.token_for(&named, &s, Some("Nobody".into())).await),
        "unknown_operator"
    );
    assert_eq!(
        skip(tokens.token_for(&named, &s, Some("Ines".into())).await),
        "inactive_operator"
    );
    assert_eq!(
        emu.calls(GET_TOKEN),
        calls,
        "a skip never mints someone else's token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_rule_provisions_a_missing_operator_once() {
    let emu = emulator().await;
    let cfg = cfg(&emu, "", "", &[("support", "6", IDENTITY_PROVISION)]);
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    // Twenty sessions of the same new user at once.
    let handles: Vec<_> = (0..20)
        .map(|_| {
            spawn_lookup(
                &tokens,
                r.clone(),
                session::new_id(),
                Some("Zoe Quinn".into()),
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for h in handles {
        ids.insert(operator_of(&h.await.unwrap().unwrap()));
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(emu.calls(SYNCHRONIZE), 1);
    let zoe: Vec<_> = emu
        .operators(6)
        .into_iter()
        .filter(|o| o.name == "Zoe Quinn")
        .collect();
    assert_eq!(zoe.len(), 1, "exactly one operator created");
    assert_eq!(ids.into_iter().next(), Some(zoe[0].id));
    assert_eq!(metrics.token_event_count("provision"), 1);
    // Another replica finds her by name and creates nobody.
    let other = tokens_again(&cfg);
    let t = other
        .token_for(&r, &session::new_id(), Some("Zoe Quinn".into()))
        .await
        .unwrap();
    assert_eq!(operator_of(&t), zoe[0].id);
    assert_eq!(emu.calls(SYNCHRONIZE), 1);
    // An unusable name is never sent to synchronize.
    let long = "x".repeat(200);
    let skip = tokens
        .token_for(&r, &session::new_id(), Some(long))
        .await
        .unwrap_err();
    assert_eq!(skip.reason(), "bad_identity");
    assert_eq!(emu.calls(SYNCHRONIZE), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_failures_and_recovers_after_a_trial() {
    let emu = emulator().await;
    let token = "breaker_failures = 3\nbreaker_open_for = \"1s\"";
    let cfg = cfg(
        &emu,
        token,
        "",
        &[("support", "6", r#"{ rule = "fixed", id = 21 }"#)],
    );
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    // Warm one session so that a cached token keeps serving during the outage.
    let warm = session::new_id();
    let cached = tokens.token_for(&r, &warm, None).await.unwrap();
    emu.set_fault(Fault::Error500);
    let before = emu.calls(GET_TOKEN);
    for _ in 0..3 {
        let skip = tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap_err();
        assert_eq!(skip.reason(), "chathub_error");
    }
    assert_eq!(emu.calls(GET_TOKEN), before + 3);
    assert!(
        metrics.render().contains("chathub_proxy_breaker_open 1"),
        "{}",
        metrics.render()
    );
    for _ in 0..50 {
        let skip = tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap_err();
        assert_eq!(skip.reason(), "breaker_open");
    }
    assert_eq!(
        emu.calls(GET_TOKEN),
        before + 3,
        "an open breaker calls nobody"
    );
    assert_eq!(
        tokens.token_for(&r, &warm, None).await.unwrap().token,
        cached.token
    );
    // ChatHub recovers; after the open period one trial closes the breaker.
    emu.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tokens
        .token_for(&r, &session::new_id(), None)
        .await
        .unwrap();
    assert_eq!(metrics.token_event_count("breaker_closed"), 1);
    assert!(metrics.render().contains("chathub_proxy_breaker_open 0"));
    for _ in 0..5 {
        tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap();
    }
    assert_eq!(emu.calls(GET_TOKEN), before + 3 + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_half_open_trial_keeps_the_breaker_open() {
    let emu = emulator().await;
    let token = "breaker_failures = 1\nbreaker_open_for = \"500ms\"";
    let cfg = cfg(
        &emu,
        token,
        "",
        &[("support", "6", r#"{ rule = "fixed", id = 21 }"#)],
    );
    let (tokens, metrics) = tokens(&cfg);
    let r = route(&cfg, "support");
    emu.set_fault(Fault::Down);
    assert_eq!(
        tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap_err()
            .reason(),
        "chathub_error"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The trial fails; the next caller is refused without a call.
    assert_eq!(
        tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap_err()
            .reason(),
        "chathub_error"
    );
    let calls = emu.calls(GET_TOKEN);
    assert_eq!(
        tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap_err()
            .reason(),
        "breaker_open"
    );
    assert_eq!(emu.calls(GET_TOKEN), calls);
    assert_eq!(metrics.token_event_count("breaker_opened"), 1);
}

fn redis_extra(prefix: &str, url: &str) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"500ms\"\nlock_ttl = \"5s\"\n"
    )
}

fn unique_prefix(test: &str) -> String {
    format!(
        "chathub-proxy-test:{test}:{}:{:x}:",
        std::process::id(),
        rand::random::<u64>()
    )
}

async fn require_redis() {
    let ok = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok();
    assert!(
        ok,
        "these tests need Redis on 127.0.0.1:6379 (scripts/test starts one): redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_redis_mint_once_per_session() {
    require_redis().await;
    let emu = emulator().await;
    let extra = redis_extra(&unique_prefix("three"), "redis://127.0.0.1:6379");
    let cfg = cfg(&emu, "", &extra, &[("support", "6", FIRST_ACTIVE)]);
    let replicas: Vec<(Tokens, SharedMetrics)> = (0..3).map(|_| tokens(&cfg)).collect();
    for (t, _) in &replicas {
        t.resolve().await.unwrap();
    }
    let r = route(&cfg, "support");
    let sessions: Vec<SessionId> = (0..30).map(|_| session::new_id()).collect();
    // Every session hits all three replicas at the same moment.
    let mut handles = Vec::new();
    for s in &sessions {
        for (t, _) in &replicas {
            handles.push((*s, spawn_lookup(t, r.clone(), *s, None)));
        }
    }
    let mut per_session: HashMap<[u8; 16], HashSet<String>> = HashMap::new();
    for (s, h) in handles {
        per_session
            .entry(*s.as_bytes())
            .or_default()
            .insert(h.await.unwrap().unwrap().token.expose().to_owned());
    }
    assert!(
        per_session.values().all(|t| t.len() == 1),
        "replicas agree on each session's token"
    );
    assert_eq!(emu.calls(GET_TOKEN), 30);
    let shared_hits: u64 = replicas
        .iter()
        .map(|(_, m)| m.token_event_count("shared_hit"))
        .sum();
    assert_eq!(shared_hits, 60);
    // A fourth replica started later serves from Redis without minting.
    let (late, _) = tokens(&cfg);
    let t = late.token_for(&r, &sessions[0], None).await.unwrap();
    assert!(per_session[sessions[0].as_bytes()].contains(t.token.expose()));
    assert_eq!(emu.calls(GET_TOKEN), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_when_redis_is_unreachable() {
    let emu = emulator().await;
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let extra = redis_extra(
        &unique_prefix("down"),
        &format!("redis://127.0.0.1:{closed}"),
    );
    let cfg = cfg(&emu, "", &extra, &[("support", "6", FIRST_ACTIVE)]);
    let (tokens, metrics) = tokens(&cfg);
    tokens.resolve().await.unwrap();
    let r = route(&cfg, "support");
    let s = session::new_id();
    let handles: Vec<_> = (0..100)
        .map(|_| spawn_lookup(&tokens, r.clone(), s, None))
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    for _ in 0..20 {
        tokens
            .token_for(&r, &session::new_id(), None)
            .await
            .unwrap();
    }
    assert_eq!(emu.calls(GET_TOKEN), 21);
    assert!(metrics.token_event_count("redis_error") >= 1);
}

fn token_request(path: &str, cookie: Option<String>) -> http::request::Parts {
    let mut b = http::Request::builder().uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(()).unwrap().into_parts().0
}

async fn json_of(
    resp: http::Response<chathub_proxy::body::Body>,
) -> (http::StatusCode, http::HeaderMap, serde_json::Value) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn token_endpoint_answers_the_widget_token_manager() {
    let emu = emulator().await;
    let cfg = cfg(
        &emu,
        "",
        "",
        &[
            ("support", "6", FIRST_ACTIVE),
            ("sales", "\"Sales\"", FIRST_ACTIVE),
        ],
    );
    let (tokens, _) = tokens(&cfg);
    let support = route(&cfg, "support");
    let s = session::new_id();
    let cookie = Some(format!("a=b; __Host-chathub_sid={}", s.expose()));
    let path = "/api/chathub/token";

    // No session cookie: 401 JSON, no store, no CORS.
    let (status, headers, body) = json_of(
        tokens
            .endpoint(&support, &token_request(path, None), false, true)
            .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "no_session");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");

    // HTTPS cookie name over HTTPS.
    let (status, headers, body) = json_of(
        tokens
            .endpoint(&support, &token_request(path, cookie.clone()), false, true)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(
        headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    );
    let token = body["token"].as_str().unwrap();
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires > time::OffsetDateTime::now_utc() + time::Duration::hours(23));
    // The same token a page of this session carries.
    let page = tokens.token_for(&support, &s, None).await.unwrap();
    assert_eq!(page.token.expose(), token);

    // `?org=` by name (any case) or id, only among this account's routes.
    for org in ["sales", "Sales", "7"] {
        let p = format!("{path}?org={org}");
        let (status, _, body) = json_of(
            tokens
                .endpoint(&support, &token_request(&p, cookie.clone()), false, true)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{org}: {body}");
        let payload = body["token"].as_str().unwrap().split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["organization_id"], 7, "{org}");
    }
    for org in ["99", "Marketing"] {
        let p = format!("{path}?org={org}");
        let (status, _, body) = json_of(
            tokens
                .endpoint(&support, &token_request(&p, cookie.clone()), false, true)
                .await,
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (404, Some("unknown_organization"))
        );
    }

    // A plain-HTTP client uses the plain cookie name.
    let plain = Some(format!("chathub_sid={}", s.expose()));
    let (status, _, _) = json_of(
        tokens
            .endpoint(&support, &token_request(path, plain.clone()), false, false)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = json_of(
        tokens
            .endpoint(&support, &token_request(path, plain), false, true)
            .await,
    )
    .await;
    assert_eq!(status, 401, "over HTTPS only the __Host- cookie counts");

    // Only GET and HEAD.
    let mut post = token_request(path, cookie);
    post.method = http::Method::POST;
    let resp = tokens.endpoint(&support, &post, false, true).await;
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.headers()[header::ALLOW],
        HeaderValue::from_static("GET, HEAD")
    );
}

#[tokio::test]
async fn token_endpoint_applies_the_identity_rule() {
    let emu = emulator().await;
    let by_name = r#"{ rule = "identity", header = "x-user", by_name = true }"#;
    let cfg = cfg(&emu, "", "", &[("staff", "6", by_name)]);
    let (tokens, _) = tokens(&cfg);
    let r = route(&cfg, "staff");
    let s = session::new_id();
    let mut req = token_request(
        "/api/chathub/token",
        Some(format!("__Host-chathub_sid={}", s.expose())),
    );
    req.headers
        .insert("x-user", HeaderValue::from_static("Omar"));
    // The header is believed only from a trusted proxy.
    let (status, _, body) = json_of(tokens.endpoint(&r, &req, false, true).await).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (401, Some("no_identity"))
    );
    let (status, _, body) = json_of(tokens.endpoint(&r, &req, true, true).await).await;
    assert_eq!(status, 200);
    let payload = body["token"].as_str().unwrap().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["operator_id"], 22);
    req.headers
        .insert("x-user", HeaderValue::from_static("Nobody"));
    let (status, _, body) = json_of(tokens.endpoint(&r, &req, true, true).await).await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (403, Some("unknown_operator"))
    );
}

#[tokio::test]
async fn development_token_and_no_token_routes() {
    let emu = emulator().await;
    let plain_route = "[[routes]]\nname = \"plain\"\nhosts = [\"plain.test\"]\nupstream = \"http://127.0.0.1:9\"\n";
    let with_dev = cfg(
        &emu,
        "",
        &format!("[inject]\ndev_token = \"test-token-for-development\"\n\n{plain_route}"),
        &[],
    );
    let dev = tokens_again(&with_dev);
    let t = dev
        .token_for(&route(&with_dev, "plain"), &session::new_id(), None)
        .await
        .unwrap();
    assert_eq!(t.token.expose(), "test-token-for-development");
    let without = cfg(&emu, "", plain_route, &[]);
    let none = tokens_again(&without);
    let skip = none
        .token_for(&route(&without, "plain"), &session::new_id(), None)
        .await
        .unwrap_err();
    assert_eq!(skip.reason(), "no_token");
    assert_eq!(emu.calls(GET_TOKEN), 0);
}

/// Env var that makes [`secrets_scenario`] run (in the child process only).

#[test]
fn no_token_password_or_session_id_in_trace_logs() {
    let Captured { logs, secrets, .. } = support::secrets::run_child("tokens::secrets_scenario");
    assert!(
        logs.contains("minted an operator token"),
        "the capture works: {logs}"
    );
    assert!(logs.contains("circuit breaker open"), "{logs}");
    assert!(logs.contains("redis unavailable"), "{logs}");
    assert!(secrets.len() >= 10, "{secrets:?}");
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret reached the logs:\n{logs}"
        );
    }
}

/// The body of [`no_token_password_or_session_id_in_trace_logs`]; does nothing
/// unless started by it.
#[test]
#[ignore = "run in a child process by no_token_password_or_session_id_in_trace_logs"]
fn secrets_scenario() {
    // Our code at TRACE; the emulator is the far side and may say what it likes.
    support::secrets::child(
        "chathub_proxy=trace,chathub_proxy::emulator=off",
        || async {
            let emu = emulator().await;
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let extra = redis_extra(
                &unique_prefix("secrets"),
                &format!("redis://:canary-redis-pw@127.0.0.1:{closed}"),
            );
            let token = "breaker_failures = 2\nbreaker_open_for = \"300ms\"";
            let cfg = cfg(
                &emu,
                token,
                &extra,
                &[
                    ("support", "6", FIRST_ACTIVE),
                    ("staff", "6", IDENTITY_PROVISION),
                    ("sales", "\"Sales\"", FIRST_ACTIVE),
                ],
            );
            let (tokens, _) = tokens(&cfg);
            let _ = tokens.resolve().await;
            let mut secrets = vec!["demo-password".to_owned(), "canary-redis-pw".to_owned()];
            for name in ["support", "staff", "sales"] {
                let s = session::new_id();
                secrets.push(s.expose());
                let t = tokens
                    .token_for(&route(&cfg, name), &s, Some("Canary Person".into()))
                    .await
                    .unwrap();
                secrets.push(t.token.expose().to_owned());
                secrets.push(t.token.expose().rsplit('.').next().unwrap().to_owned());
                let mut req = token_request(
                    "/api/chathub/token",
                    Some(format!("__Host-chathub_sid={}", s.expose())),
                );
                req.headers
                    .insert("x-user", HeaderValue::from_static("Canary Person"));
                let (status, _, body) =
                    json_of(tokens.endpoint(&route(&cfg, name), &req, true, true).await).await;
                assert_eq!(status, 200, "{body}");
            }
            // Failures and the breaker log too.
            emu.set_fault(Fault::Error500);
            for _ in 0..4 {
                let s = session::new_id();
                secrets.push(s.expose());
                let _ = tokens.token_for(&route(&cfg, "support"), &s, None).await;
            }
            secrets
        },
    );
}
