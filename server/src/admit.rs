//! Admission: the checks a request must pass, in a fixed order, before anything runs.
//!
//! Order (PROTOCOL.md §7): counter → rate → tag → revocation → expiry → audience →
//! freshness → command, arguments and policy → capacity → command ID. The rate comes
//! second so that every request, refused or not, costs its sender a token (the name is
//! the one the TLS handshake proved). The one check with a side effect (remembering the
//! ID) comes last, so an ID is recorded exactly when its command is about to run.
//! Admission decides; it never runs anything. [`check`] is pure: time and the session
//! are arguments.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use cmdchan_common::approval::Approval;
use cmdchan_common::ident::{printable, Ident, PskIdentity};
use cmdchan_common::keys::{TagKey, ZoneKey};
use cmdchan_common::protocol::{ErrorCode, Failure, Grant, Param, Request};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::policy::{BindError, Builtin, Command, Invocation, Policy, Program};
use crate::rate::RateLimiter;
use crate::replay::{Answer, Claim, Entry, Record, State, Store, StoreError, Ticket};
use crate::revoke::{Revocations, Revoked};

/// What admission needs to know about this server.
#[derive(Debug)]
pub struct Rules<'a> {
    pub tag_key: &'a TagKey,
    /// This server's zone, and its zone key of each generation it holds (approvals are
    /// checked under the approver's generation).
    pub zone: &'a Ident,
    pub zone_keys: &'a BTreeMap<u64, Arc<ZoneKey>>,
    pub server_id: &'a Ident,
    /// Freshness window in seconds: `|issued_at - now| <= window` passes.
    pub window: u64,
    pub revocations: &'a Revocations,
    pub policy: &'a Policy,
    /// Slots for programs running at once, across all commands.
    pub executions: &'a Arc<Semaphore>,
    pub limiter: &'a RateLimiter,
    /// (requests per second, burst) per client.
    pub rate: (f64, f64),
    /// This connection already proved this request's exact grant and tag: the HMAC over
    /// the same name, grant and key gives the same answer, so it is not worked out
    /// again. The caller sets it only on a byte-for-byte match (see [`proven`]).
    pub tag_proven: bool,
    /// When the request arrived: the rate limiter's clock (read once per request).
    pub arrived: Instant,
    /// The request came while the program before it still had its stdin open.
    pub stdin_was_open: bool,
}

/// Why a request was refused. [`Refusal::code`] is the one mapping to the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadCounter {
        expected: u64,
        got: u64,
    },
    EpochMismatch {
        grant: u64,
        key: u64,
    },
    BadTag,
    Revoked {
        epoch: u64,
        min: u64,
    },
    NameRevoked,
    Expired {
        at: u64,
    },
    NotGranted {
        server: Ident,
    },
    WrongTarget {
        target: Ident,
        server: Ident,
    },
    Stale {
        issued_at: u64,
        now: u64,
        window: u64,
    },
    /// The name as sent, made printable (see `ident::printable`).
    UnknownCommand(String),
    BadArguments(String),
    Forbidden {
        role: Ident,
        command: String,
    },
    ForbiddenValue {
        role: Ident,
        why: String,
    },
    Busy(String),
    RateLimited {
        retry_after: Duration,
    },
    Replay,
    /// This client used the command ID before, for a different request.
    Reused,
    StoreUnavailable(String),
    /// The jobs' store (the pool's Redis) cannot answer for a job now.
    JobsUnavailable(String),
    /// The request came before the previous request's program had the end of its
    /// stdin; that stdin was ended there.
    StdinOpen,
    /// A revocation list no newer than the one this server keeps.
    OutdatedList {
        offered: u64,
        kept: u64,
    },
    /// A revocation list whose signature does not verify (why, in words).
    BadSignature(String),
    /// This server cannot check revocation lists: its zone key file names no key.
    NoRevocationKey,
    /// The newer list could not be kept (it is not applied).
    ListNotKept(String),
    /// Fewer distinct approvers than the command's policy asks for.
    ApprovalRequired {
        needed: usize,
        have: usize,
    },
    /// An approval that does not verify (why, in words).
    BadApproval {
        approver: Ident,
        why: &'static str,
    },
    SelfApproval,
    ApproverNotAllowed {
        approver: Ident,
        role: Ident,
        command: String,
    },
    ApprovalExpired {
        at: u64,
    },
    ApproverRevoked {
        approver: Ident,
    },
    /// The approval does not name this server.
    NotApprovedHere {
        server: Ident,
    },
}

