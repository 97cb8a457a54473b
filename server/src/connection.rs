//! One client connection: the TLS handshake, then requests answered one at a time until
//! the client leaves, breaks the protocol, idles out or the server shuts down.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};
use nix::sys::signal::Signal;
use openssl::ssl::{Ssl, SslRef};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::ChildStdin;
use tokio::time::error::Elapsed;
use tokio::time::{timeout, Sleep};
use tokio_openssl::SslStream;
use tokio_util::codec::Framed;
use tracing::{debug, error, info, warn};

use cmdchan_common::frame::{FrameError, MsgCodec};
use cmdchan_common::ident::PskIdentity;
use cmdchan_common::protocol::{
    Body, ClientMsg, ErrorCode, ExitInfo, Failure, Grant, Output, Reply, Request, Response, Started,
};
use cmdchan_common::time;
use cmdchan_common::tls::{self, Offered};

use crate::admit::{self, Action, Admission, Admitted, Refusal};
use crate::alerts::Uniform;
use crate::audit::{self, Peer};
use crate::cmd;
use crate::exec::{self, Event};
use crate::metrics::Tally;
use crate::notice::{Listener, Notice};
use crate::policy::{Invocation, Program};
use crate::replay::{self, Answer, Entry, State};
use crate::server::{Settings, Shared};

type Channel = Framed<SslStream<Uniform<TcpStream>>, MsgCodec<ClientMsg, Response>>;

/// After a program's timeout: SIGTERM to its group, then SIGKILL this much later.
const KILL_GRACE: Duration = Duration::from_secs(2);

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
    let Some((stream, key, generation)) = handshake(tcp, peer, &shared).await else {
        return;
    };
    let settings = shared.settings();
    // Frame buffers start small and grow for large frames only: most requests and
    // answers are under 200 bytes, and 1,000 idle connections should not hold 16 MiB.
    let codec = MsgCodec::with_budget(settings.limits.max_frame, shared.frames.clone());
    // Not `Framed::from_parts`: it grows both buffers to 8 KiB (32 KiB per idle
    // connection instead of 20, measured).
    let mut io = Framed::with_capacity(stream, codec, FRAME_BUFFER);
    *io.write_buffer_mut() = BytesMut::with_capacity(FRAME_BUFFER);
    let mut conn = Connection {
        io,
        pending: None,
        key: Arc::new(key),
        generation,
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

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(SslStream<Uniform<TcpStream>>, PskIdentity, u64)> {
    let ssl = Ssl::new(&shared.tls)
        .inspect_err(|e| warn!(%peer, error = %e, "cannot set up TLS"))
        .ok()?;
    let mut stream = SslStream::new(ssl, Uniform::new(tcp)).ok()?;
    let limit = shared.settings().limits.handshake_timeout;
    match timeout(limit, Pin::new(&mut stream).accept()).await {
        Err(_) => {
            warn!(%peer, "handshake failed: timed out after {limit:?}");
            shared.metrics.count_handshake("timeout");
            penalize(shared, peer);
            None
        }
        Ok(Err(e)) => {
            shared
                .metrics
                .count_handshake(handshake_failed(stream.ssl(), peer, &e));
            // A client that closed without a word (a TCP health check) is not an attack.
            if e.ssl_error().is_some() || tls::offered(stream.ssl()).is_some() {
                penalize(shared, peer);
            }
            None
        }
        Ok(Ok(())) => match tls::offered(stream.ssl()).cloned() {
            Some(Offered::Identity {
                identity: key,
                generation,
            }) => {
                stream.get_mut().handshake_done();
                let cipher = stream.ssl().current_cipher().map_or("?", |c| c.name());
                debug!(client = %key, %peer, cipher, "handshake done");
                shared.gate.succeeded(peer.ip());
                shared.metrics.count_handshake("ok");
                Some((stream, key, generation))
            }
            // Unreachable in practice: a decoy key is random, so no client can match it.
            _ => None,
        },
    }
}

/// Counts a failed handshake against its source; logs a penalty once, when it starts.
fn penalize(shared: &Shared, peer: SocketAddr) {
    if let Some(penalty) = shared.gate.failed(peer.ip(), Instant::now()) {
        warn!(source = %peer.ip(), "penalty: refusing {} for {}s after repeated failed handshakes", peer.ip(), penalty.as_secs());
    }
}

/// Logs why a handshake failed, telling apart what the client is never told; returns
/// the reason as a metric label.
fn handshake_failed(ssl: &SslRef, peer: SocketAddr, err: &openssl::ssl::Error) -> &'static str {
    match tls::offered(ssl) {
        Some(Offered::Identity { identity: key, .. }) => {
            warn!(client = %key, %peer, "handshake failed: key mismatch (the client holds another key for this name and epoch): {err}");
            "key_mismatch"
        }
        Some(Offered::Refused { identity, why }) => {
            warn!(client = %identity, %peer, "handshake refused: {why}");
            "revoked"
        }
        Some(Offered::Invalid { shown, why }) => {
            warn!(%peer, identity = %shown, "handshake failed: unknown identity ({why})");
            "unknown_identity"
        }
        None => {
            warn!(%peer, "handshake failed before any key was chosen (no shared TLS version or cipher suite, or not TLS at all): {err}");
            "no_common_suite"
        }
    }
}

