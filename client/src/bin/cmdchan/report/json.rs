//! One JSON object at the end, for programs: `{"ok": true, "exit": N, "reply": …}` or,
//! for every failure, `{"ok": false, "exit": N, "error": …}`. A program's output is kept
//! for it, within `--max-output` per stream, and the object says what was cut.

use serde_json::{json, Value};

use cmdchan::{JobInfo, Output, Reply, Stream};

use super::{exit_json, jobs, reply_exit, reply_json, Failed, Report};
use crate::exit::Exit;
use crate::keep;
use crate::print::{self, Closed};

#[derive(Debug)]
pub struct Json {
    fail_truncated: bool,
    kept: keep::Store,
}

impl Json {
    pub fn new(fail_truncated: bool, max_output: u64) -> Self {
        Self {
            fail_truncated,
            kept: keep::Store::new(1, max_output, true),
        }
    }

    /// A program's exit with what it printed.
    fn program(&self, info: &cmdchan::ExitInfo) -> Value {
        let mut shown = self.printed();
        shown["exit"] = exit_json(info);
        shown
    }

    /// What the program printed (kept within `--max-output`).
    fn printed(&self) -> Value {
        let (out, err) = (
            self.kept.get(0, Stream::Stdout),
            self.kept.get(0, Stream::Stderr),
        );
        cmdchan::json::printed_json(&out.data, out.cut(), &err.data, err.cut())
    }

    fn line(&self, exit: Exit, reply: Value) -> Exit {
        let line = cmdchan::json::ok_json(exit, reply);
        match print::out_line(&line.to_string()) {
            Ok(()) => exit,
            Err(Closed) => Exit::StdoutClosed,
        }
    }
}

impl Report for Json {
    fn output(&mut self, out: &Output) -> Result<(), Closed> {
        self.kept.add(0, out.stream, &out.data);
        Ok(())
    }

    fn reply(&mut self, reply: &Reply) -> Exit {
        let exit = reply_exit(reply, self.fail_truncated);
        let reply = match reply {
            Reply::Exit(info) => self.program(info),
            other => reply_json(other),
        };
        self.line(exit, reply)
    }

    fn failed(&mut self, failed: &Failed) -> Exit {
        let line = json!({ "ok": false, "exit": failed.exit.code(), "error": failed.json() });
        match print::out_line(&line.to_string()) {
            Ok(()) => failed.exit,
            Err(Closed) => Exit::StdoutClosed,
        }
    }

    fn jobs(&mut self, list: &[JobInfo], exit: Exit, table: bool) -> Exit {
        let mut reply = match table {
            true => json!({}),
            false => self.printed(),
        };
        reply["jobs"] = json!(list.iter().map(jobs::job_json).collect::<Vec<_>>());
        self.line(exit, reply)
    }
}
