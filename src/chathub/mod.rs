//! The ChatHub HTTP API client, written against `shared/chathub-api.md`: login or
//! dashboard key, organizations, operators, operator tokens, validation,
//! synchronize and status, tolerant of every ambiguity that document lists.
//!
//! `transport` sends one request with the retry and re-login rules, `auth`
//! holds the company credential, `parse` reads bodies by content.

mod auth;
mod parse;
mod transport;

use crate::config::Account;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::{debug, info, warn};
use transport::{Call, Verb};

/// An organization (E2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    /// Organization id.
    pub id: i64,
    /// Display name; empty when ChatHub sent none.
    pub name: String,
}

/// Operator status, an open enum (§6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorStatus {
    /// 0: working, can receive chats.
    Active,
    /// 1: temporarily disabled.
    Inactive,
    /// 2: removed.
    Deleted,
    /// Any other code; `-1` when ChatHub sent something that is not a number.
    Other(i64),
}

impl OperatorStatus {
    /// The status for a wire code.
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => OperatorStatus::Active,
            1 => OperatorStatus::Inactive,
            2 => OperatorStatus::Deleted,
            n => OperatorStatus::Other(n),
        }
    }

    /// The wire code.
    pub fn code(self) -> i64 {
        match self {
            OperatorStatus::Active => 0,
            OperatorStatus::Inactive => 1,
            OperatorStatus::Deleted => 2,
            OperatorStatus::Other(n) => n,
        }
    }
}

/// An operator (E3/E4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// Operator id.
    pub id: i64,
    /// Display name; empty when ChatHub sent none.
    pub name: String,
    /// Missing in a body counts as [`OperatorStatus::Active`].
    pub status: OperatorStatus,
    /// The parent organization, from the body or from the request.
    pub organization_id: Option<i64>,
}

/// A minted operator token (E6) and the expiry the client asked for.
#[derive(Clone, Debug)]
pub struct OperatorToken {
    /// The operator JWT, for the widget's `token` attribute only.
    pub token: Secret,
    /// What was requested, or earlier if the token's own `exp` says so.
    pub expires_at: OffsetDateTime,
}

/// Result of validate-token (E7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// `isValid` (or the older `valid`); a missing flag means invalid.
    pub valid: bool,
    /// Absent (or 0) for invalid tokens.
    pub operator_id: Option<i64>,
    /// The token's expiry as ChatHub reports it.
    pub expires_at: Option<OffsetDateTime>,
    /// ChatHub's reason, when it gives one.
    pub error: Option<String>,
}

/// Everything that can go wrong talking to ChatHub. Never carries a secret.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ChatHubError {
    /// Connection refused or reset, DNS, TLS, a broken body.
    #[error("ChatHub unreachable: {method} {path}: {message}")]
    Network {
        method: &'static str,
        path: String,
        message: String,
    },
    /// The connect or request timeout of the account ran out.
    #[error("ChatHub timed out: {method} {path}")]
    Timeout { method: &'static str, path: String },
    /// Wrong credentials, a second `401`, or a `401` for a dashboard key.
    #[error("ChatHub rejected the credentials ({method} {path}: {status})")]
    Auth {
        method: &'static str,
        path: String,
        status: u16,
    },
    /// `429`, with `Retry-After` when ChatHub sent one.
    #[error("ChatHub rate limit ({method} {path}), retry after {retry_after:?}")]
    RateLimited {
        method: &'static str,
        path: String,
        retry_after: Option<Duration>,
    },
    /// Any other unexpected status; `body` is a short, scrubbed summary.
    #[error("ChatHub answered {status} to {method} {path}: {body}")]
    Http {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    /// A success body that cannot be read.
    #[error("ChatHub sent a body we cannot read ({method} {path}): {message}")]
    Decode {
        method: &'static str,
        path: String,
        message: String,
    },
    /// `organization_id` found no such name.
    #[error("no organization named `{0}`")]
    UnknownOrganization(String),
}

impl ChatHubError {
    /// A short stable name for metrics and skip reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            ChatHubError::Network { .. } => "network",
            ChatHubError::Timeout { .. } => "timeout",
            ChatHubError::Auth { .. } => "auth",
            ChatHubError::RateLimited { .. } => "rate_limited",
            ChatHubError::Http { .. } => "http",
            ChatHubError::Decode { .. } => "decode",
            ChatHubError::UnknownOrganization(_) => "unknown_organization",
        }
    }
}

