//! Opening a store that was closed cleanly (issue 12, item 3): ckpt's ways of opening against
//! raw redb's `Database::open`, on a store of 1,000,000 entries or one of about 10 GiB.
//!
//! ```text
//! cargo bench --bench open                  # 1m, 15 rounds
//! cargo bench --bench open -- 1m 3          # 3 rounds
//! cargo bench --bench open -- 10g [ROUNDS] [full]
//! ```
//!
//! Fixtures, built once in `CKPT_BENCH_FIXTURES` (default `target/ckpt-bench-fixtures`) and
//! kept (each written under a temporary name and renamed when complete):
//! * `open-1m.redb`, `open-raw-1m.redb`: 1,000,000 entries of 256 bytes (ckpt's through
//!   `save_all`; raw redb's postcard-encoded under xxh3-128 keys, 100,000 per transaction);
//! * `open-10g.redb`, `open-raw-10g.redb` (only with `10g`; minutes to build, about 20 GiB of
//!   disk for both): 10,240 values of 1 MiB less 4 KiB of xorshift noise (incompressible), so
//!   that raw redb keeps each in one 1 MiB run (a value over 1 MiB would take a 2 MiB run and
//!   double its file). `CKPT_BENCH_OPEN_VALUES=N` builds and uses N values instead
//!   (`open-Nx1m.redb`).
//!
//! Systems: ckpt opened by default (`Store::open`), with each `OpenCheck` listed in
//! [`variants`] (`Full` reads the whole file: at 1m always, at 10g only with `full`), and raw
//! redb (`redb::Database::open`). Each round opens the file with every system in turn (order
//! reversed every other round), timing the open until it returns and, separately, the drop that
//! closes it, so that the next open finds a cleanly closed file. Round 0 warms up; the page
//! cache is warm (not dropped: that needs root). The report gives median ms and the median of
//! the per-round ratios to raw redb. `CKPT_BENCH_ROUNDS` sets the rounds too.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ckpt::{OpenCheck, Store};
use redb::Durability;
use serde_bytes::ByteBuf;

use common::*;

/// Value size of the 10g fixtures: under 1 MiB with room for redb's page header and the key.
const VALUE_10G: usize = (1 << 20) - 4096;
const VALUES_10G: u64 = 10_240;
const ENTRIES_1M: u64 = 1_000_000;
const SIZE_1M: usize = 256;

/// The ways ckpt opens a store, besides the default (`Store::open`): one line per
/// [`OpenCheck`] variant to time. `full`: include the check that reads the whole file.
fn variants(full: bool) -> Vec<(&'static str, OpenCheck)> {
    let mut v = vec![("ckpt OpenCheck::Trust", OpenCheck::Trust)];
    if full {
        v.push(("ckpt OpenCheck::Full", OpenCheck::Full));
    }
    v
}

/// Incompressible bytes: xorshift64 seeded by `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// Builds `path` with `build(tmp)` unless present; `build` writes the file at `tmp`, which is
/// renamed to `path` once it returns (so a present file is complete).
fn fixture(path: &Path, build: impl FnOnce(&Path)) {
    if path.exists() {
        return;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let start = Instant::now();
    build(&tmp);
    std::fs::rename(&tmp, path).expect("rename the fixture into place");
    eprintln!(
        "built {} ({}) in {:.1} s",
        path.display(),
        bytes_label(file_len(path)),
        start.elapsed().as_secs_f64()
    );
}

/// The fixtures for `which` ("1m" or "10g"): (their label, ckpt's file, raw redb's file).
fn fixtures(which: &str) -> (String, PathBuf, PathBuf) {
    let dir = fixture_dir();
    match which {
        "1m" => {
            let (ckpt, raw) = (dir.join("open-1m.redb"), dir.join("open-raw-1m.redb"));
            fixture(&ckpt, |tmp| {
                let store = ckpt_store(tmp);
                let deco = ckpt_decorator(&store, "open");
                let saved = deco
                    .save_all((0..ENTRIES_1M).map(|n| ((n, ARG), compute(n, ARG, SIZE_1M))))
                    .expect("save_all");
                assert_eq!(saved as u64, ENTRIES_1M);
                drop(deco);
                store.close().expect("close");
            });
            fixture(&raw, |tmp| {
                let db = RawRedb::open(tmp);
                for start in (0..ENTRIES_1M).step_by(100_000) {
                    db.put_many(
                        (start..(start + 100_000).min(ENTRIES_1M)).map(|n| {
                            let v = postcard::to_allocvec(&compute(n, ARG, SIZE_1M)).unwrap();
                            (raw_key(n, ARG), v)
                        }),
                        Durability::Immediate,
                    );
                }
            });
            ("1m".to_owned(), ckpt, raw)
        }
        "10g" => {
            let values: u64 = std::env::var("CKPT_BENCH_OPEN_VALUES")
                .map_or(VALUES_10G, |v| v.parse().expect("CKPT_BENCH_OPEN_VALUES"));
            let label = if values == VALUES_10G {
                "10g".to_owned()
            } else {
                format!("{values}x1m")
            };
            let (ckpt, raw) = (
                dir.join(format!("open-{label}.redb")),
                dir.join(format!("open-raw-{label}.redb")),
            );
            if !ckpt.exists() || !raw.exists() {
                eprintln!(
                    "building the {label} fixtures in {}: {values} values of {} each, about {} \
                     of disk for the two files (kept for re-use); 10g takes minutes",
                    dir.display(),
                    bytes_label(VALUE_10G as u64),
                    bytes_label(2 * values * (1 << 20)),
                );
            }
            let value = |n: u64| ByteBuf::from(noise(n + 1, VALUE_10G));
            fixture(&ckpt, |tmp| {
                // Relaxed: one save per value (each is over the batch limit), without an fsync
                // each; closing makes them durable.
                let store = Store::builder()
                    .durability(ckpt::Durability::Relaxed {
                        within: std::time::Duration::from_secs(1),
                    })
                    .open(tmp)
                    .expect("open the ckpt store");
                let deco = ckpt_decorator(&store, "open_10g");
                let saved = deco
                    .save_all((0..values).map(|n| ((n, ARG), value(n))))
                    .expect("save_all");
                assert_eq!(saved as u64, values);
                drop(deco);
                store.close().expect("close");
            });
            fixture(&raw, |tmp| {
                let db = RawRedb::open(tmp);
                for start in (0..values).step_by(256) {
                    db.put_many(
                        (start..(start + 256).min(values))
                            .map(|n| (raw_key(n, ARG), postcard::to_allocvec(&value(n)).unwrap())),
                        Durability::Immediate,
                    );
                }
            });
            (label, ckpt, raw)
        }
        other => panic!("unknown fixture {other}: 1m or 10g"),
    }
}

/// Set when a raw redb open had to repair its file (it was not closed cleanly).
static RAW_REPAIRED: AtomicBool = AtomicBool::new(false);

/// One timed system: opens the file, returns (open ns, drop ns).
type Opener<'a> = Box<dyn Fn() -> (f64, f64) + 'a>;

fn ckpt_opener(path: &Path, check: Option<OpenCheck>) -> Opener<'_> {
    Box::new(move || {
        let start = Instant::now();
        let store = match check {
            None => Store::open(path),
            Some(check) => Store::builder().open_check(check).open(path),
        }
        .expect("open the ckpt store");
        let opened = start.elapsed().as_nanos() as f64;
        let start = Instant::now();
        drop(store);
        (opened, start.elapsed().as_nanos() as f64)
    })
}

