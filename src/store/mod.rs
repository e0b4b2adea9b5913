//! [`Store`]: every checkpoint in one transactional redb file.

mod access;
mod archive;
#[cfg(feature = "fault-injection")]
pub(crate) mod backend;
mod chunks;
mod dry_run;
mod engine;
mod engine_error;
mod exit;
mod flusher;
mod group_commit;
mod hot;
mod inspect;
mod migrate;
mod open;
mod options;
mod overlay;
mod salvage;
pub(crate) mod schema;
mod snapshot;
mod verify;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use redb::{ReadableTable as _, WriteTransaction};

pub use archive::{ARCHIVE_MAGIC, ARCHIVE_VERSION, ExportReport, ImportReport, MAX_ARCHIVE_RECORD};
pub use inspect::{CompactReport, EntryInfo, Evicted, EvictionReport, FunctionStats, StoreStats};
pub use options::{
    AccessMode, Clock, ConcurrencyMode, Durability, EvictionPolicy, Limits, ManualClock, OpenCheck,
    SystemClock,
};
pub use salvage::{SalvageMethod, SalvageReport};
pub use verify::VerifyReport;

use self::access::{Access, AccessLog};
use self::chunks::{Manifest, TableParts};
use self::engine::{Db, Engine, Opener};
use self::engine_error::engine_error;
use self::flusher::Flusher;
use self::group_commit::Queue;
use self::hot::HotTier;
use self::options::{duration_ms, to_ms};
use self::schema::{ENTRIES, EntryMeta, INDEXES_KEY, INFO, RESULTS};
pub(crate) use self::write::GROUP_COMMIT_MAX_BYTES;
use self::write::{QueuedSave, Registry, SaveOp, Tx, Victim};
use crate::cache::{BATCH_MAX_BYTES, BATCH_MAX_SAVES, Cache, Entry, LargeEntry, Lent};
use crate::error::{Error, ErrorKind, OpenError, OpenErrorKind};
use crate::id::{CheckpointId, Function};
use crate::record::{self, STREAM_ABOVE};
use crate::stats::Counters;

/// A checkpoint store: one redb file holding results, their metadata, and per-function
/// statistics.
///
/// `Store` is a cheap handle (an `Arc` inside): clone it freely and share it between threads
/// without locks of your own. The file is released when the last handle is dropped; buffered
/// bookkeeping (hits, last access, call counts) is written then, with the next save, every few
/// seconds by a background thread, or on [`flush`](Store::flush).
///
/// A hit is one read transaction and one lookup (two with a `max_age` limit): it never opens a
/// write transaction.
///
/// ```
/// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-store-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = Store::open(dir.join("checkpoints.redb"))?;
/// let square = DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, store.clone());
/// square.call(9u64, |x| x * x)?;
/// square.call(9u64, |x| x * x)?;
///
/// let stats = store.stats()?;
/// assert_eq!((stats.calls.hits, stats.calls.misses, stats.entries), (1, 1, 1));
/// # drop(square); drop(store); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    handle: Arc<Handle>,
}

/// Owns the flusher thread: the last `Store` handle stops and joins it, then drops the shared
/// state (which flushes and closes the file).
struct Handle {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.flusher.stop();
        if let Some(thread) = self.flusher.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) struct Shared {
    /// The database (see `engine.rs`): shared by transactions, exclusive for `compact`,
    /// `verify`, `repair` and the reopen after a failure; it also keeps the hits' snapshots.
    engine: Engine,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    durability: Durability,
    concurrency: ConcurrencyMode,
    limits: RwLock<Limits>,
    /// `max_age` in ms (0: none), read on every hit without a lock.
    max_age_ms: AtomicU64,
    /// The order indexes the file maintains (cached; reread per write in multi-process mode).
    indexes: AtomicU8,
    access: AccessLog,
    registry: Mutex<Registry>,
    /// Held from `begin_write` until the flushed counts are confirmed: redb frees its write slot
    /// at commit, and a plan taken in between would count the same calls twice.
    writer: Mutex<()>,
    queue: Queue,
    flusher: Arc<Flusher>,
    /// Records longer than this are stored in chunks of this length (see `chunks.rs`).
    chunk_len: u32,
    access_mode: AccessMode,
    /// This process's claim on the file (see `open::registry`); dropped after the engine.
    _registration: open::registry::Registration,
}