/// Tuning that is not part of an [`Account`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Subtracted from 24 h when clamping E6's `expiresAt`, for clock skew.
    pub skew_margin: Duration,
    /// Tries per GET (network errors, 5xx, short 429s); POSTs get one.
    pub get_attempts: u32,
    /// First retry delay; doubles per try, plus up to 50 % jitter.
    pub backoff: Duration,
    /// A GET waits out a `Retry-After` up to this long; longer ones are returned.
    pub max_retry_after: Duration,
    /// After a failed login, callers get that error for this long instead of a new login.
    pub login_backoff: Duration,
    /// Log in again this long before a readable company-token expiry.
    pub refresh_ahead: Duration,
    /// Bodies larger than this are refused.
    pub max_body_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            skew_margin: Duration::from_secs(120),
            get_attempts: 3,
            backoff: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
            login_backoff: Duration::from_secs(1),
            refresh_ahead: Duration::from_secs(60),
            max_body_bytes: 4 << 20,
        }
    }
}

/// The longest operator token ChatHub issues.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A client for one ChatHub account. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    account: Arc<Account>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials: only where this client talks to.
        f.debug_struct("Client")
            .field("account", &self.account.name)
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    /// The base URL without a trailing slash; paths start with one.
    base: String,
    options: ClientOptions,
    auth: auth::Auth,
}

impl Client {
    /// Build a client with default [`ClientOptions`] (no network I/O yet).
    pub fn new(account: Arc<Account>) -> Result<Self, ChatHubError> {
        Self::with_options(account, ClientOptions::default())
    }

