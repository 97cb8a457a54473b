//! What operators install: version lines, completions and man pages, the systemd unit,
//! and the examples walk-through.

#![allow(
    clippy::unwrap_used,
    reason = "in a test, a panic is the failure report"
)]

use std::process::Command;

use cmdchan_tests::{bin, run, text, TestEnv};

#[test]
fn both_binaries_print_their_version_and_protocol_version() {
    for name in ["cmdchan", "cmdchan-server"] {
        let out = run(Command::new(bin(name)).arg("--version"));
        assert_eq!(
            text(&out.stdout),
            format!("{name} {} (protocol 1)\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    let env = TestEnv::new();
    let dir = env.path("assets");
    for name in ["cmdchan", "cmdchan-server"] {
        let out = run(Command::new(bin(name)).arg("generate").arg(&dir));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert!(read("completions/cmdchan.bash").contains("--retries"));
    assert!(read("completions/_cmdchan-server").contains("--replay-store"));
    assert!(read("completions/cmdchan-server.fish").contains("audit-verify"));
    assert!(read("man/cmdchan.1").contains("Exit status"));
    assert!(read("man/cmdchan-server-admin-provision.1").contains("expires"));
    assert!(
        !dir.join("man/cmdchan-server-help.1").exists(),
        "no pages for help subcommands"
    );
}
