//! Soak: for a bounded time, honest clients connect, run commands and leave while others
//! misbehave; then it checks that no answered command was lost or run twice (each run
//! writes its unique token to a file), that honest clients saw no unexpected errors, and
//! that the server's memory returned near where it started. Prints the figures.
//!
//! `scripts/soak [SECONDS]` (default 60). Not part of the test suite.

#![allow(
    clippy::unwrap_used,
    reason = "a soak run reports a failure by panicking"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmdchan::{Client, Credential, Error, ErrorCode, Options, Param, Reply};
use cmdchan_common::keys::Psk;
use cmdchan_tests::{raw_tls_fixed, tcp_from, TestEnv, SERVER_ID};
use tokio::io::AsyncWriteExt;

const HONEST: usize = 24;
const MISBEHAVING: usize = 8;

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ran: AtomicU64,
    busy: AtomicU64,
    unexpected: Mutex<Vec<String>>,
    latencies: Mutex<Vec<Duration>>,
    misbehaved: AtomicU64,
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let env = TestEnv::new();
    let runs = env.path("runs");
    env.script("record.sh", &format!("echo \"$1\" >> {}", runs.display()));
    let policy = format!(
        "[roles.ops]\ncommands = [\"ping\", \"record\"]\n[commands.record]\nprogram = \"{}\"\nargs = [\"{{token}}\"]\n\
         [[commands.record.params]]\nname = \"token\"\ntype = \"string\"\nregex = \"[0-9a-f]+\"\nrequired = true\n",
        env.path("record.sh").display()
    );
    let policy = env.write("policy.toml", &policy);
    let server = env.start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--rate",
        "100000",
        "--burst",
        "100000",
        "--max-executions",
        "16",
        "--handshake-timeout",
        "2s",
        "--freshness-window",
        "5s",
    ]);
    let cred = env.provision("alice", "ops", &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    let answered: Arc<Mutex<HashMap<String, bool>>> = Arc::default();

    runtime.block_on(warm_up(&server, &cred));
    let rss_start = server.rss_kib();
    let mut rss_peak = rss_start;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..HONEST)
        .map(|w| {
            runtime.spawn(honest(
                w,
                server.addr,
                cred.clone(),
                deadline,
                tally.clone(),
                answered.clone(),
            ))
        })
        .chain(
            (0..MISBEHAVING)
                .map(|w| runtime.spawn(misbehave(w, server.addr, deadline, tally.clone()))),
        )
        .collect();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        rss_peak = rss_peak.max(server.rss_kib());
    }
    runtime.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    // Let the 5 s window pass, so every ID of the run may be forgotten, and send one
    // request (pruning happens as IDs are claimed); then memory should be back down.
    std::thread::sleep(Duration::from_secs(7));
    runtime.block_on(warm_up(&server, &cred));
    std::thread::sleep(Duration::from_secs(1));
    let rss_end = server.rss_kib();

    let recorded = std::fs::read_to_string(&runs).unwrap_or_default();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for token in recorded.lines() {
        *counts.entry(token).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let answered = answered.lock().unwrap();
    let lost: Vec<_> = answered
        .keys()
        .filter(|t| !counts.contains_key(t.as_str()))
        .collect();
    let mut lat = tally.latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or_default();
    let unexpected = tally.unexpected.lock().unwrap();

    println!(
        "soak: {:.0} s, {HONEST} honest and {MISBEHAVING} misbehaving workers",
        elapsed.as_secs_f64()
    );
    println!(
        "requests sent {}, programs answered as run {}, busy {}",
        tally.sent.load(Ordering::Relaxed),
        tally.ran.load(Ordering::Relaxed),
        tally.busy.load(Ordering::Relaxed)
    );
    println!(
        "runs recorded {}, answered but not recorded (lost) {}, recorded twice {}",
        recorded.lines().count(),
        lost.len(),
        twice.len()
    );
    println!(
        "misbehaving connections {}",
        tally.misbehaved.load(Ordering::Relaxed)
    );
    println!("latency p50 {:?}, p99 {:?}", pct(50), pct(99));
    println!("server RSS: start {rss_start} KiB, peak {rss_peak} KiB, end {rss_end} KiB");
    println!(
        "unexpected errors {}: {:?}",
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        lost.is_empty(),
        "answered commands that did not run: {lost:?}"
    );
    assert!(twice.is_empty(), "commands that ran twice: {twice:?}");
    assert!(unexpected.is_empty(), "unexpected errors");
    assert!(
        rss_end <= rss_start + 8 * 1024,
        "RSS did not return near its start"
    );
    println!("soak passed");
}

async fn warm_up(server: &cmdchan_tests::Server, cred: &std::path::Path) {
    let mut client = server.client(cred).await;
    for _ in 0..50 {
        client.call("ping", &[]).await.unwrap();
    }
}

async fn honest(
    worker: usize,
    addr: std::net::SocketAddr,
    cred: std::path::PathBuf,
    deadline: Instant,
    tally: Arc<Tally>,
    answered: Arc<Mutex<HashMap<String, bool>>>,
) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        let cred = Credential::load(&cred).unwrap();
        let opts = Options {
            target: Some(SERVER_ID.parse().unwrap()),
            ..Options::default()
        };
        let mut client = match Client::connect(cred, Some(&addr.to_string()), opts).await {
            Ok(c) => c,
            Err(e) => {
                tally
                    .unexpected
                    .lock()
                    .unwrap()
                    .push(format!("connect: {e}"));
                continue;
            }
        };
        for _ in 0..(1 + n % 5) {
            n += 1;
            let token = format!("{worker:04x}{n:012x}");
            let mut req = client.request("record", &[]).unwrap();
            req.params = vec![Param {
                name: "token".into(),
                value: token.clone(),
            }];
            tally.sent.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            match client.run_with_retry(&mut req, |_| {}).await {
                Ok(Reply::Exit(e)) if e.code == Some(0) => {
                    tally.ran.fetch_add(1, Ordering::Relaxed);
                    answered.lock().unwrap().insert(token, true);
                }
                Err(Error::Refused(f)) if f.code == ErrorCode::Busy => {
                    tally.busy.fetch_add(1, Ordering::Relaxed);
                }
                other => tally.unexpected.lock().unwrap().push(format!("{other:?}")),
            }
            tally.latencies.lock().unwrap().push(t.elapsed());
        }
        client.close().await;
    }
}

/// Wrong keys, garbage before and after the handshake, and stalls, from other sources.
async fn misbehave(
    worker: usize,
    addr: std::net::SocketAddr,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let source = format!("127.0.9.{}", 1 + worker);
    // An identity that is not sealed for the zone, with any key: what a stranger has.
    let identity = "c2.1.mallory";
    let wrong = Psk::from_hex(&"ee".repeat(32)).unwrap();
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        tally.misbehaved.fetch_add(1, Ordering::Relaxed);
        match i % 3 {
            0 => {
                let _ = raw_tls_fixed(&source, addr, identity, &wrong).await;
            }
            1 => {
                if let Ok(mut tcp) = tcp_from(&source, addr).await {
                    let _ = tcp
                        .write_all(b"\x16\x03\x01\x00\x05garbage that is not TLS")
                        .await;
                }
            }
            _ => {
                if let Ok(tcp) = tcp_from(&source, addr).await {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(tcp);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
