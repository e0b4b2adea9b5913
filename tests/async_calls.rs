//! Async calls (issue 14): single flight across tasks on any executor, a cancelled or panicking
//! leader, recursion, the macro on `async fn` with its options, and no executor thread blocked
//! by a durable save.

mod common;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use ckpt::cache::Entry;
use ckpt::testing::{Backend, MemoryBackend};
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, Durability, ErrorKind, Function,
    MemoryCache, OnError, Store,
};
use common::{TempDir, within};

type Deco<C = Store> = DecoratorCheckpoint<AutoIdentifier, C>;

fn store_deco(dir: &TempDir, name: &'static str) -> Arc<Deco> {
    let store = Store::open(dir.store_path()).unwrap();
    Arc::new(
        DecoratorCheckpoint::new(Function::new("async", name), AutoIdentifier, store)
            .with_on_error(OnError::Raise),
    )
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Polls every future on the caller's task until all are done: concurrency without spawning,
/// for executors that only block on one future.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none()
                && let Poll::Ready(v) = f.as_mut().poll(cx)
            {
                *o = Some(v);
            }
        }
        if out.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

/// A body that counts its runs and takes a while, yielding to the executor meanwhile.
async fn slow_times_ten(x: u64, runs: Arc<AtomicUsize>) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    x * 10
}

#[test]
fn a_thousand_tasks_over_eight_ids_compute_eight_times_on_one_thread() {
    let dir = TempDir::new("async-1000");
    let deco = store_deco(&dir, "thousand");
    let runs = Arc::new(AtomicUsize::new(0));
    let results = within(120, "1,000 tasks", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            current_thread().block_on(async move {
                let tasks: Vec<_> = (0..1000u64)
                    .map(|i| {
                        let (deco, runs) = (deco.clone(), runs.clone());
                        tokio::spawn(async move {
                            let x = i % 8;
                            deco.call_async(x, |x| slow_times_ten(x, runs))
                                .await
                                .unwrap()
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            })
        }
    });
    assert_eq!(
        results,
        (0..1000u64).map(|i| (i % 8) * 10).collect::<Vec<_>>()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 8, "one computation per id");
    let stats = deco.stats();
    assert_eq!((stats.misses, stats.hits, stats.saves), (8, 992, 8));
}

#[test]
fn tasks_on_a_multi_thread_runtime_compute_once_per_id() {
    let dir = TempDir::new("async-mt");
    let deco = store_deco(&dir, "multi");
    let runs = Arc::new(AtomicUsize::new(0));
    within(120, "tokio multi-thread", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tasks: Vec<_> = (0..400u64)
                    .map(|i| {
                        let (deco, runs) = (deco.clone(), runs.clone());
                        tokio::spawn(async move {
                            deco.call_async(i % 8, |x| slow_times_ten(x, runs)).await
                        })
                    })
                    .collect();
                for (i, t) in tasks.into_iter().enumerate() {
                    assert_eq!(t.await.unwrap().unwrap(), (i as u64 % 8) * 10);
                }
            });
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 8);
    assert_eq!(deco.stats().saves, 8);
}

/// A body that counts its runs and yields a few times (no timer: these executors have none).
async fn yielding_times_ten(x: u64, runs: Arc<AtomicUsize>) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    for _ in 0..20 {
        futures_lite::future::yield_now().await;
    }
    x * 10
}

