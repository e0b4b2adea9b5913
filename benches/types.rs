//! Hits by result type and size (issue 12, items 1 and 2): ckpt against raw redb decoding the
//! same type with postcard from one buffer.
//!
//! ```text
//! cargo bench --bench types                     # every type at 256 B, 4 KiB and 1 MiB
//! cargo bench --bench types -- vec_u8 1048576   # one type, one size
//! cargo bench --bench types -- all 4096         # every type, one size
//! cargo bench --bench types -- all 67108864     # 64 MiB (or CKPT_BENCH_LARGE=1 to add it)
//! ```
//!
//! Types (`TYPE`): `vec_u8` (`Vec<u8>`), `bytebuf` (`serde_bytes::ByteBuf`), `vec_f32`
//! (`Vec<f32>`, an embedding), `string`, `vec_u64_f64` (`Vec<(u64, f64)>`) and `mixed` (a struct
//! of a `Vec<u64>`, a `Vec<f32>`, a `String` and a `ByteBuf` in roughly equal parts), each built
//! so that its postcard encoding is about SIZE bytes.
//!
//! Systems, for each type, each on its own file in a scratch folder:
//! * `ckpt`: a [`ckpt::DecoratorCheckpoint`] over a default store (256 MiB page cache);
//! * `raw`: redb 4.5 by hand (256 MiB page cache), `postcard::to_allocvec` of the value under
//!   the xxh3-128 of the arguments; a hit is `begin_read` + `open_table` + `get` +
//!   `postcard::from_bytes` of the guard's bytes;
//! * `raw copy` (ByteBuf only): the same `get` + a copy of the bytes, item 2's reference.
//!
//! The stores hold 16 entries (4 at 1 MiB and up, 2 at 64 MiB), all different; hits cycle over
//! them. Each system's hits are checked once against the value stored before timing. Rounds
//! interleave every system of a size: in each round each does K hits back to back (K chosen so
//! that the slowest takes about 30 ms, at least 1), the order reversed every other round; round
//! 0 warms up. 15 rounds (7 at 64 MiB and up; `CKPT_BENCH_ROUNDS` sets it). The report gives
//! each system's median ns per hit and the median of the per-round ratios. At 64 MiB it also
//! gives the peak resident memory one hit adds (VmHWM reset before it), in value sizes.

mod common;

use std::fmt::Debug;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError};
use redb::Durability;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use common::*;

/// How long the slowest system's K hits of a round should take.
const ROUND_TARGET: Duration = Duration::from_millis(30);

const LARGE: usize = 64 << 20;

/// A result type, built so that its postcard encoding is about `size` bytes.
trait Sample: Serialize + DeserializeOwned + PartialEq + Debug + 'static {
    /// The name on the command line.
    const NAME: &'static str;
    /// The Rust type, for the report.
    const LABEL: &'static str;
    /// The value stored under argument `arg` (different for each argument).
    fn make(arg: u64, size: usize) -> Self;
    /// Bytes the value holds on the heap.
    fn heap_bytes(&self) -> usize;
}

fn bytes(arg: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(arg * 7) as u8)
        .collect()
}

fn floats(arg: u64, n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 + arg as f32).collect()
}

/// Integers that postcard writes in 4 bytes each (varints of 2^21..2^28).
fn ids(arg: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| (1 << 21) + i + arg).collect()
}

fn text(arg: u64, n: usize) -> String {
    (0..n as u64)
        .map(|i| (b'a' + ((i + arg) % 26) as u8) as char)
        .collect()
}

