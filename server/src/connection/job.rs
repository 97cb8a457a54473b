//! Jobs on a connection: starting one (its program handed to a task of its own, the
//! answer its ID at once, kept on the command ID's ticket so a retry hears it again),
//! and following one: `job.wait` (a sign of life each second until it ends),
//! `job.output` (what it printed, from a byte offset) and `job.attach` (its output as it
//! comes, until it ends).

use std::time::Instant;

use tracing::warn;

use cmdchan_common::frame::RESPONSE_OVERHEAD;
use cmdchan_common::protocol::{
    self, Alive, Body, ClientMsg, JobInfo, JobState, Output, Reply, Request, Response, ALIVE_EVERY,
};
use cmdchan_common::time;

use super::{Connection, Pending};
use crate::admit::{Action, Admitted, Refusal};
use crate::audit::JobEnded;
use crate::exec;
use crate::jobs::Meta;
use crate::outcome::Outcome;
use crate::policy::Builtin;
use crate::replay::Ticket;
use crate::run::{Run, Terms};
use crate::state::Shared;

impl Connection {
    /// Starts an admitted program as a job and answers with its ID at once.
    pub(super) async fn start_job(
        &mut self,
        cmd: &mut Admitted<'_>,
        ticket: Ticket,
        shared: &Shared,
    ) -> Outcome {
        let Action::Run(program, inv) = cmd.action() else {
            unreachable!("only a program is started as a job")
        };
        let (program, inv) = (*program, inv.clone());
        if let Err(e) = shared.audit.started(cmd, &self.key, &self.peer, &inv) {
            warn!(error = %e, "cannot write the audit file; refusing to run {}", program.name);
            let ran = (Outcome::NotAudited, Some(Vec::new()));
            self.keep(ticket, cmd.request(), &ran, shared).await;
            return ran.0;
        }
        let mut running = match exec::spawn(program, &inv.argv, &shared.tracking) {
            Ok(running) => running,
            Err(e) => {
                let error = e.to_string();
                let ran = (
                    Outcome::NotStarted {
                        program: program.name.clone(),
                        error,
                    },
                    Some(Vec::new()),
                );
                self.keep(ticket, cmd.request(), &ran, shared).await;
                return ran.0;
            }
        };
        // A job reads no stdin: its client does not stay to send it.
        drop(running.take_stdin());
        let req = cmd.request();
        let meta_started = time::now();
        let meta = Meta {
            id: req.id,
            client: self.key.name.to_string(),
            command: req.command.clone(),
            run: req.run,
            started_at: meta_started,
        };
        if let Err(e) = shared.jobs.start(meta).await {
            warn!(client = %self.key, error = %e, "cannot keep a job; stopping it");
            running.signal(nix::sys::signal::Signal::SIGKILL);
            let failed = Outcome::NotStarted {
                program: program.name.clone(),
                error: format!("the server cannot keep the job's result: {e}"),
            };
            let ran = (failed, Some(Vec::new()));
            self.keep(ticket, req, &ran, shared).await;
            return ran.0;
        }
        let info = JobInfo {
            state: JobState::Running,
            client: self.key.name.to_string(),
            command: req.command.clone(),
            started_at: meta_started,
            run: req.run,
            ..JobInfo::unknown(req.id)
        };
        let ran = (Outcome::Job(Box::new(info)), Some(Vec::new()));
        // Kept before the answer, like any program's: a retry hears this job again.
        if !self.keep(ticket, req, &ran, shared).await {
            running.signal(nix::sys::signal::Signal::SIGKILL);
            return Outcome::Unkept(Box::new(ran.0));
        }
        let chunk = exec::CHUNK.min(
            self.settings
                .limits
                .max_frame
                .saturating_sub(RESPONSE_OVERHEAD),
        );
        shared.metrics.running_programs.inc();
        crate::jobs::spawn(crate::jobs::Job {
            id: req.id,
            running,
            run: Run::new(Terms::of(program, chunk, 0), Instant::now()),
            jobs: shared.jobs.clone(),
            audit: shared.audit.clone(),
            ended: JobEnded {
                client: self.key.name.to_string(),
                epoch: self.key.epoch,
                role: req.grant.role.to_string(),
                peer: self.peer.to_string(),
                command: req.command.clone(),
                id: req.id,
                run: req.run,
                ..JobEnded::default()
            },
            notices: shared.notices.listen(),
            slots: cmd.take_slots(),
            running_programs: shared.metrics.running_programs.clone(),
        });
        ran.0
    }

