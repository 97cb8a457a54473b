//! What operators install: version lines, completions and man pages, the systemd unit,
//! and the examples walk-through.

use std::process::Command;

use cmdchan_tests::{bin, run, text, TestEnv};

#[test]
fn both_binaries_print_their_version_and_protocol_version() {
    for name in ["cmdchan", "cmdchan-server"] {
        let out = run(Command::new(bin(name)).arg("--version"));
        assert_eq!(
            text(&out.stdout),
            format!("{name} {} (protocol 3)\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    let env = TestEnv::new();
    let dir = env.path("assets");
    for name in ["cmdchan", "cmdchan-server"] {
        let out = run(Command::new(bin(name)).arg("generate").arg(&dir));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    // The client's completions ask the binary (they know the inventory); the server's
    // are static.
    assert!(
        read("completions/cmdchan.bash").contains("COMPLETE=\"bash\""),
        "{}",
        read("completions/cmdchan.bash")
    );
    assert!(read("completions/_cmdchan").contains("COMPLETE"));
    assert!(read("completions/_cmdchan-server").contains("--replay-store"));
    assert!(read("completions/cmdchan-server.fish").contains("audit-verify"));
    assert!(read("man/cmdchan.1").contains("Exit status"));
    assert!(read("man/cmdchan-server-admin-provision.1").contains("expires"));
    assert!(
        !dir.join("man/cmdchan-server-help.1").exists(),
        "no pages for help subcommands"
    );
    let page = read("man/cmdchan.1");
    for section in ["SYNOPSIS", "EXAMPLES", "ENVIRONMENT", "FILES", "SEE ALSO"] {
        assert!(
            page.contains(&format!(".SH {section}")),
            "cmdchan(1) lacks {section}"
        );
    }
    // Every page renders without a warning, as man(1) reads it (UTF-8 through preconv).
    for entry in std::fs::read_dir(dir.join("man")).unwrap() {
        let path = entry.unwrap().path();
        let out = run(cmdchan_tests::system("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&path));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
    }
}

/// What the shell gets when it asks `cmdchan` for the words that complete `typed`.
fn completions(inventory: &std::path::Path, typed: &[&str]) -> Vec<String> {
    let out = run(Command::new(bin("cmdchan"))
        .env("COMPLETE", "bash")
        .env("CMDCHAN_INVENTORY", inventory)
        .env("_CLAP_COMPLETE_INDEX", typed.len().to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .env("_CLAP_IFS", "\n")
        .arg("--")
        .arg("cmdchan")
        .args(typed));
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn completion_after_on_offers_the_inventory_and_none_of_the_clients_options_after_the_command() {
    let env = TestEnv::new();
    let inventory = env.write(
        "inventory.toml",
        "[groups]\nweb = [\"web*\"]\n[servers.\"web[01-02]\"]\nlabels = { tier = \"app\" }\n[servers.db1]\nzone = \"db\"\n",
    );
    assert_eq!(completions(&inventory, &["--on", "w"]), ["web01", "web02"]);
    assert_eq!(
        completions(&inventory, &["--on", "db1,"]),
        [
            "db1,db1",
            "db1,web01",
            "db1,web02",
            "db1,@web",
            "db1,tier=app",
            "db1,zone=db"
        ]
    );
    assert_eq!(completions(&inventory, &["--server", "d"]), ["db1"]);
    assert!(completions(&inventory, &["--re"]).contains(&"--retries".to_owned()));
    assert_eq!(
        completions(&inventory, &["uptime", "--re"]),
        Vec::<String>::new(),
        "after the remote command, its own words"
    );
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let env = TestEnv::new();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/systemd/cmdchan-server.service"
    ))
    .unwrap();
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID")
            && unit.contains("StateDirectory=cmdchan")
    );
    // Point it at the binary just built; the unit itself names the packaged path.
    let local = unit.replace(
        "/usr/bin/cmdchan-server",
        bin("cmdchan-server").to_str().unwrap(),
    );
    let path = env.write("cmdchan-server.service", &local);
    let out = run(cmdchan_tests::system("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn the_examples_walkthrough_runs_as_written() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let bin_dir = bin("cmdchan-server").parent().unwrap().to_owned();
    // No PORT: the walk-through finds a free one itself, so a server already on 7433
    // (the README's first command) is never the one it talks to.
    let busy = std::net::TcpListener::bind("127.0.0.1:7433");
    let mut cmd = cmdchan_tests::system("sh");
    cmd.arg("examples/walkthrough.sh")
        .current_dir(root)
        .env("BIN", bin_dir)
        .env_remove("PORT");
    let out = run(&mut cmd);
    drop(busy);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{said}");
    for expected in [
        "restart-service     restart a systemd service",
        "this role may use only: nginx, php8.2-fpm",
        "Filesystem",
        "refused (forbidden): role web-operator: this role may not use service = \"apache2\"",
        "refused (bad arguments): mount: value is not one of /, /var, /tmp",
        "ok: 9 records, starting a new chain",
    ] {
        assert!(said.contains(expected), "{expected:?} missing in:\n{said}");
    }
}

#[tokio::test]
async fn the_metrics_endpoint_counts_handshakes_requests_and_refusals() {
    use cmdchan_common::keys::Psk;
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--metrics", "127.0.0.1:0"]);
    let addr = server.metrics_addr();
    let scrape = || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        tcp.read_to_string(&mut body).unwrap();
        body
    };
    assert!(scrape().starts_with("HTTP/1.1 200 OK"));
    for _ in 0..2 {
        assert_eq!(
            env.cmdchan(&server, &cred, &["ping"]).status.code(),
            Some(0)
        );
    }
    env.cmdchan(&server, &cred, &["no-such-command"]);
    let (identity, _) = env.psk_pair("alice");
    let wrong = Psk::from_hex(&"ab".repeat(32)).unwrap();
    assert!(
        cmdchan_tests::raw_tls_fixed("127.0.0.1", server.addr, &identity, &wrong)
            .await
            .is_err()
    );
    assert!(server.wait_for_log("key mismatch"));
    let metrics = scrape();
    for line in [
        "cmdchan_handshakes_total{result=\"ok\"} 3",
        "cmdchan_handshakes_total{result=\"key_mismatch\"} 1",
        "cmdchan_requests_total{command=\"ping\",outcome=\"ok\"} 2",
        "cmdchan_requests_total{command=\"\",outcome=\"unknown command\"} 1",
        "cmdchan_replay_store_seconds_count 2",
        "cmdchan_replay_store_errors_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing in:\n{metrics}"
        );
    }
}

/// Builds both packages once for the tests that look at them; returns the client's and
/// the server's .deb paths.
fn packages() -> (String, String) {
    static BUILT: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_packages).clone()
}

fn build_packages() -> (String, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // Fails loudly if cargo-deb is missing; the README's test command installs it.
    cmdchan_tests::system("cargo-deb");
    let out = run(cmdchan_tests::system("bash")
        .arg("scripts/package")
        .current_dir(root));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let debs: Vec<&str> = stdout.lines().rev().take(2).collect();
    (debs[1].trim().to_owned(), debs[0].trim().to_owned())
}

/// What a Debian user would run on the packages: lintian, not one error or warning
/// (the overrides shipped say why the configuration files are 0600).
#[test]
fn lintian_finds_nothing_in_either_package() {
    let (client, server) = packages();
    let out = run(cmdchan_tests::system("lintian")
        .args(["--tag-display-limit", "0"])
        .args([&client, &server]));
    let said: Vec<String> = (text(&out.stdout) + &text(&out.stderr))
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .map(str::to_owned)
        .collect();
    assert!(
        said.is_empty() && out.status.success(),
        "lintian: {said:#?}"
    );
}

fn listing(deb: &str) -> String {
    text(&run(cmdchan_tests::system("dpkg-deb").args(["-c", deb])).stdout)
}

fn holds(listing: &str, mode: &str, path: &str) -> bool {
    listing
        .lines()
        .any(|l| l.starts_with(mode) && l.ends_with(path))
}

#[test]
fn the_client_and_server_packages_each_hold_only_their_half() {
    let (client, server) = packages();
    assert!(client.contains("/cmdchan_"), "{client}");
    assert!(server.contains("/cmdchan-server_"), "{server}");
    let client_files = listing(&client);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/cmdchan"),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/cmdchan",
        ),
        ("-rw-r--r--", "./usr/share/man/man1/cmdchan.1.gz"),
        ("-rw-r--r--", "./usr/share/man/man1/cmdchan-doctor.1.gz"),
        ("-rw-r--r--", "./usr/share/man/man7/cmdchan-scripting.7.gz"),
    ] {
        assert!(
            holds(&client_files, mode, path),
            "{mode} {path} missing in:\n{client_files}"
        );
    }
    for absent in ["cmdchan-server", "/etc/", "systemd"] {
        assert!(
            !client_files.contains(absent),
            "the client package holds {absent}:\n{client_files}"
        );
    }
    let server_files = listing(&server);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/cmdchan-server"),
        ("-rw-r--r--", "./lib/systemd/system/cmdchan-server.service"),
        ("-rw-------", "./etc/cmdchan/server.toml"),
        ("-rw-------", "./etc/cmdchan/policy.toml"),
        (
            "-rw-r--r--",
            "./usr/share/man/man1/cmdchan-server-serve.1.gz",
        ),
        ("-rw-r--r--", "./usr/share/man/man5/cmdchan-policy.5.gz"),
    ] {
        assert!(
            holds(&server_files, mode, path),
            "{mode} {path} missing in:\n{server_files}"
        );
    }
    assert!(
        !server_files.contains("./usr/bin/cmdchan\n"),
        "the server package holds the client:\n{server_files}"
    );
    let conffiles = |deb: &str| {
        let out = run(cmdchan_tests::system("dpkg-deb").args(["-I", deb, "conffiles"]));
        text(&out.stdout)
    };
    assert_eq!(
        conffiles(&server).lines().collect::<Vec<_>>(),
        ["/etc/cmdchan/server.toml", "/etc/cmdchan/policy.toml"]
    );
    assert_eq!(conffiles(&client), "");
    // Up to 0.1 the package named cmdchan held the daemon: the server takes it over.
    let field = |deb: &str, name: &str| {
        let out = run(cmdchan_tests::system("dpkg-deb").args(["-f", deb, name]));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(field(&server, "Breaks"), "cmdchan (<< 0.2.0)");
    assert_eq!(field(&server, "Replaces"), "cmdchan (<< 0.2.0)");
}

#[test]
fn the_hand_written_man_pages_render_without_a_warning() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/man");
    for page in [
        "cmdchan-policy.5",
        "cmdchan-scripting.7",
        "cmdchan-inventory.5",
    ] {
        let out = run(cmdchan_tests::system("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(format!("{root}/{page}")));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            text(&out.stderr)
        );
    }
}

/// The server package's maintainer scripts, run against a scratch root (`DPKG_ROOT`,
/// as `dpkg --root` runs them): purge removes the zone keys and replay state, keeps the
/// audit trail and a client's credential; no script is left with a debhelper token.
#[test]
fn purging_the_server_package_removes_its_keys_and_state_and_keeps_the_audit_trail() {
    let (_, server) = packages();
    let env = TestEnv::new();
    let control = env.path("control");
    run(cmdchan_tests::system("dpkg-deb").args(["-e", &server, control.to_str().unwrap()]));
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(!body.contains("#DEBHELPER#"), "{script}:\n{body}");
        let syntax = run(cmdchan_tests::system("sh").arg("-n").arg(&path));
        assert!(
            syntax.status.success(),
            "{script}: {}",
            text(&syntax.stderr)
        );
    }
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        prerm.contains("deb-systemd-invoke stop cmdchan-server.service"),
        "{prerm}"
    );

    let root = env.path("root");
    let file = |path: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "x").unwrap();
        path
    };
    let zone_key = file("etc/cmdchan/zone.key");
    let cred = file("etc/cmdchan/web1.cred");
    let replay = file("var/lib/cmdchan/replay/seg-1.log");
    let audit = file("var/log/cmdchan/audit.log");
    let wants = file("etc/systemd/system/multi-user.target.wants/cmdchan-server.service");
    for (script, arg) in [
        ("postinst", "configure"),
        ("prerm", "remove"),
        ("postrm", "remove"),
    ] {
        let out = run(cmdchan_tests::system("sh")
            .arg(control.join(script))
            .arg(arg)
            .env("DPKG_ROOT", &root));
        assert!(
            out.status.success(),
            "{script} {arg}: {}",
            text(&out.stderr)
        );
    }
    assert!(zone_key.exists() && replay.exists(), "remove is not purge");
    let out = run(cmdchan_tests::system("sh")
        .arg(control.join("postrm"))
        .arg("purge")
        .env("DPKG_ROOT", &root));
    assert!(out.status.success(), "postrm purge: {}", text(&out.stderr));
    assert!(!zone_key.exists(), "purge left the zone key");
    assert!(
        !replay.parent().unwrap().exists(),
        "purge left the replay state"
    );
    assert!(!wants.exists(), "purge left the service enabled");
    assert!(audit.exists(), "purge removed the audit trail");
    assert!(cred.exists(), "purge removed a client's credential");
    assert!(text(&out.stderr).contains("/var/log/cmdchan are kept"));
}
