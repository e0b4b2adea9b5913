//! The remote tier (feature `remote`) on real object stores: `memory://` and `file://` here
//! (two stores with their own files, one remote), an S3 server in `remote_s3.rs`.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ckpt::remote::{RemoteCheck, RemoteErrorKind};
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, PublishMode, Remote, RemoteMode, Store};
use common::TempDir;

fn store(path: &Path, remote: &Remote, mode: RemoteMode) -> Store {
    Store::builder()
        .remote(remote.clone(), mode)
        .open(path)
        .unwrap()
}

/// `square` through `store`, counting how many times the body ran in `runs`.
fn square(store: &Store, x: u64, runs: &AtomicUsize) -> u64 {
    let d = DecoratorCheckpoint::new(
        Function::new("remote", "square"),
        AutoIdentifier,
        store.clone(),
    );
    d.call(x, |x| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * x
    })
    .unwrap()
}

/// The result objects in a `file://` remote's folder.
fn objects(folder: &Path) -> Vec<std::path::PathBuf> {
    let dir = folder.join("ckpt-v1").join("r");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('#'));
    out.sort();
    out
}

fn file_url(folder: &Path) -> String {
    format!("file://{}", folder.display())
}

#[test]
fn a_second_store_serves_every_call_from_the_remote_and_computes_nothing() {
    let dir = TempDir::new("remote-two");
    let team = Remote::open("memory://").unwrap();
    let (runs_a, runs_b) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    for x in 0..20 {
        assert_eq!(square(&a, x, &runs_a), x * x);
    }
    a.flush().unwrap();
    assert_eq!(runs_a.load(Ordering::SeqCst), 20);
    assert_eq!(a.stats().unwrap().remote.unwrap().publishes, 20);

    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    for x in 0..20 {
        assert_eq!(square(&b, x, &runs_b), x * x);
    }
    assert_eq!(runs_b.load(Ordering::SeqCst), 0, "b computed nothing");
    let remote = b.stats().unwrap().remote.unwrap();
    assert_eq!((remote.hits, remote.backfills, remote.misses), (20, 20, 0));
    assert!(remote.bytes_down > 0);
    // The backfills are local saves: the next calls are local hits, the remote is not asked.
    for x in 0..20 {
        assert_eq!(square(&b, x, &runs_b), x * x);
    }
    b.flush().unwrap();
    let stats = b.stats().unwrap();
    assert_eq!(stats.remote.unwrap().fetches, 20);
    assert_eq!(
        (stats.entries, stats.calls.hits, stats.calls.misses),
        (20, 40, 0)
    );
    // Same record bytes, same metadata as the store that computed them.
    let f = Function::new("remote", "square");
    let (fa, fb) = (
        a.function_stats(&f).unwrap().unwrap(),
        b.function_stats(&f).unwrap().unwrap(),
    );
    assert_eq!((fb.entries, fb.stored_bytes), (fa.entries, fa.stored_bytes));
    assert_eq!(fb.value_type, fa.value_type);
    for e in a.entries().unwrap() {
        assert_eq!(a.read_record(&e.id).unwrap(), b.read_record(&e.id).unwrap());
        let eb = b.entry(&e.id).unwrap().unwrap();
        assert_eq!(
            (eb.size, eb.compute_time, eb.code_version),
            (e.size, e.compute_time, e.code_version)
        );
    }
}

#[test]
fn two_folders_opened_apart_share_through_a_shared_folder() {
    let dir = TempDir::new("remote-file");
    let folder = dir.join("team");
    let runs = AtomicUsize::new(0);
    {
        let a = store(
            &dir.join("a.redb"),
            &Remote::open(&file_url(&folder)).unwrap(),
            RemoteMode::ReadWrite,
        );
        for x in 0..10 {
            square(&a, x, &runs);
        }
        // Dropping the store waits for its publishes.
    }
    assert_eq!(objects(&folder).len(), 10);
    let b = store(
        &dir.join("b.redb"),
        &Remote::open(&file_url(&folder)).unwrap(),
        RemoteMode::ReadWrite,
    );
    for x in 0..10 {
        assert_eq!(square(&b, x, &runs), x * x);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        10,
        "the second store computed nothing"
    );
    b.flush().unwrap();
    let remote = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (remote.hits, remote.already_present, remote.publishes),
        (10, 0, 0)
    );
}

/// Damages the record part of every object in `folder` with `damage`.
fn damage_objects(folder: &Path, damage: impl Fn(&mut Vec<u8>)) {
    for path in objects(folder) {
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
    }
}

fn damaged_objects_are_recomputed_counted_and_replaced(label: &str, damage: impl Fn(&mut Vec<u8>)) {
    let dir = TempDir::new(label);
    let folder = dir.join("team");
    let url = file_url(&folder);
    let runs = AtomicUsize::new(0);
    {
        let a = store(
            &dir.join("a.redb"),
            &Remote::open(&url).unwrap(),
            RemoteMode::ReadWrite,
        );
        for x in 0..5 {
            square(&a, x, &runs);
        }
    }
    damage_objects(&folder, damage);
    let damaged: Vec<Vec<u8>> = objects(&folder)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    {
        let b = store(
            &dir.join("b.redb"),
            &Remote::open(&url).unwrap(),
            RemoteMode::ReadWrite,
        );
        for x in 0..5 {
            assert_eq!(square(&b, x, &runs), x * x, "never a wrong value");
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            10,
            "every damaged object recomputed"
        );
        b.flush().unwrap();
        let remote = b.stats().unwrap().remote.unwrap();
        assert_eq!((remote.corrupt, remote.hits, remote.replaced), (5, 0, 5));
    }
    let replaced: Vec<Vec<u8>> = objects(&folder)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(replaced.len(), 5);
    for (old, new) in damaged.iter().zip(&replaced) {
        assert_ne!(old, new, "the object was replaced");
    }
    // A third store is served by the replacements.
    let c = store(
        &dir.join("c.redb"),
        &Remote::open(&url).unwrap(),
        RemoteMode::ReadWrite,
    );
    for x in 0..5 {
        assert_eq!(square(&c, x, &runs), x * x);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 10);
    assert_eq!(c.stats().unwrap().remote.unwrap().hits, 5);
}

