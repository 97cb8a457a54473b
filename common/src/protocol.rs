//! The wire types: what a request and a response hold. No logic beyond naming error codes.
//!
//! Each type is encoded with postcard (PROTOCOL.md §5 spells out the bytes). Variants and
//! fields are only ever appended in a new protocol version, never reordered.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ident::Ident;

/// The protocol version this build speaks; the first byte of every frame's payload.
pub const VERSION: u8 = 3;

/// What `--version` prints after the program name: the release and the protocol.
pub const VERSION_LINE: &str = concat!(env!("CARGO_PKG_VERSION"), " (protocol 3)");

/// The commands every server has (PROTOCOL.md §5.4): each one's name, the kind of its
/// reply, and whether output comes before it (a job's). None of them takes stdin, and a
/// client holds a server to the rest.
pub const BUILTINS: [(&str, ReplyKind, bool); 12] = [
    ("ping", ReplyKind::Pong, false),
    ("whoami", ReplyKind::Whoami, false),
    ("echo", ReplyKind::Echo, false),
    ("commands", ReplyKind::Commands, false),
    ("describe", ReplyKind::Describe, false),
    ("job.status", ReplyKind::Jobs, false),
    ("job.list", ReplyKind::Jobs, false),
    ("job.wait", ReplyKind::Jobs, false),
    ("job.output", ReplyKind::Jobs, true),
    ("job.attach", ReplyKind::Jobs, true),
    ("revocations.status", ReplyKind::Revocations, false),
    ("revocations.push", ReplyKind::Revocations, false),
];

/// The most job IDs one `job.status` asks about: its answer fits the default frame
/// limit whatever the jobs' names (a client asks in batches of this many).
pub const JOBS_AT_ONCE: usize = 1000;

/// The kinds of [`Reply`], without their contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Pong,
    Whoami,
    Echo,
    Commands,
    Exit,
    Describe,
    Job,
    Jobs,
    Revocations,
}

impl Reply {
    pub fn kind(&self) -> ReplyKind {
        match self {
            Reply::Pong => ReplyKind::Pong,
            Reply::Whoami(_) => ReplyKind::Whoami,
            Reply::Echo(_) => ReplyKind::Echo,
            Reply::Commands(_) => ReplyKind::Commands,
            Reply::Exit(_) => ReplyKind::Exit,
            Reply::Describe(_) => ReplyKind::Describe,
            Reply::Job(_) => ReplyKind::Job,
            Reply::Jobs(_) => ReplyKind::Jobs,
            Reply::Revocations(_) => ReplyKind::Revocations,
        }
    }
}

/// What `request` is answered with: the kind of its final reply (a built-in's own; a
/// program's `Exit`, or `Job` when detached) and whether output may come before it.
pub fn answer_kind(request: &Request) -> (ReplyKind, bool) {
    match BUILTINS
        .iter()
        .find(|(name, _, _)| *name == request.command)
    {
        Some((_, kind, output)) => (*kind, *output),
        None if request.detach => (ReplyKind::Job, false),
        None => (ReplyKind::Exit, true),
    }
}

/// A command ID: 128 random bits chosen by the client, unique per command.
pub type CommandId = [u8; 16];

/// A command ID (a job's, a run's) from the 32 hex digits it is written as.
pub fn parse_id(text: &str) -> Option<CommandId> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The ID of a fan-out run's job on one server: the first 16 bytes of
/// SHA-256(`"cmdchan/v3/job"` ‖ run ‖ server ID). A retry on that server sends the
/// same ID, so the job starts there at most once, and the run's ID alone finds every
/// server's job.
pub fn job_id(run: &CommandId, server: &Ident) -> CommandId {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(b"cmdchan/v3/job");
    hasher.update(run);
    hasher.update(server.as_str().as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finish()[..16]);
    id
}

/// What the admin granted a client, signed by the key-use tag (see `tag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Ident,
    pub epoch: u64,
    /// Unix seconds after which the grant is void; `None`: never expires.
    pub expires: Option<u64>,
    /// Server IDs the client may command; empty: any server.
    pub servers: Vec<Ident>,
}

