//! Where jobs' results live on this server, bounded in time, bytes and files: a running
//! job's output goes to a file of its own (`ID.live`, at most one per execution slot);
//! when it ends, its whole record (what it was, how it ended, its output) is appended to
//! the segment of its end time (a 30th of `result_retention` each), and the live file
//! goes. A segment whose jobs all ended longer ago than the retention is unlinked whole,
//! and so are the oldest when the total passes its cap: dropping results is dropping
//! files, never a pause. A live file found at start is a job the server lost while it ran.
//!
//! ```text
//! live file = record(meta) || chunk*             chunk = u8 stream || u32be len || bytes
//! segment   = record*                             record = u32be len || u32be crc32 || body
//! body      = postcard(Stored)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::warn;

use cmdchan_common::protocol::{CommandId, JobInfo, JobState, Stream};

/// How many segments the retention is cut into.
const SLICES: u64 = 30;

/// A job keeps where its output is every this many bytes of it, so that reading from
/// an offset reads from near there, not from the start.
const MARK_EVERY: u64 = 64 << 10;

/// Bytes of a job's output file read at a time.
const WINDOW: usize = 256 << 10;

/// What a job is, as kept with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: CommandId,
    pub client: String,
    pub command: String,
    pub run: Option<CommandId>,
    pub started_at: u64,
}

/// An ended job as a segment keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    meta: Meta,
    end: End,
    /// Its output, as chunks.
    output: Vec<u8>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub state: JobState,
    pub ended_at: u64,
    pub output_bytes: u64,
    pub digests: [[u8; 32]; 2],
}

/// The store's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Seconds an ended job's result is kept.
    pub retention: u64,
    /// Bytes of one job's output kept.
    pub per_job: u64,
    /// Bytes of all results (segments and live files) kept.
    pub total: u64,
}

/// One job in the index.
#[derive(Debug)]
struct Job {
    meta: Arc<Meta>,
    /// Bytes of output kept (of its chunks' payloads).
    kept: u64,
    output_bytes: u64,
    /// (payload offset, position in its output) of a chunk every [`MARK_EVERY`] bytes.
    marks: Vec<(u64, u64)>,
    place: Place,
}

#[derive(Debug)]
enum Place {
    /// Running: its live file, where its output starts there (after the meta record)
    /// and how many bytes the file holds.
    Live { file: File, head: u64, bytes: u64 },
    /// Ended: where its record is in which segment, and its output in the record.
    Ended {
        end: End,
        segment: u64,
        at: u64,
        len: u64,
        output_len: u64,
    },
}

/// One segment: its file and the jobs it holds.
#[derive(Debug)]
struct Segment {
    file: File,
    len: u64,
    ids: Vec<CommandId>,
}

