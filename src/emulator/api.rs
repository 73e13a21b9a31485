//! The emulated ChatHub API: in-memory state and one function per endpoint,
//! E1–E7 of `shared/chathub-api.md`, plus the check the stand-in widget calls.
//! Everything here is synchronous; the HTTP layer in `mod.rs` reads the body,
//! applies faults and hands over plain bytes.

use super::jwt::Signer;
use super::{Fault, Seed, SeedOperator, TokenStyle};
use crate::body::{self, Body};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Paths whose calls are counted; anything else is not, so that arbitrary
/// request paths cannot grow the counter map.
pub(crate) const COUNTED: &[&str] = &[
    "/api/company/get-token",
    "/api/company/organization",
    "/api/operator",
    "/api/operator/synchronize",
    "/api/operator/status",
    "/api/operator/get-token",
    "/api/operator/validate-token",
    WIDGET_VALIDATE,
    WIDGET_SCRIPT,
];

/// Where the stand-in widget checks its token (browser-facing, CORS, no company auth).
pub(crate) const WIDGET_VALIDATE: &str = "/api/widget/validate";
/// Where the stand-in widget module is served, like the real widget's path.
pub(crate) const WIDGET_SCRIPT: &str = "/operator-chat-panel/widget-script.js";

/// The longest operator token E6 issues, as the docs state.
const MAX_OPERATOR_TOKEN: Duration = Duration::from_secs(24 * 3600);

/// Lock a mutex, carrying on after a panic elsewhere: the data is plain
/// counters and lists that stay consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Company {
    login: String,
    password: String,
    api_key: Option<String>,
    organizations: Vec<(i64, String)>,
}

struct Operator {
    id: i64,
    organization_id: i64,
    name: String,
    status: i64,
}

struct State {
    companies: Vec<Company>,
    operators: Vec<Operator>,
    next_operator_id: i64,
}

impl State {
    /// Whether organization `org` belongs to company `c`, and its name.
    fn org_name(&self, c: usize, org: i64) -> Option<&str> {
        let company = self.companies.get(c)?;
        company
            .organizations
            .iter()
            .find(|(id, _)| *id == org)
            .map(|(_, n)| n.as_str())
    }

    fn any_org_name(&self, org: i64) -> Option<&str> {
        self.companies
            .iter()
            .flat_map(|c| &c.organizations)
            .find(|(id, _)| *id == org)
            .map(|(_, n)| n.as_str())
    }

    /// The operator `id` if it belongs to company `c`.
    fn operator_mut(&mut self, c: usize, id: i64) -> Option<&mut Operator> {
        let orgs: Vec<i64> = self
            .companies
            .get(c)?
            .organizations
            .iter()
            .map(|(id, _)| *id)
            .collect();
        self.operators
            .iter_mut()
            .find(|o| o.id == id && orgs.contains(&o.organization_id))
    }
}

/// Everything the emulator's connections share.
pub(crate) struct Shared {
    signer: Signer,
    state: Mutex<State>,
    pub(crate) fault: Mutex<Fault>,
    pub(crate) style: Mutex<TokenStyle>,
    pub(crate) calls: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) company_ttl: Mutex<Duration>,
    /// Company tokens carry an issue number; those below this one are refused.
    revoked_below: AtomicU64,
    next_seq: AtomicU64,
}

impl Shared {
    pub(crate) fn new(seed: &Seed) -> Shared {
        let mut operators = Vec::new();
        let companies = seed
            .companies
            .iter()
            .map(|c| Company {
                login: c.login.clone(),
                password: c.password.clone(),
                api_key: c.api_key.clone(),
                organizations: c
                    .organizations
                    .iter()
                    .map(|o| {
                        operators.extend(o.operators.iter().map(|op| Operator {
                            id: op.id,
                            organization_id: o.id,
                            name: op.name.clone(),
                            status: op.status,
                        }));
                        (o.id, o.name.clone())
                    })
                    .collect(),
            })
            .collect();
        let next_operator_id = operators.iter().map(|o| o.id).max().unwrap_or(0).max(0) + 1;
        Shared {
            signer: Signer::random(),
            state: Mutex::new(State {
                companies,
                operators,
                next_operator_id,
            }),
            fault: Mutex::new(Fault::None),
            style: Mutex::new(TokenStyle::Quoted),
            calls: Mutex::new(BTreeMap::new()),
            company_ttl: Mutex::new(Duration::from_secs(3600)),
            revoked_below: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
        }
    }

