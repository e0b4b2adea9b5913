//! The redb store across reopen: hits, statistics, inspection and removal, and the invariant that
//! a save writes a result and its metadata together.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, Function, OnError, OpenError,
    OpenErrorKind, Store,
};
use common::{TempDir, meta_word, read_rows};

fn deco(store: &Store, function: Function) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(function, AutoIdentifier, store.clone()).with_on_error(OnError::Raise)
}

fn ids<'a>(infos: impl IntoIterator<Item = &'a ckpt::store::EntryInfo>) -> BTreeSet<CheckpointId> {
    infos.into_iter().map(|i| i.id).collect()
}

/// The length of the record ckpt stores for `value`: a 32-byte header, then postcard.
fn record_len<T: serde::Serialize>(value: &T) -> u64 {
    32 + postcard::to_allocvec(value).unwrap().len() as u64
}

#[test]
fn a_saved_result_is_a_hit_after_reopen_and_stats_persist() {
    let dir = TempDir::new("reopen");
    let path = dir.store_path();
    let square = Function::new("store_round_trip", "square");

    let id = {
        let store = Store::open(&path).unwrap();
        let d = deco(&store, square.clone());
        let v = d
            .call(12u64, |x| {
                std::thread::sleep(Duration::from_millis(5));
                x * x
            })
            .unwrap();
        assert_eq!(v, 144);
        assert_eq!(
            (d.stats().misses, d.stats().saves, d.stats().hits),
            (1, 1, 0)
        );
        d.identify(&12u64).unwrap()
        // Both handles dropped here: the file is released and the counts flushed.
    };

    let store = Store::open(&path).unwrap();
    let d = deco(&store, square.clone());
    for _ in 0..3 {
        let v = d
            .call(12u64, |_| -> u64 {
                panic!("a stored result must be a hit")
            })
            .unwrap();
        assert_eq!(v, 144);
    }
    assert_eq!((d.stats().hits, d.stats().misses), (3, 0));

    let info = store
        .entry(&id)
        .unwrap()
        .expect("the entry survives reopen");
    assert!(info.compute_time >= Duration::from_millis(5));
    assert_eq!(info.size, record_len(&144u64));
    let stats = store.stats().unwrap();
    assert_eq!(stats.calls.hits, 3);
    assert_eq!(stats.calls.misses, 1);
    assert_eq!(stats.calls.saves, 1);
    assert_eq!(stats.calls.errors, 0);
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.stored_bytes, info.size);
    assert!(stats.file_bytes > 0);
    // Time saved is, per hit, the compute time recorded when the result was saved.
    assert_eq!(
        u128::from(stats.calls.saved_nanos),
        3 * info.compute_time.as_nanos()
    );
    assert_eq!(stats.calls.time_saved(), info.compute_time * 3);
    assert!(stats.calls.time_spent() >= Duration::from_millis(5));
    assert_eq!(stats.calls.hit_ratio(), Some(0.75));
    drop(d);
    drop(store);

    // A third open reads the same totals back from the file, and the per-entry hit count.
    let store = Store::open(&path).unwrap();
    let again = store.stats().unwrap();
    assert_eq!(again.calls, stats.calls);
    assert_eq!(
        (again.entries, again.stored_bytes),
        (stats.entries, stats.stored_bytes)
    );
    assert_eq!(again.functions.len(), 1);
    assert_eq!(again.functions[0].path(), "store_round_trip::square");
    let info = store.entry(&id).unwrap().unwrap();
    assert_eq!(info.hits, 3);
    assert!(info.last_access >= info.created);
}

#[test]
fn a_held_file_cannot_be_opened_twice_until_every_handle_is_gone() {
    let dir = TempDir::new("held");
    let path = dir.store_path();
    let store = Store::open(&path).unwrap();
    let clone = store.clone();
    let err = Store::open(&path).unwrap_err();
    // This process holds it: the error says so (issue 10, item 8; this was `AlreadyOpen`).
    assert_eq!(err.kind(), &OpenErrorKind::OpenInThisProcess);
    assert_eq!(err.path(), path);
    store.close().unwrap();
    // `close` releases one handle; the clone still holds the file.
    assert_eq!(
        Store::open(&path).unwrap_err().kind(),
        &OpenErrorKind::OpenInThisProcess
    );
    drop(clone);
    Store::open(&path).expect("released once the last handle is dropped");
}

