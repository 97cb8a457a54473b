//! Daily use, as an operator used to ssh and clush finds it: one server by its name, a
//! short inventory (defaults, ranges, groups, zones) or one a command prints (Ansible's
//! JSON), a silent host given up on at the connect timeout, rollouts that stop where
//! they must and say why, and summaries that say which server ended how.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use cmdchan_tests::{bin, run, text, Server, TestEnv};

const POLICY: &str = r#"
[roles.ops]
commands = ["ping", "hello", "status", "fail", "check"]
[commands.hello]
program = "{dir}/hello.sh"
[commands.status]
program = "{dir}/status-{status}.sh"
[commands.fail]
program = "/bin/false"
[commands.check]
program = "/bin/true"
"#;

/// Servers a1…a4 (a3 exits 3 where the others exit 0 for `status`, and its `check`
/// fails) behind an inventory of [defaults], a range and groups.
struct Daily {
    env: TestEnv,
    _servers: Vec<Server>,
    inventory: PathBuf,
    cred: PathBuf,
    ports: Vec<u16>,
}

impl Daily {
    fn start() -> Daily {
        let env = TestEnv::new();
        let dir = env.dir.path().to_str().unwrap().to_owned();
        env.script("hello.sh", "echo \"hello from $(pwd)\"");
        env.script("status-0.sh", "exit 0");
        env.script("status-3.sh", "echo three; exit 3");
        let (mut servers, mut ports) = (Vec::new(), Vec::new());
        for name in ["a1", "a2", "a3", "a4"] {
            let status = if name == "a3" { "3" } else { "0" };
            let mut policy = POLICY.replace("{dir}", &dir).replace("{status}", status);
            if name == "a3" {
                policy = policy.replace("program = \"/bin/true\"", "program = \"/bin/false\"");
            }
            let path = env.write(&format!("policy-{name}.toml"), &policy);
            let server = env.fleet_member(name, &path, &[]);
            ports.push(server.addr.port());
            servers.push(server);
        }
        let mut inventory = String::from(
            "[defaults]\naddress = \"127.0.0.1\"\nlabels = { dc = \"fra\" }\n\n\
             [groups]\nfirst = [\"a[1-2]\"]\nall = [\"@first\", \"a[3-4]\"]\n\n\
             [servers.\"a[1-4]\"]\nlabels = { tier = \"app\" }\n",
        );
        for (name, port) in ["a1", "a2", "a3", "a4"].iter().zip(&ports) {
            inventory.push_str(&format!("[servers.{name}]\nport = {port}\n"));
        }
        let inventory = env.write("inventory.toml", &inventory);
        let cred = env.provision("ops", "ops", &[]);
        Daily {
            env,
            _servers: servers,
            inventory,
            cred,
            ports,
        }
    }

    fn cmdchan(&self, args: &[&str]) -> Output {
        run(Command::new(bin("cmdchan"))
            .arg("--cred")
            .arg(&self.cred)
            .arg("--inventory")
            .arg(&self.inventory)
            .args(args))
    }
}

/// The JSON Lines rows of a fan-out and its summary.
fn json_lines(out: &Output) -> (Vec<Value>, Value) {
    let mut rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = rows.pop().expect("a summary line");
    (rows, summary["summary"].clone())
}

