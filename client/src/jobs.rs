//! Following a job from the client: `job.wait`, `job.output` and `job.attach` asked
//! again after a lost connection, from where the output got to. A command ID is run at
//! most once, and a retry of the same ID would follow the job again from the first
//! offset; each new try is a new request from the bytes already given to the sink, so
//! nothing is shown twice and nothing is missed.

use cmdchan_common::protocol::{CommandId, JobInfo, Output, Reply};

use crate::{AnswerSink, Client, Error, Flow};

/// How to follow a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Until it ends; no output (`job.wait`).
    Wait,
    /// Its kept output from an offset, then how it is now (`job.output`).
    Output,
    /// Its output as it comes, until it ends (`job.attach`).
    Attach,
}

impl Follow {
    /// The built-in that does it.
    pub fn command(self) -> &'static str {
        match self {
            Follow::Wait => "job.wait",
            Follow::Output => "job.output",
            Follow::Attach => "job.attach",
        }
    }

    fn streams(self) -> bool {
        self != Follow::Wait
    }
}

impl Client {
    /// Follows job `id` (see [`Follow`]) from byte `offset` of its kept output, each
    /// piece given to `sink`; returns the job as it is at the end. A lost connection is
    /// made again (up to `Options::retries` times in a row, backing off) and the job
    /// asked for from the bytes received so far.
    pub async fn follow(
        &mut self,
        how: Follow,
        id: &CommandId,
        offset: u64,
        sink: &mut (impl AnswerSink + Send),
    ) -> Result<JobInfo, Error> {
        let mut counted = Counted {
            sink,
            received: offset,
            moved: false,
        };
        let mut backoff = self.opts.retry_backoff;
        let mut tries_left = self.opts.retries;
        loop {
            let mut args = vec![hex::encode(id)];
            if how.streams() {
                args.push(counted.received.to_string());
            }
            let request = self.request(how.command(), &args)?;
            counted.moved = false;
            match self.answer(&request, &mut counted).await {
                Ok(reply) => return the_job(reply, id),
                Err(e) if e.is_connection_lost() && (tries_left > 0 || counted.moved) => {
                    if counted.moved {
                        (backoff, tries_left) = (self.opts.retry_backoff, self.opts.retries);
                    }
                    tries_left = tries_left.saturating_sub(1);
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    if let Err(e) = self.reconnect().await {
                        if tries_left == 0 {
                            return Err(e);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The one job a follow is answered with, which must be the one asked for.
fn the_job(reply: Reply, id: &CommandId) -> Result<JobInfo, Error> {
    match reply {
        Reply::Jobs(mut jobs) if jobs.len() == 1 && jobs[0].id == *id => Ok(jobs.remove(0)),
        _ => Err(Error::Protocol(
            "the server answered about another job than the one asked for".into(),
        )),
    }
}

/// A sink that counts the bytes it passed on: where to ask from after a reconnect.
struct Counted<'s, S> {
    sink: &'s mut S,
    received: u64,
    /// Output came since the last try: the connection worked, so its loss starts the
    /// retries afresh.
    moved: bool,
}

impl<S: AnswerSink + Send> AnswerSink for Counted<'_, S> {
    async fn output(&mut self, out: Output) -> Flow {
        self.received += out.data.len() as u64;
        self.moved = true;
        self.sink.output(out).await
    }

    fn alive(&mut self, alive: cmdchan_common::protocol::Alive) {
        self.sink.alive(alive);
    }
}
