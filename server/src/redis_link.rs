//! One connection to Redis, shared by the stores that keep state there (command IDs,
//! jobs): a single Redis, Sentinel or Cluster, made on first use and remade by itself
//! (through Sentinel, to the primary it names now). Every command answers within
//! [`TIMEOUT`] or fails as `store unavailable`: the callers fail closed.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisConnectionInfo};
use tracing::warn;

use crate::replay::{redact, StoreError};

/// How long one Redis command or connection attempt may take before the request is
/// refused as `store unavailable`.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is, and the live connection once made.
pub struct Conn {
    target: Target,
    live: tokio::sync::Mutex<Option<Live>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

enum Target {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Live {
    Single(ConnectionManager),
    Primary(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Checks the URL; the connection is made on first use.
    pub fn open(url: &str) -> Result<Self, String> {
        let target = target(url).map_err(|e| redact(&format!("bad Redis URL: {e}")))?;
        Ok(Self {
            target,
            live: tokio::sync::Mutex::new(None),
        })
    }

    /// Runs `cmd` within [`TIMEOUT`]; in a cluster, a command that names no key goes to
    /// the primary of `key` (the others route by their own key).
    pub async fn query_at<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        key: &[u8],
    ) -> Result<T, StoreError> {
        let live = self.live().await?;
        let answered = tokio::time::timeout(TIMEOUT, async {
            match live {
                Live::Single(mut c) => cmd.query_async(&mut c).await,
                Live::Primary(mut c) => cmd.query_async(&mut c).await,
                Live::Cluster(mut c) if !key.is_empty() => {
                    let route = Route::with_key(key, SlotAddr::Master);
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    let value = c.route_command(cmd.clone(), routing).await?;
                    redis::from_redis_value(value).map_err(redis::RedisError::from)
                }
                Live::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await;
        let failed = match answered {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => unavailable(&e),
            Err(_) => StoreError::Unavailable(format!("Redis did not answer within {TIMEOUT:?}")),
        };
        // Through Sentinel, ask again which node is the primary before the next command.
        if matches!(self.target, Target::Sentinel(_)) {
            *self.live.lock().await = None;
        }
        Err(failed)
    }

    /// The live connection, made now if there is none.
    async fn live(&self) -> Result<Live, StoreError> {
        let mut live = self.live.lock().await;
        if let Some(conn) = &*live {
            return Ok(conn.clone());
        }
        let made = match tokio::time::timeout(TIMEOUT * 2, self.connect()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.unreachable(unavailable(&e))),
            Err(_) => {
                return Err(
                    self.unreachable(StoreError::Unavailable("cannot reach Redis in time".into()))
                )
            }
        };
        *live = Some(made.clone());
        Ok(made)
    }

    async fn connect(&self) -> redis::RedisResult<Live> {
        match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let conn = client.get_connection_manager_with_config(config).await?;
                Ok(Live::Single(conn))
            }
            Target::Sentinel(sentinel) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT));
                let mut sentinel = sentinel.lock().await;
                let conn = sentinel.get_async_connection_with_config(&config).await?;
                Ok(Live::Primary(conn))
            }
            Target::Cluster(client) => Ok(Live::Cluster(client.get_async_connection().await?)),
        }
    }

    fn unreachable(&self, e: StoreError) -> StoreError {
        warn!(error = %e, "Redis cannot be reached; refusing what needs it until it can");
        e
    }
}

/// Reads a store URL: a single Redis, Sentinel or Cluster (see the module's docs).
fn target(url: &str) -> redis::RedisResult<Target> {
    let invalid = |why: &str| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "", why.to_owned()))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
    if !matches!(scheme, "redis+sentinel" | "redis+cluster") {
        return Ok(Target::Single(redis::Client::open(url)?));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, password)) => (
            Some(user).filter(|u| !u.is_empty()),
            Some(password).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(invalid("no host:port given"));
    }
    if scheme == "redis+cluster" {
        let mut builder = ClusterClient::builder(nodes)
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT);
        if let Some(user) = user {
            builder = builder.username(user);
        }
        if let Some(password) = password {
            builder = builder.password(password);
        }
        return Ok(Target::Cluster(builder.build()?));
    }
    let mut parts = path.split('/');
    let service = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("no Sentinel service name (…/SERVICE)"))?;
    let db = match parts.next() {
        Some(db) => db
            .parse()
            .map_err(|_| invalid("the database is not a number"))?,
        None => 0,
    };
    let mut info = RedisConnectionInfo::default().set_db(db);
    if let Some(user) = user {
        info = info.set_username(user);
    }
    if let Some(password) = password {
        info = info.set_password(password);
    }
    let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
    let client = SentinelClient::build(
        nodes,
        service.to_owned(),
        Some(node),
        SentinelServerType::Master,
    )?;
    Ok(Target::Sentinel(tokio::sync::Mutex::new(client)))
}

pub fn unavailable(e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(redact(&format!("Redis: {e}")))
}
