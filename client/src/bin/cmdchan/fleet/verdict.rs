//! What became of each server of a fan-out, and of the run: a server's class (ran and
//! exited 0, exited with another status — each status its own class —, refused,
//! unreachable, timed out, not started, or not given its stdin) and its status in words;
//! the summary of the classes and of why the run stopped, and the exit status that is
//! the bitwise OR of what happened anywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use cmdchan::fanout::{NotStarted, Outcome, Stop};
use cmdchan::inventory::fold;
use cmdchan::{Error, ErrorCode, Reply, ZoneError};

use crate::exit::{Exit, LocalCode};
use crate::terminal;

/// Exit status bits of a fan-out.
const BIT_NONZERO: u8 = 1;
const BIT_REFUSED: u8 = 2;
const BIT_UNREACHABLE: u8 = 4;
const BIT_TIMED_OUT: u8 = 8;

/// What became of a server, for the summary and the exit status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Ok,
    /// Ran, and ended otherwise than exit 0: how, in words (`exit 3`, `signal 9`).
    NonZero(String),
    Refused(&'static str),
    Unreachable(&'static str),
    TimedOut,
    NotStarted,
    /// The client could not give the program its stdin (unreadable, or too large to
    /// hold for every server): the program was stopped.
    NoStdin,
}

impl Class {
    pub fn of(outcome: &Outcome) -> Class {
        match outcome {
            o if o.succeeded() => Class::Ok,
            Outcome::Ran(Reply::Exit(info)) => {
                Class::NonZero(match (info.timed_out, info.code, info.signal) {
                    (true, ..) => "timed out on the server".into(),
                    (false, Some(code), _) => format!("exit {code}"),
                    (false, None, Some(signal)) => format!("signal {signal}"),
                    (false, None, None) => "no exit status".into(),
                })
            }
            Outcome::Ran(_) => Class::NonZero("a job failed or is gone".into()),
            // The first run is still going after the retries: no answer in time.
            Outcome::Failed(Error::Refused(f)) if f.code == ErrorCode::InProgress => {
                Class::TimedOut
            }
            Outcome::Failed(Error::Refused(f)) => Class::Refused(f.code.name()),
            Outcome::Failed(e @ Error::Zone(ZoneError::Missing(..))) => {
                Class::Refused(LocalCode::of(e).name())
            }
            Outcome::Failed(Error::Silent(_)) | Outcome::TimedOut => Class::TimedOut,
            Outcome::Failed(Error::Input(_)) => Class::NoStdin,
            Outcome::Failed(e) => Class::Unreachable(LocalCode::of(e).name()),
            Outcome::NotStarted(_) => Class::NotStarted,
        }
    }

    fn bit(&self) -> u8 {
        match self {
            Class::Ok | Class::NoStdin => 0,
            Class::NonZero(_) => BIT_NONZERO,
            Class::Refused(_) => BIT_REFUSED,
            Class::Unreachable(_) => BIT_UNREACHABLE,
            Class::TimedOut | Class::NotStarted => BIT_TIMED_OUT,
        }
    }

    /// The summary's line for the class (refusals and unreachable split by code).
    pub fn label(&self) -> String {
        match self {
            Class::Ok => "ran, exit 0".into(),
            Class::NonZero(how) => format!("ran, {how}"),
            Class::Refused(code) => format!("refused ({code})"),
            Class::Unreachable(code) => format!("unreachable ({code})"),
            Class::TimedOut => "timed out".into(),
            Class::NotStarted => "not started".into(),
            Class::NoStdin => "stdin not given".into(),
        }
    }

    /// The summary's key for the class in JSON.
    pub fn json_key(&self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::NonZero(_) => "nonzero",
            Class::Refused(_) => "refused",
            Class::Unreachable(_) => "unreachable",
            Class::TimedOut => "timed_out",
            Class::NotStarted => "not_started",
            Class::NoStdin => "no_stdin",
        }
    }
}

/// One server's status in words, for everything but a clean exit 0.
pub fn status_text(outcome: &Outcome, per_server: Duration) -> String {
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
        Outcome::NotStarted(NotStarted::Deadline) => "not started: the deadline passed".into(),
        Outcome::NotStarted(NotStarted::Stopped(stop)) => format!("not started: the run {stop}"),
    }
}

/// The run in classes: which servers ended how.
#[derive(Debug)]
pub struct Summary {
    pub servers: usize,
    pub classes: BTreeMap<Class, Vec<String>>,
    /// Why the run stopped before its last server, with the servers a check failed on.
    pub stop: Option<(Stop, Vec<String>)>,
    /// The run's ID, when it started jobs (`--detach`): what finds them again.
    pub run: Option<String>,
}

impl Summary {
    /// `classes[host]` for every server (`None`: never heard of, as not started).
    pub fn of(
        names: &[String],
        classes: &[Option<Class>],
        run: Option<String>,
        stop: Option<Stop>,
    ) -> Self {
        let mut by_class: BTreeMap<Class, Vec<String>> = BTreeMap::new();
        for (name, class) in names.iter().zip(classes) {
            let class = class.clone().unwrap_or(Class::NotStarted);
            by_class.entry(class).or_default().push(name.clone());
        }
        Self {
            servers: names.len(),
            classes: by_class,
            run,
            stop: stop.map(|stop| {
                let checked = match &stop.why {
                    cmdchan::fanout::StopWhy::Check { failed } => {
                        failed.iter().map(|&h| names[h].clone()).collect()
                    }
                    _ => Vec::new(),
                };
                (stop, checked)
            }),
        }
    }

    /// 0 when every server ran and exited 0; else the OR of the classes' bits. Stdin
    /// that could not be given is one failure of the client's, the same everywhere:
    /// its own status says so rather than a mix of bits.
    pub fn exit(&self) -> Exit {
        if self.classes.contains_key(&Class::NoStdin) {
            return Exit::NoInput;
        }
        let bits = self.bits();
        match bits {
            0 => Exit::Ok,
            bits => Exit::Remote(bits),
        }
    }

    pub fn bits(&self) -> u8 {
        self.classes
            .keys()
            .fold(0, |bits, class| bits | class.bit())
    }

    /// The summary for people: a line per class, its servers folded into ranges, and
    /// why the run stopped.
    pub fn text(&self) -> String {
        // One server's result says it all: its own lines said how it went.
        if self.servers == 1 && self.stop.is_none() {
            return String::new();
        }
        let plural = if self.servers == 1 { "" } else { "s" };
        let mut text = format!("cmdchan: {} server{plural}", self.servers);
        if let Some(run) = &self.run {
            text.push_str(&format!(", run {run}"));
        }
        text.push('\n');
        for (class, names) in &self.classes {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            text.push_str(&format!(
                "  {:<30} {:>5}  {}\n",
                class.label(),
                names.len(),
                fold(&names)
            ));
        }
        if let Some((stop, checked)) = &self.stop {
            text.push_str(&format!("cmdchan: the run {stop}"));
            if !checked.is_empty() {
                let names: Vec<&str> = checked.iter().map(String::as_str).collect();
                text.push_str(&format!(" ({})", fold(&names)));
            }
            text.push('\n');
        }
        text
    }
}
