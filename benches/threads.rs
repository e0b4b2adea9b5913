//! Durable saves per second from 1, 2, 4 and 8 threads, each save a fresh miss (look up, compute
//! 256 bytes, save with an fsync before returning). criterion reports time per save; saves/s is
//! its inverse (benches/report.py prints both).
//!
//! ```text
//! cargo bench --bench threads
//! ```

mod common;

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use redb::Durability;

use common::*;

const SIZE: usize = 256;

/// Runs `iters` saves split over `threads` threads; returns the wall time.
fn spread(threads: u64, iters: u64, save: impl Fn() + Sync) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let save = &save;
            s.spawn(move || {
                for _ in 0..per_thread {
                    save();
                }
            });
        }
    });
    start.elapsed()
}

fn durable_saves(c: &mut Criterion) {
    let scratch = Scratch::new("threads");
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let deco = ckpt_decorator(&store, "work_256");
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let cached = cached_open(scratch.path(), "threads", true);

    let mut g = c.benchmark_group("durable_saves");
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .throughput(Throughput::Elements(1));
    for threads in [1u64, 2, 4, 8] {
        let label = format!("{threads}t");
        g.bench_function(BenchmarkId::new("ckpt", &label), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters, || {
                    ckpt_call(&deco, fresh(), ARG, SIZE);
                })
            })
        });
        g.bench_function(BenchmarkId::new("raw_redb", &label), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters, || {
                    raw.call(fresh(), ARG, SIZE, Durability::Immediate);
                })
            })
        });
        g.bench_function(BenchmarkId::new("cached", &label), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters, || {
                    cached_call(&cached, fresh(), ARG, SIZE);
                })
            })
        });
    }
    g.finish();
    assert_eq!(deco.stats().hits, 0, "every ckpt call was a miss");
}

criterion_group!(benches, durable_saves);
criterion_main!(benches);
