//! The test harness: a temporary directory with a root key and a zone key, the real
//! `cmdchan-server` and `cmdchan` binaries, servers started on `127.0.0.1:0` with their
//! logs captured, raw TLS connections and a hostile server for tests that must
//! misbehave, Redis in its shapes, and a file system that fills up. One module per
//! concern; everything is re-exported here.
//!
//! The binaries are the ones cargo builds beside this crate's test executables (the
//! `server` and `client` packages have integration tests, so `cargo test --workspace`
//! builds them first). A missing binary or system tool fails the test loudly.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test harness: a panic is a test failure"
)]

mod env;
mod hostile;
mod net;
mod process;
mod redis;
mod server;
mod tmpfs;

pub use env::*;
pub use hostile::*;
pub use net::*;
pub use process::*;
pub use redis::*;
pub use server::*;
pub use tmpfs::*;
