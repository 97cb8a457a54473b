//! Jobs: programs run detached from their connection, their results kept to be fetched
//! by ID (no central cache to fill or lose). Two places keep them, within the same
//! bounds: this server's own directory (`store`), or, for a pool of processes that
//! answer as one server ID, the pool's shared Redis (`redis`). The runner drives a
//! job's program to its end (`runner`); this file is the handle every connection
//! shares: the store, and a signal for those who follow a job (`job.wait`,
//! `job.attach`) that something changed here (jobs another process of a pool runs are
//! polled).

mod redis;
mod runner;
pub mod store;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use cmdchan_common::protocol::{CommandId, JobInfo, Stream};
use cmdchan_common::sync;

pub use runner::{spawn, Job};
pub use store::{Bounds, End, Meta};

use crate::replay::StoreError;
use redis::RedisJobs;
use store::Store;

/// The most jobs `job.list` shows.
pub const LIST_MAX: usize = 1000;

/// Bytes of output all jobs may hold in memory while the store cannot take it.
const WAITING_MAX: u64 = 64 << 20;

/// How often a follower looks again at a job another process of the pool may run.
const POLL: Duration = Duration::from_millis(200);

/// Where the jobs' results are kept (`--job-store`, or the pool's Redis).
#[derive(Clone, PartialEq, Eq)]
pub enum Place {
    Dir(std::path::PathBuf),
    /// The replay store's Redis URL: the pool shares its jobs there.
    Redis(String),
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Dir(dir) => write!(f, "{}", dir.display()),
            Place::Redis(url) => f.write_str(&crate::replay::redact(url)),
        }
    }
}

/// The jobs of this server.
#[derive(Debug)]
pub struct Jobs {
    backend: Backend,
    per_job: u64,
    /// Bytes of output held in memory while the store cannot take them, all jobs.
    waiting: AtomicU64,
    /// Moved on at every output and end here, so followers wake and look again.
    changed: watch::Sender<u64>,
}

// One per server: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Backend {
    Files(Mutex<Store>),
    Redis(RedisJobs),
}

impl Jobs {
    /// Opens the store; in a directory, jobs a stopped server left running are lost now
    /// (in Redis, once their process's lease runs out).
    pub fn open(place: &Place, server_id: &str, bounds: Bounds, now: u64) -> io::Result<Self> {
        let backend = match place {
            Place::Dir(dir) => Backend::Files(Mutex::new(Store::open(dir, bounds, now)?)),
            Place::Redis(url) => {
                Backend::Redis(RedisJobs::open(url, server_id, bounds).map_err(io::Error::other)?)
            }
        };
        let (changed, _) = watch::channel(0);
        Ok(Self {
            backend,
            per_job: bounds.per_job,
            waiting: AtomicU64::new(0),
            changed,
        })
    }

    /// The jobs a stopped server left running, found lost at open (once).
    pub fn take_lost(&self) -> Vec<JobInfo> {
        match &self.backend {
            Backend::Files(store) => sync::lock(store).take_lost(),
            Backend::Redis(_) => Vec::new(),
        }
    }

    pub async fn start(&self, meta: Meta) -> io::Result<()> {
        match &self.backend {
            Backend::Files(store) => sync::lock(store).start(meta)?,
            Backend::Redis(redis) => redis.start(&meta).await.map_err(io::Error::other)?,
        }
        self.bump();
        Ok(())
    }

    /// A piece of job `id`'s output, `before` bytes into it.
    pub async fn output(
        &self,
        id: &CommandId,
        stream: Stream,
        data: &[u8],
        before: u64,
    ) -> io::Result<()> {
        match &self.backend {
            Backend::Files(store) => sync::lock(store).output(id, stream, data)?,
            Backend::Redis(redis) => redis
                .output(id, stream, data, before)
                .await
                .map_err(io::Error::other)?,
        }
        self.bump();
        Ok(())
    }

