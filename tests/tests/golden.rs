//! What the operator sees, byte for byte: stdout, stderr and the exit status of the real
//! `cmdchan` for one server (text, JSON, Nagios) and a fan-out (stream, gather, JSON
//! Lines), against files in `tests/tests/golden/`. A change to what a user sees is a
//! change to those files, made on purpose: `CMDCHAN_GOLDEN=write` writes them anew.
//!
//! What differs from run to run is made fixed first: addresses and ports, durations,
//! and the order in which servers finish (lines of a fan-out's stream and JSON Lines are
//! sorted, the summary stays last).

use std::path::{Path, PathBuf};
use std::process::Command;

use cmdchan_tests::{bin, run, text, Server, TestEnv};

const POLICY: &str = r#"
[roles.ops]
commands = ["ping", "whoami", "echo", "commands", "describe", "hello", "check"]
[commands.hello]
description = "says hello on both streams"
program = "{dir}/hello.sh"
[commands.check]
program = "{dir}/check.sh"
args = ["{status}"]
[[commands.check.params]]
name = "status"
type = "integer"
min = 0
max = 9
required = true
description = "the status to exit with"
[commands.forbidden]
program = "/bin/true"
"#;

struct Setup {
    env: TestEnv,
    servers: Vec<Server>,
    cred: PathBuf,
    inventory: PathBuf,
}

fn setup() -> Setup {
    let env = TestEnv::new();
    env.script(
        "hello.sh",
        "echo \"hello\"\necho \"to stderr\" >&2\necho \"bye\"\nexit 3",
    );
    env.script("check.sh", "echo \"CHECK OK - status $1\"\nexit \"$1\"");
    let dir = env.dir.path().to_str().unwrap().to_owned();
    let policy = env.write("policy.toml", &POLICY.replace("{dir}", &dir));
    let mut servers = Vec::new();
    let mut inventory = String::new();
    for name in ["web1", "web2", "web3", "down1"] {
        let server = env.fleet_member(name, &policy, &[]);
        inventory.push_str(&format!(
            "[servers.{name}]\naddress = \"{}\"\nlabels = {{ tier = \"web\" }}\n",
            server.addr
        ));
        match name {
            "down1" => server.kill(),
            _ => servers.push(server),
        }
    }
    let inventory = env.write("inventory.toml", &inventory);
    let cred = env.provision("alice", "ops", &[]);
    Setup {
        env,
        servers,
        cred,
        inventory,
    }
}

impl Setup {
    /// `cmdchan` against web1 alone.
    fn one(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(bin("cmdchan"));
        cmd.arg("--cred").arg(&self.cred).args([
            "--server",
            &self.servers[0].addr.to_string(),
            "--server-id",
            "web1",
        ]);
        self.shown(cmd.args(args), false)
    }

    /// `cmdchan` on the inventory.
    fn many(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(bin("cmdchan"));
        cmd.arg("--cred")
            .arg(&self.cred)
            .arg("--inventory")
            .arg(&self.inventory);
        self.shown(cmd.args(args), true)
    }

    fn shown(&self, cmd: &mut Command, sort: bool) -> String {
        let out = run(cmd);
        let (stdout, stderr) = (
            self.fixed(&text(&out.stdout)),
            self.fixed(&text(&out.stderr)),
        );
        let (stdout, stderr) = match sort {
            true => (sorted(&stdout), sorted(&stderr)),
            false => (stdout, stderr),
        };
        format!(
            "exit {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
            out.status.code()
        )
    }

    /// Addresses, ports and durations made fixed.
    fn fixed(&self, shown: &str) -> String {
        let mut shown = shown.to_owned();
        for (i, server) in self.servers.iter().enumerate() {
            shown = shown.replace(&server.addr.to_string(), &format!("ADDR{}", i + 1));
        }
        let dir = self.env.dir.path().to_str().unwrap();
        shown = shown.replace(dir, "DIR");
        let mut out = String::with_capacity(shown.len());
        let mut rest = shown.as_str();
        // "duration_ms":123 and "127.0.0.1:PORT" of the stopped server.
        while let Some(at) = rest.find("\"duration_ms\":") {
            let (head, tail) = rest.split_at(at + 14);
            out.push_str(head);
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            out.push('0');
            rest = &tail[digits..];
        }
        out.push_str(rest);
        fix_ports(&out)
    }
}

/// `127.0.0.1:NNNNN` (the stopped server's address) as `127.0.0.1:PORT`.
fn fix_ports(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(at + 10);
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        out.push_str("PORT");
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Lines sorted, a fan-out's summary (from `cmdchan: N servers`, or the JSON summary)
/// kept last in its order.
fn sorted(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let summary = lines
        .iter()
        .position(|l| {
            l.starts_with("cmdchan: ") && l.ends_with(" servers") || l.starts_with("{\"summary\"")
        })
        .unwrap_or(lines.len());
    let mut body = lines[..summary].to_vec();
    body.sort_unstable();
    body.iter()
        .chain(&lines[summary..])
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Compares `shown` with the golden file `name` (or writes it, with CMDCHAN_GOLDEN=write).
fn golden(name: &str, shown: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("CMDCHAN_GOLDEN").as_deref() == Ok("write") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, shown).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (write it with CMDCHAN_GOLDEN=write)",
            path.display()
        )
    });
    assert_eq!(shown, want, "{name} changed");
}

#[test]
fn one_server_in_text_json_and_nagios_shows_what_it_showed() {
    let s = setup();
    let cases: &[(&str, &[&str])] = &[
        ("text-ping", &["ping"]),
        ("text-echo", &["echo", "a b", "c"]),
        ("text-commands", &["commands"]),
        ("text-describe", &["describe", "check"]),
        ("text-program", &["hello"]),
        ("text-refused", &["forbidden"]),
        ("text-bad-arguments", &["check", "ten"]),
        ("json-ping", &["--json", "ping"]),
        ("json-whoami", &["--json", "whoami"]),
        ("json-commands", &["--json", "commands"]),
        ("json-program", &["--json", "hello"]),
        ("json-refused", &["--json", "forbidden"]),
        ("json-usage", &["--json", "--bogus", "ping"]),
        ("nagios-ok", &["--nagios", "check", "0"]),
        ("nagios-critical", &["--nagios", "check", "2"]),
        ("nagios-outside", &["--nagios", "hello"]),
        ("nagios-refused", &["--nagios", "forbidden"]),
    ];
    for (name, args) in cases {
        golden(&format!("{name}.txt"), &s.one(args));
    }
}

#[test]
fn a_fan_out_in_stream_gather_and_json_lines_shows_what_it_showed() {
    let s = setup();
    let cases: &[(&str, &[&str])] = &[
        ("fleet-stream", &["--on", "tier=web", "hello"]),
        ("fleet-gather", &["--on", "tier=web", "--gather", "hello"]),
        ("fleet-json", &["--on", "tier=web", "--json", "hello"]),
        ("fleet-ping", &["--on", "web[1-3]", "ping"]),
        ("fleet-refused", &["--on", "web1,web2", "forbidden"]),
        ("fleet-hosts", &["--on", "tier=web", "hosts"]),
    ];
    for (name, args) in cases {
        golden(&format!("{name}.txt"), &s.many(args));
    }
}
