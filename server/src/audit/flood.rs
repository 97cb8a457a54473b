//! Grouping refusals by client and reason per second, so that a client sending refused
//! requests as fast as it can fills neither the log nor the audit file: the first of
//! each second is written whole, the others are counted into one summary.

use std::collections::HashMap;
use std::sync::Mutex;

use cmdchan_common::ident::Ident;
use cmdchan_common::sync;

/// Counts kept per (client, reason).
#[derive(Debug, Default)]
pub struct Flood {
    seen: Mutex<HashMap<(Ident, &'static str), Count>>,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    second: u64,
    /// Refusals after the first in `second`, not written yet.
    more: u64,
}

/// Refusals of one client for one reason, counted in one second.
#[derive(Debug)]
pub struct Summary {
    pub client: Ident,
    pub code: &'static str,
    pub second: u64,
    pub count: u64,
}

/// Entries idle this many seconds are forgotten (the map holds active clients only).
const FORGET: u64 = 10;

impl Flood {
    /// True if this is the first refusal of `client` for `code` in second `now` (write
    /// it whole); otherwise it is counted. A count left from an earlier second is
    /// handed to `summarise` first.
    pub fn first_this_second(
        &self,
        client: &Ident,
        code: &'static str,
        now: u64,
        summarise: impl FnOnce(Summary),
    ) -> bool {
        let mut seen = sync::lock(&self.seen);
        let key = (client.clone(), code);
        let count = seen.entry(key).or_insert(Count {
            second: u64::MAX,
            more: 0,
        });
        if count.second == now {
            count.more += 1;
            return false;
        }
        let earlier = *count;
        *count = Count {
            second: now,
            more: 0,
        };
        drop(seen);
        if earlier.more > 0 {
            summarise(Summary {
                client: client.clone(),
                code,
                second: earlier.second,
                count: earlier.more,
            });
        }
        true
    }

    /// Takes the counts of seconds before `now`, and forgets idle entries.
    pub fn over(&self, now: u64) -> Vec<Summary> {
        let mut seen = sync::lock(&self.seen);
        let mut out = Vec::new();
        for ((client, code), count) in seen.iter_mut() {
            if count.second < now && count.more > 0 {
                out.push(Summary {
                    client: client.clone(),
                    code,
                    second: count.second,
                    count: count.more,
                });
                count.more = 0;
            }
        }
        seen.retain(|_, c| c.second.saturating_add(FORGET) >= now);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_second_is_whole_and_the_rest_is_one_summary() {
        let flood = Flood::default();
        let mallory = Ident::new("mallory").expect("ident");
        let mut summaries = Vec::new();
        let mut whole = 0;
        for _ in 0..1000 {
            if flood.first_this_second(&mallory, "bad tag", 7, |s| summaries.push(s)) {
                whole += 1;
            }
        }
        assert_eq!(whole, 1);
        assert!(summaries.is_empty(), "the second is not over yet");
        let over = flood.over(8);
        assert_eq!(over.len(), 1);
        assert_eq!((over[0].count, over[0].second), (999, 7), "nothing hidden");
        assert!(flood.over(9).is_empty(), "counted once");
        assert!(flood.first_this_second(&mallory, "bad tag", 9, |s| summaries.push(s)));
        assert!(summaries.is_empty());
    }
}
