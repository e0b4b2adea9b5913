//! The write path: one write transaction applies saves, removals and the buffered bookkeeping
//! (accesses and call counts) together; concurrent saves share transactions (group commit).

use std::collections::{HashMap, HashSet};

use redb::{ReadableTable, Table, WriteTransaction};

use super::access::Access;
use super::chunks::{ChunkTable, ChunkWriter, Written, claims_chunks, remove_chunks, write_chunks};
use super::engine_error::{engine_error, storage};
use super::schema::indexes::{ACCESS, CREATED, HITS};
use super::schema::{
    CHUNKS, ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, INDEXES_KEY, INFO, ORDER_ACCESS,
    ORDER_CREATED, ORDER_HITS, REMOTE_KEY, RESULTS, decode_remote, encode_remote, id_of_key,
};
use crate::cache::{Entry, LargeEntry};
use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function};
use crate::stats::{CallStats, EvictionStats, RemoteStats};

// Import of archived entries (`Tx::put_restored`), kept apart so the write path stays readable.
mod restore;
// Eviction and expiry inside a transaction (`Tx::enforce`): which entries go, by policy.
mod evict;

pub(crate) use self::evict::Victim;

/// Saves larger than this skip the queue and write their own transaction from the caller's
/// thread, so a big value is never copied.
pub(crate) const GROUP_COMMIT_MAX_BYTES: usize = 256 * 1024;

/// One save, its bytes borrowed.
#[derive(Clone, Copy)]
pub(crate) struct SaveOp<'a> {
    pub id: [u8; 16],
    pub function: &'a Function,
    pub bytes: &'a [u8],
    pub compute_nanos: u64,
    /// The value's Rust type name, for display (see `Entry::value_type`).
    pub value_type: Option<&'static str>,
    /// When it was first saved, if earlier than now (see `Entry::created_ms`).
    pub created_ms: Option<u64>,
}

impl<'a> SaveOp<'a> {
    pub(crate) fn new(id: &CheckpointId, entry: &Entry<'a>) -> SaveOp<'a> {
        SaveOp {
            id: *id.as_bytes(),
            function: entry.function(),
            bytes: entry.bytes(),
            compute_nanos: u64::try_from(entry.compute_time().as_nanos()).unwrap_or(u64::MAX),
            value_type: entry.value_type(),
            created_ms: entry.created_ms,
        }
    }
}

/// One save waiting in the group-commit queue, its bytes copied.
pub(crate) struct QueuedSave {
    pub id: [u8; 16],
    pub function: Function,
    pub bytes: Vec<u8>,
    pub compute_nanos: u64,
    pub value_type: Option<&'static str>,
    pub created_ms: Option<u64>,
}

impl QueuedSave {
    pub(crate) fn op(&self) -> SaveOp<'_> {
        SaveOp {
            id: self.id,
            function: &self.function,
            bytes: &self.bytes,
            compute_nanos: self.compute_nanos,
            value_type: self.value_type,
            created_ms: self.created_ms,
        }
    }
}

/// What a transaction changes in one function's row.
#[derive(Default)]
struct FunctionDelta {
    entries: i64,
    bytes: i64,
    calls: CallStats,
    evictions: EvictionStats,
    /// The identity to record as the function's newest (set by saves and registrations).
    identity: Option<Function>,
    /// The value type a save of `identity`'s code version gave, for display.
    value_type: Option<&'static str>,
}

type OrderTable<'t, const N: usize> = Table<'t, &'static [u8; N], ()>;

/// Order-index keys with the ids they end in.
type KeyedIds = Vec<(Vec<u8>, [u8; 16])>;

/// The tables of one write transaction, and the function-row changes it accumulates.
pub(crate) struct Tx<'t> {
    txn: &'t WriteTransaction,
    results: Table<'t, &'static [u8; 16], &'static [u8]>,
    entries: Table<'t, &'static [u8; 16], &'static [u8; 64]>,
    functions: Table<'t, u64, &'static [u8]>,
    /// Opened when a large record is first written or replaced.
    chunks: Option<ChunkTable<'t>>,
    /// Records longer than this are stored in chunks.
    chunk_len: u32,
    by_created: Option<OrderTable<'t, 24>>,
    by_access: Option<OrderTable<'t, 24>>,
    by_hits: Option<OrderTable<'t, 32>>,
    deltas: HashMap<u64, FunctionDelta>,
    /// Ids saved by this transaction: evicted only after every other entry.
    saved_now: HashSet<[u8; 16]>,
    /// Ids whose record this transaction saved or removed.
    changed: Vec<[u8; 16]>,
    now_ms: u64,
    /// Per-function maximum ages `(function key, ms)` the next `enforce` applies (then forgets).
    function_ages: Vec<(u64, u64)>,
    /// What to report once committed.
    reports: Reports,
}

