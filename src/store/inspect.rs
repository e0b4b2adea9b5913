//! Looking inside a store: statistics, entries, and removing them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata as _};

use super::engine::Db;
use super::engine_error::engine_error;
use super::read::{lend, with_row};
use super::schema::{
    ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, INFO, REMOTE_KEY, decode_remote,
};
use super::write::{Tx, Victim};
use super::{Commit, Shared, Store};
use crate::error::Error;
use crate::id::{CheckpointId, Function};
use crate::record::{Lent, LentBytes};
use crate::stats::{CallStats, EvictionCause, EvictionStats, RemoteStats};

/// A store's statistics: totals, and one row per function.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Call counts summed over every function (persisted counts plus those still buffered).
    pub calls: CallStats,
    /// Entries stored.
    pub entries: u64,
    /// Bytes of stored records (headers and values).
    pub stored_bytes: u64,
    /// Entries removed by limits, by cause.
    pub evictions: EvictionStats,
    /// Size of the store file.
    pub file_bytes: u64,
    /// Bytes of the file that hold nothing (freed pages, reused by later writes);
    /// [`Store::compact`] gives them back to the file system.
    pub reclaimable_bytes: u64,
    /// Hits whose per-entry bookkeeping was dropped because the access log was full.
    pub dropped_accesses: u64,
    /// Per-function rows, ordered by module path and name.
    pub functions: Vec<FunctionStats>,
    /// The remote tier's counts since the store was opened (feature `remote`); `None` without
    /// a remote.
    pub remote: Option<RemoteStats>,
    /// The remote tier's counts over the file's life, summed over every process that used it
    /// with a remote (recorded in the file with each write, as call counts are, plus those
    /// this process has not written yet); `None` if none ever did. What `ckpt stats` shows.
    pub remote_recorded: Option<RemoteStats>,
}

/// One function's statistics over the store's life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// The function's key ([`Function::key`]).
    pub key: u64,
    /// Module path.
    pub module: String,
    /// Name.
    pub name: String,
    /// Code version first seen most recently (by a registration or a save); entries of other
    /// versions are stale.
    pub code_version: u64,
    /// Code hash of that version, if it had one.
    pub code_hash: Option<u64>,
    /// Hand-pinned version of that version, if any.
    pub version: Option<String>,
    /// Call counts.
    pub calls: CallStats,
    /// Entries removed by limits, by cause.
    pub evictions: EvictionStats,
    /// Entries stored.
    pub entries: u64,
    /// Bytes of stored records.
    pub stored_bytes: u64,
    /// The Rust type that `code_version` returns, as the saving process's compiler spelled it
    /// (`std::any::type_name`), once a save through a decorator has recorded it. For display:
    /// lookups check the record's type fingerprint, never this name.
    pub value_type: Option<String>,
}

impl FunctionStats {
    /// `module::name`.
    pub fn path(&self) -> String {
        if self.module.is_empty() {
            self.name.clone()
        } else {
            format!("{}::{}", self.module, self.name)
        }
    }

    fn from_record(key: u64, r: FunctionRecord) -> FunctionStats {
        FunctionStats {
            key,
            module: r.module,
            name: r.name,
            code_version: r.code_version,
            code_hash: r.code_hash,
            version: r.version,
            calls: r.calls,
            evictions: r.evictions,
            entries: r.entries,
            stored_bytes: r.bytes,
            value_type: r.value_type,
        }
    }
}

/// One entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The entry's id.
    pub id: CheckpointId,
    /// Key of the function that saved it.
    pub function_key: u64,
    /// `module::name` of that function, if its row is readable.
    pub function: Option<String>,
    /// Code version that saved it.
    pub code_version: u64,
    /// Whether that version differs from the function's newest (see
    /// [`Store::remove_stale`]).
    pub stale: bool,
    /// When it was saved.
    pub created: SystemTime,
    /// Its last hit (or its save), as of the last flush.
    pub last_access: SystemTime,
    /// Hits, as of the last flush.
    pub hits: u64,
    /// Size of its record in bytes.
    pub size: u64,
    /// How long the call that produced it took.
    pub compute_time: Duration,
}

/// An entry removed (or, in a dry run, to be removed) by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evicted {
    /// Its id.
    pub id: CheckpointId,
    /// Its function's key.
    pub function_key: u64,
    /// Its record's size.
    pub size: u64,
    /// Which limit removed it.
    pub cause: EvictionCause,
}

