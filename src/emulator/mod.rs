//! A local ChatHub EMULATOR (not the real service): the documented API over HTTP
//! with in-memory companies, organizations and operators, HS256 JWTs, switchable
//! faults for tests, and a stand-in widget module.
//!
//! OWNER: emulator helper. CONTRACT STUB: signatures are fixed, bodies are not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A fault the emulator can be switched into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Connections are accepted and closed at once.
    Down,
    /// Every API answer is delayed.
    Slow(Duration),
    /// Every API call answers 500.
    Error500,
    /// Every API call answers 429 with `Retry-After: secs`.
    TooMany { retry_after_secs: u64 },
    /// Company tokens issued so far are rejected once with 401 (forces a re-login).
    ExpireCompanyTokens,
}

/// How token bodies (E1, E6) are written, to exercise the client's tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStyle {
    /// `"eyJ..."` with `Content-Type: application/json`.
    Quoted,
    /// `eyJ...` with `Content-Type: text/plain`.
    Raw,
    /// `{"token": "...", "expiration": "..."}`.
    Object,
    /// Quoted JSON but labelled `text/plain` (a lying Content-Type), with a trailing newline.
    QuotedAsText,
}

/// Seed data: companies with organizations and operators.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Seed {
    pub companies: Vec<SeedCompany>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct SeedCompany {
    pub login: String,
    pub password: String,
    #[serde(default)]
    pub api_key: Option<String>,
    pub organizations: Vec<SeedOrganization>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct SeedOrganization {
    pub id: i64,
    pub name: String,
    pub operators: Vec<SeedOperator>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct SeedOperator {
    pub id: i64,
    pub name: String,
    /// 0 Active, 1 Inactive, 2 Deleted.
    #[serde(default)]
    pub status: i64,
}

impl Seed {
    /// One company `demo`/`demo-password` (API key `demo-key`) with two organizations.
    pub fn demo() -> Self {
        Seed::default()
    }
}

/// A running emulator.
#[derive(Clone)]
pub struct Emulator {
    addr: SocketAddr,
    _state: Arc<()>,
}

impl Emulator {
    /// Start on `addr` (use port 0 in tests).
    pub async fn start(addr: SocketAddr, seed: Seed) -> std::io::Result<Emulator> {
        let _ = seed;
        Ok(Emulator { addr, _state: Arc::new(()) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// URL of the stand-in widget module.
    pub fn widget_url(&self) -> String {
        format!("http://{}/operator-chat-panel/widget-script.js", self.addr)
    }

    pub fn set_fault(&self, fault: Fault) {
        let _ = fault;
    }

    pub fn set_token_style(&self, style: TokenStyle) {
        let _ = style;
    }

    /// How many times an endpoint was called, by path (e.g. `/api/operator/get-token`).
    pub fn calls(&self, path: &str) -> u64 {
        let _ = path;
        0
    }

    /// Stop serving.
    pub fn shutdown(&self) {}
}
