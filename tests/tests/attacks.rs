//! Attacks an authenticated client or a hostile network tried against the release build
//! and got through before: each test tries one and asserts the exact refusal, through
//! the real server.

use cmdchan::ErrorCode;
use cmdchan_common::protocol::VERSION;
use cmdchan_tests::{eventually, text, TestEnv};

const RESTRICTED: &str = r#"
[roles.limited]
commands = ["deploy"]
[roles.limited.restrict.deploy]
target = ["safe"]
token = ["the-right-token"]

[commands.deploy]
program = "{dir}/deploy.sh"
args = ["{target}", "{token}"]
[[commands.deploy.params]]
name = "target"
type = "string"
[[commands.deploy.params]]
name = "token"
type = "string"
secret = true
default = "the-right-token"
"#;

fn restricted(env: &TestEnv) -> (cmdchan_tests::Server, std::path::PathBuf) {
    env.script(
        "deploy.sh",
        &format!("echo \"$1\" >> {}", env.path("deployed").display()),
    );
    let dir = env.dir.path().to_str().unwrap();
    let policy = env.write("policy.toml", &RESTRICTED.replace("{dir}", dir));
    let log = env.path("audit.log");
    let server = env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    (server, env.provision("mallory", "limited", &[]))
}

#[test]
fn leaving_out_a_restricted_optional_parameter_is_forbidden_and_runs_nothing() {
    let env = TestEnv::new();
    let (server, cred) = restricted(&env);
    let out = env.cmdchan(&server, &cred, &["--json", "deploy"]);
    assert_eq!(out.status.code(), Some(80));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["number"], ErrorCode::Forbidden.number());
    assert_eq!(
        reply["error"]["message"],
        "role limited: this role must give target (one of: safe)"
    );
    assert!(!env.path("deployed").exists(), "the command ran");
    let out = env.cmdchan(&server, &cred, &["deploy", "safe"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_secret_value_refused_by_a_restriction_reaches_no_reply_log_or_audit_record() {
    let env = TestEnv::new();
    let (server, cred) = restricted(&env);
    let guess = "guess-0123456789";
    let out = env.cmdchan(
        &server,
        &cred,
        &["--arg", &format!("token={guess}"), "deploy", "safe"],
    );
    assert_eq!(out.status.code(), Some(80));
    let reply = text(&out.stderr);
    assert!(
        reply.contains("this role may not use token = (secret)"),
        "{reply}"
    );
    assert!(eventually(10, || std::fs::read_to_string(
        env.path("audit.log")
    )
    .is_ok_and(|a| a.contains("forbidden"))));
    let audit = std::fs::read_to_string(env.path("audit.log")).unwrap();
    for (what, text) in [
        ("reply", reply),
        ("log", server.log()),
        ("audit file", audit),
    ] {
        assert!(
            !text.contains(guess),
            "the secret reached the {what}: {text}"
        );
        assert!(
            !text.contains("the-right-token"),
            "the allowed secret reached the {what}"
        );
    }
}

#[test]
fn a_redis_password_in_a_broken_config_line_is_never_printed() {
    let env = TestEnv::new();
    // A typo (no closing quote) on the line that holds the URL with its password.
    let config = env.write(
        "server.toml",
        "replay_store = \"redis://admin:hunter2pass@127.0.0.1:6379/0\nrate = 5\n",
    );
    let out = env.admin_like_serve(&["--config", config.to_str().unwrap()]);
    let said = text(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("server.toml is not valid (line 1"), "{said}");
    assert!(!said.contains("hunter2pass"), "{said}");
    // A value of the wrong type on that line, the kind of error that quotes values.
    std::fs::write(
        &config,
        "replay_store = [\"redis://admin:hunter2pass@h:6379/0\"]\n",
    )
    .unwrap();
    let out = env.admin_like_serve(&["--config", config.to_str().unwrap()]);
    let said = text(&out.stderr);
    assert!(
        !out.status.success() && !said.contains("hunter2pass"),
        "{said}"
    );
}

/// Request `counter` under `entry`'s grant for `command`, with a fresh ID, issued now.
fn request(entry: &cmdchan::ZoneEntry, counter: u64, command: &str) -> cmdchan::ClientMsg {
    let mut id = [0u8; 16];
    openssl::rand::rand_bytes(&mut id).unwrap();
    cmdchan::ClientMsg::Request(cmdchan::Request {
        counter,
        id,
        issued_at: cmdchan_common::time::now(),
        target: cmdchan_tests::SERVER_ID.parse().unwrap(),
        grant: entry.grant.clone(),
        tag: entry.tag,
        command: command.into(),
        args: vec![],
        params: vec![],
        detach: false,
        run: None,
        approval: None,
    })
}

/// Writes `n` pipelined `ping`s for `cred` (counters from 1) on a raw connection from
/// `source`, reads answers until the server closes; returns how many were refusals for
/// security (not `rate limited`), how many pongs, and how many answers in all.
async fn pipelined(
    addr: std::net::SocketAddr,
    source: &str,
    cred: &std::path::Path,
    n: u64,
) -> Option<(u64, u64, u64)> {
    use futures::{SinkExt, StreamExt};
    let loaded = cmdchan::Credential::load(cred).unwrap();
    let (_, entry) = loaded.zone(None).unwrap();
    let stream = cmdchan_tests::raw_tls_from(source, addr, cred).await.ok()?;
    let codec =
        cmdchan_common::frame::MsgCodec::<cmdchan::Response, cmdchan::ClientMsg>::new(1 << 20);
    let mut io = tokio_util::codec::Framed::new(stream, codec);
    for counter in 1..=n {
        if io.feed(&request(entry, counter, "ping")).await.is_err() {
            break;
        }
    }
    let _ = io.flush().await;
    let (mut refused, mut pongs, mut all) = (0, 0, 0);
    while all < n {
        let Some(Ok(response)) = io.next().await else {
            break;
        };
        all += 1;
        match response.body {
            cmdchan::Body::Err(f) if f.code == ErrorCode::RateLimited => {}
            cmdchan::Body::Err(_) => refused += 1,
            _ => pongs += 1,
        }
    }
    Some((refused, pongs, all))
}

/// The attack: one authenticated client pipelines thousands of requests that are
/// refused (a bad tag), to fill the disk with audit records and log lines and to cost
/// the server work for free. Refusals now cost it: its connection closes after a few,
/// its source is penalized, its audit records and log lines stay bounded (one whole
/// record per second and reason, the rest counted in a summary), and an honest client
/// on another address is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_requests_costs_its_sender_and_leaves_the_audit_bounded() {
    let env = TestEnv::new();
    let log = env.path("audit.log");
    let server = env.start(&["--audit-log", log.to_str().unwrap()]);
    let honest = env.provision("alice", "ops", &[]);
    let mallory = env.provision("mallory", "ops", &[]);
    cmdchan_tests::edit_credential(&mallory, "role", "\"admin\"");
    let addr = server.addr;
    let flood = tokio::spawn(async move {
        let (mut refused, mut answered, mut connections) = (0, 0, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Some((r, _, all)) = pipelined(addr, "127.0.0.3", &mallory, 1000).await {
                refused += r;
                answered += all;
                connections += 1;
            }
        }
        (refused, answered, connections)
    });
    let mut served = 0;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (refused, pongs, _) = pipelined(addr, "127.0.0.2", &honest, 1)
            .await
            .expect("honest connects");
        assert_eq!((refused, pongs), (0, 1), "the honest client was not served");
        served += 1;
    }
    let (refused, answered, connections) = flood.await.unwrap();
    assert_eq!(served, 20);
    assert!(
        refused <= 3 * connections,
        "a connection answered more than 3 security refusals"
    );
    let refused = answered;
    assert!(
        server.wait_for_log("penalty: refusing 127.0.0.3"),
        "{}",
        server.log()
    );
    // Every refusal answered is in the audit file, whole or counted in a summary.
    let counted = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &serde_json::Value| r["client"] == "mallory")
            .collect();
        let total: u64 = records
            .iter()
            .map(|r| r["count"].as_u64().unwrap_or(1))
            .sum();
        (records.len(), total)
    };
    assert!(
        eventually(5, || counted().1 == refused),
        "{:?} of {refused}",
        counted()
    );
    let (records, _) = counted();
    assert!(
        records <= 12,
        "{records} audit records for {refused} refusals"
    );
    let lines = server.log_lines("client=mallory").len();
    assert!(lines <= 24, "{lines} log lines for {refused} refusals");
}

