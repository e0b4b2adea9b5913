//! Salvage ([`Store::salvage`]): copying every entry of a damaged store file that still passes
//! its own checks into a new store, with the metadata and statistics that can still be read.
//!
//! The damaged file is never written: each attempt works on a private copy of it, beside the new
//! store, removed at the end. Attempts, in order:
//!
//! 1. The engine's integrity check and repair (as [`OpenCheck::Full`](crate::OpenCheck) does):
//!    every page the tables reach has passed its checksum, so every row read is the one written.
//! 2. Without the engine's check (a fresh copy opened as [`OpenCheck::Trust`] does): pages are
//!    read unverified, so every row is taken as a claim. A record is copied only if it passes
//!    its own checksum (all its chunks, for a large one) and its metadata row, under the same
//!    id, agrees on its size: a damaged key cannot attach a sound record to another id. Tables
//!    are walked in key order, skipping rows that come out of order and jumping past pages the
//!    engine cannot read, and every engine call runs inside `catch_unwind`.
//!
//! A file shorter than its header says (truncated) is padded with zeros to that length in the
//! copy, so that the pages before the cut can still be read.
//!
//! The new store is built under a temporary name in its folder and linked into place only when
//! complete, as a new store is created (`open.rs`): a failed salvage leaves nothing at the path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};

use super::archive::identity_of;
use super::chunks::{self, Manifest};
use super::open::create_private_dir;
use super::schema::{
    ENTRIES, EntryMeta, FORMAT_KEY, FORMAT_VALUE, FUNCTIONS, FunctionRecord, INFO, MAX_VERSIONS,
    RESULTS,
};
use super::write::Tx;
use super::{Commit, Store};
use crate::error::{Error, ErrorKind, OpenError, OpenErrorKind};
use crate::id::Function;
use crate::record::{self, RecordCheck};

mod scan;

/// How [`Store::salvage`] read the damaged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SalvageMethod {
    /// The storage engine's integrity check passed, after its repair (which may roll the file
    /// back to its last sound commit): every row read is the one written.
    Checked,
    /// The engine's check failed, so the file was read without it, through the engine's
    /// trees and by scanning its pages for what they no longer reach: only records that pass
    /// their own checksum, under an id whose metadata row agrees on their size, were copied.
    Unchecked,
    /// The engine could not open the file at all: its pages were scanned, under the same rule
    /// as [`Unchecked`](SalvageMethod::Unchecked).
    Scanned,
}

/// What [`Store::salvage`] recovered from a damaged store, and what it lost.
///
/// ```
/// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-salvage-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = Store::open(dir.join("damaged.redb"))?;
/// let square = DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, store.clone());
/// square.call(9u64, |x| x * x)?;
/// drop((square, store));
///
/// let report = Store::salvage(dir.join("damaged.redb"), dir.join("salvaged.redb"))?;
/// assert_eq!((report.entries_recovered, report.entries_lost), (1, 0));
/// assert!(report.stats_recovered);
/// let salvaged = Store::open(dir.join("salvaged.redb"))?;
/// assert_eq!(salvaged.stats()?.entries, 1);
/// # drop(salvaged); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// How the damaged file was read.
    pub method: SalvageMethod,
    /// The file was shorter than its own header says (truncated); the copy read was padded
    /// with zeros to that length.
    pub truncated: bool,
    /// Entries copied into the new store, each with a record that passed its checksum.
    pub entries_recovered: u64,
    /// Of those, entries found by scanning the file's pages, out of the storage engine's reach
    /// (only when its check failed).
    pub entries_scanned: u64,
    /// Bytes of the records copied.
    pub record_bytes: u64,
    /// Entries of the damaged store not recovered: those its function rows count, less those
    /// recovered, when every function row was read; otherwise those whose id was found in one
    /// of its tables or pages, less those recovered. An estimate: entries on pages that could
    /// not be read at all leave no trace but the function rows' counts.
    pub entries_lost: u64,
    /// Entries recovered whose metadata row could not be read: recreated with the time of the
    /// salvage as their creation and last access, no hits, and the function
    /// `ckpt::salvage::unknown`. Only where the id is sure without it: the engine's check
    /// passed, or the record is in chunks (every chunk's key repeats the id, and the record's
    /// checksum runs across them).
    pub metadata_rebuilt: u64,
    /// Function rows copied with their identity and lifetime statistics.
    pub functions_recovered: u64,
    /// Functions with recovered entries whose row could not be read: recreated without a name
    /// or statistics (as [`Store::repair`] does; [`Store::export`] leaves their entries out).
    pub functions_rebuilt: u64,
    /// Every function row (identity and call statistics) was read.
    pub stats_recovered: bool,
    /// Size of the damaged file, in bytes.
    pub file_bytes: u64,
}

