//! A store of 1,000,000 entries against one of 10,000: hit time, open time, memory.
//!
//! The stores are built once and kept under `target/ckpt-bench-fixtures` (ckpt's through its
//! own API: calls from 32 threads, which group commit batches; raw redb's in one transaction).
//! `CKPT_BENCH_ENTRIES` changes the large count.
//!
//! ```text
//! cargo bench --bench scale                      # criterion: hit_by_entries, open_by_entries
//! cargo bench --bench scale -- ab [ROUNDS]         # hits interleaved: ckpt / raw redb, both sizes
//! target/release/deps/scale-HASH mem ckpt 1000000  # peak RSS of 200,000 hits, one JSON line
//! ```
//!
//! `ab` keeps the four stores open (ckpt and raw redb at 10,000 and at the large count) and runs
//! rounds: in each, every store does the same number of hits at scattered keys, back to back,
//! the order reversed every other round; round 0 warms up. It prints each store's median ns per
//! hit and, per size, the median of the per-round ratios ckpt / raw redb (the target: ≤ 1.2 at
//! 1M entries), and the ratio of the large size to the small one for each system.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use redb::Durability;

use common::*;

const SIZE: usize = 256;
const SMALL: u64 = 10_000;

fn large_count() -> u64 {
    std::env::var("CKPT_BENCH_ENTRIES").map_or(1_000_000, |v| v.parse().expect("a count"))
}

fn label(entries: u64) -> String {
    if entries.is_multiple_of(1_000_000) {
        format!("{}M", entries / 1_000_000)
    } else if entries.is_multiple_of(1000) {
        format!("{}k", entries / 1000)
    } else {
        entries.to_string()
    }
}

fn fixture(system: &str, entries: u64) -> PathBuf {
    let dir = fixture_dir();
    let path = dir.join(format!("scale-{system}-{entries}.redb"));
    let done = path.with_extension("done");
    if !done.exists() {
        let _ = std::fs::remove_file(&path);
        let start = Instant::now();
        match system {
            "ckpt" => {
                let store = ckpt_store(&path);
                let d = ckpt_decorator(&store, "work_256");
                ckpt_fill(&d, entries, SIZE);
                drop(d);
                store.close().expect("close");
            }
            "raw" => {
                let raw = RawRedb::open(&path);
                let mut n = 0;
                while n < entries {
                    let end = (n + 100_000).min(entries);
                    raw.put_many(
                        (n..end).map(|n| (raw_key(n, ARG), compute(n, ARG, SIZE).0)),
                        Durability::Immediate,
                    );
                    n = end;
                }
            }
            other => panic!("unknown system {other}"),
        }
        eprintln!(
            "built {} ({entries} entries) in {:.1} s",
            path.display(),
            start.elapsed().as_secs_f64()
        );
        std::fs::write(&done, b"").expect("mark the fixture done");
    }
    path
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn hit_by_entries(c: &mut Criterion) {
    let mut g = c.benchmark_group("hit_by_entries");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for entries in [SMALL, large_count()] {
        let store = ckpt_store(&fixture("ckpt", entries));
        let d = ckpt_decorator(&store, "work_256");
        g.bench_function(BenchmarkId::new("ckpt", label(entries)), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(ckpt_call(&d, scattered(i, entries), black_box(ARG), SIZE))
            })
        });
        assert_eq!(d.stats().misses, 0, "the fixture holds every key");
        drop(d);
        drop(store);
        let raw = RawRedb::open(&fixture("raw", entries));
        g.bench_function(BenchmarkId::new("raw_redb", label(entries)), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                let n = scattered(i, entries);
                black_box(raw.get(raw_key(n, black_box(ARG))).expect("a hit"))
            })
        });
    }
    g.finish();
}

fn open_by_entries(c: &mut Criterion) {
    let mut g = c.benchmark_group("open_by_entries");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for entries in [SMALL, large_count()] {
        let ckpt = fixture("ckpt", entries);
        let raw = fixture("raw", entries);
        eprintln!(
            "file sizes, {entries} entries of {SIZE} bytes: ckpt {} bytes, raw redb {} bytes",
            file_size(&ckpt),
            file_size(&raw)
        );
        // The default checks every page of the file (`OpenCheck::Full`); trusting it opens in
        // constant time.
        g.bench_function(BenchmarkId::new("ckpt", label(entries)), |b| {
            b.iter(|| drop(black_box(ckpt_store(&ckpt))))
        });
        g.bench_function(BenchmarkId::new("ckpt_trust", label(entries)), |b| {
            b.iter(|| {
                drop(black_box(
                    ckpt::Store::builder()
                        .open_check(ckpt::OpenCheck::Trust)
                        .open(&ckpt)
                        .expect("open"),
                ))
            })
        });
        g.bench_function(BenchmarkId::new("raw_redb", label(entries)), |b| {
            b.iter(|| drop(black_box(RawRedb::open(&raw))))
        });
    }
    g.finish();
}

