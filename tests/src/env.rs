//! A scratch directory for one test: a root key, the key of zone [`ZONE`], credentials
//! provisioned with the real `admin` tool, and the `serve` command line that uses them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use tempfile::TempDir;

use crate::{bin, cmdchan_as, run, system, text, Server};

/// Numbers the job stores of servers sharing a Redis.
static NEXT_JOBS: AtomicUsize = AtomicUsize::new(0);

pub const SERVER_ID: &str = "test-server";

/// A scratch directory with a root key and the key of zone [`ZONE`], for one test.
#[derive(Debug)]
pub struct TestEnv {
    pub dir: TempDir,
    /// The root key (the admin's).
    pub root: PathBuf,
    /// The key of zone [`ZONE`], generation 1: what the servers get.
    pub zone_key: PathBuf,
}

/// The zone every test server is in.
pub const ZONE: &str = "test";

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.key");
        let zone_key = dir.path().join("zone.key");
        let env = Self {
            dir,
            root,
            zone_key,
        };
        env.admin_ok(&["init", "--root", env.root.to_str().unwrap()]);
        env.make_zone_key(ZONE, 1, &env.zone_key);
        env
    }

    /// Writes the key of `zone`, `generation`, to `out`.
    pub fn make_zone_key(&self, zone: &str, generation: u64, out: &Path) {
        self.admin_ok(&[
            "zone-key",
            "--root",
            self.root.to_str().unwrap(),
            "--zone",
            zone,
            "--generation",
            &generation.to_string(),
            "--out",
            out.to_str().unwrap(),
            "--force",
        ]);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` in the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes an executable `/bin/sh` script; the policy runs it as a program (no shell
    /// is involved in passing its arguments).
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.write(name, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs `cmdchan-server admin ARGS`.
    pub fn admin(&self, args: &[&str]) -> Output {
        run(Command::new(bin("cmdchan-server")).arg("admin").args(args))
    }

    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Signs a revocation list with this environment's root (`admin revoke` with `args`:
    /// `--name`, `--min-epoch`, `--retire`, `--from`) into `out` in the scratch directory.
    pub fn revoke(&self, args: &[&str], out: &str) -> PathBuf {
        let path = self.path(out);
        let mut all = vec![
            "revoke",
            "--root",
            self.root.to_str().unwrap(),
            "--out",
            path.to_str().unwrap(),
        ];
        all.extend(args);
        self.admin_ok(&all);
        path
    }

    /// Provisions `name` with `role` in zone [`ZONE`] (plus `extra` flags, such as more
    /// `--zone`s) into `NAME.cred`.
    pub fn provision(&self, name: &str, role: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(&format!("{name}.cred"));
        let root = self.root.to_str().unwrap();
        let mut args = vec!["provision", "--root", root, "--name", name, "--role", role];
        if !extra.contains(&"--zone") {
            args.extend(["--zone", ZONE]);
        }
        args.extend(["--out", out.to_str().unwrap(), "--force"]);
        args.extend(extra);
        self.admin_ok(&args);
        out
    }

    /// The sealed PSK identity and hex key of `name` at epoch 0 in zone [`ZONE`], from
    /// `admin psk` (the `IDENTITY:HEXPSK` line standard tools take).
    pub fn psk_pair(&self, name: &str) -> (String, String) {
        self.psk_pair_in(ZONE, name)
    }

    /// [`TestEnv::psk_pair`] in `zone`.
    pub fn psk_pair_in(&self, zone: &str, name: &str) -> (String, String) {
        let line = self.admin_ok(&[
            "psk",
            "--root",
            self.root.to_str().unwrap(),
            "--zone",
            zone,
            "--name",
            name,
        ]);
        let (identity, hex) = line.trim().split_once(':').unwrap();
        (identity.to_owned(), hex.to_owned())
    }

    /// Starts `cmdchan-server serve` on a free loopback port with `extra` flags.
    pub fn start(&self, extra: &[&str]) -> Server {
        Server::spawn(self.serve_command(&[], extra))
    }

    /// Runs `cmdchan-server serve ARGS` to its end (for start-up errors), with the
    /// scratch master key.
    pub fn admin_like_serve(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("cmdchan-server"));
        cmd.args([
            "serve",
            "--zone-key",
            self.zone_key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        run(cmd.args(args))
    }

    /// The command [`TestEnv::start`] runs, behind `wrapper` (such as `faketime -f -5s`).
    pub fn serve_command(&self, wrapper: &[&str], extra: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = system(program);
                cmd.args(args).arg(bin("cmdchan-server"));
                cmd
            }
            None => Command::new(bin("cmdchan-server")),
        };
        cmd.args([
            "serve",
            "--zone-key",
            self.zone_key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        cmd.args(["--server-id", SERVER_ID]).args(extra);
        if !extra.contains(&"--replay-store") {
            cmd.args([
                "--replay-store",
                &format!("file:{}", self.path("replay").display()),
            ]);
        }
        let store = extra.iter().skip_while(|a| **a != "--replay-store").nth(1);
        // A pool on one Redis keeps its jobs there (the server's default).
        let in_redis = store.is_some_and(|s| s.starts_with("redis"));
        if !extra.contains(&"--job-store") && !extra.contains(&"--config") && !in_redis {
            // One directory per environment, as a restart finds its jobs again; a server
            // whose command IDs are not in the environment's files (in memory) gets one
            // of its own.
            let shared = store.is_some_and(|s| !s.starts_with("file:"));
            let dir = match shared {
                true => self.path(&format!(
                    "jobs-{}",
                    NEXT_JOBS.fetch_add(1, Ordering::Relaxed)
                )),
                false => self.path("jobs"),
            };
            cmd.args(["--job-store", dir.to_str().unwrap()]);
        }
        cmd
    }

    /// A server of a fleet: server ID `name`, `policy`, its own replay store in this
    /// environment's directory (`replay-NAME`), and `extra`.
    pub fn fleet_member(&self, name: &str, policy: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin("cmdchan-server"));
        cmd.args(["serve", "--zone-key"])
            .arg(&self.zone_key)
            .args(["--listen", "127.0.0.1:0", "--server-id", name, "--policy"])
            .arg(policy)
            .arg("--replay-store")
            .arg(format!(
                "file:{}",
                self.path(&format!("replay-{name}")).display()
            ))
            .args(extra);
        Server::spawn(cmd)
    }

    /// A fleet of `names` on `policy`, each server with its audit file `audit-NAME.log`
    /// in this environment's directory; and an inventory naming them.
    pub fn fleet(&self, names: &[&str], policy: &Path) -> (Vec<Server>, PathBuf) {
        let mut servers = Vec::new();
        let mut inventory = String::new();
        for name in names {
            let log = self.path(&format!("audit-{name}.log"));
            let server = self.fleet_member(name, policy, &["--audit-log", log.to_str().unwrap()]);
            inventory.push_str(&format!(
                "[servers.{name}]\naddress = \"{}\"\n",
                server.addr
            ));
            servers.push(server);
        }
        (servers, self.write("inventory.toml", &inventory))
    }

    /// Runs the `cmdchan` binary against `server` with credential `cred`.
    pub fn cmdchan(&self, server: &Server, cred: &Path, args: &[&str]) -> Output {
        cmdchan_as(server, SERVER_ID, cred, args)
    }
}

/// How many lines the file `name` of the scratch directory has (0 if it is missing):
/// the count of runs of a program that appends a line each time.
pub fn lines_in(env: &TestEnv, name: &str) -> usize {
    std::fs::read_to_string(env.path(name)).map_or(0, |s| s.lines().count())
}

/// The records of the audit file at `path`, read while the server may be writing it: a
/// write that crosses a page can be seen half done, so a last line without its newline
/// is not a record yet. A whole line that is not JSON fails the test.
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    let body = std::fs::read_to_string(path).unwrap();
    body.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Rewrites one `key = value` line of a credential file (keeping mode 0600).
pub fn edit_credential(path: &Path, key: &str, value: &str) {
    let body = std::fs::read_to_string(path).unwrap();
    let edited: Vec<String> = body
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                format!("{key} = {value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(path, edited.join("\n") + "\n").unwrap();
}

/// A credential's value for `key`, as written in the file.
pub fn credential_field(path: &Path, key: &str) -> String {
    let body = std::fs::read_to_string(path).unwrap();
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap();
    line.split_once(" = ").unwrap().1.to_owned()
}