#[test]
fn inspection_lists_and_removes_entries() {
    let dir = TempDir::new("inspect");
    let store = Store::open(dir.store_path()).unwrap();
    let f = Function::new("inspect", "f");
    let g = Function::new("inspect", "g");
    let df = deco(&store, f.clone());
    let dg = deco(&store, g.clone());
    for x in 0..3u32 {
        df.call(x, |x| x + 100).unwrap();
    }
    for x in 0..2u32 {
        dg.call(x, |x| format!("g{x}")).unwrap();
    }
    let f_ids: BTreeSet<_> = (0..3u32).map(|x| df.identify(&x).unwrap()).collect();
    let g_ids: BTreeSet<_> = (0..2u32).map(|x| dg.identify(&x).unwrap()).collect();

    let all = store.entries().unwrap();
    assert_eq!(all.len(), 5);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "entries in id order"
    );
    assert_eq!(ids(&all), f_ids.union(&g_ids).copied().collect());

    let of_f = store.entries_of(&f).unwrap();
    assert_eq!(ids(&of_f), f_ids);
    for info in &of_f {
        assert_eq!(info.function.as_deref(), Some("inspect::f"));
        assert_eq!(info.function_key, f.key());
        assert_eq!(info.code_version, f.code_version());
        assert!(!info.stale);
        assert_eq!(info.hits, 0);
        let bytes = store.retrieve(&info.id).unwrap().unwrap();
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(store.entry(&info.id).unwrap().as_ref(), Some(info));
    }
    assert_eq!(ids(&store.entries_of(&g).unwrap()), g_ids);
    assert_eq!(
        store.entry(&CheckpointId::from_bytes([0; 16])).unwrap(),
        None
    );

    // remove: one entry, result and metadata.
    let id0 = df.identify(&0u32).unwrap();
    assert!(store.remove(&id0).unwrap());
    assert!(!store.remove(&id0).unwrap(), "already removed");
    assert_eq!(store.entry(&id0).unwrap(), None);
    assert_eq!(store.retrieve(&id0).unwrap(), None);
    assert_eq!(store.entries_of(&f).unwrap().len(), 2);
    let runs = AtomicUsize::new(0);
    let v = df
        .call(0u32, |x| {
            runs.fetch_add(1, Ordering::Relaxed);
            x + 100
        })
        .unwrap();
    assert_eq!((v, runs.load(Ordering::Relaxed)), (100, 1), "recomputed");

    // remove_function: every entry of g, its statistics kept.
    assert_eq!(store.remove_function(&g).unwrap(), 2);
    assert!(store.entries_of(&g).unwrap().is_empty());
    assert_eq!(store.entries_of(&f).unwrap().len(), 3);
    let gs = store.function_stats(&g).unwrap().unwrap();
    assert_eq!((gs.entries, gs.stored_bytes, gs.calls.misses), (0, 0, 2));
    assert_eq!(store.remove_function(&g).unwrap(), 0);

    // clear: everything, statistics kept.
    assert_eq!(store.clear().unwrap(), 3);
    assert!(store.entries().unwrap().is_empty());
    let stats = store.stats().unwrap();
    assert_eq!((stats.entries, stats.stored_bytes), (0, 0));
    assert_eq!(stats.calls.saves, 6);
    assert_eq!(stats.calls.misses, 6);
    assert_eq!(store.clear().unwrap(), 0);
}

#[test]
fn remove_stale_drops_the_entries_of_other_code_versions() {
    let dir = TempDir::new("stale");
    let store = Store::open(dir.store_path()).unwrap();
    let v1 = Function::new("stale", "f").with_version("1");
    let v2 = Function::new("stale", "f").with_version("2");
    let d1 = deco(&store, v1.clone());
    for x in 0..3u8 {
        d1.call(x, |x| u32::from(x) + 1).unwrap();
    }
    let d2 = deco(&store, v2.clone());
    for x in 0..2u8 {
        d2.call(x, |x| u32::from(x) + 2).unwrap();
    }
    let v1_ids: BTreeSet<_> = (0..3u8).map(|x| d1.identify(&x).unwrap()).collect();
    let v2_ids: BTreeSet<_> = (0..2u8).map(|x| d2.identify(&x).unwrap()).collect();
    assert!(
        v1_ids.is_disjoint(&v2_ids),
        "a version bump changes every id"
    );

    // Both versions are entries of one function (one key); v1's are stale.
    let all = store.entries_of(&v2).unwrap();
    assert_eq!(all.len(), 5);
    for info in &all {
        assert_eq!(info.stale, v1_ids.contains(&info.id), "{info:?}");
    }
    let fs = store.function_stats(&v2).unwrap().unwrap();
    assert_eq!(fs.code_version, v2.code_version());
    assert_eq!(fs.version.as_deref(), Some("2"));
    assert_eq!(fs.entries, 5);
    // Looked up by key: the version does not matter.
    assert_eq!(
        store.function_stats(&Function::new("stale", "f")).unwrap(),
        Some(fs)
    );

    assert_eq!(store.remove_stale(&v2).unwrap(), 3);
    let left = store.entries_of(&v2).unwrap();
    assert_eq!(ids(&left), v2_ids);
    assert!(left.iter().all(|i| i.code_version == v2.code_version()));
    assert_eq!(store.remove_stale(&v2).unwrap(), 0);
    assert_eq!(store.function_stats(&v2).unwrap().unwrap().entries, 2);
    // From v1's point of view, v2's entries are the stale ones.
    assert_eq!(store.remove_stale(&v1).unwrap(), 2);
    assert!(store.entries().unwrap().is_empty());
}

