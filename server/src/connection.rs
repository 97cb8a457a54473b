//! One client connection after its handshake: requests read one at a time, each taken
//! down one path (admission, which claims its ID; the built-in or the program; one
//! outcome, counted, recorded and answered) until the client leaves, breaks the
//! protocol, idles out or the server shuts down.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::ChildStdin;
use tokio::time::error::Elapsed;
use tokio::time::{timeout, Sleep};
use tokio_openssl::SslStream;
use tokio_util::codec::Framed;
use tracing::{debug, error, info, warn};

use cmdchan_common::frame::{FrameError, MsgCodec, RESPONSE_OVERHEAD};
use cmdchan_common::ident::PskIdentity;
use cmdchan_common::protocol::{
    Alive, Body, ClientMsg, Failure, Grant, Reply, Request, Response, Started, ALIVE_EVERY,
};
use cmdchan_common::time;

use crate::admit::{self, Action, Admission, Admitted, Refusal};
use crate::alerts::Uniform;
use crate::audit::Peer;
use crate::cmd;
use crate::exec::{self, Event};
use crate::handshake;
use crate::metrics::Tally;
use crate::notice::{Listener, Notice};
use crate::outcome::{self, Outcome, Retry};
use crate::policy::{Builtin, Invocation, Program};
use crate::replay::{self, Answer, Entry, State};
use crate::run::Run;
use crate::state::{Settings, Shared};

type Channel = Framed<SslStream<Uniform<TcpStream>>, MsgCodec<ClientMsg, Response>>;

/// First size of a connection's read and write buffers.
const FRAME_BUFFER: usize = 512;

/// A connection quiet this long gives back its frame buffers.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Security refusals (bad tag, replay, forbidden…) a connection may earn before it is
/// closed and its source penalized.
const STRIKES: u32 = 3;

/// How long a frame may take to arrive whole once it has begun.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the final close_notify may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted TCP connection to its end. Never panics on peer input.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Without NODELAY a response can sit ~40 ms behind Nagle and delayed ACK.
    let _ = tcp.set_nodelay(true);
    let Some(proven) = handshake::accept(tcp, peer, &shared).await else {
        return;
    };
    let settings = shared.settings();
    // Frame buffers start small and grow for large frames only: most requests and
    // answers are under 200 bytes, and 1,000 idle connections should not hold 16 MiB.
    let codec = MsgCodec::with_budget(settings.limits.max_frame, shared.frames.clone());
    // Not `Framed::from_parts`: it grows both buffers to 8 KiB (32 KiB per idle
    // connection instead of 20, measured).
    let mut io = Framed::with_capacity(proven.stream, codec, FRAME_BUFFER);
    *io.write_buffer_mut() = BytesMut::with_capacity(FRAME_BUFFER);
    let mut conn = Connection {
        io,
        pending: None,
        left: None,
        key: Arc::new(proven.key),
        generation: proven.generation,
        peer: Peer::new(peer),
        next_counter: 1,
        strikes: 0,
        proven: None,
        settings,
        notices: shared.notices.listen(),
        tally: Tally::default(),
        quiet_since: Instant::now(),
        idle: Box::pin(tokio::time::sleep(RELEASE_AFTER)),
    };
    conn.run(&shared).await;
    // The last answers (a refusal that ends the connection) and close_notify, so the
    // client sees a clean end rather than "unexpected eof"; bounded, since a client that
    // stopped reading could otherwise hold this task forever.
    let _ = timeout(CLOSE_TIMEOUT, conn.io.flush()).await;
    let _ = timeout(CLOSE_TIMEOUT, conn.io.get_mut().shutdown()).await;
}

/// A request read while a program ran.
struct Pending {
    request: Request,
    /// It came while that program's stdin was still open (before `InputEnd`).
    early: bool,
}

struct Connection {
    io: Channel,
    /// A request that arrived while a program ran; answered next.
    /// Boxed: it is rare, and an idle connection should not hold room for one.
    pending: Option<Box<Pending>>,
    /// The client left (`Some(None)`) or broke the protocol (`Some(Some(error))`) while
    /// a program ran: the connection ends once the program has, and reads nothing more.
    left: Option<Option<FrameError>>,
    /// Shared with each request's admission, which borrows it while `self` is busy.
    key: Arc<PskIdentity>,
    /// The generation of the zone key the client's key was derived from.
    generation: u64,
    peer: Peer,
    next_counter: u64,
    /// Security refusals this connection earned (see [`Connection::struck`]).
    strikes: u32,
    /// The last grant and tag this connection proved (see `Rules::tag_proven`).
    proven: Option<Box<(Grant, [u8; 32])>>,
    /// The settings this connection works under, taken again on a reload notice.
    settings: Arc<Settings>,
    notices: Listener,
    tally: Tally,
    /// When the connection last began to wait for a request.
    quiet_since: Instant,
    /// One timer for the connection. It is moved on only when it fires, never per
    /// request: resetting a timer takes the runtime's timer lock.
    idle: Pin<Box<Sleep>>,
}

