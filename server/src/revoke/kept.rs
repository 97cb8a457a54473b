//! The signed revocation list this server keeps: the newest it was given (by any client,
//! `revocations.push`), checked against the revocation key its zone key file names,
//! written to a file (synced, then renamed over the old one) before it is applied, read
//! back and checked again at start. An older list, or one of the same version, is
//! refused: a list's version only increases.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cmdchan_common::protocol::ListState;
use cmdchan_common::revocation::{ListError, SignedList};
use cmdchan_common::sync;

use crate::admit::Refusal;

/// The list a server keeps.
#[derive(Debug)]
pub struct Kept {
    /// The public key lists are signed with, from the zone key file.
    key: Option<[u8; 32]>,
    path: PathBuf,
    current: Mutex<Option<Arc<SignedList>>>,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A newer list, kept and now to be applied.
    Applied(Arc<SignedList>),
    /// The same list the server keeps: nothing changes.
    Already,
}

impl Kept {
    /// The list kept at `path`, if there is one; a kept list that does not verify under
    /// `key` (or with no key to check it) stops the server: it would otherwise start
    /// without revocations it was given.
    pub fn open(path: &Path, key: Option<[u8; 32]>) -> anyhow::Result<Self> {
        let current = match std::fs::read_to_string(path) {
            Ok(text) => {
                let signed = SignedList::from_text(&text)
                    .map_err(|e| anyhow::anyhow!("the revocation list {} {e}", path.display()))?;
                let key = key.ok_or_else(|| {
                    anyhow::anyhow!(
                        "a revocation list is kept at {}, but the zone key file names no revocation key to check it with: re-issue the zone key file",
                        path.display()
                    )
                })?;
                signed
                    .verify(&key)
                    .map_err(|e| anyhow::anyhow!("the revocation list {} {e}", path.display()))?;
                Some(Arc::new(signed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("reading the revocation list {}: {e}", path.display()),
        };
        Ok(Self {
            key,
            path: path.into(),
            current: Mutex::new(current),
        })
    }

    /// The list in force, if any.
    pub fn list(&self) -> Option<Arc<SignedList>> {
        sync::lock(&self.current).clone()
    }

    /// Its version (0: none).
    pub fn version(&self) -> u64 {
        self.list().map_or(0, |s| s.list.version)
    }

    /// The state a client is told.
    pub fn state(&self, applied: bool) -> ListState {
        let list = self.list();
        ListState {
            version: list.as_ref().map_or(0, |s| s.list.version),
            issued_at: list.as_ref().map_or(0, |s| s.list.issued_at),
            applied,
        }
    }

    /// Takes the list in `text` if it verifies and is newer than the one kept: written
    /// durably first, then in force.
    pub fn push(&self, text: &str) -> Result<Pushed, Refusal> {
        let key = self.key.ok_or(Refusal::NoRevocationKey)?;
        let signed = SignedList::from_text(text).map_err(|e| match e {
            ListError::BadSignature => Refusal::BadSignature(e.to_string()),
            other => Refusal::BadArguments(format!("the revocation list {other}")),
        })?;
        signed
            .verify(&key)
            .map_err(|e| Refusal::BadSignature(e.to_string()))?;
        let mut current = sync::lock(&self.current);
        let kept = current.as_ref().map_or(0, |s| s.list.version);
        if current.as_deref() == Some(&signed) {
            return Ok(Pushed::Already);
        }
        if signed.list.version <= kept {
            return Err(Refusal::OutdatedList {
                offered: signed.list.version,
                kept,
            });
        }
        write_durably(&self.path, signed.to_text().as_bytes())
            .map_err(|e| Refusal::ListNotKept(e.to_string()))?;
        let signed = Arc::new(signed);
        *current = Some(Arc::clone(&signed));
        Ok(Pushed::Applied(signed))
    }
}

/// Writes `bytes` to a new file beside `path`, syncs it, renames it over `path` and syncs
/// the directory: a crash leaves the old list or the new one, never half of either.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmdchan_common::ident::Ident;
    use cmdchan_common::revocation::RevocationList;

    fn signed(version: u64, names: &[&str], seed: &[u8; 32]) -> String {
        let list = RevocationList {
            version,
            issued_at: 1_000 + version,
            names: names
                .iter()
                .map(|n| Ident::new(*n).expect("valid"))
                .collect(),
            ..RevocationList::default()
        };
        list.sign(seed).expect("signs").to_text()
    }

    #[test]
    fn only_a_newer_list_signed_by_the_key_is_kept_and_it_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revocations");
        let seed = [3u8; 32];
        let key = cmdchan_common::revocation::public_key(&seed).expect("key");
        let kept = Kept::open(&path, Some(key)).expect("opens");
        assert_eq!(kept.version(), 0);
        assert!(matches!(
            kept.push(&signed(2, &["mallory"], &seed)),
            Ok(Pushed::Applied(_))
        ));
        assert_eq!(
            kept.push(&signed(2, &["mallory"], &seed)),
            Ok(Pushed::Already)
        );
        assert_eq!(
            kept.push(&signed(1, &[], &seed)).expect_err("older"),
            Refusal::OutdatedList {
                offered: 1,
                kept: 2
            }
        );
        assert_eq!(
            kept.push(&signed(2, &["eve"], &seed))
                .expect_err("same version, other list"),
            Refusal::OutdatedList {
                offered: 2,
                kept: 2
            }
        );
        assert!(matches!(
            kept.push(&signed(9, &[], &[4u8; 32])),
            Err(Refusal::BadSignature(_))
        ));
        assert!(matches!(
            kept.push("cmdchan-revocations:!!"),
            Err(Refusal::BadArguments(_))
        ));
        drop(kept);
        let again = Kept::open(&path, Some(key)).expect("reopens");
        assert_eq!(again.version(), 2);
        assert!(
            Kept::open(&path, None).is_err(),
            "a kept list no key can check"
        );
        std::fs::write(&path, signed(3, &[], &[4u8; 32])).expect("forge");
        assert!(Kept::open(&path, Some(key)).is_err(), "a forged kept list");
    }
}
