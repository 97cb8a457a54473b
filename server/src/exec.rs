//! Running a policy program: never a shell, its own process group, only the environment
//! the policy lists, its output read in chunks as it comes, and every process it starts
//! tracked so that stopping it stops them all.
//!
//! Tracking, chosen at start ([`Tracking::init`]):
//! - **cgroup** (cgroup v2 writable: systemd with `Delegate=yes`, or root): each run gets
//!   a cgroup of its own, which the program joins between fork and exec
//!   (`cmdchan_cgroup_exec`), so no process of the run ever starts outside it.
//!   Stopping signals every process in it, whatever session or group it moved to.
//! - **subreaper** (otherwise): the server is a child subreaper, so processes a program
//!   leaves behind become the server's children instead of init's; each run's processes
//!   carry `CMDCHAN_RUN` in their environment, and stopping signals the run's process
//!   group and every process that still carries its mark. A process that clears its
//!   environment and leaves its group escapes this mode, not the cgroup one.
//!
//! A run ends when its program has exited and its output pipes are closed; whatever it
//! left running then is stopped too.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tracing::{info, warn};

use cmdchan_common::protocol::Stream;

use crate::policy::Program;
use cmdchan_common::sync;

/// Bytes read from a pipe at a time: one output frame at most.
pub const CHUNK: usize = 16 * 1024;

/// The environment variable that marks a run's processes in subreaper mode.
const MARK: &str = "CMDCHAN_RUN";

/// How the server keeps track of the processes its programs start.
#[derive(Debug)]
pub enum Tracking {
    /// Each run in a cgroup of its own under `runs` (removed when the server stops),
    /// which the program joins between fork and exec.
    Cgroup { runs: PathBuf },
    /// The server is a child subreaper; runs are marked in their environment.
    Subreaper,
}

/// Which tracking the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingChoice {
    /// cgroup v2 when it can be written, else subreaper.
    #[default]
    Auto,
    Cgroup,
    Subreaper,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// PIDs of the programs the server started and still watches (their exit status is
/// tokio's to collect); any other child that is a zombie is an orphan of a run.
static WATCHED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

impl Tracking {
    /// Makes the server a child subreaper and, unless told otherwise, a cgroup for its
    /// runs under its own (cleaning up after an earlier server that did not stop).
    pub fn init(choice: TrackingChoice) -> io::Result<Self> {
        // Always: orphans of a run then come to the server, which reaps them.
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        if choice == TrackingChoice::Subreaper {
            return Ok(Tracking::Subreaper);
        }
        match own_cgroup().and_then(|dir| runs_dir(&dir)) {
            Ok(runs) => {
                info!(cgroup = %runs.display(), "programs run in cgroups of their own");
                Ok(Tracking::Cgroup { runs })
            }
            Err(e) if choice == TrackingChoice::Auto => {
                info!(error = %e, "no writable cgroup v2; tracking programs' processes as a child subreaper");
                Ok(Tracking::Subreaper)
            }
            Err(e) => Err(io::Error::other(format!("cannot use cgroup v2: {e}"))),
        }
    }

    /// Stops every process of every run (the drain ran out), and removes the cgroups.
    pub fn stop_all(&self) {
        match self {
            Tracking::Cgroup { runs, .. } => {
                for run in subdirs(runs) {
                    kill_cgroup(&run);
                }
                // Waits, as a finished run's removal does, for the kernel to empty each.
                for run in subdirs(runs) {
                    Place::Cgroup(run).remove();
                }
                let _ = std::fs::remove_dir(runs);
            }
            Tracking::Subreaper => {
                let prefix = format!("{}.", std::process::id());
                signal_marked(|mark| mark.starts_with(&prefix), Signal::SIGKILL);
            }
        }
    }
}

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
    /// The run's cgroup, or its mark in subreaper mode.
    place: Place,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Read buffers, one per pipe (both reads wait at once), kept for the whole run.
    buffers: Box<[[u8; CHUNK]; 2]>,
}

#[derive(Debug)]
enum Place {
    Cgroup(PathBuf),
    Marked(String),
}

/// Starts `program` with exactly `argv` (after the program path) in a new process group,
/// its processes tracked as `tracking` says.
pub fn spawn(program: &Program, argv: &[String], tracking: &Tracking) -> io::Result<Running> {
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let mut cmd = Command::new(&program.path);
    cmd.args(argv);
    // As root, the standard library also clears the supplementary groups.
    if let Some((uid, gid)) = program.run_as {
        cmd.gid(gid).uid(uid);
    }
    let place = match tracking {
        Tracking::Cgroup { runs } => {
            let run = runs.join(format!("run-{n}"));
            std::fs::create_dir(&run)?;
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(run.join("cgroup.procs"))
                .inspect_err(|_| Place::Cgroup(run.clone()).remove())?;
            // In it from its first instruction: a program cannot fork before it is.
            cmdchan_cgroup_exec::join_before_exec(&mut cmd, procs);
            Place::Cgroup(run)
        }
        Tracking::Subreaper => Place::Marked(format!("{}.{n}", std::process::id())),
    };
    cmd.env_clear().envs(&program.env);
    if let Place::Marked(mark) = &place {
        cmd.env(MARK, mark);
    }
    let stdin = match program.stdin {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    };
    cmd.current_dir(&program.cwd)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().inspect_err(|_| place.remove())?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the program exited before it could be watched"))?;
    watched().insert(pid);
    // With process_group(0) the group ID is the child's PID.
    let group = Pid::from_raw(i32::try_from(pid).map_err(io::Error::other)?);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    Ok(Running {
        child,
        group,
        place,
        stdin,
        stdout,
        stderr,
        buffers: Box::new([[0u8; CHUNK]; 2]),
    })
}