impl SalvageReport {
    /// The share of the damaged store's entries recovered (1.0 when it held none).
    pub fn recovered_share(&self) -> f64 {
        let total = self.entries_recovered + self.entries_lost;
        if total == 0 {
            1.0
        } else {
            self.entries_recovered as f64 / total as f64
        }
    }
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {} entries ({} bytes of records), lost {}",
            self.entries_recovered, self.record_bytes, self.entries_lost
        )?;
        f.write_str(match self.method {
            SalvageMethod::Checked => "; the file passed the storage engine's check",
            SalvageMethod::Unchecked => {
                "; the file failed the storage engine's check, so each record was checked alone"
            }
            SalvageMethod::Scanned => {
                "; the storage engine cannot open the file, so its pages were scanned and each \
                 record checked alone"
            }
        })?;
        if self.truncated {
            f.write_str("; the file was truncated")?;
        }
        if self.metadata_rebuilt > 0 {
            write!(f, "; {} metadata rows rebuilt", self.metadata_rebuilt)?;
        }
        if self.functions_rebuilt > 0 {
            write!(
                f,
                "; {} function rows rebuilt without names or statistics",
                self.functions_rebuilt
            )?;
        }
        if !self.stats_recovered {
            f.write_str("; some statistics were lost")?;
        }
        Ok(())
    }
}

/// Cache of the engine reading the damaged copy.
const SOURCE_CACHE: usize = 64 << 20;
/// How many times a table walk may jump past a page the engine cannot read.
const MAX_SKIPS: u32 = 512;

impl Store {
    /// Copies every entry of the store file `damaged` whose record still passes its checks into
    /// a new store at `new`, with its metadata and its functions' statistics where they can be
    /// read, and reports what was recovered and what was lost. For a file that opening refuses
    /// as corrupted, or that [`Store::repair`] cannot fix: salvage it, then use the new store
    /// in its place.
    ///
    /// `damaged` is only read, never written (the storage engine works on a private copy,
    /// beside `new`, removed at the end). No value is ever copied that was not saved under its
    /// id: see [`SalvageMethod`]. The new store is complete or absent: it is built under a
    /// temporary name and linked into place at the end.
    ///
    /// Example: see [`SalvageReport`].
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if `new` exists; [`ErrorKind::InvalidInput`] if `damaged`
    /// is missing, empty or a directory; [`ErrorKind::Open`] (an [`OpenError`] of kind
    /// [`OpenErrorKind::NotAStore`] as source) if it is not a ckpt store;
    /// [`ErrorKind::Corrupted`] if the storage engine cannot read it at all (nothing is
    /// recoverable); [`ErrorKind::Storage`] if the copy or the new store cannot be written.
    pub fn salvage(
        damaged: impl AsRef<Path>,
        new: impl AsRef<Path>,
    ) -> Result<SalvageReport, Error> {
        salvage(damaged.as_ref(), new.as_ref())
    }
}

fn salvage(damaged: &Path, new: &Path) -> Result<SalvageReport, Error> {
    let file_bytes = match fs::metadata(damaged) {
        Ok(m) if m.is_dir() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is a directory, not a store file", damaged.display()),
            ));
        }
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("no store file at {}", damaged.display()),
            ));
        }
        Err(e) => {
            return Err(Error::storage(
                format!("cannot read {}", damaged.display()),
                e,
            ));
        }
    };
    if file_bytes == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is empty: there is nothing to salvage",
                damaged.display()
            ),
        ));
    }
    if fs::symlink_metadata(new).is_ok() {
        return Err(exists(new));
    }
    let dir = match new.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)
        .map_err(|e| Error::storage(format!("cannot create {}", dir.display()), e))?;
    let copy = temporary(new, "source");
    let building = temporary(new, "salvage");
    let result = salvage_into(damaged, &copy, &building, file_bytes);
    let _ = fs::remove_file(&copy);
    let result = result.and_then(|report| {
        link_into_place(&building, new)?;
        Ok(report)
    });
    let _ = fs::remove_file(&building);
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    result
}

fn exists(new: &Path) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} exists; salvage into a new file (the salvaged store is created, never merged)",
            new.display()
        ),
    )
}