/// A request that passed every check but the command ID.
#[derive(Debug)]
pub struct Checked<'a> {
    admitted: Admitted<'a>,
}

/// A request that passed every check and whose ID is now recorded: the only thing a
/// command handler accepts. It borrows the request; nothing is copied.
#[derive(Debug)]
pub struct Admitted<'a> {
    request: &'a Request,
    client: &'a Ident,
    server: &'a Ident,
    action: Action<'a>,
    /// Unix second after which this request could no longer pass freshness.
    fresh_until: u64,
    /// Execution slots held while the command runs; released on drop.
    slots: Vec<OwnedSemaphorePermit>,
    /// The request's digest, bound to its command ID (see [`digest`]).
    digest: u64,
    /// A program's claim on its command ID, which its outcome finishes.
    ticket: Option<Ticket>,
    /// Who approved it, or that an emergency role ran it without approvals.
    approvals: Approvals,
}

/// What an admitted request does.
#[derive(Debug)]
pub enum Action<'a> {
    Builtin(Builtin),
    /// Run a policy program with this exact argv.
    Run(&'a Program, Invocation),
}

/// What admission decided for a request that passed every check.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Run it.
    Admitted(Admitted<'a>),
    /// The same client sent this same request before: answer from what the store kept
    /// (a built-in runs again; it has no effect).
    Retry(Entry, Admitted<'a>),
}

/// Runs every check in order, then claims the command ID.
pub async fn admit<'a>(
    request: &'a Request,
    expected_counter: u64,
    key: &'a PskIdentity,
    rules: &Rules<'a>,
    store: &Store,
    now: u64,
) -> Result<Admission<'a>, Refusal> {
    let checked = check(request, expected_counter, key, rules, now)?.reserve(rules.executions)?;
    // Only the store is awaited, with the record and the checked request held once:
    // this future is room every connection keeps.
    let (record, program) = checked.record();
    let claimed = store.claim(&record, now, program).await;
    checked.claimed(claimed, store, record)
}

/// The pure checks, in order; the first failure wins.
pub fn check<'a>(
    req: &'a Request,
    expected_counter: u64,
    key: &'a PskIdentity,
    rules: &Rules<'a>,
    now: u64,
) -> Result<Checked<'a>, Refusal> {
    if req.counter != expected_counter {
        return Err(Refusal::BadCounter {
            expected: expected_counter,
            got: req.counter,
        });
    }
    if rules.stdin_was_open {
        return Err(Refusal::StdinOpen);
    }
    throttle(&key.name, rules)?;
    let grant = &req.grant;
    if grant.epoch != key.epoch {
        return Err(Refusal::EpochMismatch {
            grant: grant.epoch,
            key: key.epoch,
        });
    }
    // The name is the one the TLS handshake proved, never one from the message.
    if !rules.tag_proven && !rules.tag_key.verify(&key.name, grant, &req.tag) {
        return Err(Refusal::BadTag);
    }
    // The grant's epoch equals the key's (checked above), so the key decides.
    match rules.revocations.check(key) {
        Ok(()) => {}
        Err(Revoked::Name) => return Err(Refusal::NameRevoked),
        Err(Revoked::Epoch { epoch, min }) => return Err(Refusal::Revoked { epoch, min }),
    }
    if let Some(at) = grant.expires.filter(|&at| now >= at) {
        return Err(Refusal::Expired { at });
    }
    audience(grant, &req.target, rules.server_id)?;
    // fresh  ⇔  |issued_at − now| ≤ window
    if req.issued_at.abs_diff(now) > rules.window {
        return Err(Refusal::Stale {
            issued_at: req.issued_at,
            now,
            window: rules.window,
        });
    }
    let action = authorize(req, &grant.role, rules.policy)?;
    let approvals = match &action {
        Action::Run(program, _) => approve::check(req, &key.name, program, rules, now)?,
        Action::Builtin(b) if req.approval.is_some() => {
            return Err(Refusal::BadArguments(format!(
                "{} is a built-in: it needs no approvals",
                b.name()
            )))
        }
        Action::Builtin(_) => Approvals::None,
    };
    let fresh_until = req.issued_at.saturating_add(rules.window);
    let admitted = Admitted {
        request: req,
        client: &key.name,
        server: rules.server_id,
        action,
        fresh_until,
        slots: Vec::new(),
        digest: digest(&key.name, req),
        ticket: None,
        approvals,
    };
    Ok(Checked { admitted })
}

