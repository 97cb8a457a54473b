//! `admin audit-verify`: walks an audit file's keyed chain and names the first record
//! that is not what the server wrote, telling a gap the server recorded (a full disk)
//! apart from an edit.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use cmdchan_common::keys::AuditKey;

use super::chain::{key_id, mac, GENESIS, MAC_SUFFIX};

/// What a walk over the chain found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record is the server's and follows from the one before (records of a part
    /// under a key not given are listed in `Walk::unchecked`).
    Intact(Walk),
    /// Line `line` (1-based) is not what the server wrote there.
    Broken { line: u64, why: String },
}

/// An intact chain's figures.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub records: u64,
    /// The file starts a new chain (else it continues a rotated file).
    pub new_chain: bool,
    /// What the first record chains from (all zeros for a new chain).
    pub first_prev: String,
    /// Gaps the server recorded: (line, records lost, error).
    pub gaps: Vec<(u64, u64, String)>,
    /// Where the chain goes on under another key: (line, key ID).
    pub rekeyed: Vec<(u64, String)>,
    /// Parts under a key that was not given, so not checked: (first line, last line,
    /// key ID).
    pub unchecked: Vec<(u64, u64, String)>,
    /// The last record's seq and MAC.
    pub last_seq: u64,
    pub last_mac: String,
    /// Runs whose output the server put in the spool, from verified records: (line,
    /// command ID, stdout SHA-256, stderr SHA-256), all hex.
    pub spooled: Vec<Spooled>,
    /// Verified records of runs whose output the server could not spool.
    pub unspooled: Vec<u64>,
}

/// A verified record's claim that the spool holds a run's output.
#[derive(Debug, PartialEq, Eq)]
pub struct Spooled {
    pub line: u64,
    pub id: String,
    pub stdout_sha256: String,
    pub stderr_sha256: String,
}

/// Checks the file at `path` with the chain's keys (one per zone key the server held
/// while it wrote, in any order). With `prev`, the file must continue from that MAC (the
/// last of the file before it); with `head`, a record with that MAC (a checkpoint from
/// the journal) must be in the file.
pub fn verify(
    path: &Path,
    keys: &[AuditKey],
    prev: Option<&str>,
    head: Option<&str>,
) -> io::Result<Verdict> {
    verify_from(BufReader::new(std::fs::File::open(path)?), keys, prev, head)
}

/// [`verify`] over any reader (the file's bytes are whoever wrote them last's).
pub fn verify_from(
    reader: impl BufRead,
    keys: &[AuditKey],
    prev: Option<&str>,
    head: Option<&str>,
) -> io::Result<Verdict> {
    let mut walk = Walk::default();
    let mut head_seen = head.is_none();
    // The key of the part being read: `Ok(key)`, or `Err(id)` for a key not given.
    let mut key: Result<&AuditKey, String> = Err(String::new());
    for (n, line) in (1u64..).zip(reader.split(b'\n')) {
        let line = line?;
        let broken = |why: String| Ok(Verdict::Broken { line: n, why });
        let value: Value = match serde_json::from_slice(&line) {
            Ok(value) => value,
            Err(_) => return broken("is not a JSON record (torn or edited)".into()),
        };
        let header = value.get("chain").and_then(Value::as_str);
        match (n, header) {
            (1, None) => {
                return broken(
                    "is not a chain header: the file's first records were deleted".into(),
                )
            }
            (1, Some(_)) | (_, Some("rekeyed")) => key = key_named(&value, &line, keys),
            (_, Some(_)) => return broken("is a chain header in the middle of a file".into()),
            (_, None) => {}
        }
        let record = match &key {
            Ok(key) => match check_line(&line, &value, key) {
                Ok(record) => record,
                Err(why) => return broken(why),
            },
            Err(id) => {
                match walk.unchecked.last_mut() {
                    Some((_, last, of)) if of == id && *last + 1 == n => *last = n,
                    _ => walk.unchecked.push((n, n, id.clone())),
                }
                match chain_fields(&value) {
                    Ok(chain) => chain,
                    Err(why) => return broken(why),
                }
            }
        };
        let (seq, this_prev, this_mac) = record;
        if n == 1 {
            walk.new_chain = header == Some("new");
            if walk.new_chain && (this_prev != hex::encode(GENESIS) || seq != 0) {
                return broken("says it starts a new chain but does not chain from zero".into());
            }
            if let Some(want) = prev.filter(|want| *want != this_prev) {
                return broken(format!(
                    "continues from {this_prev}, not from the expected {want}"
                ));
            }
            walk.first_prev = this_prev.clone();
        } else if this_prev != walk.last_mac || seq != walk.last_seq.wrapping_add(1) {
            return broken(format!(
                "does not follow line {}: records were deleted, inserted or reordered here",
                n - 1
            ));
        }
        if header == Some("rekeyed") {
            let id = value.get("key").and_then(Value::as_str).unwrap_or("");
            walk.rekeyed.push((n, id.to_owned()));
        }
        if let Some(gap) = value.get("gap") {
            let lost = gap.get("records").and_then(Value::as_u64).unwrap_or(0);
            let error = gap
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            walk.gaps.push((n, lost, error));
        }
        if key.is_ok() {
            note_spooled(&mut walk, n, &value);
        }
        head_seen |= head == Some(this_mac.as_str());
        (walk.last_seq, walk.last_mac) = (seq, this_mac);
        walk.records = n;
    }
    if walk.records == 0 {
        return Ok(Verdict::Broken {
            line: 1,
            why: "is missing: the file is empty".into(),
        });
    }
    if !head_seen {
        return Ok(Verdict::Broken {
            line: walk.records,
            why: "is the last line, and the checkpoint given with --head is not in the file: records were cut off or the file was rewritten".into(),
        });
    }
    Ok(Verdict::Intact(walk))
}

