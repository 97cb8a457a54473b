//! The client credential file: a TOML file, mode 0600, with the grant, its tag and the PSK.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::ident::{Ident, PskIdentity};
use crate::keyfile::{self, KeyFileError};
use crate::keys::Psk;
use crate::protocol::Grant;
use crate::time;

const WHAT: &str = "credential";

/// Everything a client needs to talk to servers: who it is, what it was granted, its tag,
/// its key and, optionally, where its server is. Not `Clone`: the key is not copied.
pub struct Credential {
    pub name: Ident,
    pub grant: Grant,
    pub tag: [u8; 32],
    pub psk: Psk,
    /// Default server address (`host:port`), if the admin recorded one.
    pub address: Option<String>,
}

/// The file's TOML shape. Times are RFC 3339 so a person can read them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialToml {
    name: Ident,
    role: Ident,
    epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default)]
    servers: Vec<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    tag: String,
    psk: String,
}

impl Drop for CredentialToml {
    fn drop(&mut self) {
        self.psk.zeroize();
    }
}

impl Credential {
    /// The TLS-PSK identity this credential's key belongs to.
    pub fn identity(&self) -> PskIdentity {
        PskIdentity {
            name: self.name.clone(),
            epoch: self.grant.epoch,
        }
    }

    /// Reads and checks a credential file (mode, syntax, every field).
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = keyfile::read_private(WHAT, path)?;
        Self::from_toml(&text).map_err(|reason| KeyFileError::Invalid {
            what: WHAT,
            path: path.into(),
            reason,
        })
    }

    /// Writes the credential with mode 0600 (see [`keyfile::write_private`]).
    pub fn save(&self, path: &Path, replace: bool) -> Result<(), KeyFileError> {
        keyfile::write_private(WHAT, path, self.to_toml().as_bytes(), replace)
    }

    /// Parses the TOML text; the error never quotes the text, which holds the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: CredentialToml = toml::from_str(text).map_err(|e| {
            // Line numbers count from 1: the newlines before the error, plus one.
            let line = e.span().map_or(0, |s| {
                let before = text.get(..s.start).unwrap_or(text);
                before.bytes().filter(|&b| b == b'\n').count() + 1
            });
            format!("is not a valid credential (line {line}): {}", e.message())
        })?;
        let expires = match &file.expires {
            None => None,
            Some(t) => Some(
                time::parse_rfc3339(t).ok_or_else(|| format!("has an unreadable expiry {t:?}"))?,
            ),
        };
        let psk = Psk::from_hex(&file.psk).map_err(|e| format!("has a bad psk: it {e}"))?;
        let tag = hex::decode(&file.tag)
            .ok()
            .and_then(|t| <[u8; 32]>::try_from(t).ok());
        let tag = tag.ok_or("has a bad tag: 64 hex digits expected")?;
        let grant = Grant {
            role: file.role.clone(),
            epoch: file.epoch,
            expires,
            servers: file.servers.clone(),
        };
        Ok(Self {
            name: file.name.clone(),
            grant,
            tag,
            psk,
            address: file.address.clone(),
        })
    }

    pub fn to_toml(&self) -> Zeroizing<String> {
        let file = CredentialToml {
            name: self.name.clone(),
            role: self.grant.role.clone(),
            epoch: self.grant.epoch,
            expires: self.grant.expires.map(time::rfc3339),
            servers: self.grant.servers.clone(),
            address: self.address.clone(),
            tag: hex::encode(self.tag),
            psk: self.psk.to_hex().to_string(),
        };
        // Every copy of the text holds the key, so each is wiped when dropped.
        let body = Zeroizing::new(toml::to_string(&file).unwrap_or_default());
        let mut text = Zeroizing::new(String::with_capacity(body.len() + 64));
        text.push_str("# cmdchan client credential: keep it secret (mode 0600)\n");
        text.push_str(&body);
        text
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("grant", &self.grant)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credential {
        let grant = Grant {
            role: Ident::new("operator").expect("valid"),
            epoch: 2,
            expires: Some(1_893_456_000),
            servers: vec![Ident::new("db1").expect("valid")],
        };
        let psk = Psk::from_hex(&"11".repeat(32)).expect("psk");
        let name = Ident::new("alice").expect("valid");
        Credential {
            name,
            grant,
            tag: [9; 32],
            psk,
            address: Some("127.0.0.1:7433".into()),
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let cred = sample();
        let back = Credential::from_toml(&cred.to_toml()).expect("parse");
        assert_eq!(
            (back.name, back.grant, back.tag),
            (cred.name, cred.grant, cred.tag)
        );
        assert!(back.psk.ct_eq(&cred.psk));
        assert_eq!(back.address, cred.address);
    }

    #[test]
    fn parse_errors_and_debug_never_show_the_key() {
        let secret = "11".repeat(32);
        let text = cred_text_with_psk_line(&format!("psk = \"{secret}\" oops"));
        let err = Credential::from_toml(&text).expect_err("bad toml");
        assert!(!err.contains(&secret), "{err}");
        assert!(!format!("{:?}", sample()).contains(&secret));
    }

    #[test]
    fn unknown_fields_and_bad_names_are_refused() {
        let text = format!("{}\nextra = 1\n", sample().to_toml().as_str());
        assert!(Credential::from_toml(&text).is_err());
        let text = sample().to_toml().replace("\"alice\"", "\"al ice\"");
        assert!(Credential::from_toml(&text).is_err());
    }

    fn cred_text_with_psk_line(line: &str) -> String {
        let text = sample().to_toml();
        text.lines()
            .map(|l| if l.starts_with("psk") { line } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
