//! The client's exit statuses and its own error codes. A program's own status passes
//! through, as with `ssh host cmd`; the client's own outcomes sit in the sysexits range
//! (64–80), where programs rarely put theirs, and `--json` tells them apart without
//! doubt, each with a code of the client's (100–199) beside the server's (1–99).

use std::process::ExitCode;

use crate::{Error, ErrorCode, ExitInfo, ZoneError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// A remote program's status: its exit code, 128 + its signal, or 124 on timeout.
    Remote(u8),
    Usage,
    /// The program's stdin could not be read (or was too large for a fan-out).
    NoInput,
    Unavailable,
    Software,
    /// The server cut the output at the command's limit (with `--fail-truncated`).
    Truncated,
    TempFail,
    Protocol,
    Auth,
    Config,
    Replay,
    Policy,
    /// The server showed no sign of life for the answer timeout (as `timeout(1)`).
    Timeout,
    /// No such job: unknown to the server (or another client's), or expired.
    NoJob,
    /// Stdout was closed before the answer ended, as SIGPIPE ends other programs in a
    /// pipeline (128 + 13).
    StdoutClosed,
}

/// The client's own error codes: a name and a number each, so that every failure has
/// both in `--json`. Their numbers never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCode {
    Usage = 100,
    Credential = 101,
    NoAddress = 102,
    CannotConnect = 103,
    HandshakeFailed = 104,
    Timeout = 105,
    ConnectionLost = 106,
    ProtocolError = 107,
    TlsSetup = 108,
    RefusedBeforeTls = 109,
    NotTls = 110,
    NoZoneKey = 111,
    NotStarted = 112,
    WrongZone = 113,
    Stdin = 114,
    NoTlsReply = 115,
}

impl LocalCode {
    pub fn name(self) -> &'static str {
        match self {
            LocalCode::Usage => "usage",
            LocalCode::Credential => "credential",
            LocalCode::NoAddress => "no address",
            LocalCode::CannotConnect => "cannot connect",
            LocalCode::HandshakeFailed => "handshake failed",
            LocalCode::Timeout => "timeout",
            LocalCode::ConnectionLost => "connection lost",
            LocalCode::ProtocolError => "protocol error",
            LocalCode::TlsSetup => "tls setup",
            LocalCode::RefusedBeforeTls => "refused before tls",
            LocalCode::NotTls => "not tls",
            LocalCode::NoZoneKey => "no zone key",
            LocalCode::NotStarted => "not started",
            LocalCode::WrongZone => "wrong zone",
            LocalCode::Stdin => "stdin",
            LocalCode::NoTlsReply => "no tls reply",
        }
    }

    pub fn number(self) -> u16 {
        self as u16
    }

    /// The code of a failure the server did not name (a refusal is the server's own).
    pub fn of(error: &Error) -> LocalCode {
        match error {
            Error::NoAddress | Error::NoTarget(_) | Error::BadAddress(_) => LocalCode::NoAddress,
            Error::Zone(ZoneError::Missing(..)) => LocalCode::NoZoneKey,
            Error::Zone(ZoneError::Unnamed(_)) => LocalCode::Usage,
            Error::Zone(ZoneError::Mismatch { .. }) => LocalCode::WrongZone,
            Error::Connect { .. } => LocalCode::CannotConnect,
            Error::Handshake { .. } => LocalCode::HandshakeFailed,
            Error::RefusedBeforeTls { .. } => LocalCode::RefusedBeforeTls,
            Error::NotTls { .. } => LocalCode::NotTls,
            Error::Silent(_) => LocalCode::Timeout,
            Error::NoTlsReply { .. } => LocalCode::NoTlsReply,
            Error::Input(_) => LocalCode::Stdin,
            Error::Closed | Error::Lost(_) | Error::Stopped => LocalCode::ConnectionLost,
            Error::Protocol(_) | Error::Refused(_) => LocalCode::ProtocolError,
            Error::Tls(_) => LocalCode::TlsSetup,
        }
    }
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Remote(n) => n,
            Exit::Usage => 64,
            Exit::NoInput => 66,
            Exit::NoJob => 67,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::Truncated => 74,
            Exit::TempFail => 75,
            Exit::Protocol => 76,
            Exit::Auth => 77,
            Exit::Config => 78,
            Exit::Replay => 79,
            Exit::Policy => 80,
            Exit::Timeout => 124,
            Exit::StdoutClosed => 141,
        }
    }

    /// The one mapping from a client error to an exit status.
    pub fn of(error: &Error) -> Exit {
        match error {
            Error::NoAddress | Error::NoTarget(_) | Error::BadAddress(_) => Exit::Usage,
            Error::Zone(ZoneError::Missing(..)) => Exit::Config,
            Error::Zone(ZoneError::Unnamed(_)) => Exit::Usage,
            // Not the server meant: as if it could not be reached.
            Error::Zone(ZoneError::Mismatch { .. }) => Exit::Unavailable,
            Error::Silent(_) => Exit::Timeout,
            Error::Input(_) => Exit::NoInput,
            Error::Stopped => Exit::StdoutClosed,
            Error::Connect { .. }
            | Error::NoTlsReply { .. }
            | Error::Handshake { .. }
            | Error::RefusedBeforeTls { .. }
            | Error::NotTls { .. }
            | Error::Closed
            | Error::Lost(_) => Exit::Unavailable,
            Error::Protocol(_) => Exit::Protocol,
            Error::Tls(_) => Exit::Software,
            Error::Refused(failure) => Exit::of_code(failure.code),
        }
    }

    /// How a remote program ended, as `timeout(1)` and shells report it.
    pub fn of_program(info: &ExitInfo) -> Exit {
        let status = match (info.timed_out, info.code, info.signal) {
            (true, _, _) => 124,
            (false, Some(code), _) => code,
            (false, None, Some(signal)) => 128 + signal,
            (false, None, None) => 1,
        };
        Exit::Remote(u8::try_from(status & 0xff).unwrap_or(1))
    }

    fn of_code(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::BadTag
            | ErrorCode::BadSignature
            | ErrorCode::Revoked
            | ErrorCode::Expired
            | ErrorCode::WrongServer => Exit::Auth,
            ErrorCode::Forbidden
            | ErrorCode::UnknownCommand
            | ErrorCode::BadArguments
            | ErrorCode::ApprovalRequired
            | ErrorCode::BadApproval
            | ErrorCode::SelfApproval
            | ErrorCode::ApproverNotAllowed
            | ErrorCode::ApprovalExpired
            | ErrorCode::ApproverRevoked => Exit::Policy,
            ErrorCode::Replay
            | ErrorCode::Reused
            | ErrorCode::Stale
            | ErrorCode::Outdated
            | ErrorCode::BadCounter
            | ErrorCode::Duplicate => Exit::Replay,
            ErrorCode::Malformed
            | ErrorCode::UnsupportedVersion
            | ErrorCode::TooLarge
            | ErrorCode::StdinOpen => Exit::Protocol,
            ErrorCode::StoreUnavailable
            | ErrorCode::Busy
            | ErrorCode::InProgress
            | ErrorCode::RateLimited => Exit::TempFail,
            ErrorCode::Internal | ErrorCode::Other(_) => Exit::Software,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}
