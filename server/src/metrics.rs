//! Metrics in the Prometheus text format, on an optional endpoint (`--metrics`, off by
//! default, loopback unless told otherwise): handshakes by result, requests by command
//! and outcome, connections refused before TLS by reason, request and replay-store
//! latency, replay-store errors, open connections and running programs.
//!
//! Label values are never peer-chosen strings (a refused request's command name would
//! let a client grow the label set without bound): commands are labelled only once the
//! policy knows them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::latency::Latency;
use crate::stripes;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub command: String,
    pub outcome: &'static str,
}

/// The replay store's own figures, handed to it when it opens.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    pub latency: Latency,
    pub errors: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub handshakes: Family<ResultLabel, Counter>,
    /// Striped: every request adds to one (see [`stripes`]).
    pub requests: Family<RequestLabels, stripes::Counter>,
    pub refused_connections: Family<ResultLabel, Counter>,
    pub request_seconds: Latency,
    pub store: StoreMetrics,
    pub open_connections: Gauge,
    pub running_programs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("cmdchan"),
            handshakes: Family::default(),
            requests: Family::default(),
            refused_connections: Family::default(),
            request_seconds: Latency::default(),
            store: StoreMetrics::default(),
            open_connections: Gauge::default(),
            running_programs: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "handshakes",
            "TLS handshakes by result",
            m.handshakes.clone(),
        );
        r.register(
            "requests",
            "requests by command and outcome",
            m.requests.clone(),
        );
        r.register(
            "connections_refused",
            "connections closed before TLS, by reason",
            m.refused_connections.clone(),
        );
        r.register(
            "request_seconds",
            "time from a request to its answer",
            m.request_seconds.clone(),
        );
        r.register(
            "replay_store_seconds",
            "time to claim a command ID",
            m.store.latency.clone(),
        );
        r.register(
            "replay_store_errors",
            "replay store failures (requests refused)",
            m.store.errors.clone(),
        );
        r.register(
            "open_connections",
            "connections open now",
            m.open_connections.clone(),
        );
        r.register(
            "running_programs",
            "policy programs running now",
            m.running_programs.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn count_handshake(&self, result: &'static str) {
        self.handshakes.get_or_create(&ResultLabel { result }).inc();
    }

    /// The counter for `command` and `outcome`, created on first use.
    fn request_counter(&self, command: &str, outcome: &'static str) -> stripes::Counter {
        let labels = RequestLabels {
            command: command.to_owned(),
            outcome,
        };
        self.requests.get_or_create(&labels).clone()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One connection's way to count its requests. It holds the counter it used last: a
/// client mostly sends one command after another, and the counter then costs one atomic
/// add, not the family's lock (shared by every connection), a hash and a label copy.
#[derive(Debug, Default)]
pub struct Tally {
    last: Option<Box<(String, &'static str, stripes::Counter)>>,
}

impl Tally {
    pub fn count(
        &mut self,
        metrics: &Metrics,
        command: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        match self.last.as_deref() {
            Some((c, o, counter)) if c == command && *o == outcome => {
                counter.inc();
            }
            _ => {
                let counter = metrics.request_counter(command, outcome);
                counter.inc();
                self.last = Some(Box::new((command.to_owned(), outcome, counter)));
            }
        }
        metrics.request_seconds.observe(took);
    }
}

/// Connections the metrics endpoint serves at once; more wait in the listen queue.
const METRICS_CONNECTIONS: usize = 32;

/// How long one metrics connection may last.
const METRICS_DEADLINE: Duration = Duration::from_secs(10);

/// The OpenMetrics text format, which `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (any query string) on `listener` until the process ends;
/// anything else is 404. At most [`METRICS_CONNECTIONS`] connections at once, each for
/// at most [`METRICS_DEADLINE`]; accept errors (out of file descriptors) are waited out,
/// so a flood on this port neither stops it nor takes the main port's descriptors.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, OPENMETRICS)],
                    metrics.render(),
                )
            }
        }),
    );
    let capped = Capped {
        listener,
        slots: Arc::new(Semaphore::new(METRICS_CONNECTIONS)),
    };
    if let Err(e) = axum::serve(capped, app).await {
        warn!(error = %e, "the metrics endpoint stopped");
    }
}

/// A listener that takes a slot before it accepts and survives accept errors.
struct Capped {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl axum::serve::Listener for Capped {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            // The semaphore is never closed.
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                continue;
            };
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    let deadline = Box::pin(tokio::time::sleep(METRICS_DEADLINE));
                    return (
                        Limited {
                            tcp,
                            deadline,
                            _slot: slot,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A metrics connection: its slot, given back when it closes, and its deadline.
struct Limited {
    tcp: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Limited {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "metrics connection deadline")
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Where to serve metrics if `--metrics` names no address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9433";

pub fn default_addr() -> SocketAddr {
    DEFAULT_ADDR
        .parse()
        .unwrap_or_else(|_| unreachable!("constant address"))
}
