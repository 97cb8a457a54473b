//! The client's exit statuses, one per kind of outcome a script must tell apart. They sit
//! in the sysexits range so they are unlikely to clash with a remote command's own status.

use std::process::ExitCode;

use cmdchan::{Error, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Usage = 64,
    Unavailable = 69,
    Software = 70,
    TempFail = 75,
    Protocol = 76,
    Auth = 77,
    Config = 78,
    Replay = 79,
    Policy = 80,
}

impl Exit {
    /// The one mapping from a client error to an exit status.
    pub fn of(error: &Error) -> Exit {
        match error {
            Error::NoAddress | Error::NoTarget(_) => Exit::Usage,
            Error::Connect { .. } | Error::Handshake { .. } | Error::Timeout(_) | Error::Closed => {
                Exit::Unavailable
            }
            Error::Protocol(_) => Exit::Protocol,
            Error::Tls(_) => Exit::Software,
            Error::Refused(failure) => Exit::of_code(failure.code),
        }
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
            ErrorCode::Replay | ErrorCode::Stale | ErrorCode::BadCounter => Exit::Replay,
            ErrorCode::Malformed | ErrorCode::UnsupportedVersion | ErrorCode::TooLarge => {
                Exit::Protocol
            }
            ErrorCode::StoreUnavailable => Exit::TempFail,
            ErrorCode::Internal | ErrorCode::Other(_) => Exit::Software,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}
