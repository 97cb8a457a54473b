//! At most once: a command ID never runs twice, across a kill -9 of the server and across
//! a client's retry after a cut connection. Side effects are counted in a file.

use cmdchan::{Client, Credential, ErrorCode, Options, Reply};
use cmdchan_tests::{cutting_proxy, eventually, TestEnv, SERVER_ID};

const POLICY: &str = r#"
[roles.ops]
commands = ["count", "count-slow"]
[commands.count]
program = "{dir}/count.sh"
[commands.count-slow]
program = "{dir}/count-slow.sh"
"#;

/// Scripts that add a line to `runs` each time they run.
fn setup(env: &TestEnv) -> std::path::PathBuf {
    let runs = env.path("runs");
    env.script("count.sh", &format!("echo run >> {}", runs.display()));
    env.script(
        "count-slow.sh",
        &format!(
            "echo $$ > {}.pid\necho run >> {}\nsleep 1000",
            runs.display(),
            runs.display()
        ),
    );
    let policy = POLICY.replace("{dir}", env.dir.path().to_str().unwrap());
    env.write("policy.toml", &policy)
}

fn runs(env: &TestEnv) -> usize {
    cmdchan_tests::lines_in(env, "runs")
}

use cmdchan_tests::refusal as code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_admitted_before_a_kill_9_is_still_refused_after_the_restart() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let cred = env.provision("alice", "ops", &[]);
    let args = ["--policy", policy.to_str().unwrap()];

    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let finished = client.request("count", &[]).unwrap();
    let first = client.run(&finished, |_| {}).await.unwrap();
    let mut slow_client = server.client(&cred).await;
    let slow = slow_client.request("count-slow", &[]).unwrap();
    let slow_req = slow.clone();
    tokio::spawn(async move { slow_client.run(&slow_req, |_| {}).await });
    assert!(eventually(10, || runs(&env) == 2));
    server.kill();

    let server = env.start(&args);
    let mut client = server.client(&cred).await;
    let mut again = finished.clone();
    again.counter = 1;
    assert_eq!(
        client.run(&again, |_| {}).await.unwrap(),
        first,
        "the original answer"
    );
    let mut slow_again = slow.clone();
    slow_again.counter = 2;
    // It was running when the server died: it is not run again, and the retry is told
    // its run was interrupted.
    assert_eq!(
        code(&client.run(&slow_again, |_| {}).await),
        Some(ErrorCode::Duplicate)
    );
    assert_eq!(runs(&env), 2, "nothing ran a second time");
    assert!(server.log_lines("admitted").is_empty());
    // The orphaned slow program outlived its server; end its process group.
    let pid = std::fs::read_to_string(env.path("runs.pid")).unwrap();
    let group = format!("-{}", pid.trim());
    cmdchan_tests::run(std::process::Command::new("kill").args(["-9", "--", &group]));
}

#[tokio::test]
async fn a_client_whose_connection_is_cut_retries_and_gets_the_original_answer() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let proxy = cutting_proxy(server.addr).await;
    let opts = Options {
        target: Some(SERVER_ID.parse().unwrap()),
        ..Options::default()
    };
    let mut client = Client::connect(
        Credential::load(&cred).unwrap(),
        Some(&proxy.to_string()),
        opts,
    )
    .await
    .unwrap();
    let mut request = client.request("count", &[]).unwrap();
    let id = request.id;
    let reply = client.run_with_retry(&mut request, |_| {}).await.unwrap();
    assert!(
        matches!(reply, Reply::Exit(ref e) if e.code == Some(0)),
        "{reply:?}"
    );
    assert_eq!(request.id, id, "the retry used the same command ID");
    assert_eq!(runs(&env), 1, "the command ran once");
    assert_eq!(
        server.wait_for_lines("retried", 1).len(),
        1,
        "the answer came from the store"
    );
    assert_eq!(server.log_lines("admitted").len(), 1);
}

#[test]
fn the_cli_retries_through_a_cut_connection_too() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let cred = env.provision("alice", "ops", &[]);
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(cutting_proxy(server.addr));
    let mut cmd = std::process::Command::new(cmdchan_tests::bin("cmdchan"));
    cmd.args([
        "--cred",
        cred.to_str().unwrap(),
        "--server",
        &proxy.to_string(),
        "--server-id",
        SERVER_ID,
        "count",
    ]);
    let out = cmdchan_tests::run(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(runs(&env), 1);
}
