//! Jobs through the real binaries: `cmdchan --detach` starts one and prints its ID, and
//! `cmdchan job …` finds it again — after the client left, after a reload, after the
//! server was killed (lost), past its retention (expired) — for its owner only unless a
//! role may read every client's, following it live across a dropped connection, and
//! with the digests of what it printed in the audit trail; and in a pool of processes
//! sharing a real Redis, found, followed and declared lost by any of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cmdchan_tests::{bin, eventually, run, text, CutProxy, Redis, Server, TestEnv, SERVER_ID};

const POLICY: &str = r#"
[roles.ops]
commands = ["backup", "fail", "killed", "slow", "forever", "quiet", "chatty", "digits", "attached", "recorded"]
[roles.auditor]
commands = ["ping"]
jobs = "all"

[commands.backup]
program = "{dir}/backup.sh"
detach = true
[commands.fail]
program = "{dir}/fail.sh"
detach = true
[commands.killed]
program = "{dir}/killed.sh"
detach = true
[commands.slow]
program = "/bin/sleep"
args = ["30"]
timeout = "1s"
detach = true
[commands.forever]
program = "/bin/sleep"
args = ["20"]
detach = true
[commands.quiet]
program = "/bin/sleep"
args = ["14"]
detach = true
[commands.chatty]
program = "{dir}/chatty.sh"
detach = true
[commands.digits]
program = "{dir}/digits.sh"
detach = true
[commands.attached]
program = "{dir}/digits.sh"
[commands.recorded]
program = "{dir}/digits.sh"
record_output = "full"
detach = true
"#;

struct Jobs {
    env: TestEnv,
    args: Vec<String>,
    alice: PathBuf,
}

impl Jobs {
    fn new(extra: &[&str]) -> (Jobs, Server) {
        let env = TestEnv::new();
        let policy = scripts(&env);
        let log = env.path("audit.log");
        let mut args: Vec<String> = [
            "--policy",
            policy.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        let alice = env.provision("alice", "ops", &[]);
        let jobs = Jobs { env, args, alice };
        let server = jobs.start();
        (jobs, server)
    }

    fn start(&self) -> Server {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.env.start(&args)
    }

    fn cmdchan(&self, server: &Server, cred: &Path, args: &[&str]) -> Output {
        self.env.cmdchan(server, cred, args)
    }

    /// `cmdchan --detach COMMAND`: the job's ID.
    fn detach(&self, server: &Server, command: &str) -> String {
        let out = self.cmdchan(server, &self.alice, &["--detach", command]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_owned();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a job ID: {id:?}"
        );
        id
    }

    /// `cmdchan --json job status ID` as `cred`: the one job's object.
    fn status(&self, server: &Server, cred: &Path, id: &str) -> Value {
        let out = self.cmdchan(server, cred, &["--json", "job", "status", id]);
        let line: Value = serde_json::from_slice(&out.stdout).unwrap();
        line["reply"]["jobs"][0].clone()
    }

    fn audit(&self) -> Vec<Value> {
        cmdchan_tests::audit_records(&self.env.path("audit.log"))
    }
}

/// The programs of [`POLICY`] in `env`'s directory; the policy's path.
fn scripts(env: &TestEnv) -> PathBuf {
    let dir = env.dir.path().to_str().unwrap().to_owned();
    env.script(
        "backup.sh",
        &format!("echo start\nsleep 1.5\necho done\necho oops >&2\ntouch {dir}/backup.done"),
    );
    env.script("fail.sh", "echo failing\nexit 3");
    env.script("killed.sh", "kill -9 $$");
    env.script(
        "chatty.sh",
        "for i in $(seq 1 40); do echo \"line $i\"; sleep 0.05; done",
    );
    env.script("digits.sh", "seq 1 20000\nseq 1 500 >&2");
    env.write("policy.toml", &POLICY.replace("{dir}", &dir))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}

#[test]
fn a_detached_job_outlives_its_client_and_a_reload_and_is_found_by_its_id() {
    let (jobs, server) = Jobs::new(&[]);
    let began = Instant::now();
    let id = jobs.detach(&server, "backup");
    assert!(
        began.elapsed() < Duration::from_millis(1400) && !jobs.env.path("backup.done").exists(),
        "the client waited for the job"
    );
    let running = jobs.status(&server, &jobs.alice, &id);
    assert_eq!(running["state"], "running", "{running}");
    server.signal("HUP");
    assert!(server.wait_for_log("reloaded"), "{}", server.log());

    let waited = jobs.cmdchan(&server, &jobs.alice, &["job", "wait", &id]);
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
    assert!(jobs.env.path("backup.done").exists());
    assert!(
        text(&waited.stdout).contains("exited 0"),
        "{}",
        text(&waited.stdout)
    );

    let output = jobs.cmdchan(&server, &jobs.alice, &["job", "output", &id]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), "start\ndone\n");
    assert_eq!(text(&output.stderr), "oops\n");
    let rest = jobs.cmdchan(
        &server,
        &jobs.alice,
        &["job", "output", &id, "--offset", "6"],
    );
    assert_eq!(text(&rest.stdout), "done\n", "from byte 6 on");

