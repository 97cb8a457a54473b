//! The approval file: one exact request prepared by its requester, reviewed and
//! co-signed by approvers, then run with the approvals attached (PROTOCOL.md §5.8).
//! No server is contacted until the run.
//!
//! The file is TOML, mode 0600 (it holds the request's values, secret ones included):
//!
//! ```toml
//! zone = "web"
//! requester = "alice"
//! command = "restart-service"
//! args = ["nginx"]
//! params = [{ name = "now", value = "true" }]
//! detach = false
//! servers = ["web01", "web02"]
//! id = "32 hex digits"
//! expires = "2030-01-01T00:00:00Z"
//! [[approvals]]
//! name = "bob"
//! generation = 1
//! role = "lead"
//! epoch = 0
//! grant_expires = "…"        # optional
//! grant_servers = []
//! grant_tag = "64 hex digits"
//! tag = "64 hex digits"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use cmdchan_common::approval::{Approval, ApprovalKey, Approved, Approver};
use cmdchan_common::credential::Credential;
use cmdchan_common::ident::Ident;
use cmdchan_common::protocol::{CommandId, Grant, Param, Request};
use cmdchan_common::time;

/// The longest an approval may be valid (servers refuse longer ones).
const MAX_LIFETIME: u64 = 7 * 24 * 3600;

/// Largest approval file read: a request and its approvers fit in far less.
const MAX_FILE: u64 = 1 << 20;

/// Why an approval file cannot be made, read, signed or used.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Write(cmdchan_common::keyfile::KeyFileError),
    #[error("{path} is not an approval file: {why}")]
    Bad { path: String, why: String },
    #[error("{0}")]
    Refused(String),
}

/// A prepared request and the approvals it has gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalFile {
    pub zone: Ident,
    pub requester: Ident,
    pub command: String,
    pub args: Vec<String>,
    pub params: Vec<Param>,
    pub detach: bool,
    pub servers: Vec<Ident>,
    pub id: CommandId,
    /// Unix second from which the approval is void.
    pub expires: u64,
    pub approvals: Vec<Approver>,
}

/// The request a requester prepares.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub zone: Ident,
    pub command: String,
    pub args: Vec<String>,
    pub params: Vec<Param>,
    pub detach: bool,
    pub servers: Vec<Ident>,
    pub expires: u64,
}

impl ApprovalFile {
    /// A new request of `cred`'s holder, with a fresh command ID and no approvals yet.
    pub fn prepare(cred: &Credential, p: Prepared) -> Result<Self, ApprovalError> {
        cred.zone(Some(p.zone.as_str()))
            .map_err(|e| ApprovalError::Refused(e.to_string()))?;
        if p.servers.is_empty() {
            return Err(ApprovalError::Refused(
                "an approval names the servers it is for: give --server or --on".into(),
            ));
        }
        if p.expires > time::now().saturating_add(MAX_LIFETIME) {
            return Err(ApprovalError::Refused(
                "an approval is valid for 7 days at most (servers refuse a longer one)".into(),
            ));
        }
        let mut id = [0u8; 16];
        openssl::rand::rand_bytes(&mut id).map_err(|e| ApprovalError::Refused(e.to_string()))?;
        Ok(Self {
            zone: p.zone,
            requester: cred.name.clone(),
            command: p.command,
            args: p.args,
            params: p.params,
            detach: p.detach,
            servers: p.servers,
            id,
            expires: p.expires,
            approvals: Vec::new(),
        })
    }

