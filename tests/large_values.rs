//! Large values: records longer than the store's chunk length are kept in chunks, written with
//! their manifest, metadata and function row in one transaction, read back without being joined,
//! and handled whole by every operation (overwrite, remove, evict, clear, verify, repair).
//! Most tests use 4 KiB chunks so that a value of a few hundred KiB spans many.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use ckpt::cache::{Entry, LargeEntry, Lent, Part, Parts};
use ckpt::testing::{self, Decoded};
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, Error, ErrorKind, Function, Limits,
    MemoryCache, OnError, Store,
};
use common::{TempDir, read_chunks, read_rows, tamper_chunks};
use serde::{Deserialize, Serialize};

const CHUNK: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Big {
    name: String,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    numbers: Vec<u64>,
    tail: String,
}

fn big(seed: u64, len: usize) -> Big {
    Big {
        name: format!("big-{seed}-").repeat(700),
        blob: (0..len).map(|i| ((i as u64 * 31) ^ seed) as u8).collect(),
        numbers: (0..len as u64 / 64).map(|i| i * seed).collect(),
        tail: "ü".repeat(1000),
    }
}

fn store(dir: &TempDir) -> Store {
    Store::builder()
        .chunk_size(CHUNK)
        .open(dir.store_path())
        .unwrap()
}

fn deco<C: Cache>(cache: C) -> DecoratorCheckpoint<AutoIdentifier, C> {
    DecoratorCheckpoint::new(Function::new("large", "f"), AutoIdentifier, cache)
        .with_on_error(OnError::Raise)
}

fn record_of(value: &Big) -> Vec<u8> {
    testing::encode_record(value, Default::default()).unwrap()
}

/// Whether two records hold the same value of the same type (their compute times may differ).
fn same_value(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a[8..24] == b[8..24] && a[32..] == b[32..]
}

/// The chunk rows of `id` in a closed store file.
fn chunks_of(path: &std::path::Path, id: &CheckpointId) -> Vec<Vec<u8>> {
    read_chunks(path)
        .into_iter()
        .filter(|(k, _)| k[..16] == id.as_bytes()[..])
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn a_large_value_is_stored_in_chunks_and_read_back_whole() {
    let dir = TempDir::new("large-round-trip");
    let path = dir.store_path();
    let value = big(1, 300_000);
    let record = record_of(&value);
    let id = {
        let store = store(&dir);
        let d = deco(store.clone());
        assert_eq!(d.call(1u32, |_| value.clone()).unwrap(), value);
        assert_eq!(
            d.call(1u32, |_| -> Big { unreachable!("a hit") }).unwrap(),
            value
        );
        assert_eq!(d.stats().hits, 1);
        let id = d.identify(&1u32).unwrap();
        // The same bytes as every other cache stores: the chunks joined are the record.
        assert!(same_value(&store.retrieve(&id).unwrap().unwrap(), &record));
        let stats = store.stats().unwrap();
        assert_eq!(stats.stored_bytes, record.len() as u64);
        assert_eq!(store.entry(&id).unwrap().unwrap().size, record.len() as u64);
        assert!(store.verify().unwrap().is_clean());
        id
    };
    let chunks = chunks_of(&path, &id);
    assert_eq!(chunks.len(), record.len().div_ceil(CHUNK as usize));
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.len() == CHUNK as usize)
    );
    assert!(same_value(&chunks.concat(), &record));
    // The results row is a 32-byte manifest, not the record.
    let rows = read_rows(&path);
    assert_eq!(rows.results.len(), 1);
    assert_eq!(rows.results[0].1.len(), 32);
    // After a reopen, a hit.
    let store = store(&dir);
    let d = deco(store);
    assert_eq!(
        d.call(1u32, |_| -> Big { unreachable!("a hit") }).unwrap(),
        value
    );
}

