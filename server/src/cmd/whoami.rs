//! `whoami`: the client exactly as the server authenticated it.

use cmdchan_common::protocol::{Reply, Whoami};

use super::Caller;

/// The name comes from the TLS handshake and the grant from the verified tag, so this is
/// what the server believes, not what the client claimed.
pub fn run(caller: &Caller<'_>) -> Reply {
    Reply::Whoami(Whoami {
        name: caller.client.clone(),
        grant: caller.grant.clone(),
        server: caller.server.clone(),
    })
}
