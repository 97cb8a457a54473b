//! The server's settings: flags merged over the config file over defaults, checked once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ipnet::IpNet;
use serde::Deserialize;

use cmdchan_common::frame::DEFAULT_MAX_FRAME;
use cmdchan_common::ident::Ident;

use crate::cli::{LogFormat, ServeOpts};
use crate::replay::StoreSpec;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The zone key files: one, or two generations of the zone's key.
    pub zone_keys: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub policy: Option<PathBuf>,
    /// The hash-chained audit file, if any.
    pub audit_log: Option<PathBuf>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where command IDs are remembered.
    pub replay_store: StoreSpec,
    /// Flush the replay log to disk after every write.
    pub replay_fsync: bool,
    /// How far apart the clocks of servers sharing a Redis store may be.
    pub max_clock_skew: Duration,
    /// Redis replicas that must acknowledge each claim.
    pub redis_replicas: u32,
    /// How programs' processes are tracked.
    pub process_tracking: crate::exec::TrackingChoice,
    /// Accept the DHE-PSK suites too.
    pub dhe: bool,
    pub server_id: Ident,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// Lowest key epoch still accepted, per client name; names not listed: 0.
    pub min_epoch: BTreeMap<Ident, u64>,
    /// Client names refused whatever their key.
    pub revoked: BTreeSet<Ident>,
}

/// Time and size limits for connections and requests.
#[derive(Debug, Clone)]
pub struct Limits {
    pub freshness_window: Duration,
    pub max_frame: usize,
    /// Bytes partly read large frames may take across all connections.
    pub max_frame_memory: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// Time open connections get to finish at shutdown.
    pub drain_timeout: Duration,
    pub max_connections: usize,
    /// Most policy programs running at once, across all clients.
    pub max_executions: usize,
    /// Most command IDs the replay store holds at once; beyond it requests are refused
    /// (`store unavailable`) until older IDs leave the window.
    pub max_remembered_ids: usize,
    /// Most connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// Source networks that may connect; empty: any.
    pub allow: Vec<IpNet>,
    /// IPv6 sources count per prefix of this many bits.
    pub ipv6_prefix: u8,
    /// Failed handshakes before a source's first penalty.
    pub penalty_after: u32,
    pub penalty_base: Duration,
    pub penalty_max: Duration,
    /// Requests per second each client may make, and the burst above it.
    pub rate: f64,
    pub burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            freshness_window: Duration::from_secs(60),
            max_frame: DEFAULT_MAX_FRAME,
            max_frame_memory: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_executions: 32,
            // About 100 MB; with the 60 s window, about 16,000 requests a second.
            max_remembered_ids: 1_000_000,
            max_connections_per_source: 64,
            allow: Vec::new(),
            ipv6_prefix: 64,
            penalty_after: 5,
            penalty_base: Duration::from_secs(2),
            penalty_max: Duration::from_secs(600),
            rate: 50.0,
            burst: 100.0,
        }
    }
}

/// `zone_key = "PATH"` or, during a rotation, `zone_key = ["OLD", "NEW"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(PathBuf),
    More(Vec<PathBuf>),
}

/// The config file's shape; durations are written like `60s` or `5m`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    zone_key: Option<OneOrMore>,
    listen: Option<SocketAddr>,
    policy: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    replay_store: Option<crate::replay::StoreArg>,
    replay_fsync: Option<bool>,
    max_remembered_ids: Option<usize>,
    max_clock_skew: Option<String>,
    redis_replicas: Option<u32>,
    process_tracking: Option<crate::exec::TrackingChoice>,
    dhe: Option<bool>,
    ipv6_prefix: Option<u8>,
    server_id: Option<Ident>,
    log_format: Option<LogFormat>,
    freshness_window: Option<String>,
    max_frame: Option<usize>,
    max_frame_memory: Option<usize>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    drain_timeout: Option<String>,
    max_connections: Option<usize>,
    max_executions: Option<usize>,
    max_connections_per_source: Option<usize>,
    allow: Option<Vec<IpNet>>,
    penalty_after: Option<u32>,
    penalty_base: Option<String>,
    penalty_max: Option<String>,
    rate: Option<f64>,
    burst: Option<f64>,
    #[serde(default)]
    min_epoch: BTreeMap<Ident, u64>,
    #[serde(default)]
    revoked: BTreeSet<Ident>,
}

