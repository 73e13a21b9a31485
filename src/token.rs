//! Operator tokens per session: a moka cache keyed by (account, organization,
//! operator, session), refreshed ahead of expiry, coalesced, optionally shared
//! across replicas through Redis, with a circuit breaker in front of ChatHub.
//!
//! OWNER: token helper. STUB.
