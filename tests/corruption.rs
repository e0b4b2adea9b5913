//! Damaged and mistyped stored values: recomputed and counted, never returned.
//!
//! The store file is tampered with through redb directly, with ckpt closed, then reopened.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use ckpt::{AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, Function, OnError, Store};
use common::{TempDir, read_rows, tamper_results};
use xxhash_rust::xxh3::xxh3_64;

fn deco(store: &Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(
        Function::new("corruption", "describe"),
        AutoIdentifier,
        store.clone(),
    )
    .with_on_error(OnError::Raise)
}

/// What was stored originally; a recomputation returns `fresh` instead, so a returned stored
/// value and a recomputed one cannot be confused.
fn original(x: u32) -> String {
    format!("stored value number {x}, long enough for a payload")
}

fn fresh(x: u32) -> String {
    format!("recomputed {x}")
}

/// Recomputes a record's checksum after an edit, so the edit is the only thing wrong with it.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let sum = xxh3_64(&bytes[8..]);
    bytes[..8].copy_from_slice(&sum.to_le_bytes());
    bytes
}

fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= 32 && xxh3_64(&bytes[8..]).to_le_bytes() == bytes[..8]
}

/// An edit of one stored record.
type Edit = Box<dyn Fn(Vec<u8>) -> Vec<u8>>;

/// Saves `original(x)` for each key of `edits`, closes the store, applies each edit to its
/// record, reopens, and calls again: every call must recompute. Returns the reopened store.
fn save_tamper_and_recall(dir: &TempDir, edits: &HashMap<u32, Edit>) -> Store {
    let path = dir.store_path();
    let mut by_id = HashMap::new();
    {
        let store = Store::open(&path).unwrap();
        let d = deco(&store);
        for &x in edits.keys() {
            assert_eq!(d.call(x, original).unwrap(), original(x));
            by_id.insert(*d.identify(&x).unwrap().as_bytes(), x);
        }
    }
    let mut tampered = 0;
    tamper_results(&path, |id, bytes| {
        let x = by_id[id];
        tampered += 1;
        let edited = edits[&x](bytes.to_vec());
        assert_ne!(edited, bytes, "the edit for {x} changes nothing");
        Some(edited)
    });
    assert_eq!(tampered, edits.len());

    let store = Store::open(&path).unwrap();
    let d = deco(&store);
    let runs = AtomicUsize::new(0);
    let body = |x: u32| {
        runs.fetch_add(1, Ordering::SeqCst);
        fresh(x)
    };
    for &x in edits.keys() {
        assert_eq!(d.call(x, body).unwrap(), fresh(x), "edit {x}: recomputed");
    }
    assert_eq!(runs.load(Ordering::SeqCst), edits.len());
    let n = edits.len() as u64;
    let s = d.stats();
    assert_eq!((s.corrupt, s.misses, s.saves, s.hits), (n, n, n, 0));
    assert_eq!(
        (s.errors, s.type_mismatches),
        (0, 0),
        "damage is a miss, not an error"
    );
    // The damaged records were replaced by sound ones: the next calls are hits.
    for &x in edits.keys() {
        assert_eq!(d.call(x, body).unwrap(), fresh(x));
    }
    assert_eq!(runs.load(Ordering::SeqCst), edits.len());
    for &x in edits.keys() {
        let bytes = store.retrieve(&d.identify(&x).unwrap()).unwrap().unwrap();
        assert!(is_sealed(&bytes));
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.calls.corrupt, n);
    assert_eq!(stats.entries, n);
    store
}

fn flip(at: impl Fn(usize) -> usize + 'static) -> Edit {
    Box::new(move |mut b: Vec<u8>| {
        let i = at(b.len());
        b[i] ^= 0x5a;
        b
    })
}

#[test]
fn a_flipped_byte_anywhere_is_recomputed_and_counted() {
    let dir = TempDir::new("flip");
    // One record per position: checksum, version, flags, reserved, type fingerprint, compute
    // time, and the payload's first, middle and last bytes.
    let positions = [0usize, 7, 8, 9, 13, 16, 23, 24, 31];
    let mut edits: HashMap<u32, Edit> = HashMap::new();
    for (x, &at) in positions.iter().enumerate() {
        edits.insert(x as u32, flip(move |_| at));
    }
    edits.insert(100, flip(|_| 32));
    edits.insert(101, flip(|len| 32 + (len - 32) / 2));
    edits.insert(102, flip(|len| len - 1));
    let store = save_tamper_and_recall(&dir, &edits);
    drop(store);

    // The counts were flushed with the store: they survive reopening.
    let store = Store::open(dir.store_path()).unwrap();
    assert_eq!(store.stats().unwrap().calls.corrupt, edits.len() as u64);
}

