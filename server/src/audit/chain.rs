//! The audit file: JSON lines, each carrying the SHA-256 of the line before it, so an
//! edited, deleted or reordered record breaks the chain at that point.
//!
//! ```text
//! line_i = JSON object of record i, its last field "prev": hex(SHA-256(line_{i-1}))
//!          (the hash is of the line without its newline)
//! prev of a new chain's first record = 64 zeros
//! ```
//! The chain continues across restarts (the last line is read back) and across rotation:
//! after the file is moved away and the server reopens its path (SIGHUP), the new file's
//! first record carries the hash of the old file's last record.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::batch::Batched;

/// The `prev` of a new chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// An append-only, hash-chained audit file.
#[derive(Debug)]
pub struct Chain {
    path: PathBuf,
    /// The hash of the last record appended; its lock orders the file.
    last: Mutex<[u8; 32]>,
    out: Batched,
}

impl Chain {
    /// Opens (or creates, mode 0600) the file at `path` and continues its chain.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (file, last) = open_continuing(path, GENESIS)?;
        Ok(Self {
            path: path.into(),
            last: Mutex::new(last),
            out: Batched::new(file, false)?,
        })
    }

    /// Reopens the path (after rotation); a new, empty file continues the chain from
    /// the last record written to the old one.
    pub fn reopen(&self) -> io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = self.out.replace(|_| open_continuing(&self.path, *last))?;
        Ok(())
    }

    /// Appends `record` with its `prev` field, which comes last so that only the hash
    /// is worked out under the lock. With `now`, the record is in the kernel when this
    /// returns; otherwise it follows within [`crate::batch::DELAY`].
    pub fn append(&self, record: &impl Serialize, now: bool) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(512);
        serde_json::to_writer(&mut bytes, record)?;
        // An object always ends in `}`; reopen it for the last field.
        bytes.pop();
        bytes.extend_from_slice(br#","prev":""#);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let at = bytes.len();
        bytes.resize(at + 64, 0);
        hex::encode_to_slice(*last, &mut bytes[at..]).map_err(io::Error::other)?;
        bytes.extend_from_slice(b"\"}");
        let hash = Sha256::digest(&bytes).into();
        bytes.push(b'\n');
        match now {
            true => self.out.append_now(&bytes)?,
            false => self.out.append(&bytes)?,
        }
        *last = hash;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens for appending; the chain goes on from the file's last line, or from `carry`
/// if the file is empty. A torn last line (no newline) is closed off and chained from.
fn open_continuing(path: &Path, carry: [u8; 32]) -> io::Result<(File, [u8; 32])> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    let Some(last_line) = last_line(&mut file)? else {
        return Ok((file, carry));
    };
    let hash = Sha256::digest(last_line.strip_suffix(b"\n").unwrap_or(&last_line)).into();
    if !last_line.ends_with(b"\n") {
        file.write_all(b"\n")?;
    }
    Ok((file, hash))
}

/// The file's last line (with its newline, if it has one); `None` for an empty file.
fn last_line(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        match body.iter().rposition(|&b| b == b'\n') {
            Some(cut) => return Ok(Some(tail[cut + 1..].to_vec())),
            None if start == 0 => return Ok((!tail.is_empty()).then_some(tail)),
            None => window *= 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn record(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("n".into(), Value::from(n));
        m
    }

    #[test]
    fn each_record_carries_the_hash_of_the_one_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let chain = Chain::open(&path).expect("open");
        chain.append(&record(1), true).expect("append");
        chain.append(&record(2), true).expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains(&hex::encode(GENESIS)));
        assert!(lines[1].contains(&hex::encode(Sha256::digest(lines[0].as_bytes()))));
    }

    #[test]
    fn the_chain_continues_after_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        Chain::open(&path)
            .expect("open")
            .append(&record(1), true)
            .expect("append");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"torn\":").expect("write");
        Chain::open(&path)
            .expect("reopen")
            .append(&record(2), true)
            .expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains(&hex::encode(Sha256::digest(b"{\"torn\":"))));
    }

    #[test]
    fn a_rotated_file_starts_from_the_old_files_last_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let chain = Chain::open(&path).expect("open");
        chain.append(&record(1), true).expect("append");
        let old = std::fs::read_to_string(&path).expect("read");
        std::fs::rename(&path, dir.path().join("audit.log.1")).expect("rotate");
        chain.reopen().expect("reopen");
        chain.append(&record(2), true).expect("append");
        let new = std::fs::read_to_string(&path).expect("read");
        assert!(new.contains(&hex::encode(Sha256::digest(old.trim_end().as_bytes()))));
    }
}
