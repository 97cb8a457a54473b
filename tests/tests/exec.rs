//! Policy programs: real processes with validated parameters, their output and status,
//! injection attempts, role restrictions, timeouts, disconnects, limits and `busy`.

use std::path::Path;
use std::time::Duration;

use cmdchan::{ErrorCode, Param, Reply};
use cmdchan_tests::{eventually, process_gone, text, Server, TestEnv};
use serde_json::Value;

/// A server whose policy is `policy` (with `{dir}` replaced by the scratch directory),
/// and a credential for `alice` with `role`.
fn setup(env: &TestEnv, policy: &str, role: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &policy.replace("{dir}", dir));
    let cred = env.provision("alice", role, &[]);
    let mut args = vec!["--policy", policy.to_str().unwrap()];
    args.extend(extra);
    (env.start(&args), cred)
}

const SHOW: &str = r#"
[roles.ops]
commands = ["show", "describe"]

[commands.show]
description = "print the arguments, one per line"
program = "{dir}/show.sh"
args = ["{name}", "{count}", "{loud}"]
[[commands.show.params]]
name = "name"
type = "string"
required = true
allow_dash = true
max_len = 64
[[commands.show.params]]
name = "count"
type = "integer"
min = 0
max = 9
default = 1
[[commands.show.params]]
name = "loud"
type = "flag"
arg = "--loud"
"#;

fn show_script(env: &TestEnv) {
    env.script(
        "show.sh",
        "for a in \"$@\"; do printf '%s\\n' \"$a\"; done\necho to-stderr >&2\nexit 3",
    );
}

#[test]
fn a_program_runs_and_its_output_and_status_come_back() {
    let env = TestEnv::new();
    show_script(&env);
    let (server, cred) = setup(&env, SHOW, "ops", &[]);
    let out = env.cmdchan(
        &server,
        &cred,
        &["--arg", "count=007", "--arg", "loud=true", "show", "alice"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "alice\n7\n--loud\n");
    assert_eq!(text(&out.stderr), "to-stderr\n");

    let json = env.cmdchan(&server, &cred, &["--json", "show", "bob"]);
    assert_eq!(json.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v["reply"]["stdout"], "bob\n1\n",
        "the default applies, the false flag adds nothing"
    );
    assert_eq!(v["reply"]["stderr"], "to-stderr\n");
    assert_eq!(v["reply"]["exit"]["code"], 3);
    assert_eq!(v["reply"]["exit"]["truncated"], false);
}

#[test]
fn values_with_spaces_quotes_unicode_and_dashes_arrive_exactly() {
    let env = TestEnv::new();
    show_script(&env);
    let (server, cred) = setup(&env, SHOW, "ops", &[]);
    let value = "--weird 'single' \"double\" ü ✓ $HOME *";
    let out = env.cmdchan(&server, &cred, &["show", value]);
    assert_eq!(
        text(&out.stdout),
        format!("{value}\n1\n"),
        "{}",
        text(&out.stderr)
    );
}

const ECHO1: &str = r#"
[roles.ops]
commands = ["one"]
[commands.one]
program = "{dir}/one.sh"
args = ["{value}"]
[[commands.one.params]]
name = "value"
type = "string"
required = true
max_len = 40
[commands.num]
program = "{dir}/one.sh"
args = ["{n}"]
[[commands.num.params]]
name = "n"
type = "integer"
required = true
[roles.ops2]
commands = ["num"]
"#;

#[tokio::test]
async fn injection_attempts_are_refused_or_stay_inert() {
    let env = TestEnv::new();
    env.script("one.sh", "printf '%s' \"$1\"");
    let (server, cred) = setup(&env, ECHO1, "ops", &[]);
    let marker = env.path("pwned");
    let m = marker.to_str().unwrap();
    // Inert: each is one argument; no shell ever sees it.
    for value in [
        format!("; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("| touch {m}"),
    ] {
        let value = &value[..value.len().min(40)];
        let out = env.cmdchan(&server, &cred, &["one", value]);
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), value.to_owned()),
            "{value}"
        );
    }
    // Refused before anything runs.
    for value in ["line\nbreak", "--option=value", "-x", &"y".repeat(41)] {
        let out = env.cmdchan(&server, &cred, &["one", value]);
        assert_eq!(
            out.status.code(),
            Some(80),
            "{value:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("bad arguments"),
            "{}",
            text(&out.stderr)
        );
    }
    let extra = env.cmdchan(&server, &cred, &["one", "a", "b"]);
    assert_eq!(
        extra.status.code(),
        Some(80),
        "a value cannot add arguments"
    );
    let smuggled = env.cmdchan(
        &server,
        &cred,
        &["--arg", "value=a", "--arg", "value=b", "one"],
    );
    assert_eq!(
        smuggled.status.code(),
        Some(80),
        "a parameter cannot be given twice"
    );
    // NUL cannot come through argv, so send it with the library.
    let mut client = server.client(&cred).await;
    let mut req = client.request("one", &[]).unwrap();
    req.params = vec![Param {
        name: "value".into(),
        value: "a\0b".into(),
    }];
    let err = client.run(&req, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert!(!marker.exists(), "an injected command ran");

    let cred2 = env.provision("bob", "ops2", &[]);
    for n in ["5; touch x", "5 6", "0x10", "1e3", "--5"] {
        let out = env.cmdchan(&server, &cred2, &["num", n]);
        assert_eq!(out.status.code(), Some(80), "{n:?} is not an integer");
    }
}

