//! Large values through the remote tier (feature `remote`): published as multipart uploads fed
//! from the local file, fetched as streams into the local file's chunks, checked as they are
//! read, and never held in memory twice (a 256 MiB value, measured in child processes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Remote, RemoteMode, Store};
use common::TempDir;
use serde_bytes::ByteBuf;

/// Parts of 64 KiB: a record over 128 KiB is published in parts and fetched as a stream.
const PART: usize = 64 << 10;

fn remote(url: &str) -> Remote {
    Remote::builder(url).part_size(PART).open().unwrap()
}

fn store(path: &Path, remote: &Remote) -> Store {
    Store::builder()
        .remote(remote.clone(), RemoteMode::ReadWrite)
        .open(path)
        .unwrap()
}

fn file_url(folder: &Path) -> String {
    format!("file://{}", folder.display())
}

/// The result objects in a `file://` remote's folder.
fn objects(folder: &Path) -> Vec<PathBuf> {
    let dir = folder.join("ckpt-v1").join("r");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('#'));
    out.sort();
    out
}

/// About 3.2 MB, different for each `x`.
fn big_value(x: u64) -> Vec<u64> {
    (0..400_000u64).map(|i| i.wrapping_mul(x + 7) ^ x).collect()
}

/// `big_value` through `store`, counting the computations in `runs`.
fn big(store: &Store, x: u64, runs: &AtomicUsize) -> Vec<u64> {
    DecoratorCheckpoint::new(
        Function::new("remote", "big"),
        AutoIdentifier,
        store.clone(),
    )
    .call(x, |x| {
        runs.fetch_add(1, Ordering::SeqCst);
        big_value(x)
    })
    .unwrap()
}

#[test]
fn a_large_value_is_published_in_parts_and_fetched_as_a_stream() {
    let dir = TempDir::new("remote-large-stream");
    let folder = dir.join("team");
    let runs = AtomicUsize::new(0);
    let up = {
        let a = store(&dir.join("a.redb"), &remote(&file_url(&folder)));
        for x in 0..3 {
            assert_eq!(big(&a, x, &runs), big_value(x));
        }
        a.flush().unwrap();
        a.stats().unwrap().remote.unwrap()
    };
    assert_eq!((up.publishes, up.publish_failures), (3, 0));
    let sizes: Vec<u64> = objects(&folder)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert!(
        sizes.iter().all(|&s| s > 4 * PART as u64),
        "each object is several parts long: {sizes:?}"
    );
    let sizes: u64 = sizes.iter().sum();
    assert_eq!(
        up.bytes_up, sizes,
        "every byte of the three objects went up"
    );

    let b = store(&dir.join("b.redb"), &remote(&file_url(&folder)));
    for x in 0..3 {
        assert_eq!(big(&b, x, &runs), big_value(x), "never a wrong value");
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the second store computed nothing"
    );
    let down = b.stats().unwrap().remote.unwrap();
    assert_eq!((down.hits, down.backfills, down.corrupt), (3, 3, 0));
    assert_eq!(down.bytes_down, sizes);
    // Backfilled: the next calls are local hits, and the records are the publisher's bytes.
    for x in 0..3 {
        assert_eq!(big(&b, x, &runs), big_value(x));
    }
    assert_eq!(b.stats().unwrap().remote.unwrap().fetches, 3);
    let a = Store::open(dir.join("a.redb")).unwrap();
    for e in a.entries().unwrap() {
        assert_eq!(a.read_record(&e.id).unwrap(), b.read_record(&e.id).unwrap());
    }
}

