//! The async driver around a program's [`Run`]: it starts the program, feeds the run
//! what happens (output, timers, the client's stdin or departure) and does what the run
//! answers (send these frames, send this signal); then it keeps the outcome on the
//! command ID's ticket before the answer may go out, with a sign of life each second
//! while the store cannot take it.

use std::time::Instant;

use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tracing::{error, info, warn};

use cmdchan_common::frame::RESPONSE_OVERHEAD;
use cmdchan_common::protocol::{Alive, Body, ClientMsg, Request, Response, Started, ALIVE_EVERY};
use cmdchan_common::time;

use super::wire::Sent;
use super::{Connection, Pending};
use crate::admit::Admitted;
use crate::exec::{self, Event};
use crate::notice::Notice;
use crate::outcome::{self, Outcome};
use crate::policy::{Invocation, Program};
use crate::replay::{Ticket, OUTCOME_CAP};
use crate::run::{Run, Terms};
use crate::state::Shared;

/// What became of a program: its outcome, and the answer kept for a retry (`None`: too
/// large to keep).
type Ran = (Outcome, Option<Vec<Body>>);

impl Connection {
    /// Runs a program, driving its [`Run`] with what happens: its output, its timers,
    /// the client's stdin or departure.
    pub(super) async fn execute(
        &mut self,
        cmd: &Admitted<'_>,
        program: &Program,
        inv: &Invocation,
        shared: &Shared,
    ) -> Ran {
        let mut running = match exec::spawn(program, &inv.argv, &shared.tracking) {
            Ok(running) => running,
            Err(e) => {
                warn!(client = %self.key, command = program.name, error = %e, "cannot start {}", program.path.display());
                let error = e.to_string();
                let program = program.name.clone();
                return (Outcome::NotStarted { program, error }, Some(Vec::new()));
            }
        };
        let max_frame = self.settings.limits.max_frame;
        let chunk = exec::CHUNK.min(max_frame.saturating_sub(RESPONSE_OVERHEAD));
        let mut run = Run::new(Terms::of(program, chunk, OUTCOME_CAP), Instant::now());
        let stdin = running.take_stdin();
        let req = cmd.request();
        // A program that reads stdin says so; the client sends it only then.
        if let Some(stdin_limit) = program.stdin {
            let started = Body::Started(Started { stdin_limit });
            if !(self.send(req, started).await && self.wire.flush().await) {
                run.stop_listening();
            }
        }
        let status = self
            .drive(&mut running, &mut run, stdin, req, program)
            .await;
        let (info, kept, printed) = run.finish(status.map(exec::outcome), Instant::now());
        (Outcome::Ran(info, Box::new(printed)), kept)
    }

    /// Feeds `run` what happens until the program exits (its status; `None` if it was
    /// lost), and does what `run` answers: send output or a sign of life, signal the
    /// program.
    async fn drive(
        &mut self,
        running: &mut exec::Running,
        run: &mut Run,
        mut stdin: Option<ChildStdin>,
        req: &Request,
        program: &Program,
    ) -> Option<std::process::ExitStatus> {
        loop {
            if !run.stdin_open() {
                stdin = None;
            }
            tokio::select! {
                event = running.next() => match event {
                    Ok(Event::Output(stream, data)) => {
                        for out in run.output(stream, data, Instant::now()) {
                            if let Some(signal) = self.send_body(req, run, Body::Output(out), program).await {
                                running.signal(signal);
                            }
                            if !run.listening() {
                                break;
                            }
                        }
                    }
                    Ok(Event::Exited(status)) => return Some(status),
                    Err(e) => {
                        warn!(client = %self.key, command = program.name, error = %e, "lost the program");
                        return None;
                    }
                },
                () = sleep_until_opt(run.next_wake()) => {
                    let due = run.tick(Instant::now());
                    if let Some(signal) = due.signal {
                        running.signal(signal);
                    }
                    if due.alive {
                        let alive = Body::Alive(Alive::Running);
                        if let Some(signal) = self.send_body(req, run, alive, program).await {
                            running.signal(signal);
                        }
                    }
                }
                written = write_some(stdin.as_mut(), run.stdin_pending()), if !run.stdin_pending().is_empty() => {
                    run.wrote_stdin(written);
                }
                next = self.wire.read(), if run.reads_client() && self.pending.is_none() => match next {
                    Some(Ok(ClientMsg::Request(request))) => {
                        // A request while this program's stdin is open: the client is
                        // done with that stdin (it ends here), and the request is
                        // refused as `stdin open` when its turn comes.
                        let early = run.stdin_open();
                        run.end_stdin();
                        self.pending = Some(Box::new(Pending { request, early }));
                    }
                    Some(Ok(ClientMsg::Input(input))) if input.counter == req.counter => run.input(input.data),
                    Some(Ok(ClientMsg::InputEnd(of))) if of == req.counter => run.end_stdin(),
                    // Stdin for another request: nothing reads it.
                    Some(Ok(_)) => {}
                    // The client left or broke the protocol.
                    gone => {
                        self.left = Some(gone.and_then(Result::err));
                        if let Some(signal) = run.client_gone(Instant::now()) {
                            info!(client = %self.key, command = program.name, "client disconnected; stopping the command");
                            running.signal(signal);
                        }
                    }
                },
            }
        }
    }