/// Options for opening a [`Store`].
///
/// ```
/// use std::time::Duration;
/// use ckpt::{Durability, Limits, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-builder-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = Store::builder()
///     .limits(Limits::new().max_bytes(1 << 30))
///     .durability(Durability::Relaxed { within: Duration::from_millis(500) })
///     .open(dir.join("checkpoints.redb"))?;
/// # drop(store); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    cache_bytes: usize,
    access_log: usize,
    limits: Limits,
    durability: Durability,
    concurrency: ConcurrencyMode,
    clock: Arc<dyn Clock>,
    open_check: OpenCheck,
    chunk_len: u32,
    hot_bytes: usize,
    access: AccessMode,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            cache_bytes: 256 << 20,
            access_log: 64 * 1024,
            limits: Limits::default(),
            durability: Durability::default(),
            concurrency: ConcurrencyMode::default(),
            clock: Arc::new(SystemClock),
            open_check: OpenCheck::default(),
            chunk_len: STREAM_ABOVE as u32,
            hot_bytes: 0,
            access: AccessMode::ReadWrite,
        }
    }
}

impl StoreBuilder {
    /// Default options.
    pub fn new() -> Self {
        StoreBuilder::default()
    }

    /// Memory for the storage engine's page cache, in bytes (default 256 MiB).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// How many hits to buffer in memory before they must be written (default 65,536). The
    /// background flusher writes the buffer when it is half full; hits that find it full lose
    /// only their per-entry `hits`/`last access` update.
    pub fn access_log_capacity(mut self, accesses: usize) -> Self {
        self.access_log = accesses;
        self
    }

    /// Caps and expiry (default: none). Changeable later with [`Store::set_limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// When saves reach the disk (default [`Durability::Immediate`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Whether other processes may open the store too (default
    /// [`ConcurrencyMode::SingleProcess`]).
    pub fn concurrency(mut self, mode: ConcurrencyMode) -> Self {
        self.concurrency = mode;
        self
    }

    /// The clock for timestamps and expiry (default the system clock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// What opening checks of the file (default [`OpenCheck::Full`]: every page).
    pub fn open_check(mut self, check: OpenCheck) -> Self {
        self.open_check = check;
        self
    }

