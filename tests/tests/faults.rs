//! At most once and an honest audit trail on an operator's bad day: a full disk, a
//! frozen Redis, clocks apart, programs whose children leave their process group, and a
//! drain that runs out. Each test injects the fault and asserts that nothing ran twice
//! and nothing acknowledged was lost. Side effects are counted in a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cmdchan::{ErrorCode, Reply, Request};
use cmdchan_tests::{eventually, process_gone, text, Heard, Redis, Server, TestEnv, Tmpfs};
use tokio::task::JoinHandle;

fn count_policy(env: &TestEnv) -> PathBuf {
    let runs = env.path("runs");
    env.script("count.sh", &format!("echo run >> {}", runs.display()));
    let dir = env.dir.path().display();
    let policy = format!(
        "[roles.ops]\ncommands = [\"ping\", \"count\"]\n[commands.count]\nprogram = \"{dir}/count.sh\"\n"
    );
    env.write("policy.toml", &policy)
}

fn runs(env: &TestEnv) -> usize {
    cmdchan_tests::lines_in(env, "runs")
}

use cmdchan_tests::refusal as code;

/// One request on a connection of its own, given `within` to answer: `None` if it is
/// still waiting then (the task is returned to be awaited later).
async fn try_run(
    server: &Server,
    cred: &Path,
    within: Duration,
) -> (
    Request,
    Result<Result<Reply, cmdchan::Error>, JoinHandle<Result<Reply, cmdchan::Error>>>,
) {
    let mut client = server.client(cred).await;
    let mut req = client.request("count", &[]).unwrap();
    let sent = req.clone();
    let mut task =
        tokio::spawn(async move { client.deliver(&mut req, &mut Heard::default()).await });
    match tokio::time::timeout(within, &mut task).await {
        Ok(done) => (sent, Ok(done.unwrap())),
        Err(_) => (sent, Err(task)),
    }
}

/// The fault: the replay log's disk fills while programs run. Claims are refused once
/// there is no room (nothing runs); a claim that found room but whose outcome finds none
/// is answered only once the disk has room again and its outcome is kept. After a kill
/// -9, every answer given is heard again, and nothing ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_replay_log_never_runs_a_command_twice_nor_denies_an_answer() {
    let env = TestEnv::new();
    let disk = Tmpfs::mount(env.path("disk"), "256k");
    let policy = count_policy(&env);
    let store = format!("file:{}", disk.dir.join("replay").display());
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &store,
    ];
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&args);
    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        let (req, answer) = try_run(&server, &cred, Duration::from_secs(10)).await;
        assert!(matches!(answer, Ok(Ok(Reply::Exit(_)))), "{answer:?}");
        acknowledged.push(req);
    }
    disk.fill();
    // The segment's last page still has room: claims go on until it is used up, then
    // every claim is refused, and none of those runs.
    let (mut refused, mut held) = (0, Vec::new());
    for _ in 0..200 {
        match try_run(&server, &cred, Duration::from_secs(2)).await {
            (req, Ok(Ok(Reply::Exit(_)))) => acknowledged.push(req),
            (_, Ok(failed)) => {
                assert_eq!(
                    code(&failed),
                    Some(ErrorCode::StoreUnavailable),
                    "{failed:?}"
                );
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            (req, Err(waiting)) => held.push((req, waiting)),
        }
    }
    assert_eq!(
        refused, 20,
        "the full disk refused nothing: it was not full"
    );
    let started = runs(&env);
    assert_eq!(
        started,
        acknowledged.len() + held.len(),
        "a refused command ran"
    );
    disk.free();
    for (req, waiting) in held {
        let answer = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(
            matches!(answer, Ok(Ok(Ok(Reply::Exit(_))))),
            "a held answer comes once the disk has room: {answer:?}"
        );
        acknowledged.push(req);
    }
    for _ in 0..20 {
        let (req, answer) = try_run(&server, &cred, Duration::from_secs(10)).await;
        assert!(
            matches!(answer, Ok(Ok(Reply::Exit(_)))),
            "the store resumes: {answer:?}"
        );
        acknowledged.push(req);
    }
    server.kill();
    let server = env.start(&args);
    let before = runs(&env);
    for req in &acknowledged {
        let again = server.resend(&cred, req).await;
        assert!(
            matches!(again, Ok(Reply::Exit(_))),
            "an answer given is never denied: {again:?}"
        );
    }
    assert_eq!(
        runs(&env),
        before,
        "an acknowledged command ran a second time"
    );
}

