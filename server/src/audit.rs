//! The audit trail: one line per request (admitted or refused) under the `cmdchan::audit`
//! log target, with client, role, peer, command, command ID, outcome and duration.
//!
//! Strings a peer chose (command names) are logged escaped and cut to 64 characters, so
//! a client can neither forge log lines nor flood the log.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::{info, warn};

use cmdchan_common::ident::{printable, PskIdentity};
use cmdchan_common::protocol::{Body, Reply, Request};

use crate::admit::{Admitted, Refusal};

const TARGET: &str = "cmdchan::audit";

pub fn admitted(
    cmd: &Admitted<'_>,
    key: &PskIdentity,
    peer: SocketAddr,
    body: &Body,
    took: Duration,
) {
    let (outcome, exit) = match body {
        Body::Ok(Reply::Exit(e)) if e.timed_out => {
            ("timed out", e.code.or(e.signal.map(|s| 128 + s)))
        }
        Body::Ok(Reply::Exit(e)) => ("ran", e.code.or(e.signal.map(|s| 128 + s))),
        Body::Ok(_) => ("ok", None),
        Body::Err(f) => (f.code.name(), None),
        Body::Output(_) => ("ok", None),
    };
    info!(
        target: TARGET,
        client = %key,
        role = %cmd.grant().role,
        %peer,
        command = cmd.command(),
        id = %hex(&cmd.request().id),
        outcome,
        exit,
        duration_us = took.as_micros() as u64,
        "admitted"
    );
}

pub fn refused(
    key: &PskIdentity,
    peer: SocketAddr,
    req: &Request,
    refusal: &Refusal,
    took: Duration,
) {
    macro_rules! event {
        ($level:ident) => {
            $level!(
                target: TARGET,
                client = %key,
                role = %req.grant.role,
                %peer,
                command = %printable(req.command.as_bytes()),
                id = %hex(&req.id),
                outcome = refusal.code().name(),
                duration_us = took.as_micros() as u64,
                reason = %refusal,
                "refused"
            )
        };
    }
    match refusal.is_security_event() {
        true => event!(warn),
        false => event!(info),
    }
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
