//! One 256 MiB value saved (durably, overwriting the same key) and loaded, ckpt against raw
//! redb; plus, in fresh processes, the peak memory of each and the file size after one save.
//!
//! redb gives a value larger than a page a run of pages rounded up to a power of two, so raw
//! redb's one 256 MiB value takes a 512 MiB run. ckpt stores a record over 512 KiB in chunks
//! of 64 bytes under 512 KiB (each fills one 512 KiB page), encoded as it is written and decoded
//! from its chunks one at a time, so neither a save nor a load holds the record in memory next
//! to the value.
//!
//! ```text
//! cargo bench --bench large                         # criterion: large/{save,load}
//! target/release/deps/large-HASH mem save ckpt      # one JSON line: peak RSS, file size
//! target/release/deps/large-HASH mem load ckpt
//! ```
//! `CKPT_BENCH_LARGE_MIB` changes the size (default 256).

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use redb::Durability;

use common::*;

/// The key of the one value. Not 0: `compute` fills the value with its key's low byte, and a
/// zeroed allocation stays unmapped (and out of the resident memory measured) until written.
const KEY: u64 = 7;

fn value_size() -> usize {
    std::env::var("CKPT_BENCH_LARGE_MIB").map_or(256, |v| v.parse().expect("MiB")) << 20
}

fn size_label() -> String {
    format!("{}MiB", value_size() >> 20)
}

fn large(c: &mut Criterion) {
    let size = value_size();
    let scratch = Scratch::new("large");
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let deco = ckpt_decorator(&store, "work_large");
    let raw = RawRedb::open(&scratch.file("raw.redb"));

    let mut g = c.benchmark_group("large");
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(8))
        .sample_size(10)
        .throughput(Throughput::Bytes(size as u64));
    let label = size_label();
    g.bench_function(BenchmarkId::new("ckpt_save", &label), |b| {
        b.iter(|| {
            black_box(
                deco.rerun((KEY, ARG), |(n, s)| compute(n, s, size))
                    .unwrap(),
            )
        })
    });
    g.bench_function(BenchmarkId::new("raw_redb_save", &label), |b| {
        b.iter(|| {
            let v = compute(KEY, ARG, size);
            raw.put(raw_key(KEY, ARG), &v.0, Durability::Immediate);
            black_box(v)
        })
    });
    g.bench_function(BenchmarkId::new("ckpt_load", &label), |b| {
        b.iter(|| black_box(ckpt_call(&deco, KEY, ARG, size)))
    });
    g.bench_function(BenchmarkId::new("raw_redb_load", &label), |b| {
        b.iter(|| black_box(raw.get(raw_key(KEY, ARG)).expect("a hit")))
    });
    g.finish();
    assert!(deco.stats().hits > 0);
}

fn fixture(system: &str) -> PathBuf {
    let dir = fixture_dir();
    dir.join(format!("large-{system}-{}.redb", size_label()))
}

/// In a fresh process: `save` writes the value into a new file, `load` reads it back from the
/// file `save` left. Prints one JSON line.
fn mem(op: &str, system: &str) {
    let size = value_size();
    let path = fixture(system);
    if op == "save" {
        let _ = std::fs::remove_file(&path);
    }
    let (_, before) = rss();
    match (op, system) {
        ("save", "ckpt") => {
            let store = ckpt_store(&path);
            let d = ckpt_decorator(&store, "work_large");
            black_box(ckpt_call(&d, KEY, ARG, size));
            assert_eq!(d.stats().misses, 1);
        }
        ("load", "ckpt") => {
            let store = ckpt_store(&path);
            let d = ckpt_decorator(&store, "work_large");
            black_box(ckpt_call(&d, KEY, ARG, size));
            assert_eq!(d.stats().hits, 1, "run `mem save ckpt` first");
        }
        ("save", "raw") => {
            let raw = RawRedb::open(&path);
            black_box(raw.call(KEY, ARG, size, Durability::Immediate));
        }
        ("load", "raw") => {
            let raw = RawRedb::open(&path);
            black_box(
                raw.get(raw_key(KEY, ARG))
                    .expect("run `mem save raw` first"),
            );
        }
        other => panic!("unknown {other:?}: mem save|load ckpt|raw"),
    }
    let (peak, now) = rss();
    let file = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "{{\"case\":\"large_mem\",\"op\":\"{op}\",\"system\":\"{system}\",\"value\":{size},\
         \"rss_before\":{before},\"peak_rss\":{peak},\"rss_after\":{now},\"file\":{file}}}"
    );
}

criterion_group!(benches, large);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mem") {
        let op = args.get(1).map_or("save", String::as_str);
        let system = args.get(2).map_or("ckpt", String::as_str);
        mem(op, system);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
