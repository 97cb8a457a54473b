//! `cmdchan`: send one command to a cmdchan server and print the result.

mod doctor;
mod exit;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use cmdchan::{Client, Credential, Ident, Options, Param};

use crate::exit::Exit;

/// Send a command to a cmdchan server over TLS-PSK.
///
/// Exit status: a program's own status (124 if it timed out, 128+N if signal N ended
/// it); otherwise 0 ok; 64 usage; 69 cannot connect or handshake refused; 70 server
/// error; 75 temporary, retry later (busy, store unavailable); 76 protocol error; 77
/// refused: authentication (bad tag, revoked, expired, wrong server); 78 credential file
/// problem; 79 refused: replay or stale; 80 refused: policy (forbidden, unknown command,
/// bad arguments).
#[derive(Debug, Parser)]
#[command(name = "cmdchan", version = cmdchan_common::protocol::VERSION_LINE)]
struct Opts {
    #[command(flatten)]
    to: Target,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Longest silence from the server while a command runs.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    answer_timeout: Duration,
    /// Times to reconnect and resend (same command ID, so it never runs twice) if the
    /// connection is lost before the answer.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// A named parameter, NAME=VALUE (repeat for several).
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<Param>,
    /// The command to run (try `commands`).
    command: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `cmdchan doctor --cred PATH [--server HOST:PORT] [--server-id ID]`: checks the
/// credential and the path to the server, and says what to fix.
#[derive(Debug, Parser)]
#[command(name = "cmdchan doctor")]
struct DoctorOpts {
    #[command(flatten)]
    to: Target,
}

/// Which credential, and which server, both `cmdchan` and `cmdchan doctor` use.
#[derive(Debug, clap::Args)]
struct Target {
    /// Credential file (from `cmdchan-server admin provision`).
    #[arg(long, env = "CMDCHAN_CRED")]
    cred: PathBuf,
    /// Server address HOST:PORT [default: the credential's address].
    #[arg(long)]
    server: Option<String>,
    /// Server ID to address [default: the grant's only server, else the host of --server].
    #[arg(long)]
    server_id: Option<Ident>,
    /// Limit for connecting and the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn main() -> ExitCode {
    // `doctor` as the first argument is the local check; a remote command of that name
    // can still be run with an option first (`cmdchan --cred C doctor`).
    // `generate DIR` writes completions and man pages (for packaging; not listed).
    if std::env::args().nth(1).as_deref() == Some("generate") {
        let Some(dir) = std::env::args_os().nth(2) else {
            return Exit::Usage.into();
        };
        return match cmdchan_common::assets::generate(Opts::command(), dir.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cmdchan: cannot write completions and man pages: {e}");
                Exit::Software.into()
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("doctor") {
        return match DoctorOpts::try_parse_from(std::env::args().skip(1)) {
            Ok(d) => block_on(doctor::run(
                &d.to.cred,
                d.to.server.as_deref(),
                d.to.server_id,
                d.to.timeout,
            )),
            Err(e) => usage(&e),
        };
    }
    let opts = match Opts::try_parse() {
        Ok(opts) => opts,
        Err(e) => return usage(&e),
    };
    block_on(run(opts))
}

fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    match e.use_stderr() {
        true => Exit::Usage.into(),
        false => ExitCode::SUCCESS,
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
    runtime.block_on(work).into()
}

async fn run(opts: Opts) -> Exit {
    let cred = match Credential::load(&opts.to.cred) {
        Ok(cred) => cred,
        Err(e) => return output::local_error(opts.json, &e.to_string(), Exit::Config),
    };
    let options = Options {
        target: opts.to.server_id,
        timeout: opts.to.timeout,
        answer_timeout: opts.answer_timeout,
        retries: opts.retries,
        ..Options::default()
    };
    let mut client = match Client::connect(cred, opts.to.server.as_deref(), options).await {
        Ok(client) => client,
        Err(e) => return output::error(opts.json, &e),
    };
    let mut request = match client.request(&opts.command, &opts.args) {
        Ok(request) => request,
        Err(e) => return output::error(opts.json, &e),
    };
    request.params = opts.params;
    let mut sink = output::Sink::new(opts.json);
    let result = client
        .run_with_retry(&mut request, |out| sink.write(out))
        .await;
    client.close().await;
    match result {
        Ok(reply) => sink.reply(&reply),
        Err(e) => output::error(opts.json, &e),
    }
}

fn parse_param(text: &str) -> Result<Param, String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok(Param {
        name: name.to_owned(),
        value: value.to_owned(),
    })
}
