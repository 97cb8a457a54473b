//! A hostile server (one that holds the zone's key: a compromised server, or a peer of
//! its zone) against the real `cmdchan` binary: whatever it sends, it cannot fill the
//! operator's memory, drive the operator's terminal, make the client read and send its
//! stdin, or write through a link planted in `--out-dir`.

use std::path::PathBuf;
use std::process::{Command, Output};

use cmdchan::{Body, ErrorCode, ExitInfo, Failure, Reply, Stream};
use cmdchan_tests::{bin, run, system, text, Answers, Hostile, TestEnv, SERVER_ID};
use serde_json::Value;

/// An inventory with the hostile server as `srvA`.
fn inventory(env: &TestEnv, hostile: &Hostile) -> PathBuf {
    env.write(
        "inventory.toml",
        &format!("[servers.srvA]\naddress = \"{}\"\n", hostile.addr),
    )
}

/// `cmdchan --cred CRED --inventory INV ARGS`, run off the async runtime.
async fn cmdchan(cred: &std::path::Path, inventory: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("cmdchan"));
    cmd.arg("--cred")
        .arg(cred)
        .arg("--inventory")
        .arg(inventory)
        .args(args);
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

/// `cmdchan` run under `/usr/bin/time`: its output and its peak memory in KiB.
async fn measured(
    cred: &std::path::Path,
    inventory: &std::path::Path,
    args: &[&str],
) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = system("/usr/bin/time");
    cmd.args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(bin("cmdchan"));
    cmd.arg("--cred")
        .arg(cred)
        .arg("--inventory")
        .arg(inventory)
        .args(args);
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    let kib = std::fs::read_to_string(report.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out, kib)
}

/// 400 MiB of stdout in 64 KiB frames, then exit 0, whatever was asked.
fn flood(_: &cmdchan::Request) -> Answers {
    let chunk = vec![b'x'; 64 * 1024];
    let output = (0..6400).map(move |_| {
        Body::Output(cmdchan::Output {
            stream: Stream::Stdout,
            data: chunk.clone(),
        })
    });
    let exit = Body::Ok(Reply::Exit(ExitInfo {
        code: Some(0),
        ..ExitInfo::default()
    }));
    Box::new(output.chain(std::iter::once(exit)))
}

/// The attack: one server of a fan-out sends 400 MiB. With --gather and --json the client
/// keeps at most --max-output per stream (16 MiB by default) and says what it cut; its
/// memory stays far below what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sending_400_mib_cannot_grow_the_client_past_its_caps() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let hostile = Hostile::start(&env, flood).await;
    let inventory = inventory(&env, &hostile);
    let (out, kib) = measured(&cred, &inventory, &["--on", "srvA", "--json", "hello"]).await;
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["stdout_cut"], true, "{}", text(&out.stderr));
    assert_eq!(first["stdout"].as_str().unwrap().len(), 16 << 20);
    assert!(
        kib < 120 * 1024,
        "the client peaked at {kib} KiB for --json"
    );
    let (out, kib) = measured(&cred, &inventory, &["--on", "srvA", "--gather", "hello"]).await;
    let header = text(&out.stdout).lines().next().unwrap().to_owned();
    assert!(
        header.contains("stdout cut: 16777216 of 419430400 bytes kept"),
        "{header}"
    );
    assert!(
        kib < 120 * 1024,
        "the client peaked at {kib} KiB for --gather"
    );
}

/// Text meant to drive a terminal: a title, a clipboard write, and `\r` with an erase
/// line that paints a forged result over the line.
const FORGED: &str = "\x1b]0;pwned\x07\x1b]52;c;ZWNobyBoaQ==\x07\r\x1b[Ksrv9: exit 0";

/// The attack: a server puts terminal escapes in an error message, an echo reply, and
/// a fan-out's program output. The client prints them as visible escapes: on a
/// terminal nothing of them is raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_a_server_sends_never_reach_the_operators_terminal() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let hostile = Hostile::start(&env, |req| -> Answers {
        let body = match req.command.as_str() {
            "echo" => Body::Ok(Reply::Echo(vec![FORGED.to_owned()])),
            "hello" => {
                let out = cmdchan::Output {
                    stream: Stream::Stdout,
                    data: format!("{FORGED}\n").into_bytes(),
                };
                let exit = Body::Ok(Reply::Exit(ExitInfo {
                    code: Some(0),
                    ..ExitInfo::default()
                }));
                return Box::new([Body::Output(out), exit].into_iter());
            }
            _ => Body::Err(Failure::new(ErrorCode::Forbidden, FORGED)),
        };
        Box::new(std::iter::once(body))
    })
    .await;
    let inventory = inventory(&env, &hostile);
    let single = |args: &str| {
        format!(
            "{} --cred {} --server {} --server-id {SERVER_ID} {args}",
            bin("cmdchan").display(),
            cred.display(),
            hostile.addr
        )
    };
    let fanout = format!(
        "{} --cred {} --inventory {} --on srvA hello",
        bin("cmdchan").display(),
        cred.display(),
        inventory.display()
    );
    for line in [single("echo x"), single("restart"), fanout] {
        let screen = on_a_terminal(&line).await;
        // The terminal's own line ends are \r\n; any other \r or ESC came from the server.
        let raw = screen.replace("\r\n", "\n");
        assert!(
            !raw.contains('\x1b') && !raw.contains('\r'),
            "{line}: {raw:?}"
        );
        assert!(
            raw.contains("\\x1b]52;c;"),
            "{line}: shown, escaped: {raw:?}"
        );
    }
    // --raw prints a program's output as it is, for those who want it.
    let out = cmdchan(&cred, &inventory, &["--on", "srvA", "--raw", "hello"]).await;
    assert!(
        text(&out.stdout).contains(FORGED),
        "{:?}",
        text(&out.stdout)
    );
}

