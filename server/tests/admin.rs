//! `cmdchan-server admin` and the key-file checks of `serve`, through the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn server(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cmdchan-server"));
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cmdchan-server")
}

fn ok(args: &[&str]) -> String {
    let out = server(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `serve` on a zone key file; every test that uses it expects the server to refuse to
/// start.
fn serve(zone_key: &str) -> Output {
    server(&[
        "serve",
        "--zone-key",
        zone_key,
        "--listen",
        "127.0.0.1:0",
        "--server-id",
        "t",
    ])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }
    fn path(&self, name: &str) -> String {
        self.0
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }
    fn root(&self) -> String {
        let path = self.path("root.key");
        ok(&["admin", "init", "--root", &path]);
        path
    }
    /// The key of zone `z`, from the root key at `root`.
    fn zone(&self, root: &str) -> String {
        let path = self.path("z.key");
        ok(&[
            "admin", "zone-key", "--root", root, "--zone", "z", "--out", &path,
        ]);
        path
    }
}

#[test]
fn init_writes_a_private_256_bit_key_and_never_overwrites_silently() {
    let dir = Dir::new();
    let master = dir.root();
    let key = std::fs::read_to_string(&master).expect("read");
    assert_eq!((key.trim().len(), mode(master.as_ref())), (64, 0o600));
    assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let again = server(&["admin", "init", "--root", &master]);
    assert_eq!(again.status.code(), Some(78));
    assert!(
        stderr(&again).contains("already exists; pass --force"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&master).expect("read"),
        key,
        "the old key is kept"
    );
    ok(&["admin", "init", "--root", &master, "--force"]);
    assert_ne!(std::fs::read_to_string(&master).expect("read"), key);
}

#[test]
fn provision_writes_a_private_credential_that_inspect_validates() {
    let dir = Dir::new();
    let master = dir.root();
    let zone = dir.zone(&master);
    let cred = dir.path("alice.cred");
    let args = [
        "--name", "alice", "--role", "operator", "--server", "db1", "--server", "db2",
    ];
    ok(&[
        &[
            "admin",
            "provision",
            "--root",
            &master,
            "--zone",
            "z",
            "--out",
            &cred,
            "--expires",
            "2030-01-01T00:00:00Z",
            "--address",
            "db1:7433",
        ][..],
        &args,
    ]
    .concat());
    assert_eq!(mode(cred.as_ref()), 0o600);
    let body = std::fs::read_to_string(&cred).expect("read");
    for line in [
        "name = \"alice\"",
        "role = \"operator\"",
        "epoch = 0",
        "expires = \"2030-01-01T00:00:00Z\"",
        "servers = [\"db1\", \"db2\"]",
        "address = \"db1:7433\"",
    ] {
        assert!(body.contains(line), "{line} missing in\n{body}");
    }
    let line = ok(&[
        "admin", "psk", "--root", &master, "--zone", "z", "--name", "alice",
    ]);
    let (identity, psk) = line.trim().split_once(':').expect("IDENTITY:HEXPSK");
    assert!(
        identity.starts_with("c2.1.") && !identity.contains("alice"),
        "{identity}"
    );
    assert!(
        body.contains(&format!("psk = \"{psk}\"")),
        "admin psk prints the credential's key"
    );

    let shown = ok(&["admin", "inspect", &cred, "--zone-key", &zone]);
    assert!(
        shown.contains("  tag:        valid") && shown.contains("  servers:    db1, db2"),
        "{shown}"
    );
    assert!(!shown.contains(psk), "inspect must not print the key");
}

#[test]
fn inspect_detects_an_edited_grant() {
    let dir = Dir::new();
    let master = dir.root();
    let zone = dir.zone(&master);
    let cred = dir.path("alice.cred");
    ok(&[
        "admin",
        "provision",
        "--root",
        &master,
        "--zone",
        "z",
        "--name",
        "alice",
        "--role",
        "monitor",
        "--out",
        &cred,
    ]);
    let body = std::fs::read_to_string(&cred)
        .expect("read")
        .replace("\"monitor\"", "\"admin\"");
    std::fs::write(&cred, body).expect("write");
    let out = server(&["admin", "inspect", &cred, "--zone-key", &zone]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("  tag:        INVALID"));
}

#[test]
fn psk_depends_on_name_epoch_and_zone_and_its_identity_hides_the_name() {
    let dir = Dir::new();
    let root = dir.root();
    let psk = |zone: &str, name: &str, epoch: &str| {
        let line = ok(&[
            "admin", "psk", "--root", &root, "--zone", zone, "--name", name, "--epoch", epoch,
        ]);
        let (identity, key) = line.trim().split_once(':').expect("IDENTITY:HEXPSK");
        assert!(!identity.contains(name), "{identity}");
        key.to_owned()
    };
    let (a0, a1, b0, other) = (
        psk("z", "alice", "0"),
        psk("z", "alice", "1"),
        psk("z", "bob", "0"),
        psk("y", "alice", "0"),
    );
    assert_eq!(a0.len(), 64);
    assert!(a0 != a1 && a0 != b0 && a1 != b0 && a0 != other);
}

#[test]
fn invalid_names_are_refused_before_anything_is_written() {
    let dir = Dir::new();
    let master = dir.root();
    let long = "x".repeat(129);
    for bad in ["al ice", "-rf", "a#1", "", long.as_str()] {
        let cred = dir.path("bad.cred");
        let out = server(&[
            "admin",
            "provision",
            "--root",
            &master,
            "--zone",
            "z",
            "--name",
            bad,
            "--role",
            "r",
            "--out",
            &cred,
        ]);
        assert_eq!(out.status.code(), Some(64), "{bad:?} accepted");
        assert!(!Path::new(&cred).exists());
    }
}

#[test]
fn serve_refuses_a_group_readable_zone_key_and_says_how_to_fix_it() {
    let dir = Dir::new();
    let root = dir.root();
    let zone = dir.zone(&root);
    std::fs::set_permissions(&zone, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = serve(&zone);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains(&zone)
            && err.contains("mode 0640")
            && err.contains(&format!("chmod 600 {zone}")),
        "{err}"
    );
    assert!(!err.contains("listening"), "nothing may start");
}

#[test]
fn serve_refuses_a_short_or_missing_zone_key_and_never_needs_the_root() {
    let dir = Dir::new();
    let short = dir.path("short.key");
    std::fs::write(
        &short,
        format!(
            "zone = \"z\"\ngeneration = 1\nkey = \"{}\"\n",
            "ab".repeat(31)
        ),
    )
    .expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = serve(&short);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("holds a key of 31 bytes; exactly 32 are required"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path("missing.key");
    let out = serve(&missing);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(
            "does not exist; make one on the admin machine with: cmdchan-server admin zone-key"
        ),
        "{}",
        stderr(&out)
    );
    let out = server(&["serve", "--master", "x"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "there is no master key any more"
    );
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let dir = Dir::new();
    let master = dir.root();
    let zone = dir.zone(&master);
    let config = dir.path("server.toml");
    std::fs::write(
        &config,
        format!("zone_key = \"{zone}\"\nlisten_addr = \"127.0.0.1:0\"\n"),
    )
    .expect("write");
    let out = server(&["serve", "--config", &config]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("listen_addr"), "{}", stderr(&out));
}

#[test]
fn provision_refuses_an_expiry_in_the_past_and_init_names_a_missing_directory() {
    let dir = Dir::new();
    let master = dir.root();
    let cred = dir.path("late.cred");
    let out = server(&[
        "admin",
        "provision",
        "--root",
        &master,
        "--zone",
        "z",
        "--out",
        &cred,
        "--name",
        "late",
        "--role",
        "operator",
        "--expires",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("--expires 2020-01-01T00:00:00Z is in the past"),
        "{said}"
    );
    assert!(!std::path::Path::new(&cred).exists());
    let out = server(&["admin", "init", "--root", "/nonexistent-cmdchan/root.key"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("install -d -m 0700 /nonexistent-cmdchan"),
        "{said}"
    );
}
