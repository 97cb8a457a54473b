//! The audit trail: one entry per request, admitted or refused, in the log (target
//! `cmdchan::audit`) and, when configured, in the hash-chained audit file. With the file,
//! admitted requests are logged at DEBUG only: the file has them, and a log line per
//! request costs more than the request. Refusals and retries are always logged.
//!
//! A program gets a `started` record before it runs and its outcome after; if the
//! `started` record cannot be written, the program does not run (fail closed).
//! Strings a peer chose are escaped and cut to 64 characters; secret parameters are
//! recorded only as an HMAC under the audit key (no one without it can test guesses).

pub mod chain;
mod flood;
mod stamp;
pub mod verify;

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{debug, error, info, warn};

use cmdchan_common::ident::{printable, printable_str, Ident, PskIdentity};
use cmdchan_common::keys::AuditKey;
use cmdchan_common::protocol::Request;

use crate::admit::{Action, Admitted, Refusal};
use crate::outcome::Outcome;
use crate::policy::Invocation;

use self::chain::Chain;
use self::stamp::Stamp;

const TARGET: &str = "cmdchan::audit";

/// Where audit entries go.
#[derive(Debug)]
pub struct Audit {
    server: Ident,
    key: Arc<AuditKey>,
    file: Option<Chain>,
    flood: flood::Flood,
}

impl Audit {
    /// The trail of `server`, in the file at `path` if given, its head logged as a
    /// checkpoint about every `checkpoint`.
    pub fn new(
        server: Ident,
        path: Option<&Path>,
        key: AuditKey,
        checkpoint: Duration,
    ) -> io::Result<Self> {
        let key = Arc::new(key);
        let file = path
            .map(|p| Chain::open(p, key.clone(), server.as_str()))
            .transpose()?;
        if let Some(file) = &file {
            file.checkpoint_every(checkpoint);
        }
        Ok(Self {
            server,
            key,
            file,
            flood: flood::Flood::default(),
        })
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
        peer: &Peer,
        inv: &Invocation,
    ) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut r = Record::new(&self.server, key, peer, cmd.request(), "started");
        r.params = Some(self.params(inv));
        file.append(&r, true)
    }

    /// Records what became of a request: admitted (`cmd` is then its admission),
    /// refused, or retried.
    pub fn record(
        &self,
        key: &PskIdentity,
        peer: &Peer,
        req: &Request,
        cmd: Option<&Admitted<'_>>,
        outcome: &Outcome,
        took: Duration,
    ) {
        match (outcome, cmd) {
            (Outcome::Refused(refusal), _) => self.refused(key, peer, req, refusal, took),
            (Outcome::Retried(_), _) => self.retried(key, peer, req, outcome.name()),
            (_, Some(cmd)) => self.admitted(cmd, key, peer, outcome, took),
            // Every other outcome is of an admitted request; should one ever come
            // without its admission, it is said, not lost quietly.
            (_, None) => error!(
                target: TARGET,
                client = %key,
                outcome = outcome.name(),
                "an outcome without its admission: not recorded"
            ),
        }
    }

    /// Records an admitted request's outcome. A program's is written before this
    /// returns, as its `started` record was: the file never shows a program that
    /// started and whose answer was sent without its outcome.
    fn admitted(
        &self,
        cmd: &Admitted<'_>,
        key: &PskIdentity,
        peer: &Peer,
        done: &Outcome,
        took: Duration,
    ) {
        let outcome = done.name();
        let (exit, output) = done.exit();
        let req = cmd.request();
        macro_rules! event {
            ($level:ident) => {
                $level!(
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
                )
            };
        }
        // With an audit file, that file is the record of every admitted command, and a
        // line per request on stderr (the journal) would cost more than the request.
        match self.file {
            Some(_) => event!(debug),
            None => event!(info),
        }
        let program = matches!(cmd.action(), Action::Run(..));
        self.write(program, || {
            let mut r = Record::new(&self.server, key, peer, req, outcome);
            if let Action::Run(_, inv) = cmd.action() {
                r.params = Some(self.params(inv));
            }
            r.exit = Some(exit);
            r.duration_ms = Some(took.as_millis() as u64);
            r.output_bytes = Some(output);
            r
        });
    }

    /// Records a refusal. A flood stays bounded: per client and reason, the first
    /// refusal of each second is logged and recorded whole, and the others of that
    /// second are counted into one summary (logged and recorded when the second is over,
    /// see [`Audit::flush`]), so the refusals are never hidden, only grouped.
    fn refused(
        &self,
        key: &PskIdentity,
        peer: &Peer,
        req: &Request,
        refusal: &Refusal,
        took: Duration,
    ) {
        let code = refusal.code().name();
        if !self
            .flood
            .first_this_second(&key.name, code, cmdchan_common::time::now(), |summary| {
                self.summarise(summary)
            })
        {
            return;
        }
        macro_rules! event {
            ($level:ident) => {
                $level!(
                    target: TARGET,
                    client = %key,
                    role = %req.grant.role,
                    %peer,
                    command = %printable(req.command.as_bytes()),
                    id = %hex::encode(&req.id),
                    outcome = code,
                    duration_us = took.as_micros() as u64,
                    reason = %refusal,
                    "refused"
                )
            };
        }
        match refusal.is_warning() {
            true => event!(warn),
            false => event!(info),
        }
        self.write(false, || {
            let mut r = Record::new(&self.server, key, peer, req, code);
            r.reason = Some(refusal.to_string());
            r
        });
    }

    /// Writes the summaries of refusals counted in seconds that are over (about once a
    /// second, from the server's upkeep task).
    pub fn flush(&self, now: u64) {
        for summary in self.flood.over(now) {
            self.summarise(summary);
        }
    }

    fn summarise(&self, s: flood::Summary) {
        warn!(
            target: TARGET,
            client = %s.client,
            outcome = s.code,
            count = s.count,
            second = %cmdchan_common::time::rfc3339(s.second),
            "refused: more refusals like the one logged, in that second"
        );
        self.write(false, || Record::summary(&self.server, &s));
    }

    /// A client sent a command ID it used before: answered from the store, nothing ran.
    fn retried(&self, key: &PskIdentity, peer: &Peer, req: &Request, outcome: &'static str) {
        info!(
            target: TARGET,
            client = %key,
            %peer,
            command = %printable(req.command.as_bytes()),
            id = %hex::encode(req.id),
            outcome,
            "retried"
        );
        self.write(false, || Record::new(&self.server, key, peer, req, outcome));
    }

    /// Appends the record `make` builds (only when there is a file); with `now`, before
    /// returning. A record that cannot be written is counted in the file's next gap
    /// record.
    fn write<'a>(&self, now: bool, make: impl FnOnce() -> Record<'a>) {
        let Some(file) = &self.file else { return };
        if let Err(e) = file.append(&make(), now) {
            error!(path = %file.path().display(), error = %e, "cannot write the audit file");
        }
    }

    /// Parameter values as run; a secret one only as `hmac:HEX` under the audit key.
    fn params(&self, inv: &Invocation) -> Value {
        let map: Map<String, Value> = inv
            .values
            .iter()
            .map(|(name, value, secret)| {
                let shown = match secret {
                    true => format!(
                        "hmac:{}",
                        hex::encode(chain::mac(&self.key, value.as_bytes()))
                    ),
                    false => value.clone(),
                };
                (name.clone(), Value::String(shown))
            })
            .collect();
        Value::Object(map)
    }
}

