//! 100,000 saves of 256-byte values in bulk.
//!
//! raw redb inserts them in one write transaction, durable at its commit: the engine's own
//! limit. ckpt has no batch API yet, so its side is the best the current API does: the same
//! saves as calls from 8 threads, which group commit batches (measured on 10,000 saves and
//! reported per save, since 100,000 would take minutes per sample).
//!
//! TODO(ckpt): the batch API to measure here, once it exists (proposed in the phase-1 report):
//! `Store::save_many(function, impl IntoIterator<Item = (args, value)>)` or, through a
//! decorator, `DecoratorCheckpoint::save_all(impl IntoIterator<Item = (A, R)>) ->
//! Result<usize, Error>`: identify + encode each, then one write transaction (chunked at the
//! group-commit batch limit) and one fsync.
//!
//! ```text
//! cargo bench --bench bulk
//! ```

mod common;

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use redb::Durability;

use common::*;

const SIZE: usize = 256;
const BULK: u64 = 100_000;
const CKPT_TODAY: u64 = 10_000;

fn bulk(c: &mut Criterion) {
    let scratch = Scratch::new("bulk");
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let deco = ckpt_decorator(&store, "work_256");

    let mut g = c.benchmark_group("bulk_100k");
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    // Per save, so both sides read the same unit.
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("raw_redb", "one_txn"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters.div_ceil(BULK) {
                let base = fresh() << 20;
                let rows: Vec<(u128, Vec<u8>)> = (base..base + BULK)
                    .map(|n| (raw_key(n, ARG), compute(n, ARG, SIZE).0))
                    .collect();
                let start = Instant::now();
                raw.put_many(rows.into_iter(), Durability::Immediate);
                total += start.elapsed();
            }
            // Scaled to the iterations criterion asked for.
            total.mul_f64(iters as f64 / (iters.div_ceil(BULK) * BULK) as f64)
        })
    });
    g.bench_function(BenchmarkId::new("ckpt", "calls_8_threads"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters.div_ceil(CKPT_TODAY) {
                let base = fresh() << 20;
                let start = Instant::now();
                parallel_fill_with(8, CKPT_TODAY, |n| {
                    ckpt_call(&deco, base + n, ARG, SIZE);
                });
                total += start.elapsed();
            }
            total.mul_f64(iters as f64 / (iters.div_ceil(CKPT_TODAY) * CKPT_TODAY) as f64)
        })
    });
    g.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
