//! [`DecoratorCheckpoint`]: an identifier and a cache bound to one function.

mod async_call;

use self::async_call::Spawner;
pub use self::async_call::{RefreshTask, run_on_thread};

use std::any::TypeId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{
    BATCH_MAX_BYTES, BATCH_MAX_SAVES, Cache, Entry, LargeEntry, Lease, LeaseGuard, Lent,
};
use crate::error::{Error, ErrorKind};
use crate::flight::{FLIGHTS, Joined, Landing, Refreshes};
use crate::id::{CheckpointId, Function};
use crate::identifier::{AutoIdentifier, Call, Identifier};
use crate::record::{self, Compression, Decoded, Encoded, Encoder, Rejected, STREAM_ABOVE};
use crate::stats::{CallStats, Counters, Event};

/// What a decorator does when it cannot identify a call, read the cache, or save a result.
///
/// Unlike Python `checkpointing`'s `on_error`, failures while building the id fall under the policy too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnError {
    /// Return the error to the caller.
    Raise,
    /// Report the error through the warning hook (standard error by default, see
    /// [`set_warning_hook`](crate::set_warning_hook)), then carry on as if uncached: the
    /// function runs, and its result is returned.
    #[default]
    Warn,
    /// Carry on as if uncached, silently. The error is still counted in
    /// [`CallStats::errors`](crate::CallStats::errors).
    Ignore,
}

/// Whether a call may be answered from the cache.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Retrieve, else run and save.
    Call,
    /// Run and overwrite.
    Rerun,
}

/// Which tiers of the cache a lookup asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Every tier: a sync call, whose cache reads through to a far tier behind it.
    Through,
    /// The near tier only: an async call, which awaits the far one (`Cache::fetch_far`) so
    /// that its executor's thread never waits for a network.
    Near,
}

/// What a call does with an entry older than the function's maximum age
/// ([`DecoratorCheckpoint::with_max_age`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refresh {
    /// The entry is a miss: the call computes a fresh result, saves it and returns it. The cache
    /// may remove expired entries of the function in its usual expiry
    /// ([`Cache::expire_function`](crate::Cache::expire_function)).
    #[default]
    Wait,
    /// Stale while revalidate: [`call_or_stale`](DecoratorCheckpoint::call_or_stale) and
    /// [`call_ok_or_stale`](DecoratorCheckpoint::call_ok_or_stale) return the expired value at
    /// once and recompute it on a background thread (once, however many calls find it expired
    /// meanwhile: single flight); the calls after it get the fresh value. A refresh that fails
    /// (a panic, or a result not stored) keeps the expired value and warns under the error
    /// policy. Expired entries are kept (the cache's own limits still apply). [`call`] and
    /// [`call_ok`], whose function need not be `Send`, recompute an expired entry as under
    /// [`Wait`](Refresh::Wait).
    ///
    /// For async functions, [`call_async_or_stale`] and [`call_ok_async_or_stale`] do the same
    /// with the refresh as a task, handed to the decorator's spawner
    /// ([`with_spawner`](DecoratorCheckpoint::with_spawner): `tokio::spawn`, say); without one
    /// they recompute as under [`Wait`](Refresh::Wait), as the other async calls always do.
    ///
    /// [`call`]: DecoratorCheckpoint::call
    /// [`call_ok`]: DecoratorCheckpoint::call_ok
    /// [`call_async_or_stale`]: DecoratorCheckpoint::call_async_or_stale
    /// [`call_ok_async_or_stale`]: DecoratorCheckpoint::call_ok_async_or_stale
    Stale,
}

/// What the cache said before a miss was computed ([`Cache::lease`]).
enum Leased<V> {
    /// Compute, holding the guard until the result is saved (and published).
    Compute(LeaseGuard),
    /// Another machine computed it meanwhile.
    Served(V),
}

/// What a lookup found.
enum Fetched<V> {
    /// Nothing usable: absent, damaged, of another type, or expired (and not wanted stale).
    Miss,
    Fresh(V),
    /// Older than the maximum age, and wanted anyway (stale while revalidate).
    Stale(V),
}

