//! The ChatHub EMULATOR over real HTTP: the documented flow (E1–E7), credentials,
//! token styles, JWT claims and expiry, validation, every fault, the control
//! endpoints, the stand-in widget module, the seed file and the demo site.

use chathub_proxy::demo;
use chathub_proxy::emulator::{
    Emulator, Fault, Seed, SeedCompany, SeedOperator, SeedOrganization, TokenStyle, decode_claims,
};
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

async fn start(seed: Seed) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), seed)
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    chathub_proxy::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The demo seed plus a second company, to check that companies are kept apart.
fn two_companies() -> Seed {
    let mut seed = Seed::demo();
    seed.companies.push(SeedCompany {
        login: "other".into(),
        password: "other-password".into(),
        api_key: Some("other-key".into()),
        organizations: vec![SeedOrganization {
            id: 9,
            name: "Elsewhere".into(),
            operators: vec![SeedOperator {
                id: 91,
                name: "Zed".into(),
                status: 0,
            }],
        }],
    });
    seed
}

fn in_hours(h: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::hours(h))
        .format(&Rfc3339)
        .unwrap()
}

async fn login_as(c: &reqwest::Client, emu: &Emulator, login: &str, password: &str) -> String {
    let r = c
        .post(format!("{}/api/company/get-token", emu.url()))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str::<String>(&r.text().await.unwrap()).unwrap()
}

async fn login(c: &reqwest::Client, emu: &Emulator) -> String {
    login_as(c, emu, "demo", "demo-password").await
}

