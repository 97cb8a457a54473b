//! The seen-ID store: remembers command IDs until their requests go stale, so each ID
//! runs at most once. In memory for now, so it is shared by every connection of one
//! process but forgets on restart.

use std::collections::HashMap;
use std::sync::Mutex;

use cmdchan_common::protocol::CommandId;

/// Why an ID was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the command ID was already seen")]
    Duplicate,
    #[error("the store holds its limit of {max} live IDs")]
    Full { max: usize },
}

/// A bounded map from ID to the unix second after which it may be forgotten.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_ids: usize,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<CommandId, u64>,
    next_prune: u64,
}

impl MemoryStore {
    /// A store that refuses new IDs (fails closed) once `max_ids` live IDs are held.
    pub fn new(max_ids: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_ids,
        }
    }

    /// Inserts `id` if absent, to be kept while `now <= until`.
    pub fn insert(&self, id: CommandId, until: u64, now: u64) -> Result<(), StoreError> {
        // A poisoned lock only means another thread panicked mid-insert; the map itself
        // is still a valid map, so keep using it.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now >= inner.next_prune || inner.seen.len() >= self.max_ids {
            inner.seen.retain(|_, &mut keep_until| keep_until >= now);
            inner.next_prune = now.saturating_add(1);
        }
        match inner.seen.get(&id) {
            Some(&keep_until) if keep_until >= now => return Err(StoreError::Duplicate),
            _ if inner.seen.len() >= self.max_ids => {
                return Err(StoreError::Full { max: self.max_ids })
            }
            _ => {}
        }
        inner.seen.insert(id, until);
        Ok(())
    }

    /// How many IDs are held (live or waiting to be pruned).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_refused_while_kept_and_forgotten_after() {
        let store = MemoryStore::new(10);
        assert_eq!(store.insert([1; 16], 100, 40), Ok(()));
        assert_eq!(store.insert([1; 16], 100, 100), Err(StoreError::Duplicate));
        assert_eq!(store.insert([1; 16], 200, 101), Ok(()));
    }

    #[test]
    fn expired_ids_are_pruned_so_memory_stays_bounded() {
        let store = MemoryStore::new(10);
        for i in 0..10u8 {
            assert_eq!(store.insert([i; 16], 50, 0), Ok(()));
        }
        assert_eq!(
            store.insert([99; 16], 50, 0),
            Err(StoreError::Full { max: 10 })
        );
        assert_eq!(store.insert([99; 16], 150, 51), Ok(()));
        assert_eq!(store.len(), 1);
    }
}