fn raw_opener(path: &Path) -> Opener<'_> {
    Box::new(move || {
        let start = Instant::now();
        // `redb::Database::open`, with a callback that only records a repair.
        let db = redb::Builder::new()
            .set_repair_callback(|_| RAW_REPAIRED.store(true, Ordering::Relaxed))
            .open(path)
            .expect("open the raw redb file");
        let opened = start.elapsed().as_nanos() as f64;
        let start = Instant::now();
        drop(db);
        (opened, start.elapsed().as_nanos() as f64)
    })
}

fn run(which: &str, rounds: usize, full: bool) {
    let (label, ckpt, raw) = fixtures(which);
    let (ckpt_len, raw_len) = (file_len(&ckpt), file_len(&raw));
    let mut systems: Vec<(&str, Opener<'_>)> =
        vec![("ckpt default (Store::open)", ckpt_opener(&ckpt, None))];
    for (name, check) in variants(full) {
        systems.push((name, ckpt_opener(&ckpt, Some(check))));
    }
    systems.push(("raw redb Database::open", raw_opener(&raw)));
    let base = systems.len() - 1;

    let mut open_ns: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    let mut drop_ns: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    for round in 0..rounds + 1 {
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let (opened, dropped) = (systems[k].1)();
            if round > 0 {
                // Round 0 warms up (and the page cache with it).
                open_ns[k].push(opened);
                drop_ns[k].push(dropped);
            }
        }
    }
    assert!(
        !RAW_REPAIRED.load(Ordering::Relaxed),
        "a raw redb open repaired its file: it was not closed cleanly"
    );

    let target = if which == "1m" {
        "≤ 20 ms"
    } else {
        "≤ 50 ms"
    };
    println!(
        "open, {label}: ckpt file {} ({ckpt_len} bytes), raw redb file {} ({raw_len} bytes); \
         {rounds} interleaved rounds after 1 warm-up, warm page cache",
        bytes_label(ckpt_len),
        bytes_label(raw_len)
    );
    println!(
        "| system | median open ms | open ratio to raw redb (median per-round) | median drop (close) ms | target |"
    );
    println!("|---|---:|---:|---:|---|");
    let mut json = Vec::new();
    for (k, (name, _)) in systems.iter().enumerate() {
        let mut ratios: Vec<f64> = open_ns[k]
            .iter()
            .zip(&open_ns[base])
            .map(|(a, b)| a / b)
            .collect();
        let open = median_of(&mut open_ns[k].clone()) / 1e6;
        let closed = median_of(&mut drop_ns[k].clone()) / 1e6;
        let ratio = median_of(&mut ratios);
        println!(
            "| {name} | {open:.2} | {ratio:.2} | {closed:.2} | {} |",
            if k == 0 { target } else { "" }
        );
        json.push(format!(
            "{{\"case\":\"open\",\"fixture\":\"{label}\",\"system\":\"{name}\",\
             \"file_bytes\":{},\"median_open_ms\":{open:.3},\"ratio_to_raw\":{ratio:.4},\
             \"median_drop_ms\":{closed:.3},\"rounds\":{rounds}}}",
            if k == base { raw_len } else { ckpt_len }
        ));
    }
    for line in json {
        println!("{line}");
    }
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: keep that fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("open: run with `cargo bench --bench open [-- 1m|10g] [ROUNDS] [full]`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let which = args
        .iter()
        .find(|a| *a == "1m" || *a == "10g")
        .map_or("1m", String::as_str);
    let default_rounds = if which == "1m" { 15 } else { 7 };
    let rounds = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or_else(|| rounds_or(default_rounds));
    let full = which == "1m" || args.iter().any(|a| a == "full");
    run(which, rounds, full);
}
