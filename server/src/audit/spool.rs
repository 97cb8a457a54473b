//! The audit spool: all a program printed, for the commands whose policy says
//! `record_output = "full"`, in a file beside the audit file (`AUDIT.spool`) that is
//! reopened with it, so the two rotate together. An entry is written before the audit
//! record of the run's end, whose `stdout_sha256` and `stderr_sha256` (inside the keyed
//! chain) are what `audit-verify` checks it against: the spool needs no key of its own,
//! and an edit of it is found by the chain.
//!
//! ```text
//! spool = entry*
//! entry = "CSP1" || command ID (16 bytes) || u32be(length) || chunk*   (length bytes)
//! chunk = stream (0 stdout, 1 stderr) || u32be(length) || bytes
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use cmdchan_common::protocol::CommandId;
use cmdchan_common::sync;

use crate::run::Digests;

use super::verify::Spooled;

const MAGIC: &[u8; 4] = b"CSP1";
const HEAD: usize = 4 + 16 + 4;

/// The spool of the audit file at `audit`: `AUDIT.spool`.
pub fn path_of(audit: &Path) -> PathBuf {
    let mut name = audit.as_os_str().to_owned();
    name.push(".spool");
    PathBuf::from(name)
}

/// The spool being written.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: Mutex<File>,
}

impl Spool {
    /// Opens (or makes, mode 0600) the spool of the audit file at `audit`; a torn entry
    /// at its end (the server stopped while writing it) is cut off.
    pub fn open(audit: &Path) -> io::Result<Self> {
        let path = path_of(audit);
        let file = open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Opens the path again (after rotation moved the file away).
    pub fn reopen(&self) -> io::Result<()> {
        let file = open(&self.path)?;
        *sync::lock(&self.file) = file;
        Ok(())
    }

    /// Appends the entry of run `id` (its output as chunks) in one write.
    pub fn write(&self, id: &CommandId, chunks: &[u8]) -> io::Result<()> {
        let len = u32::try_from(chunks.len())
            .map_err(|_| io::Error::other("output too large to spool"))?;
        let mut entry = Vec::with_capacity(HEAD + chunks.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(id);
        entry.extend_from_slice(&len.to_be_bytes());
        entry.extend_from_slice(chunks);
        sync::lock(&self.file).write_all(&entry)
    }
}

fn open(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    let whole = whole_len(&file)?;
    if whole < file.metadata()?.len() {
        tracing::warn!(path = %path.display(), "the audit spool ends in a torn entry; cutting it off");
        file.set_len(whole)?;
    }
    Ok(file)
}

/// The length of the spool's whole entries, walking their heads only.
fn whole_len(file: &File) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let mut at = 0u64;
    let mut head = [0u8; HEAD];
    while at + HEAD as u64 <= size {
        file.read_exact_at(&mut head, at)?;
        let len = u64::from(u32::from_be_bytes([head[20], head[21], head[22], head[23]]));
        if &head[..4] != MAGIC || at + HEAD as u64 + len > size {
            break;
        }
        at += HEAD as u64 + len;
    }
    Ok(at)
}

/// What a spool holds: each run's digests, and what is wrong with it.
#[derive(Debug, Default)]
pub struct Contents {
    pub runs: HashMap<CommandId, Digests>,
    /// Byte offset and what is wrong there (the spool is not read past it).
    pub broken: Option<(u64, String)>,
}

/// Reads a spool's entries and digests each run's streams.
pub fn read(bytes: &[u8]) -> Contents {
    let mut contents = Contents::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + HEAD) else {
            contents.broken = Some((at as u64, "a torn entry head".into()));
            break;
        };
        if &head[..4] != MAGIC {
            contents.broken = Some((at as u64, "not an entry (edited, or not a spool)".into()));
            break;
        }
        let id: CommandId = head[4..20].try_into().unwrap_or_default();
        let len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
        let Some(chunks) = bytes.get(at + HEAD..at + HEAD + len) else {
            contents.broken = Some((at as u64, "an entry cut short".into()));
            break;
        };
        match digests(chunks) {
            Some(d) if contents.runs.insert(id, d).is_none() => {}
            Some(_) => {
                contents.broken = Some((
                    at as u64,
                    format!("a second entry for run {}", hex::encode(id)),
                ));
                break;
            }
            None => {
                contents.broken = Some((at as u64, "an entry whose chunks do not add up".into()));
                break;
            }
        }
        at += HEAD + len;
    }
    contents
}

