//! I/O faults: the store's bytes sit behind a backend that fails reads, writes, syncs or resizes
//! after N operations (as redb's own tests and fuzzer do). Every operation then returns a typed
//! error (or follows `on_error`), nothing is committed half, and once the fault clears the same
//! store handle is usable again, with every entry committed before.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ckpt::testing::{
    self, Decoded, FaultOp, Faults, FaultyBackend, GROUP_COMMIT_MAX_BYTES, MemoryBackend,
};
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, OnError, Store,
};

type Val = (u64, Vec<u8>);

fn value(i: u64) -> Val {
    let len = if i % 7 == 3 {
        GROUP_COMMIT_MAX_BYTES + 1000
    } else {
        (i * 131 % 3000) as usize
    };
    (i, (0..len).map(|x| (x as u64 ^ i) as u8).collect())
}

fn id(i: u64) -> CheckpointId {
    CheckpointId::from_u128(0xfa_0000 + u128::from(i))
}

fn function() -> Function {
    Function::new("faults", "f")
}

fn open(mem: &MemoryBackend, faults: &Arc<Faults>) -> Store {
    let (mem, faults) = (mem.clone(), faults.clone());
    // Small chunks: the values past the group-commit limit are stored in five chunks each.
    Store::builder()
        .cache_size(64 << 10)
        .chunk_size(64 << 10)
        .open_backend("mem:faults", move || {
            Ok(FaultyBackend::new(mem.clone(), faults.clone()))
        })
        .unwrap()
}

fn save(store: &Store, i: u64) -> Result<(), ckpt::Error> {
    let bytes = testing::encode_record(&value(i), Duration::from_millis(i)).unwrap();
    store.save(
        &id(i),
        &testing::entry(&function(), &bytes, Duration::from_millis(i)),
    )
}

/// What the store must hold for entry `i`: `Some(true)` present, `Some(false)` absent, `None`
/// either (an operation that failed may or may not have committed).
type Expect = BTreeMap<u64, Option<bool>>;

fn check(store: &Store, expect: &Expect, when: &str) {
    for (&i, &want) in expect {
        let got = store
            .retrieve(&id(i))
            .unwrap_or_else(|e| panic!("{when}: retrieve {i} after the fault cleared: {e}"));
        match got {
            Some(bytes) => {
                assert_ne!(want, Some(false), "{when}: entry {i} should be gone");
                match testing::decode_record::<Val>(&bytes) {
                    Decoded::Value(v, _) => assert_eq!(v, value(i), "{when}: entry {i} wrong"),
                    other => panic!("{when}: entry {i} is {other:?}"),
                }
            }
            None => assert_ne!(want, Some(true), "{when}: entry {i} lost"),
        }
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{when}: {report}");
    let stats = store.stats().unwrap();
    assert_eq!(
        stats.entries,
        store.entries().unwrap().len() as u64,
        "{when}"
    );
}

fn assert_typed(e: &ckpt::Error, panics: &mut u64) {
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Storage | ErrorKind::Corrupted | ErrorKind::Closed
        ),
        "unexpected error kind: {e:?}"
    );
    if e.to_string().contains("panicked") {
        *panics += 1;
    }
}

