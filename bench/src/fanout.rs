//! `cmdchan-bench fanout`: one command on N servers (real `cmdchan-server` processes on
//! loopback) through the client library's fan-out, beside one handshake's client CPU
//! measured in the same run. Prints wall time, client CPU per server, the client's peak
//! memory and how much of the wall time CPU explains; exits non-zero when the client CPU
//! per server passes 1.5 × one handshake's, or a fan-out `job status` costs the client
//! more per server than a fan-out `ping` (10 % allowed for noise).

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use cmdchan::fanout::{self, Event, Outcome, Plan};
use cmdchan::inventory::Host;
use cmdchan::{Connector, Credential, Ident, Options};

use crate::contenders::{Keys, Running, Tools};

/// Target: a server in a fan-out costs the client at most this many handshakes.
const TARGET: f64 = 1.5;
/// Handshakes timed one after the other for the reference.
const HANDSHAKES: usize = 1000;
/// Target: a server in a fan-out `ping` costs the client at most this many times the
/// server's CPU for one handshake, measured in the same run.
const AGAINST_SERVER: f64 = 1.3;
/// Target: a fan-out `job status` costs the client at most this many fan-out `ping`s
/// per server (the same work: a handshake, one request, one small reply; the margin is
/// the runs' noise).
const JOB_STATUS: f64 = 1.10;

