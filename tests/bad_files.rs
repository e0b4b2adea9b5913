//! Bad files and bad input: each gets a typed error that says what happened and what to do, never
//! a panic, never a hang, never a wrong value.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use ckpt::testing::{self, Decoded};
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, OnError,
    OpenErrorKind, Store,
};
use common::{Rng, TempDir, within};

type Val = (u64, String, Vec<u32>);

fn value(i: u64) -> Val {
    let len = (i * 37 % 700) as usize;
    (
        i,
        format!("value-{i}"),
        (0..len as u32).map(|x| x ^ i as u32).collect(),
    )
}

fn function() -> Function {
    Function::new("reliability", "f")
}

/// A store with `n` entries, closed; returns the ids and expected values. Its chunks are small,
/// so that most values (those over 1 KiB) are stored in chunks.
fn build_store(path: &std::path::Path, n: u64) -> BTreeMap<CheckpointId, Val> {
    let store = Store::builder().chunk_size(1024).open(path).unwrap();
    let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let mut out = BTreeMap::new();
    for i in 0..n {
        deco.call(i, value).unwrap();
        out.insert(deco.identify(&i).unwrap(), value(i));
    }
    drop(deco);
    store.close().unwrap();
    out
}

fn open_err(path: &std::path::Path) -> ckpt::OpenError {
    match Store::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

/// Every error message says what to do.
fn assert_actionable(e: &ckpt::OpenError) {
    let msg = e.to_string();
    assert!(msg.contains(&e.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(';') || msg.contains("upgrade") || msg.contains("delete"),
        "no advice in {msg:?}"
    );
    assert!(!msg.starts_with(char::is_uppercase), "{msg}");
}

#[test]
fn empty_file_is_not_a_store() {
    let dir = TempDir::new("empty");
    let path = dir.join("checkpoints.redb");
    std::fs::write(&path, b"").unwrap();
    let e = open_err(&path);
    assert_eq!(e.kind(), &OpenErrorKind::NotAStore, "{e}");
    assert_actionable(&e);
    // The file is left alone.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    // What `main` prints when it returns the error (its `Debug`) gives the advice too.
    let debug = format!("{e:?}");
    assert!(debug.contains(&format!("{:?}", e.to_string())), "{debug}");
}

#[test]
fn a_text_file_is_not_a_store() {
    let dir = TempDir::new("text");
    let path = dir.join("notes.txt");
    for bytes in [
        b"hello, this is not a database\n".to_vec(),
        b"x".repeat(100_000),
        vec![0u8; 4096],
        vec![0xffu8; 9000],
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let e = open_err(&path);
        assert!(
            matches!(
                e.kind(),
                OpenErrorKind::NotAStore | OpenErrorKind::Corrupted
            ),
            "{e}"
        );
        assert_actionable(&e);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was changed");
    }
}

#[test]
fn a_redb_file_of_someone_else_is_not_a_store() {
    let dir = TempDir::new("foreign");
    let path = dir.join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("users"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = open_err(&path);
    assert_eq!(e.kind(), &OpenErrorKind::NotAStore, "{e}");
    assert_actionable(&e);

    // A ckpt_info table that does not name the format.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("ckpt_info"))
            .unwrap()
            .insert("format", &b"nope"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(open_err(&path).kind(), &OpenErrorKind::NotAStore);

    // A ckpt_info table of another key/value type.
    let path = dir.join("other2.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("ckpt_info"))
            .unwrap()
            .insert(1, 1)
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(open_err(&path).kind(), &OpenErrorKind::NotAStore);
}

#[test]
fn a_newer_schema_says_upgrade() {
    let dir = TempDir::new("newer");
    let path = dir.join("checkpoints.redb");
    build_store(&path, 3);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("ckpt_info"))
            .unwrap()
            .insert("schema", &7u32.to_le_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let e = open_err(&path);
    assert_eq!(
        e.kind(),
        &OpenErrorKind::NewerSchema {
            found: 7,
            supported: 2
        }
    );
    assert!(e.to_string().contains("upgrade ckpt"), "{e}");
}

/// A store as version 1 wrote it (schema 1; function rows without the value type's name) opens:
/// its entries are hits, the file is migrated to schema 2 in place, and saves go on.
#[test]
fn a_schema_1_store_is_migrated_in_place() {
    let dir = TempDir::new("schema1");
    let path = dir.join("checkpoints.redb");
    let expected = build_store(&path, 20);
    let info = redb::TableDefinition::<&str, &[u8]>::new("ckpt_info");
    let functions = redb::TableDefinition::<u64, &[u8]>::new("ckpt_functions");
    let schema = |path: &std::path::Path| -> u32 {
        let db = redb::Database::open(path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let v = txn
            .open_table(info)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap();
        u32::from_le_bytes(v.value().try_into().unwrap())
    };
    {
        // Back to version 1: the schema number, and each function row without its last field
        // (`value_type`, an `Option<String>`, which is one zero byte when `None`: rewrite the
        // row's newest type to none first).
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(info)
            .unwrap()
            .insert("schema", &1u32.to_le_bytes()[..])
            .unwrap();
        {
            let mut table = txn.open_table(functions).unwrap();
            let rows: Vec<(u64, Vec<u8>)> = redb::ReadableTable::iter(&table)
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect();
            assert!(!rows.is_empty());
            for (k, row) in rows {
                let name = std::any::type_name::<Val>();
                // `Some(name)`: 1, then the name's length as a varint (< 128 here), then it.
                let tail = [&[1u8, name.len() as u8][..], name.as_bytes()].concat();
                assert!(row.ends_with(&tail), "the row ends with the value type");
                let v1 = &row[..row.len() - tail.len()];
                table.insert(k, v1).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    assert_eq!(schema(&path), 1);
    {
        let store = Store::open(&path).unwrap();
        let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
        for i in 0..20u64 {
            let id = deco.identify(&i).unwrap();
            let got = deco.call(i, |_| -> Val { panic!("entry {i} must be a hit") });
            assert_eq!(got.unwrap(), expected[&id]);
        }
        assert_eq!(deco.call(1000u64, value).unwrap(), value(1000));
        let stats = store.stats().unwrap();
        assert_eq!(stats.entries, 21);
        assert_eq!(
            stats.functions[0].value_type.as_deref(),
            Some(std::any::type_name::<Val>())
        );
        assert!(store.verify().unwrap().is_clean());
        drop(deco);
        store.close().unwrap();
    }
    assert_eq!(schema(&path), 2, "migrated in place");
}

#[test]
fn a_store_with_a_missing_table_is_corrupted() {
    let dir = TempDir::new("missing-table");
    let path = dir.join("checkpoints.redb");
    build_store(&path, 3);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(redb::TableDefinition::<&[u8; 16], &[u8; 64]>::new(
            "ckpt_entries",
        ))
        .unwrap();
        txn.commit().unwrap();
    }
    let e = open_err(&path);
    assert_eq!(e.kind(), &OpenErrorKind::Corrupted, "{e}");
    assert_actionable(&e);
}

#[test]
fn a_directory_in_place_of_the_file() {
    let dir = TempDir::new("dir");
    let path = dir.join("checkpoints.redb");
    std::fs::create_dir(&path).unwrap();
    let e = open_err(&path);
    assert_eq!(e.kind(), &OpenErrorKind::IsADirectory, "{e}");
    assert_actionable(&e);
}

#[cfg(unix)]
#[test]
fn a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("ro");
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root ignores permission bits: then use a folder the kernel itself refuses files in.
    let probe = ro.join("probe");
    let path = if std::fs::write(&probe, b"").is_ok() {
        let _ = std::fs::remove_file(&probe);
        let sys = std::path::Path::new("/sys");
        if !sys.is_dir() || std::fs::write(sys.join("ckpt-probe"), b"").is_ok() {
            eprintln!("no read-only folder to test with (running as root without /sys)");
            return;
        }
        eprintln!("running as root: /sys stands in for a read-only folder");
        sys.join(format!("ckpt-{}.redb", std::process::id()))
    } else {
        ro.join("checkpoints.redb")
    };
    let e = open_err(&path);
    assert_eq!(e.kind(), &OpenErrorKind::PermissionDenied, "{e}");
    assert_actionable(&e);
    // A folder that cannot be created is refused the same way.
    let e = open_err(
        &path
            .with_extension("d")
            .join("sub")
            .join("checkpoints.redb"),
    );
    assert!(
        matches!(
            e.kind(),
            OpenErrorKind::PermissionDenied | OpenErrorKind::Io
        ),
        "{e}"
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[cfg(unix)]
#[test]
fn store_files_and_folders_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("private");
    let path = dir.join("a").join("b").join("checkpoints.redb");
    build_store(&path, 1);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.join("a").join("b")), 0o700);
    assert_eq!(mode(&dir.join("a")), 0o700);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.join("a").join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["checkpoints.redb"]);
}

#[cfg(unix)]
#[test]
fn the_default_folder_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("default-folder");
    // Where `default_store` puts its file under a working directory (or `CKPT_DIR`).
    let path = dir
        .join(ckpt::defaults::DEFAULT_DIR)
        .join(ckpt::defaults::DEFAULT_FILE);
    Store::open(&path).unwrap().close().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(ckpt::defaults::DEFAULT_DIR)), 0o700);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_truncated_store_is_refused_or_repaired_never_wrong() {
    let dir = TempDir::new("truncated");
    let path = dir.join("checkpoints.redb");
    let expected = build_store(&path, 60);
    let full = std::fs::read(&path).unwrap();
    let mut cuts = vec![1, 8, 64, 512, 4096, 4097, full.len() / 3, full.len() / 2];
    cuts.extend([full.len() - 4096, full.len() - 1]);
    for cut in cuts {
        std::fs::write(&path, &full[..cut]).unwrap();
        let p = path.clone();
        let expected = expected.clone();
        within(60, "opening a truncated store", move || {
            match Store::open(&p) {
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            OpenErrorKind::Corrupted | OpenErrorKind::NotAStore
                        ),
                        "cut at {cut}: {e}"
                    );
                    assert_actionable(&e);
                }
                Ok(store) => {
                    check_values(&store, &expected);
                }
            }
        });
    }
}

