//! The `redis://` store, for a pool of server processes that answer as one server ID
//! and must share one memory of command IDs.
//!
//! ```text
//! key    = "cmdchan:" SERVER_ID ":id:" ID       -- the 16 raw bytes of the ID
//! value  = nonce || postcard(entry)              -- nonce: 16 random bytes per claim
//! claim  = SET key value NX GET PX ttl           -- atomic; returns the old value if any
//! finish = SET key value XX PX ttl               -- only while the claim still exists
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
//! The connection is made on first use and remade by itself: while Redis cannot answer,
//! requests are refused with `store unavailable` (fail closed) and service resumes when
//! it is back, also when Redis was down when the server started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use cmdchan_common::protocol::CommandId;

use super::{redact, Claim, Entry, StoreError, StoreOptions};

/// How long one Redis command or connection attempt may take before the request is
/// refused as `store unavailable`.
const TIMEOUT: Duration = Duration::from_secs(1);

const NONCE: usize = 16;

/// Claims refused for a timeout that may yet apply: key → (nonce, keep until).
type Stale = Mutex<HashMap<Vec<u8>, ([u8; NONCE], Instant)>>;

const UNDO: &str = "if redis.call('GET', KEYS[1]):sub(1, 16) == ARGV[1] then \
                    return redis.call('DEL', KEYS[1]) else return 0 end";

pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
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
        let client =
            redis::Client::open(url).map_err(|e| redact(&format!("bad Redis URL: {e}")))?;
        let margin = Duration::from_secs(1) + opts.clock_skew;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            prefix: format!("cmdchan:{}:id:", opts.server_id),
            margin_ms: u64::try_from(margin.as_millis()).unwrap_or(u64::MAX),
            replicas: opts.redis_replicas,
            stale: Arc::default(),
        })
    }

    pub async fn claim(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let key = self.key(&id);
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

    pub async fn finish(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let (value, _) = encode(entry)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&id)).arg(value).arg("XX").arg("PX");
        cmd.arg(self.ttl_ms(until, now));
        let _: Option<String> = self.query(&cmd).await?;
        Ok(())
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
        if self.replicas == 0 {
            return Ok(());
        }
        let wait_ms = u64::try_from(TIMEOUT.as_millis()).unwrap_or(1000);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas).arg(wait_ms);
        let acked: u32 = self.query(&cmd).await.unwrap_or(0);
        if acked >= self.replicas {
            return Ok(());
        }
        if self.undo(key, nonce).await.is_err() {
            self.remember_stale(key, nonce);
        }
        Err(StoreError::Unavailable(format!(
            "Redis: {acked} of {} replicas acknowledged the claim",
            self.replicas
        )))
    }

    async fn undo(&self, key: &[u8], nonce: [u8; NONCE]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(UNDO).arg(1).arg(key).arg(&nonce[..]);
        let _: i64 = self.query(&cmd).await?;
        Ok(())
    }

    fn remember_stale(&self, key: &[u8], nonce: [u8; NONCE]) {
        let keep = Instant::now() + Duration::from_millis(self.margin_ms) + TIMEOUT * 600;
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        let first = stale.is_empty();
        stale.insert(key.to_vec(), (nonce, keep));
        drop(stale);
        if first {
            self.spawn_undo();
        }
    }

    fn forget_stale(&self, key: &[u8]) -> Option<[u8; NONCE]> {
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        stale.remove(key).map(|(nonce, _)| nonce)
    }

    /// Undoes the stale claims in the background, once a second, until none is left.
    fn spawn_undo(&self) {
        let stale = Arc::clone(&self.stale);
        let store = Self {
            client: self.client.clone(),
            conn: self.conn.clone(),
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
                let mut map = stale.lock().unwrap_or_else(|p| p.into_inner());
                map.retain(|_, (_, keep)| *keep > now);
                if map.is_empty() {
                    return;
                }
                map.iter().map(|(k, (n, _))| (k.clone(), *n)).collect()
            };
            for (key, nonce) in due {
                if self.undo(&key, nonce).await.is_ok() {
                    stale.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                }
            }
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection().await?.clone();
        match tokio::time::timeout(TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis did not answer within {TIMEOUT:?}"
            ))),
        }
    }

    async fn connection(&self) -> Result<&ConnectionManager, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connect = async {
            let made = self.client.get_connection_manager_with_config(config);
            match tokio::time::timeout(TIMEOUT * 2, made).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(unavailable(&e)),
                Err(_) => Err(StoreError::Unavailable("cannot reach Redis in time".into())),
            }
        };
        self.conn.get_or_try_init(|| connect).await.inspect_err(|e| {
            warn!(error = %e, "the replay store (Redis) cannot be reached; refusing requests until it can");
        })
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

fn unavailable(e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(redact(&format!("Redis: {e}")))
}
