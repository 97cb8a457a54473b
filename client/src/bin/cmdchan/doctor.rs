//! `cmdchan doctor`: checks a credential and the path to a server step by step, and says
//! what is wrong in words an operator can act on.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use cmdchan::{Client, Credential, Error, ErrorCode, Ident, Options, ZoneError};
use cmdchan_common::time;

use crate::exit::Exit;

/// Grants expiring sooner than this get a warning.
const SOON: u64 = 7 * 24 * 3600;

/// `doctor --on`: the checks for each server picked, one after the other under its
/// name; the status of the first that failed (0 if none did).
pub async fn many(
    cred: &Path,
    hosts: &[cmdchan::inventory::Host],
    zone: &Option<Ident>,
    timeout: Duration,
) -> Exit {
    let mut worst = Exit::Ok;
    for host in hosts {
        println!("== {} ({}, from {})", host.name, host.address, host.source);
        let zone = host.zone.clone().or(zone.clone());
        let exit = run(
            cred,
            Some(&host.address),
            zone,
            Some(host.name.clone()),
            timeout,
        )
        .await;
        if worst == Exit::Ok {
            worst = exit;
        }
    }
    worst
}

/// Runs every check in order, printing one line each; stops at the first failure.
pub async fn run(
    cred: &Path,
    server: Option<&str>,
    zone: Option<Ident>,
    target: Option<Ident>,
    timeout: Duration,
) -> Exit {
    let cred = match Credential::load(cred) {
        Ok(cred) => cred,
        Err(e) => {
            return fail(
                Exit::Config,
                &e.to_string(),
                "fix the file, or provision it again with cmdchan-server admin provision",
            )
        }
    };
    for (zone, entry) in &cred.zones {
        ok(&format!(
            "credential of {} for zone {zone} (generation {}, role {}, epoch {}), file mode 0600",
            cred.name, entry.generation, entry.grant.role, entry.grant.epoch
        ));
        if let Some(exit) = check_expiry(entry.grant.expires) {
            return exit;
        }
    }
    let Some(given) = server.map(str::to_owned).or_else(|| cred.address.clone()) else {
        return fail(Exit::Usage, "no server address", "pass --server HOST:PORT");
    };
    let addr = match cmdchan::inventory::address(&given, None) {
        Ok(addr) => addr,
        Err(e) => {
            return fail(
                Exit::Usage,
                &e,
                "give HOST, HOST:PORT or a name of the inventory",
            )
        }
    };
    match addr.to_socket_addrs() {
        Ok(addrs) => ok(&format!(
            "{addr} resolves to {}",
            addrs.map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        )),
        Err(e) => {
            return fail(
                Exit::Unavailable,
                &format!("cannot resolve {addr}: {e}"),
                "check the host name and DNS",
            )
        }
    }
    match cred.zone(zone.as_ref().map(Ident::as_str)) {
        Ok((zone, _)) => ok(&format!("the server is meant to be in zone {zone}")),
        Err(e) => return connect_failed(&addr, &Error::Zone(e)),
    }
    let opts = Options {
        zone,
        target,
        timeout,
        retries: 0,
        ..Options::default()
    };
    let mut client = match Client::connect(cred, Some(&addr), opts).await {
        Ok(client) => client,
        Err(e) => return connect_failed(&addr, &e),
    };
    ok(&format!(
        "TLS-PSK handshake with {addr} (the server knows this key)"
    ));
    match client.call("ping", &[]).await {
        Ok(_) => ok(&format!("ping answered by server {}", client.target())),
        Err(e) => return refused(&e, client.target()),
    }
    client.close().await;
    println!("all checks passed");
    Exit::Ok
}

fn check_expiry(expires: Option<u64>) -> Option<Exit> {
    let now = time::now();
    match expires {
        None => ok("the grant never expires"),
        Some(at) if at <= now => {
            let when = time::rfc3339(at);
            return Some(fail(
                Exit::Auth,
                &format!("the grant expired at {when}"),
                "ask the admin for a new credential",
            ));
        }
        Some(at) if at - now < SOON => {
            warn(&format!("the grant expires soon, at {}", time::rfc3339(at)))
        }
        Some(at) => ok(&format!("the grant is valid until {}", time::rfc3339(at))),
    }
    None
}

fn connect_failed(addr: &str, e: &Error) -> Exit {
    let hint = match e {
        Error::Connect { .. } => "is the server running and listening there? is a firewall or its allowlist in the way?".to_owned(),
        Error::NoTlsReply { .. } => "the host took the connection but no TLS server answered: is the cmdchan server running there and not stopped or overloaded, and is this its port?".to_owned(),
        Error::RefusedBeforeTls { .. } => "the server turned this machine's address away before TLS: check its `allow` list, whether this address is serving a penalty (repeated failed handshakes or refusals; it lifts after penalty_base, doubling), and its connection limits; its log has a line \"connection refused before TLS\" that says which".to_owned(),
        Error::NotTls { .. } => "something other than a TLS server answers there (an SSH or HTTP server?): check the port".to_owned(),
        Error::Handshake { .. } => "either the server does not know this name, or the key differs (another root or zone \
             key generation, another epoch, or a revoked key); the server does not say which, on purpose. On the \
             server, run: cmdchan-server admin inspect THIS-FILE --zone-key ITS-ZONE-KEY, and read its log for \
             this address: it says unknown identity, key mismatch or revoked"
            .to_owned(),
        Error::Zone(ZoneError::Missing(..)) => "ask the admin to provision this credential with --zone for that zone".to_owned(),
        Error::Zone(ZoneError::Unnamed(_)) => "pass --zone ZONE: the zone of the server you mean to reach".to_owned(),
        Error::Zone(ZoneError::Mismatch { .. }) => "this address answers for another zone: check the address (or --zone); a server of another zone is not trusted with this zone's commands".to_owned(),
        _ => format!("reaching {addr} failed"),
    };
    fail(Exit::of(e), &e.to_string(), &hint)
}

fn refused(e: &Error, target: &Ident) -> Exit {
    let hint = match e {
        Error::Refused(f) => match f.code {
            ErrorCode::Stale => {
                "the clocks of this machine and the server differ: fix NTP on both".to_owned()
            }
            ErrorCode::Expired => "ask the admin for a new credential".to_owned(),
            ErrorCode::WrongServer => format!(
                "this request addressed server ID {target}: pass --server-id with the server's ID, \
                 or ask for a credential that covers that server"
            ),
            ErrorCode::BadTag => {
                "the credential's grant was changed after it was issued: provision it again"
                    .to_owned()
            }
            ErrorCode::Revoked => "this key was revoked: ask for a new credential".to_owned(),
            ErrorCode::Forbidden => {
                "this role may not run ping: the server's policy decides".to_owned()
            }
            _ => "see the message".to_owned(),
        },
        _ => "the connection failed after the handshake".to_owned(),
    };
    fail(Exit::of(e), &e.to_string(), &hint)
}

fn ok(line: &str) {
    println!("ok    {line}");
}

fn warn(line: &str) {
    println!("warn  {line}");
}

fn fail(exit: Exit, what: &str, hint: &str) -> Exit {
    println!("FAIL  {what}");
    println!("      what to do: {hint}");
    exit
}
