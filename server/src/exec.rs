//! Running a policy program: never a shell, its own process group, only the environment
//! the policy lists, and its output read in chunks as it comes.
//!
//! The caller drives a [`Running`] and decides when to stop it; stopping signals the
//! whole process group, so children the program started go too.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use cmdchan_common::protocol::Stream;

use crate::policy::Program;

/// Bytes read from a pipe at a time: one output frame at most.
const CHUNK: usize = 16 * 1024;

/// util-linux's setpriv: switches user and group and clears supplementary groups, which
/// `Command::uid`/`gid` alone would leave as the server's.
const SETPRIV: &str = "/usr/bin/setpriv";

/// What a running program did next.
#[derive(Debug)]
pub enum Event {
    Output(Stream, Vec<u8>),
    /// The program exited and both its pipes are closed.
    Exited(ExitStatus),
}

/// A started program.
#[derive(Debug)]
pub struct Running {
    child: Child,
    group: Pid,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Read buffers, one per pipe (both reads wait at once), kept for the whole run.
    buffers: Box<[[u8; CHUNK]; 2]>,
}

/// Starts `program` with exactly `argv` (after the program path) in a new process group.
pub fn spawn(program: &Program, argv: &[String]) -> io::Result<Running> {
    let mut cmd = match program.run_as {
        None => Command::new(&program.path),
        Some((uid, gid)) => {
            let mut cmd = Command::new(SETPRIV);
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
            cmd.arg(&program.path);
            cmd
        }
    };
    cmd.args(argv)
        .env_clear()
        .envs(&program.env)
        .current_dir(&program.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the program exited before it could be watched"))?;
    // With process_group(0) the group ID is the child's PID.
    let group = Pid::from_raw(i32::try_from(pid).map_err(io::Error::other)?);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let buffers = Box::new([[0u8; CHUNK]; 2]);
    Ok(Running {
        child,
        group,
        stdout,
        stderr,
        buffers,
    })
}

impl Running {
    /// The next chunk of output, or the exit once the program ended and its pipes closed
    /// (a grandchild that keeps a pipe open keeps the command running).
    pub async fn next(&mut self) -> io::Result<Event> {
        loop {
            let Running {
                child,
                stdout,
                stderr,
                buffers,
                ..
            } = self;
            let [out, err] = &mut **buffers;
            tokio::select! {
                n = read(stdout, out), if stdout.is_some() => match n {
                    Some(n) => return Ok(Event::Output(Stream::Stdout, out[..n].to_vec())),
                    None => *stdout = None,
                },
                n = read(stderr, err), if stderr.is_some() => match n {
                    Some(n) => return Ok(Event::Output(Stream::Stderr, err[..n].to_vec())),
                    None => *stderr = None,
                },
                status = child.wait(), if stdout.is_none() && stderr.is_none() => return status.map(Event::Exited),
            }
        }
    }

    /// Sends `signal` to the program's whole process group.
    pub fn signal(&self, signal: Signal) {
        // ESRCH (the group is gone) is the only expected failure, and harmless.
        let _ = killpg(self.group, signal);
    }
}

/// Reads once; `None` at end of file or on error (the pipe is done either way).
async fn read<R: AsyncReadExt + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe.as_mut()?.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// (exit code, signal) of a finished program.
pub fn outcome(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    (status.code(), status.signal())
}