/// A name beside `target`, unique to this process and call.
fn temporary(target: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.{what}-{}-{n}.tmp", std::process::id()))
}

/// Puts the complete store at `new`, never over an existing file.
fn link_into_place(building: &Path, new: &Path) -> Result<(), Error> {
    match fs::hard_link(building, new) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists(new)),
        // No hard links on this file system: a rename, after a last look (a file created in
        // between would be replaced).
        Err(_) if fs::symlink_metadata(new).is_ok() => Err(exists(new)),
        Err(_) => fs::rename(building, new)
            .map_err(|e| Error::storage(format!("cannot create {}", new.display()), e)),
    }
}

/// A private copy of `damaged` at `copy`, extended with zeros to `pad` bytes if shorter.
fn make_copy(damaged: &Path, copy: &Path, pad: Option<u64>) -> Result<(), Error> {
    let _ = fs::remove_file(copy);
    let storage = |e| Error::storage(format!("cannot copy {}", damaged.display()), e);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(copy).map_err(storage)?;
    let mut input = File::open(damaged).map_err(storage)?;
    io::copy(&mut input, &mut out).map_err(storage)?;
    if let Some(len) = pad
        && out.metadata().map_err(storage)?.len() < len
    {
        out.set_len(len).map_err(storage)?;
    }
    Ok(())
}

/// How the engine opens the copy, in the order tried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// Checking every page's checksum, repairing what it can.
    Full,
    /// Trusting the file (its recorded allocator state, or a rebuild of it).
    Trust,
    /// Read only, as a reader beside other processes' writers: the engine then needs no
    /// allocator state at all, which a truncated file has usually lost (it is written last).
    Reader,
}

/// The engine's handle on the copy.
enum Source {
    Writable(Database),
    Reader(redb::ReadOnlyDatabase),
}

impl Source {
    fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        match self {
            Source::Writable(db) => db.begin_read(),
            Source::Reader(db) => db.begin_read(),
        }
    }
}

/// Opens the copy, containing any panic of the engine.
fn open_copy(copy: &Path, attempt: Attempt) -> Result<Source, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(SOURCE_CACHE)
            .set_check_integrity_on_open(attempt == Attempt::Full);
        match attempt {
            Attempt::Reader => builder
                .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
                .open_read_only(copy)
                .map(Source::Reader),
            _ => builder.open(copy).map(Source::Writable),
        }
        .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|p| {
        Err(format!(
            "the storage engine panicked: {}",
            super::engine::panic_message(&*p)
        ))
    })
}

/// The length the file's header gives it, from the engine's refusal of a truncated file.
fn truncated_to(message: &str) -> Option<u64> {
    // redb 4.5: "File truncated below stored layout: file_len=N, layout_len=M".
    let rest = message.split("layout_len=").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Closes the engine's handle on the damaged copy; its destructor can panic on a damaged file.
fn close(db: Source) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
}

fn salvage_into(
    damaged: &Path,
    copy: &Path,
    building: &Path,
    file_bytes: u64,
) -> Result<SalvageReport, Error> {
    let mut pad = None;
    let mut failures = Vec::new();
    for attempt in [Attempt::Full, Attempt::Trust, Attempt::Reader] {
        // A fresh copy for each attempt: a failed open may have changed the last one.
        make_copy(damaged, copy, pad)?;
        let mut opened = open_copy(copy, attempt);
        if let Err(message) = &opened
            && pad.is_none()
            && let Some(len) = truncated_to(message).filter(|&l| l > file_bytes)
        {
            pad = Some(len);
            make_copy(damaged, copy, pad)?;
            opened = open_copy(copy, attempt);
        }
        let db = match opened {
            Ok(db) => db,
            Err(message) => {
                failures.push(message);
                continue;
            }
        };
        let method = match attempt {
            Attempt::Full => SalvageMethod::Checked,
            _ => SalvageMethod::Unchecked,
        };
        let source = Reading {
            damaged,
            copy,
            method,
            file_bytes,
        };
        let harvested = harvest(Some(&db), &source, building);
        close(db);
        match harvested? {
            Some(mut report) => {
                report.truncated = pad.is_some();
                return Ok(report);
            }
            // The engine opened the file but could not begin reading it: try the next way.
            None => continue,
        }
    }
    // The engine cannot read the file at all: its pages, one by one.
    make_copy(damaged, copy, pad)?;
    let source = Reading {
        damaged,
        copy,
        method: SalvageMethod::Scanned,
        file_bytes,
    };
    if let Some(mut report) = harvest(None, &source, building)? {
        report.truncated = pad.is_some();
        return Ok(report);
    }
    Err(Error::new(
        ErrorKind::Corrupted,
        format!(
            "nothing can be salvaged from {}: the storage engine cannot read it ({}), and no \
             page of it holds an entry; delete it (checkpoints are recomputable) or restore it \
             from a backup",
            damaged.display(),
            failures.join("; ")
        ),
    ))
}

