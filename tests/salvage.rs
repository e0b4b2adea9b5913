//! Salvage: every entry of a damaged store whose record still checks is copied into a new
//! store, never a wrong value, never a panic, never a hang, and the damaged file is never
//! written.
//!
//! `CKPT_SALVAGE_TRIALS` sets the number of random damages (default 24, a third each of bit
//! flips, truncations and zeroed pages); `CKPT_SALVAGE_TRIALS=1000` is the measurement, which
//! prints the share of entries recovered by kind of damage, beside the share a plain open still
//! serves. `CKPT_SALVAGE_SEED` sets the seed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use ckpt::store::SalvageMethod;
use ckpt::testing::{self, Decoded};
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, ErrorKind, Function, OnError, Store,
};
use common::{Rng, TempDir, within};

type Val = (u64, String, Vec<u32>);

fn value(i: u64) -> Val {
    // 0 to 11 KiB: some records whole, most in chunks (the store's chunks are 1 KiB).
    let len = (i * 389 % 2900) as usize;
    (
        i,
        format!("value-{i}"),
        (0..len as u32)
            .map(|x| x.wrapping_mul(2_654_435_761) ^ i as u32)
            .collect(),
    )
}

fn functions() -> [Function; 2] {
    [
        Function::new("salvage", "f").with_code_hash(1),
        Function::new("salvage", "g").with_version("2"),
    ]
}

/// A store of `n` entries over two functions, with hits and misses counted, closed; returns
/// the expected value of every id.
fn build_store(path: &Path, n: u64) -> BTreeMap<CheckpointId, Val> {
    let store = Store::builder().chunk_size(1024).open(path).unwrap();
    let mut out = BTreeMap::new();
    for (k, f) in functions().into_iter().enumerate() {
        let deco = DecoratorCheckpoint::new(f, AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
        for i in (k as u64..n).step_by(2) {
            deco.call(i, value).unwrap();
            if i % 3 == 0 {
                deco.call(i, value).unwrap(); // a hit
            }
            out.insert(deco.identify(&i).unwrap(), value(i));
        }
    }
    store.close().unwrap();
    out
}

/// Everything a salvage should carry over: entries' metadata and records, and function rows.
fn snapshot(
    store: &Store,
) -> (
    Vec<(ckpt::store::EntryInfo, Vec<u8>)>,
    Vec<ckpt::store::FunctionStats>,
) {
    let entries = store
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| {
            let record = store.read_record(&e.id).unwrap().unwrap();
            (e, record)
        })
        .collect();
    (entries, store.stats().unwrap().functions)
}

/// Every entry of the salvaged store holds exactly the value saved under its id; returns how
/// many there are.
fn check_salvaged(path: &Path, expected: &BTreeMap<CheckpointId, Val>) -> u64 {
    let store = Store::open(path).unwrap();
    let report = store.verify().unwrap();
    assert!(
        report.is_clean(),
        "the salvaged store is not clean: {report}"
    );
    let mut n = 0;
    for e in store.entries().unwrap() {
        let want = expected
            .get(&e.id)
            .unwrap_or_else(|| panic!("salvaged an id that was never saved: {}", e.id));
        // Read without counting a hit: the metadata stays as salvaged.
        let bytes = store.read_record(&e.id).unwrap().expect("a listed entry");
        match testing::decode_record::<Val>(&bytes) {
            Decoded::Value(v, _) => assert_eq!(&v, want, "a wrong value for {}", e.id),
            other => panic!(
                "salvaged a record that does not decode ({}): {:?}",
                e.id,
                matches!(other, Decoded::Corrupt)
            ),
        }
        n += 1;
    }
    n
}

