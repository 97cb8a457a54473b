//! The orchestrator: starts each contender in turn, drives it with the load generator in
//! a process of its own, and collects every figure of every run.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::breakdown::{self, Breakdown};
use crate::contenders::{Keys, Kind, Running, Tools};
use crate::load::Outcome;
use crate::measure::{Measure, Results, Sample, HANDSHAKE_PARALLEL, IDLE_CONNS};
use crate::report;

#[derive(Debug, clap::Args)]
pub struct RunOpts {
    /// One second per figure instead of five: the whole bench in under 2 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Runs of every figure; the table shows their median, min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also write the report (table, machine, targets) to this markdown file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the targets but exit 0 even when one is missed.
    #[arg(long)]
    pub no_check: bool,
}

pub fn main(opts: RunOpts) -> anyhow::Result<ExitCode> {
    let tools = Tools::find()?;
    let keys = Keys::provision(&tools)?;
    let seconds = if opts.quick { 1.0 } else { 5.0 };
    let began = Instant::now();
    let mut results = Results::new();
    for run in 1..=opts.runs.max(1) {
        for kind in Kind::ALL {
            let running = Running::start(kind, &tools, &keys)
                .with_context(|| format!("starting {}", kind.name()))?;
            for m in Measure::ALL.into_iter().filter(|m| m.applies_to(kind)) {
                let sample = measure(&running, m, &tools, &keys, seconds)
                    .with_context(|| format!("{} {m:?}:\n{}", kind.name(), running.logs()))?;
                eprintln!(
                    "run {run} {:<8} {m:<40} {sample:?}",
                    kind.name(),
                    m = format!("{m:?}")
                );
                results.entry((m, kind)).or_default().push(sample);
            }
        }
    }
    let mut breakdowns = Vec::new();
    for kind in [Kind::Cmdchan, Kind::Ceiling] {
        // Without perf the table and the targets still stand; the breakdown is left out.
        match profiled(kind, &tools, &keys, seconds) {
            Ok(b) => breakdowns.push((kind, b)),
            Err(e) => eprintln!(
                "cmdchan-bench: no cost breakdown for {}: {e:#}",
                kind.name()
            ),
        }
    }
    let report = report::Report::new(&results, &breakdowns, began.elapsed());
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = &opts.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(match report.all_met() || opts.no_check {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

fn measure(
    running: &Running,
    m: Measure,
    tools: &Tools,
    keys: &Keys,
    seconds: f64,
) -> anyhow::Result<Sample> {
    let mut cmd = Command::new(&tools.me);
    cmd.arg("load")
        .args(["--addr", &running.addr.to_string()])
        .arg("--cred")
        .arg(&keys.cred)
        .args(["--speak", speak_arg(running.kind)])
        .args(psk_arg(running.kind, keys))
        .args(["--seconds", &seconds.to_string()]);
    match m {
        Measure::Handshake(cipher) => cmd
            .args(["--mode", "handshake", "--cipher", cipher])
            .args(["--conns", &HANDSHAKE_PARALLEL.to_string()]),
        Measure::RoundTrip { conns, depth } => cmd.args(["--mode", "round-trip"]).args([
            "--conns",
            &conns.to_string(),
            "--depth",
            &depth.to_string(),
        ]),
        Measure::Idle => return idle(running, cmd),
    };
    let cpu = running.cpu_seconds()?;
    let out = cmd.stderr(Stdio::inherit()).output()?;
    let cpu = running.cpu_seconds()? - cpu;
    if !out.status.success() {
        bail!("the load generator failed ({})", out.status);
    }
    let outcome: Outcome = serde_json::from_slice(&out.stdout).context("load generator output")?;
    if outcome.errors > 0 || outcome.ops == 0 {
        bail!(
            "{} errors, {} operations; first error: {}",
            outcome.errors,
            outcome.ops,
            outcome.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(Sample {
        rate: outcome.rate(),
        p50_us: outcome.p50_us,
        p99_us: outcome.p99_us,
        cpu_us: cpu * 1e6 / outcome.ops as f64,
        kib_per_conn: 0.0,
    })
}

/// Opens the idle connections and reads how much the server grew for them.
fn idle(running: &Running, mut cmd: Command) -> anyhow::Result<Sample> {
    cmd.args(["--mode", "idle", "--conns", &IDLE_CONNS.to_string()]);
    let before = running.rss_kib()?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    // Kept open until the generator exits: it prints its outcome last.
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
    stdout.read_line(&mut line)?;
    if !line.starts_with("ready") {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the load generator could not open {IDLE_CONNS} connections");
    }
    // Let the server finish what the last connections started.
    std::thread::sleep(Duration::from_millis(500));
    let after = running.rss_kib()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    child.wait()?;
    Ok(Sample {
        kib_per_conn: after.saturating_sub(before) as f64 / IDLE_CONNS as f64,
        ..Sample::default()
    })
}

/// One more pipelined run of `kind`, sampled by perf: its CPU per request by category.
fn profiled(kind: Kind, tools: &Tools, keys: &Keys, seconds: f64) -> anyhow::Result<Breakdown> {
    let running = Running::start(kind, tools, keys)?;
    let data = keys.dir.path().join(format!("{}.perf", kind.name()));
    let profile = breakdown::Profile::start(running.pid(), seconds, &data)?;
    let sample = measure(&running, report::PIPELINED, tools, keys, seconds)?;
    profile.finish(&data, sample.cpu_us)
}

/// Contenders that know one fixed identity are keyed with `admin psk`'s line.
fn psk_arg(kind: Kind, keys: &Keys) -> Vec<std::ffi::OsString> {
    match kind {
        Kind::Stunnel | Kind::SServer => vec!["--psk".into(), keys.psk_secrets.clone().into()],
        _ => Vec::new(),
    }
}

fn speak_arg(kind: Kind) -> &'static str {
    match kind.speaks() {
        crate::load::Speak::Cmdchan => "cmdchan",
        crate::load::Speak::Echo => "echo",
    }
}

/// `cmdchan-bench steady`: 25 s of pipelined load (16 connections × 8 requests in
/// flight) on cmdchan as a user runs it (file replay store, audit file) with a 5 s
/// window, so IDs expire and are dropped while the server works. Prints each second's
/// rate, the slowest second against the median, and the p99 of a batch; fails when the
/// slowest second is under half the median or the p99 is over 20 ms.
pub fn steady(seconds: f64) -> anyhow::Result<ExitCode> {
    let tools = Tools::find()?;
    let keys = Keys::provision(&tools)?;
    let running = Running::start(Kind::Cmdchan, &tools, &keys)?;
    let out = Command::new(&tools.me)
        .arg("load")
        .args(["--addr", &running.addr.to_string()])
        .arg("--cred")
        .arg(&keys.cred)
        .args([
            "--speak",
            "cmdchan",
            "--mode",
            "round-trip",
            "--conns",
            "16",
            "--depth",
            "8",
        ])
        .args(["--seconds", &seconds.to_string(), "--slices"])
        .stderr(Stdio::inherit())
        .output()?;
    let outcome: Outcome = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "load said: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            running.logs()
        )
    })?;
    if outcome.errors > 0 {
        bail!(
            "{} errors, the first: {:?}",
            outcome.errors,
            outcome.first_error
        );
    }
    // The last second is cut short by the end of the run.
    let whole = &outcome.slices[..outcome.slices.len().saturating_sub(1)];
    let mut sorted = whole.to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0) as f64;
    let slowest = sorted.first().copied().unwrap_or(0) as f64;
    let ratio = slowest / median.max(1.0);
    println!("requests per second, each second: {whole:?}");
    println!("median second {median:.0}/s, slowest {slowest:.0}/s: {ratio:.2} × the median (target ≥ 0.50)");
    println!(
        "p99 of a batch of 8: {:.1} ms (target ≤ 20 ms)",
        outcome.p99_us / 1000.0
    );
    let met = ratio >= 0.5 && outcome.p99_us <= 20_000.0;
    println!("{}", if met { "met" } else { "MISSED" });
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
