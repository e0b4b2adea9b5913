//! Concurrent callers of one id compute once; recursion does not deadlock; a panicking body
//! releases its waiters.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, LazyLock};
use std::time::Duration;

use ckpt::{
    AutoIdentifier, DecoratorCheckpoint, Durability, Function, MemoryCache, OnError, Store,
};
use common::{Rng, TempDir, within};

fn store(dir: &TempDir) -> Store {
    Store::builder()
        .durability(Durability::Relaxed {
            within: Duration::from_secs(1),
        })
        .open(dir.store_path())
        .unwrap()
}

#[test]
fn eight_threads_one_id_run_the_body_once() {
    let dir = TempDir::new("sf-one");
    let deco = Arc::new(
        DecoratorCheckpoint::new(Function::new("sf", "one"), AutoIdentifier, store(&dir))
            .with_on_error(OnError::Raise),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let results = within(60, "8 threads on one id", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (deco, runs, barrier) = (deco.clone(), runs.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        deco.call(42u64, |x| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            x * 10
                        })
                        .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        }
    });
    assert_eq!(results, vec![420; 8]);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the body ran more than once"
    );
    let stats = deco.stats();
    assert_eq!((stats.misses, stats.hits), (1, 7));
}

#[test]
fn eight_threads_a_thousand_ids_run_each_body_once() {
    let dir = TempDir::new("sf-many");
    let deco = Arc::new(
        DecoratorCheckpoint::new(Function::new("sf", "many"), AutoIdentifier, store(&dir))
            .with_on_error(OnError::Raise),
    );
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..1000).map(|_| AtomicUsize::new(0)).collect());
    within(120, "8 threads on 1,000 ids", {
        let (deco, runs) = (deco.clone(), runs.clone());
        move || {
            std::thread::scope(|s| {
                for t in 0..8u64 {
                    let (deco, runs) = (&deco, &runs);
                    s.spawn(move || {
                        // Each thread visits every id, in its own order.
                        let mut order: Vec<u64> = (0..1000).collect();
                        let mut rng = Rng::new(t + 1);
                        for i in (1..order.len()).rev() {
                            order.swap(i, rng.below(i as u64 + 1) as usize);
                        }
                        for i in order {
                            let v = deco
                                .call(i, |x| {
                                    runs[x as usize].fetch_add(1, Ordering::SeqCst);
                                    x + 1
                                })
                                .unwrap();
                            assert_eq!(v, i + 1);
                        }
                    });
                }
            });
        }
    });
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(
            r.load(Ordering::SeqCst),
            1,
            "id {i} ran {} times",
            r.load(Ordering::SeqCst)
        );
    }
    let stats = deco.stats();
    assert_eq!(stats.misses, 1000);
    assert_eq!(stats.hits, 7000);
}

static FIB_DIR: LazyLock<TempDir> = LazyLock::new(|| TempDir::for_static("sf-fib"));
static FIB_STORE: LazyLock<Store> = LazyLock::new(|| Store::open(FIB_DIR.store_path()).unwrap());
static FIB_BODIES: AtomicUsize = AtomicUsize::new(0);

ckpt::checkpoint! {
    #[checkpoint(cache = FIB_STORE.clone())]
    fn fib(n: u64) -> u64 {
        FIB_BODIES.fetch_add(1, Ordering::SeqCst);
        if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
    }
}

ckpt::checkpoint! {
    #[checkpoint(cache = FIB_STORE.clone())]
    fn fib_sum(n: u64) -> u64 {
        // A memoized function calling another memoized function on the same store.
        (0..=n).map(fib).sum()
    }
}

#[test]
fn recursive_fib_90_through_the_store_returns() {
    let v = within(120, "fib(90)", || fib(90));
    assert_eq!(v, 2_880_067_194_370_816_120);
    assert_eq!(
        FIB_BODIES.load(Ordering::SeqCst),
        91,
        "each n computed once"
    );
    assert_eq!(
        within(60, "fib_sum(90)", || fib_sum(90)),
        7_540_113_804_746_346_428
    );
    assert_eq!(
        FIB_BODIES.load(Ordering::SeqCst),
        91,
        "fib_sum is served by fib's entries"
    );
    assert!(fib::stats().hits >= 89);
}

