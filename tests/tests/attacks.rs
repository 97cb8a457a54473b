//! Attacks an authenticated client or a hostile network tried against the release build
//! and got through before: each test tries one and asserts the exact refusal, through
//! the real server.

#![allow(
    clippy::unwrap_used,
    reason = "in a test, a panic is the failure report"
)]

use cmdchan::ErrorCode;
use cmdchan_tests::{eventually, text, TestEnv};

const RESTRICTED: &str = r#"
[roles.limited]
commands = ["deploy"]
[roles.limited.restrict.deploy]
target = ["safe"]
token = ["the-right-token"]

[commands.deploy]
program = "{dir}/deploy.sh"
args = ["{target}", "{token}"]
[[commands.deploy.params]]
name = "target"
type = "string"
[[commands.deploy.params]]
name = "token"
type = "string"
secret = true
default = "the-right-token"
"#;

fn restricted(env: &TestEnv) -> (cmdchan_tests::Server, std::path::PathBuf) {
    env.script(
        "deploy.sh",
        &format!("echo \"$1\" >> {}", env.path("deployed").display()),
    );
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &RESTRICTED.replace("{dir}", dir));
    let log = env.path("audit.log");
    let server = env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    (server, env.provision("mallory", "limited", &[]))
}

#[test]
fn leaving_out_a_restricted_optional_parameter_is_forbidden_and_runs_nothing() {
    let env = TestEnv::new();
    let (server, cred) = restricted(&env);
    let out = env.cmdchan(&server, &cred, &["--json", "deploy"]);
    assert_eq!(out.status.code(), Some(80));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["number"], ErrorCode::Forbidden.number());
    assert_eq!(
        reply["error"]["message"],
        "role limited: this role must give target (one of: safe)"
    );
    assert!(!env.path("deployed").exists(), "the command ran");
    let out = env.cmdchan(&server, &cred, &["deploy", "safe"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_secret_value_refused_by_a_restriction_reaches_no_reply_log_or_audit_record() {
    let env = TestEnv::new();
    let (server, cred) = restricted(&env);
    let guess = "guess-0123456789";
    let out = env.cmdchan(
        &server,
        &cred,
        &["--arg", &format!("token={guess}"), "deploy", "safe"],
    );
    assert_eq!(out.status.code(), Some(80));
    let reply = text(&out.stderr);
    assert!(
        reply.contains("this role may not use token = (secret)"),
        "{reply}"
    );
    assert!(eventually(10, || std::fs::read_to_string(
        env.path("audit.log")
    )
    .is_ok_and(|a| a.contains("forbidden"))));
    let audit = std::fs::read_to_string(env.path("audit.log")).unwrap();
    for (what, text) in [
        ("reply", reply),
        ("log", server.log()),
        ("audit file", audit),
    ] {
        assert!(
            !text.contains(guess),
            "the secret reached the {what}: {text}"
        );
        assert!(
            !text.contains("the-right-token"),
            "the allowed secret reached the {what}"
        );
    }
}

#[test]
fn a_redis_password_in_a_broken_config_line_is_never_printed() {
    let env = TestEnv::new();
    // A typo (no closing quote) on the line that holds the URL with its password.
    let config = env.write(
        "server.toml",
        "replay_store = \"redis://admin:hunter2pass@127.0.0.1:6379/0\nrate = 5\n",
    );
    let out = env.admin_like_serve(&["--config", config.to_str().unwrap()]);
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("server.toml is not valid (line 1"), "{said}");
    assert!(!said.contains("hunter2pass"), "{said}");
    // A value of the wrong type on that line, the kind of error that quotes values.
    std::fs::write(
        &config,
        "replay_store = [\"redis://admin:hunter2pass@h:6379/0\"]\n",
    )
    .unwrap();
    let out = env.admin_like_serve(&["--config", config.to_str().unwrap()]);
    let said = text(&out.stderr);
    assert!(
        !out.status.success() && !said.contains("hunter2pass"),
        "{said}"
    );
}
