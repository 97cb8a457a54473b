//! `cmdchan-server admin`: makes master keys and client credentials, and inspects them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use cmdchan_common::credential::Credential;
use cmdchan_common::ident::PskIdentity;
use cmdchan_common::keyfile;
use cmdchan_common::keys::{AuditKey, MasterKey};
use cmdchan_common::protocol::Grant;
use cmdchan_common::time;

use crate::audit::verify::{self, Verdict};
use crate::cli::{AdminCommand, ProvisionOpts};

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Init { master, force } => init(&master, force),
        AdminCommand::Provision(opts) => provision(&opts),
        AdminCommand::Psk {
            master,
            name,
            epoch,
        } => {
            let key = load_master(&master)?.psk(&PskIdentity { name, epoch });
            println!("{}", key.to_hex().as_str());
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Inspect { credential, master } => inspect(&credential, master.as_deref()),
        AdminCommand::AuditVerify {
            path,
            master,
            prev,
            head,
        } => {
            let key = load_master(&master)?.audit_key();
            audit_verify(&path, &key, prev.as_deref(), head.as_deref())
        }
    }
}

/// Prints what the chain walk found: the records, the gaps the server recorded, the
/// last MAC; exit 1 if a record is not the server's.
pub fn audit_verify(
    path: &Path,
    key: &AuditKey,
    prev: Option<&str>,
    head: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let verdict = verify::verify(path, key, prev, head)
        .with_context(|| format!("reading {}", path.display()))?;
    let walk = match verdict {
        Verdict::Intact(walk) => walk,
        Verdict::Broken { line, why } => {
            println!("BROKEN at line {line}: it {why}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let start = match walk.new_chain {
        true => "a new chain".to_owned(),
        false => format!(
            "MAC {} (the last record of the file before this one)",
            walk.first_prev
        ),
    };
    println!("ok: {} records, starting {start}", walk.records);
    for (line, records, error) in &walk.gaps {
        println!("gap at line {line}: the server could not write {records} records ({error})");
    }
    println!("last: seq {} mac {}", walk.last_seq, walk.last_mac);
    Ok(ExitCode::SUCCESS)
}

/// Reads a master key file, refusing exposed, short or malformed keys.
pub fn load_master(path: &Path) -> anyhow::Result<MasterKey> {
    let text = keyfile::read_private("master key", path)?;
    MasterKey::from_hex(&text)
        .map_err(|e| anyhow::anyhow!("master key file {} {e}", path.display()))
}

pub fn init(path: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let key = MasterKey::generate().context("drawing random bytes from OpenSSL")?;
    let mut text = key.to_hex();
    text.push('\n');
    keyfile::write_private("master key", path, text.as_bytes(), force)?;
    eprintln!("wrote a new master key to {} (mode 0600)", path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn provision(opts: &ProvisionOpts) -> anyhow::Result<ExitCode> {
    let master = load_master(&opts.master)?;
    let now = time::now();
    let expires = time::parse_expiry(&opts.expires, now)?;
    if let Some(at) = expires.filter(|&at| at <= now && !opts.expired_ok) {
        anyhow::bail!(
            "--expires {} is in the past ({}): the credential would never work (pass --expired-ok to write it anyway)",
            opts.expires,
            time::rfc3339(at)
        );
    }
    let grant = Grant {
        role: opts.role.clone(),
        epoch: opts.epoch,
        expires,
        servers: opts.servers.clone(),
    };
    let identity = PskIdentity {
        name: opts.name.clone(),
        epoch: opts.epoch,
    };
    let cred = Credential {
        tag: master.tag_key().sign(&opts.name, &grant),
        psk: master.psk(&identity),
        name: opts.name.clone(),
        grant,
        address: opts.address.clone(),
    };
    cred.save(&opts.out, opts.force)?;
    eprintln!(
        "wrote credential for {identity} (role {}) to {} (mode 0600)",
        opts.role,
        opts.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints a credential without its secrets; with the master key, checks key and tag.
pub fn inspect(path: &Path, master: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cred = Credential::load(path)?;
    let g = &cred.grant;
    println!("credential:   {}", path.display());
    println!("name:         {}", cred.name);
    println!("psk identity: {}", cred.identity());
    println!("role:         {}", g.role);
    println!("epoch:        {}", g.epoch);
    println!("expires:      {}", expiry(g.expires));
    println!("servers:      {}", servers(g));
    println!(
        "address:      {}",
        cred.address.as_deref().unwrap_or("(none)")
    );
    let Some(master) = master else {
        println!("tag:          not checked (pass --master to check it)");
        return Ok(ExitCode::SUCCESS);
    };
    let master = load_master(master)?;
    let key_ok = master.psk(&cred.identity()).ct_eq(&cred.psk);
    let tag_ok = master.tag_key().verify(&cred.name, g, &cred.tag);
    println!(
        "psk:          {}",
        if key_ok {
            "matches this master key"
        } else {
            "DOES NOT match this master key"
        }
    );
    println!(
        "tag:          {}",
        if tag_ok {
            "valid"
        } else {
            "INVALID (edited grant, or another master key)"
        }
    );
    Ok(if key_ok && tag_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn expiry(at: Option<u64>) -> String {
    match at {
        None => "never".into(),
        Some(at) if at <= time::now() => format!("{} (EXPIRED)", time::rfc3339(at)),
        Some(at) => time::rfc3339(at),
    }
}

fn servers(g: &Grant) -> String {
    match g.servers.is_empty() {
        true => "any".into(),
        false => g
            .servers
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}
