//! `cmdchan --on SELECTOR COMMAND …`: one command on the servers of the inventory a
//! selector picks. Output is a stream of lines prefixed `NAME: ` (never interleaved,
//! stdout and stderr apart), groups of identical results (`--gather`) or JSON Lines;
//! then a summary of who ran, failed or never answered, and an exit status that is the
//! bitwise OR of what happened anywhere.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use cmdchan::fanout::{self, Event, HostResult, Outcome, Plan};
use cmdchan::inventory::{fold, Host, Inventory, Selector};
use cmdchan::{Connector, Credential, Error, ErrorCode, Options, Reply, Stream, ZoneError};

use crate::exit::Exit;
use crate::keep::{self, OutDir};
use crate::output::{exit_json, message, reply_json, reply_text, text_or_base64};
use crate::terminal;

/// Above this many servers, a terminal user is asked before anything starts.
const ASK_ABOVE: usize = 50;

/// Exit status bits of a fan-out.
const BIT_NONZERO: u8 = 1;
const BIT_REFUSED: u8 = 2;
const BIT_UNREACHABLE: u8 = 4;
const BIT_TIMED_OUT: u8 = 8;

/// The client's options for running on many servers.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Servers to run on, from the inventory: names, globs (web*), ranges (web[01-40]) and
    /// labels (tier=web), comma-separated for a union; given twice, a server must match both.
    #[arg(long, global = true, value_name = "SELECTOR")]
    pub on: Vec<Selector>,
    /// The inventory for --on [default: $CMDCHAN_INVENTORY, then
    /// ~/.config/cmdchan/inventory.toml].
    #[arg(long, global = true, env = "CMDCHAN_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// With --on: servers worked on at once.
    #[arg(long, global = true, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// With --on: no server starts after this long, and running ones are cut off.
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// With --on: run in batches of N servers or P% of them, each after the last is done.
    #[arg(long, global = true, value_name = "N|P%", value_parser = parse_batch)]
    pub batch: Option<Batch>,
    /// With --batch: stop before the next batch once more servers than this failed.
    #[arg(long, global = true, requires = "batch")]
    pub max_failures: Option<usize>,
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

impl Batch {
    fn size(self, servers: usize) -> usize {
        match self {
            Batch::Servers(n) => n,
            Batch::Percent(p) => (servers * usize::from(p)).div_ceil(100).max(1),
        }
    }
}

/// The inventory `--inventory` (or the environment) names, else the user's.
pub fn inventory(path: Option<&Path>) -> Result<Inventory, String> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .ok_or("no inventory: pass --inventory FILE or set CMDCHAN_INVENTORY")?;
            config.join("cmdchan/inventory.toml")
        }
    };
    Inventory::load(&path)
}

/// The servers the selectors pick; none is a usage error.
pub fn select(args: &FleetArgs) -> Result<Vec<Host>, String> {
    let hosts = inventory(args.inventory.as_deref())?.select(&args.on)?;
    if hosts.is_empty() {
        return Err("the selector picks no server of the inventory".into());
    }
    Ok(hosts)
}

