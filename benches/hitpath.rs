//! The hit path and identify, measured interleaved (for ratios that survive a loaded machine) or
//! run alone under a profiler.
//!
//! ```text
//! cargo bench --bench hitpath                       # interleaved A/B table, 256 B values
//! cargo bench --bench hitpath -- ab 4096            # ... with 4 KiB values
//! # instruction counts of N hits (the store is filled natively first, then reused):
//! cargo bench --bench hitpath -- profile ckpt 0     # creates the fixture, runs nothing
//! # (a 4th argument sets the value size, default 256)
//! valgrind --tool=callgrind --toggle-collect='*measured_loop*' \
//!     target/release/deps/hitpath-HASH profile ckpt 100000
//! ```
//!
//! `abmiss SIZE ROUNDS` does the same for misses with a durable save (ckpt, raw redb,
//! cached), `abrelaxed SIZE ROUNDS` for misses with a relaxed one; `profile ckpt-miss|raw-miss
//! CALLS` profiles misses (`ckpt-relaxed|raw-relaxed`: with relaxed saves), `profile ckpt-hot
//! CALLS` hits on a store with a hot tier.
//!
//! `ab` runs rounds; in each round every system does the same number of calls back to back, so
//! load from other processes hits them alike. It prints each system's median ns per call and its
//! median per-round ratio to raw redb.

mod common;

use std::hint::black_box;
use std::time::Instant;

use ckpt::{AutoIdentifier, Function};
use redb::Durability;

use common::*;

const ENTRIES: u64 = 10_000;

struct Systems {
    ckpt: Ckpt,
    hot: Ckpt,
    raw: RawRedb,
    cached: Cached,
    moka: Moka,
    size: usize,
    entries: u64,
    _scratch: Scratch,
}

fn systems(size: usize) -> Systems {
    let entries = entries_for(size);
    let scratch = Scratch::new("hitpath");
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let ckpt = ckpt_decorator(&store, "work");
    ckpt_fill(&ckpt, entries, size);
    store.flush().expect("flush");
    let hot_store = ckpt_hot_store(&scratch.file("ckpt-hot.redb"));
    let hot = ckpt_decorator(&hot_store, "work");
    ckpt_fill(&hot, entries, size);
    hot_store.flush().expect("flush");
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    raw.fill(entries, size);
    let cached = cached_fill(scratch.path(), "hitpath", entries, size, true);
    let moka = moka_new();
    moka_fill(&moka, entries, size);
    Systems {
        ckpt,
        hot,
        raw,
        cached,
        moka,
        size,
        entries,
        _scratch: scratch,
    }
}

type Op<'a> = (&'static str, Box<dyn Fn(u64) + 'a>);

fn ops(s: &Systems) -> Vec<Op<'_>> {
    let size = s.size;
    let entries = s.entries;
    let f = Function::new("bench", "work");
    vec![
        (
            "raw_redb hit",
            Box::new(move |i| {
                black_box(s.raw.call(
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                    Durability::Immediate,
                ));
            }),
        ),
        (
            "ckpt hit",
            Box::new(move |i| {
                black_box(ckpt_call(
                    &s.ckpt,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ));
            }),
        ),
        (
            "ckpt_hot hit",
            Box::new(move |i| {
                black_box(ckpt_call(
                    &s.hot,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ));
            }),
        ),
        (
            "cached hit",
            Box::new(move |i| {
                black_box(cached_call(
                    &s.cached,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ));
            }),
        ),
        (
            "moka hit",
            Box::new(move |i| {
                black_box(moka_call(
                    &s.moka,
                    scattered(i, entries),
                    black_box(ARG),
                    size,
                ));
            }),
        ),
        (
            "raw_redb key",
            Box::new(move |i| {
                black_box(raw_key(i, black_box(ARG)));
            }),
        ),
        (
            "ckpt identify",
            Box::new(move |i| {
                black_box(AutoIdentifier.id_of(&f, &(i, black_box(ARG))).unwrap());
            }),
        ),
    ]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ab(size: usize, rounds: usize) {
    // About 5 MB of values per system per round: 19,531 calls of 256 B, 50 of 1 MiB.
    let calls = (5_000_000 / size as u64).clamp(50, 20_000);
    let s = systems(size);
    let entries = s.entries;
    let ops = ops(&s);
    // Every system warm before round 0: three calls per entry (page caches, the hot tier).
    for (_, op) in &ops {
        for i in 0..3 * entries {
            op(i);
        }
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    let mut i = 0u64;
    for round in 0..rounds + 1 {
        for (k, (_, op)) in ops.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..calls {
                i += 1;
                op(i);
            }
            if round > 0 {
                // Round 0 warms up.
                ns[k].push(start.elapsed().as_nanos() as f64 / calls as f64);
            }
        }
    }
    println!(
        "interleaved: {rounds} rounds x {calls} calls each, {size}-byte values, {entries} entries"
    );
    let mut json = Vec::new();
    println!("| system | median ns/call | median per-round ratio to raw_redb (hit or key) |");
    println!("|---|---:|---:|");
    for (k, (name, _)) in ops.iter().enumerate() {
        let base = if name.ends_with("hit") {
            0
        } else {
            ops.iter()
                .position(|(n, _)| *n == "raw_redb key")
                .unwrap_or(0)
        };
        let mut ratios: Vec<f64> = ns[k].iter().zip(&ns[base]).map(|(a, b)| a / b).collect();
        let m = median(&mut ns[k].clone());
        println!("| {name} | {m:.0} | {:.2} |", median(&mut ratios));
        json.push(format!(
            "{{\"case\":\"interleaved\",\"size\":{size},\"system\":\"{name}\",\
             \"median_ns\":{m:.1},\"ratio_to_raw\":{:.4},\"rounds\":{rounds},\"calls\":{calls}}}",
            median(&mut ratios)
        ));
    }
    for line in json {
        println!("{line}");
    }
    assert_eq!(
        s.ckpt.stats().misses,
        entries,
        "every timed ckpt call was a hit"
    );
    assert_eq!(
        s.hot.stats().misses,
        entries,
        "every timed hot call was a hit"
    );
}

