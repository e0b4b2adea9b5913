//! Looking inside a store: statistics, entries, and removing them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadTransaction, ReadableTable};

use super::Store;
use super::schema::{BY_FUNCTION, ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord};
use super::write::engine_error;
use crate::error::Error;
use crate::id::{CheckpointId, Function};
use crate::stats::CallStats;

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
    /// Size of the store file.
    pub file_bytes: u64,
    /// Hits whose per-entry bookkeeping was dropped because the access log was full.
    pub dropped_accesses: u64,
    /// Per-function rows, ordered by module path and name.
    pub functions: Vec<FunctionStats>,
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
    /// Code version of the newest registration or save; entries of other versions are stale.
    pub code_version: u64,
    /// Code hash of that version, if it had one.
    pub code_hash: Option<u64>,
    /// Hand-pinned version of that version, if any.
    pub version: Option<String>,
    /// Call counts.
    pub calls: CallStats,
    /// Entries stored.
    pub entries: u64,
    /// Bytes of stored records.
    pub stored_bytes: u64,
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
            entries: r.entries,
            stored_bytes: r.bytes,
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
        let txn = self.begin_read()?;
        let mut rows = Store::function_rows(&txn)?;
        let unflushed = self.shared().registry().lock().unflushed();
        for (key, calls) in unflushed {
            let row = rows.entry(key).or_default();
            row.calls = row.calls.plus(&calls);
        }
        let mut functions: Vec<FunctionStats> = rows
            .into_iter()
            .map(|(k, r)| FunctionStats::from_record(k, r))
            .collect();
        functions.sort_by(|a, b| (&a.module, &a.name, a.key).cmp(&(&b.module, &b.name, b.key)));
        let mut stats = StoreStats {
            calls: CallStats::default(),
            entries: 0,
            stored_bytes: 0,
            file_bytes: std::fs::metadata(self.path()).map_or(0, |m| m.len()),
            dropped_accesses: self.shared().dropped_accesses(),
            functions: Vec::new(),
        };
        for f in &functions {
            stats.calls = stats.calls.plus(&f.calls);
            stats.entries += f.entries;
            stats.stored_bytes += f.stored_bytes;
        }
        stats.functions = functions;
        Ok(stats)
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
        self.inspect("cannot list entries", || self.entries_inner())
    }

    fn entries_inner(&self) -> Result<Vec<EntryInfo>, Error> {
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
            out.push(Store::info(*k.value(), meta, &rows));
        }
        Ok(out)
    }

    /// The entries of one function.
    ///
    /// # Errors
    /// As [`entries`](Self::entries).
    pub fn entries_of(&self, function: &Function) -> Result<Vec<EntryInfo>, Error> {
        self.inspect("cannot list entries", || self.entries_of_inner(function))
    }

    fn entries_of_inner(&self, function: &Function) -> Result<Vec<EntryInfo>, Error> {
        let txn = self.begin_read()?;
        let rows = Store::function_rows(&txn)?;
        let e = |err: redb::StorageError| engine_error("cannot list entries", err);
        let index = txn
            .open_multimap_table(BY_FUNCTION)
            .map_err(|err| engine_error("cannot open the function index", err))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(|err| engine_error("cannot open the entries table", err))?;
        let mut out = Vec::new();
        for id in index.get(function.key()).map_err(e)? {
            let id = *id.map_err(e)?.value();
            if let Some(row) = table.get(&id).map_err(e)? {
                let meta = EntryMeta::decode(row.value()).ok_or_else(|| {
                    Error::corrupted("an entry's metadata row is not one ckpt wrote")
                })?;
                out.push(Store::info(id, meta, &rows));
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

    /// Removes one entry; says whether it was there.
    ///
    /// # Errors
    /// When the write fails (nothing is removed then).
    pub fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        self.shared()
            .write(|tx| tx.delete(id.as_bytes()).map(|m| m.is_some()))
    }

    /// Removes every entry of `function` (all code versions); returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn remove_function(&self, function: &Function) -> Result<u64, Error> {
        self.shared().write(|tx| {
            let ids = tx.ids_of(function.key())?;
            for id in &ids {
                tx.delete(id)?;
            }
            Ok(ids.len() as u64)
        })
    }

    /// Removes the entries of `function` saved by code versions other than `function`'s own
    /// (another code hash or version); returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn remove_stale(&self, function: &Function) -> Result<u64, Error> {
        let current = function.code_version();
        self.shared()
            .write(|tx| remove_stale_of(tx, function.key(), current))
    }

    /// Removes, for every function, the entries of code versions other than its newest recorded
    /// one; returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn remove_all_stale(&self) -> Result<u64, Error> {
        self.shared().write(|tx| {
            let mut removed = 0;
            for (key, current) in tx.function_keys()? {
                removed += remove_stale_of(tx, key, current)?;
            }
            Ok(removed)
        })
    }

    /// Removes every entry (statistics are kept); returns how many.
    ///
    /// # Errors
    /// As [`remove`](Self::remove).
    pub fn clear(&self) -> Result<u64, Error> {
        self.shared().write(|tx| {
            let mut removed = 0;
            for (key, _) in tx.function_keys()? {
                for id in tx.ids_of(key)? {
                    tx.delete(&id)?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }
}

fn remove_stale_of(tx: &mut super::write::Tx<'_>, key: u64, current: u64) -> Result<u64, Error> {
    let mut removed = 0;
    for id in tx.ids_of(key)? {
        if tx.meta(&id)?.is_some_and(|m| m.code_version != current) {
            tx.delete(&id)?;
            removed += 1;
        }
    }
    Ok(removed)
}
