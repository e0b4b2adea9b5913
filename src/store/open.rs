//! Opening a store file: creating it atomically, checking it is a ckpt store of a schema this
//! build reads, and turning the engine's errors into [`OpenError`]s that say what to do.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, StorageBackend, StorageError,
    TableError,
};

use super::engine::Db;
use super::options::{AccessMode, ConcurrencyMode, OpenCheck};
use super::overlay::Overlay;
use super::schema::{
    CHUNKS, ENTRIES, FORMAT_KEY, FORMAT_VALUE, FUNCTIONS, INDEXES_KEY, INFO, RESULTS, SCHEMA_KEY,
    SCHEMA_VERSION, indexes,
};
use crate::error::{OpenError, OpenErrorKind};

/// Engine settings an open passes through.
#[derive(Debug, Clone)]
pub(crate) struct EngineOptions {
    pub cache_bytes: usize,
    pub concurrency: ConcurrencyMode,
    /// Check the integrity of the whole file on open (see `StoreBuilder::open_check`).
    pub check: OpenCheck,
    pub access: AccessMode,
}

/// Opens the store at `path`: creating it if missing (unless read-only), and, for an existing
/// file, deciding it is a ckpt store before anything writes to it.
pub(crate) fn open(path: &Path, engine: &EngineOptions) -> Result<Db, OpenError> {
    open_file(path, engine).map_err(|e| {
        if *e.kind() == OpenErrorKind::AlreadyOpen && registry::holds(path) {
            OpenError::new(path, OpenErrorKind::OpenInThisProcess)
        } else {
            e
        }
    })
}

fn open_file(path: &Path, engine: &EngineOptions) -> Result<Db, OpenError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(OpenError::new(path, OpenErrorKind::IsADirectory)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && engine.access == AccessMode::ReadWrite => {
            create(path, engine)?;
        }
        Err(e) => return Err(OpenError::from_io(path, e)),
    }
    let len = fs::metadata(path)
        .map_err(|e| OpenError::from_io(path, e))?
        .len();
    if len == 0 {
        // ckpt never leaves an empty file behind (it creates stores by renaming a complete one
        // into place), so this one is somebody else's.
        return Err(OpenError::with_source(
            path,
            OpenErrorKind::NotAStore,
            "the file is empty",
        ));
    }
    if engine.access == AccessMode::ReadOnly {
        return match open_read_only(path, engine) {
            // Not a store's file at all is the better answer, when it is not.
            Err(e) if *e.kind() == OpenErrorKind::NeedsRecovery => {
                probe_in_memory(path, engine)?;
                Err(e)
            }
            opened => opened.map(Db::ReadOnly),
        };
    }
    // A writable open writes (the engine marks the file open, and recovers or repairs it), so it
    // comes only after the file has shown it is a ckpt store this build reads.
    probe(path, engine)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| OpenError::from_io(path, e))?;
    let backend = FileBackend::new(file).map_err(|e| from_database_error(path, e))?;
    contained(path, || {
        let db = engine_open(path, backend, engine, engine.check)?;
        check_schema(path, &db)?;
        Ok(Db::Writable(db))
    })
}

/// Decides, without writing to the file, whether it is a ckpt store of a schema this build
/// reads. The engine's read-only open decides for a file closed cleanly; one it cannot read that
/// way (it needs recovery after an unclean shutdown, or its structure needs repair) is opened
/// writable over an [`Overlay`] that keeps the engine's writes in memory, so that its tables are
/// read after a recovery or repair that leaves the file as it was.
fn probe(path: &Path, engine: &EngineOptions) -> Result<(), OpenError> {
    match open_read_only(path, engine) {
        Ok(db) => {
            drop(db);
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                OpenErrorKind::NeedsRecovery | OpenErrorKind::Corrupted
            ) =>
        {
            probe_in_memory(path, engine)
        }
        Err(e) => Err(e),
    }
}

/// Checks the schema of the file at `path` after the engine recovered or repaired it in memory
/// (over an [`Overlay`]), leaving the file as it was.
fn probe_in_memory(path: &Path, engine: &EngineOptions) -> Result<(), OpenError> {
    let file = File::open(path).map_err(|e| OpenError::from_io(path, e))?;
    let overlay = Overlay::new(file).map_err(|e| OpenError::from_io(path, e))?;
    // Nobody else sees the overlay: the exclusive mode, which takes no file locks.
    let alone = EngineOptions {
        concurrency: ConcurrencyMode::SingleProcess,
        ..engine.clone()
    };
    contained(path, || {
        let db = engine_open(path, overlay, &alone, engine.check)?;
        check_schema(path, &db)
    })
}

