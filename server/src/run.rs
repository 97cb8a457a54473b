//! One program run as a state machine without I/O: the connection feeds it what happened
//! (output, a timer, the client's stdin or departure, a send that failed) with the time
//! it happened, and does what it answers (send these frames, send this signal). So the
//! deadlines, the kill sequence, the output and stdin limits and the answer kept for a
//! retry are tested with made-up times, like the gate and the rate limiter.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

use cmdchan_common::protocol::{Body, ExitInfo, Output, Stream, ALIVE_EVERY};

use crate::policy::Program;

/// After a program's timeout, or its client leaving: SIGTERM to its group, then SIGKILL
/// this much later, so its traps can run.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Client stdin held for a program that is slow to read it; the client is not read
/// past it.
pub const STDIN_BUFFER: usize = 64 * 1024;

/// What the policy says of a program's run, and what the server can carry of it.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    pub timeout: Duration,
    pub output_limit: u64,
    /// Bytes of client stdin the program may read; `None`: it reads none.
    pub stdin: Option<u64>,
    /// The program may finish after its client left.
    pub detach: bool,
    /// Bytes of output per frame (the frame limit's room, at most the read size).
    pub chunk: usize,
    /// The largest answer kept for a retry; past it only "it ran" is kept.
    pub keep: usize,
    /// Keep all the program prints for the audit spool.
    pub record: bool,
}

impl Terms {
    /// `program`'s terms, output cut in `chunk`s, answers kept up to `keep` bytes.
    pub fn of(program: &Program, chunk: usize, keep: usize) -> Self {
        Self {
            timeout: program.timeout,
            output_limit: program.output_limit,
            stdin: program.stdin,
            detach: program.detach,
            chunk: chunk.max(1),
            keep,
            record: program.record_full,
        }
    }
}

/// What a timer tick asks of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Send the program this signal.
    pub signal: Option<Signal>,
    /// Send the client a sign of life (`Alive`).
    pub alive: bool,
}

/// The state of one program run.
#[derive(Debug)]
pub struct Run {
    started: Instant,
    deadline: Instant,
    kill_at: Option<Instant>,
    /// When the client is owed a sign of life, if nothing else was sent by then.
    alive_at: Instant,
    /// The client is still there to send output to.
    listening: bool,
    /// The policy lets the program finish after its client left.
    detach: bool,
    output_limit: u64,
    /// Bytes of output per frame.
    chunk: usize,
    info: ExitInfo,
    /// The answer so far, while it fits `keep_cap`: a retry hears it again.
    kept: Option<Vec<Body>>,
    kept_bytes: usize,
    keep_cap: usize,
    /// Bytes of stdin the program may still be given.
    stdin_left: u64,
    /// The program's stdin is open.
    stdin_open: bool,
    /// Client stdin not yet taken by the program.
    stdin_buf: Vec<u8>,
    /// The client's stdin ended (or hit its limit): close the program's once it is fed.
    stdin_end: bool,
    /// Of stdout and stderr as sent (within the output limit): the audit's proof of
    /// what the program printed.
    hashes: [Sha256; 2],
    /// All of it, as spool chunks, when its policy records it in full.
    recording: Option<Vec<u8>>,
}

/// The SHA-256 of a run's stdout and of its stderr, as sent.
pub type Digests = [[u8; 32]; 2];

/// What a run printed, for the audit trail: the digests of each stream, and with
/// `record_output = "full"` all of it (spool chunks: stream byte, u32be length, bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Printed {
    pub digests: Digests,
    pub full: Option<Vec<u8>>,
}

impl Run {
    /// A run under `program`'s terms that started at `now`.
    pub fn new(program: Terms, now: Instant) -> Self {
        Self {
            started: now,
            deadline: now + program.timeout,
            kill_at: None,
            alive_at: now + ALIVE_EVERY,
            listening: true,
            detach: program.detach,
            output_limit: program.output_limit,
            chunk: program.chunk,
            info: ExitInfo::default(),
            kept: Some(Vec::new()),
            kept_bytes: 0,
            keep_cap: program.keep,
            stdin_left: program.stdin.unwrap_or(0),
            stdin_open: program.stdin.is_some(),
            stdin_buf: Vec::new(),
            stdin_end: false,
            hashes: [Sha256::new(), Sha256::new()],
            recording: program.record.then(Vec::new),
        }
    }

