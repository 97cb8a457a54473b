//! Refused requests: each attack gets its exact error code, and the command never runs
//! (the audit log shows a refusal and no admission for it).

use std::path::Path;

use cmdchan::{Body, ErrorCode, Request, Response};
use cmdchan_tests::{credential_field, edit_credential, text, Server, TestEnv};

/// Runs `ping` through the CLI with `cred`; returns (exit code, stderr).
fn ping(env: &TestEnv, server: &Server, cred: &Path) -> (Option<i32>, String) {
    let out = env.cmdchan(server, cred, &["ping"]);
    (out.status.code(), text(&out.stderr))
}

/// Nothing was admitted, and the refusal with `code` is in the audit log.
fn assert_refused_not_run(server: &Server, code: ErrorCode) {
    let outcome = code.name();
    assert!(
        server.wait_for_log(" refused "),
        "no refusal logged:\n{}",
        server.log()
    );
    let refused = server.log_lines(" refused ");
    assert!(
        refused
            .iter()
            .any(|l| l.contains(&format!("outcome=\"{outcome}\""))
                || l.contains(&format!("outcome={outcome}"))),
        "{refused:#?}"
    );
    assert!(
        server.log_lines("admitted").is_empty(),
        "a refused command ran:\n{}",
        server.log()
    );
}

fn code_of(response: &Response) -> Option<ErrorCode> {
    match &response.body {
        Body::Err(failure) => Some(failure.code),
        _ => None,
    }
}

#[test]
fn a_credential_whose_role_was_edited_is_refused_bad_tag() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "monitor", &[]);
    edit_credential(&cred, "role", "\"admin\"");
    let server = env.start(&[]);
    let (code, err) = ping(&env, &server, &cred);
    assert_eq!(code, Some(77), "{err}");
    assert!(err.contains("refused (bad tag)"), "{err}");
    assert_refused_not_run(&server, ErrorCode::BadTag);
}

#[test]
fn a_tag_copied_from_another_client_is_refused_bad_tag() {
    let env = TestEnv::new();
    let alice = env.provision("alice", "operator", &[]);
    let bob = env.provision("bob", "operator", &[]);
    edit_credential(&alice, "tag", &credential_field(&bob, "tag"));
    let server = env.start(&[]);
    let (code, err) = ping(&env, &server, &alice);
    assert_eq!(code, Some(77), "{err}");
    assert_refused_not_run(&server, ErrorCode::BadTag);
}

#[test]
fn an_expired_grant_is_refused() {
    let env = TestEnv::new();
    let cred = env.provision(
        "alice",
        "operator",
        &["--expires", "2020-01-01T00:00:00Z", "--expired-ok"],
    );
    let server = env.start(&[]);
    let (code, err) = ping(&env, &server, &cred);
    assert_eq!(code, Some(77), "{err}");
    assert!(
        err.contains("refused (expired)") && err.contains("2020-01-01T00:00:00Z"),
        "{err}"
    );
    assert_refused_not_run(&server, ErrorCode::Expired);
}

#[test]
fn a_revoked_epoch_fails_the_handshake_and_the_next_epoch_works() {
    let env = TestEnv::new();
    let old = env.provision("alice", "operator", &[]);
    let config = env.path("server.toml");
    std::fs::write(&config, "[min_epoch]\nalice = 1\n").unwrap();
    let server = env.start(&["--config", config.to_str().unwrap()]);
    let (code, err) = ping(&env, &server, &old);
    assert_eq!(code, Some(69), "{err}");
    assert!(server.wait_for_log("handshake refused: key epoch 0 of alice is revoked (minimum 1)"));
    assert!(server.log_lines("admitted").is_empty());
    let new = env.provision("alice", "operator", &["--epoch", "1"]);
    assert_eq!(ping(&env, &server, &new).0, Some(0));
}

#[test]
fn a_grant_for_another_server_is_refused() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &["--server", "db7"]);
    let server = env.start(&[]);
    let (code, err) = ping(&env, &server, &cred);
    assert_eq!(code, Some(77), "{err}");
    assert!(
        err.contains("refused (wrong server)") && err.contains("does not cover server test-server"),
        "{err}"
    );
    assert_refused_not_run(&server, ErrorCode::WrongServer);
}

#[test]
fn a_request_for_another_target_is_refused() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let out = cmdchan_tests::cmdchan_as(&server, "db7", &cred, &["ping"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is for server db7"));
    assert_refused_not_run(&server, ErrorCode::WrongServer);
}

#[test]
fn a_role_without_permission_is_refused_forbidden() {
    let env = TestEnv::new();
    let policy = env.path("policy.toml");
    std::fs::write(&policy, "[roles.monitor]\ncommands = [\"ping\"]\n").unwrap();
    let cred = env.provision("alice", "monitor", &[]);
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let out = env.cmdchan(&server, &cred, &["whoami"]);
    assert_eq!(out.status.code(), Some(80), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("role monitor may not run whoami"));
    assert_refused_not_run(&server, ErrorCode::Forbidden);
    assert_eq!(
        ping(&env, &server, &cred).0,
        Some(0),
        "what the role may run still runs"
    );
}

#[tokio::test]
async fn a_repeated_counter_is_refused_and_ends_the_connection() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let mut client = server.client(&cred).await;
    let first = client.request("ping", &[]).unwrap();
    assert_eq!(code_of(&client.exchange(&first).await.unwrap()), None);
    let mut again = client.request("echo", &["x".into()]).unwrap();
    again.counter = first.counter;
    assert_eq!(
        code_of(&client.exchange(&again).await.unwrap()),
        Some(ErrorCode::BadCounter)
    );
    let after = client.request("ping", &[]).unwrap();
    assert!(
        client.exchange(&after).await.is_err(),
        "the connection must be closed"
    );
    // The refusal is logged after the admission it follows, so wait for it first.
    server.wait_for_lines(" refused ", 1);
    assert_eq!(
        server.log_lines("admitted").len(),
        1,
        "only the first request ran"
    );
}