/// Notes what a verified record says of the spool.
fn note_spooled(walk: &mut Walk, line: u64, record: &Value) {
    let text = |field: &str| {
        record
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match record.get("spooled").and_then(Value::as_bool) {
        Some(true) => walk.spooled.push(Spooled {
            line,
            id: text("id"),
            stdout_sha256: text("stdout_sha256"),
            stderr_sha256: text("stderr_sha256"),
        }),
        Some(false) => walk.unspooled.push(line),
        None => {}
    }
}

/// The key a header says its part is under: the given key with that ID, or `Err(id)`
/// if none was given. A header that names no key (written before headers did) is under
/// whichever given key verifies it.
fn key_named<'k>(
    header: &Value,
    line: &[u8],
    keys: &'k [AuditKey],
) -> Result<&'k AuditKey, String> {
    match header.get("key").and_then(Value::as_str) {
        Some(id) => keys
            .iter()
            .find(|k| key_id(k) == id)
            .ok_or_else(|| id.to_owned()),
        None => keys
            .iter()
            .find(|k| check_line(line, header, k).is_ok())
            .or(keys.first())
            .ok_or_else(|| "(unnamed)".to_owned()),
    }
}

/// A record's place in the chain: (seq, prev, mac).
type ChainFields = (u64, String, String);

/// Checks one line's own MAC: `mac = HMAC(key, line without its mac field, closed)`.
fn check_line(line: &[u8], value: &Value, key: &AuditKey) -> Result<ChainFields, String> {
    let chain = chain_fields(value)?;
    let cut = line.len().checked_sub(MAC_SUFFIX).ok_or("is too short")?;
    let mut text = line[..cut].to_vec();
    text.push(b'}');
    if hex::encode(mac(key, &text)) != chain.2 {
        return Err("does not carry the MAC of its own text: it was edited, or the key is not this server's".into());
    }
    Ok(chain)
}

