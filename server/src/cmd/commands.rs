//! `commands`: what the caller's role may run.

use cmdchan_common::protocol::{CommandInfo, Reply};

use crate::admit::Admitted;
use crate::policy::Policy;

pub fn run(cmd: &Admitted<'_>, policy: &Policy) -> Reply {
    let allowed = policy.commands_for(&cmd.grant().role);
    let infos = allowed.into_iter().map(|b| CommandInfo {
        name: b.name().to_owned(),
        description: b.description().to_owned(),
    });
    Reply::Commands(infos.collect())
}
