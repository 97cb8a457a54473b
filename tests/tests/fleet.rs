//! A fleet sharing one real Redis: a command ID runs once across servers, and when Redis
//! is down requests fail closed, then succeed again when it is back.

use cmdchan::{ErrorCode, Reply};
use cmdchan_tests::{eventually, text, Redis, Server, TestEnv};

fn setup(env: &TestEnv) -> String {
    let runs = env.path("runs");
    env.script("count.sh", &format!("echo run >> {}", runs.display()));
    let dir = env.dir.path().to_str().unwrap();
    let policy = format!("[roles.ops]\ncommands = [\"ping\", \"count\"]\n[commands.count]\nprogram = \"{dir}/count.sh\"\n");
    env.write("policy.toml", &policy)
        .to_str()
        .unwrap()
        .to_owned()
}

fn start(env: &TestEnv, policy: &str, redis: &Redis) -> Server {
    let url = redis.url();
    env.start(&["--policy", policy, "--replay-store", &url])
}

fn runs(env: &TestEnv) -> usize {
    cmdchan_tests::lines_in(env, "runs")
}

use cmdchan_tests::refusal as refused_with;

#[tokio::test]
async fn a_command_id_run_on_one_server_is_not_run_again_by_another() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let redis = Redis::start();
    let a = start(&env, &policy, &redis);
    let b = start(&env, &policy, &redis);
    let cred = env.provision("alice", "ops", &[]);
    let mut on_a = a.client(&cred).await;
    let request = on_a.request("count", &[]).unwrap();
    let first = on_a.run(&request, |_| {}).await.unwrap();
    assert_eq!(runs(&env), 1);

    // The same client sends it to server B (a retry): B answers from Redis.
    let mut on_b = b.client(&cred).await;
    assert_eq!(on_b.run(&request, |_| {}).await.unwrap(), first);
    // Another client with the same ID at B: a replay.
    let bob = env.provision("bob", "ops", &[]);
    let mut thief = b.client(&bob).await;
    let mut stolen = thief.request("count", &[]).unwrap();
    stolen.id = request.id;
    assert_eq!(
        refused_with(&thief.run(&stolen, |_| {}).await),
        Some(ErrorCode::Replay)
    );
    assert_eq!(
        runs(&env),
        1,
        "the command ran exactly once across the fleet"
    );
    assert!(b.wait_for_lines("refused", 1).len() == 1 && b.log_lines("admitted").is_empty());
}

#[test]
fn with_redis_down_requests_fail_closed_and_resume_when_it_is_back() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let mut redis = Redis::start();
    let server = start(&env, &policy, &redis);
    let cred = env.provision("alice", "ops", &[]);
    assert_eq!(
        env.cmdchan(&server, &cred, &["ping"]).status.code(),
        Some(0)
    );

    redis.stop();
    let out = env.cmdchan(&server, &cred, &["count"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused (store unavailable)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(runs(&env), 0, "nothing ran unchecked");
    assert!(server.wait_for_log("store unavailable"));
    assert!(server
        .log_lines("store unavailable")
        .iter()
        .any(|l| l.contains("WARN")));

    redis.restart();
    let back = eventually(15, || {
        env.cmdchan(&server, &cred, &["count"]).status.code() == Some(0)
    });
    assert!(
        back,
        "service did not resume after Redis came back:\n{}",
        server.log()
    );
    assert_eq!(runs(&env), 1);
}

#[tokio::test]
async fn a_tls_redis_with_a_password_works_and_the_password_stays_out_of_the_log() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let redis = Redis::start_tls(env.dir.path(), "s3cret-redis-pass");
    let server = start(&env, &policy, &redis);
    let cred = env.provision("alice", "ops", &[]);
    let mut client = server.client(&cred).await;
    let request = client.request("count", &[]).unwrap();
    client.run(&request, |_| {}).await.unwrap();
    let mut again = server.client(&cred).await;
    let retry = again.run(&request, |_| {}).await.unwrap();
    assert!(matches!(retry, Reply::Exit(ref e) if e.code == Some(0)));
    assert_eq!(runs(&env), 1, "the ID was remembered in the TLS Redis");
    assert!(!server.log().contains("s3cret-redis-pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_claims_each_id_once_across_the_servers_of_one_id() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let cluster = cmdchan_tests::RedisCluster::start();
    let url = cluster.url();
    let args = [
        "--policy",
        policy.as_str(),
        "--replay-store",
        &url,
        "--redis-replicas",
        "0",
    ];
    let (a, b) = (env.start(&args), env.start(&args));
    let cred = env.provision("alice", "ops", &[]);
    let mut client = a.client(&cred).await;
    let mut sent = Vec::new();
    // Enough IDs to land on every node's slots.
    for _ in 0..30 {
        let req = client.request("count", &[]).unwrap();
        client.run(&req, |_| {}).await.unwrap();
        sent.push(req);
    }
    for req in &sent {
        let again = b.resend(&cred, req).await;
        assert!(matches!(again, Ok(Reply::Exit(_))), "{again:?}");
    }
    assert_eq!(runs(&env), 30, "the other server ran a claimed ID again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_acknowledged_claims_hold_and_service_resumes() {
    let env = TestEnv::new();
    let policy = setup(&env);
    let sentinel = cmdchan_tests::RedisSentinel::start();
    let url = sentinel.url();
    let args = [
        "--policy",
        policy.as_str(),
        "--replay-store",
        &url,
        "--redis-replicas",
        "1",
    ];
    let server = env.start(&args);
    let cred = env.provision("alice", "ops", &[]);
    let mut client = server.client(&cred).await;
    let mut sent = Vec::new();
    for _ in 0..10 {
        let req = client.request("count", &[]).unwrap();
        client.run(&req, |_| {}).await.unwrap();
        sent.push(req);
    }
    sentinel.failover();
    // The server finds the new primary by itself; a request in between may be refused.
    let fresh = client.request("count", &[]).unwrap();
    let mut answered = None;
    for _ in 0..50 {
        match server.resend(&cred, &fresh).await {
            Err(cmdchan::Error::Refused(f)) if f.code == ErrorCode::StoreUnavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => {
                answered = Some(other);
                break;
            }
        }
    }
    assert!(matches!(answered, Some(Ok(Reply::Exit(_)))), "{answered:?}");
    for req in &sent {
        let again = server.resend(&cred, req).await;
        assert!(matches!(again, Ok(Reply::Exit(_))), "{again:?}");
    }
    assert_eq!(
        runs(&env),
        11,
        "a claim acknowledged before the failover was lost"
    );
}
