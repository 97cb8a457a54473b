//! A job's program, driven to its end without a connection: its [`Run`] fed what happens
//! (output, timers), its output into the store, its end into the store and the audit
//! trail. A server that stops while the job runs records it as lost (so does a restart
//! after kill -9, from the job's live file).
//!
//! The store may fail for a while (a full disk, Redis unreachable): output it could not
//! take waits here, in order, and goes first when it can (up to the per-job cap; past
//! that nothing more is kept, so what is kept is always where the output starts), and
//! the end is offered again every second until it is kept, so a job never reads as
//! running once it ended.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use cmdchan_common::protocol::{CommandId, JobState, Stream};
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
    let mut unkept = Unkept::new(job.jobs.clone());
    let status = loop {
        tokio::select! {
            event = job.running.next() => match event {
                Ok(Event::Output(stream, data)) => {
                    for out in job.run.output(stream, data, Instant::now()) {
                        unkept.push(out.stream, out.data);
                    }
                    unkept.offer(&job.id).await;
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
    drop(job.slots);
    job.running_programs.dec();
    let mut warned = false;
    loop {
        unkept.offer(&job.id).await;
        let kept = match unkept.is_empty() {
            true => job.jobs.end(&job.id, end).await,
            false => Err(std::io::Error::other("its output waits")),
        };
        match kept {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(id = %hex::encode(job.id), error = %e, "a job's end is not kept");
                return;
            }
            Err(e) if !warned => {
                warned = true;
                warn!(id = %hex::encode(job.id), error = %e, "cannot keep a job's end yet; trying again every second");
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Output the store could not take yet, in order, within the per-job cap and the
/// server's budget for all jobs' waiting output ([`Jobs::hold`]).
struct Unkept {
    jobs: Arc<Jobs>,
    pieces: VecDeque<(Stream, Vec<u8>)>,
    bytes: u64,
    /// Bytes the store took so far.
    taken: u64,
    /// Past a cap while waiting: nothing after is kept.
    full: bool,
    /// After a failure, the store is not asked again before this (the output waits).
    retry_at: Option<Instant>,
    warned: bool,
}

impl Unkept {
    fn new(jobs: Arc<Jobs>) -> Self {
        Self {
            jobs,
            pieces: VecDeque::new(),
            bytes: 0,
            taken: 0,
            full: false,
            retry_at: None,
            warned: false,
        }
    }

    fn push(&mut self, stream: Stream, mut data: Vec<u8>) {
        if self.full || data.is_empty() {
            return;
        }
        let per_job = self.jobs.per_job().saturating_sub(self.bytes);
        let room = self.jobs.hold(per_job.min(data.len() as u64));
        if data.len() as u64 > room {
            // What fits still waits: the store keeps a job's output from its start.
            data.truncate(room as usize);
            self.full = true;
            if data.is_empty() {
                return;
            }
        }
        self.bytes += data.len() as u64;
        self.pieces.push_back((stream, data));
    }

    /// Gives the store what waits, in order, until it fails (then not again for a
    /// second: a program's output is not held up by a store that cannot answer).
    async fn offer(&mut self, id: &CommandId) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        while let Some((stream, data)) = self.pieces.front() {
            if let Err(e) = self.jobs.output(id, *stream, data, self.taken).await {
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                if !self.warned {
                    self.warned = true;
                    warn!(id = %hex::encode(id), error = %e, "cannot keep a job's output yet; it waits");
                }
                return;
            }
            let len = data.len() as u64;
            self.bytes -= len;
            self.taken += len;
            self.jobs.release(len);
            self.pieces.pop_front();
        }
        self.retry_at = None;
    }

    fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

impl Drop for Unkept {
    fn drop(&mut self) {
        self.jobs.release(self.bytes);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
