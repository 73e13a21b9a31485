//! The ChatHub client over real HTTP: against a raw fake of the external service
//! for every tolerance case of `chathub-api.md` §8, and against the project's
//! emulator for the happy path.

#[path = "support/chathub_fake.rs"]
mod chathub_fake;

use base64::Engine;
use chathub_fake::{Fake, Reply, Seen};
use chathub_proxy::chathub::{ChatHubError, Client, ClientOptions, OperatorStatus};
use chathub_proxy::config::{Account, Credentials};
use chathub_proxy::secret::Secret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use time::macros::datetime;

const PASSWORD: &str = "pa55-word-CANARY";
const KEY: &str = "dash-key-CANARY";

const GET_TOKEN: &str = "/api/company/get-token";
const ORGS: &str = "/api/company/organization";
const OPERATORS: &str = "/api/operator";
const SYNC: &str = "/api/operator/synchronize";
const STATUS: &str = "/api/operator/status";
const MINT: &str = "/api/operator/get-token";
const VALIDATE: &str = "/api/operator/validate-token";

fn account(url: &str, credentials: Credentials, request_timeout: Duration) -> Arc<Account> {
    Arc::new(Account {
        name: "test".into(),
        base_url: url.parse().expect("url"),
        credentials,
        connect_timeout: Duration::from_secs(2),
        request_timeout,
    })
}

fn login() -> Credentials {
    Credentials::Login {
        login: "acme".into(),
        password: Secret::new(PASSWORD),
    }
}

fn client(fake: &Fake) -> Client {
    Client::new(account(&fake.url(), login(), Duration::from_secs(10))).expect("client")
}

fn key_client(fake: &Fake) -> Client {
    let creds = Credentials::ApiKey(Secret::new(format!("Bearer {KEY}")));
    Client::new(account(&fake.url(), creds, Duration::from_secs(10))).expect("client")
}