impl Connection {
    async fn run(&mut self, shared: &Shared) {
        loop {
            let next = match self.pending.take() {
                Some(pending) => *pending,
                None => match self.next_request(shared).await {
                    Some(request) => Pending {
                        request,
                        early: false,
                    },
                    None => return,
                },
            };
            if !self.answer(next, shared).await {
                return;
            }
        }
    }

    /// Waits for the next request; `None` when the connection should end (the client
    /// left, idled out or broke the protocol, the server is stopping, or a reload revoked
    /// this client's key).
    ///
    /// Answers are written but not flushed while further requests are already here (a
    /// client that pipelines gets them in as few TLS records and syscalls as it sent its
    /// requests); they are flushed before the connection waits. A connection quiet for
    /// [`RELEASE_AFTER`] gives its frame buffers back, so an idle one costs little memory.
    async fn next_request(&mut self, shared: &Shared) -> Option<Request> {
        loop {
            match self.next_message(shared).await? {
                ClientMsg::Request(request) => return Some(request),
                // Stdin for a program that has ended: nothing reads it any more.
                ClientMsg::Input(_) | ClientMsg::InputEnd(_) => continue,
            }
        }
    }

    /// The next frame from the client (see [`Connection::next_request`]).
    async fn next_message(&mut self, shared: &Shared) -> Option<ClientMsg> {
        if let Some(left) = self.left.take() {
            if let Some(err) = left {
                self.unreadable(err).await;
            }
            return None;
        }
        if let Some(notice) = self.notices.check() {
            if self.ends(notice, shared) {
                return None;
            }
        }
        // More of the client's bytes already read (pipelining): the reader decodes them
        // without a clock read, a timer or, for a whole frame, the socket. With nothing
        // read it is not polled here: that poll would cost OpenSSL a failed read.
        if !self.io.read_buffer().is_empty() {
            if let Some(next) = self.io.next().now_or_never() {
                return self.take(next).await;
            }
        }
        self.quiet_since = Instant::now();
        let next = loop {
            tokio::select! {
                biased;
                notice = self.notices.next() => {
                    if self.ends(notice, shared) {
                        return None;
                    }
                }
                () = &mut self.idle => {
                    if self.idled_out() {
                        break None;
                    }
                }
                next = poll_fn(|cx| next_or_flush(&mut self.io, cx)) => break Some(next),
            }
        };
        match next {
            None => {
                info!(client = %self.key, peer = %self.peer, "idle timeout; closing");
                None
            }
            Some(next) => self.take(next).await,
        }
    }

    /// The idle timer fired: true if the connection has been quiet for the idle
    /// timeout. Otherwise the timer is set for the next thing due: giving back the
    /// frame buffers, or the idle timeout.
    fn idled_out(&mut self) -> bool {
        // A frame begun must be whole soon: a client may not park a partial one, not
        // even one whose header alone was read (it holds its share of frame memory).
        let begun = !self.io.read_buffer().is_empty() || self.io.codec().mid_frame();
        let limit = match begun {
            false => self.settings.limits.idle_timeout,
            true => self.settings.limits.idle_timeout.min(FRAME_TIMEOUT),
        };
        let quiet = self.quiet_since.elapsed();
        if quiet >= limit {
            return true;
        }
        let release = RELEASE_AFTER.min(limit);
        let next = if quiet >= release {
            self.release_buffers();
            limit
        } else {
            release
        };
        self.idle.as_mut().reset((self.quiet_since + next).into());
        false
    }

    /// What the reader gave: a request, or the end of the connection.
    async fn take(&mut self, next: Option<Result<ClientMsg, FrameError>>) -> Option<ClientMsg> {
        match next {
            None => None,
            Some(Err(e)) => {
                self.unreadable(e).await;
                None
            }
            Some(Ok(message)) => Some(message),
        }
    }

    /// True if `notice` ends the connection: the server is stopping, or the settings
    /// now in force revoke this client's key (logged).
    fn ends(&mut self, notice: Notice, shared: &Shared) -> bool {
        if notice == Notice::Stop {
            return true;
        }
        self.settings = shared.settings();
        match self.settings.revoked(&self.key) {
            Some(why) => {
                warn!(client = %self.key, peer = %self.peer, "closing the connection: {why} (reloaded)");
                true
            }
            None => false,
        }
    }

