//! The built-in commands' handlers, one per file, and their dispatch. What each is
//! called and which arguments it takes is the policy's catalogue (`policy::Builtin`);
//! programs declared in the policy run through `exec` instead.

mod commands;
mod describe;
mod echo;
mod jobs;
mod ping;
mod revocations;
mod whoami;

use cmdchan_common::protocol::Reply;

use crate::admit::{Admitted, Refusal};
use crate::policy::{Builtin, Policy};
use crate::state::Shared;

/// What a built-in's handler made of a request.
#[derive(Debug)]
pub enum Handled {
    Answered(Reply),
    Refused(Refusal),
    /// It follows a job over time (`Builtin::follows`): the connection's to run.
    Connection,
}

/// Runs a built-in that answers at once; only an [`Admitted`] request can reach a
/// handler.
pub async fn run(
    builtin: Builtin,
    cmd: &Admitted<'_>,
    policy: &Policy,
    shared: &Shared,
) -> Handled {
    let jobs = &shared.jobs;
    Handled::Answered(match builtin {
        Builtin::Ping => ping::run(),
        Builtin::Whoami => whoami::run(cmd),
        Builtin::Echo => echo::run(cmd),
        Builtin::Commands => commands::run(cmd, policy),
        Builtin::Describe => describe::run(cmd, policy),
        // Boxed: a read from Redis is a large future, and every idle connection would
        // otherwise hold room for one.
        Builtin::JobStatus => match Box::pin(jobs::status(cmd, policy, jobs)).await {
            Ok(reply) => reply,
            Err(refusal) => return Handled::Refused(refusal),
        },
        Builtin::JobList => match Box::pin(jobs::list(cmd, policy, jobs)).await {
            Ok(reply) => reply,
            Err(refusal) => return Handled::Refused(refusal),
        },
        Builtin::RevocationsStatus => revocations::status(shared),
        Builtin::RevocationsPush => match revocations::push(cmd, shared) {
            Ok(reply) => reply,
            Err(refusal) => return Handled::Refused(refusal),
        },
        Builtin::JobWait | Builtin::JobOutput | Builtin::JobAttach => return Handled::Connection,
    })
}
