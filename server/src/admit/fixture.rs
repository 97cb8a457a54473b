//! The admission rules of a made-up server, for tests, benchmarks and the fuzzer: zone
//! `test` (its key all 0x42), server `db1`, client `alice` at epoch 0. Defined once, so a
//! new rule is given to every one of them by the compiler, the fuzzer's included.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use cmdchan_common::ident::{Ident, PskIdentity};
use cmdchan_common::keys::{TagKey, ZoneKey};
use cmdchan_common::protocol::{Grant, Request};

use super::Rules;
use crate::policy::Policy;
use crate::rate::RateLimiter;
use crate::revoke::Revocations;

/// Owns what [`Rules`] borrow.
#[derive(Debug)]
pub struct Fixture {
    pub tag_key: TagKey,
    pub zone: Ident,
    pub zone_keys: BTreeMap<u64, Arc<ZoneKey>>,
    pub server: Ident,
    pub revocations: Revocations,
    pub policy: Policy,
    pub executions: Arc<Semaphore>,
    pub limiter: RateLimiter,
    /// (requests per second, burst): high enough that tests never meet it.
    pub rate: (f64, f64),
    /// The client the handshake proved.
    pub key: PskIdentity,
}

impl Fixture {
    /// A server of zone `test` with `policy` and room for `slots` programs at once.
    pub fn new(policy: Policy, slots: usize) -> Self {
        let zone = ZoneKey::new(ident("test"), 1, [0x42; 32]);
        Self {
            tag_key: zone.tag_key(),
            zone: zone.zone.clone(),
            zone_keys: BTreeMap::from([(1, Arc::new(zone))]),
            server: ident("db1"),
            revocations: Revocations::default(),
            policy,
            executions: Arc::new(Semaphore::new(slots)),
            limiter: RateLimiter::default(),
            rate: (1000.0, 1000.0),
            key: PskIdentity {
                name: ident("alice"),
                epoch: 0,
            },
        }
    }

    /// The rules of a first request: its tag not proven before, no stdin open, the
    /// window 60 s.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            tag_key: &self.tag_key,
            zone: &self.zone,
            zone_keys: &self.zone_keys,
            server_id: &self.server,
            window: 60,
            revocations: &self.revocations,
            policy: &self.policy,
            executions: &self.executions,
            limiter: &self.limiter,
            rate: self.rate,
            tag_proven: false,
            arrived: std::time::Instant::now(),
            stdin_was_open: false,
        }
    }

    /// `command` from `alice` to `db1` under `grant`, signed, issued at `now`.
    pub fn request(&self, grant: Grant, command: &str, now: u64) -> Request {
        Request {
            counter: 1,
            id: [5; 16],
            issued_at: now,
            target: self.server.clone(),
            tag: self.tag_key.sign(&self.key.name, &grant),
            grant,
            command: command.into(),
            args: vec![],
            params: vec![],
            detach: false,
            run: None,
            approval: None,
        }
    }
}

fn ident(s: &str) -> Ident {
    Ident::new(s).unwrap_or_else(|_| unreachable!("a valid identifier"))
}
