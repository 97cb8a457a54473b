//! The cmdchan server as a library: the binary's pieces, usable from benches and tests.

pub mod admin;
pub mod admit;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod dev;
pub mod exec;
pub mod policy;
pub mod replay;
pub mod server;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::config::Config;
use crate::server::Shared;

/// Loads everything `config` names, binds, and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Install the handlers before announcing readiness: a signal that arrives between
    // "listening" and the first poll of the shutdown future must still drain, not kill.
    let shutdown = shutdown_signal()?;
    let shared = Arc::new(Shared::load(&config)?);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    info!(server_id = %config.server_id, "listening on {addr}");
    server::run(listener, shared, shutdown).await;
    Ok(())
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
