//! `cmdchan --on SELECTOR COMMAND …`: one command on the servers of the inventory a
//! selector picks, shown as one of three views (a stream of prefixed lines, groups of
//! identical results, JSON Lines), each a [`Show`]. This file turns the options into a
//! plan, runs the fan-out and hands each event to the view, the `--out-dir` files and
//! the progress line; `verdict` says what became of each server and of the run.

mod gather;
mod lines;
mod stream;
mod verdict;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cmdchan::fanout::{self, Event, HostResult, Outcome, Plan, Rollout, Threshold};
use cmdchan::inventory::{fold, Host, Inventory, Selector, Source};
use cmdchan::{Connector, Credential, Options, Stream};

use self::verdict::{status_text, Class, Summary};
use crate::exit::Exit;
use crate::keep::OutDir;
use crate::print::{self, Closed};
use crate::report::{self, Failed};

/// Above this many servers, a terminal user is asked before anything starts.
const ASK_ABOVE: usize = 50;

/// The client's options for running on many servers.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Servers to run on, from the inventory: names, globs (web*), ranges (web[01-40]),
    /// labels (tier=web), zones (zone=db) and groups (@web), comma-separated for a union;
    /// given twice, a server must match both.
    #[arg(long, global = true, value_name = "SELECTOR",
          add = clap_complete::engine::ArgValueCompleter::new(crate::complete::on))]
    pub on: Vec<Selector>,
    /// The inventory: a TOML file, srv:NAME[@IP:PORT] (DNS SRV records), or exec:COMMAND
    /// whose output is TOML or Ansible's --list JSON; repeat to merge several [default:
    /// $CMDCHAN_INVENTORY, then ~/.config/cmdchan/inventory.toml].
    #[arg(
        long,
        global = true,
        env = "CMDCHAN_INVENTORY",
        value_name = "FILE|srv:NAME|exec:COMMAND"
    )]
    pub inventory: Vec<Source>,
    /// With --on: servers worked on at once.
    #[arg(long, global = true, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// With --on: no server starts after this long, and running ones are cut off. With
    /// `job wait` and `job attach`: stop waiting then.
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// With --on: run in batches of N servers or P% of them, each after the last is done.
    #[arg(long, global = true, value_name = "N|P%", value_parser = parse_batch)]
    pub batch: Option<Batch>,
    /// With --on: run N servers first, as a batch of their own; stop unless every one of
    /// them succeeds.
    #[arg(long, global = true, value_name = "N")]
    pub canary: Option<usize>,
    /// With --on: start no more servers once more than N (or P% of all) failed.
    #[arg(long, global = true, value_name = "N|P%", value_parser = parse_threshold)]
    pub max_failures: Option<Threshold>,
    /// With --batch or --canary: wait this long between batches.
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub pause: Option<Duration>,
    /// With --batch or --canary: a remote command ("NAME ARG…") that must succeed on every
    /// server of a finished batch before the next starts.
    #[arg(long, global = true, value_name = "COMMAND")]
    pub check: Option<String>,
    /// With --on: print identical results once, their servers folded (web[01-03]).
    #[arg(long, global = true)]
    pub gather: bool,
    /// With --on: write each server's output to DIR/NAME.stdout and DIR/NAME.stderr, as
    /// it arrives (new files only: an existing one, or a link, is refused).
    #[arg(long, global = true, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// With --on: print program output as it is, control characters included, also on a
    /// terminal (there they are escaped by default, so a server cannot drive it).
    #[arg(long, global = true)]
    pub raw: bool,
    /// With --on: do not ask before running on more than 50 servers.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Batch {
    Servers(usize),
    Percent(u8),
}

fn parse_batch(text: &str) -> Result<Batch, String> {
    let bad = || format!("{text:?}: expected a number of servers or a percentage (25%)");
    match text.strip_suffix('%') {
        Some(p) => match p.parse::<u8>() {
            Ok(p @ 1..=100) => Ok(Batch::Percent(p)),
            _ => Err(bad()),
        },
        None => match text.parse::<usize>() {
            Ok(n @ 1..) => Ok(Batch::Servers(n)),
            _ => Err(bad()),
        },
    }
}

fn parse_threshold(text: &str) -> Result<Threshold, String> {
    match parse_batch(text) {
        Ok(Batch::Servers(n)) => Ok(Threshold::Servers(n)),
        Ok(Batch::Percent(p)) => Ok(Threshold::Percent(p)),
        Err(_) if text == "0" => Ok(Threshold::Servers(0)),
        Err(_) => Err(format!(
            "{text:?}: expected a number of servers or a percentage (10%)"
        )),
    }
}