#[test]
fn works_on_async_executor_and_futures_block_on() {
    let dir = TempDir::new("async-exec");
    let deco = store_deco(&dir, "executors");
    let runs = Arc::new(AtomicUsize::new(0));
    // async-executor (smol's executor), four threads running it.
    within(120, "async-executor", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            let ex = Arc::new(async_executor::Executor::new());
            // Three more threads run the executor until told to stop (a one-shot of ckpt's own
            // serves as the signal).
            let (stops, threads): (Vec<_>, Vec<_>) = (0..3)
                .map(|_| {
                    let (stop, stopped) = ckpt::cache::PendingSave::channel();
                    let ex = ex.clone();
                    let thread = std::thread::spawn(move || {
                        let _ = futures_lite::future::block_on(ex.run(stopped));
                    });
                    (stop, thread)
                })
                .unzip();
            let tasks: Vec<_> = (0..200u64)
                .map(|i| {
                    let (deco, runs) = (deco.clone(), runs.clone());
                    ex.spawn(async move {
                        deco.call_async(i % 8, |x| yielding_times_ten(x, runs))
                            .await
                    })
                })
                .collect();
            futures_lite::future::block_on(ex.run(async {
                for (i, t) in tasks.into_iter().enumerate() {
                    assert_eq!(t.await.unwrap(), (i as u64 % 8) * 10);
                }
            }));
            for stop in stops {
                stop.complete(Ok(()));
            }
            for t in threads {
                t.join().unwrap();
            }
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 8);
    // futures::executor::block_on, many calls polled together on one thread: ids 8..16.
    within(120, "futures block_on", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            let calls: Vec<_> = (0..200u64)
                .map(|i| {
                    let (deco, runs) = (deco.clone(), runs.clone());
                    async move {
                        deco.call_async(8 + i % 8, |x| yielding_times_ten(x, runs))
                            .await
                            .unwrap()
                    }
                })
                .collect();
            let out = futures_executor::block_on(join_all(calls));
            assert_eq!(
                out,
                (0..200u64).map(|i| (8 + i % 8) * 10).collect::<Vec<_>>()
            );
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 16);
    assert_eq!(deco.stats().saves, 16);
}

#[test]
fn a_leader_cancelled_by_a_timeout_hands_over_to_one_waiter() {
    let dir = TempDir::new("async-cancel");
    let deco = store_deco(&dir, "cancel");
    let runs = Arc::new(AtomicUsize::new(0));
    let out = within(60, "cancelled leader", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            current_thread().block_on(async move {
                let body = |runs: Arc<AtomicUsize>| {
                    move |x: u64| async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        x + 1
                    }
                };
                let leader = {
                    let (deco, runs) = (deco.clone(), runs.clone());
                    tokio::spawn(async move {
                        tokio::time::timeout(
                            Duration::from_millis(50),
                            deco.call_async(5u64, body(runs)),
                        )
                        .await
                    })
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
                let waiters: Vec<_> = (0..3)
                    .map(|_| {
                        let (deco, runs) = (deco.clone(), runs.clone());
                        tokio::spawn(async move { deco.call_async(5u64, body(runs)).await })
                    })
                    .collect();
                let leader = leader.await.unwrap();
                let mut got = Vec::new();
                for w in waiters {
                    got.push(w.await.unwrap().unwrap());
                }
                (leader.is_err(), got)
            })
        }
    });
    assert_eq!(out, (true, vec![6, 6, 6]), "the leader timed out");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the cancelled leader, then one waiter"
    );
    let stats = deco.stats();
    assert_eq!(stats.saves, 1, "stored once");
    assert_eq!(stats.hits, 2, "the other waiters read it");
}

/// A cache whose deferred saves finish 100 ms later on a thread of their own; counts them.
#[derive(Clone, Default)]
struct SlowSaves {
    map: Arc<Mutex<std::collections::HashMap<CheckpointId, Vec<u8>>>>,
    saves: Arc<AtomicUsize>,
}

impl Cache for SlowSaves {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.map.lock().unwrap().insert(*id, entry.bytes().to_vec());
        Ok(())
    }
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
        Ok(self.map.lock().unwrap().get(id).cloned())
    }
    fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> ckpt::cache::PendingSave {
        let (done, pending) = ckpt::cache::PendingSave::channel();
        let (cache, id, bytes) = (self.clone(), *id, entry.bytes().to_vec());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            cache.saves.fetch_add(1, Ordering::SeqCst);
            cache.map.lock().unwrap().insert(id, bytes);
            done.complete(Ok(()));
        });
        pending
    }
    fn flight_scope(&self) -> usize {
        Arc::as_ptr(&self.map).addr()
    }
}

