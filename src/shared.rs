//! The optional Redis store behind the local cache: tokens shared by replicas
//! and a `SET NX PX` lock so that N replicas seeing one new session mint once.
//!
//! OWNER: token helper. STUB.
