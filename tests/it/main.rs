//! The one integration-test binary: real sockets, in-process servers on port 0.

mod support;
