//! The connection's frames, and nothing of what they mean: the next frame (one already
//! buffered without a clock read or a timer; otherwise a wait with the idle and frame
//! timers, written answers flushed only when nothing more has come), answers written
//! with a bound, idle buffers given back, an unreadable frame answered.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::error::Elapsed;
use tokio::time::{timeout, Sleep};
use tokio_openssl::SslStream;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use cmdchan_common::frame::{FrameError, MsgCodec};
use cmdchan_common::ident::PskIdentity;
use cmdchan_common::protocol::{Body, ClientMsg, Failure, Response};

use crate::alerts::Uniform;
use crate::audit::Peer;
use crate::outcome;

type Channel = Framed<SslStream<Uniform<TcpStream>>, MsgCodec<ClientMsg, Response>>;

/// What the reader gave: a frame, the end of the stream (`None`), or a frame it could
/// not read.
pub type Read = Option<Result<ClientMsg, FrameError>>;

/// First size of a connection's read and write buffers.
const FRAME_BUFFER: usize = 512;

/// A connection quiet this long gives back its frame buffers.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// How long a frame may take to arrive whole once it has begun.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the final close_notify may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a frame of a running program's answer went out (see [`Wire::send_by`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Yes,
    /// The client is gone.
    Failed,
    /// The client did not take it in time: it stopped reading.
    Late,
}

/// One authenticated connection's frames.
pub struct Wire {
    io: Channel,
    /// Who is at the other end, for the log.
    key: Arc<PskIdentity>,
    peer: Peer,
    /// How long a connection may be quiet, and a write may wait (the settings' idle
    /// timeout, taken again on a reload).
    pub idle_timeout: Duration,
    /// When the connection last began to wait for a frame.
    quiet_since: Instant,
    /// One timer for the connection. It is moved on only when it fires, never per
    /// request: resetting a timer takes the runtime's timer lock.
    idle: Pin<Box<Sleep>>,
}

impl Wire {
    pub fn new(
        stream: SslStream<Uniform<TcpStream>>,
        codec: MsgCodec<ClientMsg, Response>,
        key: Arc<PskIdentity>,
        peer: Peer,
        idle_timeout: Duration,
    ) -> Self {
        // Frame buffers start small and grow for large frames only: most requests and
        // answers are under 200 bytes, and 1,000 idle connections should not hold 16
        // MiB. Not `Framed::from_parts`: it grows both buffers to 8 KiB (32 KiB per idle
        // connection instead of 20, measured).
        let mut io = Framed::with_capacity(stream, codec, FRAME_BUFFER);
        *io.write_buffer_mut() = BytesMut::with_capacity(FRAME_BUFFER);
        Self {
            io,
            key,
            peer,
            idle_timeout,
            quiet_since: Instant::now(),
            idle: Box::pin(tokio::time::sleep(RELEASE_AFTER)),
        }
    }

    /// A frame among the client's bytes already read (pipelining), decoded without a
    /// clock read, a timer or, for a whole frame, the socket. With nothing read the
    /// reader is not polled: that poll would cost OpenSSL a failed read.
    pub fn buffered(&mut self) -> Option<Read> {
        if self.io.read_buffer().is_empty() {
            return None;
        }
        self.io.next().now_or_never()
    }

    /// Starts a wait for the next frame (the connection is quiet from now).
    pub fn quiet(&mut self) {
        self.quiet_since = Instant::now();
    }

    /// Waits for the next frame, sending the answers written meanwhile only when none
    /// is there, so a client that pipelines gets its answers in as few TLS records and
    /// syscalls as it sent its requests; `None` once the connection has been quiet for
    /// the idle timeout (or a begun frame for the frame timeout). Cancel-safe: the
    /// quiet time counts from [`Wire::quiet`], not from each call.
    pub async fn wait(&mut self) -> Option<Read> {
        loop {
            tokio::select! {
                biased;
                () = &mut self.idle => {
                    if self.idled_out() {
                        info!(client = %self.key, peer = %self.peer, "idle timeout; closing");
                        return None;
                    }
                }
                next = poll_fn(|cx| next_or_flush(&mut self.io, cx)) => return Some(next),
            }
        }
    }

    /// The next frame while a program runs (cancel-safe, for a `select!`).
    pub async fn read(&mut self) -> Read {
        self.io.next().await
    }

