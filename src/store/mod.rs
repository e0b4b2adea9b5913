//! [`Store`]: every checkpoint in one transactional redb file.

mod access;
#[cfg(feature = "fault-injection")]
pub(crate) mod backend;
mod engine;
mod inspect;
mod open;
pub(crate) mod schema;
mod verify;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

pub use inspect::{EntryInfo, FunctionStats, StoreStats};
pub use verify::VerifyReport;

use self::access::{Access, AccessLog};
use self::engine::{Engine, Opener};
use self::schema::RESULTS;
pub(crate) use self::write::GROUP_COMMIT_MAX_BYTES;
use self::write::{Queue, QueuedSave, Registry, SaveOp, Tx, engine_error};
use crate::cache::{Cache, Entry};
use crate::error::{Error, OpenError};
use crate::id::{CheckpointId, Function};
use crate::stats::Counters;

/// A checkpoint store: one redb file holding results, their metadata, and per-function
/// statistics.
///
/// `Store` is a cheap handle (an `Arc` inside): clone it freely and share it between threads
/// without locks of your own. The file is released when the last handle is dropped; buffered
/// bookkeeping (hits, last access, call counts) is written then, with the next save, or on
/// [`flush`](Store::flush).
///
/// A hit is one read transaction and one lookup: it never opens a write transaction.
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
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    engine: Engine,
    path: PathBuf,
    access: AccessLog,
    registry: Mutex<Registry>,
    queue: Queue,
}