    /// Job `id` ended. An error of kind `NotFound` when the pool declared it lost
    /// before it ended (that stays its state): trying again is no use.
    pub async fn end(&self, id: &CommandId, end: End) -> io::Result<()> {
        match &self.backend {
            Backend::Files(store) => sync::lock(store).end(id, end)?,
            Backend::Redis(redis) => {
                if !redis.end(id, &end).await.map_err(io::Error::other)? {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "the pool declared the job lost while this process could not renew its lease; it stays lost",
                    ));
                }
            }
        }
        self.bump();
        Ok(())
    }

    /// What `client` may see of job `id` (every client's with `all`).
    pub async fn info(
        &self,
        id: &CommandId,
        client: &str,
        all: bool,
    ) -> Result<JobInfo, StoreError> {
        let mut infos = self.infos(std::slice::from_ref(id), client, all).await?;
        infos
            .pop()
            .ok_or_else(|| StoreError::Unavailable("no job read".into()))
    }

    pub async fn infos(
        &self,
        ids: &[CommandId],
        client: &str,
        all: bool,
    ) -> Result<Vec<JobInfo>, StoreError> {
        match &self.backend {
            Backend::Files(store) => {
                let store = sync::lock(store);
                Ok(ids.iter().map(|id| store.info(id, client, all)).collect())
            }
            Backend::Redis(redis) => redis.infos(ids, client, all).await,
        }
    }

    pub async fn list(&self, client: &str, all: bool) -> Result<Vec<JobInfo>, StoreError> {
        match &self.backend {
            Backend::Files(store) => Ok(sync::lock(store).list(client, all, LIST_MAX)),
            Backend::Redis(redis) => redis.list(client, all, LIST_MAX).await,
        }
    }

    /// Job `id`'s kept output from payload byte `from`, at most `max` bytes.
    pub async fn read(
        &self,
        id: &CommandId,
        from: u64,
        max: usize,
    ) -> io::Result<Vec<(Stream, Vec<u8>)>> {
        match &self.backend {
            Backend::Files(store) => sync::lock(store).read(id, from, max),
            Backend::Redis(redis) => redis.read(id, from, max).await.map_err(io::Error::other),
        }
    }

    /// Bytes of one job's output kept.
    pub fn per_job(&self) -> u64 {
        self.per_job
    }

    /// Takes up to `want` bytes of the budget for output waiting for the store; how
    /// many it got. Jobs past it keep no more output until the store is back (what
    /// they kept is still where their output starts).
    pub fn hold(&self, want: u64) -> u64 {
        let mut got = 0;
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                got = want.min(WAITING_MAX.saturating_sub(held));
                Some(held + got)
            });
        got
    }

    /// Gives `bytes` of [`Jobs::hold`]'s budget back.
    pub fn release(&self, bytes: u64) {
        self.waiting.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Wakes when a job of this process writes output or ends.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How often a follower must look again by itself: jobs in Redis may run in
    /// another process, whose changes wake no one here.
    pub fn poll_every(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Files(_) => None,
            Backend::Redis(_) => Some(POLL),
        }
    }

    /// Drops results past their retention (from the upkeep, about once a second); in
    /// Redis also renews this process's lease and returns the jobs of processes gone
    /// quiet, declared lost, that this process is to record ([`Jobs::record_lost`]).
    pub async fn maintain(&self, now: u64) -> Result<Vec<CommandId>, StoreError> {
        match &self.backend {
            Backend::Files(store) => {
                sync::lock(store).drop_expired(now);
                Ok(Vec::new())
            }
            Backend::Redis(redis) => redis.sweep(now).await,
        }
    }

    /// The lost jobs [`Jobs::maintain`] returned, as the audit trail records them; once
    /// recorded, [`Jobs::audited`] says so (until then, another sweep hands them out
    /// again: recorded twice rather than never).
    pub async fn record_lost(&self, ids: &[CommandId]) -> Result<Vec<JobInfo>, StoreError> {
        match &self.backend {
            Backend::Files(_) => Ok(Vec::new()),
            Backend::Redis(redis) => redis.lost(ids).await,
        }
    }

    /// The lost jobs [`Jobs::record_lost`] returned are in the audit trail now.
    pub async fn audited(&self, lost: &[JobInfo]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Files(_) => Ok(()),
            Backend::Redis(redis) => {
                let ids: Vec<CommandId> = lost.iter().map(|info| info.id).collect();
                redis.audited(&ids).await
            }
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