/// A program that fills the replay log's disk as it runs: its claim was written, its
/// outcome (which keeps its 9,000 bytes of output, more than any page's slack) cannot
/// be. Nothing but a disk with room may release its answer.
fn filling_policy(env: &TestEnv, disk: &Tmpfs) -> PathBuf {
    env.script(
        "fill.sh",
        &format!(
            "echo ran >> {}\nhead -c 1000000 /dev/zero > {}/filler 2>/dev/null\nhead -c 9000 /dev/zero | tr '\\0' x",
            env.path("runs").display(),
            disk.dir.display()
        ),
    );
    let dir = env.dir.path().display();
    env.write(
        "policy.toml",
        &format!(
            "[roles.ops]\ncommands = [\"count\"]\n[commands.count]\nprogram = \"{dir}/fill.sh\"\n"
        ),
    )
}

/// The case: a program's outcome finds a full disk (EIO or ENOSPC under the replay log).
/// Its answer is held, with a sign of life each second saying so (`Recording`), and sent
/// only once the outcome is kept; after a kill -9 its retry hears that same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_waits_until_a_full_disk_takes_its_outcome_and_is_never_denied() {
    let env = TestEnv::new();
    let disk = Tmpfs::mount(env.path("disk"), "512k");
    let policy = filling_policy(&env, &disk);
    let store = format!("file:{}", disk.dir.join("replay").display());
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &store,
    ];
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let mut req = client.request("count", &[]).unwrap();
    let sent = req.clone();
    let heard = Heard::default();
    let mut sink = heard.clone();
    let mut task = tokio::spawn(async move { client.deliver(&mut req, &mut sink).await });
    let early = tokio::time::timeout(Duration::from_secs(4), &mut task).await;
    assert!(
        early.is_err(),
        "answered while its outcome could not be kept: {early:?}"
    );
    assert!(heard.count(cmdchan::Alive::Recording) >= 2, "{:?}", heard.0);
    assert!(server.wait_for_log("its answer waits until the replay store takes it"));
    disk.free();
    let answer = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(answer, Ok(Reply::Exit(ref e)) if e.code == Some(0)),
        "{answer:?}"
    );
    server.kill();
    let server = env.start(&args);
    let again = server.resend(&cred, &sent).await;
    assert_eq!(again.ok(), answer.ok(), "the retry hears the answer given");
    assert_eq!(runs(&env), 1);
}

/// The case: the server is stopped (SIGTERM) while an answer waits for a full disk. The
/// answer is never given, so nothing is denied later: after the restart its retry hears
/// that the server stopped before the outcome was kept, and it does not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_held_when_the_server_stops_is_never_given_and_its_retry_says_so() {
    let env = TestEnv::new();
    let disk = Tmpfs::mount(env.path("disk"), "512k");
    let policy = filling_policy(&env, &disk);
    let store = format!("file:{}", disk.dir.join("replay").display());
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &store,
    ];
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let req = client.request("count", &[]).unwrap();
    let sent = req.clone();
    let task = tokio::spawn(async move { client.run(&req, |_| {}).await });
    assert!(server.wait_for_log("its answer waits until the replay store takes it"));
    assert!(server.terminate().success());
    let answer = task.await.unwrap();
    assert!(answer.is_err(), "no answer was given: {answer:?}");
    disk.free();
    let server = env.start(&args);
    let again = server.resend(&cred, &sent).await;
    assert_eq!(code(&again), Some(ErrorCode::Duplicate), "{again:?}");
    let Err(cmdchan::Error::Refused(f)) = again else {
        unreachable!()
    };
    assert!(
        f.message.contains("stopped before its outcome was kept"),
        "{}",
        f.message
    );
    assert_eq!(runs(&env), 1);
}

