//! The two-person rule without an approval server: a request prepared as a file,
//! co-signed by approvers with their own credentials, run with the approvals attached.
//! Every tampering with a signed file, and every approval that must not count, is
//! refused by the server with its own code, and nothing runs; an emergency role runs
//! without approvals, audited loudly.

use std::path::{Path, PathBuf};
use std::process::Output;

use cmdchan::approval::ApprovalFile;
use cmdchan_common::approval::{ApprovalKey, Approver};
use cmdchan_common::credential::Credential;
use cmdchan_tests::{lines_in, text, Server, TestEnv};
use serde_json::Value;

const POLICY: &str = r#"
[roles.ops]
commands = ["restart", "purge"]
[roles.lead]
commands = ["ping"]
[roles.dba]
commands = ["ping"]
[roles.oncall]
commands = ["restart"]
emergency = true
[commands.restart]
program = "{dir}/restart.sh"
args = ["{service}"]
detach = true
approvals = 2
approvers = ["lead", "dba"]
[[commands.restart.params]]
name = "service"
type = "string"
regex = "[a-z0-9]+"
required = true
[commands.purge]
program = "{dir}/restart.sh"
args = ["{service}"]
detach = true
approvals = 2
approvers = ["lead", "dba"]
[[commands.purge.params]]
name = "service"
type = "string"
required = true
"#;

/// The policy in `env`, with the script its programs run (it counts runs in `runs`).
fn policy(env: &TestEnv) -> PathBuf {
    env.script(
        "restart.sh",
        "echo \"$1\" >> \"$(dirname \"$0\")/runs\"; echo restarted \"$1\"",
    );
    let dir = env.dir.path().to_str().unwrap();
    env.write("policy.toml", &POLICY.replace("{dir}", dir))
}

struct Fleet {
    env: TestEnv,
    _servers: Vec<Server>,
    inventory: PathBuf,
}

impl Fleet {
    fn start() -> Fleet {
        let env = TestEnv::new();
        let policy = policy(&env);
        let (servers, inventory) = env.fleet(&["s1", "s2", "s3"], &policy);
        Fleet {
            env,
            _servers: servers,
            inventory,
        }
    }

    fn cmdchan(&self, cred: &Path, args: &[&str]) -> Output {
        cmdchan_tests::cmdchan_in(&self.inventory, cred, args)
    }

    /// `restart nginx` on s1 and s2, prepared by `cred`, written to `name`.
    fn prepare(&self, cred: &Path, name: &str, extra: &[&str]) -> PathBuf {
        let out = self.env.path(name);
        let mut args = vec!["approval", "request", "--out", out.to_str().unwrap()];
        args.extend(extra);
        args.extend(["--on", "s1,s2", "restart", "nginx"]);
        let made = self.cmdchan(cred, &args);
        assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
        out
    }

    fn sign(&self, file: &Path, cred: &Path) -> Output {
        self.cmdchan(cred, &["approval", "sign", "--yes", file.to_str().unwrap()])
    }

    fn signed(&self, file: &Path, creds: &[&Path]) {
        for cred in creds {
            let signed = self.sign(file, cred);
            assert_eq!(signed.status.code(), Some(0), "{}", text(&signed.stderr));
        }
    }

    /// Runs the approved file on `server` alone, as JSON.
    fn run_on(&self, cred: &Path, file: &Path, server: &str) -> Value {
        let out = self.cmdchan(
            cred,
            &[
                "--json",
                "--server",
                server,
                "--approval",
                file.to_str().unwrap(),
            ],
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)))
    }

    fn runs(&self) -> usize {
        lines_in(&self.env, "runs")
    }

    /// Asserts that running `file` on s1 is refused with `code`, and nothing ran.
    fn refused(&self, cred: &Path, file: &Path, code: &str, case: &str) {
        let before = self.runs();
        let reply = self.run_on(cred, file, "s1");
        assert_eq!(reply["error"]["code"], code, "{case}: {reply}");
        assert_eq!(reply["exit"], 80, "{case}: a refusal by policy: {reply}");
        assert_eq!(self.runs(), before, "{case}: nothing ran");
    }
}

