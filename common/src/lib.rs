//! What the cmdchan server and client share: keys, tags, wire types, frames and TLS set-up.
//!
//! Nothing here opens a socket or reads the clock on its own; the edges (server, client)
//! do the I/O and pass time in, so every check here is deterministic and testable.

pub mod approval;
pub mod assets;
pub mod base64url;
pub mod credential;
pub mod encode;
pub mod frame;
pub mod ident;
pub mod keyfile;
pub mod keys;
pub mod protocol;
pub mod revocation;
pub mod sealed;
pub mod sync;
pub mod tag;
pub mod time;
pub mod tls;
pub mod zonekey;
