//! Zones: a server holds only its zone's key, so it admits the clients of its zone and
//! no others; one credential covers several zones; client names never travel in clear;
//! standard TLS-PSK tools work with what `admin psk` prints; a zone key rotates through
//! two generations.

use std::process::Command;

use cmdchan::{Reply, Request};
use cmdchan_tests::{bin, cmdchan_as, system, text, Server, TestEnv, SERVER_ID, ZONE};
use serde_json::Value;

/// A server of zone `zone` (generation `generation`), its key made from `env`'s root.
fn zone_server(env: &TestEnv, zone: &str, generation: u64, extra: &[&str]) -> Server {
    let key = env.path(&format!("{zone}-{generation}.key"));
    env.make_zone_key(zone, generation, &key);
    let mut args = vec!["--zone-key", key.to_str().unwrap()];
    args.extend(extra);
    let mut cmd = Command::new(bin("cmdchan-server"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--server-id", SERVER_ID]);
    cmd.arg("--replay-store").arg(format!(
        "file:{}",
        env.path(&format!("replay-{zone}-{generation}")).display()
    ));
    cmd.args(&args);
    Server::spawn(cmd)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)))
}

#[test]
fn a_zone_server_admits_its_zone_and_a_credential_of_another_zone_fails_before_sending_anything() {
    let env = TestEnv::new();
    let a = zone_server(&env, "a", 1, &[]);
    let in_a = env.provision("alice", "ops", &["--zone", "a"]);
    let only_b = env.provision("bob", "ops", &["--zone", "b"]);
    assert_eq!(text(&env.cmdchan(&a, &in_a, &["ping"]).stdout), "pong\n");
    let out = env.cmdchan(&a, &only_b, &["--json", "ping"]);
    assert_eq!(out.status.code(), Some(69));
    let reply = json(&out);
    assert_eq!(reply["error"]["code"], "wrong zone", "{reply}");
    assert_eq!(reply["error"]["number"], 113, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the server names zone a, but zone b was meant"),
        "{reply}"
    );
    let out = env.cmdchan(&a, &only_b, &["--zone", "a", "--json", "ping"]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(json(&out)["error"]["code"], "no zone key");
    assert!(
        a.log_lines("handshake failed")
            .iter()
            .all(|l| !l.contains("bob")),
        "nothing of bob's was sent"
    );
}

#[test]
fn an_identity_of_another_zone_gets_the_same_alert_as_a_wrong_key() {
    let env = TestEnv::new();
    let a = zone_server(&env, "a", 1, &[]);
    let psk_line = |zone: &str| env.psk_pair_in(zone, "alice");
    let s_client = |identity: &str, key: &str| {
        let out = cmdchan_tests::run(system("openssl").args([
            "s_client",
            "-connect",
            &a.addr.to_string(),
            "-tls1_2",
            "-psk_identity",
            identity,
            "-psk",
            key,
            "-cipher",
            "ECDHE-PSK-CHACHA20-POLY1305",
        ]));
        text(&out.stdout) + &text(&out.stderr)
    };
    let alert = |out: &str| {
        out.lines()
            .find(|l| l.contains("SSL alert number"))
            .map(|l| l.split(':').nth(5).unwrap_or("").to_owned())
    };
    let (a_identity, _) = psk_line("a");
    let (b_identity, b_key) = psk_line("b");
    let other_zone = s_client(&b_identity, &b_key);
    let wrong_key = s_client(&a_identity, &"ab".repeat(32));
    assert_eq!(
        alert(&other_zone),
        Some("sslv3 alert bad record mac".into()),
        "{other_zone}"
    );
    assert_eq!(alert(&other_zone), alert(&wrong_key));
    assert!(
        a.wait_for_log("unknown identity"),
        "the server's log tells them apart"
    );
    assert!(a.wait_for_log("key mismatch"));
}

#[test]
fn one_credential_reaches_servers_of_two_zones_with_a_role_in_each() {
    let env = TestEnv::new();
    let a = zone_server(&env, "a", 1, &[]);
    let b = zone_server(&env, "b", 1, &[]);
    let cred = env.provision("alice", "ops", &["--zone", "a", "--zone", "b:auditor"]);
    for (server, zone, role) in [(&a, "a", "ops"), (&b, "b", "auditor")] {
        let args = ["--zone", zone, "--json", "whoami"];
        let reply = json(&cmdchan_as(server, SERVER_ID, &cred, &args));
        assert_eq!(reply["reply"]["role"], role, "{reply}");
    }
}

/// A policy with `deploy`, whose `token` parameter is secret, in zones prod and stage.
const DEPLOY: &str = r#"
[roles.ops]
commands = ["ping", "deploy"]
[commands.deploy]
program = "/bin/echo"
args = ["deployed", "{token}"]
[[commands.deploy.params]]
name = "token"
type = "string"
secret = true
"#;

const TOKEN: &str = "s3cret-prod-token";

/// The attack: a server of zone stage (it holds stage's key, as a credential of both
/// zones does) stands where the operator's prod server srvA should be. The client meant
/// prod, so it refuses the handshake before sending anything: the stage server never
/// sees the command or its secret, and no fake answer is printed.
#[test]
fn a_server_of_another_zone_never_sees_a_command_meant_for_this_zone() {
    let env = TestEnv::new();
    let policy = env.write("policy.toml", DEPLOY);
    let audit = env.path("stage-audit.log");
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ];
    let stage = zone_server(&env, "stage", 1, &args);
    let cred = env.provision("alice", "ops", &["--zone", "prod", "--zone", "stage"]);
    let deploy = ["--json", "--arg", &format!("token={TOKEN}"), "deploy"];
    let out = cmdchan_as(
        &stage,
        "srvA",
        &cred,
        &[&["--zone", "prod"][..], &deploy].concat(),
    );
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    let reply = json(&out);
    assert_eq!(reply["error"]["code"], "wrong zone", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nothing was sent"));
    // Without --zone, a credential of two zones does not guess: a usage error, before
    // connecting.
    let out = cmdchan_as(&stage, "srvA", &cred, &deploy);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stdout));
    let reply = json(&out);
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("several zones (prod, stage)"),
        "{reply}"
    );
    assert!(stage.wait_for_log("handshake failed"), "the client hung up");
    let recorded = std::fs::read_to_string(&audit).unwrap();
    assert!(!recorded.contains("deploy"), "{recorded}");
    assert!(!recorded.contains(TOKEN) && !stage.log().contains(TOKEN));
}

