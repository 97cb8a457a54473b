//! A program's claim on its command ID, held while it runs: finished with the program's
//! outcome (kept before the answer goes out), or, dropped unfinished, marked interrupted
//! in the background (mini-redis's drop-guard habit), so no claim is left `Running`.

use cmdchan_common::protocol::CommandId;

use super::{Answer, Record, State, Store, StoreError};

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