/// Every retrieve returns the right value or a miss, and so does every peek of the decorator
/// (which reads chunked records without joining them).
fn check_values(store: &Store, expected: &BTreeMap<CheckpointId, Val>) -> (u64, u64, u64) {
    let (mut hits, mut misses, mut errors) = (0, 0, 0);
    let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    for (id, want) in expected {
        match deco.peek::<Val>(id) {
            Ok(Some(v)) => assert_eq!(&v, want, "a wrong value for {id}"),
            Ok(None) => {}
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::Storage),
                "{e}"
            ),
        }
    }
    for (id, want) in expected {
        match store.retrieve(id) {
            Ok(Some(bytes)) => match testing::decode_record::<Val>(&bytes) {
                Decoded::Value(v, _) => {
                    assert_eq!(&v, want, "a wrong value for {id}");
                    hits += 1;
                }
                Decoded::Corrupt | Decoded::TypeMismatch | Decoded::Unsupported => misses += 1,
            },
            Ok(None) => misses += 1,
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::Storage),
                    "{e}"
                );
                errors += 1;
            }
        }
    }
    (hits, misses, errors)
}

#[derive(Debug, Default)]
struct FlipTally {
    open_failed: BTreeMap<String, u64>,
    opened_intact: u64,
    opened_with_losses: u64,
    retrieve_errors: u64,
    verify_clean: u64,
    verify_problems: u64,
    verify_errors: u64,
    repaired_then_clean: u64,
}