/// The files in a folder other than `keep`: a salvage leaves no temporary file behind.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn a_healthy_store_is_salvaged_whole_with_its_metadata_and_stats() {
    let dir = TempDir::new("salvage-healthy");
    let damaged = dir.join("old.redb");
    let expected = build_store(&damaged, 40);
    let before = std::fs::read(&damaged).unwrap();
    let old = snapshot(&Store::open(&damaged).unwrap());
    let before_open = std::fs::read(&damaged).unwrap();

    let report = Store::salvage(&damaged, dir.join("new.redb")).unwrap();
    assert_eq!(report.method, SalvageMethod::Checked);
    assert_eq!(report.entries_recovered, 40, "{report}");
    assert_eq!(report.entries_lost, 0, "{report}");
    assert_eq!(report.functions_recovered, 2);
    assert_eq!((report.functions_rebuilt, report.metadata_rebuilt), (0, 0));
    assert!(report.stats_recovered && !report.truncated);
    assert_eq!(report.file_bytes, before.len() as u64);
    assert_eq!(report.recovered_share(), 1.0);
    assert_eq!(
        report.record_bytes,
        old.0.iter().map(|(e, _)| e.size).sum::<u64>()
    );
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        before_open,
        "salvage wrote the file"
    );
    let _ = before;

    assert_eq!(check_salvaged(&dir.join("new.redb"), &expected), 40);
    let new = snapshot(&Store::open(dir.join("new.redb")).unwrap());
    assert_eq!(new.0.len(), old.0.len());
    for ((a, ra), (b, rb)) in new.0.iter().zip(&old.0) {
        assert_eq!(a, b, "metadata differs");
        assert!(ra == rb, "the record of {} differs", a.id);
    }
    assert_eq!(new.1, old.1, "function rows (identity, statistics) differ");
    assert!(old.1.iter().any(|f| f.calls.hits > 0 && f.calls.misses > 0));
    assert_eq!(
        leftovers(dir.path(), &["old.redb", "new.redb"]),
        Vec::<String>::new()
    );

    // The salvaged store works as any other: hits, then new saves.
    let store = Store::open(dir.join("new.redb")).unwrap();
    let f = DecoratorCheckpoint::new(functions()[0].clone(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    assert_eq!(
        f.call(0u64, |_| -> Val { panic!("a hit") }).unwrap(),
        value(0)
    );
    f.call(1_000u64, value).unwrap();
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn refusals_are_typed_and_leave_nothing_behind() {
    let dir = TempDir::new("salvage-refusals");
    let damaged = dir.join("old.redb");
    build_store(&damaged, 4);
    // The target exists: refused, and left as it was.
    std::fs::write(dir.join("taken.redb"), b"mine").unwrap();
    let e = Store::salvage(&damaged, dir.join("taken.redb")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read(dir.join("taken.redb")).unwrap(), b"mine");
    // The same file as both.
    let e = Store::salvage(&damaged, &damaged).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // No damaged file, an empty one, a directory.
    let e = Store::salvage(dir.join("missing.redb"), dir.join("a.redb")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    std::fs::write(dir.join("empty.redb"), b"").unwrap();
    let e = Store::salvage(dir.join("empty.redb"), dir.join("a.redb")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = Store::salvage(dir.path(), dir.join("a.redb")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    // Not a redb file at all: nothing the engine can read.
    std::fs::write(dir.join("text.redb"), b"x".repeat(100_000)).unwrap();
    let e = Store::salvage(dir.join("text.redb"), dir.join("a.redb")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
    // A redb file of someone else's.
    {
        let db = redb::Database::create(dir.join("foreign.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("users"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Store::salvage(dir.join("foreign.redb"), dir.join("a.redb")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Open, "{e}");
    assert!(e.to_string().contains("not a ckpt"), "{e}");
    assert_eq!(
        leftovers(
            dir.path(),
            &[
                "old.redb",
                "taken.redb",
                "empty.redb",
                "text.redb",
                "foreign.redb"
            ]
        ),
        Vec::<String>::new()
    );
}

/// Damage to a store file, as a disk or a copy can do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Damage {
    /// 1 to 8 random bits flipped.
    Flips,
    /// The file cut short anywhere.
    Truncation,
    /// 1 to 4 random 4 KiB pages zeroed.
    ZeroedPages,
}

fn damage(image: &[u8], kind: Damage, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = image.to_vec();
    match kind {
        Damage::Flips => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        Damage::Truncation => bytes.truncate(rng.below(bytes.len() as u64) as usize),
        Damage::ZeroedPages => {
            let pages = bytes.len() / 4096;
            for _ in 0..1 + rng.below(4) {
                let p = rng.below(pages as u64) as usize;
                bytes[p * 4096..(p + 1) * 4096].fill(0);
            }
        }
    }
    bytes
}

/// How many of `expected` a plain open of `path` still serves (0 if it refuses the file).
fn served_by_open(path: &Path, expected: &BTreeMap<CheckpointId, Val>) -> u64 {
    let Ok(store) = Store::open(path) else {
        return 0;
    };
    expected
        .iter()
        .filter(|(id, want)| {
            matches!(store.retrieve(id), Ok(Some(b))
                if matches!(testing::decode_record::<Val>(&b), Decoded::Value(ref v, _) if v == *want))
        })
        .count() as u64
}

#[derive(Debug, Default)]
struct Tally {
    trials: u64,
    entries: u64,
    recovered: u64,
    served_by_open: u64,
    refused_by_open: u64,
    salvage_failed: u64,
    checked: u64,
    unchecked: u64,
    complete: u64,
}

/// Random damage, salvaged: never a wrong value, never a panic, never a hang, the damaged file
/// never written, no temporary file left behind.
#[test]
fn random_damage_never_gives_a_wrong_value() {
    let trials: u64 = std::env::var("CKPT_SALVAGE_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut rng = Rng::from_env("CKPT_SALVAGE_SEED", 0x5a1_7a9e);
    let dir = TempDir::new("salvage-damage");
    let original = dir.join("original.redb");
    let expected = build_store(&original, 240);
    let image = std::fs::read(&original).unwrap();
    eprintln!(
        "store image: {} bytes, {} entries",
        image.len(),
        expected.len()
    );
    let kinds = [Damage::Flips, Damage::Truncation, Damage::ZeroedPages];
    let mut tallies: BTreeMap<Damage, Tally> = BTreeMap::new();
    let started = std::time::Instant::now();
    for trial in 0..trials {
        let kind = kinds[(trial % 3) as usize];
        let bytes = damage(&image, kind, &mut rng);
        let damaged = dir.join("damaged.redb");
        let new = dir.join("new.redb");
        let _ = std::fs::remove_file(&new);
        std::fs::write(&damaged, &bytes).unwrap();
        let (d, n) = (damaged.clone(), new.clone());
        let outcome = within(
            120,
            &format!("salvage trial {trial} ({kind:?})"),
            move || Store::salvage(&d, &n),
        );
        assert_eq!(
            std::fs::read(&damaged).unwrap(),
            bytes,
            "trial {trial}: salvage changed the damaged file"
        );
        let tally = tallies.entry(kind).or_default();
        tally.trials += 1;
        tally.entries += expected.len() as u64;
        match outcome {
            Ok(report) => {
                let found = check_salvaged(&new, &expected);
                assert_eq!(found, report.entries_recovered, "trial {trial}: {report}");
                tally.recovered += found;
                tally.complete += u64::from(found == expected.len() as u64);
                match report.method {
                    SalvageMethod::Checked => tally.checked += 1,
                    _ => tally.unchecked += 1,
                }
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::Open),
                    "trial {trial}: {e}"
                );
                assert!(
                    !new.exists(),
                    "trial {trial}: a failed salvage left {new:?}"
                );
                tally.salvage_failed += 1;
                if std::env::var("CKPT_SALVAGE_DEBUG").is_ok() {
                    eprintln!("trial {trial} ({kind:?}, {} bytes): {e}", bytes.len());
                }
            }
        }
        assert_eq!(
            leftovers(dir.path(), &["original.redb", "damaged.redb", "new.redb"]),
            Vec::<String>::new(),
            "trial {trial}"
        );
        // For comparison: what opening the damaged file (a copy: opening repairs) still serves.
        let copy = dir.join("opened.redb");
        std::fs::write(&copy, &bytes).unwrap();
        let exp = expected.clone();
        let c = copy.clone();
        let served = within(120, &format!("open trial {trial}"), move || {
            served_by_open(&c, &exp)
        });
        tally.served_by_open += served;
        tally.refused_by_open += u64::from(Store::open(&copy).is_err());
        let _ = std::fs::remove_file(&copy);
    }
    eprintln!("{trials} damage trials in {:?}", started.elapsed());
    let (mut all_entries, mut all_recovered, mut all_served) = (0, 0, 0);
    for (kind, t) in &tallies {
        eprintln!(
            "{kind:?}: {} trials; salvage recovered {:.1}% of entries ({} of {}; all of them in \
             {} trials; {} read checked, {} unchecked, {} unreadable); a plain open serves \
             {:.1}% (refuses {} files)",
            t.trials,
            100.0 * t.recovered as f64 / t.entries as f64,
            t.recovered,
            t.entries,
            t.complete,
            t.checked,
            t.unchecked,
            t.salvage_failed,
            100.0 * t.served_by_open as f64 / t.entries as f64,
            t.refused_by_open,
        );
        all_entries += t.entries;
        all_recovered += t.recovered;
        all_served += t.served_by_open;
    }
    eprintln!(
        "all: salvage recovered {:.1}% of entries; a plain open serves {:.1}%",
        100.0 * all_recovered as f64 / all_entries as f64,
        100.0 * all_served as f64 / all_entries as f64
    );
}

/// A large record (in chunks) survives damage elsewhere, and one whose chunk is damaged is not
/// copied.
#[test]
fn chunked_records_are_copied_only_whole_and_sound() {
    let dir = TempDir::new("salvage-chunks");
    let damaged = dir.join("old.redb");
    let expected = build_store(&damaged, 20);
    // Damage one chunk of one record, through the engine (the file stays sound for it).
    let mut victim = None;
    common::tamper_chunks(&damaged, |key, bytes| {
        if victim.is_none() && key[16..] == 1u32.to_be_bytes() {
            victim = Some(CheckpointId::from_bytes(key[..16].try_into().unwrap()));
            let mut b = bytes.to_vec();
            b[bytes.len() / 2] ^= 0x40;
            return Some(Some(b));
        }
        None
    });
    let victim = victim.expect("a chunked record");
    let report = Store::salvage(&damaged, dir.join("new.redb")).unwrap();
    assert_eq!(
        (report.entries_recovered, report.entries_lost),
        (19, 1),
        "{report}"
    );
    assert_eq!(check_salvaged(&dir.join("new.redb"), &expected), 19);
    let store = Store::open(dir.join("new.redb")).unwrap();
    assert_eq!(store.retrieve(&victim).unwrap(), None);
    // No chunk of it was left behind either (verify counts orphans).
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn the_command_line_salvages() {
    const BIN: &str = env!("CARGO_BIN_EXE_ckpt");
    let dir = TempDir::new("salvage-cli");
    let damaged = dir.join("old.redb");
    let expected = build_store(&damaged, 12);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("CKPT_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let (old, new) = (damaged.to_str().unwrap(), dir.join("new.redb"));
    let out = run(&["salvage", old, new.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries_recovered"], 12);
    assert_eq!(v["entries_lost"], 0);
    assert_eq!(v["method"], "checked");
    assert_eq!(v["stats_recovered"], true);
    assert_eq!(check_salvaged(&new, &expected), 12);

    // Text, into a folder that does not exist yet.
    let deeper = dir.join("sub").join("new.redb");
    let out = run(&["salvage", old, deeper.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("salvaged 12 entries"), "{text}");

    // The target exists: exit 1, one line.
    let out = run(&["salvage", old, new.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exists"), "{err}");
    // Missing arguments: usage, exit 2.
    assert_eq!(run(&["salvage", old]).status.code(), Some(2));

    // A store that opening refuses says to salvage it first, and salvage recovers the rest.
    let mut bytes = std::fs::read(&damaged).unwrap();
    let needle = b"value-5";
    let spots: Vec<usize> = (0..bytes.len() - needle.len())
        .filter(|&i| &bytes[i..i + needle.len()] == needle)
        .collect();
    assert!(!spots.is_empty());
    for at in spots {
        bytes[at] ^= 0x20;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    // (`--open-check full` checks every page at the open; the default trusts a file closed
    // cleanly. `stats` opens read-only and reads no record.)
    let out = run(&["--store", old, "--open-check", "full", "compact"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`ckpt salvage`"), "{err}");
    let again = dir.join("again.redb");
    let out = run(&["salvage", old, again.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "unchecked", "{v}");
    assert_eq!(
        (v["entries_recovered"].as_u64(), v["entries_lost"].as_u64()),
        (Some(11), Some(1)),
        "{v}"
    );
    assert_eq!(check_salvaged(&again, &expected), 11);
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        bytes,
        "salvage wrote the damaged file"
    );
}
