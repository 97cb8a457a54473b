//! The built-in commands' handlers, one per file, and their dispatch. What each is
//! called and which arguments it takes is the policy's catalogue (`policy::Builtin`);
//! programs declared in the policy run through `exec` instead.

mod commands;
mod describe;
mod echo;
mod ping;
mod whoami;

use cmdchan_common::protocol::Reply;

use crate::admit::Admitted;
use crate::policy::{Builtin, Policy};

/// Runs a built-in; only an [`Admitted`] request can reach a handler.
pub fn run(builtin: Builtin, cmd: &Admitted<'_>, policy: &Policy) -> Reply {
    match builtin {
        Builtin::Ping => ping::run(),
        Builtin::Whoami => whoami::run(cmd),
        Builtin::Echo => echo::run(cmd),
        Builtin::Commands => commands::run(cmd, policy),
        Builtin::Describe => describe::run(cmd, policy),
    }
}
