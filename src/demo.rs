//! The built-in demo: the ChatHub emulator, a small demo site and the proxy, wired together on loopback.
//!
//! OWNER: emulator helper. STUB.
