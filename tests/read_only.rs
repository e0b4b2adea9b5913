//! Opening without writing: a file ckpt refuses comes out byte for byte as it went in, and a
//! read-only store (`StoreBuilder::read_only`) reads, refuses every write with a typed error,
//! and changes no byte of its file.

mod common;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use ckpt::store::{EvictMode, ManualClock};
use ckpt::{
    AccessMode, AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind,
    EvictionPolicy, Function, Limits, OnError, OpenErrorKind, Store,
};
use common::{Rng, TempDir};

fn function() -> Function {
    Function::new("ro", "f")
}

/// A closed store with `n` entries, some hit, over simulated hours.
fn build_store(path: &Path, n: u64) -> Vec<CheckpointId> {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = Store::builder()
        .clock(clock.clone())
        .chunk_size(1024)
        .open(path)
        .unwrap();
    let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let mut ids = Vec::new();
    for i in 0..n {
        clock.advance(Duration::from_secs(60));
        deco.call(i, |i| vec![i as u8; 100 + (i as usize * 97) % 3000])
            .unwrap();
        ids.push(deco.identify(&i).unwrap());
    }
    // Hits in a different order from the saves, so LRU, LFU and FIFO disagree.
    for i in (0..n).rev().step_by(3) {
        clock.advance(Duration::from_secs(1));
        for _ in 0..(i % 4) {
            deco.call(i, |i| vec![i as u8; 100 + (i as usize * 97) % 3000])
                .unwrap();
        }
    }
    drop(deco);
    store.close().unwrap();
    ids
}

/// The bytes of a redb database as a crash would leave them: copied while it is open.
fn unclean_image(path: &Path, write: impl FnOnce(&redb::Database)) -> Vec<u8> {
    let db = redb::Database::create(path).unwrap();
    write(&db);
    let image = std::fs::read(path).unwrap();
    drop(db);
    image
}

fn foreign_tables(db: &redb::Database) {
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<u64, u64>::new("users"))
        .unwrap()
        .insert(1, 2)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_file_that_is_not_a_store_comes_out_byte_identical() {
    let dir = TempDir::new("ro-foreign");
    let path = dir.join("other.redb");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, not a database\n".repeat(500)),
        ("zeros", vec![0; 8192]),
    ];
    // Another application's redb database, closed cleanly.
    drop(std::fs::remove_file(&path));
    {
        let db = redb::Database::create(&path).unwrap();
        foreign_tables(&db);
    }
    cases.push(("foreign redb", std::fs::read(&path).unwrap()));
    // The same, as a crash left it: it needs recovery, which writes; a probe in memory reads it.
    std::fs::remove_file(&path).unwrap();
    cases.push((
        "foreign redb, unclean",
        unclean_image(&path, foreign_tables),
    ));
    // A ckpt_info table naming another format.
    std::fs::remove_file(&path).unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("ckpt_info"))
            .unwrap()
            .insert("format", &b"nope"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    cases.push(("other format", std::fs::read(&path).unwrap()));

    for (what, bytes) in cases {
        for access in [AccessMode::ReadWrite, AccessMode::ReadOnly] {
            std::fs::write(&path, &bytes).unwrap();
            let e = Store::builder()
                .access(access)
                .open(&path)
                .err()
                .unwrap_or_else(|| panic!("{what} opened ({access:?})"));
            assert!(
                matches!(
                    e.kind(),
                    OpenErrorKind::NotAStore | OpenErrorKind::Corrupted
                ),
                "{what}: {e}"
            );
            assert!(
                std::fs::read(&path).unwrap() == bytes,
                "{what}: refused ({access:?}) but changed"
            );
        }
    }
}

#[test]
fn a_store_of_a_newer_schema_comes_out_byte_identical() {
    let dir = TempDir::new("ro-newer");
    let path = dir.store_path();
    build_store(&path, 3);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("ckpt_info"))
            .unwrap()
            .insert("schema", &99u32.to_le_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e.kind(), OpenErrorKind::NewerSchema { .. }), "{e}");
    assert!(std::fs::read(&path).unwrap() == bytes);
}

#[test]
fn an_unclean_store_is_recovered_by_a_writable_open_and_refused_by_a_read_only_one() {
    let dir = TempDir::new("ro-unclean");
    let path = dir.store_path();
    let ids = build_store(&path, 5);
    // The store as a crash leaves it: copied while a process holds it.
    let image = {
        let store = Store::open(&path).unwrap();
        let image = std::fs::read(&path).unwrap();
        drop(store);
        image
    };
    std::fs::write(&path, &image).unwrap();

    let e = Store::builder().read_only().open(&path).unwrap_err();
    assert_eq!(e.kind(), &OpenErrorKind::NeedsRecovery, "{e}");
    assert!(e.to_string().contains("needs recovery"), "{e}");
    assert!(
        std::fs::read(&path).unwrap() == image,
        "a read-only open wrote"
    );

    let store = Store::open(&path).unwrap();
    assert_eq!(store.entries().unwrap().len(), ids.len());
    drop(store);
    let store = Store::builder().read_only().open(&path).unwrap();
    assert_eq!(store.entries().unwrap().len(), ids.len());
}