#[test]
fn closing_the_store_publishes_its_large_values_first() {
    let dir = TempDir::new("remote-large-close");
    let folder = dir.join("team");
    let runs = AtomicUsize::new(0);
    {
        let a = store(&dir.join("a.redb"), &remote(&file_url(&folder)));
        big(&a, 1, &runs);
        // No flush: dropping the store waits for the background publish, which reads the
        // record from the file as it uploads it.
    }
    assert_eq!(objects(&folder).len(), 1);
    let b = store(&dir.join("b.redb"), &remote(&file_url(&folder)));
    assert_eq!(big(&b, 1, &runs), big_value(1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

fn damaged_large_objects_are_recomputed_counted_and_replaced(
    label: &str,
    damage: impl Fn(&mut Vec<u8>),
) {
    let dir = TempDir::new(label);
    let folder = dir.join("team");
    let runs = AtomicUsize::new(0);
    {
        let a = store(&dir.join("a.redb"), &remote(&file_url(&folder)));
        for x in 0..3 {
            big(&a, x, &runs);
        }
    }
    let mut damaged = Vec::new();
    for path in objects(&folder) {
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        damaged.push(bytes);
    }
    {
        let b = store(&dir.join("b.redb"), &remote(&file_url(&folder)));
        for x in 0..3 {
            assert_eq!(big(&b, x, &runs), big_value(x), "never a wrong value");
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            6,
            "every damaged object recomputed"
        );
        b.flush().unwrap();
        let remote = b.stats().unwrap().remote.unwrap();
        assert_eq!(
            (
                remote.corrupt,
                remote.hits,
                remote.backfills,
                remote.replaced
            ),
            (3, 0, 0, 3)
        );
        // Nothing of a damaged object was kept: each entry is the one computed here.
        assert_eq!(b.entries().unwrap().len(), 3);
    }
    let replaced: Vec<Vec<u8>> = objects(&folder)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(replaced.len(), 3);
    for (old, new) in damaged.iter().zip(&replaced) {
        assert_ne!(old, new, "the object was replaced");
    }
    let c = store(&dir.join("c.redb"), &remote(&file_url(&folder)));
    for x in 0..3 {
        assert_eq!(big(&c, x, &runs), big_value(x));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6, "served by the replacements");
    assert_eq!(c.stats().unwrap().remote.unwrap().hits, 3);
}

#[test]
fn a_large_object_damaged_in_its_middle_is_recomputed_and_replaced() {
    damaged_large_objects_are_recomputed_counted_and_replaced("remote-large-flip", |b| {
        let middle = b.len() / 2;
        b[middle] ^= 0x20;
    });
}

#[test]
fn a_truncated_large_object_is_recomputed_and_replaced() {
    damaged_large_objects_are_recomputed_counted_and_replaced("remote-large-cut", |b| {
        b.truncate(b.len() - 100_000);
    });
}

#[test]
fn a_large_object_longer_than_its_header_says_is_refused() {
    damaged_large_objects_are_recomputed_counted_and_replaced("remote-large-long", |b| {
        b.extend_from_slice(&[0u8; 4096]);
    });
}

const BIG_VAR: &str = "CKPT_TEST_REMOTE_BIG";
const PEAK_LINE: &str = "peak-bytes-over-baseline ";

/// The process's resident set now and at its peak, bytes (Linux).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn huge(store: &Store, len: usize, runs: &AtomicUsize) -> ByteBuf {
    DecoratorCheckpoint::new(
        Function::new("remote", "huge"),
        AutoIdentifier,
        store.clone(),
    )
    .call(len as u64, |len| {
        runs.fetch_add(1, Ordering::SeqCst);
        let mut v = vec![0u8; len as usize];
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i as u64).wrapping_mul(0x9e37_79b9) as u8 ^ (i >> 20) as u8;
        }
        ByteBuf::from(v)
    })
    .unwrap()
}

/// One side of the 256 MiB test, in a process of its own (its peak memory is its own):
/// `publish` computes the value and publishes it; `fetch` gets it from the remote.
#[test]
fn child_huge_value() {
    let Some(spec) = std::env::var_os(BIG_VAR) else {
        return;
    };
    let spec = spec.into_string().unwrap();
    let mut fields = spec.split('|');
    let (role, len, local, url) = (
        fields.next().unwrap(),
        fields.next().unwrap().parse::<usize>().unwrap(),
        fields.next().unwrap(),
        fields.next().unwrap(),
    );
    // The part size S3 takes, as a team would use it.
    let remote = Remote::builder(url).part_size(8 << 20).open().unwrap();
    let (baseline, _) = rss();
    let runs = AtomicUsize::new(0);
    let s = store(Path::new(local), &remote);
    let value = huge(&s, len, &runs);
    assert_eq!(value.len(), len);
    let sum = value
        .iter()
        .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
    s.flush().unwrap();
    let stats = s.stats().unwrap().remote.unwrap();
    match role {
        "publish" => assert_eq!((runs.load(Ordering::SeqCst), stats.publishes), (1, 1)),
        _ => assert_eq!((runs.load(Ordering::SeqCst), stats.hits), (0, 1)),
    }
    let (_, peak) = rss();
    drop(value);
    drop(s);
    println!("{PEAK_LINE}{} {sum}", peak.saturating_sub(baseline));
}

fn run_child(spec: &str) -> (u64, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_huge_value",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BIG_VAR, spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {spec} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find(PEAK_LINE).map(|at| &l[at + PEAK_LINE.len()..]))
        .expect("the child's peak");
    let (peak, sum) = line.split_once(' ').unwrap();
    (peak.parse().unwrap(), sum.trim().parse().unwrap())
}

/// A 256 MiB value (`CKPT_TEST_REMOTE_BIG_MIB` changes it) computed on one machine and served
/// to another through a shared folder: neither process's memory peaks past 2.2 times the
/// value (the value itself is one of them).
#[test]
fn a_256_mib_value_goes_through_the_remote_in_bounded_memory() {
    let mib: usize = std::env::var("CKPT_TEST_REMOTE_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let len = mib << 20;
    let dir = TempDir::new("remote-huge");
    let url = file_url(&dir.join("team"));
    let a = dir.join("a.redb");
    let b = dir.join("b.redb");
    let (up, sum_a) = run_child(&format!("publish|{len}|{}|{url}", a.display()));
    let (down, sum_b) = run_child(&format!("fetch|{len}|{}|{url}", b.display()));
    assert_eq!(sum_a, sum_b, "the value came through whole");
    let limit = len as f64 * 2.2;
    eprintln!(
        "{mib} MiB value: peak memory publishing {:.2}x, fetching {:.2}x the value",
        up as f64 / len as f64,
        down as f64 / len as f64
    );
    assert!(
        (up as f64) <= limit,
        "publishing peaked at {up} bytes over its baseline"
    );
    assert!(
        (down as f64) <= limit,
        "fetching peaked at {down} bytes over its baseline"
    );
}
