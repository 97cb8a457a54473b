//! `cmdchan` in scripts, the way ssh is used: arguments after the command are the
//! command's, every failure has one JSON shape, a closed stdout stops the remote program,
//! Ctrl-C lets its TERM trap run, truncation can fail a script, and Nagios gets one
//! status line and 0–3.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cmdchan_tests::{
    bin, cmdchan_command, eventually, process_gone, system, text, Server, TestEnv, SERVER_ID,
};
use serde_json::Value;

const POLICY: &str = r#"
[roles.ops]
commands = ["ping", "echo", "endless", "trap", "binary", "big", "check", "cat", "head", "nostdin", "keep", "quiet"]
[commands.quiet]
program = "/bin/sleep"
args = ["3"]
[commands.keep]
program = "{dir}/keep.sh"
stdin = true
detach = true
[commands.cat]
program = "/bin/cat"
stdin = true
[commands.head]
program = "/bin/cat"
stdin = true
stdin_limit = 1000
[commands.nostdin]
program = "/bin/cat"
[commands.endless]
program = "{dir}/endless.sh"
[commands.trap]
program = "{dir}/trap.sh"
[commands.binary]
program = "{dir}/binary.sh"
[commands.big]
program = "{dir}/big.sh"
output_limit = 100
[commands.check]
program = "{dir}/check.sh"
args = ["{status}"]
[[commands.check.params]]
name = "status"
type = "integer"
required = true
"#;

fn setup(env: &TestEnv) -> (Server, std::path::PathBuf) {
    env.script(
        "endless.sh",
        &format!(
            "echo $$ > {}\nwhile :; do echo line; sleep 0.2; done",
            env.path("endless.pid").display()
        ),
    );
    env.script(
        "trap.sh",
        &format!(
            "trap 'echo trapped > {}; exit 3' TERM\necho $$ > {}\nsleep 30 &\nwait",
            env.path("trapped").display(),
            env.path("trap.pid").display()
        ),
    );
    env.script("binary.sh", "printf '\\377\\376ok'");
    env.script(
        "keep.sh",
        &format!(
            "cat > {}\necho done > {}",
            env.path("kept").display(),
            env.path("kept.done").display()
        ),
    );
    env.script("big.sh", "printf '%0500d' 0");
    env.script("check.sh", "echo \"DISK OK - all fine\"\nexit \"$1\"");
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &POLICY.replace("{dir}", dir));
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    (server, env.provision("alice", "ops", &[]))
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn options_after_the_command_reach_the_command_unchanged() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let out = env.cmdchan(
        &server,
        &cred,
        &["echo", "--json", "--retries", "5", "--", "--x", "--help"],
    );
    assert_eq!(
        text(&out.stdout),
        "--json --retries 5 -- --x --help\n",
        "{}",
        text(&out.stderr)
    );
    // A remote command named like one of the client's.
    let out = env.cmdchan(&server, &cred, &["--json", "run", "doctor"]);
    assert_eq!(json(&out)["error"]["code"], "unknown command");
}

#[test]
fn every_failure_has_a_code_and_a_number_in_json() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let unreachable = cmdchan_tests::free_port();
    let mut cmd = Command::new(bin("cmdchan"));
    cmd.args(["--json", "--cred", cred.to_str().unwrap(), "--server"])
        .arg(format!("127.0.0.1:{unreachable}"))
        .args(["--server-id", SERVER_ID, "ping"]);
    let out = cmdchan_tests::run(&mut cmd);
    assert_eq!(out.status.code(), Some(69));
    let reply = json(&out);
    assert_eq!(
        (
            reply["error"]["code"].as_str(),
            reply["error"]["number"].as_u64()
        ),
        (Some("cannot connect"), Some(103)),
        "{reply}"
    );
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).args(["--json", "--no-such-option"]));
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(json(&out)["error"]["code"], "usage");
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).args([
        "--json",
        "--cred",
        "/nonexistent",
        "ping",
    ]));
    assert_eq!(
        (out.status.code(), json(&out)["error"]["number"].as_u64()),
        (Some(78), Some(101))
    );
}

#[test]
fn output_that_is_not_utf8_comes_back_as_base64_and_truncation_can_fail_a_script() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let reply = json(&env.cmdchan(&server, &cred, &["--json", "binary"]));
    assert_eq!(reply["reply"]["stdout_encoding"], "base64", "{reply}");
    assert_eq!(reply["reply"]["stdout"], "//5vaw==");
    assert_eq!(reply["reply"]["stderr_encoding"], "utf-8");
    assert_eq!(env.cmdchan(&server, &cred, &["big"]).status.code(), Some(0));
    assert_eq!(
        env.cmdchan(&server, &cred, &["--fail-truncated", "big"])
            .status
            .code(),
        Some(74)
    );
}