/// Runs the workload with `op` failing after `n` operations of its kind; returns how many
/// engine panics were contained.
fn scenario(op: FaultOp, n: u64) -> (u64, u64) {
    let mem = MemoryBackend::new();
    let faults = Faults::new();
    let store = open(&mem, &faults);
    let mut expect = Expect::new();
    for i in 0..10 {
        save(&store, i).unwrap();
        expect.insert(i, Some(true));
    }
    store.flush().unwrap();
    let mut panics = 0;

    faults.fail_after(op, n);
    let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Ignore);
    for j in 0..6u64 {
        let i = 100 + j;
        match save(&store, i) {
            Ok(()) => expect.insert(i, Some(true)),
            Err(e) => {
                assert_typed(&e, &mut panics);
                expect.insert(i, None)
            }
        };
        // A committed entry reads back right, or the read fails with a typed error.
        match store.retrieve(&id(j)) {
            Ok(Some(bytes)) => {
                assert_eq!(
                    testing::decode_record::<Val>(&bytes),
                    Decoded::Value(value(j), j * 1_000_000)
                );
            }
            Ok(None) => panic!("entry {j} missing during the fault"),
            Err(e) => assert_typed(&e, &mut panics),
        }
        if j % 2 == 1 {
            match store.remove(&id(j)) {
                Ok(was) => {
                    assert!(was);
                    expect.insert(j, Some(false));
                }
                Err(e) => {
                    assert_typed(&e, &mut panics);
                    expect.insert(j, None);
                }
            }
        }
        // Under OnError::Ignore the decorator computes and returns whatever the store does.
        assert_eq!(deco.call(j, |x| x + 1).unwrap(), j + 1);
        if let Err(e) = store.flush() {
            assert_typed(&e, &mut panics);
        }
        if j == 3 {
            if let Err(e) = store.verify() {
                assert_typed(&e, &mut panics);
            }
            if let Err(e) = store.stats() {
                assert_typed(&e, &mut panics);
            }
        }
    }
    let raise = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    if let Err(e) = raise.call(999u64, |x| x) {
        assert_typed(&e, &mut panics);
    }

    // The fault clears: the same handle works again, with everything committed before.
    let injected = faults.injected();
    faults.clear();
    let when = format!("{op:?} fault after {n}");
    check(&store, &expect, &when);
    save(&store, 500).unwrap();
    expect.insert(500, Some(true));
    drop((deco, raise));
    store.close().unwrap();

    // And so does a new handle on the same bytes.
    let store = open(&mem, &faults);
    check(&store, &expect, &format!("{when}, reopened"));
    (panics, injected)
}

/// How many `op`s the workload performs with no fault.
fn ops_in_workload(op: FaultOp) -> u64 {
    let counted = Faults::new();
    let mem = MemoryBackend::new();
    let store = open(&mem, &counted);
    for i in 0..10 {
        save(&store, i).unwrap();
    }
    store.flush().unwrap();
    let start = counted.count(op);
    let deco = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone());
    for j in 0..6u64 {
        save(&store, 100 + j).unwrap();
        store.retrieve(&id(j)).unwrap();
        if j % 2 == 1 {
            store.remove(&id(j)).unwrap();
        }
        deco.call(j, |x| x + 1).unwrap();
        store.flush().unwrap();
        if j == 3 {
            store.verify().unwrap();
            store.stats().unwrap();
        }
    }
    counted.count(op) - start
}

