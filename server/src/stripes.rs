//! Counts that every thread adds to without sharing a cache line with another: one slot
//! per thread (threads beyond [`STRIPES`] share), summed when read.
//!
//! Why: an atomic that every worker adds to on every request moves its cache line
//! from core to core each time. The request counter and the two latency histograms
//! (a bucket and a sum each) were five such adds per request; in stripes, the bench
//! measured 1–2 % less server CPU per request on 2 vCPUs (docs/performance.md), more
//! where more cores share the lines. Reads (a scrape) are rare and sum the stripes; a
//! sum taken while others add is a moment's value, as one atomic's would be.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Slots per striped value. The runtime has a worker per core: on more than 8 cores,
/// workers share slots (still counted right, with some of the old contention).
pub const STRIPES: usize = 8;

/// A value alone on its cache lines (two: x86 prefetches lines in adjacent pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// This thread's slot, handed out in turn to threads as they first ask.
pub fn mine() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    MINE.with(|m| *m)
}

/// A Prometheus counter in stripes; clones count into the same stripes.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<[Padded<AtomicU64>; STRIPES]>);

impl Counter {
    pub fn inc(&self) {
        self.0[mine()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The text exposition of `metric` alone under `name`, for tests that compare ours with
/// prometheus-client's own.
#[cfg(test)]
pub(crate) fn exposition(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register(name, name, metric);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_are_all_counted_once() {
        let counter = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..2 * STRIPES {
                s.spawn(|| (0..1000).for_each(|_| counter.inc()));
            }
        });
        assert_eq!(counter.get(), 2000 * STRIPES as u64);
        // Threads past STRIPES share a slot: both still counted.
        let used = counter.0.iter().filter(|s| s.0.load(Ordering::Relaxed) > 0);
        assert!(used.count() > 1, "every thread added to one slot");
    }

    /// The text prometheus-client's own counter gives for the same count.
    #[test]
    fn it_encodes_as_the_counter_it_replaces() {
        let ours = Counter::default();
        let theirs = prometheus_client::metrics::counter::Counter::<u64>::default();
        for _ in 0..3 {
            ours.inc();
            theirs.inc();
        }
        let a = exposition("requests", ours.clone());
        let b = exposition("requests", theirs.clone());
        assert_eq!(a, b);
        assert!(a.contains("requests_total 3"), "{a}");
    }
}