/// The jobs' files and their index. Not thread-safe by itself: `Jobs` holds it locked.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    bounds: Bounds,
    jobs: HashMap<CommandId, Job>,
    /// By the end of their slice (unix seconds).
    segments: BTreeMap<u64, Segment>,
    /// Bytes in segments and live files.
    total: u64,
    /// Jobs dropped past the retention or the cap: (client, when dropped), so a status
    /// says `expired` rather than `unknown` (until a restart).
    expired: HashMap<CommandId, (String, u64)>,
    /// Jobs found lost at open, for the audit trail to record.
    lost: Vec<CommandId>,
    /// Keeps a second server off the directory.
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    /// Opens the store in `dir` (made if missing, mode 0700): reads the segments back
    /// and turns every live file into a job the server lost while it ran.
    pub fn open(dir: &Path, bounds: Bounds, now: u64) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let lock = crate::replay::lock(dir)?;
        let mut store = Self {
            _lock: lock,
            dir: dir.into(),
            bounds,
            jobs: HashMap::new(),
            segments: BTreeMap::new(),
            total: 0,
            expired: HashMap::new(),
            lost: Vec::new(),
        };
        store.read_segments()?;
        store.recover_live(now)?;
        store.drop_expired(now);
        Ok(store)
    }

    /// Records a job that starts now; its output goes to its live file.
    pub fn start(&mut self, meta: Meta) -> io::Result<()> {
        let path = self.live_path(&meta.id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)?;
        let head = record(&meta)?;
        file.write_all(&head)?;
        self.total += head.len() as u64;
        let id = meta.id;
        let job = Job {
            meta: Arc::new(meta),
            kept: 0,
            output_bytes: 0,
            marks: Vec::new(),
            place: Place::Live {
                file,
                head: head.len() as u64,
                bytes: head.len() as u64,
            },
        };
        self.jobs.insert(id, job);
        Ok(())
    }

    /// A piece of a running job's output: kept up to the per-job cap (and while the
    /// total has room), counted once kept or refused for room. A piece the file could
    /// not take is an error, and is neither kept nor counted (it is offered again).
    pub fn output(&mut self, id: &CommandId, stream: Stream, data: &[u8]) -> io::Result<()> {
        let (per_job, room) = (
            self.bounds.per_job,
            self.bounds.total.saturating_sub(self.total),
        );
        let Some(job) = self.jobs.get_mut(id) else {
            return Ok(());
        };
        let Place::Live { file, head, bytes } = &mut job.place else {
            return Ok(());
        };
        let take = (data.len() as u64)
            .min(per_job.saturating_sub(job.kept))
            .min(room.saturating_sub(5)) as usize;
        if take == 0 {
            job.output_bytes += data.len() as u64;
            return Ok(());
        }
        let mut chunk = Vec::with_capacity(take + 5);
        chunk.push(stream_byte(stream));
        chunk.extend_from_slice(&(take as u32).to_be_bytes());
        chunk.extend_from_slice(&data[..take]);
        if let Err(e) = file.write_all(&chunk) {
            // No half chunk stays behind: the piece is offered again whole.
            let _ = file.set_len(*bytes);
            return Err(e);
        }
        if job.kept >= job.marks.last().map_or(0, |m| m.0) + MARK_EVERY {
            job.marks.push((job.kept, *bytes - *head));
        }
        *bytes += chunk.len() as u64;
        job.kept += take as u64;
        job.output_bytes += data.len() as u64;
        self.total += chunk.len() as u64;
        Ok(())
    }

    /// A running job ended: its record goes to the segment of `end`'s time, its live
    /// file away.
    pub fn end(&mut self, id: &CommandId, end: End) -> io::Result<()> {
        let Some(job) = self.jobs.get(id) else {
            return Ok(());
        };
        let Place::Live { file, .. } = &job.place else {
            return Ok(());
        };
        let output = read_chunks(file)?;
        let stored = Stored {
            meta: (*job.meta).clone(),
            end,
            output,
        };
        self.place(id, &stored)?;
        let _ = std::fs::remove_file(self.live_path(id));
        Ok(())
    }

    /// Appends an ended job's record to its segment and points the index there.
    fn place(&mut self, id: &CommandId, stored: &Stored) -> io::Result<()> {
        let bytes = record(stored)?;
        let slice = self.slice();
        let key = stored.end.ended_at.div_ceil(slice).saturating_mul(slice);
        self.make_room(bytes.len() as u64, key);
        let segment = match self.segments.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .mode(0o600)
                    .open(self.dir.join(format!("{key}.jobs")))?;
                let len = file.metadata()?.len();
                v.insert(Segment {
                    file,
                    len,
                    ids: Vec::new(),
                })
            }
        };
        let at = segment.len;
        segment.file.write_all(&bytes)?;
        segment.len += bytes.len() as u64;
        segment.ids.push(*id);
        if let Some(job) = self.jobs.get_mut(id) {
            if let Place::Live { bytes, .. } = job.place {
                self.total = self.total.saturating_sub(bytes);
            }
            // The end's count is the program's: pieces never offered count too.
            job.output_bytes = job.output_bytes.max(stored.end.output_bytes);
            job.place = Place::Ended {
                end: stored.end,
                segment: key,
                at,
                len: bytes.len() as u64,
                output_len: stored.output.len() as u64,
            };
        }
        self.total += bytes.len() as u64;
        Ok(())
    }

    /// Drops the oldest segments until `more` bytes fit the total cap (never the one
    /// the record goes to).
    fn make_room(&mut self, more: u64, keep: u64) {
        while self.total + more > self.bounds.total {
            let Some((&oldest, _)) = self.segments.iter().next() else {
                return;
            };
            if oldest >= keep {
                return;
            }
            self.drop_segment(oldest, cmdchan_common::time::now());
        }
    }

    /// Drops the segments whose jobs all ended longer ago than the retention.
    pub fn drop_expired(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.bounds.retention);
        let old: Vec<u64> = self
            .segments
            .range(..=cutoff)
            .map(|(&key, _)| key)
            .collect();
        for key in old {
            self.drop_segment(key, now);
        }
        let keep_for = self.bounds.retention;
        self.expired
            .retain(|_, (_, at)| at.saturating_add(keep_for) >= now);
    }

    fn drop_segment(&mut self, key: u64, now: u64) {
        let Some(segment) = self.segments.remove(&key) else {
            return;
        };
        for id in &segment.ids {
            if let Some(job) = self.jobs.remove(id) {
                self.expired.insert(*id, (job.meta.client.clone(), now));
            }
        }
        self.total = self.total.saturating_sub(segment.len);
        let _ = std::fs::remove_file(self.dir.join(format!("{key}.jobs")));
    }

    /// What the store knows of job `id`, as `client` may see it (`None`: another
    /// client's, and `all` is false).
    pub fn info(&self, id: &CommandId, client: &str, all: bool) -> JobInfo {
        let unknown = JobInfo::unknown(*id);
        let visible = |owner: &str| all || owner == client;
        if let Some(job) = self.jobs.get(id).filter(|j| visible(&j.meta.client)) {
            return job.info();
        }
        match self.expired.get(id) {
            Some((owner, _)) if visible(owner) => JobInfo {
                state: JobState::Expired,
                ..unknown
            },
            _ => unknown,
        }
    }

    /// This client's jobs (every client's with `all`), newest first, at most `max`.
    pub fn list(&self, client: &str, all: bool, max: usize) -> Vec<JobInfo> {
        let mut mine: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| all || j.meta.client == client)
            .collect();
        mine.sort_by_key(|j| std::cmp::Reverse((j.meta.started_at, j.meta.id)));
        mine.into_iter().take(max).map(Job::info).collect()
    }

    /// A job's kept output from byte `from` (of the payloads), as (stream, bytes)
    /// pieces, at most `max` bytes: read from the last mark before `from`, so a read
    /// costs what it returns, wherever it starts.
    pub fn read(
        &self,
        id: &CommandId,
        from: u64,
        max: usize,
    ) -> io::Result<Vec<(Stream, Vec<u8>)>> {
        let Some(job) = self.jobs.get(id) else {
            return Ok(Vec::new());
        };
        let (file, start, len) = match &job.place {
            Place::Live { file, head, bytes } => (file, *head, bytes - head),
            Place::Ended {
                segment,
                at,
                len,
                output_len,
                ..
            } => match self.segments.get(segment) {
                // The output is the record's last field: its bytes end the record.
                Some(s) => (&s.file, at + len - output_len, *output_len),
                None => return Ok(Vec::new()),
            },
        };
        let mark = job.marks.iter().rev().find(|(payload, _)| *payload <= from);
        let (payload, pos) = mark.copied().unwrap_or((0, 0));
        let region = Region { file, start, len };
        region.read(pos, payload, from, max)
    }

    /// The jobs found lost when the store was opened (once).
    pub fn take_lost(&mut self) -> Vec<JobInfo> {
        let lost = std::mem::take(&mut self.lost);
        lost.iter()
            .filter_map(|id| self.jobs.get(id))
            .map(Job::info)
            .collect()
    }

    /// Whether job `id` still runs.
    pub fn running(&self, id: &CommandId) -> bool {
        matches!(
            self.jobs.get(id).map(|j| &j.place),
            Some(Place::Live { .. })
        )
    }

    /// The files the store holds (segments and live files).
    pub fn files(&self) -> usize {
        self.segments.len()
            + self
                .jobs
                .values()
                .filter(|j| matches!(j.place, Place::Live { .. }))
                .count()
    }

    pub fn bytes(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn slice(&self) -> u64 {
        (self.bounds.retention / SLICES).max(1)
    }

    fn live_path(&self, id: &CommandId) -> PathBuf {
        self.dir.join(format!("{}.live", hex::encode(id)))
    }

    /// Reads every segment back into the index; a torn tail is cut off.
    fn read_segments(&mut self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jobs"))
                .and_then(|k| k.parse::<u64>().ok())
            else {
                continue;
            };
            let mut file = OpenOptions::new().append(true).read(true).open(&path)?;
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(0))?;
            file.read_to_end(&mut bytes)?;
            let (records, at) = segment_records(&bytes);
            let mut ids = Vec::new();
            for (stored, at, used) in records {
                let id = stored.meta.id;
                let kept = payload_len(&stored.output);
                let job = Job {
                    kept,
                    output_bytes: stored.end.output_bytes,
                    marks: marks_of(&stored.output),
                    place: Place::Ended {
                        end: stored.end,
                        segment: key,
                        at: at as u64,
                        len: used as u64,
                        output_len: stored.output.len() as u64,
                    },
                    meta: Arc::new(stored.meta),
                };
                self.jobs.insert(id, job);
                ids.push(id);
            }
            if at < bytes.len() {
                warn!(path = %path.display(), bytes = bytes.len() - at, "a job segment ends in a torn record; cutting it off");
                file.set_len(at as u64)?;
            }
            self.total += at as u64;
            self.segments.insert(
                key,
                Segment {
                    file,
                    len: at as u64,
                    ids,
                },
            );
        }
        Ok(())
    }

    /// Live files left by a server that stopped while their jobs ran: each job is
    /// lost, its output until then kept.
    fn recover_live(&mut self, now: u64) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("live") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let Some((meta, output)) = live_record(&bytes) else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let output = output.to_vec();
            let digests = digests(&output);
            let stored = Stored {
                end: End {
                    state: JobState::Lost,
                    ended_at: now,
                    output_bytes: payload_len(&output),
                    digests,
                },
                meta,
                output,
            };
            let id = stored.meta.id;
            self.jobs.insert(
                id,
                Job {
                    meta: Arc::new(stored.meta.clone()),
                    kept: payload_len(&stored.output),
                    output_bytes: stored.end.output_bytes,
                    marks: marks_of(&stored.output),
                    place: Place::Live {
                        file: File::open(&path)?,
                        head: 0,
                        bytes: 0,
                    },
                },
            );
            self.place(&id, &stored)?;
            std::fs::remove_file(&path)?;
            self.lost.push(id);
        }
        Ok(())
    }
}