/// Runs an engine read, containing its panic: `None` when it failed or panicked.
fn contained<T, E>(f: impl FnOnce() -> Result<T, E>) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()?.ok()
}

/// What the damaged store's tables still say.
#[derive(Default)]
struct Found {
    /// Every id found in a table, with its metadata row if it decodes.
    ids: BTreeMap<[u8; 16], Option<EntryMeta>>,
    /// Function rows that decode (and, read unchecked, whose identity matches their key).
    functions: HashMap<u64, FunctionRecord>,
    /// Every function row was read and kept.
    all_functions: bool,
}

/// The damaged file as one attempt reads it.
struct Reading<'a> {
    damaged: &'a Path,
    /// The private copy the engine (or the scan) reads.
    copy: &'a Path,
    method: SalvageMethod,
    file_bytes: u64,
}

fn read_span(file: &mut File, span: scan::Span) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(span.at))?;
    let mut out = vec![0u8; span.len as usize];
    file.read_exact(&mut out)?;
    Ok(out)
}

/// Reads the damaged store (through the engine's handle `db`, then, unless the engine checked
/// the file, by scanning its pages) and writes what passes into a new store at `building`.
/// `Ok(None)` when there is nothing to read: the engine cannot begin a read, or (without it)
/// the scan finds no entry and no function.
fn harvest(
    db: Option<&Source>,
    source: &Reading<'_>,
    building: &Path,
) -> Result<Option<SalvageReport>, Error> {
    let txn = match db {
        Some(db) => match contained(|| db.begin_read()) {
            Some(txn) => Some(txn),
            None => return Ok(None),
        },
        None => None,
    };
    if let Some(txn) = &txn {
        check_format(txn, source.damaged, source.method)?;
    }
    let checked = source.method == SalvageMethod::Checked;
    let file_bytes = source.file_bytes;
    // No table holds more rows than the file has bytes for; a walk stops there (a damaged
    // file could otherwise lead it around in circles).
    let budget = file_bytes / 16 + 1024;
    let (results, entries, chunks) = match &txn {
        Some(txn) => (
            contained(|| txn.open_table(RESULTS)),
            contained(|| txn.open_table(ENTRIES)),
            contained(|| chunks::open_read(txn)).flatten(),
        ),
        None => (None, None, None),
    };
    let found = match &txn {
        Some(txn) => find(txn, &results, &entries, &chunks, checked, budget),
        None => Found::default(),
    };
    let storage = |e| Error::storage(format!("cannot read {}", source.copy.display()), e);
    let mut file = File::open(source.copy).map_err(storage)?;
    // Unchecked, the engine's trees may no longer reach every page that holds rows.
    let scanned = if checked {
        scan::Scanned::default()
    } else {
        scan::scan(&mut file, |key, r| {
            identity_of(key, r).is_some() && r.versions.len() <= MAX_VERSIONS
        })
        .map_err(storage)?
    };
    if txn.is_none()
        && scanned.records.is_empty()
        && scanned.manifests.is_empty()
        && scanned.functions.is_empty()
    {
        return Ok(None);
    }

    let target = Store::builder()
        .cache_size(SOURCE_CACHE)
        .open(building)
        .map_err(Error::from)?;
    let now = target.shared().now_ms();
    let mut report = SalvageReport {
        method: source.method,
        truncated: false,
        entries_recovered: 0,
        entries_scanned: 0,
        record_bytes: 0,
        entries_lost: 0,
        metadata_rebuilt: 0,
        functions_recovered: 0,
        functions_rebuilt: 0,
        stats_recovered: found.all_functions,
        file_bytes,
    };
    let unknown = Function::new("ckpt::salvage", "unknown");
    let rebuilt = |size: u64, compute_nanos: u64| EntryMeta {
        fn_key: unknown.key(),
        code_version: unknown.code_version(),
        created_ms: now,
        last_access_ms: now,
        hits: 0,
        size,
        compute_nanos,
    };
    let mut functions = found.functions.clone();
    for (key, row) in &scanned.functions {
        functions.entry(*key).or_insert_with(|| row.clone());
    }
    report.functions_recovered = functions.len() as u64;
    let used = target.shared().write(Commit::Durably, |tx| {
        for (key, row) in &functions {
            tx.put_salvaged_function(*key, row)?;
        }
        let mut used = HashSet::new();
        let mut recovered = HashSet::new();
        for (id, meta) in &found.ids {
            let Some(row) = contained(|| {
                let table = results.as_ref().ok_or(())?;
                let got = table.get(id).map_err(|_| ())?;
                Ok::<_, ()>(got.map(|g| g.value().to_vec()))
            })
            .flatten() else {
                continue;
            };
            let manifest = Manifest::decode(&row);
            let sound = match manifest {
                Some(m) if m.len <= file_bytes => {
                    copy_chunks(tx, chunks.as_ref(), id, &m)?.map(|compute| (m.len, compute))
                }
                Some(_) => None,
                None => record::parse(&row)
                    .ok()
                    .map(|(h, _)| (row.len() as u64, h.compute_nanos)),
            };
            let Some((size, compute_nanos)) = sound else {
                continue;
            };
            let meta = match meta {
                // Unchecked, the row's key may be damaged: its metadata row, a separate row
                // under the same id, must agree on the record's size.
                Some(m) if m.size == size || checked => EntryMeta { size, ..*m },
                // A chunked record's id is sure without it: every chunk's key repeats it, and
                // the record's checksum runs across them.
                _ if checked || manifest.is_some() => {
                    report.metadata_rebuilt += 1;
                    rebuilt(size, compute_nanos)
                }
                _ => {
                    if manifest.is_some() {
                        tx.drop_salvaged_chunks(id)?;
                    }
                    continue;
                }
            };
            tx.put_salvaged(id, &row, &meta)?;
            used.insert(meta.fn_key);
            recovered.insert(*id);
            report.entries_recovered += 1;
            report.record_bytes += size;
        }
        // What only the scan found, under the same rule: a sound record (or chunks), and a
        // metadata row of the same id that agrees on its size.
        let mut scanned_ids: Vec<[u8; 16]> = scanned
            .records
            .keys()
            .chain(scanned.manifests.keys())
            .filter(|id| !recovered.contains(*id))
            .copied()
            .collect();
        scanned_ids.sort_unstable();
        scanned_ids.dedup();
        for id in scanned_ids {
            let metas: Vec<EntryMeta> = scanned
                .metas
                .get(&id)
                .into_iter()
                .flatten()
                .copied()
                .chain(found.ids.get(&id).copied().flatten())
                .collect();
            let agreeing = |size: u64| metas.iter().find(|m| m.size == size).copied();
            let mut saved = None;
            for span in scanned.records.get(&id).into_iter().flatten() {
                let bytes = read_span(&mut file, *span).map_err(storage)?;
                if record::parse(&bytes).is_ok()
                    && let Some(meta) = agreeing(bytes.len() as u64)
                {
                    tx.put_salvaged(&id, &bytes, &meta)?;
                    saved = Some(meta);
                    break;
                }
            }
            if saved.is_none() {
                for m in scanned.manifests.get(&id).into_iter().flatten() {
                    if m.len > file_bytes {
                        continue;
                    }
                    if let Some(compute) =
                        copy_scanned_chunks(tx, &mut file, &scanned, &id, m).map_err(storage)??
                    {
                        let meta = agreeing(m.len).unwrap_or_else(|| {
                            report.metadata_rebuilt += 1;
                            rebuilt(m.len, compute)
                        });
                        tx.put_salvaged(&id, &m.encode(), &meta)?;
                        saved = Some(meta);
                        break;
                    }
                }
            }
            if let Some(meta) = saved {
                used.insert(meta.fn_key);
                recovered.insert(id);
                report.entries_recovered += 1;
                report.entries_scanned += 1;
                report.record_bytes += meta.size;
            }
        }
        // Chunks whose manifest was lost: the record is their run from chunk 0, as long as it
        // passes its checksum.
        let mut orphans: Vec<[u8; 16]> = scanned
            .chunks
            .keys()
            .filter(|k| k[16..] == [0; 4])
            .map(|k| chunks::split_key(k).0)
            .filter(|id| !recovered.contains(id))
            .collect();
        orphans.sort_unstable();
        for id in orphans {
            let Some(m) = rejoin(&mut file, &scanned, &id, file_bytes).map_err(storage)? else {
                continue;
            };
            if let Some(compute) =
                copy_scanned_chunks(tx, &mut file, &scanned, &id, &m).map_err(storage)??
            {
                let meta = scanned
                    .metas
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .chain(found.ids.get(&id).into_iter().flatten())
                    .find(|meta| meta.size == m.len)
                    .copied()
                    .unwrap_or_else(|| {
                        report.metadata_rebuilt += 1;
                        rebuilt(m.len, compute)
                    });
                tx.put_salvaged(&id, &m.encode(), &meta)?;
                used.insert(meta.fn_key);
                report.entries_recovered += 1;
                report.entries_scanned += 1;
                report.record_bytes += meta.size;
            }
        }
        if report.metadata_rebuilt > 0 && !functions.contains_key(&unknown.key()) {
            let mut row = FunctionRecord::default();
            row.saw(&unknown, now);
            tx.put_salvaged_function(unknown.key(), &row)?;
        }
        Ok(used)
    })?;
    target.close()?;
    report.functions_rebuilt = used
        .iter()
        .filter(|k| !functions.contains_key(k) && **k != unknown.key())
        .count() as u64;
    // Freed pages hold old rows too, so the scan's ids only count when the function rows,
    // which the engine read, cannot.
    let expected = if found.all_functions {
        found.functions.values().map(|r| r.entries).sum::<u64>()
    } else {
        let mut seen: HashSet<[u8; 16]> = found.ids.keys().copied().collect();
        seen.extend(scanned.records.keys().chain(scanned.manifests.keys()));
        seen.extend(
            scanned
                .chunks
                .keys()
                .filter(|k| k[16..] == [0; 4])
                .map(|k| chunks::split_key(k).0),
        );
        seen.len() as u64
    };
    report.entries_lost = expected.saturating_sub(report.entries_recovered);
    Ok(Some(report))
}