    /// Count a call if `path` is one of the emulator's endpoints.
    pub(crate) fn count(&self, path: &str) {
        if let Some(p) = COUNTED.iter().find(|p| **p == path) {
            *lock(&self.calls).entry(p).or_insert(0) += 1;
        }
    }

    /// Refuse every company token issued so far (the `ExpireCompanyTokens` fault).
    pub(crate) fn revoke_company_tokens(&self) {
        self.revoked_below
            .store(self.next_seq.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Snapshot of one organization's operators, every status included.
    pub(crate) fn operators(&self, organization_id: i64) -> Vec<SeedOperator> {
        let st = lock(&self.state);
        st.operators
            .iter()
            .filter(|o| o.organization_id == organization_id)
            .map(|o| SeedOperator {
                id: o.id,
                name: o.name.clone(),
                status: o.status,
            })
            .collect()
    }

    /// Change an operator's status directly; false if there is no such operator.
    pub(crate) fn set_operator_status(&self, id: i64, status: i64) -> bool {
        let mut st = lock(&self.state);
        match st.operators.iter_mut().find(|o| o.id == id) {
            Some(o) => {
                o.status = status;
                true
            }
            None => false,
        }
    }

    /// Sign an operator token without E6's checks (expiry may be past or far).
    pub(crate) fn mint_operator_token(
        &self,
        id: i64,
        expires_at: OffsetDateTime,
    ) -> Option<String> {
        let st = lock(&self.state);
        let op = st.operators.iter().find(|o| o.id == id)?;
        let client = st.companies.iter().position(|c| {
            c.organizations
                .iter()
                .any(|(o, _)| *o == op.organization_id)
        })?;
        Some(self.sign_operator(op, client, expires_at))
    }

    fn sign_operator(&self, op: &Operator, company: usize, expires_at: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = Map::new();
        claims.insert("typ".into(), json!("operator"));
        claims.insert("operator_id".into(), json!(op.id));
        claims.insert("organization_id".into(), json!(op.organization_id));
        claims.insert("name".into(), json!(op.name));
        claims.insert("client_id".into(), json!(company as i64 + 1));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(expires_at.unix_timestamp()));
        // A nonce so that two tokens minted in the same second still differ.
        claims.insert(
            "jti".into(),
            json!(format!("{:032x}", rand::random::<u128>())),
        );
        self.signer.sign(&claims)
    }

    /// Answer one API request (faults already applied, body already read).
    pub(crate) fn api(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Body> {
        let now = OffsetDateTime::now_utc();
        let expected = match path {
            "/api/company/organization" | "/api/operator" => Method::GET,
            "/api/company/get-token"
            | "/api/operator/synchronize"
            | "/api/operator/status"
            | "/api/operator/get-token"
            | "/api/operator/validate-token"
            | WIDGET_VALIDATE => Method::POST,
            _ => return problem(StatusCode::NOT_FOUND, "Not Found"),
        };
        if method != expected {
            let mut r = problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            if let Ok(v) = HeaderValue::from_str(expected.as_str()) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        match path {
            "/api/company/get-token" => return self.company_token(body, now),
            WIDGET_VALIDATE => return self.widget_validate(body, now),
            _ => {}
        }
        let Some(company) = self.authenticate(headers, now) else {
            return unauthorized();
        };
        match path {
            "/api/company/organization" => self.organizations(company),
            "/api/operator" => self.list_operators(company, query),
            "/api/operator/synchronize" => self.synchronize(company, body),
            "/api/operator/status" => self.set_status(company, body),
            "/api/operator/get-token" => self.operator_token(company, body, now),
            _ => self.validate(company, body, now),
        }
    }

    /// The company (index) behind the request's credentials. Either header may
    /// carry the company JWT (the docs show both); the static key goes only in
    /// `X-Authorization-Key`.
    fn authenticate(&self, headers: &HeaderMap, now: OffsetDateTime) -> Option<usize> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        if let Some(c) = bearer.and_then(|t| self.company_of(t, now)) {
            return Some(c);
        }
        let key = headers
            .get("x-authorization-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)?;
        if let Some(c) = self.company_of(key, now) {
            return Some(c);
        }
        let st = lock(&self.state);
        st.companies
            .iter()
            .position(|c| c.api_key.as_deref() == Some(key))
    }

    fn company_of(&self, token: &str, now: OffsetDateTime) -> Option<usize> {
        let claims = self.signer.verify(token).ok()?;
        if claims.get("typ")?.as_str()? != "company"
            || claims.get("exp")?.as_i64()? <= now.unix_timestamp()
            || claims.get("seq")?.as_u64()? < self.revoked_below.load(Ordering::SeqCst)
        {
            return None;
        }
        let index = usize::try_from(claims.get("client_id")?.as_i64()? - 1).ok()?;
        (index < lock(&self.state).companies.len()).then_some(index)
    }

    /// E1.
    fn company_token(&self, body: &[u8], now: OffsetDateTime) -> Response<Body> {
        #[derive(Deserialize)]
        struct Login {
            login: String,
            password: String,
        }
        let l: Login = match serde_json::from_slice(body) {
            Ok(l) => l,
            Err(e) => return validation_problem(&e),
        };
        let (index, login) = {
            let st = lock(&self.state);
            match st
                .companies
                .iter()
                .position(|c| c.login == l.login && c.password == l.password)
            {
                Some(i) => (i, st.companies[i].login.clone()),
                None => return unauthorized(),
            }
        };
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let exp = now + *lock(&self.company_ttl);
        let mut claims = Map::new();
        claims.insert("typ".into(), json!("company"));
        claims.insert("sub".into(), json!(login));
        claims.insert("client_id".into(), json!(index as i64 + 1));
        claims.insert("seq".into(), json!(seq));
        claims.insert("iat".into(), json!(now.unix_timestamp()));
        claims.insert("exp".into(), json!(exp.unix_timestamp()));
        claims.insert(
            "jti".into(),
            json!(format!("{:032x}", rand::random::<u128>())),
        );
        self.token_response(self.signer.sign(&claims), exp)
    }

    /// A token body in the current [`TokenStyle`].
    fn token_response(&self, token: String, exp: OffsetDateTime) -> Response<Body> {
        let quoted = Value::String(token.clone()).to_string();
        let (text, content_type) = match *lock(&self.style) {
            TokenStyle::Quoted => (quoted, JSON),
            TokenStyle::Raw => (token, TEXT),
            TokenStyle::Object => (
                json!({"token": token, "expiration": rfc3339(exp)}).to_string(),
                JSON,
            ),
            TokenStyle::QuotedAsText => (quoted + "\n", TEXT),
        };
        respond(StatusCode::OK, content_type, text)
    }

    /// E2.
    fn organizations(&self, company: usize) -> Response<Body> {
        let st = lock(&self.state);
        let list: Vec<Value> = st
            .companies
            .get(company)
            .map(|c| {
                c.organizations
                    .iter()
                    .map(|(id, name)| json!({"id": id, "name": name}))
                    .collect()
            })
            .unwrap_or_default();
        json_response(StatusCode::OK, &Value::Array(list))
    }

    /// E3.
    fn list_operators(&self, company: usize, query: &str) -> Response<Body> {
        let org = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case("organizationId"))
            .map(|(_, v)| v.trim().parse::<i64>());
        let org = match org {
            Some(Ok(id)) => id,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "The organizationId field is required and must be an integer.",
                );
            }
        };
        let st = lock(&self.state);
        let Some(org_name) = st.org_name(company, org) else {
            return problem(StatusCode::NOT_FOUND, "Not Found");
        };
        let list: Vec<Value> = st
            .operators
            .iter()
            .filter(|o| o.organization_id == org)
            .map(|o| json!({"id": o.id, "name": o.name, "status": o.status, "organization": {"id": org, "name": org_name}}))
            .collect();
        json_response(StatusCode::OK, &Value::Array(list))
    }

