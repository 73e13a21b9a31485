//! Shared helpers for the integration tests: a fake origin with a fluent
//! builder ([`origin`]), HTTP and raw TCP clients ([`client`]), and starting the
//! proxy itself from a TOML string ([`harness`]).

// Each test module uses its own subset of these helpers, so some of them are
// unused in any given build of the test binary.
#![allow(dead_code)]

pub mod client;
pub mod harness;
pub mod inject_support;
pub mod origin;
pub mod secrets;
pub mod tokens_support;