impl Job {
    fn info(&self) -> JobInfo {
        let (state, ended_at, digests) = match &self.place {
            Place::Live { .. } => (JobState::Running, 0, [[0; 32]; 2]),
            Place::Ended { end, .. } => (end.state, end.ended_at, end.digests),
        };
        JobInfo {
            id: self.meta.id,
            state,
            client: self.meta.client.clone(),
            command: self.meta.command.clone(),
            started_at: self.meta.started_at,
            ended_at,
            output_bytes: self.output_bytes,
            kept_bytes: self.kept,
            stdout_sha256: digests[0],
            stderr_sha256: digests[1],
            run: self.meta.run,
        }
    }
}

/// A stream as kept: 0 stdout, 1 stderr (also in Redis, as the digit).
pub(super) fn stream_byte(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// A segment's whole records, each with where it is and its length, and the length
/// they take (a torn or damaged tail lies past it).
fn segment_records(bytes: &[u8]) -> (Vec<(Stored, usize, usize)>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((stored, used)) = decode_record::<Stored>(&bytes[at..]) {
        records.push((stored, at, used));
        at += used;
    }
    (records, at)
}

/// A live file's job and its whole chunks (`None`: not even its head is whole).
fn live_record(bytes: &[u8]) -> Option<(Meta, &[u8])> {
    let (meta, used) = decode_record::<Meta>(bytes)?;
    Some((meta, whole_chunks(&bytes[used..])))
}

/// Reads job-store file bytes as recovery does, a segment's and a live file's, for the
/// fuzz target: any bytes give whole records and chunks within them, never a panic.
pub fn recover_bytes(bytes: &[u8]) -> usize {
    let (records, whole) = segment_records(bytes);
    for (stored, _, _) in &records {
        let _ = (
            marks_of(&stored.output),
            digests(&stored.output),
            payload_len(&stored.output),
        );
    }
    if let Some((_, output)) = live_record(bytes) {
        let _ = (marks_of(output), digests(output));
    }
    whole
}

/// `u32be len || u32be crc32 || postcard(value)`
fn record<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(value).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The record at the start of `bytes` and its length, if it is whole and intact.
fn decode_record<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<(T, usize)> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let value = postcard::from_bytes(body).ok()?;
    Some((value, 8 + len))
}

