//! Limits enforced before TLS: the allowlist, the connection caps and the penalties for
//! failed handshakes; and the server stays responsive while hundreds of clients stall.

use std::path::Path;
use std::time::{Duration, Instant};

use cmdchan::Reply;
use cmdchan_common::keys::Psk;
use cmdchan_tests::{closed_within, raw_tls_fixed, tcp_from, text, Server, TestEnv};

const QUICK: Duration = Duration::from_millis(500);

#[tokio::test]
async fn the_allowlist_refuses_other_sources_before_tls() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    // Two servers in one scratch directory: the first keeps its IDs in memory.
    let closed = env.start(&["--allow", "10.0.0.0/8", "--replay-store", "memory"]);
    let mut tcp = tcp_from("127.0.0.1", closed.addr).await.unwrap();
    assert!(closed_within(&mut tcp, QUICK).await, "closed at once");
    assert!(closed.wait_for_log("connection refused before TLS: source not in the allowlist"));
    assert!(
        closed.log_lines("handshake").is_empty(),
        "no TLS work was spent"
    );

    let open = env.start(&["--allow", "10.0.0.0/8,127.0.0.1/32"]);
    assert_eq!(env.cmdchan(&open, &cred, &["ping"]).status.code(), Some(0));
}

#[tokio::test]
async fn the_global_and_per_source_caps_close_extra_connections_at_once() {
    let env = TestEnv::new();
    let server = env.start(&[
        "--max-connections",
        "3",
        "--max-connections-per-source",
        "2",
    ]);
    let mut a1 = tcp_from("127.0.0.2", server.addr).await.unwrap();
    let mut a2 = tcp_from("127.0.0.2", server.addr).await.unwrap();
    let mut a3 = tcp_from("127.0.0.2", server.addr).await.unwrap();
    assert!(
        closed_within(&mut a3, QUICK).await,
        "a third connection from one source"
    );
    let mut b1 = tcp_from("127.0.0.3", server.addr).await.unwrap();
    let mut c1 = tcp_from("127.0.0.4", server.addr).await.unwrap();
    assert!(
        closed_within(&mut c1, QUICK).await,
        "a fourth connection in all"
    );
    for held in [&mut a1, &mut a2, &mut b1] {
        assert!(
            !closed_within(held, Duration::from_millis(200)).await,
            "connections under the caps stay open"
        );
    }
    drop(a1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c2 = tcp_from("127.0.0.4", server.addr).await.unwrap();
    assert!(
        !closed_within(&mut c2, Duration::from_millis(200)).await,
        "a freed place is reused"
    );
    assert!(server.wait_for_log("per-source connection limit reached"));
}

#[tokio::test]
async fn penalties_start_after_failed_handshakes_grow_and_reset() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[
        "--penalty-after",
        "2",
        "--penalty-base",
        "1s",
        "--penalty-max",
        "30s",
    ]);
    let (identity, _) = env.psk_pair("alice");
    let wrong = Psk::from_hex(&"ab".repeat(32)).unwrap();
    let fail_twice = || async {
        for _ in 0..2 {
            assert!(raw_tls_fixed("127.0.0.1", server.addr, &identity, &wrong)
                .await
                .is_err());
        }
    };
    fail_twice().await;
    assert!(server.wait_for_log("refusing 127.0.0.1 for 1s"));
    let mut blocked = tcp_from("127.0.0.1", server.addr).await.unwrap();
    assert!(
        closed_within(&mut blocked, QUICK).await,
        "refused while penalized"
    );
    assert_eq!(
        env.cmdchan(&server, &cred, &["ping"]).status.code(),
        Some(69),
        "even with the right key"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    fail_twice().await;
    assert!(
        server.wait_for_log("refusing 127.0.0.1 for 2s"),
        "the second penalty doubles"
    );
    assert_eq!(
        server.log_lines("penalty:").len(),
        2,
        "one log line per penalty, not per attempt"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        env.cmdchan(&server, &cred, &["ping"]).status.code(),
        Some(0)
    );
    fail_twice().await;
    assert!(
        server.wait_for_lines("refusing 127.0.0.1 for 1s", 2).len() == 2,
        "a good handshake reset it"
    );
}

/// 500 clients that never send a byte and 200 that stop halfway through a ClientHello,
/// from other sources, while an honest client keeps pinging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_client_is_answered_within_a_second_while_700_others_stall() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--handshake-timeout", "5s"]);
    let mut client = server.client(&cred).await;
    let mut stalled = Vec::new();
    // A TLS record header promising 512 bytes of handshake, then only the first few.
    let partial_hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for i in 0..700u32 {
        let source = format!("127.0.{}.{}", 10 + i / 50, 1 + i % 50);
        let mut tcp = tcp_from(&source, server.addr).await.unwrap();
        if i >= 500 {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &partial_hello)
                .await
                .unwrap();
        }
        stalled.push(tcp);
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = Instant::now();
        assert_eq!(client.call("ping", &[]).await.unwrap(), Reply::Pong);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest ping under attack: {slowest:?}"
    );
    let fresh = env.cmdchan(&server, &cred, &["ping"]);
    assert_eq!(
        fresh.status.code(),
        Some(0),
        "a new honest connection too: {}",
        text(&fresh.stderr)
    );
    println!("slowest of 30 pings with 700 stalled connections: {slowest:?}");
    drop(stalled);
}