/// A writable handle on the file at `path` whose writes stay in memory (see `overlay.rs`), for
/// running the engine's integrity check of a read-only store. Nobody else sees it: the
/// exclusive mode, which takes no file locks, and no check on open (the caller runs it).
pub(crate) fn in_memory_writes(path: &Path) -> Result<Database, OpenError> {
    let file = File::open(path).map_err(|e| OpenError::from_io(path, e))?;
    let overlay = Overlay::new(file).map_err(|e| OpenError::from_io(path, e))?;
    let engine = EngineOptions {
        cache_bytes: OVERLAY_CACHE,
        concurrency: ConcurrencyMode::SingleProcess,
        check: OpenCheck::Trust,
        access: AccessMode::ReadWrite,
    };
    contained(path, || {
        engine_open(path, overlay, &engine, OpenCheck::Trust)
    })
}

/// The page cache of a handle over an overlay: a check reads every page once.
const OVERLAY_CACHE: usize = 16 << 20;

/// Opens the store at `path` read-only: the engine opens it through a read-only file handle and
/// writes nothing; a file that needs recovery is refused with `NeedsRecovery`.
fn open_read_only(path: &Path, engine: &EngineOptions) -> Result<ReadOnlyDatabase, OpenError> {
    let file = File::open(path).map_err(|e| OpenError::from_io(path, e))?;
    let backend = FileBackend::new(file).map_err(|e| from_database_error(path, e))?;
    read_only_engine(path, backend, engine)
}

/// The engine's read-only open of `backend`, and the schema check.
fn read_only_engine(
    path: &Path,
    backend: impl StorageBackend,
    engine: &EngineOptions,
) -> Result<ReadOnlyDatabase, OpenError> {
    contained(path, || {
        let db = redb::Builder::new()
            .set_cache_size(engine.cache_bytes)
            .set_concurrency_mode(redb_mode(engine.concurrency))
            .open_read_only_with_backend(backend)
            .map_err(|e| match e {
                // The engine reports a file without its saved allocator state (not closed
                // cleanly) this way: it would have to rebuild it, which writes.
                DatabaseError::RepairAborted => {
                    OpenError::with_source(path, OpenErrorKind::NeedsRecovery, e)
                }
                other => from_database_error(path, other),
            })?;
        check_schema(path, &db)?;
        Ok(db)
    })
}

/// Runs an open, containing any panic of the engine (a hostile file can make one) as a typed
/// error.
fn contained<T>(path: &Path, open: impl FnOnce() -> Result<T, OpenError>) -> Result<T, OpenError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|payload| {
        Err(OpenError::with_source(
            path,
            OpenErrorKind::Corrupted,
            format!(
                "the storage engine panicked reading it: {}",
                super::engine::panic_message(&*payload)
            ),
        ))
    })
}

/// Opens the database in `backend` and checks it is a ckpt store, containing any panic of the
/// engine.
#[cfg(feature = "fault-injection")]
fn open_checked(
    path: &Path,
    backend: impl StorageBackend,
    engine: &EngineOptions,
) -> Result<Database, OpenError> {
    contained(path, || {
        let db = engine_open(path, backend, engine, engine.check)?;
        check_schema(path, &db)?;
        Ok(db)
    })
}

fn redb_mode(mode: ConcurrencyMode) -> redb::ConcurrencyMode {
    match mode {
        ConcurrencyMode::MultiProcess => redb::ConcurrencyMode::MultiWriter,
        _ => redb::ConcurrencyMode::ExclusiveWriter,
    }
}

/// Opens (initializing an empty backend as a new store) the store in a custom backend.
#[cfg(feature = "fault-injection")]
pub(crate) fn open_backend(
    label: &Path,
    backend: impl StorageBackend,
    engine: &EngineOptions,
) -> Result<Db, OpenError> {
    let len = backend.len().map_err(|e| OpenError::from_io(label, e))?;
    if engine.access == AccessMode::ReadOnly {
        if len == 0 {
            return Err(OpenError::with_source(
                label,
                OpenErrorKind::NotAStore,
                "the backend is empty",
            ));
        }
        return read_only_engine(label, backend, engine).map(Db::ReadOnly);
    }
    if len == 0 {
        let db = engine_open(label, backend, engine, OpenCheck::Trust)?;
        init_tables(&db).map_err(|e| OpenError::with_source(label, OpenErrorKind::Io, e))?;
        return Ok(Db::Writable(db));
    }
    open_checked(label, backend, engine).map(Db::Writable)
}

