//! What a per-function maximum age costs a hit: the same hits through a decorator without one and
//! through one with `with_max_age` (whose hits also read the entry's creation time, from the
//! same read transaction), on one store, interleaved in rounds in one process.
//!
//! ```text
//! cargo bench --bench expiry                # 256 B values, 15 rounds of 20,000 hits each
//! cargo bench --bench expiry -- 4096 9      # 4 KiB values, 9 rounds
//! ```
//!
//! Each round runs the plain hits then the aged ones, the other way round in the next round, so
//! load from other processes falls on both alike. Printed: the median ns per hit of each, and the
//! median of the per-round ratios (aged / plain).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Store};
use common::Scratch;

type Deco = DecoratorCheckpoint<AutoIdentifier, Store>;

const KEYS: u64 = 20_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per hit over every key.
fn hits(d: &Deco, size: usize) -> f64 {
    let start = Instant::now();
    for k in 0..KEYS {
        let v: Vec<u8> = d
            .call(k, |_| -> Vec<u8> { unreachable!("filled: a hit") })
            .unwrap();
        black_box(v.len() == size);
    }
    start.elapsed().as_nanos() as f64 / KEYS as f64
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let size: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(15);

    let scratch = Scratch::new("expiry");
    let store = common::ckpt_relaxed_store(&scratch.file("expiry.redb"));
    let function = || Function::new("bench", "expiry");
    let plain = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let aged = DecoratorCheckpoint::new(function(), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise)
        .with_max_age(Duration::from_secs(86_400));
    plain
        .save_all((0..KEYS).map(|k| (k, vec![(k % 251) as u8; size])))
        .unwrap();
    store.flush().unwrap();
    // Warm both (snapshots, fingerprints, page cache).
    hits(&plain, size);
    hits(&aged, size);

    let (mut p, mut a, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (tp, ta) = if round % 2 == 0 {
            let tp = hits(&plain, size);
            (tp, hits(&aged, size))
        } else {
            let ta = hits(&aged, size);
            (hits(&plain, size), ta)
        };
        p.push(tp);
        a.push(ta);
        ratio.push(ta / tp);
    }
    let (p, a, r) = (median(p), median(a), median(ratio));
    println!("value {size} B, {rounds} rounds of {KEYS} hits");
    println!("hit without max_age  {p:>9.0} ns");
    println!("hit with max_age     {a:>9.0} ns");
    println!("ratio (median of rounds) {r:.2}x");
    println!(
        "{{\"bench\":\"expiry\",\"size\":{size},\"plain_ns\":{p:.0},\"aged_ns\":{a:.0},\"ratio\":{r:.3}}}"
    );
}
