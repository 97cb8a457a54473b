//! The `redis://` store, for a pool of server processes that answer as one server ID
//! and must share one memory of command IDs.
//!
//! ```text
//! key    = "cmdchan:" SERVER_ID ":id:" ID       -- the 16 raw bytes of the ID
//! value  = nonce || postcard(entry)              -- nonce: 16 random bytes per claim
//! claim  = SET key value NX GET PX ttl           -- atomic; returns the old value if any
//! finish = SET key value XX PX ttl               -- over the claim; SET … NX if it is gone
//! undo   = if GET(key)[0..16] == nonce then DEL key    -- a Lua script
//! ttl    = (until - now + 1 s + max clock skew), in milliseconds
//! ```
//! A claim is recognised by its nonce. A claim whose answer timed out (Redis frozen, the
//! network slow) was refused as `store unavailable`, but its `SET` may still apply when
//! Redis wakes; the store remembers its nonce, undoes it in the background, and if the
//! same client retries first, takes the ID back from its own stale claim instead of
//! answering `in progress`. A claim that comes back with this claim's own nonce (a
//! command re-sent after an I/O error) is this claim. The key outlives the window by the
//! clock skew allowed between servers, so a server whose clock lags cannot take an ID
//! again while another server would still accept it.
//!
//! With `redis_replicas` set, a claim counts only once that many replicas acknowledged
//! it (`WAIT`), which narrows what a failover can lose; otherwise it is undone and the
//! request refused.
//!
//! URLs: a single Redis (`redis://`, `rediss://`, `redis+unix://`), Redis Sentinel
//! (`redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]`: the sentinels,
//! and the primary's password and database) or Redis Cluster
//! (`redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]`: any nodes to start from). A
//! key is one slot, so every command of a claim goes to the key's primary, `WAIT`
//! included. Valkey is a drop-in.
//!
//! The connection is made on first use and remade by itself (through Sentinel, to the
//! primary it names now): while Redis cannot answer, requests are refused with `store
//! unavailable` (fail closed) and service resumes when it is back, also when Redis was
//! down when the server started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use cmdchan_common::protocol::CommandId;

use super::{Claim, Entry, Record, StoreError, StoreOptions};
use crate::redis_link::{Conn, TIMEOUT};
use cmdchan_common::sync;

const NONCE: usize = 16;

/// Claims refused for a timeout that may yet apply: key → (nonce, keep until).
type Stale = Mutex<HashMap<Vec<u8>, ([u8; NONCE], Instant)>>;

const UNDO: &str = "if redis.call('GET', KEYS[1]):sub(1, 16) == ARGV[1] then \
                    return redis.call('DEL', KEYS[1]) else return 0 end";

pub struct RedisStore {
    conn: Arc<Conn>,
    prefix: String,
    /// Milliseconds a key lives beyond its request's window.
    margin_ms: u64,
    replicas: u32,
    stale: Arc<Stale>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password, so only the namespace is shown.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the URL; the connection is made on first use.
    pub fn open(url: &str, opts: &StoreOptions) -> Result<Self, String> {
        let margin = Duration::from_secs(1) + opts.clock_skew;
        Ok(Self {
            conn: Arc::new(Conn::open(url)?),
            prefix: format!("cmdchan:{}:id:", opts.server_id),
            margin_ms: u64::try_from(margin.as_millis()).unwrap_or(u64::MAX),
            replicas: opts.redis_replicas,
            stale: Arc::default(),
        })
    }

    pub async fn claim(&self, record: &Record, now: u64) -> Result<Claim, StoreError> {
        let (entry, until) = (&record.entry, record.until);
        let key = self.key(&record.id);
        let Some(Stamped { nonce, entry: seen }) = self.try_claim(&key, entry, until, now).await?
        else {
            return Ok(Claim::Fresh);
        };
        // Our own claim that timed out and applied late: undo it and claim again.
        let ours = self.forget_stale(&key).is_some_and(|stale| stale == nonce);
        if !ours {
            return Ok(Claim::Seen(seen));
        }
        debug!("taking back a command ID from this server's own timed-out claim");
        self.undo(&key, nonce).await?;
        match self.try_claim(&key, entry, until, now).await? {
            None => Ok(Claim::Fresh),
            Some(s) => Ok(Claim::Seen(s.entry)),
        }
    }

    /// Writes the outcome over the claim. A claim a failover lost (the key is gone) is
    /// written again rather than left missing, and with `redis_replicas` the outcome
    /// counts only once that many replicas hold it, as the claim did: an outcome that
    /// is not kept is an error, and its answer waits (see `connection::remember`).
    pub async fn finish(&self, record: &Record, now: u64) -> Result<(), StoreError> {
        let key = self.key(&record.id);
        let (value, _) = encode(&record.entry)?;
        let ttl = self.ttl_ms(record.until, now);
        let mut over = redis::cmd("SET");
        over.arg(&key).arg(&value).arg("XX").arg("PX").arg(ttl);
        let replaced: Option<String> = self.query(&over).await?;
        if replaced.is_none() {
            warn!("the claim of a finished command ID is gone from Redis (a failover lost it?); writing its outcome again");
            let mut again = redis::cmd("SET");
            again.arg(&key).arg(&value).arg("NX").arg("PX").arg(ttl);
            let _: Option<String> = self.query(&again).await?;
        }
        self.replicated(&key).await
    }