fn engine_open(
    path: &Path,
    backend: impl StorageBackend,
    engine: &EngineOptions,
    check: OpenCheck,
) -> Result<Database, OpenError> {
    redb::Builder::new()
        .set_cache_size(engine.cache_bytes)
        .set_concurrency_mode(redb_mode(engine.concurrency))
        .set_check_integrity_on_open(check == OpenCheck::Full)
        .create_with_backend(backend)
        .map_err(|e| from_database_error(path, e))
}

/// Creates a complete, empty store at `path` without ever exposing a partial file there: the
/// store is built under a temporary name in the same folder and linked into place.
fn create(path: &Path, engine: &EngineOptions) -> Result<(), OpenError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(|e| OpenError::from_io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.{}-{nonce}.tmp", std::process::id()));
    let result = build_empty(&tmp, engine).and_then(|()| {
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            // No hard links on this file system: a rename is atomic too, but may replace a
            // store created meanwhile by another process, which holds no results yet.
            Err(_) => fs::rename(&tmp, path),
        }
        .map_err(|e| OpenError::from_io(path, e))
    });
    let _ = fs::remove_file(&tmp);
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    result
}

fn build_empty(tmp: &Path, engine: &EngineOptions) -> Result<(), OpenError> {
    let file = private_file(tmp).map_err(|e| OpenError::from_io(tmp, e))?;
    let backend = FileBackend::new(file).map_err(|e| from_database_error(tmp, e))?;
    // Nobody else can know the temporary name: build it in the exclusive mode, unchecked (it is
    // empty).
    let exclusive = EngineOptions {
        concurrency: ConcurrencyMode::SingleProcess,
        ..engine.clone()
    };
    let db = engine_open(tmp, backend, &exclusive, OpenCheck::Trust)?;
    init_tables(&db).map_err(|e| OpenError::with_source(tmp, OpenErrorKind::Io, e))?;
    db.close()
        .map_err(|e| OpenError::with_source(tmp, OpenErrorKind::Io, e))
}

/// Writes the tables of an empty store into a new database.
fn init_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut info = txn.open_table(INFO)?;
        info.insert(FORMAT_KEY, FORMAT_VALUE)?;
        info.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes()[..])?;
        txn.open_table(RESULTS)?;
        txn.open_table(ENTRIES)?;
        txn.open_table(FUNCTIONS)?;
        txn.open_table(CHUNKS)?;
    }
    txn.commit()?;
    Ok(())
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

/// Creates `dir` and its missing parents, readable by the owner only (on Unix).
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn check_schema(path: &Path, db: &impl ReadableDatabase) -> Result<(), OpenError> {
    let not_a_store =
        |why: &str| OpenError::with_source(path, OpenErrorKind::NotAStore, why.to_string());
    let txn = db
        .begin_read()
        .map_err(|e| from_engine_error(path, e.into()))?;
    let info = match txn.open_table(INFO) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => {
            return Err(not_a_store("a redb database without ckpt's tables"));
        }
        Err(TableError::Storage(e)) => return Err(from_storage_error(path, e)),
        Err(e) => return Err(OpenError::with_source(path, OpenErrorKind::NotAStore, e)),
    };
    let read = |key: &str| -> Result<Option<Vec<u8>>, OpenError> {
        info.get(key)
            .map(|v| v.map(|g| g.value().to_vec()))
            .map_err(|e| from_storage_error(path, e))
    };
    if read(FORMAT_KEY)?.as_deref() != Some(FORMAT_VALUE) {
        return Err(not_a_store("its info table does not name the ckpt format"));
    }
    let schema = read(SCHEMA_KEY)?
        .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| {
            OpenError::with_source(path, OpenErrorKind::Corrupted, "no schema version")
        })?;
    if schema > SCHEMA_VERSION {
        return Err(OpenError::new(
            path,
            OpenErrorKind::NewerSchema {
                found: schema,
                supported: SCHEMA_VERSION,
            },
        ));
    }
    if schema < 1 {
        return Err(OpenError::with_source(
            path,
            OpenErrorKind::Corrupted,
            "schema version 0",
        ));
    }
    let missing = |name: &str, e: TableError| match e {
        TableError::Storage(s) => from_storage_error(path, s),
        _ => OpenError::with_source(path, OpenErrorKind::Corrupted, format!("table {name}: {e}")),
    };
    txn.open_table(RESULTS).map_err(|e| missing("results", e))?;
    txn.open_table(ENTRIES).map_err(|e| missing("entries", e))?;
    txn.open_table(FUNCTIONS)
        .map_err(|e| missing("functions", e))?;
    Ok(())
}

