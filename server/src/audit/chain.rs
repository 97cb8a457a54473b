//! The audit file: JSON lines in a keyed chain. Each line carries its sequence number,
//! the MAC of the line before it, and its own MAC under a key only the server (and its
//! admin) holds, so an edited, deleted, reordered or inserted record breaks the chain,
//! and nobody without the key can mend it by recomputing.
//!
//! ```text
//! text_i = record_i as a JSON object, without its closing brace,
//!          then ,"seq":i,"prev":"hex(mac_{i-1})"}
//! mac_i  = HMAC-SHA256(audit key, text_i)
//! line_i = text_i without its closing brace, then ,"mac":"hex(mac_i)"}
//! ```
//! Every file starts with a header record, `"chain":"new"` (seq 0, prev all zeros) or
//! `"chain":"rotated"` (continuing the file before it), so a file whose first records
//! were deleted no longer starts with a header. The chain advances only with what
//! reached the file: a write that fails (a full disk) is cut off, and once writing works
//! again a `"gap"` record says how many records were lost and why, so a full disk is
//! never mistaken for an edit. The count of records lost waits in a small file beside the
//! chain (`.NAME.gap`, its room taken when the chain opens, so a full disk can still take
//! it), so a server stopped while the disk is full writes the gap at its next start.
//! About once a minute the head (seq and MAC) is logged as a checkpoint (target
//! `cmdchan::audit::checkpoint`): kept in the system journal, it is an anchor a rewrite
//! of the file cannot move (`audit-verify --head`).
//!
//! Each header names the key its part of the chain is under (`key`: a key ID, not the
//! key). A server that opens a file whose last record its key does not verify (its zone
//! key changed) goes on with a `"chain":"rekeyed"` header chained from that record, under
//! its own key: the history before it still verifies with the key it was written under.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tracing::{error, info, warn};

use cmdchan_common::keys::AuditKey;

use super::stamp::Stamp;
use crate::batch::{Batched, Records, Sink};

/// The `prev` of a new chain's header.
pub const GENESIS: [u8; 32] = [0; 32];

/// How often the chain's head is logged as a checkpoint, when it moved, unless the
/// server says otherwise (`audit_checkpoint`).
const CHECKPOINT: Duration = Duration::from_secs(60);

/// `,"mac":"` + 64 hex digits + `"}`
pub const MAC_SUFFIX: usize = 8 + 64 + 2;

/// `key_id = hex(first 8 bytes of HMAC(audit key, "cmdchan/v2/audit-key-id"))`: names a
/// chain's key in its headers without giving anything of it away.
pub fn key_id(key: &AuditKey) -> String {
    hex::encode(&mac(key, b"cmdchan/v2/audit-key-id")[..8])
}

/// An append-only, keyed audit chain.
#[derive(Debug)]
pub struct Chain {
    path: PathBuf,
    out: Batched<Writer>,
}

/// The file and the head of its chain.
struct Writer {
    path: PathBuf,
    file: File,
    key: Arc<AuditKey>,
    /// HMAC keyed once with `key`: each line's MAC starts from a copy, not from the
    /// key's two padded blocks again.
    keyed: Hmac<Sha256>,
    server: String,
    /// Bytes of the file that are whole lines.
    good: u64,
    /// Bytes past `good` may be on disk (a cut that failed): cut them first.
    torn: bool,
    seq: u64,
    last: [u8; 32],
    /// Records that could not be written since the last gap record.
    lost: Option<Lost>,
    /// Where `lost` survives a stop.
    pending: Pending,
    /// The head last logged as a checkpoint, and when.
    checkpoint: (u64, Instant),
    checkpoint_every: Duration,
}

/// Records a failed write kept out of the file: how many, since when, the last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct Lost {
    records: u64,
    /// Unix milliseconds of the first failure.
    since_ms: u64,
    error: String,
}

impl Lost {
    fn since(&self) -> Stamp {
        Stamp::at(std::time::UNIX_EPOCH + Duration::from_millis(self.since_ms))
    }
}

