//! `echo`: returns its arguments unchanged, for checking how values travel.

use cmdchan_common::protocol::Reply;

use crate::admit::Admitted;

pub fn run(cmd: &Admitted<'_>) -> Reply {
    Reply::Echo(cmd.args().to_vec())
}
