//! The claimed-ID table both local stores keep in memory: `memory` alone, `file` as the
//! index of its segments.
//!
//! Each ID costs one 32-byte slot: its keyed 128-bit hash (SipHash-1-3 under a key
//! drawn per process, so no client can choose IDs that collide), the request's digest,
//! its keep-until second and its client and state. The slots form open-addressing tables
//! with Robin Hood probing and backward-shift deletion (no tombstones), whose sizes are
//! not powers of two: a table grows by 1.6 when it is 80 % full, so it is always between
//! half and four fifths full, and a live ID costs 40 to 64 bytes at any fill. The
//! table is split in [`SHARDS`] shards, each behind its own lock: a shard grows (or is
//! swept) in a fraction of the time a whole table would take, so no claim waits long.
//!
//! Expired IDs are swept by [`Table::sweep`], a few thousand slots per lock, which the
//! stores run once a second: there is no pass over all IDs under one lock.
//!
//! Answers kept for retries (programs' only) live beside the slots, encoded, within
//! [`ANSWER_BUDGET`].

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use siphasher::sip128::{Hasher128, SipHasher13};

use cmdchan_common::protocol::{Body, CommandId};

use super::{Answer, Claim, Entry, State, StoreError};
use cmdchan_common::sync;

/// Shards of the table; a power of two (the shard is picked by the hash's top bits).
pub const SHARDS: usize = 16;

/// Most bytes of kept answers held at once; beyond it a finished program is remembered
/// without its answer (a retry then hears `duplicate`).
pub const ANSWER_BUDGET: usize = 64 << 20;

/// Slots one sweep step looks at while holding a shard's lock.
const SWEEP_STEP: usize = 4096;

/// The table: [`SHARDS`] shards, and the count of IDs held across them.
pub struct Table {
    shards: Box<[Mutex<Shard>]>,
    key: (u64, u64),
    held: AtomicUsize,
    max: usize,
    /// The unix second of the last sweep forced by a full table.
    forced_sweep: AtomicU64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("held", &self.len())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// One shard: a Robin Hood table and what its slots point to.
#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    len: usize,
    /// Where the next sweep step starts.
    cursor: usize,
    clients: Clients,
    answers: HashMap<u128, Box<[u8]>>,
    answer_bytes: usize,
}

/// One claimed ID: 32 bytes. `until == 0` marks an empty slot.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u128,
    digest: u64,
    /// Kept while `now <= until` (unix seconds).
    until: u32,
    /// The client's number in its shard (low 24 bits) and the state (top bits).
    info: u32,
}

const CLIENT_BITS: u32 = 0x00ff_ffff;
const RUNNING: u32 = 0 << 24;
const KEPT: u32 = 1 << 24;
const BUILTIN: u32 = 2 << 24;
const DROPPED: u32 = 3 << 24;
const INTERRUPTED: u32 = 4 << 24;
const STATE_BITS: u32 = 7 << 24;

/// Client names, each stored once per shard.
#[derive(Default)]
struct Clients {
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
}

