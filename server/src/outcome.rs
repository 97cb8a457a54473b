//! What became of one request, and the one place it meets the wire: its error code and
//! message, the outcome name of its audit record, and its metric label; and what a retry
//! of a claimed command ID hears. A new way for a
//! request to end is a variant here, and the compiler lists every match that must learn it.

use cmdchan_common::frame::FrameError;
use cmdchan_common::protocol::{Body, ErrorCode, ExitInfo, Failure, JobInfo, Reply};

use crate::admit::Refusal;
use crate::replay::{self, Answer, Entry, State};
use crate::run::Printed;

/// How one request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Admission refused it; nothing ran.
    Refused(Refusal),
    /// The same client sent the same request again; nothing ran (a built-in ran again).
    Retried(Retry),
    /// A built-in answered.
    Answered(Reply),
    /// A built-in's answer is larger than the frame limit.
    TooLarge { size: usize, max_frame: usize },
    /// The program's `started` record could not be written, so it did not run.
    NotAudited,
    /// The program could not be started.
    NotStarted { program: String, error: String },
    /// The program ran: it exited, or was stopped; what it printed, for the trail.
    Ran(ExitInfo, Box<Printed>),
    /// A program started as a job: its ID and state, answered at once.
    Job(Box<JobInfo>),
    /// The program ended (this outcome), but the server stopped before the store could
    /// keep it: it is not answered, so no answer is ever given that a retry could be
    /// denied.
    Unkept(Box<Outcome>),
}

/// What a retry was answered with.
#[derive(Debug, Clone)]
pub enum Retry {
    /// The answer kept from the first time, sent again.
    Kept(Vec<Body>),
    /// A built-in, run again (it has no effect).
    Builtin(Box<Outcome>),
    /// The first request's program is still running.
    InProgress,
    /// The server stopped while the program ran; it is not run again.
    Interrupted,
    /// The program ran, and its answer was too large to keep.
    Dropped,
}

impl Outcome {
    /// The wire code of a failed request; `None` when it succeeded.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Outcome::Refused(refusal) => Some(refusal.code()),
            Outcome::Retried(Retry::Kept(_))
            | Outcome::Answered(_)
            | Outcome::Ran(..)
            | Outcome::Job(_) => None,
            Outcome::Retried(Retry::Builtin(again)) => again.code(),
            Outcome::Retried(Retry::InProgress) => Some(ErrorCode::InProgress),
            Outcome::Retried(Retry::Interrupted | Retry::Dropped) => Some(ErrorCode::Duplicate),
            Outcome::TooLarge { .. } | Outcome::NotAudited | Outcome::NotStarted { .. } => {
                Some(ErrorCode::Internal)
            }
            Outcome::Unkept(ran) => ran.code(),
        }
    }

    /// The outcome the audit record and the admission log line name.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Retried(Retry::Kept(_)) => "retry: answered",
            Outcome::Retried(Retry::Builtin(_)) => "retry: ran the built-in again",
            Outcome::Retried(Retry::InProgress) => "retry: in progress",
            Outcome::Retried(Retry::Interrupted) => "retry: interrupted",
            Outcome::Retried(Retry::Dropped) => "retry: duplicate",
            Outcome::Unkept(_) => "not kept",
            Outcome::Ran(info, _) if info.timed_out => "timed out",
            Outcome::Ran(..) => "ran",
            Outcome::Job(_) => "job started",
            Outcome::Answered(_) => "ok",
            other => other.code().map_or("ok", ErrorCode::name),
        }
    }

    /// The `outcome` label of `cmdchan_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Retried(_) => "retry",
            other => other.name(),
        }
    }

    /// Whether the request was admitted and ran (its command is a metric label; a
    /// refused or retried request's name is the peer's choice, and is not).
    pub fn admitted(&self) -> bool {
        !matches!(self, Outcome::Refused(_) | Outcome::Retried(_))
    }

    /// A program's exit status (or 128 + the signal that ended it) and its output bytes.
    pub fn exit(&self) -> (Option<i32>, u64) {
        match self {
            Outcome::Ran(e, _) => (e.code.or(e.signal.map(|s| 128 + s)), e.output_bytes),
            Outcome::Unkept(ran) => ran.exit(),
            _ => (None, 0),
        }
    }

    /// The frames' bodies that answer the request, in order.
    pub fn into_bodies(self) -> Bodies {
        let failure = |code, message: String| Bodies::one(Body::Err(Failure::new(code, message)));
        match self {
            Outcome::Refused(refusal) => Bodies::one(Body::Err(refusal.failure())),
            Outcome::Retried(Retry::Kept(bodies)) => Bodies::Many(bodies.into_iter()),
            Outcome::Retried(Retry::Builtin(again)) => again.into_bodies(),
            Outcome::Retried(Retry::InProgress) => failure(
                ErrorCode::InProgress,
                "this command ID is still running; ask again later".into(),
            ),
            Outcome::Retried(Retry::Interrupted) => failure(
                ErrorCode::Duplicate,
                "this command ID started, and the server stopped before its outcome was kept: it may or may not have finished, and it is not run again".into(),
            ),
            Outcome::Retried(Retry::Dropped) => failure(
                ErrorCode::Duplicate,
                "this command ID already ran; its answer was too large to keep".into(),
            ),
            Outcome::Answered(reply) => Bodies::one(Body::Ok(reply)),
            Outcome::TooLarge { size, max_frame } => failure(
                ErrorCode::Internal,
                format!("the answer ({size} bytes) is larger than this server's max_frame ({max_frame}); ask its operator to raise it"),
            ),
            Outcome::NotAudited => failure(
                ErrorCode::Internal,
                "the server cannot write its audit log, so it runs nothing".into(),
            ),
            Outcome::NotStarted { program, error } => failure(
                ErrorCode::Internal,
                format!("the server cannot start {program}: {error}"),
            ),
            Outcome::Ran(info, _) => Bodies::one(Body::Ok(Reply::Exit(info))),
            Outcome::Job(info) => Bodies::one(Body::Ok(Reply::Job(*info))),
            Outcome::Unkept(_) => Bodies::One(None),
        }
    }
}

