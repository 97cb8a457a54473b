//! An append-only file written in batches (group commit), for the audit file and the
//! replay log.
//!
//! A caller queues its bytes under a short lock; a writer thread writes whatever is
//! queued at most [`DELAY`] later, in one `write(2)`. Bytes a caller must have in the
//! kernel before it goes on (a program's `started` record, its command ID's claim) go
//! through [`Batched::append_now`], which writes the queue and them, in order, before it
//! returns.
//!
//! Why: one `write(2)` per record, under a lock every connection shares, cost more than
//! the rest of a request, and the lock made the runtime's threads wait for each other.
//! The price: a record appended with [`Batched::append`] that is not yet written is
//! lost if the process is killed (kill -9, OOM) within [`DELAY`]; a clean stop writes it.

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest time a queued record waits before it is written.
pub const DELAY: Duration = Duration::from_millis(1);

/// Largest room a new queue starts with.
const ROOM: usize = 1 << 20;

/// A file and the bytes queued for it.
#[derive(Debug)]
pub struct Batched {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// Lock order: `state`, then `file`. A batch is taken from the queue and the file is
/// locked before `state` is let go, so batches reach the file in queue order; the write
/// itself runs without `state`, so callers queueing meanwhile never wait for the disk.
///
/// The writer thread sleeps in `thread::park` when nothing was queued for a while, and
/// a caller that queues into an empty queue unparks it after letting go of `state`.
/// Unlike a condition variable's notify, an unpark of a thread that is not parked makes
/// no syscall: under load the writer is never parked, and no caller holds `state` across
/// a wake-up.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    file: Mutex<Output>,
}

#[derive(Debug)]
struct Output {
    file: File,
    /// `fdatasync` after each write.
    fsync: bool,
}

#[derive(Debug)]
struct State {
    queue: Vec<u8>,
    /// What went wrong writing queued bytes in the background, for the next caller.
    failed: Option<io::Error>,
    stop: bool,
}

impl Batched {
    pub fn new(file: File, fsync: bool) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                failed: None,
                stop: false,
            }),
            file: Mutex::new(Output { file, fsync }),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("cmdchan-append".into())
                .spawn(move || shared.write_queued())?
        };
        Ok(Self {
            shared,
            writer: Some(writer),
        })
    }

    /// Queues `bytes`; they are written within [`DELAY`]. An error is an earlier
    /// background write that failed (those bytes are lost; these are not queued).
    pub fn append(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(e) = state.failed.take() {
            return Err(e);
        }
        let first = state.queue.is_empty();
        state.queue.extend_from_slice(bytes);
        drop(state);
        if first {
            self.wake_writer();
        }
        Ok(())
    }

    fn wake_writer(&self) {
        if let Some(writer) = &self.writer {
            writer.thread().unpark();
        }
    }

    /// Writes the queue and then `bytes` before returning.
    pub fn append_now(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(e) = state.failed.take() {
            return Err(e);
        }
        state.queue.extend_from_slice(bytes);
        let (batch, mut out) = self.shared.take(state);
        out.write(&batch)
    }

    /// Writes the queue, then replaces the file with what `open` returns (rotation,
    /// compaction). If `open` fails the old file stays.
    pub fn replace<T>(
        &self,
        open: impl FnOnce(&mut File) -> io::Result<(File, T)>,
    ) -> io::Result<T> {
        let (batch, mut out) = self.shared.take(self.shared.lock());
        out.write(&batch)?;
        let (file, extra) = open(&mut out.file)?;
        out.file = file;
        Ok(extra)
    }
}

impl Drop for Batched {
    /// Writes what is queued; a clean stop loses nothing.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.wake_writer();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the queue as one batch and the file to write it to, in that order.
    fn take(&self, mut state: MutexGuard<'_, State>) -> (Vec<u8>, MutexGuard<'_, Output>) {
        // The next queue starts the size of this one, so that it does not grow step by
        // step again (bounded, so one burst does not pin memory).
        let room = Vec::with_capacity(state.queue.len().min(ROOM));
        let batch = std::mem::replace(&mut state.queue, room);
        let out = self.file.lock().unwrap_or_else(|p| p.into_inner());
        (batch, out)
    }

    /// The writer thread: parks until a first record is queued, then writes what was
    /// queued once every [`DELAY`] until a [`DELAY`] passes with nothing queued; until
    /// the owner is dropped.
    ///
    /// It parks only after a quiet [`DELAY`], not after each write: under steady load
    /// it wakes once per batch from its sleep, and callers never have to wake it.
    fn write_queued(&self) {
        loop {
            let state = self.lock();
            if state.queue.is_empty() && !state.stop {
                // An unpark between here and `park` is not lost: `park` then returns
                // at once.
                drop(state);
                std::thread::park();
                continue;
            }
            drop(state);
            if self.write_while_busy() {
                return;
            }
        }
    }

    /// Sleeps [`DELAY`] and writes what was queued meanwhile, again and again; false
    /// after a quiet [`DELAY`], true once the owner stopped and the last batch is
    /// written.
    fn write_while_busy(&self) -> bool {
        loop {
            std::thread::sleep(DELAY);
            let state = self.lock();
            let stop = state.stop;
            if state.queue.is_empty() && !stop {
                return false;
            }
            let (batch, mut out) = self.take(state);
            if let Err(e) = out.write(&batch) {
                drop(out);
                self.lock().failed = Some(e);
            }
            if stop {
                return true;
            }
        }
    }
}

impl Output {
    /// Writes one batch. A failed batch is not written again: after a partial write,
    /// that would duplicate its start.
    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.file.write_all(batch)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str) -> (std::path::PathBuf, File) {
        let path = dir.path().join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        (path, file)
    }

    /// Polls `done` until it holds; fails after 5 s.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(DELAY);
        }
    }

    #[test]
    fn appends_land_in_order_and_append_now_writes_before_it_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, f) = file(&dir, "a.log");
        let out = Batched::new(f, false).expect("batched");
        out.append(b"one\n").expect("append");
        out.append(b"two\n").expect("append");
        out.append_now(b"three\n").expect("append_now");
        assert_eq!(std::fs::read(&path).expect("read"), b"one\ntwo\nthree\n");
        out.append(b"four\n").expect("append");
        eventually("never written", || {
            std::fs::read(&path).expect("read").len() >= 19
        });
        out.append(b"five\n").expect("append");
        drop(out);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"one\ntwo\nthree\nfour\nfive\n"
        );
    }

    #[test]
    fn a_failed_background_write_is_reported_to_the_next_caller() {
        // /dev/full takes opens but fails every write with ENOSPC.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = Batched::new(f, false).expect("batched");
        assert!(out.append_now(b"x").is_err(), "a full disk is an error");
        out.append(b"lost").expect("queued");
        let mut reported = None;
        eventually("error never reported", || {
            reported = out.append(b"y").err();
            reported.is_some()
        });
        let e = reported.expect("reported");
        assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
    }

    #[test]
    fn replace_writes_the_queue_to_the_old_file_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, f) = file(&dir, "old.log");
        let out = Batched::new(f, false).expect("batched");
        out.append(b"old\n").expect("append");
        let (new, g) = file(&dir, "new.log");
        out.replace(|_| Ok((g, ()))).expect("replace");
        out.append_now(b"new\n").expect("append_now");
        assert_eq!(std::fs::read(&old).expect("read"), b"old\n");
        assert_eq!(std::fs::read(&new).expect("read"), b"new\n");
    }
}
