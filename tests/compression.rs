//! Compressed records (feature `zstd`): round trips through the redb store and memory, smaller
//! files, damaged and lying records (misses, never panics or huge allocations), stores and
//! builds that mix plain and compressed records, and which setting wins.
#![cfg(feature = "zstd")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ckpt::cache::{Entry, LargeEntry, Lent, Part, Parts};
use ckpt::testing;
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, Compression, DecoratorCheckpoint, Function, MemoryCache,
    OnError, Record, Store,
};
use common::TempDir;

/// English-like text: words from a small vocabulary, as logs and documents are.
fn text(bytes: usize) -> String {
    const WORDS: [&str; 16] = [
        "the",
        "checkpoint",
        "store",
        "keeps",
        "results",
        "of",
        "expensive",
        "calls",
        "and",
        "returns",
        "them",
        "when",
        "asked",
        "again",
        "later",
        "quickly",
    ];
    let mut out = String::with_capacity(bytes + 16);
    let mut x = 0x9e37_79b9_u64;
    while out.len() < bytes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(x >> 60) as usize]);
        out.push(if (x >> 20).is_multiple_of(13) {
            '\n'
        } else {
            ' '
        });
    }
    out.truncate(bytes);
    out
}

/// A JSON document: an array of records with repeated keys.
fn json(bytes: usize) -> String {
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < bytes {
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"user{}\",\"active\":{},\"score\":{}.{}}},",
            i * 7919 % 1000,
            i.is_multiple_of(3),
            i * 31 % 100,
            i % 10
        ));
        i += 1;
    }
    out.push(']');
    out
}

/// An embedding-like f32 array: smooth values with noise in the low bits.
fn floats(n: usize) -> Vec<f32> {
    let mut x = 12345u64;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (i as f32 * 0.01).sin() * 0.5 + ((x >> 40) as f32 / (1u64 << 24) as f32) * 0.01
        })
        .collect()
}

/// Bytes no compressor shrinks.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 7u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn deco<C: Cache>(cache: C, name: &'static str) -> DecoratorCheckpoint<AutoIdentifier, C> {
    DecoratorCheckpoint::new(Function::new("compression", name), AutoIdentifier, cache)
        .with_on_error(OnError::Raise)
}

/// The stored record of `d`'s call with `arg`, through the cache.
fn stored<C: Cache>(d: &DecoratorCheckpoint<AutoIdentifier, C>, arg: u64) -> Vec<u8> {
    let id = d.identify(&arg).unwrap();
    d.cache().retrieve(&id).unwrap().expect("saved")
}

fn is_compressed(record: &[u8]) -> bool {
    Record::parse(record).unwrap().is_compressed()
}