    /// `job.wait`, `job.output` and `job.attach`: the job's output (all of it kept, or
    /// as it comes), or a sign of life each second until it ends; then how it is.
    pub(super) async fn follow(
        &mut self,
        builtin: Builtin,
        cmd: &Admitted<'_>,
        shared: &Shared,
    ) -> Outcome {
        let req = cmd.request();
        // Admission checked the arguments: a job ID, then a byte offset.
        let id = cmd
            .args()
            .first()
            .and_then(|a| protocol::parse_id(a))
            .unwrap_or_default();
        let mut offset: u64 = cmd.args().get(1).and_then(|o| o.parse().ok()).unwrap_or(0);
        let (client, all) = (
            self.key.name.to_string(),
            self.settings.policy.reads_all_jobs(&cmd.grant().role),
        );
        let streams = matches!(builtin, Builtin::JobOutput | Builtin::JobAttach);
        let waits = matches!(builtin, Builtin::JobWait | Builtin::JobAttach);
        let mut changed = shared.jobs.watch();
        let chunk = exec::CHUNK.min(
            self.settings
                .limits
                .max_frame
                .saturating_sub(RESPONSE_OVERHEAD),
        );
        let poll = shared.jobs.poll_every();
        let mut alive_at = Instant::now() + ALIVE_EVERY;
        loop {
            let info = match shared.jobs.info(&id, &client, all).await {
                Ok(info) => info,
                Err(e) => return Outcome::Refused(Refusal::JobsUnavailable(e.to_string())),
            };
            let visible = !matches!(info.state, JobState::Unknown | JobState::Expired);
            if streams && visible {
                match self.send_output(&id, &mut offset, chunk, req, shared).await {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Answered(Reply::Jobs(vec![info])),
                    Err(e) => {
                        warn!(client = %self.key, error = %e, "cannot read a job's output");
                        return Outcome::Answered(Reply::Jobs(vec![info]));
                    }
                }
            }
            if !(waits && info.state == JobState::Running) {
                return match last(info, &id, &client, all, shared).await {
                    Ok(info) => Outcome::Answered(Reply::Jobs(vec![info])),
                    Err(e) => Outcome::Refused(Refusal::JobsUnavailable(e.to_string())),
                };
            }
            if !self
                .until_changed(&mut changed, poll, &mut alive_at, req)
                .await
            {
                return Outcome::Answered(Reply::Jobs(vec![info]));
            }
        }
    }

    /// Sends the job's kept output from `offset` on, moving it; false if the client is
    /// gone.
    async fn send_output(
        &mut self,
        id: &[u8; 16],
        offset: &mut u64,
        chunk: usize,
        req: &Request,
        shared: &Shared,
    ) -> std::io::Result<bool> {
        loop {
            let pieces = shared.jobs.read(id, *offset, chunk).await?;
            if pieces.is_empty() {
                return Ok(true);
            }
            for (stream, data) in pieces {
                *offset += data.len() as u64;
                let frame = Response {
                    counter: req.counter,
                    id: req.id,
                    body: Body::Output(Output { stream, data }),
                };
                if !self.wire.feed(&frame).await {
                    return Ok(false);
                }
            }
        }
    }

    /// Waits until a job may have changed, sending a sign of life each second and
    /// noticing a client that leaves; false if it left. `alive_at` outlives the call:
    /// wake-ups (another job's output, a pool's poll) come more often than a second,
    /// and must not put the sign of life off.
    async fn until_changed(
        &mut self,
        changed: &mut tokio::sync::watch::Receiver<u64>,
        poll: Option<std::time::Duration>,
        alive_at: &mut Instant,
        req: &Request,
    ) -> bool {
        if !self.wire.flush().await {
            return false;
        }
        loop {
            tokio::select! {
                seen = changed.changed() => return seen.is_ok(),
                () = sleep_opt(poll) => return true,
                () = tokio::time::sleep_until((*alive_at).into()) => {
                    *alive_at = Instant::now() + ALIVE_EVERY;
                    let alive = Response { counter: req.counter, id: req.id, body: Body::Alive(Alive::Running) };
                    if !(self.wire.feed(&alive).await && self.wire.flush().await) {
                        return false;
                    }
                }
                next = self.wire.read(), if self.pending.is_none() => match next {
                    Some(Ok(ClientMsg::Request(request))) => {
                        self.pending = Some(Box::new(Pending { request, early: false }));
                    }
                    Some(Ok(_)) => {}
                    gone => {
                        self.left = Some(gone.and_then(Result::err));
                        return false;
                    }
                },
            }
        }
    }
}

/// The job as it is once its output was sent (it may have ended meanwhile).
async fn last(
    info: JobInfo,
    id: &[u8; 16],
    client: &str,
    all: bool,
    shared: &Shared,
) -> Result<JobInfo, crate::replay::StoreError> {
    match info.state {
        JobState::Running => shared.jobs.info(id, client, all).await,
        _ => Ok(info),
    }
}

async fn sleep_opt(every: Option<std::time::Duration>) {
    match every {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}
