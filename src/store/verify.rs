//! Checking a store ([`Store::verify`]) and repairing it ([`Store::repair`]): the storage
//! engine's integrity check, then the consistency of ckpt's own tables with each other.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    WriteTransaction,
};

use super::Store;
use super::schema::{BY_FUNCTION, ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, RESULTS};
use super::write::engine_error;
use crate::error::Error;
use crate::record;

/// What [`Store::verify`] or [`Store::repair`] found.
///
/// Counts are of problems found; after [`Store::repair`] each of them has been fixed (see
/// [`repaired`](Self::repaired)), and a second [`Store::verify`] reports a clean store.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-verify-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = ckpt::Store::open(dir.join("checkpoints.redb"))?;
/// let report = store.verify()?;
/// assert!(report.is_clean(), "{report}");
/// # drop(store); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The storage engine found pages failing their checksums, or a damaged allocator state,
    /// and repaired the file (rolling back to its last sound commit where needed).
    pub engine_repaired: bool,
    /// Entries (ids with a result or a metadata row) checked.
    pub entries_checked: u64,
    /// Results without a metadata row.
    pub results_without_meta: u64,
    /// Metadata rows without a result.
    pub meta_without_result: u64,
    /// Results that fail their checksum or are not in a record format this ckpt reads. (They
    /// are never returned: a call finding one recomputes.)
    pub bad_records: u64,
    /// Metadata rows that are not in a format this ckpt wrote.
    pub bad_meta: u64,
    /// Metadata rows whose recorded size differs from their result's.
    pub size_mismatches: u64,
    /// Rows of the function index that are missing, or point at an entry that is not there or
    /// belongs to another function.
    pub index_mismatches: u64,
    /// Functions whose entry or byte counts differ from their entries.
    pub function_count_mismatches: u64,
    /// Function rows that are not in a format this ckpt wrote.
    pub bad_function_rows: u64,
    /// Functions with entries but no row.
    pub missing_function_rows: u64,
    /// Whether the problems counted here were fixed ([`Store::repair`] found some).
    pub repaired: bool,
}

impl VerifyReport {
    /// The number of problems found in ckpt's tables (not counting the engine's repair).
    pub fn problems(&self) -> u64 {
        self.results_without_meta
            + self.meta_without_result
            + self.bad_records
            + self.bad_meta
            + self.size_mismatches
            + self.index_mismatches
            + self.function_count_mismatches
            + self.bad_function_rows
            + self.missing_function_rows
    }

    /// Whether nothing at all was wrong.
    pub fn is_clean(&self) -> bool {
        !self.engine_repaired && self.problems() == 0
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} entries checked", self.entries_checked)?;
        if self.is_clean() {
            return f.write_str(", no problems");
        }
        if self.engine_repaired {
            f.write_str("; the storage engine repaired damaged pages")?;
        }
        let counts = [
            (self.results_without_meta, "results without metadata"),
            (self.meta_without_result, "metadata rows without a result"),
            (self.bad_records, "damaged results"),
            (self.bad_meta, "damaged metadata rows"),
            (self.size_mismatches, "wrong sizes"),
            (self.index_mismatches, "function index mismatches"),
            (self.function_count_mismatches, "wrong function counts"),
            (self.bad_function_rows, "damaged function rows"),
            (self.missing_function_rows, "missing function rows"),
        ];
        for (n, what) in counts {
            if n > 0 {
                write!(f, "; {n} {what}")?;
            }
        }
        if self.problems() > 0 {
            f.write_str(if self.repaired {
                " (repaired)"
            } else {
                " (run Store::repair to fix)"
            })?;
        }
        Ok(())
    }
}