impl Chain {
    /// Opens (or creates, mode 0600) the file at `path` and continues its chain.
    pub fn open(path: &Path, key: Arc<AuditKey>, server: &str) -> io::Result<Self> {
        let writer = Writer::open(path, key, server, None)?;
        Ok(Self {
            path: path.into(),
            out: Batched::new(writer)?,
        })
    }

    /// Reopens the path (after rotation): a new file continues the chain with a
    /// `"rotated"` header.
    pub fn reopen(&self) -> io::Result<()> {
        self.out.with_sink(|w| {
            let head = (w.seq, w.last);
            let mut fresh = Writer::open(&w.path, w.key.clone(), &w.server, Some(head))?;
            // A reload is not a new minute: the checkpoint keeps its own clock.
            (fresh.checkpoint, fresh.checkpoint_every) = (w.checkpoint, w.checkpoint_every);
            *w = fresh;
            Ok(())
        })
    }

    /// Appends `record`. With `now`, it is in the kernel when this returns and an error
    /// is this record's; otherwise it follows within [`crate::batch::DELAY`].
    pub fn append(&self, record: &impl Serialize, now: bool) -> io::Result<()> {
        // Queued is the JSON object without its closing brace, reopened for the
        // chain's fields.
        let encode = |buf: &mut Vec<u8>| {
            serde_json::to_writer(&mut *buf, record)?;
            buf.pop();
            Ok(())
        };
        match now {
            true => self.out.append_now((), encode),
            false => self.out.append((), encode),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs the chain's head as a checkpoint about every `every` (when it moved).
    pub fn checkpoint_every(&self, every: Duration) {
        self.out.with_sink(|w| w.checkpoint_every = every);
    }
}

impl Sink for Writer {
    type Meta = ();

    fn write_queued(&mut self, batch: &Records<()>) {
        let count = batch.len() as u64;
        if let Err(e) = self.write(batch.iter().map(|((), body)| body)) {
            self.lose(count, &e);
        }
    }

    fn write_now(&mut self, (): (), body: &[u8]) -> io::Result<()> {
        self.write([body]).inspect_err(|e| self.lose(1, e))
    }

    fn tick(&mut self) {
        let (seq, at) = self.checkpoint;
        if self.seq != seq && at.elapsed() >= self.checkpoint_every {
            info!(target: "cmdchan::audit::checkpoint", path = %self.path.display(), seq = self.seq, mac = %hex::encode(self.last), "audit checkpoint");
            self.checkpoint = (self.seq, Instant::now());
        }
    }
}

impl Writer {
    /// Opens `path` for appending. An existing chain goes on from its last line (a torn
    /// last line is cut off and recorded as a gap), under a `rekeyed` header if that line
    /// is not under this key; an empty file gets a header: a new chain, or with `carry`
    /// the continuation of the file rotated away. A gap a stopped server could not write
    /// is written now.
    fn open(
        path: &Path,
        key: Arc<AuditKey>,
        server: &str,
        carry: Option<(u64, [u8; 32])>,
    ) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)?;
        let (good, last_line, torn) = last_whole_line(&mut file)?;
        let (pending, lost) = Pending::open(path)?;
        let mut w = Self {
            path: path.into(),
            file,
            keyed: keyed(&key),
            key,
            server: server.into(),
            good,
            torn: false,
            seq: 0,
            last: GENESIS,
            lost,
            pending,
            checkpoint: (0, Instant::now()),
            checkpoint_every: CHECKPOINT,
        };
        if torn > 0 {
            warn!(path = %path.display(), bytes = torn, "the audit file ends in a torn record; cutting it off");
            w.file.set_len(good)?;
            w.count_lost(1, "a torn record was cut off at start");
        }
        let header = match last_line
            .as_deref()
            .and_then(|line| Some((line, head_of(line)?)))
        {
            Some((line, head)) => {
                (w.seq, w.last) = head;
                (!verifies(line, &w.key)).then_some("rekeyed")
            }
            None => {
                (w.seq, w.last) = carry.unwrap_or((u64::MAX, GENESIS));
                Some(if carry.is_some() { "rotated" } else { "new" })
            }
        };
        if header == Some("rekeyed") {
            warn!(path = %path.display(), "the audit file's last record is not under this server's audit key (its zone key changed, or the record was edited): the chain goes on under this key from a \"rekeyed\" header; audit-verify checks each part with its own key");
        }
        match header {
            Some(kind) => w.write_header(kind)?,
            None if w.lost.is_some() => w.write([])?,
            None => {}
        }
        w.checkpoint = (w.seq, Instant::now());
        Ok(w)
    }

