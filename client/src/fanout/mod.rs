//! One command on many servers: a sliding window of connections, a limit per server, an
//! overall deadline, and a rollout (`rollout`: a canary, batches, a pause and a check
//! between them, a failure threshold that stops the run). Results come as a stream of
//! [`Event`]s: program output as it arrives, then one [`HostResult`] per server, every
//! selected server exactly once, and why the run stopped if it did.
//!
//! Every server gets a request of its own (a fresh command ID, so each runs it at most
//! once) with one issue time for all the servers that start within [`SAME_TIME`] of
//! each other: a long fan-out refreshes it, so late servers do not find it stale. Lost
//! connections are retried per server as [`crate::Client::run_with_retry`] does. A
//! program that takes stdin gets the command's shared stdin ([`SharedInput`]: the same
//! bytes on every server), or an empty one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod rollout;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::inventory::Host;
use crate::{
    AnswerSink, CommandId, Connector, Error, Flow, Ident, JobState, Options, Output, Param, Reply,
    SharedInput,
};
use cmdchan_common::time;
use cmdchan_common::{protocol, sync};

/// How long servers share one issue time: well inside a server's freshness window (60 s
/// by default), so a request is never stale when it arrives.
pub const SAME_TIME: Duration = Duration::from_secs(20);

pub use rollout::{batches, Rollout, Stop, StopWhy, Threshold};

/// How to run a fan-out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The order, the batches and when to stop.
    pub rollout: Rollout,
    /// Limit for one server: connecting, the handshake, the answer and any retries.
    pub per_server: Duration,
    /// From the start: no server starts after it, and running ones are cut off.
    pub deadline: Option<Duration>,
    /// A command that must succeed on every server of a finished batch before the next
    /// batch starts.
    pub check: Option<Command>,
    /// Per-connection settings (retries, answer timeout); `target` is each server's name,
    /// and `zone` the zone of servers the inventory gives none.
    pub options: Options,
}

/// What a fan-out reports, in the order it happens.
#[derive(Debug)]
pub enum Event {
    /// A piece of output of the program on `host` (an index into the hosts given).
    Output { host: usize, output: Output },
    /// What became of one server; the last event about it.
    Done(HostResult),
    /// The run stopped before its last server, and why (after every server's `Done`).
    Stopped(Stop),
}

#[derive(Debug)]
pub struct HostResult {
    pub host: usize,
    pub outcome: Outcome,
    pub duration: Duration,
}

/// What became of the command on one server.
#[derive(Debug)]
pub enum Outcome {
    /// The server answered: a program's exit, or a built-in's reply.
    Ran(Reply),
    /// Refused, unreachable, or the connection failed (after the retries).
    Failed(Error),
    /// No answer within the per-server limit or before the deadline.
    TimedOut,
    /// Not started, and why.
    NotStarted(NotStarted),
}

/// Why a server was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// The deadline passed first.
    Deadline,
    /// The run stopped first.
    Stopped(Stop),
}

impl Outcome {
    /// Ran and exited 0, or a built-in answered (of jobs: each one is running or exited
    /// 0).
    pub fn succeeded(&self) -> bool {
        match self {
            Outcome::Ran(Reply::Exit(info)) => {
                !info.timed_out && info.code == Some(0) && info.signal.is_none()
            }
            Outcome::Ran(Reply::Jobs(jobs)) => jobs
                .iter()
                .all(|j| matches!(j.state, JobState::Running | JobState::Exited(0))),
            Outcome::Ran(_) => true,
            _ => false,
        }
    }
}

/// The command to run everywhere.
#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    /// Its arguments; the first [`Command::run_ids`] of them are run IDs, each replaced
    /// on every server by the ID of that run's job there ([`protocol::job_id`]).
    pub args: Vec<String>,
    pub params: Vec<Param>,
    /// The stdin every server's program gets, if it takes stdin (none: an empty one).
    pub stdin: Option<SharedInput>,
    /// Start the program as a job on every server, all of one run: each server's command
    /// ID is its job ID in the run ([`protocol::job_id`]), so the run's ID alone finds them all.
    pub detach: bool,
    /// The run this fan-out is: sent with every request (for the audit trail and the
    /// jobs it starts). [`Command::new`] draws a fresh one.
    pub run: CommandId,
    /// How many leading arguments are run IDs (`job status RUN --on …`).
    pub run_ids: usize,
    /// An approved request (`--approval FILE`): every server gets its command ID and
    /// approvals, as approved.
    pub approved: Option<std::sync::Arc<crate::approval::ApprovalFile>>,
}

