//! Reading an archive: [`Store::import`], all or nothing in one write transaction. Nothing in
//! the input is trusted: lengths are bounded before use, memory grows only as bytes arrive,
//! every frame and the whole archive are checked before the commit.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use super::{
    ARCHIVE_MAGIC, ARCHIVE_VERSION, END_LEN, ENTRY_FIXED, HEADER_LEN, KIND_END, KIND_ENTRY,
    KIND_FUNCTION, MAX_ARCHIVE_RECORD, MAX_FUNCTION_BODY, MAX_NAME, READ_CHUNK,
};
use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function};
use crate::identifier::ID_SCHEME;
use crate::record;
use crate::store::schema::EntryMeta;
use crate::store::write::SaveOp;
use crate::store::{Commit, Store};

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

fn read_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("it ends too early (truncated)")
    } else {
        Error::storage("cannot read the archive", e)
    }
}

impl Store {
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

/// A reader that hashes and counts what it consumes.
pub(super) struct Reading<R> {
    pub(super) inner: R,
    pub(super) hash: Xxh3Default,
    pub(super) bytes: u64,
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
pub(super) fn read_header<R: Read>(r: &mut Reading<R>) -> Result<SystemTime, Error> {
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
pub(super) struct ArchivedFunction {
    pub(super) function: Function,
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

pub(super) fn parse_function(body: &[u8]) -> Result<(u64, ArchivedFunction), Error> {
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
    tx: &mut crate::store::write::Tx<'_>,
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
                    created_ms: None,
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
