//! Export and import (`Store::export`, `Store::import`): entries travel unchanged (ids, record
//! bytes, metadata), and a damaged, truncated, lying or newer archive is refused whole, with an
//! error and no change to the store, never a panic.

mod common;

use ckpt::store::EntryInfo;
use ckpt::{
    AutoIdentifier, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, OnError, Record, Store,
};
use common::TempDir;

fn deco(store: &Store, f: Function) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(f, AutoIdentifier, store.clone()).with_on_error(OnError::Raise)
}

/// A store with two functions, a stale code version, hits, and values of a few sizes.
fn populated(path: &std::path::Path) -> Store {
    let store = Store::open(path).unwrap();
    let old = deco(
        &store,
        Function::new("app::text", "embed").with_version("1"),
    );
    for i in 0..3u64 {
        old.call(i, |i| vec![i as u8; 10]).unwrap();
    }
    let new = deco(
        &store,
        Function::new("app::text", "embed").with_version("2"),
    );
    for i in 0..5u64 {
        new.call(i, |i| vec![i as u8; 100 * (i as usize + 1)])
            .unwrap();
        new.call(i, |i| vec![i as u8; 100 * (i as usize + 1)])
            .unwrap();
    }
    let other = deco(&store, Function::new("app", "big").with_code_hash(42));
    other
        .call("large".to_string(), |_| vec![7u8; 300_000])
        .unwrap();
    store.flush().unwrap();
    store
}

fn snapshot(store: &Store) -> Vec<(EntryInfo, Vec<u8>)> {
    store
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| {
            let bytes = store.read_record(&e.id).unwrap().unwrap();
            (e, bytes)
        })
        .collect()
}

#[test]
fn round_trip_keeps_ids_bytes_and_metadata() {
    let dir = TempDir::new("archive-round-trip");
    let source = populated(&dir.join("a.redb"));
    let before = snapshot(&source);
    assert_eq!(before.len(), 9);
    assert_eq!(before.iter().filter(|(e, _)| e.stale).count(), 3);
    assert!(before.iter().any(|(e, _)| e.hits > 0));

    let mut archive = Vec::new();
    let out = source.export(&mut archive).unwrap();
    assert_eq!((out.functions, out.entries), (2, 9));
    assert_eq!(out.archive_bytes, archive.len() as u64);
    assert_eq!(
        out.record_bytes,
        before.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    // Exporting reads without counting accesses.
    assert_eq!(snapshot(&source), before);

    let target = Store::open(dir.join("b.redb")).unwrap();
    let report = target.import(archive.as_slice()).unwrap();
    assert_eq!(
        (report.functions, report.entries, report.replaced),
        (2, 9, 0)
    );
    assert_eq!(report.archive_bytes, archive.len() as u64);
    assert_eq!(
        snapshot(&target),
        before,
        "ids, bytes and metadata unchanged"
    );
    assert!(target.verify().unwrap().is_clean());

    // The function rows came along: names, newest version, counts.
    let a = source.stats().unwrap();
    let b = target.stats().unwrap();
    assert_eq!((a.entries, a.stored_bytes), (b.entries, b.stored_bytes));
    for (fa, fb) in a.functions.iter().zip(&b.functions) {
        assert_eq!(
            (
                &fa.module,
                &fa.name,
                fa.code_version,
                fa.code_hash,
                &fa.version
            ),
            (
                &fb.module,
                &fb.name,
                fb.code_version,
                fb.code_hash,
                &fb.version
            )
        );
        assert_eq!((fa.entries, fa.stored_bytes), (fb.entries, fb.stored_bytes));
    }

    // The values read back through a decorator in the target.
    let new = deco(
        &target,
        Function::new("app::text", "embed").with_version("2"),
    );
    let id = new.identify(&3u64).unwrap();
    assert_eq!(new.peek::<Vec<u8>>(&id).unwrap(), Some(vec![3u8; 400]));

    // Importing again replaces every entry with itself.
    let again = target.import(archive.as_slice()).unwrap();
    assert_eq!(again.replaced, 9);
    assert_eq!(snapshot(&target), before);
    assert!(target.verify().unwrap().is_clean());
}

#[test]
fn export_of_one_function() {
    let dir = TempDir::new("archive-one");
    let source = populated(&dir.join("a.redb"));
    let mut archive = Vec::new();
    let out = source
        .export_of(&Function::new("app", "big"), &mut archive)
        .unwrap();
    assert_eq!((out.functions, out.entries), (1, 1));
    let target = Store::open(dir.join("b.redb")).unwrap();
    target.import(archive.as_slice()).unwrap();
    let got = target.entries().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].function.as_deref(), Some("app::big"));
    let record = target.read_record(&got[0].id).unwrap().unwrap();
    let record = Record::parse(&record).unwrap();
    assert_eq!(record.decode::<Vec<u8>>().unwrap(), vec![7u8; 300_000]);
}

