//! Checking a store ([`Store::verify`]) and repairing it ([`Store::repair`]): the storage
//! engine's integrity check, then the consistency of ckpt's own tables with each other.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction,
};

use super::chunks::{self, Manifest, remove_chunks, split_key};
use super::engine_error::engine_error;
use super::schema::indexes::{ACCESS, CREATED, HITS};
use super::schema::{
    CHUNKS, ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, INDEXES_KEY, INFO, ORDER_ACCESS,
    ORDER_CREATED, ORDER_HITS, RESULTS,
};
use super::{AccessMode, ConcurrencyMode, Store, open};
use crate::error::{Error, ErrorKind};
use crate::record::{self, RecordCheck};

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
    /// and repaired the file (rolling back to its last sound commit where needed). In a
    /// read-only store the repair is made in memory only, to check what it leaves: the file is
    /// unchanged, and a writable open (or [`Store::repair`]) makes it.
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
    /// Rows of the order indexes (kept for limits) that are missing, or do not match an entry's
    /// metadata.
    pub index_mismatches: u64,
    /// Functions whose entry or byte counts differ from their entries.
    pub function_count_mismatches: u64,
    /// Function rows that are not in a format this ckpt wrote.
    pub bad_function_rows: u64,
    /// Functions with entries but no row.
    pub missing_function_rows: u64,
    /// Chunk rows (pieces of large records) that belong to no stored record, or lie past the
    /// end of the one they name. A large record missing a chunk, or whose chunks fail its
    /// checksum, counts among `bad_records`.
    pub orphan_chunks: u64,
    /// Whether the problems counted here were fixed ([`Store::repair`] found some).
    pub repaired: bool,
    /// Whether the storage engine's check of every page ran. It does not for a read-only store
    /// in [`ConcurrencyMode::MultiProcess`](crate::ConcurrencyMode::MultiProcess), where only
    /// ckpt's tables are checked.
    pub pages_checked: bool,
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
            + self.orphan_chunks
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
            (self.index_mismatches, "order index mismatches"),
            (self.function_count_mismatches, "wrong function counts"),
            (self.bad_function_rows, "damaged function rows"),
            (self.missing_function_rows, "missing function rows"),
            (self.orphan_chunks, "orphan chunks"),
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
    /// every result passes its checksum, the order indexes and the per-function counts match
    /// the entries. Changes nothing of ckpt's own (see [`repair`](Self::repair)).
    ///
    /// It reads the whole file, and other operations on the store wait while it runs.
    ///
    /// # Errors
    /// When the file cannot be read, or is damaged beyond the engine's repair
    /// ([`ErrorKind::Corrupted`]): copy what is intact into a new
    /// store with [`Store::salvage`], or delete the file (checkpoints are recomputable).
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        self.check("cannot verify the store", false)
    }

    /// As [`verify`](Self::verify), and fixes what it finds, in one write transaction: drops
    /// results without metadata, metadata without results, and entries failing their checks;
    /// corrects recorded sizes; rebuilds the order indexes; recomputes each function's entry
    /// and byte counts (a function row that was unreadable is recreated without its name and
    /// call counts). Entries it drops are recomputed by the next call that needs them.
    ///
    /// # Errors
    /// As [`verify`](Self::verify); when the write fails nothing is changed.
    pub fn repair(&self) -> Result<VerifyReport, Error> {
        self.check("cannot repair the store", true)
    }

    fn check(&self, what: &str, fix: bool) -> Result<VerifyReport, Error> {
        let started = std::time::Instant::now();
        let report = self.check_inner(what, fix)?;
        tracing::info!(
            target: "ckpt",
            path = %self.path().display(),
            problems = report.problems(),
            repaired = report.repaired,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "{}",
            if fix { "store repaired" } else { "store verified" }
        );
        Ok(report)
    }

    fn check_inner(&self, what: &str, fix: bool) -> Result<VerifyReport, Error> {
        let shared = self.shared();
        let engine = shared.engine();
        if self.access_mode() == AccessMode::ReadOnly {
            if fix {
                return Err(Error::read_only(what));
            }
            return engine.guard(what, || self.check_read_only(what));
        }
        engine.guard(what, || {
            engine.exclusive(what, |db| {
                let db = db.writable_mut(what)?;
                let engine_repaired = match engine_check(what, db) {
                    Ok(Integrity::Busy) => return Ok(None),
                    Ok(integrity) => integrity == Integrity::Repaired,
                    Err(e) => {
                        // The engine discards its allocator state when the check fails: the
                        // handle must be reopened.
                        engine.mark_broken();
                        return Err(e);
                    }
                };
                let mut report = if fix {
                    repair_tables(db)?
                } else {
                    scan_read(begin_read(db)?)?.report
                };
                report.engine_repaired = engine_repaired;
                report.pages_checked = true;
                Ok(Some(report))
            })
        })
    }

    /// Verifies a read-only store without writing to its file. In the single-process mode,
    /// nobody writes the file while this store holds it, so the engine's check runs on a
    /// second, writable handle whose writes stay in memory (an `Overlay`): what the check would
    /// repair is reported, and the file keeps its bytes. In the multi-process mode, another
    /// process may commit meanwhile, which a handle outside the engine's locks could misread:
    /// only ckpt's tables are checked then, through the store's own snapshot.
    fn check_read_only(&self, what: &str) -> Result<VerifyReport, Error> {
        let shared = self.shared();
        if shared.concurrency() == ConcurrencyMode::MultiProcess {
            let txn = shared.engine().begin_read()?;
            let mut report = scan_read(txn)?.report;
            report.pages_checked = false;
            return Ok(report);
        }
        let mut db = open::in_memory_writes(self.path()).map_err(|e| {
            Error::with_source(
                ErrorKind::Storage,
                format!("{what}: cannot read the file"),
                e,
            )
        })?;
        let engine_repaired = engine_check(what, &mut db)? == Integrity::Repaired;
        let mut report = scan_read(begin_read(&db)?)?.report;
        report.engine_repaired = engine_repaired;
        report.pages_checked = true;
        Ok(report)
    }
}

