//! Per-client rate limits: a token bucket for each authenticated client name.
//!
//! ```text
//! tokens = min(burst, tokens + rate · elapsed);  a request takes one token
//! retry after = (1 − tokens) / rate
//! ```

use cmdchan_common::sync;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes a token for `client`, or says how long until one is there. The map holds
    /// one bucket per client that ever sent a request: provisioned clients only, as
    /// only they get past the tag check.
    pub fn take(&self, client: &str, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = sync::lock(&self.buckets);
        if let Some(bucket) = buckets.get_mut(client) {
            return bucket.take(rate, burst, now);
        }
        // The name is copied only for a client's first request.
        let mut bucket = Bucket {
            tokens: burst,
            at: now,
        };
        let taken = bucket.take(rate, burst, now);
        buckets.insert(client.to_owned(), bucket);
        taken
    }
}

impl Bucket {
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_a_wait() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", 2.0, 3.0, t0).is_ok());
        }
        let wait = limiter.take("a", 2.0, 3.0, t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            limiter.take("b", 2.0, 3.0, t0).is_ok(),
            "each client has its own bucket"
        );
        assert!(limiter
            .take("a", 2.0, 3.0, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(limiter
            .take("a", 2.0, 3.0, t0 + Duration::from_millis(500))
            .is_err());
    }
}
