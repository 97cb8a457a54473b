//! What every connection shares: the state built once at start-up, and the settings a
//! reload replaces as a whole.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use openssl::ssl::SslContext;
use tokio::sync::Semaphore;
use tracing::info;

use cmdchan_common::frame::FrameBudget;
use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::keys::{TagKey, ZoneKey};
use cmdchan_common::protocol::ListState;
use cmdchan_common::zonekey;
use cmdchan_common::{time, tls};

use crate::admit::{Refusal, Rules};
use crate::audit::{Audit, JobEnded};
use crate::config::{Config, Limits};
use crate::exec::Tracking;
use crate::gate::Gate;
use crate::jobs::{self, Jobs};
use crate::metrics::Metrics;
use crate::notice::Notices;
use crate::policy::Policy;
use crate::rate::RateLimiter;
use crate::replay::{Store, StoreOptions};
use crate::revoke::kept::{Kept, Pushed};
use crate::revoke::{Reason, Revocations};
use cmdchan_common::sync;

/// What every connection reads: fixed at start-up but for `settings`, which SIGHUP
/// replaces as a whole, so each request sees one consistent snapshot.
#[derive(Debug)]
pub struct Shared {
    pub tls: SslContext,
    /// The zone this server is in.
    pub zone: Ident,
    /// The tag key of each generation of the zone key the server holds.
    pub tag_keys: BTreeMap<u64, TagKey>,
    /// Each generation of the zone key the server holds (approvals are checked under
    /// their approver's).
    pub zone_keys: BTreeMap<u64, Arc<ZoneKey>>,
    pub server_id: Ident,
    pub replay: Store,
    /// Slots for programs running at once (`max_executions`, fixed at start-up).
    pub executions: Arc<Semaphore>,
    pub audit: Arc<Audit>,
    /// Allowlist, connection caps and penalties (fixed at start-up).
    pub gate: Arc<Gate>,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    /// Jobs started on this server and their results.
    pub jobs: Arc<Jobs>,
    /// The newest signed revocation list this server was given.
    pub kept: Kept,
    /// How programs' processes are tracked (and stopped).
    pub tracking: Tracking,
    /// Memory for partly read large frames, shared by every connection.
    pub frames: FrameBudget,
    /// Shared with the TLS callback, which refuses revoked identities.
    settings: Arc<RwLock<Arc<Settings>>>,
    /// Tells open connections of a reload (they check whether they were revoked) and
    /// of shutdown.
    pub notices: Arc<Notices>,
}

/// What a reload can change.
#[derive(Debug)]
pub struct Settings {
    pub limits: Limits,
    pub revocations: Revocations,
    pub policy: Policy,
}

impl Settings {
    /// Reads the policy `config` names; nothing is applied if anything is wrong.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let policy = match &config.policy {
            Some(path) => Policy::load(path)?,
            None => Policy::builtin_default(),
        };
        let full = policy.recorded_in_full();
        if config.audit_log.is_none() && !full.is_empty() {
            anyhow::bail!(
                "the policy records the output of {} in full (record_output = \"full\"), which needs an audit file: set --audit-log",
                full.join(", ")
            );
        }
        let revocations = Revocations {
            min_epoch: config.min_epoch.clone(),
            names: config.revoked.clone(),
            // The signed list is the server's to add (see `Shared::replace`).
            list: None,
        };
        Ok(Self {
            limits: config.limits.clone(),
            revocations,
            policy,
        })
    }

    /// Why `id`'s key is revoked, if it is, in words for the log.
    pub fn revoked(&self, id: &PskIdentity) -> Option<String> {
        self.revocations
            .check(id)
            .err()
            .map(|why| Reason(id, why).to_string())
    }
}

fn read(settings: &RwLock<Arc<Settings>>) -> Arc<Settings> {
    sync::read(settings).clone()
}