/// The same through a fan-out: the inventory says srvA is in prod; the server at its
/// address names stage, so srvA is unreachable (bit 4) and nothing was sent to it.
#[test]
fn a_fan_out_refuses_a_server_that_names_another_zone_than_the_inventory() {
    let env = TestEnv::new();
    let policy = env.write("policy.toml", DEPLOY);
    let audit = env.path("stage-audit.log");
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ];
    let stage = zone_server(&env, "stage", 1, &args);
    let cred = env.provision("alice", "ops", &["--zone", "prod", "--zone", "stage"]);
    let inventory = env.write(
        "inventory.toml",
        &format!(
            "[servers.srvA]\naddress = \"{}\"\nzone = \"prod\"\n",
            stage.addr
        ),
    );
    let out = cmdchan_tests::run(
        Command::new(bin("cmdchan"))
            .arg("--cred")
            .arg(&cred)
            .arg("--inventory")
            .arg(&inventory)
            .args([
                "--on",
                "srvA",
                "--json",
                "--arg",
                &format!("token={TOKEN}"),
                "deploy",
            ]),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["error"]["code"], "wrong zone", "{first}");
    let recorded = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !recorded.contains("deploy") && !recorded.contains(TOKEN),
        "{recorded}"
    );
    // An inventory without the zone, and a credential of two zones: said, not guessed.
    let inventory = env.write(
        "inventory.toml",
        &format!("[servers.srvA]\naddress = \"{}\"\n", stage.addr),
    );
    let out = cmdchan_tests::run(
        Command::new(bin("cmdchan"))
            .arg("--cred")
            .arg(&cred)
            .arg("--inventory")
            .arg(&inventory)
            .args(["--on", "srvA", "ping"]),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("names no zone for srvA"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_server_works_with_its_zone_key_alone_and_no_root_on_its_filesystem() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "ops", &[]);
    let server_dir = tempfile::tempdir().unwrap();
    let key = server_dir.path().join("zone.key");
    std::fs::copy(&env.zone_key, &key).unwrap();
    // The admin's root leaves; only the zone key stays, where the server reads it.
    std::fs::remove_file(&env.root).unwrap();
    std::fs::remove_file(&env.zone_key).unwrap();
    let mut cmd = Command::new(bin("cmdchan-server"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--server-id",
        SERVER_ID,
        "--zone-key",
    ])
    .arg(&key);
    cmd.arg("--replay-store").arg(format!(
        "file:{}",
        server_dir.path().join("replay").display()
    ));
    let server = Server::spawn(cmd);
    assert_eq!(
        text(&env.cmdchan(&server, &cred, &["ping"]).stdout),
        "pong\n"
    );
    let held: Vec<String> = std::fs::read_dir(server_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!held.iter().any(|n| n.contains("root")), "{held:?}");
}

