//! The workload and the systems every bench compares, side by side.
//!
//! The workload: a function of `(u64, a 32-byte String)` returning a value of N bytes. The value
//! is a byte buffer serialized as bytes (`serde_bytes`), the way a user who returns bytes writes
//! it; a plain `Vec<u8>` would be serialized element by element by every serde format, which
//! measures serde rather than the stores.
//!
//! Systems:
//! * `ckpt`: [`DecoratorCheckpoint`] with [`AutoIdentifier`] over a redb [`Store`];
//! * `ckpt_macro`: a `checkpoint!` function (its decorator behind an `Arc<dyn Cache>`), defined in
//!   each bench file since the macro needs module scope;
//! * `ckpt_hot`: `ckpt` with the store's in-process hot tier on (`StoreBuilder::hot_tier`);
//! * `raw_redb`: redb 4.5 by hand: key xxh3-128 of the postcard-encoded arguments, `begin_read`
//!   + `open_table` + `get` + copy on a hit, one write transaction per save;
//! * `cached`: the `cached` crate's `RedbCache<String, V>` (also redb 4.5), keyed by the
//!   arguments formatted to a string, as its `#[io_cached]` macro's `convert` does;
//! * `moka`: `moka::sync::Cache<(u64, String), V>` in memory, the reference.
//!
//! Both redb databases get the same page cache (ckpt's default, 256 MiB).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cached::{ConcurrentCached, RedbCache};
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Store};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

/// The string argument: 32 bytes.
pub const ARG: &str = "0123456789abcdef0123456789abcdef";

/// The page cache both redb databases get (ckpt's default).
pub const REDB_CACHE: usize = 256 << 20;

/// Value sizes: the 256 B, 4 KiB, 1 MiB.
pub const SIZES: [(usize, &str); 3] = [(256, "256B"), (4096, "4KiB"), (1 << 20, "1MiB")];

/// How many entries a hit bench's store holds for a value size (1 MiB values: fewer, to keep the
/// files small).
pub fn entries_for(size: usize) -> u64 {
    if size >= 1 << 20 { 64 } else { 10_000 }
}

/// The function's result: bytes, serialized as bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The "expensive" function, made cheap: the benches measure the overhead around it.
#[inline(never)]
pub fn compute(n: u64, s: &str, size: usize) -> Blob {
    let mut v = vec![n as u8; size];
    v[0] = s.len() as u8;
    Blob(v)
}

/// The i-th key of a store holding `entries` keys, visited in a scattered order.
#[inline]
pub fn scattered(i: u64, entries: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % entries
}

