//! The one integration-test binary: real sockets, in-process servers on port 0.

mod support;
mod core_proxy;
mod config;
mod tokens;
mod emulator;
mod chathub;
mod inject;
mod csp;
mod proxy_tokens;