impl Command {
    /// A command of a fresh run: no stdin, not detached.
    pub fn new(name: &str, args: Vec<String>) -> Result<Self, Error> {
        let mut run = [0u8; 16];
        openssl::rand::rand_bytes(&mut run)?;
        Ok(Self {
            name: name.to_owned(),
            args,
            params: Vec::new(),
            stdin: None,
            detach: false,
            run,
            run_ids: 0,
            approved: None,
        })
    }

    /// The arguments as `server` gets them: each run ID the ID of its job there.
    fn args_on(&self, server: &Ident) -> Vec<String> {
        let runs = self.run_ids.min(self.args.len());
        let jobs = self.args[..runs]
            .iter()
            .map(|arg| match protocol::parse_id(arg) {
                Some(run) => hex::encode(protocol::job_id(&run, server)),
                None => arg.clone(),
            });
        jobs.chain(self.args[runs..].iter().cloned()).collect()
    }
}

/// Starts the fan-out on the current runtime; the receiver yields every event and ends
/// after the last server's result.
pub fn fan_out(
    connector: Connector,
    hosts: Vec<Host>,
    command: Command,
    plan: Plan,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(EVENTS);
    tokio::spawn(drive(connector, hosts, command, plan, tx));
    rx
}

async fn drive(
    connector: Connector,
    hosts: Vec<Host>,
    command: Command,
    plan: Plan,
    tx: mpsc::Sender<Event>,
) {
    let rollout = plan.rollout.clone();
    let deadline = plan.deadline.map(|d| Instant::now() + d);
    let servers = hosts.len();
    let runs = Runs {
        connector,
        hosts,
        command: Arc::new(command),
        issued_at: Arc::new(Mutex::new(time::now())),
        plan: Arc::new(plan),
        deadline,
        tx: tx.clone(),
    };
    let stop = rollout::drive(servers, rollout, deadline, &runs).await;
    if let Some(stop) = stop {
        let _ = tx.send(Event::Stopped(stop)).await;
    }
}

/// The servers of a fan-out as the rollout runs them.
struct Runs {
    connector: Connector,
    hosts: Vec<Host>,
    command: Arc<Command>,
    /// The issue time servers share; refreshed by the first to start after it aged.
    issued_at: Arc<Mutex<u64>>,
    plan: Arc<Plan>,
    deadline: Option<Instant>,
    tx: mpsc::Sender<Event>,
}

impl Runs {
    fn job(&self, host: usize, command: &Arc<Command>, tx: Option<mpsc::Sender<Event>>) -> Job {
        Job {
            connector: self.connector.clone(),
            host: self.hosts[host].clone(),
            index: host,
            command: Arc::clone(command),
            issued_at: Arc::clone(&self.issued_at),
            plan: Arc::clone(&self.plan),
            tx,
        }
    }
}

impl rollout::Servers for Runs {
    fn run(&self, host: usize) -> impl std::future::Future<Output = HostResult> + Send {
        self.job(host, &self.command, Some(self.tx.clone()))
            .run(self.deadline)
    }

    /// The check on each server given, as many at once as the run allows; its output is
    /// not shown, only the servers where it failed.
    fn check(&self, hosts: Vec<usize>) -> impl std::future::Future<Output = Vec<usize>> + Send {
        let check = self.plan.check.clone().map(Arc::new);
        let jobs: Vec<Job> = match &check {
            Some(check) => hosts.iter().map(|&h| self.job(h, check, None)).collect(),
            None => Vec::new(),
        };
        let (parallel, deadline) = (self.plan.rollout.parallel.max(1), self.deadline);
        async move {
            let runs = futures::stream::iter(jobs.into_iter().map(|j| j.run(deadline)));
            let results: Vec<HostResult> = runs.buffer_unordered(parallel).collect().await;
            let mut failed: Vec<usize> = results
                .into_iter()
                .filter(|r| !r.outcome.succeeded())
                .map(|r| r.host)
                .collect();
            failed.sort_unstable();
            failed
        }
    }

    fn checks(&self) -> bool {
        self.plan.check.is_some()
    }

    fn done(&self, result: HostResult) -> impl std::future::Future<Output = ()> + Send {
        let tx = self.tx.clone();
        async move {
            let _ = tx.send(Event::Done(result)).await;
        }
    }
}

