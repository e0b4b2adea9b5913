//! The [`Cache`] trait, and the in-memory cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function};
use crate::record::{Compression, EncodeRecord, RecordSink};
pub use crate::record::{Lent, Part, Parts};
use crate::stats::Counters;

mod lease;
mod pending;
pub use lease::{Lease, LeaseGuard};
pub(crate) use pending::block_on;
pub use pending::{LeaseCompleter, PendingLease, PendingSave, SaveCompleter};

/// A bulk save ([`Cache::save_many`]) is handed, and the redb store commits, at most this many
/// entries at a time, and at most [`BATCH_MAX_BYTES`] of records (but always at least one
/// entry): a transaction, and the encoded records waiting for it, stay bounded. Large on
/// purpose: each transaction copies every B-tree leaf it touches, and random ids touch nearly
/// every leaf of a large table, so 100,000 saves in batches of 16,384 cost three times one
/// transaction (`benches/bulk.rs`, profiled).
pub(crate) const BATCH_MAX_SAVES: usize = 256 * 1024;
/// See [`BATCH_MAX_SAVES`].
pub(crate) const BATCH_MAX_BYTES: usize = 64 << 20;

/// Where checkpointed results live: saves and retrieves encoded results by id (Python
/// `checkpointing`'s `CacheBase`).
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
/// # What to implement
///
/// | methods | when | default |
/// |---|---|---|
/// | [`save`](Cache::save), [`retrieve`](Cache::retrieve) | always: a cache is these two | — |
/// | [`retrieve_parts`](Cache::retrieve_parts) | to lend stored bytes in place (no copy), or in pieces | `retrieve`, lent whole |
/// | [`save_large`](Cache::save_large), [`save_many`](Cache::save_many) | to write a large value as it is encoded, or many at once | one buffer; one `save` each |
/// | [`save_deferred`](Cache::save_deferred) | when a save blocks (an fsync, a network write): async callers await it instead | `save`, inline |
/// | [`remove`](Cache::remove) | to drop a record that failed its checks | keeps it |
/// | [`register`](Cache::register) | to persist per-function statistics | nothing |
/// | [`flight_scope`](Cache::flight_scope) | when clones of a handle share storage | the handle's address |
/// | [`compression`](Cache::compression) | to compress its decorators' records by default | [`Compression::None`] |
/// | [`lease`](Cache::lease) | when several machines share the cache: one computes a miss, the others wait | granted, nothing held |
///
/// A `HashMap` is a cache in a dozen lines:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use ckpt::{AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, Function};
/// use ckpt::cache::Entry;
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
///         Ok(self.0.lock().unwrap().get(id).cloned()) // None: nothing stored (CheckpointNotExist)
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
    // The two a cache must write.

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

    // Speed: lending in place, large values, bulk saves.

    /// Lends the record stored under `id` to `read`, whole or in parts (see [`Lent`]), and says
    /// whether there was one. The decorator's hit path calls this. The default lends what
    /// [`retrieve`](Cache::retrieve) returns, whole; a cache that can lend its bytes in place
    /// (no copy), or keeps large records in pieces, overrides it, so that decoding never holds
    /// a large value and its record in memory at once.
    ///
    /// # Errors
    /// As [`retrieve`](Cache::retrieve).
    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        match self.retrieve(id)? {
            Some(bytes) => {
                read(Lent::whole(&bytes));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// As [`retrieve_parts`](Cache::retrieve_parts), also saying how long ago the lent entry
    /// was saved, by the cache's clock (`None`: the cache does not know). The decorator calls
    /// this instead of `retrieve_parts` for a function with a maximum age
    /// ([`DecoratorCheckpoint::with_max_age`](crate::DecoratorCheckpoint::with_max_age)), and
    /// treats an entry of unknown age as expired: it never returns a result older than asked.
    /// The default lends what `retrieve_parts` lends, of unknown age; the redb
    /// [`Store`](crate::Store) and [`MemoryCache`] know their entries' ages.
    ///
    /// # Errors
    /// As [`retrieve`](Cache::retrieve).
    fn retrieve_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        self.retrieve_parts(id, &mut |lent| read(lent, None))
    }

    /// Stores a large result under `id`, replacing what was there. The decorator calls this
    /// instead of [`save`](Cache::save) when a record would be longer than 512 KiB, and hands
    /// the value over unencoded: [`LargeEntry`] encodes it as the cache writes it, so a record
    /// of hundreds of MiB never sits in memory next to its value. The default encodes the record
    /// into one buffer and calls `save`.
    ///
    /// # Errors
    /// As [`save`](Cache::save), and when the value cannot be encoded.
    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
        let bytes = entry.to_vec()?;
        self.save(
            id,
            &Entry {
                value_type: entry.value_type(),
                ..Entry::new(entry.function(), &bytes, entry.compute_time())
            },
        )
    }

    /// Starts saving `entry` under `id` and returns at once with a [`PendingSave`] that
    /// completes when the save has (durably, if the cache is durable). The async calls
    /// ([`DecoratorCheckpoint::call_async`](crate::DecoratorCheckpoint::call_async)) save
    /// through this and await the result, so that no executor thread blocks on a slow write.
    /// The entry is borrowed for this call only: a cache that finishes the save later copies
    /// what it needs. The default saves inline ([`save`](Cache::save)) and returns the result
    /// ready, which is right for a cache whose saves are quick (memory); the redb
    /// [`Store`](crate::Store) queues the save for its group commit, which its background
    /// thread leads, and completes it after the commit.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    /// use ckpt::cache::{Entry, PendingSave};
    /// use ckpt::{Cache, CheckpointId};
    ///
    /// /// Saves on a thread of its own (a slow disk, a network store).
    /// #[derive(Default)]
    /// struct SlowCache(Arc<Mutex<HashMap<CheckpointId, Vec<u8>>>>);
    ///
    /// impl Cache for SlowCache {
    ///     fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
    ///         self.0.lock().unwrap().insert(*id, entry.bytes().to_vec());
    ///         Ok(())
    ///     }
    ///     fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
    ///         Ok(self.0.lock().unwrap().get(id).cloned())
    ///     }
    ///     fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> PendingSave {
    ///         let (done, pending) = PendingSave::channel();
    ///         let (map, id, bytes) = (Arc::clone(&self.0), *id, entry.bytes().to_vec());
    ///         std::thread::spawn(move || {
    ///             map.lock().unwrap().insert(id, bytes);
    ///             done.complete(Ok(()));
    ///         });
    ///         pending
    ///     }
    /// }
    /// # let _ = SlowCache::default();
    /// ```
    fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> PendingSave {
        PendingSave::ready(self.save(id, entry))
    }

    // Async calls and a far tier.

    /// As [`retrieve_parts`](Cache::retrieve_parts), without asking a slow tier behind this
    /// cache (see [`fetch_far`](Cache::fetch_far)). Async calls look up through this, so that
    /// their executor's thread never waits for a network. The default is `retrieve_parts`.
    ///
    /// # Errors
    /// As [`retrieve`](Cache::retrieve).
    fn retrieve_parts_near(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        self.retrieve_parts(id, read)
    }

    /// As [`retrieve_aged`](Cache::retrieve_aged), without asking a slow tier behind this
    /// cache (see [`fetch_far`](Cache::fetch_far)). The default is `retrieve_aged`.
    ///
    /// # Errors
    /// As [`retrieve`](Cache::retrieve).
    fn retrieve_aged_near(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        self.retrieve_aged(id, read)
    }

    /// Asks the slow tier behind this cache (the redb [`Store`](crate::Store)'s remote) for
    /// `id`, off the caller's thread, after a miss of the `_near` lookups: the returned save
    /// completes once the far tier answered, and whatever it had is then in this cache (a
    /// backfill), for the next `_near` lookup to find. `None`, the default: there is no such
    /// tier, and the `_near` lookups asked everything. An async call awaits it, so its
    /// executor's thread never blocks on the network; a sync call never calls it (its
    /// `retrieve_*` read through).
    fn fetch_far(&self, id: &CheckpointId) -> Option<PendingSave> {
        let _ = id;
        None
    }

    // Upkeep.

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

    // Statistics and sharing.

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

    /// Called once by a decorator whose function has a maximum age and no use for expired
    /// entries (see [`DecoratorCheckpoint::with_max_age`](crate::DecoratorCheckpoint::with_max_age)):
    /// the cache may remove `function`'s entries saved more than `max_age` ago, as it removes
    /// those its own limits expire. The redb [`Store`](crate::Store) does so in its usual expiry
    /// (with each write, at most every few seconds, and on [`Store::expire`](crate::Store::expire));
    /// the default does nothing (expired entries are still never returned).
    ///
    /// # Errors
    /// When the cache cannot record the policy; the decorator retries on its next call.
    fn expire_function(&self, function: &Function, max_age: Duration) -> Result<(), Error> {
        let _ = (function, max_age);
        Ok(())
    }

    /// Which handles are one cache, for single flight: concurrent misses of one id through
    /// handles with equal scopes compute once, whichever decorators they go through. The
    /// default is the handle's own address, right for a cache shared by reference or `Arc` (the
    /// forwarding implementations for `&C`, `Box<C>` and `Arc<C>` pass it through). A cache
    /// whose clones share their storage (as [`Store`](crate::Store) and [`MemoryCache`] do)
    /// returns the address of what they share. The value is only compared, never dereferenced.
    fn flight_scope(&self) -> usize {
        (self as *const Self).cast::<()>().addr()
    }

    /// How decorators on this cache store their records unless told otherwise
    /// ([`DecoratorCheckpoint::with_compression`](crate::DecoratorCheckpoint::with_compression)).
    /// Asked on each save, never on a hit (a record says whether it is compressed). The default
    /// is [`Compression::None`]; a [`Store`](crate::Store) returns its
    /// [`StoreBuilder::compression`](crate::StoreBuilder::compression).
    fn compression(&self) -> Compression {
        Compression::None
    }

    /// Called by the decorator on a miss it is about to compute (after its second look, as the
    /// single flight's leader: once per process and id at a time), so that a cache shared by
    /// several machines can have one of them compute and the others wait for its result. It
    /// answers [`Lease::Granted`] (compute; the guard is dropped once the result is saved, or
    /// the computation failed) or [`Lease::Served`] (another machine's result arrived while
    /// this one waited; the decorator looks it up again). The default grants at once and holds
    /// nothing; the redb [`Store`](crate::Store) takes a lease object in its remote tier with
    /// `StoreBuilder::dedup(Dedup::Lease { .. })` (feature `remote`).
    ///
    /// # Errors
    /// When the cache could not coordinate (a shared store that fails): the decorator applies
    /// its [`OnError`](crate::OnError) policy, and under the default computes without a lease.
    fn lease(&self, id: &CheckpointId) -> Result<Lease, Error> {
        let _ = id;
        Ok(Lease::Granted(LeaseGuard::none()))
    }

    /// [`lease`](Cache::lease) for an async caller: a lease that may take a while (a wait for
    /// another machine) taken elsewhere, to be awaited, so that the executor's thread never
    /// blocks on it. `None` (the default) means the async caller calls `lease` itself, right
    /// for every cache whose `lease` answers at once (a cache of your own that coordinates
    /// through a slow service should override both). The redb [`Store`](crate::Store) with
    /// `Dedup::Lease` takes and waits for its lease on a thread of its remote's runtime, and
    /// its guard, dropped on the caller's thread, releases the lease from there too.
    fn lease_far(&self, id: &CheckpointId) -> Option<PendingLease> {
        let _ = id;
        None
    }
}