/// Calls `d(arg)` twice with `value`: a miss that saves, then a hit that must not compute.
fn round_trip<C: Cache, T>(d: &DecoratorCheckpoint<AutoIdentifier, C>, arg: u64, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq + std::fmt::Debug,
{
    let hits = d.stats().hits;
    assert_eq!(&d.call(arg, |_| value.clone()).unwrap(), value);
    let again = d
        .call(arg, |_| -> T { panic!("call {arg} should be a hit") })
        .unwrap();
    assert!(again == *value, "call {arg}: a different value came back");
    assert_eq!(d.stats().hits, hits + 1);
}

#[test]
fn text_json_and_floats_round_trip_compressed_through_a_store_and_memory() {
    let dir = TempDir::new("zstd-round-trip");
    let store = Store::builder()
        .compression(Compression::zstd())
        .open(dir.store_path())
        .unwrap();
    let memory = MemoryCache::new();
    let on_store = deco(store.clone(), "store");
    let in_memory = deco(memory.clone(), "memory").with_compression(Compression::zstd());
    for size in [4 << 10, 1 << 20] {
        let (t, j, f) = (text(size), json(size), floats(size / 4));
        for (k, d) in [(0, &on_store as &dyn Any3), (1, &in_memory as &dyn Any3)] {
            let base = (size as u64) * 10 + k * 5;
            d.trip_text(base, &t);
            d.trip_text(base + 1, &j);
            d.trip_floats(base + 2, &f);
            // Text and JSON shrink at both sizes; floats (noisy low bits) shrink at 4 KiB, and at
            // 1 MiB not below one record's 512 KiB, so they are stored plain (in chunks) then.
            let expected = if size == 4 << 10 { 3 } else { 2 };
            for arg in base..base + expected {
                let record = d.stored(arg);
                assert!(is_compressed(&record), "{size} B, call {arg}: stored plain");
                // Compressed records are whole (one buffer), whatever the value's size.
                assert!(
                    record.len() < 512 * 1024,
                    "{size} B: {} B stored",
                    record.len()
                );
            }
            let record = d.stored(base);
            assert!(
                record.len() * 2 < size,
                "{size} B of text stored in {} B",
                record.len()
            );
        }
    }
    // A store with compressed records is sound to `verify`.
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(store.stats().unwrap().calls.corrupt, 0);
}

/// Both decorators of the test above, behind one face.
trait Any3 {
    fn trip_text(&self, arg: u64, v: &str);
    fn trip_floats(&self, arg: u64, v: &[f32]);
    fn stored(&self, arg: u64) -> Vec<u8>;
}

impl<C: Cache> Any3 for DecoratorCheckpoint<AutoIdentifier, C> {
    fn trip_text(&self, arg: u64, v: &str) {
        round_trip(self, arg, &v.to_string());
    }
    fn trip_floats(&self, arg: u64, v: &[f32]) {
        round_trip(self, arg, &v.to_vec());
    }
    fn stored(&self, arg: u64) -> Vec<u8> {
        stored(self, arg)
    }
}

#[test]
fn what_does_not_shrink_is_stored_plain() {
    let cache = MemoryCache::new();
    let d = deco(cache.clone(), "plain").with_compression(Compression::zstd());
    // Tiny values: a frame costs more than it saves.
    round_trip(&d, 1, &42u64);
    assert!(!is_compressed(&stored(&d, 1)));
    // Noise: zstd cannot shrink it.
    round_trip(&d, 2, &serde_bytes::ByteBuf::from(noise(4096)));
    assert!(!is_compressed(&stored(&d, 2)));
    // Large noise: stored plain, as a stream (the redb store chunks it).
    let dir = TempDir::new("zstd-large-noise");
    let store = Store::builder()
        .compression(Compression::zstd())
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "noise");
    let big = serde_bytes::ByteBuf::from(noise(3 << 20));
    round_trip(&d, 3, &big);
    let record = store
        .read_record(&d.identify(&3u64).unwrap())
        .unwrap()
        .unwrap();
    assert!(!is_compressed(&record));
    assert!(record.len() > 3 << 20);
}

#[test]
fn the_file_is_smaller_for_compressible_data() {
    let dir = TempDir::new("zstd-file-size");
    let mut sizes = Vec::new();
    for (name, compression) in [("plain", Compression::None), ("zstd", Compression::zstd())] {
        let path = dir.join(&format!("{name}.redb"));
        let store = Store::builder()
            .compression(compression)
            .open(&path)
            .unwrap();
        let d = deco(store.clone(), "size");
        let values: Vec<(u64, String)> = (0..200u64).map(|i| (i, json(8 << 10))).collect();
        d.save_all(values).unwrap();
        let stats = store.stats().unwrap();
        drop(d);
        store.close().unwrap();
        let file = std::fs::metadata(&path).unwrap().len();
        sizes.push((stats.stored_bytes, file));
    }
    let [(plain_bytes, plain_file), (zstd_bytes, zstd_file)] = sizes[..] else {
        unreachable!()
    };
    assert!(
        zstd_bytes * 4 < plain_bytes,
        "stored bytes: {zstd_bytes} compressed, {plain_bytes} plain"
    );
    assert!(
        zstd_file * 2 < plain_file,
        "file: {zstd_file} compressed, {plain_file} plain"
    );
}

/// A compressed record of `value` for `d`'s call with `arg`, as stored.
fn compressed_record<C: Cache>(
    d: &DecoratorCheckpoint<AutoIdentifier, C>,
    arg: u64,
    value: &str,
) -> Vec<u8> {
    d.rerun(arg, |_| value.to_string()).unwrap();
    let record = stored(d, arg);
    assert!(is_compressed(&record));
    record
}