/// An identifier and a cache bound to one function: Python `checkpointing`'s
/// `DecoratorCheckpoint(identifier, cache)`.
///
/// [`call`](Self::call) returns the stored result for an identical earlier call, or runs the
/// function and stores its result; [`rerun`](Self::rerun) runs and overwrites. When several
/// threads miss the same id of one cache at once, whichever decorators they call through (one
/// per worker or request is fine), the function runs once and the others wait for its result:
/// no store-wide lock is held while it runs, and a panic in it releases the waiters.
///
/// ```
/// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-deco-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = Store::open(dir.join("checkpoints.redb"))?;
/// let fib = DecoratorCheckpoint::new(Function::new(module_path!(), "fib"), AutoIdentifier, store)
///     .with_on_error(OnError::Raise);
///
/// fn slow_fib(n: u64) -> u64 { if n < 2 { n } else { slow_fib(n - 1) + slow_fib(n - 2) } }
///
/// assert_eq!(fib.call(20u64, slow_fib)?, 6765); // computed and saved
/// assert_eq!(fib.call(20u64, slow_fib)?, 6765); // read back
/// assert_eq!((fib.stats().misses, fib.stats().hits), (1, 1));
/// # drop(fib); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DecoratorCheckpoint<I = AutoIdentifier, C = crate::Store> {
    function: Function,
    identifier: I,
    cache: C,
    on_error: OnError,
    counters: Arc<Counters>,
    registered: AtomicBool,
    /// The type fingerprint of the first value type this decorator decoded or saved (a
    /// decorator almost always has one), so that a hit compares two words instead of looking
    /// the type up in the process-wide cache.
    fingerprint: OnceLock<(TypeId, u64)>,
    /// Entries saved longer ago are expired (see [`Refresh`]).
    max_age: Option<Duration>,
    refresh: Refresh,
    /// Background refreshes in flight (shared with them).
    refreshes: Arc<Refreshes>,
    /// Runs an async function's background refresh (`with_spawner`); `None`: async calls
    /// recompute an expired entry as under `Refresh::Wait`.
    spawner: Option<Spawner>,
    /// `None`: the cache's default (`Cache::compression`), asked at each save.
    compression: Option<Compression>,
}

impl<I, C: Cache> DecoratorCheckpoint<I, C> {
    /// Binds `identifier` and `cache` to `function`, with [`OnError::Warn`].
    pub fn new(function: Function, identifier: I, cache: C) -> Self {
        let counters = Arc::new(Counters::for_function(|| function.path()));
        DecoratorCheckpoint {
            function,
            identifier,
            cache,
            on_error: OnError::default(),
            counters,
            registered: AtomicBool::new(false),
            fingerprint: OnceLock::new(),
            max_age: None,
            refresh: Refresh::Wait,
            refreshes: Arc::default(),
            spawner: None,
            compression: None,
        }
    }

    /// The same decorator with a maximum age: a stored result saved longer ago than `max_age`
    /// is never returned as fresh, whatever the cache's own limits. What a call does with it
    /// instead is the [`Refresh`] mode ([`with_refresh`](Self::with_refresh)); by default it is a
    /// miss, and the cache is asked to remove the function's expired entries in its usual
    /// expiry. A cache that cannot say how old an entry is (see
    /// [`Cache::retrieve_aged`](crate::Cache::retrieve_aged)) has every entry treated as expired.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use ckpt::store::ManualClock;
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-max-age-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    ///
    /// let clock = ManualClock::new(SystemTime::now()); // the system clock in real use
    /// let store = Store::builder().clock(clock.clone()).open(dir.join("checkpoints.redb"))?;
    /// let rates = DecoratorCheckpoint::new(Function::new("doc", "rates"), AutoIdentifier, store)
    ///     .with_max_age(Duration::from_secs(3600));
    /// let fetch = |day: u32| day * 10; // stands for a call to a slow service
    /// assert_eq!(rates.call(1u32, fetch)?, 10); // computed
    /// clock.advance(Duration::from_secs(1800));
    /// assert_eq!(rates.call(1u32, fetch)?, 10); // fresh: a hit
    /// clock.advance(Duration::from_secs(1801));
    /// assert_eq!(rates.call(1u32, fetch)?, 10); // expired: computed again
    /// assert_eq!((rates.stats().hits, rates.stats().misses), (1, 2));
    /// # drop(rates); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The same decorator with another [`Refresh`] mode for expired entries (it matters only
    /// with a [maximum age](Self::with_max_age)).
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// [`with_max_age`](Self::with_max_age) if `Some` (for `checkpoint!`'s expansion).
    #[doc(hidden)]
    pub fn with_max_age_option(self, max_age: Option<Duration>) -> Self {
        match max_age {
            Some(age) => self.with_max_age(age),
            None => self,
        }
    }

    /// The maximum age, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// What a call does with an expired entry.
    pub fn refresh(&self) -> Refresh {
        self.refresh
    }

    /// Blocks until every background refresh this decorator started has finished (saved, or
    /// failed and warned). Useful before a process exits, and in tests.
    pub fn wait_refreshes(&self) {
        self.refreshes.wait();
    }

    /// The same decorator with another error policy.
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The same decorator saving its records as `compression` says, whatever its cache's default
    /// ([`Cache::compression`]). Hits read plain and compressed records alike.
    ///
    /// ```
    /// # #[cfg(feature = "zstd")] {
    /// use ckpt::{AutoIdentifier, Cache, Compression, DecoratorCheckpoint, Function, MemoryCache};
    /// let cache = MemoryCache::new();
    /// let report = DecoratorCheckpoint::new(Function::new("doc", "report"), AutoIdentifier, cache.clone())
    ///     .with_compression(Compression::Zstd { level: 9 });
    /// let text = report.call(500usize, |n| "row, row, row your boat\n".repeat(n))?;
    /// let stored = cache.retrieve(&report.identify(&500usize)?)?.expect("saved");
    /// assert!(stored.len() < text.len() / 20); // compressed
    /// assert_eq!(report.call(500usize, |_| -> String { unreachable!() })?, text); // decompressed on a hit
    /// # }
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// How this decorator saves its records: its own setting, else its cache's default.
    pub fn compression(&self) -> Compression {
        self.compression.unwrap_or_else(|| self.cache.compression())
    }