/// One command, as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// 1 for a connection's first request, then +1 for each.
    pub counter: u64,
    pub id: CommandId,
    /// Unix seconds when the client issued the command.
    pub issued_at: u64,
    /// The server ID this command is meant for.
    pub target: Ident,
    pub grant: Grant,
    pub tag: [u8; 32],
    pub command: String,
    /// Positional arguments, bound to a command's parameters in declared order.
    pub args: Vec<String>,
    /// Named arguments (`--arg name=value`).
    pub params: Vec<Param>,
    /// Start the program as a job: answered at once with its [`JobInfo`] (its ID is the
    /// command ID); it runs on without the connection, and its result is kept on the
    /// server to be fetched by ID. Only for a program whose policy lets it be detached.
    pub detach: bool,
    /// The fan-out run this request is part of (one random ID for all its servers), for
    /// the audit trail; none for a request to one server.
    pub run: Option<CommandId>,
    /// Co-signatures that let a command which needs approvals run (PROTOCOL.md §5.8).
    pub approval: Option<Approval>,
}

/// The approvals a request carries (`Request::approval`; PROTOCOL.md §5.8, the tags in
/// `approval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Every server the approval lets the request run on (at least one).
    pub servers: Vec<Ident>,
    /// Unix second from which the approval is void.
    pub expires: u64,
    pub approvers: Vec<Approver>,
}

/// One approver's co-signature, with the grant that proves the approver's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    pub name: Ident,
    /// The generation of the zone key the approver's credential entry was made from.
    pub generation: u64,
    /// The approver's grant in the zone and its key-use tag (PROTOCOL.md §3.3).
    pub grant: Grant,
    pub grant_tag: [u8; 32],
    /// The approval tag over the approved bytes.
    pub tag: [u8; 32],
}

/// A frame from client to server: a request, or a running program's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "a request is most frames a client sends: boxing it would cost each one an allocation"
)]
pub enum ClientMsg {
    Request(Request),
    /// Bytes for the stdin of the program that request `counter` runs (sent only after
    /// the server answered it with [`Body::Started`] saying it takes stdin).
    Input(Input),
    /// The end of that program's stdin (`counter`).
    InputEnd(u64),
}

/// A piece of a program's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub counter: u64,
    #[serde(with = "raw_bytes")]
    pub data: Vec<u8>,
}

/// One named argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub value: String,
}

/// The server's answer to one request: zero or more `Output` bodies, then one `Ok` or
/// `Err` body, which ends the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The counter of the request answered; 0 when the request could not be read.
    pub counter: u64,
    /// The ID of the request answered; all zero when the request could not be read.
    pub id: CommandId,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// The final answer: the command's result.
    Ok(Reply),
    /// The final answer: a refusal or failure.
    Err(Failure),
    /// Output a running program produced; more bodies follow.
    Output(Output),
    /// The program started and reads stdin: send it as [`ClientMsg::Input`], then
    /// [`ClientMsg::InputEnd`]. More bodies follow.
    Started(Started),
    /// A sign of life: the request is still being worked on. Sent when nothing else was
    /// sent for it for [`ALIVE_EVERY`], so a client's timeout can mean "no sign of
    /// life" rather than "no output". More bodies follow.
    Alive(Alive),
}

