//! Stale while revalidate on async functions (issue 14): an expired entry is served at once
//! while one task, handed to the decorator's spawner, computes the fresh one.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ckpt::store::ManualClock;
use ckpt::{AutoIdentifier, DecoratorCheckpoint, ErrorKind, Function, OnError, Refresh, Store};
use common::{TempDir, within};

const HOUR: Duration = Duration::from_secs(3600);

fn store(dir: &TempDir) -> (Store, ManualClock) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = Store::builder()
        .clock(clock.clone())
        .open(dir.store_path())
        .unwrap();
    (store, clock)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A body for a call that must be a hit.
async fn fresh_now() -> u32 {
    unreachable!("fresh now: a hit")
}

#[test]
fn expired_entries_are_served_while_one_spawned_task_refreshes() {
    within(60, "async stale on tokio", || {
        let dir = TempDir::new("async-stale");
        let (store, clock) = store(&dir);
        current_thread().block_on(async {
            let f = Arc::new(
                DecoratorCheckpoint::new(Function::new("t", "quote"), AutoIdentifier, store)
                    .with_max_age(HOUR)
                    .with_refresh(Refresh::Stale)
                    .with_on_error(OnError::Raise)
                    .with_spawner(tokio::spawn),
            );
            let first = f.call_async_or_stale(1u32, |_| async { 100u32 }).await;
            assert_eq!(first.unwrap(), 100);
            clock.advance(2 * HOUR);

            // The refresh sleeps on tokio's timer (it needs the runtime it was spawned on),
            // 300 ms: the callers must not wait for it.
            let runs = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let calls: Vec<_> = (0..8)
                .map(|_| {
                    let (f, runs) = (Arc::clone(&f), Arc::clone(&runs));
                    tokio::spawn(async move {
                        f.call_async_or_stale(1u32, move |_| async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            200u32
                        })
                        .await
                        .unwrap()
                    })
                })
                .collect();
            let mut got = Vec::new();
            for call in calls {
                got.push(call.await.unwrap());
            }
            let served_in = start.elapsed();
            assert_eq!(got, vec![100; 8], "every caller gets the stale value");
            assert!(
                served_in < Duration::from_millis(250),
                "served at once, not after the refresh: {served_in:?}"
            );
            f.wait_refreshes_async().await;
            assert_eq!(
                runs.load(Ordering::SeqCst),
                1,
                "one refresh, however many callers"
            );
            let fresh = f.call_async_or_stale(1u32, |_| fresh_now()).await;
            assert_eq!(
                fresh.unwrap(),
                200,
                "the next call gets the refreshed value"
            );
            assert_eq!((f.stats().hits, f.stats().misses), (9, 1));
        });
    });
}

static WARNINGS: LazyLock<Mutex<Vec<ErrorKind>>> = LazyLock::new(Mutex::default);

fn refresh_warnings() -> usize {
    let warnings = WARNINGS.lock().unwrap();
    warnings
        .iter()
        .filter(|k| **k == ErrorKind::Refresh)
        .count()
}

#[test]
fn a_failed_or_dropped_refresh_keeps_the_stale_value_and_the_next_one_runs() {
    ckpt::set_warning_hook(|e| WARNINGS.lock().unwrap().push(e.kind()));
    let dir = TempDir::new("async-stale-failed");
    let (store, clock) = store(&dir);
    // Runtime-free futures, on `futures::executor::block_on`, each refresh on its own thread.
    let f = DecoratorCheckpoint::new(Function::new("t", "failing"), AutoIdentifier, store.clone())
        .with_max_age(HOUR)
        .with_refresh(Refresh::Stale)
        .with_spawner(ckpt::run_on_thread);
    futures_executor::block_on(async {
        let got = f.call_ok_async_or_stale(1u32, |_| async { Ok::<u32, String>(1) });
        assert_eq!(got.await.unwrap(), Ok(1));
        clock.advance(2 * HOUR);

        // A refresh returning Err stores nothing, and warns.
        let got = f.call_ok_async_or_stale(1u32, |_| async { Err::<u32, String>("down".into()) });
        assert_eq!(got.await.unwrap(), Ok(1));
        f.wait_refreshes_async().await;
        // A refresh that panics releases the flight, and warns.
        let got = f.call_ok_async_or_stale(1u32, |_| async {
            if true {
                panic!("refresh failed");
            }
            Ok::<u32, String>(2)
        });
        assert_eq!(got.await.unwrap(), Ok(1));
        f.wait_refreshes_async().await;
        assert_eq!(refresh_warnings(), 2, "each failed refresh warns");

        // Still stale, still served; the next refresh that succeeds replaces it.
        let got = f.call_ok_async_or_stale(1u32, |_| async { Ok::<u32, String>(3) });
        assert_eq!(got.await.unwrap(), Ok(1));
        f.wait_refreshes_async().await;
        let got = f.call_ok_async_or_stale(1u32, |_| async { Err::<u32, String>("unused".into()) });
        assert_eq!(got.await.unwrap(), Ok(3));
    });

    // A spawner that drops its task (a runtime shutting down): nothing is wedged, the wait
    // ends, and the next call that finds the entry expired starts a refresh again.
    let spawned = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&spawned);
    let dropping = DecoratorCheckpoint::new(Function::new("t", "failing"), AutoIdentifier, store)
        .with_max_age(HOUR)
        .with_refresh(Refresh::Stale)
        .with_spawner(move |task| {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(task);
        });
    clock.advance(2 * HOUR);
    futures_executor::block_on(async {
        for _ in 0..2 {
            let got = dropping.call_ok_async_or_stale(1u32, |_| async { Ok::<u32, String>(4) });
            assert_eq!(got.await.unwrap(), Ok(3));
            dropping.wait_refreshes_async().await;
        }
    });
    assert_eq!(spawned.load(Ordering::SeqCst), 2);
    ckpt::reset_warning_hook();
}

