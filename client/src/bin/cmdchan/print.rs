//! Writing to the client's own stdout and stderr. A closed stdout (`cmdchan … | head -1`)
//! is an answer, not a failure: the writer says so and the caller ends the run with
//! status 141, as SIGPIPE ends other programs in a pipeline; nothing exits from here.

use std::io::Write;

use cmdchan::Stream;

/// Stdout is closed: nothing more can be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Writes all of `bytes` and flushes. Only a closed stdout is an error: a stderr that
/// cannot be written is given up on quietly (there is nowhere to say it).
pub fn write(stream: Stream, bytes: &[u8]) -> Result<(), Closed> {
    match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            match out.write_all(bytes).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Closed),
                _ => Ok(()),
            }
        }
        Stream::Stderr => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(bytes).and_then(|()| err.flush());
            Ok(())
        }
    }
}

/// A line on stdout.
pub fn out_line(line: &str) -> Result<(), Closed> {
    write(Stream::Stdout, format!("{line}\n").as_bytes())
}

/// A line on stderr.
pub fn err_line(line: &str) {
    let _ = write(Stream::Stderr, format!("{line}\n").as_bytes());
}
