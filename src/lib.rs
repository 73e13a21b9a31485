//! chathub-proxy: a streaming reverse proxy that adds ChatHub's operator chat
//! panel to every HTML page of a site, without touching the site.
//!
//! ```text
//! server ─accept─▶ conn ─▶ proxy::handle ─▶ route ─▶ upstream ─▶ (HTML?) token ─▶ rewrite ─▶ client
//! sockets,          one straight-line         pure       hyper-util       moka +     lol_html,
//! shutdown          function; maps errors     lookup     client           ChatHub    pure, sync
//! ```
//!
//! | module | responsibility |
//! |---|---|
//! | [`config`] | defaults < `config.toml` < environment, validated into typed values |
//! | [`server`] | listeners, connection limits, graceful shutdown |
//! | [`conn`] | one connection: h1/h2c, idle deadline, parking idle keep-alive connections |
//! | [`admin`] | `/healthz`, `/readyz`, `/metrics` on their own listener |
//! | [`proxy`] | the request path: route, forward, decide, inject; errors to responses |
//! | [`route`] | host and path → route, by hash lookups |
//! | [`fields`] | a parsed head's fields and their header maps (reused), for the own HTTP/1.1 paths |
//! | [`forwarded`] | hop-by-hop headers and `X-Forwarded-*` / `Forwarded` |
//! | [`upstream`] | pooled hyper-util client with connect and header deadlines |
//! | [`inject`] | which responses get the widget, and their header changes |
//! | [`codec`] | content codings: decode, bound, re-encode |
//! | [`rewrite`] | lol_html streaming insertion |
//! | [`tag`] | the widget tag, escaped, built once per config |
//! | [`snippet`] | the inserted HTML: widget tag, fallback block, helper script |
//! | [`csp`] | the page's Content-Security-Policy: nonce, amend, or skip |
//! | [`session`] | the proxy's session cookie |
//! | [`token`] | per-session operator tokens: cache, refresh, budget, breaker |
//! | [`operator`] | the operator rules per route |
//! | [`shared`] | Redis store shared by replicas |
//! | [`chathub`] | ChatHub API client |
//! | [`emulator`] | a local ChatHub emulator for tests and the demo |
//! | [`demo`] | the built-in demo: emulator, demo site and proxy on loopback |
//! | [`metrics`] | Prometheus counters |
//! | [`telemetry`] | tracing subscriber set-up |
//! | [`error`] | the proxy's error type and the status each error maps to |
//! | [`secret`] | a string type that never prints |
//! | [`body`] | the one response body type |

#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod chathub;
pub mod codec;
pub mod config;
pub mod conn;
pub mod csp;
pub mod demo;
pub mod emulator;
pub mod error;
pub mod fields;
pub mod forwarded;
pub mod inject;
pub mod metrics;
pub mod operator;
pub mod proxy;
pub mod rewrite;
pub mod route;
pub mod secret;
pub mod server;
pub mod session;
pub mod shared;
pub mod snippet;
pub mod tag;
pub mod telemetry;
pub mod token;
pub mod upstream;

/// Install the process-wide rustls crypto provider (ring) once. Both the
/// upstream client and the ChatHub client call this before building TLS configs.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