/// A live file's chunks (after its meta record): those that are whole.
fn read_chunks(file: &File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    reader.read_to_end(&mut bytes)?;
    let used = decode_record::<Meta>(&bytes).map_or(bytes.len(), |(_, used)| used);
    Ok(whole_chunks(&bytes[used..]).to_vec())
}

/// The longest prefix of `bytes` made of whole chunks.
pub fn whole_chunks(bytes: &[u8]) -> &[u8] {
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 5) {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if head[0] > 1 || at + 5 + len > bytes.len() {
            break;
        }
        at += 5 + len;
    }
    &bytes[..at]
}

fn chunks(bytes: &[u8]) -> impl Iterator<Item = (Stream, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = bytes.get(at..at + 5)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let data = bytes.get(at + 5..at + 5 + len)?;
        at += 5 + len;
        let stream = if head[0] == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        Some((stream, data))
    })
}

fn payload_len(bytes: &[u8]) -> u64 {
    chunks(bytes).map(|(_, d)| d.len() as u64).sum()
}

/// The SHA-256 of each stream's bytes in `chunks`.
pub fn digests(bytes: &[u8]) -> [[u8; 32]; 2] {
    use sha2::{Digest, Sha256};
    let mut hashes = [Sha256::new(), Sha256::new()];
    for (stream, data) in chunks(bytes) {
        hashes[stream_byte(stream) as usize].update(data);
    }
    let [out, err] = hashes;
    [out.finalize().into(), err.finalize().into()]
}

