//! The permissive first phase of configuration: what figment layers together from
//! defaults, `config.toml` and the environment, before anything is checked.
//!
//! Every field is optional or has a serde default so that one bad key never hides
//! another: `validate` reports all of them at once.

use serde::de::{self, Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A string that also accepts numbers and booleans, because figment parses
/// `CHATHUB_PROXY_X=0123` as the integer 123 and would otherwise reject it for a
/// string field (figment issues #17, #42). Leading zeros are lost by then, so the
/// README tells operators to quote such values; this at least keeps `5000` working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct Str(pub String);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Str;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
                Ok(Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str, E> {
                Ok(Str(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Str, E> {
                Ok(Str(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Str, E> {
                Ok(Str(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Str, E> {
                Ok(Str(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Str, E> {
                Ok(Str(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Str, E> {
                Ok(Str(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Str, E> {
                Ok(Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Str {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An id given either as a number or as a name, e.g. `organization = 6` or
/// `organization = "Customer Support"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdOrName {
    Id(i64),
    Name(String),
}

/// A value that is either one string or a list of them (`listen = "a"` or `["a", "b"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Str),
    Many(Vec<Str>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => {
                s.0.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }
            OneOrMany::Many(v) => v.iter().map(|s| s.0.clone()).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub upstream: RawUpstream,
    pub inject: RawInject,
    pub session: RawSession,
    pub token: RawToken,
    pub redis: RawRedis,
    pub accounts: BTreeMap<String, RawAccount>,
    pub routes: Vec<RawRoute>,
    pub default_route: Option<Str>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub listen: OneOrMany,
    pub max_connections: u64,
    pub header_read_timeout: Str,
    pub idle_timeout: Str,
    pub max_header_bytes: u64,
    pub max_headers: u64,
    pub grace_period: Str,
    pub trusted_proxies: OneOrMany,
    pub h2_max_concurrent_streams: u64,
    /// Runtime worker threads; 0 means one per core, 1 a current-thread runtime.
    pub worker_threads: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: OneOrMany::Many(vec![Str("127.0.0.1:8080".into())]),
            max_connections: 10_000,
            header_read_timeout: Str("10s".into()),
            idle_timeout: Str("75s".into()),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            grace_period: Str("30s".into()),
            trusted_proxies: OneOrMany::Many(vec![]),
            h2_max_concurrent_streams: 200,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Empty string turns the admin listener off.
    pub listen: Str,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: Str("127.0.0.1:9901".into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub format: Str,
    pub filter: Str,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: Str("text".into()),
            filter: Str("info".into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout: Str,
    pub response_timeout: Str,
    pub pool_idle_timeout: Str,
    pub pool_max_idle_per_host: u64,
    /// PEM file of extra CA certificates for `https` upstreams (beside the
    /// system's roots): for an origin with a private or self-signed CA.
    pub ca_file: Option<Str>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            connect_timeout: Str("2s".into()),
            response_timeout: Str("30s".into()),
            pool_idle_timeout: Str("60s".into()),
            pool_max_idle_per_host: 64,
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawInject {
    pub widget_url: Str,
    pub script_id: Str,
    pub token_attribute: Str,
    pub content_types: Vec<Str>,
    /// Inclusive status ranges such as `"200-299"` or single codes `"203"`.
    pub statuses: Vec<Str>,
    pub exclude_statuses: Vec<u16>,
    pub iframes: bool,
    pub debug_header: bool,
    /// Development token used until per-session tokens are configured.
    pub dev_token: Option<Str>,
    pub max_rewriter_memory: u64,
    pub max_decompressed_bytes: u64,
    pub max_decompression_ratio: u64,
    pub fallback_html: Option<Str>,
    pub token_path: Str,
    pub helper_path: Str,
    pub refresh_helper: bool,
    /// Origins the widget talks to from the browser, added to `connect-src`
    /// when a page's policy is amended (the widget's own origin always is).
    pub connect_origins: Vec<Str>,
}

impl Default for RawInject {
    fn default() -> Self {
        RawInject {
            widget_url: Str(
                "https://widget.smsbat.com/operator-chat-panel/widget-script.js".into(),
            ),
            script_id: Str("operator-chat-panel-script".into()),
            token_attribute: Str("token".into()),
            content_types: vec![Str("text/html".into()), Str("application/xhtml+xml".into())],
            statuses: vec![Str("200-299".into())],
            exclude_statuses: vec![204, 206],
            iframes: false,
            debug_header: false,
            dev_token: None,
            max_rewriter_memory: 4 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_decompression_ratio: 100,
            fallback_html: None,
            token_path: Str("/api/chathub/token".into()),
            helper_path: Str("/__chathub/refresh.js".into()),
            refresh_helper: false,
            connect_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSession {
    pub cookie_name: Str,
    pub max_age: Str,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            cookie_name: Str("chathub_sid".into()),
            max_age: Str("24h".into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawToken {
    pub lifetime: Str,
    pub refresh_ahead: Str,
    pub safety_margin: Str,
    pub skew_margin: Str,
    pub capacity: u64,
    pub budget: Str,
    pub operators_ttl: Str,
    pub breaker_failures: u64,
    pub breaker_open_for: Str,
}

impl Default for RawToken {
    fn default() -> Self {
        RawToken {
            lifetime: Str("24h".into()),
            refresh_ahead: Str("1h".into()),
            safety_margin: Str("5m".into()),
            skew_margin: Str("2m".into()),
            capacity: 100_000,
            budget: Str("150ms".into()),
            operators_ttl: Str("60s".into()),
            breaker_failures: 5,
            breaker_open_for: Str("15s".into()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRedis {
    /// Empty or absent: no shared store, each replica keeps its own cache.
    pub url: Option<Str>,
    pub key_prefix: Option<Str>,
    pub lock_ttl: Option<Str>,
    pub timeout: Option<Str>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAccount {
    pub base_url: Option<Str>,
    pub login: Option<Str>,
    pub login_env: Option<Str>,
    pub password_env: Option<Str>,
    pub password_file: Option<Str>,
    pub api_key_env: Option<Str>,
    pub api_key_file: Option<Str>,
    /// Present only so that an inline secret gets a clear error instead of
    /// "unknown field".
    #[serde(skip_serializing)]
    pub password: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    pub api_key: Option<IgnoredAny>,
    pub connect_timeout: Option<Str>,
    pub request_timeout: Option<Str>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Str>,
    pub hosts: Option<OneOrMany>,
    pub path_prefix: Option<Str>,
    pub upstream: Option<Str>,
    pub preserve_host: Option<bool>,
    pub inject: Option<bool>,
    pub exclude_paths: Vec<Str>,
    pub account: Option<Str>,
    pub organization: Option<IdOrName>,
    pub operator: Option<RawOperatorRule>,
    pub csp: Option<Str>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOperatorRule {
    pub rule: Option<Str>,
    pub id: Option<i64>,
    pub header: Option<Str>,
    pub basic_auth: Option<bool>,
    pub cookie: Option<Str>,
    pub map: BTreeMap<String, i64>,
    pub by_name: Option<bool>,
    pub provision: Option<bool>,
}