#[test]
fn nagios_gets_one_status_line_and_0_to_3_for_every_outcome() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let out = env.cmdchan(&server, &cred, &["--nagios", "check", "2"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(2), "DISK OK - all fine\n".into())
    );
    let out = env.cmdchan(&server, &cred, &["--nagios", "no-such-check"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).starts_with("UNKNOWN: cmdchan: unknown command: "),
        "{}",
        text(&out.stdout)
    );
    let out = env.cmdchan(&server, &cred, &["--nagios", "check", "7"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (
            Some(3),
            "UNKNOWN: cmdchan: the check exited 7, outside 0-3\n".into()
        )
    );
    let mut cmd = Command::new(bin("cmdchan"));
    cmd.args(["--nagios", "--cred", cred.to_str().unwrap(), "--server"])
        .arg(format!("127.0.0.1:{}", cmdchan_tests::free_port()))
        .arg("ping");
    let out = cmdchan_tests::run(&mut cmd);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );
}

fn spawn_cmdchan(
    server: &Server,
    cred: &std::path::Path,
    args: &[&str],
    stdout: Stdio,
) -> std::process::Child {
    cmdchan_command(server, SERVER_ID, cred)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn cmdchan_piped_into_head_returns_at_once_and_the_remote_program_stops() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let started = Instant::now();
    let mut head = Command::new("head")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Stdio::from(head.stdin.take().unwrap());
    let mut client = spawn_cmdchan(&server, &cred, &["endless"], stdout);
    let first = head.wait_with_output().unwrap();
    assert_eq!(text(&first.stdout), "line\n");
    let status = client.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(141), "as a process that SIGPIPE ended");
    let pid: u32 = std::fs::read_to_string(env.path("endless.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(5, || process_gone(pid)),
        "the remote program kept running"
    );
}

#[test]
fn ctrl_c_to_the_client_lets_the_programs_term_trap_run() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let mut client = spawn_cmdchan(&server, &cred, &["trap"], Stdio::null());
    assert!(
        eventually(10, || env.path("trap.pid").exists()),
        "{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    cmdchan_tests::run(Command::new("kill").args(["-INT", &client.id().to_string()]));
    let _ = client.wait();
    assert!(
        eventually(5, || std::fs::read_to_string(env.path("trapped"))
            .is_ok_and(|t| t == "trapped\n")),
        "the TERM trap did not run:\n{}",
        server.log()
    );
}

#[test]
fn doctor_and_generate_are_real_subcommands() {
    let env = TestEnv::new();
    let dir = env.path("assets");
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).args(["generate", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(!env.path("--help").exists() && text(&out.stdout).contains("DIR"));
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).arg("generate"));
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("<DIR>"), "{}", text(&out.stderr));
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).args(["generate", "a", "b"]));
    assert_eq!(
        out.status.code(),
        Some(64),
        "an extra argument is an error, not ignored"
    );
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).arg("generate").arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    assert!(dir.join("completions/cmdchan.bash").exists());
}

#[test]
fn check_fails_a_policy_that_names_a_missing_program_and_passes_a_good_one() {
    let env = TestEnv::new();
    let bad = env.write(
        "bad.toml",
        "[roles.ops]\ncommands = [\"x\"]\n[commands.x]\nprogram = \"/nonexistent/x\"\n",
    );
    let zone_key = env.zone_key.to_str().unwrap().to_owned();
    let check = |policy: &std::path::Path| {
        let mut cmd = Command::new(bin("cmdchan-server"));
        cmd.args([
            "check",
            "--zone-key",
            &zone_key,
            "--server-id",
            "db1",
            "--policy",
        ])
        .arg(policy);
        cmdchan_tests::run(&mut cmd)
    };
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("program /nonexistent/x does not exist"),
        "{}",
        text(&out.stdout)
    );
    let good = env.write("good.toml", "[roles.ops]\ncommands = [\"ping\"]\n");
    let out = check(&good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).starts_with("OK"));
}

