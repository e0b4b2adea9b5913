//! Durable saves per second with 1, 2, 4 and 8 threads: group commit should let N concurrent
//! savers share each fsync. Goal: 8 threads ≥ 4× one thread.
//!
//! ```text
//! cargo bench --bench group_commit            # default: 5 interleaved rounds
//! ROUNDS=9 SAVES=400 cargo bench --bench group_commit
//! ```
//!
//! Rounds interleave the thread counts (1, 2, 4, 8, 1, 2, ...) so that a noisy neighbour hurts
//! every count alike; the report gives each count's median and its ratio to one thread.

use std::time::{Duration, Instant};

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Durability, Function, OnError, Store};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Saves per second with `threads` threads each saving `per_thread` distinct 256-byte values.
fn round(threads: usize, per_thread: usize, round: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!(
        "ckpt-bench-gc-{}-{threads}-{round}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::builder()
        .durability(Durability::Immediate)
        .open(dir.join("bench.redb"))
        .expect("open");
    let deco = DecoratorCheckpoint::new(
        Function::new("bench", "group_commit"),
        AutoIdentifier,
        store.clone(),
    )
    .with_on_error(OnError::Raise);
    let value = vec![0xabu8; 256];
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (deco, value) = (&deco, &value);
            s.spawn(move || {
                for i in 0..per_thread {
                    deco.call((t, i), |_| value.clone()).expect("save");
                }
            });
        }
    });
    let elapsed = started.elapsed();
    drop(deco);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    (threads * per_thread) as f64 / elapsed.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench targets with no arguments but `--bench` missing; keep
    // that fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("group_commit: run with `cargo bench --bench group_commit`");
        return;
    }
    let rounds = env("ROUNDS", 5);
    let saves = env("SAVES", 200);
    let counts = [1usize, 2, 4, 8];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    let started = Instant::now();
    for r in 0..rounds {
        for (k, &threads) in counts.iter().enumerate() {
            results[k].push(round(threads, saves, r));
        }
    }
    let base = median(&mut results[0].clone());
    println!(
        "durable saves/s, 256-byte values, {rounds} interleaved rounds of {saves} saves per thread"
    );
    println!("| threads | median saves/s | × one thread |");
    println!("|---:|---:|---:|");
    let mut json = Vec::new();
    for (k, &threads) in counts.iter().enumerate() {
        let m = median(&mut results[k]);
        println!("| {threads} | {m:.0} | {:.2} |", m / base);
        json.push(format!(
            "{{\"case\":\"group_commit\",\"threads\":{threads},\"saves_per_s\":{m:.0},\
             \"vs_one\":{:.4},\"rounds\":{rounds},\"saves_per_thread\":{saves}}}",
            m / base
        ));
    }
    for line in json {
        println!("{line}");
    }
    println!(
        "(took {:?})",
        Duration::from_secs(started.elapsed().as_secs())
    );
}