/// What `line` prints on a terminal (a pseudo-terminal made by `script`).
async fn on_a_terminal(line: &str) -> String {
    let mut cmd = system("script");
    cmd.args(["-q", "-e", "-c", line, "/dev/null"]);
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    text(&out.stdout)
}

/// The attack: a server answers the built-in `ping` with `Started`, asking for the
/// client's stdin. A built-in takes none: the client refuses (a protocol error) and
/// sends nothing of its stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_for_stdin_for_ping_gets_none() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let hostile = Hostile::start(&env, |_| -> Answers {
        let started = Body::Started(cmdchan::Started {
            stdin_limit: 1 << 20,
        });
        Box::new([started, Body::Ok(Reply::Pong)].into_iter())
    })
    .await;
    let mut cmd = Command::new(bin("cmdchan"));
    cmd.arg("--cred").arg(&cred).args([
        "--server",
        &hostile.addr.to_string(),
        "--server-id",
        SERVER_ID,
        "--json",
        "ping",
    ]);
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"SECRET STDIN\n");
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(76), "{}", text(&out.stdout));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("asked for stdin for ping"));
    assert!(
        hostile.stdin_received().is_empty(),
        "the client sent its stdin"
    );
}

/// The attack: a link planted in the --out-dir points at a file of the operator's. The
/// client writes new files only: it refuses before running anything, and the target is
/// untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_dir_never_writes_through_a_planted_link() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let hostile = Hostile::start(&env, flood).await;
    let inventory = inventory(&env, &hostile);
    let victim = env.write("authorized_keys", "ssh-ed25519 AAAA operator\n");
    let dir = env.path("out");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("srvA.stdout")).unwrap();
    let out_dir = dir.to_str().unwrap();
    let out = cmdchan(
        &cred,
        &inventory,
        &["--on", "srvA", "--out-dir", out_dir, "hello"],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is there already"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "ssh-ed25519 AAAA operator\n"
    );
    assert!(
        hostile.received.lock().unwrap().is_empty(),
        "nothing was run"
    );
}

/// The case: a server that holds the connection and says nothing (frozen, or hostile).
/// Without a sign of life for --answer-timeout the client gives up with a timeout: exit
/// 124, code `timeout`, and for Nagios CRITICAL (not UNKNOWN, not "retry later").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_a_timeout_and_nagios_says_critical() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let hostile = Hostile::start(&env, |_| -> Answers { Box::new(std::iter::empty()) }).await;
    let inventory = inventory(&env, &hostile);
    let single = |mode: &'static str| {
        let mut cmd = Command::new(bin("cmdchan"));
        cmd.arg("--cred").arg(&cred).args([
            "--server",
            &hostile.addr.to_string(),
            "--server-id",
            SERVER_ID,
            "--answer-timeout",
            "2s",
            mode,
            "check",
        ]);
        cmd
    };
    let (mut json, mut nagios) = (single("--json"), single("--nagios"));
    let out = tokio::task::spawn_blocking(move || run(&mut json))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stdout));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "timeout", "{reply}");
    let out = tokio::task::spawn_blocking(move || run(&mut nagios))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).starts_with("CRITICAL: cmdchan: timeout: no sign of life"),
        "{}",
        text(&out.stdout)
    );
    let out = cmdchan(
        &cred,
        &inventory,
        &["--on", "srvA", "--answer-timeout", "2s", "--json", "check"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(8),
        "timed out, bit 8: {}",
        text(&out.stdout)
    );
}

/// A job as a hostile server describes it.
fn job(id: [u8; 16]) -> cmdchan::JobInfo {
    cmdchan::JobInfo {
        id,
        state: cmdchan::JobState::Exited(0),
        client: "alice".into(),
        command: "backup".into(),
        started_at: 1,
        ended_at: 2,
        output_bytes: 0,
        kept_bytes: 0,
        stdout_sha256: [0; 32],
        stderr_sha256: [0; 32],
        run: None,
    }
}

/// The attack: a server answers about another job than the one asked for (so a script
/// that waits for its backup hears of some other job's success), or sends output for a
/// job it was asked to start. Each is a protocol error (76), nothing is taken for the
/// job's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_about_another_job_or_with_output_for_a_start_is_refused() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let hostile = Hostile::start(&env, |req| -> Answers {
        let other = job([0xee; 16]);
        match req.command.as_str() {
            "job.wait" | "job.status" => Box::new([Body::Ok(Reply::Jobs(vec![other]))].into_iter()),
            _ => {
                let out = Body::Output(cmdchan::Output {
                    stream: Stream::Stdout,
                    data: b"surprise\n".to_vec(),
                });
                Box::new([out, Body::Ok(Reply::Job(job(req.id)))].into_iter())
            }
        }
    })
    .await;
    let id = "00112233445566778899aabbccddeeff";
    let server = hostile.addr.to_string();
    for (args, says) in [
        (
            vec!["job", "wait", id],
            "another job than the one asked for",
        ),
        (
            vec!["job", "status", id],
            "other jobs than the ones asked for",
        ),
        (vec!["--detach", "backup"], "sent output for backup"),
    ] {
        let mut cmd = Command::new(bin("cmdchan"));
        cmd.arg("--cred")
            .arg(&cred)
            .args(["--server", &server, "--server-id", SERVER_ID])
            .args(&args);
        let out = tokio::task::spawn_blocking(move || run(&mut cmd))
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(76),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stdout).contains("surprise"),
            "output of a start was shown"
        );
    }
}
