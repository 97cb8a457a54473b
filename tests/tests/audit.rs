//! The audit file and reload: every request and refusal is recorded in a hash chain that
//! `audit-verify` checks across restarts and rotation; SIGHUP swaps the policy safely.

use std::path::Path;

use cmdchan::{ErrorCode, Reply};
use cmdchan_tests::{audit_records, edit_credential, eventually, text, Server, TestEnv};
use serde_json::Value;

const POLICY: &str = r#"
[roles.ops]
commands = ["ping", "login"]
[commands.login]
program = "{dir}/login.sh"
args = ["{user}", "{password}"]
[[commands.login.params]]
name = "user"
type = "string"
required = true
[[commands.login.params]]
name = "password"
type = "string"
required = true
secret = true
"#;

fn start(env: &TestEnv, log: &Path) -> Server {
    env.script("login.sh", "echo \"welcome $1\"");
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &POLICY.replace("{dir}", dir));
    env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ])
}

/// The audit file's records once it holds `n` (records other than a program's
/// `started` are written within a millisecond of their answer, not before it).
fn records_when(log: &Path, n: usize) -> Vec<Value> {
    assert!(
        eventually(10, || audit_records(log).len() >= n),
        "the audit file never held {n} records"
    );
    audit_records(log)
}

fn verify(env: &TestEnv, log: &Path, prev: Option<&str>) -> (Option<i32>, String) {
    let key = env.zone_key.to_str().unwrap();
    let mut args = vec!["audit-verify", log.to_str().unwrap(), "--zone-key", key];
    if let Some(prev) = prev {
        args.extend(["--prev", prev]);
    }
    let out = env.admin(&args);
    (out.status.code(), text(&out.stdout))
}

/// The MAC of the last record, from `audit-verify`'s report.
fn last_mac(report: &str) -> String {
    report
        .lines()
        .find_map(|l| l.strip_prefix("last: "))
        .and_then(|l| l.split(" mac ").nth(1))
        .unwrap()
        .to_owned()
}

#[test]
fn every_request_and_refusal_is_recorded_and_the_chain_verifies() {
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let server = start(&env, &log);
    let cred = env.provision("alice", "ops", &[]);
    assert_eq!(
        env.cmdchan(&server, &cred, &["ping"]).status.code(),
        Some(0)
    );
    let login = env.cmdchan(&server, &cred, &["login", "alice", "hunter2"]);
    assert_eq!(text(&login.stdout), "welcome alice\n");
    assert_eq!(
        env.cmdchan(&server, &cred, &["whoami"]).status.code(),
        Some(80)
    );
    let forged = env.provision("mallory", "ops", &[]);
    edit_credential(&forged, "role", "\"admin\"");
    assert_eq!(
        env.cmdchan(&server, &forged, &["ping"]).status.code(),
        Some(77)
    );

    let recs = records_when(&log, 6);
    assert_eq!(
        recs[0]["chain"], "new",
        "the file starts with a chain header"
    );
    let recs = &recs[1..];
    let outcomes: Vec<&str> = recs
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "started", "ran", "forbidden", "bad tag"]);
    let ran = &recs[2];
    for field in [
        "time",
        "server",
        "client",
        "role",
        "epoch",
        "peer",
        "command",
        "id",
        "exit",
        "duration_ms",
        "output_bytes",
        "seq",
        "prev",
        "mac",
    ] {
        assert!(!ran[field].is_null(), "{field} missing in {ran}");
    }
    assert_eq!(
        (
            ran["client"].as_str(),
            ran["command"].as_str(),
            ran["exit"].as_i64()
        ),
        (Some("alice"), Some("login"), Some(0))
    );
    assert_eq!(ran["params"]["user"], "alice");
    let secret = ran["params"]["password"].as_str().unwrap();
    assert!(
        secret.starts_with("hmac:") && !std::fs::read_to_string(&log).unwrap().contains("hunter2"),
        "{secret}"
    );
    assert_eq!(recs[4]["client"], "mallory");
    assert!(recs[4]["reason"].as_str().unwrap().contains("tag"));

    let (code, report) = verify(&env, &log, None);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.starts_with("ok: 6 records, starting a new chain"),
        "{report}"
    );
}

