//! Moving entries between stores: [`Store::export`] writes them to a portable archive,
//! [`Store::import`] reads one back. Records travel unchanged (same id, same bytes), with the
//! metadata and the function identity they need.
//!
//! The format (ARCHITECTURE.md, "The archive", has it byte by byte): a 40-byte header (magic,
//! format version, id scheme, export time, checksum), then frames, each
//! `kind ‖ u64le body length ‖ body ‖ xxh3-64(kind ‖ length ‖ body)`: one per function, one per
//! entry, and an end frame with the counts and the xxh3-64 of every byte before it.
//!
//! Reading trusts nothing: every length is bounded before anything is allocated for it, and
//! memory grows only as bytes actually arrive, so a hostile archive (lying lengths, truncation,
//! garbage) costs at most its own size and fails with an error, never a panic.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadTransaction, ReadableTable};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use super::chunks::{self, ChunksRead, Manifest, TableParts};
use super::engine_error::engine_error;
use super::schema::{ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord, RESULTS};
use super::write::SaveOp;
use super::{Commit, Store};
use crate::cache::Parts;
use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function};
use crate::identifier::ID_SCHEME;
use crate::record;

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

/// What [`Store::import`] read and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// The archive's format version.
    pub archive_version: u32,
    /// When the archive was written.
    pub exported_at: SystemTime,
    /// Functions in the archive.
    pub functions: u64,
    /// Entries stored.
    pub entries: u64,
    /// Bytes of the records stored.
    pub record_bytes: u64,
    /// Entries that replaced one with the same id already in the store.
    pub replaced: u64,
    /// Bytes of the whole archive.
    pub archive_bytes: u64,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("invalid archive: {}", message.into()),
    )
}

fn write_error(e: io::Error) -> Error {
    Error::storage("cannot write the archive", e)
}

fn read_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("it ends too early (truncated)")
    } else {
        Error::storage("cannot read the archive", e)
    }
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

fn header(exported_ms: u64) -> [u8; HEADER_LEN] {
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
fn function_body(key: u64, r: &FunctionRecord) -> Vec<u8> {
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

impl Store {
    /// The stored record of `id`, as [`Cache::retrieve`](crate::Cache::retrieve) returns it,
    /// but without counting an access (the entry's hits and last access stay as they are): for
    /// tools that look inside a store. [`Record::parse`](crate::Record::parse) checks it and
    /// gives its parts.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read_record(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        self.shared().engine().guard("cannot read a record", || {
            let txn = self.shared().engine().begin_read()?;
            read_record(&txn, id.as_bytes())
        })
    }

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
    /// When the store cannot be read, or `out` cannot be written ([`ErrorKind::Storage`]). What
    /// was written before the failure is not a complete archive: import refuses it.
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

    /// Reads an archive written by [`export`](Self::export) and stores its entries: the same
    /// ids, the same record bytes, and the metadata they had (created, last access, hits,
    /// compute time, code version). An entry with an id already here is replaced.
    ///
    /// All or nothing: the whole archive is imported in one write transaction, committed only
    /// after every frame has passed its checksum and the end frame's counts and archive
    /// checksum match; any failure leaves the store as it was. The archive is streamed (one
    /// record in memory at a time). Other writers of the store wait while it runs.
    ///
    /// A function the store does not know yet gets the archive's identity (name, code hash,
    /// version); one it knows keeps its own newest code version, so imported entries of other
    /// versions are stale here as they were there. The store's limits apply to the result as
    /// to any write: with a `max_age`, old imported entries expire at once.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an archive that is not one (bad magic), is of a newer
    /// format version, is truncated or has trailing bytes, or fails a checksum or a consistency
    /// check (the message says which and where); [`ErrorKind::Storage`] when `input` cannot be
    /// read or the store cannot be written.
    pub fn import(&self, input: impl Read) -> Result<ImportReport, Error> {
        let mut input = Reading {
            inner: BufReader::with_capacity(256 * 1024, input),
            hash: Xxh3Default::new(),
            bytes: 0,
        };
        // The header first, outside the transaction: a file that is no archive at all is
        // refused without taking the store's writer lock.
        let exported_at = read_header(&mut input)?;
        self.shared()
            .write(Commit::Yes, |tx| import_frames(tx, &mut input, exported_at))
    }
}