/// Takes a token from the client's rate bucket; every request that got past the
/// counter pays one, refused or not.
fn throttle(client: &Ident, rules: &Rules<'_>) -> Result<(), Refusal> {
    let (rate, burst) = rules.rate;
    rules
        .limiter
        .take(client.as_str(), rate, burst, rules.arrived)
        .map_err(|retry_after| Refusal::RateLimited { retry_after })
}

/// The request as its digest covers it: every field but the counter, which changes
/// when a request is retried on a new connection.
#[derive(Serialize)]
struct Digested<'a> {
    id: &'a [u8; 16],
    issued_at: u64,
    target: &'a Ident,
    grant: &'a Grant,
    tag: &'a [u8; 32],
    command: &'a str,
    args: &'a [String],
    params: &'a [Param],
    detach: bool,
    run: &'a Option<[u8; 16]>,
    approval: &'a Option<Approval>,
}

/// `digest = first 8 bytes of SHA-256(bytes(client) || postcard(request without its
/// counter))`: what binds a command ID to one request of one client.
pub fn digest(client: &Ident, req: &Request) -> u64 {
    let digested = Digested {
        id: &req.id,
        issued_at: req.issued_at,
        target: &req.target,
        grant: &req.grant,
        tag: &req.tag,
        command: &req.command,
        args: &req.args,
        params: &req.params,
        detach: req.detach,
        run: &req.run,
        approval: &req.approval,
    };
    let mut hash = Sha256::new();
    hash.update((client.as_str().len() as u32).to_be_bytes());
    hash.update(client.as_str());
    // Most requests encode in a few hundred bytes: on the stack, not the heap.
    let mut buf = [0u8; 1024];
    match postcard::to_slice(&digested, &mut buf) {
        Ok(bytes) => hash.update(bytes),
        // Only a request larger than the buffer; encoding into a Vec cannot fail.
        Err(_) => hash.update(postcard::to_stdvec(&digested).unwrap_or_default()),
    }
    let out = hash.finalize();
    u64::from_be_bytes(out[..8].try_into().unwrap_or_default())
}

/// True if `req` carries exactly the grant and tag of `earlier`, a pair this connection
/// proved before (the tag compared in constant time).
pub fn proven(earlier: Option<&(Grant, [u8; 32])>, req: &Request) -> bool {
    earlier.is_some_and(|(grant, tag)| *grant == req.grant && openssl::memcmp::eq(tag, &req.tag))
}

fn audience(grant: &Grant, target: &Ident, server: &Ident) -> Result<(), Refusal> {
    if !grant.servers.is_empty() && !grant.servers.contains(server) {
        return Err(Refusal::NotGranted {
            server: server.clone(),
        });
    }
    if target != server {
        return Err(Refusal::WrongTarget {
            target: target.clone(),
            server: server.clone(),
        });
    }
    Ok(())
}

