//! How results are printed: text for people, one JSON object (`--json`) for programs.
//! In text mode a program's output has already been streamed; in JSON mode it is
//! collected and printed with the exit.

use std::io::Write;

use serde_json::{json, Value};

use cmdchan::{CommandInfo, Error, ExitInfo, Output, ParamInfo, ParamKind, Reply, Stream};
use cmdchan_common::time;

use crate::exit::Exit;
use crate::keep;
use crate::terminal;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Text,
    /// One JSON object at the end.
    Json,
    /// One Nagios status line, and an exit status of 0–3.
    Nagios,
}

impl Mode {
    pub fn of(json: bool, nagios: bool) -> Self {
        match (json, nagios) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Nagios,
            (false, false) => Mode::Text,
        }
    }
}

/// Where program output goes while it streams.
#[derive(Debug)]
pub struct Sink {
    mode: Mode,
    fail_truncated: bool,
    /// What JSON and Nagios modes keep for the end, capped (`--max-output`).
    kept: keep::Store,
}

/// Exit status when our stdout was closed: what a shell shows for a process killed
/// by SIGPIPE (128 + 13).
pub(crate) const STDOUT_CLOSED: i32 = 141;

impl Sink {
    pub fn new(mode: Mode, fail_truncated: bool, max_output: u64) -> Self {
        Self {
            mode,
            fail_truncated,
            kept: keep::Store::new(1, max_output, mode != Mode::Text),
        }
    }

    /// Text and Nagios modes: stderr straight through; stdout straight through in text
    /// mode. JSON mode, and stdout in Nagios mode: kept for the end (the server's output
    /// limit bounds it).
    ///
    /// A closed stdout (`cmdchan … | head -1`) ends the client at once, as SIGPIPE ends
    /// other programs in a pipeline: the connection goes with it, and the server stops
    /// the remote program (SIGTERM, then SIGKILL).
    pub fn write(&mut self, out: &Output) {
        match (self.mode, out.stream) {
            (Mode::Json | Mode::Nagios, Stream::Stdout) | (Mode::Json, Stream::Stderr) => {
                self.kept.add(0, out.stream, &out.data);
            }
            (Mode::Text, Stream::Stdout) => {
                let mut stdout = std::io::stdout().lock();
                if let Err(e) = stdout.write_all(&out.data).and_then(|()| stdout.flush()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        std::process::exit(STDOUT_CLOSED);
                    }
                }
            }
            (Mode::Text | Mode::Nagios, Stream::Stderr) => {
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(&out.data).and_then(|()| stderr.flush());
            }
        }
    }

    /// Prints the final reply; returns the exit status.
    pub fn reply(self, reply: &Reply) -> Exit {
        let mut exit = match reply {
            Reply::Exit(info) => Exit::of_program(info),
            _ => Exit::Ok,
        };
        let truncated = matches!(reply, Reply::Exit(info) if info.truncated);
        if truncated && self.fail_truncated {
            exit = Exit::Truncated;
        }
        match (self.mode, reply) {
            (Mode::Json, Reply::Exit(info)) => {
                let (out, err) = (
                    self.kept.get(0, Stream::Stdout),
                    self.kept.get(0, Stream::Stderr),
                );
                let (stdout, out_encoding) = text_or_base64(&out.data);
                let (stderr, err_encoding) = text_or_base64(&err.data);
                let reply = json!({
                    "exit": exit_json(info),
                    "stdout": stdout,
                    "stdout_encoding": out_encoding,
                    "stdout_cut": out.cut(),
                    "stderr": stderr,
                    "stderr_encoding": err_encoding,
                    "stderr_cut": err.cut(),
                });
                println!(
                    "{}",
                    json!({ "ok": true, "exit": exit.code(), "reply": reply })
                );
            }
            (Mode::Json, reply) => println!(
                "{}",
                json!({ "ok": true, "exit": exit.code(), "reply": reply_json(reply) })
            ),
            (Mode::Nagios, reply) => {
                return nagios_reply(reply, &self.kept.get(0, Stream::Stdout).data)
            }
            (Mode::Text, Reply::Exit(info)) => exit_text(info),
            (Mode::Text, reply) => print!("{}", reply_text(reply)),
        }
        exit
    }
}

