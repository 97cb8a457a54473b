//! The stream of lines: each server's output as whole lines prefixed `NAME: `, never two
//! servers' lines mixed, stdout and stderr apart; a line saying why on stderr for every
//! server that did not exit 0; the summary on stderr.

use cmdchan::fanout::Outcome;
use cmdchan::{Reply, Stream};

use super::verdict::{Class, Summary};
use super::{Done, Show};
use crate::print::{self, Closed};
use crate::report::reply_text;
use crate::terminal;

/// A partial line longer than this is printed as a line of its own: a server that
/// never sends a line break must not fill the client's memory.
const LONGEST_LINE: usize = 64 * 1024;

#[derive(Debug)]
pub struct Lines {
    names: Vec<String>,
    /// Per server, per stream: a partial line not yet printed.
    partial: Vec<[Vec<u8>; 2]>,
    /// Per stream: program output is escaped before it is printed (a terminal, and no
    /// `--raw`).
    escape: [bool; 2],
}

impl Lines {
    pub fn new(names: &[String], escape: [bool; 2]) -> Self {
        Self {
            names: names.to_vec(),
            partial: vec![Default::default(); names.len()],
            escape,
        }
    }

    /// A program's output lines, escaped where they go to a terminal.
    fn output_lines(&mut self, host: usize, stream: Stream, lines: &[u8]) -> Result<(), Closed> {
        match self.escape[index(stream)] {
            true => {
                let safe = terminal::lines(lines).into_owned();
                self.print(host, stream, safe.as_bytes())
            }
            false => self.print(host, stream, lines),
        }
    }

    /// Whole lines, each prefixed, in one write so no other server's line lands inside.
    fn print(&self, host: usize, stream: Stream, lines: &[u8]) -> Result<(), Closed> {
        let prefix = format!("{}: ", self.names[host]);
        let mut text = Vec::with_capacity(lines.len() + 16);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                text.push(b'\n');
            }
        }
        print::write(stream, &text)
    }
}

impl Show for Lines {
    fn output(&mut self, host: usize, stream: Stream, data: &[u8]) -> Result<(), Closed> {
        let buffer = &mut self.partial[host][index(stream)];
        buffer.extend_from_slice(data);
        let end = match buffer.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if buffer.len() > LONGEST_LINE => buffer.len(),
            None => return Ok(()),
        };
        let lines: Vec<u8> = buffer.drain(..end).collect();
        self.output_lines(host, stream, &lines)
    }

    fn done(&mut self, done: &Done<'_>) -> Result<(), Closed> {
        let host = done.host;
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.partial[host][index(stream)]);
            if !rest.is_empty() {
                self.output_lines(host, stream, &rest)?;
            }
        }
        match done.outcome {
            Outcome::Ran(Reply::Exit(info)) if info.truncated => {
                let line = format!(
                    "cmdchan: output truncated: {} bytes, more than the command's limit\n",
                    info.output_bytes
                );
                self.print(host, Stream::Stderr, line.as_bytes())?;
            }
            Outcome::Ran(Reply::Exit(_)) => {}
            Outcome::Ran(reply) => {
                self.print(host, Stream::Stdout, reply_text(reply).as_bytes())?
            }
            _ => {}
        }
        if *done.class != Class::Ok {
            let line = format!("cmdchan: {}\n", done.status);
            self.print(host, Stream::Stderr, line.as_bytes())?;
        }
        Ok(())
    }

    fn finish(&mut self, summary: &Summary) -> Result<(), Closed> {
        print::write(Stream::Stderr, summary.text().as_bytes())
    }

    fn progress(&self) -> bool {
        false
    }
}

pub fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}
