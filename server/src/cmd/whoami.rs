//! `whoami`: the client exactly as the server authenticated it.

use cmdchan_common::protocol::{Reply, Whoami};

use crate::admit::Admitted;

/// The name comes from the TLS handshake and the grant from the verified tag, so this is
/// what the server believes, not what the client claimed.
pub fn run(cmd: &Admitted<'_>) -> Reply {
    Reply::Whoami(Whoami {
        name: cmd.client().clone(),
        grant: cmd.grant().clone(),
        server: cmd.server().clone(),
    })
}
