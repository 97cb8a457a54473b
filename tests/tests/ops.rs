//! What operators install: version lines, completions and man pages, the systemd unit,
//! and the examples walk-through.

#![allow(
    clippy::unwrap_used,
    reason = "in a test, a panic is the failure report"
)]

use std::process::Command;

use cmdchan_tests::{bin, run, text, TestEnv};

#[test]
fn both_binaries_print_their_version_and_protocol_version() {
    for name in ["cmdchan", "cmdchan-server"] {
        let out = run(Command::new(bin(name)).arg("--version"));
        assert_eq!(
            text(&out.stdout),
            format!("{name} {} (protocol 2)\n", env!("CARGO_PKG_VERSION"))
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
    assert!(read("completions/cmdchan.bash").contains("--retries"));
    assert!(read("completions/_cmdchan-server").contains("--replay-store"));
    assert!(read("completions/cmdchan-server.fish").contains("audit-verify"));
    assert!(read("man/cmdchan.1").contains("Exit status"));
    assert!(read("man/cmdchan-server-admin-provision.1").contains("expires"));
    assert!(
        !dir.join("man/cmdchan-server-help.1").exists(),
        "no pages for help subcommands"
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
        "restart-service  restart a systemd service",
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
    assert!(server.wait_for_log("metrics at http://"));
    let line = server.log_lines("metrics at http://").remove(0);
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
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

#[test]
fn the_debian_package_holds_binaries_unit_config_completions_and_man_pages() {
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
    let deb = text(&out.stdout).lines().last().unwrap().trim().to_owned();
    let listing = text(&run(cmdchan_tests::system("dpkg-deb").args(["-c", &deb])).stdout);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/cmdchan-server"),
        ("-rwxr-xr-x", "./usr/bin/cmdchan"),
        ("-rw-r--r--", "./lib/systemd/system/cmdchan-server.service"),
        ("-rw-------", "./etc/cmdchan/server.toml"),
        ("-rw-------", "./etc/cmdchan/policy.toml"),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/cmdchan",
        ),
        (
            "-rw-r--r--",
            "./usr/share/man/man1/cmdchan-server-serve.1.gz",
        ),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} missing in:\n{listing}"
        );
    }
    let conffiles =
        text(&run(cmdchan_tests::system("dpkg-deb").args(["-I", &deb, "conffiles"])).stdout);
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/cmdchan/server.toml", "/etc/cmdchan/policy.toml"]
    );
}
