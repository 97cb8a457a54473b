//! How one server's result is shown: the interface each format implements (text for
//! people, one JSON object, one Nagios status line), and what every format shares: a
//! failure in its shown form, with its JSON error object built in one place, and
//! replies in words and as JSON.

pub mod jobs;
mod json;
mod nagios;
mod text;

use serde_json::Value;

use cmdchan::{CommandInfo, Error, ExitInfo, JobInfo, Output, ParamInfo, ParamKind, Reply};
use cmdchan_common::time;

use crate::exit::{Exit, LocalCode};
use crate::print::Closed;
use crate::terminal;

pub use cmdchan::json::{exit_json, reply_exit, reply_json};
pub use json::Json;
pub use nagios::Nagios;
pub use text::Text;

/// One format for one server's result.
pub trait Report {
    /// A piece of the program's output, as it comes.
    fn output(&mut self, out: &Output) -> Result<(), Closed>;
    /// The final reply; the exit status.
    fn reply(&mut self, reply: &Reply) -> Exit;
    /// A failure: the server's refusal, or the client's own; the exit status.
    fn failed(&mut self, failed: &Failed) -> Exit;
    /// The end of a `job` command: the jobs as the server knows them, shown as a table
    /// (`table`: a look at them) or only what their end says (after their output);
    /// `exit` is the command's status.
    fn jobs(&mut self, jobs: &[JobInfo], exit: Exit, table: bool) -> Exit;
}

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

    /// This mode's report; `max_output` caps what JSON and Nagios keep for the end.
    pub fn report(self, fail_truncated: bool, max_output: u64) -> Box<dyn Report + Send> {
        match self {
            Mode::Text => Box::new(Text::new(fail_truncated)),
            Mode::Json => Box::new(Json::new(fail_truncated, max_output)),
            Mode::Nagios => Box::new(Nagios::new(max_output)),
        }
    }
}

/// A failure as every format shows it.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The code's name and number: the server's (PROTOCOL.md §6) or the client's own.
    pub code: &'static str,
    pub number: u16,
    /// For people, as the server or the client said it.
    pub message: String,
    /// The text line after `cmdchan: `.
    pub line: String,
    /// For an error of a call: `retry_after_ms` (the server's; none for the client's).
    /// `None`: the field is left out (a failure found before any server was asked).
    pub retry_after_ms: Option<Option<u64>>,
    pub exit: Exit,
    /// A timeout: CRITICAL for Nagios, not UNKNOWN.
    pub timeout: bool,
}

impl Failed {
    pub fn of(err: &Error) -> Self {
        let (code, number, message, retry, line) = match err {
            Error::Refused(f) => (
                f.code.name(),
                f.code.number(),
                f.message.clone(),
                f.retry_after_ms,
                format!("refused ({}): {}", f.code, terminal::line(&f.message)),
            ),
            other => {
                let local = LocalCode::of(other);
                let text = other.to_string();
                let line = terminal::line(&text).into_owned();
                (local.name(), local.number(), text, None, line)
            }
        };
        Self {
            code,
            number,
            message,
            line,
            retry_after_ms: Some(retry),
            exit: Exit::of(err),
            timeout: matches!(err, Error::Silent(_)),
        }
    }

    /// A failure found before any server was asked (usage, the credential).
    pub fn local(code: LocalCode, message: &str, exit: Exit) -> Self {
        Self {
            code: code.name(),
            number: code.number(),
            message: message.to_owned(),
            line: message.to_owned(),
            retry_after_ms: None,
            exit,
            timeout: false,
        }
    }

    /// The JSON error object (made by the library, as for its other users).
    pub fn json(&self) -> Value {
        cmdchan::json::error_json(self.code, self.number, &self.message, self.retry_after_ms)
    }
}

/// Only what the program's own output does not say: that it was stopped or cut.
pub fn exit_notes(info: &ExitInfo) -> Vec<String> {
    let mut notes = Vec::new();
    if info.timed_out {
        notes.push(format!(
            "the command timed out on the server after {} ms and was stopped",
            info.duration_ms
        ));
    }
    if info.truncated {
        notes.push(format!(
            "output truncated by the server's limit ({} bytes produced)",
            info.output_bytes
        ));
    }
    if info.stdin_truncated {
        notes.push("stdin was cut at the command's limit; the program got its start only".into());
    }
    notes
}

/// A reply in words, every piece a server chose escaped; a program's exit has none
/// (its output said it).
pub fn reply_text(reply: &Reply) -> String {
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
        Reply::Job(job) => format!("{}\n", hex::encode(job.id)),
        Reply::Revocations(state) => match state.version {
            0 => "no revocation list\n".into(),
            v => format!(
                "revocation list version {v}, signed {}{}\n",
                time::rfc3339(state.issued_at),
                if state.applied { ", applied now" } else { "" }
            ),
        },
        Reply::Jobs(list) => jobs::jobs_text(list),
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