/// Records what a client sends, on its way to `target`.
async fn recording_proxy(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let record = record.clone();
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = client_read.read(&mut buf).await {
                    if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                }
                record.lock().unwrap().push(bytes);
            });
            tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_on_the_wire_never_holds_the_name_and_differs_every_connection() {
    let env = TestEnv::new();
    let server = env.start(&[]);
    let cred = env.provision("alice-the-operator", "ops", &[]);
    let (proxy, seen) = recording_proxy(server.addr).await;
    for _ in 0..2 {
        let out = cmdchan_tests::run(Command::new(bin("cmdchan")).args([
            "--cred",
            cred.to_str().unwrap(),
            "--server",
            &proxy.to_string(),
            "--server-id",
            SERVER_ID,
            "ping",
        ]));
        assert_eq!(text(&out.stdout), "pong\n", "{}", text(&out.stderr));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let identity = |bytes: &[u8]| {
        // The sealed identity: "c2." and its 222 characters.
        let at = bytes
            .windows(3)
            .position(|w| w == b"c2.")
            .expect("a sealed identity");
        bytes[at..at + 225].to_vec()
    };
    for bytes in &seen {
        assert!(
            !bytes.windows(5).any(|w| w == b"alice"),
            "the name went in clear"
        );
    }
    assert_ne!(
        identity(&seen[0]),
        identity(&seen[1]),
        "two connections could be linked"
    );
}

#[test]
fn stunnel_completes_a_handshake_with_what_admin_psk_prints() {
    let env = TestEnv::new();
    let server = env.start(&[]);
    let cred = env.provision("alice", "ops", &[]);
    let (identity, key) = env.psk_pair("alice");
    let secrets = env.write("psk.txt", &format!("{identity}:{key}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = cmdchan_tests::free_port();
    let conf = env.write(
        "stunnel.conf",
        &format!(
            "foreground = yes\npid =\n[cmdchan]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = {}\nPSKsecrets = {}\nciphers = ECDHE-PSK-CHACHA20-POLY1305\nsslVersionMin = TLSv1.2\nsslVersionMax = TLSv1.2\n",
            server.addr,
            secrets.display()
        ),
    );
    let mut stunnel = system("stunnel4")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A cmdchan request in plain frames through stunnel's tunnel.
    let loaded = cmdchan::Credential::load(&cred).unwrap();
    let (_, entry) = loaded.zone(None).unwrap();
    let request = Request {
        counter: 1,
        id: [3; 16],
        issued_at: cmdchan_common::time::now(),
        target: SERVER_ID.parse().unwrap(),
        grant: entry.grant.clone(),
        tag: entry.tag,
        command: "ping".into(),
        args: vec![],
        params: vec![],
        detach: false,
        run: None,
        approval: None,
    };
    let mut frame = bytes::BytesMut::new();
    use tokio_util::codec::{Decoder, Encoder};
    let mut codec =
        cmdchan_common::frame::MsgCodec::<cmdchan::Response, cmdchan::ClientMsg>::new(1 << 20);
    codec
        .encode(&cmdchan::ClientMsg::Request(request), &mut frame)
        .unwrap();
    let answered = cmdchan_tests::eventually(10, || {
        use std::io::{Read, Write};
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        if tcp.write_all(&frame).is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        let n = tcp.read(&mut buf).unwrap_or(0);
        let mut got = bytes::BytesMut::from(&buf[..n]);
        matches!(codec.decode(&mut got), Ok(Some(r)) if r.body == cmdchan::Body::Ok(Reply::Pong))
    });
    let _ = stunnel.kill();
    let _ = stunnel.wait();
    assert!(answered, "no pong through stunnel:\n{}", server.log());
}

#[test]
fn a_zone_key_rotates_through_two_generations() {
    let env = TestEnv::new();
    let old = env.path("gen1.key");
    let new = env.path("gen2.key");
    env.make_zone_key(ZONE, 1, &old);
    env.make_zone_key(ZONE, 2, &new);
    let on_old = env.provision("alice", "ops", &[]);
    let on_new = env.provision("bob", "ops", &["--generation", "2"]);
    let mut both = Command::new(bin("cmdchan-server"));
    both.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--server-id",
        SERVER_ID,
        "--zone-key",
    ])
    .arg(&old)
    .arg("--zone-key")
    .arg(&new);
    both.arg("--replay-store")
        .arg(format!("file:{}", env.path("replay-both").display()));
    let both = Server::spawn(both);
    for cred in [&on_old, &on_new] {
        assert_eq!(text(&env.cmdchan(&both, cred, &["ping"]).stdout), "pong\n");
    }
    let mut only_new = Command::new(bin("cmdchan-server"));
    only_new
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--server-id",
            SERVER_ID,
            "--zone-key",
        ])
        .arg(&new);
    only_new
        .arg("--replay-store")
        .arg(format!("file:{}", env.path("replay-new").display()));
    let only_new = Server::spawn(only_new);
    assert_eq!(
        text(&env.cmdchan(&only_new, &on_new, &["ping"]).stdout),
        "pong\n"
    );
    assert_eq!(
        env.cmdchan(&only_new, &on_old, &["ping"]).status.code(),
        Some(69),
        "generation 1 is retired"
    );
}