impl Table {
    /// An empty table holding at most `max` IDs, hashing under a fresh random key.
    pub fn new(max: usize) -> Self {
        let mut seed = [0u8; 16];
        // Without randomness the keys would be guessable; OpenSSL's CSPRNG only fails
        // when the system has no entropy source at all, and then the server is unusable.
        let _ = openssl::rand::rand_bytes(&mut seed);
        let (a, b) = seed.split_at(8);
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            key: (word(a), word(b)),
            held: AtomicUsize::new(0),
            max,
            forced_sweep: AtomicU64::new(u64::MAX),
        }
    }

    /// Claims `id` for `entry` until `until`, if it is absent or expired at `now`.
    pub fn claim(
        &self,
        id: &CommandId,
        entry: &Entry,
        until: u64,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let key = self.hash(id);
        let mut shard = self.shard(key);
        if let Some(i) = shard.find(key) {
            let slot = shard.slots[i];
            if u64::from(slot.until) >= now {
                return Ok(Claim::Seen(shard.entry(slot)));
            }
            shard.remove_at(i);
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        if self.held.load(Ordering::Relaxed) >= self.max {
            // Sweep now rather than wait for the sweeper, but once a second at most: a
            // store full of live IDs must not make every refusal a scan of every ID.
            drop(shard);
            if self.forced_sweep.swap(now, Ordering::Relaxed) != now {
                self.sweep(now);
            }
            if self.held.load(Ordering::Relaxed) >= self.max {
                return Err(StoreError::Full { max: self.max });
            }
            shard = self.shard(key);
            if shard.find(key).is_some() {
                // Claimed by someone else meanwhile.
                return self.claim(id, entry, until, now);
            }
        }
        shard.insert(key, entry, until);
        self.held.fetch_add(1, Ordering::Relaxed);
        Ok(Claim::Fresh)
    }

    /// Sets `id`'s entry, claimed or not (an outcome; a record read back from disk).
    pub fn set(&self, id: &CommandId, entry: &Entry, until: u64) {
        let key = self.hash(id);
        let mut shard = self.shard(key);
        match shard.find(key) {
            Some(i) => shard.remove_at(i),
            None => {
                self.held.fetch_add(1, Ordering::Relaxed);
            }
        }
        shard.insert(key, entry, until);
    }

    /// Forgets `id` (a claim that could not be made durable).
    pub fn remove(&self, id: &CommandId) {
        let key = self.hash(id);
        let mut shard = self.shard(key);
        if let Some(i) = shard.find(key) {
            shard.remove_at(i);
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops every ID that expired before `now`, a bounded step per lock, so claims on
    /// the same shard wait at most one step. Returns how many went.
    pub fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut done = 0;
            loop {
                let mut shard = sync::lock(shard);
                let size = shard.slots.len();
                let gone = shard.sweep(now, SWEEP_STEP);
                removed += gone;
                self.held.fetch_sub(gone, Ordering::Relaxed);
                done += SWEEP_STEP;
                if done >= size {
                    shard.shrink_if_sparse();
                    break;
                }
            }
        }
        removed
    }

    /// IDs held (live, or expired and not yet swept).
    pub fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of slots allocated, for the memory figures.
    pub fn slot_bytes(&self) -> usize {
        let slots: usize = self
            .shards
            .iter()
            .map(|s| sync::lock(s).slots.capacity())
            .sum();
        slots * std::mem::size_of::<Slot>()
    }

    fn hash(&self, id: &CommandId) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(id);
        h.finish128().as_u128()
    }

    fn shard(&self, key: u128) -> MutexGuard<'_, Shard> {
        // The top bits pick the shard; the low 64 pick the slot within it.
        let index = (key >> 124) as usize % SHARDS;
        sync::lock(&self.shards[index])
    }
}

impl Shard {
    /// The index holding `key`, if any. Robin Hood order lets a miss stop as soon as it
    /// meets a slot nearer its home than the probe is to `key`'s.
    fn find(&self, key: u128) -> Option<usize> {
        let cap = self.slots.len();
        if cap == 0 {
            return None;
        }
        let mut i = home(key, cap);
        for probe in 0..cap {
            let slot = &self.slots[i];
            if slot.until == 0 || distance(slot.key, i, cap) < probe {
                return None;
            }
            if slot.key == key {
                return Some(i);
            }
            i = next(i, cap);
        }
        None
    }

