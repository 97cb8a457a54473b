//! Group commit for the audit file and the replay log: callers queue records under a
//! short lock; a writer thread hands whatever is queued to the file's [`Sink`] at most
//! [`DELAY`] later, in one batch. A record a caller must have written before it goes on
//! (a program's claim, its `started` and outcome records) goes through
//! [`Batched::append_now`], which writes the queue first and then that record alone, so
//! its success or failure is the caller's own and no one else's.
//!
//! Why: one `write(2)` per record, under a lock every connection shares, cost more than
//! the rest of a request. The price: a record queued with [`Batched::append`] is lost if
//! the process is killed (kill -9, OOM) within [`DELAY`]; a clean stop writes it. A
//! batch that cannot be written is the sink's to handle (cut the torn bytes off, count
//! what was lost): it is never reported to an unrelated caller.
//!
//! Records are queued as bytes in one buffer ([`Records`]), encoded first into a buffer
//! of the caller's thread, and a batch's buffers are kept for the next: once they have
//! grown, a record costs no allocation, and no thread frees memory another thread
//! allocated for it (a `free` into another thread's malloc arena takes that arena's
//! lock, which the request threads then wait on).

use cmdchan_common::sync;
use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest time a queued record waits before it is written.
pub const DELAY: Duration = Duration::from_millis(1);

/// How often the sink's [`Sink::tick`] runs.
const TICK: Duration = Duration::from_secs(1);

/// A queue that held more than this gives its buffers back once written.
const KEEP: usize = 1 << 20;

/// Where batches go: a file with its own rules for framing and failure.
pub trait Sink: Send + 'static {
    /// What a record carries beside its bytes (the replay log's segment).
    type Meta: Copy + Send + 'static;

    /// Writes a batch of records queued in the background. A failure is the sink's to
    /// handle and report (logs, a gap record); the records are gone either way.
    fn write_queued(&mut self, batch: &Records<Self::Meta>);

    /// Writes one record a caller waits for; the error is that caller's.
    fn write_now(&mut self, meta: Self::Meta, record: &[u8]) -> io::Result<()>;

    /// Runs about once a second on the writer thread (upkeep such as dropping expired
    /// segments, or writing a checkpoint).
    fn tick(&mut self) {}
}

/// Encoded records, one after another in one buffer, each with its meta.
#[derive(Debug)]
pub struct Records<M> {
    bytes: Vec<u8>,
    /// Each record's meta and the end of its bytes.
    ends: Vec<(M, usize)>,
}

impl<M: Copy> Records<M> {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }

    fn push(&mut self, meta: M, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push((meta, self.bytes.len()));
    }

    /// Empties it for reuse; a large one gives its memory back.
    fn clear(&mut self) {
        match self.bytes.capacity() > KEEP {
            true => *self = Self::new(),
            false => {
                self.bytes.clear();
                self.ends.clear();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records in the order they were queued.
    pub fn iter(&self) -> impl Iterator<Item = (M, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, end)| end));
        self.ends
            .iter()
            .zip(starts)
            .map(|(&(meta, end), start)| (meta, &self.bytes[start..end]))
    }
}

thread_local! {
    /// Where a record is encoded before it is queued: kept per thread, so encoding
    /// allocates nothing once it has grown to the records' size.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's encoding buffer, emptied (a fresh one if it is in use).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let out = f(&mut buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// A sink and the records queued for it.
pub struct Batched<S: Sink> {
    shared: Arc<Shared<S>>,
    writer: Option<JoinHandle<()>>,
}

impl<S: Sink> std::fmt::Debug for Batched<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

/// Lock order: `state`, then `out`. A batch is taken from the queue and the sink is
/// locked before `state` is let go, so batches reach the file in queue order; the write
/// itself runs without `state`, so callers queueing meanwhile never wait for the disk.
///
/// The writer sleeps in `thread::park_timeout` while nothing is queued; a caller that
/// queues into an empty queue unparks it after letting go of `state`. Unlike a
/// condition variable's notify, an unpark of a thread that is not parked makes no
/// syscall: under load the writer is never parked.
struct Shared<S: Sink> {
    state: Mutex<State<S::Meta>>,
    out: Mutex<Out<S>>,
}

struct State<M> {
    queue: Records<M>,
    stop: bool,
}

/// The sink, and the last batch's buffers (emptied) for the queue to take next.
struct Out<S: Sink> {
    sink: S,
    spare: Records<S::Meta>,
}

impl<S: Sink> Out<S> {
    /// Writes `batch` (if it holds anything) and keeps its buffers for the next one.
    fn write(&mut self, mut batch: Records<S::Meta>) {
        if !batch.is_empty() {
            self.sink.write_queued(&batch);
        }
        batch.clear();
        self.spare = batch;
    }
}

impl<S: Sink> Batched<S> {
    pub fn new(sink: S) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Records::new(),
                stop: false,
            }),
            out: Mutex::new(Out {
                sink,
                spare: Records::new(),
            }),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("cmdchan-append".into())
                .spawn(move || shared.run())?
        };
        Ok(Self {
            shared,
            writer: Some(writer),
        })
    }

    /// Queues the record `encode` writes; it is written within [`DELAY`]. An encoding
    /// error queues nothing.
    pub fn append(
        &self,
        meta: S::Meta,
        encode: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        with_scratch(|buf| {
            encode(buf)?;
            let mut state = self.shared.lock();
            let first = state.queue.is_empty();
            state.queue.push(meta, buf);
            drop(state);
            if first {
                self.wake_writer();
            }
            Ok(())
        })
    }

    /// Writes the queue, then the record `encode` writes, before returning; the result
    /// is that record's.
    pub fn append_now(
        &self,
        meta: S::Meta,
        encode: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        with_scratch(|buf| {
            encode(buf)?;
            self.with_sink(|sink| sink.write_now(meta, buf))
        })
    }

    /// Writes the queue, then runs `f` on the sink (rotation).
    pub fn with_sink<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        let (batch, mut out) = self.shared.take(self.shared.lock());
        out.write(batch);
        f(&mut out.sink)
    }

    fn wake_writer(&self) {
        if let Some(writer) = &self.writer {
            writer.thread().unpark();
        }
    }
}