/// Rotating one zone: the web zone moves to generation 2 and its servers drop
/// generation 1, while the db zone stays on 1 — and the one credential file, updated
/// for web alone, keeps working with both.
#[test]
fn one_zone_rotates_while_another_keeps_working_with_the_same_credential_file() {
    let env = TestEnv::new();
    let db = zone_server(&env, "db", 1, &[]);
    let cred = env.provision("alice", "ops", &["--zone", "web", "--zone", "db:reader"]);
    let web1 = zone_server(&env, "web", 1, &[]);
    assert_eq!(
        text(&env.cmdchan(&web1, &cred, &["--zone", "web", "ping"]).stdout),
        "pong\n"
    );
    drop(web1);

    // The web servers move to generation 2 alone; the old credential no longer opens them.
    let web2 = zone_server(&env, "web", 2, &[]);
    let stale = env.cmdchan(&web2, &cred, &["--zone", "web", "ping"]);
    assert_eq!(stale.status.code(), Some(69), "{}", text(&stale.stderr));

    let out = env.admin(&[
        "provision",
        "--root",
        env.root.to_str().unwrap(),
        "--name",
        "alice",
        "--role",
        "ops",
        "--zone",
        "web@2",
        "--update",
        "--out",
        cred.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("db@1 as reader, web@2 as ops"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&env.cmdchan(&web2, &cred, &["--zone", "web", "ping"]).stdout),
        "pong\n"
    );
    let whoami = env.cmdchan(&db, &cred, &["--zone", "db", "--json", "whoami"]);
    assert_eq!(
        json(&whoami)["reply"]["role"],
        "reader",
        "the db entry kept as it was"
    );

    let other = env.admin(&[
        "provision",
        "--root",
        env.root.to_str().unwrap(),
        "--name",
        "bob",
        "--role",
        "ops",
        "--zone",
        "web@2",
        "--update",
        "--out",
        cred.to_str().unwrap(),
    ]);
    assert!(
        !other.status.success() && text(&other.stderr).contains("is alice's credential, not bob's")
    );
}