    /// The function this decorator checkpoints.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The identifier.
    pub fn identifier(&self) -> &I {
        &self.identifier
    }

    /// The cache.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// The error policy.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// What this decorator has counted since it was created (in memory only; the
    /// [`Store`](crate::Store) keeps the persistent per-function totals).
    pub fn stats(&self) -> CallStats {
        self.counters.snapshot()
    }

    /// The id of a call with `args`.
    ///
    /// # Errors
    /// When the identifier fails (see [`Identifier::identify`]); the error policy does not
    /// apply here.
    pub fn identify<A: ?Sized>(&self, args: &A) -> Result<CheckpointId, Error>
    where
        I: Identifier<A>,
    {
        self.identifier.identify(&Call::new(&self.function, args))
    }

    /// Returns the stored result of `f(args)`, or runs `f(args)` and stores its result.
    ///
    /// Whatever `f` returns is stored, a `Result`'s `Err` included; to store only `Ok` values use
    /// [`call_ok`](Self::call_ok).
    ///
    /// # Errors
    /// Only with [`OnError::Raise`]: when the call could not be identified, the cache could not
    /// be read, or the result could not be saved. Under the other policies the function runs
    /// instead and its result is returned.
    pub fn call<A, R>(&self, args: A, f: impl FnOnce(A) -> R) -> Result<R, Error>
    where
        I: Identifier<A>,
        R: Serialize + DeserializeOwned,
    {
        let id = self.identify(&args);
        self.execute(id, Mode::Call, || f(args), |r| Some(r), |v| v)
    }