/// Before: with `--max-frame` under 16.5 KiB the server's own output frames did not fit,
/// so `commands` got no answer and a program's output was lost while it was killed.
#[test]
fn with_the_smallest_max_frame_every_request_gets_its_whole_answer() {
    let env = TestEnv::new();
    env.script("big.sh", "printf '%070000d' 0");
    let dir = env.dir.path().to_str().unwrap();
    let mut policy = String::from("[roles.ops]\ncommands = [\"ping\", \"commands\", \"big\"");
    // Enough commands that the `commands` answer is far over 1 KiB.
    for n in 0..40 {
        policy += &format!(", \"c{n}\"");
    }
    policy += "]\n";
    policy += &format!("[commands.big]\nprogram = \"{dir}/big.sh\"\n");
    for n in 0..40 {
        policy += &format!("[commands.c{n}]\ndescription = \"a command with a long description to fill the list up\"\nprogram = \"{dir}/big.sh\"\n");
    }
    let policy = env.write("policy.toml", &policy);
    let server = env.start(&["--policy", policy.to_str().unwrap(), "--max-frame", "1024"]);
    let cred = env.provision("alice", "ops", &[]);
    let out = env.cmdchan(&server, &cred, &["big"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 70_000, "the whole output arrived");
    let out = env.cmdchan(&server, &cred, &["--json", "commands"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "internal", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than this server's max_frame (1024)"));
    let out = env.cmdchan(&server, &cred, &["ping"]);
    assert_eq!(
        text(&out.stdout),
        "pong\n",
        "the connection and the server are fine"
    );
}

/// The attack: an authenticated client parks a maximum-size frame half sent on each of
/// many connections (about 1 GiB at the connection cap). Large partial frames now share
/// one budget: past it a large frame is refused with `busy`, and the memory comes back
/// when the parked connection goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_partial_frames_cannot_take_more_than_the_frame_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new();
    let server = env.start(&["--max-frame-memory", "1048576"]);
    let cred = env.provision("alice", "ops", &[]);
    let park = |len: u32| {
        let (addr, cred) = (server.addr, cred.clone());
        async move {
            let mut stream = server_raw(addr, &cred).await;
            stream.write_all(&len.to_be_bytes()).await.unwrap();
            stream.write_all(&[VERSION; 1000]).await.unwrap();
            stream.flush().await.unwrap();
            stream
        }
    };
    let first = park(1_000_000).await;
    // Let the server read the first header before the second arrives.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut second = park(600_000).await;
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut answer))
        .await
        .expect("the server answers at once")
        .unwrap();
    let codec_answer = &answer[..n];
    // A counter-0 error response, code 32 (busy), then the connection ends.
    assert!(n > 20 && codec_answer[4] == VERSION, "{codec_answer:?}");
    let response: cmdchan::Response = postcard::from_bytes(&codec_answer[5..]).unwrap();
    assert!(
        matches!(response.body, cmdchan::Body::Err(ref f) if f.code == ErrorCode::Busy),
        "{response:?}"
    );
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut third = park(600_000).await;
    let waited =
        tokio::time::timeout(std::time::Duration::from_secs(1), third.read(&mut answer)).await;
    assert!(waited.is_err(), "the budget did not come back: {waited:?}");
}