/// One result to save: its encoded bytes, and what they are the result of.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    function: &'a Function,
    bytes: &'a [u8],
    compute: Duration,
    value_type: Option<&'static str>,
    /// When the result was first saved (ms since the epoch), if earlier than this save: a
    /// backfill from a remote tier keeps its object's age.
    pub(crate) created_ms: Option<u64>,
}

impl<'a> Entry<'a> {
    pub(crate) fn new(function: &'a Function, bytes: &'a [u8], compute: Duration) -> Self {
        Entry {
            function,
            bytes,
            compute,
            value_type: None,
            created_ms: None,
        }
    }

    pub(crate) fn with_value_type(mut self, name: &'static str) -> Self {
        self.value_type = Some(name);
        self
    }

    /// The Rust type of the value, as `std::any::type_name` spells it, when the caller knows
    /// it (a decorator always does). For display only (`ckpt show`): the spelling is not
    /// stable across compilers, and the record's type fingerprint is what a lookup checks.
    pub fn value_type(&self) -> Option<&'static str> {
        self.value_type
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

/// A large result to save: its value, encoded into a record as the cache writes it (see
/// [`Cache::save_large`]).
///
/// The record is the same, byte for byte, as the one [`Entry::bytes`] would hold for the value:
/// [`to_vec`](Self::to_vec) gives it in one buffer, [`write_to`](Self::write_to) streams it.
pub struct LargeEntry<'a> {
    function: &'a Function,
    compute: Duration,
    record: &'a dyn EncodeRecord,
    value_type: Option<&'static str>,
    /// When the record was first saved (ms since the epoch), if not now: a backfill keeps the
    /// remote object's time.
    pub(crate) created_ms: Option<u64>,
}