/// Misses with a save, interleaved: ckpt, raw redb and cached alternate, `calls` fresh keys
/// each per round, so a slow stretch of the shared disk falls on all three alike. Durable
/// (an fsync before each save returns), or relaxed (`relaxed`: ckpt's `Durability::Relaxed`,
/// raw redb's `Durability::None`, cached's `durable(false)`).
fn ab_miss(size: usize, rounds: usize, relaxed: bool) {
    let calls = if relaxed { 200 } else { 20 };
    let scratch = Scratch::new("hitpath-miss");
    let store = if relaxed {
        ckpt_relaxed_store(&scratch.file("ckpt.redb"))
    } else {
        ckpt_store(&scratch.file("ckpt.redb"))
    };
    let ckpt = ckpt_decorator(&store, "work");
    let raw = RawRedb::open(&scratch.file("raw.redb"));
    let cached = cached_open(scratch.path(), "miss", !relaxed);
    let (durability, names) = if relaxed {
        (
            Durability::None,
            [
                "raw_redb miss+relaxed save",
                "ckpt miss+relaxed save",
                "cached miss+relaxed save",
            ],
        )
    } else {
        (
            Durability::Immediate,
            [
                "raw_redb miss+durable save",
                "ckpt miss+durable save",
                "cached miss+durable save",
            ],
        )
    };
    type MissOp<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let ops: Vec<MissOp<'_>> = vec![
        (
            names[0],
            Box::new(|| {
                black_box(raw.call(fresh(), ARG, size, durability));
            }),
        ),
        (
            names[1],
            Box::new(|| {
                black_box(ckpt_call(&ckpt, fresh(), ARG, size));
            }),
        ),
        (
            names[2],
            Box::new(|| {
                black_box(cached_call(&cached, fresh(), ARG, size));
            }),
        ),
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    for round in 0..rounds + 1 {
        for (k, (_, op)) in ops.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..calls {
                op();
            }
            if round > 0 {
                ns[k].push(start.elapsed().as_nanos() as f64 / calls as f64);
            }
        }
    }
    let how = if relaxed { "relaxed" } else { "durable" };
    println!(
        "interleaved misses ({how}): {rounds} rounds x {calls} calls each, {size}-byte values"
    );
    println!("| system | median ns/call | median per-round ratio to raw_redb |");
    println!("|---|---:|---:|");
    let mut json = Vec::new();
    for (k, (name, _)) in ops.iter().enumerate() {
        let mut ratios: Vec<f64> = ns[k].iter().zip(&ns[0]).map(|(a, b)| a / b).collect();
        let m = median(&mut ns[k].clone());
        let r = median(&mut ratios);
        println!("| {name} | {m:.0} | {r:.2} |");
        json.push(format!(
            "{{\"case\":\"interleaved\",\"size\":{size},\"system\":\"{name}\",\
             \"median_ns\":{m:.1},\"ratio_to_raw\":{r:.4},\"rounds\":{rounds},\"calls\":{calls}}}"
        ));
    }
    for line in json {
        println!("{line}");
    }
    assert_eq!(ckpt.stats().hits, 0, "every ckpt call was a miss");
}

/// The loop a profiler looks at, after one untimed pass over every key (so the engine's page
/// cache is warm and one-time setup is out of the count).
fn profile_loop(op: &dyn Fn(u64), calls: u64) {
    for i in 0..ENTRIES {
        op(i);
    }
    measured_loop(op, calls);
}

