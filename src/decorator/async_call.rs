//! The async calls of [`DecoratorCheckpoint`]: the same walk as `execute` (identify, fetch,
//! single flight, run, encode, save), where the function is a future and neither waiting for
//! another caller's computation nor a durable save holds the executor's thread.
//!
//! * A hit is served inline, as a sync hit is: a lookup and a decode take microseconds.
//! * A miss joins the id's flight as a task (`Flights::join_task`): a waiter leaves its `Waker`
//!   on the flight; the leader marks each poll of its computation (`Leading`) so that the body
//!   calling itself with the same id runs uncached instead of waiting for itself.
//! * If the leader's future is dropped (a timeout, a cancelled request) or panics, its guard
//!   lands the flight `Abandoned` and the waiters join again: one of them leads. A leader
//!   dropped while its save is in flight hands its guard to the save, which lands the flight
//!   when it completes, so the waiters read the stored result instead of computing it again.
//! * The save goes through `Cache::save_deferred` and is awaited: the redb store queues it for
//!   its group commit, led by its background thread, and completes it after the commit.
//!
//! No runtime is used: only `Waker`s, so any executor drives these futures.

use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DecoratorCheckpoint, Fetched, Leased, Mode, Reach, Refresh, nanos};
use crate::cache::{Cache, Entry, Lease, LeaseGuard, PendingSave, block_on};
use crate::error::{Error, ErrorKind};
use crate::flight::{FLIGHTS, Joined, Landing, LeaderGuard, Leading};
use crate::id::CheckpointId;
use crate::identifier::Identifier;
use crate::record;
use crate::stats::{Counters, Event};

impl<I, C: Cache> DecoratorCheckpoint<I, C> {
    /// As [`call`](Self::call), for an async function: returns the stored result of
    /// `f(args).await`, or awaits it and stores its result.
    ///
    /// Nothing blocks the executor's thread longer than a hit: concurrent calls of one id
    /// compute once and the others wait as tasks (whatever runtime drives them, sync callers
    /// included), and the save is awaited (the redb [`Store`](crate::Store) commits it on its
    /// background thread, see [`Cache::save_deferred`](crate::Cache::save_deferred)). If the
    /// computing call is dropped (a timeout, a cancelled request) or panics, one of the waiting
    /// calls computes instead. `f(args)` is called only on a miss.
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-call-async-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let store = Store::open(dir.join("checkpoints.redb"))?;
    /// let lookup = DecoratorCheckpoint::new(Function::new("doc", "lookup"), AutoIdentifier, store);
    ///
    /// async fn slow_lookup(user: u64) -> String { format!("user {user}") } // a request, say
    ///
    /// futures_executor::block_on(async {
    ///     assert_eq!(lookup.call_async(7u64, slow_lookup).await?, "user 7"); // awaited, saved
    ///     assert_eq!(lookup.call_async(7u64, slow_lookup).await?, "user 7"); // read back
    ///     assert_eq!((lookup.stats().misses, lookup.stats().hits), (1, 1));
    ///     Ok::<(), ckpt::Error>(())
    /// })?;
    /// # drop(lookup); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_async<A, R, Fut>(&self, args: A, f: impl FnOnce(A) -> Fut) -> Result<R, Error>
    where
        I: Identifier<A>,
        R: Serialize + DeserializeOwned,
        Fut: Future<Output = R>,
    {
        let id = self.identify(&args);
        self.execute_async(id, Mode::Call, move || f(args), |r| Some(r), |v| v)
            .await
    }

