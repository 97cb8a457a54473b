//! A job's program, driven to its end without a connection: its [`Run`] fed what happens
//! (output, timers), its output into the store, its end into the store and the audit
//! trail. A server that stops while the job runs records it as lost (so does a restart
//! after kill -9, from the job's live file).

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use cmdchan_common::protocol::{CommandId, JobState};
use cmdchan_common::time;

use super::{End, Jobs};
use crate::audit::{Audit, JobEnded};
use crate::exec::{self, Event};
use crate::notice::{Listener, Notice};
use crate::run::Run;

/// Everything a job needs once its connection is gone.
pub struct Job {
    pub id: CommandId,
    pub running: exec::Running,
    pub run: Run,
    pub jobs: Arc<Jobs>,
    pub audit: Arc<Audit>,
    /// The record of its end, filled in when it ends.
    pub ended: JobEnded,
    pub notices: Listener,
    /// Its execution slots, held until it ends.
    pub slots: Vec<OwnedSemaphorePermit>,
    /// Programs running on this server (the metric), one less when it ends.
    pub running_programs: Gauge,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

/// Runs `job` on a task of its own.
pub fn spawn(job: Job) {
    tokio::spawn(drive(job));
}

async fn drive(mut job: Job) {
    let mut stopping = false;
    let status = loop {
        tokio::select! {
            event = job.running.next() => match event {
                Ok(Event::Output(stream, data)) => {
                    for out in job.run.output(stream, data, Instant::now()) {
                        if let Err(e) = job.jobs.output(&job.id, out.stream, &out.data) {
                            warn!(id = %hex::encode(job.id), error = %e, "cannot keep a job's output");
                        }
                    }
                }
                Ok(Event::Exited(status)) => break Some(status),
                Err(e) => {
                    warn!(id = %hex::encode(job.id), error = %e, "lost a job's program");
                    break None;
                }
            },
            () = sleep_until_opt(job.run.next_wake()) => {
                if let Some(signal) = job.run.tick(Instant::now()).signal {
                    job.running.signal(signal);
                }
            }
            notice = job.notices.next(), if !stopping => stopping = notice == Notice::Stop,
        }
    };
    let (info, _, printed) = job.run.finish(status.map(exec::outcome), Instant::now());
    let state = match (stopping, info.timed_out, info.code, info.signal) {
        (true, ..) | (false, false, None, None) => JobState::Lost,
        (false, true, ..) => JobState::TimedOut,
        (false, false, Some(code), _) => JobState::Exited(code),
        (false, false, None, Some(signal)) => JobState::Signalled(signal),
    };
    let end = End {
        state,
        ended_at: time::now(),
        output_bytes: info.output_bytes,
        digests: printed.digests,
    };
    // The trail has the end before anyone can hear of it.
    job.ended.state = Some(state);
    job.ended.info = info;
    job.ended.printed = printed;
    job.audit.job_ended(&job.ended);
    if let Err(e) = job.jobs.end(&job.id, end) {
        warn!(id = %hex::encode(job.id), error = %e, "cannot keep a job's end; it reads as lost after a restart");
    }
    drop(job.slots);
    job.running_programs.dec();
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