#[test]
fn a_leader_cancelled_while_saving_lets_its_save_land_the_flight() {
    let cache = SlowSaves::default();
    let deco = Arc::new(DecoratorCheckpoint::new(
        Function::new("async", "cancel-saving"),
        AutoIdentifier,
        cache.clone(),
    ));
    let runs = Arc::new(AtomicUsize::new(0));
    let (leader, got) = within(60, "a leader cancelled while saving", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            current_thread().block_on(async move {
                let body = |runs: Arc<AtomicUsize>| {
                    move |x: u64| async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        x + 1
                    }
                };
                // Computes at once, then awaits its 100 ms save: cancelled at 50 ms.
                let leader = {
                    let (deco, runs) = (deco.clone(), runs.clone());
                    tokio::spawn(async move {
                        tokio::time::timeout(
                            Duration::from_millis(50),
                            deco.call_async(4u64, body(runs)),
                        )
                        .await
                    })
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
                let waiters: Vec<_> = (0..3)
                    .map(|_| {
                        let (deco, runs) = (deco.clone(), runs.clone());
                        tokio::spawn(async move { deco.call_async(4u64, body(runs)).await })
                    })
                    .collect();
                let leader = leader.await.unwrap().is_err();
                let mut got = Vec::new();
                for w in waiters {
                    got.push(w.await.unwrap().unwrap());
                }
                (leader, got)
            })
        }
    });
    assert!(leader, "the leader timed out");
    assert_eq!(got, vec![5, 5, 5]);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once");
    assert_eq!(
        cache.saves.load(Ordering::SeqCst),
        1,
        "the waiters read the cancelled leader's save"
    );
}

#[test]
fn a_panicking_leader_releases_its_waiters_and_stores_nothing() {
    let cache = MemoryCache::new();
    let deco = Arc::new(DecoratorCheckpoint::new(
        Function::new("async", "panic"),
        AutoIdentifier,
        cache.clone(),
    ));
    let runs = Arc::new(AtomicUsize::new(0));
    let (leader, got) = within(60, "panicking leader", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            current_thread().block_on(async move {
                let leader = {
                    let deco = deco.clone();
                    tokio::spawn(async move {
                        deco.call_async(9u64, |_| async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            if cfg!(test) {
                                panic!("the computation failed");
                            }
                            0u64
                        })
                        .await
                    })
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
                // The leader still computes: nothing is stored yet.
                assert_eq!(cache.len(), 0);
                let waiters: Vec<_> = (0..3)
                    .map(|_| {
                        let (deco, runs) = (deco.clone(), runs.clone());
                        tokio::spawn(async move {
                            deco.call_async(9u64, |x| async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                x * 2
                            })
                            .await
                            .unwrap()
                        })
                    })
                    .collect();
                let leader = leader.await;
                let mut got = Vec::new();
                for w in waiters {
                    got.push(w.await.unwrap());
                }
                (leader.map(|_| ()).map_err(|e| e.is_panic()), got)
            })
        }
    });
    assert_eq!(leader, Err(true), "the leader's task panicked");
    assert_eq!(got, vec![18, 18, 18], "the waiters were released");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one waiter took over");
    assert_eq!(deco.stats().saves, 1, "only the waiter's result is stored");
}