/// Output as JSON text: the text itself if it is UTF-8, else base64, and which.
pub(crate) fn text_or_base64(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (openssl::base64::encode_block(bytes), "base64"),
    }
}

/// Nagios: a program that exited 0–3 is a plugin: its output and status pass through.
/// Anything else is one status line: CRITICAL for a timeout, UNKNOWN otherwise.
fn nagios_reply(reply: &Reply, stdout: &[u8]) -> Exit {
    match reply {
        Reply::Exit(info) if !info.timed_out && matches!(info.code, Some(0..=3)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(stdout);
            Exit::Remote(u8::try_from(info.code.unwrap_or(3)).unwrap_or(3))
        }
        Reply::Exit(info) if info.timed_out => nagios_line(2, "the check timed out on the server"),
        Reply::Exit(info) => {
            let how = match (info.code, info.signal) {
                (Some(code), _) => format!("the check exited {code}, outside 0-3"),
                (None, Some(signal)) => format!("the check was ended by signal {signal}"),
                (None, None) => "the check ended without a status".to_owned(),
            };
            nagios_line(3, &how)
        }
        other => nagios_line(0, reply_text(other).lines().next().unwrap_or("ok")),
    }
}

/// Prints `STATE: cmdchan: what` and returns the Nagios status.
fn nagios_line(status: u8, what: &str) -> Exit {
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][usize::from(status.min(3))];
    println!("{state}: cmdchan: {}", terminal::line(what));
    Exit::Remote(status)
}

pub fn error(mode: Mode, err: &Error) -> Exit {
    let exit = Exit::of(err);
    let (code, number) = match err {
        Error::Refused(f) => (f.code.name(), f.code.number()),
        other => Exit::local_code(other),
    };
    match mode {
        Mode::Json => {
            let retry_after_ms = match err {
                Error::Refused(f) => f.retry_after_ms,
                _ => None,
            };
            let e = json!({
                "code": code,
                "number": number,
                "message": message(err),
                "retry_after_ms": retry_after_ms,
            });
            println!(
                "{}",
                json!({ "ok": false, "exit": exit.code(), "error": e })
            );
        }
        Mode::Nagios => {
            let status = if matches!(err, Error::Silent(_)) {
                2
            } else {
                3
            };
            return nagios_line(status, &format!("{code}: {}", message(err)));
        }
        Mode::Text => match err {
            Error::Refused(f) => {
                eprintln!(
                    "cmdchan: refused ({}): {}",
                    f.code,
                    terminal::line(&f.message)
                );
            }
            other => eprintln!("cmdchan: {}", terminal::line(&other.to_string())),
        },
    }
    exit
}

pub(crate) fn message(err: &Error) -> String {
    match err {
        Error::Refused(f) => f.message.clone(),
        other => other.to_string(),
    }
}

/// An error found before any server was asked: `code` is one of the client's own
/// names (see [`Exit::local_code`]).
pub fn local_error(mode: Mode, code: &str, message: &str, exit: Exit) -> Exit {
    let number = Exit::number_of(code);
    match mode {
        Mode::Json => println!(
            "{}",
            json!({ "ok": false, "exit": exit.code(), "error": { "code": code, "number": number, "message": message } })
        ),
        Mode::Nagios => return nagios_line(3, &format!("{code}: {message}")),
        Mode::Text => eprintln!("cmdchan: {message}"),
    }
    exit
}

/// Only what the program's own output does not say: that it was stopped or cut.
fn exit_text(info: &ExitInfo) {
    if info.timed_out {
        eprintln!(
            "cmdchan: the command timed out on the server after {} ms and was stopped",
            info.duration_ms
        );
    }
    if info.truncated {
        eprintln!(
            "cmdchan: output truncated by the server's limit ({} bytes produced)",
            info.output_bytes
        );
    }
    if info.stdin_truncated {
        eprintln!("cmdchan: stdin was cut at the command's limit; the program got its start only");
    }
}