    /// Inserts an absent `key`, growing the table first if it would pass 80 % full.
    fn insert(&mut self, key: u128, entry: &Entry, until: u64) {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            let cap = (self.slots.len() * 8 / 5).max(8);
            self.rebuild(cap);
        }
        let info = self.clients.number(&entry.client) | self.keep(key, &entry.state);
        // Zero marks an empty slot; an ID kept "until 1970" is as good as expired.
        let until = u32::try_from(until).unwrap_or(u32::MAX).max(1);
        let slot = Slot {
            key,
            digest: entry.digest,
            until,
            info,
        };
        self.place(slot);
        self.len += 1;
    }

    /// Puts `slot` in the table: Robin Hood, the entry farther from home keeps a place.
    fn place(&mut self, mut slot: Slot) {
        let cap = self.slots.len();
        let mut i = home(slot.key, cap);
        let mut probe = 0;
        loop {
            let here = &mut self.slots[i];
            if here.until == 0 {
                *here = slot;
                return;
            }
            let theirs = distance(here.key, i, cap);
            if theirs < probe {
                std::mem::swap(here, &mut slot);
                probe = theirs;
            }
            i = next(i, cap);
            probe += 1;
        }
    }

    /// Empties slot `i` and shifts the run after it back by one (no tombstones).
    fn remove_at(&mut self, i: usize) {
        let cap = self.slots.len();
        if self.slots[i].info & STATE_BITS == KEPT {
            self.drop_answer(self.slots[i].key);
        }
        self.slots[i] = Slot::default();
        self.len -= 1;
        let (mut hole, mut j) = (i, next(i, cap));
        while self.slots[j].until != 0 && distance(self.slots[j].key, j, cap) > 0 {
            self.slots[hole] = self.slots[j];
            self.slots[j] = Slot::default();
            hole = j;
            j = next(j, cap);
        }
    }

    /// Moves the cursor over up to `budget` slots, removing the expired ones.
    fn sweep(&mut self, now: u64, budget: usize) -> usize {
        let cap = self.slots.len();
        let (mut removed, mut passed) = (0, 0);
        while passed < budget.min(cap) && self.len > 0 {
            let i = self.cursor % cap;
            let slot = self.slots[i];
            if slot.until != 0 && u64::from(slot.until) < now {
                // The next slot may shift into this one: look at it again.
                self.remove_at(i);
                removed += 1;
                continue;
            }
            self.cursor = next(i, cap);
            passed += 1;
        }
        removed
    }

    /// After a burst, gives memory back: a table under a fifth full halves its waste.
    fn shrink_if_sparse(&mut self) {
        if self.slots.len() > 64 && self.len * 5 < self.slots.len() {
            self.rebuild((self.len * 2).max(8));
        }
    }

    fn rebuild(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        self.cursor = 0;
        for slot in old.into_iter().filter(|s| s.until != 0) {
            self.place(slot);
        }
    }

    /// The state bits for `state`, storing a kept answer if the budget allows.
    fn keep(&mut self, key: u128, state: &State) -> u32 {
        match state {
            State::Running => RUNNING,
            State::Done(Answer::Builtin) => BUILTIN,
            State::Done(Answer::Dropped) => DROPPED,
            State::Done(Answer::Interrupted) => INTERRUPTED,
            State::Done(Answer::Kept(bodies)) => {
                let budget = ANSWER_BUDGET / SHARDS;
                match postcard::to_stdvec(bodies) {
                    Ok(bytes) if self.answer_bytes + bytes.len() <= budget => {
                        self.answer_bytes += bytes.len();
                        self.answers.insert(key, bytes.into_boxed_slice());
                        KEPT
                    }
                    _ => DROPPED,
                }
            }
        }
    }

    fn entry(&self, slot: Slot) -> Entry {
        let answer = |kept: Option<&Box<[u8]>>| {
            let bodies = kept.and_then(|b| postcard::from_bytes::<Vec<Body>>(b).ok());
            bodies.map_or(Answer::Dropped, Answer::Kept)
        };
        let state = match slot.info & STATE_BITS {
            RUNNING => State::Running,
            KEPT => State::Done(answer(self.answers.get(&slot.key))),
            BUILTIN => State::Done(Answer::Builtin),
            INTERRUPTED => State::Done(Answer::Interrupted),
            _ => State::Done(Answer::Dropped),
        };
        Entry {
            client: self.clients.name(slot.info & CLIENT_BITS).to_owned(),
            digest: slot.digest,
            state,
        }
    }

    fn drop_answer(&mut self, key: u128) {
        if let Some(a) = self.answers.remove(&key) {
            self.answer_bytes -= a.len();
        }
    }
}

/// A key's home slot in a table of `cap` slots: the high half of (low 64 bits × cap).
fn home(key: u128, cap: usize) -> usize {
    ((u128::from(key as u64) * cap as u128) >> 64) as usize
}

/// How far slot `i` is from the home of the key it holds.
fn distance(key: u128, i: usize, cap: usize) -> usize {
    // A compare, not `%`: this runs at every probe step, and a division is slow.
    let d = i + cap - home(key, cap);
    if d >= cap {
        d - cap
    } else {
        d
    }
}

fn next(i: usize, cap: usize) -> usize {
    if i + 1 == cap {
        0
    } else {
        i + 1
    }
}

