//! `commands`: what the caller's role may run, each with its parameters.

use cmdchan_common::protocol::Reply;

use super::Caller;
use crate::policy::Policy;

pub fn run(caller: &Caller<'_>, policy: &Policy) -> Reply {
    Reply::Commands(policy.commands_for(&caller.grant.role))
}
