//! The attempts of a salvage, in order: a fresh private copy of the damaged file for each (padded
//! with zeros to the length its header gives, if truncated), opened by the engine checking every
//! page, then trusting the file, then as a reader; then, if the engine cannot read it at all,
//! the scan of its pages.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{Database, ReadTransaction, ReadableDatabase};

use super::harvest::{Reading, harvest};
use super::{SOURCE_CACHE, SalvageMethod, SalvageReport};
use crate::error::{Error, ErrorKind};

/// A private copy of `damaged` at `copy`, extended with zeros to `pad` bytes if shorter.
fn make_copy(damaged: &Path, copy: &Path, pad: Option<u64>) -> Result<(), Error> {
    let _ = fs::remove_file(copy);
    let storage = |e| Error::storage(format!("cannot copy {}", damaged.display()), e);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(copy).map_err(storage)?;
    let mut input = File::open(damaged).map_err(storage)?;
    io::copy(&mut input, &mut out).map_err(storage)?;
    if let Some(len) = pad
        && out.metadata().map_err(storage)?.len() < len
    {
        out.set_len(len).map_err(storage)?;
    }
    Ok(())
}

/// How the engine opens the copy, in the order tried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// Checking every page's checksum, repairing what it can.
    Full,
    /// Trusting the file (its recorded allocator state, or a rebuild of it).
    Trust,
    /// Read only, as a reader beside other processes' writers: the engine then needs no
    /// allocator state at all, which a truncated file has usually lost (it is written last).
    Reader,
}

/// The engine's handle on the copy.
pub(super) enum Source {
    Writable(Database),
    Reader(redb::ReadOnlyDatabase),
}

impl Source {
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        match self {
            Source::Writable(db) => db.begin_read(),
            Source::Reader(db) => db.begin_read(),
        }
    }
}

/// Opens the copy, containing any panic of the engine.
fn open_copy(copy: &Path, attempt: Attempt) -> Result<Source, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(SOURCE_CACHE)
            .set_check_integrity_on_open(attempt == Attempt::Full);
        match attempt {
            Attempt::Reader => builder
                .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
                .open_read_only(copy)
                .map(Source::Reader),
            _ => builder.open(copy).map(Source::Writable),
        }
        .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|p| {
        Err(format!(
            "the storage engine panicked: {}",
            crate::store::engine::panic_message(&*p)
        ))
    })
}

/// The length the file's header gives it, from the engine's refusal of a truncated file.
pub(super) fn truncated_to(message: &str) -> Option<u64> {
    // redb 4.5: "File truncated below stored layout: file_len=N, layout_len=M".
    let rest = message.split("layout_len=").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Closes the engine's handle on the damaged copy; its destructor can panic on a damaged file.
fn close(db: Source) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
}

pub(super) fn salvage_into(
    damaged: &Path,
    copy: &Path,
    building: &Path,
    file_bytes: u64,
) -> Result<SalvageReport, Error> {
    let mut pad = None;
    let mut failures = Vec::new();
    for attempt in [Attempt::Full, Attempt::Trust, Attempt::Reader] {
        // A fresh copy for each attempt: a failed open may have changed the last one.
        make_copy(damaged, copy, pad)?;
        let mut opened = open_copy(copy, attempt);
        if let Err(message) = &opened
            && pad.is_none()
            && let Some(len) = truncated_to(message).filter(|&l| l > file_bytes)
        {
            pad = Some(len);
            make_copy(damaged, copy, pad)?;
            opened = open_copy(copy, attempt);
        }
        let db = match opened {
            Ok(db) => db,
            Err(message) => {
                failures.push(message);
                continue;
            }
        };
        let method = match attempt {
            Attempt::Full => SalvageMethod::Checked,
            _ => SalvageMethod::Unchecked,
        };
        let source = Reading {
            damaged,
            copy,
            method,
            file_bytes,
        };
        let harvested = harvest(Some(&db), &source, building);
        close(db);
        match harvested? {
            Some(mut report) => {
                report.truncated = pad.is_some();
                return Ok(report);
            }
            // The engine opened the file but could not begin reading it: try the next way.
            None => continue,
        }
    }
    // The engine cannot read the file at all: its pages, one by one.
    make_copy(damaged, copy, pad)?;
    let source = Reading {
        damaged,
        copy,
        method: SalvageMethod::Scanned,
        file_bytes,
    };
    if let Some(mut report) = harvest(None, &source, building)? {
        report.truncated = pad.is_some();
        return Ok(report);
    }
    Err(Error::new(
        ErrorKind::Corrupted,
        format!(
            "nothing can be salvaged from {}: the storage engine cannot read it ({}), and no \
             page of it holds an entry; delete it (checkpoints are recomputable) or restore it \
             from a backup",
            damaged.display(),
            failures.join("; ")
        ),
    ))
}