struct Connection {
    io: Channel,
    /// A request that arrived while a program ran; answered next.
    pending: Option<Request>,
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
            let request = match self.pending.take() {
                Some(request) => request,
                None => match self.next_request(shared).await {
                    Some(request) => request,
                    None => return,
                },
            };
            if !self.answer(request, shared).await {
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
        if let Some(notice) = self.notices.check() {
            if self.ends(notice, shared) {
                return None;
            }
        }
        if let Some(next) = self.io.next().now_or_never() {
            return self.take(next).await;
        }
        if !self.flush().await {
            return None;
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
                next = self.io.next() => break Some(next),
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
        // A frame begun must be whole soon: a client may not park a partial one.
        let limit = match self.io.read_buffer().is_empty() {
            true => self.settings.limits.idle_timeout,
            false => self.settings.limits.idle_timeout.min(FRAME_TIMEOUT),
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

    /// Admits one request, runs it, and sends its answer; false ends the connection.
    async fn answer(&mut self, req: Request, shared: &Shared) -> bool {
        let started = Instant::now();
        let expected = self.next_counter;
        self.next_counter += 1;
        let settings = Arc::clone(&self.settings);
        let mut rules = shared.rules(&settings, self.generation);
        rules.tag_proven = admit::proven(self.proven.as_deref(), &req);
        // Admitted borrows the identity while running a program needs `&mut self`.
        let key = Arc::clone(&self.key);
        let admission =
            admit::admit(&req, expected, &key, &rules, &shared.replay, time::now()).await;
        if admission.is_ok() && !rules.tag_proven {
            self.proven = Some(Box::new((req.grant.clone(), req.tag)));
        }
        let cmd = match admission {
            Ok(Admission::Admitted(cmd)) => cmd,
            Ok(Admission::Retry(entry, cmd)) => {
                self.tally
                    .count(&shared.metrics, "", "retry", started.elapsed());
                return self.answer_retry(&cmd, entry, &settings, shared).await;
            }
            Err(refusal) => {
                // The command label stays empty: a refused request's name is the peer's.
                let outcome = refusal.code().name();
                self.tally
                    .count(&shared.metrics, "", outcome, started.elapsed());
                shared
                    .audit
                    .refused(&self.key, &self.peer, &req, &refusal, started.elapsed());
                let failure = refusal.failure();
                let sent = self.send(&req, Body::Err(failure)).await;
                return sent && !refusal.closes_connection() && !self.struck(&refusal, shared);
            }
        };
        let body = match cmd.action() {
            Action::Builtin(b) => fit(
                Body::Ok(cmd::run(*b, &cmd, &settings.policy)),
                settings.limits.max_frame,
            ),
            Action::Run(program, invocation) => {
                self.run_program(&cmd, program, invocation, shared).await
            }
        };
        shared
            .audit
            .admitted(&cmd, &key, &self.peer, &body, started.elapsed());
        let (outcome, _, _) = audit::outcome(&body);
        self.tally
            .count(&shared.metrics, cmd.command(), outcome, started.elapsed());
        self.send(&req, body).await
    }

    /// Runs an admitted program once its start is audited, and stores its outcome;
    /// returns its final answer.
    async fn run_program(
        &mut self,
        cmd: &Admitted<'_>,
        program: &Program,
        invocation: &Invocation,
        shared: &Shared,
    ) -> Body {
        let mut kept = Some(Vec::new());
        let body = match shared.audit.started(cmd, &self.key, &self.peer, invocation) {
            Ok(()) => {
                // Earlier answers go out now, not after the program.
                self.flush().await;
                shared.metrics.running_programs.inc();
                let body = self
                    .execute(cmd, program, invocation, &mut kept, shared)
                    .await;
                shared.metrics.running_programs.dec();
                body
            }
            Err(e) => {
                error!(error = %e, "cannot write the audit file; refusing to run {}", program.name);
                let message = "the server cannot write its audit log, so it runs nothing";
                Body::Err(Failure::new(ErrorCode::Internal, message))
            }
        };
        self.remember(cmd, kept, &body, shared).await;
        body
    }

    /// Stores what became of the command, so a retry of its ID gets this answer.
    async fn remember(
        &self,
        cmd: &Admitted<'_>,
        kept: Option<Vec<Body>>,
        last: &Body,
        shared: &Shared,
    ) {
        let answer = match kept {
            Some(mut bodies) => {
                bodies.push(last.clone());
                replay::keep(bodies)
            }
            None => Answer::Dropped,
        };
        let entry = Entry {
            client: self.key.name.to_string(),
            digest: cmd.digest(),
            state: State::Done(answer),
        };
        // Durable before the answer goes out, as the claim was before the program ran:
        // a retry after a crash hears this answer, not "in progress".
        let finished = shared.replay.finish(
            cmd.request().id,
            &entry,
            cmd.fresh_until(),
            time::now(),
            true,
        );
        if let Err(e) = finished.await {
            warn!(client = %self.key, error = %e, "cannot record the outcome; a retry will hear \"in progress\"");
        }
    }

    /// Answers a client that sent the same request again: with the kept answer, by
    /// running a built-in again, or says the command is still running or ran with an
    /// answer too large to keep.
    async fn answer_retry(
        &mut self,
        cmd: &Admitted<'_>,
        entry: Entry,
        settings: &Settings,
        shared: &Shared,
    ) -> bool {
        let req = cmd.request();
        shared.audit.retried(&self.key, &self.peer, req, &entry);
        let failure = |code, message: &str| vec![Body::Err(Failure::new(code, message))];
        let bodies = match (entry.state, cmd.action()) {
            (State::Done(Answer::Kept(bodies)), _) => bodies,
            (State::Done(Answer::Builtin), Action::Builtin(b)) => {
                let body = Body::Ok(cmd::run(*b, cmd, &settings.policy));
                vec![fit(body, settings.limits.max_frame)]
            }
            (State::Running, _) => failure(
                ErrorCode::InProgress,
                "this command ID is still running; ask again later",
            ),
            (State::Done(Answer::Interrupted), _) => failure(
                ErrorCode::Duplicate,
                "this command ID started, and the server stopped while it ran: it may or may not have finished, and it is not run again",
            ),
            _ => failure(
                ErrorCode::Duplicate,
                "this command ID already ran; its answer was too large to keep",
            ),
        };
        for body in bodies {
            if !self.send(req, body).await {
                return false;
            }
        }
        true
    }

    /// Runs a program, streaming its output; the body is the final answer.
    async fn execute(
        &mut self,
        cmd: &Admitted<'_>,
        program: &Program,
        inv: &Invocation,
        kept: &mut Option<Vec<Body>>,
        shared: &Shared,
    ) -> Body {
        let mut running = match exec::spawn(program, &inv.argv, &shared.tracking) {
            Ok(running) => running,
            Err(e) => {
                warn!(client = %self.key, command = program.name, error = %e, "cannot start {}", program.path.display());
                let message = format!("the server cannot start {}: {e}", program.name);
                return Body::Err(Failure::new(ErrorCode::Internal, message));
            }
        };
        let started = Instant::now();
        let counter = cmd.request().counter;
        let mut run = Run {
            deadline: started + program.timeout,
            kill_at: None,
            listening: true,
            info: ExitInfo::default(),
            stdin_left: program.stdin.unwrap_or(0),
            stdin: running.take_stdin(),
            stdin_buf: Vec::new(),
            stdin_end: false,
        };
        // A program that reads stdin says so; the client sends it only then.
        if let Some(stdin_limit) = program.stdin {
            let started = Body::Started(Started { stdin_limit });
            let frame = Response {
                counter,
                id: cmd.request().id,
                body: started,
            };
            run.listening = self.send_response(&frame).await && self.flush().await;
            if !run.listening {
                run.end_stdin();
            }
        }
        loop {
            tokio::select! {
                event = running.next() => match event {
                    Ok(Event::Output(stream, data)) => {
                        let out = Output { stream, data };
                        self.forward(cmd, &mut run, program, out, &running, kept).await
                    }
                    Ok(Event::Exited(status)) => {
                        (run.info.code, run.info.signal) = exec::outcome(status);
                        break;
                    }
                    Err(e) => {
                        warn!(client = %self.key, command = program.name, error = %e, "lost the program");
                        break;
                    }
                },
                () = tokio::time::sleep_until(run.deadline.into()), if !run.info.timed_out => {
                    run.info.timed_out = true;
                    running.signal(Signal::SIGTERM);
                    run.kill_at = Some(Instant::now() + KILL_GRACE);
                }
                written = write_some(run.stdin.as_mut(), &run.stdin_buf), if !run.stdin_buf.is_empty() => {
                    run.wrote_stdin(written);
                }
                () = sleep_until_opt(run.kill_at) => {
                    running.signal(Signal::SIGKILL);
                    run.kill_at = None;
                }
                next = self.io.next(), if run.listening && self.pending.is_none() && run.stdin_buf.len() < STDIN_BUFFER => match next {
                    Some(Ok(ClientMsg::Request(request))) => self.pending = Some(request),
                    Some(Ok(ClientMsg::Input(input))) if input.counter == counter => {
                        run.take_stdin(input.data);
                    }
                    Some(Ok(ClientMsg::InputEnd(of))) if of == counter => run.end_stdin(),
                    // Stdin for another request: nothing reads it.
                    Some(Ok(_)) => {}
                    // The client left: stop the program, unless the policy lets it finish.
                    // Like a timeout: SIGTERM, so its traps run, then SIGKILL.
                    _ => {
                        run.listening = false;
                        // No more stdin will come: a detached program reads its end.
                        run.end_stdin();
                        if !program.detach && run.kill_at.is_none() {
                            info!(client = %self.key, command = program.name, "client disconnected; stopping the command");
                            running.signal(Signal::SIGTERM);
                            run.kill_at = Some(Instant::now() + KILL_GRACE);
                        }
                    }
                },
            }
        }
        run.info.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Body::Ok(Reply::Exit(run.info))
    }

    /// Sends a chunk of output within the command's limit; a client that does not take
    /// it before the deadline has the command stopped, so nothing buffers without bound.
    async fn forward(
        &mut self,
        cmd: &Admitted<'_>,
        run: &mut Run,
        program: &Program,
        mut out: Output,
        running: &exec::Running,
        kept: &mut Option<Vec<Body>>,
    ) {
        let len = out.data.len() as u64;
        let room = program.output_limit.saturating_sub(run.info.output_bytes);
        run.info.output_bytes += len;
        if len > room {
            run.info.truncated = true;
            out.data
                .truncate(usize::try_from(room).unwrap_or(usize::MAX));
        }
        if out.data.is_empty() || !run.listening {
            return;
        }
        // Each output frame must fit the frame limit the server was given.
        let chunk = output_chunk(self.settings.limits.max_frame);
        if out.data.len() <= chunk {
            return self
                .send_output(cmd, run, program, out, running, kept)
                .await;
        }
        let Output { stream, data } = out;
        for piece in data.chunks(chunk) {
            let out = Output {
                stream,
                data: piece.to_vec(),
            };
            self.send_output(cmd, run, program, out, running, kept)
                .await;
            if !run.listening {
                return;
            }
        }
    }

    /// Sends one output frame (and keeps it for a retry while the answer fits the
    /// store's cap).
    async fn send_output(
        &mut self,
        cmd: &Admitted<'_>,
        run: &mut Run,
        program: &Program,
        out: Output,
        running: &exec::Running,
        kept: &mut Option<Vec<Body>>,
    ) {
        let limit = if run.info.timed_out {
            Instant::now() + KILL_GRACE
        } else {
            run.deadline
        };
        let fits = |k: &Vec<Body>| output_bytes(k) + out.data.len() <= replay::OUTCOME_CAP;
        *kept = kept.take().filter(fits).map(|mut k| {
            k.push(Body::Output(out.clone()));
            k
        });
        let frame = Response {
            counter: cmd.request().counter,
            id: cmd.request().id,
            body: Body::Output(out),
        };
        match tokio::time::timeout_at(limit.into(), self.io.send(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                run.listening = false;
                if !program.detach {
                    running.signal(Signal::SIGKILL);
                }
            }
            Err(_) => {
                info!(client = %self.key, command = program.name, "client not reading output; stopping the command");
                run.info.timed_out = true;
                run.listening = false;
                running.signal(Signal::SIGKILL);
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
        let code = match &err {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::NoMemory(_) => ErrorCode::Busy,
            FrameError::Version(_) => ErrorCode::UnsupportedVersion,
            FrameError::Malformed(_) | FrameError::Trailing(_) | FrameError::Empty => {
                ErrorCode::Malformed
            }
            FrameError::Truncated | FrameError::Io(_) => {
                return info!(client = %self.key, peer = %self.peer, "connection lost: {err}");
            }
        };
        warn!(client = %self.key, peer = %self.peer, outcome = code.name(), "unreadable frame: {err}; closing");
        let failure = Failure::new(code, err.to_string());
        let response = Response {
            counter: 0,
            id: [0; 16],
            body: Body::Err(failure),
        };
        self.send_response(&response).await;
    }
}

/// The state of one program run.
struct Run {
    deadline: Instant,
    kill_at: Option<Instant>,
    /// The client is still there to send output to.
    listening: bool,
    info: ExitInfo,
    /// Bytes of stdin the program may still be given.
    stdin_left: u64,
    /// The program's stdin while it is open.
    stdin: Option<ChildStdin>,
    /// Client stdin not yet taken by the program; the client is not read past
    /// [`STDIN_BUFFER`] of it.
    stdin_buf: Vec<u8>,
    /// The client's stdin ended (or hit its limit): close the program's once it is fed.
    stdin_end: bool,
}

/// Client stdin held for a program that is slow to read it.
const STDIN_BUFFER: usize = 64 * 1024;

impl Run {
    /// Queues a piece of the client's stdin for the program, within its limit (past it
    /// the program's stdin is closed and the answer says so).
    fn take_stdin(&mut self, mut data: Vec<u8>) {
        let room = usize::try_from(self.stdin_left).unwrap_or(usize::MAX);
        if data.len() > room {
            data.truncate(room);
            self.info.stdin_truncated = true;
        }
        self.stdin_left -= data.len() as u64;
        if self.stdin.is_some() {
            self.stdin_buf.extend_from_slice(&data);
        }
        if self.info.stdin_truncated {
            self.end_stdin();
        }
    }

    /// The client's stdin ended: the program reads end of file once it has the rest.
    fn end_stdin(&mut self) {
        self.stdin_end = true;
        if self.stdin_buf.is_empty() {
            self.stdin = None;
        }
    }

    /// A write to the program's stdin finished; an error (it closed its stdin, or
    /// exited) drops what is left.
    fn wrote_stdin(&mut self, written: std::io::Result<usize>) {
        match written {
            Ok(n) => {
                self.stdin_buf.drain(..n);
                if self.stdin_buf.is_empty() && self.stdin_end {
                    self.stdin = None;
                }
            }
            Err(_) => {
                self.stdin = None;
                self.stdin_buf = Vec::new();
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

fn output_bytes(bodies: &[Body]) -> usize {
    bodies
        .iter()
        .map(|b| {
            if let Body::Output(o) = b {
                o.data.len()
            } else {
                0
            }
        })
        .sum()
}

/// Bytes of output per frame: 16 KiB, or less when the frame limit is lower (a frame
/// also holds the version, counter, ID and body tags: at most 64 bytes more).
fn output_chunk(max_frame: usize) -> usize {
    exec::CHUNK.min(max_frame.saturating_sub(64)).max(1)
}

/// `body`, or an error saying it does not fit the frame limit: every request gets an
/// answer, also one whose reply (a long `commands` list) is larger than `max_frame`.
fn fit(body: Body, max_frame: usize) -> Body {
    let large = matches!(
        body,
        Body::Ok(Reply::Commands(_) | Reply::Describe(_) | Reply::Echo(_) | Reply::Whoami(_))
    );
    if !large {
        return body;
    }
    let size = postcard::experimental::serialized_size(&body).unwrap_or(usize::MAX);
    // Version, counter and ID around the body: at most 27 bytes.
    match size.saturating_add(27) <= max_frame {
        true => body,
        false => Body::Err(Failure::new(
            ErrorCode::Internal,
            format!("the answer ({size} bytes) is larger than this server's max_frame ({max_frame}); ask its operator to raise it"),
        )),
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