/// One JSON line: the memory of a process that opened a store of `entries` and made 200,000
/// hits on scattered keys.
fn mem(system: &str, entries: u64) {
    const HITS: u64 = 200_000;
    let path = fixture(if system == "raw" { "raw" } else { "ckpt" }, entries);
    let (_, before) = rss();
    match system {
        // `ckpt`: opened as by default (`OpenCheck::Full`, every page checked); `ckpt-trust`:
        // opened with `OpenCheck::Trust`.
        "ckpt" | "ckpt-trust" => {
            // CKPT_BENCH_ACCESS_LOG sets the access log's capacity (default 65,536): how many
            // buffered hits one bookkeeping transaction writes, and so how many pages it dirties.
            let mut builder = ckpt::Store::builder();
            if let Some(n) = std::env::var("CKPT_BENCH_ACCESS_LOG")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                builder = builder.access_log_capacity(n);
            }
            if system == "ckpt-trust" {
                builder = builder.open_check(ckpt::OpenCheck::Trust);
            }
            let store = builder.open(&path).expect("open the ckpt store");
            let (_, opened) = rss();
            eprintln!("{system}: {} MiB resident after opening", opened >> 20);
            let d = ckpt_decorator(&store, "work_256");
            for i in 0..HITS {
                black_box(ckpt_call(&d, scattered(i, entries), ARG, SIZE));
            }
            assert_eq!(d.stats().misses, 0);
            let (peak, now) = rss();
            print_mem(system, entries, before, peak, now);
        }
        _ => {
            let raw = RawRedb::open(&path);
            for i in 0..HITS {
                black_box(raw.get(raw_key(scattered(i, entries), ARG)).expect("a hit"));
            }
            let (peak, now) = rss();
            print_mem(system, entries, before, peak, now);
        }
    }
}

fn print_mem(system: &str, entries: u64, before: u64, peak: u64, now: u64) {
    println!(
        "{{\"case\":\"mem_by_entries\",\"system\":\"{system}\",\"entries\":{entries},\
         \"rss_before\":{before},\"peak_rss\":{peak},\"rss_after\":{now},\"page_cache\":{REDB_CACHE}}}"
    );
}

/// Hits interleaved in rounds (see the module docs): the figure for "a hit at 1M entries against
/// raw redb at 1M entries" with both measured side by side.
fn ab(rounds: usize) {
    const HITS: u64 = 20_000;
    let large = large_count();
    let sizes = [SMALL, large];
    let stores: Vec<(ckpt::Store, Ckpt)> = sizes
        .iter()
        .map(|&n| {
            let store = ckpt_store(&fixture("ckpt", n));
            let d = ckpt_decorator(&store, "work_256");
            (store, d)
        })
        .collect();
    let raws: Vec<RawRedb> = sizes
        .iter()
        .map(|&n| RawRedb::open(&fixture("raw", n)))
        .collect();
    // (name, entries, run HITS hits starting at `from`)
    type Run<'a> = Box<dyn Fn(u64) + 'a>;
    let mut systems: Vec<(String, u64, Run<'_>)> = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let d = &stores[k].1;
        systems.push((
            format!("ckpt {}", label(n)),
            n,
            Box::new(move |from| {
                for i in from..from + HITS {
                    black_box(ckpt_call(d, scattered(i, n), black_box(ARG), SIZE));
                }
            }),
        ));
        let raw = &raws[k];
        systems.push((
            format!("raw_redb {}", label(n)),
            n,
            Box::new(move |from| {
                for i in from..from + HITS {
                    let key = raw_key(scattered(i, n), black_box(ARG));
                    black_box(raw.get(key).expect("a hit"));
                }
            }),
        ));
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    for round in 0..=rounds {
        let from = round as u64 * HITS;
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let start = Instant::now();
            (systems[k].2)(from);
            if round > 0 {
                ns[k].push(start.elapsed().as_nanos() as f64 / HITS as f64);
            }
        }
    }
    for (_, d) in &stores {
        assert_eq!(d.stats().misses, 0, "the fixtures hold every key");
    }
    println!("| store | median ns/hit |");
    println!("|---|---:|");
    for (k, (name, _, _)) in systems.iter().enumerate() {
        println!("| {name} | {:.0} |", median_of(&mut ns[k].clone()));
    }
    let ratio = |a: usize, b: usize| {
        let mut r: Vec<f64> = ns[a].iter().zip(&ns[b]).map(|(x, y)| x / y).collect();
        median_of(&mut r)
    };
    // Indexes: 0 ckpt small, 1 raw small, 2 ckpt large, 3 raw large.
    for (k, &n) in sizes.iter().enumerate() {
        let r = ratio(2 * k, 2 * k + 1);
        println!(
            "{{\"case\":\"hit_by_entries_ab\",\"entries\":{n},\"ckpt_ns\":{:.1},\"raw_ns\":{:.1},\
             \"ratio_to_raw\":{r:.4},\"rounds\":{rounds},\"hits\":{HITS}}}",
            median_of(&mut ns[2 * k].clone()),
            median_of(&mut ns[2 * k + 1].clone()),
        );
    }
    println!(
        "{{\"case\":\"large_vs_small\",\"ckpt\":{:.4},\"raw_redb\":{:.4}}}",
        ratio(2, 0),
        ratio(3, 1)
    );
}

criterion_group!(benches, hit_by_entries, open_by_entries);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mem") {
        let system = args.get(1).map_or("ckpt", String::as_str);
        let entries = args
            .get(2)
            .map_or(large_count(), |v| v.parse().expect("a count"));
        mem(system, entries);
        return;
    }
    if args.first().map(String::as_str) == Some("ab") {
        let rounds = args.get(1).filter(|a| !a.starts_with("--"));
        ab(rounds.map_or(15, |v| v.parse().expect("a round count")));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