#[test]
fn io_faults_give_typed_errors_and_the_store_recovers() {
    let stride: u64 = std::env::var("CKPT_FAULT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut scenarios = 0;
    let mut injected = 0;
    let mut panics = 0;
    for op in [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::SetLen,
        FaultOp::Read,
    ] {
        let total = ops_in_workload(op);
        // Every fault point for the rarer operations; about 40 spread points otherwise.
        let step = if stride > 0 {
            stride
        } else {
            (total / 40).max(1)
        };
        let mut n = 0;
        while n <= total {
            let (p, i) = scenario(op, n);
            panics += p;
            injected += i;
            scenarios += 1;
            n += step;
        }
        eprintln!("{op:?}: {total} operations in the workload, fault points every {step}");
    }
    eprintln!(
        "{scenarios} fault scenarios run, {injected} faults injected, {panics} engine panics contained"
    );
}

/// The reopen after a failure, on a real file: the broken handle releases the file's lock before
/// the new one takes it, while other threads keep reading and saving.
#[test]
fn a_broken_handle_on_a_file_reopens_under_load() {
    let dir = common::TempDir::new("reopen");
    let store = Store::open(dir.join("checkpoints.redb")).unwrap();
    for i in 0..20 {
        save(&store, i).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = n % 20;
                    // A read racing a reopen may fail with a typed error, never a wrong value.
                    match store.retrieve(&id(i)) {
                        Ok(Some(bytes)) => assert_eq!(
                            testing::decode_record::<Val>(&bytes),
                            Decoded::Value(value(i), i * 1_000_000)
                        ),
                        Ok(None) => panic!("entry {i} missing"),
                        Err(e) => assert_typed(&e, &mut 0),
                    }
                    if n.is_multiple_of(10) {
                        let _ = save(&store, 1000 + t * 100_000 + n);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for _ in 0..20 {
        testing::break_engine(&store);
        // The next operation reopens; the file's lock must have been released first.
        let mut ok = false;
        for _ in 0..100 {
            if store.retrieve(&id(3)).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(ok, "the store did not come back after a reopen");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(reads > 0);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// The default open ([`OpenCheck::Auto`]) trusts a cleanly closed file: a value damaged on disk
/// while it was closed is found when it is read (its record's checksum: a miss), not at the
/// open. Once a failure breaks the handle, the store reopens the file with the full check,
/// which finds the damaged page and repairs (rolls back) or refuses the file, where `Trust`
/// reopens it as it is. `Full` finds it at the open.
#[test]
fn the_default_open_trusts_a_clean_file_and_checks_it_after_a_failure() {
    use ckpt::OpenCheck;
    let dir = common::TempDir::new("open-check");
    let built = dir.join("built.redb");
    let value = |i: u64| -> Val { (i, format!("value-{i:05}|").repeat(60).into_bytes()) };
    {
        let store = Store::open(&built).unwrap();
        let f = function();
        let rows: Vec<(CheckpointId, Vec<u8>)> = (0..2_000)
            .map(|i| {
                (
                    id(i),
                    testing::encode_record(&value(i), Duration::ZERO).unwrap(),
                )
            })
            .collect();
        let entries: Vec<_> = rows
            .iter()
            .map(|(id, bytes)| (*id, testing::entry(&f, bytes, Duration::ZERO)))
            .collect();
        store.save_many(&entries).unwrap();
        store.close().unwrap();
    }
    // A byte of entry 1500's value flipped on disk.
    let mut image = std::fs::read(&built).unwrap();
    let at = image
        .windows(12)
        .position(|w| w == b"value-01500|")
        .expect("the value is in the file");
    image[at + 3] ^= 0x20;
    let open_with = |name: &str, check: Option<OpenCheck>| {
        let path = dir.join(name);
        std::fs::write(&path, &image).unwrap();
        let mut builder = Store::builder();
        if let Some(check) = check {
            builder = builder.open_check(check);
        }
        builder.open(&path)
    };
    let holds = |store: &Store, i: u64| -> Option<bool> {
        match store.retrieve(&id(i)) {
            Ok(Some(bytes)) => Some(matches!(
                testing::decode_record::<Val>(&bytes),
                Decoded::Value(v, _) if v == value(i)
            )),
            Ok(None) => Some(false),
            Err(_) => None,
        }
    };
    assert_eq!(OpenCheck::default(), OpenCheck::Auto);

    // Default: opens; the damaged value is never returned; the others are.
    let store = open_with("auto.redb", None).expect("a clean file opens without a check");
    assert_eq!(holds(&store, 5), Some(true));
    assert_eq!(holds(&store, 1500), Some(false));
    // After a failure: the reopen checks every page, finds the damage, and the file is rolled
    // back to a sound commit or refused: entry 5, committed with the damaged page, is gone.
    testing::break_engine(&store);
    assert_ne!(
        holds(&store, 5),
        Some(true),
        "the reopen did not check the file"
    );
    drop(store);

    // Trust: the reopen does not check.
    let store = open_with("trust.redb", Some(OpenCheck::Trust)).unwrap();
    testing::break_engine(&store);
    assert_eq!(holds(&store, 5), Some(true));
    assert_eq!(holds(&store, 1500), Some(false));
    drop(store);

    // Full: the open finds it.
    match open_with("full.redb", Some(OpenCheck::Full)) {
        Err(e) => assert_eq!(*e.kind(), ckpt::OpenErrorKind::Corrupted, "{e}"),
        Ok(store) => assert_ne!(holds(&store, 5), Some(true)),
    }
}
