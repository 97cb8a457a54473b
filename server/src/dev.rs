//! `cmdchan-server dev`: a development server on loopback, with a root key, the key of
//! zone `dev` and a demo credential made on first run, so a new user can try the channel
//! with two commands.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::Context;

use cmdchan_common::ident::Ident;

use crate::admin;
use crate::cli::{DevOpts, LogFormat, ProvisionOpts};
use crate::config::{Config, ServeOpts};
use crate::replay::StoreArg;

/// The zone of the development server.
const DEV_ZONE: &str = "dev";

/// The server ID of the development server; the demo credential addresses it by name.
const DEV_SERVER_ID: &str = "localhost";

/// Prepares the key and credential, and returns the config to serve with.
pub fn prepare(opts: &DevOpts) -> anyhow::Result<Config> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let root = opts.dir.join("dev-root.key");
    let zone_key = opts.dir.join("dev-zone.key");
    let cred = opts.dir.join("demo.cred");
    if !root.exists() {
        admin::init(&root, false)?;
    }
    if !zone_key.exists() {
        admin::zone_key(&root, &Ident::new(DEV_ZONE)?, 1, &zone_key, false)?;
    }
    if !cred.exists() {
        admin::provision(&demo(&root, &cred, opts.listen)?)?;
    }
    let id = Ident::new(DEV_SERVER_ID)?;
    println!(
        "development server {id} on {}; in another shell try:",
        opts.listen
    );
    println!("  cargo run -p cmdchan -- --cred {} whoami", cred.display());
    let serve = ServeOpts {
        zone_key: Some(vec![zone_key]),
        listen: Some(opts.listen),
        replay_store: Some(StoreArg(format!(
            "file:{}",
            opts.dir.join("replay").display()
        ))),
        server_id: Some(id),
        log_format: Some(LogFormat::Text),
        ..ServeOpts::default()
    };
    Config::load(&serve)
}

fn demo(root: &Path, out: &Path, listen: SocketAddr) -> anyhow::Result<ProvisionOpts> {
    Ok(ProvisionOpts {
        root: root.into(),
        zones: vec![DEV_ZONE.into()],
        generation: 1,
        name: Ident::new("demo")?,
        role: Ident::new("operator")?,
        out: out.into(),
        epoch: 0,
        expires: "never".into(),
        servers: vec![],
        address: Some(format!("{DEV_SERVER_ID}:{}", listen.port())),
        force: false,
        update: false,
        expired_ok: false,
    })
}
