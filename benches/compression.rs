//! Compressed records against plain ones, interleaved in one process: for text, JSON and f32
//! arrays of about 4 KiB and 1 MiB, the compression ratio (stored record / plain record), and the
//! median cost of a hit and of a save (a `rerun`: compute nothing, encode, save), compressed and
//! plain.
//!
//! ```text
//! cargo bench --bench compression                 # zstd level 3, 15 rounds
//! cargo bench --bench compression -- 1 9          # level 1, 9 rounds
//! ```
//!
//! Both stores are redb stores with relaxed durability (no fsync per save: the cost compared is
//! ckpt's, not the disk's) in one scratch folder. Each round does the same calls on the plain
//! store, then on the compressed one, then the other way round in the next round, so load from
//! other processes falls on both alike. Printed: a table, then one JSON line per case.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use ckpt::{
    AutoIdentifier, Compression, DecoratorCheckpoint, Durability, Function, OnError, Record, Store,
};
use common::Scratch;

type Deco = DecoratorCheckpoint<AutoIdentifier, Store>;

/// English-like text: words from a small vocabulary, with line breaks.
fn text(bytes: usize) -> String {
    const WORDS: [&str; 32] = [
        "the",
        "checkpoint",
        "store",
        "keeps",
        "results",
        "of",
        "expensive",
        "calls",
        "and",
        "returns",
        "them",
        "when",
        "asked",
        "again",
        "later",
        "quickly",
        "a",
        "function",
        "value",
        "is",
        "saved",
        "once",
        "read",
        "many",
        "times",
        "by",
        "every",
        "process",
        "that",
        "needs",
        "it",
        "here",
    ];
    let mut out = String::with_capacity(bytes + 16);
    let mut x = 0x9e37_79b9_u64;
    while out.len() < bytes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(x >> 59) as usize]);
        out.push(if (x >> 20).is_multiple_of(13) {
            '\n'
        } else {
            ' '
        });
    }
    out.truncate(bytes);
    out
}

/// A JSON document: an array of objects with the same keys, numbers and short strings.
fn json(bytes: usize) -> String {
    let mut out = String::from("[");
    let mut i = 0u64;
    let mut x = 1u64;
    while out.len() < bytes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user{}\",\"active\":{},\"score\":{:.3},\"tags\":[\"{}\"]}},",
            x >> 54,
            x & 1 == 0,
            (x >> 11) as f64 / (1u64 << 53) as f64 * 100.0,
            ["red", "green", "blue"][(x % 3) as usize]
        ));
        i += 1;
    }
    out.push(']');
    out
}

/// An embedding-like f32 array: a smooth signal plus small noise (random low mantissa bits, as
/// real model outputs have).
fn floats(bytes: usize) -> Vec<f32> {
    let mut x = 12345u64;
    (0..bytes / 4)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (i as f32 * 0.01).sin() * 0.5 + ((x >> 40) as f32 / (1u64 << 24) as f32) * 0.01
        })
        .collect()
}

/// One kind of value, behind one face (the three have different types).
#[derive(Clone)]
enum Value {
    Text(String),
    Floats(Vec<f32>),
}

impl Value {
    fn save(&self, d: &Deco, arg: u64) {
        match self {
            Value::Text(v) => {
                black_box(d.rerun(arg, |_| v.clone()).unwrap());
            }
            Value::Floats(v) => {
                black_box(d.rerun(arg, |_| v.clone()).unwrap());
            }
        }
    }

    fn hit(&self, d: &Deco, arg: u64) {
        match self {
            Value::Text(_) => {
                black_box(d.call(arg, |_| -> String { panic!("a hit") }).unwrap());
            }
            Value::Floats(_) => {
                black_box(d.call(arg, |_| -> Vec<f32> { panic!("a hit") }).unwrap());
            }
        }
    }

