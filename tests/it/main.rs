//! The one integration-test binary: real sockets, in-process servers on port 0.

mod chathub;
mod config;
mod core_proxy;
mod csp;
mod emulator;
mod inject;
mod parking;
mod proxy_tokens;
mod support;
mod tokens;
mod upstream_pool;
mod upstream_tls;
