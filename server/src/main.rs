//! `cmdchan-server`: parses the command line and hands over; the work is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::FromArgMatches;
use tracing_subscriber::EnvFilter;

use anyhow::Context;
use cmdchan_server::cli::{Command, LogFormat, Opts};
use cmdchan_server::config::Config;
use cmdchan_server::logsink::{Sink, SinkLayer, SinkSpec};
use cmdchan_server::{admin, dev};

fn main() -> ExitCode {
    let parsed = cmdchan_server::cli::command()
        .try_get_matches()
        .and_then(|matches| Opts::from_arg_matches(&matches));
    let opts = match parsed {
        Ok(opts) => opts,
        Err(e) => {
            let _ = e.print();
            return match e.use_stderr() {
                true => ExitCode::from(EX_USAGE),
                false => ExitCode::SUCCESS,
            };
        }
    };
    match run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cmdchan-server: error: {e:#}");
            match e.downcast_ref::<cmdchan_server::CannotListen>() {
                Some(_) => ExitCode::from(EX_UNAVAILABLE),
                None => ExitCode::from(EX_CONFIG),
            }
        }
    }
}

// Exit statuses, the sysexits convention the client uses too: 0 done; 1 `check` or
// `audit-verify` found a problem; 64 usage; 69 cannot listen on the address; 78
// anything else that stopped it (a config, key, policy or file it cannot use).
const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_CONFIG: u8 = 78;

fn run(opts: Opts) -> anyhow::Result<ExitCode> {
    let (config, reload_from) = match opts.command {
        Command::Admin(cmd) => return admin::run(cmd),
        Command::Generate { dir } => {
            cmdchan_common::assets::generate(cmdchan_server::cli::command(), &dir)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Serve(serve) => (Config::load(&serve)?, Some(*serve)),
        Command::Check(opts) => return Ok(check(&opts)),
        Command::Dev(d) => (dev::prepare(&d)?, None),
    };
    init_logging(config.log_format, &config.log_sinks)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(cmdchan_server::serve(config, reload_from))?;
    Ok(ExitCode::SUCCESS)
}

/// `check`: everything `serve` loads before it listens, without listening.
fn check(opts: &cmdchan_server::cli::ServeOpts) -> ExitCode {
    let checked = Config::load(opts).and_then(|config| {
        cmdchan_server::state::Settings::load(&config)?;
        cmdchan_server::state::load_zone_keys(&config.zone_keys)?;
        Ok(config)
    });
    match checked {
        Ok(config) => {
            println!(
                "OK: config, policy and zone key of server {} are valid",
                config.server_id
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("cmdchan-server: the configuration is not valid: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` refines the level (default `info`). Audit events also
/// go to the sinks, at every level; with the journal among them, its native entries
/// stand for the stderr lines (which the journal would hold twice).
fn init_logging(format: LogFormat, sinks: &[SinkSpec]) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if sinks.iter().any(|s| matches!(s, SinkSpec::Journal(_))) {
        filter = filter.add_directive("cmdchan::audit=off".parse()?);
    }
    let opened = sinks
        .iter()
        .map(|spec| {
            Sink::open(spec.clone()).with_context(|| format!("opening the log sink {spec}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    // Only audit events reach the sinks: other callsites stay off for them.
    let audit_only = tracing_subscriber::filter::Targets::new()
        .with_target("cmdchan::audit", tracing::Level::TRACE);
    let sinks = (!opened.is_empty()).then(|| SinkLayer::new(opened).with_filter(audit_only));
    tracing_subscriber::registry().with(fmt).with(sinks).init();
    Ok(())
}