/// Copies the chunks of a large record that the scan found into the new store, checking them
/// as it goes: the record's compute time if it is sound (its chunks are then written), else
/// `None`, having removed what it wrote.
fn copy_scanned_chunks(
    tx: &mut Tx<'_>,
    file: &mut File,
    scanned: &scan::Scanned,
    id: &[u8; 16],
    manifest: &Manifest,
) -> io::Result<Result<Option<u64>, Error>> {
    let mut check = RecordCheck::new();
    let mut sound = true;
    for index in 0..manifest.count {
        let want = manifest.chunk_len_of(index);
        let mut chunk = None;
        for span in scanned
            .chunks
            .get(&chunks::chunk_key(id, index))
            .into_iter()
            .flatten()
            .filter(|s| u64::from(s.len) == want)
        {
            let bytes = read_span(file, *span)?;
            if index > 0 || bytes.get(..8) == Some(&manifest.checksum[..]) {
                chunk = Some(bytes);
                break;
            }
        }
        let Some(chunk) = chunk else {
            sound = false;
            break;
        };
        check.feed(&chunk);
        if let Err(e) = tx.put_salvaged_chunk(id, index, &chunk) {
            return Ok(Err(e));
        }
    }
    if sound
        && check.len() == manifest.len
        && let Ok(header) = check.finish()
    {
        return Ok(Ok(Some(header.compute_nanos)));
    }
    Ok(tx.drop_salvaged_chunks(id).map(|()| None))
}

