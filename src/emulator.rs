//! A local ChatHub EMULATOR (not the real service): the documented API over HTTP
//! with in-memory companies, organizations and operators, HS256 JWTs, switchable
//! faults for tests, and a stand-in widget module.
//!
//! OWNER: emulator helper. STUB.
