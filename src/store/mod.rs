//! [`Store`]: every checkpoint in one transactional redb file; its options ([`StoreBuilder`],
//! [`Limits`], [`Durability`], ...) and the reports of its inspection and maintenance
//! ([`StoreStats`], [`VerifyReport`], [`SalvageReport`], ...).

mod access;
pub(crate) mod archive;
#[cfg(feature = "fault-injection")]
pub(crate) mod backend;
mod builder;
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
mod read;
mod registry;
mod salvage;
mod save;
pub(crate) mod schema;
mod snapshot;
#[cfg(feature = "remote")]
mod tiered;
#[cfg(all(feature = "remote", feature = "fault-injection"))]
pub(crate) use tiered::NO_SPOOL;
mod verify;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use builder::StoreBuilder;
pub use inspect::{CompactReport, EntryInfo, Evicted, EvictionReport, FunctionStats, StoreStats};
pub use options::{
    AccessMode, Clock, ConcurrencyMode, Durability, EvictionPolicy, Limits, ManualClock, OpenCheck,
    SystemClock,
};
pub use salvage::{SalvageMethod, SalvageReport};
pub(crate) use save::Commit;
#[cfg(feature = "remote")]
pub use tiered::{PullReport, PushReport};
pub use verify::VerifyReport;

