//! The gate: what a connection must pass before any TLS work is spent on it — the source
//! allowlist, the global and per-source connection caps, and the penalty a source earns
//! by failing handshakes (like OpenSSH's PerSourcePenalties).
//!
//! Time is an argument, so penalties are tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Limits;
use cmdchan_common::sync;

/// Gate settings.
/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    NotAllowed,
    Full,
    SourceFull,
    Penalized { left: Duration },
}

impl Turned {
    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Turned::NotAllowed => "not_allowed",
            Turned::Full => "connection_limit",
            Turned::SourceFull => "source_limit",
            Turned::Penalized { .. } => "penalized",
        }
    }
}

#[derive(Debug)]
pub struct Gate {
    /// Its rules: the allowlist, the caps and the penalties (fixed at start-up).
    rules: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    per_source: HashMap<IpAddr, usize>,
    records: HashMap<IpAddr, Record>,
}

/// A source's failed handshakes (and connections closed for refusals).
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    penalties: u32,
    blocked_until: Option<Instant>,
    last_failure: Instant,
    /// Some failures were connections closed for security refusals: those were made
    /// with a good handshake, so a good handshake does not clear them.
    misbehaved: bool,
}

/// A connection let through; dropping it frees its place.
#[derive(Debug)]
pub struct Pass {
    gate: Arc<Gate>,
    source: IpAddr,
}

impl Gate {
    pub fn new(rules: Limits) -> Arc<Self> {
        Arc::new(Self {
            rules,
            state: Mutex::default(),
        })
    }

    /// Lets a connection from `source` in, or says why not.
    pub fn enter(self: &Arc<Self>, source: IpAddr, now: Instant) -> Result<Pass, Turned> {
        let address = canonical(source);
        if !self.rules.allow.is_empty()
            && !self.rules.allow.iter().any(|net| net.contains(&address))
        {
            return Err(Turned::NotAllowed);
        }
        let source = self.source(source);
        let mut state = self.lock();
        if let Some(until) = state.records.get(&source).and_then(|r| r.blocked_until) {
            if until > now {
                return Err(Turned::Penalized { left: until - now });
            }
        }
        if state.open >= self.rules.max_connections {
            return Err(Turned::Full);
        }
        let here = state.per_source.entry(source).or_default();
        if *here >= self.rules.max_connections_per_source {
            return Err(Turned::SourceFull);
        }
        *here += 1;
        state.open += 1;
        Ok(Pass {
            gate: self.clone(),
            source,
        })
    }

    /// Counts a failed handshake; returns the penalty when one starts (log it once).
    pub fn failed(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        self.count(source, now, false)
    }

    /// Counts a connection closed for security refusals like a failed handshake, except
    /// that the source's next good handshake does not wipe it out.
    pub fn misbehaved(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        self.count(source, now, true)
    }

    fn count(&self, source: IpAddr, now: Instant, misbehaved: bool) -> Option<Duration> {
        let rules = &self.rules;
        if rules
            .penalty_exempt
            .iter()
            .any(|net| net.contains(&canonical(source)))
        {
            return None;
        }
        let mut state = self.lock();
        // Forget sources quiet for longer than the longest penalty, so the map stays small.
        state
            .records
            .retain(|_, r| now.saturating_duration_since(r.last_failure) <= rules.penalty_max);
        let fresh = Record {
            failures: 0,
            penalties: 0,
            blocked_until: None,
            last_failure: now,
            misbehaved,
        };
        let record = state.records.entry(self.source(source)).or_insert(fresh);
        record.last_failure = now;
        record.misbehaved |= misbehaved;
        // A connection let in before the block began does not count towards the next one.
        if record.blocked_until.is_some_and(|u| u > now) {
            return None;
        }
        record.failures += 1;
        if record.failures < rules.penalty_after {
            return None;
        }
        // penalty = base · 2^(penalties so far), at most max
        let doubling = 2u32.saturating_pow(record.penalties.min(31));
        let penalty = rules
            .penalty_base
            .saturating_mul(doubling)
            .min(rules.penalty_max);
        record.penalties += 1;
        record.failures = 0;
        record.blocked_until = Some(now + penalty);
        Some(penalty)
    }

    /// A successful handshake clears the source's record, unless it misbehaved after
    /// handshakes that succeeded.
    pub fn succeeded(&self, source: IpAddr) {
        let source = self.source(source);
        let mut state = self.lock();
        if state.records.get(&source).is_some_and(|r| !r.misbehaved) {
            state.records.remove(&source);
        }
    }

