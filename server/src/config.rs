//! The server's settings: flags merged over the config file over defaults, checked once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use cmdchan_common::frame::DEFAULT_MAX_FRAME;
use cmdchan_common::ident::Ident;

use crate::replay::StoreSpec;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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
    /// The jobs' results.
    pub job_store: crate::jobs::Place,
    /// The newest signed revocation list this server was given.
    pub revocation_list: PathBuf,
    /// Flush the replay log to disk after every write.
    pub replay_fsync: bool,
    /// How programs' processes are tracked.
    pub process_tracking: crate::exec::TrackingChoice,
    /// Accept the DHE-PSK suites too.
    pub dhe: bool,
    pub server_id: Ident,
    pub log_format: LogFormat,
    /// Where audit events go besides stderr.
    pub log_sinks: Vec<crate::logsink::SinkSpec>,
    pub limits: Limits,
    /// Lowest key epoch still accepted, per client name; names not listed: 0.
    pub min_epoch: BTreeMap<Ident, u64>,
    /// Client names refused whatever their key.
    pub revoked: BTreeSet<Ident>,
    /// The options as merged (flags over the file), to tell what a reload changed.
    pub opts: ServeOpts,
}

/// Each setting is defined once, in the list below: its help text, how clap and serde
/// read it when its type does not tell them, its name and type, and for a limit its
/// default. The macro makes of the list [`ServeOpts`], which is both the flags of
/// `serve` and `check` and the config file's table (the keys are the flag names with
/// `_` for `-`), the one merge ([`ServeOpts::over`]: the flag, else the file) and
/// [`Limits`], the limits in force (the merged value, else the default). A new setting
/// is one more entry here, and its use where the compiler leads.
macro_rules! settings {
    (
        settings {
            $( $(#[$smeta:meta])+ $sname:ident: $sty:ty => $sapply:ident, )+
        }
        file_only {
            $( $(#[doc = $fdoc:literal])+ $fname:ident: $fty:ty, )+
        }
        limits {
            $( $(#[doc = $doc:literal])+ $(#[arg($($arg:tt)+)])? $name:ident: $ty:ty = $default:expr => $apply:ident; )+
        }
    ) => {
        /// `serve` flags, and the config file's keys: each absent unless given.
        #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServeOpts {
            $( $(#[$smeta])+ pub $sname: Option<$sty>, )+
            $( $(#[doc = $fdoc])+ #[arg(skip)] #[serde(default)] pub $fname: $fty, )+
            $(
                $(#[doc = $doc])+
                #[arg(long $(, $($arg)+)?)]
                #[serde(default, deserialize_with = "FileValue::from_file")]
                pub $name: Option<$ty>,
            )+
        }

        impl ServeOpts {
            /// These flags over `file`: each setting from its flag, else from the file.
            pub fn over(self, file: ServeOpts) -> ServeOpts {
                ServeOpts {
                    $( $sname: self.$sname.or(file.$sname), )+
                    $( $fname: file.$fname, )+
                    $( $name: self.$name.or(file.$name), )+
                }
            }

            /// The settings that differ in `new` but apply only at a restart.
            pub fn needing_restart(&self, new: &ServeOpts) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if Apply::$sapply == Apply::Restart && self.$sname != new.$sname {
                        changed.push(stringify!($sname));
                    }
                )+
                let (old, fresh) = (Limits::from_opts(self), Limits::from_opts(new));
                $(
                    if Apply::$apply == Apply::Restart && old.$name != fresh.$name {
                        changed.push(stringify!($name));
                    }
                )+
                changed
            }
        }

        /// Time, size and rate limits, as in force.
        #[derive(Debug, Clone)]
        pub struct Limits {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for Limits {
            fn default() -> Self {
                Self { $( $name: $default, )+ }
            }
        }

        impl Limits {
            /// Each limit's flag and its default as help shows it (`[default: …]` comes
            /// from the value, never written by hand).
            pub fn shown_defaults() -> Vec<(&'static str, String)> {
                let default = Self::default();
                vec![$( (stringify!($name), Shown::shown(&default.$name)), )+]
            }

            /// Each limit as `opts` set it, else its default.
            fn from_opts(opts: &ServeOpts) -> Self {
                let default = Self::default();
                Self {
                    $( $name: opts.$name.clone().unwrap_or(default.$name), )+
                }
            }
        }
    };
}

settings! {
    settings {
        /// Config file (TOML); its keys are the long flag names with `_` for `-`.
        #[arg(long, short = 'c', env = "CMDCHAN_CONFIG")]
        #[serde(skip)]
        config: PathBuf => Reload,
        /// This server's zone key file (from `admin zone-key`; mode 0600). Give it twice,
        /// with two generations of the zone's key, while clients are re-provisioned.
        #[arg(long = "zone-key")]
        #[serde(default, deserialize_with = "one_or_more")]
        zone_key: Vec<PathBuf> => Restart,
        /// Address to listen on [default: 127.0.0.1:7433].
        #[arg(long)]
        listen: SocketAddr => Restart,
        /// Policy file (TOML) mapping roles to commands [default: built-in policy].
        #[arg(long)]
        policy: PathBuf => Reload,
        /// Hash-chained audit file (JSON lines), appended to; reopened on SIGHUP.
        #[arg(long)]
        audit_log: PathBuf => Restart,
        /// Directory of the jobs' results [default: with a redis:// replay store, that
        /// Redis, shared by the pool; DIR.jobs beside a replay store in file:DIR; else
        /// jobs/ in the state directory].
        #[arg(long)]
        job_store: PathBuf => Restart,
        /// Where the newest signed revocation list this server was given is kept
        /// [default: DIR.revocations beside a replay store in file:DIR, else revocations
        /// in the state directory].
        #[arg(long)]
        revocation_list: PathBuf => Restart,
        /// Where command IDs are remembered: file:DIR (survives restarts), a redis:// URL
        /// (shared by processes that answer as one server ID; rediss:// for TLS, credentials
        /// in the URL: prefer the config file, which others cannot read, to this flag, which
        /// `ps` shows) or memory [default: file:$STATE_DIRECTORY/replay,
        /// /var/lib/cmdchan/replay for root, else ~/.local/state/cmdchan/replay].
        #[arg(long)]
        replay_store: crate::replay::StoreArg => Restart,
        /// Flush the replay log to disk after every write (survives power loss; slower).
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        replay_fsync: bool => Restart,
        /// How the processes a program starts are tracked, so that stopping it stops them
        /// all: a cgroup v2 per run, or as a child subreaper [default: auto, cgroup if it can].
        #[arg(long, value_enum)]
        process_tracking: crate::exec::TrackingChoice => Restart,
        /// This server's ID, matched against requests' target and grants' servers [default: host name].
        #[arg(long)]
        server_id: Ident => Restart,
        /// Serve Prometheus metrics at http://ADDR/metrics [off; without ADDR: 127.0.0.1:9433].
        #[arg(long, num_args = 0..=1, default_missing_value = crate::metrics::DEFAULT_ADDR)]
        metrics: SocketAddr => Restart,
        /// Log format [default: text].
        #[arg(long, value_enum)]
        log_format: LogFormat => Restart,
        /// Also send every audit event to: journald (the journal's native fields,
        /// CMDCHAN_ID and the others; journald:SOCKET for another socket),
        /// syslog:udp://HOST:PORT or syslog:unix:///dev/log (RFC 5424 with structured
        /// data). Repeat for several. A sink that is slow or gone drops events (the audit
        /// file has them all) and never holds a request.
        #[arg(long = "log-sink")]
        #[serde(default)]
        log_sink: Vec<crate::logsink::SinkSpec> => Restart,
        /// Accept the DHE-PSK suites (ffdhe3072) besides ECDHE-PSK. Off by default: a DHE
        /// key generation costs the server ~9 ms of CPU for any ClientHello, before the
        /// client proves anything.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        dhe: bool => Restart,
    }
    file_only {
        /// Lowest key epoch still accepted, per client name; names not listed: 0.
        min_epoch: BTreeMap<Ident, u64>,
        /// Client names refused whatever their key.
        revoked: BTreeSet<Ident>,
    }
    limits {
    /// How far a request's issue time may be from the server's clock.
    #[arg(value_parser = humantime::parse_duration)]
    freshness_window: Duration = Duration::from_secs(60) => Reload;
    /// Largest frame accepted, in bytes.
    max_frame: usize = DEFAULT_MAX_FRAME => Reload;
    /// Memory that partly read frames over 64 KiB may take across all connections; a
    /// large frame beyond it is refused with `busy`.
    max_frame_memory: usize = 64 << 20 => Restart;
    /// Time a client has to finish the TLS handshake.
    #[arg(value_parser = humantime::parse_duration)]
    handshake_timeout: Duration = Duration::from_secs(10) => Reload;
    /// Time a connection may sit without a request.
    #[arg(value_parser = humantime::parse_duration)]
    idle_timeout: Duration = Duration::from_secs(300) => Reload;
    /// Time open connections get to finish at SIGTERM before their programs are stopped.
    #[arg(value_parser = humantime::parse_duration)]
    drain_timeout: Duration = Duration::from_secs(30) => Reload;
    /// Most connections open at once.
    max_connections: usize = 1024 => Restart;
    /// Most policy programs running at once.
    max_executions: usize = 32 => Restart;
    /// Most command IDs remembered at once (40 to 64 bytes each); a server past it
    /// refuses requests until older IDs leave the freshness window (1,000,000 is about
    /// 100 MB: with the 60 s window, about 16,000 requests a second).
    max_remembered_ids: usize = 1_000_000 => Restart;
    /// Most connections open at once from one source address.
    max_connections_per_source: usize = 64 => Restart;
    /// Source networks allowed to connect, checked before any TLS work (CIDR; repeat
    /// the flag or separate them with commas).
    #[arg(value_delimiter = ',')]
    allow: Vec<IpNet> = Vec::new() => Restart;
    /// IPv6 sources are counted (caps, penalties) per prefix of this length, since one
    /// host usually holds a whole /64.
    ipv6_prefix: u8 = 64 => Restart;
    /// Failed handshakes from one source before it is penalized.
    penalty_after: u32 = 5 => Restart;
    /// First penalty; each next one doubles.
    #[arg(value_parser = humantime::parse_duration)]
    penalty_base: Duration = Duration::from_secs(2) => Restart;
    /// Longest penalty; a source quiet this long is forgotten.
    #[arg(value_parser = humantime::parse_duration)]
    penalty_max: Duration = Duration::from_secs(600) => Restart;
    /// Source networks never penalized (CIDR; repeat the flag or separate them with
    /// commas): a bastion or a jump host many people share, where one stale credential
    /// must not lock everyone out. Their connections still count against the caps.
    #[arg(value_delimiter = ',')]
    penalty_exempt: Vec<IpNet> = Vec::new() => Restart;
    /// Requests per second each client may make.
    rate: f64 = 50.0 => Reload;
    /// Requests a client may make at once above its rate.
    burst: f64 = 100.0 => Reload;
    /// How far apart the clocks of servers sharing a Redis store may be: IDs are kept
    /// this much longer than the window.
    #[arg(value_parser = humantime::parse_duration)]
    max_clock_skew: Duration = Duration::from_secs(30) => Restart;
    /// Redis replicas that must acknowledge each claim and outcome (WAIT) before its
    /// command runs and before its answer goes out.
    redis_replicas: u32 = 0 => Restart;
    /// How often the audit chain's head is logged as a checkpoint (target
    /// cmdchan::audit::checkpoint), when it moved.
    #[arg(value_parser = humantime::parse_duration)]
    audit_checkpoint: Duration = Duration::from_secs(60) => Restart;
    /// How long an ended job's result is kept.
    #[arg(value_parser = humantime::parse_duration)]
    result_retention: Duration = Duration::from_secs(24 * 3600) => Restart;
    /// Bytes of one job's output kept (the rest is counted, not kept).
    job_output_cap: u64 = 16 << 20 => Restart;
    /// Bytes all jobs' results may take; past it the oldest results expire early.
    job_store_cap: u64 = 1 << 30 => Restart;
    }
}

/// When a changed setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// At SIGHUP, for the next request or connection.
    Reload,
    /// Only at the next start: it shaped something made once (a listener, the key,
    /// the replay store, the gate), and a reload that changes it says so.
    Restart,
}

/// How a limit's default is shown in help.
pub trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_as_display {
    ($($ty:ty),+) => {$(
        impl Shown for $ty {
            fn shown(&self) -> String {
                self.to_string()
            }
        }
    )+};
}

shown_as_display!(usize, u64, u32, u8, f64);

impl Shown for Duration {
    fn shown(&self) -> String {
        humantime::format_duration(*self).to_string()
    }
}

impl Shown for Vec<IpNet> {
    fn shown(&self) -> String {
        match self.is_empty() {
            true => "any".into(),
            false => self
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// How a limit's value is read from the config file.
pub trait FileValue: Sized {
    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error>;
}

macro_rules! plain_value {
    ($($ty:ty),+) => {$(
        impl FileValue for $ty {
            fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
                Option::<Self>::deserialize(d)
            }
        }
    )+};
}

plain_value!(usize, u64, u32, u8, f64, Vec<IpNet>);

/// Durations are written like `60s` or `5m`.
impl FileValue for Duration {
    fn from_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `zone_key = "PATH"` or, during a rotation, `zone_key = ["OLD", "NEW"]`.
fn one_or_more<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(PathBuf),
        More(Vec<PathBuf>),
    }
    Ok(Some(match OneOrMore::deserialize(d)? {
        OneOrMore::One(path) => vec![path],
        OneOrMore::More(paths) => paths,
    }))
}

impl Config {
    /// Merges `opts` over the config file they name (if any) over the defaults.
    pub fn load(opts: &ServeOpts) -> anyhow::Result<Self> {
        let file = match &opts.config {
            Some(path) => read_file(path)?,
            None => ServeOpts::default(),
        };
        let o = opts.clone().over(file);
        let merged = o.clone();
        let limits = Limits::from_opts(&o);
        check_limits(&limits)?;
        let zone_keys = o.zone_key.unwrap_or_default();
        if zone_keys.is_empty() {
            bail!("no zone key given: pass --zone-key PATH or set `zone_key` in the config file (make one with: cmdchan-server admin zone-key)")
        }
        let replay_store = match o.replay_store {
            Some(text) => StoreSpec::parse(&text.0).map_err(anyhow::Error::msg)?,
            None => StoreSpec::default_file(),
        };
        let server_id = match o.server_id {
            Some(id) => id,
            None => host_name()?,
        };
        Ok(Self {
            zone_keys,
            listen: o.listen.unwrap_or_else(default_listen),
            policy: o.policy,
            audit_log: o.audit_log,
            metrics: o.metrics,
            job_store: match (o.job_store, &replay_store) {
                (Some(dir), _) => crate::jobs::Place::Dir(dir),
                (None, StoreSpec::Redis(url)) => crate::jobs::Place::Redis(url.clone()),
                (None, _) => crate::jobs::Place::Dir(replay_store.beside("jobs")),
            },
            revocation_list: o
                .revocation_list
                .unwrap_or_else(|| replay_store.beside("revocations")),
            replay_store,
            replay_fsync: o.replay_fsync.unwrap_or(false),
            process_tracking: o.process_tracking.unwrap_or_default(),
            dhe: o.dhe.unwrap_or(false),
            server_id,
            log_format: o.log_format.unwrap_or_default(),
            log_sinks: o.log_sink.unwrap_or_default(),
            limits,
            min_epoch: o.min_epoch,
            revoked: o.revoked,
            opts: merged,
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
fn read_file(path: &Path) -> anyhow::Result<ServeOpts> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    parse_file(&text).map_err(|e| anyhow::anyhow!("config file {} is not valid{e}", path.display()))
}

/// Checks config file text as [`Config::load`] reads it; the error is what would follow
/// "config file PATH is not valid" (for fuzzing, and for `check`).
pub fn check_text(text: &str) -> Result<(), String> {
    parse_file(text).map(|_| ())
}

fn parse_file(text: &str) -> Result<ServeOpts, String> {
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Command, Opts};

    fn flags(args: &[&str]) -> ServeOpts {
        let argv = ["cmdchan-server", "serve"].iter().chain(args);
        match Opts::try_parse_from(argv).expect("flags parse").command {
            Command::Serve(opts) => *opts,
            _ => unreachable!("serve was asked for"),
        }
    }

    /// The case: a reload that changed `max_connections` (the gate is made once) said
    /// nothing and applied nothing. What needs a restart is said by the settings list.
    #[test]
    fn a_reload_names_every_changed_setting_that_needs_a_restart_and_only_those() {
        let old = flags(&[
            "--max-connections",
            "10",
            "--rate",
            "5",
            "--listen",
            "127.0.0.1:1",
        ]);
        let new = flags(&[
            "--max-connections",
            "20",
            "--rate",
            "6",
            "--listen",
            "127.0.0.1:2",
        ]);
        assert_eq!(old.needing_restart(&new), vec!["listen", "max_connections"]);
        // The default written out is no change.
        let same = flags(&["--max-connections", "1024", "--listen", "127.0.0.1:1"]);
        let bare = flags(&["--listen", "127.0.0.1:1"]);
        assert!(bare.needing_restart(&same).is_empty());
    }

    #[test]
    fn every_limit_shows_its_default_in_help_from_its_value() {
        let mut serve = crate::cli::command();
        let help = serve
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        for (name, shown) in Limits::shown_defaults() {
            let flag = format!("--{}", name.replace('_', "-"));
            let at = help.find(&flag).unwrap_or_else(|| panic!("{flag} in help"));
            let next = help[at..].find("[default: ").map(|i| at + i);
            let shown_there = next.map(|i| &help[i..]).unwrap_or("");
            assert!(
                shown_there.starts_with(&format!("[default: {shown}]")),
                "{flag}"
            );
        }
    }

    #[test]
    fn a_limit_comes_from_its_flag_else_the_config_file_else_its_default() {
        let file = parse_file("penalty_after = 7\npenalty_base = \"3s\"\nrate = 2.5\n")
            .expect("file parses");
        let limits = Limits::from_opts(&flags(&["--penalty-after", "9"]).over(file));
        assert_eq!(limits.penalty_after, 9);
        assert_eq!(limits.penalty_base, Duration::from_secs(3));
        assert_eq!(limits.rate, 2.5);
        assert_eq!(limits.penalty_max, Limits::default().penalty_max);
    }

    #[test]
    fn networks_come_from_repeated_or_comma_separated_flags_or_a_list_in_the_file() {
        let commas = flags(&["--allow", "10.0.0.0/8,127.0.0.1/32"]).allow;
        let repeated = flags(&["--allow", "10.0.0.0/8", "--allow", "127.0.0.1/32"]).allow;
        let file = parse_file("allow = [\"10.0.0.0/8\", \"127.0.0.1/32\"]\n").expect("file");
        assert_eq!(commas, file.allow);
        assert_eq!(repeated, file.allow);
        assert_eq!(commas.map(|n| n.len()), Some(2));
    }

    #[test]
    fn every_setting_comes_from_its_flag_else_the_config_file() {
        let file = parse_file(
            "zone_key = \"z.key\"\nlisten = \"127.0.0.1:1\"\ndhe = true\nreplay_fsync = false\n\
             log_format = \"json\"\nrevoked = [\"mallory\"]\n",
        )
        .expect("file parses");
        let opts = flags(&[
            "--listen",
            "127.0.0.1:2",
            "--replay-fsync",
            "--zone-key",
            "a",
            "--zone-key",
            "b",
        ]);
        let merged = opts.over(file);
        assert_eq!(merged.listen, "127.0.0.1:2".parse().ok());
        assert_eq!(merged.zone_key, Some(vec!["a".into(), "b".into()]));
        assert_eq!((merged.dhe, merged.replay_fsync), (Some(true), Some(true)));
        assert_eq!(merged.log_format, Some(LogFormat::Json));
        assert_eq!(merged.revoked.len(), 1);
        let rotation = parse_file("zone_key = [\"old.key\", \"new.key\"]\n").expect("list");
        assert_eq!(rotation.zone_key.map(|k| k.len()), Some(2));
        assert!(
            parse_file("config = \"x.toml\"\n").is_err(),
            "the file cannot name a file"
        );
    }

    #[test]
    fn a_bad_duration_in_the_file_names_its_line() {
        let err = parse_file("\nidle_timeout = \"soon\"\n").expect_err("refused");
        assert!(err.starts_with(" (line 2, column 16)"), "{err}");
    }
}