#[test]
fn sync_and_async_callers_of_one_id_compute_once() {
    let cache = MemoryCache::new();
    let deco = Arc::new(DecoratorCheckpoint::new(
        Function::new("async", "mixed"),
        AutoIdentifier,
        cache,
    ));
    let runs = Arc::new(AtomicUsize::new(0));
    let thread = {
        let (deco, runs) = (deco.clone(), runs.clone());
        std::thread::spawn(move || {
            deco.call(3u64, |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(150));
                x * 7
            })
            .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(30));
    let from_task = within(60, "a task waiting for a thread", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            futures_executor::block_on(deco.call_async(3u64, |x| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                x * 7
            }))
            .unwrap()
        }
    });
    assert_eq!((thread.join().unwrap(), from_task), (21, 21));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_recursive_async_call_of_the_same_id_does_not_deadlock() {
    fn depth(
        deco: Arc<Deco<MemoryCache>>,
        n: u32,
        runs: Arc<AtomicUsize>,
    ) -> Pin<Box<dyn Future<Output = u32> + Send>> {
        Box::pin(async move {
            let inner = deco.clone();
            deco.call_async(7u32, move |x| async move {
                let level = runs.fetch_add(1, Ordering::SeqCst);
                if (level as u32) < n {
                    // The same id, from inside its own computation.
                    depth(inner, n, runs).await + x
                } else {
                    x
                }
            })
            .await
            .unwrap()
        })
    }
    let deco = Arc::new(DecoratorCheckpoint::new(
        Function::new("async", "recursive"),
        AutoIdentifier,
        MemoryCache::new(),
    ));
    let runs = Arc::new(AtomicUsize::new(0));
    let out = within(30, "recursion", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || current_thread().block_on(depth(deco, 3, runs))
    });
    assert_eq!(out, 28, "four levels of 7");
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(
        deco.stats().saves,
        1,
        "the inner levels ran uncached; the outermost is stored"
    );
}

#[test]
fn async_calls_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let deco = DecoratorCheckpoint::new(Function::new("async", "send"), AutoIdentifier, {
        let c: Arc<dyn Cache> = Arc::new(MemoryCache::new());
        c
    });
    let call = deco.call_async(1u8, |x| async move { x });
    assert_send(&call);
    let ok = deco.call_ok_async(1u8, |x| async move { Ok::<u8, String>(x) });
    assert_send(&ok);
    let rerun = deco.rerun_async(1u8, |x| async move { x });
    assert_send(&rerun);
    let macro_call = macro_fns::stamp(1);
    assert_send(&macro_call);
    drop((call, ok, rerun, macro_call));
}

// ---------------------------------------------------------------------------------------------
// The macro on `async fn`: the sync macro's behaviour tests, awaited.

mod macro_fns {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    pub static NEXT: AtomicU64 = AtomicU64::new(0);
    pub static RUNS_DEFAULT: AtomicUsize = AtomicUsize::new(0);
    pub static RUNS_ALL: AtomicUsize = AtomicUsize::new(0);
    pub static RUNS_KEYED: AtomicUsize = AtomicUsize::new(0);
    pub static RUNS_ONCE: AtomicUsize = AtomicUsize::new(0);

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub async fn stamp(x: u64) -> u64 {
            futures_lite::future::yield_now().await;
            x + NEXT.fetch_add(1, Ordering::SeqCst)
        }
    }

    async fn check(x: u32) -> Result<u32, String> {
        futures_lite::future::yield_now().await;
        if x == 0 {
            Err("zero".into())
        } else {
            Ok(x * 10)
        }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub async fn ok_only(x: u32) -> Result<u32, String> {
            RUNS_DEFAULT.fetch_add(1, Ordering::SeqCst);
            let v = check(x).await?;
            Ok(v)
        }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), results = all, version = "2")]
        pub async fn keep_all(x: u32) -> Result<u32, String> {
            RUNS_ALL.fetch_add(1, Ordering::SeqCst);
            check(x).await
        }
    }

    /// Not serializable, and not part of the result.
    pub struct Conn(pub u32);

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), key = (table, limit), max_age = "1h", depends = [stamp])]
        pub async fn query(conn: &Conn, table: &str, limit: usize) -> Vec<String> {
            RUNS_KEYED.fetch_add(1, Ordering::SeqCst);
            let _ = conn.0;
            (0..limit).map(|i| format!("{table}:{i}")).collect()
        }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), identifier = ckpt::FnNameIdentifier)]
        /// No return type.
        pub async fn once(x: u32) {
            RUNS_ONCE.fetch_add(x as usize, Ordering::SeqCst);
        }
    }
}