    /// Sends one frame of a running program's answer (output, a sign of life) by the
    /// run's send deadline; the signal the program gets if the client is gone or not
    /// reading.
    async fn send_body(
        &mut self,
        req: &Request,
        run: &mut Run,
        body: Body,
        program: &Program,
    ) -> Option<Signal> {
        let frame = Response {
            counter: req.counter,
            id: req.id,
            body,
        };
        match self.wire.send_by(&frame, run.send_by(Instant::now())).await {
            Sent::Yes => None,
            Sent::Failed => run.send_failed(),
            Sent::Late => {
                info!(client = %self.key, command = program.name, "client not reading output; stopping the command");
                Some(run.send_timed_out())
            }
        }
    }

    /// Keeps what became of the program on its ticket before it is answered, so that
    /// a retry of its ID hears this answer and nothing ever denies an answer that was
    /// given. While the store cannot take it (a full disk, Redis failing over or short
    /// of replicas), the write is tried again every second and the client is sent a
    /// sign of life (`Recording`), until it is kept, or the request's freshness window
    /// is over (no retry of it can be admitted any more, so the answer goes out), or
    /// the server stops (false: it is not answered; the dropped ticket marks the ID
    /// interrupted, as a restart does).
    pub(super) async fn keep(
        &mut self,
        mut ticket: Ticket,
        req: &Request,
        (outcome, kept): &Ran,
        shared: &Shared,
    ) -> bool {
        let answer = outcome::answer_of(kept.clone(), outcome);
        let id = hex::encode(ticket.id());
        let mut failed = false;
        loop {
            let error = match ticket.finish(answer.clone(), time::now()).await {
                Ok(()) if failed => {
                    info!(client = %self.key, %id, "the outcome is kept now; answering");
                    return true;
                }
                Ok(()) => return true,
                Err(e) => e,
            };
            if !failed {
                warn!(client = %self.key, %id, error = %error, "cannot keep the outcome of this command ID; its answer waits until the replay store takes it");
                failed = true;
            }
            if time::now() > ticket.until() {
                warn!(client = %self.key, %id, error = %error, "the request's window is over before its outcome could be kept; answering (a retry of it is refused as stale)");
                return true;
            }
            if !self.recording(req, shared).await {
                error!(client = %self.key, %id, error = %error, "the server is stopping before the outcome of this command ID was kept: it is not answered, and a retry hears that the server stopped before its outcome was kept");
                return false;
            }
        }
    }

    /// One second of waiting for the store, with a sign of life to the client; false
    /// if the server is stopping.
    async fn recording(&mut self, req: &Request, shared: &Shared) -> bool {
        if self.left.is_none() {
            let alive = Response {
                counter: req.counter,
                id: req.id,
                body: Body::Alive(Alive::Recording),
            };
            // A client that is gone or not reading gets nothing more; the wait goes on.
            self.wire
                .send_by(&alive, Instant::now() + ALIVE_EVERY)
                .await;
        }
        let wait = tokio::time::sleep(ALIVE_EVERY);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => return true,
                notice = self.notices.next() => match notice {
                    Notice::Stop => return false,
                    // Revoked: the outcome is still kept, then the connection ends.
                    Notice::Reload => if self.ends(notice, shared) {
                        self.left.get_or_insert(None);
                    },
                },
            }
        }
    }
}

/// Writes what the program takes of `buf` now; cancel-safe, so it can wait in a
/// `select!` beside the program's output.
async fn write_some(stdin: Option<&mut ChildStdin>, buf: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(stdin) => stdin.write(buf).await,
        None => Ok(buf.len()),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