    /// Counts a security refusal against the connection: after [`STRIKES`] of them it
    /// is closed and its source is penalized like a failed handshake, so that refused
    /// requests cost their sender a handshake each few, then time.
    fn struck(&mut self, refusal: &Refusal, shared: &Shared) -> bool {
        if !refusal.is_security_event() {
            return false;
        }
        self.strikes += 1;
        if self.strikes < STRIKES {
            return false;
        }
        warn!(client = %self.key, peer = %self.peer, "closing the connection after {STRIKES} security refusals");
        let source = self.peer.addr().ip();
        if let Some(penalty) = shared.gate.misbehaved(source, Instant::now()) {
            warn!(%source, "penalty: refusing {source} for {}s after repeated security refusals", penalty.as_secs());
        }
        true
    }

    /// Drops the frame buffers when they hold nothing; they grow again on the next frame.
    fn release_buffers(&mut self) {
        if self.io.read_buffer().is_empty() {
            *self.io.read_buffer_mut() = BytesMut::new();
        }
        if self.io.write_buffer().is_empty() {
            *self.io.write_buffer_mut() = BytesMut::new();
        }
    }

    /// Sends the answers written so far; false if the client is gone or stopped reading.
    async fn flush(&mut self) -> bool {
        let flushed = bounded(self.settings.limits.idle_timeout, self.io.flush()).await;
        self.sent(flushed)
    }

    /// One request's path: admission (whose last step claims the ID), then what the
    /// request does (a retry's answer, a built-in, or a program), then its one outcome,
    /// counted, recorded and answered in [`Connection::conclude`]. False ends the
    /// connection.
    async fn answer(&mut self, next: Pending, shared: &Shared) -> bool {
        let Pending {
            request: req,
            early,
        } = next;
        let started = Instant::now();
        let expected = self.next_counter;
        self.next_counter += 1;
        let settings = Arc::clone(&self.settings);
        let mut rules = shared.rules(&settings, self.generation, started);
        rules.tag_proven = admit::proven(self.proven.as_deref(), &req);
        rules.stdin_was_open = early;
        // Admitted borrows the identity while running a program needs `&mut self`.
        let key = Arc::clone(&self.key);
        let admission =
            admit::admit(&req, expected, &key, &rules, &shared.replay, time::now()).await;
        if admission.is_ok() && !rules.tag_proven {
            self.proven = Some(Box::new((req.grant.clone(), req.tag)));
        }
        let (cmd, outcome) = match admission {
            Err(refusal) => (None, Outcome::Refused(refusal)),
            Ok(Admission::Retry(entry, cmd)) => {
                let retried = Outcome::Retried(retry(entry, &cmd, &settings));
                (Some(cmd), retried)
            }
            Ok(Admission::Admitted(cmd)) => {
                let outcome = match cmd.action() {
                    Action::Builtin(b) => builtin(*b, &cmd, &settings),
                    // Boxed: a program's run is a large future, and every idle
                    // connection would otherwise hold room for one.
                    Action::Run(program, inv) => {
                        Box::pin(self.run_program(&cmd, program, inv, shared)).await
                    }
                };
                (Some(cmd), outcome)
            }
        };
        self.conclude(&req, cmd.as_ref(), outcome, started, shared)
            .await
    }

    /// The end of every request's path: its outcome counted, recorded and answered; a
    /// refusal may end the connection (see [`Connection::struck`]).
    async fn conclude(
        &mut self,
        req: &Request,
        cmd: Option<&Admitted<'_>>,
        outcome: Outcome,
        started: Instant,
        shared: &Shared,
    ) -> bool {
        let took = started.elapsed();
        let command = match (outcome.admitted(), cmd) {
            (true, Some(cmd)) => cmd.command(),
            _ => "",
        };
        self.tally
            .count(&shared.metrics, command, outcome.label(), took);
        shared
            .audit
            .record(&self.key, &self.peer, req, cmd, &outcome, took);
        let ends = match &outcome {
            Outcome::Refused(r) => r.closes_connection() || self.struck(r, shared),
            Outcome::Unkept(_) => true,
            _ => false,
        };
        for body in outcome.into_bodies() {
            if !self.send(req, body).await {
                return false;
            }
        }
        !ends
    }

