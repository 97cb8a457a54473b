//! The client credential file: a TOML file, mode 0600, with an entry per zone the client
//! may reach (its grant, tag, PSK and the zone's identity key), under one name.
//!
//! ```toml
//! name = "alice"
//! address = "db1.example:7433"        # optional: the default server
//! [zones.prod]
//! generation = 1                      # of the zone key the entry was made from
//! role = "operator"
//! epoch = 0
//! expires = "2030-01-01T00:00:00Z"    # optional
//! servers = ["db1"]                   # empty: any server of the zone
//! tag = "HEX"
//! psk = "HEX"
//! identity_key = "HEX"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::ident::{Ident, PskIdentity};
use crate::keyfile::{self, KeyFileError};
use crate::keys::{IdentityKey, Psk};
use crate::protocol::Grant;
use crate::time;

const WHAT: &str = "credential";

/// Everything a client needs to talk to servers: who it is and, per zone, what it was
/// granted, its tag, its key and the zone's identity key. Not `Clone`: keys are not
/// copied.
pub struct Credential {
    pub name: Ident,
    /// Default server address (`host:port`), if the admin recorded one.
    pub address: Option<String>,
    pub zones: BTreeMap<Ident, ZoneEntry>,
}

/// What a client holds for one zone.
pub struct ZoneEntry {
    pub generation: u64,
    pub grant: Grant,
    pub tag: [u8; 32],
    pub psk: Psk,
    pub identity_key: IdentityKey,
}

/// Why a credential has no entry to use with a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("this credential has no key for zone {0} (it holds {1}); ask for a credential that covers it")]
    Missing(String, String),
    #[error("this credential holds keys for several zones ({0}): say which zone the server is in (--zone, or the inventory's zone)")]
    Unnamed(String),
    /// The server named another zone than the one the client meant to reach: a server
    /// of that zone must not see this one's commands, so nothing was sent.
    #[error("the server names zone {named}, but zone {meant} was meant; nothing was sent (a server of one zone must not see another zone's commands)")]
    Mismatch { named: String, meant: String },
}

/// The file's TOML shape. Times are RFC 3339 so a person can read them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialToml {
    name: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    zones: BTreeMap<Ident, EntryToml>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryToml {
    generation: u64,
    role: Ident,
    epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default)]
    servers: Vec<Ident>,
    tag: String,
    psk: String,
    identity_key: String,
}

impl Drop for EntryToml {
    fn drop(&mut self) {
        self.psk.zeroize();
        self.identity_key.zeroize();
    }
}

