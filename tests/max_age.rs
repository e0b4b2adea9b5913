//! Per-function expiry (`max_age`) and stale while revalidate (`Refresh::Stale`), through the
//! decorator and the macro, against the redb store (with a manual clock) and `MemoryCache`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use ckpt::cache::Entry;
use ckpt::store::ManualClock;
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, MemoryCache,
    OnError, Refresh, Store,
};

const HOUR: Duration = Duration::from_secs(3600);

fn store(name: &str) -> (Store, ManualClock, tempdir::Dir) {
    let dir = tempdir::Dir::new(name);
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = Store::builder()
        .clock(clock.clone())
        .open(dir.path().join("c.redb"))
        .unwrap();
    (store, clock, dir)
}

mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Dir {
            let p =
                std::env::temp_dir().join(format!("ckpt-max-age-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn entries_of(store: &Store, name: &str) -> u64 {
    store
        .stats()
        .unwrap()
        .functions
        .iter()
        .find(|f| f.name == name)
        .map_or(0, |f| f.entries)
}

#[test]
fn an_entry_older_than_max_age_is_a_miss_whatever_the_store_limits() {
    let (store, clock, _dir) = store("miss");
    assert!(store.limits().max_age_value().is_none());
    let runs = AtomicU32::new(0);
    let f = DecoratorCheckpoint::new(Function::new("t", "f"), AutoIdentifier, store.clone())
        .with_max_age(HOUR)
        .with_on_error(OnError::Raise);
    let compute = |x: u32| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * 2
    };
    assert_eq!(f.call(21u32, compute).unwrap(), 42);
    clock.advance(HOUR / 2);
    assert_eq!(f.call(21u32, compute).unwrap(), 42);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a fresh entry is a hit");
    clock.advance(HOUR / 2 + Duration::from_secs(1));
    assert_eq!(f.call(21u32, compute).unwrap(), 42);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "an expired entry is computed again"
    );
    // The recomputed entry is fresh again.
    assert_eq!(f.call(21u32, compute).unwrap(), 42);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!((f.stats().hits, f.stats().misses), (2, 2));
    let id = f.identify(&21u32).unwrap();
    clock.advance(2 * HOUR);
    assert_eq!(
        f.peek::<u32>(&id).unwrap(),
        None,
        "peek never returns an expired value"
    );
    // A decorator of the same function without a max_age still reads it.
    let g = DecoratorCheckpoint::new(Function::new("t", "f"), AutoIdentifier, store.clone());
    assert_eq!(g.peek::<u32>(&id).unwrap(), Some(42));
}