#[test]
fn a_corrupted_object_is_recomputed_counted_and_replaced() {
    damaged_objects_are_recomputed_counted_and_replaced("remote-corrupt", |b| {
        let last = b.len() - 1;
        b[last] ^= 0x01;
    });
}

#[test]
fn a_truncated_object_is_recomputed_counted_and_replaced() {
    damaged_objects_are_recomputed_counted_and_replaced("remote-trunc", |b| {
        b.truncate(b.len() - 3);
    });
}

#[test]
fn a_damaged_header_is_a_miss() {
    damaged_objects_are_recomputed_counted_and_replaced("remote-header", |b| b[20] ^= 0x80);
}

#[test]
fn read_only_mode_reads_the_remote_and_never_writes_it() {
    let dir = TempDir::new("remote-ro");
    let folder = dir.join("team");
    let url = file_url(&folder);
    let runs = AtomicUsize::new(0);
    {
        let a = store(
            &dir.join("a.redb"),
            &Remote::open(&url).unwrap(),
            RemoteMode::ReadWrite,
        );
        for x in 0..5 {
            square(&a, x, &runs);
        }
    }
    let before = objects(&folder);
    {
        let ci = store(
            &dir.join("ci.redb"),
            &Remote::open(&url).unwrap(),
            RemoteMode::ReadOnly,
        );
        for x in 0..10 {
            assert_eq!(square(&ci, x, &runs), x * x);
        }
        ci.flush().unwrap();
        let remote = ci.stats().unwrap().remote.unwrap();
        assert_eq!((remote.hits, remote.misses, remote.publishes), (5, 5, 0));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        10,
        "5 computed by a, 5 new ones by ci"
    );
    assert_eq!(
        objects(&folder),
        before,
        "the remote's objects are unchanged"
    );
}

#[test]
fn off_mode_never_asks() {
    let dir = TempDir::new("remote-off");
    let team = Remote::open("memory://").unwrap();
    let runs = AtomicUsize::new(0);
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    square(&a, 3, &runs);
    a.flush().unwrap();
    let b = store(&dir.join("b.redb"), &team, RemoteMode::Off);
    square(&b, 3, &runs);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(b.stats().unwrap().remote.unwrap().fetches, 0);
}

#[test]
fn sync_publishing_is_done_when_the_call_returns() {
    let dir = TempDir::new("remote-sync");
    let folder = dir.join("team");
    let a = Store::builder()
        .remote(
            Remote::open(&file_url(&folder)).unwrap(),
            RemoteMode::ReadWrite,
        )
        .publish(PublishMode::Sync)
        .open(dir.join("a.redb"))
        .unwrap();
    let runs = AtomicUsize::new(0);
    square(&a, 7, &runs);
    assert_eq!(
        objects(&folder).len(),
        1,
        "published before the call returned"
    );
}

#[test]
fn a_large_value_goes_through_the_remote() {
    let dir = TempDir::new("remote-large");
    let team = Remote::open("memory://").unwrap();
    let big: Vec<u64> = (0..300_000).collect(); // 2.4 MB: stored in chunks locally
    let f = |s: &Store| {
        DecoratorCheckpoint::new(Function::new("remote", "big"), AutoIdentifier, s.clone())
    };
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    assert_eq!(f(&a).call(1u8, |_| big.clone()).unwrap(), big);
    a.flush().unwrap();
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    let got: Vec<u64> = f(&b)
        .call(1u8, |_| unreachable!("served by the remote"))
        .unwrap();
    assert_eq!(got, big);
    let id = f(&b).identify(&1u8).unwrap();
    assert_eq!(a.read_record(&id).unwrap(), b.read_record(&id).unwrap());
}

/// `half_mib` of `seed`: 512 KiB of bytes, a value whose backfill is saved after its call.
fn half_mib(store: &Store, seed: u8, runs: &AtomicUsize) -> Vec<u8> {
    let d = DecoratorCheckpoint::new(
        Function::new("remote", "half_mib"),
        AutoIdentifier,
        store.clone(),
    );
    d.call(seed, |seed| {
        runs.fetch_add(1, Ordering::SeqCst);
        (0..512 * 1024).map(|i| (i as u8) ^ seed).collect()
    })
    .unwrap()
}

fn half_mib_id(seed: u8) -> ckpt::CheckpointId {
    AutoIdentifier
        .id_of(&Function::new("remote", "half_mib"), &seed)
        .unwrap()
}

/// A remote that has `half_mib` of 0, 1 and 2, published by a store in `dir`.
fn half_mibs_published(dir: &TempDir) -> (Remote, Store) {
    let team = Remote::open("memory://").unwrap();
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    for seed in 0..3 {
        half_mib(&a, seed, &runs);
    }
    a.flush().unwrap();
    (team, a)
}