/// Rewrites one top-level `key = value` line of an approval file.
fn edit(file: &Path, key: &str, value: &str) -> PathBuf {
    let body = std::fs::read_to_string(file).unwrap();
    let edited: Vec<String> = body
        .lines()
        .map(|l| match l.starts_with(&format!("{key} = ")) {
            true => format!("{key} = {value}"),
            false => l.to_owned(),
        })
        .collect();
    assert_ne!(edited.join("\n"), body.trim_end(), "{key} is in the file");
    let out = file.with_extension(format!("{key}.toml"));
    std::fs::write(&out, edited.join("\n") + "\n").unwrap();
    out
}

/// Adds an approval made by hand with `cred`'s entry of `zone`, as a client that skips
/// the CLI's own checks would (self-approval, another zone's key).
fn sign_by_hand(file: &Path, cred: &Path, zone: &str) {
    let mut approval = ApprovalFile::load(file).unwrap();
    let cred = Credential::load(cred).unwrap();
    let (_, entry) = cred.zone(Some(zone)).unwrap();
    let key = ApprovalKey::new(&entry.psk, &approval.zone, &cred.name);
    let tag = key.sign(
        &cmdchan_common::approval::Approved {
            zone: &approval.zone,
            requester: &approval.requester,
            id: &approval.id,
            command: &approval.command,
            args: &approval.args,
            params: &approval.params,
            detach: approval.detach,
            servers: &approval.servers,
            expires: approval.expires,
        },
        &cred.name,
    );
    approval.approvals.push(Approver {
        name: cred.name.clone(),
        generation: entry.generation,
        grant: entry.grant.clone(),
        grant_tag: entry.tag,
        tag,
    });
    approval.save(file).unwrap();
}

