//! One command on many servers (`cmdchan --on`), against a fleet of 22 real server
//! processes: healthy ones, ones whose policy refuses, slow ones, and stopped ones.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cmdchan_tests::{bin, run, text, Server, TestEnv};
use serde_json::Value;

/// `hello` prints 50 numbered lines; where it is slow it sleeps first; where the
/// policy refuses, the role may not run it.
const POLICY: &str = r#"
[roles.ops]
commands = ["ping", "hello", "fail"]
[commands.hello]
program = "{dir}/hello.sh"
[commands.fail]
program = "/bin/false"
"#;
const REFUSING: &str = r#"
[roles.ops]
commands = ["ping"]
[commands.hello]
program = "{dir}/hello.sh"
"#;

struct Fleet {
    env: TestEnv,
    _servers: Vec<Server>,
    inventory: PathBuf,
    cred: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Healthy,
    Refusing,
    Slow,
    Stopped,
}

impl Fleet {
    /// web01–web14 and db1–db2 healthy, bad1–bad2 refusing, slow1–slow2 sleeping 30 s
    /// before they answer, down1–down2 started and then stopped.
    fn start() -> Fleet {
        let env = TestEnv::new();
        let dir = env.dir.path().to_str().unwrap().to_owned();
        env.script(
            "hello.sh",
            "for i in $(seq 1 50); do echo \"line $i\"; done\necho \"to stderr\" >&2",
        );
        env.script("slow.sh", "sleep 30\necho late");
        let healthy = env.write("policy.toml", &POLICY.replace("{dir}", &dir));
        let refusing = env.write("refusing.toml", &REFUSING.replace("{dir}", &dir));
        let slow = env.write(
            "slow.toml",
            &POLICY.replace("{dir}/hello.sh", &format!("{dir}/slow.sh")),
        );
        let mut fleet = Vec::new();
        for n in 1..=14 {
            fleet.push((format!("web{n:02}"), Kind::Healthy, "web"));
        }
        for (prefix, kind, tier) in [
            ("db", Kind::Healthy, "db"),
            ("bad", Kind::Refusing, "web"),
            ("slow", Kind::Slow, "web"),
            ("down", Kind::Stopped, "web"),
        ] {
            for n in 1..=2 {
                fleet.push((format!("{prefix}{n}"), kind, tier));
            }
        }
        let mut servers = Vec::new();
        let mut inventory = String::new();
        for (i, (name, kind, tier)) in fleet.iter().enumerate() {
            let policy = match kind {
                Kind::Refusing => &refusing,
                Kind::Slow => &slow,
                _ => &healthy,
            };
            let server = env.fleet_member(name, policy, &[]);
            let dc = if i % 2 == 0 { "fra" } else { "ams" };
            inventory.push_str(&format!(
                "[servers.{name}]\naddress = \"{}\"\nzone = \"{}\"\nlabels = {{ tier = \"{tier}\", dc = \"{dc}\" }}\n",
                server.addr,
                cmdchan_tests::ZONE
            ));
            if *kind == Kind::Stopped {
                server.kill();
            } else {
                servers.push(server);
            }
        }
        let inventory = env.write("inventory.toml", &inventory);
        let cred = env.provision("ops", "ops", &[]);
        Fleet {
            env,
            _servers: servers,
            inventory,
            cred,
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

    /// The names `cmdchan hosts --on SELECTOR…` lists.
    fn hosts(&self, on: &[&str]) -> BTreeSet<String> {
        let mut args = Vec::new();
        for s in on {
            args.extend(["--on", s]);
        }
        args.push("hosts");
        let out = self.cmdchan(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    }
}

/// JSON Lines: one object per server, keyed by name, and the summary.
fn json_lines(out: &Output) -> (Vec<Value>, Value) {
    let mut rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = rows.pop().expect("a summary line");
    (rows, summary["summary"].clone())
}

fn names(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r["server"].as_str().unwrap().to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn selectors_run_on_exactly_the_servers_hosts_lists() {
    let fleet = Fleet::start();
    assert_eq!(fleet.hosts(&["db1"]), set(&["db1"]));
    assert_eq!(fleet.hosts(&["db*"]), set(&["db1", "db2"]));
    assert_eq!(
        fleet.hosts(&["web[01-03,07]"]),
        set(&["web01", "web02", "web03", "web07"])
    );
    assert_eq!(fleet.hosts(&["tier=db"]), set(&["db1", "db2"]));
    assert_eq!(
        fleet.hosts(&["web1*,db2"]),
        set(&["web10", "web11", "web12", "web13", "web14", "db2"])
    );
    assert_eq!(
        fleet.hosts(&[]).len(),
        22,
        "no selector lists the whole inventory"
    );
    for on in [
        vec!["web[01-06]", "dc=fra"],
        vec!["tier=web", "web0*", "dc=ams"],
        vec!["db*,web[10-12]"],
    ] {
        let listed = fleet.hosts(&on);
        assert!(!listed.is_empty());
        let mut args = vec!["--json"];
        for s in &on {
            args.extend(["--on", s]);
        }
        args.push("ping");
        let out = fleet.cmdchan(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let (rows, summary) = json_lines(&out);
        assert_eq!(names(&rows), listed, "{on:?}");
        assert_eq!(rows.len(), listed.len(), "one row per server");
        assert!(rows.iter().all(|r| r["ok"] == true && r["reply"] == "pong"));
        assert_eq!(summary["servers"], listed.len());
        assert_eq!(summary["exit"], 0);
    }
    let out = fleet.cmdchan(&["--on", "web0l", "ping"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("no server named \"web0l\""));
}

#[test]
fn every_server_gets_a_row_and_the_exit_status_says_what_happened_where() {
    let fleet = Fleet::start();

    // All of it at once: every class shows, and each sets its bit.
    let started = Instant::now();
    let out = fleet.cmdchan(&[
        "--json",
        "--timeout",
        "3s",
        "--retries",
        "0",
        "--on",
        "*",
        "hello",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a slow server held the run"
    );
    let (rows, summary) = json_lines(&out);
    assert_eq!(rows.len(), 22, "one row per server");
    assert_eq!(out.status.code(), Some(2 | 4 | 8), "{summary}");
    let row = |name: &str| rows.iter().find(|r| r["server"] == name).unwrap().clone();
    let web01 = row("web01");
    assert_eq!(web01["ok"], true);
    assert_eq!(web01["exit"], 0);
    assert!(web01["stdout"]
        .as_str()
        .unwrap()
        .starts_with("line 1\nline 2\n"));
    assert_eq!(web01["stderr"], "to stderr\n");
    assert_eq!(row("bad1")["error"]["code"], "forbidden");
    assert_eq!(row("down1")["error"]["code"], "cannot connect");
    assert_eq!(row("slow1")["error"]["code"], "timeout");
    assert_eq!(row("slow1")["ok"], false);
    assert_eq!(
        summary["refused"]["forbidden"],
        serde_json::json!(["bad1", "bad2"])
    );
    assert_eq!(
        summary["unreachable"]["cannot connect"],
        serde_json::json!(["down1", "down2"])
    );
    assert_eq!(summary["timed_out"], serde_json::json!(["slow1", "slow2"]));
    assert_eq!(summary["ok"].as_array().unwrap().len(), 16);

    // Stopped servers set bit 4 and only bit 4, also after the client's retries.
    let out = fleet.cmdchan(&["--on", "down*,web0[1-3]", "hello"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let summary = text(&out.stderr);
    assert!(
        summary.contains("unreachable (cannot connect)"),
        "{summary}"
    );
    assert!(summary.contains("down[1-2]"), "{summary}");

    // A program that exits non-zero sets bit 1.
    let out = fleet.cmdchan(&["--on", "db*", "fail"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // The deadline: one at a time, the first slow server runs into it and the second
    // never starts.
    let started = Instant::now();
    let out = fleet.cmdchan(&[
        "--json",
        "--parallel",
        "1",
        "--deadline",
        "2s",
        "--on",
        "slow*",
        "hello",
    ]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(8));
    let (rows, summary) = json_lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(summary["timed_out"], serde_json::json!(["slow1"]));
    assert_eq!(summary["not_started"], serde_json::json!(["slow2"]));
    assert_eq!(rows[1]["error"]["code"], "not started");
    assert_eq!(rows[1]["error"]["number"], 112);
}

#[test]
fn output_streams_in_whole_prefixed_lines_gathers_into_ranges_and_batches_stop() {
    let fleet = Fleet::start();

    let out = fleet.cmdchan(&["--on", "web*", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut counts = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        let (name, rest) = line.split_once(": ").expect("a prefixed line");
        assert!(
            rest.starts_with("line "),
            "a line was broken or mixed: {line:?}"
        );
        *counts.entry(name.to_owned()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 14);
    assert!(counts.values().all(|&n| n == 50), "{counts:?}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches(": to stderr\n").count(),
        14,
        "stderr kept apart: {stderr}"
    );
    assert!(
        stderr.contains("cmdchan: 14 servers"),
        "the summary: {stderr}"
    );

    let out = fleet.cmdchan(&[
        "--gather",
        "--retries",
        "0",
        "--on",
        "web*,down*,bad1",
        "hello",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("==== web[01-14] (14): exit 0\nline 1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("==== down[1-2] (2): unreachable (cannot connect)\n"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("line 50\n").count(),
        1,
        "identical output printed once"
    );
    assert_eq!(out.status.code(), Some(2 | 4));

    // Batches of 2 in name order: bad1 and bad2 both fail, more than --max-failures 1,
    // so no later batch starts.
    let out = fleet.cmdchan(&[
        "--json",
        "--batch",
        "2",
        "--max-failures",
        "1",
        "--on",
        "bad*,web0[1-4]",
        "hello",
    ]);
    let (_, summary) = json_lines(&out);
    assert_eq!(
        summary["refused"]["forbidden"],
        serde_json::json!(["bad1", "bad2"])
    );
    assert_eq!(
        summary["not_started"],
        serde_json::json!(["web01", "web02", "web03", "web04"])
    );
    assert_eq!(out.status.code(), Some(2 | 8));

    // --out-dir: a file per server and stream.
    let dir = fleet.env.path("out");
    std::fs::create_dir(&dir).unwrap();
    let out = fleet.cmdchan(&["--out-dir", dir.to_str().unwrap(), "--on", "db*", "hello"]);
    assert_eq!(out.status.code(), Some(0));
    let read = |name: &str| std::fs::read_to_string(Path::new(&dir).join(name)).unwrap();
    assert!(read("db1.stdout").starts_with("line 1\n"));
    assert_eq!(read("db2.stderr"), "to stderr\n");
}

/// Two servers whose `sha` hashes its stdin, and an inventory of them.
fn stdin_pair(env: &TestEnv) -> (Vec<Server>, PathBuf) {
    let policy = env.write(
        "sha.toml",
        "[roles.ops]\ncommands = [\"sha\", \"ping\"]\n[commands.sha]\nprogram = \"/usr/bin/sha256sum\"\nstdin = true\nstdin_limit = 100000000\n",
    );
    env.fleet(&["a1", "a2"], &policy)
}

/// `cmdchan ARGS` with `stdin` written to its stdin (left open if `close` is false).
fn with_stdin(
    env: &TestEnv,
    inventory: &Path,
    args: &[&str],
    stdin: Vec<u8>,
    close: bool,
) -> Output {
    use std::io::Write;
    let cred = env.provision("ops", "ops", &[]);
    let mut child = Command::new(bin("cmdchan"))
        .arg("--cred")
        .arg(&cred)
        .arg("--inventory")
        .arg(inventory)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
        if !close {
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    let out = child.wait_with_output().unwrap();
    drop(writer);
    out
}

/// The case: `echo hello | cmdchan --on a1,a2 sha` hashed empty input on every server.
/// The fan-out reads its stdin once, when a program says it takes stdin, and every
/// server gets the same bytes.
#[test]
fn a_fan_out_gives_every_server_the_same_stdin() {
    let env = TestEnv::new();
    let (_servers, inventory) = stdin_pair(&env);
    let out = with_stdin(
        &env,
        &inventory,
        &["--on", "a1,a2", "sha"],
        b"hello\n".to_vec(),
        true,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hash = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  -";
    let stdout = text(&out.stdout);
    for name in ["a1", "a2"] {
        assert!(stdout.contains(&format!("{name}: {hash}")), "{stdout}");
    }
}

/// A command that takes no stdin never reads it: a `while read` loop around a fan-out
/// keeps its input (here the stdin stays open and the client ends all the same).
#[test]
fn a_fan_out_of_a_command_without_stdin_never_reads_it() {
    let env = TestEnv::new();
    let (_servers, inventory) = stdin_pair(&env);
    let started = Instant::now();
    let out = with_stdin(
        &env,
        &inventory,
        &["--on", "a1,a2", "ping"],
        b"next host\n".to_vec(),
        false,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it waited for stdin to end"
    );
}

/// Stdin larger than a fan-out holds (64 MiB): no server gets a part of it as if it
/// were all; the programs are stopped and the client says why, exit 66.
#[test]
fn a_fan_out_stdin_too_large_to_hold_is_given_to_no_server() {
    let env = TestEnv::new();
    let (_servers, inventory) = stdin_pair(&env);
    let big = vec![b'x'; (64 << 20) + 1];
    let out = with_stdin(&env, &inventory, &["--on", "a1,a2", "sha"], big, true);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("larger than 64 MiB"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("  -"),
        "a server hashed part of it: {}",
        text(&out.stdout)
    );
}
