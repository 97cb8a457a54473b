//! `cmdchan-server admin`: makes the root key, zone keys and client credentials, and
//! inspects them. It runs on the admin machine, which holds the root key; servers never
//! need this, only their zone key.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use cmdchan_common::credential::{Credential, ZoneEntry};
use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::keys::{AuditKey, RootKey};
use cmdchan_common::protocol::Grant;
use cmdchan_common::revocation::{RevocationList, SignedList};
use cmdchan_common::{sealed, time, zonekey};

use crate::audit::{
    self,
    verify::{self, Verdict},
};
use crate::cli::{AdminCommand, ProvisionOpts};

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Init { root, force } => init(&root, force),
        AdminCommand::ZoneKey {
            root,
            zone,
            generation,
            out,
            force,
        } => zone_key(&root, &zone, generation, &out, force),
        AdminCommand::Provision(opts) => provision(&opts),
        AdminCommand::Psk {
            root,
            zone,
            name,
            epoch,
            generation,
        } => psk(&root, &zone, &name, epoch, generation),
        AdminCommand::Inspect {
            credential,
            zone_key,
        } => inspect(&credential, zone_key.as_deref()),
        AdminCommand::SpoolOutput { spool, id } => spool_output(&spool, &id),
        AdminCommand::Revoke {
            root,
            from,
            names,
            min_epochs,
            retired,
            out,
        } => revoke(&root, from.as_deref(), names, &min_epochs, &retired, &out),
        AdminCommand::ShowRevocations { list, zone_key } => {
            show_revocations(&list, zone_key.as_deref())
        }
        AdminCommand::AuditVerify {
            path,
            zone_key,
            prev,
            head,
            spool,
        } => {
            let keys = zone_key
                .iter()
                .map(|path| Ok(zonekey::load(path)?.audit_key()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            audit_verify(
                &path,
                &keys,
                prev.as_deref(),
                head.as_deref(),
                spool.as_deref(),
            )
        }
    }
}

/// Prints what the chain walk found: the records, the gaps the server recorded, where
/// the chain went on under another key, the last MAC; exit 1 if a record is not the
/// server's, or a part is under a key that was not given (it could not be checked).
pub fn audit_verify(
    path: &Path,
    keys: &[AuditKey],
    prev: Option<&str>,
    head: Option<&str>,
    spool: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let verdict = verify::verify(path, keys, prev, head)
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
    for (line, key) in &walk.rekeyed {
        println!("key change at line {line}: the chain goes on under key {key} (the server's zone key changed)");
    }
    println!("last: seq {} mac {}", walk.last_seq, walk.last_mac);
    let spool_ok = check_spool(path, spool, &walk)?;
    for (first, last, key) in &walk.unchecked {
        println!("NOT CHECKED: lines {first}-{last} are under key {key}, which was not given: pass the zone key it comes from with another --zone-key");
    }
    match walk.unchecked.is_empty() && spool_ok {
        true => Ok(ExitCode::SUCCESS),
        false => Ok(ExitCode::FAILURE),
    }
}

/// Checks the spool (`spool`, else the one beside the audit file) against the runs the
/// verified records say it holds; prints what it found; false if anything is wrong.
fn check_spool(path: &Path, spool: Option<&Path>, walk: &verify::Walk) -> anyhow::Result<bool> {
    for line in &walk.unspooled {
        println!(
            "unspooled at line {line}: the server could not write that run's output to the spool"
        );
    }
    let spool = spool.map_or_else(|| audit::spool::path_of(path), Path::to_owned);
    let bytes = match std::fs::read(&spool) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && walk.spooled.is_empty() => {
            return Ok(true)
        }
        Err(e) => {
            println!("SPOOL: cannot read {}: {e}", spool.display());
            return Ok(false);
        }
    };
    if bytes.is_empty() && walk.spooled.is_empty() {
        return Ok(true);
    }
    let problems = audit::spool::check(&bytes, &walk.spooled);
    for problem in &problems {
        println!("SPOOL: {problem}");
    }
    if problems.is_empty() {
        println!(
            "spool: the output of {} runs is as printed",
            walk.spooled.len()
        );
    }
    Ok(problems.is_empty())
}

