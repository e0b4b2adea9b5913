//! ckpt against its peers on one call: hit, miss + durable save, miss + relaxed save, and
//! identify alone. Every system runs in the same criterion group, so ratios come from one run.
//!
//! ```text
//! cargo bench --bench peers            # all groups
//! cargo bench --bench peers -- hit/    # one group
//! benches/report.sh                    # all benches, then benches/REPORT.md
//! ```

mod common;

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use ckpt::{AutoIdentifier, Function, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redb::Durability;

use common::*;

// `checkpoint!` needs module scope, and its `cache = ...` is evaluated once: it takes the store
// the bench opened.
static MACRO_STORE: OnceLock<Store> = OnceLock::new();

fn macro_store() -> Store {
    MACRO_STORE
        .get()
        .expect("the bench sets the macro's store first")
        .clone()
}

ckpt::checkpoint! {
    #[checkpoint(cache = macro_store())]
    fn work_256(n: u64, s: &str) -> Blob { compute(n, s, 256) }
}
ckpt::checkpoint! {
    #[checkpoint(cache = macro_store())]
    fn work_4k(n: u64, s: &str) -> Blob { compute(n, s, 4096) }
}
ckpt::checkpoint! {
    #[checkpoint(cache = macro_store())]
    fn work_1m(n: u64, s: &str) -> Blob { compute(n, s, 1 << 20) }
}

fn macro_call(n: u64, s: &str, size: usize) -> Blob {
    match size {
        256 => work_256(n, s),
        4096 => work_4k(n, s),
        _ => work_1m(n, s),
    }
}

fn deco_name(size: usize) -> &'static str {
    match size {
        256 => "work_256",
        4096 => "work_4k",
        _ => "work_1m",
    }
}

/// Hits on a store of 10,000 entries (64 for 1 MiB values), keys visited in scattered order.
fn hit(c: &mut Criterion) {
    let scratch = Scratch::new("hit");
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    // The macro's functions get a file of their own, so each system's file holds the same data.
    let macro_store = ckpt_store(&scratch.file("ckpt-macro.redb"));
    MACRO_STORE.set(macro_store.clone()).ok();
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let moka = moka_new();
    let hot_store = ckpt_hot_store(&scratch.file("ckpt-hot.redb"));

    let mut g = c.benchmark_group("hit");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for (size, label) in SIZES {
        let entries = entries_for(size);
        let deco = ckpt_decorator(&store, deco_name(size));
        ckpt_fill(&deco, entries, size);
        let hot = ckpt_decorator(&hot_store, deco_name(size));
        ckpt_fill(&hot, entries, size);
        parallel_fill(entries, |n| {
            macro_call(n, ARG, size);
        });
        raw.fill(entries, size);
        let cached = cached_fill(scratch.path(), &format!("hit_{label}"), entries, size, true);
        moka_fill(&moka, entries, size);
        store.flush().expect("flush");
        hot_store.flush().expect("flush");
        macro_store.flush().expect("flush");

        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("ckpt", label), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(ckpt_call(
                    &deco,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ))
            })
        });
        g.bench_function(BenchmarkId::new("ckpt_hot", label), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(ckpt_call(&hot, scattered(i, entries), black_box(ARG), size))
            })
        });
        g.bench_function(BenchmarkId::new("ckpt_macro", label), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(macro_call(scattered(i, entries), black_box(ARG), size))
            })
        });
        g.bench_function(BenchmarkId::new("raw_redb", label), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(raw.call(
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                    Durability::Immediate,
                ))
            })
        });
        g.bench_function(BenchmarkId::new("cached", label), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(cached_call(
                    &cached,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ))
            })
        });
        g.bench_function(BenchmarkId::new("moka", label), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(moka_call(
                    &moka,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ))
            })
        });
        assert_eq!(
            deco.stats().misses,
            entries,
            "every timed ckpt call was a hit"
        );
        moka.invalidate_all();
    }
    g.finish();
}

/// A miss: look up, compute, save with an fsync before returning.
fn miss_durable(c: &mut Criterion) {
    let scratch = Scratch::new("miss-durable");
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let moka = moka_new();

    let mut g = c.benchmark_group("miss_durable");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for (size, label) in SIZES {
        let deco = ckpt_decorator(&store, deco_name(size));
        let cached = cached_open(scratch.path(), &format!("miss_{label}"), true);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("ckpt", label), |b| {
            b.iter(|| black_box(ckpt_call(&deco, fresh(), black_box(ARG), size)))
        });
        g.bench_function(BenchmarkId::new("raw_redb", label), |b| {
            b.iter(|| black_box(raw.call(fresh(), black_box(ARG), size, Durability::Immediate)))
        });
        g.bench_function(BenchmarkId::new("cached", label), |b| {
            b.iter(|| black_box(cached_call(&cached, fresh(), black_box(ARG), size)))
        });
        g.bench_function(BenchmarkId::new("moka", label), |b| {
            b.iter(|| black_box(moka_call(&moka, fresh(), black_box(ARG), size)))
        });
        assert_eq!(deco.stats().hits, 0, "every timed ckpt call was a miss");
        moka.invalidate_all();
    }
    g.finish();
}

/// A miss whose save may be lost in a crash (no fsync before returning): ckpt with
/// `Durability::Relaxed` (commits with the engine's `Durability::None`, synced within a second
/// by its flusher), raw redb with `Durability::None`, cached with `durable(false)`.
fn miss_relaxed(c: &mut Criterion) {
    let scratch = Scratch::new("miss-relaxed");
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let store = ckpt_relaxed_store(&scratch.file("ckpt.redb"));

    let mut g = c.benchmark_group("miss_relaxed");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (size, label) in SIZES {
        let cached = cached_open(scratch.path(), &format!("relaxed_{label}"), false);
        let deco = ckpt_decorator(&store, deco_name(size));
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("ckpt", label), |b| {
            b.iter(|| black_box(ckpt_call(&deco, fresh(), black_box(ARG), size)))
        });
        g.bench_function(BenchmarkId::new("raw_redb", label), |b| {
            b.iter(|| black_box(raw.call(fresh(), black_box(ARG), size, Durability::None)))
        });
        g.bench_function(BenchmarkId::new("cached", label), |b| {
            b.iter(|| black_box(cached_call(&cached, fresh(), black_box(ARG), size)))
        });
        cached.flush().expect("cached flush");
    }
    g.finish();
}

/// Turning `(u64, 32-byte String)` into a key, alone.
fn identify(c: &mut Criterion) {
    let f = Function::new("bench", "work_256");
    let s = ARG.to_string();
    let mut g = c.benchmark_group("identify");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    g.bench_function(BenchmarkId::new("ckpt", "u64+str32"), |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(
                AutoIdentifier
                    .id_of(&f, &(n, black_box(s.as_str())))
                    .unwrap(),
            )
        })
    });
    g.bench_function(BenchmarkId::new("raw_redb", "u64+str32"), |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(raw_key(n, black_box(s.as_str())))
        })
    });
    g.bench_function(BenchmarkId::new("cached", "u64+str32"), |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(cached_key(n, black_box(s.as_str())))
        })
    });
    g.finish();
}

criterion_group!(benches, identify, hit, miss_durable, miss_relaxed);
criterion_main!(benches);
