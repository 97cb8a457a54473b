//! The `file:` store: an append-only log of claims and outcomes, with an in-memory index.
//!
//! ```text
//! record = u32be(len(body)) || u32be(crc32(body)) || body      body = postcard(Record)
//! ```
//! At start the log is read back (later records win), expired IDs are dropped, a torn or
//! corrupt tail is cut off, and the file is rewritten with only the live IDs; it is
//! rewritten the same way whenever dead records outnumber live ones.
//!
//! Durability: records are written in batches ([`crate::batch`]). A claim for a program
//! is in the kernel before the program runs, so it survives the server being killed
//! (kill -9, panic, OOM); other records (a built-in's claim, every outcome) follow within
//! a millisecond, and a clean stop writes them all. Losing one to a kill costs nothing
//! that matters: a built-in has no effect to repeat, and a program whose outcome was
//! lost answers a retry with `in progress` until its window ends. With `fsync` each
//! write is also flushed to disk (`fdatasync`), which survives power loss too. A lock
//! file keeps a second server off the same log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::warn;

use cmdchan_common::protocol::CommandId;

use super::{Claim, Entry, Index, StoreError};
use crate::batch::Batched;

/// Rewrite when the log holds this many more records than live IDs.
const SLACK: usize = 10_000;

#[derive(Debug)]
pub struct LogStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Written under `inner`'s lock, so the file's order is the index's.
    out: Batched,
    _lock: Flock<File>,
}

#[derive(Debug)]
struct Inner {
    index: Index,
    /// Records in the file.
    records: usize,
}

#[derive(Debug, Deserialize)]
struct Record {
    id: CommandId,
    until: u64,
    entry: Entry,
}

/// A [`Record`] as it is written, borrowing its parts (the same encoding).
#[derive(Serialize)]
struct Written<'a> {
    id: &'a CommandId,
    until: u64,
    entry: &'a Entry,
}

impl LogStore {
    /// Opens (creating if needed) the log at `path` and reads it back.
    pub fn open(path: &Path, max_ids: usize, fsync: bool, now: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let lock = lock(path)?;
        let mut index = Index::new(max_ids);
        read_back(path, &mut index)?;
        index.prune(now);
        let (file, records) = rewrite(path, &index)?;
        let inner = Mutex::new(Inner { index, records });
        Ok(Self {
            path: path.into(),
            inner,
            out: Batched::new(file, fsync)?,
            _lock: lock,
        })
    }

    /// Claims `id`; with `durable` the claim is in the kernel (and with `fsync` on disk)
    /// before this returns.
    pub fn claim(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
        durable: bool,
    ) -> Result<Claim, StoreError> {
        // Encoded before the lock, which every connection shares; wasted only when the ID
        // was seen before.
        let record = encode(&id, until, entry).map_err(|e| self.unavailable(e))?;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let claim = inner.index.claim(id, entry, until, now)?;
        if claim == Claim::Fresh {
            if let Err(e) = self.append(&mut inner, &record, durable) {
                // Not on disk, so not claimed: the request is refused and may be retried.
                inner.index.remove(&id);
                return Err(self.unavailable(e));
            }
            self.compact_if_due(&mut inner, now);
        }
        Ok(claim)
    }

    pub fn finish(&self, id: CommandId, entry: &Entry, until: u64) -> Result<(), StoreError> {
        let record = encode(&id, until, entry).map_err(|e| self.unavailable(e))?;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.index.set(id, entry, until);
        self.append(&mut inner, &record, false)
            .map_err(|e| self.unavailable(e))
    }

    pub(super) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .index
            .len()
    }

    /// Appends an encoded record; under `inner`'s lock, so the file's order is the index's.
    fn append(&self, inner: &mut Inner, record: &[u8], durable: bool) -> io::Result<()> {
        match durable {
            true => self.out.append_now(record)?,
            false => self.out.append(record)?,
        }
        inner.records += 1;
        Ok(())
    }

    fn compact_if_due(&self, inner: &mut Inner, now: u64) {
        if inner.records <= 2 * inner.index.len() + SLACK {
            return;
        }
        inner.index.prune(now);
        match self.out.replace(|_| rewrite(&self.path, &inner.index)) {
            Ok(records) => inner.records = records,
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot compact the replay log; it keeps growing")
            }
        }
    }

    fn unavailable(&self, e: io::Error) -> StoreError {
        StoreError::Unavailable(format!("cannot write {}: {e}", self.path.display()))
    }
}

