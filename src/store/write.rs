//! The write path: one write transaction applies saves, removals and the buffered bookkeeping
//! (accesses and call counts) together; concurrent saves share transactions (group commit).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use redb::{MultimapTable, ReadableMultimapTable, ReadableTable, Table, WriteTransaction};

use super::access::Access;
use super::schema::{BY_FUNCTION, ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, RESULTS};
use crate::error::{Error, ErrorKind};
use crate::id::Function;
use crate::stats::{CallStats, Counters};

/// Saves larger than this skip the queue and write their own transaction from the caller's
/// thread, so a big value is never copied.
pub(crate) const GROUP_COMMIT_MAX_BYTES: usize = 256 * 1024;
/// The most saves one group-commit transaction takes.
const MAX_BATCH: usize = 1024;

/// Converts an engine error into ours, keeping the engine's error as the source.
pub(crate) fn engine_error(context: &str, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Corrupted(msg) => {
            Error::corrupted(format!("{context}: store corrupted: {msg}"))
        }
        redb::Error::DatabaseClosed => {
            Error::new(ErrorKind::Closed, format!("{context}: store closed"))
        }
        other => Error::storage(context.to_string(), other),
    }
}

/// One save, its bytes borrowed.
#[derive(Clone, Copy)]
pub(crate) struct SaveOp<'a> {
    pub id: [u8; 16],
    pub function: &'a Function,
    pub bytes: &'a [u8],
    pub compute_nanos: u64,
}

/// One save waiting in the group-commit queue, its bytes copied.
pub(crate) struct QueuedSave {
    pub id: [u8; 16],
    pub function: Function,
    pub bytes: Vec<u8>,
    pub compute_nanos: u64,
}

impl QueuedSave {
    pub(crate) fn op(&self) -> SaveOp<'_> {
        SaveOp {
            id: self.id,
            function: &self.function,
            bytes: &self.bytes,
            compute_nanos: self.compute_nanos,
        }
    }
}

/// What a transaction changes in one function's row.
#[derive(Default)]
struct FunctionDelta {
    entries: i64,
    bytes: i64,
    calls: CallStats,
    /// The identity to record as the function's newest (set by saves and registrations).
    identity: Option<Function>,
}

/// The tables of one write transaction, and the function-row changes it accumulates.
pub(crate) struct Tx<'t> {
    results: Table<'t, &'static [u8; 16], &'static [u8]>,
    entries: Table<'t, &'static [u8; 16], &'static [u8; 64]>,
    by_function: MultimapTable<'t, u64, &'static [u8; 16]>,
    functions: Table<'t, u64, &'static [u8]>,
    deltas: HashMap<u64, FunctionDelta>,
    now_ms: u64,
}

