//! `cmdchan job …`: a server's jobs by ID. `status` and `list` look at them; `wait`,
//! `output` and `attach` follow one, reconnecting from where its output got to. With
//! `--on` each runs on every server picked, the IDs given being fan-out run IDs: each
//! server is asked about its own job of the run.

use std::time::Duration;

use clap::Subcommand;

use cmdchan::{protocol, Client, CommandId, Error, Follow, JobInfo, Reply};

use crate::exit::Exit;
use crate::report::{jobs, Failed, Report};
use crate::Shown;

#[derive(Debug, Clone, Subcommand)]
pub enum JobCmd {
    /// Show jobs' states: exit 0 if each is known, 67 if one is unknown or expired.
    Status {
        #[arg(required = true, value_name = "ID", value_parser = parse_id)]
        ids: Vec<CommandId>,
    },
    /// Wait for a job to end and exit with its status (124 timed out, 128+N signalled, 70
    /// lost, 67 unknown); with --deadline, stop waiting then (exit 75 if it still runs).
    Wait {
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: CommandId,
    },
    /// Print a job's kept output, from byte --offset on; exit 0 if the job is known.
    Output {
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: CommandId,
        /// Where to start in its output (bytes of stdout and stderr, as they came).
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Follow a job's output as it comes, like `tail -f`, until it ends; exit with its
    /// status (as `wait`). A lost connection is made again and the output goes on from
    /// where it was.
    Attach {
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: CommandId,
    },
    /// List this client's jobs on the server, newest first (a role that may read every
    /// client's jobs sees all of them).
    List,
}

fn parse_id(text: &str) -> Result<CommandId, String> {
    protocol::parse_id(text).ok_or_else(|| format!("{text:?} is not a job ID (32 hex digits)"))
}

impl JobCmd {
    /// The built-in that answers it.
    pub fn command(&self) -> &'static str {
        match self {
            JobCmd::Status { .. } => "job.status",
            JobCmd::List => "job.list",
            JobCmd::Wait { .. } => Follow::Wait.command(),
            JobCmd::Output { .. } => Follow::Output.command(),
            JobCmd::Attach { .. } => Follow::Attach.command(),
        }
    }

    /// Its arguments: the IDs (job IDs, or with `--on` run IDs), then any offset.
    pub fn args(&self) -> Vec<String> {
        match self {
            JobCmd::Status { ids } => ids.iter().map(hex::encode).collect(),
            JobCmd::List => Vec::new(),
            JobCmd::Wait { id } | JobCmd::Attach { id } => vec![hex::encode(id)],
            JobCmd::Output { id, offset } => vec![hex::encode(id), offset.to_string()],
        }
    }

    /// How many of its arguments are IDs.
    pub fn ids(&self) -> usize {
        match self {
            JobCmd::Status { ids } => ids.len(),
            JobCmd::List => 0,
            _ => 1,
        }
    }

    /// It waits for a job to end (a fan-out's servers get no time limit of their own).
    pub fn waits(&self) -> bool {
        matches!(self, JobCmd::Wait { .. } | JobCmd::Attach { .. })
    }

    /// Runs it on the server `client` is connected to; `deadline` ends a wait early.
    pub async fn one(
        &self,
        client: &mut Client,
        report: &mut (dyn Report + Send),
        deadline: Option<Duration>,
    ) -> Exit {
        let (how, id, offset) = match *self {
            JobCmd::Wait { id } => (Follow::Wait, id, 0),
            JobCmd::Output { id, offset } => (Follow::Output, id, offset),
            JobCmd::Attach { id } => (Follow::Attach, id, 0),
            JobCmd::Status { .. } | JobCmd::List => return self.look(client, report).await,
        };
        let mut shown = Shown(&mut *report);
        let following = client.follow(how, &id, offset, &mut shown);
        let followed = match deadline {
            None => following.await,
            Some(limit) => match tokio::time::timeout(limit, following).await {
                Ok(followed) => followed,
                Err(_) => now(client, &id).await,
            },
        };
        match followed {
            Ok(job) => {
                let exit = match how {
                    Follow::Output => jobs::look_exit(std::slice::from_ref(&job)),
                    Follow::Wait | Follow::Attach => jobs::end_exit(job.state),
                };
                report.jobs(&[job], exit, how == Follow::Wait)
            }
            Err(e) => report.failed(&Failed::of(&e)),
        }
    }

    /// `status` and `list`: the jobs as they are, as a table (the IDs asked about in
    /// batches a reply can hold).
    async fn look(&self, client: &mut Client, report: &mut (dyn Report + Send)) -> Exit {
        let batches: Vec<Vec<String>> = match self {
            JobCmd::Status { ids } => ids
                .chunks(protocol::JOBS_AT_ONCE)
                .map(|batch| batch.iter().map(hex::encode).collect())
                .collect(),
            _ => vec![self.args()],
        };
        let mut list = Vec::new();
        for args in batches {
            match ask(client, self.command(), &args).await {
                Ok(jobs) => list.extend(jobs),
                Err(e) => return report.failed(&Failed::of(&e)),
            }
        }
        let exit = match self {
            JobCmd::List => Exit::Ok,
            _ => jobs::look_exit(&list),
        };
        report.jobs(&list, exit, true)
    }
}

/// One `job.status` or `job.list` request: the jobs of its reply.
async fn ask(client: &mut Client, command: &str, args: &[String]) -> Result<Vec<JobInfo>, Error> {
    let mut request = client.request(command, args)?;
    let list = match client.run_with_retry(&mut request, |_| {}).await? {
        Reply::Jobs(list) => list,
        _ => {
            return Err(Error::Protocol(
                "the server answered a job command with another kind of reply".into(),
            ))
        }
    };
    // A status names each job asked about, in the order asked.
    let asked: Vec<_> = args.iter().filter_map(|a| protocol::parse_id(a)).collect();
    let answered = list.iter().map(|j| j.id);
    if command == "job.status" && !answered.eq(asked.iter().copied()) {
        return Err(Error::Protocol(
            "the server answered about other jobs than the ones asked for".into(),
        ));
    }
    Ok(list)
}

/// The job as it is now, asked on a new connection (the one that waited was dropped
/// mid-answer at the deadline).
async fn now(client: &mut Client, id: &CommandId) -> Result<JobInfo, Error> {
    client.reconnect().await?;
    match client.call("job.status", &[hex::encode(id)]).await? {
        Reply::Jobs(list) => list.into_iter().find(|j| j.id == *id).ok_or_else(|| {
            Error::Protocol("the server answered about another job than the one asked for".into())
        }),
        _ => Err(Error::Protocol(
            "the server answered a job command with another kind of reply".into(),
        )),
    }
}
