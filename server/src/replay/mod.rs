//! The seen-ID store: each command ID is claimed once, for one client, until its request
//! goes stale; the store also keeps what happened to it, so a client's retry gets the
//! original answer instead of a second run.
//!
//! Backends: `memory` (one process, forgets on restart), `file:PATH` (the default: an
//! append-only log that survives restarts and kill -9, see `log`), `redis://…` (one
//! memory for a fleet of servers, see `redis`).

mod index;
mod log;
mod redis;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cmdchan_common::protocol::{Body, CommandId};

use crate::metrics::StoreMetrics;

pub use self::index::Index;
pub use self::log::LogStore;
pub use self::redis::RedisStore;

/// Largest answer kept for retries, encoded; a bigger one is remembered only as "ran".
pub const OUTCOME_CAP: usize = 64 * 1024;

/// What the store remembers about a command ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The client that claimed the ID; anyone else using it is replaying it.
    pub client: String,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Admitted at this unix second and not finished yet.
    Running { since: u64 },
    /// Finished at this unix second; the answer's bodies if they fit [`OUTCOME_CAP`].
    Done { at: u64, answer: Option<Vec<Body>> },
}

/// The result of claiming an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The ID was free and is now this request's.
    Fresh,
    /// The ID was already claimed.
    Seen(Entry),
}

/// Why the store could not answer; the request is then refused (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store holds its limit of {max} live IDs")]
    Full { max: usize },
    #[error("{0}")]
    Unavailable(String),
}

/// Where command IDs are remembered, with the store's latency and error counts.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    metrics: StoreMetrics,
}

#[derive(Debug)]
enum Backend {
    Memory(std::sync::Mutex<Index>),
    Log(LogStore),
    Redis(RedisStore),
}

/// How the operator named the store (`--replay-store`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Memory,
    File(PathBuf),
    /// A Redis URL (`redis://`, `rediss://` for TLS, `redis+unix://`), with the fleet
    /// name that namespaces its keys.
    Redis {
        url: String,
        fleet: String,
    },
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::File(path) => write!(f, "file:{}", path.display()),
            StoreSpec::Redis { url, fleet } => write!(f, "{} (fleet {fleet})", redact(url)),
        }
    }
}

/// `--replay-store` as typed: kept as text until the fleet name is known, and shown by
/// `Debug` without the user and password a Redis URL may hold.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct StoreArg(pub String);

impl std::str::FromStr for StoreArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

/// A URL without its user and password (`redis://***@host:6379/0`).
fn redact(url: &str) -> String {
    match url.split_once("://").zip(url.rsplit_once('@')) {
        Some(((scheme, _), (_, host))) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

impl StoreSpec {
    pub fn parse(text: &str, fleet: &str) -> Result<Self, String> {
        let redis = ["redis://", "rediss://", "redis+unix://"]
            .iter()
            .any(|p| text.starts_with(p));
        match text {
            "memory" => Ok(Self::Memory),
            _ if redis => Ok(Self::Redis {
                url: text.into(),
                fleet: fleet.into(),
            }),
            _ => match text.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(path.into())),
                _ => Err("a replay store is memory, file:PATH or a redis:// URL".into()),
            },
        }
    }

    /// The default: a log in systemd's state directory, `/var/lib/cmdchan` for root,
    /// or `~/.local/state/cmdchan` for anyone else.
    pub fn default_file() -> Self {
        let dir = match (
            std::env::var_os("STATE_DIRECTORY"),
            std::env::var_os("HOME"),
        ) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, _) if nix::unistd::geteuid().is_root() => "/var/lib/cmdchan".into(),
            (None, Some(home)) => Path::new(&home).join(".local/state/cmdchan"),
            (None, None) => "/var/lib/cmdchan".into(),
        };
        Self::File(dir.join("seen.log"))
    }
}

