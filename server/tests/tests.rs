//! The server's own integration tests, in one binary: the `admin` tool and `serve`'s
//! key-file checks through the real binary, and property tests over what a peer or a
//! file controls.

mod admin;
mod properties;
