//! `cmdchan-bench`: cmdchan-server side by side with what users would pick instead
//! (stunnel4 in front of a plain daemon, openssl s_server) and with a bare tokio-openssl
//! TLS-PSK echo server on the same stack (the ceiling). It starts every contender on
//! loopback, measures them in one run, prints one markdown table and exits non-zero
//! when cmdchan misses a target.

mod breakdown;
mod contenders;
mod echo;
mod fanout;
mod jobs;
mod load;
mod many;
mod measure;
mod report;
mod run;
mod spawn;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Opts {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: run::RunOpts,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The load generator (the bench runs it in its own process).
    #[command(hide = true)]
    Load(load::LoadOpts),
    /// The ceiling: a TLS-PSK echo server on cmdchan's stack, no application logic.
    #[command(hide = true)]
    Ceiling(echo::CeilingOpts),
    /// The plain TCP echo server behind stunnel4.
    #[command(hide = true)]
    Echo,
    /// Sustained pipelined load on cmdchan with IDs expiring meanwhile: the slowest
    /// second against the median, and the p99.
    Steady {
        #[arg(long, default_value_t = 25.0)]
        seconds: f64,
    },
    /// One command on many servers through the client's fan-out: wall time, client CPU
    /// per server against one handshake's, the client's peak memory.
    Fanout {
        #[arg(long, default_value_t = 200)]
        servers: usize,
        /// Runs of each command (ping, a program).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// A Python with the cmdchan package installed (pip install ./python): its
        /// fan-out `ping` is timed beside the `cmdchan` command's, whole processes both.
        #[arg(long)]
        python: Option<std::path::PathBuf>,
    },
    /// Server CPU per program run (/bin/true, a new connection each) against a bare
    /// fork-and-exec server (socat), each in a cpuacct cgroup of its own.
    Spawn {
        #[arg(long, default_value_t = 300)]
        runs: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The cmdchan command against many simulated servers (real TLS-PSK handshakes and
    /// requests): wall time, client CPU per server, peak memory, JSON Lines per second.
    Many {
        #[arg(long, default_value_t = 10_000)]
        servers: usize,
        #[arg(long, default_value_t = 512)]
        parallel: usize,
        /// Simulator processes.
        #[arg(long, default_value_t = 4)]
        processes: usize,
    },
    /// One simulator process of `many` (started by it).
    #[command(hide = true)]
    Simulate(many::SimulateOpts),
    /// The job store at scale (files and bytes of many results, a server's start on
    /// them, `job status` of many IDs) and the CPU the output digests cost.
    Jobs {
        /// Results written into the store.
        #[arg(long, default_value_t = 1_000_000)]
        results: usize,
        /// IDs asked about in `job status`.
        #[arg(long, default_value_t = 10_000)]
        asked: usize,
    },
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    let result = match opts.command {
        None => run::main(opts.run),
        Some(Cmd::Load(o)) => load::main(o).map(|()| ExitCode::SUCCESS),
        Some(Cmd::Ceiling(o)) => echo::ceiling(o).map(|()| ExitCode::SUCCESS),
        Some(Cmd::Echo) => echo::plain().map(|()| ExitCode::SUCCESS),
        Some(Cmd::Steady { seconds }) => run::steady(seconds),
        Some(Cmd::Fanout {
            servers,
            rounds,
            python,
        }) => fanout::main(servers, rounds, python.as_deref()),
        Some(Cmd::Jobs { results, asked }) => jobs::main(results, asked),
        Some(Cmd::Spawn { runs, rounds }) => spawn::main(runs, rounds),
        Some(Cmd::Many {
            servers,
            parallel,
            processes,
        }) => many::main(servers, parallel, processes),
        Some(Cmd::Simulate(o)) => many::simulate(o).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("cmdchan-bench: {e:#}");
        ExitCode::from(2)
    })
}
