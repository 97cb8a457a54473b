//! One client connection after its handshake: requests read one at a time, each taken
//! down one path (admission, which claims its ID; the built-in, or the program and its
//! outcome kept on the ID's ticket; one outcome, counted, recorded and answered) until
//! the client leaves, breaks the protocol, idles out or the server shuts down. The
//! frames themselves are `wire`'s; running a program is `drive`'s.

mod drive;
mod job;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::{error, warn};

use cmdchan_common::frame::{FrameError, MsgCodec, RESPONSE_OVERHEAD};
use cmdchan_common::ident::PskIdentity;
use cmdchan_common::protocol::{Body, ClientMsg, Grant, Reply, Request, Response};
use cmdchan_common::time;

use crate::admit::{self, Action, Admission, Admitted, Refusal};
use crate::audit::{Asked, Peer};
use crate::cmd;
use crate::handshake;
use crate::metrics::Tally;
use crate::notice::{Listener, Notice};
use crate::outcome::{self, Bodies, Outcome};
use crate::policy::{Builtin, Invocation, Program};
use crate::replay::Ticket;
use crate::state::{Settings, Shared};

use self::wire::{Read, Wire};

/// Security refusals (bad tag, replay, forbidden…) a connection may earn before it is
/// closed and its source penalized.
const STRIKES: u32 = 3;

/// Serves one accepted TCP connection to its end. Never panics on peer input.
pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Without NODELAY a response can sit ~40 ms behind Nagle and delayed ACK.
    let _ = tcp.set_nodelay(true);
    let Some(proven) = handshake::accept(tcp, peer, &shared).await else {
        return;
    };
    let settings = shared.settings();
    if settings
        .revocations
        .retired(&shared.zone, proven.generation)
    {
        warn!(client = %proven.key, %peer, "closing the connection: generation {} of zone {}'s key is retired (revocation list)", proven.generation, shared.zone);
        return;
    }
    let codec = MsgCodec::with_budget(settings.limits.max_frame, shared.frames.clone());
    let (key, peer) = (Arc::new(proven.key), Peer::new(peer));
    let idle_timeout = settings.limits.idle_timeout;
    let wire = Wire::new(
        proven.stream,
        codec,
        key.clone(),
        peer.clone(),
        idle_timeout,
    );
    let mut conn = Connection {
        wire,
        pending: None,
        left: None,
        key,
        generation: proven.generation,
        peer,
        next_counter: 1,
        strikes: 0,
        proven: None,
        settings,
        notices: shared.notices.listen(),
        tally: Tally::default(),
    };
    conn.run(&shared).await;
    conn.wire.close().await;
}

/// A request read while a program ran.
struct Pending {
    request: Request,
    /// It came while that program's stdin was still open (before `InputEnd`).
    early: bool,
}