impl Credential {
    /// The zone a client means to reach and its entry: the zone named (`--zone`, an
    /// inventory's zone), else the credential's only one. A credential of several zones
    /// never guesses: the server's own word for its zone is checked against this one,
    /// never used to choose it.
    pub fn zone(&self, meant: Option<&str>) -> Result<(&Ident, &ZoneEntry), ZoneError> {
        let held = || {
            self.zones
                .keys()
                .map(Ident::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match meant {
            Some(zone) => self
                .zones
                .iter()
                .find(|(z, _)| z.as_str() == zone)
                .ok_or_else(|| ZoneError::Missing(zone.to_owned(), held())),
            None if self.zones.len() == 1 => self
                .zones
                .iter()
                .next()
                .ok_or_else(|| ZoneError::Unnamed(held())),
            None => Err(ZoneError::Unnamed(held())),
        }
    }

    /// The PSK identity one zone's entry names (before it is sealed).
    pub fn identity(&self, entry: &ZoneEntry) -> PskIdentity {
        PskIdentity {
            name: self.name.clone(),
            epoch: entry.grant.epoch,
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

    /// Parses the TOML text; the error never quotes the text, which holds the keys.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: CredentialToml = toml::from_str(text).map_err(|e| {
            // Line numbers count from 1: the newlines before the error, plus one.
            let line = e.span().map_or(0, |s| {
                let before = text.get(..s.start).unwrap_or(text);
                before.bytes().filter(|&b| b == b'\n').count() + 1
            });
            format!("is not a valid credential (line {line}): {}", e.message())
        })?;
        if file.zones.is_empty() {
            return Err("holds no zone: provision it with at least one --zone".into());
        }
        let mut zones = BTreeMap::new();
        for (zone, entry) in &file.zones {
            let parsed = parse_entry(entry).map_err(|why| format!("zone {zone}: {why}"))?;
            zones.insert(zone.clone(), parsed);
        }
        Ok(Self {
            name: file.name.clone(),
            address: file.address.clone(),
            zones,
        })
    }

    pub fn to_toml(&self) -> Zeroizing<String> {
        let zones = self
            .zones
            .iter()
            .map(|(zone, e)| {
                let entry = EntryToml {
                    generation: e.generation,
                    role: e.grant.role.clone(),
                    epoch: e.grant.epoch,
                    expires: e.grant.expires.map(time::rfc3339),
                    servers: e.grant.servers.clone(),
                    tag: hex::encode(e.tag),
                    psk: e.psk.to_hex().to_string(),
                    identity_key: e.identity_key.to_hex().to_string(),
                };
                (zone.clone(), entry)
            })
            .collect();
        let file = CredentialToml {
            name: self.name.clone(),
            address: self.address.clone(),
            zones,
        };
        // Every copy of the text holds the keys, so each is wiped when dropped.
        let body = Zeroizing::new(toml::to_string(&file).unwrap_or_default());
        let mut text = Zeroizing::new(String::with_capacity(body.len() + 64));
        text.push_str("# cmdchan client credential: keep it secret (mode 0600)\n");
        text.push_str(&body);
        text
    }
}

fn parse_entry(e: &EntryToml) -> Result<ZoneEntry, String> {
    let expires = match &e.expires {
        None => None,
        Some(t) => {
            Some(time::parse_rfc3339(t).ok_or_else(|| format!("has an unreadable expiry {t:?}"))?)
        }
    };
    let psk = Psk::from_hex(&e.psk).map_err(|err| format!("has a bad psk: it {err}"))?;
    let identity_key = IdentityKey::from_hex(&e.identity_key)
        .map_err(|err| format!("has a bad identity_key: it {err}"))?;
    let tag = hex::decode(&e.tag)
        .ok()
        .and_then(|t| <[u8; 32]>::try_from(t).ok())
        .ok_or("has a bad tag: 64 hex digits expected")?;
    let grant = Grant {
        role: e.role.clone(),
        epoch: e.epoch,
        expires,
        servers: e.servers.clone(),
    };
    Ok(ZoneEntry {
        generation: e.generation,
        grant,
        tag,
        psk,
        identity_key,
    })
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zones: BTreeMap<&Ident, &Grant> =
            self.zones.iter().map(|(z, e)| (z, &e.grant)).collect();
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("zones", &zones)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ZoneEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneEntry")
            .field("generation", &self.generation)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(role: &str, byte: &str) -> ZoneEntry {
        ZoneEntry {
            generation: 1,
            grant: Grant {
                role: Ident::new(role).expect("valid"),
                epoch: 2,
                expires: Some(1_893_456_000),
                servers: vec![Ident::new("db1").expect("valid")],
            },
            tag: [9; 32],
            psk: Psk::from_hex(&byte.repeat(32)).expect("psk"),
            identity_key: IdentityKey::from_hex(&"22".repeat(32)).expect("key"),
        }
    }

    fn sample() -> Credential {
        let mut zones = BTreeMap::new();
        zones.insert(Ident::new("prod").expect("valid"), entry("operator", "11"));
        zones.insert(Ident::new("staging").expect("valid"), entry("admin", "33"));
        Credential {
            name: Ident::new("alice").expect("valid"),
            address: Some("127.0.0.1:7433".into()),
            zones,
        }
    }

    #[test]
    fn round_trips_through_toml_with_a_role_per_zone() {
        let cred = sample();
        let back = Credential::from_toml(&cred.to_toml()).expect("parse");
        assert_eq!(
            (back.name.as_str(), back.address.as_deref()),
            ("alice", Some("127.0.0.1:7433"))
        );
        for (zone, e) in &cred.zones {
            let b = &back.zones[zone];
            assert_eq!(
                (&b.grant, b.tag, b.generation),
                (&e.grant, e.tag, e.generation)
            );
            assert!(b.psk.ct_eq(&e.psk));
        }
    }

    #[test]
    fn the_meant_zone_picks_the_entry_and_several_zones_never_guess() {
        let cred = sample();
        let (_, staging) = cred.zone(Some("staging")).expect("held");
        assert_eq!(staging.grant.role.as_str(), "admin");
        assert_eq!(
            cred.zone(Some("qa")).err(),
            Some(ZoneError::Missing("qa".into(), "prod, staging".into()))
        );
        assert!(matches!(cred.zone(None), Err(ZoneError::Unnamed(_))));
        let mut single = sample();
        single.zones.retain(|z, _| z.as_str() == "prod");
        assert!(single.zone(None).is_ok(), "a single zone needs no name");
    }

    #[test]
    fn parse_errors_and_debug_never_show_a_key() {
        let secret = "11".repeat(32);
        let text = sample().to_toml().replace(
            &format!("psk = \"{secret}\""),
            &format!("psk = \"{secret}\" oops"),
        );
        let err = Credential::from_toml(&text).expect_err("bad toml");
        assert!(!err.contains(&secret), "{err}");
        assert!(!format!("{:?}", sample()).contains(&secret));
        assert!(!format!("{:?}", sample()).contains(&"22".repeat(32)));
    }

    #[test]
    fn unknown_fields_bad_names_and_no_zone_are_refused() {
        let text = format!("{}\nextra = 1\n", sample().to_toml().as_str());
        assert!(Credential::from_toml(&text).is_err());
        let text = sample().to_toml().replace("\"alice\"", "\"al ice\"");
        assert!(Credential::from_toml(&text).is_err());
        assert!(Credential::from_toml("name = \"a\"\n[zones]\n").is_err());
    }
}