async fn server_raw(
    addr: std::net::SocketAddr,
    cred: &std::path::Path,
) -> tokio_openssl::SslStream<tokio::net::TcpStream> {
    cmdchan_tests::raw_tls(addr, cred).await.unwrap()
}

/// `GET PATH` on the metrics endpoint; the status line and the whole answer.
fn scrape(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The attack: 1,100 connections to the metrics port ran the server out of file
/// descriptors; the metrics accept loop ended for good and the main port's accepts
/// failed too. Now the endpoint takes 32 connections at a time, waits accept errors out,
/// and both ports serve again once the flood ends, while a server with too few file
/// descriptors for the flood never stops the main port for good either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_on_the_metrics_port_kills_neither_endpoint() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    // Too few descriptors for the flood on purpose: the server meets EMFILE.
    let mut cmd = env.serve_command(
        &["prlimit", "--nofile=40:40", "--"],
        &["--metrics", "127.0.0.1:0"],
    );
    cmd.env("RUST_LOG", "info");
    let server = cmdchan_tests::Server::spawn(cmd);
    let addr = server.metrics_addr();
    let ok = scrape(&addr, "/metrics?x=1").unwrap();
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    assert!(
        ok.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{ok}"
    );
    assert!(scrape(&addr, "/other").unwrap().starts_with("HTTP/1.1 404"));
    let mut flood = Vec::new();
    for _ in 0..100 {
        if let Ok(tcp) = std::net::TcpStream::connect(&addr) {
            flood.push(tcp);
        }
    }
    assert!(
        server.wait_for_log("metrics: accept failed") || server.wait_for_log("accept failed"),
        "the flood never ran the server out of descriptors:\n{}",
        server.log()
    );
    drop(flood);
    // Both endpoints come back by themselves.
    assert!(
        eventually(20, || scrape(&addr, "/metrics")
            .is_some_and(|a| a.starts_with("HTTP/1.1 200"))),
        "the metrics endpoint stayed down:\n{}",
        server.log()
    );
    assert!(
        eventually(20, || env.cmdchan(&server, &cred, &["ping"]).status.code()
            == Some(0)),
        "the main port stayed down:\n{}",
        server.log()
    );
}