/// A client's address as text, made once per connection: every record and most log
/// lines name it, and formatting an address costs more than the rest of a record's
/// fields together.
#[derive(Debug, Clone)]
pub struct Peer(Box<str>, SocketAddr);

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Self(addr.to_string().into(), addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.1
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of the audit file, without the `prev` field the chain adds last. Absent
/// fields are left out.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    client: &'a str,
    command: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    epoch: u64,
    /// Present (a status or null) on outcome records only.
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<Option<i32>>,
    #[serde(serialize_with = "hex_str")]
    id: &'a [u8; 16],
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Value>,
    peer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// On a summary record: how many refusals it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    /// As claimed: for a `bad tag` refusal it is not verified.
    role: &'a str,
    server: &'a str,
    time: Stamp,
}

impl<'a> Record<'a> {
    /// The fields every record has.
    fn new(
        server: &'a Ident,
        key: &'a PskIdentity,
        peer: &'a Peer,
        req: &'a Request,
        outcome: &'a str,
    ) -> Self {
        Self {
            client: key.name.as_str(),
            command: printable_str(&req.command),
            duration_ms: None,
            epoch: key.epoch,
            exit: None,
            id: &req.id,
            outcome,
            output_bytes: None,
            params: None,
            peer: &peer.0,
            reason: None,
            count: None,
            role: req.grant.role.as_str(),
            server: server.as_str(),
            time: Stamp::now(),
        }
    }
}

impl<'a> Record<'a> {
    /// A summary of refusals counted in one second.
    fn summary(server: &'a Ident, s: &'a flood::Summary) -> Self {
        Self {
            client: s.client.as_str(),
            command: Cow::Borrowed(""),
            duration_ms: None,
            epoch: 0,
            exit: None,
            id: &[0; 16],
            outcome: s.code,
            output_bytes: None,
            params: None,
            peer: "",
            reason: Some(format!(
                "{} more refusals of this client for this reason in the second from {}",
                s.count,
                cmdchan_common::time::rfc3339(s.second)
            )),
            count: Some(s.count),
            role: "",
            server: server.as_str(),
            time: Stamp::now(),
        }
    }
}

/// Writes straight into the record's line, with no String in between.
fn hex_str<S: serde::Serializer>(id: &&[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    let mut text = [0u8; 32];
    hex::encode_to_slice(id, &mut text).map_err(serde::ser::Error::custom)?;
    s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
}