/// A JWT-shaped token with these claims (the signature is not checked by anyone).
fn jwt(claims: serde_json::Value) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig-CANARY",
        b64(br#"{"alg":"HS256"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// The company token the fake hands out on its `n`th login (from 1).
fn company(n: usize) -> String {
    format!("company-{n}-CANARY")
}

/// Answers for a well-behaved ChatHub; tests override single paths.
fn normal(s: &Seen) -> Reply {
    match s.path.as_str() {
        GET_TOKEN => Reply::json(200, format!("\"{}\"", company(s.nth + 1))),
        ORGS => Reply::json(200, r#"[{"id":6,"name":"Support"}]"#),
        OPERATORS => Reply::json(
            200,
            r#"[{"id":21,"name":"Jane","status":0,"organization":{"id":6,"name":"Support"}}]"#,
        ),
        MINT => Reply::json(200, "\"op.tok.CANARY\""),
        STATUS => Reply::status(200),
        _ => Reply::status(404),
    }
}

#[tokio::test]
async fn token_bodies_in_every_shape_are_accepted() {
    let want = "tok.en.one";
    let shapes: Vec<(&str, &[u8])> = vec![
        ("application/json; charset=utf-8", b"\"tok.en.one\""),
        ("text/plain", b"\"tok.en.one\"\n"), // quoted JSON labelled as text, with a newline
        ("text/plain; charset=utf-8", b"tok.en.one"),
        ("application/json", b"tok.en.one\r\n"), // raw text labelled as JSON
        ("text/html", b"\xEF\xBB\xBF \"tok.en.one\" \r\n"),
        (
            "application/octet-stream",
            br#"{"token":"tok.en.one","expiration":"2099-01-01T00:00:00","extra":{"a":[1]}}"#,
        ),
        ("text/json", b"\"Bearer tok.en.one\""),
    ];
    for (ct, body) in shapes {
        let (ct, body) = (ct.to_string(), body.to_vec());
        let fake = Fake::start(move |s| match s.path.as_str() {
            GET_TOKEN | MINT => Reply::with(200, &ct, &body),
            _ => normal(s),
        })
        .await;
        let c = client(&fake);
        c.organizations().await.expect("organizations");
        let sent = fake.requests(ORGS)[0].header("authorization");
        assert_eq!(
            sent,
            Some(format!("Bearer {want}")),
            "company token from {body:?}",
            body = fake.requests(GET_TOKEN)[0].body
        );
        let t = c
            .operator_token(21, Duration::from_secs(3600))
            .await
            .expect("operator token");
        assert_eq!(t.token.expose(), want);
    }
}

#[tokio::test]
async fn unusable_token_bodies_are_decode_errors() {
    let bodies: [&[u8]; 8] = [
        b"",
        b" \r\n",
        b"\"\"",
        b"null",
        b"\"two words\"",
        b"<html><body>Sign in</body></html>",
        br#"{"jwt":"x.y.z"}"#,
        b"\"tok\\u0007en\"",
    ];
    for body in bodies {
        let b = body.to_vec();
        let fake = Fake::start(move |s| match s.path.as_str() {
            GET_TOKEN | MINT => Reply::json(200, &b),
            _ => normal(s),
        })
        .await;
        let err = client(&fake)
            .organizations()
            .await
            .expect_err("login must fail");
        assert_eq!(err.kind(), "decode", "{body:?}: {err}");
        assert_eq!(fake.calls(ORGS), 0, "no request goes out without a token");
        let err = key_client(&fake)
            .operator_token(21, Duration::from_secs(60))
            .await
            .expect_err("mint must fail");
        assert_eq!(err.kind(), "decode", "{body:?}: {err}");
    }
}

#[tokio::test]
async fn lists_are_read_by_content_and_forward_compatible() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS => Reply::with(200, "text/plain", "\u{feff}[{\"id\":6,\"name\":\"Support\",\"createdAt\":\"2025-01-01T00:00:00\"},{\"id\":\"7\",\"name\":\"Sales\"},{\"name\":\"no id\"}]\n"),
        OPERATORS => Reply::with(
            200,
            "text/html",
            r#"[{"id":21,"name":"Jane","status":1,"organization":{"id":24,"name":"x"},"photo":null},
                {"id":9007199254740993,"name":"Big"},
                {"id":23,"name":"Gone","status":2},
                {"id":24,"name":"Future","status":9,"organizationId":25}]"#,
        ),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let orgs = c.organizations().await.expect("organizations");
    assert_eq!(
        orgs.iter()
            .map(|o| (o.id, o.name.as_str()))
            .collect::<Vec<_>>(),
        [(6, "Support"), (7, "Sales")]
    );
    let ops = c.operators(24).await.expect("operators");
    assert_eq!(
        fake.requests(OPERATORS)[0].query.as_deref(),
        Some("organizationId=24")
    );
    let summary: Vec<_> = ops
        .iter()
        .map(|o| (o.id, o.name.as_str(), o.status, o.organization_id))
        .collect();
    assert_eq!(
        summary,
        [
            (21, "Jane", OperatorStatus::Inactive, Some(24)),
            (9007199254740993, "Big", OperatorStatus::Active, Some(24)),
            (23, "Gone", OperatorStatus::Deleted, Some(24)),
            (24, "Future", OperatorStatus::Other(9), Some(25)),
        ]
    );
}

#[tokio::test]
async fn a_list_that_is_not_json_is_a_decode_error() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS => Reply::with(200, "text/html", "<html>maintenance</html>"),
        _ => normal(s),
    })
    .await;
    let err = client(&fake).organizations().await.expect_err("not a list");
    assert!(
        matches!(&err, ChatHubError::Decode { method: "GET", path, .. } if path == ORGS),
        "{err:?}"
    );
}

