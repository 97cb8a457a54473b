//! Text for people: a program's output passes through as it comes, as with ssh (binary
//! safe); a built-in's reply in words; what the output did not say (a timeout, a cut)
//! and every failure on stderr.

use cmdchan::{JobInfo, Output, Reply};

use super::{exit_notes, jobs, reply_exit, reply_text, Failed, Report};
use crate::exit::Exit;
use crate::print::{self, Closed};

#[derive(Debug)]
pub struct Text {
    fail_truncated: bool,
}

impl Text {
    pub fn new(fail_truncated: bool) -> Self {
        Self { fail_truncated }
    }
}

impl Report for Text {
    fn output(&mut self, out: &Output) -> Result<(), Closed> {
        print::write(out.stream, &out.data)
    }

    fn reply(&mut self, reply: &Reply) -> Exit {
        let exit = reply_exit(reply, self.fail_truncated);
        let shown = match reply {
            Reply::Exit(info) => {
                for note in exit_notes(info) {
                    print::err_line(&format!("cmdchan: {note}"));
                }
                Ok(())
            }
            other => print::write(cmdchan::Stream::Stdout, reply_text(other).as_bytes()),
        };
        match shown {
            Ok(()) => exit,
            Err(Closed) => Exit::StdoutClosed,
        }
    }

    fn failed(&mut self, failed: &Failed) -> Exit {
        print::err_line(&format!("cmdchan: {}", failed.line));
        failed.exit
    }

    /// The table on stdout; on stderr what a job's end says beyond it, after its
    /// output or when the command fails for it.
    fn jobs(&mut self, list: &[JobInfo], exit: Exit, table: bool) -> Exit {
        if !table || exit != Exit::Ok {
            list.iter()
                .filter_map(jobs::end_note)
                .for_each(|note| print::err_line(&format!("cmdchan: {note}")));
        }
        if !table {
            return exit;
        }
        match print::write(cmdchan::Stream::Stdout, jobs::jobs_text(list).as_bytes()) {
            Ok(()) => exit,
            Err(Closed) => Exit::StdoutClosed,
        }
    }
}