/// Options for opening a [`Store`].
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-builder-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = ckpt::Store::builder()
///     .cache_size(64 << 20)
///     .open(dir.join("checkpoints.redb"))?;
/// # drop(store); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    cache_bytes: usize,
    access_log: usize,
    verify_on_open: bool,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            cache_bytes: 256 << 20,
            access_log: 64 * 1024,
            verify_on_open: true,
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

    /// How many hits to buffer in memory before they must be written (default 65,536). Hits
    /// beyond it, until the next write, lose only their per-entry `hits`/`last access` update.
    pub fn access_log_capacity(mut self, accesses: usize) -> Self {
        self.access_log = accesses;
        self
    }

    /// Whether opening checks the integrity of the whole file (default: yes).
    ///
    /// The check reads every page of the file and verifies its checksum, so a file damaged or
    /// altered outside ckpt is repaired (rolled back to its last sound commit) or refused with
    /// [`OpenErrorKind::Corrupted`](crate::OpenErrorKind::Corrupted), instead of being trusted.
    /// Turning it off makes opening a large store faster, at a price: the storage engine trusts
    /// the file's structure, and a damaged one can then make operations fail or, at worst,
    /// loop; ckpt still never returns a stored value that fails its own checksum.
    pub fn verify_on_open(mut self, verify: bool) -> Self {
        self.verify_on_open = verify;
        self
    }

    fn engine_options(&self) -> open::EngineOptions {
        open::EngineOptions {
            cache_bytes: self.cache_bytes,
            verify: self.verify_on_open,
        }
    }

    /// Opens the store at `path`, creating the file (and its folder, readable by the owner
    /// only) if missing.
    ///
    /// # Errors
    /// An [`OpenError`] naming the file and saying what to do: held by another process, not a
    /// ckpt store, a newer schema, corrupted, permission denied, a directory.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let engine = self.engine_options();
        let at = path.clone();
        self.open_with(path, Box::new(move || open::open(&at, &engine)))
    }

    /// Opens a store whose database `opener` opens (and opens again after a failure).
    fn open_with(&self, path: PathBuf, opener: Opener) -> Result<Store, OpenError> {
        let db = opener()?;
        Ok(Store {
            shared: Arc::new(Shared {
                engine: Engine::new(db, &path, opener),
                path,
                access: AccessLog::new(self.access_log),
                registry: Mutex::default(),
                queue: Queue::default(),
            }),
        })
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        &self.shared.path
    }

    /// Writes buffered bookkeeping (accesses and call counts) now.
    ///
    /// # Errors
    /// When the write fails; the counts stay buffered for the next write.
    pub fn flush(&self) -> Result<(), Error> {
        self.shared.flush()
    }

    /// Flushes and releases this handle, reporting any error (dropping flushes too, silently).
    /// The file stays open until the last clone of the handle is gone.
    ///
    /// # Errors
    /// When the final flush fails.
    pub fn close(self) -> Result<(), Error> {
        self.shared.flush()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    /// Runs `body` in a write transaction that also applies the buffered bookkeeping, and
    /// commits.
    pub(crate) fn write<T>(
        &self,
        body: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.engine.guard("cannot write", || self.write_inner(body))
    }

    fn write_inner<T>(
        &self,
        body: impl FnOnce(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // Held until the commit: a reopen or a verify waits for the transaction to end.
        let db = self.engine.db()?;
        let txn = db
            .begin_write()
            .map_err(|e| engine_error("cannot begin a write", e))?;
        // Taken after begin_write, which serializes writers: no two plans overlap.
        let plan = self.registry.lock().plan();
        let mut accesses = Vec::new();
        self.access.drain_into(&mut accesses);
        let out = {
            let mut tx = Tx::open(&txn, now_ms())?;
            tx.apply_accesses(&accesses)?;
            for (key, calls) in &plan.calls {
                tx.add_calls(*key, calls);
            }
            for f in &plan.identities {
                tx.set_identity(f);
            }
            let out = body(&mut tx)?;
            tx.finish()?;
            out
        };
        txn.commit().map_err(|e| engine_error("cannot commit", e))?;
        self.registry.lock().confirm(plan);
        Ok(out)
    }

    fn has_bookkeeping(&self) -> bool {
        self.access.len() > 0 || !self.registry.lock().plan().is_empty()
    }

    pub(crate) fn flush(&self) -> Result<(), Error> {
        if self.has_bookkeeping() {
            self.write(|_| Ok(()))?;
        }
        Ok(())
    }

    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        let compute_nanos = u64::try_from(entry.compute_time().as_nanos()).unwrap_or(u64::MAX);
        if entry.bytes().len() > GROUP_COMMIT_MAX_BYTES {
            let op = SaveOp {
                id: *id.as_bytes(),
                function: entry.function(),
                bytes: entry.bytes(),
                compute_nanos,
            };
            return self.write(|tx| tx.put(&op));
        }
        let queued = QueuedSave {
            id: *id.as_bytes(),
            function: entry.function().clone(),
            bytes: entry.bytes().to_vec(),
            compute_nanos,
        };
        self.queue.submit(queued, |batch| self.commit_batch(batch))
    }

    /// Commits a batch in one transaction; if that fails, each save alone, so one bad save does
    /// not fail the others.
    fn commit_batch(&self, batch: &[(u64, QueuedSave)]) -> Vec<(u64, Result<(), Error>)> {
        let together = self.write(|tx| {
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
                .map(|(t, save)| (*t, self.write(|tx| tx.put(&save.op()))))
                .collect(),
        }
    }

    fn read(&self, id: &CheckpointId, read: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
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

    fn read_inner(&self, id: &CheckpointId, read: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
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
        read(row.value());
        self.access.record(Access {
            id: *id.as_bytes(),
            at_ms: now_ms(),
        });
        Ok(true)
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

impl Drop for Shared {
    fn drop(&mut self) {
        // Best effort: errors have nowhere to go from a destructor (use `Store::close` to see
        // them), and a panic here must not escape.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.flush()));
    }
}

impl Cache for Store {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        self.shared.save(id, entry)
    }

    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        let mut out = None;
        self.shared.read(id, &mut |b| out = Some(b.to_vec()))?;
        Ok(out)
    }

    #[inline]
    fn retrieve_with(&self, id: &CheckpointId, read: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        self.shared.read(id, read)
    }

    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Store::remove(self, id)
    }

    fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
        self.shared.registry.lock().register(function, counters);
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}