/// A large remote hit returns before its backfill is saved: the record is lent from memory,
/// and the next call is served from there without asking the remote again. The store's
/// background thread then saves it exactly as a synchronous backfill would.
#[test]
fn a_large_remote_hit_is_served_before_its_backfill_is_saved() {
    let dir = TempDir::new("remote-later");
    let (team, a) = half_mibs_published(&dir);
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    ckpt::testing::hold_backfills(&b, true);
    let runs = AtomicUsize::new(0);
    let want = half_mib(&a, 0, &runs);
    for _ in 0..3 {
        assert_eq!(half_mib(&b, 0, &runs), want);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "b computed nothing");
    let remote = b.stats().unwrap().remote.unwrap();
    assert_eq!((remote.fetches, remote.hits, remote.backfills), (1, 1, 0));
    assert!(
        b.entry(&half_mib_id(0)).unwrap().is_none(),
        "saved on the call's thread"
    );

    ckpt::testing::hold_backfills(&b, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.stats().unwrap().remote.unwrap().backfills == 0 {
        assert!(
            Instant::now() < deadline,
            "the background thread saved nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let id = half_mib_id(0);
    assert!(a.read_record(&id).unwrap() == b.read_record(&id).unwrap());
    let (ea, eb) = (
        a.entry(&id).unwrap().unwrap(),
        b.entry(&id).unwrap().unwrap(),
    );
    assert_eq!(
        (eb.size, eb.compute_time, eb.code_version),
        (ea.size, ea.compute_time, ea.code_version)
    );
    assert_eq!(half_mib(&b, 0, &runs), want);
    assert_eq!(b.stats().unwrap().remote.unwrap().fetches, 1);
    // Its entry counts the two hits served from memory, and the one since.
    b.flush().unwrap();
    assert_eq!(b.entry(&id).unwrap().unwrap().hits, 3);
}

/// Backfills still waiting when the store is flushed, closed or dropped are saved first, and a
/// removal finds them (one saved after it would bring the entry back).
#[test]
fn waiting_backfills_are_saved_by_flush_and_drop_and_found_by_removals() {
    let dir = TempDir::new("remote-later-drop");
    let (team, _a) = half_mibs_published(&dir);
    let path = dir.join("b.redb");
    let runs = AtomicUsize::new(0);
    let b = store(&path, &team, RemoteMode::ReadWrite);
    ckpt::testing::hold_backfills(&b, true);
    half_mib(&b, 0, &runs);
    assert!(b.entry(&half_mib_id(0)).unwrap().is_none());
    b.flush().unwrap();
    assert!(
        b.entry(&half_mib_id(0)).unwrap().is_some(),
        "flush saved it"
    );

    half_mib(&b, 1, &runs);
    assert!(b.remove(&half_mib_id(1)).unwrap(), "the removal found it");
    b.flush().unwrap();
    assert!(b.entry(&half_mib_id(1)).unwrap().is_none(), "it came back");

    half_mib(&b, 2, &runs);
    assert!(b.entry(&half_mib_id(2)).unwrap().is_none());
    drop(b);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let reopened = Store::open(&path).unwrap();
    let ids: Vec<_> = reopened
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 2);
    for seed in [0, 2] {
        assert!(ids.contains(&half_mib_id(seed)), "seed {seed} lost at drop");
        half_mib(&reopened, seed, &runs);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// A backfill waiting for an id that a save fills meanwhile leaves that save's entry alone.
#[test]
fn a_waiting_backfill_never_replaces_an_entry_saved_meanwhile() {
    use ckpt::Cache;
    let dir = TempDir::new("remote-later-saved");
    let (team, _a) = half_mibs_published(&dir);
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    ckpt::testing::hold_backfills(&b, true);
    let runs = AtomicUsize::new(0);
    half_mib(&b, 0, &runs);
    let id = half_mib_id(0);
    let f = Function::new("remote", "half_mib");
    let other: Vec<u8> = vec![7; 512 * 1024];
    let record = ckpt::testing::encode_record(&other, Duration::from_millis(3)).unwrap();
    b.save(
        &id,
        &ckpt::testing::entry(&f, &record, Duration::from_millis(3)),
    )
    .unwrap();
    b.flush().unwrap();
    assert!(
        b.read_record(&id).unwrap().unwrap() == record,
        "the backfill replaced the entry saved meanwhile"
    );
    assert_eq!(b.stats().unwrap().remote.unwrap().backfills, 0);
}

/// A local entry past the store's `max_age` is a miss; the fresh remote object served instead
/// replaces it when its backfill is saved (it is no entry "saved meanwhile"), and is counted.
#[test]
fn a_waiting_backfill_replaces_an_expired_entry() {
    use ckpt::Limits;
    use ckpt::store::ManualClock;
    let dir = TempDir::new("remote-later-expired");
    let (team, _a) = half_mibs_published(&dir);
    let now = std::time::SystemTime::now();
    let clock = ManualClock::new(now - Duration::from_secs(2 * 3600));
    let b = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .clock(clock.clone())
        .limits(Limits::new().max_age(Duration::from_secs(3600)))
        .open(dir.join("b.redb"))
        .unwrap();
    // Saved two hours ago by b's clock (computed: the remote was not asked on a rerun).
    let runs = AtomicUsize::new(0);
    let d = DecoratorCheckpoint::new(
        Function::new("remote", "half_mib"),
        AutoIdentifier,
        b.clone(),
    );
    let want = half_mib(&_a, 0, &runs);
    d.rerun(0u8, |_| want.clone()).unwrap();
    b.flush().unwrap();
    let id = half_mib_id(0);
    let old = b.entry(&id).unwrap().unwrap().created;

    clock.advance(Duration::from_secs(2 * 3600 + 60));
    ckpt::testing::hold_backfills(&b, true);
    assert_eq!(half_mib(&b, 0, &runs), want);
    assert_eq!(
        b.stats().unwrap().remote.unwrap().fetches,
        1,
        "the expired entry was served"
    );
    b.flush().unwrap();
    let remote = b.stats().unwrap().remote.unwrap();
    assert_eq!(remote.backfills, 1);
    assert!(
        b.entry(&id).unwrap().unwrap().created > old,
        "the expired entry was kept"
    );
    assert_eq!(half_mib(&b, 0, &runs), want);
    assert_eq!(
        b.stats().unwrap().remote.unwrap().fetches,
        1,
        "asked the remote again"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// `flush` makes the background thread's relaxed commit durable even when it saved no
/// backfill: that commit also wrote the hits buffered since the last one.
#[test]
fn flush_makes_durable_a_backfill_commit_that_saved_nothing() {
    use ckpt::Cache;
    use ckpt::testing::{FaultOp, Faults, FaultyBackend, FileBytes};
    let dir = TempDir::new("remote-later-sync");
    let (team, a) = half_mibs_published(&dir);
    let path = dir.join("b.redb");
    drop(Store::open(&path).unwrap());
    let faults = Faults::new();
    let (f, file) = (faults.clone(), path.clone());
    let b = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .open_backend(&path, move || {
            Ok(FaultyBackend::new(FileBytes::open(&file)?, f.clone()))
        })
        .unwrap();
    ckpt::testing::hold_backfills(&b, true);
    let runs = AtomicUsize::new(0);
    half_mib(&b, 0, &runs);
    // The same id saved meanwhile (durably), then hit: the hit waits in the access log.
    let id = half_mib_id(0);
    let record = a.read_record(&id).unwrap().unwrap();
    let f = Function::new("remote", "half_mib");
    b.save(&id, &ckpt::testing::entry(&f, &record, Duration::ZERO))
        .unwrap();
    half_mib(&b, 0, &runs);
    let syncs = faults.count(FaultOp::Sync);
    b.flush().unwrap();
    assert_eq!(
        b.stats().unwrap().remote.unwrap().backfills,
        0,
        "nothing to save"
    );
    assert!(
        faults.count(FaultOp::Sync) > syncs,
        "flush left a commit volatile"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// `stats` reads the file and the counts not yet written to it together: while backfills
/// land in the background, the counts over the file's life never fall below this process's.
#[test]
fn stats_stay_consistent_while_backfills_land() {
    let dir = TempDir::new("remote-stats-landing");
    let team = Remote::open("memory://").unwrap();
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    for seed in 0..24 {
        half_mib(&a, seed, &runs);
    }
    a.flush().unwrap();
    for round in 0..4 {
        let b = store(
            &dir.join(&format!("b{round}.redb")),
            &team,
            RemoteMode::ReadWrite,
        );
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for seed in 0..24 {
                    half_mib(&b, seed, &runs);
                }
                done.store(true, Ordering::SeqCst);
            });
            while !done.load(Ordering::SeqCst) {
                let stats = b.stats().unwrap();
                let (now, life) = (
                    stats.remote.unwrap(),
                    stats.remote_recorded.unwrap_or_default(),
                );
                assert!(
                    life.hits >= now.hits
                        && life.backfills >= now.backfills
                        && life.fetches >= now.fetches,
                    "the file's life counts {life:?} fell below this process's {now:?}"
                );
            }
        });
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        24,
        "the b stores computed nothing"
    );
}

#[test]
fn bad_locations_are_typed_errors_at_open() {
    for (url, kind) in [
        ("not a url", RemoteErrorKind::InvalidUrl),
        ("ftp://host/x", RemoteErrorKind::UnsupportedScheme),
        // A relative folder (`relative` would be a host) and a bucket left out.
        ("file://relative/dir", RemoteErrorKind::InvalidUrl),
        // Not a folder at the root of the file system, which `file:` and a relative path
        // would name once parsed.
        ("file:ckpt-relative-test-dir", RemoteErrorKind::InvalidUrl),
        // A bare path: the error says how to name a folder.
        ("/tmp/ckpt-no-scheme", RemoteErrorKind::InvalidUrl),
        ("s3://", RemoteErrorKind::InvalidUrl),
    ] {
        let err = Remote::open(url).unwrap_err();
        assert_eq!(err.kind(), kind, "{url}: {err}");
        if url.starts_with('/') {
            assert!(
                err.to_string().contains("file:///tmp/ckpt-no-scheme"),
                "{err}"
            );
        }
        assert!(err.to_string().contains(url), "{err}");
        assert!(err.to_string().chars().next().unwrap().is_lowercase());
        // What `main` prints when it returns the error (its `Debug`) says what is wrong too.
        let debug = format!("{err:?}");
        assert!(debug.contains(&format!("{:?}", err.to_string())), "{debug}");
    }
    assert!(
        !Path::new("/ckpt-relative-test-dir").exists(),
        "no folder made at the root"
    );
    // Meant relative: no advice to name a folder at the root.
    let err = Remote::open("file://./team").unwrap_err();
    assert_eq!(err.kind(), RemoteErrorKind::InvalidUrl);
    assert!(!err.to_string().contains("file:///./team"), "{err}");
    // A shared folder that cannot be made: advice about folders, not AWS.
    let dir = TempDir::new("remote-not-a-folder");
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Remote::open(&file_url(&file.join("team"))).unwrap_err();
    assert_eq!(err.kind(), RemoteErrorKind::BucketNotFound);
    let message = err.to_string();
    assert!(!message.contains("AWS"), "{message}");
    assert!(
        message.contains("folder") && message.contains("a-file"),
        "{message}"
    );
}

/// A loopback port that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn dead_s3(check: RemoteCheck) -> Result<Remote, ckpt::remote::RemoteError> {
    let port = closed_port();
    Remote::builder("s3://bucket/prefix")
        .endpoint(&format!("http://127.0.0.1:{port}"))
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .timeout(Duration::from_millis(500))
        .breaker(2, Duration::from_secs(60))
        .check(check)
        .open()
}

#[test]
fn an_unreachable_server_is_an_error_at_open() {
    let err = dead_s3(RemoteCheck::Probe).unwrap_err();
    assert_eq!(err.kind(), RemoteErrorKind::Unreachable, "{err}");
}

#[test]
fn a_dead_remote_never_fails_a_call_and_the_breaker_stops_asking() {
    let dir = TempDir::new("remote-dead");
    let remote = dead_s3(RemoteCheck::Skip).unwrap();
    let s = store(&dir.store_path(), &remote, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    let started = Instant::now();
    for x in 0..50 {
        assert_eq!(square(&s, x, &runs), x * x);
    }
    for x in 0..50 {
        assert_eq!(square(&s, x, &runs), x * x);
    }
    s.flush().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(runs.load(Ordering::SeqCst), 50);
    let r = s.stats().unwrap().remote.unwrap();
    assert!(remote.is_paused());
    assert!(
        r.errors + r.publish_failures >= 2 && r.skipped >= 40,
        "{r:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[test]
fn calls_from_inside_a_user_runtime_work() {
    let dir = TempDir::new("remote-tokio");
    let team = Remote::open("memory://").unwrap();
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(square(&a, 5, &runs), 25);
        a.flush().unwrap();
        assert_eq!(square(&b, 5, &runs), 25);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_full_publish_queue_drops_the_oldest_and_never_blocks_a_call() {
    let dir = TempDir::new("remote-queue");
    // A server that never answers within the timeout, a breaker that never opens, one slot.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let remote = Remote::builder("s3://bucket/prefix")
        .endpoint(&format!("http://127.0.0.1:{port}"))
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .timeout(Duration::from_millis(300))
        .breaker(1000, Duration::from_secs(1))
        .publish_queue(1)
        .check(RemoteCheck::Skip)
        .open()
        .unwrap();
    let s = Store::builder()
        .remote(remote, RemoteMode::ReadWrite)
        .open(dir.store_path())
        .unwrap();
    let d = DecoratorCheckpoint::new(Function::new("remote", "id"), AutoIdentifier, s.clone());
    // Saves only (no lookups wait on the silent server): `save_all` publishes each.
    let started = Instant::now();
    d.save_all((0..20u64).map(|x| (x, x))).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    s.flush().unwrap();
    let r = s.stats().unwrap().remote.unwrap();
    assert!(r.dropped_publishes >= 15, "{r:?}");
    assert_eq!(r.dropped_publishes + r.publish_failures, 20, "{r:?}");
    drop(silent);
}

/// A fake S3 endpoint on loopback, slow as a distant server is: it answers each PUT only after
/// `put_delay` (keeping the object), and sends a GET's body `piece` bytes at a time with
/// `piece_delay` between pieces. It counts the PUTs and the most requests it held at once, and
/// speaks just enough HTTP/1.1 for object_store's client (keep-alive, `Content-Length` bodies,
/// `ETag` and `Last-Modified` on answers).
struct SlowS3 {
    port: u16,
    puts: std::sync::Arc<AtomicUsize>,
    most_at_once: std::sync::Arc<AtomicUsize>,
    /// Objects by request path (`/bucket/key`).
    objects: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
}

fn slow_s3(put_delay: Duration, piece: usize, piece_delay: Duration) -> SlowS3 {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::{Arc, Mutex};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = SlowS3 {
        port,
        puts: Arc::new(AtomicUsize::new(0)),
        most_at_once: Arc::new(AtomicUsize::new(0)),
        objects: Arc::new(Mutex::new(std::collections::HashMap::new())),
    };
    let (p, m, o) = (
        Arc::clone(&server.puts),
        Arc::clone(&server.most_at_once),
        Arc::clone(&server.objects),
    );
    let now = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let _ = conn.set_nodelay(true);
            let (puts, most, objects, now) = (
                Arc::clone(&p),
                Arc::clone(&m),
                Arc::clone(&o),
                Arc::clone(&now),
            );
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push(line),
                        }
                    }
                    let len = head
                        .iter()
                        .find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let mut words = head[0].split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let path = path.split('?').next().unwrap_or("").to_string();
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    let meta = "ETag: \"e\"\r\nLast-Modified: Wed, 02 Dec 2026 12:00:00 GMT\r\n";
                    let sent = if method == "PUT" {
                        std::thread::sleep(put_delay);
                        objects.lock().unwrap().insert(path, body);
                        puts.fetch_add(1, Ordering::SeqCst);
                        let answer = format!("HTTP/1.1 200 OK\r\n{meta}Content-Length: 0\r\n\r\n");
                        conn.write_all(answer.as_bytes())
                    } else if let Some(object) = objects.lock().unwrap().get(&path).cloned() {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\n{meta}Content-Length: {}\r\n\r\n",
                            object.len()
                        );
                        let mut sent = conn.write_all(answer.as_bytes());
                        if method == "GET" {
                            for part in object.chunks(piece) {
                                std::thread::sleep(piece_delay);
                                sent = sent.and_then(|()| conn.write_all(part));
                            }
                        }
                        sent
                    } else {
                        conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    };
                    now.fetch_sub(1, Ordering::SeqCst);
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
    server
}

/// A value whose record is large enough to be streamed (about 600 KB encoded, parts of 64
/// KiB), published through a shared folder and then served by a slow S3 endpoint: 32 KiB every
/// 50 ms, about 0.9 s for the object. Returns the endpoint (its objects loaded), a remote on it
/// with `timeout`, and the value.
fn trickled(dir: &TempDir, timeout: Duration) -> (SlowS3, Remote, Vec<u64>) {
    let folder = dir.join("team");
    let big: Vec<u64> = (0..200_000).map(|i| i * 7 + 1).collect();
    {
        let shared = Remote::builder(&file_url(&folder))
            .part_size(64 << 10)
            .open()
            .unwrap();
        let a = store(&dir.join("a.redb"), &shared, RemoteMode::ReadWrite);
        big_fn(&a).call(1u8, |_| big.clone()).unwrap();
        a.flush().unwrap();
    }
    let server = slow_s3(Duration::ZERO, 32 << 10, Duration::from_millis(50));
    for object in objects(&folder) {
        let name = object.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&object).unwrap();
        assert!(bytes.len() > 512 << 10, "{} bytes: streamed", bytes.len());
        server
            .objects
            .lock()
            .unwrap()
            .insert(format!("/bucket/ckpt-v1/r/{name}"), bytes);
    }
    let remote = Remote::builder("s3://bucket")
        .endpoint(&format!("http://127.0.0.1:{}", server.port))
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .timeout(timeout)
        .part_size(64 << 10)
        .check(RemoteCheck::Skip)
        .open()
        .unwrap();
    (server, remote, big)
}

fn big_fn(s: &Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(Function::new("remote", "big"), AutoIdentifier, s.clone())
}

#[test]
fn a_large_object_that_arrives_steadily_is_fetched_though_it_takes_longer_than_the_timeout() {
    let dir = TempDir::new("remote-trickle");
    // Each 50 ms piece well within the 500 ms timeout; the whole, about 0.9 s, not.
    let (_server, remote, big) = trickled(&dir, Duration::from_millis(500));
    let b = store(&dir.join("b.redb"), &remote, RemoteMode::ReadWrite);
    let started = Instant::now();
    let got: Vec<u64> = big_fn(&b)
        .with_on_error(ckpt::OnError::Ignore)
        .call(1u8, |_| Vec::new())
        .unwrap();
    let r = b.stats().unwrap().remote.unwrap();
    assert!(
        got == big,
        "computed, not fetched: {r:?} after {:?}",
        started.elapsed()
    );
    assert_eq!((r.hits, r.errors), (1, 0), "{r:?}");
}

#[test]
fn a_large_object_whose_first_bytes_never_come_in_time_costs_its_call_one_timeout() {
    let dir = TempDir::new("remote-stalled-head");
    // Each 50 ms piece later than the 20 ms timeout: the object's header never arrives.
    let (_server, remote, big) = trickled(&dir, Duration::from_millis(20));
    let b = store(&dir.join("b.redb"), &remote, RemoteMode::ReadWrite);
    let got: Vec<u64> = big_fn(&b)
        .with_on_error(ckpt::OnError::Ignore)
        .call(1u8, |_| big.clone())
        .unwrap();
    assert!(got == big);
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.fetches, r.errors, r.hits),
        (1, 1, 0),
        "the call asked once, and did not ask again after the failure: {r:?}"
    );
}

/// A large object trickles in while a local save is made: the save must not wait for it. `fetch`
/// makes the call that fetches it (its backfill's way to the file is the test's).
fn a_large_backfill_lets_a_local_save_through(
    label: &str,
    fetch: impl Fn(&Store) -> Vec<u64> + Sync,
) {
    let dir = TempDir::new(label);
    let (_server, remote, big) = trickled(&dir, Duration::from_secs(5));
    let b = store(&dir.join("b.redb"), &remote, RemoteMode::ReadWrite);
    let small =
        DecoratorCheckpoint::new(Function::new("remote", "small"), AutoIdentifier, b.clone());
    let started = Instant::now();
    let (got, began, saved_in) = std::thread::scope(|scope| {
        let fetching = scope.spawn(|| fetch(&b));
        std::thread::sleep(Duration::from_millis(250));
        // A local save while the object arrives.
        let began = started.elapsed();
        let t = Instant::now();
        small.save_all([(1u64, 1u64)]).unwrap();
        let saved_in = t.elapsed();
        (fetching.join().unwrap(), began, saved_in)
    });
    let total = started.elapsed();
    assert!(got == big, "computed, not fetched");
    assert!(
        saved_in < Duration::from_millis(300),
        "a local save begun at {began:?} waited {saved_in:?}, for a download that took {total:?}"
    );
    assert!(
        began + Duration::from_millis(300) < total,
        "the save ({began:?}) began too late to overlap the download ({total:?})"
    );
    // Kept all the same: the next call is a local hit.
    assert_eq!(b.stats().unwrap().remote.unwrap().backfills, 1);
    let again: Vec<u64> = big_fn(&b).call(1u8, |_| Vec::new()).unwrap();
    assert!(again == big);
    assert_eq!(b.stats().unwrap().remote.unwrap().fetches, 1);
}

#[test]
fn a_large_backfill_does_not_hold_up_local_saves_while_it_downloads() {
    a_large_backfill_lets_a_local_save_through("remote-backfill-lock", |b| {
        big_fn(b).call(1u8, |_| Vec::new()).unwrap()
    });
}

#[test]
fn a_large_backfill_without_a_temporary_file_does_not_hold_up_local_saves_either() {
    // No temporary file can be made beside the store (as in a folder it may not write).
    a_large_backfill_lets_a_local_save_through("remote-backfill-no-spool", |b| {
        ckpt::testing::without_spool(|| big_fn(b).call(1u8, |_| Vec::new()).unwrap())
    });
}

#[test]
fn background_publishes_to_a_slow_server_run_concurrently_up_to_the_limit() {
    let dir = TempDir::new("remote-concurrency");
    for (concurrency, most) in [(4, 4), (1, 1)] {
        let server = slow_s3(Duration::from_millis(200), 1 << 20, Duration::ZERO);
        let remote = Remote::builder("s3://bucket/prefix")
            .endpoint(&format!("http://127.0.0.1:{}", server.port))
            .option("aws_access_key_id", "testing")
            .option("aws_secret_access_key", "testing")
            .check(RemoteCheck::Skip)
            .publish_concurrency(concurrency)
            .open()
            .unwrap();
        let path = dir.path().join(format!("c{concurrency}.redb"));
        let s = store(&path, &remote, RemoteMode::ReadWrite);
        let d = DecoratorCheckpoint::new(Function::new("remote", "id"), AutoIdentifier, s.clone());
        // Saves only (no lookups): `save_all` queues one publish for each.
        d.save_all((0..8u64).map(|x| (x, x))).unwrap();
        s.flush().unwrap();
        let r = s.stats().unwrap().remote.unwrap();
        assert_eq!(r.publishes, 8, "{r:?}");
        assert_eq!(server.puts.load(Ordering::SeqCst), 8);
        let seen = server.most_at_once.load(Ordering::SeqCst);
        if most == 1 {
            assert_eq!(seen, 1, "one publisher, one request at a time");
        } else {
            // Eight jobs queued at once for four publishers.
            assert!((2..=most).contains(&seen), "{seen} requests at once");
        }
    }
}

#[test]
fn a_panicking_warning_hook_on_the_publish_thread_does_not_wedge_flush_or_drop() {
    // Only this test's warnings (they name its bucket) panic; while the hook is set, the other
    // tests' go nowhere.
    ckpt::set_warning_hook(|e| {
        if e.to_string().contains("hook-panics") {
            panic!("the app's warning hook panicked on: {e}");
        }
    });
    let dir = TempDir::new("remote-hook-panics");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = Remote::builder("s3://hook-panics/prefix")
        .endpoint(&format!("http://{}", silent.local_addr().unwrap()))
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .timeout(Duration::from_millis(200))
        .check(RemoteCheck::Skip)
        .open()
        .unwrap();
    let s = store(&dir.store_path(), &remote, RemoteMode::ReadWrite);
    let d = DecoratorCheckpoint::new(Function::new("remote", "id"), AutoIdentifier, s.clone());
    // A save only: its publish fails on the publish thread, whose warning panics.
    d.save_all([(1u64, 1u64)]).unwrap();
    drop(d);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        s.flush().unwrap();
        let failures = s.stats().unwrap().remote.unwrap().publish_failures;
        drop(s);
        let _ = done.send(failures);
    });
    let finished = finished.recv_timeout(Duration::from_secs(20));
    ckpt::reset_warning_hook();
    assert_eq!(finished, Ok(1), "flush and drop still waited after 20 s");
    drop(silent);
}

