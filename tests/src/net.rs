//! Connections for tests that must misbehave: raw TLS-PSK from any loopback source with
//! any identity, plain TCP, a proxy that cuts a connection mid-answer and one that cuts
//! every connection it carries when told.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cmdchan::Credential;
use cmdchan_common::keys::Psk;
use cmdchan_common::tls;
use openssl::ssl::Ssl;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Opens a TLS-PSK connection to `addr` with the credential at `cred`.
pub async fn raw_tls(
    addr: SocketAddr,
    cred: &Path,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    raw_tls_from("127.0.0.1", addr, cred).await
}

/// As [`raw_tls`], from the loopback address `source`.
pub async fn raw_tls_from(
    source: &str,
    addr: SocketAddr,
    cred: &Path,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let cred = std::sync::Arc::new(Credential::load(cred).unwrap());
    let (zone, _) = cred.zone(None).unwrap();
    let ssl = tls::client_ssl(&tls::client_context(cred.clone()).unwrap(), zone).unwrap();
    handshake_from(source, addr, ssl).await
}

/// Opens a TLS-PSK connection with any identity text and key (a wrong key, a forged
/// identity), from the loopback address `source`.
pub async fn raw_tls_fixed(
    source: &str,
    addr: SocketAddr,
    identity: &str,
    psk: &Psk,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let ctx = tls::fixed_client_builder(identity, psk).unwrap().build();
    handshake_from(source, addr, Ssl::new(&ctx).unwrap()).await
}

async fn handshake_from(
    source: &str,
    addr: SocketAddr,
    ssl: Ssl,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let tcp = tcp_from(source, addr).await.unwrap();
    let mut stream = SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut stream).connect().await?;
    Ok(stream)
}

/// A TCP proxy to `target` for cutting connections: the first connection it carries is
/// cut at the server's first TLS application-data record (so the request got through
/// but its answer does not); later connections pass untouched.
pub async fn cutting_proxy(target: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            tokio::spawn(relay(client, server, std::mem::take(&mut first)));
        }
    });
    addr
}

async fn relay(client: TcpStream, server: TcpStream, cut: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream =
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    // Downstream, record by record: header (type, version, length), then the body.
    loop {
        let mut header = [0u8; 5];
        if server_read.read_exact(&mut header).await.is_err() {
            break;
        }
        if cut && header[0] == 0x17 {
            break;
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        if server_read.read_exact(&mut body).await.is_err() {
            break;
        }
        if client_write.write_all(&header).await.is_err()
            || client_write.write_all(&body).await.is_err()
        {
            break;
        }
    }
    upstream.abort();
}

/// A TCP proxy whose connections are all cut at once by [`CutProxy::cut`]; the ones
/// made after it pass until the next cut.
#[derive(Debug)]
pub struct CutProxy {
    pub addr: SocketAddr,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let watch = cuts.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        CutProxy { addr, cuts }
    }

    /// Cuts every connection open now (both sides see the TCP connection close).
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

/// A plain TCP connection to `addr` from the loopback address `source` (127.0.0.0/8 is
/// all loopback, so tests can be several sources on one machine).
pub async fn tcp_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// Whether the server closed `tcp` within `within` (rather than holding it open).
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A free loopback TCP port (for servers that need one chosen beforehand).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