    /// Runs an admitted program once its start is audited, and stores its outcome
    /// before it is answered.
    async fn run_program(
        &mut self,
        cmd: &Admitted<'_>,
        program: &Program,
        invocation: &Invocation,
        shared: &Shared,
    ) -> Outcome {
        let (outcome, kept) = match shared.audit.started(cmd, &self.key, &self.peer, invocation) {
            Ok(()) => {
                // Earlier answers go out now, not after the program.
                self.flush().await;
                shared.metrics.running_programs.inc();
                let done = self.execute(cmd, program, invocation, shared).await;
                shared.metrics.running_programs.dec();
                done
            }
            Err(e) => {
                error!(error = %e, "cannot write the audit file; refusing to run {}", program.name);
                (Outcome::NotAudited, Some(Vec::new()))
            }
        };
        match self.remember(cmd, kept, &outcome, shared).await {
            true => outcome,
            false => Outcome::Unkept(Box::new(outcome)),
        }
    }

    /// Keeps what became of the program in the store before it is answered, so that a
    /// retry of its ID hears this answer and nothing ever denies an answer that was
    /// given. While the store cannot take it (a full disk, Redis failing over or short of
    /// replicas), the write is tried again every second and the client is sent a sign
    /// of life (`Recording`), until it is kept, or the request's freshness window is
    /// over (no retry of it can be admitted any more, so the answer goes out), or the
    /// server stops (false: it is not answered, and a retry after the restart hears that
    /// the server stopped before the outcome was kept).
    async fn remember(
        &mut self,
        cmd: &Admitted<'_>,
        kept: Option<Vec<Body>>,
        outcome: &Outcome,
        shared: &Shared,
    ) -> bool {
        let answer = match kept {
            Some(mut bodies) => {
                bodies.extend(outcome.clone().into_bodies());
                replay::keep(bodies)
            }
            None => Answer::Dropped,
        };
        let entry = Entry {
            client: self.key.name.to_string(),
            digest: cmd.digest(),
            state: State::Done(answer),
        };
        let (id, until) = (cmd.request().id, cmd.fresh_until());
        let mut failed = false;
        loop {
            let error = match shared
                .replay
                .finish(id, &entry, until, time::now(), true)
                .await
            {
                Ok(()) if failed => {
                    info!(client = %self.key, id = %hex::encode(id), "the outcome is kept now; answering");
                    return true;
                }
                Ok(()) => return true,
                Err(e) => e,
            };
            if !failed {
                warn!(client = %self.key, id = %hex::encode(id), error = %error, "cannot keep the outcome of this command ID; its answer waits until the replay store takes it");
                failed = true;
            }
            if time::now() > until {
                warn!(client = %self.key, id = %hex::encode(id), error = %error, "the request's window is over before its outcome could be kept; answering (a retry of it is refused as stale)");
                return true;
            }
            if !self.recording(cmd.request(), shared).await {
                error!(client = %self.key, id = %hex::encode(id), error = %error, "the server is stopping before the outcome of this command ID was kept: it is not answered, and a retry hears that the server stopped while it ran");
                return false;
            }
        }
    }

    /// One second of waiting for the store, with a sign of life to the client; false
    /// if the server is stopping.
    async fn recording(&mut self, req: &Request, shared: &Shared) -> bool {
        let alive = Response {
            counter: req.counter,
            id: req.id,
            body: Body::Alive(Alive::Recording),
        };
        if self.left.is_none() {
            // A client that is gone or not reading gets nothing more; the wait goes on.
            let _ = timeout(ALIVE_EVERY, async { self.io.send(&alive).await }).await;
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

    /// Runs a program, driving its [`Run`] with what happens: its output, its timers,
    /// the client's stdin or departure. Returns the outcome and the answer kept for a
    /// retry (`None`: too large to keep).
    async fn execute(
        &mut self,
        cmd: &Admitted<'_>,
        program: &Program,
        inv: &Invocation,
        shared: &Shared,
    ) -> (Outcome, Option<Vec<Body>>) {
        let mut running = match exec::spawn(program, &inv.argv, &shared.tracking) {
            Ok(running) => running,
            Err(e) => {
                warn!(client = %self.key, command = program.name, error = %e, "cannot start {}", program.path.display());
                let error = e.to_string();
                let program = program.name.clone();
                return (Outcome::NotStarted { program, error }, Some(Vec::new()));
            }
        };
        let mut run = Run::new(
            program.into(),
            self.settings.limits.max_frame,
            Instant::now(),
        );
        let stdin = running.take_stdin();
        let req = cmd.request();
        // A program that reads stdin says so; the client sends it only then.
        if let Some(stdin_limit) = program.stdin {
            let started = Body::Started(Started { stdin_limit });
            if !(self.send(req, started).await && self.flush().await) {
                run.stop_listening();
            }
        }
        let status = self
            .drive(&mut running, &mut run, stdin, req, program)
            .await;
        let (info, kept) = run.finish(status, Instant::now());
        (Outcome::Ran(info), kept)
    }

    /// Feeds `run` what happens until the program exits (its status; `None` if it was
    /// lost), and does what `run` answers: send output, signal the program.
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
                next = self.io.next(), if run.reads_client() && self.pending.is_none() => match next {
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
        let by = run.send_by(Instant::now());
        match tokio::time::timeout_at(by.into(), self.io.send(&frame)).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => run.send_failed(),
            Err(_) => {
                info!(client = %self.key, command = program.name, "client not reading output; stopping the command");
                Some(run.send_timed_out())
            }
        }
    }

    /// Sends the final answer to `req`; a client that does not take it within the idle
    /// timeout (it stopped reading) is dropped. False: the connection is over.
    async fn send(&mut self, req: &Request, body: Body) -> bool {
        let response = Response {
            counter: req.counter,
            id: req.id,
            body,
        };
        self.send_response(&response).await
    }

    /// Writes `response` without flushing it (see [`Connection::next_request`]); the
    /// write itself flushes once the buffer is full.
    async fn send_response(&mut self, response: &Response) -> bool {
        let limit = self.settings.limits.idle_timeout;
        let sent = bounded(limit, self.io.feed(response)).await;
        self.sent(sent)
    }

    fn sent(&self, sent: Result<Result<(), FrameError>, Elapsed>) -> bool {
        match sent {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(client = %self.key, peer = %self.peer, error = %e, "cannot send response");
                false
            }
            Err(_) => {
                info!(client = %self.key, peer = %self.peer, "client stopped reading; closing");
                false
            }
        }
    }

