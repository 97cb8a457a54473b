//! The cmdchan server as a library: the binary's pieces, usable from benches and tests.

pub mod admin;
pub mod admit;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod dev;
pub mod policy;
pub mod replay;
pub mod server;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::Config;
use crate::server::Shared;

/// Loads everything `config` names, binds, and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::load(&config)?);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    info!(server_id = %config.server_id, "listening on {addr}");
    server::run(listener, shared, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}