impl Clients {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(n) = self.numbers.get(name) {
            return *n;
        }
        // More distinct clients than 24 bits count would share the last number: they
        // would see each other's IDs as retries, not replays; 16 million provisioned
        // names per shard is far beyond any deployment.
        let n = u32::try_from(self.names.len())
            .unwrap_or(CLIENT_BITS)
            .min(CLIENT_BITS);
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.numbers.insert(name, n);
        n
    }

    fn name(&self, n: u32) -> &str {
        self.names.get(n as usize).map_or("", |s| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmdchan_common::protocol::{Output, Reply, Stream};

    fn entry(client: &str) -> Entry {
        Entry {
            client: client.into(),
            digest: 7,
            state: State::Running,
        }
    }

    fn id(n: u32) -> CommandId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn an_id_is_seen_while_kept_and_free_after() {
        let table = Table::new(10);
        assert_eq!(table.claim(&id(1), &entry("a"), 100, 40), Ok(Claim::Fresh));
        assert_eq!(
            table.claim(&id(1), &entry("b"), 100, 100),
            Ok(Claim::Seen(entry("a")))
        );
        assert_eq!(table.claim(&id(1), &entry("b"), 200, 101), Ok(Claim::Fresh));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn each_id_keeps_its_own_client_and_digest() {
        let table = Table::new(100);
        let clients = ["a", "b", "b", "a", "c", "a"];
        for (i, client) in (0u32..).zip(clients) {
            let mut e = entry(client);
            e.digest = u64::from(i);
            assert_eq!(table.claim(&id(i), &e, 100, 0), Ok(Claim::Fresh));
        }
        for (i, client) in (0u32..).zip(clients) {
            let mut e = entry(client);
            e.digest = u64::from(i);
            assert_eq!(table.claim(&id(i), &entry("z"), 100, 0), Ok(Claim::Seen(e)));
        }
    }

    #[test]
    fn a_full_table_refuses_then_takes_ids_once_old_ones_expire() {
        let table = Table::new(10);
        for i in 0..10 {
            assert_eq!(table.claim(&id(i), &entry("a"), 50, 0), Ok(Claim::Fresh));
        }
        assert_eq!(
            table.claim(&id(99), &entry("a"), 50, 0),
            Err(StoreError::Full { max: 10 })
        );
        assert_eq!(table.claim(&id(99), &entry("a"), 150, 51), Ok(Claim::Fresh));
        assert_eq!(table.len(), 1, "the forced sweep dropped the expired ten");
    }

    #[test]
    fn many_ids_survive_growth_removal_and_sweeps_exactly() {
        let table = Table::new(1_000_000);
        // Expiry times interleave so every sweep removes from the middle of runs.
        for i in 0..50_000u32 {
            let until = 100 + u64::from(i % 7);
            assert_eq!(table.claim(&id(i), &entry("a"), until, 0), Ok(Claim::Fresh));
        }
        for i in (0..50_000u32).step_by(3) {
            table.remove(&id(i));
        }
        table.sweep(103);
        for i in 0..50_000u32 {
            let live = i % 3 != 0 && 100 + i % 7 >= 103;
            let seen = matches!(table.claim(&id(i), &entry("b"), 1, 0), Ok(Claim::Seen(_)));
            assert_eq!(seen, live, "id {i}");
            if !live {
                table.remove(&id(i));
            }
        }
        let live = (0..50_000u32)
            .filter(|i| i % 3 != 0 && 100 + i % 7 >= 103)
            .count();
        assert_eq!(table.len(), live);
    }

    #[test]
    fn slots_stay_between_half_and_four_fifths_full() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        let table = Table::new(usize::MAX);
        for i in 0..200_000u32 {
            table.claim(&id(i), &entry("a"), 100, 0).expect("claim");
            if i > 10_000 && i % 997 == 0 {
                let per_id = table.slot_bytes() as f64 / f64::from(i + 1);
                assert!(
                    (32.0..=66.0).contains(&per_id),
                    "{per_id} bytes per ID at {i}"
                );
            }
        }
    }

    #[test]
    fn a_program_answer_is_kept_and_goes_with_its_id() {
        let table = Table::new(10);
        table.claim(&id(1), &entry("a"), 100, 0).expect("claim");
        let out = Body::Output(Output {
            stream: Stream::Stdout,
            data: b"hi".to_vec(),
        });
        let done = Entry {
            state: State::Done(Answer::Kept(vec![out, Body::Ok(Reply::Pong)])),
            ..entry("a")
        };
        table.set(&id(1), &done, 100);
        assert_eq!(
            table.claim(&id(1), &entry("a"), 100, 1),
            Ok(Claim::Seen(done))
        );
        table.sweep(101);
        assert!(table.is_empty());
        let shards_bytes: usize = table
            .shards
            .iter()
            .map(|s| s.lock().expect("lock").answer_bytes)
            .sum();
        assert_eq!(shards_bytes, 0, "the answer went with its ID");
    }
}
