//! Which client keys are revoked: whole names, and key epochs below a minimum per name.
//! One check, used by the TLS handshake, by admission, and when a reload closes the
//! connections of clients it revoked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cmdchan_common::ident::{Ident, PskIdentity};

#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Lowest key epoch still accepted, per client name; names not listed: 0.
    pub min_epoch: BTreeMap<Ident, u64>,
    /// Client names refused whatever their epoch.
    pub names: BTreeSet<Ident>,
}

/// Why a key is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Name,
    Epoch { epoch: u64, min: u64 },
}

impl Revocations {
    pub fn check(&self, id: &PskIdentity) -> Result<(), Revoked> {
        if self.names.contains(&id.name) {
            return Err(Revoked::Name);
        }
        let min = self.min_epoch.get(&id.name).copied().unwrap_or(0);
        match id.epoch < min {
            true => Err(Revoked::Epoch {
                epoch: id.epoch,
                min,
            }),
            false => Ok(()),
        }
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