    /// Build a client (no network I/O yet).
    pub fn with_options(
        account: Arc<Account>,
        options: ClientOptions,
    ) -> Result<Self, ChatHubError> {
        crate::init_crypto();
        let http = reqwest::Client::builder()
            .connect_timeout(account.connect_timeout)
            .timeout(account.request_timeout)
            // A redirect would carry X-Authorization-Key to another host
            // (reqwest strips only Authorization); the API has no redirects.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chathub-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChatHubError::Network {
                method: "-",
                path: String::new(),
                message: format!("cannot build the HTTP client: {}", e.without_url()),
            })?;
        let mut base = account.base_url.clone();
        if !base.username().is_empty() || base.password().is_some() {
            // reqwest would turn these into Basic auth, next to our own header.
            warn!(account = %account.name, "ignoring user info in the ChatHub base URL");
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        base.set_query(None);
        base.set_fragment(None);
        let base = base.as_str().trim_end_matches('/').to_string();
        let auth = auth::Auth::new(&account.credentials)?;
        Ok(Client {
            account,
            inner: Arc::new(Inner {
                http,
                base,
                options,
                auth,
            }),
        })
    }

    /// The account this client speaks for.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    fn decode(call: &Call, message: impl Into<String>) -> ChatHubError {
        ChatHubError::Decode {
            method: call.verb.as_str(),
            path: call.path.clone(),
            message: message.into(),
        }
    }

    /// E2.
    pub async fn organizations(&self) -> Result<Vec<Organization>, ChatHubError> {
        let call = Call::new(Verb::Get, "/api/company/organization".into());
        let reply = self.execute(&call).await?;
        let body = self.success(&call, reply)?;
        let (orgs, skipped) = parse::organizations(&body).map_err(|m| Self::decode(&call, m))?;
        if skipped > 0 {
            warn!(account = %self.account.name, skipped, "organizations without an id ignored");
        }
        Ok(orgs)
    }

    /// Resolve an organization name (exact, then case-insensitive) to its id.
    pub async fn organization_id(&self, name: &str) -> Result<i64, ChatHubError> {
        let orgs = self.organizations().await?;
        find_organization(&orgs, name).ok_or_else(|| ChatHubError::UnknownOrganization(name.into()))
    }

    /// E3.
    pub async fn operators(&self, organization_id: i64) -> Result<Vec<Operator>, ChatHubError> {
        let call = Call::new(
            Verb::Get,
            format!("/api/operator?organizationId={organization_id}"),
        );
        let reply = self.execute(&call).await?;
        let body = self.success(&call, reply)?;
        let (ops, skipped) =
            parse::operators(&body, Some(organization_id)).map_err(|m| Self::decode(&call, m))?;
        if skipped > 0 {
            warn!(account = %self.account.name, organization_id, skipped, "operators without an id ignored");
        }
        Ok(ops)
    }

    /// E4: make sure operators with these names exist, creating the missing
    /// ones, and return one operator per distinct requested name (existing or
    /// new) in request order. Names already present (per E3) are not sent, and
    /// the call is never retried, since E4 may create duplicates.
    /// An operator that exists only as Deleted counts as existing (it is
    /// returned, not recreated): reactivate it with [`Client::set_status`].
    pub async fn synchronize(
        &self,
        organization_id: i64,
        names: &[String],
    ) -> Result<Vec<Operator>, ChatHubError> {
        let mut wanted: Vec<&str> = Vec::new();
        for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if !wanted.contains(&n) {
                wanted.push(n);
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.operators(organization_id).await?;
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|n| by_name(&existing, n).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(wanted
                .iter()
                .filter_map(|n| by_name(&existing, n).cloned())
                .collect());
        }
        let body = serde_json::Value::Array(
            missing
                .iter()
                .map(|n| serde_json::json!({ "organizationId": organization_id, "name": n }))
                .collect(),
        );
        let call = Call::new(Verb::Post, "/api/operator/synchronize".into()).json(&body);
        let reply = self.execute(&call).await?;
        let body = self.success(&call, reply)?;
        info!(account = %self.account.name, organization_id, created = missing.len(), "operators synchronized");
        let created = parse::operators(&body, Some(organization_id))
            .map(|(ops, _)| ops)
            .unwrap_or_default();
        let all_known = missing.iter().all(|n| by_name(&created, n).is_some());
        let listed = if all_known {
            existing.into_iter().chain(created).collect()
        } else {
            // The body was empty, unreadable or partial: ask E3 what exists now.
            debug!(account = %self.account.name, organization_id, "synchronize body incomplete; listing operators");
            self.operators(organization_id).await?
        };
        Ok(wanted
            .iter()
            .filter_map(|n| by_name(&listed, n).cloned())
            .collect())
    }

    /// E5. Any 2xx body (empty, `OK`, `null`, JSON) counts as success.
    pub async fn set_status(
        &self,
        operator_id: i64,
        status: OperatorStatus,
    ) -> Result<(), ChatHubError> {
        let body = serde_json::json!({ "id": operator_id, "status": status.code() });
        let call = Call::new(Verb::Post, "/api/operator/status".into()).json(&body);
        let reply = self.execute(&call).await?;
        self.success(&call, reply).map(|_| ())
    }

    /// E6: `lifetime` is clamped to 24 h minus the skew margin; `expiresAt`
    /// goes out in UTC with `Z`, in whole seconds.
    pub async fn operator_token(
        &self,
        operator_id: i64,
        lifetime: Duration,
    ) -> Result<OperatorToken, ChatHubError> {
        let now = OffsetDateTime::now_utc();
        let max = MAX_TOKEN_LIFETIME.saturating_sub(self.inner.options.skew_margin);
        let requested = now + lifetime.min(max);
        // Whole seconds, rounded down, so what we report is never later than what we sent.
        let requested = requested.replace_nanosecond(0).unwrap_or(requested);
        let body =
            serde_json::json!({ "id": operator_id, "expiresAt": parse::format_utc(requested) });
        let call = Call::new(Verb::Post, "/api/operator/get-token".into()).json(&body);
        let reply = self.execute(&call).await?;
        let body = self.success(&call, reply)?;
        let parsed = parse::token(&body).map_err(|e| Self::decode(&call, e.message()))?;
        // An `exp` before ours shortens the token's life; one already past says
        // more about clocks and is ignored, or every page would mint anew.
        let claimed = parse::jwt_exp(&parsed.token)
            .into_iter()
            .chain(parsed.expiration)
            .filter(|e| *e > now)
            .min();
        let expires_at = claimed.map_or(requested, |c| c.min(requested));
        if !parse::looks_like_jwt(&parsed.token) {
            debug!(account = %self.account.name, operator_id, "operator token is not a JWT; using it as is");
        }
        Ok(OperatorToken {
            token: Secret::new(parsed.token),
            expires_at,
        })
    }

    /// E7. Invalid tokens come back as `valid: false` whether ChatHub says so
    /// with a 200 or with a 4xx carrying a JSON object; a `401` is about the
    /// company credential and follows the re-login rule.
    pub async fn validate_token(&self, token: &str) -> Result<Validation, ChatHubError> {
        let token = parse::strip_bearer(token);
        let body = serde_json::json!({ "token": token });
        let call = Call::new(Verb::Post, "/api/operator/validate-token".into())
            .json(&body)
            .hiding(token);
        let reply = self.execute(&call).await?;
        match reply.status {
            200..=299 => parse::validation(&reply.body)
                .ok_or_else(|| Self::decode(&call, "expected a JSON object")),
            400..=499 => match parse::validation(&reply.body) {
                Some(v) => Ok(Validation { valid: false, ..v }),
                None => Err(self.http_error(&call, &reply)),
            },
            _ => Err(self.http_error(&call, &reply)),
        }
    }
}