/// The SHA-256 of each stream of an entry's chunks (`None`: they do not parse).
fn digests(mut chunks: &[u8]) -> Option<Digests> {
    let mut hashes = [Sha256::new(), Sha256::new()];
    while !chunks.is_empty() {
        let stream = usize::from(*chunks.first()?);
        let len = u32::from_be_bytes(chunks.get(1..5)?.try_into().ok()?) as usize;
        hashes.get_mut(stream)?.update(chunks.get(5..5 + len)?);
        chunks = &chunks[5 + len..];
    }
    let [out, err] = hashes;
    Some([out.finalize().into(), err.finalize().into()])
}

/// What is wrong with a spool against the verified records that say it holds their
/// runs' output (`claims`): each problem in words; none if every run's output is there
/// as printed and nothing else is.
pub fn check(bytes: &[u8], claims: &[Spooled]) -> Vec<String> {
    let contents = read(bytes);
    let mut problems = Vec::new();
    let mut named = std::collections::HashSet::new();
    for claim in claims {
        let id = cmdchan_common::protocol::parse_id(&claim.id).unwrap_or_default();
        named.insert(id);
        let Some([out, err]) = contents.runs.get(&id) else {
            problems.push(format!(
                "line {}: the spool holds no output of run {} (deleted, or the spool is not this file's)",
                claim.line, claim.id
            ));
            continue;
        };
        if hex::encode(out) != claim.stdout_sha256 || hex::encode(err) != claim.stderr_sha256 {
            problems.push(format!(
                "line {}: the spool's output of run {} is not what the program printed (edited)",
                claim.line, claim.id
            ));
        }
    }
    let mut others: Vec<String> = contents
        .runs
        .keys()
        .filter(|id| !named.contains(*id))
        .map(hex::encode)
        .collect();
    others.sort();
    for id in others {
        problems.push(format!(
            "the spool holds output of run {id}, which no verified record names (inserted?)"
        ));
    }
    if let Some((at, what)) = contents.broken {
        problems.push(format!("the spool is damaged at byte {at}: {what}"));
    }
    problems
}

/// The output of run `id` in a spool, as (stream, bytes) chunks.
pub fn output_of<'a>(bytes: &'a [u8], id: &CommandId) -> Option<Vec<(u8, &'a [u8])>> {
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + HEAD) {
        let len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
        let chunks = bytes.get(at + HEAD..at + HEAD + len)?;
        if &head[..4] == MAGIC && head[4..20] == id[..] {
            let mut out = Vec::new();
            let mut rest = chunks;
            while rest.len() >= 5 {
                let n = u32::from_be_bytes(rest[1..5].try_into().ok()?) as usize;
                out.push((rest[0], rest.get(5..5 + n)?));
                rest = &rest[5 + n..];
            }
            return Some(out);
        }
        at += HEAD + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: u8, data: &[u8]) -> Vec<u8> {
        let mut c = vec![stream];
        c.extend_from_slice(&(data.len() as u32).to_be_bytes());
        c.extend_from_slice(data);
        c
    }

    #[test]
    fn entries_read_back_as_digests_and_a_torn_tail_is_cut_at_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = dir.path().join("audit.log");
        let spool = Spool::open(&audit).expect("open");
        let run = [chunk(0, b"out "), chunk(1, b"err"), chunk(0, b"more")].concat();
        spool.write(&[1; 16], &run).expect("write");
        spool.write(&[2; 16], &[]).expect("write");
        let bytes = std::fs::read(path_of(&audit)).expect("read");
        let contents = read(&bytes);
        assert_eq!(contents.broken, None);
        let expect = [
            openssl::sha::sha256(b"out more"),
            openssl::sha::sha256(b"err"),
        ];
        assert_eq!(contents.runs[&[1; 16]], expect);
        assert_eq!(output_of(&bytes, &[1; 16]).expect("there").len(), 3);

        let mut torn = bytes.clone();
        torn.extend_from_slice(&bytes[..HEAD + 3]);
        std::fs::write(path_of(&audit), &torn).expect("tear");
        assert!(read(&torn).broken.is_some());
        drop(Spool::open(&audit).expect("reopen"));
        assert_eq!(std::fs::read(path_of(&audit)).expect("read"), bytes);
    }
}
