//! `--json` for a fan-out: JSON Lines, one object per server as it finishes (`server`,
//! `address`, `ok`, `exit`, its output with encodings and what was cut, `duration_ms`,
//! and `program`, `reply` or `error`), then `{"summary": …}`.

use serde_json::{json, Value};

use cmdchan::Stream;

use super::verdict::{Class, Summary};
use super::{Done, Show};
use crate::keep;
use crate::print::{self, Closed};

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
        let printed = cmdchan::json::printed_json(&out.data, out.cut(), &err.data, err.cut());
        cmdchan::json::host_json(
            done.name,
            done.address,
            done.outcome,
            printed,
            done.duration,
            done.status,
        )
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
