//! The `file:DIR` store: claims and outcomes appended to segment files, one segment per
//! slice of expiry time, with the in-memory [`Table`] as the index.
//!
//! ```text
//! DIR/seg-E.log   every record whose ID is kept until at most unix second E
//!                 (E is a multiple of the slice, a tenth of the freshness window)
//! record = u32be(len(body)) || u32be(crc32(body)) || body      body = postcard(Record)
//! ```
//! IDs expire with their window, so a segment whose E has passed holds nothing live and
//! is unlinked whole: there is no compaction, dead records cost no disk past their
//! slice, and dropping them takes no lock any request waits on.
//!
//! Durability: a program's claim and its outcome are written (and with `fsync` flushed
//! to disk) before the program runs and before its answer is sent. A built-in's claim is
//! written in a batch within a millisecond: losing it to a kill costs nothing, as a
//! built-in has no effect to repeat.
//!
//! A write that fails part-way (a full disk, EIO, EDQUOT, EFBIG) is cut off at once: the
//! segment is truncated to its last whole record before anything else is appended, so a
//! torn record can only ever be a segment's tail. While the cut cannot be made, every
//! write to that segment fails and claims are refused (`store unavailable`); the store
//! resumes by itself once it can write. At start a torn tail is cut off the same way,
//! before the first claim is taken. A lock file keeps a second server off the directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use tracing::{error, info, warn};

use super::{Answer, Claim, Record, State, StoreError, StoreOptions, Table};
use crate::batch::{Batched, Records, Sink};

#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    table: Table,
    /// Seconds of expiry time per segment.
    slice: u64,
    out: Batched<Segments>,
    _lock: Flock<File>,
}

impl LogStore {
    /// Opens (creating if needed) the directory, drops expired segments, cuts torn
    /// tails and reads the rest back into the index.
    pub fn open(dir: &Path, opts: &StoreOptions, now: u64) -> io::Result<Self> {
        Self::open_with(dir, opts, now, Disk::file)
    }