    /// Answers a frame that could not be read, then the connection ends.
    async fn unreadable(&mut self, err: FrameError) {
        let Some(code) = outcome::unreadable(&err) else {
            return info!(client = %self.key, peer = %self.peer, "connection lost: {err}");
        };
        warn!(client = %self.key, peer = %self.peer, outcome = code.name(), "unreadable frame: {err}; closing");
        let response = Response {
            counter: 0,
            id: [0; 16],
            body: Body::Err(Failure::new(code, err.to_string())),
        };
        self.send_response(&response).await;
    }
}

/// The answer to a retry: the kept answer, the built-in run again, or why not.
fn retry(entry: Entry, cmd: &Admitted<'_>, settings: &Settings) -> Retry {
    match (entry.state, cmd.action()) {
        (State::Done(Answer::Kept(bodies)), _) => Retry::Kept(bodies),
        (State::Done(Answer::Builtin), Action::Builtin(b)) => {
            Retry::Builtin(Box::new(builtin(*b, cmd, settings)))
        }
        (State::Running, _) => Retry::InProgress,
        (State::Done(Answer::Interrupted), _) => Retry::Interrupted,
        _ => Retry::Dropped,
    }
}

/// Runs a built-in for an admitted request. Every request gets an answer, also one
/// whose reply (a long `commands` list) is larger than `max_frame`.
fn builtin(b: Builtin, cmd: &Admitted<'_>, settings: &Settings) -> Outcome {
    let reply = cmd::run(b, cmd, &settings.policy);
    if matches!(reply, Reply::Pong) {
        return Outcome::Answered(reply);
    }
    let max_frame = settings.limits.max_frame;
    // The body: the reply and its one-byte tag.
    let size = postcard::experimental::serialized_size(&reply).map_or(usize::MAX, |n| n + 1);
    match size.saturating_add(RESPONSE_OVERHEAD) <= max_frame {
        true => Outcome::Answered(reply),
        false => Outcome::TooLarge { size, max_frame },
    }
}

/// The next frame, sending the answers written meanwhile only when none is there: a
/// client that pipelines gets its answers in as few TLS records and syscalls as it sent
/// its requests. The reader is polled once per wake: polling it speculatively before
/// waiting would cost OpenSSL a failed read per request.
fn next_or_flush(
    io: &mut Channel,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<ClientMsg, FrameError>>> {
    if let Poll::Ready(next) = io.poll_next_unpin(cx) {
        return Poll::Ready(next);
    }
    match SinkExt::<&Response>::poll_flush_unpin(io, cx) {
        // Written answers the client will never get: the connection is lost.
        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
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

/// `timeout(limit, fut)`, without the timer when `fut` is ready at once (a write the
/// socket takes, the common case): setting one up costs a clock read and a shared
/// reference count per call.
async fn bounded<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Some(out) = fut.as_mut().now_or_never() {
        return Ok(out);
    }
    timeout(limit, fut).await
}