#[test]
fn the_default_chunk_fills_a_512_kib_page() {
    let dir = TempDir::new("large-default");
    let path = dir.store_path();
    let value: Vec<u8> = (0..1_300_000u32).map(|i| i as u8).collect();
    let id = {
        let store = Store::open(&path).unwrap();
        let d = deco(store);
        d.call(7u8, |_| serde_bytes::ByteBuf::from(value.clone()))
            .unwrap();
        d.identify(&7u8).unwrap()
    };
    let chunks = chunks_of(&path, &id);
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[0].len(), 512 * 1024 - 64);
    assert_eq!(chunks[1].len(), 512 * 1024 - 64);
    let store = Store::open(&path).unwrap();
    let d = deco(store);
    let got = d
        .call(7u8, |_| -> serde_bytes::ByteBuf { unreachable!("a hit") })
        .unwrap();
    assert_eq!(got.into_vec(), value);
}

#[test]
fn overwrites_leave_no_chunk_behind() {
    let dir = TempDir::new("large-overwrite");
    let path = dir.store_path();
    // Chunked, more chunks, fewer chunks, whole, chunked again, removed.
    let lens = [100_000usize, 250_000, 20_000, 100, 60_000];
    let id = {
        let store = store(&dir);
        let d = deco(store.clone());
        for (i, len) in lens.iter().enumerate() {
            let v = big(i as u64, *len);
            assert_eq!(d.rerun(5u32, |_| v.clone()).unwrap(), v);
            assert_eq!(d.call(5u32, |_| -> Big { unreachable!() }).unwrap(), v);
            assert!(
                store.verify().unwrap().is_clean(),
                "after saving {len} bytes"
            );
            let record = record_of(&v);
            assert_eq!(store.stats().unwrap().stored_bytes, record.len() as u64);
        }
        d.identify(&5u32).unwrap()
    };
    let record = record_of(&big(4, lens[4]));
    assert!(same_value(&chunks_of(&path, &id).concat(), &record));
    {
        let store = store(&dir);
        assert!(store.remove(&id).unwrap());
    }
    assert!(read_chunks(&path).is_empty());
}

#[test]
fn removal_clearing_and_eviction_take_the_chunks_along() {
    let dir = TempDir::new("large-remove");
    let path = dir.store_path();
    {
        let store = store(&dir);
        let d = deco(store.clone());
        for i in 0..6u32 {
            d.call(i, |i| big(u64::from(i), 50_000)).unwrap();
        }
        let other =
            DecoratorCheckpoint::new(Function::new("large", "g"), AutoIdentifier, store.clone());
        other.call(0u32, |_| big(9, 50_000)).unwrap();
        assert_eq!(store.remove_function(other.function()).unwrap(), 1);
        assert!(store.remove(&d.identify(&0u32).unwrap()).unwrap());
        // A cap that holds about two of them: eviction removes whole records.
        let one = record_of(&big(1, 50_000)).len() as u64;
        let report = store
            .set_limits(Limits::new().max_bytes(one * 5 / 2))
            .unwrap();
        assert_eq!(report.evicted.len(), 3);
        assert!(store.verify().unwrap().is_clean());
        let left = store.stats().unwrap().entries;
        assert_eq!(left, 2);
    }
    let per_record = record_of(&big(1, 50_000)).len().div_ceil(CHUNK as usize);
    assert_eq!(read_chunks(&path).len(), 2 * per_record);
    {
        let store = store(&dir);
        assert_eq!(store.clear().unwrap(), 2);
        assert!(store.verify().unwrap().is_clean());
    }
    assert!(read_chunks(&path).is_empty());
}