    /// Nothing to do on the sweeper's thread: keys expire by themselves, and stale
    /// claims are undone by a task of their own (see [`RedisStore::undo_stale`]).
    pub fn maintain(&self) {}

    /// `SET NX GET`: `None` if the ID is now this claim's, else the entry found. A
    /// reply whose nonce is this claim's is this claim (a command re-sent).
    async fn try_claim(
        &self,
        key: &[u8],
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<Option<Stamped>, StoreError> {
        let (value, nonce) = encode(entry)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("GET").arg("PX");
        cmd.arg(self.ttl_ms(until, now));
        let old: Option<Vec<u8>> = match self.query(&cmd).await {
            Ok(old) => old,
            Err(e) => {
                self.remember_stale(key, nonce);
                return Err(e);
            }
        };
        let Some(old) = old else {
            return self.acknowledged(key, nonce).await.map(|()| None);
        };
        let stamped = decode(&old)?;
        if stamped.nonce == nonce {
            return self.acknowledged(key, nonce).await.map(|()| None);
        }
        Ok(Some(stamped))
    }

    /// With `redis_replicas`, waits for that many replicas to hold the claim; a claim
    /// they do not acknowledge is undone and the request refused.
    async fn acknowledged(&self, key: &[u8], nonce: [u8; NONCE]) -> Result<(), StoreError> {
        let Err(e) = self.replicated(key).await else {
            return Ok(());
        };
        if self.undo(key, nonce).await.is_err() {
            self.remember_stale(key, nonce);
        }
        Err(e)
    }

    /// With `redis_replicas`, whether that many replicas hold the last write to `key`.
    async fn replicated(&self, key: &[u8]) -> Result<(), StoreError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let wait_ms = u64::try_from(TIMEOUT.as_millis()).unwrap_or(1000);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas).arg(wait_ms);
        // WAIT names no key: in a cluster it must go to the primary that holds this one.
        let acked: u32 = self.conn.query_at(&cmd, key).await.unwrap_or(0);
        match acked >= self.replicas {
            true => Ok(()),
            false => Err(StoreError::Unavailable(format!(
                "Redis: {acked} of {} replicas acknowledged the write",
                self.replicas
            ))),
        }
    }

    async fn undo(&self, key: &[u8], nonce: [u8; NONCE]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(UNDO).arg(1).arg(key).arg(&nonce[..]);
        let _: i64 = self.query(&cmd).await?;
        Ok(())
    }

    fn remember_stale(&self, key: &[u8], nonce: [u8; NONCE]) {
        let keep = Instant::now() + Duration::from_millis(self.margin_ms) + TIMEOUT * 600;
        let mut stale = sync::lock(&self.stale);
        let first = stale.is_empty();
        stale.insert(key.to_vec(), (nonce, keep));
        drop(stale);
        if first {
            self.spawn_undo();
        }
    }

    fn forget_stale(&self, key: &[u8]) -> Option<[u8; NONCE]> {
        let mut stale = sync::lock(&self.stale);
        stale.remove(key).map(|(nonce, _)| nonce)
    }

    /// Undoes the stale claims in the background, once a second, until none is left.
    fn spawn_undo(&self) {
        let stale = Arc::clone(&self.stale);
        let store = Self {
            conn: Arc::clone(&self.conn),
            prefix: self.prefix.clone(),
            margin_ms: self.margin_ms,
            replicas: 0,
            stale: Arc::default(),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move { store.undo_stale(&stale).await });
    }

    async fn undo_stale(&self, stale: &Stale) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = Instant::now();
            let due: Vec<_> = {
                let mut map = sync::lock(stale);
                map.retain(|_, (_, keep)| *keep > now);
                if map.is_empty() {
                    return;
                }
                map.iter().map(|(k, (n, _))| (k.clone(), *n)).collect()
            };
            for (key, nonce) in due {
                if self.undo(&key, nonce).await.is_ok() {
                    sync::lock(stale).remove(&key);
                }
            }
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.conn.query_at(cmd, &[]).await
    }

    fn key(&self, id: &CommandId) -> Vec<u8> {
        [self.prefix.as_bytes(), id].concat()
    }

    /// Keep the key while any server of the pool could still accept the request:
    /// through the second `until`, plus the clock skew allowed between servers.
    fn ttl_ms(&self, until: u64, now: u64) -> u64 {
        until
            .saturating_sub(now)
            .saturating_mul(1000)
            .saturating_add(self.margin_ms)
    }
}

/// An entry with the nonce of the claim that wrote it.
struct Stamped {
    nonce: [u8; NONCE],
    entry: Entry,
}

fn encode(entry: &Entry) -> Result<(Vec<u8>, [u8; NONCE]), StoreError> {
    let mut nonce = [0u8; NONCE];
    openssl::rand::rand_bytes(&mut nonce)
        .map_err(|e| StoreError::Unavailable(format!("no random bytes for a nonce: {e}")))?;
    let mut value = nonce.to_vec();
    postcard::to_io(entry, &mut value)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode an entry: {e}")))?;
    Ok((value, nonce))
}

fn decode(value: &[u8]) -> Result<Stamped, StoreError> {
    let unreadable = || StoreError::Unavailable("unreadable entry in Redis".into());
    let (nonce, body) = value.split_at_checked(NONCE).ok_or_else(unreadable)?;
    let nonce = nonce.try_into().map_err(|_| unreadable())?;
    let entry = postcard::from_bytes(body).map_err(|_| unreadable())?;
    Ok(Stamped { nonce, entry })
}