#[test]
fn a_recursive_call_with_the_same_id_runs_uncached_instead_of_deadlocking() {
    let deco = Arc::new(DecoratorCheckpoint::new(
        Function::new("sf", "self"),
        AutoIdentifier,
        MemoryCache::new(),
    ));
    let inner_runs = Arc::new(AtomicUsize::new(0));
    let v = within(30, "a recursive call with its own id", {
        let (deco, inner_runs) = (deco.clone(), inner_runs.clone());
        move || {
            deco.call(7u8, |x| {
                // Same id again, from inside its own computation.
                let inner = deco
                    .call(7u8, |y| {
                        inner_runs.fetch_add(1, Ordering::SeqCst);
                        y as u32
                    })
                    .unwrap();
                inner + x as u32
            })
            .unwrap()
        }
    });
    assert_eq!(v, 14);
    assert_eq!(inner_runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_body_releases_its_waiters_and_leaves_nothing_behind() {
    let dir = TempDir::new("sf-panic");
    let store = store(&dir);
    let deco = Arc::new(
        DecoratorCheckpoint::new(Function::new("sf", "panic"), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise),
    );
    let attempts = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(6));
    let outcomes = within(60, "waiters of a panicking leader", {
        let (deco, attempts) = (deco.clone(), attempts.clone());
        move || {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (deco, attempts, barrier) =
                        (deco.clone(), attempts.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        deco.call(1u8, |_| {
                            let n = attempts.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(150));
                            if n == 0 {
                                panic!("the first attempt fails");
                            }
                            99u32
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        }
    });
    let panicked = outcomes.iter().filter(|o| o.is_err()).count();
    assert_eq!(panicked, 1, "only the leader's own call panics");
    for o in outcomes.into_iter().flatten() {
        assert_eq!(o.unwrap(), 99);
    }
    // The waiters ran it themselves (or read a later waiter's result); the panic stored nothing
    // and the id is free for the next call.
    assert!(attempts.load(Ordering::SeqCst) >= 2);
    assert_eq!(deco.call(1u8, |_| -> u32 { unreachable!() }).unwrap(), 99);
    assert_eq!(store.stats().unwrap().entries, 1);
}

/// One decorator per worker (or per request) over one store is a normal pattern: concurrent
/// misses of one id still compute once, whichever decorator each caller holds.
#[test]
fn eight_decorators_over_one_store_run_the_body_once() {
    let dir = TempDir::new("sf-decorators");
    let store = store(&dir);
    let memory = MemoryCache::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let memory_runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    within(
        60,
        "8 decorators over one store, 8 over one memory cache",
        {
            let (runs, memory_runs) = (runs.clone(), memory_runs.clone());
            move || {
                let handles: Vec<_> = (0..16)
                    .map(|i| {
                        let (runs, memory_runs, barrier) =
                            (runs.clone(), memory_runs.clone(), barrier.clone());
                        let (store, memory) = (store.clone(), memory.clone());
                        std::thread::spawn(move || {
                            let f = Function::new("sf", "per_worker");
                            let slow = |runs: &AtomicUsize, x: u64| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(200));
                                x * 10
                            };
                            barrier.wait();
                            let got = if i % 2 == 0 {
                                DecoratorCheckpoint::new(f, AutoIdentifier, store)
                                    .with_on_error(OnError::Raise)
                                    .call(7u64, |x| slow(&runs, x))
                            } else {
                                DecoratorCheckpoint::new(f, AutoIdentifier, memory)
                                    .with_on_error(OnError::Raise)
                                    .call(7u64, |x| slow(&memory_runs, x))
                            };
                            assert_eq!(got.unwrap(), 70);
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
            }
        },
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the store's callers computed more than once"
    );
    assert_eq!(
        memory_runs.load(Ordering::SeqCst),
        1,
        "the memory cache's callers computed more than once"
    );
}