impl Store {
    /// Opens the store; `max_ids` bounds the live IDs held (the store fails closed beyond).
    pub async fn open(
        spec: &StoreSpec,
        max_ids: usize,
        fsync: bool,
        now: u64,
        metrics: StoreMetrics,
    ) -> Result<Self, String> {
        let backend = match spec {
            StoreSpec::Memory => Backend::Memory(std::sync::Mutex::new(Index::new(max_ids))),
            StoreSpec::File(path) => {
                let log = LogStore::open(path, max_ids, fsync, now);
                Backend::Log(log.map_err(|e| format!("{}: {e}", path.display()))?)
            }
            StoreSpec::Redis { url, fleet } => Backend::Redis(RedisStore::open(url, fleet).await?),
        };
        Ok(Self { backend, metrics })
    }

    /// Claims `id` for `entry.client` until `until`, if nobody has it; atomic. `durable`
    /// (the command has effects) makes the file store write the claim before returning.
    pub async fn claim(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
        durable: bool,
    ) -> Result<Claim, StoreError> {
        let started = std::time::Instant::now();
        let claimed = match &self.backend {
            Backend::Memory(index) => index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .claim(id, entry, until, now),
            Backend::Log(log) => log.claim(id, entry, until, now, durable),
            Backend::Redis(redis) => redis.claim(id, entry, until, now).await,
        };
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        if matches!(claimed, Err(StoreError::Unavailable(_))) {
            self.metrics.errors.inc();
        }
        claimed
    }

    /// Records what became of a claimed ID.
    pub async fn finish(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(index) => {
                index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .set(id, entry, until);
                Ok(())
            }
            Backend::Log(log) => log.finish(id, entry, until),
            Backend::Redis(redis) => redis.finish(id, entry, until, now).await,
        }
    }

    /// IDs held in this process (live or waiting to be pruned); 0 for Redis, whose
    /// keys expire by themselves.
    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::Memory(index) => index.lock().unwrap_or_else(|p| p.into_inner()).len(),
            Backend::Log(log) => log.len(),
            Backend::Redis(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer to keep for retries, if it is small enough (measured without encoding it).
pub fn keep(answer: Vec<Body>) -> Option<Vec<Body>> {
    let size = postcard::experimental::serialized_size(&answer).unwrap_or(usize::MAX);
    (size <= OUTCOME_CAP).then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmdchan_common::protocol::{Output, Reply, Stream};

    #[test]
    fn an_answer_is_kept_up_to_the_cap_as_encoded() {
        let output = |n| {
            Body::Output(Output {
                stream: Stream::Stdout,
                data: vec![b'x'; n],
            })
        };
        let small = vec![output(10), Body::Ok(Reply::Pong)];
        let encoded = postcard::to_stdvec(&small).expect("encodes").len();
        assert_eq!(
            postcard::experimental::serialized_size(&small).expect("sized"),
            encoded,
            "the cap is on the encoded size"
        );
        assert_eq!(keep(small.clone()), Some(small));
        assert_eq!(keep(vec![output(OUTCOME_CAP)]), None, "over the cap");
    }

    #[test]
    fn specs_parse_and_redis_passwords_stay_out_of_debug() {
        assert_eq!(StoreSpec::parse("memory", "f"), Ok(StoreSpec::Memory));
        assert_eq!(
            StoreSpec::parse("file:/x/seen.log", "f"),
            Ok(StoreSpec::File("/x/seen.log".into()))
        );
        assert!(StoreSpec::parse("file:", "f").is_err());
        assert!(StoreSpec::parse("mysql://x", "f").is_err());
        let spec = StoreSpec::parse("redis://user:s3cret@db:6379/2", "prod").expect("redis");
        let arg: StoreArg = "redis://user:s3cret@db:6379/2".parse().expect("infallible");
        assert!(!format!("{arg:?}").contains("s3cret"));
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("db:6379/2") && shown.contains("prod"),
            "{shown}"
        );
    }
}