#[tokio::test]
async fn validate_token_reads_every_documented_shape() {
    let fake = Fake::start(|s| {
        if s.path != VALIDATE {
            return normal(s);
        }
        match s.json()["token"].as_str().unwrap_or_default() {
            "t-valid" => Reply::json(
                200,
                r#"{"isValid":true,"operatorId":123,"clientId":0,"expiresAt":"2025-12-31T23:59:59.1234567","error":null,"newField":[1]}"#,
            ),
            "t-legacy" => Reply::with(200, "text/plain", r#"{"valid":true,"operatorId":"5","expiresAt":"2025-12-31T23:59:59+02:00"}"#),
            "t-noflag" => Reply::json(200, r#"{"operatorId":5,"error":"weird"}"#),
            "t-invalid" => Reply::json(200, r#"{"isValid":false,"operatorId":0,"error":"Token expired","expiresAt":null}"#),
            "t-400" => Reply::json(400, r#"{"isValid":false,"error":"Invalid token"}"#),
            "t-404" => Reply::with(404, "application/problem+json", r#"{"valid":true,"title":"Not Found","status":404}"#),
            "t-text" => Reply::with(400, "text/plain", "Invalid token"),
            "t-ok" => Reply::with(200, "text/plain", "OK"),
            _ => Reply::status(500),
        }
    })
    .await;
    let c = client(&fake);

    let v = c.validate_token("Bearer t-valid").await.expect("valid");
    assert!(v.valid);
    assert_eq!(v.operator_id, Some(123));
    assert_eq!(
        v.expires_at,
        Some(datetime!(2025-12-31 23:59:59.1234567 UTC))
    );
    assert_eq!(v.error, None);
    assert_eq!(
        fake.requests(VALIDATE)[0].json(),
        serde_json::json!({"token": "t-valid"})
    );

    let v = c.validate_token("t-legacy").await.expect("legacy");
    assert!(v.valid, "`valid` is read when `isValid` is absent");
    assert_eq!(v.operator_id, Some(5));
    assert_eq!(v.expires_at, Some(datetime!(2025-12-31 21:59:59 UTC)));

    let v = c.validate_token("t-noflag").await.expect("no flag");
    assert!(!v.valid, "a missing flag means invalid");

    let v = c.validate_token("t-invalid").await.expect("invalid");
    assert_eq!(
        (v.valid, v.operator_id, v.expires_at, v.error.as_deref()),
        (false, None, None, Some("Token expired"))
    );

    let v = c
        .validate_token("t-400")
        .await
        .expect("400 with JSON is an answer");
    assert_eq!(
        (v.valid, v.error.as_deref()),
        (false, Some("Invalid token"))
    );
    let v = c
        .validate_token("t-404")
        .await
        .expect("404 with JSON is an answer");
    assert!(!v.valid, "a 4xx is never valid");

    let err = c
        .validate_token("t-text")
        .await
        .expect_err("4xx without JSON");
    assert!(
        matches!(&err, ChatHubError::Http { status: 400, body, .. } if body == "Invalid token"),
        "{err:?}"
    );
    let err = c
        .validate_token("t-ok")
        .await
        .expect_err("200 without JSON");
    assert_eq!(err.kind(), "decode");
    assert_eq!(fake.calls(GET_TOKEN), 1);
}

#[tokio::test]
async fn validate_token_401_is_about_the_company_token() {
    let fake = Fake::start(|s| match s.path.as_str() {
        VALIDATE if s.header("authorization") == Some(format!("Bearer {}", company(1))) => {
            Reply::status(401)
        }
        VALIDATE => Reply::json(200, r#"{"isValid":true,"operatorId":1}"#),
        _ => normal(s),
    })
    .await;
    let v = client(&fake)
        .validate_token("t")
        .await
        .expect("retried after re-login");
    assert!(v.valid);
    assert_eq!((fake.calls(GET_TOKEN), fake.calls(VALIDATE)), (2, 2));
}

#[tokio::test]
async fn a_401_causes_exactly_one_relogin_for_100_concurrent_callers() {
    let reject_first = Arc::new(AtomicBool::new(false));
    let flag = reject_first.clone();
    let fake = Fake::start(move |s| match s.path.as_str() {
        ORGS if flag.load(Ordering::SeqCst)
            && s.header("authorization") == Some(format!("Bearer {}", company(1))) =>
        {
            Reply::status(401).header("www-authenticate", "Bearer error=\"invalid_token\"")
        }
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    c.organizations().await.expect("warm-up");
    assert_eq!(fake.calls(GET_TOKEN), 1);

    reject_first.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.organizations().await })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("join")
            .expect("every caller succeeds after the re-login");
    }
    assert_eq!(fake.calls(GET_TOKEN), 2, "one re-login for all 100 callers");
    let retried = fake
        .requests(ORGS)
        .iter()
        .filter(|r| r.header("authorization") == Some(format!("Bearer {}", company(2))))
        .count();
    assert_eq!(retried, 100);
}

#[tokio::test]
async fn cold_concurrent_callers_share_one_login() {
    let fake = Fake::start(|s| match s.path.as_str() {
        GET_TOKEN => normal(s).delay(Duration::from_millis(100)),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.operators(6).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("operators");
    }
    assert_eq!(fake.calls(GET_TOKEN), 1);
}

#[tokio::test]
async fn a_second_401_is_an_auth_error() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS => Reply::status(401),
        _ => normal(s),
    })
    .await;
    let err = client(&fake).organizations().await.expect_err("401 twice");
    assert!(
        matches!(&err, ChatHubError::Auth { method: "GET", path, status: 401 } if path == ORGS),
        "{err:?}"
    );
    assert_eq!((fake.calls(GET_TOKEN), fake.calls(ORGS)), (2, 2));
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_and_not_hammered() {
    let fake = Fake::start(|s| match s.path.as_str() {
        GET_TOKEN => Reply::status(401),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let err = c.organizations().await.expect_err("bad login");
    assert!(
        matches!(&err, ChatHubError::Auth { method: "POST", path, status: 401 } if path == GET_TOKEN),
        "{err:?}"
    );
    let again = c.operators(6).await.expect_err("still bad");
    assert_eq!(again.kind(), "auth");
    assert_eq!(
        fake.calls(GET_TOKEN),
        1,
        "a failed login is shared for a moment, not repeated"
    );
    assert_eq!(fake.calls(ORGS) + fake.calls(OPERATORS), 0);
    let login = fake.requests(GET_TOKEN)[0].json();
    assert_eq!(
        login,
        serde_json::json!({"login": "acme", "password": PASSWORD})
    );
}

#[tokio::test]
async fn key_mode_sends_only_the_key_header_and_never_logs_in() {
    let reject = Arc::new(AtomicBool::new(false));
    let flag = reject.clone();
    let fake = Fake::start(move |s| match s.path.as_str() {
        ORGS if flag.load(Ordering::SeqCst) => Reply::status(401),
        _ => normal(s),
    })
    .await;
    let c = key_client(&fake);
    c.organizations().await.expect("organizations");
    let req = &fake.requests(ORGS)[0];
    assert_eq!(
        req.header("x-authorization-key").as_deref(),
        Some(KEY),
        "`Bearer ` is stripped from the key"
    );
    assert_eq!(
        req.header("authorization"),
        None,
        "one credential header per request"
    );

    reject.store(true, Ordering::SeqCst);
    let err = c
        .organizations()
        .await
        .expect_err("a key cannot be renewed");
    assert_eq!(err.kind(), "auth");
    assert_eq!((fake.calls(GET_TOKEN), fake.calls(ORGS)), (0, 2));
}

#[tokio::test]
async fn login_mode_sends_only_the_bearer_header() {
    let fake = Fake::start(normal).await;
    client(&fake).organizations().await.expect("organizations");
    let login = &fake.requests(GET_TOKEN)[0];
    assert_eq!(login.method, "POST");
    assert_eq!(
        (
            login.header("authorization"),
            login.header("x-authorization-key")
        ),
        (None, None),
        "E1 is anonymous"
    );
    assert_eq!(
        login.header("content-type").as_deref(),
        Some("application/json")
    );
    let req = &fake.requests(ORGS)[0];
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {}", company(1)))
    );
    assert_eq!(req.header("x-authorization-key"), None);
}

#[tokio::test]
async fn gets_are_retried_on_5xx_then_succeed() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS if s.nth < 2 => Reply::with(503, "text/plain", "busy"),
        _ => normal(s),
    })
    .await;
    let orgs = client(&fake)
        .organizations()
        .await
        .expect("third try succeeds");
    assert_eq!(orgs.len(), 1);
    assert_eq!(fake.calls(ORGS), 3);
}

#[tokio::test]
async fn get_retries_are_bounded() {
    let fake = Fake::start(|s| match s.path.as_str() {
        OPERATORS => Reply::with(500, "text/plain", "boom"),
        _ => normal(s),
    })
    .await;
    let err = client(&fake).operators(6).await.expect_err("always 500");
    assert!(
        matches!(&err, ChatHubError::Http { method: "GET", status: 500, body, .. } if body == "boom"),
        "{err:?}"
    );
    assert_eq!(fake.calls(OPERATORS), 3);
}

#[tokio::test]
async fn gets_are_retried_after_a_dropped_connection() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS if s.nth == 0 => Reply::hang_up(),
        _ => normal(s),
    })
    .await;
    client(&fake)
        .organizations()
        .await
        .expect("second try succeeds");
    assert_eq!(fake.calls(ORGS), 2);
}

