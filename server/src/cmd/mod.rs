//! The built-in commands' handlers, one per file, and their dispatch. What each is
//! called and which arguments it takes is the policy's catalogue (`policy::Builtin`);
//! programs declared in the policy run through `exec` instead.

mod commands;
mod describe;
mod echo;
mod jobs;
mod ping;
mod whoami;

use cmdchan_common::protocol::Reply;

use crate::admit::Admitted;
use crate::jobs::Jobs;
use crate::policy::{Builtin, Policy};

/// Runs a built-in that answers at once; only an [`Admitted`] request can reach a
/// handler. Those that follow a job over time (`Builtin::follows`) are the connection's:
/// `None`.
pub fn run(builtin: Builtin, cmd: &Admitted<'_>, policy: &Policy, jobs: &Jobs) -> Option<Reply> {
    Some(match builtin {
        Builtin::Ping => ping::run(),
        Builtin::Whoami => whoami::run(cmd),
        Builtin::Echo => echo::run(cmd),
        Builtin::Commands => commands::run(cmd, policy),
        Builtin::Describe => describe::run(cmd, policy),
        Builtin::JobStatus => jobs::status(cmd, policy, jobs),
        Builtin::JobList => jobs::list(cmd, policy, jobs),
        Builtin::JobWait | Builtin::JobOutput | Builtin::JobAttach => return None,
    })
}