/// The attack: an authenticated client sends only the 4-byte header of a large frame and
/// nothing more. The header reserves the frame's share of frame memory, and the read
/// buffer is empty again once it is read, so the connection looked quiet and kept that
/// share for the idle timeout (5 minutes) instead of the 30 s a begun frame gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frames_header_alone_is_dropped_at_the_frame_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new();
    let server = env.start(&[]);
    let cred = env.provision("alice", "ops", &[]);
    let mut stream = server_raw(server.addr, &cred).await;
    stream.write_all(&100_000u32.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let sent = Instant::now();
    let mut answer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(45), stream.read(&mut answer)).await;
    let waited = sent.elapsed();
    assert!(
        closed.is_ok(),
        "the connection was still open after {waited:?}"
    );
    assert!(
        (Duration::from_secs(28)..Duration::from_secs(45)).contains(&waited),
        "closed after {waited:?}, not at the 30 s frame timeout"
    );
}

/// The attack: while its program runs, a client sends a malformed frame and then more
/// requests behind it. The broken stream stops the program like a departure, and nothing
/// after the malformed frame may be answered: once the program has ended the client hears
/// `malformed` and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behind_a_malformed_frame_sent_during_a_program_are_not_answered() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    let env = TestEnv::new();
    env.script("slow.sh", "sleep 2\necho done");
    let policy = format!(
        "[roles.ops]\ncommands = [\"slow\", \"ping\"]\n[commands.slow]\nprogram = \"{}\"\n",
        env.path("slow.sh").display()
    );
    let policy = env.write("policy.toml", &policy);
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let cred = env.provision("alice", "ops", &[]);
    let loaded = cmdchan::Credential::load(&cred).unwrap();
    let (_, entry) = loaded.zone(None).unwrap();
    let stream = server_raw(server.addr, &cred).await;
    let codec =
        cmdchan_common::frame::MsgCodec::<cmdchan::Response, cmdchan::ClientMsg>::new(1 << 20);
    let mut io = tokio_util::codec::Framed::new(stream, codec);
    io.send(&request(entry, 1, "slow")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A frame of 3 bytes: the version, then bytes that decode to no message.
    io.get_mut()
        .write_all(&[0, 0, 0, 3, VERSION, 0xff, 0xff])
        .await
        .unwrap();
    io.send(&request(entry, 2, "ping")).await.unwrap();
    let mut answers = Vec::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(Ok(response)) = io.next().await {
            answers.push(response);
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open: {answers:?}");
    assert!(
        answers.iter().all(|a| a.counter != 2),
        "the request behind the malformed frame was answered: {answers:?}"
    );
    let last = answers.last().expect("the client hears why");
    assert!(
        matches!(last.body, cmdchan::Body::Err(ref f) if f.code == ErrorCode::Malformed),
        "{answers:?}"
    );
}

/// A sealed identity for `name` (epoch 0) built by hand from the credential's identity
/// key, its plaintext changed by `tamper` before it is sealed, and its generation
/// written as `generation`.
fn hand_sealed(entry: &cmdchan::ZoneEntry, generation: &str, tamper: impl Fn(&mut [u8])) -> String {
    use openssl::symm::{encrypt_aead, Cipher};
    let name = b"alice";
    let mut plaintext = [0u8; 137];
    plaintext[0] = name.len() as u8;
    plaintext[1..=name.len()].copy_from_slice(name);
    tamper(&mut plaintext);
    let key = hex::decode(entry.identity_key.to_hex().as_str()).unwrap();
    let aad = cmdchan_common::encode::Canonical::new()
        .bytes(b"cmdchan/v2/identity")
        .bytes(cmdchan_tests::ZONE.as_bytes())
        .u64(1)
        .finish();
    let nonce = [5u8; 12];
    let mut tag = [0u8; 16];
    let sealed = encrypt_aead(
        Cipher::chacha20_poly1305(),
        &key,
        Some(&nonce),
        &aad,
        &plaintext,
        &mut tag,
    )
    .unwrap();
    let raw = [&nonce[..], &sealed, &tag].concat();
    let text = openssl::base64::encode_block(&raw)
        .replace('+', "-")
        .replace('/', "_");
    format!("c2.{generation}.{}", text.trim_end_matches('='))
}

/// The attack: identities that say the same as a valid one in another form (a name
/// padded with other bytes than zeros, a generation written `+1` or `01`). Only the
/// canonical form opens: each gets the failure of a wrong key, and the honest one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_in_a_form_other_than_the_canonical_one_do_not_open() {
    let env = TestEnv::new();
    let server = env.start(&[]);
    let cred = env.provision("alice", "ops", &[]);
    let loaded = cmdchan::Credential::load(&cred).unwrap();
    let (_, entry) = loaded.zone(None).unwrap();
    let handshake = |identity: String| {
        let psk = &entry.psk;
        async move { cmdchan_tests::raw_tls_fixed("127.0.0.1", server.addr, &identity, psk).await }
    };
    assert!(
        handshake(hand_sealed(entry, "1", |_| {})).await.is_ok(),
        "the canonical form opens"
    );
    for (what, identity) in [
        ("padding", hand_sealed(entry, "1", |p| p[100] = 1)),
        ("+1", hand_sealed(entry, "+1", |_| {})),
        ("01", hand_sealed(entry, "01", |_| {})),
    ] {
        assert!(handshake(identity).await.is_err(), "{what} opened");
    }
    assert!(
        server.wait_for_lines("unknown identity", 3).len() >= 3,
        "{}",
        server.log()
    );
}