/// Random byte flips: open fails with a typed error, or repairs, or succeeds, and then every
/// retrieve returns the right value or a miss. `CKPT_FLIP_TRIALS` sets the number of trials
/// (default 1,000), `CKPT_FLIP_SEED` the seed.
#[test]
fn random_byte_flips_never_give_a_wrong_value() {
    flip_trials(Store::builder(), 1);
}

/// The same with the integrity check on open turned off: the storage engine then trusts the
/// damaged file and panics on some of them (found: it did so even while the store was being
/// dropped); every panic stays inside ckpt, and no value is ever wrong. Half the trials.
#[test]
fn random_byte_flips_with_the_open_check_off_contain_every_panic() {
    flip_trials(Store::builder().open_check(ckpt::OpenCheck::Trust), 2);
}

fn flip_trials(builder: ckpt::StoreBuilder, divisor: u64) {
    let trials: u64 = std::env::var("CKPT_FLIP_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        / divisor;
    let mut rng = Rng::from_env("CKPT_FLIP_SEED", 0x5eed_f11b);
    let dir = TempDir::new("flips");
    let path = dir.join("checkpoints.redb");
    let expected = build_store(&path, 40);
    let image = std::fs::read(&path).unwrap();
    let live: Vec<usize> = (0..image.len()).filter(|&i| image[i] != 0).collect();
    eprintln!(
        "store image: {} bytes, {} non-zero",
        image.len(),
        live.len()
    );
    let mut tally = FlipTally::default();
    let started = std::time::Instant::now();
    for trial in 0..trials {
        let mut bytes = image.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            // Half the flips anywhere, half in bytes that carry data.
            let at = if rng.below(2) == 0 {
                rng.below(bytes.len() as u64) as usize
            } else {
                live[rng.below(live.len() as u64) as usize]
            };
            bytes[at] ^= 1 + rng.below(255) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let p = path.clone();
        let expected = expected.clone();
        let builder = builder.clone();
        let outcome = within(60, &format!("flip trial {trial}"), move || {
            let store = match builder.open(&p) {
                Err(e) => return Err(format!("{:?}", e.kind())),
                Ok(s) => s,
            };
            let (hits, _, errors) = check_values(&store, &expected);
            let verify = store.verify();
            let repaired_clean = match &verify {
                Ok(r) if !r.is_clean() => {
                    store.repair().is_ok() && store.verify().is_ok_and(|r| r.is_clean())
                }
                _ => false,
            };
            // Whatever happened, these return and do not panic.
            let _ = store.stats();
            let _ = store.entries();
            Ok((
                hits == expected.len() as u64,
                errors,
                verify.map(|r| r.is_clean()),
                repaired_clean,
            ))
        });
        match outcome {
            Err(kind) => *tally.open_failed.entry(kind).or_default() += 1,
            Ok((intact, errors, verify, repaired_clean)) => {
                if intact {
                    tally.opened_intact += 1;
                } else {
                    tally.opened_with_losses += 1;
                }
                tally.retrieve_errors += errors;
                match verify {
                    Ok(true) => tally.verify_clean += 1,
                    Ok(false) => tally.verify_problems += 1,
                    Err(_) => tally.verify_errors += 1,
                }
                tally.repaired_then_clean += u64::from(repaired_clean);
            }
        }
    }
    eprintln!(
        "{trials} byte-flip trials in {:?}: {tally:#?}",
        started.elapsed()
    );
}

/// A value of another type is a miss counted as a type mismatch, never a wrong value.
#[test]
fn a_value_of_the_wrong_type_is_a_miss() {
    let dir = TempDir::new("wrong-type");
    let store = Store::open(dir.join("checkpoints.redb")).unwrap();
    let f = function();
    let as_u64 = DecoratorCheckpoint::new(f.clone(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let as_string =
        DecoratorCheckpoint::new(f, AutoIdentifier, store.clone()).with_on_error(OnError::Raise);
    assert_eq!(as_u64.call(5u8, |x| u64::from(x) * 2).unwrap(), 10);
    assert_eq!(
        as_string.call(5u8, |x| format!("five={x}")).unwrap(),
        "five=5"
    );
    assert_eq!(as_string.stats().type_mismatches, 1);
    assert_eq!(as_string.stats().hits, 0);
    assert_eq!(
        as_string
            .call(5u8, |_| -> String { unreachable!() })
            .unwrap(),
        "five=5"
    );
    let id = as_u64.identify(&5u8).unwrap();
    assert_eq!(as_u64.peek::<u64>(&id).unwrap(), None);
    assert!(store.verify().unwrap().is_clean());
}

/// Counts the largest single allocation, to show a hostile length field cannot make ckpt
/// allocate gigabytes.
mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Counting;
    pub static LARGEST: AtomicUsize = AtomicUsize::new(0);

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
            LARGEST.fetch_max(new, Ordering::Relaxed);
            unsafe { System.realloc(ptr, layout, new) }
        }
    }
}

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// A record with a valid checksum and the right type fingerprint, whose payload's length fields
/// claim gigabytes.
fn lying_record<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Vec<u8> {
    // The header of a real record of a `T`, with the payload swapped and the checksum redone.
    let real = testing::encode_record(&(), Duration::ZERO).unwrap();
    let mut out = real[..32].to_vec();
    let fingerprint = ckpt::type_fingerprint::<T>();
    out[16..24].copy_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = xxhash_rust::xxh3::xxh3_64(&out[8..]);
    out[..8].copy_from_slice(&sum.to_le_bytes());
    out
}

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

