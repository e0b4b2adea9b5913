//! The [`Cache`] trait, and the in-memory cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::error::Error;
use crate::id::{CheckpointId, Function};
use crate::stats::Counters;

/// A bulk save ([`Cache::save_many`]) is handed, and the redb store commits, at most this many
/// entries at a time, and at most [`BATCH_MAX_BYTES`] of records (but always at least one
/// entry): a transaction, and the encoded records waiting for it, stay bounded, and concurrent
/// saves are not held up for long.
pub(crate) const BATCH_MAX_SAVES: usize = 256 * 1024;
/// See [`BATCH_MAX_SAVES`].
pub(crate) const BATCH_MAX_BYTES: usize = 64 << 20;

/// Where checkpointed results live: saves and retrieves encoded results by id (the seed's
/// `CacheBase`).
///
/// A cache stores opaque bytes. The decorator encodes each result into a self-checking record
/// (checksum, type fingerprint, compute time, postcard payload) before [`save`](Cache::save), and
/// checks it after [`retrieve`](Cache::retrieve), so a cache needs no serde and cannot hand back
/// a wrong value: damaged bytes are a miss. The same id maps to the same bytes in every cache,
/// which lets entries move between a local store and a remote tier unchanged.
///
/// Implementations must be `Send + Sync` (one cache serves every thread) and report their own
/// failures as errors rather than panicking; the decorator's [`OnError`](crate::OnError) policy
/// decides what a failure means for the call.
///
/// A `HashMap` is a cache in a dozen lines:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use ckpt::{AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, Entry, Function};
///
/// #[derive(Default)]
/// struct DictCache(Mutex<HashMap<CheckpointId, Vec<u8>>>);
///
/// impl Cache for DictCache {
///     fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
///         self.0.lock().unwrap().insert(*id, entry.bytes().to_vec());
///         Ok(())
///     }
///     fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
///         Ok(self.0.lock().unwrap().get(id).cloned()) // None: the seed's CheckpointNotExist
///     }
/// }
///
/// let square = DecoratorCheckpoint::new(
///     Function::new(module_path!(), "square"),
///     AutoIdentifier,
///     DictCache::default(),
/// );
/// assert_eq!(square.call(12u64, |x| x * x)?, 144);
/// assert_eq!(square.call(12u64, |_| -> u64 { unreachable!("served from the cache") })?, 144);
/// # Ok::<(), ckpt::Error>(())
/// ```
pub trait Cache: Send + Sync {
    /// Stores `entry` under `id`, replacing what was there.
    ///
    /// # Errors
    /// When the entry could not be stored; nothing may have been half-stored.
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error>;

    /// The bytes stored under `id`, or `None` when there are none.
    ///
    /// # Errors
    /// When the cache could not be read. "Not there" is `Ok(None)`, never an error.
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error>;

    /// Hands the bytes stored under `id` to `read` without copying them, and says whether there
    /// were any. The decorator's hit path calls this; the default calls
    /// [`retrieve`](Cache::retrieve). Override it when the bytes can be lent in place.
    ///
    /// # Errors
    /// As [`retrieve`](Cache::retrieve).
    fn retrieve_with(&self, id: &CheckpointId, read: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        match self.retrieve(id)? {
            Some(bytes) => {
                read(&bytes);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes the entry under `id`, saying whether there was one. The decorator calls it to drop
    /// a stored value that failed its checks. The default does nothing.
    ///
    /// # Errors
    /// When the cache could not be written.
    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        let _ = id;
        Ok(false)
    }

    /// Stores several entries, as [`save`](Cache::save) would one by one and in this order (a
    /// later entry with the same id wins), but lets the cache write them together: the redb
    /// [`Store`](crate::Store) writes them in a few transactions, each committed (and synced)
    /// once, instead of one per entry. The default saves them one by one.
    ///
    /// [`DecoratorCheckpoint::save_all`](crate::DecoratorCheckpoint::save_all) calls this.
    ///
    /// # Errors
    /// When an entry could not be stored. The entries before it may be stored: a cache that
    /// writes in batches stores each batch whole or not at all.
    fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
        for (id, entry) in entries {
            self.save(id, entry)?;
        }
        Ok(())
    }

    /// Called once by each decorator before its first call, with the function it checkpoints and
    /// its live counters, so a cache that keeps statistics can persist them. The default does
    /// nothing.
    ///
    /// # Errors
    /// When the cache cannot record the function; the decorator retries on its next call.
    fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
        let _ = (function, counters);
        Ok(())
    }
}

/// One result to save: its encoded bytes, and what they are the result of.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    function: &'a Function,
    bytes: &'a [u8],
    compute: Duration,
}

impl<'a> Entry<'a> {
    pub(crate) fn new(function: &'a Function, bytes: &'a [u8], compute: Duration) -> Self {
        Entry {
            function,
            bytes,
            compute,
        }
    }

    /// The encoded result: store these bytes unchanged and hand them back on retrieve.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The function whose result this is.
    pub fn function(&self) -> &'a Function {
        self.function
    }

    /// How long the call took.
    pub fn compute_time(&self) -> Duration {
        self.compute
    }
}

macro_rules! forward_cache {
    ($($ty:ty),*) => {$(
        impl<C: Cache + ?Sized> Cache for $ty {
            fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
                (**self).save(id, entry)
            }
            fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
                (**self).save_many(entries)
            }
            fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
                (**self).retrieve(id)
            }
            fn retrieve_with(
                &self,
                id: &CheckpointId,
                read: &mut dyn FnMut(&[u8]),
            ) -> Result<bool, Error> {
                (**self).retrieve_with(id, read)
            }
            fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
                (**self).remove(id)
            }
            fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
                (**self).register(function, counters)
            }
        }
    )*};
}

forward_cache!(Arc<C>, Box<C>, &C);

/// A cache in memory, for tests and short-lived processes. Unbounded: it holds every result
/// until [`clear`](MemoryCache::clear) or drop. Cloning shares the entries.
///
/// ```
/// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, MemoryCache};
/// let cache = MemoryCache::new();
/// let twice = DecoratorCheckpoint::new(Function::new("doc", "twice"), AutoIdentifier, cache.clone());
/// assert_eq!(twice.call(21u32, |x| x * 2)?, 42);
/// assert_eq!(cache.len(), 1);
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryCache {
    entries: Arc<RwLock<HashMap<CheckpointId, Arc<[u8]>>>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        MemoryCache::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.read().is_empty()
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.write().clear();
    }
}

impl Cache for MemoryCache {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        self.entries.write().insert(*id, Arc::from(entry.bytes()));
        Ok(())
    }

    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.entries.read().get(id).map(|b| b.to_vec()))
    }

    fn retrieve_with(&self, id: &CheckpointId, read: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        // Clone the Arc out so `read` runs without the lock held.
        let bytes = self.entries.read().get(id).cloned();
        match bytes {
            Some(b) => {
                read(&b);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Ok(self.entries.write().remove(id).is_some())
    }
}