#[inline(never)]
fn measured_loop(op: &dyn Fn(u64), calls: u64) {
    for i in 0..calls {
        op(i);
    }
}

fn profile(system: &str, calls: u64, size: usize) {
    let dir = fixture_dir();
    let f = Function::new("bench", "work");
    match system {
        "ckpt" => {
            let store = ckpt_store(&dir.join(format!("hitpath-ckpt-{size}.redb")));
            let d = ckpt_decorator(&store, "work");
            if calls == 0 {
                ckpt_fill(&d, ENTRIES, size);
                return;
            }
            let before = d.stats().misses;
            profile_loop(
                &|i| {
                    black_box(ckpt_call(&d, scattered(i, ENTRIES), black_box(ARG), size));
                },
                calls,
            );
            assert_eq!(d.stats().misses, before, "the fixture holds every key");
        }
        "ckpt-hot" => {
            let store = ckpt_hot_store(&dir.join(format!("hitpath-ckpt-{size}.redb")));
            let d = ckpt_decorator(&store, "work");
            let before = d.stats().misses;
            profile_loop(
                &|i| {
                    black_box(ckpt_call(&d, scattered(i, ENTRIES), black_box(ARG), size));
                },
                calls,
            );
            assert_eq!(d.stats().misses, before, "run `profile ckpt 0` first");
        }
        "raw" => {
            let path = dir.join(format!("hitpath-raw-{size}.redb"));
            let fresh = !path.exists();
            let raw = RawRedb::open(&path);
            if fresh {
                raw.fill(ENTRIES, size);
            }
            profile_loop(
                &|i| {
                    black_box(raw.call(
                        scattered(i, ENTRIES),
                        black_box(ARG),
                        size,
                        Durability::Immediate,
                    ));
                },
                calls,
            );
        }
        "ckpt-miss" => {
            let scratch = Scratch::new("profile-miss");
            let store = ckpt_store(&scratch.file("ckpt.redb"));
            let d = ckpt_decorator(&store, "work");
            measured_loop(
                &|_| {
                    black_box(ckpt_call(&d, fresh(), ARG, size));
                },
                calls,
            );
        }
        "raw-miss" | "raw-relaxed" => {
            let scratch = Scratch::new("profile-miss");
            let raw = RawRedb::open(&scratch.file("raw.redb"));
            let durability = if system == "raw-miss" {
                Durability::Immediate
            } else {
                Durability::None
            };
            measured_loop(
                &|_| {
                    black_box(raw.call(fresh(), ARG, size, durability));
                },
                calls,
            );
        }
        "ckpt-relaxed" => {
            let scratch = Scratch::new("profile-miss");
            let store = ckpt_relaxed_store(&scratch.file("ckpt.redb"));
            let d = ckpt_decorator(&store, "work");
            measured_loop(
                &|_| {
                    black_box(ckpt_call(&d, fresh(), ARG, size));
                },
                calls,
            );
        }
        "identify" => profile_loop(
            &|i| {
                black_box(AutoIdentifier.id_of(&f, &(i, black_box(ARG))).unwrap());
            },
            calls,
        ),
        "rawkey" => profile_loop(
            &|i| {
                black_box(raw_key(i, black_box(ARG)));
            },
            calls,
        ),
        other => {
            panic!(
                "unknown system {other}: ckpt, ckpt-hot, raw, ckpt-miss, raw-miss, ckpt-relaxed, \
                 raw-relaxed, identify or rawkey"
            )
        }
    }
}

fn main() {
    // cargo bench passes `--bench`; drop flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |k: usize| args.get(k).map(String::as_str);
    match arg(0) {
        None | Some("ab") => {
            let size = arg(1).map_or(256, |s| s.parse().expect("a value size in bytes"));
            let rounds = arg(2).map_or(15, |s| s.parse().expect("a round count"));
            ab(size, rounds);
        }
        Some(mode @ ("abmiss" | "abrelaxed")) => {
            let size = arg(1).map_or(256, |s| s.parse().expect("a value size in bytes"));
            let rounds = arg(2).map_or(15, |s| s.parse().expect("a round count"));
            ab_miss(size, rounds, mode == "abrelaxed");
        }
        Some("profile") => {
            let system = arg(1).expect("profile SYSTEM CALLS");
            let calls = arg(2).map_or(100_000, |s| s.parse().expect("a call count"));
            let size = arg(3).map_or(256, |s| s.parse().expect("a value size in bytes"));
            profile(system, calls, size);
        }
        Some(other) => panic!("unknown mode {other}: ab, abmiss, abrelaxed or profile"),
    }
}