/// What an eviction removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictionReport {
    /// The entries, in the order they went.
    pub evicted: Vec<Evicted>,
    /// Their total size.
    pub bytes: u64,
}

impl EvictionReport {
    pub(crate) fn new(victims: Vec<Victim>) -> Self {
        let bytes = victims.iter().map(|v| v.size).sum();
        EvictionReport {
            evicted: victims.into_iter().map(Evicted::from).collect(),
            bytes,
        }
    }
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// File size before.
    pub file_bytes_before: u64,
    /// File size after.
    pub file_bytes_after: u64,
}

/// Bytes of the pages the engine has allocated: it tells only a write transaction.
fn allocated_bytes(db: &redb::Database) -> Result<u64, Error> {
    let txn = db
        .begin_write()
        .map_err(|e| engine_error("cannot begin a write", e))?;
    let stats = txn
        .stats()
        .map_err(|e| engine_error("cannot read storage statistics", e))?;
    txn.abort()
        .map_err(|e| engine_error("cannot roll back", e))?;
    // Not plus the engine's `fragmented_bytes`: that counts the free pages again (with the
    // slack inside B-tree pages, which compaction does not give back), and the sum could exceed
    // the file.
    Ok(stats.allocated_pages() * stats.page_size() as u64)
}

/// Bytes of the pages of every table, for a read-only store, whose engine has no write
/// transaction to tell the allocated pages: the same figure less the engine's own few pages
/// (its table directory and allocator state), which therefore count as reclaimable.
fn table_bytes(txn: &ReadTransaction) -> Result<u64, Error> {
    let e = |err: redb::StorageError| engine_error("cannot read storage statistics", err);
    let mut used = 0;
    for handle in txn.list_tables().map_err(e)? {
        let table = txn
            .open_untyped_table(handle)
            .map_err(|err| engine_error("cannot open a table", err))?;
        let stats = table.stats().map_err(e)?;
        used += stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
    }
    Ok(used)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Store {
    fn begin_read(&self) -> Result<ReadTransaction, Error> {
        self.shared().engine().begin_read()
    }

    /// Runs a read-only inspection behind the engine's guard (see `engine.rs`).
    fn inspect<T>(&self, what: &str, body: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        self.shared().engine().guard(what, body)
    }

    /// Bytes of the file holding no live page.
    fn reclaimable(&self, file_bytes: u64) -> Result<u64, Error> {
        let used = self.shared().with_db(|db| match db {
            Db::Writable(writable) => allocated_bytes(writable),
            Db::ReadOnly(_) => table_bytes(
                &db.begin_read()
                    .map_err(|e| engine_error("cannot begin a read", e))?,
            ),
        })??;
        Ok(file_bytes.saturating_sub(used))
    }

    fn function_rows(txn: &ReadTransaction) -> Result<HashMap<u64, FunctionRecord>, Error> {
        let e = |err: redb::StorageError| engine_error("cannot read function rows", err);
        let table = txn
            .open_table(FUNCTIONS)
            .map_err(|err| engine_error("cannot open the functions table", err))?;
        let mut out = HashMap::new();
        for row in table.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            let record = FunctionRecord::decode(v.value())
                .ok_or_else(|| Error::corrupted("a function row is not one ckpt wrote"))?;
            out.insert(k.value(), record);
        }
        Ok(out)
    }

    /// Statistics of the whole store, including counts not yet flushed to the file.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        self.inspect("cannot read statistics", || self.stats_inner())
    }

    fn stats_inner(&self) -> Result<StoreStats, Error> {
        // The file and the counts not yet written to it, read together: a write holds the
        // writer from its begin until it has marked what it wrote as written, so a write that
        // lands meanwhile (a background backfill, a bookkeeping flush) is either in both or in
        // neither, never counted twice or not at all.
        let writer = self.shared().writer.lock();
        let txn = self.begin_read()?;
        let unflushed = self.shared().registry().lock().unflushed();
        let remote = self.shared().remote_stats();
        let remote_recorded = self.remote_recorded(&txn)?;
        drop(writer);
        let mut rows = Store::function_rows(&txn)?;
        // Closed before `reclaimable` waits for the engine's slot: a compaction or a verify
        // holding it waits for every read transaction to end, so one kept open here would have
        // each wait for the other until the compaction gives up.
        drop(txn);
        for (key, calls) in unflushed {
            let row = rows.entry(key).or_default();
            row.calls = row.calls.plus(&calls);
        }
        let mut functions: Vec<FunctionStats> = rows
            .into_iter()
            .map(|(k, r)| FunctionStats::from_record(k, r))
            .collect();
        functions.sort_by(|a, b| (&a.module, &a.name, a.key).cmp(&(&b.module, &b.name, b.key)));
        let file_bytes = std::fs::metadata(self.path()).map_or(0, |m| m.len());
        let mut stats = StoreStats {
            calls: CallStats::default(),
            entries: 0,
            stored_bytes: 0,
            evictions: EvictionStats::default(),
            file_bytes,
            reclaimable_bytes: self.reclaimable(file_bytes)?,
            dropped_accesses: self.shared().dropped_accesses(),
            functions: Vec::new(),
            remote,
            remote_recorded,
        };
        for f in &functions {
            stats.calls = stats.calls.plus(&f.calls);
            stats.evictions = stats.evictions.plus(&f.evictions);
            stats.entries += f.entries;
            stats.stored_bytes += f.stored_bytes;
        }
        stats.functions = functions;
        Ok(stats)
    }

    /// The remote counts the file records, plus this process's not yet written.
    fn remote_recorded(&self, txn: &ReadTransaction) -> Result<Option<RemoteStats>, Error> {
        let recorded = match txn.open_table(INFO) {
            Ok(info) => info
                .get(REMOTE_KEY)
                .map_err(|e| engine_error("cannot read the remote counts", e))?
                .and_then(|v| decode_remote(v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(engine_error("cannot read the remote counts", e)),
        };
        let unflushed = self.shared().remote_unflushed().map(|(_, delta)| delta);
        Ok(match (recorded, unflushed) {
            (Some(r), Some(u)) => Some(r.plus(&u)),
            (r, u) => r.or(u),
        })
    }

    /// Statistics of one function, or `None` if the store has never seen it.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn function_stats(&self, function: &Function) -> Result<Option<FunctionStats>, Error> {
        let key = function.key();
        Ok(self.stats()?.functions.into_iter().find(|f| f.key == key))
    }

    fn info(id: [u8; 16], meta: EntryMeta, rows: &HashMap<u64, FunctionRecord>) -> EntryInfo {
        let row = rows.get(&meta.fn_key);
        EntryInfo {
            id: CheckpointId::from_bytes(id),
            function_key: meta.fn_key,
            function: row.map(|r| format!("{}::{}", r.module, r.name)),
            code_version: meta.code_version,
            stale: row.is_some_and(|r| r.code_version != meta.code_version),
            created: at(meta.created_ms),
            last_access: at(meta.last_access_ms),
            hits: meta.hits,
            size: meta.size,
            compute_time: Duration::from_nanos(meta.compute_nanos),
        }
    }

    /// Every entry's metadata, in id order.
    ///
    /// # Errors
    /// When the file cannot be read, or a metadata row is damaged.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, Error> {
        self.inspect("cannot list entries", || self.entries_where(|_| true))
    }

    /// The entries of one function, in id order (one scan of the metadata table).
    ///
    /// # Errors
    /// As [`entries`](Self::entries).
    pub fn entries_of(&self, function: &Function) -> Result<Vec<EntryInfo>, Error> {
        let key = function.key();
        self.inspect("cannot list entries", || {
            self.entries_where(|m| m.fn_key == key)
        })
    }

    fn entries_where(
        &self,
        mut keep: impl FnMut(&EntryMeta) -> bool,
    ) -> Result<Vec<EntryInfo>, Error> {
        let txn = self.begin_read()?;
        let rows = Store::function_rows(&txn)?;
        let e = |err: redb::StorageError| engine_error("cannot list entries", err);
        let table = txn
            .open_table(ENTRIES)
            .map_err(|err| engine_error("cannot open the entries table", err))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            let meta = EntryMeta::decode(v.value())
                .ok_or_else(|| Error::corrupted("an entry's metadata row is not one ckpt wrote"))?;
            if keep(&meta) {
                out.push(Store::info(*k.value(), meta, &rows));
            }
        }
        Ok(out)
    }

    /// One entry's metadata.
    ///
    /// # Errors
    /// As [`entries`](Self::entries).
    pub fn entry(&self, id: &CheckpointId) -> Result<Option<EntryInfo>, Error> {
        self.inspect("cannot read an entry", || self.entry_inner(id))
    }

    fn entry_inner(&self, id: &CheckpointId) -> Result<Option<EntryInfo>, Error> {
        let txn = self.begin_read()?;
        let rows = Store::function_rows(&txn)?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(|err| engine_error("cannot open the entries table", err))?;
        let row = table
            .get(id.as_bytes())
            .map_err(|err| engine_error("cannot read an entry", err))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let meta = EntryMeta::decode(row.value()).ok_or_else(|| {
                    Error::corrupted("an entry's metadata row is not one ckpt wrote")
                })?;
                Ok(Some(Store::info(*id.as_bytes(), meta, &rows)))
            }
        }
    }

    /// The stored record of `id`, as [`Cache::retrieve`](crate::Cache::retrieve) returns it,
    /// but without counting an access (the entry's hits and last access stay as they are): for
    /// tools that look inside a store. [`Record::parse`](crate::Record::parse) checks it and
    /// gives its parts.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read_record(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        self.shared().engine().guard("cannot read a record", || {
            let txn = self.shared().engine().begin_read()?;
            read_record(&txn, id)
        })
    }

    /// Removes one entry; says whether it was there.
    ///
    /// # Errors
    /// When the write fails (nothing is removed then).
    pub fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        self.shared().before_removal();
        self.shared().write(Commit::Yes, |tx| {
            tx.delete(id.as_bytes()).map(|m| m.is_some())
        })
    }

    /// Removes every entry of `function` (all code versions); returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn remove_function(&self, function: &Function) -> Result<u64, Error> {
        let key = function.key();
        self.shared().before_removal();
        self.shared().write(Commit::Yes, |tx| {
            let doomed = tx.select(|m| m.fn_key == key)?;
            for (id, _) in &doomed {
                tx.delete(id)?;
            }
            Ok(doomed.len() as u64)
        })
    }

    /// Removes the entries of `function` saved by code versions other than `function`'s own
    /// (another code hash or version); returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn remove_stale(&self, function: &Function) -> Result<u64, Error> {
        let (key, current) = (function.key(), function.code_version());
        self.shared().before_removal();
        self.shared().write(Commit::Yes, |tx| {
            remove_where(tx, |m| m.fn_key == key && m.code_version != current)
        })
    }

    /// Removes, for every function, the entries of code versions other than its newest recorded
    /// one; returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn remove_all_stale(&self) -> Result<u64, Error> {
        self.shared().before_removal();
        self.shared().write(Commit::Yes, |tx| {
            let newest: HashMap<u64, u64> = tx.function_keys()?.into_iter().collect();
            remove_where(tx, |m| {
                newest
                    .get(&m.fn_key)
                    .is_some_and(|&current| m.code_version != current)
            })
        })
    }

    /// Removes every entry (statistics are kept); returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn clear(&self) -> Result<u64, Error> {
        self.shared().before_removal();
        self.shared()
            .write(Commit::Yes, |tx| remove_where(tx, |_| true))
    }
}

