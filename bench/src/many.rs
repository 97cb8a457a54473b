//! `cmdchan-bench many`: the `cmdchan` command against 10,000 servers. Servers are
//! simulated cheaply — many listeners in a few processes (`cmdchan-bench simulate`) —
//! but every connection is a real TLS-PSK handshake on cmdchan's own server context (the
//! identity opened and the PSK derived from the zone key, as a server does) and a real
//! request decoded and answered in protocol frames: `ping` with `Pong`,
//! `revocations.push` with the list's state. What is measured is the client: wall time
//! at `--parallel 512`, its CPU per server against one handshake's, its peak memory with
//! `--gather` and `--json`, JSON Lines per second, and a revocation list pushed to all.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use openssl::ssl::{Ssl, SslContext};
use tokio::net::TcpListener;
use tokio_openssl::SslStream;
use tokio_util::codec::Framed;

use cmdchan_common::frame::{MsgCodec, DEFAULT_MAX_FRAME};
use cmdchan_common::protocol::{Body, ClientMsg, ListState, Reply, Response};
use cmdchan_common::{tls, zonekey};

use crate::contenders::{Keys, Tools};

/// Targets (the issue's): wall time, client memory, client CPU per server.
const WALL: f64 = 15.0;
const MEMORY_MIB: f64 = 512.0;
const CPU_HANDSHAKES: f64 = 1.5;
/// Listeners per loopback address (127.0.1.X, from port [`FIRST_PORT`]).
const PER_ADDRESS: usize = 250;
const FIRST_PORT: u16 = 17433;

#[derive(Debug, clap::Args)]
pub struct SimulateOpts {
    #[arg(long = "zone-key")]
    zone_key: std::path::PathBuf,
    /// The first and the count of the servers this process simulates.
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
}

/// Where simulated server `i` listens.
fn address(i: usize) -> SocketAddr {
    let host = u8::try_from(1 + i / PER_ADDRESS).unwrap_or(u8::MAX);
    let port = FIRST_PORT + u16::try_from(i % PER_ADDRESS).unwrap_or(0);
    SocketAddr::from((Ipv4Addr::new(127, 0, 1, host), port))
}

/// One simulator process: its listeners, each answering every connection.
pub fn simulate(opts: SimulateOpts) -> anyhow::Result<()> {
    raise_fd_limit()?;
    let key = zonekey::load(&opts.zone_key).context("reading the zone key")?;
    let ctx = Arc::new(tls::server_context(
        vec![key.into()],
        tls::FFDHE3072_PEM,
        false,
        |_| None,
    )?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        for i in opts.first..opts.first + opts.count {
            let listener = TcpListener::bind(address(i)).await?;
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let ctx = Arc::clone(&ctx);
                    tokio::spawn(async move {
                        let _ = answer(&ctx, tcp).await;
                    });
                }
            });
        }
        eprintln!("ready");
        std::future::pending::<anyhow::Result<()>>().await
    })
}

async fn answer(ctx: &SslContext, tcp: tokio::net::TcpStream) -> anyhow::Result<()> {
    let mut tls = SslStream::new(Ssl::new(ctx)?, tcp)?;
    Pin::new(&mut tls).accept().await?;
    let mut frames = Framed::new(tls, MsgCodec::<ClientMsg, Response>::new(DEFAULT_MAX_FRAME));
    while let Some(msg) = frames.next().await {
        let ClientMsg::Request(req) = msg? else {
            continue;
        };
        let reply = match req.command.as_str() {
            "ping" => Reply::Pong,
            _ => Reply::Revocations(ListState {
                version: 1,
                issued_at: 0,
                applied: true,
            }),
        };
        frames
            .send(&Response {
                counter: req.counter,
                id: req.id,
                body: Body::Ok(reply),
            })
            .await?;
    }
    Ok(())
}