/// The marks of an output's chunks (see [`MARK_EVERY`]).
fn marks_of(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut marks: Vec<(u64, u64)> = Vec::new();
    let (mut payload, mut pos) = (0u64, 0u64);
    for (_, data) in chunks(bytes) {
        if payload >= marks.last().map_or(0, |m| m.0) + MARK_EVERY {
            marks.push((payload, pos));
        }
        payload += data.len() as u64;
        pos += 5 + data.len() as u64;
    }
    marks
}

/// A job's output where it lies in a file: `len` bytes of chunks from `start`.
struct Region<'a> {
    file: &'a File,
    start: u64,
    len: u64,
}

impl Region<'_> {
    /// The pieces of output from payload byte `from`, at most `max` bytes, reading on
    /// from the chunk at `pos` (whose payload starts at `payload`).
    fn read(
        &self,
        mut pos: u64,
        mut payload: u64,
        from: u64,
        max: usize,
    ) -> io::Result<Vec<(Stream, Vec<u8>)>> {
        let mut pieces = Vec::new();
        let mut left = max;
        let mut buf = vec![0; WINDOW.min(self.len.saturating_sub(pos) as usize)];
        while pos < self.len && left > 0 {
            let n = (self.len - pos).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], self.start + pos)?;
            let whole = whole_chunks(&buf[..n]);
            if whole.is_empty() {
                // A chunk longer than the window: not one the store wrote.
                break;
            }
            for (stream, data) in chunks(whole) {
                let end = payload + data.len() as u64;
                if end > from && left > 0 {
                    let skip = from.saturating_sub(payload) as usize;
                    let take = (data.len() - skip).min(left);
                    pieces.push((stream, data[skip..skip + take].to_vec()));
                    left -= take;
                }
                payload = end;
            }
            pos += whole.len() as u64;
        }
        Ok(pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: u8, client: &str) -> Meta {
        Meta {
            id: [n; 16],
            client: client.into(),
            command: "backup".into(),
            run: None,
            started_at: 1_000,
        }
    }

    fn end(state: JobState, at: u64) -> End {
        End {
            state,
            ended_at: at,
            output_bytes: 0,
            digests: [[0; 32]; 2],
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            retention: 3_000,
            per_job: 10,
            total: 1 << 20,
        }
    }

    #[test]
    fn a_job_runs_ends_and_is_read_back_from_offsets_and_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), bounds(), 1_000).expect("open");
        store.start(meta(1, "alice")).expect("start");
        store
            .output(&[1; 16], Stream::Stdout, b"hello ")
            .expect("out");
        store
            .output(&[1; 16], Stream::Stderr, b"world, and more")
            .expect("out");
        assert!(store.running(&[1; 16]));
        let read = store.read(&[1; 16], 3, 100).expect("read");
        assert_eq!(
            read,
            vec![
                (Stream::Stdout, b"lo ".to_vec()),
                (Stream::Stderr, b"worl".to_vec())
            ]
        );
        store
            .end(&[1; 16], end(JobState::Exited(0), 1_100))
            .expect("end");
        let info = store.info(&[1; 16], "alice", false);
        assert_eq!(
            (info.state, info.kept_bytes, info.output_bytes),
            (JobState::Exited(0), 10, 21)
        );
        assert_eq!(store.info(&[1; 16], "bob", false).state, JobState::Unknown);
        drop(store);
        let store = Store::open(dir.path(), bounds(), 1_200).expect("reopen");
        assert_eq!(
            store.info(&[1; 16], "alice", false).state,
            JobState::Exited(0)
        );
        assert_eq!(store.read(&[1; 16], 0, 100).expect("read").len(), 2);
    }

    #[test]
    fn a_job_running_when_the_server_stopped_is_lost_with_its_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), bounds(), 1_000).expect("open");
        store.start(meta(2, "alice")).expect("start");
        store
            .output(&[2; 16], Stream::Stdout, b"half")
            .expect("out");
        drop(store); // as kill -9 would: the live file stays
        let store = Store::open(dir.path(), bounds(), 1_050).expect("reopen");
        let info = store.info(&[2; 16], "alice", false);
        assert_eq!((info.state, info.kept_bytes), (JobState::Lost, 4));
        assert_eq!(store.files(), 1, "the live file became a segment record");
    }

    #[test]
    fn results_past_the_retention_expire_by_whole_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), bounds(), 1_000).expect("open");
        for n in 0..3 {
            store.start(meta(n, "alice")).expect("start");
            store
                .end(
                    &[n; 16],
                    end(JobState::Exited(0), 1_000 + u64::from(n) * 500),
                )
                .expect("end");
        }
        store.drop_expired(4_100);
        assert_eq!(
            store.info(&[0; 16], "alice", false).state,
            JobState::Expired
        );
        assert_eq!(
            store.info(&[2; 16], "alice", false).state,
            JobState::Exited(0)
        );
        assert_eq!(store.info(&[0; 16], "bob", false).state, JobState::Unknown);
    }

    #[test]
    fn a_read_from_any_offset_returns_those_bytes_live_ended_and_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wide = Bounds {
            per_job: 1 << 20,
            ..bounds()
        };
        let mut store = Store::open(dir.path(), wide, 1_000).expect("open");
        store.start(meta(3, "alice")).expect("start");
        let mut all = Vec::new();
        for i in 0..700u32 {
            let piece: Vec<u8> = (0..(i % 997 + 1)).map(|b| (b ^ i) as u8).collect();
            let stream = if i % 3 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            store.output(&[3; 16], stream, &piece).expect("out");
            all.extend_from_slice(&piece);
        }
        let check = |store: &Store| {
            for from in [
                0,
                1,
                65_535,
                65_536,
                100_000,
                all.len() as u64 - 5,
                all.len() as u64,
            ] {
                let mut got = Vec::new();
                let mut at = from;
                loop {
                    let pieces = store.read(&[3; 16], at, 40_000).expect("read");
                    if pieces.is_empty() {
                        break;
                    }
                    let n: usize = pieces.iter().map(|(_, d)| d.len()).sum();
                    assert!(n <= 40_000);
                    pieces.iter().for_each(|(_, d)| got.extend_from_slice(d));
                    at += n as u64;
                }
                assert_eq!(got, all[from as usize..], "from {from}");
            }
        };
        check(&store);
        store
            .end(&[3; 16], end(JobState::Exited(0), 1_100))
            .expect("end");
        check(&store);
        drop(store);
        check(&Store::open(dir.path(), wide, 1_200).expect("reopen"));
    }
}
