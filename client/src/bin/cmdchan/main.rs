//! `cmdchan`: send one command to a cmdchan server, or to many (`--on`), and show the
//! result. The command line is here; what is shown is `report`'s (one server) and
//! `fleet`'s (many), written through `print`.

mod approval;
mod complete;
mod doctor;
use cmdchan::exit;
mod fleet;
mod job;
mod keep;
mod manual;
mod print;
mod report;
mod revocations;
mod terminal;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use cmdchan::{AnswerSink, Client, Credential, Flow, Ident, Options, Output, Param, SharedInput};

use crate::exit::{Exit, LocalCode};
use crate::report::{Failed, Mode, Report};

/// Send a command to a cmdchan server over TLS-PSK.
///
/// Everything after COMMAND is the command's, exactly as typed (`--json`, `--help` and
/// `--` included); the client's own options come before it. `cmdchan run COMMAND …`
/// runs a remote command that has the name of one of the client's own (`doctor`).
///
/// Exit status: a program's own status (124 if it timed out, 128+N if signal N ended
/// it); otherwise 0 ok; 64 usage; 69 cannot connect or handshake refused; 70 server
/// error; 74 output truncated (with --fail-truncated); 75 temporary, retry later (busy,
/// store unavailable); 76 protocol error; 77 refused: authentication (bad tag, revoked,
/// expired, wrong server); 78 credential file problem; 79 refused: replay or stale; 80
/// refused: policy (forbidden, unknown command, bad arguments, approvals); 141 stdout was closed
/// (`cmdchan … | head`). With --nagios: 0–3 only.
#[derive(Debug, Parser)]
#[command(
    name = "cmdchan",
    version = cmdchan_common::protocol::VERSION_LINE,
    subcommand_value_name = "COMMAND",
    override_usage = "cmdchan [OPTIONS] COMMAND [ARG]...\n       cmdchan [OPTIONS] --on SELECTOR COMMAND [ARG]...\n       cmdchan [OPTIONS] job {status ID...|wait ID|output ID|attach ID|list}\n       cmdchan [OPTIONS] approval {request --out FILE COMMAND [ARG]...|show FILE|sign FILE}\n       cmdchan [OPTIONS] --approval FILE\n       cmdchan [OPTIONS] {doctor|hosts|generate DIR|run COMMAND [ARG]...}",
    subcommand_help_heading = "Commands of the client itself (anything else is a remote command)"
)]
struct Opts {
    #[command(flatten)]
    to: Target,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// One Nagios status line on stdout for every outcome, and the 0–3 convention.
    #[arg(long, global = true, conflicts_with = "json")]
    nagios: bool,
    /// Exit 74 when the server cut the output at the command's limit.
    #[arg(long, global = true)]
    fail_truncated: bool,
    /// The most output kept per server and stream for --json, --nagios and --gather, or
    /// written per file with --out-dir (with K, M or G: KiB, MiB, GiB). A server may send
    /// more than its policy says; the rest is counted, not kept, and the result says so.
    #[arg(long, global = true, default_value = "16M", value_parser = parse_size)]
    max_output: u64,
    /// Longest time without a sign of life from the server before the client gives up
    /// (exit 124). While it works on a command the server shows one every second, so a
    /// quiet program runs as long as its policy lets it. At least 2s.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_silence)]
    answer_timeout: Duration,
    /// Times to reconnect and resend (same command ID, so it never runs twice) if the
    /// connection is lost before the answer.
    #[arg(long, global = true, default_value_t = 3)]
    retries: u32,
    /// Start the program as a job and print its ID at once; it runs on without the
    /// client, its result kept on the server (see `cmdchan job`). With --on, one run ID
    /// for every server: `cmdchan job status RUN --on …` asks each about its job.
    #[arg(long, global = true)]
    detach: bool,
    /// A named parameter, NAME=VALUE (repeat for several).
    #[arg(long = "arg", global = true, value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<Param>,
    /// Run the request approved in FILE (see `cmdchan approval`): its command, arguments
    /// and ID, on its servers (or those --on or --server picks), with its approvals.
    #[arg(long, value_name = "FILE")]
    approval: Option<PathBuf>,
    #[command(flatten)]
    fleet: fleet::FleetArgs,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the credential and the path to the server, and say what to fix.
    Doctor,
    /// Write shell completions and man pages into DIR.
    Generate { dir: PathBuf },
    /// List the servers of the inventory --on picks (all without --on), one per line,
    /// without contacting any.
    Hosts,
    /// A server's jobs (started with --detach): their states, waiting for one, its
    /// output, following it live, the list. With --on, each ID is a run's.
    Job {
        #[command(subcommand)]
        action: job::JobCmd,
    },
    /// Approvals by co-signature: prepare a request, show it, approve it. Run it with
    /// `cmdchan --approval FILE`.
    Approval {
        #[command(subcommand)]
        action: approval::ApprovalCmd,
    },
    /// Signed revocation lists (from cmdchan-server admin revoke): push one to servers,
    /// or show the version a server keeps.
    Revocations {
        #[command(subcommand)]
        action: revocations::RevocationsCmd,
    },
    /// Run a remote command, also one named like a command of the client's.
    Run {
        command: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A remote command and its arguments, exactly as typed.
    #[command(external_subcommand)]
    Remote(Vec<OsString>),
}

/// Which credential, and which server.
#[derive(Debug, clap::Args)]
struct Target {
    /// Credential file (from `cmdchan-server admin provision`).
    #[arg(long, global = true, env = "CMDCHAN_CRED")]
    cred: Option<PathBuf>,
    /// The server: a name of the inventory (its address, zone and ID), or HOST or
    /// HOST:PORT (port 7433 unless given) [default: the credential's address].
    #[arg(long, short = 's', global = true, value_name = "NAME|HOST[:PORT]",
          add = clap_complete::engine::ArgValueCompleter::new(complete::server))]
    server: Option<String>,
    /// The zone the server is in [default: the credential's only zone]. A server that
    /// names another zone is refused before anything is sent.
    #[arg(long, global = true, env = "CMDCHAN_ZONE")]
    zone: Option<Ident>,
    /// Server ID to address [default: the grant's only server, else the host of --server].
    #[arg(long, global = true)]
    server_id: Option<Ident>,
    /// Limit for connecting and the TLS handshake, per server (a host that takes the
    /// connection and never answers is "no TLS reply" after it).
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Limit for a server's whole run: connecting, the answer, any retries (exit 124 past
    /// it) [default: none for one server; 60s for each with --on].
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
}

