//! Writing an archive: [`Store::export`] and [`Store::export_of`], from one read snapshot, one
//! frame at a time (a large record a chunk at a time), every frame checksummed as written.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};

use redb::{ReadTransaction, ReadableTable};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use super::{
    ARCHIVE_MAGIC, ARCHIVE_VERSION, END_LEN, ENTRY_FIXED, HEADER_LEN, KIND_END, KIND_ENTRY,
    KIND_FUNCTION, MAX_ARCHIVE_RECORD, identity_of,
};
use crate::cache::Parts;
use crate::error::Error;
use crate::id::Function;
use crate::identifier::ID_SCHEME;
use crate::record;
use crate::store::Store;
use crate::store::chunks::{self, ChunksRead, Manifest, TableParts};
use crate::store::engine_error::engine_error;
use crate::store::schema::{ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, RESULTS};

/// What [`Store::export`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Function frames written (functions with at least one exported entry).
    pub functions: u64,
    /// Entries written.
    pub entries: u64,
    /// Bytes of the records written.
    pub record_bytes: u64,
    /// Bytes of the whole archive.
    pub archive_bytes: u64,
    /// Entries left out because their function's identity is unknown (its row was lost and
    /// recreated by [`Store::repair`] without a name): they could not be imported under the
    /// right function.
    pub skipped_unnamed: u64,
    /// Entries left out because their metadata or record is damaged (see [`Store::verify`]).
    pub skipped_damaged: u64,
}

fn write_error(e: io::Error) -> Error {
    Error::storage("cannot write the archive", e)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Xxh3Default,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.inner.write_all(bytes).map_err(write_error)?;
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Writes one frame whose body is `parts` concatenated.
    fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), Error> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut sum = Xxh3Default::new();
        let head = frame_head(kind, len);
        sum.update(&head);
        self.put(&head)?;
        for p in parts {
            sum.update(p);
            self.put(p)?;
        }
        self.put(&sum.digest().to_le_bytes())
    }

    /// Writes one frame whose body is `fixed` followed by a record in `parts`, read one part at
    /// a time.
    fn frame_parts(&mut self, kind: u8, fixed: &[u8], parts: &dyn Parts) -> Result<(), Error> {
        let len = fixed.len() as u64 + parts.len();
        let mut sum = Xxh3Default::new();
        let head = frame_head(kind, len);
        sum.update(&head);
        self.put(&head)?;
        sum.update(fixed);
        self.put(fixed)?;
        for i in 0..parts.count() {
            let part = parts.part(i)?;
            sum.update(&part);
            self.put(&part)?;
        }
        self.put(&sum.digest().to_le_bytes())
    }
}

/// `ckpt_chunks`, if the file has it.
fn chunks_table(txn: &ReadTransaction) -> Result<Option<ChunksRead>, Error> {
    chunks::open_read(txn).map_err(|e| engine_error("cannot open the chunks table", e))
}

fn frame_head(kind: u8, len: u64) -> [u8; 9] {
    let mut head = [0u8; 9];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_le_bytes());
    head
}

pub(super) fn header(exported_ms: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&ARCHIVE_MAGIC);
    h[8..12].copy_from_slice(&ARCHIVE_VERSION.to_le_bytes());
    // 12..16: flags, zero.
    h[16..20].copy_from_slice(&u32::from(ID_SCHEME).to_le_bytes());
    // 20..24: reserved, zero.
    h[24..32].copy_from_slice(&exported_ms.to_le_bytes());
    let sum = xxh3_64(&h[..32]);
    h[32..40].copy_from_slice(&sum.to_le_bytes());
    h
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The body of a function frame.
pub(super) fn function_body(key: u64, r: &FunctionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.module.len() + r.name.len());
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&r.code_version.to_le_bytes());
    let flags = u8::from(r.code_hash.is_some()) | u8::from(r.version.is_some()) << 1;
    out.push(flags);
    out.extend_from_slice(&r.code_hash.unwrap_or(0).to_le_bytes());
    put_str(&mut out, &r.module);
    put_str(&mut out, &r.name);
    put_str(&mut out, r.version.as_deref().unwrap_or(""));
    out
}