#[test]
fn expired_entries_of_that_function_only_are_removed_by_the_usual_expiry() {
    let (store, clock, _dir) = store("sweep");
    let short =
        DecoratorCheckpoint::new(Function::new("t", "short"), AutoIdentifier, store.clone())
            .with_max_age(HOUR)
            .with_on_error(OnError::Raise);
    let long = DecoratorCheckpoint::new(Function::new("t", "long"), AutoIdentifier, store.clone())
        .with_max_age(10 * HOUR)
        .with_on_error(OnError::Raise);
    let plain =
        DecoratorCheckpoint::new(Function::new("t", "plain"), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
    for x in 0..10u32 {
        short.call(x, |x| x).unwrap();
        long.call(x, |x| x).unwrap();
        plain.call(x, |x| x).unwrap();
    }
    clock.advance(HOUR / 2);
    // Saved half an hour later: still fresh when the first ten expire.
    for x in 10..13u32 {
        short.call(x, |x| x).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(entries_of(&store, "short"), 13);

    clock.advance(HOUR / 2 + Duration::from_secs(1));
    let report = store.expire().unwrap();
    assert_eq!(report.evicted.len(), 10, "{report:?}");
    assert_eq!(entries_of(&store, "short"), 3);
    assert_eq!(entries_of(&store, "long"), 10);
    assert_eq!(entries_of(&store, "plain"), 10);
    let short_row = store.stats().unwrap();
    let short_row = short_row
        .functions
        .iter()
        .find(|f| f.name == "short")
        .unwrap();
    assert_eq!(short_row.evictions.age, 10);

    // Without an explicit expire: a write, once the sweep is due, removes them too.
    clock.advance(10 * HOUR);
    plain.call(100u32, |x| x).unwrap();
    store.flush().unwrap();
    assert_eq!(entries_of(&store, "short"), 0);
    assert_eq!(entries_of(&store, "long"), 0);
    assert_eq!(entries_of(&store, "plain"), 11);
}

#[test]
fn stale_entries_are_served_while_one_background_refresh_runs() {
    let (store, clock, _dir) = store("stale");
    let f = DecoratorCheckpoint::new(Function::new("t", "stale"), AutoIdentifier, store.clone())
        .with_max_age(HOUR)
        .with_refresh(Refresh::Stale)
        .with_on_error(OnError::Raise);
    assert_eq!(f.call_or_stale(1u32, |_| 100u32).unwrap(), 100);
    clock.advance(2 * HOUR);

    // The refresh blocks until released (or 10 s): the callers must not wait for it.
    let refreshes = Arc::new(AtomicU32::new(0));
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let got: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (refreshes, gate, f) = (Arc::clone(&refreshes), Arc::clone(&gate), &f);
                s.spawn(move || {
                    f.call_or_stale(1u32, move |_| {
                        refreshes.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
                        200u32
                    })
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        got,
        vec![100; 8],
        "every caller gets the stale value at once"
    );
    release.send(()).unwrap();
    f.wait_refreshes();
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "one refresh, however many callers"
    );
    assert_eq!(
        f.call_or_stale(1u32, |_| -> u32 { panic!("fresh now") })
            .unwrap(),
        200,
        "the next call gets the refreshed value"
    );
    // Stale entries are kept (served), not swept.
    clock.advance(10 * HOUR);
    store.expire().unwrap();
    assert_eq!(entries_of(&store, "stale"), 1);
}

static WARNINGS: LazyLock<Mutex<Vec<ErrorKind>>> = LazyLock::new(Mutex::default);

#[test]
fn a_failed_refresh_keeps_the_stale_value_and_warns() {
    ckpt::set_warning_hook(|e| WARNINGS.lock().unwrap().push(e.kind()));
    let (store, clock, _dir) = store("failed");
    let f = DecoratorCheckpoint::new(Function::new("t", "failing"), AutoIdentifier, store.clone())
        .with_max_age(HOUR)
        .with_refresh(Refresh::Stale);
    assert_eq!(
        f.call_ok_or_stale(1u32, |_| Ok::<u32, String>(1)).unwrap(),
        Ok(1)
    );
    clock.advance(2 * HOUR);

    // A refresh returning Err stores nothing.
    assert_eq!(
        f.call_ok_or_stale(1u32, |_| Err::<u32, String>("down".into()))
            .unwrap(),
        Ok(1)
    );
    f.wait_refreshes();
    // A refresh that panics releases the flight.
    assert_eq!(
        f.call_ok_or_stale(1u32, |_| -> Result<u32, String> {
            panic!("refresh failed")
        })
        .unwrap(),
        Ok(1)
    );
    f.wait_refreshes();
    let warned = WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|k| **k == ErrorKind::Refresh)
        .count();
    assert_eq!(warned, 2, "each failed refresh warns");
    // Still stale, still served; the next refresh that succeeds replaces it.
    assert_eq!(
        f.call_ok_or_stale(1u32, |_| Ok::<u32, String>(3)).unwrap(),
        Ok(1)
    );
    f.wait_refreshes();
    assert_eq!(
        f.call_ok_or_stale(1u32, |_| Err::<u32, String>("unused".into()))
            .unwrap(),
        Ok(3)
    );
    ckpt::reset_warning_hook();
}

#[test]
fn memory_cache_knows_ages_and_a_cache_that_does_not_is_never_trusted() {
    let f = DecoratorCheckpoint::new(
        Function::new("t", "mem"),
        AutoIdentifier,
        MemoryCache::new(),
    )
    .with_max_age(HOUR);
    let runs = AtomicU32::new(0);
    let compute = |x: u32| {
        runs.fetch_add(1, Ordering::SeqCst);
        x
    };
    f.call(5u32, compute).unwrap();
    f.call(5u32, compute).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let f = f.with_max_age(Duration::from_nanos(1));
    std::thread::sleep(Duration::from_millis(2));
    f.call(5u32, compute).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A user's cache with only `save` and `retrieve`: ages unknown, so never a hit.
    #[derive(Default)]
    struct Dict(Mutex<std::collections::HashMap<CheckpointId, Vec<u8>>>);
    impl Cache for Dict {
        fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
            self.0.lock().unwrap().insert(*id, entry.bytes().to_vec());
            Ok(())
        }
        fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
            Ok(self.0.lock().unwrap().get(id).cloned())
        }
    }
    let runs = AtomicU32::new(0);
    let compute = |x: u32| {
        runs.fetch_add(1, Ordering::SeqCst);
        x
    };
    let dict =
        DecoratorCheckpoint::new(Function::new("t", "dict"), AutoIdentifier, Dict::default())
            .with_max_age(10 * HOUR);
    dict.call(5u32, compute).unwrap();
    dict.call(5u32, compute).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Without a max_age the same cache hits.
    let dict =
        DecoratorCheckpoint::new(Function::new("t", "dict"), AutoIdentifier, Dict::default());
    dict.call(5u32, compute).unwrap();
    dict.call(5u32, compute).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

