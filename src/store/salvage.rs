//! Salvage ([`Store::salvage`]): copying every entry of a damaged store file that still passes
//! its own checks into a new store, with the metadata and statistics that can still be read.
//!
//! The damaged file is never written: each attempt works on a private copy of it, beside the new
//! store, removed at the end. Attempts, in order:
//!
//! 1. The engine's integrity check and repair (as [`OpenCheck::Full`](crate::OpenCheck) does):
//!    every page the tables reach has passed its checksum, so every row read is the one written.
//! 2. Without the engine's check (a fresh copy opened as [`OpenCheck::Trust`] does): pages are
//!    read unverified, so every row is taken as a claim. A record is copied only if it passes
//!    its own checksum (all its chunks, for a large one) and its metadata row, under the same
//!    id, agrees on its size: a damaged key cannot attach a sound record to another id. Tables
//!    are walked in key order, skipping rows that come out of order and jumping past pages the
//!    engine cannot read, and every engine call runs inside `catch_unwind`.
//!
//! A file shorter than its header says (truncated) is padded with zeros to that length in the
//! copy, so that the pages before the cut can still be read.
//!
//! The new store is built under a temporary name in its folder and linked into place only when
//! complete, as a new store is created (`open.rs`): a failed salvage leaves nothing at the path.
//!
//! One file an idea: this one holds the public report and the entry point (checks on the paths,
//! the new store linked into place); `salvage/attempts.rs` the private copy and the ways the
//! engine opens it; `salvage/tables.rs` the walks of the damaged tables; `salvage/harvest.rs`
//! the writing of what passes into the new store; `salvage/scan.rs` the last resort.

mod attempts;
mod harvest;
mod scan;
mod tables;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use self::attempts::salvage_into;
use super::Store;
use super::open::create_private_dir;
use crate::error::{Error, ErrorKind};

/// How [`Store::salvage`] read the damaged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SalvageMethod {
    /// The storage engine's integrity check passed, after its repair (which may roll the file
    /// back to its last sound commit): every row read is the one written.
    Checked,
    /// The engine's check failed, so the file was read without it, through the engine's
    /// trees and by scanning its pages for what they no longer reach: only records that pass
    /// their own checksum, under an id whose metadata row agrees on their size, were copied.
    Unchecked,
    /// The engine could not open the file at all: its pages were scanned, under the same rule
    /// as [`Unchecked`](SalvageMethod::Unchecked).
    Scanned,
}

/// What [`Store::salvage`] recovered from a damaged store, and what it lost.
///
/// ```
/// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-salvage-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = Store::open(dir.join("damaged.redb"))?;
/// let square = DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, store.clone());
/// square.call(9u64, |x| x * x)?;
/// drop((square, store));
///
/// let report = Store::salvage(dir.join("damaged.redb"), dir.join("salvaged.redb"))?;
/// assert_eq!((report.entries_recovered, report.entries_lost), (1, 0));
/// assert!(report.stats_recovered);
/// let salvaged = Store::open(dir.join("salvaged.redb"))?;
/// assert_eq!(salvaged.stats()?.entries, 1);
/// # drop(salvaged); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// How the damaged file was read.
    pub method: SalvageMethod,
    /// The file was shorter than its own header says (truncated); the copy read was padded
    /// with zeros to that length.
    pub truncated: bool,
    /// Entries copied into the new store, each with a record that passed its checksum.
    pub entries_recovered: u64,
    /// Of those, entries found by scanning the file's pages, out of the storage engine's reach
    /// (only when its check failed).
    pub entries_scanned: u64,
    /// Bytes of the records copied.
    pub record_bytes: u64,
    /// Entries of the damaged store not recovered: those its function rows count, less those
    /// recovered, when every function row was read; otherwise those whose id was found in one
    /// of its tables or pages, less those recovered. An estimate: entries on pages that could
    /// not be read at all leave no trace but the function rows' counts.
    pub entries_lost: u64,
    /// Entries recovered whose metadata row could not be read: recreated with the time of the
    /// salvage as their creation and last access, no hits, and the function
    /// `ckpt::salvage::unknown`. Only where the id is sure without it: the engine's check
    /// passed, or the record is in chunks (every chunk's key repeats the id, and the record's
    /// checksum runs across them).
    pub metadata_rebuilt: u64,
    /// Function rows copied with their identity and lifetime statistics.
    pub functions_recovered: u64,
    /// Functions with recovered entries whose row could not be read: recreated without a name
    /// or statistics (as [`Store::repair`] does; [`Store::export`] leaves their entries out).
    pub functions_rebuilt: u64,
    /// Every function row (identity and call statistics) was read.
    pub stats_recovered: bool,
    /// Size of the damaged file, in bytes.
    pub file_bytes: u64,
}