impl<'a> LargeEntry<'a> {
    pub(crate) fn new(
        function: &'a Function,
        record: &'a dyn EncodeRecord,
        compute: Duration,
    ) -> Self {
        LargeEntry {
            function,
            compute,
            record,
            value_type: None,
            created_ms: None,
        }
    }

    pub(crate) fn with_value_type(mut self, name: &'static str) -> Self {
        self.value_type = Some(name);
        self
    }

    /// The Rust type of the value (see [`Entry::value_type`]).
    pub fn value_type(&self) -> Option<&'static str> {
        self.value_type
    }

    /// The function whose result this is.
    pub fn function(&self) -> &'a Function {
        self.function
    }

    /// How long the call took.
    pub fn compute_time(&self) -> Duration {
        self.compute
    }

    /// Encodes the record into one buffer: the bytes [`Cache::save`] would get.
    ///
    /// # Errors
    /// When the value cannot be encoded.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let sum = self.record.write_unsealed(&mut out)?;
        out[..8].copy_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Writes the record to `out` in order, without holding it in memory, and returns its
    /// length. The value is encoded twice: the record starts with the checksum of what follows.
    ///
    /// # Errors
    /// When the value cannot be encoded (or encodes differently the second time), or `out`
    /// fails.
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> Result<u64, Error> {
        struct Measure(u64);
        impl RecordSink for Measure {
            fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
                self.0 += bytes.len() as u64;
                Ok(())
            }
        }
        /// Writes the record through, with the checksum in its first 8 bytes.
        struct Through<'w> {
            out: &'w mut dyn std::io::Write,
            sum: [u8; 8],
            at: u64,
        }
        impl RecordSink for Through<'_> {
            fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
                let io = |e| Error::with_source(ErrorKind::Cache, "cannot write a record", e);
                let mut bytes = bytes;
                while self.at < 8 && !bytes.is_empty() {
                    self.out
                        .write_all(&self.sum[self.at as usize..][..1])
                        .map_err(io)?;
                    self.at += 1;
                    bytes = &bytes[1..];
                }
                self.out.write_all(bytes).map_err(io)?;
                self.at += bytes.len() as u64;
                Ok(())
            }
        }
        let mut measured = Measure(0);
        let sum = self.record.write_unsealed(&mut measured)?;
        let mut through = Through {
            out,
            sum: sum.to_le_bytes(),
            at: 0,
        };
        let again = self.record.write_unsealed(&mut through)?;
        if again != sum || through.at != measured.0 {
            return Err(Error::new(
                ErrorKind::Encode,
                "the value encoded differently twice (its Serialize implementation is not \
                 deterministic)",
            ));
        }
        Ok(through.at)
    }

    pub(crate) fn write_unsealed(&self, out: &mut dyn RecordSink) -> Result<u64, Error> {
        self.record.write_unsealed(out)
    }

    /// The type fingerprint of the record.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub(crate) fn fingerprint(&self) -> u64 {
        self.record.fingerprint()
    }
}