#[test]
fn audit_verify_names_the_record_after_an_edit_a_deletion_or_a_reordering() {
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let server = start(&env, &log);
    let cred = env.provision("alice", "ops", &[]);
    for _ in 0..5 {
        env.cmdchan(&server, &cred, &["ping"]);
    }
    records_when(&log, 6);
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let tampered = |name: &str, lines: Vec<String>| {
        let path = env.write(name, &(lines.join("\n") + "\n"));
        verify(&env, &path, None)
    };
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"ok\"", "\"forbidden\"");
    assert_eq!(tampered("edited", edited), (Some(1), "BROKEN at line 3: it does not carry the MAC of its own text: it was edited, or the key is not this server's\n".into()));
    let mut last_edited = lines.clone();
    last_edited[5] = last_edited[5].replace("\"ok\"", "\"forbidden\"");
    assert!(tampered("last", last_edited)
        .1
        .starts_with("BROKEN at line 6: "));
    let mut deleted = lines.clone();
    deleted.remove(2);
    assert!(tampered("deleted", deleted)
        .1
        .starts_with("BROKEN at line 3: it does not follow line 2"));
    let mut head_deleted = lines.clone();
    head_deleted.drain(..2);
    assert!(tampered("head-deleted", head_deleted)
        .1
        .starts_with("BROKEN at line 1: it is not a chain header"));
    let mut reordered = lines.clone();
    reordered.swap(2, 3);
    assert!(tampered("reordered", reordered)
        .1
        .starts_with("BROKEN at line 3:"));
    let mut torn = lines;
    torn[3].truncate(20);
    assert!(tampered("torn", torn)
        .1
        .starts_with("BROKEN at line 4: it is not a JSON record"));
}

#[test]
fn the_chain_continues_across_a_restart_and_a_rotation() {
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let cred = env.provision("alice", "ops", &[]);
    let server = start(&env, &log);
    env.cmdchan(&server, &cred, &["ping"]);
    assert_eq!(server.terminate().code(), Some(0));

    let server = start(&env, &log);
    env.cmdchan(&server, &cred, &["ping"]);
    let (code, report) = verify(&env, &log, None);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.starts_with("ok: 3 records"), "{report}");

    let rotated = env.path("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("HUP");
    assert!(server.wait_for_log("SIGHUP: policy and settings reloaded"));
    env.cmdchan(&server, &cred, &["ping"]);
    let old_last = last_mac(&verify(&env, &rotated, None).1);
    let (code, report) = verify(&env, &log, Some(&old_last));
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains(&format!("starting MAC {old_last}")),
        "{report}"
    );
    let (code, _) = verify(&env, &log, Some(&"0".repeat(64)));
    assert_eq!(code, Some(1), "the new file does not start a new chain");
}

#[tokio::test]
async fn sighup_keeps_the_old_policy_when_the_new_one_is_broken_and_applies_a_good_one_to_open_connections(
) {
    let env = TestEnv::new();
    let policy = env.write("policy.toml", "[roles.ops]\ncommands = [\"ping\"]\n");
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let cred = env.provision("alice", "ops", &[]);
    let mut client = server.client(&cred).await;
    let refused = |r: Result<Reply, cmdchan::Error>| matches!(r, Err(cmdchan::Error::Refused(f)) if f.code == ErrorCode::Forbidden);
    assert!(refused(client.call("whoami", &[]).await));

    std::fs::write(
        &policy,
        "[roles.ops]\ncommands = [\"ping\", \"no-such-command\"]\n",
    )
    .unwrap();
    server.signal("HUP");
    assert!(server.wait_for_log("reload refused, the old policy and settings stay in force"));
    assert!(
        server.log().contains("no-such-command"),
        "the log says what is wrong"
    );
    assert_eq!(client.call("ping", &[]).await.unwrap(), Reply::Pong);
    assert!(refused(client.call("whoami", &[]).await));

    std::fs::write(&policy, "[roles.ops]\ncommands = [\"ping\", \"whoami\"]\n").unwrap();
    server.signal("HUP");
    assert!(server.wait_for_log("SIGHUP: policy and settings reloaded"));
    assert!(
        matches!(client.call("whoami", &[]).await, Ok(Reply::Whoami(_))),
        "the open connection sees the new rules"
    );
}