#[test]
fn length_fields_claiming_gigabytes_stay_bounded() {
    let dir = TempDir::new("lengths");
    let store = Store::open(dir.join("checkpoints.redb")).unwrap();
    let f = function();
    let huge = [1u64 << 33, 1 << 40, u64::MAX >> 1, u64::MAX];
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    for n in huge {
        cases.push((lying_record::<Vec<u8>>(&varint(n)), "Vec<u8>"));
        cases.push((lying_record::<String>(&varint(n)), "String"));
        cases.push((lying_record::<Vec<Vec<u64>>>(&varint(n)), "Vec<Vec<u64>>"));
        let mut nested = varint(3);
        nested.extend(varint(n));
        cases.push((
            lying_record::<Vec<Vec<u64>>>(&nested),
            "Vec<Vec<u64>> inner",
        ));
        cases.push((
            lying_record::<std::collections::HashMap<u64, String>>(&varint(n)),
            "HashMap<u64, String>",
        ));
    }
    for (i, (bytes, what)) in cases.iter().enumerate() {
        let id = CheckpointId::from_u128(i as u128 + 1);
        store
            .save(&id, &testing::entry(&f, bytes, Duration::ZERO))
            .unwrap();
        let deco = DecoratorCheckpoint::new(f.clone(), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
        alloc::LARGEST.store(0, std::sync::atomic::Ordering::Relaxed);
        let got = match *what {
            "Vec<u8>" => deco.peek::<Vec<u8>>(&id).unwrap().map(|_| ()),
            "String" => deco.peek::<String>(&id).unwrap().map(|_| ()),
            "HashMap<u64, String>" => deco
                .peek::<std::collections::HashMap<u64, String>>(&id)
                .unwrap()
                .map(|_| ()),
            _ => deco.peek::<Vec<Vec<u64>>>(&id).unwrap().map(|_| ()),
        };
        let largest = alloc::LARGEST.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(got, None, "{what} case {i} decoded");
        assert_eq!(
            deco.stats().corrupt,
            1,
            "{what} case {i} not counted corrupt"
        );
        assert!(
            largest < 16 << 20,
            "{what} case {i}: a {largest}-byte allocation"
        );
        // The corrupt entry was dropped: the store stays consistent.
        assert_eq!(store.retrieve(&id).unwrap(), None);
    }
    assert!(store.verify().unwrap().is_clean());
}

/// Every kind of inconsistency between ckpt's tables, made with the storage engine directly:
/// verify counts each, the operations it breaks say to repair, repair fixes all of them in one
/// transaction, and the sound entries survive.
#[test]
fn verify_and_repair_fix_every_kind_of_inconsistency() {
    use redb::{ReadableTable, TableDefinition};
    const RESULTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("ckpt_results");
    const ENTRIES: TableDefinition<&[u8; 16], &[u8; 64]> = TableDefinition::new("ckpt_entries");
    const FUNCTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("ckpt_functions");
    const ORDER_CREATED: TableDefinition<&[u8; 24], ()> =
        TableDefinition::new("ckpt_order_created");

    let dir = TempDir::new("repair");
    let path = dir.join("checkpoints.redb");
    let expected = build_store(&path, 12);
    // A limit that needs the creation-order index, so that the file keeps one to damage.
    Store::open(&path)
        .unwrap()
        .set_limits(ckpt::Limits::new().max_age(Duration::from_secs(1 << 40)))
        .unwrap();
    let ids: Vec<CheckpointId> = expected.keys().copied().collect();
    let other = Function::new("reliability", "other");
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut results = txn.open_table(RESULTS).unwrap();
            let mut entries = txn.open_table(ENTRIES).unwrap();
            let mut functions = txn.open_table(FUNCTIONS).unwrap();
            let mut index = txn.open_table(ORDER_CREATED).unwrap();
            // A result without metadata, and metadata without a result.
            entries.remove(ids[0].as_bytes()).unwrap();
            results.remove(ids[1].as_bytes()).unwrap();
            // A damaged record (bit rot in a value).
            let mut bad = results
                .get(ids[2].as_bytes())
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x40;
            results.insert(ids[2].as_bytes(), bad.as_slice()).unwrap();
            // A metadata row of an unknown format, and one with a wrong size.
            let mut row = *entries.get(ids[3].as_bytes()).unwrap().unwrap().value();
            row[0] = 9;
            entries.insert(ids[3].as_bytes(), &row).unwrap();
            let mut row = *entries.get(ids[4].as_bytes()).unwrap().unwrap().value();
            row[48] ^= 1;
            entries.insert(ids[4].as_bytes(), &row).unwrap();
            // A dangling index row, and a missing one (key: created ms, big-endian, then id).
            index.insert(&[0xee; 24], ()).unwrap();
            let row = *entries.get(ids[5].as_bytes()).unwrap().unwrap().value();
            let mut key = [0u8; 24];
            key[..8].copy_from_slice(
                &u64::from_le_bytes(row[24..32].try_into().unwrap()).to_be_bytes(),
            );
            key[8..].copy_from_slice(ids[5].as_bytes());
            assert!(index.remove(&key).unwrap().is_some());
            // A function row that does not decode.
            functions
                .insert(other.key(), &[0xff, 0xff, 0xff][..])
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let report = store.verify().unwrap();
    eprintln!("{report}");
    assert!(!report.engine_repaired);
    assert_eq!(report.entries_checked, 12);
    assert_eq!(report.results_without_meta, 1, "{report}");
    assert_eq!(report.meta_without_result, 1, "{report}");
    assert_eq!(report.bad_records, 1, "{report}");
    assert_eq!(report.bad_meta, 1, "{report}");
    assert_eq!(report.size_mismatches, 1, "{report}");
    assert!(report.index_mismatches >= 2, "{report}");
    assert_eq!(report.bad_function_rows, 1, "{report}");
    assert_eq!(report.function_count_mismatches, 1, "{report}");
    assert!(!report.repaired);
    assert!(report.to_string().contains("run Store::repair"), "{report}");
    // What the damage breaks says what to do.
    let e = store.stats().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupted);
    assert!(e.to_string().contains("run Store::repair"), "{e}");

    let fixed = store.repair().unwrap();
    assert!(fixed.repaired, "{fixed}");
    assert_eq!(fixed.problems(), report.problems());
    let after = store.verify().unwrap();
    assert!(after.is_clean(), "{after}");
    // Sound entries are intact; dropped ones are misses.
    let (hits, misses, errors) = check_values(&store, &expected);
    assert_eq!((hits, misses, errors), (8, 4, 0));
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, 8);
    assert_eq!(stats.entries, store.entries().unwrap().len() as u64);
    assert_eq!(store.entries_of(&function()).unwrap().len(), 8);
    // And it works as before.
    let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    assert_eq!(deco.call(0u64, value).unwrap(), value(0));
    assert_eq!(deco.stats().misses, 1);
    assert_eq!(deco.call(0u64, value).unwrap(), value(0));
    assert_eq!(deco.stats().hits, 1);
}