    /// As [`call`](Self::call) for a function returning `Result`: only `Ok` values are stored,
    /// so a failed call runs again next time.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_ok<A, T, E>(
        &self,
        args: A,
        f: impl FnOnce(A) -> Result<T, E>,
    ) -> Result<Result<T, E>, Error>
    where
        I: Identifier<A>,
        T: Serialize + DeserializeOwned,
    {
        let id = self.identify(&args);
        self.execute(id, Mode::Call, || f(args), |r| r.as_ref().ok(), Ok)
    }

    /// Runs `f(args)` whatever is stored, and overwrites the stored result (Python `checkpointing`'s
    /// `f.rerun`).
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn rerun<A, R>(&self, args: A, f: impl FnOnce(A) -> R) -> Result<R, Error>
    where
        I: Identifier<A>,
        R: Serialize + DeserializeOwned,
    {
        let id = self.identify(&args);
        self.execute(id, Mode::Rerun, || f(args), |r| Some(r), |v| v)
    }

    /// As [`rerun`](Self::rerun), storing only an `Ok` result.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn rerun_ok<A, T, E>(
        &self,
        args: A,
        f: impl FnOnce(A) -> Result<T, E>,
    ) -> Result<Result<T, E>, Error>
    where
        I: Identifier<A>,
        T: Serialize + DeserializeOwned,
    {
        let id = self.identify(&args);
        self.execute(id, Mode::Rerun, || f(args), |r| r.as_ref().ok(), Ok)
    }

    /// As [`call`](Self::call), serving an expired entry while it is recomputed in the
    /// background under [`Refresh::Stale`] (stale while revalidate): the call returns the expired
    /// value at once, and a background thread runs `f(args)` and saves its result, once however
    /// many calls find the entry expired meanwhile. Without a maximum age or under
    /// [`Refresh::Wait`], it is [`call`](Self::call). The function and its arguments move to that
    /// thread, hence the `Send + 'static` bounds; the cache is cloned for it.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use ckpt::store::ManualClock;
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Refresh, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-stale-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    ///
    /// let clock = ManualClock::new(SystemTime::now()); // the system clock in real use
    /// let store = Store::builder().clock(clock.clone()).open(dir.join("checkpoints.redb"))?;
    /// let price = DecoratorCheckpoint::new(Function::new("doc", "price"), AutoIdentifier, store)
    ///     .with_max_age(Duration::from_secs(3600))
    ///     .with_refresh(Refresh::Stale);
    /// assert_eq!(price.call_or_stale(7u32, |x| x + 1)?, 8); // computed
    /// clock.advance(Duration::from_secs(7200));
    /// // Expired: the old value comes back at once; the new one is computed meanwhile.
    /// assert_eq!(price.call_or_stale(7u32, |x| x + 100)?, 8);
    /// price.wait_refreshes();
    /// assert_eq!(price.call_or_stale(7u32, |_| -> u32 { unreachable!("fresh") })?, 107);
    /// # drop(price); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call). A failed background refresh is not an error of any call: it goes
    /// through the error policy's warning ([`ErrorKind::Refresh`](crate::ErrorKind::Refresh)).
    pub fn call_or_stale<A, R>(
        &self,
        args: A,
        f: impl FnOnce(A) -> R + Send + 'static,
    ) -> Result<R, Error>
    where
        I: Identifier<A>,
        A: Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let id = self.identify(&args);
        self.execute_or_stale(id, Mode::Call, move || f(args), |r| Some(r), |v| v)
    }

    /// As [`call_ok`](Self::call_ok), serving an expired entry while it is recomputed in the
    /// background (see [`call_or_stale`](Self::call_or_stale)). A refresh that returns `Err`
    /// stores nothing: the expired value stays, and the next call tries again.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn call_ok_or_stale<A, T, E>(
        &self,
        args: A,
        f: impl FnOnce(A) -> Result<T, E> + Send + 'static,
    ) -> Result<Result<T, E>, Error>
    where
        I: Identifier<A>,
        A: Send + 'static,
        T: Serialize + DeserializeOwned + 'static,
        E: 'static,
        C: Clone + Send + Sync + 'static,
    {
        let id = self.identify(&args);
        self.execute_or_stale(id, Mode::Call, move || f(args), |r| r.as_ref().ok(), Ok)
    }

    /// Saves results computed elsewhere: for each `(args, value)`, stores `value` as the result
    /// of a call with `args`, replacing what was stored (as a [`rerun`](Self::rerun) would,
    /// without running anything). Returns how many were saved.
    ///
    /// The results are handed to the cache in large batches
    /// ([`Cache::save_many`](crate::Cache::save_many)): the redb [`Store`](crate::Store) writes
    /// each batch of up to 262,144 results (or 64 MiB) in one transaction with one fsync, where
    /// as many calls would each pay their own. Use it to seed a store from a parallel job, or to
    /// import results.
    ///
    /// `value` must be of the type a call stores (`R` for [`call`](Self::call), `T` for
    /// [`call_ok`](Self::call_ok)): its type's shape is recorded (see
    /// [`type_fingerprint`](crate::type_fingerprint), which is why `R` must be `Deserialize`
    /// too), and a later call expecting another shape treats the entry as a miss. Each entry records a compute time of zero, since ckpt
    /// did not time it, so hits on it add nothing to
    /// [`time_saved`](crate::CallStats::time_saved).
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-save-all-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let store = Store::open(dir.join("checkpoints.redb"))?;
    /// let square = DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, store);
    ///
    /// // Computed elsewhere (another machine, a rayon job), saved in one transaction.
    /// let saved = square.save_all((0..1000u64).map(|x| (x, x * x)))?;
    /// assert_eq!(saved, 1000);
    /// assert_eq!(square.call(12u64, |_| -> u64 { unreachable!("saved above") })?, 144);
    /// # drop(square); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The error policy does not apply (a bulk save is an explicit request): the first failure
    /// to identify arguments, encode a value or store a batch is returned. The batches before it
    /// stay saved; a failed batch saves nothing with the redb store.
    pub fn save_all<A, R>(&self, items: impl IntoIterator<Item = (A, R)>) -> Result<usize, Error>
    where
        I: Identifier<A>,
        R: Serialize + DeserializeOwned,
    {
        self.ensure_registered();
        let saved = self.save_all_inner(items);
        if saved.is_err() {
            self.counters.record(Event::Error);
        }
        saved
    }

    fn save_all_inner<A, R>(&self, items: impl IntoIterator<Item = (A, R)>) -> Result<usize, Error>
    where
        I: Identifier<A>,
        R: Serialize + DeserializeOwned,
    {
        let fingerprint = self.fingerprint::<R>();
        let compression = self.compression();
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut saved = 0;
        for (args, value) in items {
            let id = self.identify(&args)?;
            let Encoded::Whole(bytes) = record::encode_for_save(
                &value,
                fingerprint,
                Duration::ZERO,
                STREAM_ABOVE,
                compression,
            )?
            else {
                // Too large to batch: saved alone, after the batch so far (a later save of the
                // same id must still win).
                saved += self.save_batch(&mut batch, std::any::type_name::<R>())?;
                batch_bytes = 0;
                self.save_large(&id, &value, fingerprint, Duration::ZERO)?;
                self.counters.record(Event::Saved { spent_nanos: 0 });
                saved += 1;
                continue;
            };
            batch_bytes += bytes.len();
            batch.push((id, bytes));
            if batch.len() >= BATCH_MAX_SAVES || batch_bytes >= BATCH_MAX_BYTES {
                saved += self.save_batch(&mut batch, std::any::type_name::<R>())?;
                batch_bytes = 0;
            }
        }
        saved += self.save_batch(&mut batch, std::any::type_name::<R>())?;
        Ok(saved)
    }

    /// Hands `batch` to the cache's bulk save, and empties it.
    fn save_batch(
        &self,
        batch: &mut Vec<(CheckpointId, Vec<u8>)>,
        value_type: &'static str,
    ) -> Result<usize, Error> {
        if batch.is_empty() {
            return Ok(0);
        }
        let entries: Vec<(CheckpointId, Entry<'_>)> = batch
            .iter()
            .map(|(id, bytes)| {
                let entry = Entry::new(&self.function, bytes, Duration::ZERO);
                (*id, entry.with_value_type(value_type))
            })
            .collect();
        self.cache.save_many(&entries)?;
        for _ in 0..entries.len() {
            self.counters.record(Event::Saved { spent_nanos: 0 });
        }
        let n = entries.len();
        drop(entries);
        batch.clear();
        Ok(n)
    }

    /// The stored result for `id`, if there is a sound one of type `R`; never runs anything.
    ///
    /// A peek is not a call: it counts no hit, miss or type mismatch. A damaged record it finds
    /// is still counted (in [`CallStats::corrupt`]) and removed, as a call would.
    ///
    /// # Errors
    /// Under [`OnError::Raise`], when the cache could not be read.
    pub fn peek<R: DeserializeOwned>(&self, id: &CheckpointId) -> Result<Option<R>, Error> {
        let (found, decoded, _) = self.lend::<R>(id, Refresh::Wait, Reach::Through);
        if let Err(e) = found {
            self.fail(e)?;
        }
        match decoded {
            Some(Ok(Ok((value, _)))) => Ok(Some(value)),
            Some(Ok(Err(Rejected::Corrupt))) => {
                self.drop_corrupt(id)?;
                Ok(None)
            }
            Some(Err(e)) => {
                self.fail(e)?;
                Ok(None)
            }
            Some(Ok(Err(Rejected::TypeMismatch | Rejected::Unsupported))) | None => Ok(None),
        }
    }

    /// Looks `id` up and decodes what the cache lends, if anything, and says whether it is
    /// older than the maximum age. An expired entry is decoded only under [`Refresh::Stale`].
    #[inline]
    fn lend<V: DeserializeOwned>(
        &self,
        id: &CheckpointId,
        refresh: Refresh,
        reach: Reach,
    ) -> (Result<bool, Error>, Option<Decoded<V>>, bool) {
        let fingerprint = self.fingerprint::<V>();
        let mut decoded = None;
        let Some(max_age) = self.max_age else {
            let mut read = |lent: Lent<'_>| {
                decoded = Some(record::decode_lent::<V>(&lent, fingerprint));
            };
            let found = match reach {
                Reach::Through => self.cache.retrieve_parts(id, &mut read),
                Reach::Near => self.cache.retrieve_parts_near(id, &mut read),
            };
            return (found, decoded, false);
        };
        let mut expired = false;
        let mut read = |lent: Lent<'_>, age: Option<Duration>| {
            // Of unknown age: expired, so that nothing older than asked is returned as fresh.
            expired = age.is_none_or(|age| age > max_age);
            if !expired || refresh == Refresh::Stale {
                decoded = Some(record::decode_lent::<V>(&lent, fingerprint));
            }
        };
        let found = match reach {
            Reach::Through => self.cache.retrieve_aged(id, &mut read),
            Reach::Near => self.cache.retrieve_aged_near(id, &mut read),
        };
        (found, decoded, expired)
    }

    /// The type fingerprint of `V`: this decorator's own value type's is kept at hand, others
    /// come from the process-wide cache (each is traced once per process; see `record/shape.rs`).
    #[inline]
    fn fingerprint<V: DeserializeOwned>(&self) -> u64 {
        let ty = typeid::of::<V>();
        match self.fingerprint.get() {
            Some(&(known, fingerprint)) if known == ty => fingerprint,
            _ => {
                let fingerprint = record::fingerprint::<V>();
                let _ = self.fingerprint.set((ty, fingerprint));
                fingerprint
            }
        }
    }

    /// Counts a damaged record and removes it.
    fn drop_corrupt(&self, id: &CheckpointId) -> Result<(), Error> {
        self.counters.record(Event::Corrupt);
        tracing::warn!(
            target: "ckpt",
            module = self.function.module(),
            function = self.function.name(),
            id = %id,
            "a stored result failed its checks: dropped, and computed again"
        );
        if let Err(e) = self.cache.remove(id) {
            self.fail(e)?;
        }
        Ok(())
    }

    /// The engine behind every call: `keep` picks what of `run`'s result to store (`None`: store
    /// nothing), and `lift` turns a stored value back into a result.
    #[doc(hidden)]
    pub fn execute<R, V>(
        &self,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        run: impl FnOnce() -> R,
        keep: impl Fn(&R) -> Option<&V>,
        lift: impl FnOnce(V) -> R,
    ) -> Result<R, Error>
    where
        V: Serialize + DeserializeOwned,
    {
        self.ensure_registered();
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                self.fail(e)?;
                self.counters.record(Event::Miss);
                return Ok(self.run_unsaved(run));
            }
        };
        if mode == Mode::Rerun {
            self.counters.record(Event::Rerun);
            return self.run_and_save(&id, run, &keep).map(|(r, _)| r);
        }
        if let Fetched::Fresh(v) = self.fetch(&id, Refresh::Wait, Reach::Through)? {
            return Ok(lift(v));
        }
        self.compute_missing(id, run, &keep, lift)
    }

    /// As [`execute`](Self::execute), serving an expired entry while a background thread
    /// recomputes it, under [`Refresh::Stale`] with a maximum age.
    #[doc(hidden)]
    pub fn execute_or_stale<R, V>(
        &self,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        run: impl FnOnce() -> R + Send + 'static,
        keep: fn(&R) -> Option<&V>,
        lift: impl FnOnce(V) -> R,
    ) -> Result<R, Error>
    where
        V: Serialize + DeserializeOwned + 'static,
        R: 'static,
        C: Clone + Send + Sync + 'static,
    {
        let id = match id {
            Ok(id) if mode == Mode::Call && self.serves_stale() => id,
            id => return self.execute(id, mode, run, keep, lift),
        };
        self.ensure_registered();
        match self.fetch(&id, Refresh::Stale, Reach::Through)? {
            Fetched::Fresh(v) => Ok(lift(v)),
            Fetched::Stale(v) => {
                self.refresh_in_background(id, run, keep);
                Ok(lift(v))
            }
            Fetched::Miss => self.compute_missing(id, run, &keep, lift),
        }
    }

    fn serves_stale(&self) -> bool {
        self.max_age.is_some() && self.refresh == Refresh::Stale
    }

    /// A miss: computes once per id across callers (single flight), saves, returns.
    fn compute_missing<R, V>(
        &self,
        id: CheckpointId,
        run: impl FnOnce() -> R,
        keep: &impl Fn(&R) -> Option<&V>,
        lift: impl FnOnce(V) -> R,
    ) -> Result<R, Error>
    where
        V: Serialize + DeserializeOwned,
    {
        match FLIGHTS.join(self.cache.flight_scope(), id) {
            Joined::Leader(flight) => {
                // A leader that finished between our lookup and our join has left the map
                // already: its result is stored, so look once more before computing again.
                if let Some(v) = self.fetch_again(&id, Reach::Through) {
                    flight.land(Landing::Stored);
                    return Ok(lift(v));
                }
                // Another machine may be computing it: wait for its result, or lease it.
                let lease = match self.lease(&id)? {
                    Leased::Served(v) => {
                        flight.land(Landing::Stored);
                        return Ok(lift(v));
                    }
                    Leased::Compute(lease) => lease,
                };
                self.counters.record(Event::Miss);
                // On an error or a panic the guards drop: the flight lands as Abandoned, the
                // lease is released.
                let (r, stored) = self.run_and_save(&id, run, keep)?;
                flight.land(if stored {
                    Landing::Stored
                } else {
                    Landing::NotStored
                });
                // Released after the save, which published the result while it was held.
                drop(lease);
                Ok(r)
            }
            Joined::Waiter(flight) => {
                if flight.wait() == Landing::Stored
                    && let Some(v) = self.fetch_again(&id, Reach::Through)
                {
                    return Ok(lift(v));
                }
                let _lease = match self.lease(&id)? {
                    Leased::Served(v) => return Ok(lift(v)),
                    Leased::Compute(lease) => lease,
                };
                self.counters.record(Event::Miss);
                self.run_and_save(&id, run, keep).map(|(r, _)| r)
            }
            Joined::Reentrant => {
                self.counters.record(Event::Miss);
                Ok(self.run_unsaved(run))
            }
        }
    }

    /// Asks the cache before computing a miss of `id` ([`Cache::lease`]): a cache shared by
    /// several machines lets one compute and the others wait for its result. A failure to
    /// coordinate falls under the error policy, and the call computes without a lease.
    fn lease<V: DeserializeOwned>(&self, id: &CheckpointId) -> Result<Leased<V>, Error> {
        self.leased(id, self.cache.lease(id), Reach::Through)
    }

    /// What the decorator does with the cache's answer about a lease.
    fn leased<V: DeserializeOwned>(
        &self,
        id: &CheckpointId,
        lease: Result<Lease, Error>,
        reach: Reach,
    ) -> Result<Leased<V>, Error> {
        match lease {
            Ok(Lease::Granted(lease)) => Ok(Leased::Compute(lease)),
            // Served into the cache: read as any hit (a value of another type: computed).
            Ok(Lease::Served) => Ok(match self.fetch_again(id, reach) {
                Some(v) => Leased::Served(v),
                None => Leased::Compute(LeaseGuard::none()),
            }),
            Err(e) => {
                self.fail(e)?;
                Ok(Leased::Compute(LeaseGuard::none()))
            }
        }
    }

    /// Starts a background thread that recomputes `id` and saves the result, unless one is
    /// computing it already (single flight: the expired value is served meanwhile).
    fn refresh_in_background<R, V>(
        &self,
        id: CheckpointId,
        run: impl FnOnce() -> R + Send + 'static,
        keep: fn(&R) -> Option<&V>,
    ) where
        V: Serialize + DeserializeOwned + 'static,
        R: 'static,
        C: Clone + Send + Sync + 'static,
    {
        let Joined::Leader(flight) = FLIGHTS.join(self.cache.flight_scope(), id) else {
            return;
        };
        let worker = self.refresh_worker();
        let pending = self.refreshes.start();
        let spawned = thread::Builder::new()
            .name("ckpt-refresh".into())
            .spawn(move || {
                let _pending = pending;
                // The refresh thread is now the flight's leader: a recursive call of the same
                // id from it runs uncached instead of waiting on itself.
                flight.adopt();
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker.run_and_save(&id, run, &keep)
                }));
                match ran {
                    Ok(Ok((_, true))) => flight.land(Landing::Stored),
                    Ok(Ok((_, false))) => {
                        flight.land(Landing::NotStored);
                        worker.refresh_failed(&id, "its result was not stored");
                    }
                    // Reported by `run_and_save` under the (warning) policy already.
                    Ok(Err(_)) => flight.land(Landing::NotStored),
                    Err(_) => {
                        drop(flight);
                        worker.refresh_failed(&id, "the function panicked");
                    }
                }
            });
        if let Err(e) = spawned {
            let _ = self.fail(Error::with_source(
                ErrorKind::Refresh,
                "cannot start a background refresh",
                e,
            ));
        }
    }

    /// What a background refresh needs of this decorator: it may outlive the call, and the
    /// decorator.
    fn refresh_worker(&self) -> DecoratorCheckpoint<(), C>
    where
        C: Clone,
    {
        DecoratorCheckpoint {
            function: self.function.clone(),
            identifier: (),
            cache: self.cache.clone(),
            // A refresh has no caller to return an error to.
            on_error: match self.on_error {
                OnError::Ignore => OnError::Ignore,
                _ => OnError::Warn,
            },
            counters: Arc::clone(&self.counters),
            registered: AtomicBool::new(true),
            fingerprint: OnceLock::new(),
            max_age: self.max_age,
            refresh: self.refresh,
            refreshes: Arc::clone(&self.refreshes),
            spawner: self.spawner.clone(),
            compression: self.compression,
        }
    }

    /// Warns (under the error policy) that a background refresh of `id` failed.
    fn refresh_failed(&self, id: &CheckpointId, why: &str) {
        let _ = self.fail(Error::new(
            ErrorKind::Refresh,
            format!(
                "the background refresh of {} ({id}) failed: {why}; the expired value stays",
                self.function.path()
            ),
        ));
    }

    fn ensure_registered(&self) {
        if !self.registered.load(Ordering::Acquire)
            && self.cache.register(&self.function, &self.counters).is_ok()
            && self.register_expiry().is_ok()
        {
            // A failed registration is retried on the next call; the failure itself surfaces
            // through retrieve and save, under the policy.
            self.registered.store(true, Ordering::Release);
        }
    }

    /// Lets the cache remove expired entries, unless they are served stale.
    fn register_expiry(&self) -> Result<(), Error> {
        match (self.max_age, self.refresh) {
            (Some(age), Refresh::Wait) => self.cache.expire_function(&self.function, age),
            _ => Ok(()),
        }
    }

    /// Applies the error policy: `Err` only under [`OnError::Raise`].
    fn fail(&self, err: Error) -> Result<(), Error> {
        self.counters.record(Event::Error);
        match self.on_error {
            OnError::Raise => Err(err),
            OnError::Warn => {
                crate::warn::warn(&err);
                Ok(())
            }
            OnError::Ignore => Ok(()),
        }
    }

    /// The stored value for `id`, checked; a damaged or mistyped one is a miss, and so is an
    /// expired one unless `refresh` is [`Refresh::Stale`].
    fn fetch<V: DeserializeOwned>(
        &self,
        id: &CheckpointId,
        refresh: Refresh,
        reach: Reach,
    ) -> Result<Fetched<V>, Error> {
        let (found, decoded, expired) = self.lend::<V>(id, refresh, reach);
        if let Err(e) = found {
            self.fail(e)?;
            return Ok(Fetched::Miss);
        }
        let decoded = match decoded {
            None => {
                if expired {
                    self.expired(id);
                }
                return Ok(Fetched::Miss);
            }
            Some(Err(e)) => {
                // A part of a large record could not be read: a failed read, not a miss.
                self.fail(e)?;
                return Ok(Fetched::Miss);
            }
            Some(Ok(decoded)) => decoded,
        };
        match decoded {
            Ok((value, header)) if expired => {
                self.hit(id, header.compute_nanos, "stale");
                Ok(Fetched::Stale(value))
            }
            Ok((value, header)) => {
                self.hit(id, header.compute_nanos, "hit");
                Ok(Fetched::Fresh(value))
            }
            Err(Rejected::TypeMismatch) => {
                // Left in place: the save that follows the miss overwrites it.
                self.counters.record(Event::TypeMismatch);
                tracing::debug!(
                    target: "ckpt",
                    module = self.function.module(),
                    function = self.function.name(),
                    id = %id,
                    "a stored result is of another type (its type's shape changed): computed again"
                );
                Ok(Fetched::Miss)
            }
            Err(Rejected::Corrupt) => {
                self.drop_corrupt(id)?;
                Ok(Fetched::Miss)
            }
            Err(Rejected::Unsupported) => {
                // Left in place, as a mismatch is: sound, and readable by a build with `zstd`.
                tracing::debug!(
                    target: "ckpt",
                    module = self.function.module(),
                    function = self.function.name(),
                    id = %id,
                    "a stored result is compressed and this build lacks the `zstd` feature: \
                     computed again"
                );
                Ok(Fetched::Miss)
            }
        }
    }

    /// Tells the app's subscriber that an entry was older than the maximum age.
    fn expired(&self, id: &CheckpointId) {
        tracing::debug!(
            target: "ckpt",
            module = self.function.module(),
            function = self.function.name(),
            id = %id,
            "a stored result is older than the function's max_age: computed again"
        );
    }

    /// Counts a hit on `id` (whose result took `saved_nanos` to compute) and tells the app's
    /// subscriber: `outcome` is `"hit"`, or `"stale"` for an expired value served while it is
    /// refreshed.
    #[inline]
    fn hit(&self, id: &CheckpointId, saved_nanos: u64, outcome: &'static str) {
        self.counters.record(Event::Hit { saved_nanos });
        tracing::trace!(
            target: "ckpt",
            module = self.function.module(),
            function = self.function.name(),
            id = %id,
            outcome,
            saved_ns = saved_nanos,
        );
    }

    /// A second look after a miss (another thread may have saved meanwhile): counts a hit, but
    /// not again the failures the first look counted.
    fn fetch_again<V: DeserializeOwned>(&self, id: &CheckpointId, reach: Reach) -> Option<V> {
        match self.lend::<V>(id, Refresh::Wait, reach) {
            (Ok(true), Some(Ok(Ok((value, header)))), false) => {
                self.hit(id, header.compute_nanos, "hit");
                Some(value)
            }
            _ => None,
        }
    }

    fn run_unsaved<R>(&self, run: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = run();
        self.counters.record(Event::NotSaved {
            spent_nanos: nanos(start),
        });
        r
    }

    /// The span a computation of `id` runs in.
    fn compute_span(&self, id: &CheckpointId) -> tracing::Span {
        tracing::debug_span!(
            target: "ckpt",
            "compute",
            module = self.function.module(),
            function = self.function.name(),
            id = %id,
        )
    }

    /// Tells the app's subscriber that `id` was computed in `elapsed`; returns that in ns.
    fn computed(&self, id: &CheckpointId, elapsed: Duration) -> u64 {
        let spent_nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        tracing::trace!(
            target: "ckpt",
            module = self.function.module(),
            function = self.function.name(),
            id = %id,
            outcome = "computed",
            compute_ns = spent_nanos,
        );
        spent_nanos
    }

    /// Runs the function (no lock held) and saves what `keep` picks; says whether it saved.
    fn run_and_save<R, V: Serialize + DeserializeOwned>(
        &self,
        id: &CheckpointId,
        run: impl FnOnce() -> R,
        keep: &impl Fn(&R) -> Option<&V>,
    ) -> Result<(R, bool), Error> {
        let start = Instant::now();
        let r = {
            // The computation as a span: what the function logs nests under it.
            let span = self.compute_span(id);
            let _entered = span.enter();
            run()
        };
        let elapsed = start.elapsed();
        let spent_nanos = self.computed(id, elapsed);
        let Some(value) = keep(&r) else {
            self.counters.record(Event::NotSaved { spent_nanos });
            return Ok((r, false));
        };
        match self.save_value(id, value, self.fingerprint::<V>(), elapsed) {
            Ok(()) => {
                self.counters.record(Event::Saved { spent_nanos });
                Ok((r, true))
            }
            Err(e) => {
                self.counters.record(Event::NotSaved { spent_nanos });
                self.fail(e)?;
                Ok((r, false))
            }
        }
    }
}