/// The case: the audit file was rotated while the server held two generations of its
/// zone key (the chain under the first), then the server restarted with the new key
/// alone. It goes on under a `rekeyed` header: with both keys every record verifies, with
/// the new one alone the old part is reported as not checked, never as forged.
#[test]
fn an_honest_history_across_a_zone_key_change_verifies_with_both_keys() {
    let env = TestEnv::new();
    let new_key = env.path("zone-2.key");
    env.make_zone_key(cmdchan_tests::ZONE, 2, &new_key);
    let log = env.path("audit.log");
    env.script("login.sh", "echo \"welcome $1\"");
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &POLICY.replace("{dir}", dir));
    let serve = |keys: &[&Path]| {
        let mut cmd = std::process::Command::new(cmdchan_tests::bin("cmdchan-server"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--server-id",
            cmdchan_tests::SERVER_ID,
        ]);
        for key in keys {
            cmd.arg("--zone-key").arg(key);
        }
        cmd.arg("--policy")
            .arg(&policy)
            .arg("--audit-log")
            .arg(&log);
        cmd.arg("--replay-store")
            .arg(format!("file:{}", env.path("replay").display()));
        Server::spawn(cmd)
    };
    let cred = env.provision("alice", "ops", &[]);
    let server = serve(&[&env.zone_key, &new_key]);
    env.cmdchan(&server, &cred, &["ping"]);
    records_when(&log, 2);
    let rotated = env.path("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("HUP");
    assert!(eventually(10, || log.exists()));
    env.cmdchan(&server, &cred, &["ping"]);
    records_when(&log, 2);
    assert!(server.terminate().success());
    let new_cred = env.provision("alice", "ops", &["--generation", "2"]);
    let server = serve(&[&new_key]);
    env.cmdchan(&server, &new_cred, &["ping"]);
    let all = records_when(&log, 4);
    assert!(all.iter().any(|r| r["chain"] == "rekeyed"), "{all:?}");
    assert!(server.terminate().success());
    let check = |file: &Path, keys: &[&Path]| {
        let mut args = vec!["audit-verify".to_owned(), file.display().to_string()];
        for key in keys {
            args.extend(["--zone-key".to_owned(), key.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.admin(&args);
        (out.status.code(), text(&out.stdout))
    };
    for file in [&rotated, &log] {
        let (status, report) = check(file, &[&env.zone_key, &new_key]);
        assert_eq!(status, Some(0), "{}: {report}", file.display());
    }
    let (status, report) = check(&log, &[&new_key]);
    assert_eq!(status, Some(1), "{report}");
    assert!(
        report.contains("NOT CHECKED") && !report.contains("BROKEN"),
        "{report}"
    );
    assert!(report.contains("key change at line"), "{report}");
}

/// The case: every SIGHUP restarted the checkpoint's minute, so a server reloaded more
/// often than that never logged one. Reloads now leave the checkpoint's clock alone.
#[test]
fn checkpoints_keep_coming_when_reloads_come_more_often() {
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&[
        "--audit-log",
        log.to_str().unwrap(),
        "--audit-checkpoint",
        "2s",
    ]);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(7) {
        env.cmdchan(&server, &cred, &["ping"]);
        server.signal("HUP");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let checkpoints = server.log_lines("audit checkpoint");
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
}

/// The values of a refused request are recorded as sent, so a probe shows in the trail
/// — a secret one (and every value of a command the policy does not know) only as an
/// HMAC under the audit key, never in clear.
#[test]
fn a_refused_request_is_recorded_with_its_values_and_its_secrets_hashed() {
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let server = start(&env, &log);
    let cred = env.provision("alice", "ops", &[]);
    let refused = env.cmdchan(&server, &cred, &["login", "alice", "hunter2", "extra"]);
    assert_eq!(refused.status.code(), Some(80), "{}", text(&refused.stderr));
    let probed = env.cmdchan(&server, &cred, &["--arg", "token=s3cr3t", "no-such", "x"]);
    assert_eq!(probed.status.code(), Some(80));
    let recs = records_when(&log, 3);
    let bad = recs
        .iter()
        .find(|r| r["command"] == "login")
        .expect("the refused login");
    assert_eq!(bad["outcome"], "bad arguments");
    let args: Vec<&str> = bad["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "alice");
    assert!(
        args[1].starts_with("hmac:"),
        "the secret parameter: {args:?}"
    );
    assert_eq!(args[2], "extra");
    let unknown = recs
        .iter()
        .find(|r| r["command"] == "no-such")
        .expect("the probe");
    assert!(
        unknown["args"][0].as_str().unwrap().starts_with("hmac:"),
        "{unknown}"
    );
    assert!(
        unknown["params"]["token"]
            .as_str()
            .unwrap()
            .starts_with("hmac:"),
        "{unknown}"
    );
    let file = std::fs::read_to_string(&log).unwrap();
    assert!(
        !file.contains("hunter2") && !file.contains("s3cr3t"),
        "a secret in clear"
    );
    let (code, report) = verify(&env, &log, None);
    assert_eq!(code, Some(0), "{report}");
}

/// One journal entry from the native protocol: `KEY=VALUE` lines, or a key, a newline,
/// a u64 length and the value's bytes.
fn journal_fields(datagram: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut fields = std::collections::BTreeMap::new();
    let mut rest = datagram;
    while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'=') {
        let key = String::from_utf8_lossy(&rest[..end]).into_owned();
        if rest[end] == b'=' {
            let line_end = rest[end..].iter().position(|&b| b == b'\n').unwrap() + end;
            fields.insert(
                key,
                String::from_utf8_lossy(&rest[end + 1..line_end]).into_owned(),
            );
            rest = &rest[line_end + 1..];
        } else {
            let len = u64::from_le_bytes(rest[end + 1..end + 9].try_into().unwrap()) as usize;
            let value = &rest[end + 9..end + 9 + len];
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            rest = &rest[end + 9 + len + 1..];
        }
    }
    fields
}

/// The audit events reach the journal (native fields: `journalctl CMDCHAN_ID=…` finds a
/// run) and syslog (RFC 5424, structured data); once both sinks are gone, requests go on
/// as fast and the audit file still has every one.
#[test]
fn audit_events_reach_the_journal_and_syslog_and_a_sink_that_is_gone_holds_nothing_up() {
    use std::os::unix::net::UnixDatagram;
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let journal_path = env.path("journal.socket");
    let journal = UnixDatagram::bind(&journal_path).unwrap();
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for socket in [
        journal.set_read_timeout(Some(std::time::Duration::from_secs(5))),
        syslog.set_read_timeout(Some(std::time::Duration::from_secs(5))),
    ] {
        socket.unwrap();
    }
    env.script("login.sh", "echo \"welcome $1\"");
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &POLICY.replace("{dir}", dir));
    let journal_sink = format!("journald:{}", journal_path.display());
    let syslog_sink = format!("syslog:udp://{}", syslog.local_addr().unwrap());
    let server = env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
        "--log-sink",
        &journal_sink,
        "--log-sink",
        &syslog_sink,
    ]);
    let cred = env.provision("alice", "ops", &[]);
    assert_eq!(
        env.cmdchan(&server, &cred, &["ping"]).status.code(),
        Some(0)
    );
    let recs = records_when(&log, 2);
    let ping = recs.iter().find(|r| r["command"] == "ping").unwrap();

    let mut buf = vec![0u8; 65536];
    let n = journal.recv(&mut buf).unwrap();
    let entry = journal_fields(&buf[..n]);
    assert_eq!(
        entry["CMDCHAN_ID"],
        ping["id"].as_str().unwrap(),
        "{entry:?}"
    );
    assert_eq!(entry["CMDCHAN_CLIENT"], "alice");
    assert_eq!(entry["CMDCHAN_OUTCOME"], "ok");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "cmdchan-server");
    let n = syslog.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    let (head, rest) = line
        .split_once(" [cmdchan@32473 ")
        .expect("structured data");
    let fields: Vec<&str> = head.split(' ').collect();
    assert_eq!(
        (fields[0], fields[3], fields[5]),
        ("<39>1", "cmdchan-server", "audit"),
        "{line}"
    );
    assert!(
        rest.contains(&format!("id=\"{}\"", ping["id"].as_str().unwrap())),
        "{line}"
    );
    assert!(rest.contains("command=\"ping\""), "{line}");

    // Both sinks gone: requests go on, the audit file has every one of them.
    drop(journal);
    std::fs::remove_file(&journal_path).unwrap();
    drop(syslog);
    let began = std::time::Instant::now();
    for _ in 0..30 {
        assert_eq!(
            env.cmdchan(&server, &cred, &["ping"]).status.code(),
            Some(0)
        );
    }
    assert!(began.elapsed() < std::time::Duration::from_secs(20));
    let recs = records_when(&log, 32);
    assert_eq!(recs.iter().filter(|r| r["command"] == "ping").count(), 31);
    assert!(server.wait_for_log("takes no events"), "{}", server.log());
}