fn authorize<'a>(req: &Request, role: &Ident, policy: &'a Policy) -> Result<Action<'a>, Refusal> {
    let unknown = |name: &str| Refusal::UnknownCommand(printable(name.as_bytes()));
    let command = policy
        .lookup(&req.command)
        .ok_or_else(|| unknown(&req.command))?;
    if !policy.allows(role, &req.command) {
        let (role, command) = (role.clone(), req.command.clone());
        return Err(Refusal::Forbidden { role, command });
    }
    match command {
        Command::Builtin(b) if req.detach => Err(Refusal::BadArguments(format!(
            "{} is a built-in: only a program runs as a job",
            b.name()
        ))),
        Command::Program(p) if req.detach && !p.detach => Err(Refusal::Forbidden {
            role: role.clone(),
            command: format!(
                "{} as a job (its policy does not let it be detached)",
                req.command
            ),
        }),
        Command::Builtin(b) => {
            b.check_args(&req.args, &req.params)
                .map_err(Refusal::BadArguments)?;
            if let (Builtin::Describe, [name]) = (b, req.args.as_slice()) {
                policy.describe(role, name).ok_or_else(|| unknown(name))?;
            }
            Ok(Action::Builtin(b))
        }
        Command::Program(p) => match p.bind(
            &req.args,
            &req.params,
            policy.restrictions(role, &req.command),
        ) {
            Ok(invocation) => Ok(Action::Run(p, invocation)),
            Err(BindError::Bad(why)) => Err(Refusal::BadArguments(why)),
            Err(BindError::Forbidden(why)) => Err(Refusal::ForbiddenValue {
                role: role.clone(),
                why,
            }),
        },
    }
}

impl<'a> Checked<'a> {
    /// Takes an execution slot for a program (the global one and the command's own), so
    /// that over the limit the caller hears `busy` before its ID is used up.
    pub fn reserve(mut self, executions: &Arc<Semaphore>) -> Result<Self, Refusal> {
        let Action::Run(program, _) = &self.admitted.action else {
            return Ok(self);
        };
        let busy = |what: &str| {
            Refusal::Busy(format!(
                "{what} is running its limit of commands; try again later"
            ))
        };
        let global = executions
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("the server"))?;
        self.admitted.slots.push(global);
        if let Some(own) = &program.slots {
            let permit = own
                .clone()
                .try_acquire_owned()
                .map_err(|_| busy(&program.name))?;
            self.admitted.slots.push(permit);
        }
        Ok(self)
    }

    /// The claim of the command ID, until the request could no longer pass freshness,
    /// and whether it is a program's. A program's claim says it is running, and is
    /// durable before it runs. A built-in has no effect: its claim is written in the
    /// background, and a retry runs it again.
    fn record(&self) -> (Record, bool) {
        let a = &self.admitted;
        let (state, program) = match a.action {
            Action::Builtin(_) => (State::Done(Answer::Builtin), false),
            Action::Run(..) => (State::Running, true),
        };
        let record = Record {
            id: a.request.id,
            until: a.approvals.keep_until(a.request, a.fresh_until),
            entry: Entry {
                client: a.client.to_string(),
                digest: a.digest,
                state,
            },
        };
        (record, program)
    }

    /// What the store said of the claim of `record`. Seen before: by this client for
    /// this same request it is a retry; by this client for another request, a reuse;
    /// by anyone else, a replay.
    fn claimed(
        self,
        claimed: Result<Claim, StoreError>,
        store: &Store,
        record: Record,
    ) -> Result<Admission<'a>, Refusal> {
        let mut a = self.admitted;
        let program = matches!(a.action, Action::Run(..));
        match claimed {
            Ok(Claim::Fresh) => {
                if program {
                    a.ticket = Some(Ticket::new(store.clone(), record));
                }
                Ok(Admission::Admitted(a))
            }
            Ok(Claim::Seen(seen)) if seen.client != a.client.as_str() => Err(Refusal::Replay),
            Ok(Claim::Seen(seen)) if seen.digest != a.digest => Err(Refusal::Reused),
            Ok(Claim::Seen(seen)) => Ok(Admission::Retry(seen, a)),
            Err(e @ (StoreError::Full { .. } | StoreError::Unavailable(_))) => {
                Err(Refusal::StoreUnavailable(e.to_string()))
            }
        }
    }
}

