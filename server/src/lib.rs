//! The cmdchan server as a library: the binary's pieces, usable from benches and tests.

pub mod admin;
pub mod admit;
pub mod alerts;
pub mod audit;
pub mod batch;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod dev;
pub mod exec;
pub mod gate;
pub mod handshake;
pub mod jobs;
pub mod latency;
pub mod logsink;
pub mod metrics;
pub mod notice;
pub mod outcome;
pub mod policy;
pub mod rate;
pub mod redis_link;
pub mod replay;
pub mod revoke;
pub mod run;
pub mod server;
pub mod state;
pub mod stripes;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::cli::ServeOpts;
use crate::config::Config;
use crate::state::{Settings, Shared};

/// The server could not listen on its address (in use, not permitted): exit 69.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {0}: {1}")]
pub struct CannotListen(pub std::net::SocketAddr, pub std::io::Error);

/// Loads everything `config` names, binds, and serves until SIGINT or SIGTERM. On
/// SIGHUP it reads `opts` (the command line and the config file it names) again and
/// puts the new policy and settings in force, or keeps the old ones if anything is wrong.
pub async fn serve(config: Config, opts: Option<ServeOpts>) -> anyhow::Result<()> {
    // Install the handlers before announcing readiness: a signal that arrives between
    // "listening" and the first poll of the shutdown future must still drain, not kill.
    let shutdown = shutdown_signal()?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    descriptors(&config);
    let shared = Arc::new(Shared::load(&config).await?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| CannotListen(config.listen, e))?;
    let addr = listener.local_addr()?;
    if let Some(at) = config.metrics {
        let metrics = TcpListener::bind(at)
            .await
            .with_context(|| format!("serving metrics on {at}"))?;
        info!("metrics at http://{}/metrics", metrics.local_addr()?);
        tokio::spawn(metrics::serve(metrics, Arc::clone(&shared.metrics)));
    }
    let reloader = shared.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload(&reloader, &config, opts.as_ref());
        }
    });
    info!(server_id = %shared.server_id, "listening on {addr}");
    server::run(listener, shared, shutdown).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard one, and warns if even that cannot
/// hold every connection the limits allow (a connection, three pipes per program, the
/// metrics endpoint's, and a margin for files): past it, accepts fail on both ports.
fn descriptors(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        warn!("cannot raise the open-file limit from {soft} to {hard}");
    }
    let l = &config.limits;
    let needed = (l.max_connections + 3 * l.max_executions + 32 + 64) as u64;
    if hard < needed {
        warn!("the open-file limit ({hard}) is below what max_connections and max_executions need ({needed}): lower them, or raise LimitNOFILE");
    }
}

/// Applies a new policy and settings, or logs why not and keeps the old ones.
fn reload(shared: &Shared, running: &Config, opts: Option<&ServeOpts>) {
    let fresh = match opts {
        Some(opts) => Config::load(opts),
        None => Ok(running.clone()),
    };
    let settings = fresh.and_then(|config| {
        let fixed = running.opts.needing_restart(&config.opts);
        if !fixed.is_empty() {
            warn!(
                "SIGHUP: {} changed, and take effect only at a restart; they are not applied",
                fixed.join(", ")
            );
        }
        Settings::load(&config)
    });
    match settings.map(|s| shared.replace(s)) {
        Ok(Ok(())) => info!("SIGHUP: policy and settings reloaded"),
        Ok(Err(e)) => {
            error!(error = %e, "SIGHUP: settings reloaded, but the audit file could not be reopened")
        }
        Err(e) => {
            error!("SIGHUP: reload refused, the old policy and settings stay in force: {e:#}")
        }
    }
}

/// A future that completes on the first SIGINT or SIGTERM; the handlers are installed
/// when this function returns, not when the future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    })
}