struct Connection {
    wire: Wire,
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
            if !self.answer(&next.request, next.early, shared).await {
                return;
            }
        }
    }

    /// Waits for the next request; `None` when the connection should end (the client
    /// left, idled out or broke the protocol, the server is stopping, or a reload revoked
    /// this client's key).
    async fn next_request(&mut self, shared: &Shared) -> Option<Request> {
        loop {
            match self.next_frame(shared).await? {
                Ok(ClientMsg::Request(request)) => return Some(request),
                // Stdin for a program that has ended: nothing reads it any more.
                Ok(ClientMsg::Input(_) | ClientMsg::InputEnd(_)) => continue,
                Err(e) => {
                    // Boxed: answering a broken frame is rare, and its future would be
                    // room every connection keeps.
                    Box::pin(self.wire.unreadable(e)).await;
                    return None;
                }
            }
        }
    }

    /// The next frame from the client, or one it could not send whole; `None` when the
    /// connection should end (see [`Connection::next_request`]). A request moves up
    /// through each async caller: this returns the reader's result as it is.
    async fn next_frame(&mut self, shared: &Shared) -> Read {
        if let Some(left) = self.left.take() {
            return left.map(Err);
        }
        if let Some(notice) = self.notices.check() {
            if self.ends(notice, shared) {
                return None;
            }
        }
        if let Some(next) = self.wire.buffered() {
            return next;
        }
        self.wire.quiet();
        loop {
            tokio::select! {
                biased;
                notice = self.notices.next() => {
                    if self.ends(notice, shared) {
                        return None;
                    }
                }
                next = self.wire.wait() => return next?,
            }
        }
    }

    /// True if `notice` ends the connection: the server is stopping, or the settings
    /// now in force revoke this client's key (logged).
    fn ends(&mut self, notice: Notice, shared: &Shared) -> bool {
        if notice == Notice::Stop {
            return true;
        }
        self.settings = shared.settings();
        self.wire.idle_timeout = self.settings.limits.idle_timeout;
        if self
            .settings
            .revocations
            .retired(&shared.zone, self.generation)
        {
            warn!(client = %self.key, peer = %self.peer, "closing the connection: its zone key generation {} is retired", self.generation);
            return true;
        }
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

    /// One request's path: admission (whose last step claims the ID), then what the
    /// request does (a retry's answer, a built-in, or a program), then its one outcome,
    /// counted and recorded in [`Connection::conclude`], and answered. False ends the
    /// connection. `req` is borrowed, and the answer sent once nothing but the outcome
    /// is held: what the future holds across each wait is room every connection keeps.
    async fn answer(&mut self, req: &Request, early: bool, shared: &Shared) -> bool {
        let (bodies, ends) = self.decide(req, early, shared).await;
        for body in bodies {
            if !self.send(req, body).await {
                return false;
            }
        }
        !ends
    }

    /// Everything of [`Connection::answer`] but sending: the answer's bodies, and
    /// whether the connection ends after them.
    async fn decide(&mut self, req: &Request, early: bool, shared: &Shared) -> (Bodies, bool) {
        let started = Instant::now();
        let expected = self.next_counter;
        self.next_counter += 1;
        let settings = Arc::clone(&self.settings);
        let mut rules = shared.rules(&settings, self.generation, started);
        rules.tag_proven = admit::proven(self.proven.as_deref(), req);
        rules.stdin_was_open = early;
        // Admitted borrows the identity while running a program needs `&mut self`.
        let key = Arc::clone(&self.key);
        let admission =
            admit::admit(req, expected, &key, &rules, &shared.replay, time::now()).await;
        if admission.is_ok() && !rules.tag_proven {
            self.proven = Some(Box::new((req.grant.clone(), req.tag)));
        }
        let (cmd, outcome) = match admission {
            Err(refusal) => (None, Outcome::Refused(refusal)),
            // A built-in that follows a job has no effect: a retry follows it again.
            Ok(Admission::Retry(_, cmd) | Admission::Admitted(cmd)) if follows(&cmd) => {
                let Action::Builtin(b) = *cmd.action() else {
                    unreachable!("follows() is only true of built-ins")
                };
                let outcome = Box::pin(self.follow(b, &cmd, shared)).await;
                (Some(cmd), outcome)
            }
            Ok(Admission::Retry(entry, cmd)) => {
                let rerun = match cmd.action() {
                    Action::Builtin(b) if outcome::reruns(&entry) => {
                        Some(builtin(*b, &cmd, &settings, shared).await)
                    }
                    _ => None,
                };
                let retried = Outcome::Retried(outcome::retried(entry, rerun));
                (Some(cmd), retried)
            }
            Ok(Admission::Admitted(mut cmd)) => {
                let ticket = cmd.take_ticket();
                let outcome = match (cmd.action(), ticket) {
                    (Action::Run(..), Some(ticket)) if cmd.request().detach => {
                        Box::pin(self.start_job(&mut cmd, ticket, shared)).await
                    }
                    (Action::Run(program, inv), Some(ticket)) => {
                        // Boxed: a program's run is a large future, and every idle
                        // connection would otherwise hold room for one.
                        Box::pin(self.run_program(&cmd, program, inv, ticket, shared)).await
                    }
                    (Action::Builtin(b), _) => builtin(*b, &cmd, &settings, shared).await,
                    (Action::Run(..), None) => unreachable!("a program's claim gives a ticket"),
                };
                (Some(cmd), outcome)
            }
        };
        self.conclude(req, cmd.as_ref(), outcome, started, shared)
    }

    /// The end of every request's path: its outcome counted and recorded; the bodies
    /// to answer with, and whether the connection ends after them (a refusal that
    /// closes it or earned its last strike, see [`Connection::struck`], or an outcome
    /// that could not be kept).
    fn conclude(
        &mut self,
        req: &Request,
        cmd: Option<&Admitted<'_>>,
        outcome: Outcome,
        started: Instant,
        shared: &Shared,
    ) -> (Bodies, bool) {
        let took = started.elapsed();
        let command = match (outcome.admitted(), cmd) {
            (true, Some(cmd)) => cmd.command(),
            _ => "",
        };
        self.tally
            .count(&shared.metrics, command, outcome.label(), took);
        let asked = Asked {
            key: &self.key,
            peer: &self.peer,
            req,
            secrets: self.settings.policy.secrets(&req.command),
        };
        shared.audit.record(asked, cmd, &outcome, took);
        let ends = match &outcome {
            Outcome::Refused(r) => r.closes_connection() || self.struck(r, shared),
            Outcome::Unkept(_) => true,
            _ => false,
        };
        (outcome.into_bodies(), ends)
    }

    /// Runs an admitted program once its start is audited, and keeps its outcome on
    /// its ticket before it is answered (see [`Connection::keep`]).
    async fn run_program(
        &mut self,
        cmd: &Admitted<'_>,
        program: &Program,
        invocation: &Invocation,
        ticket: Ticket,
        shared: &Shared,
    ) -> Outcome {
        let ran = match shared.audit.started(cmd, &self.key, &self.peer, invocation) {
            Ok(()) => {
                // Earlier answers go out now, not after the program.
                self.wire.flush().await;
                shared.metrics.running_programs.inc();
                let ran = self.execute(cmd, program, invocation, shared).await;
                shared.metrics.running_programs.dec();
                ran
            }
            Err(e) => {
                error!(error = %e, "cannot write the audit file; refusing to run {}", program.name);
                (Outcome::NotAudited, Some(Vec::new()))
            }
        };
        match self.keep(ticket, cmd.request(), &ran, shared).await {
            true => ran.0,
            false => Outcome::Unkept(Box::new(ran.0)),
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
        self.wire.feed(&response).await
    }
}

/// Whether an admitted request is a built-in that follows a job over time.
fn follows(cmd: &Admitted<'_>) -> bool {
    matches!(cmd.action(), Action::Builtin(b) if b.follows())
}

/// Runs a built-in that answers at once. Every request gets an answer, also one whose
/// reply (a long `commands` list) is larger than `max_frame`.
async fn builtin(b: Builtin, cmd: &Admitted<'_>, settings: &Settings, shared: &Shared) -> Outcome {
    let reply = match cmd::run(b, cmd, &settings.policy, shared).await {
        cmd::Handled::Answered(reply) => reply,
        cmd::Handled::Refused(refusal) => return Outcome::Refused(refusal),
        cmd::Handled::Connection => {
            return Outcome::Refused(Refusal::BadArguments(format!(
                "{} follows a job and is not answered at once",
                b.name()
            )))
        }
    };
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