    /// Output the program wrote at `now`: the frames to send (cut to the command's
    /// output limit and to the frame size), none once the client is gone.
    pub fn output(&mut self, stream: Stream, mut data: Vec<u8>, now: Instant) -> Vec<Output> {
        let len = data.len() as u64;
        let room = self.output_limit.saturating_sub(self.info.output_bytes);
        self.info.output_bytes += len;
        if len > room {
            self.info.truncated = true;
            data.truncate(usize::try_from(room).unwrap_or(usize::MAX));
        }
        if data.is_empty() || !self.listening {
            return Vec::new();
        }
        self.alive_at = now + ALIVE_EVERY;
        let index = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        self.hashes[index].update(&data);
        if let Some(recording) = &mut self.recording {
            recording.push(index as u8);
            recording.extend_from_slice(&(data.len() as u32).to_be_bytes());
            recording.extend_from_slice(&data);
        }
        let frames: Vec<Output> = match data.len() <= self.chunk {
            true => vec![Output { stream, data }],
            false => data
                .chunks(self.chunk)
                .map(|piece| Output {
                    stream,
                    data: piece.to_vec(),
                })
                .collect(),
        };
        for out in &frames {
            self.keep(Body::Output(out.clone()));
        }
        frames
    }

    /// Keeps `body` for a retry while the whole answer fits the cap.
    fn keep(&mut self, body: Body) {
        let len = match &body {
            Body::Output(o) => o.data.len(),
            _ => 0,
        };
        self.kept_bytes += len;
        if self.kept_bytes > self.keep_cap {
            self.kept = None;
        }
        if let Some(kept) = &mut self.kept {
            kept.push(body);
        }
    }

    /// When the connection must call [`Run::tick`] next, if ever.
    pub fn next_wake(&self) -> Option<Instant> {
        let signal = match self.info.timed_out {
            false => Some(self.kill_at.map_or(self.deadline, |k| k.min(self.deadline))),
            true => self.kill_at,
        };
        let alive = self.listening.then_some(self.alive_at);
        [signal, alive].into_iter().flatten().min()
    }

    /// The timer fired at `now`: what is due. At the deadline the program gets SIGTERM,
    /// and [`KILL_GRACE`] after any SIGTERM, SIGKILL; a client sent nothing for
    /// [`ALIVE_EVERY`] is sent a sign of life.
    pub fn tick(&mut self, now: Instant) -> Due {
        let alive = self.listening && now >= self.alive_at;
        if alive {
            self.alive_at = now + ALIVE_EVERY;
        }
        Due {
            signal: self.signal_due(now),
            alive,
        }
    }

    fn signal_due(&mut self, now: Instant) -> Option<Signal> {
        if self.kill_at.is_some_and(|at| now >= at) {
            self.kill_at = None;
            return Some(Signal::SIGKILL);
        }
        if !self.info.timed_out && now >= self.deadline {
            self.info.timed_out = true;
            return self.terminate(now);
        }
        None
    }

    /// SIGTERM now and SIGKILL after the grace, unless a kill is already under way.
    fn terminate(&mut self, now: Instant) -> Option<Signal> {
        if self.kill_at.is_some() {
            return None;
        }
        self.kill_at = Some(now + KILL_GRACE);
        Some(Signal::SIGTERM)
    }

    /// By when a frame sent at `now` must be taken: the program's deadline, or after
    /// it, the grace.
    pub fn send_by(&self, now: Instant) -> Instant {
        match self.info.timed_out {
            true => now + KILL_GRACE,
            false => self.deadline,
        }
    }

    /// Sending to the client failed: it is gone. The program is killed unless detached.
    pub fn send_failed(&mut self) -> Option<Signal> {
        self.listening = false;
        self.end_stdin();
        (!self.detach).then_some(Signal::SIGKILL)
    }

    /// The client did not take a frame by [`Run::send_by`]: the program is killed, so
    /// nothing buffers without bound.
    pub fn send_timed_out(&mut self) -> Signal {
        self.info.timed_out = true;
        self.listening = false;
        self.end_stdin();
        Signal::SIGKILL
    }

    /// The client left (or broke the protocol) at `now`: the program is stopped like at
    /// its timeout, unless the policy lets it finish.
    pub fn client_gone(&mut self, now: Instant) -> Option<Signal> {
        self.listening = false;
        // No more stdin will come: a detached program reads its end.
        self.end_stdin();
        match self.detach {
            true => None,
            false => self.terminate(now),
        }
    }

    /// Whether the client is read now: for its stdin (while the buffer has room) or to
    /// notice it leaving.
    pub fn reads_client(&self) -> bool {
        self.listening && self.stdin_buf.len() < STDIN_BUFFER
    }

    pub fn listening(&self) -> bool {
        self.listening
    }

    /// Stopped listening without a failure (the `Started` frame could not be sent).
    pub fn stop_listening(&mut self) {
        self.listening = false;
        self.end_stdin();
    }