async fn get(c: &reqwest::Client, emu: &Emulator, token: &str, path: &str) -> reqwest::Response {
    c.get(format!("{}{path}", emu.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn post(
    c: &reqwest::Client,
    emu: &Emulator,
    token: &str,
    path: &str,
    body: Value,
) -> reqwest::Response {
    c.post(format!("{}{path}", emu.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn documented_flow_end_to_end() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let company = login(&c, &emu).await;

    let orgs = json_of(get(&c, &emu, &company, "/api/company/organization").await).await;
    assert_eq!(
        orgs,
        json!([{"id": 6, "name": "Customer Support"}, {"id": 7, "name": "Sales"}])
    );

    let ops = json_of(get(&c, &emu, &company, "/api/operator?organizationId=6").await).await;
    let org = json!({"id": 6, "name": "Customer Support"});
    assert_eq!(
        ops,
        json!([
            {"id": 21, "name": "Jane", "status": 0, "organization": org},
            {"id": 22, "name": "Omar", "status": 0, "organization": org},
            {"id": 23, "name": "Ines", "status": 1, "organization": org},
        ])
    );

    let sync = json!([{"organizationId": 7, "name": "Alex Brown"}, {"organizationId": 7, "name": "Alex Brown"}]);
    let created = json_of(post(&c, &emu, &company, "/api/operator/synchronize", sync).await).await;
    let created = created.as_array().unwrap();
    assert_eq!(
        created.len(),
        2,
        "duplicates are allowed, as the real API may allow them"
    );
    let new_id = created[0]["id"].as_i64().unwrap();
    assert_ne!(new_id, created[1]["id"].as_i64().unwrap());
    assert_eq!(
        created[0],
        json!({"id": new_id, "name": "Alex Brown", "status": 0})
    );
    assert_eq!(emu.operators(7).len(), 4);

    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/status",
        json!({"id": new_id, "status": 1}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "", "E5 answers with no body");
    assert!(
        emu.operators(7)
            .iter()
            .any(|o| o.id == new_id && o.status == 1)
    );

    let expires = in_hours(2);
    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/get-token",
        json!({"id": 21, "expiresAt": expires}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let operator_token: String = serde_json::from_str(&r.text().await.unwrap()).unwrap();

    let v = json_of(
        post(
            &c,
            &emu,
            &company,
            "/api/operator/validate-token",
            json!({"token": operator_token}),
        )
        .await,
    )
    .await;
    assert_eq!(v["isValid"], true);
    assert_eq!(v["operatorId"], 21);
    assert_eq!(v["clientId"], 1);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(
        OffsetDateTime::parse(v["expiresAt"].as_str().unwrap(), &Rfc3339)
            .unwrap()
            .unix_timestamp(),
        OffsetDateTime::parse(&expires, &Rfc3339)
            .unwrap()
            .unix_timestamp()
    );

    for path in [
        "/api/company/get-token",
        "/api/company/organization",
        "/api/operator",
        "/api/operator/synchronize",
        "/api/operator/status",
        "/api/operator/get-token",
        "/api/operator/validate-token",
    ] {
        assert_eq!(emu.calls(path), 1, "{path}");
    }
    assert_eq!(emu.calls("/nowhere"), 0);
}

#[tokio::test]
async fn credentials_are_checked_on_every_endpoint() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let url = |p: &str| format!("{}{p}", emu.url());

    let r = c
        .post(url("/api/company/get-token"))
        .json(&json!({"login": "demo", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(url("/api/company/get-token"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    for (method, path) in [
        (reqwest::Method::GET, "/api/company/organization"),
        (reqwest::Method::GET, "/api/operator?organizationId=6"),
        (reqwest::Method::POST, "/api/operator/synchronize"),
        (reqwest::Method::POST, "/api/operator/status"),
        (reqwest::Method::POST, "/api/operator/get-token"),
        (reqwest::Method::POST, "/api/operator/validate-token"),
    ] {
        let r = c.request(method.clone(), url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without credentials");
        assert_eq!(r.text().await.unwrap(), "", "{path}: 401 has an empty body");
        let r = c
            .request(method, url(path))
            .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.AAAA")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a forged token");
    }

    let orgs = url("/api/company/organization");
    let r = c
        .get(&orgs)
        .header("X-Authorization-Key", "demo-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the dashboard key works in X-Authorization-Key"
    );
    let r = c
        .get(&orgs)
        .header("X-Authorization-Key", "wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let company = login(&c, &emu).await;
    let r = c
        .get(&orgs)
        .header("X-Authorization-Key", &company)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the docs also show the company JWT in X-Authorization-Key"
    );

    // An operator token is not a company token.
    let operator = emu
        .mint_operator_token(21, OffsetDateTime::now_utc() + time::Duration::hours(1))
        .unwrap();
    assert_eq!(
        get(&c, &emu, &operator, "/api/company/organization")
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn companies_only_see_their_own_organizations_and_operators() {
    let emu = start(two_companies()).await;
    let c = client();
    let demo = login(&c, &emu).await;
    let other = login_as(&c, &emu, "other", "other-password").await;

    assert_eq!(
        json_of(get(&c, &emu, &other, "/api/company/organization").await).await,
        json!([{"id": 9, "name": "Elsewhere"}])
    );
    assert_eq!(
        get(&c, &emu, &demo, "/api/operator?organizationId=9")
            .await
            .status(),
        404
    );
    assert_eq!(
        get(&c, &emu, &demo, "/api/operator?organizationId=999")
            .await
            .status(),
        404
    );
    assert_eq!(get(&c, &emu, &demo, "/api/operator").await.status(), 400);
    assert_eq!(
        get(&c, &emu, &demo, "/api/operator?organizationId=six")
            .await
            .status(),
        400
    );

    let r = post(
        &c,
        &emu,
        &demo,
        "/api/operator/synchronize",
        json!([{"organizationId": 9, "name": "Mallory"}]),
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        emu.operators(9).len(),
        1,
        "nothing was created in a foreign organization"
    );
    let r = post(
        &c,
        &emu,
        &demo,
        "/api/operator/synchronize",
        json!([{"organizationId": 6, "name": " "}]),
    )
    .await;
    assert_eq!(r.status(), 400);

    assert_eq!(
        post(
            &c,
            &emu,
            &demo,
            "/api/operator/status",
            json!({"id": 91, "status": 1})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        post(
            &c,
            &emu,
            &demo,
            "/api/operator/status",
            json!({"id": 21, "status": 7})
        )
        .await
        .status(),
        400
    );
    let r = post(
        &c,
        &emu,
        &demo,
        "/api/operator/get-token",
        json!({"id": 91, "expiresAt": in_hours(1)}),
    )
    .await;
    assert_eq!(r.status(), 404);

    let theirs = emu
        .mint_operator_token(91, OffsetDateTime::now_utc() + time::Duration::hours(1))
        .unwrap();
    let v = json_of(
        post(
            &c,
            &emu,
            &demo,
            "/api/operator/validate-token",
            json!({"token": theirs}),
        )
        .await,
    )
    .await;
    assert_eq!(
        v["isValid"], false,
        "another company's operator token is not valid for this company"
    );
}

#[tokio::test]
async fn token_styles_shape_both_token_bodies() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let login_url = format!("{}/api/company/get-token", emu.url());
    let creds = json!({"login": "demo", "password": "demo-password"});
    for style in [
        TokenStyle::Quoted,
        TokenStyle::Raw,
        TokenStyle::Object,
        TokenStyle::QuotedAsText,
    ] {
        emu.set_token_style(style);
        let r = c.post(&login_url).json(&creds).send().await.unwrap();
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = r.text().await.unwrap();
        let token = match style {
            TokenStyle::Quoted => {
                assert!(ct.starts_with("application/json"), "{ct}");
                serde_json::from_str::<String>(&body).unwrap()
            }
            TokenStyle::Raw => {
                assert!(ct.starts_with("text/plain"), "{ct}");
                assert!(!body.starts_with('"'));
                body.clone()
            }
            TokenStyle::Object => {
                assert!(ct.starts_with("application/json"), "{ct}");
                let v: Value = serde_json::from_str(&body).unwrap();
                OffsetDateTime::parse(v["expiration"].as_str().unwrap(), &Rfc3339).unwrap();
                v["token"].as_str().unwrap().to_owned()
            }
            TokenStyle::QuotedAsText => {
                assert!(ct.starts_with("text/plain"), "{ct}");
                assert!(body.starts_with('"') && body.ends_with("\"\n"), "{body:?}");
                serde_json::from_str::<String>(body.trim_end()).unwrap()
            }
        };
        assert_eq!(token.split('.').count(), 3, "{style:?}");
        assert_eq!(
            get(&c, &emu, &token, "/api/company/organization")
                .await
                .status(),
            200,
            "{style:?}"
        );

        // E6 follows the same style.
        let r = post(
            &c,
            &emu,
            &token,
            "/api/operator/get-token",
            json!({"id": 22, "expiresAt": in_hours(1)}),
        )
        .await;
        let body = r.text().await.unwrap();
        let quoted = body.trim_end().starts_with('"');
        let object = body.starts_with('{');
        match style {
            TokenStyle::Quoted | TokenStyle::QuotedAsText => assert!(quoted, "{style:?}: {body}"),
            TokenStyle::Raw => assert!(!quoted && !object, "{style:?}: {body}"),
            TokenStyle::Object => assert!(object, "{style:?}: {body}"),
        }
    }
}

#[tokio::test]
async fn tokens_are_hs256_jwts_with_exp() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let company = login(&c, &emu).await;
    let claims = decode_claims(&company).unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > before, "company token has a future exp");
    let header = decode_claims(&format!("x.{}", company.split('.').next().unwrap())).unwrap();
    assert_eq!(header["alg"], "HS256");

    // A company token past its exp is refused: mint one with a zero lifetime.
    emu.set_company_token_ttl(Duration::ZERO);
    let stale = login(&c, &emu).await;
    assert_eq!(
        get(&c, &emu, &stale, "/api/company/organization")
            .await
            .status(),
        401
    );
    emu.set_company_token_ttl(Duration::from_secs(3600));

    let asked =
        OffsetDateTime::now_utc() + time::Duration::hours(3) + time::Duration::milliseconds(147);
    let asked_text = asked.format(&Rfc3339).unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let r = post(
            &c,
            &emu,
            &company,
            "/api/operator/get-token",
            json!({"id": 21, "expiresAt": asked_text}),
        )
        .await;
        assert_eq!(r.status(), 200);
        tokens.push(serde_json::from_str::<String>(&r.text().await.unwrap()).unwrap());
    }
    assert_ne!(tokens[0], tokens[1], "every operator token is unique");
    let claims = decode_claims(&tokens[0]).unwrap();
    assert_eq!(claims["operator_id"], 21);
    assert_eq!(claims["organization_id"], 6);
    assert_eq!(claims["name"], "Jane");
    assert_eq!(
        claims["exp"].as_i64().unwrap(),
        asked.unix_timestamp(),
        "exp is the expiresAt asked for"
    );

    let ask = |id: i64, at: String| json!({"id": id, "expiresAt": at});
    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/get-token",
        ask(21, in_hours(25)),
    )
    .await;
    assert_eq!(r.status(), 400, "more than 24 h ahead");
    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/get-token",
        ask(21, in_hours(-1)),
    )
    .await;
    assert_eq!(r.status(), 400, "in the past");
    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/get-token",
        ask(21, "soon".into()),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/get-token",
        ask(4242, in_hours(1)),
    )
    .await;
    assert_eq!(r.status(), 404, "unknown operator");
    assert!(emu.set_operator_status(22, 2));
    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/get-token",
        ask(22, in_hours(1)),
    )
    .await;
    assert_eq!(r.status(), 404, "deleted operator");
    let at = (OffsetDateTime::now_utc() + time::Duration::hours(24) - time::Duration::minutes(2))
        .format(&Rfc3339)
        .unwrap();
    let r = post(&c, &emu, &company, "/api/operator/get-token", ask(23, at)).await;
    assert_eq!(
        r.status(),
        200,
        "24 h minus a skew margin is accepted, for an inactive operator too"
    );
}

#[tokio::test]
async fn validate_token_tells_valid_invalid_and_expired_apart() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let company = login(&c, &emu).await;
    let validate = |t: String| {
        post(
            &c,
            &emu,
            &company,
            "/api/operator/validate-token",
            json!({"token": t}),
        )
    };

    let good = emu
        .mint_operator_token(31, OffsetDateTime::now_utc() + time::Duration::hours(1))
        .unwrap();
    let v = json_of(validate(good.clone()).await).await;
    assert_eq!(
        (v["isValid"].clone(), v["operatorId"].clone()),
        (json!(true), json!(31))
    );

    let expired = emu
        .mint_operator_token(31, OffsetDateTime::now_utc() - time::Duration::minutes(1))
        .unwrap();
    let r = validate(expired).await;
    assert_eq!(r.status(), 200, "an invalid token is still a 200");
    assert_eq!(
        json_of(r).await,
        json!({"isValid": false, "error": "Token expired"})
    );

    let mut tampered: Vec<&str> = good.split('.').collect();
    let other = emu
        .mint_operator_token(32, OffsetDateTime::now_utc() + time::Duration::hours(1))
        .unwrap();
    let other_payload = other.split('.').nth(1).unwrap();
    tampered[1] = other_payload;
    for bad in [
        tampered.join("."),
        "garbage".to_owned(),
        String::new(),
        company.clone(),
    ] {
        assert_eq!(
            json_of(validate(bad).await).await,
            json!({"isValid": false, "error": "Invalid token"})
        );
    }

    let r = post(
        &c,
        &emu,
        &company,
        "/api/operator/validate-token",
        json!({"nottoken": 1}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn fault_down_drops_requests_but_control_still_answers() {
    let emu = start(Seed::demo()).await;
    let c = client();
    emu.set_fault(Fault::Down);
    let err = c
        .get(format!("{}/api/company/organization", emu.url()))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "no HTTP answer at all: {err}");
    assert_eq!(
        emu.calls("/api/company/organization"),
        1,
        "the attempt is counted"
    );

    let r = c
        .get(format!("{}/__emulator/fault", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, json!({"fault": "down"}));
    let r = c
        .post(format!("{}/__emulator/fault", emu.url()))
        .json(&json!({"fault": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emu.fault(), Fault::None);
    login(&c, &emu).await;
}

#[tokio::test]
async fn fault_slow_delays_answers() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let company = login(&c, &emu).await;
    emu.set_fault(Fault::Slow(Duration::from_secs(30)));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = quick
        .get(format!("{}/api/company/organization", emu.url()))
        .bearer_auth(&company)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The widget module is not an API call and is not slowed.
    let r = quick.get(emu.widget_url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    emu.set_fault(Fault::None);
    assert_eq!(
        get(&c, &emu, &company, "/api/company/organization")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn fault_500_and_429_answer_every_api_call() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let company = login(&c, &emu).await;
    emu.set_fault(Fault::Error500);
    assert_eq!(
        get(&c, &emu, &company, "/api/company/organization")
            .await
            .status(),
        500
    );
    let r = c
        .post(format!("{}/api/company/get-token", emu.url()))
        .json(&json!({"login": "demo", "password": "demo-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);

    emu.set_fault(Fault::TooMany {
        retry_after_secs: 7,
    });
    let r = get(&c, &emu, &company, "/api/operator?organizationId=6").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()[reqwest::header::RETRY_AFTER], "7");

    emu.set_fault(Fault::None);
    assert_eq!(
        get(&c, &emu, &company, "/api/operator?organizationId=6")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn fault_expire_forces_a_relogin() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let old = login(&c, &emu).await;
    emu.set_fault(Fault::ExpireCompanyTokens);
    let r = get(&c, &emu, &old, "/api/company/organization").await;
    assert_eq!(r.status(), 401);
    let fresh = login(&c, &emu).await;
    assert_eq!(
        get(&c, &emu, &fresh, "/api/company/organization")
            .await
            .status(),
        200,
        "a new login works"
    );
    let r = c
        .get(format!("{}/api/company/organization", emu.url()))
        .header("X-Authorization-Key", "demo-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the static key is not a token and does not expire"
    );
}

#[tokio::test]
async fn control_endpoint_flips_faults_and_reports_calls() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let control = |body: Value| {
        c.post(format!("{}/__emulator/fault", emu.url()))
            .json(&body)
            .send()
    };

    assert_eq!(
        control(json!({"fault": "500"})).await.unwrap().status(),
        200
    );
    assert_eq!(emu.fault(), Fault::Error500);
    control(json!({"fault": "429", "retry_after": 3}))
        .await
        .unwrap();
    assert_eq!(
        emu.fault(),
        Fault::TooMany {
            retry_after_secs: 3
        }
    );
    control(json!({"fault": "slow", "ms": 250})).await.unwrap();
    assert_eq!(emu.fault(), Fault::Slow(Duration::from_millis(250)));
    control(json!({"fault": "down"})).await.unwrap();
    assert_eq!(emu.fault(), Fault::Down);
    let old = {
        control(json!({"fault": "none"})).await.unwrap();
        login(&c, &emu).await
    };
    control(json!({"fault": "expire"})).await.unwrap();
    assert_eq!(
        get(&c, &emu, &old, "/api/company/organization")
            .await
            .status(),
        401
    );
    assert_eq!(
        control(json!({"fault": "melt"})).await.unwrap().status(),
        400
    );
    control(json!({"fault": "none"})).await.unwrap();

    let r = c
        .post(format!("{}/__emulator/token-style", emu.url()))
        .json(&json!({"style": "raw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/api/company/get-token", emu.url()))
        .json(&json!({"login": "demo", "password": "demo-password"}))
        .send()
        .await
        .unwrap();
    assert!(
        !r.text().await.unwrap().starts_with('"'),
        "raw style set over HTTP"
    );

    let calls = json_of(
        c.get(format!("{}/__emulator/calls", emu.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(calls["/api/company/get-token"], 2);
    assert_eq!(calls["/api/company/organization"], 1);
    assert_eq!(calls["/api/operator/get-token"], 0);
    c.post(format!("{}/__emulator/calls/reset", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(emu.calls("/api/company/get-token"), 0);
}

#[tokio::test]
async fn widget_module_and_its_check_are_served_with_cors() {
    let emu = start(Seed::demo()).await;
    let c = client();
    let r = c
        .get(format!("{}?v=3", emu.widget_url()))
        .header("Origin", "http://site.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(
        r.headers()[reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*"
    );
    let js = r.text().await.unwrap();
    for needle in [
        "getElementById(SCRIPT_ID)",
        "operator-chat-panel-script",
        "chathub-panel",
        "import.meta.url",
        "ChatHub EMULATOR",
        "/api/widget/validate",
    ] {
        assert!(js.contains(needle), "widget lacks {needle}");
    }
    assert!(
        !js.contains("eval(") && !js.contains("innerHTML"),
        "CSP-friendly and no markup injection"
    );

    let check = format!("{}/api/widget/validate", emu.url());
    let r = c
        .request(reqwest::Method::OPTIONS, &check)
        .header("Origin", "http://site.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()[reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*"
    );

    let token = emu
        .mint_operator_token(21, OffsetDateTime::now_utc() + time::Duration::hours(1))
        .unwrap();
    // The widget sends text/plain to stay a simple request; no company credentials.
    let r = c
        .post(&check)
        .header("Content-Type", "text/plain")
        .body(json!({"token": token}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()[reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*"
    );
    let v = json_of(r).await;
    assert_eq!(v["isValid"], true);
    assert_eq!(v["operatorName"], "Jane");
    assert_eq!(v["organizationName"], "Customer Support");
    let v = json_of(
        c.post(&check)
            .body(r#"{"token":"nope"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["isValid"], false);

    emu.set_fault(Fault::Error500);
    let r = c
        .post(&check)
        .body(r#"{"token":"nope"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.headers()[reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*",
        "the widget can read the failure"
    );
}

#[tokio::test]
async fn home_page_says_it_is_an_emulator() {
    let emu = start(Seed::demo()).await;
    let r = client().get(emu.url()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("EMULATOR") && text.contains("not the real ChatHub service"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let emu = start(Seed::demo()).await;
    let c = client();
    login(&c, &emu).await;
    emu.shutdown();
    // Poll: the listener closes asynchronously; a fresh client holds no pooled connection.
    let mut refused = false;
    for _ in 0..100 {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        if fresh.get(emu.url()).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the emulator still answers after shutdown");
}

#[tokio::test]
async fn bad_seeds_are_refused_and_the_seed_file_matches_the_builtin_demo() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/seed.toml");
    assert_eq!(Seed::from_file(&path).unwrap(), Seed::demo());
    let mut dup = Seed::demo();
    dup.companies[0].organizations[1].operators[0].id = 21;
    let err = Emulator::start("127.0.0.1:0".parse().unwrap(), dup)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn demo_site_serves_each_case() {
    let (addr, site) = demo::start_demo_site("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = client();
    let url = |p: &str| format!("http://{addr}{p}");
    let text = |p: &'static str| {
        let c = c.clone();
        let u = url(p);
        async move {
            let r = c.get(u).send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                r.text().await.unwrap(),
            )
        }
    };
    let (s, ct, home) = text("/").await;
    assert_eq!((s, ct.starts_with("text/html")), (200, true));
    assert!(home.contains("</body>") && home.contains("ChatHub EMULATOR"));
    let (_, _, no_end) = text("/no-body-end").await;
    assert!(!no_end.contains("</body>"));
    let (_, _, app) = text("/app").await;
    assert!(
        app.contains("<form")
            && app.contains("/static/app.js")
            && app.matches("</body>").count() == 4
    );
    let (_, ct, data) = text("/api/data.json").await;
    assert!(ct.starts_with("application/json"));
    serde_json::from_str::<Value>(&data).unwrap();
    let (_, _, slow) = text("/slow").await;
    assert!(slow.contains("Part 4") && slow.trim_end().ends_with("</html>"));
    let r = c.get(url("/csp")).send().await.unwrap();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("nonce-demo2024")
    );
    let (s, _, _) = text("/missing").await;
    assert_eq!(s, 404);

    let r = c
        .post(url("/submit"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=%3Cb%3EAda")
        .send()
        .await
        .unwrap();
    let thanks = r.text().await.unwrap();
    assert!(thanks.contains("Thanks, &lt;b&gt;Ada."), "{thanks}");

    let mut events = c.get(url("/events")).send().await.unwrap();
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let first = events.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("data: {\"tick\":1}"),
        "the first event arrives before the stream ends"
    );
    site.shutdown();
}
