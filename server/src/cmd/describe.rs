//! `describe NAME`: one command and its parameter schema, as the caller's role may use it.

use cmdchan_common::protocol::Reply;

use super::Caller;
use crate::policy::Policy;

/// Admission already checked that the one argument names a command this role may run
/// (else `unknown command`), so `describe` reveals no more than `commands` does.
pub fn run(caller: &Caller<'_>, policy: &Policy) -> Reply {
    let name = caller.args.first().map_or("", String::as_str);
    let info = policy.describe(&caller.grant.role, name);
    info.map_or(Reply::Commands(vec![]), Reply::Describe)
}
