//! Provision a client, then drive every built-in through the real `cmdchan` binary.

use cmdchan_tests::{text, TestEnv};
use serde_json::Value;

#[test]
fn provisioned_client_runs_every_builtin_through_the_cli() {
    let env = TestEnv::new();
    let cred = env.provision(
        "alice",
        "operator",
        &["--server", "test-server", "--expires", "30d"],
    );
    let server = env.start(&[]);

    let ping = env.cmdchan(&server, &cred, &["ping"]);
    assert_eq!(
        (ping.status.code(), text(&ping.stdout)),
        (Some(0), "pong\n".into())
    );

    let who = env.cmdchan(&server, &cred, &["--json", "whoami"]);
    assert_eq!(who.status.code(), Some(0), "{}", text(&who.stderr));
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["reply"]["name"], "alice");
    assert_eq!(who["reply"]["role"], "operator");
    assert_eq!(who["reply"]["epoch"], 0);
    assert_eq!(who["reply"]["servers"], serde_json::json!(["test-server"]));
    assert_eq!(who["reply"]["server"], "test-server");
    assert!(who["reply"]["expires"].as_str().unwrap().ends_with('Z'));

    let echo = env.cmdchan(&server, &cred, &["echo", "hello", "world"]);
    assert_eq!(text(&echo.stdout), "hello world\n");

    let cmds = env.cmdchan(&server, &cred, &["--json", "commands"]);
    let cmds: Value = serde_json::from_slice(&cmds.stdout).unwrap();
    let names: Vec<&str> = cmds["reply"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ping",
            "whoami",
            "echo",
            "commands",
            "describe",
            "job.status",
            "job.list",
            "job.wait",
            "job.output",
            "job.attach",
            "revocations.status",
            "revocations.push"
        ]
    );
}

#[test]
fn echo_arguments_round_trip_exactly() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    let args = [
        "-n",
        "with space",
        "quote\"s and 'single'",
        "ünïcødé ✓",
        "--flag=x",
        "",
    ];
    let mut cli = vec!["--json", "echo"];
    cli.extend(args);
    let out = env.cmdchan(&server, &cred, &cli);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reply"]["args"], serde_json::json!(args));
}

#[test]
fn each_request_leaves_one_audit_line_with_client_role_peer_and_id() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[]);
    env.cmdchan(&server, &cred, &["ping"]);
    env.cmdchan(&server, &cred, &["nope"]);
    assert!(
        server.wait_for_log("outcome=\"unknown command\"")
            || server.wait_for_log("outcome=unknown command")
    );
    let audit = server.log_lines("cmdchan::audit");
    assert_eq!(audit.len(), 2, "{audit:#?}");
    for line in &audit {
        for field in [
            "client=alice",
            "role=operator",
            "peer=127.0.0.1:",
            "id=",
            "duration_us=",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
    assert!(audit[0].contains("admitted") && audit[0].contains("command=\"ping\""));
    assert!(audit[1].contains("refused"));
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let env = TestEnv::new();
    let server = env.start(&[]);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn dev_mode_makes_key_and_credential_and_serves_them() {
    let env = TestEnv::new();
    let dir = env.path("devcerts");
    let mut cmd = std::process::Command::new(cmdchan_tests::bin("cmdchan-server"));
    cmd.args([
        "dev",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let server = cmdchan_tests::Server::spawn(cmd);
    let cred = dir.join("demo.cred");
    // The demo credential names the dev server by ID "localhost"; the port is ours.
    let out = cmdchan_tests::cmdchan_as(&server, "localhost", &cred, &["whoami"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("role:    operator"));
}

#[tokio::test]
async fn a_connection_busy_for_longer_than_the_idle_timeout_stays_open() {
    // The idle timer is checked against the last wait, not reset per request.
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--idle-timeout", "1s"]);
    let mut client = server.client(&cred).await;
    for _ in 0..8 {
        assert_eq!(
            client.call("ping", &[]).await.unwrap(),
            cmdchan::Reply::Pong
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(
        server.log_lines("idle timeout").is_empty(),
        "closed while busy:\n{}",
        server.log()
    );
    assert!(
        server.wait_for_log("idle timeout; closing"),
        "and idle, it closes"
    );
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_closed() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--idle-timeout", "1s"]);
    let mut client = server.client(&cred).await;
    assert_eq!(
        client.call("ping", &[]).await.unwrap(),
        cmdchan::Reply::Pong
    );
    assert!(server.wait_for_log("idle timeout; closing"));
    assert!(
        client.call("ping", &[]).await.is_err(),
        "the server closed the connection"
    );
}