/// The record bytes of `id` in a read transaction.
fn read_record(txn: &ReadTransaction, id: &[u8; 16]) -> Result<Option<Vec<u8>>, Error> {
    let results = txn
        .open_table(RESULTS)
        .map_err(|e| engine_error("cannot open the results table", e))?;
    let Some(row) = results
        .get(id)
        .map_err(|e| engine_error("cannot read a result", e))?
    else {
        return Ok(None);
    };
    let row = row.value();
    let Some(manifest) = Manifest::decode(row) else {
        return Ok(Some(row.to_vec()));
    };
    let Some(table) = chunks_table(txn)? else {
        return Ok(Some(row.to_vec()));
    };
    // The parts joined, grown as they are read: the manifest's length is not trusted.
    let parts = TableParts {
        table: &table,
        id: *id,
        manifest,
    };
    let mut record = Vec::new();
    for i in 0..parts.count() {
        record.extend_from_slice(&parts.part(i)?);
    }
    Ok(Some(record))
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
            let parts = TableParts {
                table,
                id,
                manifest,
            };
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

/// A reader that hashes and counts what it consumes.
struct Reading<R> {
    inner: R,
    hash: Xxh3Default,
    bytes: u64,
}

impl<R: Read> Reading<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.inner.read_exact(buf).map_err(read_error)?;
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn word(&mut self) -> Result<[u8; 8], Error> {
        let mut w = [0u8; 8];
        self.exact(&mut w)?;
        Ok(w)
    }

    /// Appends exactly `n` bytes to `buf`, growing it only as bytes arrive.
    fn append(&mut self, n: u64, buf: &mut Vec<u8>) -> Result<(), Error> {
        let mut left = n;
        while left > 0 {
            let step = usize::try_from(left).map_or(READ_CHUNK, |l| l.min(READ_CHUNK));
            let start = buf.len();
            buf.resize(start + step, 0);
            self.exact(&mut buf[start..])?;
            left -= step as u64;
        }
        Ok(())
    }

    /// Whether the input has ended.
    fn at_end(&mut self) -> Result<bool, Error> {
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Reads and checks the header; returns the export time.
fn read_header<R: Read>(r: &mut Reading<R>) -> Result<SystemTime, Error> {
    let mut h = [0u8; HEADER_LEN];
    // The magic and version first: a newer format may have another header.
    r.exact(&mut h[..12]).map_err(|e| {
        if e.kind() == ErrorKind::InvalidInput {
            bad("not a ckpt archive (too short)")
        } else {
            e
        }
    })?;
    if h[..8] != ARCHIVE_MAGIC {
        return Err(bad(
            "not a ckpt archive (no ckpt archive magic at its start)",
        ));
    }
    let version = u32_at(&h, 8);
    if version > ARCHIVE_VERSION {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the archive is of format version {version}, newer than the {ARCHIVE_VERSION} \
                 this ckpt reads; import it with a newer ckpt"
            ),
        ));
    }
    if version == 0 {
        return Err(bad("format version 0"));
    }
    r.exact(&mut h[12..])?;
    if xxh3_64(&h[..32]) != u64_at(&h, 32) {
        return Err(bad("the header fails its checksum"));
    }
    if u32_at(&h, 12) != 0 || u32_at(&h, 20) != 0 {
        return Err(bad("unknown flags in the header"));
    }
    let scheme = u32_at(&h, 16);
    if scheme != u32::from(ID_SCHEME) {
        return Err(bad(format!(
            "its ids are of scheme {scheme}, this ckpt's of scheme {ID_SCHEME}"
        )));
    }
    Ok(UNIX_EPOCH + Duration::from_millis(u64_at(&h, 24)))
}

/// A function frame, checked.
struct ArchivedFunction {
    function: Function,
}