/// The bodies answering a request: nearly always one, which needs no Vec.
#[derive(Debug)]
pub enum Bodies {
    One(Option<Body>),
    Many(std::vec::IntoIter<Body>),
}

impl Bodies {
    fn one(body: Body) -> Self {
        Bodies::One(Some(body))
    }
}

impl Iterator for Bodies {
    type Item = Body;

    fn next(&mut self) -> Option<Body> {
        match self {
            Bodies::One(body) => body.take(),
            Bodies::Many(bodies) => bodies.next(),
        }
    }
}

/// Whether a retry of this entry runs its built-in again (it has no effect).
pub fn reruns(entry: &Entry) -> bool {
    matches!(entry.state, State::Done(Answer::Builtin))
}

/// The answer to a retry of a claimed ID, from what the store has of it: the kept
/// answer, a built-in run again (`rerun`, when [`reruns`]), or why not.
pub fn retried(entry: Entry, rerun: Option<Outcome>) -> Retry {
    match (entry.state, rerun) {
        (State::Done(Answer::Kept(bodies)), _) => Retry::Kept(bodies),
        (State::Done(Answer::Builtin), Some(rerun)) => Retry::Builtin(Box::new(rerun)),
        (State::Running, _) => Retry::InProgress,
        (State::Done(Answer::Interrupted), _) => Retry::Interrupted,
        _ => Retry::Dropped,
    }
}

/// What a finished program leaves for a retry: its bodies, then its final one, if they
/// fit [`replay::OUTCOME_CAP`]; otherwise only that it ran.
pub fn answer_of(kept: Option<Vec<Body>>, outcome: &Outcome) -> Answer {
    match kept {
        Some(mut bodies) => {
            bodies.extend(outcome.clone().into_bodies());
            replay::keep(bodies)
        }
        None => Answer::Dropped,
    }
}

