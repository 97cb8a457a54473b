//! A latency histogram observed with atomic adds into the observing thread's stripe.
//! prometheus-client's histogram takes a mutex per observation, and every request
//! observes two (its own time and its claim's), from every worker thread.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::stripes::{self, Padded, STRIPES};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Finite buckets: 100 µs, doubling up to about 26 s; one more counts the rest (+Inf).
const BUCKETS: usize = 19;

/// The first bucket's upper bound.
const FIRST_NS: u64 = 100_000;

/// A shared latency histogram; clones observe into the same counts.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<[Padded<Counts>; STRIPES]>);

#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Bucket i holds (FIRST · 2^(i-1), FIRST · 2^i]: i is the bit length of
        // ⌈ns / FIRST⌉ - 1.
        let i = 64 - (ns.saturating_sub(1) / FIRST_NS).leading_zeros() as usize;
        let counts = &self.0[stripes::mine()].0;
        counts.buckets[i.min(BUCKETS)].fetch_add(1, Ordering::Relaxed);
        counts.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The stripes' sum of `field`.
    fn total(&self, field: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.0
            .iter()
            .map(|s| field(&s.0).load(Ordering::Relaxed))
            .sum()
    }

    /// (upper bound in seconds, observations in that bucket alone), the last +Inf.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut bound = FIRST_NS as f64 / 1e9;
        let mut out = Vec::with_capacity(BUCKETS + 1);
        for i in 0..=BUCKETS {
            let upper = if i == BUCKETS { f64::INFINITY } else { bound };
            out.push((upper, self.total(|c| &c.buckets[i])));
            bound *= 2.0;
        }
        out
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let buckets = self.buckets();
        // The count is the buckets' sum, so the two never disagree in one scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.total(|c| &c.sum_ns) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

    use super::*;

    /// The text prometheus-client's own histogram gives for the same observations.
    #[test]
    fn it_encodes_as_the_histogram_it_replaces() {
        let ours = Latency::default();
        let theirs = Histogram::new(exponential_buckets(0.0001, 2.0, 19));
        for us in [0, 100, 101, 150, 3_000, 250_000, 30_000_000] {
            ours.observe(Duration::from_micros(us));
            theirs.observe(us as f64 / 1e6);
        }
        let a = stripes::exposition("seconds", ours.clone());
        let b = stripes::exposition("seconds", theirs.clone());
        let without_sum = |t: &str| {
            t.lines()
                .filter(|l| !l.contains("_sum"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without_sum(&a), without_sum(&b));
        assert!(a.contains("seconds_bucket{le=\"+Inf\"} 7"), "{a}");
        assert!(a.contains("seconds_count 7"), "{a}");
    }

    /// Observations from threads in different stripes all reach the buckets, the count
    /// and the sum.
    #[test]
    fn observations_from_many_threads_are_all_in_the_histogram() {
        let h = Latency::default();
        std::thread::scope(|s| {
            for _ in 0..2 * STRIPES {
                s.spawn(|| (0..100).for_each(|_| h.observe(Duration::from_micros(150))));
            }
        });
        let n = 200 * STRIPES as u64;
        let counts: Vec<u64> = h.buckets().iter().map(|(_, n)| *n).collect();
        assert_eq!(counts[1], n, "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), n);
        assert_eq!(h.total(|c| &c.sum_ns), n * 150_000);
    }

    #[test]
    fn each_latency_lands_in_the_smallest_bucket_that_holds_it() {
        let h = Latency::default();
        for us in [0, 100, 101, 200, 201, 400, 30_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let counts: Vec<u64> = h.buckets().iter().map(|(_, n)| *n).collect();
        assert_eq!(&counts[..4], &[2, 2, 2, 0]);
        assert_eq!(counts[BUCKETS], 1);
        let bounds: Vec<f64> = h.buckets().iter().map(|(b, _)| *b).collect();
        assert_eq!(
            (bounds[0], bounds[1], bounds[18]),
            (0.0001, 0.0002, 0.0001 * 262_144.0)
        );
    }
}
