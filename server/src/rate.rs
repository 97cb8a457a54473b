//! Per-client rate limits: a token bucket for each authenticated client name.
//!
//! ```text
//! tokens = min(burst, tokens + rate · elapsed);  a request takes one token
//! retry after = (1 − tokens) / rate
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes a token for `client`, or says how long until one is there. The map holds
    /// one bucket per client that ever sent a request: provisioned clients only, as
    /// only they get past the tag check.
    pub fn take(&self, client: &str, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let full = Bucket {
            tokens: burst,
            at: now,
        };
        let mut bucket = buckets.get(client).copied().unwrap_or(full);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + rate * elapsed).min(burst);
        bucket.at = now;
        let taken = bucket.tokens >= 1.0;
        if taken {
            bucket.tokens -= 1.0;
        }
        // The name is copied only for a client's first request.
        match buckets.get_mut(client) {
            Some(kept) => *kept = bucket,
            None => {
                buckets.insert(client.to_owned(), bucket);
            }
        }
        match taken {
            true => Ok(()),
            false => Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate)),
        }
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
