//! The `redis://` store, for a fleet of servers that must share one memory of command
//! IDs (servers behind one name, or a request that could reach any of them).
//!
//! ```text
//! key   = "cmdchan:" FLEET ":id:" ID     -- the 16 raw bytes of the ID (keys are binary-safe)
//! claim = SET key postcard(entry) NX GET PX ttl    -- atomic: sets if absent, else returns
//!                                                   -- the old entry and leaves it (Redis ≥ 7.0)
//! finish = SET key postcard(entry) XX PX ttl       -- only while the claim still exists
//! ttl   = until - now + 1 s, in milliseconds
//! ```
//! A `ConnectionManager` reconnects by itself; while Redis cannot answer, every request
//! is refused with `store unavailable` (fail closed) and service resumes when it is back.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use cmdchan_common::protocol::CommandId;

use super::{Claim, Entry, StoreError};

/// How long one Redis command or connection attempt may take before the request is
/// refused as `store unavailable`.
const TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
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
    /// Connects to the Redis at `url`; keys live under `cmdchan:FLEET:id:`.
    pub async fn open(url: &str, fleet: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("cannot reach Redis: {e}"))?;
        Ok(Self {
            conn,
            prefix: format!("cmdchan:{fleet}:id:"),
        })
    }

    pub async fn claim(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let mut conn = self.conn.clone();
        let old: Option<Vec<u8>> = redis::cmd("SET")
            .arg(self.key(&id))
            .arg(encode(entry)?)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl_ms(until, now))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match old {
            None => Ok(Claim::Fresh),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Claim::Seen)
                .map_err(|e| StoreError::Unavailable(format!("unreadable entry in Redis: {e}"))),
        }
    }

    pub async fn finish(
        &self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Option<String> = redis::cmd("SET")
            .arg(self.key(&id))
            .arg(encode(entry)?)
            .arg("XX")
            .arg("PX")
            .arg(ttl_ms(until, now))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn key(&self, id: &CommandId) -> Vec<u8> {
        [self.prefix.as_bytes(), id].concat()
    }
}

fn encode(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(entry)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode an entry: {e}")))
}

/// Keep the key while `now <= until`, so through the whole second `until`.
fn ttl_ms(until: u64, now: u64) -> u64 {
    until
        .saturating_sub(now)
        .saturating_add(1)
        .saturating_mul(1000)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}