#[test]
fn a_call_against_a_silent_remote_waits_one_timeout_and_counts_one_error() {
    let dir = TempDir::new("remote-one-timeout");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for (label, dedup) in [
        ("plain", ckpt::Dedup::None),
        (
            "leased",
            ckpt::Dedup::Lease {
                ttl: Duration::from_secs(3),
            },
        ),
    ] {
        let remote = Remote::builder("s3://bucket/prefix")
            .endpoint(&format!("http://{}", silent.local_addr().unwrap()))
            .option("aws_access_key_id", "testing")
            .option("aws_secret_access_key", "testing")
            .timeout(Duration::from_millis(300))
            .breaker(10, Duration::from_secs(30))
            .check(RemoteCheck::Skip)
            .open()
            .unwrap();
        let s = Store::builder()
            .remote(remote, RemoteMode::ReadWrite)
            .dedup(dedup)
            .open(dir.path().join(format!("{label}.redb")))
            .unwrap();
        let runs = AtomicUsize::new(0);
        let started = Instant::now();
        let d = DecoratorCheckpoint::new(Function::new("remote", "sq"), AutoIdentifier, s.clone())
            .with_on_error(ckpt::OnError::Ignore);
        assert_eq!(
            d.call(3u64, |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                x * x
            })
            .unwrap(),
            9
        );
        let took = started.elapsed();
        let r = s.stats().unwrap().remote.unwrap();
        // One lookup timed out: the second look and the lease did not ask again.
        assert_eq!(r.errors, 1, "{label}: {r:?} after {took:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
    drop(silent);
}

#[test]
fn the_public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Remote>();
    check::<ckpt::remote::RemoteError>();
    check::<ckpt::remote::RemoteBuilder>();
    check::<ckpt::stats::RemoteStats>();
}