    let ended = jobs.status(&server, &jobs.alice, &id);
    assert_eq!(ended["state"], "exited");
    assert_eq!(ended["code"], 0);
    assert_eq!(ended["client"], "alice");
    assert_eq!(ended["stdout_sha256"], sha256(b"start\ndone\n"));
    assert_eq!(ended["stderr_sha256"], sha256(b"oops\n"));

    let list = jobs.cmdchan(&server, &jobs.alice, &["job", "list"]);
    assert!(
        text(&list.stdout).starts_with(&id),
        "{}",
        text(&list.stdout)
    );
}

#[test]
fn each_way_a_job_ends_is_its_state_and_the_exit_status_of_wait() {
    let (jobs, server) = Jobs::new(&[]);
    for (command, state, exit) in [
        ("fail", "exited 3", 3),
        ("killed", "signalled 9", 137),
        ("slow", "timed out", 124),
    ] {
        let id = jobs.detach(&server, command);
        let waited = jobs.cmdchan(&server, &jobs.alice, &["job", "wait", &id]);
        assert_eq!(
            waited.status.code(),
            Some(exit),
            "{command}: {}",
            text(&waited.stderr)
        );
        let status = jobs.cmdchan(&server, &jobs.alice, &["job", "status", &id]);
        assert_eq!(status.status.code(), Some(0), "a known job");
        assert!(
            text(&status.stdout).contains(state),
            "{command}: {}",
            text(&status.stdout)
        );
    }
    let nobody = "00112233445566778899aabbccddeeff";
    let waited = jobs.cmdchan(&server, &jobs.alice, &["job", "wait", nobody]);
    assert_eq!(waited.status.code(), Some(67));
    assert!(
        text(&waited.stderr).contains("unknown"),
        "{}",
        text(&waited.stderr)
    );
    let status = jobs.cmdchan(&server, &jobs.alice, &["job", "status", nobody]);
    assert_eq!(status.status.code(), Some(67));
    let refused = jobs.cmdchan(&server, &jobs.alice, &["--detach", "attached"]);
    assert_eq!(refused.status.code(), Some(80), "not detachable: forbidden");
    assert!(
        text(&refused.stderr).contains("its policy does not let it be detached"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn a_job_running_when_the_server_is_killed_9_is_lost_after_the_restart() {
    let (jobs, server) = Jobs::new(&[]);
    let id = jobs.detach(&server, "forever");
    assert_eq!(jobs.status(&server, &jobs.alice, &id)["state"], "running");
    server.kill();
    let server = jobs.start();
    let status = jobs.status(&server, &jobs.alice, &id);
    assert_eq!(status["state"], "lost", "{status}");
    let waited = jobs.cmdchan(&server, &jobs.alice, &["job", "wait", &id]);
    assert_eq!(waited.status.code(), Some(70));
    assert!(
        text(&waited.stderr).contains("is lost"),
        "{}",
        text(&waited.stderr)
    );
    let audit = jobs.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["outcome"] == "job: lost" && r["id"] == id.as_str()),
        "the restart recorded the lost job: {audit:?}"
    );
}

#[test]
fn a_result_past_its_retention_reads_as_expired() {
    let (jobs, server) = Jobs::new(&["--result-retention", "2s"]);
    let id = jobs.detach(&server, "fail");
    assert!(eventually(10, || jobs.status(&server, &jobs.alice, &id)
        ["state"]
        == "exited"));
    assert!(
        eventually(10, || jobs.status(&server, &jobs.alice, &id)["state"]
            == "expired"),
        "still kept past its retention"
    );
    let status = jobs.cmdchan(&server, &jobs.alice, &["job", "status", &id]);
    assert_eq!(status.status.code(), Some(67));
    let output = jobs.cmdchan(&server, &jobs.alice, &["job", "output", &id]);
    assert_eq!(output.status.code(), Some(67), "nothing of it is kept");
    assert!(
        text(&output.stderr).contains("expired"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn reading_another_clients_job_is_refused_as_unknown_unless_the_role_reads_all_jobs() {
    let (jobs, server) = Jobs::new(&[]);
    let bob = jobs.env.provision("bob", "ops", &[]);
    let carol = jobs.env.provision("carol", "auditor", &[]);
    let id = jobs.detach(&server, "fail");
    assert!(eventually(10, || jobs.status(&server, &jobs.alice, &id)
        ["state"]
        == "exited"));

    assert_eq!(jobs.status(&server, &bob, &id)["state"], "unknown");
    let output = jobs.cmdchan(&server, &bob, &["job", "output", &id]);
    assert_eq!(output.status.code(), Some(67));
    assert_eq!(text(&output.stdout), "", "nothing of alice's job");
    let list = jobs.cmdchan(&server, &bob, &["job", "list"]);
    assert_eq!(text(&list.stdout), "");

    let seen = jobs.status(&server, &carol, &id);
    assert_eq!(
        (seen["state"].as_str(), seen["client"].as_str()),
        (Some("exited"), Some("alice"))
    );
    let output = jobs.cmdchan(&server, &carol, &["job", "output", &id]);
    assert_eq!(text(&output.stdout), "failing\n");

    let output_reads = || -> Vec<Value> {
        let audit = jobs.audit().into_iter();
        audit.filter(|r| r["command"] == "job.output").collect()
    };
    assert!(
        eventually(10, || output_reads().len() == 2),
        "{:?}",
        jobs.audit()
    );
    let reads = output_reads();
    let readers: Vec<&str> = reads.iter().filter_map(|r| r["client"].as_str()).collect();
    assert_eq!(readers, ["bob", "carol"], "every read is audited");
    assert!(reads.iter().all(|r| r["job"] == id.as_str()), "{reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_follows_a_job_across_dropped_connections_without_loss_or_repeat() {
    let (jobs, server) = Jobs::new(&[]);
    let proxy = CutProxy::start(server.addr).await;
    let id = jobs.detach(&server, "chatty");
    let mut attach = Command::new(bin("cmdchan"));
    attach
        .arg("--cred")
        .arg(&jobs.alice)
        .args([
            "--server",
            &proxy.addr.to_string(),
            "--server-id",
            SERVER_ID,
        ])
        .args(["job", "attach", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = attach.spawn().unwrap();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        proxy.cut();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(&out.stdout), expected, "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let attaches = || {
        let audit = jobs.audit().into_iter();
        audit.filter(|r| r["command"] == "job.attach").count()
    };
    assert!(
        eventually(10, || attaches() == 3),
        "one attach per connection, got {}",
        attaches()
    );
}

#[test]
fn the_audit_digests_are_the_sha256_of_what_the_client_received() {
    let (jobs, server) = Jobs::new(&[]);
    let attached = jobs.cmdchan(&server, &jobs.alice, &["attached"]);
    assert_eq!(attached.status.code(), Some(0));
    let id = jobs.detach(&server, "digits");
    let waited = jobs.cmdchan(&server, &jobs.alice, &["job", "wait", &id]);
    assert_eq!(waited.status.code(), Some(0));
    let output = jobs.cmdchan(&server, &jobs.alice, &["job", "output", &id]);
    assert_eq!(output.stdout, attached.stdout, "the same program's output");

    let audit = jobs.audit();
    let ran = audit
        .iter()
        .find(|r| r["command"] == "attached" && r["outcome"] == "ran")
        .unwrap_or_else(|| panic!("no record of the attached run: {audit:?}"));
    assert_eq!(ran["stdout_sha256"], sha256(&attached.stdout));
    assert_eq!(ran["stderr_sha256"], sha256(&attached.stderr));
    let ended = audit
        .iter()
        .find(|r| r["outcome"] == "job: exited" && r["id"] == id.as_str())
        .expect("the job's end record");
    assert_eq!(ended["stdout_sha256"], sha256(&output.stdout));
    assert_eq!(ended["stderr_sha256"], sha256(&output.stderr));
    let status = jobs.status(&server, &jobs.alice, &id);
    assert_eq!(status["stdout_sha256"], ended["stdout_sha256"]);
}

#[test]
fn a_fan_out_detach_is_one_run_whose_id_finds_every_servers_job() {
    let env = TestEnv::new();
    let policy = scripts(&env);
    let (_servers, inventory) = env.fleet(&["a1", "a2", "a3"], &policy);
    let cred = env.provision("ops", "ops", &[]);
    let cmdchan = |args: &[&str]| {
        run(Command::new(bin("cmdchan"))
            .arg("--cred")
            .arg(&cred)
            .arg("--inventory")
            .arg(&inventory)
            .args(args))
    };
    let started = cmdchan(&["--on", "a*", "--detach", "fail"]);
    assert_eq!(started.status.code(), Some(0), "{}", text(&started.stderr));
    let first = text(&started.stdout).lines().next().unwrap().to_owned();
    let run_id = first
        .strip_prefix("run ")
        .expect("the run's ID first")
        .to_owned();

    let waited = cmdchan(&["--on", "a*", "--json", "job", "wait", &run_id]);
    let lines: Vec<Value> = text(&waited.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("reply"))
        .map(|r| &r["jobs"][0])
        .collect();
    assert_eq!(states.len(), 3, "{}", text(&waited.stdout));
    for job in states {
        assert_eq!(
            (job["state"].as_str(), job["code"].as_i64()),
            (Some("exited"), Some(3))
        );
        assert_eq!(job["run"], run_id.as_str());
    }
    assert_eq!(
        waited.status.code(),
        Some(1),
        "exit 3 everywhere: the non-zero bit"
    );
}

#[test]
fn the_spool_of_full_output_verifies_against_the_chain_and_an_edit_of_it_is_caught() {
    let (jobs, server) = Jobs::new(&[]);
    let attached = jobs.cmdchan(&server, &jobs.alice, &["recorded"]);
    assert_eq!(attached.status.code(), Some(0));
    let id = jobs.detach(&server, "recorded");
    let waited = jobs.cmdchan(&server, &jobs.alice, &["job", "wait", &id]);
    assert_eq!(waited.status.code(), Some(0));
    let log = jobs.env.path("audit.log");
    let spooled = || jobs.audit().iter().filter(|r| r["spooled"] == true).count();
    assert!(eventually(10, || spooled() == 2), "{:?}", jobs.audit());
    let verify = || {
        let key = jobs.env.zone_key.to_str().unwrap();
        jobs.env
            .admin(&["audit-verify", log.to_str().unwrap(), "--zone-key", key])
    };
    let clean = verify();
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stdout));
    assert!(text(&clean.stdout).contains("spool: the output of 2 runs is as printed"));

    let spool = jobs.env.path("audit.log.spool");
    let shown = jobs
        .env
        .admin(&["spool-output", spool.to_str().unwrap(), &id]);
    assert_eq!(
        (shown.stdout.clone(), shown.stderr.clone()),
        (attached.stdout.clone(), attached.stderr.clone())
    );

    // One digit changed in the first run's output (its entry starts the spool and
    // holds 110 kB).
    let mut bytes = std::fs::read(&spool).unwrap();
    let at = 1000 + bytes[1000..].iter().position(u8::is_ascii_digit).unwrap();
    bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    std::fs::write(&spool, &bytes).unwrap();
    let edited = verify();
    assert_eq!(edited.status.code(), Some(1));
    assert!(
        text(&edited.stdout).contains("is not what the program printed (edited)"),
        "{}",
        text(&edited.stdout)
    );
    // The second run's entry cut off: its output is missing, and the spool ends torn.
    let whole = std::fs::read(&spool).unwrap();
    std::fs::write(&spool, &whole[..whole.len() - 10]).unwrap();
    let cut = text(&verify().stdout);
    assert!(cut.contains("the spool holds no output of run"), "{cut}");
    assert!(cut.contains("an entry cut short"), "{cut}");
    drop(server);
}

/// A pool on one Redis: `a` runs the jobs, `b` answers for them.
fn pool(redis: &Redis, extra: &[&str]) -> (Jobs, Server, Server) {
    pool_on(&redis.url(), extra)
}

fn pool_on(url: &str, extra: &[&str]) -> (Jobs, Server, Server) {
    let mut args = vec!["--replay-store", url];
    args.extend_from_slice(extra);
    let (jobs, a) = Jobs::new(&args);
    let log_b = jobs.env.path("audit-b.log");
    let log_a = jobs.env.path("audit.log");
    let args_b: Vec<String> = jobs
        .args
        .iter()
        .map(|arg| match arg == log_a.to_str().unwrap() {
            true => log_b.to_str().unwrap().to_owned(),
            false => arg.clone(),
        })
        .collect();
    let b = jobs
        .env
        .start(&args_b.iter().map(String::as_str).collect::<Vec<_>>());
    (jobs, a, b)
}

#[test]
fn in_a_pool_on_redis_any_process_follows_reads_and_finds_lost_the_jobs_of_another() {
    let redis = Redis::start();
    let (jobs, a, b) = pool(&redis, &["--result-retention", "8s"]);
    let id = jobs.detach(&a, "chatty");
    assert_eq!(jobs.status(&b, &jobs.alice, &id)["state"], "running");
    let attached = jobs.cmdchan(&b, &jobs.alice, &["job", "attach", &id]);
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        text(&attached.stdout),
        expected,
        "{}",
        text(&attached.stderr)
    );
    assert_eq!(attached.status.code(), Some(0));
    let status = jobs.status(&b, &jobs.alice, &id);
    assert_eq!(status["state"], "exited", "{status}");
    assert_eq!(status["stdout_sha256"], sha256(expected.as_bytes()));
    let tail = jobs.cmdchan(&b, &jobs.alice, &["job", "output", &id, "--offset", "8"]);
    assert_eq!(text(&tail.stdout), expected[8..]);
    let bob = jobs.env.provision("bob", "ops", &[]);
    for read in ["output", "attach"] {
        let out = jobs.cmdchan(&b, &bob, &["job", read, &id]);
        assert_eq!(out.status.code(), Some(67), "{read}: {}", text(&out.stderr));
        assert!(
            out.stdout.is_empty(),
            "{read} showed another client's output"
        );
    }
    let listed = jobs.cmdchan(&b, &bob, &["--json", "job", "list"]);
    assert!(
        !text(&listed.stdout).contains(&id),
        "{}",
        text(&listed.stdout)
    );
    let listed = jobs.cmdchan(&b, &jobs.alice, &["--json", "job", "list"]);
    assert!(
        text(&listed.stdout).contains(&id),
        "{}",
        text(&listed.stdout)
    );
    assert_eq!(
        jobs.status(&b, &bob, &id)["state"],
        "unknown",
        "another client's job"
    );

    let forever = jobs.detach(&a, "forever");
    assert_eq!(jobs.status(&b, &jobs.alice, &forever)["state"], "running");
    a.kill();
    assert!(
        eventually(25, || jobs.status(&b, &jobs.alice, &forever)["state"]
            == "lost"),
        "a job of a killed process still reads {}",
        jobs.status(&b, &jobs.alice, &forever)
    );
    let waited = jobs.cmdchan(&b, &jobs.alice, &["job", "wait", &forever]);
    assert_eq!(waited.status.code(), Some(70), "{}", text(&waited.stderr));
    let audit_b = || -> Vec<Value> {
        let log = std::fs::read_to_string(jobs.env.path("audit-b.log")).unwrap();
        log.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        eventually(10, || {
            audit_b()
                .iter()
                .any(|r| r["outcome"] == "job: lost" && r["id"] == forever.as_str())
        }),
        "the process that found it lost recorded it: {:?}",
        audit_b()
    );
    assert!(
        eventually(20, || jobs.status(&b, &jobs.alice, &id)["state"]
            == "expired"),
        "still kept past its retention: {}",
        jobs.status(&b, &jobs.alice, &id)
    );
    drop(b);
}

#[test]
fn in_redis_a_jobs_output_stops_at_its_cap_and_the_oldest_results_make_room_for_new() {
    let redis = Redis::start();
    let caps = ["--job-output-cap", "50000", "--job-store-cap", "120000"];
    let (jobs, a, _b) = pool(&redis, &caps);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = jobs.detach(&a, "digits");
        assert!(eventually(10, || jobs.status(&a, &jobs.alice, &id)
            ["state"]
            == "exited"));
        ids.push(id);
    }
    assert_eq!(jobs.status(&a, &jobs.alice, &ids[0])["state"], "expired");
    let seq: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    for id in &ids[1..] {
        let status = jobs.status(&a, &jobs.alice, id);
        assert_eq!(status["kept_bytes"], 50000, "{status}");
        assert!(
            status["output_bytes"].as_u64().unwrap() > 100_000,
            "{status}"
        );
        let out = jobs.cmdchan(&a, &jobs.alice, &["job", "output", id]);
        // The first 50000 bytes as the server read them: stdout and stderr each from
        // their start (the two pipes are read as they come).
        let (printed, errors) = (text(&out.stdout), text(&out.stderr));
        let err_seq: String = (1..=500).map(|i| format!("{i}\n")).collect();
        assert!(seq.starts_with(&printed) && err_seq.starts_with(&errors));
        assert_eq!(printed.len() + errors.len(), 50000, "kept up to the cap");
    }
}

#[test]
fn a_job_whose_redis_froze_while_it_ran_keeps_all_its_output_once_and_its_end() {
    let redis = Redis::start();
    let (jobs, a, _b) = pool(&redis, &[]);
    let id = jobs.detach(&a, "chatty");
    std::thread::sleep(Duration::from_millis(500));
    redis.freeze();
    // The job prints and ends while Redis cannot answer.
    std::thread::sleep(Duration::from_millis(3000));
    let meanwhile = jobs.cmdchan(&a, &jobs.alice, &["job", "status", &id]);
    redis.thaw();
    assert_ne!(meanwhile.status.code(), Some(0), "no state is made up");
    assert!(
        eventually(15, || jobs.status(&a, &jobs.alice, &id)["state"]
            == "exited"),
        "{}",
        jobs.status(&a, &jobs.alice, &id)
    );
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    let out = jobs.cmdchan(&a, &jobs.alice, &["job", "output", &id]);
    assert_eq!(text(&out.stdout), expected, "every line once, in order");
    let status = jobs.status(&a, &jobs.alice, &id);
    assert_eq!(status["stdout_sha256"], sha256(expected.as_bytes()));
    assert_eq!(status["kept_bytes"], expected.len());
}

#[test]
fn in_a_pool_on_redis_cluster_and_sentinel_a_job_started_on_one_is_followed_on_another() {
    let cluster = cmdchan_tests::RedisCluster::start();
    let sentinel = cmdchan_tests::RedisSentinel::start();
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    for url in [cluster.url(), sentinel.url()] {
        let (jobs, a, b) = pool_on(&url, &[]);
        let id = jobs.detach(&a, "chatty");
        let attached = jobs.cmdchan(&b, &jobs.alice, &["job", "attach", &id]);
        assert_eq!(
            text(&attached.stdout),
            expected,
            "{}",
            text(&attached.stderr)
        );
        let status = jobs.status(&b, &jobs.alice, &id);
        assert_eq!(status["state"], "exited", "{status}");
        assert_eq!(status["stdout_sha256"], sha256(expected.as_bytes()));
    }
}

#[test]
fn in_a_pool_a_quiet_job_is_waited_for_past_the_answer_timeout_and_outlives_a_redis_outage_longer_than_a_lease(
) {
    let redis = Redis::start();
    let (jobs, a, b) = pool(&redis, &[]);
    // One job on each process: whichever sweeps first after the outage could call the
    // other's lost.
    let id = jobs.detach(&a, "quiet");
    let on_b = jobs.detach(&b, "quiet");
    // Redis stops answering for longer than a lease (10 s): every process's lease
    // lapses, and none may call the others' jobs lost for it.
    std::thread::sleep(Duration::from_millis(300));
    redis.freeze();
    std::thread::sleep(Duration::from_secs(11));
    redis.thaw();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(jobs.status(&b, &jobs.alice, &id)["state"], "running");
    assert_eq!(jobs.status(&a, &jobs.alice, &on_b)["state"], "running");
    // Followed from the other process, a sign of life comes every second although the
    // pool is polled more often: a short answer timeout does not cut the wait.
    let waited = jobs.cmdchan(
        &b,
        &jobs.alice,
        &["--answer-timeout", "2s", "job", "wait", &id],
    );
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
    assert_eq!(jobs.status(&b, &jobs.alice, &id)["state"], "exited");
    drop(a);
}

#[test]
fn in_a_pool_a_process_frozen_past_its_lease_has_its_job_lost_and_cannot_take_it_back() {
    let redis = Redis::start();
    let (jobs, a, b) = pool(&redis, &[]);
    let id = jobs.detach(&a, "chatty");
    a.signal("STOP");
    assert!(
        eventually(20, || jobs.status(&b, &jobs.alice, &id)["state"] == "lost"),
        "{}",
        jobs.status(&b, &jobs.alice, &id)
    );
    a.signal("CONT");
    // Its program ended meanwhile: the end the process now offers comes after the
    // pool's verdict and changes nothing.
    assert!(a.wait_for_log("stays lost"), "{}", a.log());
    assert_eq!(jobs.status(&b, &jobs.alice, &id)["state"], "lost");
    assert_eq!(jobs.status(&a, &jobs.alice, &id)["state"], "lost");
}

#[test]
fn a_job_whose_store_filled_up_while_it_ran_keeps_all_its_output_once_and_its_end() {
    let env_dir = tempfile::tempdir().unwrap();
    let disk = cmdchan_tests::Tmpfs::mount(env_dir.path().join("disk"), "1m");
    let store = disk.dir.join("jobs");
    let (jobs, server) = Jobs::new(&["--job-store", store.to_str().unwrap()]);
    let id = jobs.detach(&server, "chatty");
    std::thread::sleep(Duration::from_millis(300));
    disk.fill();
    // The job prints and ends while its store cannot take a byte.
    std::thread::sleep(Duration::from_millis(2500));
    assert_ne!(jobs.status(&server, &jobs.alice, &id)["state"], "exited");
    disk.free();
    assert!(
        eventually(10, || jobs.status(&server, &jobs.alice, &id)["state"]
            == "exited"),
        "{}",
        jobs.status(&server, &jobs.alice, &id)
    );
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    let out = jobs.cmdchan(&server, &jobs.alice, &["job", "output", &id]);
    assert_eq!(text(&out.stdout), expected, "every line once, in order");
    let status = jobs.status(&server, &jobs.alice, &id);
    assert_eq!(status["stdout_sha256"], sha256(expected.as_bytes()));
    // Kept across a restart too: no half chunk was left in the file.
    drop(server);
    let server = jobs.start();
    let out = jobs.cmdchan(&server, &jobs.alice, &["job", "output", &id]);
    assert_eq!(text(&out.stdout), expected);
}
