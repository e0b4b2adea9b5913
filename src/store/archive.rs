//! Moving entries between stores: [`Store::export`](crate::Store::export) writes them to a
//! portable archive, [`Store::import`](crate::Store::import) reads one back. Records travel
//! unchanged (same id, same bytes), with the metadata and the function identity they need.
//!
//! The format (ARCHITECTURE.md, "The archive", has it byte by byte): a 40-byte header (magic,
//! format version, id scheme, export time, checksum), then frames, each
//! `kind ‖ u64le body length ‖ body ‖ xxh3-64(kind ‖ length ‖ body)`: one per function, one per
//! entry, and an end frame with the counts and the xxh3-64 of every byte before it.
//!
//! Reading trusts nothing: every length is bounded before anything is allocated for it, and
//! memory grows only as bytes actually arrive, so a hostile archive (lying lengths, truncation,
//! garbage) costs at most its own size and fails with an error, never a panic.
//!
//! One file a side: `archive/export.rs` writes archives, `archive/import.rs` reads them; this
//! file holds what both agree on (the format's constants, which function rows can travel).

mod export;
mod import;
#[cfg(test)]
mod tests;

pub use self::export::ExportReport;
pub use self::import::ImportReport;
use crate::id::Function;
use crate::store::schema::FunctionRecord;

/// The archive format version this ckpt writes, and the newest it reads.
pub const ARCHIVE_VERSION: u32 = 1;

/// The first 8 bytes of every archive: a non-ASCII byte, `ckpt`, CR LF, and ^Z (like PNG's, it
/// catches transfers that rewrite line ends or strip the high bit).
pub const ARCHIVE_MAGIC: [u8; 8] = *b"\x89ckpt\r\n\x1a";

const HEADER_LEN: usize = 40;
const KIND_FUNCTION: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_END: u8 = 0xff;
/// The fixed part of an entry frame's body, before the record.
const ENTRY_FIXED: usize = 64;
const END_LEN: u64 = 32;
/// Longest module path, name or version in a function frame.
const MAX_NAME: usize = 64 * 1024;
/// Longest function frame body.
const MAX_FUNCTION_BODY: u64 = 8 + 8 + 1 + 8 + 3 * (4 + MAX_NAME as u64);
/// Longest record an archive may carry (a bound on what a frame may claim, not an allocation:
/// memory grows only as bytes arrive). Records over 512 KiB are stored in chunks, so a store can
/// hold longer ones; an export leaves those out and counts them as damaged.
pub const MAX_ARCHIVE_RECORD: u64 = 64 << 30;
/// Memory grows by at most this much ahead of the bytes actually read.
const READ_CHUNK: usize = 1 << 20;

/// Whether a function row names its function well enough to be imported under it: a module and
/// name whose key is the row's key, and whose identity gives the row's code version.
pub(super) fn identity_of(key: u64, r: &FunctionRecord) -> Option<Function> {
    if r.name.is_empty() || r.module.len() > MAX_NAME || r.name.len() > MAX_NAME {
        return None;
    }
    if r.version.as_ref().is_some_and(|v| v.len() > MAX_NAME) {
        return None;
    }
    let mut f = Function::new(r.module.clone(), r.name.clone());
    if let Some(h) = r.code_hash {
        f = f.with_code_hash(h);
    }
    if let Some(v) = &r.version {
        f = f.with_version(v.clone());
    }
    (f.key() == key && f.code_version() == r.code_version).then_some(f)
}