/// Stores `bytes` under `d`'s call with `arg`, then calls it: the call must compute again,
/// count one corrupt record, and save a sound one that the next call hits.
fn expect_recomputed(
    store: &Store,
    d: &DecoratorCheckpoint<AutoIdentifier, Store>,
    arg: u64,
    bytes: &[u8],
    what: &str,
) {
    let id = d.identify(&arg).unwrap();
    store
        .save(&id, &testing::entry(d.function(), bytes, Duration::ZERO))
        .unwrap();
    let corrupt = d.stats().corrupt;
    let runs = AtomicUsize::new(0);
    let value = d
        .call(arg, |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            "fresh".repeat(100)
        })
        .unwrap();
    assert_eq!(value, "fresh".repeat(100), "{what}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{what}: not recomputed");
    assert_eq!(
        d.stats().corrupt,
        corrupt + 1,
        "{what}: not counted corrupt"
    );
    assert_eq!(
        d.call(arg, |_| -> String {
            panic!("{what}: the fresh value was not saved")
        })
        .unwrap(),
        "fresh".repeat(100)
    );
}

#[test]
fn damaged_compressed_records_are_counted_corrupt_and_recomputed() {
    let dir = TempDir::new("zstd-damage");
    let store = Store::builder()
        .compression(Compression::zstd())
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "damage");
    let value = text(20_000);
    let sound = compressed_record(&d, 1, &value);
    assert_eq!(
        &sound[40..44],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "a zstd frame after the prefix"
    );

    // A flipped bit in the frame: the checksum catches it before anything is decompressed.
    let mut flipped = sound.clone();
    let at = flipped.len() - 5;
    flipped[at] ^= 0x10;
    expect_recomputed(&store, &d, 1, &flipped, "flipped frame byte");

    // The same, resealed (a checksum that matches, as only a deliberate writer could make):
    // the frame's magic, a reserved header bit.
    for (at, bit) in [(40, 0x01), (43, 0x80), (44, 0x08)] {
        let mut bad = sound.clone();
        bad[at] ^= bit;
        testing::reseal(&mut bad);
        expect_recomputed(&store, &d, 1, &bad, &format!("resealed damage at {at}"));
    }

    // A truncated frame, resealed.
    let mut short = sound.clone();
    short.truncate(sound.len() - 40);
    testing::reseal(&mut short);
    expect_recomputed(&store, &d, 1, &short, "truncated frame");

    // An unknown flag bit: damage, not a compressed record.
    let mut flag = sound.clone();
    flag[9] |= 0x02;
    testing::reseal(&mut flag);
    expect_recomputed(&store, &d, 1, &flag, "unknown flag");
}

/// `record` with its declared decompressed length set to `n`, resealed.
fn declaring(record: &[u8], n: u64) -> Vec<u8> {
    let mut out = record.to_vec();
    out[32..40].copy_from_slice(&n.to_le_bytes());
    testing::reseal(&mut out);
    out
}

#[test]
fn any_resealed_damage_to_a_frame_is_a_miss_or_a_value_never_a_panic() {
    // zstd frames carry no checksum of their own here (the record's covers them), so damage
    // that a deliberate writer reseals may decode into other bytes: like any value it wrote.
    // What must hold: no panic, no error, and the call returns.
    let cache = MemoryCache::new();
    let d = deco(cache.clone(), "fuzz").with_compression(Compression::zstd());
    let value = json(3000);
    d.call(1u64, |_| value.clone()).unwrap();
    let sound = stored(&d, 1);
    assert!(is_compressed(&sound));
    let id = d.identify(&1u64).unwrap();
    for at in 32..sound.len() {
        for bit in [0x01, 0x80] {
            let mut bad = sound.clone();
            bad[at] ^= bit;
            testing::reseal(&mut bad);
            cache
                .save(&id, &testing::entry(d.function(), &bad, Duration::ZERO))
                .unwrap();
            let _ = d.call(1u64, |_| value.clone()).unwrap();
        }
    }
}