/// The manifest of the longest run of scanned chunks of `id`, from chunk 0, that passes the
/// record's checksum (the first chunk's length is the chunk length; only the last may be
/// shorter).
fn rejoin(
    file: &mut File,
    scanned: &scan::Scanned,
    id: &[u8; 16],
    file_bytes: u64,
) -> io::Result<Option<Manifest>> {
    let candidate = |index: u32, len: Option<u64>| {
        scanned
            .chunks
            .get(&chunks::chunk_key(id, index))
            .into_iter()
            .flatten()
            .find(|s| len.is_none_or(|l| u64::from(s.len) == l))
            .copied()
    };
    let Some(first) = candidate(0, None) else {
        return Ok(None);
    };
    let chunk_len = first.len;
    if !(chunks::MIN_CHUNK..=chunks::MAX_CHUNK).contains(&chunk_len) {
        return Ok(None);
    }
    let head = read_span(file, first)?;
    let mut check = RecordCheck::new();
    check.feed(&head);
    let mut best = None;
    let mut index = 1u32;
    let mut total = u64::from(chunk_len);
    while total < file_bytes {
        // The next chunk: full, or a shorter last one.
        let next = candidate(index, Some(u64::from(chunk_len))).or_else(|| {
            scanned
                .chunks
                .get(&chunks::chunk_key(id, index))
                .into_iter()
                .flatten()
                .find(|s| s.len < chunk_len)
                .copied()
        });
        let Some(span) = next else { break };
        check.feed(&read_span(file, span)?);
        total += u64::from(span.len);
        index += 1;
        if check.finish().is_ok() {
            let mut checksum = [0u8; 8];
            checksum.copy_from_slice(&head[..8]);
            best = Some(Manifest {
                checksum,
                len: total,
                count: index,
                chunk_len,
            });
        }
        if span.len < chunk_len {
            break;
        }
    }
    // Well-formed, as any manifest the store reads.
    Ok(best.filter(|m| Manifest::decode(&m.encode()) == Some(*m)))
}

