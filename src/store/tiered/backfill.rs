//! Backfills saved after the call that fetched them returns (feature `remote`). A large object
//! found in the remote is lent to its caller from memory at once, and saved into the file by
//! the store's background thread (`flusher.rs`); until that commit, the store's reads find it
//! here, so the next call is still served without asking the remote. See ARCHITECTURE.md,
//! "The remote tier".

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::not_kept;
use crate::cache::{Entry, Lent};
use crate::error::Error;
use crate::id::{CheckpointId, Function};
use crate::store::Shared;
use crate::store::save::Commit;
use crate::store::write::{SaveOp, Tx};

/// Records at least this long are saved after their call returns; shorter ones are saved on
/// the call's thread, where the save costs less than handing it over.
pub(crate) const LATER_FROM: usize = 128 * 1024;
/// At most this many bytes wait at once; past it, a backfill is saved on the call's thread.
const WAITING_MAX: usize = 64 * 1024 * 1024;
/// The most bytes one commit of the background thread saves: other saves wait for the writer
/// no longer than a commit of this size takes (about 10 ms).
const COMMIT_MAX: usize = 8 * 1024 * 1024;

/// Backfills waiting for their commit.
#[derive(Default)]
pub(crate) struct Backfills {
    state: Mutex<Waiting>,
    landed: Condvar,
    /// How many wait: a local miss with none waiting takes no lock.
    count: AtomicUsize,
    /// Tests only (`testing::hold_backfills`): the background thread saves nothing while set.
    #[cfg(feature = "fault-injection")]
    pub(crate) held: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Waiting {
    records: HashMap<CheckpointId, Arc<Backfill>>,
    /// Not yet taken by a commit, oldest first.
    queued: Vec<CheckpointId>,
    bytes: usize,
    /// Commits under way (their records are still read from here until they end).
    landing: usize,
}

/// A sound remote object to be saved as its backfill: what `Entry` borrows, owned.
pub(crate) struct Backfill {
    pub function: Function,
    pub record: Bytes,
    pub value_type: Option<&'static str>,
    pub compute: Duration,
    /// Its object's write time (ms since the epoch): the entry's creation time.
    pub saved_ms: u64,
    /// When it was fetched (the store's clock): an entry created since was saved meanwhile.
    pub fetched_ms: u64,
    /// Lookups served it from memory: hits its entry is given when it is saved.
    pub served: AtomicU64,
}

impl Backfill {
    /// The entry its save writes, as a local save of the same result would.
    pub(in crate::store) fn entry(&self) -> Entry<'_> {
        let mut entry = Entry::new(&self.function, &self.record, self.compute);
        if let Some(name) = self.value_type {
            entry = entry.with_value_type(name);
        }
        entry.created_ms = Some(self.saved_ms);
        entry
    }
}

impl Backfills {
    #[cfg(feature = "fault-injection")]
    fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    #[cfg(not(feature = "fault-injection"))]
    fn is_held(&self) -> bool {
        false
    }
}

#[cfg(feature = "fault-injection")]
impl crate::Store {
    /// See `testing::hold_backfills`.
    pub(crate) fn hold_backfills(&self, held: bool) {
        let shared = self.shared();
        shared.backfills.held.store(held, Ordering::Relaxed);
        if !held {
            shared.flusher.request_backfill();
        }
    }
}

impl Shared {
    /// Queues `backfill` of `id` for the background thread to save, and keeps it readable
    /// meanwhile; `false` (nothing queued) when too much waits already or the thread is not
    /// running: the caller saves it.
    pub(in crate::store) fn save_later(&self, id: &CheckpointId, backfill: &Arc<Backfill>) -> bool {
        let len = backfill.record.len();
        {
            let mut state = self.backfills.state.lock();
            if state.bytes + len > WAITING_MAX || state.records.contains_key(id) {
                return false;
            }
            state.bytes += len;
            state.records.insert(*id, Arc::clone(backfill));
            state.queued.push(*id);
            self.backfills
                .count
                .store(state.records.len(), Ordering::Release);
        }
        if self.flusher.request_backfill() {
            return true;
        }
        // Stopped meanwhile: taken back (this one, not another queued since under the same id),
        // for the caller to save.
        let mut state = self.backfills.state.lock();
        let ours = state
            .records
            .get(id)
            .is_some_and(|b| Arc::ptr_eq(b, backfill));
        match state.queued.iter().position(|q| q == id) {
            Some(pos) if ours => {
                state.queued.remove(pos);
                state.records.remove(id);
                state.bytes -= len;
                self.backfills
                    .count
                    .store(state.records.len(), Ordering::Release);
                false
            }
            // A flush took it already.
            _ => true,
        }
    }

