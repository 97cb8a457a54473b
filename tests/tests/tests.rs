//! The integration tests: the real binaries, real TLS over loopback, openssl, stunnel,
//! redis-server. One test binary (one link of openssl, tokio and the client instead of
//! one per file), a module per concern.

#![allow(
    clippy::unwrap_used,
    reason = "in a test, a panic is the failure report"
)]

mod approvals;
mod attacks;
mod audit;
mod authz;
mod daily;
mod doctor;
mod exec;
mod fanout;
mod faults;
mod fleet;
mod framing;
mod golden;
mod handshake;
mod happy_path;
mod hostile;
mod jobs;
mod limits;
mod once;
mod ops;
mod revocations;
mod scripting;
mod zones;
