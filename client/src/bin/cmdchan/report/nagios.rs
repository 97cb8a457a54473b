//! Nagios, in place of `check_nrpe`: a program that exits 0–3 is a plugin, and its
//! output and status pass through; anything else is one status line, `CRITICAL` for a
//! timeout and `UNKNOWN` otherwise, and a status of 0–3.

use cmdchan::{ExitInfo, JobInfo, JobState, Output, Reply, Stream};

use super::{jobs, reply_text, Failed, Report};
use crate::exit::Exit;
use crate::keep;
use crate::print::{self, Closed};
use crate::terminal;

#[derive(Debug)]
pub struct Nagios {
    /// The plugin's stdout, kept for the end (within `--max-output`); its stderr
    /// passes through.
    kept: keep::Store,
}

impl Nagios {
    pub fn new(max_output: u64) -> Self {
        Self {
            kept: keep::Store::new(1, max_output, true),
        }
    }
}

impl Report for Nagios {
    fn output(&mut self, out: &Output) -> Result<(), Closed> {
        match out.stream {
            Stream::Stdout => {
                self.kept.add(0, Stream::Stdout, &out.data);
                Ok(())
            }
            Stream::Stderr => print::write(Stream::Stderr, &out.data),
        }
    }

    fn reply(&mut self, reply: &Reply) -> Exit {
        match reply {
            Reply::Exit(info) if !info.timed_out && matches!(info.code, Some(0..=3)) => {
                let stdout = &self.kept.get(0, Stream::Stdout).data;
                match print::write(Stream::Stdout, stdout) {
                    Ok(()) => Exit::Remote(u8::try_from(info.code.unwrap_or(3)).unwrap_or(3)),
                    Err(Closed) => Exit::StdoutClosed,
                }
            }
            Reply::Exit(info) if info.timed_out => line(2, "the check timed out on the server"),
            Reply::Exit(info) => line(3, &outside(info)),
            other => line(0, reply_text(other).lines().next().unwrap_or("ok")),
        }
    }

    fn failed(&mut self, failed: &Failed) -> Exit {
        let status = if failed.timeout { 2 } else { 3 };
        line(status, &format!("{}: {}", failed.code, failed.message))
    }

    /// OK while every job runs or exited 0; CRITICAL for one that failed, was lost or
    /// is gone.
    fn jobs(&mut self, list: &[JobInfo], _exit: Exit, _table: bool) -> Exit {
        let failed = list
            .iter()
            .find(|j| !matches!(j.state, JobState::Running | JobState::Exited(0)));
        match failed.or(list.first()) {
            Some(j) => {
                let status = if failed.is_some() { 2 } else { 0 };
                let what = format!("job {} {}", hex::encode(j.id), jobs::state_text(j.state));
                line(status, &what)
            }
            None => line(0, "no jobs"),
        }
    }
}

/// How a check ended outside the plugin convention.
fn outside(info: &ExitInfo) -> String {
    match (info.code, info.signal) {
        (Some(code), _) => format!("the check exited {code}, outside 0-3"),
        (None, Some(signal)) => format!("the check was ended by signal {signal}"),
        (None, None) => "the check ended without a status".to_owned(),
    }
}

/// Prints `STATE: cmdchan: what` and returns the Nagios status.
pub fn line(status: u8, what: &str) -> Exit {
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][usize::from(status.min(3))];
    match print::out_line(&format!("{state}: cmdchan: {}", terminal::line(what))) {
        Ok(()) => Exit::Remote(status),
        Err(Closed) => Exit::StdoutClosed,
    }
}