/// Refuses a file that says it is not a ckpt store. Read unchecked, an unreadable info table is
/// damage, not a sign of another format: the entry tables are tried anyway.
fn check_format(txn: &ReadTransaction, damaged: &Path, method: SalvageMethod) -> Result<(), Error> {
    let not_a_store = |why: &str| {
        Error::from(OpenError::with_source(
            damaged,
            OpenErrorKind::NotAStore,
            why.to_string(),
        ))
    };
    let info = catch_unwind(AssertUnwindSafe(|| txn.open_table(INFO)));
    let format = match info {
        Ok(Ok(info)) => contained(|| info.get(FORMAT_KEY).map(|g| g.map(|g| g.value().to_vec()))),
        Ok(Err(redb::TableError::TableDoesNotExist(_))) => {
            return Err(not_a_store("a redb database without ckpt's tables"));
        }
        _ => None,
    };
    match format {
        Some(Some(f)) if f == FORMAT_VALUE => Ok(()),
        Some(_) if method == SalvageMethod::Checked => {
            Err(not_a_store("its info table does not name the ckpt format"))
        }
        _ => Ok(()),
    }
}

type ResultsTable = ReadOnlyTable<&'static [u8; 16], &'static [u8]>;
type EntriesTable = ReadOnlyTable<&'static [u8; 16], &'static [u8; 64]>;

/// Collects ids, metadata and function rows from every table that can be read.
fn find(
    txn: &ReadTransaction,
    results: &Option<ResultsTable>,
    entries: &Option<EntriesTable>,
    chunks: &Option<chunks::ChunksRead>,
    checked: bool,
    budget: u64,
) -> Found {
    let mut ids: BTreeMap<[u8; 16], Option<EntryMeta>> = BTreeMap::new();
    if let Some(table) = entries {
        walk(table, budget, |id, row| {
            ids.insert(id, EntryMeta::decode(row));
        });
    }
    if let Some(table) = results {
        walk(table, budget, |id, _| {
            ids.entry(id).or_insert(None);
        });
    }
    if let Some(table) = chunks {
        walk(table, budget, |key, _| {
            ids.entry(chunks::split_key(&key).0).or_insert(None);
        });
    }
    // A metadata row on a page the walk jumped past may still be found by its id.
    if let Some(table) = entries {
        for (id, meta) in ids.iter_mut().filter(|(_, m)| m.is_none()) {
            *meta = contained(|| {
                table
                    .get(id)
                    .map(|g| g.and_then(|g| EntryMeta::decode(g.value())))
            })
            .flatten();
        }
    }

    let mut functions = HashMap::new();
    let mut all_functions = false;
    let rows = contained(|| {
        let table = txn.open_table(FUNCTIONS)?;
        let mut rows = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            rows.push((k.value(), v.value().to_vec()));
            if rows.len() as u64 > budget {
                break;
            }
        }
        Ok::<_, redb::Error>(rows)
    });
    if let Some(rows) = rows {
        all_functions = true;
        for (key, bytes) in rows {
            let row = FunctionRecord::decode(&bytes).filter(|r| {
                // Unchecked, a row whose name does not give its key may be damaged anywhere.
                checked || (identity_of(key, r).is_some() && r.versions.len() <= MAX_VERSIONS)
            });
            match row {
                Some(r) => {
                    functions.insert(key, r);
                }
                None => all_functions = false,
            }
        }
    }
    Found {
        ids,
        functions,
        all_functions,
    }
}