/// The order indexes the file maintains (see `schema::indexes`).
pub(crate) fn read_indexes(path: &Path, db: &Db) -> Result<u8, OpenError> {
    let txn = db
        .begin_read()
        .map_err(|e| from_engine_error(path, e.into()))?;
    let info = txn
        .open_table(INFO)
        .map_err(|e| from_engine_error(path, e.into()))?;
    let mask = info
        .get(INDEXES_KEY)
        .map_err(|e| from_storage_error(path, e))?
        .and_then(|g| g.value().first().copied())
        .unwrap_or(0);
    if mask & !indexes::ALL != 0 {
        return Err(OpenError::with_source(
            path,
            OpenErrorKind::Corrupted,
            "unknown order indexes recorded",
        ));
    }
    Ok(mask)
}

fn from_database_error(path: &Path, e: DatabaseError) -> OpenError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::with_source(path, OpenErrorKind::AlreadyOpen, e)
        }
        DatabaseError::Storage(s) => from_storage_error(path, s),
        DatabaseError::UpgradeRequired(_) => {
            OpenError::with_source(path, OpenErrorKind::NotAStore, e)
        }
        DatabaseError::RepairAborted => OpenError::with_source(path, OpenErrorKind::Corrupted, e),
        other => OpenError::with_source(path, OpenErrorKind::Io, other),
    }
}

fn from_engine_error(path: &Path, e: redb::Error) -> OpenError {
    match e {
        redb::Error::Corrupted(_) => OpenError::with_source(path, OpenErrorKind::Corrupted, e),
        redb::Error::Io(io) => io_open_error(path, io),
        other => OpenError::with_source(path, OpenErrorKind::Io, other),
    }
}

fn from_storage_error(path: &Path, e: StorageError) -> OpenError {
    match e {
        StorageError::Corrupted(ref msg) if msg.contains("magic") => {
            OpenError::with_source(path, OpenErrorKind::NotAStore, "not a redb file")
        }
        StorageError::Corrupted(_) => OpenError::with_source(path, OpenErrorKind::Corrupted, e),
        StorageError::Io(io) => io_open_error(path, io),
        other => OpenError::with_source(path, OpenErrorKind::Io, other),
    }
}

fn io_open_error(path: &Path, io: io::Error) -> OpenError {
    if io.kind() == io::ErrorKind::InvalidData {
        // redb 4.5 reports a file without its magic number as invalid data.
        OpenError::with_source(path, OpenErrorKind::NotAStore, io)
    } else if io.kind() == io::ErrorKind::UnexpectedEof {
        // A file shorter than its own header says: truncated.
        OpenError::with_source(path, OpenErrorKind::Corrupted, io)
    } else {
        OpenError::from_io(path, io)
    }
}

/// The store files this process has open. The engine refuses a second open of a file this
/// process holds just as it refuses another process's, and this tells the two apart, so that
/// the error can say to share the `Store` handle instead.
pub(crate) mod registry {
    use std::path::{Path, PathBuf};

    use parking_lot::Mutex;

    /// Canonical paths, with how many stores of this process hold each.
    static OPEN: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

    /// A store's entry in the registry, removed when it drops.
    #[derive(Debug)]
    pub(crate) struct Registration(Option<PathBuf>);

    /// Records that a store of this process holds `path` (a path that cannot be resolved, such
    /// as a custom backend's label, is not recorded).
    pub(crate) fn register(path: &Path) -> Registration {
        let Ok(path) = path.canonicalize() else {
            return Registration(None);
        };
        let mut open = OPEN.lock();
        match open.iter_mut().find(|(p, _)| *p == path) {
            Some((_, n)) => *n += 1,
            None => open.push((path.clone(), 1)),
        }
        Registration(Some(path))
    }

    /// Whether a store of this process holds `path`.
    pub(crate) fn holds(path: &Path) -> bool {
        path.canonicalize()
            .is_ok_and(|path| OPEN.lock().iter().any(|(p, _)| *p == path))
    }

    impl Drop for Registration {
        fn drop(&mut self) {
            let Some(path) = self.0.take() else {
                return;
            };
            let mut open = OPEN.lock();
            if let Some(i) = open.iter().position(|(p, _)| *p == path) {
                open[i].1 -= 1;
                if open[i].1 == 0 {
                    open.swap_remove(i);
                }
            }
        }
    }
}
