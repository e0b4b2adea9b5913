//! File sizes (issue 12, item 4): a store of many 256-byte entries against raw redb's file, and
//! a store's file across many hits.
//!
//! ```text
//! cargo bench --bench space -- file [N] [compact]   # N entries (default 1,000,000)
//! cargo bench --bench space -- hits [HITS] [ENTRIES] # default 10,000,000 hits, 10,000 entries
//! ```
//!
//! `file`: a ckpt store of N entries of 256 bytes (the common workload's `Blob`), saved through
//! `DecoratorCheckpoint::save_all` (ckpt's bulk path: batches of up to 262,144 saves, one
//! transaction each), and a raw redb file holding the same N values, postcard-encoded, under
//! xxh3-128 keys, in one write transaction. Both are closed, then their sizes printed; with
//! `compact`, their sizes again after `Store::compact` and redb's `Database::compact`.
//! Target: ckpt ≤ 1.3× raw redb.
//!
//! `hits`: a ckpt store of ENTRIES entries of 256 bytes, closed; reopened, then HITS hits
//! cycling over every entry, with `Store::flush` every 1,000,000 hits and the file's size
//! printed each time; closed, then the size after over the size before. Target: ≤ 1.2.
//!
//! Both work in a scratch folder (`CKPT_BENCH_DIR`, default the system temp dir), removed at the
//! end.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use redb::Durability;

use common::*;

const SIZE: usize = 256;
const FLUSH_EVERY: u64 = 1_000_000;

fn mib(n: u64) -> f64 {
    n as f64 / (1 << 20) as f64
}

/// A ckpt store of `entries` 256-byte values at `path`, saved with `save_all`, then closed.
fn ckpt_build(path: &Path, entries: u64) {
    let store = ckpt_store(path);
    let deco = ckpt_decorator(&store, "space");
    let saved = deco
        .save_all((0..entries).map(|n| ((n, ARG), compute(n, ARG, SIZE))))
        .expect("save_all");
    assert_eq!(saved as u64, entries);
    drop(deco);
    store.close().expect("close the ckpt store");
}

fn file(entries: u64, compact: bool) {
    let scratch = Scratch::new("space-file");
    let ckpt_path = scratch.file("ckpt.redb");
    let raw_path = scratch.file("raw.redb");

    let start = Instant::now();
    ckpt_build(&ckpt_path, entries);
    let ckpt_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    {
        let raw = RawRedb::open(&raw_path);
        raw.put_many(
            (0..entries).map(|n| {
                (
                    raw_key(n, ARG),
                    postcard::to_allocvec(&compute(n, ARG, SIZE)).unwrap(),
                )
            }),
            Durability::Immediate,
        );
    }
    let raw_s = start.elapsed().as_secs_f64();

    let (ckpt, raw) = (file_len(&ckpt_path), file_len(&raw_path));
    println!("space: {entries} entries of {SIZE} bytes, both files closed");
    println!("| file | bytes | MiB | ratio to raw redb | built in |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| raw redb, one transaction | {raw} | {:.1} | 1.00 | {raw_s:.1} s |",
        mib(raw)
    );
    println!(
        "| ckpt, save_all | {ckpt} | {:.1} | {:.3} | {ckpt_s:.1} s |",
        mib(ckpt),
        ckpt as f64 / raw as f64
    );
    println!(
        "{{\"case\":\"space_file\",\"entries\":{entries},\"size\":{SIZE},\"ckpt_bytes\":{ckpt},\
         \"raw_bytes\":{raw},\"ratio\":{:.4}}}",
        ckpt as f64 / raw as f64
    );

    if compact {
        let store = ckpt_store(&ckpt_path);
        let report = store.compact().expect("compact the ckpt store");
        store.close().expect("close the ckpt store");
        {
            let mut db = redb::Database::open(&raw_path).expect("open the raw file");
            while db.compact().expect("compact the raw file") {}
        }
        let (ckpt_c, raw_c) = (file_len(&ckpt_path), file_len(&raw_path));
        println!(
            "| raw redb, compacted | {raw_c} | {:.1} | 1.00 | |",
            mib(raw_c)
        );
        println!(
            "| ckpt, compacted | {ckpt_c} | {:.1} | {:.3} | (compact reported {} -> {}) |",
            mib(ckpt_c),
            ckpt_c as f64 / raw_c as f64,
            report.file_bytes_before,
            report.file_bytes_after
        );
        println!(
            "{{\"case\":\"space_file_compacted\",\"entries\":{entries},\"size\":{SIZE},\
             \"ckpt_bytes\":{ckpt_c},\"raw_bytes\":{raw_c},\"ratio\":{:.4}}}",
            ckpt_c as f64 / raw_c as f64
        );
    }
}

fn hits(hits: u64, entries: u64) {
    let scratch = Scratch::new("space-hits");
    let path = scratch.file("ckpt.redb");
    ckpt_build(&path, entries);
    let before = file_len(&path);
    println!(
        "space: {hits} hits cycling over {entries} entries of {SIZE} bytes; closed file before: \
         {before} bytes ({:.2} MiB)",
        mib(before)
    );
    println!("| hits | file bytes | ratio to before | elapsed |");
    println!("|---:|---:|---:|---:|");
    let store = ckpt_store(&path);
    let deco = ckpt_decorator(&store, "space");
    let start = Instant::now();
    let mut done = 0;
    while done < hits {
        let end = (done + FLUSH_EVERY).min(hits);
        for i in done..end {
            let v: Blob = deco
                .call((i % entries, black_box(ARG)), |_| -> Blob {
                    unreachable!("a hit")
                })
                .expect("ckpt hit");
            black_box(v);
        }
        done = end;
        store.flush().expect("flush");
        let now = file_len(&path);
        println!(
            "| {done} | {now} | {:.3} | {:.1} s |",
            now as f64 / before as f64,
            start.elapsed().as_secs_f64()
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(deco.stats().misses, 0, "every call was a hit");
    drop(deco);
    store.close().expect("close the ckpt store");
    let after = file_len(&path);
    println!(
        "closed after {hits} hits: {after} bytes ({:.2} MiB), {:.3}x the size before (target ≤ \
         1.2); {elapsed:.1} s of hits, {:.0} ns per hit with the flushes",
        mib(after),
        after as f64 / before as f64,
        elapsed * 1e9 / hits as f64
    );
    println!(
        "{{\"case\":\"space_hits\",\"entries\":{entries},\"hits\":{hits},\"before\":{before},\
         \"after\":{after},\"ratio\":{:.4},\"seconds\":{elapsed:.2}}}",
        after as f64 / before as f64
    );
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: keep that fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("space: run with `cargo bench --bench space -- file|hits ...`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let num = |k: usize, default: u64| {
        args.get(k)
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("file") => {
            let n = args[1..]
                .iter()
                .find_map(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            file(n, args.iter().any(|a| a == "compact"))
        }
        Some("hits") => hits(num(1, 10_000_000), num(2, 10_000)),
        _ => panic!("usage: space -- file [N] [compact] | hits [HITS] [ENTRIES]"),
    }
}
