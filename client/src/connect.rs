//! The edge of the client: a TCP connection, its TLS-PSK handshake in the zone meant,
//! and why a handshake failed, in words that say where to look.

use std::pin::Pin;

use openssl::error::ErrorStack;
use openssl::ssl::SslContext;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_openssl::SslStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use cmdchan_common::frame::MsgCodec;
use cmdchan_common::ident::Ident;
use cmdchan_common::tls;

use crate::{Channel, Error, Options};

/// Connects to `addr` and completes the handshake within `opts.timeout`.
pub(crate) async fn open(
    ctx: &SslContext,
    zone: &Ident,
    addr: &str,
    opts: &Options,
) -> Result<Channel, Error> {
    let stream = timeout(opts.timeout, handshake(ctx, zone, addr))
        .await
        .map_err(|_| Error::NoTlsReply {
            addr: addr.to_owned(),
            after: opts.timeout,
        })??;
    let server_list = tls::server_list_version(stream.ssl());
    let (read, write) = tokio::io::split(stream);
    Ok(Channel {
        reader: FramedRead::new(read, MsgCodec::new(opts.max_frame)),
        writer: Some(FramedWrite::new(write, MsgCodec::new(opts.max_frame))),
        server_list,
    })
}

async fn handshake(
    ctx: &SslContext,
    zone: &Ident,
    addr: &str,
) -> Result<SslStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut stream = SslStream::new(tls::client_ssl(ctx, zone)?, tcp)?;
    if let Err(e) = Pin::new(&mut stream).connect().await {
        if let Some(refused) = tls::zone_refusal(stream.ssl()) {
            return Err(Error::Zone(refused));
        }
        return Err(handshake_failed(addr, stream.ssl(), &e));
    }
    Ok(stream)
}

/// Tells apart why a handshake failed: a TLS alert (the key, the suites), a connection
/// closed before any TLS reply (turned away before TLS), or something that is not TLS.
fn handshake_failed(addr: &str, ssl: &openssl::ssl::SslRef, e: &openssl::ssl::Error) -> Error {
    let detail = e.ssl_error().map_or_else(|| e.to_string(), alert_reason);
    let addr = addr.to_owned();
    if detail.contains("wrong version number") || detail.contains("packet length too long") {
        return Error::NotTls { addr, detail };
    }
    // Still writing or waiting for the first server message: nothing TLS came back.
    let state = ssl.state_string_long();
    let nothing_back = state.contains("client hello") || state.contains("before");
    let lower = detail.to_ascii_lowercase();
    let closed =
        e.io_error().is_some() || lower.contains("unexpected eof") || lower.contains("syscall");
    if nothing_back && closed && !lower.contains("alert") {
        return Error::RefusedBeforeTls { addr };
    }
    Error::Handshake { addr, detail }
}

/// OpenSSL's reason for the failure ("sslv3 alert bad record mac"), without the noise.
fn alert_reason(stack: &ErrorStack) -> String {
    let reasons: Vec<_> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    match reasons.is_empty() {
        true => stack.to_string(),
        false => reasons.join("; "),
    }
}