#[test]
fn without_a_spawner_an_async_call_recomputes_an_expired_entry() {
    let dir = TempDir::new("async-stale-none");
    let (store, clock) = store(&dir);
    let f = DecoratorCheckpoint::new(Function::new("t", "plain"), AutoIdentifier, store)
        .with_max_age(HOUR)
        .with_refresh(Refresh::Stale);
    futures_executor::block_on(async {
        assert_eq!(
            f.call_async_or_stale(1u32, |_| async { 1u32 })
                .await
                .unwrap(),
            1
        );
        clock.advance(2 * HOUR);
        assert_eq!(
            f.call_async_or_stale(1u32, |_| async { 2u32 })
                .await
                .unwrap(),
            2
        );
    });
    assert_eq!(f.stats().misses, 2);
}

// The macro: `refresh = stale(tokio::spawn)` on an async fn, over a store with a manual clock.

static CLOCK: LazyLock<ManualClock> =
    LazyLock::new(|| ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
static DIR: LazyLock<TempDir> = LazyLock::new(|| TempDir::for_static("async-stale-macro"));
static STORE: LazyLock<Store> = LazyLock::new(|| {
    Store::builder()
        .clock(CLOCK.clone())
        .open(DIR.store_path())
        .unwrap()
});
static PRICE: AtomicU32 = AtomicU32::new(10);
static PRICE_RUNS: AtomicU32 = AtomicU32::new(0);

ckpt::checkpoint! {
    #[checkpoint(cache = STORE.clone(), max_age = "30m", refresh = stale(tokio::spawn), on_error = raise)]
    async fn price(symbol: String) -> Result<u32, ckpt::Error> {
        let _ = symbol;
        PRICE_RUNS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(PRICE.load(Ordering::SeqCst))
    }
}

ckpt::checkpoint! {
    #[checkpoint(cache = STORE.clone(), max_age = "30m", refresh = stale(ckpt::run_on_thread))]
    async fn rate(currency: String) -> f64 {
        PRICE.load(Ordering::SeqCst) as f64 + currency.len() as f64 / 10.0
    }
}

#[test]
fn the_macro_takes_refresh_stale_with_a_spawner_on_an_async_fn() {
    within(60, "macro async stale", || {
        current_thread().block_on(async {
            assert_eq!(price::decorator().refresh(), Refresh::Stale);
            assert_eq!(price("abc".into()).await.unwrap(), 10);
            assert_eq!(rate("EUR".into()).await, 10.3);
            PRICE.store(11, Ordering::SeqCst);
            CLOCK.advance(Duration::from_secs(20 * 60));
            assert_eq!(
                price("abc".into()).await.unwrap(),
                10,
                "fresh for 30 minutes"
            );

            CLOCK.advance(Duration::from_secs(11 * 60));
            assert_eq!(
                price("abc".into()).await.unwrap(),
                10,
                "stale, served at once"
            );
            assert_eq!(rate("EUR".into()).await, 10.3, "stale, served at once");
            price::decorator().wait_refreshes_async().await;
            rate::decorator().wait_refreshes_async().await;
            assert_eq!(PRICE_RUNS.load(Ordering::SeqCst), 2);
            assert_eq!(
                price("abc".into()).await.unwrap(),
                11,
                "refreshed by a task"
            );
            assert_eq!(rate("EUR".into()).await, 11.3, "refreshed on a thread");
            // A rerun is a rerun, stale or not.
            PRICE.store(12, Ordering::SeqCst);
            assert_eq!(price::rerun("abc".into()).await.unwrap(), 12);
            assert_eq!(PRICE_RUNS.load(Ordering::SeqCst), 3);
        });
    });
}
