//! `describe NAME`: one command and its parameter schema, as the caller's role may use it.

use cmdchan_common::protocol::Reply;

use crate::admit::Admitted;
use crate::policy::Policy;

/// Admission already checked that the one argument names a command this role may run
/// (else `unknown command`), so `describe` reveals no more than `commands` does.
pub fn run(cmd: &Admitted<'_>, policy: &Policy) -> Reply {
    let name = cmd.args().first().map_or("", String::as_str);
    let info = policy.describe(&cmd.grant().role, name);
    info.map_or(Reply::Commands(vec![]), Reply::Describe)
}
