//! Replay-store benchmark: claims per second, p50/p99 latency of one check-and-insert,
//! and bytes per live ID, for the memory, file (default) and Redis stores.
//!
//! `cargo bench -p cmdchan-server --bench replay [-- --quick]`. It starts its own
//! `redis-server` on a free loopback port (install it with `apt-get install redis-server`;
//! without it the Redis rows say so instead of being skipped silently).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cmdchan_server::replay::{Entry, Record, State, Store, StoreOptions, StoreSpec};

/// IDs inserted to measure bytes per live ID.
const FILL: u64 = 1_000_000;
/// Claims timed one by one for the latency percentiles.
const SAMPLES: u64 = 20_000;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let fill = if quick { FILL / 10 } else { FILL };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    println!("| store | claims/s (1 client, at {fill} live IDs) | p50 | p99 | claims/s (64 clients, filling) | memory per live ID | disk per live ID |");
    println!("|---|---|---|---|---|---|---|");
    let file = StoreSpec::File(dir.path().join("replay"));
    for (name, spec) in [
        ("memory", StoreSpec::Memory),
        ("file (default)", file.clone()),
    ] {
        let row = runtime.block_on(measure(&spec, fill, rss_bytes, Some(&spec)));
        print_row(name, &row);
    }
    match RedisServer::start() {
        Some(redis) => {
            let spec = StoreSpec::parse(&redis.url()).expect("url");
            let row = runtime.block_on(measure(&spec, fill, || redis.used_memory(), None));
            print_row("redis (loopback)", &row);
        }
        None => println!(
            "| redis | redis-server is not installed: apt-get install redis-server | | | | | |"
        ),
    }
    println!("\n{fill} IDs filled per store by 64 concurrent tasks; then latency over {SAMPLES} sequential claims with the store at that fill. Claims are durable (a program's): the file store writes each before it answers.");
    println!("Memory per ID: growth of this process's RSS (memory, file) or of Redis's used_memory (redis).");
}

struct Row {
    sequential: f64,
    p50: Duration,
    p99: Duration,
    concurrent: f64,
    memory_per_id: f64,
    disk_per_id: f64,
}

/// Fills the store with `fill` live IDs from 64 tasks (measuring its growth), then
/// times claims one by one at that fill (durable claims, as a program's are).
async fn measure(
    spec: &StoreSpec,
    fill: u64,
    size: impl Fn() -> u64,
    file: Option<&StoreSpec>,
) -> Row {
    let store = std::sync::Arc::new(
        Store::open(
            spec,
            &StoreOptions::with_max(10_000_000),
            0,
            Default::default(),
        )
        .await
        .expect("store"),
    );
    let entry = Entry {
        client: "bench-client".into(),
        digest: 1,
        state: State::Running,
    };
    // Real time: the store's sweeper drops what expired by the wall clock.
    let now = cmdchan_common::time::now();
    let until = now + 3_600;
    let before = size();
    let disk_before = disk(file);
    let started = Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let (store, entry) = (store.clone(), entry.clone());
            tokio::spawn(async move {
                for i in (t..fill).step_by(64) {
                    store
                        .claim(
                            &Record {
                                id: id(i),
                                until,
                                entry: entry.clone(),
                            },
                            now,
                            true,
                        )
                        .await
                        .expect("claim");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let concurrent = fill as f64 / started.elapsed().as_secs_f64();
    let memory_per_id = size().saturating_sub(before) as f64 / fill as f64;
    let disk_per_id = disk(file).saturating_sub(disk_before) as f64 / fill as f64;
    let mut latencies = Vec::with_capacity(SAMPLES as usize);
    let started = Instant::now();
    for i in fill..fill + SAMPLES {
        let t = Instant::now();
        store
            .claim(
                &Record {
                    id: id(i),
                    until,
                    entry: entry.clone(),
                },
                now,
                true,
            )
            .await
            .expect("claim");
        latencies.push(t.elapsed());
    }
    let sequential = SAMPLES as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: usize| latencies[latencies.len() * p / 100];
    Row {
        sequential,
        p50: pct(50),
        p99: pct(99),
        concurrent,
        memory_per_id,
        disk_per_id,
    }
}

fn id(i: u64) -> [u8; 16] {
    let mut id = [0x5a; 16];
    id[..8].copy_from_slice(&i.to_be_bytes());
    id
}

fn print_row(name: &str, r: &Row) {
    println!(
        "| {name} | {:.0} | {:.1} µs | {:.1} µs | {:.0} | {:.0} B | {:.0} B |",
        r.sequential,
        r.p50.as_secs_f64() * 1e6,
        r.p99.as_secs_f64() * 1e6,
        r.concurrent,
        r.memory_per_id,
        r.disk_per_id
    );
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.unwrap_or(0) * 1024
}

/// The log's size, when the store is the file store.
fn disk(file: Option<&StoreSpec>) -> u64 {
    match file {
        Some(StoreSpec::File(dir)) => std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
        _ => 0,
    }
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if server.info().is_some() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn info(&self) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "INFO", "memory"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Redis's own count of bytes it holds for data (`used_memory`).
    fn used_memory(&self) -> u64 {
        let info = self.info().unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
