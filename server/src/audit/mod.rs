//! The audit trail: one entry per request, admitted or refused, in the log (target
//! `cmdchan::audit`) and, when configured, in the hash-chained audit file.
//!
//! A program gets a `started` record before it runs and its outcome after; if the
//! `started` record cannot be written, the program does not run (fail closed).
//! Strings a peer chose are escaped and cut to 64 characters; secret parameters are
//! recorded only as a SHA-256 digest.

pub mod chain;
pub mod verify;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use cmdchan_common::ident::{printable, Ident, PskIdentity};
use cmdchan_common::protocol::{Body, Reply, Request};

use crate::admit::{Action, Admitted, Refusal};
use crate::policy::Invocation;
use crate::replay::{Entry, State};

use self::chain::Chain;

const TARGET: &str = "cmdchan::audit";

/// Where audit entries go.
#[derive(Debug)]
pub struct Audit {
    server: Ident,
    file: Option<Chain>,
}

impl Audit {
    pub fn new(server: Ident, path: Option<&Path>) -> io::Result<Self> {
        let file = path.map(Chain::open).transpose()?;
        Ok(Self { server, file })
    }

    /// Reopens the audit file at its path (for rotation).
    pub fn reopen(&self) -> io::Result<()> {
        self.file.as_ref().map_or(Ok(()), Chain::reopen)
    }

    /// Records that a program is about to run; an error means it must not run.
    pub fn started(
        &self,
        cmd: &Admitted<'_>,
        key: &PskIdentity,
        peer: SocketAddr,
        inv: &Invocation,
    ) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut r = self.record(key, peer, cmd.request(), "started");
        r.insert("params".into(), params(inv));
        file.append(r)
    }

    pub fn admitted(
        &self,
        cmd: &Admitted<'_>,
        key: &PskIdentity,
        peer: SocketAddr,
        body: &Body,
        took: Duration,
    ) {
        let (outcome, exit, output) = outcome(body);
        let req = cmd.request();
        info!(
            target: TARGET,
            client = %key,
            role = %req.grant.role,
            %peer,
            command = cmd.command(),
            id = %hex::encode(req.id),
            outcome,
            exit,
            duration_us = took.as_micros() as u64,
            "admitted"
        );
        let mut r = self.record(key, peer, req, outcome);
        if let Action::Run(_, inv) = cmd.action() {
            r.insert("params".into(), params(inv));
        }
        r.insert("exit".into(), json!(exit));
        r.insert("duration_ms".into(), json!(took.as_millis() as u64));
        r.insert("output_bytes".into(), json!(output));
        self.write(r);
    }

    pub fn refused(
        &self,
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
                    id = %hex::encode(&req.id),
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
        let mut r = self.record(key, peer, req, refusal.code().name());
        r.insert("reason".into(), json!(refusal.to_string()));
        self.write(r);
    }

    /// A client sent a command ID it used before: answered from the store, nothing ran.
    pub fn retried(&self, key: &PskIdentity, peer: SocketAddr, req: &Request, entry: &Entry) {
        let outcome = match entry.state {
            State::Running { .. } => "retry: in progress",
            State::Done {
                answer: Some(_), ..
            } => "retry: answered",
            State::Done { answer: None, .. } => "retry: duplicate",
        };
        info!(
            target: TARGET,
            client = %key,
            %peer,
            command = %printable(req.command.as_bytes()),
            id = %hex::encode(req.id),
            outcome,
            "retried"
        );
        self.write(self.record(key, peer, req, outcome));
    }

    /// The fields every record has. The role is as claimed: for a `bad tag` refusal it
    /// is not verified.
    fn record(
        &self,
        key: &PskIdentity,
        peer: SocketAddr,
        req: &Request,
        outcome: &str,
    ) -> Map<String, Value> {
        let fields = json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "server": self.server.as_str(),
            "client": key.name.as_str(),
            "epoch": key.epoch,
            "role": req.grant.role.as_str(),
            "peer": peer.to_string(),
            "command": printable(req.command.as_bytes()),
            "id": hex::encode(req.id),
            "outcome": outcome,
        });
        match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn write(&self, record: Map<String, Value>) {
        let Some(file) = &self.file else { return };
        if let Err(e) = file.append(record) {
            error!(path = %file.path().display(), error = %e, "cannot write the audit file");
        }
    }
}

/// (outcome, exit status, output bytes) of an admitted request.
pub fn outcome(body: &Body) -> (&'static str, Option<i32>, u64) {
    match body {
        Body::Ok(Reply::Exit(e)) => {
            let status = e.code.or(e.signal.map(|s| 128 + s));
            (
                if e.timed_out { "timed out" } else { "ran" },
                status,
                e.output_bytes,
            )
        }
        Body::Err(f) => (f.code.name(), None, 0),
        Body::Ok(_) | Body::Output(_) => ("ok", None, 0),
    }
}

/// Parameter values as run; a secret one only as `sha256:HEX`.
fn params(inv: &Invocation) -> Value {
    let map: Map<String, Value> = inv
        .values
        .iter()
        .map(|(name, value, secret)| {
            let shown = match secret {
                true => format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes()))),
                false => value.clone(),
            };
            (name.clone(), Value::String(shown))
        })
        .collect();
    Value::Object(map)
}