#[test]
fn a_remote_result_keeps_its_age_for_a_function_with_a_max_age() {
    use ckpt::store::ManualClock;
    let dir = TempDir::new("remote-age");
    let team = Remote::open("memory://").unwrap();
    let runs = AtomicUsize::new(0);
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    assert_eq!(square(&a, 7, &runs), 49);
    a.flush().unwrap();

    // Another machine whose clock reads 50 minutes after the object was written.
    let clock = ManualClock::new(std::time::SystemTime::now() + Duration::from_secs(50 * 60));
    let b = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .clock(clock.clone())
        .open(dir.join("b.redb"))
        .unwrap();
    let hourly = DecoratorCheckpoint::new(Function::new("remote", "square"), AutoIdentifier, b)
        .with_max_age(Duration::from_secs(3600));
    let compute = |x: u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * x
    };
    assert_eq!(hourly.call(7u64, compute).unwrap(), 49);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "50 minutes old: a remote hit"
    );
    // Eleven minutes later the backfilled entry is 61 minutes old, not 11.
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(hourly.call(7u64, compute).unwrap(), 49);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "expired: computed again");
}

#[test]
fn an_async_call_publishes_its_result() {
    let dir = TempDir::new("remote-async");
    let team = Remote::open("memory://").unwrap();
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    let d = DecoratorCheckpoint::new(Function::new("remote", "square"), AutoIdentifier, a.clone());
    let got = futures_executor::block_on(d.call_async(9u64, |x| async move { x * x })).unwrap();
    assert_eq!(got, 81);
    a.flush().unwrap();
    assert_eq!(a.stats().unwrap().remote.unwrap().publishes, 1);
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    assert_eq!(square(&b, 9, &runs), 81);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "served by the remote");
}