impl Admitted<'_> {
    /// The unix second until which the store must remember this command ID.
    pub fn fresh_until(&self) -> u64 {
        self.fresh_until
    }
    pub fn action(&self) -> &Action<'_> {
        &self.action
    }
    /// The command's name, as the policy knows it.
    pub fn command(&self) -> &str {
        &self.request.command
    }
    pub fn request(&self) -> &Request {
        self.request
    }
    pub fn client(&self) -> &Ident {
        self.client
    }
    pub fn server(&self) -> &Ident {
        self.server
    }
    pub fn grant(&self) -> &Grant {
        &self.request.grant
    }
    pub fn args(&self) -> &[String] {
        &self.request.args
    }
    /// Who approved it, or that an emergency role ran it without approvals.
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }
    /// The request's digest, bound to its command ID.
    pub fn digest(&self) -> u64 {
        self.digest
    }
    /// A program's claim on its command ID, to be finished with its outcome.
    pub fn take_ticket(&mut self) -> Option<Ticket> {
        self.ticket.take()
    }
    /// The execution slots, for a job that holds them past its request.
    pub fn take_slots(&mut self) -> Vec<OwnedSemaphorePermit> {
        std::mem::take(&mut self.slots)
    }
}

impl Refusal {
    /// The wire code for this refusal; the only place refusals meet the protocol.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::BadCounter { .. } => ErrorCode::BadCounter,
            Refusal::EpochMismatch { .. } | Refusal::BadTag => ErrorCode::BadTag,
            Refusal::Revoked { .. } | Refusal::NameRevoked => ErrorCode::Revoked,
            Refusal::Expired { .. } => ErrorCode::Expired,
            Refusal::NotGranted { .. }
            | Refusal::WrongTarget { .. }
            | Refusal::NotApprovedHere { .. } => ErrorCode::WrongServer,
            Refusal::Stale { .. } => ErrorCode::Stale,
            Refusal::UnknownCommand(_) => ErrorCode::UnknownCommand,
            Refusal::BadArguments(_) => ErrorCode::BadArguments,
            Refusal::Forbidden { .. } | Refusal::ForbiddenValue { .. } => ErrorCode::Forbidden,
            Refusal::Busy(_) => ErrorCode::Busy,
            Refusal::RateLimited { .. } => ErrorCode::RateLimited,
            Refusal::Replay => ErrorCode::Replay,
            Refusal::Reused => ErrorCode::Reused,
            Refusal::StoreUnavailable(_) | Refusal::JobsUnavailable(_) => {
                ErrorCode::StoreUnavailable
            }
            Refusal::StdinOpen => ErrorCode::StdinOpen,
            Refusal::OutdatedList { .. } => ErrorCode::Outdated,
            Refusal::BadSignature(_) => ErrorCode::BadSignature,
            Refusal::NoRevocationKey | Refusal::ListNotKept(_) => ErrorCode::Internal,
            Refusal::ApprovalRequired { .. } => ErrorCode::ApprovalRequired,
            Refusal::BadApproval { .. } => ErrorCode::BadApproval,
            Refusal::SelfApproval => ErrorCode::SelfApproval,
            Refusal::ApproverNotAllowed { .. } => ErrorCode::ApproverNotAllowed,
            Refusal::ApprovalExpired { .. } => ErrorCode::ApprovalExpired,
            Refusal::ApproverRevoked { .. } => ErrorCode::ApproverRevoked,
        }
    }

    /// The refusal as it goes on the wire.
    pub fn failure(&self) -> Failure {
        let retry_after_ms = match self {
            Refusal::RateLimited { retry_after } => {
                Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX))
            }
            _ => None,
        };
        Failure {
            retry_after_ms,
            ..Failure::new(self.code(), self.to_string())
        }
    }

    /// A broken counter means the stream cannot be trusted, and a revoked key may not
    /// keep its connection: either ends it.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::BadCounter { .. } | Refusal::Revoked { .. } | Refusal::NameRevoked
        )
    }

    /// Whether an operator should look at it (logged at WARN): a security event, or a
    /// store that cannot take IDs (nothing runs until it can).
    pub fn is_warning(&self) -> bool {
        self.is_security_event()
            || matches!(
                self,
                Refusal::StoreUnavailable(_) | Refusal::JobsUnavailable(_)
            )
    }

    /// Whether this is a strike against the connection: not a mistake, a server's own
    /// limit or a store that cannot answer.
    pub fn is_security_event(&self) -> bool {
        !matches!(
            self,
            Refusal::UnknownCommand(_)
                | Refusal::BadArguments(_)
                | Refusal::Busy(_)
                | Refusal::RateLimited { .. }
                | Refusal::StoreUnavailable(_)
                | Refusal::JobsUnavailable(_)
                | Refusal::StdinOpen
                | Refusal::OutdatedList { .. }
                | Refusal::NoRevocationKey
                | Refusal::ListNotKept(_)
                | Refusal::ApprovalRequired { .. }
                | Refusal::ApprovalExpired { .. }
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadCounter { expected, got } => write!(f, "request counter {got}, expected {expected}; closing the connection"),
            Refusal::EpochMismatch { grant, key } => write!(f, "the grant is for key epoch {grant} but the connection used epoch {key}"),
            Refusal::BadTag => f.write_str("the key-use tag does not match this client's name and grant"),
            Refusal::Revoked { epoch, min } => write!(f, "key epoch {epoch} is revoked (this server accepts epoch {min} and later); ask for a new credential"),
            Refusal::NameRevoked => f.write_str("this client is revoked; ask for a new credential"),
            Refusal::Expired { at } => write!(f, "the grant expired at {}", cmdchan_common::time::rfc3339(*at)),
            Refusal::NotGranted { server } => write!(f, "the grant does not cover server {server}"),
            Refusal::WrongTarget { target, server } => write!(f, "the request is for server {target}, but this is {server}"),
            Refusal::Stale { issued_at, now, window } => {
                let skew = i128::from(*issued_at) - i128::from(*now);
                write!(f, "issue time is {skew:+} s from the server's clock (allowed ±{window} s); check both clocks")
            }
            Refusal::UnknownCommand(name) => write!(f, "no command named \"{name}\""),
            Refusal::BadArguments(why) => f.write_str(why),
            Refusal::Forbidden { role, command } => write!(f, "role {role} may not run {command}"),
            Refusal::ForbiddenValue { role, why } => write!(f, "role {role}: {why}"),
            Refusal::Busy(why) => f.write_str(why),
            Refusal::RateLimited { retry_after } => {
                write!(f, "this client is over its request rate; send again in {} ms", retry_after.as_millis())
            }
            Refusal::Replay => f.write_str("this command ID was already used"),
            Refusal::Reused => f.write_str("this client already used this command ID for a different request; use a fresh ID for each request"),
            Refusal::StoreUnavailable(why) => write!(f, "the replay store cannot take the command ID ({why}); try again later"),
            Refusal::JobsUnavailable(why) => write!(f, "the job store cannot answer ({why}); try again later"),
            Refusal::StdinOpen => f.write_str("this request came before the end of the previous program's stdin (InputEnd); that stdin was ended there, and nothing of this request ran"),
            Refusal::OutdatedList { offered, kept } => write!(f, "this revocation list is version {offered}; this server keeps version {kept}, and takes only newer ones"),
            Refusal::BadSignature(why) => write!(f, "the revocation list {why}"),
            Refusal::NoRevocationKey => f.write_str("this server cannot check revocation lists: its zone key file names no revocation key; re-issue it with cmdchan-server admin zone-key"),
            Refusal::ListNotKept(why) => write!(f, "the revocation list could not be kept ({why}); it is not applied"),
            Refusal::ApprovalRequired { needed, have } => write!(f, "this command needs approvals from {needed} other people ({have} valid); prepare it with cmdchan approval request and have it signed"),
            Refusal::BadApproval { approver, why } => write!(f, "the approval by {approver} {why}"),
            Refusal::SelfApproval => f.write_str("the requester approved their own request; approvals must come from other people"),
            Refusal::ApproverNotAllowed { approver, role, command } => write!(f, "{approver} (role {role}) may not approve {command} on this server"),
            Refusal::ApprovalExpired { at } => write!(f, "the approval expired at {}", cmdchan_common::time::rfc3339(*at)),
            Refusal::ApproverRevoked { approver } => write!(f, "the approver {approver} is revoked or their grant has expired"),
            Refusal::NotApprovedHere { server } => write!(f, "the approval does not name this server ({server})"),
        }
    }
}

mod approve;
mod fixture;
pub use approve::Approvals;
pub use fixture::Fixture;

#[cfg(test)]
mod tests;