#[test]
fn lying_frames_and_bombs_are_misses_not_panics_or_huge_allocations() {
    let dir = TempDir::new("zstd-bombs");
    let store = Store::builder()
        .compression(Compression::zstd())
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "bomb");
    let value = text(50_000);
    let sound = compressed_record(&d, 1, &value);
    let true_len = u64::from_le_bytes(sound[32..40].try_into().unwrap());

    // Declared lengths that are lies: far too large (refused before any allocation: a 1 TiB
    // or 2^64-1 buffer would abort the test), just over the limit, too short, one short, one
    // long.
    for n in [
        u64::MAX,
        1 << 40,
        (64 << 20) + 1,
        100,
        true_len - 1,
        true_len + 1,
    ] {
        expect_recomputed(
            &store,
            &d,
            1,
            &declaring(&sound, n),
            &format!("declared {n}"),
        );
    }

    // A bomb: 48 MiB of one letter compress to a few KiB (saved by ckpt itself, compressed as
    // it is encoded), then declared as 1 KiB: decompression stops at 1 KiB.
    d.call(2u64, |_| "a".repeat(48 << 20)).unwrap();
    let bomb = stored(&d, 2);
    assert!(is_compressed(&bomb));
    assert!(bomb.len() < 64 << 10, "{} B", bomb.len());
    expect_recomputed(
        &store,
        &d,
        1,
        &declaring(&bomb, 1024),
        "bomb declared 1 KiB",
    );

    // A hand-made frame that claims 2^40 bytes of content and holds a run-length block, under
    // an honest-looking declared length.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let block = 1 | (1 << 1) | ((128 * 1024 - 1) << 3); // last, RLE, 128 KiB
    frame.extend_from_slice(&(block as u32).to_le_bytes()[..3]);
    frame.push(b'a');
    let mut record = sound[..40].to_vec();
    record.extend_from_slice(&frame);
    let record = declaring(&record, 4096);
    expect_recomputed(&store, &d, 1, &record, "frame claiming 1 TiB");
}

#[test]
fn a_build_without_zstd_leaves_compressed_records_in_place_and_reads_plain_ones() {
    let dir = TempDir::new("zstd-mixed-builds");
    let store = Store::builder()
        .compression(Compression::zstd())
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "mixed");
    let value = json(10_000);
    d.call(1u64, |_| value.clone()).unwrap();
    let compressed = stored(&d, 1);
    assert!(is_compressed(&compressed));

    testing::as_if_without_zstd(|| {
        // A miss: computed again; not counted corrupt, and not removed before the new save.
        let runs = AtomicUsize::new(0);
        let plain = deco(store.clone(), "mixed").with_compression(Compression::None);
        let got = plain
            .call(1u64, |_| {
                // Still there while the miss computes: a miss, not a removal.
                let id = plain_id(1);
                assert!(store.read_record(&id).unwrap().is_some());
                runs.fetch_add(1, Ordering::SeqCst);
                value.clone()
            })
            .unwrap();
        assert_eq!(got, value);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(plain.stats().corrupt, 0);
        assert_eq!(plain.stats().misses, 1);
        // The plain build's save replaced it with a plain record, which both builds read.
        assert!(!is_compressed(&stored(&plain, 1)));
        plain
            .call(1u64, |_| -> String { panic!("a plain record is a hit") })
            .unwrap();
    });
    // A peek without the feature finds nothing, and removes nothing.
    d.rerun(2u64, |_| value.clone()).unwrap();
    assert!(is_compressed(&stored(&d, 2)));
    let peeked = testing::as_if_without_zstd(|| d.peek::<String>(&plain_id(2)).unwrap());
    assert_eq!(peeked, None);
    assert!(
        store.read_record(&plain_id(2)).unwrap().is_some(),
        "peek removed it"
    );
    assert_eq!(
        d.call(2u64, |_| -> String { panic!("hit") }).unwrap(),
        value
    );
    assert_eq!(d.stats().corrupt, 0);
    // Without the feature, `Record::decode` says why it cannot.
    let record = stored(&d, 2);
    let err = testing::as_if_without_zstd(|| Record::parse(&record).unwrap().decode::<String>())
        .unwrap_err();
    assert_eq!(err.kind(), ckpt::ErrorKind::Unsupported);
}