/// A backfill commits without waiting for the disk (the remote keeps the record, so a crash
/// would cost one fetch): the calls served from the remote make no fsync. The close makes the
/// backfills durable: the file, reopened without the remote, holds them.
#[test]
fn backfills_do_not_wait_for_the_disk_and_the_close_keeps_them() {
    use ckpt::testing::{FaultOp, Faults, FaultyBackend, FileBytes};
    let dir = TempDir::new("remote-backfill-sync");
    let team = Remote::open("memory://").unwrap();
    let runs = AtomicUsize::new(0);
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    for x in 0..20 {
        square(&a, x, &runs);
    }
    a.flush().unwrap();
    drop(a);

    let path = dir.join("b.redb");
    drop(Store::open(&path).unwrap());
    let faults = Faults::new();
    let (f, file) = (faults.clone(), path.clone());
    let b = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .open_backend(&path, move || {
            Ok(FaultyBackend::new(FileBytes::open(&file)?, f.clone()))
        })
        .unwrap();
    let syncs = faults.count(FaultOp::Sync);
    for x in 0..20 {
        assert_eq!(square(&b, x, &runs), x * x);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 20, "b computed nothing");
    assert_eq!(b.stats().unwrap().remote.unwrap().backfills, 20);
    assert_eq!(
        faults.count(FaultOp::Sync),
        syncs,
        "a backfill waited for the disk"
    );
    b.close().unwrap();

    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.stats().unwrap().entries, 20);
    let none = AtomicUsize::new(0);
    for x in 0..20 {
        assert_eq!(square(&reopened, x, &none), x * x);
    }
    assert_eq!(none.load(Ordering::SeqCst), 0);
}

