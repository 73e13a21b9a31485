//! The ChatHub HTTP API client, written against `shared/chathub-api.md`: login or
//! dashboard key, organizations, operators, operator tokens, validation,
//! synchronize and status, tolerant of every ambiguity that document lists.
//!
//! OWNER: chathub-client helper. STUB.