/// `cmdchan hosts`: what a selector picks, one server per line, without contacting any.
pub fn hosts(args: &FleetArgs) -> Result<(), String> {
    let hosts = inventory(args.inventory.as_deref())?.select(&args.on)?;
    let mut out = std::io::stdout().lock();
    for h in hosts {
        let mut line = format!("{} {}", h.name, h.address);
        if let Some(zone) = &h.zone {
            line.push_str(&format!(" zone={zone}"));
        }
        for (k, v) in &h.labels {
            line.push_str(&format!(" {k}={v}"));
        }
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

/// Runs `command` on `hosts` and prints as `view` says; returns the summed-up status.
pub async fn run(
    args: &FleetArgs,
    view: View,
    cred: Credential,
    hosts: Vec<Host>,
    command: fanout::Command,
    options: Options,
    max_output: u64,
) -> Exit {
    // Each server's whole run is bounded by the connection timeout given.
    let per_server = options.timeout;
    if hosts.len() > ASK_ABOVE && !args.yes && !confirm(&command.name, hosts.len()) {
        eprintln!("cmdchan: nothing was run");
        return Exit::Usage;
    }
    if let Err(e) = zones_known(&cred, &hosts, &options) {
        eprintln!("cmdchan: {e}");
        return Exit::Usage;
    }
    let connector = match Connector::new(Arc::new(cred)) {
        Ok(connector) => connector,
        Err(e) => return crate::output::error(crate::output::Mode::Text, &e),
    };
    let plan = Plan {
        parallel: usize::from(args.parallel),
        per_server,
        deadline: args.deadline,
        batch: args.batch.map(|b| b.size(hosts.len())),
        max_failures: args.max_failures,
        options,
    };
    let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    let files = match &args.out_dir {
        Some(dir) => match OutDir::prepare(dir, &names, max_output) {
            Ok(files) => Some(files),
            Err(e) => {
                eprintln!("cmdchan: {e}");
                return Exit::Usage;
            }
        },
        None => None,
    };
    let mut printer = Printer::new(view, &hosts, files, max_output, args.raw);
    let mut events = fanout::fan_out(connector, hosts, command, plan);
    while let Some(event) = events.recv().await {
        match event {
            Event::Output { host, output } => printer.output(host, output.stream, &output.data),
            Event::Done(result) => printer.done(result, per_server),
        }
    }
    printer.finish()
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

/// What became of a server, for the summary and the exit status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Ok,
    NonZero,
    Refused(&'static str),
    Unreachable(&'static str),
    TimedOut,
    NotStarted,
    /// The client could not give the program its stdin (unreadable, or too large to
    /// hold for every server): the program was stopped.
    NoStdin,
}

impl Class {
    fn of(outcome: &Outcome) -> Class {
        match outcome {
            o if o.succeeded() => Class::Ok,
            Outcome::Ran(_) => Class::NonZero,
            // The first run is still going after the retries: no answer in time.
            Outcome::Failed(Error::Refused(f)) if f.code == ErrorCode::InProgress => {
                Class::TimedOut
            }
            Outcome::Failed(Error::Refused(f)) => Class::Refused(f.code.name()),
            Outcome::Failed(e @ Error::Zone(ZoneError::Missing(..))) => {
                Class::Refused(Exit::local_code(e).0)
            }
            Outcome::Failed(Error::Silent(_)) | Outcome::TimedOut => Class::TimedOut,
            Outcome::Failed(Error::Input(_)) => Class::NoStdin,
            Outcome::Failed(e) => Class::Unreachable(Exit::local_code(e).0),
            Outcome::NotStarted => Class::NotStarted,
        }
    }

    fn bit(&self) -> u8 {
        match self {
            Class::Ok => 0,
            Class::NonZero => BIT_NONZERO,
            Class::Refused(_) => BIT_REFUSED,
            Class::Unreachable(_) => BIT_UNREACHABLE,
            Class::TimedOut | Class::NotStarted => BIT_TIMED_OUT,
            Class::NoStdin => 0,
        }
    }

    /// The summary's line for the class (refusals and unreachable split by code).
    fn label(&self) -> String {
        match self {
            Class::Ok => "ran, exit 0".into(),
            Class::NonZero => "ran, exit not 0".into(),
            Class::Refused(code) => format!("refused ({code})"),
            Class::Unreachable(code) => format!("unreachable ({code})"),
            Class::TimedOut => "timed out".into(),
            Class::NotStarted => "not started".into(),
            Class::NoStdin => "stdin not given".into(),
        }
    }

    fn json_key(&self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::NonZero => "nonzero",
            Class::Refused(_) => "refused",
            Class::Unreachable(_) => "unreachable",
            Class::TimedOut => "timed_out",
            Class::NotStarted => "not_started",
            Class::NoStdin => "no_stdin",
        }
    }
}

/// One server's status in words, for everything but a clean exit 0.
fn status_text(outcome: &Outcome, per_server: Duration) -> String {
    match outcome {
        Outcome::Ran(Reply::Exit(info)) => match (info.timed_out, info.code, info.signal) {
            (true, _, _) => "the program timed out on the server (exit 124)".into(),
            (false, _, Some(signal)) => format!("the program was ended by signal {signal}"),
            (false, Some(code), None) => format!("exit {code}"),
            (false, None, None) => "the program ended without a status".into(),
        },
        Outcome::Ran(_) => "ok".into(),
        Outcome::Failed(Error::Refused(f)) => {
            format!("refused ({}): {}", f.code, terminal::line(&f.message))
        }
        Outcome::Failed(e) => terminal::line(&e.to_string()).into_owned(),
        Outcome::TimedOut => format!(
            "no answer within {} (or before the deadline)",
            humantime::format_duration(per_server)
        ),
        Outcome::NotStarted => "not started (the deadline passed, or a batch failed)".into(),
    }
}

/// The exit status one server's outcome would have given a single `cmdchan`.
fn exit_code(outcome: &Outcome) -> Option<u8> {
    match outcome {
        Outcome::Ran(Reply::Exit(info)) => Some(Exit::of_program(info).code()),
        Outcome::Ran(_) => Some(0),
        Outcome::Failed(e) => Some(Exit::of(e).code()),
        Outcome::TimedOut | Outcome::NotStarted => None,
    }
}

/// What makes two servers' results the same: status, stdout, stderr.
type GroupKey<'a> = (String, &'a [u8], &'a [u8]);

/// A partial line longer than this is printed as a line of its own: a server that
/// never sends a line break must not fill the client's memory.
const LONGEST_LINE: usize = 64 * 1024;

struct Printer {
    view: View,
    names: Vec<String>,
    addresses: Vec<String>,
    /// Per server, per stream: a partial line not yet printed (stream view).
    partial: Vec<[Vec<u8>; 2]>,
    /// All output within the caps (gather and JSON views).
    kept: keep::Store,
    files: Option<OutDir>,
    /// Per server once done: its class and status line.
    results: Vec<Option<(Class, String)>>,
    /// Per stream: program output is escaped before it is printed (a terminal, and no
    /// `--raw`).
    escape: [bool; 2],
    progress: bool,
    done: usize,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Printer {
    fn new(view: View, hosts: &[Host], files: Option<OutDir>, max_output: u64, raw: bool) -> Self {
        let n = hosts.len();
        Self {
            view,
            names: hosts.iter().map(|h| h.name.to_string()).collect(),
            addresses: hosts.iter().map(|h| h.address.clone()).collect(),
            partial: vec![Default::default(); n],
            kept: keep::Store::new(n, max_output, view != View::Stream),
            files,
            results: vec![None; n],
            escape: [
                !raw && std::io::stdout().is_terminal(),
                !raw && std::io::stderr().is_terminal(),
            ],
            progress: std::io::stderr().is_terminal(),
            done: 0,
        }
    }

    fn output(&mut self, host: usize, stream: Stream, data: &[u8]) {
        self.kept.add(host, stream, data);
        if let Some(files) = &mut self.files {
            files.write(host, stream, data);
        }
        if self.view != View::Stream {
            return;
        }
        let buffer = &mut self.partial[host][index(stream)];
        buffer.extend_from_slice(data);
        let end = match buffer.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if buffer.len() > LONGEST_LINE => buffer.len(),
            None => return,
        };
        let lines: Vec<u8> = buffer.drain(..end).collect();
        self.print_output(host, stream, &lines);
    }

    /// A program's output lines, escaped where they go to a terminal.
    fn print_output(&mut self, host: usize, stream: Stream, lines: &[u8]) {
        match self.escape[index(stream)] {
            true => {
                let safe = terminal::lines(lines).into_owned();
                self.print_lines(host, stream, safe.as_bytes());
            }
            false => self.print_lines(host, stream, lines),
        }
    }

    /// Whole lines, each prefixed, in one write so no other server's line lands inside.
    fn print_lines(&mut self, host: usize, stream: Stream, lines: &[u8]) {
        let prefix = format!("{}: ", self.names[host]);
        let mut text = Vec::with_capacity(lines.len() + 16);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                text.push(b'\n');
            }
        }
        self.clear_progress();
        write_all(stream, &text);
    }

    fn done(&mut self, result: HostResult, per_server: Duration) {
        let host = result.host;
        let class = Class::of(&result.outcome);
        let status = status_text(&result.outcome, per_server);
        if self.view == View::Stream {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let rest = std::mem::take(&mut self.partial[host][index(stream)]);
                if !rest.is_empty() {
                    self.print_output(host, stream, &rest);
                }
            }
            if let Outcome::Ran(
                reply @ (Reply::Pong
                | Reply::Echo(_)
                | Reply::Whoami(_)
                | Reply::Commands(_)
                | Reply::Describe(_)),
            ) = &result.outcome
            {
                self.print_lines(host, Stream::Stdout, reply_text(reply).as_bytes());
            }
            if let Outcome::Ran(Reply::Exit(info)) = &result.outcome {
                if info.truncated {
                    let line = format!(
                        "cmdchan: output truncated: {} bytes, more than the command's limit\n",
                        info.output_bytes
                    );
                    self.print_lines(host, Stream::Stderr, line.as_bytes());
                }
            }
            if class != Class::Ok {
                let line = format!("cmdchan: {status}\n");
                self.print_lines(host, Stream::Stderr, line.as_bytes());
            }
        }
        let cut = self.kept.cut_note(host);
        if let Some(files) = &mut self.files {
            let reply = match &result.outcome {
                Outcome::Ran(reply) => reply_text(reply),
                _ => String::new(),
            };
            let notes: Vec<String> = [(!result.outcome.succeeded()).then(|| status.clone())]
                .into_iter()
                .flatten()
                .chain(cut.clone())
                .collect();
            files.finish(host, &reply, &notes);
        }
        if self.view == View::Json {
            self.clear_progress();
            let line = self.json_line(&result, &status);
            write_all(Stream::Stdout, format!("{line}\n").as_bytes());
        }
        if self.view == View::Gather {
            if let Outcome::Ran(reply) = &result.outcome {
                self.kept.add_reply(host, &reply_text(reply));
            }
        }
        self.results[host] = Some((class, status));
        self.done += 1;
        self.show_progress();
    }

    fn json_line(&self, result: &HostResult, status: &str) -> Value {
        let host = result.host;
        let (out, err) = (
            self.kept.get(host, Stream::Stdout),
            self.kept.get(host, Stream::Stderr),
        );
        let (stdout, stdout_encoding) = text_or_base64(&out.data);
        let (stderr, stderr_encoding) = text_or_base64(&err.data);
        let mut line = json!({
            "server": self.names[host],
            "address": self.addresses[host],
            "ok": result.outcome.succeeded(),
            "exit": exit_code(&result.outcome),
            "stdout": stdout,
            "stdout_encoding": stdout_encoding,
            "stderr": stderr,
            "stderr_encoding": stderr_encoding,
            "stdout_cut": out.cut(),
            "stderr_cut": err.cut(),
            "duration_ms": u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        });
        match &result.outcome {
            Outcome::Ran(Reply::Exit(info)) => line["program"] = exit_json(info),
            Outcome::Ran(reply) => line["reply"] = reply_json(reply),
            Outcome::Failed(e) => {
                let (code, number) = match e {
                    Error::Refused(f) => (f.code.name(), f.code.number()),
                    other => Exit::local_code(other),
                };
                line["error"] = json!({ "code": code, "number": number, "message": message(e) });
            }
            Outcome::TimedOut | Outcome::NotStarted => {
                let code = if matches!(result.outcome, Outcome::TimedOut) {
                    "timeout"
                } else {
                    "not started"
                };
                line["error"] =
                    json!({ "code": code, "number": Exit::number_of(code), "message": status });
            }
        }
        line
    }

    /// Groups (gather view), the summary, and the exit status.
    fn finish(self) -> Exit {
        self.clear_progress();
        let mut classes: BTreeMap<Class, Vec<&str>> = BTreeMap::new();
        let mut bits = 0;
        for (host, result) in self.results.iter().enumerate() {
            let (class, _) = result
                .as_ref()
                .map_or((Class::NotStarted, ""), |(c, s)| (c.clone(), s));
            bits |= class.bit();
            classes.entry(class).or_default().push(&self.names[host]);
        }
        if self.view == View::Gather {
            self.print_groups();
        }
        if self.view == View::Json {
            let mut summary = json!({ "servers": self.names.len(), "exit": bits });
            for (class, names) in &classes {
                let key = class.json_key();
                match class {
                    Class::Refused(code) | Class::Unreachable(code) => {
                        summary[key][*code] = json!(names);
                    }
                    _ => summary[key] = json!(names),
                }
            }
            write_all(
                Stream::Stdout,
                format!("{}\n", json!({ "summary": summary })).as_bytes(),
            );
        } else {
            let mut text = format!("cmdchan: {} servers\n", self.names.len());
            for (class, names) in &classes {
                text.push_str(&format!(
                    "  {:<30} {:>5}  {}\n",
                    class.label(),
                    names.len(),
                    fold(names)
                ));
            }
            write_all(Stream::Stderr, text.as_bytes());
        }
        // Stdin that could not be given is one failure of the client's, the same
        // everywhere: its own status says so rather than a mix of bits.
        if classes.contains_key(&Class::NoStdin) {
            return Exit::NoInput;
        }
        if bits == 0 {
            Exit::Ok
        } else {
            Exit::Remote(bits)
        }
    }

    /// Servers with the same status and output, printed once under their folded names.
    fn print_groups(&self) {
        let mut groups: BTreeMap<GroupKey, Vec<&str>> = BTreeMap::new();
        for (host, result) in self.results.iter().enumerate() {
            // Unreachable servers differ only in their addresses: one group per code.
            let mut status = match result {
                None => "not started".to_owned(),
                Some((Class::Ok, _)) => "exit 0".to_owned(),
                Some((
                    class @ (Class::Unreachable(_) | Class::TimedOut | Class::NotStarted),
                    _,
                )) => class.label(),
                Some((_, status)) => status.clone(),
            };
            if let Some(cut) = self.kept.cut_note(host) {
                status = format!("{status} ({cut})");
            }
            let (out, err) = (
                self.kept.get(host, Stream::Stdout).data.as_slice(),
                self.kept.get(host, Stream::Stderr).data.as_slice(),
            );
            groups
                .entry((status, out, err))
                .or_default()
                .push(&self.names[host]);
        }
        for ((status, out, err), names) in groups {
            let header = format!("==== {} ({}): {status}\n", fold(&names), names.len());
            write_all(Stream::Stdout, header.as_bytes());
            self.write_output(Stream::Stdout, out);
            if !err.is_empty() {
                write_all(Stream::Stderr, header.as_bytes());
                self.write_output(Stream::Stderr, err);
            }
        }
    }

    /// A group's output, escaped where it goes to a terminal.
    fn write_output(&self, stream: Stream, bytes: &[u8]) {
        match self.escape[index(stream)] {
            true => write_all(stream, terminal::lines(bytes).as_bytes()),
            false => write_all(stream, bytes),
        }
    }

    fn show_progress(&self) {
        if self.progress && self.view != View::Stream {
            let total = self.names.len();
            eprint!("\r[{}/{total} done]", self.done);
        }
    }

    fn clear_progress(&self) {
        if self.progress && self.view != View::Stream && self.done > 0 {
            eprint!("\r\x1b[K");
        }
    }
}

/// Writes to stdout or stderr; a closed stdout ends the client as in a single run.
fn write_all(stream: Stream, bytes: &[u8]) {
    let result = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe && stream == Stream::Stdout {
            std::process::exit(crate::output::STDOUT_CLOSED);
        }
    }
}