#[test]
fn a_read_only_store_reads_refuses_writes_and_changes_no_byte() {
    let dir = TempDir::new("ro-store");
    let path = dir.store_path();
    let ids = build_store(&path, 30);
    let before = std::fs::read(&path).unwrap();
    {
        let store = Store::builder().read_only().open(&path).unwrap();
        assert_eq!(store.access_mode(), AccessMode::ReadOnly);
        let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
        // Hits are served, and counted in memory.
        for i in 0..10u64 {
            let v = deco.call(i, |_| -> Vec<u8> { panic!("a hit ran the body") });
            assert_eq!(v.unwrap().len(), 100 + (i as usize * 97) % 3000);
        }
        let stats = store.stats().unwrap();
        assert_eq!(stats.entries, 30);
        assert!(stats.calls.hits >= 10);
        assert!(stats.reclaimable_bytes < stats.file_bytes);
        assert_eq!(store.entries().unwrap().len(), 30);
        assert!(store.entry(&ids[0]).unwrap().is_some());
        assert!(store.read_record(&ids[0]).unwrap().is_some());
        assert!(store.verify().unwrap().is_clean());
        let dry = store
            .evict_with(&Limits::new().max_entries(5), EvictMode::DryRun)
            .unwrap();
        assert_eq!(dry.evicted.len(), 26);
        let mut archive = Vec::new();
        assert_eq!(store.export(&mut archive).unwrap().entries, 30);

        // Every write is the typed error.
        let read_only = |r: Result<(), ckpt::Error>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.kind(), ErrorKind::ReadOnly, "{what}: {e}");
            assert!(e.to_string().contains("read-only"), "{e}");
        };
        read_only(deco.call(999u64, |_| vec![1u8]).map(drop), "a miss's save");
        read_only(store.remove(&ids[0]).map(drop), "remove");
        read_only(store.clear().map(drop), "clear");
        read_only(store.evict().map(drop), "evict");
        read_only(
            store
                .evict_with(&Limits::new().max_entries(5), EvictMode::Apply)
                .map(drop),
            "evict_with",
        );
        read_only(store.expire().map(drop), "expire");
        read_only(store.compact().map(drop), "compact");
        read_only(store.repair().map(drop), "repair");
        read_only(
            store.set_limits(Limits::new().max_entries(5)).map(drop),
            "set_limits",
        );
        read_only(store.import(&archive[..]).map(drop), "import");
        read_only(
            store.remove_function(&function()).map(drop),
            "remove_function",
        );
        read_only(store.remove_all_stale().map(drop), "remove_all_stale");
        // Flushing has nothing to write: the bookkeeping stays in memory.
        store.flush().unwrap();
        drop(deco);
        store.close().unwrap();
    }
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a read-only store changed its file"
    );
    // And the file holds no trace of the hits.
    let store = Store::open(&path).unwrap();
    let hits_before: u64 = store.entries().unwrap().iter().map(|e| e.hits).sum();
    let row = store.function_stats(&function()).unwrap().unwrap();
    drop(store);
    build_hits_unchanged(hits_before, row.calls.hits);
}

/// What `build_store` recorded: the hits of every third entry from the last.
fn build_hits_unchanged(entry_hits: u64, function_hits: u64) {
    let expected: u64 = (0..30u64).rev().step_by(3).map(|i| i % 4).sum();
    assert_eq!(entry_hits, expected);
    assert_eq!(function_hits, expected);
}

#[test]
fn a_read_only_store_opens_a_file_it_may_not_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("ro-0444");
    let path = dir.store_path();
    build_store(&path, 4);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let store = Store::builder().read_only().open(&path).unwrap();
    assert_eq!(store.entries().unwrap().len(), 4);
    assert!(store.verify().unwrap().is_clean());
    drop(store);
    // Tests may run as root, for whom the mode does not stop writes: what counts is that no byte
    // changed.
    assert!(std::fs::read(&path).unwrap() == before);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_second_open_in_one_process_says_to_clone_the_handle() {
    let dir = TempDir::new("ro-twice");
    let path = dir.store_path();
    let store = Store::open(&path).unwrap();
    for access in [AccessMode::ReadWrite, AccessMode::ReadOnly] {
        let e = Store::builder().access(access).open(&path).unwrap_err();
        assert_eq!(e.kind(), &OpenErrorKind::OpenInThisProcess, "{e}");
        assert!(
            e.to_string().contains("already open in this process"),
            "{e}"
        );
        assert!(e.to_string().contains("clone the Store handle"), "{e}");
    }
    // Also by another spelling of the path.
    let other = dir.path().join(".").join("checkpoints.redb");
    assert_eq!(
        Store::open(&other).unwrap_err().kind(),
        &OpenErrorKind::OpenInThisProcess
    );
    drop(store);
    drop(Store::open(&path).unwrap());
}