    /// As [`call_ok`](Self::call_ok), for an async function returning `Result`: only `Ok`
    /// values are stored, so a failed call runs again next time.
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, MemoryCache};
    /// let fetch = DecoratorCheckpoint::new(Function::new("doc", "fetch"), AutoIdentifier, MemoryCache::new());
    ///
    /// async fn get(path: String) -> Result<usize, String> {
    ///     if path.is_empty() { Err("no path".into()) } else { Ok(path.len()) }
    /// }
    ///
    /// futures_executor::block_on(async {
    ///     assert_eq!(fetch.call_ok_async(String::new(), get).await?, Err("no path".into()));
    ///     assert_eq!(fetch.call_ok_async("/a".to_string(), get).await?, Ok(2));
    ///     assert_eq!(fetch.call_ok_async("/a".to_string(), get).await?, Ok(2)); // a hit
    ///     assert_eq!((fetch.stats().misses, fetch.stats().hits), (2, 1));
    ///     Ok::<(), ckpt::Error>(())
    /// })?;
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_ok_async<A, T, E, Fut>(
        &self,
        args: A,
        f: impl FnOnce(A) -> Fut,
    ) -> Result<Result<T, E>, Error>
    where
        I: Identifier<A>,
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, E>>,
    {
        let id = self.identify(&args);
        self.execute_async(id, Mode::Call, move || f(args), |r| r.as_ref().ok(), Ok)
            .await
    }

    /// As [`rerun`](Self::rerun), for an async function: awaits `f(args)` whatever is stored,
    /// and overwrites the stored result.
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, MemoryCache};
    /// let price = DecoratorCheckpoint::new(Function::new("doc", "price"), AutoIdentifier, MemoryCache::new());
    ///
    /// futures_executor::block_on(async {
    ///     assert_eq!(price.call_async(1u32, |x| async move { x * 10 }).await?, 10);
    ///     assert_eq!(price.rerun_async(1u32, |x| async move { x * 20 }).await?, 20);
    ///     // The rerun's result is what is stored now: a hit, `x * 30` does not run.
    ///     assert_eq!(price.call_async(1u32, |x| async move { x * 30 }).await?, 20);
    ///     Ok::<(), ckpt::Error>(())
    /// })?;
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn rerun_async<A, R, Fut>(
        &self,
        args: A,
        f: impl FnOnce(A) -> Fut,
    ) -> Result<R, Error>
    where
        I: Identifier<A>,
        R: Serialize + DeserializeOwned,
        Fut: Future<Output = R>,
    {
        let id = self.identify(&args);
        self.execute_async(id, Mode::Rerun, move || f(args), |r| Some(r), |v| v)
            .await
    }

    /// As [`rerun_async`](Self::rerun_async), storing only an `Ok` result.
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, MemoryCache};
    /// let rate = DecoratorCheckpoint::new(Function::new("doc", "rate"), AutoIdentifier, MemoryCache::new());
    /// futures_executor::block_on(async {
    ///     let fresh = rate.rerun_ok_async("EUR", |_| async { Ok::<f64, String>(1.08) }).await?;
    ///     assert_eq!(fresh, Ok(1.08));
    ///     Ok::<(), ckpt::Error>(())
    /// })?;
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn rerun_ok_async<A, T, E, Fut>(
        &self,
        args: A,
        f: impl FnOnce(A) -> Fut,
    ) -> Result<Result<T, E>, Error>
    where
        I: Identifier<A>,
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, E>>,
    {
        let id = self.identify(&args);
        self.execute_async(id, Mode::Rerun, move || f(args), |r| r.as_ref().ok(), Ok)
            .await
    }

    /// The same decorator with `spawn` running its async functions' background refreshes
    /// ([`Refresh::Stale`], through [`call_async_or_stale`](Self::call_async_or_stale)): your
    /// runtime's spawn, such as `tokio::spawn`, or `|task| smol::spawn(task).detach()` (a
    /// task handle that cancels on drop must be detached). [`run_on_thread`](crate::run_on_thread)
    /// runs each refresh on a thread of its own instead, for futures that need no runtime.
    /// Whatever `spawn` returns is dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, MemoryCache, Refresh};
    ///
    /// let rates = DecoratorCheckpoint::new(Function::new("doc", "rates"), AutoIdentifier, MemoryCache::new())
    ///     .with_max_age(Duration::from_secs(3600))
    ///     .with_refresh(Refresh::Stale)
    ///     .with_spawner(ckpt::run_on_thread); // or tokio::spawn, inside a tokio runtime
    /// assert_eq!(rates.refresh(), Refresh::Stale);
    /// ```
    pub fn with_spawner<T>(
        mut self,
        spawn: impl Fn(RefreshTask) -> T + Send + Sync + 'static,
    ) -> Self {
        self.spawner = Some(Spawner(Arc::new(move |task| drop(spawn(task)))));
        self
    }

    /// As [`call_async`](Self::call_async), serving an expired entry at once under
    /// [`Refresh::Stale`] while a task, handed to the [spawner](Self::with_spawner), computes
    /// the fresh one (once however many calls find it expired meanwhile); the calls after it
    /// get the fresh value. A refresh that fails (a panic, a result not stored) keeps the
    /// expired value and warns under the error policy. Without a maximum age, without
    /// [`Refresh::Stale`] or without a spawner, it is [`call_async`](Self::call_async). The
    /// function, its arguments and its future move into the task: they must be `Send` and
    /// `'static`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use ckpt::store::ManualClock;
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Refresh, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-async-stale-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let clock = ManualClock::new(SystemTime::now()); // the system clock in real use
    /// let store = Store::builder().clock(clock.clone()).open(dir.join("checkpoints.redb"))?;
    /// let price = DecoratorCheckpoint::new(Function::new("doc", "price"), AutoIdentifier, store)
    ///     .with_max_age(Duration::from_secs(60))
    ///     .with_refresh(Refresh::Stale)
    ///     .with_spawner(ckpt::run_on_thread);
    ///
    /// futures_executor::block_on(async {
    ///     assert_eq!(price.call_async_or_stale(7u32, |x| async move { x + 1 }).await?, 8);
    ///     clock.advance(Duration::from_secs(61));
    ///     // Expired: the old value at once, while the refresh computes x + 100.
    ///     assert_eq!(price.call_async_or_stale(7u32, |x| async move { x + 100 }).await?, 8);
    ///     price.wait_refreshes_async().await;
    ///     assert_eq!(price.call_async_or_stale(7u32, |x| async move { x + 1000 }).await?, 107); // a hit
    ///     Ok::<(), ckpt::Error>(())
    /// })?;
    /// # drop(price); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call). A failed background refresh is not an error of any call: it goes
    /// through the error policy's warning ([`ErrorKind::Refresh`](crate::ErrorKind::Refresh)).
    pub async fn call_async_or_stale<A, R, F, Fut>(&self, args: A, f: F) -> Result<R, Error>
    where
        I: Identifier<A>,
        A: Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(A) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let id = self.identify(&args);
        self.execute_async_or_stale(id, Mode::Call, move || f(args), |r| Some(r), |v| v)
            .await
    }

    /// As [`call_async_or_stale`](Self::call_async_or_stale), storing only `Ok` values: a
    /// refresh that returns `Err` keeps the expired value (and warns).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use ckpt::store::ManualClock;
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Refresh, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-async-ok-stale-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let clock = ManualClock::new(SystemTime::now());
    /// let store = Store::builder().clock(clock.clone()).open(dir.join("checkpoints.redb"))?;
    /// let rate = DecoratorCheckpoint::new(Function::new("doc", "rate"), AutoIdentifier, store)
    ///     .with_max_age(Duration::from_secs(60))
    ///     .with_refresh(Refresh::Stale)
    ///     .with_on_error(OnError::Ignore) // a failed refresh is not even warned of
    ///     .with_spawner(ckpt::run_on_thread);
    ///
    /// futures_executor::block_on(async {
    ///     let ok = |x: u32| async move { Ok::<u32, String>(x) };
    ///     let down = |_: u32| async { Err::<u32, String>("service down".into()) };
    ///     assert_eq!(rate.call_ok_async_or_stale(1u32, ok).await?, Ok(1));
    ///     clock.advance(Duration::from_secs(61));
    ///     // Expired, and its refresh fails: the last good value is served, and kept.
    ///     assert_eq!(rate.call_ok_async_or_stale(1u32, down).await?, Ok(1));
    ///     rate.wait_refreshes_async().await;
    ///     assert_eq!(rate.call_ok_async_or_stale(1u32, down).await?, Ok(1));
    ///     Ok::<(), ckpt::Error>(())
    /// })?;
    /// # drop(rate); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_ok_async_or_stale<A, T, E, F, Fut>(
        &self,
        args: A,
        f: F,
    ) -> Result<Result<T, E>, Error>
    where
        I: Identifier<A>,
        A: Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
        E: Send + 'static,
        F: FnOnce(A) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let id = self.identify(&args);
        self.execute_async_or_stale(id, Mode::Call, move || f(args), |r| r.as_ref().ok(), Ok)
            .await
    }

    /// Completes when no background refresh this decorator started is in flight: the async
    /// counterpart of [`wait_refreshes`](Self::wait_refreshes), which would hold the thread a
    /// refresh task may need (see the example of
    /// [`call_async_or_stale`](Self::call_async_or_stale)).
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, MemoryCache};
    /// let f = DecoratorCheckpoint::new(Function::new("doc", "f"), AutoIdentifier, MemoryCache::new());
    /// futures_executor::block_on(f.wait_refreshes_async()); // none in flight: at once
    /// ```
    pub async fn wait_refreshes_async(&self) {
        self.refreshes.idle().await;
    }

    /// As [`execute_async`](Self::execute_async), serving an expired entry while a spawned
    /// task recomputes it, under [`Refresh::Stale`] with a maximum age and a spawner.
    #[doc(hidden)]
    pub async fn execute_async_or_stale<R, V, Fut>(
        &self,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        run: impl FnOnce() -> Fut + Send + 'static,
        keep: fn(&R) -> Option<&V>,
        lift: impl FnOnce(V) -> R,
    ) -> Result<R, Error>
    where
        V: Serialize + DeserializeOwned + 'static,
        R: Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let (id, spawner) = match (id, &self.spawner) {
            (Ok(id), Some(spawner)) if mode == Mode::Call && self.serves_stale() => (id, spawner),
            (id, _) => return self.execute_async(id, mode, run, keep, lift).await,
        };
        self.ensure_registered();
        match self.fetch(&id, Refresh::Stale, Reach::Near)? {
            Fetched::Fresh(v) => Ok(lift(v)),
            Fetched::Stale(v) => {
                self.refresh_task(spawner, id, run, keep);
                Ok(lift(v))
            }
            Fetched::Miss => self.compute_missing_async(id, run, &keep, lift).await,
        }
    }

    /// Hands the spawner a task that recomputes `id` and saves the result, unless one is
    /// computing it already (single flight: the expired value is served meanwhile).
    fn refresh_task<R, V, Fut>(
        &self,
        spawner: &Spawner,
        id: CheckpointId,
        run: impl FnOnce() -> Fut + Send + 'static,
        keep: fn(&R) -> Option<&V>,
    ) where
        V: Serialize + DeserializeOwned + 'static,
        R: Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        C: Clone + Send + Sync + 'static,
    {
        let Joined::Leader(flight) = FLIGHTS.join_task(self.cache.flight_scope(), id) else {
            return;
        };
        let worker = self.refresh_worker();
        let pending = self.refreshes.start();
        (spawner.0)(Box::pin(async move {
            let _pending = pending;
            // The task leads the flight: its polls are marked, so a recursive call of the same
            // id from it runs uncached, and the flight lands with the save (or, on a panic or
            // a cancelled task, as abandoned when the guard drops).
            let mut refresh = pin!(worker.run_and_save_async(&id, run, &keep, Some(flight), None));
            let ran =
                poll_fn(
                    |cx| match catch_unwind(AssertUnwindSafe(|| refresh.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => Poll::Pending,
                        Ok(Poll::Ready(ran)) => Poll::Ready(Some(ran)),
                        Err(_) => Poll::Ready(None),
                    },
                )
                .await;
            match ran {
                Some(Ok((_, true))) => {}
                Some(Ok((_, false))) => worker.refresh_failed(&id, "its result was not stored"),
                // Reported by `run_and_save_async` under the (warning) policy already.
                Some(Err(_)) => {}
                None => worker.refresh_failed(&id, "the function panicked"),
            }
        }));
    }

    /// The async engine behind every async call: as `execute`, with `run` giving the future
    /// to await.
    #[doc(hidden)]
    pub async fn execute_async<R, V, Fut>(
        &self,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        run: impl FnOnce() -> Fut,
        keep: impl Fn(&R) -> Option<&V>,
        lift: impl FnOnce(V) -> R,
    ) -> Result<R, Error>
    where
        V: Serialize + DeserializeOwned,
        Fut: Future<Output = R>,
    {
        self.ensure_registered();
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                self.fail(e)?;
                self.counters.record(Event::Miss);
                return Ok(self.run_unsaved_async(run).await);
            }
        };
        if mode == Mode::Rerun {
            self.counters.record(Event::Rerun);
            return self
                .run_and_save_async(&id, run, &keep, None, None)
                .await
                .map(|(r, _)| r);
        }
        // The hit, inline: a lookup and a decode (of the near tier only: see `fetch_far`).
        if let Fetched::Fresh(v) = self.fetch(&id, Refresh::Wait, Reach::Near)? {
            return Ok(lift(v));
        }
        self.compute_missing_async(id, run, &keep, lift).await
    }

    /// A miss: computes once per id across callers and tasks (single flight), saves, returns.
    async fn compute_missing_async<R, V, Fut>(
        &self,
        id: CheckpointId,
        run: impl FnOnce() -> Fut,
        keep: &impl Fn(&R) -> Option<&V>,
        lift: impl FnOnce(V) -> R,
    ) -> Result<R, Error>
    where
        V: Serialize + DeserializeOwned,
        Fut: Future<Output = R>,
    {
        let scope = self.cache.flight_scope();
        // Whether the far tier failed this call's lookup (see the lease below).
        let mut far_failed = false;
        let leader = loop {
            match FLIGHTS.join_task(scope, id) {
                Joined::Leader(flight) => {
                    // A leader that finished between our lookup and our join has left the map
                    // already: its result is stored, so look once more before computing again.
                    if let Some(v) = self.fetch_again(&id, Reach::Near) {
                        flight.land(Landing::Stored);
                        return Ok(lift(v));
                    }
                    // The far tier behind the cache (a store's remote), awaited: what it has is
                    // then in the cache. Dropped meanwhile, the flight lands abandoned.
                    if let Some(far) = self.cache.fetch_far(&id) {
                        match far.await {
                            Ok(()) => {
                                if let Some(v) = self.fetch_again(&id, Reach::Near) {
                                    flight.land(Landing::Stored);
                                    return Ok(lift(v));
                                }
                            }
                            Err(e) => {
                                far_failed = true;
                                self.fail(e)?;
                            }
                        }
                    }
                    break Some(flight);
                }
                Joined::Waiter(flight) => match flight.landed().await {
                    Landing::Stored => {
                        if let Some(v) = self.fetch_again(&id, Reach::Near) {
                            return Ok(lift(v));
                        }
                        break None;
                    }
                    // The leader was dropped (or panicked) before it stored anything: join
                    // again, so that one waiter takes over and the others wait for it.
                    Landing::Abandoned | Landing::Running => {}
                    // It ran and stored nothing (an `Err` not kept, a failed save): as the
                    // sync path does, run it yourself.
                    Landing::NotStored => break None,
                },
                Joined::Reentrant => {
                    self.counters.record(Event::Miss);
                    return Ok(self.run_unsaved_async(run).await);
                }
            }
        };
        // Another machine may be computing it: wait for its result, or lease it (awaited: the
        // cache waits elsewhere, `Cache::lease_far`).
        // Not after the far tier failed this call's lookup: its lease would most likely fail
        // too, after another timeout (the sync path skips it alike).
        let lease = if far_failed {
            Ok(Lease::Granted(LeaseGuard::none()))
        } else {
            match self.cache.lease_far(&id) {
                Some(pending) => pending.await,
                None => self.cache.lease(&id),
            }
        };
        let lease = match self.leased(&id, lease, Reach::Near)? {
            Leased::Served(v) => {
                if let Some(flight) = leader {
                    flight.land(Landing::Stored);
                }
                return Ok(lift(v));
            }
            Leased::Compute(lease) => lease,
        };
        self.counters.record(Event::Miss);
        // Released after the save, which published the result while it was held (by the save's
        // completion, if this future is dropped while awaiting it).
        self.run_and_save_async(&id, run, keep, leader, Some(lease))
            .await
            .map(|(r, _)| r)
    }

    async fn run_unsaved_async<R, Fut: Future<Output = R>>(&self, run: impl FnOnce() -> Fut) -> R {
        let start = Instant::now();
        let r = run().await;
        self.counters.record(Event::NotSaved {
            spent_nanos: nanos(start),
        });
        r
    }

    /// Awaits the function (no lock held; as the flight's leader if `leader` is given, with
    /// its polls marked) and saves what `keep` picks, awaiting the save; lands the flight
    /// however this ends (a guard dropped unlanded, as on a panic or a cancellation, lands
    /// `Abandoned`). Says whether it saved.
    async fn run_and_save_async<R, V, Fut>(
        &self,
        id: &CheckpointId,
        run: impl FnOnce() -> Fut,
        keep: &impl Fn(&R) -> Option<&V>,
        leader: Option<LeaderGuard<'static>>,
        lease: Option<LeaseGuard>,
    ) -> Result<(R, bool), Error>
    where
        V: Serialize + DeserializeOwned,
        Fut: Future<Output = R>,
    {
        let start = Instant::now();
        // The computation as a span, entered around each poll: what the function logs nests
        // under it (a span entered across an await would be wrong, and not `Send`).
        let span = self.compute_span(id);
        let token = leader.as_ref().map(LeaderGuard::token);
        let r = {
            let mut computing = pin!({
                let _leading = token.map(Leading::enter);
                let _entered = span.enter();
                run()
            });
            poll_fn(|cx| {
                let _leading = token.map(Leading::enter);
                let _entered = span.enter();
                computing.as_mut().poll(cx)
            })
            .await
        };
        let elapsed = start.elapsed();
        let spent_nanos = self.computed(id, elapsed);
        // The borrow of `r` ends here, before any await: a refresh's future stays `Send` for
        // a value that is not `Sync`.
        let started = keep(&r).map(|value| self.start_save(id, value, elapsed));
        let Some(started) = started else {
            self.counters.record(Event::NotSaved { spent_nanos });
            if let Some(flight) = leader {
                flight.land(Landing::NotStored);
            }
            return Ok((r, false));
        };
        let saved = match started {
            Ok(pending) => {
                SaveThenLand {
                    pending: Some(pending),
                    leader,
                    lease,
                    counted: Some((Arc::clone(&self.counters), spent_nanos)),
                }
                .await
            }
            Err(e) => {
                if let Some(flight) = leader {
                    flight.land(Landing::NotStored);
                }
                Err(e)
            }
        };
        match saved {
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

    /// Encodes `value` and hands it to the cache's deferred save. A record of any length goes
    /// in one buffer: streaming a large one into the store (`save_large`) would write, and
    /// sync, from this thread.
    fn start_save<V: Serialize + DeserializeOwned>(
        &self,
        id: &CheckpointId,
        value: &V,
        compute: Duration,
    ) -> Result<PendingSave, Error> {
        let fingerprint = self.fingerprint::<V>();
        let compression = self.compression();
        let record::Encoded::Whole(bytes) =
            record::encode_for_save(value, fingerprint, compute, usize::MAX, compression)?
        else {
            // invariant: nothing is longer than usize::MAX bytes; kept as an error all the same.
            return Err(Error::new(ErrorKind::Encode, "a value too long to encode"));
        };
        let entry =
            Entry::new(&self.function, &bytes, compute).with_value_type(std::any::type_name::<V>());
        Ok(self.cache.save_deferred(id, &entry))
    }
}

/// Awaits a save, then lands the flight (if leading) by its outcome and releases the lease (if
/// any). Dropped before the save completes (the caller's future was cancelled), it leaves all
/// of it to the save's completion: the waiters then read what was stored instead of computing
/// it again, the lease is held until the result is published (another machine taking it over
/// would find nothing and compute it again), and the save is counted.
struct SaveThenLand {
    pending: Option<PendingSave>,
    leader: Option<LeaderGuard<'static>>,
    lease: Option<LeaseGuard>,
    /// Where a save completing after a cancellation is counted, and the compute time it spent
    /// (a save awaited to the end is counted by its caller).
    counted: Option<(Arc<Counters>, u64)>,
}

impl Future for SaveThenLand {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(pending) = this.pending.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let Poll::Ready(saved) = Pin::new(pending).poll(cx) else {
            return Poll::Pending;
        };
        this.pending = None;
        this.counted = None;
        if let Some(flight) = this.leader.take() {
            flight.land(if saved.is_ok() {
                Landing::Stored
            } else {
                Landing::NotStored
            });
        }
        drop(this.lease.take());
        Poll::Ready(saved)
    }
}