/// How often a server shows a sign of life while it works on a request.
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What the server is doing while it sends [`Body::Alive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alive {
    /// The program runs.
    Running,
    /// The program ended; its outcome waits for the replay store to take it (the answer
    /// is sent only once it is kept, so a retry can never be denied it).
    Recording,
}

/// What a starting program takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Bytes of stdin it takes at most; beyond them its stdin is closed.
    pub stdin_limit: u64,
}

impl Body {
    /// Whether this body ends the answer to its request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Body::Output(_) | Body::Started(_) | Body::Alive(_))
    }
}

/// A piece of a program's output, in the order it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub stream: Stream,
    #[serde(with = "raw_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A refusal or failure: a stable code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    /// When sending the same request again makes sense (`rate limited`), in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// What a built-in command returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong,
    Whoami(Whoami),
    Echo(Vec<String>),
    Commands(Vec<CommandInfo>),
    /// A program finished (or was stopped); its output came before in `Output` bodies.
    Exit(ExitInfo),
    Describe(CommandInfo),
    /// A job was started (the answer to a detached request).
    Job(JobInfo),
    /// Jobs as the server knows them (`job.*`); `job.output` and `job.attach` send the
    /// job's output before it.
    Jobs(Vec<JobInfo>),
    /// The revocation list the server keeps (`revocations.*`).
    Revocations(ListState),
}

/// The signed revocation list a server keeps, and what a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListState {
    /// Its version (0: the server keeps none).
    pub version: u64,
    /// Unix seconds it was signed at (0: none).
    pub issued_at: u64,
    /// This request put it in force (a push of a newer list).
    pub applied: bool,
}

/// A job: a program run detached from its connection, its result kept on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The command ID of the request that started it.
    pub id: CommandId,
    pub state: JobState,
    /// The client that started it, and its command; empty for an unknown or expired ID.
    pub client: String,
    pub command: String,
    /// Unix seconds it started at and ended at (0: not known).
    pub started_at: u64,
    pub ended_at: u64,
    /// Bytes of output the program wrote, and of them the server keeps (from offset 0).
    pub output_bytes: u64,
    pub kept_bytes: u64,
    /// SHA-256 of the stdout and stderr it wrote (as kept: within the output limit), once
    /// it has ended; all zero while it runs.
    pub stdout_sha256: [u8; 32],
    pub stderr_sha256: [u8; 32],
    /// The fan-out run it belongs to, if any.
    pub run: Option<CommandId>,
}

impl JobInfo {
    /// What is said of an ID no job is known by (or not to this client).
    pub fn unknown(id: CommandId) -> Self {
        Self {
            id,
            state: JobState::Unknown,
            client: String::new(),
            command: String::new(),
            started_at: 0,
            ended_at: 0,
            output_bytes: 0,
            kept_bytes: 0,
            stdout_sha256: [0; 32],
            stderr_sha256: [0; 32],
            run: None,
        }
    }
}

/// Where a job is: exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it (not the server's timeout).
    Signalled(i32),
    /// The server stopped it at the command's timeout.
    TimedOut,
    /// The server stopped (or was killed) while it ran: it may or may not have
    /// finished, and what it printed until then is kept.
    Lost,
    /// It ended longer ago than the server keeps results (`result_retention`, or the
    /// total cap made room): nothing of it is kept.
    Expired,
    /// The server knows no job of this ID (or not of this client).
    Unknown,
}

/// How a program ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit status, if the program exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The server stopped it at the command's timeout.
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Bytes of output the program produced (including any not sent).
    pub output_bytes: u64,
    /// Output beyond the command's limit was not sent.
    pub truncated: bool,
    /// Stdin beyond the command's limit was not passed on (its stdin was closed there).
    pub stdin_truncated: bool,
}

/// The client as the server authenticated it: name from the handshake, grant from the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub name: Ident,
    pub grant: Grant,
    pub server: Ident,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub name: String,
    pub description: String,
    /// Parameters in positional order (empty for commands that take none).
    pub params: Vec<ParamInfo>,
}

/// One parameter of a command, as the caller's role may use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    pub kind: ParamKind,
    pub required: bool,
    pub default: Option<String>,
    /// Values this role is restricted to; empty: any valid value.
    pub allowed: Vec<String>,
    /// Recorded in the audit log only as a digest.
    pub secret: bool,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// Text: at most `max_len` bytes, matching `regex` (whole value) if given.
    String {
        regex: Option<String>,
        max_len: u64,
        allow_dash: bool,
        allow_newline: bool,
    },
    /// A decimal integer in `min..=max`.
    Integer { min: i64, max: i64 },
    /// One of a fixed set of values.
    OneOf(Vec<String>),
    /// `true` or `false`: the flag's argument is passed or left out.
    Flag,
}

/// The stable list of error codes; the number is what travels.
///
/// An unknown number (from a newer server) decodes as [`ErrorCode::Other`] rather than
/// failing, so an old client still shows the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    Malformed,
    UnsupportedVersion,
    TooLarge,
    BadCounter,
    BadTag,
    Revoked,
    Expired,
    WrongServer,
    Stale,
    Replay,
    Reused,
    StdinOpen,
    /// A revocation list no newer than the one the server keeps.
    Outdated,
    UnknownCommand,
    Forbidden,
    BadArguments,
    /// A revocation list whose signature does not verify.
    BadSignature,
    /// The command needs more approvals, from distinct approvers, than the request has.
    ApprovalRequired,
    /// An approval does not verify for this exact request in this zone.
    BadApproval,
    /// The requester approved their own request.
    SelfApproval,
    /// An approver whose role may not approve this command (or whose grant does not
    /// cover this server).
    ApproverNotAllowed,
    ApprovalExpired,
    /// An approver whose key is revoked or whose grant has expired.
    ApproverRevoked,
    Internal,
    StoreUnavailable,
    Busy,
    InProgress,
    Duplicate,
    RateLimited,
    Other(u16),
}

/// Code numbers and names, in one table; PROTOCOL.md §6 lists the same.
const CODES: [(ErrorCode, u16, &str); 29] = [
    (ErrorCode::Malformed, 1, "malformed"),
    (ErrorCode::UnsupportedVersion, 2, "unsupported version"),
    (ErrorCode::TooLarge, 3, "too large"),
    (ErrorCode::BadCounter, 10, "bad counter"),
    (ErrorCode::BadTag, 11, "bad tag"),
    (ErrorCode::Revoked, 12, "revoked"),
    (ErrorCode::Expired, 13, "expired"),
    (ErrorCode::WrongServer, 14, "wrong server"),
    (ErrorCode::Stale, 15, "stale"),
    (ErrorCode::Replay, 16, "replay"),
    (ErrorCode::Reused, 17, "reused id"),
    (ErrorCode::StdinOpen, 18, "stdin open"),
    (ErrorCode::Outdated, 19, "outdated"),
    (ErrorCode::UnknownCommand, 20, "unknown command"),
    (ErrorCode::Forbidden, 21, "forbidden"),
    (ErrorCode::BadArguments, 22, "bad arguments"),
    (ErrorCode::BadSignature, 23, "bad signature"),
    (ErrorCode::ApprovalRequired, 24, "approval required"),
    (ErrorCode::BadApproval, 25, "bad approval"),
    (ErrorCode::SelfApproval, 26, "self approval"),
    (ErrorCode::ApproverNotAllowed, 27, "approver not allowed"),
    (ErrorCode::ApprovalExpired, 28, "approval expired"),
    (ErrorCode::ApproverRevoked, 29, "approver revoked"),
    (ErrorCode::Internal, 30, "internal"),
    (ErrorCode::StoreUnavailable, 31, "store unavailable"),
    (ErrorCode::Busy, 32, "busy"),
    (ErrorCode::InProgress, 33, "in progress"),
    (ErrorCode::Duplicate, 34, "duplicate"),
    (ErrorCode::RateLimited, 35, "rate limited"),
];

impl ErrorCode {
    pub fn number(self) -> u16 {
        match self {
            ErrorCode::Other(n) => n,
            code => CODES.iter().find(|c| c.0 == code).map_or(0, |c| c.1),
        }
    }

    /// The code's stable name, as printed by the client and written to the audit log.
    pub fn name(self) -> &'static str {
        CODES
            .iter()
            .find(|c| c.0 == self)
            .map_or("unknown", |c| c.2)
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> Self {
        CODES
            .iter()
            .find(|c| c.1 == n)
            .map_or(ErrorCode::Other(n), |c| c.0)
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.number()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Other(n) => write!(f, "error {n}"),
            code => f.write_str(code.name()),
        }
    }
}

/// `Vec<u8>` as serde bytes: on the wire exactly what a sequence of `u8` is in postcard
/// (a varint length, then the bytes), but copied whole instead of byte by byte.
mod raw_bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_encode_as_a_sequence_of_u8_does() {
        let data = vec![0u8, 1, 200, 255];
        let output = Output {
            stream: Stream::Stderr,
            data: data.clone(),
        };
        let as_seq = postcard::to_stdvec(&(Stream::Stderr, &data)).expect("encodes");
        assert_eq!(postcard::to_stdvec(&output).expect("encodes"), as_seq);
        assert_eq!(
            postcard::from_bytes::<Output>(&as_seq).expect("decodes"),
            output
        );
    }

    #[test]
    fn the_version_line_names_this_protocol_version() {
        assert!(VERSION_LINE.ends_with(&format!("(protocol {VERSION})")));
    }

    #[test]
    fn every_code_round_trips_through_its_number() {
        for (code, n, _) in CODES {
            assert_eq!(ErrorCode::from(n), code);
            assert_eq!(code.number(), n);
        }
        assert_eq!(ErrorCode::from(999), ErrorCode::Other(999));
        assert_eq!(ErrorCode::Other(999).number(), 999);
    }
}