fn plain_id(arg: u64) -> CheckpointId {
    AutoIdentifier
        .id_of(&Function::new("compression", "mixed"), &arg)
        .unwrap()
}

#[test]
fn plain_and_compressed_stores_read_each_others_records() {
    let dir = TempDir::new("zstd-reopen");
    let value = text(30_000);
    {
        let store = Store::builder()
            .compression(Compression::zstd())
            .open(dir.store_path())
            .unwrap();
        deco(store.clone(), "reopen")
            .call(1u64, |_| value.clone())
            .unwrap();
        store.close().unwrap();
    }
    {
        // Reopened plain: reads the compressed record, saves plain ones.
        let store = Store::open(dir.store_path()).unwrap();
        let d = deco(store.clone(), "reopen");
        assert!(is_compressed(&stored(&d, 1)));
        assert_eq!(
            d.call(1u64, |_| -> String {
                panic!("a compressed record is a hit")
            })
            .unwrap(),
            value
        );
        d.call(2u64, |_| value.clone()).unwrap();
        assert!(!is_compressed(&stored(&d, 2)));
        store.close().unwrap();
    }
    // Compressed again, with a hot tier: both kinds hit, from the file and from memory.
    let store = Store::builder()
        .compression(Compression::zstd())
        .hot_tier(16 << 20)
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone(), "reopen");
    for _ in 0..3 {
        for arg in [1u64, 2] {
            assert_eq!(d.call(arg, |_| -> String { panic!("hit") }).unwrap(), value);
        }
    }
    assert!(testing::hot_records(&store) >= 2);
}

/// A cache that lends its records in parts of 7 bytes, as a remote tier might.
#[derive(Default)]
struct InParts(MemoryCache);

struct Cut(Vec<u8>);

impl Parts for Cut {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn count(&self) -> u32 {
        self.0.len().div_ceil(7) as u32
    }
    fn part(&self, i: u32) -> Result<Part<'_>, ckpt::Error> {
        let start = i as usize * 7;
        Ok(self.0[start..(start + 7).min(self.0.len())].into())
    }
}