pub(crate) fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Pong => "pong\n".into(),
        Reply::Echo(args) => {
            let args: Vec<_> = args.iter().map(|a| terminal::line(a)).collect();
            format!("{}\n", args.join(" "))
        }
        Reply::Whoami(w) => {
            let servers: Vec<_> = w.grant.servers.iter().map(|s| s.as_str()).collect();
            format!(
                "name:    {}\nrole:    {}\nepoch:   {}\nexpires: {}\nservers: {}\nserver:  {}\n",
                w.name,
                w.grant.role,
                w.grant.epoch,
                w.grant.expires.map_or("never".into(), time::rfc3339),
                if servers.is_empty() {
                    "any".into()
                } else {
                    servers.join(", ")
                },
                w.server
            )
        }
        Reply::Commands(list) => {
            let width = list.iter().map(|c| c.name.len()).max().unwrap_or(0);
            list.iter()
                .map(|c| {
                    let name = terminal::line(&c.name);
                    format!("{name:width$}  {}\n", terminal::line(&c.description))
                })
                .collect()
        }
        Reply::Describe(c) => describe_text(c),
        Reply::Exit(_) => String::new(),
    }
}

/// Every piece of it came from the server: each is escaped as one line.
fn describe_text(c: &CommandInfo) -> String {
    let line = |t: &str| terminal::line(t).into_owned();
    let mut text = format!("{}: {}\n", line(&c.name), line(&c.description));
    for p in &c.params {
        text += &format!("  {}  {}\n", line(&p.name), line(&param_text(p)));
    }
    text
}

fn param_text(p: &ParamInfo) -> String {
    let mut parts = vec![match &p.kind {
        ParamKind::String { regex, max_len, .. } => match regex {
            Some(re) => format!("text matching {re}, at most {max_len} bytes"),
            None => format!("text, at most {max_len} bytes"),
        },
        ParamKind::Integer { min, max } => format!("integer {min}..={max}"),
        ParamKind::OneOf(values) => format!("one of {}", values.join(", ")),
        ParamKind::Flag => "flag (true or false)".into(),
    }];
    parts.push(if p.required {
        "required".into()
    } else {
        "optional".into()
    });
    if let Some(d) = &p.default {
        parts.push(format!("default {d}"));
    }
    if !p.allowed.is_empty() {
        parts.push(format!("this role may use only: {}", p.allowed.join(", ")));
    }
    if !p.description.is_empty() {
        parts.push(p.description.clone());
    }
    parts.join("; ")
}

pub(crate) fn exit_json(info: &ExitInfo) -> Value {
    json!({
        "code": info.code,
        "signal": info.signal,
        "timed_out": info.timed_out,
        "duration_ms": info.duration_ms,
        "output_bytes": info.output_bytes,
        "truncated": info.truncated,
        "stdin_truncated": info.stdin_truncated,
    })
}

fn command_json(c: &CommandInfo) -> Value {
    let params: Vec<Value> = c
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "kind": kind_json(&p.kind),
                "required": p.required,
                "default": p.default,
                "allowed": p.allowed,
                "secret": p.secret,
                "description": p.description,
            })
        })
        .collect();
    json!({ "name": c.name, "description": c.description, "params": params })
}

fn kind_json(kind: &ParamKind) -> Value {
    match kind {
        ParamKind::String {
            regex,
            max_len,
            allow_dash,
            allow_newline,
        } => {
            json!({ "type": "string", "regex": regex, "max_len": max_len, "allow_dash": allow_dash, "allow_newline": allow_newline })
        }
        ParamKind::Integer { min, max } => json!({ "type": "integer", "min": min, "max": max }),
        ParamKind::OneOf(values) => json!({ "type": "one-of", "values": values }),
        ParamKind::Flag => json!({ "type": "flag" }),
    }
}

pub(crate) fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Pong => json!("pong"),
        Reply::Echo(args) => json!({ "args": args }),
        Reply::Whoami(w) => json!({
            "name": w.name.as_str(),
            "role": w.grant.role.as_str(),
            "epoch": w.grant.epoch,
            "expires": w.grant.expires.map(time::rfc3339),
            "servers": w.grant.servers.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "server": w.server.as_str(),
        }),
        Reply::Commands(list) => json!(list.iter().map(command_json).collect::<Vec<_>>()),
        Reply::Describe(c) => command_json(c),
        Reply::Exit(info) => json!({ "exit": exit_json(info) }),
    }
}
