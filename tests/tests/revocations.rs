//! Revocation as a fleet operation: the admin machine signs a list with the root's
//! revocation key, any client pushes it with --on, every server checks it against the
//! key its zone key file names, keeps the newest across restarts and applies it at once;
//! older and forged lists are refused with their own codes; a server that was down
//! during the push learns the list from the next client that reaches it.

use std::path::{Path, PathBuf};
use std::process::Output;

use cmdchan_tests::{text, Server, TestEnv};

const POLICY: &str = "[roles.ops]\ncommands = [\"ping\", \"whoami\"]\n";

struct Fleet {
    env: TestEnv,
    servers: Vec<Option<Server>>,
    names: Vec<&'static str>,
    inventory: PathBuf,
    policy: PathBuf,
}

impl Fleet {
    fn start() -> Fleet {
        let env = TestEnv::new();
        let policy = env.write("policy.toml", POLICY);
        let names = vec!["s1", "s2", "s3"];
        let servers: Vec<Option<Server>> = names
            .iter()
            .map(|n| Some(env.fleet_member(n, &policy, &[])))
            .collect();
        let mut fleet = Fleet {
            inventory: PathBuf::new(),
            env,
            servers,
            names,
            policy,
        };
        fleet.write_inventory();
        fleet
    }

    fn write_inventory(&mut self) {
        let mut inventory = String::new();
        for (name, server) in self.names.iter().zip(&self.servers) {
            if let Some(server) = server {
                inventory.push_str(&format!(
                    "[servers.{name}]\naddress = \"{}\"\n",
                    server.addr
                ));
            }
        }
        self.inventory = self.env.write("inventory.toml", &inventory);
    }

    /// `cmdchan` as the client whose credential is `cred`, with a cache of its own.
    fn cmdchan(&self, cred: &Path, args: &[&str]) -> Output {
        cmdchan_tests::cmdchan_in(&self.inventory, cred, args)
    }

    fn revoke(&self, args: &[&str], out: &str) -> PathBuf {
        self.env.revoke(args, out)
    }

    /// `cmdchan --json --on ON revocations push LIST`.
    fn push_json(&self, cred: &Path, on: &str, list: &Path) -> Output {
        let list = list.to_str().unwrap();
        self.cmdchan(cred, &["--json", "--on", on, "revocations", "push", list])
    }
}

#[test]
fn a_signed_list_pushed_with_on_revokes_everywhere_and_older_or_forged_lists_are_refused() {
    let mut fleet = Fleet::start();
    let alice = fleet.env.provision("alice", "ops", &[]);
    let mallory = fleet.env.provision("mallory", "ops", &[]);
    let eve = fleet.env.provision("eve", "ops", &[]);
    assert_eq!(
        fleet
            .cmdchan(&mallory, &["--on", "*", "ping"])
            .status
            .code(),
        Some(0)
    );

    let v1 = fleet.revoke(&["--name", "mallory"], "v1.list");
    let pushed = fleet.cmdchan(
        &alice,
        &["--on", "*", "revocations", "push", v1.to_str().unwrap()],
    );
    assert_eq!(pushed.status.code(), Some(0), "{}", text(&pushed.stderr));
    assert_eq!(
        text(&pushed.stdout)
            .matches("revocation list version 1")
            .count(),
        3,
        "{}",
        text(&pushed.stdout)
    );
    let refused = fleet.cmdchan(&mallory, &["--json", "--on", "*", "ping"]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "refused at the handshake everywhere: {}",
        text(&refused.stdout)
    );
    assert_eq!(
        fleet.cmdchan(&eve, &["--on", "*", "ping"]).status.code(),
        Some(0),
        "others still get in"
    );

    // Older, and forged (another root's key, an edited list): refused with their codes.
    let v2 = fleet.revoke(
        &["--from", v1.to_str().unwrap(), "--name", "eve"],
        "v2.list",
    );
    assert_eq!(
        fleet
            .cmdchan(
                &alice,
                &["--on", "*", "revocations", "push", v2.to_str().unwrap()]
            )
            .status
            .code(),
        Some(0)
    );
    let older = fleet.push_json(&alice, "s1", &v1);
    assert_eq!(refused_as(&older), (Some("outdated".into()), Some(19)));
    let other = TestEnv::new();
    let forged = other.revoke(&["--name", "alice"], "forged.list");
    let mut text_forged = std::fs::read_to_string(&forged).unwrap();
    text_forged = text_forged.replace('\n', "");
    let forged_here = fleet.env.write("forged.list", &text_forged);
    let out = fleet.push_json(&alice, "s1", &forged_here);
    assert_eq!(refused_as(&out), (Some("bad signature".into()), Some(23)));
    assert_eq!(
        fleet.cmdchan(&alice, &["--on", "*", "ping"]).status.code(),
        Some(0),
        "the forged list did nothing"
    );
    let status = fleet.cmdchan(&alice, &["--on", "*", "revocations", "status"]);
    assert_eq!(
        text(&status.stdout)
            .matches("revocation list version 2")
            .count(),
        3
    );
    // Each server recorded the list it applied.
    let recorded = fleet.env.admin(&[
        "show-revocations",
        v2.to_str().unwrap(),
        "--zone-key",
        fleet.env.zone_key.to_str().unwrap(),
    ]);
    assert!(
        text(&recorded.stdout).contains("signature: valid for zone"),
        "{}",
        text(&recorded.stdout)
    );
    assert!(
        text(&recorded.stdout).contains("revoked:   eve, mallory"),
        "{}",
        text(&recorded.stdout)
    );
    drop(fleet.servers.drain(..));
    let _ = &fleet.policy;
}