#[test]
fn an_import_keeps_the_code_version_running_here() {
    let dir = TempDir::new("archive-identity");
    let source = populated(&dir.join("a.redb"));
    let mut archive = Vec::new();
    source.export(&mut archive).unwrap();

    // The target runs version 3 of embed: the imported version-2 entries are stale here.
    let target = Store::open(dir.join("b.redb")).unwrap();
    let v3 = deco(
        &target,
        Function::new("app::text", "embed").with_version("3"),
    );
    v3.call(99u64, |_| vec![1u8]).unwrap();
    target.import(archive.as_slice()).unwrap();
    let embed = target
        .function_stats(&Function::new("app::text", "embed"))
        .unwrap()
        .unwrap();
    assert_eq!(embed.version.as_deref(), Some("3"));
    let entries = target.entries().unwrap();
    assert_eq!(entries.iter().filter(|e| !e.stale).count(), 2); // v3's own, and app::big
    assert_eq!(target.remove_all_stale().unwrap(), 8);
}

fn import_err(archive: &[u8]) -> ckpt::Error {
    let dir = TempDir::new("archive-bad");
    let target = Store::open(dir.store_path()).unwrap();
    let err = target.import(archive).unwrap_err();
    assert_eq!(target.stats().unwrap().entries, 0, "nothing imported");
    assert!(target.verify().unwrap().is_clean());
    err
}

fn small_archive() -> Vec<u8> {
    let dir = TempDir::new("archive-small");
    let store = Store::open(dir.store_path()).unwrap();
    let d = deco(&store, Function::new("m", "f"));
    d.call(1u8, |x| x).unwrap();
    d.call(2u8, |x| x).unwrap();
    let mut archive = Vec::new();
    store.export(&mut archive).unwrap();
    archive
}

#[test]
fn every_flipped_byte_and_every_truncation_is_refused() {
    let archive = small_archive();
    let dir = TempDir::new("archive-flips");
    let target = Store::open(dir.store_path()).unwrap();
    for i in 0..archive.len() {
        for bit in [0x01, 0x80] {
            let mut bad = archive.clone();
            bad[i] ^= bit;
            let err = target.import(bad.as_slice()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "byte {i}: {err}");
        }
    }
    for cut in 0..archive.len() {
        let err = target.import(&archive[..cut]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "cut {cut}: {err}");
    }
    let mut longer = archive.clone();
    longer.push(0);
    assert!(
        import_err(&longer)
            .to_string()
            .contains("bytes after its end")
    );
    assert_eq!(target.stats().unwrap().entries, 0);
    target.import(archive.as_slice()).unwrap();
    assert_eq!(target.stats().unwrap().entries, 2);
}

