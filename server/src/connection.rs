//! One client connection: the TLS handshake, then requests answered one at a time until
//! the client leaves, breaks the protocol, idles out or the server shuts down.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use openssl::ssl::{Ssl, SslRef};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use cmdchan_common::frame::{FrameError, MsgCodec};
use cmdchan_common::ident::PskIdentity;
use cmdchan_common::protocol::{Body, ErrorCode, Failure, Request, Response};
use cmdchan_common::time;
use cmdchan_common::tls::{self, Offered};

use crate::admit;
use crate::audit;
use crate::cmd;
use crate::server::Shared;

type Channel = Framed<SslStream<TcpStream>, MsgCodec<Request, Response>>;

/// How long the final close_notify may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted TCP connection to its end. Never panics on peer input.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    // Without NODELAY a response can sit ~40 ms behind Nagle and delayed ACK.
    let _ = tcp.set_nodelay(true);
    let Some((stream, key)) = handshake(tcp, peer, &shared).await else {
        return;
    };
    let codec = MsgCodec::new(shared.limits.max_frame);
    let mut conn = Connection {
        channel: Framed::new(stream, codec),
        key,
        peer,
        next_counter: 1,
    };
    conn.run(&shared, &cancel).await;
    // close_notify, so the client sees a clean end rather than "unexpected eof"; bounded,
    // since a client that stopped reading could otherwise hold this task forever.
    let mut stream = conn.channel.into_inner();
    let _ = timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(SslStream<TcpStream>, PskIdentity)> {
    let ssl = Ssl::new(&shared.tls)
        .inspect_err(|e| warn!(%peer, error = %e, "cannot set up TLS"))
        .ok()?;
    let mut stream = SslStream::new(ssl, tcp).ok()?;
    let limit = shared.limits.handshake_timeout;
    match timeout(limit, Pin::new(&mut stream).accept()).await {
        Err(_) => {
            warn!(%peer, "handshake failed: timed out after {limit:?}");
            None
        }
        Ok(Err(e)) => {
            handshake_failed(stream.ssl(), peer, &e);
            None
        }
        Ok(Ok(())) => match tls::offered(stream.ssl()) {
            Some(Offered::Identity(key)) => {
                let cipher = stream.ssl().current_cipher().map_or("?", |c| c.name());
                debug!(client = %key, %peer, cipher, "handshake done");
                let key = key.clone();
                Some((stream, key))
            }
            // Unreachable in practice: a decoy key is random, so no client can match it.
            _ => None,
        },
    }
}

/// Logs why a handshake failed, telling apart what the client is never told.
fn handshake_failed(ssl: &SslRef, peer: SocketAddr, err: &openssl::ssl::Error) {
    match tls::offered(ssl) {
        Some(Offered::Identity(key)) => {
            warn!(client = %key, %peer, "handshake failed: key mismatch (the client holds another key for this name and epoch): {err}")
        }
        Some(Offered::Invalid { shown, why }) => {
            warn!(%peer, identity = %shown, "handshake failed: unknown identity ({why})")
        }
        None => {
            warn!(%peer, "handshake failed before any key was chosen (no shared TLS version or cipher suite, or not TLS at all): {err}")
        }
    }
}

struct Connection {
    channel: Channel,
    key: PskIdentity,
    peer: SocketAddr,
    next_counter: u64,
}

impl Connection {
    async fn run(&mut self, shared: &Shared, cancel: &CancellationToken) {
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = timeout(shared.limits.idle_timeout, self.channel.next()) => next,
            };
            let request = match next {
                Err(_) => {
                    return info!(client = %self.key, peer = %self.peer, "idle timeout; closing")
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => return self.unreadable(e, shared).await,
                Ok(Some(Ok(request))) => request,
            };
            let (response, keep_going) = self.answer(request, shared);
            if !(self.send(&response, shared).await && keep_going) {
                return;
            }
        }
    }

    /// Admits and runs one request; the response, and whether the connection goes on.
    fn answer(&mut self, req: Request, shared: &Shared) -> (Response, bool) {
        let started = Instant::now();
        let expected = self.next_counter;
        self.next_counter += 1;
        let verdict = admit::admit(
            &req,
            expected,
            &self.key,
            &shared.rules(),
            &shared.replay,
            time::now(),
        );
        let (body, keep_going) = match verdict {
            Ok(cmd) => {
                let reply = cmd::run(&cmd, &shared.policy);
                audit::admitted(&cmd, &self.key, &req.id, self.peer, started.elapsed());
                (Body::Ok(reply), true)
            }
            Err(refusal) => {
                audit::refused(&self.key, self.peer, &req, &refusal, started.elapsed());
                let failure = Failure {
                    code: refusal.code(),
                    message: refusal.to_string(),
                };
                (Body::Err(failure), !refusal.closes_connection())
            }
        };
        let response = Response {
            counter: req.counter,
            id: req.id,
            body,
        };
        (response, keep_going)
    }

    /// Sends `response`; a client that does not take it within the idle timeout (it
    /// stopped reading) is dropped. False: the connection is over.
    async fn send(&mut self, response: &Response, shared: &Shared) -> bool {
        let sent = timeout(shared.limits.idle_timeout, self.channel.send(response)).await;
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
    async fn unreadable(&mut self, err: FrameError, shared: &Shared) {
        let code = match &err {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::Version(_) => ErrorCode::UnsupportedVersion,
            FrameError::Malformed(_) | FrameError::Trailing(_) | FrameError::Empty => {
                ErrorCode::Malformed
            }
            FrameError::Truncated | FrameError::Io(_) => {
                return info!(client = %self.key, peer = %self.peer, "connection lost: {err}");
            }
        };
        warn!(client = %self.key, peer = %self.peer, outcome = code.name(), "unreadable frame: {err}; closing");
        let failure = Failure {
            code,
            message: err.to_string(),
        };
        let response = Response {
            counter: 0,
            id: [0; 16],
            body: Body::Err(failure),
        };
        self.send(&response, shared).await;
    }
}