impl Sample for Vec<u8> {
    const NAME: &'static str = "vec_u8";
    const LABEL: &'static str = "Vec<u8>";
    fn make(arg: u64, size: usize) -> Self {
        bytes(arg, size)
    }
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

impl Sample for ByteBuf {
    const NAME: &'static str = "bytebuf";
    const LABEL: &'static str = "ByteBuf";
    fn make(arg: u64, size: usize) -> Self {
        ByteBuf::from(bytes(arg, size))
    }
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

impl Sample for Vec<f32> {
    const NAME: &'static str = "vec_f32";
    const LABEL: &'static str = "Vec<f32>";
    fn make(arg: u64, size: usize) -> Self {
        floats(arg, size / 4)
    }
    fn heap_bytes(&self) -> usize {
        self.len() * 4
    }
}

impl Sample for String {
    const NAME: &'static str = "string";
    const LABEL: &'static str = "String";
    fn make(arg: u64, size: usize) -> Self {
        text(arg, size)
    }
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

impl Sample for Vec<(u64, f64)> {
    const NAME: &'static str = "vec_u64_f64";
    const LABEL: &'static str = "Vec<(u64, f64)>";
    fn make(arg: u64, size: usize) -> Self {
        // 4 bytes of varint + 8 of f64 per pair.
        ids(arg, size / 12)
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i as f64 * 0.25 + arg as f64))
            .collect()
    }
    fn heap_bytes(&self) -> usize {
        self.len() * 16
    }
}

/// A struct holding a few vectors, in roughly equal parts of its encoding.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Mixed {
    ids: Vec<u64>,
    weights: Vec<f32>,
    label: String,
    raw: ByteBuf,
}

impl Sample for Mixed {
    const NAME: &'static str = "mixed";
    const LABEL: &'static str = "Mixed";
    fn make(arg: u64, size: usize) -> Self {
        let part = size / 4;
        Mixed {
            ids: ids(arg, part / 4),
            weights: floats(arg, part / 4),
            label: text(arg, part),
            raw: ByteBuf::from(bytes(arg, part)),
        }
    }
    fn heap_bytes(&self) -> usize {
        self.ids.len() * 8 + self.weights.len() * 4 + self.label.len() + self.raw.len()
    }
}

const TYPES: [&str; 6] = [
    "vec_u8",
    "bytebuf",
    "vec_f32",
    "string",
    "vec_u64_f64",
    "mixed",
];

type Op = Box<dyn Fn(u64)>;

/// One timed system: a hit of entry `i % entries` per call.
struct System {
    /// "ckpt", "raw" or "raw copy".
    name: &'static str,
    op: Op,
}

/// One type at one size: its systems, over files of its own.
struct Case {
    name: &'static str,
    label: &'static str,
    /// Encoded (postcard) and in-memory sizes of entry 0.
    encoded: usize,
    heap: usize,
    systems: Vec<System>,
}

/// How many entries a store holds at a value size.
fn entries_for(size: usize) -> u64 {
    if size >= LARGE {
        2
    } else if size >= 1 << 20 {
        4
    } else {
        16
    }
}

fn build<T: Sample>(scratch: &Scratch, size: usize) -> Case {
    let entries = entries_for(size);
    let store = ckpt_store(&scratch.file(&format!("ckpt-{}.redb", T::NAME)));
    let deco = DecoratorCheckpoint::new(
        Function::new("types", T::NAME),
        AutoIdentifier,
        store.clone(),
    )
    .with_on_error(OnError::Raise);
    let saved = deco
        .save_all((0..entries).map(|n| ((n, ARG), T::make(n, size))))
        .expect("save_all");
    assert_eq!(saved as u64, entries);
    store.flush().expect("flush");
    drop(store);
    let raw = Rc::new(RawRedb::open(
        &scratch.file(&format!("raw-{}.redb", T::NAME)),
    ));
    raw.put_many(
        (0..entries).map(|n| {
            (
                raw_key(n, ARG),
                postcard::to_allocvec(&T::make(n, size)).unwrap(),
            )
        }),
        Durability::Immediate,
    );

    // Every hit of every system returns the value stored.
    for n in 0..entries {
        let want = T::make(n, size);
        let got: T = deco
            .call((n, ARG), |_| -> T { unreachable!("a hit") })
            .expect("ckpt hit");
        assert_eq!(got, want, "ckpt's hit of entry {n}");
        drop(got);
        let got = raw
            .get_with(raw_key(n, ARG), |b| postcard::from_bytes::<T>(b).unwrap())
            .expect("raw hit");
        assert_eq!(got, want, "raw redb's hit of entry {n}");
        drop(got);
        if T::NAME == "bytebuf" {
            let copy = raw.get_with(raw_key(n, ARG), <[u8]>::to_vec).unwrap();
            assert_eq!(copy, postcard::to_allocvec(&want).unwrap());
        }
    }
    let first = T::make(0, size);
    let encoded = postcard::to_allocvec(&first).unwrap().len();
    let heap = first.heap_bytes();
    drop(first);

    let mut systems = vec![
        System {
            name: "ckpt",
            op: Box::new(move |i| {
                let v: T = deco
                    .call((i % entries, black_box(ARG)), |_| -> T {
                        unreachable!("a hit")
                    })
                    .expect("ckpt hit");
                black_box(v);
            }),
        },
        System {
            name: "raw",
            op: Box::new({
                let raw = Rc::clone(&raw);
                move |i| {
                    let v = raw
                        .get_with(raw_key(i % entries, black_box(ARG)), |b| {
                            postcard::from_bytes::<T>(b).expect("decode")
                        })
                        .expect("raw hit");
                    black_box(v);
                }
            }),
        },
    ];
    if T::NAME == "bytebuf" {
        systems.push(System {
            name: "raw copy",
            op: Box::new(move |i| {
                let v = raw
                    .get_with(raw_key(i % entries, black_box(ARG)), <[u8]>::to_vec)
                    .expect("raw hit");
                black_box(v);
            }),
        });
    }
    Case {
        name: T::NAME,
        label: T::LABEL,
        encoded,
        heap,
        systems,
    }
}