fn chain_fields(value: &Value) -> Result<ChainFields, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    match (
        value.get("seq").and_then(Value::as_u64),
        field("prev"),
        field("mac"),
    ) {
        (Some(seq), Some(prev), Some(this)) => Ok((seq, prev, this)),
        _ => Err("lacks its seq, prev or mac field (edited, or not an audit file)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Chain;
    use std::sync::Arc;

    fn key() -> Arc<AuditKey> {
        Arc::new(AuditKey::from_bytes([3; 32]))
    }

    fn keys() -> [AuditKey; 1] {
        [AuditKey::from_bytes([3; 32])]
    }

    fn written(dir: &tempfile::TempDir, records: u64) -> std::path::PathBuf {
        let path = dir.path().join("audit.log");
        let chain = Chain::open(&path, key(), "s1").expect("open");
        for n in 0..records {
            chain
                .append(&serde_json::json!({ "n": n }), true)
                .expect("append");
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").expect("write");
    }

    fn broken_at(path: &Path) -> u64 {
        match verify(path, &keys(), None, None).expect("verify") {
            Verdict::Broken { line, .. } => line,
            Verdict::Intact(w) => panic!("verified: {w:?}"),
        }
    }

    #[test]
    fn an_untouched_file_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 5);
        let Verdict::Intact(walk) = verify(&path, &keys(), None, None).expect("verify") else {
            panic!("broken")
        };
        assert_eq!((walk.records, walk.last_seq, walk.new_chain), (6, 5, true));
    }

    #[test]
    fn deleting_the_first_records_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 5);
        let all = lines(&path);
        write(&path, &all[3..]);
        assert_eq!(broken_at(&path), 1);
    }

    #[test]
    fn editing_the_last_record_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 5);
        let mut all = lines(&path);
        let last = all.len() - 1;
        all[last] = all[last].replace("\"n\":4", "\"n\":9");
        write(&path, &all);
        assert_eq!(broken_at(&path), 6);
    }

    #[test]
    fn recomputing_an_unkeyed_chain_does_not_hide_an_edit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 3);
        let mut all = lines(&path);
        all[2] = all[2].replace("\"n\":1", "\"n\":7");
        write(&path, &all);
        // With another key nothing is checked, and the walk says so: it never passes.
        let other = AuditKey::from_bytes([4; 32]);
        let Verdict::Intact(walk) = verify(&path, &[other], None, None).expect("verify") else {
            panic!("the chain's shape is whole")
        };
        assert_eq!(walk.unchecked, vec![(1, 4, key_id(&key()))]);
        assert_eq!(broken_at(&path), 3);
    }

    /// The case: the server restarts with another zone key (a rotation). The chain goes
    /// on under a `rekeyed` header; with both keys every record checks, with the new key
    /// alone the old part is listed as not checked, never as an edit.
    #[test]
    fn a_key_change_starts_a_rekeyed_part_that_verifies_with_its_own_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 2);
        let new = Arc::new(AuditKey::from_bytes([9; 32]));
        let chain = Chain::open(&path, new.clone(), "s1").expect("reopen");
        chain
            .append(&serde_json::json!({ "n": 9 }), true)
            .expect("append");
        let all = lines(&path);
        assert!(all[3].contains("\"chain\":\"rekeyed\""), "{}", all[3]);
        let both = [AuditKey::from_bytes([3; 32]), AuditKey::from_bytes([9; 32])];
        let Verdict::Intact(walk) = verify(&path, &both, None, None).expect("verify") else {
            panic!("broken")
        };
        assert_eq!((walk.records, walk.rekeyed.len()), (5, 1));
        assert!(walk.unchecked.is_empty());
        let Verdict::Intact(walk) =
            verify(&path, &[AuditKey::from_bytes([9; 32])], None, None).expect("verify")
        else {
            panic!("broken")
        };
        assert_eq!(walk.unchecked, vec![(1, 3, key_id(&key()))]);
        // An edit in the old part is still caught with its key.
        let mut edited = all.clone();
        edited[2] = edited[2].replace("\"n\":1", "\"n\":7");
        write(&path, &edited);
        assert!(matches!(
            verify(&path, &both, None, None).expect("verify"),
            Verdict::Broken { line: 3, .. }
        ));
        drop(chain);
    }

    #[test]
    fn a_cut_off_tail_is_caught_by_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 5);
        let all = lines(&path);
        let head: Value = serde_json::from_str(&all[5]).expect("json");
        let head = head["mac"].as_str().expect("mac").to_owned();
        assert!(matches!(
            verify(&path, &keys(), None, Some(&head)).expect("verify"),
            Verdict::Intact(_)
        ));
        write(&path, &all[..4]);
        assert!(matches!(
            verify(&path, &keys(), None, Some(&head)).expect("verify"),
            Verdict::Broken { line: 4, .. }
        ));
    }

    #[test]
    fn a_deleted_record_in_the_middle_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = written(&dir, 5);
        let mut all = lines(&path);
        all.remove(3);
        write(&path, &all);
        assert_eq!(broken_at(&path), 4);
    }
}
