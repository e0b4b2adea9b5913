//! Helpers shared by the integration tests: private temporary folders, a seeded generator, a
//! deadline for code that could hang, and direct access to a store file through redb (to check
//! its tables, or to tamper with them).
//!
//! Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// A fresh folder under the system temp dir, unique to this process and this test, removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty folder; `label` only makes it easier to find.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ckpt-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir(path)
    }

    /// For a store held in a static, which is never dropped: a folder in cargo's temporary
    /// folder for tests (under `target/`), so that no run leaves one in the system's.
    pub fn for_static(label: &str) -> TempDir {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ckpt-static-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path of a store file inside the folder.
    pub fn store_path(&self) -> PathBuf {
        self.0.join("checkpoints.redb")
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// The store's tables, spelled exactly as `src/store/schema.rs` defines them (redb checks the key
// and value types when a table is opened).
pub const RESULTS: TableDefinition<'static, &[u8; 16], &[u8]> =
    TableDefinition::new("ckpt_results");
pub const ENTRIES: TableDefinition<'static, &[u8; 16], &[u8; 64]> =
    TableDefinition::new("ckpt_entries");
/// (id, chunk index BE) -> a chunk of a large record.
pub const CHUNKS: TableDefinition<'static, &[u8; 20], &[u8]> = TableDefinition::new("ckpt_chunks");

/// Every chunk row of a closed store file, in key order.
pub fn read_chunks(path: &Path) -> Vec<([u8; 20], Vec<u8>)> {
    let db = Database::open(path).expect("open the store file with redb");
    let txn = db.begin_read().unwrap();
    let Ok(table) = txn.open_table(CHUNKS) else {
        return Vec::new();
    };
    table
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (*k.value(), v.value().to_vec())
        })
        .collect()
}

/// Edits the chunk rows of a closed store file: `edit` gets each key and chunk and returns what
/// to do with it (`Some(Some(bytes))` replace, `Some(None)` remove, `None` leave).
pub fn tamper_chunks(
    path: &Path,
    mut edit: impl FnMut(&[u8; 20], &[u8]) -> Option<Option<Vec<u8>>>,
) {
    let rows = read_chunks(path);
    let db = Database::open(path).expect("open the store file with redb");
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(CHUNKS).unwrap();
        for (key, bytes) in rows {
            match edit(&key, &bytes) {
                Some(Some(new)) => {
                    table.insert(&key, new.as_slice()).unwrap();
                }
                Some(None) => {
                    table.remove(&key).unwrap();
                }
                None => {}
            }
        }
    }
    txn.commit().unwrap();
}

/// Everything in the two entry tables of a closed store file.
#[derive(Debug, Default)]
pub struct Rows {
    /// id -> record bytes.
    pub results: Vec<([u8; 16], Vec<u8>)>,
    /// id -> 64-byte metadata row.
    pub entries: Vec<([u8; 16], [u8; 64])>,
}

/// Reads the entry tables of the store file at `path`. The file must not be open in ckpt.
pub fn read_rows(path: &Path) -> Rows {
    let db = Database::open(path).expect("open the store file with redb");
    let txn = db.begin_read().unwrap();
    let mut rows = Rows::default();
    for row in txn.open_table(RESULTS).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        rows.results.push((*k.value(), v.value().to_vec()));
    }
    for row in txn.open_table(ENTRIES).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        rows.entries.push((*k.value(), *v.value()));
    }
    rows
}

/// Rewrites the result rows of a closed store file: `edit` gets each id and its record bytes and
/// returns the bytes to store instead (`None`: leave the row alone).
pub fn tamper_results(path: &Path, mut edit: impl FnMut(&[u8; 16], &[u8]) -> Option<Vec<u8>>) {
    let db = Database::open(path).expect("open the store file with redb");
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(RESULTS).unwrap();
        let rows: Vec<([u8; 16], Vec<u8>)> = table
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (*k.value(), v.value().to_vec())
            })
            .collect();
        for (id, bytes) in rows {
            if let Some(new) = edit(&id, &bytes) {
                table.insert(&id, new.as_slice()).unwrap();
            }
        }
    }
    txn.commit().unwrap();
}

/// A little-endian u64 at `at` in a metadata row.
pub fn meta_word(row: &[u8; 64], at: usize) -> u64 {
    u64::from_le_bytes(row[at..at + 8].try_into().unwrap())
}

/// A small deterministic generator (splitmix64): tests print their seed and rerun with it.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn from_env(var: &str, default: u64) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("{var}={seed}");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Runs `f` on another thread and fails the test if it takes longer than `secs`: a hang is a
/// failure, not a stuck test run.
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sent nothing and did not panic"),
        },
        Err(_) => panic!("{what} did not finish within {secs} s (a hang)"),
    }
}

/// The size of the record ckpt stores for a `Vec<u8>` of `n` bytes: a 32-byte header, then
/// postcard's varint length and the bytes.
pub fn record_size_of_bytes(n: usize) -> u64 {
    let mut varint = 1;
    let mut v = n >> 7;
    while v > 0 {
        varint += 1;
        v >>= 7;
    }
    (32 + varint + n) as u64
}

/// Counts how often a body ran.
#[derive(Default)]
pub struct Runs(AtomicUsize);

impl Runs {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs `body` on the current tokio runtime beside a task that sleeps 1 ms at a time, and
/// returns `body`'s output and the ticker's worst lateness: how long something held the
/// runtime's thread (on a current-thread runtime, the one `body` runs on).
pub async fn beside_ticker<T>(
    body: impl std::future::Future<Output = T>,
) -> (T, std::time::Duration) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    let done = Arc::new(AtomicBool::new(false));
    let ticking = Arc::clone(&done);
    let ticker = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        while !ticking.load(Ordering::SeqCst) {
            let at = Instant::now();
            tokio::time::sleep(Duration::from_millis(1)).await;
            worst = worst.max(at.elapsed().saturating_sub(Duration::from_millis(1)));
        }
        worst
    });
    let out = body.await;
    done.store(true, Ordering::SeqCst);
    (out, ticker.await.expect("the ticker task"))
}