impl Shared {
    /// Reads the zone keys and policy named by `config`, opens the audit file and
    /// builds the TLS context.
    pub async fn load(config: &Config) -> anyhow::Result<Self> {
        let keys = load_zone_keys(&config.zone_keys)?;
        let zone = keys[0].zone.clone();
        let mut settings = Settings::load(config)?;
        if settings.policy.asks_for_approvals()
            && matches!(config.replay_store, crate::replay::StoreSpec::Memory)
        {
            tracing::warn!("the policy asks for approvals, and the replay store is in memory: an approval is single-use only while the store keeps its command ID, and this one forgets them when the server restarts; use the file or Redis store");
        }
        let kept = Kept::open(&config.revocation_list, revocation_key(&keys)?)?;
        settings.revocations.list = kept.list();
        // The chain's key comes from the first zone key given: retiring that generation
        // starts a new chain, so rotate the audit file then.
        let audit_key = keys[0].audit_key();
        let audit = Audit::new(
            config.server_id.clone(),
            config.audit_log.as_deref(),
            audit_key,
            config.limits.audit_checkpoint,
        )
        .with_context(|| match &config.audit_log {
            Some(path) => format!("opening the audit file {}", path.display()),
            None => "setting up the audit trail".to_owned(),
        })?;
        let bounds = jobs::Bounds {
            retention: config.limits.result_retention.as_secs(),
            per_job: config.limits.job_output_cap,
            total: config.limits.job_store_cap,
        };
        let jobs = Jobs::open(
            &config.job_store,
            config.server_id.as_str(),
            bounds,
            cmdchan_common::time::now(),
        )
        .with_context(|| format!("opening the job store {:?}", config.job_store))?;
        for lost in jobs.take_lost() {
            audit.job_ended(&JobEnded::lost(lost));
        }
        let tag_keys = keys.iter().map(|k| (k.generation, k.tag_key())).collect();
        let keys: Vec<Arc<ZoneKey>> = keys.into_iter().map(Arc::new).collect();
        let zone_keys = keys.iter().map(|k| (k.generation, k.clone())).collect();
        let settings = Arc::new(RwLock::new(Arc::new(settings)));
        let current = settings.clone();
        let refuse = move |id: &PskIdentity| read(&current).revoked(id);
        let tls = tls::server_context(keys, tls::FFDHE3072_PEM, config.dhe, refuse)
            .context("building the TLS context")?;
        let metrics = Arc::new(Metrics::default());
        let options = StoreOptions {
            max_ids: config.limits.max_remembered_ids,
            fsync: config.replay_fsync,
            server_id: config.server_id.to_string(),
            window: config.limits.freshness_window,
            clock_skew: config.limits.max_clock_skew,
            redis_replicas: config.limits.redis_replicas,
        };
        let replay = Store::open(
            &config.replay_store,
            &options,
            time::now(),
            metrics.store.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("opening the replay store: {e}"))?;
        let tracking = Tracking::init(config.process_tracking)
            .context("setting up process tracking for programs")?;
        Ok(Self {
            zone,
            tag_keys,
            zone_keys,
            tracking,
            frames: FrameBudget::new(config.limits.max_frame_memory),
            tls,
            server_id: config.server_id.clone(),
            replay,
            metrics,
            executions: Arc::new(Semaphore::new(config.limits.max_executions)),
            audit: Arc::new(audit),
            jobs: Arc::new(jobs),
            kept,
            gate: Gate::new(config.limits.clone()),
            limiter: RateLimiter::default(),
            settings,
            notices: Notices::new(),
        })
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        read(&self.settings)
    }

    /// Puts new settings in force for every request and handshake from now on, tells
    /// open connections (they close if now revoked), and reopens the audit file.
    pub fn replace(&self, mut settings: Settings) -> std::io::Result<()> {
        settings.revocations.list = self.kept.list();
        *sync::write(&self.settings) = Arc::new(settings);
        self.notices.reloaded();
        self.audit.reopen()
    }

    /// `revocations.push`: a newer signed list is kept, then in force for every request
    /// and handshake, and open connections of clients it revokes close (as on reload).
    pub fn push_revocations(&self, text: &str) -> Result<ListState, Refusal> {
        match self.kept.push(text)? {
            Pushed::Already => Ok(self.kept.state(false)),
            Pushed::Applied(list) => {
                let current = self.settings();
                let settings = Settings {
                    limits: current.limits.clone(),
                    policy: current.policy.clone(),
                    revocations: Revocations {
                        list: Some(Arc::clone(&list)),
                        ..current.revocations.clone()
                    },
                };
                *sync::write(&self.settings) = Arc::new(settings);
                self.notices.reloaded();
                info!(
                    version = list.list.version,
                    names = list.list.names.len(),
                    retired = list.list.retired.len(),
                    "revocation list version {} applied",
                    list.list.version
                );
                Ok(self.kept.state(true))
            }
        }
    }

    /// The rules for a client whose key is of zone key `generation` (the server holds
    /// that generation: its handshake could not have succeeded otherwise).
    /// `arrived` is when the request came in.
    pub fn rules<'a>(
        &'a self,
        settings: &'a Settings,
        generation: u64,
        arrived: std::time::Instant,
    ) -> Rules<'a> {
        let tag_key = self
            .tag_keys
            .get(&generation)
            .or_else(|| self.tag_keys.values().next())
            .unwrap_or_else(|| unreachable!("a server holds at least one zone key"));
        Rules {
            tag_key,
            zone: &self.zone,
            zone_keys: &self.zone_keys,
            server_id: &self.server_id,
            window: settings.limits.freshness_window.as_secs(),
            revocations: &settings.revocations,
            policy: &settings.policy,
            executions: &self.executions,
            limiter: &self.limiter,
            rate: (settings.limits.rate, settings.limits.burst),
            tag_proven: false,
            arrived,
            stdin_was_open: false,
        }
    }
}

/// Reads the zone key files: one zone, and distinct generations.
pub fn load_zone_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<ZoneKey>> {
    let keys = paths
        .iter()
        .map(|p| zonekey::load(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let Some(first) = keys.first() else {
        anyhow::bail!("no zone key given");
    };
    if let Some(other) = keys.iter().find(|k| k.zone != first.zone) {
        anyhow::bail!(
            "the zone keys are of two zones ({} and {}): a server is in one zone",
            first.zone,
            other.zone
        );
    }
    let mut generations: Vec<u64> = keys.iter().map(|k| k.generation).collect();
    generations.sort_unstable();
    generations.dedup();
    if generations.len() != keys.len() {
        anyhow::bail!("two zone keys of the same generation: give each generation once");
    }
    Ok(keys)
}

/// The revocation key every zone key file given names: one, the same in each (they come
/// from one root), or none at all.
fn revocation_key(keys: &[ZoneKey]) -> anyhow::Result<Option<[u8; 32]>> {
    let named: std::collections::BTreeSet<[u8; 32]> =
        keys.iter().filter_map(|k| k.revocation_key).collect();
    match named.len() {
        0 => Ok(None),
        1 => Ok(named.into_iter().next()),
        _ => anyhow::bail!(
            "the zone key files name different revocation keys: they come from different roots"
        ),
    }
}
