//! The seed's `on_error` policies, for each way a checkpointed call can fail: the arguments
//! cannot be identified (their `Serialize` fails), the cache cannot be read, the result cannot be
//! saved. `Raise` returns the error; `Warn` reports it through the warning hook and runs the
//! function; `Ignore` runs it silently. Every failure is counted either way.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use ckpt::cache::Entry;
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, MemoryCache,
    OnError,
};
use common::Runs;
use serde::{Serialize, Serializer};

/// The warning hook is process-global: every test that may warn, or that checks nothing warned,
/// holds this lock while its hook is installed.
static HOOK: Mutex<()> = Mutex::new(());

/// Runs `body` with this process's warnings collected; returns its result and the warnings.
fn with_warnings<R>(body: impl FnOnce() -> R) -> (R, Vec<(ErrorKind, String)>) {
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    ckpt::set_warning_hook(move |e| sink.lock().unwrap().push((e.kind(), e.to_string())));
    let result = std::panic::catch_unwind(AssertUnwindSafe(body));
    ckpt::reset_warning_hook();
    let result = result.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let warnings = seen.lock().unwrap().clone();
    (result, warnings)
}

/// An argument whose `Serialize` implementation fails.
struct Unidentifiable;

impl Serialize for Unidentifiable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this argument refuses to be serialized",
        ))
    }
}

#[test]
fn identification_failures_follow_the_policy() {
    for policy in [OnError::Raise, OnError::Warn, OnError::Ignore] {
        let cache = MemoryCache::new();
        let d = DecoratorCheckpoint::new(Function::new("seed", "unid"), AutoIdentifier, &cache)
            .with_on_error(policy);
        let runs = Runs::default();
        let (results, warnings) = with_warnings(|| {
            (0..2)
                .map(|_| {
                    d.call(Unidentifiable, |_| {
                        runs.bump();
                        7u8
                    })
                })
                .collect::<Vec<_>>()
        });
        assert!(cache.is_empty(), "{policy:?}: nothing is stored");
        assert_eq!(d.stats().errors, 2, "{policy:?}");
        match policy {
            OnError::Raise => {
                for r in &results {
                    let e = r.as_ref().unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::Identify);
                    assert!(e.to_string().contains("refuses to be serialized"), "{e}");
                }
                assert_eq!(runs.get(), 0, "raise does not run the function");
                assert!(warnings.is_empty());
            }
            OnError::Warn | OnError::Ignore => {
                assert!(results.iter().all(|r| matches!(r, Ok(7))), "{results:?}");
                assert_eq!(runs.get(), 2, "{policy:?}: runs, uncached, every time");
                assert_eq!(d.stats().misses, 2);
                if policy == OnError::Warn {
                    assert_eq!(warnings.len(), 2, "{warnings:?}");
                    assert!(warnings.iter().all(|(k, m)| *k == ErrorKind::Identify
                        && m.contains("refuses to be serialized")));
                } else {
                    assert!(warnings.is_empty(), "ignore is silent: {warnings:?}");
                }
            }
            _ => unreachable!(),
        }
    }
}

/// A cache whose retrieve and/or save fail, over a working memory cache.
#[derive(Default)]
pub struct FailingCache {
    fail_retrieve: bool,
    fail_save: bool,
    inner: MemoryCache,
}

impl FailingCache {
    pub fn failing(fail_retrieve: bool, fail_save: bool) -> Self {
        FailingCache {
            fail_retrieve,
            fail_save,
            inner: MemoryCache::new(),
        }
    }
}

impl Cache for FailingCache {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
        if self.fail_save {
            return Err(ckpt::Error::cache(
                "save failed",
                std::io::Error::other("disk full"),
            ));
        }
        self.inner.save(id, entry)
    }

    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
        if self.fail_retrieve {
            return Err(ckpt::Error::cache(
                "retrieve failed",
                std::io::Error::other("unreachable"),
            ));
        }
        self.inner.retrieve(id)
    }
}

#[test]
fn cache_failures_follow_the_policy() {
    // (fail retrieve, fail save) -> errors per call
    for (fail_retrieve, fail_save) in [(true, true), (false, true), (true, false)] {
        let failures = usize::from(fail_retrieve) + usize::from(fail_save);
        for policy in [OnError::Raise, OnError::Warn, OnError::Ignore] {
            let what =
                format!("{policy:?}, retrieve fails: {fail_retrieve}, save fails: {fail_save}");
            let d = DecoratorCheckpoint::new(
                Function::new("seed", "cache_failure"),
                AutoIdentifier,
                FailingCache::failing(fail_retrieve, fail_save),
            )
            .with_on_error(policy);
            let runs = Runs::default();
            let (result, warnings) = with_warnings(|| {
                d.call(3u32, |x| {
                    runs.bump();
                    x * 5
                })
            });
            let stored = d.cache().inner.len();
            match policy {
                OnError::Raise => {
                    assert_eq!(result.unwrap_err().kind(), ErrorKind::Cache, "{what}");
                    assert_eq!(stored, 0, "{what}");
                    // A failed retrieve stops the call; a failed save comes after the run.
                    assert_eq!(runs.get(), usize::from(!fail_retrieve), "{what}");
                    assert_eq!(d.stats().errors, 1, "{what}");
                    assert!(warnings.is_empty());
                }
                OnError::Warn | OnError::Ignore => {
                    assert_eq!(result.unwrap(), 15, "{what}");
                    assert_eq!(runs.get(), 1, "{what}");
                    assert_eq!(stored, usize::from(!fail_save), "{what}");
                    assert_eq!(d.stats().errors as usize, failures, "{what}");
                    let expected = if policy == OnError::Warn { failures } else { 0 };
                    assert_eq!(warnings.len(), expected, "{what}: {warnings:?}");
                    assert!(warnings.iter().all(|(k, _)| *k == ErrorKind::Cache));
                }
                _ => unreachable!(),
            }
        }
    }
}