#[test]
fn remove_all_stale_keeps_each_functions_newest_version() {
    let dir = TempDir::new("allstale");
    let store = Store::open(dir.store_path()).unwrap();
    let a1 = Function::new("allstale", "a").with_code_hash(ckpt::code_hash("{ x + 1 }"));
    let a2 = Function::new("allstale", "a").with_code_hash(ckpt::code_hash("{ x + 2 }"));
    let b = Function::new("allstale", "b").with_version("1");
    let c1 = Function::new("allstale", "c");
    let c2 = Function::new("allstale", "c").with_version("2");

    let mut keep = BTreeSet::new();
    let mut save = |f: &Function, xs: std::ops::Range<u64>, newest: bool| {
        let d = deco(&store, f.clone());
        for x in xs {
            d.call(x, |x| x * 10).unwrap();
            if newest {
                keep.insert(d.identify(&x).unwrap());
            }
        }
    };
    save(&a1, 0..2, false);
    save(&a2, 0..1, true);
    save(&b, 0..2, true);
    save(&c1, 0..1, false);
    save(&c2, 5..6, true);
    assert_eq!(store.entries().unwrap().len(), 7);
    assert_eq!(
        store.entries().unwrap().iter().filter(|i| i.stale).count(),
        3
    );

    assert_eq!(store.remove_all_stale().unwrap(), 3);
    let left = store.entries().unwrap();
    assert_eq!(ids(&left), keep);
    assert!(left.iter().all(|i| !i.stale));
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, 4);
    assert_eq!(stats.stored_bytes, left.iter().map(|i| i.size).sum::<u64>());
    assert_eq!(store.remove_all_stale().unwrap(), 0);
}

#[test]
fn an_old_version_saving_late_does_not_make_the_new_one_stale() {
    // A rolling deployment: the new code registers and saves, then a process still running the
    // old code saves again. The newest version is the one first seen last, not the last writer.
    let dir = TempDir::new("late-old");
    let store = Store::open(dir.store_path()).unwrap();
    let old = Function::new("late", "f").with_version("1");
    let new = Function::new("late", "f").with_version("2");
    deco(&store, old.clone()).call(1u64, |x| x).unwrap();
    let d_new = deco(&store, new.clone());
    d_new.call(2u64, |x| x).unwrap();
    deco(&store, old.clone()).call(3u64, |x| x).unwrap();

    let stats = store.function_stats(&new).unwrap().unwrap();
    assert_eq!(stats.version.as_deref(), Some("2"));
    let stale: BTreeSet<_> = store
        .entries()
        .unwrap()
        .into_iter()
        .filter(|i| i.stale)
        .map(|i| i.code_version)
        .collect();
    assert_eq!(stale, BTreeSet::from([old.code_version()]));
    assert_eq!(store.remove_all_stale().unwrap(), 2);
    assert_eq!(
        ids(&store.entries().unwrap()),
        BTreeSet::from([d_new.identify(&2u64).unwrap()])
    );
}