    fn write_header(&mut self, kind: &str) -> io::Result<()> {
        let header = Header {
            chain: kind,
            key: &key_id(&self.key),
            server: &self.server,
            time: Stamp::now(),
        };
        let mut body = serde_json::to_vec(&header)?;
        body.pop();
        // The header comes first; a pending gap goes right after it.
        let lost = self.lost.take();
        self.write([&body[..]])?;
        self.lost = lost;
        match self.lost.is_some() {
            true => self.write([]),
            false => Ok(()),
        }
    }

    /// Writes the pending gap record (if any), then `batch`, each line chained from the
    /// one before; the head moves only once the write succeeded.
    fn write<'b>(&mut self, bodies: impl IntoIterator<Item = &'b [u8]>) -> io::Result<()> {
        if self.torn {
            self.file.set_len(self.good)?;
            self.torn = false;
        }
        let (mut seq, mut last) = (self.seq, self.last);
        let bodies = bodies.into_iter();
        let mut out = Vec::with_capacity(bodies.size_hint().0 * 480);
        if let Some(lost) = &self.lost {
            let gap = Gap {
                gap: GapInfo {
                    records: lost.records,
                    since: lost.since(),
                    error: &lost.error,
                },
                server: &self.server,
                time: Stamp::now(),
            };
            let mut body = serde_json::to_vec(&gap)?;
            body.pop();
            (seq, last) = self.chain(&mut out, &body, seq, last);
        }
        for body in bodies {
            (seq, last) = self.chain(&mut out, body, seq, last);
        }
        if let Err(e) = self.file.write_all(&out) {
            self.torn = true;
            if self.file.set_len(self.good).is_ok() {
                self.torn = false;
            }
            return Err(e);
        }
        self.good += out.len() as u64;
        (self.seq, self.last) = (seq, last);
        if let Some(lost) = self.lost.take() {
            self.pending.clear();
            warn!(path = %self.path.display(), records = lost.records, "the audit file is written again; a gap record says how many records were lost");
        }
        Ok(())
    }

    /// Appends one line chained from (`seq`, `last`) to `out`; returns the new head.
    fn chain(&self, out: &mut Vec<u8>, body: &[u8], seq: u64, last: [u8; 32]) -> (u64, [u8; 32]) {
        let seq = seq.wrapping_add(1);
        let start = out.len();
        out.extend_from_slice(body);
        out.extend_from_slice(b",\"seq\":");
        // Written in place: a String per line would be a malloc per record.
        let _ = write!(out, "{seq}");
        out.extend_from_slice(b",\"prev\":\"");
        let at = out.len();
        out.resize(at + 64, 0);
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(last, &mut out[at..]);
        out.extend_from_slice(b"\"}");
        let mac: [u8; 32] = self
            .keyed
            .clone()
            .chain_update(&out[start..])
            .finalize()
            .into_bytes()
            .into();
        out.pop();
        out.extend_from_slice(b",\"mac\":\"");
        let at = out.len();
        out.resize(at + 64, 0);
        let _ = hex::encode_to_slice(mac, &mut out[at..]);
        out.extend_from_slice(b"\"}\n");
        (seq, mac)
    }

    fn lose(&mut self, count: u64, e: &io::Error) {
        let records = self.count_lost(count, &e.to_string());
        error!(path = %self.path.display(), error = %e, lost = records, "cannot write the audit file; the records are counted in a gap record");
    }

    /// Adds `count` records to the pending gap, kept beside the file too; returns the
    /// gap's count.
    fn count_lost(&mut self, count: u64, error: &str) -> u64 {
        let now_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let lost = self.lost.get_or_insert(Lost {
            records: 0,
            since_ms: now_ms,
            error: String::new(),
        });
        lost.records += count;
        lost.error = error.to_owned();
        self.pending.save(lost);
        lost.records
    }
}

