//! `cmdchan` failures that need no server: usage, credential files, unreachable servers.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

fn cmdchan(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cmdchan"));
    cmd.args(args)
        .env_remove("CMDCHAN_CRED")
        .stdin(Stdio::null())
        .output()
        .expect("run cmdchan")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const CRED: &str = "name = \"alice\"\naddress = \"127.0.0.1:1\"\n[zones.test]\ngeneration = 1\n\
role = \"ops\"\nepoch = 0\nservers = []\n\
tag = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
psk = \"5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7\"\n\
identity_key = \"1111111111111111111111111111111111111111111111111111111111111111\"\n";

fn write_cred(dir: &tempfile::TempDir, body: &str, mode: u32) -> String {
    let path = dir.path().join("c.cred");
    std::fs::write(&path, body).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    assert_eq!(cmdchan(&[]).status.code(), Some(64));
    assert_eq!(cmdchan(&["--cred"]).status.code(), Some(64));
    let help = cmdchan(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
}

#[test]
fn a_missing_credential_exits_78_and_says_how_to_make_one() {
    let out = cmdchan(&["--cred", "/nonexistent/c.cred", "ping"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("does not exist; create one with: cmdchan-server admin provision"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_group_readable_credential_is_refused_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cred = write_cred(&dir, CRED, 0o640);
    let out = cmdchan(&["--cred", &cred, "ping"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(&format!("mode 0640); run: chmod 600 {cred}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_malformed_credential_is_refused_without_echoing_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = CRED.replace("psk = \"", "psk = \"oops ");
    let cred = write_cred(&dir, &body, 0o600);
    let out = cmdchan(&["--cred", &cred, "ping"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        !stderr(&out).contains("5ec7e75ec7"),
        "the key leaked: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("bad psk"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_server_exits_69() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let cred = write_cred(&dir, CRED, 0o600);
    let out = cmdchan(&[
        "--cred",
        &cred,
        "--server",
        &addr,
        "--server-id",
        "x",
        "--json",
        "ping",
    ]);
    assert_eq!(out.status.code(), Some(69));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["ok"], false);
    assert_eq!(json["exit"], 69);
    assert!(json["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("cannot connect"));
}
