//! The ChatHub HTTP API client, written against `shared/chathub-api.md`: login or
//! dashboard key, organizations, operators, operator tokens, validation,
//! synchronize and status, tolerant of every ambiguity that document lists.
//!
//! OWNER: chathub-client helper. CONTRACT STUB: signatures are fixed, bodies are not.

use crate::config::Account;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// An organization (E2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: i64,
    pub name: String,
}

/// Operator status, an open enum (§6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorStatus {
    Active,
    Inactive,
    Deleted,
    Other(i64),
}

/// An operator (E3/E4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub id: i64,
    pub name: String,
    pub status: OperatorStatus,
    pub organization_id: Option<i64>,
}

/// A minted operator token (E6) and the expiry the client asked for.
#[derive(Clone, Debug)]
pub struct OperatorToken {
    pub token: Secret,
    pub expires_at: OffsetDateTime,
}

/// Result of validate-token (E7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    pub valid: bool,
    pub operator_id: Option<i64>,
    pub expires_at: Option<OffsetDateTime>,
    pub error: Option<String>,
}

/// Everything that can go wrong talking to ChatHub. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ChatHubError {
    #[error("ChatHub unreachable: {method} {path}: {message}")]
    Network { method: &'static str, path: String, message: String },
    #[error("ChatHub timed out: {method} {path}")]
    Timeout { method: &'static str, path: String },
    #[error("ChatHub rejected the credentials ({method} {path}: {status})")]
    Auth { method: &'static str, path: String, status: u16 },
    #[error("ChatHub rate limit ({method} {path}), retry after {retry_after:?}")]
    RateLimited { method: &'static str, path: String, retry_after: Option<Duration> },
    #[error("ChatHub answered {status} to {method} {path}: {body}")]
    Http { method: &'static str, path: String, status: u16, body: String },
    #[error("ChatHub sent a body we cannot read ({method} {path}): {message}")]
    Decode { method: &'static str, path: String, message: String },
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

/// A client for one ChatHub account. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    account: Arc<Account>,
}

impl Client {
    /// Build a client (no network I/O yet).
    pub fn new(account: Arc<Account>) -> Result<Self, ChatHubError> {
        Ok(Client { account })
    }

    /// The account this client speaks for.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    fn todo(&self, path: &str) -> ChatHubError {
        ChatHubError::Network { method: "GET", path: path.into(), message: "not implemented".into() }
    }

    /// E2.
    pub async fn organizations(&self) -> Result<Vec<Organization>, ChatHubError> {
        Err(self.todo("/api/company/organization"))
    }

    /// Resolve an organization name (exact, then case-insensitive) to its id.
    pub async fn organization_id(&self, name: &str) -> Result<i64, ChatHubError> {
        Err(ChatHubError::UnknownOrganization(name.into()))
    }

    /// E3.
    pub async fn operators(&self, organization_id: i64) -> Result<Vec<Operator>, ChatHubError> {
        let _ = organization_id;
        Err(self.todo("/api/operator"))
    }

    /// E4: create operators by name. Never retried.
    pub async fn synchronize(&self, organization_id: i64, names: &[String]) -> Result<Vec<Operator>, ChatHubError> {
        let _ = (organization_id, names);
        Err(self.todo("/api/operator/synchronize"))
    }

    /// E5.
    pub async fn set_status(&self, operator_id: i64, status: OperatorStatus) -> Result<(), ChatHubError> {
        let _ = (operator_id, status);
        Err(self.todo("/api/operator/status"))
    }

    /// E6: `lifetime` is clamped to 24 h minus the skew margin.
    pub async fn operator_token(&self, operator_id: i64, lifetime: Duration) -> Result<OperatorToken, ChatHubError> {
        let _ = (operator_id, lifetime);
        Err(self.todo("/api/operator/get-token"))
    }

    /// E7.
    pub async fn validate_token(&self, token: &str) -> Result<Validation, ChatHubError> {
        let _ = token;
        Err(self.todo("/api/operator/validate-token"))
    }
}