#[tokio::test]
async fn posts_are_never_retried_on_5xx() {
    let fake = Fake::start(|s| match s.path.as_str() {
        GET_TOKEN if s.body.windows(5).any(|w| w == b"other") => Reply::status(502),
        SYNC | MINT | VALIDATE | STATUS => Reply::with(500, "text/plain", "boom"),
        OPERATORS => Reply::json(200, "[]"),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    assert_eq!(
        c.synchronize(6, &["Bob".into()])
            .await
            .expect_err("sync")
            .kind(),
        "http"
    );
    assert_eq!(
        c.operator_token(1, Duration::from_secs(60))
            .await
            .expect_err("mint")
            .kind(),
        "http"
    );
    assert_eq!(
        c.validate_token("t").await.expect_err("validate").kind(),
        "http"
    );
    assert_eq!(
        c.set_status(1, OperatorStatus::Inactive)
            .await
            .expect_err("status")
            .kind(),
        "http"
    );
    assert_eq!(
        (
            fake.calls(SYNC),
            fake.calls(MINT),
            fake.calls(VALIDATE),
            fake.calls(STATUS)
        ),
        (1, 1, 1, 1)
    );

    let other = Credentials::Login {
        login: "other".into(),
        password: Secret::new(PASSWORD),
    };
    let c = Client::new(account(&fake.url(), other, Duration::from_secs(10))).expect("client");
    let err = c.organizations().await.expect_err("login 502");
    assert!(
        matches!(&err, ChatHubError::Http { method: "POST", path, status: 502, .. } if path == GET_TOKEN),
        "{err:?}"
    );
    assert_eq!(
        fake.calls(GET_TOKEN),
        2,
        "one login for each client, no retry"
    );
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_for_gets() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS if s.nth == 0 => Reply::status(429).header("retry-after", "1"),
        _ => normal(s),
    })
    .await;
    client(&fake)
        .organizations()
        .await
        .expect("retried after Retry-After");
    assert_eq!(fake.calls(ORGS), 2);
}