impl Target {
    /// `--server NAME` for a server of the inventory: its address, and its zone and ID
    /// unless given. A name the inventory lacks (or with no inventory) is a host name on
    /// the default port; an address with a port is taken as it is.
    fn resolve(&mut self, fleet: &fleet::FleetArgs) -> Result<(), String> {
        let Some(name) = self.server.clone().filter(|s| !s.contains([':', '['])) else {
            return Ok(());
        };
        let inventory = match fleet.inventory.is_empty() {
            false => Some(fleet::inventory(&fleet.inventory)?),
            true => match fleet::default_inventory() {
                Ok(path) if path.exists() => Some(fleet::inventory(&[])?),
                _ => None,
            },
        };
        if let Some(host) = inventory.as_ref().and_then(|i| i.get(&name)) {
            self.server = Some(host.address.clone());
            self.zone = self.zone.take().or(host.zone.clone());
            self.server_id = self.server_id.take().or(Some(host.name.clone()));
        }
        Ok(())
    }
}

/// One server's whole run in a fan-out.
const FLEET_TIMEOUT: Duration = Duration::from_secs(60);
/// One server's whole `job wait` or `job attach` in a fan-out: as long as a job may
/// run (the policy's timeout bounds it), unless --timeout or --deadline says less.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

fn main() -> ExitCode {
    // A shell asking for completions (COMPLETE=SHELL) is answered here, and exits; after
    // the remote command the words are the command's, and none are offered.
    if std::env::var_os("COMPLETE").is_some_and(|v| !v.is_empty() && v != "0") {
        let words: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
        let index = std::env::var("_CLAP_COMPLETE_INDEX")
            .ok()
            .and_then(|i| i.parse().ok());
        if index.is_some_and(|i| complete::in_remote_command(&Opts::command(), &words, i)) {
            return ExitCode::SUCCESS;
        }
    }
    clap_complete::CompleteEnv::with_factory(Opts::command).complete();
    let mut opts = match Opts::try_parse() {
        Ok(opts) => opts,
        Err(e) => return usage(&e),
    };
    let mode = Mode::of(opts.json, opts.nagios);
    if let Err(e) = opts.to.resolve(&opts.fleet) {
        return local(mode, LocalCode::Usage, &e, Exit::Usage).into();
    }
    let command = match (opts.command.take(), opts.approval.clone()) {
        (None, Some(path)) => return approved(opts, mode, path),
        (Some(_), Some(_)) => {
            let message = "--approval runs the command its file names; leave out the command";
            return local(mode, LocalCode::Usage, message, Exit::Usage).into();
        }
        (None, None) => {
            let e = Opts::command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "name the command to run (or --approval FILE)",
            );
            return usage(&e);
        }
        (Some(command), None) => command,
    };
    match command {
        Cmd::Approval { ref action } => {
            let cx = approval::Context {
                cred: opts.to.cred.as_ref(),
                zone: opts.to.zone.clone(),
                server_id: opts.to.server_id.clone(),
                server: opts.to.server.as_deref(),
                fleet: &opts.fleet,
                params: &opts.params,
                detach: opts.detach,
            };
            match action.run(cx) {
                Ok(said) => {
                    print!("{said}");
                    ExitCode::SUCCESS
                }
                Err(e) => local(mode, LocalCode::Usage, &e, Exit::Usage).into(),
            }
        }
        Cmd::Generate { ref dir } => generate(dir),
        Cmd::Hosts => match fleet::hosts(&opts.fleet) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => local(mode, LocalCode::Usage, &e, Exit::Usage).into(),
        },
        Cmd::Doctor => {
            let Some(cred) = opts.to.cred.clone() else {
                return local(
                    mode,
                    LocalCode::Usage,
                    "doctor needs --cred FILE",
                    Exit::Usage,
                )
                .into();
            };
            if !opts.fleet.on.is_empty() {
                return match fleet::select(&opts.fleet) {
                    Ok(hosts) => block_on(doctor::many(
                        &cred,
                        &hosts,
                        &opts.to.zone,
                        opts.to.connect_timeout,
                    )),
                    Err(e) => local(mode, LocalCode::Usage, &e, Exit::Usage).into(),
                };
            }
            block_on(doctor::run(
                &cred,
                opts.to.server.as_deref(),
                opts.to.zone.clone(),
                opts.to.server_id.clone(),
                opts.to.connect_timeout,
            ))
        }
        Cmd::Run {
            ref command,
            ref args,
        } => {
            let (command, args) = (command.clone(), args.clone());
            block_on(run(opts, Remote::Command(command, args)))
        }
        Cmd::Remote(ref words) => {
            let mut words = words.iter().map(|w| w.to_string_lossy().into_owned());
            let command = words.next().unwrap_or_default();
            let args = words.collect();
            block_on(run(opts, Remote::Command(command, args)))
        }
        Cmd::Revocations { ref action } => match action.remote() {
            Ok((command, args)) => block_on(run(opts, Remote::Command(command, args))),
            Err(e) => local(mode, LocalCode::Usage, &e, Exit::Usage).into(),
        },
        Cmd::Job { ref action } => {
            if opts.detach {
                let message = "--detach starts a job; `job` commands look at jobs";
                return local(mode, LocalCode::Usage, message, Exit::Usage).into();
            }
            let action = action.clone();
            block_on(run(opts, Remote::Job(action)))
        }
    }
}

