//! The in-memory map of claimed IDs, bounded by the freshness window, a maximum count,
//! and a byte budget for kept answers. Both local stores use it: `memory` alone, `file`
//! as the index of its log.
//!
//! Each ID costs one 16-byte slot (times as u32 unix seconds, the client as a number
//! into a table of names) beside its 16-byte key; answers kept for retries live in a
//! second map, encoded, and only while their total stays under [`ANSWER_BUDGET`].

use std::collections::HashMap;
use std::sync::Arc;

use cmdchan_common::protocol::{Body, CommandId};

use super::{Claim, Entry, State, StoreError};

/// Most bytes of kept answers held at once; beyond it a finished command is remembered
/// without its answer (a retry then hears `duplicate`).
pub const ANSWER_BUDGET: usize = 64 << 20;

#[derive(Debug)]
pub struct Index {
    slots: HashMap<CommandId, Slot>,
    answers: HashMap<CommandId, Box<[u8]>>,
    answer_bytes: usize,
    clients: Clients,
    next_prune: u64,
    max: usize,
}

/// One claimed ID: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Kept while `now <= until` (unix seconds).
    until: u32,
    /// When it started or, if `done`, finished (unix seconds).
    when: u32,
    client: u32,
    done: bool,
}

/// Client names, each stored once.
#[derive(Debug, Default)]
struct Clients {
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
}

impl Index {
    pub fn new(max: usize) -> Self {
        let (slots, answers) = (HashMap::new(), HashMap::new());
        Self {
            slots,
            answers,
            answer_bytes: 0,
            clients: Clients::default(),
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
        // At most once a second, full or not: a full table pruned on every claim made
        // each refusal a scan of every ID held, under the store's lock (195 µs at
        // 100,000 IDs in the admission bench, milliseconds at the default 1,000,000).
        if now >= self.next_prune {
            self.prune(now);
            self.next_prune = now.saturating_add(1);
        }
        // A fresh ID (the common case) has no old answer to drop, so that lookup is
        // skipped: the tables are large and their keys random, so each lookup is likely
        // a cache miss.
        let expired = match self.slots.get(&id) {
            Some(slot) if u64::from(slot.until) >= now => {
                return Ok(Claim::Seen(self.entry(&id, *slot)))
            }
            Some(_) => true,
            None if self.slots.len() >= self.max => return Err(StoreError::Full { max: self.max }),
            None => false,
        };
        if expired {
            self.drop_answer(&id);
        }
        self.put(id, entry, until);
        Ok(Claim::Fresh)
    }

    /// Sets the entry for `id` (used for finishing, and when reading a log back).
    pub fn set(&mut self, id: CommandId, entry: &Entry, until: u64) {
        self.drop_answer(&id);
        self.put(id, entry, until);
    }

    /// Sets the entry for `id`, which holds no answer.
    fn put(&mut self, id: CommandId, entry: &Entry, until: u64) {
        let (when, done, answer) = match &entry.state {
            State::Running { since } => (*since, false, None),
            State::Done { at, answer } => (*at, true, answer.as_deref()),
        };
        if let Some(encoded) = answer.and_then(|a| postcard::to_stdvec(a).ok()) {
            if self.answer_bytes + encoded.len() <= ANSWER_BUDGET {
                self.answer_bytes += encoded.len();
                self.answers.insert(id, encoded.into_boxed_slice());
            }
        }
        let client = self.clients.number(&entry.client);
        self.slots.insert(
            id,
            Slot {
                until: secs(until),
                when: secs(when),
                client,
                done,
            },
        );
    }

    pub fn remove(&mut self, id: &CommandId) {
        self.slots.remove(id);
        self.drop_answer(id);
    }

    /// Forgets IDs whose requests can no longer pass freshness.
    pub fn prune(&mut self, now: u64) {
        let answers = &mut self.answers;
        let answer_bytes = &mut self.answer_bytes;
        self.slots.retain(|id, slot| {
            let keep = u64::from(slot.until) >= now;
            if !keep {
                if let Some(a) = answers.remove(id) {
                    *answer_bytes -= a.len();
                }
            }
            keep
        });
        // After a burst, give the memory back: a table four times too big shrinks.
        if self.slots.capacity() > 4 * self.slots.len().max(1024) {
            self.slots.shrink_to(2 * self.slots.len());
            self.answers.shrink_to(2 * self.answers.len());
        }
    }

    /// Every held ID with its keep-until time and entry.
    pub fn live(&self) -> impl Iterator<Item = (CommandId, u64, Entry)> + '_ {
        self.slots
            .iter()
            .map(|(id, slot)| (*id, u64::from(slot.until), self.entry(id, *slot)))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn entry(&self, id: &CommandId, slot: Slot) -> Entry {
        let when = u64::from(slot.when);
        let state = match slot.done {
            false => State::Running { since: when },
            true => State::Done {
                at: when,
                answer: self.answer(id),
            },
        };
        Entry {
            client: self.clients.name(slot.client).to_owned(),
            state,
        }
    }

    fn answer(&self, id: &CommandId) -> Option<Vec<Body>> {
        postcard::from_bytes(self.answers.get(id)?).ok()
    }

    fn drop_answer(&mut self, id: &CommandId) {
        if let Some(a) = self.answers.remove(id) {
            self.answer_bytes -= a.len();
        }
    }
}

impl Clients {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(n) = self.numbers.get(name) {
            return *n;
        }
        let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.numbers.insert(name, n);
        n
    }

    fn name(&self, n: u32) -> &str {
        self.names.get(n as usize).map_or("", |s| s)
    }
}

/// Unix seconds as u32 (good until 2106; later times are held as that year's end).
fn secs(unix: u64) -> u32 {
    u32::try_from(unix).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmdchan_common::protocol::{Reply, Stream};

    fn entry(client: &str) -> Entry {
        Entry {
            client: client.into(),
            state: State::Running { since: 7 },
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
    fn each_id_keeps_its_own_client_when_clients_take_turns() {
        let mut index = Index::new(10);
        let clients = ["a", "b", "b", "a", "c", "a"];
        for (i, client) in (0u8..).zip(clients) {
            assert_eq!(
                index.claim([i; 16], &entry(client), 100, 0),
                Ok(Claim::Fresh)
            );
        }
        for (i, client) in (0u8..).zip(clients) {
            assert_eq!(
                index.claim([i; 16], &entry("z"), 100, 0),
                Ok(Claim::Seen(entry(client)))
            );
        }
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

    #[test]
    fn finished_entries_keep_their_answer_and_give_it_back() {
        let mut index = Index::new(10);
        index.claim([1; 16], &entry("a"), 100, 0).expect("claim");
        let out = Body::Output(cmdchan_common::protocol::Output {
            stream: Stream::Stdout,
            data: b"hi".to_vec(),
        });
        let answer = vec![out, Body::Ok(Reply::Pong)];
        let done = Entry {
            client: "a".into(),
            state: State::Done {
                at: 9,
                answer: Some(answer),
            },
        };
        index.set([1; 16], &done, 100);
        assert_eq!(
            index.claim([1; 16], &entry("a"), 100, 1),
            Ok(Claim::Seen(done))
        );
        index.prune(101);
        assert!(
            index.is_empty() && index.answer_bytes == 0,
            "the answer went with its ID"
        );
    }
}