/// A `memory://` remote holding the number a build of `remote::typed` returned for `3`
/// (published by a store in `dir`), and that function.
fn a_number_published(dir: &TempDir) -> (Remote, Function) {
    let team = Remote::open("memory://").unwrap();
    let f = Function::new("remote", "typed");
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    DecoratorCheckpoint::new(f.clone(), AutoIdentifier, a.clone())
        .call(3u64, |x| x * 2)
        .unwrap();
    a.flush().unwrap();
    (team, f)
}

#[test]
fn an_object_of_another_type_is_recomputed_and_replaced() {
    let dir = TempDir::new("remote-wrong-type");
    // A build whose function returned a number published it...
    let (team, f) = a_number_published(&dir);
    // ... and a build whose same function (same version: the same id) returns text asks.
    let runs = AtomicUsize::new(0);
    let text = |s: &Store| {
        DecoratorCheckpoint::new(f.clone(), AutoIdentifier, s.clone())
            .call(3u64, |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                format!("x = {x}")
            })
            .unwrap()
    };
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    assert_eq!(text(&b), "x = 3", "never a value of another type");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    b.flush().unwrap();
    let rb = b.stats().unwrap().remote.unwrap();
    assert_eq!((rb.hits, rb.wrong_type, rb.replaced), (1, 1, 1));
    assert_eq!(b.stats().unwrap().calls.type_mismatches, 1);
    // The object was replaced: a third store of the new build is served, and computes nothing.
    let c = store(&dir.join("c.redb"), &team, RemoteMode::ReadWrite);
    assert_eq!(text(&c), "x = 3");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let rc = c.stats().unwrap().remote.unwrap();
    assert_eq!((rc.hits, rc.wrong_type), (1, 0));
    assert_eq!(team.objects().unwrap().len(), 1);
}