/// `admin spool-output`: a run's output from a spool, each stream where it went.
fn spool_output(spool: &Path, id: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let id = cmdchan_common::protocol::parse_id(id)
        .with_context(|| format!("{id:?} is not a command ID (32 hex digits)"))?;
    let bytes = std::fs::read(spool).with_context(|| format!("reading {}", spool.display()))?;
    let Some(chunks) = audit::spool::output_of(&bytes, &id) else {
        eprintln!("the spool holds no output of run {}", hex::encode(id));
        return Ok(ExitCode::FAILURE);
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for (stream, data) in chunks {
        match stream {
            0 => out.write_all(data)?,
            _ => err.write_all(data)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `admin revoke`: the previous list's entries and these, signed, version + 1.
fn revoke(
    root: &Path,
    from: Option<&Path>,
    names: Vec<Ident>,
    min_epochs: &[String],
    retired: &[String],
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let root = zonekey::load_root(root)?;
    let mut list = match from {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let signed = SignedList::from_text(&text)
                .map_err(|e| anyhow::anyhow!("{} {e}", path.display()))?;
            let key = cmdchan_common::revocation::public_key(&root.revocation_seed())?;
            signed
                .verify(&key)
                .map_err(|e| anyhow::anyhow!("{} {e}", path.display()))?;
            signed.list
        }
        None => RevocationList::default(),
    };
    list.version += 1;
    list.issued_at = time::now();
    list.names.extend(names);
    for text in min_epochs {
        let (name, epoch) = text
            .split_once('=')
            .with_context(|| format!("--min-epoch {text}: NAME=EPOCH"))?;
        let epoch = epoch
            .parse()
            .with_context(|| format!("--min-epoch {text}: the epoch"))?;
        list.min_epochs.push((
            Ident::new(name).with_context(|| format!("--min-epoch {text}"))?,
            epoch,
        ));
    }
    for text in retired {
        let (zone, generation) = text
            .rsplit_once('@')
            .with_context(|| format!("--retire {text}: ZONE@GEN"))?;
        let generation = generation
            .parse()
            .with_context(|| format!("--retire {text}: the generation"))?;
        list.retired.push((
            Ident::new(zone).with_context(|| format!("--retire {text}"))?,
            generation,
        ));
    }
    let signed = list.sign(&root.revocation_seed())?;
    std::fs::write(out, format!("{}\n", signed.to_text()))
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote revocation list version {} to {} ({} names, {} minimum epochs, {} retired generations): push it with cmdchan revocations push {} --on …",
        signed.list.version,
        out.display(),
        signed.list.names.len(),
        signed.list.min_epochs.len(),
        signed.list.retired.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `admin show-revocations`: what a list says, and with a zone key whether it verifies.
fn show_revocations(path: &Path, zone_key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let signed =
        SignedList::from_text(&text).map_err(|e| anyhow::anyhow!("{} {e}", path.display()))?;
    let l = &signed.list;
    println!("version:   {}", l.version);
    println!("issued at: {}", time::rfc3339(l.issued_at));
    let names: Vec<&str> = l.names.iter().map(Ident::as_str).collect();
    println!(
        "revoked:   {}",
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    );
    let epochs: Vec<String> = l
        .min_epochs
        .iter()
        .map(|(n, e)| format!("{n}={e}"))
        .collect();
    println!(
        "epochs:    {}",
        if epochs.is_empty() {
            "-".into()
        } else {
            epochs.join(", ")
        }
    );
    let gens: Vec<String> = l.retired.iter().map(|(z, g)| format!("{z}@{g}")).collect();
    println!(
        "retired:   {}",
        if gens.is_empty() {
            "-".into()
        } else {
            gens.join(", ")
        }
    );
    let Some(zone_key) = zone_key else {
        return Ok(ExitCode::SUCCESS);
    };
    let key = zonekey::load(zone_key)?;
    let Some(public) = key.revocation_key else {
        println!(
            "NOT CHECKED: {} names no revocation key",
            zone_key.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    match signed.verify(&public) {
        Ok(_) => {
            println!("signature: valid for zone {}", key.zone);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("signature: INVALID: the list {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub fn init(path: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let key = RootKey::generate().context("drawing random bytes from OpenSSL")?;
    zonekey::save_root(&key, path, force)?;
    eprintln!(
        "wrote a new root key to {} (mode 0600): keep it on this admin machine; servers get zone keys (admin zone-key)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn zone_key(
    root: &Path,
    zone: &Ident,
    generation: u64,
    out: &Path,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let key = zonekey::load_root(root)?.zone_key(zone, generation);
    zonekey::save(&key, out, force)?;
    eprintln!(
        "wrote the key of zone {zone}, generation {generation}, to {} (mode 0600): install it on the servers of zone {zone} only",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `ZONE[@GEN][:ROLE]` from `--zone`: the zone, its generation (else `generation`) and
/// its role (else `role`). The generation is the digits after the zone's last `@`.
fn zone_entry(text: &str, role: &Ident, generation: u64) -> anyhow::Result<(Ident, u64, Ident)> {
    let (zone, role) = match text.split_once(':') {
        Some((zone, role)) => (
            zone,
            Ident::new(role).with_context(|| format!("--zone {text}: the role"))?,
        ),
        None => (text, role.clone()),
    };
    let (zone, generation) = match zone.rsplit_once('@') {
        Some((name, digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let generation = digits
                .parse()
                .with_context(|| format!("--zone {text}: the generation"))?;
            (name, generation)
        }
        _ => (zone, generation),
    };
    if generation == 0 {
        anyhow::bail!("--zone {text}: generations count from 1");
    }
    Ok((
        Ident::new(zone).with_context(|| format!("--zone {text}: the zone"))?,
        generation,
        role,
    ))
}

pub fn provision(opts: &ProvisionOpts) -> anyhow::Result<ExitCode> {
    let root = zonekey::load_root(&opts.root)?;
    let now = time::now();
    let expires = time::parse_expiry(&opts.expires, now)?;
    if let Some(at) = expires.filter(|&at| at <= now && !opts.expired_ok) {
        anyhow::bail!(
            "--expires {} is in the past ({}): the credential would never work (pass --expired-ok to write it anyway)",
            opts.expires,
            time::rfc3339(at)
        );
    }
    let identity = PskIdentity {
        name: opts.name.clone(),
        epoch: opts.epoch,
    };
    let (mut zones, address) = match opts.update {
        true => {
            let old = Credential::load(&opts.out)
                .with_context(|| format!("--update: reading {}", opts.out.display()))?;
            if old.name != opts.name {
                anyhow::bail!(
                    "--update: {} is {}'s credential, not {}'s",
                    opts.out.display(),
                    old.name,
                    opts.name
                );
            }
            (old.zones, opts.address.clone().or(old.address))
        }
        false => (BTreeMap::new(), opts.address.clone()),
    };
    for text in &opts.zones {
        let (zone, generation, role) = zone_entry(text, &opts.role, opts.generation)?;
        let zone_key = root.zone_key(&zone, generation);
        let grant = Grant {
            role,
            epoch: opts.epoch,
            expires,
            servers: opts.servers.clone(),
        };
        let entry = ZoneEntry {
            generation,
            tag: zone_key.tag_key().sign(&opts.name, &grant),
            psk: zone_key.psk(&identity),
            identity_key: zone_key.identity_key(),
            grant,
        };
        zones.insert(zone, entry);
    }
    let cred = Credential {
        name: opts.name.clone(),
        address,
        zones,
    };
    cred.save(&opts.out, opts.force || opts.update)?;
    let summary: Vec<String> = cred
        .zones
        .iter()
        .map(|(z, e)| format!("{z}@{} as {}", e.generation, e.grant.role))
        .collect();
    eprintln!(
        "wrote credential for {identity} ({}) to {} (mode 0600)",
        summary.join(", "),
        opts.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `IDENTITY:HEXPSK`: an identity sealed once (any nonce opens), for standard tools.
fn psk(
    root: &Path,
    zone: &Ident,
    name: &Ident,
    epoch: u64,
    generation: u64,
) -> anyhow::Result<ExitCode> {
    let zone_key = zonekey::load_root(root)?.zone_key(zone, generation);
    let identity = PskIdentity {
        name: name.clone(),
        epoch,
    };
    let sealed = sealed::seal(&zone_key.identity_key(), zone, generation, &identity);
    println!("{sealed}:{}", zone_key.psk(&identity).to_hex().as_str());
    Ok(ExitCode::SUCCESS)
}

/// Prints a credential without its secrets; with a zone key, checks that zone's entry.
pub fn inspect(path: &Path, zone_key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cred = Credential::load(path)?;
    println!("credential:   {}", path.display());
    println!("name:         {}", cred.name);
    println!(
        "address:      {}",
        cred.address.as_deref().unwrap_or("(none)")
    );
    for (zone, e) in &cred.zones {
        let g = &e.grant;
        println!("zone {zone}:");
        println!("  generation: {}", e.generation);
        println!("  role:       {}", g.role);
        println!("  epoch:      {}", g.epoch);
        println!("  expires:    {}", expiry(g.expires));
        println!("  servers:    {}", servers(g));
    }
    let Some(zone_key) = zone_key else {
        println!("tag:          not checked (pass --zone-key to check a zone's entry)");
        return Ok(ExitCode::SUCCESS);
    };
    let zone_key = zonekey::load(zone_key)?;
    let Some(entry) = cred.zones.get(&zone_key.zone) else {
        println!("zone {}:    NOT in this credential", zone_key.zone);
        return Ok(ExitCode::FAILURE);
    };
    let generation_ok = entry.generation == zone_key.generation;
    let key_ok = generation_ok && zone_key.psk(&cred.identity(entry)).ct_eq(&entry.psk);
    let tag_ok = generation_ok
        && zone_key
            .tag_key()
            .verify(&cred.name, &entry.grant, &entry.tag);
    let said = |ok: bool, good: &str, bad: &str| if ok { good.to_owned() } else { bad.to_owned() };
    println!("zone {} generation {}:", zone_key.zone, zone_key.generation);
    println!(
        "  psk:        {}",
        said(
            key_ok,
            "matches this zone key",
            "DOES NOT match this zone key"
        )
    );
    println!(
        "  tag:        {}",
        said(
            tag_ok,
            "valid",
            "INVALID (edited grant, or another zone key or generation)"
        )
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
        true => "any of the zone".into(),
        false => g
            .servers
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}
