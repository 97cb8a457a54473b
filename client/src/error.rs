//! Why a call failed: one variant per thing the user can act on, and which of them a
//! retry with the same command ID can mend.

use std::io;
use std::time::Duration;

use openssl::error::ErrorStack;

use cmdchan_common::credential::ZoneError;
use cmdchan_common::frame::FrameError;
use cmdchan_common::protocol::Failure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no server address: pass --server HOST:PORT or provision the credential with --address"
    )]
    NoAddress,
    #[error("cannot tell which server ID {0:?} is: pass --server-id ID")]
    NoTarget(String),
    #[error("{0:?} is not a server address: HOST, HOST:PORT or [IPv6]:PORT (the port is {port} when none is given)", port = crate::inventory::DEFAULT_PORT)]
    BadAddress(String),
    #[error("{0}")]
    Zone(#[from] ZoneError),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("no TLS reply from {addr} within {}: the host takes connections but does not answer as a TLS server (a stopped or overloaded server, a firewall that swallows packets, or the wrong port)", humantime::format_duration(*.after))]
    NoTlsReply { addr: String, after: Duration },
    #[error("TLS handshake with {addr} failed: {detail}. The server refused this credential's key (the name is unknown to it, the key or the zone key's generation differs, or the epoch is wrong), or it offers no TLS 1.2 (EC)DHE-PSK suite; the server's log says which")]
    Handshake { addr: String, detail: String },
    #[error("{addr} closed the connection before any TLS reply: the server turned this address away before looking at any key (not in its allow list, penalized for failed handshakes or refusals, or over a connection limit); the server's log says which")]
    RefusedBeforeTls { addr: String },
    #[error("what answers at {addr} does not speak TLS ({detail}): is this the cmdchan port?")]
    NotTls { addr: String, detail: String },
    /// The server sent nothing, not even a sign of life (it sends one every second while
    /// it works on a request), for this long.
    #[error("no sign of life from the server for {}: it stopped answering", humantime::format_duration(*.0))]
    Silent(Duration),
    #[error("the server closed the connection without answering")]
    Closed,
    #[error("the connection was lost: {0}")]
    Lost(io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading the program's stdin failed (or a fan-out's stdin was too large): the
    /// connection was dropped rather than end the program's stdin as if it were whole.
    #[error("cannot read stdin for the program: {0}; it was stopped rather than given part of it")]
    Input(io::Error),
    /// The caller stopped reading the answer (its output had nowhere to go).
    #[error("the answer's output had nowhere to go; the connection was dropped")]
    Stopped,
    #[error("{}: {}", .0.code, .0.message)]
    Refused(Failure),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] ErrorStack),
}

impl Error {
    /// The connection broke before the answer came: the request may or may not have
    /// reached the server, so only a retry with the same command ID is safe. A silent
    /// server is not retried: it is alive enough to hold the connection and still says
    /// nothing, so its client reports a timeout.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Closed | Error::Lost(_) | Error::Connect { .. } | Error::NoTlsReply { .. }
        )
    }

    /// What a frame error means for the call.
    pub(crate) fn of_frame(e: FrameError) -> Error {
        match e {
            FrameError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Error::Closed,
            FrameError::Io(e) => Error::Lost(e),
            FrameError::Truncated => Error::Closed,
            other => Error::Protocol(other.to_string()),
        }
    }
}
