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
//!
//! Deferred saves (async callers, `Cache::save_deferred`) queue the same way but do not wait:
//! each carries a completer that the commit's leader completes. When no commit is running, the
//! store's background thread (`flusher.rs`) leads one; a saver that leaves deferred saves queued
//! with nobody leading wakes it too.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::write::{QueuedSave, Reports};
use crate::cache::SaveCompleter;
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
    /// The deferred saves among `pending` (and in the batch being committed), by ticket: their
    /// results complete these instead of going to `results`.
    deferred: HashMap<u64, SaveCompleter>,
}

impl QueueState {
    /// Whether a deferred save is queued: with no saver of its own waiting, only the
    /// background thread will lead its commit.
    fn has_deferred_pending(&self) -> bool {
        self.pending
            .iter()
            .any(|(t, _)| self.deferred.contains_key(t))
    }
}

impl Queue {
    /// Queues `save` and returns once it is committed (or failed). `commit` writes one batch and
    /// returns each ticket's result. `wake_background` is called when this saver leaves deferred
    /// saves queued behind it with no leader (see `submit_deferred`).
    pub(crate) fn submit(
        &self,
        save: QueuedSave,
        commit: impl Fn(&[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)>,
        wake_background: impl Fn(),
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
                let orphans = !state.leading && state.has_deferred_pending();
                drop(state);
                if orphans {
                    wake_background();
                }
                return result;
            }
            if !state.leading {
                self.lead(&mut state, &commit);
                continue;
            }
            self.done.wait(&mut state);
        }
    }

    /// Queues `save` without waiting: `done` completes when it is committed (or failed).
    /// Returns whether someone must lead a commit for it (no commit is running): the store's
    /// background thread then calls [`lead_pending`](Self::lead_pending). A commit already
    /// running takes it into its next batch, or its savers do.
    pub(crate) fn submit_deferred(&self, save: QueuedSave, done: SaveCompleter) -> bool {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.pending.push((ticket, save));
        state.deferred.insert(ticket, done);
        if state.leading {
            self.queued.notify_one();
            false
        } else {
            true
        }
    }

    /// Leads commits while saves are queued and nobody else is leading (the store's background
    /// thread, for deferred saves).
    pub(crate) fn lead_pending(
        &self,
        commit: impl Fn(&[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)>,
    ) {
        let mut state = self.state.lock();
        while !state.leading && !state.pending.is_empty() {
            self.lead(&mut state, &commit);
        }
    }

    /// Commits one batch as the leader: gathers, writes without the lock, hands out results
    /// (waking savers, completing deferred saves).
    fn lead(
        &self,
        state: &mut MutexGuard<'_, QueueState>,
        commit: &impl Fn(&[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)>,
    ) {
        state.leading = true;
        self.gather(state);
        let take = state.pending.len().min(MAX_BATCH);
        let batch: Vec<_> = state.pending.drain(..take).collect();
        let started = Instant::now();
        // The writes' reports (eviction events and metrics: the app's code) are held until the
        // results are handed out below: one that saves would otherwise wait for this batch.
        let (results, reports) = MutexGuard::unlocked(state, || {
            Reports::held(|| {
                catch_unwind(AssertUnwindSafe(|| commit(&batch)))
                    .unwrap_or_else(|_| panicked(&batch))
            })
        });
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        state.commit_nanos = if state.commit_nanos == 0 {
            took
        } else {
            (state.commit_nanos * 7 + took) / 8
        };
        state.last_batch = batch.len();
        let mut finished = Vec::new();
        for (ticket, result) in results {
            match state.deferred.remove(&ticket) {
                Some(done) => finished.push((done, result)),
                None => {
                    state.results.insert(ticket, result);
                }
            }
        }
        state.leading = false;
        self.done.notify_all();
        if !finished.is_empty() || !reports.is_empty() {
            // Completed without the lock: completing wakes a task, which may poll at once.
            MutexGuard::unlocked(state, || {
                for (done, result) in finished {
                    done.complete(result);
                }
                for r in reports {
                    // The leader may be the store's background thread: a subscriber's panic
                    // has nowhere to go from there.
                    let _ = catch_unwind(AssertUnwindSafe(|| r.emit()));
                }
            });
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