impl<I, C: Cache> DecoratorCheckpoint<I, C> {
    /// Encodes `value` and saves it: in one buffer (compressed if so configured and shorter),
    /// or, for a record longer than `STREAM_ABOVE` even compressed, encoded plain as the cache
    /// writes it.
    fn save_value<V: Serialize>(
        &self,
        id: &CheckpointId,
        value: &V,
        fingerprint: u64,
        compute: Duration,
    ) -> Result<(), Error> {
        let compression = self.compression();
        match record::encode_for_save(value, fingerprint, compute, STREAM_ABOVE, compression)? {
            Encoded::Whole(bytes) => self.cache.save(
                id,
                &Entry::new(&self.function, &bytes, compute)
                    .with_value_type(std::any::type_name::<V>()),
            ),
            Encoded::Large => self.save_large(id, value, fingerprint, compute),
        }
    }

    /// Saves `value` encoded as the cache writes it (see `LargeEntry`).
    fn save_large<V: Serialize>(
        &self,
        id: &CheckpointId,
        value: &V,
        fingerprint: u64,
        compute: Duration,
    ) -> Result<(), Error> {
        let encoder = Encoder {
            value,
            fingerprint,
            compute,
        };
        let entry = LargeEntry::new(&self.function, &encoder, compute)
            .with_value_type(std::any::type_name::<V>());
        self.cache.save_large(id, &entry)
    }
}

fn nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl<I, C> std::fmt::Debug for DecoratorCheckpoint<I, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoratorCheckpoint")
            .field("function", &self.function)
            .field("on_error", &self.on_error)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}