#[tokio::test]
async fn a_long_retry_after_is_returned() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS => Reply::status(429).header("retry-after", "120"),
        MINT => Reply::status(429).header("retry-after", "1"),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let err = c.organizations().await.expect_err("too long to wait");
    assert!(
        matches!(err, ChatHubError::RateLimited { method: "GET", retry_after: Some(d), .. } if d == Duration::from_secs(120)),
        "{err:?}"
    );
    assert_eq!(fake.calls(ORGS), 1);
    let err = c
        .operator_token(1, Duration::from_secs(60))
        .await
        .expect_err("POSTs are not retried");
    assert!(
        matches!(err, ChatHubError::RateLimited { method: "POST", retry_after: Some(d), .. } if d == Duration::from_secs(1)),
        "{err:?}"
    );
    assert_eq!(fake.calls(MINT), 1);
}

#[tokio::test]
async fn a_slow_chathub_is_a_timeout_and_not_retried() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS => normal(s).delay(Duration::from_secs(5)),
        _ => normal(s),
    })
    .await;
    let c = Client::new(account(&fake.url(), login(), Duration::from_millis(300))).expect("client");
    let err = c.organizations().await.expect_err("slow");
    assert!(
        matches!(&err, ChatHubError::Timeout { method: "GET", path } if path == ORGS),
        "{err:?}"
    );
    assert_eq!(fake.calls(ORGS), 1);
}

