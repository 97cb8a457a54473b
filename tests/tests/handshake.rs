//! The TLS-PSK handshake: interop with OpenSSL's tools, and every refused offer.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use cmdchan::{Client, Credential, Options};
use cmdchan_tests::{run, system, text, TestEnv};

/// Runs `openssl s_client` against `addr` with `args`; returns everything it printed.
fn s_client(addr: &str, args: &[&str]) -> String {
    let mut cmd = system("openssl");
    cmd.args(["s_client", "-connect", addr]).args(args);
    let out = run(&mut cmd);
    text(&out.stdout) + &text(&out.stderr)
}

/// Spawns an OpenSSL tool with pipes and reads its stdout up to the first line that
/// contains `marker`. Its stdin stays open: s_server and s_client end the session when
/// their stdin closes.
fn spawn_until(mut cmd: Command, marker: &str) -> (Child, BufReader<ChildStdout>, String) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        let read = stdout.read_line(&mut line).unwrap();
        assert!(read > 0, "the tool exited before printing {marker:?}");
    }
    (child, stdout, line)
}

fn psk_args<'a>(identity: &'a str, psk: &'a str, cipher: &'a str) -> Vec<&'a str> {
    vec![
        "-tls1_2",
        "-psk_identity",
        identity,
        "-psk",
        psk,
        "-cipher",
        cipher,
    ]
}

#[test]
fn openssl_s_client_completes_with_the_psk_from_admin_psk() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&["--dhe"]);
    let addr = server.addr.to_string();
    let out = s_client(
        &addr,
        &psk_args(&alice, &psk, "ECDHE-PSK-CHACHA20-POLY1305"),
    );
    assert!(
        out.contains("Cipher is ECDHE-PSK-CHACHA20-POLY1305"),
        "{out}"
    );
    assert!(out.contains("Server Temp Key: X25519"), "{out}");
    // The DHE suites use the RFC 7919 ffdhe3072 group.
    let out = s_client(&addr, &psk_args(&alice, &psk, "DHE-PSK-AES256-GCM-SHA384"));
    assert!(out.contains("Cipher is DHE-PSK-AES256-GCM-SHA384"), "{out}");
    assert!(out.contains("Server Temp Key: DH, 3072 bits"), "{out}");
}

#[test]
fn server_prefers_ecdhe_psk_chacha20_when_a_client_offers_all_four() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&["--dhe"]);
    let all = "DHE-PSK-AES128-GCM-SHA256:DHE-PSK-AES256-GCM-SHA384:ECDHE-PSK-CHACHA20-POLY1305";
    let out = s_client(&server.addr.to_string(), &psk_args(&alice, &psk, all));
    assert!(
        out.contains("Cipher is ECDHE-PSK-CHACHA20-POLY1305"),
        "{out}"
    );
}

#[tokio::test]
async fn cmdchan_client_completes_a_handshake_with_openssl_s_server() {
    let env = TestEnv::new();
    let cred_path = env.provision("alice", "operator", &[]);
    let (_, psk) = env.psk_pair("alice");
    let mut cmd = system("openssl");
    cmd.args([
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-nocert",
        "-tls1_2",
        "-naccept",
        "1",
    ]);
    cmd.args([
        "-psk_identity",
        "alice",
        "-psk",
        &psk,
        "-cipher",
        "ECDHE-PSK-CHACHA20-POLY1305",
    ]);
    let (mut child, mut stdout, line) = spawn_until(cmd, "ACCEPT");
    let addr = line.trim().trim_start_matches("ACCEPT ").to_owned();
    let cred = Credential::load(&cred_path).unwrap();
    let opts = Options {
        target: Some("anything".parse().unwrap()),
        ..Options::default()
    };
    let client = Client::connect(cred, Some(&addr), opts).await;
    assert!(client.is_ok(), "{:?}", client.err());
    client.unwrap().close().await;
    drop(child.stdin.take());
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let _ = child.wait();
    assert!(rest.contains("ECDHE-PSK-CHACHA20-POLY1305"), "{rest}");
}