    /// E4: creates every named operator (duplicates included), all or nothing.
    fn synchronize(&self, company: usize, body: &[u8]) -> Response<Body> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Item {
            organization_id: i64,
            name: String,
        }
        let items: Vec<Item> = match serde_json::from_slice(body) {
            Ok(i) => i,
            Err(e) => return validation_problem(&e),
        };
        let mut st = lock(&self.state);
        for it in &items {
            if it.name.trim().is_empty() {
                return problem(StatusCode::BAD_REQUEST, "The name field is required.");
            }
            if st.org_name(company, it.organization_id).is_none() {
                return problem(StatusCode::NOT_FOUND, "Not Found");
            }
        }
        let mut created = Vec::with_capacity(items.len());
        for it in items {
            let id = st.next_operator_id;
            st.next_operator_id += 1;
            created.push(json!({"id": id, "name": it.name, "status": 0}));
            st.operators.push(Operator {
                id,
                organization_id: it.organization_id,
                name: it.name,
                status: 0,
            });
        }
        json_response(StatusCode::OK, &Value::Array(created))
    }

    /// E5: 200 with no body.
    fn set_status(&self, company: usize, body: &[u8]) -> Response<Body> {
        #[derive(Deserialize)]
        struct Change {
            id: i64,
            status: i64,
        }
        let c: Change = match serde_json::from_slice(body) {
            Ok(c) => c,
            Err(e) => return validation_problem(&e),
        };
        if !(0..=2).contains(&c.status) {
            return problem(StatusCode::BAD_REQUEST, "status must be 0, 1 or 2.");
        }
        match lock(&self.state).operator_mut(company, c.id) {
            Some(op) => op.status = c.status,
            None => return problem(StatusCode::NOT_FOUND, "Not Found"),
        }
        respond(StatusCode::OK, TEXT, String::new())
    }

    /// E6.
    fn operator_token(&self, company: usize, body: &[u8], now: OffsetDateTime) -> Response<Body> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Ask {
            id: i64,
            expires_at: String,
        }
        let ask: Ask = match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(e) => return validation_problem(&e),
        };
        let Some(expires_at) = parse_time(&ask.expires_at) else {
            return problem(
                StatusCode::BAD_REQUEST,
                "expiresAt is not an ISO 8601 date-time.",
            );
        };
        if expires_at <= now {
            return problem(StatusCode::BAD_REQUEST, "expiresAt must be in the future.");
        }
        if expires_at - now > MAX_OPERATOR_TOKEN {
            return problem(
                StatusCode::BAD_REQUEST,
                "expiresAt must be no more than 24 hours ahead.",
            );
        }
        let token = {
            let mut st = lock(&self.state);
            match st.operator_mut(company, ask.id) {
                Some(op) if op.status != 2 => self.sign_operator(op, company, expires_at),
                _ => return problem(StatusCode::NOT_FOUND, "Not Found"),
            }
        };
        self.token_response(token, expires_at)
    }

    /// Check an operator token; the claims when valid, else the error text.
    fn check_operator_token(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Map<String, Value>, &'static str> {
        let claims = self.signer.verify(token).map_err(|_| "Invalid token")?;
        if claims.get("typ").and_then(Value::as_str) != Some("operator") {
            return Err("Invalid token");
        }
        match claims.get("exp").and_then(Value::as_i64) {
            Some(exp) if exp > now.unix_timestamp() => Ok(claims),
            Some(_) => Err("Token expired"),
            None => Err("Invalid token"),
        }
    }

    /// E7: always 200 for a readable request; `isValid` carries the verdict.
    fn validate(&self, company: usize, body: &[u8], now: OffsetDateTime) -> Response<Body> {
        let token = match token_field(body) {
            Ok(t) => t,
            Err(e) => return validation_problem(&e),
        };
        let claims = self.check_operator_token(&token, now).and_then(|c| {
            let own = c.get("client_id").and_then(Value::as_i64) == Some(company as i64 + 1);
            if own { Ok(c) } else { Err("Invalid token") }
        });
        let v = match claims {
            Ok(c) => json!({
                "isValid": true,
                "operatorId": c.get("operator_id").cloned().unwrap_or(Value::Null),
                "clientId": c.get("client_id").cloned().unwrap_or(Value::Null),
                "expiresAt": c.get("exp").and_then(Value::as_i64).and_then(rfc3339_ts),
                "error": null,
            }),
            Err(e) => json!({"isValid": false, "error": e}),
        };
        json_response(StatusCode::OK, &v)
    }

    /// The stand-in widget's check: no company auth, names for display.
    fn widget_validate(&self, body: &[u8], now: OffsetDateTime) -> Response<Body> {
        let token = match token_field(body) {
            Ok(t) => t,
            Err(e) => return validation_problem(&e),
        };
        let v = match self.check_operator_token(&token, now) {
            Ok(c) => {
                let id = c.get("operator_id").and_then(Value::as_i64);
                let org = c.get("organization_id").and_then(Value::as_i64);
                let st = lock(&self.state);
                let op = id.and_then(|id| st.operators.iter().find(|o| o.id == id));
                let operator_name = op
                    .map(|o| o.name.clone())
                    .or_else(|| c.get("name").and_then(Value::as_str).map(str::to_owned));
                let organization_name = org.and_then(|o| st.any_org_name(o)).map(str::to_owned);
                json!({
                    "isValid": true,
                    "operatorId": id,
                    "operatorName": operator_name,
                    "organizationName": organization_name,
                    "expiresAt": c.get("exp").and_then(Value::as_i64).and_then(rfc3339_ts),
                    "error": null,
                })
            }
            Err(e) => json!({"isValid": false, "error": e}),
        };
        json_response(StatusCode::OK, &v)
    }
}