#[test]
fn a_request_approved_by_two_runs_once_on_its_servers_and_names_its_approvers() {
    let fleet = Fleet::start();
    let alice = fleet.env.provision("alice", "ops", &[]);
    let bob = fleet.env.provision("bob", "lead", &[]);
    let carol = fleet.env.provision("carol", "dba", &[]);
    let file = fleet.prepare(&alice, "restart.toml", &[]);

    let shown = fleet.cmdchan(&bob, &["approval", "show", file.to_str().unwrap()]);
    let said = text(&shown.stdout);
    assert!(
        said.contains("alice asks to run, in zone test:\n  \"restart\" \"nginx\""),
        "{said}"
    );
    assert!(said.contains("on 2 servers: s1, s2"), "{said}");
    assert!(said.contains("approvals: none yet"), "{said}");
    // Without a terminal to ask on, sign signs only with --yes.
    let unasked = fleet.cmdchan(&bob, &["approval", "sign", file.to_str().unwrap()]);
    assert_eq!(unasked.status.code(), Some(64), "{}", text(&unasked.stdout));
    assert!(
        text(&unasked.stderr).contains("no terminal to ask on"),
        "{}",
        text(&unasked.stderr)
    );

    let unapproved = fleet.cmdchan(&alice, &["--json", "--server", "s1", "restart", "nginx"]);
    let reply: Value = serde_json::from_slice(&unapproved.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "approval required", "{reply}");
    assert_eq!(unapproved.status.code(), Some(80));

    fleet.signed(&file, &[&bob, &carol]);
    let ran = fleet.cmdchan(&alice, &["--approval", file.to_str().unwrap()]);
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}{}",
        text(&ran.stdout),
        text(&ran.stderr)
    );
    assert_eq!(fleet.runs(), 2, "once on s1 and once on s2");
    assert!(text(&ran.stdout).contains("restarted nginx"));

    let audit = std::fs::read_to_string(fleet.env.path("audit-s1.log")).unwrap();
    let record = audit
        .lines()
        .find(|l| l.contains("\"outcome\":\"started\""))
        .expect("a started record");
    assert!(
        record.contains(r#""approvers":["bob (lead)","carol (dba)"]"#),
        "{record}"
    );
    assert!(record.contains(r#""client":"alice""#), "{record}");
    let verified = fleet.env.admin(&[
        "audit-verify",
        "--zone-key",
        fleet.env.zone_key.to_str().unwrap(),
        fleet.env.path("audit-s1.log").to_str().unwrap(),
    ]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    // Single use: run again (a new issue time), and the ID is used up on each server.
    let again = fleet.run_on(&alice, &file, "s1");
    assert_eq!(again["error"]["code"], "reused id", "{again}");
    assert_eq!(fleet.runs(), 2);
    // Another client cannot run it: the client says so, and a file edited to name them
    // does not verify.
    let dave = fleet.env.provision("dave", "ops", &[]);
    let theirs = fleet.cmdchan(&dave, &["--approval", file.to_str().unwrap()]);
    assert_eq!(theirs.status.code(), Some(64), "{}", text(&theirs.stderr));
    fleet.refused(
        &dave,
        &edit(&file, "requester", "\"dave\""),
        "bad approval",
        "another requester",
    );
}

#[test]
fn every_tampered_or_void_approval_is_refused_with_its_own_code_and_nothing_runs() {
    let fleet = Fleet::start();
    let env = &fleet.env;
    let alice = env.provision("alice", "ops", &[]);
    let bob = env.provision("bob", "lead", &[]);
    let carol = env.provision("carol", "dba", &[]);
    let dave = env.provision("dave", "ops", &[]);
    let erin = env.provision("erin", "lead", &[]);
    let alice_lead = env.path("alice-lead.cred");
    env.admin_ok(&[
        "provision",
        "--root",
        env.root.to_str().unwrap(),
        "--name",
        "alice",
        "--role",
        "lead",
        "--zone",
        "test",
        "--zone",
        "other:lead",
        "--out",
        alice_lead.to_str().unwrap(),
    ]);
    let frank = env.path("frank.cred");
    env.admin_ok(&[
        "provision",
        "--root",
        env.root.to_str().unwrap(),
        "--name",
        "frank",
        "--role",
        "lead",
        "--zone",
        "other",
        "--out",
        frank.to_str().unwrap(),
    ]);

    // Every field of a signed file changed in turn.
    let file = fleet.prepare(&alice, "base.toml", &[]);
    fleet.signed(&file, &[&bob, &carol]);
    let tampered = [
        ("command", "\"purge\""),
        ("args", "[\"apache2\"]"),
        ("detach", "true"),
        ("servers", "[\"s1\", \"s3\"]"),
        ("id", "\"00000000000000000000000000000000\""),
        ("expires", "\"2099-01-01T00:00:00Z\""),
    ];
    for (key, value) in tampered {
        fleet.refused(&alice, &edit(&file, key, value), "bad approval", key);
    }
    // The value moved from a positional argument to a named one, and changed.
    let named = edit(&file, "args", "[]");
    let params = "[{ name = \"service\", value = \"apache2\" }]";
    fleet.refused(
        &alice,
        &edit(&named, "params", params),
        "bad approval",
        "params",
    );
    let role = std::fs::read_to_string(&file)
        .unwrap()
        .replace("role = \"dba\"", "role = \"lead\"");
    let forged_role = env.write("role.toml", &role);
    fleet.refused(
        &alice,
        &forged_role,
        "bad approval",
        "an approver's role edited",
    );

    // Replayed on a server the approval does not name.
    let reply = fleet.run_on(&alice, &file, "s3");
    assert_eq!(reply["error"]["code"], "wrong server", "{reply}");

    // Too few: one approver, or the same approver twice.
    let one = fleet.prepare(&alice, "one.toml", &[]);
    fleet.signed(&one, &[&bob]);
    fleet.refused(&alice, &one, "approval required", "one approver");
    let body = std::fs::read_to_string(&one).unwrap();
    let twice = body.clone() + &body[body.find("[[approvals]]").unwrap()..];
    fleet.refused(
        &alice,
        &env.write("twice.toml", &twice),
        "bad approval",
        "the same approver twice",
    );

    // Self-approval: the CLI will not sign it, and a hand-made one is refused.
    let own = fleet.prepare(&alice, "own.toml", &[]);
    let signed = fleet.sign(&own, &alice_lead);
    assert_eq!(signed.status.code(), Some(64), "{}", text(&signed.stdout));
    fleet.signed(&own, &[&bob]);
    sign_by_hand(&own, &alice_lead, "test");
    fleet.refused(&alice, &own, "self approval", "self-approval");

    // An approver whose role may not approve it.
    let wrong = fleet.prepare(&alice, "wrong.toml", &[]);
    fleet.signed(&wrong, &[&bob, &dave]);
    fleet.refused(&alice, &wrong, "approver not allowed", "an ops approver");

    // An approver of another zone.
    let other = fleet.prepare(&alice, "other.toml", &[]);
    fleet.signed(&other, &[&bob]);
    sign_by_hand(&other, &frank, "other");
    fleet.refused(
        &alice,
        &other,
        "bad approval",
        "an approver of another zone",
    );

    // Expired.
    let brief = fleet.prepare(&alice, "brief.toml", &["--expires-in", "2s"]);
    fleet.signed(&brief, &[&bob, &carol]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    fleet.refused(&alice, &brief, "approval expired", "expired");

    // A revoked approver (a signed list pushed to the servers).
    let revoked = fleet.prepare(&alice, "revoked.toml", &[]);
    fleet.signed(&revoked, &[&erin, &carol]);
    let list = env.revoke(&["--name", "erin"], "v1.list");
    let pushed = fleet.cmdchan(
        &bob,
        &["--on", "*", "revocations", "push", list.to_str().unwrap()],
    );
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed.stderr));
    fleet.refused(&alice, &revoked, "approver revoked", "a revoked approver");

    assert_eq!(fleet.runs(), 0, "nothing ran in any case");
}

#[test]
fn an_emergency_role_runs_without_approvals_and_the_audit_says_so_loudly() {
    let fleet = Fleet::start();
    let oscar = fleet.env.provision("oscar", "oncall", &["--expires", "4h"]);
    let ran = fleet.cmdchan(&oscar, &["--server", "s1", "restart", "nginx"]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert_eq!(fleet.runs(), 1);
    let audit = std::fs::read_to_string(fleet.env.path("audit-s1.log")).unwrap();
    let started = audit
        .lines()
        .find(|l| l.contains(r#""client":"oscar""#))
        .expect("oscar's record");
    assert!(started.contains(r#""outcome":"emergency""#), "{started}");
    assert!(started.contains(r#""emergency":true"#), "{started}");
    assert!(
        started.contains("without the approvals its policy asks for"),
        "{started}"
    );
}

/// Without an audit file the journal is the only record: an emergency run is still
/// logged at WARN, naming the role and the command.
#[test]
fn an_emergency_run_is_logged_at_warn_also_without_an_audit_file() {
    let env = TestEnv::new();
    let policy = policy(&env);
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let oscar = env.provision("oscar", "oncall", &[]);
    let ran = env.cmdchan(&server, &oscar, &["restart", "nginx"]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert!(
        server.wait_for_log("emergency: a command that needs approvals runs without them"),
        "{}",
        server.log()
    );
    let line = server.log_lines("emergency:").join("\n");
    assert!(
        line.contains("WARN") && line.contains("oncall") && line.contains("restart"),
        "{line}"
    );
}