#[test]
fn per_function_stats() {
    let dir = TempDir::new("fnstats");
    let store = Store::open(dir.store_path()).unwrap();
    let f = Function::new("fnstats", "f")
        .with_code_hash(0x1234)
        .with_version("3");
    let g = Function::new("fnstats", "g");
    let df = deco(&store, f.clone());
    let dg = deco(&store, g.clone());
    df.call(1u64, |x| x + 1).unwrap(); // miss
    df.call(1u64, |x| x + 1).unwrap(); // hit
    df.call(2u64, |x| x + 1).unwrap(); // miss
    df.rerun(1u64, |x| x + 1).unwrap(); // rerun, overwrites
    dg.call("a", |s: &str| s.len()).unwrap(); // miss

    let fs = store.function_stats(&f).unwrap().expect("f was seen");
    assert_eq!(fs.key, f.key());
    assert_eq!((fs.module.as_str(), fs.name.as_str()), ("fnstats", "f"));
    assert_eq!(fs.path(), "fnstats::f");
    assert_eq!(fs.code_hash, Some(0x1234));
    assert_eq!(fs.version.as_deref(), Some("3"));
    assert_eq!(fs.code_version, f.code_version());
    assert_eq!(
        (
            fs.calls.hits,
            fs.calls.misses,
            fs.calls.reruns,
            fs.calls.saves
        ),
        (1, 2, 1, 3)
    );
    assert_eq!(fs.entries, 2, "the rerun replaced its entry");
    let f_sizes: u64 = store.entries_of(&f).unwrap().iter().map(|i| i.size).sum();
    assert_eq!(fs.stored_bytes, f_sizes);
    assert_eq!(fs.calls, df.stats());

    let gs = store.function_stats(&g).unwrap().unwrap();
    assert_eq!((gs.calls.misses, gs.calls.saves, gs.entries), (1, 1, 1));
    assert_eq!((gs.code_hash, gs.version.as_deref()), (None, None));
    assert_eq!(
        store
            .function_stats(&Function::new("never", "seen"))
            .unwrap(),
        None
    );

    let stats = store.stats().unwrap();
    let paths: Vec<String> = stats.functions.iter().map(|f| f.path()).collect();
    assert_eq!(paths, ["fnstats::f", "fnstats::g"]);
    assert_eq!(stats.calls.hits, fs.calls.hits + gs.calls.hits);
    assert_eq!(stats.calls.misses, fs.calls.misses + gs.calls.misses);
    assert_eq!(stats.calls.saves, fs.calls.saves + gs.calls.saves);
    assert_eq!(stats.entries, fs.entries + gs.entries);
    assert_eq!(stats.stored_bytes, fs.stored_bytes + gs.stored_bytes);
}

#[test]
fn a_save_writes_result_and_metadata_together() {
    let dir = TempDir::new("atomic");
    let path = dir.store_path();
    let f = Function::new("atomic", "f");
    let g = Function::new("atomic", "g").with_version("1");
    {
        let store = Store::open(&path).unwrap();
        let df = deco(&store, f.clone());
        let dg = deco(&store, g.clone());
        // Concurrent saves share group-commit transactions.
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let df = &df;
                s.spawn(move || {
                    for x in 0..25u64 {
                        let n = t * 100 + x;
                        df.call(n, |n| vec![n as u8; (n % 7) as usize * 10])
                            .unwrap();
                    }
                });
            }
        });
        // A save too large for the queue takes the direct path.
        dg.call(0u64, |_| vec![7u8; 300 * 1024]).unwrap();
        for x in 1..10u64 {
            dg.call(x, |x| vec![x as u8; 3]).unwrap();
        }
        // Overwrites and removals.
        df.rerun(0u64, |_| vec![1u8; 50]).unwrap();
        dg.rerun(0u64, |_| vec![2u8; 5]).unwrap();
        assert!(store.remove(&df.identify(&1u64).unwrap()).unwrap());
        assert!(store.remove(&dg.identify(&2u64).unwrap()).unwrap());
        assert_eq!(store.entries().unwrap().len(), 100 - 1 + 10 - 1);
    }

    let rows = read_rows(&path);
    let result_ids: BTreeSet<_> = rows.results.iter().map(|(id, _)| *id).collect();
    let entry_ids: BTreeSet<_> = rows.entries.iter().map(|(id, _)| *id).collect();
    assert_eq!(rows.results.len(), 108);
    assert_eq!(result_ids, entry_ids, "results and metadata rows differ");
    for (id, row) in &rows.entries {
        assert_eq!(row[0], 1, "metadata row version");
        let (_, bytes) = rows.results.iter().find(|(r, _)| r == id).unwrap();
        assert_eq!(meta_word(row, 48), bytes.len() as u64, "recorded size");
        let key = meta_word(row, 8);
        assert!(key == f.key() || key == g.key());
    }

    let store = Store::open(&path).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, rows.results.len() as u64);
    let total: usize = rows.results.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(stats.stored_bytes, total as u64);
}

#[test]
fn handles_and_errors_are_thread_safe() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync_clone::<Store>();
    error::<ckpt::Error>();
    error::<OpenError>();

    // And a handle does serve another thread.
    let dir = TempDir::new("threads");
    let store = Store::open(dir.store_path()).unwrap();
    let other = store.clone();
    let entries = std::thread::spawn(move || {
        let d = deco(&other, Function::new("threads", "f"));
        d.call(1u8, |x| x).unwrap();
        other.stats().unwrap().entries
    })
    .join()
    .unwrap();
    assert_eq!(entries, 1);
    assert_eq!(store.stats().unwrap().entries, 1);
}