#[test]
fn plain_psk_rsa_psk_and_cbc_suites_are_refused() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&[]);
    let addr = server.addr.to_string();
    for suite in [
        "PSK-AES128-GCM-SHA256",
        "RSA-PSK-AES128-GCM-SHA256",
        "ECDHE-PSK-AES128-CBC-SHA256",
        "DHE-PSK-AES128-CBC-SHA256",
    ] {
        let out = s_client(&addr, &psk_args(&alice, &psk, suite));
        assert!(out.contains("Cipher is (NONE)"), "{suite}: {out}");
        assert!(out.contains("SSL alert number 40"), "{suite}: {out}");
    }
    assert!(server.wait_for_log("no shared cipher"));
}

#[test]
fn tls_1_1_and_tls_1_3_are_refused() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&[]);
    let addr = server.addr.to_string();
    let v11 = s_client(
        &addr,
        &[
            "-tls1_1",
            "-psk_identity",
            "alice",
            "-psk",
            &psk,
            "-cipher",
            "PSK:@SECLEVEL=0",
        ],
    );
    let v13 = s_client(&addr, &["-tls1_3", "-psk_identity", &alice, "-psk", &psk]);
    for out in [v11, v13] {
        assert!(
            out.contains("Cipher is (NONE)") && out.contains("SSL alert number 70"),
            "{out}"
        );
    }
    assert!(server.wait_for_log("unsupported protocol"));
}

#[test]
fn wrong_key_and_unknown_identity_look_the_same_to_the_client_but_not_in_the_log() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let wrong = "ab".repeat(32);
    let server = env.start(&[]);
    let addr = server.addr.to_string();
    let suite = "ECDHE-PSK-CHACHA20-POLY1305";
    let wrong_key = s_client(&addr, &psk_args(&alice, &wrong, suite));
    let unknown = s_client(&addr, &psk_args("not a name!", &psk, suite));
    let alert = |out: &str| {
        out.lines()
            .find(|l| l.contains("SSL alert number"))
            .map(|l| l.split(':').nth(5).unwrap_or("").to_owned())
    };
    assert_eq!(
        alert(&wrong_key),
        Some("sslv3 alert bad record mac".to_owned()),
        "{wrong_key}"
    );
    assert_eq!(alert(&unknown), alert(&wrong_key), "{unknown}");
    assert!(server.wait_for_log("key mismatch"));
    assert!(server.wait_for_log("unknown identity"));
    assert!(server.log_lines("key mismatch")[0].contains("client=alice"));
    assert!(server.log_lines("unknown identity")[0].contains("peer=127.0.0.1:"));
}

#[test]
fn cmdchan_with_a_key_from_another_master_fails_the_handshake_with_exit_69() {
    let env = TestEnv::new();
    let other = TestEnv::new();
    let server = env.start(&[]);
    let foreign = other.provision("alice", "operator", &[]);
    let unknown_to_server = other.provision("mallory", "operator", &[]);
    let a = env.cmdchan(&server, &foreign, &["ping"]);
    let b = env.cmdchan(&server, &unknown_to_server, &["ping"]);
    assert_eq!((a.status.code(), b.status.code()), (Some(69), Some(69)));
    let msg = |o: &std::process::Output| {
        text(&o.stderr)
            .replace("mallory", "NAME")
            .replace("alice", "NAME")
    };
    assert_eq!(msg(&a), msg(&b), "the two failures must read the same");
    assert!(
        text(&a.stderr).contains("TLS handshake"),
        "{}",
        text(&a.stderr)
    );
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_dropped_after_the_timeout() {
    let env = TestEnv::new();
    let server = env.start(&["--handshake-timeout", "1s"]);
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        tcp.read(&mut buf).unwrap(),
        0,
        "server should close the connection"
    );
    assert!(server.wait_for_log("timed out after 1s"));
}

#[test]
fn sessions_are_never_resumed() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&[]);
    let mut args = psk_args(&alice, &psk, "ECDHE-PSK-CHACHA20-POLY1305");
    args.push("-reconnect");
    let out = s_client(&server.addr.to_string(), &args);
    let new = out
        .lines()
        .filter(|l| l.starts_with("New, TLSv1.2"))
        .count();
    assert_eq!(
        new, 6,
        "the first connection and five reconnects are all full handshakes:\n{out}"
    );
    assert!(!out.contains("Reused"), "{out}");
}