impl Drop for SaveThenLand {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let (flight, lease, counted) = (self.leader.take(), self.lease.take(), self.counted.take());
        pending.then(move |saved| {
            if let Some((counters, spent_nanos)) = counted {
                counters.record(if saved {
                    Event::Saved { spent_nanos }
                } else {
                    Event::NotSaved { spent_nanos }
                });
            }
            if let Some(flight) = flight {
                flight.land(if saved {
                    Landing::Stored
                } else {
                    Landing::NotStored
                });
            }
            drop(lease);
        });
    }
}

/// An async function's background refresh ([`Refresh::Stale`]), as handed to the spawner of
/// [`DecoratorCheckpoint::with_spawner`]: a boxed future to run to completion.
pub type RefreshTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What `with_spawner` keeps.
#[derive(Clone)]
pub(super) struct Spawner(Arc<dyn Fn(RefreshTask) + Send + Sync>);

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

/// A spawner for [`DecoratorCheckpoint::with_spawner`] and `refresh = stale(..)` that needs no
/// runtime: runs `task` on a thread of its own (named `ckpt-refresh`), which sleeps between
/// polls until woken. For futures that need their runtime (tokio's timers or sockets, say),
/// pass the runtime's spawn instead.
///
/// ```
/// let (tx, rx) = std::sync::mpsc::channel();
/// ckpt::run_on_thread(Box::pin(async move { tx.send(42).unwrap() }));
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
pub fn run_on_thread(task: RefreshTask) {
    let spawned = thread::Builder::new()
        .name("ckpt-refresh".into())
        .spawn(move || block_on(task));
    if let Err(e) = spawned {
        // The task (and the flight it leads) is dropped: the flight lands abandoned, and the
        // next call that finds the entry expired tries again.
        crate::warn::warn(&Error::with_source(
            ErrorKind::Refresh,
            "cannot start a background refresh",
            e,
        ));
    }
}