impl<'t> Tx<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction, now_ms: u64) -> Result<Tx<'t>, Error> {
        let e = |err: redb::TableError| engine_error("cannot open a table", err);
        Ok(Tx {
            results: txn.open_table(RESULTS).map_err(e)?,
            entries: txn.open_table(ENTRIES).map_err(e)?,
            by_function: txn.open_multimap_table(BY_FUNCTION).map_err(e)?,
            functions: txn.open_table(FUNCTIONS).map_err(e)?,
            deltas: HashMap::new(),
            now_ms,
        })
    }

    fn delta(&mut self, fn_key: u64) -> &mut FunctionDelta {
        self.deltas.entry(fn_key).or_default()
    }

    pub(crate) fn meta(&self, id: &[u8; 16]) -> Result<Option<EntryMeta>, Error> {
        let row = self
            .entries
            .get(id)
            .map_err(|e| engine_error("cannot read entry metadata", e))?;
        Ok(row.and_then(|g| EntryMeta::decode(g.value())))
    }

    /// Stores a result and its metadata, replacing any earlier entry under the id.
    pub(crate) fn put(&mut self, op: &SaveOp<'_>) -> Result<(), Error> {
        self.delete(&op.id)?;
        let fn_key = op.function.key();
        let meta = EntryMeta {
            fn_key,
            code_version: op.function.code_version(),
            created_ms: self.now_ms,
            last_access_ms: self.now_ms,
            hits: 0,
            size: op.bytes.len() as u64,
            compute_nanos: op.compute_nanos,
        };
        let e = |err: redb::StorageError| engine_error("cannot save a result", err);
        self.results.insert(&op.id, op.bytes).map_err(e)?;
        self.entries.insert(&op.id, &meta.encode()).map_err(e)?;
        self.by_function.insert(fn_key, &op.id).map_err(e)?;
        let delta = self.delta(fn_key);
        delta.entries += 1;
        delta.bytes += op.bytes.len() as i64;
        if delta.identity.as_ref() != Some(op.function) {
            delta.identity = Some(op.function.clone());
        }
        Ok(())
    }

    /// Removes an entry (result, metadata, index row); returns its metadata if there was one.
    pub(crate) fn delete(&mut self, id: &[u8; 16]) -> Result<Option<EntryMeta>, Error> {
        let e = |err: redb::StorageError| engine_error("cannot remove an entry", err);
        let old = self
            .entries
            .remove(id)
            .map_err(e)?
            .map(|g| EntryMeta::decode(g.value()));
        let had_result = self.results.remove(id).map_err(e)?.is_some();
        match old {
            Some(Some(meta)) => {
                self.by_function.remove(meta.fn_key, id).map_err(e)?;
                let delta = self.delta(meta.fn_key);
                delta.entries -= 1;
                delta.bytes -= meta.size as i64;
                Ok(Some(meta))
            }
            Some(None) => Err(Error::corrupted(
                "an entry's metadata row is not one ckpt wrote",
            )),
            None if had_result => Err(Error::corrupted("a result has no metadata row")),
            None => Ok(None),
        }
    }

    /// The ids of a function's entries.
    pub(crate) fn ids_of(&self, fn_key: u64) -> Result<Vec<[u8; 16]>, Error> {
        let e = |err: redb::StorageError| engine_error("cannot list a function's entries", err);
        let mut ids = Vec::new();
        for id in self.by_function.get(fn_key).map_err(e)? {
            ids.push(*id.map_err(e)?.value());
        }
        Ok(ids)
    }

    /// Every function key with a row.
    pub(crate) fn function_keys(&self) -> Result<Vec<(u64, u64)>, Error> {
        let e = |err: redb::StorageError| engine_error("cannot list functions", err);
        let mut out = Vec::new();
        for row in self.functions.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            let code_version = FunctionRecord::decode(v.value()).map_or(0, |r| r.code_version);
            out.push((k.value(), code_version));
        }
        Ok(out)
    }

    /// Applies buffered hits to the entries they touched.
    pub(crate) fn apply_accesses(&mut self, accesses: &[Access]) -> Result<(), Error> {
        let mut by_id: HashMap<[u8; 16], (u64, u64)> = HashMap::new();
        for a in accesses {
            let slot = by_id.entry(a.id).or_default();
            slot.0 += 1;
            slot.1 = slot.1.max(a.at_ms);
        }
        for (id, (hits, last)) in by_id {
            if let Some(mut meta) = self.meta(&id)? {
                meta.hits = meta.hits.saturating_add(hits);
                meta.last_access_ms = meta.last_access_ms.max(last);
                self.entries
                    .insert(&id, &meta.encode())
                    .map_err(|e| engine_error("cannot record accesses", e))?;
            }
        }
        Ok(())
    }

    pub(crate) fn add_calls(&mut self, fn_key: u64, calls: &CallStats) {
        let delta = self.delta(fn_key);
        delta.calls = delta.calls.plus(calls);
    }

    pub(crate) fn set_identity(&mut self, function: &Function) {
        self.delta(function.key()).identity = Some(function.clone());
    }

    /// Writes the accumulated function-row changes.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        let e = |err: redb::StorageError| engine_error("cannot update function statistics", err);
        for (key, delta) in std::mem::take(&mut self.deltas) {
            let existing = self
                .functions
                .get(key)
                .map_err(e)?
                .map(|g| g.value().to_vec());
            let mut record = match existing {
                Some(bytes) => FunctionRecord::decode(&bytes)
                    .ok_or_else(|| Error::corrupted("a function row is not one ckpt wrote"))?,
                None => FunctionRecord::default(),
            };
            if let Some(f) = &delta.identity {
                record.module = f.module().to_string();
                record.name = f.name().to_string();
                record.code_version = f.code_version();
                record.code_hash = f.code_hash();
                record.version = f.version().map(str::to_string);
            }
            record.entries = record.entries.saturating_add_signed(delta.entries);
            record.bytes = record.bytes.saturating_add_signed(delta.bytes);
            record.calls = record.calls.plus(&delta.calls);
            self.functions
                .insert(key, record.encode().as_slice())
                .map_err(e)?;
        }
        Ok(())
    }
}