pub fn main(servers: usize, rounds: usize, python: Option<&Path>) -> anyhow::Result<ExitCode> {
    let tools = Tools::find()?;
    let keys = Keys::provision(&tools)?;
    let policy = keys.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[roles.fleet]\ncommands = [\"ping\", \"true\"]\n[commands.true]\nprogram = \"/bin/true\"\ndetach = true\n",
    )?;
    let cred_path = provision(&tools, &keys)?;
    eprintln!("starting {servers} servers");
    let fleet = (0..servers)
        .map(|i| Running::fleet_member(&tools, &keys, &format!("s{i:03}"), &policy))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let hosts: Vec<Host> = fleet
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Host {
                name: Ident::new(format!("s{i:03}"))?,
                address: r.addr.to_string(),
                zone: None,
                labels: Default::default(),
                source: "bench".into(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let cred = Arc::new(Credential::load(&cred_path)?);
    let connector = Connector::new(Arc::clone(&cred))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let server_before = fleet[0].cpu_seconds()?;
    let (handshake_cpu, _) = cpu_of(|| {
        runtime.block_on(async {
            for _ in 0..HANDSHAKES {
                let options = Options {
                    target: Some(hosts[0].name.clone()),
                    ..Options::default()
                };
                let client = connector.connect(Some(&hosts[0].address), options).await?;
                client.close().await;
            }
            anyhow::Ok(())
        })
    })?;
    let per_handshake = handshake_cpu / HANDSHAKES as f64;
    let server_per_handshake = (fleet[0].cpu_seconds()? - server_before) / HANDSHAKES as f64;
    println!(
        "one handshake, client CPU: {:.0} µs; the server's: {:.0} µs (means of {HANDSHAKES}; /proc, 10 ms ticks)",
        per_handshake * 1e6,
        server_per_handshake * 1e6
    );
    println!(
        "| command | servers | wall, ms | client CPU per server, µs | × one handshake | client peak memory, MiB | cores busy |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base_rss = rss_kib("VmRSS")?;
    let mut worst: f64 = 0.0;
    // Jobs of one run on every server, for `job status` of that run.
    let mut detached = fanout::Command::new("true", Vec::new())?;
    detached.detach = true;
    let run_id = detached.run;
    let failures = runtime.block_on(run(connector.clone(), hosts.clone(), detached));
    if failures > 0 {
        bail!("{failures} of {servers} servers did not start the job");
    }
    let mut per_server_of = std::collections::BTreeMap::<&str, Vec<f64>>::new();
    for label in ["ping", "true", "job status"] {
        for _ in 0..rounds {
            let command = match label {
                "job status" => {
                    let mut status = fanout::Command::new("job.status", vec![hex::encode(run_id)])?;
                    status.run_ids = 1;
                    status
                }
                name => fanout::Command::new(name, Vec::new())?,
            };
            let machine_before = machine_ticks()?;
            let started = Instant::now();
            let (client_cpu, failures) =
                cpu_of(|| Ok(runtime.block_on(run(connector.clone(), hosts.clone(), command))))?;
            let wall = started.elapsed();
            if failures > 0 {
                bail!("{failures} of {servers} servers did not run {label}");
            }
            let (busy, all) = machine_ticks()?;
            let busy = (busy - machine_before.0) as f64 / (all - machine_before.1).max(1) as f64;
            let per_server = client_cpu / servers as f64;
            per_server_of.entry(label).or_default().push(per_server);
            let ratio = per_server / per_handshake;
            worst = worst.max(ratio);
            let peak = rss_kib("VmHWM")?.saturating_sub(base_rss) as f64 / 1024.0;
            println!(
                "| {label} | {servers} | {:.0} | {:.0} | {ratio:.2} | {peak:.1} | {:.0} % |",
                wall.as_secs_f64() * 1e3,
                per_server * 1e6,
                busy * 100.0,
            );
        }
    }
    let met = worst <= TARGET;
    println!(
        "client CPU per server ≤ {TARGET} × one handshake's: worst {worst:.2}× — {}",
        if met { "met" } else { "MISSED" }
    );
    let median = |label: &str| {
        let mut v = per_server_of.get(label).cloned().unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let against_server = median("ping") / server_per_handshake;
    let server_met = against_server <= AGAINST_SERVER;
    println!(
        "a fan-out ping costs the client {:.0} µs per server, {against_server:.2}× the server's CPU per handshake (at most {AGAINST_SERVER}) — {}",
        median("ping") * 1e6,
        if server_met { "met" } else { "MISSED" }
    );
    let job_status = median("job status") / median("ping");
    let status_met = job_status <= JOB_STATUS;
    println!(
        "a fan-out job status costs the client {job_status:.2}× a fan-out ping per server (medians; at most {JOB_STATUS}) — {}",
        if status_met { "met" } else { "MISSED" }
    );
    let python_met = match python {
        Some(python) => python_against_cli(python, &tools, &keys, &cred_path, &hosts, rounds)?,
        None => {
            println!("the Python package's fan-out: not measured (give --python PATH)");
            true
        }
    };
    let revoked_in = revoke(&runtime, &tools, &keys, &connector, &hosts)?;
    let revoke_met = revoked_in.as_secs_f64() < REVOKE_IN;
    println!(
        "a signed revocation list reaches {servers} servers and is in force on all of them in {:.0} ms (under {:.0} ms) — {}",
        revoked_in.as_secs_f64() * 1e3,
        REVOKE_IN * 1e3,
        if revoke_met { "met" } else { "MISSED" }
    );
    let met = met && status_met && revoke_met && python_met && server_met;
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Target: the Python package's fan-out takes at most this many times the wall time of
/// the `cmdchan` command's, whole processes both (the interpreter's start included).
const PYTHON: f64 = 1.2;

/// A fan-out `ping` to every server by `cmdchan --on '*'` and by the Python package,
/// paired round by round; whether the Python's median wall time is within [`PYTHON`]
/// of the command's.
fn python_against_cli(
    python: &Path,
    tools: &Tools,
    keys: &Keys,
    cred: &Path,
    hosts: &[Host],
    rounds: usize,
) -> anyhow::Result<bool> {
    let inventory = keys.dir.path().join("inventory.toml");
    let listed: String = hosts
        .iter()
        .map(|h| format!("[servers.{}]\naddress = \"{}\"\n", h.name, h.address))
        .collect();
    std::fs::write(&inventory, listed)?;
    let client = tools.server.with_file_name("cmdchan");
    let script = "import sys, cmdchan\n\
        c = cmdchan.Client(sys.argv[1], inventory=[sys.argv[2]])\n\
        ok = sum(1 for s in c.fanout('*', 'ping') if s.ok)\n\
        sys.exit(0 if ok == int(sys.argv[3]) else 1)\n";
    let time = |cmd: &mut Command| -> anyhow::Result<f64> {
        let started = Instant::now();
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let (mut cli, mut py) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(3) {
        cli.push(time(
            Command::new(&client)
                .arg("--cred")
                .arg(cred)
                .arg("--inventory")
                .arg(&inventory)
                .args(["--on", "*", "ping"])
                .env("XDG_CACHE_HOME", keys.dir.path()),
        )?);
        py.push(time(
            Command::new(python)
                .args(["-c", script])
                .arg(cred)
                .arg(&inventory)
                .arg(hosts.len().to_string()),
        )?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cli, py) = (median(&mut cli), median(&mut py));
    let met = py <= PYTHON * cli;
    println!(
        "a fan-out ping to {} servers from Python takes {:.0} ms, the cmdchan command {:.0} ms: {:.2}× (medians, whole processes; at most {PYTHON}×) — {}",
        hosts.len(),
        py * 1e3,
        cli * 1e3,
        py / cli,
        if met { "met" } else { "MISSED" }
    );
    Ok(met)
}

/// Target: a revocation pushed with a fan-out is in force on every server within this
/// many seconds.
const REVOKE_IN: f64 = 5.0;

/// Signs a revocation list on the admin side and pushes it to every server: the time
/// until the last server has applied it (each answers only once it has).
fn revoke(
    runtime: &tokio::runtime::Runtime,
    tools: &Tools,
    keys: &Keys,
    connector: &Connector,
    hosts: &[Host],
) -> anyhow::Result<Duration> {
    let list = keys.dir.path().join("revocations.list");
    let status = Command::new(&tools.server)
        .args(["admin", "revoke", "--root"])
        .arg(keys.dir.path().join("root.key"))
        .args(["--name", "nobody", "--out"])
        .arg(&list)
        .status()?;
    if !status.success() {
        bail!("admin revoke failed");
    }
    let text = std::fs::read_to_string(&list)?.trim().to_owned();
    let push = fanout::Command::new("revocations.push", vec![text])?;
    let started = Instant::now();
    let failures = runtime.block_on(run(connector.clone(), hosts.to_vec(), push));
    let took = started.elapsed();
    if failures > 0 {
        bail!(
            "{failures} of {} servers did not take the revocation list",
            hosts.len()
        );
    }
    Ok(took)
}

/// A credential for any server of zone bench, role fleet.
pub(crate) fn provision(tools: &Tools, keys: &Keys) -> anyhow::Result<std::path::PathBuf> {
    let out = keys.dir.path().join("fleet.cred");
    let root = keys.dir.path().join("root.key");
    let status = Command::new(&tools.server)
        .args(["admin", "provision", "--root"])
        .arg(&root)
        .args([
            "--zone", "bench", "--name", "fleet", "--role", "fleet", "--out",
        ])
        .arg(&out)
        .status()?;
    if !status.success() {
        bail!("admin provision failed");
    }
    Ok(out)
}

/// Fans `command` out; returns how many servers did not run it cleanly.
async fn run(connector: Connector, hosts: Vec<Host>, command: fanout::Command) -> usize {
    let plan = Plan {
        rollout: fanout::Rollout {
            parallel: 32,
            ..fanout::Rollout::default()
        },
        per_server: Duration::from_secs(60),
        deadline: None,
        check: None,
        options: Options::default(),
    };
    let mut events = fanout::fan_out(connector, hosts, command, plan);
    let mut failures = 0;
    while let Some(event) = events.recv().await {
        if let Event::Done(result) = event {
            if !result.outcome.succeeded() {
                if failures == 0 {
                    if let Outcome::Failed(e) = &result.outcome {
                        eprintln!("first failure: {e}");
                    }
                }
                failures += 1;
            }
        }
    }
    failures
}

/// CPU time (user + system, every thread) this process spends in `work`, in seconds.
pub(crate) fn cpu_of<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let before = self_cpu()?;
    let value = work()?;
    Ok((self_cpu()? - before, value))
}

fn self_cpu() -> anyhow::Result<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// The machine's busy and total CPU ticks so far, every core (/proc/stat: busy is all
/// but idle and iowait).
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let all: u64 = ticks.iter().sum();
    let waiting = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((all - waiting, all))
}

/// A memory figure of this process from /proc/self/status (VmRSS now, VmHWM its peak).
fn rss_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc/self/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}