/// A usage error: as JSON with `--json` (among the client's own options), else clap's
/// text; help and version exit 0.
fn usage(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let own_options: Vec<String> = std::env::args()
        .skip(1)
        .take_while(|a| a.starts_with('-'))
        .collect();
    let mode = Mode::of(
        own_options.iter().any(|a| a == "--json"),
        own_options.iter().any(|a| a == "--nagios"),
    );
    if mode == Mode::Text {
        let _ = e.print();
        return Exit::Usage.into();
    }
    let message = e.kind().as_str().unwrap_or("usage error").to_owned();
    let message = format!("{message} (run cmdchan --help)");
    local(mode, LocalCode::Usage, &message, Exit::Usage).into()
}

/// A failure found before any server was asked, shown as `mode` shows failures.
fn local(mode: Mode, code: LocalCode, message: &str, exit: Exit) -> Exit {
    mode.report(false, 0)
        .failed(&Failed::local(code, message, exit))
}

fn generate(dir: &std::path::Path) -> ExitCode {
    let generated = cmdchan_common::assets::generate_with(Opts::command(), dir, &manual::SECTIONS)
        .and_then(|()| complete::write_registrations(dir));
    match generated {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "cmdchan: cannot write completions and man pages into {}: {e}",
                dir.display()
            );
            Exit::Software.into()
        }
    }
}

fn block_on(work: impl std::future::Future<Output = Exit>) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cmdchan: cannot start the async runtime");
        return Exit::Software.into();
    };
    let exit = runtime.block_on(work);
    // A read of stdin for a program that ended first may still wait on its thread: the
    // process ends now, not when stdin does.
    runtime.shutdown_background();
    exit.into()
}

