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
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::debug;

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
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub latency: Histogram,
    pub errors: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            latency: Histogram::new(latency_buckets()),
            errors: Counter::default(),
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub handshakes: Family<ResultLabel, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub refused_connections: Family<ResultLabel, Counter>,
    pub request_seconds: Histogram,
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
            request_seconds: Histogram::new(latency_buckets()),
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
    fn request_counter(&self, command: &str, outcome: &'static str) -> Counter {
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
    last: Option<Box<(String, &'static str, Counter)>>,
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
        metrics.request_seconds.observe(took.as_secs_f64());
    }
}

/// 100 µs to ~26 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 19)
}

/// Answers `GET /metrics` on `listener` until the process ends; anything else is 404.
/// One request per connection, read with a small bound and a timeout.
pub async fn serve(listener: TcpListener, metrics: Arc<crate::server::Shared>) {
    while let Ok((mut tcp, peer)) = listener.accept().await {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            });
            if read.await.is_err() {
                return debug!(%peer, "metrics request timed out");
            }
            let reply = match head.starts_with(b"GET /metrics ") {
                true => {
                    let body = metrics.metrics.render();
                    let kind = "text/plain; version=0.0.4; charset=utf-8";
                    format!("HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                }
                false => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned(),
            };
            let _ = tcp.write_all(reply.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// Where to serve metrics if `--metrics` names no address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9433";

pub fn default_addr() -> SocketAddr {
    DEFAULT_ADDR
        .parse()
        .unwrap_or_else(|_| unreachable!("constant address"))
}