impl SalvageReport {
    /// The share of the damaged store's entries recovered (1.0 when it held none).
    pub fn recovered_share(&self) -> f64 {
        let total = self.entries_recovered + self.entries_lost;
        if total == 0 {
            1.0
        } else {
            self.entries_recovered as f64 / total as f64
        }
    }
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {} entries ({} bytes of records), lost {}",
            self.entries_recovered, self.record_bytes, self.entries_lost
        )?;
        f.write_str(match self.method {
            SalvageMethod::Checked => "; the file passed the storage engine's check",
            SalvageMethod::Unchecked => {
                "; the file failed the storage engine's check, so each record was checked alone"
            }
            SalvageMethod::Scanned => {
                "; the storage engine cannot open the file, so its pages were scanned and each \
                 record checked alone"
            }
        })?;
        if self.truncated {
            f.write_str("; the file was truncated")?;
        }
        if self.metadata_rebuilt > 0 {
            write!(f, "; {} metadata rows rebuilt", self.metadata_rebuilt)?;
        }
        if self.functions_rebuilt > 0 {
            write!(
                f,
                "; {} function rows rebuilt without names or statistics",
                self.functions_rebuilt
            )?;
        }
        if !self.stats_recovered {
            f.write_str("; some statistics were lost")?;
        }
        Ok(())
    }
}

/// Cache of the engine reading the damaged copy.
const SOURCE_CACHE: usize = 64 << 20;
/// How many times a table walk may jump past a page the engine cannot read.
const MAX_SKIPS: u32 = 512;

impl Store {
    /// Copies every entry of the store file `damaged` whose record still passes its checks into
    /// a new store at `new`, with its metadata and its functions' statistics where they can be
    /// read, and reports what was recovered and what was lost. For a file that opening refuses
    /// as corrupted, or that [`Store::repair`] cannot fix: salvage it, then use the new store
    /// in its place.
    ///
    /// `damaged` is only read, never written (the storage engine works on a private copy,
    /// beside `new`, removed at the end). No value is ever copied that was not saved under its
    /// id: see [`SalvageMethod`]. The new store is complete or absent: it is built under a
    /// temporary name and linked into place at the end.
    ///
    /// Example: see [`SalvageReport`].
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if `new` exists; [`ErrorKind::InvalidInput`] if `damaged`
    /// is missing, empty or a directory; [`ErrorKind::Open`] (an [`OpenError`](crate::OpenError)
    /// of kind [`OpenErrorKind::NotAStore`](crate::OpenErrorKind::NotAStore) as source) if it is
    /// not a ckpt store;
    /// [`ErrorKind::Corrupted`] if the storage engine cannot read it at all (nothing is
    /// recoverable); [`ErrorKind::Storage`] if the copy or the new store cannot be written.
    pub fn salvage(
        damaged: impl AsRef<Path>,
        new: impl AsRef<Path>,
    ) -> Result<SalvageReport, Error> {
        salvage(damaged.as_ref(), new.as_ref())
    }
}

fn salvage(damaged: &Path, new: &Path) -> Result<SalvageReport, Error> {
    let file_bytes = match fs::metadata(damaged) {
        Ok(m) if m.is_dir() => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is a directory, not a store file", damaged.display()),
            ));
        }
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("no store file at {}", damaged.display()),
            ));
        }
        Err(e) => {
            return Err(Error::storage(
                format!("cannot read {}", damaged.display()),
                e,
            ));
        }
    };
    if file_bytes == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is empty: there is nothing to salvage",
                damaged.display()
            ),
        ));
    }
    if fs::symlink_metadata(new).is_ok() {
        return Err(exists(new));
    }
    let dir = match new.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)
        .map_err(|e| Error::storage(format!("cannot create {}", dir.display()), e))?;
    let copy = temporary(new, "source");
    let building = temporary(new, "salvage");
    let result = salvage_into(damaged, &copy, &building, file_bytes);
    let _ = fs::remove_file(&copy);
    let result = result.and_then(|report| {
        link_into_place(&building, new)?;
        Ok(report)
    });
    let _ = fs::remove_file(&building);
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    result
}

fn exists(new: &Path) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} exists; salvage into a new file (the salvaged store is created, never merged)",
            new.display()
        ),
    )
}

/// A name beside `target`, unique to this process and call.
fn temporary(target: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.{what}-{}-{n}.tmp", std::process::id()))
}

/// Puts the complete store at `new`, never over an existing file.
fn link_into_place(building: &Path, new: &Path) -> Result<(), Error> {
    match fs::hard_link(building, new) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists(new)),
        // No hard links on this file system: a rename, after a last look (a file created in
        // between would be replaced).
        Err(_) if fs::symlink_metadata(new).is_ok() => Err(exists(new)),
        Err(_) => fs::rename(building, new)
            .map_err(|e| Error::storage(format!("cannot create {}", new.display()), e)),
    }
}

/// Runs an engine read, containing its panic: `None` when it failed or panicked.
fn contained<T, E>(f: impl FnOnce() -> Result<T, E>) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()?.ok()
}