/// What is asked of the server: a command, a `job` command, or an approved request.
#[derive(Debug)]
enum Remote {
    Command(String, Vec<String>),
    Job(job::JobCmd),
    Approved(std::sync::Arc<cmdchan::approval::ApprovalFile>),
}

/// `--approval FILE`: the approved request on the servers it names (one: as --server;
/// several: as --on them all), unless --server or --on picks.
fn approved(mut opts: Opts, mode: Mode, path: PathBuf) -> ExitCode {
    let file = match approval::load(&path) {
        Ok(file) => file,
        Err(e) => return local(mode, LocalCode::Usage, &e, Exit::Usage).into(),
    };
    if opts.to.server.is_none() && opts.fleet.on.is_empty() {
        let names: Vec<&str> = file.servers.iter().map(Ident::as_str).collect();
        match names.as_slice() {
            [one] => opts.to.server = Some((*one).to_owned()),
            many => match many.join(",").parse() {
                Ok(selector) => opts.fleet.on.push(selector),
                Err(e) => return local(mode, LocalCode::Usage, &e.to_string(), Exit::Usage).into(),
            },
        }
        if let Err(e) = opts.to.resolve(&opts.fleet) {
            return local(mode, LocalCode::Usage, &e, Exit::Usage).into();
        }
    }
    opts.to.zone = opts.to.zone.take().or(Some(file.zone.clone()));
    block_on(run(opts, Remote::Approved(std::sync::Arc::new(file))))
}

async fn run(opts: Opts, remote: Remote) -> Exit {
    let mode = Mode::of(opts.json, opts.nagios);
    let Some(cred_path) = opts.to.cred.clone() else {
        let message = "no credential: pass --cred FILE or set CMDCHAN_CRED";
        return local(mode, LocalCode::Usage, message, Exit::Usage);
    };
    let cred = match Credential::load(&cred_path) {
        Ok(cred) => cred,
        Err(e) => return local(mode, LocalCode::Credential, &e.to_string(), Exit::Config),
    };
    if let Remote::Approved(file) = &remote {
        if let Err(e) = file.runnable_by(&cred.name) {
            return local(mode, LocalCode::Usage, &e.to_string(), Exit::Usage);
        }
    }
    if !opts.fleet.on.is_empty() {
        return run_many(opts, mode, cred, remote).await;
    }
    match opts.to.timeout {
        None => run_one(opts, mode, cred, remote).await,
        Some(limit) => match tokio::time::timeout(limit, run_one(opts, mode, cred, remote)).await {
            Ok(exit) => exit,
            Err(_) => {
                let message = format!(
                    "no answer within --timeout {}; the connection was dropped, so the server stops the program",
                    humantime::format_duration(limit)
                );
                local(mode, LocalCode::Timeout, &message, Exit::Timeout)
            }
        },
    }
}

/// The command on the one server `--server` (or the credential) names.
async fn run_one(opts: Opts, mode: Mode, cred: Credential, remote: Remote) -> Exit {
    let options = Options {
        zone: opts.to.zone,
        target: opts.to.server_id,
        timeout: opts.to.connect_timeout,
        answer_timeout: opts.answer_timeout,
        retries: opts.retries,
        revocations: carried(&remote),
        ..Options::default()
    };
    let mut report = mode.report(opts.fail_truncated, opts.max_output);
    let mut client = match Client::connect(cred, opts.to.server.as_deref(), options).await {
        Ok(client) => client,
        Err(e) => return report.failed(&Failed::of(&e)),
    };
    let (command, args, approved) = match remote {
        Remote::Command(command, args) => (command, args, None),
        Remote::Approved(file) => (file.command.clone(), file.args.clone(), Some(file)),
        Remote::Job(action) => {
            let exit = action
                .one(&mut client, &mut *report, opts.fleet.deadline)
                .await;
            client.close().await;
            return exit;
        }
    };
    let mut request = match client.request(&command, &args) {
        Ok(request) => request,
        Err(e) => return report.failed(&Failed::of(&e)),
    };
    request.params = opts.params;
    request.detach = opts.detach;
    if let Some(file) = approved {
        file.apply(&mut request);
    }
    // Read only if the server says the program takes stdin (ssh's -n pitfall avoided).
    client.set_input(Box::new(tokio::io::stdin()));
    let result = client.deliver(&mut request, &mut Shown(&mut *report)).await;
    client.close().await;
    match result {
        Ok(reply) => report.reply(&reply),
        Err(e) => report.failed(&Failed::of(&e)),
    }
}

/// A report as the sink of one answer's output: a closed stdout stops the answer (the
/// connection closes, and the server stops the program as for a client that left).
struct Shown<'r>(&'r mut (dyn Report + Send));