fn entry_fixed(id: &[u8; 16], m: &EntryMeta) -> [u8; ENTRY_FIXED] {
    let mut out = [0u8; ENTRY_FIXED];
    out[..16].copy_from_slice(id);
    let words = [
        m.fn_key,
        m.code_version,
        m.created_ms,
        m.last_access_ms,
        m.hits,
        m.compute_nanos,
    ];
    for (i, w) in words.iter().enumerate() {
        out[16 + 8 * i..24 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    out
}

impl Store {
    /// Writes every entry to `out` as a portable archive (format in `ARCHITECTURE.md`), from one
    /// consistent snapshot of the store; other handles keep reading and writing meanwhile.
    /// [`Store::import`] reads it into another store, on this machine or another, with the same
    /// ids and the same record bytes.
    ///
    /// Entries whose function is no longer named, or whose metadata or record is damaged, are
    /// left out and counted in the report. `out` receives many small writes through an internal
    /// buffer, and is flushed at the end (but not synced: sync a file yourself).
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-export-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let here = Store::open(dir.join("here.redb"))?;
    /// let square = DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, here.clone());
    /// square.call(9u64, |x| x * x)?;
    ///
    /// let mut archive = Vec::new();
    /// here.export(&mut archive)?;
    /// let there = Store::open(dir.join("there.redb"))?;
    /// let report = there.import(archive.as_slice())?;
    /// assert_eq!(report.entries, 1);
    /// let id = square.identify(&9u64)?;
    /// assert_eq!(there.read_record(&id)?, here.read_record(&id)?);
    /// # drop((square, here, there)); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// When the store cannot be read, or `out` cannot be written
    /// ([`ErrorKind::Storage`](crate::ErrorKind::Storage)). What was written before the failure
    /// is not a complete archive: import refuses it.
    pub fn export(&self, out: impl Write) -> Result<ExportReport, Error> {
        self.export_where(out, None)
    }

    /// As [`export`](Self::export), only the entries of `function` (every code version).
    ///
    /// # Errors
    /// As [`export`](Self::export).
    pub fn export_of(&self, function: &Function, out: impl Write) -> Result<ExportReport, Error> {
        self.export_where(out, Some(function.key()))
    }

    fn export_where(&self, out: impl Write, only: Option<u64>) -> Result<ExportReport, Error> {
        let mut out = Hashing {
            inner: BufWriter::with_capacity(256 * 1024, out),
            hash: Xxh3Default::new(),
            bytes: 0,
        };
        let now = self.shared().now_ms();
        let report = self.shared().engine().guard("cannot export", || {
            let txn = self.shared().engine().begin_read()?;
            export_snapshot(&txn, &mut out, only, now)
        })?;
        out.inner.flush().map_err(write_error)?;
        Ok(report)
    }
}

fn export_snapshot<W: Write>(
    txn: &ReadTransaction,
    out: &mut Hashing<W>,
    only: Option<u64>,
    now_ms: u64,
) -> Result<ExportReport, Error> {
    let storage = |e: redb::StorageError| engine_error("cannot export", e);
    let entries = txn
        .open_table(ENTRIES)
        .map_err(|e| engine_error("cannot open the entries table", e))?;
    let results = txn
        .open_table(RESULTS)
        .map_err(|e| engine_error("cannot open the results table", e))?;
    let functions = txn
        .open_table(FUNCTIONS)
        .map_err(|e| engine_error("cannot open the functions table", e))?;
    let chunks = chunks_table(txn)?;

    // Which functions have entries to export (one pass over the 64-byte metadata rows).
    let mut used = HashSet::new();
    for row in entries.iter().map_err(storage)? {
        let (_, v) = row.map_err(storage)?;
        if let Some(m) = EntryMeta::decode(v.value())
            && only.is_none_or(|k| k == m.fn_key)
        {
            used.insert(m.fn_key);
        }
    }

    let mut report = ExportReport::default();
    out.put(&header(now_ms))?;
    let mut named = HashSet::new();
    for row in functions.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let key = k.value();
        if !used.contains(&key) {
            continue;
        }
        let Some(record) = FunctionRecord::decode(v.value()) else {
            continue;
        };
        if identity_of(key, &record).is_none() {
            continue;
        }
        out.frame(KIND_FUNCTION, &[&function_body(key, &record)])?;
        named.insert(key);
        report.functions += 1;
    }

    for row in entries.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let id = *k.value();
        let Some(meta) = EntryMeta::decode(v.value()) else {
            if only.is_none() {
                report.skipped_damaged += 1;
            }
            continue;
        };
        if only.is_some_and(|key| key != meta.fn_key) {
            continue;
        }
        if !named.contains(&meta.fn_key) {
            report.skipped_unnamed += 1;
            continue;
        }
        let Some(result) = results.get(&id).map_err(storage)? else {
            report.skipped_damaged += 1;
            continue;
        };
        let bytes = result.value();
        if let (Some(manifest), Some(table)) = (Manifest::decode(bytes), chunks.as_ref()) {
            // A large record: checked in one pass, then written in a second, a chunk at a time.
            let parts = TableParts::new(table, id, manifest);
            if record::check_parts(&parts)?.is_err() || parts.len() > MAX_ARCHIVE_RECORD {
                report.skipped_damaged += 1;
                continue;
            }
            out.frame_parts(KIND_ENTRY, &entry_fixed(&id, &meta), &parts)?;
            report.entries += 1;
            report.record_bytes += parts.len();
            continue;
        }
        if record::parse(bytes).is_err() || bytes.len() as u64 > MAX_ARCHIVE_RECORD {
            report.skipped_damaged += 1;
            continue;
        }
        out.frame(KIND_ENTRY, &[&entry_fixed(&id, &meta), bytes])?;
        report.entries += 1;
        report.record_bytes += bytes.len() as u64;
    }

    let checksum = out.hash.digest();
    let mut end = [0u8; END_LEN as usize];
    end[..8].copy_from_slice(&report.functions.to_le_bytes());
    end[8..16].copy_from_slice(&report.entries.to_le_bytes());
    end[16..24].copy_from_slice(&report.record_bytes.to_le_bytes());
    end[24..32].copy_from_slice(&checksum.to_le_bytes());
    out.frame(KIND_END, &[&end])?;
    report.archive_bytes = out.bytes;
    Ok(report)
}