    /// Opens the store read-only: no byte of the file changes, hits are not recorded in it, and
    /// every write returns [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) (see
    /// [`AccessMode::ReadOnly`]). For inspecting a store, a file this process may not write, or
    /// one that another process reads too. A missing file is an error, not a new store.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-ro-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// # let path = dir.join("checkpoints.redb");
    /// # drop(ckpt::Store::open(&path)?);
    /// let store = ckpt::Store::builder().read_only().open(&path)?;
    /// assert_eq!(store.access_mode(), ckpt::AccessMode::ReadOnly);
    /// assert_eq!(store.clear().unwrap_err().kind(), ckpt::ErrorKind::ReadOnly);
    /// # drop(store); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_only(self) -> Self {
        self.access(AccessMode::ReadOnly)
    }

    /// Whether the store may change its file (default [`AccessMode::ReadWrite`]).
    pub fn access(mut self, mode: AccessMode) -> Self {
        self.access = mode;
        self
    }

    /// Keeps up to `bytes` of recently hit records in memory (default 0: none), so that a hit
    /// on one skips the storage engine and the record's checksum: an in-process tier in front
    /// of the file, for hot working sets.
    ///
    /// Records are kept as they are stored (encoded, checked once when read from the file), in
    /// shards bounded by bytes; a record larger than 1/128 of `bytes`, or stored in chunks, is
    /// not kept. Every save, removal or eviction drops the record it replaces before it returns,
    /// so a hit never sees an older value than a read from the file would. Not available with
    /// [`ConcurrencyMode::MultiProcess`] (another process's saves could not drop what they
    /// replace); not used while a `max_age` limit is set (a hit must read the entry's age).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-hot-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let store = ckpt::Store::builder().hot_tier(64 << 20).open(dir.join("checkpoints.redb"))?;
    /// # drop(store); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hot_tier(mut self, bytes: usize) -> Self {
        self.hot_bytes = bytes;
        self
    }

    /// The length of the chunks large records are stored in (default 64 bytes under 512 KiB,
    /// so that each fills one page of the engine); records longer than one chunk are chunked.
    /// For tests, which store many chunks cheaply with a small length; clamped to 64 B..64 MiB.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn chunk_size(mut self, bytes: u32) -> Self {
        self.chunk_len = bytes.clamp(chunks::MIN_CHUNK, chunks::MAX_CHUNK);
        self
    }

    fn engine_options(&self) -> open::EngineOptions {
        open::EngineOptions {
            cache_bytes: self.cache_bytes,
            concurrency: self.concurrency,
            check: self.open_check,
            access: self.access,
        }
    }

    /// Opens the store at `path`, creating the file (and its folder, readable by the owner
    /// only) if missing.
    ///
    /// # Errors
    /// An [`OpenError`] naming the file and saying what to do: held by another process, not a
    /// ckpt store, a newer schema, corrupted, permission denied, a directory, or options that
    /// cannot work together (relaxed durability in multi-process mode).
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let engine = self.engine_options();
        let at = path.clone();
        self.open_with(path, Box::new(move || open::open(&at, &engine)))
    }

    /// Opens a store whose database `opener` opens (and opens again after a failure).
    fn open_with(&self, path: PathBuf, opener: Opener) -> Result<Store, OpenError> {
        if self.concurrency == ConcurrencyMode::MultiProcess
            && matches!(self.durability, Durability::Relaxed { .. })
        {
            return Err(OpenError::with_source(
                &path,
                OpenErrorKind::Unsupported,
                "relaxed durability needs ConcurrencyMode::SingleProcess: other processes may \
                 only see commits that are on disk",
            ));
        }
        if self.concurrency == ConcurrencyMode::MultiProcess && self.hot_bytes > 0 {
            return Err(OpenError::with_source(
                &path,
                OpenErrorKind::Unsupported,
                "a hot tier needs ConcurrencyMode::SingleProcess: another process's saves could \
                 not drop the records they replace",
            ));
        }
        let db = opener()?;
        // A read-only handle reads an older schema as it is (it never writes).
        if let Db::Writable(db) = &db {
            migrate::to_current(&path, db)?;
        }
        let indexes = open::read_indexes(&path, &db)?;
        let flusher = Arc::new(Flusher::default());
        let shared = Arc::new(Shared {
            engine: Engine::new(
                db,
                &path,
                opener,
                (self.hot_bytes > 0).then(|| HotTier::new(self.hot_bytes)),
            ),
            path: path.clone(),
            clock: Arc::clone(&self.clock),
            durability: self.durability,
            concurrency: self.concurrency,
            limits: RwLock::new(self.limits),
            max_age_ms: AtomicU64::new(self.limits.max_age_value().map_or(0, duration_ms)),
            indexes: AtomicU8::new(indexes),
            access: AccessLog::new(self.access_log),
            registry: Mutex::default(),
            writer: Mutex::new(()),
            queue: Queue::default(),
            flusher: Arc::clone(&flusher),
            chunk_len: self.chunk_len,
            access_mode: self.access,
            _registration: open::registry::register(&path),
        });
        if self.access == AccessMode::ReadWrite {
            exit::close_at_exit(Arc::downgrade(&shared));
        }
        let thread = Flusher::spawn(Arc::downgrade(&shared), flusher);
        let store = Store {
            handle: Arc::new(Handle {
                shared,
                flusher: thread,
            }),
        };
        if self.limits != Limits::default() && self.access == AccessMode::ReadWrite {
            // Build the indexes the limits need, and apply them, now rather than on the first
            // save.
            store
                .shared()
                .write(Commit::Yes, |_| Ok(()))
                .map_err(|e| OpenError::with_source(&path, OpenErrorKind::Io, e))?;
        }
        Ok(store)
    }
}

