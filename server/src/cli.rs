//! What the operator types: the `cmdchan-server` command line, as clap definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use cmdchan_common::ident::Ident;

pub use crate::config::{LogFormat, ServeOpts};

/// The command line with each limit's `[default: …]` shown from its value (the limits
/// have no clap default: a flag given wins over the config file, which wins over the
/// default).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let defaults = |sub: clap::Command| {
        crate::config::Limits::shown_defaults()
            .into_iter()
            .fold(sub, |sub, (name, value)| {
                sub.mut_arg(name, |arg| {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    arg.help(format!("{} [default: {value}]", help.trim_end_matches('.')))
                })
            })
    };
    Opts::command()
        .mut_subcommand("serve", defaults)
        .mut_subcommand("check", defaults)
}

#[derive(Debug, Parser)]
#[command(
    name = "cmdchan-server",
    version = cmdchan_common::protocol::VERSION_LINE,
    about = "The cmdchan daemon and its admin tool"
)]
pub struct Opts {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(Box<ServeOpts>),
    /// Check what `serve` would load with these options (config file, policy and its
    /// programs, key file, limits, replay store settings), like `sshd -t`: prints OK, or
    /// what is wrong and exits 1. The unit's ExecReload runs it before SIGHUP.
    Check(Box<ServeOpts>),
    /// Make and inspect keys and client credentials.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run a development server: makes a root key, a zone key and a demo credential in DIR if
    /// missing, prints the client command to try, and serves on loopback.
    Dev(DevOpts),
    /// Write shell completions and man pages for cmdchan-server into DIR.
    #[command(hide = true)]
    Generate { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Write a new random root key (32 bytes from OpenSSL's CSPRNG, hex, mode 0600).
    /// Keep it on the admin machine: no server needs it.
    Init {
        #[arg(long)]
        root: PathBuf,
        /// Replace an existing key file (every zone key and credential made with the old
        /// key stops working).
        #[arg(long)]
        force: bool,
    },
    /// Sign a revocation list with the root's revocation key: the names, key epochs and
    /// zone key generations no server may accept any more, the previous list's entries
    /// kept, its version one higher. Push it with `cmdchan revocations push FILE --on …`.
    Revoke {
        #[arg(long)]
        root: PathBuf,
        /// The list this one follows (its entries are kept; its version + 1).
        #[arg(long)]
        from: Option<PathBuf>,
        /// A client name to refuse whatever its key epoch (repeat for several).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<Ident>,
        /// A client's lowest key epoch still accepted, NAME=EPOCH (repeat for several).
        #[arg(long = "min-epoch", value_name = "NAME=EPOCH")]
        min_epochs: Vec<String>,
        /// A zone key generation no longer accepted, ZONE@GEN (repeat for several).
        #[arg(long = "retire", value_name = "ZONE@GEN")]
        retired: Vec<String>,
        /// Where to write the signed list.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a signed revocation list; with --zone-key, check its signature as that zone's
    /// servers do.
    ShowRevocations {
        list: PathBuf,
        #[arg(long = "zone-key")]
        zone_key: Option<PathBuf>,
    },
    /// Write the key of one zone (and generation) for its servers (TOML, mode 0600).
    ZoneKey {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        zone: Ident,
        /// Raise it to rotate the zone's key; a server can hold two generations at once.
        #[arg(long, default_value_t = 1)]
        generation: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Write a client's credential file (TOML, mode 0600), with an entry per zone.
    Provision(ProvisionOpts),
    /// Print a client's PSK identity and key as IDENTITY:HEXPSK (stunnel's PSKsecrets
    /// line; also `openssl s_client -psk_identity IDENTITY -psk HEXPSK`).
    Psk {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        zone: Ident,
        #[arg(long)]
        name: Ident,
        #[arg(long, default_value_t = 0)]
        epoch: u64,
        #[arg(long, default_value_t = 1)]
        generation: u64,
    },
    /// Check an audit file's keyed chain and name the first record that is not the
    /// server's; gaps the server recorded (a full disk) are listed, not counted as edits.
    /// The spool beside it (what commands with `record_output = "full"` printed) is
    /// checked against the digests the chain holds.
    AuditVerify {
        path: PathBuf,
        /// The zone key file of the server that wrote it (the chain's key is derived
        /// from it); repeat it for a file that crossed a zone key change, one for each
        /// part (its headers name the key they are under).
        #[arg(long = "zone-key", required = true)]
        zone_key: Vec<PathBuf>,
        /// The MAC the first record must continue from (the last MAC of the file before
        /// rotation, as this command printed it for that file).
        #[arg(long)]
        prev: Option<String>,
        /// A checkpoint MAC from the server's log (journal) that must be in the file: a
        /// file cut short or rewritten before it does not verify.
        #[arg(long)]
        head: Option<String>,
        /// The spool of that audit file [default: the file's path with `.spool` added].
        #[arg(long)]
        spool: Option<PathBuf>,
    },
    /// Print what a run printed, from an audit spool: its stdout on stdout, its stderr on
    /// stderr (check the spool with audit-verify first).
    SpoolOutput {
        spool: PathBuf,
        /// The run's command ID (the audit record's `id`).
        id: String,
    },
    /// Show a credential without its secrets; with --zone-key, check that zone's entry.
    Inspect {
        credential: PathBuf,
        #[arg(long = "zone-key")]
        zone_key: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ProvisionOpts {
    #[arg(long)]
    pub root: PathBuf,
    /// Client name (1–128 bytes: ASCII letters, digits, . _ - @; a letter or digit first).
    #[arg(long)]
    pub name: Ident,
    /// The role in every zone without a role of its own.
    #[arg(long)]
    pub role: Ident,
    /// A zone the client may reach: ZONE, with @GENERATION for a zone key generation of
    /// its own and :ROLE for a role of its own there (web@2:reader; repeat for several).
    #[arg(long = "zone", required = true, value_name = "ZONE[@GEN][:ROLE]")]
    pub zones: Vec<String>,
    /// The zone keys' generation for every zone that names none.
    #[arg(long, default_value_t = 1)]
    pub generation: u64,
    /// Change these zones' entries in the existing credential file and keep its other
    /// zones as they are (rotating one zone leaves the others working).
    #[arg(long, conflicts_with = "force")]
    pub update: bool,
    /// Where to write the credential.
    #[arg(long)]
    pub out: PathBuf,
    /// Key epoch; raise it to re-key a client, and revoke older epochs in the server config.
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// When the grant ends: a duration (90d, 12h) or an RFC 3339 time, or "never".
    #[arg(long, default_value = "never")]
    pub expires: String,
    /// A server the client may command (repeat for several; none: any server of the zone).
    #[arg(long = "server")]
    pub servers: Vec<Ident>,
    /// Default server address (HOST:PORT) recorded in the credential.
    #[arg(long)]
    pub address: Option<String>,
    /// Replace an existing credential file.
    #[arg(long)]
    pub force: bool,
    /// Write a credential whose expiry has already passed (refused otherwise: it could
    /// never work), to try how servers and clients handle an expired grant.
    #[arg(long)]
    pub expired_ok: bool,
}

#[derive(Debug, Args)]
pub struct DevOpts {
    /// Where the development key and demo credential live.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7433")]
    pub listen: SocketAddr,
}
