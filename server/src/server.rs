//! The accept loop: the gate's connection limits before any TLS work, a task per
//! connection, and the graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use cmdchan_common::time;

use crate::audit::JobEnded;
use crate::connection;
use crate::gate::Turned;
use crate::metrics::ResultLabel;
use crate::state::Shared;

/// Writes the audit records of jobs a pool declared lost. One not said to be recorded
/// (Redis failing meanwhile) is handed out again by a later sweep: recorded twice
/// rather than never.
async fn record_lost(shared: Arc<Shared>, ids: Vec<cmdchan_common::protocol::CommandId>) {
    let lost = match shared.jobs.record_lost(&ids).await {
        Ok(lost) => lost,
        Err(e) => {
            warn!(error = %e, "cannot read the jobs declared lost; a later sweep tries again");
            return;
        }
    };
    for info in &lost {
        shared.audit.job_ended(&JobEnded::lost(info.clone()));
    }
    let _ = shared.jobs.audited(&lost).await;
}

/// Accepts connections until `shutdown` completes, then stops accepting, lets open
/// connections finish the request they are on, and returns. A connection the gate turns
/// away is closed at once, before any TLS work.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    // Upkeep, once a second: reap what programs left behind, write refusal summaries,
    // drop jobs' results past their retention (whole files).
    // In a pool sharing its jobs in Redis, this also renews the process's lease and
    // records the jobs of processes gone quiet as lost.
    let upkeep = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut failing = false;
        loop {
            tick.tick().await;
            crate::exec::reap_orphans();
            upkeep.audit.flush(time::now());
            match upkeep.jobs.maintain(time::now()).await {
                Ok(lost) => {
                    failing = false;
                    if !lost.is_empty() {
                        // On a task of its own: reading their output for the digests
                        // must not hold up the next renewal of this process's lease.
                        tokio::spawn(record_lost(upkeep.clone(), lost));
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "cannot keep up the job store; retrying every second");
                }
                Err(_) => {}
            }
        }
    });
    let mut turned_away = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let pass = match shared.gate.enter(peer.ip(), Instant::now()) {
            Ok(pass) => pass,
            Err(turned) => {
                shared
                    .metrics
                    .refused_connections
                    .get_or_create(&ResultLabel {
                        result: turned.label(),
                    })
                    .inc();
                turned_away.note(turned, peer);
                continue;
            }
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            shared.metrics.open_connections.inc();
            connection::serve(tcp, peer, shared.clone()).await;
            shared.metrics.open_connections.dec();
            drop(pass);
        });
    }
    // Close the socket now: new clients are refused at once instead of queueing.
    drop(listener);
    info!(
        open = tracker.len(),
        "shutting down: accepting no more connections"
    );
    shared.notices.stop();
    tracker.close();
    let drain = shared.settings().limits.drain_timeout;
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!("connections still open after {drain:?}; stopping their programs and exiting");
    }
    // Every process a program started goes with the server, also those that left
    // their program's process group.
    shared.tracking.stop_all();
    shared.replay.close();
    info!("stopped");
}

/// Logs turned-away connections at most once a second, with how many were not logged:
/// a flood must not become a flood of log lines.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    fn note(&mut self, turned: Turned, peer: SocketAddr) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        let why = match turned {
            Turned::NotAllowed => "source not in the allowlist".to_owned(),
            Turned::Full => "connection limit reached".to_owned(),
            Turned::SourceFull => "per-source connection limit reached".to_owned(),
            Turned::Penalized { left } => format!("source penalized for {}s more", left.as_secs()),
        };
        warn!(%peer, also_refused_since_last_line = self.unlogged, "connection refused before TLS: {why}");
        (self.last, self.unlogged) = (Some(now), 0);
    }
}