#[test]
fn macro_async_rerun_runs_and_overwrites() {
    use macro_fns::*;
    futures_executor::block_on(async {
        assert_eq!(stamp(10).await, 10);
        assert_eq!(stamp(10).await, 10, "a hit");
        assert_eq!(stamp::rerun(10).await, 11, "runs although stored");
        assert_eq!(stamp(10).await, 11, "the rerun overwrote the stored result");
    });
    let s = stamp::stats();
    assert_eq!((s.hits, s.misses, s.reruns, s.saves), (2, 1, 1, 2));
}

#[test]
fn macro_async_results_all_versus_default() {
    use macro_fns::*;
    futures_executor::block_on(async {
        for _ in 0..2 {
            assert_eq!(ok_only(0).await, Err("zero".into()));
            assert_eq!(keep_all(0).await, Err("zero".into()));
        }
        assert_eq!(RUNS_DEFAULT.load(Ordering::SeqCst), 2, "an Err runs again");
        assert_eq!(RUNS_ALL.load(Ordering::SeqCst), 1, "the Err is stored");
        for _ in 0..2 {
            assert_eq!(ok_only(4).await, Ok(40));
            assert_eq!(keep_all(4).await, Ok(40));
        }
    });
    assert_eq!(RUNS_DEFAULT.load(Ordering::SeqCst), 3);
    assert_eq!(RUNS_ALL.load(Ordering::SeqCst), 2);
    assert_eq!((ok_only::stats().saves, keep_all::stats().saves), (1, 2));
}

#[test]
fn macro_async_key_leaves_the_other_arguments_out() {
    use macro_fns::*;
    futures_executor::block_on(async {
        let a = query(&Conn(1), "users", 2).await;
        let b = query(&Conn(2), "users", 2).await;
        assert_eq!(a, ["users:0", "users:1"]);
        assert_eq!(a, b);
        assert_eq!(
            RUNS_KEYED.load(Ordering::SeqCst),
            1,
            "conn is not in the id"
        );
        assert_eq!(query(&Conn(1), "groups", 1).await, ["groups:0"]);
        assert_eq!(RUNS_KEYED.load(Ordering::SeqCst), 2);
        // No return type, and FnNameIdentifier: every call is one id.
        once(1).await;
        once(2).await;
    });
    let id = query::id(&Conn(1), "users", 2).unwrap();
    assert_eq!(id, query::id(&Conn(9), "users", 2).unwrap());
    assert_eq!(
        query::decorator().max_age(),
        Some(Duration::from_secs(3600))
    );
    assert_eq!((once::stats().misses, once::stats().hits), (1, 1));
    assert_eq!(
        RUNS_ONCE.load(Ordering::SeqCst),
        1,
        "the second call was a hit"
    );
    assert_ne!(
        query::code_version(),
        query::decorator().function().code_version() ^ 1
    );
}

/// Fails every read and save, as `seed_on_error.rs`'s cache does.
#[derive(Default)]
struct FailingCache;

impl Cache for FailingCache {
    fn save(&self, _: &CheckpointId, _: &Entry<'_>) -> Result<(), ckpt::Error> {
        Err(ckpt::Error::cache(
            "the disk is full",
            io::Error::other("full"),
        ))
    }
    fn retrieve(&self, _: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
        Err(ckpt::Error::cache("unreachable", io::Error::other("down")))
    }
}

mod broken {
    use super::FailingCache;

    ckpt::checkpoint! {
        #[checkpoint(cache = FailingCache, on_error = raise)]
        pub async fn raising(x: u64) -> std::io::Result<u64> { Ok(x) }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = FailingCache, on_error = ignore)]
        pub async fn ignoring(x: u64) -> u64 { x }
    }
}

#[test]
fn macro_async_on_error_policies() {
    futures_executor::block_on(async {
        let raised = broken::raising(1).await.unwrap_err();
        let inner = raised
            .get_ref()
            .and_then(|e| e.downcast_ref::<ckpt::Error>())
            .expect("the checkpoint error inside the io::Error");
        assert_eq!(inner.kind(), ErrorKind::Cache);
        assert_eq!(broken::ignoring(3).await, 3);
    });
    assert_eq!(broken::ignoring::stats().errors, 2, "the read and the save");
    assert_eq!(broken::raising::stats().errors, 1);
}