    /// What counts as one source: an IPv4 address, or an IPv6 address's prefix.
    fn source(&self, ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.rules.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        sync::lock(&self.state)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(n) = state.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_source.remove(&self.source);
            }
        }
    }
}

/// An IPv4 client seen through an IPv6 socket counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Limits {
        Limits {
            allow: vec![],
            max_connections: 3,
            max_connections_per_source: 2,
            ipv6_prefix: 64,
            penalty_after: 2,
            penalty_base: Duration::from_secs(1),
            penalty_max: Duration::from_secs(4),
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn caps_count_open_connections_and_free_them_on_drop() {
        let gate = Gate::new(rules());
        let now = Instant::now();
        let a1 = gate.enter(ip("10.0.0.1"), now).expect("first");
        let _a2 = gate.enter(ip("10.0.0.1"), now).expect("second");
        assert_eq!(
            gate.enter(ip("::ffff:10.0.0.1"), now).err(),
            Some(Turned::SourceFull)
        );
        let _b = gate.enter(ip("10.0.0.2"), now).expect("other source");
        assert_eq!(gate.enter(ip("10.0.0.3"), now).err(), Some(Turned::Full));
        drop(a1);
        assert!(gate.enter(ip("10.0.0.3"), now).is_ok());
    }

    #[test]
    fn the_allowlist_is_checked_first() {
        let gate = Gate::new(Limits {
            allow: vec!["10.0.0.0/8".parse().expect("net")],
            ..rules()
        });
        let now = Instant::now();
        assert!(gate.enter(ip("10.9.9.9"), now).is_ok());
        assert_eq!(
            gate.enter(ip("192.168.1.1"), now).err(),
            Some(Turned::NotAllowed)
        );
    }

    #[test]
    fn penalties_start_after_the_threshold_double_cap_and_reset() {
        let gate = Gate::new(rules());
        let (src, t0) = (ip("10.0.0.9"), Instant::now());
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(gate.failed(src, at(0)), None);
        assert_eq!(gate.failed(src, at(0)), Some(Duration::from_secs(1)));
        assert!(matches!(
            gate.enter(src, at(0)),
            Err(Turned::Penalized { .. })
        ));
        assert_eq!(
            gate.failed(src, at(0)),
            None,
            "no new penalty (or log line) while blocked"
        );
        assert!(gate.enter(src, at(1)).is_ok(), "the penalty ends");
        let doubled = [gate.failed(src, at(2)), gate.failed(src, at(2))];
        assert_eq!(doubled, [None, Some(Duration::from_secs(2))]);
        let pair = |s| [gate.failed(src, at(s)), gate.failed(src, at(s))];
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(
            pair(5),
            [None, secs(4)],
            "the third penalty reaches the cap"
        );
        assert_eq!(pair(9), [None, secs(4)], "and stays there");
        assert_eq!(
            pair(20),
            [None, secs(1)],
            "quiet longer than the cap: forgotten, so it starts over"
        );
        gate.succeeded(src);
        assert!(
            gate.enter(src, at(20)).is_ok(),
            "a good handshake lifts the block and resets the record"
        );
    }

    #[test]
    fn a_source_closed_for_refusals_is_not_forgiven_by_its_next_good_handshake() {
        let gate = Gate::new(rules());
        let (src, t0) = (ip("10.0.0.7"), Instant::now());
        assert_eq!(gate.misbehaved(src, t0), None);
        gate.succeeded(src);
        assert_eq!(gate.misbehaved(src, t0), Some(Duration::from_secs(1)));
        assert!(matches!(gate.enter(src, t0), Err(Turned::Penalized { .. })));
    }

    /// The attack: one host holds a /64 and comes from a new address each time.
    #[test]
    fn ipv6_sources_count_per_prefix_so_a_64_is_one_source() {
        let gate = Gate::new(rules());
        let now = Instant::now();
        let _a = gate.enter(ip("2001:db8::1"), now).expect("first");
        let _b = gate.enter(ip("2001:db8::2:3"), now).expect("second");
        assert_eq!(
            gate.enter(ip("2001:db8::ffff:1"), now).err(),
            Some(Turned::SourceFull)
        );
        assert!(
            gate.enter(ip("2001:db8:0:1::1"), now).is_ok(),
            "another /64"
        );
        for n in 0..2 {
            gate.failed(ip(&format!("2001:db8:0:2::{n}")), now);
        }
        assert!(
            matches!(
                gate.enter(ip("2001:db8:0:2::99"), now),
                Err(Turned::Penalized { .. })
            ),
            "penalties too"
        );
    }
}