fn raise_fd_limit() -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// Simulator processes, stopped when dropped.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn main(servers: usize, parallel: usize, processes: usize) -> anyhow::Result<ExitCode> {
    raise_fd_limit()?;
    let tools = Tools::find()?;
    let keys = Keys::provision(&tools)?;
    let cred = crate::fanout::provision(&tools, &keys)?;
    let per = servers.div_ceil(processes.max(1));
    let mut fleet = Fleet(Vec::new());
    for p in 0..processes {
        let first = p * per;
        let count = per.min(servers.saturating_sub(first));
        let mut child = Command::new(&tools.me)
            .args(["simulate", "--zone-key"])
            .arg(&keys.zone_key)
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        fleet.0.push(child);
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("a simulator did not start: {line}");
        }
    }
    let inventory = keys.dir.path().join("inventory.toml");
    let listed: String = (0..servers)
        .map(|i| format!("[servers.s{i:05}]\naddress = \"{}\"\n", address(i)))
        .collect();
    std::fs::write(&inventory, listed)?;
    let client = tools.server.with_file_name("cmdchan");
    let handshake = handshake_cpu(&cred)?;
    println!("{servers} simulated servers in {processes} processes; one handshake costs the client library {:.0} µs (mean of 1000)", handshake * 1e6);
    println!("| view | wall, s | client CPU per server, µs | × one handshake | client peak memory, MiB | JSON Lines per s |");
    println!("|---|--:|--:|--:|--:|--:|");
    let mut met = true;
    for view in [&["--gather"][..], &["--json"][..]] {
        let mut args = vec!["--on", "*", "--parallel"];
        let parallel = parallel.to_string();
        args.push(&parallel);
        args.extend(view);
        args.push("ping");
        let run = measure(&client, &cred, &inventory, keys.dir.path(), &args)?;
        let per_server = run.cpu / servers as f64;
        let lines_per_s = run.lines as f64 / run.wall;
        println!(
            "| {} | {:.2} | {:.0} | {:.2} | {:.0} | {} |",
            view.join(" "),
            run.wall,
            per_server * 1e6,
            per_server / handshake,
            run.peak_mib,
            if view == ["--json"] {
                format!("{lines_per_s:.0}")
            } else {
                "–".into()
            },
        );
        if run.ok != servers && view == ["--json"] {
            bail!("{} of {servers} servers answered", run.ok);
        }
        met &= run.wall <= WALL
            && run.peak_mib <= MEMORY_MIB
            && per_server / handshake <= CPU_HANDSHAKES;
    }
    // A signed revocation list pushed to every server.
    let list = keys.dir.path().join("revocations.list");
    let status = Command::new(&tools.server)
        .args(["admin", "revoke", "--root"])
        .arg(keys.dir.path().join("root.key"))
        .args(["--name", "mallory", "--out"])
        .arg(&list)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("admin revoke failed");
    }
    let parallel = parallel.to_string();
    let push = [
        "--on",
        "*",
        "--parallel",
        &parallel,
        "--json",
        "revocations",
        "push",
        list.to_str().context("path")?,
    ];
    let run = measure(&client, &cred, &inventory, keys.dir.path(), &push)?;
    println!(
        "a signed revocation list pushed to {servers} servers in {:.2} s, {} answered (simulated servers answer at once; `fanout` times 200 real ones applying it)",
        run.wall, run.ok
    );
    println!(
        "targets: wall ≤ {WALL} s, client memory ≤ {MEMORY_MIB} MiB, client CPU per server ≤ {CPU_HANDSHAKES} handshakes — {}",
        if met { "met" } else { "MISSED" }
    );
    drop(fleet);
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct Measured {
    wall: f64,
    cpu: f64,
    peak_mib: f64,
    lines: usize,
    ok: usize,
}

/// Runs `cmdchan` with `args` under /usr/bin/time: wall time, CPU (user + system), peak
/// resident memory, and its stdout's lines (how many say `"ok":true`).
fn measure(
    client: &Path,
    cred: &Path,
    inventory: &Path,
    cache: &Path,
    args: &[&str],
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M"])
        .arg(client)
        .arg("--cred")
        .arg(cred)
        .arg("--inventory")
        .arg(inventory)
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .context("/usr/bin/time (apt-get install time)")?;
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "cmdchan {args:?} failed ({}): {}",
            out.status,
            stderr.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        );
    }
    let last = stderr.lines().last().unwrap_or_default();
    let fields: Vec<f64> = last
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, system, kib] = fields[..] else {
        bail!("cmdchan {args:?}: {stderr}");
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(Measured {
        wall,
        cpu: user + system,
        peak_mib: kib / 1024.0,
        lines: stdout.lines().count(),
        ok: stdout.lines().filter(|l| l.contains("\"ok\":true")).count(),
    })
}

/// The client library's CPU for one handshake (connect and close), against simulated
/// server 0, the fan-out bench's reference.
fn handshake_cpu(cred: &Path) -> anyhow::Result<f64> {
    const RUNS: usize = 1000;
    let connector = cmdchan::Connector::new(Arc::new(cmdchan::Credential::load(cred)?))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = address(0).to_string();
    let (cpu, _) = crate::fanout::cpu_of(|| {
        runtime.block_on(async {
            for _ in 0..RUNS {
                let options = cmdchan::Options {
                    target: Some(cmdchan::Ident::new("s00000")?),
                    ..cmdchan::Options::default()
                };
                connector.connect(Some(&addr), options).await?.close().await;
            }
            anyhow::Ok(())
        })
    })?;
    Ok(cpu / RUNS as f64)
}
