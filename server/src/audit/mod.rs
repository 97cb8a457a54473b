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
pub mod spool;
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
use cmdchan_common::protocol::{CommandId, ExitInfo, JobInfo, JobState, Reply, Request};

use crate::admit::{Action, Admitted, Approvals, Refusal};
use crate::outcome::Outcome;
use crate::policy::{Invocation, Secrets};
use crate::run::Printed;

use self::chain::Chain;
use self::stamp::Stamp;

const TARGET: &str = "cmdchan::audit";

/// Values of a refused request recorded, of its positional and of its named ones each.
const SENT_VALUES: usize = 32;

/// Where audit entries go.
#[derive(Debug)]
pub struct Audit {
    server: Ident,
    key: Arc<AuditKey>,
    file: Option<Chain>,
    /// Beside the file: what programs whose policy says so printed, in full.
    spool: Option<spool::Spool>,
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
        let spool = path.map(spool::Spool::open).transpose()?;
        Ok(Self {
            server,
            key,
            file,
            spool,
            flood: flood::Flood::default(),
        })
    }

    /// Reopens the audit file and its spool at their paths (for rotation).
    pub fn reopen(&self) -> io::Result<()> {
        self.file.as_ref().map_or(Ok(()), Chain::reopen)?;
        self.spool.as_ref().map_or(Ok(()), spool::Spool::reopen)
    }

    /// Records that a program is about to run; an error means it must not run. An
    /// emergency run (no approvals, by an emergency role) is logged at WARN whether or
    /// not there is an audit file.
    pub fn started(
        &self,
        cmd: &Admitted<'_>,
        key: &PskIdentity,
        peer: &Peer,
        inv: &Invocation,
    ) -> io::Result<()> {
        let emergency = *cmd.approvals() == Approvals::Emergency;
        let role = &cmd.grant().role;
        if emergency {
            warn!(
                target: TARGET,
                client = %key,
                %role,
                %peer,
                command = cmd.command(),
                id = %hex::encode(cmd.request().id),
                "emergency: a command that needs approvals runs without them"
            );
        }
        let Some(file) = &self.file else {
            return Ok(());
        };
        let outcome = if emergency { "emergency" } else { "started" };
        let mut r = Record::new(&self.server, key, peer, cmd.request(), outcome);
        r.params = Some(self.params(inv));
        r.approved(cmd.approvals());
        if emergency {
            r.reason = Some(format!(
                "role {role} runs {} without the approvals its policy asks for (emergency)",
                cmd.command()
            ));
        }
        file.append(&r, true)
    }

    /// Records what became of a request: admitted (`cmd` is then its admission),
    /// refused, or retried.
    pub fn record(
        &self,
        asked: Asked<'_>,
        cmd: Option<&Admitted<'_>>,
        outcome: &Outcome,
        took: Duration,
    ) {
        let Asked {
            key,
            peer,
            req,
            secrets,
        } = asked;
        match (outcome, cmd) {
            (Outcome::Refused(refusal), _) => self.refused(key, peer, req, refusal, took, secrets),
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
            r.approved(cmd.approvals());
            r.exit = Some(exit);
            r.duration_ms = Some(took.as_millis() as u64);
            r.output_bytes = Some(output);
            if let Outcome::Ran(_, printed) = done {
                self.printed(&mut r, &req.id, printed);
            }
            if let Some(job) = job_read(cmd) {
                r.job = Some(job);
            }
            if let Outcome::Answered(Reply::Revocations(state)) = done {
                if state.applied {
                    r.reason = Some(format!("revocation list version {} applied", state.version));
                }
            }
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
        secrets: Secrets<'_>,
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
            (r.args, r.params) = self.sent(req, secrets);
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

    /// A run's digests on its record, and all it printed in the spool first when its
    /// policy records it in full.
    fn printed(&self, r: &mut Record<'_>, id: &CommandId, printed: &Printed) {
        let [out, err] = &printed.digests;
        r.stdout_sha256 = Some(hex::encode(out));
        r.stderr_sha256 = Some(hex::encode(err));
        let (Some(full), Some(spool)) = (&printed.full, &self.spool) else {
            return;
        };
        let written = spool.write(id, full);
        if let Err(e) = &written {
            error!(error = %e, id = %hex::encode(id), "cannot write the audit spool");
        }
        r.spooled = Some(written.is_ok());
    }

    /// The values a refused request carried, as sent (escaped and cut like every string
    /// a peer chose, the first [`SENT_VALUES`] of each kind); a secret one — or any of a
    /// command the policy does not know — only as `hmac:HEX` under the audit key.
    fn sent(&self, req: &Request, secrets: Secrets<'_>) -> (Option<Vec<String>>, Option<Value>) {
        let shown = |value: &str, secret: bool| match secret {
            true => format!(
                "hmac:{}",
                hex::encode(chain::mac(&self.key, value.as_bytes()))
            ),
            false => printable_str(value).into_owned(),
        };
        let args = req
            .args
            .iter()
            .take(SENT_VALUES)
            .enumerate()
            .map(|(i, a)| shown(a, secrets.at(i)))
            .collect::<Vec<_>>();
        let params: Map<String, Value> = req
            .params
            .iter()
            .take(SENT_VALUES)
            .map(|p| {
                (
                    printable(p.name.as_bytes()),
                    Value::String(shown(&p.value, secrets.named(&p.name))),
                )
            })
            .collect();
        (
            (!args.is_empty()).then_some(args),
            (!params.is_empty()).then_some(Value::Object(params)),
        )
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

/// A request as its connection saw it: who sent it, from where, and which of its
/// values the policy keeps secret.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub key: &'a PskIdentity,
    pub peer: &'a Peer,
    pub req: &'a Request,
    pub secrets: Secrets<'a>,
}

/// The job a `job.*` request read: its ID, or how many (for a status of many).
fn job_read(cmd: &Admitted<'_>) -> Option<String> {
    if !cmd.command().starts_with("job.") {
        return None;
    }
    match cmd.args() {
        [] => None,
        [one, ..] if cmd.args().len() <= 2 => Some(printable(one.as_bytes())),
        many => Some(format!("{} jobs", many.len())),
    }
}

/// What the trail records when a job ends (its start was recorded with its request).
#[derive(Debug, Clone, Default)]
pub struct JobEnded {
    pub client: String,
    pub epoch: u64,
    pub role: String,
    pub peer: String,
    pub command: String,
    pub id: CommandId,
    pub run: Option<CommandId>,
    pub state: Option<JobState>,
    pub info: ExitInfo,
    pub printed: Printed,
}

impl JobEnded {
    /// A job found lost when the server started again (it stopped, or was killed, while
    /// the job ran): who and which connection started it is not kept with the job.
    pub fn lost(job: JobInfo) -> Self {
        Self {
            client: job.client,
            command: job.command,
            id: job.id,
            run: job.run,
            state: Some(JobState::Lost),
            info: ExitInfo {
                output_bytes: job.output_bytes,
                ..ExitInfo::default()
            },
            printed: Printed {
                digests: [job.stdout_sha256, job.stderr_sha256],
                full: None,
            },
            ..Self::default()
        }
    }
}

impl Audit {
    /// Records a job's end: how it ended and the digests of what it printed.
    pub fn job_ended(&self, job: &JobEnded) {
        let outcome = match job.state {
            Some(JobState::Exited(_)) => "job: exited",
            Some(JobState::Signalled(_)) => "job: signalled",
            Some(JobState::TimedOut) => "job: timed out",
            _ => "job: lost",
        };
        info!(target: TARGET, client = %job.client, id = %hex::encode(job.id), outcome, "job ended");
        self.write(true, || {
            let info = &job.info;
            let mut r = Record {
                approvers: None,
                emergency: None,
                args: None,
                client: &job.client,
                command: printable_str(&job.command),
                duration_ms: Some(info.duration_ms),
                epoch: job.epoch,
                exit: Some(info.code.or(info.signal.map(|s| 128 + s))),
                id: &job.id,
                outcome,
                output_bytes: Some(info.output_bytes),
                params: None,
                peer: &job.peer,
                reason: None,
                count: None,
                role: &job.role,
                server: self.server.as_str(),
                time: Stamp::now(),
                run: job.run.map(hex::encode),
                spooled: None,
                stdout_sha256: None,
                stderr_sha256: None,
                job: None,
            };
            self.printed(&mut r, &job.id, &job.printed);
            r
        });
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
    /// Who approved the command (`NAME (ROLE)`), if it needed approvals.
    #[serde(skip_serializing_if = "Option::is_none")]
    approvers: Option<Vec<String>>,
    /// A refused request's positional values, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Vec<String>>,
    client: &'a str,
    command: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    /// Run by an emergency role without the approvals its policy asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    emergency: Option<bool>,
    epoch: u64,
    /// Present (a status or null) on outcome records only.
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<Option<i32>>,
    #[serde(serialize_with = "hex_str")]
    id: &'a [u8; 16],
    /// The job a `job.*` request read.
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<String>,
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
    /// The fan-out run the request is part of.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    server: &'a str,
    /// All the program printed went to the spool (`false`: it could not be written).
    #[serde(skip_serializing_if = "Option::is_none")]
    spooled: Option<bool>,
    /// Of what a program printed (as sent and kept: within its output limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout_sha256: Option<String>,
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
            approvers: None,
            emergency: None,
            args: None,
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
            run: req.run.map(hex::encode),
            server: server.as_str(),
            spooled: None,
            stderr_sha256: None,
            stdout_sha256: None,
            time: Stamp::now(),
            job: None,
        }
    }
}

impl<'a> Record<'a> {
    /// Names the approvers of an approved command, or marks an emergency run.
    fn approved(&mut self, approvals: &Approvals) {
        match approvals {
            Approvals::None => {}
            Approvals::By(by) => {
                let named = by.iter().map(|(name, role)| format!("{name} ({role})"));
                self.approvers = Some(named.collect());
            }
            Approvals::Emergency => self.emergency = Some(true),
        }
    }

    /// A summary of refusals counted in one second.
    fn summary(server: &'a Ident, s: &'a flood::Summary) -> Self {
        Self {
            approvers: None,
            emergency: None,
            args: None,
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
            run: None,
            server: server.as_str(),
            spooled: None,
            stderr_sha256: None,
            stdout_sha256: None,
            time: Stamp::now(),
            job: None,
        }
    }
}

/// Writes straight into the record's line, with no String in between.
fn hex_str<S: serde::Serializer>(id: &&[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    let mut text = [0u8; 32];
    hex::encode_to_slice(id, &mut text).map_err(serde::ser::Error::custom)?;
    s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
}
