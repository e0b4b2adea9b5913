//! The save path's store half: write transactions (bookkeeping and limits applied in each),
//! saves one by one through the group-commit queue, in batches, or streamed into chunks, and the
//! flushes and syncs of buffered bookkeeping. See ARCHITECTURE.md, "The save path".

use std::sync::atomic::Ordering;
use std::time::Instant;

use redb::{ReadableTable as _, WriteTransaction};

use super::Shared;
use super::engine_error::engine_error;
use super::options::{AccessMode, ConcurrencyMode, Durability};
use super::schema::indexes::CREATED;
use super::schema::{INDEXES_KEY, INFO};
use super::write::{GROUP_COMMIT_MAX_BYTES, QueuedSave, Reports, SaveOp, Tx};
use crate::cache::{BATCH_MAX_BYTES, BATCH_MAX_SAVES, Entry, LargeEntry, PendingSave};
use crate::error::{Error, ErrorKind};
use crate::id::CheckpointId;

/// How often (store clock, ms) writes expire entries by their function's maximum age.
const FUNCTION_SWEEP_EVERY_MS: u64 = 5_000;

/// How a write transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    Yes,
    /// Commit durably whatever the store's durability.
    Durably,
    /// Commit without waiting for the disk where the store allows it (one process), whatever
    /// the store's durability: for what can be fetched again (a backfill from the remote tier),
    /// which a crash may lose and nothing else. The next durable commit, or the close, makes it
    /// durable.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Relaxed,
}

impl Shared {
    /// The order indexes to maintain in this transaction.
    pub(super) fn indexes_for(&self, txn: &WriteTransaction) -> Result<u8, Error> {
        if self.concurrency == ConcurrencyMode::MultiProcess {
            // Another process may have added one since our last write.
            let info = txn
                .open_table(INFO)
                .map_err(|e| engine_error("cannot open the info table", e))?;
            let mask = info
                .get(INDEXES_KEY)
                .map_err(|e| engine_error("cannot read the info table", e))?
                .and_then(|g| g.value().first().copied())
                .unwrap_or(0);
            self.indexes.store(mask, Ordering::Release);
        }
        Ok(self.indexes.load(Ordering::Acquire))
    }

    /// Refuses `what`, a change to the file, in a read-only store.
    pub(crate) fn writable(&self, what: &str) -> Result<(), Error> {
        match self.access_mode {
            AccessMode::ReadOnly => Err(Error::read_only(what)),
            _ => Ok(()),
        }
    }

    /// Runs `body` in a write transaction that also applies the buffered bookkeeping and the
    /// limits, and commits (unless a dry run).
    pub(crate) fn write<T>(
        &self,
        commit: Commit,
        body: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.writable("cannot write")?;
        let (out, reports) = self
            .engine
            .guard("cannot write", || self.write_inner(commit, body))?;
        // Committed, and out of the writer and the engine's guard: a subscriber or a recorder
        // may call the store, and its panic is not taken for the engine's.
        reports.emit_or_hold();
        Ok(out)
    }