#[test]
fn lying_lengths_fail_without_allocating_them() {
    let archive = small_archive();
    // The first frame starts after the 40-byte header: kind, then its u64 length.
    for len in [u64::MAX, 1 << 40, 4 << 30, 1 << 31] {
        let mut bad = archive.clone();
        bad[41..49].copy_from_slice(&len.to_le_bytes());
        let err = import_err(&bad);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    // An entry frame claiming 4 GiB followed by a few bytes: truncated, after reading them.
    let mut bad = archive[..40].to_vec();
    bad.push(2);
    bad.extend_from_slice(&(4u64 << 30).to_le_bytes());
    bad.extend_from_slice(&[0u8; 1000]);
    let err = import_err(&bad);
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn newer_versions_and_strangers_are_named() {
    let archive = small_archive();
    let mut newer = archive.clone();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    let err = import_err(&newer);
    assert!(err.to_string().contains("format version 2, newer"), "{err}");
    let err = import_err(b"SQLite format 3\0 and so on, not ours");
    assert!(err.to_string().contains("not a ckpt archive"), "{err}");
    let err = import_err(b"");
    assert!(err.to_string().contains("not a ckpt archive"), "{err}");
}

#[test]
fn read_record_counts_no_access() {
    let dir = TempDir::new("archive-read-record");
    let store = Store::open(dir.store_path()).unwrap();
    let d = deco(&store, Function::new("m", "f"));
    d.call(5u32, |x| x + 1).unwrap();
    let id = d.identify(&5u32).unwrap();
    let bytes = store.read_record(&id).unwrap().unwrap();
    let record = Record::parse(&bytes).unwrap();
    assert!(record.is_of::<u32>());
    assert_eq!(record.decode::<u32>().unwrap(), 6);
    store.flush().unwrap();
    assert_eq!(store.entry(&id).unwrap().unwrap().hits, 0);
    assert_eq!(
        store
            .read_record(&CheckpointId::from_bytes([0; 16]))
            .unwrap(),
        None
    );
}

/// Random damage (spliced, duplicated, deleted and overwritten runs of bytes, lengths set to
/// random values): always an error, never a panic, never a partial import.
#[test]
fn random_damage_is_refused_whole() {
    let archive = small_archive();
    let dir = TempDir::new("archive-random");
    let target = Store::open(dir.store_path()).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    for round in 0..400 {
        let mut bad = archive.clone();
        for _ in 0..1 + next(3) {
            if bad.is_empty() {
                break;
            }
            let at = next(bad.len());
            let len = 1 + next(24).min(bad.len() - at - 1);
            match next(5) {
                0 => {
                    bad.drain(at..at + len);
                }
                1 => {
                    let run: Vec<u8> = bad[at..at + len].to_vec();
                    let to = next(bad.len());
                    bad.splice(to..to, run);
                }
                2 => {
                    for b in &mut bad[at..at + len] {
                        *b = next(256) as u8;
                    }
                }
                3 if bad.len() > at + 9 => {
                    let v = [0u64, 1, 63, 64, 1 << 20, u32::MAX as u64, u64::MAX][next(7)];
                    bad[at + 1..at + 9].copy_from_slice(&v.to_le_bytes());
                }
                _ => bad.truncate(at),
            }
        }
        if bad == archive {
            continue;
        }
        let result = target.import(bad.as_slice());
        assert!(result.is_err(), "round {round}: damaged archive accepted");
    }
    assert_eq!(target.stats().unwrap().entries, 0);
    assert!(target.verify().unwrap().is_clean());
}

#[test]
fn large_records_travel_in_chunks_and_come_back_whole() {
    let dir = TempDir::new("archive-large");
    let source = Store::open(dir.join("a.redb")).unwrap();
    let f = deco(&source, Function::new("app", "large").with_code_hash(7));
    // 3 MiB of varied bytes: stored in chunks (records over 512 KiB are).
    let value = |n: u64| -> Vec<u8> { (0..3u64 << 20).map(|i| (i * 31 + n) as u8).collect() };
    for n in 0..2u64 {
        f.call(n, value).unwrap();
    }
    f.call(9u64, |_| vec![1u8; 100]).unwrap();
    let before = snapshot(&source);
    assert_eq!(before.len(), 3);
    for (_, bytes) in &before {
        Record::parse(bytes).expect("read_record joins a chunked record into a sound one");
    }

    let mut archive = Vec::new();
    let out = source.export(&mut archive).unwrap();
    assert_eq!((out.entries, out.skipped_damaged), (3, 0));
    assert!(out.record_bytes > 6 << 20);

    let target = Store::open(dir.join("b.redb")).unwrap();
    let report = target.import(archive.as_slice()).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(snapshot(&target), before);
    let g = deco(&target, Function::new("app", "large").with_code_hash(7));
    for n in 0..2u64 {
        let got: Vec<u8> = g.call(n, |_| panic!("must be a hit")).unwrap();
        assert_eq!(got, value(n));
    }
    assert!(target.verify().unwrap().is_clean());
}