fn begin_read(db: &Database) -> Result<ReadTransaction, Error> {
    db.begin_read()
        .map_err(|e| engine_error("cannot begin a read", e))
}

/// What the engine's integrity check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Integrity {
    Clean,
    /// Pages failed their checksums, or the allocator state was damaged, and the engine
    /// repaired the file (rolling back to its last sound commit where needed).
    Repaired,
    /// A transaction is open: try again.
    Busy,
}

/// The engine's check of every page's checksum (which repairs what it can).
fn engine_check(what: &str, db: &mut Database) -> Result<Integrity, Error> {
    match db.check_integrity() {
        Ok(true) => Ok(Integrity::Clean),
        Ok(false) => Ok(Integrity::Repaired),
        Err(DatabaseError::TransactionInProgress) => Ok(Integrity::Busy),
        Err(DatabaseError::Storage(redb::StorageError::Corrupted(msg))) => {
            Err(Error::corrupted(format!(
                "{what}: the file is damaged beyond the storage engine's repair ({msg}); \
                 Store::repair cannot fix it: copy what is intact into a new store with \
                 Store::salvage and use that one, or delete the file (checkpoints are \
                 recomputable), or restore it from a backup"
            )))
        }
        Err(e) => Err(engine_error(what, e)),
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
    /// Chunk rows to remove: orphans, and those past the end of their record.
    orphan_chunks: Vec<[u8; 20]>,
    /// The order indexes the file maintains, with their rows.
    indexes: Vec<(u8, BTreeSet<Vec<u8>>)>,
    functions: HashMap<u64, Option<FunctionRecord>>,
}

/// The key an entry should have in the order index `bit`.
fn index_key(bit: u8, id: &[u8; 16], meta: &EntryMeta) -> Vec<u8> {
    match bit {
        CREATED => meta.created_key(id).to_vec(),
        ACCESS => meta.access_key(id).to_vec(),
        _ => meta.hits_key(id).to_vec(),
    }
}

fn rows<const N: usize>(
    table: &impl ReadableTable<&'static [u8; N], ()>,
) -> Result<BTreeSet<Vec<u8>>, Error> {
    let mut out = BTreeSet::new();
    for row in table.iter().map_err(storage)? {
        out.insert(row.map_err(storage)?.0.value().to_vec());
    }
    Ok(out)
}

/// The order indexes listed in the file's info table.
fn mask(info: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u8, Error> {
    Ok(info
        .get(INDEXES_KEY)
        .map_err(storage)?
        .and_then(|g| g.value().first().copied())
        .unwrap_or(0))
}

/// Reads the rows of every order index `mask` lists (a missing table has none).
macro_rules! read_indexes {
    ($txn:expr, $mask:expr) => {{
        let mut out = Vec::new();
        for bit in [CREATED, ACCESS, HITS] {
            if $mask & bit == 0 {
                continue;
            }
            let found = match bit {
                CREATED => $txn.open_table(ORDER_CREATED).map(|t| rows(&t)),
                ACCESS => $txn.open_table(ORDER_ACCESS).map(|t| rows(&t)),
                _ => $txn.open_table(ORDER_HITS).map(|t| rows(&t)),
            };
            let set = match found {
                Ok(set) => set?,
                Err(redb::TableError::TableDoesNotExist(_)) => BTreeSet::new(),
                Err(e) => return Err(table_error(e)),
            };
            out.push((bit, set));
        }
        out
    }};
}

fn storage(err: redb::StorageError) -> Error {
    engine_error("cannot read the store", err)
}

fn table_error(err: redb::TableError) -> Error {
    engine_error("cannot open a table", err)
}

fn scan_read(txn: ReadTransaction) -> Result<Scan, Error> {
    let mask = mask(&txn.open_table(INFO).map_err(table_error)?)?;
    let indexes = read_indexes!(txn, mask);
    let chunks = chunks::open_read(&txn).map_err(table_error)?;
    scan(
        &txn.open_table(RESULTS).map_err(table_error)?,
        &txn.open_table(ENTRIES).map_err(table_error)?,
        chunks.as_ref(),
        indexes,
        &txn.open_table(FUNCTIONS).map_err(table_error)?,
    )
}

/// The chunks of one large record, checked as the scan meets them (in key order).
struct ChunkRun {
    id: [u8; 16],
    manifest: Manifest,
    next: u32,
    sound: bool,
    check: RecordCheck,
}

impl ChunkRun {
    /// Whether the record's chunks are all there, of the right lengths, and pass its checks.
    fn finish(self) -> bool {
        self.sound && self.next == self.manifest.count && self.check.finish().is_ok()
    }
}

/// What the chunk rows say: which large records are sound, and which rows belong to none.
#[derive(Default)]
struct ChunkScan {
    sound: HashMap<[u8; 16], bool>,
    orphans: Vec<[u8; 20]>,
}

/// Checks every chunk row against the manifests.
fn scan_chunks(
    chunks: &impl ReadableTable<&'static [u8; 20], &'static [u8]>,
    manifests: &HashMap<[u8; 16], Manifest>,
) -> Result<ChunkScan, Error> {
    let mut sound = HashMap::new();
    let mut orphans = Vec::new();
    let mut run: Option<ChunkRun> = None;
    for row in chunks.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let key = *k.value();
        let (id, index) = split_key(&key);
        if run.as_ref().is_some_and(|r| r.id != id)
            && let Some(done) = run.take()
        {
            sound.insert(done.id, done.finish());
        }
        let Some(manifest) = manifests.get(&id) else {
            orphans.push(key);
            continue;
        };
        if index >= manifest.count {
            orphans.push(key);
            continue;
        }
        let r = run.get_or_insert_with(|| ChunkRun {
            id,
            manifest: *manifest,
            next: 0,
            sound: true,
            check: RecordCheck::new(),
        });
        let bytes = v.value();
        if index != r.next
            || bytes.len() as u64 != manifest.chunk_len_of(index)
            || (index == 0 && bytes.get(..8) != Some(&manifest.checksum[..]))
        {
            r.sound = false;
        }
        r.next = index + 1;
        if r.sound {
            r.check.feed(bytes);
        }
    }
    if let Some(done) = run {
        sound.insert(done.id, done.finish());
    }
    Ok(ChunkScan { sound, orphans })
}

/// Reads every row of the tables, and counts what is inconsistent.
fn scan(
    results: &impl ReadableTable<&'static [u8; 16], &'static [u8]>,
    entries: &impl ReadableTable<&'static [u8; 16], &'static [u8; 64]>,
    chunks: Option<&impl ReadableTable<&'static [u8; 20], &'static [u8]>>,
    indexes: Vec<(u8, BTreeSet<Vec<u8>>)>,
    functions: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Scan, Error> {
    let mut ids: HashMap<[u8; 16], Seen> = HashMap::new();
    let mut manifests = HashMap::new();
    for row in results.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let bytes = v.value();
        let seen = ids.entry(*k.value()).or_default();
        match Manifest::decode(bytes) {
            // A large record: checked with its chunks below.
            Some(m) => {
                seen.result = Some((m.len, false));
                manifests.insert(*k.value(), m);
            }
            None => seen.result = Some((bytes.len() as u64, record::parse(bytes).is_ok())),
        }
    }
    let ChunkScan {
        sound,
        orphans: orphan_chunks,
    } = match chunks {
        Some(table) => scan_chunks(table, &manifests)?,
        None => ChunkScan::default(),
    };
    for (id, ok) in sound {
        if let Some((_, sound)) = ids.get_mut(&id).and_then(|s| s.result.as_mut()) {
            *sound = ok;
        }
    }
    for row in entries.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        ids.entry(*k.value()).or_default().meta = Some(EntryMeta::decode(v.value()));
    }
    let mut function_rows = HashMap::new();
    for row in functions.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        function_rows.insert(k.value(), FunctionRecord::decode(v.value()));
    }

    let mut report = VerifyReport {
        entries_checked: ids.len() as u64,
        orphan_chunks: orphan_chunks.len() as u64,
        ..VerifyReport::default()
    };
    // What the function rows should count: every readable metadata row.
    let mut counted: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut expected: Vec<BTreeSet<Vec<u8>>> = vec![BTreeSet::new(); indexes.len()];
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
                for ((bit, _), keys) in indexes.iter().zip(expected.iter_mut()) {
                    keys.insert(index_key(*bit, id, &meta));
                }
                let c = counted.entry(meta.fn_key).or_default();
                c.0 += 1;
                c.1 += meta.size;
            }
            None => {}
        }
    }
    report.index_mismatches = indexes
        .iter()
        .zip(&expected)
        .map(|((_, found), want)| found.symmetric_difference(want).count() as u64)
        .sum();
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
        orphan_chunks,
        indexes,
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
    let mask = mask(&txn.open_table(INFO).map_err(table_error)?)?;
    let indexes = read_indexes!(txn, mask);
    let mut results = txn.open_table(RESULTS).map_err(table_error)?;
    let mut entries = txn.open_table(ENTRIES).map_err(table_error)?;
    let mut functions = txn.open_table(FUNCTIONS).map_err(table_error)?;
    let mut chunks = txn.open_table(CHUNKS).map_err(table_error)?;
    let scan = scan(&results, &entries, Some(&chunks), indexes, &functions)?;
    if scan.report.problems() == 0 {
        return Ok(scan.report);
    }
    for key in &scan.orphan_chunks {
        chunks.remove(key).map_err(storage)?;
    }

    // Entries to keep: a sound result with a readable metadata row.
    let mut kept: Vec<BTreeSet<Vec<u8>>> = vec![BTreeSet::new(); scan.indexes.len()];
    let mut counts: HashMap<u64, (u64, u64)> = HashMap::new();
    for (id, seen) in &scan.ids {
        match (seen.result, seen.meta) {
            (Some((len, true)), Some(Some(mut meta))) => {
                if meta.size != len {
                    meta.size = len;
                    entries.insert(id, &meta.encode()).map_err(storage)?;
                }
                for ((bit, _), keys) in scan.indexes.iter().zip(kept.iter_mut()) {
                    keys.insert(index_key(*bit, id, &meta));
                }
                let c = counts.entry(meta.fn_key).or_default();
                c.0 += 1;
                c.1 += len;
            }
            _ => {
                results.remove(id).map_err(storage)?;
                entries.remove(id).map_err(storage)?;
                remove_chunks(&mut chunks, id, 0)?;
            }
        }
    }
    for ((bit, found), want) in scan.indexes.iter().zip(&kept) {
        match *bit {
            CREATED => sync_index(
                &mut txn.open_table(ORDER_CREATED).map_err(table_error)?,
                found,
                want,
            )?,
            ACCESS => sync_index(
                &mut txn.open_table(ORDER_ACCESS).map_err(table_error)?,
                found,
                want,
            )?,
            _ => sync_index(
                &mut txn.open_table(ORDER_HITS).map_err(table_error)?,
                found,
                want,
            )?,
        }
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

/// Makes an order index hold exactly `want`.
fn sync_index<const N: usize>(
    table: &mut redb::Table<'_, &'static [u8; N], ()>,
    found: &BTreeSet<Vec<u8>>,
    want: &BTreeSet<Vec<u8>>,
) -> Result<(), Error> {
    for key in found.difference(want) {
        if let Ok(k) = <[u8; N]>::try_from(key.as_slice()) {
            table.remove(&k).map_err(storage)?;
        }
    }
    for key in want.difference(found) {
        if let Ok(k) = <[u8; N]>::try_from(key.as_slice()) {
            table.insert(&k, ()).map_err(storage)?;
        }
    }
    Ok(())
}
