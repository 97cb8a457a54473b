//! The order of a fan-out and when it stops: servers in batches (a canary batch first,
//! if asked), at most `parallel` at once, a pause between batches, a check on each
//! finished batch. The rule: no server starts once the run must stop — a canary
//! failed, more servers failed than `max_failures` allows, a check failed, or the
//! deadline passed — and every server not started is reported as such, with why. The
//! rule is checked before each server starts, not only between batches, so a batch
//! wider than `parallel` stops mid-way too.

use std::future::Future;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::{HostResult, NotStarted, Outcome};

/// How a fan-out goes server by server.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// Servers worked on at once.
    pub parallel: usize,
    /// Run this many servers first, as a batch of their own: the run stops unless every
    /// one of them succeeds.
    pub canary: Option<usize>,
    /// Servers per batch after the canary; the next batch starts when one is done.
    pub batch: Option<usize>,
    /// Stop once more servers than this failed.
    pub max_failures: Option<Threshold>,
    /// Wait this long between batches.
    pub pause: Option<Duration>,
}

/// How many failures a run allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Servers(usize),
    /// A share of all the servers of the run.
    Percent(u8),
}

impl Threshold {
    /// Whether `failed` servers of `total` are still allowed.
    pub fn allows(self, failed: usize, total: usize) -> bool {
        match self {
            Threshold::Servers(n) => failed <= n,
            Threshold::Percent(p) => failed * 100 <= usize::from(p) * total,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Servers(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Why a run stopped before its last server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The batch that stopped it (1-based; the canary batch is batch 1), of how many.
    pub batch: usize,
    pub batches: usize,
    pub why: StopWhy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopWhy {
    /// Servers of the canary batch failed.
    Canary { failed: usize },
    /// More servers failed than allowed.
    Failures { failed: usize, allowed: Threshold },
    /// The check failed on these servers (indexes) of the batch just finished.
    Check { failed: Vec<usize> },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = format!("batch {} of {}", self.batch, self.batches);
        match &self.why {
            StopWhy::Canary { failed } => {
                write!(f, "stopped in the canary batch: {failed} of its servers failed")
            }
            StopWhy::Failures { failed, allowed } => write!(
                f,
                "stopped in {at}: {failed} servers failed, more than --max-failures {allowed} allows"
            ),
            StopWhy::Check { failed } => write!(
                f,
                "stopped after {at}: the check failed on {} of its servers",
                failed.len()
            ),
        }
    }
}

/// The batches of `servers` servers, as index ranges: the canary first, then `batch`
/// at a time (all the rest without one).
pub fn batches(servers: usize, rollout: &Rollout) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    if let Some(canary) = rollout.canary.filter(|c| *c > 0) {
        let end = canary.min(servers);
        out.push(0..end);
        at = end;
    }
    let size = rollout.batch.unwrap_or(servers).max(1);
    while at < servers {
        let end = (at + size).min(servers);
        out.push(at..end);
        at = end;
    }
    out
}

/// What a rollout needs from the run: a server's whole run, the check on a finished
/// batch (the servers whose check failed), and where each server's result goes.
pub trait Servers {
    fn run(&self, host: usize) -> impl Future<Output = HostResult> + Send;
    fn check(&self, hosts: Vec<usize>) -> impl Future<Output = Vec<usize>> + Send;
    /// Whether there is a check to run.
    fn checks(&self) -> bool;
    /// A server's result, each exactly once.
    fn done(&self, result: HostResult) -> impl Future<Output = ()> + Send;
}

/// Runs `servers` servers as `rollout` says, handing each result to `runs.done` as it
/// comes (every server exactly once), and returns why the run stopped early, if it did.
pub async fn drive<S: Servers>(
    servers: usize,
    rollout: Rollout,
    deadline: Option<Instant>,
    runs: &S,
) -> Option<Stop> {
    let rollout = &rollout;
    let plan = batches(servers, rollout);
    let canary = rollout.canary.is_some_and(|c| c > 0);
    let mut failed = 0;
    let mut stop: Option<Stop> = None;
    for (n, batch) in plan.iter().enumerate() {
        let past = |d: Instant| Instant::now() >= d;
        if n > 0 && stop.is_none() && !deadline.is_some_and(past) {
            if let Some(pause) = rollout.pause {
                tokio::time::sleep(pause).await;
            }
        }
        let mut running = FuturesUnordered::new();
        let mut next = batch.start;
        let mut succeeded = Vec::new();
        loop {
            while stop.is_none() && next < batch.end && running.len() < rollout.parallel.max(1) {
                if deadline.is_some_and(past) {
                    break;
                }
                running.push(runs.run(next));
                next += 1;
            }
            let Some(result) = running.next().await else {
                break;
            };
            match result.outcome.succeeded() {
                true => succeeded.push(result.host),
                false => failed += 1,
            }
            runs.done(result).await;
            if stop.is_none() {
                stop = judge(rollout, canary && n == 0, failed, servers).map(|why| Stop {
                    batch: n + 1,
                    batches: plan.len(),
                    why,
                });
            }
        }
        // What this batch did not start: the deadline passed, or the run stopped.
        let why = match &stop {
            Some(stop) => NotStarted::Stopped(stop.clone()),
            None => NotStarted::Deadline,
        };
        for host in next..batch.end {
            runs.done(not_started(host, why.clone())).await;
        }
        if stop.is_none() && next == batch.end && runs.checks() && n + 1 < plan.len() {
            succeeded.sort_unstable();
            let failed_checks = runs.check(succeeded).await;
            if !failed_checks.is_empty() {
                stop = Some(Stop {
                    batch: n + 1,
                    batches: plan.len(),
                    why: StopWhy::Check {
                        failed: failed_checks,
                    },
                });
            }
        }
    }
    stop
}

/// Whether the run must stop now, with `failed` failures so far.
fn judge(rollout: &Rollout, in_canary: bool, failed: usize, total: usize) -> Option<StopWhy> {
    if in_canary && failed > 0 {
        return Some(StopWhy::Canary { failed });
    }
    let allowed = rollout.max_failures?;
    (!allowed.allows(failed, total)).then_some(StopWhy::Failures { failed, allowed })
}

fn not_started(host: usize, why: NotStarted) -> HostResult {
    HostResult {
        host,
        outcome: Outcome::NotStarted(why),
        duration: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use cmdchan_common::sync;

    use proptest::prelude::*;

    use crate::{Error, ExitInfo, Reply};

    /// What each server does when run.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Succeeds,
        Fails,
        Unreachable,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Seen {
        Start(usize),
        Done(usize, bool),
        Checked(bool),
    }

    /// Servers whose fates are drawn, each taking its own (virtual) time, every start
    /// and end logged in order.
    struct Fleet {
        fates: Vec<(Fate, u64)>,
        check_fails_after: Option<usize>,
        checks: Mutex<usize>,
        log: Mutex<Vec<Seen>>,
        reported: Mutex<Vec<usize>>,
    }

    impl Servers for Fleet {
        fn run(&self, host: usize) -> impl Future<Output = HostResult> + Send {
            sync::lock(&self.log).push(Seen::Start(host));
            let (fate, millis) = self.fates[host];
            async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                let outcome = match fate {
                    Fate::Succeeds => Outcome::Ran(Reply::Exit(ExitInfo {
                        code: Some(0),
                        ..ExitInfo::default()
                    })),
                    Fate::Fails => Outcome::Ran(Reply::Exit(ExitInfo {
                        code: Some(1),
                        ..ExitInfo::default()
                    })),
                    Fate::Unreachable => Outcome::Failed(Error::Closed),
                };
                HostResult {
                    host,
                    outcome,
                    duration: Duration::ZERO,
                }
            }
        }

        fn check(&self, hosts: Vec<usize>) -> impl Future<Output = Vec<usize>> + Send {
            let mut checks = sync::lock(&self.checks);
            *checks += 1;
            let fails = self.check_fails_after == Some(*checks) && !hosts.is_empty();
            sync::lock(&self.log).push(Seen::Checked(!fails));
            let failed = if fails { vec![hosts[0]] } else { Vec::new() };
            std::future::ready(failed)
        }

        fn checks(&self) -> bool {
            self.check_fails_after.is_some()
        }

        fn done(&self, result: HostResult) -> impl Future<Output = ()> + Send {
            sync::lock(&self.reported).push(result.host);
            if !matches!(result.outcome, Outcome::NotStarted(_)) {
                let ok = result.outcome.succeeded();
                sync::lock(&self.log).push(Seen::Done(result.host, ok));
            }
            std::future::ready(())
        }
    }

    fn fate() -> impl Strategy<Value = (Fate, u64)> {
        let fate = prop_oneof![
            6 => Just(Fate::Succeeds),
            2 => Just(Fate::Fails),
            1 => Just(Fate::Unreachable),
        ];
        (fate, 0u64..50)
    }

    fn threshold() -> impl Strategy<Value = Option<Threshold>> {
        prop_oneof![
            Just(None),
            (0usize..6).prop_map(|n| Some(Threshold::Servers(n))),
            (0u8..=100).prop_map(|p| Some(Threshold::Percent(p))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The stopping rule, over thousands of runs with failing and unreachable
        /// servers: no server starts once the run must stop (a canary failed, more than
        /// the threshold failed, a check failed); a batch starts only when the one
        /// before has ended; every server is reported exactly once; and a run that never
        /// had to stop started every server.
        #[test]
        fn no_server_starts_after_the_run_must_stop(
            fates in prop::collection::vec(fate(), 1..60),
            parallel in 1usize..8,
            canary in prop::option::of(1usize..5),
            batch in prop::option::of(1usize..20),
            max_failures in threshold(),
            check_fails_after in prop::option::of(1usize..4),
        ) {
            let servers = fates.len();
            let rollout = Rollout { parallel, canary, batch, max_failures, pause: None };
            let fleet = Fleet {
                fates,
                check_fails_after,
                checks: Mutex::new(0),
                log: Mutex::new(Vec::new()),
                reported: Mutex::new(Vec::new()),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a runtime");
            let stop = runtime.block_on(drive(servers, rollout.clone(), None, &fleet));

            let mut reported = sync::lock(&fleet.reported).clone();
            reported.sort_unstable();
            prop_assert_eq!(reported, (0..servers).collect::<Vec<_>>(), "each server reported once");

            let plan = batches(servers, &rollout);
            let batch_of = |h: usize| plan.iter().position(|b| b.contains(&h)).expect("in a batch");
            let log = sync::lock(&fleet.log).clone();
            let (mut failed, mut must_stop, mut started) = (0, false, 0);
            let mut ended = vec![false; servers];
            for seen in &log {
                match *seen {
                    Seen::Start(h) => {
                        prop_assert!(!must_stop, "server {h} started after the run had to stop: {log:?}");
                        let b = batch_of(h);
                        let before_done = plan[..b].iter().flat_map(|r| r.clone()).all(|e| ended[e]);
                        prop_assert!(before_done, "server {h} of batch {b} started before the batches before it ended");
                        started += 1;
                    }
                    Seen::Done(h, ok) => {
                        ended[h] = true;
                        if !ok {
                            failed += 1;
                            let in_canary = rollout.canary.is_some() && batch_of(h) == 0;
                            must_stop |= in_canary
                                || max_failures.is_some_and(|t| !t.allows(failed, servers));
                        }
                    }
                    Seen::Checked(ok) => must_stop |= !ok,
                }
            }
            match &stop {
                None => prop_assert_eq!(started, servers, "a run that never had to stop ran everything"),
                Some(stop) => prop_assert!(must_stop, "stopped ({stop}) without a reason"),
            }
        }
    }

    #[test]
    fn batches_are_the_canary_then_equal_slices() {
        let rollout = |canary, batch| Rollout {
            canary,
            batch,
            ..Rollout::default()
        };
        assert_eq!(
            batches(10, &rollout(Some(2), Some(3))),
            vec![0..2, 2..5, 5..8, 8..10]
        );
        assert_eq!(batches(10, &rollout(None, None)), vec![0..10]);
        assert_eq!(batches(3, &rollout(Some(5), Some(1))), vec![0..3]);
        assert!(Threshold::Percent(10).allows(1, 10) && !Threshold::Percent(10).allows(2, 10));
    }
}
