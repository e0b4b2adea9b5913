//! Expiry by age and idleness, driven by an injected clock: no sleeps.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use ckpt::store::ManualClock;
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Limits, OnError, Store};
use common::TempDir;

fn setup(
    limits: Limits,
) -> (
    TempDir,
    ManualClock,
    Store,
    DecoratorCheckpoint<AutoIdentifier, Store>,
) {
    let dir = TempDir::new("expiry");
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = Store::builder()
        .limits(limits)
        .clock(clock.clone())
        .open(dir.store_path())
        .unwrap();
    let deco =
        DecoratorCheckpoint::new(Function::new("expiry", "f"), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
    (dir, clock, store, deco)
}

fn hit(deco: &DecoratorCheckpoint<AutoIdentifier, Store>, key: u32) -> bool {
    let before = deco.stats().hits;
    deco.call(key, |k| k * 2).unwrap();
    deco.stats().hits > before
}

#[test]
fn an_entry_older_than_max_age_is_a_miss_then_removed_by_the_next_write() {
    let hour = Duration::from_secs(3600);
    let (_dir, clock, store, deco) = setup(Limits::new().max_age(hour));
    deco.call(1u32, |k| k * 2).unwrap();
    clock.advance(Duration::from_secs(1800));
    deco.call(2u32, |k| k * 2).unwrap();
    assert!(hit(&deco, 1), "30 minutes old: still served");

    clock.advance(Duration::from_secs(1801));
    // Entry 1 is now 60m01s old, entry 2 is 30m01s old.
    assert_eq!(
        store.stats().unwrap().entries,
        2,
        "nothing collected without a write"
    );
    let id1 = deco.identify(&1u32).unwrap();
    let created_before = store.entry(&id1).unwrap().unwrap().created;
    assert!(!hit(&deco, 1), "expired: a miss even before collection");
    // That miss recomputed entry 1 and replaced it in place: a fresh entry, not a collection.
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.evictions.age, 0, "replaced, not collected");
    let created_after = store.entry(&id1).unwrap().unwrap().created;
    assert_eq!(
        created_after.duration_since(created_before).unwrap(),
        Duration::from_secs(3601)
    );
    assert!(hit(&deco, 2));

    clock.advance(Duration::from_secs(1900));
    // Entry 2 is now 62m old; the fresh entry 1 is 31m old. An explicit expire collects.
    let report = store.expire().unwrap();
    assert_eq!(report.evicted.len(), 1);
    assert_eq!(report.evicted[0].id, deco.identify(&2u32).unwrap());
    assert_eq!(store.stats().unwrap().evictions.age, 1);
    assert!(hit(&deco, 1));
}

#[test]
fn idle_entries_expire_and_hits_keep_them_alive() {
    let idle = Duration::from_secs(600);
    let (_dir, clock, store, deco) = setup(Limits::new().max_idle(idle));
    deco.call(1u32, |k| k * 2).unwrap();
    deco.call(2u32, |k| k * 2).unwrap();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(300));
        assert!(hit(&deco, 1), "entry 1 is hit every 5 minutes");
    }
    // 25 minutes: entry 2 has been idle since its save; entry 1 was hit 0 s ago.
    let report = store.expire().unwrap();
    assert_eq!(report.evicted.len(), 1);
    assert_eq!(report.evicted[0].id, deco.identify(&2u32).unwrap());
    assert_eq!(report.evicted[0].cause, ckpt::stats::EvictionCause::Idle);
    assert!(hit(&deco, 1));
    assert!(!hit(&deco, 2), "expired entry 2 is recomputed");
    assert_eq!(store.stats().unwrap().evictions.idle, 1);

    // Any write collects too: advance past idle for both, then save something new.
    clock.advance(Duration::from_secs(601));
    deco.call(3u32, |k| k * 2).unwrap();
    let left: Vec<_> = store.entries().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left, vec![deco.identify(&3u32).unwrap()]);
    assert_eq!(store.stats().unwrap().evictions.idle, 3);
}

#[test]
fn limits_set_on_an_open_store_take_effect_and_survive_in_stats() {
    let (dir, clock, store, deco) = setup(Limits::new());
    for k in 0..10u32 {
        deco.call(k, |k| k * 2).unwrap();
        clock.advance(Duration::from_secs(60));
    }
    // Entries are 10, 9, ..., 1 minutes old.
    let report = store
        .set_limits(Limits::new().max_age(Duration::from_secs(5 * 60 + 30)))
        .unwrap();
    assert_eq!(report.evicted.len(), 5);
    assert_eq!(store.stats().unwrap().entries, 5);
    drop(deco);
    drop(store);
    let reopened = Store::open(dir.store_path()).unwrap();
    let stats = reopened.stats().unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(stats.evictions.age, 5);
}