fn take_str<'b>(body: &'b [u8], at: &mut usize, what: &str) -> Result<&'b str, Error> {
    let short = || bad(format!("a function frame's {what} runs past its end"));
    let len = body
        .get(*at..*at + 4)
        .map(|_| u32_at(body, *at) as usize)
        .ok_or_else(short)?;
    if len > MAX_NAME {
        return Err(bad(format!("a function frame's {what} is too long")));
    }
    let bytes = body.get(*at + 4..*at + 4 + len).ok_or_else(short)?;
    *at += 4 + len;
    std::str::from_utf8(bytes).map_err(|_| bad(format!("a function frame's {what} is not UTF-8")))
}

fn parse_function(body: &[u8]) -> Result<(u64, ArchivedFunction), Error> {
    if body.len() < 25 {
        return Err(bad("a function frame is too short"));
    }
    let key = u64_at(body, 0);
    let code_version = u64_at(body, 8);
    let flags = body[16];
    if flags & !3 != 0 {
        return Err(bad("unknown flags in a function frame"));
    }
    let code_hash = u64_at(body, 17);
    let mut at = 25;
    let module = take_str(body, &mut at, "module path")?;
    let name = take_str(body, &mut at, "name")?;
    let version = take_str(body, &mut at, "version")?;
    if at != body.len() {
        return Err(bad("a function frame has bytes after its fields"));
    }
    if name.is_empty() {
        return Err(bad("a function frame has no name"));
    }
    let mut function = Function::new(module.to_string(), name.to_string());
    if flags & 1 != 0 {
        function = function.with_code_hash(code_hash);
    }
    if flags & 2 != 0 {
        function = function.with_version(version.to_string());
    }
    if function.key() != key || function.code_version() != code_version {
        return Err(bad(format!(
            "the frame of function {} does not match its identity",
            function.path()
        )));
    }
    Ok((key, ArchivedFunction { function }))
}

/// Reads a frame's kind and length, and checks the length against what the kind allows.
fn frame_head_of<R: Read>(r: &mut Reading<R>, n: u64) -> Result<(u8, u64, Xxh3Default), Error> {
    let mut head = [0u8; 9];
    r.exact(&mut head)?;
    let kind = head[0];
    let len = u64_at(&head, 1);
    let limit = match kind {
        KIND_FUNCTION => MAX_FUNCTION_BODY,
        KIND_ENTRY => ENTRY_FIXED as u64 + MAX_ARCHIVE_RECORD,
        KIND_END => END_LEN,
        other => return Err(bad(format!("frame {n} is of an unknown kind ({other})"))),
    };
    if len > limit {
        return Err(bad(format!(
            "frame {n} says it is {len} bytes long, more than a frame of its kind can be"
        )));
    }
    let mut sum = Xxh3Default::new();
    sum.update(&head);
    Ok((kind, len, sum))
}

fn check_frame<R: Read>(r: &mut Reading<R>, sum: &Xxh3Default, what: &str) -> Result<(), Error> {
    let stored = u64::from_le_bytes(r.word()?);
    if sum.digest() != stored {
        return Err(bad(format!("{what} fails its checksum")));
    }
    Ok(())
}