const RESTART: &str = r#"
[roles.web]
commands = ["restart", "describe"]
[roles.web.restrict.restart]
service = ["nginx", "php-fpm"]
[roles.viewer]
commands = ["describe"]

[commands.restart]
description = "restart a service"
program = "{dir}/restart.sh"
args = ["{service}"]
[[commands.restart.params]]
name = "service"
type = "string"
regex = "[a-z-]+"
required = true
"#;

#[test]
fn roles_are_held_to_their_commands_and_values() {
    let env = TestEnv::new();
    env.script("restart.sh", "echo restarted \"$1\"");
    let (server, cred) = setup(&env, RESTART, "web", &[]);
    let ok = env.cmdchan(&server, &cred, &["restart", "nginx"]);
    assert_eq!(
        (ok.status.code(), text(&ok.stdout)),
        (Some(0), "restarted nginx\n".into())
    );
    let other = env.cmdchan(&server, &cred, &["restart", "apache"]);
    assert_eq!(other.status.code(), Some(80));
    assert!(
        text(&other.stderr).contains("refused (forbidden)"),
        "{}",
        text(&other.stderr)
    );

    let described = env.cmdchan(&server, &cred, &["describe", "restart"]);
    assert!(
        text(&described.stdout).contains("this role may use only: nginx, php-fpm"),
        "{}",
        text(&described.stdout)
    );

    let viewer = env.provision("carol", "viewer", &[]);
    let out = env.cmdchan(&server, &viewer, &["restart", "nginx"]);
    assert_eq!(out.status.code(), Some(80));
    assert!(text(&out.stderr).contains("role viewer may not run restart"));
    let hidden = env.cmdchan(&server, &viewer, &["describe", "restart"]);
    assert!(
        text(&hidden.stderr).contains("unknown command"),
        "describe hides what the role cannot run"
    );
}

const SLOW: &str = r#"
[roles.ops]
commands = ["stubborn", "quiet", "detached", "flood", "gate"]

[commands.stubborn]
program = "{dir}/stubborn.sh"
timeout = "1s"

[commands.quiet]
program = "{dir}/quiet.sh"

[commands.detached]
program = "{dir}/detached.sh"
detach = true

[commands.flood]
program = "/usr/bin/yes"
output_limit = 1000
timeout = "4s"

[commands.gate]
program = "{dir}/gate.sh"
max_concurrent = 1
"#;