#[test]
fn the_server_exits_with_the_sysexits_convention() {
    let env = TestEnv::new();
    let out =
        cmdchan_tests::run(Command::new(bin("cmdchan-server")).args(["serve", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(64), "usage");
    let out = env.admin_like_serve(&["--policy", "/nonexistent/policy.toml"]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "a config it cannot use: {}",
        text(&out.stderr)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new(bin("cmdchan-server"));
    cmd.args([
        "serve",
        "--zone-key",
        env.zone_key.to_str().unwrap(),
        "--server-id",
        "db1",
        "--listen",
        &addr,
    ]);
    cmd.arg("--replay-store")
        .arg(format!("file:{}", env.path("replay").display()));
    let out = cmdchan_tests::run(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(69),
        "cannot listen: {}",
        text(&out.stderr)
    );
}

/// Before: a reset before any TLS reply, and a port that speaks something else, were
/// both blamed on the key.
#[test]
fn a_refusal_before_tls_and_a_port_that_is_not_tls_are_told_apart_from_a_wrong_key() {
    let env = TestEnv::new();
    let server = env.start(&["--allow", "10.0.0.0/8"]);
    let cred = env.provision("alice", "ops", &[]);
    let out = env.cmdchan(&server, &cred, &["--json", "ping"]);
    assert_eq!(out.status.code(), Some(69));
    let reply = json(&out);
    assert_eq!(reply["error"]["code"], "refused before tls", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allow list"));
    let out = cmdchan_tests::run(Command::new(bin("cmdchan")).args([
        "--cred",
        cred.to_str().unwrap(),
        "--server",
        &server.addr.to_string(),
        "--server-id",
        SERVER_ID,
        "doctor",
    ]));
    assert!(
        text(&out.stdout).contains("allow"),
        "doctor names the allowlist: {}",
        text(&out.stdout)
    );

    // Something else on the port: an SSH banner.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        while let Ok((mut tcp, _)) = other.accept() {
            let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut cmd = Command::new(bin("cmdchan"));
    cmd.args([
        "--json",
        "--cred",
        cred.to_str().unwrap(),
        "--server",
        &addr.to_string(),
        "--server-id",
        SERVER_ID,
        "ping",
    ]);
    let reply = json(&cmdchan_tests::run(&mut cmd));
    assert_eq!(reply["error"]["code"], "not tls", "{reply}");
}

fn with_stdin(
    server: &Server,
    cred: &std::path::Path,
    args: &[&str],
    input: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = cmdchan_command(server, SERVER_ID, cred)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

#[test]
fn stdin_of_random_binary_data_makes_the_round_trip_through_a_program() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let mut data = vec![0u8; 300_000];
    openssl::rand::rand_bytes(&mut data).unwrap();
    let out = with_stdin(&server, &cred, &["cat"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == data,
        "{} bytes came back of {}",
        out.stdout.len(),
        data.len()
    );
}

#[test]
fn stdin_past_the_commands_limit_is_cut_and_the_answer_says_so() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let out = with_stdin(&server, &cred, &["--json", "head"], &[b'x'; 5000]);
    let reply = json(&out);
    assert_eq!(
        reply["reply"]["stdout"].as_str().unwrap().len(),
        1000,
        "{reply}"
    );
    assert_eq!(reply["reply"]["exit"]["stdin_truncated"], true);
}

/// ssh's `-n` pitfall: in a `while read` loop, a client that reads its stdin swallows
/// the loop's input. cmdchan reads it only for a program that takes stdin.
#[test]
fn a_client_in_a_while_read_loop_leaves_the_loops_input_alone() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let c = format!(
        "{} --cred {} --server {} --server-id {SERVER_ID}",
        bin("cmdchan").display(),
        cred.display(),
        server.addr
    );
    let script = format!("printf 'one\\ntwo\\nthree\\n' | while read l; do {c} nostdin >/dev/null; {c} ping >/dev/null; echo \"$l\"; done");
    let out = cmdchan_tests::run(system("sh").args(["-c", &script]));
    assert_eq!(
        text(&out.stdout),
        "one\ntwo\nthree\n",
        "{}",
        text(&out.stderr)
    );
}

/// A detached program that reads stdin reads its end when its client is gone, instead of
/// waiting for input that can no longer come until its timeout.
#[test]
fn a_detached_program_reads_the_end_of_its_stdin_when_its_client_is_killed() {
    use std::io::Write;
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let mut child = cmdchan_command(&server, SERVER_ID, &cred)
        .arg("keep")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"part of it\n").unwrap();
    stdin.flush().unwrap();
    let kept = env.path("kept");
    assert!(
        eventually(10, || std::fs::read_to_string(&kept)
            .is_ok_and(|t| t == "part of it\n")),
        "the program did not get the first part"
    );
    child.kill().unwrap();
    let _ = child.wait();
    // Its timeout is 60 s: ending within 10 means it read the end of its stdin.
    assert!(
        eventually(10, || env.path("kept.done").exists()),
        "the detached program still waits for stdin:\n{}",
        server.log()
    );
    drop(stdin);
}

/// The case: `sleep 5` with `--answer-timeout 2s` was killed on the server and the client
/// said "retry later". The server shows a sign of life every second while a program
/// runs, so the answer timeout means "no sign of life": a quiet program runs to its end.
#[test]
fn a_quiet_program_runs_to_its_end_past_the_answer_timeout() {
    let env = TestEnv::new();
    let (server, cred) = setup(&env);
    let started = Instant::now();
    let out = env.cmdchan(&server, &cred, &["--answer-timeout", "2s", "quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(3));
    let out = env.cmdchan(&server, &cred, &["--answer-timeout", "1s", "quiet"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "below two signs of life: a usage error"
    );
}