impl AnswerSink for Shown<'_> {
    async fn output(&mut self, out: Output) -> Flow {
        match self.0.output(&out) {
            Ok(()) => Flow::Go,
            Err(print::Closed) => Flow::Stop,
        }
    }
}

/// `--on`: the command on every server the selectors pick.
async fn run_many(opts: Opts, mode: Mode, cred: Credential, remote: Remote) -> Exit {
    let view = match mode {
        Mode::Json => fleet::View::Json,
        Mode::Nagios => {
            let message = "--nagios checks one server; leave out --on";
            return local(mode, LocalCode::Usage, message, Exit::Usage);
        }
        Mode::Text if opts.fleet.gather => fleet::View::Gather,
        Mode::Text => fleet::View::Stream,
    };
    if opts.to.server.is_some() || opts.to.server_id.is_some() {
        let message = "--on takes servers from the inventory; leave out --server and --server-id";
        return local(mode, LocalCode::Usage, message, Exit::Usage);
    }
    let hosts = match fleet::select(&opts.fleet) {
        Ok(hosts) => hosts,
        Err(e) => return local(mode, LocalCode::Usage, &e, Exit::Usage),
    };
    let options = Options {
        zone: opts.to.zone.clone(),
        timeout: opts.to.connect_timeout,
        answer_timeout: opts.answer_timeout,
        retries: opts.retries,
        revocations: carried(&remote),
        ..Options::default()
    };
    let (command, per_server) = match fleet_command(&opts, remote) {
        Ok(planned) => planned,
        Err(e) => return local(mode, LocalCode::Usage, &e.to_string(), Exit::Software),
    };
    let run = fleet::Run {
        view,
        command,
        per_server: per_server.unwrap_or(opts.to.timeout.unwrap_or(FLEET_TIMEOUT)),
        options,
        max_output: opts.max_output,
    };
    fleet::run(&opts.fleet, cred, hosts, run).await
}

/// The revocation list this client carries to servers that name an older one — not when
/// the command is itself a push (the list goes once).
fn carried(remote: &Remote) -> Option<std::sync::Arc<cmdchan::KnownList>> {
    match remote {
        Remote::Command(command, _) if command == "revocations.push" => None,
        _ => revocations::known(),
    }
}

/// The command of a fan-out, and the limit of each server's run if it is not the usual
/// one (a `job wait` or `job attach` waits as long as the job runs, or `--deadline`).
fn fleet_command(
    opts: &Opts,
    remote: Remote,
) -> Result<(cmdchan::fanout::Command, Option<Duration>), cmdchan::Error> {
    match remote {
        Remote::Command(name, args) => {
            let mut command = cmdchan::fanout::Command::new(&name, args)?;
            command.params = opts.params.clone();
            command.detach = opts.detach;
            // Read only if a server says its program takes stdin; then once, for all.
            let stdin = Box::new(tokio::io::stdin());
            command.stdin = Some(SharedInput::new(stdin, cmdchan::input::SHARED_LIMIT));
            Ok((command, None))
        }
        Remote::Approved(file) => {
            let mut command = cmdchan::fanout::Command::new(&file.command, file.args.clone())?;
            let stdin = Box::new(tokio::io::stdin());
            command.stdin = Some(SharedInput::new(stdin, cmdchan::input::SHARED_LIMIT));
            command.params = file.params.clone();
            command.detach = file.detach;
            command.approved = Some(file);
            Ok((command, None))
        }
        Remote::Job(action) => {
            let mut command = cmdchan::fanout::Command::new(action.command(), action.args())?;
            command.run_ids = action.ids();
            let per_server = action
                .waits()
                .then_some(opts.to.timeout.unwrap_or(FOLLOW_TIMEOUT));
            Ok((command, per_server))
        }
    }
}

/// A size in bytes: a number, or one with K, M or G (KiB, MiB, GiB; `16M`, `1GiB`).
fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &text[digits.len()..] {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use K, M or G")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size (16M, 1048576)"))
}

/// `--answer-timeout`: at least twice the server's sign-of-life interval.
fn parse_silence(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let least = cmdchan::ALIVE_EVERY * 2;
    match d >= least {
        true => Ok(d),
        false => Err(format!(
            "at least {}: the server shows a sign of life every {}",
            humantime::format_duration(least),
            humantime::format_duration(cmdchan::ALIVE_EVERY)
        )),
    }
}

fn parse_param(text: &str) -> Result<Param, String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok(Param {
        name: name.to_owned(),
        value: value.to_owned(),
    })
}