/// The case: with `--redis-replicas 1`, the replica stops acknowledging between the claim
/// and the outcome (a failover would lose the outcome). The answer waits for the replica
/// as the claim did; once it has the outcome, the answer goes out, and a kill -9 loses
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_waits_for_the_redis_replicas_as_its_claim_did() {
    let env = TestEnv::new();
    env.script(
        "slow.sh",
        &format!(
            "echo ran >> {}\nsleep 1\necho done",
            env.path("runs").display()
        ),
    );
    let dir = env.dir.path().display();
    let policy = env.write(
        "policy.toml",
        &format!(
            "[roles.ops]\ncommands = [\"slow\"]\n[commands.slow]\nprogram = \"{dir}/slow.sh\"\n"
        ),
    );
    let redis = cmdchan_tests::RedisSentinel::start();
    let url = redis.url();
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &url,
        "--redis-replicas",
        "1",
    ];
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let mut req = client.request("slow", &[]).unwrap();
    let sent = req.clone();
    let heard = Heard::default();
    let mut sink = heard.clone();
    let mut task = tokio::spawn(async move { client.deliver(&mut req, &mut sink).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.freeze_replica();
    let early = tokio::time::timeout(Duration::from_secs(4), &mut task).await;
    assert!(
        early.is_err(),
        "answered before a replica held the outcome: {early:?}"
    );
    assert!(heard.count(cmdchan::Alive::Recording) >= 1, "{:?}", heard.0);
    redis.thaw_replica();
    let answer = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(answer, Ok(Reply::Exit(ref e)) if e.code == Some(0)),
        "{answer:?}"
    );
    server.kill();
    let server = env.start(&args);
    assert_eq!(server.resend(&cred, &sent).await.ok(), answer.ok());
    assert_eq!(runs(&env), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_audit_file_leaves_a_recorded_gap_not_an_edit() {
    let env = TestEnv::new();
    let disk = Tmpfs::mount(env.path("disk"), "256k");
    let policy = count_policy(&env);
    let log = disk.dir.join("audit.log");
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    let mut client = server.client(&cred).await;
    for _ in 0..5 {
        assert_eq!(client.call("ping", &[]).await.unwrap(), Reply::Pong);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    disk.fill();
    // The file's last page still has room: programs run until it is used up; then the
    // started record cannot be written and nothing runs.
    let mut ran = 0;
    for _ in 0..100 {
        client.call("ping", &[]).await.unwrap();
        let req = client.request("count", &[]).unwrap();
        match client.run(&req, |_| {}).await {
            Ok(_) => ran += 1,
            refused => {
                assert_eq!(code(&refused), Some(ErrorCode::Internal), "{refused:?}");
                break;
            }
        }
    }
    assert_eq!(runs(&env), ran, "a program ran without its started record");
    tokio::time::sleep(Duration::from_millis(100)).await;
    disk.free();
    for _ in 0..5 {
        client.call("ping", &[]).await.unwrap();
    }
    let verified = || {
        let out = env.admin(&[
            "audit-verify",
            log.to_str().unwrap(),
            "--zone-key",
            env.zone_key.to_str().unwrap(),
        ]);
        (out.status.code(), text(&out.stdout))
    };
    assert!(
        eventually(10, || verified().1.contains("gap at line")),
        "{}",
        verified().1
    );
    let (status, report) = verified();
    assert_eq!(status, Some(0), "a full disk looks like an edit: {report}");
    assert!(report.contains("No space left on device"), "{report}");
}

/// The case: the audit disk is full, so nothing runs (a program's `started` record
/// cannot be written), and the server stops before the disk has room: kill -9, then, a
/// second time, SIGTERM. The count of records lost waits beside the file (its room taken
/// at start), and the next start writes the gap: audit-verify lists both gaps, never an
/// intact file with records missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_on_a_full_audit_disk_survives_a_stop_and_is_written_at_the_next_start() {
    let env = TestEnv::new();
    let disk = Tmpfs::mount(env.path("disk"), "256k");
    let policy = count_policy(&env);
    let log = disk.dir.join("audit.log");
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ];
    let cred = env.provision("alice", "ops", &[]);
    for round in 0..2 {
        let server = env.start(&args);
        let mut client = server.client(&cred).await;
        client.call("ping", &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        disk.fill();
        // Programs run while the last page has room; then each is refused, unrecorded.
        let mut refused = 0;
        for _ in 0..200 {
            let req = client.request("count", &[]).unwrap();
            if client.run(&req, |_| {}).await.is_err() {
                refused += 1;
                if refused == 10 {
                    break;
                }
            }
        }
        assert_eq!(refused, 10, "the disk was not full");
        match round {
            0 => server.kill(),
            _ => assert!(server.terminate().success()),
        }
        disk.free();
    }
    let server = env.start(&args);
    let verified = || {
        let out = env.admin(&[
            "audit-verify",
            log.to_str().unwrap(),
            "--zone-key",
            env.zone_key.to_str().unwrap(),
        ]);
        (out.status.code(), text(&out.stdout))
    };
    assert!(
        eventually(10, || verified().1.matches("gap at line").count() == 2),
        "{}",
        verified().1
    );
    let (status, report) = verified();
    assert_eq!(status, Some(0), "{report}");
    for gap in report.lines().filter(|l| l.starts_with("gap at line")) {
        let lost: u64 = gap
            .split("could not write ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(lost >= 10, "each stop kept at least the 10 refusals: {gap}");
    }
    drop(server);
}

const ESCAPE: &str = r#"
[roles.ops]
commands = ["escape"]
[commands.escape]
program = "{dir}/escape.sh"
timeout = "1s"
"#;

/// A program whose child leaves its process group and session (`setsid -f`), keeping
/// the output pipe, as a daemon would.
fn escape_setup(env: &TestEnv, extra: &[&str]) -> (Server, PathBuf) {
    let pid = env.path("escaped.pid");
    env.script(
        "escape.sh",
        &format!(
            "setsid -f sh -c 'echo $$ > {}; exec sleep 8.5'\nsleep 30",
            pid.display()
        ),
    );
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &ESCAPE.replace("{dir}", dir));
    let cred = env.provision("alice", "ops", &[]);
    let mut args = vec!["--policy", policy.to_str().unwrap()];
    args.extend(extra);
    (env.start(&args), cred)
}

fn escaped_pid(env: &TestEnv) -> u32 {
    let path = env.path("escaped.pid");
    assert!(eventually(5, || std::fs::read_to_string(&path)
        .is_ok_and(|s| s.ends_with('\n'))));
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn a_child_that_leaves_its_group_is_stopped_at_the_timeout(tracking: &str) {
    let env = TestEnv::new();
    let (server, cred) = escape_setup(&env, &["--process-tracking", tracking]);
    let mut client = server.client(&cred).await;
    let started = Instant::now();
    let reply = client.call("escape", &[]).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the escaped child held the answer for {:?}",
        started.elapsed()
    );
    assert!(
        matches!(reply, Reply::Exit(ref e) if e.timed_out),
        "{reply:?}"
    );
    let pid = escaped_pid(&env);
    assert!(
        eventually(3, || process_gone(pid)),
        "the escaped child {pid} survived"
    );
}

#[tokio::test]
async fn a_child_that_leaves_its_process_group_is_stopped_with_cgroups() {
    a_child_that_leaves_its_group_is_stopped_at_the_timeout("cgroup").await;
}

#[tokio::test]
async fn a_child_that_leaves_its_process_group_is_stopped_as_a_subreaper() {
    a_child_that_leaves_its_group_is_stopped_at_the_timeout("subreaper").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_drain_runs_out_every_process_a_program_started_is_stopped() {
    for tracking in ["cgroup", "subreaper"] {
        let env = TestEnv::new();
        let (server, cred) = escape_setup(
            &env,
            &["--process-tracking", tracking, "--drain-timeout", "1s"],
        );
        let policy = env.path("policy.toml");
        std::fs::write(
            &policy,
            std::fs::read_to_string(&policy)
                .unwrap()
                .replace("\"1s\"", "\"60s\""),
        )
        .unwrap();
        server.signal("HUP");
        assert!(server.wait_for_log("SIGHUP: policy and settings reloaded"));
        let mut client = server.client(&cred).await;
        let running = tokio::spawn(async move { client.call("escape", &[]).await });
        let pid_file = env.path("escaped.pid");
        if !eventually(5, || pid_file.exists()) {
            panic!(
                "{tracking}: never started: {:?}\n{}",
                running.await,
                server.log()
            );
        }
        let pid = escaped_pid(&env);
        let stopped = Instant::now();
        assert_eq!(server.terminate().code(), Some(0));
        assert!(stopped.elapsed() < Duration::from_secs(10));
        assert!(
            eventually(3, || process_gone(pid)),
            "{tracking}: the escaped child {pid} outlived the server"
        );
        let _ = running.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_timed_out_on_a_frozen_redis_is_taken_back_and_its_retry_runs_once() {
    let env = TestEnv::new();
    let redis = Redis::start();
    let policy = count_policy(&env);
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &redis.url(),
    ]);
    let mut client = server.client(&cred).await;
    assert_eq!(client.call("ping", &[]).await.unwrap(), Reply::Pong);
    let req = client.request("count", &[]).unwrap();
    redis.freeze();
    let refused = client.run(&req, |_| {}).await;
    assert_eq!(
        code(&refused),
        Some(ErrorCode::StoreUnavailable),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.thaw();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = server.resend(&cred, &req).await;
    assert!(
        matches!(again, Ok(Reply::Exit(_))),
        "the ID was stranded: {again:?}"
    );
    let third = server.resend(&cred, &req).await;
    assert!(matches!(third, Ok(Reply::Exit(_))), "{third:?}");
    assert_eq!(runs(&env), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_with_clocks_5s_apart_never_run_a_command_twice() {
    let env = TestEnv::new();
    let redis = Redis::start();
    let policy = count_policy(&env);
    let cred = env.provision("alice", "ops", &[]);
    let url = redis.url();
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &url,
        "--freshness-window",
        "3s",
    ];
    let ahead = env.start(&args);
    // libfaketime preloaded into the server itself (not the faketime wrapper, which
    // would be the process the harness kills).
    let mut lagging = env.serve_command(&[], &args);
    lagging
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", "-5s")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let lagging = Server::spawn(lagging);

    let mut client = ahead.client(&cred).await;
    let req = client.request("count", &[]).unwrap();
    client.run(&req, |_| {}).await.unwrap();
    // Past the window on the correct clock, inside it on the lagging one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = lagging.resend(&cred, &req).await;
    assert!(matches!(again, Ok(Reply::Exit(_))), "{again:?}");
    assert_eq!(runs(&env), 1, "the lagging server ran the command again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_survives_a_kill_9_right_after_its_answer() {
    let env = TestEnv::new();
    let policy = count_policy(&env);
    let args = ["--policy", policy.to_str().unwrap()];
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let req = client.request("count", &[]).unwrap();
    let first = client.run(&req, |_| {}).await.unwrap();
    server.kill();
    let server = env.start(&args);
    let again = server.resend(&cred, &req).await;
    assert_eq!(
        again.unwrap(),
        first,
        "the retry heard the first answer, not 'in progress'"
    );
    assert_eq!(runs(&env), 1);
}

/// Rounds of load with kill -9 at a random moment: every request sent is sent again
/// after the restart. Each program run appends its request's own mark, so a mark seen
/// twice is a command that ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_under_load_runs_nothing_twice_and_loses_no_answer() {
    let env = TestEnv::new();
    let marks = env.path("marks");
    env.script("mark.sh", &format!("echo \"$1\" >> {}", marks.display()));
    let dir = env.dir.path().display();
    let policy = env.write(
        "policy.toml",
        &format!("[roles.ops]\ncommands = [\"mark\"]\n[commands.mark]\nprogram = \"{dir}/mark.sh\"\nargs = [\"{{m}}\"]\n[[commands.mark.params]]\nname = \"m\"\ntype = \"string\"\nrequired = true\n"),
    );
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--rate",
        "100000",
        "--burst",
        "100000",
    ];
    let cred = env.provision("alice", "ops", &[]);
    let mut sent: Vec<(Request, Option<Reply>)> = Vec::new();
    for round in 0..5u64 {
        let server = env.start(&args);
        let addr = server.addr;
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let mut client = server.client(&cred).await;
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0..1000u64 {
                    let mark = format!("r{round}w{worker}n{n}");
                    let req = client.request("mark", &[mark]).unwrap();
                    let reply = client.run(&req, |_| {}).await.ok();
                    let lost = reply.is_none();
                    mine.push((req, reply));
                    if lost {
                        break;
                    }
                }
                mine
            }));
        }
        // A moment in the first 300 ms, different each round.
        let pause = 50 + (u64::from(std::process::id()) * 7919 + round * 104_729) % 250;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill();
        for task in tasks {
            sent.extend(task.await.unwrap());
        }
        let _ = addr;
    }
    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let mut counter = 0;
    for (req, first) in &sent {
        counter += 1;
        let mut again = req.clone();
        again.counter = counter;
        let reply = client.run(&again, |_| {}).await;
        match first {
            // Acknowledged: the store answers, nothing runs.
            Some(first) => assert_eq!(reply.as_ref().ok(), Some(first), "{reply:?}"),
            // Its fate was unknown: it runs now, or it was interrupted by the kill
            // and is not run again.
            None => assert!(
                reply.is_ok() || code(&reply) == Some(ErrorCode::Duplicate),
                "{:?}: {reply:?}\n{}",
                req.args,
                server.log()
            ),
        }
    }
    let text = std::fs::read_to_string(&marks).unwrap();
    let mut seen = std::collections::HashSet::new();
    for mark in text.lines() {
        assert!(seen.insert(mark), "{mark} ran twice");
    }
    let acknowledged = sent.iter().filter(|(_, r)| r.is_some()).count();
    assert!(
        acknowledged > 20,
        "too little load to prove anything: {acknowledged}"
    );
    assert!(seen.len() >= acknowledged);
}

/// Where Debian's faketime package keeps libfaketime; fails loudly without it.
fn libfaketime() -> String {
    cmdchan_tests::system("faketime");
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    found
        .expect("libfaketime.so.1 is missing: install faketime (scripts/test does)")
        .to_owned()
}