    /// A piece of the client's stdin, within its limit (past it the program's stdin is
    /// closed and the answer says so).
    pub fn input(&mut self, mut data: Vec<u8>) {
        let room = usize::try_from(self.stdin_left).unwrap_or(usize::MAX);
        if data.len() > room {
            data.truncate(room);
            self.info.stdin_truncated = true;
        }
        self.stdin_left -= data.len() as u64;
        if self.stdin_open {
            self.stdin_buf.extend_from_slice(&data);
        }
        if self.info.stdin_truncated {
            self.end_stdin();
        }
    }

    /// The client's stdin ended: the program reads end of file once it has the rest.
    pub fn end_stdin(&mut self) {
        self.stdin_end = true;
        if self.stdin_buf.is_empty() {
            self.stdin_open = false;
        }
    }

    /// Stdin waiting for the program.
    pub fn stdin_pending(&self) -> &[u8] {
        &self.stdin_buf
    }

    /// Whether the program's stdin stays open; once false, the connection closes it.
    pub fn stdin_open(&self) -> bool {
        self.stdin_open
    }

    /// A write to the program's stdin finished; an error (it closed its stdin, or
    /// exited) drops what is left.
    pub fn wrote_stdin(&mut self, written: std::io::Result<usize>) {
        match written {
            Ok(n) => {
                self.stdin_buf.drain(..n.min(self.stdin_buf.len()));
                if self.stdin_buf.is_empty() && self.stdin_end {
                    self.stdin_open = false;
                }
            }
            Err(_) => {
                self.stdin_open = false;
                self.stdin_buf = Vec::new();
            }
        }
    }

    /// The program ended at `now` with this exit code and signal (`None`: it was lost):
    /// its exit information, the answer kept for a retry (`None` if too large to keep;
    /// the final frame is the caller's to add), and what it printed.
    pub fn finish(
        mut self,
        ended: Option<(Option<i32>, Option<i32>)>,
        now: Instant,
    ) -> (ExitInfo, Option<Vec<Body>>, Printed) {
        if let Some(ended) = ended {
            (self.info.code, self.info.signal) = ended;
        }
        let took = now.saturating_duration_since(self.started).as_millis();
        self.info.duration_ms = u64::try_from(took).unwrap_or(u64::MAX);
        let [out, err] = self.hashes;
        let printed = Printed {
            digests: [out.finalize().into(), err.finalize().into()],
            full: self.recording,
        };
        (self.info, self.kept, printed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's cap on kept answers, as the server runs with it.
    const KEEP: usize = 64 * 1024;

    fn program(timeout: u64, output_limit: u64, stdin: Option<u64>, detach: bool) -> Terms {
        Terms {
            timeout: Duration::from_secs(timeout),
            output_limit,
            stdin,
            detach,
            chunk: 16 * 1024,
            keep: KEEP,
            record: false,
        }
    }

    #[test]
    fn at_the_deadline_sigterm_then_sigkill_after_the_grace() {
        let t0 = Instant::now();
        let secs = |n| t0 + Duration::from_secs(n);
        let mut run = Run::new(program(10, 100, None, false), t0);
        assert_eq!(run.tick(secs(9)).signal, None);
        assert_eq!(run.tick(secs(10)).signal, Some(Signal::SIGTERM));
        assert_eq!(run.tick(secs(11)).signal, None);
        assert_eq!(run.tick(secs(12)).signal, Some(Signal::SIGKILL));
        run.stop_listening();
        assert_eq!(run.next_wake(), None, "nothing more is due");
        let (info, _, _) = run.finish(None, t0 + Duration::from_millis(12_345));
        assert!(info.timed_out);
        assert_eq!(info.duration_ms, 12_345);
    }

    #[test]
    fn the_digests_are_of_what_was_sent_within_the_output_limit() {
        use sha2::{Digest, Sha256};
        let t0 = Instant::now();
        let recorded = Terms {
            record: true,
            ..program(60, 8, None, false)
        };
        let mut run = Run::new(recorded, t0);
        run.output(Stream::Stdout, b"hello ".to_vec(), t0);
        run.output(Stream::Stderr, b"err".to_vec(), t0);
        run.output(Stream::Stdout, b"past the limit".to_vec(), t0);
        let (_, _, printed) = run.finish(None, t0);
        let [out, err] = printed.digests;
        assert_eq!(out, <[u8; 32]>::from(Sha256::digest(b"hello ")));
        assert_eq!(err, <[u8; 32]>::from(Sha256::digest(b"er")));
        let full = b"\x00\x00\x00\x00\x06hello \x01\x00\x00\x00\x02er".to_vec();
        assert_eq!(
            printed.full,
            Some(full),
            "the spool gets what the digests are of"
        );
    }

    #[test]
    fn a_quiet_program_has_its_client_sent_a_sign_of_life_every_second() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut run = Run::new(program(60, 100, None, false), t0);
        assert_eq!(run.next_wake(), Some(at(1000)));
        assert_eq!(
            run.tick(at(999)),
            Due {
                signal: None,
                alive: false
            }
        );
        assert_eq!(
            run.tick(at(1000)),
            Due {
                signal: None,
                alive: true
            }
        );
        assert_eq!(run.next_wake(), Some(at(2000)));
        // Output is a sign of life: the next one is due a second after it.
        run.output(Stream::Stdout, b"x".to_vec(), at(1500));
        assert!(!run.tick(at(2000)).alive);
        assert!(run.tick(at(2500)).alive);
        // A client that left is owed nothing.
        run.client_gone(at(2600));
        assert!(!run.tick(at(4000)).alive);
    }

    #[test]
    fn a_client_leaving_stops_the_program_unless_it_may_finish() {
        let t0 = Instant::now();
        let mut run = Run::new(program(60, 100, Some(10), false), t0);
        assert_eq!(run.client_gone(t0), Some(Signal::SIGTERM));
        assert!(!run.reads_client() && !run.stdin_open());
        assert_eq!(run.tick(t0 + KILL_GRACE).signal, Some(Signal::SIGKILL));
        assert!(!run.finish(None, t0).0.timed_out);

        let mut detached = Run::new(program(60, 100, None, true), t0);
        assert_eq!(detached.client_gone(t0), None);
        assert_eq!(detached.send_failed(), None);
        assert_eq!(
            detached.output(Stream::Stdout, b"later".to_vec(), t0),
            vec![]
        );
    }

    #[test]
    fn a_timeout_during_the_grace_of_a_departure_sends_no_second_sigterm() {
        let t0 = Instant::now();
        let mut run = Run::new(program(1, 100, None, false), t0);
        assert_eq!(run.client_gone(t0), Some(Signal::SIGTERM));
        assert_eq!(run.tick(t0 + Duration::from_secs(1)).signal, None);
        assert_eq!(run.tick(t0 + KILL_GRACE).signal, Some(Signal::SIGKILL));
    }

    #[test]
    fn output_past_the_limit_is_cut_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut run = Run::new(program(60, 10, None, false), t0);
        let sent = run.output(Stream::Stdout, vec![b'a'; 8], t0);
        assert_eq!(sent[0].data.len(), 8);
        let sent = run.output(Stream::Stderr, vec![b'b'; 8], t0);
        assert_eq!((sent.len(), sent[0].data.len()), (1, 2));
        assert!(run.output(Stream::Stdout, vec![b'c'; 8], t0).is_empty());
        let (info, kept, _) = run.finish(None, t0);
        assert_eq!((info.output_bytes, info.truncated), (24, true));
        assert_eq!(kept.map(|k| k.len()), Some(2));
    }

