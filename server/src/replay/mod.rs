//! The seen-ID store: each command ID is claimed once, for one client and one request,
//! until that request goes stale; the store also keeps what happened to it, so a
//! client's retry gets the original answer instead of a second run.
//!
//! Its scope is one server ID: every request names the server it is for (its target),
//! so a request cannot run on two servers, and a store is shared only by the processes
//! that answer as one server ID.
//!
//! Backends: `memory` (one process, forgets on restart), `file:DIR` (the default:
//! segment files that survive restarts, kill -9 and a full disk, see `log`), `redis://…`
//! (one memory for a pool of processes, see `redis`).

mod log;
mod redis;
mod table;
mod ticket;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cmdchan_common::protocol::{Body, CommandId};

use crate::metrics::StoreMetrics;

pub(crate) use self::log::lock;
pub use self::log::{whole_records, LogStore};
pub use self::redis::RedisStore;
pub use self::table::Table;
pub use self::ticket::Ticket;

/// Largest answer kept for retries, encoded; a bigger one is remembered only as "ran".
pub const OUTCOME_CAP: usize = 64 * 1024;

/// What the store remembers about a command ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The client that claimed the ID; anyone else using it is replaying it.
    pub client: String,
    /// The first 8 bytes of the request's digest (see `admit::digest`): the same
    /// client sending another request under this ID is not retrying.
    pub digest: u64,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Admitted, and not finished yet.
    Running,
    /// Finished.
    Done(Answer),
}

/// What a finished command left for a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A program's answer, its bodies in order, if it fit [`OUTCOME_CAP`].
    Kept(Vec<Body>),
    /// A built-in: no effect, so a retry is answered by running it again.
    Builtin,
    /// A program whose answer was too large to keep: a retry hears `duplicate`.
    Dropped,
    /// A program that was running when the server stopped without a word (kill -9,
    /// power loss): it may or may not have finished, so it is not run again, and a
    /// retry hears `duplicate` saying so.
    Interrupted,
}

/// One command ID's place in the store: the ID, what is remembered of it, and the unix
/// second after which it may be forgotten (its request could no longer pass freshness).
/// Its postcard encoding, in this field order, is the file store's record body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: CommandId,
    pub until: u64,
    pub entry: Entry,
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

/// Where command IDs are remembered, with the store's latency and error counts. A
/// clone is the same store (a program's [`Ticket`] holds one).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<Backend>,
    metrics: StoreMetrics,
}

#[derive(Debug)]
enum Backend {
    Memory(Table),
    Log(LogStore),
    Redis(Box<RedisStore>),
}

/// How the operator named the store (`--replay-store`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Memory,
    /// A directory of segment files.
    File(PathBuf),
    /// A Redis URL (`redis://`, `rediss://` for TLS, `redis+unix://`, `redis+sentinel://`,
    /// `redis+cluster://`).
    Redis(String),
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::File(path) => write!(f, "file:{}", path.display()),
            StoreSpec::Redis(url) => f.write_str(&redact(url)),
        }
    }
}

/// `--replay-store` as typed, shown by `Debug` without the user and password a Redis
/// URL may hold.
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

/// `text` with the user and password of every URL in it replaced by `***`
/// (`redis://***@host:6379/0`): for errors and logs that may quote a URL.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', white space or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || "\"'`".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo) => {
                out.push_str("***");
                out.push_str(&authority[userinfo..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

impl StoreSpec {
    /// Where a server keeps more state beside this store's: `DIR.NAME` for a store in
    /// `file:DIR`, else `NAME` in the default state directory.
    pub fn beside(&self, name: &str) -> PathBuf {
        match self {
            StoreSpec::File(dir) => {
                let mut file = dir.file_name().unwrap_or_default().to_os_string();
                file.push(format!(".{name}"));
                dir.with_file_name(file)
            }
            _ => match StoreSpec::default_file() {
                StoreSpec::File(dir) => dir.with_file_name(name),
                _ => PathBuf::from("/var/lib/cmdchan").join(name),
            },
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let redis = [
            "redis://",
            "rediss://",
            "redis+unix://",
            "redis+sentinel://",
            "redis+cluster://",
        ]
        .iter()
        .any(|p| text.starts_with(p));
        match text {
            "memory" => Ok(Self::Memory),
            _ if redis => Ok(Self::Redis(text.into())),
            _ => match text.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(path.into())),
                _ => Err("a replay store is memory, file:DIR or a redis:// URL".into()),
            },
        }
    }

    /// The default: segments in systemd's state directory, `/var/lib/cmdchan` for root,
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
        Self::File(dir.join("replay"))
    }
}

/// What a store is opened with besides its spec.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most live IDs held by a local store (it fails closed beyond).
    pub max_ids: usize,
    /// Flush the file store to disk after every write.
    pub fsync: bool,
    /// The server ID: Redis keys live under it.
    pub server_id: String,
    /// The freshness window: the file store cuts its segments in slices of it.
    pub window: Duration,
    /// How far apart the clocks of servers sharing a Redis may be; keys live this much
    /// longer than the window asks.
    pub clock_skew: Duration,
    /// Replicas that must acknowledge a Redis claim (`WAIT`) before it counts; 0: none.
    pub redis_replicas: u32,
}