impl Shared {
    /// Before a removal: the backfills still waiting are saved first, so that it finds them
    /// (else one would be saved after it, and the removed entry come back).
    fn before_removal(&self) {
        #[cfg(feature = "remote")]
        self.save_all_waiting();
    }
}

/// Removes the entries `which` picks; returns how many.
fn remove_where(tx: &mut Tx<'_>, which: impl FnMut(&EntryMeta) -> bool) -> Result<u64, Error> {
    let doomed = tx.select(which)?;
    for (id, _) in &doomed {
        tx.delete(id)?;
    }
    Ok(doomed.len() as u64)
}

/// The record bytes of `id` in a read transaction: its results row lent as every read lends it
/// ([`lend`]: a record whole; a manifest's chunks, from the same transaction), then joined.
fn read_record(txn: &ReadTransaction, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
    let record = with_row(txn, id, |row| {
        let mut record = None;
        lend(row, id, txn, |lent: Lent<'_>| record = Some(joined(lent)))?;
        // `lend` hands the row over exactly once: `None` is not reached.
        record.transpose()
    })?;
    Ok(record.flatten())
}

/// A lent record in one buffer, grown as its parts are read: a manifest's length is not
/// trusted, so nothing is allocated ahead of the bytes.
fn joined(lent: Lent<'_>) -> Result<Vec<u8>, Error> {
    match lent.bytes() {
        LentBytes::Whole(bytes) | LentBytes::Checked(bytes) => Ok(bytes.to_vec()),
        LentBytes::Parts(parts) => {
            let mut record = Vec::new();
            for i in 0..parts.count() {
                record.extend_from_slice(&parts.part(i)?);
            }
            Ok(record)
        }
    }
}
