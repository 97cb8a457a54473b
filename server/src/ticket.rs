//! A command ID's life after its claim, in one place: the [`Ticket`] a program's run
//! holds, finished with its outcome (kept before the answer goes out), or marked
//! interrupted if it is dropped unfinished; and what a retry of a claimed ID hears.

use cmdchan_common::protocol::CommandId;

use crate::outcome::{Outcome, Retry};
use crate::replay::{self, Answer, Entry, Record, State, Store, StoreError};

/// A program's claim on its command ID, held while it runs. [`Ticket::finish`] keeps
/// its outcome; dropped unfinished (a panic, a task cut short), the ID is marked
/// interrupted in the background, so a retry hears that it may have run rather than
/// `in progress` until it goes stale.
#[derive(Debug)]
pub struct Ticket {
    store: Store,
    record: Record,
    finished: bool,
}

impl Ticket {
    /// The claim `record` (state `Running`), just made in `store`.
    pub(crate) fn new(store: Store, record: Record) -> Self {
        Self {
            store,
            record,
            finished: false,
        }
    }

    pub fn id(&self) -> CommandId {
        self.record.id
    }

    /// The unix second after which the ID could no longer be retried (stale).
    pub fn until(&self) -> u64 {
        self.record.until
    }

    /// Keeps `answer` as the ID's outcome: durable, and with `redis_replicas` held by
    /// the replicas, before this returns. An error leaves the ticket unfinished, to be
    /// tried again (the answer must wait until it is kept).
    pub async fn finish(&mut self, answer: Answer, now: u64) -> Result<(), StoreError> {
        self.record.entry.state = State::Done(answer);
        self.store.finish(&self.record, now).await?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let mut record = self.record.clone();
        record.entry.state = State::Done(Answer::Interrupted);
        runtime.spawn(async move {
            // Best effort: a store that cannot take it now (the reason the ticket was
            // not finished, often) leaves the claim `Running`, which a restart of the
            // file store reads as interrupted too.
            let _ = store.finish(&record, cmdchan_common::time::now()).await;
        });
    }
}

/// The answer to a retry of a claimed ID, from what the store has of it: the kept
/// answer, a built-in run again (`rerun`: it has no effect), or why not.
pub fn retried(entry: Entry, rerun: Option<impl FnOnce() -> Outcome>) -> Retry {
    match (entry.state, rerun) {
        (State::Done(Answer::Kept(bodies)), _) => Retry::Kept(bodies),
        (State::Done(Answer::Builtin), Some(rerun)) => Retry::Builtin(Box::new(rerun())),
        (State::Running, _) => Retry::InProgress,
        (State::Done(Answer::Interrupted), _) => Retry::Interrupted,
        _ => Retry::Dropped,
    }
}

/// What a finished program leaves for a retry: its bodies, then its final one, if they
/// fit [`replay::OUTCOME_CAP`]; otherwise only that it ran.
pub fn answer_of(kept: Option<Vec<cmdchan_common::protocol::Body>>, outcome: &Outcome) -> Answer {
    match kept {
        Some(mut bodies) => {
            bodies.extend(outcome.clone().into_bodies());
            replay::keep(bodies)
        }
        None => Answer::Dropped,
    }
}