#[test]
fn a_server_down_during_the_push_keeps_its_list_and_learns_the_newer_one_from_the_next_client() {
    let mut fleet = Fleet::start();
    let alice = fleet.env.provision("alice", "ops", &[]);
    let eve = fleet.env.provision("eve", "ops", &[]);
    let v1 = fleet.revoke(&["--name", "nobody"], "v1.list");
    assert_eq!(
        fleet
            .cmdchan(
                &alice,
                &["--on", "*", "revocations", "push", v1.to_str().unwrap()]
            )
            .status
            .code(),
        Some(0)
    );

    // s3 is down while v2 (eve revoked) goes out.
    fleet.servers[2].take().unwrap().kill();
    let v2 = fleet.revoke(
        &["--from", v1.to_str().unwrap(), "--name", "eve"],
        "v2.list",
    );
    let out = fleet.cmdchan(
        &alice,
        &["--on", "s1,s2", "revocations", "push", v2.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // s3 comes back with the list it kept (v1, across its restart) …
    fleet.servers[2] = Some(fleet.env.fleet_member("s3", &fleet.policy, &[]));
    fleet.write_inventory();
    let bob = fleet.env.provision("bob", "ops", &[]);
    let status = fleet.cmdchan(&bob, &["--on", "s3", "revocations", "status"]);
    assert!(
        text(&status.stdout).contains("revocation list version 1"),
        "{}",
        text(&status.stdout)
    );
    // … and the next client that knows v2 gives it before its own request.
    assert_eq!(
        fleet.cmdchan(&alice, &["--on", "s3", "ping"]).status.code(),
        Some(0)
    );
    let status = fleet.cmdchan(&bob, &["--on", "s3", "revocations", "status"]);
    assert!(
        text(&status.stdout).contains("revocation list version 2"),
        "{}",
        text(&status.stdout)
    );
    assert_eq!(
        fleet.cmdchan(&eve, &["--on", "s3", "ping"]).status.code(),
        Some(4),
        "eve refused on s3"
    );

    // A retired zone key generation: every client of generation 1 is refused.
    let v3 = fleet.revoke(
        &[
            "--from",
            v2.to_str().unwrap(),
            "--retire",
            &format!("{}@1", cmdchan_tests::ZONE),
        ],
        "v3.list",
    );
    assert_eq!(
        fleet
            .cmdchan(
                &alice,
                &["--on", "s1", "revocations", "push", v3.to_str().unwrap()]
            )
            .status
            .code(),
        Some(0)
    );
    let after = fleet.cmdchan(&bob, &["--on", "s1", "--retries", "0", "ping"]);
    assert_eq!(after.status.code(), Some(4), "{}", text(&after.stderr));
}

/// A list that cannot be kept (its disk is full) is refused and not applied: a server
/// never enforces a list it would forget at its next start. Once there is room, the
/// same push is taken, and the list holds across a restart.
#[test]
fn a_list_pushed_onto_a_full_disk_is_refused_and_not_applied_until_it_can_be_kept() {
    let env = TestEnv::new();
    let policy = env.write("policy.toml", POLICY);
    let disk = cmdchan_tests::Tmpfs::mount(env.path("disk"), "256k");
    let list_path = disk.dir.join("revocations.list");
    let extra = ["--revocation-list", list_path.to_str().unwrap()];
    let server = env.fleet_member("s1", &policy, &extra);
    let inventory = env.write(
        "inventory.toml",
        &format!("[servers.s1]\naddress = \"{}\"\n", server.addr),
    );
    let alice = env.provision("alice", "ops", &[]);
    let mallory = env.provision("mallory", "ops", &[]);
    let list = env.revoke(&["--name", "mallory"], "v1.list");
    let push = || {
        cmdchan_tests::cmdchan_in(
            &inventory,
            &alice,
            &[
                "--json",
                "-s",
                "s1",
                "revocations",
                "push",
                list.to_str().unwrap(),
            ],
        )
    };
    let ping = |cred: &Path| {
        cmdchan_tests::cmdchan_in(&inventory, cred, &["-s", "s1", "--retries", "0", "ping"])
    };

    disk.fill();
    let refused: serde_json::Value = serde_json::from_slice(&push().stdout).unwrap();
    assert_eq!(refused["error"]["code"], "internal", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not be kept") && message.contains("not applied"),
        "{message}"
    );
    assert_eq!(
        ping(&mallory).status.code(),
        Some(0),
        "not applied: mallory still gets in"
    );
    assert!(!list_path.exists(), "no half-written list in its place");

    disk.free();
    let taken: serde_json::Value = serde_json::from_slice(&push().stdout).unwrap();
    assert_eq!(taken["reply"]["revocations"]["applied"], true, "{taken}");
    assert_eq!(
        ping(&mallory).status.code(),
        Some(69),
        "applied: mallory is refused"
    );

    server.kill();
    let server = env.fleet_member("s1", &policy, &extra);
    let inventory = env.write(
        "inventory.toml",
        &format!("[servers.s1]\naddress = \"{}\"\n", server.addr),
    );
    let after = cmdchan_tests::cmdchan_in(
        &inventory,
        &mallory,
        &["-s", "s1", "--retries", "0", "ping"],
    );
    assert_eq!(after.status.code(), Some(69), "kept across the restart");
}

/// The refusal's code and number in the first JSON line `cmdchan --json` printed.
fn refused_as(out: &std::process::Output) -> (Option<String>, Option<u64>) {
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let error = &row["error"];
    (
        error["code"].as_str().map(str::to_owned),
        error["number"].as_u64(),
    )
}