fn import_frames<R: Read>(
    tx: &mut super::write::Tx<'_>,
    r: &mut Reading<R>,
    exported_at: SystemTime,
) -> Result<ImportReport, Error> {
    let mut functions: HashMap<u64, ArchivedFunction> = HashMap::new();
    let mut report = ImportReport {
        archive_version: ARCHIVE_VERSION,
        exported_at,
        functions: 0,
        entries: 0,
        record_bytes: 0,
        replaced: 0,
        archive_bytes: 0,
    };
    let mut body = Vec::new();
    let mut n: u64 = 0;
    loop {
        n += 1;
        let before = r.hash.digest();
        let (kind, len, mut sum) = frame_head_of(r, n)?;
        body.clear();
        match kind {
            KIND_FUNCTION => {
                r.append(len, &mut body)?;
                sum.update(&body);
                check_frame(r, &sum, &format!("frame {n} (a function)"))?;
                let (key, f) = parse_function(&body)?;
                if functions.insert(key, f).is_some() {
                    return Err(bad(format!("frame {n} repeats a function")));
                }
                report.functions += 1;
            }
            KIND_ENTRY => {
                let record_len = len
                    .checked_sub(ENTRY_FIXED as u64)
                    .filter(|l| *l >= record::HEADER_LEN as u64)
                    .ok_or_else(|| bad(format!("frame {n} (an entry) is too short")))?;
                let mut fixed = [0u8; ENTRY_FIXED];
                r.exact(&mut fixed)?;
                sum.update(&fixed);
                r.append(record_len, &mut body)?;
                sum.update(&body);
                let mut id = [0u8; 16];
                id.copy_from_slice(&fixed[..16]);
                let shown = CheckpointId::from_bytes(id);
                check_frame(r, &sum, &format!("entry {shown} (frame {n})"))?;
                let meta = EntryMeta {
                    fn_key: u64_at(&fixed, 16),
                    code_version: u64_at(&fixed, 24),
                    created_ms: u64_at(&fixed, 32),
                    last_access_ms: u64_at(&fixed, 40),
                    hits: u64_at(&fixed, 48),
                    size: record_len,
                    compute_nanos: u64_at(&fixed, 56),
                };
                let Some(f) = functions.get(&meta.fn_key) else {
                    return Err(bad(format!(
                        "entry {shown} (frame {n}) names a function with no frame before it"
                    )));
                };
                if record::parse(&body).is_err() {
                    return Err(bad(format!(
                        "entry {shown} (frame {n}) holds a record that fails its own checksum"
                    )));
                }
                let op = SaveOp {
                    id,
                    function: &f.function,
                    bytes: &body,
                    compute_nanos: meta.compute_nanos,
                    value_type: None,
                };
                if tx.put_restored(&op, &meta)? {
                    report.replaced += 1;
                }
                report.entries += 1;
                report.record_bytes += record_len;
            }
            _ => {
                let mut end = [0u8; END_LEN as usize];
                if len != END_LEN {
                    return Err(bad("the end frame has the wrong length"));
                }
                r.exact(&mut end)?;
                sum.update(&end);
                check_frame(r, &sum, "the end frame")?;
                let counts = (u64_at(&end, 0), u64_at(&end, 8), u64_at(&end, 16));
                if counts != (report.functions, report.entries, report.record_bytes) {
                    return Err(bad(format!(
                        "its end frame counts {} functions, {} entries and {} record bytes; \
                         the archive holds {}, {} and {}",
                        counts.0,
                        counts.1,
                        counts.2,
                        report.functions,
                        report.entries,
                        report.record_bytes
                    )));
                }
                if u64_at(&end, 24) != before {
                    return Err(bad("the archive fails its overall checksum"));
                }
                if !r.at_end()? {
                    return Err(bad("it has bytes after its end frame"));
                }
                report.archive_bytes = r.bytes;
                return Ok(report);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = header(1234);
        let read = |bytes: &[u8]| {
            let mut r = Reading {
                inner: bytes,
                hash: Xxh3Default::new(),
                bytes: 0,
            };
            read_header(&mut r)
        };
        assert_eq!(read(&h).unwrap(), UNIX_EPOCH + Duration::from_millis(1234));
        for i in 0..HEADER_LEN {
            let mut b = h;
            b[i] ^= 0x10;
            assert!(read(&b).is_err(), "flip in byte {i} accepted");
        }
        let mut newer = h;
        newer[8] = 2;
        assert!(read(&newer).unwrap_err().to_string().contains("newer"));
        assert!(
            read(&h[..5])
                .unwrap_err()
                .to_string()
                .contains("not a ckpt archive")
        );
        assert!(
            read(&h[..20])
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }

    #[test]
    fn function_frames_round_trip() {
        let f = Function::new("a::b", "c")
            .with_code_hash(7)
            .with_version("v2");
        let record = FunctionRecord {
            module: "a::b".into(),
            name: "c".into(),
            code_version: f.code_version(),
            code_hash: Some(7),
            version: Some("v2".into()),
            ..Default::default()
        };
        assert!(identity_of(f.key(), &record).is_some());
        let body = function_body(f.key(), &record);
        let (key, back) = parse_function(&body).unwrap();
        assert_eq!(key, f.key());
        assert_eq!(back.function, f);
        // Every truncation is refused, never a panic.
        for cut in 0..body.len() {
            assert!(parse_function(&body[..cut]).is_err());
        }
        let mut lying = body.clone();
        lying[25..29].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_function(&lying).is_err());
    }
}