    fn approved(&self) -> Approved<'_> {
        Approved {
            zone: &self.zone,
            requester: &self.requester,
            id: &self.id,
            command: &self.command,
            args: &self.args,
            params: &self.params,
            detach: self.detach,
            servers: &self.servers,
            expires: self.expires,
        }
    }

    /// Co-signs the request with `cred`, the approver's credential; signing again
    /// replaces the approver's earlier signature.
    pub fn sign(&mut self, cred: &Credential, now: u64) -> Result<(), ApprovalError> {
        if cred.name == self.requester {
            return Err(ApprovalError::Refused(format!(
                "{} prepared this request and cannot approve it: approvals come from other people",
                cred.name
            )));
        }
        if now >= self.expires {
            return Err(ApprovalError::Refused(format!(
                "this request's approval expired at {}; prepare it again",
                time::rfc3339(self.expires)
            )));
        }
        let (_, entry) = cred
            .zone(Some(self.zone.as_str()))
            .map_err(|e| ApprovalError::Refused(e.to_string()))?;
        let key = ApprovalKey::new(&entry.psk, &self.zone, &cred.name);
        let approver = Approver {
            name: cred.name.clone(),
            generation: entry.generation,
            grant: entry.grant.clone(),
            grant_tag: entry.tag,
            tag: key.sign(&self.approved(), &cred.name),
        };
        self.approvals.retain(|a| a.name != cred.name);
        self.approvals.push(approver);
        Ok(())
    }

    /// What goes in the request.
    pub fn approval(&self) -> Approval {
        Approval {
            servers: self.servers.clone(),
            expires: self.expires,
            approvers: self.approvals.clone(),
        }
    }

    /// Whether `name` may run it: only its requester can.
    pub fn runnable_by(&self, name: &Ident) -> Result<(), ApprovalError> {
        match *name == self.requester {
            true => Ok(()),
            false => Err(ApprovalError::Refused(format!(
                "this request was prepared by {}; only they can run it (this credential is {name})",
                self.requester
            ))),
        }
    }

    /// Sets `request`'s ID, command, arguments, job flag and approvals to the approved
    /// ones.
    pub fn apply(&self, request: &mut Request) {
        request.id = self.id;
        request.command = self.command.clone();
        request.args = self.args.clone();
        request.params = self.params.clone();
        request.detach = self.detach;
        request.approval = Some(self.approval());
    }

    /// The request and its approvals in plain words, for a person to review. Every
    /// value is shown quoted and escaped (see [`shown`]): the file may come from anyone.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} asks to run, in zone {}:\n  {}",
            self.requester,
            self.zone,
            shown(&self.command)
        );
        for a in &self.args {
            out.push(' ');
            out.push_str(&shown(a));
        }
        for p in &self.params {
            out.push_str(&format!(" --arg {}={}", shown(&p.name), shown(&p.value)));
        }
        out.push('\n');
        if self.detach {
            out.push_str("  as a job (it runs on after the client leaves)\n");
        }
        let servers: Vec<&str> = self.servers.iter().map(Ident::as_str).collect();
        out.push_str(&format!(
            "on {} server{}: {}\ncommand ID {}; the approval expires at {}\n",
            servers.len(),
            if servers.len() == 1 { "" } else { "s" },
            servers.join(", "),
            hex::encode(self.id),
            time::rfc3339(self.expires)
        ));
        match self.approvals.len() {
            0 => out.push_str("approvals: none yet\n"),
            // Only a server can check them; here they are what the file says.
            _ => {
                let by: Vec<String> = self
                    .approvals
                    .iter()
                    .map(|a| format!("{} (role {})", a.name, a.grant.role))
                    .collect();
                out.push_str(&format!(
                    "approvals the file carries (not checked here; every server checks them): {}\n",
                    by.join(", ")
                ));
            }
        }
        out
    }

    pub fn load(path: &Path) -> Result<Self, ApprovalError> {
        let shown = path.display().to_string();
        let text = read_bounded(path).map_err(|source| ApprovalError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|why| ApprovalError::Bad { path: shown, why })
    }

    /// Reads the file's text; an error says which field is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: FileToml = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        file.check()
    }

    /// Writes the file (mode 0600, replaced whole: a reader never sees half of it).
    pub fn save(&self, path: &Path) -> Result<(), ApprovalError> {
        let text = self.to_text();
        cmdchan_common::keyfile::write_private("approval file", path, text.as_bytes(), true)
            .map_err(ApprovalError::Write)
    }

    pub fn to_text(&self) -> String {
        let file = FileToml {
            zone: self.zone.clone(),
            requester: self.requester.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            params: self
                .params
                .iter()
                .map(|p| ParamToml {
                    name: p.name.clone(),
                    value: p.value.clone(),
                })
                .collect(),
            detach: self.detach,
            servers: self.servers.clone(),
            id: hex::encode(self.id),
            expires: time::rfc3339(self.expires),
            approvals: self.approvals.iter().map(ApproverToml::of).collect(),
        };
        let body = toml::to_string(&file).unwrap_or_default();
        format!(
            "# A cmdchan request awaiting approval: review it with `cmdchan approval show FILE`,\n\
             # sign it with `cmdchan approval sign FILE`, run it with `cmdchan --approval FILE`.\n{body}"
        )
    }
}