/// A hook may change the hook (here: warn once, then go back to the default). The hook is
/// called with no lock held; before, it ran under the hook's own lock and this deadlocked.
#[test]
fn a_warning_hook_may_reset_the_hook() {
    let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let seen = Arc::new(Mutex::new(0));
    let sink = Arc::clone(&seen);
    ckpt::set_warning_hook(move |_| {
        *sink.lock().unwrap() += 1;
        ckpt::reset_warning_hook();
    });
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let d = DecoratorCheckpoint::new(
            Function::new("seed", "hook_resets_itself"),
            AutoIdentifier,
            FailingCache::failing(false, true),
        )
        .with_on_error(OnError::Warn);
        let _ = done.send(d.call(4u32, |x| x * 5).unwrap());
    });
    let got = finished.recv_timeout(std::time::Duration::from_secs(10));
    // (Checked before resetting: a deadlocked hook would hold the lock that resetting takes.)
    assert_eq!(got, Ok(20), "the call deadlocked in its warning hook");
    ckpt::reset_warning_hook();
    assert_eq!(*seen.lock().unwrap(), 1);
}

/// An item of a result whose `Serialize` panics when its value is `PANICS`.
#[derive(serde::Deserialize, Debug, PartialEq)]
struct Item(u64);

const PANICS: u64 = 7;

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert_ne!(self.0, PANICS, "this item refuses to be serialized");
        s.serialize_newtype_struct("Item", &self.0)
    }
}

/// A panic in a result's `Serialize` is the caller's, whatever the result's size: it reaches
/// the caller, nothing is saved, and the store is not taken for damaged. (Before, a panic past
/// the first 512 KiB of a result, which is encoded inside the store's write, was caught there,
/// reported as a damaged file, and the call returned its value under `OnError::Warn`.)
#[test]
fn a_panic_in_a_results_serialize_reaches_the_caller_and_the_store_stays_whole() {
    let dir = common::TempDir::new("seed-serialize-panics");
    // Uncompressed, so that the large result is encoded inside the store's write.
    let store = ckpt::Store::builder()
        .compression(ckpt::Compression::None)
        .open(dir.store_path())
        .unwrap();
    let d = DecoratorCheckpoint::new(
        Function::new("seed", "serialize_panics"),
        AutoIdentifier,
        store.clone(),
    )
    .with_on_error(OnError::Warn);
    // Small (the panic comes first) and large (it comes after about 1 MB of encoded items).
    for (arg, len) in [(1u64, 0u64), (2, 100_000)] {
        let (got, warnings) = with_warnings(|| {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                d.call(arg, |_| {
                    let items = (0..len).map(|i| Item(u64::MAX - i));
                    items.chain([Item(PANICS)]).collect::<Vec<_>>()
                })
            }))
        });
        let panic = got.expect_err("the Serialize panic reached the caller");
        let message = panic.downcast_ref::<String>().map_or("", String::as_str);
        assert!(
            message.contains("refuses to be serialized"),
            "{len} items: {message:?}"
        );
        assert!(warnings.is_empty(), "{len} items: {warnings:?}");
    }
    assert_eq!(store.stats().unwrap().entries, 0);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    // The store saves as before.
    assert_eq!(d.call(3u64, |_| vec![Item(8)]).unwrap(), vec![Item(8)]);
    assert_eq!(store.stats().unwrap().entries, 1);
}

mod broken {
    use crate::FailingCache;

    ckpt::checkpoint! {
        #[checkpoint(cache = FailingCache::failing(true, true), on_error = raise)]
        pub fn raising(x: u64) -> std::io::Result<u64> { Ok(x) }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = FailingCache::failing(true, true))]
        pub fn warning(x: u64) -> u64 { x }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = FailingCache::failing(true, true), on_error = ignore)]
        pub fn ignoring(x: u64) -> u64 { x }
    }
}

#[test]
fn macro_on_error_policies() {
    let (results, warnings) = with_warnings(|| {
        let raised = broken::raising(1).unwrap_err();
        let inner = raised
            .get_ref()
            .and_then(|e| e.downcast_ref::<ckpt::Error>())
            .expect("the checkpoint error inside the io::Error");
        assert_eq!(inner.kind(), ErrorKind::Cache);
        (broken::warning(2), broken::ignoring(3))
    });
    assert_eq!(results, (2, 3));
    // Only `warning` warns: once for the retrieve, once for the save.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(broken::ignoring::stats().errors, 2);
    assert_eq!(broken::raising::stats().errors, 1);
}