#[test]
fn a_large_value_over_the_byte_cap_is_refused_and_leaves_nothing() {
    let dir = TempDir::new("large-cap");
    let path = dir.store_path();
    {
        let store = Store::builder()
            .chunk_size(CHUNK)
            .limits(Limits::new().max_bytes(100_000))
            .open(&path)
            .unwrap();
        let d = deco(store.clone());
        // Encoded as it is written (over 512 KiB): its length is known only at the end.
        let err = d.call(1u32, |_| big(1, 700_000)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        let err = d.call(2u32, |_| big(2, 200_000)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert_eq!(store.stats().unwrap().entries, 0);
    }
    assert!(read_chunks(&path).is_empty());
    assert!(read_rows(&path).results.is_empty());
}

#[test]
fn a_damaged_or_missing_chunk_is_a_miss_and_repair_drops_the_record() {
    for damage in ["flip", "missing", "extra", "orphan"] {
        let dir = TempDir::new("large-damage");
        let path = dir.store_path();
        let (id, other) = {
            let store = store(&dir);
            let d = deco(store);
            d.call(1u32, |_| big(1, 40_000)).unwrap();
            d.call(2u32, |_| big(2, 40_000)).unwrap();
            (d.identify(&1u32).unwrap(), d.identify(&2u32).unwrap())
        };
        let mine = |k: &[u8; 20]| k[..16] == id.as_bytes()[..];
        match damage {
            "flip" => tamper_chunks(&path, |k, v| {
                (mine(k) && k[16..] == [0, 0, 0, 3]).then(|| {
                    let mut v = v.to_vec();
                    v[100] ^= 0x40;
                    Some(v)
                })
            }),
            "missing" => tamper_chunks(&path, |k, _| (mine(k) && k[19] == 2).then_some(None)),
            // A chunk past the end of a sound record, and one of no record at all.
            "extra" => {
                let db = redb::Database::open(&path).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(common::CHUNKS).unwrap();
                    let mut k = [0u8; 20];
                    k[..16].copy_from_slice(other.as_bytes());
                    k[16..].copy_from_slice(&999u32.to_be_bytes());
                    t.insert(&k, &b"stray"[..]).unwrap();
                }
                txn.commit().unwrap();
            }
            _ => {
                let db = redb::Database::open(&path).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(common::CHUNKS).unwrap();
                    t.insert(&[7u8; 20], &b"orphan"[..]).unwrap();
                }
                txn.commit().unwrap();
            }
        }
        let store = store(&dir);
        let report = store.verify().unwrap();
        let damaged = matches!(damage, "flip" | "missing");
        if damaged {
            assert_eq!(report.bad_records, 1, "{damage}: {report}");
        } else {
            assert_eq!(report.orphan_chunks, 1, "{damage}: {report}");
        }
        let d = deco(store.clone());
        // Never a wrong value: a damaged record is a miss, counted, removed and recomputed.
        let v = d.call(1u32, |_| big(1, 40_000)).unwrap();
        assert_eq!(v, big(1, 40_000));
        assert_eq!(d.stats().corrupt, u64::from(damaged), "{damage}");
        assert_eq!(
            d.call(2u32, |_| -> Big { unreachable!() }).unwrap(),
            big(2, 40_000)
        );
        let repaired = store.repair().unwrap();
        assert_eq!(repaired.orphan_chunks, u64::from(!damaged), "{damage}");
        assert!(store.verify().unwrap().is_clean(), "{damage}");
        drop((d, store));
        let per_record = record_of(&big(1, 40_000)).len().div_ceil(CHUNK as usize);
        assert_eq!(read_chunks(&path).len(), 2 * per_record, "{damage}");
    }
}

#[test]
fn a_large_value_of_another_type_is_a_mismatch() {
    let dir = TempDir::new("large-type");
    let store = store(&dir);
    let d = deco(store.clone());
    d.call(1u32, |_| big(1, 30_000)).unwrap();
    let v: Vec<u64> = d.call(1u32, |_| vec![1u64; 10_000]).unwrap();
    assert_eq!(v.len(), 10_000);
    assert_eq!(d.stats().type_mismatches, 1);
    assert_eq!(d.call(1u32, |_| -> Vec<u64> { unreachable!() }).unwrap(), v);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn hits_racing_overwrites_read_one_whole_record() {
    let dir = TempDir::new("large-race");
    let store = store(&dir);
    let d = deco(store.clone());
    let values: Vec<Big> = (0..3)
        .map(|i| big(i, 20_000 + 30_000 * i as usize))
        .collect();
    d.call(0u32, |_| values[0].clone()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..30 {
                let v = &values[round % 3];
                d.rerun(0u32, |_| v.clone()).unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..60 {
                    let id = d.identify(&0u32).unwrap();
                    let got = d.peek::<Big>(&id).unwrap().expect("always stored");
                    assert!(values.contains(&got), "a record mixing two saves");
                }
            });
        }
    });
    assert_eq!(d.stats().corrupt, 0);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn caches_without_parts_store_large_values_whole() {
    let cache = MemoryCache::new();
    let d = deco(cache.clone());
    let value = big(3, 600_000);
    assert_eq!(d.call(1u32, |_| value.clone()).unwrap(), value);
    assert_eq!(d.call(1u32, |_| -> Big { unreachable!() }).unwrap(), value);
    let id = d.identify(&1u32).unwrap();
    assert!(same_value(
        &cache.retrieve(&id).unwrap().unwrap(),
        &record_of(&value)
    ));
}