#[test]
fn one_server_by_its_inventory_name_is_as_short_as_ssh() {
    let daily = Daily::start();
    let out = daily.cmdchan(&["--server", "a2", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from /\n",
        "plain output: no prefix, no summary"
    );
    assert_eq!(text(&out.stderr), "");
    let short = daily.cmdchan(&["-s", "a3", "status"]);
    assert_eq!(
        (short.status.code(), text(&short.stdout)),
        (Some(3), "three\n".into())
    );

    // A name the inventory lacks is a host on port 7433; an address that is none is a
    // usage error, not "unreachable".
    let unknown = daily.cmdchan(&["--server", "no-such-host.invalid", "hello"]);
    assert_eq!(unknown.status.code(), Some(69));
    assert!(
        text(&unknown.stderr).contains("no-such-host.invalid:7433"),
        "{}",
        text(&unknown.stderr)
    );
    let bad = daily.cmdchan(&["--server", "a b", "hello"]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("is not a server address"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_short_inventory_selects_by_group_zone_and_label_and_says_what_was_meant() {
    let daily = Daily::start();
    let hosts = daily.cmdchan(&["--on", "@all", "hosts"]);
    let listed = text(&hosts.stdout);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let inv = daily.inventory.display().to_string();
    assert!(
        listed.contains(&format!(
            "a1 127.0.0.1:{} dc=fra tier=app from={inv}",
            daily.ports[0]
        )),
        "{listed}"
    );
    let out = daily.cmdchan(&["--json", "--on", "@first", "--on", "tier=app", "hello"]);
    let (rows, _) = json_lines(&out);
    let names: Vec<&str> = rows.iter().filter_map(|r| r["server"].as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let typo = daily.cmdchan(&["--on", "a[01-02]", "hello"]);
    assert_eq!(typo.status.code(), Some(64));
    assert!(
        text(&typo.stderr).contains("did you mean a[1-2]?"),
        "{}",
        text(&typo.stderr)
    );
    let group = daily.cmdchan(&["--on", "@nope", "hello"]);
    assert!(
        text(&group.stderr).contains("no group @nope (the groups: @all, @first)"),
        "{}",
        text(&group.stderr)
    );
}

#[test]
fn an_inventory_command_in_ansibles_json_works_and_a_failing_one_runs_nothing() {
    let daily = Daily::start();
    let json = format!(
        r#"{{"app": {{"hosts": ["a1", "a2"], "vars": {{"cmdchan_address": "127.0.0.1"}}}},
            "_meta": {{"hostvars": {{"a1": {{"cmdchan_port": {}}}, "a2": {{"cmdchan_port": {}}}}}}}}}"#,
        daily.ports[0], daily.ports[1]
    );
    daily.env.write("inventory.json", &json);
    let script = daily.env.script(
        "inventory.sh",
        &format!(
            "[ \"$1\" = --list ] || exit 2\ncat {}",
            daily.env.path("inventory.json").display()
        ),
    );
    let source = format!("exec:{} --list", script.display());
    let run_with = |source: &str, args: &[&str]| {
        run(Command::new(bin("cmdchan"))
            .arg("--cred")
            .arg(&daily.cred)
            .args(["--inventory", source])
            .args(args))
    };
    let out = run_with(&source, &["--on", "@app", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let hosts = run_with(&source, &["hosts"]);
    assert!(
        text(&hosts.stdout).contains(&format!("from={source}")),
        "{}",
        text(&hosts.stdout)
    );

    let failing = format!("exec:{} --wrong", script.display());
    let out = run_with(&failing, &["--on", "*", "hello"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains(&format!("inventory {failing}: it failed")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "", "nothing ran");
}

#[test]
fn a_host_that_takes_the_connection_and_never_speaks_is_no_tls_reply_at_the_connect_timeout() {
    let daily = Daily::start();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
    let inventory = daily.env.write(
        "silent.toml",
        &format!(
            "[servers.quiet]\naddress = \"127.0.0.1:{port}\"\n[servers.a1]\naddress = \"127.0.0.1:{}\"\n",
            daily.ports[0]
        ),
    );
    let began = Instant::now();
    let out = run(Command::new(bin("cmdchan"))
        .arg("--cred")
        .arg(&daily.cred)
        .arg("--inventory")
        .arg(&inventory)
        .args([
            "--connect-timeout",
            "1s",
            "--retries",
            "0",
            "--on",
            "*",
            "hello",
        ]));
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "the silent host held the run"
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("quiet: cmdchan: no TLS reply from"),
        "{stderr}"
    );
    assert!(!stderr.contains("allow list"), "{stderr}");
    drop(held);
}

#[test]
fn a_canary_a_check_and_a_threshold_stop_the_rollout_and_say_why() {
    let daily = Daily::start();
    // Servers run in name order; a3 exits 3: as the canary it stops everything else.
    let out = daily.cmdchan(&["--json", "--canary", "1", "--on", "a3,a4", "status"]);
    let (_, summary) = json_lines(&out);
    assert_eq!(
        summary["not_started"],
        serde_json::json!(["a4"]),
        "{summary}"
    );
    assert_eq!(
        summary["stopped"]["why"],
        "stopped in the canary batch: 1 of its servers failed"
    );
    let text_out = daily.cmdchan(&["--canary", "1", "--on", "a3,a4", "status"]);
    let stderr = text(&text_out.stderr);
    assert!(
        stderr.contains("a4: cmdchan: not started: the run stopped in the canary batch"),
        "{stderr}"
    );
    let fine = daily.cmdchan(&["--json", "--canary", "1", "--on", "a1,a2", "status"]);
    assert_eq!(
        fine.status.code(),
        Some(0),
        "a canary that succeeds lets the rest run"
    );

    // The check passes on a1 and a2 (the first batch), so the second runs.
    let out = daily.cmdchan(&[
        "--json", "--batch", "2", "--check", "check", "--on", "@all", "hello",
    ]);
    let (rows, summary) = json_lines(&out);
    assert_eq!(rows.len(), 4);
    assert_eq!(
        summary["ok"],
        serde_json::json!(["a1", "a2", "a3", "a4"]),
        "{summary}"
    );
    // It fails on a3 after the batch a3 was in: the next batch does not start.
    let out = daily.cmdchan(&[
        "--json", "--batch", "1", "--check", "check", "--on", "@all", "hello",
    ]);
    let (_, summary) = json_lines(&out);
    assert_eq!(
        summary["stopped"]["check_failed"],
        serde_json::json!(["a3"]),
        "{summary}"
    );
    assert_eq!(
        summary["not_started"],
        serde_json::json!(["a4"]),
        "{summary}"
    );

    // A threshold in percent of the fleet: a3 alone is 25 %, over 20 %.
    let out = daily.cmdchan(&[
        "--json",
        "--parallel",
        "1",
        "--max-failures",
        "20%",
        "--on",
        "@all",
        "status",
    ]);
    let (_, summary) = json_lines(&out);
    assert_eq!(
        summary["not_started"],
        serde_json::json!(["a4"]),
        "{summary}"
    );

    // A pause between batches.
    let began = Instant::now();
    let out = daily.cmdchan(&[
        "--batch",
        "2",
        "--pause",
        "1500ms",
        "--on",
        "a[1-2],a4",
        "hello",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(began.elapsed() >= Duration::from_millis(1500), "no pause");
    let bad = daily.cmdchan(&["--pause", "1s", "--on", "@all", "hello"]);
    assert_eq!(bad.status.code(), Some(64), "a pause without batches");
}

#[test]
fn the_summary_splits_statuses_says_one_server_in_the_singular_and_doctor_takes_on() {
    let daily = Daily::start();
    let out = daily.cmdchan(&["--on", "@all", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ran, exit 3"), "{stderr}");
    assert!(stderr.contains("cmdchan: 4 servers\n"), "{stderr}");
    let one = daily.cmdchan(&["--on", "a1", "hello"]);
    assert_eq!(text(&one.stderr), "", "no summary for one server");
    let doctor = daily.cmdchan(&["--on", "a[1-2]", "doctor"]);
    assert_eq!(doctor.status.code(), Some(0), "{}", text(&doctor.stdout));
    let report = text(&doctor.stdout);
    assert!(report.contains("== a1 (127.0.0.1:"), "{report}");
    assert!(
        report.contains("ok    ping answered by server a2"),
        "{report}"
    );
}

/// A DNS server (dnsmasq, on a loopback port of its own) with SRV records for two
/// servers; stopped when dropped.
struct Dns {
    child: std::process::Child,
    port: u16,
}

impl Dns {
    fn serve(records: &[String]) -> Dns {
        let port = cmdchan_tests::free_port();
        let mut cmd = cmdchan_tests::system("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--user=root",
        ])
        .arg(format!("--port={port}"))
        .args(records)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Dns { child, port }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn servers_come_from_dns_srv_records_and_a_failing_lookup_names_its_source() {
    let env = TestEnv::new();
    let policy = env.write(
        "policy.toml",
        "[roles.ops]\ncommands = [\"ping\", \"whoami\"]\n",
    );
    let web1 = env.fleet_member("web1.test.example", &policy, &[]);
    let web2 = env.fleet_member("web2.test.example", &policy, &[]);
    let cred = env.provision("alice", "ops", &[]);
    let dns = Dns::serve(&[
        "--host-record=web1.test.example,127.0.0.1".into(),
        "--host-record=web2.test.example,127.0.0.1".into(),
        format!(
            "--srv-host=_cmdchan._tcp.test.example,web1.test.example,{},10,5",
            web1.addr.port()
        ),
        format!(
            "--srv-host=_cmdchan._tcp.test.example,web2.test.example,{},20,5",
            web2.addr.port()
        ),
    ]);
    let source = format!("srv:_cmdchan._tcp.test.example@127.0.0.1:{}", dns.port);
    let cmdchan = |source: &str, args: &[&str]| {
        run(Command::new(bin("cmdchan"))
            .arg("--cred")
            .arg(&cred)
            .args(["--inventory", source])
            .args(args))
    };
    let hosts = cmdchan(&source, &["hosts"]);
    assert_eq!(
        text(&hosts.stdout),
        format!(
            "web1.test.example 127.0.0.1:{} from={source}\nweb2.test.example 127.0.0.1:{} from={source}\n",
            web1.addr.port(),
            web2.addr.port()
        )
    );
    let pinged = cmdchan(&source, &["--on", "*", "whoami"]);
    assert_eq!(pinged.status.code(), Some(0), "{}", text(&pinged.stderr));
    assert!(text(&pinged.stdout).contains("server:  web2.test.example"));
    let one = cmdchan(&source, &["-s", "web1.test.example", "ping"]);
    assert_eq!(text(&one.stdout), "pong\n", "{}", text(&one.stderr));

    // A name without records, and a name server that does not answer: errors that name
    // the source, and no server is asked.
    let none = format!("srv:_none._tcp.test.example@127.0.0.1:{}", dns.port);
    let missing = cmdchan(&none, &["--on", "*", "ping"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        text(&missing.stderr).contains(&format!("inventory {none}:")),
        "{}",
        text(&missing.stderr)
    );
    drop(dns);
    let silent = cmdchan(&source, &["hosts"]);
    assert_eq!(silent.status.code(), Some(64));
    assert!(
        text(&silent.stderr).contains("no answer within 5s"),
        "{}",
        text(&silent.stderr)
    );
}

/// An SRV answer too large for UDP comes truncated; the client asks again over TCP and
/// gets every server, not the ones that fitted.
#[test]
fn an_srv_answer_too_large_for_udp_is_read_again_over_tcp() {
    let records: Vec<String> = (0..60)
        .map(|i| {
            format!(
                "--srv-host=_cmdchan._tcp.many.example,host{i:02}.many.example,{},10,5",
                7000 + i
            )
        })
        .collect();
    let dns = Dns::serve(&records);
    let source = format!("srv:_cmdchan._tcp.many.example@127.0.0.1:{}", dns.port);
    let hosts = run(Command::new(bin("cmdchan")).args(["--inventory", &source, "hosts"]));
    assert_eq!(hosts.status.code(), Some(0), "{}", text(&hosts.stderr));
    assert_eq!(
        text(&hosts.stdout).lines().count(),
        60,
        "{}",
        text(&hosts.stdout)
    );
    assert!(text(&hosts.stdout).contains("host59.many.example host59.many.example:7059"));
}