/// A dry run (a read) reports exactly what applying the same limits (a write) removes, in the
/// same order, for every policy and for expiry.
#[test]
fn a_dry_run_reports_what_applying_removes() {
    let dir = TempDir::new("ro-dry");
    let path = dir.store_path();
    build_store(&path, 60);
    let image = std::fs::read(&path).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 60 * 60 + 60);
    let mut cases = Vec::new();
    for policy in [
        EvictionPolicy::lru(),
        EvictionPolicy::lfu(),
        EvictionPolicy::fifo(),
    ] {
        cases.push(Limits::new().max_entries(17).policy(policy));
        cases.push(Limits::new().max_bytes(40_000).policy(policy));
        cases.push(
            Limits::new()
                .max_entries(40)
                .max_bytes(30_000)
                .low_water(0.5)
                .policy(policy),
        );
        cases.push(
            Limits::new()
                .max_age(Duration::from_secs(30 * 60))
                .max_entries(10)
                .policy(policy),
        );
    }
    cases.push(Limits::new().max_idle(Duration::from_secs(20 * 60)));
    cases.push(Limits::new().max_entries(1000));
    for limits in cases {
        std::fs::write(&path, &image).unwrap();
        let clock = ManualClock::new(now);
        let ro = Store::builder()
            .clock(clock.clone())
            .read_only()
            .open(&path)
            .unwrap();
        let dry = ro.evict_with(&limits, EvictMode::DryRun).unwrap();
        drop(ro);
        let rw = Store::builder().clock(clock).open(&path).unwrap();
        let dry_rw = rw.evict_with(&limits, EvictMode::DryRun).unwrap();
        let applied = rw.evict_with(&limits, EvictMode::Apply).unwrap();
        assert_eq!(dry, applied, "{limits:?}");
        assert_eq!(dry_rw, applied, "{limits:?}");
        assert!(
            !applied.evicted.is_empty() || limits.max_entries_value() == Some(1000),
            "{limits:?} evicted nothing: the case tests nothing"
        );
    }
}

/// `verify` of a read-only store, on damaged files (random byte flips, as in bad_files.rs):
/// never a panic, never a changed byte.
#[test]
fn verify_of_a_read_only_store_changes_no_byte_of_a_damaged_file() {
    let dir = TempDir::new("ro-flips");
    let path = dir.store_path();
    build_store(&path, 40);
    let image = std::fs::read(&path).unwrap();
    let mut rng = Rng::from_env("CKPT_FLIP_SEED", 0x5eed_0f0f);
    let (mut opened, mut found) = (0, 0);
    for _ in 0..150 {
        let mut bytes = image.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 + rng.below(255) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(store) = Store::builder().read_only().open(&path) {
            opened += 1;
            match store.verify() {
                Ok(r) if !r.is_clean() => found += 1,
                Err(_) => found += 1,
                Ok(_) => {}
            }
            let _ = store.stats();
            let _ = store.entries();
            let _ = store.repair();
            drop(store);
        }
        assert!(std::fs::read(&path).unwrap() == bytes, "the file changed");
    }
    eprintln!("{opened} opened, {found} found damaged");
    assert!(
        opened > 0 && found > 0,
        "{opened} opened, {found} found damaged"
    );
}

#[test]
fn read_only_is_a_mode_of_the_builder() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AccessMode>();
    assert_eq!(AccessMode::default(), AccessMode::ReadWrite);
    let dir = TempDir::new("ro-missing");
    // A missing file is an error, not a new store.
    let e = Store::builder()
        .read_only()
        .open(dir.store_path())
        .unwrap_err();
    assert_eq!(e.kind(), &OpenErrorKind::Io, "{e}");
    assert!(!dir.store_path().exists());
    // The handle is a `Cache` like any store: a miss is a miss.
    build_store(&dir.store_path(), 1);
    let store = Store::builder().read_only().open(dir.store_path()).unwrap();
    let id = CheckpointId::from_bytes([7; 16]);
    assert!(store.retrieve(&id).unwrap().is_none());
}
