//! 100,000 saves of 256-byte values in bulk, interleaved.
//!
//! raw redb inserts them in one write transaction, durable at its commit: the engine's own
//! limit. ckpt saves them through its batch API, `DecoratorCheckpoint::save_all`, which
//! identifies and encodes each and writes them in batches of up to 262,144, one transaction and one
//! fsync each. Keys and values are built before the clock starts (ckpt's ids are not: computing
//! them is part of its cost).
//!
//! Each round runs both systems once, in alternating order, each saving into a new, empty file
//! of its own; the report gives each system's median and the median of the per-round ratios.
//!
//! ```text
//! cargo bench --bench bulk             # 7 rounds; ROUNDS=N for more
//! # one system alone, for a profiler (ROUNDS bulk saves into a fresh file):
//! perf record -g target/release/deps/bulk-HASH profile ckpt|raw ROUNDS
//! ```

mod common;

use std::time::Instant;

use redb::Durability;

use common::*;

const SIZE: usize = 256;
const BULK: u64 = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("profile") {
        profile(
            args.get(1).map_or("ckpt", String::as_str),
            args.get(2).map_or(3, |r| r.parse().expect("rounds")),
        );
        return;
    }
    // `cargo test --benches` runs bench targets without `--bench`: keep that fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bulk: run with `cargo bench --bench bulk`");
        return;
    }
    let rounds: usize = std::env::var("ROUNDS").map_or(7, |v| v.parse().expect("ROUNDS"));
    let scratch = Scratch::new("bulk");
    let mut raw_ns = Vec::new();
    let mut ckpt_ns = Vec::new();
    for round in 0..rounds + 1 {
        let raw_once = || {
            let raw = RawRedb::open(&scratch.file(&format!("raw-{round}.redb")));
            let rows: Vec<(u128, Vec<u8>)> = (0..BULK)
                .map(|n| (raw_key(n, ARG), compute(n, ARG, SIZE).0))
                .collect();
            let start = Instant::now();
            raw.put_many(rows.into_iter(), Durability::Immediate);
            start.elapsed().as_nanos() as f64
        };
        let ckpt_once = || {
            let store = ckpt_store(&scratch.file(&format!("ckpt-{round}.redb")));
            let deco = ckpt_decorator(&store, "work_256");
            let items: Vec<((u64, &str), Blob)> = (0..BULK)
                .map(|n| ((n, ARG), compute(n, ARG, SIZE)))
                .collect();
            let start = Instant::now();
            let saved = deco.save_all(items).expect("save_all");
            let took = start.elapsed().as_nanos() as f64;
            assert_eq!(saved as u64, BULK);
            took
        };
        let (r, c) = if round % 2 == 0 {
            let r = raw_once();
            (r, ckpt_once())
        } else {
            let c = ckpt_once();
            (raw_once(), c)
        };
        let _ = std::fs::remove_file(scratch.file(&format!("raw-{round}.redb")));
        let _ = std::fs::remove_file(scratch.file(&format!("ckpt-{round}.redb")));
        // Round 0 warms up.
        if round > 0 {
            raw_ns.push(r);
            ckpt_ns.push(c);
        }
    }
    let mut ratios: Vec<f64> = ckpt_ns.iter().zip(&raw_ns).map(|(c, r)| c / r).collect();
    let raw_m = median(&mut raw_ns.clone());
    let ckpt_m = median(&mut ckpt_ns.clone());
    let ratio = median(&mut ratios);
    println!("bulk: {rounds} interleaved rounds of {BULK} saves of {SIZE} bytes each");
    println!("| system | median per 100,000 | per save | ratio to raw redb |");
    println!("|---|---:|---:|---:|");
    println!(
        "| raw_redb, one transaction | {:.0} ms | {:.2} µs | 1.00 |",
        raw_m / 1e6,
        raw_m / BULK as f64 / 1e3
    );
    println!(
        "| ckpt, save_all | {:.0} ms | {:.2} µs | {ratio:.2} |",
        ckpt_m / 1e6,
        ckpt_m / BULK as f64 / 1e3
    );
    for (system, m, r) in [("raw_redb", raw_m, 1.0), ("ckpt", ckpt_m, ratio)] {
        println!(
            "{{\"case\":\"bulk\",\"system\":\"{system}\",\"saves\":{BULK},\"size\":{SIZE},\
             \"median_ns\":{m:.0},\"ratio_to_raw\":{r:.4},\"rounds\":{rounds}}}"
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `rounds` bulk saves of one system into one file (growing by 100,000 entries a round), for a
/// profiler.
fn profile(system: &str, rounds: u64) {
    let scratch = Scratch::new("bulk-profile");
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let deco = ckpt_decorator(&store, "work_256");
    for _ in 0..rounds {
        let base = fresh() << 20;
        let start = Instant::now();
        if system == "raw" {
            raw.put_many(
                (base..base + BULK).map(|n| (raw_key(n, ARG), compute(n, ARG, SIZE).0)),
                Durability::Immediate,
            );
        } else {
            deco.save_all((base..base + BULK).map(|n| ((n, ARG), compute(n, ARG, SIZE))))
                .expect("save_all");
        }
        eprintln!("{system}: {:?}", start.elapsed());
    }
}