/// How a write transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    Yes,
    /// Commit durably whatever the store's durability.
    Durably,
}

impl Store {
    /// Opens the store at `path` with default options (see [`StoreBuilder::open`]).
    ///
    /// # Errors
    /// As [`StoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        StoreBuilder::new().open(path)
    }

    /// Options for opening a store.
    pub fn builder() -> StoreBuilder {
        StoreBuilder::new()
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.shared().path
    }

    /// Whether the store may change its file ([`StoreBuilder::read_only`]).
    pub fn access_mode(&self) -> AccessMode {
        self.shared().access_mode
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        *self.shared().limits.read()
    }

    /// Changes the limits, and applies them at once (building the order index a new policy
    /// needs, and evicting or expiring what no longer fits).
    ///
    /// # Errors
    /// When the write fails; the old limits stay in force then.
    pub fn set_limits(&self, limits: Limits) -> Result<EvictionReport, Error> {
        let shared = self.shared();
        let report = shared.write(Commit::Yes, |tx| {
            let indexes = tx.ensure_indexes(limits.needed_indexes())?;
            shared.indexes.store(indexes, Ordering::Release);
            tx.enforce(&limits)
        })?;
        *shared.limits.write() = limits;
        shared.max_age_ms.store(
            limits.max_age_value().map_or(0, duration_ms),
            Ordering::Relaxed,
        );
        Ok(EvictionReport::new(report))
    }

    /// Applies the store's limits now: expires and evicts what they say (every write does this
    /// too; call it from a maintenance task in apps that mostly read).
    ///
    /// # Errors
    /// When the write fails (nothing is removed then).
    pub fn evict(&self) -> Result<EvictionReport, Error> {
        let limits = self.limits();
        self.evict_with(&limits, EvictMode::Apply)
    }

    /// Removes the entries that `max_age` and `max_idle` have expired, without evicting for the
    /// caps.
    ///
    /// # Errors
    /// When the write fails.
    pub fn expire(&self) -> Result<EvictionReport, Error> {
        let l = self.limits();
        let mut only_expiry = Limits::new();
        if let Some(age) = l.max_age_value() {
            only_expiry = only_expiry.max_age(age);
        }
        if let Some(idle) = l.max_idle_value() {
            only_expiry = only_expiry.max_idle(idle);
        }
        self.evict_with(&only_expiry, EvictMode::Apply)
    }

    /// Applies `limits` once (not the store's own), or with [`EvictMode::DryRun`] only reports
    /// what they would remove.
    ///
    /// # Errors
    /// When the write fails (nothing is removed then).
    pub fn evict_with(&self, limits: &Limits, mode: EvictMode) -> Result<EvictionReport, Error> {
        let shared = self.shared();
        let victims = match mode {
            EvictMode::Apply => shared.write(Commit::Yes, |tx| {
                let indexes = tx.ensure_indexes(limits.needed_indexes())?;
                shared.indexes.store(indexes, Ordering::Release);
                tx.enforce(limits)
            })?,
            // Read only: a dry run writes nothing, so it works on a read-only store too.
            EvictMode::DryRun => shared.engine.guard("cannot plan an eviction", || {
                let txn = shared.engine.begin_read()?;
                dry_run::victims(&txn, limits, shared.now_ms())
            })?,
        };
        Ok(EvictionReport::new(victims))
    }

    /// Writes buffered bookkeeping (accesses and call counts) now, and, under relaxed
    /// durability, makes every save durable.
    ///
    /// # Errors
    /// When the write fails; the counts stay buffered for the next write.
    pub fn flush(&self) -> Result<(), Error> {
        self.shared().sync()
    }

    /// Rewrites the file so that it holds no free pages, and shrinks it. Reads and writes wait
    /// while it runs.
    ///
    /// # Errors
    /// When the engine cannot compact (for example, in multi-process mode, while another
    /// process has a transaction open).
    pub fn compact(&self) -> Result<CompactReport, Error> {
        let shared = self.shared();
        shared.writable("cannot compact")?;
        shared.sync()?;
        let before = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
        shared.engine.guard("cannot compact", || {
            let mut rounds = 0;
            shared.engine.exclusive("cannot compact", |db| {
                // redb compacts in rounds, and refuses while a transaction is open (a hit
                // finishing): the engine then calls again.
                let db = db.writable_mut("cannot compact")?;
                loop {
                    match db.compact() {
                        Ok(true) if rounds < 64 => rounds += 1,
                        Ok(_) => return Ok(Some(())),
                        Err(redb::CompactionError::TransactionInProgress) => return Ok(None),
                        Err(e) => return Err(engine_error("cannot compact", e)),
                    }
                }
            })
        })?;
        let after = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
        Ok(CompactReport {
            file_bytes_before: before,
            file_bytes_after: after,
        })
    }

    /// Flushes and releases this handle, reporting any error (dropping flushes too, silently).
    /// The file stays open until the last clone of the handle is gone.
    ///
    /// # Errors
    /// When the final flush fails.
    pub fn close(self) -> Result<(), Error> {
        self.shared().sync()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}

