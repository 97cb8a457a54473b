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

use cmdchan_common::sync;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest time a queued record waits before it is written.
pub const DELAY: Duration = Duration::from_millis(1);

/// How often the sink's [`Sink::tick`] runs.
const TICK: Duration = Duration::from_secs(1);

/// Where batches go: a file with its own rules for framing and failure.
pub trait Sink: Send + 'static {
    type Item: Send + 'static;

    /// Writes a batch of records queued in the background. A failure is the sink's to
    /// handle and report (logs, a gap record); the records are gone either way.
    fn write_queued(&mut self, batch: Vec<Self::Item>);

    /// Writes one record a caller waits for; the error is that caller's.
    fn write_now(&mut self, item: Self::Item) -> io::Result<()>;

    /// Runs about once a second on the writer thread (upkeep such as dropping expired
    /// segments, or writing a checkpoint).
    fn tick(&mut self) {}
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

/// Lock order: `state`, then `sink`. A batch is taken from the queue and the sink is
/// locked before `state` is let go, so batches reach the file in queue order; the write
/// itself runs without `state`, so callers queueing meanwhile never wait for the disk.
///
/// The writer sleeps in `thread::park_timeout` while nothing is queued; a caller that
/// queues into an empty queue unparks it after letting go of `state`. Unlike a
/// condition variable's notify, an unpark of a thread that is not parked makes no
/// syscall: under load the writer is never parked.
struct Shared<S: Sink> {
    state: Mutex<State<S::Item>>,
    sink: Mutex<S>,
}

struct State<T> {
    queue: Vec<T>,
    stop: bool,
}

impl<S: Sink> Batched<S> {
    pub fn new(sink: S) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                stop: false,
            }),
            sink: Mutex::new(sink),
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

    /// Queues `item`; it is written within [`DELAY`].
    pub fn append(&self, item: S::Item) {
        let mut state = self.shared.lock();
        let first = state.queue.is_empty();
        state.queue.push(item);
        drop(state);
        if first {
            self.wake_writer();
        }
    }

    /// Writes the queue, then `item`, before returning; the result is `item`'s.
    pub fn append_now(&self, item: S::Item) -> io::Result<()> {
        let (batch, mut sink) = self.shared.take(self.shared.lock());
        if !batch.is_empty() {
            sink.write_queued(batch);
        }
        sink.write_now(item)
    }

    /// Writes the queue, then runs `f` on the sink (rotation).
    pub fn with_sink<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        let (batch, mut sink) = self.shared.take(self.shared.lock());
        if !batch.is_empty() {
            sink.write_queued(batch);
        }
        f(&mut sink)
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
    fn lock(&self) -> MutexGuard<'_, State<S::Item>> {
        sync::lock(&self.state)
    }

    /// Takes the queue as one batch and the sink to write it to, in that order.
    fn take<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<S::Item>>,
    ) -> (Vec<S::Item>, MutexGuard<'a, S>) {
        let room = Vec::with_capacity(state.queue.len().min(4096));
        let batch = std::mem::replace(&mut state.queue, room);
        let sink = sync::lock(&self.sink);
        (batch, sink)
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
                let (batch, mut sink) = self.take(self.lock());
                if !batch.is_empty() {
                    sink.write_queued(batch);
                }
                if stop {
                    return;
                }
            }
            if Instant::now() >= next_tick {
                sync::lock(&self.sink).tick();
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
        type Item = &'static str;
        fn write_queued(&mut self, batch: Vec<&'static str>) {
            let mut seen = self.0.lock().expect("lock");
            seen.extend(batch.into_iter().map(|s| format!("queued {s}")));
        }
        fn write_now(&mut self, item: &'static str) -> io::Result<()> {
            if item == "bad" {
                return Err(io::Error::other("disk full"));
            }
            self.0.lock().expect("lock").push(format!("now {item}"));
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
        out.append("one");
        out.append("two");
        out.append_now("three").expect("append_now");
        let got = seen.lock().expect("lock").clone();
        assert_eq!(got, ["queued one", "queued two", "now three"]);
        out.append("four");
        eventually("never written", || seen.lock().expect("lock").len() == 4);
        out.append("five");
        drop(out);
        assert_eq!(
            seen.lock().expect("lock").last().map(String::as_str),
            Some("queued five")
        );
    }

    #[test]
    fn a_failed_write_now_is_its_callers_alone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Batched::new(Log(seen.clone())).expect("batched");
        out.append("other");
        assert!(
            out.append_now("bad").is_err(),
            "the caller hears its own failure"
        );
        assert!(
            out.append_now("good").is_ok(),
            "and the next caller does not"
        );
        assert_eq!(seen.lock().expect("lock").len(), 2);
    }
}