#[test]
fn sealed_but_malformed_records_are_recomputed() {
    let dir = TempDir::new("malformed");
    let mut edits: HashMap<u32, Edit> = HashMap::new();
    // A record format version this build does not know.
    edits.insert(
        0,
        Box::new(|mut b: Vec<u8>| {
            b[8] = 2;
            reseal(b)
        }),
    );
    // Flags and reserved bytes must be zero.
    edits.insert(
        1,
        Box::new(|mut b: Vec<u8>| {
            b[9] = 1;
            reseal(b)
        }),
    );
    edits.insert(
        2,
        Box::new(|mut b: Vec<u8>| {
            b[15] = 0x80;
            reseal(b)
        }),
    );
    // Truncated: inside the header, to the header alone, inside the payload.
    edits.insert(3, Box::new(|b: Vec<u8>| b[..20].to_vec()));
    edits.insert(4, Box::new(|b: Vec<u8>| reseal(b[..32].to_vec())));
    edits.insert(
        5,
        Box::new(|b: Vec<u8>| {
            let n = b.len();
            reseal(b[..n - 3].to_vec())
        }),
    );
    edits.insert(6, Box::new(|b: Vec<u8>| b[..b.len() - 1].to_vec()));
    // Empty, and trailing bytes after the value.
    edits.insert(7, Box::new(|_| Vec::new()));
    edits.insert(
        8,
        Box::new(|mut b: Vec<u8>| {
            b.extend_from_slice(&[0, 1, 2]);
            reseal(b)
        }),
    );
    save_tamper_and_recall(&dir, &edits);
}

#[test]
fn a_value_read_back_as_another_type_is_a_mismatch_miss() {
    let dir = TempDir::new("mismatch");
    let path = dir.store_path();
    let f = Function::new("corruption", "typed");
    let as_u64 = |s: &Store| {
        DecoratorCheckpoint::new(f.clone(), AutoIdentifier, s.clone()).with_on_error(OnError::Raise)
    };
    let id: CheckpointId;
    {
        let store = Store::open(&path).unwrap();
        let d = as_u64(&store);
        assert_eq!(d.call(1u32, |_| 7u64).unwrap(), 7);
        id = d.identify(&1u32).unwrap();
    }

    let store = Store::open(&path).unwrap();
    let d = as_u64(&store);
    // Same function, same arguments, another result type: never a reinterpretation of the bytes.
    assert_eq!(d.peek::<i64>(&id).unwrap(), None);
    assert_eq!(d.peek::<u64>(&id).unwrap(), Some(7));
    let runs = AtomicUsize::new(0);
    let r = d
        .call(1u32, |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            -3i64
        })
        .unwrap();
    assert_eq!((r, runs.load(Ordering::SeqCst)), (-3, 1));
    let r = d
        .call(1u32, |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            vec![1u8, 2]
        })
        .unwrap();
    assert_eq!((r, runs.load(Ordering::SeqCst)), (vec![1, 2], 2));
    // Peeks count nothing; each of the two calls met one mismatch.
    let s = d.stats();
    assert_eq!(
        (s.type_mismatches, s.hits, s.corrupt, s.errors),
        (2, 0, 0, 0)
    );
    // The last save (a Vec<u8>) replaced the entry; it is what a Vec<u8> caller gets back.
    assert_eq!(
        d.call(1u32, |_| -> Vec<u8> { unreachable!() }).unwrap(),
        [1, 2]
    );
    assert_eq!(store.stats().unwrap().calls.type_mismatches, 2);
    assert_eq!(store.entries().unwrap().len(), 1);
}

#[test]
fn every_stored_record_is_sealed() {
    // The checks above rely on the format: a 32-byte header whose checksum covers the rest.
    let dir = TempDir::new("sealed");
    {
        let store = Store::open(dir.store_path()).unwrap();
        let d = deco(&store);
        for x in 0..5u32 {
            d.call(x, original).unwrap();
        }
    }
    let rows = read_rows(&dir.store_path());
    assert_eq!(rows.results.len(), 5);
    for (_, bytes) in &rows.results {
        assert!(is_sealed(bytes));
        assert_eq!(bytes[8], 1, "record format version");
        assert_eq!(&bytes[9..16], &[0; 7]);
        let (value, rest) = postcard::take_from_bytes::<String>(&bytes[32..]).unwrap();
        assert!(rest.is_empty());
        assert!(value.starts_with("stored value number"));
    }
}