/// What a write reports once it has committed and let go of the store's writer, not before:
/// tracing subscribers and metrics recorders are the app's code, which may call the store.
#[derive(Default)]
pub(crate) struct Reports {
    /// Entries evicted or expired by the limits: size, count, age, idle.
    evicted: [usize; 4],
    /// Each function's evictions (`module::name`): size, count, age, idle.
    #[cfg(feature = "metrics")]
    evictions: Vec<(String, [u64; 4])>,
}

thread_local! {
    /// Set while this thread leads a group commit: its writes' reports wait here until the
    /// batch's results are handed out (a subscriber that saved would wait for its own batch).
    static HELD: std::cell::RefCell<Option<Vec<Reports>>> = const { std::cell::RefCell::new(None) };
}

impl Reports {
    /// Emits now, or, on a thread leading a group commit, once it has handed out the results
    /// (see [`held`](Self::held)).
    pub(crate) fn emit_or_hold(self) {
        let now = HELD.with(|held| match held.borrow_mut().as_mut() {
            Some(held) => {
                held.push(self);
                None
            }
            None => Some(self),
        });
        if let Some(reports) = now {
            reports.emit();
        }
    }

    /// Runs `f` (which must not panic) with the reports of this thread's writes held back, and
    /// returns them with its output, to be emitted later.
    pub(crate) fn held<T>(f: impl FnOnce() -> T) -> (T, Vec<Reports>) {
        let outer = HELD.with(|held| held.borrow_mut().replace(Vec::new()));
        let out = f();
        let held = HELD.with(|held| std::mem::replace(&mut *held.borrow_mut(), outer));
        (out, held.unwrap_or_default())
    }

    pub(crate) fn emit(self) {
        let [size, count, age, idle] = self.evicted;
        if size + count + age + idle > 0 {
            tracing::debug!(
                target: "ckpt",
                evicted = size + count + age + idle,
                size,
                count,
                age,
                idle,
                "entries evicted or expired by the store's limits"
            );
        }
        #[cfg(feature = "metrics")]
        for (function, by_cause) in self.evictions {
            for (cause, n) in ["size", "count", "age", "idle"].into_iter().zip(by_cause) {
                if n > 0 {
                    metrics::counter!("ckpt_evictions_total", "function" => function.clone(), "cause" => cause)
                        .increment(n);
                }
            }
        }
    }
}

fn table_error(e: redb::TableError) -> Error {
    engine_error("cannot open a table", e)
}