    #[test]
    fn output_is_split_into_frames_of_the_chunk_size() {
        let t0 = Instant::now();
        let terms = Terms {
            chunk: 960,
            ..program(60, 1 << 20, None, false)
        };
        let mut run = Run::new(terms, t0);
        let sent = run.output(Stream::Stdout, vec![0; 2500], t0);
        let sizes: Vec<usize> = sent.iter().map(|o| o.data.len()).collect();
        assert_eq!(sizes, vec![960, 960, 580]);
    }

    #[test]
    fn an_answer_past_the_store_cap_is_not_kept() {
        let t0 = Instant::now();
        let mut run = Run::new(program(60, 1 << 20, None, false), t0);
        run.output(Stream::Stdout, vec![0; KEEP], t0);
        run.output(Stream::Stdout, vec![0; 1], t0);
        assert_eq!(run.finish(None, t0).1, None);
    }

    #[test]
    fn stdin_past_its_limit_is_cut_and_the_programs_stdin_closed_once_fed() {
        let t0 = Instant::now();
        let mut run = Run::new(program(60, 100, Some(5), false), t0);
        run.input(b"abc".to_vec());
        run.input(b"defg".to_vec());
        assert_eq!(run.stdin_pending(), b"abcde");
        assert!(run.stdin_open());
        run.wrote_stdin(Ok(3));
        assert_eq!(run.stdin_pending(), b"de");
        run.wrote_stdin(Ok(2));
        assert!(!run.stdin_open());
        assert!(run.finish(None, t0).0.stdin_truncated);
    }

    #[test]
    fn a_client_that_does_not_take_output_has_the_program_killed() {
        let t0 = Instant::now();
        let mut run = Run::new(program(10, 100, None, false), t0);
        assert_eq!(run.send_by(t0), t0 + Duration::from_secs(10));
        assert_eq!(run.send_timed_out(), Signal::SIGKILL);
        assert!(!run.listening());
        assert!(run.finish(None, t0).0.timed_out);
    }
}