#[tokio::test]
async fn an_unreachable_chathub_is_a_network_error_without_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let c = Client::new(account(
        &url,
        Credentials::ApiKey(Secret::new(KEY)),
        Duration::from_secs(5),
    ))
    .expect("client");
    let err = c.organizations().await.expect_err("nothing listens");
    match &err {
        ChatHubError::Network {
            method: "GET",
            path,
            message,
        } => {
            assert_eq!(path, ORGS);
            assert!(!message.contains("http://"), "{message}");
        }
        other => panic!("expected a network error, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_keep_method_path_status_and_a_short_body() {
    let fake = Fake::start(|s| match (s.path.as_str(), s.json()["id"].as_i64()) {
        (STATUS, Some(1)) => Reply::with(
            400,
            "application/problem+json",
            r#"{"type":"https://tools.ietf.org/html/rfc9110#section-15.5.1","title":"One or more validation errors occurred.","status":400,"errors":{"Status":["The value is invalid."]},"traceId":"00-abc"}"#,
        ),
        (STATUS, _) => Reply::with(500, "text/html", format!("<html>{}</html>", "x".repeat(10_000))),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let err = c
        .set_status(1, OperatorStatus::Other(9))
        .await
        .expect_err("400");
    match &err {
        ChatHubError::Http {
            method,
            path,
            status,
            body,
        } => {
            assert_eq!((*method, path.as_str(), *status), ("POST", STATUS, 400));
            assert_eq!(
                body,
                "One or more validation errors occurred.; Status: The value is invalid."
            );
        }
        other => panic!("expected Http, got {other:?}"),
    }
    let err = c
        .set_status(2, OperatorStatus::Active)
        .await
        .expect_err("500");
    match &err {
        ChatHubError::Http {
            status: 500, body, ..
        } => assert!(body.len() <= 256 && body.starts_with("<html>xxx"), "{body}"),
        other => panic!("expected Http, got {other:?}"),
    }
}

#[tokio::test]
async fn organization_names_resolve_exactly_then_case_insensitively() {
    let fake = Fake::start(|s| match s.path.as_str() {
        ORGS => Reply::json(
            200,
            r#"[{"id":1,"name":"Support"},{"id":2,"name":"support"},{"id":3,"name":"SALES"}]"#,
        ),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    assert_eq!(c.organization_id("support").await.expect("exact"), 2);
    assert_eq!(
        c.organization_id("Sales").await.expect("case-insensitive"),
        3
    );
    let err = c.organization_id("Billing").await.expect_err("unknown");
    assert!(
        matches!(&err, ChatHubError::UnknownOrganization(n) if n == "Billing"),
        "{err:?}"
    );
}

#[tokio::test]
async fn synchronize_creates_only_missing_names_and_reads_the_answer() {
    let fake = Fake::start(|s| match s.path.as_str() {
        OPERATORS => Reply::json(
            200,
            r#"[{"id":1,"name":"Alice","status":0,"organization":{"id":24,"name":"x"}}]"#,
        ),
        SYNC => Reply::json(200, r#"[{"id":104,"name":"Bob","status":0}]"#),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let ops = c
        .synchronize(24, &["Alice".into(), "Bob".into(), "Bob".into()])
        .await
        .expect("sync");
    let got: Vec<_> = ops
        .iter()
        .map(|o| (o.id, o.name.as_str(), o.organization_id))
        .collect();
    assert_eq!(got, [(1, "Alice", Some(24)), (104, "Bob", Some(24))]);
    assert_eq!(
        fake.requests(SYNC)[0].json(),
        serde_json::json!([{"organizationId": 24, "name": "Bob"}])
    );
    assert_eq!((fake.calls(OPERATORS), fake.calls(SYNC)), (1, 1));

    c.synchronize(24, &["Alice".into()])
        .await
        .expect("nothing to create");
    assert_eq!(fake.calls(SYNC), 1, "existing names are not sent");
}

#[tokio::test]
async fn synchronize_relists_when_the_answer_is_empty_or_unreadable() {
    for body in ["", "OK", "null", r#"{"success":true}"#] {
        let fake = Fake::start(move |s| match s.path.as_str() {
            OPERATORS if s.nth == 0 => Reply::json(200, "[]"),
            OPERATORS => Reply::json(
                200,
                r#"[{"id":104,"name":"Bob","status":0},{"id":105,"name":"Carol"}]"#,
            ),
            SYNC => Reply::with(200, "text/plain", body),
            _ => normal(s),
        })
        .await;
        let ops = client(&fake)
            .synchronize(24, &["Bob".into(), " Carol ".into()])
            .await
            .expect("sync");
        let got: Vec<_> = ops.iter().map(|o| (o.id, o.name.as_str())).collect();
        assert_eq!(got, [(104, "Bob"), (105, "Carol")], "body {body:?}");
        assert_eq!(fake.calls(OPERATORS), 2);
    }
}

#[tokio::test]
async fn set_status_tolerates_trivial_bodies() {
    for body in ["", "  \r\n", "OK", "null", "{}", "\"Success\""] {
        let fake = Fake::start(move |s| match s.path.as_str() {
            STATUS => Reply::with(200, "text/plain", body),
            _ => normal(s),
        })
        .await;
        let c = client(&fake);
        c.set_status(104, OperatorStatus::Inactive)
            .await
            .expect("status");
        c.set_status(104, OperatorStatus::Other(5))
            .await
            .expect("status");
        let sent: Vec<_> = fake.requests(STATUS).iter().map(Seen::json).collect();
        assert_eq!(
            sent,
            [
                serde_json::json!({"id": 104, "status": 1}),
                serde_json::json!({"id": 104, "status": 5})
            ]
        );
    }
}

fn sent_expiry(fake: &Fake, index: usize) -> (String, OffsetDateTime) {
    let raw = fake.requests(MINT)[index].json()["expiresAt"]
        .as_str()
        .expect("expiresAt")
        .to_string();
    let at = OffsetDateTime::parse(&raw, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (raw, at)
}

#[tokio::test]
async fn operator_token_expiry_is_clamped_and_sent_in_utc() {
    let fake = Fake::start(normal).await;
    let opts = ClientOptions {
        skew_margin: Duration::from_secs(300),
        ..ClientOptions::default()
    };
    let c = Client::with_options(account(&fake.url(), login(), Duration::from_secs(10)), opts)
        .expect("client");

    let before = OffsetDateTime::now_utc();
    let t = c
        .operator_token(21, Duration::from_secs(48 * 3600))
        .await
        .expect("mint");
    let after = OffsetDateTime::now_utc();
    let (raw, sent) = sent_expiry(&fake, 0);
    assert!(raw.ends_with('Z') && !raw.contains('.'), "{raw}");
    let limit = time::Duration::hours(24) - time::Duration::minutes(5);
    assert!(
        sent <= after + limit && sent >= before + limit - time::Duration::seconds(1),
        "{raw}"
    );
    assert_eq!(
        t.expires_at, sent,
        "the expiry reported is the one requested"
    );
    assert_eq!(fake.requests(MINT)[0].json()["id"], 21);

    let t = c
        .operator_token(21, Duration::from_secs(3600))
        .await
        .expect("mint");
    let (_, sent) = sent_expiry(&fake, 1);
    assert!(sent <= OffsetDateTime::now_utc() + time::Duration::hours(1));
    assert!(sent > before + time::Duration::minutes(59));
    assert_eq!(t.expires_at, sent);
}

#[tokio::test]
async fn an_earlier_jwt_exp_shortens_the_reported_expiry() {
    let soon = OffsetDateTime::now_utc().unix_timestamp() + 600;
    let early = jwt(serde_json::json!({"operator_id": 21, "exp": soon}));
    let past = jwt(serde_json::json!({"operator_id": 21, "exp": 1_000}));
    let fake = Fake::start(move |s| match (s.path.as_str(), s.nth) {
        (MINT, 0) => Reply::json(200, format!("\"{early}\"")),
        (MINT, _) => Reply::json(200, format!("\"{past}\"")),
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    let t = c
        .operator_token(21, Duration::from_secs(3600))
        .await
        .expect("mint");
    assert_eq!(t.expires_at.unix_timestamp(), soon);
    // An `exp` in the past says more about clocks than the token; it is ignored.
    let t = c
        .operator_token(21, Duration::from_secs(3600))
        .await
        .expect("mint");
    assert_eq!(t.expires_at, sent_expiry(&fake, 1).1);
}

#[tokio::test]
async fn a_company_token_near_its_exp_is_renewed_before_it_is_rejected() {
    let fake = Fake::start(|s| match s.path.as_str() {
        GET_TOKEN => {
            let exp = OffsetDateTime::now_utc().unix_timestamp() + 3;
            Reply::json(
                200,
                format!(
                    "\"{}\"",
                    jwt(serde_json::json!({"sub": "acme", "exp": exp}))
                ),
            )
        }
        _ => normal(s),
    })
    .await;
    let c = client(&fake);
    c.organizations().await.expect("first");
    assert_eq!(fake.calls(GET_TOKEN), 1);
    c.organizations()
        .await
        .expect("second, long before half its life");
    assert_eq!(
        fake.calls(GET_TOKEN),
        1,
        "a short-lived token is not renewed per request"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    c.organizations().await.expect("after its exp");
    assert_eq!(
        fake.calls(GET_TOKEN),
        2,
        "renewed from `exp`, without waiting for a 401"
    );
    assert_eq!(fake.calls(ORGS), 3);
}

/// A `MakeWriter` that appends everything into one shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_or_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // reqwest logs through `log`; forward it (the current thread's subscriber gets it).
    let _ = tracing_log::LogTracer::init();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Tests on other threads may have hit the client's callsites while no
    // subscriber wanted them, and tracing caches that per callsite: recompute
    // it now that this thread's subscriber exists (the full suite once missed
    // the "logging in" line this way).
    tracing::callsite::rebuild_interest_cache();

    let op_token = jwt(serde_json::json!({"operator_id": 21, "exp": 4_102_444_800_i64}));
    let op = op_token.clone();
    let fake = Fake::start(move |s| {
        let echo = String::from_utf8_lossy(&s.body).to_string();
        match s.path.as_str() {
            // The first company token gets rejected, forcing a re-login.
            ORGS if s.header("authorization") == Some(format!("Bearer {}", company(1))) => {
                Reply::status(401)
            }
            MINT => Reply::json(200, format!("\"{op}\"")),
            // Misbehaving servers echo what they were sent, secrets included.
            VALIDATE => Reply::with(400, "text/plain", format!("bad request: {echo}")),
            STATUS => Reply::with(
                500,
                "text/plain",
                format!("crash, request was {echo} with {:?}", s.headers),
            ),
            SYNC => Reply::with(500, "text/plain", format!("{:?}", s.headers)),
            _ => normal(s),
        }
    })
    .await;
    let mut errors = Vec::new();
    let c = client(&fake);
    c.organizations()
        .await
        .expect("organizations after re-login");
    let t = c
        .operator_token(21, Duration::from_secs(3600))
        .await
        .expect("mint");
    assert_eq!(t.token.expose(), op_token);
    errors.push(c.validate_token(&op_token).await.expect_err("400 text"));
    errors.push(
        c.set_status(21, OperatorStatus::Active)
            .await
            .expect_err("500"),
    );
    let k = key_client(&fake);
    k.organizations().await.expect("key mode");
    errors.push(k.synchronize(6, &["Bob".into()]).await.expect_err("500"));
    let bad = Fake::start(|s| match s.path.as_str() {
        GET_TOKEN => Reply::with(
            401,
            "text/plain",
            String::from_utf8_lossy(&s.body).to_string(),
        ),
        _ => normal(s),
    })
    .await;
    errors.push(client(&bad).organizations().await.expect_err("bad login"));
    drop(_guard);

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert!(
        logs.contains("logging in to ChatHub"),
        "the capture works:\n{logs}"
    );
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "verbose levels are captured"
    );
    let secrets = [
        PASSWORD,
        KEY,
        &company(1),
        &company(2),
        &op_token,
        "sig-CANARY",
        "CANARY",
    ];
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "`{secret}` leaked into logs:\n{logs}"
        );
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains(secret),
                "`{secret}` leaked into an error: {shown}"
            );
        }
    }
    // The errors still say what went wrong.
    assert!(errors.iter().all(|e| !e.to_string().is_empty()));
    assert!(
        matches!(&errors[1], ChatHubError::Http { status: 500, body, .. } if body.contains("<redacted>")),
        "{:?}",
        errors[1]
    );
}

#[tokio::test]
async fn emulator_happy_path() {
    use chathub_proxy::emulator::{Emulator, Fault, Seed, TokenStyle};
    let emu = Emulator::start("127.0.0.1:0".parse().expect("addr"), Seed::demo())
        .await
        .expect("emulator");
    for style in [
        TokenStyle::Quoted,
        TokenStyle::Raw,
        TokenStyle::Object,
        TokenStyle::QuotedAsText,
    ] {
        emu.set_token_style(style);
        let creds = Credentials::Login {
            login: "demo".into(),
            password: Secret::new("demo-password"),
        };
        let c = Client::new(account(&emu.url(), creds, Duration::from_secs(5))).expect("client");
        let orgs = c.organizations().await.expect("organizations");
        assert!(!orgs.is_empty(), "{style:?}");
        let org = c
            .organization_id(&orgs[0].name.to_uppercase())
            .await
            .expect("org by name");
        let ops = c.operators(org).await.expect("operators");
        let name = format!("client-test-{style:?}");
        let made = c
            .synchronize(org, std::slice::from_ref(&name))
            .await
            .expect("synchronize");
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].name, name);
        let again = c
            .synchronize(org, std::slice::from_ref(&name))
            .await
            .expect("idempotent");
        assert_eq!(again[0].id, made[0].id);
        assert_eq!(
            c.operators(org).await.expect("operators").len(),
            ops.len() + 1
        );
        c.set_status(made[0].id, OperatorStatus::Inactive)
            .await
            .expect("status");
        c.set_status(made[0].id, OperatorStatus::Active)
            .await
            .expect("status");
        let t = c
            .operator_token(made[0].id, Duration::from_secs(3600))
            .await
            .expect("mint");
        let v = c.validate_token(t.token.expose()).await.expect("validate");
        assert!(v.valid, "{style:?}");
        assert_eq!(v.operator_id, Some(made[0].id));
        let v = c
            .validate_token("not-a-token")
            .await
            .expect("validate garbage");
        assert!(!v.valid);
    }
    let key = Client::new(account(
        &emu.url(),
        Credentials::ApiKey(Secret::new("demo-key")),
        Duration::from_secs(5),
    ))
    .expect("client");
    assert!(!key.organizations().await.expect("key mode").is_empty());
    assert_eq!(
        emu.calls("/api/company/get-token"),
        4,
        "one login per client, none in key mode"
    );

    // Expired company tokens: one re-login, and the call still succeeds.
    let creds = Credentials::Login {
        login: "demo".into(),
        password: Secret::new("demo-password"),
    };
    let c = Client::new(account(&emu.url(), creds, Duration::from_secs(5))).expect("client");
    c.organizations().await.expect("organizations");
    emu.set_fault(Fault::ExpireCompanyTokens);
    c.organizations().await.expect("organizations after expiry");
    emu.set_fault(Fault::None);
    assert_eq!(emu.calls("/api/company/get-token"), 6);
}