/// The `token` of a `{"token": "..."}` body.
fn token_field(body: &[u8]) -> Result<String, serde_json::Error> {
    #[derive(Deserialize)]
    struct T {
        token: String,
    }
    serde_json::from_slice::<T>(body).map(|t| t.token)
}

const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

fn respond(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    respond(status, JSON, v.to_string())
}

/// 401 with an empty body and the challenge ASP.NET sends.
fn unauthorized() -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// An RFC 9457 problem body, shaped like ASP.NET Core's.
pub(crate) fn problem(status: StatusCode, title: &str) -> Response<Body> {
    let v = json!({"type": "about:blank", "title": title, "status": status.as_u16()});
    let mut r = respond(status, JSON, v.to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    r
}

fn validation_problem(e: &serde_json::Error) -> Response<Body> {
    let v = json!({
        "type": "about:blank",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {"$": [e.to_string()]},
    });
    let mut r = respond(StatusCode::BAD_REQUEST, JSON, v.to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    r
}

/// RFC 3339 with a `Z` offset; also accepts a date-time without offset as UTC,
/// as .NET clients may send.
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok())
}

/// Whole seconds, UTC, `Z`.
fn rfc3339(t: OffsetDateTime) -> Option<String> {
    rfc3339_ts(t.unix_timestamp())
}

fn rfc3339_ts(ts: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_and_without_offset_or_fraction() {
        let a = parse_time("2025-01-20T14:33:34.147Z").unwrap();
        let b = parse_time("2025-01-20T14:33:34.147").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            parse_time("2025-01-20T16:33:34+02:00")
                .unwrap()
                .unix_timestamp(),
            a.unix_timestamp()
        );
        assert!(parse_time("tomorrow").is_none());
        assert_eq!(rfc3339_ts(1_767_225_599).unwrap(), "2025-12-31T23:59:59Z");
    }
}