    /// Lends the backfill waiting for `id`, if any, with its age on the store's clock. One
    /// older than the store's `max_age` is not lent (nor would its entry be).
    pub(in crate::store) fn read_waiting(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> bool {
        if self.backfills.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let Some(backfill) = self.backfills.state.lock().records.get(id).cloned() else {
            return false;
        };
        let age = Duration::from_millis(self.now_ms().saturating_sub(backfill.saved_ms));
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        if max_age != 0 && age > Duration::from_millis(max_age) {
            return false;
        }
        backfill.served.fetch_add(1, Ordering::Relaxed);
        // Checked when it was fetched (`Tier::fetch` parsed the whole record).
        read(Lent::checked(&backfill.record), Some(age));
        true
    }

    /// The background thread's part: `save_waiting`, unless a test holds it.
    pub(in crate::store) fn save_waiting_in_background(&self) {
        if !self.backfills.is_held() {
            self.save_waiting();
        }
    }

    /// Saves the backfills queued so far, in relaxed commits of at most `COMMIT_MAX` bytes
    /// (so that other saves get the writer in between), each backfill alone if its batch
    /// fails. An id the file has an entry for that was created since the fetch (saved by a
    /// call that computed it) keeps that entry; an older one (expired, since the lookup missed
    /// it) is replaced. A backfill that cannot be saved is dropped (a debug trace says why):
    /// the next call asks the remote again.
    fn save_waiting(&self) {
        let taken: Vec<(CheckpointId, Arc<Backfill>)> = {
            let mut state = self.backfills.state.lock();
            if state.queued.is_empty() {
                return;
            }
            state.landing += 1;
            let queued = std::mem::take(&mut state.queued);
            queued
                .into_iter()
                .filter_map(|id| Some((id, Arc::clone(state.records.get(&id)?))))
                .collect()
        };
        // Landed whatever happens below (a panic in the app's tracing subscriber included):
        // a flush waits for `landing` to reach zero.
        let _landed = Landed {
            shared: self,
            taken: &taken,
        };
        let mut rest: &[(CheckpointId, Arc<Backfill>)] = &taken;
        while !rest.is_empty() {
            let (mut n, mut bytes) = (0, 0);
            while n < rest.len() && (n == 0 || bytes + rest[n].1.record.len() <= COMMIT_MAX) {
                bytes += rest[n].1.record.len();
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            self.save_batch(batch);
            rest = later;
        }
    }

    fn save_batch(&self, batch: &[(CheckpointId, Arc<Backfill>)]) {
        let fits: Vec<_> = batch
            .iter()
            .filter(|(id, b)| match self.check_size(b.record.len()) {
                Ok(()) => true,
                Err(e) => {
                    not_kept(id, &e);
                    false
                }
            })
            .collect();
        let put = |tx: &mut Tx<'_>, id: &CheckpointId, b: &Backfill| {
            if tx
                .meta(id.as_bytes())?
                .is_some_and(|m| m.created_ms >= b.fetched_ms)
            {
                return Ok(false);
            }
            tx.put(&SaveOp::new(id, &b.entry()))?;
            Ok::<_, Error>(true)
        };
        let together = self.write(Commit::Relaxed, |tx| {
            let mut saved = Vec::with_capacity(fits.len());
            for &item in &fits {
                if put(tx, &item.0, &item.1)? {
                    saved.push(item);
                }
            }
            Ok(saved)
        });
        let saved = match together {
            Ok(saved) => saved,
            Err(_) => fits
                .into_iter()
                .filter(
                    |(id, b)| match self.write(Commit::Relaxed, |tx| put(tx, id, b)) {
                        Ok(saved) => saved,
                        Err(e) => {
                            not_kept(id, &e);
                            false
                        }
                    },
                )
                .collect(),
        };
        let now = self.now_ms();
        for (id, backfill) in saved {
            if let Some(tier) = &self.remote {
                tier.backfilled();
            }
            // The hits it was served from memory, now that its entry can take them.
            for _ in 0..backfill.served.load(Ordering::Relaxed) {
                self.accessed(id, now);
            }
        }
    }

    /// Saves every backfill waiting, and waits for those another thread is saving: after it,
    /// nothing fetched before the call waits in memory (saved, or dropped if it could not be).
    pub(in crate::store) fn save_all_waiting(&self) {
        self.save_waiting();
        let mut state = self.backfills.state.lock();
        while state.landing > 0 {
            self.backfills.landed.wait(&mut state);
        }
    }
}

/// Ends a `save_waiting`: its backfills leave the map (saved, or dropped), and a flush waiting
/// for it is woken.
struct Landed<'a> {
    shared: &'a Shared,
    taken: &'a [(CheckpointId, Arc<Backfill>)],
}

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        let backfills = &self.shared.backfills;
        let mut state = backfills.state.lock();
        for (id, backfill) in self.taken {
            if state
                .records
                .get(id)
                .is_some_and(|b| Arc::ptr_eq(b, backfill))
            {
                state.records.remove(id);
                state.bytes -= backfill.record.len();
            }
        }
        state.landing -= 1;
        backfills
            .count
            .store(state.records.len(), Ordering::Release);
        backfills.landed.notify_all();
    }
}
