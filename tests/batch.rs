//! Bulk saves: `DecoratorCheckpoint::save_all` and `Cache::save_many`, on the redb store and on
//! caches that only implement `save`.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use ckpt::cache::Entry;
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, Limits,
    MemoryCache, OnError, Store,
};
use common::TempDir;

fn deco<C: Cache>(cache: C, name: &'static str) -> DecoratorCheckpoint<AutoIdentifier, C> {
    DecoratorCheckpoint::new(Function::new("batch", name), AutoIdentifier, cache)
        .with_on_error(OnError::Raise)
}

#[test]
fn save_all_spans_several_transactions_and_every_result_hits() {
    let dir = TempDir::new("save-all");
    let store = Store::open(dir.store_path()).unwrap();
    let d = deco(store.clone(), "square");
    // More than one batch (at most 64 MiB of records per transaction).
    let n = 17_000u64;
    let value = |x: u64| serde_bytes::ByteBuf::from(vec![x as u8; 4096]);
    assert_eq!(
        d.save_all((0..n).map(|x| (x, value(x)))).unwrap(),
        n as usize
    );
    assert_eq!(d.stats().saves, n);
    for x in (0..n).step_by(997) {
        let got = d
            .call(x, |_| -> serde_bytes::ByteBuf { unreachable!("saved") })
            .unwrap();
        assert!(got == value(x), "entry {x}");
    }
    assert_eq!(d.stats().misses, 0);
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, n);
    assert_eq!(stats.calls.saves, n);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_later_duplicate_wins_and_save_all_overwrites() {
    let dir = TempDir::new("save-all-dup");
    let store = Store::open(dir.store_path()).unwrap();
    let d = deco(store.clone(), "f");
    d.call(1u32, |_| "computed".to_string()).unwrap();
    let saved = d
        .save_all([
            (1u32, "first".to_string()),
            (2, "two".into()),
            (1, "last".into()),
        ])
        .unwrap();
    assert_eq!(saved, 3);
    let hit = |x: u32| d.call(x, |_| -> String { unreachable!("saved") }).unwrap();
    assert_eq!(hit(1), "last");
    assert_eq!(hit(2), "two");
    assert_eq!(store.stats().unwrap().entries, 2);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn save_many_on_the_store_mixes_small_and_large_records() {
    let dir = TempDir::new("save-many");
    let store = Store::open(dir.store_path()).unwrap();
    let f = Function::new("batch", "raw");
    let records: Vec<Vec<u8>> = [10usize, 300 * 1024, 64, 2 * 1024 * 1024]
        .iter()
        .map(|&n| ckpt::testing::encode_record(&vec![7u8; n], Default::default()).unwrap())
        .collect();
    let entries: Vec<(CheckpointId, Entry<'_>)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                CheckpointId::from_u128(i as u128 + 1),
                ckpt::testing::entry(&f, r, Default::default()),
            )
        })
        .collect();
    store.save_many(&entries).unwrap();
    for (id, entry) in &entries {
        assert_eq!(store.retrieve(id).unwrap().as_deref(), Some(entry.bytes()));
    }
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn an_entry_over_the_byte_cap_fails_the_bulk_save_before_anything_is_written() {
    let dir = TempDir::new("save-all-cap");
    let store = Store::builder()
        .limits(Limits::new().max_bytes(4096))
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "big");
    let err = d
        .save_all([(1u32, vec![0u8; 10]), (2, vec![0u8; 10_000])])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(store.stats().unwrap().entries, 0);
    assert_eq!(d.stats().errors, 1);
    assert_eq!(d.stats().saves, 0);
}

#[test]
fn a_bulk_save_keeps_the_caps() {
    let dir = TempDir::new("save-all-evict");
    let store = Store::builder()
        .limits(Limits::new().max_entries(100))
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "capped");
    d.save_all((0..1000u64).map(|x| (x, x))).unwrap();
    let stats = store.stats().unwrap();
    assert!(stats.entries <= 100, "{} entries", stats.entries);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn the_error_policy_does_not_apply_to_a_bulk_save() {
    // A result type must be `Deserialize` too (its shape is its type fingerprint).
    #[derive(serde::Deserialize)]
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let cache = MemoryCache::new();
    let d = deco(cache.clone(), "policy").with_on_error(OnError::Ignore);
    let err = d.save_all([(1u32, Unserializable)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Encode);
    assert!(cache.is_empty());
    let err = d.save_all([(Unserializable, 1u32)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Identify);
    assert_eq!(d.stats().errors, 2);
}

/// A cache with only `save` and `retrieve`: `save_many`'s default saves one by one.
#[derive(Default)]
struct DictCache {
    map: Mutex<HashMap<CheckpointId, Vec<u8>>>,
    saves: Mutex<usize>,
}

impl Cache for DictCache {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
        *self.saves.lock().unwrap() += 1;
        self.map.lock().unwrap().insert(*id, entry.bytes().to_vec());
        Ok(())
    }
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
        Ok(self.map.lock().unwrap().get(id).cloned())
    }
}

#[test]
fn caches_without_a_bulk_save_get_one_save_per_entry() {
    let d = deco(DictCache::default(), "dict");
    assert_eq!(
        d.save_all((0..50u8).map(|x| (x, u32::from(x) + 1)))
            .unwrap(),
        50
    );
    assert_eq!(*d.cache().saves.lock().unwrap(), 50);
    assert_eq!(d.call(7u8, |_| -> u32 { unreachable!() }).unwrap(), 8);

    let memory = deco(MemoryCache::new(), "memory");
    memory.save_all([("a", 1i64), ("b", 2)]).unwrap();
    assert_eq!(memory.cache().len(), 2);
    assert_eq!(memory.call("b", |_| -> i64 { unreachable!() }).unwrap(), 2);
}
