//! Starts a program inside a cgroup from its first instruction. The child, between fork
//! and exec, writes `0` to the cgroup's `cgroup.procs` (which moves the writing process):
//! no process of the program ever runs outside its cgroup, and no helper is exec'd
//! first (an extra exec cost as much CPU as the program's own fork and exec).
//!
//! The standard library's `Command` cannot say this: `pre_exec` is unsafe because the
//! closure runs in a forked child where only async-signal-safe calls are allowed. The
//! closure here makes one `write(2)` on a descriptor opened before the fork.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Makes the program `cmd` starts join the cgroup whose `cgroup.procs` is `procs`
/// (opened for writing) before it execs. If the write fails the spawn fails with its
/// error, and nothing runs.
///
/// The standard library runs this hook after it has dropped to the command's user and
/// group; the write still succeeds because cgroup v2 checks a write to `cgroup.procs`
/// against the credentials of whoever opened the file (the server, here), not of the
/// writer (Linux 5.16 and later; Debian 12 ships 6.1).
pub fn join_before_exec(cmd: &mut tokio::process::Command, procs: File) {
    #[allow(
        unsafe_code,
        reason = "pre_exec is the only way to act between fork and exec; the safety argument is beside it"
    )]
    // SAFETY: the closure runs in the child after fork, before exec. It calls only
    // write(2), which is async-signal-safe, on a descriptor that `procs` (moved into the
    // closure, so open for as long as `cmd` may spawn) keeps open in the parent and that
    // the fork copied; it allocates nothing (`last_os_error` reads errno). O_CLOEXEC,
    // with which Rust opens files, closes it in the program at exec.
    unsafe {
        cmd.pre_exec(move || {
            let written = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1);
            match written {
                1 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        });
    }
}