impl StoreOptions {
    /// Defaults for `max_ids` IDs: no fsync, a 60 s window, no skew, no replicas.
    pub fn with_max(max_ids: usize) -> Self {
        Self {
            max_ids,
            fsync: false,
            server_id: "default".into(),
            window: Duration::from_secs(60),
            clock_skew: Duration::ZERO,
            redis_replicas: 0,
        }
    }
}

impl Store {
    /// Opens the store. A Redis that cannot be reached now is not an error: requests
    /// are refused with `store unavailable` until it answers.
    pub async fn open(
        spec: &StoreSpec,
        opts: &StoreOptions,
        now: u64,
        metrics: StoreMetrics,
    ) -> Result<Self, String> {
        let backend = match spec {
            StoreSpec::Memory => Backend::Memory(Table::new(opts.max_ids)),
            StoreSpec::File(dir) => {
                let log = LogStore::open(dir, opts, now);
                Backend::Log(log.map_err(|e| format!("{}: {e}", dir.display()))?)
            }
            StoreSpec::Redis(url) => Backend::Redis(Box::new(RedisStore::open(url, opts)?)),
        };
        let backend = Arc::new(backend);
        maintain(Arc::downgrade(&backend));
        Ok(Self { backend, metrics })
    }

    /// Claims the record's ID for its client, if nobody has it; atomic. `durable` (the
    /// command has effects) makes the claim durable before this returns.
    pub async fn claim(
        &self,
        record: &Record,
        now: u64,
        durable: bool,
    ) -> Result<Claim, StoreError> {
        let started = std::time::Instant::now();
        let claimed = match &*self.backend {
            Backend::Memory(table) => table.claim(&record.id, &record.entry, record.until, now),
            Backend::Log(log) => log.claim(record, now, durable),
            // Boxed: the Redis future is large, and it is the rare backend.
            Backend::Redis(redis) => Box::pin(redis.claim(record, now)).await,
        };
        self.metrics.latency.observe(started.elapsed());
        if matches!(claimed, Err(StoreError::Unavailable(_))) {
            self.metrics.errors.inc();
        }
        claimed
    }

    /// Records what became of a claimed ID, durably (with `redis_replicas`, held by
    /// the replicas too) before this returns: an outcome is kept before it is answered.
    pub async fn finish(&self, record: &Record, now: u64) -> Result<(), StoreError> {
        match &*self.backend {
            Backend::Memory(table) => {
                table.set(&record.id, &record.entry, record.until);
                Ok(())
            }
            Backend::Log(log) => log.finish(record),
            Backend::Redis(redis) => Box::pin(redis.finish(record, now)).await,
        }
    }

    /// IDs held in this process (live or waiting to be swept); 0 for Redis, whose
    /// keys expire by themselves.
    pub fn len(&self) -> usize {
        match &*self.backend {
            Backend::Memory(table) => table.len(),
            Backend::Log(log) => log.len(),
            Backend::Redis(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what is queued and stops background work (a clean stop loses nothing).
    pub fn close(&self) {
        if let Backend::Log(log) = &*self.backend {
            log.flush();
        }
    }
}

/// Once a second, on a thread of its own (a sweep of a million IDs takes milliseconds,
/// which a runtime thread must not spend): drops expired IDs and segments. Ends when
/// the store is dropped.
fn maintain(backend: std::sync::Weak<Backend>) {
    let spawned = std::thread::Builder::new()
        .name("cmdchan-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let Some(backend) = backend.upgrade() else {
                return;
            };
            let now = cmdchan_common::time::now();
            match &*backend {
                Backend::Memory(table) => {
                    table.sweep(now);
                }
                Backend::Log(log) => log.maintain(now),
                Backend::Redis(redis) => redis.maintain(),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the replay store's sweeper; expired IDs stay until restart");
    }
}

/// The answer to keep for retries, if it is small enough (measured without encoding it).
pub fn keep(answer: Vec<Body>) -> Answer {
    let size = postcard::experimental::serialized_size(&answer).unwrap_or(usize::MAX);
    match size <= OUTCOME_CAP {
        true => Answer::Kept(answer),
        false => Answer::Dropped,
    }
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
        assert_eq!(keep(small.clone()), Answer::Kept(small));
        assert_eq!(
            keep(vec![output(OUTCOME_CAP)]),
            Answer::Dropped,
            "over the cap"
        );
    }

    #[test]
    fn specs_parse_and_redis_passwords_stay_out_of_debug() {
        assert_eq!(StoreSpec::parse("memory"), Ok(StoreSpec::Memory));
        assert_eq!(
            StoreSpec::parse("file:/x/replay"),
            Ok(StoreSpec::File("/x/replay".into()))
        );
        assert!(StoreSpec::parse("file:").is_err());
        assert!(StoreSpec::parse("mysql://x").is_err());
        let spec = StoreSpec::parse("redis://user:s3cret@db:6379/2").expect("redis");
        let arg: StoreArg = "redis://user:s3cret@db:6379/2".parse().expect("infallible");
        assert!(!format!("{arg:?}").contains("s3cret"));
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("db:6379/2"),
            "{shown}"
        );
    }

    #[test]
    fn redact_hides_the_credentials_of_every_url_in_a_text() {
        let text = r#"line 3: replay_store = "redis://u:pw@h:1/0" and rediss://:pw2@x/1, file:/a"#;
        let shown = redact(text);
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("redis://***@h:1/0") && shown.contains("rediss://***@x/1"));
        assert_eq!(redact("no url here"), "no url here");
    }
}