    /// The write, committed, and what it reports once out of the writer (`Reports`).
    fn write_inner<T>(
        &self,
        commit: Commit,
        body: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<(T, Reports), Error> {
        let _writer = self.writer.lock();
        // Held until the commit: a reopen, a verify or a compaction waits for it.
        let db = self.engine.db()?;
        let mut txn = db
            .writable("cannot write")?
            .begin_write()
            .map_err(|e| engine_error("cannot begin a write", e))?;
        let relaxed = match commit {
            Commit::Yes => matches!(self.durability, Durability::Relaxed { .. }),
            Commit::Relaxed => self.concurrency != ConcurrencyMode::MultiProcess,
            Commit::Durably => false,
        };
        if relaxed {
            txn.set_durability(redb::Durability::None).map_err(|e| {
                Error::with_source(ErrorKind::Unsupported, "cannot relax durability", e)
            })?;
        }
        let indexes = self.indexes_for(&txn)?;
        let limits = *self.limits.read();
        let (function_ages, aged) = self.function_ages_due();
        // Taken after begin_write, which serializes writers: no two plans overlap.
        let plan = self.registry.lock().plan();
        let remote = self.remote_unflushed();
        let mut accesses = Vec::new();
        self.access.drain_into(&mut accesses);
        let out = {
            let mut tx = Tx::open(&txn, self.now_ms(), indexes, self.chunk_len)?;
            let need = limits.needed_indexes() | if aged { CREATED } else { 0 };
            if need & !indexes != 0 {
                let now = tx.ensure_indexes(need)?;
                self.indexes.store(now, Ordering::Release);
            }
            tx.apply_accesses(&accesses)?;
            for (key, calls) in &plan.calls {
                tx.add_calls(*key, calls);
            }
            for f in &plan.identities {
                tx.set_identity(f);
            }
            if let Some((_, delta)) = &remote {
                tx.add_remote_counts(delta)?;
            }
            tx.expire_functions_too(function_ages);
            let out = body(&mut tx)?;
            tx.enforce(&limits)?;
            (out, tx.finish()?)
        };
        let (out, (changed, reports)) = out;
        let committed = txn.commit();
        // Before returning: a hit that follows this write must not read an older snapshot, or
        // a replaced record from the hot tier.
        self.engine.committed(&changed);
        committed.map_err(|e| engine_error("cannot commit", e))?;
        drop(db);
        self.registry.lock().confirm(plan);
        if let Some((now, _)) = remote {
            self.remote_flushed(now);
        }
        match self.durability {
            Durability::Relaxed { within } if relaxed => {
                self.flusher.sync_by(Instant::now() + within);
            }
            // A relaxed commit in a durable store (a backfill): durable with the next durable
            // commit (`sync` makes one) or the close.
            _ if relaxed => self.unsynced.store(true, Ordering::Release),
            _ => {
                self.unsynced.store(false, Ordering::Release);
                self.flusher.synced();
            }
        }
        Ok((out, reports))
    }

    /// The per-function maximum ages to apply in this write (none until the next sweep is
    /// due: it walks every entry older than the smallest age), and whether there are any at all
    /// (the creation-order index must then be kept).
    fn function_ages_due(&self) -> (Vec<(u64, u64)>, bool) {
        let ages = self.function_ages.lock();
        if ages.is_empty() {
            return (Vec::new(), false);
        }
        let now = self.now_ms();
        if now < self.next_function_sweep_ms.load(Ordering::Relaxed) {
            return (Vec::new(), true);
        }
        self.next_function_sweep_ms.store(
            now.saturating_add(FUNCTION_SWEEP_EVERY_MS),
            Ordering::Relaxed,
        );
        (ages.clone(), true)
    }

    pub(crate) fn has_bookkeeping(&self) -> bool {
        // A read-only store keeps its counts in memory (`stats` adds them) and writes none.
        self.access_mode == AccessMode::ReadWrite
            && (self.access.len() > 0
                || !self.registry.lock().plan().is_empty()
                || self.remote_unflushed().is_some())
    }

    /// Writes buffered bookkeeping, if any, with the store's durability.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        if self.has_bookkeeping() {
            self.write(Commit::Yes, |_| Ok(()))?;
        }
        Ok(())
    }

    /// Writes buffered bookkeeping and makes every earlier commit durable.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        if self.has_bookkeeping()
            || matches!(self.durability, Durability::Relaxed { .. })
            || self.unsynced.load(Ordering::Acquire)
        {
            self.write(Commit::Durably, |_| Ok(()))?;
        }
        Ok(())
    }

    pub(super) fn check_size(&self, len: usize) -> Result<(), Error> {
        match self.limits.read().max_bytes_value() {
            Some(max) if len as u64 > max => Err(too_large(len as u64, max)),
            _ => Ok(()),
        }
    }

    pub(super) fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        self.check_size(entry.bytes().len())?;
        let op = SaveOp::new(id, entry);
        if entry.bytes().len() > GROUP_COMMIT_MAX_BYTES {
            return self.write(Commit::Yes, |tx| tx.put(&op));
        }
        let queued = QueuedSave {
            id: op.id,
            function: entry.function().clone(),
            bytes: entry.bytes().to_vec(),
            compute_nanos: op.compute_nanos,
            value_type: op.value_type,
            created_ms: op.created_ms,
        };
        self.queue.submit(
            queued,
            |batch| self.commit_batch(batch),
            || self.wake_deferred(),
        )
    }

    /// Writes a record fetched from the remote tier into the file (a backfill), as `save`
    /// does, in a commit of its own that does not wait for the disk where the store allows it
    /// ([`Commit::Relaxed`]): the remote keeps the record, so a crash that loses the backfill
    /// costs one fetch, and the call that found it does not wait for an fsync.
    #[cfg(feature = "remote")]
    pub(super) fn save_backfill(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        self.check_size(entry.bytes().len())?;
        let op = SaveOp::new(id, entry);
        self.write(Commit::Relaxed, |tx| tx.put(&op))
    }

    /// Whether a save of `entry` can be queued: a writable file, and a record within the byte
    /// cap. What it refuses is neither saved nor published.
    pub(super) fn accepts(&self, entry: &Entry<'_>) -> Result<(), Error> {
        self.writable("cannot write")?;
        self.check_size(entry.bytes().len())
    }

    /// Queues a save for the group commit and returns without waiting for it: the returned
    /// save completes after the commit. The background thread leads the commit when no saver
    /// is leading one (if it is not running, this thread does, as `save` would).
    pub(super) fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> PendingSave {
        if let Err(e) = self.accepts(entry) {
            return PendingSave::ready(Err(e));
        }
        let op = SaveOp::new(id, entry);
        let queued = QueuedSave {
            id: op.id,
            function: entry.function().clone(),
            bytes: entry.bytes().to_vec(),
            compute_nanos: op.compute_nanos,
            value_type: op.value_type,
            created_ms: op.created_ms,
        };
        let (done, pending) = PendingSave::channel();
        if self.queue.submit_deferred(queued, done) {
            self.wake_deferred();
        }
        pending
    }

    /// Has the background thread lead the commit of queued deferred saves, or leads it here if
    /// the thread is not running.
    fn wake_deferred(&self) {
        if !self.flusher.request_commit() {
            self.lead_deferred();
        }
    }

    /// Commits queued saves while nobody else is leading (the background thread's part of
    /// deferred saves).
    pub(super) fn lead_deferred(&self) {
        self.queue.lead_pending(|batch| self.commit_batch(batch));
    }

    /// Saves `entries` in order, in as few transactions as the batch bounds allow (see
    /// `cache::BATCH_MAX_SAVES`); each commits whole or not at all.
    pub(super) fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
        // Refuse an entry that cannot fit before writing any: a bulk save stops at its first
        // failure, and this one is known in advance.
        for (_, entry) in entries {
            self.check_size(entry.bytes().len())?;
        }
        let mut rest = entries;
        while !rest.is_empty() {
            let (mut n, mut bytes) = (0, 0);
            while n < rest.len() && n < BATCH_MAX_SAVES {
                let len = rest[n].1.bytes().len();
                if n > 0 && bytes + len > BATCH_MAX_BYTES {
                    break;
                }
                bytes += len;
                n += 1;
            }
            let (batch, later) = rest.split_at(n);
            // In id order: consecutive inserts then land in the same B-tree leaves, which stay
            // in the CPU's cache and are modified in place. A stable sort keeps duplicates in
            // their order, so the later one still wins.
            let mut order: Vec<&(CheckpointId, Entry<'_>)> = batch.iter().collect();
            order.sort_by_key(|(id, _)| *id.as_bytes());
            self.write(Commit::Yes, |tx| {
                for (id, entry) in order {
                    tx.put(&SaveOp::new(id, entry))?;
                }
                Ok(())
            })?;
            rest = later;
        }
        Ok(())
    }

    /// Saves a large record, encoded as it is written into chunks, in its own transaction.
    pub(super) fn save_large(
        &self,
        id: &CheckpointId,
        entry: &LargeEntry<'_>,
        commit: Commit,
    ) -> Result<(), Error> {
        let compute_nanos = u64::try_from(entry.compute_time().as_nanos()).unwrap_or(u64::MAX);
        let cap = self.limits.read().max_bytes_value();
        let mut caller_panic = None;
        let saved = self.write(commit, |tx| {
            let len = tx.put_large(*id.as_bytes(), entry, compute_nanos, &mut caller_panic)?;
            // Its length is known only now: over the cap, the transaction is abandoned.
            match cap {
                Some(max) if len > max => Err(too_large(len, max)),
                _ => Ok(()),
            }
        });
        // The transaction is abandoned and the writer free: the caller's panic goes on.
        if let Some(panic) = caller_panic {
            std::panic::resume_unwind(panic);
        }
        saved
    }

    /// Commits a batch in one transaction; if that fails, each save alone, so one bad save does
    /// not fail the others.
    pub(super) fn commit_batch(
        &self,
        batch: &[(u64, QueuedSave)],
    ) -> Vec<(u64, Result<(), Error>)> {
        let together = self.write(Commit::Yes, |tx| {
            for (_, save) in batch {
                tx.put(&save.op())?;
            }
            Ok(())
        });
        match together {
            Ok(()) => batch.iter().map(|(t, _)| (*t, Ok(()))).collect(),
            Err(e) if batch.len() == 1 => vec![(batch[0].0, Err(e))],
            Err(_) => batch
                .iter()
                .map(|(t, save)| (*t, self.write(Commit::Yes, |tx| tx.put(&save.op()))))
                .collect(),
        }
    }
}

fn too_large(len: u64, max: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("a value of {len} bytes cannot fit the store's byte cap of {max}"),
    )
}