use self::access::AccessLog;
use self::engine::{Db, Engine};
use self::engine_error::engine_error;
use self::flusher::Flusher;
use self::group_commit::Queue;
use self::options::{duration_ms, to_ms};
use self::registry::Registry;
#[cfg(feature = "fault-injection")]
pub(crate) use self::write::GROUP_COMMIT_MAX_BYTES;
use self::write::Victim;
use crate::cache::{Cache, Entry, LargeEntry, Lent, PendingSave};
use crate::error::{Error, OpenError};
use crate::id::{CheckpointId, Function};
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
        // A background publish of a large record reads it from the file through this handle's
        // state: it finishes first.
        #[cfg(feature = "remote")]
        self.shared.flush_remote();
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
    /// Per-function maximum ages `(function key, ms)`, from decorators' `expire_function`.
    function_ages: Mutex<Vec<(u64, u64)>>,
    /// When (store clock, ms) the next write next expires by the per-function ages.
    next_function_sweep_ms: AtomicU64,
    /// The order indexes the file maintains (cached; reread per write in multi-process mode).
    indexes: AtomicU8,
    access: AccessLog,
    registry: Mutex<Registry>,
    /// Held from `begin_write` until the flushed counts are confirmed: redb frees its write slot
    /// at commit, and a plan taken in between would count the same calls twice.
    writer: Mutex<()>,
    /// A relaxed commit (a backfill) in a store whose durability is not relaxed has not been
    /// made durable yet: `sync` commits durably though no bookkeeping is buffered.
    unsynced: std::sync::atomic::AtomicBool,
    queue: Queue,
    flusher: Arc<Flusher>,
    /// Records longer than this are stored in chunks of this length (see `chunks.rs`).
    chunk_len: u32,
    access_mode: AccessMode,
    /// The shared tier behind the file (feature `remote`; see `tiered.rs`). Dropped after
    /// `Drop for Shared` has synced, and its drop waits for the background publishes.
    #[cfg(feature = "remote")]
    remote: Option<crate::remote::Tier>,
    /// Large backfills fetched and lent, waiting for the background thread to save them.
    #[cfg(feature = "remote")]
    backfills: tiered::Backfills,
    /// The decorators' default (`StoreBuilder::compression`).
    compression: crate::record::Compression,
    /// This process's claim on the file (see `open::registry`); dropped after the engine.
    _registration: open::registry::Registration,
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
        // Per-function ages (`Cache::expire_function`) too, now rather than when next due.
        self.shared()
            .next_function_sweep_ms
            .store(0, Ordering::Relaxed);
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

    /// Writes buffered bookkeeping (accesses and call counts) now, and makes every save
    /// durable (under relaxed durability, and a remote hit's backfill, which commits without
    /// waiting for the disk). With a remote (feature `remote`), it first saves the backfills
    /// still waiting in memory and waits for the background publishes queued before it.
    ///
    /// # Errors
    /// When the write fails; the counts stay buffered for the next write.
    pub fn flush(&self) -> Result<(), Error> {
        self.shared().flush_remote();
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
        let started = std::time::Instant::now();
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
        tracing::info!(
            target: "ckpt",
            path = %shared.path.display(),
            before,
            after,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store compacted"
        );
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
        self.shared().flush_remote();
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

impl Shared {
    /// Flushes and closes the file now (the process is exiting; see `exit.rs`).
    fn close_now(&self) {
        self.flush_remote();
        self.flusher.stop();
        let _ = self.sync();
        self.engine.close();
    }
}

/// Without the feature `remote`, the store is the only tier.
#[cfg(not(feature = "remote"))]
impl Shared {
    #[inline]
    fn read_through(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        self.read(id, read)
    }

    #[inline]
    fn read_through_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        self.read_aged(id, read)
    }

    #[inline]
    fn publish(
        &self,
        _: &CheckpointId,
        _: &Function,
        _: Option<&str>,
        _: impl FnOnce() -> Option<Vec<u8>>,
    ) {
    }

    #[inline]
    fn flush_remote(&self) {}

    fn lease(&self, _: &CheckpointId) -> Result<crate::cache::Lease, Error> {
        Ok(crate::cache::Lease::Granted(
            crate::cache::LeaseGuard::none(),
        ))
    }

    pub(crate) fn remote_stats(&self) -> Option<crate::stats::RemoteStats> {
        None
    }

    #[inline]
    fn remote_unflushed(&self) -> Option<(crate::stats::RemoteStats, crate::stats::RemoteStats)> {
        None
    }

    #[inline]
    fn remote_flushed(&self, _: crate::stats::RemoteStats) {}

    #[inline]
    fn read_parked(
        &self,
        _: &CheckpointId,
        _: &mut dyn FnMut(crate::cache::Lent<'_>, Option<Duration>),
    ) -> bool {
        false
    }
}

#[cfg(not(feature = "remote"))]
impl Store {
    #[inline]
    fn publish_large(&self, _: &CheckpointId, _: &LargeEntry<'_>) {}

    #[inline]
    fn fetch_remote_off_thread(&self, _: &CheckpointId) -> Option<PendingSave> {
        None
    }

    #[inline]
    fn publish_deferred(
        &self,
        _: &CheckpointId,
        _: &Entry<'_>,
        committed: PendingSave,
    ) -> PendingSave {
        committed
    }

    #[inline]
    fn lease_off_thread(&self, _: &CheckpointId) -> Option<crate::cache::PendingLease> {
        None
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
        self.shared().save(id, entry)?;
        self.shared()
            .publish(id, entry.function(), entry.value_type(), || {
                Some(entry.bytes().to_vec())
            });
        Ok(())
    }

    fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
        self.shared().save_many(entries)?;
        for (id, entry) in entries {
            self.shared()
                .publish(id, entry.function(), entry.value_type(), || {
                    Some(entry.bytes().to_vec())
                });
        }
        Ok(())
    }

    /// Queued for the group commit, which the store's background thread leads when no saver
    /// does; completes after the commit (durable under `Durability::Immediate`).
    fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> PendingSave {
        // Refused here (a read-only file, over the byte cap): not published either, as `save`
        // publishes only what it saved.
        if let Err(e) = self.shared().accepts(entry) {
            return PendingSave::ready(Err(e));
        }
        let committed = self.shared().save_deferred(id, entry);
        // Published as it is queued, not after its commit: the bytes are the result either way.
        // A background publish only queues; a synchronous one is awaited with the commit.
        self.publish_deferred(id, entry, committed)
    }

    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
        self.shared().save_large(id, entry, save::Commit::Yes)?;
        self.publish_large(id, entry);
        Ok(())
    }

    /// The record under `id`, a chunked one joined into one buffer.
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        let mut out = None;
        self.shared()
            .read_through(id, &mut |lent| out = Some(lent.to_vec()))?;
        out.transpose()
    }

    #[inline]
    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        self.shared().read_through(id, read)
    }

    fn retrieve_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        self.shared().read_through_aged(id, read)
    }

    #[inline]
    fn retrieve_parts_near(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        self.shared().read_near(id, read)
    }

    fn retrieve_aged_near(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        self.shared().read_aged_near(id, read)
    }

    fn fetch_far(&self, id: &CheckpointId) -> Option<PendingSave> {
        self.fetch_remote_off_thread(id)
    }

    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Store::remove(self, id)
    }

    fn expire_function(&self, function: &Function, max_age: Duration) -> Result<(), Error> {
        let shared = self.shared();
        let (key, age) = (function.key(), duration_ms(max_age));
        let mut ages = shared.function_ages.lock();
        match ages.iter_mut().find(|(k, _)| *k == key) {
            // Two decorators of one function with different ages: the longer one keeps its
            // entries (the shorter still never returns them).
            Some((_, known)) => *known = (*known).max(age),
            None => ages.push((key, age)),
        }
        Ok(())
    }

    fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
        self.shared().registry.lock().register(function, counters);
        Ok(())
    }

    fn compression(&self) -> crate::record::Compression {
        self.shared().compression
    }

    /// With a read-write remote and `Dedup::Lease`: takes the id's lease in the remote, or
    /// waits for the machine holding it (see [`Dedup`](crate::Dedup)). Otherwise granted at
    /// once.
    fn lease(&self, id: &CheckpointId) -> Result<crate::cache::Lease, Error> {
        self.shared().lease(id)
    }

    /// With a read-write remote and `Dedup::Lease`: [`lease`](Cache::lease) on a thread of the
    /// remote's runtime, for an async call to await. Otherwise `None` (granted at once).
    fn lease_far(&self, id: &CheckpointId) -> Option<crate::cache::PendingLease> {
        self.lease_off_thread(id)
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