impl Store {
    /// Checks the store: the storage engine's integrity check of every page (which repairs
    /// damaged pages by rolling back to the last sound commit, as opening does), then the
    /// consistency of ckpt's tables: every result has its metadata and the other way round,
    /// every result passes its checksum, the function index and the per-function counts match
    /// the entries. Changes nothing of ckpt's own (see [`repair`](Self::repair)).
    ///
    /// It reads the whole file, and other operations on the store wait while it runs.
    ///
    /// # Errors
    /// When the file cannot be read, or is damaged beyond the engine's repair
    /// ([`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted): delete the file, checkpoints are
    /// recomputable).
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        self.check("cannot verify the store", false)
    }

    /// As [`verify`](Self::verify), and fixes what it finds, in one write transaction: drops
    /// results without metadata, metadata without results, and entries failing their checks;
    /// corrects recorded sizes; rebuilds the function index; recomputes each function's entry
    /// and byte counts (a function row that was unreadable is recreated without its name and
    /// call counts). Entries it drops are recomputed by the next call that needs them.
    ///
    /// # Errors
    /// As [`verify`](Self::verify); when the write fails nothing is changed.
    pub fn repair(&self) -> Result<VerifyReport, Error> {
        self.check("cannot repair the store", true)
    }

    fn check(&self, what: &str, fix: bool) -> Result<VerifyReport, Error> {
        let engine = self.shared().engine();
        engine.guard(what, || {
            engine.exclusive(what, |db| {
                let engine_repaired = match db.check_integrity() {
                    Ok(clean) => !clean,
                    Err(DatabaseError::TransactionInProgress) => return Ok(None),
                    Err(DatabaseError::Storage(redb::StorageError::Corrupted(msg))) => {
                        // The engine discards its allocator state when the check fails: the
                        // handle must be reopened.
                        engine.mark_broken();
                        return Err(Error::corrupted(format!(
                            "{what}: the file is damaged beyond the storage engine's repair \
                             ({msg}); Store::repair cannot fix it: delete the file (checkpoints \
                             are recomputable) or restore it from a backup"
                        )));
                    }
                    Err(e) => {
                        engine.mark_broken();
                        return Err(engine_error(what, e));
                    }
                };
                let mut report = if fix {
                    repair_tables(db)?
                } else {
                    scan_read(db)?.report
                };
                report.engine_repaired = engine_repaired;
                Ok(Some(report))
            })
        })
    }
}

/// One entry as the tables have it.
#[derive(Default)]
struct Seen {
    /// The result's length and whether it passes its checks.
    result: Option<(u64, bool)>,
    /// The metadata row: `Some(None)` when it does not decode.
    meta: Option<Option<EntryMeta>>,
}

struct Scan {
    report: VerifyReport,
    ids: HashMap<[u8; 16], Seen>,
    index: BTreeSet<(u64, [u8; 16])>,
    functions: HashMap<u64, Option<FunctionRecord>>,
}

fn storage(err: redb::StorageError) -> Error {
    engine_error("cannot read the store", err)
}

fn table_error(err: redb::TableError) -> Error {
    engine_error("cannot open a table", err)
}

fn scan_read(db: &Database) -> Result<Scan, Error> {
    let txn = db
        .begin_read()
        .map_err(|e| engine_error("cannot begin a read", e))?;
    scan(
        &txn.open_table(RESULTS).map_err(table_error)?,
        &txn.open_table(ENTRIES).map_err(table_error)?,
        &txn.open_multimap_table(BY_FUNCTION).map_err(table_error)?,
        &txn.open_table(FUNCTIONS).map_err(table_error)?,
    )
}

