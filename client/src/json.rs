//! What `--json` says of one result, built in one place for the `cmdchan` command and
//! for programs that use the library (the Python package): a reply as JSON, a program's
//! exit and what it printed, a job, an error object, and the whole result object
//! (`{"ok": …, "exit": N, "reply"|"error": …}`).

use serde_json::{json, Value};

use cmdchan_common::time;

use crate::exit::{Exit, LocalCode};
use crate::fanout::Outcome;
use crate::{CommandInfo, Error, ExitInfo, JobInfo, JobState, ParamKind, Reply};

/// What a program printed, as the JSON object shows it: each stream as text (or base64
/// when it is not UTF-8), and whether it was cut at the caller's cap.
pub fn printed_json(stdout: &[u8], stdout_cut: bool, stderr: &[u8], stderr_cut: bool) -> Value {
    let (out, out_encoding) = text_or_base64(stdout);
    let (err, err_encoding) = text_or_base64(stderr);
    json!({
        "stdout": out,
        "stdout_encoding": out_encoding,
        "stdout_cut": stdout_cut,
        "stderr": err,
        "stderr_encoding": err_encoding,
        "stderr_cut": stderr_cut,
    })
}

/// The whole object of a result that came: `{"ok": true, "exit": N, "reply": …}`.
pub fn ok_json(exit: Exit, reply: Value) -> Value {
    json!({ "ok": true, "exit": exit.code(), "reply": reply })
}

/// A failure's JSON error object, the one place it is made: its code's name and number
/// (the server's, or the client's own), the message, and for an error of a call the
/// server's `retry_after_ms` (`None`: left out, for a failure found before any server
/// was asked).
pub fn error_json(
    code: &str,
    number: u16,
    message: &str,
    retry_after_ms: Option<Option<u64>>,
) -> Value {
    let mut error = json!({ "code": code, "number": number, "message": message });
    if let Some(retry) = retry_after_ms {
        error["retry_after_ms"] = json!(retry);
    }
    error
}

/// An error of a call: its code's name and number, message and `retry_after_ms`.
pub fn error_of(err: &Error) -> (&'static str, u16, String, Option<u64>) {
    match err {
        Error::Refused(f) => (
            f.code.name(),
            f.code.number(),
            f.message.clone(),
            f.retry_after_ms,
        ),
        other => {
            let local = LocalCode::of(other);
            (local.name(), local.number(), other.to_string(), None)
        }
    }
}

/// The whole object of a failed call: `{"ok": false, "exit": N, "error": …}`.
pub fn failed_json(err: &Error) -> Value {
    let (code, number, message, retry) = error_of(err);
    json!({ "ok": false, "exit": Exit::of(err).code(), "error": error_json(code, number, &message, Some(retry)) })
}

/// Output as JSON text: the text itself if it is UTF-8, else base64, and which.
pub fn text_or_base64(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (openssl::base64::encode_block(bytes), "base64"),
    }
}

pub fn exit_json(info: &ExitInfo) -> Value {
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

pub fn command_json(c: &CommandInfo) -> Value {
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

pub fn kind_json(kind: &ParamKind) -> Value {
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

/// A reply as JSON (a program's exit with its output is the JSON report's own).
pub fn reply_json(reply: &Reply) -> Value {
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
        Reply::Job(job) => json!({ "job": job_json(job) }),
        Reply::Revocations(state) => json!({ "revocations": {
            "version": state.version,
            "issued_at": (state.issued_at != 0).then(|| time::rfc3339(state.issued_at)),
            "applied": state.applied,
        } }),
        Reply::Jobs(list) => json!({ "jobs": list.iter().map(job_json).collect::<Vec<_>>() }),
    }
}

/// The exit status of a reply, `--fail-truncated` taken into account.
pub fn reply_exit(reply: &Reply, fail_truncated: bool) -> Exit {
    match reply {
        Reply::Exit(info) if info.truncated && fail_truncated => Exit::Truncated,
        Reply::Exit(info) => Exit::of_program(info),
        _ => Exit::Ok,
    }
}

pub fn job_json(j: &JobInfo) -> Value {
    let (code, signal) = match j.state {
        JobState::Exited(code) => (Some(code), None),
        JobState::Signalled(signal) => (None, Some(signal)),
        _ => (None, None),
    };
    let ended = j.state != JobState::Running && j.ended_at != 0;
    json!({
        "id": hex::encode(j.id),
        "state": state_key(j.state),
        "code": code,
        "signal": signal,
        "client": j.client,
        "command": j.command,
        "started_at": (j.started_at != 0).then(|| time::rfc3339(j.started_at)),
        "ended_at": (j.ended_at != 0).then(|| time::rfc3339(j.ended_at)),
        "output_bytes": j.output_bytes,
        "kept_bytes": j.kept_bytes,
        "stdout_sha256": ended.then(|| hex::encode(j.stdout_sha256)),
        "stderr_sha256": ended.then(|| hex::encode(j.stderr_sha256)),
        "run": j.run.map(hex::encode),
    })
}

/// The state's name in JSON.
pub fn state_key(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Exited(_) => "exited",
        JobState::Signalled(_) => "signalled",
        JobState::TimedOut => "timed_out",
        JobState::Lost => "lost",
        JobState::Expired => "expired",
        JobState::Unknown => "unknown",
    }
}

/// The exit status one server's outcome in a fan-out stands for (none: it never
/// answered, timed out or was not started).
pub fn outcome_exit(outcome: &Outcome) -> Option<u8> {
    match outcome {
        Outcome::Ran(Reply::Exit(info)) => Some(Exit::of_program(info).code()),
        Outcome::Ran(_) => Some(0),
        Outcome::Failed(e) => Some(Exit::of(e).code()),
        Outcome::TimedOut | Outcome::NotStarted(_) => None,
    }
}

/// One server's object in a fan-out's JSON: `server`, `address`, `ok`, `exit`, what it
/// printed (`printed`, from [`printed_json`]), `duration_ms`, and `program`, `reply` or
/// `error`; `status` is the words for a server that timed out or was not started.
pub fn host_json(
    server: &str,
    address: &str,
    outcome: &Outcome,
    printed: Value,
    duration: std::time::Duration,
    status: &str,
) -> Value {
    let mut line = json!({
        "server": server,
        "address": address,
        "ok": outcome.succeeded(),
        "exit": outcome_exit(outcome),
        "duration_ms": u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    });
    if let (Some(line), Value::Object(printed)) = (line.as_object_mut(), printed) {
        line.extend(printed);
    }
    // A fan-out's error objects carry no retry time: the client retried already.
    let error = |code: &str, number: u16, message: &str| error_json(code, number, message, None);
    match outcome {
        Outcome::Ran(Reply::Exit(info)) => line["program"] = exit_json(info),
        Outcome::Ran(reply) => line["reply"] = reply_json(reply),
        Outcome::Failed(e) => {
            let (code, number, message, _) = error_of(e);
            line["error"] = error(code, number, &message);
        }
        Outcome::TimedOut => {
            let code = LocalCode::Timeout;
            line["error"] = error(code.name(), code.number(), status);
        }
        Outcome::NotStarted(_) => {
            let code = LocalCode::NotStarted;
            line["error"] = error(code.name(), code.number(), status);
        }
    }
    line
}