/// One server's part.
struct Job {
    connector: Connector,
    host: Host,
    index: usize,
    command: Arc<Command>,
    /// The issue time servers share; refreshed by the first to start after it aged.
    issued_at: Arc<Mutex<u64>>,
    plan: Arc<Plan>,
    /// Where its output goes (none: dropped, for a check).
    tx: Option<mpsc::Sender<Event>>,
}

impl Job {
    async fn run(self, deadline: Option<Instant>) -> HostResult {
        let began = Instant::now();
        let limit = match deadline {
            Some(d) if began >= d => {
                return HostResult {
                    host: self.index,
                    outcome: Outcome::NotStarted(NotStarted::Deadline),
                    duration: Duration::ZERO,
                }
            }
            Some(d) => self.plan.per_server.min(d - began),
            None => self.plan.per_server,
        };
        let index = self.index;
        // Nobody reads the results any more (a program's caller stopped reading): no
        // server starts, and a running one is dropped like one past its limit.
        let gone = self.tx.clone();
        let abandoned = async move {
            match gone {
                Some(tx) => tx.closed().await,
                None => std::future::pending().await,
            }
        };
        if self.tx.as_ref().is_some_and(mpsc::Sender::is_closed) {
            return HostResult {
                host: index,
                outcome: Outcome::Failed(Error::Stopped),
                duration: Duration::ZERO,
            };
        }
        // Dropping the run at the limit closes its connection: the server stops the
        // program as for any lost client (SIGTERM, then SIGKILL).
        let outcome = tokio::select! {
            run = tokio::time::timeout(limit, self.exchange()) => match run {
                Ok(Ok(reply)) => Outcome::Ran(reply),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::TimedOut,
            },
            () = abandoned => Outcome::Failed(Error::Stopped),
        };
        HostResult {
            host: index,
            outcome,
            duration: began.elapsed(),
        }
    }

    async fn exchange(self) -> Result<Reply, Error> {
        let options = Options {
            zone: self.host.zone.clone().or(self.plan.options.zone.clone()),
            target: Some(self.host.name.clone()),
            ..self.plan.options.clone()
        };
        let address = Some(self.host.address.as_str());
        let mut client = self.connector.connect(address, options).await?;
        if let Some(stdin) = &self.command.stdin {
            client.set_input(stdin.reader());
        }
        let args = self.command.args_on(&self.host.name);
        let mut request = client.request(&self.command.name, &args)?;
        request.issued_at = shared_time(&self.issued_at, request.issued_at);
        request.params = self.command.params.clone();
        request.run = Some(self.command.run);
        if self.command.detach {
            request.detach = true;
            request.id = protocol::job_id(&self.command.run, &self.host.name);
        }
        if let Some(approved) = &self.command.approved {
            approved.apply(&mut request);
        }
        let mut forward = Forward {
            tx: self.tx,
            host: self.index,
        };
        let result = client.deliver(&mut request, &mut forward).await;
        client.close().await;
        result
    }
}

/// Events waiting for the reader at most: past them a server's output waits in its
/// connection (and the server's pipe), so a reader slower than the servers, or a server
/// that sends without end, cannot fill the client's memory.
const EVENTS: usize = 256;

/// Passes a server's output on, waiting while the reader is behind (or drops it, for
/// a check).
struct Forward {
    tx: Option<mpsc::Sender<Event>>,
    host: usize,
}

impl AnswerSink for Forward {
    async fn output(&mut self, output: Output) -> Flow {
        let Some(tx) = &self.tx else {
            return Flow::Go;
        };
        let event = Event::Output {
            host: self.host,
            output,
        };
        // No one reads the events any more: the run is over for this server too.
        match tx.send(event).await {
            Ok(()) => Flow::Go,
            Err(_) => Flow::Stop,
        }
    }
}

/// The shared issue time, or `now` (which becomes the shared one) once the shared one
/// is [`SAME_TIME`] old.
fn shared_time(shared: &Mutex<u64>, now: u64) -> u64 {
    let mut shared = sync::lock(shared);
    if now.saturating_sub(*shared) >= SAME_TIME.as_secs() {
        *shared = now;
    }
    *shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_share_an_issue_time_until_it_is_20_s_old() {
        let shared = Mutex::new(1_000);
        assert_eq!(shared_time(&shared, 1_000), 1_000);
        assert_eq!(shared_time(&shared, 1_019), 1_000);
        assert_eq!(shared_time(&shared, 1_020), 1_020, "aged: refreshed");
        assert_eq!(shared_time(&shared, 1_025), 1_020, "and shared again");
    }
}