/// Exact name first, then a case-insensitive match.
fn find_organization(orgs: &[Organization], name: &str) -> Option<i64> {
    let name = name.trim();
    if let Some(o) = orgs.iter().find(|o| o.name == name) {
        return Some(o.id);
    }
    let lower = name.to_lowercase();
    let mut matches = orgs.iter().filter(|o| o.name.to_lowercase() == lower);
    let first = matches.next()?;
    if matches.next().is_some() {
        warn!(
            organization = name,
            "several organizations match case-insensitively; taking the first"
        );
    }
    Some(first.id)
}

/// The operator with this exact name (trimmed), preferring one that is not deleted.
fn by_name<'a>(ops: &'a [Operator], name: &str) -> Option<&'a Operator> {
    let same = || ops.iter().filter(move |o| o.name.trim() == name);
    same()
        .find(|o| o.status != OperatorStatus::Deleted)
        .or_else(|| same().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_lookup_prefers_exact() {
        let orgs = vec![
            Organization {
                id: 1,
                name: "Support".into(),
            },
            Organization {
                id: 2,
                name: "support".into(),
            },
            Organization {
                id: 3,
                name: "Sales".into(),
            },
        ];
        assert_eq!(find_organization(&orgs, "support"), Some(2));
        assert_eq!(find_organization(&orgs, "Support"), Some(1));
        assert_eq!(find_organization(&orgs, "SALES "), Some(3));
        assert_eq!(find_organization(&orgs, "Billing"), None);
    }

    #[test]
    fn status_codes_round_trip() {
        for code in [-1, 0, 1, 2, 7] {
            assert_eq!(OperatorStatus::from_code(code).code(), code);
        }
    }

    #[test]
    fn errors_have_stable_kinds() {
        let e = ChatHubError::Timeout {
            method: "GET",
            path: "/x".into(),
        };
        assert_eq!(e.kind(), "timeout");
        assert_eq!(
            ChatHubError::UnknownOrganization("x".into()).kind(),
            "unknown_organization"
        );
    }
}