/// Copies the chunks of a large record into the new store as it checks them, one at a time;
/// returns the record's compute time if it is sound (its chunks are then written), else removes
/// what it wrote.
fn copy_chunks(
    tx: &mut Tx<'_>,
    table: Option<&chunks::ChunksRead>,
    id: &[u8; 16],
    manifest: &Manifest,
) -> Result<Option<u64>, Error> {
    let Some(table) = table else {
        return Ok(None);
    };
    let mut check = RecordCheck::new();
    let mut sound = true;
    for index in 0..manifest.count {
        let chunk = contained(|| {
            table
                .get(&chunks::chunk_key(id, index))
                .map(|g| g.map(|g| g.value().to_vec()))
        })
        .flatten();
        let Some(chunk) = chunk.filter(|c| {
            c.len() as u64 == manifest.chunk_len_of(index)
                && (index > 0 || c.get(..8) == Some(&manifest.checksum[..]))
        }) else {
            sound = false;
            break;
        };
        check.feed(&chunk);
        tx.put_salvaged_chunk(id, index, &chunk)?;
    }
    let header = if sound && check.len() == manifest.len {
        check.finish().ok()
    } else {
        None
    };
    match header {
        Some(h) => Ok(Some(h.compute_nanos)),
        None => {
            tx.drop_salvaged_chunks(id)?;
            Ok(None)
        }
    }
}

/// Adds `2^bits` to a big-endian key; `None` past the end of the key space.
fn advance<const N: usize>(key: [u8; N], bits: usize) -> Option<[u8; N]> {
    let mut out = key;
    let mut i = N.checked_sub(1 + bits / 8)?;
    let mut carry = 1u16 << (bits % 8);
    loop {
        let sum = u16::from(out[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
        if carry == 0 {
            return Some(out);
        }
        i = i.checked_sub(1)?;
    }
}

/// Visits the rows of a table keyed by byte arrays, in key order, as far as they can be read:
/// rows out of order (a damaged key, or a damaged page leading the walk back) are skipped, and
/// where the engine fails or panics the walk starts again a little further on, jumping further
/// each time it fails again without progress. At most `budget` rows are read.
fn walk<const N: usize, V: redb::Value + 'static>(
    table: &ReadOnlyTable<&'static [u8; N], V>,
    budget: u64,
    mut visit: impl FnMut([u8; N], V::SelfType<'_>),
) {
    let mut from = [0u8; N];
    let mut last: Option<[u8; N]> = None;
    let mut rows = 0u64;
    let mut skips = 0;
    // The first jump: 1/2^24 of the key space, about a leaf's worth in a store of 10^6 rows.
    let small = (8 * N).saturating_sub(24);
    let mut jump = small;
    loop {
        let mut progressed = false;
        let ended = catch_unwind(AssertUnwindSafe(|| {
            let Ok(range) = table.range::<&[u8; N]>(&from..) else {
                return false;
            };
            for row in range {
                let Ok((k, v)) = row else {
                    return false;
                };
                rows += 1;
                if rows > budget {
                    return true;
                }
                let key = *k.value();
                if last.is_some_and(|l| key <= l) {
                    continue;
                }
                last = Some(key);
                progressed = true;
                visit(key, v.value());
            }
            true
        }));
        if ended.unwrap_or(false) {
            return;
        }
        skips += 1;
        if skips > MAX_SKIPS {
            return;
        }
        jump = if progressed {
            small
        } else {
            (jump + 2).min(8 * N - 1)
        };
        let base = last.map_or(from, |l| l.max(from));
        match advance(base, jump) {
            Some(next) => from = next,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_advance_by_powers_of_two() {
        assert_eq!(advance([0u8; 4], 0), Some([0, 0, 0, 1]));
        assert_eq!(advance([0, 0, 0, 0xff], 0), Some([0, 0, 1, 0]));
        assert_eq!(advance([0u8; 4], 9), Some([0, 0, 2, 0]));
        assert_eq!(advance([0u8; 4], 31), Some([0x80, 0, 0, 0]));
        assert_eq!(advance([0xff; 4], 0), None);
        assert_eq!(advance([0u8; 4], 32), None);
    }

    #[test]
    fn truncation_messages_give_the_stored_length() {
        assert_eq!(
            truncated_to("File truncated below stored layout: file_len=10, layout_len=4096"),
            Some(4096)
        );
        assert_eq!(truncated_to("something else"), None);
    }
}
