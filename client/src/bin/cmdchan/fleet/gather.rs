//! `--gather`: servers with the same status and output printed once, under their names
//! folded into ranges (`==== web[01-03,07] (4): exit 0`); what was cut said in the
//! header; the summary on stderr.

use std::collections::BTreeMap;

use cmdchan::fanout::Outcome;
use cmdchan::inventory::fold;
use cmdchan::Stream;

use super::verdict::{Class, Summary};
use super::{Done, Show};
use crate::keep;
use crate::print::{self, Closed};
use crate::report::reply_text;
use crate::terminal;

/// What makes two servers' results the same: status, stdout, stderr.
type GroupKey<'a> = (String, &'a [u8], &'a [u8]);

#[derive(Debug)]
pub struct Gather {
    names: Vec<String>,
    kept: keep::Store,
    /// Per server once done: its class and status line.
    results: Vec<Option<(Class, String)>>,
    escape: [bool; 2],
}

impl Gather {
    pub fn new(names: &[String], max_output: u64, escape: [bool; 2]) -> Self {
        Self {
            names: names.to_vec(),
            kept: keep::Store::new(names.len(), max_output, true),
            results: vec![None; names.len()],
            escape,
        }
    }

    /// A group's output, escaped where it goes to a terminal.
    fn write_output(&self, stream: Stream, bytes: &[u8]) -> Result<(), Closed> {
        match self.escape[super::stream::index(stream)] {
            true => print::write(stream, terminal::lines(bytes).as_bytes()),
            false => print::write(stream, bytes),
        }
    }
}

impl Show for Gather {
    fn output(&mut self, host: usize, stream: Stream, data: &[u8]) -> Result<(), Closed> {
        self.kept.add(host, stream, data);
        Ok(())
    }

    fn done(&mut self, done: &Done<'_>) -> Result<(), Closed> {
        if let Outcome::Ran(reply) = done.outcome {
            self.kept.add_reply(done.host, &reply_text(reply));
        }
        self.results[done.host] = Some((done.class.clone(), done.status.to_owned()));
        Ok(())
    }

    fn finish(&mut self, summary: &Summary) -> Result<(), Closed> {
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
            let out = self.kept.get(host, Stream::Stdout).data.as_slice();
            let err = self.kept.get(host, Stream::Stderr).data.as_slice();
            groups
                .entry((status, out, err))
                .or_default()
                .push(&self.names[host]);
        }
        for ((status, out, err), names) in groups {
            let header = format!("==== {} ({}): {status}\n", fold(&names), names.len());
            print::write(Stream::Stdout, header.as_bytes())?;
            self.write_output(Stream::Stdout, out)?;
            if !err.is_empty() {
                print::write(Stream::Stderr, header.as_bytes())?;
                self.write_output(Stream::Stderr, err)?;
            }
        }
        print::write(Stream::Stderr, summary.text().as_bytes())
    }

    fn cut(&self, host: usize) -> Option<String> {
        self.kept.cut_note(host)
    }
}