/// The attack: a request whose counter is written as a longer varint than it needs
/// (the same number, another encoding). One message has one encoding: `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_number_written_long_is_malformed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new();
    let server = env.start(&[]);
    let cred = env.provision("alice", "ops", &[]);
    let loaded = cmdchan::Credential::load(&cred).unwrap();
    let (_, entry) = loaded.zone(None).unwrap();
    let body = postcard::to_stdvec(&request(entry, 1, "ping")).unwrap();
    // ClientMsg::Request is 0x00, then the counter 1: written 0x81 0x00.
    let mut long = vec![VERSION, body[0], 0x81, 0x00];
    long.extend_from_slice(&body[2..]);
    let mut frame = (long.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&long);
    let mut stream = server_raw(server.addr, &cred).await;
    stream.write_all(&frame).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    let response: cmdchan::Response = postcard::from_bytes(&answer[5..]).unwrap();
    assert!(
        matches!(response.body, cmdchan::Body::Err(ref f) if f.code == ErrorCode::Malformed),
        "{response:?}"
    );
    assert!(!server.log().contains("admitted"), "nothing ran");
}

/// The case: a request sent while the previous program's stdin is still open stalled
/// that program to its timeout and lost its input, silently. Now the program's stdin
/// ends there, and the request is refused `stdin open` (18): nothing of it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_the_end_of_stdin_is_refused_stdin_open() {
    use futures::{SinkExt, StreamExt};
    let env = TestEnv::new();
    let policy = env.write(
        "policy.toml",
        "[roles.ops]\ncommands = [\"cat\", \"ping\"]\n[commands.cat]\nprogram = \"/bin/cat\"\nstdin = true\n",
    );
    let server = env.start(&["--policy", policy.to_str().unwrap()]);
    let cred = env.provision("alice", "ops", &[]);
    let loaded = cmdchan::Credential::load(&cred).unwrap();
    let (_, entry) = loaded.zone(None).unwrap();
    let codec =
        cmdchan_common::frame::MsgCodec::<cmdchan::Response, cmdchan::ClientMsg>::new(1 << 20);
    let mut io = tokio_util::codec::Framed::new(server_raw(server.addr, &cred).await, codec);
    io.send(&request(entry, 1, "cat")).await.unwrap();
    let started = io.next().await.unwrap().unwrap();
    assert!(
        matches!(started.body, cmdchan::Body::Started(_)),
        "{started:?}"
    );
    let input = cmdchan::ClientMsg::Input(cmdchan_common::protocol::Input {
        counter: 1,
        data: b"hi\n".to_vec(),
    });
    io.send(&input).await.unwrap();
    io.send(&request(entry, 2, "ping")).await.unwrap();
    let mut answers = Vec::new();
    let done = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(response)) = io.next().await {
            let last = response.counter == 2;
            answers.push(response);
            if last {
                break;
            }
        }
    })
    .await;
    assert!(done.is_ok(), "the program stalled: {answers:?}");
    let exit = answers
        .iter()
        .find(|a| a.counter == 1 && matches!(a.body, cmdchan::Body::Ok(_)));
    assert!(
        exit.is_some(),
        "the program ended at the request: {answers:?}"
    );
    let refused = answers.last().unwrap();
    assert!(
        matches!(refused.body, cmdchan::Body::Err(ref f) if f.code == ErrorCode::StdinOpen),
        "{answers:?}"
    );
}