fn lock(path: &Path) -> io::Result<Flock<File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(&name)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        io::Error::other(format!(
            "{} is in use by another server ({errno})",
            path.display()
        ))
    })
}

fn encode(id: &CommandId, until: u64, entry: &Entry) -> io::Result<Vec<u8>> {
    let record = Written { id, until, entry };
    let body = postcard::to_stdvec(&record).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Applies every whole, intact record of the log at `path` to `index`; stops at the
/// first torn or corrupt one (what follows it cannot be trusted to be in order).
fn read_back(path: &Path, index: &mut Index) -> io::Result<()> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let Some((record, tail)) = decode(rest) else {
            warn!(path = %path.display(), bytes = rest.len(), "replay log ends in a torn or corrupt record; dropping it");
            break;
        };
        index.set(record.id, &record.entry, record.until);
        rest = tail;
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Option<(Record, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((postcard::from_bytes(body).ok()?, &bytes[8 + len..]))
}

/// Writes the live IDs to a new file and puts it in place of the old one atomically;
/// returns the new file, open for appending, and its record count.
fn rewrite(path: &Path, index: &Index) -> io::Result<(File, usize)> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut records = 0;
    for (id, until, entry) in index.live() {
        out.write_all(&encode(&id, until, &entry)?)?;
        records += 1;
    }
    out.sync_all()?;
    fs::rename(&tmp, path)?;
    let file = OpenOptions::new().append(true).open(path)?;
    Ok((file, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::State;

    fn entry(client: &str) -> Entry {
        Entry {
            client: client.into(),
            state: State::Running { since: 1 },
        }
    }

    #[test]
    fn claims_survive_reopening_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seen.log");
        {
            let log = LogStore::open(&path, 100, false, 0).expect("open");
            assert_eq!(
                log.claim([1; 16], &entry("a"), 100, 0, true),
                Ok(Claim::Fresh)
            );
            assert_eq!(
                log.claim([2; 16], &entry("a"), 10, 0, true),
                Ok(Claim::Fresh)
            );
            let done = Entry {
                client: "a".into(),
                state: State::Done {
                    at: 5,
                    answer: None,
                },
            };
            log.finish([1; 16], &done, 100).expect("finish");
        }
        let log = LogStore::open(&path, 100, false, 50).expect("reopen");
        let done = Entry {
            client: "a".into(),
            state: State::Done {
                at: 5,
                answer: None,
            },
        };
        assert_eq!(
            log.claim([1; 16], &entry("b"), 100, 50, true),
            Ok(Claim::Seen(done))
        );
        assert_eq!(
            log.claim([2; 16], &entry("b"), 100, 50, true),
            Ok(Claim::Fresh),
            "expired at 10"
        );
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seen.log");
        {
            let log = LogStore::open(&path, 100, false, 0).expect("open");
            log.claim([1; 16], &entry("a"), 100, 0, true)
                .expect("claim");
        }
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0, 0, 0, 40, 1, 2]).expect("torn write");
        let log = LogStore::open(&path, 100, false, 0).expect("reopen");
        assert!(matches!(
            log.claim([1; 16], &entry("b"), 100, 0, true),
            Ok(Claim::Seen(_))
        ));
    }

    #[test]
    fn a_second_server_cannot_open_the_same_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seen.log");
        let _first = LogStore::open(&path, 100, false, 0).expect("open");
        let err = LogStore::open(&path, 100, false, 0).expect_err("locked");
        assert!(
            err.to_string().contains("in use by another server"),
            "{err}"
        );
    }

    #[test]
    fn the_log_is_rewritten_when_mostly_dead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seen.log");
        let log = LogStore::open(&path, 1_000_000, false, 0).expect("open");
        for i in 0..(SLACK as u32 + 10) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            // Each ID expires at once, so the log is almost all dead records.
            log.claim(id, &entry("a"), u64::from(i), u64::from(i), true)
                .expect("claim");
        }
        let size = fs::metadata(&path).expect("meta").len();
        assert!(
            size < 10_000 * 20,
            "the log was not compacted: {size} bytes"
        );
    }
}
