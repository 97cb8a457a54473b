//! A hostile server: it holds the zone's key and answers whatever it likes, and a sink
//! that keeps the signs of life a server sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmdchan_common::tls;
use openssl::ssl::Ssl;
use tokio_openssl::SslStream;

use crate::TestEnv;

/// An answer sink that keeps the signs of life a server sent (and drops output).
#[derive(Debug, Clone, Default)]
pub struct Heard(pub Arc<Mutex<Vec<cmdchan::Alive>>>);

impl Heard {
    /// How many signs of life of this kind came.
    pub fn count(&self, kind: cmdchan::Alive) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| **a == kind)
            .count()
    }
}

impl cmdchan::AnswerSink for Heard {
    async fn output(&mut self, _: cmdchan::Output) -> cmdchan::Flow {
        cmdchan::Flow::Go
    }

    fn alive(&mut self, alive: cmdchan::Alive) {
        self.0.lock().unwrap().push(alive);
    }
}

/// What a hostile server answers to one request: any bodies it likes, in order.
pub type Answers = Box<dyn Iterator<Item = cmdchan::Body> + Send>;

/// A hostile server: it holds the zone key of [`ZONE`] (a compromised server, or a zone
/// peer), completes real TLS-PSK handshakes with clients of the zone, answers every
/// request with whatever `answer` makes of it, and keeps every frame clients send.
#[derive(Debug)]
pub struct Hostile {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<cmdchan::ClientMsg>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    pub async fn start(
        env: &TestEnv,
        answer: impl Fn(&cmdchan::Request) -> Answers + Send + Sync + 'static,
    ) -> Hostile {
        let key = cmdchan_common::zonekey::load(&env.zone_key).unwrap();
        let ctx =
            tls::server_context(vec![key.into()], tls::FFDHE3072_PEM, false, |_| None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (kept, answer) = (Arc::clone(&received), Arc::new(answer));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (ctx, kept, answer) = (ctx.clone(), Arc::clone(&kept), Arc::clone(&answer));
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let mut tls = SslStream::new(Ssl::new(&ctx).unwrap(), tcp).unwrap();
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return;
                    }
                    let codec = cmdchan_common::frame::MsgCodec::<
                        cmdchan::ClientMsg,
                        cmdchan::Response,
                    >::new(1 << 20);
                    serve_hostile(tokio_util::codec::Framed::new(tls, codec), &kept, &*answer)
                        .await;
                });
            }
        });
        Hostile {
            addr,
            received,
            task,
        }
    }

    /// The bytes of stdin clients sent it.
    pub fn stdin_received(&self) -> Vec<u8> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter_map(|m| match m {
                cmdchan::ClientMsg::Input(input) => Some(input.data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_hostile<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: tokio_util::codec::Framed<
        T,
        cmdchan_common::frame::MsgCodec<cmdchan::ClientMsg, cmdchan::Response>,
    >,
    kept: &Mutex<Vec<cmdchan::ClientMsg>>,
    answer: &(dyn Fn(&cmdchan::Request) -> Answers + Send + Sync),
) {
    use futures::{SinkExt, StreamExt};
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), io.next()).await
    {
        kept.lock().unwrap().push(message.clone());
        let cmdchan::ClientMsg::Request(request) = message else {
            continue;
        };
        for body in answer(&request) {
            let response = cmdchan::Response {
                counter: request.counter,
                id: request.id,
                body,
            };
            if io.send(&response).await.is_err() {
                return;
            }
        }
    }
}