/// Reads every row of the four tables, and counts what is inconsistent.
fn scan(
    results: &impl ReadableTable<&'static [u8; 16], &'static [u8]>,
    entries: &impl ReadableTable<&'static [u8; 16], &'static [u8; 64]>,
    index: &impl ReadableMultimapTable<u64, &'static [u8; 16]>,
    functions: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Scan, Error> {
    let mut ids: HashMap<[u8; 16], Seen> = HashMap::new();
    for row in results.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let bytes = v.value();
        ids.entry(*k.value()).or_default().result =
            Some((bytes.len() as u64, record::parse(bytes).is_ok()));
    }
    for row in entries.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        ids.entry(*k.value()).or_default().meta = Some(EntryMeta::decode(v.value()));
    }
    let mut index_rows = BTreeSet::new();
    for row in index.iter().map_err(storage)? {
        let (k, values) = row.map_err(storage)?;
        for id in values {
            index_rows.insert((k.value(), *id.map_err(storage)?.value()));
        }
    }
    let mut function_rows = HashMap::new();
    for row in functions.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        function_rows.insert(k.value(), FunctionRecord::decode(v.value()));
    }

    let mut report = VerifyReport {
        entries_checked: ids.len() as u64,
        ..VerifyReport::default()
    };
    // What the function rows should count: every readable metadata row.
    let mut counted: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut expected_index = BTreeSet::new();
    for (id, seen) in &ids {
        match (seen.result, seen.meta) {
            (Some(_), None) => report.results_without_meta += 1,
            (None, Some(_)) => report.meta_without_result += 1,
            _ => {}
        }
        if let Some((len, ok)) = seen.result {
            if !ok {
                report.bad_records += 1;
            }
            if let Some(Some(meta)) = seen.meta
                && meta.size != len
            {
                report.size_mismatches += 1;
            }
        }
        match seen.meta {
            Some(None) => report.bad_meta += 1,
            Some(Some(meta)) => {
                expected_index.insert((meta.fn_key, *id));
                let c = counted.entry(meta.fn_key).or_default();
                c.0 += 1;
                c.1 += meta.size;
            }
            None => {}
        }
    }
    report.index_mismatches = index_rows.symmetric_difference(&expected_index).count() as u64;
    for (key, row) in &function_rows {
        match row {
            None => report.bad_function_rows += 1,
            Some(r) => {
                if (r.entries, r.bytes) != counted.get(key).copied().unwrap_or_default() {
                    report.function_count_mismatches += 1;
                }
            }
        }
    }
    report.missing_function_rows = counted
        .keys()
        .filter(|k| !function_rows.contains_key(k))
        .count() as u64;
    Ok(Scan {
        report,
        ids,
        index: index_rows,
        functions: function_rows,
    })
}

/// Scans, and fixes what the scan found, in one write transaction.
fn repair_tables(db: &Database) -> Result<VerifyReport, Error> {
    let txn = db
        .begin_write()
        .map_err(|e| engine_error("cannot begin a write", e))?;
    let mut report = fix(&txn)?;
    if report.problems() > 0 {
        txn.commit()
            .map_err(|e| engine_error("cannot commit the repair", e))?;
        report.repaired = true;
    } else {
        txn.abort()
            .map_err(|e| engine_error("cannot end the check", e))?;
    }
    Ok(report)
}

fn fix(txn: &WriteTransaction) -> Result<VerifyReport, Error> {
    let mut results = txn.open_table(RESULTS).map_err(table_error)?;
    let mut entries = txn.open_table(ENTRIES).map_err(table_error)?;
    let mut index = txn.open_multimap_table(BY_FUNCTION).map_err(table_error)?;
    let mut functions = txn.open_table(FUNCTIONS).map_err(table_error)?;
    let scan = scan(&results, &entries, &index, &functions)?;
    if scan.report.problems() == 0 {
        return Ok(scan.report);
    }

    // Entries to keep: a sound result with a readable metadata row.
    let mut kept_index = BTreeSet::new();
    let mut counts: HashMap<u64, (u64, u64)> = HashMap::new();
    for (id, seen) in &scan.ids {
        match (seen.result, seen.meta) {
            (Some((len, true)), Some(Some(mut meta))) => {
                if meta.size != len {
                    meta.size = len;
                    entries.insert(id, &meta.encode()).map_err(storage)?;
                }
                kept_index.insert((meta.fn_key, *id));
                let c = counts.entry(meta.fn_key).or_default();
                c.0 += 1;
                c.1 += len;
            }
            _ => {
                results.remove(id).map_err(storage)?;
                entries.remove(id).map_err(storage)?;
            }
        }
    }
    for (key, id) in scan.index.difference(&kept_index) {
        index.remove(*key, id).map_err(storage)?;
    }
    for (key, id) in kept_index.difference(&scan.index) {
        index.insert(*key, id).map_err(storage)?;
    }
    let mut keys: BTreeSet<u64> = scan.functions.keys().copied().collect();
    keys.extend(counts.keys().copied());
    for key in keys {
        let (n, bytes) = counts.get(&key).copied().unwrap_or_default();
        let mut row = scan
            .functions
            .get(&key)
            .cloned()
            .flatten()
            .unwrap_or_default();
        if scan.functions.get(&key).is_some_and(Option::is_some)
            && (row.entries, row.bytes) == (n, bytes)
        {
            continue;
        }
        row.entries = n;
        row.bytes = bytes;
        functions
            .insert(key, row.encode().as_slice())
            .map_err(storage)?;
    }
    Ok(scan.report)
}
