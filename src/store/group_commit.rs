//! Group commit: concurrent saves share one write transaction, and so one fsync.
//!
//! Savers queue up. Whoever finds no commit running becomes the leader, takes what is queued,
//! commits it in one transaction, and wakes the others with their results.
//!
//! Without more, batches alternate between one save and all the others: when a batch of N
//! lands, the first of its savers to come back with its next save finds no commit running and
//! leads a batch of one, while the other N − 1 queue behind it. So a leader whose queue holds
//! fewer saves than the previous batch waits a little for the rest, at most half the time a
//! commit has recently taken: at worst a commit starts that much later, and usually it carries
//! the whole group. A lone saver (previous batch of one) never waits.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::write::QueuedSave;
use crate::error::{Error, ErrorKind};

/// The most saves one transaction takes.
const MAX_BATCH: usize = 1024;
/// The longest a leader waits for the rest of its group.
const MAX_GATHER: Duration = Duration::from_millis(2);

#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes savers waiting for their result (or to lead the next batch).
    done: Condvar,
    /// Wakes a leader gathering its group, on each save queued: apart from `done`, so that a
    /// queued save does not wake every saver waiting for a result.
    queued: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<(u64, QueuedSave)>,
    leading: bool,
    next_ticket: u64,
    results: HashMap<u64, Result<(), Error>>,
    /// The size of the last batch: how many savers are likely to come back.
    last_batch: usize,
    /// A moving average of commit time, in ns.
    commit_nanos: u64,
}

impl Queue {
    /// Queues `save` and returns once it is committed (or failed). `commit` writes one batch and
    /// returns each ticket's result.
    pub(crate) fn submit(
        &self,
        save: QueuedSave,
        commit: impl Fn(&[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)>,
    ) -> Result<(), Error> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.pending.push((ticket, save));
        if state.leading {
            // A gathering leader may be waiting for this save.
            self.queued.notify_one();
        }
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if !state.leading {
                state.leading = true;
                self.gather(&mut state);
                let take = state.pending.len().min(MAX_BATCH);
                let batch: Vec<_> = state.pending.drain(..take).collect();
                let started = Instant::now();
                let results = MutexGuard::unlocked(&mut state, || {
                    catch_unwind(AssertUnwindSafe(|| commit(&batch)))
                        .unwrap_or_else(|_| panicked(&batch))
                });
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                state.commit_nanos = if state.commit_nanos == 0 {
                    took
                } else {
                    (state.commit_nanos * 7 + took) / 8
                };
                state.last_batch = batch.len();
                state.results.extend(results);
                state.leading = false;
                self.done.notify_all();
                continue;
            }
            self.done.wait(&mut state);
        }
    }

    /// Waits, as a new leader, for the savers of the previous batch to queue their next saves.
    fn gather(&self, state: &mut MutexGuard<'_, QueueState>) {
        let want = state.last_batch.min(MAX_BATCH);
        if state.pending.len() >= want {
            return;
        }
        let budget = Duration::from_nanos(state.commit_nanos / 2).min(MAX_GATHER);
        let deadline = Instant::now() + budget;
        while state.pending.len() < want {
            if self.queued.wait_until(state, deadline).timed_out() {
                break;
            }
        }
    }
}

fn panicked(batch: &[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)> {
    batch
        .iter()
        .map(|(t, _)| {
            (
                *t,
                Err(Error::new(
                    ErrorKind::Storage,
                    "the storage engine panicked while saving",
                )),
            )
        })
        .collect()
}