#[test]
fn renegotiation_is_refused() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&[]);
    let mut cmd = system("openssl");
    cmd.args(["s_client", "-connect", &server.addr.to_string()]);
    cmd.args(psk_args(&alice, &psk, "ECDHE-PSK-CHACHA20-POLY1305"));
    let (mut child, _stdout, _) = spawn_until(cmd, "Cipher is");
    // s_client's interactive "R" asks for a renegotiation.
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"R\n").unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert!(err.contains("no renegotiation"), "{err}");
}

/// The attack: DHE-PSK makes the server generate an ffdhe3072 key (~9 ms of CPU) for
/// any ClientHello, before the client proves anything. It is off unless asked for.
#[test]
fn dhe_psk_is_refused_unless_the_server_is_told_to_take_it() {
    let env = TestEnv::new();
    let (alice, psk) = env.psk_pair("alice");
    let server = env.start(&[]);
    let out = s_client(
        &server.addr.to_string(),
        &psk_args(&alice, &psk, "DHE-PSK-AES256-GCM-SHA384"),
    );
    assert!(
        out.contains("alert handshake failure")
            || out.contains("no shared cipher")
            || out.contains("Cipher is (NONE)"),
        "{out}"
    );
    assert!(!out.contains("Cipher is DHE-PSK"), "{out}");
}

/// A hand-made TLS 1.2 client: ClientHello for ECDHE-PSK-CHACHA20-POLY1305 over X25519,
/// then a ClientKeyExchange whose PSK identity is `identity_len` bytes (no OpenSSL
/// client sends one over 256 bytes). Returns the description of the alert the server
/// sent back.
fn alert_for_identity_of(addr: std::net::SocketAddr, identity_len: usize) -> u8 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let record = |kind: u8, body: &[u8]| {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    };
    let handshake = |kind: u8, body: &[u8]| {
        let mut h = vec![kind];
        h.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        h.extend_from_slice(body);
        h
    };
    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // no session ID
    hello.extend_from_slice(&[0, 2, 0xcc, 0xac]); // ECDHE-PSK-CHACHA20-POLY1305
    hello.extend_from_slice(&[1, 0]); // no compression
    let extensions = [
        &[0x00, 0x0a, 0, 4, 0, 2, 0x00, 0x1d][..], // supported_groups: x25519
        &[0x00, 0x0b, 0, 2, 1, 0][..],             // ec_point_formats: uncompressed
    ]
    .concat();
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    tcp.write_all(&record(22, &handshake(1, &hello))).unwrap();
    // Read the server's flight up to ServerHelloDone (handshake type 14).
    let mut flight = Vec::new();
    let mut buf = [0u8; 4096];
    while !flight.windows(4).any(|w| w == [14, 0, 0, 0]) {
        let n = tcp.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the server closed before ServerHelloDone: {flight:?}"
        );
        flight.extend_from_slice(&buf[..n]);
    }
    let mut kx = (identity_len as u16).to_be_bytes().to_vec();
    kx.extend(vec![b'a'; identity_len]);
    kx.push(32);
    kx.extend_from_slice(&[9; 32]); // an X25519 public key
                                    // The server may send its alert and close as soon as it has the key exchange: the
                                    // rest of the flight may then meet a closed socket, and the alert is read anyway.
    let _ = tcp.write_all(&record(22, &handshake(16, &kx)));
    let _ = tcp.write_all(&record(20, &[1])); // ChangeCipherSpec
    let _ = tcp.write_all(&record(22, &[0; 40])); // a "Finished" that cannot decrypt
    let mut reply = Vec::new();
    while reply.len() < 7 {
        let n = tcp.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        reply.get(..6),
        Some(&[21, 3, 3, 0, 2, 2][..]),
        "not a fatal alert: {reply:?}"
    );
    reply[6]
}

/// The probe: an identity over 256 bytes got alert 50 (`decode_error`) where every
/// other refused identity or key gets alert 20 (`bad_record_mac`).
#[test]
fn an_identity_over_256_bytes_gets_the_same_alert_as_a_wrong_key() {
    let env = TestEnv::new();
    let server = env.start(&[]);
    assert_eq!(
        alert_for_identity_of(server.addr, 20),
        20,
        "an unknown short identity"
    );
    assert_eq!(
        alert_for_identity_of(server.addr, 300),
        20,
        "an identity over 256 bytes"
    );
}
