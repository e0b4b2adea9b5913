//! Helpers shared by the integration tests: private temporary folders, and direct access to a
//! store file through redb (to check its tables, or to tamper with them).
//!
//! Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// A fresh folder under the system temp dir, unique to this process and this test, removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty folder; `label` only makes it easier to find.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ckpt-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of a store file inside the folder.
    pub fn store_path(&self) -> PathBuf {
        self.path.join("checkpoints.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// The store's tables, spelled exactly as `src/store/schema.rs` defines them (redb checks the key
// and value types when a table is opened).
pub const RESULTS: TableDefinition<'static, &[u8; 16], &[u8]> =
    TableDefinition::new("ckpt_results");
pub const ENTRIES: TableDefinition<'static, &[u8; 16], &[u8; 64]> =
    TableDefinition::new("ckpt_entries");

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