/// The code answering a frame that could not be read (the connection then ends);
/// `None` when the connection was lost and there is no one to answer.
pub fn unreadable(err: &FrameError) -> Option<ErrorCode> {
    match err {
        FrameError::TooLarge { .. } => Some(ErrorCode::TooLarge),
        FrameError::NoMemory(_) => Some(ErrorCode::Busy),
        FrameError::Version(_) => Some(ErrorCode::UnsupportedVersion),
        FrameError::Malformed(_)
        | FrameError::Trailing(_)
        | FrameError::NotCanonical
        | FrameError::Empty => Some(ErrorCode::Malformed),
        FrameError::Truncated | FrameError::Io(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a request ends, with the code, audit name, metric label and last
    /// message it had before the outcomes had one home.
    #[test]
    fn each_outcome_has_one_code_name_label_and_message() {
        use ErrorCode::*;
        let ran = |timed_out| ExitInfo {
            code: Some(3),
            timed_out,
            ..ExitInfo::default()
        };
        let kept = vec![Body::Ok(Reply::Pong)];
        let again = Box::new(Outcome::Answered(Reply::Pong));
        let not_started = Outcome::NotStarted {
            program: "backup".into(),
            error: "No such file or directory (os error 2)".into(),
        };
        #[rustfmt::skip]
        let cases: Vec<(Outcome, Option<ErrorCode>, &str, &str, &str)> = vec![
            (Outcome::Refused(Refusal::BadTag), Some(BadTag), "bad tag", "bad tag", "the key-use tag does not match this client's name and grant"),
            (Outcome::Refused(Refusal::Replay), Some(Replay), "replay", "replay", "this command ID was already used"),
            (Outcome::Retried(Retry::Kept(kept)), None, "retry: answered", "retry", ""),
            (Outcome::Retried(Retry::Builtin(again)), None, "retry: ran the built-in again", "retry", ""),
            (Outcome::Retried(Retry::InProgress), Some(InProgress), "retry: in progress", "retry", "this command ID is still running; ask again later"),
            (Outcome::Retried(Retry::Interrupted), Some(Duplicate), "retry: interrupted", "retry", "this command ID started, and the server stopped before its outcome was kept: it may or may not have finished, and it is not run again"),
            (Outcome::Retried(Retry::Dropped), Some(Duplicate), "retry: duplicate", "retry", "this command ID already ran; its answer was too large to keep"),
            (Outcome::Answered(Reply::Pong), None, "ok", "ok", ""),
            (Outcome::TooLarge { size: 2000, max_frame: 1024 }, Some(Internal), "internal", "internal", "the answer (2000 bytes) is larger than this server's max_frame (1024); ask its operator to raise it"),
            (Outcome::NotAudited, Some(Internal), "internal", "internal", "the server cannot write its audit log, so it runs nothing"),
            (not_started, Some(Internal), "internal", "internal", "the server cannot start backup: No such file or directory (os error 2)"),
            (Outcome::Ran(ran(false), Box::default()), None, "ran", "ran", ""),
            (Outcome::Ran(ran(true), Box::default()), None, "timed out", "timed out", ""),
        ];
        let unkept = Outcome::Unkept(Box::new(Outcome::Ran(ran(false), Box::default())));
        assert_eq!(
            (unkept.code(), unkept.name(), unkept.label()),
            (None, "not kept", "not kept")
        );
        assert_eq!(unkept.into_bodies().count(), 0, "not answered");
        for (outcome, code, name, label, message) in cases {
            assert_eq!(
                (outcome.code(), outcome.name(), outcome.label()),
                (code, name, label)
            );
            let last = outcome.into_bodies().last().expect("every outcome answers");
            match last {
                Body::Err(f) => assert_eq!((Some(f.code), f.message.as_str()), (code, message)),
                _ => assert_eq!((None, ""), (code, message)),
            }
        }
    }

    #[test]
    fn a_program_ended_by_a_signal_reports_128_plus_it() {
        let killed = Outcome::Ran(
            ExitInfo {
                signal: Some(9),
                timed_out: true,
                ..ExitInfo::default()
            },
            Box::default(),
        );
        assert_eq!(
            (killed.exit(), killed.name()),
            ((Some(137), 0), "timed out")
        );
    }
}