impl std::fmt::Debug for LargeEntry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LargeEntry")
            .field("function", &self.function)
            .field("compute", &self.compute)
            .finish_non_exhaustive()
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
            fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> PendingSave {
                (**self).save_deferred(id, entry)
            }
            fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
                (**self).retrieve(id)
            }
            fn retrieve_parts(
                &self,
                id: &CheckpointId,
                read: &mut dyn FnMut(Lent<'_>),
            ) -> Result<bool, Error> {
                (**self).retrieve_parts(id, read)
            }
            fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
                (**self).save_large(id, entry)
            }
            fn retrieve_aged(
                &self,
                id: &CheckpointId,
                read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
            ) -> Result<bool, Error> {
                (**self).retrieve_aged(id, read)
            }
            fn retrieve_parts_near(
                &self,
                id: &CheckpointId,
                read: &mut dyn FnMut(Lent<'_>),
            ) -> Result<bool, Error> {
                (**self).retrieve_parts_near(id, read)
            }
            fn retrieve_aged_near(
                &self,
                id: &CheckpointId,
                read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
            ) -> Result<bool, Error> {
                (**self).retrieve_aged_near(id, read)
            }
            fn fetch_far(&self, id: &CheckpointId) -> Option<PendingSave> {
                (**self).fetch_far(id)
            }
            fn expire_function(&self, function: &Function, max_age: Duration) -> Result<(), Error> {
                (**self).expire_function(function, max_age)
            }
            fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
                (**self).remove(id)
            }
            fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
                (**self).register(function, counters)
            }
            fn flight_scope(&self) -> usize {
                (**self).flight_scope()
            }
            fn compression(&self) -> Compression {
                (**self).compression()
            }
            fn lease(&self, id: &CheckpointId) -> Result<Lease, Error> {
                (**self).lease(id)
            }
            fn lease_far(&self, id: &CheckpointId) -> Option<PendingLease> {
                (**self).lease_far(id)
            }
        }
    )*};
}

forward_cache!(Arc<C>, Box<C>, &C);

/// A record, and when it was saved.
type Saved = (Arc<[u8]>, Instant);

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
    /// Each record with when it was saved (for [`Cache::retrieve_aged`]).
    entries: Arc<RwLock<HashMap<CheckpointId, Saved>>>,
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
    fn flight_scope(&self) -> usize {
        Arc::as_ptr(&self.entries).addr()
    }

    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        self.entries
            .write()
            .insert(*id, (Arc::from(entry.bytes()), Instant::now()));
        Ok(())
    }

    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.entries.read().get(id).map(|(b, _)| b.to_vec()))
    }

    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        self.retrieve_aged(id, &mut |lent, _| read(lent))
    }

    fn retrieve_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        // Clone the Arc out so `read` runs without the lock held.
        let found = self.entries.read().get(id).cloned();
        match found {
            Some((bytes, saved)) => {
                read(Lent::whole(&bytes), Some(saved.elapsed()));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Ok(self.entries.write().remove(id).is_some())
    }
}
