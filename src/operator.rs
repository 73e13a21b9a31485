//! Which operator a session's token is for: the per-route rules `fixed`,
//! `first-active`, `identity` and `spread`, over cached operator lists.
//!
//! OWNER: token helper. STUB.
