//! Jobs: programs run detached from their connection, their results kept on this server
//! to be fetched by ID (no central cache to fill or lose). The store keeps them within
//! their bounds (`store`); the runner drives a job's program to its end (`runner`); this
//! file is the handle every connection shares: the store behind a lock, and a signal
//! for those who follow a job (`job.wait`, `job.attach`) that something changed.

mod runner;
pub mod store;

use std::io;
use std::path::Path;
use std::sync::Mutex;

use tokio::sync::watch;

use cmdchan_common::protocol::{CommandId, JobInfo, Stream};
use cmdchan_common::sync;

pub use runner::{spawn, Job};
pub use store::{Bounds, End, Meta};

use store::Store;

/// The most jobs `job.list` shows.
pub const LIST_MAX: usize = 1000;

/// The jobs of this server.
#[derive(Debug)]
pub struct Jobs {
    store: Mutex<Store>,
    /// Moved on at every output and end, so followers wake and look again.
    changed: watch::Sender<u64>,
}

impl Jobs {
    /// Opens the store in `dir`; jobs a stopped server left running are lost now.
    pub fn open(dir: &Path, bounds: Bounds, now: u64) -> io::Result<Self> {
        let (changed, _) = watch::channel(0);
        Ok(Self {
            store: Mutex::new(Store::open(dir, bounds, now)?),
            changed,
        })
    }

    /// The jobs a stopped server left running, found lost at open (once).
    pub fn take_lost(&self) -> Vec<JobInfo> {
        sync::lock(&self.store).take_lost()
    }

    pub fn start(&self, meta: Meta) -> io::Result<()> {
        sync::lock(&self.store).start(meta)?;
        self.bump();
        Ok(())
    }

    pub fn output(&self, id: &CommandId, stream: Stream, data: &[u8]) -> io::Result<()> {
        sync::lock(&self.store).output(id, stream, data)?;
        self.bump();
        Ok(())
    }

    pub fn end(&self, id: &CommandId, end: End) -> io::Result<()> {
        sync::lock(&self.store).end(id, end)?;
        self.bump();
        Ok(())
    }

    /// What `client` may see of job `id` (every client's with `all`).
    pub fn info(&self, id: &CommandId, client: &str, all: bool) -> JobInfo {
        sync::lock(&self.store).info(id, client, all)
    }

    pub fn infos(&self, ids: &[CommandId], client: &str, all: bool) -> Vec<JobInfo> {
        let store = sync::lock(&self.store);
        ids.iter().map(|id| store.info(id, client, all)).collect()
    }

    pub fn list(&self, client: &str, all: bool) -> Vec<JobInfo> {
        sync::lock(&self.store).list(client, all, LIST_MAX)
    }

    /// Job `id`'s kept output from payload byte `from`, at most `max` bytes.
    pub fn read(
        &self,
        id: &CommandId,
        from: u64,
        max: usize,
    ) -> io::Result<Vec<(Stream, Vec<u8>)>> {
        sync::lock(&self.store).read(id, from, max)
    }

    /// Wakes when any job writes output or ends.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Drops results past their retention (from the store's sweeper, about once a
    /// second).
    pub fn maintain(&self, now: u64) {
        sync::lock(&self.store).drop_expired(now);
    }

    /// (files, bytes, jobs) the store holds.
    pub fn size(&self) -> (usize, u64, usize) {
        let store = sync::lock(&self.store);
        (store.files(), store.bytes(), store.len())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
