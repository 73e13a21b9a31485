//! Configuration in two phases: figment layers built-in defaults < `config.toml`
//! (or `--config PATH`) < `CHATHUB_PROXY_*` environment into a permissive
//! [`raw::RawConfig`], then [`validate`] turns it into the typed [`Config`] the rest
//! of the proxy reads, reporting every problem at once with its key and source.

pub mod raw;
mod validate;

use crate::secret::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use validate::validate;

/// Prefix of every environment variable the proxy reads; `__` separates levels.
pub const ENV_PREFIX: &str = "CHATHUB_PROXY_";

/// The validated, typed configuration. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin_listen: Option<SocketAddr>,
    pub log: LogConfig,
    pub upstream: UpstreamConfig,
    pub inject: InjectConfig,
    pub session: SessionConfig,
    pub token: TokenConfig,
    pub redis: Option<RedisConfig>,
    pub accounts: Vec<Arc<Account>>,
    pub routes: Vec<Arc<Route>>,
    /// Index into `routes` of the route used when no host matches.
    pub default_route: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub grace_period: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub h2_max_concurrent_streams: u32,
    /// Runtime worker threads; `None` means one per core.
    pub worker_threads: Option<usize>,
}

impl ServerConfig {
    /// Whether forwarded headers from this peer are believed.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Trusted for `https` upstreams besides the system's roots (`ca_file`).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// An inclusive range of HTTP status codes eligible for injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

#[derive(Debug, Clone)]
pub struct InjectConfig {
    pub widget_url: String,
    pub script_id: String,
    pub token_attribute: String,
    /// Lower-cased media types (no parameters).
    pub content_types: Vec<String>,
    pub statuses: Vec<StatusRange>,
    pub exclude_statuses: Vec<u16>,
    pub iframes: bool,
    pub debug_header: bool,
    pub dev_token: Option<String>,
    pub max_rewriter_memory: usize,
    pub max_decompressed_bytes: u64,
    pub max_decompression_ratio: u64,
    pub fallback_html: Option<String>,
    pub token_path: String,
    pub helper_path: String,
    pub refresh_helper: bool,
    /// ASCII-serialised origins (`https://chatapi.example`) for `connect-src`.
    pub connect_origins: Vec<String>,
}

impl InjectConfig {
    /// Whether a response status may carry an injected page.
    pub fn status_eligible(&self, status: u16) -> bool {
        !self.exclude_statuses.contains(&status)
            && self.statuses.iter().any(|r| (r.0..=r.1).contains(&status))
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Requested lifetime of an operator token; at most 24 h.
    pub lifetime: Duration,
    /// Refresh a cached token when less than this remains.
    pub refresh_ahead: Duration,
    /// Never hand out a token with less than this left.
    pub safety_margin: Duration,
    /// Subtracted from 24 h when clamping `expiresAt`, for clock skew.
    pub skew_margin: Duration,
    pub capacity: u64,
    /// How long a page waits for a cold mint before going out without the widget.
    pub budget: Duration,
    pub operators_ttl: Duration,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    pub lock_ttl: Duration,
    pub timeout: Duration,
}

/// How a ChatHub account authenticates. Both carry secrets that never print.
#[derive(Clone)]
pub enum Credentials {
    /// `login` + password → company JWT → `Authorization: Bearer`.
    Login { login: String, password: Secret },
    /// A static dashboard key sent as `X-Authorization-Key`.
    ApiKey(Secret),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Login { login, .. } => {
                write!(f, "Login {{ login: {login:?}, password: <redacted> }}")
            }
            Credentials::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub base_url: url::Url,
    pub credentials: Credentials,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// An organization as config names it; names are resolved through the API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrgRef {
    Id(i64),
    Name(String),
}

/// Where the `identity` rule reads the signed-in user from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySource {
    /// Header set by an auth layer in front; believed only from trusted proxies.
    pub header: Option<http::HeaderName>,
    pub basic_auth: bool,
    pub cookie: Option<String>,
}

/// Which operator's token a session gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorRule {
    Fixed(i64),
    FirstActive,
    Identity {
        source: IdentitySource,
        /// Identity → operator id, checked first.
        map: Vec<(String, i64)>,
        /// Fall back to an operator whose name equals the identity.
        by_name: bool,
        /// Create a missing operator through synchronize.
        provision: bool,
    },
    Spread,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CspMode {
    /// `nonce` when the page's policy uses nonces or `'strict-dynamic'`, else `amend`.
    Auto,
    Nonce,
    Amend,
    Off,
}

/// The ChatHub side of a route: whose tokens its pages carry.
#[derive(Debug, Clone)]
pub struct ChatTarget {
    pub account: Arc<Account>,
    pub organization: OrgRef,
    pub operator: OperatorRule,
}

/// A host pattern: exact name or `*.suffix` wildcard, lower-case, optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case name without the `*.`; for a wildcard this is the suffix.
    pub name: String,
    pub wildcard: bool,
    pub port: Option<u16>,
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    /// Normalised to start with `/` and not end with `/` (empty = everything).
    pub path_prefix: String,
    pub upstream: http::Uri,
    pub preserve_host: bool,
    pub inject: bool,
    pub exclude_paths: Vec<String>,
    /// `None` when the route injects the development token (or nothing).
    pub chat: Option<ChatTarget>,
    pub csp: CspMode,
}