/// The pending gap's file beside the chain (`.NAME.gap`): [`Pending::ROOM`] bytes taken
/// when the chain opens, then only written over in place, so it takes the count on a
/// disk that is full.
struct Pending {
    path: PathBuf,
    file: File,
}

impl Pending {
    const ROOM: usize = 512;

    /// Opens (or makes) the file beside `chain`, and what it holds.
    fn open(chain: &Path) -> io::Result<(Self, Option<Lost>)> {
        let name = chain
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let path = chain.with_file_name(format!(".{name}.gap"));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        let mut held = Vec::new();
        file.read_to_end(&mut held)?;
        let lost = serde_json::from_slice::<Lost>(held.trim_ascii()).ok();
        if held.len() < Self::ROOM {
            file.write_all_at(&[b' '; Self::ROOM], 0)?;
        }
        if lost.is_some() {
            warn!(path = %path.display(), "records the audit file could not take before the last stop: writing their gap record");
        }
        Ok((Self { path, file }, lost))
    }

    /// Keeps `lost` (best effort: its room was taken at open).
    fn save(&self, lost: &Lost) {
        let mut text = serde_json::to_vec(lost).unwrap_or_default();
        if text.len() > Self::ROOM {
            let mut short = lost.clone();
            short.error.truncate(Self::ROOM / 2);
            text = serde_json::to_vec(&short).unwrap_or_default();
        }
        text.resize(Self::ROOM, b' ');
        if let Err(e) = self.file.write_all_at(&text, 0) {
            error!(path = %self.path.display(), error = %e, "cannot keep the count of lost audit records; a stop now loses it");
        }
    }

    fn clear(&self) {
        let _ = self.file.write_all_at(&[b' '; Self::ROOM], 0);
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("path", &self.path).finish()
    }
}

/// Whether `line` carries the MAC of its own text under `key`.
fn verifies(line: &[u8], key: &AuditKey) -> bool {
    let Some(cut) = line.len().checked_sub(MAC_SUFFIX) else {
        return false;
    };
    let mut text = line[..cut].to_vec();
    text.push(b'}');
    let Some(claimed) = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("mac")?.as_str().map(str::to_owned))
    else {
        return false;
    };
    openssl::memcmp::eq(hex::encode(mac(key, &text)).as_bytes(), claimed.as_bytes())
}

impl Writer {}

/// `mac = HMAC-SHA256(key, text)`
pub fn mac(key: &AuditKey, text: &[u8]) -> [u8; 32] {
    keyed(key).chain_update(text).finalize().into_bytes().into()
}

fn keyed(key: &AuditKey) -> Hmac<Sha256> {
    // HMAC accepts a key of any length, so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

#[derive(Serialize)]
struct Header<'a> {
    chain: &'a str,
    key: &'a str,
    server: &'a str,
    time: Stamp,
}

#[derive(Serialize)]
struct Gap<'a> {
    gap: GapInfo<'a>,
    server: &'a str,
    time: Stamp,
}

#[derive(Serialize)]
struct GapInfo<'a> {
    records: u64,
    since: Stamp,
    error: &'a str,
}

/// The length of the file's whole lines, its last whole line (if any), and how many
/// bytes follow it (a torn line).
fn last_whole_line(file: &mut File) -> io::Result<(u64, Option<Vec<u8>>, u64)> {
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let ends: Vec<usize> = tail
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let whole_end = ends.last().map(|&i| i + 1);
        let Some(end) = whole_end else {
            if start == 0 {
                return Ok((0, None, len));
            }
            window *= 2;
            continue;
        };
        let line_start = match ends.len() {
            1 if start > 0 => {
                window *= 2;
                continue;
            }
            1 => 0,
            n => ends[n - 2] + 1,
        };
        let line = tail[line_start..end - 1].to_vec();
        let good = start + end as u64;
        return Ok((good, Some(line), len - good));
    }
}

