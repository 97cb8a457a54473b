//! `revocations.status` and `revocations.push`: the signed revocation list this server
//! keeps, and a newer one any client brings (the signature, not the bearer, is what is
//! trusted).

use cmdchan_common::protocol::Reply;

use crate::admit::{Admitted, Refusal};
use crate::state::Shared;

pub fn status(shared: &Shared) -> Reply {
    Reply::Revocations(shared.kept.state(false))
}

pub fn push(cmd: &Admitted<'_>, shared: &Shared) -> Result<Reply, Refusal> {
    // Admission checked there is exactly one argument.
    let text = cmd.args().first().map_or("", String::as_str);
    shared.push_revocations(text).map(Reply::Revocations)
}