/// Functions registered with the store, and the counts of theirs already written.
#[derive(Default)]
pub(crate) struct Registry {
    functions: HashMap<u64, Registered>,
}

struct Registered {
    function: Function,
    identity_dirty: bool,
    trackers: Vec<Tracked>,
}

struct Tracked {
    counters: Arc<Counters>,
    flushed: CallStats,
}

/// What one transaction flushes from the registry; confirmed once it commits.
pub(crate) struct FlushPlan {
    pub calls: Vec<(u64, CallStats)>,
    pub identities: Vec<Function>,
    confirm: Vec<(u64, Arc<Counters>, CallStats)>,
}

impl FlushPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.identities.is_empty()
    }
}

impl Registry {
    pub(crate) fn register(&mut self, function: &Function, counters: &Arc<Counters>) {
        let reg = self
            .functions
            .entry(function.key())
            .or_insert_with(|| Registered {
                function: function.clone(),
                identity_dirty: true,
                trackers: Vec::new(),
            });
        if reg.function != *function {
            reg.function = function.clone();
            reg.identity_dirty = true;
        }
        if !reg
            .trackers
            .iter()
            .any(|t| Arc::ptr_eq(&t.counters, counters))
        {
            reg.trackers.push(Tracked {
                counters: Arc::clone(counters),
                flushed: CallStats::default(),
            });
        }
    }

    /// The counts not yet written, per function.
    pub(crate) fn unflushed(&self) -> HashMap<u64, CallStats> {
        let mut out: HashMap<u64, CallStats> = HashMap::new();
        for (key, reg) in &self.functions {
            for t in &reg.trackers {
                let d = t.counters.snapshot().minus(&t.flushed);
                if !d.is_zero() {
                    let slot = out.entry(*key).or_default();
                    *slot = slot.plus(&d);
                }
            }
        }
        out
    }

    pub(crate) fn plan(&self) -> FlushPlan {
        let mut plan = FlushPlan {
            calls: Vec::new(),
            identities: Vec::new(),
            confirm: Vec::new(),
        };
        for (key, reg) in &self.functions {
            if reg.identity_dirty {
                plan.identities.push(reg.function.clone());
            }
            let mut sum = CallStats::default();
            for t in &reg.trackers {
                let now = t.counters.snapshot();
                let d = now.minus(&t.flushed);
                if !d.is_zero() {
                    sum = sum.plus(&d);
                    plan.confirm.push((*key, Arc::clone(&t.counters), now));
                }
            }
            if !sum.is_zero() {
                plan.calls.push((*key, sum));
            }
        }
        plan
    }

    /// Marks a committed plan's counts as written, and forgets decorators that are gone.
    pub(crate) fn confirm(&mut self, plan: FlushPlan) {
        for f in &plan.identities {
            if let Some(reg) = self.functions.get_mut(&f.key())
                && reg.function == *f
            {
                reg.identity_dirty = false;
            }
        }
        for (key, counters, snapshot) in plan.confirm {
            if let Some(t) = self.functions.get_mut(&key).and_then(|reg| {
                reg.trackers
                    .iter_mut()
                    .find(|t| Arc::ptr_eq(&t.counters, &counters))
            }) {
                t.flushed = snapshot;
            }
        }
        for reg in self.functions.values_mut() {
            reg.trackers.retain(|t| {
                Arc::strong_count(&t.counters) > 1 || t.counters.snapshot() != t.flushed
            });
        }
    }
}

/// Group commit: savers queue up; whoever finds no commit running becomes the leader, commits
/// everything queued in one transaction, and wakes the others with their results.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    done: Condvar,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<(u64, QueuedSave)>,
    leading: bool,
    next_ticket: u64,
    results: HashMap<u64, Result<(), Error>>,
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
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if !state.leading {
                state.leading = true;
                let take = state.pending.len().min(MAX_BATCH);
                let batch: Vec<_> = state.pending.drain(..take).collect();
                let results = parking_lot::MutexGuard::unlocked(&mut state, || {
                    catch_unwind(AssertUnwindSafe(|| commit(&batch))).unwrap_or_else(|_| {
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
                    })
                });
                state.results.extend(results);
                state.leading = false;
                self.done.notify_all();
                continue;
            }
            self.done.wait(&mut state);
        }
    }
}