impl Cache for InParts {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
        self.0.save(id, entry)
    }
    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), ckpt::Error> {
        self.0.save_large(id, entry)
    }
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
        self.0.retrieve(id)
    }
    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, ckpt::Error> {
        match self.0.retrieve(id)? {
            Some(bytes) => {
                let cut = Cut(bytes);
                read(Lent::parts(&cut));
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn remove(&self, id: &CheckpointId) -> Result<bool, ckpt::Error> {
        Cache::remove(&self.0, id)
    }
    fn compression(&self) -> Compression {
        Compression::Zstd { level: 1 }
    }
}

#[test]
fn compressed_records_lent_in_parts_decode_and_damage_is_caught() {
    let d = deco(InParts::default(), "parts");
    let value = floats(10_000);
    round_trip(&d, 1, &value);
    let record = stored(&d, 1);
    assert!(is_compressed(&record));
    let id = d.identify(&1u64).unwrap();
    for at in [20, 36, record.len() / 2] {
        let mut bad = record.clone();
        bad[at] ^= 1;
        d.cache()
            .save(&id, &testing::entry(d.function(), &bad, Duration::ZERO))
            .unwrap();
        let corrupt = d.stats().corrupt;
        assert_eq!(d.call(1u64, |_| value.clone()).unwrap(), value);
        assert_eq!(d.stats().corrupt, corrupt + 1, "flip at {at}");
    }
}

#[test]
fn a_function_setting_overrides_the_stores_default() {
    let dir = TempDir::new("zstd-settings");
    let value = text(10_000);
    let zstd_store = Store::builder()
        .compression(Compression::zstd())
        .open(dir.join("zstd.redb"))
        .unwrap();
    let plain_store = Store::open(dir.join("plain.redb")).unwrap();
    assert_eq!(zstd_store.compression(), Compression::zstd());
    assert_eq!(plain_store.compression(), Compression::None);

    let cases = [
        (deco(zstd_store.clone(), "default"), true),
        (
            deco(zstd_store.clone(), "off").with_compression(Compression::None),
            false,
        ),
        (deco(plain_store.clone(), "default"), false),
        (
            deco(plain_store.clone(), "on").with_compression(Compression::Zstd { level: 19 }),
            true,
        ),
    ];
    for (i, (d, compressed)) in cases.iter().enumerate() {
        d.call(1u64, |_| value.clone()).unwrap();
        assert_eq!(is_compressed(&stored(d, 1)), *compressed, "case {i}");
        // save_all follows the same setting.
        d.save_all([(2u64, value.clone())]).unwrap();
        assert_eq!(
            is_compressed(&stored(d, 2)),
            *compressed,
            "case {i}, save_all"
        );
    }
    // Through the macro's shared cache (an `Arc<dyn Cache>`), the store's default reaches the
    // decorator, and the macro's option overrides it.
    assert_eq!(inherits::decorator().compression(), Compression::zstd());
    assert_eq!(macro_none::decorator().compression(), Compression::None);
    assert_eq!(inherits(3000), text(3000));
    assert_eq!(macro_none(3000), text(3000));
    let id = inherits::id(3000).unwrap();
    assert!(is_compressed(
        &MACRO_STORE.read_record(&id).unwrap().unwrap()
    ));
    let id = macro_none::id(3000).unwrap();
    assert!(!is_compressed(
        &MACRO_STORE.read_record(&id).unwrap().unwrap()
    ));
    assert_eq!(macro_zstd::decorator().compression(), Compression::zstd());
    assert_eq!(
        macro_level::decorator().compression(),
        Compression::Zstd { level: 7 }
    );
    let zstd_default: std::sync::Arc<dyn Cache> = std::sync::Arc::new(zstd_store.clone());
    assert_eq!(zstd_default.compression(), Compression::zstd());
    assert_eq!(macro_zstd(3), text(3000));
    assert_eq!(macro_zstd(3), text(3000));
    assert_eq!(macro_zstd::stats().hits, 1);
}

/// A store whose default is zstd, for the macro's functions.
static MACRO_STORE: std::sync::LazyLock<Store> = std::sync::LazyLock::new(|| {
    // Never dropped: in cargo's temporary folder for tests, not the system's.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("zstd-macro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Store::builder()
        .compression(Compression::zstd())
        .open(dir.join("checkpoints.redb"))
        .unwrap()
});

ckpt::checkpoint! {
    #[checkpoint(cache = MACRO_STORE.clone())]
    fn inherits(n: usize) -> String {
        text(n)
    }
}

ckpt::checkpoint! {
    #[checkpoint(cache = MemoryCache::new(), compress = zstd)]
    fn macro_zstd(kib: usize) -> String {
        text(kib * 1000)
    }
}

ckpt::checkpoint! {
    #[checkpoint(compress = zstd(7), cache = MemoryCache::new(), on_error = warn)]
    fn macro_level(n: usize) -> String {
        text(n)
    }
}

ckpt::checkpoint! {
    #[checkpoint(cache = MACRO_STORE.clone(), compress = none)]
    fn macro_none(n: usize) -> String {
        text(n)
    }
}

#[test]
fn async_calls_save_compressed_too() {
    let dir = TempDir::new("compression-async");
    let store = Store::open(dir.join("c.redb")).unwrap();
    let d = deco(store, "async").with_compression(Compression::zstd());
    let value = text(4096);
    let got = futures_executor::block_on(d.call_async(1u64, |_| {
        let value = value.clone();
        async move { value }
    }))
    .unwrap();
    assert_eq!(got, value);
    assert!(
        is_compressed(&stored(&d, 1)),
        "the async save stored it plain"
    );
    let again = futures_executor::block_on(d.call_async(1u64, |_| async {
        if true {
            panic!("a hit")
        }
        String::new()
    }));
    assert_eq!(again.unwrap(), value);
}