impl Config {
    /// Merges `opts` over the config file they name (if any) over the defaults.
    pub fn load(opts: &ServeOpts) -> anyhow::Result<Self> {
        let opts = opts.clone();
        let file = match &opts.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let base = Limits::default();
        let limits = Limits {
            freshness_window: pick(
                opts.freshness_window,
                &file.freshness_window,
                base.freshness_window,
            )?,
            max_frame: opts.max_frame.or(file.max_frame).unwrap_or(base.max_frame),
            max_frame_memory: opts
                .max_frame_memory
                .or(file.max_frame_memory)
                .unwrap_or(base.max_frame_memory),
            handshake_timeout: pick(
                opts.handshake_timeout,
                &file.handshake_timeout,
                base.handshake_timeout,
            )?,
            idle_timeout: pick(opts.idle_timeout, &file.idle_timeout, base.idle_timeout)?,
            drain_timeout: pick(opts.drain_timeout, &file.drain_timeout, base.drain_timeout)?,
            max_connections: opts
                .max_connections
                .or(file.max_connections)
                .unwrap_or(base.max_connections),
            max_executions: opts
                .max_executions
                .or(file.max_executions)
                .unwrap_or(base.max_executions),
            max_remembered_ids: opts
                .max_remembered_ids
                .or(file.max_remembered_ids)
                .unwrap_or(base.max_remembered_ids),
            max_connections_per_source: opts
                .max_connections_per_source
                .or(file.max_connections_per_source)
                .unwrap_or(base.max_connections_per_source),
            allow: opts
                .allow
                .clone()
                .or(file.allow.clone())
                .unwrap_or(base.allow.clone()),
            ipv6_prefix: opts
                .ipv6_prefix
                .or(file.ipv6_prefix)
                .unwrap_or(base.ipv6_prefix),
            penalty_after: opts
                .penalty_after
                .or(file.penalty_after)
                .unwrap_or(base.penalty_after),
            penalty_base: pick(opts.penalty_base, &file.penalty_base, base.penalty_base)?,
            penalty_max: pick(opts.penalty_max, &file.penalty_max, base.penalty_max)?,
            rate: opts.rate.or(file.rate).unwrap_or(base.rate),
            burst: opts.burst.or(file.burst).unwrap_or(base.burst),
        };
        check_limits(&limits)?;
        let zone_keys = match (opts.zone_key.is_empty(), file.zone_key) {
            (false, _) => opts.zone_key,
            (true, Some(OneOrMore::One(path))) => vec![path],
            (true, Some(OneOrMore::More(paths))) => paths,
            (true, None) => Vec::new(),
        };
        if zone_keys.is_empty() {
            bail!("no zone key given: pass --zone-key PATH or set `zone_key` in the config file (make one with: cmdchan-server admin zone-key)")
        }
        let server_id = match opts.server_id.or(file.server_id) {
            Some(id) => id,
            None => host_name()?,
        };
        Ok(Self {
            zone_keys,
            listen: opts.listen.or(file.listen).unwrap_or_else(default_listen),
            policy: opts.policy.or(file.policy),
            audit_log: opts.audit_log.or(file.audit_log),
            metrics: opts.metrics.or(file.metrics),
            replay_store: match opts.replay_store.or(file.replay_store) {
                Some(text) => StoreSpec::parse(&text.0).map_err(anyhow::Error::msg)?,
                None => StoreSpec::default_file(),
            },
            replay_fsync: opts.replay_fsync || file.replay_fsync.unwrap_or(false),
            max_clock_skew: pick(
                opts.max_clock_skew,
                &file.max_clock_skew,
                Duration::from_secs(30),
            )?,
            redis_replicas: opts.redis_replicas.or(file.redis_replicas).unwrap_or(0),
            process_tracking: opts
                .process_tracking
                .or(file.process_tracking)
                .unwrap_or_default(),
            dhe: opts.dhe || file.dhe.unwrap_or(false),
            server_id,
            log_format: opts.log_format.or(file.log_format).unwrap_or_default(),
            limits,
            min_epoch: file.min_epoch,
            revoked: file.revoked,
        })
    }
}

pub fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| unreachable!("constant address"))
}

/// Reads the config file. Its errors give the line and column but never quote the
/// line, and hide URL credentials in the message: the file may hold a Redis password.
fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    parse_file(&text).map_err(|e| anyhow::anyhow!("config file {} is not valid{e}", path.display()))
}

/// Checks config file text as [`Config::load`] reads it; the error is what would follow
/// "config file PATH is not valid" (for fuzzing, and for `check`).
pub fn check_text(text: &str) -> Result<(), String> {
    parse_file(text).map(|_| ())
}

fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" (line {line}, column {column})")
        });
        let message = crate::replay::redact(e.message());
        format!("{at}: {message}")
    })
}

fn pick(
    flag: Option<Duration>,
    file: &Option<String>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(text)) => humantime::parse_duration(text)
            .with_context(|| format!("duration {text:?} in the config file")),
        (None, None) => Ok(default),
    }
}

fn check_limits(l: &Limits) -> anyhow::Result<()> {
    // Below 1 KiB a request with a grant and a few arguments would not fit.
    if l.max_frame < 1024 || l.max_frame > u32::MAX as usize {
        bail!(
            "max_frame must be between 1024 bytes and 4 GiB, not {}",
            l.max_frame
        );
    }
    let counts = [
        l.max_connections,
        l.max_connections_per_source,
        l.max_executions,
        l.max_remembered_ids,
    ];
    if counts.contains(&0) {
        bail!("max_connections, max_connections_per_source, max_executions and max_remembered_ids must be at least 1");
    }
    if l.max_frame_memory < l.max_frame {
        bail!(
            "max_frame_memory ({}) must hold at least one frame of max_frame ({})",
            l.max_frame_memory,
            l.max_frame
        );
    }
    if !(1..=128).contains(&l.ipv6_prefix) {
        bail!(
            "ipv6_prefix must be between 1 and 128, not {}",
            l.ipv6_prefix
        );
    }
    if !(l.rate > 0.0 && l.burst >= 1.0) {
        bail!("rate must be above 0 and burst at least 1");
    }
    if l.freshness_window.is_zero() || l.handshake_timeout.is_zero() || l.idle_timeout.is_zero() {
        bail!("freshness_window, handshake_timeout and idle_timeout must be above zero");
    }
    Ok(())
}

/// The kernel's host name, as the default server ID.
fn host_name() -> anyhow::Result<Ident> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    Ident::new(name.trim()).map_err(|e| {
        anyhow::anyhow!(
            "the host name {:?} cannot be a server ID ({e}); pass --server-id",
            name.trim()
        )
    })
}