#[test]
fn a_failed_deferred_save_follows_the_policy() {
    // Under Raise the save's error is the call's; under Ignore the value comes back.
    let raise =
        DecoratorCheckpoint::new(Function::new("async", "fail"), AutoIdentifier, FailingCache)
            .with_on_error(OnError::Raise);
    let err = futures_executor::block_on(raise.call_async(1u8, |x| async move { x })).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cache);
    let ignore =
        DecoratorCheckpoint::new(Function::new("async", "fail"), AutoIdentifier, FailingCache)
            .with_on_error(OnError::Ignore);
    assert_eq!(
        futures_executor::block_on(ignore.call_async(1u8, |x| async move { x })).unwrap(),
        1
    );
    assert_eq!(ignore.stats().errors, 2);
}

// ---------------------------------------------------------------------------------------------
// Nothing blocks the executor's thread on a durable save.

/// A store whose every sync takes `delay`: a slow disk.
#[derive(Debug)]
struct SlowSync {
    bytes: MemoryBackend,
    delay: Duration,
}

impl Backend for SlowSync {
    fn len(&self) -> io::Result<u64> {
        self.bytes.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.bytes.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.bytes.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.bytes.write(offset, data)
    }
}

/// Runs `saves` awaited misses (each a durable save) on a current-thread runtime with a 1 ms
/// ticker task beside them; returns the ticker's worst lateness and the saves' total time.
fn ticker_lag(deco: Arc<Deco>, saves: u64) -> (Duration, Duration) {
    current_thread().block_on(async move {
        let worst = Arc::new(Mutex::new(Duration::ZERO));
        let ticker = {
            let worst = worst.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    let due = every.tick().await;
                    let late = tokio::time::Instant::now() - due;
                    let mut w = worst.lock().unwrap();
                    *w = (*w).max(late);
                }
            })
        };
        // Let the ticker start.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        for i in 0..saves {
            let v = deco.call_async(i, |x| async move { x * 3 }).await.unwrap();
            assert_eq!(v, i * 3);
        }
        let took = started.elapsed();
        // The ticker measures a late tick only when it runs again: let it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        ticker.abort();
        let worst = *worst.lock().unwrap();
        (worst, took)
    })
}

#[test]
fn a_slow_durable_save_does_not_block_the_executor() {
    let store = Store::builder()
        .durability(Durability::Immediate)
        .open_backend("slow-sync", || {
            Ok(SlowSync {
                bytes: MemoryBackend::new(),
                delay: Duration::from_millis(100),
            })
        })
        .unwrap();
    let deco = Arc::new(
        DecoratorCheckpoint::new(Function::new("async", "slow"), AutoIdentifier, store)
            .with_on_error(OnError::Raise),
    );
    let (worst, took) = within(120, "saves on a slow disk", move || ticker_lag(deco, 10));
    assert!(
        took >= Duration::from_millis(1000),
        "each save waited for its 100 ms sync ({took:?})"
    );
    assert!(
        worst < Duration::from_millis(50),
        "the 1 ms ticker was late by {worst:?} while saves synced"
    );
}

#[test]
fn a_ticker_beside_a_thousand_durable_saves_stays_on_time() {
    let dir = TempDir::new("async-ticker");
    let deco = store_deco(&dir, "ticker");
    let (worst, took) = within(300, "1,000 saves", {
        let deco = deco.clone();
        move || ticker_lag(deco, 1000)
    });
    eprintln!("1,000 durable saves in {took:?}; the 1 ms ticker's worst lag {worst:?}");
    assert_eq!(deco.stats().saves, 1000);
    assert!(
        worst < Duration::from_millis(50),
        "the 1 ms ticker was late by {worst:?}"
    );
}
