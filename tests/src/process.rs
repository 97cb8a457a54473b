//! The binaries under test and the system programs the tests drive, run with their
//! output captured; a missing one fails the test loudly.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary built beside this executable (a test in `target/*/deps`,
/// or a binary such as `soak` in `target/*`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let here = exe.parent().unwrap();
    let candidates = [here.join(name), here.parent().unwrap().join(name)];
    let found = candidates.iter().find(|p| p.exists());
    let hint =
        "build the workspace first (`cargo build --workspace`, or the README's test command)";
    found
        .unwrap_or_else(|| panic!("{name} is missing beside {}: {hint}", exe.display()))
        .clone()
}

/// Runs a system program the tests need; fails loudly if it is not installed.
pub fn system(program: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "{program} is not installed: run the README's test command (scripts/test), which installs it");
    Command::new(program)
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether process `pid` is gone (or a zombie waiting for its parent to reap it).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Polls `check` every 20 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