    /// [`LogStore::open`] with segment files made by `wrap` (tests inject failures).
    pub(crate) fn open_with(
        dir: &Path,
        opts: &StoreOptions,
        now: u64,
        wrap: fn(File) -> Disk,
    ) -> io::Result<Self> {
        if dir.is_file() {
            return Err(io::Error::other(
                "is a file; the file store is a directory of segments (give file:DIR)",
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let lock = lock(dir)?;
        let table = Table::new(opts.max_ids);
        let mut segments = Segments {
            dir: dir.into(),
            open: BTreeMap::new(),
            fsync: opts.fsync,
            wrap,
            lost: 0,
        };
        segments.read_back(&table, now)?;
        // A tenth of the window: about twenty segments live at once.
        let slice = (opts.window.as_secs() / 10).max(1);
        Ok(Self {
            dir: dir.into(),
            table,
            slice,
            out: Batched::new(segments)?,
            _lock: lock,
        })
    }

    /// Claims `id`; with `durable` the claim is written (and with `fsync` on disk)
    /// before this returns, and a claim that cannot be written is not made.
    pub fn claim(&self, record: &Record, now: u64, durable: bool) -> Result<Claim, StoreError> {
        let claim = self
            .table
            .claim(&record.id, &record.entry, record.until, now)?;
        if claim == Claim::Fresh {
            if let Err(e) = self.write(record, durable) {
                // Not on disk, so not claimed: the request is refused and may be retried.
                self.table.remove(&record.id);
                return Err(e);
            }
        }
        Ok(claim)
    }

    /// Records an ID's outcome before this returns. The index learns it only once it is
    /// written: a retry in this process must not hear an answer that a restart would
    /// deny.
    pub fn finish(&self, record: &Record) -> Result<(), StoreError> {
        self.write(record, true)?;
        self.table.set(&record.id, &record.entry, record.until);
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Drops expired IDs from the index and expired segments from the disk.
    pub(super) fn maintain(&self, now: u64) {
        self.table.sweep(now);
        self.out.with_sink(|s| s.drop_expired(now));
    }

    pub(super) fn flush(&self) {
        self.out.with_sink(|_| ());
    }

    fn write(&self, record: &Record, durable: bool) -> Result<(), StoreError> {
        // The segment's E: `until` rounded up to the slice.
        let segment = record.until.div_ceil(self.slice).saturating_mul(self.slice);
        let encode = |buf: &mut Vec<u8>| encode(record, buf);
        match durable {
            true => self.out.append_now(segment, encode),
            false => self.out.append(segment, encode),
        }
        .map_err(|e| self.unavailable(&e))
    }

    fn unavailable(&self, e: &io::Error) -> StoreError {
        StoreError::Unavailable(format!("cannot write {}: {e}", self.dir.display()))
    }
}

/// The open segment files, keyed by E.
struct Segments {
    dir: PathBuf,
    open: BTreeMap<u64, Segment>,
    fsync: bool,
    wrap: fn(File) -> Disk,
    /// Batched records lost to failed writes since the last report.
    lost: u64,
}

/// One segment: its file and how many of its bytes are whole records.
struct Segment {
    disk: Disk,
    good: u64,
    /// Bytes past `good` may be on disk (a cut that failed): cut them before writing.
    torn: bool,
}

impl Sink for Segments {
    type Meta = u64;

    fn write_queued(&mut self, batch: &Records<u64>) {
        let count = batch.len() as u64;
        let mut failed = None;
        // Records of one segment go in one write; a batch seldom spans more than two.
        let mut by_segment: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (segment, bytes) in batch.iter() {
            by_segment
                .entry(segment)
                .or_default()
                .extend_from_slice(bytes);
        }
        for (segment, bytes) in by_segment {
            if let Err(e) = self.append(segment, &bytes) {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            self.lost += count;
            error!(dir = %self.dir.display(), error = %e, lost = self.lost, "cannot write the replay log; queued built-in claims were cut off (a built-in has no effect to repeat)");
        } else if self.lost > 0 {
            info!(dir = %self.dir.display(), "the replay log is written again");
            self.lost = 0;
        }
    }

    fn write_now(&mut self, segment: u64, record: &[u8]) -> io::Result<()> {
        self.append(segment, record)
    }
}

impl Segments {
    /// Appends whole records to segment `e`; on failure cuts the segment back to its
    /// last whole record (or marks it to be cut before its next write).
    fn append(&mut self, e: u64, bytes: &[u8]) -> io::Result<()> {
        let fsync = self.fsync;
        let segment = self.segment(e)?;
        segment.cut()?;
        let written = segment.disk.append(bytes).and_then(|()| match fsync {
            true => segment.disk.sync(),
            false => Ok(()),
        });
        match written {
            Ok(()) => {
                segment.good += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                segment.torn = true;
                // Best effort now; `cut` is tried again before the next write.
                let _ = segment.cut();
                Err(e)
            }
        }
    }

    fn segment(&mut self, e: u64) -> io::Result<&mut Segment> {
        if !self.open.contains_key(&e) {
            let path = self.dir.join(format!("seg-{e}.log"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            let good = file.metadata()?.len();
            if self.fsync {
                // The new name must survive a power loss as much as what is written to it.
                File::open(&self.dir)?.sync_all()?;
            }
            let disk = (self.wrap)(file);
            self.open.insert(
                e,
                Segment {
                    disk,
                    good,
                    torn: false,
                },
            );
        }
        self.open
            .get_mut(&e)
            .ok_or_else(|| io::Error::other("segment vanished"))
    }

    /// Closes and unlinks every segment whose records all expired before `now`.
    fn drop_expired(&mut self, now: u64) {
        self.open.retain(|&e, _| e >= now);
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for name in entries.flatten().map(|e| e.file_name()) {
            if let Some(e) = segment_end(&name.to_string_lossy()) {
                if e < now && !self.open.contains_key(&e) {
                    let _ = fs::remove_file(self.dir.join(&name));
                }
            }
        }
    }

    /// Reads every live segment into `table`, cutting torn tails; unlinks expired ones.
    fn read_back(&mut self, table: &Table, now: u64) -> io::Result<()> {
        self.drop_expired(now);
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().and_then(segment_end).is_none() {
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let whole = apply(&bytes, table, now);
            if whole < bytes.len() {
                warn!(path = %path.display(), bytes = bytes.len() - whole, "replay segment ends in a torn or corrupt record; cutting it off");
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(whole as u64)?;
                file.sync_all()?;
            }
        }
        Ok(())
    }
}

impl Segment {
    /// Cuts bytes past the last whole record, if a failed write may have left some.
    fn cut(&mut self) -> io::Result<()> {
        if self.torn {
            self.disk.truncate(self.good)?;
            self.torn = false;
        }
        Ok(())
    }
}

/// Applies the whole, intact records at the start of `bytes` to `table`; returns how
/// many bytes they span (a torn or corrupt record and what follows are not applied).
fn apply(bytes: &[u8], table: &Table, now: u64) -> usize {
    let mut at = 0;
    while let Some((mut record, len)) = decode(&bytes[at..]) {
        // A program still running when the last server stopped was stopped with it
        // (or lost track of): it is never run again, and its retry is told so.
        if record.entry.state == State::Running {
            record.entry.state = State::Done(Answer::Interrupted);
        }
        if record.until >= now {
            table.set(&record.id, &record.entry, record.until);
        }
        at += len;
    }
    at
}

/// How many bytes at the start of a segment's `bytes` are whole, intact records (what
/// recovery keeps): for fuzzing the decoder of a file an attacker with disk access, or
/// a torn write, controls.
pub fn whole_records(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some((_, len)) = decode(&bytes[at..]) {
        at += len;
    }
    at
}

/// `seg-E.log` → E.
fn segment_end(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Takes `dir`'s lock file, so that a second server cannot work in the same directory.
pub(crate) fn lock(dir: &Path) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join("lock"))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        io::Error::other(format!(
            "{} is in use by another server ({errno})",
            dir.display()
        ))
    })
}

/// Appends `record` framed to `out` (empty).
fn encode(record: &impl Serialize, out: &mut Vec<u8>) -> io::Result<()> {
    // The length and CRC go in front of the body once it is written: one buffer.
    out.extend_from_slice(&[0; 8]);
    postcard::to_io(record, &mut *out).map_err(io::Error::other)?;
    let len = u32::try_from(out.len() - 8).map_err(io::Error::other)?;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The record at the start of `bytes` and its length, if whole and intact.
fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8usize.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((postcard::from_bytes(body).ok()?, 8 + len))
}

/// A segment file, or a test's stand-in that fails on cue.
pub(crate) enum Disk {
    File(File),
    #[cfg(test)]
    FailAfter {
        file: File,
        budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
    },
}

impl Disk {
    fn file(file: File) -> Disk {
        Disk::File(file)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Disk::File(f) => f.write_all(bytes),
            #[cfg(test)]
            Disk::FailAfter { file, budget } => {
                use std::sync::atomic::Ordering;
                let left = budget.fetch_sub(bytes.len() as i64, Ordering::SeqCst);
                if left >= bytes.len() as i64 {
                    return file.write_all(bytes);
                }
                // Like a disk filling up: part of the bytes land, then ENOSPC.
                let part = usize::try_from(left.max(0)).unwrap_or(0).min(bytes.len());
                file.write_all(&bytes[..part])?;
                Err(io::Error::from_raw_os_error(28))
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        match self {
            Disk::File(f) => f.set_len(len),
            #[cfg(test)]
            Disk::FailAfter { file, .. } => file.set_len(len),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Disk::File(f) => f.sync_data(),
            #[cfg(test)]
            Disk::FailAfter { file, .. } => file.sync_data(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Entry;
    use cmdchan_common::protocol::CommandId;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn opts() -> StoreOptions {
        StoreOptions {
            max_ids: 1000,
            fsync: false,
            server_id: "s".into(),
            window: Duration::from_secs(60),
            clock_skew: Duration::ZERO,
            redis_replicas: 0,
        }
    }

    fn rec(n: u32, client: &str, until: u64) -> Record {
        Record {
            id: id(n),
            until,
            entry: entry(client),
        }
    }

    fn entry(client: &str) -> Entry {
        Entry {
            client: client.into(),
            digest: 1,
            state: State::Running,
        }
    }

    fn id(n: u32) -> CommandId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn claims_survive_reopening_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let done = Entry {
            state: State::Done(Answer::Dropped),
            ..entry("a")
        };
        {
            let log = LogStore::open(dir.path(), &opts(), 0).expect("open");
            assert_eq!(log.claim(&rec(1, "a", 100), 0, true), Ok(Claim::Fresh));
            assert_eq!(log.claim(&rec(2, "a", 10), 0, true), Ok(Claim::Fresh));
            log.finish(&Record {
                id: id(1),
                until: 100,
                entry: done.clone(),
            })
            .expect("finish");
        }
        let log = LogStore::open(dir.path(), &opts(), 50).expect("reopen");
        assert_eq!(
            log.claim(&rec(1, "b", 100), 50, true),
            Ok(Claim::Seen(done))
        );
        assert_eq!(
            log.claim(&rec(2, "b", 100), 50, true),
            Ok(Claim::Fresh),
            "expired at 10"
        );
        let segments = fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(
            segments, 2,
            "the expired segment was unlinked (lock + one segment)"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_claims_after_it_survive_the_next_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = LogStore::open(dir.path(), &opts(), 0).expect("open");
            log.claim(&rec(1, "a", 100), 0, true).expect("claim");
        }
        let seg = dir.path().join("seg-102.log");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("segment");
        f.write_all(&[0, 0, 0, 40, 1, 2]).expect("torn write");
        {
            let log = LogStore::open(dir.path(), &opts(), 0).expect("reopen");
            assert!(matches!(
                log.claim(&rec(1, "b", 100), 0, true),
                Ok(Claim::Seen(_))
            ));
            assert_eq!(log.claim(&rec(2, "a", 100), 0, true), Ok(Claim::Fresh));
        }
        let log = LogStore::open(dir.path(), &opts(), 0).expect("reopen again");
        assert!(
            matches!(log.claim(&rec(2, "b", 100), 0, true), Ok(Claim::Seen(_))),
            "a claim acknowledged after the cut is not lost"
        );
    }

    /// A disk that fills up part-way through a record, then frees up: nothing claimed
    /// before or after is lost, and no claim lands after torn bytes.
    #[test]
    fn a_write_that_fails_part_way_loses_no_acknowledged_claim() {
        static BUDGET: std::sync::OnceLock<Arc<AtomicI64>> = std::sync::OnceLock::new();
        let budget = BUDGET
            .get_or_init(|| Arc::new(AtomicI64::new(i64::MAX)))
            .clone();
        fn wrap(file: File) -> Disk {
            let budget = BUDGET.get().expect("set").clone();
            Disk::FailAfter { file, budget }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut acknowledged = Vec::new();
        {
            let log = LogStore::open_with(dir.path(), &opts(), 0, wrap).expect("open");
            for n in 0..20 {
                log.claim(&rec(n, "a", 100), 0, true).expect("claim");
                acknowledged.push(n);
            }
            // Room for half a record: the next claim tears, and is refused.
            budget.store(10, Ordering::SeqCst);
            assert!(matches!(
                log.claim(&rec(100, "a", 100), 0, true),
                Err(StoreError::Unavailable(_))
            ));
            assert!(
                log.claim(&rec(101, "a", 100), 0, true).is_err(),
                "still full"
            );
            budget.store(i64::MAX, Ordering::SeqCst);
            for n in 20..60 {
                log.claim(&rec(n, "a", 100), 0, true)
                    .expect("claim after space came back");
                acknowledged.push(n);
            }
        }
        let log = LogStore::open(dir.path(), &opts(), 0).expect("reopen");
        for n in acknowledged {
            assert!(
                matches!(log.claim(&rec(n, "b", 100), 0, true), Ok(Claim::Seen(_))),
                "claim {n} was lost"
            );
        }
        assert_eq!(
            log.claim(&rec(100, "b", 100), 0, true),
            Ok(Claim::Fresh),
            "the refused claim was not made"
        );
    }

    #[test]
    fn a_second_server_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = LogStore::open(dir.path(), &opts(), 0).expect("open");
        let err = LogStore::open(dir.path(), &opts(), 0).expect_err("locked");
        assert!(
            err.to_string().contains("in use by another server"),
            "{err}"
        );
    }

    #[test]
    fn segments_of_expired_slices_are_unlinked_while_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path(), &opts(), 0).expect("open");
        for n in 0..100 {
            log.claim(&rec(n, "a", u64::from(n)), 0, false)
                .expect("claim");
        }
        log.maintain(50);
        let ends: Vec<u64> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| segment_end(&e.ok()?.file_name().to_string_lossy()))
            .collect();
        assert!(
            !ends.is_empty() && ends.iter().all(|&e| e >= 50),
            "{ends:?}"
        );
        assert_eq!(log.len(), 50);
    }
}