#[test]
fn an_object_to_replace_that_is_removed_meanwhile_is_created_again() {
    let dir = TempDir::new("remote-replace-gone");
    let (team, f) = a_number_published(&dir);
    // A build returning text finds the number (to replace, on its version), and while it
    // computes, the object is removed (as `ckpt remote gc` would).
    let b = store(&dir.join("b.redb"), &team, RemoteMode::ReadWrite);
    let got = DecoratorCheckpoint::new(f.clone(), AutoIdentifier, b.clone())
        .call(3u64, |x| {
            let objects = team.objects().unwrap();
            assert_eq!(team.remove(&objects).unwrap(), 1);
            format!("x = {x}")
        })
        .unwrap();
    assert_eq!(got, "x = 3");
    b.flush().unwrap();
    let rb = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (rb.wrong_type, rb.publishes, rb.already_present),
        (1, 1, 0),
        "published, not taken for another writer's replacement"
    );
    assert_eq!(
        team.objects().unwrap().len(),
        1,
        "the result is in the remote"
    );
    // A third store of the same build is served by it.
    let c = store(&dir.join("c.redb"), &team, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    let served = DecoratorCheckpoint::new(f, AutoIdentifier, c.clone())
        .call(3u64, |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            format!("x = {x}")
        })
        .unwrap();
    assert_eq!((served.as_str(), runs.load(Ordering::SeqCst)), ("x = 3", 0));
}

#[test]
fn an_object_stamped_in_the_future_is_backfilled_as_saved_now() {
    use ckpt::store::ManualClock;
    let dir = TempDir::new("remote-future");
    let folder = dir.join("team");
    let team = Remote::open(&file_url(&folder)).unwrap();
    let runs = AtomicUsize::new(0);
    let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
    assert_eq!(square(&a, 7, &runs), 49);
    a.flush().unwrap();
    // The server's clock runs a day ahead: the object's write time is tomorrow.
    let now = std::time::SystemTime::now();
    let objects = objects(&folder);
    assert_eq!(objects.len(), 1);
    std::fs::File::options()
        .write(true)
        .open(&objects[0])
        .unwrap()
        .set_modified(now + Duration::from_secs(24 * 3600))
        .unwrap();

    let clock = ManualClock::new(now);
    let b = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .clock(clock.clone())
        .open(dir.join("b.redb"))
        .unwrap();
    let minutely =
        DecoratorCheckpoint::new(Function::new("remote", "square"), AutoIdentifier, b.clone())
            .with_max_age(Duration::from_secs(60));
    let compute = |x: u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * x
    };
    assert_eq!(minutely.call(7u64, compute).unwrap(), 49);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a remote hit");
    let entry = b.entries().unwrap().remove(0);
    assert!(
        entry.created <= now,
        "backfilled as saved {:?} after now",
        entry.created.duration_since(now).unwrap_or_default()
    );
    // Two minutes later the backfilled entry is past the function's max age.
    clock.advance(Duration::from_secs(120));
    assert_eq!(minutely.call(7u64, compute).unwrap(), 49);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "expired: computed again");
}

#[test]
fn push_never_publishes_a_record_damaged_in_the_local_file() {
    let dir = TempDir::new("remote-push-damaged");
    let path = dir.join("local.redb");
    let runs = AtomicUsize::new(0);
    {
        let local = Store::open(&path).unwrap();
        for x in 0..3 {
            square(&local, x, &runs);
        }
    }
    // One record damaged in the file (its last byte: the checksum no longer matches).
    let mut damaged = 0;
    common::tamper_results(&path, |_, bytes| {
        if damaged == 1 {
            return None;
        }
        damaged += 1;
        let mut bytes = bytes.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        Some(bytes)
    });
    let team = Remote::open("memory://").unwrap();
    let s = store(&path, &team, RemoteMode::ReadWrite);
    let report = s.push(&mut |_, _| {}).unwrap();
    assert_eq!(
        (report.published, report.failed),
        (2, 1),
        "the damaged record is not published: {report:?}"
    );
    assert_eq!(team.objects().unwrap().len(), 2);
    assert!(team.objects().unwrap().iter().all(|o| o.is_sound()));
}

#[test]
fn listing_a_remote_takes_the_objects_of_its_results_folder_and_nothing_below_it() {
    let dir = TempDir::new("remote-listing");
    let folder = dir.join("team");
    let team = Remote::open(&file_url(&folder)).unwrap();
    let runs = AtomicUsize::new(0);
    {
        let a = store(&dir.join("a.redb"), &team, RemoteMode::ReadWrite);
        for x in 0..3 {
            square(&a, x, &runs);
        }
    }
    // Something else in the results folder (listed, unreadable) and in a folder below it (not
    // ckpt's: never listed, so never removed by gc).
    let results = folder.join("ckpt-v1").join("r");
    std::fs::write(results.join("stray"), b"not an object").unwrap();
    std::fs::create_dir_all(results.join("below")).unwrap();
    std::fs::write(results.join("below").join("other"), b"someone else's").unwrap();
    let listed = team.objects().unwrap();
    assert_eq!(listed.len(), 4, "{listed:#?}");
    assert_eq!(listed.iter().filter(|o| o.is_sound()).count(), 3);
    assert!(listed.iter().any(|o| o.location.ends_with("/r/stray")));
    assert!(!listed.iter().any(|o| o.location.contains("below")));
}