impl Route {
    /// Whether `path` falls under one of the route's excluded path prefixes,
    /// on segment boundaries.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.exclude_paths.iter().any(|p| path_has_prefix(path, p))
    }
}

/// `/app` matches `/app`, `/app/` and `/app/x`, never `/app2`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// One problem found in configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, e.g. `routes[2].upstream`.
    pub key: String,
    pub message: String,
    /// Where the value came from (a file, the environment, the defaults).
    pub source: Option<String>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(s) = &self.source {
            write!(f, " (from {s})")?;
        }
        Ok(())
    }
}

/// Every configuration problem, reported together.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.issues.len(),
            if self.issues.len() == 1 { "" } else { "s" }
        )?;
        for i in &self.issues {
            writeln!(f, "  - {i}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(key: &str, message: impl Into<String>, source: Option<String>) -> Self {
        ConfigError {
            issues: vec![ConfigIssue {
                key: key.into(),
                message: message.into(),
                source,
            }],
        }
    }
}

/// The figment stack: defaults < file < environment.
pub fn figment(path: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(raw::RawConfig::default()));
    let path: Option<PathBuf> = match path {
        Some(p) => {
            // figment's own missing-file error has no path in it; say which file.
            if !p.is_file() {
                return Err(ConfigError::one(
                    "--config",
                    format!("config file {} does not exist", p.display()),
                    None,
                ));
            }
            Some(p.to_path_buf())
        }
        None => Some(PathBuf::from("config.toml")).filter(|p| p.is_file()),
    };
    if let Some(p) = path {
        fig = fig.merge(Toml::file_exact(p));
    }
    Ok(fig.merge(Env::prefixed(ENV_PREFIX).split("__")))
}

/// Load and validate: the one entry point `main` and `check-config` use.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let fig = figment(path)?;
    from_figment(&fig)
}

/// Extract and validate a prepared figment (tests build their own).
pub fn from_figment(fig: &Figment) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = fig.extract().map_err(|e| figment_error(fig, e))?;
    validate(&raw, &|key| source_of(fig, key))
}

/// Parse a TOML string as the only layer above the defaults (no environment).
pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
    let fig =
        Figment::from(Serialized::defaults(raw::RawConfig::default())).merge(Toml::string(toml));
    from_figment(&fig)
}

fn source_of(fig: &Figment, key: &str) -> Option<String> {
    // figment tracks metadata per value; array indices are not addressable, so
    // fall back to the top-level key for `routes[3].x`.
    let lookup = key.split('[').next().unwrap_or(key);
    fig.find_metadata(lookup).map(|m| match &m.source {
        Some(src) => format!("{} {}", m.name, src),
        None => m.name.to_string(),
    })
}

fn figment_error(fig: &Figment, err: figment::Error) -> ConfigError {
    let issues = err
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(root)".to_string()
            } else {
                e.path.join(".")
            };
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(src) => format!("{} {}", m.name, src),
                None => m.name.to_string(),
            });
            let source = source.or_else(|| source_of(fig, &key));
            ConfigIssue {
                key,
                message: e.kind.to_string(),
                source,
            }
        })
        .collect();
    ConfigError { issues }
}
