//! [`StoreBuilder`]: a store's options, and opening it with them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64};

use parking_lot::{Mutex, RwLock};

use super::access::AccessLog;
#[cfg(feature = "fault-injection")]
use super::chunks;
use super::engine::{Db, Engine, Opener};
use super::flusher::Flusher;
use super::group_commit::Queue;
use super::hot::HotTier;
use super::options::{
    AccessMode, Clock, ConcurrencyMode, Durability, Limits, OpenCheck, SystemClock, duration_ms,
};
use super::save::Commit;
use super::{Handle, Shared, Store, exit, migrate, open};
use crate::error::{OpenError, OpenErrorKind};
use crate::record::{Compression, STREAM_ABOVE};

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
    #[cfg(feature = "remote")]
    remote: Option<(crate::remote::Remote, crate::remote::RemoteMode)>,
    #[cfg(feature = "remote")]
    publish: crate::remote::PublishMode,
    #[cfg(feature = "remote")]
    dedup: crate::remote::Dedup,
    compression: Compression,
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
            #[cfg(feature = "remote")]
            remote: None,
            #[cfg(feature = "remote")]
            publish: crate::remote::PublishMode::default(),
            #[cfg(feature = "remote")]
            dedup: crate::remote::Dedup::default(),
            compression: Compression::None,
        }
    }
}

/// An opener calling `open` with `engine` the first time, and after that (a reopen follows a
/// failure that broke the handle: an engine panic, an I/O error) with the full check if
/// `engine` asks for [`OpenCheck::Auto`].
pub(super) fn reopened_after_failure(
    engine: open::EngineOptions,
    open: impl Fn(&open::EngineOptions) -> Result<Db, OpenError> + Send + Sync + 'static,
) -> Opener {
    let after_failure = open::EngineOptions {
        check: match engine.check {
            OpenCheck::Auto => OpenCheck::Full,
            other => other,
        },
        ..engine.clone()
    };
    let reopened = std::sync::atomic::AtomicBool::new(false);
    Box::new(move || {
        if reopened.swap(true, std::sync::atomic::Ordering::AcqRel) {
            open(&after_failure)
        } else {
            open(&engine)
        }
    })
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

    /// What opening checks of the file (default [`OpenCheck::Auto`]: constant time for a file
    /// closed cleanly, every page after a crash or a failure; see [`OpenCheck`]).
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

    /// How the decorators on this store save their records, unless one is told otherwise
    /// ([`DecoratorCheckpoint::with_compression`](crate::DecoratorCheckpoint::with_compression)
    /// or `#[checkpoint(compress = ..)]`). Default [`Compression::None`]. Reading does not
    /// depend on it: a store may hold plain and compressed records side by side.
    ///
    /// ```
    /// # #[cfg(feature = "zstd")] {
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-zstd-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// use ckpt::{AutoIdentifier, Compression, DecoratorCheckpoint, Function, Store};
    /// let store = Store::builder().compression(Compression::zstd()).open(dir.join("checkpoints.redb"))?;
    /// let text = DecoratorCheckpoint::new(Function::new("doc", "text"), AutoIdentifier, store.clone());
    /// let long = text.call(1000usize, |n| "a compressible sentence. ".repeat(n))?;
    /// let id = text.identify(&1000usize)?;
    /// assert!(store.read_record(&id)?.expect("saved").len() < long.len() / 10);
    /// # drop((text, store)); std::fs::remove_dir_all(&dir)?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
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

    /// A shared tier behind the file (feature `remote`): local misses ask `remote`, and with
    /// [`RemoteMode::ReadWrite`](crate::RemoteMode::ReadWrite) results saved here are
    /// published to it (see [`Remote`](crate::Remote) for an example). The remote never fails
    /// a call: while it is down, calls are served from the file or computed.
    #[cfg(feature = "remote")]
    pub fn remote(
        mut self,
        remote: crate::remote::Remote,
        mode: crate::remote::RemoteMode,
    ) -> Self {
        self.remote = Some((remote, mode));
        self
    }

    /// When results are published to the remote (default
    /// [`PublishMode::Background`](crate::PublishMode::Background)).
    #[cfg(feature = "remote")]
    pub fn publish(mut self, mode: crate::remote::PublishMode) -> Self {
        self.publish = mode;
        self
    }

    /// Whether a missing result is computed once across the machines sharing the remote
    /// (default [`Dedup::None`](crate::Dedup::None); see [`Dedup`](crate::Dedup) for an
    /// example). With [`Dedup::Lease`](crate::Dedup::Lease), a read-write store leases an id
    /// in the remote before computing it, and waits for another machine's result while that
    /// machine holds the lease.
    #[cfg(feature = "remote")]
    pub fn dedup(mut self, dedup: crate::remote::Dedup) -> Self {
        self.dedup = dedup;
        self
    }

    pub(super) fn engine_options(&self) -> open::EngineOptions {
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
        self.open_with(
            path,
            reopened_after_failure(engine, move |engine| open::open(&at, engine)),
        )
    }

    /// Opens a store whose database `opener` opens (and opens again after a failure).
    pub(super) fn open_with(&self, path: PathBuf, opener: Opener) -> Result<Store, OpenError> {
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
        let started = std::time::Instant::now();
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
            function_ages: Mutex::default(),
            next_function_sweep_ms: AtomicU64::new(0),
            indexes: AtomicU8::new(indexes),
            access: AccessLog::new(self.access_log),
            registry: Mutex::default(),
            writer: Mutex::new(()),
            unsynced: Default::default(),
            queue: Queue::default(),
            flusher: Arc::clone(&flusher),
            chunk_len: self.chunk_len,
            access_mode: self.access,
            #[cfg(feature = "remote")]
            remote: self.remote.as_ref().map(|(remote, mode)| {
                crate::remote::Tier::new(remote.clone(), *mode, self.publish, self.dedup)
            }),
            #[cfg(feature = "remote")]
            backfills: Default::default(),
            compression: self.compression,
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
        tracing::info!(
            target: "ckpt",
            path = %path.display(),
            access = ?self.access,
            check = ?self.open_check,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(store)
    }
}
