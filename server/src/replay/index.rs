//! The in-memory map of claimed IDs, bounded by the freshness window and a maximum size.
//! Both stores use it: `memory` alone, `file` as the index of its log.

use std::collections::HashMap;

use cmdchan_common::protocol::CommandId;

use super::{Claim, Entry, StoreError};

#[derive(Debug)]
pub struct Index {
    seen: HashMap<CommandId, (u64, Entry)>,
    next_prune: u64,
    max: usize,
}

impl Index {
    pub fn new(max: usize) -> Self {
        Self {
            seen: HashMap::new(),
            next_prune: 0,
            max,
        }
    }

    /// Claims `id` if absent or expired; an entry is kept while `now <= until`.
    pub fn claim(
        &mut self,
        id: CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<Claim, StoreError> {
        if now >= self.next_prune || self.seen.len() >= self.max {
            self.prune(now);
            self.next_prune = now.saturating_add(1);
        }
        match self.seen.get(&id) {
            Some((keep_until, seen)) if *keep_until >= now => return Ok(Claim::Seen(seen.clone())),
            _ if self.seen.len() >= self.max => return Err(StoreError::Full { max: self.max }),
            _ => {}
        }
        self.seen.insert(id, (until, entry.clone()));
        Ok(Claim::Fresh)
    }

    /// Sets the entry for `id` (used for finishing, and when replaying a log).
    pub fn set(&mut self, id: CommandId, entry: &Entry, until: u64) {
        self.seen.insert(id, (until, entry.clone()));
    }

    pub fn remove(&mut self, id: &CommandId) {
        self.seen.remove(id);
    }

    /// Forgets IDs whose requests can no longer pass freshness.
    pub fn prune(&mut self, now: u64) {
        self.seen.retain(|_, (keep_until, _)| *keep_until >= now);
    }

    pub fn live(&self) -> impl Iterator<Item = (&CommandId, &(u64, Entry))> {
        self.seen.iter()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::State;

    fn entry(client: &str) -> Entry {
        Entry {
            client: client.into(),
            state: State::Running { since: 0 },
        }
    }

    #[test]
    fn an_id_is_seen_while_kept_and_free_after() {
        let mut index = Index::new(10);
        assert_eq!(index.claim([1; 16], &entry("a"), 100, 40), Ok(Claim::Fresh));
        assert_eq!(
            index.claim([1; 16], &entry("b"), 100, 100),
            Ok(Claim::Seen(entry("a")))
        );
        assert_eq!(
            index.claim([1; 16], &entry("b"), 200, 101),
            Ok(Claim::Fresh)
        );
    }

    #[test]
    fn expired_ids_are_pruned_so_memory_stays_bounded() {
        let mut index = Index::new(10);
        for i in 0..10u8 {
            assert_eq!(index.claim([i; 16], &entry("a"), 50, 0), Ok(Claim::Fresh));
        }
        assert_eq!(
            index.claim([99; 16], &entry("a"), 50, 0),
            Err(StoreError::Full { max: 10 })
        );
        assert_eq!(
            index.claim([99; 16], &entry("a"), 150, 51),
            Ok(Claim::Fresh)
        );
        assert_eq!(index.len(), 1);
    }
}
