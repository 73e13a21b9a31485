//! Company authentication: a static dashboard key, or a login whose JWT is
//! renewed on `401` (and shortly before a readable `exp`). Re-logins go through
//! one gate with a generation counter, so that any number of callers that saw
//! the same token rejected cause exactly one call to E1.

use super::parse;
use super::transport::{Call, Verb};
use super::{ChatHubError, Client};
use crate::config::Credentials;
use crate::secret::Secret;
use arc_swap::ArcSwapOption;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

/// Where the dashboard key travels.
static X_AUTHORIZATION_KEY: HeaderName = HeaderName::from_static("x-authorization-key");

const LOGIN_PATH: &str = "/api/company/get-token";

/// How this client proves who it is.
pub(super) enum Auth {
    /// A static dashboard key: no login, a `401` is final.
    Key { value: HeaderValue, key: Secret },
    /// Login and password for E1.
    Login(Login),
}

pub(super) struct Login {
    login: String,
    password: Secret,
    /// The company token in use; read without locking on every request.
    current: ArcSwapOption<CompanyToken>,
    /// Held for the whole login call: callers queue here instead of calling E1.
    gate: tokio::sync::Mutex<Gate>,
    /// Failed logins so far, readable before queueing at the gate.
    failures: AtomicU64,
}

struct Gate {
    generation: u64,
    last_failure: Option<(Instant, ChatHubError)>,
}

struct CompanyToken {
    generation: u64,
    header: HeaderValue,
    secret: Secret,
    /// From a readable JWT `exp` or the object shape's `expiration`.
    expires_at: Option<OffsetDateTime>,
    /// When to log in again before `expires_at`.
    refresh_at: Option<OffsetDateTime>,
}

impl CompanyToken {
    fn credential(&self) -> Credential {
        Credential {
            generation: self.generation,
            renewable: true,
            name: AUTHORIZATION,
            value: self.header.clone(),
        }
    }

    fn usable(&self, stale: Option<u64>, now: OffsetDateTime) -> bool {
        Some(self.generation) != stale && self.refresh_at.is_none_or(|r| now < r)
    }

    fn unexpired(&self, stale: Option<u64>, now: OffsetDateTime) -> bool {
        Some(self.generation) != stale && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The header one request carries.
pub(super) struct Credential {
    /// Which company token this is; `0` for a key.
    pub generation: u64,
    /// Whether a `401` can be cured by logging in again.
    pub renewable: bool,
    pub name: HeaderName,
    pub value: HeaderValue,
}

fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    // Keeps the value out of HPACK tables and out of `Debug` output.
    v.set_sensitive(true);
    Some(v)
}

impl Auth {
    pub(super) fn new(credentials: &Credentials) -> Result<Auth, ChatHubError> {
        match credentials {
            Credentials::ApiKey(key) => {
                let bare = parse::strip_bearer(key.expose());
                let value = match (parse::check_token(bare), sensitive(bare)) {
                    (Ok(()), Some(v)) => v,
                    _ => {
                        return Err(ChatHubError::Auth {
                            method: "CONFIG",
                            path: "X-Authorization-Key".into(),
                            status: 0,
                        });
                    }
                };
                Ok(Auth::Key {
                    value,
                    key: Secret::new(bare),
                })
            }
            Credentials::Login { login, password } => Ok(Auth::Login(Login {
                login: login.clone(),
                password: password.clone(),
                current: ArcSwapOption::empty(),
                gate: tokio::sync::Mutex::new(Gate {
                    generation: 0,
                    last_failure: None,
                }),
                failures: AtomicU64::new(0),
            })),
        }
    }

