//! Hits read results-table snapshots kept between calls (`src/store/snapshot.rs`); every commit
//! must make them stale, or a hit could miss a save, a rerun or a removal.

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Store};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ckpt-snapshot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn hits_see_every_write_made_before_them() {
    let dir = scratch("fresh");
    let store = Store::open(dir.join("s.redb")).unwrap();
    let d = DecoratorCheckpoint::new(Function::new("t", "f"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    for n in 0..20u64 {
        // A save after hits have cached a snapshot: the next hit must see it.
        assert_eq!(d.call(n, |n| n * 2).unwrap(), n * 2);
        assert_eq!(
            d.call(n, |_| -> u64 { unreachable!("a hit") }).unwrap(),
            n * 2
        );
        let id = d.identify(&n).unwrap();
        assert_eq!(d.peek::<u64>(&id).unwrap(), Some(n * 2));
        // A rerun overwrites: the next hit reads the new value.
        assert_eq!(d.rerun(n, |n| n * 3).unwrap(), n * 3);
        assert_eq!(d.peek::<u64>(&id).unwrap(), Some(n * 3));
    }
    // Removals are seen at once too.
    let id = d.identify(&3u64).unwrap();
    assert!(store.remove(&id).unwrap());
    assert_eq!(d.peek::<u64>(&id).unwrap(), None);
    assert_eq!(store.clear().unwrap(), 19);
    assert_eq!(d.peek::<u64>(&d.identify(&4u64).unwrap()).unwrap(), None);
    drop((d, store));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dropped_store_releases_its_file_despite_snapshots() {
    let dir = scratch("reopen");
    let path = dir.join("s.redb");
    for round in 0..3u64 {
        let store = Store::open(&path).unwrap();
        let d = DecoratorCheckpoint::new(Function::new("t", "g"), AutoIdentifier, store)
            .with_on_error(OnError::Raise);
        // Every round after the first hits what the earlier round saved.
        assert_eq!(d.call(7u64, |n| n + 1).unwrap(), 8);
        assert_eq!(d.stats().hits, u64::from(round > 0));
        let other = std::thread::spawn(move || {
            d.call(7u64, |_| -> u64 { unreachable!("a hit") }).unwrap();
            d
        });
        drop(other.join().unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn threads_see_each_others_saves() {
    let dir = scratch("threads");
    let store = Store::open(dir.join("s.redb")).unwrap();
    let d = DecoratorCheckpoint::new(Function::new("t", "h"), AutoIdentifier, store)
        .with_on_error(OnError::Raise);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let d = &d;
            s.spawn(move || {
                for n in 0..50u64 {
                    assert_eq!(d.call(n, |n| n * 10).unwrap(), n * 10, "thread {t}");
                    // Whoever saved it, this thread's next call must hit.
                    let hits = d.stats().hits;
                    assert_eq!(
                        d.call(n, |_| -> u64 { unreachable!("a hit") }).unwrap(),
                        n * 10
                    );
                    assert!(d.stats().hits > hits);
                }
            });
        }
    });
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}
