//! `cmdchan approval …`: the two-person rule without an approval server. The requester
//! prepares the exact request as a file, approvers review and co-sign it with their own
//! credentials, and the requester runs it with `cmdchan --approval FILE`. Nothing here
//! contacts a server.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use cmdchan::approval::{ApprovalFile, Prepared};
use cmdchan::{Credential, Ident, Param};

use crate::fleet::{self, FleetArgs};

#[derive(Debug, Clone, Subcommand)]
pub enum ApprovalCmd {
    /// Prepare COMMAND (with its arguments, --arg and --detach) on the servers --server
    /// or --on names as a request for approval, written to FILE (mode 0600). No server
    /// is contacted.
    Request {
        /// Where to write the request.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How long the approval stays valid; a request not run by then must be
        /// prepared and approved again.
        #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
        expires_in: Duration,
        command: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show a request and who approved it, in plain words.
    Show { file: PathBuf },
    /// Approve the request in FILE with this credential (--cred): it is shown and you
    /// are asked to confirm, on a terminal; without one, only with --yes.
    Sign {
        file: PathBuf,
        /// Sign without asking (after reading it with `cmdchan approval show FILE`).
        #[arg(long)]
        yes: bool,
    },
}

/// What `request` needs from the command line around it.
pub struct Context<'a> {
    pub cred: Option<&'a PathBuf>,
    pub zone: Option<Ident>,
    pub server_id: Option<Ident>,
    pub server: Option<&'a str>,
    pub fleet: &'a FleetArgs,
    pub params: &'a [Param],
    pub detach: bool,
}

impl ApprovalCmd {
    /// Does it; the error is a sentence for the operator.
    pub fn run(&self, cx: Context<'_>) -> Result<String, String> {
        match self {
            ApprovalCmd::Show { file } => Ok(load(file)?.describe()),
            ApprovalCmd::Request {
                out,
                expires_in,
                command,
                args,
            } => {
                let cred = credential(cx.cred)?;
                let (servers, zone) = servers(&cx, &cred)?;
                let expires = cmdchan_common::time::now().saturating_add(expires_in.as_secs());
                let prepared = Prepared {
                    zone,
                    command: command.clone(),
                    args: args.clone(),
                    params: cx.params.to_vec(),
                    detach: cx.detach,
                    servers,
                    expires,
                };
                let file = ApprovalFile::prepare(&cred, prepared).map_err(|e| e.to_string())?;
                file.save(out).map_err(|e| e.to_string())?;
                Ok(format!(
                    "{}wrote {}: have it approved with `cmdchan approval sign {}`, then run it with `cmdchan --approval {}`\n",
                    file.describe(),
                    out.display(),
                    out.display(),
                    out.display()
                ))
            }
            ApprovalCmd::Sign { file: path, yes } => {
                let cred = credential(cx.cred)?;
                let mut file = load(path)?;
                let shown = file.describe();
                if !yes {
                    if !std::io::stdin().is_terminal() {
                        return Err("approval sign asks before it signs, and there is no terminal to ask on: read the request with `cmdchan approval show FILE`, then sign with --yes".into());
                    }
                    if !confirm(&shown, &cred.name)? {
                        return Err("not signed".into());
                    }
                }
                file.sign(&cred, cmdchan_common::time::now())
                    .map_err(|e| e.to_string())?;
                file.save(path).map_err(|e| e.to_string())?;
                Ok(format!(
                    "{}signed by {} in {}\n",
                    file.describe(),
                    cred.name,
                    path.display()
                ))
            }
        }
    }
}

pub fn load(path: &std::path::Path) -> Result<ApprovalFile, String> {
    ApprovalFile::load(path).map_err(|e| e.to_string())
}

fn credential(path: Option<&PathBuf>) -> Result<Credential, String> {
    let path = path.ok_or("no credential: pass --cred FILE or set CMDCHAN_CRED")?;
    Credential::load(path).map_err(|e| e.to_string())
}

/// The servers the request is for, and their zone: `--on`'s from the inventory (all of
/// one zone), or `--server`'s.
fn servers(cx: &Context<'_>, cred: &Credential) -> Result<(Vec<Ident>, Ident), String> {
    let (servers, zones): (Vec<Ident>, Vec<Option<Ident>>) = if !cx.fleet.on.is_empty() {
        fleet::select(cx.fleet)?
            .into_iter()
            .map(|h| (h.name, h.zone))
            .unzip()
    } else {
        let id = match (&cx.server_id, cx.server) {
            (Some(id), _) => id.clone(),
            (None, Some(server)) => Ident::new(server)
                .map_err(|_| format!("{server:?} is not a server ID: pass --server-id ID"))?,
            (None, None) => {
                return Err(
                    "name the servers the request is for: --server NAME or --on SELECTOR".into(),
                )
            }
        };
        (vec![id], vec![None])
    };
    let mut named: Vec<Ident> = zones.into_iter().flatten().collect();
    named.extend(cx.zone.clone());
    named.sort();
    named.dedup();
    let zone = match named.as_slice() {
        [one] => one.clone(),
        [] => cred
            .zone(None)
            .map(|(z, _)| z.clone())
            .map_err(|e| e.to_string())?,
        many => {
            let names: Vec<&str> = many.iter().map(Ident::as_str).collect();
            return Err(format!(
                "an approval is for one zone, and these servers are in {}: prepare one per zone",
                names.join(", ")
            ));
        }
    };
    Ok((servers, zone))
}

/// Shows the request on the terminal and asks before signing.
fn confirm(shown: &str, name: &Ident) -> Result<bool, String> {
    let mut err = std::io::stderr();
    // Every value in it is escaped (see `ApprovalFile::describe`).
    let question = format!("{shown}approve it as {name}? [y/N] ");
    let _ = err.write_all(question.as_bytes());
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