impl<'t> Tx<'t> {
    /// Opens the tables, and the order indexes in `indexes` (see `schema::indexes`).
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        now_ms: u64,
        indexes: u8,
        chunk_len: u32,
    ) -> Result<Tx<'t>, Error> {
        Ok(Tx {
            txn,
            results: txn.open_table(RESULTS).map_err(table_error)?,
            entries: txn.open_table(ENTRIES).map_err(table_error)?,
            functions: txn.open_table(FUNCTIONS).map_err(table_error)?,
            chunks: None,
            chunk_len,
            by_created: (indexes & CREATED != 0)
                .then(|| txn.open_table(ORDER_CREATED))
                .transpose()
                .map_err(table_error)?,
            by_access: (indexes & ACCESS != 0)
                .then(|| txn.open_table(ORDER_ACCESS))
                .transpose()
                .map_err(table_error)?,
            by_hits: (indexes & HITS != 0)
                .then(|| txn.open_table(ORDER_HITS))
                .transpose()
                .map_err(table_error)?,
            deltas: HashMap::new(),
            saved_now: HashSet::new(),
            changed: Vec::new(),
            now_ms,
            function_ages: Vec::new(),
            reports: Reports::default(),
        })
    }

    /// Makes the next [`enforce`](Tx::enforce) also expire each function's entries older than its
    /// maximum age (`(function key, ms)` pairs; the creation-order index must be maintained).
    pub(crate) fn expire_functions_too(&mut self, ages: Vec<(u64, u64)>) {
        self.function_ages = ages;
    }

    /// The order indexes this transaction maintains.
    pub(crate) fn indexes(&self) -> u8 {
        (if self.by_created.is_some() {
            CREATED
        } else {
            0
        }) | (if self.by_access.is_some() { ACCESS } else { 0 })
            | (if self.by_hits.is_some() { HITS } else { 0 })
    }

    /// Builds the indexes in `need` that are missing (one scan of the entries), and records the
    /// new set in the file. Returns the set now maintained.
    pub(crate) fn ensure_indexes(&mut self, need: u8) -> Result<u8, Error> {
        let missing = need & !self.indexes();
        if missing == 0 {
            return Ok(self.indexes());
        }
        // A table left from an earlier configuration is stale: start afresh.
        if missing & CREATED != 0 {
            self.txn.delete_table(ORDER_CREATED).map_err(table_error)?;
        }
        if missing & ACCESS != 0 {
            self.txn.delete_table(ORDER_ACCESS).map_err(table_error)?;
        }
        if missing & HITS != 0 {
            self.txn.delete_table(ORDER_HITS).map_err(table_error)?;
        }
        let mut created = (missing & CREATED != 0)
            .then(|| self.txn.open_table(ORDER_CREATED))
            .transpose()
            .map_err(table_error)?;
        let mut access = (missing & ACCESS != 0)
            .then(|| self.txn.open_table(ORDER_ACCESS))
            .transpose()
            .map_err(table_error)?;
        let mut hits = (missing & HITS != 0)
            .then(|| self.txn.open_table(ORDER_HITS))
            .transpose()
            .map_err(table_error)?;
        let e = storage("cannot build an order index");
        for row in self.entries.iter().map_err(&e)? {
            let (k, v) = row.map_err(&e)?;
            let id = *k.value();
            let meta = EntryMeta::decode(v.value())
                .ok_or_else(|| Error::corrupted("an entry's metadata row is not one ckpt wrote"))?;
            if let Some(t) = created.as_mut() {
                t.insert(&meta.created_key(&id), ()).map_err(&e)?;
            }
            if let Some(t) = access.as_mut() {
                t.insert(&meta.access_key(&id), ()).map_err(&e)?;
            }
            if let Some(t) = hits.as_mut() {
                t.insert(&meta.hits_key(&id), ()).map_err(&e)?;
            }
        }
        self.by_created = self.by_created.take().or(created);
        self.by_access = self.by_access.take().or(access);
        self.by_hits = self.by_hits.take().or(hits);
        let now = self.indexes();
        let mut info = self.txn.open_table(INFO).map_err(table_error)?;
        info.insert(INDEXES_KEY, &[now][..])
            .map_err(storage("cannot record the order indexes"))?;
        Ok(now)
    }

    /// Adds what the remote tier counted since the last write to the file's record of it.
    pub(crate) fn add_remote_counts(&mut self, delta: &RemoteStats) -> Result<(), Error> {
        let mut info = self.txn.open_table(INFO).map_err(table_error)?;
        let recorded = info
            .get(REMOTE_KEY)
            .map_err(storage("cannot read the remote counts"))?
            .and_then(|v| decode_remote(v.value()))
            .unwrap_or_default();
        info.insert(REMOTE_KEY, &encode_remote(&recorded.plus(delta))[..])
            .map_err(storage("cannot record the remote counts"))?;
        Ok(())
    }

    fn delta(&mut self, fn_key: u64) -> &mut FunctionDelta {
        self.deltas.entry(fn_key).or_default()
    }

    pub(crate) fn meta(&self, id: &[u8; 16]) -> Result<Option<EntryMeta>, Error> {
        let row = self
            .entries
            .get(id)
            .map_err(storage("cannot read entry metadata"))?;
        Ok(row.and_then(|g| EntryMeta::decode(g.value())))
    }

    fn index(&mut self, id: &[u8; 16], meta: &EntryMeta) -> Result<(), Error> {
        let e = storage("cannot update an order index");
        if let Some(t) = self.by_created.as_mut() {
            t.insert(&meta.created_key(id), ()).map_err(&e)?;
        }
        if let Some(t) = self.by_access.as_mut() {
            t.insert(&meta.access_key(id), ()).map_err(&e)?;
        }
        if let Some(t) = self.by_hits.as_mut() {
            t.insert(&meta.hits_key(id), ()).map_err(&e)?;
        }
        Ok(())
    }

    fn unindex(&mut self, id: &[u8; 16], meta: &EntryMeta) -> Result<(), Error> {
        let e = storage("cannot update an order index");
        if let Some(t) = self.by_created.as_mut() {
            t.remove(&meta.created_key(id)).map_err(&e)?;
        }
        if let Some(t) = self.by_access.as_mut() {
            t.remove(&meta.access_key(id)).map_err(&e)?;
        }
        if let Some(t) = self.by_hits.as_mut() {
            t.remove(&meta.hits_key(id)).map_err(&e)?;
        }
        Ok(())
    }

    fn chunks(&mut self) -> Result<&mut ChunkTable<'t>, Error> {
        let table = match self.chunks.take() {
            Some(t) => t,
            None => self.txn.open_table(CHUNKS).map_err(table_error)?,
        };
        Ok(self.chunks.insert(table))
    }

    /// Stores a result and its metadata, replacing any earlier entry under the id: two B-tree
    /// inserts, whose displaced values say what was replaced (and, for a record longer than a
    /// chunk, its chunks).
    pub(crate) fn put(&mut self, op: &SaveOp<'_>) -> Result<(), Error> {
        let len = op.bytes.len() as u64;
        if op.bytes.len() > self.chunk_len as usize {
            let chunk_len = self.chunk_len;
            let manifest = write_chunks(self.chunks()?, &op.id, op.bytes, chunk_len)?;
            return self.place(op, &manifest.encode(), len, manifest.count);
        }
        self.place(op, op.bytes, len, 0)
    }

    /// Stores a large result encoded as it is written, in chunks (or whole, if it turns out no
    /// longer than a chunk); returns the record's length.
    ///
    /// The encoder runs the value's `Serialize`, the caller's code: if it panics, the panic is
    /// put in `caller_panic`, for the caller to resume once out of the engine's guard (which
    /// would take it for the engine's, and the file for damaged), and this fails.
    pub(crate) fn put_large(
        &mut self,
        id: [u8; 16],
        entry: &LargeEntry<'_>,
        compute_nanos: u64,
        caller_panic: &mut Option<Box<dyn std::any::Any + Send>>,
    ) -> Result<u64, Error> {
        let chunk_len = self.chunk_len;
        let mut writer = ChunkWriter::new(self.chunks()?, id, chunk_len);
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entry.write_unsealed(&mut writer)
        }));
        let checksum = match encoded {
            Ok(checksum) => checksum?,
            Err(panic) if writer.in_engine() => std::panic::resume_unwind(panic),
            Err(panic) => {
                *caller_panic = Some(panic);
                return Err(Error::new(
                    ErrorKind::Encode,
                    "the value's Serialize implementation panicked",
                ));
            }
        };
        let op = SaveOp {
            id,
            function: entry.function(),
            bytes: &[],
            compute_nanos,
            value_type: entry.value_type(),
            created_ms: entry.created_ms,
        };
        match writer.finish(checksum)? {
            Written::Whole(record) => {
                let len = record.len() as u64;
                self.place(&op, &record, len, 0)?;
                Ok(len)
            }
            Written::Chunks(manifest) => {
                self.place(&op, &manifest.encode(), manifest.len, manifest.count)?;
                Ok(manifest.len)
            }
        }
    }

    /// Puts `row` (a record, or the manifest of one in `chunks` chunks, already written) in the
    /// results table, with the metadata of a record of `size` bytes.
    fn place(&mut self, op: &SaveOp<'_>, row: &[u8], size: u64, chunks: u32) -> Result<(), Error> {
        let fn_key = op.function.key();
        let meta = EntryMeta {
            fn_key,
            code_version: op.function.code_version(),
            // Never in the future: a remote object's time comes from another clock.
            created_ms: op.created_ms.map_or(self.now_ms, |t| t.min(self.now_ms)),
            last_access_ms: self.now_ms,
            hits: 0,
            size,
            compute_nanos: op.compute_nanos,
        };
        let e = storage("cannot save a result");
        let old = self
            .entries
            .insert(&op.id, &meta.encode())
            .map_err(&e)?
            .map(|g| EntryMeta::decode(g.value()));
        let (had_result, had_chunks) = match self.results.insert(&op.id, row).map_err(&e)? {
            Some(g) => (true, claims_chunks(g.value())),
            None => (false, false),
        };
        if had_chunks || chunks > 0 {
            // The chunks of the record replaced, past those just written.
            remove_chunks(self.chunks()?, &op.id, chunks)?;
        }
        match old {
            Some(Some(old)) => {
                self.unindex(&op.id, &old)?;
                let delta = self.delta(old.fn_key);
                delta.entries -= 1;
                delta.bytes -= old.size as i64;
            }
            Some(None) => {
                return Err(Error::corrupted(
                    "an entry's metadata row is not one ckpt wrote",
                ));
            }
            None if had_result => return Err(Error::corrupted("a result has no metadata row")),
            None => {}
        }
        self.index(&op.id, &meta)?;
        self.saved_now.insert(op.id);
        self.changed.push(op.id);
        let delta = self.delta(fn_key);
        delta.entries += 1;
        delta.bytes += size as i64;
        if delta
            .identity
            .as_ref()
            .is_none_or(|f| f.digest() != op.function.digest())
        {
            delta.identity = Some(op.function.clone());
        }
        if op.value_type.is_some() {
            delta.value_type = op.value_type;
        }
        Ok(())
    }

    /// Removes an entry (result, metadata, index rows); returns its metadata if there was one.
    pub(crate) fn delete(&mut self, id: &[u8; 16]) -> Result<Option<EntryMeta>, Error> {
        let e = storage("cannot remove an entry");
        let old = self
            .entries
            .remove(id)
            .map_err(&e)?
            .map(|g| EntryMeta::decode(g.value()));
        let (had_result, had_chunks) = match self.results.remove(id).map_err(&e)? {
            Some(g) => (true, claims_chunks(g.value())),
            None => (false, false),
        };
        if had_chunks {
            remove_chunks(self.chunks()?, id, 0)?;
        }
        if had_result {
            self.changed.push(*id);
        }
        match old {
            Some(Some(meta)) => {
                self.unindex(id, &meta)?;
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

    /// The ids and metadata of the entries `keep` accepts (one scan of the metadata table: a
    /// per-function index would cost every save a third B-tree, for the sake of rare
    /// administrative calls).
    pub(crate) fn select(
        &self,
        mut keep: impl FnMut(&EntryMeta) -> bool,
    ) -> Result<Vec<([u8; 16], EntryMeta)>, Error> {
        let e = storage("cannot scan entries");
        let mut out = Vec::new();
        for row in self.entries.iter().map_err(&e)? {
            let (k, v) = row.map_err(&e)?;
            let meta = EntryMeta::decode(v.value())
                .ok_or_else(|| Error::corrupted("an entry's metadata row is not one ckpt wrote"))?;
            if keep(&meta) {
                out.push((*k.value(), meta));
            }
        }
        Ok(out)
    }

    /// Every function key with a row, with its newest code version.
    pub(crate) fn function_keys(&self) -> Result<Vec<(u64, u64)>, Error> {
        let e = storage("cannot list functions");
        let mut out = Vec::new();
        for row in self.functions.iter().map_err(&e)? {
            let (k, v) = row.map_err(&e)?;
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
        let reorder = self.by_access.is_some() || self.by_hits.is_some();
        for (id, (hits, last)) in by_id {
            if let Some(old) = self.meta(&id)? {
                let mut meta = old;
                meta.hits = meta.hits.saturating_add(hits);
                meta.last_access_ms = meta.last_access_ms.max(last);
                self.entries
                    .insert(&id, &meta.encode())
                    .map_err(storage("cannot record accesses"))?;
                if reorder {
                    self.unindex(&id, &old)?;
                    self.index(&id, &meta)?;
                }
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

    /// Writes the accumulated function-row changes; returns the ids whose record was saved or
    /// removed, and what to report once committed.
    pub(crate) fn finish(mut self) -> Result<(Vec<[u8; 16]>, Reports), Error> {
        let e = storage("cannot update function statistics");
        for (key, delta) in std::mem::take(&mut self.deltas) {
            let existing = self
                .functions
                .get(key)
                .map_err(&e)?
                .map(|g| g.value().to_vec());
            let mut record = match existing {
                Some(bytes) => FunctionRecord::decode(&bytes)
                    .ok_or_else(|| Error::corrupted("a function row is not one ckpt wrote"))?,
                None => FunctionRecord::default(),
            };
            if let Some(f) = &delta.identity {
                record.saw(f, self.now_ms);
                if let Some(t) = delta.value_type
                    && record.code_version == f.code_version()
                    && record.value_type.as_deref() != Some(t)
                {
                    record.value_type = Some(t.to_string());
                }
            }
            record.entries = record.entries.saturating_add_signed(delta.entries);
            record.bytes = record.bytes.saturating_add_signed(delta.bytes);
            record.calls = record.calls.plus(&delta.calls);
            record.evictions = record.evictions.plus(&delta.evictions);
            #[cfg(feature = "metrics")]
            {
                let e = &delta.evictions;
                if e.size + e.count + e.age + e.idle > 0 {
                    let function = format!("{}::{}", record.module, record.name);
                    let by_cause = [e.size, e.count, e.age, e.idle];
                    self.reports.evictions.push((function, by_cause));
                }
            }
            self.functions
                .insert(key, record.encode().as_slice())
                .map_err(&e)?;
        }
        Ok((std::mem::take(&mut self.changed), self.reports))
    }
}