/// Fresh, never-used arguments for misses (unique across the process).
pub fn fresh() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A scratch folder, removed on drop. Under `CKPT_BENCH_DIR` if set, else the system temp dir.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let base = std::env::var_os("CKPT_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("ckpt-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// ckpt

pub type Ckpt = DecoratorCheckpoint<AutoIdentifier, Store>;

pub fn ckpt_store(path: &Path) -> Store {
    Store::open(path).expect("open the ckpt store")
}

/// The in-process hot tier the `ckpt_hot` rows use: large enough for every bench's working set
/// (10,000 values of 4 KiB).
pub const HOT_TIER: usize = 128 << 20;

/// A store with a hot tier ([`HOT_TIER`]).
pub fn ckpt_hot_store(path: &Path) -> Store {
    Store::builder()
        .hot_tier(HOT_TIER)
        .open(path)
        .expect("open the ckpt store")
}

/// How long a relaxed save may stay volatile in the `miss_relaxed` rows.
pub const RELAXED_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// A store with relaxed durability: commits without an fsync, synced within
/// [`RELAXED_WITHIN`].
pub fn ckpt_relaxed_store(path: &Path) -> Store {
    Store::builder()
        .durability(ckpt::Durability::Relaxed {
            within: RELAXED_WITHIN,
        })
        .open(path)
        .expect("open the ckpt store")
}

pub fn ckpt_decorator(store: &Store, name: &'static str) -> Ckpt {
    DecoratorCheckpoint::new(Function::new("bench", name), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise)
}

/// One call through the decorator: a hit, or a miss that computes and saves.
#[inline]
pub fn ckpt_call(d: &Ckpt, n: u64, s: &str, size: usize) -> Blob {
    d.call((n, s), |(n, s)| compute(n, s, size))
        .expect("ckpt call")
}

/// Fills a decorator's store with keys `0..entries`, from several threads so that group commit
/// batches the saves.
pub fn ckpt_fill(d: &Ckpt, entries: u64, size: usize) {
    parallel_fill(entries, |n| {
        ckpt_call(d, n, ARG, size);
    });
}

/// Runs `save(n)` for every `n` in `0..entries` from 32 threads.
pub fn parallel_fill(entries: u64, save: impl Fn(u64) + Sync) {
    parallel_fill_with(32, entries, save);
}

/// Runs `save(n)` for every `n` in `0..entries` from `threads` threads.
pub fn parallel_fill_with(threads: u64, entries: u64, save: impl Fn(u64) + Sync) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            let save = &save;
            scope.spawn(move || {
                let mut n = t;
                while n < entries {
                    save(n);
                    n += threads;
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// raw redb

const RAW: TableDefinition<'static, u128, &[u8]> = TableDefinition::new("results");

pub struct RawRedb {
    pub db: Database,
}

/// The raw key: xxh3-128 of the postcard-encoded arguments.
#[inline]
pub fn raw_key(n: u64, s: &str) -> u128 {
    let mut buf = [0u8; 64];
    let used = postcard::to_slice(&(n, s), &mut buf).expect("arguments fit 64 bytes");
    xxh3_128(used)
}

impl RawRedb {
    pub fn open(path: &Path) -> RawRedb {
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE)
            .create(path)
            .expect("create the raw redb file");
        let txn = db.begin_write().unwrap();
        txn.open_table(RAW).unwrap();
        txn.commit().unwrap();
        RawRedb { db }
    }

    /// A hit: `begin_read` + `get` + copy.
    #[inline]
    pub fn get(&self, key: u128) -> Option<Blob> {
        let txn = self.db.begin_read().unwrap();
        let table = txn.open_table(RAW).unwrap();
        table.get(key).unwrap().map(|v| Blob(v.value().to_vec()))
    }

    /// A hit that hands the stored bytes to `f` while the read guard is alive (`begin_read` +
    /// `open_table` + `get` + `f`): `f` decodes or copies them.
    #[inline]
    pub fn get_with<R>(&self, key: u128, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let txn = self.db.begin_read().unwrap();
        let table = txn.open_table(RAW).unwrap();
        table.get(key).unwrap().map(|v| f(v.value()))
    }

    /// One write transaction per save.
    pub fn put(&self, key: u128, value: &[u8], durability: Durability) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        {
            let mut table = txn.open_table(RAW).unwrap();
            table.insert(key, value).unwrap();
        }
        txn.commit().unwrap();
    }

    /// Many saves in one transaction.
    pub fn put_many(&self, rows: impl Iterator<Item = (u128, Vec<u8>)>, durability: Durability) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        {
            let mut table = txn.open_table(RAW).unwrap();
            for (k, v) in rows {
                table.insert(k, v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// The memoized call: get, else compute and save.
    #[inline]
    pub fn call(&self, n: u64, s: &str, size: usize, durability: Durability) -> Blob {
        let key = raw_key(n, s);
        if let Some(v) = self.get(key) {
            return v;
        }
        let v = compute(n, s, size);
        self.put(key, &v.0, durability);
        v
    }

    pub fn fill(&self, entries: u64, size: usize) {
        self.put_many(
            (0..entries).map(|n| (raw_key(n, ARG), compute(n, ARG, size).0)),
            Durability::Immediate,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// cached's RedbCache

pub type Cached = RedbCache<String, Blob>;

/// The key `cached`'s `#[io_cached(disk = true)]` users build (`convert = { format!(..) }`).
#[inline]
pub fn cached_key(n: u64, s: &str) -> String {
    format!("{n}:{s}")
}

pub fn cached_open(dir: &Path, name: &str, durable: bool) -> Cached {
    RedbCache::builder(name)
        .disk_dir(dir)
        .durable(durable)
        .build()
        .expect("build the cached RedbCache")
}

#[inline]
pub fn cached_call(c: &Cached, n: u64, s: &str, size: usize) -> Blob {
    let key = cached_key(n, s);
    if let Some(v) = c.cache_get(&key).expect("cached get") {
        return v;
    }
    let v = compute(n, s, size);
    c.cache_set(key, v.clone()).expect("cached set");
    v
}

/// Fills a `cached` store with keys `0..entries` (no fsync per save, one at the end), then
/// reopens it with the durability asked for.
pub fn cached_fill(dir: &Path, name: &str, entries: u64, size: usize, durable: bool) -> Cached {
    {
        let c = cached_open(dir, name, false);
        for n in 0..entries {
            c.cache_set(cached_key(n, ARG), compute(n, ARG, size))
                .expect("cached set");
        }
        c.flush().expect("cached flush");
    }
    cached_open(dir, name, durable)
}

// ---------------------------------------------------------------------------------------------
// moka

pub type Moka = moka::sync::Cache<(u64, String), Blob>;

pub fn moka_new() -> Moka {
    moka::sync::Cache::new(1 << 20)
}

/// The memoized call. The key is built from the arguments, as a memoizing wrapper must.
#[inline]
pub fn moka_call(m: &Moka, n: u64, s: &str, size: usize) -> Blob {
    let key = (n, s.to_owned());
    if let Some(v) = m.get(&key) {
        return v;
    }
    let v = compute(n, s, size);
    m.insert(key, v.clone());
    v
}

pub fn moka_fill(m: &Moka, entries: u64, size: usize) {
    for n in 0..entries {
        m.insert((n, ARG.to_owned()), compute(n, ARG, size));
    }
    m.run_pending_tasks();
}

/// The folder bench fixtures live in (`CKPT_BENCH_FIXTURES`, default
/// `target/ckpt-bench-fixtures`), created if missing.
pub fn fixture_dir() -> PathBuf {
    let dir = std::env::var_os("CKPT_BENCH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/ckpt-bench-fixtures"));
    std::fs::create_dir_all(&dir).expect("create the fixture folder");
    dir
}

/// Peak and current resident memory of this process, in bytes (Linux).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets this process's peak resident memory (VmHWM) to its current resident memory (Linux
/// 4.0+: `5` into `/proc/self/clear_refs`). False when the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// A file's size in bytes (0 when missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The median of `v` (sorted in place); NaN when empty.
pub fn median_of(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes as "256 B", "4 KiB", "1 MiB", "1.5 GiB".
pub fn bytes_label(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The interleaved benches' round count: `CKPT_BENCH_ROUNDS` if set, else `default`.
pub fn rounds_or(default: usize) -> usize {
    std::env::var("CKPT_BENCH_ROUNDS").map_or(default, |v| v.parse().expect("CKPT_BENCH_ROUNDS"))
}
