//! The built-in commands' handlers, one per file, and their dispatch. What each is
//! called and which arguments it takes is the policy's catalogue (`policy::Builtin`);
//! programs declared in the policy run through `exec` instead.

mod commands;
mod describe;
mod echo;
mod ping;
mod whoami;

use cmdchan_common::ident::Ident;
use cmdchan_common::protocol::{Grant, Reply};

use crate::policy::{Builtin, Policy};

/// Who asks, as admission proved it: the name from the TLS handshake, the grant from
/// the verified tag, and the request's arguments, checked against the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub client: &'a Ident,
    pub server: &'a Ident,
    pub grant: &'a Grant,
    pub args: &'a [String],
}

/// Runs a built-in for an admitted caller.
pub fn run(builtin: Builtin, caller: &Caller<'_>, policy: &Policy) -> Reply {
    match builtin {
        Builtin::Ping => ping::run(),
        Builtin::Whoami => whoami::run(caller),
        Builtin::Echo => echo::run(caller),
        Builtin::Commands => commands::run(caller, policy),
        Builtin::Describe => describe::run(caller, policy),
    }
}
