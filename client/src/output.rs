//! How results are printed: text for people, one JSON object (`--json`) for programs.
//! In text mode a program's output has already been streamed; in JSON mode it is
//! collected and printed with the exit.

use std::io::Write;

use serde_json::{json, Value};

use cmdchan::{CommandInfo, Error, ExitInfo, Output, ParamInfo, ParamKind, Reply, Stream};
use cmdchan_common::time;

use crate::exit::Exit;

/// Where program output goes while it streams.
#[derive(Debug, Default)]
pub struct Sink {
    json: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Sink {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            ..Self::default()
        }
    }

    /// Text mode: straight to our own stdout or stderr. JSON mode: kept for the end
    /// (the server's output limit bounds it).
    pub fn write(&mut self, out: &Output) {
        match (self.json, out.stream) {
            (true, Stream::Stdout) => self.stdout.extend_from_slice(&out.data),
            (true, Stream::Stderr) => self.stderr.extend_from_slice(&out.data),
            (false, Stream::Stdout) => write_now(&mut std::io::stdout().lock(), &out.data),
            (false, Stream::Stderr) => write_now(&mut std::io::stderr().lock(), &out.data),
        }
    }

    /// Prints the final reply; returns the exit status.
    pub fn reply(self, reply: &Reply) -> Exit {
        let exit = match reply {
            Reply::Exit(info) => Exit::of_program(info),
            _ => Exit::Ok,
        };
        match (self.json, reply) {
            (true, Reply::Exit(info)) => {
                let stdout = String::from_utf8_lossy(&self.stdout);
                let stderr = String::from_utf8_lossy(&self.stderr);
                let reply = json!({ "exit": exit_json(info), "stdout": stdout, "stderr": stderr });
                println!(
                    "{}",
                    json!({ "ok": true, "exit": exit.code(), "reply": reply })
                );
            }
            (true, reply) => println!(
                "{}",
                json!({ "ok": true, "exit": exit.code(), "reply": reply_json(reply) })
            ),
            (false, Reply::Exit(info)) => exit_text(info),
            (false, reply) => print!("{}", reply_text(reply)),
        }
        exit
    }
}

fn write_now(w: &mut impl Write, data: &[u8]) {
    // A closed stdout (`cmdchan … | head`) is not an error worth reporting.
    let _ = w.write_all(data).and_then(|()| w.flush());
}

pub fn error(as_json: bool, err: &Error) -> Exit {
    let exit = Exit::of(err);
    match (as_json, err) {
        (true, Error::Refused(f)) => {
            let e = json!({
                "code": f.code.name(),
                "number": f.code.number(),
                "message": f.message,
                "retry_after_ms": f.retry_after_ms,
            });
            println!(
                "{}",
                json!({ "ok": false, "exit": exit.code(), "error": e })
            );
        }
        (true, other) => println!(
            "{}",
            json!({ "ok": false, "exit": exit.code(), "error": { "message": other.to_string() } })
        ),
        (false, Error::Refused(f)) => eprintln!("cmdchan: refused ({}): {}", f.code, f.message),
        (false, other) => eprintln!("cmdchan: {other}"),
    }
    exit
}

pub fn local_error(as_json: bool, message: &str, exit: Exit) -> Exit {
    match as_json {
        true => println!(
            "{}",
            json!({ "ok": false, "exit": exit.code(), "error": { "message": message } })
        ),
        false => eprintln!("cmdchan: {message}"),
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
}

fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Pong => "pong\n".into(),
        Reply::Echo(args) => format!("{}\n", args.join(" ")),
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
                .map(|c| format!("{:width$}  {}\n", c.name, c.description))
                .collect()
        }
        Reply::Describe(c) => describe_text(c),
        Reply::Exit(_) => String::new(),
    }
}

fn describe_text(c: &CommandInfo) -> String {
    let mut text = format!("{}: {}\n", c.name, c.description);
    for p in &c.params {
        text += &format!("  {}  {}\n", p.name, param_text(p));
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

fn exit_json(info: &ExitInfo) -> Value {
    json!({
        "code": info.code,
        "signal": info.signal,
        "timed_out": info.timed_out,
        "duration_ms": info.duration_ms,
        "output_bytes": info.output_bytes,
        "truncated": info.truncated,
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

fn reply_json(reply: &Reply) -> Value {
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
