//! One request to ChatHub, end to end: the credential header, the body cap, the
//! `401` → re-login → retry-once rule, bounded retries for GETs, `Retry-After`,
//! and errors that keep method, path and status but never a secret.

use super::parse;
use super::{ChatHubError, Client};
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, warn};

/// Both answers ChatHub is known to give; the body is sniffed anyway.
const ACCEPT_ANY: &str = "application/json, text/plain;q=0.9, */*;q=0.1";

/// The HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verb {
    Get,
    Post,
}

impl Verb {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Verb::Get => reqwest::Method::GET,
            Verb::Post => reqwest::Method::POST,
        }
    }
}

/// What to send.
pub(super) struct Call {
    pub verb: Verb,
    /// Path and query, relative to the base URL; safe to log.
    pub path: String,
    body: Option<Bytes>,
    authenticated: bool,
    /// A value that must not appear in errors (e.g. the token being validated).
    secret: Option<String>,
}

impl Call {
    pub(super) fn new(verb: Verb, path: String) -> Call {
        Call {
            verb,
            path,
            body: None,
            authenticated: true,
            secret: None,
        }
    }

    pub(super) fn json(mut self, body: &serde_json::Value) -> Call {
        // Serialising a `Value` cannot fail; an empty body would be refused by the server.
        self.body = Some(Bytes::from(serde_json::to_vec(body).unwrap_or_default()));
        self
    }

    /// No credential header (E1).
    pub(super) fn anonymous(mut self) -> Call {
        self.authenticated = false;
        self
    }

    pub(super) fn hiding(mut self, secret: &str) -> Call {
        self.secret = Some(secret.to_string());
        self
    }
}

/// What came back, for the endpoint to interpret.
pub(super) struct Reply {
    pub status: u16,
    pub body: Bytes,
    retry_after: Option<Duration>,
}

impl Client {
    /// Send `call`, applying the re-login and retry rules. Returns every
    /// status the endpoint itself must judge (2xx, most 4xx, a final 5xx).
    pub(super) async fn execute(&self, call: &Call) -> Result<Reply, ChatHubError> {
        let opts = &self.inner.options;
        // Only GETs are retried: E4 may create duplicates, E1/E6 are not worth it.
        let tries = if call.verb == Verb::Get {
            opts.get_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0;
        let mut stale = None;
        let mut relogged = false;
        loop {
            let cred = match call.authenticated {
                true => Some(self.credential(stale).await?),
                false => None,
            };
            attempt += 1;
            let started = Instant::now();
            let outcome = self.send_once(call, cred.as_ref()).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let reply = match outcome {
                Ok(reply) => reply,
                // Timeouts are not retried: the caller's time is already spent.
                Err(e @ ChatHubError::Network { .. }) if attempt < tries => {
                    warn!(account = %self.account.name, method = call.verb.as_str(), path = %call.path, attempt, error = %e, "ChatHub request failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    debug!(account = %self.account.name, method = call.verb.as_str(), path = %call.path, attempt, elapsed_ms, error.kind = e.kind(), "ChatHub request failed");
                    return Err(e);
                }
            };
            debug!(account = %self.account.name, method = call.verb.as_str(), path = %call.path, status = reply.status, attempt, elapsed_ms, "ChatHub answered");
            match reply.status {
                401 if cred.is_some() => {
                    let (generation, renewable) =
                        cred.map_or((0, false), |c| (c.generation, c.renewable));
                    if relogged || !renewable {
                        return Err(ChatHubError::Auth {
                            method: call.verb.as_str(),
                            path: call.path.clone(),
                            status: 401,
                        });
                    }
                    // Once per call: log in again (or take a colleague's fresh token), then retry.
                    relogged = true;
                    stale = Some(generation);
                    attempt -= 1;
                }
                429 => {
                    let wait = reply.retry_after;
                    if attempt < tries && wait.is_none_or(|w| w <= opts.max_retry_after) {
                        let wait = wait.unwrap_or_else(|| self.backoff(attempt));
                        warn!(account = %self.account.name, method = call.verb.as_str(), path = %call.path, attempt, wait_ms = wait.as_millis() as u64, "ChatHub rate limit; retrying");
                        tokio::time::sleep(wait).await;
                    } else {
                        return Err(ChatHubError::RateLimited {
                            method: call.verb.as_str(),
                            path: call.path.clone(),
                            retry_after: wait,
                        });
                    }
                }
                500..=599 if attempt < tries => {
                    warn!(account = %self.account.name, method = call.verb.as_str(), path = %call.path, attempt, status = reply.status, "ChatHub server error; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                _ => return Ok(reply),
            }
        }
    }

    /// 50, 100, 200 ms… (for the default base) plus up to half again of jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .inner
            .options
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(8));
        let jitter_ms = rand::random_range(0..=(base.as_millis() as u64 / 2));
        base + Duration::from_millis(jitter_ms)
    }

    async fn send_once(
        &self,
        call: &Call,
        cred: Option<&super::auth::Credential>,
    ) -> Result<Reply, ChatHubError> {
        let url = format!("{}{}", self.inner.base, call.path);
        let mut req = self
            .inner
            .http
            .request(call.verb.method(), url)
            .header(ACCEPT, ACCEPT_ANY);
        if let Some(c) = cred {
            req = req.header(c.name.clone(), c.value.clone());
        }
        if let Some(body) = &call.body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(call, e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse::retry_after(v, SystemTime::now()));
        let max = self.inner.options.max_body_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(call, e))?
        {
            if body.len() + chunk.len() > max {
                return Err(ChatHubError::Decode {
                    method: call.verb.as_str(),
                    path: call.path.clone(),
                    message: format!("body larger than {max} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            body: Bytes::from(body),
            retry_after,
        })
    }

    /// Map a reqwest error without its URL, as a source chain, scrubbed.
    fn transport_error(&self, call: &Call, e: reqwest::Error) -> ChatHubError {
        if e.is_timeout() {
            return ChatHubError::Timeout {
                method: call.verb.as_str(),
                path: call.path.clone(),
            };
        }
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ChatHubError::Network {
            method: call.verb.as_str(),
            path: call.path.clone(),
            message: self.scrub(call, &message),
        }
    }

    /// Printable, short, and free of every secret this client knows.
    fn scrub(&self, call: &Call, text: &str) -> String {
        let owned = self.inner.auth.secrets();
        let mut secrets: Vec<&str> = owned.iter().map(|s| s.expose()).collect();
        secrets.extend(call.secret.as_deref());
        parse::summary(text.as_bytes(), &secrets)
    }

    /// The error for a status the endpoint does not accept.
    pub(super) fn http_error(&self, call: &Call, reply: &Reply) -> ChatHubError {
        let owned = self.inner.auth.secrets();
        let mut secrets: Vec<&str> = owned.iter().map(|s| s.expose()).collect();
        secrets.extend(call.secret.as_deref());
        ChatHubError::Http {
            method: call.verb.as_str(),
            path: call.path.clone(),
            status: reply.status,
            body: parse::summary(&reply.body, &secrets),
        }
    }

    /// The body of a 2xx answer, or the error for anything else.
    pub(super) fn success(&self, call: &Call, reply: Reply) -> Result<Bytes, ChatHubError> {
        match reply.status {
            200..=299 => Ok(reply.body),
            _ => Err(self.http_error(call, &reply)),
        }
    }
}
