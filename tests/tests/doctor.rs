//! `cmdchan doctor`: each problem is named, with what to do about it.

use std::path::Path;
use std::process::Output;

use cmdchan_tests::{bin, run, text, Server, TestEnv, SERVER_ID};

fn doctor(server: &Server, cred: &Path, extra: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin("cmdchan"));
    cmd.args([
        "doctor",
        "--cred",
        cred.to_str().unwrap(),
        "--server",
        &server.addr.to_string(),
    ]);
    run(cmd.args(extra))
}

#[test]
fn doctor_passes_a_good_credential_and_names_each_problem() {
    let env = TestEnv::new();
    let server = env.start(&[]);
    let good = env.provision(
        "alice",
        "operator",
        &["--server", SERVER_ID, "--expires", "2d"],
    );
    let out = doctor(&server, &good, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(report.contains("warn  the grant expires soon"), "{report}");
    assert!(
        report.contains("ok    ping answered by server test-server"),
        "{report}"
    );

    let other = TestEnv::new();
    let foreign = other.provision("alice", "operator", &[]);
    let out = doctor(&server, &foreign, &["--server-id", SERVER_ID]);
    assert_eq!(out.status.code(), Some(69));
    let report = text(&out.stdout);
    assert!(
        report.contains("FAIL  TLS handshake")
            && report.contains("does not know this name, or the key differs"),
        "{report}"
    );
    assert!(
        report.contains("admin inspect"),
        "it says how to check: {report}"
    );

    let expired = env.provision(
        "bob",
        "operator",
        &["--expires", "2020-01-01T00:00:00Z", "--expired-ok"],
    );
    let out = doctor(&server, &expired, &[]);
    assert_eq!(out.status.code(), Some(77));
    assert!(text(&out.stdout).contains("FAIL  the grant expired at 2020-01-01T00:00:00Z"));

    let elsewhere = env.provision("carol", "operator", &["--server", "db9"]);
    let out = doctor(&server, &elsewhere, &[]);
    assert_eq!(out.status.code(), Some(77));
    assert!(
        text(&out.stdout).contains("pass --server-id"),
        "{}",
        text(&out.stdout)
    );
}
