//! `echo`: returns its arguments unchanged, for checking how values travel.

use cmdchan_common::protocol::Reply;

use super::Caller;

pub fn run(caller: &Caller<'_>) -> Reply {
    Reply::Echo(caller.args.to_vec())
}