/// A cache that keeps records in pieces of `piece` bytes and lends them as `Parts`, and streams
/// large entries in with `LargeEntry::write_to`.
struct PieceCache {
    piece: usize,
    map: Mutex<HashMap<CheckpointId, Vec<Vec<u8>>>>,
    large_saves: Mutex<usize>,
}

struct Pieces(Vec<Vec<u8>>);

impl Parts for Pieces {
    fn len(&self) -> u64 {
        self.0.iter().map(|p| p.len() as u64).sum()
    }
    fn count(&self) -> u32 {
        self.0.len() as u32
    }
    fn part(&self, index: u32) -> Result<Part<'_>, Error> {
        Ok(Part::from(self.0[index as usize].as_slice()))
    }
}

impl Cache for PieceCache {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        let pieces = entry
            .bytes()
            .chunks(self.piece)
            .map(<[u8]>::to_vec)
            .collect();
        self.map.lock().unwrap().insert(*id, pieces);
        Ok(())
    }
    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
        *self.large_saves.lock().unwrap() += 1;
        let mut out = Vec::new();
        let len = entry.write_to(&mut out)?;
        assert_eq!(len, out.len() as u64);
        assert!(out == entry.to_vec()?, "write_to and to_vec differ");
        self.save(
            id,
            &testing::entry(entry.function(), &out, entry.compute_time()),
        )
    }
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.map.lock().unwrap().get(id).map(|p| p.concat()))
    }
    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        let Some(pieces) = self.map.lock().unwrap().get(id).cloned() else {
            return Ok(false);
        };
        read(Lent::parts(&Pieces(pieces)));
        Ok(true)
    }
    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Ok(self.map.lock().unwrap().remove(id).is_some())
    }
}

#[test]
fn a_custom_cache_can_lend_records_in_parts() {
    let cache = PieceCache {
        piece: 1000,
        map: Mutex::default(),
        large_saves: Mutex::default(),
    };
    let d = deco(cache);
    for (i, len) in [10usize, 5_000, 700_000].iter().enumerate() {
        let v = big(i as u64, *len);
        assert_eq!(d.call(i, |_| v.clone()).unwrap(), v);
        assert_eq!(d.call(i, |_| -> Big { unreachable!() }).unwrap(), v);
    }
    assert_eq!(*d.cache().large_saves.lock().unwrap(), 1);
    // A damaged piece: a miss, counted and removed.
    let id = d.identify(&1usize).unwrap();
    d.cache().map.lock().unwrap().get_mut(&id).unwrap()[2][10] ^= 1;
    assert_eq!(d.call(1usize, |_| big(1, 5_000)).unwrap(), big(1, 5_000));
    assert_eq!(d.stats().corrupt, 1);
    match testing::decode_record::<Big>(&d.cache().retrieve(&id).unwrap().unwrap()) {
        Decoded::Value(v, _) => assert_eq!(v, big(1, 5_000)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn save_all_saves_large_values_in_order() {
    let dir = TempDir::new("large-save-all");
    let store = store(&dir);
    let d = deco(store.clone());
    let items = vec![
        (1u32, big(1, 100)),
        (2, big(2, 600_000)),
        (1, big(3, 100)),
        (2, big(4, 50)),
        (3, big(5, 700_000)),
    ];
    assert_eq!(d.save_all(items).unwrap(), 5);
    let hit = |x: u32| d.call(x, |_| -> Big { unreachable!() }).unwrap();
    assert_eq!(hit(1), big(3, 100));
    assert_eq!(hit(2), big(4, 50));
    assert_eq!(hit(3), big(5, 700_000));
    assert!(store.verify().unwrap().is_clean());
}