#[tokio::test]
async fn a_skipped_counter_is_refused() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let mut client = server.client(&cred).await;
    let mut req = client.request("ping", &[]).unwrap();
    req.counter = 2;
    assert_eq!(
        code_of(&client.exchange(&req).await.unwrap()),
        Some(ErrorCode::BadCounter)
    );
    assert_refused_not_run(&server, ErrorCode::BadCounter);
}

#[tokio::test]
async fn a_command_id_reused_on_a_new_connection_never_runs_twice() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let bob = env.provision("bob", "operator", &[]);
    let server = env.start(&[]);
    let mut first = server.client(&cred).await;
    let req: Request = first.request("echo", &["once".into()]).unwrap();
    let original = first.exchange(&req).await.unwrap();
    assert_eq!(code_of(&original), None);
    first.close().await;
    // The same client again (a retry): the original answer, not a second run.
    let mut second = server.client(&cred).await;
    let response = second.exchange(&req).await.unwrap();
    assert_eq!(response.body, original.body);
    assert_eq!(
        (response.counter, response.id),
        (req.counter, req.id),
        "the response names the request"
    );
    // Another client with the same ID: a replay.
    let mut thief = server.client(&bob).await;
    let mut stolen = thief.request("echo", &["once".into()]).unwrap();
    stolen.id = req.id;
    assert_eq!(
        code_of(&thief.exchange(&stolen).await.unwrap()),
        Some(ErrorCode::Replay)
    );
    server.wait_for_lines(" refused ", 1);
    assert_eq!(
        server.log_lines("admitted").len(),
        1,
        "the command ran once"
    );
    assert_eq!(server.log_lines("retried").len(), 1);
}

#[tokio::test]
async fn an_issue_time_outside_the_window_is_stale() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--freshness-window", "30s"]);
    let mut client = server.client(&cred).await;
    let mut past = client.request("ping", &[]).unwrap();
    past.issued_at -= 31;
    assert_eq!(
        code_of(&client.exchange(&past).await.unwrap()),
        Some(ErrorCode::Stale)
    );
    let mut future = client.request("ping", &[]).unwrap();
    future.issued_at += 31;
    assert_eq!(
        code_of(&client.exchange(&future).await.unwrap()),
        Some(ErrorCode::Stale)
    );
    assert_refused_not_run(&server, ErrorCode::Stale);
}

#[tokio::test]
async fn a_grant_edited_in_flight_by_the_client_library_is_refused() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "monitor", &["--expires", "1h"]);
    let server = env.start(&[]);
    let mut client = server.client(&cred).await;
    let mut forever = client.request("ping", &[]).unwrap();
    forever.grant.expires = None;
    assert_eq!(
        code_of(&client.exchange(&forever).await.unwrap()),
        Some(ErrorCode::BadTag)
    );
    let mut other_epoch = client.request("ping", &[]).unwrap();
    other_epoch.grant.epoch = 3;
    assert_eq!(
        code_of(&client.exchange(&other_epoch).await.unwrap()),
        Some(ErrorCode::BadTag)
    );
    assert_refused_not_run(&server, ErrorCode::BadTag);
}

#[tokio::test]
async fn after_a_good_request_an_edited_grant_or_tag_on_the_same_connection_is_refused() {
    // The server skips the HMAC for an exact repeat of the grant and tag a connection
    // already proved; anything else must be verified again.
    let env = TestEnv::new();
    let cred = env.provision("alice", "monitor", &["--expires", "1h"]);
    let server = env.start(&[]);
    let mut client = server.client(&cred).await;
    let good = client.request("ping", &[]).unwrap();
    assert_eq!(code_of(&client.exchange(&good).await.unwrap()), None);
    let mut forever = client.request("ping", &[]).unwrap();
    forever.grant.expires = None;
    assert_eq!(
        code_of(&client.exchange(&forever).await.unwrap()),
        Some(ErrorCode::BadTag)
    );
    let mut forged = client.request("ping", &[]).unwrap();
    forged.tag[31] ^= 1;
    assert_eq!(
        code_of(&client.exchange(&forged).await.unwrap()),
        Some(ErrorCode::BadTag)
    );
    let again = client.request("ping", &[]).unwrap();
    assert_eq!(
        code_of(&client.exchange(&again).await.unwrap()),
        None,
        "the proven pair still passes"
    );
}