    /// What a save costs besides ckpt: cloning the value (the closure returns a copy).
    fn clone_cost(&self) {
        match self {
            Value::Text(v) => drop(black_box(v.clone())),
            Value::Floats(v) => drop(black_box(v.clone())),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn per_call(start: Instant, calls: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn store(path: &std::path::Path, compression: Compression) -> Store {
    Store::builder()
        .durability(Durability::Relaxed {
            within: Duration::from_secs(1),
        })
        .compression(compression)
        .open(path)
        .expect("open a bench store")
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let level: i32 = args.first().map_or(3, |s| s.parse().expect("a zstd level"));
    let rounds: usize = args
        .get(1)
        .map_or(15, |s| s.parse().expect("a round count"));
    let scratch = Scratch::new("compression");
    let plain_store = store(&scratch.file("plain.redb"), Compression::None);
    let zstd_store = store(&scratch.file("zstd.redb"), Compression::Zstd { level });

    let mut rows = Vec::new();
    for (size, size_name) in [(4096usize, "4 KiB"), (1 << 20, "1 MiB")] {
        for (kind, value) in [
            ("text", Value::Text(text(size))),
            ("JSON", Value::Text(json(size))),
            ("f32", Value::Floats(floats(size))),
        ] {
            let name: &'static str = format!("{kind}-{size}").leak();
            let plain = DecoratorCheckpoint::new(
                Function::new("bench", name),
                AutoIdentifier,
                plain_store.clone(),
            )
            .with_on_error(OnError::Raise);
            let zstd = DecoratorCheckpoint::new(
                Function::new("bench", name),
                AutoIdentifier,
                zstd_store.clone(),
            )
            .with_on_error(OnError::Raise);
            // Keys saved and hit each round: enough calls to time, few enough to stay in cache.
            let keys: u64 = if size >= 1 << 20 { 8 } else { 256 };
            for k in 0..keys {
                value.save(&plain, k);
                value.save(&zstd, k);
            }
            let record = |d: &Deco, store: &Store| {
                store
                    .read_record(&d.identify(&0u64).unwrap())
                    .unwrap()
                    .expect("saved")
            };
            let plain_len = record(&plain, &plain_store).len();
            let zstd_record = record(&zstd, &zstd_store);
            let compressed = Record::parse(&zstd_record).unwrap().is_compressed();
            let zstd_len = zstd_record.len();

            let (mut hit_p, mut hit_z, mut save_p, mut save_z, mut clone) =
                (vec![], vec![], vec![], vec![], vec![]);
            for round in 0..rounds {
                let order: [(&Deco, bool); 2] = if round % 2 == 0 {
                    [(&plain, false), (&zstd, true)]
                } else {
                    [(&zstd, true), (&plain, false)]
                };
                for (d, is_zstd) in order {
                    let start = Instant::now();
                    for k in 0..keys {
                        value.hit(d, k);
                    }
                    let hit = per_call(start, keys);
                    let start = Instant::now();
                    for k in 0..keys {
                        value.save(d, k);
                    }
                    let save = per_call(start, keys);
                    if is_zstd {
                        hit_z.push(hit);
                        save_z.push(save);
                    } else {
                        hit_p.push(hit);
                        save_p.push(save);
                    }
                }
                let start = Instant::now();
                for _ in 0..keys {
                    value.clone_cost();
                }
                clone.push(per_call(start, keys));
            }
            rows.push((
                size_name,
                kind,
                plain_len,
                zstd_len,
                compressed,
                median(hit_p),
                median(hit_z),
                median(save_p),
                median(save_z),
                median(clone),
            ));
        }
    }
    drop((plain_store, zstd_store));

    println!(
        "zstd level {level}, {rounds} rounds, medians per call (relaxed durability; a save is a \
         rerun: clone + encode + save)"
    );
    println!(
        "| value | plain record | zstd record | ratio | hit plain | hit zstd | hit × | save plain | save zstd | save × |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (size, kind, pl, zl, compressed, hp, hz, sp, sz, _) in &rows {
        let stored = if *compressed { "" } else { " (plain)" };
        println!(
            "| {kind}, {size} | {pl} B | {zl} B{stored} | {:.3} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
            *zl as f64 / *pl as f64,
            fmt_ns(*hp),
            fmt_ns(*hz),
            hz / hp,
            fmt_ns(*sp),
            fmt_ns(*sz),
            sz / sp,
        );
    }
    for (size, kind, pl, zl, compressed, hp, hz, sp, sz, cl) in &rows {
        println!(
            "{{\"case\":\"compression\",\"level\":{level},\"value\":\"{kind}\",\"size\":\"{size}\",\
             \"plain_bytes\":{pl},\"zstd_bytes\":{zl},\"compressed\":{compressed},\
             \"hit_plain_ns\":{hp:.0},\"hit_zstd_ns\":{hz:.0},\"save_plain_ns\":{sp:.0},\
             \"save_zstd_ns\":{sz:.0},\"clone_ns\":{cl:.0},\"rounds\":{rounds}}}"
        );
    }
}
