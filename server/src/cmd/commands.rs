//! `commands`: what the caller's role may run, each with its parameters.

use cmdchan_common::protocol::Reply;

use crate::admit::Admitted;
use crate::policy::Policy;

pub fn run(cmd: &Admitted<'_>, policy: &Policy) -> Reply {
    Reply::Commands(policy.commands_for(&cmd.grant().role))
}