    /// Every secret this client knows, to scrub from error text.
    pub(super) fn secrets(&self) -> Vec<Secret> {
        match self {
            Auth::Key { key, .. } => vec![key.clone()],
            Auth::Login(l) => {
                let mut v = vec![l.password.clone()];
                if let Some(t) = l.current.load_full() {
                    v.push(t.secret.clone());
                }
                v
            }
        }
    }
}

impl Client {
    /// The header for the next request. `stale` is the generation a `401` just
    /// rejected: the first caller past the gate logs in again, and everyone who
    /// queued behind it takes the new token.
    pub(super) async fn credential(&self, stale: Option<u64>) -> Result<Credential, ChatHubError> {
        let login = match &self.inner.auth {
            Auth::Key { value, .. } => {
                return Ok(Credential {
                    generation: 0,
                    renewable: false,
                    name: X_AUTHORIZATION_KEY.clone(),
                    value: value.clone(),
                });
            }
            Auth::Login(l) => l,
        };
        if let Some(t) = login.current.load_full()
            && t.usable(stale, OffsetDateTime::now_utc())
        {
            return Ok(t.credential());
        }
        let failures_seen = login.failures.load(Ordering::Acquire);
        let mut gate = login.gate.lock().await;
        let now = OffsetDateTime::now_utc();
        let current = login.current.load_full();
        if let Some(t) = &current
            && t.usable(stale, now)
        {
            return Ok(t.credential());
        }
        // Still valid but due for an early refresh: a failed refresh falls back to it.
        let fallback = current.filter(|t| t.unexpired(stale, now));
        if let Some((at, err)) = &gate.last_failure {
            // Someone failed while we queued, or a login failed moments ago:
            // share that answer instead of hammering E1.
            if login.failures.load(Ordering::Acquire) != failures_seen
                || at.elapsed() < self.inner.options.login_backoff
            {
                return match fallback {
                    Some(t) => Ok(t.credential()),
                    None => Err(err.clone()),
                };
            }
        }
        let reason = if stale.is_some() {
            "token_rejected"
        } else if fallback.is_some() {
            "token_expiring"
        } else {
            "no_token"
        };
        info!(account = %self.account.name, reason, "logging in to ChatHub");
        match self.login_call(login).await {
            Ok(parsed) => {
                gate.generation += 1;
                let token = self.company_token(gate.generation, parsed, now)?;
                let cred = token.credential();
                login.current.store(Some(Arc::new(token)));
                gate.last_failure = None;
                Ok(cred)
            }
            Err(e) => {
                warn!(account = %self.account.name, error.kind = e.kind(), error = %e, "ChatHub login failed");
                login.failures.fetch_add(1, Ordering::AcqRel);
                gate.last_failure = Some((Instant::now(), e.clone()));
                match fallback {
                    Some(t) => Ok(t.credential()),
                    None => Err(e),
                }
            }
        }
    }

    fn company_token(
        &self,
        generation: u64,
        parsed: parse::ParsedToken,
        now: OffsetDateTime,
    ) -> Result<CompanyToken, ChatHubError> {
        let header =
            sensitive(&format!("Bearer {}", parsed.token)).ok_or_else(|| ChatHubError::Decode {
                method: "POST",
                path: LOGIN_PATH.into(),
                message: "company token is not a valid header value".into(),
            })?;
        // An expiry already in the past says more about clocks than the token;
        // ignoring it avoids a login on every request.
        let expires_at = parse::jwt_exp(&parsed.token)
            .into_iter()
            .chain(parsed.expiration)
            .filter(|e| *e > now)
            .min();
        // Early, but never in the first half of the token's life: a short-lived
        // token must not cause a login per request.
        let ahead = time::Duration::try_from(self.inner.options.refresh_ahead)
            .unwrap_or(time::Duration::MAX);
        let refresh_at = expires_at.map(|e| e - ahead.min((e - now) / 2));
        if !parse::looks_like_jwt(&parsed.token) {
            debug!(account = %self.account.name, "company token is not a JWT; using it as is");
        }
        Ok(CompanyToken {
            generation,
            header,
            secret: Secret::new(parsed.token),
            expires_at,
            refresh_at,
        })
    }

    /// E1. Never retried: a login is cheap to repeat later, costly to stampede.
    async fn login_call(&self, login: &Login) -> Result<parse::ParsedToken, ChatHubError> {
        let body = serde_json::json!({ "login": login.login, "password": login.password.expose() });
        let call = Call::new(Verb::Post, LOGIN_PATH.to_string())
            .json(&body)
            .anonymous();
        // Boxed: `execute` may call `credential`, which may call this.
        let reply = Box::pin(self.execute(&call)).await?;
        match reply.status {
            200..=299 => parse::token(&reply.body).map_err(|e| ChatHubError::Decode {
                method: "POST",
                path: LOGIN_PATH.into(),
                message: e.message().into(),
            }),
            401 | 403 => Err(ChatHubError::Auth {
                method: "POST",
                path: LOGIN_PATH.into(),
                status: reply.status,
            }),
            _ => Err(self.http_error(&call, &reply)),
        }
    }
}
