//! The TLS-PSK handshake of one accepted connection: bounded in time, its failures told
//! apart in the log and the metrics (never to the client), and counted against the
//! source's penalty when they look like an attack.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use openssl::ssl::{Ssl, SslRef};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;
use tracing::{debug, warn};

use cmdchan_common::ident::PskIdentity;
use cmdchan_common::tls::{self, Offered};

use crate::alerts::Uniform;
use crate::metrics::Metrics;
use crate::state::Shared;

/// A connection whose client proved its key.
pub struct Proven {
    pub stream: SslStream<Uniform<TcpStream>>,
    /// The client's name and key epoch, from its sealed identity.
    pub key: PskIdentity,
    /// The generation of the zone key the client's key was derived from.
    pub generation: u64,
}

impl std::fmt::Debug for Proven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proven")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Runs the server's side of the handshake; `None` if it failed (logged and counted).
pub async fn accept(tcp: TcpStream, peer: SocketAddr, shared: &Shared) -> Option<Proven> {
    let mut ssl = Ssl::new(&shared.tls)
        .inspect_err(|e| warn!(%peer, error = %e, "cannot set up TLS"))
        .ok()?;
    // The hint names the revocation list this server keeps: a client that holds a newer
    // one gives it (PROTOCOL.md §3.6).
    let version = shared.kept.version();
    if version > 0 {
        if let Err(e) = tls::set_hint(&mut ssl, &shared.zone, version) {
            warn!(%peer, error = %e, "cannot set the identity hint");
        }
    }
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
            handshake_failed(stream.ssl(), peer, &e, &shared.metrics);
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
                Some(Proven {
                    stream,
                    key,
                    generation,
                })
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

/// Counts a failed handshake under its reason, then logs why it failed, telling apart
/// what the client is never told (counted first: whoever reads the log line finds it
/// in the metrics too).
fn handshake_failed(ssl: &SslRef, peer: SocketAddr, err: &openssl::ssl::Error, metrics: &Metrics) {
    let offered = tls::offered(ssl);
    metrics.count_handshake(match offered {
        Some(Offered::Identity { .. }) => "key_mismatch",
        Some(Offered::Refused { .. }) => "revoked",
        Some(Offered::Invalid { .. }) => "unknown_identity",
        None => "no_common_suite",
    });
    match offered {
        Some(Offered::Identity { identity: key, .. }) => {
            warn!(client = %key, %peer, "handshake failed: key mismatch (the client holds another key for this name and epoch): {err}");
        }
        Some(Offered::Refused { identity, why }) => {
            warn!(client = %identity, %peer, "handshake refused: {why}");
        }
        Some(Offered::Invalid { shown, why }) => {
            warn!(%peer, identity = %shown, "handshake failed: unknown identity ({why})");
        }
        None => {
            warn!(%peer, "handshake failed before any key was chosen (no shared TLS version or cipher suite, or not TLS at all): {err}");
        }
    }
}
