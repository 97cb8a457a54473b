//! Jobs as the client shows them: a job's state in words, one line per job for people,
//! an object per job for programs, and the exit status a job's end gives `job wait`.

pub use cmdchan::json::job_json;
use cmdchan::{JobInfo, JobState};
use cmdchan_common::time;

use crate::exit::Exit;
use crate::terminal;

/// The state in words: `running`, `exited 0`, `signalled 9`, `timed out`, `lost`,
/// `expired`, `unknown`.
pub fn state_text(state: JobState) -> String {
    match state {
        JobState::Running => "running".into(),
        JobState::Exited(code) => format!("exited {code}"),
        JobState::Signalled(signal) => format!("signalled {signal}"),
        JobState::TimedOut => "timed out".into(),
        JobState::Lost => "lost".into(),
        JobState::Expired => "expired".into(),
        JobState::Unknown => "unknown".into(),
    }
}

/// One line per job: its ID, state, when it started and ended, its output's size, who
/// started it and its command (the last two the server's words, escaped).
pub fn jobs_text(jobs: &[JobInfo]) -> String {
    jobs.iter()
        .map(|j| {
            let when = |t: u64| match t {
                0 => "-".to_owned(),
                t => time::rfc3339(t),
            };
            format!(
                "{}  {:<12}  {:<20}  {:<20}  {:>10}  {}  {}\n",
                hex::encode(j.id),
                state_text(j.state),
                when(j.started_at),
                when(j.ended_at),
                j.output_bytes,
                terminal::line(&j.client),
                terminal::line(&j.command)
            )
        })
        .collect()
}

/// What `job wait` and `job attach` exit with: the job's own status as a program's
/// (124 timed out, 128+N signalled), 70 lost, 75 still running (the client stopped
/// waiting), 67 no such job.
pub fn end_exit(state: JobState) -> Exit {
    match state {
        JobState::Exited(code) => Exit::Remote(u8::try_from(code & 0xff).unwrap_or(1)),
        JobState::Signalled(signal) => {
            Exit::Remote(u8::try_from((128 + signal) & 0xff).unwrap_or(1))
        }
        JobState::TimedOut => Exit::Remote(124),
        JobState::Lost => Exit::Software,
        JobState::Running => Exit::TempFail,
        JobState::Expired | JobState::Unknown => Exit::NoJob,
    }
}

/// What a look at jobs (`job status`, `job output`) exits with: 0 if each is known,
/// 67 if one is not.
pub fn look_exit(jobs: &[JobInfo]) -> Exit {
    match jobs
        .iter()
        .any(|j| matches!(j.state, JobState::Unknown | JobState::Expired))
    {
        true => Exit::NoJob,
        false => Exit::Ok,
    }
}

/// What a stopped job's end says beyond its status, on stderr (none for an exit).
pub fn end_note(j: &JobInfo) -> Option<String> {
    let id = hex::encode(j.id);
    match j.state {
        JobState::Running | JobState::Exited(_) => None,
        JobState::Signalled(signal) => Some(format!("job {id} was ended by signal {signal}")),
        JobState::TimedOut => Some(format!("job {id} timed out on the server and was stopped")),
        JobState::Lost => Some(format!(
            "job {id} is lost: the server stopped while it ran; what it printed until then is kept"
        )),
        JobState::Expired => Some(format!(
            "job {id} has expired: its result is no longer kept"
        )),
        JobState::Unknown => Some(format!("job {id} is unknown to the server (or not yours)")),
    }
}
