//! The two echo servers the bench runs as contenders of its own: the ceiling (TLS-PSK on
//! cmdchan's own stack and context, no application logic) and the plain TCP backend
//! that stunnel forwards to. Each prints `listening on ADDR` on stderr when ready.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use openssl::ssl::{Ssl, SslContext};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

use cmdchan_common::{tls, zonekey};

/// Read buffer of one echo connection.
const BUF: usize = 4096;

#[derive(Debug, clap::Args)]
pub struct CeilingOpts {
    /// Zone key file: the ceiling opens identities and derives PSKs as cmdchan-server
    /// does.
    #[arg(long = "zone-key")]
    pub zone_key: PathBuf,
}

/// The ceiling: cmdchan's TLS context (same suites, groups, DH parameters, options and
/// PSK callback) in front of an echo loop.
pub fn ceiling(opts: CeilingOpts) -> anyhow::Result<()> {
    let key = zonekey::load(&opts.zone_key).context("reading the zone key")?;
    let ctx = Arc::new(tls::server_context(
        vec![key.into()],
        tls::FFDHE3072_PEM,
        true,
        |_| None,
    )?);
    serve(move |tcp| {
        let ctx = Arc::clone(&ctx);
        async move { echo_tls(&ctx, tcp).await }
    })
}

/// The plain TCP echo server behind stunnel.
pub fn plain() -> anyhow::Result<()> {
    serve(|tcp| async move { echo(tcp).await })
}

/// Accepts on a free loopback port and runs `conn` for each connection.
fn serve<F, Fut>(conn: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("listening on {}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            tokio::spawn(conn(tcp));
        }
    })
}

async fn echo_tls(ctx: &SslContext, tcp: TcpStream) -> anyhow::Result<()> {
    let mut stream = SslStream::new(Ssl::new(ctx)?, tcp)?;
    Pin::new(&mut stream).accept().await?;
    echo(stream).await
}

/// Writes back whatever arrives, until the peer closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> anyhow::Result<()> {
    let mut buf = [0u8; BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