impl Running {
    /// The next chunk of output, or the exit once the program ended and its pipes closed
    /// (a process of the run that keeps a pipe open keeps the run going until it is
    /// stopped at the deadline).
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

    /// The program's stdin (when its policy gives it one), for the caller to write
    /// beside reading the output: writing it inline would deadlock against a program
    /// blocked on a full stdout pipe.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Sends `signal` to every process of the run: its process group, and every process
    /// in its cgroup or carrying its mark.
    pub fn signal(&self, signal: Signal) {
        // ESRCH (the group is gone) is the only expected failure, and harmless.
        let _ = killpg(self.group, signal);
        match &self.place {
            Place::Cgroup(run) if signal == Signal::SIGKILL => kill_cgroup(run),
            Place::Cgroup(run) => {
                for pid in cgroup_pids(run) {
                    let _ = kill(pid, signal);
                }
            }
            Place::Marked(mark) => signal_marked(|m| m == mark, signal),
        }
    }
}

impl Drop for Running {
    /// The run is over: whatever it left running is stopped, and its cgroup removed.
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        // The kernel may take a moment to empty the cgroup: wait for that on a
        // blocking thread, not on the connection's.
        match (&self.place, tokio::runtime::Handle::try_current()) {
            (Place::Cgroup(run), Ok(runtime)) => {
                let place = Place::Cgroup(run.clone());
                drop(runtime.spawn_blocking(move || place.remove()));
            }
            (place, _) => place.remove(),
        }
        if let Ok(pid) = u32::try_from(self.group.as_raw()) {
            watched().remove(&pid);
        }
    }
}

impl Place {
    fn remove(&self) {
        if let Place::Cgroup(run) = self {
            // The kernel empties a killed cgroup asynchronously; wait a little for it.
            for _ in 0..50 {
                if std::fs::remove_dir(run).is_ok() || !run.exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            warn!(cgroup = %run.display(), "a run's cgroup is not empty yet; the server removes it when it stops");
        }
    }
}

fn watched() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    sync::lock(&WATCHED)
}

/// Reaps the zombies of processes that runs left behind: as a subreaper the server
/// inherits them, and nobody else waits for them. Its own programs are left to tokio.
pub fn reap_orphans() {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // stat: PID (COMM) STATE PPID …; COMM may hold spaces and parentheses.
        let mut rest = stat.rsplit_once(") ").map_or("", |(_, r)| r).split(' ');
        let (state, ppid) = (rest.next(), rest.next());
        if state == Some("Z") && ppid == Some(me.as_str()) && !watched().contains(&pid) {
            let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
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

/// The server's own cgroup v2 directory: the cgroup2 mount point joined with the path
/// `/proc/self/cgroup` names.
fn own_cgroup() -> io::Result<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("not in a cgroup v2 hierarchy"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER
    let mount = mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            (right.split(' ').next() == Some("cgroup2") && fields.get(3) == Some(&"/"))
                .then(|| fields.get(4).map(|m| PathBuf::from(*m)))?
        })
        .ok_or_else(|| io::Error::other("no cgroup2 file system mounted"))?;
    Ok(mount.join(path.trim_start_matches('/')))
}

/// Makes `cmdchan-PID` under `own` for this server's runs, after stopping and removing
/// the directories of servers that are gone.
fn runs_dir(own: &Path) -> io::Result<PathBuf> {
    for stale in subdirs(own) {
        let name = stale.file_name().map(|n| n.to_string_lossy().into_owned());
        let pid = name
            .as_deref()
            .and_then(|n| n.strip_prefix("cmdchan-")?.parse::<i32>().ok());
        if pid.is_some_and(|pid| kill(Pid::from_raw(pid), None).is_err()) {
            for run in subdirs(&stale) {
                kill_cgroup(&run);
                let _ = std::fs::remove_dir(&run);
            }
            let _ = std::fs::remove_dir(&stale);
        }
    }
    let dir = own.join(format!("cmdchan-{}", std::process::id()));
    std::fs::create_dir(&dir)?;
    // Proves a run's cgroup can be made (each program joins its own between fork and
    // exec).
    let probe = dir.join("probe");
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)?;
    Ok(dir)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in the cgroup `run` (`cgroup.kill`, Linux 5.14 and later; before
/// that, each process listed).
fn kill_cgroup(run: &Path) {
    if std::fs::write(run.join("cgroup.kill"), "1").is_err() {
        for pid in cgroup_pids(run) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn cgroup_pids(run: &Path) -> Vec<Pid> {
    std::fs::read_to_string(run.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .map(Pid::from_raw)
        .collect()
}

/// Sends `signal` to every process whose `CMDCHAN_RUN` mark `wanted` accepts.
fn signal_marked(wanted: impl Fn(&str) -> bool, signal: Signal) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = format!("{MARK}=");
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let marked = environ
            .split(|&b| b == 0)
            .filter_map(|var| std::str::from_utf8(var).ok()?.strip_prefix(needle.as_str()))
            .any(&wanted);
        if marked {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}