/// Whether [`Store::evict_with`] removes entries or only reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictMode {
    /// Remove them.
    Apply,
    /// Report what would be removed; change nothing.
    DryRun,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        to_ms(self.clock.now())
    }

    /// The order indexes to maintain in this transaction.
    fn indexes_for(&self, txn: &WriteTransaction) -> Result<u8, Error> {
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
        self.engine
            .guard("cannot write", || self.write_inner(commit, body))
    }

    fn write_inner<T>(
        &self,
        commit: Commit,
        body: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _writer = self.writer.lock();
        // Held until the commit: a reopen, a verify or a compaction waits for it.
        let db = self.engine.db()?;
        let mut txn = db
            .writable("cannot write")?
            .begin_write()
            .map_err(|e| engine_error("cannot begin a write", e))?;
        let relaxed =
            commit == Commit::Yes && matches!(self.durability, Durability::Relaxed { .. });
        if relaxed {
            txn.set_durability(redb::Durability::None).map_err(|e| {
                Error::with_source(ErrorKind::Unsupported, "cannot relax durability", e)
            })?;
        }
        let indexes = self.indexes_for(&txn)?;
        let limits = *self.limits.read();
        // Taken after begin_write, which serializes writers: no two plans overlap.
        let plan = self.registry.lock().plan();
        let mut accesses = Vec::new();
        self.access.drain_into(&mut accesses);
        let out = {
            let mut tx = Tx::open(&txn, self.now_ms(), indexes, self.chunk_len)?;
            let need = limits.needed_indexes();
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
            let out = body(&mut tx)?;
            tx.enforce(&limits)?;
            (out, tx.finish()?)
        };
        let (out, changed) = out;
        let committed = txn.commit();
        // Before returning: a hit that follows this write must not read an older snapshot, or
        // a replaced record from the hot tier.
        self.engine.committed(&changed);
        committed.map_err(|e| engine_error("cannot commit", e))?;
        drop(db);
        self.registry.lock().confirm(plan);
        match self.durability {
            Durability::Relaxed { within } if relaxed => {
                self.flusher.sync_by(Instant::now() + within);
            }
            _ => self.flusher.synced(),
        }
        Ok(out)
    }

    pub(crate) fn has_bookkeeping(&self) -> bool {
        // A read-only store keeps its counts in memory (`stats` adds them) and writes none.
        self.access_mode == AccessMode::ReadWrite
            && (self.access.len() > 0 || !self.registry.lock().plan().is_empty())
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
        if self.has_bookkeeping() || matches!(self.durability, Durability::Relaxed { .. }) {
            self.write(Commit::Durably, |_| Ok(()))?;
        }
        Ok(())
    }

    fn check_size(&self, len: usize) -> Result<(), Error> {
        match self.limits.read().max_bytes_value() {
            Some(max) if len as u64 > max => Err(too_large(len as u64, max)),
            _ => Ok(()),
        }
    }

    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
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
        };
        self.queue.submit(queued, |batch| self.commit_batch(batch))
    }

    /// Saves `entries` in order, in as few transactions as the batch bounds allow (see
    /// `cache::BATCH_MAX_SAVES`); each commits whole or not at all.
    fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
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
    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
        let compute_nanos = u64::try_from(entry.compute_time().as_nanos()).unwrap_or(u64::MAX);
        let cap = self.limits.read().max_bytes_value();
        self.write(Commit::Yes, |tx| {
            let len = tx.put_large(*id.as_bytes(), entry, compute_nanos)?;
            // Its length is known only now: over the cap, the transaction is abandoned.
            match cap {
                Some(max) if len > max => Err(too_large(len, max)),
                _ => Ok(()),
            }
        })
    }

    /// Commits a batch in one transaction; if that fails, each save alone, so one bad save does
    /// not fail the others.
    fn commit_batch(&self, batch: &[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)> {
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

    fn read(&self, id: &CheckpointId, read: &mut dyn FnMut(Lent<'_>)) -> Result<bool, Error> {
        if let Some(hot) = self.engine.hot()
            && self.max_age_ms.load(Ordering::Relaxed) == 0
            && let Some(record) = hot.get(id.as_bytes())
        {
            read(Lent::checked(&record));
            self.accessed(id, self.now_ms());
            return Ok(true);
        }
        // A panic of the caller's `read` is the caller's: carried past the engine's guard and
        // resumed.
        let mut caller_panic = None;
        let found = self.engine.guard("cannot read", || {
            self.read_inner(id, &mut |bytes| {
                if let Err(p) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(bytes)))
                {
                    caller_panic = Some(p);
                }
            })
        });
        if let Some(p) = caller_panic {
            std::panic::resume_unwind(p);
        }
        found
    }

    /// The engine's slot is held only to begin a read transaction (`engine.rs`): the caller's
    /// `read`, which runs the user's `Deserialize`, runs under no store lock.
    fn read_inner(&self, id: &CheckpointId, read: &mut dyn FnMut(Lent<'_>)) -> Result<bool, Error> {
        let now = self.now_ms();
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        let found = if max_age == 0 && self.concurrency == ConcurrencyMode::SingleProcess {
            // The fast path: a snapshot kept since an earlier hit, valid until the next commit
            // of this process (the only writer in this mode).
            let open = |generation| snapshot::open(&*self.engine.db()?, generation);
            self.engine.snapshots().with_snapshot(open, |snap| {
                let Some(row) = snap
                    .results
                    .get(id.as_bytes())
                    .map_err(|e| engine_error("cannot read a result", e))?
                else {
                    return Ok(false);
                };
                let row = row.value();
                lend(row, id, &snap.txn, read)?;
                // Cheapest test first: the size, then the checksum.
                if let Some(hot) = self.engine.hot()
                    && hot.wants(id.as_bytes(), row.len())
                    && !chunks::claims_chunks(row)
                    && record::parse(row).is_ok()
                {
                    let generation = self.engine.snapshots().generation();
                    hot.admit(id.as_bytes(), row, snap.generation, generation);
                }
                Ok(true)
            })?
        } else {
            // Another process may have committed, or the entry's age must be read from the same
            // transaction: a fresh read transaction.
            let txn = self.engine.begin_read()?;
            let table = txn
                .open_table(RESULTS)
                .map_err(|e| engine_error("cannot open the results table", e))?;
            let Some(row) = table
                .get(id.as_bytes())
                .map_err(|e| engine_error("cannot read a result", e))?
            else {
                return Ok(false);
            };
            if max_age != 0 && self.expired(&txn, id, now, max_age)? {
                return Ok(false);
            }
            lend(row.value(), id, &txn, read)?;
            true
        };
        if found {
            self.accessed(id, now);
        }
        Ok(found)
    }

    /// Records a hit in the access log (not in a read-only store, which writes no bookkeeping).
    #[inline]
    fn accessed(&self, id: &CheckpointId, now: u64) {
        if self.access_mode == AccessMode::ReadOnly {
            return;
        }
        if !self.access.record(Access {
            id: *id.as_bytes(),
            at_ms: now,
        }) || self.access.half_full()
        {
            self.flusher.request_flush();
        }
    }

    /// Whether the entry was saved more than `max_age` ms ago (it is then a miss, and the next
    /// write removes it).
    fn expired(
        &self,
        txn: &redb::ReadTransaction,
        id: &CheckpointId,
        now: u64,
        max_age: u64,
    ) -> Result<bool, Error> {
        let entries = txn
            .open_table(ENTRIES)
            .map_err(|e| engine_error("cannot open the entries table", e))?;
        let meta = entries
            .get(id.as_bytes())
            .map_err(|e| engine_error("cannot read entry metadata", e))?
            .and_then(|g| EntryMeta::decode(g.value()));
        Ok(meta.is_none_or(|m| now.saturating_sub(m.created_ms) > max_age))
    }

    pub(crate) fn with_db<T>(&self, f: impl FnOnce(&Db) -> T) -> Result<T, Error> {
        let db = self.engine.db()?;
        Ok(f(&db))
    }

    pub(crate) fn concurrency(&self) -> ConcurrencyMode {
        self.concurrency
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn registry(&self) -> &Mutex<Registry> {
        &self.registry
    }

    pub(crate) fn dropped_accesses(&self) -> u64 {
        self.access.dropped()
    }
}

fn too_large(len: u64, max: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("a value of {len} bytes cannot fit the store's byte cap of {max}"),
    )
}

/// Lends a results row: a record, whole; for a manifest, the record's chunks, read from the
/// same transaction.
#[inline]
fn lend(
    row: &[u8],
    id: &CheckpointId,
    txn: &redb::ReadTransaction,
    read: &mut dyn FnMut(Lent<'_>),
) -> Result<(), Error> {
    let table = match Manifest::decode(row) {
        Some(manifest) => chunks::open_read(txn)
            .map_err(|e| engine_error("cannot open the chunks table", e))?
            .map(|table| (manifest, table)),
        None => None,
    };
    match &table {
        Some((manifest, table)) => read(Lent::parts(&TableParts {
            table,
            id: *id.as_bytes(),
            manifest: *manifest,
        })),
        // A record; or a manifest in a file without chunks, lent as it is: it fails a record's
        // checks.
        None => read(Lent::whole(row)),
    }
    Ok(())
}

impl Shared {
    /// Flushes and closes the file now (the process is exiting; see `exit.rs`).
    fn close_now(&self) {
        self.flusher.stop();
        let _ = self.sync();
        self.engine.close();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Best effort: errors have nowhere to go from a destructor (use `Store::close` to see
        // them), and a panic here must not escape.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sync()));
    }
}

impl Cache for Store {
    fn flight_scope(&self) -> usize {
        // Every clone of this handle, and the default store's handle, share it.
        Arc::as_ptr(&self.handle).addr()
    }

    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        self.shared().save(id, entry)
    }

    fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
        self.shared().save_many(entries)
    }

    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
        self.shared().save_large(id, entry)
    }

    /// The record under `id`, a chunked one joined into one buffer.
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        let mut out = None;
        self.shared()
            .read(id, &mut |lent| out = Some(lent.to_vec()))?;
        out.transpose()
    }

    /// Lends the record under `id` in one buffer (a chunked one joined: see
    /// [`retrieve_parts`](Cache::retrieve_parts) to read it without).
    fn retrieve_with(&self, id: &CheckpointId, read: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        let mut failed = None;
        let found = self.shared().read(id, &mut |lent| match lent.as_whole() {
            Some(bytes) => read(bytes),
            None => match lent.to_vec() {
                Ok(bytes) => read(&bytes),
                Err(e) => failed = Some(e),
            },
        })?;
        failed.map_or(Ok(found), Err)
    }

    #[inline]
    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        self.shared().read(id, read)
    }

    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Store::remove(self, id)
    }

    fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
        self.shared().registry.lock().register(function, counters);
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared().path)
            .field("durability", &self.shared().durability)
            .field("concurrency", &self.shared().concurrency)
            .field("limits", &self.limits())
            .finish_non_exhaustive()
    }
}

impl From<Victim> for inspect::Evicted {
    fn from(v: Victim) -> Self {
        inspect::Evicted {
            id: CheckpointId::from_bytes(v.id),
            function_key: v.fn_key,
            size: v.size,
            cause: v.cause,
        }
    }
}