fn case(name: &str, scratch: &Scratch, size: usize) -> Case {
    match name {
        "vec_u8" => build::<Vec<u8>>(scratch, size),
        "bytebuf" => build::<ByteBuf>(scratch, size),
        "vec_f32" => build::<Vec<f32>>(scratch, size),
        "string" => build::<String>(scratch, size),
        "vec_u64_f64" => build::<Vec<(u64, f64)>>(scratch, size),
        "mixed" => build::<Mixed>(scratch, size),
        other => panic!("unknown type {other}: {} or all", TYPES.join(", ")),
    }
}

/// Nanoseconds per hit of `op` over at least `entries` hits and 5 ms.
fn calibrate(op: &Op, entries: u64) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while n < entries || start.elapsed() < Duration::from_millis(5) {
        op(n);
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn run_size(types: &[&str], size: usize) {
    let entries = entries_for(size);
    let rounds = rounds_or(if size >= LARGE { 7 } else { 15 });
    let scratch = Scratch::new("types");
    let built = Instant::now();
    let cases: Vec<Case> = types.iter().map(|t| case(t, &scratch, size)).collect();
    eprintln!(
        "{}: {} stores of {entries} entries built and checked in {:.1} s",
        bytes_label(size as u64),
        cases.len() * 2,
        built.elapsed().as_secs_f64()
    );

    // K per case: the slowest of its systems takes about ROUND_TARGET.
    let ks: Vec<u64> = cases
        .iter()
        .map(|c| {
            let slowest = c
                .systems
                .iter()
                .map(|s| {
                    // The first pass warms up.
                    calibrate(&s.op, entries);
                    calibrate(&s.op, entries)
                })
                .fold(0.0, f64::max);
            ((ROUND_TARGET.as_nanos() as f64 / slowest) as u64).clamp(1, 1_000_000)
        })
        .collect();

    // (case, system) in round order.
    let order: Vec<(usize, usize)> = cases
        .iter()
        .enumerate()
        .flat_map(|(c, case)| (0..case.systems.len()).map(move |s| (c, s)))
        .collect();
    let mut ns: Vec<Vec<Vec<f64>>> = cases
        .iter()
        .map(|c| vec![Vec::new(); c.systems.len()])
        .collect();
    let mut i = 0u64;
    for round in 0..rounds + 1 {
        let mut this: Vec<(usize, usize)> = order.clone();
        if round % 2 == 1 {
            this.reverse();
        }
        for (c, s) in this {
            let op = &cases[c].systems[s].op;
            let k = ks[c];
            let start = Instant::now();
            for _ in 0..k {
                op(i);
                i += 1;
            }
            if round > 0 {
                // Round 0 warms up.
                ns[c][s].push(start.elapsed().as_nanos() as f64 / k as f64);
            }
        }
    }

    let size_label = bytes_label(size as u64);
    println!(
        "\ntypes, {size_label}: {rounds} interleaved rounds (after 1 warm-up), {entries} entries \
         per store, K hits per system per round"
    );
    println!(
        "| type | size | encoded | K | ckpt ns/hit | raw get+decode ns/hit | ckpt/raw \
         (median per-round) | target |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    let med = |v: &[f64]| median_of(&mut v.to_vec());
    let ratio = |a: &[f64], b: &[f64]| {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
        median_of(&mut r)
    };
    let mut json = Vec::new();
    for (c, case) in cases.iter().enumerate() {
        let (ckpt, raw) = (&ns[c][0], &ns[c][1]);
        let r = ratio(ckpt, raw);
        println!(
            "| {} | {size_label} | {} | {} | {:.0} | {:.0} | {r:.2} | ≤ 1.2 |",
            case.label,
            case.encoded,
            ks[c],
            med(ckpt),
            med(raw)
        );
        for (s, sys) in case.systems.iter().enumerate() {
            json.push(format!(
                "{{\"case\":\"types\",\"type\":\"{}\",\"size\":{size},\"encoded\":{},\
                 \"system\":\"{}\",\"median_ns\":{:.1},\"ratio_to_raw\":{:.4},\
                 \"rounds\":{rounds},\"hits\":{}}}",
                case.name,
                case.encoded,
                sys.name,
                med(&ns[c][s]),
                ratio(&ns[c][s], raw),
                ks[c]
            ));
        }
    }
    let find = |name: &str| cases.iter().position(|c| c.name == name);
    if let Some(b) = find("bytebuf") {
        let (ckpt, copy) = (&ns[b][0], &ns[b][2]);
        let target = if size >= 1 << 20 { "≤ 1.2" } else { "–" };
        println!(
            "| ByteBuf ckpt / raw get+copy | {size_label} | {} | {} | {:.0} | {:.0} (copy) | \
             {:.2} | {target} |",
            cases[b].encoded,
            ks[b],
            med(ckpt),
            med(copy),
            ratio(ckpt, copy)
        );
        if let Some(v) = find("vec_u8") {
            let (vec, buf) = (&ns[v][0], &ns[b][0]);
            println!(
                "| Vec<u8>/ByteBuf (ckpt) | {size_label} | {} | {} | {:.0} | {:.0} (ByteBuf) | \
                 {:.2} | ≤ 1.3 |",
                cases[v].encoded,
                ks[v],
                med(vec),
                med(buf),
                ratio(vec, buf)
            );
        }
    }
    for line in json {
        println!("{line}");
    }

    if size >= LARGE {
        peak_memory(&cases);
    }
}

/// The peak resident memory one hit adds, per system: VmHWM reset to the resident memory
/// before the hit, read after it (the value is dropped at the end of the hit).
fn peak_memory(cases: &[Case]) {
    if !reset_peak_rss() {
        println!("peak memory: cannot reset VmHWM (/proc/self/clear_refs), not measured");
        return;
    }
    println!("\npeak resident memory added by one hit (VmHWM reset before it), warm stores");
    println!("| type | system | value in memory | peak growth | in value sizes |");
    println!("|---|---|---:|---:|---:|");
    let mut json = Vec::new();
    for case in cases {
        for sys in &case.systems {
            reset_peak_rss();
            let (_, before) = rss();
            (sys.op)(0);
            let (peak, _) = rss();
            let grew = peak.saturating_sub(before);
            println!(
                "| {} | {} | {} | {} | {:.2} |",
                case.label,
                sys.name,
                bytes_label(case.heap as u64),
                bytes_label(grew),
                grew as f64 / case.heap as f64
            );
            json.push(format!(
                "{{\"case\":\"types_peak_rss\",\"type\":\"{}\",\"system\":\"{}\",\"heap\":{},\
                 \"peak_growth\":{grew}}}",
                case.name, sys.name, case.heap
            ));
        }
    }
    for line in json {
        println!("{line}");
    }
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: keep that fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("types: run with `cargo bench --bench types [-- TYPE SIZE]`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let types: Vec<&str> = match args.first().map(String::as_str) {
        None | Some("all") => TYPES.to_vec(),
        Some(t) => vec![
            *TYPES
                .iter()
                .find(|n| **n == t)
                .unwrap_or_else(|| panic!("unknown type {t}: {} or all", TYPES.join(", "))),
        ],
    };
    let sizes: Vec<usize> = match args.get(1).map(String::as_str) {
        None | Some("all") => {
            let mut sizes = vec![256, 4096, 1 << 20];
            if std::env::var_os("CKPT_BENCH_LARGE").is_some_and(|v| v == "1") {
                sizes.push(LARGE);
            }
            sizes
        }
        Some(s) => vec![s.parse().expect("a value size in bytes")],
    };
    for size in sizes {
        run_size(&types, size);
    }
}