#[test]
fn a_client_over_its_rate_is_refused_with_a_retry_after() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--rate", "0.5", "--burst", "2"]);
    let error = third_ping_refused(&env, &server, &cred);
    assert_eq!(error["code"], "rate limited");
    let wait = error["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 2000, "{wait}");
    let other = env.provision("bob", "operator", &[]);
    assert_eq!(
        env.cmdchan(&server, &other, &["ping"]).status.code(),
        Some(0),
        "bob has his own bucket"
    );
}

#[tokio::test]
async fn revoking_a_client_by_sighup_closes_its_live_connection_and_fails_its_next_handshake() {
    let env = TestEnv::new();
    let alice = env.provision("alice", "operator", &[]);
    let bob = env.provision("bob", "operator", &[]);
    let config = env.write("server.toml", "");
    let server = env.start(&["--config", config.to_str().unwrap()]);
    let mut live = server.client(&alice).await;
    let mut other = server.client(&bob).await;
    assert_eq!(live.call("ping", &[]).await.unwrap(), Reply::Pong);

    std::fs::write(&config, "revoked = [\"alice\"]\n").unwrap();
    server.signal("HUP");
    let closed = server.wait_for_log("closing the connection: client alice is revoked (reloaded)");
    assert!(closed, "{}", server.log());
    assert!(
        live.call("ping", &[]).await.is_err(),
        "the live connection was closed"
    );
    let again = env.cmdchan(&server, &alice, &["ping"]);
    assert_eq!(again.status.code(), Some(69), "{}", text(&again.stderr));
    assert!(server.wait_for_log("handshake refused: client alice is revoked"));
    assert_eq!(
        other.call("ping", &[]).await.unwrap(),
        Reply::Pong,
        "bob keeps his connection"
    );
}

#[tokio::test]
async fn a_grant_that_expires_on_an_open_connection_is_refused_from_the_next_request() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &["--expires", "2s"]);
    let server = env.start(&[]);
    let mut client = server.client(&cred).await;
    assert_eq!(client.call("ping", &[]).await.unwrap(), Reply::Pong);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    match client.call("ping", &[]).await {
        Err(cmdchan::Error::Refused(f)) => assert_eq!(f.code, cmdchan::ErrorCode::Expired),
        other => panic!("expected expired, got {other:?}"),
    }
}

#[test]
fn a_server_holding_its_limit_of_ids_refuses_rather_than_forgets() {
    // Forgetting a live ID would let its request be replayed: past the limit the
    // server fails closed instead.
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&["--max-remembered-ids", "2"]);
    let error = third_ping_refused(&env, &server, &cred);
    assert_eq!(error["code"], "store unavailable");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("limit of 2"), "{message}");
}

/// Two pings pass, the third is refused (exit 75); returns its JSON error.
fn third_ping_refused(env: &TestEnv, server: &Server, cred: &Path) -> serde_json::Value {
    for _ in 0..2 {
        assert_eq!(env.cmdchan(server, cred, &["ping"]).status.code(), Some(0));
    }
    let out = env.cmdchan(server, cred, &["--json", "ping"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["error"].clone()
}

/// A bastion many operators share: one stale credential failing its handshakes again
/// and again must not lock the others out, while any other source is penalized.
#[tokio::test]
async fn a_source_on_the_exemption_list_is_never_penalized() {
    let env = TestEnv::new();
    let cred = env.provision("alice", "operator", &[]);
    let server = env.start(&[
        "--penalty-after",
        "2",
        "--penalty-base",
        "30s",
        "--penalty-exempt",
        "127.0.0.1/32,10.9.0.0/16",
    ]);
    let (identity, _) = env.psk_pair("alice");
    let stale = Psk::from_hex(&"ab".repeat(32)).unwrap();
    for source in ["127.0.0.1", "127.0.0.2"] {
        for _ in 0..6 {
            assert!(raw_tls_fixed(source, server.addr, &identity, &stale)
                .await
                .is_err());
        }
    }
    assert!(server.wait_for_log("refusing 127.0.0.2 for 30s"));
    assert!(
        server.log_lines("refusing 127.0.0.1").is_empty(),
        "the exempt source was penalized"
    );
    assert_eq!(
        env.cmdchan(&server, &cred, &["ping"]).status.code(),
        Some(0),
        "a colleague on the bastion still gets in"
    );
    let mut penalized = tcp_from("127.0.0.2", server.addr).await.unwrap();
    assert!(closed_within(&mut penalized, QUICK).await);
}