    /// The idle timer fired: true if the connection has been quiet for the idle
    /// timeout. Otherwise the timer is set for the next thing due: giving back the
    /// frame buffers, or the idle timeout.
    fn idled_out(&mut self) -> bool {
        // A frame begun must be whole soon: a client may not park a partial one, not
        // even one whose header alone was read (it holds its share of frame memory).
        let begun = !self.io.read_buffer().is_empty() || self.io.codec().mid_frame();
        let limit = match begun {
            false => self.idle_timeout,
            true => self.idle_timeout.min(FRAME_TIMEOUT),
        };
        let quiet = self.quiet_since.elapsed();
        if quiet >= limit {
            return true;
        }
        let release = RELEASE_AFTER.min(limit);
        let next = if quiet >= release {
            self.release_buffers();
            limit
        } else {
            release
        };
        self.idle.as_mut().reset((self.quiet_since + next).into());
        false
    }

    /// Drops the frame buffers when they hold nothing; they grow again on the next frame.
    fn release_buffers(&mut self) {
        if self.io.read_buffer().is_empty() {
            *self.io.read_buffer_mut() = BytesMut::new();
        }
        if self.io.write_buffer().is_empty() {
            *self.io.write_buffer_mut() = BytesMut::new();
        }
    }

    /// Writes `response` without flushing it (see [`Wire::wait`]); the write itself
    /// flushes once the buffer is full. False: the client is gone or stopped reading.
    pub async fn feed(&mut self, response: &Response) -> bool {
        let sent = bounded(self.idle_timeout, self.io.feed(response)).await;
        self.sent(sent)
    }

    /// Sends the answers written so far; false if the client is gone or stopped reading.
    pub async fn flush(&mut self) -> bool {
        let flushed = bounded(self.idle_timeout, self.io.flush()).await;
        self.sent(flushed)
    }

    /// Sends one frame of a running program's answer, which the client must take by
    /// `by`.
    pub async fn send_by(&mut self, frame: &Response, by: Instant) -> Sent {
        match tokio::time::timeout_at(by.into(), self.io.send(frame)).await {
            Ok(Ok(())) => Sent::Yes,
            Ok(Err(_)) => Sent::Failed,
            Err(_) => Sent::Late,
        }
    }

    fn sent(&self, sent: Result<Result<(), FrameError>, Elapsed>) -> bool {
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

    /// Answers a frame that could not be read (the connection then ends).
    pub async fn unreadable(&mut self, err: FrameError) {
        let Some(code) = outcome::unreadable(&err) else {
            return info!(client = %self.key, peer = %self.peer, "connection lost: {err}");
        };
        warn!(client = %self.key, peer = %self.peer, outcome = code.name(), "unreadable frame: {err}; closing");
        let response = Response {
            counter: 0,
            id: [0; 16],
            body: Body::Err(Failure::new(code, err.to_string())),
        };
        self.feed(&response).await;
    }

    /// The last answers (a refusal that ends the connection) and close_notify, so the
    /// client sees a clean end rather than "unexpected eof"; bounded, since a client
    /// that stopped reading could otherwise hold this task forever.
    pub async fn close(mut self) {
        let _ = timeout(CLOSE_TIMEOUT, self.io.flush()).await;
        let _ = timeout(CLOSE_TIMEOUT, self.io.get_mut().shutdown()).await;
    }
}

/// The next frame, sending the answers written meanwhile only when none is there. The
/// reader is polled once per wake: polling it speculatively before waiting would cost
/// OpenSSL a failed read per request.
fn next_or_flush(io: &mut Channel, cx: &mut Context<'_>) -> Poll<Read> {
    if let Poll::Ready(next) = io.poll_next_unpin(cx) {
        return Poll::Ready(next);
    }
    match SinkExt::<&Response>::poll_flush_unpin(io, cx) {
        // Written answers the client will never get: the connection is lost.
        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
    }
}

/// `timeout(limit, fut)`, without the timer when `fut` is ready at once (a write the
/// socket takes, the common case): setting one up costs a clock read and a shared
/// reference count per call.
async fn bounded<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Some(out) = fut.as_mut().now_or_never() {
        return Ok(out);
    }
    timeout(limit, fut).await
}