fn slow_scripts(env: &TestEnv) {
    let d = env.dir.path().to_str().unwrap();
    env.script(
        "stubborn.sh",
        &format!(
            "trap '' TERM\n(trap '' TERM; sleep 1000) &\necho $! > {d}/grandchild\nsleep 1000"
        ),
    );
    env.script("quiet.sh", &format!("echo $$ > {d}/quiet.pid\nsleep 1000"));
    env.script("detached.sh", &format!("sleep 1\ntouch {d}/detached.done"));
    env.script("gate.sh", &format!("touch {d}/gate.started\nwhile [ ! -e {d}/gate.open ]; do sleep 0.05; done\necho through"));
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn a_timeout_kills_a_child_that_ignores_sigterm_and_its_grandchildren() {
    let env = TestEnv::new();
    slow_scripts(&env);
    let (server, cred) = setup(&env, SLOW, "ops", &[]);
    let out = env.cmdchan(&server, &cred, &["--json", "stubborn"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reply"]["exit"]["timed_out"], true);
    assert_eq!(
        v["reply"]["exit"]["signal"], 9,
        "SIGTERM was ignored, so SIGKILL ended it"
    );
    let grandchild = read_pid(&env.path("grandchild")).unwrap();
    assert!(
        eventually(10, || process_gone(grandchild)),
        "grandchild {grandchild} survived"
    );
}

// `eventually` blocks its thread, so the client task needs another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_gets_its_command_killed_unless_it_is_detached() {
    let env = TestEnv::new();
    slow_scripts(&env);
    let (server, cred) = setup(&env, SLOW, "ops", &[]);
    let pidfile = env.path("quiet.pid");
    let mut client = server.client(&cred).await;
    let req = client.request("quiet", &[]).unwrap();
    let running = tokio::spawn(async move { client.exchange(&req).await });
    assert!(eventually(10, || read_pid(&pidfile).is_some()));
    running.abort();
    let _ = running.await;
    let pid = read_pid(&pidfile).unwrap();
    assert!(
        eventually(10, || process_gone(pid)),
        "the command outlived its client"
    );

    let mut client = server.client(&cred).await;
    let req = client.request("detached", &[]).unwrap();
    let running = tokio::spawn(async move { client.exchange(&req).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.abort();
    let _ = running.await;
    let done = env.path("detached.done");
    assert!(
        eventually(10, || done.exists()),
        "a detached command finishes without its client"
    );
}

#[test]
fn output_over_the_limit_is_cut_and_flagged() {
    let env = TestEnv::new();
    slow_scripts(&env);
    let (server, cred) = setup(&env, SLOW, "ops", &[]);
    let out = env.cmdchan(&server, &cred, &["--json", "flood"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reply"]["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(v["reply"]["exit"]["truncated"], true);
    assert!(v["reply"]["exit"]["output_bytes"].as_u64().unwrap() > 1000);
}

#[tokio::test]
async fn a_client_that_does_not_read_cannot_make_the_server_buffer() {
    let env = TestEnv::new();
    let policy = SLOW.replace("output_limit = 1000\n", "output_limit = 100000000000\n");
    slow_scripts(&env);
    let (server, cred) = setup(&env, &policy, "ops", &[]);
    let before = server.rss_kib();
    // Send the request by hand and never read: `yes` writes as fast as it can.
    let mut client = server.client(&cred).await;
    let req = client.request("flood", &[]).unwrap();
    let mut raw = server.raw(&cred).await;
    let mut frame = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut cmdchan_common::frame::MsgCodec::<Reply, _>::new(1 << 20),
        &cmdchan::ClientMsg::Request(req),
        &mut frame,
    )
    .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, &frame)
        .await
        .unwrap();
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.rss_kib());
    }
    assert!(
        peak < before + 16 * 1024,
        "server RSS grew from {before} KiB to {peak} KiB"
    );
    assert!(server.wait_for_log("client not reading output; stopping the command"));
    drop(raw);
}

// `eventually` blocks its thread, so the client task needs another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_the_answer_is_busy() {
    let env = TestEnv::new();
    slow_scripts(&env);
    let (server, cred) = setup(&env, SLOW, "ops", &[]);
    let mut first = server.client(&cred).await;
    let req = first.request("gate", &[]).unwrap();
    let running = tokio::spawn(async move { first.run(&req, |_| {}).await });
    let started = env.path("gate.started");
    assert!(eventually(10, || started.exists()));
    let out = env.cmdchan(&server, &cred, &["gate"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refused (busy)"));
    std::fs::write(env.path("gate.open"), "").unwrap();
    let reply = running.await.unwrap().unwrap();
    assert!(
        matches!(reply, Reply::Exit(ref e) if e.code == Some(0)),
        "{reply:?}"
    );
    assert_eq!(
        env.cmdchan(&server, &cred, &["gate"]).status.code(),
        Some(0),
        "free again"
    );
}

#[test]
fn programs_get_only_the_environment_the_policy_lists() {
    let env = TestEnv::new();
    env.script("env.sh", "/usr/bin/env");
    let policy = "[roles.ops]\ncommands = [\"env\"]\n[commands.env]\nprogram = \"{dir}/env.sh\"\ncwd = \"/tmp\"\nenv = { GREETING = \"hi\" }\n";
    let (server, cred) = setup(&env, policy, "ops", &[]);
    let out = env.cmdchan(&server, &cred, &["env"]);
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.retain(|l| !l.starts_with("PWD="));
    assert_eq!(lines, ["GREETING=hi"], "{}", text(&out.stderr));
}

#[test]
fn programs_run_as_the_policy_user_with_no_supplementary_groups() {
    let env = TestEnv::new();
    env.script("id.sh", "/usr/bin/id -u; /usr/bin/id -G");
    let policy = "[roles.ops]\ncommands = [\"id\"]\n[commands.id]\nprogram = \"{dir}/id.sh\"\nuser = \"nobody\"\ngroup = \"nogroup\"\n";
    // The scratch directory must be reachable by nobody to run the script.
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let root =
        text(&cmdchan_tests::run(std::process::Command::new("id").arg("-u")).stdout).trim() == "0";
    if !root {
        // Without root, the server must refuse such a policy rather than ignore `user`.
        let dir = env.dir.path().to_str().unwrap();
        let path = env.write("policy.toml", &policy.replace("{dir}", dir));
        let mut cmd = std::process::Command::new(cmdchan_tests::bin("cmdchan-server"));
        cmd.args([
            "serve",
            "--zone-key",
            env.zone_key.to_str().unwrap(),
            "--server-id",
            "x",
            "--listen",
            "127.0.0.1:0",
        ]);
        let out = cmdchan_tests::run(cmd.arg("--policy").arg(path));
        assert!(
            text(&out.stderr).contains("need the server to run as root"),
            "{}",
            text(&out.stderr)
        );
        return;
    }
    let (server, cred) = setup(&env, policy, "ops", &[]);
    let out = env.cmdchan(&server, &cred, &["id"]);
    assert_eq!(text(&out.stdout), "65534\n65534\n", "{}", text(&out.stderr));
}

#[tokio::test]
async fn refused_programs_do_not_run() {
    let env = TestEnv::new();
    env.script(
        "restart.sh",
        &format!("touch {}/ran", env.dir.path().display()),
    );
    let (server, cred) = setup(&env, RESTART, "web", &[]);
    let mut client = server.client(&cred).await;
    let mut req = client.request("restart", &["nginx".into()]).unwrap();
    req.issued_at -= 3600;
    let err = client.run(&req, |_| {}).await.unwrap_err();
    assert!(
        matches!(err, cmdchan::Error::Refused(ref f) if f.code == ErrorCode::Stale),
        "{err}"
    );
    assert!(!env.path("ran").exists());
}

/// The program prints, then waits for a file that the test creates only after it has
/// received that first output: if output were held back until the end, this would hang
/// until the command's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_while_the_program_runs() {
    let env = TestEnv::new();
    let gate = env.path("gate.open");
    let body = format!(
        "echo first\nwhile [ ! -e {} ]; do sleep 0.05; done\necho second",
        gate.display()
    );
    env.script("two.sh", &body);
    let policy = "[roles.ops]\ncommands = [\"two\"]\n[commands.two]\nprogram = \"{dir}/two.sh\"\ntimeout = \"20s\"\n";
    let (server, cred) = setup(&env, policy, "ops", &[]);
    let mut client = server.client(&cred).await;
    let req = client.request("two", &[]).unwrap();
    let mut seen = Vec::new();
    let reply = client
        .run(&req, |out| {
            seen.push(String::from_utf8_lossy(&out.data).into_owned());
            std::fs::write(&gate, "").unwrap();
        })
        .await
        .unwrap();
    assert_eq!(seen.concat(), "first\nsecond\n");
    assert!(
        matches!(reply, Reply::Exit(ref e) if !e.timed_out && e.code == Some(0)),
        "{reply:?}"
    );
}

/// With cgroup tracking a program is in its run's cgroup from its first instruction (it
/// joins between fork and exec, with no helper exec'd first), whatever user it runs as.
#[test]
fn a_program_starts_inside_its_runs_cgroup() {
    let env = TestEnv::new();
    let policy = "[roles.ops]\ncommands = [\"where\"]\n[commands.where]\nprogram = \"/bin/cat\"\nargs = [\"/proc/self/cgroup\"]\n";
    let (server, cred) = setup(&env, policy, "ops", &["--process-tracking", "cgroup"]);
    let out = env.cmdchan(&server, &cred, &["where"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let own = format!("/cmdchan-{}/run-", server.pid());
    let unified = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("0::"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(unified.contains(&own), "{unified:?} is not under {own:?}");
}
