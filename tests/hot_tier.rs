//! The hot tier: hits served from memory never return an older value than the file holds, across
//! saves, reruns, bulk saves, removals, eviction, expiry, reopens and threads.

mod common;

use std::time::Duration;

use ckpt::store::ManualClock;
use ckpt::testing;
use ckpt::{
    AutoIdentifier, ConcurrencyMode, DecoratorCheckpoint, Function, Limits, OnError, OpenErrorKind,
    Store,
};
use common::TempDir;

fn hot_store(dir: &TempDir) -> Store {
    Store::builder()
        .hot_tier(4 << 20)
        .open(dir.store_path())
        .unwrap()
}

fn deco(store: &Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(Function::new("hot", "f"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise)
}

fn hit(d: &DecoratorCheckpoint<AutoIdentifier, Store>, x: u64) -> u64 {
    d.call(x, |_| -> u64 { panic!("{x} should be a hit") })
        .unwrap()
}

#[test]
fn hits_come_from_the_tier_and_follow_every_write() {
    let dir = TempDir::new("hot-writes");
    let store = hot_store(&dir);
    let d = deco(&store);
    for x in 0..50u64 {
        d.call(x, |x| x * 2).unwrap();
    }
    // The first hit reads the file and keeps the record; the next ones are served from memory.
    for x in 0..50u64 {
        assert_eq!(hit(&d, x), x * 2);
    }
    assert_eq!(testing::hot_records(&store), 50);
    for x in 0..50u64 {
        assert_eq!(hit(&d, x), x * 2);
    }
    // A rerun replaces what the tier held.
    d.rerun(3u64, |x| x * 3).unwrap();
    assert_eq!(hit(&d, 3), 9);
    // So does a bulk save.
    d.save_all((0..10u64).map(|x| (x, x + 1000))).unwrap();
    for x in 0..10u64 {
        assert_eq!(hit(&d, x), x + 1000);
    }
    // A removal: the next call computes.
    store.remove(&d.identify(&20u64).unwrap()).unwrap();
    assert_eq!(d.call(20u64, |_| 7u64).unwrap(), 7);
    assert_eq!(store.remove_function(d.function()).unwrap(), 50);
    assert_eq!(d.call(30u64, |_| 8u64).unwrap(), 8);
    assert_eq!(hit(&d, 30), 8);
    store.clear().unwrap();
    assert_eq!(d.call(30u64, |_| 9u64).unwrap(), 9);
    // Eviction by a cap.
    for x in 100..120u64 {
        d.call(x, |x| x).unwrap();
        hit(&d, x);
    }
    store.set_limits(Limits::new().max_entries(5)).unwrap();
    let recomputed = (100..120u64)
        .filter(|&x| d.call(x, |_| u64::MAX).unwrap() == u64::MAX)
        .count();
    assert!(
        recomputed >= 15,
        "only {recomputed} evicted entries were recomputed"
    );
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_reopen_verify_or_repair_empties_the_tier() {
    let dir = TempDir::new("hot-reopen");
    let store = hot_store(&dir);
    let d = deco(&store);
    d.call(1u64, |x| x).unwrap();
    hit(&d, 1);
    assert_eq!(testing::hot_records(&store), 1);
    store.verify().unwrap();
    assert_eq!(testing::hot_records(&store), 0);
    hit(&d, 1);
    store.repair().unwrap();
    assert_eq!(testing::hot_records(&store), 0);
    hit(&d, 1);
    testing::break_engine(&store);
    assert_eq!(hit(&d, 1), 1);
    store.compact().unwrap();
    assert_eq!(testing::hot_records(&store), 0);
}

#[test]
fn an_age_limit_bypasses_the_tier() {
    let dir = TempDir::new("hot-age");
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let store = Store::builder()
        .hot_tier(1 << 20)
        .clock(clock.clone())
        .open(dir.store_path())
        .unwrap();
    let d = deco(&store);
    d.call(1u64, |x| x).unwrap();
    hit(&d, 1);
    assert_eq!(testing::hot_records(&store), 1);
    store
        .set_limits(Limits::new().max_age(Duration::from_secs(60)))
        .unwrap();
    clock.advance(Duration::from_secs(120));
    // Expired: a miss, although the tier held it.
    assert_eq!(d.call(1u64, |_| 5u64).unwrap(), 5);
}

#[test]
fn threads_never_see_a_replaced_value() {
    let dir = TempDir::new("hot-threads");
    let store = hot_store(&dir);
    let d = deco(&store);
    let latest = std::sync::atomic::AtomicU64::new(0);
    d.call(0u64, |_| 0u64).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for version in 1..200u64 {
                d.rerun(0u64, |_| version).unwrap();
                latest.store(version, std::sync::atomic::Ordering::SeqCst);
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..2000 {
                    // Whatever was saved before this call started, it sees (or something newer).
                    let floor = latest.load(std::sync::atomic::Ordering::SeqCst);
                    let got = d
                        .call(0u64, |_| -> u64 { panic!("always stored") })
                        .unwrap();
                    assert!(got >= floor, "read {got} after {floor} was saved");
                }
            });
        }
    });
}

#[test]
fn a_hot_tier_needs_a_single_process() {
    let dir = TempDir::new("hot-multi");
    let err = Store::builder()
        .hot_tier(1 << 20)
        .concurrency(ConcurrencyMode::MultiProcess)
        .open(dir.store_path())
        .unwrap_err();
    assert_eq!(*err.kind(), OpenErrorKind::Unsupported);
}
