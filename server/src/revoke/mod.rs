//! Which client keys are revoked: whole names, and key epochs below a minimum per name,
//! from the configuration and from the signed revocation list the server keeps
//! (`kept`), which also retires zone key generations. One check, used by the TLS
//! handshake, by admission, and when a reload or a newer list closes the connections of
//! clients it revoked.

pub mod kept;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::revocation::{RevocationList, SignedList};

#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Lowest key epoch still accepted, per client name; names not listed: 0.
    pub min_epoch: BTreeMap<Ident, u64>,
    /// Client names refused whatever their epoch.
    pub names: BTreeSet<Ident>,
    /// The signed list in force, if the server keeps one.
    pub list: Option<Arc<SignedList>>,
}

/// Why a key is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Name,
    Epoch { epoch: u64, min: u64 },
}

impl Revocations {
    pub fn check(&self, id: &PskIdentity) -> Result<(), Revoked> {
        let list = list_of(&self.list);
        let listed = list.is_some_and(|l| l.names.binary_search(&id.name).is_ok());
        if listed || self.names.contains(&id.name) {
            return Err(Revoked::Name);
        }
        let listed_min = list
            .and_then(|l| {
                let at = l
                    .min_epochs
                    .binary_search_by(|(name, _)| name.cmp(&id.name))
                    .ok()?;
                Some(l.min_epochs[at].1)
            })
            .unwrap_or(0);
        let min = self
            .min_epoch
            .get(&id.name)
            .copied()
            .unwrap_or(0)
            .max(listed_min);
        match id.epoch < min {
            true => Err(Revoked::Epoch {
                epoch: id.epoch,
                min,
            }),
            false => Ok(()),
        }
    }
}

impl Revocations {
    /// Whether the signed list retires generation `generation` of zone `zone`'s key.
    pub fn retired(&self, zone: &Ident, generation: u64) -> bool {
        list_of(&self.list)
            .is_some_and(|l| l.retired.binary_search(&(zone.clone(), generation)).is_ok())
    }
}

/// The reason for a log line, naming the client: `id` and why it is revoked.
#[derive(Debug)]
pub struct Reason<'a>(pub &'a PskIdentity, pub Revoked);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Revoked::Name => write!(f, "client {} is revoked", self.0.name),
            Revoked::Epoch { epoch, min } => write!(
                f,
                "key epoch {epoch} of {} is revoked (minimum {min})",
                self.0.name
            ),
        }
    }
}

/// The list itself, for the checks.
fn list_of(signed: &Option<Arc<SignedList>>) -> Option<&RevocationList> {
    signed.as_deref().map(|s| &s.list)
}
