//! The proxy's own session: a random 128-bit id in a cookie, set with the first
//! injected page and removed from requests before they reach the upstream.
//!
//! OWNER: token helper. STUB.