impl Batch {
    fn size(self, servers: usize) -> usize {
        match self {
            Batch::Servers(n) => n,
            Batch::Percent(p) => (servers * usize::from(p)).div_ceil(100).max(1),
        }
    }
}

/// The inventory the sources give (merged), or the default file.
pub fn inventory(sources: &[Source]) -> Result<Inventory, String> {
    cmdchan::inventory::load(sources)
}

pub use cmdchan::inventory::default_path as default_inventory;

/// The servers the selectors pick; none is a usage error.
pub fn select(args: &FleetArgs) -> Result<Vec<Host>, String> {
    let hosts = inventory(&args.inventory)?.select(&args.on)?;
    if hosts.is_empty() {
        return Err("the selector picks no server of the inventory".into());
    }
    Ok(hosts)
}

/// `cmdchan hosts`: what a selector picks, one server per line (its name, address, zone,
/// labels, and the source it came from), without contacting any.
pub fn hosts(args: &FleetArgs) -> Result<(), String> {
    let hosts = inventory(&args.inventory)?.select(&args.on)?;
    let mut out = std::io::stdout().lock();
    for h in hosts {
        let mut line = format!("{} {}", h.name, h.address);
        if let Some(zone) = &h.zone {
            line.push_str(&format!(" zone={zone}"));
        }
        for (k, v) in &h.labels {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push_str(&format!(" from={}", h.source));
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

/// How the results are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Stream,
    Gather,
    Json,
}

/// One view of a fan-out: it is handed each piece of output, each server's end, and
/// the summary, and prints what it shows of them.
trait Show {
    fn output(&mut self, host: usize, stream: Stream, data: &[u8]) -> Result<(), Closed>;
    fn done(&mut self, done: &Done<'_>) -> Result<(), Closed>;
    fn finish(&mut self, summary: &Summary) -> Result<(), Closed>;

    /// What of a server's output was cut (for its `--out-dir` files), if the view keeps
    /// its output.
    fn cut(&self, _host: usize) -> Option<String> {
        None
    }

    /// Whether a progress line goes with this view (not with the stream of lines).
    fn progress(&self) -> bool {
        true
    }
}

/// One server's end, as every view sees it.
#[derive(Debug)]
struct Done<'a> {
    host: usize,
    name: &'a str,
    address: &'a str,
    outcome: &'a Outcome,
    class: &'a Class,
    /// Its status in words (see [`verdict::status_text`]).
    status: &'a str,
    duration: Duration,
}

/// How to run and show a fan-out.
#[derive(Debug)]
pub struct Run {
    pub view: View,
    pub command: fanout::Command,
    /// The limit of each server's whole run.
    pub per_server: Duration,
    pub options: Options,
    pub max_output: u64,
}

/// Runs the command on `hosts` and shows it; returns the summed-up status.
pub async fn run(args: &FleetArgs, cred: Credential, hosts: Vec<Host>, run: Run) -> Exit {
    let per_server = run.per_server;
    if hosts.len() > ASK_ABOVE && !args.yes && !confirm(&run.command.name, hosts.len()) {
        print::err_line("cmdchan: nothing was run");
        return Exit::Usage;
    }
    if let Err(e) = zones_known(&cred, &hosts, &run.options) {
        print::err_line(&format!("cmdchan: {e}"));
        return Exit::Usage;
    }
    let check = match check_command(args) {
        Ok(check) => check,
        Err(e) => {
            print::err_line(&format!("cmdchan: {e}"));
            return Exit::Usage;
        }
    };
    let connector = match Connector::new(Arc::new(cred)) {
        Ok(connector) => connector,
        Err(e) => return report::Mode::Text.report(false, 0).failed(&Failed::of(&e)),
    };
    let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    let addresses: Vec<String> = hosts.iter().map(|h| h.address.clone()).collect();
    let mut files = match &args.out_dir {
        Some(dir) => match OutDir::prepare(dir, &names, run.max_output) {
            Ok(files) => Some(files),
            Err(e) => {
                print::err_line(&format!("cmdchan: {e}"));
                return Exit::Usage;
            }
        },
        None => None,
    };
    let escape = [
        !args.raw && std::io::stdout().is_terminal(),
        !args.raw && std::io::stderr().is_terminal(),
    ];
    let mut view: Box<dyn Show + Send> = match run.view {
        View::Stream => Box::new(stream::Lines::new(&names, escape)),
        View::Gather => Box::new(gather::Gather::new(&names, run.max_output, escape)),
        View::Json => Box::new(lines::JsonLines::new(names.len(), run.max_output)),
    };
    let run_id = run.command.detach.then(|| hex::encode(run.command.run));
    if let (Some(id), View::Stream | View::Gather) = (&run_id, run.view) {
        // First, so that the run can be found however the fan-out ends.
        if print::out_line(&format!("run {id}")).is_err() {
            return Exit::StdoutClosed;
        }
    }
    let mut progress = Progress::new(view.progress(), names.len());
    let plan = Plan {
        rollout: Rollout {
            parallel: usize::from(args.parallel),
            canary: args.canary,
            batch: args.batch.map(|b| b.size(hosts.len())),
            max_failures: args.max_failures,
            pause: args.pause,
        },
        per_server,
        deadline: args.deadline,
        check,
        options: run.options,
    };
    let mut classes = vec![None; names.len()];
    let mut stop = None;
    let mut events = fanout::fan_out(connector, hosts, run.command, plan);
    while let Some(event) = events.recv().await {
        let shown = match event {
            Event::Output { host, output } => {
                if let Some(files) = &mut files {
                    files.write(host, output.stream, &output.data);
                }
                view.output(host, output.stream, &output.data)
            }
            Event::Done(result) => {
                let class = Class::of(&result.outcome);
                let status = status_text(&result.outcome, per_server);
                let done = Done {
                    host: result.host,
                    name: &names[result.host],
                    address: &addresses[result.host],
                    outcome: &result.outcome,
                    class: &class,
                    status: &status,
                    duration: result.duration,
                };
                progress.clear();
                let shown = view.done(&done);
                if let Some(files) = &mut files {
                    finish_files(files, &result, &status, view.cut(result.host));
                }
                classes[result.host] = Some(class);
                progress.tick();
                shown
            }
            Event::Stopped(stopped) => {
                stop = Some(stopped);
                Ok(())
            }
        };
        if shown.is_err() {
            return Exit::StdoutClosed;
        }
    }
    progress.clear();
    let summary = Summary::of(&names, &classes, run_id, stop);
    match view.finish(&summary) {
        Ok(()) => summary.exit(),
        Err(Closed) => Exit::StdoutClosed,
    }
}

/// `--check`: the remote command to run on each finished batch; only where there are
/// batches to run it between.
fn check_command(args: &FleetArgs) -> Result<Option<fanout::Command>, String> {
    let staged = args.batch.is_some() || args.canary.is_some();
    if !staged && (args.check.is_some() || args.pause.is_some()) {
        return Err("--check and --pause work between batches: give --batch or --canary".into());
    }
    let Some(check) = &args.check else {
        return Ok(None);
    };
    let mut words = check.split_whitespace().map(str::to_owned);
    let name = words.next().ok_or("--check needs a command")?;
    fanout::Command::new(&name, words.collect())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Ends a server's `--out-dir` files: a built-in's reply on stdout, what went wrong
/// and what was cut on stderr.
fn finish_files(files: &mut OutDir, result: &HostResult, status: &str, cut: Option<String>) {
    let reply = match &result.outcome {
        Outcome::Ran(reply) => report::reply_text(reply),
        _ => String::new(),
    };
    let failed = (!result.outcome.succeeded()).then(|| status.to_owned());
    let notes: Vec<String> = failed.into_iter().chain(cut).collect();
    files.finish(result.host, &reply, &notes);
}

/// `[done/total done]` on stderr when it is a terminal, cleared before anything else
/// is printed.
#[derive(Debug)]
struct Progress {
    on: bool,
    done: usize,
    total: usize,
}

impl Progress {
    fn new(wanted: bool, total: usize) -> Self {
        Self {
            on: wanted && std::io::stderr().is_terminal(),
            done: 0,
            total,
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        if self.on {
            let _ = print::write(
                Stream::Stderr,
                format!("\r[{}/{} done]", self.done, self.total).as_bytes(),
            );
        }
    }

    fn clear(&self) {
        if self.on && self.done > 0 {
            let _ = print::write(Stream::Stderr, b"\r\x1b[K");
        }
    }
}

/// Every server's zone is known (its own, `--zone`, or the credential's only zone): a
/// credential of several zones never guesses which one a server is in.
fn zones_known(cred: &Credential, hosts: &[Host], options: &Options) -> Result<(), String> {
    let unknown: Vec<&str> = hosts
        .iter()
        .filter(|h| h.zone.is_none() && options.zone.is_none())
        .map(|h| h.name.as_str())
        .collect();
    if unknown.is_empty() || cred.zones.len() == 1 {
        return Ok(());
    }
    let held: Vec<&str> = cred.zones.keys().map(|z| z.as_str()).collect();
    Err(format!(
        "the inventory names no zone for {} and the credential holds several ({}): give those servers a zone, or pass --zone; nothing was run",
        fold(&unknown),
        held.join(", ")
    ))
}

/// Asks on the terminal; anything but yes is no. Not a terminal: no question, yes.
fn confirm(command: &str, servers: usize) -> bool {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return true;
    }
    eprint!("cmdchan: run {command} on {servers} servers? [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}