/// `seq` and `mac` of a written line, if it has them.
pub fn head_of(line: &[u8]) -> Option<(u64, [u8; 32])> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let seq = value.get("seq")?.as_u64()?;
    let mac = hex::decode(value.get("mac")?.as_str()?).ok()?;
    Some((seq, mac.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    fn key() -> Arc<AuditKey> {
        Arc::new(AuditKey::from_bytes([7; 32]))
    }

    fn record(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("n".into(), Value::from(n));
        m
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    /// PROTOCOL.md's audit chain vectors, also printed by scripts/vectors.py.
    #[test]
    fn macs_match_protocol_md_vectors() {
        let key = AuditKey::from_bytes(
            hex::decode("52b2f352def384d33010d8b3e781832b878a0f01131aadde8cf07cee0586749b")
                .expect("hex")
                .try_into()
                .expect("32 bytes"),
        );
        let zeros = "0".repeat(64);
        let id = key_id(&key);
        assert_eq!(id, "0e8a6def938125e1");
        let header = format!("{{\"chain\":\"new\",\"key\":\"{id}\",\"server\":\"db1\",\"time\":\"2030-01-01T00:00:00.000Z\",\"seq\":0,\"prev\":\"{zeros}\"}}");
        let mac0 = hex::encode(mac(&key, header.as_bytes()));
        assert_eq!(
            mac0,
            "f95a3278d84d8df1eae840b32ae8b2624d27b806899e2d6fcf383463a7b7f597"
        );
        let record =
            format!("{{\"client\":\"alice\",\"outcome\":\"ok\",\"seq\":1,\"prev\":\"{mac0}\"}}");
        assert_eq!(
            hex::encode(mac(&key, record.as_bytes())),
            "b9ccb570d62c4452800860efcbc87fb9e33dbcdd0fb9666ff4a254e67ac83033"
        );
    }

    #[test]
    fn a_new_file_starts_with_a_header_and_each_line_chains_from_the_one_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let chain = Chain::open(&path, key(), "s1").expect("open");
        chain.append(&record(1), true).expect("append");
        chain.append(&record(2), true).expect("append");
        let got = lines(&path);
        assert_eq!(got[0]["chain"], "new");
        assert_eq!(got[0]["seq"], 0);
        assert_eq!(got[0]["prev"], hex::encode(GENESIS));
        assert_eq!(got[2]["seq"], 2);
        assert_eq!(got[2]["prev"], got[1]["mac"]);
    }

    #[test]
    fn the_chain_continues_after_a_restart_and_a_torn_line_becomes_a_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        Chain::open(&path, key(), "s1")
            .expect("open")
            .append(&record(1), true)
            .expect("append");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"torn\":").expect("write");
        Chain::open(&path, key(), "s1")
            .expect("reopen")
            .append(&record(2), true)
            .expect("append");
        let got = lines(&path);
        assert_eq!(got.len(), 4, "header, record, gap, record");
        assert_eq!(got[2]["gap"]["records"], 1);
        assert_eq!(got[2]["prev"], got[1]["mac"]);
        assert_eq!(got[3]["n"], 2);
    }

    #[test]
    fn a_rotated_file_starts_with_a_rotated_header_chained_from_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let chain = Chain::open(&path, key(), "s1").expect("open");
        chain.append(&record(1), true).expect("append");
        let old = lines(&path);
        std::fs::rename(&path, dir.path().join("audit.log.1")).expect("rotate");
        chain.reopen().expect("reopen");
        chain.append(&record(2), true).expect("append");
        let new = lines(&path);
        assert_eq!(new[0]["chain"], "rotated");
        assert_eq!(new[0]["prev"], old[1]["mac"]);
        assert_eq!(new[0]["seq"], 2);
    }
}
