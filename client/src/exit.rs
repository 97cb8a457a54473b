//! The client's exit statuses. A program's own status passes through, as with `ssh host
//! cmd`; the client's own outcomes sit in the sysexits range (64–80), where programs
//! rarely put theirs, and `--json` tells them apart without doubt.

use std::process::ExitCode;

use cmdchan::{Error, ErrorCode, ExitInfo, ZoneError};

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
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Remote(n) => n,
            Exit::Usage => 64,
            Exit::NoInput => 66,
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
        }
    }

    /// The one mapping from a client error to an exit status.
    pub fn of(error: &Error) -> Exit {
        match error {
            Error::NoAddress | Error::NoTarget(_) => Exit::Usage,
            Error::Zone(ZoneError::Missing(..)) => Exit::Config,
            Error::Zone(ZoneError::Unnamed(_)) => Exit::Usage,
            // Not the server meant: as if it could not be reached.
            Error::Zone(ZoneError::Mismatch { .. }) => Exit::Unavailable,
            Error::Silent(_) => Exit::Timeout,
            Error::Input(_) => Exit::NoInput,
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

    /// The client's own error codes, beside the server's (1–35), for `--json`: a name
    /// and a number in 100–199, so every failure has both.
    pub const LOCAL_CODES: [(&'static str, u16); 16] = [
        ("usage", 100),
        ("credential", 101),
        ("no address", 102),
        ("cannot connect", 103),
        ("handshake failed", 104),
        ("timeout", 105),
        ("connection lost", 106),
        ("protocol error", 107),
        ("tls setup", 108),
        ("refused before tls", 109),
        ("not tls", 110),
        ("no zone key", 111),
        ("not started", 112),
        ("wrong zone", 113),
        ("stdin", 114),
        ("no tls reply", 115),
    ];

    /// The number of one of [`Exit::LOCAL_CODES`].
    pub fn number_of(code: &str) -> u16 {
        Self::LOCAL_CODES
            .iter()
            .find(|(name, _)| *name == code)
            .map_or(199, |(_, n)| *n)
    }

    /// The code of a failure the server did not name.
    pub fn local_code(error: &Error) -> (&'static str, u16) {
        let name = match error {
            Error::NoAddress | Error::NoTarget(_) => "no address",
            Error::Zone(ZoneError::Missing(..)) => "no zone key",
            Error::Zone(ZoneError::Unnamed(_)) => "usage",
            Error::Zone(ZoneError::Mismatch { .. }) => "wrong zone",
            Error::Connect { .. } => "cannot connect",
            Error::Handshake { .. } => "handshake failed",
            Error::RefusedBeforeTls { .. } => "refused before tls",
            Error::NotTls { .. } => "not tls",
            Error::Silent(_) => "timeout",
            Error::NoTlsReply { .. } => "no tls reply",
            Error::Input(_) => "stdin",
            Error::Closed | Error::Lost(_) => "connection lost",
            Error::Protocol(_) => "protocol error",
            Error::Tls(_) => "tls setup",
            Error::Refused(_) => "protocol error",
        };
        (name, Self::number_of(name))
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
            | ErrorCode::Revoked
            | ErrorCode::Expired
            | ErrorCode::WrongServer => Exit::Auth,
            ErrorCode::Forbidden | ErrorCode::UnknownCommand | ErrorCode::BadArguments => {
                Exit::Policy
            }
            ErrorCode::Replay
            | ErrorCode::Reused
            | ErrorCode::Stale
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
