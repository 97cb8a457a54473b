//! The server's socket during the TLS handshake, with one alert made like the others.
//!
//! OpenSSL refuses a PSK identity over 256 bytes itself, before the server's PSK
//! callback runs, with alert 50 (`decode_error`), where every other refused identity or
//! key gets alert 20 (`bad_record_mac`). That difference tells a prober something about
//! what it sent; so until the handshake is done, a plaintext fatal `decode_error` alert
//! leaving the server is sent as `bad_record_mac`. Alerts are encrypted once the
//! handshake is done, and the rewrite is off from then on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// TLS 1.2 record: type 21 (alert), version 3.3, length 2, level 2 (fatal), description.
const ALERT: [u8; 6] = [21, 3, 3, 0, 2, 2];
const DECODE_ERROR: u8 = 50;
const BAD_RECORD_MAC: u8 = 20;

/// A stream whose handshake alerts are uniform (see the module's docs).
#[derive(Debug)]
pub struct Uniform<S> {
    inner: S,
    handshaking: bool,
}

impl<S> Uniform<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            handshaking: true,
        }
    }

    /// The handshake is over: alerts are encrypted from now on, left as they are.
    pub fn handshake_done(&mut self) {
        self.handshaking = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Uniform<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Uniform<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // OpenSSL writes an alert as one record in one write.
        if self.handshaking && buf.len() == 7 && buf[..6] == ALERT && buf[6] == DECODE_ERROR {
            let mut same = [0u8; 7];
            same[..6].copy_from_slice(&ALERT);
            same[6] = BAD_RECORD_MAC;
            return Pin::new(&mut self.inner).poll_write(cx, &same);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