impl<S: Sink> Drop for Batched<S> {
    /// Writes what is queued; a clean stop loses nothing.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.wake_writer();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl<S: Sink> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, State<S::Meta>> {
        sync::lock(&self.state)
    }

    /// Takes the queue as one batch and the sink to write it to, in that order; the
    /// queue goes on in the last batch's buffers.
    fn take<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<S::Meta>>,
    ) -> (Records<S::Meta>, MutexGuard<'a, Out<S>>) {
        let mut out = sync::lock(&self.out);
        let spare = std::mem::replace(&mut out.spare, Records::new());
        let batch = std::mem::replace(&mut state.queue, spare);
        (batch, out)
    }

    /// The writer thread: while records come, writes what was queued once every
    /// [`DELAY`]; otherwise parks, waking for the next record or the next tick; until
    /// the owner is dropped and the last batch written.
    fn run(&self) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let state = self.lock();
            let stop = state.stop;
            if state.queue.is_empty() && !stop {
                drop(state);
                // An unpark between here and `park_timeout` is not lost: it returns at once.
                std::thread::park_timeout(next_tick.saturating_duration_since(Instant::now()));
            } else {
                drop(state);
                // Let the batch gather for a moment: under load, one write per DELAY.
                std::thread::sleep(DELAY);
                let (batch, mut out) = self.take(self.lock());
                out.write(batch);
                if stop {
                    return;
                }
            }
            if Instant::now() >= next_tick {
                sync::lock(&self.out).sink.tick();
                next_tick = Instant::now() + TICK;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it was given, in order; fails `write_now` of "bad".
    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Sink for Log {
        type Meta = u8;
        fn write_queued(&mut self, batch: &Records<u8>) {
            let mut seen = self.0.lock().expect("lock");
            seen.extend(
                batch
                    .iter()
                    .map(|(meta, r)| format!("queued {meta} {}", String::from_utf8_lossy(r))),
            );
        }
        fn write_now(&mut self, meta: u8, record: &[u8]) -> io::Result<()> {
            if record == b"bad" {
                return Err(io::Error::other("disk full"));
            }
            let record = String::from_utf8_lossy(record);
            self.0
                .lock()
                .expect("lock")
                .push(format!("now {meta} {record}"));
            Ok(())
        }
    }

    fn text(s: &'static str) -> impl FnOnce(&mut Vec<u8>) -> io::Result<()> {
        move |buf| {
            buf.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }

    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(DELAY);
        }
    }

    #[test]
    fn queued_records_land_in_order_before_one_written_now() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Batched::new(Log(seen.clone())).expect("batched");
        out.append(1, text("one")).expect("append");
        out.append(2, text("two")).expect("append");
        out.append_now(3, text("three")).expect("append_now");
        let got = seen.lock().expect("lock").clone();
        assert_eq!(got, ["queued 1 one", "queued 2 two", "now 3 three"]);
        out.append(4, text("four")).expect("append");
        eventually("never written", || seen.lock().expect("lock").len() == 4);
        // The next batch reuses the last one's buffers: nothing of it shows again.
        out.append(5, text("five")).expect("append");
        drop(out);
        assert_eq!(
            seen.lock().expect("lock")[3..],
            ["queued 4 four", "queued 5 five"]
        );
    }

    #[test]
    fn a_failed_write_now_is_its_callers_alone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Batched::new(Log(seen.clone())).expect("batched");
        out.append(0, text("other")).expect("append");
        assert!(
            out.append_now(0, text("bad")).is_err(),
            "the caller hears its own failure"
        );
        assert!(
            out.append_now(0, text("good")).is_ok(),
            "and the next caller does not"
        );
        assert_eq!(seen.lock().expect("lock").len(), 2);
    }

    #[test]
    fn a_record_that_cannot_be_encoded_queues_nothing() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Batched::new(Log(seen.clone())).expect("batched");
        let half = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(b"half");
            Err(io::Error::other("cannot encode"))
        };
        assert!(out.append(0, half).is_err());
        assert!(out.append_now(0, half).is_err());
        out.append(1, text("whole")).expect("append");
        drop(out);
        assert_eq!(*seen.lock().expect("lock"), ["queued 1 whole"]);
    }
}