/// A value as a reviewer must see it: quoted, its control characters escaped, and so
/// are the marks that reorder or hide text on screen (bidirectional overrides and
/// isolates, zero-width characters), so that what an approver reads is what runs.
pub fn shown(value: &str) -> String {
    format!("{value:?}")
        .chars()
        .map(|c| match c {
            '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}' => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    zone: Ident,
    requester: Ident,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    params: Vec<ParamToml>,
    #[serde(default)]
    detach: bool,
    servers: Vec<Ident>,
    id: String,
    expires: String,
    #[serde(default)]
    approvals: Vec<ApproverToml>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamToml {
    name: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproverToml {
    name: Ident,
    generation: u64,
    role: Ident,
    epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant_expires: Option<String>,
    #[serde(default)]
    grant_servers: Vec<Ident>,
    grant_tag: String,
    tag: String,
}

impl ApproverToml {
    fn of(a: &Approver) -> Self {
        Self {
            name: a.name.clone(),
            generation: a.generation,
            role: a.grant.role.clone(),
            epoch: a.grant.epoch,
            grant_expires: a.grant.expires.map(time::rfc3339),
            grant_servers: a.grant.servers.clone(),
            grant_tag: hex::encode(a.grant_tag),
            tag: hex::encode(a.tag),
        }
    }

    fn check(self) -> Result<Approver, String> {
        let name = &self.name;
        let expires = self
            .grant_expires
            .map(|t| {
                time::parse_rfc3339(&t).ok_or(format!(
                    "approval by {name}: grant_expires {t:?} is not RFC 3339"
                ))
            })
            .transpose()?;
        Ok(Approver {
            grant_tag: hex32(&self.grant_tag).ok_or(format!(
                "approval by {name}: grant_tag is not 64 hex digits"
            ))?,
            tag: hex32(&self.tag).ok_or(format!("approval by {name}: tag is not 64 hex digits"))?,
            grant: Grant {
                role: self.role,
                epoch: self.epoch,
                expires,
                servers: self.grant_servers,
            },
            generation: self.generation,
            name: self.name,
        })
    }
}

impl FileToml {
    fn check(self) -> Result<ApprovalFile, String> {
        let id = hex::decode(&self.id)
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or("id is not 32 hex digits")?;
        let expires = time::parse_rfc3339(&self.expires)
            .ok_or(format!("expires {:?} is not RFC 3339", self.expires))?;
        if self.servers.is_empty() {
            return Err("servers is empty: an approval names the servers it is for".into());
        }
        Ok(ApprovalFile {
            zone: self.zone,
            requester: self.requester,
            command: self.command,
            args: self.args,
            params: self
                .params
                .into_iter()
                .map(|p| Param {
                    name: p.name,
                    value: p.value,
                })
                .collect(),
            detach: self.detach,
            servers: self.servers,
            id,
            expires,
            approvals: self
                .approvals
                .into_iter()
                .map(ApproverToml::check)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok().and_then(|b| b.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::shown;

    /// "Trojan source" in a request: a right-to-left override makes `rm -rf /tmp/x`
    /// look like something else on screen. The reviewer sees the mark, not its effect.
    #[test]
    fn a_direction_override_in_a_request_is_shown_not_obeyed() {
        let value = "/tmp/\u{202e}x\u{202c}\u{200b}\u{1b}[2J";
        let seen = shown(value);
        assert_eq!(seen, "\"/tmp/\\u{202e}x\\u{202c}\\u{200b}\\u{1b}[2J\"");
        assert!(!seen
            .chars()
            .any(|c| c.is_control() || ('\u{2000}'..='\u{206f}').contains(&c)));
    }
}