// The macro: `max_age = "1h"`, and `refresh = stale`, on a store with a manual clock.

static CLOCK: LazyLock<ManualClock> =
    LazyLock::new(|| ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
// A static is never dropped, so its folder is in cargo's temporary folder for tests (under
// `target/`), not the system's, where every run would leave one behind.
static STORE: LazyLock<Store> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("max-age-macro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Store::builder()
        .clock(CLOCK.clone())
        .open(dir.join("c.redb"))
        .unwrap()
});
static QUOTE_RUNS: AtomicU32 = AtomicU32::new(0);
static PRICE: AtomicU32 = AtomicU32::new(10);

ckpt::checkpoint! {
    #[checkpoint(cache = STORE.clone(), max_age = "1h")]
    fn quote(symbol: String) -> u32 {
        QUOTE_RUNS.fetch_add(1, Ordering::SeqCst);
        symbol.len() as u32
    }
}

ckpt::checkpoint! {
    #[checkpoint(cache = STORE.clone(), max_age = "30m", refresh = stale, on_error = raise)]
    fn price(symbol: String) -> Result<u32, ckpt::Error> {
        let _ = symbol;
        Ok(PRICE.load(Ordering::SeqCst))
    }
}

#[test]
fn the_macro_takes_max_age_and_refresh() {
    assert_eq!(quote::decorator().max_age(), Some(HOUR));
    assert_eq!(price::decorator().refresh(), Refresh::Stale);

    assert_eq!(quote("abc".into()), 3);
    assert_eq!(price("abc".into()).unwrap(), 10);
    CLOCK.advance(Duration::from_secs(20 * 60));
    assert_eq!(quote("abc".into()), 3);
    assert_eq!(QUOTE_RUNS.load(Ordering::SeqCst), 1);
    PRICE.store(11, Ordering::SeqCst);
    assert_eq!(price("abc".into()).unwrap(), 10, "fresh for 30 minutes");

    CLOCK.advance(Duration::from_secs(41 * 60));
    assert_eq!(quote("abc".into()), 3);
    assert_eq!(
        QUOTE_RUNS.load(Ordering::SeqCst),
        2,
        "an hour old: computed again"
    );
    assert_eq!(price("abc".into()).unwrap(), 10, "stale, served at once");
    price::decorator().wait_refreshes();
    assert_eq!(
        price("abc".into()).unwrap(),
        11,
        "refreshed in the background"
    );
}

#[test]
fn max_age_strings_are_a_whole_number_and_a_unit() {
    use ckpt::__private::parse_age;
    let s = Duration::from_secs;
    assert_eq!(parse_age("7d"), Some(s(7 * 86_400)));
    assert_eq!(parse_age("12h"), Some(s(12 * 3600)));
    assert_eq!(parse_age("30m"), Some(s(30 * 60)));
    assert_eq!(parse_age("90s"), Some(s(90)));
    assert_eq!(parse_age("500ms"), Some(Duration::from_millis(500)));
    for bad in [
        "",
        "7",
        "d",
        "7 d",
        "0s",
        "7days",
        "1.5h",
        "-1h",
        "7D",
        "h7",
        "99999999999999999999d",
        "213503982334602d",
    ] {
        assert_eq!(parse_age(bad), None, "{bad:?}");
    }
}
