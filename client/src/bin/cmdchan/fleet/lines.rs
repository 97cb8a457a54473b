//! `--json` for a fan-out: JSON Lines, one object per server as it finishes (`server`,
//! `address`, `ok`, `exit`, its output with encodings and what was cut, `duration_ms`,
//! and `program`, `reply` or `error`), then `{"summary": …}`.

use serde_json::{json, Value};

use cmdchan::fanout::Outcome;
use cmdchan::{Reply, Stream};

use super::verdict::{exit_code, Class, Summary};
use super::{Done, Show};
use crate::exit::{Exit, LocalCode};
use crate::keep;
use crate::print::{self, Closed};
use crate::report::{exit_json, reply_json, text_or_base64, Failed};

#[derive(Debug)]
pub struct JsonLines {
    kept: keep::Store,
}

impl JsonLines {
    pub fn new(servers: usize, max_output: u64) -> Self {
        Self {
            kept: keep::Store::new(servers, max_output, true),
        }
    }

    fn line(&self, done: &Done<'_>) -> Value {
        let (out, err) = (
            self.kept.get(done.host, Stream::Stdout),
            self.kept.get(done.host, Stream::Stderr),
        );
        let (stdout, stdout_encoding) = text_or_base64(&out.data);
        let (stderr, stderr_encoding) = text_or_base64(&err.data);
        let mut line = json!({
            "server": done.name,
            "address": done.address,
            "ok": done.outcome.succeeded(),
            "exit": exit_code(done.outcome),
            "stdout": stdout,
            "stdout_encoding": stdout_encoding,
            "stderr": stderr,
            "stderr_encoding": stderr_encoding,
            "stdout_cut": out.cut(),
            "stderr_cut": err.cut(),
            "duration_ms": u64::try_from(done.duration.as_millis()).unwrap_or(u64::MAX),
        });
        let failed = match done.outcome {
            Outcome::Ran(Reply::Exit(info)) => {
                line["program"] = exit_json(info);
                return line;
            }
            Outcome::Ran(reply) => {
                line["reply"] = reply_json(reply);
                return line;
            }
            Outcome::Failed(e) => Failed::of(e),
            Outcome::TimedOut => Failed::local(LocalCode::Timeout, done.status, Exit::Timeout),
            Outcome::NotStarted(_) => {
                Failed::local(LocalCode::NotStarted, done.status, Exit::Timeout)
            }
        };
        // A fan-out's error objects carry no retry time: the client retried already.
        line["error"] = Failed {
            retry_after_ms: None,
            ..failed
        }
        .json();
        line
    }
}

impl Show for JsonLines {
    fn output(&mut self, host: usize, stream: Stream, data: &[u8]) -> Result<(), Closed> {
        self.kept.add(host, stream, data);
        Ok(())
    }

    fn done(&mut self, done: &Done<'_>) -> Result<(), Closed> {
        print::out_line(&self.line(done).to_string())
    }

    fn finish(&mut self, summary: &Summary) -> Result<(), Closed> {
        let mut shown = json!({ "servers": summary.servers, "exit": summary.bits() });
        if let Some(run) = &summary.run {
            shown["run"] = json!(run);
        }
        for (class, names) in &summary.classes {
            let key = class.json_key();
            match class {
                Class::Refused(code) | Class::Unreachable(code) => {
                    shown[key][*code] = json!(names);
                }
                // Every status but 0 under one key, in name order.
                Class::NonZero(_) => {
                    let mut all: Vec<String> =
                        serde_json::from_value(shown[key].take()).unwrap_or_default();
                    all.extend(names.iter().cloned());
                    all.sort();
                    shown[key] = json!(all);
                }
                _ => shown[key] = json!(names),
            }
        }
        if let Some((stop, checked)) = &summary.stop {
            shown["stopped"] = json!({ "batch": stop.batch, "batches": stop.batches, "why": stop.to_string(), "check_failed": checked });
        }
        print::out_line(&json!({ "summary": shown }).to_string())
    }

    fn cut(&self, host: usize) -> Option<String> {
        self.kept.cut_note(host)
    }
}
